//! The signals command mode (`lock-acquire NAME -- CMD` on Redis) waits
//! for: the terminal's and the system's INT, QUIT, TERM and HUP, passed on
//! to the command's process group, and CHLD, its end.
//!
//! They are caught by a handler that writes the signal's number to a pipe
//! (the self-pipe trick), not blocked, while the command starts: std
//! starts it with `posix_spawn` (a `vfork`-like clone, about a quarter of a
//! millisecond less per lock round than a `fork`, BENCHMARKS.md "Redis
//! backend"), which gives it an empty signal mask, and glibc's
//! `posix_spawn` resets every caught signal to its default in the child
//! before it runs the command (`exec` would anyway): the command starts
//! with an empty mask and the caller's other dispositions. A signal caught
//! while the command starts is in the pipe, so none is lost in that
//! window. (A spawn of ffkit's own that resets only these signals, not
//! glibc's walk over all 64, saved ~3% of a round for nine more `unsafe`
//! blocks and was not kept: BENCHMARKS.md, "Issue 24's lock round, sixth
//! pass".) That holds for the shipped musl build; a glibc build forks
//! instead (`fsutil::as_callers_command`: glibc's `posix_spawn` leaves its
//! internal signals 32 and 33 ignored in the child), and so does any build
//! whose caller ignores SIGPIPE (std resets it; a `pre_exec` sets it back).
//! The forked child keeps the handler until its exec: a signal sent to it
//! in that instant is written to the pipe and passed on to the group it is
//! in, which is where it was going.
//!
//! Once the command runs, [`Relay::block`] blocks them (and SIGTTOU, so
//! handing the terminal back from the background cannot stop ffkit) except
//! while [`Relay::wait`] waits: no Redis request of a renewal is ever
//! interrupted (a socket read with a timeout is never restarted). A signal
//! that arrives at any moment in between is kept pending until the next
//! wait; none is lost and none takes its default action.
//!
//! The masks go through nix's safe calls; the handler is installed (and
//! what was there restored) by the crate's one `sigaction`,
//! [`crate::fsutil::set_action`], which no crate offers safely. The handler
//! writes with rustix's raw system call, which leaves errno alone.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The pipe (read end, write end), made at the first [`Relay::catch`] and
/// kept for the life of the process (close-on-exec, non-blocking), so the
/// handler can reach its write end at any time without a lock.
static PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

/// Set while a [`Relay`] exists: dispositions are process-wide.
static ACTIVE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // A full pipe (the write end is non-blocking) drops the byte: only a
    // flood of the same signals could fill it.
    if let Some((_, w)) = PIPE.get() {
        let _ = rustix::io::write(w, &[u8::try_from(sig).unwrap_or(0)]);
    }
}

/// Caught signals relayed through a pipe; dropping it restores the former
/// dispositions and unblocks them.
pub(super) struct Relay {
    caught: Vec<(Signal, SigAction)>,
    set: SigSet,
    blocked: SigSet,
}

impl Relay {
    /// Catches `sigs` from now on, the mask unchanged (a command spawned
    /// now starts as the caller left it).
    pub(super) fn catch(sigs: &[i32]) -> io::Result<Relay> {
        let mut set = SigSet::empty();
        for &s in sigs {
            set.add(Signal::try_from(s).map_err(io::Error::from)?);
        }
        let mut blocked = set;
        blocked.add(Signal::SIGTTOU);
        // Command mode runs one command; the bash builtin never gets here.
        if ACTIVE.swap(true, Ordering::SeqCst) {
            return Err(io::Error::other(
                "signals are already relayed in this process",
            ));
        }
        let mut relay = Relay {
            caught: Vec::new(),
            set,
            blocked,
        };
        if PIPE.get().is_some() {
            // Left over from an earlier relay in this process: not ours.
            while relay.take().is_some() {}
        } else {
            use rustix::pipe::{PipeFlags, pipe_with};
            let p = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            let _ = PIPE.set(p);
        }
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let sigs: Vec<Signal> = relay.set.iter().collect();
        for sig in sigs {
            let old = crate::fsutil::set_action(sig, &action)?;
            if matches!(old.handler(), SigHandler::SigIgn) && sig != Signal::SIGCHLD {
                // Ignored when ffkit started (`nohup`, a shell's `trap ''
                // HUP`): left ignored, so the command inherits it as a
                // direct start would, and never passed on, as a shell
                // cannot trap a signal ignored on entry. (A signal in the
                // instant it was caught is passed on to a group that
                // ignores it.)
                crate::fsutil::set_action(sig, &old)?;
                relay.set.remove(sig);
                relay.blocked.remove(sig);
                continue;
            }
            relay.caught.push((sig, old));
        }
        Ok(relay)
    }

    /// Blocks the caught signals and SIGTTOU until [`Relay::wait`] or the
    /// drop (call once the command is started).
    pub(super) fn block(&self) {
        let _ = self.blocked.thread_block();
    }

    /// Waits up to `d` for a caught signal: its number, or `None` when none
    /// came (or a wait was cut short: the caller looks again).
    pub(super) fn wait(&self, d: Duration) -> Option<i32> {
        if let Some(sig) = self.take() {
            return Some(sig);
        }
        let (r, _) = PIPE.get()?;
        let ts = rustix::event::Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        };
        // A signal that comes between the unblock and the poll is in the
        // pipe: poll returns.
        let _ = self.set.thread_unblock();
        let mut fds = [rustix::event::PollFd::new(r, rustix::event::PollFlags::IN)];
        let _ = rustix::event::poll(&mut fds, Some(&ts));
        let _ = self.set.thread_block();
        self.take()
    }

    /// One signal number from the pipe, if any.
    fn take(&self) -> Option<i32> {
        let (r, _) = PIPE.get()?;
        let mut b = [0u8; 1];
        match rustix::io::read(r.as_fd(), &mut b) {
            Ok(1) => Some(i32::from(b[0])),
            _ => None,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for (sig, old) in &self.caught {
            let _ = crate::fsutil::set_action(*sig, old);
        }
        let _ = self.blocked.thread_unblock();
        ACTIVE.store(false, Ordering::SeqCst);
    }
}
