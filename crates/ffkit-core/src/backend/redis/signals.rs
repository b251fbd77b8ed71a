//! The signals command mode (`lock-acquire NAME -- CMD` on Redis) waits
//! for: the terminal's and the system's INT, QUIT, TERM and HUP, passed on
//! to the command's process group, and CHLD, its end.
//!
//! They are caught by handlers that write the signal's number to a pipe
//! (the self-pipe trick), not blocked and taken with `sigtimedwait`: a
//! blocked mask is inherited by the command, so the command had to be
//! started by `fork` and a `pre_exec` that unblocked them; without one,
//! std starts it with `posix_spawn` (a `vfork`-like clone, no copy of
//! ffkit's page tables), about a quarter of a millisecond less per lock
//! round (BENCHMARKS.md "Redis backend"). glibc's `posix_spawn` resets
//! every caught signal to its default in the child before it runs the
//! command, and `exec` would anyway: the command starts with the caller's
//! mask and dispositions.
//!
//! Once the command runs, [`Relay::block`] blocks them (and SIGTTOU, so
//! handing the terminal back from the background cannot stop ffkit) except
//! while [`Relay::wait`] waits: no Redis request of a renewal is ever
//! interrupted (a socket read with a timeout is never restarted). A signal
//! that arrives at any moment in between is kept in the pipe until the
//! next wait; none is lost and none takes its default action.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The pipe's write end, for the handler (-1: none).
static PIPE_W: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_W.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let b = u8::try_from(sig).unwrap_or(0);
    // SAFETY: write(2) and errno access are async-signal-safe; the byte
    // outlives the call; errno is restored for the code interrupted. A
    // full pipe (the write end is non-blocking) drops the byte: only a
    // flood of the same signals could fill it.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, std::ptr::from_ref(&b).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Caught signals relayed through a pipe; dropping it restores the former
/// dispositions and unblocks them.
pub(super) struct Relay {
    r: OwnedFd,
    _w: OwnedFd,
    caught: Vec<(i32, libc::sigaction)>,
    set: libc::sigset_t,
    blocked: libc::sigset_t,
}

impl Relay {
    /// Catches `sigs` from now on, the mask unchanged (a command spawned
    /// now starts as the caller left it).
    pub(super) fn catch(sigs: &[i32]) -> io::Result<Relay> {
        use rustix::pipe::{PipeFlags, pipe_with};
        let (r, w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // Dispositions are process-wide: one relay at a time (command mode
        // runs one command; the bash builtin never gets here).
        if PIPE_W
            .compare_exchange(-1, w.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(io::Error::other(
                "signals are already relayed in this process",
            ));
        }
        let mut relay = Relay {
            r,
            _w: w,
            caught: Vec::new(),
            set: sigset(sigs),
            blocked: sigset(&[sigs, &[libc::SIGTTOU]].concat()),
        };
        for &sig in sigs {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
            // start; the handler only writes to the pipe. rustix has no
            // wrapper for signal handlers.
            let old = unsafe {
                let mut sa = std::mem::zeroed::<libc::sigaction>();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut old = std::mem::zeroed::<libc::sigaction>();
                if libc::sigaction(sig, &sa, &mut old) != 0 {
                    return Err(io::Error::last_os_error());
                }
                old
            };
            relay.caught.push((sig, old));
        }
        Ok(relay)
    }

    /// Blocks the caught signals and SIGTTOU until [`Relay::wait`] or the
    /// drop (call once the command is started).
    pub(super) fn block(&self) {
        // SAFETY: a valid set; this thread's mask only.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.blocked, std::ptr::null_mut()) };
    }

    /// Waits up to `d` for a caught signal: its number, or `None` when none
    /// came (or a wait was cut short: the caller looks again).
    pub(super) fn wait(&self, d: Duration) -> Option<i32> {
        if let Some(sig) = self.take() {
            return Some(sig);
        }
        let ts = rustix::event::Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        };
        // SAFETY: valid sets; this thread's mask only. A signal that comes
        // between the unblock and the poll is in the pipe: poll returns.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
        let mut fds = [rustix::event::PollFd::new(
            &self.r,
            rustix::event::PollFlags::IN,
        )];
        let _ = rustix::event::poll(&mut fds, Some(&ts));
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.set, std::ptr::null_mut()) };
        self.take()
    }

    /// One signal number from the pipe, if any.
    fn take(&self) -> Option<i32> {
        let mut b = [0u8; 1];
        match rustix::io::read(self.r.as_fd(), &mut b) {
            Ok(1) => Some(i32::from(b[0])),
            _ => None,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for (sig, old) in &self.caught {
            // SAFETY: restores the disposition saved by `catch`.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
        PIPE_W.store(-1, Ordering::Relaxed);
        // SAFETY: a valid set; this thread's mask only.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.blocked, std::ptr::null_mut()) };
    }
}
