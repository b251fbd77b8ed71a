//! The cache functions' bytes in and out on every way in (the builtin, the
//! fallback in bash and in zsh, the binary): a reader that stops early, a
//! full or closed descriptor 1, a zsh string holding NUL bytes, a writer
//! killed in its commit. One status and one line for one input
//! (docs/shell.md, "Output").

use std::process::Stdio;

use crate::shell_paths::{sh, text, ways};
use crate::util::{bin, output_within};

/// Attack finding: `read_cache_with_ttl k | head -c1` under `set -o
/// pipefail` was 141 on the builtin for a value larger than the pipe's
/// buffer (SIGPIPE killed the subshell the builtin wrote from), and 141 on
/// the fallback for any value, as the shell's own `printf '\n'` after the
/// binary met the closed pipe (with `trap '' PIPE`: bash's "write error"
/// line and status 1), while the binary, `ffkit cache-read k | head -c1`,
/// exits 0 (docs/hardening.md, "SIGPIPE"). Now every way in exits 0,
/// silently.
#[test]
fn a_reader_that_stops_early_is_a_quiet_success_on_every_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let script = "set -o pipefail\n\
             big=$(printf '%300000s' '')\n\
             write_cache_with_metadata big \"$big\"; write_cache_with_metadata small v\n\
             d=$PWD/.flowforge/cache\n\
             for i in 1 2 3; do\n\
               read_cache_with_ttl big | head -c1 >/dev/null; echo \"big=$?\"\n\
               read_cache_with_ttl small | true; echo \"small=$?\"\n\
               get_provider_cache x | true; echo \"miss=$?\"\n\
               ffkit cache-read --dir \"$d\" big | head -c1 >/dev/null; echo \"applet=$?\"\n\
               \"$FFKIT_BIN\" cache-read --dir \"$d\" big | head -c1 >/dev/null; echo \"binary=$?\"\n\
             done\n\
             trap '' PIPE\n\
             read_cache_with_ttl big | head -c1 >/dev/null; echo \"ignored=$?\"\n\
             read_cache_with_ttl big | wc -c";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        let want = "big=0\nsmall=0\nmiss=1\napplet=0\nbinary=0\n".repeat(3) + "ignored=0\n300001\n";
        assert_eq!(out, want, "{way}: {err}");
        assert_eq!(err, "", "{way}");
    }
}

/// Attack finding: with standard output on a full disk (`>/dev/full`) the
/// builtin said `ffkit: cannot write standard output: No space left on
/// device (os error 28)` and returned 1, the binary `ffkit cache-read:
/// cannot write standard output: No space left on device` and 8, and the
/// fallback's forkless `get_cache_size` returned 0 after bash's own
/// printf message (zsh: two lines). With descriptor 1 closed the builtin
/// failed (1, "Bad file descriptor") where the binary, whose start-up opens
/// /dev/null there, succeeds quietly, and the fallback's `printf` failed.
/// Now every way in gives the binary's line and status.
#[test]
fn a_failed_standard_output_is_the_binarys_line_and_status_on_every_path() {
    let funcs = "write_cache_with_metadata k v\n\
         read_cache_with_ttl k; echo \"read=$?\" >&3\n\
         get_cache_size; echo \"size=$?\" >&3\n\
         batch_read_cache k; echo \"batch=$?\" >&3\n\
         ffkit cache-read --dir \"$PWD/.flowforge/cache\" k; echo \"applet=$?\" >&3\n\
         \"$FFKIT_BIN\" cache-read --dir \"$PWD/.flowforge/cache\" k; echo \"binary=$?\" >&3\n";
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let o = output_within(
            sh(way, t, t, &format!("exec 3>&1 >/dev/full\n{funcs}")),
            way,
        );
        let (out, err) = text(&o);
        assert_eq!(
            out, "read=8\nsize=8\nbatch=8\napplet=8\nbinary=8\n",
            "{way}: {err}"
        );
        let line =
            |p: &str| format!("ffkit {p}: cannot write standard output: No space left on device\n");
        let want = [
            "cache-read",
            "cache-size",
            "cache-batch",
            "cache-read",
            "cache-read",
        ]
        .map(line)
        .concat();
        assert_eq!(err, want, "{way}");
        let o = output_within(sh(way, t, t, &format!("exec 3>&1 >&-\n{funcs}")), way);
        let (out, err) = text(&o);
        assert_eq!(
            out, "read=0\nsize=0\nbatch=0\napplet=0\nbinary=0\n",
            "{way}: {err}"
        );
        assert_eq!(err, "", "{way}");
    }
}

/// Attack finding: a zsh string may hold NUL bytes, which no argument of a
/// command can carry (the kernel cuts it at the first). The fallback gave
/// them to the binary as arguments: `write_cache_with_metadata k
/// $'a\0b'` stored `a` (while a value over 32,000 characters, sent through
/// a pipe, kept its NULs), and the key `k<NUL>x` wrote and read the key
/// `k`, exit 0. Now a value's NULs are stored (the pipe), and an argument
/// holding one is refused, exit 2, one line; nothing is written. (The
/// first version of the check tested `"$*"`, which zsh joins with IFS's
/// first character: with `IFS=$'\0'` every call was refused.)
#[test]
fn zsh_nul_bytes_are_stored_or_refused_never_cut() {
    if !ways().contains(&"zsh") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let script = "write_cache_with_metadata v $'a\\0b'; echo \"w=$?\"\n\
         (IFS=$'\\0'; write_cache_with_metadata ifs v; read_cache_with_ttl ifs)\n\
         cache_provider_data p $'x\\0y'; echo \"p=$?\"\n\
         rc=0; write_cache_with_metadata $'k\\0x' v || rc=$?; echo \"key=$rc\"\n\
         rc=0; read_cache_with_ttl $'v\\0x' || rc=$?; echo \"read=$rc\"\n\
         rc=0; batch_read_cache $'v\\0x' || rc=$?; echo \"batch=$rc\"";
    let o = output_within(sh("zsh", t, t, script), "zsh");
    let (out, err) = text(&o);
    assert_eq!(out, "w=0\nv\np=0\nkey=2\nread=2\nbatch=2\n", "{err}");
    assert_eq!(
        err,
        "ffkit.bash: an argument holds a NUL byte, which no command argument can carry\n".repeat(3)
    );
    let d = t.join(".flowforge/cache");
    assert_eq!(std::fs::read(d.join("v")).unwrap(), b"a\0b");
    assert_eq!(std::fs::read(d.join("provider_p")).unwrap(), b"x\0y");
    assert!(!d.join("k").exists());
}

/// Attack finding: with descriptor 0 closed (`<&-`), the builtin's
/// `batch_write_cache` and `cache_provider_data p` (which read standard
/// input) failed, status 1, `cannot read standard input: Bad file
/// descriptor`, while the fallback and the binary, whose start-up opens
/// /dev/null on a closed standard descriptor, read it as empty: an empty
/// batch, an empty value. Now the builtin reads it as empty too.
#[test]
fn a_closed_standard_input_reads_as_empty_on_every_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let script = "exec <&-\n\
             batch_write_cache; echo \"batch=$?\"\n\
             cache_provider_data p; echo \"provider=$?\"\n\
             cache_time_tracking s; echo \"time=$?\"\n\
             ffkit cache-write --dir \"$PWD/.flowforge/cache\" k -; echo \"applet=$?\"\n\
             \"$FFKIT_BIN\" cache-write --dir \"$PWD/.flowforge/cache\" b -; echo \"binary=$?\"\n\
             for f in provider_p time_tracking_s k b; do [ -f .flowforge/cache/$f.meta ] && wc -c <.flowforge/cache/$f; done";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(
            out, "batch=0\nprovider=0\ntime=0\napplet=0\nbinary=0\n0\n0\n0\n0\n",
            "{way}: {err}"
        );
        assert_eq!(err, "", "{way}");
    }
}

/// Attack finding: a writer killed in its commit leaves its journal in
/// `.lock`, after the entry-count record (docs/cache.md); the builtin and
/// the binary roll it forward before they answer, but the fallback's
/// forkless `get_cache_size` (bash with FFKIT_BUILTIN=off, zsh) looked only
/// for a `.journal` file, and printed the stale `.size-index`. Now it tests
/// `.lock` as the library does (empty or exactly the record), and every
/// way in prints the repaired size, the walk's; repeated calls stay
/// forkless (`shell::get_cache_size_reads_a_valid_index_without_starting_a_process`).
#[test]
fn get_cache_size_after_a_writer_killed_in_its_commit_is_exact_on_every_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let d = t.join(".flowforge/cache");
        let o = output_within(
            sh(
                way,
                t,
                t,
                "write_cache_with_metadata a 1; write_cache_with_metadata b 22; get_cache_size",
            ),
            way,
        );
        let (before, err) = text(&o);
        assert_eq!(
            before,
            format!("{}\n", crate::util::oracle(&d).0),
            "{way}: {err}"
        );
        // The state a writer of `k` killed after its renames, before the
        // index, leaves: both files in place, the index as it was, and its
        // journal after the record in `.lock`, here cut short (a kill inside
        // the journal's write: it does not parse, and the index is rebuilt
        // by a walk).
        std::fs::write(d.join("k"), "vvvvvvvvvvvv").unwrap();
        std::fs::write(d.join("k.meta"), "{\"key\":\"k\"}").unwrap();
        let mut lock = std::fs::read(d.join(".lock")).unwrap();
        assert_eq!(lock.len(), 29, "{way}: the record alone");
        lock.extend_from_slice(b"{\"before\":{\"bytes\":");
        std::fs::write(d.join(".lock"), lock).unwrap();
        let want = crate::util::oracle(&d).0;
        let o = output_within(sh(way, t, t, "get_cache_size; get_cache_size"), way);
        let (out, err) = text(&o);
        assert_eq!(out, format!("{want}\n{want}\n"), "{way}: {err}");
        assert_eq!(
            std::fs::read(d.join(".lock")).unwrap().len(),
            29,
            "{way}: repaired"
        );
    }
}

/// Attack finding: under `ulimit -f` a write past the limit raises
/// SIGXFSZ, whose default action ends the process: the builtin's write of
/// a large value killed the shell itself (status 153, a core dump where
/// they are on; docs/shell.md promises it never takes the shell down),
/// and the binary died by the signal (153) leaving its caller no line.
/// Now both block SIGXFSZ: the write fails with EFBIG, exit 8 and one
/// line, nothing is written, and the shell goes on.
#[test]
fn a_write_past_ulimit_f_is_exit_8_and_never_ends_the_shell() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let script = "ulimit -f 1\n\
             d=$PWD/.flowforge/cache\n\
             v=$(printf '%3000s' ''); w=$(printf '%40000s' '')\n\
             write_cache_with_metadata k \"$v\"; echo \"arg=$?\"\n\
             write_cache_with_metadata k \"$w\"; echo \"pipe=$?\"\n\
             ffkit cache-write --dir \"$d\" k \"$v\"; echo \"applet=$?\"\n\
             \"$FFKIT_BIN\" cache-write --dir \"$d\" k \"$v\"; echo \"binary=$?\"\n\
             write_cache_with_metadata small v; echo \"small=$?\"; read_cache_with_ttl small";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(
            out, "arg=8\npipe=8\napplet=8\nbinary=8\nsmall=0\nv\n",
            "{way}: {err}"
        );
        let d = t.join(".flowforge/cache");
        let line = format!(
            "ffkit cache-write: cannot write an unnamed temp file (O_TMPFILE) in {}: File too large\n",
            d.display()
        );
        assert_eq!(err, line.repeat(4), "{way}");
        assert!(!d.join("k").exists(), "{way}");
        crate::util::assert_index_exact(&d, way);
    }
}

/// Attack finding: a standard output that is a pipe with O_NONBLOCK set on
/// it (by another user of the same pipe: node, ssh and others do) answers
/// EAGAIN while its reader is behind. The builtin waited and wrote it all;
/// the binary, and so every fallback function, failed at the pipe's 64 KiB:
/// `cannot write standard output: Resource temporarily unavailable`, exit
/// 1, the value cut short. Now the binary waits too (one rule,
/// `fsutil::wait_writable`), and every way in writes every byte.
#[test]
fn a_non_blocking_stdout_gets_every_byte_on_every_path() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let o = output_within(
            sh(
                way,
                t,
                t,
                "write_cache_with_metadata big \"$(printf '%1000000s' '')\"",
            ),
            way,
        );
        assert!(o.status.success(), "{way}: {}", text(&o).1);
        let (mut r, w) = std::io::pipe().unwrap();
        // SAFETY: F_GETFL/F_SETFL on a descriptor this test owns.
        unsafe {
            let fl = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
            assert!(libc::fcntl(w.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) == 0);
        }
        let script = "d=$PWD/.flowforge/cache\n\
             read_cache_with_ttl big; echo \"read=$?\" >&2\n\
             batch_read_cache big; echo \"batch=$?\" >&2\n\
             ffkit cache-read --dir \"$d\" big; echo \"applet=$?\" >&2\n\
             \"$FFKIT_BIN\" cache-read --dir \"$d\" big; echo \"binary=$?\" >&2";
        let mut c = sh(way, t, t, script);
        c.stdout(w).stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        drop(c);
        // The pipe fills (64 KiB) before anything is read, so every writer
        // meets EAGAIN at least once.
        crate::util::until("the pipe is full", || {
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD into a c_int, on the read end this test owns.
            unsafe { libc::ioctl(r.as_raw_fd(), libc::FIONREAD, &mut n) };
            n >= 65536
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err, "read=0\nbatch=0\napplet=0\nbinary=0\n", "{way}");
        let v = " ".repeat(1_000_000);
        let want = format!("{v}\nbig:{v}\n{v}{v}");
        assert!(
            got == want.as_bytes(),
            "{way}: {} bytes, want {}",
            got.len(),
            want.len()
        );
    }
}

/// `cache-read`'s hand parser (the wrappers' `--dir D -q --fn-newline --
/// KEY`, read without clap: `--fn-newline` as a clap option cost every
/// `cache-read` 3% more instructions) answers every call it takes as clap
/// does the same call spelled for clap (`--dir=D`): hit, miss, quiet or
/// not, a bad key, a key like an option, no dir yet.
#[test]
fn cache_read_fast_path_answers_as_clap() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("c");
    let w = |k: &str, v: &str| {
        let o = std::process::Command::new(bin())
            .args(["cache-write", "--dir"])
            .arg(&d)
            .args(["--", k, v])
            .output()
            .unwrap();
        assert!(o.status.success());
    };
    let dir = d.to_str().unwrap().to_string();
    let eq = format!("--dir={dir}");
    let none = tmp.path().join("none").to_str().unwrap().to_string();
    let none_eq = format!("--dir={none}");
    let cmd = || {
        let mut c = std::process::Command::new(bin());
        c.env_clear().env("HOME", tmp.path());
        c
    };
    let pairs_for = |dir: &str, eq: &str| -> Vec<(Vec<String>, Vec<String>)> {
        let mut v = Vec::new();
        for key in ["k", "-x", "missing", "", "a/b", "x.meta"] {
            for q in [true, false] {
                let mut fast = vec!["cache-read".to_string(), "--dir".into(), dir.into()];
                let mut clap = vec!["cache-read".to_string(), eq.into()];
                if q {
                    fast.push("-q".into());
                    clap.push("-q".into());
                }
                fast.extend(["--".to_string(), key.into()]);
                clap.extend(["--".to_string(), key.into()]);
                v.push((fast, clap));
            }
        }
        v
    };
    w("k", "v\n");
    w("-x", "dash");
    for (dir, eq) in [(&dir, &eq), (&none, &none_eq)] {
        let pairs = pairs_for(dir, eq);
        let refs: Vec<(Vec<&str>, Vec<&str>)> = pairs
            .iter()
            .map(|(a, b)| {
                (
                    a.iter().map(String::as_str).collect(),
                    b.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        let slices: Vec<(&[&str], &[&str])> = refs
            .iter()
            .map(|(a, b)| (a.as_slice(), b.as_slice()))
            .collect();
        crate::util::assert_fast_path_answers_as_clap(&cmd, &slices);
    }
}

/// Attack finding: a standard input that is a pipe with O_NONBLOCK set on
/// it, whose writer is behind, answered EAGAIN, and every path failed:
/// `batch_write_cache`, `cache_provider_data p` (data from standard input)
/// and `ffkit cache-write k -`, exit 1, `cannot read standard input:
/// Resource temporarily unavailable`. Now every path waits for the writer
/// (`fsutil::wait_readable`) and stores every byte.
#[test]
fn a_non_blocking_stdin_is_waited_for_on_every_path() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    for way in ways() {
        for (script, first, rest, want) in [
            (
                "batch_write_cache; echo \"rc=$?\"; batch_read_cache a b",
                "a:1\n",
                "b:2\n",
                "rc=0\na:1\nb:2\n",
            ),
            (
                "cache_provider_data p; echo \"rc=$?\"; get_provider_cache p",
                "xyz",
                "more",
                "rc=0\nxyzmore\n",
            ),
            (
                "\"$FFKIT_BIN\" cache-write --dir \"$PWD/.flowforge/cache\" q -; echo \"rc=$?\"; read_cache_with_ttl q",
                "q1",
                "q2",
                "rc=0\nq1q2\n",
            ),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            let (r, mut w) = std::io::pipe().unwrap();
            let probe = r.try_clone().unwrap();
            // SAFETY: F_GETFL/F_SETFL on a descriptor this test owns.
            unsafe {
                let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
                assert!(libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) == 0);
            }
            let mut c = sh(way, t, t, script);
            c.stdin(r).stdout(Stdio::piped()).stderr(Stdio::piped());
            let child = c.spawn().unwrap();
            drop(c);
            w.write_all(first.as_bytes()).unwrap();
            // Once the first part is read, the reader's next read finds
            // the pipe empty with its writer open: EAGAIN.
            crate::util::until("the first part is read", || {
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD into a c_int, on a read end this test owns.
                unsafe { libc::ioctl(probe.as_raw_fd(), libc::FIONREAD, &mut n) };
                n == 0
            });
            w.write_all(rest.as_bytes()).unwrap();
            drop(w);
            drop(probe);
            let o = child.wait_with_output().unwrap();
            let (out, err) = text(&o);
            assert_eq!(out, want, "{way}: {script}: {err}");
            assert_eq!(err, "", "{way}: {script}");
        }
    }
}

/// Attack finding (on this branch's own SIGXFSZ fix, and before it): a
/// blocked signal survives fork and exec, and std does not reset the mask.
/// The commands `cache_command`, `ffkit cache-run` and `ffkit lock-acquire
/// FILE -- CMD` run started with SIGXFSZ blocked (the binary blocked it at
/// start-up), and, typed in a shell with the builtin, with SIGCHLD (the
/// builtin's wait) and SIGPIPE blocked too: `yes | head -1` in such a
/// command no longer ended by SIGPIPE. Now every command starts with an
/// empty mask, on every path.
#[test]
fn commands_ffkit_runs_start_with_no_signal_blocked_on_every_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let script = "cache_command -- grep SigBlk /proc/self/status\n\
             ffkit cache-run --dir \"$PWD/r\" -- grep SigBlk /proc/self/status\n\
             ffkit lock-acquire \"$PWD/L.lock\" -- grep SigBlk /proc/self/status";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(out, "SigBlk:\t0000000000000000\n".repeat(3), "{way}: {err}");
    }
}

/// Attack finding: with standard error on a full disk (`2>/dev/full`), the
/// builtin's error lines (`eprintln!`) panicked; the panic was caught, but
/// the line reporting it panicked again outside `catch_unwind`, and bash
/// aborted (SIGABRT, status 134) at the first usage error
/// (`write_cache_with_metadata k`). The binary ignores a lost error line.
/// Now the builtin does too: every way in goes on with the same statuses,
/// with standard error full or closed.
#[test]
fn a_full_or_closed_stderr_never_ends_the_shell() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let calls = "write_cache_with_metadata ../x v; echo \"bad=$?\"\n\
             write_cache_with_metadata k; echo \"usage=$?\"\n\
             get_cache_size x/y; echo \"dev=$?\"\n\
             LOCK_TIMEOUT=abc read_cache_with_ttl k; echo \"cfg=$?\"\n\
             ffkit cache-read --dir \"$PWD/c\" nope; echo \"applet=$?\"\n";
        let script = format!("exec 2>/dev/full\n{calls}exec 2>&-\n{calls}");
        let o = output_within(sh(way, t, t, &script), way);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{way}: {out}{err}");
        assert_eq!(
            out,
            "bad=2\nusage=2\ndev=2\ncfg=12\napplet=4\n".repeat(2),
            "{way}"
        );
    }
}

/// Attack finding: the builtin collects a call's output in memory before
/// writing it; a value larger than the memory the shell may still have
/// (`ulimit -v`) made the allocation fail, and a failed allocation aborts
/// the process: the shell itself (SIGABRT), for a read redirected to a
/// file. Now the output buffer is grown with `try_reserve`, and the call
/// fails (`cannot write standard output: out of memory`, exit 1) while the
/// shell goes on. (The binary streams the value and needs no such buffer:
/// on the fallback the read succeeds.)
#[test]
fn an_output_larger_than_the_memory_left_fails_the_call_not_the_shell() {
    crate::builtin::library(&bin());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let script = "d=$PWD/.flowforge/cache\n\
         head -c 67108864 /dev/zero | \"$FFKIT_BIN\" cache-write --dir \"$d\" big - || exit 3\n\
         read -r _ kb _ < <(grep VmSize /proc/$$/status)\n\
         ulimit -v $((kb + 32768))\n\
         read_cache_with_ttl big >/dev/null; echo \"read=$?\"\n\
         ffkit cache-read --dir \"$d\" big >/dev/null; echo \"applet=$?\"";
    let o = output_within(sh("builtin", t, t, script), "builtin");
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert_eq!(out, "read=1\napplet=1\n", "{err}");
    assert_eq!(
        err,
        "ffkit cache-read: cannot write standard output: out of memory\n".repeat(2)
    );
}

/// `cache-run` (and `cache_command`, which runs it), `lock-acquire FILE --
/// CMD` and `flock` no longer end by SIGXFSZ (153) when they write past
/// `ulimit -f` themselves: `cache-run`'s output, a miss's passed on or a
/// hit's replayed, stops at the limit with exit 8 and one line, as every
/// other applet's write does; `lock-acquire`'s metrics row appended to a
/// log past the limit and `flock --verbose`'s lines are lost (as every
/// applet's row is), and the exit is the command's. The command itself is
/// started as a direct start would be: it still dies by SIGXFSZ writing
/// past the limit (153, the same bytes as a direct `seq`), with the same
/// blocked and ignored signals. On every path: the builtin, the fallback,
/// zsh, and the binary run from each.
#[test]
fn applets_that_run_a_command_answer_a_write_past_ulimit_f_with_exit_8() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let script = "export CACHE_PERF_MONITORING=enabled CACHE_PERF_METRICS=$PWD/m.csv\n\
             i=0; while [ $i -lt 100 ]; do echo 1700000000,x,0.1; i=$((i+1)); done >m.csv\n\
             sig() { grep -E '^Sig(Blk|Ign)' /proc/self/status | tr '\\n' ' '; }\n\
             ulimit -f 1\n\
             seq 100000 >direct; echo \"direct $? $(wc -c <direct)\"\n\
             for n in 1 2; do cache_command -- seq 100000 >fn$n; echo \"cache_command $? $(wc -c <fn$n)\"; done\n\
             for n in 1 2; do \"$FFKIT_BIN\" cache-run --dir \"$PWD/r\" -- seq 100000 >run$n; echo \"cache-run $? $(wc -c <run$n)\"; done\n\
             \"$FFKIT_BIN\" lock-acquire L.lock -- seq 100000 >lk; echo \"lock-acquire-cmd $? $(wc -c <lk)\"\n\
             \"$FFKIT_BIN\" flock L.lock seq 100000 >fl; echo \"flock-cmd $? $(wc -c <fl)\"\n\
             \"$FFKIT_BIN\" lock-acquire L.lock -- true; echo \"lock-acquire-row $?\"\n\
             \"$FFKIT_BIN\" flock --verbose L.lock true >>fl; echo \"flock-verbose $? $(wc -c <fl)\"\n\
             echo \"direct-sig $(sig)\"\n\
             echo \"lock-sig $(\"$FFKIT_BIN\" lock-acquire L.lock -- grep -E '^Sig(Blk|Ign)' /proc/self/status | tr '\\n' ' ')\"\n\
             echo \"flock-sig $(\"$FFKIT_BIN\" flock L.lock grep -E '^Sig(Blk|Ign)' /proc/self/status | tr '\\n' ' ')\"\n\
             echo \"run-sig $(\"$FFKIT_BIN\" cache-run --dir \"$PWD/r\" -- grep -E '^Sig(Blk|Ign)' /proc/self/status | tr '\\n' ' ')\"";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        let got: std::collections::HashMap<&str, Vec<&str>> = out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .fold(Default::default(), |mut m, (k, v)| {
                m.entry(k).or_default().push(v);
                m
            });
        let one = |k: &str| got.get(k).map(|v| v.join("|")).unwrap_or_default();
        let direct = one("direct");
        let (code, size) = direct.split_once(' ').unwrap();
        assert_eq!(code, "153", "{way}: {out}{err}");
        let limit: u64 = size.parse().unwrap();
        assert!(limit > 0 && limit < 100_000, "{way}: {out}");
        let eight = format!("8 {limit}|8 {limit}");
        assert_eq!(one("cache_command"), eight, "{way}: {out}{err}");
        assert_eq!(one("cache-run"), eight, "{way}: {out}{err}");
        assert_eq!(
            one("lock-acquire-cmd"),
            format!("153 {limit}"),
            "{way}: {out}{err}"
        );
        assert_eq!(
            one("flock-cmd"),
            format!("153 {limit}"),
            "{way}: {out}{err}"
        );
        assert_eq!(one("lock-acquire-row"), "0", "{way}: {out}{err}");
        assert_eq!(
            one("flock-verbose"),
            format!("0 {limit}"),
            "{way}: {out}{err}"
        );
        // SigBlk and SigIgn exactly: glibc's two internal signals (32, 33),
        // which its posix_spawn left ignored in the child, no longer are
        // (lock-acquire and flock fork the command under glibc).
        let masks = |k: &str| -> Vec<u64> {
            one(k)
                .split_whitespace()
                .filter_map(|w| u64::from_str_radix(w, 16).ok())
                .collect::<Vec<u64>>()
                .chunks(2)
                .flat_map(|c| [c[0], c.get(1).copied().unwrap_or(0)])
                .collect()
        };
        let sig = masks("direct-sig");
        assert_eq!(sig.len(), 2, "{way}: {out}");
        for k in ["lock-sig", "flock-sig", "run-sig"] {
            assert_eq!(masks(k), sig, "{way}: {k}: {out}");
        }
        // (The shell's own report of the direct `seq`'s death aside.)
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("ffkit")).collect();
        let line = "ffkit cache-run: cannot write the command's output: File too large";
        assert_eq!(ours, [line; 4], "{way}: {out}{err}");
    }
}

/// The command `cache_command` runs starts with the signals its caller
/// ignores still ignored (a `trap '' INT`, nohup's SIGHUP), as a direct
/// start would: on every path. zsh reset them in the `( )` subshell the
/// wrappers ran the binary from (SigIgn 0 for the command); zsh now runs
/// it as a simple command (`_ffkit_zrun`).
#[test]
fn cache_command_keeps_the_signals_its_caller_ignores() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        // Not from `$( )`: zsh resets ignored signals in that subshell too.
        let script = "trap '' INT USR1 HUP\n\
             sh -c 'grep ^SigIgn /proc/self/status' >d; echo \"direct $(cat d)\"\n\
             cache_command -- sh -c 'grep ^SigIgn /proc/self/status' >f; echo \"fn $(cat f)\"\n\
             v=enabled; echo \"fn-var $(CACHE_PERF_MONITORING=$v cache_command -- sh -c 'echo ${CACHE_PERF_MONITORING-unset} ${LOCK_TIMEOUT-unset}')\"";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        let line = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(' ')))
                .unwrap_or_default()
                .to_string()
        };
        let direct = line("direct");
        // HUP (1), INT (2) and USR1 (10) at least, as the shell set them.
        let mask = direct
            .split_whitespace()
            .last()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        assert_eq!(mask & 0x203, 0x203, "{way}: {out}{err}");
        assert_eq!(line("fn"), direct, "{way}: {out}{err}");
        // A one-call assignment reaches the command; an unset variable
        // stays unset (not even empty).
        assert_eq!(line("fn-var"), "enabled unset", "{way}: {out}{err}");
    }
}

/// `get_cache_size` records the same metrics rows on every path: none when
/// it answered straight from a valid `.size-index` (what the fallback's
/// forkless read does, starting no process and so recording nothing), one
/// per call when it did more (`CACHE_SIZE_TRACKING=disabled`: a walk; a
/// missing index: a rebuild). Before, the builtin recorded a row for each
/// call, valid index or not, and the fallback none for those.
#[test]
fn get_cache_size_records_the_same_rows_on_every_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let script = "export CACHE_PERF_MONITORING=enabled CACHE_PERF_METRICS=$PWD/m.csv\n\
             d=$PWD/.flowforge/cache\n\
             rows() { n=$(grep -c ',get_cache_size,' m.csv); echo \"$1 $((n - seen)) $(wc -l <o)\"; seen=$n; }\n\
             seen=0; write_cache_with_metadata k v || exit 1\n\
             { get_cache_size; get_cache_size; get_cache_size; } >o; rows valid\n\
             { CACHE_SIZE_TRACKING=disabled get_cache_size; CACHE_SIZE_TRACKING=disabled get_cache_size; } >o; rows walk\n\
             rm \"$d/.size-index\"; get_cache_size >o 2>/dev/null; rows rebuilt\n\
             get_cache_size >o; rows valid-again";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(
            out, "valid 0 3\nwalk 2 2\nrebuilt 1 1\nvalid-again 0 1\n",
            "{way}: {err}"
        );
    }
}
