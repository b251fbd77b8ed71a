//! lock-acquire / lock-release / lock-status and the flock persona, proven
//! with real ffkit processes: counters incremented under contention in every
//! mode (oracle: the final count), holders killed with SIGKILL, the timeout
//! window, the backoff schedule, ownership and status output.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const PROCS: usize = 16;
const INCREMENTS: usize = 15;

fn lock_dir(w: &World) -> PathBuf {
    w.path().join("locks")
}

/// `ffkit APPLET` with the world's lock dir.
fn ff(w: &World, applet: &str) -> Command {
    let mut c = w.cmd(applet);
    c.env("FFKIT_LOCK_DIR", lock_dir(w));
    c
}

/// `bash -c SCRIPT` in the world, with `$FF` naming the ffkit binary and
/// `$FLOCK` a symlink to it named `flock`.
fn bash(w: &World, script: &str) -> Command {
    let flock = w.link("flock").get_program().to_owned();
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.env("FFKIT_LOCK_DIR", lock_dir(w))
        .env("FF", bin())
        .env("FLOCK", flock)
        .arg("-c")
        .arg(script);
    c
}

fn pid(id: u32) -> rustix::process::Pid {
    i32::try_from(id)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a pid")
}

/// SIGKILLs a process the test started and has not reaped (or, for a named
/// holder, one that holds the test's lock), so its pid is not reused.
fn kill(id: u32) {
    let _ = rustix::process::kill_process(pid(id), rustix::process::Signal::KILL);
}

/// Kills a whole process group the test started (holder and its command).
fn kill_group(c: &mut Child) {
    kill_pgid(c.id());
    let _ = c.wait();
}

/// SIGKILLs the process group the test created for a child
/// (`process_group(0)`), while a member of it is alive.
fn kill_pgid(pgid: u32) {
    let _ = rustix::process::kill_process_group(pid(pgid), rustix::process::Signal::KILL);
}

fn held(w: &World, target: &str) -> bool {
    ff(w, "lock-status")
        .args(["-q", target])
        .status()
        .expect("run")
        .code()
        == Some(0)
}

/// Whether TARGET is held and its holder's record is written: held alone
/// is not enough where a test reads the holder, since the record is written
/// just after the lock is taken (a status in between rightly says "an
/// unknown holder").
fn recorded(w: &World, target: &str) -> bool {
    let o = ff(w, "lock-status").arg(target).output().expect("run");
    o.status.code() == Some(0) && String::from_utf8_lossy(&o.stdout).contains("by pid ")
}

/// Runs PROCS copies of `body` (a bash loop body run INCREMENTS times that
/// must increment the counter file `c` under a lock) at once, `rounds`
/// times, and checks the count each round: the oracle for exclusion.
fn contention(w: &World, body: &str, env: &[(&str, &str)], rounds: usize) {
    for round in 0..rounds {
        std::fs::write(w.path().join("c"), "0\n").unwrap();
        let script = format!("for i in $(seq {INCREMENTS}); do {body}; done");
        let kids: Vec<Child> = (0..PROCS)
            .map(|_| {
                let mut c = bash(w, &script);
                c.envs(env.iter().copied())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                c.spawn().unwrap()
            })
            .collect();
        for k in kids {
            let out = k.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr_of(&out));
        }
        let n = std::fs::read_to_string(w.path().join("c")).unwrap();
        assert_eq!(
            n.trim(),
            (PROCS * INCREMENTS).to_string(),
            "round {round}: lost updates"
        );
    }
}

const INCR: &str = "read n < c; echo $((n+1)) > c";

/// Command mode writes its self-timing row (the wait) while the command
/// runs: the command itself sees it, with both lock kinds.
#[test]
fn command_mode_writes_its_metrics_row_while_the_command_runs() {
    let w = World::new();
    fs::create_dir_all(w.cache()).expect("cache dir");
    for (extra, lk) in [(&[][..], "lk"), (&["--dotlock"], "dot")] {
        let _ = fs::remove_file(w.metrics_log());
        let out = ff(&w, "lock-acquire")
            .args(extra)
            .arg(w.path().join(lk))
            .args(["--", "sh", "-c", &waits_for_its_row(&w)])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {}", stderr_of(&out));
        let log = fs::read_to_string(w.metrics_log()).expect("metrics log");
        assert_eq!(log.matches(",lock_acquire,").count(), 1, "{extra:?}: {log}");
    }
}

/// `lock-acquire`'s hand parser (its plain command-mode calls skip clap)
/// gives every answer clap gives: the command's status and output, a busy
/// lock, a command that cannot start, a bad backend, a lock file that
/// cannot be opened.
#[test]
fn lock_acquire_fast_path_answers_as_clap_does() {
    let w = World::new();
    let lk = w.path().join("lk");
    let lk = lk.to_str().expect("a UTF-8 temp path");
    let missing = w.path().join("no-dir").join("lk");
    let missing = missing.to_str().expect("a UTF-8 temp path");
    let run = "echo ran; echo err >&2; exit 3";
    let cmd = || ff(&w, "lock-acquire");
    assert_fast_path_answers_as_clap(
        &cmd,
        &[
            (
                &[lk, "--", "sh", "-c", run],
                &["-x", lk, "--", "sh", "-c", run],
            ),
            (
                &["-w", "5", "--backend", "local", lk, "--", "sh", "-c", run],
                &["--timeout=5", "--backend=local", lk, "--", "sh", "-c", run],
            ),
            (
                &[lk, "--", "/nonexistent/cmd"],
                &["-x", lk, "--", "/nonexistent/cmd"],
            ),
            (&[missing, "--", "true"], &["-x", missing, "--", "true"]),
            (
                &["--backend", "bogus://x", lk, "--", "true"],
                &["--backend=bogus://x", lk, "--", "true"],
            ),
            (&["named", "--", "true"], &["-x", "named", "--", "true"]),
        ],
    );
    // Busy: -w 0 is non-blocking in both (exit 5, one line naming the
    // holder).
    let mut holder = ff(&w, "lock-acquire");
    holder.args([lk, "--", "sh", "-c", "echo locked; read x"]);
    let mut holder = spawn_locked(holder);
    assert_fast_path_answers_as_clap(
        &cmd,
        &[(
            &["-w", "0", lk, "--", "true"],
            &["--timeout=0", lk, "--", "true"],
        )],
    );
    let out = cmd()
        .args(["-w", "0", lk, "--", "true"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(5), "{}", stderr_of(&out));
    drop(holder.stdin.take());
    let _ = holder.wait();
}

#[test]
fn command_mode_counts_exactly_under_contention() {
    let w = World::new();
    contention(&w, &format!("\"$FF\" lock-acquire L -c '{INCR}'"), &[], 1);
}

#[test]
fn fd_mode_counts_exactly_under_contention() {
    let w = World::new();
    let body = format!(
        "exec 9>>L; \"$FF\" lock-acquire --fd 9 || exit 1; {INCR}; \"$FF\" lock-release --fd 9 || exit 1"
    );
    contention(&w, &body, &[], 1);
}

#[test]
fn named_pairs_count_exactly_under_contention_on_every_backend() {
    for b in Backend::all() {
        let w = World::new();
        let mut env = b.env(&w);
        env.push(("LOCK_TIMEOUT".into(), "120".into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body =
            format!("\"$FF\" lock-acquire N || exit 1; {INCR}; \"$FF\" lock-release N || exit 1");
        contention(&w, &body, &env, 1);
        assert!(!b.held(&w, "N"), "{}: every pair released", b.name());
    }
}

/// `lock-status` answers in one schema on every backend: the same fields
/// and words, a field absent (never null) where the backend has no such
/// thing; ownership and exit codes of `lock-release` are the same too.
#[test]
fn lock_status_and_release_answer_alike_on_every_backend() {
    for b in Backend::all() {
        let name = b.name();
        let w = World::new();
        let status = |target: &str| {
            let out = b
                .cmd(&w, "lock-status")
                .args(["--json", target])
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{name}: {e}: {}", stderr_of(&out)));
            (out.status.code(), v)
        };
        let (code, free) = status("S");
        assert_eq!(code, Some(1), "{name}: {free}");
        assert_eq!(free["state"], "free", "{name}: {free}");
        assert!(free["pid"].is_null(), "{name}: {free}");
        let mut owner = Command::new("sleep").arg("60").spawn().unwrap();
        let pid = owner.id().to_string();
        b.cmd(&w, "lock-acquire")
            .args(["--owner", &pid, "S"])
            .assert()
            .success();
        assert!(b.held(&w, "S"), "{name}: the oracle sees it held");
        let (code, held) = status("S");
        assert_eq!(code, Some(0), "{name}: {held}");
        assert_eq!(held["state"], "held", "{name}: {held}");
        assert_eq!(held["mode"], "exclusive", "{name}: {held}");
        assert_eq!(held["pid"], owner.id(), "{name}: {held}");
        assert_eq!(held["holder_kind"], "named", "{name}: {held}");
        assert!(held["holder_pid"].is_u64(), "{name}: {held}");
        assert!(
            held["since"].is_string() && held["age_seconds"].is_number(),
            "{name}: {held}"
        );
        assert_eq!(held["stale"], false, "{name}: {held}");
        let o = held.as_object().unwrap();
        match b {
            Backend::Local => {
                assert_eq!(held["kind"], "kernel", "{held}");
                assert!(
                    held["path"].as_str().unwrap().ends_with("/S.lock"),
                    "{held}"
                );
                for absent in ["backend", "fence", "lease_left_seconds"] {
                    assert!(!o.contains_key(absent), "local has no {absent}: {held}");
                }
            }
            Backend::Redis(_) => {
                assert_eq!(held["kind"], "redis", "{held}");
                assert!(
                    held["fence"].is_u64() && held["lease_left_seconds"].is_number(),
                    "{held}"
                );
                assert!(
                    held["backend"].as_str().unwrap().starts_with("redis://"),
                    "{held}"
                );
                assert!(!o.contains_key("path"), "redis has no path: {held}");
            }
        }
        let text = b.cmd(&w, "lock-status").arg("S").output().unwrap();
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(
            text.starts_with("S: held (exclusive") && text.contains(&format!(") by pid {pid} on ")),
            "{name}: {text}"
        );
        // Someone else's lock: exit 5 with the holder named; not held: 4.
        let out = b.cmd(&w, "lock-release").arg("S").output().unwrap();
        assert_eq!(out.status.code(), Some(5), "{name}: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains(&format!("S: held by pid {pid} on ")),
            "{name}: {}",
            stderr_of(&out)
        );
        b.cmd(&w, "lock-release")
            .args(["--owner", &pid, "S"])
            .assert()
            .success();
        assert!(!b.held(&w, "S"), "{name}: released");
        let out = b
            .cmd(&w, "lock-release")
            .args(["--owner", &pid, "S"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{name}: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains("S: not held"),
            "{name}: {}",
            stderr_of(&out)
        );
        let _ = owner.kill();
        let _ = owner.wait();
    }
}

#[test]
fn dotlocks_count_exactly_under_contention() {
    let w = World::new();
    let body = format!("\"$FF\" lock-acquire --dotlock D -c '{INCR}' || exit 1");
    // Short backoff keeps the polling run quick; the schedule itself is
    // tested below.
    let env = [
        ("LOCK_BACKOFF_INITIAL", "0.002"),
        ("LOCK_BACKOFF_MAX", "0.01"),
    ];
    contention(&w, &body, &env, 1);
    assert!(!w.path().join("D").exists());
    assert!(!w.path().join("D.lock").exists());
}

#[test]
fn flock_persona_counts_exactly_under_contention() {
    let w = World::new();
    contention(&w, &format!("\"$FLOCK\" L -c '{INCR}' || exit 1"), &[], 1);
}

#[test]
fn ofd_fcntl_locks_count_exactly_under_contention() {
    let w = World::new();
    // Half through the persona, half through lock-acquire: one OFD lock.
    contention(
        &w,
        &format!(
            "if [ $((i % 2)) = 0 ]; then \"$FLOCK\" --fcntl L -c '{INCR}' || exit 1; else \"$FF\" lock-acquire --fcntl L -c '{INCR}' || exit 1; fi"
        ),
        &[],
        1,
    );
}

/// Starts a waiter and returns once it has printed its waiting line
/// (printed off a terminal only with FF_DEBUG=true or --verbose); the rest
/// of its stderr is drained by a thread.
fn start_waiter(mut c: Command) -> Child {
    c.env("FF_DEBUG", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).unwrap();
        assert!(n > 0, "no waiting line: {seen}");
        seen.push_str(&line);
        if line.contains("waiting for lock") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

/// `base` plus four times what one ffkit process costs right now (the
/// slowest of three `ffkit --version` runs, so one scheduling spike in the
/// measured interval has its like in the measurement): on an idle machine that is
/// `base` and a few ms, and on a loaded one it grows with the cost of every
/// process start, exit and wake-up the measured interval is made of. A
/// waiter that polled instead of being woken, or a timeout off by a unit,
/// is still far outside it.
fn about(w: &World, base: Duration) -> Duration {
    let mut costs: Vec<Duration> = (0..3)
        .map(|_| {
            let t0 = Instant::now();
            let out = w.cmd("--version").output().unwrap();
            assert!(out.status.success(), "{}", stderr_of(&out));
            t0.elapsed()
        })
        .collect();
    costs.sort();
    base + costs[2] * 4
}

/// Kills `victim` and returns how long `waiter` then took to finish.
fn handover(victim: u32, mut waiter: Child) -> (Duration, std::process::ExitStatus) {
    let t0 = Instant::now();
    kill(victim);
    let st = waiter.wait().unwrap();
    (t0.elapsed(), st)
}

#[test]
fn killed_command_holder_hands_over_within_100ms() {
    // The command holds the lock too (it inherits the locked description):
    // killing ffkit and its command together hands it over at once.
    let w = World::new();
    let mut holder = ff(&w, "lock-acquire");
    holder.args(["L", "--", "sleep", "30"]).process_group(0);
    let mut holder = holder.spawn().unwrap();
    wait_until("holder", 60, || held(&w, "./L"));
    let mut waiter = ff(&w, "lock-acquire");
    waiter.args(["-w", "10", "L", "--", "true"]);
    let mut waiter = start_waiter(waiter);
    let bound = about(&w, Duration::from_millis(100));
    let t0 = Instant::now();
    kill_pgid(holder.id());
    let st = waiter.wait().unwrap();
    let took = t0.elapsed();
    let _ = holder.wait();
    assert!(st.success());
    assert!(took < bound, "{took:?} (bound {bound:?})");
}

#[test]
fn killed_fd_holder_hands_over_within_100ms() {
    let w = World::new();
    let mut holder = locked_shell(&w, "exec 9>>L; \"$FF\" lock-acquire --fd 9");
    let waiter = start_waiter(bash(
        &w,
        "exec 9>>L; exec \"$FF\" lock-acquire -w 10 --fd 9",
    ));
    let bound = about(&w, Duration::from_millis(100));
    let (took, st) = handover(holder.id(), waiter);
    let _ = holder.wait();
    assert!(st.success());
    assert!(took < bound, "{took:?} (bound {bound:?})");
}

fn status_json(w: &World, target: &str) -> serde_json::Value {
    let out = ff(w, "lock-status")
        .args(["--json", target])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A bash that takes the named lock N and then waits on its stdin.
fn named_owner_shell(w: &World) -> Child {
    locked_shell(w, "\"$FF\" lock-acquire N")
}

/// A bash that runs `take` (which takes a lock), says so, and then waits on
/// its stdin; returned once the lock is held.
fn locked_shell(w: &World, take: &str) -> Child {
    spawn_locked(bash(w, &format!("{take} && echo locked; read x")))
}

#[test]
fn killed_named_holder_hands_over_within_100ms() {
    let w = World::new();
    let mut owner = named_owner_shell(&w);
    let st = status_json(&w, "N");
    assert_eq!(st["pid"], owner.id());
    let holder_pid = st["holder_pid"].as_u64().unwrap() as u32;
    let mut waiter = ff(&w, "lock-acquire");
    waiter.args(["-w", "10", "N"]);
    let waiter = start_waiter(waiter);
    let bound = about(&w, Duration::from_millis(100));
    let (took, st) = handover(holder_pid, waiter);
    assert!(st.success());
    assert!(took < bound, "{took:?} (bound {bound:?})");
    // The waiter's lock belongs to this test process: release it.
    ff(&w, "lock-release").arg("N").assert().success();
    kill(owner.id());
    let _ = owner.wait();
}

#[test]
fn named_lock_is_free_within_1s_after_its_owner_shell_dies() {
    let w = World::new();
    let mut owner = named_owner_shell(&w);
    let mut waiter = ff(&w, "lock-acquire");
    waiter.args(["-w", "10", "N"]);
    let waiter = start_waiter(waiter);
    let bound = about(&w, Duration::from_secs(1));
    let (took, st) = handover(owner.id(), waiter);
    let _ = owner.wait();
    assert!(st.success());
    assert!(took < bound, "{took:?} (bound {bound:?})");
    ff(&w, "lock-release").arg("N").assert().success();
    assert!(!held(&w, "N"));
}

/// The named holder is the binary re-executed with the lock (its command
/// line is the holder form, not a forked copy of `lock-acquire`), in a
/// session of its own, ignoring SIGHUP, SIGINT and SIGPIPE, and it keeps
/// nothing of its caller's: stdio on /dev/null, the lock file and a pidfd
/// of the owner, and nothing else (the shell's fd 7 on a file and fd 8 on
/// its stdin pipe stay behind).
#[test]
fn named_holder_is_the_binary_re_executed_keeping_only_its_lock_and_its_owner() {
    let w = World::new();
    let mut owner = locked_shell(&w, "exec 7>extra 8<&0; \"$FF\" lock-acquire N");
    let st = status_json(&w, "N");
    let hp = st["holder_pid"].as_u64().unwrap();
    let cmdline = fs::read(format!("/proc/{hp}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert_eq!(
        args.get(1).copied(),
        Some(&b"--ffkit-lock-holder"[..]),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    let stat = fs::read_to_string(format!("/proc/{hp}/stat")).unwrap();
    let after_comm: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // state ppid pgrp session: the holder leads its own session.
    assert_eq!(after_comm[3], hp.to_string(), "{stat}");
    let status = fs::read_to_string(format!("/proc/{hp}/status")).unwrap();
    let ign = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE] {
        assert!(
            ign & (1 << (sig - 1)) != 0,
            "signal {sig} not ignored: {ign:x}"
        );
    }
    let fds = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(format!("/proc/{hp}/fd"))
            .unwrap()
            .flatten()
            .map(|e| {
                let t = fs::read_link(e.path()).unwrap_or_default();
                format!("{}={}", e.file_name().to_string_lossy(), t.display())
            })
            .collect();
        v.sort();
        v
    };
    let settled = |v: &[String]| {
        let null = v.iter().filter(|f| f.ends_with("=/dev/null")).count();
        let lock = v.iter().filter(|f| f.ends_with("/N.lock")).count();
        let pidfd = v.iter().filter(|f| f.ends_with("[pidfd]")).count();
        v.len() == 5 && null == 3 && lock == 1 && pidfd == 1
    };
    assert!(eventually(|| settled(&fds())), "{:?}", fds());
    kill(owner.id());
    let _ = owner.wait();
    until("the holder exits with its owner", || !held(&w, "N"));
}

#[test]
fn killed_dotlock_holder_is_detected_at_once() {
    let w = World::new();
    let mut holder = ff(&w, "lock-acquire");
    holder
        .args(["--dotlock", "D", "--", "sleep", "300"])
        .process_group(0);
    let mut holder = holder.spawn().unwrap();
    wait_until("dotlock", 60, || w.path().join("D").exists());
    // ffkit and its command: both gone (the record names both; killing
    // only ffkit keeps the lock while the command runs, see lock_holes).
    // The group is signalled while the holder is unreaped, so it is ours.
    kill_pgid(holder.id());
    let _ = holder.wait();
    assert!(w.path().join("D").exists(), "the dead holder's lock stays");
    let bound = about(&w, Duration::from_secs(1));
    let t0 = Instant::now();
    ff(&w, "lock-acquire")
        .args(["--dotlock", "-w", "0", "D", "--", "true"])
        .assert()
        .success();
    assert!(t0.elapsed() < bound, "{:?} (bound {bound:?})", t0.elapsed());
    assert!(!w.path().join("D").exists());
}

#[test]
fn timeout_exits_6_after_half_a_second() {
    let w = World::new();
    let mut holder = ff(&w, "lock-acquire");
    holder.args(["L", "--", "sleep", "30"]).process_group(0);
    let mut holder = holder.spawn().unwrap();
    wait_until("holder's record", 60, || recorded(&w, "./L"));
    for (args, env) in [
        (vec!["--verbose", "-w", "0.5", "L", "--", "true"], None),
        (vec!["--verbose", "L", "--", "true"], Some("0.5")),
    ] {
        let mut c = ff(&w, "lock-acquire");
        c.args(&args);
        if let Some(t) = env {
            c.env("LOCK_TIMEOUT", t);
        }
        let bound = about(&w, Duration::from_millis(600));
        let t0 = Instant::now();
        let out = c.output().unwrap();
        let took = t0.elapsed();
        assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
        assert!(
            took >= Duration::from_millis(500) && took < bound,
            "{took:?} (bound {bound:?})"
        );
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 2, "{err}"); // waiting line + timeout line
        assert!(err.contains("waiting for lock L (held by pid"), "{err}");
        assert!(out.stdout.is_empty());
    }
    kill_group(&mut holder);
}

/// `lock-status` sees fcntl-family locks too (`--fcntl` takes OFD locks,
/// which flock(2) does not see): held exclusive, held shared, then free.
#[test]
fn lock_status_sees_fcntl_locks_exclusive_and_shared() {
    let w = World::new();
    for (mode, said) in [(None, "held (exclusive)"), (Some("-s"), "held (shared)")] {
        let ready = w.path().join("ready");
        let _ = fs::remove_file(&ready);
        let mut holder = ff(&w, "lock-acquire");
        holder
            .arg("--fcntl")
            .args(mode)
            .args(["./L", "--", "sh", "-c", "touch ready; sleep 30"]);
        let mut holder = holder.process_group(0).spawn().unwrap();
        wait_until("the holder's command", 60, || ready.exists());
        let out = ff(&w, "lock-status").arg("./L").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(&format!("./L: {said}")), "{text}");
        kill_group(&mut holder);
    }
    // The group's sh and sleep, which share the locked description, may
    // still be exiting after the kill: free once the last of them is gone.
    wait_until("the lock to be free", 60, || {
        ff(&w, "lock-status")
            .args(["-q", "./L"])
            .status()
            .unwrap()
            .code()
            == Some(1)
    });
}

#[test]
fn busy_is_5_and_conflict_exit_code_overrides() {
    let w = World::new();
    let mut holder = ff(&w, "lock-acquire");
    holder.args(["L", "--", "sleep", "30"]).process_group(0);
    let mut holder = holder.spawn().unwrap();
    wait_until("holder", 60, || held(&w, "./L"));
    ff(&w, "lock-acquire")
        .args(["-n", "L", "--", "true"])
        .assert()
        .code(5);
    ff(&w, "lock-acquire")
        .args(["-w", "0", "-q", "L", "--", "true"])
        .assert()
        .code(5)
        .stderr("");
    ff(&w, "lock-acquire")
        .args(["-n", "-E", "42", "L", "--", "true"])
        .assert()
        .code(42);
    w.link("flock")
        .args(["-n", "L", "true"])
        .assert()
        .code(1)
        .stderr("");
    kill_group(&mut holder);
}

/// Traced sleeps, in seconds, from a waiter that times out on a held dot-lock.
fn traced_sleeps(w: &World, timeout: &str, env: &[(&str, &str)]) -> Vec<f64> {
    let mut c = ff(w, "lock-acquire");
    c.args(["--dotlock", "-w", timeout, "D", "--", "true"])
        .env("FFKIT_TEST_BACKOFF_TRACE", "1")
        .envs(env.iter().copied());
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
    stderr_of(&out)
        .lines()
        .filter_map(|l| l.split("backoff: sleep ").nth(1))
        .map(|s| s.trim_end_matches('s').parse().unwrap())
        .collect()
}

/// `got` follows `schedule` exactly (at least `min_exact` sleeps), except
/// that the last sleep may be shortened to land on the `timeout`. Process
/// start-up counts against the deadline, so on a loaded machine the
/// shortening may come a step early; hence the slack in each timeout.
fn assert_schedule(got: &[f64], schedule: &[f64], min_exact: usize, timeout: f64) {
    let n = got.len();
    assert!(n > min_exact && n <= schedule.len(), "{got:?}");
    assert_eq!(&got[..n - 1], &schedule[..n - 1], "{got:?}");
    assert!(got[n - 1] <= schedule[n - 1], "{got:?}");
    let total: f64 = got.iter().sum();
    assert!(total <= timeout + 1e-9, "{got:?} sums past {timeout}");
}

#[test]
fn dotlock_backoff_follows_the_strategy_and_lands_on_the_deadline() {
    let w = World::new();
    let mut holder = ff(&w, "lock-acquire");
    holder
        .args(["--dotlock", "D", "--", "sleep", "30"])
        .process_group(0);
    let mut holder = holder.spawn().unwrap();
    wait_until("dotlock", 60, || w.path().join("D").exists());
    // exponential (default): 0.1, 0.2, 0.4, then the rest of 1 s.
    let got = traced_sleeps(&w, "1", &[]);
    assert_schedule(&got, &[0.1, 0.2, 0.4, 0.8], 3, 1.0);
    // The cap: doubling stops at LOCK_BACKOFF_MAX.
    let env = [
        ("LOCK_BACKOFF_INITIAL", "0.05"),
        ("LOCK_BACKOFF_MAX", "0.2"),
    ];
    let got = traced_sleeps(&w, "0.9", &env);
    assert_schedule(&got, &[0.05, 0.1, 0.2, 0.2, 0.2, 0.2], 4, 0.9);
    // linear: a fixed 0.5 s.
    let env = [("LOCK_BACKOFF_STRATEGY", "linear")];
    let got = traced_sleeps(&w, "1.2", &env);
    assert_schedule(&got, &[0.5, 0.5, 0.5], 2, 1.2);
    kill_group(&mut holder);
}

/// `lock-acquire [--inherit] L -c BG`, where BG leaves a background child
/// that lives until the returned pipe end is dropped: the test ends it by
/// closing a pipe, never by signalling a `$!` (a pid that, once its process
/// has exited, the kernel may give to another test's process). The pipe
/// is on fd 8: fd 3 is where `--inherit` passes the lock.
fn with_background_child(
    w: &World,
    inherit: bool,
) -> (std::process::ChildStdin, std::process::Output) {
    let bg = "exec 8<&0; { read -r _ <&8; } >/dev/null 2>&1 & exit 0";
    let mut c = ff(w, "lock-acquire");
    if inherit {
        c.arg("--inherit");
    }
    c.args(["L", "-c", bg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let keep = child.stdin.take().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    (keep, out)
}

#[test]
fn background_child_does_not_keep_the_lock_unless_inherit() {
    let w = World::new();
    let (bg, _) = with_background_child(&w, false);
    let t0 = Instant::now();
    let free = ff(&w, "lock-acquire")
        .args(["-n", "L", "--", "true"])
        .status()
        .unwrap();
    assert!(free.success(), "the background child kept the lock");
    assert!(t0.elapsed() < Duration::from_millis(50) || free.success());
    drop(bg);

    let (bg, _) = with_background_child(&w, true);
    ff(&w, "lock-acquire")
        .args(["-n", "L", "--", "true"])
        .assert()
        .code(5);
    // The inherited lock goes with the background child.
    drop(bg);
    wait_until("the background child to exit and free L", 60, || {
        ff(&w, "lock-acquire")
            .args(["-n", "L", "--", "true"])
            .status()
            .unwrap()
            .success()
    });
}

#[test]
fn command_exit_status_and_signal_are_passed_on() {
    let w = World::new();
    ff(&w, "lock-acquire")
        .args(["L", "-c", "exit 7"])
        .assert()
        .code(7);
    ff(&w, "lock-acquire")
        .args(["L", "--", "sh", "-c", "kill -TERM $$"])
        .assert()
        .code(128 + 15);
    ff(&w, "lock-acquire")
        .args(["L", "--", "no-such-command-xyz"])
        .assert()
        .code(127);
}

#[test]
fn symlink_at_lock_path_is_refused_and_nothing_is_created() {
    let w = World::new();
    let target = w.path().join("victim");
    std::os::unix::fs::symlink(&target, w.path().join("L")).unwrap();
    ff(&w, "lock-acquire")
        .args(["L", "--", "true"])
        .assert()
        .code(3);
    std::fs::create_dir_all(lock_dir(&w)).unwrap();
    std::os::unix::fs::symlink(&target, lock_dir(&w).join("N.lock")).unwrap();
    ff(&w, "lock-acquire").arg("N").assert().code(3);
    ff(&w, "lock-acquire")
        .args(["--dotlock", "N"])
        .assert()
        .code(3);
    assert!(!target.exists());
}

#[test]
fn only_the_owner_releases_a_named_lock_unless_forced() {
    let w = World::new();
    let mut owner = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = owner.id().to_string();
    ff(&w, "lock-acquire")
        .args(["--owner", &pid, "N"])
        .assert()
        .success();
    ff(&w, "lock-release")
        .arg("N")
        .assert()
        .code(5)
        .stderr(predicates::str::contains("not by you"));
    assert!(held(&w, "N"));
    ff(&w, "lock-release")
        .args(["--owner", &pid, "N"])
        .assert()
        .success();
    assert!(!held(&w, "N"));
    ff(&w, "lock-release").arg("N").assert().code(4);

    // The same for dot-locks, and --force.
    ff(&w, "lock-acquire")
        .args(["--dotlock", "--owner", &pid, "D"])
        .assert()
        .success();
    ff(&w, "lock-release").arg("D").assert().code(5);
    ff(&w, "lock-release")
        .args(["--force", "D"])
        .assert()
        .success();
    assert!(!lock_dir(&w).join("D").exists());
    owner.kill().unwrap();
    let _ = owner.wait();
}

#[test]
fn status_reports_holder_in_text_json_and_exit_code() {
    let w = World::new();
    ff(&w, "lock-status")
        .arg("N")
        .assert()
        .code(1)
        .stdout("N: free\n");
    ff(&w, "lock-status")
        .args(["-q", "N"])
        .assert()
        .code(1)
        .stdout("");
    ff(&w, "lock-acquire").arg("N").assert().success();
    let me = std::process::id().to_string();
    ff(&w, "lock-status")
        .arg("N")
        .assert()
        .code(0)
        .stdout(predicates::str::starts_with("N: held (exclusive) by pid "))
        .stdout(predicates::str::contains(format!("pid {me}")))
        .stdout(predicates::str::contains("since "));
    let j = status_json(&w, "N");
    assert_eq!(j["state"], "held");
    assert_eq!(j["kind"], "kernel");
    assert_eq!(j["pid"].to_string(), me);
    assert!(j["host"].is_string() && j["command"].is_string());
    assert!(j["age_seconds"].as_f64().unwrap() >= 0.0);
    ff(&w, "lock-status")
        .args(["-q", "N"])
        .assert()
        .code(0)
        .stdout("");
    ff(&w, "lock-release").arg("N").assert().success();
    let j = status_json(&w, "N");
    assert_eq!(j["state"], "free");
    // A path (with '/') is probed directly; a command-mode holder is named.
    let mut holder = ff(&w, "lock-acquire");
    holder.args(["L", "--", "sleep", "30"]).process_group(0);
    let mut holder = holder.spawn().unwrap();
    wait_until("holder's record", 60, || recorded(&w, "./L"));
    ff(&w, "lock-status")
        .arg("./L")
        .assert()
        .code(0)
        .stdout(predicates::str::contains(format!("by pid {}", holder.id())))
        .stdout(predicates::str::contains("sleep 30"));
    kill_group(&mut holder);
}

/// A command-mode lock taken after a wait names its holder: the lock was
/// taken by `lock_fd`'s helper child, gone since, and `/proc/locks` names
/// that child, so `lock-status` said "an unknown holder" for as long as
/// the command ran. `status_reports_holder_in_text_json_and_exit_code`
/// waited for its holder's name in vain (60 s, a CI flake) whenever its
/// own `lock-status` poll held the probe's shared lock at the instant the
/// holder tried, which made the holder wait. The holder is now the live
/// process whose descriptor holds the lock (ffkit, not its command).
#[test]
fn a_command_lock_taken_after_a_wait_names_its_holder() {
    let w = World::new();
    let script = "exec 9>>L; \"$FLOCK\" 9 || exit 1\n\
                  \"$FF\" lock-acquire --verbose L -- sh -c 'until [ -e stop ]; do sleep 0.01; done' 2>err 9>&- & b=$!\n\
                  until grep -q 'waiting' err; do sleep 0.01; done; exec 9>&-\n\
                  until \"$FF\" lock-status -q ./L; do sleep 0.01; done\n\
                  \"$FF\" lock-status ./L | sed \"s/pid $b,/pid B,/\"; \"$FF\" lock-status --json ./L | grep -c \"\\\"pid\\\":$b\"\n\
                  : >stop; wait $b";
    let o = bash(&w, script).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("./L: held (exclusive) by pid B, command: ")
            && out.contains("lock-acquire --verbose L -- sh -c")
            && out.ends_with("\n1\n"),
        "{out}{}",
        stderr_of(&o)
    );
}

#[test]
fn flock_persona_is_unlisted_and_takes_fd_numbers() {
    let w = World::new();
    let list = w.cmd("--list").output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains("flock"));
    bash(
        &w,
        "exec 9>>L; \"$FLOCK\" 9 || exit 1; \"$FF\" lock-acquire -n L -- true; echo $?; \"$FLOCK\" -u 9; \"$FF\" lock-acquire -n L -- true; echo $?",
    )
    .assert()
    .success()
    .stdout("5\n0\n");
}

#[test]
fn default_lock_dir_is_private_and_a_foreign_or_open_one_is_refused() {
    let w = World::new();
    let run = w.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let status = |c: &mut Command| {
        c.env_remove("FFKIT_LOCK_DIR")
            .env("XDG_RUNTIME_DIR", &run)
            .output()
            .unwrap()
    };
    let out = status(w.cmd("lock-status").arg("N"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    // A query creates nothing (docs/locks.md, "Lock dir"); a lock's
    // set-up makes the dir.
    assert!(!run.join("ffkit").exists(), "lock-status made the dir");
    let out = status(w.cmd("lock-acquire").args(["--prepare", "N"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));

    let dir = run.join("ffkit").join("locks");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // Writable by others: refused (exit 3).
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = status(w.cmd("lock-status").arg("N"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    // A symlink in its place: refused, nothing created behind it.
    std::fs::remove_dir_all(run.join("ffkit")).unwrap();
    let elsewhere = w.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, run.join("ffkit")).unwrap();
    let out = status(w.cmd("lock-acquire").arg("N"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(!elsewhere.join("locks").exists());
    // Named locks in a FlowForge namespace live under locks/ and sessions/locks/.
    let ns = |session: bool| {
        let mut c = w.cmd("lock-acquire");
        c.env("FLOWFORGE_DEVELOPER", "ada").arg("S");
        if session {
            c.arg("--session");
        }
        c.assert().success();
    };
    ns(false);
    ns(true);
    let base = w.path().join(".flowforge/dev-ada");
    assert!(base.join("locks/S.lock").is_file());
    assert!(base.join("sessions/locks/S.lock").is_file());
    for s in [false, true] {
        let mut c = w.cmd("lock-release");
        c.env("FLOWFORGE_DEVELOPER", "ada").arg("S");
        if s {
            c.arg("--session");
        }
        c.assert().success();
    }
}

#[test]
fn named_lock_asked_again_by_its_owner_is_a_conflict_not_a_hang() {
    let w = World::new();
    ff(&w, "lock-acquire").arg("N").assert().success();
    let bound = about(&w, Duration::from_secs(2));
    let t0 = Instant::now();
    ff(&w, "lock-acquire")
        .arg("N")
        .assert()
        .code(5)
        .stderr(predicates::str::contains("already held by this owner"));
    assert!(t0.elapsed() < bound, "{:?} (bound {bound:?})", t0.elapsed());
    ff(&w, "lock-release").arg("N").assert().success();
}

// ---------------------------------------------------------------- hostile names and files
// Bad names and options, planted symlinks and FIFOs, a hostile umask
// (docs/hardening.md); bad environment values are in env.rs.

/// [`ff`] without self-timing, so the lock dir is all a run may touch.
fn lock_cmd(w: &World, applet: &str) -> Command {
    let mut c = ff(w, applet);
    c.env("CACHE_PERF_MONITORING", "disabled");
    c
}

#[test]
fn bad_lock_names_and_options_exit_2_and_create_nothing() {
    let w = seeded();
    fs::create_dir_all(w.path().join("locks")).unwrap();
    let mut names: Vec<Vec<u8>> = [
        &b""[..],
        b".",
        b"..",
        b".hidden",
        b"a\nb",
        b"tab\tb",
        b"\x7f",
        b"\xff\xfe",
    ]
    .iter()
    .map(|n| n.to_vec())
    .collect();
    names.push(vec![b'n'; 201]);
    for n in &names {
        let shown = String::from_utf8_lossy(n).escape_debug().to_string();
        for (applet, pre) in [
            ("lock-acquire", &["-n"][..]),
            ("lock-acquire", &["-n", "--dotlock"][..]),
            ("lock-release", &[][..]),
            ("lock-release", &["--dotlock"][..]),
            ("lock-status", &[][..]),
        ] {
            let mut c = lock_cmd(&w, applet);
            c.args(pre).arg("--").arg(osb(n));
            let before = outside_snapshot(&w);
            let out = output_within(c, &shown);
            let err = stderr_of(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{applet} {pre:?} '{shown}': {err}"
            );
            assert_eq!(stderr_lines(&out).len(), 1, "{err}");
            assert!(!err.contains("panicked"), "{err}");
            assert_eq!(
                outside_snapshot(&w),
                before,
                "{applet} '{shown}' created files"
            );
        }
    }
    for args in [
        &["-w", "abc", "x", "--", "true"][..],
        &["-w=-1", "x", "--", "true"],
        &["-w", "1e999", "x", "--", "true"],
        &["-w", "99999999999999999999", "x", "--", "true"],
        &["-w", "5x", "x", "--", "true"],
        &["-E", "300", "x", "--", "true"],
        &["--fd", "-1"],
        &["--fd", "77"],
        &["-s", "named-shared-is-refused"],
    ] {
        let mut c = lock_cmd(&w, "lock-acquire");
        c.args(args);
        let before = outside_snapshot(&w);
        let out = output_within(c, &format!("{args:?}"));
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(stderr_lines(&out).len(), 1, "{err}");
        assert_eq!(outside_snapshot(&w), before, "{args:?} created files");
    }
    assert_eq!(fs::read_dir(w.path().join("locks")).unwrap().count(), 0);
}

#[test]
fn symlinked_and_fifo_lock_files_are_refused_without_blocking() {
    let w = World::new();
    let dir = w.path().join("locks");
    fs::create_dir_all(&dir).unwrap();
    let t = Target::new(&w, "lock-target", b"precious");
    std::os::unix::fs::symlink(&t.path, dir.join("sym.lock")).unwrap();
    std::os::unix::fs::symlink(w.path().join("outside/never"), dir.join("dangling.lock")).unwrap();
    for name in ["sym", "dangling"] {
        for (applet, args, code) in [
            ("lock-acquire", &["-n"][..], 3),
            ("lock-status", &[][..], 3),
            ("lock-release", &[][..], 3),
            ("lock-acquire", &["-n", "--dotlock"][..], 3),
        ] {
            let mut c = lock_cmd(&w, applet);
            c.args(args).arg(name);
            let out = output_within(c, name);
            let err = stderr_of(&out);
            assert_eq!(
                out.status.code(),
                Some(code),
                "{applet} {args:?} {name}: {err}"
            );
            assert_eq!(stderr_lines(&out).len(), 1, "{err}");
        }
        // Command mode through a symlink path (flock(1) style) refuses too.
        let mut c = lock_cmd(&w, "lock-acquire");
        c.args(["-n"])
            .arg(dir.join(format!("{name}.lock")))
            .args(["--", "true"]);
        let out = output_within(c, name);
        assert_eq!(out.status.code(), Some(3), "{name}: {}", stderr_of(&out));
    }
    t.assert_untouched("lock symlink");
    assert!(
        !w.path().join("outside/never").exists(),
        "dangling target created"
    );
    // FIFOs: before the fix, status/release (and command mode on a FIFO path)
    // blocked forever in open(2).
    mkfifo(&dir.join("ff.lock"));
    for (applet, args) in [
        ("lock-status", vec!["ff".to_string()]),
        ("lock-release", vec!["ff".to_string()]),
        ("lock-acquire", vec!["-n".into(), "ff".into()]),
        (
            "lock-status",
            vec![dir.join("ff.lock").display().to_string()],
        ),
        (
            "lock-acquire",
            vec![
                "-n".into(),
                dir.join("ff.lock").display().to_string(),
                "--".into(),
                "true".into(),
            ],
        ),
    ] {
        let mut c = lock_cmd(&w, applet);
        c.args(&args);
        let out = output_within(c, &format!("{applet} {args:?}"));
        assert!(!stderr_of(&out).contains("panicked"));
        assert!(stderr_lines(&out).len() <= 1, "{}", stderr_of(&out));
    }
}

#[test]
fn new_lock_dirs_are_0700_and_named_lock_files_0600_whatever_the_umask() {
    let w = World::new();
    for mask in UMASKS {
        let top = w.path().join(format!("u{mask:03o}"));
        let dir = top.join("deep").join("locks");
        let mut c = w.cmd("lock-acquire");
        c.env("FFKIT_LOCK_DIR", &dir).args(["-n", "modes"]);
        with_umask(&mut c, mask);
        let out = output_within(c, "named acquire");
        let _held = Held(&w, dir.clone(), "modes");
        assert!(
            out.status.success(),
            "umask {mask:03o}: {}",
            stderr_of(&out)
        );
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        for d in [top.join("deep"), dir.clone()] {
            assert_eq!(mode(&d), 0o700, "umask {mask:03o}: {d:?}");
        }
        assert_eq!(
            mode(&dir.join("modes.lock")),
            0o600,
            "umask {mask:03o}: named lock file"
        );
        // A lock file the caller names (flock(1) style) stays 0666 less
        // the umask, as flock(1) makes it.
        let lk = top.join("cmd.lk");
        let mut c = w.cmd("lock-acquire");
        c.env("FFKIT_LOCK_DIR", &dir).arg(&lk).args(["--", "true"]);
        with_umask(&mut c, mask);
        let out = output_within(c, "command-mode lock");
        assert!(
            out.status.success(),
            "umask {mask:03o}: {}",
            stderr_of(&out)
        );
        assert_eq!(
            mode(&lk),
            0o666 & !mask,
            "umask {mask:03o}: command-mode lock file"
        );
    }
}

/// fuzz `sidecar`, crash-0d19648e: a holder record in serde's array form
/// with a 127-digit `since`. Not an ffkit bug: serde_json (without its
/// `float_roundtrip` feature) reads the re-serialised float one ulp off, so
/// the round-trip invariant compares `since` within a few ulps; the record
/// must still parse, re-serialise and compare equal otherwise.
#[test]
fn fuzz_regression_holder_record_with_a_huge_since_round_trips_within_an_ulp() {
    use ffkit::lock::holder::Holder;
    let input = format!("[\"\",0,0,\"\",\"\",{}0]", "5".repeat(122));
    let h = Holder::parse(input.as_bytes()).expect("serde accepts the array form");
    let again = Holder::parse(&h.to_line()).expect("own record parses");
    assert!((again.since - h.since).abs() <= h.since.abs() * 4.0 * f64::EPSILON);
    assert_eq!(
        Holder {
            since: h.since,
            ..again
        },
        h
    );
    assert!(h.age() >= 0.0);
}
