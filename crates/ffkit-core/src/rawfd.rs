//! Descriptors known only by their number: the one place that turns a
//! number into a descriptor ([`borrow`]) and the one place that closes a
//! descriptor nobody in this process owns ([`close_unowned`]).
//!
//! Both exist because no safe constructor can: a number comes from the
//! user (`lock-acquire --fd 9`, flock(1)'s `flock 9`), from a process that
//! re-executed us with a descriptor (a named lock's holder), or from a
//! table of descriptors a forked child must drop (the builtin's kept
//! descriptors, [`crate::hostfd`]). Everything else holds an `OwnedFd`
//! or a `File`.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

/// The descriptor numbered `fd`, borrowed for as long as the process runs.
/// A number that is not open is not an error here: the first system call
/// on it answers EBADF, which every caller reports as "not open".
pub fn borrow(fd: RawFd) -> io::Result<BorrowedFd<'static>> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the number is one the user named or this process was started
    // with (see the module doc); it is only passed to system calls, which
    // report EBADF for one that is not open, and never closed through the
    // borrow. No safe constructor exists for a number we did not open.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Closes `first..=last` (one descriptor when they are equal). For a
/// process that holds these numbers without any owner: a forked child that
/// drops what it inherited and never returns to its parent's code, or the
/// builtin's fork handler dropping the descriptors registered with it.
/// Callable between fork and exec (only close(2) / close_range(2)). False
/// when the kernel has no close_range(2) (before 5.9): the caller then
/// closes one by one.
pub(crate) fn close_unowned(first: RawFd, last: RawFd) -> bool {
    if first < 0 || last < first {
        return true;
    }
    // SAFETY: closes only descriptors no `OwnedFd`/`File` of this process
    // will use again (the callers' contract above), by number, because no
    // owned handle exists for them; rustix offers no close_range(2) and
    // only an unsafe close(2).
    unsafe {
        if first == last {
            libc::close(first);
            true
        } else {
            libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) == 0
        }
    }
}
