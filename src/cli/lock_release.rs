//! `lock-release`: drop a named lock taken by `lock-acquire NAME` (kernel or
//! dot-lock), or the lock on the caller's descriptor (`--fd N`).

use super::ExitCode;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::lock_acquire::{lock_dir_arg, owner_arg, session_arg, unlock_fd};
use super::{Ctx, quiet_arg};
use crate::error::{Error, ExitKind, Result};
use crate::lock::holder::{self, Holder, KIND_DOTLOCK};
use crate::lock::{self, dotlock, named};

pub fn command() -> Command {
    Command::new("lock-release")
        .about("Release a named lock (lock-release NAME) or a descriptor's lock (--fd N)")
        .long_about(
            "Release the named lock NAME taken by lock-acquire NAME: its holder process is ended \
             and the lock is free when this returns. Only the owner (the process that called \
             lock-acquire, or one of its descendants, or --owner PID) may release it; anyone \
             else gets exit 5 unless --force. A lock that is not held exits 4. With --fd N, \
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
}

/// A named release request.
pub(super) struct Release {
    pub target: String,
    pub force: bool,
    pub owner: Option<u32>,
    pub lock_dir: Option<PathBuf>,
    pub session: bool,
    pub dotlock: bool,
    pub quiet: bool,
}

pub fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    if let Some(fd) = m.get_one::<i32>("fd") {
        let path = match m.get_one::<String>("target") {
            Some(t) => Some(lock::resolve(
                t,
                &ctx.cfg,
                m.get_one::<PathBuf>("lock_dir").map(PathBuf::as_path),
                m.get_flag("session"),
            )?),
            None => None,
        };
        let owner = match m.get_one::<u32>("owner") {
            Some(&p) => p,
            None => lock::parent_pid(),
        };
        return unlock_fd(*fd, path.as_deref(), owner, m.get_flag("quiet"));
    }
    let rel = Release {
        target: m.get_one::<String>("target").cloned().unwrap_or_default(),
        force: m.get_flag("force"),
        owner: m.get_one::<u32>("owner").copied(),
        lock_dir: m.get_one::<PathBuf>("lock_dir").cloned(),
        session: m.get_flag("session"),
        dotlock: m.get_flag("dotlock"),
        quiet: m.get_flag("quiet"),
    };
    if let Some(t) = super::backend_of(m, ctx)? {
        let r = super::remote::Release {
            target: rel.target,
            force: rel.force,
            owner: rel.owner,
            session: rel.session,
            quiet: rel.quiet,
        };
        return super::remote::lock_release(&t, r, ctx);
    }
    release_named(&rel, ctx)
}

fn owner_text(h: &Holder) -> String {
    let mut s = format!("pid {}", h.pid);
    if !h.command.is_empty() {
        s.push_str(&format!(" ({})", h.command));
    }
    if h.host != holder::hostname() {
        s.push_str(&format!(" on {}", h.host));
    }
    s
}

/// Releases a named lock, checking ownership.
pub(super) fn release_named(rel: &Release, ctx: &mut Ctx) -> Result<ExitCode> {
    let path = lock::resolve(&rel.target, &ctx.cfg, rel.lock_dir.as_deref(), rel.session)?;
    // Whose release this is: --owner, else our ancestors (the calling shell
    // and the shells above it).
    let as_pids = match rel.owner {
        Some(p) => vec![p],
        // The caller itself counts too: `sh -c 'ffkit lock-acquire n;
        // ffkit lock-release n'` execs the last command in place of the
        // shell, so the releasing process is the owner.
        None => {
            let me = std::process::id();
            let mut v = vec![me];
            v.extend(holder::ancestors(me));
            v
        }
    };
    let name = &rel.target;
    let is_dotlock = rel.dotlock
        || dotlock::look(&path)?
            .and_then(|s| s.holder)
            .is_some_and(|h| h.kind == KIND_DOTLOCK);
    let outcome: std::result::Result<Holder, (bool, Option<Holder>)> = if is_dotlock {
        let may = |h: &Holder| rel.force || as_pids.contains(&h.pid);
        match dotlock::release(&path, &may)? {
            Ok(h) => Ok(h),
            Err(dotlock::NotReleased::NotHeld) => Err((true, None)),
            Err(dotlock::NotReleased::NotOwner(h)) => Err((false, Some(h))),
        }
    } else {
        let who = named::Releaser {
            as_pids,
            force: rel.force,
        };
        match named::release(&path, &who)? {
            Ok(h) => Ok(h),
            Err(named::NotReleased::NotHeld { .. }) => Err((true, None)),
            Err(named::NotReleased::NotOwner(h)) => Err((false, Some(h))),
        }
    };
    match outcome {
        Ok(h) => {
            ctx.debug(format_args!("{name}: released (owner {})", owner_text(&h)));
            Ok(ExitCode::SUCCESS)
        }
        Err((true, _)) => {
            if rel.quiet {
                return Ok(ExitCode::from(ExitKind::NotFound.code()));
            }
            Err(Error::NotFound(format!("{name}: not held")))
        }
        Err((false, h)) => {
            if rel.quiet {
                return Ok(ExitCode::from(ExitKind::Conflict.code()));
            }
            let owner = h.as_ref().map_or_else(|| "someone else".into(), owner_text);
            Err(Error::Conflict(format!(
                "{name}: held by {owner}, not by you (use --force to release it anyway)"
            )))
        }
    }
}
