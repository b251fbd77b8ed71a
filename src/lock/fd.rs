//! Kernel locks held through a descriptor of the caller (fd mode): the
//! shell wrappers' `acquire_critical_lock`, `lock-acquire --fd N [NAME]` and,
//! in-process, the bash builtin.
//!
//! The lock belongs to the caller's open file description, so it lives as
//! long as the caller keeps the descriptor. Given a lock NAME, the
//! descriptor must be open on that name's one lock file (checked by device
//! and inode, so the wrappers and the binary cannot silently lock two
//! different files), and the owner's record (`kind: "fd"`, its pid, start
//! time, descriptor number) is written into the file so `lock-status` names
//! the holder. The record is written through a second descriptor of our own
//! (`/proc/self/fd/N` reopened read-write: the caller's may be write-only
//! with O_APPEND, where pwrite ignores the offset) and only while the lock
//! is held exclusively, as for named locks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::{BorrowedFd, RawFd};
use std::path::Path;

use super::holder::{self, Holder, KIND_FD};
use super::{Acquired, Kind, Wait, kernel};
use crate::error::{Error, Result};

/// `fd` as a borrowed descriptor, or EBADF if it is not open.
fn borrowed(fd: RawFd) -> io::Result<BorrowedFd<'static>> {
    let b = kernel::borrow(fd)?;
    rustix::io::fcntl_getfd(b)?;
    Ok(b)
}

/// The file `(dev, ino)` descriptor `fd` is open on.
pub(crate) fn identity(fd: RawFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(borrowed(fd)?)?;
    Ok((st.st_dev, st.st_ino))
}

/// Whether the open file description behind `fd` holds a lock (flock or
/// OFD): `/proc/self/fdinfo/N` lists exactly the locks owned through that
/// description, so another descriptor number, another file or another
/// holder of the same file never counts.
pub(crate) fn holds_lock(fd: RawFd) -> io::Result<bool> {
    borrowed(fd)?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    Ok(info.lines().any(|l| l.starts_with("lock:")))
}

/// Our own read-write descriptor on the file behind `fd`, for the record.
fn reopen(fd: RawFd) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{fd}"))
}

/// Checks that `fd` is open on the lock file at `path`.
pub(crate) fn check_same(fd: RawFd, path: &Path) -> Result<()> {
    let (dev, ino) = identity(fd).map_err(|e| fd_error(fd, "cannot inspect", e))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.dev() == dev && m.ino() == ino => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot inspect", path, e)),
    }
    let open_on = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "another file".into());
    Err(Error::Validation(format!(
        "descriptor {fd} is open on {open_on}, not on the lock file {}",
        path.display()
    )))
}

/// The error for a descriptor: not open (exit 2) or the system's reason.
pub(crate) fn fd_error(fd: RawFd, what: &str, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EBADF) {
        Error::Validation(format!("descriptor {fd}: not open"))
    } else {
        Error::LockFailed(format!("{what} descriptor {fd}: {e}"))
    }
}

/// Takes `kind` on the caller's descriptor `fd`. With `path` (a NAME's lock
/// file), `fd` must be open on it, and an exclusive lock gets `owner`'s
/// record. `on_wait` runs once before blocking.
pub fn acquire(
    fd: RawFd,
    kind: Kind,
    method: kernel::Method,
    wait: Wait,
    path: Option<&Path>,
    owner: u32,
    on_wait: &mut dyn FnMut(),
) -> Result<Acquired> {
    let record = match path {
        Some(p) => {
            check_same(fd, p)?;
            reopen(fd).ok()
        }
        None => None,
    };
    if let Some(f) = &record
        && let Some(rec) = holder::read_from(f)
        && rec.pid == owner
        && !(rec.kind == KIND_FD && rec.fd == Some(fd))
        && let Ok((dev, ino)) = identity(fd)
        && rec.holds_kernel_lock(dev, ino)
    {
        // The same owner through another descriptor would wait for itself.
        return Err(Error::Conflict(format!(
            "{}: already held by this owner (pid {owner}); release it first",
            path.map(|p| p.display().to_string()).unwrap_or_default(),
        )));
    }
    let got = kernel::lock_fd(fd, kind, method, wait, on_wait)
        .map_err(|e| fd_error(fd, "cannot lock", e))?;
    if got.is_ok()
        && kind == Kind::Exclusive
        && let Some(f) = &record
    {
        let mut rec = Holder::new(KIND_FD, owner, None);
        rec.fd = Some(fd);
        if let Err(e) = holder::write_to(f, &rec) {
            let _ = kernel::unlock_fd(fd);
            return Err(Error::io(
                "cannot write holder record",
                path.unwrap_or(Path::new("?")),
                e,
            ));
        }
    }
    Ok(got)
}

/// Why an fd release did nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum NotHeld {
    /// The descriptor's open file description holds no lock.
    NoLock,
}

/// Releases the lock held through the caller's descriptor `fd` (checked: a
/// descriptor holding no lock is [`NotHeld`]); with `path`, `fd` must be
/// open on it. Clears `owner`'s record first, while still exclusive.
pub fn release(
    fd: RawFd,
    path: Option<&Path>,
    owner: u32,
) -> Result<std::result::Result<(), NotHeld>> {
    if let Some(p) = path {
        check_same(fd, p)?;
    }
    if !holds_lock(fd).map_err(|e| fd_error(fd, "cannot inspect", e))? {
        return Ok(Err(NotHeld::NoLock));
    }
    if let Ok(f) = reopen(fd)
        && let Some(rec) = holder::read_from(&f)
        && rec.kind == KIND_FD
        && rec.pid == owner
        && rec.fd == Some(fd)
    {
        let _ = holder::clear(&f);
    }
    // Whichever kind it holds: flock, or an OFD lock (whole file).
    kernel::unlock_fd(fd).map_err(|e| fd_error(fd, "cannot unlock", e))?;
    kernel::unlock_fd_with(fd, kernel::Method::Ofd { start: 0, len: 0 })
        .map_err(|e| fd_error(fd, "cannot unlock", e))?;
    Ok(Ok(()))
}
