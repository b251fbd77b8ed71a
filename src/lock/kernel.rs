//! flock(2) locks that wait in the kernel, with a monotonic deadline.
//!
//! A free lock costs one non-blocking flock call and nothing else: no
//! signal set-up, no timer, no thread. Only when the lock is held does the
//! caller block in flock(2) itself, so the kernel hands the lock over the
//! moment it is released (no polling). A deadline is enforced the way
//! util-linux flock(1) does it — SIGALRM from an interval timer interrupts
//! the blocking call (EINTR) — with two fixes: the remaining time is always
//! recomputed from the monotonic clock, and the timer keeps firing every few
//! milliseconds after its first expiry, so an alarm that lands just before
//! flock(2) is entered cannot leave us blocked forever.
//!
//! We call `libc::flock` rather than `File::lock` because fd mode locks a
//! descriptor we do not own, and because the EINTR from our alarm must reach
//! us instead of being retried.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Acquired, Denied, Kind, Wait, holder, would_block};

fn flock(fd: RawFd, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock only reads its integer arguments; a bad fd is EBADF.
    if unsafe { libc::flock(fd, op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn op_of(kind: Kind) -> libc::c_int {
    match kind {
        Kind::Shared => libc::LOCK_SH,
        Kind::Exclusive => libc::LOCK_EX,
    }
}

/// Takes `kind` on `fd`. `on_wait` runs once, just before blocking, so the
/// caller can say whom it waits for. A timed-out or busy call never holds
/// the lock afterwards (flock(2) interrupted by EINTR takes nothing).
pub fn lock_fd(
    fd: RawFd,
    kind: Kind,
    wait: Wait,
    on_wait: &mut dyn FnMut(),
) -> io::Result<Acquired> {
    let op = op_of(kind);
    loop {
        match flock(fd, op | libc::LOCK_NB) {
            Ok(()) => return Ok(Ok(Duration::ZERO)),
            Err(e) if would_block(&e) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    let deadline = match wait {
        Wait::NonBlocking => return Ok(Err(Denied::Busy)),
        Wait::Until(d) => Some(d),
        Wait::Forever => None,
    };
    on_wait();
    let start = Instant::now();
    let Some(deadline) = deadline else {
        loop {
            match flock(fd, op) {
                Ok(()) => return Ok(Ok(start.elapsed())),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    };
    let alarm = Alarm::install()?;
    loop {
        let now = Instant::now();
        if now >= deadline {
            drop(alarm);
            // One last look: a lock freed exactly at the deadline is taken.
            return match flock(fd, op | libc::LOCK_NB) {
                Ok(()) => Ok(Ok(start.elapsed())),
                Err(e) if would_block(&e) => Ok(Err(Denied::TimedOut)),
                Err(e) => Err(e),
            };
        }
        alarm.arm(deadline - now)?;
        match flock(fd, op) {
            Ok(()) => return Ok(Ok(start.elapsed())),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Drops whatever lock `fd`'s open file description holds.
pub fn unlock_fd(fd: RawFd) -> io::Result<()> {
    flock(fd, libc::LOCK_UN)
}

/// Tries `kind` without waiting; `Ok(false)` when held by someone else.
pub fn try_lock_fd(fd: RawFd, kind: Kind) -> io::Result<bool> {
    match flock(fd, op_of(kind) | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if would_block(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// A SIGALRM handler without SA_RESTART plus an interval timer; dropping it
/// disarms the timer and restores the previous disposition.
struct Alarm {
    old: libc::sigaction,
}

/// After the first expiry the timer re-fires this often (see module doc).
const REFIRE: Duration = Duration::from_millis(2);

impl Alarm {
    fn install() -> io::Result<Alarm> {
        // SAFETY: plain C structs, zero-initialised then filled in; the
        // handler does nothing, so it is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = 0; // no SA_RESTART: the blocking flock must see EINTR
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGALRM, &sa, &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Alarm { old })
        }
    }

    fn arm(&self, first: Duration) -> io::Result<()> {
        let tv = |d: Duration| libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros().max(if d.as_secs() == 0 { 1 } else { 0 })
                as libc::suseconds_t,
        };
        let it = libc::itimerval {
            it_interval: tv(REFIRE),
            it_value: tv(first),
        };
        // SAFETY: `it` is a valid itimerval; the old value is not wanted.
        if unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // SAFETY: a zero itimerval disarms; `old` came from sigaction.
        unsafe {
            let zero: libc::itimerval = std::mem::zeroed();
            libc::setitimer(libc::ITIMER_REAL, &zero, std::ptr::null_mut());
            libc::sigaction(libc::SIGALRM, &self.old, std::ptr::null_mut());
        }
    }
}

/// Opens (creating with `mode` if missing, never truncating) a lock file
/// without following a symlink. `write` asks for a writable descriptor
/// (named locks keep their holder record in the file); otherwise it is
/// read-only, like flock(1), so a readable file suffices. A directory may be
/// locked too (flock(1) allows it): it is opened without O_CREAT.
pub fn open_lock_file(path: &Path, write: bool, mode: u32) -> io::Result<File> {
    let open = |create: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .create(create && write)
            .mode(mode)
            // O_NONBLOCK: a FIFO at the path must not block the open (it
            // does not change flock(2), which has its own LOCK_NB).
            .custom_flags(
                libc::O_NOFOLLOW
                    | libc::O_NOCTTY
                    | libc::O_NONBLOCK
                    | if create && !write { libc::O_CREAT } else { 0 },
            )
            .open(path)
    };
    match open(true) {
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => open(false),
        r => r,
    }
}

/// What the kernel says about a lock file right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// No lock file at all.
    Missing,
    Free,
    /// Held; `exclusive` false means one or more shared holders.
    Held {
        exclusive: bool,
    },
}

/// Asks the kernel, not any record: a shared probe fails only against an
/// exclusive holder; when it succeeds, `/proc/locks` tells shared holders
/// from none. The probe never creates the file.
pub fn probe(path: &Path) -> io::Result<Probe> {
    let f = match open_lock_file_existing(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Missing),
        Err(e) => return Err(e),
    };
    probe_file(&f)
}

/// [`probe`] on an open file.
pub fn probe_file(f: &File) -> io::Result<Probe> {
    if !try_lock_fd(f.as_raw_fd(), Kind::Shared)? {
        return Ok(Probe::Held { exclusive: true });
    }
    unlock_fd(f.as_raw_fd())?;
    let m = f.metadata()?;
    if holder::proc_locks_pids(m.dev(), m.ino()).is_empty() {
        Ok(Probe::Free)
    } else {
        Ok(Probe::Held { exclusive: false })
    }
}

/// Opens an existing lock file read-only without following a symlink.
pub fn open_lock_file_existing(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
}
