//! Locks for shell scripts: kernel flock(2) locks that wait in the kernel,
//! named locks held across separate commands, and link(2) dot-locks for
//! file systems without working kernel locks.
//!
//! - [`kernel`]: flock(2) on a file or a caller's descriptor with a monotonic
//!   deadline, and the kernel probe `lock-status` trusts.
//! - [`named`]: `lock-acquire NAME` … `lock-release NAME`: a small holder
//!   process keeps the lock and watches its owner.
//! - [`compat`]: sharing a NAME's lock file with the old bash library (the
//!   rule at every acquire and release point of a NAME's kernel lock).
//! - [`dotlock`]: the link(2) method with race-free stale-lock removal.
//! - [`backoff`]: the `LOCK_BACKOFF_STRATEGY` schedule (dot-locks only poll).
//! - [`holder`]: who holds a lock: the record written into ffkit's own lock
//!   files, process facts from `/proc`, and `/proc/locks`.
//! - [`fd`]: locks held through the caller's descriptor (the wrappers).
//! - [`run`]: the crate's one child runner (command mode, `perf-metrics time`).
//! - [`team`]: the team config's developer for the caller's email.
//! - [`acquire`], [`release`], [`status`]: the three requests the applets
//!   (and an in-process caller) make, whatever the mode.
//!
//! This module resolves lock names to paths. Nothing here knows clap or
//! prints; waiting is reported through callbacks so the front end can print
//! its one line.

pub mod acquire;
pub mod backoff;
pub mod compat;
pub mod dotlock;
pub mod fd;
pub mod holder;
pub mod kernel;
pub mod named;
pub mod release;
pub mod run;
pub mod status;
pub mod team;

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;

/// Shared (many readers) or exclusive (one holder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Shared,
    Exclusive,
}

/// How long an acquisition may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once if the lock is held (`-n`, `-w 0`).
    NonBlocking,
    /// Wait until this monotonic instant.
    Until(Instant),
    /// Wait as long as it takes (flock(1)'s default).
    Forever,
}

impl Wait {
    /// `-w SECS` semantics: zero means non-blocking.
    pub fn timeout(t: Duration) -> Wait {
        if t.is_zero() {
            Wait::NonBlocking
        } else {
            match Instant::now().checked_add(t) {
                Some(d) => Wait::Until(d),
                None => Wait::Forever,
            }
        }
    }
}

/// How long to wait, before the clock starts (`-n`, `-w SECS`, forever).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WaitSpec {
    NonBlocking,
    Timeout(Duration),
    Forever,
}

impl WaitSpec {
    /// The deadline, counted from now.
    pub fn start(self) -> Wait {
        match self {
            WaitSpec::NonBlocking => Wait::NonBlocking,
            WaitSpec::Timeout(t) => Wait::timeout(t),
            WaitSpec::Forever => Wait::Forever,
        }
    }
}

/// Why a lock was not taken although nothing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Held by someone else and the request was non-blocking.
    Busy,
    /// Still held when the deadline passed.
    TimedOut,
    /// The caller's "interrupted?" check said yes ([`kernel::lock_fd_in_process`]).
    Interrupted,
}

/// The outcome of an acquisition: `Ok(waited)` or why not.
pub type Acquired = std::result::Result<Duration, Denied>;

/// Where named locks live (docs/locks.md, "Lock dir"): `explicit`
/// (`--lock-dir`), else `FFKIT_LOCK_DIR`, else `<namespace>/locks` when
/// `FLOWFORGE_DEVELOPER` is set, else `<repo>/.flowforge/locks` inside a git
/// repository (the old library's legacy namespace), else
/// `$XDG_RUNTIME_DIR/ffkit/locks`, else `/tmp/ffkit-<uid>/locks`. With
/// `session`, session locks: `<namespace>/sessions/locks`, or `sessions/`
/// inside the other dirs. The shell wrappers follow the very same rule, so
/// a NAME is one file whichever way it is taken. The dir is created 0700;
/// the per-user defaults must be owned by the user and not writable by
/// others, else exit 3.
pub fn lock_dir(cfg: &Config, explicit: Option<&Path>, session: bool) -> Result<PathBuf> {
    lock_dir_in(cfg, explicit, session, None, true)
}

/// [`lock_dir`] with the place the caller already looked up (`None`: look
/// it up here if needed). With `create` false the dir is only named, neither
/// created nor checked: for a caller that looks a lock up in its own table
/// of locks it took (through this very function, creating) and touches no
/// file by that name.
pub fn lock_dir_in(
    cfg: &Config,
    explicit: Option<&Path>,
    session: bool,
    here: Option<&crate::config::Here>,
    create: bool,
) -> Result<PathBuf> {
    let make = |d: &Path| {
        if create {
            fsutil::create_private_dir(d)
        } else {
            Ok(())
        }
    };
    let chosen = explicit
        .map(Path::to_path_buf)
        .or_else(|| cfg.lock_dir.clone());
    if let Some(d) = chosen {
        let d = if session { d.join("sessions") } else { d };
        make(&d)?;
        return Ok(d);
    }
    let read;
    let here = match here {
        Some(h) => h,
        None => {
            read = crate::config::Here::now()?;
            &read
        }
    };
    let ns = match cfg.namespace_dir_in(here) {
        Some(ns) => Some(ns),
        // Without FLOWFORGE_DEVELOPER, the team config's developer for the
        // caller's email, as the shell functions resolve it.
        None => here.root.as_ref().map(|r| match team::team_developer(r) {
            Some(id) => r.join(".flowforge").join(format!("dev-{id}")),
            None => r.join(".flowforge"),
        }),
    };
    if let Some(ns) = ns {
        let d = if session {
            ns.join("sessions").join("locks")
        } else {
            ns.join("locks")
        };
        make(&d)?;
        return Ok(d);
    }
    let uid = rustix::process::getuid().as_raw();
    let base = match cfg.runtime_dir() {
        Some(r) => r.join("ffkit"),
        None => PathBuf::from(format!("/tmp/ffkit-{uid}")),
    };
    let d = if session {
        base.join("sessions").join("locks")
    } else {
        base.join("locks")
    };
    if create {
        fsutil::create_private_dir(&base)?;
        check_private(&base, uid)?;
        fsutil::create_private_dir(&d)?;
        check_private(&d, uid)?;
    }
    Ok(d)
}

/// Whether [`lock_dir_in`] picks a per-user default dir in a shared place,
/// which it checks (owner, mode) on every call: a caller that would open
/// a lock file first and set the dir up only when it is missing must not
/// do that for such a dir.
pub fn lock_dir_is_checked(
    cfg: &Config,
    explicit: Option<&Path>,
    here: &crate::config::Here,
) -> bool {
    explicit.is_none() && cfg.lock_dir.is_none() && cfg.developer.is_none() && here.root.is_none()
}

/// A per-user dir in a shared place must be a real directory of ours that
/// nobody else can write, or another user could plant or swap lock files.
fn check_private(dir: &Path, uid: u32) -> Result<()> {
    let m = fs::symlink_metadata(dir).map_err(|e| Error::io("cannot inspect", dir, e))?;
    if !m.file_type().is_dir() {
        return Err(Error::Permission(format!(
            "lock dir {}: not a directory (refused)",
            dir.display()
        )));
    }
    if m.uid() != uid {
        return Err(Error::Permission(format!(
            "lock dir {}: owned by uid {}, not by you (uid {uid}); refused",
            dir.display(),
            m.uid()
        )));
    }
    if m.permissions().mode() & 0o022 != 0 {
        return Err(Error::Permission(format!(
            "lock dir {}: writable by others (mode {:o}); refused",
            dir.display(),
            m.permissions().mode() & 0o7777
        )));
    }
    Ok(())
}

/// A lock name is one plain path component: no `/`, no control characters,
/// not empty, not starting with `.` (ffkit's temp and break files are
/// dot-files), at most 200 bytes (bytes, as the file system counts them:
/// 101 "é" are 202 bytes and refused). The one rule for the binary, the
/// bash builtin and (in shell, byte for byte) the fallback functions.
pub fn validate_name(name: &str) -> Result<&str> {
    validate_name_bytes(name.as_bytes())?;
    Ok(name)
}

/// [`validate_name`] for a name that may not be UTF-8 (a shell argument).
pub fn validate_name_bytes(name: &[u8]) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name[0] != b'.'
        && !name.iter().any(|&b| b == b'/' || b.is_ascii_control());
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "lock name '{}': expected one plain name (no '/', control characters or leading '.', at most 200 bytes)",
            String::from_utf8_lossy(name).escape_debug()
        )))
    }
}

/// The file of a lock NAME: `<lock dir>/<NAME>.lock`, the old library's
/// names for critical and session locks.
pub const SUFFIX: &str = ".lock";

/// The one `NAME|FILE` rule of every lock applet, the builtin and the
/// Redis lock names: an argument with a `/` is a path to a lock file,
/// anything else a NAME.
pub fn names_a_path(arg: impl AsRef<std::ffi::OsStr>) -> bool {
    use std::os::unix::ffi::OsStrExt;
    arg.as_ref().as_bytes().contains(&b'/')
}

/// `NAME|FILE`: an argument with a `/` is a path to a lock file; anything
/// else is a name, whose one file is `<lock dir>/NAME.lock` (the dir is
/// resolved only then, so a path costs no lock-dir set-up).
pub fn resolve(
    arg: &str,
    cfg: &Config,
    explicit_dir: Option<&Path>,
    session: bool,
) -> Result<PathBuf> {
    if names_a_path(arg) {
        return Ok(PathBuf::from(arg));
    }
    let name = validate_name(arg)?;
    Ok(lock_dir(cfg, explicit_dir, session)?.join(format!("{name}{SUFFIX}")))
}

/// This process's parent: the calling shell, the default owner of a lock.
pub fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32)
}

/// Maps `EWOULDBLOCK`-style errno values to "held" for callers that probe.
/// (fcntl OFD locks answer EAGAIN or EACCES, flock EWOULDBLOCK = EAGAIN.)
pub(crate) fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EWOULDBLOCK | libc::EACCES))
}
