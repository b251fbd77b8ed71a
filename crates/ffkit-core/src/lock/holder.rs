//! Who holds a lock.
//!
//! ffkit's own lock files (named locks and dot-locks) carry a one-line JSON
//! [`Holder`] record: owner pid and its start time, host, command and when it
//! was acquired. For a kernel lock the record is only ever written or
//! cleared by a process that holds the lock exclusively (one pwrite at
//! offset 0, padded to the file's length: [`write_line_over`]; a release
//! writes [`FREE_LINE`] over it), so the file is never truncated or deleted
//! while someone else relies on it; a record left by a holder that died is harmless because
//! `lock-status` asks the kernel first and reads the record only when the
//! lock is really held. For other files (command and fd mode on a path the
//! user chose, which may well be their data) nothing is written; the holder's
//! pid comes from `/proc/locks` instead.
//!
//! Process facts (start time, parent, command line) come from `/proc`; the
//! start time (clock ticks since boot) makes a pid unambiguous on this host.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The record in an ffkit lock file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    /// `named` (kernel lock held by a holder process) or `dotlock`.
    pub kind: String,
    /// The owner: the process the lock belongs to.
    pub pid: u32,
    /// The owner's start time (`/proc/PID/stat` field 22), if known.
    #[serde(default)]
    pub start: Option<u64>,
    pub host: String,
    pub command: String,
    /// Acquired at, epoch seconds with a fraction.
    pub since: f64,
    /// For named kernel locks: the holder process keeping the lock.
    #[serde(default)]
    pub holder_pid: Option<u32>,
    #[serde(default)]
    pub holder_start: Option<u64>,
    /// For descriptor-held kernel locks (`lock-acquire --fd N NAME`, the
    /// shell wrappers): the owner's descriptor number holding the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
}

pub const KIND_NAMED: &str = "named";
pub const KIND_DOTLOCK: &str = "dotlock";
/// A kernel lock held through a descriptor of the owner itself (a shell).
pub const KIND_FD: &str = "fd";

impl Holder {
    /// A record for `pid` acquired now, on this host.
    pub fn new(kind: &str, pid: u32, command: Option<String>) -> Holder {
        Holder {
            kind: kind.to_string(),
            pid,
            start: start_time(pid),
            host: hostname(),
            command: command.unwrap_or_else(|| cmdline(pid).unwrap_or_default()),
            since: now_epoch(),
            holder_pid: None,
            holder_start: None,
            fd: None,
        }
    }

    /// Whether this record of a kernel lock on the file `(dev, ino)` still
    /// names a live holder: a named lock's holder process, or an fd lock's
    /// owner with a descriptor open on that very file. A record left behind
    /// by a holder that was killed fails this test.
    pub(crate) fn holds_kernel_lock(&self, dev: u64, ino: u64) -> bool {
        match self.kind.as_str() {
            KIND_NAMED => self.holder_pid.is_some_and(|h| {
                same_process(h, self.holder_start) && super::named::holder_keeps(h, dev, ino)
            }),
            KIND_FD => same_process(self.pid, self.start) && has_open(self.pid, self.fd, dev, ino),
            _ => false,
        }
    }

    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// This record as a [`RecordLine`]: made once, it writes the line of
    /// any later acquisition without serializing the strings again.
    pub fn record_line(&self) -> RecordLine {
        const KEY: &[u8] = b",\"since\":";
        let mut probe = self.clone();
        probe.since = 0.0;
        probe.fd = None;
        let line = probe.to_line();
        // The last `,"since":` is the key: a string value holding it is
        // escaped (`\"`), and no string follows it.
        let at = line
            .windows(KEY.len())
            .rposition(|w| w == KEY)
            .map(|p| p + KEY.len());
        match at {
            Some(at) if line.ends_with(b"}\n") && line[at..].starts_with(b"0.0") => RecordLine {
                head: line[..at].to_vec(),
                mid: line[at + 3..line.len() - 2].to_vec(),
                whole: None,
            },
            _ => RecordLine {
                head: Vec::new(),
                mid: Vec::new(),
                whole: Some(probe),
            },
        }
    }

    pub fn parse(bytes: &[u8]) -> Option<Holder> {
        let line = bytes.split(|&b| b == b'\n').next()?;
        serde_json::from_slice(line).ok()
    }

    /// Seconds since acquisition.
    pub fn age(&self) -> f64 {
        (now_epoch() - self.since).max(0.0)
    }

    /// Whether the owner is known to be gone: on this host, its pid is free
    /// or now names a process started at another time, and so is the
    /// command it runs under the lock (`holder_pid`), if any.
    pub(crate) fn owner_gone(&self) -> bool {
        self.host == hostname()
            && !same_process(self.pid, self.start)
            && !self
                .holder_pid
                .is_some_and(|h| same_process(h, self.holder_start))
    }
}

/// RFC 3339 (UTC, whole seconds) of an epoch time.
pub(crate) fn rfc3339(epoch: f64) -> Option<String> {
    let t = jiff::Timestamp::from_second(epoch.floor() as i64).ok()?;
    Some(t.to_string())
}

/// The one description of a holder, used by every message and by
/// `lock-status`: `pid 4242 on build1, command: bash deploy.sh, since
/// 2025-01-01T12:00:00Z (age 3.2s)`. A record with no pid (unreadable) is
/// "an unknown holder".
impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pid == 0 {
            return f.write_str("an unknown holder");
        }
        write!(f, "pid {}", self.pid)?;
        if !self.host.is_empty() {
            write!(f, " on {}", self.host)?;
        }
        if !self.command.is_empty() {
            write!(f, ", command: {}", self.command)?;
        }
        if let Some(t) = rfc3339(self.since) {
            write!(f, ", since {t}")?;
        }
        write!(f, " (age {:.1}s)", self.age())
    }
}

/// A holder record split around `since` (and before `fd`), made by
/// [`Holder::record_line`]: [`RecordLine::at`] is the line
/// [`Holder::to_line`] writes for that time and descriptor, with only the
/// number serialized per acquisition.
#[derive(Clone, Debug)]
pub struct RecordLine {
    head: Vec<u8>,
    mid: Vec<u8>,
    /// The record itself, when the split was not found (never expected).
    whole: Option<Holder>,
}

impl RecordLine {
    /// The record's line with `since` and `fd`.
    pub fn at(&self, since: f64, fd: Option<i32>) -> Vec<u8> {
        if let Some(h) = &self.whole {
            let mut h = h.clone();
            h.since = since;
            h.fd = fd;
            return h.to_line();
        }
        let mut v = Vec::with_capacity(self.head.len() + self.mid.len() + 48);
        v.extend_from_slice(&self.head);
        // serde_json's own number format, as `to_line` writes it.
        if serde_json::to_writer(&mut v, &since).is_err() {
            v.extend_from_slice(b"null");
        }
        v.extend_from_slice(&self.mid);
        if let Some(fd) = fd {
            v.extend_from_slice(b",\"fd\":");
            v.extend_from_slice(fd.to_string().as_bytes());
        }
        v.extend_from_slice(b"}\n");
        v
    }
}

/// What can be said about a kernel lock's holder: the record of a named
/// lock, else the pid `/proc/locks` names (if that process still exists).
#[derive(Clone, Debug, Default)]
pub(crate) struct Who {
    pub record: Option<Holder>,
    pub pid: Option<u32>,
    pub command: Option<String>,
    /// The pid of the old library's record in the file (`lock::compat`),
    /// when neither a record nor `/proc/locks` names a holder.
    pub old_library: Option<u32>,
}

/// Like [`Holder`]'s: the record, else the pid and command `/proc/locks`
/// gave, else the old library's record (`pid P (the old library's lock
/// file)`), else "an unknown holder". The one description of a lock
/// file's holder: every path's busy line and `lock-status` (docs/locks.md,
/// "Messages").
impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = &self.record {
            return r.fmt(f);
        }
        match (self.pid, self.old_library) {
            (Some(pid), _) => {
                write!(f, "pid {pid}")?;
                if let Some(c) = self.command.as_deref().filter(|c| !c.is_empty()) {
                    write!(f, ", command: {c}")?;
                }
                Ok(())
            }
            (None, Some(pid)) => write!(f, "pid {pid} (the old library's lock file)"),
            (None, None) => f.write_str("an unknown holder"),
        }
    }
}

/// The waiting line's description of who holds the kernel lock on `f`
/// (the binary's and the bash builtin's, so the two print the same words).
pub fn describe_kernel_holder(f: &File) -> String {
    who_of_file(f).to_string()
}

/// [`describe_kernel_holder`] of the lock file at `path` (opened read-only,
/// not following a symlink); "an unknown holder" when it cannot be opened.
/// The denial's description on every path (docs/locks.md, "Messages").
pub fn describe_lock_file(path: &std::path::Path) -> String {
    match super::kernel::open_lock_file_existing(path) {
        Ok(f) => describe_kernel_holder(&f),
        Err(_) => Holder::default().to_string(),
    }
}

/// Who holds the kernel lock on the open file `f` (assumed held): the
/// record, when it still names a live holder of this very file (a record
/// left by a killed holder is ignored), else the pid `/proc/locks` names.
pub(crate) fn who_of_file(f: &File) -> Who {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = f.metadata() else {
        return Who::default();
    };
    // A shell function's lock held through a copy the script made of its
    // descriptor, whose own number the script closed (docs/shell.md,
    // "Locks"): the record's shell still holds it. Without this the
    // fallback's lock was "an unknown holder" (`/proc/locks` names the
    // binary that took it, gone), the builtin's the shell.
    let through_copy = |r: &Holder| {
        r.kind == KIND_FD
            && same_process(r.pid, r.start)
            && super::fd::function_copy_of(r.pid, m.dev(), m.ino()).is_some()
    };
    if let Some(rec) =
        read_from(f).filter(|r| r.holds_kernel_lock(m.dev(), m.ino()) || through_copy(r))
    {
        return Who {
            pid: Some(rec.pid),
            command: Some(rec.command.clone()),
            record: Some(rec),
            old_library: None,
        };
    }
    let me = std::process::id();
    let named = proc_locks_pids(m.dev(), m.ino(), Some(me))
        .into_iter()
        .find(|&p| crate::fsutil::pid_alive(p));
    // A named pair whose record was overwritten: /proc/locks names the
    // `lock-acquire` that took it (gone), its holder process still runs.
    if named.is_none()
        && let Some(rec) = super::named::find_holder(f)
    {
        return Who {
            pid: Some(rec.pid),
            command: Some(rec.command.clone()),
            record: Some(rec),
            old_library: None,
        };
    }
    // `/proc/locks` names the process that took the lock, and a lock that
    // had to be waited for was taken by `kernel::lock_fd`'s helper child
    // (sharing the taker's open file description), gone since: a command
    // mode `lock-acquire L -- CMD` that waited, even an instant (a
    // `lock-status` probe's shared lock in its way), was "an unknown
    // holder" while it ran. The holder is then the live process whose
    // descriptor on the file holds the lock, the top one of those sharing
    // it (ffkit, not the command it runs).
    let pid = named.or_else(|| super::named::find_fd_holder(f, &[]).map(|r| r.pid));
    Who {
        record: None,
        pid,
        command: pid.and_then(cmdline),
        old_library: match pid {
            None => super::compat::old_library_pid(f),
            Some(_) => None,
        },
    }
}

/// Whether `pid` is alive and (if `start` is known) is the same process. A
/// zombie counts as dead: it has closed its descriptors (and so dropped its
/// locks) but may not be reaped yet — an orphaned holder process waits for
/// init to reap it.
pub(crate) fn same_process(pid: u32, start: Option<u64>) -> bool {
    match stat(pid) {
        Some(f) => {
            let zombie = matches!(f.state, b'Z' | b'X');
            let same = match (start, f.start) {
                (Some(want), Some(now)) => want == now,
                _ => true,
            };
            !zombie && same
        }
        // No /proc entry: gone, or /proc is not mounted.
        None => start.is_none() && crate::fsutil::pid_alive(pid),
    }
}

/// Reads the record at the start of `f` (at most 8 KiB).
pub(crate) fn read_from(f: impl AsFd) -> Option<Holder> {
    let fd = f.as_fd();
    // Records are a few hundred bytes: one read into the stack, a second,
    // larger one only for a record with a long command line.
    let mut small = [0u8; 1024];
    let n = pread_full(fd, &mut small)?;
    if n < small.len() {
        return Holder::parse(&small[..n]);
    }
    let mut big = vec![0u8; 8192];
    let n = pread_full(fd, &mut big)?;
    Holder::parse(&big[..n])
}

/// Reads from offset 0 until `buf` is full or the file ends.
fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    while n < buf.len() {
        match rustix::io::pread(fd, &mut buf[n..], n as u64) {
            Ok(0) => break,
            // A short read of a regular file is its end.
            Ok(k) if n + k < buf.len() => return Some(n + k),
            Ok(k) => n += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    Some(n)
}

/// Replaces the file's content with `h`. Call only while holding the lock
/// exclusively, on a descriptor opened without O_APPEND.
pub(crate) fn write_to(f: impl AsFd, h: &Holder) -> io::Result<()> {
    let old = crate::fsutil::ident_fd(&f, crate::fsutil::Want::Size)?.size;
    write_line_over(f, h.to_line(), old)
}

/// What a released lock's file holds (docs/locks.md, "Named pairs across
/// separate commands"): this line, padded with spaces to the length of the
/// record it replaces. It parses as no [`Holder`], as an empty file did.
pub(crate) const FREE_LINE: &[u8] = b"{\"kind\":\"free\"}\n";

/// Whether `bytes` (the start of a lock file) is [`FREE_LINE`], padded
/// (the tests' check of what a release leaves).
#[cfg(test)]
pub(crate) fn is_free(bytes: &[u8]) -> bool {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(bytes);
    line.trim_ascii_end() == &FREE_LINE[..FREE_LINE.len() - 1]
}

/// A line shorter than the content it replaces is padded with spaces (before
/// its newline) up to this length; longer content is truncated.
const PAD_MAX: u64 = 64 * 1024;

/// Writes `line` (a record, or [`FREE_LINE`]) over content `old` bytes long
/// (the caller's fstat) in one pwrite: a shorter line is padded with spaces
/// to `old` bytes, so the file keeps its length. Neither a record nor a
/// release ever truncates the file: on ext4 a truncation (and the block
/// the next record's write then allocates again) cost the builtin's lock
/// pair 3 of its 30 µs (BENCHMARKS.md, "the lock file keeps its length").
/// Call only while holding the lock exclusively.
pub(crate) fn write_line_over(f: impl AsFd, mut line: Vec<u8>, old: u64) -> io::Result<()> {
    let fd = f.as_fd();
    let want = line.len() as u64;
    let truncate = old > PAD_MAX;
    if old > want && !truncate {
        // `want` ≥ 1: every line ends in its newline.
        line.pop();
        line.resize(old as usize - 1, b' ');
        line.push(b'\n');
    }
    let mut done = 0;
    while done < line.len() {
        match rustix::io::pwrite(fd, &line[done..], done as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => done += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if truncate {
        rustix::fs::ftruncate(fd, want)?;
    }
    Ok(())
}

/// Marks the lock released: [`FREE_LINE`] over the record, `len` bytes
/// long (the file's length, when the caller knows it), so the file keeps
/// its length and later readers (`cat`, `lock-status`, a waiter naming the
/// holder) find no holder. An empty file stays empty. Call only while
/// holding the lock exclusively.
pub(crate) fn clear(f: impl AsFd, len: Option<u64>) -> io::Result<()> {
    let len = match len {
        Some(n) => n,
        None => crate::fsutil::ident_fd(&f, crate::fsutil::Want::Size)?.size,
    };
    if len == 0 {
        return Ok(());
    }
    write_line_over(f, FREE_LINE.to_vec(), len)
}

pub(crate) fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// This host's name (the uname node name, as gethostname(2) returns it).
pub(crate) fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Whether process `pid` has a descriptor open on the file `(dev, ino)`:
/// descriptor `fd` if known, else any of them. Reading another process's
/// `/proc/PID/fd` needs the same user; when it cannot be read the answer
/// is "yes" (the kernel already said the lock is held, and the pid and its
/// start time are alive).
fn has_open(pid: u32, fd: Option<i32>, dev: u64, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let same =
        |p: &std::path::Path| fs::metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
    if let Some(fd) = fd {
        let p = std::path::PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
        return match fs::symlink_metadata(&p) {
            // Open on the file is not enough: the descriptor may have been
            // unlocked (`flock -u 9`) while another process took the lock.
            // `/proc/PID/fdinfo/N` lists exactly the locks its open file
            // description holds.
            Ok(_) => same(&p) && fdinfo_lists_a_lock(pid, fd).unwrap_or(true),
            Err(e) => e.kind() == io::ErrorKind::PermissionDenied,
        };
    }
    match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(rd) => rd.flatten().any(|e| same(&e.path())),
        Err(e) => e.kind() == io::ErrorKind::PermissionDenied,
    }
}

/// Whether `/proc/PID/fdinfo/FD` lists a lock (a `lock:` line); `None`
/// when it cannot be read (another user's process).
pub(crate) fn fdinfo_lists_a_lock(pid: u32, fd: i32) -> Option<bool> {
    let info = fs::read(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    Some(info.split(|&b| b == b'\n').any(|l| l.starts_with(b"lock:")))
}

/// What ffkit reads of `/proc/PID/stat`.
struct Stat {
    /// Field 3: `R`, `S`, ..., `Z` (zombie), `X` (dead).
    state: u8,
    /// Field 4.
    ppid: Option<u32>,
    /// Field 22: the start time, in clock ticks since boot.
    start: Option<u64>,
}

/// `/proc/PID/stat`, read with one `read` into the stack (a lock round
/// reads its own: BENCHMARKS.md, "Issue 24's lock round, fourth pass") and
/// parsed in place. The fields are counted after the command name, which
/// may hold spaces and parentheses and ends at the last `)`.
fn stat(pid: u32) -> Option<Stat> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        format!("/proc/{pid}/stat").as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // The line is far shorter than a page; it ends with a newline, so
    // one read that ends with one has it all.
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n == 0 || buf[n - 1] != b'\n' {
        match rustix::io::read(&fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
        if n == buf.len() {
            return None;
        }
    }
    let line = &buf[..n];
    let rest = &line[line.iter().rposition(|&c| c == b')')? + 1..];
    let mut fields = rest
        .split(|c| c.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let num = |f: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(f?).ok()?.parse().ok() };
    let state = *fields.next()?.first()?;
    let ppid = num(fields.next()).and_then(|p| u32::try_from(p).ok());
    // Fields 5 to 21, then the start time.
    let start = num(fields.nth(17));
    Some(Stat { state, ppid, start })
}

/// The process's start time in clock ticks since boot (field 22).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    stat(pid)?.start
}

/// The wall-clock time (epoch seconds) of a process start time in clock
/// ticks since boot ([`start_time`]): `/proc/stat`'s `btime` plus the
/// ticks.
pub(crate) fn epoch_of_start(ticks: u64) -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = rustix::param::clock_ticks_per_second();
    (hz > 0).then(|| btime as f64 + ticks as f64 / hz as f64)
}

/// The parent pid (field 4).
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    stat(pid)?.ppid
}

/// `pid`'s ancestors, nearest first, ending before pid 1/0.
pub fn ancestors(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut p = pid;
    while let Some(pp) = parent_of(p) {
        if pp <= 1 || out.contains(&pp) || out.len() > 512 {
            break;
        }
        out.push(pp);
        p = pp;
    }
    out
}

/// The command line of `pid`, arguments joined by spaces, control
/// characters replaced, at most 200 characters.
pub(crate) fn cmdline(pid: u32) -> Option<String> {
    let mut raw = Vec::new();
    File::open(format!("/proc/{pid}/cmdline"))
        .ok()?
        .take(4096)
        .read_to_end(&mut raw)
        .ok()?;
    while raw.last() == Some(&0) {
        raw.pop();
    }
    let s: String = String::from_utf8_lossy(&raw)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    Some(s)
}

/// Pids holding (not waiting for) a lock on the file with this device and
/// inode, from `/proc/locks`. A flock's pid is the process that took it,
/// which may since have exited while the descriptor lives on elsewhere.
///
/// The kernel hands `/proc/locks` out about a page per read(2), each read
/// walking its lock list afresh up to a count of lines: locks released
/// meanwhile ahead of that count make the walk skip lines. So a line read
/// is real, but a missing one may be a skip (under lock churn, one read in
/// 400 missed a lock held throughout). An empty answer is read again, up
/// to five reads in all, before it counts: `lock-status` must not call a
/// shared lock free, nor the waiting line its holder unknown. `besides`:
/// a pid whose lines are left out (the caller's own probe lock), so an
/// answer holding only those is read again too.
pub(crate) fn proc_locks_pids(dev: u64, ino: u64, besides: Option<u32>) -> Vec<u32> {
    let mut pids = Vec::new();
    for _ in 0..5 {
        pids = proc_locks_read(dev, ino);
        pids.retain(|&p| Some(p) != besides);
        if !pids.is_empty() {
            break;
        }
    }
    pids
}

/// One read of `/proc/locks` for [`proc_locks_pids`].
fn proc_locks_read(dev: u64, ino: u64) -> Vec<u32> {
    let Ok(text) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INO START END"; waiters have "->".
        if f.len() < 6 || f[1] == "->" {
            continue;
        }
        let mut id = f[5].split(':');
        let (Some(a), Some(b), Some(i)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        let same = u32::from_str_radix(a, 16).ok() == Some(maj)
            && u32::from_str_radix(b, 16).ok() == Some(min)
            && i.parse::<u64>().ok() == Some(ino);
        if same && let Ok(pid) = f[4].parse::<u32>() {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record line made once writes exactly the line the record itself
    /// would, whatever its strings hold (the key it splits at included).
    #[test]
    fn record_line_at_is_to_line_with_since_and_fd_replaced() {
        for command in ["bash -c \"x\"\n\u{e9}", "echo ,\"since\":0.0}", ""] {
            let mut h = Holder::new(KIND_FD, 4242, Some(command.into()));
            h.holder_pid = Some(7);
            h.start = None;
            let line = h.record_line();
            assert!(line.whole.is_none(), "{command}");
            for fd in [None, Some(1023), Some(0)] {
                for since in [1_765_000_000.123_456, 0.0, 1e21, f64::NAN] {
                    let mut want = h.clone();
                    want.since = since;
                    want.fd = fd;
                    assert_eq!(
                        line.at(since, fd),
                        want.to_line(),
                        "{command} {since} {fd:?}"
                    );
                }
            }
        }
    }

    /// A lock held throughout is found by every look, however many other
    /// locks come and go meanwhile. Without the re-reads about one look in
    /// 400 missed it here (the lock sits behind 150 newer ones in the
    /// kernel's list, two threads churn 60 more): 1,000 looks expect two
    /// or three, and all 1,000 find it without the re-reads one run in 12.
    #[test]
    fn a_held_lock_is_found_in_proc_locks_while_others_churn() {
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = tempfile::tempdir().unwrap();
        let open = |name: String| File::create(d.path().join(name)).unwrap();
        let target = open("target".into());
        target.lock_shared().unwrap();
        let m = target.metadata().unwrap();
        let newer: Vec<File> = (0..150).map(|i| open(format!("s{i}"))).collect();
        newer.iter().for_each(|f| f.lock().unwrap());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..2 {
                let files: Vec<File> = (0..60).map(|i| open(format!("c{t}-{i}"))).collect();
                let stop = &stop;
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        files.iter().for_each(|f| f.lock().unwrap());
                        files.iter().for_each(|f| f.unlock().unwrap());
                    }
                });
            }
            let missed = (0..1_000)
                .filter(|_| proc_locks_pids(m.dev(), m.ino(), None).is_empty())
                .count();
            stop.store(true, Ordering::Relaxed);
            assert_eq!(missed, 0, "looks that missed a held lock");
        });
    }

    #[test]
    fn record_round_trips_and_ignores_trailing_garbage() {
        let h = Holder::new(KIND_NAMED, std::process::id(), Some("x y".into()));
        let mut line = h.to_line();
        line.extend_from_slice(b"junk");
        let back = Holder::parse(&line).unwrap();
        // serde_json's default float parsing may differ in the last bit.
        assert!((back.since - h.since).abs() < 1e-3);
        assert_eq!(
            Holder {
                since: h.since,
                ..back
            },
            h
        );
        assert!(!h.owner_gone());
        assert!(Holder::parse(b"not json").is_none());
    }

    /// A record or the free line over longer content is padded to its
    /// length (no truncation), parses as before, and a release's free line
    /// parses as no holder; content over 64 KiB is truncated instead.
    #[test]
    fn records_and_the_free_line_keep_the_files_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap();
        let long = Holder::new(KIND_FD, std::process::id(), Some("c".repeat(300)));
        let short = Holder::new(KIND_FD, std::process::id(), Some("c".into()));
        write_to(&f, &long).unwrap();
        let len = fs::metadata(&p).unwrap().len();
        assert_eq!(len, long.to_line().len() as u64);
        write_to(&f, &short).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), len);
        assert_eq!(read_from(&f).unwrap().command, "c");
        assert!(!is_free(&fs::read(&p).unwrap()));
        clear(&f, Some(len)).unwrap();
        let b = fs::read(&p).unwrap();
        assert_eq!(b.len() as u64, len);
        assert!(is_free(&b) && read_from(&f).is_none() && b.ends_with(b" \n"));
        // Cleared again with the length unknown: the same.
        clear(&f, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b);
        // An empty file stays empty.
        f.set_len(0).unwrap();
        clear(&f, None).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 0);
        // Over 64 KiB of something else: truncated to the record.
        f.set_len(PAD_MAX + 1).unwrap();
        write_to(&f, &short).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            short.to_line().len() as u64
        );
        assert!(!is_free(b"{\"kind\":\"free\"}x\n") && is_free(b"{\"kind\":\"free\"}"));
    }

    #[test]
    fn an_unreaped_zombie_is_not_the_same_process() {
        // Regression: an exited holder not yet reaped by init passed the
        // kill(0) test and made its owner's next acquire a false conflict.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid);
        let t0 = std::time::Instant::now();
        while same_process(pid, start) {
            assert!(t0.elapsed().as_secs() < 5, "zombie still counted as alive");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            crate::fsutil::pid_alive(pid),
            "not reaped yet, so still a zombie"
        );
        child.wait().unwrap();
    }

    /// `/proc/PID/stat` read the plain way: the fields after the last `)`.
    fn stat_the_slow_way(pid: u32) -> Vec<String> {
        let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &s[s.rfind(')').unwrap() + 1..];
        rest.split_whitespace().map(str::to_string).collect()
    }

    /// The in-place parse of one read finds the fields a plain parse of the
    /// whole file does, for a command name made to confuse it (spaces and
    /// parentheses: the name ends at the last `)`).
    #[test]
    fn stat_is_read_in_one_go_and_parsed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a) 1 2 (b");
        std::os::unix::fs::symlink("/bin/sleep", &odd).unwrap();
        let mut child = std::process::Command::new(&odd).arg("30").spawn().unwrap();
        for pid in [std::process::id(), child.id()] {
            let f = stat_the_slow_way(pid);
            assert_eq!(start_time(pid), f[19].parse().ok(), "{pid}");
            assert_eq!(parent_of(pid), f[1].parse().ok(), "{pid}");
            assert!(same_process(pid, start_time(pid)));
        }
        assert_eq!(parent_of(child.id()), Some(std::process::id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn own_process_facts() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert!(!ancestors(me).contains(&me));
        assert!(cmdline(me).is_some_and(|c| !c.is_empty()));
    }
}
