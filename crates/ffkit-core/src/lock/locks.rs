//! [`Locks`]: the one type the lock applets call, over the local files and
//! a remote backend (docs/redis.md). It picks the backend (`--backend`,
//! else `FFKIT_BACKEND`) and answers in the same report types for both —
//! [`Outcome`], [`Released`], [`Status`] — so the front end words them
//! once and never asks which backend ran.
//!
//! The rules both backends share live here once: the lock name of a
//! target, the default owner ([`super::parent_pid`]), whose release counts
//! ([`release::releasers`] and the descendant refusal), and what a remote
//! backend cannot do (a descriptor, a dot-lock, a shared lock, `-F`,
//! `--inherit`, `--prepare`).

use std::path::{Path, PathBuf};

use super::acquire::{self, Mode, Outcome, Report, Request};
use super::holder::Holder;
use super::release::{self, Released};
use super::status::{self, Status};
use super::{Kind, names_a_path, validate_name};
use crate::backend::{self, Target};
use crate::config::Config;
use crate::error::{Error, Result};

/// Where locks live for one call (with its own copy of the
/// configuration, so a front end can report while it waits).
pub struct Locks {
    cfg: Config,
    remote: Option<Target>,
}

/// What a request uses that only local files have (refused on a remote
/// backend before anything is done).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalOnly {
    pub fd: bool,
    pub dotlock: bool,
    pub shared: bool,
    pub no_fork: bool,
    pub inherit: bool,
    pub prepare: bool,
    /// `lock-release --function` (the shell functions' fallback, which
    /// runs it on the local files only).
    pub function: bool,
}

/// A named release: `lock-release NAME` or `lock-acquire -u NAME`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Releasing<'p> {
    pub force: bool,
    pub owner: Option<u32>,
    pub lock_dir: Option<&'p Path>,
    pub session: bool,
    pub dotlock: bool,
}

impl Locks {
    /// The locks of `--backend FLAG` (`local` forces the files), else of
    /// `FFKIT_BACKEND`.
    pub fn new(cfg: &Config, flag: Option<&str>) -> Result<Locks> {
        Ok(Locks {
            remote: backend::select(cfg, flag)?,
            cfg: cfg.clone(),
        })
    }

    /// Refuses what the backend cannot do, naming it.
    pub fn check(&self, w: LocalOnly) -> Result<()> {
        let Some(t) = &self.remote else {
            return Ok(());
        };
        let what = if w.fd {
            "--fd (a descriptor lock is local by nature)"
        } else if w.dotlock {
            "--dotlock"
        } else if w.shared {
            "-s/--shared"
        } else if w.no_fork {
            "-F/--no-fork (ffkit must stay to renew the lease)"
        } else if w.inherit {
            "--inherit"
        } else if w.prepare {
            "--prepare (there is no local lock file)"
        } else if w.function {
            "--function (the shell functions' local release)"
        } else {
            return Ok(());
        };
        Err(Error::Validation(format!(
            "{what} is not available with backend {} (use --backend local)",
            t.label
        )))
    }

    /// The lock a `NAME|FILE` argument names: locally its file; on a remote
    /// backend a NAME (checked like a local one) or the path verbatim.
    pub fn resolve(&self, target: &str, lock_dir: Option<&Path>, session: bool) -> Result<PathBuf> {
        match &self.remote {
            None => super::resolve(target, &self.cfg, lock_dir, session),
            Some(_) => remote_name(target).map(PathBuf::from),
        }
    }

    /// [`Locks::resolve`] for a query (a release): the lock dir is never
    /// created ([`super::resolve_query`]).
    pub fn resolve_query(
        &self,
        target: &str,
        lock_dir: Option<&Path>,
        session: bool,
    ) -> Result<PathBuf> {
        match &self.remote {
            None => super::resolve_query(target, &self.cfg, lock_dir, session),
            Some(_) => remote_name(target).map(PathBuf::from),
        }
    }

    /// Runs `req`: locally [`acquire::acquire`], else the remote driver
    /// (the lock is `req.label`, the target as given).
    pub fn acquire(&self, req: &Request, session: bool, rep: &mut dyn Report) -> Result<Outcome> {
        let Some(t) = &self.remote else {
            return acquire::acquire(req, rep);
        };
        self.check(LocalOnly {
            fd: matches!(req.mode, Mode::Fd { .. }),
            dotlock: req.dotlock,
            shared: req.kind == Kind::Shared,
            no_fork: req.no_fork,
            inherit: req.inherit,
            prepare: false,
            function: false,
        })?;
        req.validate()?;
        let name = remote_name(&req.label)?;
        let owner = if matches!(req.mode, Mode::Command { .. }) {
            // The lock is this process's while the command runs.
            std::process::id()
        } else {
            super::owner_alive(req.owner)?;
            req.owner
        };
        driver(t)?.lock_acquire(t, &self.cfg, name, req, owner, session, rep)
    }

    /// Releases a named lock if the caller owns it (or `force`).
    pub fn release(&self, target: &str, r: &Releasing<'_>) -> Result<Released> {
        let as_pids = release::releasers(r.owner);
        let Some(t) = &self.remote else {
            // A query: a missing lock dir is "not held", never made.
            let path = super::resolve_query(target, &self.cfg, r.lock_dir, r.session)?;
            return release::release(&release::Release {
                path: &path,
                force: r.force,
                as_pids,
                dotlock: r.dotlock,
                is_name: !names_a_path(target),
                old_library: self.cfg.old_library,
            });
        };
        let name = remote_name(target)?;
        let may = |h: &Holder| {
            r.force
                || (h.pid != 0 && h.host == super::holder::hostname() && as_pids.contains(&h.pid))
        };
        match driver(t)?.lock_release(t, &self.cfg, name, r.session, &may, &as_pids)? {
            Released::NotOwner(h) => Ok(release::refused(name, &as_pids, r.force, h)),
            other => Ok(other),
        }
    }

    /// Whether the lock is held, and by whom.
    pub fn status(
        &self,
        target: &str,
        dotlock: bool,
        lock_dir: Option<&Path>,
        session: bool,
    ) -> Result<Status> {
        let Some(t) = &self.remote else {
            // A query: a missing lock dir is "free", never made.
            let path = super::resolve_query(target, &self.cfg, lock_dir, session)?;
            let is_name = !names_a_path(target);
            return status::status(&path, dotlock, is_name, self.cfg.lock_stale_after);
        };
        let name = remote_name(target)?;
        driver(t)?.lock_status(t, &self.cfg, name, session)
    }
}

/// The lock name of a target on a remote backend: a NAME is checked like a
/// local lock name; a path (command mode's LOCKFILE) is the name verbatim.
fn remote_name(target: &str) -> Result<&str> {
    if names_a_path(target) {
        return Ok(target);
    }
    validate_name(target)
}

/// The installed driver of a target (a target is only ever made by one).
fn driver(t: &Target) -> Result<&'static dyn backend::remote::Driver> {
    backend::remote::driver().ok_or_else(|| {
        Error::Config(format!(
            "backend {}: no remote backend in this program",
            t.label
        ))
    })
}
