//! `cache-run` and `cache-evict --older-than/--dry-run` on the Redis
//! backend, against a real `redis-server`: the same transcript of misses,
//! hits, expiry, refresh and invalidation as the local cache; single
//! flight across 10 processes (the command counts its own runs in a file);
//! a SIGKILLed miss handing over within the lease; and the server's total
//! equal to the sum of STRLEN over the value keys throughout.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::cache_run::{json, runs, spawn_piped};
use crate::redis::{Server, env};
use crate::redis_cache::{NS, counters, recount};
use crate::util::*;

const NOW: i64 = 1_800_000_000;

/// A backend for one side of a comparison: the local files, or the server.
#[derive(Clone, Copy)]
enum Side<'a> {
    Local,
    Redis(&'a Server),
}

fn cmd(w: &World, side: Side<'_>, applet: &str) -> Command {
    let mut c = w.cmd(applet);
    if let Side::Redis(s) = side {
        env(&mut c, s);
    }
    c
}

fn run(w: &World, side: Side<'_>, args: &[&str], script: &str) -> Command {
    let mut c = cmd(w, side, "cache-run");
    c.args(args).args(["--", "sh", "-c", script]);
    c
}

/// The server's counters equal its own recount (sum of STRLEN over the
/// value keys), and every entry is in the recency and creation sets.
fn assert_total_exact(s: &Server) {
    let rc = recount(s);
    assert_eq!(counters(s), (rc.bytes, rc.values), "counters vs STRLEN");
    assert_eq!(
        (rc.metas, rc.lru, rc.crt),
        (rc.values, rc.values, rc.values)
    );
    assert!(rc.meta_sizes_match);
}

/// Clients connected to the server (the test's own query included).
fn clients(s: &Server) -> u64 {
    let info: String = s.query(redis::cmd("INFO").arg("clients"));
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One line of a transcript: what a call printed and how it ended, minus
/// what legitimately differs between two runs (durations).
fn line(o: &Output) -> String {
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    if let Ok(mut j) = serde_json::from_slice::<Json>(&o.stdout) {
        if let Some(m) = j.as_object_mut() {
            m.remove("duration_ms");
        }
        out = j.to_string();
    }
    format!("{:?} out={out:?} err={:?}", o.status.code(), stderr_of(o))
}

/// Misses, hits, expiry, statuses, --key-stdin, --discard-failures,
/// --print-key, --invalidate: everything but timing, on one backend.
fn transcript(w: &World, side: Side<'_>) -> Vec<String> {
    let script = "echo run >> runs; echo out; echo err >&2; exit 3";
    let mut t = Vec::new();
    let mut at = |when: i64, args: &[&str], script: &str, stdin: Option<&str>| {
        let mut c = run(w, side, args, script);
        c.env("FFKIT_TEST_NOW", when.to_string());
        let o = match stdin {
            Some(i) => run_with_stdin(&mut c, i.as_bytes()),
            None => c.output().unwrap(),
        };
        let l = format!("{} runs={}", line(&o), runs(w));
        t.push(l);
    };
    let ttl = ["--ttl", "10"];
    at(NOW, &ttl, script, None);
    at(NOW + 5, &ttl, script, None);
    at(NOW + 5, &["--ttl", "10", "--json"], script, None);
    at(
        NOW + 6,
        &["--ttl", "10", "--print-key", "--json"],
        script,
        None,
    );
    at(NOW + 9, &["--ttl", "10", "--json"], script, None);
    // Expired from its expires_at second on: a miss that runs again.
    at(NOW + 10, &["--ttl", "10", "--json"], script, None);
    at(
        NOW + 11,
        &["--ttl", "10", "--print-key", "--json"],
        script,
        None,
    );
    at(
        NOW + 11,
        &["--ttl", "10", "--force", "--json"],
        script,
        None,
    );
    at(
        NOW + 12,
        &["--ttl", "10", "--invalidate", "--json"],
        script,
        None,
    );
    at(
        NOW + 12,
        &["--ttl", "10", "--invalidate", "--json"],
        script,
        None,
    );
    at(
        NOW + 12,
        &["--ttl", "10", "--print-key", "--json"],
        script,
        None,
    );
    // --key-stdin: hashed, stored, fed again on replay.
    let cat = "echo run >> runs; tr a-z A-Z";
    at(NOW, &["--key-stdin"], cat, Some("abc\n"));
    at(NOW + 1, &["--key-stdin"], cat, Some("abc\n"));
    at(NOW + 1, &["--key-stdin"], cat, Some("xyz\n"));
    // --discard-failures keeps a failure out, a success in.
    let flaky = "echo run >> runs; [ -e ok ] || exit 1; echo fine";
    at(NOW, &["--discard-failures"], flaky, None);
    at(NOW, &["--discard-failures"], flaky, None);
    fs::write(w.path().join("ok"), "").unwrap();
    at(NOW, &["--discard-failures"], flaky, None);
    at(NOW, &["--discard-failures", "--json"], flaky, None);
    // Never expires with --ttl 0; a signal is 128+N.
    at(
        NOW,
        &["--ttl", "0"],
        "echo run >> runs; kill -TERM $$",
        None,
    );
    at(
        NOW + 1_000_000,
        &["--ttl", "0"],
        "echo run >> runs; kill -TERM $$",
        None,
    );
    t
}

#[test]
fn redis_cache_run_gives_the_same_transcript_as_the_local_cache() {
    let Some(s) = Server::start() else { return };
    let local = World::new();
    let remote = World::new();
    let a = transcript(&local, Side::Local);
    let b = transcript(&remote, Side::Redis(&s));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "call {i} differs (local, then redis)");
    }
    assert_eq!(a.len(), b.len());
    assert!(
        !remote.cache().exists(),
        "the Redis side wrote nothing locally"
    );
    assert_total_exact(&s);
    // The entries are ordinary cache entries: listed by size, evicted.
    let (bytes, entries) = counters(&s);
    assert!(bytes > 0 && entries == 4, "{bytes} bytes in {entries}");
    cmd(&remote, Side::Redis(&s), "cache-evict")
        .arg("--all")
        .assert()
        .success();
    assert_eq!(counters(&s), (0, 0));
}

#[test]
fn redis_cache_run_stale_hit_refreshes_in_the_background_once() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let side = Side::Redis(&s);
    fs::write(w.path().join("version"), "v1\n").unwrap();
    let script = "echo run >> runs; cat version";
    let args = ["--ttl", "3600", "--stale", "60"];
    let at = |t: i64| {
        let mut c = run(&w, side, &args, script);
        c.env("FFKIT_TEST_NOW", t.to_string());
        c.output().unwrap()
    };
    assert_eq!(at(NOW).stdout, b"v1\n");
    fs::write(w.path().join("version"), "v2\n").unwrap();
    let o = at(NOW + 100);
    assert_eq!(o.stdout, b"v1\n", "a stale hit replays the old answer");
    assert!(eventually(|| runs(&w) == 2), "the refresh never ran");
    // The refresh stores its answer (the value changes on the server).
    assert!(
        eventually(|| at(NOW + 100).stdout == b"v2\n"),
        "the refreshed answer never arrived"
    );
    assert_eq!(runs(&w), 2, "one refresh");
    assert!(!w.cache().exists(), "the refresh used the server too");
    assert_total_exact(&s);
}

#[test]
fn redis_cache_run_ten_concurrent_misses_run_the_command_once() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let side = Side::Redis(&s);
    let script = "echo run >> runs; i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; \
                  echo out1; echo err1 >&2; echo out2; exit 7";
    let base = clients(&s);
    let children: Vec<Child> = (0..10)
        .map(|i| {
            let mut c = if i % 2 == 0 {
                w.cmd("cache-run")
            } else {
                w.link("cache-run")
            };
            env(&mut c, &s);
            c.args(["--ttl", "600", "--", "sh", "-c", script]);
            spawn_piped(c)
        })
        .collect();
    assert!(eventually(|| runs(&w) == 1), "the command never started");
    // The leader holds two connections (the cache and its lease renewer),
    // each waiter one: all 9 waiters are waiting on the server's lock.
    let all_waiting = eventually(|| clients(&s) >= base + 11);
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
    assert!(all_waiting, "9 waiters never connected");
    assert_eq!(runs(&w), 1, "exactly one execution");
    let mut j = run(&w, side, &["--ttl", "600", "--print-key", "--json"], script)
        .output()
        .unwrap();
    assert!(j.status.success(), "{}", stderr_of(&j));
    let p = json(&std::mem::take(&mut j.stdout));
    assert_eq!(p["hits"], 9, "9 waiters replayed the one run: {p}");
    assert_total_exact(&s);
}

#[test]
fn redis_cache_run_sigkill_of_the_miss_hands_over_within_the_lease() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let side = Side::Redis(&s);
    let script = "first=1; [ -e runs ] && first=0; echo run >> runs; echo partial; \
                  if [ $first = 1 ]; then i=0; while [ ! -e release ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; fi; \
                  echo complete";
    let mut leader = spawn_piped(run(&w, side, &[], script));
    let mut lout = BufReader::new(leader.stdout.take().unwrap());
    let mut l = String::new();
    lout.read_line(&mut l).unwrap();
    assert_eq!(l, "partial\n");
    let base = clients(&s);
    let waiters: Vec<Child> = (0..3)
        .map(|_| {
            let mut c = run(&w, side, &[], script);
            c.env("LOCK_TIMEOUT", "120");
            spawn_piped(c)
        })
        .collect();
    let all_waiting = eventually(|| clients(&s) >= base + 3);
    // Our own child: SIGKILL takes its lease renewer with it.
    leader.kill().unwrap();
    let killed = Instant::now();
    assert!(!leader.wait().unwrap().success());
    for c in waiters {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "partial\ncomplete\n");
    }
    let handover = killed.elapsed();
    assert!(all_waiting, "3 waiters never connected");
    assert_eq!(runs(&w), 2, "one waiter took over; the others replayed it");
    // Within the 6 s lease (plus a loaded machine's slack), far from the
    // 120 s LOCK_TIMEOUT the waiters were given.
    assert!(
        handover < Duration::from_secs(40),
        "handover took {handover:?}"
    );
    run(&w, side, &[], script)
        .assert()
        .success()
        .stdout("partial\ncomplete\n");
    assert_eq!(runs(&w), 2);
    assert_total_exact(&s);
    fs::write(w.path().join("release"), "").unwrap();
}

#[test]
fn redis_cache_run_without_a_server_or_with_a_paused_one_still_runs_the_command_uncached() {
    let Some(mut s) = Server::start() else { return };
    let w = World::new();
    s.kill9();
    let o = run(
        &w,
        Side::Redis(&s),
        &[],
        "echo run >> runs; echo hi; exit 5",
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(o.stdout, b"hi\n");
    let err = stderr_of(&o);
    assert!(
        err.starts_with("ffkit cache-run: not cached: backend redis://127.0.0.1:")
            && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(runs(&w), 1);
    // A paused server: the look times out within FFKIT_BACKEND_TIMEOUT and
    // the command still runs, uncached, instead of the call hanging.
    let Some(p) = Server::start() else { return };
    let _: String = p.query(redis::cmd("CLIENT").arg("PAUSE").arg(30_000).arg("ALL"));
    let t = Instant::now();
    let o = run(&w, Side::Redis(&p), &[], "echo run >> runs; echo hi")
        .env("FFKIT_BACKEND_TIMEOUT", "0.5")
        .env("FFKIT_LOCK_LEASE", "2")
        .output()
        .unwrap();
    assert_eq!(
        (o.status.code(), o.stdout.as_slice()),
        (Some(0), &b"hi\n"[..])
    );
    let err = stderr_of(&o);
    assert!(
        err.contains("not cached") && err.contains("timed out after 0.5s"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "hung: {:?}",
        t.elapsed()
    );
    assert_eq!(runs(&w), 2);
    // --dir names a local cache: refused, as on every cache applet.
    run(&w, Side::Redis(&s), &["--dir", "/tmp"], "true")
        .assert()
        .code(2);
}

// ---- cache-evict --older-than / --dry-run ----------------------------------

/// Five entries a..e of 10..50 bytes written at NOW+0..4; `c` expires at NOW+3.
fn fill(w: &World, side: Side<'_>) {
    for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let mut c = cmd(w, side, "cache-write");
        c.arg(k)
            .arg("x".repeat(10 * (i + 1)))
            .env("FFKIT_TEST_NOW", (NOW + i as i64).to_string());
        if *k == "c" {
            c.args(["--ttl", "3"]);
        }
        c.assert().success();
    }
}

/// Entries written at NOW+0..5 (one with a TTL), then an eviction at
/// NOW+10: the report (keys, reasons, entry counts, dry_run: the local
/// size also counts the sidecars, the Redis total only values, so bytes are
/// checked on their own), and what is left.
fn evict_report(w: &World, side: Side<'_>, args: &[&str]) -> (Json, Vec<String>) {
    fill(w, side);
    let out = cmd(w, side, "cache-evict")
        .args(args)
        .arg("--json")
        .env("FFKIT_TEST_NOW", (NOW + 10).to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
    let r = json(&out.stdout);
    let mut removed: Vec<(String, String)> = r["removed"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| (e["key"].to_string(), e["reason"].to_string()))
        .collect();
    removed.sort();
    if let Side::Redis(_) = side {
        // Bytes are the values' lengths, and the totals add up.
        let gone: u64 = r["removed"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let k = e["key"].as_str().unwrap_or_default();
                let i = ["a", "b", "c", "d", "e"]
                    .iter()
                    .position(|x| *x == k)
                    .unwrap();
                assert_eq!(e["bytes"], 10 * (i as u64 + 1), "{e}");
                10 * (i as u64 + 1)
            })
            .sum();
        assert_eq!(r["before"]["bytes"], 150);
        assert_eq!(r["after"]["bytes"], 150 - gone, "{r}");
    }
    let r = serde_json::json!({
        "dry_run": r["dry_run"],
        "before": r["before"]["entries"],
        "after": r["after"]["entries"],
        "removed": format!("{removed:?}"),
    });
    let mut left = Vec::new();
    for k in ["a", "b", "c", "d", "e"] {
        let o = cmd(w, side, "cache-read")
            .arg(k)
            .env("FFKIT_TEST_NOW", (NOW + 10).to_string())
            .output()
            .unwrap();
        if o.status.success() {
            left.push(k.to_string());
        }
    }
    (r, left)
}

#[test]
fn redis_cache_evict_older_than_and_dry_run_match_the_local_cache() {
    let Some(s) = Server::start() else { return };
    // Same as local where sizes do not enter (the local size counts the
    // sidecars too, so --max-bytes picks differently by design).
    let cases: [&[&str]; 5] = [
        &["--older-than", "8s"],
        &["--older-than", "8s", "--dry-run"],
        &["--older-than", "7s", "--expired"],
        &["--older-than", "7s", "--expired", "--dry-run"],
        &["--all", "--dry-run"],
    ];
    for args in cases {
        let _: () = s.query(&mut redis::cmd("FLUSHALL"));
        let local = World::new();
        let remote = World::new();
        let (a, left_a) = evict_report(&local, Side::Local, args);
        let (b, left_b) = evict_report(&remote, Side::Redis(&s), args);
        assert_eq!(a, b, "{args:?}: report (local, then redis)");
        assert_eq!(left_a, left_b, "{args:?}: entries left");
        assert_total_exact(&s);
        if args.contains(&"--dry-run") {
            // Everything but `c`, which had expired by then.
            assert_eq!(
                left_b,
                ["a", "b", "d", "e"],
                "{args:?}: a dry run removes nothing"
            );
        }
    }
    // On Redis a dry run predicts the real eviction exactly (quiet cache).
    let cases: [&[&str]; 5] = [
        &["--max-bytes", "100"],
        &["--max-bytes", "45"],
        &["--max-bytes", "100", "--older-than", "9s"],
        &["--expired", "--older-than", "7s"],
        &["--all", "--expired"],
    ];
    for args in cases {
        let _: () = s.query(&mut redis::cmd("FLUSHALL"));
        let w = World::new();
        let (dry, _) = evict_report(&w, Side::Redis(&s), &[args, &["--dry-run"]].concat());
        let _: () = s.query(&mut redis::cmd("FLUSHALL"));
        let (real, _) = evict_report(&w, Side::Redis(&s), args);
        assert_eq!(dry["removed"], real["removed"], "{args:?}");
        assert_eq!(dry["after"], real["after"], "{args:?}");
        assert_eq!(
            (dry["dry_run"].clone(), real["dry_run"].clone()),
            (true.into(), false.into())
        );
        assert_total_exact(&s);
    }
    // Without --json a dry run lists what would go, like the local one.
    let _: () = s.query(&mut redis::cmd("FLUSHALL"));
    let w = World::new();
    fill(&w, Side::Redis(&s));
    let out = cmd(&w, Side::Redis(&s), "cache-evict")
        .args(["--older-than", "8s", "--dry-run"])
        .env("FFKIT_TEST_NOW", (NOW + 10).to_string())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "would evict a (10 bytes, older-than)\nwould evict b (20 bytes, older-than)\nwould evict c (30 bytes, older-than)\n"
    );
    cmd(&w, Side::Redis(&s), "cache-evict").assert().code(2);
}

#[test]
fn redis_cache_run_renews_its_lease_while_a_long_miss_runs() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let side = Side::Redis(&s);
    let script = "echo run >> runs; i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; echo done";
    let key = String::from_utf8(
        run(&w, side, &["--print-key"], script)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let lock = format!(
        "ffkit:cache:{{default}}:run-lock:{}",
        key.trim().strip_prefix("run-").unwrap()
    );
    let started = Instant::now();
    let leader = spawn_piped(run(&w, side, &[], script));
    assert!(eventually(|| runs(&w) == 1), "the command never started");
    let waiter = spawn_piped(run(&w, side, &[], script));
    // The 6 s lease (tests' FFKIT_LOCK_LEASE) is renewed every 2 s: watch
    // its time to live go up twice, and outlast the first lease by a second.
    let (mut last, mut renewals) = (i64::MAX, 0);
    let renewed = eventually(|| {
        let ttl: i64 = s.query(redis::cmd("PTTL").arg(&lock));
        if ttl > last {
            renewals += 1;
        }
        last = ttl;
        renewals >= 2 && started.elapsed() > Duration::from_secs(7)
    });
    assert!(
        renewed,
        "the lease was not renewed ({renewals} renewals seen)"
    );
    assert_eq!(runs(&w), 1, "the waiter did not take over a renewed lease");
    fs::write(w.path().join("go"), "").unwrap();
    for c in [leader, waiter] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(o.stdout, b"done\n");
    }
    assert_eq!(runs(&w), 1);
    let gone: i64 = s.query(redis::cmd("EXISTS").arg(&lock));
    assert_eq!(gone, 0, "released once stored");
    assert_total_exact(&s);
}

/// A cache-run entry whose value no longer matches the size recorded with
/// it (a truncation, or the record's size rewritten behind ffkit's back)
/// is a miss on Redis as it is locally: the command runs again, its own
/// output is printed (never the stored bytes), one note with FF_DEBUG,
/// the damaged entry is not counted as a replay, and the rewrite is a
/// plain hit again with the total exact.
#[test]
fn redis_cache_run_damaged_entry_is_a_miss_that_is_rewritten() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let side = Side::Redis(&s);
    let script = "echo run >> runs; echo hello; echo world";
    run(&w, side, &[], script).assert().success();
    let entries: Vec<String> = s.query(redis::cmd("KEYS").arg(format!("{NS}m:*")));
    let [meta] = &entries[..] else {
        panic!("one entry: {entries:?}")
    };
    let value = format!("{NS}v:{}", &meta[NS.len() + 2..]);
    let len: u64 = s.query(redis::cmd("STRLEN").arg(&value));
    type Damage<'a> = Box<dyn Fn() + 'a>;
    let damages: [(&str, Damage<'_>); 2] = [
        (
            "size rewritten",
            Box::new(|| {
                s.query::<()>(redis::cmd("HSET").arg(meta).arg("size").arg(len + 1));
            }),
        ),
        (
            "truncated",
            Box::new(|| {
                s.query::<()>(redis::cmd("SETRANGE").arg(&value).arg(0).arg("x"));
                let v: Vec<u8> = s.query(redis::cmd("GET").arg(&value));
                s.query::<()>(redis::cmd("SET").arg(&value).arg(&v[..v.len() - 1]));
            }),
        ),
    ];
    for (what, damage) in &damages {
        damage();
        let before = runs(&w);
        let o = run(&w, side, &[], script)
            .env("FF_DEBUG", "true")
            .output()
            .unwrap();
        assert!(o.status.success(), "{what}: {}", stderr_of(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "hello\nworld\n",
            "{what}"
        );
        let notes = stderr_of(&o)
            .lines()
            .filter(|l| l.contains("treated as a miss") && l.contains("damaged"))
            .count();
        assert_eq!(notes, 1, "{what}: {}", stderr_of(&o));
        assert_eq!(runs(&w), before + 1, "{what}: the damaged entry was a miss");
        // Rewritten whole: a plain hit, counted from 0 again.
        let o = run(&w, side, &[], script).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "hello\nworld\n",
            "{what}"
        );
        assert_eq!(runs(&w), before + 1, "{what}");
        let hits: Option<u64> = s.query(redis::cmd("HGET").arg(meta).arg("hits"));
        assert_eq!(hits, Some(1), "{what}");
    }
    cmd(&w, side, "cache-size")
        .args(["--verify", "--fix"])
        .output()
        .unwrap();
    assert_total_exact(&s);
}

/// Attack finding: on Redis, a miss under `ulimit -v` whose recording fit
/// but whose copy for the server did not said `not cached: cannot read the
/// spool of standard input: out of memory`, with no `--key-stdin` (and no
/// spool) at all. It is now the memory's line, as on the local cache.
#[test]
fn redis_cache_run_a_value_the_memory_left_cannot_copy_is_named_as_memory() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let size: u64 = 30_000_000;
    let mut c = run(
        &w,
        Side::Redis(&s),
        &[],
        &format!("head -c {size} /dev/zero"),
    );
    crate::cache_run::limit_address_space(&mut c, 64 << 20);
    let o = c.output().unwrap();
    let err = stderr_of(&o);
    if err.contains("cannot start a thread") {
        return skip("ffkit cannot start under this ulimit -v here: not run");
    }
    assert_eq!(
        (o.status.code(), o.stdout.len() as u64),
        (Some(0), size),
        "{err}"
    );
    assert!(
        err.lines().count() == 1
            && err.contains("not cached: the output does not fit in the memory left"),
        "{err}"
    );
}
