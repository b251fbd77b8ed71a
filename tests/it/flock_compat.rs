//! The flock persona against util-linux flock(1), case by case: each case
//! runs under the installed `/usr/bin/flock` and under ffkit through a
//! symlink named `flock` (both with argv[0] `flock`, so their messages
//! name the same program), in the same scratch dir, and the exit status
//! (or the signal), stdout and stderr must be identical; the only thing
//! normalised is the time in `getting lock took N seconds`.
//!
//! The persona follows flock 2.42. Where the installed version answers
//! otherwise (2.38.1 here: `--fcntl`, `--start`, `--length` do not exist,
//! `-w` says "invalid timeout value"), a case carries 2.42's answer, read
//! from its sys-utils/flock.c, and ffkit is held to that instead; on a
//! machine with 2.42 installed those cases are compared like the others.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::*;

const UL: &str = "/usr/bin/flock";

/// What a case needs around it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Plain,
    /// Descriptor 9 open (unlocked) on `g`.
    Fd9,
    /// Descriptor 7 open on `held`, which the test holds exclusively.
    Fd7Held,
}

/// One case: the arguments, its setup and, for behaviour 2.42 changed,
/// 2.42's answer (exit code, stdout, stderr).
struct Case {
    args: &'static [&'static str],
    setup: Setup,
    v242: Option<(i32, &'static str, &'static str)>,
}

const fn c(args: &'static [&'static str]) -> Case {
    Case {
        args,
        setup: Setup::Plain,
        v242: None,
    }
}

const fn with(args: &'static [&'static str], setup: Setup) -> Case {
    Case {
        args,
        setup,
        v242: None,
    }
}

const fn v242(
    args: &'static [&'static str],
    code: i32,
    out: &'static str,
    err: &'static str,
) -> Case {
    Case {
        args,
        setup: Setup::Plain,
        v242: Some((code, out, err)),
    }
}

const CASES: &[Case] = &[
    // A symlink at the lock path is followed: to a dir, a file, a held file.
    c(&["ldir", "true"]),
    c(&["-s", "lfile", "true"]),
    c(&["-n", "lheld", "true"]),
    // The last of -s/-x/-u wins; -u with a command unlocks nothing and runs it.
    c(&["-s", "-x", "f", "true"]),
    c(&["-x", "-s", "f", "true"]),
    c(&["-u", "f", "true"]),
    with(&["-u", "9"], Setup::Fd9),
    with(&["9"], Setup::Fd9),
    with(&["-s", "9"], Setup::Fd9),
    c(&["-u", "9"]),
    c(&["9"]),
    c(&["-o", "-F", "f", "true"]),
    // -w is strtold's: exponents, hexadecimal, spaces, signs; out of the
    // timer's range is 71.
    c(&["-w", "1e3", "f", "true"]),
    c(&["-w", "0x10", "f", "true"]),
    c(&["-w", "99999999999", "f", "true"]),
    c(&["-w", "9e18", "f", "true"]),
    c(&["-w", "1e19", "f", "true"]),
    c(&["-w", "-1", "f", "true"]),
    c(&["-w", "-0.5", "f", "true"]),
    c(&["-w", "inf", "f", "true"]),
    c(&["-w", "nan", "f", "true"]),
    c(&["-w", "1e400", "f", "true"]),
    c(&["-w", " 5", "f", "true"]),
    c(&["-w", "+5", "f", "true"]),
    c(&["-w", ".5", "f", "true"]),
    c(&["-w", "1.", "f", "true"]),
    c(&["-w", "1e-7", "held", "true"]),
    c(&["-w", "0", "held", "true"]),
    c(&["-sw0", "f", "true"]),
    c(&["--time=1", "f", "true"]),
    c(&["--wait", "1", "f", "true"]),
    c(&["-n", "-w", "-1", "f", "true"]),
    c(&["-w", "-1", "nodir/f", "true"]),
    v242(
        &["-w", "1x", "f", "true"],
        64,
        "",
        "flock: invalid timeout: '1x'\n",
    ),
    v242(
        &["-w", "", "f", "true"],
        64,
        "",
        "flock: invalid timeout: ''\n",
    ),
    v242(
        &["-w", "5e", "f", "true"],
        64,
        "",
        "flock: invalid timeout: '5e'\n",
    ),
    // Commands that cannot run, lock files that cannot be opened.
    c(&["f", "nosuchcmd"]),
    c(&["f", "./noexec"]),
    c(&["f", "--", "echo", "a", "b"]),
    c(&["nodir/f", "true"]),
    c(&["", "true"]),
    c(&[".", "true"]),
    c(&["fifo", "true"]),
    // Usage errors: 64, getopt's words.
    c(&[]),
    c(&["f"]),
    c(&["abc"]),
    c(&["99999999999"]),
    c(&["-1"]),
    c(&["-Z", "f", "true"]),
    c(&["-w"]),
    c(&["--bogus", "f", "true"]),
    c(&["--bogus=1", "f", "true"]),
    c(&["--verbose=1", "f", "true"]),
    c(&["--timeout"]),
    c(&["-?"]),
    c(&["--no", "f", "true"]),
    c(&["--n", "f", "true"]),
    c(&["--c", "f", "true"]),
    c(&["-c", "true"]),
    c(&["f", "-c"]),
    c(&["f", "-c", "a", "b"]),
    c(&["f", "--command", "a", "b"]),
    c(&["-E", "300", "f", "true"]),
    c(&["-E", "-1", "f", "true"]),
    c(&["-E", "x", "f", "true"]),
    c(&["-s"]),
    // Running things.
    c(&["f", "-c", "echo hi; exit 3"]),
    c(&["f", "--command", "echo there"]),
    c(&["f", "sh", "-c", "kill -TERM $$"]),
    c(&["-n", "f", "echo", "x", "y"]),
    c(&["--", "f", "true"]),
    c(&["--nonb", "f", "true"]),
    c(&["--nb", "f", "true"]),
    c(&["-e", "f", "true"]),
    c(&["-o", "f", "echo", "b"]),
    c(&["-F", "f", "echo", "a"]),
    // Conflicts and timeouts: 1, or -E; silent unless --verbose.
    c(&["-n", "held", "true"]),
    c(&["-n", "--verbose", "held", "true"]),
    c(&["-w", "0.2", "held", "true"]),
    c(&["-w", "0.2", "--verbose", "held", "true"]),
    c(&["-n", "-E", "9", "held", "true"]),
    c(&["-n", "-E", "0", "held", "echo", "not run"]),
    c(&["-s", "-n", "held", "true"]),
    with(&["-n", "7"], Setup::Fd7Held),
    with(&["-u", "7"], Setup::Fd7Held),
    // --verbose lines go to stdout, after the command's output in a pipe
    // (stdio's buffer), lost with -F (the exec discards it).
    c(&["--verbose", "f", "echo", "hi"]),
    c(&["-u", "--verbose", "f", "echo", "c"]),
    c(&["-F", "--verbose", "f", "echo", "d"]),
    c(&["-n", "--verbose", "f", "nosuchcmd"]),
    // 2.42 only: open file description locks (independent of the flock(2)
    // lock the test holds on `held`), and the option names they add.
    v242(&["--fcntl", "f", "true"], 0, "", ""),
    v242(&["--fcntl", "-n", "held", "echo", "ofd"], 0, "ofd\n", ""),
    v242(
        &["--start", "1k", "--length", "0x10", "f", "true"],
        0,
        "",
        "",
    ),
    v242(
        &["--fcntl", ".", "true"],
        65,
        "",
        "flock: .: Is a directory\n",
    ),
    v242(&["--fcntl", "-s", ".", "true"], 0, "", ""),
    Case {
        // A shared OFD lock needs a readable descriptor; 9 is write-only.
        args: &["--fcntl", "-s", "9"],
        setup: Setup::Fd9,
        v242: Some((65, "", "flock: 9: Bad file descriptor\n")),
    },
    Case {
        args: &["--fcntl", "9"],
        setup: Setup::Fd9,
        v242: Some((0, "", "")),
    },
    v242(
        &["--start", "-1", "f", "true"],
        64,
        "",
        "flock: invalid as start offset: '-1': Invalid argument\n",
    ),
    v242(
        &["--s", "f", "true"],
        64,
        "",
        "flock: option '--s' is ambiguous; possibilities: '--shared' '--start'\nTry 'flock --help' for more information.\n",
    ),
];

/// The installed util-linux flock's version ("2.38.1"), or None.
fn installed_version() -> Option<String> {
    let out = Command::new(UL).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().last().map(str::to_string)
}

/// The scratch dir every case runs in: `f`, a non-executable `noexec`, a
/// FIFO, and `held`, which the returned file holds locked exclusively.
fn scratch(w: &World) -> (std::path::PathBuf, File, File) {
    let dir = w.path().join("scratch");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("noexec"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("noexec"), fs::Permissions::from_mode(0o644)).unwrap();
    mkfifo(&dir.join("fifo"));
    // A FIFO's open waits for a writer in flock(1): the test is one.
    let writer = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("fifo"))
        .unwrap();
    let held = File::create(dir.join("held")).unwrap();
    // Symlinks at the lock path, followed as flock(1) follows them.
    fs::create_dir_all(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("sub", dir.join("ldir")).unwrap();
    std::os::unix::fs::symlink("held", dir.join("lheld")).unwrap();
    std::os::unix::fs::symlink("noexec", dir.join("lfile")).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    (dir, held, writer)
}

/// Runs `case` with `program` as `flock` in `dir`.
fn run(program: &Path, dir: &Path, w: &World, case: &Case) -> Output {
    let mut cmd = match case.setup {
        Setup::Plain => {
            let mut c = Command::new(program);
            c.arg0("flock");
            c
        }
        Setup::Fd9 | Setup::Fd7Held => {
            let open = if case.setup == Setup::Fd9 {
                "exec 9>>g"
            } else {
                "exec 7<held"
            };
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(format!("{open}; exec -a flock \"$0\" \"$@\""))
                .arg(program);
            c
        }
    };
    w.isolate(&mut cmd);
    cmd.env_remove("SHELL")
        .current_dir(dir)
        .args(case.args)
        .stdin(Stdio::null());
    output_within(cmd, &format!("flock {:?}", case.args))
}

/// Status, stdout and stderr, the lock's timing normalised.
fn answer(out: &Output) -> (String, String, String) {
    let status = match (out.status.code(), out.status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "?".into(),
    };
    let norm = |b: &[u8]| {
        let text = String::from_utf8_lossy(b).into_owned();
        text.lines()
            .map(|l| match (l.find("took "), l.find(" seconds")) {
                (Some(a), Some(b)) if a < b => format!("{}took T{}", &l[..a], &l[b..]),
                _ => l.to_string(),
            })
            .map(|l| l + "\n")
            .collect::<String>()
    };
    (status, norm(&out.stdout), norm(&out.stderr))
}

#[test]
fn flock_persona_answers_as_util_linux_flock_does() {
    if !Path::new(UL).exists() {
        skip("util-linux flock not installed: the flock persona's differential test did not run");
        return;
    }
    let version = installed_version().unwrap_or_default();
    let is_242 = version.starts_with("2.42");
    let w = World::new();
    let persona = w.link("flock").get_program().to_owned();
    let (dir, _held, _writer) = scratch(&w);
    let mut failures = Vec::new();
    for case in CASES {
        let ours = answer(&run(Path::new(&persona), &dir, &w, case));
        let theirs = match (case.v242, is_242) {
            (Some((code, out, err)), false) => {
                (format!("exit {code}"), out.to_string(), err.to_string())
            }
            _ => answer(&run(Path::new(UL), &dir, &w, case)),
        };
        if ours != theirs {
            failures.push(format!(
                "flock {:?}\n  util-linux {version}{}: {theirs:?}\n  ffkit:           {ours:?}",
                case.args,
                if case.v242.is_some() && !is_242 {
                    " (2.42 as written)"
                } else {
                    ""
                },
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// ^C while the command runs (SIGINT to the foreground process group, as a
/// terminal sends it): flock(1) keeps SIGINT's default and dies of it, even
/// when the command traps it and carries on; the persona does the same.
#[test]
fn flock_persona_dies_of_ctrl_c_as_util_linux_does() {
    if !Path::new(UL).exists() {
        skip("util-linux flock not installed: the flock persona's ^C test did not run");
        return;
    }
    let w = World::new();
    let persona = w.link("flock").get_program().to_owned();
    let scripts = [
        "echo started; sleep 30",
        "trap 'echo trapped; kill $!; exit 7' INT; echo started; sleep 30 & wait",
    ];
    for script in scripts {
        let mut seen = Vec::new();
        for program in [Path::new(UL), Path::new(&persona)] {
            let mut c = Command::new(program);
            w.isolate(&mut c);
            c.arg0("flock")
                .args(["f", "sh", "-c", script])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            let mut child = c.spawn().unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            assert_eq!(lines.next().unwrap().unwrap(), "started");
            // Our own child's group (the child is not reaped yet, so its pid,
            // the group's id, is still ours).
            let pgid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            rustix::process::kill_process_group(pgid, rustix::process::Signal::INT).unwrap();
            let status = child.wait().unwrap();
            let rest: Vec<String> = lines.map_while(std::result::Result::ok).collect();
            seen.push((status.code(), status.signal(), rest));
        }
        assert_eq!(
            seen[0].1,
            Some(libc::SIGINT),
            "{script}: util-linux: {seen:?}"
        );
        assert_eq!(seen[0], seen[1], "{script}: util-linux, then ffkit");
    }
}

/// flock(1)'s command and everything it leaves running share the locked
/// open file description, so a background child keeps the lock after the
/// command exits; the persona keeps it the same way.
#[test]
fn a_background_child_of_the_command_keeps_the_lock_as_with_util_linux() {
    if !Path::new(UL).exists() {
        skip("util-linux flock not installed: the background-child comparison did not run");
        return;
    }
    let w = World::new();
    let persona = w.link("flock").get_program().to_owned();
    let (dir, _held, _writer) = scratch(&w);
    for (i, program) in [Path::new(UL), Path::new(&persona)].into_iter().enumerate() {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(
                "(exec -a flock \"$0\" bg$1 sh -c 'sleep 5 <&- >&- 2>&- & echo $! > pid$1'); \
                 rc=0; (exec -a flock \"$0\" -n bg$1 true) || rc=$?; kill \"$(cat pid$1)\"; echo $rc",
            )
            .arg(program)
            .arg(i.to_string());
        w.isolate(&mut c);
        c.current_dir(&dir).stdin(Stdio::null());
        let o = output_within(c, "a background child");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "1\n",
            "{}: -n on a lock a background child keeps",
            program.display()
        );
    }
}

/// A FIFO with no writer: flock(1)'s open waits for one, and so does the
/// persona's (both still waiting when coreutils' timeout ends them: 124).
#[test]
fn a_fifo_without_a_writer_waits_in_open_as_with_util_linux() {
    if !Path::new(UL).exists() {
        skip("util-linux flock not installed: the FIFO comparison did not run");
        return;
    }
    let w = World::new();
    let persona = w.link("flock").get_program().to_owned();
    let dir = w.path().join("fifo-scratch");
    fs::create_dir_all(&dir).unwrap();
    mkfifo(&dir.join("lonely"));
    for program in [Path::new(UL), Path::new(&persona)] {
        let mut c = Command::new("timeout");
        c.args(["0.5", "bash", "-c", "exec -a flock \"$0\" lonely echo ran"])
            .arg(program);
        w.isolate(&mut c);
        c.current_dir(&dir).stdin(Stdio::null());
        let o = output_within(c, "a FIFO without a writer");
        assert_eq!(o.status.code(), Some(124), "{}: {o:?}", program.display());
        assert!(o.stdout.is_empty(), "{}: {o:?}", program.display());
    }
}
