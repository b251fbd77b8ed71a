//! flock(2) and OFD locks that wait in the kernel, with a monotonic
//! deadline: [`lock_fd`] is the one wait of the crate (named locks, fd
//! mode, the flock persona, the cache lock, cache-run's per-key lock and
//! the bash builtin).
//!
//! A free lock costs one non-blocking lock call and nothing else: no
//! process, no signal set-up, no timer. Only when the lock is held does a
//! helper child, forked with the caller's descriptor, block in flock(2) (or
//! `F_OFD_SETLKW`) on the shared open file description, so the kernel
//! hands the lock over the moment it is released (no polling), and the lock
//! the child gets is the caller's. The caller waits for the child's answer
//! in poll(2) with the deadline as its timeout, and kills and reaps the
//! child on the deadline or an interruption. No SIGALRM, no interval timer
//! and no signal handler is installed, so the same wait serves a process
//! of ours and the bash builtin inside someone else's process.
//!
//! We call rustix's `flock` rather than `File::lock` because fd mode locks a
//! descriptor we do not own.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use rustix::fs::FlockOperation;

use super::{Acquired, Denied, Kind, Wait, holder, would_block};

/// Which kernel lock: flock(2) on the whole file (the default), or an open
/// file description lock (fcntl `F_OFD_SETLK`, flock(1)'s `--fcntl`) on the
/// byte range `start`, `len` (0: to the end of the file, growing with it).
/// Both belong to the open file description, so both are inherited by
/// children and dropped when the last descriptor closes; they do not
/// conflict with each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    #[default]
    Flock,
    Ofd {
        start: u64,
        len: u64,
    },
}

/// The caller's descriptor number as a borrowed descriptor
/// ([`crate::rawfd`], the one place that makes one).
pub use crate::rawfd::borrow;

/// One lock operation: `kind` (None: unlock), blocking or not.
fn op(fd: RawFd, method: Method, kind: Option<Kind>, block: bool) -> io::Result<()> {
    let b = borrow(fd)?;
    match method {
        Method::Flock => {
            let o = match (kind, block) {
                (Some(Kind::Shared), true) => FlockOperation::LockShared,
                (Some(Kind::Shared), false) => FlockOperation::NonBlockingLockShared,
                (Some(Kind::Exclusive), true) => FlockOperation::LockExclusive,
                (Some(Kind::Exclusive), false) => FlockOperation::NonBlockingLockExclusive,
                (None, _) => FlockOperation::Unlock,
            };
            rustix::fs::flock(b, o).map_err(io::Error::from)
        }
        Method::Ofd { start, len } => ofd(b, kind, block, start, len),
    }
}

/// fcntl(F_OFD_SETLK[W]) on a byte range. Through nix: rustix's
/// `fcntl_lock` takes only classic (per-process) whole-file locks, which a
/// waiting child would take for itself, not for the caller, and has no
/// GETLK.
fn ofd(
    fd: BorrowedFd<'_>,
    kind: Option<Kind>,
    block: bool,
    start: u64,
    len: u64,
) -> io::Result<()> {
    use nix::fcntl::FcntlArg;
    let too_big = |v: u64| i64::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let fl = flock(
        match kind {
            Some(Kind::Shared) => libc::F_RDLCK,
            Some(Kind::Exclusive) => libc::F_WRLCK,
            None => libc::F_UNLCK,
        },
        too_big(start)?,
        too_big(len)?,
    );
    let arg = if block && kind.is_some() {
        FcntlArg::F_OFD_SETLKW(&fl)
    } else {
        FcntlArg::F_OFD_SETLK(&fl)
    };
    nix::fcntl::fcntl(fd, arg).map(drop).map_err(errno)
}

/// A struct flock of `l_type` on `len` bytes from `start` (0: to the end of
/// the file, however long it grows).
fn flock(l_type: libc::c_int, start: i64, len: i64) -> libc::flock {
    libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: len,
        // Must be 0 for OFD locks.
        l_pid: 0,
    }
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Whether another open file description holds a fcntl-family lock (OFD,
/// as `--fcntl` takes, or a classic POSIX lock) on any byte of `fd`'s file,
/// and of which kind: `F_OFD_GETLK` reports a lock that would conflict
/// with the one asked for. A shared request conflicts only with an
/// exclusive holder; an exclusive one with any.
fn fcntl_holder(fd: BorrowedFd<'_>) -> io::Result<Option<Kind>> {
    for (ask, found) in [
        (libc::F_RDLCK, Kind::Exclusive),
        (libc::F_WRLCK, Kind::Shared),
    ] {
        let mut fl = flock(ask, 0, 0);
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl)).map_err(errno)?;
        if i32::from(fl.l_type) != libc::F_UNLCK {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn is_eintr(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINTR)
}

/// [`lock_fd`] as a plain `flock` with a deadline, for the core's own lock
/// files (the cache dir, cache-run's keys, the output store): nothing
/// interrupts the wait and nobody is told of it. `Ok(false)` when `until`
/// passed first.
pub fn flock_until(fd: RawFd, kind: Kind, until: Wait) -> io::Result<bool> {
    lock_fd(fd, kind, Method::Flock, until, &mut || false, &mut || {}).map(|got| got.is_ok())
}

/// Takes `kind` on `fd` by `method`, waiting until `wait` says stop: a
/// non-blocking try, then a wait **in the kernel** by a helper child
/// process. The child is forked with the caller's descriptor, so it shares
/// the open file description, and blocks in flock(2) (or `F_OFD_SETLKW`)
/// on it: the lock it gets belongs to that description, hence to the
/// caller, the moment the holder lets go. The caller meanwhile waits on a
/// pipe from the child, in slices of at most [`POLL_SLICE`], asking
/// `interrupted` between them (a signal also cuts a slice short). On the
/// deadline or an interruption the child is killed (SIGKILL) and reaped
/// before this returns, so no waiter outlives the call; a lock the child
/// got just before is kept on a timeout (it came in time) and dropped on an
/// interruption. The child dies with the caller (`PR_SET_PDEATHSIG`) and
/// blocks every signal (no handler of the caller's runs in it; only our
/// SIGKILL ends it early), and SIGCHLD is blocked in the caller while it
/// lives (so a shell's own SIGCHLD handler cannot reap it first; its trap
/// runs after the wait).
/// `on_wait` runs once, just before the child starts, so the caller can
/// say whom it waits for. `Denied::Interrupted` when `interrupted` said
/// yes; a timed-out, busy or interrupted call never holds the lock
/// afterwards. Classic POSIX (per-process) locks cannot be taken this way;
/// only [`Method::Flock`] and [`Method::Ofd`] exist here.
pub fn lock_fd(
    fd: RawFd,
    kind: Kind,
    method: Method,
    wait: Wait,
    interrupted: &mut dyn FnMut() -> bool,
    on_wait: &mut dyn FnMut(),
) -> io::Result<Acquired> {
    if try_lock_fd_with(fd, kind, method)? {
        return Ok(Ok(Duration::ZERO));
    }
    let start = Instant::now();
    let deadline = match wait {
        Wait::NonBlocking => return Ok(Err(Denied::Busy)),
        Wait::Until(d) if d <= start => return Ok(Err(Denied::TimedOut)),
        Wait::Until(d) => Some(d),
        Wait::Forever => None,
    };
    if interrupted() {
        return Ok(Err(Denied::Interrupted));
    }
    on_wait();
    let _chld = SigchldBlocked::new();
    let waiter = Waiter::start(fd, kind, method)?;
    loop {
        let slice = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return match waiter.stop()? {
                        Some(()) => Ok(Ok(start.elapsed())),
                        None => Ok(Err(Denied::TimedOut)),
                    };
                }
                (d - now).min(POLL_SLICE)
            }
            None => POLL_SLICE,
        };
        if let Some(r) = waiter.wait(slice)? {
            return r.map(|()| Ok(start.elapsed()));
        }
        if interrupted() {
            if waiter.stop()?.is_some() {
                let _ = op(fd, method, None, false);
            }
            return Ok(Err(Denied::Interrupted));
        }
    }
}

/// The longest single wait of [`lock_fd`] between two looks at
/// `interrupted`: a signal that lands just before a wait starts (so it
/// cannot cut it short) is still seen within this long. The lock itself is
/// handed over by the kernel at once, whatever the slice.
pub const POLL_SLICE: Duration = Duration::from_millis(50);

/// SIGCHLD blocked in this thread while it lives: a caller running inside
/// a shell (the builtin) must not let the shell's SIGCHLD handler reap a
/// child of ours first.
pub(crate) struct SigchldBlocked(rustix::process::Pid, SigSet);

impl SigchldBlocked {
    pub(crate) fn new() -> Self {
        let mut chld = SigSet::empty();
        chld.add(Signal::SIGCHLD);
        let mut old = SigSet::empty();
        // Cannot fail with a valid `how`.
        let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&chld), Some(&mut old));
        SigchldBlocked(rustix::process::getpid(), old)
    }
}

impl Drop for SigchldBlocked {
    fn drop(&mut self) {
        // A forked child never returns through here (it `_exit`s).
        if rustix::process::getpid() == self.0 {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.1), None);
        }
    }
}

/// The body of [`Waiter`]'s child, between fork and `_exit`: raw system
/// calls only, no allocation (it may be a copy of a process with other
/// threads). Every signal is blocked, so no handler of the caller's (a
/// shell's) ever runs in it; it ends by itself once it has answered, or by
/// SIGKILL: from the caller, or on the caller's death (`PR_SET_PDEATHSIG`).
/// Returns its exit status.
fn waiter_child(
    fd: RawFd,
    kind: Kind,
    method: Method,
    parent: rustix::process::Pid,
    to: &std::os::fd::OwnedFd,
) -> i32 {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None);
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if rustix::process::getppid() != Some(parent) {
        return 3;
    }
    let msg: [u8; 5] = loop {
        match op(fd, method, Some(kind), true) {
            Ok(()) => break [b'1', 0, 0, 0, 0],
            Err(e) if is_eintr(&e) => continue,
            Err(e) => {
                let n = e.raw_os_error().unwrap_or(libc::EIO).to_ne_bytes();
                break [b'e', n[0], n[1], n[2], n[3]];
            }
        }
    };
    let _ = rustix::io::write(to, &msg);
    0
}

/// The helper child of [`lock_fd`], blocked in the kernel on the
/// caller's open file description, and the read end of its pipe: one byte
/// `1` when it has the lock, or `e` and the errno of its failure.
struct Waiter {
    pid: rustix::process::Pid,
    from: std::os::fd::OwnedFd,
    reaped: std::cell::Cell<bool>,
}

impl Waiter {
    fn start(fd: RawFd, kind: Kind, method: Method) -> io::Result<Waiter> {
        let (from, to) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let parent = rustix::process::getpid();
        // SAFETY: the child runs only `waiter_child`, which makes raw system
        // calls and allocates nothing (see there), then _exit(2)s: it
        // touches no lock, allocator or Rust runtime state another thread
        // may have held at the fork, so forking a process with other
        // threads (a test harness) is sound. No safe fork exists.
        let pid = unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(waiter_child(fd, kind, method, parent, &to));
            }
            pid
        };
        let Some(pid) = rustix::process::Pid::from_raw(pid) else {
            return Err(io::Error::last_os_error());
        };
        drop(to);
        Ok(Waiter {
            pid,
            from,
            reaped: std::cell::Cell::new(false),
        })
    }

    /// Waits up to `slice` for the child's answer: `Some(Ok(()))` when it
    /// has the lock, `Some(Err)` when it failed, `None` when nothing came
    /// yet (or a signal cut the wait short).
    fn wait(&self, slice: Duration) -> io::Result<Option<io::Result<()>>> {
        use rustix::event::{PollFd, PollFlags, poll};
        let ts = rustix::event::Timespec {
            tv_sec: slice.as_secs() as i64,
            tv_nsec: i64::from(slice.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.from, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let got = self.answer()?;
        self.reap();
        Ok(Some(match got {
            Some(r) => r,
            None => Err(io::Error::other(
                "the lock's waiting helper process ended without an answer",
            )),
        }))
    }

    /// The child's message, once it has written it or ended.
    fn answer(&self) -> io::Result<Option<io::Result<()>>> {
        let mut buf = [0u8; 5];
        let mut have = 0;
        while have < buf.len() {
            match rustix::io::read(&self.from, &mut buf[have..]) {
                Ok(0) => break,
                Ok(n) => have += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            if buf[0] == b'1' {
                return Ok(Some(Ok(())));
            }
        }
        Ok(match (have, buf[0]) {
            (5, b'e') => Some(Err(io::Error::from_raw_os_error(i32::from_ne_bytes([
                buf[1], buf[2], buf[3], buf[4],
            ])))),
            _ => None,
        })
    }

    /// Kills and reaps the child; `Some(())` when it had got the lock first.
    fn stop(&self) -> io::Result<Option<()>> {
        // Our own child, not yet reaped (so the pid is not reused).
        let _ = rustix::process::kill_process(self.pid, rustix::process::Signal::KILL);
        self.reap();
        Ok(match self.answer()? {
            Some(Ok(())) => Some(()),
            _ => None,
        })
    }

    fn reap(&self) {
        if self.reaped.replace(true) {
            return;
        }
        // Waits for our own child only.
        while let Err(rustix::io::Errno::INTR) =
            rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty())
        {
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.reaped.get() {
            let _ = self.stop();
        }
    }
}

/// Drops whatever lock `fd`'s open file description holds by `method`.
pub fn unlock_fd_with(fd: RawFd, method: Method) -> io::Result<()> {
    op(fd, method, None, false)
}

/// Drops the flock(2) lock of `fd`'s open file description.
pub fn unlock_fd(fd: RawFd) -> io::Result<()> {
    unlock_fd_with(fd, Method::Flock)
}

/// Tries `kind` without waiting; `Ok(false)` when held by someone else.
pub(crate) fn try_lock_fd(fd: RawFd, kind: Kind) -> io::Result<bool> {
    try_lock_fd_with(fd, kind, Method::Flock)
}

/// [`try_lock_fd`] by `method`; an EINTR is tried again.
pub(crate) fn try_lock_fd_with(fd: RawFd, kind: Kind, method: Method) -> io::Result<bool> {
    loop {
        match op(fd, method, Some(kind), false) {
            Ok(()) => return Ok(true),
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if is_eintr(&e) => {}
            Err(e) => return Err(e),
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
pub(crate) enum Probe {
    Free,
    /// Held; `exclusive` false means one or more shared holders.
    Held {
        exclusive: bool,
    },
}

/// Asks the kernel, not any record: a shared flock(2) probe fails only
/// against an exclusive holder; fcntl-family locks, which flock(2) does not
/// see, are asked for apart; then `/proc/locks` tells shared flock holders
/// from none. The probe never creates the file.
pub(crate) fn probe_file(f: &File) -> io::Result<Probe> {
    probe_reading(f, |_| Ok(())).map(|(p, _)| p)
}

/// [`probe_file`], calling `read` on the file while the probe's shared
/// lock is held: no exclusive holder can be writing then, so what it reads
/// of an ffkit record is whole. `/proc/locks` is read under that lock too:
/// only shared holders can sit beside it, so any line of another pid is
/// one (read after the unlock, the line of a holder that took the free
/// lock exclusively meanwhile made a free lock "held (shared)").
pub(crate) fn probe_reading<T>(
    f: &File,
    read: impl FnOnce(&File) -> io::Result<T>,
) -> io::Result<(Probe, Option<T>)> {
    if !try_lock_fd(f.as_raw_fd(), Kind::Shared)? {
        return Ok((Probe::Held { exclusive: true }, None));
    }
    let under = (|| {
        let got = read(f)?;
        let m = f.metadata()?;
        let me = std::process::id();
        let others = !holder::proc_locks_pids(m.dev(), m.ino(), Some(me)).is_empty();
        Ok::<_, io::Error>((got, others))
    })();
    unlock_fd(f.as_raw_fd())?;
    let (got, others) = under?;
    if let Some(kind) = fcntl_holder(f.as_fd())? {
        return Ok((
            Probe::Held {
                exclusive: kind == Kind::Exclusive,
            },
            Some(got),
        ));
    }
    Ok((
        if others {
            Probe::Held { exclusive: false }
        } else {
            Probe::Free
        },
        Some(got),
    ))
}

/// Opens an existing lock file read-only without following a symlink.
pub(crate) fn open_lock_file_existing(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two open file descriptions of one file: flock(2) makes them conflict
    /// inside one process, so the in-process wait can be tested here.
    fn two_opens() -> (tempfile::TempDir, File, File) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("L");
        let a = open_lock_file(&p, true, 0o600).unwrap();
        let b = open_lock_file(&p, true, 0o600).unwrap();
        (d, a, b)
    }

    #[test]
    fn in_process_wait_stops_when_the_caller_says_interrupted_and_holds_nothing() {
        let (_d, a, b) = two_opens();
        assert!(try_lock_fd(a.as_raw_fd(), Kind::Exclusive).unwrap());
        let mut asked = 0;
        let mut waited = 0;
        let got = lock_fd(
            b.as_raw_fd(),
            Kind::Exclusive,
            Method::Flock,
            Wait::Forever,
            &mut || {
                asked += 1;
                asked > 3
            },
            &mut || waited += 1,
        )
        .unwrap();
        assert_eq!(got, Err(Denied::Interrupted));
        assert_eq!(asked, 4, "asked between every slice");
        assert_eq!(waited, 1, "the waiting report comes once");
        unlock_fd(a.as_raw_fd()).unwrap();
        // The killed helper left nothing behind on b's description.
        assert!(try_lock_fd(a.as_raw_fd(), Kind::Exclusive).unwrap());
    }

    /// The wait is in the kernel: a lock freed by another thread is handed
    /// over at once, far within one slice of a schedule the old polled wait
    /// would have slept (it slept up to LOCK_BACKOFF_MAX between tries).
    #[test]
    fn in_process_wait_times_out_and_takes_a_freed_lock_at_once() {
        let (_d, a, b) = two_opens();
        assert!(try_lock_fd(a.as_raw_fd(), Kind::Exclusive).unwrap());
        let soon = Instant::now() + Duration::from_millis(30);
        let got = lock_fd(
            b.as_raw_fd(),
            Kind::Exclusive,
            Method::Flock,
            Wait::Until(soon),
            &mut || false,
            &mut || {},
        )
        .unwrap();
        assert_eq!(got, Err(Denied::TimedOut));
        assert!(Instant::now() >= soon);
        assert!(try_lock_fd(b.as_raw_fd(), Kind::Shared).is_ok_and(|g| !g));
        let fd = a.as_raw_fd();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let at = Instant::now();
            unlock_fd(fd).unwrap();
            tx.send(at).unwrap();
        });
        let got = lock_fd(
            b.as_raw_fd(),
            Kind::Exclusive,
            Method::Flock,
            Wait::Until(Instant::now() + Duration::from_secs(60)),
            &mut || false,
            &mut || {},
        )
        .unwrap();
        let done = Instant::now();
        t.join().unwrap();
        assert!(got.is_ok());
        // Handed over after the holder let go (the latency itself is
        // scripts/bench-handover.sh's business, not a timed assertion).
        assert!(done >= rx.recv().unwrap());
        assert!(!try_lock_fd(a.as_raw_fd(), Kind::Exclusive).unwrap());
    }

    #[test]
    fn ofd_ranges_conflict_only_where_they_overlap() {
        let (_d, a, b) = two_opens();
        let r = |start, len| Method::Ofd { start, len };
        let ok = |f: &File, m| {
            lock_fd(
                f.as_raw_fd(),
                Kind::Exclusive,
                m,
                Wait::NonBlocking,
                &mut || false,
                &mut || {},
            )
            .unwrap()
            .is_ok()
        };
        assert!(ok(&a, r(0, 10)));
        assert!(!ok(&b, r(5, 1)), "overlap");
        assert!(ok(&b, r(10, 5)), "disjoint");
        assert!(
            ok(&b, Method::Flock),
            "flock(2) is independent of OFD locks"
        );
        unlock_fd_with(a.as_raw_fd(), r(0, 0)).unwrap();
        assert!(ok(&b, r(5, 1)));
    }
}
