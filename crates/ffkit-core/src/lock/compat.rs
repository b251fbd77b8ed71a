//! Sharing a NAME's lock file with the old bash library (docs/locks.md,
//! "Sharing names with the old library"): the one rule every kernel lock on
//! a NAME follows at its acquire and release points — the binary's named
//! pairs ([`super::named`]), fd mode with a NAME (the wrappers,
//! [`super::fd`]) and the bash builtin — so a fleet that migrates script
//! by script never has two holders of one name.
//!
//! The old library takes `<dir>/NAME.lock` by creating it exclusively
//! (`set -C; echo $$ >FILE`), treats a file whose mtime is older than
//! [`OLD_STALE_AFTER`] as stale (deletes it, then tries again), and
//! releases by deleting the file. Two rules, chosen by `LOCK_OLD_LIBRARY`:
//!
//! - always: after taking the kernel lock, [`check`] makes sure the path
//!   still names the locked file (a file deleted or replaced meanwhile, by
//!   an emergency `rm` or the old library breaking a stale lock, guards
//!   nothing: open the path again) and that the old library does not hold
//!   it (its record, a pid, written less than [`OLD_STALE_AFTER`] ago by a
//!   live process): then the caller unlocks, sleeps a backoff step and
//!   tries again within its deadline ([`Pause`]). ffkit's own record,
//!   written at every acquisition, keeps a held file's mtime fresh, so the
//!   old library sees ffkit's lock held. A NAME's file stays in place, so
//!   flock(1) on it keeps working.
//! - `LOCK_OLD_LIBRARY=present` ([`Rule::follow`]) also follows the old
//!   library's file protocol, so the old library gets a name ffkit
//!   released at once: a missing file is created exclusively ([`open`]),
//!   an empty file ffkit did not create counts as an old-library writer
//!   between its create and its `echo` for [`CREATE_GRACE`], and release
//!   deletes the file while the lock is still held ([`remove`]). A file
//!   deleted at release strands whoever waits on it without this module's
//!   re-check: util-linux flock(1) on a NAME's file is not for that mode.
//!
//! The flock(1) persona, command mode and `--fd N` without a NAME keep
//! flock(1)'s semantics and never come here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::backoff::{Schedule, Sleeps};
use super::{Denied, Wait, kernel};
use crate::config::BackoffStrategy;

/// The old library's stale rule: a lock file whose mtime is older than
/// this is broken (deleted) by the old library.
pub const OLD_STALE_AFTER: Duration = Duration::from_secs(300);

/// How long an empty lock file ffkit did not create counts as an old
/// library writer between its exclusive create and its `echo $$`.
pub const CREATE_GRACE: Duration = Duration::from_secs(2);

/// How a NAME's kernel lock treats the old library's lock files.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// `LOCK_OLD_LIBRARY=present`: follow its file protocol too (create
    /// exclusively, delete at release).
    pub follow: bool,
    /// `LOCK_BACKOFF_STRATEGY`, `LOCK_BACKOFF_INITIAL`, `LOCK_BACKOFF_MAX`:
    /// the pauses while the old library holds the lock.
    pub backoff: (BackoffStrategy, Duration, Duration),
}

impl Rule {
    /// The rule `cfg` selects.
    pub fn of(cfg: &crate::config::Config) -> Rule {
        Rule {
            follow: cfg.old_library,
            backoff: (cfg.backoff, cfg.backoff_initial, cfg.backoff_max),
        }
    }

    /// Opens the lock file at `path` read-write: [`open`] when following
    /// the old library's protocol, else created if missing as before
    /// (`created` is then false: the file is never deleted, so an empty
    /// one is a released lock, not a writer's).
    pub fn open(&self, path: &Path, mode: u32) -> io::Result<(File, bool)> {
        self.open_stat(path, mode)
            .map(|(f, created, _)| (f, created))
    }

    /// [`Rule::open`], also returning the file's status as its check read
    /// it: the identity [`check_known`] needs (a descriptor's file never
    /// changes, so no second fstat is made for it).
    pub fn open_stat(&self, path: &Path, mode: u32) -> io::Result<(File, bool, rustix::fs::Stat)> {
        let (f, created) = if self.follow {
            open(path, mode)?
        } else {
            (kernel::open_lock_file(path, true, mode)?, false)
        };
        let st = regular(&f)?;
        // A private mode (a named lock's 0600) whatever the umask, from the
        // fstat made anyway; a command-mode 0666 is left to the umask.
        crate::fsutil::fix_mode_of(&f, st.st_mode & 0o7777, mode)?;
        Ok((f, created, st))
    }
}

/// What [`check`] found on a file whose kernel lock the caller just took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The path names the locked file and the old library does not hold
    /// it: the lock is the caller's.
    Ours,
    /// The path no longer names the locked file (deleted by a release, by
    /// the old library breaking a stale lock, or by hand): unlock, open the
    /// path again, retry.
    Replaced,
    /// The old library holds it: its pid, or `None` for an empty file just
    /// created by someone else. Unlock, pause, retry.
    OldLibrary(Option<u32>),
}

/// A NAME's lock file must be a regular file: a FIFO or a device planted
/// at the path is refused (exit 3, as a symbolic link is), never read or
/// waited on. Returns the file's status (its fstat).
pub fn regular(f: impl AsFd) -> io::Result<rustix::fs::Stat> {
    let st = rustix::fs::fstat(f)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile {
        Ok(st)
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not a regular file (refused)",
        ))
    }
}

fn flags() -> i32 {
    libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC
}

/// Opens (read-write) a NAME's lock file at `path`, creating it
/// exclusively (mode `mode`) when it is missing: `(file, created)`, where
/// `created` says this call made the file (so an empty content is its own
/// and not an old-library writer's).
pub fn open(path: &Path, mode: u32) -> io::Result<(File, bool)> {
    // Two rounds at most per change of the file: a file deleted between
    // the failed create and the open is created on the next round.
    loop {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(flags())
            .open(path)
        {
            Ok(f) => {
                // 0600 whatever the umask (a command-mode 0666 is the
                // umask's to shape: `fix_created_mode` leaves it).
                crate::fsutil::fix_created_mode(&f, mode)?;
                return Ok((f, true));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags())
            .open(path)
        {
            Ok(f) => return Ok((f, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
}

/// Creates a NAME's lock file for a caller that locks it later through
/// another process (the wrappers' `lock-acquire --prepare`, then `--fd`):
/// a file it creates gets `owner`'s record at once, so the locker does not
/// take the empty file for an old-library writer's ([`check`]), and the
/// old library sees it held (fresh) meanwhile.
pub fn prepare(rule: Rule, path: &Path, mode: u32, owner: u32) -> io::Result<()> {
    let (f, created) = rule.open(path, mode)?;
    if created && rule.follow {
        // Its own kind: no holder check ever takes it for a holder.
        let rec = super::holder::Holder::new("prepared", owner, None);
        super::holder::write_to(&f, &rec)?;
    }
    Ok(())
}

/// Whether `path` still names the file open on `fd`.
fn names(fd: impl AsFd, path: &Path) -> io::Result<Option<rustix::fs::Stat>> {
    let st = rustix::fs::fstat(&fd)?;
    Ok(names_file(&st, path)?.then_some(st))
}

/// Whether `path` names the file whose status is `st`.
fn names_file(st: &rustix::fs::Stat, path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(m.dev() == st.st_dev && m.ino() == st.st_ino),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `path` names the file open on the caller's descriptor `fd`
/// (false when `fd` is not open).
pub fn fd_names(fd: std::os::fd::RawFd, path: &Path) -> bool {
    kernel::borrow(fd).is_ok_and(|b| matches!(names(b, path), Ok(Some(_))))
}

/// Whether descriptor `fd` is open on a file that no longer has a name (it
/// was deleted, or replaced by a rename): a released lock file, not
/// another file.
pub fn fd_unlinked(fd: std::os::fd::RawFd) -> bool {
    kernel::borrow(fd)
        .ok()
        .and_then(|b| rustix::fs::fstat(b).ok())
        .is_some_and(|st| st.st_nlink == 0)
}

/// The rule, right after the caller took the exclusive kernel lock on
/// `fd`, open (readable) on the lock file at `path`. `created`: the
/// caller's [`open`] created the file. `follow`: [`Rule::follow`] (only
/// then is an empty file an old-library writer's).
pub fn check(fd: impl AsFd, path: &Path, created: bool, follow: bool) -> io::Result<Verdict> {
    // The descriptor's identity, then [`check_known`]: the path's status
    // *is* the locked file's when it names the same inode (no times asked
    // for either: [`crate::fsutil::Ident`]).
    let id = crate::fsutil::ident_fd(&fd, crate::fsutil::Want::Id)?;
    check_known(fd, (id.dev, id.ino), path, created, follow).map(|(v, _)| v)
}

/// [`check`] for a caller that knows the locked file's identity already
/// (`dev`, `ino`: its fstat before locking, [`Rule::open_stat`] or the
/// check of a kept descriptor; an open descriptor's file never changes), so
/// no fstat is made after locking: the path's own status, read with the
/// lock held, *is* the locked file's whenever the path still names that
/// device and inode, and is needed anyway to see whether it does. Returns
/// the verdict and the locked file's length as read then (for the holder
/// record's write). One system call fewer than [`check`] on the builtin's
/// lock pair (BENCHMARKS.md). The path's status is a `statx` of its inode
/// and size only ([`crate::fsutil::Ident`]: asking for the times would make
/// the holder record's write dirty the inode); the mtime, which only a short
/// file's verdict needs ([`verdict_of`]), is then read from the locked
/// descriptor itself, the same file.
pub fn check_known(
    fd: impl AsFd,
    (dev, ino): (u64, u64),
    path: &Path,
    created: bool,
    follow: bool,
) -> io::Result<(Verdict, u64)> {
    use crate::fsutil::{Want, ident_path};
    let m = match ident_path(path, Want::Size) {
        Ok(m) if m.is(dev, ino) => m,
        Ok(_) => return Ok((Verdict::Replaced, 0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Verdict::Replaced, 0)),
        Err(e) => return Err(e),
    };
    let len = m.size;
    if created {
        return Ok((Verdict::Ours, len));
    }
    let mtime = || {
        let st = rustix::fs::fstat(&fd)?;
        Ok((st.st_mtime as i64, st.st_mtime_nsec as i64))
    };
    let v = verdict_of(&fd, len, mtime, follow)?;
    Ok((v, len))
}

/// The verdict on a lock file named by its path whose length was read
/// with the lock held, and which the caller did not create. `mtime` reads
/// its modification time, called (once) only when the verdict depends on
/// it: a file shorter than an old-library record, and not empty unless
/// `follow` (the common file, a released lock's empty one or ffkit's
/// record, needs no time).
fn verdict_of(
    fd: impl AsFd,
    len: u64,
    mtime: impl FnOnce() -> io::Result<(i64, i64)>,
    follow: bool,
) -> io::Result<Verdict> {
    if len >= OLD_RECORD_MAX as u64 || (len == 0 && !follow) {
        return Ok(Verdict::Ours);
    }
    let (sec, nsec) = mtime()?;
    let age = age_of(sec, nsec);
    let mut buf = [0u8; OLD_RECORD_MAX];
    // A file of the buffer's length or more is not an old-library record
    // ([`old_pid`]), whatever it holds (an ffkit record left by a killed
    // holder, say): nothing to read.
    if len >= OLD_RECORD_MAX as u64 {
        return Ok(Verdict::Ours);
    }
    // An empty file (a released lock's, the common case) has nothing to
    // read either: its length was read with the lock held, and the old
    // library never writes into a file it did not create.
    let n = if len == 0 {
        0
    } else {
        loop {
            match rustix::io::pread(&fd, &mut buf, 0) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if n == 0 {
        return Ok(if follow && age < CREATE_GRACE {
            Verdict::OldLibrary(None)
        } else {
            Verdict::Ours
        });
    }
    Ok(
        match old_pid(&buf[..n]).filter(|&pid| old_record_holds(pid, age)) {
            Some(pid) => Verdict::OldLibrary(Some(pid)),
            // ffkit's own record (its holder is gone: the kernel lock was
            // free), a stale or dead old-library record, or anything else.
            None => Verdict::Ours,
        },
    )
}

/// Whether an old-library record of `pid` whose file is `age` old still
/// holds the lock: written less than [`OLD_STALE_AFTER`] ago by a live
/// process. The one rule for acquiring ([`check`]), `lock-status` and
/// `lock-release` ([`old_library_holder`]): a stale or dead pid's file is
/// free (docs/locks.md, "Sharing names with the old library").
fn old_record_holds(pid: u32, age: Duration) -> bool {
    age < OLD_STALE_AFTER && crate::fsutil::pid_alive(pid)
}

/// An old-library record is shorter than this (a pid and a newline).
const OLD_RECORD_MAX: usize = 24;

/// The old library's record, `echo $$ >FILE`: the holder's pid in decimal
/// (no sign, no blank, no leading zero, not 0) and one newline, nothing
/// else. The one parser of it (docs/locks.md, "Sharing names with the old
/// library"); anything else in a NAME's file (`" 42\n"`, `"42"`, `"0\n"`)
/// is no old-library record. `bytes` is at most the buffer [`check`]
/// reads: a longer file is not one.
fn old_pid(bytes: &[u8]) -> Option<u32> {
    let digits = bytes.strip_suffix(b"\n")?;
    if digits.is_empty() || digits.len() > 10 || digits[0] == b'0' {
        return None;
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// At release, while the caller still holds the lock on `fd`: deletes the
/// lock file if `path` still names it (the old library's release, so its
/// next try creates the file). A path that names another file now (the old
/// library broke the lock, or someone deleted it) is left alone. Returns
/// whether the file was deleted.
pub fn remove(fd: impl AsFd, path: &Path) -> io::Result<bool> {
    if names(&fd, path)?.is_none() {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pauses between tries while the old library holds a lock: the
/// `LOCK_BACKOFF_STRATEGY` schedule, capped by the deadline, slept in
/// slices of at most [`kernel::POLL_SLICE`] so a caller's "interrupted?"
/// check is asked often.
pub struct Pause {
    sleeps: Sleeps,
    wait: Wait,
}

impl Pause {
    pub fn new(wait: Wait, backoff: (BackoffStrategy, Duration, Duration)) -> Pause {
        let deadline = match wait {
            Wait::Until(d) => Some(d),
            Wait::NonBlocking => Some(Instant::now()),
            Wait::Forever => None,
        };
        Pause {
            sleeps: Sleeps::new(Schedule::new(backoff.0, backoff.1, backoff.2), deadline),
            wait,
        }
    }

    /// Sleeps one backoff step; `Err` when the deadline has passed (or the
    /// request was non-blocking), or `interrupted` said yes.
    pub fn sleep(&mut self, interrupted: &mut dyn FnMut() -> bool) -> Result<(), Denied> {
        let Some(step) = self.sleeps.next_at(Instant::now()) else {
            return Err(match self.wait {
                Wait::NonBlocking => Denied::Busy,
                _ => Denied::TimedOut,
            });
        };
        let until = Instant::now() + step;
        loop {
            if interrupted() {
                return Err(Denied::Interrupted);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(kernel::POLL_SLICE));
        }
    }

    /// What is left of the wait, for the next kernel lock call.
    pub fn wait(&self) -> Wait {
        self.wait
    }
}

/// The pid of an old-library record at the start of `f` (a pid and a
/// newline, nothing else), for the one description of a lock's holder
/// ([`super::holder::Who`]): `None` for anything else or an empty file.
pub(crate) fn old_library_pid(f: impl AsFd) -> Option<u32> {
    let mut buf = [0u8; OLD_RECORD_MAX];
    let n = loop {
        match rustix::io::pread(f.as_fd(), &mut buf, 0) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    };
    old_pid(&buf[..n])
}

/// The pid of the old library's process holding the lock file open on
/// `f`: its record ([`old_library_pid`]), written less than
/// [`OLD_STALE_AFTER`] ago (the file's mtime) by a live process, the rule
/// [`check`] applies before every ffkit acquisition. `None`: the old
/// library does not hold it (no record, or a stale or dead one, which the
/// next acquirer takes over), so `lock-status` and `lock-release` see a
/// free lock exactly when `lock-acquire` would take it.
pub(crate) fn old_library_holder(f: impl AsFd) -> Option<u32> {
    let pid = old_library_pid(&f)?;
    let st = rustix::fs::fstat(&f).ok()?;
    let age = age_of(st.st_mtime as i64, st.st_mtime_nsec as i64);
    old_record_holds(pid, age).then_some(pid)
}

/// How long ago a file's modification time (`sec`, `nsec`) was; a file
/// from the future counts as fresh (zero).
fn age_of(sec: i64, nsec: i64) -> Duration {
    let mtime = UNIX_EPOCH
        + Duration::new(
            u64::try_from(sec).unwrap_or(0),
            u32::try_from(nsec).unwrap_or(0),
        );
    SystemTime::now()
        .duration_since(mtime)
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn old_library_records_are_a_pid_and_nothing_else() {
        assert_eq!(old_pid(b"1234\n"), Some(1234));
        assert_eq!(old_pid(b"4294967295\n"), Some(u32::MAX));
        assert_eq!(old_pid(b" 7 \n"), None);
        assert_eq!(old_pid(b"7 \n"), None);
        assert_eq!(old_pid(b" 4242x\n"), None);
        assert_eq!(old_pid(b"4242"), None);
        assert_eq!(old_pid(b"4242\n\n"), None);
        assert_eq!(old_pid(b"0042\n"), None);
        assert_eq!(old_pid(b"+42\n"), None);
        assert_eq!(old_pid(b"4294967296\n"), None);
        assert_eq!(old_pid(b"\n"), None);
        assert_eq!(old_pid(b"0\n"), None);
        assert_eq!(old_pid(b"12a\n"), None);
        assert_eq!(old_pid(b"{\"pid\":12}\n"), None);
        assert_eq!(old_pid(b"99999999999\n"), None);
        assert_eq!(old_pid(b"1111111111111111111111 1"), None);
    }

    /// The verdicts on one file: ours when created, the old library's for
    /// a fresh live pid or a fresh empty file, ours again once the record
    /// is stale (mtime 301 s back) or its pid is gone, replaced once the
    /// path names another file; and release deletes only the locked file.
    #[test]
    fn verdicts_follow_the_old_librarys_rules() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.lock");
        let (f, created) = open(&p, 0o600).unwrap();
        assert!(created);
        assert_eq!(check(&f, &p, true, true).unwrap(), Verdict::Ours);
        let (g, created) = open(&p, 0o600).unwrap();
        assert!(!created);
        assert_eq!(
            check(&g, &p, false, true).unwrap(),
            Verdict::OldLibrary(None)
        );
        assert_eq!(check(&g, &p, false, false).unwrap(), Verdict::Ours);
        let me = std::process::id();
        writeln!(&f, "{me}").unwrap();
        assert_eq!(
            check(&g, &p, false, true).unwrap(),
            Verdict::OldLibrary(Some(me))
        );
        assert_eq!(
            check(&g, &p, false, false).unwrap(),
            Verdict::OldLibrary(Some(me))
        );
        let old = SystemTime::now() - Duration::from_secs(301);
        f.set_modified(old).unwrap();
        assert_eq!(check(&g, &p, false, true).unwrap(), Verdict::Ours);
        f.set_len(0).unwrap();
        f.set_modified(old).unwrap();
        assert_eq!(check(&g, &p, false, true).unwrap(), Verdict::Ours);
        std::fs::remove_file(&p).unwrap();
        assert_eq!(check(&g, &p, false, true).unwrap(), Verdict::Replaced);
        let (h, _) = open(&p, 0o600).unwrap();
        assert!(!remove(&g, &p).unwrap());
        assert!(p.exists());
        assert!(remove(&h, &p).unwrap());
        assert!(!p.exists());
    }

    /// `check_known` gives `check`'s verdicts from the identity known
    /// before the lock and the path's status, with the locked file's
    /// length; a record of 24 bytes or more is never an old-library one.
    #[test]
    fn check_known_agrees_with_check() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.lock");
        let (f, created, st) = Rule {
            follow: true,
            backoff: (
                BackoffStrategy::Exponential,
                Duration::from_millis(1),
                Duration::from_millis(1),
            ),
        }
        .open_stat(&p, 0o600)
        .unwrap();
        assert!(created);
        let id = (st.st_dev, st.st_ino);
        assert_eq!(
            check_known(&f, id, &p, true, true).unwrap(),
            (Verdict::Ours, 0)
        );
        assert_eq!(
            check_known(&f, id, &p, false, true).unwrap(),
            (Verdict::OldLibrary(None), 0)
        );
        assert_eq!(
            check_known(&f, id, &p, false, false).unwrap(),
            (Verdict::Ours, 0)
        );
        let me = std::process::id();
        writeln!(&f, "{me}").unwrap();
        let len = format!("{me}\n").len() as u64;
        for follow in [false, true] {
            assert_eq!(
                check_known(&f, id, &p, false, follow).unwrap(),
                (Verdict::OldLibrary(Some(me)), len)
            );
            assert_eq!(
                check(&f, &p, false, follow).unwrap(),
                Verdict::OldLibrary(Some(me))
            );
        }
        f.set_len(0).unwrap();
        writeln!(&f, "{me}                         ").unwrap();
        let long = std::fs::metadata(&p).unwrap().len();
        assert!(long >= 24);
        assert_eq!(
            check_known(&f, id, &p, false, true).unwrap(),
            (Verdict::Ours, long)
        );
        assert_eq!(check(&f, &p, false, true).unwrap(), Verdict::Ours);
        std::fs::remove_file(&p).unwrap();
        assert_eq!(
            check_known(&f, id, &p, false, true).unwrap().0,
            Verdict::Replaced
        );
        let (_g, _) = open(&p, 0o600).unwrap();
        assert_eq!(
            check_known(&f, id, &p, false, true).unwrap().0,
            Verdict::Replaced
        );
    }
}
