//! The shell functions of docs/shell.md, in Rust: with the builtin loaded,
//! each wrapper in shell/ffkit.bash is one command, `_ffkit_fn_NAME "$@"`
//! (a builtin per function, the same call as `ffkit --fn NAME "$@"`), and
//! everything the fallback path does in shell — namespace and
//! dir resolution, argument checks, the held-lock table — happens here, then
//! the same applet code as the binary runs in-process.
//!
//! The namespace (cache dir, lock dir, lock files, metrics log, name
//! rules) is `ffkit::namespace`'s, as for the binary and the fallback
//! path (which asks the binary, `ffkit init --resolve`); this file adds
//! only the shell's side: its variables, its git environment and the cached
//! team lookup.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Instant;

use ffkit::cli::Input;
use ffkit::config::Config;
use ffkit::metrics::LogPlace;
use ffkit::namespace::{self, Here, Namespace};

use crate::{held, run_applet, run_direct, shell};
use ffkit::cli::Direct;

/// The team-config lookup, per repository top, good while everything it
/// reads is unchanged: the team config's identity
/// (`namespace::team_config_identity`) and what `git config user.email`
/// reads ([`git_inputs`]). A forked copy is still a correct answer.
type TeamKey = (PathBuf, (u64, u64, u64, i64, i64), Vec<u8>);
static TEAM: Mutex<Option<(TeamKey, Option<String>)>> = Mutex::new(None);

/// One line on stderr, escaped as the binary escapes its messages (a
/// value with a newline stays on the line).
fn err(msg: impl std::fmt::Display) {
    errln!("ffkit.bash: {}", ffkit::cli::one_line(&msg));
}

/// A lock function's failure: `ffkit.bash: FUNC: WHAT`, the prefix the
/// binary gives the fallback's calls too (`ffkit::lock::function_prog`).
fn fn_err(func: &str, e: impl std::fmt::Display) {
    errln!(
        "{}: {}",
        ffkit::lock::function_prog(func),
        ffkit::cli::one_line(&e)
    );
}

struct Paths {
    /// The namespace the call works in: the `dev_id` argument's, else the
    /// caller's.
    ns: Namespace,
    /// The caller's metrics log (`Namespace::metrics_log`).
    log: LogPlace,
}

impl Paths {
    fn dir(&self) -> OsString {
        self.ns.cache_dir().into_os_string()
    }
}

/// The caller's namespace: FLOWFORGE_DEVELOPER (a bad one: exit 12), else
/// the team config's developer, else legacy.
pub fn caller_namespace(here: &Here) -> Result<Namespace, ffkit::Error> {
    let dev = match shell::var("FLOWFORGE_DEVELOPER").filter(|v| !v.is_empty()) {
        Some(v) => Some(namespace::validate_developer(&v.to_string_lossy())?),
        None => None,
    };
    if dev.is_none() && shell::var("FF_DEBUG").is_some_and(|v| v == "true") {
        // The binary's debug line for a team config it cannot use
        // (`cli::note_team_config`): the rule and the words are the core's.
        if let Some(problem) = namespace::team_config_problem(here.top()) {
            err(format_args!(
                "debug: {}",
                namespace::team_config_note(&problem)
            ));
        }
    }
    Ok(Namespace::resolve(dev.as_deref(), here, team_id))
}

/// `_ffkit_paths FUNCTION [DEV_ID]`.
fn paths(func: &str, dev: Option<&OsStr>) -> Result<Paths, u8> {
    // The library's error, so a deleted current dir is exit 4 on every
    // path (the binary, the fallback).
    let cwd = namespace::current_dir().map_err(|e| {
        err(format_args!("{func}: {e}"));
        e.exit_code()
    })?;
    let here = Here::at(cwd);
    let mut ns = caller_namespace(&here).map_err(|e| {
        err(&e);
        e.exit_code()
    })?;
    let setting = shell::var("CACHE_PERF_METRICS").filter(|v| !v.is_empty());
    let log = ns.metrics_log(setting.as_deref().map(Path::new));
    if let Some(d) = dev.filter(|d| !d.is_empty()) {
        let id = namespace::validate_developer_arg(d, &format!("{func}: dev_id")).map_err(|e| {
            err(&e);
            e.exit_code()
        })?;
        ns = ns.for_developer(id);
    }
    Ok(Paths { ns, log })
}

/// `namespace::team_developer` with the shell's exported environment for
/// git, cached while the team config's identity is unchanged.
fn team_id(top: &Path) -> Option<String> {
    let team = namespace::team_config_identity(top)?;
    let env = shell::exported_env();
    let key = (top.to_path_buf(), team, git_inputs(top, &env));
    let mut t = TEAM.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((k, id)) = t.as_ref()
        && *k == key
    {
        return id.clone();
    }
    let id = namespace::team_developer(top, |top| {
        let mut git = std::process::Command::new("git");
        git.arg("-C").arg(top).env_clear().envs(env);
        shell::with_sigchld_blocked(|| namespace::email_of(git))
    });
    *t = Some((key, id.clone()));
    id
}

/// What `git config user.email` in `top` reads besides the team config,
/// as bytes to compare: the exported variables git consults (`HOME`,
/// `XDG_CONFIG_HOME`, `GIT_*`) and the identity (device, inode, size,
/// change and modification times) of each config file it reads: the
/// repository's (through a worktree's `.git` file too), the user's two,
/// `GIT_CONFIG_GLOBAL`/`GIT_CONFIG_SYSTEM`, `/etc/gitconfig`. So a HOME
/// change or an edited `user.email` is seen at once, and the functions and
/// the builtin's own `ffkit lock-status` name one developer. Files a
/// config `include`s are not followed.
fn git_inputs(top: &Path, env: &[(OsString, OsString)]) -> Vec<u8> {
    use std::os::unix::fs::MetadataExt;
    let mut key = Vec::new();
    let var = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| PathBuf::from(v))
    };
    for (k, v) in env {
        let k = k.as_bytes();
        if k == b"HOME" || k == b"XDG_CONFIG_HOME" || k.starts_with(b"GIT_") {
            key.extend_from_slice(k);
            key.push(b'=');
            key.extend_from_slice(v.as_bytes());
            key.push(0);
        }
    }
    let dot_git = top.join(".git");
    let mut files = vec![dot_git.join("config")];
    // A linked worktree or submodule: `.git` is a file naming the git dir,
    // whose `commondir` names the shared one holding the config.
    if let Ok(text) = std::fs::read(&dot_git)
        && let Some(rest) = text.strip_prefix(b"gitdir:")
    {
        let gitdir = top.join(OsStr::from_bytes(rest.trim_ascii()));
        files.push(gitdir.join("config"));
        files.push(gitdir.join("config.worktree"));
        if let Ok(common) = std::fs::read(gitdir.join("commondir")) {
            files.push(
                gitdir
                    .join(OsStr::from_bytes(common.trim_ascii()))
                    .join("config"),
            );
        }
    }
    if let Some(home) = var("HOME") {
        files.push(home.join(".gitconfig"));
        files.push(home.join(".config/git/config"));
    }
    files.extend(var("XDG_CONFIG_HOME").map(|x| x.join("git/config")));
    files.extend(var("GIT_CONFIG_GLOBAL"));
    files.extend(var("GIT_CONFIG_SYSTEM"));
    files.push(PathBuf::from("/etc/gitconfig"));
    for f in files {
        match std::fs::metadata(&f) {
            Ok(m) => {
                for n in [m.dev(), m.ino(), m.size()] {
                    key.extend_from_slice(&n.to_le_bytes());
                }
                for n in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
                    key.extend_from_slice(&n.to_le_bytes());
                }
            }
            Err(_) => key.push(b'-'),
        }
    }
    key
}

/// Runs an applet with the wrapper's metrics log; returns its status and
/// what it printed.
fn applet(log: &LogPlace, argv: &[&OsStr], input: Input) -> (u8, Vec<u8>) {
    // Its `--dir` is the function's namespace dir (`cli::FN_DIR_ARG`).
    let mut args: Vec<OsString> = vec![
        OsString::from("ffkit"),
        OsString::from(ffkit::cli::FN_DIR_ARG),
    ];
    args.extend(argv.iter().map(|a| a.to_os_string()));
    run_applet(args, &shell_env(log), input)
}

/// [`applet`] for a call already in its parts (`cli::Direct`: the same
/// run without an argument list to parse; see docs/shell.md).
fn direct(log: &LogPlace, call: Direct, input: Input) -> (u8, Vec<u8>) {
    run_direct(call, &shell_env(log), input)
}

/// The variables an in-process call reads: the shell's, with the metrics
/// log `call` resolved (as the fallback hands it to the binary:
/// `LogPlace::fn_vars`) and its backend local.
fn shell_env(log: &LogPlace) -> impl Fn(&str) -> Option<OsString> + '_ {
    let (named, dir) = log.fn_vars();
    move |k| match k {
        "CACHE_PERF_METRICS" => named.map(|p| p.as_os_str().to_os_string()),
        "FFKIT_FN_LOG_DIR" => dir.map(|p| p.as_os_str().to_os_string()),
        // `call` found it unset, empty or `local`: all mean local.
        "FFKIT_BACKEND" => None,
        _ => shell::var(k),
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn usage(text: &str) -> u8 {
    err(format_args!("usage: {text}"));
    2
}

/// `_ffkit_valid_name VALUE WHAT`: the library's one rule for lock names
/// (`namespace::validate_name_bytes`, counted in bytes).
/// The only way to make a [`LockName`], which [`lock`] requires.
/// `what` names the argument of `func` (its message is built only on
/// failure).
fn valid_name<'a>(v: Option<&'a OsStr>, func: &str, what: &str) -> Result<LockName<'a>, u8> {
    let v = v.unwrap_or_default();
    namespace::validate_name_bytes(v.as_bytes()).map_err(|e| {
        err(format_args!("{func}: {what}: {e}"));
        e.exit_code()
    })?;
    Ok(LockName(v))
}

/// A lock or session name that passed [`valid_name`].
struct LockName<'a>(&'a OsStr);

/// The answer that sends a call to its fallback shell code: FFKIT_BACKEND
/// names a remote backend, which the builtin does not run. A function's
/// own builtin then runs `_ffkit_sh_NAME` itself (`shell_fn_call` in
/// lib.rs); `ffkit --fn NAME` returns it as its status, for the bodies that
/// call `_ffkit_builtin_rc` (shell/ffkit.bash). No other call returns it
/// (exit codes stop at 127, signals at 128 + 64).
pub const USE_FALLBACK: u8 = 200;

/// Whether the calling shell asks for a remote backend (FFKIT_BACKEND set,
/// exported or not, to anything but empty or `local`: the binary's rule,
/// `backend::names_local`; a value it refuses, ` local` say, is the
/// binary's to refuse, with exit 12).
pub(crate) fn remote_backend() -> bool {
    shell::var("FFKIT_BACKEND")
        .is_some_and(|v| !v.is_empty() && !v.to_str().is_some_and(ffkit::backend::names_local))
}

/// The applet whose output a function prints (its errors name it, as the
/// binary path's `ffkit APPLET` does).
pub fn applet_of(func: &str) -> &'static str {
    match func {
        "get_cache_size" | "rebuild_size_index" => "ffkit cache-size",
        "write_cache_with_metadata" | "cache_provider_data" | "cache_time_tracking" => {
            "ffkit cache-write"
        }
        "read_cache_with_ttl" | "get_provider_cache" | "recover_time_tracking" => {
            "ffkit cache-read"
        }
        "batch_write_cache" | "batch_read_cache" => "ffkit cache-batch",
        "enforce_cache_limits" | "clear_developer_cache" => "ffkit cache-evict",
        "record_performance_metric" | "get_performance_metrics" | "cleanup_performance_metrics" => {
            "ffkit perf-metrics"
        }
        _ => "ffkit",
    }
}

/// One wrapper call: prints what the function prints and returns its status.
pub fn call(func: &str, a: &[OsString]) -> (u8, Vec<u8>) {
    // Before anything is read (standard input included) or done.
    if remote_backend() {
        return (USE_FALLBACK, Vec::new());
    }
    let arg = |i: usize| a.get(i).map(OsString::as_os_str);
    let none = (0u8, Vec::new());
    macro_rules! paths {
        ($dev:expr) => {
            match paths(func, $dev) {
                Ok(p) => p,
                Err(c) => return (c, Vec::new()),
            }
        };
    }
    match func {
        "get_cache_size" => {
            let p = paths!(arg(0));
            let dir = PathBuf::from(p.dir());
            direct(&p.log, Direct::CacheSize { dir }, Input::Fd0)
        }
        "rebuild_size_index" => {
            let p = paths!(arg(0));
            applet(
                &p.log,
                &[os("cache-size"), os("--dir"), &p.dir(), os("--rebuild")],
                Input::Fd0,
            )
        }
        "write_cache_with_metadata" => {
            if a.len() < 2 {
                return (
                    usage("write_cache_with_metadata key value [ttl_seconds]"),
                    vec![],
                );
            }
            let p = paths!(None);
            write(&p, &a[0], Some(&a[1]), ttl_or(arg(2), "0"))
        }
        "read_cache_with_ttl" => {
            if a.is_empty() {
                return (usage("read_cache_with_ttl key"), vec![]);
            }
            let p = paths!(None);
            read(&p, &a[0])
        }
        "batch_write_cache" => {
            let p = paths!(None);
            let input = match arg(0) {
                Some(b) => {
                    let mut v = b.as_bytes().to_vec();
                    v.push(b'\n');
                    Input::Bytes(v)
                }
                None => Input::Fd0,
            };
            applet(&p.log, &[os("cache-batch"), os("--dir"), &p.dir()], input)
        }
        "batch_read_cache" => {
            if a.is_empty() {
                return none;
            }
            let p = paths!(None);
            let dir = p.dir();
            let mut argv = vec![os("cache-batch"), os("--read"), os("--dir"), &dir, os("--")];
            argv.extend(a.iter().map(OsString::as_os_str));
            applet(&p.log, &argv, Input::Fd0)
        }
        "enforce_cache_limits" => {
            if a.len() < 2 || a[1].is_empty() {
                return (usage("enforce_cache_limits dev_id max_bytes"), vec![]);
            }
            let p = paths!(arg(0));
            applet(
                &p.log,
                &[
                    os("cache-evict"),
                    os("--dir"),
                    &p.dir(),
                    os("--max-bytes"),
                    &a[1],
                ],
                Input::Fd0,
            )
        }
        "clear_developer_cache" => {
            let p = paths!(arg(0));
            applet(
                &p.log,
                &[os("cache-evict"), os("--dir"), &p.dir(), os("--all")],
                Input::Fd0,
            )
        }
        "cache_provider_data" | "cache_time_tracking" => {
            let (what, prefix, ttl) = if func == "cache_provider_data" {
                ("provider", "provider_", "300")
            } else {
                ("session_id", "time_tracking_", "0")
            };
            if a.is_empty() {
                return (usage(&format!("{func} {what} [data]")), vec![]);
            }
            let p = paths!(None);
            let mut key = OsString::from(prefix);
            key.push(&a[0]);
            write(&p, &key, arg(1), os(ttl))
        }
        "get_provider_cache" | "recover_time_tracking" => {
            let (what, prefix) = if func == "get_provider_cache" {
                ("provider", "provider_")
            } else {
                ("session_id", "time_tracking_")
            };
            if a.is_empty() {
                return (usage(&format!("{func} {what}")), vec![]);
            }
            let p = paths!(None);
            let mut key = OsString::from(prefix);
            key.push(&a[0]);
            read(&p, &key)
        }
        "acquire_critical_lock" | "release_critical_lock" => {
            let name = match valid_name(arg(0), func, "name") {
                Ok(n) => n,
                Err(c) => return (c, vec![]),
            };
            (lock(func, None, name, false), vec![])
        }
        "acquire_session_lock" | "release_session_lock" => {
            let name = match valid_name(arg(1), func, "session_id") {
                Ok(n) => n,
                Err(c) => return (c, vec![]),
            };
            (lock(func, arg(0), name, true), vec![])
        }
        "record_performance_metric" => {
            if shell::var("CACHE_PERF_MONITORING").is_some_and(|v| v == "disabled") {
                return none;
            }
            if a.len() < 3 {
                return (
                    usage("record_performance_metric operation start end"),
                    vec![],
                );
            }
            let p = paths!(None);
            if let (Some(op), Some(start), Some(end)) =
                (a[0].to_str(), a[1].to_str(), a[2].to_str())
            {
                let (op, start, end) = (op.to_string(), start.to_string(), end.to_string());
                return direct(&p.log, Direct::PerfRecord { op, start, end }, Input::Fd0);
            }
            // Not UTF-8: clap's words for it.
            applet(
                &p.log,
                &[
                    os("perf-metrics"),
                    os("record"),
                    os("--"),
                    &a[0],
                    &a[1],
                    &a[2],
                ],
                Input::Fd0,
            )
        }
        "get_performance_metrics" => {
            let p = paths!(None);
            applet(&p.log, &[os("perf-metrics"), os("--json")], Input::Fd0)
        }
        "cleanup_performance_metrics" => {
            let p = paths!(None);
            applet(&p.log, &[os("perf-metrics"), os("cleanup")], Input::Fd0)
        }
        _ => {
            err(format_args!("ffkit --fn: no such function: {func}"));
            (2, vec![])
        }
    }
}

fn ttl_or<'a>(v: Option<&'a OsStr>, default: &'a str) -> &'a OsStr {
    v.filter(|t| !t.is_empty()).unwrap_or(OsStr::new(default))
}

/// Writes KEY: the value (a data argument, never a file name, so `-` is the
/// value `-`), or standard input when there is no value argument.
fn write(p: &Paths, key: &OsStr, value: Option<&OsStr>, ttl: &OsStr) -> (u8, Vec<u8>) {
    let input = match value {
        Some(v) => Input::Bytes(v.as_bytes().to_vec()),
        None => Input::Fd0,
    };
    if let Some(ttl) = ttl
        .to_str()
        .and_then(|t| ffkit::units::parse_whole_seconds(t).ok())
    {
        let call = Direct::CacheWrite {
            dir: PathBuf::from(p.dir()),
            ttl,
            key: key.to_os_string(),
        };
        return direct(&p.log, call, input);
    }
    // A TTL clap refuses: clap's words for it.
    applet(
        &p.log,
        &[
            os("cache-write"),
            os("--dir"),
            &p.dir(),
            os("--ttl"),
            ttl,
            os("--"),
            key,
            os("-"),
        ],
        input,
    )
}

/// Prints the value and one newline; a miss is status 1.
fn read(p: &Paths, key: &OsStr) -> (u8, Vec<u8>) {
    let call = Direct::CacheRead {
        dir: PathBuf::from(p.dir()),
        key: key.to_os_string(),
        quiet: true,
        newline: true,
    };
    let (code, out) = direct(&p.log, call, Input::Fd0);
    match code {
        4 => (1, Vec::new()),
        c => (c, out),
    }
}

/// The files of the shell's recent lock calls: the metrics log, the lock
/// dir and the lock file that the namespace rules gave for the inputs they
/// read, reused while every input is the same, so a pair of calls does not
/// build the same paths again (BENCHMARKS.md, "Issue 23: the builtin's lock
/// pair"). The inputs are read on every call: the current dir (getcwd), the
/// repository root (the `.git` stats of `Here::at`, so a `.git` created or
/// removed is seen at once), the namespace (FLOWFORGE_DEVELOPER or the team
/// config), the dev_id argument, CACHE_PERF_METRICS, FFKIT_LOCK_DIR,
/// XDG_RUNTIME_DIR, the kind and the name. A forked copy is still right.
struct LockPaths {
    cwd: PathBuf,
    ns: Namespace,
    dev: Option<String>,
    setting: Option<OsString>,
    lock_dir: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    session: bool,
    name: OsString,
    /// Shared with the calls that use them: a kept entry's paths are not
    /// copied out on every call.
    out: Rc<Resolved>,
}

/// The paths a [`LockPaths`] entry resolved.
struct Resolved {
    log: LogPlace,
    dir: namespace::LockDir,
    file: PathBuf,
}

/// At most this many: a script's few lock names.
const LOCK_PATHS_KEPT: usize = 8;
thread_local! {
    /// The kept entries. Thread-local (only bash's thread calls the
    /// builtin): no mutex per call, whose locked instructions the fifth
    /// pass on the lock pair found costly (BENCHMARKS.md).
    static LOCK_PATHS: std::cell::RefCell<Vec<LockPaths>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

/// What [`LockPaths`] is looked up by, as this call read it.
struct LockInputs<'a> {
    here: &'a Here,
    ns: &'a Namespace,
    dev: Option<&'a str>,
    setting: Option<&'a OsStr>,
    cfg: &'a Config,
    session: bool,
    name: &'a OsStr,
}

impl LockPaths {
    fn matches(&self, i: &LockInputs<'_>) -> bool {
        self.session == i.session
            && self.name.as_os_str() == i.name
            && self.cwd.as_os_str() == i.here.cwd.as_os_str()
            && self.ns == *i.ns
            && self.dev.as_deref() == i.dev
            && self.setting.as_deref() == i.setting
            && self.lock_dir.as_deref().map(Path::as_os_str)
                == i.cfg.lock_dir.as_deref().map(Path::as_os_str)
            && self.runtime_dir.as_deref().map(Path::as_os_str)
                == i.cfg.runtime_dir().map(Path::as_os_str)
    }

    /// The namespace rules for these inputs (`Namespace::metrics_log`,
    /// `Namespace::lock_dir`, `namespace::lock_file`).
    fn build(i: &LockInputs<'_>) -> Result<LockPaths, ffkit::Error> {
        // A relative CACHE_PERF_METRICS is relative to the current dir, as
        // the configuration reads it.
        let setting = i.setting.map(|s| i.here.cwd.join(s));
        let log = i.ns.metrics_log(setting.as_deref());
        let target = match i.dev {
            Some(d) => i.ns.for_developer(d),
            None => i.ns.clone(),
        };
        let dir = target.lock_dir(i.cfg, None, i.session);
        let file = namespace::lock_file(&dir.dir, i.name)?;
        Ok(LockPaths {
            cwd: i.here.cwd.clone(),
            ns: i.ns.clone(),
            dev: i.dev.map(str::to_string),
            setting: i.setting.map(OsStr::to_os_string),
            lock_dir: i.cfg.lock_dir.clone(),
            runtime_dir: i.cfg.runtime_dir().map(Path::to_path_buf),
            session: i.session,
            name: i.name.to_os_string(),
            out: Rc::new(Resolved { log, dir, file }),
        })
    }
}

/// The metrics log, lock dir and lock file for `i`: the kept ones when
/// every input is the same, else built and kept.
fn lock_paths(i: &LockInputs<'_>) -> Result<Rc<Resolved>, ffkit::Error> {
    LOCK_PATHS.with(|kept| {
        // Nothing below calls back into a lock call; were it borrowed
        // anyway, the paths are built for this call alone.
        let Ok(mut kept) = kept.try_borrow_mut() else {
            return Ok(LockPaths::build(i)?.out);
        };
        let at = match kept.iter().position(|k| k.matches(i)) {
            Some(at) => at,
            None => {
                if kept.len() >= LOCK_PATHS_KEPT {
                    kept.remove(0);
                }
                kept.push(LockPaths::build(i)?);
                kept.len() - 1
            }
        };
        Ok(Rc::clone(&kept[at].out))
    })
}

/// Takes or drops a lock of the held-lock table, and records the timing the
/// binary would have recorded (`lock_acquire` / `lock_release`). The file is
/// the namespace's one lock file for NAME (`Namespace::lock_dir`, as `ffkit
/// lock-acquire NAME` resolves it) in the namespace the wrapper resolved:
/// the dev_id argument's, FLOWFORGE_DEVELOPER's, or the team config's.
fn lock(func: &str, dev: Option<&OsStr>, name: LockName<'_>, session: bool) -> u8 {
    let start = Instant::now();
    let fail = |e: ffkit::Error| {
        fn_err(func, &e);
        e.exit_code()
    };
    // As `paths` reads them, in its order (so the same error wins).
    let cwd = match namespace::current_dir() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let here = Here::at(cwd);
    let ns = match caller_namespace(&here) {
        Ok(ns) => ns,
        Err(e) => {
            err(&e);
            return e.exit_code();
        }
    };
    let setting = shell::var("CACHE_PERF_METRICS").filter(|v| !v.is_empty());
    let dev = match dev.filter(|d| !d.is_empty()) {
        Some(d) => match namespace::validate_developer_arg(d, &format!("{func}: dev_id")) {
            Ok(id) => Some(id),
            Err(e) => {
                err(&e);
                return e.exit_code();
            }
        },
        None => None,
    };
    let mut cfg = match Config::from_lookup(|k| match k {
        // The log is resolved with the paths below.
        "CACHE_PERF_METRICS" | "FFKIT_FN_LOG_DIR" => None,
        // `call` found it unset, empty or `local`: all mean local.
        "FFKIT_BACKEND" => None,
        // Read only what a lock call uses or can refuse: these are paths
        // and flags (never a bad value) that only the cache dir, cache
        // writes, commands, a remote backend and test traces need, none of
        // which a local lock call has; the namespace is resolved already.
        "FFKIT_CACHE_DIR"
        | "HOME"
        | "XDG_CACHE_HOME"
        | "SHELL"
        | "FFKIT_TEST_BACKOFF_TRACE"
        | "FFKIT_TEST_NO_TMPFILE"
        | "FFKIT_BACKEND_CA"
        | "FLOWFORGE_DEVELOPER" => None,
        _ => shell::var(k),
    }) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let inputs = LockInputs {
        here: &here,
        ns: &ns,
        dev,
        setting: setting.as_deref(),
        cfg: &cfg,
        session,
        name: name.0,
    };
    let paths = match lock_paths(&inputs) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let (dir, file) = (&paths.dir, &paths.file);
    let (named, log_dir) = paths.log.fn_vars();
    cfg.perf_metrics = named.map(Path::to_path_buf);
    cfg.fn_log_dir = log_dir.map(Path::to_path_buf);
    let acquiring = func.starts_with("acquire");
    // A release only looks the file up in the held-lock table. An
    // acquisition sets the dir up first only where that includes a check
    // (a per-user default dir); otherwise the lock file is opened first and
    // the dir made only when it is missing (`mkdir -p` of an existing dir
    // does nothing else).
    let checked = dir.shared_base.is_some();
    if acquiring
        && checked
        && let Err(e) = ffkit::lock::make_lock_dir(dir)
    {
        fn_err(func, &e);
        return e.exit_code();
    }
    let make_dir = || ffkit::lock::make_lock_dir(dir);
    let mut tried = true;
    let code = if acquiring {
        let make_dir: Option<&dyn Fn() -> ffkit::Result<()>> =
            if checked { None } else { Some(&make_dir) };
        match held::acquire(
            file,
            &name.0.to_string_lossy(),
            &cfg,
            cfg.lock_timeout,
            make_dir,
            &ffkit::lock::function_prog(func),
        ) {
            Ok(()) => 0,
            Err(held::NotTaken::Signal(sig)) => {
                tried = false;
                (128 + sig) as u8
            }
            Err(held::NotTaken::Failed(e)) => {
                tried = false;
                fn_err(func, &e);
                e.exit_code()
            }
            Err(held::NotTaken::Denied(e)) => {
                fn_err(func, &e);
                e.exit_code()
            }
        }
    } else {
        tried = !held::held_by_parent(file);
        match held::release(file, &cfg) {
            Ok(()) => 0,
            Err(e) => {
                fn_err(func, &e);
                e.exit_code()
            }
        }
    };
    // A row for every call that tried the lock, as the binary the fallback
    // runs records one: taken, busy or timed out, released or "not held"
    // (docs/metrics.md, "Self-timing"). A refusal before any try (a lock
    // this shell holds already, a subshell's release of its parent's lock,
    // a lock dir that cannot be made) records nothing, as there, nor does a
    // wait a signal ended (the fallback kills its waiter then).
    if (code == 0 || tried) && cfg.perf_monitoring {
        let op = if acquiring {
            ffkit::metrics::Op::LockAcquire
        } else {
            ffkit::metrics::Op::LockRelease
        };
        let elapsed = start.elapsed();
        let outcome = ffkit::metrics::record_self(&cfg, None, op, elapsed);
        // The binary's line for its own row (`cli::run`), as the fallback
        // prints it.
        if cfg.debug {
            fn_err(
                func,
                format_args!(
                    "debug: {}",
                    ffkit::metrics::self_note(op, &outcome, elapsed)
                ),
            );
        }
    }
    code
}
