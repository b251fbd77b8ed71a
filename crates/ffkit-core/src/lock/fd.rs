//! Kernel locks held through a descriptor of the caller (fd mode): the
//! shell wrappers' `acquire_critical_lock`, `lock-acquire --fd N [NAME]` and,
//! in-process, the bash builtin.
//!
//! The lock belongs to the caller's open file description, so it lives as
//! long as the caller keeps the descriptor. Given a lock NAME, the
//! descriptor must be open on that name's one lock file (checked by device
//! and inode, so the wrappers and the binary cannot silently lock two
//! different files), and the owner's record (`kind: "fd"`, its pid, start
//! time, descriptor number) is written into the file so `lock-status` names
//! the holder. The record is written through a second descriptor of our own
//! (`/proc/self/fd/N` reopened read-write: the caller's may be write-only
//! with O_APPEND, where pwrite ignores the offset) and only while the lock
//! is held exclusively, as for named locks.
//!
//! The shell functions' own descriptors (the builtin's, and the fallback's
//! `lock-acquire --function FUNC --fd N NAME`) are also marked by their
//! open file description's offset ([`function_mark`]), so that a copy the
//! script makes of one (`exec {c}>&N`) is told from a descriptor it opens
//! on the same file itself: the copy still holds the function's lock, and
//! the function's release unlocks it through the copy
//! ([`release_through_copy`]; docs/shell.md, "Locks").

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsFd, BorrowedFd, RawFd};
use std::path::Path;

use super::holder::{self, Holder, KIND_FD};
use super::{Acquired, Kind, Wait, compat, kernel};

use crate::error::{Error, Result};

/// `fd` as a borrowed descriptor, or EBADF if it is not open.
fn borrowed(fd: RawFd) -> io::Result<BorrowedFd<'static>> {
    let b = kernel::borrow(fd)?;
    rustix::io::fcntl_getfd(b)?;
    Ok(b)
}

/// The file `(dev, ino)` descriptor `fd` is open on.
pub(crate) fn identity(fd: RawFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(borrowed(fd)?)?;
    Ok((st.st_dev, st.st_ino))
}

/// Whether the open file description behind `fd` holds a lock (flock or
/// OFD): `/proc/self/fdinfo/N` lists exactly the locks owned through that
/// description, so another descriptor number, another file or another
/// holder of the same file never counts.
pub(crate) fn holds_lock(fd: RawFd) -> io::Result<bool> {
    borrowed(fd)?;
    fdinfo_lists_a_lock(fd)
}

/// [`holds_lock`] for a descriptor known to be open.
fn fdinfo_lists_a_lock(fd: RawFd) -> io::Result<bool> {
    Ok(fdinfo(fd)?.lock)
}

/// What `/proc/self/fdinfo/N` says of one descriptor: the file offset and
/// the inode of its open file description (`None`: no such line), whether
/// its status flags include `O_NONBLOCK` ([`FUNCTION_FLAG`]) and whether
/// that description holds a lock.
#[derive(Debug, Default)]
struct Info {
    pos: Option<u64>,
    ino: Option<u64>,
    nonblock: bool,
    lock: bool,
}

/// Reads [`Info`] of descriptor `fd` (known to be open). The kernel writes
/// `pos:` and `ino:` before any `lock:` line, so the read stops at the
/// first lock line: one read when the description holds a lock, two when
/// it holds none (the second finds the end).
fn fdinfo(fd: RawFd) -> io::Result<Info> {
    fdinfo_in(None, fd)
}

/// [`fdinfo`] of descriptor `fd` of process `pid` (`None`: this one).
fn fdinfo_in(pid: Option<u32>, fd: RawFd) -> io::Result<Info> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/fdinfo/{fd}"),
        None => format!("/proc/self/fdinfo/{fd}"),
    };
    let info = rustix::fs::open(
        path.as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut out = Info::default();
    // One whole line: its field, if it is one of ours. True at a lock line.
    let mut line = |l: &[u8]| {
        let num = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if l.starts_with(b"lock:") {
            out.lock = true;
        } else if let Some(v) = l.strip_prefix(b"pos:") {
            out.pos = num(v);
        } else if let Some(v) = l.strip_prefix(b"ino:") {
            out.ino = num(v);
        } else if let Some(v) = l.strip_prefix(b"flags:") {
            // Octal, as the kernel prints it.
            out.nonblock = std::str::from_utf8(v)
                .ok()
                .and_then(|v| u64::from_str_radix(v.trim(), 8).ok())
                .is_some_and(|f| f & FUNCTION_FLAG != 0);
        }
        out.lock
    };
    // A few hundred bytes, read straight into the stack; a line split
    // across two reads is kept whole by carrying the tail over.
    let mut buf = [0u8; 2048];
    let mut have = 0;
    loop {
        let n = match rustix::io::read(&info, &mut buf[have..]) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let end = have + n;
        // Whole lines only (all of it at the end): a number cut in two
        // must not be read as a smaller one.
        let tail = if n == 0 {
            end
        } else {
            buf[..end]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        };
        if buf[..tail].split(|&b| b == b'\n').any(&mut line) || n == 0 {
            break;
        }
        // Keep the last, partial, line for the next read.
        buf.copy_within(tail..end, 0);
        have = end - tail;
        if have == buf.len() {
            // One line longer than the buffer is none of ours.
            have = 0;
        }
    }
    Ok(out)
}

/// The file offset the shell functions give the open file description of
/// each lock descriptor they take (`owner`: the shell's pid), which marks
/// it as theirs: a copy of the descriptor (`exec {d}>&N`) shares it, a
/// descriptor the script opened on the same file (`exec 12<"$lockfile"`)
/// has its own (0, or wherever its reads or writes left it). Nothing reads
/// or writes the lock file through that offset (the record is read and
/// written with pread/pwrite at 0), and it is far beyond any lock file's
/// end (1 GiB and the pid, below 2 GiB: every filesystem lets a regular
/// file's offset go that far), so no read or append of the script's ever
/// lands on it. Both ways in see it: the builtin with the same fdinfo read
/// that asks for the lock, the fallback in `/proc/self/fdinfo/N`'s `pos:`
/// line, read with builtins.
pub fn function_mark(owner: u32) -> u64 {
    (1 << 30) + u64::from(owner)
}

/// The status flag every lock descriptor of the shell functions carries
/// (`O_NONBLOCK`, which changes nothing for a regular file): the builtin
/// opens its descriptors with it, the binary sets it on the fallback's
/// (`lock-acquire --function`). No shell sets it on a descriptor the
/// script opens (`exec 12<"$lockfile"`), and unlike the offset
/// ([`function_mark`]) nothing the script does with the descriptor moves
/// it: reading or writing through it (the builtin's is read-write), or a
/// program seeking it (`lseek`, zsh's `sysseek`). So the function's own
/// descriptor stays the function's for its release
/// ([`function_fd`], [`release_in_process`]); a copy is still found by
/// the offset, which names the shell ([`function_copy`]).
pub const FUNCTION_FLAG: u64 = libc::O_NONBLOCK as u64;

/// Gives `fd`'s open file description [`function_mark`]`(owner)`.
pub fn mark_for_function(fd: RawFd, owner: u32) -> io::Result<()> {
    rustix::fs::seek(
        borrowed(fd)?,
        rustix::fs::SeekFrom::Start(function_mark(owner)),
    )?;
    Ok(())
}

/// [`mark_for_function`] and [`FUNCTION_FLAG`] on a descriptor the
/// function did not open itself (the fallback's, opened by the shell).
fn mark_fallback_descriptor(fd: RawFd, owner: u32) -> io::Result<()> {
    mark_for_function(fd, owner)?;
    let b = borrowed(fd)?;
    let fl = rustix::fs::fcntl_getfl(b)?;
    rustix::fs::fcntl_setfl(b, fl | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Whether the open file description `i` describes is a shell function's
/// lock descriptor of `owner`'s: its offset is [`function_mark`]`(owner)`,
/// or it carries [`FUNCTION_FLAG`] (the script moved the offset by
/// reading, writing or seeking through it). Asked only of the number the
/// function's own table names for this shell.
fn is_functions(i: &Info, owner: u32) -> bool {
    i.pos == Some(function_mark(owner)) || i.nonblock
}

/// What a shell function asks of the lock descriptor `fd` it took as
/// `owner`, open on the lock file: whether its open file description is
/// still the function's ([`function_mark`]: not a descriptor the script
/// opened on the same file and number since) and whether it holds a
/// lock. One fdinfo read. Without /proc, the description counts as the
/// function's and the lock is asked of the kernel by re-asserting the
/// exclusive flock without waiting (a no-op on the description that holds
/// it); a descriptor that is not open is neither.
pub fn function_fd(fd: RawFd, owner: u32) -> (bool, bool) {
    if borrowed(fd).is_err() {
        return (false, false);
    }
    match fdinfo(fd) {
        Ok(i) => (is_functions(&i, owner), i.lock),
        Err(_) => (
            true,
            kernel::try_lock_fd(fd, Kind::Exclusive).unwrap_or(true),
        ),
    }
}

/// A descriptor of this process, other than `not`, open on the file
/// `(dev, ino)` through an open file description that carries
/// [`function_mark`]`(owner)` and holds a lock: a copy the script made of
/// a shell function's lock descriptor (`exec {d}>&N`), which holds the
/// function's lock after the script closed the function's own number or
/// opened another file on it. The lowest such number; `None` without one
/// (or without /proc). Only asked when the function's own descriptor is
/// gone or someone holds the lock: `/proc/self/fd` is listed and each
/// descriptor's fdinfo read. For the fallback this process is the binary,
/// which inherited the shell's descriptors (a script's copies are not
/// close-on-exec), under the same numbers.
pub fn function_copy(dev: u64, ino: u64, owner: u32, not: RawFd) -> Option<RawFd> {
    function_copy_in(None, dev, ino, owner, not)
}

/// [`function_copy`] among the descriptors of the shell `pid` itself (its
/// own mark): `lock-release NAME` run by the owner of a lock whose record
/// names a descriptor the script closed or reopened since
/// (`lock::named`, which then duplicates the copy with pidfd_getfd(2)).
pub(crate) fn function_copy_of(pid: u32, dev: u64, ino: u64) -> Option<RawFd> {
    function_copy_in(Some(pid), dev, ino, pid, -1)
}

/// [`function_copy`] in process `pid` (`None`: this one).
fn function_copy_in(pid: Option<u32>, dev: u64, ino: u64, owner: u32, not: RawFd) -> Option<RawFd> {
    let mark = function_mark(owner);
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/fd"),
        None => "/proc/self/fd".to_string(),
    };
    let mut found: Option<RawFd> = None;
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        else {
            continue;
        };
        if n == not || found.is_some_and(|f| f < n) {
            continue;
        }
        let Ok(i) = fdinfo_in(pid, n) else { continue };
        let same = || match pid {
            None => identity(n).is_ok_and(|id| id == (dev, ino)),
            Some(_) => {
                std::fs::metadata(entry.path()).is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino))
            }
        };
        if i.lock && i.pos == Some(mark) && i.ino == Some(ino) && same() {
            found = Some(n);
        }
    }
    found
}

/// The refusal of an acquisition by `owner` of the lock on `path` (file
/// `(dev, ino)`) that this process holds through [`function_copy`]
/// `copy`: exit 5 at once, as for the owner asking again, naming the copy,
/// instead of waiting for itself until the timeout.
pub fn held_through_copy(path: &Path, owner: u32, copy: RawFd) -> Error {
    Error::Conflict(format!(
        "{}: already held by this owner (pid {owner}) through descriptor {copy}, a copy of its lock descriptor; release it first",
        path.display()
    ))
}

/// A shell function's release (`release_critical_lock NAME`) when its own
/// lock descriptor `fd` is gone (the script closed it, or opened a file on
/// its number, the lock's own file included) and a copy
/// ([`function_copy`]) holds the lock on `path` (file `(dev, ino)`): the
/// record is cleared through our own descriptor on the file (or, with
/// `remove`, the file deleted: the old library's release) while the lock
/// is still held, then the copy's open file description, which is the
/// function's, is unlocked (flock `LOCK_UN`), which releases the lock;
/// the copy stays open (the script's). Without a copy,
/// [`descriptor_lost_by_shell`] (exit 4) and nothing is touched.
pub fn release_through_copy(
    fd: RawFd,
    path: &Path,
    (dev, ino): (u64, u64),
    owner: u32,
    remove: bool,
) -> Result<()> {
    let Some(copy) = function_copy(dev, ino, owner, fd) else {
        return Err(descriptor_lost_by_shell(path));
    };
    // The description holds the function's exclusive lock: the record in
    // the file is the one the function wrote (only an exclusive holder
    // writes one).
    if let Ok(f) = reopen(copy) {
        clear_or_remove(&f, remove.then_some(path), None);
    }
    kernel::unlock_fd(copy).map_err(|e| fd_error(copy, "cannot unlock", e))
}

/// Our own read-write descriptor on the file behind `fd`, for the record.
fn reopen(fd: RawFd) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{fd}"))
}

/// Whether `fd` is open on the file `path` names now (device and inode;
/// no file at `path` is `false`).
fn same_file(fd: RawFd, path: &Path) -> Result<bool> {
    let (dev, ino) = identity(fd).map_err(|e| fd_error(fd, "cannot inspect", e))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(m.dev() == dev && m.ino() == ino),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot inspect", path, e)),
    }
}

/// Checks that `fd` is open on the lock file at `path`.
pub(crate) fn check_same(fd: RawFd, path: &Path) -> Result<()> {
    if same_file(fd, path)? {
        return Ok(());
    }
    let open_on = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "another file".into());
    Err(Error::Validation(format!(
        "descriptor {fd} is open on {open_on}, not on the lock file {}",
        path.display()
    )))
}

/// Before anything is taken on a NAME's descriptor: the file must be a
/// regular file (exit 3, [`compat::regular`]) and the descriptor readable
/// (exit 2), since the old library's rule reads the locked file through it.
fn check_name_fd(fd: RawFd, path: &Path) -> Result<()> {
    let b = borrowed(fd).map_err(|e| fd_error(fd, "cannot inspect", e))?;
    compat::regular(b).map_err(|e| Error::io("cannot lock", path, e))?;
    let mode = rustix::fs::fcntl_getfl(b).map_err(|e| fd_error(fd, "cannot inspect", e.into()))?;
    if mode & rustix::fs::OFlags::RWMODE == rustix::fs::OFlags::WRONLY {
        return Err(Error::Validation(format!(
            "descriptor {fd} is open write-only: a NAME's lock needs a descriptor open for reading (e.g. {fd}<FILE or {fd}<>FILE)"
        )));
    }
    Ok(())
}

/// The error for a descriptor: not open, or open in a mode the lock cannot
/// use (exit 2), or the system's reason.
///
/// The kernel answers EBADF both for a number that is not open and for an
/// fcntl lock whose type the descriptor's mode does not allow (an exclusive
/// OFD lock needs a writable descriptor, a shared one a readable one), so
/// the descriptor is looked at again to say which.
pub(crate) fn fd_error(fd: RawFd, what: &str, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EBADF) {
        let mode = kernel::borrow(fd)
            .ok()
            .and_then(|b| rustix::fs::fcntl_getfl(b).ok())
            .map(|fl| fl & rustix::fs::OFlags::RWMODE);
        match mode {
            None => Error::Validation(format!("descriptor {fd}: not open")),
            Some(m) if m == rustix::fs::OFlags::RDONLY => Error::Validation(format!(
                "descriptor {fd} is open read-only: an exclusive fcntl lock needs a descriptor open for writing (e.g. {fd}>>FILE or {fd}<>FILE)"
            )),
            Some(m) if m == rustix::fs::OFlags::WRONLY => Error::Validation(format!(
                "descriptor {fd} is open write-only: a shared fcntl lock needs a descriptor open for reading (e.g. {fd}<FILE or {fd}<>FILE)"
            )),
            Some(_) => Error::Validation(format!(
                "descriptor {fd}: the kernel refused it for this lock ({})",
                crate::error::os_reason(&e)
            )),
        }
    } else {
        Error::LockFailed(format!(
            "{what} descriptor {fd}: {}",
            crate::error::os_reason(&e)
        ))
    }
}

/// Takes `kind` on the caller's descriptor `fd`. With `path` (a NAME's lock
/// file), `fd` must be open on it, and an exclusive lock gets `owner`'s
/// record; with `compat` (`path` is a NAME's file) it
/// follows the old library's file protocol ([`compat`]: a file
/// the old library holds is waited for with the `backoff` schedule; a file
/// deleted or replaced while waiting is an error, exit 2, after which the
/// caller opens the path again). `on_wait` runs once before blocking.
///
/// `function` (a NAME's descriptor taken by the shell functions' fallback,
/// `lock-acquire --function FUNC --fd N NAME`): the taken lock's open file
/// description gets [`function_mark`], and a lock found busy that this
/// process holds through a marked copy ([`function_copy`], the shell's
/// descriptors being this process's) is refused at once (exit 5,
/// [`held_through_copy`]) instead of waited for; a free lock is taken with
/// the one try it always costs.
#[allow(clippy::too_many_arguments)]
pub fn acquire(
    fd: RawFd,
    kind: Kind,
    method: kernel::Method,
    wait: Wait,
    path: Option<&Path>,
    owner: u32,
    compat: Option<compat::Rule>,
    function: bool,
    on_wait: &mut dyn FnMut(),
) -> Result<Acquired> {
    let mut pause = compat.map(|r| (compat::Pause::new(wait, r.backoff), r.follow));
    let on_wait = std::cell::RefCell::new(on_wait);
    let function_path = path.filter(|_| function);
    // Why a function's acquisition was refused while the lock is this
    // shell's already (`owner_holds_elsewhere`).
    let refusal = std::cell::RefCell::new(None);
    let got = acquire_with(
        fd,
        kind,
        path,
        owner,
        function,
        pause.as_mut().map(|(p, f)| (p, *f)),
        &mut || (on_wait.borrow_mut())(),
        &mut || {
            if let Some(p) = function_path {
                // The busy path alone asks for a copy: the try that takes a
                // free lock is the one `lock_fd` would make first.
                if kernel::try_lock_fd_with(fd, kind, method)? {
                    return Ok(Ok(std::time::Duration::ZERO));
                }
                if let Some(e) = owner_holds_elsewhere(fd, None, p, owner, true) {
                    *refusal.borrow_mut() = Some(e);
                    return Ok(Err(super::Denied::Busy));
                }
            }
            // The same check again while the wait lasts, at every slice: the
            // shell may take this very lock through another of its
            // descriptors meanwhile (a trap that runs while bash's `wait`
            // waits for this process: docs/shell.md, "Locks"), and this
            // wait would then wait for its own shell until LOCK_TIMEOUT.
            let mut mine = || {
                let Some(p) = function_path else {
                    return false;
                };
                let e = owner_holds_elsewhere(fd, None, p, owner, true);
                let found = e.is_some();
                if found {
                    *refusal.borrow_mut() = e;
                }
                found
            };
            let mut owner_gone = false;
            let got = kernel::lock_fd(fd, kind, method, wait, &mut mine, &mut || {
                // A NAME's lock is for the owner; when ffkit waits for it as the
                // owner's command (the wrappers), it dies with the owner, so a
                // shell killed while waiting (SIGTERM, SIGHUP) leaves no waiter
                // that could take the lock later.
                if path.is_some() {
                    owner_gone = !die_with_parent(owner);
                }
                if !owner_gone {
                    (on_wait.borrow_mut())();
                }
            });
            if owner_gone {
                if matches!(got, Ok(Ok(_))) {
                    let _ = kernel::unlock_fd_with(fd, method);
                }
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            got
        },
    )?;
    match refusal.into_inner() {
        Some(e) if got.is_err() => Err(e),
        _ => Ok(got),
    }
}

/// The one same-owner check of an acquisition on `fd` by `owner` of the
/// lock on `path`: `owner` holds that lock already through another of its
/// descriptors, so waiting would wait for itself. Its holder record
/// (read through `record`, a readable descriptor of the file, else
/// through the file opened again here) names
/// `owner` and another descriptor still open on the file
/// ([`super::already_held`]); or, with `copies` (the shell functions'
/// descriptors), a marked copy of one of its lock descriptors holds it
/// ([`function_copy`], [`held_through_copy`]). Asked before locking, when
/// the lock is found busy, and at every slice of a wait; the builtin's
/// in-process acquisition asks it too ([`acquire_in_process`]).
fn owner_holds_elsewhere(
    fd: RawFd,
    record: Option<BorrowedFd<'_>>,
    path: &Path,
    owner: u32,
    copies: bool,
) -> Option<Error> {
    let opened;
    let record = match record {
        Some(f) => Some(f),
        None => {
            opened = reopen(fd).ok();
            opened.as_ref().map(AsFd::as_fd)
        }
    };
    let id = identity(fd).ok();
    if let Some(rec) = record.and_then(holder::read_from)
        && rec.pid == owner
        && !(rec.kind == KIND_FD && rec.fd == Some(fd))
        && let Some((dev, ino)) = id
        && rec.holds_kernel_lock(dev, ino)
    {
        return Some(super::already_held(path.display(), owner));
    }
    if copies
        && let Some((dev, ino)) = id
        && let Some(c) = function_copy(dev, ino, owner, fd)
    {
        return Some(held_through_copy(path, owner, c));
    }
    None
}

/// Asks for SIGKILL when the parent exits, if the parent is `owner`; false
/// when the owner is gone already (it exited before or meanwhile). An owner
/// that is not the parent (`--owner PID`) is only checked to be alive.
fn die_with_parent(owner: u32) -> bool {
    if super::parent_pid() != owner {
        return crate::fsutil::pid_alive(owner);
    }
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    super::parent_pid() == owner
}

/// [`acquire`] for a caller inside another program's process (the bash
/// builtin, whose owner is the shell itself), on a descriptor the caller
/// opened itself, read-write and without O_APPEND, on the lock file: the
/// wait installs no signal handler or timer and still waits in the kernel
/// until `deadline`, asking `interrupted` at least every
/// [`kernel::POLL_SLICE`] (see [`kernel::lock_fd`]). `record` is the owner's holder record; the
/// caller writes it with [`write_record`] once it has checked the file.
/// `path` is the lock file, for messages.
///
/// The caller opened the path just before, so no identity check is made
/// here; it checks after locking that the path still names the file it
/// locked (a lock file deleted by hand meanwhile). The same-owner check
/// (the owner already holding the lock through another descriptor, which
/// would wait for itself) is made only when the first try finds the lock
/// held: a free lock is held by nobody.
#[allow(clippy::too_many_arguments)]
pub fn acquire_in_process(
    fd: RawFd,
    kind: Kind,
    method: kernel::Method,
    deadline: Option<std::time::Instant>,
    path: &Path,
    record: Option<&Holder>,
    interrupted: &mut dyn FnMut() -> bool,
    on_wait: &mut dyn FnMut(),
) -> Result<Acquired> {
    // Just opened by the caller: a closed one fails the lock call itself.
    let b = kernel::borrow(fd).map_err(|e| fd_error(fd, "cannot lock", e))?;
    let free =
        kernel::try_lock_fd_with(fd, kind, method).map_err(|e| fd_error(fd, "cannot lock", e))?;
    let got = if free {
        Ok(std::time::Duration::ZERO)
    } else {
        // Held by this shell through another descriptor (its record), or
        // through a copy the script made of one of this shell's lock
        // descriptors (`exec {d}>&N`): it would wait for itself.
        if let Some(mine) = record
            && let Some(e) = owner_holds_elsewhere(fd, Some(b), path, mine.pid, true)
        {
            return Err(e);
        }
        let wait = deadline.map_or(super::Wait::Forever, super::Wait::Until);
        kernel::lock_fd(fd, kind, method, wait, interrupted, on_wait)
            .map_err(|e| fd_error(fd, "cannot lock", e))?
    };
    Ok(got)
}

/// Writes `owner`'s record (acquired now, through descriptor `fd`) into the
/// lock file [`acquire_in_process`] just locked exclusively, whose current length
/// the caller read (its fstat after locking): a shorter record is padded to
/// that length (`holder::write_line_over`). On failure the lock is dropped
/// (`method`).
pub fn write_record(
    fd: RawFd,
    method: kernel::Method,
    owner: &Holder,
    old_len: u64,
    path: &Path,
) -> Result<()> {
    write_record_line(fd, method, &owner.record_line(), old_len, path)
}

/// [`write_record`] of a record made a [`holder::RecordLine`] already (a
/// shell's, the same for each lock it takes).
pub fn write_record_line(
    fd: RawFd,
    method: kernel::Method,
    owner: &holder::RecordLine,
    old_len: u64,
    path: &Path,
) -> Result<()> {
    let b = kernel::borrow(fd).map_err(|e| fd_error(fd, "cannot write to", e))?;
    let line = owner.at(holder::now_epoch(), Some(fd));
    holder::write_line_over(b, line, old_len).map_err(|e| {
        let _ = kernel::unlock_fd_with(fd, method);
        Error::io("cannot write holder record", path, e)
    })
}

/// The identity check, the same-owner check and the record around `lock`.
#[allow(clippy::too_many_arguments)]
fn acquire_with(
    fd: RawFd,
    kind: Kind,
    path: Option<&Path>,
    owner: u32,
    function: bool,
    mut pause: Option<(&mut compat::Pause, bool)>,
    on_wait: &mut dyn FnMut(),
    lock: &mut dyn FnMut() -> io::Result<Acquired>,
) -> Result<Acquired> {
    let record = match path {
        Some(p) => {
            check_same(fd, p)?;
            check_name_fd(fd, p)?;
            reopen(fd).ok()
        }
        None => None,
    };
    // The same owner through another descriptor would wait for itself.
    if let (Some(f), Some(p)) = (&record, path)
        && let Some(e) = owner_holds_elsewhere(fd, Some(f.as_fd()), p, owner, false)
    {
        return Err(e);
    }
    let mut got = lock().map_err(|e| fd_error(fd, "cannot lock", e))?;
    // A NAME's file: the old library's file protocol (`compat`).
    if let (Some(p), Kind::Exclusive, true) = (path, kind, pause.is_some()) {
        let mut said_waiting = false;
        while got.is_ok() {
            let follow = pause.as_ref().is_some_and(|(_, f)| *f);
            let b = borrowed(fd).map_err(|e| fd_error(fd, "cannot inspect", e))?;
            // An error here must not leave the lock taken.
            let verdict = compat::check(b, p, false, follow).map_err(|e| {
                let _ = kernel::unlock_fd(fd);
                Error::io("cannot inspect", p, e)
            })?;
            match verdict {
                compat::Verdict::Ours => break,
                compat::Verdict::Replaced => {
                    let _ = kernel::unlock_fd(fd);
                    return Err(Error::Validation(format!(
                        "descriptor {fd}: the lock file {} was deleted or replaced (released) while waiting; open it again and retry",
                        p.display()
                    )));
                }
                compat::Verdict::OldLibrary(_) => {
                    let _ = kernel::unlock_fd(fd);
                    if !said_waiting {
                        on_wait();
                        said_waiting = true;
                    }
                    if let Some(Err(d)) = pause.as_mut().map(|(p, _)| p.sleep(&mut || false)) {
                        got = Err(d);
                        break;
                    }
                    got = lock().map_err(|e| fd_error(fd, "cannot lock", e))?;
                }
            }
        }
    }
    // The shell functions' descriptor: its description marked as theirs
    // (nothing is read or written through its offset). Unmarked, their
    // release would take it for the script's: not taken then.
    if function
        && path.is_some()
        && got.is_ok()
        && let Err(e) = mark_fallback_descriptor(fd, owner)
    {
        let _ = kernel::unlock_fd_with(fd, kernel::Method::Flock);
        let _ = kernel::unlock_fd_with(fd, kernel::Method::Ofd { start: 0, len: 0 });
        return Err(fd_error(fd, "cannot mark", e));
    }
    if got.is_ok()
        && kind == Kind::Exclusive
        && let Some(f) = &record
    {
        let mut rec = Holder::new(KIND_FD, owner, None);
        rec.fd = Some(fd);
        if let Err(e) = holder::write_to(f, &rec) {
            let _ = kernel::unlock_fd(fd);
            return Err(Error::io(
                "cannot write holder record",
                path.unwrap_or(Path::new("?")),
                e,
            ));
        }
    }
    Ok(got)
}

/// At release, while the lock is still held exclusively through `f`: a
/// NAME's lock file (`path`) is deleted, the old library's release
/// ([`super::compat::remove`]); otherwise, or if that fails, the record is
/// cleared (`holder::clear`; `len`: the file's length, if known).
pub(crate) fn clear_or_remove(f: impl AsFd, path: Option<&Path>, len: Option<u64>) {
    if let Some(p) = path
        && let Ok(true) = super::compat::remove(&f, p)
    {
        return;
    }
    let _ = holder::clear(f, len);
}

/// Why an fd release did nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum NotHeld {
    /// The descriptor's open file description holds no lock.
    NoLock,
    /// A shell function's descriptor number is open on the lock file, but
    /// through an open file description without [`function_mark`]: one the
    /// script opened on that number since (`exec 12<"$lockfile"`). Nothing
    /// was touched; the number is the script's.
    Reopened,
}

/// A shell function's release (`release_critical_lock NAME`) of the lock
/// it took through its descriptor on `path`, when that descriptor holds no
/// lock any more ([`NotHeld::NoLock`]: another process force-released it,
/// `ffkit lock-release --force NAME`, whether the name is free now or held
/// by someone else): exit 4, `not held by this shell`, with why. One
/// verdict and one line for the builtin ([`release_in_process`]) and the
/// fallback (`lock-release --fd N --function FUNC NAME`, [`release`]),
/// both of which ask the kernel (`/proc/self/fdinfo/N`) whether the
/// descriptor still holds it.
pub fn lost_by_shell(path: &Path) -> Error {
    Error::NotFound(format!(
        "{}: not held by this shell (its lock was released since it was taken: lock-release NAME, lock-release --force or an unlock of its descriptor)",
        path.display()
    ))
}

/// A shell function's release (`release_critical_lock NAME`) or
/// acquisition of a lock it took through a descriptor that the script has
/// closed, or opened again on another file, since (`exec {fd}>&-`, `exec
/// 12>log` on the lock's number): closing it dropped the lock, so the
/// shell does not hold it: exit 4, `not held by this shell`, with why. One
/// verdict and one line for the builtin and the fallback
/// ([`release_for_function`]); neither closes the descriptor, which is the
/// script's now.
pub fn descriptor_lost_by_shell(path: &Path) -> Error {
    Error::NotFound(format!(
        "{}: not held by this shell (the script closed or reopened the descriptor it was held through, which dropped the lock)",
        path.display()
    ))
}

/// The fallback's `release_critical_lock NAME` of its own descriptor `fd`
/// (`lock-release --fd N --function FUNC NAME`), with the builtin's
/// verdicts: a descriptor the script closed or opened another file on
/// (the lock's own file included: an open file description without
/// [`function_mark`]) is released through a
/// copy that holds the lock ([`release_through_copy`], 0), else
/// [`descriptor_lost_by_shell`] (4); one holding no lock any more is
/// [`lost_by_shell`] (4); else [`release`].
pub fn release_for_function(fd: RawFd, path: &Path, owner: u32, compat: bool) -> Result<()> {
    // A descriptor with the function's mark is the function's own even
    // when `path` names another file now (its dir moved aside and made
    // again, say): released, as the builtin releases the descriptor its
    // table names. Only an unmarked one on another file is the script's.
    let gone = borrowed(fd).is_err() || !function_fd(fd, owner).0;
    if gone {
        return match std::fs::metadata(path) {
            Ok(m) => release_through_copy(fd, path, (m.dev(), m.ino()), owner, compat),
            Err(_) => Err(descriptor_lost_by_shell(path)),
        };
    }
    release_checked(fd, Some(path), owner, compat)?.map_err(|_| lost_by_shell(path))
}

/// Releases the lock held through the caller's descriptor `fd` (checked: a
/// descriptor holding no lock is [`NotHeld`]); with `path`, `fd` must be
/// open on it. Clears `owner`'s record first, while still exclusive; with
/// `compat` (`path` is a NAME's file) deletes the file instead, the old
/// library's release ([`compat::remove`]).
pub fn release(
    fd: RawFd,
    path: Option<&Path>,
    owner: u32,
    compat: bool,
) -> Result<std::result::Result<(), NotHeld>> {
    // A descriptor whose file has no name left (deleted or replaced since
    // its lock was taken: by hand, the old library's release or stale
    // break) held the name's lock and guards nothing now: its release is
    // a release (0), on every path, as the builtin releases its own
    // descriptor (docs/shell.md, "Locks"). Only a descriptor on another
    // file that still has a name is a disagreement about where the lock
    // lives (exit 2).
    if let Some(p) = path.filter(|_| !compat::fd_unlinked(fd)) {
        check_same(fd, p)?;
    }
    release_checked(fd, path, owner, compat)
}

/// [`release`] once `fd` is known to be open on `path` (or `path`'s file
/// has no name left).
fn release_checked(
    fd: RawFd,
    path: Option<&Path>,
    owner: u32,
    compat: bool,
) -> Result<std::result::Result<(), NotHeld>> {
    if !holds_lock(fd).map_err(|e| fd_error(fd, "cannot inspect", e))? {
        return Ok(Err(NotHeld::NoLock));
    }
    if let Ok(f) = reopen(fd) {
        let rec = holder::read_from(&f);
        let ours = rec
            .as_ref()
            .is_some_and(|r| r.kind == KIND_FD && r.pid == owner && r.fd == Some(fd));
        // A NAME's file damaged while this descriptor held it exclusively
        // (no record is left, only an exclusive holder may write one): the
        // release leaves the free line over it, as the builtin's does.
        let damaged = rec.is_none()
            && path.is_some()
            && kernel::try_lock_fd(fd, Kind::Exclusive).unwrap_or(false);
        if ours || damaged {
            clear_or_remove(&f, path.filter(|_| compat), None);
        }
    }
    // Whichever kind it holds: flock, or an OFD lock (whole file).
    kernel::unlock_fd(fd).map_err(|e| fd_error(fd, "cannot unlock", e))?;
    kernel::unlock_fd_with(fd, kernel::Method::Ofd { start: 0, len: 0 })
        .map_err(|e| fd_error(fd, "cannot unlock", e))?;
    Ok(Ok(()))
}

/// [`release`] for the descriptor [`acquire_in_process`] locked (the caller
/// knows it is open on the lock file, having checked device and inode with
/// fstat just before). It first asks the kernel whether this description
/// still holds a lock (`/proc/self/fdinfo/N`, as [`release`] does), so the
/// record is cleared only while it really holds the file exclusively: when
/// its lock was released behind the shell's back (another process holds
/// the name now, or nobody does), nothing is touched and the answer is
/// [`NotHeld`] ([`lost_by_shell`]). Then the record is
/// cleared (only an exclusive holder ever writes it, so it is the one
/// [`acquire_in_process`] wrote; `len`: the file's length, if the caller
/// knows it, which spares a fstat) and `method` unlocked.
/// With `path` (a NAME's lock file), the file is deleted instead of cleared
/// ([`super::compat::remove`]). With `owner` (a shell function's
/// descriptor), a description without [`function_mark`]`(owner)` is the
/// script's ([`NotHeld::Reopened`]) and nothing is touched; the same
/// fdinfo read answers both questions.
pub fn release_in_process(
    fd: RawFd,
    method: kernel::Method,
    path: Option<&Path>,
    len: Option<u64>,
    owner: Option<u32>,
) -> Result<std::result::Result<(), NotHeld>> {
    let b = kernel::borrow(fd).map_err(|e| fd_error(fd, "cannot inspect", e))?;
    // The kernel's word, as the fallback's release asks it ([`release`]):
    // a lock released behind the shell's back is not taken again here,
    // whether the name is free now or another process holds it
    // ([`lost_by_shell`]). The description this shell locked exclusively
    // and that still lists a lock holds it exclusively.
    // Without /proc, re-asserting the exclusive lock without waiting (a
    // no-op on the description that holds it) is all there is to ask.
    let held = match fdinfo(fd) {
        Ok(i) if owner.is_some_and(|o| !is_functions(&i, o)) => {
            return Ok(Err(NotHeld::Reopened));
        }
        Ok(i) => {
            // The function's description, its offset moved by the script
            // (written or seeked through): marked again, as the builtin
            // keeps it for its next acquisition, so that a copy made of it
            // then is found (`function_copy` asks the offset).
            if let Some(o) = owner.filter(|&o| i.pos != Some(function_mark(o))) {
                let _ = mark_for_function(fd, o);
            }
            i.lock
        }
        Err(_) => kernel::try_lock_fd_with(fd, Kind::Exclusive, method)
            .map_err(|e| fd_error(fd, "cannot inspect", e))?,
    };
    if !held {
        return Ok(Err(NotHeld::NoLock));
    }
    clear_or_remove(b, path, len);
    kernel::unlock_fd_with(fd, method).map_err(|e| fd_error(fd, "cannot unlock", e))?;
    Ok(Ok(()))
}

/// Releases the lock on `path` that this process (`pid`) took through one of
/// its descriptors before an `exec` replaced its program (the bash
/// builtin's lock kept across `exec bash`: the new shell's table is empty,
/// but the descriptor is still open and locked). Adopted only when the
/// file's record is a descriptor holder's naming this very process (pid,
/// start time, host) and that descriptor number is open on the same file
/// and its open file description holds a lock (`/proc/self/fdinfo`): a
/// script's own descriptor on the file holds none. It is released as by
/// [`release_in_process`] (with `remove`, the file is deleted: the old
/// library's protocol) and closed, since nothing in the new program owns
/// it. `Ok(None)`: no such descriptor (another process's lock, a child's
/// or subshell's question, or no lock), and nothing was touched.
pub fn release_left_by_exec(
    path: &Path,
    pid: u32,
    remove: bool,
) -> Result<Option<std::result::Result<(), NotHeld>>> {
    let Ok(f) = crate::fsutil::open_read(path) else {
        return Ok(None);
    };
    let Some(rec) = holder::read_from(&f) else {
        return Ok(None);
    };
    let Some(fd) = rec.fd.filter(|_| rec.kind == KIND_FD && rec.pid == pid) else {
        return Ok(None);
    };
    if rec.host != holder::hostname() || !holder::same_process(pid, rec.start) {
        return Ok(None);
    }
    let Ok(st) = rustix::fs::fstat(&f) else {
        return Ok(None);
    };
    drop(f);
    let mine = identity(fd).is_ok_and(|id| id == (st.st_dev, st.st_ino))
        && holds_lock(fd).unwrap_or(false);
    if !mine {
        return Ok(None);
    }
    let done = release_in_process(
        fd,
        kernel::Method::Flock,
        remove.then_some(path),
        None,
        None,
    )?;
    // The previous program's descriptor: no handle of this program owns it.
    crate::rawfd::close_unowned(fd, fd);
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;

    /// The functions' mark: a copy of a marked, locked descriptor is found
    /// once the original is closed, and released through without being
    /// closed; the same file opened again on its own is not the
    /// function's, nor a copy of it; a description that lost its lock is
    /// no copy.
    #[test]
    fn a_copy_of_a_marked_descriptor_is_found_and_released_through() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.lock");
        drop(kernel::open_lock_file(&p, true, 0o600).unwrap());
        // Opened as a script's redirection opens it: without FUNCTION_FLAG.
        let f = OpenOptions::new().read(true).open(&p).unwrap();
        let me = std::process::id();
        let id = identity(f.as_raw_fd()).unwrap();
        assert!(kernel::try_lock_fd(f.as_raw_fd(), Kind::Exclusive).unwrap());
        assert_eq!(function_fd(f.as_raw_fd(), me), (false, true));
        mark_for_function(f.as_raw_fd(), me).unwrap();
        assert_eq!(function_fd(f.as_raw_fd(), me), (true, true));
        // Another owner's mark is not this one's.
        assert_eq!(function_fd(f.as_raw_fd(), me + 1), (false, true));
        // With the flag, a description whose offset the script moved is
        // still the function's; a copy is found by the offset only.
        mark_fallback_descriptor(f.as_raw_fd(), me).unwrap();
        rustix::fs::seek(&f, rustix::fs::SeekFrom::Start(3)).unwrap();
        assert_eq!(function_fd(f.as_raw_fd(), me), (true, true));
        assert_eq!(function_copy(id.0, id.1, me, -1), None);
        mark_for_function(f.as_raw_fd(), me).unwrap();
        let again = File::open(&p).unwrap();
        assert_eq!(function_fd(again.as_raw_fd(), me), (false, false));
        let copy = f.try_clone().unwrap();
        let orig = f.as_raw_fd();
        assert_eq!(function_copy(id.0, id.1, me, orig), Some(copy.as_raw_fd()));
        drop(f);
        assert_eq!(function_copy(id.0, id.1, me, orig), Some(copy.as_raw_fd()));
        assert_eq!(function_copy(id.0, id.1, me + 1, orig), None);
        release_through_copy(orig, &p, id, me, false).unwrap();
        // Unlocked, still open: another description takes the lock.
        assert!(rustix::io::fcntl_getfd(&copy).is_ok());
        assert!(kernel::try_lock_fd(again.as_raw_fd(), Kind::Exclusive).unwrap());
        assert_eq!(function_copy(id.0, id.1, me, orig), None);
        assert_eq!(
            release_through_copy(orig, &p, id, me, false)
                .unwrap_err()
                .exit_code(),
            4
        );
    }

    /// The builtin's path: a descriptor of this very process (the "shell"),
    /// locked without signals, gets a record naming this process and the
    /// descriptor; its release clears the record and refuses a second time.
    /// A second descriptor of the same owner on the held file is refused at
    /// once instead of waiting for itself.
    #[test]
    fn polled_descriptor_lock_records_the_calling_process() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.lock");
        let open = || kernel::open_lock_file(&p, true, 0o600).unwrap();
        let f = open();
        let me = std::process::id();
        let mine = Holder::new(KIND_FD, me, None);
        // Both takes differ only in the descriptor.
        let take = |fd| {
            acquire_in_process(
                fd,
                Kind::Exclusive,
                kernel::Method::Flock,
                None,
                &p,
                Some(&mine),
                &mut || false,
                &mut || {},
            )
        };
        let got = take(f.as_raw_fd()).unwrap();
        assert!(got.is_ok());
        let len = f.metadata().unwrap().len();
        write_record(f.as_raw_fd(), kernel::Method::Flock, &mine, len, &p).unwrap();
        let rec_len = f.metadata().unwrap().len();
        let rec = holder::read_from(File::open(&p).unwrap()).unwrap();
        assert_eq!(
            (rec.kind.as_str(), rec.pid, rec.fd),
            (KIND_FD, me, Some(f.as_raw_fd()))
        );
        let m = std::fs::metadata(&p).unwrap();
        assert!(rec.holds_kernel_lock(m.dev(), m.ino()));
        assert!(holds_lock(f.as_raw_fd()).unwrap());
        let g = open();
        let again = take(g.as_raw_fd());
        assert_eq!(again.unwrap_err().exit_code(), 5);
        assert!(!holds_lock(g.as_raw_fd()).unwrap());
        // Another description takes it after ours was unlocked behind our
        // back: the release touches nothing of the new holder's.
        kernel::unlock_fd(f.as_raw_fd()).unwrap();
        assert!(kernel::try_lock_fd(g.as_raw_fd(), Kind::Exclusive).unwrap());
        assert_eq!(
            release_in_process(f.as_raw_fd(), kernel::Method::Flock, None, None, None).unwrap(),
            Err(NotHeld::NoLock)
        );
        assert!(!std::fs::read(&p).unwrap().is_empty());
        kernel::unlock_fd(g.as_raw_fd()).unwrap();
        assert!(kernel::try_lock_fd(f.as_raw_fd(), Kind::Exclusive).unwrap());
        assert_eq!(
            release_in_process(f.as_raw_fd(), kernel::Method::Flock, None, None, None).unwrap(),
            Ok(())
        );
        // The record is replaced by the free line, padded to the record's
        // length: no holder, and the file keeps its length.
        let after = std::fs::read(&p).unwrap();
        assert_eq!(after.len() as u64, rec_len);
        assert!(after.starts_with(holder::FREE_LINE.strip_suffix(b"\n").unwrap()));
        assert!(after.ends_with(b" \n") && holder::read_from(File::open(&p).unwrap()).is_none());
        assert!(kernel::try_lock_fd(g.as_raw_fd(), Kind::Exclusive).unwrap());
    }
}
