//! `lock-release`: drop a named lock taken by `lock-acquire NAME` or the
//! wrappers (kernel or dot-lock), or the lock on the caller's descriptor
//! (`--fd N`). Argument parsing only; the logic is `lock::release`.

use super::ExitCode;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::lock_args::{lock_dir_arg, owner_arg, release_named, session_arg, unlock_fd};
use super::{Ctx, quiet_arg};
use crate::error::Result;
use crate::lock;

pub(super) fn command() -> Command {
    Command::new("lock-release")
        .about("Release a named lock (lock-release NAME) or a descriptor's lock (--fd N)")
        .long_about(
            "Release the named lock NAME taken by lock-acquire NAME: its holder process is ended \
             and the lock is free when this returns. Only the owner (the process that called \
             lock-acquire, run as its command, or --owner PID) may release it: from a \
             subshell, pipeline stage or child script of the owner the answer is exit 4, \
             from anyone else exit 5, unless --force. A lock that is not held exits 4; a Redis \
             lock its owner held and lost (a server restart, a lapsed lease) exits 9. With --fd N, \
             drops the lock on the caller's open descriptor N.",
        )
        .arg(
            Arg::new("target")
                .value_name("NAME")
                .required_unless_present("fd")
                .help("Lock name in the lock dir, or a path to a lock file"),
        )
        .arg(
            Arg::new("fd")
                .long("fd")
                .value_name("N")
                .value_parser(clap::value_parser!(i32).range(0..))
                .conflicts_with_all(["force", "dotlock"])
                .help("Drop the lock on the caller's open descriptor N (exit 4 if it holds none); with NAME, N must be open on NAME's lock file"),
        )
        .arg(
            Arg::new("force")
                .long("force")
                .action(ArgAction::SetTrue)
                .help("Release even if the lock belongs to another owner"),
        )
        .arg(owner_arg().help("Release as this owner pid (the one given to lock-acquire --owner)"))
        .arg(
            Arg::new("dotlock")
                .long("dotlock")
                .action(ArgAction::SetTrue)
                .help("The lock is a dot-lock (detected from the file anyway)"),
        )
        .arg(lock_dir_arg())
        .arg(session_arg())
        .arg(quiet_arg())
        .arg(super::backend_arg().conflicts_with("fd"))
        .arg(
            // The shell functions' fallback (`release_critical_lock NAME`
            // for a NAME not in its table): `lock::release::for_shell`,
            // its line prefixed `ffkit.bash: FUNC: ` as the builtin's.
            Arg::new("function")
                .long("function")
                .value_name("FUNC")
                .hide(true)
                .help("For shell/ffkit.bash: release NAME as shell function FUNC does, refusals in its words")
                .requires("target")
                .conflicts_with_all(["force", "dotlock", "quiet"]),
        )
}

struct Args {
    target: Option<String>,
    fd: Option<i32>,
    force: bool,
    owner: Option<u32>,
    lock_dir: Option<PathBuf>,
    session: bool,
    dotlock: bool,
    quiet: bool,
    backend: Option<String>,
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        target: m.get_one::<String>("target").cloned(),
        fd: m.get_one::<i32>("fd").copied(),
        force: m.get_flag("force"),
        owner: m.get_one::<u32>("owner").copied(),
        lock_dir: m.get_one::<PathBuf>("lock_dir").cloned(),
        session: m.get_flag("session"),
        dotlock: m.get_flag("dotlock"),
        quiet: m.get_flag("quiet"),
        backend: super::backend_flag(m),
    };
    let locks = lock::Locks::new(&ctx.cfg, a.backend.as_deref())?;
    let function = m.get_one::<String>("function");
    locks.check(lock::LocalOnly {
        fd: a.fd.is_some(),
        function: function.is_some(),
        ..Default::default()
    })?;
    let function = function.map(String::as_str);
    if let Some(fd) = a.fd {
        let path = match &a.target {
            Some(t) => Some(lock::resolve_query(
                t,
                &ctx.cfg,
                a.lock_dir.as_deref(),
                a.session,
            )?),
            None => None,
        };
        let owner = a.owner.unwrap_or_else(lock::parent_pid);
        let delete = super::lock_args::deletes_at_release(a.target.as_deref(), &ctx.cfg);
        if let (Some(func), Some(path)) = (function, &path) {
            // The fallback's `release_critical_lock NAME` of its own
            // descriptor: a descriptor holding no lock any more is the
            // builtin's verdict and line (`lock::fd::lost_by_shell`).
            // A descriptor the script closed or reopened on another file is
            // its verdict too (`lock::fd::descriptor_lost_by_shell`).
            let r = lock::fd::release_for_function(fd, path, owner, delete);
            return Ok(in_function_words(func, r));
        }
        return unlock_fd(fd, delete, path.as_deref(), owner, a.quiet);
    }
    let target = a.target.unwrap_or_default();
    if let Some(func) = function {
        let path = lock::resolve_query(&target, &ctx.cfg, a.lock_dir.as_deref(), a.session)?;
        let shell = a.owner.unwrap_or_else(lock::parent_pid);
        return Ok(in_function_words(
            func,
            lock::release::for_shell(&path, shell, ctx.cfg.old_library),
        ));
    }
    release_named(
        ctx,
        &locks,
        &target,
        &lock::Releasing {
            force: a.force,
            owner: a.owner,
            lock_dir: a.lock_dir.as_deref(),
            session: a.session,
            dotlock: a.dotlock,
        },
        a.quiet,
    )
}

/// A release made for shell function `func` (`--function`): its refusal is
/// one line prefixed `ffkit.bash: FUNC: `, as the builtin prints it.
pub(super) fn in_function_words(func: &str, r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "{}: {}",
                crate::lock::function_prog(func),
                super::one_line(&e)
            );
            ExitCode::from(e.exit_code())
        }
    }
}
