//! One verdict on every lock path (docs/locks.md, docs/shell.md): the
//! binary's `lock-acquire`/`lock-release`/`lock-status`, the shell
//! functions with the bash builtin, with `FFKIT_BUILTIN=off` (the
//! fallback) and in zsh, each through real processes, on the states that
//! used to get two answers: an old-library lock file whose pid is dead or
//! stale or not a record, a lock file deleted or overwritten while held, a
//! subshell's refused release, and a named pair whose owner was killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use crate::util::bin;

/// The shell paths: "builtin" (bash with the builtin loaded), "fallback"
/// (bash, FFKIT_BUILTIN=off), "zsh" (when installed).
fn paths() -> Vec<&'static str> {
    let mut p = vec!["builtin", "fallback"];
    if Command::new("zsh")
        .args(["-c", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        p.push("zsh");
    } else {
        crate::util::skip("zsh not installed: the zsh path did not run");
    }
    p
}

/// A scratch dir with a lock dir (`FFKIT_LOCK_DIR`) for every call.
struct Sc {
    tmp: tempfile::TempDir,
}

impl Sc {
    fn new() -> Sc {
        crate::builtin::library(&bin());
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("home")).unwrap();
        let locks = tmp.path().join("locks");
        fs::create_dir(&locks).unwrap();
        fs::set_permissions(&locks, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Sc { tmp }
    }

    fn locks(&self) -> PathBuf {
        self.tmp.path().join("locks")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.locks().join(format!("{name}.lock"))
    }

    fn env(&self, c: &mut Command) {
        c.env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin",
                    bin().parent().unwrap().display()
                ),
            )
            .env("HOME", self.tmp.path().join("home"))
            .env("FFKIT_BIN", bin())
            .env(
                "FFKIT_LIB",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash"),
            )
            .env("FFKIT_LOCK_DIR", self.locks())
            .env("CACHE_PERF_MONITORING", "disabled")
            .env("LANG", "C.UTF-8")
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
    }

    /// The binary, `ffkit ARGS`.
    fn ffkit(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin());
        self.env(&mut c);
        c.args(args).output().unwrap()
    }

    /// `SCRIPT` in a shell with the library sourced, on `path`; the
    /// builtin must be loaded exactly on "builtin" (exit 99 otherwise).
    fn shell(&self, path: &str, script: &str) -> Command {
        let (sh, check) = match path {
            "builtin" => ("bash", "[ \"$(type -t ffkit)\" = builtin ]"),
            "fallback" => ("bash", "[ \"$(type -t ffkit)\" = file ]"),
            _ => ("zsh", "true"),
        };
        let mut c = Command::new(sh);
        self.env(&mut c);
        if path == "fallback" {
            c.env("FFKIT_BUILTIN", "off");
        }
        c.arg("-c").arg(format!(
            ". \"$FFKIT_LIB\"\n{check} || {{ echo 'wrong path' >&2; exit 99; }}\n{script}"
        ));
        c
    }

    fn run(&self, path: &str, script: &str) -> Output {
        let o = self.shell(path, script).output().unwrap();
        assert_ne!(o.status.code(), Some(99), "{path}: {}", text(&o.stderr));
        o
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A pid that is surely not running: a child of ours, reaped.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// Item 1: an old-library lock file (a bare pid) gets one verdict on every
/// path, by the one rule of `lock::compat`: held only when it is the old
/// library's record exactly (digits, one newline), less than 300 s old and
/// its pid alive. A dead pid, a stale file and anything that is not such a
/// record are free: `lock-status` says so (text and `--json`, exit 1),
/// `lock-release` says not held (4), and every acquiring path takes it.
/// Before, `lock-status` said "held (exclusive, dotlock) by pid P (the old
/// library's lock file)" for a dead pid and `lock-release` answered 5
/// while `lock-acquire -n` took the lock at once; and the parsers disagreed
/// (" 7 \n" and "4242" without a newline counted as records).
#[test]
fn an_old_library_file_gets_one_verdict_from_status_release_and_every_acquirer() {
    let sc = Sc::new();
    let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
    let live = sleeper.id();
    let dead = dead_pid();
    let old = SystemTime::now() - Duration::from_secs(301);
    // (content, aged past 300 s, held by the old library)
    let cases: Vec<(String, bool, bool)> = vec![
        (format!("{live}\n"), false, true),
        (format!("{dead}\n"), false, false),
        (format!("{live}\n"), true, false),
        (format!(" {live}x\n"), false, false),
        (format!("{live}"), false, false),
        (format!(" {live} \n"), false, false),
        (format!("0{live}\n"), false, false),
        ("0\n".to_string(), false, false),
    ];
    let plant = |content: &str, aged: bool| {
        let f = sc.file("t");
        let _ = fs::remove_file(&f);
        fs::write(&f, content).unwrap();
        fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        if aged {
            fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    };
    for (content, aged, held) in &cases {
        let what = format!("{content:?} aged={aged}");
        plant(content, *aged);
        let st = sc.ffkit(&["lock-status", "t"]);
        let js = sc.ffkit(&["lock-status", "--json", "t"]);
        let want_state = if *held {
            "\"state\":\"held\""
        } else {
            "\"state\":\"free\""
        };
        assert!(
            text(&js.stdout).contains(want_state),
            "{what}: {}",
            text(&js.stdout)
        );
        if *held {
            assert_eq!(code(&st), 0, "{what}");
            assert_eq!(
                text(&st.stdout),
                format!(
                    "t: held (exclusive, dotlock) by pid {live} (the old library's lock file)\n"
                ),
                "{what}"
            );
        } else {
            assert_eq!(
                (code(&st), text(&st.stdout)),
                (1, "t: free\n".into()),
                "{what}"
            );
            assert_eq!(code(&js), 1, "{what}");
        }
        let rel = sc.ffkit(&["lock-release", "t"]);
        assert_eq!(
            code(&rel),
            if *held { 5 } else { 4 },
            "{what}: {}",
            text(&rel.stderr)
        );
        // The builtin's own `ffkit lock-status`.
        plant(content, *aged);
        let o = sc.run("builtin", "ffkit lock-status -q t; echo $?");
        assert_eq!(
            text(&o.stdout),
            if *held { "0\n" } else { "1\n" },
            "{what} builtin status"
        );
        // Every acquirer: the binary, and the functions on each path.
        plant(content, *aged);
        let acq = sc.ffkit(&["lock-acquire", "-n", "--owner", &live.to_string(), "t"]);
        assert_eq!(
            code(&acq),
            if *held { 5 } else { 0 },
            "{what} binary: {}",
            text(&acq.stderr)
        );
        if !*held {
            assert_eq!(
                code(&sc.ffkit(&["lock-release", "--owner", &live.to_string(), "t"])),
                0
            );
        }
        for path in paths() {
            plant(content, *aged);
            let o = sc.run(
                path,
                "LOCK_TIMEOUT=0; rc=0; acquire_critical_lock t 2>/dev/null || rc=$?; echo $rc",
            );
            assert_eq!(
                text(&o.stdout),
                if *held { "5\n" } else { "0\n" },
                "{what} {path}"
            );
        }
    }
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// Item 5: a named pair's holder process whose owner was killed with
/// SIGKILL leaves the lock file as a release does: the free line
/// (`{"kind":"free"}`, padded), not the dead owner's `"kind":"named"`
/// record. The owner is a shell on each path that ran the binary's
/// `lock-acquire NAME`, and a process given with `--owner`.
#[test]
fn a_named_pairs_holder_leaves_the_free_line_when_its_owner_is_killed() {
    let sc = Sc::new();
    let free_after = |what: &str| {
        crate::util::wait_until(&format!("{what}: lock free"), 20, || {
            code(&sc.ffkit(&["lock-status", "-q", "t"])) == 1
        });
        let content = fs::read_to_string(sc.file("t")).unwrap();
        assert_eq!(
            content.trim_end(),
            "{\"kind\":\"free\"}",
            "{what}: {content:?}"
        );
    };
    // --owner: a process of the test's.
    let mut owner = Command::new("sleep").arg("300").spawn().unwrap();
    let o = sc.ffkit(&["lock-acquire", "--owner", &owner.id().to_string(), "t"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(
        fs::read_to_string(sc.file("t"))
            .unwrap()
            .contains("\"kind\":\"named\"")
    );
    owner.kill().unwrap();
    owner.wait().unwrap();
    free_after("--owner");
    // A shell on each path holding it through the binary, killed.
    for path in paths() {
        let mut c = sc.shell(
            path,
            "\"$FFKIT_BIN\" lock-acquire t && echo held && exec sleep 300",
        );
        c.stdout(Stdio::piped());
        let mut sh = c.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "held\n", "{path}");
        assert!(
            fs::read_to_string(sc.file("t"))
                .unwrap()
                .contains("\"kind\":\"named\""),
            "{path}"
        );
        sh.kill().unwrap();
        sh.wait().unwrap();
        free_after(path);
    }
}

/// Item 3: a named pair whose lock file is overwritten while held (by
/// hand, a stray `>`) can still be released: the owner's `lock-release
/// NAME` (exit 0, the file left with the free line), `--force` from anyone,
/// and anyone else is told whose it is (5). `lock-status` names the owner
/// (the holder process says whose lock it keeps). Before, every release
/// was exit 9 (`held, but not as a named lock`), `--force` too, and the
/// lock stayed until the owner exited.
#[test]
fn a_named_pair_whose_file_is_overwritten_while_held_is_still_released() {
    let sc = Sc::new();
    let garbage = |what: &str| {
        fs::write(sc.file("t"), "garbage, not a record\n").unwrap();
        assert_eq!(
            code(&sc.ffkit(&["lock-status", "-q", "t"])),
            0,
            "{what}: still held"
        );
    };
    let free = |what: &str| {
        assert_eq!(
            code(&sc.ffkit(&["lock-status", "-q", "t"])),
            1,
            "{what}: free"
        );
        let content = fs::read_to_string(sc.file("t")).unwrap();
        assert_eq!(
            content.trim_end(),
            "{\"kind\":\"free\"}",
            "{what}: {content:?}"
        );
    };
    // The binary, owned by a process of the test's.
    let mut owner = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = owner.id().to_string();
    assert_eq!(code(&sc.ffkit(&["lock-acquire", "--owner", &pid, "t"])), 0);
    garbage("--owner");
    let st = sc.ffkit(&["lock-status", "t"]);
    assert!(
        text(&st.stdout).starts_with(&format!("t: held (exclusive) by pid {pid} on ")),
        "{}",
        text(&st.stdout)
    );
    let o = sc.ffkit(&["lock-release", "t"]);
    assert_eq!(code(&o), 5, "not the owner: {}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("held by pid {pid} on ")),
        "{}",
        text(&o.stderr)
    );
    let o = sc.ffkit(&["lock-release", "--owner", &pid, "t"]);
    assert_eq!(code(&o), 0, "the owner: {}", text(&o.stderr));
    free("--owner");
    assert_eq!(code(&sc.ffkit(&["lock-acquire", "--owner", &pid, "t"])), 0);
    garbage("--force");
    let o = sc.ffkit(&["lock-release", "--force", "t"]);
    assert_eq!(code(&o), 0, "--force: {}", text(&o.stderr));
    free("--force");
    owner.kill().unwrap();
    owner.wait().unwrap();
    // A shell on each path holding it through the binary releases it with
    // the binary and with its function.
    for path in paths() {
        for release in ["\"$FFKIT_BIN\" lock-release t", "release_critical_lock t"] {
            let o = sc.run(
                path,
                &format!(
                    "\"$FFKIT_BIN\" lock-acquire t || exit 1\n\
                     printf 'garbage\\n' >\"$FFKIT_LOCK_DIR/t.lock\"\n\
                     rc=0; {release} || rc=$?; echo $rc\n\
                     ffkit lock-status t"
                ),
            );
            assert_eq!(
                text(&o.stdout),
                "0\nt: free\n",
                "{path} {release}: {}",
                text(&o.stderr)
            );
            free(path);
        }
    }
}

/// Item 2: a lock whose file was deleted (or replaced) while this shell
/// held it is released by the shell's release: status 0 and nothing on
/// stderr on every path (before: the builtin 0, the fallback and zsh 2,
/// `descriptor N is open on FILE (deleted), not on the lock file`), and
/// the name's file is free afterwards. The binary's `lock-release --fd N
/// NAME` on such a descriptor is a release too (0); on a descriptor open on
/// another file that still has a name it stays exit 2.
#[test]
fn a_lock_whose_file_was_deleted_or_replaced_while_held_is_released_with_status_0() {
    let sc = Sc::new();
    for path in paths() {
        for how in [
            "rm -f \"$F\"",
            "printf x >\"$F.new\"; mv -f \"$F.new\" \"$F\"",
        ] {
            let o = sc.run(
                path,
                &format!(
                    "F=$FFKIT_LOCK_DIR/t.lock\n\
                     acquire_critical_lock t || exit 1\n\
                     {how}\n\
                     rc=0; release_critical_lock t || rc=$?; echo $rc\n\
                     LOCK_TIMEOUT=0; rc=0; acquire_critical_lock t || rc=$?; echo $rc\n\
                     release_critical_lock t; echo $?"
                ),
            );
            assert_eq!(
                (text(&o.stdout), text(&o.stderr)),
                ("0\n0\n0\n".to_string(), String::new()),
                "{path}: {how}"
            );
        }
    }
    // A named pair (the binary's holder process) on each path: released by
    // the function and by the binary, its holder ended (it kept the lock
    // on the deleted file until its owner exited, and the answer was 4).
    for path in paths() {
        for release in ["release_critical_lock t", "\"$FFKIT_BIN\" lock-release t"] {
            for how in [
                "rm -f \"$F\"",
                "printf x >\"$F.new\"; mv -f \"$F.new\" \"$F\"",
            ] {
                let o = sc.run(
                    path,
                    &format!(
                        "F=$FFKIT_LOCK_DIR/t.lock\n\
                         \"$FFKIT_BIN\" lock-acquire t || exit 1\n\
                         hp=$(\"$FFKIT_BIN\" lock-status --json t | sed 's/.*\"holder_pid\":\\([0-9]*\\).*/\\1/')\n\
                         {how}\n\
                         rc=0; {release} || rc=$?; echo $rc\n\
                         s=$(cut -d' ' -f3 /proc/$hp/stat 2>/dev/null)\n\
                         case $s in ''|Z|X) echo holder-gone;; *) echo \"holder-alive $s\";; esac"
                    ),
                );
                assert_eq!(
                    (text(&o.stdout), text(&o.stderr)),
                    ("0\nholder-gone\n".to_string(), String::new()),
                    "{path}: {release}: {how}"
                );
            }
        }
    }
    // The binary alone, on a descriptor of the calling shell.
    let o = sc.run(
        "fallback",
        "F=$FFKIT_LOCK_DIR/t.lock; exec 9<>\"$F\"\n\
         \"$FFKIT_BIN\" lock-acquire --fd 9 t || exit 1\n\
         rm -f \"$F\"\n\
         rc=0; \"$FFKIT_BIN\" lock-release --fd 9 t || rc=$?; echo $rc\n\
         grep -c '^lock:' /proc/$$/fdinfo/9 || :\n\
         exec 9<>\"$FFKIT_LOCK_DIR/other\"; rc=0; \"$FFKIT_BIN\" lock-release --fd 9 t 2>/dev/null || rc=$?; echo $rc",
    );
    assert_eq!(text(&o.stdout), "0\n0\n2\n", "{}", text(&o.stderr));
}

/// A shell's own release of a lock another process force-released
/// (`ffkit lock-release --force NAME`) behind its back gets one verdict on
/// every path: exit 4 and one line, `not held by this shell (its lock was
/// released since it was taken: …)`, whether the name is free by then or
/// another process holds it; the other holder keeps its lock, a free name
/// stays free, and the shell's table forgets the name (taking it again
/// works). Critical and session locks alike. Before, the builtin answered
/// 0 (it took the free lock again to release it) or 9 (`the lock was
/// already gone`), the fallback and zsh 4 with the binary's `(fd N): holds
/// no lock`.
#[test]
fn a_release_after_another_process_force_released_the_lock_is_4_on_every_path() {
    let sc = Sc::new();
    let line = |f: &Path, func: &str| {
        format!(
            "ffkit.bash: {func}: {}: not held by this shell (its lock was released since it was taken: lock-release NAME, lock-release --force or an unlock of its descriptor)\n",
            f.display()
        )
    };
    let s = |n: &str| sc.locks().join("sessions").join(format!("{n}.lock"));
    let want_err = [
        line(&sc.file("t"), "release_critical_lock"),
        line(&sc.file("u"), "release_critical_lock"),
        line(&s("t"), "release_session_lock"),
        line(&s("u"), "release_session_lock"),
    ]
    .concat();
    let script = "for k in critical session; do\n\
         if [ $k = critical ]; then acq() { acquire_critical_lock \"$1\"; }; rel() { release_critical_lock \"$1\"; }; S=\n\
         else acq() { acquire_session_lock '' \"$1\"; }; rel() { release_session_lock '' \"$1\"; }; S=--session; fi\n\
         acq t || exit 1\n\
         \"$FFKIT_BIN\" lock-release $S --force t || exit 1\n\
         rc=0; rel t || rc=$?; echo \"free $rc\"\n\
         \"$FFKIT_BIN\" lock-status $S t >/dev/null; echo \"status $?\"\n\
         LOCK_TIMEOUT=0; rc=0; acq t || rc=$?; echo \"again $rc\"; rel t; echo \"released $?\"\n\
         acq u || exit 1\n\
         \"$FFKIT_BIN\" lock-release $S --force u || exit 1\n\
         \"$FFKIT_BIN\" lock-acquire $S u || exit 1\n\
         rc=0; rel u || rc=$?; echo \"other $rc\"\n\
         \"$FFKIT_BIN\" lock-status $S u >/dev/null; echo \"status $?\"\n\
         \"$FFKIT_BIN\" lock-release $S u; echo \"pair $?\"\n\
         done";
    let one = "free 4\nstatus 1\nagain 0\nreleased 0\nother 4\nstatus 0\npair 0\n";
    for path in paths() {
        let o = sc.run(path, script);
        assert_eq!(
            (text(&o.stdout), text(&o.stderr)),
            (one.repeat(2), want_err.clone()),
            "{path}"
        );
    }
}

/// Item 4: a release refused because a shell this one runs under holds the
/// lock says one line, byte for byte the same on every path (the builtin,
/// the fallback, zsh), for a lock taken by the function, by the shell's
/// `ffkit lock-acquire NAME` and by the binary's; `ffkit lock-release -q`
/// says nothing (exit 4). Before, the fallback printed the binary's
/// refusal and then its own `not held by this shell`, and `-q` did not
/// silence the refusal; the builtin's function answered 4 (`not held by
/// this shell`) to the binary's named pair, which the fallback released.
#[test]
fn a_refused_subshell_release_says_one_line_alike_on_every_path() {
    let sc = Sc::new();
    let file = sc.file("t");
    let parent = format!(
        "ffkit.bash: release_critical_lock: {}: not held by this shell (its parent shell took it; only that shell may release it)\n",
        file.display()
    );
    let none = format!(
        "ffkit.bash: release_critical_lock: {}: not held by this shell\n",
        sc.file("none").display()
    );
    for take in [
        "acquire_critical_lock t",
        "ffkit lock-acquire t",
        "\"$FFKIT_BIN\" lock-acquire t",
    ] {
        let mut seen: Option<String> = None;
        for path in paths() {
            let o = sc.run(
                path,
                &format!(
                    "{take} || exit 1\n\
                     ( rc=0; release_critical_lock t 2>\"$T/fn\" || rc=$?; echo fn=$rc )\n\
                     ( rc=0; ffkit lock-release -q t 2>\"$T/q\" || rc=$?; echo q=$rc )\n\
                     ( rc=0; release_critical_lock none 2>\"$T/none\" || rc=$?; echo none=$rc )\n\
                     rc=0; release_critical_lock t || rc=$?; echo own=$rc"
                )
                .replace("$T", &sc.tmp.path().display().to_string()),
            );
            assert_eq!(
                text(&o.stdout),
                "fn=4\nq=4\nnone=4\nown=0\n",
                "{path} {take}: {}",
                text(&o.stderr)
            );
            let read = |n: &str| fs::read_to_string(sc.tmp.path().join(n)).unwrap();
            assert_eq!(read("fn"), parent, "{path} {take}");
            assert_eq!(read("q"), "", "{path} {take}: -q");
            assert_eq!(read("none"), none, "{path} {take}");
            let all = format!("{}{}{}", read("fn"), read("q"), read("none"));
            if let Some(s) = &seen {
                assert_eq!(&all, s, "{path} {take}: not byte-identical");
            }
            seen = Some(all);
            assert_eq!(
                code(&sc.ffkit(&["lock-status", "-q", "t"])),
                1,
                "{path} {take}: released"
            );
        }
    }
}

/// Item 6, the attack: eight processes take one name at once, every way
/// there is — the builtin's function and its `ffkit lock-acquire NAME`,
/// the fallback's function, zsh's, the binary's named pair from `sh` and
/// its command mode on the file — each appending a start and an end
/// marker around its critical section to one log, while three of them are
/// frozen (SIGSTOP of the process group), marked in the log and killed
/// (SIGKILL) mid-run. The independent oracle: in the log a start is only
/// ever followed by its own end, or by the mark of its holder's kill
/// (after which the lock is free); never by another start. And every
/// survivor finishes all its rounds.
/// With `LOCK_OLD_LIBRARY=present` too, where every release deletes the
/// file and every acquirer re-checks the path (command mode, which keeps
/// flock(1)'s semantics and does not, is then a named pair instead).
#[test]
fn eight_shells_mixing_every_path_and_sigkills_never_have_two_holders() {
    attack(false);
    attack(true);
}

fn attack(old_library: bool) {
    use std::os::unix::process::CommandExt;
    let sc = Sc::new();
    let log = sc.tmp.path().join("log");
    let rounds = 12;
    let section = "echo \"S $ID $i\" >>\"$LOG\"; x=$(cat \"$LOG.n\" 2>/dev/null || echo 0); \
                   echo $((x + 1)) >\"$LOG.n\"; echo \"E $ID $i\" >>\"$LOG\"";
    let function_loop = format!(
        "i=0; while [ $i -lt {rounds} ]; do i=$((i + 1)); \
         acquire_critical_lock c || exit 3; {section}; release_critical_lock c || exit 4; done"
    );
    let typed_loop = format!(
        "i=0; while [ $i -lt {rounds} ]; do i=$((i + 1)); \
         ffkit lock-acquire c || exit 3; {section}; ffkit lock-release c || exit 4; done"
    );
    let zsh = paths().contains(&"zsh");
    let mut specs: Vec<(String, Command)> = Vec::new();
    let mut shell = |id: &str, path: &str, body: &str| {
        let path = if path == "zsh" && !zsh {
            "fallback"
        } else {
            path
        };
        specs.push((id.to_string(), sc.shell(path, body)));
    };
    shell("b1", "builtin", &function_loop);
    shell("b2", "builtin", &typed_loop);
    shell("f1", "fallback", &function_loop);
    shell("f2", "fallback", &function_loop);
    shell("z1", "zsh", &function_loop);
    for (id, body) in [
        (
            "n1",
            format!(
                "i=0; while [ $i -lt {rounds} ]; do i=$((i + 1)); \
                 \"$FFKIT_BIN\" lock-acquire c || exit 3; {section}; \"$FFKIT_BIN\" lock-release c || exit 4; done"
            ),
        ),
        (
            "c1",
            if old_library {
                format!(
                    "i=0; while [ $i -lt {rounds} ]; do i=$((i + 1)); \
                     \"$FFKIT_BIN\" lock-acquire c || exit 3; {section}; \"$FFKIT_BIN\" lock-release c || exit 4; done"
                )
            } else {
                format!(
                    "i=0; while [ $i -lt {rounds} ]; do i=$((i + 1)); \
                 \"$FFKIT_BIN\" lock-acquire \"$FFKIT_LOCK_DIR/c.lock\" -- sh -c '{}' sh || exit 3; done",
                    section.replace("$i", "$I")
                )
            },
        ),
        (
            "n2",
            format!(
                "i=0; while [ $i -lt {rounds} ]; do i=$((i + 1)); \
                 \"$FFKIT_BIN\" lock-acquire c || exit 3; {section}; \"$FFKIT_BIN\" lock-release c || exit 4; done"
            ),
        ),
    ] {
        let mut c = Command::new("sh");
        sc.env(&mut c);
        c.arg("-c")
            .arg(body.replace("-- sh -c", "-- env I=\"$i\" sh -c"));
        specs.push((id.to_string(), c));
    }
    let mut kids = Vec::new();
    for (id, mut c) in specs {
        c.env("ID", &id)
            .env("LOG", &log)
            .env("LOCK_TIMEOUT", "120")
            .env(
                "LOCK_OLD_LIBRARY",
                if old_library { "present" } else { "absent" },
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        kids.push((id, c.spawn().unwrap()));
    }
    // Freeze, mark, kill: three of them, each once it has started a few
    // sections (it may hold the lock right then, or be waiting for it).
    let append = |line: &str| {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    };
    let mut killed = Vec::new();
    for (victim, after) in [("f2", 3), ("n2", 4), ("b1", 5)] {
        let started = format!("S {victim} {after}\n");
        let (_, child) = kids.iter_mut().find(|(id, _)| id == victim).unwrap();
        // Fails at once, with the victim's own words, when it ended early,
        // and with the log (who started a section and never ended it) when
        // it never gets there.
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !fs::read_to_string(&log).is_ok_and(|l| l.contains(&started)) {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
                panic!("{victim} ended ({st:?}) before round {after}: {err}");
            }
            assert!(
                std::time::Instant::now() < give_up,
                "timed out waiting for {victim} at round {after}; log:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let pg = child.id() as i32;
        // SAFETY: the process group of a child this test started and has
        // not reaped (its leader is alive until the wait below).
        unsafe {
            libc::kill(-pg, libc::SIGSTOP);
        }
        append(&format!("K {victim}\n"));
        // SAFETY: as above.
        unsafe {
            libc::kill(-pg, libc::SIGKILL);
        }
        child.wait().unwrap();
        killed.push(victim);
    }
    for (id, child) in kids.iter_mut() {
        if killed.contains(&id.as_str()) {
            continue;
        }
        let st = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(
            st.success(),
            "{id} (old library {old_library}): {st:?}: {err}"
        );
    }
    let text = fs::read_to_string(&log).unwrap();
    let mut holder: Option<&str> = None;
    let mut ends = 0;
    for (n, line) in text.lines().enumerate() {
        let w: Vec<&str> = line.split(' ').collect();
        match w.as_slice() {
            ["S", id, _] => {
                assert!(
                    holder.is_none(),
                    "old library {old_library}: line {}: {line} while {holder:?} holds it\n{text}",
                    n + 1
                );
                holder = Some(id);
            }
            ["E", id, _] => {
                assert_eq!(holder, Some(*id), "line {}: {line}\n{text}", n + 1);
                holder = None;
                ends += 1;
            }
            ["K", id] => {
                if holder == Some(*id) {
                    holder = None;
                }
            }
            _ => panic!("line {}: {line:?}\n{text}", n + 1),
        }
    }
    let survivors = kids.len() - killed.len();
    assert!(ends >= survivors * rounds, "{ends} sections ended\n{text}");
    let _ = fs::remove_file(&log);
}

/// Item 3 for a shell's descriptor lock (`acquire_critical_lock`): a lock
/// file overwritten while held is released by the shell's function with
/// the free line left over the damage on every path (the fallback left
/// the garbage; the builtin wrote the free line), and `ffkit lock-release
/// --force NAME` frees it from anywhere (it was exit 9, `held, but not as
/// a named lock`): the holder is found in /proc by its descriptor.
#[test]
fn a_descriptor_lock_whose_file_is_overwritten_is_released_and_forced() {
    let sc = Sc::new();
    for path in paths() {
        let o = sc.run(
            path,
            "F=$FFKIT_LOCK_DIR\n\
             acquire_critical_lock l || exit 1; printf 'garbage\\n' >\"$F/l.lock\"\n\
             rc=0; release_critical_lock l || rc=$?; echo $rc; cat \"$F/l.lock\"\n\
             acquire_critical_lock m || exit 1; printf 'garbage\\n' >\"$F/m.lock\"\n\
             ( rc=0; \"$FFKIT_BIN\" lock-release --force m || rc=$?; echo $rc; : )\n\
             \"$FFKIT_BIN\" lock-status m",
        );
        let out = text(&o.stdout);
        let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            ["0", "{\"kind\":\"free\"}", "0", "m: free"],
            "{path}: {}",
            text(&o.stderr)
        );
    }
}

/// A command-mode holder of `file` (`ffkit lock-acquire FILE -c …`): the
/// lock is held once it has printed its line, until its stdin is closed.
fn command_holder(sc: &Sc, file: &Path) -> std::process::Child {
    use std::io::BufRead;
    let mut c = Command::new(bin());
    sc.env(&mut c);
    let mut child = c
        .arg("lock-acquire")
        .arg(file)
        .args(["-c", "echo held; read -r x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    child
}

/// A named record is trusted only while its holder process keeps the lock
/// of that very file (its lock descriptor on the file's device and inode):
/// a record copied into another name's file (`cp a.lock b.lock`) or left
/// by a holder killed before another process took the file made
/// `lock-release b` end **a**'s holder and answer 0 while b stayed held,
/// and `lock-status b` name a's owner; `lock-release a` of a file flock(1)
/// held answered 0 ("released") and left it held.
#[test]
fn a_named_record_of_another_files_holder_ends_no_lock_and_is_no_release() {
    let sc = Sc::new();
    let mut owner = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = owner.id().to_string();
    let held = |name: &str| code(&sc.ffkit(&["lock-status", "-q", name])) == 0;
    assert_eq!(code(&sc.ffkit(&["lock-acquire", "--owner", &pid, "a"])), 0);
    fs::copy(sc.file("a"), sc.file("b")).unwrap();
    let mut other = command_holder(&sc, &sc.file("b"));
    let st = text(&sc.ffkit(&["lock-status", "b"]).stdout);
    assert!(
        !st.contains(&format!("pid {pid} ")),
        "b named a's owner: {st}"
    );
    let o = sc.ffkit(&["lock-release", "--owner", &pid, "b"]);
    assert_eq!(code(&o), 5, "b is another's: {}", text(&o.stderr));
    assert!(held("a"), "lock-release b ended a's holder");
    assert!(held("b"), "b released");
    drop(other.stdin.take());
    other.wait().unwrap();
    // a's holder killed: its record stays; then another process takes a.
    let js = text(&sc.ffkit(&["lock-status", "--json", "a"]).stdout);
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    let holder = v["holder_pid"].as_u64().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-9", &holder])
            .status()
            .unwrap()
            .success()
    );
    while held("a") {
        std::thread::yield_now();
    }
    assert!(
        fs::read_to_string(sc.file("a"))
            .unwrap()
            .contains("\"named\"")
    );
    let mut other = command_holder(&sc, &sc.file("a"));
    let o = sc.ffkit(&["lock-release", "--owner", &pid, "a"]);
    assert_eq!(code(&o), 5, "a is another's: {}", text(&o.stderr));
    assert!(held("a"), "a answered released, still held");
    drop(other.stdin.take());
    other.wait().unwrap();
    owner.kill().unwrap();
    owner.wait().unwrap();
}

/// A shell's descriptor lock whose record was overwritten is found in
/// /proc by its descriptor; the fallback's children (a child script, a
/// background job) share that open file description, and the child
/// script's own `ffkit lock-release NAME` was taken for the holder's and
/// released its shell's lock (0), where with the record intact it is
/// refused (4). The holder is the process none of whose ancestors shares
/// the lock: the shell, on every path.
#[test]
fn a_child_sharing_its_shells_descriptor_lock_is_not_its_holder_when_the_record_is_overwritten() {
    let sc = Sc::new();
    for path in paths() {
        let o = sc.run(
            path,
            "acquire_critical_lock t || exit 1\n\
             printf 'garbage\\n' >\"$FFKIT_LOCK_DIR/t.lock\"\n\
             bash -c 'true; \"$FFKIT_BIN\" lock-release t; echo $?'\n\
             \"$FFKIT_BIN\" lock-status -q t; echo $?\n\
             release_critical_lock t; echo $?\n",
        );
        assert_eq!(
            text(&o.stdout),
            "4\n0\n0\n",
            "{path}: child's release, held, owner's release: {}",
            text(&o.stderr)
        );
    }
}

/// A NAME's file deleted while held, taken by another owner and deleted
/// again: two holders keep locks on `NAME.lock (deleted)`. Each owner's
/// `lock-release NAME` releases its own (0); the first one found used to
/// be taken, so the second owner was refused with 5, naming the first.
#[test]
fn two_deleted_generations_of_one_name_are_released_each_by_its_owner() {
    let sc = Sc::new();
    let mut owners: Vec<_> = (0..2)
        .map(|_| Command::new("sleep").arg("300").spawn().unwrap())
        .collect();
    let pids: Vec<String> = owners.iter().map(|o| o.id().to_string()).collect();
    for pid in &pids {
        assert_eq!(code(&sc.ffkit(&["lock-acquire", "--owner", pid, "t"])), 0);
        fs::remove_file(sc.file("t")).unwrap();
    }
    // The later owner first: its holder is not the first one /proc lists.
    for pid in pids.iter().rev() {
        let o = sc.ffkit(&["lock-release", "--owner", pid, "t"]);
        assert_eq!(code(&o), 0, "owner {pid}: {}", text(&o.stderr));
    }
    for pid in &pids {
        let o = sc.ffkit(&["lock-release", "--owner", pid, "t"]);
        assert_eq!(code(&o), 4, "owner {pid} again: {}", text(&o.stderr));
    }
    for o in &mut owners {
        o.kill().unwrap();
        o.wait().unwrap();
    }
}

/// A subshell's release of a lock its parent shell took, after another
/// process force-released that lock (`ffkit lock-release --force`), says
/// what is true, the same line on every path: the parent *took* it (it
/// does not hold it any more), and the parent's own release then says it
/// was released behind its back. Before, every path said "its parent shell
/// holds it" about a lock nobody held.
#[test]
fn a_subshell_release_after_a_force_release_does_not_claim_the_parent_holds_it() {
    let sc = Sc::new();
    let f = sc.file("t");
    let want = format!(
        "sub 4\nffkit.bash: release_critical_lock: {0}: not held by this shell (its parent shell took it; only that shell may release it)\n\
         status 1\nown 4\n",
        f.display()
    );
    let script = "acquire_critical_lock t || exit 1\n\
         \"$FFKIT_BIN\" lock-release --force t || exit 1\n\
         v=$(rc=0; release_critical_lock t 2>&1 || rc=$?; echo \"sub $rc\"); printf '%s\\n' \"${v#*$'\\n'}\" \"${v%%$'\\n'*}\"\n\
         \"$FFKIT_BIN\" lock-status t >/dev/null; echo \"status $?\"\n\
         rc=0; release_critical_lock t 2>/dev/null || rc=$?; echo \"own $rc\"";
    for path in paths() {
        let o = sc.run(path, script);
        assert_eq!(text(&o.stdout), want, "{path}: {}", text(&o.stderr));
        assert!(!text(&o.stdout).contains("holds it"), "{path}");
    }
}

/// Attack finding: a script that closes the descriptor a lock is held
/// through (`exec {fd}>&-`), or opens another file on its number (`exec
/// 12>log`, as scripts written for the old library, which held no
/// descriptor, may), dropped the lock; each path then said something else:
/// the builtin's release 9 (`the lock was already lost`) and its next
/// acquisition 5 (`already held by this owner`, for a lock nobody held);
/// the fallback's release 2 (`descriptor N: not open` / `is open on LOG`)
/// and then it closed the script's LOG descriptor, as its next acquisition
/// did; zsh added `failed to close file descriptor N`. Likewise the
/// builtin answered 5 to an acquisition after `lock-release --force`,
/// where the fallback took the lock (docs/shell.md: "holds" is what the
/// kernel says). Now: release 4 with one line on every path, the script's
/// descriptor left open, and the name taken again as a free lock.
///
/// Then the two limits that rule had, alike on every path: a copy of the
/// descriptor (`exec {c}>&N` before `exec {N}>&-`) kept the lock, but the
/// release said 4 (closed or reopened) and acquiring the name again waited
/// for the copy until `LOCK_TIMEOUT` (6); and the lock's own file opened
/// again on the number (same device and inode) got the force-release line
/// and the script's descriptor closed. Now: acquiring again is 5 at once
/// (`LOCK_TIMEOUT=30`, answered in well under that), naming the copy; the
/// release unlocks through the copy (0), leaves it open, and another
/// process (a separate `lock-acquire -n`, busy just before) takes the lock
/// right after; the number reopened on the lock's own file gets the
/// closed-or-reopened line and stays open (the script writes through it).
/// A session lock's copy alike (`release_session_lock`).
/// `ffkit lock-release NAME` typed in the shell releases it through the
/// copy too (it said 9, `holder record is out of date`), after which the
/// function's release is the closed-or-reopened 4.
/// And a subshell writes through the script's number after the name was
/// taken again: the builtin used to keep closing that number in every
/// forked child (its fork handler's list) once it had dropped the entry.
#[test]
fn a_lock_descriptor_the_script_closed_or_reopened_gets_one_verdict_and_stays_the_scripts() {
    let sc = Sc::new();
    let f = sc.file("t");
    let lost = format!(
        "ffkit.bash: release_critical_lock: {}: not held by this shell (the script closed or reopened the descriptor it was held through, which dropped the lock)\n",
        f.display()
    );
    let log = sc.tmp.path().join("log");
    let script = "lockfd() { local p; for p in /proc/$$/fd/*; do [[ $p -ef $F ]] && echo ${p##*/}; done; }\n\
         reopen() { local w; local -a ws; while :; do exec {w}>>\"$2\"; [ \"$w\" = \"$1\" ] && break; ws+=($w); done\n\
                    for w in \"${ws[@]}\"; do exec {w}>&-; done; }\n\
         acquire_critical_lock t || exit 1\n\
         fd=$(lockfd); [ -n \"$fd\" ] || exit 1; exec {fd}>&-\n\
         rc=0; release_critical_lock t || rc=$?; echo closed=$rc\n\
         acquire_critical_lock t || exit 1\n\
         fd=$(lockfd); exec {fd}>&-; reopen \"$fd\" \"$LOG\"\n\
         rc=0; release_critical_lock t || rc=$?; echo reopened=$rc\n\
         echo one >&$fd; echo write=$?\n\
         \"$FFKIT_BIN\" lock-status -q t; echo status=$?\n\
         acquire_critical_lock t; echo again=$?\n\
         fd=$(lockfd); exec {fd}>&-; reopen \"$fd\" \"$LOG\"\n\
         LOCK_TIMEOUT=0 acquire_critical_lock t; echo retake=$?\n\
         (echo two >&$fd); echo write=$?\n\
         release_critical_lock t; echo rel=$?\n\
         acquire_critical_lock t || exit 1\n\
         \"$FFKIT_BIN\" lock-release --force t || exit 1\n\
         LOCK_TIMEOUT=0 acquire_critical_lock t; echo forced=$?\n\
         release_critical_lock t; echo rel=$?\n\
         other() { \"$FFKIT_BIN\" lock-acquire -n \"$F\" -- true 2>/dev/null; echo other=$?; }\n\
         acquire_critical_lock t || exit 1\n\
         fd=$(lockfd); exec {c}>&$fd; exec {fd}>&-; echo \"copy=$c\"\n\
         s=$SECONDS; LOCK_TIMEOUT=30 acquire_critical_lock t; echo again=$? quick=$((SECONDS - s < 20))\n\
         other\n\
         release_critical_lock t; echo copy=$?\n\
         [ -e /proc/$$/fd/$c ]; echo open=$?\n\
         other\n\
         \"$FFKIT_BIN\" lock-status -q t; echo status=$?\n\
         exec {c}>&-\n\
         acquire_critical_lock t || exit 1\n\
         fd=$(lockfd); exec {c}>&$fd; exec {fd}>&-; reopen \"$fd\" \"$F\"\n\
         other\n\
         release_critical_lock t; echo copy=$?\n\
         other\n\
         exec {c}>&-; exec {fd}>&-\n\
         acquire_critical_lock t || exit 1\n\
         fd=$(lockfd); exec {c}>&$fd; exec {fd}>&-\n\
         other\n\
         \"$FFKIT_BIN\" lock-release t; echo typed=$?\n\
         other\n\
         exec {c}>&-\n\
         rc=0; release_critical_lock t || rc=$?; echo func=$rc\n\
         acquire_session_lock '' t || exit 1\n\
         F=$S; fd=$(lockfd); exec {c}>&$fd; exec {fd}>&-\n\
         other\n\
         release_session_lock '' t; echo session=$?\n\
         other\n\
         exec {c}>&-; F=$CF\n\
         acquire_critical_lock t || exit 1\n\
         fd=$(lockfd); exec {fd}>&-; reopen \"$fd\" \"$F\"\n\
         rc=0; release_critical_lock t || rc=$?; echo same=$rc\n\
         echo three >&$fd; echo write=$?\n\
         acquire_critical_lock t; echo again=$?\n\
         release_critical_lock t; echo rel=$?\n\
         echo four >&$fd; echo write=$?\n\
         other";
    for path in paths() {
        let _ = fs::remove_file(&log);
        let _ = fs::remove_file(&f);
        let mut c = sc.shell(path, script);
        c.env("F", &f)
            .env("CF", &f)
            .env("S", sc.locks().join("sessions").join("t.lock"))
            .env("LOG", &log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        let pid = child.id();
        let o = child.wait_with_output().unwrap();
        let out = text(&o.stdout);
        let copy = out
            .lines()
            .find_map(|l| l.strip_prefix("copy="))
            .unwrap_or("?")
            .to_string();
        let held = format!(
            "ffkit.bash: acquire_critical_lock: {}: already held by this owner (pid {pid}) through descriptor {copy}, a copy of its lock descriptor; release it first\n",
            f.display()
        );
        assert_eq!(
            (out, text(&o.stderr)),
            (
                format!(
                    "closed=4\nreopened=4\nwrite=0\nstatus=1\nagain=0\nretake=0\nwrite=0\nrel=0\nforced=0\nrel=0\n\
                     copy={copy}\nagain=5 quick=1\nother=5\ncopy=0\nopen=0\nother=0\nstatus=1\n\
                     other=5\ncopy=0\nother=0\n\
                     other=5\ntyped=0\nother=0\nfunc=4\n\
                     other=5\nsession=0\nother=0\n\
                     same=4\nwrite=0\nagain=0\nrel=0\nwrite=0\nother=0\n"
                ),
                format!("{lost}{lost}{held}{lost}{lost}")
            ),
            "{path}"
        );
        // The script's descriptor on the lock's own file took its last
        // write (the earlier one is under the records written since): the
        // functions never closed it.
        assert_eq!(fs::read_to_string(&log).unwrap(), "one\ntwo\n", "{path}");
        assert!(
            fs::read_to_string(&f).unwrap().ends_with("four\n"),
            "{path}"
        );
    }
}

/// The lock functions' descriptor stays theirs when the script moves its
/// offset (the mark's first half, `lock::fd::function_mark`): writing
/// through it (the builtin's is read-write) or a program seeking it (`dd
/// skip=` seeks its input; zsh's `sysseek`). Its release releases it (the
/// fallback closes it, the builtin keeps it for its next acquisition: no
/// lock is left on it), and acquiring the name again before that is 5 at once
/// (`already held by this owner`), on every path (the descriptor keeps
/// `lock::fd::FUNCTION_FLAG`). Before, the release said 4 (`the script
/// closed or reopened the descriptor`) and the lock stayed held until the
/// shell exited; the builtin's lock file also grew to 1 GiB. The builtin's
/// descriptor, kept for the next acquisition, is marked again at the
/// release, so a copy made of it then is released through (it used to be
/// 4, the lock held).
#[test]
fn a_lock_descriptor_the_script_wrote_or_seeked_through_is_still_the_functions() {
    let sc = Sc::new();
    let f = sc.file("t");
    let script = "lockfd() { local p; for p in /proc/$$/fd/*; do [[ $p -ef $F ]] && echo ${p##*/}; done; }\n\
         other() { \"$FFKIT_BIN\" lock-acquire -n \"$F\" -- true 2>/dev/null; echo other=$?; }\n\
         acquire_critical_lock t || exit 1\n\
         fd=$(lockfd); [ -n \"$fd\" ] || exit 1\n\
         { echo x >&$fd; } 2>/dev/null; dd bs=1 skip=1 count=0 2>/dev/null <&$fd\n\
         p=$(grep '^pos:' /proc/$$/fdinfo/$fd); [ \"${p//[!0-9]/}\" != $((1073741824 + $$)) ]; echo moved=$?\n\
         LOCK_TIMEOUT=0 acquire_critical_lock t 2>/dev/null; echo again=$?\n\
         other\n\
         release_critical_lock t; echo rel=$?\n\
         other\n\
         [ -e /proc/$$/fdinfo/$fd ] && grep -q '^lock:' /proc/$$/fdinfo/$fd; echo locked=$?\n\
         acquire_critical_lock t || exit 1\n\
         fd=$(lockfd); exec {c}>&$fd; exec {fd}>&-\n\
         release_critical_lock t; echo copy=$?\n\
         other";
    for path in paths() {
        let _ = fs::remove_file(&f);
        let o = sc.shell(path, script).env("F", &f).output().unwrap();
        assert_eq!(
            (text(&o.stdout), text(&o.stderr)),
            (
                "moved=0\nagain=5\nother=5\nrel=0\nother=0\nlocked=1\ncopy=0\nother=0\n"
                    .to_string(),
                String::new()
            ),
            "{path}"
        );
        assert!(fs::metadata(&f).unwrap().len() < 4096, "{path}");
    }
}

/// A lock held through a copy the script made of the lock functions'
/// descriptor, whose own number it closed, is described by its record on
/// every path (`lock-status`, a refused acquisition's `held by pid P`).
/// Before, the fallback's was `an unknown holder` (`/proc/locks` names the
/// binary that took it, gone) where the builtin named the shell.
#[test]
fn a_lock_held_through_a_copy_names_its_shell_on_every_path() {
    let sc = Sc::new();
    let f = sc.file("t");
    let script = "lockfd() { local p; for p in /proc/$$/fd/*; do [[ $p -ef $F ]] && echo ${p##*/}; done; }\n\
         acquire_critical_lock t || exit 1\n\
         fd=$(lockfd); exec {c}>&$fd; exec {fd}>&-\n\
         \"$FFKIT_BIN\" lock-status t | grep -c \"by pid $$ \"\n\
         \"$FFKIT_BIN\" lock-acquire -n \"$F\" -- true 2>&1 | grep -c \"held by pid $$ \"\n\
         release_critical_lock t; echo rel=$?";
    for path in paths() {
        let _ = fs::remove_file(&f);
        let o = sc.shell(path, script).env("F", &f).output().unwrap();
        assert_eq!(
            (text(&o.stdout), text(&o.stderr)),
            ("1\n1\nrel=0\n".to_string(), String::new()),
            "{path}"
        );
    }
}
