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
//! - [`acquire`], [`release`], [`status`]: the three requests the applets
//!   (and an in-process caller) make, whatever the mode, on the local files.
//! - [`locks`]: [`Locks`], the one type the applets call: the local files
//!   or a remote backend, the same report types for both.
//!
//! Lock names and dirs are [`crate::namespace`]'s rules. Nothing here knows clap or
//! prints; waiting is reported through callbacks so the front end can print
//! its one line.

pub mod acquire;
pub mod backoff;
pub mod compat;
pub mod dotlock;
pub mod fd;
pub mod holder;
pub mod kernel;
pub mod locks;
pub mod named;
pub mod release;
pub mod run;
pub mod status;

use std::fs;
use std::io;

/// The one wording of a lock file that could not be opened, with the path
/// and the reason after it (`cannot open lock file F: REASON`): the binary,
/// the builtin and (through the binary) the shell fallback all say it, so a
/// reader of stderr sees one line for one event (docs/locks.md).
pub const OPEN_FAILED: &str = "cannot open lock file";
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;

pub use locks::{LocalOnly, Locks, Releasing};

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
    /// The caller's "interrupted?" check said yes ([`kernel::lock_fd`]).
    Interrupted,
}

impl Denied {
    /// The one error (and its one line) for a lock that was not taken,
    /// whatever path asked: the binary's `lock-acquire`, the bash builtin's
    /// `ffkit lock-acquire` and its lock functions (docs/locks.md,
    /// "Messages"). `label` is what the caller named (a NAME as given, a
    /// path, `fd N`); `wait` the wait it asked for; `holder` who holds the
    /// lock ([`holder::describe_kernel_holder`]). Busy is exit 5 (conflict),
    /// a timeout 6, an interruption 1.
    pub fn error(self, label: &str, wait: WaitSpec, holder: &str) -> Error {
        match (self, wait) {
            (Denied::Busy, _) => Error::Conflict(format!("{label}: busy, held by {holder}")),
            (Denied::TimedOut, WaitSpec::Timeout(t)) => Error::Timeout(format!(
                "{label}: timed out after {}s, held by {holder}",
                t.as_secs_f64()
            )),
            (Denied::TimedOut, _) => {
                Error::Timeout(format!("{label}: timed out, held by {holder}"))
            }
            (Denied::Interrupted, _) => Error::General(format!("{label}: interrupted")),
        }
    }
}

/// `FF_DEBUG`'s line for a lock file made ready before its first lock
/// (`lock-acquire --prepare`, which the fallback runs for a missing file;
/// the bash builtin when it creates one): one copy of the words.
pub fn prepared_note(target: &str, path: &std::path::Path) -> String {
    format!("{target}: lock file {} ready", path.display())
}

/// The program name on a shell lock function's lines: `ffkit.bash: FUNC`,
/// so a failure is one line, `ffkit.bash: FUNC: WHAT`, byte for byte the
/// same from the bash builtin's functions and from the binary the
/// fallback and zsh run for them (`lock-acquire --function FUNC`, `lock-release
/// --function FUNC`) (docs/locks.md, "Messages"). Built here once for both.
pub fn function_prog(func: &str) -> String {
    format!("ffkit.bash: {func}")
}

/// The one error for an acquisition by the owner that already holds the
/// lock (it would wait for itself), on every path: exit 5. `what` names
/// the lock (its file, or a Redis lock's name), `owner` the holder's pid.
pub fn already_held(what: impl std::fmt::Display, owner: u32) -> Error {
    Error::Conflict(format!(
        "{what}: already held by this owner (pid {owner}); release it first"
    ))
}

/// The one refusal of a shell-function release by a subshell (a `( )`,
/// `$( )`, pipeline stage or `&` job) of the shell that holds the lock:
/// exit 4, the same line from the builtin and the fallback (which
/// carries these words, checked byte for byte by a test). `what` names
/// the lock file. Only the shell that took a lock releases it
/// (docs/shell.md, "Locks"). It says "took", not "holds": the lock may
/// have been force-released since, and the line stays true either way.
pub fn held_by_parent_shell(what: impl std::fmt::Display) -> Error {
    Error::NotFound(format!(
        "{what}: not held by this shell (its parent shell took it; only that shell may release it)"
    ))
}

/// The outcome of an acquisition: `Ok(waited)` or why not.
pub type Acquired = std::result::Result<Duration, Denied>;

/// Where named locks live: [`crate::namespace::Namespace::lock_dir`]'s rule
/// (docs/locks.md, "Lock dir"), the dir created 0700; the per-user defaults
/// must be owned by the user and not writable by others, else exit 3.
pub fn lock_dir(cfg: &Config, explicit: Option<&Path>, session: bool) -> Result<PathBuf> {
    lock_dir_in(cfg, explicit, session, None, true)
}

/// [`lock_dir`] with the place the caller already looked up (`None`: look
/// it up here if needed). With `create` false the dir is only named, neither
/// created nor checked.
pub fn lock_dir_in(
    cfg: &Config,
    explicit: Option<&Path>,
    session: bool,
    here: Option<&crate::config::Here>,
    create: bool,
) -> Result<PathBuf> {
    let d = crate::namespace::lock_dir(cfg, explicit, session, here)?;
    if create {
        make_lock_dir(&d)?;
    }
    Ok(d.dir)
}

/// Creates a lock dir (0700) and, for a per-user default in a shared
/// place, checks it and its base are ours and private.
pub fn make_lock_dir(d: &LockDir) -> Result<()> {
    let Some(base) = &d.shared_base else {
        return fsutil::create_private_dir(&d.dir);
    };
    let uid = rustix::process::getuid().as_raw();
    fsutil::create_private_dir(base)?;
    check_private(base, uid)?;
    fsutil::create_private_dir(&d.dir)?;
    check_private(&d.dir, uid)
}

/// What a query (`lock-status NAME`, `lock-release NAME`, a release in the
/// builtin) does with a lock dir: the checks of [`make_lock_dir`] on what
/// exists, nothing created. A lock in a dir that is not there is free and
/// not held, and asking must leave nothing behind (it used to make the
/// dir, the per-user base too, on every path but the builtin's release).
pub fn check_lock_dir(d: &LockDir) -> Result<()> {
    let Some(base) = &d.shared_base else {
        return Ok(());
    };
    let uid = rustix::process::getuid().as_raw();
    for dir in [base, &d.dir] {
        match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            _ => check_private(dir, uid)?,
        }
    }
    Ok(())
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
    let mode = m.permissions().mode() & 0o7777;
    if let Some(who) = crate::fsutil::writable_by(mode) {
        return Err(Error::Permission(format!(
            "lock dir {}: writable by {who} (mode {mode:o}); refused",
            dir.display(),
        )));
    }
    Ok(())
}

pub use crate::namespace::{LOCK_SUFFIX as SUFFIX, LockDir, validate_name, validate_name_bytes};

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
    resolve_for(arg, cfg, explicit_dir, session, make_lock_dir)
}

/// [`resolve`] for a query (`lock-status`, `lock-release`, `--fd N NAME`'s
/// release): the lock dir is checked where it exists
/// ([`check_lock_dir`]) and never created.
pub fn resolve_query(
    arg: &str,
    cfg: &Config,
    explicit_dir: Option<&Path>,
    session: bool,
) -> Result<PathBuf> {
    resolve_for(arg, cfg, explicit_dir, session, check_lock_dir)
}

fn resolve_for(
    arg: &str,
    cfg: &Config,
    explicit_dir: Option<&Path>,
    session: bool,
    set_up: fn(&LockDir) -> Result<()>,
) -> Result<PathBuf> {
    if names_a_path(arg) {
        return Ok(PathBuf::from(arg));
    }
    // The name first: a bad one sets nothing up.
    validate_name(arg)?;
    let d = crate::namespace::lock_dir(cfg, explicit_dir, session, None)?;
    set_up(&d)?;
    crate::namespace::lock_file(&d.dir, arg.as_ref())
}

/// Refuses an owner that does not exist (named mode, every backend): a
/// lock held for nobody would never be released.
pub(crate) fn owner_alive(owner: u32) -> Result<()> {
    if holder::start_time(owner).is_none() && !fsutil::pid_alive(owner) {
        return Err(Error::NotFound(format!(
            "owner pid {owner}: no such process"
        )));
    }
    Ok(())
}

/// The variable that hands a command run under a remote lock its fencing
/// token (docs/redis.md, "Fencing tokens").
pub const FENCE_VAR: &str = "FFKIT_LOCK_FENCE";

/// This process's parent: the calling shell, the default owner of a lock.
pub fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32)
}

/// Maps `EWOULDBLOCK`-style errno values to "held" for callers that probe.
/// (fcntl OFD locks answer EAGAIN or EACCES, flock EWOULDBLOCK = EAGAIN.)
pub(crate) fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EWOULDBLOCK | libc::EACCES))
}
