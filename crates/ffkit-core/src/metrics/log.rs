//! Writing and trimming the metrics log.
//!
//! - **Append**: one whole row per `write(2)` on an `O_APPEND` descriptor, so
//!   concurrent writers never interleave. The appender holds a *shared*
//!   `flock` on the descriptor while it writes, and after locking checks that
//!   its descriptor is still the file at the path (same device and inode); if
//!   a trim replaced the file meanwhile it reopens. A log that ends
//!   mid-line gets a newline before the row ([`ends_mid_line`]). Cost:
//!   open, flock, statx, statx, pread of the last byte, write, close (and no `stat` of the directory first for self-timing,
//!   which must not create it: the open's ENOENT says it is missing).
//! - **Trim / cleanup**: rewrite under an *exclusive* `flock` on the current
//!   file: copy the rows to keep into a temp file beside it and rename it over
//!   the path before unlocking. An appender either wrote before the trimmer
//!   got its lock (so its row is in the copied data, or deliberately trimmed as
//!   one of the oldest), or gets its lock after the rename, sees the inode
//!   changed, and appends to the new file. No append is lost.
//! - **Automatic trim**: after an append, when the file's size (from the
//!   `statx` already done) exceeds the cap, the appender trims the log to the
//!   newest rows filling at most half the cap, keeping a leading `#` header.
//!
//! - **One name**: a log with a second name (a hard link) is split off
//!   before a row goes in ([`split_off`]: a copy renamed over the path,
//!   as a trim's), so no row reaches the other name; the name count comes
//!   from the append's `statx`.
//!
//! Writers that append without the lock (a plain `echo >> log` of an old
//! script) can lose a row that lands during a trim's copy; ffkit's own
//! writers and the shell wrappers always lock.
//!
//! - **Kept descriptor** (a long-lived process: the bash builtin, see
//!   [`keep_descriptor_open`]): the appender's descriptor stays open across
//!   appends, placed as the builtin's lock descriptors are
//!   ([`crate::hostfd`]: the highest free number below min(soft
//!   `RLIMIT_NOFILE`, 1024), not close-on-exec, closed in every forked
//!   child), keyed by path, device, inode and pid. A script's
//!   `exec 200>f` or a low `ulimit -n` never meets it; `exec prog` leaves
//!   it open in the new program, like a held lock's. Each append
//!   re-verifies it (statx: still our file at that descriptor number; after
//!   the shared lock, statx: still the file at the path) and otherwise
//!   reopens, so a trim or cleanup (new inode), a path
//!   change, a fork (another pid) or a script that closed or reused the
//!   number is followed exactly as the open-per-append path follows it.
//!   A number the script reused on the log itself passes the inode check;
//!   before a kept number is closed and after a failed write its open
//!   flags tell it from ours ([`opened_as_ours`]), and a script's is
//!   forgotten, never closed (the row then goes through a descriptor of
//!   our own). Not detected without a call per row: a script's writable
//!   `O_APPEND` descriptor on the log at the kept number while the path
//!   still names it (rows land through it; the shared flock is taken and
//!   dropped on the script's open file description).
//!   Cost: statx, flock, statx, pread of the last byte, write, unlock
//!   (the byte is read on every row: a log rewritten in place to the
//!   size our last row left, ending mid-line, is not told by its size).
//!   Every `statx` asks for
//!   the inode (and size, type) only, never the times
//!   ([`crate::fsutil::Ident`]: on Linux ≥ 6.13 a stat that returns them
//!   makes the next append dirty the inode for a fine-grained timestamp).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::read::{self, Line};
use crate::error::{Error, ExitKind, Result};
use crate::fsutil;

/// Formats a duration in milliseconds with microsecond precision, without
/// trailing zeros: `15`, `0.123`, `2.5`.
pub fn format_ms(ms: f64) -> String {
    let mut out = String::new();
    push_ms(&mut out, ms);
    out
}

/// [`format_ms`] appended to `out`. The bytes are exactly those of
/// `format!("{:.3}")` with the trailing zeros (and a bare `.`) trimmed;
/// the common case (a duration under 11 days whose thousandths are not
/// within a millionth of a tie) is written from integers, without the
/// formatting machinery (a few thousand instructions per metrics row).
/// Exact because `ms * 1000.0` is off the true product by at most half an
/// ulp (under 1.2e-7 below 1e9), so when the fraction is farther than 1e-6
/// from one half both round the same way; otherwise, and for -0, huge or
/// non-finite values, `format!` decides.
fn push_ms(out: &mut String, ms: f64) {
    let ms = ms.max(0.0);
    let u = ms * 1000.0;
    let fast = ms.is_sign_positive() && u < 1e9;
    let floor = u.floor();
    let frac = u - floor;
    if !fast || (frac - 0.5).abs() <= 1e-6 {
        let s = format!("{ms:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        out.push_str(if s.is_empty() { "0" } else { s });
        return;
    }
    // In range: below 1e9, so the cast is exact.
    let micros = floor as u64 + u64::from(frac > 0.5);
    push_u64(out, micros / 1000);
    let milli = micros % 1000;
    if milli != 0 {
        // Three digits, the trailing zeros left out.
        let digits = [milli / 100, milli / 10 % 10, milli % 10];
        let n = 3 - usize::from(milli.is_multiple_of(10)) - usize::from(milli.is_multiple_of(100));
        out.push('.');
        out.extend(digits[..n].iter().map(|&d| char::from(b'0' + d as u8)));
    }
}

/// `n` in decimal, appended to `out` (what `format!("{n}")` writes).
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(buf[i..].iter().map(|&b| char::from(b)));
}

/// One row, newline included: `timestamp,op,ms` as
/// `format!("{timestamp},{op},{}\n", format_ms(ms))` writes it.
pub fn format_row(timestamp: i64, op: &str, ms: f64) -> String {
    let mut row = String::with_capacity(op.len() + 40);
    if timestamp < 0 {
        row.push('-');
    }
    push_u64(&mut row, timestamp.unsigned_abs());
    row.push(',');
    row.push_str(op);
    row.push(',');
    push_ms(&mut row, ms);
    row.push('\n');
    row
}

/// How many times an appender follows a replaced file before giving up
/// (each retry means a trim completed in between; more than a few in a row
/// means something keeps replacing the file).
const MAX_REOPENS: u32 = 64;

/// Opens the log for appending, creating it, and its directory when
/// `mkdir` says so (`Ok(None)`: the directory does not exist and `mkdir` is
/// false). Not checked to be a regular file: the caller's `fstat`, after
/// its lock, does that.
fn open_append(path: &Path, mkdir: bool) -> Result<Option<File>> {
    match fsutil::open_rw_create_unchecked(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !mkdir => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fsutil::create_private_dir(dir)?;
            }
            fsutil::open_rw_create_unchecked(path)
                .map(Some)
                .map_err(|e| Error::io("cannot open", path, e))
        }
        Err(e) => Err(Error::io("cannot open", path, e)),
    }
}

/// Whether the open file `id` is still the file at `path` (a `statx` for
/// the inode only: [`fsutil::Ident`]).
fn still_current(path: &Path, id: &fsutil::Ident) -> bool {
    fsutil::ident_path(path, fsutil::Want::Id).is_ok_and(|m| m.is(id.dev, id.ino))
}

/// Appends one row to the log at `path`, creating it (and its directory),
/// and trims the log when it grew above `max_bytes` (0: never trim).
pub fn append(path: &Path, timestamp: i64, op: &str, ms: f64, max_bytes: u64) -> Result<()> {
    let row = format_row(timestamp, op, ms);
    let size = match append_kept(path, row.as_bytes())? {
        Some(size) => size,
        None => match append_opening(path, row.as_bytes(), true)? {
            Some(size) => size,
            None => return Err(Error::General(format!("cannot open {}", path.display()))),
        },
    };
    trim_if_above(path, size, max_bytes)
}

/// [`append`] into a log whose directory exists: `Ok(false)`, having done
/// nothing, when it does not (learnt from the open itself, so no `stat` of
/// the directory first). For self-timing, which never creates a directory.
pub fn append_in_existing_dir(
    path: &Path,
    timestamp: i64,
    op: &str,
    ms: f64,
    max_bytes: u64,
) -> Result<bool> {
    let row = format_row(timestamp, op, ms);
    let size = match append_kept(path, row.as_bytes())? {
        Some(size) => size,
        None => match append_opening(path, row.as_bytes(), false)? {
            Some(size) => size,
            None => return Ok(false),
        },
    };
    trim_if_above(path, size, max_bytes).map(|()| true)
}

/// [`append`] through the kept descriptor only: `Ok(false)`, having done
/// nothing, when no valid kept descriptor is open on `path` (the caller then
/// decides whether the log may be created).
pub fn append_if_kept(
    path: &Path,
    timestamp: i64,
    op: &str,
    ms: f64,
    max_bytes: u64,
) -> Result<bool> {
    let row = format_row(timestamp, op, ms);
    match append_kept(path, row.as_bytes())? {
        Some(size) => trim_if_above(path, size, max_bytes).map(|()| true),
        None => Ok(false),
    }
}

fn trim_if_above(path: &Path, size: u64, max_bytes: u64) -> Result<()> {
    if max_bytes > 0 && size > max_bytes {
        trim(path, max_bytes)?;
    }
    Ok(())
}

/// Opens the log, appends `row` under the shared lock (following a file a
/// trim replaced meanwhile) and returns the size after it (`None`: no
/// directory, and `mkdir` false). With [`keep_descriptor_open`], the
/// descriptor is kept for the next append.
fn append_opening(path: &Path, row: &[u8], mkdir: bool) -> Result<Option<u64>> {
    let mut reopens = 0;
    loop {
        let Some(f) = open_append(path, mkdir)? else {
            return Ok(None);
        };
        f.lock_shared()
            .map_err(|e| Error::io("cannot lock", path, e))?;
        // One statx, under the lock: a regular file (a FIFO opens, and is
        // refused here), its identity and its size (no times: see
        // [`fsutil::Ident`]).
        let meta = fsutil::ident_fd(&f, fsutil::Want::KindSize)
            .map_err(|e| Error::io("cannot stat", path, e))?;
        if !meta.is_file() {
            return Err(Error::io("cannot open", path, fsutil::not_regular()));
        }
        // A second name (`ln victim DIR/.perf-metrics.csv`, a dedup tool,
        // `cp -al`): rows appended here (and the mode fixed below) went
        // into the other file too. The path gets a file of its own with
        // the same rows, as a trim gives it one, and the other name is
        // never written again. From the statx made anyway: nothing more
        // for a log with one name.
        if meta.nlink > 1 {
            drop(f);
            split_off(path)?;
            reopens += 1;
            keeps_being_replaced(path, reopens)?;
            continue;
        }
        if !still_current(path, &meta) {
            reopens += 1;
            keeps_being_replaced(path, reopens)?;
            continue;
        }
        // 0600 whatever the umask, from the statx made anyway.
        fsutil::fix_mode_of(&f, meta.perm, fsutil::FILE_MODE)
            .map_err(|e| Error::io("cannot chmod", path, e))?;
        let heal = ends_mid_line(f.as_fd(), meta.size);
        append_row(f.as_fd(), row, heal, || true)
            .map_err(|e| Error::io("cannot append to", path, e))?;
        let end = meta.size + u64::from(heal) + row.len() as u64;
        if KEEP.load(Ordering::Relaxed) {
            let _ = f.unlock();
            keep(path, f, &meta);
        }
        return Ok(Some(end));
        // Otherwise `f` closes here, which releases the shared lock.
    }
}

/// The error of an append that found the file replaced more than
/// [`MAX_REOPENS`] times.
fn keeps_being_replaced(path: &Path, reopens: u32) -> Result<()> {
    if reopens > MAX_REOPENS {
        return Err(Error::LockFailed(format!(
            "cannot append to {}: the file keeps being replaced",
            path.display()
        )));
    }
    Ok(())
}

/// Whether appenders keep their descriptor open (see the module doc).
static KEEP: AtomicBool = AtomicBool::new(false);

/// The kept descriptor. Only a process that called [`keep_descriptor_open`]
/// ever fills it; a forked child's copy names its parent's pid and is
/// dropped on first use.
static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

struct Kept {
    path: PathBuf,
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    pid: rustix::process::Pid,
}

/// Makes this process keep the metrics log open across appends: for a
/// process that appends many rows over its life (the bash builtin). The
/// binary appends once and exits, and never calls this.
pub fn keep_descriptor_open() {
    KEEP.store(true, Ordering::Relaxed);
}

/// The pid of the process making the current call, as its caller already
/// read it (the bash builtin reads it once on every entry, and a forked
/// shell makes no append before its first entry); 0: ask the kernel.
static CALLER_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Tells the appender the pid of the process making the calls that follow
/// (see [`CALLER_PID`]): one getpid fewer per row.
pub fn set_caller_pid(pid: rustix::process::Pid) {
    CALLER_PID.store(pid.as_raw_nonzero().get(), Ordering::Relaxed);
}

fn my_pid() -> rustix::process::Pid {
    match rustix::process::Pid::from_raw(CALLER_PID.load(Ordering::Relaxed)) {
        Some(p) => p,
        None => rustix::process::getpid(),
    }
}

fn kept() -> std::sync::MutexGuard<'static, Option<Kept>> {
    KEPT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps `f` (just used to append to `path`, whose identity is `meta`).
fn keep(path: &Path, f: File, meta: &fsutil::Ident) {
    let Ok(fd) = crate::hostfd::high_fd(&f) else {
        return;
    };
    drop(f);
    if !crate::hostfd::fork_closes(fd.as_raw_fd()) {
        return;
    }
    let old = kept().replace(Kept {
        path: path.to_path_buf(),
        fd,
        dev: meta.dev,
        ino: meta.ino,
        pid: my_pid(),
    });
    if let Some(old) = old {
        forget_kept(old);
    }
}

/// Whether the open file at `fd` was opened as ours is
/// ([`fsutil::open_rw_create_unchecked`]: read-write, append, non-blocking).
/// A script's redirection onto the number, even on the same file
/// (`exec 1023<log`, `exec 1023>>log`), never has that set: bash opens
/// read-only, write-only or without `O_APPEND`, and never non-blocking.
/// The device and inode alone cannot tell a script's descriptor on our file
/// from ours. One `fcntl(F_GETFL)`, asked only before a kept number is
/// closed and after a failed write, never on the common row.
fn opened_as_ours(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use rustix::fs::OFlags;
    let mask = OFlags::RWMODE | OFlags::APPEND | OFlags::NONBLOCK;
    rustix::fs::fcntl_getfl(fd)
        .is_ok_and(|f| f & mask == OFlags::RDWR | OFlags::APPEND | OFlags::NONBLOCK)
}

/// Drops a kept descriptor: closes it when the number still names our file
/// opened as ours, else leaves the number alone (the script closed or
/// reused it, perhaps on the same file).
fn forget_kept(k: Kept) {
    crate::hostfd::fork_keeps(k.fd.as_raw_fd());
    let ours = fsutil::ident_fd(&k.fd, fsutil::Want::Id).is_ok_and(|m| m.is(k.dev, k.ino))
        && opened_as_ours(k.fd.as_fd());
    if ours {
        drop(k.fd);
    } else {
        std::mem::forget(k.fd);
    }
}

/// Appends `row` through the kept descriptor when one is valid for `path`;
/// returns the log's size after it, or `None` (nothing written) when there is
/// none: never kept, another path, another process, or no longer the file
/// at `path` (then it is dropped).
fn append_kept(path: &Path, row: &[u8]) -> Result<Option<u64>> {
    if !KEEP.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let mut slot = kept();
    let Some(k) = slot.as_ref() else {
        return Ok(None);
    };
    if k.path != path || k.pid != my_pid() {
        if let Some(k) = slot.take() {
            forget_kept(k);
        }
        return Ok(None);
    }
    // Still our file at that number (a script may have closed or reused it).
    // (statx with the minimal mask, not fstat: [`fsutil::Ident`].)
    match fsutil::ident_fd(&k.fd, fsutil::Want::Id) {
        Ok(m) if m.is(k.dev, k.ino) => {}
        _ => {
            if let Some(k) = slot.take() {
                crate::hostfd::fork_keeps(k.fd.as_raw_fd());
                std::mem::forget(k.fd);
            }
            return Ok(None);
        }
    };
    let fd = k.fd.as_fd();
    rustix::fs::flock(fd, rustix::fs::FlockOperation::LockShared)
        .map_err(|e| Error::io("cannot lock", path, e.into()))?;
    // Still the file at the path (a trim renames a new one over it); its
    // size, read under the lock, is where the row goes.
    let current = fsutil::ident_path(path, fsutil::Want::Size)
        .ok()
        .filter(|m| m.is(k.dev, k.ino));
    // Given a second name since it was kept: the opening path splits it
    // off ([`split_off`]) before a row goes in.
    let Some(size) = current.filter(|m| m.nlink <= 1).map(|m| m.size) else {
        let _ = rustix::fs::flock(fd, rustix::fs::FlockOperation::Unlock);
        // Closed only when the number is still ours (a script's
        // `exec N>>log` on the kept number, then `mv log log.1`, is left
        // open).
        if let Some(k) = slot.take() {
            forget_kept(k);
        }
        return Ok(None);
    };
    // Read on every row, not only when the size differs from the one our
    // last row left: a log rewritten in place to that same size but
    // ending mid-line (`cat backup > log`) had the row glued to it.
    let heal = ends_mid_line(fd, size);
    // A cut row is taken back only through our own descriptor, never the
    // script's on our file (asked only after a failed write).
    let written = append_row(fd, row, heal, || opened_as_ours(fd));
    let _ = rustix::fs::flock(fd, rustix::fs::FlockOperation::Unlock);
    match written {
        Ok(()) => Ok(Some(size + u64::from(heal) + row.len() as u64)),
        Err(e) => {
            let Some(k) = slot.take() else {
                return Err(Error::io("cannot append to", path, e));
            };
            crate::hostfd::fork_keeps(k.fd.as_raw_fd());
            if opened_as_ours(k.fd.as_fd()) {
                drop(k.fd);
                return Err(Error::io("cannot append to", path, e));
            }
            // The script's descriptor on our file (`exec N<log` on the
            // kept number): left open, and the row goes through a
            // descriptor of our own.
            std::mem::forget(k.fd);
            Ok(None)
        }
    }
}

/// One row in one `write(2)` on the O_APPEND descriptor (a short write of a
/// regular file is continued).
///
/// Written with `RWF_APPEND` (Linux ≥ 4.16): at the end of the file whatever
/// the descriptor's own flags, and without moving its offset. The kept
/// number holds our O_APPEND descriptor, but a script may have put its own
/// descriptor on the log itself there (`exec 1023<>log`, `exec 1023>log`),
/// which passes the identity check and writes at the script's offset: a
/// plain `write` through it would overwrite rows. A kernel without the flag
/// gets the plain `write`.
/// `done` counts the bytes that landed, also when it fails.
fn write_all_fd(
    fd: std::os::fd::BorrowedFd<'_>,
    mut buf: &[u8],
    done: &mut usize,
) -> io::Result<()> {
    use rustix::io::{Errno, ReadWriteFlags};
    while !buf.is_empty() {
        let r = match rustix::io::pwritev2(fd, &[io::IoSlice::new(buf)], 0, ReadWriteFlags::APPEND)
        {
            Err(Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => rustix::io::write(fd, buf),
            r => r,
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *done += n;
                buf = &buf[n..];
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Appends `row` ([`write_all_fd`]) through a descriptor `fd` on the log
/// that holds the shared lock. A write a full disk (or a quota) cut
/// short leaves part of the row at the end of the log, where the next row
/// would be glued to it (`…,write_cac1796619131,op,1.5`) and both be lost
/// to readers: that part is taken back ([`take_back`]) before the error
/// is returned, so the log holds whole rows only (docs/metrics.md).
/// `ours`, asked only then: whether `fd` is a descriptor ffkit opened (a
/// script's descriptor on the log is never truncated through).
/// `heal`: the log ends mid-line ([`ends_mid_line`]), so a newline goes
/// first and the row starts a line of its own.
fn append_row(
    fd: std::os::fd::BorrowedFd<'_>,
    row: &[u8],
    heal: bool,
    ours: impl FnOnce() -> bool,
) -> io::Result<()> {
    if heal {
        // Its own write: the cut-row logic below then sees the row after a
        // newline. A newline that lands before a failing row is harmless
        // (it ends the foreign line; a blank line is skipped).
        write_all_fd(fd, b"\n", &mut 0)?;
    }
    let mut done = 0;
    let r = write_all_fd(fd, row, &mut done);
    if r.is_err() && done > 0 && ours() {
        take_back(fd, &row[..done]);
    }
    r
}

/// Whether the log behind `fd`, `size` bytes long, ends without a newline:
/// its last line is not whole (an old script's `printf '%s,%s,%s' >> log`,
/// an editor that drops the final newline, a row an old writer's full disk
/// cut short). A row appended there would be glued to it (`…,old,5` +
/// `1796…,new,1` is one malformed line, or `17000` + `1796…,new,1` a row
/// with a wrong timestamp), so the appender writes a newline first. One
/// `pread` of the last byte; a read that fails (a script's write-only
/// descriptor at the kept number) or finds nothing (the log shrank) counts
/// as whole. Another appender healing the same line at once adds a blank
/// line, which readers skip.
fn ends_mid_line(fd: std::os::fd::BorrowedFd<'_>, size: u64) -> bool {
    let mut last = [0u8; 1];
    size > 0 && matches!(rustix::io::pread(fd, &mut last, size - 1), Ok(1) if last[0] != b'\n')
}

/// Truncates the log behind `fd` by `part`, the start of a row whose write
/// failed, when `part` is still its last bytes and follows a whole row. Under
/// the exclusive lock (converted from the appender's shared one), so no
/// other appender writes meanwhile. Another process may hold the log
/// locked at that instant (another appender whose write is failing too, a
/// report): the conversion is tried again for up to [`TAKE_BACK_WAIT`]
/// (never a wait in the kernel, so a lock held for good cannot hang the
/// row's caller). Only when it never comes, or a row was appended after
/// the cut one, is nothing touched: the cut row stays (a reader skips it as
/// malformed, and the next row is glued to it). Before, one try only: with
/// a few processes recording at once on a filling disk, the cut row nearly
/// always stayed, and the next row of a call that exited 0 was lost.
fn take_back(fd: std::os::fd::BorrowedFd<'_>, part: &[u8]) {
    use rustix::fs::FlockOperation;
    let deadline = std::time::Instant::now().checked_add(TAKE_BACK_WAIT);
    while rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive).is_err() {
        if deadline.is_none_or(|d| std::time::Instant::now() >= d) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let Ok(st) = rustix::fs::fstat(fd) else {
        return;
    };
    let (size, n) = (st.st_size as u64, part.len() as u64);
    if size < n {
        return;
    }
    // The byte before the part too (a newline, unless the part starts the
    // file).
    let from = size - n - u64::from(size > n);
    let mut tail = vec![0u8; (size - from) as usize];
    if !matches!(rustix::io::pread(fd, &mut tail, from), Ok(r) if r == tail.len()) {
        return;
    }
    let whole_before = size == n || tail[0] == b'\n';
    if whole_before && tail.ends_with(part) {
        let _ = rustix::fs::ftruncate(fd, size - n);
    }
}

/// How long [`take_back`] tries to get the log's exclusive lock.
const TAKE_BACK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens the current log and takes the exclusive lock on it, following a
/// replacement that happened while waiting. `None` when there is no log.
fn lock_exclusive(path: &Path) -> Result<Option<File>> {
    for _ in 0..=MAX_REOPENS {
        let f = match fsutil::open_read(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot open", path, e)),
        };
        f.lock().map_err(|e| Error::io("cannot lock", path, e))?;
        let meta = fsutil::ident_fd(&f, fsutil::Want::Id)
            .map_err(|e| Error::io("cannot stat", path, e))?;
        if still_current(path, &meta) {
            return Ok(Some(f));
        }
    }
    Err(Error::LockFailed(format!(
        "cannot lock {}: the file keeps being replaced",
        path.display()
    )))
}

/// Gives the log at `path` a file of its own when it has more than one
/// name: a copy of its rows is renamed over the path (as a trim's is), so
/// the other names keep the file and its rows up to now and are never
/// written again. Under the exclusive lock, so appenders follow the new
/// file as they follow a trim's.
fn split_off(path: &Path) -> Result<()> {
    let Some(mut f) = lock_exclusive(path)? else {
        return Ok(());
    };
    let meta = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    let names = std::os::unix::fs::MetadataExt::nlink(&meta);
    // Split off by another appender meanwhile (the path is then one name).
    if names <= 1 || !meta.is_file() {
        return Ok(());
    }
    f.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("cannot read", path, e))?;
    let mut r = f.take(meta.len());
    replace_with(path, &meta, |w| io::copy(&mut r, w).map(drop))
        .map_err(|e| cannot_split(path, names, e))
}

/// The one line of a split that failed (a dir its user cannot write, a
/// full disk): the row is refused rather than written through the other
/// name, and the line says why a temp file was needed at all (the bare
/// "cannot create DIR/.tmp-…" named no log and no reason). The exit code
/// stays the cause's.
fn cannot_split(path: &Path, names: u64, e: Error) -> Error {
    let msg = format!(
        "cannot append to {}: it has {names} names (a hard link), and giving it a file of its own failed ({e}); no row is written through a second name (remove the other name)",
        path.display()
    );
    match e.kind() {
        ExitKind::Permission => Error::Permission(msg),
        ExitKind::DiskSpace => Error::DiskSpace(msg),
        ExitKind::NotFound => Error::NotFound(msg),
        _ => Error::General(msg),
    }
}

/// Writes a replacement for `path` through `fill` and renames it into place.
fn replace_with(
    path: &Path,
    old: &fs::Metadata,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, file) = fsutil::create_temp(dir)?;
    // The new file keeps the log's permission bits (never set-id or sticky
    // bits: the file is the caller's now) and, where the caller may set it
    // (a member of that group), its group: a log shared by a group stays
    // writable for the others after a trim or a cleanup (the temp is
    // created 0600, owned by the caller). `old` is the status of the log
    // the caller locked exclusively, the file being replaced.
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let _ = rustix::fs::fchown(&file, None, Some(rustix::fs::Gid::from_raw(old.gid())));
        let _ = file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o777));
    }
    let mut w = BufWriter::new(file);
    let written = fill(&mut w).and_then(|()| w.flush());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot write", &tmp, e));
    }
    drop(w);
    // `install` swaps the names atomically (and unlinks the old log); an
    // appender still holding the old file notices the new inode at the path.
    fsutil::install(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot rename into", path, e)
    })
}

/// The first line of the file when it is a `#` comment (the header), read
/// from the start; the file position is left undefined.
fn header(f: &mut File) -> io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(0))?;
    let mut first = Vec::new();
    BufReader::new(Read::by_ref(f).take(4096)).read_until(b'\n', &mut first)?;
    if first.first() == Some(&b'#') && first.last() == Some(&b'\n') {
        Ok(first)
    } else {
        Ok(Vec::new())
    }
}

/// Trims the log to its newest whole rows filling at most `max_bytes / 2`
/// (plus the header), if it is still above `max_bytes` once locked.
/// Returns whether it trimmed.
pub fn trim(path: &Path, max_bytes: u64) -> Result<bool> {
    let Some(mut f) = lock_exclusive(path)? else {
        return Ok(false);
    };
    let meta = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    let len = meta.len();
    if len <= max_bytes {
        // Another appender trimmed first.
        return Ok(false);
    }
    let rd = |e| Error::io("cannot read", path, e);
    let head = header(&mut f).map_err(rd)?;
    let keep = max_bytes / 2;
    let start = (len - keep).max(head.len() as u64);
    // Start at a line boundary: skip the rest of the line `start` falls in.
    f.seek(SeekFrom::Start(start.saturating_sub(1)))
        .map_err(rd)?;
    let mut r = BufReader::new(f.take(len - start.saturating_sub(1)));
    let mut partial = Vec::new();
    r.read_until(b'\n', &mut partial).map_err(rd)?;
    replace_with(path, &meta, |w| {
        w.write_all(&head)?;
        io::copy(&mut r, w).map(drop)
    })?;
    Ok(true)
}

/// What a cleanup asks for; both limits may apply together.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cleanup {
    /// Keep at most this many (newest) rows.
    pub keep_rows: Option<u64>,
    /// Drop rows with a timestamp before this epoch second.
    pub cutoff: Option<i64>,
}

/// What a cleanup did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CleanupReport {
    pub kept: u64,
    pub removed: u64,
    /// Malformed rows dropped on the way (counted in `removed` too).
    pub malformed: u64,
}

/// Rewrites the log keeping comment lines and the rows `c` keeps, atomically
/// and safely with concurrent appenders. Malformed rows are dropped.
pub fn cleanup(path: &Path, c: Cleanup) -> Result<CleanupReport> {
    let Some(mut f) = lock_exclusive(path)? else {
        return Ok(CleanupReport::default());
    };
    let rd = |e| Error::io("cannot read", path, e);
    let wanted = |ts: i64| c.cutoff.is_none_or(|cut| ts >= cut);
    // Pass 1: how many rows survive the cutoff, so the oldest can be skipped.
    let mut eligible = 0u64;
    let mut rep = CleanupReport::default();
    read::for_each_line(&mut f, |l| match read::parse_line(l) {
        Line::Row(r) if wanted(r.timestamp) => eligible += 1,
        Line::Row(_) => rep.removed += 1,
        Line::Malformed => {
            rep.removed += 1;
            rep.malformed += 1;
        }
        Line::Skip => {}
    })
    .map_err(rd)?;
    let skip = c.keep_rows.map_or(0, |k| eligible.saturating_sub(k));
    if rep.removed == 0 && skip == 0 {
        rep.kept = eligible;
        return Ok(rep);
    }
    rep.removed += skip;
    rep.kept = eligible - skip;
    f.seek(SeekFrom::Start(0)).map_err(rd)?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    replace_with(path, &meta, |w| {
        let mut seen = 0u64;
        let mut out = Ok(());
        read::for_each_line(&mut f, |l| {
            if out.is_err() {
                return;
            }
            let keep = match read::parse_line(l) {
                Line::Row(r) if wanted(r.timestamp) => {
                    seen += 1;
                    seen > skip
                }
                Line::Row(_) | Line::Malformed => false,
                Line::Skip => !l.is_empty(),
            };
            if keep {
                out = w.write_all(l).and_then(|()| w.write_all(b"\n"));
            }
        })?;
        out
    })?;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The formatting before the integer writer, the reference.
    fn format_ms_by_format(ms: f64) -> String {
        let s = format!("{:.3}", ms.max(0.0));
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() {
            "0".into()
        } else {
            s.to_string()
        }
    }

    #[test]
    fn rows_are_the_bytes_format_writes() {
        // Edges: ties and near-ties of the thousandths, powers of ten,
        // the fast path's bound, -0, NaN, infinities, negative values.
        let mut cases = vec![
            0.0,
            -0.0,
            1e-9,
            0.0005,
            0.0015,
            0.0025,
            1.0005,
            2.5,
            15.0,
            0.1234,
            0.9995,
            0.99949999,
            0.9994999999999999,
            999_999.999_5,
            999_999.999_4,
            1e6,
            1e6 + 0.5,
            123_456_789.0,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.5,
            10.0,
            100.1,
            0.01,
            0.1,
            0.001,
            1.001,
            1.01,
            1.1,
        ];
        // Many ordinary and random-looking durations (a fixed LCG: the
        // same values every run).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..200_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let scale = [1e-3, 1.0, 1e3, 1e6, 1e9][(i % 5) as usize];
            cases.push((x >> 11) as f64 / (1u64 << 53) as f64 * scale);
            cases.push(i as f64 / 2000.0);
            cases.push(i as f64 * 0.0005 + 1e-12 * (i % 3) as f64);
        }
        // The row around the number is the same code for every value: it
        // is checked on every edge and on one value in 64 of the rest, which
        // keeps this debug-built test at a second instead of ten.
        for (i, ms) in cases.into_iter().enumerate() {
            assert_eq!(format_ms(ms), format_ms_by_format(ms), "{ms:e}");
            if i >= 40 && i % 64 != 0 {
                continue;
            }
            for ts in [0i64, 1, 1796524324, -7, i64::MIN, i64::MAX] {
                assert_eq!(
                    format_row(ts, "lock_acquire", ms),
                    format!("{ts},lock_acquire,{}\n", format_ms_by_format(ms)),
                    "{ts} {ms:e}"
                );
            }
        }
    }

    #[test]
    fn ms_formatting() {
        assert_eq!(format_ms(15.0), "15");
        assert_eq!(format_ms(0.1234), "0.123");
        assert_eq!(format_ms(2.5), "2.5");
        assert_eq!(format_ms(0.0001), "0");
        assert_eq!(
            format_row(1632123456, "write_cache", 15.0),
            "1632123456,write_cache,15\n"
        );
    }

    #[test]
    fn trim_keeps_header_and_newest_whole_rows() {
        let _s = serial();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log.csv");
        fs::write(&p, "# timestamp,operation,duration_ms\n").unwrap();
        for i in 0..1000 {
            append(&p, 1000 + i, "op", i as f64, 0).unwrap();
        }
        assert!(trim(&p, 4000).unwrap());
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# timestamp,operation,duration_ms\n"));
        assert!(text.len() <= 2000 + 40, "{}", text.len());
        assert!(text.ends_with("1999,op,999\n"));
        for l in text.lines().skip(1) {
            assert!(
                matches!(read::parse_line(l.as_bytes()), Line::Row(_)),
                "{l}"
            );
        }
        assert!(!trim(&p, 4000).unwrap());
        // No temp files left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    /// Serialises the tests that append: the kept descriptor is one slot
    /// per process.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept descriptor is used, follows a trim (new inode at the
    /// path), a path change and a removed file, and never writes a row twice
    /// or into the replaced file.
    #[test]
    fn a_kept_descriptor_follows_trims_and_path_changes() {
        let _s = serial();
        keep_descriptor_open();
        let d = tempfile::tempdir().unwrap();
        let (p, q) = (d.path().join("a.csv"), d.path().join("b.csv"));
        append(&p, 1, "a", 1.0, 0).unwrap();
        let old = fs::metadata(&p).unwrap().ino();
        assert!(append_if_kept(&p, 2, "a", 2.0, 0).unwrap());
        // Another path: not kept for it, nothing written anywhere.
        assert!(!append_if_kept(&q, 3, "b", 3.0, 0).unwrap());
        assert!(!q.exists());
        append(&p, 4, "a", 4.0, 0).unwrap();
        for i in 0..400 {
            append(&p, 10 + i, "a", 1.0, 0).unwrap();
        }
        assert!(trim(&p, 1000).unwrap());
        assert_ne!(fs::metadata(&p).unwrap().ino(), old);
        append(&p, 999, "a", 9.0, 0).unwrap();
        assert!(append_if_kept(&p, 1000, "a", 9.5, 0).unwrap());
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.ends_with("409,a,1\n999,a,9\n1000,a,9.5\n"), "{text}");
        assert!(text.len() < 1000, "{}", text.len());
        fs::remove_file(&p).unwrap();
        // The kept file was removed: nothing through it, and no file made.
        assert!(!append_if_kept(&p, 1001, "a", 1.0, 0).unwrap());
        assert!(!p.exists());
    }

    #[test]
    fn automatic_trim_bounds_the_file() {
        let _s = serial();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub").join("log.csv");
        for i in 0..2000 {
            append(&p, i, "op", 1.0, 1000).unwrap();
        }
        let len = fs::metadata(&p).unwrap().len();
        assert!(len <= 1000, "{len}");
        assert!(fs::read_to_string(&p).unwrap().ends_with("1999,op,1\n"));
    }

    #[test]
    fn cleanup_keep_rows_and_cutoff() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log.csv");
        fs::write(&p, "# h\n1,a,1\n2,a,2\nbad\n3,a,3\n4,a,4\n").unwrap();
        let r = cleanup(
            &p,
            Cleanup {
                keep_rows: Some(2),
                cutoff: Some(2),
            },
        )
        .unwrap();
        assert_eq!(
            r,
            CleanupReport {
                kept: 2,
                removed: 3,
                malformed: 1
            }
        );
        assert_eq!(fs::read_to_string(&p).unwrap(), "# h\n3,a,3\n4,a,4\n");
        assert_eq!(
            cleanup(&d.path().join("none"), Cleanup::default()).unwrap(),
            CleanupReport::default()
        );
    }
}
