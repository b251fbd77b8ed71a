//! cache-size, cache-write, cache-read, cache-batch, cache-evict: every
//! option in both invocation forms, every error path, and the exactness of
//! the size index under concurrency and SIGKILL.

use std::fs;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use predicates::prelude::*;
use rustix::process::Signal;
use serde_json::Value as Json;

use crate::util::*;

const NOW: i64 = 1_800_000_000;

fn json(out: &[u8]) -> Json {
    serde_json::from_slice(out).expect("JSON output")
}

fn meta(w: &World, key: &str) -> Json {
    json(&fs::read(w.cache().join(format!("{key}.meta"))).expect("sidecar"))
}

// ---- cache-write / cache-read -------------------------------------------

#[test]
fn write_from_argument_and_read_back_in_both_forms() {
    let w = World::new();
    w.cmd("cache-write")
        .args(["k", "hello world"])
        .assert()
        .success()
        .stdout("");
    w.link("cache-write").args(["k2", "v2"]).assert().success();
    w.cmd("cache-read")
        .arg("k")
        .assert()
        .success()
        .stdout("hello world");
    w.link("cache-read")
        .arg("k2")
        .assert()
        .success()
        .stdout("v2");
    w.assert_exact();
}

#[test]
fn write_from_stdin_is_binary_safe() {
    let w = World::new();
    let value: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    w.cmd("cache-write")
        .arg("bin")
        .write_stdin(value.clone())
        .assert()
        .success();
    w.cmd("cache-write")
        .args(["dash", "-"])
        .write_stdin("from stdin\n\n")
        .assert()
        .success();
    w.cmd("cache-read")
        .arg("bin")
        .assert()
        .success()
        .stdout(value);
    w.cmd("cache-read")
        .arg("dash")
        .assert()
        .success()
        .stdout("from stdin\n\n");
    assert_eq!(meta(&w, "bin")["size"], 70_000);
    w.assert_exact();
}

#[test]
fn values_with_leading_dashes_are_values() {
    let w = World::new();
    w.cmd("cache-write")
        .args(["k", "--not-an-option"])
        .assert()
        .success();
    w.cmd("cache-read")
        .arg("k")
        .assert()
        .stdout("--not-an-option");
}

#[test]
fn sidecar_has_the_contract_fields() {
    let w = World::new();
    w.cmd("cache-write")
        .args(["k", "abc", "--ttl", "60"])
        .env("FFKIT_TEST_NOW", NOW.to_string())
        .assert()
        .success();
    let m = meta(&w, "k");
    assert_eq!(m["key"], "k");
    assert_eq!(m["created_at"], NOW);
    assert_eq!(m["expires_at"], NOW + 60);
    assert_eq!(m["ttl"], 60);
    assert_eq!(m["size"], 3);
    w.cmd("cache-write")
        .args(["n", "abc", "--ttl", "0"])
        .assert()
        .success();
    assert_eq!(meta(&w, "n")["expires_at"], Json::Null);
    w.cmd("cache-write").args(["d", "abc"]).assert().success();
    assert_eq!(meta(&w, "d")["ttl"], 0);
}

#[test]
fn ttl_expiry_is_deterministic_with_the_test_clock() {
    let w = World::new();
    let at = |t: i64, c: &mut Command| {
        c.env("FFKIT_TEST_NOW", t.to_string());
    };
    let mut c = w.cmd("cache-write");
    at(NOW, &mut c);
    c.args(["k", "v", "--ttl", "10"]).assert().success();
    let mut c = w.cmd("cache-read");
    at(NOW + 9, &mut c);
    c.arg("k").assert().success().stdout("v");
    let mut c = w.cmd("cache-read");
    at(NOW + 10, &mut c);
    c.arg("k")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("k: expired at"));
    let mut c = w.cmd("cache-read");
    at(NOW + 10, &mut c);
    c.args(["-q", "k"]).assert().code(4).stderr("");
}

#[test]
fn missing_entry_is_exit_4_with_one_line() {
    let w = World::new();
    w.cmd("cache-read")
        .arg("nope")
        .assert()
        .code(4)
        .stderr("ffkit cache-read: nope: no such entry\n");
    w.link("cache-read")
        .arg("nope")
        .assert()
        .code(4)
        .stderr("cache-read: nope: no such entry\n");
    w.cmd("cache-read")
        .args(["-q", "nope"])
        .assert()
        .code(4)
        .stderr("");
}

#[test]
fn reading_refreshes_recency_at_most_once_per_interval() {
    let w = World::new();
    w.cmd("cache-write")
        .args(["k", "v"])
        .env("FFKIT_TEST_NOW", NOW.to_string())
        .assert()
        .success();
    let atime = || {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(w.cache().join("k")).unwrap().atime()
    };
    let mtime_meta = fs::metadata(w.cache().join("k.meta"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(atime(), NOW);
    w.cmd("cache-read")
        .arg("k")
        .env("FFKIT_TEST_NOW", (NOW + 30).to_string())
        .assert()
        .success();
    assert_eq!(atime(), NOW, "within the interval: no touch");
    w.cmd("cache-read")
        .arg("k")
        .env("FFKIT_TEST_NOW", (NOW + 61).to_string())
        .assert()
        .success();
    assert_eq!(atime(), NOW + 61, "after the interval: touched");
    assert_eq!(
        fs::metadata(w.cache().join("k.meta"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime_meta,
        "sidecar is not rewritten"
    );
}

#[test]
fn damaged_sidecar_is_exit_10_and_evict_expired_removes_it() {
    let w = World::new();
    w.write("k", "v");
    fs::write(w.cache().join("k.meta"), "{\"key\":").unwrap();
    w.cmd("cache-read")
        .arg("k")
        .assert()
        .code(10)
        .stderr(predicate::str::contains("damaged sidecar"));
    w.cmd("cache-size")
        .args(["--verify", "--fix"])
        .assert()
        .success();
    w.cmd("cache-evict").arg("--expired").assert().success();
    assert!(!w.cache().join("k").exists() && !w.cache().join("k.meta").exists());
    w.assert_exact();
}

/// A value cut short behind ffkit's back (its sidecar says 10 bytes, the
/// file has 3) is never printed as good: exit 10 and one line, through the
/// binary, the shell function and the builtin alike (they share the
/// library's check), and `cache-evict --expired` removes it as garbage.
#[test]
fn a_value_whose_size_is_not_its_sidecars_is_exit_10_never_returned() {
    let w = World::new();
    w.write("k", "0123456789");
    let cut = |dir: &std::path::Path| {
        fs::OpenOptions::new()
            .write(true)
            .open(dir.join("k"))
            .unwrap()
            .set_len(3)
            .unwrap();
    };
    cut(&w.cache());
    w.cmd("cache-size").arg("--rebuild").assert().success();
    let mut c = w.cmd("cache-read");
    c.arg("k");
    let out = check(&w, "cut value", c, b"", 10, 1);
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    assert!(
        stderr_of(&out).contains("sidecar says 10"),
        "{}",
        stderr_of(&out)
    );
    let mut c = w.cmd("cache-batch");
    c.args(["--read", "k"]);
    let out = check(&w, "cut value, batch read", c, b"", 10, 1);
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);

    // The shell function, without and with the builtin.
    let repo = w.path().join("repo");
    fs::create_dir_all(repo.join(".git")).unwrap();
    let so = super::builtin::library(&bin());
    for builtin in [None, Some(&so)] {
        let mut c = Command::new("bash");
        w.isolate(&mut c);
        c.env("FFKIT_BIN", bin())
            .env(
                "FFKIT_LIB",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash"),
            )
            .env("FLOWFORGE_DEVELOPER", "alice")
            .env("FFKIT_BUILTIN", builtin.map_or("off".into(), |p| p.clone().into_os_string()))
            .current_dir(&repo)
            .args([
                "-c",
                ". \"$FFKIT_LIB\"; echo \"$(type -t ffkit)\"; write_cache_with_metadata k 0123456789 0 || exit 9; \
                 truncate -s 3 .flowforge/dev-alice/cache/k; v=$(read_cache_with_ttl k); echo \"rc=$? [$v]\"",
            ]);
        let out = c.output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        let loaded = if builtin.is_some() { "builtin\n" } else { "\n" };
        assert_eq!(said, format!("{loaded}rc=10 []\n"), "{}", stderr_of(&out));
        assert_eq!(stderr_lines(&out).len(), 1, "{}", stderr_of(&out));
    }

    let mut c = w.cmd("cache-evict");
    c.args(["--expired", "--json"]);
    let out = check(&w, "evict the cut value", c, b"", 0, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("garbage"));
    assert!(!w.cache().join("k").exists() && !w.cache().join("k.meta").exists());
}

/// [`BAD_KEYS`] and the two over-long keys (251 bytes: one over the limit).
fn bad_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = BAD_KEYS.iter().map(|k| k.to_vec()).collect();
    keys.push(vec![b'k'; 256]);
    keys.push(vec![b'k'; 251]);
    keys
}

#[test]
fn bad_keys_are_refused_with_exit_2_by_every_applet() {
    // In a world where nothing exists yet: refused up front, nothing created.
    let fresh = World::new();
    for key in bad_keys() {
        for applet in ["cache-write", "cache-read"] {
            let mut c = fresh.cmd(applet);
            c.arg(osb(&key));
            if applet == "cache-write" {
                c.arg("v");
            }
            let out = c.output().unwrap();
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(2), "{applet} {key:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("invalid key"), "{applet} {key:?}: {err}");
        }
    }
    assert!(!fresh.cache().exists(), "nothing is created for a bad key");
    fresh
        .cmd("cache-write")
        .args(["k".repeat(250).as_str(), "v"])
        .assert()
        .success();
    // Every applet and every way in, beside an existing entry.
    let w = seeded();
    for k in &bad_keys() {
        let shown = String::from_utf8_lossy(k).escape_debug().to_string();
        let mut c = w.cmd("cache-write");
        c.arg("--").arg(osb(k)).arg("v");
        check(&w, &format!("cache-write {shown}"), c, b"", 2, 1);
        let mut c = w.cmd("cache-write");
        c.arg("--").arg(osb(k));
        check(
            &w,
            &format!("cache-write {shown} <stdin"),
            c,
            b"value",
            2,
            1,
        );
        let mut c = w.cmd("cache-read");
        c.arg("--").arg(osb(k));
        check(&w, &format!("cache-read {shown}"), c, b"", 2, 1);
        let mut c = w.cmd("cache-batch");
        c.args(["--read", "--"]).arg(osb(k));
        check(&w, &format!("cache-batch --read {shown}"), c, b"", 2, 1);
        if !k.contains(&b'\n') {
            // Stdin forms: a key per line, a batch line, a jsonl line.
            let mut line = k.clone();
            line.push(b'\n');
            if !k.is_empty() {
                check(
                    &w,
                    &format!("batch --read stdin {shown}"),
                    batch_read(&w),
                    &line,
                    2,
                    1,
                );
            }
            let mut bl = k.clone();
            bl.extend_from_slice(b":value\n");
            check(
                &w,
                &format!("batch line {shown}"),
                w.cmd("cache-batch"),
                &bl,
                2,
                1,
            );
        }
        if let Ok(s) = std::str::from_utf8(k) {
            let j = format!("{}\n", serde_json::json!({"key": s, "value": "v"}));
            let mut c = w.cmd("cache-batch");
            c.args(["--format", "jsonl"]);
            check(&w, &format!("jsonl {shown}"), c, j.as_bytes(), 2, 1);
        }
    }
    // NUL can only arrive through stdin.
    for input in [&b"a\0b:v\n"[..], b"\0:v\n", b"ok:1\nx\0:2\n"] {
        check(
            &w,
            "batch line with NUL key",
            w.cmd("cache-batch"),
            input,
            2,
            1,
        );
    }
    check(&w, "batch --read NUL key", batch_read(&w), b"a\0b\n", 2, 1);
    let mut c = w.cmd("cache-batch");
    c.args(["--format", "jsonl"]);
    check(
        &w,
        "jsonl NUL key",
        c,
        b"{\"key\":\"a\\u0000b\",\"value\":\"v\"}\n",
        2,
        1,
    );
    // Nothing but the seed was ever written.
    assert_eq!(oracle(&w.cache()).1, 1);
}

fn batch_read(w: &World) -> Command {
    let mut c = w.cmd("cache-batch");
    c.arg("--read");
    c
}

#[test]
fn batch_read_of_non_utf8_stdin_is_a_validation_error() {
    let w = seeded();
    let out = check(
        &w,
        "batch --read \\xff",
        batch_read(&w),
        b"seed\n\xff\n",
        2,
        1,
    );
    assert!(stderr_of(&out).contains("line 2"), "{}", stderr_of(&out));
}

#[test]
fn bad_ttls_durations_and_sizes_exit_2() {
    let w = seeded();
    for v in BAD_TTLS {
        for form in [
            vec!["--ttl".to_string(), v.to_string()],
            vec![format!("--ttl={v}")],
        ] {
            let mut c = w.cmd("cache-write");
            c.args(&form).args(["k", "v"]);
            let out = check(&w, &format!("cache-write {form:?}"), c, b"", 2, 1);
            assert!(stderr_of(&out).contains("--ttl"), "{}", stderr_of(&out));
            // After the positional arguments too.
            let mut c = w.cmd("cache-write");
            c.args(["k", "v"]).args(&form);
            check(&w, &format!("cache-write k v {form:?}"), c, b"", 2, 1);
            let mut c = w.cmd("cache-batch");
            c.args(&form);
            check(&w, &format!("cache-batch {form:?}"), c, b"k:v\n", 2, 1);
        }
    }
    for (opt, values) in [("--older-than", BAD_DURATIONS), ("--max-bytes", BAD_SIZES)] {
        for v in values {
            for form in [
                vec![opt.to_string(), v.to_string()],
                vec![format!("{opt}={v}")],
            ] {
                let mut c = w.cmd("cache-evict");
                c.args(&form);
                check(&w, &format!("cache-evict {form:?}"), c, b"", 2, 1);
            }
        }
    }
    // jsonl TTLs obey the same range as --ttl.
    for ttl in [
        "-1",
        "1e999",
        "1.5",
        "\"5\"",
        "99999999999999999999",
        "18446744073709551615",
        "1000000001",
    ] {
        let mut c = w.cmd("cache-batch");
        c.args(["--format", "jsonl"]);
        let line = format!("{{\"key\":\"k\",\"value\":\"v\",\"ttl\":{ttl}}}\n");
        check(&w, &format!("jsonl ttl {ttl}"), c, line.as_bytes(), 2, 1);
    }
    assert_eq!(oracle(&w.cache()).1, 1);
}

#[test]
fn damaged_sidecars_read_as_corruption_and_are_evicted_by_expired() {
    let w = seeded();
    let damages: &[(&str, &[u8])] = &[
        ("truncated", b"{\"key\":\"a\",\"created"),
        (
            "wrong types",
            b"{\"key\":1,\"created_at\":\"x\",\"expires_at\":null,\"ttl\":0,\"size\":1}",
        ),
        ("missing fields", b"{\"key\":\"x\"}"),
        ("empty", b""),
        ("not json", b"\xff\xfe\0garbage"),
        (
            "negative ttl",
            b"{\"key\":\"k\",\"created_at\":0,\"expires_at\":null,\"ttl\":-1,\"size\":1}",
        ),
    ];
    for (i, (what, bytes)) in damages.iter().enumerate() {
        let key = format!("d{i}");
        w.write(&key, "value");
        fs::write(w.cache().join(format!("{key}.meta")), bytes).unwrap();
        // Damage happens behind ffkit's back: bring the index up to date first.
        w.cmd("cache-size").arg("--rebuild").assert().success();
        let mut c = w.cmd("cache-read");
        c.arg(&key);
        let out = check(&w, what, c, b"", 10, 1);
        assert!(
            stderr_of(&out).contains("cache-evict --expired"),
            "{}",
            stderr_of(&out)
        );
        let mut c = w.cmd("cache-batch");
        c.args(["--read", &key]);
        check(&w, &format!("{what} batch read"), c, b"", 10, 1);
        // Writers do not care about the old sidecar: overwriting heals.
        let mut c = w.cmd("cache-write");
        c.args([&key, "fresh"]);
        check(&w, &format!("{what} overwrite"), c, b"", 0, 0);
        w.cmd("cache-read")
            .arg(&key)
            .assert()
            .success()
            .stdout("fresh");
        fs::write(w.cache().join(format!("{key}.meta")), bytes).unwrap();
        w.cmd("cache-size").arg("--rebuild").assert().success();
        let mut c = w.cmd("cache-evict");
        c.args(["--expired", "--json"]);
        let out = check(&w, &format!("{what} evict"), c, b"", 0, 0);
        assert!(String::from_utf8_lossy(&out.stdout).contains("garbage"));
        assert!(!w.cache().join(&key).exists() && !w.cache().join(format!("{key}.meta")).exists());
        let mut c = w.cmd("cache-read");
        c.arg(&key);
        check(&w, &format!("{what} after evict"), c, b"", 4, 1);
    }
    assert!(w.cache().join("seed").exists(), "the healthy entry stays");
}

/// Decided: a sidecar without a value is garbage (`--expired` removes it,
/// reads say missing); a value without a sidecar is "missing" to reads but
/// is an ordinary file for the size (it counts), for LRU and for `--all`;
/// `--expired` leaves it (it has no expiry). Both stay exactly counted.
#[test]
fn half_entries_are_missing_to_readers_and_counted_exactly() {
    let w = seeded();
    w.write("nometa", "value-without-sidecar");
    w.write("novalue", "gone");
    fs::remove_file(w.cache().join("nometa.meta")).unwrap();
    fs::remove_file(w.cache().join("novalue")).unwrap();
    w.cmd("cache-size").arg("--rebuild").assert().success();
    for k in ["nometa", "novalue"] {
        let mut c = w.cmd("cache-read");
        c.arg(k);
        check(&w, &format!("read {k}"), c, b"", 4, 1);
        let mut c = w.cmd("cache-batch");
        c.args(["--read", k]);
        let out = check(&w, &format!("batch read {k}"), c, b"", 0, 0);
        assert!(out.stdout.is_empty());
    }
    let mut c = w.cmd("cache-evict");
    c.arg("--expired");
    check(&w, "evict --expired", c, b"", 0, 0);
    assert!(
        !w.cache().join("novalue.meta").exists(),
        "orphan sidecar removed"
    );
    assert!(
        w.cache().join("nometa").exists(),
        "orphan value kept by --expired"
    );
    // Writing the key makes it whole again.
    let mut c = w.cmd("cache-write");
    c.args(["nometa", "whole"]);
    check(&w, "rewrite", c, b"", 0, 0);
    w.cmd("cache-read")
        .arg("nometa")
        .assert()
        .success()
        .stdout("whole");
    fs::remove_file(w.cache().join("nometa.meta")).unwrap();
    w.cmd("cache-size").arg("--rebuild").assert().success();
    let mut c = w.cmd("cache-evict");
    c.arg("--all");
    check(&w, "evict --all", c, b"", 0, 0);
    assert_eq!(oracle(&w.cache()), (0, 0));
}

#[test]
fn an_unreadable_value_input_is_blamed_on_the_input_not_the_temp_file() {
    let w = seeded();
    let mut c = w.cmd("cache-write");
    c.arg("k").stdin(fs::File::open(w.path()).unwrap());
    let before = outside_snapshot(&w);
    let out = c.output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(stderr_lines(&out).len(), 1, "{err}");
    assert!(err.contains("cannot read the value to write"), "{err}");
    assert!(!err.contains(".tmp-"), "{err}");
    assert!(!w.cache().join("k").exists());
    assert_index_exact(&w.cache(), "stdin is a directory");
    assert_no_temps(&w.cache(), "stdin is a directory");
    assert_eq!(outside_snapshot(&w), before);
}

// ---- cache-size -----------------------------------------------------------

#[test]
fn size_of_a_cache_that_does_not_exist_is_zero_and_creates_nothing() {
    let w = World::new();
    w.cmd("cache-size").assert().success().stdout("0\n");
    assert!(!w.cache().exists());
}

#[test]
fn size_json_and_human() {
    let w = World::new();
    w.cmd("cache-write")
        .arg("big")
        .write_stdin(vec![b'x'; 1_300_000])
        .assert()
        .success();
    let j = json(&w.cmd("cache-size").arg("--json").output().unwrap().stdout);
    assert_eq!(j["source"], "index");
    assert_eq!(j["entries"], 1);
    w.link("cache-size")
        .arg("--human")
        .assert()
        .success()
        .stdout("1.2 MiB\n");
    let j = json(
        &w.cmd("cache-size")
            .arg("--json")
            .env("CACHE_SIZE_TRACKING", "disabled")
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(j["source"], "walk");
    assert_eq!(j["bytes"], oracle(&w.cache()).0);
}

#[test]
fn size_reads_the_index_without_walking() {
    let w = World::new();
    w.write("k", "v");
    // A file dropped behind ffkit's back is not seen by the O(1) path...
    fs::write(w.cache().join("stray"), "12345").unwrap();
    let indexed = w.size();
    assert_eq!(indexed + 5, oracle(&w.cache()).0);
    // ...but is by a walk, and --verify reports the drift with exit 10.
    w.cmd("cache-size")
        .env("CACHE_SIZE_TRACKING", "disabled")
        .assert()
        .stdout(format!("{}\n", indexed + 5));
    w.cmd("cache-size")
        .arg("--verify")
        .assert()
        .code(10)
        .stderr(predicate::str::contains("+5 bytes, +1 entries"));
    let j = json(
        &w.cmd("cache-size")
            .args(["--verify", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(j["drift_bytes"], 5);
    w.cmd("cache-size")
        .args(["--verify", "--fix"])
        .assert()
        .success()
        .stderr(predicate::str::contains("index fixed"));
    w.cmd("cache-size").arg("--verify").assert().success();
    w.assert_exact();
}

#[test]
fn missing_or_invalid_index_is_rebuilt_with_one_note() {
    let w = World::new();
    w.write("a", "1");
    w.write("b", "22");
    let expected = oracle(&w.cache()).0;
    for bad in [
        None,
        Some(&b""[..]),
        Some(b"abc\n"),
        Some(b"-5\n"),
        Some(b"1180591620717411303424\n"),
        Some(b"12\0\n"),
        Some(b"12"),
    ] {
        match bad {
            None => fs::remove_file(w.cache().join(".size-index")).unwrap(),
            Some(b) => fs::write(w.cache().join(".size-index"), b).unwrap(),
        }
        let out = w.cmd("cache-size").output().unwrap();
        assert!(out.status.success());
        assert_eq!(parse_u64(&out.stdout), expected, "{bad:?}");
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("rebuilt by walking"), "{err}");
        assert_eq!(w.index(), Some(format!("{expected}\n")));
    }
}

#[test]
fn rebuild_recomputes_the_index() {
    let w = World::new();
    w.write("a", "1");
    fs::write(w.cache().join(".size-index"), "999\n").unwrap();
    w.cmd("cache-size").assert().stdout("999\n");
    w.link("cache-size")
        .arg("--rebuild")
        .assert()
        .success()
        .stdout(format!("{}\n", oracle(&w.cache()).0));
    w.assert_exact();
}

#[test]
fn control_files_do_not_count() {
    let w = World::new();
    w.write("a", "1");
    let (bytes, _) = oracle(&w.cache());
    assert!(
        w.cache().join(".perf-metrics.csv").exists(),
        "self-timing wrote the log into the cache dir"
    );
    assert_eq!(w.size(), bytes);
    let value_and_meta = fs::metadata(w.cache().join("a")).unwrap().len()
        + fs::metadata(w.cache().join("a.meta")).unwrap().len();
    assert_eq!(bytes, value_and_meta);
}

#[test]
fn a_damaged_index_is_rebuilt_with_one_note() {
    let w = seeded();
    w.write("other", "12345");
    for (what, content) in [
        ("empty", &b""[..]),
        ("text", b"text\n"),
        ("negative", b"-5\n"),
        ("2^70", b"1180591620717411303424\n"),
        ("NUL bytes", b"1\0\x002\n"),
        ("no trailing newline", b"1234"),
        ("leading zero", b"0123\n"),
        ("huge file", &[b'9'; 100_000][..]),
    ] {
        fs::write(w.cache().join(".size-index"), content).unwrap();
        let out = check(&w, what, w.cmd("cache-size"), b"", 0, 1);
        assert!(
            stderr_of(&out).contains("rebuilt"),
            "{what}: {}",
            stderr_of(&out)
        );
        assert_eq!(parse_u64(&out.stdout), oracle(&w.cache()).0, "{what}");
        // The next call is quiet again.
        check(&w, what, w.cmd("cache-size"), b"", 0, 0);
        // The entry count (the record that starts `.lock`) is validated by
        // the --json path: a record that does not parse is no record.
        fs::write(w.cache().join(".lock"), content).unwrap();
        let mut c = w.cmd("cache-size");
        c.arg("--json");
        check(&w, &format!("{what} count"), c, b"", 0, 1);
    }
    // A missing index is rebuilt by any writer too.
    fs::remove_file(w.cache().join(".size-index")).unwrap();
    check(
        &w,
        "write after missing index",
        w.cmd("cache-write").args(["k", "v"]).clone_cmd(),
        b"",
        0,
        0,
    );
}

// ---- cache-batch ------------------------------------------------------------

#[test]
fn batch_writes_lines_with_the_default_ttl() {
    let w = World::new();
    w.cmd("cache-batch")
        .env("FFKIT_TEST_NOW", NOW.to_string())
        .write_stdin("a:1\n\nb:with:colons\r\nc:\n")
        .assert()
        .success();
    w.cmd("cache-read").arg("b").assert().stdout("with:colons");
    w.cmd("cache-read").arg("c").assert().success().stdout("");
    assert_eq!(meta(&w, "a")["ttl"], 300);
    assert_eq!(meta(&w, "a")["expires_at"], NOW + 300);
    w.assert_exact();
}

#[test]
fn batch_from_file_jsonl_and_ttl() {
    let w = World::new();
    let f = w.path().join("in.jsonl");
    fs::write(&f, "{\"key\":\"j\",\"value\":\"line1\\nline2\\n\"}\n{\"key\":\"t\",\"value\":\"x\",\"ttl\":7}\n").unwrap();
    w.link("cache-batch")
        .args(["--format", "jsonl", "--ttl", "0", "--file"])
        .arg(&f)
        .assert()
        .success();
    w.cmd("cache-read")
        .arg("j")
        .assert()
        .stdout("line1\nline2\n");
    assert_eq!(meta(&w, "j")["ttl"], 0);
    assert_eq!(meta(&w, "t")["ttl"], 7);
    w.assert_exact();
}

#[test]
fn a_bad_line_stops_the_batch_before_anything_is_written() {
    let w = World::new();
    w.cmd("cache-batch")
        .write_stdin("a:1\nno colon here\nb:2\n.bad:3\n")
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("line 2: no ':'").and(predicate::str::contains("and 1 more")),
        );
    assert_eq!(oracle(&w.cache()), (0, 0));
    w.cmd("cache-batch")
        .args(["--format", "jsonl"])
        .write_stdin("{\"key\":\"k\"}\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 1"));
}

#[test]
fn keep_going_writes_the_good_lines_and_reports_the_bad() {
    let w = World::new();
    let out = w
        .cmd("cache-batch")
        .arg("--keep-going")
        .write_stdin("a:1\nnocolon\nb:2\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("line 2"));
    w.cmd("cache-read").arg("a").assert().stdout("1");
    w.cmd("cache-read").arg("b").assert().stdout("2");
    w.assert_exact();
}

#[test]
fn batch_read_prints_present_unexpired_keys() {
    let w = World::new();
    w.cmd("cache-batch")
        .env("FFKIT_TEST_NOW", NOW.to_string())
        .write_stdin("a:1\nb:2\n")
        .assert()
        .success();
    w.cmd("cache-write")
        .args(["short", "s", "--ttl", "1"])
        .env("FFKIT_TEST_NOW", NOW.to_string())
        .assert()
        .success();
    let later = (NOW + 5).to_string();
    w.cmd("cache-batch")
        .args(["--read", "a", "missing", "short", "b"])
        .env("FFKIT_TEST_NOW", &later)
        .assert()
        .success()
        .stdout("a:1\nb:2\n");
    w.link("cache-batch")
        .arg("--read")
        .write_stdin("b\na\n")
        .env("FFKIT_TEST_NOW", &later)
        .assert()
        .success()
        .stdout("b:2\na:1\n");
    w.cmd("cache-batch")
        .args(["--read", "--format", "jsonl", "a"])
        .env("FFKIT_TEST_NOW", &later)
        .assert()
        .stdout("{\"key\":\"a\",\"value\":\"1\"}\n");
    w.cmd("cache-batch")
        .args(["--read", "../x"])
        .assert()
        .code(2);
}

#[test]
fn a_key_repeated_in_a_batch_keeps_its_last_value() {
    let w = World::new();
    w.cmd("cache-batch")
        .write_stdin("k:first\nk:second\n")
        .assert()
        .success();
    w.cmd("cache-read").arg("k").assert().stdout("second");
    w.assert_exact();
}

#[test]
fn malformed_batch_lines_stop_the_batch_before_anything_is_written() {
    let w = seeded();
    for (what, input) in [
        ("no colon", &b"good:1\nnocolon\n"[..]),
        ("key only", b"good:1\nkeyonly\n"),
        ("bad key second", b"good:1\n.x:2\n"),
        ("CRLF no colon", b"good:1\r\nbad\r\n"),
    ] {
        let out = check(&w, what, w.cmd("cache-batch"), input, 2, 1);
        assert!(
            stderr_of(&out).contains("line 2"),
            "{what}: {}",
            stderr_of(&out)
        );
        assert!(!w.cache().join("good").exists(), "{what}: partial batch");
    }
    for input in [
        &b"{\"key\":\"good\",\"value\":\"1\"}\n{\"key\":\"a\"\n"[..],
        b"{\"key\":\"good\",\"value\":\"1\"}\nnot json\n",
        b"{\"key\":\"good\",\"value\":\"1\"}\n{\"key\":\"x\",\"value\":1}\n",
        b"{\"key\":\"good\",\"value\":\"1\"}\n{\"key\":\"x\",\"value\":\"\xff\"}\n",
        b"{\"key\":\"good\",\"value\":\"1\"}\n[1,2]\n",
        b"{\"key\":\"good\",\"value\":\"1\"}\n{\"key\":\"x\",\"value\":\"v\",\"extra\":1}\n",
    ] {
        let mut c2 = w.cmd("cache-batch");
        c2.args(["--format", "jsonl"]);
        let out = check(&w, "bad jsonl", c2, input, 2, 1);
        assert!(stderr_of(&out).contains("line 2"), "{}", stderr_of(&out));
        assert!(!w.cache().join("good").exists(), "partial jsonl batch");
    }
    // --keep-going writes the good lines, one stderr line per bad one, exit 2.
    let mut c = w.cmd("cache-batch");
    c.arg("--keep-going");
    check(&w, "keep-going", c, b"good:1\nnocolon\n", 2, 1);
    assert_eq!(fs::read(w.cache().join("good")).unwrap(), b"1");
}

#[test]
fn batch_line_edge_cases_are_written_exactly() {
    let w = seeded();
    // A key with an empty value; CRLF (one trailing CR is removed, a second
    // stays); a value with colons and a NUL byte.
    check(
        &w,
        "edge lines",
        w.cmd("cache-batch"),
        b"empty:\r\ncrlf:v\r\ncrcr:v\r\r\ncolons:a:b:c\nnul:x\0y\n\n\n",
        0,
        0,
    );
    let read = |k: &str| fs::read(w.cache().join(k)).unwrap();
    assert_eq!(read("empty"), b"");
    assert_eq!(read("crlf"), b"v");
    assert_eq!(read("crcr"), b"v\r");
    assert_eq!(read("colons"), b"a:b:c");
    assert_eq!(read("nul"), b"x\0y");
    let out = check(
        &w,
        "batch read",
        batch_read(&w),
        b"crlf\r\ncolons\nmissing\n",
        0,
        0,
    );
    assert_eq!(out.stdout, b"crlf:v\ncolons:a:b:c\n");
}

#[test]
fn a_100_mb_batch_line_is_refused_or_written_whole() {
    let w = seeded();
    let mut big = vec![b'x'; 100 << 20];
    big.push(b'\n');
    let out = check(
        &w,
        "100 MB line without ':'",
        w.cmd("cache-batch"),
        &big,
        2,
        1,
    );
    assert!(stderr_of(&out).len() < 300, "the line is not echoed");
    big.splice(0..0, b"big:".iter().copied());
    check(&w, "100 MB value", w.cmd("cache-batch"), &big, 0, 0);
    assert_eq!(
        fs::metadata(w.cache().join("big")).unwrap().len(),
        100 << 20
    );
}

// ---- cache-evict --------------------------------------------------------------

/// Writes entries a..e, each used at NOW + i*100 (so a is least recent).
fn aged_world() -> World {
    let w = World::new();
    for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        w.cmd("cache-write")
            .args([k, "0123456789"])
            .env("FFKIT_TEST_NOW", (NOW + i as i64 * 100).to_string())
            .assert()
            .success();
    }
    w
}

fn evict_json(w: &World, args: &[&str], now: i64) -> Json {
    let out = w
        .cmd("cache-evict")
        .args(args)
        .arg("--json")
        .env("FFKIT_TEST_NOW", now.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    json(&out.stdout)
}

fn removed_keys(j: &Json) -> Vec<String> {
    j["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn max_bytes_evicts_least_recently_used_first_and_is_a_hard_limit() {
    let w = aged_world();
    let per_entry = oracle(&w.cache()).0 / 5;
    // Using "b" makes "a" and "c" the two least recent.
    w.cmd("cache-read")
        .arg("b")
        .env("FFKIT_TEST_NOW", (NOW + 1000).to_string())
        .assert()
        .success();
    let limit = per_entry * 3;
    let j = evict_json(&w, &["--max-bytes", &limit.to_string()], NOW + 1000);
    assert_eq!(removed_keys(&j), ["a", "c"]);
    assert!(
        j["removed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["reason"] == "lru")
    );
    assert!(oracle(&w.cache()).0 <= limit);
    w.assert_exact();
}

#[test]
fn expired_entries_go_before_lru_ones() {
    let w = aged_world();
    w.cmd("cache-write")
        .args(["z", "0123456789", "--ttl", "10"])
        .env("FFKIT_TEST_NOW", (NOW + 900).to_string())
        .assert()
        .success();
    let per_entry = oracle(&w.cache()).0 / 6;
    let j = evict_json(
        &w,
        &["--max-bytes", &(per_entry * 4).to_string()],
        NOW + 1000,
    );
    assert_eq!(removed_keys(&j), ["z", "a"]);
    assert_eq!(j["removed"][0]["reason"], "expired");
    w.assert_exact();
}

#[test]
fn expired_older_than_all_and_dry_run() {
    let w = aged_world();
    w.cmd("cache-write")
        .args(["t", "v", "--ttl", "5"])
        .env("FFKIT_TEST_NOW", NOW.to_string())
        .assert()
        .success();
    let j = evict_json(&w, &["--expired", "--dry-run"], NOW + 1000);
    assert_eq!(removed_keys(&j), ["t"]);
    assert_eq!(j["dry_run"], true);
    assert!(w.cache().join("t").exists(), "dry run removes nothing");
    w.cmd("cache-evict")
        .args(["--expired", "--dry-run"])
        .env("FFKIT_TEST_NOW", (NOW + 1000).to_string())
        .assert()
        .stdout(predicate::str::contains("would evict t ("));
    assert_eq!(
        removed_keys(&evict_json(&w, &["--expired"], NOW + 1000)),
        ["t"]
    );
    // Created at NOW..NOW+400; older than 250 s at NOW+500 means created <= NOW+250.
    assert_eq!(
        removed_keys(&evict_json(&w, &["--older-than", "250s"], NOW + 500)),
        ["a", "b", "c"]
    );
    w.link("cache-evict")
        .arg("--all")
        .assert()
        .success()
        .stdout("");
    assert_eq!(oracle(&w.cache()), (0, 0));
    w.assert_exact();
}

#[test]
fn evict_needs_a_policy_and_valid_values() {
    let w = World::new();
    w.cmd("cache-evict")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nothing to evict"));
    // Bad values: `bad_ttls_durations_and_sizes_exit_2`.
    w.cmd("cache-evict")
        .args(["--max-bytes", "100M"])
        .assert()
        .success();
    w.cmd("cache-evict")
        .args(["--max-bytes", "104857600"])
        .assert()
        .success();
}

// ---- where the cache lives, multicall -------------------------------------------

#[test]
fn cache_dir_resolution_order() {
    let w = World::new();
    let repo = w.path().join("repo");
    fs::create_dir_all(repo.join(".git")).unwrap();
    fs::create_dir_all(repo.join("sub/deeper")).unwrap();
    let run = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut c = w.cmd("cache-write");
        c.env_remove("FFKIT_CACHE_DIR")
            .current_dir(repo.join("sub/deeper"));
        for (k, v) in envs {
            c.env(k, v);
        }
        c.args(extra).args(["k", "v"]).assert().success();
    };
    let dir_flag = w.path().join("flag");
    run(
        &[("FFKIT_CACHE_DIR", "/nonexistent/never")],
        &["--dir", dir_flag.to_str().unwrap()],
    );
    assert!(dir_flag.join("k").exists());
    let env_dir = w.path().join("envdir");
    run(
        &[
            ("FFKIT_CACHE_DIR", env_dir.to_str().unwrap()),
            ("FLOWFORGE_DEVELOPER", "alice"),
        ],
        &[],
    );
    assert!(env_dir.join("k").exists());
    run(&[("FLOWFORGE_DEVELOPER", "alice")], &[]);
    assert!(repo.join(".flowforge/dev-alice/cache/k").exists());
    let xdg = w.path().join("xdg");
    run(&[("XDG_CACHE_HOME", xdg.to_str().unwrap())], &[]);
    assert!(xdg.join("ffkit/k").exists());
    run(&[], &[]);
    assert!(w.path().join("home/.cache/ffkit/k").exists());
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&w.path().join("home/.cache/ffkit")), 0o700);
    assert_eq!(mode(&w.path().join("home/.cache/ffkit/k")), 0o600);
}

/// Descriptors 0-2 closed by the caller are reopened on /dev/null at
/// start-up (`cli::startup`, src/main.rs): a file ffkit opens never becomes
/// its stdout, and the commands it runs inherit all three on /dev/null.
#[test]
fn closed_standard_descriptors_are_reopened_on_dev_null() {
    let w = World::new();
    w.write("k", "value");
    let script = r#"
"$FF" cache-write k2 fresh <&- >&- 2>&- || exit 11
"$FF" cache-read k <&- >&- 2>&- || exit 12
"$FF" lock-acquire L -- sh -c 'for f in 0 1 2; do [ "$(readlink /proc/$$/fd/$f)" = /dev/null ] || exit 1; done' <&- >&- 2>&- || exit 13
echo ok"#;
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    let out = c
        .env("FF", bin())
        .env("FFKIT_LOCK_DIR", w.path().join("locks"))
        .args(["-c", script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "status {:?}: {}",
        out.status,
        stderr_of(&out)
    );
    assert_eq!(fs::read(w.cache().join("k")).unwrap(), b"value");
    assert_eq!(fs::read(w.cache().join("k2")).unwrap(), b"fresh");
    w.assert_exact();
}

#[test]
fn multicall_list_version_help_and_renamed_binary() {
    let w = World::new();
    let out = Command::new(bin()).arg("--list").output().unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    for a in [
        "cache-size",
        "cache-write",
        "cache-read",
        "cache-batch",
        "cache-evict",
    ] {
        assert!(list.lines().any(|l| l == a), "{list}");
    }
    Command::new(bin())
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("ffkit "));
    w.link("cache-size")
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("cache-size "));
    w.cmd("cache-size")
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Usage: ffkit cache-size"));
    w.link("cache-size")
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Usage: cache-size"));
    let renamed = w.path().join("my-ffkit");
    fs::copy(bin(), &renamed).unwrap();
    // Another test's fork may briefly hold the copy's write descriptor
    // (ETXTBSY); retry until the copy can be executed.
    let out = (0..100)
        .find_map(|_| {
            let mut c = Command::new(&renamed);
            w.isolate(&mut c);
            match c.args(["cache-write", "k", "v"]).output() {
                Err(e) if e.raw_os_error() == Some(26) => {
                    thread::sleep(Duration::from_millis(20));
                    None
                }
                r => Some(r.unwrap()),
            }
        })
        .expect("renamed binary runs");
    assert!(out.status.success());
    w.cmd("cache-read").arg("k").assert().stdout("v");
    Command::new(bin())
        .arg("no-such-applet")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no-such-applet"));
    w.cmd("cache-size").arg("--bogus").assert().code(2).stderr(
        predicate::str::contains("--bogus")
            .and(predicate::function(|s: &str| s.lines().count() == 1)),
    );
}

// ---- exactness under concurrency and crashes ------------------------------------

fn spawn_op(w: &World, rng: &mut fastrand::Rng) -> Command {
    let key = format!("k{}", rng.u32(0..40));
    match rng.u32(0..10) {
        0..=4 => {
            let mut c = w.cmd("cache-write");
            let v = "x".repeat(rng.usize(0..3000));
            c.args([
                key.as_str(),
                v.as_str(),
                "--ttl",
                &rng.u32(0..3).to_string(),
            ]);
            c
        }
        5..=6 => {
            let mut c = w.cmd("cache-read");
            c.args(["-q", &key]);
            c
        }
        7 => {
            let mut c = w.cmd("cache-batch");
            c.arg("--file").arg(w.path().join("batch.txt"));
            c
        }
        _ => {
            let mut c = w.cmd("cache-evict");
            c.args(["--max-bytes", &rng.u32(0..40_000).to_string()]);
            if rng.bool() {
                c.arg("--expired");
            }
            c
        }
    }
}

fn batch_file(w: &World, n: usize) {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("b{}:{}\n", i % 60, "y".repeat(i * 7 % 500)));
    }
    fs::write(w.path().join("batch.txt"), s).unwrap();
}

#[test]
fn sixteen_processes_of_random_operations_keep_the_index_exact() {
    let w = World::new();
    batch_file(&w, 40);
    thread::scope(|s| {
        for t in 0..16u64 {
            let w = &w;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                // 1,600 operations in all, for the suite's four minutes:
                // 4,800 took 36 s and found nothing 2,400 did not.
                for _ in 0..100 {
                    let out = spawn_op(w, &mut rng)
                        .stdout(Stdio::null())
                        .output()
                        .unwrap();
                    let code = out.status.code();
                    assert!(matches!(code, Some(0 | 4)), "{code:?}: {}", stderr_of(&out));
                    assert!(!stderr_of(&out).contains("panicked"));
                }
            });
        }
    });
    w.assert_exact();
    w.cmd("cache-size").arg("--verify").assert().success();
}

#[test]
fn sigkill_at_random_moments_never_leaves_the_index_wrong() {
    let w = World::new();
    batch_file(&w, 3000);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut kills = 0;
    let mut round = 0;
    while kills < 60 {
        round += 1;
        let mut children: Vec<_> = (0..4)
            .map(|_| {
                spawn_op(&w, &mut rng)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        thread::sleep(Duration::from_micros(rng.u64(0..4000)));
        for c in &mut children {
            if c.try_wait().unwrap().is_none() {
                let _ = c.kill();
                kills += 1;
            }
            c.wait().unwrap();
        }
        assert!(round < 2000, "could not kill enough processes mid-run");
    }
    // The next call repairs whatever was in flight. The oracle is taken
    // only after it: a journal left by the last kill names installs still
    // pending, and rolling it forward changes what is on disk.
    let repaired = w.cmd("cache-size").output().unwrap();
    assert!(repaired.status.success(), "{}", stderr_of(&repaired));
    assert!(!w.cache().join(".journal").exists());
    w.assert_exact();
    w.cmd("cache-size").arg("--verify").assert().success();
}

#[test]
fn readers_racing_overwrites_see_only_complete_values() {
    let w = World::new();
    let values: Vec<String> = (0..30)
        .map(|i| format!("{i}:").repeat(1 + i * 997 % 9000))
        .collect();
    w.write("hot", &values[0]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        let writer = s.spawn(|| {
            for v in values.iter().cycle().take(120) {
                w.cmd("cache-write")
                    .arg("hot")
                    .arg("-")
                    .write_stdin(v.clone())
                    .assert()
                    .success();
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        for _ in 0..3 {
            s.spawn(|| {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) || seen == 0 {
                    let out = w.cmd("cache-read").arg("hot").output().unwrap();
                    assert!(out.status.success(), "{}", stderr_of(&out));
                    let got = String::from_utf8(out.stdout).unwrap();
                    assert!(values.contains(&got), "torn read of {} bytes", got.len());
                    seen += 1;
                }
            });
        }
        writer.join().unwrap();
    });
    w.assert_exact();
}

#[test]
fn concurrent_enforcers_never_over_evict() {
    let w = World::new();
    let mut s = String::new();
    for i in 0..200 {
        s.push_str(&format!("e{i:03}:{}\n", "z".repeat(100)));
    }
    w.cmd("cache-batch").write_stdin(s).assert().success();
    let before = oracle(&w.cache()).0;
    let per_entry = before / 200;
    let limit = before / 2;
    thread::scope(|sc| {
        for _ in 0..6 {
            sc.spawn(|| {
                w.cmd("cache-evict")
                    .args(["--max-bytes", &limit.to_string()])
                    .assert()
                    .success()
            });
        }
    });
    let after = oracle(&w.cache()).0;
    assert!(after <= limit, "hard limit");
    assert!(
        before - after <= (before - limit) + per_entry + 1,
        "over-evicted: removed {}",
        before - after
    );
    w.assert_exact();
}

/// A cache an older ffkit left keeps its entry count in `.entry-count`
/// (and `.lock` empty): it is read as it is (no walk: a count made wrong
/// on purpose here is taken), the first change folds it into the record
/// at the start of `.lock` and removes the file, and `--verify` / `--fix`
/// see and mend the drift exactly.
#[test]
fn an_older_entry_count_file_is_folded_into_the_lock_record() {
    let w = World::new();
    w.write("a", "1");
    w.write("b", "22");
    let dir = w.cache();
    let (bytes, entries) = oracle(&dir);
    fs::write(dir.join(".lock"), b"").unwrap();
    fs::write(dir.join(".entry-count"), format!("{}\n", entries + 5)).unwrap();
    let out = w.cmd("cache-size").arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stderr.is_empty(), "no rebuild: {}", stderr_of(&out));
    let j: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["entries"], entries + 5, "{j}");
    assert_eq!(j["bytes"], bytes, "{j}");
    let out = w.cmd("cache-write").args(["c", "333"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(!dir.join(".entry-count").exists(), "not folded");
    assert_eq!(entry_count(&dir), Some(entries + 6));
    assert!(!journal_left(&dir));
    let mut c = w.cmd("cache-size");
    c.arg("--verify");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", stderr_of(&out));
    let mut c = w.cmd("cache-size");
    c.args(["--verify", "--fix"]);
    c.output().unwrap();
    w.assert_exact();
}

/// A writer killed after journaling and writing its temp files: the next
/// call rolls the change forward, whether the journal is where ffkit writes
/// it now (in `.lock`, after the entry-count record), at the start of a
/// `.lock` without a record, or a `.journal` file (older ffkits').
#[test]
fn a_journal_left_by_a_crash_is_rolled_forward() {
    for place in [".lock after its record", ".lock", ".journal"] {
        journal_left_in_is_rolled_forward(place);
    }
}

fn journal_left_in_is_rolled_forward(place: &str) {
    let w = World::new();
    w.write("keep", "1");
    w.write("gone", "22");
    let idx_before = w.size();
    // Simulate a writer killed after journaling and writing its temp files.
    let dir = w.cache();
    fs::write(dir.join(".tmp-999999-0"), "new value").unwrap();
    let meta = serde_json::json!({"key":"new","created_at":NOW,"expires_at":null,"ttl":0,"size":9});
    fs::write(dir.join(".tmp-999999-1"), format!("{meta}\n")).unwrap();
    let gone_bytes = fs::metadata(dir.join("gone")).unwrap().len()
        + fs::metadata(dir.join("gone.meta")).unwrap().len();
    let journal = serde_json::json!({
        "before": {"bytes": idx_before, "entries": 2},
        "records": [
            {"key":"new","old_bytes":0,"old_entry":false,"value_tmp":".tmp-999999-0","meta_tmp":".tmp-999999-1"},
            {"key":"gone","old_bytes":gone_bytes,"old_entry":true,"value_tmp":null,"meta_tmp":null}
        ]
    });
    match place.strip_suffix(" after its record") {
        Some(file) => {
            assert_eq!(entry_count(&dir), Some(2), "{place}");
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(dir.join(file))
                .unwrap();
            f.write_all(journal.to_string().as_bytes()).unwrap();
        }
        None => fs::write(dir.join(place), journal.to_string()).unwrap(),
    }
    w.cmd("cache-read")
        .arg("new")
        .assert()
        .success()
        .stdout("new value");
    assert!(!dir.join("gone").exists(), "{place}");
    assert!(!journal_left(&dir), "{place}");
    w.assert_exact();
}

/// A writer of a new key killed between linking its unnamed value and its
/// sidecar (simulated: the value at its name, the journal in `.lock`
/// saying both temps were unnamed) is taken back by the next call: the
/// half-linked value (the journal's inode) is removed, the key is missing
/// as before the write, and the index is exact. A file at the name with
/// another inode is not ours and stays.
#[test]
fn a_half_linked_new_key_is_taken_back_after_a_crash() {
    use std::os::unix::fs::MetadataExt;
    for ours in [true, false] {
        let w = World::new();
        w.write("keep", "1");
        let dir = w.cache();
        let idx_before = w.size();
        fs::write(dir.join("new"), "new value").unwrap();
        let ino = fs::metadata(dir.join("new")).unwrap().ino();
        let journal = serde_json::json!({
            "before": {"bytes": idx_before, "entries": 1},
            "records": [
                {"key":"new","old_bytes":0,"old_entry":false,
                 "value_tmp":".tmp-unnamed","value_ino": if ours { ino } else { ino + 1 },
                 "meta_tmp":".tmp-unnamed","meta_ino":ino + 2,"unnamed":true}
            ]
        });
        assert_eq!(entry_count(&dir), Some(1));
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.join(".lock"))
            .unwrap();
        f.write_all(journal.to_string().as_bytes()).unwrap();
        let out = w.cmd("cache-read").arg("new").output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(4),
            "ours={ours}: {}",
            stderr_of(&out)
        );
        assert_eq!(dir.join("new").exists(), !ours, "ours={ours}");
        assert!(!journal_left(&dir), "ours={ours}");
        w.assert_exact();
    }
}

/// Writers of new keys SIGKILLed at random moments leave no temp file of
/// a value or sidecar (theirs are unnamed: the kernel frees them with the
/// process) and never half an entry (a value without its sidecar, or the
/// reverse); the index is exact after the next call. Only the index's own
/// named temp (a number, or empty) can be left, for the next walk to remove.
#[test]
fn writers_of_new_keys_killed_at_random_leave_no_temp_and_no_half_entry() {
    let w = World::new();
    w.write("seed", "1");
    let value = "v".repeat(5000);
    let mut rng = fastrand::Rng::with_seed(27);
    let (mut kills, mut round) = (0, 0);
    while kills < 40 {
        round += 1;
        let mut children: Vec<_> = (0..4)
            .map(|i| {
                w.cmd("cache-write")
                    .args([format!("n{round}x{i}").as_str(), value.as_str()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        thread::sleep(Duration::from_micros(rng.u64(0..4000)));
        for c in &mut children {
            if c.try_wait().unwrap().is_none() {
                let _ = c.kill();
                kills += 1;
            }
            c.wait().unwrap();
        }
        assert!(round < 2000, "could not kill enough writers mid-run");
    }
    let repaired = w.cmd("cache-size").output().unwrap();
    assert!(repaired.status.success(), "{}", stderr_of(&repaired));
    let dir = w.cache();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            let t = fs::read_to_string(e.path()).unwrap_or_default();
            // The index's temp: a number, or empty (killed before its write).
            assert!(
                t.is_empty() || t.trim().parse::<u64>().is_ok(),
                "a value or sidecar temp left: {name}: {:?}",
                &t[..t.len().min(40)]
            );
        } else if !name.starts_with('.') {
            let pair = match name.strip_suffix(".meta") {
                Some(k) => k.to_string(),
                None => format!("{name}.meta"),
            };
            assert!(dir.join(&pair).exists(), "{name} without {pair}");
        }
    }
    w.assert_exact();
    w.cmd("cache-size").arg("--verify").assert().success();
}

/// A write of a new key creates two files, the floor's two (value and
/// sidecar): its journal and the entry count go into the `.lock` it holds,
/// not into new files (an inode allocation is the costliest step of a
/// write on ext4; the count's own `.entry-count` made a fourth), and
/// `.size-index` is replaced by its spare, which the first write made
/// (the next test). The value and sidecar are unnamed (`O_TMPFILE`), so no
/// named temp file is made at all; with `O_TMPFILE` refused (the hidden
/// `FFKIT_TEST_NO_TMPFILE`) both are named temps, as before. Traced with
/// strace.
#[test]
fn a_write_of_a_new_key_creates_no_journal_file() {
    if !need("strace", "the system calls of a write") {
        return;
    }
    for (named, unnamed, no_tmpfile) in [(0, 2, false), (2, 0, true)] {
        let w = World::new();
        w.write("old", "v");
        let t = trace_write(&w, no_tmpfile, "trace=%file", "new");
        assert_created_excl(&t, named);
        let tmpfiles: Vec<&str> = t
            .lines()
            .filter(|l| l.contains("O_TMPFILE") && !l.contains("= -1"))
            .collect();
        assert_eq!(tmpfiles.len(), unnamed, "{tmpfiles:#?}");
        assert!(!t.contains("/.journal\", O_WRONLY"), "{t}");
        assert!(!t.contains(".entry-count"), "{t}");
        assert_wrote_new(&w);
    }
}

/// strace (`-e SET`) of `ffkit cache-write KEY value` in `w`, on the
/// unnamed-temp path or (`no_tmpfile`) the named one; the trace.
fn trace_write(w: &World, no_tmpfile: bool, set: &str, key: &str) -> String {
    let log = w.path().join(format!("trace-{key}"));
    let mut c = Command::new("strace");
    w.isolate(&mut c);
    if no_tmpfile {
        c.env("FFKIT_TEST_NO_TMPFILE", "1");
    }
    c.args(["-f", "-qq", "-o"])
        .arg(&log)
        .args(["-e", set, "--"])
        .arg(bin())
        .args(["cache-write", key, "value"]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    fs::read_to_string(&log).unwrap()
}

/// After a traced `cache-write new value` ([`trace_write`]): no journal
/// left, the index exact, and the value reads back.
fn assert_wrote_new(w: &World) {
    assert!(!journal_left(&w.cache()));
    w.assert_exact();
    w.cmd("cache-read")
        .arg("new")
        .assert()
        .success()
        .stdout("value");
}

/// The trace made exactly `named` files with O_CREAT|O_EXCL.
fn assert_created_excl(t: &str, named: usize) {
    let created: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("O_CREAT") && l.contains("O_EXCL") && !l.contains("= -1"))
        .collect();
    assert_eq!(created.len(), named, "{created:#?}");
}

/// Once a cache has its spare (`.size-index.spare`: the index the first
/// write's exchange displaced, kept instead of unlinked), a write of a new key
/// creates no file for the index at all: the spare is rewritten in place
/// while nobody has it open (a lease) and exchanged with `.size-index`, so
/// the two inodes trade names and none is created or freed (the old way
/// made, exchanged and unlinked a temp file per write: one inode created
/// and one freed, the dearest steps left in a write on ext4). The only
/// files created are the value and the sidecar, the floor's two. Traced
/// with strace, on both temp-file paths.
#[test]
fn a_write_of_a_new_key_creates_no_file_for_the_index_once_the_spare_is_there() {
    use std::os::unix::fs::MetadataExt;
    if !need("strace", "the system calls of a write") {
        return;
    }
    for (named, no_tmpfile) in [(0, false), (2, true)] {
        let w = World::new();
        w.write("a", "v");
        w.write("b", "vv");
        let spare = w.cache().join(".size-index.spare");
        let index = w.cache().join(".size-index");
        let ino = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
        let before = [ino(&index), ino(&spare)];
        let t = trace_write(&w, no_tmpfile, "trace=%file,%desc", "new");
        assert_created_excl(&t, named);
        assert!(!t.contains("unlink"), "nothing is unlinked:\n{t}");
        assert!(
            t.lines()
                .any(|l| l.contains("F_SETLEASE, F_WRLCK") && l.ends_with("= 0")),
            "the spare was leased:\n{t}"
        );
        // The two files traded names.
        assert_eq!([ino(&spare), ino(&index)], before);
        assert_wrote_new(&w);
    }
}

/// The spare is the index of two writes ago: a reader that opened
/// `.size-index` then (old scripts `cat` it, without the lock) may still
/// hold it when it is the spare again. It is then never written: the lease
/// that must be had first is refused while anyone has the file open, and
/// the write goes the old way (a new file). The reader reads the number it
/// opened, whole, however many writes happen meanwhile, and the writes
/// reuse the spare again once it has let go. Real processes: a shell holds
/// the index on a descriptor and `cat`s it on a cue.
#[test]
fn a_reader_holding_the_size_index_open_reads_its_number_whole_across_writes() {
    let w = World::new();
    w.write("a", "v");
    w.write("b", "vv");
    let index = w.cache().join(".size-index");
    let held = fs::read_to_string(&index).unwrap();
    let ready = w.path().join("ready");
    let go = w.path().join("go");
    let reader = Command::new("sh")
        .args([
            "-c",
            r#"exec 3<"$1"; : >"$2"; while [ ! -e "$3" ]; do sleep 0.01; done; cat <&3"#,
            "sh",
        ])
        .arg(&index)
        .arg(&ready)
        .arg(&go)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    until("the reader to open the index", || ready.exists());
    for i in 0..6 {
        w.write(&format!("k{i}"), &"x".repeat(10 + i * 37));
        w.assert_exact();
    }
    fs::write(&go, b"").unwrap();
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), held);
    // Let go of: the spare is rewritten again (no file created).
    w.write("c", "v");
    let log = w.path().join("trace");
    if need("strace", "the spare reused after the reader") {
        let mut c = Command::new("strace");
        w.isolate(&mut c);
        c.args(["-f", "-qq", "-o"])
            .arg(&log)
            .args(["-e", "trace=%file", "--"])
            .arg(bin())
            .args(["cache-write", "d", "value"]);
        assert!(c.output().unwrap().status.success());
        let t = fs::read_to_string(&log).unwrap();
        assert!(!t.contains(".tmp-"), "{t}");
    }
    w.assert_exact();
    w.cmd("cache-size").arg("--verify").assert().success();
}

/// `--verify` removes the temp files of dead writers (docs/cache.md) and
/// leaves a live writer's; on a dir with nothing in it (new, or emptied by
/// hand, index files included) it answers 0, not drift.
#[test]
fn verify_removes_dead_writers_temps_keeps_live_ones_and_an_empty_dir_is_0() {
    let w = World::new();
    fs::create_dir(w.cache()).unwrap();
    fs::set_permissions(
        w.cache(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let empty = |what: &str, args: &[&str]| {
        let out = w.cmd("cache-size").args(args).output().unwrap();
        assert!(out.status.success(), "{what}: {}", stderr_of(&out));
        assert!(out.stderr.is_empty(), "{what}: {}", stderr_of(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(empty("a new dir", &["--verify"]), "0\n");
    w.write("k", "v");
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let mut live = Command::new("sleep").arg("600").spawn().unwrap();
    let dead_tmp = w.cache().join(format!(".tmp-{dead_pid}-0"));
    let live_tmp = w.cache().join(format!(".tmp-{}-0", live.id()));
    fs::write(&dead_tmp, "half a value").unwrap();
    fs::write(&live_tmp, "in flight").unwrap();
    let out = w.cmd("cache-size").arg("--verify").output().unwrap();
    let live_kept = live_tmp.exists();
    let _ = live.kill();
    let _ = live.wait();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(!dead_tmp.exists(), "a dead writer's temp is left");
    assert!(live_kept, "a live writer's temp was removed");
    // Emptied by hand, index files included: 0 again, not drift.
    for f in fs::read_dir(w.cache()).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let said = empty("an emptied dir", &["--verify", "--json"]);
    assert!(said.contains("\"bytes\":0"), "{said}");
}

/// A walk that cleans up temps (`--verify`, an eviction) probes each writer
/// once, not each of its temps, and stats no temp of a writer that is gone:
/// a batch in flight owns two temps per line, and an eviction walks up to
/// eight times (it sent a kill(2) and a stat per temp per walk; the probe
/// is now one read of `/proc/PID/stat`, a kill(2) only without it). The
/// outcome is the same: the dead writer's temps go, the live one's stay.
/// Traced with strace.
#[test]
fn a_walk_probes_each_writer_once_not_each_of_its_temps() {
    if !need("strace", "the system calls of a walk") {
        return;
    }
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    // Our own child, killed however the test ends.
    struct Live(std::process::Child);
    impl Drop for Live {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let live = Live(Command::new("sleep").arg("600").spawn().unwrap());
    let live_pid = live.0.id();
    let temps = 100;
    for (what, args) in [
        ("cache-size", &["--verify"][..]),
        ("cache-evict", &["--max-bytes", "0"][..]),
    ] {
        let w = seeded();
        let name = |pid: u32, i: usize| w.cache().join(format!(".tmp-{pid}-{i}"));
        for i in 0..temps {
            fs::write(name(dead_pid, i), "half a value").unwrap();
            fs::write(name(live_pid, i), "in flight").unwrap();
        }
        let log = w.path().join("trace");
        let mut c = Command::new("strace");
        w.isolate(&mut c);
        c.args(["-f", "-qq", "-o"])
            .arg(&log)
            .args(["-e", "trace=kill,%stat,open,openat", "--"])
            .arg(bin())
            .arg(what)
            .args(args);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{what}: {}", stderr_of(&out));
        let t = fs::read_to_string(&log).unwrap();
        // The probe reads `/proc/PID/stat` (a zombie is gone too), with a
        // kill(0) only where that is missing: at most one of each per writer.
        for pid in [dead_pid, live_pid] {
            let count = |needle: &str| t.lines().filter(|l| l.contains(needle)).count();
            let opens = count(&format!("/proc/{pid}/stat\""));
            let kills = count(&format!("kill({pid},"));
            assert!(
                opens <= 1 && kills <= 1 && opens + kills >= 1,
                "{what}: one probe per writer ({pid}):\n{t}"
            );
        }
        let dead_prefix = format!(".tmp-{dead_pid}-");
        assert!(
            !t.lines()
                .any(|l| l.contains("stat") && l.contains(&dead_prefix)),
            "{what}: a gone writer's temp was stat'ed:\n{t}"
        );
        for i in 0..temps {
            assert!(
                !name(dead_pid, i).exists(),
                "{what}: a dead writer's temp is left"
            );
            assert!(
                name(live_pid, i).exists(),
                "{what}: a live writer's temp was removed"
            );
        }
    }
    drop(live);
}

#[test]
fn a_damaged_journal_is_repaired_once_and_removed() {
    let w = seeded();
    fs::write(w.cache().join(".journal"), b"garbage").unwrap();
    let out = check(&w, "damaged journal", w.cmd("cache-size"), b"", 0, 1);
    assert!(stderr_of(&out).contains("journal"), "{}", stderr_of(&out));
    assert!(!w.cache().join(".journal").exists());
    check(&w, "after repair", w.cmd("cache-size"), b"", 0, 0);
}

#[test]
fn writes_and_reads_stream_large_values() {
    let w = World::new();
    let mut child = w
        .cmd("cache-write")
        .arg("large")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let chunk = vec![b'q'; 1 << 20];
    for _ in 0..8 {
        stdin.write_all(&chunk).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let out = w.cmd("cache-read").arg("large").output().unwrap();
    assert_eq!(out.stdout.len(), 8 << 20);
    w.assert_exact();
}

// ---- signals and closed pipes ------------------------------------------------

/// Signals a child this test spawned and has not yet waited for (so its pid
/// cannot have been reused).
fn signal(child: &std::process::Child, sig: Signal) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a child's pid");
    rustix::process::kill_process(pid, sig).expect("signal the child");
}

/// `n` batch lines `keyI:` + up to 49 `v`s.
fn signal_batch(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("key{i}:{}\n", "v".repeat(i % 50)).into_bytes())
        .collect()
}

#[test]
fn sigint_and_sigterm_during_batches_and_evictions_leave_an_exact_index() {
    let w = World::new();
    let input = signal_batch(3000);
    let mut rng = fastrand::Rng::with_seed(8);
    let mut killed = 0;
    for round in 0..16 {
        let sig = if round % 2 == 0 {
            Signal::INT
        } else {
            Signal::TERM
        };
        let mut c = if round % 4 < 2 {
            w.cmd("cache-batch")
        } else {
            let mut c = w.cmd("cache-evict");
            c.args(["--max-bytes", &format!("{}", rng.u64(0..40_000))]);
            c
        };
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut si = child.stdin.take().unwrap();
        let data = input.clone();
        let feeder = std::thread::spawn(move || {
            let _ = si.write_all(&data);
        });
        std::thread::sleep(Duration::from_millis(rng.u64(2..60)));
        signal(&child, sig);
        let status = child.wait().unwrap();
        let _ = feeder.join();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!err.contains("panicked"), "{err}");
        if status.code().is_none() {
            killed += 1;
        }
        // The next call rolls any journal forward; the index is exact.
        let size = w.size();
        assert_eq!(size, oracle(&w.cache()).0, "round {round}");
        if w.cache().is_dir() {
            assert_index_exact(&w.cache(), &format!("round {round}"));
        } else {
            // Stopped (on a loaded machine) before it made the cache dir: a
            // size query never creates one, so there is no index to check.
            assert_eq!(size, 0, "round {round}");
        }
        w.cmd("cache-size").arg("--verify").assert().success();
    }
    // Killed writers leave temp files (dot-files, never counted); the next
    // walk (eviction, rebuild) removes those of dead processes. On a loaded
    // machine every run may be stopped before it made the cache dir (an
    // eviction never creates one): then there is nothing to leave behind.
    w.cmd("cache-evict").arg("--expired").assert().success();
    if w.cache().is_dir() {
        assert_no_temps(&w.cache(), "after the cleanup walk");
    }
    eprintln!("signals: {killed} of 16 runs were interrupted mid-way");
}

/// The second half of the signal test, in its own world so the two halves
/// run side by side: signals aimed at an eviction's commit. 1,000 entries
/// make the eviction long enough to aim at (the aim is calibrated on an
/// uninterrupted run) while each refill costs a third of the 3,000-line
/// batch above.
#[test]
fn sigint_and_sigterm_aimed_at_an_evictions_commit_leave_an_exact_index() {
    let w = World::new();
    let input = signal_batch(1000);
    // Evictions spend most of their time walking; aim the signals at the
    // commit by calibrating on one uninterrupted run.
    let mut batch = w.cmd("cache-batch");
    assert!(run_with_stdin(&mut batch, &input).status.success());
    let t0 = std::time::Instant::now();
    w.cmd("cache-evict")
        .args(["--max-bytes", "0"])
        .assert()
        .success();
    let full = t0.elapsed();
    let mut mid_commit = 0;
    // Four rounds spread over the second half of the run (where the commit
    // is), alternating the two signals.
    for round in 0..4u32 {
        let mut batch = w.cmd("cache-batch");
        assert!(run_with_stdin(&mut batch, &input).status.success());
        let mut child = w
            .cmd("cache-evict")
            .args(["--max-bytes", "0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(0.4 + 0.18 * f64::from(round)));
        signal(
            &child,
            if round % 2 == 0 {
                Signal::TERM
            } else {
                Signal::INT
            },
        );
        let status = child.wait().unwrap();
        if status.code().is_none() && journal_left(&w.cache()) {
            mid_commit += 1;
        }
        assert_eq!(w.size(), oracle(&w.cache()).0, "eviction round {round}");
        assert_index_exact(&w.cache(), &format!("eviction round {round}"));
        w.cmd("cache-size").arg("--verify").assert().success();
    }
    eprintln!("signals: {mid_commit} of 4 evictions were killed mid-commit (journal left)");
    w.cmd("cache-evict").arg("--expired").assert().success();
    assert_no_temps(&w.cache(), "after the cleanup walk");
}

#[test]
fn a_closed_stdout_pipe_exits_quietly() {
    let w = World::new();
    let mut input = Vec::new();
    let value = "x".repeat(200);
    for i in 0..2000 {
        input.extend_from_slice(format!("k{i}:{value}\n").as_bytes());
    }
    let mut c = w.cmd("cache-batch");
    assert!(run_with_stdin(&mut c, &input).status.success());
    let mut c = w.cmd("cache-write");
    c.arg("big");
    assert!(
        run_with_stdin(&mut c, &vec![b'z'; 4 << 20])
            .status
            .success()
    );
    let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
    for (what, args, head) in [
        (
            "batch --read | head -1",
            format!("cache-batch --read {}", keys.join(" ")),
            "head -1",
        ),
        (
            "batch --read --format jsonl | head -1",
            format!("cache-batch --read --format jsonl {}", keys.join(" ")),
            "head -1",
        ),
        (
            "read big | head -c1",
            "cache-read big".to_string(),
            "head -c1",
        ),
    ] {
        let (code, err) = pipeline(&w, &args, head);
        assert_eq!(code, 0, "{what}: {err}");
        assert!(err.is_empty(), "{what}: stderr {err:?}");
    }
}

/// A write of a new key installs each of its two files by one call: a
/// `linkat` of its unnamed temp file (`O_TMPFILE`), or, where that is
/// refused (`FFKIT_TEST_NO_TMPFILE`), one rename (`RENAME_NOREPLACE`: the
/// exchange used over an existing name fails with ENOENT on a new one,
/// then a plain rename followed), and does not `stat` them again once
/// installed (the commit knows their sizes). Traced with strace; an
/// overwrite is checked the same way (one exchange per file).
#[test]
fn a_new_key_is_installed_by_one_rename_per_file_and_not_measured_again() {
    if !need("strace", "the system calls of a write") {
        return;
    }
    for no_tmpfile in [false, true] {
        new_key_installs(no_tmpfile);
    }
}

fn new_key_installs(no_tmpfile: bool) {
    let w = World::new();
    w.write("old", "v");
    let new_call = if no_tmpfile {
        "RENAME_NOREPLACE"
    } else {
        "linkat("
    };
    for (key, call) in [("new", new_call), ("old", "RENAME_EXCHANGE")] {
        let t = trace_write(&w, no_tmpfile, "trace=%file,%stat", key);
        let names = [format!("/{key}\""), format!("/{key}.meta\"")];
        let on_entry = |l: &str| names.iter().any(|n| l.contains(n.as_str()));
        let renames: Vec<&str> = t
            .lines()
            .filter(|l| l.contains("rename") || l.contains("linkat("))
            .collect();
        assert!(
            renames.iter().all(|l| !l.contains("= -1")),
            "a failed rename or link: {renames:#?}"
        );
        let installs: Vec<&&str> = renames.iter().filter(|l| on_entry(l)).collect();
        assert_eq!(installs.len(), 2, "{renames:#?}");
        assert!(installs.iter().all(|l| l.contains(call)), "{installs:#?}");
        let measured: Vec<&str> = t
            .lines()
            .skip_while(|l| !(l.contains(call) && l.contains(names[1].as_str())))
            .filter(|l| l.contains("stat") && on_entry(l))
            .collect();
        assert!(measured.is_empty(), "stat after the install: {measured:#?}");
    }
    w.cmd("cache-read")
        .arg("new")
        .assert()
        .success()
        .stdout("value");
    w.assert_exact();
}

/// Issue 27's sixth pass on the write: a write of a new key puts the entry
/// count it will leave and its journal into `.lock` by one `pwrite` from
/// offset 0 (before, a second `pwrite` of the count followed the
/// installs), reads `.size-index` by an open and one read (no `fstat`: a
/// read that does not fill its buffer is the whole file), and links its
/// unnamed temp files by their descriptors (`AT_EMPTY_PATH`) where the
/// kernel allows it, not through `/proc`. Traced with strace; the index is
/// exact after it.
#[test]
fn a_new_key_writes_its_count_with_the_journal_and_reads_the_index_by_one_read() {
    if !need("strace", "the system calls of a write") {
        return;
    }
    let w = World::new();
    w.write("old", "v");
    let t = trace_write(&w, false, "trace=%file,%desc", "new");
    let fd_of = |name: &str| -> String {
        let open = t
            .lines()
            .find(|l| {
                l.contains(&format!("/{name}\"")) && l.contains("open") && !l.contains("= -1")
            })
            .unwrap_or_else(|| panic!("no open of {name}:\n{t}"));
        open.rsplit("= ").next().unwrap().trim().to_string()
    };
    let lock = fd_of(".lock");
    let pwrites: Vec<&str> = t
        .lines()
        .filter(|l| l.contains(&format!("pwrite64({lock}, ")))
        .collect();
    assert_eq!(pwrites.len(), 1, "one pwrite into .lock: {pwrites:#?}");
    assert!(
        pwrites[0].contains("\"entries=00000000000000000002\\n{") && pwrites[0].contains(", 0) = "),
        "the count after the write, then the journal, from offset 0: {}",
        pwrites[0]
    );
    let index = fd_of(".size-index");
    let after_open: Vec<&str> = t
        .lines()
        .skip_while(|l| !(l.contains("/.size-index\"") && l.contains("O_RDONLY")))
        .skip(1)
        .take_while(|l| !l.contains(&format!("close({index})")))
        .filter(|l| {
            l.contains(&format!("({index}, ")) && (l.contains("stat") || l.contains("read"))
        })
        .collect();
    assert!(
        after_open.len() == 1 && after_open[0].contains("read("),
        "one read of .size-index and no fstat: {after_open:#?}"
    );
    let links: Vec<&str> = t.lines().filter(|l| l.contains("linkat(")).collect();
    assert_eq!(links.len(), 2, "{links:#?}");
    if links.iter().all(|l| l.contains("AT_EMPTY_PATH")) {
        assert!(!t.contains("\"/proc/self/fd/"), "{t}");
    }
    assert_wrote_new(&w);
}

/// The cache applets answer alike on every backend, from one body: values
/// byte-exact, the same words for a miss and an expiry, batches all or
/// nothing, a verify without drift, and one eviction report (the Redis one
/// adds only `steps`, its script calls).
#[test]
fn cache_applets_answer_alike_on_every_backend() {
    for b in Backend::all() {
        let name = b.name();
        let w = World::new();
        let run = |applet: &str, args: &[&str], stdin: &[u8]| {
            let mut c = b.cmd(&w, applet);
            c.args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            child.wait_with_output().unwrap()
        };
        assert!(
            run("cache-write", &["a", "hello"], b"").status.success(),
            "{name}"
        );
        let o = run("cache-write", &["b", "-", "--ttl", "100"], b"bin\0ary\n");
        assert!(o.status.success(), "{name}: {}", stderr_of(&o));
        assert_eq!(
            run("cache-read", &["b"], b"").stdout,
            b"bin\0ary\n",
            "{name}"
        );
        // Expired, as seen 200 s later: exit 4 and one line saying when.
        let later = (jiff::Timestamp::now().as_second() + 200).to_string();
        let mut c = b.cmd(&w, "cache-read");
        let o = c.arg("b").env("FFKIT_TEST_NOW", &later).output().unwrap();
        assert_eq!(o.status.code(), Some(4), "{name}");
        assert!(
            stderr_of(&o).contains("b: expired at "),
            "{name}: {}",
            stderr_of(&o)
        );
        let o = run("cache-read", &["nope"], b"");
        assert_eq!(o.status.code(), Some(4), "{name}");
        assert!(
            stderr_of(&o).contains("nope: no such entry"),
            "{name}: {}",
            stderr_of(&o)
        );
        let o = run("cache-read", &["-q", "nope"], b"");
        assert_eq!(
            (o.status.code(), stderr_of(&o)),
            (Some(4), String::new()),
            "{name}"
        );
        // Batches are all or nothing.
        assert!(
            run("cache-batch", &[], b"x:1\ny:22\n").status.success(),
            "{name}"
        );
        assert_eq!(
            run("cache-batch", &[], b"z:1\nno colon\n").status.code(),
            Some(2),
            "{name}"
        );
        let o = run("cache-batch", &["--read", "x", "z", "y"], b"");
        assert_eq!(o.stdout, b"x:1\ny:22\n", "{name}");
        let o = run("cache-size", &["--verify", "--json"], b"");
        assert!(o.status.success(), "{name}: {}", stderr_of(&o));
        let v = json(&o.stdout);
        assert_eq!(v["source"], "walk", "{name}: {v}");
        assert_eq!(v.get("backend").is_some(), name == "redis", "{name}: {v}");
        let o = run("cache-evict", &["--all", "--json"], b"");
        assert!(o.status.success(), "{name}: {}", stderr_of(&o));
        let v = json(&o.stdout);
        assert_eq!(v["dry_run"], false, "{name}: {v}");
        assert_eq!(v["after"]["entries"], 0, "{name}: {v}");
        let mut keys: Vec<&str> = v["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["reason"], "all", "{name}: {v}");
                e["key"].as_str().unwrap()
            })
            .collect();
        keys.sort_unstable();
        // A Redis read drops an expired entry at once (docs/redis.md); a
        // local one leaves it to eviction.
        let left: &[&str] = match b {
            Backend::Local => &["a", "b", "x", "y"],
            Backend::Redis(_) => &["a", "x", "y"],
        };
        assert_eq!(keys, left, "{name}: {v}");
        assert_eq!(v.get("steps").is_some(), name == "redis", "{name}: {v}");
        assert_eq!(
            run("cache-read", &["a"], b"").status.code(),
            Some(4),
            "{name}"
        );
    }
}

/// Every walk (`--verify`, `--verify --fix`, an eviction, and `--rebuild`
/// in a dir whose first write was killed, so no `.lock`) removes the temps
/// of a writer that exited but is not reaped yet: a zombie, as a killed
/// orphan is until init reaps it. kill(0) still succeeds on its pid, which
/// made every walk keep its temps (docs/cache.md, "Temp files of dead
/// processes").
#[test]
fn walks_remove_the_temps_of_an_exited_writer_not_yet_reaped() {
    let runs: [(&str, &[&str]); 4] = [
        ("cache-size", &["--verify"]),
        ("cache-size", &["--verify", "--fix"]),
        ("cache-evict", &["--all"]),
        ("cache-size", &["--rebuild"]),
    ];
    for (applet, args) in runs {
        let w = World::new();
        if args == ["--rebuild"] {
            fs::create_dir(w.cache()).unwrap();
        } else {
            w.write("k", "v");
        }
        // Exited, never waited for: a zombie until the end of this round.
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let state = || {
            let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next()
        };
        while state() != Some('Z') {
            thread::sleep(Duration::from_millis(5));
        }
        let temps: Vec<_> = (0..3)
            .map(|n| w.cache().join(format!(".tmp-{pid}-{n}")))
            .collect();
        for t in &temps {
            fs::write(t, "half a value").unwrap();
        }
        let out = w.cmd(applet).args(args).output().unwrap();
        let left: Vec<_> = temps.iter().filter(|t| t.exists()).collect();
        child.wait().unwrap();
        assert!(
            out.status.success(),
            "{applet} {args:?}: {}",
            stderr_of(&out)
        );
        assert!(left.is_empty(), "{applet} {args:?} left {left:?}");
    }
}

/// A directory planted at `.size-index` reads as no index; an empty one is
/// removed and the index written in its place, so writes, sizes, repairs
/// and evictions go on; a non-empty one is not ffkit's to delete: exit 10
/// (damaged cache) with one line naming it, never "cannot rename into".
#[test]
fn a_directory_at_the_size_index_is_replaced_if_empty_else_exit_10() {
    let runs: [(&str, &[&str]); 4] = [
        ("cache-write", &["b", "2"]),
        ("cache-size", &[]),
        ("cache-size", &["--verify", "--fix"]),
        ("cache-evict", &["--all"]),
    ];
    for (applet, args) in runs {
        for full in [false, true] {
            let w = World::new();
            w.write("a", "1");
            let index = w.cache().join(".size-index");
            fs::remove_file(&index).unwrap();
            fs::create_dir(&index).unwrap();
            if full {
                fs::write(index.join("x"), "mine").unwrap();
            }
            let out = w.cmd(applet).args(args).output().unwrap();
            let err = stderr_of(&out);
            let what = format!("{applet} {args:?} full={full}: {err}");
            if full {
                assert_eq!(out.status.code(), Some(10), "{what}");
                assert_eq!(err.lines().count(), 1, "{what}");
                assert!(err.contains(&index.display().to_string()), "{what}");
                assert!(index.join("x").exists(), "{what}");
            } else {
                assert!(out.status.success(), "{what}");
                assert!(fs::metadata(&index).unwrap().is_file(), "{what}");
                w.assert_exact();
            }
        }
    }
}

/// A link that fails for want of space or quota is a full disk (exit 8),
/// and a cross-device link says so: neither is "something other than a
/// regular file is in the way" (exit 1). Nothing half-written is left.
/// The failure is injected with strace.
#[test]
fn a_failed_link_is_reported_as_its_errno() {
    if !need("strace", "an injected linkat failure") {
        return;
    }
    for (errno, code, says) in [
        ("ENOSPC", 8, "No space left on device"),
        ("EDQUOT", 8, "Disk quota exceeded"),
        ("EXDEV", 1, "cross-device"),
    ] {
        let w = World::new();
        w.write("old", "v");
        let mut c = Command::new("strace");
        w.isolate(&mut c);
        c.args(["-f", "-qq", "-o", "/dev/null", "-e"])
            .arg(format!("inject=linkat:error={errno}:when=1"))
            .arg("--")
            .arg(bin())
            .args(["cache-write", "k", "value"]);
        let out = c.output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(code), "{errno}: {err}");
        assert!(err.contains(says), "{errno}: {err}");
        assert!(!err.contains("in the way"), "{errno}: {err}");
        w.cmd("cache-read").arg("k").assert().code(4);
        w.assert_exact();
    }
}

/// The hidden `--fn-dir` marks only the `ffkit --fn-dir APPLET …` form (the
/// shell functions' calls). Through a symlink named after an applet the
/// first argument is the applet's own: `cache-read --fn-dir --dir LINK k`
/// was taken as the marker, and a dir the user named was refused as the
/// shell functions' namespace (exit 3) instead of the option being unknown.
#[test]
fn fn_dir_marker_is_not_taken_from_an_applet_symlinks_arguments() {
    let w = World::new();
    let real = w.path().join("real");
    w.cmd("cache-write")
        .arg("--dir")
        .arg(&real)
        .args(["k", "v"])
        .assert()
        .success();
    let link = w.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // The marked form refuses the link, as the functions' dir.
    let o = w
        .link("ffkit")
        .args(["--fn-dir", "cache-read", "--dir"])
        .arg(&link)
        .arg("k")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    // Through the applet's symlink `--fn-dir` is an argument like any other.
    let o = w
        .link("cache-read")
        .args(["--fn-dir", "--dir"])
        .arg(&link)
        .arg("k")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("'--fn-dir'"), "{err}");
    assert!(!err.contains("shell functions"), "{err}");
    // A named link without the marker is followed (the user's choice).
    w.link("cache-read")
        .arg("--dir")
        .arg(&link)
        .arg("k")
        .assert()
        .success()
        .stdout("v");
}

/// `cache-batch --read` of more present keys than the descriptor limit
/// allows open at once: every value was opened under the lock and read
/// after it, all open together, so 300 keys under `ulimit -n 64` (or
/// 1,100 under the usual 1024) failed with "Too many open files".
#[test]
fn batch_read_of_more_keys_than_the_descriptor_limit() {
    let w = World::new();
    let (batch, asked) = batch_of_keys(&w, 300);
    let out = batch_read_with_nofile(&w, "64", &asked);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), batch);
}

/// `cache-batch --read` under a descriptor limit too low for 16 values
/// open at once (but enough for `cache-read`): the open ones are read and
/// closed when an open finds no descriptor free. 16 at a time failed
/// under `ulimit -n 20` ("cannot open …/k16.meta: Too many open files"),
/// though docs/cache.md says the limit bounds nothing.
#[test]
fn batch_read_under_a_descriptor_limit_below_sixteen_values() {
    let w = World::new();
    let (batch, asked) = batch_of_keys(&w, 40);
    for limit in ["10", "20"] {
        let out = batch_read_with_nofile(&w, limit, &asked);
        assert!(
            out.status.success(),
            "ulimit -n {limit}: {}",
            stderr_of(&out)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            batch,
            "ulimit -n {limit}"
        );
    }
}

/// Writes keys `k0`..`k{n-1}` (values `v-kI`) with one `cache-batch`;
/// returns that batch (what reading them all prints) and the read's input.
fn batch_of_keys(w: &World, n: usize) -> (String, String) {
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let batch: String = keys.iter().map(|k| format!("{k}:v-{k}\n")).collect();
    let out = run_with_stdin(&mut w.cmd("cache-batch"), batch.as_bytes());
    assert!(out.status.success(), "{}", stderr_of(&out));
    (batch, keys.iter().map(|k| format!("{k}\n")).collect())
}

/// `cache-batch --read` of `asked` under `ulimit -n limit`.
fn batch_read_with_nofile(w: &World, limit: &str, asked: &str) -> std::process::Output {
    let mut c = std::process::Command::new("bash");
    w.isolate(&mut c);
    c.args(["-c", r#"ulimit -n "$1" && exec "$0" cache-batch --read"#])
        .arg(bin())
        .arg(limit);
    run_with_stdin(&mut c, asked.as_bytes())
}

/// `ffkit cache-batch --read ARGS` (standard output discarded): its exit
/// status and its peak resident set (KiB), as GNU time's `%M` (a child's
/// own `wait4` would count this test process too: a child that shares or
/// copies its memory until the exec is charged with it).
fn batch_read_peak(w: &World, args: &[&str]) -> (i32, u64) {
    let report = w.path().join("peak");
    let mut c = std::process::Command::new("/usr/bin/time");
    w.isolate(&mut c);
    c.args(["-f", "%M", "-o"])
        .arg(&report)
        .args([
            "sh",
            "-c",
            r#"exec "$0" cache-batch --read "$@" >/dev/null"#,
        ])
        .arg(bin())
        .args(args);
    let o = output_within(c, "cache-batch --read under /usr/bin/time");
    let peak = std::fs::read(&report).expect("time's report");
    (o.status.code().unwrap_or(-1), parse_u64(&peak))
}

/// `cache-batch --read` of a value held it twice (the value read
/// whole, then the output built whole: a 300 MB value took 595 MB). It is
/// now copied from its open file as the record is written, in both
/// formats; a value past the 16 held open is read whole once, never twice.
#[test]
fn batch_read_of_a_large_value_is_streamed_not_held() {
    if !std::path::Path::new("/usr/bin/time").exists() {
        return skip("/usr/bin/time not installed: a batch read's peak memory was not measured");
    }
    let w = World::new();
    const MIB: u64 = 1024;
    let big = vec![b'x'; 8 << 20];
    let out = run_with_stdin(w.cmd("cache-write").arg("big"), &big);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (baseline, _) = batch_of_keys(&w, 16);
    assert!(!baseline.is_empty());
    let (code, small) = batch_read_peak(&w, &["k0"]);
    assert_eq!(code, 0);
    for format in ["lines", "jsonl"] {
        let (code, kib) = batch_read_peak(&w, &["--format", format, "big"]);
        assert_eq!(code, 0, "{format}");
        assert!(
            kib < small + 3 * MIB,
            "{format}: peak {kib} KiB reading 8 MiB (a 1-byte read: {small} KiB)"
        );
    }
    // The 17th present key is read under the lock: once.
    let mut args: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    args.push("big".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, kib) = batch_read_peak(&w, &args);
    assert_eq!(code, 0);
    assert!(
        kib < small + 12 * MIB,
        "peak {kib} KiB reading 8 MiB as the 17th value (a 1-byte read: {small} KiB)"
    );
}
