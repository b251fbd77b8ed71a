//! Dot-locks: the lock is the existence of a file, for file systems where
//! kernel locks do not work (NFS without a lock manager).
//!
//! Taking: write the [`Holder`] record to a fresh temp file beside the lock,
//! then link(2) it to the lock path — atomic even on old NFS, and a lost
//! reply is recognised by the temp file's link count of 2.
//!
//! Stale locks (owner on this host and gone, or older than
//! `LOCK_STALE_AFTER`) are removed without the classic dotlockfile race (a
//! waiter deleting whatever file is there after its own stat, possibly a
//! fresh holder's). Every removal — breaking a stale lock and a holder's own
//! release — first takes a second dot-lock, `.NAME.break`, the "break
//! lock". Under it the lock file cannot change except by being created where
//! none exists, so: re-check that the lock path is still the very inode
//! judged stale, rename it to a unique name (never unlink by name), unlink
//! that, drop the break lock. A break lock left by a process that crashed in
//! that few-microsecond window is itself broken after [`BREAK_STALE`].

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::backoff::{Schedule, Sleeps};
use super::holder::{self, Holder};
use super::{Denied, Wait};
use crate::error::{Error, Result};
use crate::fsutil;

/// A break lock older than this was left by a crash and is removed.
pub(crate) const BREAK_STALE: Duration = Duration::from_secs(10);

/// A dot-lock we hold: its path and the inode we linked.
pub struct Held {
    pub path: PathBuf,
    pub ino: u64,
}

/// What is at a lock path now.
pub(crate) struct Seen {
    pub holder: Option<Holder>,
    pub ino: u64,
    /// Seconds since the file was last modified.
    pub mtime_age: f64,
}

impl Seen {
    /// Stale (docs/locks.md, "`--dotlock`"): a holder on this host is
    /// stale exactly when it is gone — its pid with its start time, and the
    /// command it runs, if any — whatever its age; a live one never is.
    /// Age counts only for a holder that cannot be checked (another host,
    /// or an unreadable record), and it is the age of the file's mtime,
    /// which a live command-mode holder refreshes (the heartbeat): "no
    /// sign of life for `stale_after`", not "started long ago".
    pub(crate) fn is_stale(&self, stale_after: Duration) -> bool {
        match &self.holder {
            Some(h) if h.pid != 0 && h.host == holder::hostname() => h.owner_gone(),
            _ => self.mtime_age > stale_after.as_secs_f64(),
        }
    }
}

/// The heartbeat period for a lock that counts as stale after `stale_after`
/// without a sign of life: a quarter of it, between 1 ms and 60 s.
pub(crate) fn heartbeat_every(stale_after: Duration) -> Duration {
    (stale_after / 4).clamp(Duration::from_millis(1), Duration::from_secs(60))
}

/// Refreshes the mtime of our lock (if it is still the inode we linked), so
/// a waiter elsewhere sees a sign of life.
pub(crate) fn heartbeat(h: &Held) {
    if let Ok(f) = super::kernel::open_lock_file_existing(&h.path)
        && f.metadata().is_ok_and(|m| m.ino() == h.ino)
    {
        let now = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
        };
        let _ = rustix::fs::futimens(&f, &now);
    }
}

/// Rewrites our lock's record in place (same inode) to name the command
/// that runs under it, so a holder killed while its command runs is not
/// taken for gone: the lock stays until the command ends too.
pub(crate) fn set_runner(h: &Held, rec: &Holder, pid: u32) {
    let mut rec = rec.clone();
    rec.holder_pid = Some(pid);
    rec.holder_start = holder::start_time(pid);
    if let Ok(f) = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&h.path)
        && f.metadata().is_ok_and(|m| m.ino() == h.ino)
    {
        let _ = holder::write_to(&f, &rec);
    }
}

/// The start of a lock file's content (a record's room: 8 KiB).
pub(crate) fn content(mut f: &fs::File) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = (&mut f).take(8192).read_to_end(&mut buf);
    buf
}

/// Reads the lock at `path`; `None` when there is none.
pub(crate) fn look(path: &Path) -> Result<Option<Seen>> {
    let f = match super::kernel::open_lock_file_existing(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(crate::lock::OPEN_FAILED, path, e)),
    };
    let m = f
        .metadata()
        .map_err(|e| Error::io("cannot inspect", path, e))?;
    let buf = content(&f);
    let mtime_age = (holder::now_epoch() - m.mtime() as f64).max(0.0);
    Ok(Some(Seen {
        holder: Holder::parse(&buf),
        ino: m.ino(),
        mtime_age,
    }))
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique dot-name beside `path`: `.NAME.<what>.<host>.<pid>.<seq>`.
fn side_name(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(
        ".{name}.{what}.{}.{}.{n}",
        holder::hostname(),
        std::process::id()
    ))
}

fn break_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.break"))
}

/// Creates `path` holding `content` atomically by link(2); `Some(inode)` if
/// we created it, `None` if it already exists.
fn create_linked(path: &Path, content: &[u8]) -> Result<Option<u64>> {
    let tmp = side_name(path, "tmp");
    let write = || -> io::Result<()> {
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        use std::io::Write;
        (&f).write_all(content)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot create", &tmp, e));
    }
    let linked = fs::hard_link(&tmp, path);
    let out = match linked {
        Ok(()) => fs::symlink_metadata(&tmp).map(|m| Some(m.ino())),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => match fs::symlink_metadata(&tmp) {
            // NFS: the link happened but its reply was lost.
            Ok(m) if m.nlink() == 2 => Ok(Some(m.ino())),
            _ => Err(e),
        },
    };
    let _ = fs::remove_file(&tmp);
    out.map_err(|e| Error::io("cannot create lock", path, e))
}

/// Removes the file at `path` only if it is still inode `ino`: renamed to a
/// unique name first, then unlinked. Call only under the break lock (or for
/// the break lock itself).
fn remove_if_same(path: &Path, ino: u64) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.ino() == ino => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("cannot inspect", path, e)),
    }
    let aside = side_name(path, "stale");
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("cannot remove stale lock", path, e)),
    }
    fsutil::remove_if_exists(&aside)?;
    Ok(true)
}

/// Runs `f` holding the break lock of `path`; waits (1 ms steps) for a
/// busy break lock up to `patience`.
fn with_break_lock<T>(
    path: &Path,
    patience: Duration,
    f: impl FnOnce() -> Result<T>,
) -> Result<Option<T>> {
    let brk = break_path(path);
    let line = Holder::new(
        holder::KIND_DOTLOCK,
        std::process::id(),
        Some("break".into()),
    )
    .to_line();
    let give_up = Instant::now() + patience;
    let ino = loop {
        if let Some(ino) = create_linked(&brk, &line)? {
            break ino;
        }
        if let Some(seen) = look(&brk)?
            && (seen.mtime_age > BREAK_STALE.as_secs_f64()
                || seen.holder.as_ref().is_some_and(Holder::owner_gone))
        {
            remove_if_same(&brk, seen.ino)?;
            continue;
        }
        if Instant::now() >= give_up {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let out = f();
    let _ = remove_if_same(&brk, ino);
    out.map(Some)
}

/// What a dot-lock acquisition reports while it works.
pub trait Events {
    /// Once, before the first sleep, with what holds the lock.
    fn waiting(&mut self, _holder: Option<&Holder>) {}
    /// Every sleep of the backoff schedule.
    fn sleeping(&mut self, _d: Duration) {}
    /// A stale lock was broken (removed); its record, if readable.
    fn broke(&mut self, _holder: Option<&Holder>) {}
}

/// Hears nothing.
pub struct Silent;

impl Events for Silent {}

/// Takes the dot-lock at `path` with record `rec`, polling on `schedule`
/// until `wait` runs out, reporting to `ev`.
pub fn acquire(
    path: &Path,
    rec: &Holder,
    stale_after: Duration,
    wait: Wait,
    schedule: Schedule,
    ev: &mut dyn Events,
) -> Result<std::result::Result<Held, Denied>> {
    let line = rec.to_line();
    let deadline = match wait {
        Wait::Until(d) => Some(d),
        _ => None,
    };
    let mut sleeps = Sleeps::new(schedule, deadline);
    let mut announced = false;
    loop {
        if let Some(ino) = create_linked(path, &line)? {
            return Ok(Ok(Held {
                path: path.to_path_buf(),
                ino,
            }));
        }
        let Some(seen) = look(path)? else {
            continue; // released between our link and our look
        };
        if seen.is_stale(stale_after) {
            // Re-judged under the break lock: only the very inode we saw,
            // and only if it is still stale.
            let judged = seen.ino;
            let broke = with_break_lock(path, Duration::from_secs(2), || match look(path)? {
                Some(now) if now.ino == judged && now.is_stale(stale_after) => {
                    remove_if_same(path, judged)
                }
                _ => Ok(false),
            })?;
            if broke == Some(true) {
                ev.broke(seen.holder.as_ref());
            }
            continue;
        }
        if wait == Wait::NonBlocking {
            return Ok(Err(Denied::Busy));
        }
        if !announced {
            announced = true;
            ev.waiting(seen.holder.as_ref());
        }
        let Some(d) = sleeps.next_at(Instant::now()) else {
            return Ok(Err(Denied::TimedOut));
        };
        if d.is_zero() {
            // Exactly at the deadline: one last try, then give up.
            return match create_linked(path, &line)? {
                Some(ino) => Ok(Ok(Held {
                    path: path.to_path_buf(),
                    ino,
                })),
                None => Ok(Err(Denied::TimedOut)),
            };
        }
        ev.sleeping(d);
        std::thread::sleep(d);
    }
}

/// Releases our own lock (command mode): removes it if it is still the
/// inode we created.
pub fn release_held(h: &Held) -> Result<()> {
    with_break_lock(&h.path, Duration::from_secs(5), || {
        remove_if_same(&h.path, h.ino)
    })?
    .ok_or_else(|| {
        Error::LockFailed(format!(
            "{}: break lock stayed busy; lock not removed",
            h.path.display()
        ))
    })?;
    Ok(())
}

/// Why a named dot-lock release did nothing.
pub(crate) enum NotReleased {
    NotHeld,
    NotOwner(Holder),
}

/// Releases a named dot-lock if `may(record)` allows; removal is of the
/// inode whose record was checked, under the break lock.
pub(crate) fn release(
    path: &Path,
    may: &dyn Fn(&Holder) -> bool,
) -> Result<std::result::Result<Holder, NotReleased>> {
    let r = with_break_lock(path, Duration::from_secs(5), || {
        let Some(seen) = look(path)? else {
            return Ok(Err(NotReleased::NotHeld));
        };
        let rec = seen.holder.clone().unwrap_or_default();
        if !may(&rec) {
            return Ok(Err(NotReleased::NotOwner(rec)));
        }
        remove_if_same(path, seen.ino)?;
        Ok(Ok(rec))
    })?;
    r.ok_or_else(|| {
        Error::LockFailed(format!(
            "{}: break lock stayed busy; lock not released",
            path.display()
        ))
    })
}
