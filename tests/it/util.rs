//! The one helper module of the integration tests: running ffkit (as a
//! subcommand or through an applet symlink) in an isolated world, the
//! independent oracle for the cache size and the exactness checks built on
//! it, the hostile-filesystem fixtures (planted symlinks, FIFOs), the
//! bad-input tables every layer shares, and the visible `SKIP:` line.
//!
//! A helper lives here as soon as two area files need it; one area's own
//! helpers stay in its file.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use assert_cmd::prelude::*;
use tempfile::TempDir;

/// The ffkit binary under test: `FFKIT_TEST_BIN` when set (an absolute
/// path, with its `libffkit_builtin.so` beside it: `.ci/run` tests the
/// shipped `target/dist/ffkit` so; DEVELOPERS.md, "Tests"), else the one
/// cargo built for this test run. The bash builtin is built beside that
/// first (see `builtin::library`), so every test that sources
/// shell/ffkit.bash with this binary runs with the builtin loaded, unless
/// FFKIT_BUILTIN=off.
pub fn bin() -> PathBuf {
    default_interrupts();
    let b = test_bin().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ffkit")));
    crate::builtin::library(&b);
    b
}

/// `FFKIT_TEST_BIN`: a build made elsewhere to test instead of cargo's
/// (nothing is built then). It must be absolute, since tests run ffkit from
/// scratch directories; a bad value fails every test with one message.
pub fn test_bin() -> Option<PathBuf> {
    let b = PathBuf::from(std::env::var_os("FFKIT_TEST_BIN").filter(|v| !v.is_empty())?);
    assert!(
        b.is_absolute() && b.is_file(),
        "FFKIT_TEST_BIN={}: not an absolute path to a file",
        b.display()
    );
    Some(b)
}

/// SIGINT and SIGQUIT back to their default action in this test process,
/// once, so every process a test starts inherits the default: a test suite
/// started as a background job of a non-interactive shell (`cmd &`, as a CI
/// runner may) inherits them ignored, and then a SIGINT a test sends to
/// ffkit, bash or a command does nothing and bash cannot trap it.
fn default_interrupts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGQUIT] {
            // SAFETY: setting a disposition to SIG_DFL installs no handler
            // and touches no Rust state; libtest itself handles no signal.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    });
}

/// A scratch world: a temp dir with a cache dir, HOME and a bin dir of
/// applet symlinks, and an environment with none of ffkit's variables
/// inherited from the caller.
pub struct World {
    pub tmp: TempDir,
}

/// Every variable ffkit reads: the documented ones (`config::ENV_VARS`, the
/// README's environment table) and the hidden test hooks.
pub fn ffkit_vars() -> impl Iterator<Item = &'static str> {
    ffkit::config::ENV_VARS
        .iter()
        .map(|v| v.name)
        .chain(ffkit::config::HIDDEN_ENV_VARS.iter().copied())
}

impl World {
    pub fn new() -> Self {
        default_interrupts();
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(tmp.path().join("home")).expect("home");
        World { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The cache dir every `cmd` uses (through FFKIT_CACHE_DIR).
    pub fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    /// The default metrics log of the world's cache.
    pub fn metrics_log(&self) -> PathBuf {
        self.cache().join(".perf-metrics.csv")
    }

    /// `ffkit APPLET` with a clean environment.
    pub fn cmd(&self, applet: &str) -> Command {
        let mut c = Command::new(bin());
        self.isolate(&mut c);
        c.arg(applet);
        c
    }

    /// The applet invoked through a symlink named after it.
    pub fn link(&self, applet: &str) -> Command {
        let dir = self.tmp.path().join("bin");
        fs::create_dir_all(&dir).expect("bin dir");
        let link = dir.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink(bin(), &link).expect("symlink");
        }
        let mut c = Command::new(link);
        self.isolate(&mut c);
        c
    }

    /// No ffkit variable inherited; HOME, the cache dir and the cwd in the
    /// world.
    pub fn isolate(&self, c: &mut Command) {
        for v in ffkit_vars() {
            c.env_remove(v);
        }
        c.env("HOME", self.tmp.path().join("home"))
            .env("FFKIT_CACHE_DIR", self.cache())
            .current_dir(self.tmp.path());
    }

    /// Writes an entry, asserting success.
    pub fn write(&self, key: &str, value: &str) {
        self.cmd("cache-write")
            .args([key, value])
            .assert()
            .success();
    }

    /// `cache-size` output as a number.
    pub fn size(&self) -> u64 {
        let out = self.cmd("cache-size").output().expect("run");
        assert!(out.status.success(), "{}", stderr_of(&out));
        parse_u64(&out.stdout)
    }

    pub fn index(&self) -> Option<String> {
        fs::read_to_string(self.cache().join(".size-index")).ok()
    }

    /// What `cache-size --json` says agrees with the oracle, and so do the
    /// index files themselves ([`assert_index_exact`]).
    pub fn assert_exact(&self) {
        let (bytes, entries) = oracle(&self.cache());
        let out = self
            .cmd("cache-size")
            .arg("--json")
            .output()
            .expect("run cache-size");
        assert!(out.status.success(), "{}", stderr_of(&out));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
        assert_eq!(j["bytes"], bytes, "cache-size bytes vs oracle");
        assert_eq!(j["entries"], entries, "cache-size entries vs oracle");
        assert_index_exact(&self.cache(), "after cache-size --json");
    }
}

/// A world with one entry, so the index and cache dir exist.
pub fn seeded() -> World {
    let w = World::new();
    w.write("seed", "value");
    fs::create_dir_all(w.path().join("bin")).expect("bin dir");
    w
}

pub fn parse_u64(b: &[u8]) -> u64 {
    String::from_utf8_lossy(b).trim().parse().expect("a number")
}

/// The independent oracle: bytes and entry count of every regular,
/// non-dot file at the top of `dir`, computed without ffkit.
pub fn oracle(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut entries = 0;
    let Ok(rd) = fs::read_dir(dir) else {
        return (0, 0);
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let n = name.to_string_lossy();
        if n.starts_with('.') {
            continue;
        }
        let m = fs::symlink_metadata(e.path()).expect("stat");
        if !m.file_type().is_file() {
            continue;
        }
        bytes += m.len();
        if !n.ends_with(".meta") {
            entries += 1;
        }
    }
    (bytes, entries)
}

/// The index exists and agrees with the independent oracle (the bytes in
/// `.size-index`, the count in the record that starts `.lock`), no journal
/// is left behind, and no older ffkit's `.entry-count` is left beside the
/// record.
pub fn assert_index_exact(dir: &Path, what: &str) {
    let (bytes, entries) = oracle(dir);
    let read = |name: &str| {
        fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{what}: cannot read {name} in {dir:?}: {e}"))
    };
    assert_eq!(
        read(".size-index"),
        format!("{bytes}\n"),
        "{what}: .size-index vs oracle"
    );
    // Only a regular `.lock` holds the count: a link or FIFO planted there
    // (the hardening tests) is refused by ffkit and not read here either.
    let planted = fs::symlink_metadata(dir.join(".lock")).is_ok_and(|m| !m.is_file());
    if !planted {
        assert_eq!(
            entry_count(dir),
            Some(entries),
            "{what}: the entry count in .lock vs oracle"
        );
    }
    assert!(
        fs::symlink_metadata(dir.join(".entry-count")).is_err(),
        "{what}: an .entry-count file beside the record"
    );
    assert!(!journal_left(dir), "{what}: journal left behind");
}

/// Whether the lock file at `file` holds a released lock's line,
/// `{"kind":"free"}` padded with spaces (docs/locks.md, "Named pairs
/// across separate commands"): its record was cleared by a release.
pub fn released(file: &Path) -> bool {
    fs::read_to_string(file).is_ok_and(|s| s.trim_end() == r#"{"kind":"free"}"#)
}

/// Length of the entry-count record that starts the cache's `.lock`
/// (docs/cache.md, "The size index"): `entries=`, 20 digits, a newline.
pub const COUNT_RECORD_LEN: u64 = 29;

/// The entry count the record at the start of `dir/.lock` holds, if there
/// is a valid one.
pub fn entry_count(dir: &Path) -> Option<u64> {
    let b = fs::read(dir.join(".lock")).ok()?;
    let rec = b.get(..COUNT_RECORD_LEN as usize)?;
    let digits = rec.strip_prefix(b"entries=")?.strip_suffix(b"\n")?;
    if digits.len() != 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The record for `n` entries, as ffkit writes it at the start of `.lock`.
pub fn count_record(n: u64) -> String {
    format!("entries={n:020}\n")
}

/// Whether a change's journal is left in the cache dir `dir`: in `.lock`
/// (anything beyond its entry-count record, or anything at all in a
/// `.lock` without one), or a `.journal` file (docs/cache.md, "Concurrency
/// and crashes"). Only a regular `.lock` can hold one: a link planted there
/// (the hardening tests) is refused by ffkit, whatever it points to.
pub fn journal_left(dir: &Path) -> bool {
    dir.join(".journal").exists()
        || fs::symlink_metadata(dir.join(".lock"))
            .is_ok_and(|m| m.is_file() && m.len() > 0 && m.len() != COUNT_RECORD_LEN)
}

/// No temp file is left behind (by a run that was not killed).
pub fn assert_no_temps(dir: &Path, what: &str) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("{what}: cannot list {dir:?}: {e}"));
    for e in rd.flatten() {
        let n = e.file_name();
        assert!(
            !n.as_bytes().starts_with(b".tmp-"),
            "{what}: temp file {n:?} left behind"
        );
    }
}

/// Every file and dir under the world except the cache dir (and the bin dir
/// of applet links), with its size: what "nothing created outside" compares.
pub fn outside_snapshot(w: &World) -> BTreeMap<PathBuf, u64> {
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

// ---------------------------------------------------------------- output

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stderr_lines(out: &Output) -> Vec<String> {
    stderr_of(out).lines().map(String::from).collect()
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Bytes as an argument (keys that are not UTF-8).
pub fn osb(b: &[u8]) -> OsString {
    OsStr::from_bytes(b).to_os_string()
}

// ---------------------------------------------------------------- running

/// Runs `cmd` (with `stdin`), and checks the code, the stderr line count,
/// no panic, the index, no temp file left, and that nothing appeared
/// outside the cache dir.
pub fn check(
    w: &World,
    what: &str,
    mut cmd: Command,
    stdin: &[u8],
    code: i32,
    lines: usize,
) -> Output {
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
    assert_no_temps(&w.cache(), what);
    assert_eq!(
        outside_snapshot(w),
        before,
        "{what}: files outside the cache dir changed"
    );
    out
}

/// Runs `cmd` with `stdin` fed from a thread, capturing stdout and stderr.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffkit");
    let mut si = child.stdin.take().expect("piped stdin");
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

/// Runs `cmd`, killing it (and failing) if it takes longer than 60 s: a
/// generous bound, since what it catches is a hang, not slowness.
pub fn output_within(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: ffkit blocked");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("wait")
}

/// The one deadline of a wait in the tests: generous, because a loaded
/// 2-core machine is slow, not wrong. What it catches is a hang.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `cond` until it holds, failing after [`DEADLINE`].
pub fn until(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, DEADLINE.as_secs(), cond);
}

/// Polls `cond` until it holds: false at [`DEADLINE`] (for a test that
/// words its own failure).
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Polls `cond` every few ms until it holds, failing after `secs` (a
/// test that expects an answer sooner than [`DEADLINE`]).
pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A pipeline `ffkit … | head …` under bash, returning ffkit's exit status
/// and stderr.
pub fn pipeline(w: &World, ffkit_args: &str, head: &str) -> (i32, String) {
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
        .expect("run bash");
    let code: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("bash printed ffkit's status");
    (code, fs::read_to_string(&errf).unwrap_or_default())
}

/// `write_stdin` for a std `Command` (assert_cmd has it only on its own
/// `Command`): turns it into an assert_cmd one fed with `input`.
pub trait WriteStdin {
    fn write_stdin(&mut self, input: impl Into<Vec<u8>>) -> assert_cmd::Command;
}

impl WriteStdin for Command {
    fn write_stdin(&mut self, input: impl Into<Vec<u8>>) -> assert_cmd::Command {
        let std = std::mem::replace(self, Command::new("false"));
        let mut c = assert_cmd::Command::from_std(std);
        c.write_stdin(input);
        c
    }
}

/// `Command` is not `Clone`; rebuild one from its parts.
pub trait CloneCmd {
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

/// Runs `c` with umask 0, to prove ffkit sets its modes itself.
pub fn with_umask_0(c: &mut Command) -> &mut Command {
    with_umask(c, 0)
}

/// Runs `c` with umask `mask`.
pub fn with_umask(c: &mut Command, mask: u32) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec; umask(2) is
    // async-signal-safe, allocates nothing and cannot fail.
    unsafe {
        c.pre_exec(move || {
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
            Ok(())
        })
    }
}

/// The umasks the "whatever the umask" tests try: none, the usual one, and
/// ones that take the owner's bits (all, read-only, write-only).
pub const UMASKS: [u32; 5] = [0, 0o022, 0o777, 0o377, 0o177];

/// A `Command` for `bin()` run as nobody (setpriv), or `None`, said
/// visibly as a skip, where that cannot work: not root, no setpriv, or a
/// parent of `w` that other users cannot search.
pub fn as_nobody(w: &World, why: &str) -> Option<Command> {
    if !need_root(&format!("not root: {why} not run as nobody")) {
        return None;
    }
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        skip(&format!(
            "cannot drop privileges with setpriv: {why} not run"
        ));
        return None;
    }
    let mut p = w.path().to_path_buf();
    while let Some(parent) = p.parent() {
        if fs::metadata(parent)
            .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o001 == 0)
        {
            skip(&format!(
                "a parent of the temp dir is not searchable by others: {why} not run"
            ));
            return None;
        }
        p = parent.to_path_buf();
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin());
    w.isolate(&mut c);
    Some(c)
}

/// Spawns `c`, a process that takes a lock, prints `locked` and then waits
/// on its stdin, and returns it once it holds the lock (close or write its
/// stdin to let it go).
pub fn spawn_locked(mut c: Command) -> std::process::Child {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
    }
    assert_eq!(line, "locked\n", "the holder did not take its lock");
    child
}

/// Releases a named lock when dropped, so a failing assertion never leaves
/// a holder process behind.
pub struct Held<'a>(pub &'a World, pub PathBuf, pub &'a str);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut c = self.0.cmd("lock-release");
        c.env("FFKIT_LOCK_DIR", &self.1).args(["--force", self.2]);
        let _ = c.output();
    }
}

// ---------------------------------------------------------------- planted files

/// A file outside the cache that a planted symlink points at.
pub struct Target {
    pub path: PathBuf,
    pub content: Vec<u8>,
}

impl Target {
    pub fn new(w: &World, name: &str, content: &[u8]) -> Self {
        let dir = w.path().join("outside");
        fs::create_dir_all(&dir).expect("outside dir");
        let path = dir.join(name);
        fs::write(&path, content).expect("target");
        Target {
            path,
            content: content.to_vec(),
        }
    }

    pub fn assert_untouched(&self, what: &str) {
        assert_eq!(
            fs::read(&self.path).expect("read target"),
            self.content,
            "{what}: target changed"
        );
    }
}

/// Replaces `name` in the cache dir by a symlink to `target`.
pub fn plant(w: &World, name: &str, target: &Path) -> PathBuf {
    let link = w.cache().join(name);
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(target, &link).expect("plant symlink");
    link
}

pub fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

pub fn mkfifo(p: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {p:?}: {e}"));
}

// ---------------------------------------------------------------- skips

/// Whether this run is CI's (`CI=true`), where every tool and facility a
/// test needs is provided (`.ci/run`), so nothing may be skipped.
pub fn on_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1")
}

/// A test that cannot run here says so on the real stderr (libtest captures
/// `eprintln!`, not writes to the stream itself), and fails on CI.
pub fn skip(why: &str) {
    assert!(!on_ci(), "CI=true and this test cannot run: {why}");
    let _ = writeln!(std::io::stderr(), "SKIP: {why}");
}

/// A test that cannot run on this machine's file system (a property of
/// where the temp dir lies, which no package installs) says so on the real
/// stderr, on CI too.
pub fn skip_fs(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {why}");
}

/// Whether the tests run as root (mounts, `setpriv`, `ns_last_pid`).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether the tests run as root; if not, a visible [`skip`] saying why
/// (a failure on CI, which runs as root).
pub fn need_root(why: &str) -> bool {
    let root = is_root();
    if !root {
        skip(why);
    }
    root
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `tool` is on PATH; if not, a visible [`skip`] line saying what
/// did not run (and a failure on CI, which installs every tool).
pub fn need(tool: &str, what: &str) -> bool {
    let ok = have(tool);
    if !ok {
        skip(&format!("{tool} not installed: {what} did not run"));
    }
    ok
}

// ---------------------------------------------------------------- bad input

/// Keys every applet refuses with exit 2 ("invalid key"), whichever way
/// they arrive (argument, batch line, jsonl, shell wrapper). A 251-byte key
/// (one over the limit) is added by the tests that need it.
pub const BAD_KEYS: &[&[u8]] = &[
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

/// Values `--ttl` (and the jsonl `ttl`, as text) refuses.
pub const BAD_TTLS: &[&str] = &[
    "-1",
    "abc",
    "1e999",
    "99999999999999999999",
    "5x",
    "",
    "1.5",
    " ",
];

/// Values `--older-than` refuses.
pub const BAD_DURATIONS: &[&str] = &[
    "-1",
    "abc",
    "1e999",
    "99999999999999999999",
    "5x",
    "",
    "1e3s",
    "99999999999999999999d",
];

/// Values `--max-bytes` refuses.
pub const BAD_SIZES: &[&str] = &[
    "10Q",
    "-5M",
    "",
    "1.5G",
    "99999999999999999999",
    "20000000T",
    "M",
];

/// Every variable ffkit reads (README's environment table) with a wrong
/// value: exit 12 from every applet, naming the variable.
pub const BAD_ENV: &[(&str, &[u8])] = &[
    ("CACHE_SIZE_TRACKING", b"on"),
    ("CACHE_SIZE_TRACKING", b"maybe"),
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
    ("LOCK_OLD_LIBRARY", b"yes"),
    ("CACHE_PERF_MONITORING", b"yes"),
    ("CACHE_PERF_MONITORING", b"on"),
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

/// A backend the shared lock and cache tests run on: the local files, and a Redis
/// server when redis-server is installed (else `Server::start` prints a
/// SKIP line). One test body runs on each, with the backend's environment.
pub enum Backend {
    Local,
    Redis(crate::redis::Server),
}

impl Backend {
    pub fn all() -> Vec<Backend> {
        let mut v = vec![Backend::Local];
        v.extend(crate::redis::Server::start().map(Backend::Redis));
        v
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Redis(_) => "redis",
        }
    }

    /// The variables that select it (the Redis one: `redis::env`'s, whose
    /// lock dir does not exist: no local file may be used).
    pub fn env(&self, w: &World) -> Vec<(String, String)> {
        match self {
            Backend::Local => vec![
                ("FFKIT_BACKEND".into(), "local".into()),
                (
                    "FFKIT_LOCK_DIR".into(),
                    w.path().join("locks").display().to_string(),
                ),
            ],
            Backend::Redis(s) => {
                let mut c = Command::new("true");
                crate::redis::env(&mut c, s);
                c.get_envs()
                    .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
                    .collect()
            }
        }
    }

    pub fn cmd(&self, w: &World, applet: &str) -> Command {
        let mut c = w.cmd(applet);
        c.envs(self.env(w));
        c
    }

    /// Whether the lock NAME is held, asked independently of `lock-status`:
    /// the kernel (a probe in the lock dir) or the server's key.
    pub fn held(&self, w: &World, name: &str) -> bool {
        match self {
            Backend::Local => {
                let f = fs::File::open(w.path().join("locks").join(format!("{name}.lock")));
                f.is_ok_and(|f| matches!(f.try_lock_shared(), Err(fs::TryLockError::WouldBlock)))
            }
            Backend::Redis(s) => {
                let v: Option<String> =
                    s.query(redis::cmd("GET").arg(format!("ffkit:lock:{{{name}}}")));
                v.is_some()
            }
        }
    }
}

// ---------------------------------------------------------------- lock-acquire's fast path

/// A command for `lock-acquire … -- sh -c SCRIPT` that waits (up to about
/// 20 s, then fails) until the world's metrics log holds a `lock_acquire`
/// row, and exits 0 when it does: command mode's row is written while the
/// command runs, not after it.
pub fn waits_for_its_row(w: &World) -> String {
    format!(
        "i=0; until grep -q ',lock_acquire,' '{}' 2>/dev/null; do i=$((i+1)); [ $i -gt 2000 ] && exit 1; sleep 0.01; done",
        w.metrics_log().display()
    )
}

/// Runs each pair of `lock-acquire` argument lists — the first a plain
/// command-mode call its hand parser takes, the second the same request
/// spelled so that it goes to clap (`--backend=URL`, `--timeout=S`, a
/// redundant `-x`) — through `cmd`, and asserts both answer alike: the
/// same exit code, standard output and error lines (a busy lock's line
/// names its holder's start and age, which move between the two runs:
/// they are compared up to those). `cmd` makes the `lock-acquire` command
/// of the world (environment, lock dir).
pub fn assert_fast_path_answers_as_clap(cmd: &dyn Fn() -> Command, pairs: &[(&[&str], &[&str])]) {
    let timeless = |s: String| match (s.find(", since "), s.rfind(')')) {
        (Some(a), Some(b)) if a < b => format!("{}, since …{}", &s[..a], &s[b..]),
        _ => s,
    };
    for (fast, clap) in pairs {
        let run = |args: &[&str]| {
            let out = cmd().args(args).stdin(Stdio::null()).output().expect("run");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                timeless(stderr_of(&out)),
            )
        };
        let (a, b) = (run(fast), run(clap));
        assert_eq!(a, b, "fast path {fast:?} against clap's {clap:?}");
    }
}
