//! The cache on the Redis backend, against a real `redis-server`: entries,
//! TTL and expiry, and the exact total. The oracle for exactness is the
//! server itself: after 16 processes of random writes, batches, reads that
//! expire entries and evictions, the total equals the sum of STRLEN over the
//! value keys, and the count, the recency set and the metadata agree.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

use crate::redis::{Server, env};
use crate::util::*;

pub const NS: &str = "ffkit:cache:{default}:";

fn ff(w: &World, s: &Server, applet: &str) -> Command {
    let mut c = w.cmd(applet);
    env(&mut c, s);
    c
}

/// Everything the server holds for the cache, recounted by the test.
pub struct Recount {
    pub bytes: u64,
    pub values: u64,
    pub metas: u64,
    pub lru: u64,
    pub crt: u64,
    pub meta_sizes_match: bool,
}

fn scan(s: &Server, pattern: &str) -> Vec<String> {
    let mut cursor = 0u64;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = s.query(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000),
        );
        out.extend(keys);
        cursor = next;
        if cursor == 0 {
            return out;
        }
    }
}

pub fn recount(s: &Server) -> Recount {
    let values = scan(s, &format!("{NS}v:*"));
    let metas = scan(s, &format!("{NS}m:*"));
    let mut bytes = 0;
    let mut sizes = HashMap::new();
    for v in &values {
        let n: u64 = s.query(redis::cmd("STRLEN").arg(v));
        bytes += n;
        sizes.insert(v[NS.len() + 2..].to_string(), n);
    }
    let mut meta_sizes_match = metas.len() == values.len();
    for m in &metas {
        let size: Option<u64> = s.query(redis::cmd("HGET").arg(m).arg("size"));
        meta_sizes_match &= size == sizes.get(&m[NS.len() + 2..]).copied();
    }
    let lru: u64 = s.query(redis::cmd("ZCARD").arg(format!("{NS}lru")));
    let crt: u64 = s.query(redis::cmd("ZCARD").arg(format!("{NS}crt")));
    Recount {
        bytes,
        values: values.len() as u64,
        metas: metas.len() as u64,
        lru,
        crt,
        meta_sizes_match,
    }
}

pub fn counters(s: &Server) -> (u64, u64) {
    let t: Option<u64> = s.query(redis::cmd("GET").arg(format!("{NS}total")));
    let c: Option<u64> = s.query(redis::cmd("GET").arg(format!("{NS}count")));
    (t.unwrap_or(0), c.unwrap_or(0))
}

#[test]
fn redis_cache_write_read_expire_and_size() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    ff(&w, &s, "cache-write")
        .args(["a", "hello"])
        .assert()
        .success();
    ff(&w, &s, "cache-write")
        .args(["b", "-", "--ttl", "100"])
        .write_stdin("bin\0ary\n")
        .assert()
        .success();
    let out = ff(&w, &s, "cache-read").arg("b").output().unwrap();
    assert_eq!(out.stdout, b"bin\0ary\n");
    assert_eq!(
        parse_u64(&ff(&w, &s, "cache-size").output().unwrap().stdout),
        13
    );
    // Overwrite adjusts by the difference.
    ff(&w, &s, "cache-write")
        .args(["a", "hi"])
        .assert()
        .success();
    assert_eq!(counters(&s), (10, 2));
    // Expired (as seen 200 s later): exit 4, and the entry and its bytes go.
    let future = (jiff::Timestamp::now().as_second() + 200).to_string();
    let out = ff(&w, &s, "cache-read")
        .arg("b")
        .env("FFKIT_TEST_NOW", &future)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr_of(&out).contains("b: expired at"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(counters(&s), (2, 1));
    ff(&w, &s, "cache-read").arg("b").assert().code(4);
    ff(&w, &s, "cache-read")
        .args(["-q", "nope"])
        .assert()
        .code(4);
    // Batches are all or nothing.
    ff(&w, &s, "cache-batch")
        .write_stdin("x:1\ny:22\n")
        .assert()
        .success();
    ff(&w, &s, "cache-batch")
        .write_stdin("z:1\nno colon\n")
        .assert()
        .code(2);
    assert_eq!(counters(&s), (5, 3));
    // --dir is a local cache: refused rather than ignored.
    ff(&w, &s, "cache-size")
        .args(["--dir", "/tmp"])
        .assert()
        .code(2);
}

#[test]
fn redis_cache_evict_expired_then_lru_and_verify_reports_drift() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let now = jiff::Timestamp::now().as_second();
    let at = |t: i64| t.to_string();
    for (k, t) in [("old", now), ("mid", now + 1), ("new", now + 2)] {
        ff(&w, &s, "cache-write")
            .args([k, "0123456789"])
            .env("FFKIT_TEST_NOW", at(t))
            .assert()
            .success();
    }
    ff(&w, &s, "cache-write")
        .args(["ttl", "xx", "--ttl", "5"])
        .env("FFKIT_TEST_NOW", at(now + 3))
        .assert()
        .success();
    // At now+10 'ttl' is expired: it goes first, then LRU 'old' to fit 20.
    let out = ff(&w, &s, "cache-evict")
        .args(["--max-bytes", "20", "--json"])
        .env("FFKIT_TEST_NOW", at(now + 10))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed: Vec<(&str, &str)> = r["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(removed, [("ttl", "expired"), ("old", "lru")]);
    assert_eq!(r["after"]["bytes"], 20);
    assert_eq!(counters(&s), (20, 2));
    ff(&w, &s, "cache-size").arg("--verify").assert().success();
    // Damage the total behind ffkit's back: --verify exits 10, --fix repairs.
    let _: () = s.query(redis::cmd("SET").arg(format!("{NS}total")).arg(99));
    let out = ff(&w, &s, "cache-size").arg("--verify").output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(stderr_of(&out).contains("-79 bytes"), "{}", stderr_of(&out));
    ff(&w, &s, "cache-size")
        .args(["--verify", "--fix"])
        .assert()
        .success();
    assert_eq!(counters(&s), (20, 2));
    ff(&w, &s, "cache-evict").arg("--all").assert().success();
    assert_eq!(counters(&s), (0, 0));
    assert_eq!(recount(&s).values, 0);
}

fn word(r: &mut fastrand::Rng, len: usize) -> String {
    std::iter::repeat_with(|| r.alphanumeric())
        .take(len)
        .collect()
}

/// One worker's script: random writes (single, batched, with and without
/// TTL), reads that expire entries, and evictions, 300 operations in all.
fn worker_script(seed: u64) -> String {
    let mut r = fastrand::Rng::with_seed(seed);
    let mut sh = String::from("set -e\n");
    let future = jiff::Timestamp::now().as_second() + 100_000;
    let mut ops = 0;
    while ops < 300 {
        match r.u8(0..10) {
            0..=4 => {
                let n = r.usize(5..30);
                let ttl = if r.bool() { 0 } else { r.u64(1..4) };
                sh.push_str(&format!("$FF cache-batch --ttl {ttl} <<'EOF'\n"));
                for _ in 0..n {
                    let len = r.usize(0..200);
                    let v = word(&mut r, len);
                    sh.push_str(&format!("k{}:{v}\n", r.u8(0..80)));
                }
                sh.push_str("EOF\n");
                ops += n;
            }
            5..=6 => {
                let len = r.usize(0..500);
                let v = word(&mut r, len);
                sh.push_str(&format!(
                    "$FF cache-write --ttl {} k{} '{v}' </dev/null\n",
                    r.u64(0..3),
                    r.u8(0..80)
                ));
                ops += 1;
            }
            7 => {
                sh.push_str(&format!(
                    "FFKIT_TEST_NOW={future} $FF cache-read -q k{} >/dev/null || true\n",
                    r.u8(0..80)
                ));
                ops += 1;
            }
            8 => {
                match r.u8(0..3) {
                    0 => sh.push_str(&format!("$FF cache-evict --max-bytes {}\n", r.u64(0..8000))),
                    1 => sh.push_str(&format!("$FF cache-evict --older-than {}s\n", r.u64(1..4))),
                    _ => sh.push_str(&format!(
                        "$FF cache-evict --dry-run --max-bytes {} >/dev/null\n",
                        r.u64(0..8000)
                    )),
                }
                ops += 1;
            }
            _ => {
                sh.push_str(&format!(
                    "FFKIT_TEST_NOW={future} $FF cache-evict --expired\n"
                ));
                ops += 1;
            }
        }
    }
    sh
}

/// `n` bash processes each running `worker_script(seed + i)` on the server.
fn workers(w: &World, s: &Server, n: u64, seed: u64) -> Vec<Child> {
    (0..n)
        .map(|i| {
            let path = w.path().join(format!("worker{i}.sh"));
            std::fs::write(&path, worker_script(seed + i)).unwrap();
            let mut c = Command::new("bash");
            w.isolate(&mut c);
            env(&mut c, s);
            c.env("FF", bin())
                .env("CACHE_PERF_MONITORING", "disabled")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect()
}

#[test]
fn redis_cache_total_stays_exact_under_16_concurrent_writers_and_evictors() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let seed = fastrand::u64(..);
    let kids = workers(&w, &s, 16, seed);
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "seed {seed}: {}", stderr_of(&out));
    }
    let rc = recount(&s);
    let (total, count) = counters(&s);
    assert!(
        rc.values > 0,
        "seed {seed}: the run left no entries to check"
    );
    assert_eq!(total, rc.bytes, "seed {seed}: total != sum of STRLEN");
    assert_eq!(count, rc.values, "seed {seed}: count != value keys");
    assert_eq!(rc.metas, rc.values, "seed {seed}");
    assert_eq!(rc.lru, rc.values, "seed {seed}");
    assert_eq!(rc.crt, rc.values, "seed {seed}: the creation-time set");
    assert!(rc.meta_sizes_match, "seed {seed}: a metadata size is wrong");
    ff(&w, &s, "cache-size").arg("--verify").assert().success();
}

#[test]
fn redis_cache_calls_fail_with_exit_1_when_the_server_is_gone() {
    let Some(mut s) = Server::start() else { return };
    let w = World::new();
    ff(&w, &s, "cache-write")
        .args(["a", "1"])
        .assert()
        .success();
    s.kill9();
    for args in [
        vec!["cache-write", "a", "2"],
        vec!["cache-read", "a"],
        vec!["cache-size"],
        vec!["cache-evict", "--expired"],
    ] {
        let out = ff(&w, &s, args[0]).args(&args[1..]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("backend redis://127.0.0.1"), "{err}");
    }
}

#[test]
fn redis_cache_verify_is_exact_while_writers_and_evictors_run() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    ff(&w, &s, "cache-write")
        .args(["seed", "x"])
        .assert()
        .success();
    // Drift planted behind ffkit's back: the counters say 1234 bytes and
    // one entry more than the keys hold. Writers adjust the counters by
    // their exact changes, so the drift stays exactly that while they run.
    let _: () = s.query(redis::cmd("INCRBY").arg(format!("{NS}total")).arg(1234));
    let _: () = s.query(redis::cmd("INCRBY").arg(format!("{NS}count")).arg(1));
    let seed = fastrand::u64(..);
    let mut kids = workers(&w, &s, 6, seed);
    let mut verifies = 0;
    let mut fixed = false;
    while verifies < 3 || kids.iter_mut().any(|k| k.try_wait().unwrap().is_none()) {
        if !fixed && verifies >= 6 {
            // Repair while they run: by the drift, not by a stale recount.
            ff(&w, &s, "cache-size")
                .args(["--verify", "--fix"])
                .assert()
                .success();
            fixed = true;
            continue;
        }
        let out = ff(&w, &s, "cache-size")
            .args(["--verify", "--json"])
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}: {}", stderr_of(&out)));
        if fixed {
            assert_eq!(
                out.status.code(),
                Some(0),
                "seed {seed}: {j} {}",
                stderr_of(&out)
            );
        } else {
            assert_eq!(out.status.code(), Some(10), "seed {seed}: {j}");
            assert_eq!(j["drift_bytes"], -1234, "seed {seed}: {j}");
            assert_eq!(j["drift_entries"], -1, "seed {seed}: {j}");
        }
        verifies += 1;
    }
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "seed {seed}: {}", stderr_of(&out));
    }
    assert!(
        fixed,
        "seed {seed}: the writers ended before the fix ({verifies} verifies)"
    );
    let rc = recount(&s);
    assert_eq!(counters(&s), (rc.bytes, rc.values), "seed {seed}");
    let left: u64 = s.query(redis::cmd("EXISTS").arg(format!("{NS}verifying")));
    assert_eq!(left, 0, "no verify stays registered");
}

/// A change made behind ffkit's back to entry KEY on the server.
type Damage = fn(&Server, &str);

/// A value changed behind ffkit's back (truncated, replaced, its recorded
/// size or expiry rewritten, its value key gone) is never returned as
/// good: `cache-read` exits 10 with one line, as the local backend does
/// for a value whose length is not its sidecar's size, and `cache-batch`
/// fails the same way. The read that finds the damage drops the entry, so
/// the total is exact again and the next read is a plain miss.
#[test]
fn redis_cache_read_of_a_damaged_value_exits_10_and_drops_it() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let damages: [(&str, Damage); 5] = [
        ("truncated", |s, k| {
            s.query::<()>(redis::cmd("SET").arg(format!("{NS}v:{k}")).arg("012"));
        }),
        ("grown", |s, k| {
            s.query::<()>(
                redis::cmd("SETRANGE")
                    .arg(format!("{NS}v:{k}"))
                    .arg(10)
                    .arg("xyz"),
            );
        }),
        ("size rewritten", |s, k| {
            s.query::<()>(
                redis::cmd("HSET")
                    .arg(format!("{NS}m:{k}"))
                    .arg("size")
                    .arg(7),
            );
        }),
        ("size not a number", |s, k| {
            s.query::<()>(
                redis::cmd("HSET")
                    .arg(format!("{NS}m:{k}"))
                    .arg("size")
                    .arg("ten"),
            );
        }),
        ("value key gone", |s, k| {
            s.query::<()>(redis::cmd("DEL").arg(format!("{NS}v:{k}")));
        }),
    ];
    for (what, damage) in damages {
        for applet in ["cache-batch", "cache-read"] {
            ff(&w, &s, "cache-write")
                .args(["k", "0123456789"])
                .assert()
                .success();
            ff(&w, &s, "cache-write")
                .args(["other", "fine"])
                .assert()
                .success();
            damage(&s, "k");
            let mut c = ff(&w, &s, applet);
            if applet == "cache-batch" {
                c.args(["--read", "other", "k"]);
            } else {
                c.arg("k");
            }
            let o = c.output().unwrap();
            assert_eq!(
                o.status.code(),
                Some(10),
                "{what}, {applet}: {}",
                stderr_of(&o)
            );
            assert!(o.stdout.is_empty(), "{what}, {applet}: bytes printed");
            let err = stderr_of(&o);
            assert_eq!(err.lines().count(), 1, "{what}, {applet}: {err}");
            assert!(
                err.starts_with(&format!("ffkit {applet}: redis://"))
                    && err.contains(&format!("{NS}v:k: "))
                    && err.contains("(damaged; removed)"),
                "{what}, {applet}: {err}"
            );
        }
        // Dropped in the same step: a miss now, the other entry untouched,
        // and the total the sum of what is left (the damaged value's
        // recorded size went with it).
        ff(&w, &s, "cache-read").arg("k").assert().code(4);
        ff(&w, &s, "cache-read")
            .arg("other")
            .assert()
            .success()
            .stdout("fine");
        if !what.starts_with("size") {
            let rc = recount(&s);
            assert_eq!(counters(&s), (rc.bytes, rc.values), "{what}");
        }
        ff(&w, &s, "cache-size")
            .args(["--verify", "--fix"])
            .output()
            .unwrap();
    }
}
