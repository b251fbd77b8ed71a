//! Where cache-run keeps its entries and takes its per-key lock: the local
//! cache dir, or the Redis backend (docs/cache-run.md, "On Redis"). This is
//! the whole difference between the two; the flow (look, lock, look again,
//! run, store, replay, refresh) is `Memo`'s and the same for both.
//!
//! - Local: the entry goes through [`Cache`] (value file + sidecar, exact
//!   size index); the lock is `flock(2)` on `.cache-run/<hex>.lock`; replays
//!   are counted in `.cache-run/<hex>.hits`.
//! - Remote: the backend's [`RunStore`] (the Redis one: the entry goes
//!   through the backend's cache scripts, counting in the Lua-kept total
//!   like any `cache-write`; the lock is a leased Redis lock beside the
//!   entries, `…run-lock:<hex>`, renewed by a background thread while the
//!   command runs and waited for on its wake-up list; replays are counted
//!   in the entry's metadata hash, which a rewrite clears).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::RUN_DIR;
use super::key::RunKey;
use super::record::Stored;
use crate::backend::Target;
use crate::backend::remote::{LookMode, RemoteLookup, RunStore};
use crate::cache::{Cache, Lookup, NewEntry, Value};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::lock::{self, Kind, Wait};

/// The entries and the per-key lock of one cache.
pub enum Store<'a> {
    Local(&'a Cache),
    Remote(Box<dyn RunStore>),
}

/// A held per-key lock; dropping it releases the lock.
pub enum Guard {
    File(#[allow(dead_code)] File),
    /// A remote backend's lock (its lease renewal ends with it).
    Remote(#[allow(dead_code)] Box<dyn std::any::Any>),
}

/// One look at an entry.
pub enum Look {
    Hit {
        /// The checked value, or why it is damaged.
        body: std::result::Result<Stored, String>,
        age: i64,
        /// Replays counted by the look itself (Redis); `None`: count after.
        hits: Option<u64>,
    },
    Expired {
        age: i64,
    },
    Missing,
    /// The metadata is damaged (a miss that says why).
    Damaged(String),
}

impl Store<'_> {
    /// cache-run's store on the remote backend `target` (connected at
    /// first use, so a server that is down is found by the first look,
    /// where the call can still run uncached).
    pub fn remote(target: &Target, cfg: &Config) -> Result<Store<'static>> {
        let d = crate::backend::remote::driver().ok_or_else(|| {
            Error::Config(format!(
                "backend {}: no remote backend in this program",
                target.label
            ))
        })?;
        Ok(Store::Remote(d.run_store(target, cfg)))
    }
}

impl Store<'_> {
    /// Whether the entries live on a remote backend.
    pub fn is_remote(&self) -> bool {
        matches!(self, Store::Remote(_))
    }

    /// "Now" for a new recording's `ran_at`.
    pub fn now(&self) -> i64 {
        match self {
            Store::Local(c) => c.now(),
            Store::Remote(r) => r.now(),
        }
    }

    /// Looks the entry up; `replay` says a hit will be replayed (Redis
    /// counts it in the same step), `peek` changes nothing.
    pub fn look(&self, key: &RunKey, replay: bool, peek: bool) -> Result<Look> {
        let entry = key.entry();
        match self {
            // A hit first without the cache's lock: a good one (its record
            // checks its own lengths; the hash is checked before the
            // replay writes) is all a hit needs. Anything else (missing,
            // expired, damaged, or a sidecar of another generation) is
            // looked at again under the lock, which also repairs a crashed
            // change, so it is answered exactly as before.
            Store::Local(c)
                if !peek
                    && let Ok(Lookup::Hit(file, meta)) = c.read_unlocked(&entry)
                    && let Ok(body) = Stored::open_len(file, meta.size) =>
            {
                Ok(Look::Hit {
                    body: Ok(body),
                    age: (c.now() - meta.created_at).max(0),
                    hits: None,
                })
            }
            Store::Local(c) => match c.read_locked(&entry) {
                // The cache checked the value file's length (its open's
                // fstat) against the sidecar's size: a hit's value is
                // `meta.size` bytes long, and is not measured again.
                Ok(Lookup::Hit(file, meta)) => Ok(Look::Hit {
                    body: Stored::open_len(file, meta.size),
                    age: (c.now() - meta.created_at).max(0),
                    hits: None,
                }),
                Ok(Lookup::Expired(meta)) => Ok(Look::Expired {
                    age: (c.now() - meta.created_at).max(0),
                }),
                Ok(Lookup::Missing) => Ok(Look::Missing),
                Err(Error::Corruption(why)) => Ok(Look::Damaged(why)),
                // A symlink, FIFO or directory at the value's or the
                // sidecar's name: damage in our own namespace, a miss
                // (the write replaces it).
                Err(e) if entry_names(c, key).iter().any(|p| non_regular(p)) => {
                    Ok(Look::Damaged(e.to_string()))
                }
                Err(e) => Err(e),
            },
            Store::Remote(r) => {
                let mode = if peek {
                    LookMode::Peek
                } else if replay {
                    LookMode::Hit
                } else {
                    LookMode::Plain
                };
                // The read checks the value's length against its recorded
                // size in the same step: damage is a miss, as locally.
                let f = match r.look(&entry, mode) {
                    Ok(f) => f,
                    Err(Error::Corruption(why)) => return Ok(Look::Damaged(why)),
                    Err(e) => return Err(e),
                };
                let age = f.age;
                Ok(match f.lookup {
                    RemoteLookup::Hit(v) => Look::Hit {
                        body: Stored::from_bytes(v),
                        age,
                        hits: Some(f.hits),
                    },
                    RemoteLookup::Expired(_) => Look::Expired { age },
                    RemoteLookup::Missing => Look::Missing,
                })
            }
        }
    }

    /// Stores a recording (generation `id`) as the entry; its replay count
    /// starts again at 0, and an older failure handed to waiters goes.
    pub fn write(&self, key: &RunKey, value: &mut dyn Read, ttl: u64, id: u64) -> Result<()> {
        match self {
            Store::Local(c) => {
                // A directory (or other non-file) at the entry's name or its
                // sidecar's is damage in our own namespace: it goes, never
                // followed, and the entry takes its place.
                for p in entry_names(c, key) {
                    clear_non_regular(&p);
                }
                c.write(vec![NewEntry {
                    key: key.entry(),
                    value: Value::Reader(value),
                    ttl,
                }])?;
                count_local_hit(c, key, id, true);
                let _ = fs::remove_file(side_file(c, key, "failed"));
                Ok(())
            }
            Store::Remote(r) => {
                // The backend sends a value whole from memory anyway.
                let mut bytes = Vec::new();
                value.read_to_end(&mut bytes).map_err(|e| {
                    // This copy of the whole value (the recording, and a
                    // --key-stdin spool if any) is what runs out under
                    // `ulimit -v`: said as the memory it is, not as the
                    // spool of a stdin that may not even be keyed.
                    if e.kind() == std::io::ErrorKind::OutOfMemory {
                        Error::General("the output does not fit in the memory left".into())
                    } else {
                        Error::io("cannot read", "the spool of standard input", e)
                    }
                })?;
                r.write(&key.entry(), &bytes, ttl)
            }
        }
    }

    /// The id of the last failure handed to waiters (locally:
    /// `.cache-run/<hex>.failed`, written only with --discard-failures).
    pub fn failure_id(&self, key: &RunKey) -> Option<u64> {
        self.failure(key).map(|s| s.header.id)
    }

    /// The last failure handed to waiters, checked like an entry. Redis
    /// keeps none: its waiters run the command themselves.
    pub fn failure(&self, key: &RunKey) -> Option<Stored> {
        match self {
            Store::Local(c) => {
                let f = open_side(&checked_side_file(c, key, "failed")?, false, false).ok()?;
                if !f.metadata().ok()?.file_type().is_file() {
                    return None;
                }
                Stored::open(f).ok()
            }
            Store::Remote(_) => None,
        }
    }

    /// Hands a failed run (not stored: --discard-failures) to the waiters
    /// of the key's lock, which the caller holds. Best effort: without it
    /// the waiters run the command themselves.
    pub fn put_failure(&self, key: &RunKey, value: &mut dyn Read) {
        let Store::Local(c) = self else { return };
        let Ok(dir) = run_dir(c) else { return };
        let Ok((tmp, mut f)) = fsutil::create_temp(&dir) else {
            return;
        };
        let ok = io::copy(value, &mut f).is_ok()
            && fs::rename(&tmp, side_file(c, key, "failed")).is_ok();
        if !ok {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Removes the entry; whether there was one. The caller holds the
    /// key's lock, so locally the key's lock file goes too (a waiter that
    /// opened it takes the new one, see [`lock_local`]): nothing is left.
    pub fn remove(&self, key: &RunKey) -> Result<bool> {
        let entry = key.entry();
        match self {
            Store::Local(c) => {
                let had = c.dir().join(&entry).exists();
                c.remove(&[entry])?;
                // The output blobs only this entry used (best effort: a
                // busy store leaves them to the next sweep, still counted).
                let _ = super::output::sweep(c, false, &[]);
                if let Ok(dir) = run_dir(c) {
                    for ext in ["hits", "failed", "lock"] {
                        let _ = fs::remove_file(dir.join(format!("{}.{ext}", key.hex)));
                    }
                }
                Ok(had)
            }
            Store::Remote(r) => r.delete(&entry),
        }
    }

    /// Whether there can be an entry at all (a local cache dir that does
    /// not exist has none, and is not created just to say so).
    pub fn may_hold(&self) -> bool {
        match self {
            Store::Local(c) => c.dir().is_dir(),
            Store::Remote(_) => true,
        }
    }

    /// Counts a replay of generation `id` and returns the count; `counted`
    /// is the count the look already made (Redis).
    pub fn count_hit(&self, key: &RunKey, id: u64, counted: Option<u64>) -> u64 {
        match (self, counted) {
            (_, Some(n)) => n,
            (Store::Local(c), None) => count_local_hit(c, key, id, false),
            (Store::Remote(_), None) => 0,
        }
    }

    /// The replay count of generation `id` without counting (local; Redis
    /// reports it with the look).
    pub fn hits(&self, key: &RunKey, id: u64, counted: Option<u64>) -> u64 {
        match (self, counted) {
            (_, Some(n)) => n,
            (Store::Local(c), None) => {
                let Some(path) = checked_side_file(c, key, "hits") else {
                    return 0;
                };
                match open_side(&path, false, false) {
                    Ok(f) => match read_counter(&f) {
                        (g, n) if g == id => n,
                        _ => 0,
                    },
                    Err(_) => 0,
                }
            }
            (Store::Remote(_), None) => 0,
        }
    }

    /// Takes the per-key lock: at once if free; else waits up to `wait`
    /// (`None`: not at all, and returns `None`). Waiting past `wait` is
    /// [`Error::Timeout`].
    pub fn lock(&self, key: &RunKey, wait: Option<Duration>) -> Result<Option<Guard>> {
        match self {
            Store::Local(c) => lock_local(c, key, wait),
            Store::Remote(r) => Ok(r.lock(&key.entry(), &key.hex, wait)?.map(Guard::Remote)),
        }
    }

    /// Whether a run of this key holds the lock right now (a stale hit
    /// starts a refresh only when none does).
    pub fn busy(&self, key: &RunKey) -> bool {
        match self {
            Store::Local(_) => !matches!(self.lock(key, None), Ok(Some(_))),
            Store::Remote(r) => r.busy(&key.entry(), &key.hex),
        }
    }
}

fn side_file(c: &Cache, key: &RunKey, ext: &str) -> PathBuf {
    c.dir().join(RUN_DIR).join(format!("{}.{ext}", key.hex))
}

/// [`side_file`] for a call that does not hold the key's lock (a hit's
/// counter, a waiter's look at a failure) or removes: `None` when a
/// symlink stands at `.cache-run/`. `O_NOFOLLOW` guards only the file's own
/// name; without this `lstat` a hit rewrote 16 bytes of the `<hex>.hits`
/// in a linked directory elsewhere, which the miss path (through
/// [`run_dir`]) already refused.
fn checked_side_file(c: &Cache, key: &RunKey, ext: &str) -> Option<PathBuf> {
    run_dir(c)
        .ok()
        .map(|d| d.join(format!("{}.{ext}", key.hex)))
}

/// `.cache-run/`, unless a symlink stands there: the per-key files are
/// never made, written or removed through one (a `.cache-run` linked to a
/// directory elsewhere got lock, hit and failure files made there, and every
/// eviction removed the files there named like a key's). The call runs its
/// command uncached, as for a file in its place; an eviction prunes nothing.
fn run_dir(c: &Cache) -> Result<PathBuf> {
    let dir = c.dir().join(RUN_DIR);
    if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Permission(format!(
            "{}: a symlink; the per-key lock files are never used through one",
            dir.display()
        )));
    }
    Ok(dir)
}

fn lock_local(c: &Cache, key: &RunKey, wait: Option<Duration>) -> Result<Option<Guard>> {
    fsutil::create_private_dir(&run_dir(c)?)?;
    let path = side_file(c, key, "lock");
    let deadline = wait.map(|t| (t, Wait::timeout(t)));
    let mut cleared = 0;
    loop {
        let f = match fsutil::open_rw_create(&path) {
            Ok(f) => f,
            // A symlink, FIFO or directory in the lock file's place is no
            // lock anybody holds (ours are regular files): it goes, never
            // followed, and the lock file is made again.
            Err(e) if cleared < 3 && clear_non_regular(&path) => {
                let _ = e;
                cleared += 1;
                continue;
            }
            Err(e) => return Err(Error::io(crate::lock::OPEN_FAILED, &path, e)),
        };
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let Some((t, until)) = deadline else {
                    return Ok(None);
                };
                match lock::kernel::flock_until(f.as_raw_fd(), Kind::Exclusive, until) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(Error::Timeout(format!(
                            "another run of this command still holds {} after {}s (LOCK_TIMEOUT)",
                            path.display(),
                            t.as_secs_f64()
                        )));
                    }
                    Err(e) => {
                        return Err(Error::LockFailed(format!(
                            "cannot lock {}: {}",
                            path.display(),
                            crate::error::os_reason(&e)
                        )));
                    }
                }
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::LockFailed(format!(
                    "cannot lock {}: {}",
                    path.display(),
                    crate::error::os_reason(&e)
                )));
            }
        }
        // An eviction prunes the lock files of keys without an entry
        // (`prune_local`), unlinking them while it holds them: a file this
        // call opened before that guards nothing, so take the one the name
        // leads to now.
        if still_named(&f, &path) {
            return Ok(Some(Guard::File(f)));
        }
    }
}

/// Removes what is at `path` if it is not a regular file (a symlink itself,
/// not its target; a directory with its content); whether it did.
pub fn clear_non_regular(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).is_ok(),
        Ok(m) if !m.is_file() => fs::remove_file(path).is_ok(),
        _ => false,
    }
}

/// The value's and the sidecar's paths of `key`'s entry.
fn entry_names(c: &Cache, key: &RunKey) -> [PathBuf; 2] {
    let e = key.entry();
    [c.dir().join(&e), c.dir().join(format!("{e}.meta"))]
}

/// Whether something other than a regular file is at `path`.
fn non_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| !m.is_file())
}

/// Whether `path` still leads to the file `f` has open.
fn still_named(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Removes the `.cache-run/` files of keys that have no entry any more (a
/// key evicted or invalidated): each lock file only while holding it and
/// after looking at the entry again, so a run in progress keeps its lock
/// and a run that just stored keeps its files; a process that opened the
/// file before it went notices ([`lock_local`]). Returns how many keys'
/// files went. Best effort per key: a file that cannot be locked or removed
/// is left for the next eviction.
pub fn prune_local(c: &Cache) -> Result<usize> {
    let Ok(dir) = run_dir(c) else {
        return Ok(0);
    };
    let list = match fs::read_dir(&dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("cannot list", &dir, e)),
    };
    let has_entry = |key: &RunKey| fs::symlink_metadata(c.dir().join(key.entry())).is_ok();
    let mut pruned = 0;
    // Temps of the failures handed to waiters ([`Store::put_failure`]) whose
    // writer was killed before the rename: removed once it is dead, as the
    // cache's own temps are (they are not counted, so nothing else would).
    let mut temps = crate::cache::scan::Scan::default();
    for e in list.flatten() {
        let name = e.file_name();
        if name
            .as_encoded_bytes()
            .starts_with(fsutil::TEMP_PREFIX.as_bytes())
        {
            temps.temps.push(name);
            continue;
        }
        let Some((key, ext)) = name
            .to_str()
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(hex, ext)| RunKey::from_hex(hex).map(|k| (k, ext)))
        else {
            continue;
        };
        let lock_path = side_file(c, &key, "lock");
        match ext {
            "lock" => {
                if has_entry(&key) {
                    continue;
                }
                let Ok(f) = open_side(&lock_path, false, false) else {
                    continue;
                };
                if f.try_lock().is_err() || !still_named(&f, &lock_path) || has_entry(&key) {
                    continue;
                }
                let _ = fs::remove_file(side_file(c, &key, "hits"));
                let _ = fs::remove_file(side_file(c, &key, "failed"));
                if fs::remove_file(&lock_path).is_ok() {
                    pruned += 1;
                }
            }
            // A counter whose lock file is gone already (removed by hand).
            "hits" | "failed"
                if !has_entry(&key)
                    && fs::symlink_metadata(&lock_path).is_err()
                    && fs::remove_file(e.path()).is_ok() =>
            {
                pruned += 1;
            }
            _ => {}
        }
    }
    temps.remove_stale_temps(&dir);
    Ok(pruned)
}

/// Counts a replay of generation `id` (or, with `reset`, starts a new
/// generation at 0). Best effort: a count is a hint, never a failure, and
/// never a wait. A replay is six system calls (lstat, open, fstat, read,
/// write, close) and takes no lock: two replays in the same instant may count once, and
/// a replay that races a rewrite may leave the old generation's id (the
/// new one then reads 0), so `hits` is a lower bound under contention. A
/// counter that is missing (removed by hand) is not created by a replay;
/// the next recording makes it again.
fn count_local_hit(c: &Cache, key: &RunKey, id: u64, reset: bool) -> u64 {
    let Some(path) = checked_side_file(c, key, "hits") else {
        return 0;
    };
    // A counter is a regular file with one name. A second name (a hard
    // link planted to a file elsewhere) had its first 16 bytes rewritten
    // by every hit, as a symlinked `.cache-run` had: a replay now leaves
    // such a file alone, and the store replaces its name with a file of
    // its own. Only the store makes the file; a replay's open cannot
    // create one, and fails on a directory in its place.
    let own = |f: &File| f.metadata().is_ok_and(|m| fsutil::sole_regular(&m));
    let update = || -> io::Result<u64> {
        let mut f = open_side(&path, reset, true)?;
        if !own(&f) {
            if !reset || !f.metadata()?.file_type().is_file() {
                return Err(io::ErrorKind::InvalidInput.into());
            }
            fs::remove_file(&path)?;
            f = open_side(&path, true, true)?;
            if !own(&f) {
                return Err(io::ErrorKind::InvalidInput.into());
            }
        }
        let n = if reset {
            0
        } else {
            match read_counter(&f) {
                (g, n) if g == id => n + 1,
                _ => 1,
            }
        };
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&id.to_le_bytes());
        b[8..].copy_from_slice(&n.to_le_bytes());
        f.write_all_at(&b, 0)?;
        Ok(n)
    };
    update().unwrap_or(0)
}

fn open_side(path: &Path, create: bool, write: bool) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(write || create)
        .create(create)
        .mode(fsutil::FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if create {
        fsutil::fix_opened_mode(&f, fsutil::FILE_MODE)?;
    }
    Ok(f)
}

fn read_counter(f: &File) -> (u64, u64) {
    let mut b = [0u8; 16];
    match f.read_exact_at(&mut b, 0) {
        Ok(()) => (
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        ),
        Err(_) => (0, 0),
    }
}
