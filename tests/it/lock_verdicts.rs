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
