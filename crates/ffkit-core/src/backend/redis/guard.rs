//! Command mode's guard: a process that stops the command's process group
//! (SIGTERM, then SIGKILL after a grace) if ffkit dies while the command
//! runs, since nobody renews the lease then (docs/redis.md, "Locks").
//!
//! It is started with `clone(CLONE_VM)`, not `fork`: it shares ffkit's
//! memory instead of copying its page tables (and making every page ffkit
//! writes afterwards a copy-on-write fault), which took about a tenth of a
//! millisecond of every lock round (BENCHMARKS.md, "Redis backend"). The
//! price is that the guard must not touch anything ffkit may be using at
//! the same time: it runs on a stack of its own, reads only the arguments
//! copied into its [`Args`], allocates nothing, and makes only raw system
//! calls through rustix (no libc call, whose errno is ffkit's). Without
//! `CLONE_THREAD` it is a process of its own: the memory stays mapped for
//! it when ffkit dies, and ffkit's descriptor table and signal
//! dispositions are copies.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

/// The guard's stack: far more than its few frames need.
const STACK: usize = 64 << 10;

/// What the guard gets, copied before it starts and never written after.
struct Args {
    /// A pidfd of ffkit: readable once ffkit has exited.
    parent: i32,
    /// The command's process group.
    pgid: i32,
    grace: Duration,
}

/// A running guard, ended by [`Guard::end`] (SIGKILL and reap) when the
/// command is over.
pub(super) struct Guard {
    pid: Pid,
    /// Its arguments and stack: they must outlive it, so they are freed
    /// only once it is reaped ([`Guard::end`]); a guard dropped without
    /// being ended (ffkit unwinding from a panic) keeps them, and keeps
    /// working.
    args: *mut Args,
    stack: *mut [MaybeUninit<u128>],
}

/// Starts the guard of process group `pgid`; `None` if it cannot be
/// started (the command then runs unguarded, as before it was spawned).
pub(super) fn spawn(pgid: u32, grace: Duration) -> Option<Guard> {
    let me = Pid::from_raw(i32::try_from(std::process::id()).ok()?)?;
    let pidfd: OwnedFd = rustix::process::pidfd_open(me, PidfdFlags::empty()).ok()?;
    let args = Box::into_raw(Box::new(Args {
        parent: pidfd.as_raw_fd(),
        pgid: i32::try_from(pgid).ok()?,
        grace,
    }));
    // Not initialised: only the pages the guard's frames use are touched.
    let stack = Box::into_raw(Box::<[u128]>::new_uninit_slice(STACK / 16));
    let top = stack.cast::<MaybeUninit<u128>>().wrapping_add(STACK / 16);
    // SAFETY: `guard` runs on `stack` (16-byte aligned, its end passed as
    // the stack grows down), which lives until the guard is reaped
    // (`Guard::end`) or, if ffkit dies first, as long as the shared memory,
    // which the guard keeps mapped. `guard` only reads `args`, which nobody
    // writes. rustix has no wrapper for clone with a new stack.
    let pid = unsafe {
        libc::clone(
            guard,
            top.cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            args.cast(),
        )
    };
    // The guard has its own copy of the descriptor table: ffkit's copy of
    // the pidfd can go.
    drop(pidfd);
    let Some(pid) = Pid::from_raw(pid).filter(|_| pid > 0) else {
        // SAFETY: from Box::into_raw above; no guard started to use them.
        unsafe {
            drop(Box::from_raw(args));
            drop(Box::from_raw(stack));
        }
        return None;
    };
    Some(Guard { pid, args, stack })
}

impl Guard {
    /// Ends the guard (our own unreaped child: its pid cannot have been
    /// recycled) and reaps it; then its stack can be freed.
    pub(super) fn end(self) {
        let _ = rustix::process::kill_process(self.pid, Signal::KILL);
        let _ = rustix::process::waitpid(Some(self.pid), WaitOptions::empty());
        // SAFETY: both came from Box::into_raw in `spawn`, and their only
        // other user, the guard, is gone.
        unsafe {
            drop(Box::from_raw(self.args));
            drop(Box::from_raw(self.stack));
        }
    }
}

/// The guard: lets go of the caller's stdio (so a `$(…)` reading ffkit's
/// output ends with ffkit), waits for ffkit to exit, then stops the group.
/// Raw system calls only (see the module's comment).
extern "C" fn guard(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Args` that `spawn` keeps alive for us and
    // nobody writes.
    let a = unsafe { &*arg.cast::<Args>() };
    if let Ok(null) = rustix::fs::open(
        c"/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    // SAFETY: the pidfd is open in this process's own descriptor table
    // (a copy of ffkit's taken at the clone) and only used here.
    let parent = unsafe { std::os::fd::BorrowedFd::borrow_raw(a.parent) };
    loop {
        let mut fds = [rustix::event::PollFd::new(
            &parent,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            _ => break,
        }
    }
    if let Some(p) = Pid::from_raw(a.pgid) {
        let _ = rustix::process::kill_process_group(p, Signal::TERM);
        // The grace in steps of 50 ms, counted rather than timed (no clock
        // call); a step cut short only shortens it.
        let step = Duration::from_millis(50);
        let mut left = a.grace;
        while !left.is_zero() && rustix::process::test_kill_process_group(p).is_ok() {
            let d = left.min(step);
            let _ = rustix::thread::nanosleep(&rustix::thread::Timespec {
                tv_sec: 0,
                tv_nsec: i64::from(d.subsec_nanos()),
            });
            left -= d;
        }
        let _ = rustix::process::kill_process_group(p, Signal::KILL);
    }
    // Back in libc's clone stub, which ends this process with the exit
    // system call, running nothing of ffkit's.
    0
}
