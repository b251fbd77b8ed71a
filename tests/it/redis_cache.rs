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

/// A server out of memory (maxmemory with noeviction) refuses writes, not
/// reads: a hit is still answered, by cache-read, cache-batch --read and
/// cache-run (docs/redis.md, "Cache"), without its recency refresh. The
/// read script refreshed the recency first, and Redis refused that write:
/// every hit failed with exit 1 and cache-run ran its command again.
#[test]
fn redis_cache_hits_are_answered_by_a_server_out_of_memory() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let ran = w.path().join("ran");
    let cmd = format!("echo x >> '{}'; echo out", ran.display());
    ff(&w, &s, "cache-write")
        .args(["k", "v"])
        .assert()
        .success();
    ff(&w, &s, "cache-run")
        .args(["--", "sh", "-c", &cmd])
        .assert()
        .success()
        .stdout("out\n");
    let _: () = s.query(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction"),
    );
    let _: () = s.query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"));
    ff(&w, &s, "cache-read")
        .arg("k")
        .assert()
        .success()
        .stdout("v");
    ff(&w, &s, "cache-batch")
        .arg("--read")
        .write_stdin("k\n")
        .assert()
        .success()
        .stdout("k:v\n");
    ff(&w, &s, "cache-run")
        .args(["--", "sh", "-c", &cmd])
        .assert()
        .success()
        .stdout("out\n")
        .stderr("");
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap(),
        "x\n",
        "a hit ran the command"
    );
    // A write is still refused, with one line and exit 1.
    let out = ff(&w, &s, "cache-write")
        .args(["k2", "v"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("OOM"), "{}", stderr_of(&out));
    // Said plainly, without the script's hash and line (`script: 3f0…,
    // on @user_script:346.`), which tell a user nothing.
    assert!(
        stderr_of(&out).contains("cannot write entry: the server is out of memory")
            && !stderr_of(&out).contains("@user_script"),
        "{}",
        stderr_of(&out)
    );
    let _: () = s.query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0"));
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

/// Damage to an entry's record or its keys that a read and a write both
/// take as damage (dropped whole, never a failed script): shared by the
/// cache-run and the write-over tests.
const RECORD_DAMAGES: &[(&str, Damage)] = &[
    ("size huge", |s, k| {
        hset(s, k, "size", b"99999999999999999999999")
    }),
    ("size inf", |s, k| hset(s, k, "size", b"inf")),
    ("size 5.0", |s, k| hset(s, k, "size", b"5.0")),
    ("expires_at abc", |s, k| hset(s, k, "expires_at", b"abc")),
    ("hits abc", |s, k| hset(s, k, "hits", b"abc")),
    ("value a list", |s, k| {
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}v:{k}")));
        s.query::<()>(redis::cmd("RPUSH").arg(format!("{NS}v:{k}")).arg("a"));
    }),
    ("metadata a string", |s, k| {
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}m:{k}")));
        s.query::<()>(redis::cmd("SET").arg(format!("{NS}m:{k}")).arg("x"));
    }),
    ("metadata a list", |s, k| {
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}m:{k}")));
        s.query::<()>(redis::cmd("RPUSH").arg(format!("{NS}m:{k}")).arg("a"));
    }),
    ("metadata gone", |s, k| {
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}m:{k}")));
    }),
];

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
        // A size rewritten to another number is taken off as recorded (the
        // total cannot know better: --verify --fix corrects it); one that
        // is no number at all is replaced by the value's length.
        if what != "size rewritten" {
            let rc = recount(&s);
            assert_eq!(counters(&s), (rc.bytes, rc.values), "{what}");
        }
        ff(&w, &s, "cache-size")
            .args(["--verify", "--fix"])
            .output()
            .unwrap();
    }
}

/// Whether nothing of entry `k` is left on the server: no value or
/// metadata key, and no member in the expiry, recency or age sets.
fn entry_gone(s: &Server, k: &str) -> bool {
    let keys: u64 = s.query(
        redis::cmd("EXISTS")
            .arg(format!("{NS}v:{k}"))
            .arg(format!("{NS}m:{k}")),
    );
    let members = ["exp", "lru", "crt"].iter().any(|set| {
        let score: Option<f64> = s.query(redis::cmd("ZSCORE").arg(format!("{NS}{set}")).arg(k));
        score.is_some()
    });
    keys == 0 && !members
}

/// Sets field `field` of entry `k`'s record to `raw` behind ffkit's back.
fn hset(s: &Server, k: &str, field: &str, raw: &[u8]) {
    s.query::<()>(
        redis::cmd("HSET")
            .arg(format!("{NS}m:{k}"))
            .arg(field)
            .arg(raw),
    );
}

/// Every field a script parses, made unreadable in every way a user found
/// (a size too big for a Lua integer, `inf`, `nan`, a fraction, spaces,
/// signs, leading zeros, a missing field) and keys of the wrong type: each
/// is damage (exit 10, one line naming the field and its value, escaped
/// and cut short), dropped whole (value, metadata, sets) in the step that
/// finds it, with the counters exact afterwards. Before, a huge or
/// infinite size failed the script halfway (exit 1, "value is not an
/// integer", the value deleted but the total not reduced); `expires_at`
/// `abc` was reported as "5 bytes but record says 5", `size nan` as
/// i64::MIN; `5.0` and ` 5` passed as 5; a list at the value key was
/// WRONGTYPE, exit 1, forever.
#[test]
fn redis_cache_read_of_a_damaged_record_is_exit_10_with_a_true_message() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let long = vec![b'9'; 1000];
    // (what is done, field, raw value, what the message must say)
    let fields: &[(&str, &[u8], &str)] = &[
        (
            "size",
            b"99999999999999999999999",
            "its record's size is '99999999999999999999999', not a canonical whole number (0 to 536870912)",
        ),
        ("size", b"inf", "size is 'inf'"),
        ("size", b"-inf", "size is '-inf'"),
        ("size", b"nan", "size is 'nan'"),
        ("size", b"5.0", "size is '5.0'"),
        ("size", b" 5", "size is ' 5'"),
        ("size", b"5 ", "size is '5 '"),
        ("size", b"05", "size is '05'"),
        ("size", b"+5", "size is '+5'"),
        ("size", b"-5", "size is '-5'"),
        ("size", b"0x5", "size is '0x5'"),
        ("size", b"5e0", "size is '5e0'"),
        ("size", b"", "size is ''"),
        ("size", b"536870913", "size is '536870913'"),
        ("size", b"5\n\x1b[31m", "size is '5\\n\\u{1b}[31m'"),
        (
            "size",
            &long,
            "size is '99999999999999999999999999999999'... (1000 bytes)",
        ),
        (
            "expires_at",
            b"abc",
            "its record's expires_at is 'abc', not a canonical whole number",
        ),
        ("expires_at", b"1e99", "expires_at is '1e99'"),
        ("expires_at", b"inf", "expires_at is 'inf'"),
        ("expires_at", b"-0", "expires_at is '-0'"),
        (
            "expires_at",
            b"99999999999999999999999",
            "expires_at is '99999999999999999999999'",
        ),
        ("created_at", b"nan", "its record's created_at is 'nan'"),
        ("created_at", b"1.5", "created_at is '1.5'"),
        (
            "ttl",
            b"-1",
            "its record's ttl is '-1', not a canonical whole number (0 to 1000000000)",
        ),
        ("ttl", b"1000000001", "ttl is '1000000001'"),
        ("hits", b"many", "its record's hits is 'many'"),
    ];
    let check = |what: &str, applet: &str, want: &str, damage: &dyn Fn(&Server)| {
        ff(&w, &s, "cache-write")
            .args(["k", "hello"])
            .assert()
            .success();
        ff(&w, &s, "cache-write")
            .args(["other", "fine"])
            .assert()
            .success();
        damage(&s);
        let mut c = ff(&w, &s, applet);
        if applet == "cache-batch" {
            c.args(["--read", "other", "k"]);
        } else {
            c.arg("k");
        }
        let o = c.output().unwrap();
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(10), "{what}, {applet}: {err}");
        assert!(o.stdout.is_empty(), "{what}, {applet}: bytes printed");
        assert_eq!(err.lines().count(), 1, "{what}, {applet}: {err}");
        assert!(err.len() < 300, "{what}, {applet}: a long line: {err}");
        assert!(
            err.starts_with(&format!("ffkit {applet}: redis://"))
                && err.contains(&format!("{NS}v:k: "))
                && err.contains(want)
                && err.trim_end().ends_with("(damaged; removed)"),
            "{what}, {applet}: want {want:?}: {err}"
        );
        assert!(!err.contains("bytes but"), "{what}: {err}");
        // Dropped whole, in the same step, and the counters exact: only
        // `other` is left.
        assert!(entry_gone(&s, "k"), "{what}, {applet}: left behind");
        assert_eq!(counters(&s), (4, 1), "{what}, {applet}");
        let rc = recount(&s);
        assert_eq!((rc.bytes, rc.values, rc.metas), (4, 1, 1), "{what}");
        ff(&w, &s, "cache-read").arg("k").assert().code(4);
    };
    for applet in ["cache-read", "cache-batch"] {
        for (field, raw, want) in fields {
            let what = format!("{field}={}", String::from_utf8_lossy(raw).escape_debug());
            check(&what, applet, want, &|s| hset(s, "k", field, raw));
        }
        for field in ["size", "expires_at", "created_at", "ttl"] {
            let want = format!("its record has no {field}");
            check(&want.clone(), applet, &want, &|s| {
                s.query::<()>(redis::cmd("HDEL").arg(format!("{NS}m:k")).arg(field));
            });
        }
        check(
            "the value key a list",
            applet,
            "the value key holds a list, not a string",
            &|s| {
                s.query::<()>(redis::cmd("DEL").arg(format!("{NS}v:k")));
                s.query::<()>(redis::cmd("RPUSH").arg(format!("{NS}v:k")).arg("a"));
            },
        );
        check(
            "the value key a hash",
            applet,
            "the value key holds a hash, not a string",
            &|s| {
                s.query::<()>(redis::cmd("DEL").arg(format!("{NS}v:k")));
                s.query::<()>(redis::cmd("HSET").arg(format!("{NS}v:k")).arg("a").arg("b"));
            },
        );
        check(
            "the metadata key a string",
            applet,
            "its metadata key holds a string, not a hash",
            &|s| {
                s.query::<()>(redis::cmd("SET").arg(format!("{NS}m:k")).arg("size=5"));
            },
        );
        check(
            "the metadata key a set",
            applet,
            "its metadata key holds a set, not a hash",
            &|s| {
                s.query::<()>(redis::cmd("DEL").arg(format!("{NS}m:k")));
                s.query::<()>(redis::cmd("SADD").arg(format!("{NS}m:k")).arg("size"));
            },
        );
    }
}

/// cache-run takes every such damage as a miss: the command runs, its
/// answer replaces the entry, and the counters stay exact.
#[test]
fn redis_cache_run_takes_a_damaged_record_as_a_miss() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let run = || {
        let o = ff(&w, &s, "cache-run")
            .args([
                "--ttl",
                "600",
                "--",
                "sh",
                "-c",
                "echo ran >> \"$0\"; echo out",
                w.path().join("runs").to_str().unwrap(),
            ])
            .env("FF_DEBUG", "true")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
        assert_eq!(o.stdout, b"out\n");
        o
    };
    let runs = || std::fs::read_to_string(w.path().join("runs")).map_or(0, |t| t.lines().count());
    run();
    let keys = scan(&s, &format!("{NS}v:run-*"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    let k = keys[0][NS.len() + 2..].to_string();
    for (what, damage) in RECORD_DAMAGES {
        let before = runs();
        run();
        assert_eq!(runs(), before, "{what}: a hit before the damage");
        damage(&s, &k);
        let o = run();
        assert_eq!(runs(), before + 1, "{what}: the damaged entry was a miss");
        assert!(
            stderr_of(&o).contains("damaged"),
            "{what}: {}",
            stderr_of(&o)
        );
        let rc = recount(&s);
        assert_eq!(counters(&s), (rc.bytes, rc.values), "{what}");
        assert!(rc.meta_sizes_match, "{what}: rewritten whole");
        run();
        assert_eq!(runs(), before + 1, "{what}: a hit again");
    }
}

/// `expires_at` is judged as the local sidecar's is (docs/cache.md): an
/// entry is expired from that second on, so a negative one is long past
/// (exit 4, dropped); 0 alone means "never" on Redis (where the local
/// sidecar says null). Before, any `expires_at` below 1 was "never".
#[test]
fn redis_cache_expires_at_below_now_is_expired_and_0_is_never() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    for raw in ["-1", "-999999999999999", "1"] {
        ff(&w, &s, "cache-write")
            .args(["k", "hello"])
            .assert()
            .success();
        hset(&s, "k", "expires_at", raw.as_bytes());
        let o = ff(&w, &s, "cache-read").arg("k").output().unwrap();
        assert_eq!(o.status.code(), Some(4), "{raw}: {}", stderr_of(&o));
        assert!(
            stderr_of(&o).contains("k: expired at"),
            "{raw}: {}",
            stderr_of(&o)
        );
        assert!(entry_gone(&s, "k"), "{raw}");
        assert_eq!(counters(&s), (0, 0), "{raw}");
    }
    ff(&w, &s, "cache-write")
        .args(["k", "hello", "--ttl", "100"])
        .assert()
        .success();
    hset(&s, "k", "expires_at", b"0");
    ff(&w, &s, "cache-read")
        .arg("k")
        .assert()
        .success()
        .stdout("hello");
}

/// A write over a damaged record (its size unusable, its metadata key of
/// another type) drops it first and stores the new entry: no WRONGTYPE,
/// no half-done script, the counters exact.
#[test]
fn redis_cache_write_over_a_damaged_record_replaces_it() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    for (what, damage) in RECORD_DAMAGES {
        for applet in ["cache-write", "cache-batch"] {
            ff(&w, &s, "cache-write")
                .args(["k", "hello"])
                .assert()
                .success();
            damage(&s, "k");
            let mut c = ff(&w, &s, applet);
            let o = if applet == "cache-batch" {
                run_with_stdin(&mut c, b"k:new value\n")
            } else {
                c.args(["k", "new value"]).output().unwrap()
            };
            assert!(o.status.success(), "{what}, {applet}: {}", stderr_of(&o));
            ff(&w, &s, "cache-read")
                .arg("k")
                .assert()
                .success()
                .stdout("new value");
            assert_eq!(counters(&s), (9, 1), "{what}, {applet}");
            assert!(recount(&s).meta_sizes_match, "{what}, {applet}");
        }
    }
}

/// A record that disagrees with its value (its `size` rewritten, the value
/// grown behind ffkit's back) or whose fields a read refuses is damage
/// `cache-size --verify` names, one line in the read's words (exit 10),
/// though the counters may agree with the recount (a rewritten size: the
/// total still holds the value's length, and the read that later drops
/// the entry would take the recorded size off). `--verify --fix` drops
/// such an entry with a line, and the counters are exact afterwards; a
/// second verify is clean.
#[test]
fn redis_cache_verify_flags_and_fix_drops_a_record_that_disagrees_with_its_value() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let cases: [(&str, Damage, &str); 5] = [
        (
            "size smaller",
            |s, k| hset(s, k, "size", b"3"),
            "the value is 5 bytes but its record says 3",
        ),
        (
            "size above the total",
            |s, k| hset(s, k, "size", b"999"),
            "the value is 5 bytes but its record says 999",
        ),
        (
            "value grown",
            |s, k| {
                s.query::<()>(
                    redis::cmd("SETRANGE")
                        .arg(format!("{NS}v:{k}"))
                        .arg(5)
                        .arg(" world"),
                );
            },
            "the value is 11 bytes but its record says 5",
        ),
        (
            "size inf",
            |s, k| hset(s, k, "size", b"inf"),
            "its record's size is 'inf', not a canonical whole number",
        ),
        (
            "expires_at abc",
            |s, k| hset(s, k, "expires_at", b"abc"),
            "its record's expires_at is 'abc', not a canonical whole number",
        ),
    ];
    ff(&w, &s, "cache-write")
        .args(["other", "fine"])
        .assert()
        .success();
    for (what, damage, line) in cases {
        ff(&w, &s, "cache-write")
            .args(["k", "hello"])
            .assert()
            .success();
        damage(&s, "k");
        let o = ff(&w, &s, "cache-size").arg("--verify").output().unwrap();
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(10), "{what}: {err}");
        assert!(
            err.contains(&format!("{NS}v:k: {line}")) && err.contains("(damaged)"),
            "{what}: {err}"
        );
        assert!(!entry_gone(&s, "k"), "{what}: --verify changed nothing");
        let o = ff(&w, &s, "cache-size")
            .args(["--verify", "--fix"])
            .output()
            .unwrap();
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(0), "{what}: {err}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "4\n", "{what}");
        assert!(
            err.contains("dropped redis://") && err.contains(&format!("{NS}v:k: {line}")),
            "{what}: {err}"
        );
        assert!(entry_gone(&s, "k"), "{what}");
        let rc = recount(&s);
        assert_eq!(counters(&s), (rc.bytes, rc.values), "{what}: exact");
        assert_eq!(counters(&s), (4, 1), "{what}");
        let o = ff(&w, &s, "cache-size").arg("--verify").output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{what}: {}", stderr_of(&o));
    }
}

/// A value key of the wrong type holds no value: `cache-size --verify`
/// reports its entry as drift (exit 10, not WRONGTYPE's exit 1) and
/// `--verify --fix` drops it, after which the counters are exact and a
/// verify is clean; `cache-evict --dry-run` and `cache-evict` go through
/// such entries, and through records whose size is no number, without
/// failing and leave the counters exact.
#[test]
fn redis_cache_verify_fix_and_evict_handle_keys_of_the_wrong_type() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let list_at = |k: &str| {
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}v:{k}")));
        s.query::<()>(redis::cmd("RPUSH").arg(format!("{NS}v:{k}")).arg("a"));
    };
    ff(&w, &s, "cache-write")
        .args(["k", "hello"])
        .assert()
        .success();
    ff(&w, &s, "cache-write")
        .args(["other", "fine"])
        .assert()
        .success();
    list_at("k");
    let o = ff(&w, &s, "cache-size").arg("--verify").output().unwrap();
    assert_eq!(o.status.code(), Some(10), "{}", stderr_of(&o));
    assert!(
        stderr_of(&o).contains("index says 9 bytes in 2 entries, walk found 4 bytes in 1 entries"),
        "{}",
        stderr_of(&o)
    );
    let o = ff(&w, &s, "cache-size")
        .args(["--verify", "--fix"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "4\n");
    // What --fix dropped is said, one line (before: silently).
    assert!(
        stderr_of(&o).contains("dropped redis://")
            && stderr_of(&o).contains(&format!("{NS}v:k: the value key is not a string")),
        "{}",
        stderr_of(&o)
    );
    assert!(entry_gone(&s, "k"));
    assert_eq!(counters(&s), (4, 1));
    ff(&w, &s, "cache-size").arg("--verify").assert().success();
    // --rebuild is a verify with --fix, and says what it dropped, as
    // --fix does (before: silently).
    ff(&w, &s, "cache-write")
        .args(["k", "hello"])
        .assert()
        .success();
    list_at("k");
    let o = ff(&w, &s, "cache-size").arg("--rebuild").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "4\n");
    assert!(
        stderr_of(&o).contains(&format!("{NS}v:k: the value key is not a string")),
        "{}",
        stderr_of(&o)
    );
    assert!(entry_gone(&s, "k"));
    assert_eq!(counters(&s), (4, 1));

    // Eviction, dry and real, over damaged entries of each kind.
    let damages: &[&dyn Fn()] = &[&|| list_at("a"), &|| hset(&s, "b", "size", b"inf"), &|| {
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}m:c")));
        s.query::<()>(redis::cmd("SET").arg(format!("{NS}m:c")).arg("x"));
    }];
    for k in ["a", "b", "c"] {
        ff(&w, &s, "cache-write")
            .args([k, "12345678"])
            .assert()
            .success();
    }
    for d in damages {
        d();
    }
    let o = ff(&w, &s, "cache-evict")
        .args(["--all", "--dry-run"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    for want in [
        "would evict a (8 bytes, all)",
        "would evict b (8 bytes, all)",
        "would evict c (8 bytes, all)",
        "would evict other (4 bytes, all)",
    ] {
        assert!(plan.contains(want), "{want}: {plan}");
    }
    ff(&w, &s, "cache-evict").arg("--all").assert().success();
    for k in ["a", "b", "c", "other"] {
        assert!(entry_gone(&s, k), "{k}");
    }
    assert_eq!(counters(&s), (0, 0));
}

/// The one rule for the numbers of a record: `canon` in cache_lib.lua
/// accepts exactly what `cache::index::parse_canonical` accepts, within
/// the 15 digits a Lua number holds exactly.
#[test]
fn redis_record_numbers_follow_the_index_files_rule() {
    let Some(s) = Server::start() else { return };
    let lib = include_str!("../../crates/ffkit-core/src/backend/redis/lua/cache_lib.lua");
    let script = format!(
        "{lib}\nlocal n = canon(ARGV[2], ARGV[3] == '1')\nif n == nil then return false end\nreturn n"
    );
    let mut table: Vec<Vec<u8>> = [
        "0",
        "1",
        "9",
        "10",
        "5",
        "42",
        "536870912",
        "999999999999999",
        "1000000000000000",
        "00",
        "05",
        "-0",
        "-5",
        "+5",
        " 5",
        "5 ",
        "5\n",
        "5.0",
        "5.",
        ".5",
        "5e0",
        "1e3",
        "0x10",
        "inf",
        "-inf",
        "nan",
        "NaN",
        "",
        " ",
        "-",
        "--5",
        "5-",
        "1_000",
        "١",
        "99999999999999999999999",
        "18446744073709551615",
        "18446744073709551616",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect();
    table.push(b"5\0".to_vec());
    table.push(vec![b'7'; 20]);
    for raw in &table {
        let lua: Option<i64> = s.query(
            redis::cmd("EVAL")
                .arg(&script)
                .arg(0)
                .arg(NS)
                .arg(raw.as_slice())
                .arg("0"),
        );
        let rust = ffkit::cache::index::parse_canonical(raw).filter(|&n| n < 1_000_000_000_000_000);
        assert_eq!(
            lua,
            rust.map(|n| n as i64),
            "{}",
            String::from_utf8_lossy(raw).escape_debug()
        );
        // A time may be negative: '-' and then the same rule, never '-0'.
        let signed: Option<i64> = s.query(
            redis::cmd("EVAL")
                .arg(&script)
                .arg(0)
                .arg(NS)
                .arg([b"-".as_slice(), raw].concat())
                .arg("1"),
        );
        let want = rust.filter(|&n| n > 0).map(|n| -(n as i64));
        assert_eq!(
            signed,
            want,
            "-{}",
            String::from_utf8_lossy(raw).escape_debug()
        );
    }
}

/// A namespace-wide key damaged behind ffkit's back — a counter that is
/// text, negative or not canonical, a counter or an index set of another
/// type — is damage every script finds before its first write: exit 10,
/// one line naming the key and its bad value (escaped, cut), nothing
/// written. `cache-size` says so instead of printing 0, `--verify` exits
/// 10, and `--verify --fix` says what it repaired, recounts the counters
/// and rebuilds the index sets from the records. Before, `cache-write`
/// stored the value and its record, then failed with a raw Lua error
/// (exit 1); `total` -5 was shown as 0; a set of the wrong type passed
/// `--verify`.
#[test]
fn redis_cache_damaged_namespace_key_is_exit_10_before_anything_is_written() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let set = |key: &str, raw: &[u8]| {
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}{key}")));
        s.query::<()>(redis::cmd("SET").arg(format!("{NS}{key}")).arg(raw));
    };
    let list = |key: &str| {
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}{key}")));
        s.query::<()>(redis::cmd("RPUSH").arg(format!("{NS}{key}")).arg("a"));
    };
    let long = vec![b'7'; 100];
    // (key, damage, what the line must say)
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, String);
    let cases: Vec<Case> = vec![
        (
            "total",
            Box::new(|| set("total", b"abc")),
            "total: holds 'abc', not a canonical whole number".into(),
        ),
        (
            "total",
            Box::new(|| set("total", b"-5")),
            "total: holds '-5'".into(),
        ),
        (
            "total",
            Box::new(|| set("total", b"05")),
            "total: holds '05'".into(),
        ),
        (
            "total",
            Box::new(|| set("total", b"5\n\x1b[31m")),
            "total: holds '5\\n\\u{1b}[31m'".into(),
        ),
        (
            "total",
            Box::new(|| set("total", &long)),
            "total: holds '77777777777777777777777777777777'... (100 bytes)".into(),
        ),
        (
            "total",
            Box::new(|| list("total")),
            "total: holds a list, not a string".into(),
        ),
        (
            "count",
            Box::new(|| set("count", b"x")),
            "count: holds 'x'".into(),
        ),
        (
            "lru",
            Box::new(|| set("lru", b"x")),
            "lru: holds a string, not a sorted set".into(),
        ),
        (
            "exp",
            Box::new(|| list("exp")),
            "exp: holds a list, not a sorted set".into(),
        ),
        (
            "crt",
            Box::new(|| set("crt", b"x")),
            "crt: holds a string, not a sorted set".into(),
        ),
        (
            "verifying",
            Box::new(|| set("verifying", b"x")),
            "verifying: holds a string, not a sorted set".into(),
        ),
    ];
    let one_line = |o: &std::process::Output, applet: &str, want: &str, what: &str| {
        let err = stderr_of(o);
        assert_eq!(o.status.code(), Some(10), "{what}, {applet}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}, {applet}: {err}");
        assert!(
            err.starts_with(&format!("ffkit {applet}: redis://"))
                && err.contains(&format!("{NS}{want}"))
                && err.contains("damaged"),
            "{what}, {applet}: want {want:?}: {err}"
        );
        assert!(err.len() < 300, "{what}: {err}");
    };
    for (key, damage, want) in &cases {
        ff(&w, &s, "cache-evict").arg("--all").assert().success();
        for (k, v) in [("a", "hello"), ("b", "12345678")] {
            ff(&w, &s, "cache-write")
                .args([k, v, "--ttl", "600"])
                .assert()
                .success();
        }
        damage();
        let o = ff(&w, &s, "cache-write")
            .args(["new", "value"])
            .output()
            .unwrap();
        one_line(&o, "cache-write", want, key);
        let o = run_with_stdin(&mut ff(&w, &s, "cache-batch"), b"new:value\n");
        one_line(&o, "cache-batch", want, key);
        // Nothing of the refused writes was stored (the sets may be the
        // damaged keys: the value and metadata keys say it).
        let left: u64 = s.query(
            redis::cmd("EXISTS")
                .arg(format!("{NS}v:new"))
                .arg(format!("{NS}m:new")),
        );
        assert_eq!(left, 0, "{key}: a refused write left its entry");
        let o = ff(&w, &s, "cache-read").arg("a").output().unwrap();
        one_line(&o, "cache-read", want, key);
        let o = ff(&w, &s, "cache-evict").arg("--all").output().unwrap();
        one_line(&o, "cache-evict", want, key);
        let o = ff(&w, &s, "cache-evict")
            .args(["--all", "--dry-run"])
            .output()
            .unwrap();
        one_line(&o, "cache-evict", want, key);
        // Plain cache-size checks every namespace-wide key too (before,
        // a damaged set still gave a number and exit 0).
        for json in [false, true] {
            let mut c = ff(&w, &s, "cache-size");
            if json {
                c.arg("--json");
            }
            let o = c.output().unwrap();
            one_line(&o, "cache-size", want, key);
            assert!(
                o.stdout.is_empty(),
                "{key}: {}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
        let o = ff(&w, &s, "cache-size").arg("--verify").output().unwrap();
        one_line(&o, "cache-size", want, key);
        // --fix says what it repaired, and leaves the namespace whole; so
        // does --rebuild (before, it dropped the lines).
        for (i, how) in [&["--verify", "--fix"][..], &["--rebuild"][..]]
            .iter()
            .enumerate()
        {
            if i > 0 {
                damage();
            }
            let o = ff(&w, &s, "cache-size").args(*how).output().unwrap();
            assert_eq!(o.status.code(), Some(0), "{key} {how:?}: {}", stderr_of(&o));
            assert_eq!(String::from_utf8_lossy(&o.stdout), "13\n", "{key} {how:?}");
            assert!(
                stderr_of(&o).contains("repaired redis://")
                    && stderr_of(&o).contains(&format!("{NS}{want}")),
                "{key} {how:?}: {}",
                stderr_of(&o)
            );
            assert_eq!(counters(&s), (13, 2), "{key} {how:?}");
            for set in ["lru", "crt", "exp"] {
                let n: u64 = s.query(redis::cmd("ZCARD").arg(format!("{NS}{set}")));
                assert_eq!(n, 2, "{key} {how:?}: {set} rebuilt");
            }
            ff(&w, &s, "cache-size").arg("--verify").assert().success();
        }
        ff(&w, &s, "cache-write")
            .args(["new", "value"])
            .assert()
            .success();
        ff(&w, &s, "cache-read")
            .arg("a")
            .assert()
            .success()
            .stdout("hello");
    }
}

/// A counter (`total`, `count`) deleted behind ffkit's back while the
/// namespace holds entries is damage like a counter that is no number:
/// every applet exits 10 with one line naming it and writes nothing, and
/// `--verify --fix` repairs it. Before, it read as 0: a rewrite then
/// stored total -4 (after which every applet exited 10) and `cache-evict
/// --max-bytes 1` left the entry. And no script stores a counter below 0:
/// a counter lower than a change takes off stops at 0 (drift `--verify`
/// shows), never a negative number.
#[test]
fn redis_cache_missing_counter_is_damage_and_no_counter_goes_negative() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    for key in ["total", "count"] {
        ff(&w, &s, "cache-evict").arg("--all").assert().success();
        ff(&w, &s, "cache-write")
            .args(["k", "hello"])
            .assert()
            .success();
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}{key}")));
        let want = format!("{NS}{key}: missing while the namespace holds entries");
        let check = |o: &std::process::Output, applet: &str| {
            let err = stderr_of(o);
            assert_eq!(o.status.code(), Some(10), "{key}, {applet}: {err}");
            assert_eq!(err.lines().count(), 1, "{key}, {applet}: {err}");
            assert!(
                err.starts_with(&format!("ffkit {applet}: ")) && err.contains(&want),
                "{key}, {applet}: {err}"
            );
        };
        let o = ff(&w, &s, "cache-write").args(["k", "h"]).output().unwrap();
        check(&o, "cache-write");
        let o = ff(&w, &s, "cache-evict")
            .args(["--max-bytes", "1"])
            .output()
            .unwrap();
        check(&o, "cache-evict");
        let o = ff(&w, &s, "cache-size").output().unwrap();
        check(&o, "cache-size");
        let o = ff(&w, &s, "cache-size").arg("--verify").output().unwrap();
        check(&o, "cache-size");
        // Nothing was written: the counter is still missing, the value whole.
        let gone: u64 = s.query(redis::cmd("EXISTS").arg(format!("{NS}{key}")));
        assert_eq!(gone, 0, "{key}: a refused script wrote the counter");
        let v: Vec<u8> = s.query(redis::cmd("GET").arg(format!("{NS}v:k")));
        assert_eq!(v, b"hello", "{key}");
        let o = ff(&w, &s, "cache-size")
            .args(["--verify", "--fix"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{key}: {}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "5\n", "{key}");
        assert!(stderr_of(&o).contains("repaired redis://"), "{key}");
        assert_eq!(counters(&s), (5, 1), "{key}");
        ff(&w, &s, "cache-size").arg("--verify").assert().success();
        ff(&w, &s, "cache-write")
            .args(["k", "h"])
            .assert()
            .success();
        assert_eq!(counters(&s), (1, 1), "{key}");
    }
    // A counter lower than what a rewrite takes off (set by hand; also a
    // repair's 0 while writers run) stops at 0.
    ff(&w, &s, "cache-write")
        .args(["k", "hello"])
        .assert()
        .success();
    s.query::<()>(redis::cmd("SET").arg(format!("{NS}total")).arg("2"));
    ff(&w, &s, "cache-write")
        .args(["k", "h"])
        .assert()
        .success();
    let raw: String = s.query(redis::cmd("GET").arg(format!("{NS}total")));
    assert_eq!(raw, "0", "a rewrite stored a negative total");
    ff(&w, &s, "cache-size").assert().success().stdout("0\n");
    ff(&w, &s, "cache-size")
        .args(["--verify", "--fix"])
        .assert()
        .success()
        .stdout("1\n");
    assert_eq!(counters(&s), (1, 1));
}

/// `cache-size --verify` names every damaged namespace-wide key, one line
/// each, and `--verify --json` prints the JSON with them listed (no
/// numbers: nothing could be recounted), exit 10. Before, only the first
/// was named and `--json` printed nothing.
#[test]
fn redis_cache_verify_names_every_damaged_namespace_key() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    ff(&w, &s, "cache-write")
        .args(["k", "hello"])
        .assert()
        .success();
    for key in ["lru", "crt"] {
        s.query::<()>(redis::cmd("SET").arg(format!("{NS}{key}")).arg("x"));
    }
    let o = ff(&w, &s, "cache-size").arg("--verify").output().unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(10), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    for (line, key) in lines.iter().zip(["lru", "crt"]) {
        assert!(
            line.starts_with("ffkit cache-size: redis://")
                && line.contains(&format!("{NS}{key}: holds a string, not a sorted set")),
            "{err}"
        );
    }
    let o = ff(&w, &s, "cache-size")
        .args(["--verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(10), "{}", stderr_of(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let d = v["damaged"].as_array().expect("damaged listed");
    assert_eq!(d.len(), 2, "{v}");
    assert!(
        d[0].as_str().unwrap_or("").contains(&format!("{NS}lru")),
        "{v}"
    );
    assert!(
        d[1].as_str().unwrap_or("").contains(&format!("{NS}crt")),
        "{v}"
    );
    assert!(v["bytes"].is_null(), "{v}");
    ff(&w, &s, "cache-size")
        .args(["--verify", "--fix"])
        .assert()
        .success()
        .stdout("5\n");
    ff(&w, &s, "cache-size")
        .args(["--verify", "--json"])
        .assert()
        .success();
}

/// A value whose metadata key was deleted by hand (an orphan) is damage:
/// `cache-read` exits 10 and drops it; the counters lose it only if they
/// held it (it is still in the recency set: a write counted it), so they
/// stay exact either way. A write over it does not count it twice.
/// `--verify` reports it, `--verify --fix` drops it with a line, and
/// `cache-evict --all` removes one no index set names. Before, the read
/// was a miss (exit 4), the total kept its bytes, and evict never removed
/// it.
#[test]
fn redis_cache_value_without_its_record_is_damage_and_goes() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let write = |k: &str, v: &str| {
        ff(&w, &s, "cache-write").args([k, v]).assert().success();
    };
    let unrecord = |k: &str| s.query::<()>(redis::cmd("DEL").arg(format!("{NS}m:{k}")));
    let by_hand =
        |k: &str, v: &str| s.query::<()>(redis::cmd("SET").arg(format!("{NS}v:{k}")).arg(v));
    write("other", "fine");
    // Counted by a write, then its record deleted: read is damage, the
    // counters lose it.
    write("k", "0123456789");
    unrecord("k");
    let o = ff(&w, &s, "cache-read").arg("k").output().unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(10), "{err}");
    assert!(o.stdout.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{NS}v:k: the value has no record"))
            && err.contains("(damaged; removed)"),
        "{err}"
    );
    assert!(entry_gone(&s, "k"));
    assert_eq!(counters(&s), (4, 1));
    ff(&w, &s, "cache-read").arg("k").assert().code(4);
    // Set by hand, never counted: damage too, and the counters keep theirs.
    by_hand("h", "handmade");
    ff(&w, &s, "cache-read").arg("h").assert().code(10);
    assert!(entry_gone(&s, "h"));
    assert_eq!(counters(&s), (4, 1));
    // A write over either kind counts the new value once.
    write("k", "0123456789");
    unrecord("k");
    write("k", "abc");
    by_hand("h", "handmade");
    write("h", "xy");
    assert_eq!(counters(&s), (9, 3));
    let rc = recount(&s);
    assert_eq!((rc.bytes, rc.values, rc.metas), (9, 3, 3));
    // --verify reports both kinds; --fix drops them with a line each.
    unrecord("k");
    by_hand("z", "handmade");
    let o = ff(&w, &s, "cache-size").arg("--verify").output().unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(10), "{err}");
    assert!(
        err.contains(&format!("{NS}v:k: a value without its record")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{NS}v:z: a value without its record")),
        "{err}"
    );
    let o = ff(&w, &s, "cache-size")
        .args(["--verify", "--fix"])
        .output()
        .unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("dropped redis://"), "{err}");
    assert!(
        err.contains(&format!(
            "{NS}v:k: a value without its record (3 bytes off the total)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{NS}v:z: a value without its record (0 bytes off the total)"
        )),
        "{err}"
    );
    assert_eq!(counters(&s), (6, 2));
    ff(&w, &s, "cache-size").arg("--verify").assert().success();
    // cache-evict --all: one no index set names, and one that is still in them.
    by_hand("z", "handmade");
    unrecord("h");
    let o = ff(&w, &s, "cache-evict")
        .args(["--all", "--dry-run"])
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    for want in [
        "would evict z (0 bytes, all)",
        "would evict h (2 bytes, all)",
        "would evict other (4 bytes, all)",
    ] {
        assert!(plan.contains(want), "{want}: {plan}");
    }
    ff(&w, &s, "cache-evict").arg("--all").assert().success();
    assert!(scan(&s, &format!("{NS}v:*")).is_empty());
    assert!(scan(&s, &format!("{NS}m:*")).is_empty());
    assert_eq!(counters(&s), (0, 0));
}

/// A drop that takes a counter that stands at 0 (set low by hand, or by
/// a repair) is clamped at 0, on every path that drops: the read of an
/// orphan, `--verify --fix`, `--rebuild` and `cache-evict --all`. Before,
/// the clamp computed `-0`, which INCRBY refuses: exit 1 "value is not an
/// integer", with half of the drop done and no line said.
#[test]
fn redis_cache_drop_with_a_counter_at_zero_is_clamped_not_refused() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let setup = || {
        ff(&w, &s, "cache-evict").arg("--all").assert().success();
        for k in ["k1", "k2", "k3"] {
            ff(&w, &s, "cache-write")
                .args([k, "value"])
                .assert()
                .success();
        }
        s.query::<()>(redis::cmd("SET").arg(format!("{NS}count")).arg("0"));
        s.query::<()>(redis::cmd("DEL").arg(format!("{NS}m:k2")));
    };
    setup();
    let o = ff(&w, &s, "cache-read").arg("k2").output().unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(10), "{err}");
    assert!(err.contains("the value has no record"), "{err}");
    assert!(!err.contains("not an integer"), "{err}");
    assert_eq!(counters(&s).1, 0, "clamped at 0");
    for how in [&["--verify", "--fix"][..], &["--rebuild"][..]] {
        setup();
        let o = ff(&w, &s, "cache-size").args(how).output().unwrap();
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(0), "{how:?}: {err}");
        assert!(
            err.contains(&format!("{NS}v:k2: a value without its record")),
            "{how:?}: {err}"
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), "10\n", "{how:?}");
        assert_eq!(counters(&s), (10, 2), "{how:?}");
        ff(&w, &s, "cache-size").arg("--verify").assert().success();
    }
    setup();
    let o = ff(&w, &s, "cache-evict").arg("--all").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
    assert!(scan(&s, &format!("{NS}v:*")).is_empty());
    assert_eq!(counters(&s), (0, 0));
}

/// An empty value as the first entry of a namespace (cache-write and
/// cache-batch) leaves both counters: the total was not created (a size of
/// 0 added nothing), and every later script saw `total: missing while the
/// namespace holds entries` (exit 10) until `cache-size --verify --fix`.
#[test]
fn redis_cache_an_empty_first_value_leaves_the_namespace_sound() {
    for applet in ["cache-write", "cache-batch"] {
        let Some(s) = Server::start() else { return };
        let w = World::new();
        let mut c = ff(&w, &s, applet);
        let o = if applet == "cache-batch" {
            run_with_stdin(&mut c, b"e:\n")
        } else {
            c.args(["e", ""]).output().unwrap()
        };
        assert!(o.status.success(), "{applet}: {}", stderr_of(&o));
        let o = ff(&w, &s, "cache-read").arg("e").output().unwrap();
        assert!(o.status.success(), "{applet}: {}", stderr_of(&o));
        assert_eq!(o.stdout, b"", "{applet}");
        ff(&w, &s, "cache-write")
            .args(["f", "xy"])
            .assert()
            .success();
        assert_eq!(counters(&s), (2, 2), "{applet}");
        ff(&w, &s, "cache-size").arg("--verify").assert().success();
    }
}

/// The calls of `name` the server has run so far (`INFO commandstats`;
/// scripts' own commands count too).
fn calls(s: &Server, name: &str) -> u64 {
    let info: String = s.query(redis::cmd("INFO").arg("commandstats"));
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `cache-batch --read` of many keys is a few requests, not one per key
/// (200,000 keys took 19.5 s, writing them 5.1 s), and reads each key as
/// `cache-read` does: the output in the keys' order (a key given twice
/// printed twice), misses and expired entries left out, an expired entry
/// dropped with its bytes, a hit's recency refreshed, a value over 4 MiB
/// read whole (by a GET of its own); at most 256 keys and 4 MiB of values
/// inline per request (six values of 1.5 MiB in a row take three).
#[test]
fn redis_cache_batch_read_takes_few_requests_and_reads_every_key_as_cache_read_does() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let mut want: HashMap<String, Vec<u8>> = HashMap::new();
    let lines: String = (0..700)
        .map(|i| {
            let v = format!("value {i} {}", "x".repeat(i % 97));
            want.insert(format!("k{i}"), v.clone().into_bytes());
            format!("k{i}:{v}\n")
        })
        .collect();
    ff(&w, &s, "cache-batch")
        .args(["--ttl", "0"])
        .write_stdin(lines)
        .assert()
        .success();
    let mut write = |k: &str, v: Vec<u8>, ttl: &str| {
        ff(&w, &s, "cache-write")
            .args([k, "-", "--ttl", ttl])
            .write_stdin(v.clone())
            .assert()
            .success();
        want.insert(k.to_string(), v);
    };
    for i in 0..6 {
        write(&format!("m{i}"), vec![b'a' + i as u8; 3 << 19], "0");
    }
    write("big", vec![b'B'; 5 << 20], "0");
    write("old", b"soon gone".to_vec(), "100");
    want.remove("old");
    // Misses between the hits, the large values in a row, a key twice.
    let mut keys: Vec<String> = Vec::new();
    for i in (0..700).rev() {
        keys.push(format!("k{i}"));
        if i % 7 == 0 {
            keys.push(format!("missing{i}"));
        }
        if i == 350 {
            keys.extend((0..6).map(|j| format!("m{j}")));
            keys.extend(["big", "old", "k5"].map(String::from));
        }
    }
    let expected: Vec<u8> = keys
        .iter()
        .filter_map(|k| want.get(k).map(|v| [k.as_bytes(), b":", v, b"\n"].concat()))
        .flatten()
        .collect();
    let evals = calls(&s, "evalsha");
    let now = jiff::Timestamp::now().as_second() + 200;
    let out = ff(&w, &s, "cache-batch")
        .arg("--read")
        .env("FFKIT_TEST_NOW", now.to_string())
        .write_stdin(keys.join("\n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        out.stdout == expected,
        "the output differs from each key's cache-read"
    );
    // 809 keys in 5 requests (before: 809): 256 keys; 256 cut short
    // before m2 by the 4 MiB bound (m0 and m1 fit); m2 and m3; m4 and
    // the 255 keys after it; the 148 left.
    let requests = calls(&s, "evalsha") - evals;
    assert_eq!(requests, 5, "requests");
    assert!(entry_gone(&s, "old"), "the expired entry is dropped");
    let rc = recount(&s);
    assert_eq!(counters(&s), (rc.bytes, rc.values));
    for k in ["k0", "k699", "m5", "big"] {
        let at: Option<i64> = s.query(redis::cmd("ZSCORE").arg(format!("{NS}lru")).arg(k));
        assert_eq!(at, Some(now), "{k}'s recency");
    }
    // The local cache prints the same for the same entries and keys.
    let local = |c: &mut Command| {
        c.env_remove("FFKIT_BACKEND").env_remove("FFKIT_LOCK_DIR");
    };
    let mut c = ff(&w, &s, "cache-batch");
    local(&mut c);
    c.args(["--ttl", "0"])
        .write_stdin(
            want.iter()
                .filter(|(k, _)| k.starts_with('k'))
                .map(|(k, v)| format!("{k}:{}\n", String::from_utf8_lossy(v)))
                .collect::<String>(),
        )
        .assert()
        .success();
    for k in ["m0", "m1", "m2", "m3", "m4", "m5", "big"] {
        let mut c = ff(&w, &s, "cache-write");
        local(&mut c);
        c.args([k, "-", "--ttl", "0"])
            .write_stdin(want[k].clone())
            .assert()
            .success();
    }
    let mut c = ff(&w, &s, "cache-batch");
    local(&mut c);
    let out = c
        .arg("--read")
        .write_stdin(keys.join("\n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout == expected, "the local cache prints otherwise");
}

/// A damaged entry in the middle of a `cache-batch --read` stops the read
/// there, as when each key was a request of its own: exit 10, one line,
/// nothing printed, the damaged entry dropped and the keys after it not
/// read (an expired one among them is not dropped).
#[test]
fn redis_cache_batch_read_stops_at_a_damaged_entry() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    ff(&w, &s, "cache-batch")
        .args(["--ttl", "100"])
        .write_stdin("a:first\nb:second\nc:third\n")
        .assert()
        .success();
    hset(&s, "b", "size", b"nan");
    let later = (jiff::Timestamp::now().as_second() + 50).to_string();
    let o = ff(&w, &s, "cache-batch")
        .args(["--read", "a", "b", "c"])
        .env("FFKIT_TEST_NOW", &later)
        .output()
        .unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(10), "{err}");
    assert!(o.stdout.is_empty(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{NS}v:b: ")), "{err}");
    assert!(entry_gone(&s, "b"));
    // c was not read: expired as seen then, it would have been dropped.
    let gone = (jiff::Timestamp::now().as_second() + 200).to_string();
    let o = ff(&w, &s, "cache-batch")
        .args(["--read", "c", "a"])
        .env("FFKIT_TEST_NOW", &later)
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"c:third\na:first\n", "{}", stderr_of(&o));
    let o = ff(&w, &s, "cache-batch")
        .args(["--read", "c", "a"])
        .env("FFKIT_TEST_NOW", &gone)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty(),
        "{}",
        stderr_of(&o)
    );
    assert!(entry_gone(&s, "c") && entry_gone(&s, "a"));
    let rc = recount(&s);
    assert_eq!(counters(&s), (rc.bytes, rc.values));
}
