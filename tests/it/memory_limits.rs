//! ffkit under an address-space limit (`ulimit -v`) near what a call
//! needs: a thread it cannot start is one line or less parallelism, never
//! std's panic and abort (exit 134). The limits are measured from the
//! binary under test (the lowest `ulimit -v` under which `cache-size`
//! runs), so the debug build, the shipped musl one and a glibc one are
//! each tested at their own size; `.ci/run` runs these against the shipped
//! binary too (`FFKIT_TEST_BIN`).

use std::process::{Command, Output};

use crate::util::*;

/// `ffkit ARGS` with `ulimit -v KIB` (bash sets it, then execs ffkit).
fn under_limit(w: &World, kib: u64, args: &[&str]) -> Output {
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.args(["-c", r#"ulimit -v "$0" && exec "$@""#])
        .arg(kib.to_string())
        .arg(bin())
        .args(args);
    output_within(c, "ffkit under ulimit -v")
}

/// The lowest `ulimit -v` (in 256 KiB steps) under which `cache-size`
/// succeeds: what a call of this binary needs at least.
fn least_limit(w: &World) -> u64 {
    (1024..=1 << 20)
        .step_by(256)
        .find(|&kib| under_limit(w, kib, &["cache-size"]).status.success())
        .expect("cache-size runs under some ulimit -v")
}

/// `cache-run` started its pass-through thread with std's default 2 MiB
/// stack and `spawn`, which panics when the thread cannot start: under a
/// limit 1 MiB above what `cache-size` needs every miss aborted (134). The
/// thread now has a small stack, starts before the command, and a thread
/// that still cannot start is one line, exit 1, with no command run. (Heap
/// exhaustion nearer the limit is Rust's abort, which stable Rust offers no
/// hook to change.)
#[test]
fn cache_run_misses_under_a_tight_address_space_limit() {
    let w = World::new();
    let least = least_limit(&w);
    for extra in (0..=1536).step_by(256) {
        let tag = format!("run-{extra}");
        let out = under_limit(&w, least + extra, &["cache-run", "--", "echo", &tag]);
        let err = stderr_lines(&out);
        let code = out.status.code();
        // Below that, a call may still run out of heap (Rust aborts then,
        // with "memory allocation of N bytes failed"), but a thread is
        // never std's panic.
        assert!(
            !err.iter().any(|l| l.contains("failed to spawn thread")),
            "ulimit -v {least}+{extra}: {:?} {err:#?}",
            out.status
        );
        if code == Some(1) {
            assert_eq!(err.len(), 1, "ulimit -v {least}+{extra}: {err:#?}");
        }
        if extra >= 1024 {
            assert_eq!(code, Some(0), "ulimit -v {least}+{extra}: {err:#?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{tag}\n"));
        }
    }
}

/// A stored `--output` tree of 600 files is put back by a pool of threads;
/// each started with std's 2 MiB stack and `spawn`, so under a limit a few
/// MiB above what `cache-size` needs the hit aborted (134) and left no tree.
/// A worker that cannot start now leaves its share to the others.
#[test]
fn cache_run_output_hit_under_a_tight_address_space_limit() {
    let w = World::new();
    let make = "mkdir out && for i in $(seq 600); do echo $i > out/f$i; done";
    let args = ["cache-run", "--output", "out", "--", "sh", "-c", make];
    let stored = w.cmd("cache-run").args(&args[1..]).output().unwrap();
    assert!(stored.status.success(), "{}", stderr_of(&stored));
    let least = least_limit(&w);
    for extra in [4096, 8192] {
        std::fs::remove_dir_all(w.path().join("out")).unwrap();
        let out = under_limit(&w, least + extra, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ulimit -v {least}+{extra}: {}",
            stderr_of(&out)
        );
        let files = std::fs::read_dir(w.path().join("out")).map(|d| d.count());
        assert_eq!(files.ok(), Some(600), "ulimit -v {least}+{extra}");
    }
}
