//! Command mode's guard: a process that stops the command's process group
//! (SIGTERM, then SIGKILL after a grace) if ffkit dies while the command
//! runs, since nobody renews the lease then (docs/redis.md, "Command mode").
//!
//! **One guard per process, started early, armed per command.** The guard
//! is started while the first acquisition is on its way to the server
//! ([`start`], called between sending the request and reading its reply),
//! so its creation costs the lock round nothing but time the round spends
//! waiting anyway; ffkit then puts it in a process group of its own
//! (`setpgid(guard, guard)`, allowed for a child that has not exec'd).
//! The command is spawned *into that group*, with the guard armed with it
//! before the spawn ([`arm_own`]): no instant leaves the command
//! unguarded. (Before, the guard was armed with the command's own group
//! after the spawn returned; a SIGKILL of ffkit in between left the
//! command running past its lease, issue 24.) While the guard lives, its
//! group's number cannot be anyone else's. [`Armed::disarm`] takes the
//! group back once the command has exited. Without a known group (no
//! guard), the command gets a group of its own, armed once it runs, and
//! disarmed before it is reaped (until then its pid, and so its group's
//! number, cannot be reused). Sharing the group is harmless to the guard:
//! every signal but SIGKILL is blocked in it, so ffkit's relay and the
//! terminal's signals to the group leave it alone; a SIGKILL of the group
//! ends it too, which is why its own comes last, and why ffkit, when it
//! SIGKILLs the group (a lost lease), forgets and reaps it ([`killed`]). The guard is never killed or waited for:
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
//! whole process group cannot take it away; and it is in a process group
//! of its own (ffkit sets it, and the guard too, first thing, whichever
//! runs first), so a SIGKILL of ffkit's group cannot either.
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
/// The guard's own process group (its pid), once ffkit has put it there
/// (0: no guard, or its group is not known to exist yet).
static GROUP: AtomicI32 = AtomicI32::new(0);
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
    GROUP.store(0, Ordering::SeqCst);
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
    let Some(pid) = Pid::from_raw(pid) else {
        PARENT.store(0, Ordering::SeqCst);
        return false;
    };
    // The guard's group exists before this returns, whether or not the
    // guard has run yet: a parent may set the group of a child that has not
    // exec'd (and the guard never does). The guard's own setpgid is then a
    // no-op. If this fails, the command gets a group of its own instead.
    if rustix::process::setpgid(Some(pid), Some(pid)).is_ok() {
        GROUP.store(pid.as_raw_nonzero().get(), Ordering::SeqCst);
    }
    true
}

/// The guard's process group, if this process has a guard whose group is
/// known to exist.
fn group() -> Option<u32> {
    if PARENT.load(Ordering::SeqCst) != own_pid() {
        return None;
    }
    u32::try_from(GROUP.load(Ordering::SeqCst))
        .ok()
        .filter(|&g| g > 0)
}

/// Arms the guard with its own process group, before the command is
/// started in that group, so that no instant leaves the command unguarded:
/// the group, or `None` if there is no guard with a known group (or it is
/// armed already).
pub(super) fn arm_own(grace: Duration) -> Option<(u32, Armed)> {
    let g = group()?;
    arm(g, grace).map(|a| (g, a))
}

/// This process has just SIGKILLed the guard's group (a lost lease), and
/// so the guard: forgets it (a later [`start`] starts another) and reaps
/// it, our own child, killed, so the wait is short.
pub(super) fn killed() {
    let Some(g) = group().and_then(|g| Pid::from_raw(g as i32)) else {
        return;
    };
    PGID.store(0, Ordering::SeqCst);
    GROUP.store(0, Ordering::SeqCst);
    PARENT.store(0, Ordering::SeqCst);
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitpid(Some(g), rustix::process::WaitOptions::empty())
    {}
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
        // call); a step cut short only shortens it. It ends early when the
        // group is empty, which a group of the guard's own (the command's,
        // normally) never is: the whole grace then. The SIGTERM stays
        // pending here (blocked); the SIGKILL ends the guard with the rest.
        let own = p.as_raw_nonzero().get() == GROUP.load(Ordering::SeqCst);
        let step = Duration::from_millis(50);
        let mut left = Duration::from_nanos(GRACE_NS.load(Ordering::SeqCst));
        while !left.is_zero() && (own || rustix::process::test_kill_process_group(p).is_ok()) {
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
