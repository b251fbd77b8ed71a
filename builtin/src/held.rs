//! Locks the shell holds across calls: `acquire_critical_lock NAME` …
//! `release_critical_lock NAME`, session locks, and `ffkit lock-acquire
//! NAME` … `ffkit lock-release NAME` run in the builtin.
//!
//! Each lock is a kernel flock(2) on the lock file's own open file
//! description, kept on a descriptor of the shell placed by
//! `ffkit::hostfd` (the one rule for every descriptor the builtin keeps):
//! at the top of the shell's range, below min(soft `RLIMIT_NOFILE`, 1024),
//! where scripts' and bash's own numbers never meet it, *not* close-on-exec
//! (bash would take it for one of its saved copies, and `exec prog` keeps
//! the lock, as the fallback's and the old library's do), and closed in
//! every forked child: a subshell, `$( )`, a pipeline stage, `&` or a
//! command bash starts never carries the shell's lock descriptors, so a
//! killed shell frees its locks at once, whatever its children do, and no
//! child can unlock them.
//!
//! The table records the owning pid: a forked subshell has a copy of the
//! table (not of the descriptors) and ignores entries that are not its own.
//! At release the descriptor's device and inode are compared with those
//! recorded, so a descriptor the script closed and reused is never
//! unlocked by mistake. A released lock's descriptor is kept open,
//! unlocked, for the next acquisition of the same file ([`Idle`]: no open,
//! no placement), under the same placement and fork rules.
//!
//! Waiting is the library's in-process kernel wait
//! (`lock::fd::acquire_in_process` over `lock::kernel::lock_fd`: no
//! timers, no signal handlers in the shell), which gives up when bash's
//! handlers have flagged SIGINT, SIGTERM, SIGHUP, SIGQUIT or a terminating
//! signal (see `shell::wait_ending_signal`); other trapped signals (CHLD,
//! USR1, WINCH …) do not end it, and their traps run once it is over.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ffkit::config::Config;
use ffkit::fsutil::{self, Want};
use ffkit::hostfd;
use ffkit::lock::holder::{Holder, KIND_FD, RecordLine};
use ffkit::lock::kernel::Method;
use ffkit::lock::{Denied, Kind, Wait, WaitSpec, compat, fd};
use ffkit::{Error, Result};

use crate::shell;

/// Lock files are created 0600, whatever the umask, like the library's
/// (the dir itself comes from `lock::lock_dir`, which creates it 0700).
const FILE_MODE: u32 = 0o600;

struct Entry {
    path: PathBuf,
    fd: OwnedFd,
    pid: rustix::process::Pid,
    dev: u64,
    ino: u64,
}

/// The table. bash is single-threaded and the builtin never forks while it
/// holds the mutex, so a child's copy of the mutex is always unlocked.
static TABLE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn table() -> MutexGuard<'static, Vec<Entry>> {
    // A panic caught at the entry point must not make the table unusable.
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A released lock's descriptor, kept open (unlocked) for the next
/// acquisition of the same file, which then needs no open and no
/// placement: placed, registered and closed in forked children like a held
/// one. Checked before it is used again (device and inode: a script that
/// redirected onto its number makes it not ours), and after locking like a
/// new one (`lock::compat`: a file deleted or replaced meanwhile is left
/// for the path's new file).
struct Idle {
    path: PathBuf,
    fd: OwnedFd,
    pid: rustix::process::Pid,
    dev: u64,
    ino: u64,
}

/// At most this many per shell: a script looping over a few names reuses
/// them; one using many names keeps only the last few open.
const IDLE_MAX: usize = 4;

/// The kept descriptors, oldest first (same rules as [`TABLE`]).
static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

fn idle() -> MutexGuard<'static, Vec<Idle>> {
    IDLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// This shell's kept descriptor for `path`, unregistered (the helper child
/// of a wait must keep it, as a new one), with its file's device and inode,
/// if it is still open on the file it was kept for.
fn take_idle(path: &Path, me: rustix::process::Pid) -> Option<(OwnedFd, (u64, u64))> {
    let mut t = idle();
    let i = t.iter().position(|e| e.pid == me && e.path == path)?;
    let e = t.remove(i);
    drop(t);
    hostfd::fork_keeps(e.fd.as_raw_fd());
    // (statx for the inode only, not fstat: `fsutil::Ident` says why.)
    match fsutil::ident_fd(&e.fd, Want::Id) {
        Ok(m) if m.is(e.dev, e.ino) => Some((e.fd, (e.dev, e.ino))),
        // Closed or reused by the script: the number is not ours.
        _ => {
            std::mem::forget(e.fd);
            None
        }
    }
}

/// Keeps a released lock's descriptor (see [`Idle`]); the oldest beyond
/// [`IDLE_MAX`] is closed.
fn keep_idle(e: Entry) {
    let mut t = idle();
    if t.len() >= IDLE_MAX {
        close_idle(t.remove(0));
    }
    if hostfd::fork_closes(e.fd.as_raw_fd()) {
        t.push(Idle {
            path: e.path,
            fd: e.fd,
            pid: e.pid,
            dev: e.dev,
            ino: e.ino,
        });
    }
}

/// Closes a kept descriptor, unless the script closed or reused its number.
fn close_idle(e: Idle) {
    hostfd::fork_keeps(e.fd.as_raw_fd());
    if fsutil::ident_fd(&e.fd, Want::Id).is_ok_and(|m| m.is(e.dev, e.ino)) {
        drop(e.fd);
    } else {
        std::mem::forget(e.fd);
    }
}

/// Registers a newly held descriptor with `hostfd::fork_closes`, closing
/// kept ones to make room if needed; false when 256 are held.
fn register(raw: i32) -> bool {
    loop {
        if hostfd::fork_closes(raw) {
            return true;
        }
        let Some(old) = ({
            let mut t = idle();
            (!t.is_empty()).then(|| t.remove(0))
        }) else {
            return false;
        };
        close_idle(old);
    }
}

/// Why an acquisition did not take the lock.
pub enum NotTaken {
    Failed(Error),
    /// Busy or timed out: the lock was tried (and its wait is a
    /// `lock_acquire` row, as the binary's denied `lock-acquire` records).
    Denied(Error),
    /// A signal arrived while waiting: return 128 + it.
    Signal(i32),
}

impl From<Error> for NotTaken {
    fn from(e: Error) -> Self {
        NotTaken::Failed(e)
    }
}

/// The shell's holder record (pid, start time, host, command line): the
/// same for every lock a shell takes, so read from /proc once per shell
/// process (a forked subshell, another pid, reads its own).
/// Kept with its line made once (`RecordLine`): the record is serialized
/// per shell, not per lock.
type Owner = std::sync::Arc<(Holder, RecordLine)>;
static OWNER: Mutex<Option<Owner>> = Mutex::new(None);

fn owner_record(owner: u32) -> Owner {
    let mut o = OWNER.lock().unwrap_or_else(|p| p.into_inner());
    match o.as_ref() {
        Some(h) if h.0.pid == owner => h.clone(),
        _ => {
            let h = Holder::new(KIND_FD, owner, None);
            let line = h.record_line();
            let h = std::sync::Arc::new((h, line));
            *o = Some(h.clone());
            h
        }
    }
}

/// Takes the exclusive lock on `path` for this shell, waiting up to
/// `timeout` (zero: do not wait). The library's in-process acquisition
/// (`lock::fd::acquire_in_process`) waits in the kernel; SIGINT, SIGTERM,
/// SIGHUP, SIGQUIT or a terminating signal bash has flagged
/// (`shell::wait_ending_signal`) ends the wait. Once the file is checked, the
/// shell's holder record (its pid and the descriptor, so `lock-status`
/// names the shell) is written into it.
///
/// `make_dir`, when given, sets up the lock file's dir, which the caller
/// has not done yet: it runs when the file cannot be opened (the dir is
/// missing, or is not one), and the open is tried again.
pub fn acquire(
    path: &Path,
    label: &str,
    cfg: &Config,
    timeout: Duration,
    make_dir: Option<&dyn Fn() -> Result<()>>,
    prog: &str,
) -> std::result::Result<(), NotTaken> {
    let started = Instant::now();
    let me = crate::caller_pid();
    let owner = me.as_raw_nonzero().get() as u32;
    released_typed().retain(|(p, _)| p != path);
    {
        let mut t = table();
        if let Some(i) = t.iter().position(|e| e.pid == me && e.path == path) {
            // Held while the path still names the file it locked, the
            // descriptor is still the one it locked through and the kernel
            // says that descriptor holds a lock (docs/shell.md: "holds" is
            // what the kernel says), as the fallback asks. A file deleted
            // or replaced since (the old library's release or its
            // stale-lock break), a lock released behind the shell's back
            // (`lock-release --force`, `flock -u`) or a descriptor the
            // script closed or opened another file on (the lock's own
            // file included: a description without the function's mark,
            // `fd::function_mark`) guards nothing: the entry is dropped and
            // the name taken as a free one (or refused at once when a copy
            // of the descriptor holds it, below). Its descriptor is closed
            // only while it is still ours: a number the script opened again
            // is the script's.
            use std::os::unix::fs::MetadataExt;
            let e = &t[i];
            let (ours, locked) =
                if fsutil::ident_fd(&e.fd, Want::Id).is_ok_and(|m| m.is(e.dev, e.ino)) {
                    fd::function_fd(e.fd.as_raw_fd(), owner)
                } else {
                    (false, false)
                };
            if ours
                && locked
                && std::fs::metadata(path).is_ok_and(|m| m.dev() == e.dev && m.ino() == e.ino)
            {
                return Err(ffkit::lock::already_held(path.display(), owner).into());
            }
            // Not held through it any more: forked children must not close
            // the number either, which is the script's now, or is closed
            // below (and may be reused).
            hostfd::fork_keeps(e.fd.as_raw_fd());
            // Its descriptor gone, a copy the script made of it holds the
            // lock: refused at once, and the entry kept, so that
            // `release_critical_lock` releases it through the copy.
            if !ours && let Some(copy) = fd::function_copy(e.dev, e.ino, owner, e.fd.as_raw_fd()) {
                return Err(fd::held_through_copy(path, owner, copy).into());
            }
            let e = t.remove(i);
            if !ours {
                std::mem::forget(e.fd);
            }
        }
    }
    let deadline = Instant::now().checked_add(timeout);
    let owner_rec = owner_record(owner);
    let (record, record_line) = (&owner_rec.0, &owner_rec.1);
    let rule = compat::Rule::of(cfg);
    let mut pause = compat::Pause::new(
        match deadline {
            _ if timeout.is_zero() => Wait::NonBlocking,
            Some(d) => Wait::Until(d),
            None => Wait::Forever,
        },
        rule.backoff,
    );
    let mut said_waiting = false;
    let mut kept = take_idle(path, me);
    loop {
        // The descriptor and its file's device and inode, known before it
        // is locked (a descriptor's file never changes), so the check after
        // locking makes no fstat (`compat::check_known`).
        let (fd, created, ident) = match kept.take() {
            Some((fd, ident)) => (fd, false, ident),
            None => {
                // Asked before the open, as the fallback's `[[ ! -f F ]]`
                // is (`created` is only known in the old library's mode);
                // a stat only for the debug line.
                let missing = cfg.debug && std::fs::symlink_metadata(path).is_err();
                let (file, created, st) = match (rule.open_stat(path, FILE_MODE), make_dir) {
                    // Whatever the error, the set-up runs first, so a bad
                    // dir (a file in its place, say) fails as the set-up
                    // words it.
                    (Err(_), Some(make)) => {
                        make()?;
                        rule.open_stat(path, FILE_MODE)
                    }
                    (r, _) => r,
                }
                .map_err(|e| Error::io(ffkit::lock::OPEN_FAILED, path, e))?;
                let fd = hostfd::high_fd(&file)
                    .map_err(|e| Error::io("cannot keep the lock file open", path, e))?;
                // Marked as the function's once per open (a kept one keeps
                // its mark): a copy the script makes of it is then told from
                // a descriptor it opens on the file itself (docs/shell.md).
                fd::mark_for_function(fd.as_raw_fd(), owner)
                    .map_err(|e| Error::io("cannot mark the lock descriptor of", path, e))?;
                // The line the fallback's `lock-acquire --prepare` prints
                // when it makes a missing lock file (docs/locks.md).
                if missing {
                    errln!(
                        "{prog}: debug: {}",
                        ffkit::cli::one_line(&ffkit::lock::prepared_note(label, path))
                    );
                }
                (fd, created, (st.st_dev, st.st_ino))
            }
        };
        let raw = fd.as_raw_fd();
        let mut signal = None;
        let got = fd::acquire_in_process(
            raw,
            Kind::Exclusive,
            Method::Flock,
            deadline,
            path,
            Some(record),
            &mut || {
                signal = shell::wait_ending_signal();
                signal.is_some()
            },
            &mut || {
                // The binary's waiting line (lock_args), which the wrappers
                // print only with FF_DEBUG=true (docs/locks.md).
                if cfg.debug && !said_waiting {
                    let holder = fd
                        .try_clone()
                        .map(|d| {
                            ffkit::lock::holder::describe_kernel_holder(&std::fs::File::from(d))
                        })
                        .unwrap_or_else(|_| "an unknown holder".into());
                    errln!(
                        "ffkit: waiting for lock {} (held by {holder})",
                        path.display()
                    );
                }
                said_waiting = true;
            },
        )?;
        match got {
            Ok(_) => {}
            Err(Denied::Interrupted) => {
                return Err(NotTaken::Signal(signal.unwrap_or(libc::SIGINT)));
            }
            Err(Denied::Busy | Denied::TimedOut) => {
                let holder = fd
                    .try_clone()
                    .map(|d| ffkit::lock::holder::describe_kernel_holder(&std::fs::File::from(d)))
                    .unwrap_or_else(|_| "an unknown holder".into());
                return Err(NotTaken::Denied(denied(label, timeout, &holder)));
            }
        }
        // The old library's file protocol (`lock::compat`): deleted or
        // replaced between the open and the lock (a release, or an
        // emergency `rm`), this lock guards nothing: closing `fd` drops it,
        // and the file the name has now is tried, within the same deadline.
        // Held by the old library: closing `fd` drops the kernel lock, and
        // a backoff step later the name is tried again.
        let (verdict, len) = compat::check_known(&fd, ident, path, created, rule.follow)
            .map_err(|e| Error::io("cannot inspect", path, e))?;
        if let compat::Verdict::OldLibrary(_) = verdict {
            drop(fd);
            // The holder as every other path words it (docs/locks.md,
            // "Messages"): the one description in the core.
            let holder = || ffkit::lock::holder::describe_lock_file(path);
            if cfg.debug && !said_waiting {
                errln!(
                    "ffkit: waiting for lock {} (held by {})",
                    path.display(),
                    holder()
                );
            }
            said_waiting = true;
            let mut signal = None;
            match pause.sleep(&mut || {
                signal = shell::wait_ending_signal();
                signal.is_some()
            }) {
                Ok(()) => continue,
                Err(Denied::Interrupted) => {
                    return Err(NotTaken::Signal(signal.unwrap_or(libc::SIGINT)));
                }
                Err(Denied::Busy | Denied::TimedOut) => {
                    return Err(NotTaken::Denied(denied(label, timeout, &holder())));
                }
            }
        }
        if verdict == compat::Verdict::Ours {
            // Registered only now: the helper child that waited for the
            // lock (a fork of the shell) had to keep this descriptor.
            if !register(raw) {
                return Err(Error::LockFailed(format!(
                    "{}: this shell holds 256 locks already",
                    path.display()
                ))
                .into());
            }
            if let Err(e) = fd::write_record_line(raw, Method::Flock, record_line, len, path) {
                hostfd::fork_keeps(raw);
                return Err(e.into());
            }
            table().push(Entry {
                path: path.to_path_buf(),
                fd,
                pid: me,
                dev: ident.0,
                ino: ident.1,
            });
            if cfg.debug {
                // The words the binary prints for the fallback's
                // `lock-acquire --fd` (docs/locks.md), from the core.
                let how = ffkit::lock::acquire::on_callers_fd(
                    Method::Flock,
                    ffkit::lock::Kind::Exclusive,
                    raw,
                    Some(owner),
                );
                errln!(
                    "{prog}: debug: {}",
                    ffkit::cli::one_line(&ffkit::lock::acquire::taken_note(
                        label,
                        &how,
                        started.elapsed()
                    ))
                );
            }
            return Ok(());
        }
    }
}

/// Not taken within `timeout` (zero: at once): the binary's line for the
/// same failure, written once in the core (`Denied::error`).
fn denied(label: &str, timeout: Duration, holder: &str) -> Error {
    if timeout.is_zero() {
        Denied::Busy.error(label, WaitSpec::NonBlocking, holder)
    } else {
        Denied::TimedOut.error(label, WaitSpec::Timeout(timeout), holder)
    }
}

/// Whether a release of `path` here is the refusal of a lock a parent
/// shell holds (a subshell's call): refused before any release is tried,
/// as the fallback refuses it in the shell, so no `lock_release` row.
pub fn held_by_parent(path: &Path) -> bool {
    let me = crate::caller_pid();
    let t = table();
    !t.iter().any(|e| e.path == path && e.pid == me)
        && (t.iter().any(|e| e.path == path) || inherited(path))
}

/// Releases this shell's lock on `path`: clears the holder record (with
/// `LOCK_OLD_LIBRARY=present`, deletes the file instead, the old library's
/// release: `lock::compat`), unlocks explicitly and closes the descriptor.
pub fn release(path: &Path, cfg: &Config) -> Result<()> {
    let me = crate::caller_pid();
    let mut t = table();
    let Some(i) = t.iter().position(|e| e.path == path && e.pid == me) else {
        if t.iter().any(|e| e.path == path) || inherited(path) {
            return Err(ffkit::lock::held_by_parent_shell(path.display()));
        }
        drop(t);
        {
            let mut r = released_typed();
            if let Some(k) = r
                .iter()
                .position(|(p, pid)| p == path && *pid == me.as_raw_nonzero().get())
            {
                r.swap_remove(k);
                return Err(fd::lost_by_shell(path));
            }
        }
        // Taken by this very process before `exec bash` replaced the
        // shell (its descriptor is kept across exec, docs/shell.md): the
        // record names this pid, start time and descriptor, which is
        // released as the fallback's release would. A child or subshell
        // (another pid) is never adopted.
        let owner = me.as_raw_nonzero().get() as u32;
        match fd::release_left_by_exec(path, owner, compat::Rule::of(cfg).follow)? {
            Some(Ok(())) => return Ok(()),
            // Released behind the shell's back: the fallback's answer too.
            Some(Err(_)) => return Err(fd::lost_by_shell(path)),
            None => {}
        }
        // A named pair this shell took with the binary's `lock-acquire
        // NAME` (or a dot-lock): released as the fallback releases it, by
        // the one rule in the core.
        return ffkit::lock::release::for_shell(path, owner, compat::Rule::of(cfg).follow);
    };
    let e = t.swap_remove(i);
    drop(t);
    // `LOCK_OLD_LIBRARY` as the shell has it now, at the release, as the
    // fallback's `lock-release` reads it: set between the acquisition and
    // the release, it decides (the file deleted or kept) on every path.
    let follow = compat::Rule::of(cfg).follow;
    hostfd::fork_keeps(e.fd.as_raw_fd());
    // (With the file's length, which the release's free line covers,
    // without a fstat: the record this shell wrote, or a longer one of a
    // holder that had the lock meanwhile, when it was lost behind the
    // shell's back and the release takes it again.)
    let now = fsutil::ident_fd(&e.fd, Want::Size)
        .ok()
        .filter(|m| m.is(e.dev, e.ino));
    let owner = me.as_raw_nonzero().get() as u32;
    let Some(now) = now else {
        // The script closed the descriptor or opened another file on its
        // number: the number is the script's (not closed here). Its lock
        // went with it, unless a copy the script made of the descriptor
        // holds it: released through that copy (left open), else the
        // fallback's verdict and line (the core's).
        let raw = e.fd.as_raw_fd();
        std::mem::forget(e.fd);
        return fd::release_through_copy(raw, path, (e.dev, e.ino), owner, follow);
    };
    // Clears the record (or deletes the file) while still exclusive, then
    // unlocks.
    let done = fd::release_in_process(
        e.fd.as_raw_fd(),
        Method::Flock,
        follow.then_some(path),
        Some(now.size),
        Some(owner),
    );
    match done? {
        // The file stays (it was not deleted): its descriptor is kept for
        // the next acquisition.
        Ok(()) if !follow => keep_idle(e),
        Ok(()) => drop(e.fd),
        // The script opened the lock's own file on the number: as a
        // descriptor closed or opened on another file above.
        Err(fd::NotHeld::Reopened) => {
            let raw = e.fd.as_raw_fd();
            std::mem::forget(e.fd);
            return fd::release_through_copy(raw, path, (e.dev, e.ino), owner, follow);
        }
        // Released behind the shell's back (`lock-release --force`),
        // whether the name is free now or another process holds it: exit 4,
        // the fallback's verdict and line (the core's). Its descriptor is
        // closed, as the fallback closes its own.
        Err(fd::NotHeld::NoLock) => return Err(fd::lost_by_shell(path)),
    }
    Ok(())
}

/// Drops the table entries a forked subshell inherited from its parent.
/// Their descriptors were closed by the fork handler, and the numbers may
/// name something of the script's by now: they are forgotten, never closed.
pub fn forget_inherited() {
    let me = crate::caller_pid();
    // Entries of another pid appear only by a fork, whose child handler
    // ([`forked`]) clears the mark: every other call skips the two table
    // locks (each lock and unlock is a locked instruction: BENCHMARKS.md,
    // "Sixth pass on the lock pair"). The pid in the mark also covers a
    // child started without fork handlers.
    if PURGED_FOR.load(Ordering::Relaxed) == me.as_raw_nonzero().get() {
        return;
    }
    let mut t = table();
    if t.iter().any(|e| e.pid != me) {
        let mut parents = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
        for e in std::mem::take(&mut *t) {
            if e.pid == me {
                t.push(e);
            } else {
                std::mem::forget(e.fd);
                parents.push(e.path);
            }
        }
    }
    drop(t);
    let mut k = idle();
    if k.iter().any(|e| e.pid != me) {
        for e in std::mem::take(&mut *k) {
            if e.pid == me {
                k.push(e);
            } else {
                std::mem::forget(e.fd);
            }
        }
    }
    PURGED_FOR.store(me.as_raw_nonzero().get(), Ordering::Relaxed);
}

/// The files of the locks [`forget_inherited`] dropped: held by a shell
/// this one was forked from, which alone may release them (a release of
/// one here is refused with [`ffkit::lock::held_by_parent_shell`], as the
/// fallback refuses it). Inherited by further forks, as the fallback's
/// list (`_ffkit_lock_parents`) is.
static INHERITED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The function locks this shell released with a typed `ffkit
/// lock-release NAME` (file, pid): its next `release_critical_lock NAME`
/// then answers as the fallback's does, whose descriptor stays open on the
/// unlocked file ([`fd::lost_by_shell`]), not with a bare "not held" (one
/// line for one event, docs/shell.md). Forgotten when the name is taken
/// again; a subshell (another pid) never matches.
static RELEASED_TYPED: Mutex<Vec<(PathBuf, i32)>> = Mutex::new(Vec::new());

fn released_typed() -> MutexGuard<'static, Vec<(PathBuf, i32)>> {
    RELEASED_TYPED.lock().unwrap_or_else(|p| p.into_inner())
}

/// A typed `ffkit lock-release NAME` of this shell's function lock on
/// `path`: [`release`], remembered in [`RELEASED_TYPED`].
pub fn release_typed(path: &Path, cfg: &Config) -> Result<()> {
    release(path, cfg)?;
    let me = crate::caller_pid().as_raw_nonzero().get();
    let mut r = released_typed();
    r.retain(|(p, _)| p != path);
    r.push((path.to_path_buf(), me));
    Ok(())
}

/// Whether `path` is one of the [`INHERITED`] locks.
fn inherited(path: &Path) -> bool {
    INHERITED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|p| p == path)
}

/// The pid whose inherited entries [`forget_inherited`] dropped last (0:
/// none yet, or forked since).
static PURGED_FOR: AtomicI32 = AtomicI32::new(0);

/// The fork child handler's part (`track_pid` in lib.rs): the child's
/// first call drops the entries it inherited. One atomic store, which a
/// fork handler may make.
pub fn forked() {
    PURGED_FOR.store(0, Ordering::Relaxed);
}

/// Whether this shell holds `path` in the table.
pub fn holds(path: &Path) -> bool {
    let me = crate::caller_pid();
    table().iter().any(|e| e.pid == me && e.path == path)
}

/// How many locks this shell holds (for tests and `--ffkit-held`).
pub fn count() -> usize {
    let me = crate::caller_pid();
    table().iter().filter(|e| e.pid == me).count()
}

/// Gives up the table when the shell functions leave the builtin for the
/// fallback path (`crate::unload`): this shell's held locks are returned
/// as (file, descriptor), the descriptors left open and locked and no
/// longer closed in forked children (the fallback's `ffkit lock-release
/// --fd N` is a child that needs it); kept unlocked descriptors are closed.
pub fn hand_over() -> Vec<(PathBuf, i32)> {
    forget_inherited();
    let me = crate::caller_pid();
    let mut out = Vec::new();
    for e in std::mem::take(&mut *table()) {
        hostfd::fork_keeps(e.fd.as_raw_fd());
        let same = fsutil::ident_fd(&e.fd, Want::Id).is_ok_and(|m| m.is(e.dev, e.ino));
        if e.pid == me && same {
            out.push((e.path, std::os::fd::IntoRawFd::into_raw_fd(e.fd)));
        } else {
            // Not ours, or the number names something of the script's now.
            std::mem::forget(e.fd);
        }
    }
    for e in std::mem::take(&mut *idle()) {
        close_idle(e);
    }
    out
}
