//! `init`: prints the shell wrappers (`shell/ffkit.bash`, embedded at build
//! time so the file and the binary can never disagree) for
//! `eval "$(ffkit init bash)"`, the way zoxide and starship integrate.
//!
//! Two hidden helpers: `init --resolve FUNCTION …`, which the wrappers'
//! fallback path asks for its namespace (the cache dir, the metrics log, the
//! developer id and a lock's file, by `crate::namespace`'s rules) once per
//! change of its inputs, printed as shell assignments; and
//! `init --developer-for-email EMAIL FILE` (the team config's developer for
//! an email), so that scripts need no jq.

use super::ExitCode;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::{Arg, ArgMatches, Command};

use super::Ctx;
use crate::error::{Error, ExitKind, Result};
use crate::namespace::{self, Here, Namespace};

/// The one source of truth for the shell functions.
pub const WRAPPERS: &str = include_str!("../../shell/ffkit.bash");

/// The wrappers' last line, which loads the bash builtin. `init bash`
/// prints it with this binary's path and build id filled in, so that
/// `eval "$(target/release/ffkit init bash)"` finds the builtin that build
/// made next to it and checks it is the same build.
pub const LOAD_LINE: &str = "{ _ffkit_builtin_load '' ''; } 3>&2 2>/dev/null\n";

/// The wrappers as `init SHELL` prints them.
pub fn wrappers_for(exe: Option<&std::path::Path>) -> String {
    match exe.and_then(|e| e.to_str()) {
        Some(e) => WRAPPERS.replacen(
            LOAD_LINE,
            &format!(
                "{{ _ffkit_builtin_load {} {}; }} 3>&2 2>/dev/null\n",
                shell_quote(e),
                shell_quote(&super::build_id())
            ),
            1,
        ),
        None => WRAPPERS.to_string(),
    }
}

/// `s` in single quotes for sh.
fn shell_quote(s: &str) -> String {
    String::from_utf8_lossy(&shell_quote_bytes(s.as_bytes())).into_owned()
}

/// `s` in single quotes for sh and zsh, byte for byte (a path need not be
/// UTF-8): `'` becomes `'\''`.
fn shell_quote_bytes(s: &[u8]) -> Vec<u8> {
    let mut q = Vec::with_capacity(s.len() + 2);
    q.push(b'\'');
    for &b in s {
        if b == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(b);
        }
    }
    q.push(b'\'');
    q
}

pub fn command() -> Command {
    Command::new("init")
        .about("Print the FlowForge shell functions for eval \"$(ffkit init bash)\"")
        .long_about(
            "Print the shell functions of the old FlowForge library (get_cache_size, \
             write_cache_with_metadata, acquire_critical_lock, record_performance_metric, …) \
             implemented on top of ffkit. Add `eval \"$(ffkit init bash)\"` to a script or \
             ~/.bashrc (`ffkit init zsh` for zsh). The text is the same as shell/ffkit.bash, \
             which can be sourced directly instead. Works in bash 4.1+ and zsh.",
        )
        .arg(
            Arg::new("shell")
                .value_name("SHELL")
                .value_parser(["bash", "zsh"])
                .required_unless_present_any(["developer_for_email", "build_id", "resolve"])
                .help("The shell to print the functions for"),
        )
        .arg(
            Arg::new("build_id")
                .long("build-id")
                .action(clap::ArgAction::SetTrue)
                .conflicts_with("shell")
                .hide(true)
                .help("Print the build id the shell loader compares with the bash builtin's"),
        )
        .arg(
            Arg::new("resolve")
                .long("resolve")
                .value_name("FUNCTION")
                .value_parser(clap::value_parser!(OsString))
                .conflicts_with_all(["shell", "build_id", "developer_for_email"])
                .hide(true)
                .help("Print the namespace of shell function FUNCTION as shell assignments"),
        )
        .arg(
            Arg::new("dev_id")
                .long("dev-id")
                .value_name("DEV_ID")
                .value_parser(clap::value_parser!(OsString))
                .requires("resolve")
                .hide(true)
                .help("With --resolve: the dev_id argument (empty: the caller's namespace)"),
        )
        .arg(
            Arg::new("critical")
                .long("critical")
                .value_name("NAME")
                .value_parser(clap::value_parser!(OsString))
                .requires("resolve")
                .conflicts_with("session")
                .hide(true)
                .help("With --resolve: also the file of critical lock NAME"),
        )
        .arg(
            Arg::new("session")
                .long("session")
                .value_name("SESSION_ID")
                .value_parser(clap::value_parser!(OsString))
                .requires("resolve")
                .hide(true)
                .help("With --resolve: also the file of session lock SESSION_ID"),
        )
        .arg(
            Arg::new("developer_for_email")
                .long("developer-for-email")
                .num_args(2)
                .value_names(["EMAIL", "FILE"])
                .value_parser(clap::value_parser!(PathBuf))
                .conflicts_with("shell")
                .hide(true)
                .help("Print the developer id whose email is EMAIL in the team config FILE"),
        )
}

struct Args {
    lookup: Option<(String, PathBuf)>,
    build_id: bool,
    resolve: Option<Resolve>,
}

/// `--resolve FUNCTION [--dev-id ID] [--critical NAME | --session NAME]`.
struct Resolve {
    func: String,
    dev_id: Option<OsString>,
    /// The lock: session or not, and its name.
    lock: Option<(bool, OsString)>,
}

pub fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        lookup: m
            .get_many::<PathBuf>("developer_for_email")
            .map(|v| v.cloned().collect::<Vec<_>>())
            .and_then(|v| match v.as_slice() {
                [email, file] => Some((email.to_string_lossy().into_owned(), file.clone())),
                _ => None,
            }),
        build_id: m.get_flag("build_id"),
        resolve: m.get_one::<OsString>("resolve").map(|f| Resolve {
            func: f.to_string_lossy().into_owned(),
            dev_id: m.get_one::<OsString>("dev_id").cloned(),
            lock: m
                .get_one::<OsString>("critical")
                .map(|n| (false, n.clone()))
                .or_else(|| m.get_one::<OsString>("session").map(|n| (true, n.clone()))),
        }),
    };
    ctx.metric = None;
    if let Some(r) = a.resolve {
        // The answer is for the shell: assignments, or the one error line
        // (which the function prints as its own) and the error's status.
        return match resolve(&r, ctx) {
            Ok(text) => {
                ctx.write_out(&text)?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                ctx.write_out(format!("{e}\n").as_bytes())?;
                Ok(ExitCode::from(e.exit_code()))
            }
        };
    }
    if a.build_id {
        ctx.write_out(format!("{}\n", super::build_id()).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some((email, file)) = a.lookup else {
        // Only bash loads the builtin; zsh gets the file as it is.
        let exe = match m.get_one::<String>("shell").map(String::as_str) {
            Some("bash") => std::env::current_exe().ok(),
            _ => None,
        };
        ctx.write_out(wrappers_for(exe.as_deref()).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    };
    match developer_for_email(&email, &file)? {
        Some(id) => {
            ctx.write_out(format!("{id}\n").as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        // "Nobody has this email" is an answer, not an error: no message.
        None => Ok(ExitCode::from(ExitKind::NotFound.code())),
    }
}

/// The namespace of a shell function's call, as `NAME='value'` lines:
/// `_ffkit_dir` (the cache dir: the `dev_id`'s namespace's if given),
/// `_ffkit_log` (the caller's cache dir, whose default metrics log the
/// call uses without CACHE_PERF_METRICS: FFKIT_FN_LOG_DIR), `_ffkit_dev` (the developer id
/// of that namespace, empty in legacy mode), `_ffkit_file` (with a lock:
/// its file), and what the shell checks to keep the answer:
/// `_ffkit_cwd` (the current dir as the kernel names it, symbolic links
/// resolved: the answer holds while `.` is still that dir),
/// `_ffkit_root` (the repository root the rule found, empty outside a
/// repository: the answer holds while no dir from `_ffkit_cwd` up to it has
/// a `.git` and it still has one, or, with no root, while no ancestor has
/// one), `_ffkit_team` (the team config consulted, empty with
/// FLOWFORGE_DEVELOPER) and `_ffkit_team_seen` (1 when it existed).
/// Errors in the order the builtin checks: the name, FLOWFORGE_DEVELOPER,
/// the dev_id.
fn resolve(r: &Resolve, ctx: &Ctx) -> Result<Vec<u8>> {
    let func = &r.func;
    if let Some((session, name)) = &r.lock {
        let what = if *session { "session_id" } else { "name" };
        namespace::validate_name_bytes(name.as_bytes())
            .map_err(|e| Error::Validation(format!("{func}: {what}: {e}")))?;
    }
    if let Some(e) = &ctx.namespace_error {
        return Err(Error::Config(e.to_string()));
    }
    super::note_team_config(ctx);
    let cfg = &ctx.cfg;
    let here = Here::now()?;
    let mut ns = Namespace::of(cfg, &here);
    // The caller's namespace's cache dir: the functions hand it to the
    // binary as FFKIT_FN_LOG_DIR (their own CACHE_PERF_METRICS, a named
    // log, goes along as it is and wins: `metrics::log_place`).
    let log = ns.cache_dir();
    if let Some(id) = r.dev_id.as_deref().filter(|d| !d.is_empty()) {
        let id = namespace::validate_developer_arg(id, &format!("{func}: dev_id"))?;
        ns = ns.for_developer(id);
    }
    let team = match cfg.developer {
        Some(_) => PathBuf::new(),
        None => namespace::team_config(here.top()),
    };
    let mut out = Vec::new();
    let mut set = |k: &str, v: &[u8]| {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(&shell_quote_bytes(v));
        out.push(b'\n');
    };
    set("_ffkit_dir", ns.cache_dir().as_os_str().as_bytes());
    set("_ffkit_log", log.as_os_str().as_bytes());
    set("_ffkit_dev", ns.developer().unwrap_or_default().as_bytes());
    if let Some((session, name)) = &r.lock {
        let dir = ns.lock_dir(cfg, None, *session);
        let file = namespace::lock_file(&dir.dir, name)?;
        set("_ffkit_file", file.as_os_str().as_bytes());
    }
    set("_ffkit_cwd", here.cwd.as_os_str().as_bytes());
    set(
        "_ffkit_root",
        here.root
            .as_deref()
            .map(|r| r.as_os_str().as_bytes())
            .unwrap_or_default(),
    );
    set("_ffkit_team", team.as_os_str().as_bytes());
    let seen = !team.as_os_str().is_empty() && team.is_file();
    set("_ffkit_team_seen", if seen { b"1" } else { b"0" });
    Ok(out)
}

pub use crate::namespace::developer_for_email;
