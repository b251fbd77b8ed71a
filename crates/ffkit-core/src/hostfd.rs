//! Descriptors a long-lived host process keeps across calls (the bash
//! builtin: its held locks and its kept metrics log), placed where a
//! script's own descriptors never meet them.
//!
//! - **Where**: the highest free number below min(soft `RLIMIT_NOFILE`,
//!   1024) (so 1023, 1022 … normally; 199 … under `ulimit -n 200`). Scripts
//!   use low numbers (`exec 9>f`, `exec 200>f`) and bash allocates its own
//!   (`{var}>f`, saved descriptors) upwards from 10, so neither meets them.
//!   The cap keeps a soft limit in the millions from making every fork copy
//!   a descriptor table that large.
//! - **Not close-on-exec**: bash treats a descriptor of 10 or more with
//!   close-on-exec as one of its own saved copies and undoes a script's
//!   redirection onto it (`exec 200>f` silently reverted).
//! - **Closed in every forked child** instead ([`fork_closes`], a
//!   `pthread_atfork` child handler): a subshell, `$( )`, a pipeline stage,
//!   `&` or a command bash starts never carries them; a child started with
//!   `std::process` (posix_spawn runs no fork handlers) is started inside
//!   [`with_closed_on_exec`].
//!
//! The owner unregisters a descriptor ([`fork_keeps`]) before it closes it
//! or learns the script reused its number, so a child never closes a
//! descriptor of the script's.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The lowest number used (below it: the script's and bash's first ones).
const MIN_FD: i32 = 10;
/// The highest number ever used, whatever the soft limit.
const FD_CEILING: u64 = 1024;

/// The registered descriptors of this process, for the fork handler: a
/// child closes every one of them (lock-free: the handler runs in a new
/// child).
static FORK_CLOSES: [AtomicI32; 256] = [const { AtomicI32::new(-1) }; 256];

extern "C" fn close_in_child() {
    for slot in &FORK_CLOSES {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // The parent registered it as its own; in the child nothing
            // else owns it (its owner's record is forgotten, never closed
            // again).
            crate::rawfd::close_unowned(fd, fd);
        }
    }
}

/// Registers the fork handler once per process (a loaded library's handler
/// is unregistered by glibc when the library is unloaded).
fn register_fork_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a child handler that only makes close(2) calls
        // and atomic stores.
        unsafe { libc::pthread_atfork(None, None, Some(close_in_child)) };
    });
}

/// A new descriptor for `file` at the top of the range (see the module
/// doc), not close-on-exec and not yet registered with [`fork_closes`].
pub fn high_fd(file: &impl AsFd) -> std::io::Result<OwnedFd> {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(FD_CEILING);
    let top = i32::try_from(soft.min(FD_CEILING)).unwrap_or(1024);
    let file = file.as_fd();
    for n in (MIN_FD..top).rev() {
        // A registered number is one of ours, open (the kept metrics log
        // sits at the top): not free, and no system call to learn it.
        if registered(n) {
            continue;
        }
        // The lowest free number >= n: n itself when it is free (the host
        // is single-threaded); a higher one (or none below the limit)
        // means n is taken: the copy closes again here and the next lower
        // number is tried.
        let Ok(got) = rustix::io::fcntl_dupfd_cloexec(file, n) else {
            continue;
        };
        if got.as_raw_fd() != n {
            continue;
        }
        // Not close-on-exec (see the module doc).
        rustix::io::fcntl_setfd(&got, rustix::io::FdFlags::empty())?;
        return Ok(got);
    }
    Err(std::io::Error::from_raw_os_error(libc::EMFILE))
}

/// Whether `fd` is registered with [`fork_closes`].
fn registered(fd: i32) -> bool {
    FORK_CLOSES.iter().any(|s| s.load(Ordering::Relaxed) == fd)
}

/// Makes every forked child close `fd`; false when 256 are registered
/// already (the caller then does not keep it).
pub fn fork_closes(fd: i32) -> bool {
    register_fork_handler();
    // A taken slot is skipped by a plain read (see [`fork_keeps`]).
    FORK_CLOSES.iter().any(|s| {
        s.load(Ordering::Relaxed) == -1
            && s.compare_exchange(-1, fd, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    })
}

/// Undoes [`fork_closes`] for `fd` (about to be closed, or no longer ours).
/// Each slot is read first and swapped only when it holds `fd`: a
/// `compare_exchange` is a locked instruction even when it fails, and 256
/// of them cost ~1.5 µs, twice per lock pair of the builtin (BENCHMARKS.md,
/// "Fifth pass on the lock pair"). The same slots are cleared: the only
/// other writer is the fork handler, which runs in the child.
pub fn fork_keeps(fd: i32) {
    for s in &FORK_CLOSES {
        if s.load(Ordering::Relaxed) == fd {
            let _ = s.compare_exchange(fd, -1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// Runs `f` (which starts a child process with `std::process`, whose
/// posix_spawn does not run fork handlers) with the registered descriptors
/// marked close-on-exec, so the child never gets them either; cleared
/// again after.
pub fn with_closed_on_exec<T>(f: impl FnOnce() -> T) -> T {
    let fds: Vec<i32> = FORK_CLOSES
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .filter(|&fd| fd >= 0)
        .collect();
    let set = |on: bool| {
        for &fd in &fds {
            // Flag changes on this process's own registered descriptors.
            if let Ok(b) = crate::rawfd::borrow(fd) {
                let flags = if on {
                    rustix::io::FdFlags::CLOEXEC
                } else {
                    rustix::io::FdFlags::empty()
                };
                let _ = rustix::io::fcntl_setfd(b, flags);
            }
        }
    };
    set(true);
    let r = f();
    set(false);
    r
}
