//! Command mode's guard: a process that stops the command's process group
//! (SIGTERM, then SIGKILL after a grace) if ffkit dies while the command
//! runs, since nobody renews the lease then (docs/redis.md, "Locks").
//!
//! It is started with `clone(CLONE_VM)`, not `fork`: it shares ffkit's
//! memory instead of copying its page tables (and making every page ffkit
//! writes afterwards a copy-on-write fault), which took about a tenth of a
//! millisecond of every lock round (BENCHMARKS.md, "Redis backend"). The
//! price is that the guard must not touch anything ffkit may be using at
//! the same time: it runs on a stack of its own ([`STACK`], a static that
//! no Rust code reads or writes), reads only its arguments (atomics set
//! before it starts), allocates nothing, and makes only raw system calls
//! through rustix (no libc call, whose errno is ffkit's). Without
//! `CLONE_THREAD` it is a process of its own: the memory stays mapped for
//! it when ffkit dies, and ffkit's descriptor table and signal
//! dispositions are copies.
//!
//! The guard watches ffkit through a pidfd it opens itself, of its parent:
//! if ffkit died before that, the guard has been re-parented, which the
//! `getppid` after the open shows, and it stops the group at once.
//!
//! One guard at a time per process (command mode runs one command); the
//! one `unsafe` block is the `clone`, which no safe crate wraps.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

/// The guard's stack, in words: far more than its few frames need.
const WORDS: usize = (64 << 10) / 8;

/// The guard's stack: in `.bss` (no page is touched until the guard uses
/// it), 16-byte aligned. Atomics only so that a static may be written
/// through a pointer; nothing but the guard's own frames ever does.
#[repr(C, align(16))]
struct Stack([AtomicU64; WORDS]);

static STACK: Stack = Stack([const { AtomicU64::new(0) }; WORDS]);

/// Set while a guard may be running on [`STACK`] (until it is reaped).
static BUSY: AtomicBool = AtomicBool::new(false);
/// ffkit's pid, the command's process group and the grace, for the guard.
static PARENT: AtomicI32 = AtomicI32::new(0);
static PGID: AtomicI32 = AtomicI32::new(0);
static GRACE_NS: AtomicU64 = AtomicU64::new(0);

/// A running guard, ended by [`Guard::end`] (SIGKILL and reap) when the
/// command is over. A guard dropped without being ended (ffkit unwinding
/// from a panic) keeps working, and keeps its stack.
pub(super) struct Guard {
    pid: Pid,
    stopped: bool,
}

/// Starts the guard of process group `pgid`; `None` if it cannot be
/// started (the command then runs unguarded, as before it was spawned).
pub(super) fn spawn(pgid: u32, grace: Duration) -> Option<Guard> {
    let pgid = i32::try_from(pgid).ok()?;
    if BUSY.swap(true, Ordering::SeqCst) {
        return None;
    }
    PARENT.store(
        rustix::process::getpid().as_raw_nonzero().get(),
        Ordering::SeqCst,
    );
    PGID.store(pgid, Ordering::SeqCst);
    GRACE_NS.store(
        u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX),
        Ordering::SeqCst,
    );
    let top = STACK.0.as_ptr().wrapping_add(WORDS).cast_mut();
    // SAFETY: `guard` runs on STACK (16-byte aligned, its end passed as the
    // stack grows down), a static nobody else touches, not reused before
    // the guard is reaped (BUSY); it reads only atomics and makes raw
    // system calls (module comment). rustix has no wrapper for clone with
    // a new stack.
    let pid = unsafe {
        libc::clone(
            guard,
            top.cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    match Pid::from_raw(pid).filter(|_| pid > 0) {
        Some(pid) => Some(Guard {
            pid,
            stopped: false,
        }),
        None => {
            BUSY.store(false, Ordering::SeqCst);
            None
        }
    }
}

impl Guard {
    /// SIGKILLs the guard (our own unreaped child: its pid cannot have been
    /// recycled), without waiting for it to go.
    pub(super) fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = rustix::process::kill_process(self.pid, Signal::KILL);
        }
    }

    /// Ends the guard and reaps it; then its stack is free again.
    pub(super) fn end(mut self) {
        self.stop();
        if rustix::process::waitpid(Some(self.pid), WaitOptions::empty()).is_ok() {
            BUSY.store(false, Ordering::SeqCst);
        }
    }
}

/// The guard: lets go of the caller's stdio (so a `$(…)` reading ffkit's
/// output ends with ffkit), waits for ffkit to exit, then stops the group.
/// Raw system calls only (see the module's comment).
extern "C" fn guard(_: *mut libc::c_void) -> libc::c_int {
    if let Ok(null) = rustix::fs::open(
        c"/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    let parent = Pid::from_raw(PARENT.load(Ordering::SeqCst));
    let ours = || parent.is_some() && rustix::process::getppid() == parent;
    // ffkit's pidfd, opened by pid: it is ffkit's only if ffkit is still
    // our parent after the open (a dead ffkit's pid may be anyone's now).
    let pidfd = parent.and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok());
    match pidfd {
        Some(fd) if ours() => loop {
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, None) {
                Err(rustix::io::Errno::INTR) => continue,
                _ => break,
            }
        },
        // No pidfd (a kernel before 5.3): look at the parent now and then.
        None => {
            while ours() {
                nap(Duration::from_millis(100));
            }
        }
        // ffkit is already gone.
        Some(_) => {}
    }
    if let Some(p) = Pid::from_raw(PGID.load(Ordering::SeqCst)) {
        let _ = rustix::process::kill_process_group(p, Signal::TERM);
        // The grace in steps of 50 ms, counted rather than timed (no clock
        // call); a step cut short only shortens it.
        let step = Duration::from_millis(50);
        let mut left = Duration::from_nanos(GRACE_NS.load(Ordering::SeqCst));
        while !left.is_zero() && rustix::process::test_kill_process_group(p).is_ok() {
            let d = left.min(step);
            nap(d);
            left -= d;
        }
        let _ = rustix::process::kill_process_group(p, Signal::KILL);
    }
    // Back in libc's clone stub, which ends this process with the exit
    // system call, running nothing of ffkit's.
    0
}

/// Sleeps `d` (under a second), by the raw system call.
fn nap(d: Duration) {
    let _ = rustix::thread::nanosleep(&rustix::thread::Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(d.subsec_nanos()),
    });
}
