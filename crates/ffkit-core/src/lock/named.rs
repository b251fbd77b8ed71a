//! Named locks held across separate commands: `lock-acquire NAME` …
//! `lock-release NAME`, with no descriptor for the caller to keep.
//!
//! `lock-acquire` takes the kernel lock, then starts a tiny holder process
//! and exits at once: the ffkit binary re-executed ([`HOLDER_ARG`],
//! [`serve_holder`]) with the locked descriptor and a pidfd of the owner
//! inherited (flock belongs to the open file description, so both processes
//! share the lock), as cache-run starts its detached refresh. The holder
//! starts in a new session (a Ctrl-C in the owner's terminal does not drop
//! the lock), with stdio on /dev/null and no other descriptor of the
//! caller's (so `$(lock-acquire …)` and pipes see EOF), and sleeps in
//! poll(2) on the pidfd: when the owner dies the holder exits and the
//! kernel frees the lock — at once, no polling, no cleanup. `lock-release` verifies the caller owns the lock, signals the
//! holder through a pidfd (so a recycled pid can never be hit) and waits for
//! it to exit. Kernels without pidfd (before 5.3) fall back to checking the
//! owner every 100 ms.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
#[cfg(feature = "redis")]
use std::os::unix::io::RawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};

use super::holder::{self, Holder, KIND_FD, KIND_NAMED};
use super::kernel::{self, Probe};
use super::{Acquired, Kind, Wait};
use crate::error::{Error, Result};
use crate::fsutil::FILE_MODE;

fn pid_of(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    rustix::process::pidfd_open(pid_of(pid)?, PidfdFlags::empty()).map_err(io::Error::from)
}

fn pidfd_signal(pidfd: &OwnedFd, sig: Signal) -> io::Result<()> {
    rustix::process::pidfd_send_signal(pidfd, sig).map_err(io::Error::from)
}

/// Waits until the process behind `pidfd` exits, up to `timeout` (None:
/// forever). Returns whether it exited.
fn wait_pidfd(pidfd: impl AsFd, timeout: Option<Duration>) -> bool {
    let ts = timeout.map(|d| Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    loop {
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
}

/// How the holder learns that the owner died.
enum Watch {
    Pidfd(OwnedFd),
    /// No pidfd support: the owner's pid and start time, checked periodically.
    Poll(u32, Option<u64>),
}

/// A named lock just taken.
pub(crate) struct Taken {
    pub waited: std::time::Duration,
    pub holder_pid: u32,
}

/// Takes the named lock at `path` for `owner` (its pid; the caller's parent
/// by default) and leaves a holder process keeping it until `owner` exits or
/// [`release`] is called. `command` overrides the owner's command line in
/// the record.
pub(crate) fn acquire(
    path: &Path,
    wait: Wait,
    owner: u32,
    command: Option<String>,
    compat: Option<super::compat::Rule>,
    on_wait: &mut dyn FnMut(&File),
) -> Result<std::result::Result<Taken, super::Denied>> {
    let owner_start = holder::start_time(owner);
    // Pin the owner before locking, so an owner that is already gone is an
    // error rather than a lock nobody will ever release.
    let watch = match pidfd_open(owner) {
        Ok(fd) => Watch::Pidfd(fd),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(Error::NotFound(format!(
                "owner pid {owner}: no such process"
            )));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Watch::Poll(owner, owner_start),
        Err(e) => {
            return Err(Error::LockFailed(format!(
                "cannot watch owner pid {owner}: {}",
                crate::error::os_reason(&e)
            )));
        }
    };
    let mut pause = compat.map(|r| super::compat::Pause::new(wait, r.backoff));
    let mut said_waiting = false;
    let (f, waited) = loop {
        let (f, created) = match compat {
            Some(r) => r.open(path, FILE_MODE),
            None => kernel::open_lock_file(path, true, FILE_MODE).map(|f| (f, false)),
        }
        .map_err(|e| Error::io(crate::lock::OPEN_FAILED, path, e))?;
        // The same owner asking again (by name, or through the wrappers'
        // descriptor) would wait for itself until the timeout.
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            let m = f
                .metadata()
                .map_err(|e| Error::io("cannot inspect", path, e))?;
            // 0600 whatever the umask, from the fstat made anyway.
            crate::fsutil::fix_mode_of(&f, m.mode() & 0o7777, FILE_MODE)
                .map_err(|e| Error::io("cannot chmod", path, e))?;
            (m.dev(), m.ino())
        };
        if let Some(rec) = holder::read_from(&f)
            .filter(|r| (r.kind == KIND_NAMED || r.kind == KIND_FD) && r.pid == owner)
            && rec.holds_kernel_lock(dev, ino)
            && !kernel::try_lock_fd(f.as_raw_fd(), Kind::Shared)
                .map_err(|e| Error::io("cannot probe", path, e))?
        {
            return Err(super::already_held(path.display(), owner));
        }
        let got: Acquired = kernel::lock_fd(
            f.as_raw_fd(),
            Kind::Exclusive,
            kernel::Method::Flock,
            pause.as_ref().map_or(wait, super::compat::Pause::wait),
            &mut || false,
            &mut || {
                if !said_waiting {
                    on_wait(&f);
                }
                said_waiting = true;
            },
        )
        .map_err(|e| Error::io("cannot lock", path, e))?;
        let waited = match got {
            Ok(w) => w,
            Err(d) => return Ok(Err(d)),
        };
        let Some(pause) = pause.as_mut() else {
            break (f, waited);
        };
        // The old library's file protocol (`compat`): a file deleted or
        // replaced meanwhile is opened again; one the old library holds is
        // given up (closing `f` drops the lock) and tried again a backoff
        // step later.
        let follow = compat.is_some_and(|r| r.follow);
        match super::compat::check(&f, path, created, follow)
            .map_err(|e| Error::io("cannot inspect", path, e))?
        {
            super::compat::Verdict::Ours => break (f, waited),
            super::compat::Verdict::Replaced => {}
            super::compat::Verdict::OldLibrary(_) => {
                if !said_waiting {
                    on_wait(&f);
                    said_waiting = true;
                }
                drop(f);
                if let Err(d) = pause.sleep(&mut || false) {
                    return Ok(Err(d));
                }
            }
        }
    };
    let mut rec = Holder::new(KIND_NAMED, owner, command);
    rec.start = owner_start;
    let remove = compat.is_some_and(|r| r.follow);
    let mut child = start_holder(&f, &watch, path, remove).map_err(|e| {
        Error::LockFailed(format!(
            "cannot start the holder process: {}",
            crate::error::os_reason(&e)
        ))
    })?;
    // Our copy of the pidfd (the holder has its own) closes here.
    drop(watch);
    let child_pid = child.id();
    rec.holder_pid = Some(child_pid);
    rec.holder_start = holder::start_time(child_pid);
    if let Err(e) = holder::write_to(&f, &rec) {
        // Without its record the lock can be neither shown nor released by
        // name, and the holder would keep it until the owner exits: give it
        // up (the lock belongs to the open file description we share with
        // the holder) and end the holder (our own, unreaped child).
        let _ = kernel::unlock_fd(f.as_raw_fd());
        let _ = child.kill();
        let _ = child.wait();
        let _ = holder::clear(&f, None);
        return Err(Error::io("cannot write holder record", path, e));
    }
    Ok(Ok(Taken {
        waited,
        holder_pid: child_pid,
    }))
}

/// The first argument that makes the ffkit binary a named lock's holder:
/// `ffkit --ffkit-lock-holder LOCK_FD WATCH PATH [remove]`, started by
/// [`acquire`] only ([`serve_holder`] reads it). WATCH is `pidfd:N` (a
/// pidfd of the owner, inherited) or `pid:PID:START` (no pidfd support:
/// the owner's pid and start time, `-` when unknown). PATH is the lock
/// file's path as the lock was taken (absolute): a release finds the pair
/// by it when the path names another file or none any more (its dir moved
/// aside and made again, a symlinked dir's target removed: [`lost_held`]).
/// `remove`: delete PATH when the owner dies (the old library's protocol).
pub const HOLDER_ARG: &str = "--ffkit-lock-holder";

/// Set by the ffkit binary ([`this_binary_serves_holders`]): only then is
/// `/proc/self/exe` a program that understands [`HOLDER_ARG`] (the bash
/// builtin runs inside bash, and hands these forms to the binary).
static BINARY_SERVES_HOLDERS: AtomicBool = AtomicBool::new(false);

/// Says that this process is the ffkit binary, whose entry point hands
/// [`HOLDER_ARG`] to [`serve_holder`]: named locks may start their holder
/// by re-executing it.
pub fn this_binary_serves_holders() {
    BINARY_SERVES_HOLDERS.store(true, Ordering::Relaxed);
}

/// Starts the holder of the lock on `f`: this binary, re-executed as
/// `/proc/self/exe` (the very build running, even if the file on disk was
/// replaced since), inheriting `f` and the owner's pidfd and nothing else
/// of ours or our caller's ([`crate::fsutil::BeforeExec::Holder`]).
fn start_holder(f: &File, watch: &Watch, path: &Path, remove: bool) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    if !BINARY_SERVES_HOLDERS.load(Ordering::Relaxed) {
        return Err(io::Error::other(
            "only the ffkit binary can start a named lock's holder",
        ));
    }
    let lock = f.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("ffkit").arg(HOLDER_ARG).arg(lock.to_string());
    let keep = match watch {
        Watch::Pidfd(fd) => {
            cmd.arg(format!("pidfd:{}", fd.as_raw_fd()));
            [lock, fd.as_raw_fd()]
        }
        Watch::Poll(pid, start) => {
            let start = start.map_or_else(|| "-".to_string(), |s| s.to_string());
            cmd.arg(format!("pid:{pid}:{start}"));
            [lock, lock]
        }
    };
    cmd.arg(absolute(path));
    if remove {
        cmd.arg(REMOVE_ARG);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::fsutil::before_exec(&mut cmd, crate::fsutil::BeforeExec::Holder { keep });
    crate::fsutil::with_callers_mask(|| cmd.spawn())
}

/// [`HOLDER_ARG`]'s last argument: delete PATH when the owner dies.
const REMOVE_ARG: &str = "remove";

/// `path` made absolute against the current dir (as the kernel would
/// resolve it), without resolving symlinks: the same string at acquire
/// and release when the lock dir is the same setting.
fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The holder process ([`HOLDER_ARG`]; `args` are the arguments after it):
/// keeps the inherited lock descriptor open until the owner exits, then
/// writes the free line over the record, as a release does. With
/// `remove` (a NAME's lock file), PATH is deleted instead while the lock is
/// still held, the old library's release ([`super::compat::remove`]), so a
/// dead owner's lock is free for the old library at once too. Its session,
/// signals and descriptors were set up before the exec ([`start_holder`]).
/// The arguments are [`acquire`]'s private protocol, not a user interface.
pub fn serve_holder(args: &[OsString]) -> Result<()> {
    let bad = || {
        Error::Validation(format!(
            "{HOLDER_ARG}: bad arguments (lock-acquire starts the holder; it is not run by hand)"
        ))
    };
    let text = |i: usize| args.get(i).and_then(|a| a.to_str()).ok_or_else(bad);
    let number = |s: &str| s.parse::<i32>().map_err(|_| bad());
    if args.len() > 4 || args.get(3).is_some_and(|a| a != REMOVE_ARG) {
        return Err(bad());
    }
    let lock = kernel::borrow(number(text(0)?)?).map_err(|_| bad())?;
    let remove = args.get(2).filter(|_| args.len() == 4).map(Path::new);
    match text(1)?.split(':').collect::<Vec<_>>().as_slice() {
        ["pidfd", n] => {
            let pidfd = kernel::borrow(number(n)?).map_err(|_| bad())?;
            wait_pidfd(pidfd, None);
        }
        ["pid", pid, start] => {
            let pid = u32::try_from(number(pid)?).map_err(|_| bad())?;
            let start = match *start {
                "-" => None,
                s => Some(s.parse::<u64>().map_err(|_| bad())?),
            };
            while holder::same_process(pid, start) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        _ => return Err(bad()),
    }
    // The owner is gone: leave the file as a release does (the free line;
    // with PATH, the file deleted), while the lock is still this holder's.
    // `lock-acquire` writes the record after starting the holder: an owner
    // killed meanwhile must not have its record written after the clear,
    // so the holder first waits (a while at most) for the record naming it.
    wait_for_record(lock, Duration::from_secs(2));
    if kernel::try_lock_fd(lock.as_raw_fd(), Kind::Exclusive).unwrap_or(false) {
        let removed = remove.is_some_and(|p| matches!(super::compat::remove(lock, p), Ok(true)));
        if !removed {
            let _ = holder::clear(lock, None);
        }
    }
    Ok(())
}

/// Waits until the record in the lock file names this process as the
/// holder (`lock-acquire` writes it just after starting the holder), at
/// most `limit`.
fn wait_for_record(lock: impl AsFd, limit: Duration) {
    let me = std::process::id();
    let until = std::time::Instant::now() + limit;
    while holder::read_from(&lock).and_then(|r| r.holder_pid) != Some(me)
        && std::time::Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Forks a helper process (the Redis lease holder,
/// `backend::redis::lock`): `Some(pid)` in the parent, `None` in the child,
/// which must leave through [`exit_helper`]. Refused unless this process
/// has exactly one thread (read from /proc), because only then may the
/// child run ordinary code (allocate, lock) after fork.
#[cfg(feature = "redis")]
pub(crate) fn fork_helper() -> io::Result<Option<u32>> {
    // A thread that has just been joined (a Redis host name lookup,
    // `backend::redis::lookup`) is counted until the kernel has torn it
    // down, a moment after its join returned: look again, a little.
    let mut alone = threads() == Some(1);
    for _ in 0..200 {
        if alone {
            break;
        }
        std::thread::yield_now();
        alone = threads() == Some(1);
    }
    if !alone {
        return Err(io::Error::other(
            "ffkit is not single-threaded here; a helper process cannot be forked",
        ));
    }
    // SAFETY: the process is single-threaded (checked above; nothing in it
    // starts a thread concurrently), so no lock is held by a thread the
    // child lacks; the child leaves through `exit_helper`.
    let pid = unsafe { libc::fork() };
    match pid {
        p if p < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        p => Ok(Some(p as u32)),
    }
}

/// This process's thread count (`Threads:` in /proc/self/status).
#[cfg(feature = "redis")]
fn threads() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Ends a child of [`fork_helper`] without running the parent's
/// destructors or atexit handlers (which belong to the parent).
#[cfg(feature = "redis")]
pub(crate) fn exit_helper() -> ! {
    // SAFETY: _exit ends the process at once; nothing is left to unwind.
    unsafe { libc::_exit(0) }
}

/// Makes a freshly forked holder process independent of its caller: its own
/// session, stdio on /dev/null (so a `$(lock-acquire …)` that started it
/// ends with the caller), every other descriptor but `keep` closed, and
/// terminal and pipe signals ignored: what [`start_holder`] arranges for
/// the local named holder, for the Redis lease holder
/// (`backend::redis::lock`), which is forked.
#[cfg(feature = "redis")]
pub(crate) fn detach_holder(keep: &[RawFd]) {
    let _ = rustix::process::setsid();
    stdio_to_dev_null();
    close_all_but(keep);
    // Terminal and pipe signals are not ours to die of.
    crate::fsutil::ignore_signals(&[libc::SIGHUP, libc::SIGINT, libc::SIGPIPE]);
}

/// Points descriptors 0, 1 and 2 at /dev/null (a forked helper lets go of
/// the caller's terminal and pipes).
#[cfg(feature = "redis")]
pub(crate) fn stdio_to_dev_null() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

/// Closes every descriptor from 3 up except those in `keep`.
#[cfg(feature = "redis")]
fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 3).collect();
    keep.sort_unstable();
    let mut from: libc::c_uint = 3;
    let mut ranges = Vec::new();
    for &k in &keep {
        if k as libc::c_uint > from {
            ranges.push((from, k as libc::c_uint - 1));
        }
        from = k as libc::c_uint + 1;
    }
    ranges.push((from, libc::c_uint::MAX));
    for (a, b) in ranges {
        // Numbers above i32::MAX are no descriptors: the range ends there.
        let b = b.min(i32::MAX as libc::c_uint);
        // The holder owns nothing but `keep`: the rest is its caller's.
        if !crate::rawfd::close_unowned(a as RawFd, b as RawFd) {
            // Old kernel: close what /proc says is open.
            for fd in listed_fds() {
                if fd >= 3 && !keep.contains(&fd) {
                    crate::rawfd::close_unowned(fd, fd);
                }
            }
            return;
        }
    }
}

/// The descriptors /proc says this process has open.
#[cfg(feature = "redis")]
fn listed_fds() -> Vec<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Who asks for a release: the pids whose ownership counts (`--owner`, or
/// the caller's ancestors), and whether to override ownership.
pub(crate) struct Releaser {
    pub as_pids: Vec<u32>,
    pub force: bool,
}

impl Releaser {
    fn may_release(&self, rec: &Holder) -> bool {
        self.force || self.as_pids.contains(&rec.pid)
    }
}

/// Why a release did nothing.
#[derive(Debug)]
pub(crate) enum NotReleased {
    /// The lock is not held (or there is no lock file at all).
    NotHeld,
    /// Held by another owner, given here.
    NotOwner(Holder),
}

/// Releases the named lock at `path`: ends its holder process and waits
/// for it, then clears the record if the lock is still free (with
/// `compat`, a NAME's file: deletes the file instead, the old library's
/// release, [`super::compat::remove`]).
pub(crate) fn release(
    path: &Path,
    who: &Releaser,
    compat: bool,
) -> Result<std::result::Result<Holder, NotReleased>> {
    use std::os::unix::fs::MetadataExt;
    // Writable if we may (to tidy the record), else read-only.
    let opened = match open_existing_rw(path) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            kernel::open_lock_file_existing(path).map(|f| (f, false))
        }
        r => r.map(|f| (f, true)),
    };
    // A lock file deleted, replaced or moved away while a named pair held
    // it (by hand, the old library's stale break, its lock dir moved aside
    // and made again or a symlinked dir's target removed): its holder
    // process still keeps the lock on the old file, found in /proc
    // ([`lost_held`]), and is released as any (the shell's descriptor lock
    // on such a file is released with status 0 too: docs/shell.md).
    let (f, writable) = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match lost_held(path, None, who) {
            Some((f, _)) => (f, true),
            None => return Ok(Err(NotReleased::NotHeld)),
        },
        Err(e) => return Err(Error::io(crate::lock::OPEN_FAILED, path, e)),
    };
    let now = f.metadata().ok().map(|m| (m.dev(), m.ino()));
    if kernel::probe_file(&f).map_err(|e| Error::io("cannot probe", path, e))? == Probe::Free {
        return match lost_held(path, now, who) {
            Some((g, _)) => release_held(&g, path, who, true, compat),
            None => Ok(Err(NotReleased::NotHeld)),
        };
    }
    let r = release_held(&f, path, who, writable, compat)?;
    // Another owner holds the file the path names now (the dir made again
    // and the name taken there): the releaser's own pair on the file the
    // path named before is still its to release.
    if matches!(r, Err(NotReleased::NotOwner(_)))
        && let Some((g, true)) = lost_held(path, now, who)
    {
        return release_held(&g, path, who, true, compat);
    }
    Ok(r)
}

/// [`release`] of the lock held on `f` (the file `path` names, or the one
/// it named when the lock was taken).
fn release_held(
    f: &File,
    path: &Path,
    who: &Releaser,
    writable: bool,
    compat: bool,
) -> Result<std::result::Result<Holder, NotReleased>> {
    if let Some(rec) = holder::read_from(f).filter(|r| r.kind == KIND_FD) {
        return release_fd_held(f, path, rec, who, writable, compat);
    }
    // Only a record whose holder process keeps this very file's lock: a
    // record copied from another name's file, or left by a holder killed
    // before another process took the file's lock, would end another
    // lock's holder, or answer 0 while the lock stays held. A record
    // overwritten while held: the holder process is still there and says
    // whose lock it keeps ([`named_record`]).
    let m = f
        .metadata()
        .map_err(|e| Error::io("cannot inspect", path, e))?;
    let Some(rec) = named_record(f, &m) else {
        // Else a descriptor holder, found in /proc the same way.
        if let Some(rec) = find_fd_holder(f, &who.as_pids) {
            return release_fd_held(f, path, rec, who, writable, compat);
        }
        return Err(Error::LockFailed(format!(
            "{}: held, but not as a named lock (no holder record); it is released when its holder exits",
            path.display()
        )));
    };
    if !who.may_release(&rec) {
        return Ok(Err(NotReleased::NotOwner(rec)));
    }
    let Some(hpid) = rec.holder_pid else {
        return Err(Error::LockFailed(format!(
            "{}: holder record names no holder process",
            path.display()
        )));
    };
    let pidfd = match pidfd_open(hpid) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            if holder::same_process(hpid, rec.holder_start)
                && let Ok(p) = pid_of(hpid)
            {
                // The start time was just verified (no pidfd to pin it).
                let _ = rustix::process::kill_process(p, Signal::TERM);
            }
            for _ in 0..200 {
                if !holder::same_process(hpid, rec.holder_start) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        }
        Err(e) => {
            return Err(Error::LockFailed(format!(
                "cannot reach holder pid {hpid}: {}",
                crate::error::os_reason(&e)
            )));
        }
    };
    if let Some(fd) = pidfd {
        // The pidfd pins the process; the start time proves it is the holder
        // and not a recycled pid.
        if holder::same_process(hpid, rec.holder_start) {
            let _ = pidfd_signal(&fd, Signal::TERM);
            if !wait_pidfd(&fd, Some(Duration::from_secs(2))) {
                let _ = pidfd_signal(&fd, Signal::KILL);
                wait_pidfd(&fd, Some(Duration::from_secs(2)));
            }
        }
    }
    // Tidy the record, but only while the lock is ours for an instant: a
    // waiter that got it first has written its own record.
    if kernel::try_lock_fd(f.as_raw_fd(), Kind::Exclusive).unwrap_or(false) {
        let removed = compat && matches!(super::compat::remove(f, path), Ok(true));
        if writable && !removed {
            let _ = holder::clear(f, None);
        }
        let _ = kernel::unlock_fd(f.as_raw_fd());
    }
    Ok(Ok(rec))
}

/// The other processes' pids, as `/proc` lists them.
fn other_pids() -> impl Iterator<Item = u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| pid != me)
}

/// A named pair's holder process running this protocol (`ffkit`
/// [`HOLDER_ARG`] `LOCK_FD WATCH [PATH [remove]]`, read from
/// `/proc/PID/cmdline`).
struct HolderArgs {
    pid: u32,
    lock_fd: i32,
    watch: String,
    /// The lock file's path as the lock was taken (absent from a holder
    /// an older build started without it).
    at: Option<std::path::PathBuf>,
}

/// The named pairs' holder processes, as [`holder_args`] reads them.
fn holder_processes() -> impl Iterator<Item = HolderArgs> {
    other_pids().filter_map(holder_args)
}

/// `pid`'s arguments when it is a named pair's holder process (its
/// `/proc/PID/cmdline` is `ffkit` [`HOLDER_ARG`] `LOCK_FD WATCH …`),
/// else `None`.
fn holder_args(pid: u32) -> Option<HolderArgs> {
    use std::os::unix::ffi::OsStrExt;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = raw.split(|&b| b == 0).skip(1);
    if args.next()? != HOLDER_ARG.as_bytes() {
        return None;
    }
    let lock_fd = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
    let watch = args.next().and_then(|a| std::str::from_utf8(a).ok());
    let at = args
        .next()
        .filter(|a| a.first() == Some(&b'/'))
        .map(|a| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(a)));
    Some(HolderArgs {
        pid,
        lock_fd,
        watch: watch.unwrap_or("").to_owned(),
        at,
    })
}

/// Whether the process `pid` (a named record's holder) keeps its lock on
/// the file `dev`/`ino`: it is a [holder process](holder_args) whose
/// `LOCK_FD` is open on that file and holds a lock. `false` for a record
/// copied into another file (`cp A.lock B.lock`) or left in a file some
/// other process now holds, so nobody ends another lock's holder through
/// it; `true` when `/proc` does not let us look (another user's holder:
/// we could not signal it either).
pub(crate) fn holder_keeps(pid: u32, dev: u64, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(HolderArgs { lock_fd, .. }) = holder_args(pid) else {
        return false;
    };
    match std::fs::metadata(format!("/proc/{pid}/fd/{lock_fd}")) {
        Ok(m) => {
            m.dev() == dev
                && m.ino() == ino
                && holder::fdinfo_lists_a_lock(pid, lock_fd) != Some(false)
        }
        Err(e) => e.kind() == io::ErrorKind::PermissionDenied,
    }
}

/// The named pair holding `f` (whose metadata is `m`): its record, if
/// the holder process it names keeps this very file's lock, else the
/// holder process found in `/proc` ([`find_holder`]: a record overwritten
/// while held, by hand or a stray `>`).
fn named_record(f: &File, m: &std::fs::Metadata) -> Option<Holder> {
    use std::os::unix::fs::MetadataExt;
    holder::read_from(f)
        .filter(|r| r.kind == KIND_NAMED && r.holds_kernel_lock(m.dev(), m.ino()))
        .or_else(|| find_holder(f))
}

/// The named lock's holder process keeping the kernel lock on `f`'s file,
/// found without its record (overwritten while held): a
/// [holder process](holder_processes) whose `LOCK_FD` is open on the same
/// device and inode and holds a lock (`/proc/PID/fdinfo`). The record is
/// rebuilt from what the holder knows: the owner (the pid behind its
/// pidfd, from its fdinfo's `Pid:` line, or the pid it polls), the owner's
/// command and start time, and since when the holder runs. `None` when
/// there is no such process (or `/proc` cannot tell).
pub(crate) fn find_holder(f: &File) -> Option<Holder> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().ok()?;
    holder_processes().find_map(
        |HolderArgs {
             pid,
             lock_fd,
             watch,
             ..
         }| {
            let on_file = std::fs::metadata(format!("/proc/{pid}/fd/{lock_fd}"))
                .is_ok_and(|fm| fm.dev() == m.dev() && fm.ino() == m.ino());
            if !on_file || holder::fdinfo_lists_a_lock(pid, lock_fd) != Some(true) {
                return None;
            }
            let owner = match watch.split(':').collect::<Vec<_>>().as_slice() {
                ["pidfd", n] => pidfd_target(pid, n),
                ["pid", p, _] => p.parse().ok(),
                _ => None,
            }?;
            let mut rec = Holder::new(KIND_NAMED, owner, None);
            rec.holder_pid = Some(pid);
            rec.holder_start = holder::start_time(pid);
            if let Some(since) = rec.holder_start.and_then(holder::epoch_of_start) {
                rec.since = since;
            }
            Some(rec)
        },
    )
}

/// `dir` as `/proc/PID/fd` names it in the link of a descriptor on a file
/// in it: its canonical path; a dir removed since (the whole lock dir
/// deleted while held) is its nearest existing ancestor's canonical path
/// with the missing components as given. (Queries no longer make a
/// missing lock dir, so a release must not need it to exist.)
fn kernel_dir_name(dir: &Path) -> Option<std::path::PathBuf> {
    let mut missing = Vec::new();
    let mut d = dir;
    let mut found = loop {
        match std::fs::canonicalize(d) {
            Ok(c) => break c,
            Err(_) => {
                missing.push(d.file_name()?);
                d = d.parent()?;
            }
        }
    };
    for m in missing.iter().rev() {
        found.push(m);
    }
    Some(found)
}

/// A named pair's holder process keeping its lock on a file that was
/// `path` when the lock was taken and is not the file `path` names now
/// (`now`, its device and inode; `None`: no file there): the file deleted
/// or replaced (by hand, the old library's stale break), its lock dir
/// moved aside and made again, a symlinked lock dir's target removed. The
/// holder says which path it was taken at (its PATH argument,
/// [`HOLDER_ARG`]), so the pair is found by what it was taken as, not by
/// where its file is now; a holder an older build started without PATH is
/// found when its lock descriptor reads as `PATH (deleted)` in
/// `/proc/PID/fd` and the file has no link left. Its fdinfo must list a
/// lock. Returns that file, opened through the holder's descriptor (its
/// record names the holder), and whether `who` may release it. Several
/// such holders (the name lost again after another owner took it) are
/// told apart by owner: the one `who` may release first, so one owner's
/// release is not refused for another's older lock.
fn lost_held(path: &Path, now: Option<(u64, u64)>, who: &Releaser) -> Option<(File, bool)> {
    use std::os::unix::fs::MetadataExt;
    let at = absolute(path);
    let deleted = path
        .parent()
        .and_then(kernel_dir_name)
        .zip(path.file_name())
        .map(|(dir, name)| format!("{} (deleted)", dir.join(name).display()));
    let mut first = None;
    for h in holder_processes() {
        let link = format!("/proc/{}/fd/{}", h.pid, h.lock_fd);
        let taken_here = h.at.as_deref() == Some(at.as_path());
        if !taken_here
            && (h.at.is_some()
                || deleted.as_deref().map(Path::new) != std::fs::read_link(&link).ok().as_deref())
        {
            continue;
        }
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&link)
        else {
            continue;
        };
        let Ok(m) = f.metadata() else { continue };
        let moved = now != Some((m.dev(), m.ino()));
        if !moved
            || (!taken_here && m.nlink() != 0)
            || holder::fdinfo_lists_a_lock(h.pid, h.lock_fd) != Some(true)
        {
            continue;
        }
        if named_record(&f, &m).is_some_and(|r| who.may_release(&r)) {
            return Some((f, true));
        }
        first.get_or_insert((f, false));
    }
    first
}

/// A process holding the kernel lock on `f`'s file through a descriptor of
/// its own (a shell's `acquire_critical_lock`), found without a record
/// (overwritten while held): a descriptor in `/proc/PID/fd` open on the
/// same device and inode whose fdinfo lists a lock. Several processes may
/// share that open file description (a fallback shell's children inherit
/// it): the holder is one none of whose ancestors shares it (the shell,
/// not the child script that inherited its descriptor, which would
/// otherwise pass the ownership rule for its own release), one of
/// `prefer` (the releasers) first. The record is rebuilt as that
/// process's descriptor lock.
pub(crate) fn find_fd_holder(f: &File, prefer: &[u32]) -> Option<Holder> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().ok()?;
    let mut found: Vec<(u32, i32)> = Vec::new();
    for pid in other_pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for d in fds.flatten() {
            let Some(fd) = d.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let on_file = std::fs::metadata(d.path())
                .is_ok_and(|fm| fm.dev() == m.dev() && fm.ino() == m.ino());
            if on_file && holder::fdinfo_lists_a_lock(pid, fd) == Some(true) {
                found.push((pid, fd));
                break;
            }
        }
    }
    let top: Vec<(u32, i32)> = found
        .iter()
        .copied()
        .filter(|&(pid, _)| {
            !holder::ancestors(pid)
                .iter()
                .any(|a| found.iter().any(|&(p, _)| p == *a))
        })
        .collect();
    let (pid, fd) = top
        .iter()
        .find(|(p, _)| prefer.contains(p))
        .or_else(|| top.first())
        .copied()?;
    let mut rec = Holder::new(KIND_FD, pid, None);
    rec.fd = Some(fd);
    Some(rec)
}

/// The pid a pidfd (descriptor `n` of process `pid`) refers to: the `Pid:`
/// line of its fdinfo.
fn pidfd_target(pid: u32, n: &str) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{n}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&p: &u32| p > 0)
}

/// `lock-release NAME` of a lock a shell holds through its own descriptor
/// (the wrappers): the owner may release it; ffkit then duplicates that
/// descriptor with pidfd_getfd(2) and unlocks the shared open file
/// description, which drops the shell's lock. Where the kernel refuses
/// (ptrace rules), the answer says how to release it instead.
fn release_fd_held(
    f: &File,
    path: &Path,
    rec: Holder,
    who: &Releaser,
    writable: bool,
    compat: bool,
) -> Result<std::result::Result<Holder, NotReleased>> {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};
    use std::os::unix::fs::MetadataExt;
    let m = f
        .metadata()
        .map_err(|e| Error::io("cannot inspect", path, e))?;
    // The record's descriptor, or, when the shell's script closed it or
    // opened another file on its number (the lock's own file included), a
    // copy the script made of it that holds the lock (a lock function's
    // descriptor, marked: `fd::function_copy_of`), as
    // `release_critical_lock` releases it (docs/shell.md, "Locks").
    let through = if rec.holds_kernel_lock(m.dev(), m.ino()) {
        rec.fd
    } else if let Some(copy) = holder::same_process(rec.pid, rec.start)
        .then(|| super::fd::function_copy_of(rec.pid, m.dev(), m.ino()))
        .flatten()
    {
        Some(copy)
    } else {
        return Err(Error::LockFailed(format!(
            "{}: held, but its holder record is out of date; it is released when its holder exits",
            path.display()
        )));
    };
    if !who.may_release(&rec) {
        return Ok(Err(NotReleased::NotOwner(rec)));
    }
    let how = || {
        format!(
            "{}: held through descriptor {} of pid {}; release it there (release_critical_lock, or close the descriptor)",
            path.display(),
            through.unwrap_or(-1),
            rec.pid
        )
    };
    let (Some(pid), Some(fd)) = (Pid::from_raw(rec.pid as i32), through) else {
        return Err(Error::LockFailed(how()));
    };
    let dup = rustix::process::pidfd_open(pid, PidfdFlags::empty())
        .and_then(|pfd| rustix::process::pidfd_getfd(&pfd, fd, PidfdGetfdFlags::empty()))
        .map_err(|_| Error::LockFailed(how()))?;
    let st = rustix::fs::fstat(&dup).map_err(|_| Error::LockFailed(how()))?;
    if st.st_dev != m.dev() || st.st_ino != m.ino() {
        return Err(Error::LockFailed(how()));
    }
    let removed = compat && matches!(super::compat::remove(&dup, path), Ok(true));
    if writable && !removed {
        let _ = holder::clear(f, None);
    }
    kernel::unlock_fd(dup.as_raw_fd()).map_err(|e| Error::io("cannot unlock", path, e))?;
    Ok(Ok(rec))
}

fn open_existing_rw(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
}
