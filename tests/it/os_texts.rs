//! The words of a system error ffkit prints are glibc's, without std's
//! ` (os error N)` suffix, on every path and whichever C library the binary
//! links (`ffkit_core::error::os_reason`; DEVELOPERS.md, "The shipped
//! build"): the shipped musl binary and the glibc builtin must say the same
//! (musl's own `strerror` says `No file descriptors available` for EMFILE
//! and `Network unreachable` for ENETUNREACH). `.ci/run` runs these against
//! the shipped binary too (`FFKIT_TEST_BIN`).

use std::process::{Command, Stdio};

use crate::util::*;

/// Every stderr line of `ffkit ARGS` run with `ulimit -n N` for each N in
/// `limits` (bash sets the limit, then execs ffkit).
fn lines_under_fd_limits(
    w: &World,
    limits: std::ops::RangeInclusive<u32>,
    args: &[&str],
) -> Vec<String> {
    let mut lines = Vec::new();
    for n in limits {
        let mut c = Command::new("bash");
        w.isolate(&mut c);
        c.env("FFKIT_LOCK_DIR", w.path().join("locks"))
            .args(["-c", r#"ulimit -n "$0" && exec "$@""#])
            .arg(n.to_string())
            .arg(bin())
            .args(args);
        // stderr to a file: a named lock's holder keeps a pipe open.
        let log = w.path().join("stderr");
        let f = std::fs::File::create(&log).unwrap();
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(f);
        c.status().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        lines.extend(text.lines().map(|l| format!("ulimit -n {n}: {l}")));
        // A named lock taken under a roomy limit is given back.
        let _ = w
            .cmd("lock-release")
            .env("FFKIT_LOCK_DIR", w.path().join("locks"))
            .arg("emfile")
            .output();
    }
    lines
}

fn assert_glibc_words(lines: &[String]) {
    for l in lines {
        assert!(
            !l.contains("(os error") && !l.contains("No file descriptors available"),
            "not glibc's words, or std's suffix left in: {l}\nall lines: {lines:#?}"
        );
    }
}

/// `cache-run`'s pipe and spawn failures and a named lock's holder start
/// under a descriptor limit (EMFILE) read `Too many open files`, as every
/// other line of ffkit's does: they printed std's text with its suffix,
/// which the musl build words `No file descriptors available (os error 24)`.
#[test]
fn emfile_reads_in_glibcs_words_on_every_path() {
    let w = World::new();
    let run = lines_under_fd_limits(&w, 3..=12, &["cache-run", "--ttl", "0", "--", "true"]);
    assert_glibc_words(&run);
    assert!(
        run.iter().any(|l| (l.contains("cannot create a pipe: ")
            || l.contains("cannot run 'true': "))
            && l.ends_with(": Too many open files")),
        "no limit reached cache-run's pipe or spawn: {run:#?}"
    );
    let lock = lines_under_fd_limits(&w, 3..=12, &["lock-acquire", "--timeout", "2", "emfile"]);
    assert_glibc_words(&lock);
    assert!(
        lock.iter()
            .any(|l| l.ends_with("cannot start the holder process: Too many open files")),
        "no limit reached the holder's start: {lock:#?}"
    );
}

/// A Redis connect that fails with a socket error (ENETUNREACH: a network
/// namespace of its own, its loopback down) names it in glibc's words with
/// no suffix; the Redis client's text carried std's. Where a network
/// namespace cannot be made the test says SKIP.
#[test]
fn redis_connect_errors_read_in_glibcs_words() {
    let w = World::new();
    let probe = Command::new("unshare").args(["-rn", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        skip("unshare -rn (a user and network namespace) cannot run here");
        return;
    }
    for (args, code) in [(&["cache-size"][..], 1), (&["lock-status", "x"], 9)] {
        let mut c = Command::new("unshare");
        w.isolate(&mut c);
        c.arg("-rn")
            .arg(bin())
            .args(args)
            .env("FFKIT_BACKEND", "redis://127.0.0.1:6379");
        let out = output_within(c, "ffkit in a network namespace");
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.trim_end().ends_with(
                "backend redis://127.0.0.1:6379: cannot connect: Network is unreachable"
            ),
            "{args:?}: {err}"
        );
    }
}
