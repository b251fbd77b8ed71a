//! Shared helpers for the integration tests: running ffkit (as a
//! subcommand or through an applet symlink) in an isolated environment, and
//! an independent oracle for the cache size.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use assert_cmd::prelude::*;
use tempfile::TempDir;

/// The ffkit binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ffkit"))
}

/// A scratch world: a temp dir with a cache dir, HOME and a bin dir of
/// applet symlinks, and an environment with none of the contract's
/// variables inherited from the caller.
pub struct World {
    pub tmp: TempDir,
}

const CONTRACT_VARS: &[&str] = &[
    "CACHE_SIZE_TRACKING",
    "LOCK_BACKOFF_STRATEGY",
    "LOCK_TIMEOUT",
    "LOCK_BACKOFF_INITIAL",
    "LOCK_BACKOFF_MAX",
    "LOCK_STALE_AFTER",
    "CACHE_PERF_MONITORING",
    "CACHE_PERF_METRICS",
    "CACHE_PERF_MAX_BYTES",
    "FLOWFORGE_DEVELOPER",
    "FF_DEBUG",
    "FFKIT_CACHE_DIR",
    "FFKIT_LOCK_DIR",
    "FFKIT_BACKEND",
    "FFKIT_BACKEND_TIMEOUT",
    "FFKIT_LOCK_LEASE",
    "FFKIT_TEST_NOW",
    "FFKIT_TEST_BACKOFF_TRACE",
    "XDG_CACHE_HOME",
    "XDG_RUNTIME_DIR",
    "XDG_STATE_HOME",
];

impl World {
    pub fn new() -> Self {
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

    pub fn isolate(&self, c: &mut Command) {
        for v in CONTRACT_VARS {
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
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_u64(&out.stdout)
    }

    pub fn index(&self) -> Option<String> {
        fs::read_to_string(self.cache().join(".size-index")).ok()
    }
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

pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
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
