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
}

/// Whose release this is: `--owner PID`, else this process and its parent.
pub fn releasers(owner: Option<u32>) -> Vec<u32> {
    match owner {
        Some(p) => vec![p],
        None => vec![std::process::id(), super::parent_pid()],
    }
}

/// A lock owned by an ancestor further up than the parent (the releaser
/// runs in a subshell, a pipeline stage or a child script of the owner):
/// the error that refuses it.
pub(crate) fn descendant(
    label: &str,
    as_pids: &[u32],
    force: bool,
    h: &Holder,
) -> Option<crate::Error> {
    if h.pid == 0 || force || as_pids.contains(&h.pid) {
        return None;
    }
    if !holder::ancestors(std::process::id()).contains(&h.pid) {
        return None;
    }
    Some(crate::Error::NotFound(format!(
        "{}: held by pid {}, a shell this process runs under, not by the process that runs this release (a subshell, $( ), pipeline stage or child script cannot release its shell's lock; release it in that shell)",
        label, h.pid
    )))
}

/// Releases the lock at `r.path`.
pub fn release(r: &Release<'_>) -> Result<Released> {
    if status::detect(r.path, r.dotlock, r.is_name)? == Backend::Dotlock {
        let may = |h: &Holder| r.force || (h.pid != 0 && r.as_pids.contains(&h.pid));
        return match dotlock::release(r.path, &may)? {
            Ok(h) => Ok(Released::Done(h)),
            Err(dotlock::NotReleased::NotHeld) => Ok(Released::NotHeld),
            Err(dotlock::NotReleased::NotOwner(h)) => {
                match descendant(&r.path.display().to_string(), &r.as_pids, r.force, &h) {
                    Some(e) => Err(e),
                    None => Ok(Released::NotOwner(h)),
                }
            }
        };
    }
    let who = named::Releaser {
        as_pids: r.as_pids.clone(),
        force: r.force,
    };
    match named::release(r.path, &who, r.is_name && r.old_library)? {
        Ok(h) => Ok(Released::Done(h)),
        Err(named::NotReleased::NotHeld) => Ok(Released::NotHeld),
        Err(named::NotReleased::NotOwner(h)) => {
            match descendant(&r.path.display().to_string(), &r.as_pids, r.force, &h) {
                Some(e) => Err(e),
                None => Ok(Released::NotOwner(h)),
            }
        }
    }
}
