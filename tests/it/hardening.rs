//! Hardening (issue 8): every applet, faced with bad input or a broken
//! environment, answers with one stderr line and the contract's exit code —
//! no panic, nothing half-written visible, nothing written outside its own
//! directories, and the size index exact afterwards.
//!
//! Tests that need root-only facilities (tmpfs mounts, read-only remounts,
//! dropping privileges) print a `SKIP:` line and return when the facility is
//! not available, instead of failing.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::*;

// ---------------------------------------------------------------- helpers

/// Every file and dir under the world except the cache dir (and the bin dir
/// of applet links), with its size: what "nothing created outside" compares.
fn outside_snapshot(w: &World) -> BTreeMap<PathBuf, u64> {
    fn walk(dir: &Path, skip: &[PathBuf], out: &mut BTreeMap<PathBuf, u64>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if skip.contains(&p) {
                continue;
            }
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            out.insert(p.clone(), if m.is_file() { m.len() } else { 0 });
            if m.is_dir() {
                walk(&p, skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(w.path(), &[w.cache(), w.path().join("bin")], &mut out);
    out
}

/// The index files agree with the independent oracle, and no journal
/// is left behind.
fn assert_index_exact(dir: &Path, what: &str) {
    if !dir.is_dir() {
        return;
    }
    let (bytes, entries) = oracle(dir);
    if let Ok(i) = fs::read_to_string(dir.join(".size-index")) {
        assert_eq!(i, format!("{bytes}\n"), "{what}: .size-index vs oracle");
    }
    if let Ok(c) = fs::read_to_string(dir.join(".entry-count")) {
        assert_eq!(c, format!("{entries}\n"), "{what}: .entry-count vs oracle");
    }
    assert!(
        !dir.join(".journal").exists(),
        "{what}: journal left behind"
    );
}

/// No temp file is left behind (by a run that was not killed).
fn assert_no_temps(dir: &Path, what: &str) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let n = e.file_name();
        assert!(
            !n.as_bytes().starts_with(b".tmp-"),
            "{what}: temp file {n:?} left behind"
        );
    }
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(String::from)
        .collect()
}

/// Runs `cmd` (with `stdin`), and checks the code, the stderr line count,
/// no panic, the index, and that nothing appeared outside the cache dir.
fn check(w: &World, what: &str, mut cmd: Command, stdin: &[u8], code: i32, lines: usize) -> Output {
    let before = outside_snapshot(w);
    let out = run_with_stdin(&mut cmd, stdin);
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit code; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: panic: {err}");
    assert_eq!(
        stderr_lines(&out).len(),
        lines,
        "{what}: stderr lines: {err:?}"
    );
    assert_index_exact(&w.cache(), what);
    assert_eq!(
        outside_snapshot(w),
        before,
        "{what}: files outside the cache dir changed"
    );
    out
}

fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffkit");
    let mut si = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // A separate thread: the child may exit (or block on stdout) before
    // reading everything.
    let feeder = std::thread::spawn(move || {
        let _ = si.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = feeder.join();
    out
}

fn osb(b: &[u8]) -> OsString {
    OsStr::from_bytes(b).to_os_string()
}

/// A world with one entry, so the index and cache dir exist.
fn seeded() -> World {
    let w = World::new();
    w.write("seed", "value");
    fs::create_dir_all(w.path().join("bin")).unwrap();
    w
}

// ---------------------------------------------------------------- bad input

const BAD_ARG_KEYS: &[&[u8]] = &[
    b"",
    b".",
    b"..",
    b"../x",
    b"a/b",
    b"/etc/passwd",
    b".hidden",
    b".size-index",
    b".lock",
    b"x.meta",
    b"a\nb",
    b"tab\there",
    b"\xff\xfe",
    b"ok\xc3",
];

fn long_key() -> Vec<u8> {
    vec![b'k'; 256]
}

#[test]
fn bad_keys_are_refused_with_exit_2_by_every_applet() {
    let w = seeded();
    let mut keys: Vec<Vec<u8>> = BAD_ARG_KEYS.iter().map(|k| k.to_vec()).collect();
    keys.push(long_key());
    keys.push(vec![b'k'; 251]);
    for k in &keys {
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
    for v in [
        "-1",
        "abc",
        "1e999",
        "99999999999999999999",
        "5x",
        "",
        "1.5",
        " ",
    ] {
        for form in [
            vec!["--ttl".to_string(), v.to_string()],
            vec![format!("--ttl={v}")],
        ] {
            let mut c = w.cmd("cache-write");
            c.args(&form).args(["k", "v"]);
            check(&w, &format!("cache-write {form:?}"), c, b"", 2, 1);
            let mut c = w.cmd("cache-batch");
            c.args(&form);
            check(&w, &format!("cache-batch {form:?}"), c, b"k:v\n", 2, 1);
        }
    }
    for v in [
        "-1",
        "abc",
        "1e999",
        "99999999999999999999",
        "5x",
        "",
        "1e3s",
        "99999999999999999999d",
    ] {
        let mut c = w.cmd("cache-evict");
        c.arg(format!("--older-than={v}"));
        check(&w, &format!("cache-evict --older-than={v}"), c, b"", 2, 1);
    }
    for v in [
        "10Q",
        "-5M",
        "",
        "1.5G",
        "99999999999999999999",
        "20000000T",
        "M",
    ] {
        let mut c = w.cmd("cache-evict");
        c.arg(format!("--max-bytes={v}"));
        check(&w, &format!("cache-evict --max-bytes={v}"), c, b"", 2, 1);
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

/// Every variable of the contract (and ffkit's own knobs) with a wrong value.
const BAD_ENV: &[(&str, &[u8])] = &[
    ("CACHE_SIZE_TRACKING", b"on"),
    ("CACHE_SIZE_TRACKING", b"ENABLED"),
    ("LOCK_BACKOFF_STRATEGY", b"fibonacci"),
    ("LOCK_TIMEOUT", b"abc"),
    ("LOCK_TIMEOUT", b"-1"),
    ("LOCK_TIMEOUT", b"1e999"),
    ("LOCK_TIMEOUT", b"99999999999999999999"),
    ("LOCK_TIMEOUT", b"5x"),
    ("LOCK_TIMEOUT", b"\xff"),
    ("LOCK_TIMEOUT", b"1\n2"),
    ("LOCK_BACKOFF_INITIAL", b"0"),
    ("LOCK_BACKOFF_INITIAL", b"abc"),
    ("LOCK_BACKOFF_MAX", b"0.01"),
    ("LOCK_STALE_AFTER", b"5x"),
    ("CACHE_PERF_MONITORING", b"yes"),
    ("CACHE_PERF_MAX_BYTES", b"10Q"),
    ("CACHE_PERF_MAX_BYTES", b"-5M"),
    ("FLOWFORGE_DEVELOPER", b"../evil"),
    ("FLOWFORGE_DEVELOPER", b"a/b"),
    ("FLOWFORGE_DEVELOPER", b".hidden"),
    ("FLOWFORGE_DEVELOPER", b"a\nb"),
    ("FF_DEBUG", b"1"),
    ("FF_DEBUG", b"yes"),
    ("FFKIT_TEST_NOW", b"abc"),
];

#[test]
fn every_bad_environment_value_exits_12_for_every_applet() {
    let w = seeded();
    let applets: &[(&str, &[&str], &[u8])] = &[
        ("cache-size", &[], b""),
        ("cache-write", &["k", "v"], b""),
        ("cache-read", &["seed"], b""),
        ("cache-batch", &[], b"k:v\n"),
        ("cache-batch", &["--read", "seed"], b""),
        ("cache-evict", &["--all"], b""),
        ("perf-metrics", &[], b""),
        ("perf-metrics", &["record", "x", "1"], b""),
        ("init", &["bash"], b""),
        ("install-links", &["--dir", "links"], b""),
    ];
    for (var, val) in BAD_ENV {
        for (applet, args, stdin) in applets {
            let mut c = w.cmd(applet);
            c.args(*args).env(var, OsStr::from_bytes(val));
            let what = format!(
                "{applet} {args:?} with {var}={}",
                String::from_utf8_lossy(val)
            );
            let out = check(&w, &what, c, stdin, 12, 1);
            assert!(stderr_of(&out).contains(var), "{what}: {}", stderr_of(&out));
        }
    }
    assert_eq!(oracle(&w.cache()).1, 1, "nothing written or evicted");
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
        // The entry count is validated by the --json path.
        fs::write(w.cache().join(".entry-count"), content).unwrap();
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

/// `Command` is not `Clone`; rebuild one from its parts.
trait CloneCmd {
    fn clone_cmd(&self) -> Command;
}
impl CloneCmd for Command {
    fn clone_cmd(&self) -> Command {
        let mut c = Command::new(self.get_program());
        c.args(self.get_args());
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = self.get_current_dir() {
            c.current_dir(d);
        }
        c
    }
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

// ---------------------------------------------------------------- symlinks

/// A file outside the cache that a planted symlink points at.
struct Target {
    path: PathBuf,
    content: Vec<u8>,
}

impl Target {
    fn new(w: &World, name: &str, content: &[u8]) -> Self {
        let dir = w.path().join("outside");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        Target {
            path,
            content: content.to_vec(),
        }
    }
    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            fs::read(&self.path).unwrap(),
            self.content,
            "{what}: target changed"
        );
    }
}

fn plant(w: &World, name: &str, target: &Path) -> PathBuf {
    let link = w.cache().join(name);
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(target, &link).unwrap();
    link
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

#[test]
fn a_symlinked_entry_or_sidecar_is_never_read_or_written_through() {
    let w = seeded();
    let secret = Target::new(&w, "secret", b"SECRET");
    let meta = Target::new(
        &w,
        "meta",
        b"{\"key\":\"k\",\"created_at\":0,\"expires_at\":null,\"ttl\":0,\"size\":6}\n",
    );
    // Entry value is a symlink, sidecar regular.
    w.write("k", "v");
    plant(&w, "k", &secret.path);
    w.cmd("cache-size").arg("--rebuild").assert().success();
    let mut c = w.cmd("cache-read");
    c.arg("k");
    let out = check(&w, "read symlinked value", c, b"", 3, 1);
    assert!(
        stderr_of(&out).contains("symbolic link"),
        "{}",
        stderr_of(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SECRET"));
    let mut c = w.cmd("cache-batch");
    c.args(["--read", "k"]);
    let out = check(&w, "batch read symlinked value", c, b"", 3, 1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SECRET"));
    let mut c = w.cmd("cache-write");
    c.args(["k", "new"]);
    check(&w, "write over symlinked value", c, b"", 0, 0);
    assert!(!is_symlink(&w.cache().join("k")));
    secret.assert_untouched("write over value link");

    // Sidecar is a symlink to a valid-looking sidecar.
    plant(&w, "k.meta", &meta.path);
    w.cmd("cache-size").arg("--rebuild").assert().success();
    let mut c = w.cmd("cache-read");
    c.arg("k");
    check(&w, "read symlinked sidecar", c, b"", 3, 1);
    let mut c = w.cmd("cache-write");
    c.args(["k", "again"]);
    check(&w, "write over symlinked sidecar", c, b"", 0, 0);
    assert!(!is_symlink(&w.cache().join("k.meta")));
    meta.assert_untouched("write over sidecar link");

    // Eviction unlinks links, never their targets.
    plant(&w, "k", &secret.path);
    plant(&w, "k.meta", &meta.path);
    plant(&w, "l", &secret.path);
    w.cmd("cache-size").arg("--rebuild").assert().success();
    for args in [&["--expired"][..], &["--max-bytes", "0"], &["--all"]] {
        let mut c = w.cmd("cache-evict");
        c.args(args);
        check(&w, &format!("evict {args:?}"), c, b"", 0, 0);
    }
    secret.assert_untouched("evict");
    meta.assert_untouched("evict");
}

#[test]
fn symlinked_index_files_are_ignored_and_replaced_not_followed() {
    let w = seeded();
    for name in [".size-index", ".entry-count"] {
        let t = Target::new(&w, name.trim_start_matches('.'), b"5\n");
        plant(&w, name, &t.path);
        let mut c = w.cmd("cache-size");
        c.arg("--json");
        let out = check(&w, name, c, b"", 0, 1);
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("\"bytes\":{}", oracle(&w.cache()).0))
        );
        t.assert_untouched(name);
        assert!(
            !is_symlink(&w.cache().join(name)),
            "{name} replaced by a file"
        );
        plant(&w, name, &t.path);
        let mut c = w.cmd("cache-write");
        c.args(["k", "v"]);
        check(&w, &format!("{name} write"), c, b"", 0, 0);
        t.assert_untouched(name);
    }
}

#[test]
fn a_symlinked_journal_is_not_read_through() {
    let w = seeded();
    w.write("victim", "keep me");
    // A journal that, if followed, would delete "victim".
    let j = serde_json::json!({
        "before": {"bytes": 0, "entries": 0},
        "records": [{"key": "victim", "old_bytes": 0, "old_entry": false, "value_tmp": null, "meta_tmp": null}]
    });
    let t = Target::new(&w, "journal", j.to_string().as_bytes());
    plant(&w, ".journal", &t.path);
    for (applet, args) in [("cache-size", &[][..]), ("cache-read", &["victim"][..])] {
        let mut c = w.cmd(applet);
        c.args(args);
        let before = outside_snapshot(&w);
        let out = c.output().unwrap();
        assert!(!stderr_of(&out).contains("panicked"));
        assert!(stderr_lines(&out).len() <= 1, "{}", stderr_of(&out));
        assert_eq!(outside_snapshot(&w), before);
        assert!(
            w.cache().join("victim").exists(),
            "{applet}: journal followed"
        );
        t.assert_untouched(applet);
        plant(&w, ".journal", &t.path);
    }
    fs::remove_file(w.cache().join(".journal")).unwrap();
    w.cmd("cache-read")
        .arg("victim")
        .assert()
        .success()
        .stdout("keep me");
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_never_created() {
    let w = seeded();
    let t = Target::new(&w, "lock", b"precious");
    let dangling = w.path().join("outside").join("never-created");
    for target in [t.path.clone(), dangling.clone()] {
        plant(&w, ".lock", &target);
        for (applet, args, code) in [
            ("cache-write", &["k", "v"][..], 3),
            ("cache-batch", &[][..], 3),
            ("cache-evict", &["--all"][..], 3),
            ("cache-read", &["seed"][..], 3),
        ] {
            let mut c = w.cmd(applet);
            c.args(args);
            let out = check(
                &w,
                &format!("{applet} with .lock -> {target:?}"),
                c,
                b"k:v\n",
                code,
                1,
            );
            assert!(stderr_of(&out).contains(".lock"), "{}", stderr_of(&out));
        }
        assert!(!dangling.exists(), "dangling lock target created");
        t.assert_untouched("lock");
    }
}

#[test]
fn planted_temp_file_symlinks_are_skipped() {
    let w = seeded();
    let t = Target::new(&w, "tmp-target", b"untouched");
    let dir = std::ffi::CString::new(w.cache().as_os_str().as_bytes()).unwrap();
    let target = std::ffi::CString::new(t.path.as_os_str().as_bytes()).unwrap();
    let mut c = w.cmd("cache-batch");
    // In the child, after fork and before exec (same pid), plant symlinks at
    // the temp names ffkit will try first: `.tmp-<pid>-<n>`.
    unsafe {
        c.pre_exec(move || {
            let pid = libc::getpid();
            for n in 0..8u8 {
                let mut buf = [0u8; 4096];
                let d = dir.as_bytes();
                let mut i = d.len();
                buf[..i].copy_from_slice(d);
                for b in b"/.tmp-" {
                    buf[i] = *b;
                    i += 1;
                }
                let mut digits = [0u8; 12];
                let (mut p, mut nd) = (pid as u32, 0);
                loop {
                    digits[nd] = b'0' + (p % 10) as u8;
                    nd += 1;
                    p /= 10;
                    if p == 0 {
                        break;
                    }
                }
                for k in (0..nd).rev() {
                    buf[i] = digits[k];
                    i += 1;
                }
                buf[i] = b'-';
                buf[i + 1] = b'0' + n;
                libc::symlink(target.as_ptr(), buf.as_ptr().cast());
            }
            Ok(())
        });
    }
    let out = run_with_stdin(&mut c, b"a:1\nb:2\nc:3\n");
    assert!(out.status.success(), "{}", stderr_of(&out));
    t.assert_untouched("temp links");
    for k in ["a", "b", "c"] {
        assert!(!is_symlink(&w.cache().join(k)));
    }
    // The planted links are dot-files: not counted; the index is exact.
    let (bytes, _) = oracle(&w.cache());
    assert_eq!(w.index().unwrap(), format!("{bytes}\n"));
}

#[test]
fn a_symlinked_metrics_log_is_never_written_through() {
    let w = seeded();
    let t = Target::new(&w, "metrics", b"# precious\n");
    plant(&w, ".perf-metrics.csv", &t.path);
    let mut c = w.cmd("cache-write");
    c.args(["k", "v"]);
    check(&w, "write with symlinked default metrics log", c, b"", 0, 0);
    t.assert_untouched("default log");
    let link = w.path().join("outside").join("metrics-link");
    std::os::unix::fs::symlink(&t.path, &link).unwrap();
    let mut c = w.cmd("cache-write");
    c.args(["k", "v"]).env("CACHE_PERF_METRICS", &link);
    check(&w, "write with symlinked CACHE_PERF_METRICS", c, b"", 0, 0);
    t.assert_untouched("CACHE_PERF_METRICS");
}

// ---------------------------------------------------------------- modes

#[test]
fn new_dirs_are_0700_and_files_0600_whatever_the_umask() {
    let w = World::new();
    let dir = w.path().join("deep").join("er").join("cache");
    let mut c = w.cmd("cache-write");
    c.args(["k", "v"]).env("FFKIT_CACHE_DIR", &dir);
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut c = w.cmd("cache-batch");
    c.env("FFKIT_CACHE_DIR", &dir);
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    assert!(run_with_stdin(&mut c, b"b:1\n").status.success());
    for d in [w.path().join("deep"), w.path().join("deep/er"), dir.clone()] {
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{d:?}");
    }
    let mut names = vec![];
    for e in fs::read_dir(&dir).unwrap().flatten() {
        let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{:?}", e.file_name());
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for n in [
        "k",
        "k.meta",
        ".size-index",
        ".entry-count",
        ".lock",
        ".perf-metrics.csv",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

// ---------------------------------------------------------------- mounts

/// A tmpfs mounted for one test; unmounted (lazily) on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, opts: &str) -> Option<Mount> {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(at.to_path_buf()))
    }
    fn remount(&self, opts: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn skip(why: &str) {
    eprintln!("SKIP: {why}");
}

#[test]
fn a_full_disk_fails_with_exit_8_and_leaves_nothing_half_written() {
    let w = World::new();
    let mnt = w.path().join("mnt");
    let Some(_m) = Mount::tmpfs(&mnt, "size=512k,mode=0700") else {
        return skip("cannot mount a tmpfs (needs root / CAP_SYS_ADMIN); full-disk test not run");
    };
    let cache = mnt.join("cache");
    let cmd = |applet: &str| {
        let mut c = w.cmd(applet);
        c.env("FFKIT_CACHE_DIR", &cache)
            .env("CACHE_PERF_MONITORING", "disabled");
        c
    };
    let ok = |mut c: Command, stdin: &[u8]| {
        let out = run_with_stdin(&mut c, stdin);
        assert!(out.status.success(), "{}", stderr_of(&out));
    };
    let mut c = cmd("cache-write");
    c.args(["small", "1"]);
    ok(c, b"");
    // A value bigger than the whole disk: fails while writing the temp.
    let mut c = cmd("cache-write");
    c.arg("huge");
    let out = run_with_stdin(&mut c, &vec![b'x'; 1 << 20]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr_of(&out));
    assert_eq!(stderr_lines(&out).len(), 1, "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("No space left"),
        "{}",
        stderr_of(&out)
    );
    assert!(!cache.join("huge").exists());
    assert_index_exact(&cache, "huge write");

    // A batch whose total does not fit: nothing of it becomes visible.
    let mut input = Vec::new();
    for i in 0..40 {
        input.extend_from_slice(format!("b{i}:").as_bytes());
        input.extend_from_slice(&[b'y'; 20_000]);
        input.push(b'\n');
    }
    let mut c = cmd("cache-batch");
    let out = run_with_stdin(&mut c, &input);
    assert_eq!(out.status.code(), Some(8), "{}", stderr_of(&out));
    assert_eq!(stderr_lines(&out).len(), 1, "{}", stderr_of(&out));
    assert!(!cache.join("b0").exists(), "partial batch visible");
    assert_index_exact(&cache, "batch");

    // Fill the disk completely with a file outside the cache dir.
    let filler = mnt.join("filler");
    {
        let mut f = fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    for (applet, args, stdin) in [
        ("cache-write", &["k", "some value"][..], &b""[..]),
        ("cache-batch", &[][..], b"k:v\nk2:v2\n"),
    ] {
        let mut c = cmd(applet);
        c.args(args);
        let out = run_with_stdin(&mut c, stdin);
        assert_eq!(out.status.code(), Some(8), "{applet}: {}", stderr_of(&out));
        assert_eq!(stderr_lines(&out).len(), 1, "{}", stderr_of(&out));
        assert!(!cache.join("k").exists());
        assert_index_exact(&cache, applet);
    }
    // Locks on a full disk: exit 8, and the lock is not left held.
    let dotlock_path = mnt.join("locks/full").display().to_string();
    fs::create_dir_all(mnt.join("locks")).unwrap();
    for args in [
        &["-n", "--dotlock", &dotlock_path, "--", "true"][..],
        &["-n", "full"],
    ] {
        let mut c = cmd("lock-acquire");
        c.args(args).env("FFKIT_LOCK_DIR", mnt.join("locks"));
        let out = output_within(c, "lock on a full disk");
        let _held = Held(&w, mnt.join("locks"), "full");
        assert_eq!(out.status.code(), Some(8), "{args:?}: {}", stderr_of(&out));
        assert_eq!(stderr_lines(&out).len(), 1, "{}", stderr_of(&out));
        let mut c = cmd("lock-status");
        c.arg("full").env("FFKIT_LOCK_DIR", mnt.join("locks"));
        let out = output_within(c, "status");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            !said.contains("held"),
            "{args:?}: {said:?} {}",
            stderr_of(&out)
        );
    }
    // Reads and size still work on a full disk.
    let mut c = cmd("cache-read");
    c.arg("small");
    let out = c.output().unwrap();
    assert_eq!(out.stdout, b"1");
    // With self-timing on, a full disk costs the row, never the read.
    let log = cache.join(".perf-metrics.csv");
    let mut c = cmd("cache-read");
    c.arg("small").env("CACHE_PERF_MONITORING", "enabled");
    let out = c.output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(out.stdout, b"1");
    // Recording by hand says so: exit 8, and the log holds whole rows only.
    let mut c = cmd("perf-metrics");
    c.args(["record", "x", "1"])
        .env("CACHE_PERF_MONITORING", "enabled");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr_of(&out));
    assert_eq!(stderr_lines(&out).len(), 1, "{}", stderr_of(&out));
    let rows = fs::read(&log).unwrap_or_default();
    assert!(
        rows.is_empty() || rows.ends_with(b"\n"),
        "half a row: {rows:?}"
    );
    // Free space: the next write succeeds and the index is exact.
    fs::remove_file(&filler).unwrap();
    let mut c = cmd("cache-write");
    c.args(["k", "after"]);
    ok(c, b"");
    ok(cmd("cache-batch"), b"k2:v2\n");
    assert_index_exact(&cache, "after freeing");
    let mut c = cmd("cache-size");
    c.arg("--verify");
    ok(c, b"");
}

#[test]
fn a_read_only_cache_fails_writes_with_exit_3_naming_the_path() {
    let w = World::new();
    let mnt = w.path().join("ro");
    let Some(m) = Mount::tmpfs(&mnt, "size=1m,mode=0700") else {
        return skip("cannot mount a tmpfs (needs root / CAP_SYS_ADMIN); read-only test not run");
    };
    let cache = mnt.join("cache");
    let cmd = |applet: &str| {
        let mut c = w.cmd(applet);
        c.env("FFKIT_CACHE_DIR", &cache)
            .env("CACHE_PERF_MONITORING", "disabled");
        c
    };
    assert!(
        cmd("cache-write")
            .args(["k", "v"])
            .output()
            .unwrap()
            .status
            .success()
    );
    if !m.remount("ro") {
        return skip("cannot remount the tmpfs read-only");
    }
    for (applet, args, stdin) in [
        ("cache-write", &["k2", "v"][..], &b""[..]),
        ("cache-batch", &[][..], b"a:1\n"),
        ("cache-evict", &["--all"][..], b""),
        ("cache-size", &["--rebuild"][..], b""),
    ] {
        let mut c = cmd(applet);
        c.args(args);
        let out = run_with_stdin(&mut c, stdin);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{applet}: {err}");
        assert_eq!(stderr_lines(&out).len(), 1, "{err}");
        assert!(
            err.contains(&*cache.to_string_lossy()),
            "{applet}: path not named: {err}"
        );
        assert!(!err.contains("panicked"));
    }
    // The metrics log and lock dirs on the same read-only disk.
    for (applet, args, env) in [
        (
            "perf-metrics",
            &["record", "x", "1"][..],
            ("CACHE_PERF_MONITORING", "enabled"),
        ),
        (
            "lock-acquire",
            &["-n", "ro-lock"][..],
            ("FFKIT_LOCK_DIR", ""),
        ),
        (
            "lock-acquire",
            &["-n", "--dotlock", "ro-lock"][..],
            ("FFKIT_LOCK_DIR", ""),
        ),
    ] {
        let mut c = cmd(applet);
        c.args(args).env("FFKIT_LOCK_DIR", mnt.join("locks"));
        if !env.1.is_empty() {
            c.env(env.0, env.1);
        }
        let out = output_within(c, applet);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{applet} {args:?}: {err}");
        assert_eq!(stderr_lines(&out).len(), 1, "{err}");
        assert!(
            err.contains(&*mnt.to_string_lossy()),
            "{applet}: path not named: {err}"
        );
    }
    // Reading still works without being able to create anything.
    let out = cmd("cache-read").arg("k").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"v");
    let out = cmd("cache-size").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_index_exact(&cache, "read-only");
}

#[test]
fn permission_denied_exits_3_naming_the_path() {
    let w = World::new();
    w.write("k", "v");
    // Root ignores permission bits: run ffkit as nobody instead.
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return skip("cannot drop privileges with setpriv; permission test not run");
    }
    // nobody can reach the binary and the world, but not the cache dir (0700, root's).
    let mut p = w.path().to_path_buf();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    while let Some(parent) = p.parent() {
        if fs::metadata(parent).is_ok_and(|m| m.mode() & 0o001 == 0) {
            return skip("a parent of the temp dir is not searchable by other users");
        }
        p = parent.to_path_buf();
    }
    let as_nobody = |applet: &str, args: &[&str], dir: &Path| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin());
        w.isolate(&mut c);
        c.env("FFKIT_CACHE_DIR", dir)
            .env("CACHE_PERF_MONITORING", "disabled");
        c.arg(applet).args(args);
        c.output().unwrap()
    };
    if !as_nobody("--version", &[], &w.cache()).status.success() {
        return skip("nobody cannot execute the test binary");
    }
    for (applet, args) in [
        ("cache-write", &["k2", "v"][..]),
        ("cache-read", &["k"][..]),
        ("cache-size", &["--rebuild"][..]),
        ("cache-evict", &["--all"][..]),
        ("cache-batch", &["--read", "k"][..]),
    ] {
        let out = as_nobody(applet, args, &w.cache());
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{applet}: {err}");
        assert_eq!(stderr_lines(&out).len(), 1, "{err}");
        assert!(
            err.contains(&*w.cache().to_string_lossy()),
            "{applet}: {err}"
        );
        assert!(err.contains("ermission denied"), "{applet}: {err}");
    }
    // A cache dir that cannot be created.
    let locked = w.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o555)).unwrap();
    let out = as_nobody("cache-write", &["k", "v"], &locked.join("cache"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("locked/cache"),
        "{}",
        stderr_of(&out)
    );
    assert_index_exact(&w.cache(), "permission");
}

// ---------------------------------------------------------------- signals

fn signal(child: &std::process::Child, sig: libc::c_int) {
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

#[test]
fn sigint_and_sigterm_during_batches_and_evictions_leave_an_exact_index() {
    let w = World::new();
    let mut input = Vec::new();
    for i in 0..3000 {
        input.extend_from_slice(format!("key{i}:{}\n", "v".repeat(i % 50)).as_bytes());
    }
    let mut rng = fastrand::Rng::with_seed(8);
    let mut killed = 0;
    for round in 0..16 {
        let sig = if round % 2 == 0 {
            libc::SIGINT
        } else {
            libc::SIGTERM
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
        assert_index_exact(&w.cache(), &format!("round {round}"));
        w.cmd("cache-size").arg("--verify").assert().success();
    }
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
    for round in 0..10u32 {
        let mut batch = w.cmd("cache-batch");
        assert!(run_with_stdin(&mut batch, &input).status.success());
        let mut child = w
            .cmd("cache-evict")
            .args(["--max-bytes", "0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(0.4 + 0.07 * f64::from(round)));
        signal(
            &child,
            if round % 2 == 0 {
                libc::SIGTERM
            } else {
                libc::SIGINT
            },
        );
        let status = child.wait().unwrap();
        if status.code().is_none() && w.cache().join(".journal").exists() {
            mid_commit += 1;
        }
        assert_eq!(w.size(), oracle(&w.cache()).0, "eviction round {round}");
        assert_index_exact(&w.cache(), &format!("eviction round {round}"));
        w.cmd("cache-size").arg("--verify").assert().success();
    }
    eprintln!("signals: {mid_commit} of 10 evictions were killed mid-commit (journal left)");
    // Killed writers leave temp files (dot-files, never counted); the next
    // walk (eviction, rebuild) removes those of dead processes.
    w.cmd("cache-evict").arg("--expired").assert().success();
    assert_no_temps(&w.cache(), "after the cleanup walk");
    eprintln!("signals: {killed} of 16 runs were interrupted mid-way");
}

/// A pipeline `ffkit … | head …` under bash, returning ffkit's exit status
/// and stderr.
fn pipeline(w: &World, ffkit_args: &str, head: &str) -> (i32, String) {
    let script = format!(
        "set -o pipefail; \"$FFKIT\" {ffkit_args} 2>\"$ERRF\" | {head} >/dev/null; echo ${{PIPESTATUS[0]}}"
    );
    let errf = w.path().join("pipe-stderr");
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    let out = c
        .args(["-c", &script])
        .env("FFKIT", bin())
        .env("ERRF", &errf)
        .output()
        .unwrap();
    let code: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (code, fs::read_to_string(&errf).unwrap_or_default())
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

#[test]
fn a_damaged_journal_is_repaired_once_and_removed() {
    let w = seeded();
    fs::write(w.cache().join(".journal"), b"garbage").unwrap();
    let out = check(&w, "damaged journal", w.cmd("cache-size"), b"", 0, 1);
    assert!(stderr_of(&out).contains("journal"), "{}", stderr_of(&out));
    assert!(!w.cache().join(".journal").exists());
    check(&w, "after repair", w.cmd("cache-size"), b"", 0, 0);
}

/// Runs `cmd`, killing it (and failing) if it takes longer than 20 s.
fn output_within(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: ffkit blocked");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {p:?}"
    );
}

#[test]
fn fifos_and_dirs_planted_in_the_cache_never_block_and_never_fake_success() {
    let w = seeded();
    let meta = fs::read(w.cache().join("seed.meta")).unwrap();
    // A FIFO at a value, a sidecar: reads refuse at once (exit 1), never block.
    mkfifo(&w.cache().join("f"));
    fs::write(w.cache().join("f.meta"), &meta).unwrap();
    mkfifo(&w.cache().join("g.meta"));
    w.cmd("cache-size").arg("--rebuild").assert().success();
    for (applet, args) in [
        ("cache-read", &["f"][..]),
        ("cache-read", &["g"][..]),
        ("cache-batch", &["--read", "f"][..]),
    ] {
        let mut c = w.cmd(applet);
        c.args(args);
        let out = output_within(c, applet);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{applet} {args:?}: {}",
            stderr_of(&out)
        );
        assert!(stderr_of(&out).contains("not a regular file"));
        assert_eq!(stderr_lines(&out).len(), 1);
    }
    // Control files as FIFOs: the index and journal heal, the lock refuses.
    for name in [".size-index", ".entry-count", ".journal"] {
        let p = w.cache().join(name);
        let _ = fs::remove_file(&p);
        mkfifo(&p);
        let mut c = w.cmd("cache-size");
        c.arg("--json");
        let out = output_within(c, name);
        assert!(out.status.success(), "{name}: {}", stderr_of(&out));
        assert_eq!(stderr_lines(&out).len(), 1, "{name}: one rebuild note");
        assert_index_exact(&w.cache(), name);
    }
    let lock = w.cache().join(".lock");
    fs::remove_file(&lock).unwrap();
    mkfifo(&lock);
    for (applet, args) in [
        ("cache-read", &["seed"][..]),
        ("cache-write", &["x", "1"][..]),
    ] {
        let mut c = w.cmd(applet);
        c.args(args);
        let out = output_within(c, applet);
        assert_eq!(out.status.code(), Some(1), "{applet}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains(".lock"));
    }
    fs::remove_file(&lock).unwrap();
    // A FIFO metrics log neither blocks nor fails the applet.
    let _ = fs::remove_file(w.cache().join(".perf-metrics.csv"));
    mkfifo(&w.cache().join(".perf-metrics.csv"));
    for _ in 0..3 {
        let mut c = w.cmd("cache-read");
        c.arg("seed");
        let out = output_within(c, "fifo metrics log");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            stderr_of(&out)
        );
    }
    // A directory in the way of a write is an error, not a silent success.
    fs::create_dir(w.cache().join("d")).unwrap();
    fs::create_dir(w.cache().join("e.meta")).unwrap();
    let mut c = w.cmd("cache-write");
    c.args(["d", "v"]);
    let out = check(&w, "dir at value", c, b"", 1, 1);
    assert!(stderr_of(&out).contains("in the way"));
    let out = check(
        &w,
        "dir at sidecar",
        w.cmd("cache-batch"),
        b"e:1\nok:2\n",
        1,
        1,
    );
    assert!(stderr_of(&out).contains("e.meta"));
    w.cmd("cache-size").arg("--verify").assert().success();
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

// ---------------------------------------------------------------- metrics

fn metrics_log(w: &World) -> PathBuf {
    w.cache().join(".perf-metrics.csv")
}

#[test]
fn a_damaged_metrics_log_is_counted_not_fatal() {
    let w = seeded();
    let mut log = b"# timestamp,operation,duration_ms\n".to_vec();
    let good = [
        "1700000000,write_cache,0.5",
        "1700000001,write_cache,1.5",
        "1700000002.25,get_cache_size,2",
    ];
    let bad: Vec<Vec<u8>> = vec![
        b"1,2".to_vec(),                                              // too few columns
        b"1700000000,x,1,4".to_vec(),                                 // too many
        b"1700000000".to_vec(),                                       // one column
        b"1700000000,x,abc".to_vec(),                                 // non-numeric duration
        b"1700000000,x,-1".to_vec(),                                  // negative
        b"1700000000,x,inf".to_vec(),                                 // not finite
        b"1700000000,x,nan".to_vec(),                                 //
        b"1700000000,x,1e3".to_vec(),                                 // exponent
        b"1700000000,x,".to_vec(),                                    // empty duration
        b"abc,x,1".to_vec(),                                          // bad timestamp
        b"-5,x,1".to_vec(),                                           //
        b"99999999999999999999,x,1".to_vec(),                         // timestamp overflow
        b",x,1".to_vec(),                                             //
        b"1700000000,,1".to_vec(),                                    // empty operation
        b"1700000000,\xff\xfe,1".to_vec(),                            // not UTF-8
        b"1700000000,x\0y,1\0".to_vec(),                              // NUL bytes
        vec![b'a'; 5 << 20],                                          // a 5 MiB line
        [b"1700000000,x,".as_slice(), &vec![b'9'; 400_000]].concat(), // huge number
    ];
    for g in &good {
        log.extend_from_slice(g.as_bytes());
        log.push(b'\n');
    }
    for b in &bad {
        log.extend_from_slice(b);
        log.extend_from_slice(b"\r\n");
    }
    log.extend_from_slice(b"\n   \n# a comment\n1700000003,get_cache_size,1"); // no final newline
    fs::write(metrics_log(&w), &log).unwrap();
    for fmt in [&[][..], &["--json"], &["--prometheus"]] {
        let mut c = w.cmd("perf-metrics");
        c.args(fmt);
        let out = check(&w, &format!("perf-metrics {fmt:?}"), c, b"", 0, 1);
        let err = stderr_of(&out);
        assert!(
            err.contains(&format!("skipped {} malformed rows", bad.len())),
            "{err}"
        );
        if fmt == ["--json"] {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["write_cache"]["count"], 2);
            assert_eq!(v["get_cache_size"]["count"], 2);
            assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
        }
    }
    let mut c = w.cmd("perf-metrics");
    c.args(["check", "write_cache:max<2ms", "get_cache_size:count>=2"]);
    check(&w, "check over a damaged log", c, b"", 0, 1);
    // cleanup drops the malformed rows and keeps the good ones (and comments).
    let mut c = w.cmd("perf-metrics");
    c.args(["cleanup", "--keep-rows", "100"]);
    let before = outside_snapshot(&w);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains("panicked"));
    assert_eq!(outside_snapshot(&w), before);
    let mut c = w.cmd("perf-metrics");
    c.arg("--json");
    let out = check(&w, "after cleanup", c, b"", 0, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["write_cache"]["count"], 2);
}

#[test]
fn bad_metrics_arguments_exit_2_and_leave_the_log_alone() {
    let w = seeded();
    fs::write(metrics_log(&w), b"1700000000,write_cache,1\n").unwrap();
    let cases: &[&[&str]] = &[
        &["record", "x", "-1"],
        &["record", "x", "abc"],
        &["record", "x", "1e999"],
        &["record", "x", "5x"],
        &["record", "x", "inf"],
        &["record", "x", "nan"],
        &["record", "a,b", "1"],
        &["record", "a\nb", "1"],
        &["record", "", "1"],
        &["record", "x", "1", "2", "3"],
        &["record", "x", "5", "1"],
        &["record", "x", "1700000000", "1700000000000"],
        &["record", "--unit", "fortnight", "x", "1", "2"],
        &["--since", "5x"],
        &["--since", "-1"],
        &["--since", "99999999999999999999"],
        &["cleanup", "--keep-rows", "-1"],
        &["cleanup", "--older-than", "1e999"],
        &["check", "x"],
        &["check", "x:p0<1"],
        &["check", "x:p101<1"],
        &["check", "x:p95<-1"],
        &["check", "x:count<1ms"],
        &["check", "x:p95<1e3"],
        &["check", "a,b:p95<1"],
        &["check", "x:max<1yr"],
        &["check", "x:p95"],
    ];
    for args in cases {
        let mut c = w.cmd("perf-metrics");
        c.args(*args);
        check(&w, &format!("perf-metrics {args:?}"), c, b"", 2, 1);
        assert_eq!(
            fs::read(metrics_log(&w)).unwrap(),
            b"1700000000,write_cache,1\n"
        );
    }
}

#[test]
fn perf_metrics_refuses_symlinked_and_non_file_logs() {
    let w = seeded();
    let t = Target::new(&w, "metrics", b"1700000000,x,1\n");
    for planted in ["symlink", "fifo"] {
        let log = metrics_log(&w);
        let _ = fs::remove_file(&log);
        if planted == "symlink" {
            std::os::unix::fs::symlink(&t.path, &log).unwrap();
        } else {
            mkfifo(&log);
        }
        let code = if planted == "symlink" { 3 } else { 1 };
        for args in [
            &[][..],
            &["record", "y", "1"],
            &["cleanup"],
            &["check", "x:max<1"],
        ] {
            let mut c = w.cmd("perf-metrics");
            c.args(args);
            let out = output_within(c, &format!("{planted} {args:?}"));
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(code), "{planted} {args:?}: {err}");
            assert_eq!(stderr_lines(&out).len(), 1, "{err}");
            assert!(err.contains(".perf-metrics.csv"), "{err}");
        }
        t.assert_untouched(planted);
    }
}

#[test]
fn perf_metrics_into_a_closed_pipe_exits_quietly() {
    let w = World::new();
    fs::create_dir_all(w.cache()).unwrap();
    let mut log = String::new();
    for i in 0..5000 {
        log.push_str(&format!("1700000000,op{i},1.5\n"));
    }
    fs::write(metrics_log(&w), log).unwrap();
    for fmt in ["", "--json", "--prometheus"] {
        let (code, err) = pipeline(&w, &format!("perf-metrics {fmt}"), "head -1");
        assert_eq!(code, 0, "perf-metrics {fmt} | head -1: {err}");
        assert!(err.is_empty(), "perf-metrics {fmt}: stderr {err:?}");
    }
}

// ---------------------------------------------------------------- shell wrappers

/// Runs `SCRIPT` in bash after sourcing shell/ffkit.bash, in a repository
/// at `w.path()/repo` as developer `alice`; returns (status, stderr).
fn wrapper(w: &World, script: &str, env: &[(&str, &str)]) -> (i32, String) {
    let repo = w.path().join("repo");
    fs::create_dir_all(repo.join(".git")).unwrap();
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash");
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.env_remove("FFKIT_CACHE_DIR")
        .env("FFKIT_BIN", bin())
        .env("FLOWFORGE_DEVELOPER", "alice")
        .current_dir(&repo)
        .arg("-c")
        .arg(format!(". '{}'\n{script}", lib.display()))
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = output_within(c, script);
    (out.status.code().unwrap_or(-1), stderr_of(&out))
}

/// A wrapper call, its extra environment, and the expected status.
type WrapperCase = (&'static str, &'static [(&'static str, &'static str)], i32);

#[test]
fn shell_wrappers_answer_bad_input_with_contract_codes_and_one_line() {
    let w = World::new();
    let ns = w.path().join("repo/.flowforge");
    let (code, err) = wrapper(&w, "write_cache_with_metadata seed value 0", &[]);
    assert_eq!(code, 0, "{err}");
    let cache = ns.join("dev-alice/cache");
    let snapshot = || {
        let mut s = outside_snapshot(&w);
        s.retain(|p, _| !p.starts_with(&ns));
        s
    };
    let before = snapshot();
    let cases: &[WrapperCase] = &[
        ("write_cache_with_metadata ../x v 10", &[], 2),
        ("write_cache_with_metadata '' v 10", &[], 2),
        ("write_cache_with_metadata a/b v 10", &[], 2),
        ("write_cache_with_metadata .hidden v 10", &[], 2),
        ("write_cache_with_metadata x.meta v 10", &[], 2),
        ("write_cache_with_metadata $'a\\nb' v 10", &[], 2),
        ("write_cache_with_metadata k v -1", &[], 2),
        ("write_cache_with_metadata k v abc", &[], 2),
        ("write_cache_with_metadata k v 99999999999999999999", &[], 2),
        ("read_cache_with_ttl ../x", &[], 2),
        ("batch_write_cache nocolon", &[], 2),
        ("batch_write_cache $'good:1\\n.bad:2'", &[], 2),
        ("batch_read_cache .x", &[], 2),
        ("enforce_cache_limits alice 10Q", &[], 2),
        ("enforce_cache_limits alice -5M", &[], 2),
        ("enforce_cache_limits ../evil 1M", &[], 2),
        ("clear_developer_cache ../evil", &[], 2),
        ("rebuild_size_index a/b", &[], 2),
        ("record_performance_metric op abc 1", &[], 2),
        ("record_performance_metric a,b 1 2", &[], 2),
        ("get_cache_size", &[("CACHE_SIZE_TRACKING", "on")], 12),
        ("get_cache_size", &[("FLOWFORGE_DEVELOPER", "../evil")], 12),
        (
            "write_cache_with_metadata k v 1",
            &[("LOCK_TIMEOUT", "abc")],
            12,
        ),
        ("read_cache_with_ttl seed", &[("FF_DEBUG", "1")], 12),
        (
            "get_performance_metrics",
            &[("CACHE_PERF_MONITORING", "yes")],
            12,
        ),
    ];
    for (script, env, code) in cases {
        let (got, err) = wrapper(&w, script, env);
        assert_eq!(got, *code, "{script} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{script}: {err:?}");
        assert!(!err.contains("panicked"), "{script}: {err}");
        assert_index_exact(&cache, script);
        assert_no_temps(&cache, script);
        assert_eq!(
            snapshot(),
            before,
            "{script}: files outside the namespace changed"
        );
    }
    assert_eq!(oracle(&cache).1, 1, "nothing but the seed was written");
    // The forkless size path never follows a planted symlink or FIFO.
    let t = Target::new(&w, "index", b"12345\n");
    let idx = cache.join(".size-index");
    for planted in ["symlink", "fifo"] {
        let _ = fs::remove_file(&idx);
        if planted == "symlink" {
            std::os::unix::fs::symlink(&t.path, &idx).unwrap();
        } else {
            mkfifo(&idx);
        }
        let repo = w.path().join("repo");
        let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash");
        let mut c = Command::new("bash");
        w.isolate(&mut c);
        c.env_remove("FFKIT_CACHE_DIR")
            .env("FFKIT_BIN", bin())
            .env("FLOWFORGE_DEVELOPER", "alice")
            .current_dir(&repo)
            .args(["-c", &format!(". '{}'\nget_cache_size", lib.display())]);
        let out = output_within(c, planted);
        assert!(out.status.success(), "{planted}: {}", stderr_of(&out));
        assert_eq!(parse_u64(&out.stdout), oracle(&cache).0, "{planted}");
        t.assert_untouched(planted);
        assert_index_exact(&cache, planted);
    }
}

// ---------------------------------------------------------------- locks

fn lock_cmd(w: &World, applet: &str) -> Command {
    let mut c = w.cmd(applet);
    c.env("FFKIT_LOCK_DIR", w.path().join("locks"))
        .env("CACHE_PERF_MONITORING", "disabled");
    c
}

#[test]
fn bad_lock_names_and_options_exit_2_and_create_nothing() {
    let w = seeded();
    fs::create_dir_all(w.path().join("locks")).unwrap();
    let mut names: Vec<Vec<u8>> = [
        &b""[..],
        b".",
        b"..",
        b".hidden",
        b"a\nb",
        b"tab\tb",
        b"\x7f",
        b"\xff\xfe",
    ]
    .iter()
    .map(|n| n.to_vec())
    .collect();
    names.push(vec![b'n'; 201]);
    for n in &names {
        let shown = String::from_utf8_lossy(n).escape_debug().to_string();
        for (applet, pre) in [
            ("lock-acquire", &["-n"][..]),
            ("lock-acquire", &["-n", "--dotlock"][..]),
            ("lock-release", &[][..]),
            ("lock-release", &["--dotlock"][..]),
            ("lock-status", &[][..]),
        ] {
            let mut c = lock_cmd(&w, applet);
            c.args(pre).arg("--").arg(osb(n));
            let before = outside_snapshot(&w);
            let out = output_within(c, &shown);
            let err = stderr_of(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{applet} {pre:?} '{shown}': {err}"
            );
            assert_eq!(stderr_lines(&out).len(), 1, "{err}");
            assert!(!err.contains("panicked"), "{err}");
            assert_eq!(
                outside_snapshot(&w),
                before,
                "{applet} '{shown}' created files"
            );
        }
    }
    for args in [
        &["-w", "abc", "x", "--", "true"][..],
        &["-w=-1", "x", "--", "true"],
        &["-w", "1e999", "x", "--", "true"],
        &["-w", "99999999999999999999", "x", "--", "true"],
        &["-w", "5x", "x", "--", "true"],
        &["-E", "300", "x", "--", "true"],
        &["--fd", "-1"],
        &["--fd", "77"],
        &["-s", "named-shared-is-refused"],
    ] {
        let mut c = lock_cmd(&w, "lock-acquire");
        c.args(args);
        let before = outside_snapshot(&w);
        let out = output_within(c, &format!("{args:?}"));
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(stderr_lines(&out).len(), 1, "{err}");
        assert_eq!(outside_snapshot(&w), before, "{args:?} created files");
    }
    // Bad environment values: exit 12 for the lock applets too.
    for (var, val) in BAD_ENV {
        for (applet, args) in [
            ("lock-acquire", &["-n", "x", "--", "true"][..]),
            ("lock-status", &["x"][..]),
            ("lock-release", &["x"][..]),
        ] {
            let mut c = lock_cmd(&w, applet);
            c.args(args).env(var, OsStr::from_bytes(val));
            let out = output_within(c, var);
            assert_eq!(
                out.status.code(),
                Some(12),
                "{applet} {var}: {}",
                stderr_of(&out)
            );
            assert_eq!(stderr_lines(&out).len(), 1, "{}", stderr_of(&out));
        }
    }
    assert_eq!(fs::read_dir(w.path().join("locks")).unwrap().count(), 0);
}

#[test]
fn symlinked_and_fifo_lock_files_are_refused_without_blocking() {
    let w = World::new();
    let dir = w.path().join("locks");
    fs::create_dir_all(&dir).unwrap();
    let t = Target::new(&w, "lock-target", b"precious");
    std::os::unix::fs::symlink(&t.path, dir.join("sym.lock")).unwrap();
    std::os::unix::fs::symlink(w.path().join("outside/never"), dir.join("dangling.lock")).unwrap();
    for name in ["sym", "dangling"] {
        for (applet, args, code) in [
            ("lock-acquire", &["-n"][..], 3),
            ("lock-status", &[][..], 3),
            ("lock-release", &[][..], 3),
            ("lock-acquire", &["-n", "--dotlock"][..], 3),
        ] {
            let mut c = lock_cmd(&w, applet);
            c.args(args).arg(name);
            let out = output_within(c, name);
            let err = stderr_of(&out);
            assert_eq!(
                out.status.code(),
                Some(code),
                "{applet} {args:?} {name}: {err}"
            );
            assert_eq!(stderr_lines(&out).len(), 1, "{err}");
        }
        // Command mode through a symlink path (flock(1) style) refuses too.
        let mut c = lock_cmd(&w, "lock-acquire");
        c.args(["-n"])
            .arg(dir.join(format!("{name}.lock")))
            .args(["--", "true"]);
        let out = output_within(c, name);
        assert_eq!(out.status.code(), Some(3), "{name}: {}", stderr_of(&out));
    }
    t.assert_untouched("lock symlink");
    assert!(
        !w.path().join("outside/never").exists(),
        "dangling target created"
    );
    // FIFOs: before the fix, status/release (and command mode on a FIFO path)
    // blocked forever in open(2).
    mkfifo(&dir.join("ff.lock"));
    for (applet, args) in [
        ("lock-status", vec!["ff".to_string()]),
        ("lock-release", vec!["ff".to_string()]),
        ("lock-acquire", vec!["-n".into(), "ff".into()]),
        ("lock-status", vec![dir.join("ff.lock").display().to_string()]),
        (
            "lock-acquire",
            vec![
                "-n".into(),
                dir.join("ff.lock").display().to_string(),
                "--".into(),
                "true".into(),
            ],
        ),
    ] {
        let mut c = lock_cmd(&w, applet);
        c.args(&args);
        let out = output_within(c, &format!("{applet} {args:?}"));
        assert!(!stderr_of(&out).contains("panicked"));
        assert!(stderr_lines(&out).len() <= 1, "{}", stderr_of(&out));
    }
}

/// Releases a named lock when dropped, so a failing assertion never leaves
/// a holder process behind.
struct Held<'a>(&'a World, PathBuf, &'a str);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut c = self.0.cmd("lock-release");
        c.env("FFKIT_LOCK_DIR", &self.1).args(["--force", self.2]);
        let _ = c.output();
    }
}

#[test]
fn new_lock_dirs_are_0700_and_named_lock_files_0600_whatever_the_umask() {
    let w = World::new();
    let dir = w.path().join("deep").join("locks");
    let mut c = w.cmd("lock-acquire");
    c.env("FFKIT_LOCK_DIR", &dir).args(["-n", "modes"]);
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = output_within(c, "named acquire");
    let _held = Held(&w, dir.clone(), "modes");
    assert!(out.status.success(), "{}", stderr_of(&out));
    for d in [w.path().join("deep"), dir.clone()] {
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{d:?}");
    }
    let mode = fs::symlink_metadata(dir.join("modes.lock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o600, "named lock file");
}

#[test]
fn init_team_config_lookup_never_blocks_on_a_fifo_and_refuses_bad_json() {
    let w = World::new();
    let fifo = w.path().join("team.fifo");
    mkfifo(&fifo);
    let bad = w.path().join("bad.json");
    fs::write(&bad, b"{bad").unwrap();
    for (file, code) in [(fifo, 1), (w.path().to_path_buf(), 1), (bad, 10)] {
        let mut c = w.cmd("init");
        c.arg("--developer-for-email").arg("a@b").arg(&file);
        let out = output_within(c, "init lookup");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{file:?}: {}",
            stderr_of(&out)
        );
        assert_eq!(stderr_lines(&out).len(), 1, "{}", stderr_of(&out));
    }
}

// ---------------------------------------------------------------- fuzz regressions

/// fuzz `sidecar`, crash-0d19648e: a holder record in serde's array form
/// with a 127-digit `since`. Not an ffkit bug: serde_json (without its
/// `float_roundtrip` feature) reads the re-serialised float one ulp off, so
/// the round-trip invariant compares `since` within a few ulps; the record
/// must still parse, re-serialise and compare equal otherwise.
#[test]
fn fuzz_regression_holder_record_with_a_huge_since_round_trips_within_an_ulp() {
    use ffkit::lock::holder::Holder;
    let input = format!("[\"\",0,0,\"\",\"\",{}0]", "5".repeat(122));
    let h = Holder::parse(input.as_bytes()).expect("serde accepts the array form");
    let again = Holder::parse(&h.to_line()).expect("own record parses");
    assert!((again.since - h.since).abs() <= h.since.abs() * 4.0 * f64::EPSILON);
    assert_eq!(
        Holder {
            since: h.since,
            ..again
        },
        h
    );
    assert!(h.age() >= 0.0);
}

/// fuzz `metrics_row`, crash-d723536d: `record --unit s OP START END` with
/// an END near f64::MAX wrote the row `…,op,inf`, which every reader then
/// rejected as malformed. Now exit 2 and nothing written.
#[test]
fn fuzz_regression_record_of_an_overflowing_duration_is_refused() {
    let w = seeded();
    fs::write(metrics_log(&w), b"1700000000,write_cache,1\n").unwrap();
    let end = "9".repeat(306);
    let mut c = w.cmd("perf-metrics");
    c.args(["record", "--unit", "s", "op", "888885555555555", &end]);
    let out = check(&w, "overflowing record", c, b"", 2, 1);
    assert!(stderr_of(&out).contains("too large"), "{}", stderr_of(&out));
    assert_eq!(
        fs::read(metrics_log(&w)).unwrap(),
        b"1700000000,write_cache,1\n"
    );
}
