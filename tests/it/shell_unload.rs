//! The shell functions when their builtins are gone (`enable -d`), and in
//! child shells (docs/shell.md, "Unloading the builtin" and "Child
//! shells"), through real bash processes, with the binary path
//! (`FFKIT_BUILTIN=off`) as the oracle.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::{bin, need};

/// The builtins the loader enables with `ffkit` (shell/ffkit.bash,
/// `_ffkit_builtin_load`), one per function.
const FNS: &[&str] = &[
    "get_cache_size",
    "rebuild_size_index",
    "write_cache_with_metadata",
    "read_cache_with_ttl",
    "batch_write_cache",
    "batch_read_cache",
    "enforce_cache_limits",
    "clear_developer_cache",
    "cache_provider_data",
    "get_provider_cache",
    "cache_time_tracking",
    "recover_time_tracking",
    "acquire_critical_lock",
    "release_critical_lock",
    "acquire_session_lock",
    "release_session_lock",
    "record_performance_metric",
    "get_performance_metrics",
    "cleanup_performance_metrics",
];

fn lib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/ffkit.bash")
}

/// A scratch repository and home.
fn scratch() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("repo/.git")).unwrap();
    fs::create_dir_all(tmp.path().join("home")).unwrap();
    tmp
}

fn bash(tmp: &Path, builtin: bool, script: &str) -> Output {
    let mut c = Command::new("bash");
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", tmp.join("home"))
        .env("FFKIT_BIN", bin())
        .env("FFKIT_LIB", lib())
        .env("FLOWFORGE_DEVELOPER", "alice")
        .env("LANG", "C.UTF-8")
        .current_dir(tmp.join("repo"))
        .stdin(Stdio::null())
        .args(["--norc", "--noprofile", "-c", script]);
    if !builtin {
        c.env("FFKIT_BUILTIN", "off");
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lock and cache calls around an `UNLOAD` point: locks taken before it
/// are released after it (by this shell only), and the kernel's view of
/// each lock is read by flock(1), another process.
const SCRIPT: &str = r#"
. "$FFKIT_LIB"
s() { "$@"; echo "$1 ${*:2} -> $?"; }
free() { if flock -n "$L/$1.lock" true; then echo "$1 free"; else echo "$1 held"; fi; }
L=$PWD/.flowforge/dev-alice/locks
s acquire_critical_lock a
s acquire_session_lock '' s1
s write_cache_with_metadata k1 v1 0
echo "loaded: $(type -t ffkit)"
UNLOAD
s acquire_critical_lock a
( s release_critical_lock a )
free a
s release_critical_lock a
s release_critical_lock a
free a
s acquire_critical_lock b
free b
s acquire_critical_lock b
( s acquire_critical_lock c; free c )
free c
s release_session_lock '' s1
s release_session_lock '' s1
s read_cache_with_ttl k1
s read_cache_with_ttl nope
s write_cache_with_metadata k2 v2 0
s batch_read_cache k1 k2
s cache_provider_data p pv
s get_provider_cache p
s get_cache_size
s enforce_cache_limits '' 1G
s record_performance_metric op 1 2
s release_critical_lock b
free b
"#;

/// `enable -d` of one function's builtin, of `ffkit`, of both, and of
/// every builtin of the library, each between taking locks and releasing
/// them: the functions answer exactly as on the binary path (same output,
/// same statuses, same lock states), never 127.
#[test]
fn functions_keep_working_when_their_builtins_are_unloaded() {
    if !need("flock", "the unloaded-builtin oracle") {
        return;
    }
    crate::builtin::library(&bin());
    let tmp = scratch();
    let run = |builtin: bool, unload: &str| {
        let _ = fs::remove_dir_all(tmp.path().join("repo/.flowforge"));
        let o = bash(tmp.path(), builtin, &SCRIPT.replace("UNLOAD", unload));
        assert!(o.status.success(), "{unload}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            !err.contains("not found") && !err.contains("not a shell builtin"),
            "{unload}: {err}"
        );
        text(&o.stdout)
    };
    let oracle = run(false, "");
    assert!(oracle.contains("loaded: \n"), "{oracle}");
    assert!(
        oracle.contains("release_critical_lock a -> 0\n"),
        "{oracle}"
    );
    let all: Vec<String> = std::iter::once("ffkit".to_string())
        .chain(FNS.iter().map(|f| format!("_ffkit_fn_{f}")))
        .collect();
    let mut cases: Vec<String> = [
        "acquire_critical_lock",
        "release_critical_lock",
        "acquire_session_lock",
        "release_session_lock",
        "read_cache_with_ttl",
        "write_cache_with_metadata",
    ]
    .iter()
    .map(|f| format!("enable -d _ffkit_fn_{f}"))
    .collect();
    cases.push("enable -d ffkit".into());
    cases.push("enable -d ffkit; enable -d _ffkit_fn_release_critical_lock".into());
    cases.push("enable -d _ffkit_fn_release_critical_lock; enable -d ffkit".into());
    cases.push(format!("enable -d {}", all.join(" ")));
    // All gone, then the file sourced again: it stays on the binary path
    // while the locks handed to it are held.
    cases.push(format!("enable -d {}; . \"$FFKIT_LIB\"", all.join(" ")));
    for unload in &cases {
        let got = run(true, unload);
        let want = oracle.replace("loaded: \n", "loaded: builtin\n");
        assert_eq!(got, want, "after `{unload}`");
    }
}

/// docs/shell.md, "Child shells": `export -f` does not carry the
/// functions into a child bash (127 with the builtin, 1 on the binary
/// path, as documented; the docs once said it
/// did), while a child that sources the file, or gets it through
/// `BASH_ENV`, has them, with locks of its own: its parent's lock is busy
/// for it and not its to release, and its own are released by it.
#[test]
fn a_child_bash_gets_the_functions_by_sourcing_not_by_export_f() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/shell.md")).unwrap();
    assert!(
        doc.contains("**`export -f NAME`\ndoes not carry them into a child bash**"),
        "docs/shell.md must say what export -f does"
    );
    crate::builtin::library(&bin());
    let tmp = scratch();
    let child = r#"
        s() { "$@"; echo "$1 ${*:2} -> $?"; }
        LOCK_TIMEOUT=0 s acquire_critical_lock p
        s release_critical_lock p
        s acquire_critical_lock c
        s write_cache_with_metadata ck cv 0
        s release_critical_lock c
    "#;
    let want = "acquire_critical_lock p -> 5\nrelease_critical_lock p -> 4\n\
                acquire_critical_lock c -> 0\nwrite_cache_with_metadata ck cv 0 -> 0\n\
                release_critical_lock c -> 0\n";
    for builtin in [true, false] {
        let script = format!(
            r#". "$FFKIT_LIB"
            acquire_critical_lock p || exit 90
            export -f acquire_critical_lock
            bash -c 'acquire_critical_lock x' 2>/dev/null; echo "export -f: $?"
            bash -c '. "$FFKIT_LIB"; {child}'
            echo '{child}' > "$HOME/child.sh"
            BASH_ENV=$FFKIT_LIB bash "$HOME/child.sh"
            read_cache_with_ttl ck
            release_critical_lock p; echo "parent release: $?"
            "#
        );
        let o = bash(tmp.path(), builtin, &script);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(
            text(&o.stdout),
            format!(
                "export -f: {}\n{want}{want}cv\nparent release: 0\n",
                if builtin { 127 } else { 1 }
            ),
            "builtin {builtin}: {}",
            text(&o.stderr)
        );
    }
}

/// Every builtin of the library, for `enable -d`.
fn all_builtins() -> String {
    std::iter::once("ffkit".to_string())
        .chain(FNS.iter().map(|f| format!("_ffkit_fn_{f}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Output and messages, with pids made one word (they differ per run).
fn both(o: &Output) -> String {
    let all = format!("{}--\n{}", text(&o.stdout), text(&o.stderr));
    let mut out = String::new();
    let mut rest = all.as_str();
    while let Some(at) = rest.find("pid ") {
        out.push_str(&rest[..at + 4]);
        rest = rest[at + 4..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}

/// Locks handed to the binary path by `enable -d` of every builtin: each
/// one, not only the first, is in that path's table, so a subshell's
/// release of any of them is refused exactly as on the binary path (one
/// line, status 4) and the shell's own release frees it. The table is
/// walked from 0 to its length: a handed-over entry past a hole was
/// missed, and `( release_critical_lock b )` printed the binary's refusal
/// and the function's, two lines where the binary path prints one.
#[test]
fn every_lock_handed_over_is_refused_to_a_subshell_as_on_the_binary_path() {
    if !need("flock", "the unloaded-builtin oracle") {
        return;
    }
    crate::builtin::library(&bin());
    let tmp = scratch();
    let script = r#"
        . "$FFKIT_LIB"
        L=$PWD/.flowforge/dev-alice/locks
        free() { if flock -n "$L/$1.lock" true; then echo "$1 free"; else echo "$1 held"; fi; }
        acquire_critical_lock a; acquire_critical_lock b; acquire_session_lock '' c
        UNLOAD
        for n in a b; do ( release_critical_lock $n ); echo "sub $n=$?"; done
        ( release_session_lock '' c ); echo "sub c=$?"
        free a; free b
        for n in b a; do release_critical_lock $n; echo "$n=$?"; done
        release_session_lock '' c; echo "c=$?"
        free a; free b
    "#;
    let run = |builtin: bool, unload: &str| {
        let _ = fs::remove_dir_all(tmp.path().join("repo/.flowforge"));
        both(&bash(
            tmp.path(),
            builtin,
            &script.replace("UNLOAD", unload),
        ))
    };
    let oracle = run(false, "");
    assert!(
        oracle.contains("sub b=4\n") && oracle.contains("b=0\n"),
        "{oracle}"
    );
    let got = run(true, &format!("enable -d {}", all_builtins()));
    assert_eq!(got, oracle);
}

/// `eval "$(/abs/ffkit init bash)"` with `ffkit` not on PATH and FFKIT_BIN
/// unset, then `enable -d` of every builtin: the functions take the binary
/// path with the binary init was run from (the hook sets FFKIT_BIN, not
/// exported, when it is unset or empty), instead of failing with "ffkit
/// binary not found (set FFKIT_BIN)"; a FFKIT_BIN the shell set is kept.
#[test]
fn after_unload_the_functions_find_the_binary_init_was_run_from() {
    crate::builtin::library(&bin());
    let tmp = scratch();
    let script = format!(
        r#"eval "$('{}' init bash)"
        builtin ffkit --ffkit-loaded && echo loaded
        acquire_critical_lock a; echo "a=$?"
        enable -d {}
        release_critical_lock a; echo "release=$?"
        write_cache_with_metadata k v 0; echo "write=$?"
        read_cache_with_ttl k
        [[ $FFKIT_BIN == /* ]] && echo "bin set"
        declare -p FFKIT_BIN | cut -c1-11
        FFKIT_BIN=/nonexistent/ffkit; get_cache_size >/dev/null; echo "own=$?""#,
        bin().display(),
        all_builtins()
    );
    let o = bare_bash(tmp.path(), &script).output().unwrap();
    assert_eq!(
        text(&o.stdout),
        "loaded\na=0\nrelease=0\nwrite=0\nv\nbin set\ndeclare -- \nown=1\n",
        "{}",
        text(&o.stderr)
    );
}

/// Deletes every ffkit builtin, once, from a trap (the script's `d`).
const UNLOAD_ALL: &str = r#"if [[ $d = 0 ]]; then d=1; for b in $(enable -a | awk "/_ffkit_fn_|ffkit\$/{print \$2}"); do enable -d $b; done; fi"#;

/// Runs `script` after `eval "$(ffkit init bash)"` with a remote backend on
/// a closed loopback port, so every function's builtin runs its fallback
/// shell code (`_ffkit_sh_NAME`) itself.
fn remote_shell(tmp: &Path, script: &str) -> Output {
    crate::builtin::library(&bin());
    let script = format!(
        "eval \"$('{}' init bash)\"; builtin ffkit --ffkit-loaded || exit 9\n\
         FFKIT_BACKEND=redis://127.0.0.1:1; d=0\n{script}",
        bin().display()
    );
    bare_bash(tmp, &script)
        .env("FFKIT_REAL_BIN", bin())
        .output()
        .unwrap()
}

/// `bash -c SCRIPT` in `tmp`'s repo with nothing of ffkit's in its
/// environment and ffkit not on PATH: the script finds the binary by the
/// path it is given (`eval "$('/abs/ffkit' init bash)"`).
fn bare_bash(tmp: &Path, script: &str) -> Command {
    let mut c = Command::new("bash");
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", tmp.join("home"))
        .env("FLOWFORGE_DEVELOPER", "alice")
        .current_dir(tmp.join("repo"))
        .stdin(Stdio::null())
        .args(["--norc", "--noprofile", "-c", script]);
    c
}

/// A DEBUG trap (`set -T`) inside the fallback the builtin runs deletes
/// every builtin of the library: bash dlclosed it under its own code on
/// the stack, and the return from `_ffkit_sh_NAME` crashed the shell
/// (139). The library now stays mapped, and the function's status is the
/// fallback's (1: the backend refuses the connection); `ffkit init` loads
/// it again, with an empty held-lock table.
#[test]
fn a_debug_trap_unloading_every_builtin_inside_the_fallback_keeps_the_shell_alive() {
    if !need("awk", "the unload-from-a-trap test") {
        return;
    }
    let tmp = scratch();
    let o = remote_shell(
        tmp.path(),
        &format!(
            "set -T\ntrap '[[ ${{FUNCNAME[0]-}} == _ffkit_sh_* ]] && {{ {UNLOAD_ALL}; }}' DEBUG\n\
             read_cache_with_ttl k; echo \"alive $?\"; trap - DEBUG\n\
             enable -a | grep -c ffkit; echo \"d=$d\"\n\
             read_cache_with_ttl k; echo \"again $?\"\n\
             unset FFKIT_BACKEND; eval \"$(\"$FFKIT_REAL_BIN\" init bash)\"\n\
             enable -a | grep -c _ffkit_fn_; builtin ffkit --ffkit-held\n\
             acquire_critical_lock b; echo \"b=$?\"; builtin ffkit --ffkit-held"
        ),
    );
    // Loaded again (the same mapping), the library starts with an empty
    // held-lock table and takes locks in-process.
    assert_eq!(
        (text(&o.stdout).as_str(), o.status.code()),
        ("alive 1\n0\nd=1\nagain 1\n19\n0\nb=0\n1\n", Some(0)),
        "{:?}: {}",
        o.status,
        text(&o.stderr)
    );
}

/// The same from a USR1 trap that runs inside the fallback: the binary the
/// fallback starts (FFKIT_BIN, a wrapper) sends USR1 to the shell, and
/// bash runs the trap when that command is done, still inside
/// `_ffkit_sh_NAME`.
#[test]
fn a_usr1_trap_unloading_every_builtin_inside_the_fallback_keeps_the_shell_alive() {
    if !need("awk", "the unload-from-a-trap test") {
        return;
    }
    let tmp = scratch();
    let wrap = tmp.path().join("wrap.sh");
    fs::write(
        &wrap,
        "#!/bin/sh\nkill -USR1 \"$FFKIT_TEST_SHELL\"\nexec \"$FFKIT_REAL_BIN\" \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&wrap, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = remote_shell(
        tmp.path(),
        &format!(
            "trap '{UNLOAD_ALL}' USR1\n\
             FFKIT_TEST_SHELL=$$; export FFKIT_TEST_SHELL FFKIT_REAL_BIN; FFKIT_BIN='{}'\n\
             read_cache_with_ttl k; echo \"alive $?\"; echo \"d=$d\"",
            wrap.display()
        ),
    );
    assert_eq!(
        (text(&o.stdout).as_str(), o.status.code()),
        ("alive 1\nd=1\n", Some(0)),
        "{:?}: {}",
        o.status,
        text(&o.stderr)
    );
}

/// An integer `FFKIT_BIN` (`declare -i`) or a `local FFKIT_BIN` in the
/// function that unloads: the hook neither leaves by bash's arithmetic
/// error (which skipped the hand-over, leaving locks no call could
/// release) nor sets a value that vanishes with the local; and `-v` into
/// an integer variable is refused before anything runs (bash's arithmetic
/// error used to leave the builtin holding its lock: the next call hung).
#[test]
fn unload_and_v_never_assign_an_integer_variable_or_a_vanishing_local() {
    crate::builtin::library(&bin());
    // An integer FFKIT_BIN cannot name the binary: it is left alone (the
    // release then says "ffkit binary not found"), but the lock is handed
    // over all the same.
    for (setup, unload, release) in [
        (
            "declare -i FFKIT_BIN",
            format!("enable -d {}", all_builtins()),
            1,
        ),
        (
            "",
            format!(
                "f() {{ local FFKIT_BIN=; enable -d {}; }}; f",
                all_builtins()
            ),
            0,
        ),
    ] {
        let tmp = scratch();
        let script = format!(
            r#"eval "$('{}' init bash)"
            declare -i n; ffkit cache-write k 'abc+'; ffkit cache-read -v n k; echo "v=$?"
            ffkit cache-read k; echo " read=$?"
            acquire_critical_lock a; echo "a=$?"
            {setup}
            {unload}
            echo "handed=${{#_ffkit_lock_files[@]}}"
            release_critical_lock a; echo "release=$?""#,
            bin().display(),
        );
        let o = crate::util::output_within(bare_bash(tmp.path(), &script), "bash");
        assert_eq!(
            text(&o.stdout),
            format!("v=2\nabc+ read=0\na=0\nhanded=1\nrelease={release}\n"),
            "{setup}: {}",
            text(&o.stderr)
        );
    }
}
