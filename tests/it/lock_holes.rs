//! Regression tests for the ways two holders got in, and the lock items
//! that were wrong (docs/locks.md): dot-lock liveness and heartbeat, the
//! command inheriting the locked description, the releasing shell that
//! *is* the owner, validation before taking anything, `lock-release --fd`
//! of a descriptor holding nothing, damaged dot-locks, the waiting line,
//! the debug line, and flock(1) 2.42's `--fcntl`/`--start`/`--length`/
//! `--verbose`. Real processes throughout; conditions are polled with
//! generous deadlines, never timed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use crate::util::*;

fn lock_dir(w: &World) -> PathBuf {
    w.path().join("locks")
}

fn ff(w: &World, applet: &str) -> Command {
    let mut c = w.cmd(applet);
    c.env("FFKIT_LOCK_DIR", lock_dir(w));
    c
}

fn sh(w: &World, shell: &str, script: &str) -> Command {
    let flock = w.link("flock").get_program().to_owned();
    let mut c = Command::new(shell);
    w.isolate(&mut c);
    c.env("FFKIT_LOCK_DIR", lock_dir(w))
        .env("FF", bin())
        .env("FLOCK", flock)
        .arg("-c")
        .arg(script);
    c
}

fn code(c: &mut Command) -> Option<i32> {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
}

fn pid(c: &Child) -> rustix::process::Pid {
    rustix::process::Pid::from_raw(c.id() as i32).unwrap()
}

/// SIGKILLs a child of this test that is not reaped yet (so its pid is ours).
fn kill_child(c: &Child) {
    let _ = rustix::process::kill_process(pid(c), rustix::process::Signal::KILL);
}

/// Kills a process group this test created (the child's own group, while
/// the child is not reaped, so the group id is still ours).
fn kill_group(c: &mut Child) {
    let _ = rustix::process::kill_process_group(pid(c), rustix::process::Signal::KILL);
    let _ = c.wait();
}

/// Whether a tool is installed; on CI a missing one fails the test.
fn have(tool: &str) -> bool {
    crate::util::need(tool, "this check")
}

// -- Hole 2: a live dot-lock holder is never stale ---------------------------

/// A `lock-acquire --dotlock ./L` holder (its own process group) whose
/// command waits until something is written to the returned FIFO; returned
/// once `L` exists.
fn dotlock_holder_until_gate(w: &World, stale_after: &str) -> (PathBuf, Child) {
    let gate = w.path().join("gate");
    crate::util::mkfifo(&gate);
    let mut holder = ff(w, "lock-acquire");
    holder
        .env("LOCK_STALE_AFTER", stale_after)
        .args(["--dotlock", "./L", "--", "sh", "-c"])
        .arg(format!("read x < '{}'", gate.display()))
        .process_group(0);
    let holder = holder.spawn().unwrap();
    until("dot-lock", || w.path().join("L").exists());
    (gate, holder)
}

#[test]
fn a_live_dotlock_holder_is_never_broken_whatever_its_age() {
    let w = World::new();
    let (gate, mut holder) = dotlock_holder_until_gate(&w, "0.2");
    // Far older than LOCK_STALE_AFTER, and the holder is alive: not stale.
    sleep(Duration::from_millis(600));
    for _ in 0..3 {
        assert_eq!(
            code(ff(&w, "lock-acquire").env("LOCK_STALE_AFTER", "0.2").args([
                "-n",
                "--dotlock",
                "./L",
                "--",
                "true"
            ])),
            Some(5),
            "a live holder's dot-lock was broken"
        );
    }
    // Also after ffkit itself is killed while its command runs: the record
    // names the command, which is alive.
    kill_child(&holder);
    assert_eq!(
        code(ff(&w, "lock-acquire").env("LOCK_STALE_AFTER", "0.2").args([
            "-n",
            "--dotlock",
            "./L",
            "--",
            "true"
        ])),
        Some(5),
        "broken while the command still ran"
    );
    std::fs::write(&gate, "go\n").unwrap();
    // Now everything is gone: the next caller breaks it, saying whose it was.
    let mut out = None;
    until("stale detection", || {
        let o = ff(&w, "lock-acquire")
            .args(["-n", "--dotlock", "./L", "--", "true"])
            .output()
            .unwrap();
        let ok = o.status.success();
        out = Some(o);
        ok
    });
    let err = stderr_of(out.as_ref().unwrap());
    assert!(err.contains("broke a stale lock held by pid"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    kill_group(&mut holder);
}

#[test]
fn a_running_dotlock_holder_refreshes_its_mtime() {
    let w = World::new();
    let (gate, mut holder) = dotlock_holder_until_gate(&w, "0.4");
    let mtime = || {
        std::fs::metadata(w.path().join("L"))
            .and_then(|m| m.modified())
            .ok()
    };
    let first = mtime();
    until("a heartbeat", || mtime() != first);
    std::fs::write(&gate, "go\n").unwrap();
    assert!(holder.wait().unwrap().success());
    assert!(!w.path().join("L").exists());
}

#[test]
fn a_cross_host_dotlock_is_stale_only_without_a_sign_of_life() {
    let w = World::new();
    std::fs::create_dir_all(lock_dir(&w)).unwrap();
    let file = lock_dir(&w).join("X.lock");
    let rec = format!(
        r#"{{"kind":"dotlock","pid":4242,"start":1,"host":"elsewhere-{}","command":"far away","since":1.0}}"#,
        std::process::id()
    );
    std::fs::write(&file, &rec).unwrap();
    // Fresh mtime: the far holder shows life, whatever its record's age.
    assert_eq!(
        code(
            ff(&w, "lock-acquire")
                .env("LOCK_STALE_AFTER", "30")
                .args(["-n", "--dotlock", "X"])
        ),
        Some(5)
    );
    let old = std::fs::File::options().write(true).open(&file).unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let out = ff(&w, "lock-acquire")
        .env("LOCK_STALE_AFTER", "30")
        .args(["-n", "--dotlock", "X"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("broke a stale lock held by pid 4242 on elsewhere"),
        "{}",
        stderr_of(&out)
    );
    ff(&w, "lock-release").arg("X").assert().success();
}

// -- Hole 3: killing ffkit in command mode keeps the lock --------------------

#[test]
fn killing_ffkit_in_command_mode_keeps_the_lock_while_the_command_runs() {
    let w = World::new();
    let gate = w.path().join("gate");
    let ran = w.path().join("ran");
    crate::util::mkfifo(&gate);
    let mut holder = ff(&w, "lock-acquire");
    holder
        .args(["CL", "--", "sh", "-c"])
        .arg(format!(
            "echo started > '{}'; read x < '{}'",
            ran.display(),
            gate.display()
        ))
        .process_group(0);
    let mut holder = holder.spawn().unwrap();
    until("command started", || ran.exists());
    kill_child(&holder);
    for _ in 0..3 {
        assert_eq!(
            code(ff(&w, "lock-acquire").args(["-n", "CL", "--", "true"])),
            Some(5),
            "another holder got in while the command ran"
        );
    }
    std::fs::write(&gate, "go\n").unwrap();
    until("the lock free after the command", || {
        code(ff(&w, "lock-acquire").args(["-n", "CL", "--", "true"])) == Some(0)
    });
    kill_group(&mut holder);
}

// -- Hole 4: the releasing process is the owner ------------------------------

#[test]
fn sh_c_acquire_then_release_works_in_every_shell() {
    let w = World::new();
    for shell in ["bash", "dash", "zsh", "busybox"] {
        if !have(shell) {
            continue;
        }
        let prog = if shell == "busybox" { "busybox" } else { shell };
        let mut c2 = Command::new(prog);
        w.isolate(&mut c2);
        c2.env("FFKIT_LOCK_DIR", lock_dir(&w));
        if shell == "busybox" {
            c2.arg("sh");
        }
        let script = format!(
            "\"{}\" lock-acquire n-{shell}; \"{}\" lock-release n-{shell}",
            bin().display(),
            bin().display()
        );
        let out = c2.arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr_of(&out));
        assert_eq!(
            code(ff(&w, "lock-status").args(["-q", &format!("n-{shell}")])),
            Some(1),
            "{shell}: still held"
        );
    }
}

// -- Also wrong ---------------------------------------------------------------

#[test]
fn a_refused_option_takes_nothing() {
    let w = World::new();
    let out = ff(&w, "lock-acquire")
        .args(["--dotlock", "-F", "./L", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(!w.path().join("L").exists(), "left the dot-lock behind");
    let out = ff(&w, "lock-acquire")
        .args(["--dotlock", "-s", "./L", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!w.path().join("L").exists());
}

#[test]
fn lock_release_fd_of_a_descriptor_holding_no_lock_is_exit_4() {
    let w = World::new();
    sh(
        &w,
        "bash",
        "exec 8<>L; \"$FF\" lock-release --fd 8; echo none=$?
         exec 9<L; \"$FF\" lock-acquire --fd 9 || exit 9
         \"$FF\" lock-release --fd 8; echo other=$?
         \"$FF\" lock-acquire -n ./L -- true; echo still=$?
         \"$FF\" lock-release --fd 9; echo own=$?
         \"$FF\" lock-release -q --fd 9; echo again=$?",
    )
    .assert()
    .success()
    .stdout("none=4\nother=4\nstill=5\nown=0\nagain=4\n");
}

/// A NAME's damaged file (content neither a record nor the free line nor
/// blanks) has one verdict on every path. With `--dotlock` it is a
/// dot-lock held by an unknown holder (status 0, acquire busy, release
/// refused, `--force` removes it). Without it it is a kernel lock file:
/// free while no kernel lock is on it, for `lock-status` (exit 1) and
/// `lock-release` (exit 4, as for any free lock) as for `lock-acquire
/// NAME`, which takes it. Before, `lock-status` and `lock-release` called
/// it held by an unknown holder while `lock-acquire NAME` took it.
#[test]
fn a_damaged_dotlock_has_one_verdict_everywhere() {
    let w = World::new();
    std::fs::create_dir_all(lock_dir(&w)).unwrap();
    let file = lock_dir(&w).join("G.lock");
    std::fs::write(&file, "\u{1}garbage, not a record").unwrap();
    // Without --dotlock: a kernel lock file, free.
    let st = ff(&w, "lock-status").arg("G").output().unwrap();
    assert_eq!(st.status.code(), Some(1), "status says free");
    assert_eq!(String::from_utf8_lossy(&st.stdout), "G: free\n");
    let rel = ff(&w, "lock-release").arg("G").output().unwrap();
    let fresh = ff(&w, "lock-release").arg("H").output().unwrap();
    assert_eq!(rel.status.code(), Some(4), "{}", stderr_of(&rel));
    assert_eq!(
        stderr_of(&rel).replace("G:", "NAME:"),
        stderr_of(&fresh).replace("H:", "NAME:"),
        "as for any free lock"
    );
    assert_eq!(
        code(ff(&w, "lock-acquire").args(["-n", "G", "--", "true"])),
        Some(0)
    );
    // With --dotlock: a dot-lock held by an unknown holder.
    std::fs::write(&file, "\u{1}garbage, not a record").unwrap();
    let st = ff(&w, "lock-status")
        .args(["--dotlock", "G"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(0), "status says held");
    assert_eq!(
        String::from_utf8_lossy(&st.stdout),
        "G: held (exclusive, dotlock) by an unknown holder\n"
    );
    assert_eq!(
        code(ff(&w, "lock-acquire").args(["-n", "--dotlock", "G"])),
        Some(5)
    );
    let rel = ff(&w, "lock-release")
        .args(["--dotlock", "G"])
        .output()
        .unwrap();
    assert_eq!(rel.status.code(), Some(5));
    assert!(
        stderr_of(&rel).contains("held by an unknown holder, not by you"),
        "{}",
        stderr_of(&rel)
    );
    ff(&w, "lock-release")
        .args(["--force", "--dotlock", "G"])
        .assert()
        .success();
    assert!(!file.exists());
}

#[test]
fn the_waiting_line_is_printed_only_on_a_terminal_or_when_asked() {
    let w = World::new();
    let gate = w.path().join("gate");
    crate::util::mkfifo(&gate);
    let mut holder = ff(&w, "lock-acquire");
    holder
        .args(["./L", "--", "sh", "-c"])
        .arg(format!("read x < '{}'", gate.display()))
        .process_group(0);
    let mut holder = holder.spawn().unwrap();
    until("holder", || {
        code(ff(&w, "lock-status").args(["-q", "./L"])) == Some(0)
    });
    let waited = |args: &[&str], env: &[(&str, &str)]| {
        let out = ff(&w, "lock-acquire")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
        stderr_of(&out)
    };
    let plain = waited(&["-w", "0.2", "./L", "--", "true"], &[]);
    assert!(!plain.contains("waiting"), "{plain}");
    assert_eq!(plain.lines().count(), 1, "{plain}");
    let verbose = waited(&["--verbose", "-w", "0.2", "./L", "--", "true"], &[]);
    assert!(
        verbose.contains("waiting for lock ./L (held by pid"),
        "{verbose}"
    );
    let debug = waited(&["-w", "0.2", "./L", "--", "true"], &[("FF_DEBUG", "true")]);
    assert!(debug.contains("waiting for lock"), "{debug}");
    if have("script") {
        // On a terminal: printed, unless --quiet-wait (what the wrappers pass).
        let tty = |extra: &str| {
            let mut c = Command::new("script");
            w.isolate(&mut c);
            c.env("FFKIT_LOCK_DIR", lock_dir(&w)).args([
                "-qec",
                &format!(
                    "{} lock-acquire {extra} -w 0.2 ./L -- true",
                    bin().display()
                ),
                "/dev/null",
            ]);
            String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
        };
        assert!(tty("").contains("waiting for lock"), "{}", tty(""));
        assert!(!tty("--quiet-wait").contains("waiting"));
    }
    std::fs::write(&gate, "go\n").unwrap();
    kill_group(&mut holder);
}

#[test]
fn ff_debug_says_how_a_lock_was_taken() {
    let w = World::new();
    for (args, how) in [
        (
            &["-n", "./L", "--", "true"][..],
            "taken by kernel flock (exclusive) on fd",
        ),
        (
            &["-n", "--fcntl", "./L", "--", "true"][..],
            "taken by kernel OFD fcntl lock",
        ),
        (
            &["-n", "--dotlock", "./D", "--", "true"][..],
            "taken by dot-lock",
        ),
    ] {
        let out = ff(&w, "lock-acquire")
            .env("FF_DEBUG", "true")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let err = stderr_of(&out);
        assert_eq!(
            err.lines().filter(|l| l.contains("taken by")).count(),
            1,
            "{err}"
        );
        assert!(err.contains(how), "{err}");
    }
}

// -- flock(1) 2.42 parity -------------------------------------------------------

#[test]
fn flock_persona_fcntl_ranges_and_verbose_on_stdout() {
    let w = World::new();
    let gate = w.path().join("gate");
    crate::util::mkfifo(&gate);
    // Hold bytes 0..10 with an OFD lock.
    let mut holder = sh(
        &w,
        "bash",
        &format!(
            "exec \"$FLOCK\" --fcntl --start 0 --length 10 L -c 'echo locked; read x < \"{}\"'",
            gate.display()
        ),
    );
    let mut holder = holder
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n");
    let flock = |args: &[&str]| {
        let mut c = w.link("flock");
        c.env("FFKIT_LOCK_DIR", lock_dir(&w)).args(args);
        c.output().unwrap()
    };
    // Overlapping range: conflict (exit 1, silent); a disjoint range and a
    // flock(2) lock are independent of it.
    let o = flock(&[
        "-n", "--fcntl", "--start", "5", "--length", "1", "L", "true",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stderr.is_empty() && o.stdout.is_empty());
    let o = flock(&["-n", "--start", "10", "--length", "5", "L", "true"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "--start implies --fcntl; disjoint"
    );
    let o = flock(&["-n", "L", "true"]);
    assert_eq!(o.status.code(), Some(0), "flock(2) vs OFD: independent");
    let o = flock(&["-n", "--fcntl", "-E", "7", "L", "true"]);
    assert_eq!(o.status.code(), Some(7));
    // --verbose: the lines go to stdout, as flock(1) 2.41+ prints them.
    let o = flock(&["--verbose", "-n", "--fcntl", "M", "true"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("flock: getting lock took"), "{out}");
    assert!(out.contains("flock: executing true"), "{out}");
    assert!(o.stderr.is_empty());
    let o = flock(&["--verbose", "--nonblocking", "--fcntl", "L", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("failed to get lock"));
    let mut g = std::fs::OpenOptions::new().write(true).open(&gate).unwrap();
    g.write_all(b"go\n").unwrap();
    drop(g);
    assert!(holder.wait().unwrap().success());
}

/// A descriptor open read-only cannot carry an exclusive fcntl lock: the
/// error says the mode is wrong, not that the descriptor is not open.
#[test]
fn fcntl_exclusive_on_a_read_only_descriptor_says_the_mode() {
    let w = World::new();
    let f = w.path().join("ro.lock");
    std::fs::write(&f, "").unwrap();
    let o = sh(
        &w,
        "bash",
        &format!(
            "exec 9<'{}'; \"$FF\" lock-acquire --fcntl -x -n --fd 9",
            f.display()
        ),
    )
    .output()
    .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("read-only") && !e.contains("not open"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}
