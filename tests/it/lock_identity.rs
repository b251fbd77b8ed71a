//! One lock identity (docs/locks.md, "One name, one file"): a lock NAME is
//! exactly one file — `<ns>/locks/NAME.lock`, sessions
//! `<ns>/sessions/locks/ID.lock` — and the shell wrappers, `lock-acquire
//! NAME`, `lock-status NAME` and `lock-release NAME` take and see the same
//! kernel lock on it, with a holder record whichever way it was taken.
//! Proven with real bash processes sourcing the wrappers and real ffkit
//! processes; the oracle for exclusion is a counter file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::*;

fn lib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash")
}

/// A world that is a git repository (a `.git` dir is all the wrappers and
/// the binary look for).
fn repo() -> World {
    let w = World::new();
    std::fs::create_dir_all(w.path().join(".git")).unwrap();
    w
}

/// `bash -c` with the wrappers sourced, `$FF` the binary, in the world.
fn wrapped(w: &World, env: &[(&str, &str)], script: &str) -> Command {
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.env("FFKIT_BIN", bin())
        .env("FF", bin())
        .env("FFKIT_LIB", lib())
        .envs(env.iter().copied())
        .arg("-c")
        .arg(format!(". \"$FFKIT_LIB\"\n{script}"));
    c
}

fn ffkit(w: &World, env: &[(&str, &str)], applet: &str) -> Command {
    let mut c = w.cmd(applet);
    c.envs(env.iter().copied());
    c
}

/// A bash that took `take` through the wrappers and waits on its stdin.
fn holding_shell(w: &World, env: &[(&str, &str)], take: &str) -> Child {
    let mut c = wrapped(w, env, &format!("{take} && echo locked; read x || true"));
    c.stderr(Stdio::inherit());
    spawn_locked(c)
}

fn status(w: &World, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let out = ffkit(w, env, "lock-status")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr_of(&out)))
}

fn finish(mut c: Child) {
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success());
}

/// Each way of naming the lock dir: the wrappers' file is the binary's file,
/// each excludes the other, and lock-status names the wrapper's shell.
#[test]
fn wrappers_and_binary_take_one_kernel_lock_per_name_in_every_lock_dir_mode() {
    let w = repo();
    let other = World::new(); // not a repository
    let run = other.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let outside = other.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let explicit = w.path().join("explicit");
    let root = w.path().to_path_buf();
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, PathBuf);
    let cases: Vec<Case> = vec![
        (
            "developer namespace",
            vec![("FLOWFORGE_DEVELOPER", "alice".into())],
            root.join(".flowforge/dev-alice/locks/deploy.lock"),
        ),
        (
            "legacy namespace in a repository",
            vec![],
            root.join(".flowforge/locks/deploy.lock"),
        ),
        (
            "FFKIT_LOCK_DIR",
            vec![("FFKIT_LOCK_DIR", explicit.display().to_string())],
            explicit.join("deploy.lock"),
        ),
    ];
    for (what, env, file) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sh = holding_shell(&w, &env, "acquire_critical_lock deploy");
        assert!(file.is_file(), "{what}: {} missing", file.display());
        // The binary sees the same kernel lock, held by that shell.
        ffkit(&w, &env, "lock-acquire")
            .args(["-n", "deploy"])
            .assert()
            .code(5);
        let st = status(&w, &env, &["deploy"]);
        assert_eq!(st["state"], "held", "{what}: {st}");
        assert_eq!(st["pid"], sh.id(), "{what}: {st}");
        assert_eq!(st["path"], file.display().to_string(), "{what}");
        finish(sh);
        assert_eq!(status(&w, &env, &["deploy"])["state"], "free", "{what}");
        // And the other way round: the binary's named lock keeps the
        // wrapper out.
        ffkit(&w, &env, "lock-acquire")
            .args(["--owner", &std::process::id().to_string(), "deploy"])
            .assert()
            .success();
        wrapped(&w, &env, "LOCK_TIMEOUT=0.2 acquire_critical_lock deploy")
            .assert()
            .code(6);
        ffkit(&w, &env, "lock-release")
            .args(["--owner", &std::process::id().to_string(), "deploy"])
            .assert()
            .success();
    }
    // Outside any repository, both use the per-user runtime dir.
    let mut env_out = vec![("XDG_RUNTIME_DIR", run.to_str().unwrap())];
    let mut c = wrapped(
        &w,
        &env_out,
        "acquire_critical_lock deploy && echo locked; read x || true",
    );
    c.current_dir(&outside);
    let sh = spawn_locked(c);
    assert!(run.join("ffkit/locks/deploy.lock").is_file());
    env_out.push(("LOCK_TIMEOUT", "0"));
    let mut c = ffkit(&w, &env_out, "lock-acquire");
    c.current_dir(&outside)
        .args(["-n", "deploy"])
        .assert()
        .code(5);
    finish(sh);
}

#[test]
fn session_locks_are_one_file_for_the_wrappers_and_the_binary() {
    let w = repo();
    let sh = holding_shell(&w, &[], "acquire_session_lock bob s-1");
    let file = w.path().join(".flowforge/dev-bob/sessions/locks/s-1.lock");
    assert!(file.is_file());
    let env = [("FLOWFORGE_DEVELOPER", "bob")];
    ffkit(&w, &env, "lock-acquire")
        .args(["-n", "--session", "s-1"])
        .assert()
        .code(5);
    let st = status(&w, &env, &["--session", "s-1"]);
    assert_eq!(st["state"], "held");
    assert_eq!(st["pid"], sh.id());
    finish(sh);
    assert_eq!(status(&w, &env, &["--session", "s-1"])["state"], "free");
    // Released through the wrapper: the record is gone with the lock.
    wrapped(
        &w,
        &[],
        "acquire_session_lock bob s-1 && release_session_lock bob s-1",
    )
    .assert()
    .success();
    assert!(crate::util::released(&file));
}

/// The owner may release a wrapper-held lock by name too; anyone else gets
/// exit 5.
#[test]
fn lock_release_name_of_a_wrapper_held_lock_checks_the_owner() {
    let w = repo();
    let env = [("FLOWFORGE_DEVELOPER", "alice")];
    let sh = holding_shell(&w, &env, "acquire_critical_lock deploy");
    ffkit(&w, &env, "lock-release")
        .arg("deploy")
        .assert()
        .code(5)
        .stderr(predicates::str::contains(format!("pid {}", sh.id())));
    finish(sh);
    wrapped(
        &w,
        &env,
        "acquire_critical_lock deploy; \"$FF\" lock-release deploy; \"$FF\" lock-status -q deploy; echo status=$?",
    )
    .assert()
    .success()
    .stdout("status=1\n");
}

#[test]
fn a_descriptor_on_another_file_is_refused_for_a_name() {
    let w = repo();
    std::fs::write(w.path().join("other"), "").unwrap();
    wrapped(
        &w,
        &[],
        "exec 9<other; \"$FF\" lock-acquire --fd 9 deploy; echo rc=$?",
    )
    .assert()
    .success()
    .stdout("rc=2\n")
    .stderr(predicates::str::contains("not on the lock file"));
}

/// Lock dirs and files the wrappers create get the binary's
/// modes (0700/0600) whatever the umask (docs/locks.md).
#[test]
fn wrapper_lock_dirs_and_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    // One shell (the wrappers load once), one repo per umask.
    let w = World::new();
    let mut script = String::new();
    for mask in UMASKS {
        std::fs::create_dir_all(w.path().join(format!("u{mask:03o}/.git"))).unwrap();
        script += &format!(
            "(cd u{mask:03o} && umask {mask:03o} && acquire_critical_lock a && release_critical_lock a && acquire_session_lock dev s && release_session_lock dev s) || exit 1\n"
        );
    }
    wrapped(&w, &[], &script).assert().success();
    for mask in UMASKS {
        let mode = |p: &str| {
            std::fs::metadata(w.path().join(format!("u{mask:03o}")).join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        for (p, want) in [
            (".flowforge", 0o700),
            (".flowforge/locks", 0o700),
            (".flowforge/locks/a.lock", 0o600),
            (".flowforge/dev-dev/sessions/locks", 0o700),
            (".flowforge/dev-dev/sessions/locks/s.lock", 0o600),
        ] {
            assert_eq!(mode(p), want, "umask {mask:03o}: {p}");
        }
    }
}

/// 16 processes x 15 increments on one name, half through the wrappers
/// (`acquire_critical_lock`), half through `ffkit lock-acquire NAME` /
/// `lock-release NAME`: the count is exact.
#[test]
fn wrappers_and_named_binary_locks_mixed_count_exactly() {
    let w = repo();
    std::fs::write(w.path().join("c"), "0\n").unwrap();
    let env = [("FLOWFORGE_DEVELOPER", "mix")];
    let incr = "read n < c; echo $((n+1)) > c";
    let kids: Vec<Child> = (0..16)
        .map(|i| {
            let body = if i % 2 == 0 {
                format!("acquire_critical_lock count || exit 1; {incr}; release_critical_lock count || exit 1")
            } else {
                format!("\"$FF\" lock-acquire count || exit 1; {incr}; \"$FF\" lock-release count || exit 1")
            };
            wrapped(
                &w,
                &env,
                &format!("for i in $(seq 15); do {body}; done"),
            )
            .env("LOCK_TIMEOUT", "120")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    let n = std::fs::read_to_string(w.path().join("c")).unwrap();
    assert_eq!(n.trim(), "240", "lost updates");
}

/// The wrappers print the waiting line only with FF_DEBUG=true, even on a
/// terminal (where the binary alone would print it).
#[test]
fn wrappers_print_the_waiting_line_only_with_ff_debug() {
    if !crate::util::need("script", "the waiting-line test") {
        return;
    }
    let w = repo();
    let sh = holding_shell(&w, &[], "acquire_critical_lock w");
    let on_tty = |debug: &str| {
        let mut c = Command::new("script");
        w.isolate(&mut c);
        c.env("FFKIT_BIN", bin())
            .env("FFKIT_LIB", lib())
            .args([
                "-qec",
                &format!(
                    "bash -c '. \"$FFKIT_LIB\"; FF_DEBUG={debug} LOCK_TIMEOUT=0.3 acquire_critical_lock w; echo rc=$?'"
                ),
                "/dev/null",
            ]);
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let quiet = on_tty("false");
    assert!(quiet.contains("rc=6"), "{quiet}");
    assert!(!quiet.contains("waiting"), "{quiet}");
    let debug = on_tty("true");
    assert!(debug.contains("rc=6"), "{debug}");
    assert!(debug.contains("waiting for lock"), "{debug}");
    finish(sh);
}
