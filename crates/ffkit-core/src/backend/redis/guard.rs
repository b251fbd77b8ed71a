//! Command mode's guard: a process that stops the command's process group
//! (SIGTERM, then SIGKILL after a grace) if ffkit dies while the command
//! runs, since nobody renews the lease then (docs/redis.md, "Command mode").
//!
//! **One guard per process, started early, armed per command.** The guard
//! is started while the first acquisition is on its way to the server
//! ([`start`], called between sending the request and reading its reply),
//! so its creation costs the lock round nothing but time the round spends
//! waiting anyway. [`arm`] hands it the command's process group once the
//! command runs; [`Armed::disarm`] takes it back once the command has
//! exited (before it is reaped: until then its pid, and so its group's
//! number, cannot be reused). The guard is never killed or waited for:
//! it waits for ffkit to exit, then stops the group if one is armed, and
//! exits itself — a few microseconds after ffkit, as an orphan that init
//! (or the nearest subreaper) reaps, like a named lock's holder. Before,
//! ffkit SIGKILLed and reaped it after every command: a wait for another
//! process to die, on the critical path of every lock round
//! (BENCHMARKS.md, "Issue 24's lock round, fourth pass").
//!
//! It is started with `clone(CLONE_VM)`, not `fork`: it shares ffkit's
//! memory instead of copying its page tables. The price is that the guard
//! must not touch anything ffkit may be using at the same time: it runs on
//! a stack of its own ([`STACK`], a static that no Rust code reads or
//! writes), reads only atomics, allocates nothing, and makes only raw
//! system calls through rustix (no libc call, whose errno is ffkit's).
//! Without `CLONE_THREAD` it is a process of its own: the memory stays
//! mapped for it when ffkit dies, and ffkit's descriptor table and signal
//! dispositions are copies. It starts with every signal blocked (ffkit
//! blocks them around the `clone`), so a SIGTERM or SIGHUP sent to ffkit's
//! whole process group cannot take it away; and it moves to a process group
//! of its own first thing, so a SIGKILL of that group cannot either.
//!
//! The guard watches ffkit through a pidfd it opens itself, of its parent:
//! if ffkit died before that, the guard has been re-parented, which the
//! `getppid` after the open shows, and it acts at once.
//!
//! The one `unsafe` block is the `clone`, which no safe crate wraps.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow};
use rustix::process::{Pid, PidfdFlags, Signal};

/// The guard's stack, in words: far more than its few frames need.
const WORDS: usize = (64 << 10) / 8;

/// The guard's stack: in `.bss` (no page is touched until the guard uses
/// it), 16-byte aligned. Atomics only so that a static may be written
/// through a pointer; nothing but the guard's own frames ever does.
#[repr(C, align(16))]
struct Stack([AtomicU64; WORDS]);

static STACK: Stack = Stack([const { AtomicU64::new(0) }; WORDS]);

/// The pid of the process whose guard runs on [`STACK`] (0: none yet).
/// A process forked from it (which shares none of its memory) sees a
/// pid that is not its own and has no guard.
static PARENT: AtomicI32 = AtomicI32::new(0);
/// The armed process group (0: none) and its grace, for the guard.
static PGID: AtomicI32 = AtomicI32::new(0);
static GRACE_NS: AtomicU64 = AtomicU64::new(0);

fn own_pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// Starts this process's guard, unless it has one: `false` if it cannot
/// be started (a command run then is unguarded, as if ffkit could not
/// die). Disarmed until [`arm`].
pub(super) fn start() -> bool {
    let me = own_pid();
    if PARENT.load(Ordering::SeqCst) == me {
        return true;
    }
    PGID.store(0, Ordering::SeqCst);
    PARENT.store(me, Ordering::SeqCst);
    // Every signal blocked while the guard is created: it inherits the
    // mask, and keeps it.
    let Ok(old) = SigSet::all().thread_swap_mask(SigmaskHow::SIG_SETMASK) else {
        PARENT.store(0, Ordering::SeqCst);
        return false;
    };
    let top = STACK.0.as_ptr().wrapping_add(WORDS).cast_mut();
    // SAFETY: `guard` runs on STACK (16-byte aligned, its end passed as the
    // stack grows down), a static nobody else touches, used by one guard
    // per process for the life of the process (PARENT); it reads only
    // atomics and makes raw system calls (module comment). rustix has no
    // wrapper for clone with a new stack.
    let pid = unsafe {
        libc::clone(
            guard,
            top.cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    let _ = old.thread_set_mask();
    if pid <= 0 {
        PARENT.store(0, Ordering::SeqCst);
        return false;
    }
    true
}

/// A command's group the guard stops if this process dies, until
/// [`Armed::disarm`].
pub(super) struct Armed(());

/// Arms the guard with the command's process group `pgid` and the grace
/// between SIGTERM and SIGKILL; `None` if this process has no guard or it
/// is armed already (one command at a time).
pub(super) fn arm(pgid: u32, grace: Duration) -> Option<Armed> {
    let pgid = i32::try_from(pgid).ok().filter(|&p| p > 0)?;
    if PARENT.load(Ordering::SeqCst) != own_pid() {
        return None;
    }
    GRACE_NS.store(
        u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX),
        Ordering::SeqCst,
    );
    PGID.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
        .ok()
        .map(|_| Armed(()))
}

impl Armed {
    /// The command is over (call before reaping it): the guard no longer
    /// stops its group.
    pub(super) fn disarm(self) {
        PGID.store(0, Ordering::SeqCst);
    }
}

/// The guard: lets go of the caller's stdio (so a `$(…)` reading ffkit's
/// output ends with ffkit), waits for ffkit to exit, then stops the armed
/// group, if any. Raw system calls only (see the module's comment).
extern "C" fn guard(_: *mut libc::c_void) -> libc::c_int {
    // A group of its own: a SIGKILL of ffkit's whole process group (`kill
    // -9 %1`, a CI runner ending a job) must not take the guard with ffkit,
    // or the command (in its own group) would run on past the lease.
    let _ = rustix::process::setpgid(None, None);
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
    // ffkit is gone: whatever it armed last is what it left running.
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
