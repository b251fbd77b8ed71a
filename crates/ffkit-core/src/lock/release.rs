//! `lock::release`: drop a named lock (kernel lock held by a holder
//! process or by the owner's descriptor, or a dot-lock), checking that the
//! caller owns it (docs/locks.md, "Named pairs across separate commands").
//!
//! The owner is the process the lock was taken for; the releaser counts as
//! the owner when its own pid is the owner (a shell that ran `exec ffkit
//! lock-release`, as `sh -c '...; ffkit lock-release n'` does for its last
//! command) or its parent is (the owning shell ran it as a command), or
//! when it passes the same `--owner PID`. A releaser further down — run
//! from a subshell, a pipeline stage or a child script of the owner — is
//! refused with exit 4 and changes nothing: only the shell that took a lock
//! releases it (docs/locks.md, "Who may release").

use std::path::Path;

use super::holder::{self, Holder};
use super::status::{self, Backend};
use super::{dotlock, named};
use crate::error::Result;

/// A named release request.
pub struct Release<'a> {
    pub path: &'a Path,
    /// Release whoever owns it.
    pub force: bool,
    /// The pids whose ownership counts (see [`releasers`]).
    pub as_pids: Vec<u32>,
    /// `--dotlock` given.
    pub dotlock: bool,
    /// The target is a NAME in the lock dir (not a path).
    pub is_name: bool,
    /// `LOCK_OLD_LIBRARY=present`: a NAME's file is deleted at release
    /// (the old library's file protocol, [`super::compat`]).
    pub old_library: bool,
}

/// How a release ended.
#[derive(Debug)]
pub enum Released {
    /// Released; the record of the holder it had.
    Done(Holder),
    /// Not held (or no lock file at all).
    NotHeld,
    /// Held by another owner (an unknown one for a damaged dot-lock).
    NotOwner(Holder),
    /// Held by a shell this process runs under, further up than its parent
    /// (the releaser is a subshell, `$( )`, pipeline stage or child script
    /// of the owner): exit 4, nothing changed ([`descendant`]). With the
    /// lock's label (its file, or a remote lock's name).
    ByParentShell(Holder, String),
    /// A remote (Redis) lock the caller held, through a holder process
    /// still alive on this host, that the server no longer has under that
    /// holding (a restart or failover lost it, the lease lapsed): exit 9,
    /// as a command's lost lease. With whoever holds it now, if anyone.
    Lost(Option<Holder>),
}

/// Whose release this is: `--owner PID`, else this process and its parent.
pub fn releasers(owner: Option<u32>) -> Vec<u32> {
    match owner {
        Some(p) => vec![p],
        None => vec![std::process::id(), super::parent_pid()],
    }
}

/// Whether a lock owned by `h` is owned by an ancestor further up than the
/// parent (the releaser runs in a subshell, a pipeline stage or a child
/// script of the owner), which refuses the release with exit 4.
pub(crate) fn by_parent_shell(as_pids: &[u32], force: bool, h: &Holder) -> bool {
    if h.pid == 0 || force || as_pids.contains(&h.pid) {
        return false;
    }
    holder::ancestors(std::process::id()).contains(&h.pid)
}

/// The binary's words for [`Released::ByParentShell`] (`lock-release NAME`,
/// without `-q`).
pub fn descendant(label: &str, h: &Holder) -> crate::Error {
    crate::Error::NotFound(format!(
        "{}: held by pid {}, a shell this process runs under, not by the process that runs this release (a subshell, $( ), pipeline stage or child script cannot release its shell's lock; release it in that shell)",
        label, h.pid
    ))
}

/// A release refused to `as_pids`: [`Released::ByParentShell`] when the
/// owner is a shell the releaser runs under, else [`Released::NotOwner`].
pub(crate) fn refused(label: &str, as_pids: &[u32], force: bool, h: Holder) -> Released {
    if by_parent_shell(as_pids, force, &h) {
        Released::ByParentShell(h, label.to_string())
    } else {
        Released::NotOwner(h)
    }
}

/// The shell functions' release (`release_critical_lock NAME`,
/// `release_session_lock`) of a NAME that is not in the shell's own
/// held-lock table: a named pair the shell took with `ffkit lock-acquire
/// NAME` (or a dot-lock), released as `ffkit lock-release NAME` run by
/// `shell` would be. One rule and one set of words for the builtin and
/// the fallback (`lock-release --function FUNC`): released, or exit 4 with
/// `FILE: not held by this shell` (free, or another owner's) or
/// [`super::held_by_parent_shell`]'s line (a shell this one runs under
/// holds it).
pub fn for_shell(path: &Path, shell: u32, old_library: bool) -> Result<()> {
    let r = release(&Release {
        path,
        force: false,
        as_pids: vec![shell],
        dotlock: false,
        is_name: true,
        old_library,
    })?;
    match r {
        Released::Done(_) => Ok(()),
        Released::ByParentShell(..) => Err(super::held_by_parent_shell(path.display())),
        // A local lock is never `Lost` (only a remote one's release says so).
        Released::NotHeld | Released::NotOwner(_) | Released::Lost(_) => Err(
            crate::Error::NotFound(format!("{}: not held by this shell", path.display())),
        ),
    }
}

/// Releases the lock at `r.path`.
pub fn release(r: &Release<'_>) -> Result<Released> {
    if status::detect(r.path, r.dotlock, r.is_name)? == Backend::Dotlock {
        let may = |h: &Holder| r.force || (h.pid != 0 && r.as_pids.contains(&h.pid));
        return match dotlock::release(r.path, &may)? {
            Ok(h) => Ok(Released::Done(h)),
            Err(dotlock::NotReleased::NotHeld) => Ok(Released::NotHeld),
            Err(dotlock::NotReleased::NotOwner(h)) => Ok(refused(
                &r.path.display().to_string(),
                &r.as_pids,
                r.force,
                h,
            )),
        };
    }
    let who = named::Releaser {
        as_pids: r.as_pids.clone(),
        force: r.force,
    };
    match named::release(r.path, &who, r.is_name && r.old_library)? {
        Ok(h) => Ok(Released::Done(h)),
        Err(named::NotReleased::NotHeld) => Ok(Released::NotHeld),
        Err(named::NotReleased::NotOwner(h)) => Ok(refused(
            &r.path.display().to_string(),
            &r.as_pids,
            r.force,
            h,
        )),
    }
}
