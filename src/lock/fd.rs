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
    acquire_with(fd, kind, path, owner, &mut || {
        kernel::lock_fd(fd, kind, method, wait, on_wait)
    })
}

/// [`acquire`] for a caller inside another program's process (the bash
/// builtin, whose `owner` is the shell itself, `std::process::id()`): the
/// wait installs no signal handler or timer — non-blocking tries on
/// `schedule` until `deadline`, asking `interrupted` between tries (see
/// [`kernel::lock_fd_polled`]).
#[allow(clippy::too_many_arguments)]
pub fn acquire_polled(
    fd: RawFd,
    kind: Kind,
    method: kernel::Method,
    deadline: Option<std::time::Instant>,
    schedule: super::backoff::Schedule,
    path: Option<&Path>,
    owner: u32,
    interrupted: &mut dyn FnMut() -> bool,
    on_wait: &mut dyn FnMut(),
) -> Result<Acquired> {
    let mut schedule = Some(schedule);
    acquire_with(fd, kind, path, owner, &mut || match schedule.take() {
        Some(s) => kernel::lock_fd_polled(fd, kind, method, deadline, s, interrupted, on_wait),
        None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    })
}

/// The identity check, the same-owner check and the record around `lock`.
fn acquire_with(
    fd: RawFd,
    kind: Kind,
    path: Option<&Path>,
    owner: u32,
    lock: &mut dyn FnMut() -> io::Result<Acquired>,
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
    let got = lock().map_err(|e| fd_error(fd, "cannot lock", e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackoffStrategy;
    use std::os::unix::io::AsRawFd;
    use std::time::Duration;

    /// The builtin's path: a descriptor of this very process (the "shell"),
    /// locked without signals, gets a record naming this process and the
    /// descriptor; its release clears the record and refuses a second time.
    #[test]
    fn polled_descriptor_lock_records_the_calling_process() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.lock");
        std::fs::write(&p, "").unwrap();
        let f = File::open(&p).unwrap();
        let me = std::process::id();
        let got = acquire_polled(
            f.as_raw_fd(),
            Kind::Exclusive,
            kernel::Method::Flock,
            None,
            super::super::backoff::Schedule::new(
                BackoffStrategy::Linear,
                Duration::from_millis(1),
                Duration::from_millis(1),
            ),
            Some(&p),
            me,
            &mut || false,
            &mut || {},
        )
        .unwrap();
        assert!(got.is_ok());
        let rec = holder::read_from(&File::open(&p).unwrap()).unwrap();
        assert_eq!(
            (rec.kind.as_str(), rec.pid, rec.fd),
            (KIND_FD, me, Some(f.as_raw_fd()))
        );
        let m = std::fs::metadata(&p).unwrap();
        assert!(rec.holds_kernel_lock(m.dev(), m.ino()));
        assert!(holds_lock(f.as_raw_fd()).unwrap());
        assert_eq!(release(f.as_raw_fd(), Some(&p), me).unwrap(), Ok(()));
        assert_eq!(std::fs::read(&p).unwrap(), b"");
        assert_eq!(
            release(f.as_raw_fd(), Some(&p), me).unwrap(),
            Err(NotHeld::NoLock)
        );
    }
}
