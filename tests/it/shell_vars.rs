//! The wrappers honour the shell's own variables as the sourced old library
//! did (docs/shell.md, "Variables"): set without `export`, `local` in the
//! caller's function or for one call (`VAR=x func`), a variable reaches the
//! binary with the shell's value; unset, it stays unset. Also: `-` given as
//! a value is data. Real bash and zsh, under `set -euo pipefail`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use ffkit::config::ENV_VARS;

use crate::shell::{Repo, ok, shells};
use crate::util::spawn_locked;

impl Repo {
    fn run(&self, shell: &str, script: &str) -> Output {
        self.sh(shell, script).output().unwrap()
    }

    /// A stand-in binary that writes its environment (NUL-separated) to
    /// `envs/env.N` for its N-th call and exits 0; the fallback's namespace
    /// question (`init --resolve`) goes to the real binary, unrecorded.
    fn env_stub(&self) -> (PathBuf, PathBuf) {
        let dir = self.tmp.path().join("envs");
        fs::create_dir_all(&dir).unwrap();
        let stub = self.tmp.path().join("env-stub");
        fs::write(
            &stub,
            format!(
                "#!/bin/sh\nif [ \"$1\" = init ]; then case $2 in --resolve=*) exec '{bin}' \"$@\";; esac; fi\n\
                 n=$(ls '{d}' | wc -l)\nexec /usr/bin/env -0 >'{d}/env.'\"$n\"\n",
                d = dir.display(),
                bin = crate::util::bin().display()
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

/// The names `_ffkit_run` exports are exactly config::ENV_VARS, in order
/// (`cargo xtask gen` writes them; this says plainly what drifted).
#[test]
fn the_forwarded_list_is_config_env_vars() {
    let text = fs::read_to_string(crate::shell::lib()).unwrap();
    let begin = text.find("# BEGIN GENERATED:env-forward\n").unwrap();
    let end = text.find("# END GENERATED:env-forward\n").unwrap();
    let block = &text[begin..end];
    let export = block.find("export ").unwrap();
    let names: Vec<&str> = block[export + "export ".len()..]
        .split_whitespace()
        .filter(|w| *w != "\\")
        .collect();
    let want: Vec<&str> = ENV_VARS.iter().map(|v| v.name).collect();
    assert_eq!(names, want, "run `cargo xtask gen`");
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
        let out = r
            .sh(shell, &script)
            .env("FFKIT_BIN", &stub)
            .output()
            .unwrap();
        assert_eq!(ok(&out), "after: unset\n", "{shell}");

        let set = call_env(&dir, 0);
        for v in ENV_VARS {
            // CACHE_PERF_METRICS too, as the shell has it: the binary
            // makes it absolute against the same current dir.
            let want = format!("v-{}", v.name);
            assert_eq!(
                value_of(&set, v.name),
                Some(want.as_str()),
                "{shell}: {} set without export must reach the binary",
                v.name
            );
        }
        let unset = call_env(&dir, 1);
        // The namespace's cache dir, whose default log the call uses
        // without CACHE_PERF_METRICS (checked as a dir the functions
        // picked: docs/metrics.md), goes along on every call.
        let ns = r.root().join(".flowforge");
        assert_eq!(
            value_of(&set, "FFKIT_FN_LOG_DIR"),
            Some(
                ns.join("dev-v-FLOWFORGE_DEVELOPER/cache")
                    .display()
                    .to_string()
                    .as_str()
            ),
            "{shell}"
        );
        assert_eq!(
            value_of(&unset, "FFKIT_FN_LOG_DIR"),
            Some(ns.join("cache").display().to_string().as_str()),
            "{shell}"
        );
        for v in ENV_VARS {
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
    spawn_locked(r.sh(
        "bash",
        &format!("acquire_critical_lock {name}\necho locked\nread -r x || :"),
    ))
}

/// `LOCK_TIMEOUT=1.5` without export: acquire_critical_lock gives up with
/// exit 6 after about 1.5 s, not after the default 30 s. The bound is loose
/// on purpose (a loaded machine); the default would blow it by 10 s.
#[test]
fn unexported_lock_timeout_is_obeyed_in_a_function_local_and_one_call() {
    // Every shell and form at once (each waits out its own timeout on the
    // same held lock): one wait instead of six.
    std::thread::scope(|s| {
        for shell in shells() {
            s.spawn(move || {
                let r = Repo::new();
                let mut h = holder(&r, "x");
                std::thread::scope(|s| {
                    for script in [
                        "LOCK_TIMEOUT=1.5\nacquire_critical_lock x",
                        "f() { local LOCK_TIMEOUT=1.5; acquire_critical_lock x; }\nf",
                        "LOCK_TIMEOUT=1.5 acquire_critical_lock x",
                    ] {
                        let r = &r;
                        s.spawn(move || {
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
                                took >= Duration::from_millis(1400)
                                    && took < Duration::from_secs(20),
                                "{shell}: {script}: gave up after {took:?}"
                            );
                        });
                    }
                });
                if let Some(mut i) = h.stdin.take() {
                    let _ = i.write_all(b"\n");
                }
                assert!(h.wait().unwrap().success());
            });
        }
    });
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

/// `CACHE_PERF_METRICS=perf.csv` (a bare name, not exported) is ./perf.csv
/// for every function: the cache functions' own rows, record_performance_metric
/// and get_performance_metrics all use the same file.
#[test]
fn a_relative_metrics_log_in_the_shell_is_relative_to_the_current_dir() {
    for shell in shells() {
        let r = Repo::new();
        let out = r.run(
            shell,
            "CACHE_PERF_METRICS=perf.csv\n\
             write_cache_with_metadata k v\n\
             record_performance_metric my_op 100 250\n\
             get_performance_metrics",
        );
        let json: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
        assert_eq!(json["write_cache"]["count"], 1, "{shell}: {json}");
        assert_eq!(json["my_op"]["count"], 1, "{shell}: {json}");
        let rows = fs::read_to_string(r.root().join("perf.csv")).unwrap();
        assert!(
            rows.contains(",write_cache,") && rows.contains(",my_op,"),
            "{rows}"
        );
    }
}

/// `FF_DEBUG=true` (not exported) reaches the binary: the size comes from
/// it, with its debug lines, instead of the silent forkless read.
#[test]
fn unexported_ff_debug_gives_the_binary_debug_lines() {
    for shell in shells() {
        let r = Repo::new();
        let out = r.run(
            shell,
            "write_cache_with_metadata k v\nFF_DEBUG=true\nget_cache_size >/dev/null",
        );
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("ffkit cache-size: debug: cache dir")
                && err.contains("(from the shell functions' namespace)"),
            "{shell}: {err}"
        );
    }
}

/// `FFKIT_FN_LOG_DIR`, the functions' hand-over of their namespace log to
/// the binary, is not the command's: `cache_command`'s command sees it
/// unset on every path (the fallback set it for the binary it ran, the
/// builtin never exports it), so an ffkit the command runs logs where it
/// would anywhere else.
#[test]
fn cache_command_does_not_hand_the_functions_log_dir_to_its_command() {
    for shell in shells() {
        let r = Repo::new();
        let out = r.run(
            shell,
            "cache_command -- sh -c 'printf \"[%s]\" \"${FFKIT_FN_LOG_DIR-unset}\"'",
        );
        assert_eq!(ok(&out), "[unset]", "{shell}");
    }
}

/// A binary that answers the fallback's namespace question (`init
/// --resolve`) with nothing and status 0 (seen in zsh near its descriptor
/// limit, where the substitution's output was lost) gets one line and exit
/// 1 from the function, instead of the applet run with an empty `--dir`
/// (exit 2, clap's `a value is required for '--dir <DIR>'`), and the empty
/// answer is not kept: the next call asks again.
#[test]
fn an_empty_namespace_answer_is_one_line_and_not_kept() {
    for shell in shells() {
        let r = Repo::new();
        let stub = r.tmp.path().join("mute-init");
        let flag = r.tmp.path().join("mute");
        fs::write(
            &stub,
            format!(
                "#!/bin/sh\nif [ \"$1\" = init ] && [ -e '{f}' ]; then exit 0; fi\nexec '{bin}' \"$@\"\n",
                f = flag.display(),
                bin = crate::util::bin().display()
            ),
        )
        .unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(&flag, "").unwrap();
        let out = r
            .sh(
                shell,
                &format!(
                    "rc=0; write_cache_with_metadata k v || rc=$?; echo \"first $rc\"\n\
                     rm '{f}'\n\
                     write_cache_with_metadata k v; echo \"then $(read_cache_with_ttl k)\"",
                    f = flag.display()
                ),
            )
            .env("FFKIT_BIN", &stub)
            .env("FFKIT_BUILTIN", "off")
            .output()
            .unwrap();
        assert_eq!(ok(&out), "first 1\nthen v\n", "{shell}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "ffkit.bash: write_cache_with_metadata: the binary gave no namespace answer; nothing was done\n",
            "{shell}"
        );
    }
}
