//! cache-run: single-flight under 16 concurrent misses, interleaving,
//! exit statuses (signals too), --key-stdin, damaged entries, the stale
//! refresh under 16 concurrent stale hits, exactness of the size index and
//! eviction with cache-run entries mixed in, and SIGKILL of the running miss.
//!
//! The oracle for "how many times did the command run" is the command
//! itself: it appends a line to `runs` in the world's directory. Waits are
//! polls with generous deadlines, never fixed windows.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value as Json;

use crate::util::*;

const NOW: i64 = 1_800_000_000;

/// `ffkit cache-run ARGS -- sh -c SCRIPT`.
fn run(w: &World, args: &[&str], script: &str) -> Command {
    let mut c = w.cmd("cache-run");
    c.args(args).args(["--", "sh", "-c", script]);
    c
}

pub(crate) fn runs(w: &World) -> usize {
    fs::read_to_string(w.path().join("runs")).map_or(0, |s| s.lines().count())
}

pub(crate) fn json(out: &[u8]) -> Json {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("JSON output ({e}): {}", String::from_utf8_lossy(out)))
}

/// How many processes are blocked in flock(2) on `path` (from /proc/locks).
pub(crate) fn blocked_on(path: &Path) -> usize {
    let Ok(m) = fs::metadata(path) else {
        return 0;
    };
    let tag = format!(":{} ", m.ino());
    fs::read_to_string("/proc/locks").map_or(0, |s| {
        s.lines()
            .filter(|l| l.contains("->") && l.contains(&tag))
            .count()
    })
}

fn key_of(w: &World, args: &[&str], script: &str) -> String {
    let out = run(w, &[args, &["--print-key"]].concat(), script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn lock_file(w: &World, key: &str) -> PathBuf {
    let hex = key.strip_prefix("run-").unwrap();
    w.cache().join(".cache-run").join(format!("{hex}.lock"))
}

fn assert_exact(w: &World) {
    let (bytes, entries) = oracle(&w.cache());
    let out = w.cmd("cache-size").arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let j = json(&out.stdout);
    assert_eq!(j["bytes"], bytes, "index bytes vs oracle");
    assert_eq!(j["entries"], entries, "index entries vs oracle");
    w.cmd("cache-size").arg("--verify").assert().success();
}

fn metric_count(w: &World, op: &str) -> u64 {
    let out = w.cmd("perf-metrics").arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    json(&out.stdout)[op]["count"].as_u64().unwrap_or(0)
}

pub(crate) fn spawn_piped(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

// ---- single flight --------------------------------------------------------

#[test]
fn sixteen_concurrent_misses_run_the_command_once_and_print_the_same() {
    let w = World::new();
    let script = "echo run >> runs; i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; \
                  echo out1; echo err1 >&2; echo out2; exit 7";
    let children: Vec<Child> = (0..16)
        .map(|i| {
            // Half through the symlink, half as `ffkit cache-run`.
            let mut c = if i % 2 == 0 {
                w.cmd("cache-run")
            } else {
                w.link("cache-run")
            };
            c.args(["--ttl", "600", "--", "sh", "-c", script]);
            spawn_piped(c)
        })
        .collect();
    // The leader is running; wait (bounded) until the other 15 block on the
    // per-key lock, so the test really is 16 overlapping misses.
    assert!(eventually(|| runs(&w) == 1), "the command never started");
    let lock = lock_file(&w, &key_of(&w, &["--ttl", "600"], script));
    let all_waiting = eventually(|| blocked_on(&lock) == 15);
    fs::write(w.path().join("go"), "").unwrap();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert_eq!(o.status.code(), Some(7), "{}", stderr_of(o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out1\nout2\n");
        assert_eq!(stderr_of(o), "err1\n");
    }
    assert!(all_waiting, "15 waiters never showed up in /proc/locks");
    assert_eq!(runs(&w), 1, "exactly one execution");
    assert_eq!(metric_count(&w, "cache_run_miss"), 1);
    assert_eq!(metric_count(&w, "cache_run_hit"), 15);
    // perf-metrics shows the hit ratio.
    let table = w.cmd("perf-metrics").output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("cache-run hit ratio: 93.8% (15 hits, 1 miss)"),
        "{table}"
    );
    assert_exact(&w);
}

#[test]
fn a_waiter_gives_up_after_lock_timeout_with_exit_6() {
    let w = World::new();
    let script = "echo run >> runs; i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; echo done";
    let leader = spawn_piped(run(&w, &[], script));
    assert!(eventually(|| runs(&w) == 1));
    let out = run(&w, &[], script)
        .env("LOCK_TIMEOUT", "0.3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("LOCK_TIMEOUT"),
        "{}",
        stderr_of(&out)
    );
    fs::write(w.path().join("go"), "").unwrap();
    let lo = leader.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&lo.stdout), "done\n");
    assert_eq!(runs(&w), 1);
}

// ---- interleaving ---------------------------------------------------------

/// Waits for `ack-NAME` (bounded), so each line is written only after the
/// test saw the previous one come out of ffkit: the order is then a fact,
/// not a race.
const HANDSHAKE: &str = "ack() { i=0; while [ ! -e ack-$1 ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done; [ -e ack-$1 ] || exit 99; }; \
    echo run >> runs; for n in 1 2 3; do echo o$n; ack o$n; echo e$n >&2; ack e$n; done";

#[test]
fn interleaved_stdout_and_stderr_are_replayed_in_order() {
    let w = World::new();
    let mut c = spawn_piped(run(&w, &[], HANDSHAKE));
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut err = BufReader::new(c.stderr.take().unwrap());
    for n in 1..=3 {
        for (name, r) in [
            (format!("o{n}"), &mut out as &mut dyn BufRead),
            (format!("e{n}"), &mut err),
        ] {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(
                line,
                format!("{name}\n"),
                "a miss passes output through live"
            );
            fs::write(w.path().join(format!("ack-{name}")), "").unwrap();
        }
    }
    assert!(c.wait().unwrap().success());
    assert_eq!(runs(&w), 1);
    for n in 1..=3 {
        for s in ["o", "e"] {
            fs::remove_file(w.path().join(format!("ack-{s}{n}"))).unwrap();
        }
    }
    // A hit with stdout and stderr on one pipe shows the order...
    let (mut r, wr) = std::io::pipe().unwrap();
    let mut hit = run(&w, &[], HANDSHAKE);
    hit.stdout(wr.try_clone().unwrap()).stderr(wr);
    let status = hit.status().unwrap();
    drop(hit);
    let mut both = String::new();
    r.read_to_string(&mut both).unwrap();
    assert!(status.success());
    assert_eq!(both, "o1\ne1\no2\ne2\no3\ne3\n");
    // ...and on two pipes each stream gets its own lines.
    let o = run(&w, &[], HANDSHAKE).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "o1\no2\no3\n");
    assert_eq!(stderr_of(&o), "e1\ne2\ne3\n");
    assert_eq!(runs(&w), 1, "hits never run the command");
}

// ---- exit statuses --------------------------------------------------------

#[test]
fn exit_statuses_are_stored_and_replayed_including_signals() {
    let w = World::new();
    for (script, code) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 127", 127),
        ("kill -TERM $$", 143),
        ("kill -KILL $$", 137),
    ] {
        let s = format!("echo run >> runs; echo {code}; {script}");
        let before = runs(&w);
        for _ in 0..2 {
            let o = run(&w, &[], &s).output().unwrap();
            assert_eq!(o.status.code(), Some(code), "{script}: {}", stderr_of(&o));
            assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{code}\n"));
        }
        assert_eq!(runs(&w), before + 1, "{script}: the second call is a hit");
        let j = json(
            &run(&w, &["--print-key", "--json"], &s)
                .output()
                .unwrap()
                .stdout,
        );
        assert_eq!(j["status"], code);
        assert_eq!(j["hits"], 1);
    }
    // --discard-failures keeps failures out of the cache.
    for _ in 0..2 {
        let o = run(&w, &["--discard-failures"], "echo run >> runs; exit 5")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(5));
    }
    assert_eq!(runs(&w), 7);
    assert_exact(&w);
}

#[test]
fn ffkit_errors_use_the_contract_codes_never_126_or_127() {
    let w = World::new();
    let o = w
        .cmd("cache-run")
        .args(["--", "no-such-command-ffkit-test"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr_of(&o));
    assert_eq!(stderr_of(&o).lines().count(), 1);
    let script = w.path().join("not-executable");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let o = w.cmd("cache-run").arg("--").arg(&script).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr_of(&o));
    // Bad option values: 2 (usage / validation).
    for args in [
        &["--ttl", "30", "--stale", "30"][..],
        &["--ttl", "x"],
        &["--force", "--invalidate"],
    ] {
        let o = run(&w, args, "true").output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr_of(&o));
    }
    let o = w.cmd("cache-run").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "a command is required");
    assert_eq!(oracle(&w.cache()), (0, 0), "nothing was stored");
}

// ---- the key --------------------------------------------------------------

#[test]
fn key_stdin_is_hashed_stored_and_fed_to_the_command() {
    let w = World::new();
    let script = "echo run >> runs; cat";
    for (input, expect_runs) in [("a", 1), ("b", 2), ("a", 2), ("b", 2)] {
        let o = run(&w, &["--key-stdin"], script)
            .write_stdin(input)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), input);
        assert_eq!(runs(&w), expect_runs, "input {input}");
    }
    // Without --key-stdin the command reads /dev/null: the output cannot
    // depend on input the key does not contain.
    let o = run(&w, &[], "cat").write_stdin("ignored").output().unwrap();
    assert_eq!(o.stdout, b"");
    // A large input is fed while the output is read (no pipe deadlock).
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let o = run(&w, &["--key-stdin"], "cat; cat /dev/null >&2")
        .write_stdin(big.clone())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(o.stdout, big);
    let o = run(&w, &["--key-stdin"], "cat; cat /dev/null >&2")
        .write_stdin(big.clone())
        .output()
        .unwrap();
    assert_eq!(o.stdout, big, "hit of a 3 MB entry");
    assert_exact(&w);
}

#[test]
fn key_options_separate_entries() {
    let w = World::new();
    let script = "echo run >> runs; echo \"$V\"";
    let call = |args: &[&str], v: Option<&str>| {
        let mut c = run(&w, args, script);
        match v {
            Some(v) => c.env("V", v),
            None => c.env_remove("V"),
        };
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Without --key-env the variable is not part of the key.
    assert_eq!(call(&[], Some("1")), "1\n");
    assert_eq!(call(&[], Some("2")), "1\n");
    assert_eq!(call(&["--key-env", "V"], Some("2")), "2\n");
    assert_eq!(call(&["--key-env", "V"], Some("")), "\n");
    assert_eq!(call(&["--key-env", "V"], None), "\n");
    assert_eq!(runs(&w), 4, "unset and empty are distinct keys");
    assert_eq!(call(&["--scope", "x"], Some("3")), "3\n");
    let f = w.path().join("input");
    fs::write(&f, "one").unwrap();
    let fa = f.to_str().unwrap();
    assert_eq!(call(&["--key-file-content", fa], Some("4")), "4\n");
    assert_eq!(call(&["--key-file-content", fa], Some("5")), "4\n");
    fs::write(&f, "two").unwrap();
    assert_eq!(call(&["--key-file-content", fa], Some("6")), "6\n");
    assert_eq!(call(&["--key-file", fa], Some("7")), "7\n");
    fs::remove_file(&f).unwrap();
    fs::write(&f, "two").unwrap();
    assert_eq!(
        call(&["--key-file", fa], Some("8")),
        "8\n",
        "new inode, new key"
    );
}

// ---- damaged entries ------------------------------------------------------

#[test]
fn a_truncated_entry_is_a_miss_that_is_rewritten() {
    let w = World::new();
    let script = "echo run >> runs; echo hello; echo warn >&2; echo world";
    run(&w, &[], script).assert().success();
    let key = key_of(&w, &[], script);
    let value = w.cache().join(&key);
    for step in 0..4 {
        let len = fs::metadata(&value).unwrap().len();
        let cut = [len - 1, len / 2, 3, 0][step];
        let f = fs::OpenOptions::new().write(true).open(&value).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        w.cmd("cache-size")
            .args(["--verify", "--fix"])
            .output()
            .unwrap();
        let before = runs(&w);
        let o = run(&w, &[], script)
            .env("FF_DEBUG", "true")
            .output()
            .unwrap();
        assert!(o.status.success(), "cut {cut}: {}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\nworld\n");
        let notes: Vec<_> = stderr_of(&o)
            .lines()
            .filter(|l| l.contains("treated as a miss"))
            .map(String::from)
            .collect();
        assert_eq!(notes.len(), 1, "cut {cut}: {}", stderr_of(&o));
        assert_eq!(runs(&w), before + 1);
        // ...rewritten whole: now a plain hit with no note.
        let o = run(&w, &[], script)
            .env("FF_DEBUG", "true")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\nworld\n");
        let err = stderr_of(&o);
        assert!(!err.contains("treated as a miss"), "{err}");
        let not_debug: Vec<&str> = err.lines().filter(|l| !l.contains(": debug: ")).collect();
        assert_eq!(not_debug, ["warn"]);
        assert_eq!(runs(&w), before + 1);
    }
    // A damaged sidecar is a miss too, and without FF_DEBUG there is no note.
    fs::write(w.cache().join(format!("{key}.meta")), "{").unwrap();
    w.cmd("cache-size")
        .args(["--verify", "--fix"])
        .output()
        .unwrap();
    let o = run(&w, &[], script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(stderr_of(&o), "warn\n");
    assert_exact(&w);
}

// ---- stale-while-revalidate -----------------------------------------------

/// Processes whose command line mentions `needle` (the refreshers of a
/// world, found through /proc; never signalled).
fn processes_with(needle: &str) -> usize {
    let Ok(rd) = fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn sixteen_concurrent_stale_hits_start_one_refresh_and_never_wait() {
    let w = World::new();
    fs::write(w.path().join("version"), "v1\n").unwrap();
    let script = "echo run >> runs; if [ -e slow ]; then i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; fi; cat version";
    let args = ["--ttl", "3600", "--stale", "60"];
    let o = run(&w, &args, script)
        .env("FFKIT_TEST_NOW", NOW.to_string())
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"v1\n");
    fs::write(w.path().join("version"), "v2\n").unwrap();
    // The refresh will block until `go`: the hits must not wait for it.
    fs::write(w.path().join("slow"), "").unwrap();
    let later = (NOW + 100).to_string();
    let children: Vec<Child> = (0..16)
        .map(|_| {
            let mut c = run(&w, &args, script);
            c.env("FFKIT_TEST_NOW", &later);
            spawn_piped(c)
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(
            o.stdout, b"v1\n",
            "a stale hit replays the old answer at once"
        );
    }
    assert!(!w.path().join("go").exists());
    // One refresh is running (blocked on `go`), detached from the hits.
    assert!(eventually(|| runs(&w) == 2), "the refresh never started");
    fs::write(w.path().join("go"), "").unwrap();
    let needle = w.cache().to_string_lossy().into_owned();
    assert!(
        eventually(|| processes_with(&needle) == 0),
        "refreshers still running"
    );
    assert_eq!(runs(&w), 2, "one refresh for 16 stale hits");
    assert_eq!(metric_count(&w, "cache_run_refresh"), 1);
    let o = run(&w, &args, script)
        .env("FFKIT_TEST_NOW", &later)
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"v2\n", "the refreshed answer");
    assert_eq!(runs(&w), 2);
    assert_exact(&w);
}

// ---- the size index and eviction ------------------------------------------

#[test]
fn eviction_and_verify_stay_exact_with_cache_run_entries_mixed_in() {
    let w = World::new();
    for i in 0..5 {
        w.write(&format!("plain-{i}"), &"x".repeat(100 * (i + 1)));
    }
    let scripts: Vec<String> = (0..5)
        .map(|i| {
            format!(
                "echo run >> runs; head -c {} /dev/zero; echo e{i} >&2",
                500 * (i + 1)
            )
        })
        .collect();
    for s in &scripts {
        run(&w, &[], s).assert().success();
    }
    assert_eq!(runs(&w), 5);
    assert_exact(&w);
    assert_eq!(oracle(&w.cache()).1, 10);
    // Evict down to half: LRU across both kinds of entry.
    let total = oracle(&w.cache()).0;
    w.cmd("cache-evict")
        .args(["--max-bytes", &(total / 2).to_string()])
        .assert()
        .success();
    assert_exact(&w);
    assert!(oracle(&w.cache()).0 <= total / 2);
    // Evicted cache-run entries are misses again; the rest are hits.
    let present: Vec<bool> = scripts
        .iter()
        .map(|s| w.cache().join(key_of(&w, &[], s)).exists())
        .collect();
    let gone = present.iter().filter(|p| !**p).count();
    assert!(gone > 0, "eviction removed some cache-run entries");
    for s in &scripts {
        run(&w, &[], s).assert().success();
    }
    assert_eq!(runs(&w), 5 + gone);
    assert_exact(&w);
    // --invalidate removes one entry through the same journaled commit.
    run(&w, &["--invalidate"], &scripts[0]).assert().success();
    assert!(!w.cache().join(key_of(&w, &[], &scripts[0])).exists());
    assert_exact(&w);
    w.cmd("cache-evict").arg("--all").assert().success();
    assert_eq!(oracle(&w.cache()), (0, 0));
    assert_exact(&w);
}

#[test]
fn ttl_expiry_makes_a_miss() {
    let w = World::new();
    let script = "echo run >> runs; echo hi";
    let at = |t: i64| {
        run(&w, &["--ttl", "10"], script)
            .env("FFKIT_TEST_NOW", t.to_string())
            .assert()
            .success()
            .stdout("hi\n");
    };
    at(NOW);
    at(NOW + 9);
    assert_eq!(runs(&w), 1);
    at(NOW + 10);
    assert_eq!(runs(&w), 2);
}

// ---- SIGKILL ----------------------------------------------------------------

#[test]
fn sigkill_of_the_running_miss_hands_over_to_a_waiter_and_nothing_partial_is_replayed() {
    let w = World::new();
    // The first run prints half its output and blocks; later runs finish.
    // The world's path marks this test's processes (other tests, and other
    // checkouts, run the same script).
    let marker = format!(": {};", w.path().display());
    let script = format!(
        "{marker} first=1; [ -e runs ] && first=0; echo run >> runs; echo partial; \
         if [ $first = 1 ]; then i=0; while [ ! -e release ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; fi; \
         echo complete"
    );
    let script = script.as_str();
    let mut leader = spawn_piped(run(&w, &[], script));
    let mut lout = BufReader::new(leader.stdout.take().unwrap());
    let mut line = String::new();
    lout.read_line(&mut line).unwrap();
    assert_eq!(line, "partial\n");
    let lock = lock_file(&w, &key_of(&w, &[], script));
    let waiters: Vec<Child> = (0..3).map(|_| spawn_piped(run(&w, &[], script))).collect();
    let all_waiting = eventually(|| blocked_on(&lock) == 3);
    leader.kill().unwrap();
    assert!(!leader.wait().unwrap().success());
    for c in waiters {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "partial\ncomplete\n");
    }
    assert!(all_waiting, "3 waiters never showed up in /proc/locks");
    assert_eq!(
        runs(&w),
        2,
        "one waiter took over; the others replayed its run"
    );
    run(&w, &[], script)
        .assert()
        .success()
        .stdout("partial\ncomplete\n");
    assert_eq!(runs(&w), 2);
    assert_exact(&w);
    // The first command got SIGTERM with its ffkit (PR_SET_PDEATHSIG);
    // `release` lets it end in any case (it is not ours to signal).
    fs::write(w.path().join("release"), "").unwrap();
    assert!(eventually(|| processes_with(&marker) == 0));
}

// ---- the other actions ------------------------------------------------------

#[test]
fn force_invalidate_print_key_and_json_in_both_forms() {
    let w = World::new();
    let script = "echo run >> runs; echo out";
    let key = key_of(&w, &[], script);
    assert!(key.starts_with("run-") && key.len() == 68, "{key}");
    let peek = json(
        &run(&w, &["--print-key", "--json"], script)
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(peek["present"], false);
    assert_eq!(runs(&w), 0, "--print-key runs nothing");
    let j = json(&run(&w, &["--json"], script).output().unwrap().stdout);
    assert_eq!(
        (j["source"].as_str(), j["cached"].as_bool()),
        (Some("ran"), Some(false))
    );
    assert_eq!(j["key"], key);
    let mut link = w.link("cache-run");
    link.args(["--json", "--", "sh", "-c", script]);
    let j = json(&link.output().unwrap().stdout);
    assert_eq!(
        (j["source"].as_str(), j["hits"].as_u64()),
        (Some("hit"), Some(1))
    );
    run(&w, &["--force"], script)
        .assert()
        .success()
        .stdout("out\n");
    assert_eq!(runs(&w), 2, "--force runs on a hit");
    let peek = json(
        &run(&w, &["--print-key", "--json"], script)
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(
        (peek["present"].as_bool(), peek["hits"].as_u64()),
        (Some(true), Some(0))
    );
    let j = json(
        &run(&w, &["--invalidate", "--json"], script)
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(j["invalidated"], true);
    assert!(!w.cache().join(&key).exists());
    run(&w, &[], script).assert().success().stdout("out\n");
    assert_eq!(runs(&w), 3);
    assert_exact(&w);
}

// ---- the shell wrapper ------------------------------------------------------

/// `bash -c` (and zsh when installed) sourcing shell/ffkit.bash in a
/// scratch repository, with a clean environment and FFKIT_BIN set.
pub(crate) fn wrapper(root: &Path, shell: &str, script: &str) -> Command {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash");
    let mut c = Command::new(shell);
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", root.join("home"))
        .env("FFKIT_BIN", bin())
        .env("FFKIT_LIB", lib)
        .current_dir(root.join("repo"))
        .arg("-c")
        .arg(format!("set -euo pipefail\n. \"$FFKIT_LIB\"\n{script}"))
        .stdin(Stdio::null());
    c
}

#[test]
fn cache_command_wrapper_memoizes_in_the_namespace_cache() {
    let have_zsh = Command::new("sh")
        .args(["-c", "command -v zsh >/dev/null"])
        .status()
        .is_ok_and(|s| s.success());
    let mut shells = vec!["bash"];
    if have_zsh {
        shells.push("zsh");
    } else {
        crate::util::skip("zsh not installed: only the bash half of cache_command's test runs");
    }
    for shell in shells {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("repo/.git")).unwrap();
        fs::create_dir_all(root.join("home")).unwrap();
        let script = r#"
            c='echo run >> runs; echo "out $1"; echo err >&2; exit 3'
            rc=0; cache_command sh -c "$c" x 'a b' || rc=$?; echo "rc=$rc"
            rc=0; cache_command sh -c "$c" x 'a b' || rc=$?; echo "rc=$rc"
            rc=0; cache_command --ttl 5 -- sh -c "$c" x 'a b' || rc=$?; echo "rc=$rc"
            v=$(cache_command printf '%s' 'no newline'); echo "[$v]"
        "#;
        let o = wrapper(root, shell, script).output().unwrap();
        assert!(o.status.success(), "{shell}: {}", stderr_of(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "out a b\nrc=3\nout a b\nrc=3\nout a b\nrc=3\n[no newline]\n",
            "{shell}"
        );
        assert_eq!(stderr_of(&o), "err\nerr\nerr\n", "{shell}");
        let runs = fs::read_to_string(root.join("repo/runs")).unwrap();
        assert_eq!(
            runs.lines().count(),
            1,
            "{shell}: --ttl is not part of the key"
        );
        let cache = root.join("repo/.flowforge/cache");
        let entries = fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("run-") && !n.ends_with(".meta")
            })
            .count();
        assert_eq!(
            entries, 2,
            "{shell}: the namespace's cache holds the entries"
        );
    }
}

/// A small tmpfs for one test (root only), unmounted lazily on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).unwrap();
        Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_run_that_cannot_be_stored_still_prints_and_exits_with_the_commands_status() {
    let w = World::new();
    // A cache dir on a full file system: the entry cannot be written.
    let Some(_m) = Tmpfs::mount(&w.cache(), "64k") else {
        return skip("cannot mount a tmpfs (needs root): store-failure test not run");
    };
    let script = "echo run >> runs; head -c 300000 /dev/zero | tr '\\0' x; exit 4";
    for n in 1..=2 {
        let o = run(&w, &[], script).output().unwrap();
        assert_eq!(o.status.code(), Some(4), "{}", stderr_of(&o));
        assert_eq!(o.stdout, vec![b'x'; 300_000]);
        let err = stderr_of(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("not cached"), "{err}");
        assert_eq!(runs(&w), n);
    }
    let j = json(&run(&w, &["--json"], script).output().unwrap().stdout);
    assert_eq!(j["stored"], false);
    assert!(j["store_error"].is_string());
    assert_exact(&w);
}

/// Attack finding: `--key-stdin` on a cache dir whose disk is full failed
/// the call with exit 8 (`cannot write the spool of standard input: No
/// space left on device`) and never ran the command, where every other
/// store failure runs it uncached. Now the spool moves to memory, the
/// command runs and is fed the whole input, and the call exits with its
/// status and one `not cached` line. The `--json` report of such a run
/// counted 0 bytes of output (the counts came from the recording, which an
/// uncached run does not keep); it counts what the command printed.
#[test]
fn key_stdin_on_a_full_cache_disk_still_runs_the_command_fed_the_whole_input() {
    let w = World::new();
    let Some(_m) = Tmpfs::mount(&w.cache(), "64k") else {
        return skip("cannot mount a tmpfs (needs root): full-spool test not run");
    };
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let script = "echo run >> runs; cksum; echo e >&2; exit 3";
    let want = run_with_stdin(&mut Command::new("cksum"), &input).stdout;
    for n in 1..=2 {
        let o = run_with_stdin(&mut run(&w, &["--key-stdin"], script), &input);
        assert_eq!(o.status.code(), Some(3), "{}", stderr_of(&o));
        assert_eq!(o.stdout, want, "the command read the whole input");
        let err = stderr_of(&o);
        assert!(err.starts_with("e\n"), "{err}");
        assert!(
            err.lines().filter(|l| l.contains("not cached")).count() == 1
                && err.lines().count() == 2,
            "{err}"
        );
        assert_eq!(runs(&w), n);
    }
    let o = run_with_stdin(&mut run(&w, &["--key-stdin", "--json"], script), &input);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let j = json(&o.stdout);
    assert_eq!(
        (j["stored"].clone(), j["status"].clone()),
        (false.into(), 3.into())
    );
    assert_eq!(j["stdout_bytes"], want.len() as u64, "{j}");
    assert_eq!(j["stderr_bytes"], 2, "{j}");
}

#[test]
fn a_miss_whose_output_file_fills_up_fails_with_exit_8() {
    let w = World::new();
    let mnt = w.path().join("small");
    let Some(_m) = Tmpfs::mount(&mnt, "1m") else {
        return skip("cannot mount a tmpfs (needs root): full-output test not run");
    };
    let out = mnt.join("out");
    let mut c = run(&w, &[], "echo run >> runs; head -c 3000000 /dev/zero");
    c.stdout(fs::File::create(&out).unwrap());
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(8), "{}", stderr_of(&o));
    assert_eq!(stderr_of(&o).lines().count(), 1, "{}", stderr_of(&o));
    assert!(fs::metadata(&out).unwrap().len() < 3_000_000);
}

#[test]
fn a_cache_dir_that_cannot_hold_the_lock_still_runs_the_command_uncached() {
    let w = World::new();
    fs::create_dir_all(w.cache()).unwrap();
    // A file where the dot-dir of locks must go: no lock, no entry.
    fs::write(w.cache().join(".cache-run"), "").unwrap();
    for n in 1..=2 {
        let o = run(&w, &[], "echo run >> runs; echo out; exit 2")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
        let err = stderr_of(&o);
        assert!(
            err.contains("not cached") && err.lines().count() == 1,
            "{err}"
        );
        assert_eq!(runs(&w), n);
    }
    assert_eq!(oracle(&w.cache()), (0, 0));
}

/// Attack finding: `.cache-run` replaced by a symlink to a directory
/// elsewhere got each key's lock, hit and failure files made there, and
/// every eviction removed the files there named like a key's (here one the
/// user made). Now it is never used through the link: the command runs
/// uncached with one line, an eviction prunes nothing, and nothing outside
/// the cache dir is made or removed.
#[test]
fn a_cache_run_dir_that_is_a_symlink_is_never_written_or_pruned_through() {
    let w = World::new();
    fs::create_dir_all(w.cache()).unwrap();
    let elsewhere = w.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let theirs = elsewhere.join(format!("{}.hits", "a".repeat(64)));
    fs::write(&theirs, "").unwrap();
    std::os::unix::fs::symlink(&elsewhere, w.cache().join(".cache-run")).unwrap();
    for (n, args) in [(1, &[][..]), (2, &["--discard-failures"][..])] {
        let o = run(&w, args, "echo run >> runs; echo out; exit 2")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
        let err = stderr_of(&o);
        assert!(
            err.contains("not cached") && err.contains("a symlink") && err.lines().count() == 1,
            "{err}"
        );
        assert_eq!(runs(&w), n);
    }
    let o = w.cmd("cache-evict").arg("--all").output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let there: Vec<_> = fs::read_dir(&elsewhere)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(there, vec![theirs], "nothing made or removed elsewhere");
}

// ---- the per-key files ------------------------------------------------------

fn run_dir_files(w: &World) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(w.cache().join(".cache-run"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Attack finding: a `--discard-failures` run hands its failure to its
/// waiters through a temp file in `.cache-run/` (`.tmp-PID-N`, renamed to
/// `<hash>.failed`); a process killed while writing it (Ctrl-C, SIGKILL,
/// the OOM killer, after a failing command printed up to 256 MiB) left the
/// temp there for good: not counted (a dot-dir), and no eviction removed
/// it, where the temps of the cache dir itself and of `.store/` go with
/// the next eviction once their writer is dead. Now those of `.cache-run/`
/// do too; a live writer's temp stays.
#[test]
fn an_eviction_removes_a_dead_writers_temp_in_the_cache_run_dir() {
    let w = World::new();
    run(&w, &[], "true").assert().success();
    let dir = w.cache().join(".cache-run");
    // A pid that is gone (a child of ours, reaped), and one alive (ours).
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let mut alive = Command::new("sleep").arg("300").spawn().unwrap();
    let dead_tmp = dir.join(format!(".tmp-{dead}-0"));
    let live_tmp = dir.join(format!(".tmp-{}-0", alive.id()));
    fs::write(&dead_tmp, vec![0u8; 4096]).unwrap();
    fs::write(&live_tmp, b"in flight").unwrap();
    w.cmd("cache-evict").arg("--all").assert().success();
    let _ = alive.kill();
    let _ = alive.wait();
    assert!(!dead_tmp.exists(), "a dead writer's temp is removed");
    assert!(live_tmp.exists(), "a live writer's temp stays");
}

#[test]
fn eviction_and_invalidate_leave_no_cache_run_files_but_a_running_miss_keeps_its_lock() {
    let w = World::new();
    let done: Vec<String> = (0..3).map(|i| format!("echo done{i}")).collect();
    for s in &done {
        run(&w, &["--ttl", "0"], s).assert().success();
    }
    // The store creates the hit counter.
    run(&w, &["--ttl", "0"], &done[0])
        .assert()
        .success()
        .stdout("done0\n");
    assert!(run_dir_files(&w).iter().any(|f| f.ends_with(".hits")));
    let slow = "echo run >> runs; i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; echo slow";
    let leader = spawn_piped(run(&w, &["--ttl", "0"], slow));
    assert!(eventually(|| runs(&w) == 1), "the slow miss never started");
    let lock = lock_file(&w, &key_of(&w, &["--ttl", "0"], slow));

    w.cmd("cache-evict").arg("--all").assert().success();
    let name = lock.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        run_dir_files(&w),
        [name],
        "only the running miss's lock is left"
    );
    // Single flight still holds for the running key.
    let waiter = spawn_piped(run(&w, &["--ttl", "0"], slow));
    assert!(
        eventually(|| blocked_on(&lock) == 1),
        "the second run did not wait"
    );
    fs::write(w.path().join("go"), "").unwrap();
    for c in [leader, waiter] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "slow\n");
    }
    assert_eq!(runs(&w), 1);
    // Evicted keys run again and work as before.
    run(&w, &["--ttl", "0"], &done[1])
        .assert()
        .success()
        .stdout("done1\n");
    let keys: std::collections::BTreeSet<String> = run_dir_files(&w)
        .iter()
        .filter_map(|f| f.split_once('.').map(|(k, _)| k.to_string()))
        .collect();
    assert_eq!(keys.len(), 2, "{:?}", run_dir_files(&w));
    for s in [slow, done[1].as_str()] {
        run(&w, &["--invalidate"], s).assert().success();
    }
    assert_eq!(run_dir_files(&w), Vec::<String>::new());
    assert_exact(&w);
}

/// Evictions pruning lock files race with misses opening them: two runs of
/// one key never overlap (each run marks itself with `mkdir`, which fails
/// if another run of that key is inside).
#[test]
fn single_flight_holds_while_evictions_prune_the_lock_files() {
    let w = World::new();
    let worker = |k: usize| {
        let script = format!(
            "mkdir in{k} 2>/dev/null || echo overlap >> overlaps; echo run >> runs; sleep 0.005; rmdir in{k}; echo k{k}"
        );
        let mut c = Command::new("bash");
        c.env("FF", bin())
            .env("S", script)
            .args([
                "-c",
                "for i in $(seq 25); do \"$FF\" cache-run --ttl 0 -- sh -c \"$S\" >/dev/null || exit 1; done",
            ]);
        w.isolate(&mut c);
        c.spawn().unwrap()
    };
    let mut evictor = {
        let mut c = Command::new("bash");
        c.env("FF", bin()).args([
            "-c",
            "while [ ! -e stop ]; do \"$FF\" cache-evict --all || exit 1; done",
        ]);
        w.isolate(&mut c);
        c.spawn().unwrap()
    };
    let workers: Vec<Child> = (0..8).map(|i| worker(i % 2)).collect();
    for mut c in workers {
        assert!(c.wait().unwrap().success());
    }
    fs::write(w.path().join("stop"), "").unwrap();
    assert!(evictor.wait().unwrap().success());
    assert!(
        !w.path().join("overlaps").exists(),
        "two runs of one key overlapped"
    );
    assert!(
        runs(&w) > 2,
        "the evictions never made a miss: {}",
        runs(&w)
    );
    assert_exact(&w);
}

// ---- output that reaches the caller, or says it did not --------------------

/// `bash -c SCRIPT` in the world, with `$FF` the binary, killed (and the
/// test failed) if it has not ended within 60 s.
fn bash_within(w: &World, script: &str, what: &str) -> Output {
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.env("FF", bin()).args(["-c", script]);
    output_within(c, what)
}

/// The command's status as `bash -c SCRIPT` printed it last on stdout.
fn last_number(o: &Output) -> i32 {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no status: {o:?}"))
}

#[test]
fn a_miss_that_cannot_write_its_output_fails_with_exit_8_like_the_hit() {
    let w = World::new();
    let script = "echo run >> runs; echo hi";
    for what in ["miss", "hit"] {
        let mut c = run(&w, &[], script);
        c.stdout(fs::File::create("/dev/full").unwrap());
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(8), "{what}: {}", stderr_of(&o));
        let err = stderr_of(&o);
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains("No space left"), "{what}: {err}");
    }
    // The run itself was whole, so it was stored: the second call was a hit.
    assert_eq!(runs(&w), 1);
    assert_exact(&w);
}

/// Attack finding: a hit stopped replaying both streams at the first
/// failed write to one: with stdout's reader gone (`… | head -1`) or stdout
/// on a full disk, the stored stderr (a warning, `done`) was never shown,
/// where the miss passes stderr on to the end (it stops only the stream
/// that failed) and so does the command run without ffkit. Now the hit
/// writes the other stream's chunks on too: the same stderr on the miss
/// and the hit, then (a full disk) the same error line and exit 8.
#[test]
fn a_hit_whose_stdout_fails_still_replays_stderr_as_the_miss_does() {
    let w = World::new();
    let s = "cache-run -- sh -c 'echo run >> runs; seq 1 100000; echo done >&2; exit 3'";
    let (code, err) = pipeline(&w, s, "cat");
    assert_eq!((code, err.as_str()), (3, "done\n"), "stored whole");
    let (code, err) = pipeline(&w, s, "head -1");
    assert_eq!((code, err.as_str()), (3, "done\n"), "the hit, reader gone");
    assert_eq!(runs(&w), 1);
    let script = "echo run >> runs; echo o; echo e >&2; exit 3";
    for what in ["miss", "hit"] {
        let mut c = run(&w, &[], script);
        c.stdout(fs::File::create("/dev/full").unwrap());
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(8), "{what}: {}", stderr_of(&o));
        let err = stderr_of(&o);
        assert!(err.starts_with("e\n"), "{what}: {err}");
        assert_eq!(err.lines().count(), 2, "{what}: {err}");
    }
    assert_eq!(runs(&w), 2, "the second was a hit");
}

#[test]
fn a_reader_that_closes_early_sees_the_commands_status_on_the_miss_and_the_hit() {
    let w = World::new();
    let s = "cache-run -- sh -c 'echo run >> runs; seq 1 200000; exit 3'";
    // The miss: seq dies of SIGPIPE as in a pipeline (or had finished),
    // sh exits 3 either way.
    let (code, err) = pipeline(&w, s, "head -1");
    assert_eq!((code, err.as_str()), (3, ""));
    // Stored whole by a reader that reads it all...
    let (code, _) = pipeline(&w, s, "cat");
    assert_eq!(code, 3);
    let ran = runs(&w);
    // ...the hit answers the stored status too, not 0.
    let (code, err) = pipeline(&w, s, "head -1");
    assert_eq!((code, err.as_str()), (3, ""));
    assert_eq!(runs(&w), ran, "a hit");
}

#[test]
fn a_miss_whose_reader_goes_away_stops_the_command_and_stores_nothing() {
    let w = World::new();
    let o = bash_within(
        &w,
        "set -o pipefail; \"$FF\" cache-run -- yes | head -1 >/dev/null; echo ${PIPESTATUS[0]}",
        "cache-run -- yes | head -1",
    );
    assert_eq!(last_number(&o), 141, "{}", stderr_of(&o));
    let j = json(
        &w.cmd("cache-run")
            .args(["--print-key", "--json", "--", "yes"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(j["present"], false, "nothing cut short is stored");
    assert_exact(&w);
}

/// Attack finding: a miss held its output twice while it stored it (the
/// recording, then the value's body built from it as one more buffer), so
/// 64 MiB of output took ffkit past 128 MiB, and a miss near the 256 MiB
/// limit whose reader stalled over 600 MiB with the pass-through's queue.
/// The body is now read from the recording as it is written: the miss
/// holds the output once (the queue to a reader that keeps up stays small).
#[test]
fn a_miss_holds_its_output_once_while_it_stores_it() {
    let w = World::new();
    if !Path::new("/usr/bin/time").exists() {
        return skip("/usr/bin/time not installed: a miss's peak memory was not measured");
    }
    let report = w.path().join("peak");
    let mut c = Command::new("/usr/bin/time");
    w.isolate(&mut c);
    c.env("FFKIT_CACHE_DIR", w.cache())
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .args([
            "sh",
            "-c",
            r#"exec "$0" cache-run -- sh -c "$1" >/dev/null"#,
        ])
        .arg(bin())
        .arg("head -c 33554432 /dev/zero; echo e >&2");
    let o = output_within(c, "a 32 MiB miss under /usr/bin/time");
    assert!(o.status.success(), "{}", stderr_of(&o));
    let kib = parse_u64(&fs::read(&report).unwrap());
    assert!(
        kib < 60 << 10,
        "ffkit's peak: {kib} KiB for a 32 MiB output"
    );
    // Stored whole, framed (stdout and stderr): the hit replays it.
    let mut c = w.cmd("cache-run");
    c.args([
        "--json",
        "--",
        "sh",
        "-c",
        "head -c 33554432 /dev/zero; echo e >&2",
    ]);
    let j = json(&c.output().unwrap().stdout);
    assert_eq!(j["source"], "hit", "{j}");
    assert_eq!(
        (j["stdout_bytes"].clone(), j["stderr_bytes"].clone()),
        ((32u64 << 20).into(), 2.into())
    );
}

#[test]
fn a_stalled_reader_of_the_miss_blocks_nobody_else() {
    let w = World::new();
    let script = "echo run >> runs; head -c 1000000 /dev/zero";
    // The leader's stdout is a pipe nobody reads yet: its 1 MB cannot pass.
    let mut leader = spawn_piped(run(&w, &[], script));
    // The run is stored (and its lock freed) at the command's pace anyway.
    let present = eventually(|| {
        let o = run(&w, &["--print-key", "--json"], script)
            .output()
            .unwrap();
        json(&o.stdout)["present"] == true
    });
    let other = run(&w, &[], script)
        .env("LOCK_TIMEOUT", "60")
        .output()
        .unwrap();
    let mut out = Vec::new();
    leader.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(leader.wait().unwrap().success());
    assert!(present, "the stalled caller kept the run from being stored");
    assert!(other.status.success(), "{}", stderr_of(&other));
    assert_eq!((out.len(), other.stdout.len()), (1_000_000, 1_000_000));
    assert_eq!(runs(&w), 1);
}

#[test]
fn stdout_and_stderr_on_one_file_keep_their_exact_order_and_the_shape_is_never_wrong() {
    let w = World::new();
    let script = "echo run >> runs; for i in 1 2 3; do echo o$i; echo e$i >&2; done";
    let merged = |w: &World| {
        let (mut r, wr) = std::io::pipe().unwrap();
        let mut c = run(w, &[], script);
        c.stdout(wr.try_clone().unwrap()).stderr(wr);
        let status = c.status().unwrap();
        drop(c);
        let mut both = String::new();
        r.read_to_string(&mut both).unwrap();
        assert!(status.success());
        both
    };
    let exact = "o1\ne1\no2\ne2\no3\ne3\n";
    assert_eq!(merged(&w), exact, "the miss");
    assert_eq!(merged(&w), exact, "the hit");
    assert_eq!(runs(&w), 1);
    // A caller with two files never gets stderr's lines on stdout: the
    // one-channel recording is a miss for it, run again on two pipes.
    let o = run(&w, &[], script).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "o1\no2\no3\n");
    assert_eq!(stderr_of(&o), "e1\ne2\ne3\n");
    assert_eq!(runs(&w), 2);
    // ...and that recording fits both kinds of caller from then on.
    let both = merged(&w);
    let mut lines: Vec<&str> = both.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["e1", "e2", "e3", "o1", "o2", "o3"]);
    assert_eq!(runs(&w), 2);
    // A warm-up into /dev/null (`>/dev/null 2>&1`, cron) shows nothing, so
    // it records two pipes, which every later caller can take.
    let quiet = format!("{script}; echo quiet");
    let mut c = run(&w, &[], &quiet);
    let null = fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    c.stdout(null.try_clone().unwrap()).stderr(null);
    assert!(c.status().unwrap().success());
    let o = run(&w, &[], &quiet).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "o1\no2\no3\nquiet\n");
    assert_eq!(stderr_of(&o), "e1\ne2\ne3\n");
    assert_eq!(runs(&w), 3, "the split caller got a hit");
}

#[test]
fn waiters_of_a_failed_run_with_discard_failures_get_its_result_not_a_run_each() {
    let w = World::new();
    let script = "echo run >> runs; i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; echo failed; echo why >&2; exit 5";
    let args = ["--discard-failures"];
    let children: Vec<Child> = (0..8)
        .map(|_| spawn_piped(run(&w, &args, script)))
        .collect();
    assert!(eventually(|| runs(&w) == 1), "the command never started");
    let lock = lock_file(&w, &key_of(&w, &args, script));
    let all_waiting = eventually(|| blocked_on(&lock) == 7);
    fs::write(w.path().join("go"), "").unwrap();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(5), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "failed\n");
        assert_eq!(stderr_of(&o), "why\n");
    }
    assert!(all_waiting, "7 waiters never showed up in /proc/locks");
    assert_eq!(runs(&w), 1, "one run for 8 callers");
    // The failure was not stored: the next call runs again.
    run(&w, &args, script).assert().code(5);
    assert_eq!(runs(&w), 2);
    // Nothing of it is left once the key is gone.
    run(&w, &["--invalidate"], script).assert().success();
    assert_eq!(run_dir_files(&w), Vec::<String>::new());
    assert_exact(&w);
}

#[test]
fn a_hit_never_waits_for_a_locked_hit_counter() {
    let w = World::new();
    if !need("flock", "holding the hit counter's lock") {
        return;
    }
    let script = "echo run >> runs; echo out";
    run(&w, &[], script).assert().success();
    run(&w, &[], script).assert().success().stdout("out\n");
    let key = key_of(&w, &[], script);
    let hits = lock_file(&w, &key).with_extension("hits");
    assert!(hits.exists());
    // Another process holds the counter (a hit stopped by SIGSTOP would).
    let mut c = Command::new("flock");
    c.arg(&hits)
        .args(["sh", "-c", "echo locked; read x || true"]);
    let mut holder = spawn_locked(c);
    let o = output_within(run(&w, &[], script), "a hit with its counter locked");
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(runs(&w), 1);
}

#[test]
fn a_symlink_fifo_or_directory_at_the_entry_its_sidecar_or_its_lock_is_a_miss_that_is_replaced() {
    let w = World::new();
    let script = "echo run >> runs; echo out";
    let key = key_of(&w, &[], script);
    let outside = w.path().join("outside");
    fs::write(&outside, "keep").unwrap();
    let mut expect = 0;
    for kind in ["symlink", "fifo", "dir"] {
        for at in ["entry", "sidecar", "lock"] {
            let what = format!("{kind} at the {at}");
            run(&w, &["--invalidate"], script).assert().success();
            fs::create_dir_all(w.cache().join(".cache-run")).unwrap();
            let p = match at {
                "entry" => w.cache().join(&key),
                "sidecar" => w.cache().join(format!("{key}.meta")),
                _ => lock_file(&w, &key),
            };
            match kind {
                "symlink" => std::os::unix::fs::symlink(&outside, &p).unwrap(),
                "fifo" => mkfifo(&p),
                _ => fs::create_dir_all(p.join("sub")).unwrap(),
            }
            let o = output_within(run(&w, &[], script), &what);
            expect += 1;
            assert!(o.status.success(), "{what}: {}", stderr_of(&o));
            assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n", "{what}");
            assert_eq!(stderr_of(&o), "", "{what}");
            assert_eq!(runs(&w), expect, "{what}: the command ran");
            // Replaced by a real entry: the next call is a hit.
            run(&w, &[], script).assert().success().stdout("out\n");
            assert_eq!(runs(&w), expect, "{what}: stored");
            assert_eq!(fs::read_to_string(&outside).unwrap(), "keep", "{what}");
            assert_exact(&w);
        }
    }
}

#[test]
fn a_same_length_corruption_is_a_miss_never_wrong_bytes() {
    let w = World::new();
    let script = "echo run >> runs; echo hello world";
    run(&w, &[], script).assert().success();
    let value = w.cache().join(key_of(&w, &[], script));
    let mut bytes = fs::read(&value).unwrap();
    let at = bytes
        .windows(5)
        .rposition(|b| b == b"hello")
        .expect("the output is in the value");
    bytes[at] = b'J';
    // Same size, same inode: the sidecar still agrees.
    fs::OpenOptions::new()
        .write(true)
        .open(&value)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();
    let o = run(&w, &[], script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello world\n");
    assert_eq!(runs(&w), 2, "the damaged entry was a miss");
    run(&w, &[], script)
        .assert()
        .success()
        .stdout("hello world\n");
    assert_eq!(runs(&w), 2, "and was rewritten");
    assert_exact(&w);
}

#[test]
fn the_detached_refresh_keeps_none_of_the_callers_descriptors() {
    let w = World::new();
    fs::write(w.path().join("version"), "v1\n").unwrap();
    let script = "echo run >> runs; if [ -e slow ]; then i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; fi; cat version";
    let args = ["--ttl", "3600", "--stale", "60"];
    run(&w, &args, script)
        .env("FFKIT_TEST_NOW", NOW.to_string())
        .assert()
        .success();
    fs::write(w.path().join("slow"), "").unwrap();
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.env("FF", bin())
        .env("S", script)
        .env("FFKIT_TEST_NOW", (NOW + 100).to_string())
        .args([
            "-c",
            "(\"$FF\" cache-run --ttl 3600 --stale 60 -- sh -c \"$S\" 3>&1 >/dev/null) | cat",
        ]);
    let mut pipeline = c.stdout(Stdio::null()).spawn().unwrap();
    // The caller's pipe (fd 3) must close when ffkit exits, not when the
    // refresh (blocked on `go`) does.
    let ended = eventually(|| pipeline.try_wait().unwrap().is_some());
    let refreshing = eventually(|| runs(&w) == 2);
    fs::write(w.path().join("go"), "").unwrap();
    let needle = w.cache().to_string_lossy().into_owned();
    assert!(
        eventually(|| processes_with(&needle) == 0),
        "refresh still running"
    );
    let _ = pipeline.wait();
    assert!(ended, "the pipeline waited for the refresh");
    assert!(refreshing, "no refresh started");
}

// ---- the shell wrapper's separator ------------------------------------------

#[test]
fn cache_command_takes_a_later_double_dash_as_part_of_the_command() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("repo/.git")).unwrap();
    fs::create_dir_all(root.join("home")).unwrap();
    let script = r#"
        cache_command sh -c 'echo "[$*]"' x a -- f
        cache_command --ttl 5 -- sh -c 'echo "[$*]"' x b -- g
        cache_command -- sh -c 'echo "[$*]"' x c -- h
    "#;
    let o = wrapper(root, "bash", script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "[a -- f]\n[b -- g]\n[c -- h]\n"
    );
}

// ---- input, key files and the command's lifetime ----------------------------

#[test]
fn key_file_content_refuses_a_fifo_instead_of_hanging() {
    let w = World::new();
    let fifo = w.path().join("fifo");
    mkfifo(&fifo);
    let mut c = w.cmd("cache-run");
    c.arg("--key-file-content")
        .arg(&fifo)
        .args(["--", "sh", "-c", "echo run >> runs"]);
    let o = output_within(c, "--key-file-content on a FIFO");
    assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
    let err = stderr_of(&o);
    assert!(
        err.contains("not a regular file") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(runs(&w), 0);
}

#[test]
fn key_stdin_is_not_held_in_memory() {
    let w = World::new();
    // The command reports ffkit's peak memory once it has read its input
    // (also in `hwm`, one line per run: the refresh's output is not shown).
    let script = "cat > /dev/null; k=$(grep VmHWM /proc/$PPID/status | tr -dc 0-9); \
                  echo $k >> hwm; printf %s $k";
    let input = vec![b'x'; 64 << 20];
    let o = run_with_stdin(&mut run(&w, &["--key-stdin"], script), &input);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let kib = parse_u64(&o.stdout);
    assert!(
        kib > 0 && kib < 48 << 10,
        "ffkit's peak: {kib} KiB for 64 MiB of stdin"
    );
    // The spooled input was stored: a hit replays without reading it again.
    let o = run_with_stdin(&mut run(&w, &["--key-stdin"], script), &input);
    assert_eq!(parse_u64(&o.stdout), kib);
    // Attack finding: the detached refresh of a stale hit read the stored
    // stdin whole into memory to feed it again (64 MiB here, as much as
    // was piped in). It is spooled from the entry now, as a miss's is.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 10;
    let mut c = run(&w, &["--key-stdin", "--stale", "1"], script);
    c.env("FFKIT_TEST_NOW", later.to_string());
    let o = run_with_stdin(&mut c, &input);
    assert_eq!(parse_u64(&o.stdout), kib, "a stale hit");
    let hwm = w.path().join("hwm");
    until("the refresh ran", || {
        fs::read_to_string(&hwm).is_ok_and(|s| s.lines().count() == 2)
    });
    let text = fs::read_to_string(&hwm).unwrap();
    let refresh = parse_u64(text.lines().nth(1).unwrap().as_bytes());
    assert!(
        refresh > 0 && refresh < 48 << 10,
        "the refresh's peak: {refresh} KiB for 64 MiB of stored stdin"
    );
}

#[test]
fn a_killed_ffkit_does_not_leave_the_command_running() {
    let w = World::new();
    let mut ff = spawn_piped(run(&w, &[], "echo $$ > pid; exec sleep 300"));
    let pid_file = w.path().join("pid");
    let pid = || {
        fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    assert!(eventually(|| pid().is_some()), "the command never started");
    let pid = pid().unwrap();
    let ours = |p: u32| {
        fs::read_to_string(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| c.contains("sleep") && c.contains("300"))
    };
    // The script writes its pid before it execs sleep: wait for the exec.
    assert!(eventually(|| ours(pid)), "the command never became sleep");
    ff.kill().unwrap();
    ff.wait().unwrap();
    // Gone (or a zombie waiting for its new parent) once ffkit is.
    let gone = eventually(|| {
        !ours(pid)
            || fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"))
    });
    assert!(gone, "the command outlived ffkit");
}

/// The usual calls skip clap (`[--dir D] [--ttl N] -- CMD`); they must mean
/// what clap's parse means (one entry, one run), and every other form,
/// including values clap refuses, still gets clap's exit 2.
#[test]
fn the_parser_without_clap_agrees_with_clap() {
    let w = World::new();
    let dir = w.cache().display().to_string();
    let script = "echo run >> runs; echo out";
    let sh = ["--", "sh", "-c", script];
    // The fast form runs it; clap's spellings of the same options hit it.
    for (i, opts) in [
        vec!["--dir", &dir, "--ttl", "100"],
        vec![&format!("--dir={dir}"), "--ttl=100"],
        vec!["--ttl", "100", "--dir", &dir, "--scope", ""],
    ]
    .iter()
    .enumerate()
    {
        let o = w.cmd("cache-run").args(opts).args(sh).output().unwrap();
        assert!(o.status.success(), "{opts:?}: {}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n", "{opts:?}");
        // --scope "" is a key of its own: the third form runs once more.
        assert_eq!(runs(&w), if i < 2 { 1 } else { 2 }, "{opts:?}");
    }
    let report = w
        .cmd("cache-run")
        .args(["--dir", &dir, "--ttl", "100", "--json"])
        .args(sh)
        .output()
        .unwrap();
    assert_eq!(json(&report.stdout)["source"], "hit");
    for bad in [
        vec!["--dir", "", "--", "echo", "x"],
        vec!["--dir", "-x", "--", "echo", "x"],
        vec!["--ttl", "soon", "--", "echo", "x"],
        vec!["--ttl", "-1", "--", "echo", "x"],
        vec!["--ttl", "1", "--ttl", "2", "--", "echo", "x"],
        vec!["--dir", &dir, "--"],
    ] {
        let o = w.cmd("cache-run").args(&bad).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr_of(&o));
        assert!(!stderr_of(&o).is_empty(), "{bad:?}: says why");
    }
    assert_eq!(runs(&w), 2);
}

/// A plain output larger than the first read and than the replay's buffer
/// (two passes through 128 KiB): replayed whole, and a byte flipped deep in
/// it is a miss with nothing of the damaged entry written.
#[test]
fn a_large_hit_is_checked_whole_before_a_byte_is_written() {
    let w = World::new();
    let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(w.path().join("data"), &data).unwrap();
    let script = "echo run >> runs; cat data";
    run(&w, &[], script).assert().success();
    let o = run(&w, &[], script).output().unwrap();
    assert!(o.stdout == data, "the hit replays the output whole");
    assert_eq!(runs(&w), 1);
    let value = w.cache().join(key_of(&w, &[], script));
    let mut bytes = fs::read(&value).unwrap();
    let at = bytes.len() - data.len() + 300_000;
    bytes[at] ^= 1;
    fs::OpenOptions::new()
        .write(true)
        .open(&value)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();
    let o = run(&w, &[], script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(
        o.stdout == data,
        "the miss's output only, never damaged bytes"
    );
    assert_eq!(runs(&w), 2, "the damaged entry was a miss");
    assert_exact(&w);
}

#[test]
fn a_key_env_that_cannot_name_a_variable_is_refused_before_anything_runs() {
    let w = World::new();
    for bad in ["", "A=B", "="] {
        let o = w
            .cmd("cache-run")
            .args(["--key-env", bad, "--", "sh", "-c", "echo run >> runs"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr_of(&o));
        assert_eq!(stderr_lines(&o).len(), 1, "{}", stderr_of(&o));
    }
    assert_eq!(runs(&w), 0);
    let o = w
        .cmd("cache-run")
        .args(["--key-env", "HOME", "--", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
}

#[test]
fn help_and_version_into_a_full_device_exit_8() {
    if !Path::new("/dev/full").exists() {
        println!("SKIP: no /dev/full");
        return;
    }
    for args in [
        &["--help"][..],
        &["--version"][..],
        &["cache-run", "--help"][..],
    ] {
        let o = Command::new(bin())
            .args(args)
            .stdout(fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(8), "{args:?}: {}", stderr_of(&o));
        assert_eq!(stderr_lines(&o).len(), 1, "{}", stderr_of(&o));
    }
}

/// Attack finding: a hit through a `.cache-run` that was swapped for a
/// symlink after the recording rewrote the first 16 bytes of the
/// `<hash>.hits` file in the link's target (the miss path already refused
/// the link). A hit still replays, but never writes, nor counts, through it.
#[test]
fn a_hit_never_writes_a_hit_counter_through_a_symlinked_cache_run_dir() {
    let w = World::new();
    let script = "echo run >> runs; echo out";
    run(&w, &["--ttl", "0"], script).assert().success();
    let hex = key_of(&w, &["--ttl", "0"], script)
        .strip_prefix("run-")
        .unwrap()
        .to_string();
    let elsewhere = w.path().join("elsewhere");
    fs::rename(w.cache().join(".cache-run"), &elsewhere).unwrap();
    let theirs = elsewhere.join(format!("{hex}.hits"));
    let planted = b"their own data, not a counter at all\n";
    fs::write(&theirs, planted).unwrap();
    std::os::unix::fs::symlink(&elsewhere, w.cache().join(".cache-run")).unwrap();
    for _ in 0..2 {
        let o = run(&w, &["--ttl", "0"], script).output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    }
    let o = run(&w, &["--ttl", "0", "--json"], script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(json(&o.stdout)["hits"], 0, "no count read through the link");
    assert_eq!(runs(&w), 1, "hits, not runs");
    assert_eq!(fs::read(&theirs).unwrap(), planted, "nothing written there");
}

/// Attack finding: a second name at `.cache-run/<hash>.hits` (a hard link
/// to a file elsewhere, which `O_NOFOLLOW` does not see) had its first 16
/// bytes rewritten by every hit, and by the next recording's reset. A hit
/// now leaves such a file alone; a recording replaces the name with a
/// counter of its own, which counts again.
#[test]
fn a_hit_counter_with_a_second_name_is_never_written_through() {
    let w = World::new();
    let script = "echo run >> runs; echo out";
    let at = |t: i64, extra: &[&str]| {
        let mut c = run(&w, &[&["--ttl", "10"], extra].concat(), script);
        c.env("FFKIT_TEST_NOW", t.to_string());
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        o
    };
    at(NOW, &[]);
    let hex = key_of(&w, &["--ttl", "10"], script)
        .strip_prefix("run-")
        .unwrap()
        .to_string();
    let hits = w.cache().join(".cache-run").join(format!("{hex}.hits"));
    let theirs = w.path().join("theirs");
    let planted = b"their own data, not a counter at all\n";
    fs::write(&theirs, planted).unwrap();
    fs::remove_file(&hits).unwrap();
    fs::hard_link(&theirs, &hits).unwrap();
    for _ in 0..2 {
        assert_eq!(at(NOW, &[]).stdout, b"out\n");
    }
    assert_eq!(fs::read(&theirs).unwrap(), planted, "a hit wrote through");
    assert_eq!(runs(&w), 1);
    // Expired: the next call records again and resets the counter.
    at(NOW + 20, &[]);
    assert_eq!(runs(&w), 2);
    assert_eq!(
        fs::read(&theirs).unwrap(),
        planted,
        "the reset wrote through"
    );
    assert_eq!(fs::metadata(&hits).unwrap().nlink(), 1);
    at(NOW + 20, &[]);
    assert_eq!(json(&at(NOW + 20, &["--json"]).stdout)["hits"], 2);
}

/// `c` run under a 160 MiB address-space limit (`ulimit -v`): its exit
/// code, the bytes of its stdout, its stderr; `None` (said as a skip) if
/// ffkit cannot even start its threads under it here.
fn run_in_160_mib(mut c: Command) -> Option<(Option<i32>, u64, String)> {
    limit_address_space(&mut c, 160 << 20);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let got = std::io::copy(&mut child.stdout.take().unwrap(), &mut std::io::sink()).unwrap();
    let st = child.wait().unwrap();
    let err = errs.join().unwrap();
    if err.contains("cannot start a thread") {
        skip("ffkit cannot start under this ulimit -v here: not run");
        return None;
    }
    Some((st.code(), got, err))
}

/// `c` will run under an address-space limit of `bytes` (`ulimit -v`).
pub(crate) fn limit_address_space(c: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec; setrlimit(2) is
    // async-signal-safe and allocates nothing.
    unsafe {
        c.pre_exec(move || {
            let lim = rustix::process::Rlimit {
                current: Some(bytes),
                maximum: None,
            };
            rustix::process::setrlimit(rustix::process::Resource::As, lim)
                .map_err(std::io::Error::from)
        });
    }
}

/// Attack finding: under `ulimit -v`, a miss whose reader stalled (a pager,
/// a pipe read later) aborted ffkit once the output queued for the reader
/// reached the memory left: `memory allocation of 65536 bytes failed`, exit
/// 134, and the reader got 64 KiB of 100 MB. The copy for the queue was the
/// one allocation of the capture not made fallibly: it also aborted about
/// one run in ten of a miss just over the memory left with a reader that
/// did read (the recording, grown to the limit by one read, left no room
/// for the next copy). Now the recording is given up first, then the
/// capture waits for the reader, as it does past 256 MiB queued.
#[test]
fn a_miss_under_ulimit_v_whose_reader_stalls_is_passed_through_whole() {
    let w = World::new();
    let size: u64 = 100_000_000;
    let limit: u64 = 64 << 20;
    let mut c = run(&w, &[], &format!("head -c {size} /dev/zero"));
    limit_address_space(&mut c, limit);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // The reader stalls until ffkit has ended (the abort) or waits for it
    // (its capture sleeps, its memory used up to the limit): a state, not
    // a time. The old capture never sleeps below 256 MiB queued, so it
    // cannot pass this way. The bound only keeps a changed ffkit that does
    // neither from hanging the test.
    let pid = child.id();
    let waits_for_reader = || {
        let vm_kib: u64 = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|t| {
                let l = t.lines().find(|l| l.starts_with("VmSize:"))?;
                l.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0);
        let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        vm_kib << 10 >= limit - (2 << 20) && wchan.contains("nanosleep")
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && !waits_for_reader() {
        assert!(
            std::time::Instant::now() < until,
            "ffkit neither ended nor waited for its reader"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let got = std::io::copy(&mut child.stdout.take().unwrap(), &mut std::io::sink()).unwrap();
    let st = child.wait().unwrap();
    let err = errs.join().unwrap();
    if err.contains("cannot start a thread") {
        return skip("ffkit cannot start under this ulimit -v here: not run");
    }
    assert_eq!((st.code(), got), (Some(0), size), "{err}");
    assert!(
        err.lines().count() == 1 && err.contains("does not fit in the memory left"),
        "{err}"
    );
}

/// Attack finding: a miss whose output the recording could not hold in
/// the memory left (`ulimit -v`, a small container) aborted ffkit: `memory
/// allocation of 100663296 bytes failed`, a backtrace, exit 134, the
/// caller got a quarter of the output and the command was stopped. Holding
/// the output is only for the cache: the run is now passed through whole,
/// exits with the command's status and says `not cached` in one line, as a
/// run past 256 MiB does. A hit of an entry with stdout and stderr (read
/// whole to check it) aborted the same way: it now runs the command, as a
/// damaged entry does, and the entry stays for callers with the memory.
#[test]
fn a_miss_whose_output_the_memory_left_cannot_hold_is_passed_through_uncached() {
    let w = World::new();
    let size: u64 = 200_000_000;
    let plain = format!("echo run >> runs; head -c {size} /dev/zero; exit 3");
    let Some((code, got, err)) = run_in_160_mib(run(&w, &[], &plain)) else {
        return;
    };
    assert_eq!((code, got), (Some(3), size), "{err}");
    assert!(
        err.lines().count() == 1 && err.contains("not cached"),
        "{err}"
    );
    assert_eq!(runs(&w), 1);
    // A framed entry, stored without the limit, then hit under it.
    let framed = format!("echo run >> runs; head -c {size} /dev/zero; echo e >&2; exit 3");
    let o = run(&w, &[], &framed)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr_of(&o));
    let Some((code, got, err)) = run_in_160_mib(run(&w, &[], &framed)) else {
        return;
    };
    assert_eq!((code, got), (Some(3), size), "{err}");
    assert!(err.starts_with("e\n") && err.lines().count() == 2, "{err}");
    assert_eq!(runs(&w), 3, "run again, as for a damaged entry");
    let o = run(&w, &[], &framed)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        (o.status.code(), runs(&w)),
        (Some(3), 3),
        "the entry stayed"
    );
}

/// Attack finding: the move of a `--key-stdin` spool to memory when its
/// disk fills up had no bound: an input larger than the disk (or one that
/// never ends, `< /dev/zero`) filled the disk, then went on into memory
/// until the OOM killer ended it, or something else. The memory spool now
/// holds at most 256 MiB; past it the call fails as before the move (exit
/// 8, one line, the command not run).
#[test]
fn key_stdin_on_a_full_disk_holds_at_most_256_mib_in_memory() {
    let w = World::new();
    let Some(_m) = Tmpfs::mount(&w.cache(), "64k") else {
        return skip("cannot mount a tmpfs (needs root): full-spool test not run");
    };
    let mut child = run(&w, &["--key-stdin"], "echo run >> runs; wc -c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![0u8; 1 << 20];
        // 257 MiB, or until ffkit stops reading (EPIPE).
        for _ in 0..257 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let o = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(8), "{err}");
    assert!(
        err.lines().count() == 1 && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(runs(&w), 0, "nothing run");
}
