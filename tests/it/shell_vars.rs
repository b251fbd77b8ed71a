//! The wrappers honour the shell's own variables as the sourced old library
//! did (docs/shell.md, "Variables"): set without `export`, `local` in the
//! caller's function or for one call (`VAR=x func`), a variable reaches the
//! binary with the shell's value; unset, it stays unset. Also: `-` given as
//! a value is data. Real bash and zsh, under `set -euo pipefail`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ffkit::config::ENV_VARS;

use crate::util::{bin, skip};

fn lib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash")
}

/// bash, and zsh (which CI installs: missing there, the test fails).
fn shells() -> Vec<&'static str> {
    let zsh = Command::new("zsh")
        .args(["-c", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if zsh {
        return vec!["bash", "zsh"];
    }
    skip("zsh not installed: only the bash half of this test runs (.ci/run installs it)");
    vec!["bash"]
}

/// A repository (a dir with `.git`) with HOME beside it.
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

    fn cache(&self) -> PathBuf {
        self.root().join(".flowforge/cache")
    }

    /// `SHELL -c 'set -euo pipefail; . LIB; SCRIPT'` in an environment with
    /// nothing but PATH, HOME, FFKIT_BIN and FFKIT_LIB: every other variable
    /// the script uses, it sets itself (and so does not export).
    fn sh(&self, shell: &str, ffkit: &Path, script: &str) -> Command {
        let mut c = Command::new(shell);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.tmp.path().join("home"))
            .env("FFKIT_BIN", ffkit)
            .env("FFKIT_LIB", lib())
            .current_dir(self.root())
            .arg("-c")
            .arg(format!("set -euo pipefail\n. \"$FFKIT_LIB\"\n{script}"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, shell: &str, script: &str) -> Output {
        self.sh(shell, &bin(), script).output().unwrap()
    }

    /// A stand-in binary that appends its environment (NUL-separated, one
    /// call per file `env.N`) and exits 0.
    fn env_stub(&self) -> (PathBuf, PathBuf) {
        let dir = self.tmp.path().join("envs");
        fs::create_dir_all(&dir).unwrap();
        let stub = self.tmp.path().join("env-stub");
        fs::write(
            &stub,
            format!(
                "#!/bin/sh\nn=$(ls '{d}' | wc -l)\nexec /usr/bin/env -0 >'{d}/env.'\"$n\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
        (stub, dir)
    }
}

/// The environment of the stub's call number `n`, as `NAME=value` strings.
fn call_env(dir: &Path, n: usize) -> Vec<String> {
    let b = fs::read(dir.join(format!("env.{n}"))).unwrap_or_default();
    b.split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn value_of<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every variable of config::ENV_VARS, set without export, reaches the
/// binary with its value; unset, it is absent (not even empty). So do a
/// caller's `local` and a one-call `VAR=x func` assignment.
#[test]
fn every_env_var_set_in_the_shell_reaches_the_binary_and_unset_ones_do_not() {
    for shell in shells() {
        let r = Repo::new();
        let (stub, dir) = r.env_stub();
        let mut script = String::new();
        for v in ENV_VARS {
            // A valid developer id, so the namespace lookup passes.
            script.push_str(&format!("{0}=v-{0}\n", v.name));
        }
        script.push_str("get_performance_metrics\n");
        for v in ENV_VARS {
            script.push_str(&format!("unset {}\n", v.name));
        }
        script.push_str(
            "get_performance_metrics\n\
             f() { local LOCK_TIMEOUT=7; local CACHE_SIZE_TRACKING=disabled; get_performance_metrics; }\n\
             f\n\
             LOCK_TIMEOUT=9 get_performance_metrics\n\
             echo \"after: ${LOCK_TIMEOUT-unset}\"\n",
        );
        let out = r.sh(shell, &stub, &script).output().unwrap();
        assert_eq!(ok(&out), "after: unset\n", "{shell}");

        let set = call_env(&dir, 0);
        for v in ENV_VARS {
            let want = if v.name == "CACHE_PERF_METRICS" {
                // The wrappers' log: the shell's CACHE_PERF_METRICS.
                "v-CACHE_PERF_METRICS".to_string()
            } else {
                format!("v-{}", v.name)
            };
            assert_eq!(
                value_of(&set, v.name),
                Some(want.as_str()),
                "{shell}: {} set without export must reach the binary",
                v.name
            );
        }
        let unset = call_env(&dir, 1);
        for v in ENV_VARS.iter().filter(|v| v.name != "CACHE_PERF_METRICS") {
            assert_eq!(
                value_of(&unset, v.name),
                None,
                "{shell}: unset {} must stay unset",
                v.name
            );
        }
        let local = call_env(&dir, 2);
        assert_eq!(value_of(&local, "LOCK_TIMEOUT"), Some("7"), "{shell}");
        assert_eq!(
            value_of(&local, "CACHE_SIZE_TRACKING"),
            Some("disabled"),
            "{shell}"
        );
        let one_call = call_env(&dir, 3);
        assert_eq!(value_of(&one_call, "LOCK_TIMEOUT"), Some("9"), "{shell}");
        assert_eq!(value_of(&one_call, "CACHE_SIZE_TRACKING"), None, "{shell}");
    }
}

/// Bad values set without export are the binary's configuration errors
/// (exit 12), as they are when exported.
#[test]
fn unexported_bad_values_are_config_errors() {
    for shell in shells() {
        let r = Repo::new();
        for (setting, call) in [
            (
                "LOCK_BACKOFF_STRATEGY=fibonacci",
                "write_cache_with_metadata k v",
            ),
            ("CACHE_SIZE_TRACKING=bogus", "get_cache_size"),
            ("FF_DEBUG=bogus", "get_cache_size"),
            ("LOCK_TIMEOUT=abc", "acquire_critical_lock x"),
            ("CACHE_PERF_MONITORING=yes", "read_cache_with_ttl k"),
        ] {
            let out = r.run(
                shell,
                &format!("{setting}\nrc=0; {call} 2>err || rc=$?; echo \"$rc\"; cat err"),
            );
            let text = ok(&out);
            let name = setting.split('=').next().unwrap_or_default();
            assert!(
                text.starts_with("12\n") && text.contains(name),
                "{shell}: {setting} then {call}: {text}"
            );
        }
    }
}

/// `CACHE_SIZE_TRACKING=disabled` (not exported) makes get_cache_size walk:
/// a file dropped in by hand is counted although the index does not know it.
#[test]
fn unexported_size_tracking_disabled_walks() {
    for shell in shells() {
        let r = Repo::new();
        let out = r.run(
            shell,
            "write_cache_with_metadata k v\n\
             printf '%s' 0123456789 >.flowforge/cache/dropped\n\
             a=$(get_cache_size)\n\
             CACHE_SIZE_TRACKING=disabled\n\
             b=$(get_cache_size)\n\
             echo \"$a $b\"",
        );
        let text = ok(&out);
        let (a, b) = text.trim().split_once(' ').unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(b, a + 10, "{shell}: the walk must count the dropped file");
    }
}

/// `CACHE_PERF_MONITORING=disabled` (not exported): no row is recorded by
/// any function, not only by record_performance_metric.
#[test]
fn unexported_monitoring_disabled_records_nothing() {
    for shell in shells() {
        let r = Repo::new();
        let out = r.run(
            shell,
            "CACHE_PERF_MONITORING=disabled\n\
             write_cache_with_metadata k v\n\
             read_cache_with_ttl k >/dev/null\n\
             get_cache_size >/dev/null\n\
             acquire_critical_lock x\n\
             release_critical_lock x\n\
             record_performance_metric op 1 2\n\
             echo done",
        );
        assert_eq!(ok(&out), "done\n", "{shell}");
        let log = r.cache().join(".perf-metrics.csv");
        let rows = fs::read_to_string(&log).unwrap_or_default();
        assert!(rows.trim().is_empty(), "{shell}: rows recorded: {rows}");
    }
}

/// A shell that holds the critical lock `name` (through the wrappers) until
/// its stdin closes; returned once the lock is held.
fn holder(r: &Repo, name: &str) -> Child {
    let mut c = r.sh(
        "bash",
        &bin(),
        &format!("acquire_critical_lock {name}\necho locked\nread -r x || :"),
    );
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n");
    child
}

/// `LOCK_TIMEOUT=1.5` without export: acquire_critical_lock gives up with
/// exit 6 after about 1.5 s, not after the default 30 s. The bound is loose
/// on purpose (a loaded machine); the default would blow it by 10 s.
#[test]
fn unexported_lock_timeout_is_obeyed_in_a_function_local_and_one_call() {
    for shell in shells() {
        let r = Repo::new();
        let mut h = holder(&r, "x");
        for script in [
            "LOCK_TIMEOUT=1.5\nacquire_critical_lock x",
            "f() { local LOCK_TIMEOUT=1.5; acquire_critical_lock x; }\nf",
            "LOCK_TIMEOUT=1.5 acquire_critical_lock x",
        ] {
            let t0 = Instant::now();
            let out = r.run(shell, script);
            let took = t0.elapsed();
            assert_eq!(
                out.status.code(),
                Some(6),
                "{shell}: {script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                took >= Duration::from_millis(1400) && took < Duration::from_secs(20),
                "{shell}: {script}: gave up after {took:?}"
            );
        }
        if let Some(mut i) = h.stdin.take() {
            let _ = i.write_all(b"\n");
        }
        assert!(h.wait().unwrap().success());
    }
}

/// `-` as a value is stored as the one byte `-`, never read as "stdin".
#[test]
fn a_dash_value_is_data() {
    for shell in shells() {
        let r = Repo::new();
        let out = r.run(
            shell,
            "write_cache_with_metadata k -\n\
             cache_provider_data p -\n\
             cache_time_tracking s -\n\
             write_cache_with_metadata t - 60\n\
             printf '[%s]' \"$(read_cache_with_ttl k)\" \"$(get_provider_cache p)\" \
             \"$(recover_time_tracking s)\" \"$(read_cache_with_ttl t)\"",
        );
        assert_eq!(ok(&out), "[-][-][-][-]", "{shell}");
        assert_eq!(fs::read(r.cache().join("k")).unwrap(), b"-");
    }
}
