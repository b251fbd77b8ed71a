//! The bash builtin (builtin/, docs/shell.md "The bash builtin") through
//! real bash processes: loading (init, source, never twice, off, zsh,
//! a build mismatch), `-v VAR`, the held-lock table (subshells, fds >= 200,
//! close-on-exec), a 16-process counter oracle mixing the builtin with
//! `ffkit lock-acquire` processes, SIGKILL of a holder, SIGINT and SIGTERM to a waiting
//! shell (and Ctrl-C at an interactive bash on a pty), an injected panic, and the whole shell suite again with
//! FFKIT_BUILTIN=off.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util::bin;

/// Builds the builtin beside `bin` once per test run (`cargo test` does not
/// build a cdylib it has no test for) and returns its path.
///
/// The build asks for the lib, bins and tests of the whole workspace, as
/// README's `cargo test --workspace` does, so cargo resolves the same
/// features (dev-dependencies and xtask's included) and reuses every crate
/// this run already compiled: only the builtin itself is compiled and
/// linked, once. `cargo build -p ffkit-builtin` would compile the library
/// again with other features.
pub fn library(bin: &Path) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = bin.parent().unwrap().to_path_buf();
            let so = dir.join("libffkit_builtin.so");
            let mut c = Command::new(option_env!("CARGO").unwrap_or("cargo"));
            c.args(["build", "-q", "--workspace", "--lib", "--bins", "--tests"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            // As from a shell: without what cargo sets for a running test.
            // Build scripts track some of it (ring's reads
            // CARGO_MANIFEST_DIR), and a value they did not see before would
            // rebuild them and everything above, this test binary included.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with("CARGO_PKG_")
                    || k.starts_with("CARGO_BIN_EXE_")
                    || [
                        "CARGO_MANIFEST_DIR",
                        "CARGO_MANIFEST_PATH",
                        "CARGO_CRATE_NAME",
                        "CARGO_BIN_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "OUT_DIR",
                    ]
                    .contains(&&*k)
                {
                    c.env_remove(&*k);
                }
            }
            // `tls` is the workspace's only feature.
            if cfg!(feature = "tls") {
                c.arg("--all-features");
            }
            if dir.file_name().is_some_and(|n| n == "release") {
                c.arg("--release");
            }
            let st = c.status().expect("cargo runs");
            assert!(
                st.success() && so.is_file(),
                "cargo build of the builtin failed or made no {}",
                so.display()
            );
            so
        })
        .clone()
}

fn lib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash")
}

/// A scratch repository with FLOWFORGE_DEVELOPER=alice.
struct Repo {
    tmp: tempfile::TempDir,
}

impl Repo {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("repo/.git")).unwrap();
        fs::create_dir_all(tmp.path().join("home")).unwrap();
        Repo { tmp }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn ns(&self) -> PathBuf {
        self.root().join(".flowforge/dev-alice")
    }

    /// `bash -c` with the library sourced and the builtin required to be
    /// loaded (exit 99 otherwise).
    fn bash(&self, script: &str) -> Command {
        let mut c = self.bare("bash");
        c.arg("-c").arg(format!(
            "set -euo pipefail\n. \"$FFKIT_LIB\"\n\
             [ \"$(type -t ffkit)\" = builtin ] || {{ echo 'builtin not loaded' >&2; exit 99; }}\n{script}"
        ));
        c
    }

    fn bare(&self, shell: &str) -> Command {
        let mut c = Command::new(shell);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.tmp.path().join("home"))
            .env("FFKIT_BIN", bin())
            .env("FFKIT_LIB", lib())
            .env("FLOWFORGE_DEVELOPER", "alice")
            .env("LANG", "C.UTF-8")
            .current_dir(self.root())
            .stdin(Stdio::null());
        c
    }
}

fn out(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Waits (generously: the machine may be loaded) until `cond` holds.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a signal to a child this test started and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Holds an exclusive flock on `path` in this test process until dropped
/// (the lock lives as long as the open file).
struct Hold(#[allow(dead_code)] fs::File);

fn hold(path: &Path) -> Hold {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    Hold(f)
}

/// Whether `ffkit lock-acquire -n FILE -- true` gets the lock now.
fn free(path: &Path) -> bool {
    Command::new(bin())
        .args(["lock-acquire", "-n"])
        .arg(path)
        .args(["--", "true"])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn init_and_source_load_the_builtin_once_and_off_zsh_and_a_mismatch_fall_back() {
    let r = Repo::new();
    // eval "$(ffkit init bash)" with the binary run by path, not on PATH.
    let script = format!(
        "set -euo pipefail; eval \"$('{}' init bash)\"; type -t ffkit; \
         acquire_critical_lock a; . \"$FFKIT_LIB\"; eval \"$('{}' init bash)\"; \
         ffkit --ffkit-held; release_critical_lock a; ffkit --ffkit-held",
        bin().display(),
        bin().display()
    );
    let o = out(r.bare("bash").env_remove("FFKIT_BIN").args(["-c", &script]));
    // Sourced and eval'd again while holding: still loaded once, lock kept.
    assert_eq!(ok(&o), "builtin\n1\n0\n");
    assert_eq!(text(&o.stderr), "");

    let o = out(r.bare("bash").env("FFKIT_BUILTIN", "off").args([
        "-c",
        ". \"$FFKIT_LIB\"; type -t ffkit || echo none; write_cache_with_metadata k v 0; read_cache_with_ttl k",
    ]));
    assert_eq!(ok(&o), "none\nv\n");

    let o = out(r
        .bare("bash")
        .env("FFKIT_BUILTIN", "/nonexistent.so")
        .args(["-c", ". \"$FFKIT_LIB\"; type -t ffkit || echo none"]));
    assert_eq!(ok(&o), "none\n");
    assert_eq!(text(&o.stderr).lines().count(), 1, "{}", text(&o.stderr));

    // A binary of another build: one line, and the functions use the binary.
    let stub = r.tmp.path().join("ffkit");
    fs::write(
        &stub,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = 'init --build-id' ] && {{ echo 0.0.0+other; exit 0; }}\nexec '{}' \"$@\"\n",
            bin().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    let o = out(r
        .bare("bash")
        .env("FFKIT_BIN", &stub)
        .env("FFKIT_BUILTIN", library(&bin()))
        .args([
            "-c",
            ". \"$FFKIT_LIB\"; type -t ffkit || echo none; write_cache_with_metadata k w 0; read_cache_with_ttl k",
        ]));
    assert_eq!(ok(&o), "none\nw\n");
    let e = text(&o.stderr);
    assert!(
        e.lines().count() == 1 && e.contains("not the build of"),
        "{e}"
    );

    if Command::new("zsh").arg("-c").arg("true").status().is_ok() {
        let o = out(r.bare("zsh").args([
            "-c",
            ". \"$FFKIT_LIB\"; whence -w ffkit >/dev/null || echo none; write_cache_with_metadata k z 0; read_cache_with_ttl k",
        ]));
        assert_eq!(ok(&o), "none\nz\n");
    } else {
        crate::util::skip("zsh not installed: the zsh fallback half did not run");
    }
}

#[test]
fn v_var_assigns_like_printf_v_and_refuses_readonly_and_bad_names() {
    let r = Repo::new();
    let o = out(&mut r.bash(
        "ffkit cache-write k $'two\\nlines\\n'\n\
         ffkit cache-read -v val k\n\
         printf '[%s]' \"$val\"\n\
         ffkit cache-size -v n; [[ $n =~ ^[0-9]+$ ]] && echo size-ok\n\
         record_performance_metric op 1 3\n\
         ffkit perf-metrics -v j --json; [[ $j == '{'*'}' ]] && echo json-ok\n\
         old=keep; ffkit cache-read -v old missing 2>/dev/null || echo \"miss=$? old=$old\"\n\
         readonly RO=1; ffkit cache-size -v RO 2>/dev/null || echo \"ro=$?\"\n\
         ffkit cache-size -v 1x 2>/dev/null || echo \"bad=$?\"\n\
         ffkit cache-write -v x k v 2>/dev/null || echo \"notfor=$?\"",
    ));
    assert_eq!(
        ok(&o),
        "[two\nlines\n]size-ok\njson-ok\nmiss=4 old=keep\nro=2\nbad=2\nnotfor=2\n"
    );
}

/// The metrics log stays open across calls (docs/metrics.md, "kept
/// descriptor") and is re-verified on every row: a script that reuses the
/// descriptor's number for its own file gets no row in it, a log renamed
/// away (rotation) is left and a new one started at the path, a subshell
/// appends through its own descriptor, and commands do not inherit it.
#[test]
fn the_kept_metrics_log_follows_a_reused_number_a_rotation_and_a_subshell() {
    let r = Repo::new();
    let log = r.ns().join("cache/.perf-metrics.csv");
    let o = out(&mut r.bash(&format!(
        "record_performance_metric op 1 2\n\
         kept=''; for fd in /proc/$$/fd/*; do if [ \"$(readlink \"$fd\")\" = '{log}' ]; then kept=${{fd##*/}}; fi; done\n\
         echo \"kept=$kept\"\n\
         ls -l /proc/self/fd | grep -c perf-metrics || echo not-inherited\n\
         eval \"exec $kept>other\"\n\
         record_performance_metric op 1 3\n\
         mv '{log}' '{log}.1'\n\
         record_performance_metric op 1 4\n\
         ( record_performance_metric op 1 5 )\n\
         record_performance_metric op 1 6\n\
         echo \"other=$(wc -c <other)\"",
        log = log.display()
    )));
    let s = ok(&o);
    let lines: Vec<&str> = s.lines().collect();
    let fd: u32 = lines[0].strip_prefix("kept=").unwrap().parse().unwrap();
    assert!(fd >= 200, "{s}");
    assert_eq!(&lines[1..], ["0", "not-inherited", "other=0"], "{s}");
    let durations = |p: &Path| -> Vec<String> {
        fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| l.rsplit(',').next().unwrap().to_string())
            .collect()
    };
    let mut rotated = PathBuf::from(&log);
    rotated.set_extension("csv.1");
    assert_eq!(durations(&rotated), ["1", "2"]);
    assert_eq!(durations(&log), ["3", "4", "5"]);
}

/// The applets' clap definitions are built once per shell and parse every
/// later call alike: help, an error and a good call, each twice, answer as
/// the binary does.
#[test]
fn repeated_calls_parse_alike_with_the_definitions_built_once() {
    let r = Repo::new();
    let o = out(&mut r.bash(
        "for i in 1 2; do ffkit cache-size --help >help$i; done\n\
         for i in 1 2; do ffkit cache-size --bogus 2>err$i || echo \"st=$?\"; done\n\
         ffkit cache-write k vv; for i in 1 2; do ffkit cache-size --json; done\n\
         cmp help1 help2 && cmp err1 err2 && echo same",
    ));
    let s = ok(&o);
    assert_eq!(s.lines().filter(|l| *l == "st=2").count(), 2, "{s}");
    assert!(s.ends_with("same\n"), "{s}");
    let sizes: Vec<&str> = s.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(sizes.len(), 2, "{s}");
    assert_eq!(sizes[0], sizes[1]);
    let bin_help = Command::new(bin())
        .args(["cache-size", "--help"])
        .output()
        .unwrap();
    assert_eq!(fs::read(r.root().join("help1")).unwrap(), bin_help.stdout);
    let bin_err = Command::new(bin())
        .args(["cache-size", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(fs::read(r.root().join("err1")).unwrap(), bin_err.stderr);
}

#[test]
fn a_subshell_never_unlocks_the_parents_lock_and_the_fd_is_high_and_cloexec() {
    let r = Repo::new();
    let file = r.ns().join("locks/x.lock");
    let o = out(&mut r.bash(&format!(
        "acquire_critical_lock x 3>&-\n\
         ( release_critical_lock x 2>/dev/null || echo \"child=$?\" )\n\
         echo \"piped=$(release_critical_lock x 2>&1 >/dev/null | wc -l)\"\n\
         '{bin}' lock-acquire -n '{f}' -- true 2>/dev/null || echo still-held\n\
         for fd in /proc/$$/fd/*; do if [ \"$(readlink \"$fd\")\" = '{f}' ]; then echo \"fd=${{fd##*/}}\"; fi; done\n\
         ls -l /proc/self/fd | grep -c 'x.lock' || echo not-inherited\n\
         release_critical_lock x; echo released",
        bin = bin().display(),
        f = file.display()
    )));
    let s = ok(&o);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "child=4", "{s}");
    assert_eq!(lines[1], "piped=1", "{s}");
    assert_eq!(lines[2], "still-held", "{s}");
    let fd: u32 = lines[3].strip_prefix("fd=").unwrap().parse().unwrap();
    assert!(fd >= 200, "{s}");
    assert_eq!(&lines[4..], ["0", "not-inherited", "released"], "{s}");
    assert!(free(&file));
}

#[test]
fn sixteen_scripts_mixing_the_builtin_and_lock_acquire_processes_count_exactly() {
    let r = Repo::new();
    let counter = r.tmp.path().join("counter");
    fs::write(&counter, "0\n").unwrap();
    let file = r.ns().join("locks/ctr.lock");
    // Command mode on a path creates the file but, like flock(1), not its dir.
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::set_permissions(file.parent().unwrap(), fs::Permissions::from_mode(0o700)).unwrap();
    let incr = format!(
        "read -r n <'{c}'; echo $((n + 1)) >'{c}.tmp'; mv '{c}.tmp' '{c}'",
        c = counter.display()
    );
    let mut kids = Vec::new();
    for i in 0..16 {
        let body = match i % 4 {
            // The wrappers, through the builtin.
            0 => format!(
                "for _ in $(seq 50); do acquire_critical_lock ctr; {incr}; release_critical_lock ctr; done"
            ),
            // The builtin's own `ffkit lock-acquire NAME` (the same file).
            1 => format!(
                "for _ in $(seq 50); do ffkit lock-acquire ctr; {incr}; ffkit lock-release ctr; done"
            ),
            // Separate `ffkit lock-acquire NAME` processes on the same name.
            2 => format!(
                "for _ in $(seq 50); do \"$FF\" lock-acquire ctr; {incr}; \"$FF\" lock-release ctr; done"
            ),
            // And ffkit processes in command mode on the name's file.
            _ => format!(
                "for _ in $(seq 50); do \"$FF\" lock-acquire '{}' -c \"$INCR\"; done",
                file.display()
            ),
        };
        let mut c = r.bash(&body);
        c.env("INCR", &incr)
            .env("FF", bin())
            .env("LOCK_TIMEOUT", "600")
            .env("LOCK_BACKOFF_INITIAL", "0.001")
            .env("LOCK_BACKOFF_MAX", "0.02")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        kids.push(c.spawn().unwrap());
    }
    for k in kids {
        ok(&k.wait_with_output().unwrap());
    }
    assert_eq!(fs::read_to_string(&counter).unwrap(), "800\n");
    assert!(free(&file));
}

#[test]
fn sigkill_of_a_holding_shell_frees_its_lock() {
    let r = Repo::new();
    let file = r.ns().join("locks/k.lock");
    let blocker = r.ns().join("locks/block.lock");
    let _block = hold(&blocker);
    let marker = r.tmp.path().join("held");
    // After taking k, the shell waits in the builtin for `block` (held by
    // this test), so it has no child that could keep the lock alive.
    let mut c = r.bash(&format!(
        "acquire_critical_lock k; : >'{}'; LOCK_TIMEOUT=600 acquire_critical_lock block",
        marker.display()
    ));
    let mut child = c.spawn().unwrap();
    until("the shell to hold k", || marker.exists());
    assert!(!free(&file));
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    until("k to be free after SIGKILL", || free(&file));
}

#[test]
fn sigint_to_a_shell_waiting_in_the_builtin_returns_130_and_the_shell_survives() {
    signal_to_a_waiting_shell(libc::SIGINT, "INT", 130);
}

#[test]
fn sigterm_to_a_shell_waiting_in_the_builtin_returns_143_and_the_shell_survives() {
    signal_to_a_waiting_shell(libc::SIGTERM, "TERM", 143);
}

/// A script trapping `trap_name` waits in the builtin for a held lock; the
/// signal ends the wait with `code`, the trap runs, and the shell goes on
/// using the builtin.
fn signal_to_a_waiting_shell(sig: i32, trap_name: &str, code: i32) {
    let r = Repo::new();
    let blocker = r.ns().join("locks/block.lock");
    let _block = hold(&blocker);
    let marker = r.tmp.path().join("waiting");
    let mut c = r.bash(&format!(
        "trap 'echo trapped' {trap_name}\n: >'{}'\n\
         rc=0; LOCK_TIMEOUT=600 acquire_critical_lock block || rc=$?\n\
         echo \"rc=$rc\"; write_cache_with_metadata after ok 0; read_cache_with_ttl after",
        marker.display()
    ));
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    until("the shell to wait", || marker.exists());
    // Let it get into the wait proper.
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    signal(&child, sig);
    let o = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    eprintln!("SIG{trap_name} to a shell waiting in the builtin: returned in {took:?}");
    assert_eq!(ok(&o), format!("trapped\nrc={code}\nok\n"));
    // Far below LOCK_TIMEOUT (600 s) and any backoff step; the 100 ms goal
    // is measured, not asserted, on a shared machine.
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn an_injected_panic_prints_one_line_returns_70_and_the_next_call_works() {
    let r = Repo::new();
    let o = out(&mut r.bash(
        "rc=0; ffkit --ffkit-test-panic || rc=$?; echo \"rc=$rc\"\n\
         ffkit cache-write k v; ffkit cache-read k; echo\n\
         rc=0; ffkit --ffkit-test-panic 2>/dev/null || rc=$?; echo \"again=$rc\"",
    ));
    assert_eq!(ok(&o), "rc=70\nv\nagain=70\n");
    let e = text(&o.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("ffkit: internal error"), "{e}");
}

#[test]
fn forms_the_builtin_does_not_run_in_process_run_the_binary() {
    let r = Repo::new();
    let f = r.tmp.path().join("cmd.lock");
    let o = out(&mut r.bash(&format!(
        "ffkit lock-acquire '{}' -- sh -c 'echo \"in $0\"' child; ffkit init zsh | head -1; ffkit --list | head -1",
        f.display()
    )));
    assert_eq!(ok(&o), "in child\n# shellcheck shell=bash\ncache-size\n");
}

/// The whole shell suite (`shell::`, `shell_vars::`) again, in a child run
/// of this test binary, with FFKIT_BUILTIN=off: the fallback path keeps the
/// same expectations.
#[test]
fn the_shell_suite_passes_again_with_ffkit_builtin_off() {
    if std::env::var_os("FFKIT_BUILTIN").is_some() {
        return;
    }
    let me = std::env::current_exe().unwrap();
    let o = Command::new(me)
        .args(["shell::", "shell_vars::", "--test-threads=2"])
        .env("FFKIT_BUILTIN", "off")
        .output()
        .unwrap();
    let s = text(&o.stdout);
    let summary = s
        .lines()
        .rfind(|l| l.starts_with("test result"))
        .unwrap_or("");
    eprintln!("shell suite with FFKIT_BUILTIN=off: {summary}");
    assert!(o.status.success(), "{s}\n{}", text(&o.stderr));
    assert!(!summary.contains(" 0 passed"), "{summary}");
}

#[test]
fn install_links_prefix_installs_the_builtin_and_remove_takes_it_back() {
    let r = Repo::new();
    let prefix = r.tmp.path().join("prefix");
    let links = r.tmp.path().join("links");
    let run = |extra: &[&str]| {
        let mut c = Command::new(bin());
        c.args(["install-links", "-q", "--prefix"])
            .arg(&prefix)
            .arg("--dir")
            .arg(&links)
            .args(extra);
        ok(&out(&mut c));
    };
    run(&[]);
    let installed = prefix.join("lib/ffkit/libffkit_builtin.so");
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(library(&bin())).unwrap()
    );
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    run(&[]);
    run(&["--remove"]);
    assert!(!installed.exists());
}

/// README's first command ends in `ffkit install-links --bin --prefix P`
/// (`cargo xtask install`): afterwards a new bash with only `P/bin` on PATH
/// that runs `eval "$(ffkit init bash)"` has the builtin, and `--remove`
/// takes the whole install back.
#[test]
fn install_links_bin_is_a_whole_install_a_new_bash_loads_as_a_builtin() {
    let r = Repo::new();
    library(&bin());
    let prefix = r.tmp.path().join("prefix");
    let run = |exe: &Path, extra: &[&str]| {
        let mut c = Command::new(exe);
        c.args(["install-links", "-q", "--bin", "--prefix"])
            .arg(&prefix)
            .args(extra);
        ok(&out(&mut c));
    };
    run(&bin(), &[]);
    let installed = prefix.join("bin/ffkit");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(bin()).unwrap());
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read_link(prefix.join("bin/cache-size")).unwrap(),
        Path::new("ffkit")
    );
    assert!(prefix.join("lib/ffkit/libffkit_builtin.so").is_file());
    assert!(prefix.join("share/man/man1/ffkit.1").is_file());
    // Idempotent, also when the installed copy runs it.
    run(&installed, &[]);

    let mut c = r.bare("bash");
    c.env_remove("FFKIT_BIN")
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", prefix.join("bin").display()),
        )
        .args([
            "--norc",
            "--noprofile",
            "-c",
            r#"eval "$(ffkit init bash)"; type -t ffkit; write_cache_with_metadata k vv 0; get_cache_size"#,
        ]);
    let said = ok(&out(&mut c));
    let size = said.strip_prefix("builtin\n").map(str::trim);
    assert!(
        size.and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0),
        "{said:?}"
    );

    run(&bin(), &["--remove"]);
    assert!(!installed.exists());
    assert!(!prefix.join("bin/cache-size").exists());
    assert!(!prefix.join("lib/ffkit/libffkit_builtin.so").exists());
    assert!(!prefix.join("share/man/man1/ffkit.1").exists());
}

/// Ctrl-C typed at an interactive bash (on a pseudo-terminal, through
/// `script`) while it waits in the builtin: the wait ends, bash is back at
/// its prompt with `$?` 130, and the builtin keeps working.
#[test]
fn ctrl_c_at_an_interactive_bash_waiting_in_the_builtin_returns_to_the_prompt() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    if !crate::util::need(
        "script",
        "Ctrl-C at an interactive bash waiting in the builtin",
    ) {
        return;
    }
    let r = Repo::new();
    let _block = hold(&r.ns().join("locks/block.lock"));
    let mut c = r.bare("script");
    c.env("TERM", "dumb")
        .args(["-qfec", "bash --norc --noprofile -i", "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut output = child.stdout.take().unwrap();
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let after = |mark: &str, from: usize| {
        let s = text(&seen.lock().unwrap());
        s.get(from..)
            .and_then(|t| t.find(mark))
            .map(|i| from + i + mark.len())
    };
    writeln!(
        input,
        ". \"$FFKIT_LIB\"; PS1='ready> '; type -t ffkit\n\
         FF_DEBUG=true LOCK_TIMEOUT=600 acquire_critical_lock block; echo \"ne\"\"ver\""
    )
    .unwrap();
    let mut at = 0;
    until("the builtin to wait for the lock", || {
        after("waiting for lock", 0).map(|i| at = i).is_some()
    });
    input.write_all(b"\x03").unwrap();
    until("the prompt after Ctrl-C", || after("ready> ", at).is_some());
    writeln!(
        input,
        "echo alive=$?; write_cache_with_metadata k v 0 && read_cache_with_ttl k\nexit"
    )
    .unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let s = text(&seen.lock().unwrap()).replace('\r', "");
    assert!(status.success(), "{s}");
    assert!(s.contains("builtin\n"), "{s}");
    assert!(s.contains("alive=130\nv\n"), "{s}");
    assert!(!s.contains("never\n"), "{s}");
}
