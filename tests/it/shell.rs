//! shell/ffkit.bash through real bash and real zsh: every wrapper function
//! (docs/shell.md) with hostile arguments under `set -euo pipefail`, bad
//! input answered with the README's exit codes and one line, state
//! preservation, the environment, namespaces, the forkless hot paths, locks
//! across concurrent scripts, `ffkit init`, and shellcheck.
//!
//! zsh and shellcheck are installed by `.ci/run`; where one is missing the
//! tests that need it print a `SKIP:` line (and fail on CI).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

pub(crate) fn lib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash")
}

/// The shells to run a test in: bash always, zsh when installed.
pub(crate) fn shells() -> Vec<&'static str> {
    if have("zsh") {
        vec!["bash", "zsh"]
    } else {
        skip("zsh not installed: the zsh half of this test did not run (.ci/run installs it)");
        vec!["bash"]
    }
}

/// A scratch repository (a dir holding `.git`) with HOME beside it.
pub(crate) struct Repo {
    pub(crate) tmp: tempfile::TempDir,
}

impl Repo {
    /// Where [`Repo::stub`] counts the namespace questions.
    fn resolve_log(&self) -> PathBuf {
        self.tmp.path().join("resolve.log")
    }

    pub(crate) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("repo/.git")).unwrap();
        fs::create_dir_all(tmp.path().join("home")).unwrap();
        Repo { tmp }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    /// The legacy-mode cache dir.
    pub(crate) fn cache(&self) -> PathBuf {
        self.root().join(".flowforge/cache")
    }

    /// `SHELL -c 'set -euo pipefail; . LIB; SCRIPT' SHELL ARGS...` in the repo,
    /// with a clean environment: PATH without ffkit, FFKIT_BIN set.
    pub(crate) fn sh(&self, shell: &str, script: &str) -> Command {
        let mut c = Command::new(shell);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.tmp.path().join("home"))
            .env("LANG", "C.UTF-8")
            .env("FFKIT_BIN", bin())
            .env("FFKIT_LIB", lib())
            .current_dir(self.root())
            .envs(builtin_mode())
            .arg("-c")
            .arg(format!("set -euo pipefail\n. \"$FFKIT_LIB\"\n{script}"))
            .arg(shell)
            .stdin(Stdio::null());
        c
    }

    /// A stand-in for the binary that logs each call's argv (NUL-separated,
    /// one call per `\0\n` record) and then runs the real one, except for
    /// `perf-metrics`, which it answers itself with exit 0. The namespace
    /// questions of the fallback path (`init --resolve`) are counted apart,
    /// one line each in `resolve_calls`.
    fn stub(&self) -> (PathBuf, PathBuf) {
        let stub = self.tmp.path().join("stub-ffkit");
        let log = self.tmp.path().join("stub.log");
        fs::write(
            &stub,
            format!(
                "#!/bin/sh\nif [ \"$1\" = init ]; then case $2 in --resolve=*) echo >>'{res}'; exec '{bin}' \"$@\";; esac; fi\n\
                 for a in \"$@\"; do printf '%s\\0' \"$a\"; done >>'{log}'\nprintf '\\n' >>'{log}'\n\
                 [ \"$1\" = perf-metrics ] && exit 0\nexec '{bin}' \"$@\"\n",
                log = log.display(),
                res = self.resolve_log().display(),
                bin = bin().display()
            ),
        )
        .unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
        (stub, log)
    }
}

/// How many `init --resolve` calls the stub saw.
fn resolve_calls(r: &Repo) -> usize {
    fs::read_to_string(r.resolve_log()).map_or(0, |t| t.lines().count())
}

/// The calls a stub logged: each one's argv.
fn stub_calls(log: &Path) -> Vec<Vec<Vec<u8>>> {
    let Ok(bytes) = fs::read(log) else {
        return Vec::new();
    };
    let mut calls = Vec::new();
    let mut args = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0 => args.push(std::mem::take(&mut cur)),
            b'\n' if cur.is_empty() => calls.push(std::mem::take(&mut args)),
            b => cur.push(b),
        }
        i += 1;
    }
    calls
}

pub(crate) fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Keys and values no quoting mistake survives.
fn hostile() -> Vec<(&'static str, &'static str)> {
    vec![
        ("plain", "value"),
        ("with space", "two words  and  gaps"),
        ("q'uo\"te", "it's \"quoted\""),
        ("*", "*"),
        ("$(touch pwned)", "$(touch pwned) `touch pwned`"),
        ("back\\slash", "a\\nb\\\\"),
        ("-leading", "-n"),
        ("--ttl", "--dir=/tmp -e"),
        ("newlines", "line1\nline2\n\n"),
        ("empty", ""),
        ("ünïcode ✓", "ünïcode ✓\ttab"),
        ("glob?[a]", "~ ${HOME} $HOME %s %n"),
    ]
}

#[test]
fn every_cache_function_passes_hostile_arguments_byte_exact_under_strict_mode() {
    for shell in shells() {
        let r = Repo::new();
        let script = r#"
while [ "$#" -gt 0 ]; do
  k=$1 v=$2; shift 2
  write_cache_with_metadata "$k" "$v" 0
  got=$(read_cache_with_ttl "$k"; printf .); got=${got%.}
  nl='
'
  [ "${got%"$nl"}" = "$v" ] || { printf 'MISMATCH read %s\n' "$k"; exit 1; }
  cache_provider_data "$k" "$v"
  got=$(get_provider_cache "$k"; printf .); got=${got%.}
  [ "${got%"$nl"}" = "$v" ] || { printf 'MISMATCH provider %s\n' "$k"; exit 1; }
  cache_time_tracking "$k" "$v"
  got=$(recover_time_tracking "$k"; printf .); got=${got%.}
  [ "${got%"$nl"}" = "$v" ] || { printf 'MISMATCH time %s\n' "$k"; exit 1; }
  printf '%s' "$v" | cache_provider_data "stdin $k"
  got=$(get_provider_cache "stdin $k"; printf .); got=${got%.}
  [ "${got%"$nl"}" = "$v" ] || { printf 'MISMATCH provider stdin %s\n' "$k"; exit 1; }
done
if read_cache_with_ttl 'no such key $(x)'; then echo 'MISS FOUND'; exit 1; fi
batch_write_cache 'b one:v:with:colons
b-$(two):`x` *'
printf '%s\n' '-b three:-v' 'b "four":q'"'"'v' | batch_write_cache
batch_read_cache 'b one' 'b-$(two)' '-b three' 'b "four"' 'absent key'
n=$(get_cache_size)
[ "$n" = "$(rebuild_size_index '')" ] || { echo 'SIZE MISMATCH'; exit 1; }
echo "size=$n"
"#;
        let mut c = r.sh(shell, script);
        for (k, v) in hostile() {
            c.arg(k).arg(v);
        }
        let out = ok(&c.output().unwrap());
        assert_eq!(
            out.lines().take(4).collect::<Vec<_>>(),
            [
                "b one:v:with:colons",
                "b-$(two):`x` *",
                "-b three:-v",
                "b \"four\":q'v"
            ],
            "{shell}"
        );
        // The bytes on disk are exactly the values.
        for (k, v) in hostile() {
            assert_eq!(
                fs::read(r.cache().join(k)).unwrap(),
                v.as_bytes(),
                "{shell} {k:?}"
            );
            assert_eq!(
                fs::read(r.cache().join(format!("provider_{k}"))).unwrap(),
                v.as_bytes()
            );
            assert_eq!(
                fs::read(r.cache().join(format!("provider_stdin {k}"))).unwrap(),
                v.as_bytes()
            );
        }
        let size: u64 = out.lines().last().unwrap()["size=".len()..]
            .parse()
            .unwrap();
        assert_eq!(size, crate::util::oracle(&r.cache()).0, "{shell}");
        assert!(
            !r.root().join("pwned").exists(),
            "{shell}: an argument was executed"
        );
    }
}

#[test]
fn read_cache_with_ttl_prints_the_value_then_one_newline_and_fails_when_expired() {
    for shell in shells() {
        let r = Repo::new();
        let out = r
            .sh(
                shell,
                "write_cache_with_metadata k 'a\n\n' 0; read_cache_with_ttl k\n\
                 write_cache_with_metadata t x 5\n\
                 FFKIT_TEST_NOW=$(( $(date +%s) + 10 )) read_cache_with_ttl t || echo \"expired=$?\"",
            )
            .output()
            .unwrap();
        assert_eq!(ok(&out), "a\n\n\nexpired=1\n", "{shell}");
        assert_eq!(stderr_of(&out), "", "{shell}");
    }
}

#[test]
fn enforce_cache_limits_and_clear_developer_cache_work_on_the_named_developer() {
    for shell in shells() {
        let r = Repo::new();
        let out = r
            .sh(
                shell,
                "for i in 1 2 3 4 5; do write_cache_with_metadata \"k$i\" 0123456789 0; done\n\
                 enforce_cache_limits '' 300; get_cache_size\n\
                 FLOWFORGE_DEVELOPER=bob write_cache_with_metadata x y 0\n\
                 get_cache_size bob; clear_developer_cache bob; get_cache_size bob\n\
                 if enforce_cache_limits ''; then exit 9; else echo usage=$?; fi",
            )
            .output()
            .unwrap();
        let text = ok(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].parse::<u64>().unwrap() <= 300, "{shell}: {text}");
        assert_ne!(lines[1], "0");
        assert_eq!(&lines[2..], ["0", "usage=2"], "{shell}");
        assert_eq!(
            crate::util::oracle(&r.cache()).0,
            lines[0].parse::<u64>().unwrap()
        );
    }
}

#[test]
fn namespace_comes_from_flowforge_developer_then_team_email_then_legacy() {
    for shell in shells() {
        let r = Repo::new();
        let sub = r.root().join("deep/er");
        fs::create_dir_all(&sub).unwrap();
        // FLOWFORGE_DEVELOPER, from a subdirectory: paths are under the top.
        let mut c = r.sh(shell, "write_cache_with_metadata k v 0");
        ok(&c
            .env("FLOWFORGE_DEVELOPER", "alice")
            .current_dir(&sub)
            .output()
            .unwrap());
        assert!(
            r.root().join(".flowforge/dev-alice/cache/k").is_file(),
            "{shell}"
        );
        // Legacy mode.
        ok(&r
            .sh(shell, "write_cache_with_metadata k v 0")
            .output()
            .unwrap());
        assert!(r.cache().join("k").is_file());
        // Explicit dev_id argument.
        let out = ok(&r.sh(shell, "get_cache_size alice").output().unwrap());
        assert_ne!(out.trim(), "0");
        // A bad FLOWFORGE_DEVELOPER is a config error (12), one line.
        let out = r
            .sh(shell, "get_cache_size")
            .env("FLOWFORGE_DEVELOPER", "../evil")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(12), "{shell}");
        assert_eq!(stderr_of(&out).lines().count(), 1);
        assert!(stderr_of(&out).contains("FLOWFORGE_DEVELOPER"));
    }
    if !have("git") {
        return skip("git not installed: the team-email namespace check did not run");
    }
    for shell in shells() {
        let r = Repo::new();
        fs::remove_dir_all(r.root().join(".git")).unwrap();
        let git = |args: &[&str]| {
            let s = Command::new("git")
                .args(args)
                .current_dir(r.root())
                .env("HOME", r.tmp.path().join("home"))
                .output()
                .unwrap();
            assert!(s.status.success(), "{}", stderr_of(&s));
        };
        git(&["init", "-q"]);
        git(&["config", "user.email", "Bob@Example.com"]);
        fs::create_dir_all(r.root().join(".flowforge/team")).unwrap();
        fs::write(
            r.root().join(".flowforge/team/config.json"),
            r#"{"team":{"developers":{"alice":{"email":"alice@example.com"},"bob":{"email":"bob@example.com"}}}}"#,
        )
        .unwrap();
        ok(&r
            .sh(
                shell,
                "write_cache_with_metadata k v 0; write_cache_with_metadata k2 v 0",
            )
            .output()
            .unwrap());
        assert!(
            r.root().join(".flowforge/dev-bob/cache/k2").is_file(),
            "{shell}"
        );
        // Nobody with that email: legacy mode.
        git(&["config", "user.email", "carol@example.com"]);
        ok(&r
            .sh(shell, "write_cache_with_metadata k3 v 0")
            .output()
            .unwrap());
        assert!(r.cache().join("k3").is_file(), "{shell}");
    }
}

#[test]
fn get_cache_size_reads_a_valid_index_without_starting_a_process() {
    for shell in shells() {
        let r = Repo::new();
        let (stub, log) = r.stub();
        let run = |script: &str, extra: &[(&str, &str)]| {
            let mut c = r.sh(shell, script);
            c.env("FFKIT_BIN", &stub);
            for (k, v) in extra {
                c.env(k, v);
            }
            ok(&c.output().unwrap())
        };
        run("write_cache_with_metadata k hello 0", &[]);
        let before = stub_calls(&log).len();
        let resolved = resolve_calls(&r);
        let sizes = run("for i in 1 2 3 4 5; do get_cache_size; done", &[]);
        let want = crate::util::oracle(&r.cache()).0;
        assert_eq!(sizes, format!("{want}\n").repeat(5), "{shell}");
        assert_eq!(
            stub_calls(&log).len(),
            before,
            "{shell}: the binary was started"
        );
        // The namespace is the binary's answer, asked once per shell while
        // its inputs do not change (docs/shell.md, "Hot paths without
        // processes"), and again when one does.
        // (The builtin is not found beside the stub: the fallback runs.)
        assert_eq!(
            resolve_calls(&r),
            resolved + 1,
            "{shell}: one question per shell"
        );
        let resolved = resolve_calls(&r);
        run(
            "get_cache_size; get_cache_size; FLOWFORGE_DEVELOPER=bob get_cache_size; get_cache_size\n\
             cd .flowforge; get_cache_size; cd ..; get_cache_size",
            &[],
        );
        assert_eq!(
            resolve_calls(&r),
            resolved + 3,
            "{shell}: asked again for a new developer and a new dir only"
        );
        for (label, bad) in [
            ("junk", "12x\n"),
            ("no newline", "12"),
            ("two lines", "12\n3\n"),
            ("zero-padded", "012\n"),
        ] {
            fs::write(r.cache().join(".size-index"), bad).unwrap();
            let n = stub_calls(&log).len();
            assert_eq!(
                run("get_cache_size", &[]),
                format!("{want}\n"),
                "{shell} {label}"
            );
            assert_eq!(
                stub_calls(&log).len(),
                n + 1,
                "{shell} {label}: the binary must repair"
            );
        }
        // A crashed writer's journal, size tracking off, or debug: the binary answers.
        for (extra, label) in [
            (
                vec![("CACHE_SIZE_TRACKING", "disabled")],
                "tracking disabled",
            ),
            (vec![("FF_DEBUG", "true")], "debug"),
        ] {
            let n = stub_calls(&log).len();
            run("get_cache_size", &extra);
            assert_eq!(stub_calls(&log).len(), n + 1, "{shell} {label}");
        }
        fs::write(r.cache().join(".journal"), "{").unwrap();
        let n = stub_calls(&log).len();
        let _ = r
            .sh(shell, "get_cache_size")
            .env("FFKIT_BIN", &stub)
            .output()
            .unwrap();
        assert_eq!(stub_calls(&log).len(), n + 1, "{shell} journal");
        let call = stub_calls(&log).pop().unwrap();
        assert_eq!(call[..2], [b"--fn-dir".to_vec(), b"cache-size".to_vec()]);
        assert_eq!(
            call[2..4],
            [b"--dir".to_vec(), r.cache().as_os_str().as_bytes().to_vec()]
        );
    }
}

#[test]
fn record_performance_metric_passes_its_arguments_and_costs_nothing_when_disabled() {
    for shell in shells() {
        let r = Repo::new();
        let (stub, log) = r.stub();
        let out = r
            .sh(
                shell,
                "record_performance_metric '-op $(x) *' 1700000000 '1700000002 '\n\
                 record_performance_metric ns 1700000000000000000 1700000000002345678\n\
                 if record_performance_metric op 1; then exit 9; else echo usage=$?; fi",
            )
            .env("FFKIT_BIN", &stub)
            .output()
            .unwrap();
        assert_eq!(ok(&out), "usage=2\n", "{shell}");
        let calls = stub_calls(&log);
        let want: [&[&str]; 2] = [
            &[
                "perf-metrics",
                "record",
                "--",
                "-op $(x) *",
                "1700000000",
                "1700000002 ",
            ],
            &[
                "perf-metrics",
                "record",
                "--",
                "ns",
                "1700000000000000000",
                "1700000000002345678",
            ],
        ];
        assert_eq!(calls.len(), 2, "{shell}");
        for (c, w) in calls.iter().zip(want) {
            assert_eq!(
                c,
                &w.iter().map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>()
            );
        }
        // Disabled: not a single process.
        fs::remove_file(&log).unwrap();
        ok(&r
            .sh(
                shell,
                "for i in 1 2 3; do record_performance_metric op 1 2; done",
            )
            .env("FFKIT_BIN", &stub)
            .env("CACHE_PERF_MONITORING", "disabled")
            .output()
            .unwrap());
        assert!(stub_calls(&log).is_empty(), "{shell}");
    }
}

#[test]
fn every_function_fails_with_one_clear_line_when_the_binary_is_missing() {
    let calls = [
        "get_cache_size",
        "rebuild_size_index d",
        "write_cache_with_metadata k v 1",
        "read_cache_with_ttl k",
        "batch_write_cache 'a:b'",
        "batch_read_cache a",
        "enforce_cache_limits d 1",
        "clear_developer_cache d",
        "cache_provider_data p x",
        "get_provider_cache p",
        "cache_time_tracking s x",
        "recover_time_tracking s",
        "acquire_critical_lock l",
        "release_critical_lock l",
        "acquire_session_lock d s",
        "release_session_lock d s",
        "record_performance_metric op 1 2",
        "get_performance_metrics",
        "cleanup_performance_metrics",
    ];
    for shell in shells() {
        let r = Repo::new();
        for call in calls {
            let out = r
                .sh(shell, &format!("if {call}; then exit 9; else exit $?; fi"))
                .env_remove("FFKIT_BIN")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{shell} {call}");
            assert_eq!(
                stderr_of(&out),
                "ffkit.bash: ffkit binary not found (set FFKIT_BIN)\n",
                "{shell} {call}"
            );
            assert!(out.stdout.is_empty());
        }
        let out = r
            .sh(shell, "get_cache_size")
            .env("FFKIT_BIN", r.tmp.path().join("nope"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr_of(&out).starts_with("ffkit.bash: ffkit binary not found (FFKIT_BIN="));
        // Found on PATH instead.
        let dir = r.tmp.path().join("bin");
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(bin(), dir.join("ffkit")).unwrap();
        let out = r
            .sh(
                shell,
                "write_cache_with_metadata k v 0; read_cache_with_ttl k",
            )
            .env_remove("FFKIT_BIN")
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
            .output()
            .unwrap();
        assert_eq!(ok(&out), "v\n", "{shell}");
    }
}

/// A wrapper call under a bad environment value: (variable, value, call).
/// Exit 12 and one line naming the variable, in bash and zsh here, and
/// with nothing written in `shell_wrappers_answer_bad_input_…`.
const BAD_ENV_CALLS: &[(&str, &str, &str)] = &[
    ("CACHE_SIZE_TRACKING", "on", "get_cache_size"),
    (
        "CACHE_SIZE_TRACKING",
        "on",
        "write_cache_with_metadata k v 0",
    ),
    (
        "LOCK_BACKOFF_STRATEGY",
        "fibonacci",
        "write_cache_with_metadata k v 0",
    ),
    ("LOCK_TIMEOUT", "abc", "write_cache_with_metadata k v 1"),
    ("CACHE_PERF_MONITORING", "yes", "read_cache_with_ttl k"),
    ("CACHE_PERF_MONITORING", "yes", "get_performance_metrics"),
    ("FLOWFORGE_DEVELOPER", "../evil", "get_cache_size"),
    ("FLOWFORGE_DEVELOPER", "a b", "acquire_critical_lock l"),
    ("FF_DEBUG", "1", "get_cache_size"),
    ("FF_DEBUG", "1", "read_cache_with_ttl seed"),
];

#[test]
fn environment_contract_values_are_honoured_and_bad_ones_fail_with_exit_12() {
    let good: &[(&str, &[&str])] = &[
        ("CACHE_SIZE_TRACKING", &["enabled", "disabled", ""]),
        ("LOCK_BACKOFF_STRATEGY", &["exponential", "linear"]),
        ("LOCK_TIMEOUT", &["30", "0.5", "100"]),
        ("CACHE_PERF_MONITORING", &["enabled", "disabled"]),
        ("FLOWFORGE_DEVELOPER", &["alice", "a.b_c-1"]),
        ("FF_DEBUG", &["true", "false"]),
    ];
    for shell in shells() {
        let r = Repo::new();
        for (var, values) in good {
            for v in *values {
                let out = r
                    .sh(shell, "write_cache_with_metadata k v 0; read_cache_with_ttl k; get_cache_size >/dev/null")
                    .env(var, v)
                    .output()
                    .unwrap();
                assert_eq!(ok(&out), "v\n", "{shell} {var}={v}");
            }
        }
        // The log goes where CACHE_PERF_METRICS says, and nowhere when disabled.
        let log = r.tmp.path().join("m.csv");
        ok(&r
            .sh(shell, "write_cache_with_metadata k v 0")
            .env("CACHE_PERF_METRICS", &log)
            .output()
            .unwrap());
        assert!(fs::read_to_string(&log).unwrap().contains(",write_cache,"));
        let log2 = r.tmp.path().join("m2.csv");
        ok(&r
            .sh(shell, "write_cache_with_metadata k v 0")
            .env("CACHE_PERF_METRICS", &log2)
            .env("CACHE_PERF_MONITORING", "disabled")
            .output()
            .unwrap());
        assert!(!log2.exists());
        for (var, v, call) in BAD_ENV_CALLS {
            let out = r
                .sh(shell, &format!("if {call}; then exit 9; else exit $?; fi"))
                .env(var, v)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(12),
                "{shell} {var}={v} {call}: {}",
                stderr_of(&out)
            );
            let err = stderr_of(&out);
            assert_eq!(err.lines().count(), 1, "{shell} {var}={v}: {err}");
            assert!(err.contains(var), "{shell} {var}={v}: {err}");
        }
    }
}

/// Names of variables, options, traps and IFS, before and after sourcing
/// (and after calling functions: only `_ffkit_` names may appear).
#[test]
fn sourcing_changes_nothing_in_the_callers_shell_and_twice_is_harmless() {
    let r = Repo::new();
    let bash = r#"
set +euo pipefail
set -euo pipefail
shopt -s nullglob failglob nocasematch extglob
IFS=':'
trap 'echo trapped' USR1
a='' b='' c='' out=''
snap() { set -o; shopt; printf 'IFS=%q\n' "$IFS"; trap -p; compgen -v | grep -v -x -e _ -e BASH_ARGC -e BASH_ARGV -e BASH_LINENO -e BASH_SOURCE -e FUNCNAME -e BASH_COMMAND -e PIPESTATUS; }
a=$(snap)
out=$(. "$FFKIT_LIB"; . "$FFKIT_LIB"; snap)
. "$FFKIT_LIB"
. "$FFKIT_LIB"
b=$(snap)
[ "$a" = "$b" ] || { diff <(echo "$a") <(echo "$b"); exit 1; }
[ "$a" = "$out" ] || exit 1
write_cache_with_metadata 'Ab' v 0
write_cache_with_metadata 'aB' w 0
acquire_critical_lock Lk 2>/dev/null || true
release_critical_lock Lk 2>/dev/null || true
get_cache_size >/dev/null
[ "$(read_cache_with_ttl 'Ab')" = v ]
c=$(snap)
diff <(echo "$a") <(echo "$c") | grep '^>' | grep -v '^> _ffkit_' && exit 1
echo same
"#;
    // The script sources the library itself, between snapshots.
    let out = bare_shell(&r, "bash", bash);
    assert_eq!(ok(&out), "same\n");
    if !have("zsh") {
        return skip("zsh not installed: the zsh state check did not run");
    }
    let zsh = r#"
setopt err_exit no_unset pipe_fail sh_word_split ksh_arrays
IFS=':'
trap 'echo trapped' USR1
a='' b='' c=''
snap() { setopt; print -r -- "IFS=${(q)IFS}"; trap; print -rl -- ${(ko)parameters} | grep -v -x -e _ -e LINENO -e RANDOM -e SECONDS -e EPOCHSECONDS -e EPOCHREALTIME -e funcfiletrace -e funcsourcetrace -e funcstack -e functrace -e argv -e 0 -e '#' -e '*' -e '@' -e '?' -e pipestatus; }
a=$(snap)
. "$FFKIT_LIB"
. "$FFKIT_LIB"
b=$(snap)
[ "$a" = "$b" ] || { print -r -- "$a" > /tmp/ffkit-zsh-a.$$; print -r -- "$b" > /tmp/ffkit-zsh-b.$$; diff /tmp/ffkit-zsh-a.$$ /tmp/ffkit-zsh-b.$$; rm -f /tmp/ffkit-zsh-[ab].$$; exit 1; }
write_cache_with_metadata 'k x' v 0
[ "$(read_cache_with_ttl 'k x')" = v ]
batch_write_cache 'a:1'
acquire_critical_lock Lk 2>/dev/null || true
release_critical_lock Lk 2>/dev/null || true
get_cache_size >/dev/null
c=$(snap)
[ "$(setopt)" = "$(print -r -- "$a" | sed -n '1,/^IFS=/p' | sed '$d')" ] || exit 3
print -r -- "$c" | grep -v -x -F -f <(print -r -- "$a") | grep -v '^_ffkit_' && exit 1
echo same
"#;
    let out = bare_shell(&r, "zsh", zsh);
    assert_eq!(ok(&out), "same\n");
}

/// FFKIT_BUILTIN as this test run has it: the suite runs with the bash
/// builtin loaded (found next to the binary) and again with
/// FFKIT_BUILTIN=off (`builtin::the_shell_suite_passes_again_with_ffkit_builtin_off`).
fn builtin_mode() -> Vec<(&'static str, std::ffi::OsString)> {
    std::env::var_os("FFKIT_BUILTIN")
        .map(|v| ("FFKIT_BUILTIN", v))
        .into_iter()
        .collect()
}

/// Runs `script` with `shell -c` in an empty environment (just PATH, HOME,
/// FFKIT_BIN and FFKIT_LIB), so the script itself decides what is set.
fn bare_shell(r: &Repo, shell: &str, script: &str) -> std::process::Output {
    Command::new(shell)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", r.tmp.path().join("home"))
        .env("FFKIT_BIN", bin())
        .env("FFKIT_LIB", lib())
        .envs(builtin_mode())
        .current_dir(r.root())
        .args(["-c", script])
        .output()
        .unwrap()
}

#[test]
fn sourcing_prints_nothing_even_under_xtrace_and_init_prints_the_same_file() {
    for shell in shells() {
        let r = Repo::new();
        let out = Command::new(shell)
            .env_clear()
            .env("FFKIT_LIB", lib())
            .envs(builtin_mode())
            .args(["-c", "set -x; . \"$FFKIT_LIB\"; . \"$FFKIT_LIB\""])
            .output()
            .unwrap();
        assert!(out.stdout.is_empty(), "{shell}");
        let traced = stderr_of(&out);
        assert!(
            traced
                .lines()
                .all(|l| l.contains("FFKIT_LIB") || l.contains("ffkit.bash")),
            "{shell}: {traced}"
        );
        let printed = Command::new(bin()).args(["init", shell]).output().unwrap();
        assert!(printed.status.success());
        // The same file; for bash, its last line names this binary and its
        // build so the builtin beside it is found (docs/shell.md).
        let file = fs::read_to_string(lib()).unwrap();
        let printed = String::from_utf8(printed.stdout).unwrap();
        let (head, tail) = file.rsplit_once("{ _ffkit_builtin_load '' ''; }").unwrap();
        assert!(printed.starts_with(head), "{shell}");
        if shell == "bash" {
            assert!(printed.contains(&format!("_ffkit_builtin_load '{}' '", bin().display())));
            assert!(printed.ends_with(tail));
        } else {
            assert_eq!(printed, file);
        }
        let out = Command::new(shell)
            .env_clear()
            .envs(builtin_mode())
            .env("PATH", "/usr/bin:/bin")
            .env("FFKIT_BIN", bin())
            .current_dir(r.root())
            .args([
                "-c",
                &format!(
                    "set -euo pipefail; eval \"$('{}' init {shell})\"; write_cache_with_metadata k v 0; read_cache_with_ttl k",
                    bin().display()
                ),
            ])
            .output()
            .unwrap();
        assert_eq!(ok(&out), "v\n", "{shell}");
    }
    let out = Command::new(bin()).args(["init", "fish"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn shellcheck_is_clean_without_blanket_disables() {
    if !have("shellcheck") {
        return skip("shellcheck not installed: shell/ not checked (.ci/run installs it)");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = fs::read_dir(root.join("shell"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.push(root.join("benches/shell_get_cache_size.bash"));
    assert!(!files.is_empty());
    let out = Command::new("shellcheck")
        .arg("-x")
        .args(&files)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    for f in &files {
        for line in fs::read_to_string(f).unwrap().lines() {
            if let Some(rest) = line.split("shellcheck disable=").nth(1) {
                assert!(
                    rest.starts_with("SC") && line.contains(" -- "),
                    "{}: a disable must name the check and give a reason after ' -- ': {line}",
                    f.display()
                );
            }
        }
    }
    assert!(
        !Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".shellcheckrc")
            .exists()
    );
}

// ---------------------------------------------------------------------------
// Locks and metrics (need the lock-* and perf-metrics applets).
// ---------------------------------------------------------------------------

#[test]
fn critical_locks_are_held_between_calls_several_at_once_and_released_strictly() {
    for shell in shells() {
        let r = Repo::new();
        let out = r
            .sh(
                shell,
                r#"
acquire_critical_lock 'A b*$(x)'
acquire_critical_lock B
acquire_session_lock '' 'sess 1'
acquire_session_lock bob 's-2'
# Another process cannot take them meanwhile.
if LOCK_TIMEOUT=0.2 "$FFKIT_SHELL" -c '. "$FFKIT_LIB"; acquire_critical_lock B' 2>/dev/null; then echo 'B TAKEN TWICE'; fi
if acquire_critical_lock B 2>/dev/null; then echo 'B REENTERED'; else echo "again=$?"; fi
release_critical_lock B
LOCK_TIMEOUT=2 "$FFKIT_SHELL" -c '. "$FFKIT_LIB"; acquire_critical_lock B && release_critical_lock B && echo other-got-B'
release_critical_lock 'A b*$(x)'
release_session_lock '' 'sess 1'
release_session_lock bob 's-2'
if release_critical_lock B 2>/dev/null; then echo 'RELEASED TWICE'; else echo "not-held=$?"; fi
if release_critical_lock never 2>/dev/null; then echo 'RELEASED UNHELD'; else echo "never=$?"; fi
if acquire_critical_lock '../x' 2>/dev/null; then echo 'BAD NAME'; else echo "bad=$?"; fi
"#,
            )
            .env("FFKIT_SHELL", shell)
            .output()
            .unwrap();
        assert_eq!(
            ok(&out),
            "again=5\nother-got-B\nnot-held=4\nnever=4\nbad=2\n",
            "{shell}: {}",
            stderr_of(&out)
        );
        assert!(r.root().join(".flowforge/locks/B.lock").is_file());
        assert!(r.root().join(".flowforge/locks/A b*$(x).lock").is_file());
        assert!(
            r.root()
                .join(".flowforge/sessions/locks/sess 1.lock")
                .is_file()
        );
        assert!(
            r.root()
                .join(".flowforge/dev-bob/sessions/locks/s-2.lock")
                .is_file()
        );
        assert!(!r.root().join("pwned").exists());
    }
}

#[test]
fn a_lock_is_released_when_the_holding_script_is_killed() {
    let r = Repo::new();
    let fifo = r.tmp.path().join("fifo");
    crate::util::mkfifo(&fifo);
    let ready = r.tmp.path().join("ready");
    // The holder blocks in the shell itself (opening a FIFO nobody writes),
    // so no child process shares the lock's fd.
    let mut holder = r
        .sh(
            "bash",
            &format!(
                "acquire_critical_lock L; : > '{}'; read -r _ < '{}'",
                ready.display(),
                fifo.display()
            ),
        )
        .spawn()
        .unwrap();
    wait_until("the holder to get the lock", 60, || ready.exists());
    let busy = r
        .sh("bash", "acquire_critical_lock L")
        .env("LOCK_TIMEOUT", "0.2")
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(6), "{}", stderr_of(&busy));
    holder.kill().unwrap();
    holder.wait().unwrap();
    // "At once": within 2 s plus four times what a wrapper script that takes
    // no lock costs right now, far below the 5 s LOCK_TIMEOUT a lock left
    // held would run into, on an idle machine and a loaded one alike.
    let t = Instant::now();
    ok(&r.sh("bash", "get_cache_size >/dev/null").output().unwrap());
    let bound = Duration::from_secs(2) + t.elapsed() * 4;
    let t = Instant::now();
    ok(&r
        .sh("bash", "acquire_critical_lock L; release_critical_lock L")
        .env("LOCK_TIMEOUT", "5")
        .output()
        .unwrap());
    assert!(t.elapsed() < bound, "{:?} (bound {bound:?})", t.elapsed());
}

#[test]
fn realistic_concurrent_scripts_keep_an_exact_counter_and_report_metrics() {
    let r = Repo::new();
    let counter = r.root().join("counter");
    fs::write(&counter, "0\n").unwrap();
    let worker = r#"
id=$1
write_cache_with_metadata "worker $id" "started" 300
read_cache_with_ttl "worker $id" >/dev/null
batch_write_cache "w$id a:1
w$id b:2"
batch_read_cache "w$id a" "w$id b" >/dev/null
i=0
while [ "$i" -lt 25 ]; do
  start=$(date +%s%N)
  acquire_critical_lock counter
  n=$(cat counter)
  echo $((n + 1)) > counter
  release_critical_lock counter
  record_performance_metric counter_increment "$start" "$(date +%s%N)"
  i=$((i + 1))
done
enforce_cache_limits '' 100000
get_cache_size >/dev/null
"#;
    let mut kids = Vec::new();
    for (i, shell) in ["bash", "bash", "zsh", "zsh"].iter().enumerate() {
        let shell = if *shell == "zsh" && !have("zsh") {
            "bash"
        } else {
            shell
        };
        let mut c = r.sh(shell, worker);
        c.arg(i.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        kids.push((shell, c.spawn().unwrap()));
    }
    for (shell, k) in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr_of(&out));
    }
    assert_eq!(fs::read_to_string(&counter).unwrap(), "100\n");
    let out = ok(&r.sh("bash", "get_performance_metrics").output().unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["counter_increment"]["count"], 100, "{out}");
    for op in ["write_cache", "read_cache", "batch_write", "batch_read"] {
        assert_eq!(v[op]["count"], 4, "{op}: {out}");
    }
    assert!(v["counter_increment"]["avg"].as_f64().unwrap() > 0.0);
    ok(&r
        .sh("bash", "cleanup_performance_metrics")
        .output()
        .unwrap());
}

// ---------------------------------------------------------------- bad input through the wrappers

/// bash running `SCRIPT` after sourcing shell/ffkit.bash, in a repository
/// at `w.path()/repo` as developer `alice`.
fn wrapper_cmd(w: &World, script: &str) -> Command {
    let repo = w.path().join("repo");
    fs::create_dir_all(repo.join(".git")).unwrap();
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.env_remove("FFKIT_CACHE_DIR")
        .env("FFKIT_BIN", bin())
        .env("FLOWFORGE_DEVELOPER", "alice")
        .current_dir(&repo)
        .arg("-c")
        .arg(format!(". '{}'\n{script}", lib().display()))
        .stdin(Stdio::null());
    c
}

/// [`wrapper_cmd`] with extra environment; returns (status, stderr).
fn wrapper(w: &World, script: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut c = wrapper_cmd(w, script);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = output_within(c, script);
    (out.status.code().unwrap_or(-1), stderr_of(&out))
}

/// A wrapper call, its extra environment, and the expected status.
type WrapperCase = (&'static str, &'static [(&'static str, &'static str)], i32);

#[test]
fn shell_wrappers_answer_bad_input_with_contract_codes_and_one_line() {
    let w = World::new();
    let ns = w.path().join("repo/.flowforge");
    let (code, err) = wrapper(&w, "write_cache_with_metadata seed value 0", &[]);
    assert_eq!(code, 0, "{err}");
    let cache = ns.join("dev-alice/cache");
    let snapshot = || {
        let mut s = outside_snapshot(&w);
        s.retain(|p, _| !p.starts_with(&ns));
        s
    };
    let before = snapshot();
    let cases: &[WrapperCase] = &[
        ("write_cache_with_metadata ../x v 10", &[], 2),
        ("write_cache_with_metadata '' v 10", &[], 2),
        ("write_cache_with_metadata a/b v 10", &[], 2),
        ("write_cache_with_metadata .hidden v 10", &[], 2),
        ("write_cache_with_metadata x.meta v 10", &[], 2),
        ("write_cache_with_metadata $'a\\nb' v 10", &[], 2),
        ("write_cache_with_metadata k v -1", &[], 2),
        ("write_cache_with_metadata k v abc", &[], 2),
        ("write_cache_with_metadata k v 99999999999999999999", &[], 2),
        ("read_cache_with_ttl ../x", &[], 2),
        ("batch_write_cache nocolon", &[], 2),
        ("batch_write_cache $'good:1\\n.bad:2'", &[], 2),
        ("batch_read_cache .x", &[], 2),
        ("enforce_cache_limits alice 10Q", &[], 2),
        ("enforce_cache_limits alice -5M", &[], 2),
        ("enforce_cache_limits ../evil 1M", &[], 2),
        ("clear_developer_cache ../evil", &[], 2),
        ("rebuild_size_index a/b", &[], 2),
        ("record_performance_metric op abc 1", &[], 2),
        ("record_performance_metric a,b 1 2", &[], 2),
    ];
    let env_cases = BAD_ENV_CALLS
        .iter()
        .map(|(var, val, call)| (*call, vec![(*var, *val)], 12));
    let cases = cases
        .iter()
        .map(|(s, e, c)| (*s, e.to_vec(), *c))
        .chain(env_cases);
    for (script, env, code) in cases {
        let (got, err) = wrapper(&w, script, &env);
        assert_eq!(got, code, "{script} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{script}: {err:?}");
        assert!(!err.contains("panicked"), "{script}: {err}");
        assert_index_exact(&cache, script);
        assert_no_temps(&cache, script);
        assert_eq!(
            snapshot(),
            before,
            "{script}: files outside the namespace changed"
        );
    }
    assert_eq!(oracle(&cache).1, 1, "nothing but the seed was written");
    // The forkless size path never follows a planted symlink or FIFO.
    let t = Target::new(&w, "index", b"12345\n");
    let idx = cache.join(".size-index");
    for planted in ["symlink", "fifo"] {
        let _ = fs::remove_file(&idx);
        if planted == "symlink" {
            std::os::unix::fs::symlink(&t.path, &idx).unwrap();
        } else {
            mkfifo(&idx);
        }
        let out = output_within(wrapper_cmd(&w, "get_cache_size"), planted);
        assert!(out.status.success(), "{planted}: {}", stderr_of(&out));
        assert_eq!(parse_u64(&out.stdout), oracle(&cache).0, "{planted}");
        t.assert_untouched(planted);
        assert_index_exact(&cache, planted);
    }
}

#[test]
fn init_team_config_lookup_never_blocks_on_a_fifo_and_refuses_bad_json() {
    let w = World::new();
    let fifo = w.path().join("team.fifo");
    mkfifo(&fifo);
    let bad = w.path().join("bad.json");
    fs::write(&bad, b"{bad").unwrap();
    for (file, code) in [(fifo, 1), (w.path().to_path_buf(), 1), (bad, 10)] {
        let mut c = w.cmd("init");
        c.arg("--developer-for-email").arg("a@b").arg(&file);
        let out = output_within(c, "init lookup");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{file:?}: {}",
            stderr_of(&out)
        );
        assert_eq!(stderr_lines(&out).len(), 1, "{}", stderr_of(&out));
    }
}
