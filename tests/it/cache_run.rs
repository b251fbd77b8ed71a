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
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::util::*;

const NOW: i64 = 1_800_000_000;
const DEADLINE: Duration = Duration::from_secs(60);

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

/// Polls `cond` until it holds; false at the deadline.
pub(crate) fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// How many processes are blocked in flock(2) on `path` (from /proc/locks).
fn blocked_on(path: &Path) -> usize {
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
    assert!(wait_for(|| runs(&w) == 1), "the command never started");
    let lock = lock_file(&w, &key_of(&w, &["--ttl", "600"], script));
    let all_waiting = wait_for(|| blocked_on(&lock) == 15);
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
    assert!(wait_for(|| runs(&w) == 1));
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
    processes_in(None, needle)
}

/// [`processes_with`] working in `cwd`, when given: a needle that does not
/// name the world (a script's text) also matches the same test running in
/// another checkout on this machine.
fn processes_in(cwd: Option<&std::path::Path>, needle: &str) -> usize {
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
        .filter(|e| cwd.is_none_or(|d| fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == d)))
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
    assert!(wait_for(|| runs(&w) == 2), "the refresh never started");
    fs::write(w.path().join("go"), "").unwrap();
    let needle = w.cache().to_string_lossy().into_owned();
    assert!(
        wait_for(|| processes_with(&needle) == 0),
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
    let script = "first=1; [ -e runs ] && first=0; echo run >> runs; echo partial; \
                  if [ $first = 1 ]; then i=0; while [ ! -e release ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; fi; \
                  echo complete";
    let mut leader = spawn_piped(run(&w, &[], script));
    let mut lout = BufReader::new(leader.stdout.take().unwrap());
    let mut line = String::new();
    lout.read_line(&mut line).unwrap();
    assert_eq!(line, "partial\n");
    let lock = lock_file(&w, &key_of(&w, &[], script));
    let waiters: Vec<Child> = (0..3).map(|_| spawn_piped(run(&w, &[], script))).collect();
    let all_waiting = wait_for(|| blocked_on(&lock) == 3);
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
    // Let the orphaned first command end (it is not ours to signal).
    fs::write(w.path().join("release"), "").unwrap();
    assert!(wait_for(|| processes_in(
        Some(w.path()),
        "[ ! -e release ]"
    ) == 0));
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
fn wrapper(root: &Path, shell: &str, script: &str) -> Command {
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

#[test]
fn a_run_that_cannot_be_stored_still_prints_and_exits_with_the_commands_status() {
    let w = World::new();
    let script = "echo run >> runs; echo out; exit 4";
    let key = key_of(&w, &[], script);
    // A directory where the entry's value file would go: the write fails.
    fs::create_dir_all(w.cache().join(&key)).unwrap();
    for n in 1..=2 {
        let o = run(&w, &[], script).output().unwrap();
        assert_eq!(o.status.code(), Some(4), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
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

#[test]
fn eviction_and_invalidate_leave_no_cache_run_files_but_a_running_miss_keeps_its_lock() {
    let w = World::new();
    let done: Vec<String> = (0..3).map(|i| format!("echo done{i}")).collect();
    for s in &done {
        run(&w, &["--ttl", "0"], s).assert().success();
    }
    // A hit creates the hit counter too.
    run(&w, &["--ttl", "0"], &done[0])
        .assert()
        .success()
        .stdout("done0\n");
    assert!(run_dir_files(&w).iter().any(|f| f.ends_with(".hits")));
    let slow = "echo run >> runs; i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; echo slow";
    let leader = spawn_piped(run(&w, &["--ttl", "0"], slow));
    assert!(wait_for(|| runs(&w) == 1), "the slow miss never started");
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
        wait_for(|| blocked_on(&lock) == 1),
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
