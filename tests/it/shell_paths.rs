//! The shell functions' lock and namespace paths against a user who moves
//! things under them, on every way in (the builtin, the fallback in bash
//! and in zsh, the binary): a `current` symlink flipped and a repository
//! renamed under the same `$PWD`, a lock file replaced again and again
//! while a fallback waits (one LOCK_TIMEOUT for the whole call), a
//! write-only descriptor and a FIFO at a NAME's path, the held-lock table
//! after `ffkit lock-release`/`lock-acquire` typed in the shell, a HOME or
//! team-config change, and the one name rule (docs/shell.md, "Namespace"
//! and "Locks"; docs/locks.md).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::util::{bin, output_within, until};

fn lib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash")
}

fn zsh() -> bool {
    let ok = crate::util::have("zsh");
    if !ok {
        crate::util::skip("zsh not installed: the zsh fallback did not run");
    }
    ok
}

/// The ways in a test runs its script: "builtin" (bash with the builtin
/// loaded: exit 99 otherwise), "fallback" (bash, FFKIT_BUILTIN=off) and,
/// where installed, "zsh".
pub(crate) fn ways() -> Vec<&'static str> {
    crate::builtin::library(&bin());
    let mut w = vec!["builtin", "fallback"];
    if zsh() {
        w.push("zsh");
    }
    w
}

/// `SHELL -c SCRIPT` with the library sourced, in `dir`, HOME=`home`, no
/// FLOWFORGE_DEVELOPER, and `ffkit` on PATH.
pub(crate) fn sh(way: &str, home: &Path, dir: &Path, script: &str) -> Command {
    let (shell, check) = match way {
        "builtin" => (
            "bash",
            "[ \"$(type -t ffkit)\" = builtin ] || { echo 'builtin not loaded' >&2; exit 99; }\n",
        ),
        "fallback" => (
            "bash",
            "[ \"$(type -t ffkit)\" = file ] || { echo 'builtin loaded' >&2; exit 99; }\n",
        ),
        _ => ("zsh", ""),
    };
    let mut c = Command::new(shell);
    c.env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                bin().parent().unwrap().display()
            ),
        )
        .env("HOME", home)
        .env("FFKIT_BIN", bin())
        .env("FFKIT_LIB", lib())
        .env("LANG", "C.UTF-8")
        .current_dir(dir)
        .stdin(Stdio::null())
        .arg("-c")
        .arg(format!(". \"$FFKIT_LIB\"\n{check}{script}"));
    if way == "fallback" {
        c.env("FFKIT_BUILTIN", "off");
    }
    c
}

pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn git_init(dir: &Path) {
    fs::create_dir_all(dir.join(".git")).unwrap();
}

/// Issue 1: the fallback's namespace answers were keyed on `$PWD`; with a
/// `current` symlink flipped to another release (or the repository renamed
/// while the shell sits in it), `LOCK_TIMEOUT=1 acquire_critical_lock`
/// returned 2 without a word, or spun forever creating the binary's file.
/// Now the lock is the one of the dir the kernel names, on every way in,
/// and `lock-status` names the same file.
#[test]
fn the_namespace_follows_a_flipped_symlink_and_a_renamed_repository() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for v in ["v1", "v2", "v3"] {
            git_init(&t.join(v));
        }
        std::os::unix::fs::symlink("v1", t.join("current")).unwrap();
        git_init(&t.join("repo"));
        fs::create_dir_all(t.join("repo/sub")).unwrap();
        let script = "flip() { ln -sfn \"$1\" \"$T/current.new\" && mv -T \"$T/current.new\" \"$T/current\"; cd \"$T/current\"; }\n\
             cd \"$T/current\"; acquire_critical_lock deploy; echo \"v1=$?\"; release_critical_lock deploy\n\
             flip v2; rc=0; LOCK_TIMEOUT=1 acquire_critical_lock deploy || rc=$?; echo \"v2=$rc\"\n\
             rc=0; release_critical_lock deploy || rc=$?; echo \"rel=$rc\"\n\
             rm -rf \"$T/v1\"; flip v3; rc=0; LOCK_TIMEOUT=1 acquire_critical_lock deploy || rc=$?; echo \"v3=$rc\"\n\
             ffkit lock-status -q deploy && echo held; release_critical_lock deploy\n\
             cd \"$T/repo/sub\"; acquire_critical_lock x; release_critical_lock x\n\
             mv \"$T/repo\" \"$T/moved\"; rc=0; LOCK_TIMEOUT=1 acquire_critical_lock x || rc=$?; echo \"moved=$rc\"\n\
             ffkit lock-status -q x && echo held; release_critical_lock x";
        let mut c = sh(way, &t.join("v1"), t, script);
        c.env("T", t);
        let o = output_within(c, way);
        let (out, err) = text(&o);
        assert_eq!(
            out, "v1=0\nv2=0\nrel=0\nv3=0\nheld\nmoved=0\nheld\n",
            "{way}: {err}"
        );
        for v in ["v2", "v3"] {
            assert!(
                t.join(v).join(".flowforge/locks/deploy.lock").is_file(),
                "{way}: {v}"
            );
        }
        assert!(t.join("moved/.flowforge/locks/x.lock").is_file(), "{way}");
    }
}

/// Attack finding: the fallback (bash with FFKIT_BUILTIN=off, and zsh) kept
/// its namespace answer while `$PWD` named the same dir, so after a `git
/// init` above the current dir (or a parent's `.git` removed) it opened the
/// old namespace's lock file, which the binary refused (exit 2: "descriptor
/// N is open on …, not on the lock file …") on that call and every later
/// one, `cd .` included. Now each way in takes the lock on the file the
/// current namespace names, and `lock-status` names the same file held.
#[test]
fn a_git_dir_created_or_removed_above_moves_the_lock_on_every_way_in() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = fs::canonicalize(tmp.path()).unwrap();
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::create_dir_all(t.join("c/d")).unwrap();
        git_init(&t.join("c"));
        // Each dir starts with a fresh answer, so each change is the first
        // one that dir's answer sees.
        let script = "export FLOWFORGE_DEVELOPER=alice\n\
             st() { ffkit lock-status --json L | grep -o -e '\"path\":\"[^\"]*\"' -e '\"state\":\"[a-z]*\"'; }\n\
             take() { rc=0; LOCK_TIMEOUT=1 acquire_critical_lock L || rc=$?; echo \"$1=$rc\"; st\n\
                      rc=0; release_critical_lock L || rc=$?; echo \"rel=$rc\"; }\n\
             cd \"$T/a/b\"; take none\n\
             if command -v git >/dev/null; then git init -q \"$T/a\"; else mkdir \"$T/a/.git\"; fi\n\
             take init; cd .; take again\n\
             cd \"$T/c/d\"; take repo\n\
             rm -rf \"$T/c/.git\"\n\
             take removed; cd /; cd - >/dev/null; take again";
        let mut c = sh(way, &t, &t, script);
        c.env("T", &t);
        let o = output_within(c, way);
        let (out, err) = text(&o);
        let mut want = String::new();
        for (step, dir) in [
            ("none", "a/b"),
            ("init", "a"),
            ("again", "a"),
            ("repo", "c"),
            ("removed", "c/d"),
            ("again", "c/d"),
        ] {
            want += &format!(
                "{step}=0\n\"path\":\"{}\"\n\"state\":\"held\"\nrel=0\n",
                t.join(dir)
                    .join(".flowforge/dev-alice/locks/L.lock")
                    .display()
            );
        }
        assert_eq!(out, want, "{way}: {err}");
        assert!(err.is_empty(), "{way}: {err}");
    }
}

/// Issue 6: docs/shell.md says an edit of the team config is seen after a
/// `cd` elsewhere; the fallback kept its answer for the dir, so `cd ..; cd
/// sub` still used the old developer. Every way in now follows the edit.
#[test]
fn an_edited_team_config_is_seen_after_a_cd_elsewhere() {
    if !crate::util::need("git", "the team config's email lookup") {
        return;
    }
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let repo = t.join("repo");
        git_init(&repo);
        fs::create_dir_all(repo.join("sub")).unwrap();
        fs::create_dir_all(repo.join(".flowforge/team")).unwrap();
        fs::write(
            t.join(".gitconfig"),
            "[user]\n\temail = a@example.invalid\n",
        )
        .unwrap();
        let cfg = |id: &str| {
            format!(
                "{{\"team\":{{\"developers\":{{\"{id}\":{{\"email\":\"a@example.invalid\"}}}}}}}}"
            )
        };
        fs::write(repo.join(".flowforge/team/config.json"), cfg("alice")).unwrap();
        let script = format!(
            "cd sub; acquire_critical_lock k; release_critical_lock k\n\
             printf '%s' '{}' >../.flowforge/team/config.json\n\
             cd ..; cd sub; acquire_critical_lock k; release_critical_lock k",
            cfg("bob")
        );
        let o = output_within(sh(way, t, &repo, &script), way);
        assert!(o.status.success(), "{way}: {}", text(&o).1);
        for id in ["alice", "bob"] {
            assert!(
                repo.join(format!(".flowforge/dev-{id}/locks/k.lock"))
                    .is_file(),
                "{way}: {id}"
            );
        }
    }
}

/// Issue 5: the builtin kept its team lookup while the team config was
/// unchanged, so after `HOME=$H2` (another user.email) its
/// `acquire_critical_lock` still used the first developer while its own
/// `ffkit lock-status` asked git again. Every way in agrees now.
#[test]
fn a_home_change_moves_the_function_and_lock_status_together() {
    if !crate::util::need("git", "the team config's email lookup") {
        return;
    }
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let repo = t.join("repo");
        git_init(&repo);
        fs::create_dir_all(repo.join(".flowforge/team")).unwrap();
        fs::write(
            repo.join(".flowforge/team/config.json"),
            "{\"team\":{\"developers\":{\"alice\":{\"email\":\"a@x.invalid\"},\"bob\":{\"email\":\"b@x.invalid\"}}}}",
        )
        .unwrap();
        for (h, e) in [("h1", "a@x.invalid"), ("h2", "b@x.invalid")] {
            fs::create_dir_all(t.join(h)).unwrap();
            fs::write(
                t.join(h).join(".gitconfig"),
                format!("[user]\n\temail = {e}\n"),
            )
            .unwrap();
        }
        let script = "acquire_critical_lock k; release_critical_lock k\n\
             HOME=$T/h2; acquire_critical_lock k\n\
             ffkit lock-status --json k | grep -o 'dev-[a-z]*/locks/k.lock'\n\
             ffkit lock-status -q k && echo held || echo FREE";
        let mut c = sh(way, &t.join("h1"), &repo, script);
        c.env("T", t);
        let o = output_within(c, way);
        let (out, err) = text(&o);
        assert_eq!(out, "dev-bob/locks/k.lock\nheld\n", "{way}: {err}");
        assert!(
            repo.join(".flowforge/dev-alice/locks/k.lock").is_file(),
            "{way}"
        );
    }
}

/// Issue 2: a fallback retry (the lock file replaced while waiting, the
/// old library's release) started a fresh LOCK_TIMEOUT, so a name whose
/// file is replaced every 0.2 s kept the caller waiting as long as that
/// went on. Now the whole call has one deadline: exit 6, one line, soon
/// after LOCK_TIMEOUT, while the file is still being replaced.
#[test]
fn a_lock_file_replaced_again_and_again_does_not_extend_lock_timeout() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let locks = t.join(".flowforge/locks");
        fs::create_dir_all(&locks).unwrap();
        let file = locks.join("ch.lock");
        // Holds a new file before letting the old one go, 400 times: a
        // waiter is woken on the old file, finds it replaced, and meets
        // the new one held.
        let replacer = "B=$FFKIT_BIN F=$LOCKF\n\
             exec 8<>\"$F.n\"; \"$B\" lock-acquire -n --fd 8 || exit 1; mv -f \"$F.n\" \"$F\"; : >\"$F.ready\"\n\
             for i in $(seq 400); do sleep 0.2\n\
             exec 9<>\"$F.n\"; \"$B\" lock-acquire -n --fd 9 || exit 1; mv -f \"$F.n\" \"$F\"\n\
             exec 8<&- 8<&9 9<&-; done";
        let mut r = Command::new("bash");
        r.args(["-c", replacer])
            .env("FFKIT_BIN", bin())
            .env("LOCKF", &file)
            .stdin(Stdio::null());
        let mut replacing = r.spawn().unwrap();
        until("the replacer to hold the file", || {
            locks.join("ch.lock.ready").exists()
        });
        let start = Instant::now();
        let mut c = sh(
            way,
            t,
            t,
            "rc=0; LOCK_TIMEOUT=2 acquire_critical_lock ch || rc=$?; echo \"rc=$rc\"",
        );
        let o = c.output().unwrap();
        let took = start.elapsed();
        let still = replacing.try_wait().unwrap().is_none();
        let _ = replacing.kill();
        let _ = replacing.wait();
        let (out, err) = text(&o);
        assert!(still, "{way}: the replacer stopped first ({took:?})");
        assert_eq!(out, "rc=6\n", "{way}: {err}");
        assert_eq!(err.lines().count(), 1, "{way}: {err}");
        assert!(err.contains("after 2s"), "{way}: {err}");
        // LOCK_TIMEOUT=2; the replacer goes on for 80 s or more.
        assert!(took.as_secs() < 30, "{way}: {took:?}");
    }
}

/// Issue 3: `ffkit lock-acquire --fd N NAME` on a write-only descriptor
/// failed with exit 1 after taking the lock, and left it taken; a FIFO at
/// a NAME's path hung the fallback in its open and was exit 1 elsewhere.
/// Both are refused before anything is taken, with the documented codes:
/// 2 for the descriptor, 3 for a lock file that is not a regular file.
#[test]
fn a_write_only_descriptor_and_a_fifo_are_refused_before_anything_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    git_init(t);
    let o = output_within(
        sh(
            "fallback",
            t,
            t,
            "ffkit lock-acquire --prepare w\n\
             exec 7>>.flowforge/locks/w.lock; rc=0; ffkit lock-acquire --fd 7 w || rc=$?; echo \"wo=$rc\"\n\
             ffkit lock-status -q w && echo HELD || echo free",
        ),
        "write-only",
    );
    let (out, err) = text(&o);
    assert_eq!(out, "wo=2\nfree\n", "{err}");
    assert!(err.contains("write-only"), "{err}");
    crate::util::mkfifo(&t.join(".flowforge/locks/f.lock"));
    let script = "rc=0; acquire_critical_lock f 2>err || rc=$?; echo \"fn=$rc $(wc -l <err)\"\n\
                  rc=0; ffkit lock-acquire -n f 2>err || rc=$?; echo \"named=$rc $(wc -l <err)\"";
    for way in ways() {
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(out, "fn=3 1\nnamed=3 1\n", "{way}: {err}");
    }
}

/// Issue 4: the fallback's held-lock table went stale: after
/// `acquire_critical_lock x; ffkit lock-release x` (a plain command of the
/// owning shell may release) the next `acquire_critical_lock x` said
/// "already held" (5), and `ffkit lock-acquire y; release_critical_lock y`
/// was 4. The fallback now answers as the builtin does.
#[test]
fn the_held_lock_table_agrees_with_ffkit_lock_acquire_and_release() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    git_init(t);
    let script = "acquire_critical_lock x; ffkit lock-release x\n\
         rc=0; acquire_critical_lock x || rc=$?; echo \"again=$rc\"\n\
         rc=0; acquire_critical_lock x 2>/dev/null || rc=$?; echo \"twice=$rc\"\n\
         release_critical_lock x; ffkit lock-status -q x && echo HELD || echo free\n\
         ffkit lock-acquire y; rc=0; release_critical_lock y || rc=$?; echo \"y=$rc\"\n\
         ffkit lock-status -q y && echo HELD || echo free\n\
         rc=0; release_critical_lock z 2>/dev/null || rc=$?; echo \"z=$rc\"";
    for way in ways() {
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(
            out, "again=0\ntwice=5\nfree\ny=0\nfree\nz=4\n",
            "{way}: {err}"
        );
    }
}

/// Differential sweep: with `FF_DEBUG=true` the builtin said
/// `ffkit: debug: PATH: locked on descriptor 1023, held by the shell` and
/// nothing about metrics, while the fallback and zsh print the binary's
/// lines (docs/locks.md, docs/metrics.md). Now every way in prints the
/// same lines, from one place in the core (the "lock file … ready" line for
/// a missing lock file too); only pids, descriptor numbers and durations
/// differ.
#[test]
fn ff_debug_lock_lines_are_the_same_on_every_path() {
    let script = "acquire_critical_lock a; release_critical_lock a\n\
         acquire_session_lock dev s1; release_session_lock dev s1\n\
         export CACHE_PERF_METRICS=\"$HOME/m/log\"\n\
         acquire_critical_lock b; release_critical_lock b\n\
         acquire_session_lock dev s2; release_session_lock dev s2";
    // Digit runs (pids, fds, durations) become N; the dir becomes T.
    let norm = |t: &Path, err: &str| -> Vec<String> {
        let err = err.replace(&t.display().to_string(), "T");
        err.lines()
            .map(|l| {
                let mut o = String::new();
                for c in l.chars() {
                    if !c.is_ascii_digit() {
                        o.push(c);
                    } else if !o.ends_with('N') {
                        o.push('N');
                    }
                }
                o
            })
            .collect()
    };
    let p = "ffkit.bash: ";
    let taken = |f: &str, l: &str| {
        format!(
            "{p}{f}: debug: lock {l}: taken by kernel flock (exclusive) on the caller's fd N, holder record for pid N after N.Ns"
        )
    };
    let none = |f: &str, op: &str| {
        format!("{p}{f}: debug: {op} not recorded: the metrics log's dir does not exist")
    };
    let ready = |f: &str, l: &str, file: &str| {
        format!("{p}{f}: debug: {l}: lock file T/.flowforge/{file} ready")
    };
    let rec = |f: &str, op: &str| format!("{p}{f}: debug: recorded {op} (N.N ms) in T/m/log");
    let (ac, rc, asl, rsl) = (
        "acquire_critical_lock",
        "release_critical_lock",
        "acquire_session_lock",
        "release_session_lock",
    );
    let want = vec![
        ready(ac, "a", "locks/a.lock"),
        taken(ac, "a"),
        none(ac, "lock_acquire"),
        none(rc, "lock_release"),
        ready(asl, "sN", "dev-dev/sessions/locks/sN.lock"),
        taken(asl, "sN"),
        none(asl, "lock_acquire"),
        none(rsl, "lock_release"),
        ready(ac, "b", "locks/b.lock"),
        taken(ac, "b"),
        rec(ac, "lock_acquire"),
        rec(rc, "lock_release"),
        ready(asl, "sN", "dev-dev/sessions/locks/sN.lock"),
        taken(asl, "sN"),
        rec(asl, "lock_acquire"),
        rec(rsl, "lock_release"),
    ];
    for way in ways() {
        // A fresh dir each: a missing lock file gets the "ready" line.
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        fs::create_dir(t.join("m")).unwrap();
        let mut c = sh(way, t, t, script);
        c.env("FF_DEBUG", "true");
        let o = output_within(c, way);
        let (_, err) = text(&o);
        assert!(o.status.success(), "{way}: {err}");
        assert_eq!(norm(t, &err), want, "{way}: {err}");
    }
}

/// Issue 7: one name rule and one kind of error line on every way in: a
/// name that is not UTF-8 is refused (2) by the builtin as by the binary;
/// a FLOWFORGE_DEVELOPER with a newline is one error line; a deleted
/// current dir is 4.
#[test]
fn names_bad_ids_and_a_deleted_current_dir_get_one_answer_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    git_init(t);
    fs::create_dir_all(t.join("gone")).unwrap();
    let script = "rc=0; acquire_critical_lock $'\\xff\\xfe' 2>err || rc=$?; echo \"name=$rc $(wc -l <err)\"\n\
         rc=0; FLOWFORGE_DEVELOPER=$'x\\ny' acquire_critical_lock a 2>err || rc=$?; echo \"dev=$rc $(wc -l <err)\"\n\
         cd gone; rmdir ../gone; rc=0; acquire_critical_lock q 2>../err || rc=$?; echo \"gone=$rc $(wc -l <../err)\"";
    for way in ways() {
        let _ = fs::create_dir_all(t.join("gone"));
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(out, "name=2 1\ndev=12 1\ngone=4 1\n", "{way}: {err}");
    }
    assert!(
        !t.join(".flowforge/locks")
            .read_dir()
            .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_str().is_none()))),
        "a lock file for the bad name"
    );
}

/// A function that fails inside a trap handler returns its failure: in a
/// trap, a bare `return` returns the status from before the trap (0 here),
/// so the fallback's `… || return` reported a lock never taken as taken.
/// Every way in, the local and the remote (closed loopback port) backend.
#[test]
fn a_failure_inside_a_trap_is_returned_as_a_failure() {
    let mut seen = Vec::new();
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "trap 'acquire_critical_lock a/b; echo \"name=$?\"; \
             LOCK_TIMEOUT=bogus acquire_critical_lock x; echo \"timeout=$?\"; \
             FFKIT_BACKEND=redis://127.0.0.1:1 acquire_critical_lock y; echo \"remote=$?\"' USR1\n\
             kill -USR1 $$\necho done";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert!(out.ends_with("done\n"), "{way}: {out}{err}");
        for line in out.lines().filter(|l| l.contains('=')) {
            assert!(
                !line.ends_with("=0"),
                "{way}: {line} (a failure returned 0)\n{err}"
            );
        }
        seen.push((way, out));
    }
    for (way, out) in &seen[1..] {
        assert_eq!(out, &seen[0].1, "{way} against {}", seen[0].0);
    }
}

/// Leftover 3: the fallback's `_ffkit_lock_take` leaked a descriptor when
/// NAME's lock file was replaced (the old library's release deletes it,
/// docs/locks.md): a held-lock table entry whose descriptor was no longer
/// on the name's file was forgotten without closing it, one descriptor per
/// take. Every way in: the shell's open descriptors (/proc/$$/fd) are the
/// same after 20 takes over a deleted file, and after 40 take/release
/// rounds while another process replaces the file in a loop, as after the
/// first take.
#[test]
fn a_replaced_lock_file_leaks_no_descriptor() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let locks = t.join(".flowforge/locks");
        fs::create_dir_all(&locks).unwrap();
        let stop = t.join("stop");
        // Replaces the name's file (a new inode at the name) until told
        // to stop, as fast as it can. The shell counts its own descriptors
        // itself: from a `$( )` child the count raced the parent's close
        // of the substitution pipe's write end (7 or 8, either way).
        let replacer = "while [ ! -e \"$STOP\" ]; do : >\"$F.n\"; mv -f \"$F.n\" \"$F\"; done";
        let script = "F=.flowforge/locks/x.lock\n\
             fds() { n=0; for f in /proc/$$/fd/*; do n=$((n+1)); done; }\n\
             acquire_critical_lock x || exit 1\n\
             fds; first=$n\n\
             for i in $(seq 20); do rm -f \"$F\"; acquire_critical_lock x || exit 2; done\n\
             fds; echo \"deleted $first $n\"\n\
             release_critical_lock x || exit 3\n\
             F=\"$PWD/$F\" STOP=\"$PWD/stop\" bash -c \"$REPLACER\" &\n\
             r=0; for i in $(seq 40); do LOCK_TIMEOUT=5 acquire_critical_lock x && r=$((r+1)) && release_critical_lock x; done\n\
             : >stop; wait\n\
             acquire_critical_lock x || exit 4\n\
             fds; echo \"replaced $first $n $r\"";
        let mut c = sh(way, t, t, script);
        c.env("REPLACER", replacer);
        let o = output_within(c, way);
        let _ = fs::write(&stop, b"");
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{way}: {out}{err}");
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
        assert_eq!(lines.len(), 2, "{way}: {out}{err}");
        assert_eq!(lines[0][1], lines[0][2], "{way}: deleted: {out}{err}");
        assert_eq!(lines[1][1], lines[1][2], "{way}: replaced: {out}{err}");
    }
}

/// The shell functions' cache dir is their namespace's, a dir ffkit picks
/// (docs/cache.md, "Which dir"): a symbolic link there, or a dir another
/// user owns, is refused with one line and status 3 by every function on
/// every path, as `ffkit cache-*` picking the same namespace refuses it.
/// The wrappers passed it as `--dir`, a dir the user names, so every
/// function followed the link (and the fallback's forkless
/// `get_cache_size` read the index through it) where the binary said 3.
#[test]
fn a_namespace_cache_dir_ffkit_would_refuse_is_refused_by_every_function() {
    let root = crate::util::is_root();
    let calls = "for f in 'read_cache_with_ttl k' 'write_cache_with_metadata k2 v' \
                 get_cache_size 'batch_read_cache k' \"enforce_cache_limits '' 1M\" \
                 'cache_command -- echo ran'; do\n\
                 eval \"$f\" >/dev/null 2>>\"$ERR\"; printf '%s ' $?; done";
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let real = t.join("real");
        let o = Command::new(bin())
            .args(["cache-write", "--dir"])
            .arg(&real)
            .args(["k", "v"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        fs::create_dir_all(t.join(".flowforge/dev-alice")).unwrap();
        let ns = t.join(".flowforge/dev-alice/cache");
        std::os::unix::fs::symlink(&real, &ns).unwrap();
        let mut cases = vec![("a symbolic link", "is a symbolic link")];
        if root {
            cases.push(("another user's dir", "owned by uid 65534"));
        } else {
            crate::util::skip("not root: the other-owner case needs chown");
        }
        for (case, why) in cases {
            if case == "another user's dir" {
                fs::remove_file(&ns).unwrap();
                fs::rename(&real, &ns).unwrap();
                std::os::unix::fs::lchown(&ns, Some(65534), Some(65534)).unwrap();
            }
            let err = t.join("err");
            let _ = fs::remove_file(&err);
            let mut c = sh(way, t, t, calls);
            c.env("FLOWFORGE_DEVELOPER", "alice").env("ERR", &err);
            let o = output_within(c, way);
            let (out, _) = text(&o);
            let errs = fs::read_to_string(&err).unwrap_or_default();
            assert_eq!(out, "3 3 3 3 3 3 ", "{way}, {case}: {errs}");
            assert_eq!(errs.lines().count(), 6, "{way}, {case}: {errs}");
            for l in errs.lines() {
                assert!(
                    l.contains("(from the shell functions' namespace)") && l.contains(why),
                    "{way}, {case}: {l}"
                );
            }
            let o = Command::new(bin())
                .args(["cache-read", "k"])
                .env("FLOWFORGE_DEVELOPER", "alice")
                .current_dir(t)
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(3), "the binary, {case}");
            let dir = if case == "a symbolic link" {
                &real
            } else {
                &ns
            };
            assert!(!dir.join("k2").exists(), "{way}, {case}: written");
            assert!(!t.join("ran").exists());
        }
    }
}

/// A namespace dir others cannot write but its group can (mode 0770) is
/// refused (exit 3) saying "writable by its group", not "by others"; 0707
/// says "by others" and 0777 "by its group and others": the one wording
/// (`fsutil::writable_by`) on every path, for the namespace's cache dir
/// (shell functions and the binary) and for a per-user lock dir in a
/// shared place (`$XDG_RUNTIME_DIR/ffkit`). Before, every mode said
/// "writable by others".
#[test]
fn a_dir_writable_by_its_group_or_by_others_is_refused_in_the_modes_words() {
    use std::os::unix::fs::PermissionsExt;
    let cases = [
        (0o770, "writable by its group (mode 770)"),
        (0o707, "writable by others (mode 707)"),
        (0o777, "writable by its group and others (mode 777)"),
    ];
    for way in ways() {
        for (mode, words) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            let repo = t.join("repo");
            git_init(&repo);
            let ns = repo.join(".flowforge/dev-alice/cache");
            fs::create_dir_all(&ns).unwrap();
            fs::set_permissions(&ns, fs::Permissions::from_mode(mode)).unwrap();
            let rt = t.join("rt");
            fs::create_dir_all(rt.join("ffkit")).unwrap();
            fs::set_permissions(&rt, fs::Permissions::from_mode(0o700)).unwrap();
            fs::set_permissions(rt.join("ffkit"), fs::Permissions::from_mode(mode)).unwrap();
            let mut c = sh(
                way,
                t,
                &repo,
                "rc=0; read_cache_with_ttl k || rc=$?; echo $rc\n\
                 cd \"$OUT\" || exit 1; unset FLOWFORGE_DEVELOPER\n\
                 rc=0; LOCK_TIMEOUT=0 acquire_critical_lock x || rc=$?; echo $rc",
            );
            c.env("FLOWFORGE_DEVELOPER", "alice")
                .env("XDG_RUNTIME_DIR", &rt)
                .env("OUT", t);
            let o = output_within(c, way);
            let (out, err) = text(&o);
            assert_eq!(out, "3\n3\n", "{way} {mode:o}: {err}");
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 2, "{way} {mode:o}: {err}");
            assert!(
                lines[0].contains(&format!(
                    "cache dir {} (from the shell functions' namespace): {words}",
                    ns.display()
                )),
                "{way} {mode:o}: {err}"
            );
            assert!(
                lines[1].contains(&format!("lock dir {}: {words}", rt.join("ffkit").display())),
                "{way} {mode:o}: {err}"
            );
            if way == "builtin" {
                // The binary, once per mode.
                let o = Command::new(bin())
                    .args(["cache-read", "k"])
                    .env("FLOWFORGE_DEVELOPER", "alice")
                    .env("HOME", t)
                    .current_dir(&repo)
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&o.stderr);
                assert_eq!(o.status.code(), Some(3), "{err}");
                assert!(err.contains(words), "{mode:o}: {err}");
                let lock = |args: &[&str]| {
                    Command::new(bin())
                        .args(args)
                        .env_remove("FLOWFORGE_DEVELOPER")
                        .env_remove("FFKIT_LOCK_DIR")
                        .env("HOME", t)
                        .env("XDG_RUNTIME_DIR", &rt)
                        .current_dir(t)
                        .output()
                        .unwrap()
                };
                let o = lock(&["lock-acquire", "-n", "x"]);
                if o.status.success() {
                    lock(&["lock-release", "x"]);
                }
                let err = String::from_utf8_lossy(&o.stderr);
                assert_eq!(o.status.code(), Some(3), "{err}");
                assert!(err.contains(words), "{mode:o}: {err}");
            }
        }
    }
}

/// The rows of a metrics log: its operation names, in order.
fn log_ops(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(',').nth(1).map(str::to_string))
        .collect()
}

/// The namespace's metrics log is judged with its cache dir (docs/metrics.md,
/// "Where the log lives"): a namespace cache dir the cache refuses (group
/// writable, another user's) gets no row from the lock functions (the lock
/// still works, the row is dropped silently, as an unusable log's row is),
/// and `record_performance_metric` / `get_performance_metrics` answer 3
/// with the cache's one line, on every path alike. Before, the functions
/// handed the binary and the builtin the resolved log path as if the user
/// had named it, so lock rows were written into that dir on every path, and
/// `ffkit lock-acquire` on its own wrote there too. An accepted namespace
/// dir and a CACHE_PERF_METRICS the user named (even in a dir others can
/// write: the user's choice) still get every row.
#[test]
fn metrics_rows_never_land_in_a_namespace_dir_the_cache_refuses() {
    use std::os::unix::fs::PermissionsExt;
    let root = crate::util::is_root();
    let script = "for f in 'acquire_critical_lock x' 'release_critical_lock x' \
                  \"acquire_session_lock '' s\" \"release_session_lock '' s\" \
                  'record_performance_metric op 1 5' get_performance_metrics; do\n\
                  eval \"$f\" >/dev/null; printf '%s ' $?; done";
    let mut cases = vec!["group-writable"];
    if root {
        cases.push("another user's");
    } else {
        crate::util::skip("not root: the other-owner case needs chown");
    }
    let lock_rows = [
        "lock_acquire",
        "lock_release",
        "lock_acquire",
        "lock_release",
    ];
    for case in cases {
        let mut stderrs = Vec::new();
        for way in ways().into_iter().chain(["binary"]) {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            git_init(t);
            let ns = t.join(".flowforge/dev-alice/cache");
            fs::create_dir_all(&ns).unwrap();
            let log = ns.join(".perf-metrics.csv");
            let shared = t.join("shared");
            fs::create_dir_all(&shared).unwrap();
            fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
            let named = shared.join("log.csv");
            let refuse = || match case {
                "group-writable" => {
                    fs::set_permissions(&ns, fs::Permissions::from_mode(0o770)).unwrap()
                }
                _ => std::os::unix::fs::lchown(&ns, Some(65534), Some(65534)).unwrap(),
            };
            let run = |named_log: Option<&Path>| -> (String, String) {
                let mut c = if way == "binary" {
                    let mut c = Command::new("bash");
                    c.env_clear()
                        .env("PATH", "/usr/bin:/bin")
                        .env("B", bin())
                        .env("HOME", t)
                        .current_dir(t)
                        .stdin(Stdio::null())
                        .arg("-c")
                        .arg(
                            "for f in 'lock-acquire x' 'lock-release x' \
                             'lock-acquire --session s' 'lock-release --session s' \
                             'perf-metrics record op 4' 'perf-metrics --json'; do\n\
                             \"$B\" $f >/dev/null; printf '%s ' $?; done",
                        );
                    c
                } else {
                    sh(way, t, t, script)
                };
                c.env("FLOWFORGE_DEVELOPER", "alice")
                    .env("CACHE_PERF_MONITORING", "enabled");
                if let Some(l) = named_log {
                    c.env("CACHE_PERF_METRICS", l);
                }
                text(&output_within(c, way))
            };
            // Accepted: every row, in the namespace's log.
            fs::set_permissions(&ns, fs::Permissions::from_mode(0o700)).unwrap();
            let (out, err) = run(None);
            assert_eq!(out, "0 0 0 0 0 0 ", "{way}, accepted: {err}");
            assert_eq!(err, "", "{way}, accepted");
            let mut want: Vec<&str> = lock_rows.to_vec();
            want.push("op");
            assert_eq!(log_ops(&log), want, "{way}, accepted");
            fs::remove_file(&log).unwrap();
            // Refused: no row there, the locks still work.
            refuse();
            let (out, err) = run(None);
            assert_eq!(out, "0 0 0 0 3 3 ", "{way}, {case}: {err}");
            assert!(!log.exists(), "{way}, {case}: {:?}", log_ops(&log));
            assert_eq!(err.lines().count(), 2, "{way}, {case}: {err}");
            for l in err.lines() {
                assert!(l.contains("refused"), "{way}, {case}: {l}");
            }
            if way != "binary" {
                stderrs.push((way, err.replace(&t.display().to_string(), "T")));
            }
            // Named by the user: every row there, wherever it points.
            let (out, err) = run(Some(&named));
            assert_eq!(out, "0 0 0 0 0 0 ", "{way}, {case}, named: {err}");
            assert_eq!(err, "", "{way}, {case}, named");
            assert_eq!(log_ops(&named), want, "{way}, {case}, named");
            assert!(!log.exists(), "{way}, {case}, named");
        }
        // The functions say the same on every path.
        for (way, e) in &stderrs {
            assert_eq!(e, &stderrs[0].1, "{way} vs {}, {case}", stderrs[0].0);
        }
    }
}

/// Attack finding: `FFKIT_FN_LOG_DIR` is the functions' hidden hand-over to
/// the binary (docs/metrics.md), never a shell variable of theirs. A plain
/// (unexported) variable of that name in the script changed where the
/// builtin's own `ffkit perf-metrics --dir DIR` read (`{}`: another dir's
/// log), while the fallback's binary, which sees only exported variables,
/// read DIR's: two answers to one command. Now the builtin's `ffkit` reads
/// it only when exported, as the binary would; the functions still hand
/// over their own dir on every path.
#[test]
fn a_plain_fn_log_dir_variable_changes_no_ffkit_command_on_any_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "C=$PWD/.flowforge/dev-alice/cache; mkdir -p \"$C\" other; chmod 700 \"$C\" other\n\
                      record_performance_metric op 1 5 || exit 1\n\
                      FFKIT_FN_LOG_DIR=$PWD/other\n\
                      ffkit perf-metrics --dir \"$C\" --json; echo \"rc=$?\"\n\
                      get_performance_metrics; echo \"rc=$?\"\n\
                      FFKIT_FN_LOG_DIR=$PWD/other ffkit perf-metrics --dir \"$C\" --json; echo \"rc=$?\"";
        let mut c = sh(way, t, t, script);
        c.env("FLOWFORGE_DEVELOPER", "alice")
            .env("CACHE_PERF_MONITORING", "enabled");
        let (out, err) = text(&output_within(c, way));
        let row = "{\"op\": {\"count\": 1, \"total\": 4, \"avg\": 4, \"min\": 4, \"max\": 4, \"p50\": 4, \"p95\": 4, \"p99\": 4}}";
        assert_eq!(
            out,
            format!("{row}\nrc=0\n{row}\nrc=0\n{{}}\nrc=0\n"),
            "{way}: {err}"
        );
        assert_eq!(err, "", "{way}");
    }
}

/// Attack finding: a script's `readonly FLOWFORGE_DEVELOPER=bob` broke every
/// lock function off the builtin: the fallback gave the binary the lock's
/// developer id as a one-call assignment (`FLOWFORGE_DEVELOPER=id cmd`), so
/// bash printed "FLOWFORGE_DEVELOPER: readonly variable" on each lock call
/// (and, for another developer's session lock, spun until LOCK_TIMEOUT
/// printing it hundreds of times), and zsh ended the whole script (status 1).
/// Now the id reaches the binary without an assignment in the shell, on the
/// uncontended call and on the wait for a busy lock alike: one answer, no
/// line, on every way in. A `readonly HOME` failed every zsh function
/// (zsh's HOME is special, and its forwarding `local -x HOME=…` was
/// refused): the forwarding locals are hidden ones now (`local -hx`).
#[test]
fn a_readonly_flowforge_developer_is_never_assigned_to_on_any_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "readonly FLOWFORGE_DEVELOPER=bob HOME\n\
                      acquire_critical_lock a; echo \"a=$?\"\n\
                      release_critical_lock a; echo \"ra=$?\"\n\
                      acquire_session_lock alice s; echo \"s=$?\"\n\
                      release_session_lock alice s; echo \"rs=$?\"\n\
                      ( acquire_session_lock alice w && : >held && until [ -e go ]; do sleep 0.01; done ) &\n\
                      until [ -e held ]; do sleep 0.01; done\n\
                      ( sleep 0.2; : >go ) &\n\
                      acquire_session_lock alice w; echo \"w=$?\"\n\
                      release_session_lock alice w; echo \"rw=$?\"\n\
                      wait; echo done";
        let mut c = sh(way, t, t, script);
        c.env("LOCK_TIMEOUT", "5");
        let (out, err) = text(&output_within(c, way));
        assert_eq!(
            out, "a=0\nra=0\ns=0\nrs=0\nw=0\nrw=0\ndone\n",
            "{way}: {err}"
        );
        assert_eq!(err, "", "{way}");
        assert!(
            t.join(".flowforge/dev-alice/sessions/locks/w.lock")
                .is_file(),
            "{way}"
        );
        assert!(t.join(".flowforge/dev-bob/locks/a.lock").is_file(), "{way}");
    }
}

/// Attack finding: in zsh, a script with `set -e` and an ERR trap went on
/// after a function failed (`acquire_critical_lock` busy: the trap ran, then
/// the next command, in the critical section without the lock). zsh forgets
/// errexit for a function that turned it off locally once a ZERR trap has
/// run (each function's `emulate -L zsh` did); bash and a zsh script without
/// the trap stopped. Now the functions keep the caller's errexit, so the
/// script ends with the function's status on every way in, while a function
/// in a condition (`if`, `||`) still just fails.
#[test]
fn a_failing_function_ends_a_set_e_script_with_an_err_trap_on_every_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        for (call, status) in [
            ("LOCK_TIMEOUT=0 acquire_critical_lock a", 5),
            ("read_cache_with_ttl missing", 1),
            ("release_critical_lock never", 4),
        ] {
            let script = format!(
                "acquire_critical_lock a\n\
                 set -e\n\
                 trap 'echo \"trap=$?\"' ERR\n\
                 if LOCK_TIMEOUT=0 acquire_critical_lock a 2>/dev/null; then echo held; fi\n\
                 read_cache_with_ttl missing || echo \"or=$?\"\n\
                 {call}\n\
                 echo notreached"
            );
            let o = output_within(sh(way, t, t, &script), way);
            let (out, err) = text(&o);
            assert_eq!(o.status.code(), Some(status), "{way}: {call}: {out}{err}");
            assert!(out.starts_with("or=1\n"), "{way}: {call}: {out}{err}");
            assert!(!out.contains("notreached"), "{way}: {call}: {out}{err}");
        }
    }
}

/// Attack finding: off the builtin, a trap that took a lock while
/// `acquire_critical_lock` waited for another (bash runs it inside the
/// fallback's `wait`, zsh between commands) lost its entry in the held-lock
/// table: the waiting call had picked its slot before the wait and wrote
/// its own lock over the trap's. The lock was still held through a
/// descriptor the table no longer knew: asking for it again got the
/// binary's line instead of the functions' one, and after its release the
/// descriptor stayed open (one leaked per such trap). Now the slot is
/// chosen after the wait: the same lines as the builtin (which runs the
/// trap after the call), and no descriptor left on the trap's lock file.
#[test]
fn a_lock_taken_by_a_trap_during_a_wait_stays_in_the_table_on_every_path() {
    let mut seen = Vec::new();
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        // The USR1 goes out once the fallback's waiter runs (a child of
        // the shell; the builtin has none, and runs the trap after the call
        // in any case), and the holder lets L go only once it was sent.
        let script = "( acquire_critical_lock L && : >held && until [ -e sent ]; do sleep 0.01; done ) &\n\
                      until [ -e held ]; do sleep 0.01; done\n\
                      trap 'acquire_critical_lock T; echo \"t=$?\"' USR1\n\
                      me=$$\n\
                      ( n=0; until pgrep -P \"$me\" -f lock-acquire >/dev/null 2>&1 || [ $n -ge 100 ]; do sleep 0.01; n=$((n + 1)); done; kill -USR1 \"$me\"; : >sent ) &\n\
                      acquire_critical_lock L; echo \"L=$?\"\n\
                      LOCK_TIMEOUT=0 acquire_critical_lock T 2>again; sed \"s|$PWD|D|; s/pid [0-9]*/pid P/\" again\n\
                      release_critical_lock T; echo \"rT=$?\"\n\
                      release_critical_lock L; echo \"rL=$?\"\n\
                      wait\n\
                      for f in /proc/$$/fd/*; do [[ $f -ef .flowforge/locks/T.lock ]] && echo \"T open: $f\"; done\n\
                      echo done";
        let (out, err) = text(&output_within(sh(way, t, t, script), way));
        assert!(out.ends_with("done\n"), "{way}: {out}{err}");
        assert_eq!(err, "", "{way}");
        let out = if way == "builtin" {
            // The builtin keeps a released lock's descriptor for the next
            // acquisition (docs/shell.md): not a leak.
            out.lines()
                .filter(|l| !l.starts_with("T open"))
                .map(|l| format!("{l}\n"))
                .collect()
        } else {
            out
        };
        assert_eq!(
            out,
            "t=0\nL=0\nffkit.bash: acquire_critical_lock: D/.flowforge/locks/T.lock: already held by this owner (pid P); release it first\nrT=0\nrL=0\ndone\n",
            "{way}"
        );
        seen.push(way);
    }
    assert!(!seen.is_empty());
}

/// Attack finding: a script's `readonly IFS` ended a zsh script at its
/// first `acquire_critical_lock` or `get_cache_size` (the helpers' `IFS=
/// read` is a fatal error on a readonly IFS in zsh), and made bash's
/// fallback print "IFS: readonly variable" several times per lock call.
/// Now zsh reads without assigning IFS or gives up as without /proc (the
/// binary answers), bash's complaint goes nowhere, and every way in gives
/// the same answers.
#[test]
fn a_readonly_ifs_changes_no_answer_on_any_path() {
    let mut seen = Vec::new();
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "IFS=$'\\n\\t'; readonly IFS\n\
                      write_cache_with_metadata k v; echo \"w=$?\"\n\
                      read_cache_with_ttl k; get_cache_size\n\
                      acquire_critical_lock a; echo \"a=$?\"\n\
                      acquire_critical_lock a 2>/dev/null; echo \"again=$?\"\n\
                      release_critical_lock a; echo \"r=$?\"\n\
                      release_critical_lock a 2>/dev/null; echo \"r2=$?\"\n\
                      mkdir -p .flowforge/team; echo '{}' >.flowforge/team/config.json\n\
                      get_cache_size; acquire_session_lock d s; echo \"s=$?\"\n\
                      release_session_lock d s; echo \"rs=$?\"";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(err, "", "{way}");
        assert_eq!(
            out, "w=0\nv\n72\na=0\nagain=5\nr=0\nr2=4\n72\ns=0\nrs=0\n",
            "{way}"
        );
        seen.push(way);
    }
    assert!(!seen.is_empty());
}

/// Attack finding: in bash without the builtin, `readonly IFS` with
/// `set -e` ended the script, silently with status 1, at its first lock
/// call or `get_cache_size`: the helpers' `IFS= read` is a fatal error
/// under `set -e` there, `|| :` or not (as in zsh without it). Bash 4.4+
/// now tells a readonly IFS (`${IFS@a}`) and reads as zsh does then.
#[test]
fn a_readonly_ifs_under_set_e_changes_no_answer_on_any_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "readonly IFS; set -e\n\
                      write_cache_with_metadata k v; read_cache_with_ttl k; get_cache_size\n\
                      acquire_critical_lock a; echo \"a=$?\"\n\
                      rc=0; acquire_critical_lock a 2>/dev/null || rc=$?; echo \"again=$rc\"\n\
                      release_critical_lock a; echo \"r=$?\"\n\
                      acquire_session_lock d s; release_session_lock d s; echo end";
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(
            (out.as_str(), err.as_str()),
            ("v\n72\na=0\nagain=5\nr=0\nend\n", ""),
            "{way}"
        );
    }
}

/// Attack finding: bash's `set -k` (keyword: every `NAME=value` argument is
/// an environment assignment for the command) broke the fallback: its
/// `local x=…` and `export X=…` lost their arguments, so every function
/// off the builtin, and `cache_command` with it, printed `export`'s list of
/// all exported variables on stdout instead of answering. The functions
/// now turn it off for themselves alone (`local -`), and the script keeps
/// it.
#[test]
fn bash_set_k_changes_no_answer_on_any_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "set -k\n\
                      write_cache_with_metadata k v; printf 'w %s\\n' \"$?\"\n\
                      read_cache_with_ttl k; get_cache_size\n\
                      acquire_critical_lock x; printf 'a %s\\n' \"$?\"\n\
                      release_critical_lock x; printf 'r %s\\n' \"$?\"\n\
                      cache_command --ttl 5 -- printf 'cc\\n'\n\
                      case $- in *k*) printf 'still k\\n' ;; esac";
        let (out, err) = text(&output_within(sh(way, t, t, script), way));
        assert_eq!(err, "", "{way}");
        assert_eq!(out, "w 0\nv\n72\na 0\nr 0\ncc\nstill k\n", "{way}");
    }
}

/// Attack finding: zsh parses a sourced file under the caller's options,
/// and under `emulate sh` or `setopt ignore_braces` the fallback's `exec
/// {_ffkit_fd}<FILE` was `exec` of a command named `{_ffkit_fd}`: the
/// script ended, silently, at its first `acquire_critical_lock`. Now those
/// redirections are parsed when they run (eval, under the function's own
/// options).
#[test]
fn zsh_sourcing_under_emulate_sh_or_ignore_braces_keeps_the_lock_functions() {
    if !zsh() {
        return;
    }
    for opts in ["emulate sh", "setopt ignore_braces", "emulate ksh"] {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = format!(
            "{opts}\n. \"$FFKIT_LIB\"\n\
             acquire_critical_lock x; echo \"a=$?\"\n\
             (LOCK_TIMEOUT=0 acquire_critical_lock x 2>/dev/null; echo \"sub=$?\")\n\
             release_critical_lock x; echo \"r=$?\"\n\
             acquire_session_lock d s; echo \"s=$?\"\n\
             release_session_lock d s; echo \"rs=$?\"\n\
             echo end"
        );
        let (out, err) = text(&output_within(sh("zsh", t, t, &script), opts));
        assert_eq!(err, "", "{opts}");
        assert_eq!(out, "a=0\nsub=5\nr=0\ns=0\nrs=0\nend\n", "{opts}");
    }
}

/// Attack finding: with SIGPIPE ignored (`trap '' PIPE`, or a daemon's
/// children), a value over 32,000 characters that the binary refused before
/// reading it (a bad key or TTL) got a second line off the builtin: the
/// fallback's `printf … |` met the closed pipe and said `printf: write
/// error: Broken pipe` (zsh: `write error: broken pipe`). Now the binary's
/// line is the only one, on every way in.
#[test]
fn a_refused_long_value_is_one_line_with_sigpipe_ignored_on_every_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "trap '' PIPE\n\
                      v=$(head -c 200000 /dev/zero | tr '\\0' x)\n\
                      write_cache_with_metadata '' \"$v\"; echo \"e=$?\"\n\
                      write_cache_with_metadata k \"$v\" bogus 2>/dev/null; echo \"t=$?\"";
        let (out, err) = text(&output_within(sh(way, t, t, script), way));
        assert_eq!(out, "e=2\nt=2\n", "{way}: {err}");
        assert_eq!(
            err, "ffkit cache-write: invalid key '': is empty\n",
            "{way}"
        );
    }
}

/// Attack finding: with bash's `shopt -s nocasematch`, the fallback's
/// forkless `get_cache_size` took `CACHE_SIZE_TRACKING=ENABLED` or
/// `FF_DEBUG=FALSE` (bad values) for the defaults (its `case` obeyed
/// nocasematch) and printed the size with status 0, where the builtin and
/// zsh answer exit 12 with the binary's line. Now the defaults are compared
/// byte for byte: one answer on every way in.
#[test]
fn nocasematch_does_not_make_a_bad_value_a_default_on_any_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "write_cache_with_metadata k v\n\
                      shopt -s nocasematch 2>/dev/null || setopt nocasematch\n\
                      CACHE_SIZE_TRACKING=ENABLED get_cache_size; echo \"s=$?\"\n\
                      FF_DEBUG=FALSE get_cache_size; echo \"d=$?\"\n\
                      get_cache_size";
        let (out, err) = text(&output_within(sh(way, t, t, script), way));
        assert_eq!(out, "s=12\nd=12\n72\n", "{way}: {err}");
        assert_eq!(
            err,
            "ffkit cache-size: CACHE_SIZE_TRACKING='ENABLED': expected 'enabled' or 'disabled'\n\
             ffkit cache-size: FF_DEBUG='FALSE': expected 'true' or 'false'\n",
            "{way}"
        );
    }
}

/// Brief finding: a setting held in a shell array (`LOCK_TIMEOUT=(abc
/// 5)`) was read as `$LOCK_TIMEOUT` reads it (element 0) by the old
/// library and the fallback's own shell code, ignored by the builtin
/// and by the fallback's binary (bash exports no array), and a nameref
/// was read through by the builtin only (`export` exports its target).
/// Now every function on every path reads each forwarded variable as
/// `$NAME` reads it in bash: element 0 of an indexed array, key `0` of
/// an associative one, a nameref's target, an integer variable's value;
/// a variable declared without a value, or an array without element 0,
/// is unset (the default). One oracle for all: `abc` (or `bogus`) read is
/// exit 12, not read is 0. The binary run directly reads its environment
/// alone: a plain shell variable is not there, an exported one is.
#[test]
fn a_variable_means_what_dollar_name_reads_on_every_path() {
    // (name, setup, expected status) for bash; zsh has no namerefs, and
    // its `typeset X` makes X set and empty (the default too).
    let common: &[(&str, &str, i32)] = &[
        ("array0", "LOCK_TIMEOUT=(abc 5)", 12),
        ("array1", "LOCK_TIMEOUT=(5 abc)", 0),
        ("int", "typeset -i LOCK_TIMEOUT=2*3", 0),
        ("intbad", "typeset -i CACHE_SIZE_TRACKING=7", 12),
        ("declared", "typeset LOCK_TIMEOUT", 0),
        (
            "local",
            "f() { local -a LOCK_TIMEOUT=(abc); \"$@\"; }; run=f",
            12,
        ),
        ("exported", "typeset -x LOCK_TIMEOUT=abc", 12),
        ("plain", "LOCK_TIMEOUT=abc", 12),
        ("readonly", "typeset -r LOCK_TIMEOUT=(abc 1)", 12),
    ];
    let bash_only: &[(&str, &str, i32)] = &[
        ("assoc0", "declare -A LOCK_TIMEOUT=([0]=abc [k]=1)", 12),
        ("assocnone", "declare -A LOCK_TIMEOUT=([k]=abc)", 0),
        ("hole", "LOCK_TIMEOUT=([1]=abc)", 0),
        ("nameref", "x=abc; declare -n LOCK_TIMEOUT=x", 12),
        (
            "localref",
            "x=abc; f() { local -n LOCK_TIMEOUT=x; \"$@\"; }; run=f",
            12,
        ),
        ("refarray", "a=(abc 1); declare -n LOCK_TIMEOUT=a", 12),
        ("exparray", "declare -ax LOCK_TIMEOUT=(abc)", 12),
        ("rdassoc", "declare -rA LOCK_TIMEOUT=([0]=abc)", 12),
    ];
    let zsh_only: &[(&str, &str, i32)] = &[
        (
            "assoc0",
            "typeset -A LOCK_TIMEOUT; LOCK_TIMEOUT=(0 abc k 1)",
            12,
        ),
        (
            "assocnone",
            "typeset -A LOCK_TIMEOUT; LOCK_TIMEOUT=(k abc)",
            0,
        ),
    ];
    let mut seen = Vec::new();
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let cases: Vec<_> = common
            .iter()
            .chain(if way == "zsh" { zsh_only } else { bash_only })
            .collect();
        // The namespace asked once, in the shell the cases' subshells copy.
        let mut script = String::from(
            "acquire_critical_lock x; release_critical_lock x; get_cache_size >/dev/null\n",
        );
        let mut want = String::new();
        for (name, setup, code) in &cases {
            // Each case in its own subshell, which ends its lock too.
            script.push_str(&format!(
                "( {setup}\n ${{run-}} acquire_critical_lock x 2>/dev/null; echo \"{name}=$?\" )\n"
            ));
            want.push_str(&format!("{name}={code}\n"));
        }
        // The same variables on the other functions: an array's element 0
        // decides in get_cache_size's shell test and the builtin alike,
        // and in record_performance_metric's.
        script.push_str(
            "( CACHE_SIZE_TRACKING=(bogus enabled); get_cache_size 2>/dev/null; echo \"size=$?\" )\n\
             ( CACHE_PERF_MONITORING=(disabled enabled); CACHE_PERF_METRICS=(\"$PWD/m.csv\" x)\n\
               record_performance_metric op 1 2; write_cache_with_metadata k v; echo \"rec=$? $([ -e m.csv ] && echo logged)\" )\n\
             ( CACHE_PERF_METRICS=(\"$PWD/m2.csv\" x); write_cache_with_metadata k v; echo \"log=$? $([ -s m2.csv ] && echo logged)\" )\n\
             ( CACHE_SIZE_TRACKING=bogus; \"$FFKIT_BIN\" cache-size >/dev/null 2>&1; echo \"direct-plain=$?\"\n\
               export CACHE_SIZE_TRACKING; \"$FFKIT_BIN\" cache-size >/dev/null 2>&1; echo \"direct-exported=$?\" )\n",
        );
        want.push_str("size=12\nrec=0 \nlog=0 logged\ndirect-plain=0\ndirect-exported=12\n");
        let o = output_within(sh(way, t, t, &script), way);
        let (out, err) = text(&o);
        assert_eq!(err, "", "{way}");
        assert_eq!(out, want, "{way}");
        seen.push(way);
    }
    assert!(!seen.is_empty());
}

/// Brief finding: a trap that asks for the very lock its shell is waiting
/// for (`trap 'acquire_critical_lock X' USR1` fired during
/// `acquire_critical_lock X`) got 5 from the builtin and zsh (which run
/// the trap once the wait is over: the shell holds X by then) but, with
/// `FFKIT_BUILTIN=off`, whose bash runs the trap inside its `wait`, a
/// second waiter of the same shell that waited for its own shell until
/// LOCK_TIMEOUT and answered 6. Now the fallback's trap waits for the
/// waiting call's waiter first, and the binary's wait refuses once the
/// lock is its shell's (lock::fd::acquire): 5 with the same line on every
/// path, long before LOCK_TIMEOUT. The signal goes out only once the
/// waiting call said it waits (`FF_DEBUG=true`'s waiting line), and the
/// holder lets go only once it was sent.
#[test]
fn a_trap_asking_for_the_lock_its_shell_waits_for_is_5_on_every_path() {
    let mut seen = Vec::new();
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "( acquire_critical_lock X && : >held && n=0 && until [ -e sent ] || [ $n -ge 6000 ]; do sleep 0.01; n=$((n + 1)); done ) &\n\
                      until [ -e held ]; do sleep 0.01; done\n\
                      trap 'FF_DEBUG=false acquire_critical_lock X 2>>trap.err; echo \"t=$?\"' USR1\n\
                      me=$$\n\
                      ( until grep -qs 'waiting for lock' w; do sleep 0.01; done; kill -USR1 \"$me\"; : >sent ) &\n\
                      start=$SECONDS\n\
                      FF_DEBUG=true LOCK_TIMEOUT=20 acquire_critical_lock X 2>w; echo \"X=$?\"\n\
                      [ $((SECONDS - start)) -lt 15 ] || echo 'waited for the timeout'\n\
                      wait\n\
                      sed \"s|$PWD|D|; s/pid [0-9]*/pid P/\" trap.err\n\
                      release_critical_lock X; echo \"r=$?\"\n\
                      release_critical_lock X 2>/dev/null; echo \"r2=$?\"";
        let (out, err) = text(&output_within(sh(way, t, t, script), way));
        assert_eq!(err, "", "{way}");
        assert_eq!(
            out,
            "t=5\nX=0\nffkit.bash: acquire_critical_lock: D/.flowforge/locks/X.lock: already held by this owner (pid P); release it first\nr=0\nr2=4\n",
            "{way}"
        );
        seen.push(way);
    }
    assert!(!seen.is_empty());
}

/// The binary's half of the finding above, alone: a fallback waiter
/// (`lock-acquire --function F --fd N NAME`) whose shell takes NAME
/// through another descriptor while it waits refuses at its next look
/// (5, the same line) instead of waiting for its own shell until the
/// timeout. Its waiter is stopped (SIGSTOP, our own child and its
/// helper) while the holder lets go and the shell takes the lock, so
/// the shell, not the waiter, gets it. Stopped means state `T`, not a
/// SIGSTOP sent: a helper not yet scheduled since the signal still takes
/// a lock the release wakes it for (the kernel checks its wait's
/// condition before the pending signal), which failed this test 2 runs in
/// 16 on a loaded machine (held by the waiter: the shell timed out).
#[test]
fn a_fallback_waiter_refuses_once_its_shell_took_the_lock_meanwhile() {
    if !crate::util::have("pgrep") {
        crate::util::skip("pgrep not installed");
        return;
    }
    for way in ["builtin", "fallback"] {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "( acquire_critical_lock X && : >held && n=0 && until [ -e go ] || [ $n -ge 6000 ]; do sleep 0.01; n=$((n + 1)); done ) & hp=$!\n\
                      until [ -e held ]; do sleep 0.01; done\n\
                      exec {b}<.flowforge/locks/X.lock\n\
                      start=$SECONDS\n\
                      FF_DEBUG=true \"$FFKIT_BIN\" lock-acquire -w 20 --function acquire_critical_lock --fd \"$b\" -- X 2>w & w=$!\n\
                      h=; until grep -qs 'waiting for lock' w && h=$(pgrep -P \"$w\"); do sleep 0.01; done\n\
                      kill -STOP \"$w\" $h\n\
                      for p in \"$w\" $h; do until [ \"$(awk '{print $3}' /proc/$p/stat 2>/dev/null)\" = T ] || [ ! -e /proc/$p ]; do sleep 0.01; done; done\n\
                      : >go; wait \"$hp\"\n\
                      acquire_critical_lock X; echo \"a=$?\"\n\
                      kill -CONT $h \"$w\"\n\
                      wait \"$w\"; echo \"w=$?\"\n\
                      [ $((SECONDS - start)) -lt 15 ] || echo 'waited for the timeout'\n\
                      grep -v -e 'waiting for lock' -e ' debug: ' w | sed \"s|$PWD|D|; s/pid [0-9]*/pid P/\"\n\
                      release_critical_lock X; echo \"r=$?\"";
        let (out, err) = text(&output_within(sh(way, t, t, script), way));
        assert_eq!(err, "", "{way}");
        assert_eq!(
            out,
            "a=0\nw=5\nffkit.bash: acquire_critical_lock: D/.flowforge/locks/X.lock: already held by this owner (pid P); release it first\nr=0\n",
            "{way}"
        );
    }
}

/// Brief finding: a setting changed between the acquisition and the
/// release. `LOCK_OLD_LIBRARY=present` set only for the release deleted
/// the lock file on the fallback (its binary reads it at the release) and
/// kept it with the builtin (which used the value of the acquisition);
/// and a relative `FFKIT_LOCK_DIR` followed by a `cd` made the builtin
/// release the first dir's lock from the other dir, while the fallback
/// refused with the closed-descriptor line and then lost the lock. Now
/// every path reads each setting at the call (the release deletes the
/// file), and a relative lock dir is the current dir's, made absolute
/// (`namespace::Namespace::lock_dir`): from the other dir it names
/// another lock (4, "not held by this shell"), from the first one it
/// releases (0). A lock dir or developer changed for the release names
/// another file too.
#[test]
fn a_setting_changed_between_acquire_and_release_gets_one_answer_on_every_path() {
    let mut seen = Vec::new();
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "top=$PWD; r() { local n=$1; shift; \"$@\" 2>\"$top/e\"; local rc=$?; printf '%s\\n' \"$n=$rc $(sed \"s|$top|D|\" \"$top/e\")\"; }\n\
                      r a acquire_critical_lock o; r r eval 'LOCK_OLD_LIBRARY=present release_critical_lock o'\n\
                      [ -e .flowforge/locks/o.lock ] && echo kept || echo deleted\n\
                      r a eval 'LOCK_OLD_LIBRARY=present acquire_critical_lock p'; r r release_critical_lock p\n\
                      [ -e .flowforge/locks/p.lock ] && echo kept || echo deleted\n\
                      mkdir sub\n\
                      r a eval 'FFKIT_LOCK_DIR=rl acquire_critical_lock q'\n\
                      cd sub; r sub eval 'FFKIT_LOCK_DIR=rl release_critical_lock q'; cd ..\n\
                      r here eval 'FFKIT_LOCK_DIR=rl release_critical_lock q'\n\
                      r a eval 'FFKIT_LOCK_DIR=$PWD/la acquire_critical_lock v'\n\
                      r other eval 'FFKIT_LOCK_DIR=$PWD/lb release_critical_lock v'\n\
                      r same eval 'FFKIT_LOCK_DIR=$PWD/la release_critical_lock v'\n\
                      r a eval 'FLOWFORGE_DEVELOPER=alice acquire_critical_lock v'\n\
                      r other eval 'FLOWFORGE_DEVELOPER=bob release_critical_lock v'\n\
                      r same eval 'FLOWFORGE_DEVELOPER=alice release_critical_lock v'\n\
                      cd \"$O\"; mkdir -p sub; ln=pathdiv-$$\n\
                      r xa eval 'XDG_RUNTIME_DIR=rr acquire_critical_lock $ln'; cd sub\n\
                      r xsub eval 'LOCK_OLD_LIBRARY=present XDG_RUNTIME_DIR=rr release_critical_lock $ln'; cd ..\n\
                      r xhere eval 'XDG_RUNTIME_DIR=rr release_critical_lock $ln 2>/dev/null'";
        // Outside any repository, a relative XDG_RUNTIME_DIR is ignored:
        // the per-user dir, one file from both dirs (deleted by the
        // release, LOCK_OLD_LIBRARY=present: nothing is left there).
        let out_dir = tempfile::tempdir().unwrap();
        let mut c = sh(way, t, t, script);
        c.env("O", out_dir.path());
        let (out, err) = text(&output_within(c, way));
        assert_eq!(err, "", "{way}");
        assert_eq!(
            out,
            "a=0 \nr=0 \ndeleted\na=0 \nr=0 \nkept\na=0 \n\
             sub=4 ffkit.bash: release_critical_lock: D/sub/rl/q.lock: not held by this shell\n\
             here=0 \na=0 \n\
             other=4 ffkit.bash: release_critical_lock: D/lb/v.lock: not held by this shell\n\
             same=0 \na=0 \n\
             other=4 ffkit.bash: release_critical_lock: D/.flowforge/dev-bob/locks/v.lock: not held by this shell\n\
             same=0 \nxa=0 \nxsub=0 \nxhere=4 \n",
            "{way}"
        );
        seen.push(way);
    }
    assert!(!seen.is_empty());
}

/// Attack finding: a script's own `wait` in a trap that runs while the
/// bash fallback waits for a busy lock (bash runs the trap inside the
/// fallback's `wait`) reaped the fallback's waiter, which had just taken
/// the lock, and bash kept no status for the fallback's own `wait`: that
/// got 127, closed the descriptor the waiter had locked, and
/// `acquire_critical_lock` answered 127 with the lock dropped. Now a lost
/// status is answered from the descriptor (locked: 0), as the builtin and
/// zsh answer (they run the trap once the wait is over). The trap's `wait`
/// starts once the lock is this shell's, as `lock-status` says.
#[test]
fn a_scripts_own_wait_in_a_trap_does_not_steal_the_lock_waiters_status() {
    let mut seen = Vec::new();
    for way in ways() {
        for w in ["wait", "wait -n"] {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            git_init(t);
            let script = format!(
                "bash -c '. \"$FFKIT_LIB\"; acquire_critical_lock X && : >held && n=0 && until [ -e sent ] || [ $n -ge 6000 ]; do sleep 0.01; n=$((n + 1)); done' >/dev/null 2>&1 &\n\
                 until [ -e held ]; do sleep 0.01; done\n\
                 trap 'n=0; until ffkit lock-status X 2>/dev/null | grep -q \"pid $$ \" || [ $n -ge 3000 ]; do sleep 0.01; n=$((n + 1)); done; {w}; echo t' USR1\n\
                 me=$$\n\
                 ( until grep -qs 'waiting for lock' w; do sleep 0.01; done; kill -USR1 \"$me\"; : >sent ) &\n\
                 FF_DEBUG=true LOCK_TIMEOUT=20 acquire_critical_lock X 2>w; echo \"X=$?\"\n\
                 ffkit lock-status -q X && echo held\n\
                 release_critical_lock X; echo \"r=$?\""
            );
            let (out, err) = text(&output_within(sh(way, t, t, &script), way));
            assert_eq!(err, "", "{way} {w}");
            assert_eq!(out, "t\nX=0\nheld\nr=0\n", "{way} {w}");
        }
        seen.push(way);
    }
    assert!(!seen.is_empty());
}

/// Attack finding: the bash fallback hands a readonly array or nameref
/// setting (and a readonly FLOWFORGE_DEVELOPER for another developer's
/// lock) to the binary through env(1), which takes every argument with a
/// `=` before the command for one more NAME=VALUE: a FFKIT_BIN such as
/// `/opt/a=b/ffkit` made env(1) run the binary's first argument, and
/// every such call answered 127. The same answers on every path now.
#[test]
fn a_ffkit_bin_with_an_equals_sign_works_with_a_readonly_array_setting() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        fs::create_dir(t.join("a=b")).unwrap();
        std::os::unix::fs::symlink(bin(), t.join("a=b/ffkit")).unwrap();
        let script = "FFKIT_BIN=$PWD/a=b/ffkit\n\
                      readonly -a LOCK_TIMEOUT=(5 9)\n\
                      readonly FLOWFORGE_DEVELOPER=bob\n\
                      acquire_critical_lock a; echo \"a=$?\"\n\
                      release_critical_lock a; echo \"ra=$?\"\n\
                      acquire_session_lock alice s; echo \"s=$?\"\n\
                      release_session_lock alice s; echo \"rs=$?\"\n\
                      write_cache_with_metadata k v; echo \"w=$?\"";
        let (out, err) = text(&output_within(sh(way, t, t, script), way));
        assert_eq!(out, "a=0\nra=0\ns=0\nrs=0\nw=0\n", "{way}: {err}");
        assert_eq!(err, "", "{way}");
    }
}

/// Attack finding: in the bash fallback, a trap asking for the lock its
/// shell waits for waits for the waiting call's waiter first; a SIGINT
/// (trapped) that came during that wait ran its trap but ended neither
/// wait: the waiting call got the lock (0) and the trap's call was 5,
/// where the builtin ends the waiting call with 130 and the trap's call
/// then waits for the lock and gets it. The fallback answers the same now
/// (zsh holds back a `kill -INT` of the shell alone until its foreground
/// waiter ends: docs/shell.md). The INT is sent once the trap started and
/// the shell is back in a wait (/proc/PID/wchan).
#[test]
fn a_sigint_during_a_traps_wait_for_its_shells_waiter_ends_the_waiting_call() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    git_init(t);
    let script = "( acquire_critical_lock X && : >held && n=0 && until [ -e sent ] || [ $n -ge 6000 ]; do sleep 0.01; n=$((n + 1)); done ) >/dev/null 2>&1 &\n\
                  until [ -e held ]; do sleep 0.01; done\n\
                  trap ': >intrap; LOCK_TIMEOUT=20 acquire_critical_lock X 2>/dev/null; echo \"t=$?\"' USR1\n\
                  trap 'echo int' INT\n\
                  me=$$\n\
                  ( until grep -qs 'waiting for lock' w; do sleep 0.01; done; kill -USR1 \"$me\"\n\
                    n=0; until [ -e intrap ] && [ \"$(cat /proc/$me/wchan)\" = do_wait ] || [ $n -ge 3000 ]; do sleep 0.01; n=$((n + 1)); done\n\
                    kill -INT \"$me\"; : >sent ) &\n\
                  FF_DEBUG=true LOCK_TIMEOUT=20 acquire_critical_lock X 2>w; echo \"main=$?\"\n\
                  ffkit lock-status -q X && echo held\n\
                  release_critical_lock X; echo \"r=$?\"\n\
                  wait";
    let (out, err) = text(&output_within(sh("fallback", t, t, script), "fallback"));
    assert_eq!(err, "", "fallback");
    assert_eq!(out, "int\nt=0\nmain=130\nheld\nr=0\n", "fallback");
}

/// Attack finding: in the bash fallback, a trap asking for the lock its
/// shell waits for kills the waiting call's waiter when a SIGTERM (or
/// INT, HUP, QUIT; trapped) ends its wait for that waiter; a waiter that
/// had taken the lock on the waiting call's descriptor just before kept it
/// there until the trap returned: the trap's call was refused (5, the
/// record names the shell), or waited for its own shell until
/// LOCK_TIMEOUT (6, no record yet), and the waiting call then answered
/// 143 and closed the descriptor: the lock held by no one. The trap's
/// call now drops that lock first, so it gets the lock (0) and the
/// waiting call answers 143, as with the builtin. The waiter is kept
/// between its lock and its exit by an exclusive flock(1) on the metrics
/// log (it appends its timing under a shared lock); the TERM is sent once
/// `lock-status` names the shell.
#[test]
fn a_sigterm_while_a_trap_waits_for_a_waiter_that_just_took_the_lock_drops_it_first() {
    if !crate::util::need("flock", "the waiter-holds-the-lock TERM test") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    git_init(t);
    let script = ": >m.csv; export CACHE_PERF_METRICS=$PWD/m.csv\n\
                  ( acquire_critical_lock X && : >held && until [ -e sent ]; do sleep 0.01; done ) >/dev/null 2>&1 &\n\
                  until [ -e held ]; do sleep 0.01; done\n\
                  trap ': >intrap; LOCK_TIMEOUT=3 acquire_critical_lock X 2>/dev/null; echo \"t=$?\"' USR1\n\
                  trap 'echo sig' TERM\n\
                  me=$$\n\
                  ( until grep -qs 'waiting for lock' w; do sleep 0.01; done\n\
                    flock -x m.csv sh -c ': >mlocked; until [ -e go ]; do sleep 0.01; done' &\n\
                    until [ -e mlocked ]; do sleep 0.01; done\n\
                    kill -USR1 \"$me\"\n\
                    n=0; until [ -e intrap ] && [ \"$(cat /proc/$me/wchan)\" = do_wait ] || [ $n -ge 3000 ]; do sleep 0.01; n=$((n + 1)); done\n\
                    : >sent\n\
                    n=0; until ffkit lock-status X 2>/dev/null | grep -q \"pid $me \" || [ $n -ge 3000 ]; do sleep 0.01; n=$((n + 1)); done\n\
                    kill -TERM \"$me\"; : >go; wait ) &\n\
                  FF_DEBUG=true LOCK_TIMEOUT=20 acquire_critical_lock X 2>w; echo \"main=$?\"\n\
                  ffkit lock-status -q X && echo held\n\
                  release_critical_lock X; echo \"r=$?\"\n\
                  wait";
    let (out, err) = text(&output_within(sh("fallback", t, t, script), "fallback"));
    assert_eq!(err, "", "fallback");
    assert_eq!(out, "sig\nt=0\nmain=143\nheld\nr=0\n", "fallback");
}

/// Attack finding: a trap that releases the very lock its shell waits
/// for (`trap 'release_critical_lock X' USR1` during `acquire_critical_lock
/// X`) ran, in the bash fallback, inside the wait: the release answered 4
/// (not held yet) and the waiting call then kept the lock (0), where the
/// builtin and zsh run the trap once the wait is over: the release frees
/// the lock the waiting call got (0) and the script's own release after
/// it is 4. The fallback's release waits for the waiter first now. The
/// holder lets go once the trap has started (fallback), or after a second
/// (the builtin runs the trap only once it has the lock).
#[test]
fn a_trap_releasing_the_lock_its_shell_waits_for_releases_it_on_every_bash_path() {
    for way in ["builtin", "fallback"] {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "( acquire_critical_lock X && : >held && n=0 && until [ -e sent ] || [ $n -ge 6000 ]; do sleep 0.01; n=$((n + 1)); done ) >/dev/null 2>&1 &\n\
                      until [ -e held ]; do sleep 0.01; done\n\
                      trap ': >intrap; release_critical_lock X 2>/dev/null; echo \"t=$?\"' USR1\n\
                      me=$$\n\
                      ( until grep -qs 'waiting for lock' w; do sleep 0.01; done; kill -USR1 \"$me\"\n\
                        n=0; until [ -e intrap ] || [ $n -ge 100 ]; do sleep 0.01; n=$((n + 1)); done; : >sent ) &\n\
                      FF_DEBUG=true LOCK_TIMEOUT=20 acquire_critical_lock X 2>w; echo \"main=$?\"\n\
                      ffkit lock-status -q X || echo free\n\
                      release_critical_lock X 2>/dev/null; echo \"r=$?\"\n\
                      wait";
        let (out, err) = text(&output_within(sh(way, t, t, script), way));
        assert_eq!(err, "", "{way}");
        assert_eq!(out, "t=0\nmain=0\nfree\nr=4\n", "{way}");
    }
}

/// Attack finding: a nameref to an array element (`declare -n
/// FFKIT_LOCK_DIR='d[1]'`, `'m[k]'` of an association) is what `$NAME`
/// reads, the element, on the bash fallback; the builtin found no
/// variable named `d[1]` (bash's find_variable) and took the setting for
/// unset, so the lock went to the default dir. Both read the element now
/// (bash only: zsh has no namerefs).
#[test]
fn a_nameref_to_an_array_element_is_that_element_on_every_bash_path() {
    for way in ["builtin", "fallback"] {
        crate::builtin::library(&bin());
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        git_init(t);
        let script = "d=(x \"$PWD/l1\"); declare -n FFKIT_LOCK_DIR='d[1]'\n\
                      acquire_critical_lock a; echo \"a=$?\"; [ -f l1/a.lock ] && echo l1\n\
                      release_critical_lock a; echo \"ra=$?\"\n\
                      unset -n FFKIT_LOCK_DIR; declare -A m=([k]=\"$PWD/l2\"); declare -n FFKIT_LOCK_DIR='m[k]'\n\
                      acquire_critical_lock b; echo \"b=$?\"; [ -f l2/b.lock ] && echo l2\n\
                      release_critical_lock b; echo \"rb=$?\"";
        let (out, err) = text(&output_within(sh(way, t, t, script), way));
        assert_eq!(out, "a=0\nl1\nra=0\nb=0\nl2\nrb=0\n", "{way}: {err}");
        assert_eq!(err, "", "{way}");
    }
}

/// A status or release query creates nothing: `lock-status NAME`,
/// `lock-release NAME`, `lock-acquire -u NAME` and the functions'
/// releases of a name never taken answer free (1) / not held (4) on every
/// path and leave no lock dir behind, in a repository's namespace and in
/// the per-user default (`$XDG_RUNTIME_DIR/ffkit/locks`). Before, every
/// path but the builtin's `release_critical_lock` made the dir (and the
/// per-user base) on the way to that answer.
#[test]
fn a_status_or_release_of_a_lock_never_taken_creates_no_lock_dir_on_any_path() {
    let script = "for q in 'release_critical_lock x' 'release_session_lock d s' \
                  'ffkit lock-status -q x' 'ffkit lock-status -q --session x' \
                  'ffkit lock-release -q x' 'ffkit lock-release -q --session x' \
                  'ffkit lock-acquire -q -u x'; do \
                  rc=0; eval \"$q\" 2>/dev/null || rc=$?; printf '%s ' $rc; done";
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (repo, plain, rt) = (t.join("repo"), t.join("plain"), t.join("rt"));
        git_init(&repo);
        fs::create_dir_all(&plain).unwrap();
        for dir in [&repo, &plain] {
            let mut c = sh(way, t, dir, script);
            c.env("XDG_RUNTIME_DIR", &rt);
            let o = output_within(c, way);
            let (out, err) = text(&o);
            assert_eq!(out, "4 4 1 1 4 4 4 ", "{way} in {}: {err}", dir.display());
        }
        // The binary run directly, `FFKIT_LOCK_DIR` named.
        let d = t.join("named");
        for args in [
            &["lock-status", "-q", "x"][..],
            &["lock-release", "-q", "x"],
            &["lock-release", "--function", "release_critical_lock", "x"],
        ] {
            let o = Command::new(bin())
                .args(args)
                .env("FFKIT_LOCK_DIR", &d)
                .current_dir(&plain)
                .output()
                .unwrap();
            assert!(matches!(o.status.code(), Some(1 | 4)), "{args:?}: {o:?}");
        }
        assert!(
            !repo.join(".flowforge").exists(),
            "{way}: made in the repository"
        );
        assert!(!rt.exists(), "{way}: the per-user dir was made");
        assert!(!d.exists(), "FFKIT_LOCK_DIR was made");
    }
}

/// A stopped holder (SIGSTOP) keeps its lock: every way in waits its
/// `LOCK_TIMEOUT` and answers 6 with the line naming the stopped holder,
/// the binary run directly too, and `lock-status` says held
/// (docs/locks.md, "Safety").
#[test]
fn a_stopped_holder_keeps_its_lock_and_waiters_time_out_naming_it_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let d = t.join("locks");
    let mut h = sh(
        "fallback",
        t,
        t,
        "acquire_critical_lock n && kill -STOP $$; exit 0",
    );
    h.env("FFKIT_LOCK_DIR", &d);
    let mut holder = h.spawn().unwrap();
    let pid = holder.id();
    until("the holder stops", || {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('T'))
        })
    });
    let line = format!("n: timed out after 0.1s, held by pid {pid} ");
    for way in ways() {
        let mut c = sh(
            way,
            t,
            t,
            "rc=0; LOCK_TIMEOUT=0.1 acquire_critical_lock n || rc=$?; echo $rc\n\
             rc=0; ffkit lock-status -q n || rc=$?; echo $rc",
        );
        c.env("FFKIT_LOCK_DIR", &d);
        let o = output_within(c, way);
        let (out, err) = text(&o);
        assert_eq!(out, "6\n0\n", "{way}: {err}");
        assert!(err.contains(&line), "{way}: {err}");
    }
    let o = Command::new(bin())
        .args(["lock-acquire", "-w", "0.1", "n"])
        .env("FFKIT_LOCK_DIR", &d)
        .current_dir(t)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains(&line), "{err}");
    // Our own child: SIGKILL ends it stopped as it is.
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Unmounts what a test mounted under its dir, however it ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// A full file system: a named lock whose holder record cannot be written
/// (a lock file never written before) is not taken, exit 8 with the one
/// line, on every path, and stays free; a lock file written once before
/// is overwritten in place and keeps working (docs/locks.md, "Safety").
#[test]
fn a_full_disk_refuses_a_new_named_lock_with_8_and_keeps_an_old_one_working() {
    if !crate::util::need_root("not root: the full-disk lock test mounts a small tmpfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let d = t.join("fs");
    fs::create_dir_all(&d).unwrap();
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
        .arg(&d)
        .output()
        .unwrap();
    if !o.status.success() {
        crate::util::skip("cannot mount a tmpfs: the full-disk lock test did not run");
        return;
    }
    let _guard = Unmount(d.clone());
    let locks = d.join("locks");
    // `old` is written once while there is room, then the disk is filled.
    let mut c = sh(
        "fallback",
        t,
        t,
        "acquire_critical_lock old && release_critical_lock old",
    );
    c.env("FFKIT_LOCK_DIR", &locks);
    assert!(output_within(c, "prepare").status.success());
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", d.join("fill").display()))
        .stderr(Stdio::null())
        .status();
    for way in ways() {
        let mut c = sh(
            way,
            t,
            t,
            "rc=0; acquire_critical_lock new || rc=$?; echo $rc\n\
             rc=0; ffkit lock-status -q new || rc=$?; echo $rc\n\
             rc=0; acquire_critical_lock old || rc=$?; echo $rc\n\
             rc=0; release_critical_lock old || rc=$?; echo $rc",
        );
        c.env("FFKIT_LOCK_DIR", &locks);
        let o = output_within(c, way);
        let (out, err) = text(&o);
        assert_eq!(out, "8\n1\n0\n0\n", "{way}: {err}");
        assert!(
            err.contains("cannot write holder record") && err.contains("No space left"),
            "{way}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{way}: {err}");
    }
    let o = Command::new(bin())
        .args(["lock-acquire", "pair"])
        .env("FFKIT_LOCK_DIR", &locks)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(8), "{o:?}");
}

/// A named pair whose whole lock dir was removed while held (`rm -rf`) is
/// still released by its owner, status 0, by `ffkit lock-release NAME`
/// and by the release function, on every path, and the dir is not made
/// again. The binary's release found the holder by its `DIR/NAME.lock
/// (deleted)` descriptor only through the canonical dir, and answered
/// `not held` (4) once queries stopped making the missing dir.
#[test]
fn a_named_pair_whose_lock_dir_was_removed_is_released_by_its_owner_on_every_path() {
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let d = t.join("locks");
        let mut c = sh(
            way,
            t,
            t,
            "for rel in 'ffkit lock-release z' 'release_critical_lock z'; do\n\
             ffkit lock-acquire z || exit 1; rm -rf \"$FFKIT_LOCK_DIR\"\n\
             rc=0; eval \"$rel\" 2>/dev/null || rc=$?; printf '%s ' $rc\n\
             rc=0; eval \"$rel\" 2>/dev/null || rc=$?; printf '%s ' $rc; done",
        );
        c.env("FFKIT_LOCK_DIR", &d);
        let o = output_within(c, way);
        let (out, err) = text(&o);
        assert_eq!(out, "0 4 0 4 ", "{way}: {err}");
        assert!(!d.exists(), "{way}: the release made the lock dir again");
    }
}

/// A lock file that cannot be opened gets one line on every path, the
/// core's `cannot open lock file F: REASON`: before, the builtin said
/// `cannot open the lock file F: is a symbolic link (refused)` and the
/// fallback and zsh `F: is a symbolic link; refusing to lock through it`
/// (and, for another failure, `cannot open the lock file F` with no reason).
#[test]
fn a_lock_file_that_cannot_be_opened_is_one_line_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir(t.join("l")).unwrap();
    std::os::unix::fs::symlink("x.lock", t.join("l/x.lock")).unwrap();
    let script = "export FFKIT_LOCK_DIR=\"$PWD/l\"\n\
                  rc=0; acquire_critical_lock x 2>err || rc=$?; echo \"fn=$rc\"; cat err\n\
                  rc=0; ffkit lock-acquire -n x 2>err || rc=$?; echo \"named=$rc\"; cat err";
    let f = t.join("l/x.lock");
    let want = format!(
        "fn=3\nffkit.bash: acquire_critical_lock: cannot open lock file {0}: is a symbolic link (refused)\n\
         named=3\nffkit lock-acquire: cannot open lock file {0}: is a symbolic link (refused)\n",
        f.display()
    );
    for way in ways() {
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(out, want, "{way}: {err}");
    }
}

/// The shell's own typed `ffkit lock-release NAME` of its function lock,
/// then `release_critical_lock NAME`: 4 and one line on every path. Before,
/// the builtin said a bare `not held by this shell` and the fallback and
/// zsh that the lock was "released behind its back".
#[test]
fn a_typed_release_then_the_functions_release_is_one_line_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let script = "export FFKIT_LOCK_DIR=\"$PWD/l\"\n\
                  acquire_critical_lock x || exit 9; ffkit lock-release x || exit 8\n\
                  rc=0; release_critical_lock x 2>err || rc=$?; echo \"rel=$rc\"; cat err\n\
                  acquire_critical_lock x && release_critical_lock x && echo again";
    let want = format!(
        "rel=4\nffkit.bash: release_critical_lock: {}: not held by this shell (its lock was released since it was taken: lock-release NAME, lock-release --force or an unlock of its descriptor)\nagain\n",
        t.join("l/x.lock").display()
    );
    for way in ways() {
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(out, want, "{way}: {err}");
    }
}

/// A lock dir that is a file: status and releases 4 (`Not a directory`),
/// an acquire 1, the same on every path and from the binary; nothing is
/// created (docs/locks.md).
#[test]
fn a_lock_dir_that_is_a_file_gets_the_same_codes_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::write(t.join("f"), "").unwrap();
    let script = "export FFKIT_LOCK_DIR=\"$PWD/f\"\n\
                  rc=0; ffkit lock-status x 2>err || rc=$?; echo \"st=$rc $(grep -c 'x.lock: Not a directory' err)\"\n\
                  rc=0; ffkit lock-release x 2>err || rc=$?; echo \"rl=$rc $(grep -c 'x.lock: Not a directory' err)\"\n\
                  rc=0; release_critical_lock x 2>err || rc=$?; echo \"rcl=$rc $(grep -c 'x.lock: Not a directory' err)\"\n\
                  rc=0; acquire_critical_lock x 2>err || rc=$?; echo \"acq=$rc $(grep -c 'File exists' err)\"";
    for way in ways() {
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(out, "st=4 1\nrl=4 1\nrcl=4 1\nacq=1 1\n", "{way}: {err}");
        assert_eq!(std::fs::read(t.join("f")).unwrap(), b"", "{way}");
    }
}

/// A critical lock whose lock dir was moved aside and made again (the
/// path names another file now) is still released by its shell's
/// `release_critical_lock`, on every path: its descriptor carries the
/// function's mark. Before, the builtin released it (0) and the fallback
/// and zsh said 4, "the script closed or reopened the descriptor", which
/// the script had not, and left it locked until the shell exited.
#[test]
fn a_critical_lock_whose_dir_was_made_again_is_released_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let script = "export FFKIT_LOCK_DIR=\"$PWD/l\"; rm -rf l l2\n\
                  acquire_critical_lock d || exit 9; mv l l2; mkdir l\n\
                  rc=0; release_critical_lock d || rc=$?; echo \"rel=$rc\"\n\
                  rc=0; ffkit lock-status -q \"$PWD/l2/d.lock\" || rc=$?; echo \"moved=$rc\"";
    for way in ways() {
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(out, "rel=0\nmoved=1\n", "{way}: {err}");
    }
}

/// Attack finding: a script that ignores SIGPIPE (`trap '' PIPE`, or a
/// caller that starts it so: Python's `subprocess` with
/// `restore_signals=False`, a CI runner) runs its commands with SIGPIPE
/// ignored, so `yes | head -1` ends `yes` with EPIPE (exit 1), not the
/// signal. Under `cache_command` (and `ffkit cache-run` typed in the
/// script) the command got SIGPIPE at its default on every path, as the
/// binary ignores it for itself and a child started by Rust's std gets it
/// reset: `yes` died by the signal (141) where it exits 1 without ffkit.
/// Now the command starts with the caller's disposition: ignored when the
/// shell ignored it, at its default otherwise.
/// And with the builtin loaded, `ffkit cache-run -- CMD` typed in a script
/// (the builtin starts the binary itself) ran CMD with SIGQUIT ignored,
/// as bash ignores it for itself (an interactive bash SIGTERM too: `kill`
/// did nothing to it); bash gives its own commands those at their default,
/// and so does the builtin now (the job-control stops stay as the shell
/// has them: the next test). The full masks are compared with a command
/// the shell starts.
#[test]
fn cache_command_starts_the_command_with_the_callers_sigpipe_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    git_init(t);
    // The command's ignored signals, then those of one the shell starts
    // directly (the oracle), as hex masks.
    let probe = "grep ^SigIgn: /proc/self/status";
    for (trap, tag) in [("trap '' PIPE", "ign"), (":", "dfl")] {
        let script = format!(
            "{trap}\n\
             cache_command sh -c '{probe}; : {tag}'\n\
             ffkit cache-run -- sh -c '{probe}; : {tag} bin'\n\
             sh -c '{probe}'"
        );
        for way in ways() {
            let o = output_within(sh(way, t, t, &script), way);
            let (out, err) = text(&o);
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 3, "{way} {tag}: {out}{err}");
            let pipe_bit = |l: &str| {
                let hex = l.split_whitespace().last().unwrap_or("0");
                u64::from_str_radix(hex, 16).unwrap() & (1 << (libc::SIGPIPE - 1)) != 0
            };
            assert_eq!(pipe_bit(lines[2]), tag == "ign", "{way}: the oracle");
            assert_eq!(lines[0], lines[2], "{way} {tag}: cache_command");
            assert_eq!(lines[1], lines[2], "{way} {tag}: ffkit cache-run");
        }
    }
}

/// Attack finding: with the builtin loaded, an interactive bash ran the
/// command of `ffkit cache-run -- CMD` (and `ffkit lock-acquire L -- CMD`)
/// with SIGTSTP, SIGTTIN and SIGTTOU set back to their default. bash does
/// that only for a command it makes a job of (its own process group); the
/// builtin's child stays in the shell's group, so in a terminal where that
/// group is not orphaned (a bash started from another shell) Ctrl-Z stopped
/// the binary and CMD, and the shell, which ignores SIGTSTP and waited for
/// them, hung with no prompt. In `$( )` bash gives its own commands these
/// ignored, and the builtin did not. They are now inherited as bash has them:
/// the command's mask in `$( )` is the oracle's, and at the prompt CMD
/// ignores SIGTSTP (Ctrl-Z does nothing, as before that fix), while SIGTERM
/// and SIGQUIT stay at their default as bash gives them.
#[test]
fn an_interactive_shells_job_stop_signals_stay_ignored_for_the_builtins_command() {
    if Command::new("script").arg("--version").output().is_err() {
        return eprintln!("SKIP: no script(1) to give an interactive bash a terminal");
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    git_init(t);
    // An interactive bash with a terminal (script(1)'s pty): job control on.
    // The trailing `:` keeps bash from exec'ing the last command itself.
    fs::write(
        t.join("inner.sh"),
        ". \"$FFKIT_LIB\"\n\
         p='grep ^SigIgn: /proc/self/status'\n\
         echo \"$(ffkit cache-run --force -- sh -c \"$p\")\"\n\
         echo \"$(sh -c \"$p\")\"\n\
         ffkit cache-run --force -- sh -c \"$p\"\n\
         sh -c \"$p\"\n\
         :\n",
    )
    .unwrap();
    let script = "script -qec \"bash --norc -i $PWD/inner.sh\" /dev/null </dev/null";
    let mask = |l: &str| {
        let hex = l.split_whitespace().last().unwrap_or("x");
        u64::from_str_radix(hex, 16).unwrap_or(u64::MAX)
    };
    let bit = |s: libc::c_int| 1u64 << (s - 1);
    let stops = bit(libc::SIGTSTP) | bit(libc::SIGTTIN) | bit(libc::SIGTTOU);
    let dfl = bit(libc::SIGTERM) | bit(libc::SIGQUIT);
    for way in ["builtin", "fallback"] {
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        let out = out.replace('\r', "");
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("SigIgn:")).collect();
        assert_eq!(lines.len(), 4, "{way}: {out}{err}");
        assert_eq!(
            mask(lines[1]) & stops,
            stops,
            "{way}: the oracle in $( ): {out}"
        );
        assert_eq!(lines[0], lines[1], "{way}: ffkit cache-run in $( )");
        if way == "builtin" {
            let t = bit(libc::SIGTSTP);
            assert_eq!(mask(lines[2]) & t, t, "{way}: Ctrl-Z at the prompt: {out}");
        }
        assert_eq!(mask(lines[2]) & dfl, mask(lines[3]) & dfl, "{way}: {out}");
    }
}

/// A named pair (`ffkit lock-acquire NAME` typed in the shell) whose lock
/// dir was moved aside and made again, or whose symlinked lock dir's
/// target was removed, while held, is released by its shell, 0, by
/// `release_critical_lock NAME` and by `ffkit lock-release NAME`, on every
/// path, also when another owner has taken the name in the dir made again
/// (that lock stays held). The binary found the pair by the path alone,
/// which names another file or none now: the fallback and zsh answered 4
/// and the holder kept the old file locked until the shell exited; the
/// holder now says which path it was taken at.
#[test]
fn a_named_pair_whose_lock_dir_was_made_again_is_released_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let script = "held() { ffkit lock-status -q \"$1\" && echo held || echo free; }\n\
                  for rel in 'release_critical_lock d' 'ffkit lock-release d'; do\n\
                  export FFKIT_LOCK_DIR=\"$PWD/l\"; rm -rf l l2\n\
                  ffkit lock-acquire d || exit 9; mv l l2; mkdir l\n\
                  rc=0; eval \"$rel\" || rc=$?; echo \"mv=$rc $(held \"$PWD/l2/d.lock\")\"\n\
                  ffkit lock-acquire d || exit 9; mv l l2b; mkdir l; sleep 60 & o=$!\n\
                  ffkit lock-acquire --owner $o d || exit 8\n\
                  rc=0; eval \"$rel\" || rc=$?\n\
                  echo \"other=$rc $(held \"$PWD/l2b/d.lock\") $(held d)\"\n\
                  kill $o; wait $o; rm -rf l2b\n\
                  rm -rf real link; mkdir real; ln -s real link; export FFKIT_LOCK_DIR=\"$PWD/link\"\n\
                  ffkit lock-acquire d || exit 7; exec {k}<real/d.lock; rm -rf real\n\
                  rc=0; eval \"$rel\" || rc=$?; flock -n $k && f=free || f=held\n\
                  echo \"gone=$rc $f\"; exec {k}<&-\n\
                  done";
    let want = "mv=0 free\nother=0 free held\ngone=0 free\n".repeat(2);
    for way in ways() {
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        assert_eq!(out, want, "{way}: {err}");
    }
}

/// A lock function that fails says one line, the same on every path,
/// prefix included: `ffkit.bash: FUNC: ` and the core's words, whether
/// the builtin's function answers or the binary the fallback and zsh run
/// for it (`--function FUNC` names its lines; `lock::function_prog`):
/// busy (5), timed out (6), a session lock busy, a bad LOCK_TIMEOUT (12)
/// and a lock dir that cannot be made. Before, the fallback and zsh said
/// all but the first with the binary's prefix, `ffkit lock-acquire: `.
#[test]
fn a_failing_lock_function_says_the_same_line_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::write(t.join("f"), "").unwrap();
    let script = "export FFKIT_LOCK_DIR=\"$PWD/l\"; sleep 60 & o=$!\n\
                  ffkit lock-acquire --owner $o b && ffkit lock-acquire --session --owner $o s || exit 9\n\
                  for c in 'LOCK_TIMEOUT=0 acquire_critical_lock b' 'LOCK_TIMEOUT=0.2 acquire_critical_lock b' \\\n\
                  'LOCK_TIMEOUT=0 acquire_session_lock \"\" s' 'LOCK_TIMEOUT=abc acquire_critical_lock q' \\\n\
                  'FFKIT_LOCK_DIR=$PWD/f/x acquire_critical_lock q'; do\n\
                  rc=0; eval \"$c\" 2>err || rc=$?; echo \"$rc $(wc -l <err) $(cat err)\"; done\n\
                  echo \"o=$o\"; kill $o";
    let mut first: Option<(String, String)> = None;
    for way in ways() {
        let o = output_within(sh(way, t, t, script), way);
        let (out, err) = text(&o);
        let (lines, o) = out
            .rsplit_once("o=")
            .unwrap_or_else(|| panic!("{way}: {out}{err}"));
        // The holder's pid, its command (the owner's as the lock was
        // taken: zsh may not have run `sleep` in its child yet) and since
        // when it holds, which differ between two runs.
        let lines = lines.replace(&format!("pid {} ", o.trim()), "pid P ");
        let lines: String = lines
            .lines()
            .map(|l| match l.find(", command: ") {
                Some(i) => format!("{}, command: C\n", &l[..i]),
                None => format!("{l}\n"),
            })
            .collect();
        let held = |n: &str, f: &str, what: &str| {
            format!("{n} 1 ffkit.bash: {f}: {what}, held by pid P on ")
        };
        for (l, want) in lines.lines().zip([
            held("5", "acquire_critical_lock", "b: busy"),
            held("6", "acquire_critical_lock", "b: timed out after 0.2s"),
            held("5", "acquire_session_lock", "s: busy"),
            "12 1 ffkit.bash: acquire_critical_lock: LOCK_TIMEOUT: 'abc' is not a number of seconds"
                .into(),
            format!(
                "4 1 ffkit.bash: acquire_critical_lock: cannot create directory {}/f/x: Not a directory",
                t.display()
            ),
        ]) {
            assert!(l.starts_with(&want), "{way}: {l}\nwant {want}…");
        }
        assert_eq!(lines.lines().count(), 5, "{way}: {lines}{err}");
        match &first {
            None => first = Some((way.to_string(), lines)),
            Some((w, l)) => assert_eq!(&lines, l, "{way} differs from {w}"),
        }
    }
}

/// A fallback whose lock file was replaced while it waited (the old
/// library's release) retries on the name's new file with what is left of
/// LOCK_TIMEOUT, and its timeout there is the core's one line, naming the
/// whole timeout and the holder, as the builtin's and zsh's: the fallback
/// built its own, `X: timed out after 1.5s (LOCK_TIMEOUT)`, and the binary
/// it ran was quiet (`-qw LEFT`); it is now told the whole timeout
/// (`--whole-timeout`).
#[test]
fn a_retry_after_the_lock_file_was_replaced_times_out_with_the_same_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let script = "mkdir l; export FFKIT_LOCK_DIR=\"$PWD/l\"; sleep 60 & a=$!; sleep 60 & b=$!\n\
                  ffkit lock-acquire --owner $a X || exit 7\n\
                  ( FF_DEBUG=true LOCK_TIMEOUT=$T acquire_critical_lock X 2>err; echo \"rc=$?\" ) & w=$!\n\
                  until grep -q 'waiting' err 2>/dev/null; do sleep 0.01; done\n\
                  : >l/X.new; mv l/X.new l/X.lock; ffkit lock-acquire --owner $b X || exit 8\n\
                  kill $a; wait $w; grep -v -e debug -e waiting err | sed \"s/pid $b on .*/pid B/; s/pid $a on .*/pid A/\"; kill $b";
    // The binary's path (the builtin's and zsh's lines are checked by
    // a_failing_lock_function_says_the_same_line_on_every_path).
    crate::builtin::library(&bin());
    // The first wait must last until the file is replaced and its holder
    // gone: a timeout twice as long whenever a loaded machine was slower.
    for secs in [1, 2, 4, 8] {
        let mut c = sh("fallback", t, t, script);
        c.env("T", secs.to_string());
        let o = output_within(c, "fallback");
        let (out, err) = text(&o);
        let _ = std::fs::remove_dir_all(t.join("l"));
        let _ = std::fs::remove_file(t.join("err"));
        if out.ends_with("pid A\n") && secs < 8 {
            continue;
        }
        assert_eq!(
            out,
            format!(
                "rc=6\nffkit.bash: acquire_critical_lock: X: timed out after {secs}s, held by pid B\n"
            ),
            "{err}"
        );
        return;
    }
}

/// Attack finding: `lock-acquire L -- CMD` (and `ffkit flock F CMD`)
/// started CMD with SIGPIPE at its default under a caller that ignores it
/// (`trap '' PIPE`, Python's `subprocess` with `restore_signals=False`, a
/// CI runner), so `yes | head -1` under the lock ended `yes` by the signal
/// (141) where without ffkit it exits 1; and, under glibc, with signals 32
/// and 33 ignored (glibc's `posix_spawn` ignores its internal signals in
/// the child), which no command a shell starts has. The full ignored
/// masks are compared with a command the shell starts, with and without
/// `trap '' PIPE`, on every path.
#[test]
fn lock_command_starts_the_command_with_the_callers_signals_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    git_init(t);
    let probe = "grep ^SigIgn: /proc/self/status";
    for (trap, tag) in [("trap '' PIPE", "ign"), (":", "dfl")] {
        let script = format!(
            "{trap}\n\
             ffkit lock-acquire sigs -- sh -c '{probe}; : {tag}'\n\
             ffkit lock-acquire \"$PWD/sigs.lock\" -- sh -c '{probe}; : {tag}'\n\
             ffkit flock \"$PWD/sigs.flock\" sh -c '{probe}; : {tag}'\n\
             sh -c '{probe}'"
        );
        for way in ways() {
            let o = output_within(sh(way, t, t, &script), way);
            let (out, err) = text(&o);
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 4, "{way} {tag}: {out}{err}");
            let pipe_bit = |l: &str| {
                let hex = l.split_whitespace().last().unwrap_or("0");
                u64::from_str_radix(hex, 16).unwrap() & (1 << (libc::SIGPIPE - 1)) != 0
            };
            assert_eq!(pipe_bit(lines[3]), tag == "ign", "{way}: the oracle");
            for (i, what) in ["named", "file", "flock"].iter().enumerate() {
                assert_eq!(lines[i], lines[3], "{way} {tag}: {what}");
            }
        }
    }
}

/// One lock function call is one metrics row on every path, whatever its
/// answer (docs/metrics.md, "Self-timing"): a busy or timed-out
/// `acquire_critical_lock` and a `release_critical_lock` of a lock never
/// taken are one row each, as the binary the fallback runs records; a
/// refusal before any try (a subshell's release of its shell's lock)
/// none. The builtin recorded only successes, and the bash fallback two
/// `lock_acquire` rows for one contended call (its non-blocking try and
/// its wait), so `perf-metrics` counted the same script's locks three
/// ways.
#[test]
fn a_failed_lock_call_is_one_metrics_row_on_every_path() {
    let script = "mkdir -p .flowforge/cache\n\
         rc=0; release_critical_lock never 2>/dev/null || rc=$?; echo \"never=$rc\"\n\
         acquire_critical_lock a\n\
         ( rc=0; LOCK_TIMEOUT=0 acquire_critical_lock a 2>/dev/null || rc=$?; echo \"busy=$rc\" )\n\
         ( rc=0; LOCK_TIMEOUT=0.1 acquire_critical_lock a 2>/dev/null || rc=$?; echo \"timeout=$rc\" )\n\
         ( rc=0; release_critical_lock a 2>/dev/null || rc=$?; echo \"sub=$rc\" )\n\
         release_critical_lock a\n\
         cut -d, -f2 .flowforge/cache/.perf-metrics.csv | sort | uniq -c | tr -s ' '";
    for way in ways() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let dir = t.join("w");
        fs::create_dir_all(&dir).unwrap();
        let mut c = sh(way, t, &dir, script);
        c.env("XDG_RUNTIME_DIR", t.join("rt"));
        let o = output_within(c, way);
        let (out, err) = text(&o);
        assert_eq!(
            out, "never=4\nbusy=5\ntimeout=6\nsub=4\n 3 lock_acquire\n 2 lock_release\n",
            "{way}: {err}"
        );
    }
}
