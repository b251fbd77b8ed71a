//! The cache engine: entries (value file + `KEY.meta` sidecar) in one flat
//! directory, an exact incremental size index, and crash repair.
//!
//! What counts toward the size, for the index and for a walk alike: every
//! regular file at the top level of the cache dir whose name does not start
//! with `.` — values, sidecars, and any stray file a person dropped there.
//! Dot-files are ffkit's own (`.size-index`, `.lock`, which starts with the
//! entry count, `.journal`, `.tmp-*`, `.perf-metrics.csv`, an older ffkit's
//! `.entry-count`) and never count. An "entry" is
//! such a file whose name does not end in `.meta`. One exception: the blobs
//! of cache-run's output store, `.store/XX/…` (see `memo::output`), count
//! toward the bytes (not the entries), once each however many entries use
//! them.
//!
//! Concurrency: `.lock` is a kernel lock (flock). Changes take it exclusive,
//! but only for the renames and the index update; values are written to temp
//! files first, outside the lock. Readers take it shared only while they
//! *open* the sidecar and value, then read from the open descriptors: files
//! are never modified in place, so a reader always gets one complete
//! generation of an entry, old or new, however slowly it copies.
//!
//! Crashes: see [`journal`].
//!
//! Recency for LRU is the value file's access time. A read sets it to now
//! when it is more than [`RECENCY_INTERVAL`] seconds old, so a hot key costs
//! one `futimens` a minute, never a rewrite.

pub mod batch;
pub mod dir;
pub mod entry;
pub mod evict;
pub mod index;
pub mod journal;
pub mod key;
pub mod progress;
pub mod scan;
pub mod store;

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{ChosenDir, Config, DirOrigin};
use crate::error::{Error, ExitKind, Result};
use crate::fsutil;
pub use entry::Meta;
pub use evict::{Census, EvictPolicy, EvictReport, Evicted, Reason, Shared, Swept};
pub use index::Totals;
use journal::{Journal, Record};
pub use progress::Progress;
use store::Body;
pub use store::Store;

/// Seconds between two recency updates of the same entry.
pub const RECENCY_INTERVAL: i64 = 60;

const LOCK_FILE: &str = ".lock";

/// Most bytes of a sidecar read: ffkit's are a few hundred at most (a key is
/// at most 250 bytes); a longer one is damaged and fails to parse.
const MAX_SIDECAR: u64 = 64 * 1024;

/// How long a wait for the dir lock goes on before it is announced.
const WAIT_NOTE_AFTER: Duration = Duration::from_millis(500);

/// Told once when a call starts waiting for the dir lock: the lock file
/// and how long the wait may last (`LOCK_TIMEOUT`).
pub type WaitNote = Box<dyn Fn(&Path, Duration)>;

/// How many values [`Cache::read_many`] holds open at once.
const READ_MANY_OPEN: usize = 16;

/// Whether `e` is an open refused for want of a descriptor (EMFILE: the
/// process's `ulimit -n`; ENFILE: the system's).
fn out_of_descriptors(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
}

/// A cache directory and the clock ffkit reads it with.
pub struct Cache {
    dir: PathBuf,
    /// Why this dir: a dir ffkit picked itself is checked more strictly
    /// than one the user named (see [`dir`]).
    origin: DirOrigin,
    /// The dir existed and passed [`dir::check`] when this cache was opened
    /// (a writer then neither creates nor checks it again).
    checked: bool,
    /// "Now" in whole epoch seconds (rounded down): entries' `created_at`,
    /// and the clock expiry is judged by.
    now: i64,
    /// "Now" rounded up: expiry counts from here, so an entry lives at
    /// least its TTL whatever the fraction of the second it was written at.
    expiry_base: i64,
    /// Set the written files' times explicitly (only needed when the clock
    /// is overridden; otherwise the kernel's own times are "now").
    set_times: bool,
    /// How long to wait for the dir lock (`LOCK_TIMEOUT`) before exit 6.
    lock_timeout: Duration,
    /// Who hears, once, that a call is waiting for the dir lock.
    wait_note: Option<WaitNote>,
    /// Where long walks, evictions and batches report progress.
    progress: Option<Box<dyn Progress>>,
    /// A write of a few keys makes its temp files unnamed (`O_TMPFILE`)
    /// where it can; off only for the tests of the named fallback.
    unnamed_temps: bool,
}

/// Where a size came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Index,
    Walk,
}

/// The answer of [`Cache::size`].
#[derive(Debug)]
pub struct SizeReport {
    pub totals: Totals,
    pub source: Source,
    /// Set when the index was missing or invalid and was rebuilt; says which.
    pub rebuilt: Option<&'static str>,
    /// The number is the index file's as it was, read without a lock, a
    /// journal to finish or a walk ([`Cache::size_bytes`]'s fast path):
    /// what the shell functions' forkless `get_cache_size` reads, which
    /// records no metrics row (docs/shell.md, "Hot paths without
    /// processes"), so neither does such a read in the builtin.
    pub from_index: bool,
}

/// The answer of [`Cache::verify`].
#[derive(Debug)]
pub struct VerifyReport {
    /// What the index said (`None`: missing or invalid).
    pub index: Option<Totals>,
    pub walk: Totals,
    /// Damage the totals cannot show, one line each (Redis: a value
    /// without its record, a key of another type); with `fix`, what was
    /// dropped or repaired. Empty locally.
    pub notes: Vec<String>,
    /// Redis, without `fix`: every damaged namespace-wide key (a counter
    /// or an index set), one line each. When any is, there was no recount
    /// (`index` and `walk` are meaningless). Empty locally.
    pub damaged: Vec<String>,
}

/// A value to write: bytes in memory or a stream (stdin).
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Reader(&'a mut dyn Read),
}

/// One entry to write.
pub struct NewEntry<'a> {
    pub key: String,
    pub value: Value<'a>,
    /// Seconds; 0 = never expires.
    pub ttl: u64,
}

/// The outcome of reading one key.
pub enum Lookup {
    /// The value file, opened while the entry was consistent, and its sidecar.
    Hit(File, Meta),
    Missing,
    Expired(Meta),
}

/// The cache's kernel lock on `.lock`, held while this lives (dropping
/// closes the descriptor, which releases it). The lock file also carries the
/// journal of a change in flight (see [`journal`]).
struct DirLock {
    /// `None`: a reader of a cache it cannot lock (read-only), going on
    /// without (nobody can be writing there).
    file: Option<File>,
    /// The entry count of the record that starts `.lock` (see [`index`]),
    /// as read once the lock was held, then as the holder left it; `None`:
    /// no valid record (a new file, or an older ffkit's), or not read (a
    /// reader's lock: [`Cache::load_count`] reads it on demand).
    count: Cell<Option<u64>>,
    /// Where the journal starts in `.lock`: after the record, or at 0 in
    /// a file without one (an older ffkit's journal).
    journal_at: Cell<u64>,
    /// The journal's length in `.lock`, read once the lock was held, then
    /// as the holder left it: not 0 while a journal is in it.
    journal_len: Cell<u64>,
    /// No record was found: an older ffkit's `.entry-count` file may be
    /// there, to be removed once the record holds the count.
    legacy: Cell<bool>,
    /// Whether a `.journal` file may be there (found, or made by
    /// [`journal::mark_unknown`]); the end of the change removes it.
    marked: Cell<bool>,
}

impl DirLock {
    fn none() -> Self {
        DirLock {
            file: None,
            count: Cell::new(None),
            journal_at: Cell::new(0),
            journal_len: Cell::new(0),
            legacy: Cell::new(false),
            marked: Cell::new(false),
        }
    }
}

/// A prepared replacement of one key, before it is committed.
struct Change {
    key: String,
    /// The temp file that becomes `KEY`, and its inode; `None` with `meta`
    /// also `None` means "remove the entry".
    value: Option<(Temp, u64)>,
    /// The temp file that becomes `KEY.meta`, and its inode.
    meta: Option<(Temp, u64)>,
    /// Bytes of both temp files together (0 for a removal).
    bytes: u64,
}

/// A temp file of a prepared change.
enum Temp {
    /// A name in the cache dir (`.tmp-PID-N`), renamed into place.
    Named(PathBuf),
    /// An unnamed file (`O_TMPFILE`), held open until the commit links it
    /// at its key, or, for a key that is there already, at a temp name.
    Unnamed(File),
}

impl Temp {
    /// The name the journal gives it: its file name, or
    /// [`journal::UNNAMED_TMP`] for an unnamed file.
    fn journal_name(&self) -> Option<String> {
        match self {
            Temp::Named(p) => file_name(p),
            Temp::Unnamed(_) => Some(journal::UNNAMED_TMP.to_string()),
        }
    }
}

/// How a failed write to an unnamed temp file (`O_TMPFILE`) is worded: it
/// has no path, so the message names the cache dir it was made in.
const UNNAMED_WRITE: &str = "cannot write an unnamed temp file (O_TMPFILE) in";

/// Most keys one write makes unnamed temp files for: each is an open
/// descriptor until the commit (two per key), so a batch of thousands
/// makes named ones, which it closes as it goes.
const UNNAMED_MAX: usize = 8;

/// What a commit knows of one key before its first attempt: which of the
/// two names were free when it looked (under the lock it still holds), so
/// a new name takes one `rename` rather than a failed exchange first; and
/// what the key will count once both temp files are in place, so a
/// successful install needs no `stat` to measure it.
#[derive(Clone, Copy)]
struct Fresh {
    value_free: bool,
    meta_free: bool,
    /// `None` for a removal (measured after it, as a roll-forward does).
    bytes: Option<u64>,
}

impl Cache {
    /// A cache at `dir`, with `now` in epoch seconds; `clock_overridden`
    /// says whether `now` is a test clock that file times must follow.
    /// The dir counts as named by the user (`--dir`); the dir lock is
    /// waited for up to 30 s. Applets use [`Cache::open`].
    pub fn new(dir: impl Into<PathBuf>, now: i64, clock_overridden: bool) -> Self {
        Cache {
            dir: dir.into(),
            origin: DirOrigin::Flag,
            checked: false,
            now,
            expiry_base: now,
            set_times: clock_overridden,
            lock_timeout: Duration::from_secs(30),
            wait_note: None,
            progress: None,
            unnamed_temps: true,
        }
    }

    /// The cache every applet uses: the chosen dir, checked (a file there
    /// is "not a directory", a dir others can write is refused: exit 3; see
    /// [`dir`]), with the configuration's clock and `LOCK_TIMEOUT`.
    pub fn open(chosen: ChosenDir, cfg: &Config) -> Result<Self> {
        let checked = dir::check(&chosen.path, chosen.origin)?;
        let (now, expiry_base) = cfg.now_floor_ceil();
        let mut c = Cache::new(chosen.path, now, cfg.now_override.is_some());
        c.origin = chosen.origin;
        c.checked = checked;
        c.expiry_base = expiry_base;
        c.lock_timeout = cfg.lock_timeout;
        c.unnamed_temps = !cfg.no_tmpfile;
        Ok(c)
    }

    /// Tells `note`, once per wait, that a call waits for the dir lock.
    pub fn with_wait_note(mut self, note: Option<WaitNote>) -> Self {
        self.wait_note = note;
        self
    }

    /// Reports the progress of long work (walks, eviction, batches) to `p`.
    pub fn with_progress(mut self, p: Option<Box<dyn Progress>>) -> Self {
        self.progress = p;
        self
    }

    pub(crate) fn progress(&self) -> Option<&dyn Progress> {
        self.progress.as_deref()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long a call may wait for a lock (`LOCK_TIMEOUT`), from now: for
    /// the locks beside the cache lock (cache-run's output store).
    pub(crate) fn lock_deadline(&self) -> crate::lock::Wait {
        Instant::now()
            .checked_add(self.lock_timeout)
            .map_or(crate::lock::Wait::Forever, crate::lock::Wait::Until)
    }

    pub fn now(&self) -> i64 {
        self.now
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// [`Cache::exists`] for a caller whose answer does not change if the
    /// dir vanished just after it passed its check at open: a dir checked
    /// then is not looked at again.
    fn exists_checked(&self) -> bool {
        self.checked || self.exists()
    }

    /// Takes the cache's kernel lock. A reader that cannot create `.lock`
    /// (read-only cache) goes on without it: nobody can be writing there.
    ///
    /// The regular-file check's `fstat` comes after the lock is taken: the
    /// length it reads then is the record's and the journal's (a change in
    /// flight, or one a killed holder left), which no one else can change
    /// while it is held. An exclusive holder reads the record (one
    /// `pread`); a reader learns from the length alone whether a journal is
    /// there (the record has a fixed length).
    fn lock(&self, exclusive: bool) -> Result<DirLock> {
        let path = self.path(LOCK_FILE);
        let (f, fallback) = match fsutil::open_rw_create_at(&path) {
            Ok(f) => (f, false),
            Err(e) if !exclusive && !fsutil::is_refused(&e) => match fsutil::open_read(&path) {
                Ok(f) => (f, true),
                Err(_) => return Ok(DirLock::none()),
            },
            Err(e) => return Err(Error::io(crate::lock::OPEN_FAILED, &path, e)),
        };
        self.wait_for(&f, exclusive, &path)?;
        let len = if fallback {
            match fsutil::regular_len(&f) {
                Ok(len) => len,
                // Read-only: the lock is a courtesy; nothing can be repaired.
                Err(_) => return Ok(DirLock::none()),
            }
        } else {
            match fsutil::regular_len_private(&f) {
                // A second name (a dedup tool's hard link, `cp -al`): the
                // record and the journal, written in place, went into the
                // other file too (truncating it), and two caches linked so
                // shared one lock, one count and each other's journals.
                // The file cannot be swapped under waiters that hold it,
                // so it is refused, as a symlink there is.
                Ok((_, links)) if links > 1 => {
                    return Err(Error::Permission(format!(
                        "cannot use lock file {}: it has {links} names (a hard link, from a dedup tool or `cp -l`?), so another file shares its content; refused (remove it while no ffkit call uses this cache dir)",
                        path.display()
                    )));
                }
                Ok((len, _)) => len,
                Err(e) => return Err(Error::io(crate::lock::OPEN_FAILED, &path, e)),
            }
        };
        let rec = index::COUNT_RECORD_LEN as u64;
        let (count, at, journal) = if fallback {
            (None, 0, 0)
        } else if exclusive {
            read_record(&f, len)
        } else if len == rec {
            (None, rec, 0)
        } else {
            (None, 0, len)
        };
        Ok(DirLock {
            file: Some(f),
            count: Cell::new(count),
            journal_at: Cell::new(at),
            journal_len: Cell::new(journal),
            legacy: Cell::new(exclusive && count.is_none()),
            marked: Cell::new(false),
        })
    }

    /// Reads the record of a reader's lock (held shared: no writer is
    /// changing it), for the callers that need the entry count.
    fn load_count(&self, g: &DirLock) {
        if let Some(f) = &g.file
            && let Ok(m) = f.metadata()
        {
            g.count.set(read_record(f, m.len()).0);
        }
    }

    /// The index under the lock `g`: `.size-index` and the record's count
    /// (or, in a cache whose `.lock` has no record yet, an older ffkit's
    /// `.entry-count`, which the next change folds into the record).
    /// `None` unless both are valid.
    fn read_index(&self, g: &DirLock) -> Result<Option<Totals>> {
        self.read_index_with(g.count.get())
    }

    /// The index of a cache nothing can change (a read-only mount), read
    /// without the lock: the record from `.lock` opened read-only.
    fn read_index_unlocked(&self) -> Result<Option<Totals>> {
        let count = File::open(self.path(LOCK_FILE))
            .ok()
            .and_then(|f| read_record(&f, f.metadata().ok()?.len()).0);
        self.read_index_with(count)
    }

    /// `.size-index` with the record's `count` (else `.entry-count`).
    fn read_index_with(&self, count: Option<u64>) -> Result<Option<Totals>> {
        let Some(bytes) = index::read_number(&self.path(index::INDEX_FILE))? else {
            return Ok(None);
        };
        let entries = match count {
            Some(n) => Some(n),
            None => index::read_number(&self.path(index::COUNT_FILE))?,
        };
        Ok(entries.map(|entries| Totals { bytes, entries }))
    }

    /// Sets the record to `n` entries: one `pwrite` at the start of
    /// `.lock` (lock held exclusively).
    fn write_count(&self, g: &DirLock, n: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(f) = &g.file else {
            return Ok(());
        };
        f.write_all_at(&index::format_count(n), 0)
            .map_err(|e| Error::io("cannot write the entry count into", self.path(LOCK_FILE), e))?;
        g.count.set(Some(n));
        Ok(())
    }

    /// The journal of a crashed change, if one is pending (lock held
    /// exclusively): the one in `.lock`, else a `.journal` file (the empty
    /// mark of [`journal::mark_unknown`], or an older ffkit's journal).
    fn pending_journal(&self, g: &DirLock) -> Result<Option<std::result::Result<Journal, String>>> {
        if let Some(f) = &g.file
            && g.journal_len.get() > 0
        {
            return journal::read_from(f, g.journal_at.get(), g.journal_len.get()).map(Some);
        }
        let j = Journal::read(&self.dir)?;
        if j.is_some() {
            g.marked.set(true);
        }
        Ok(j)
    }

    /// Ends a journaled change: cuts `.lock` back to its record (or to
    /// empty, without one) if it holds a journal, and removes a `.journal`
    /// file if one may be there.
    fn end_journal(&self, g: &DirLock) -> Result<()> {
        if let Some(f) = &g.file
            && g.journal_len.get() > 0
        {
            let keep = if g.count.get().is_some() {
                index::COUNT_RECORD_LEN as u64
            } else {
                0
            };
            journal::clear(f, keep, &self.path(LOCK_FILE))?;
            g.journal_at.set(keep);
            g.journal_len.set(0);
        }
        if g.marked.get() {
            Journal::remove(&self.dir)?;
            g.marked.set(false);
        }
        Ok(())
    }

    /// Marks a change whose size will be unknown until it ends (see
    /// [`journal::mark_unknown`]).
    fn mark_unknown(&self, g: &DirLock) -> io::Result<()> {
        g.marked.set(true);
        journal::mark_unknown(&self.dir)
    }

    /// Whether a journal is pending, looked at without the lock (the
    /// `cache-size` fast path): a `.journal` file, or a `.lock` that is
    /// neither empty nor exactly its record.
    fn journal_pending_unlocked(&self) -> bool {
        journal::present(&self.dir)
            || fs::symlink_metadata(self.path(LOCK_FILE))
                .is_ok_and(|m| m.len() > 0 && m.len() != index::COUNT_RECORD_LEN as u64)
    }

    /// Takes the kernel lock on `f`, waiting at most `LOCK_TIMEOUT`: a
    /// writer stopped (SIGSTOP, a debugger) in the middle of its commit must
    /// not hang every reader forever. The wait is the crate's one kernel
    /// wait ([`crate::lock::kernel::lock_fd`]): a free lock is one
    /// non-blocking try, a held one is handed over by the kernel the moment
    /// it is released. The wait note comes after `WAIT_NOTE_AFTER`.
    fn wait_for(&self, f: &File, exclusive: bool, path: &Path) -> Result<()> {
        use crate::lock::{Kind, Wait, kernel};
        use std::os::fd::AsRawFd;
        let start = Instant::now();
        let kind = if exclusive {
            Kind::Exclusive
        } else {
            Kind::Shared
        };
        let end = start.checked_add(self.lock_timeout);
        let until = |d: Option<Instant>| d.map_or(Wait::Forever, Wait::Until);
        let take = |w: Wait| {
            kernel::flock_until(f.as_raw_fd(), kind, w)
                .map_err(|e| Error::io("cannot lock", path, e))
        };
        let mut got = false;
        if let Some(note) = &self.wait_note
            && self.lock_timeout > WAIT_NOTE_AFTER
        {
            got = take(Wait::Until(start + WAIT_NOTE_AFTER))?;
            if !got {
                note(path, self.lock_timeout);
            }
        }
        if !got {
            got = take(until(end))?;
        }
        if got {
            return Ok(());
        }
        Err(Error::Timeout(format!(
            "cache lock {}: still held by another process after {:.1} s (LOCK_TIMEOUT); a writer may be stopped",
            path.display(),
            start.elapsed().as_secs_f64()
        )))
    }

    /// Takes the exclusive lock and repairs whatever a crashed process left.
    /// Returns the lock, the current totals (exact, as far as ffkit's own
    /// changes go), why the index was rebuilt, if it was, and whether the
    /// index files hold the totals. They do not only when the disk is too
    /// full to write them: the repair is then left for the next call (its
    /// journal stays), the totals are still exact, and the caller must
    /// write both files (`held: None`) at the end of its change.
    fn lock_and_repair(&self) -> Result<Repaired> {
        let guard = self.lock(true)?;
        let mut rebuilt = None;
        let (totals, persisted) = match self.pending_journal(&guard)? {
            Some(Ok(j)) if j.records.iter().all(Record::is_sane) => {
                let (t, _) = self.apply_journal(&j, None)?;
                (t, self.settle(&guard, t)?)
            }
            // Damaged, tampered with, or empty: walk (and remove it, or
            // every later call would walk again).
            found => {
                rebuilt = Some(match found {
                    Some(Err(why)) if why == journal::INTERRUPTED => journal::INTERRUPTED,
                    Some(_) => "damaged journal",
                    None => match self.read_index(&guard)? {
                        Some(t) => {
                            return Ok(Repaired {
                                guard,
                                totals: t,
                                rebuilt: None,
                                persisted: true,
                            });
                        }
                        None if index::exists(&self.dir) => "invalid",
                        None => "missing",
                    },
                });
                let t = self.walk_locked()?;
                (t, self.settle(&guard, t)?)
            }
        };
        Ok(Repaired {
            guard,
            totals,
            rebuilt,
            persisted,
        })
    }

    /// Finishes a journaled change (see [`journal`]); lock held. Each
    /// record is applied best-effort and then measured, so a rename that
    /// fails (a directory planted at a key, say) cannot wedge the cache: the
    /// old entry stays whole, or the key ends up without a sidecar (missing),
    /// and the index counts exactly what is on disk for the key.
    fn roll_forward(&self, g: &DirLock, j: &Journal) -> Result<Totals> {
        if !j.records.iter().all(Record::is_sane) {
            return self.rebuild_locked(g);
        }
        let (t, _) = self.apply_journal(j, None)?;
        self.persist(g, self.read_index(g)?, t)?;
        Ok(t)
    }

    /// A repair's end: writes the index files for `t` where they hold
    /// another number (read now: a crashed writer may have replaced one
    /// already), and removes the journal. Whether that was done: not when
    /// the disk is too full to write them (the journal then stays for the
    /// next call). A repair that changes no number needs no space.
    fn settle(&self, g: &DirLock, t: Totals) -> Result<bool> {
        let held = self.read_index(g)?;
        spared(self.persist(g, held, t))
    }

    /// The end of every change: writes the index for `t` and removes the
    /// journal. The record in `.lock` is rewritten (one `pwrite`) when it
    /// does not hold `t`'s count, or is missing; `.size-index` is replaced
    /// only when `held` (the totals the index holds now, read or written
    /// under this lock; `None`: unknown, as after a crash, when a crashed
    /// writer may have replaced it already) has other bytes. The record
    /// first, so the contract's `.size-index` is the last word. An older
    /// ffkit's `.entry-count` goes once the record holds the count.
    fn persist(&self, g: &DirLock, held: Option<Totals>, t: Totals) -> Result<()> {
        if g.count.get() != Some(t.entries) {
            self.write_count(g, t.entries)?;
        }
        if held.is_none_or(|h| h.bytes != t.bytes) {
            index::write_bytes(&self.dir, t.bytes, held.is_some())?;
        }
        if g.legacy.get() {
            fsutil::remove_if_exists(&self.path(index::COUNT_FILE))?;
            g.legacy.set(false);
        }
        self.end_journal(g)
    }

    /// Applies a journal's records and measures the keys: the totals after
    /// it, and the first file that could not be installed. Writes nothing
    /// else. `fresh` (one per record) is the commit's first attempt, with
    /// what it knows; `None` is a roll-forward after a crash, which knows
    /// nothing and measures every key.
    fn apply_journal(
        &self,
        j: &Journal,
        fresh: Option<(&[Fresh], &[Change])>,
    ) -> Result<(Totals, Option<Failed>)> {
        let mut t = j.before;
        let mut failed = None;
        for (i, r) in j.records.iter().enumerate() {
            let known = fresh.and_then(|(f, _)| f.get(i)).copied();
            let change = fresh.and_then(|(_, c)| c.get(i));
            let applied = if r.unnamed {
                self.apply_unnamed(r, change)
            } else {
                self.apply(r, known)
            };
            let installed = match applied {
                Some(f) => {
                    failed.get_or_insert(f);
                    false
                }
                None => true,
            };
            // Both of this commit's temp files are in place, under the lock
            // it holds since it looked: the key counts their bytes.
            let (now_bytes, now_entry) = match known.and_then(|k| k.bytes) {
                Some(b) if installed => (b, true),
                _ => self.key_usage(&r.key)?,
            };
            t.bytes = t
                .bytes
                .saturating_sub(r.old_bytes)
                .saturating_add(now_bytes);
            t.entries = t.entries - u64::from(r.old_entry).min(t.entries) + u64::from(now_entry);
        }
        Ok((t, failed))
    }

    /// Applies one record: installs its temp files, or removes the entry.
    /// `fresh` says nothing of it can have happened yet (the first attempt)
    /// and which names were free; otherwise a destination that already has
    /// the temp file's inode was
    /// installed before a crash, and the temp name, if still there, holds
    /// the replaced old file (see [`fsutil::install`]). Returns the
    /// destination that could not be installed, if any, and why; for a
    /// removal, a file that could not be removed (not one that was gone
    /// already, nor a directory at the name, which is not the entry's).
    fn apply(&self, r: &Record, fresh: Option<Fresh>) -> Option<Failed> {
        let value = self.path(&r.key);
        let meta = self.path(&format!("{}.meta", r.key));
        let (Some(vt), Some(mt)) = (&r.value_tmp, &r.meta_tmp) else {
            // A removal that fails (EACCES in a dir the caller cannot
            // write, EPERM on an immutable file) was counted as done: an
            // eviction then exited 0 listing entries it had not removed,
            // `--max-bytes` above its limit. The index stays exact either
            // way (a removal is measured after); the caller now says it.
            let mut failed = None;
            for p in [&value, &meta] {
                if let Err(e) = fs::remove_file(p) {
                    let e = Error::io("cannot remove", p, e);
                    let gone = matches!(&e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound);
                    if !gone && !in_the_way(&e) && failed.is_none() {
                        failed = Some((p.clone(), Some(e)));
                    }
                }
            }
            return failed;
        };
        let (vt, mt) = (self.path(vt), self.path(mt));
        let install = |tmp: &Path, ino: u64, dest: &Path, free: bool| {
            let failed = |e: io::Error| {
                Some((
                    dest.to_path_buf(),
                    Some(Error::io("cannot rename into", dest, e)),
                ))
            };
            if free {
                return fsutil::install_new(tmp, dest).err().and_then(failed);
            }
            let done = fresh.is_none() && fs::symlink_metadata(dest).is_ok_and(|m| m.ino() == ino);
            if done {
                let _ = fs::remove_file(tmp);
                return None;
            }
            fsutil::install(tmp, dest).err().and_then(failed)
        };
        let (value_free, meta_free) = fresh.map_or((false, false), |f| (f.value_free, f.meta_free));
        if let Some(f) = install(&vt, r.value_ino, &value, value_free) {
            // The old entry stays as it was.
            let _ = fs::remove_file(&vt);
            let _ = fs::remove_file(&mt);
            return Some(f);
        }
        if let Some(f) = install(&mt, r.meta_ino, &meta, meta_free) {
            // Never pair the new value with the old sidecar.
            let _ = fs::remove_file(&mt);
            let _ = fs::remove_file(&meta);
            return Some(f);
        }
        None
    }

    /// Applies a record of unnamed temp files ([`Record::unnamed`]: both
    /// names were free under the lock). The first attempt (`change`, which
    /// holds the open files) links them, value first; a name taken after
    /// all (EEXIST: not by ffkit, which holds the lock) is replaced the
    /// renaming way. After a crash the unnamed files died with their
    /// writer: the key has both (the write is done), neither (it never
    /// happened), or a half, which is taken back: a file at either name
    /// with the journal's inode number is ours and removed, so the key is
    /// as it was before the write, free. Returns the destination that
    /// could not be installed, if any (its pair taken back too), and why.
    fn apply_unnamed(&self, r: &Record, change: Option<&Change>) -> Option<Failed> {
        let value = self.path(&r.key);
        let meta = self.path(&format!("{}.meta", r.key));
        let ours = |p: &Path, ino: u64| {
            fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file() && m.ino() == ino)
        };
        let files = change.and_then(|c| match (&c.value, &c.meta) {
            (Some((Temp::Unnamed(v), _)), Some((Temp::Unnamed(m), _))) => Some((v, m)),
            _ => None,
        });
        let Some((vf, mf)) = files else {
            if ours(&value, r.value_ino) != ours(&meta, r.meta_ino) {
                let _ = fs::remove_file(if ours(&value, r.value_ino) {
                    &value
                } else {
                    &meta
                });
            }
            return None;
        };
        if let Err(e) = self.link_in_place(vf, &value) {
            return Some((value, Some(e)));
        }
        if let Err(e) = self.link_in_place(mf, &meta) {
            // Never leave the new value without its sidecar.
            if ours(&value, r.value_ino) {
                let _ = fs::remove_file(&value);
            }
            return Some((meta, Some(e)));
        }
        None
    }

    /// Links the unnamed file `f` at `dest`, found free under the lock; if
    /// something is there after all, replaces it the renaming way (a temp
    /// name, then [`fsutil::install`], which never displaces a directory).
    fn link_in_place(&self, f: &File, dest: &Path) -> Result<()> {
        match fsutil::link_unnamed(f, dest) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let tmp = fsutil::name_unnamed(f, &self.dir)?;
                fsutil::install(&tmp, dest).map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    Error::io("cannot rename into", dest, e)
                })
            }
            r => {
                r.map_err(|e| Error::io("cannot link an unnamed temp file (O_TMPFILE) at", dest, e))
            }
        }
    }

    /// Bytes counted for `KEY` + `KEY.meta` now, and whether `KEY` is an entry.
    fn key_usage(&self, key: &str) -> Result<(u64, bool)> {
        let (bytes, entry, _) = self.key_state(key)?;
        Ok((bytes, entry))
    }

    /// [`Cache::key_usage`], and whether each name (value, sidecar) is free:
    /// nothing at all there, not even a directory or a symlink.
    fn key_state(&self, key: &str) -> Result<(u64, bool, (bool, bool))> {
        let v = regular_size(&self.path(key))?;
        let m = regular_size(&self.path(&format!("{key}.meta")))?;
        let free = |s: &Found| matches!(s, Found::Nothing);
        Ok((
            v.size() + m.size(),
            matches!(v, Found::File(_)),
            (free(&v), free(&m)),
        ))
    }

    /// Walks the directory and rewrites the index; lock held.
    fn rebuild_locked(&self, g: &DirLock) -> Result<Totals> {
        let t = self.walk_locked()?;
        g.legacy.set(true);
        self.persist(g, None, t)?;
        Ok(t)
    }

    /// Walks the directory (removing dead writers' temps); lock held.
    fn walk_locked(&self) -> Result<Totals> {
        let s = scan::totals_with(&self.dir, self.progress())?;
        s.remove_stale_temps(&self.dir);
        Ok(s.totals)
    }

    /// The cache size. With `tracking`, O(1): a journal check and two small
    /// reads; the index is rebuilt (and `rebuilt` set) only when it is
    /// missing, invalid, or a crash left a journal. Without, a walk.
    pub fn size(&self, tracking: bool) -> Result<SizeReport> {
        if !self.exists() {
            let source = if tracking {
                Source::Index
            } else {
                Source::Walk
            };
            return Ok(SizeReport {
                totals: Totals::default(),
                source,
                rebuilt: None,
                from_index: false,
            });
        }
        if !tracking {
            let s = scan::totals_with(&self.dir, self.progress())?;
            return Ok(SizeReport {
                totals: s.totals,
                source: Source::Walk,
                rebuilt: None,
                from_index: false,
            });
        }
        // The count is read under the shared lock (it is rewritten in
        // place, by a writer holding it exclusively); a pending journal
        // shows in `.lock`'s length, learnt by the lock's own `fstat`.
        if !journal::present(&self.dir) {
            let g = self.lock(false)?;
            if g.journal_len.get() == 0 {
                self.load_count(&g);
                if let Some(t) = self.read_index(&g)? {
                    return Ok(SizeReport {
                        totals: t,
                        source: Source::Index,
                        rebuilt: None,
                        from_index: false,
                    });
                }
            }
        }
        let r = match self.lock_and_repair() {
            Ok(r) => r,
            // A read-only cache whose index cannot be trusted (a crash
            // journal that cannot be rolled forward, no index): the size
            // is walked, nothing is repaired.
            Err(e) if read_only(&e) => {
                let s = scan::totals_with(&self.dir, self.progress())?;
                return Ok(SizeReport {
                    totals: s.totals,
                    source: Source::Walk,
                    rebuilt: None,
                    from_index: false,
                });
            }
            Err(e) => return Err(e),
        };
        Ok(SizeReport {
            totals: r.totals,
            source: Source::Index,
            rebuilt: r.rebuilt,
            from_index: false,
        })
    }

    /// Only the byte total, from the index file alone (the `cache-size`
    /// fast path: no entry-count read). Falls back to [`Cache::size`].
    pub fn size_bytes(&self) -> Result<SizeReport> {
        // A vanished dir reads no index and falls back to `size`, which looks.
        if self.exists_checked()
            && !self.journal_pending_unlocked()
            && let Some(b) = index::read_number(&self.path(index::INDEX_FILE))?
        {
            let totals = Totals {
                bytes: b,
                entries: 0,
            };
            return Ok(SizeReport {
                totals,
                source: Source::Index,
                rebuilt: None,
                from_index: true,
            });
        }
        self.size(true)
    }

    /// Recomputes the index from disk.
    pub fn rebuild(&self) -> Result<Totals> {
        if !self.exists() {
            return Ok(Totals::default());
        }
        let guard = self.lock(true)?;
        // A journal's temp files must be renamed, not counted as strays.
        if let Some(Ok(j)) = self.pending_journal(&guard)? {
            self.roll_forward(&guard, &j)?;
        }
        guard.marked.set(true);
        self.end_journal(&guard)?;
        self.rebuild_locked(&guard)
    }

    /// Walks and compares with the index; with `fix`, rewrites the index.
    /// Removes the temp files of dead writers on the way, as every walk does.
    pub fn verify(&self, fix: bool) -> Result<VerifyReport> {
        if !self.exists() {
            return Ok(VerifyReport {
                index: Some(Totals::default()),
                walk: Totals::default(),
                notes: Vec::new(),
                damaged: Vec::new(),
            });
        }
        let guard = match self.lock(true) {
            Ok(g) => g,
            // A read-only cache: nothing can be repaired, so the index as
            // it is (none while a crash journal says it is not the size)
            // against a walk.
            Err(e) if !fix && read_only(&e) => {
                let index = if self.journal_pending_unlocked() {
                    None
                } else {
                    self.read_index_unlocked()?
                };
                let walk = scan::totals_with(&self.dir, self.progress())?.totals;
                return Ok(VerifyReport {
                    index,
                    walk,
                    notes: Vec::new(),
                    damaged: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        let index = match self.pending_journal(&guard)? {
            Some(Ok(j)) => Some(self.roll_forward(&guard, &j)?),
            // A removal interrupted on a full disk: its repair is a walk,
            // not drift.
            Some(Err(why)) if why == journal::INTERRUPTED => {
                let t = self.walk_locked()?;
                self.persist(&guard, None, t)?;
                Some(t)
            }
            Some(Err(_)) => None,
            None => self.read_index(&guard)?,
        };
        let s = scan::totals_with(&self.dir, self.progress())?;
        s.remove_stale_temps(&self.dir);
        // No index at all over nothing to count (a dir that is new or was
        // emptied by hand): the size is 0, as for a dir that does not exist,
        // not drift. An index that exists but is invalid is still reported.
        let index = match index {
            None if s.totals == Totals::default()
                && !index::exists(&self.dir)
                && guard.count.get().is_none()
                && fs::symlink_metadata(self.path(index::COUNT_FILE)).is_err() =>
            {
                Some(s.totals)
            }
            i => i,
        };
        if fix && index != Some(s.totals) {
            guard.marked.set(true);
            self.persist(&guard, None, s.totals)?;
        }
        Ok(VerifyReport {
            index,
            walk: s.totals,
            notes: Vec::new(),
            damaged: Vec::new(),
        })
    }

    /// Writes entries: all values and sidecars go to temp files first, then
    /// one lock acquisition renames them into place and updates the index
    /// once. A key given twice keeps its last value. On failure nothing new
    /// is visible and no temp file is left.
    pub fn write(&self, entries: Vec<NewEntry<'_>>) -> Result<Totals> {
        if !self.checked {
            fsutil::create_private_dir(&self.dir)?;
            // Again after the mkdir: someone may have made it in between.
            dir::check(&self.dir, self.origin)?;
        }
        let mut changes: Vec<Change> = Vec::with_capacity(entries.len());
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(entries.len());
        let progress = self.progress().filter(|_| entries.len() > 1);
        let unnamed = self.unnamed_temps && entries.len() <= UNNAMED_MAX;
        if let Some(p) = progress {
            p.start("writing", Some(entries.len() as u64));
        }
        let result = (|| {
            for e in entries {
                let change = self.prepare(e, unnamed)?;
                if let Some(p) = progress {
                    p.advance(1);
                }
                match seen.get(&change.key) {
                    Some(&i) => {
                        let old = std::mem::replace(&mut changes[i], change);
                        discard(&old);
                    }
                    None => {
                        seen.insert(change.key.clone(), changes.len());
                        changes.push(change);
                    }
                }
            }
            if let Some(p) = progress {
                p.finish();
            }
            let r = self.lock_and_repair()?;
            self.commit(&r.guard, r.totals, r.held(), &mut changes)
        })();
        if result.is_err() {
            changes.iter().for_each(discard);
        }
        result
    }

    /// Removes `keys` (value and sidecar) in one journaled commit, as an
    /// eviction would; a key that is not there is no change.
    pub fn remove(&self, keys: &[String]) -> Result<Totals> {
        if !self.exists() {
            return Ok(Totals::default());
        }
        let r = self.lock_and_repair()?;
        let mut changes: Vec<Change> = keys
            .iter()
            .map(|k| Change {
                key: k.clone(),
                value: None,
                meta: None,
                bytes: 0,
            })
            .collect();
        self.commit(&r.guard, r.totals, r.held(), &mut changes)
    }

    /// A change to the output store (`.store/`, see `memo::output`): `f`
    /// runs under the exclusive lock, renames or unlinks blobs, and returns
    /// the bytes it added (positive) or freed (negative); the index moves by
    /// exactly that. `Ok(None)`: `f` replaced a blob someone damaged by
    /// hand, so what the index counted for it is unknown, and the index is
    /// set from a walk instead. Crash-safe: an empty journal ([`journal::mark_unknown`])
    /// marks the change before `f` touches anything, so a process killed in
    /// between leaves "unknown", and the next call walks (the walk counts
    /// the store). If `f` fails, the index is set from a walk.
    pub fn store_change<F>(&self, f: F) -> Result<Totals>
    where
        F: FnOnce() -> Result<Option<i64>>,
    {
        let r = self.lock_and_repair()?;
        self.mark_unknown(&r.guard)
            .map_err(|e| Error::io("cannot write", self.path(journal::JOURNAL_FILE), e))?;
        match f() {
            Ok(None) => {
                let t = self.walk_locked()?;
                self.persist(&r.guard, None, t)?;
                Ok(t)
            }
            Ok(Some(delta)) => {
                let mut t = r.totals;
                t.bytes = if delta < 0 {
                    t.bytes.saturating_sub(delta.unsigned_abs())
                } else {
                    t.bytes.saturating_add(delta as u64)
                };
                self.persist(&r.guard, r.held(), t)?;
                Ok(t)
            }
            Err(e) => {
                let t = self.walk_locked()?;
                self.persist(&r.guard, None, t)?;
                Err(e)
            }
        }
    }

    /// Writes one entry's value and sidecar to temp files: unnamed ones
    /// (`O_TMPFILE`) with `unnamed`, where the file system has them, else
    /// named ones.
    fn prepare(&self, e: NewEntry<'_>, unnamed: bool) -> Result<Change> {
        let (mut vf, vname) = self.new_temp(unnamed)?;
        // What failed, named truly: the temp file's path, or for an
        // unnamed one (it has none) the cache dir it was made in.
        let failed = |named: &'static str, unnamed: &'static str, e: io::Error| match &vname {
            Some(p) => Error::io(named, p, e),
            None => Error::io(unnamed, &self.dir, e),
        };
        let drop_named = || {
            if let Some(p) = &vname {
                let _ = fs::remove_file(p);
            }
        };
        let written = match e.value {
            Value::Bytes(b) => vf.write_all(b).map(|()| b.len() as u64),
            Value::Reader(r) => {
                // Tell a failing input (stdin is a directory, EIO) from a
                // failing temp file, so the message blames the right side.
                let mut src = ReadSide {
                    inner: r,
                    failed: false,
                };
                match io::copy(&mut src, &mut vf) {
                    Err(e) if src.failed => {
                        drop_named();
                        return Err(Error::io("cannot read", "the value to write", e));
                    }
                    copied => copied,
                }
            }
        };
        let (size, ino) = match written.and_then(|n| Ok((n, vf.metadata()?.ino()))) {
            Ok(v) => v,
            Err(e) => {
                drop_named();
                return Err(failed("cannot write", UNNAMED_WRITE, e));
            }
        };
        if self.set_times
            && let Err(e) = fsutil::set_times(&vf, Some(self.now), Some(self.now))
        {
            drop_named();
            return Err(failed(
                "cannot set times of",
                "cannot set times of an unnamed temp file (O_TMPFILE) in",
                e,
            ));
        }
        let vtemp = match vname {
            Some(p) => Temp::Named(p),
            None => Temp::Unnamed(vf),
        };
        let mut change = Change {
            key: e.key,
            value: Some((vtemp, ino)),
            meta: None,
            bytes: 0,
        };
        let meta = Meta::new(&change.key, self.now, self.expiry_base, e.ttl, size);
        let meta_json = meta.to_json();
        change.bytes = size.saturating_add(meta_json.len() as u64);
        let meta_temp = if unnamed {
            match self.unnamed_with(&meta_json) {
                Ok(t) => t,
                Err(err) => {
                    discard(&change);
                    return Err(err);
                }
            }
        } else {
            None
        };
        match meta_temp.map_or_else(
            || fsutil::write_temp(&self.dir, &meta_json).map(|(p, ino)| (Temp::Named(p), ino)),
            Ok,
        ) {
            Ok(m) => change.meta = Some(m),
            Err(err) => {
                discard(&change);
                return Err(err);
            }
        }
        Ok(change)
    }

    /// A new temp file for a value: unnamed (no path) with `unnamed` where
    /// the file system has `O_TMPFILE`, else named.
    fn new_temp(&self, unnamed: bool) -> Result<(File, Option<PathBuf>)> {
        if unnamed && let Some(f) = fsutil::create_unnamed(&self.dir) {
            return Ok((f, None));
        }
        let (p, f) = fsutil::create_temp(&self.dir)?;
        Ok((f, Some(p)))
    }

    /// An unnamed temp file holding `bytes`, and its inode; `Ok(None)`
    /// where one cannot be made (no `O_TMPFILE` here: the caller makes a
    /// named one). One that was made but cannot be filled (a full disk)
    /// is that error: a named temp would only fail the same way, under a
    /// name that no longer exists by the time the message is read.
    fn unnamed_with(&self, bytes: &[u8]) -> Result<Option<(Temp, u64)>> {
        let Some(mut f) = fsutil::create_unnamed(&self.dir) else {
            return Ok(None);
        };
        match f.write_all(bytes).and_then(|()| f.metadata()) {
            Ok(m) => Ok(Some((Temp::Unnamed(f), m.ino()))),
            Err(e) => Err(Error::io(UNNAMED_WRITE, &self.dir, e)),
        }
    }

    /// Gives a change's unnamed temp files temp names, for a key whose
    /// names are taken (replaced by exchange, which needs a name).
    fn name_temps(&self, c: &mut Change) -> Result<()> {
        for t in [&mut c.value, &mut c.meta].into_iter().flatten() {
            if let Temp::Unnamed(f) = &t.0 {
                t.0 = Temp::Named(fsutil::name_unnamed(f, &self.dir)?);
            }
        }
        Ok(())
    }

    /// Applies prepared changes under the exclusive lock: journal first,
    /// then the same roll-forward a later call would do after a crash.
    /// `held` is what the index files hold now (`None`: unknown, write both).
    /// Removals go on when the disk is too full for the journal: see
    /// [`Cache::remove_unjournaled`].
    fn commit(
        &self,
        g: &DirLock,
        before: Totals,
        held: Option<Totals>,
        changes: &mut [Change],
    ) -> Result<Totals> {
        let mut records = Vec::with_capacity(changes.len());
        let mut fresh = Vec::with_capacity(changes.len());
        for c in changes.iter_mut() {
            let (old_bytes, old_entry, (value_free, meta_free)) = self.key_state(&c.key)?;
            // Unnamed temp files are linked at the key's two names when
            // both are free (a new key); otherwise they get temp names now,
            // before the journal names them, and go the renaming way.
            let both_unnamed = matches!(
                (&c.value, &c.meta),
                (Some((Temp::Unnamed(_), _)), Some((Temp::Unnamed(_), _)))
            );
            let linked = both_unnamed && value_free && meta_free;
            if !linked {
                self.name_temps(c)?;
            }
            fresh.push(Fresh {
                value_free,
                meta_free,
                bytes: c.value.is_some().then_some(c.bytes),
            });
            records.push(Record {
                key: c.key.clone(),
                old_bytes,
                old_entry,
                value_tmp: c.value.as_ref().and_then(|(t, _)| t.journal_name()),
                value_ino: c.value.as_ref().map_or(0, |v| v.1),
                meta_tmp: c.meta.as_ref().and_then(|(t, _)| t.journal_name()),
                meta_ino: c.meta.as_ref().map_or(0, |m| m.1),
                unnamed: linked,
            });
        }
        // The entry count the change will leave if every key installs: the
        // record that starts `.lock` is written with it, in the journal's
        // `pwrite` (one call, not a second one at the end). Safe because
        // the record is trusted only while `.lock` holds no journal: a
        // journal in flight is rolled forward from its own `before`, and
        // the end of the change rewrites the record when the count came
        // out otherwise (an install that failed).
        let after = changes
            .iter()
            .zip(&records)
            .fold(before.entries, |n, (c, r)| {
                n - u64::from(r.old_entry).min(n) + u64::from(c.value.is_some())
            });
        let j = Journal { before, records };
        // Into `.lock` (the lock's own descriptor, empty or just its record:
        // a pending journal was repaired when the lock was taken), from 0:
        // the record, then the journal; a `.journal` file only for a
        // reader's lock, which a commit never holds.
        let written = match &g.file {
            Some(f) => {
                // `g.count`: what to put back if the journal cannot be
                // written (a full disk): the record as it was, or nothing
                // in a file that had none.
                let record = index::format_count(after);
                journal::write_into(&j, f, &record, g.count.get(), &self.path(LOCK_FILE)).map(|n| {
                    g.count.set(Some(after));
                    g.journal_at.set(index::COUNT_RECORD_LEN as u64);
                    g.journal_len.set(n);
                })
            }
            None => j.write(&self.dir).map(|()| g.marked.set(true)),
        };
        if let Err(e) = written {
            let removal = changes
                .iter()
                .all(|c| c.value.is_none() && c.meta.is_none());
            if removal && e.kind() == ExitKind::DiskSpace {
                return self.remove_unjournaled(g, &j);
            }
            return Err(e);
        }
        // From here on the journal is the truth: if this fails, the next
        // call rolls it forward.
        // Renames are applied best effort (so repair cannot wedge); a writer
        // still must not report success for an entry that was not placed,
        // e.g. because a directory sits at its name.
        let (t, failed) = self.apply_journal(&j, Some((&fresh, changes)))?;
        self.persist(g, held, t)?;
        match failed {
            None => Ok(t),
            // A full disk or quota (exit 8), another file system (EXDEV), an
            // I/O error: said as it is. Only a name taken by something that
            // is not ours to replace is "in the way".
            Some((_, Some(e))) if !in_the_way(&e) => Err(e),
            Some((path, _)) => Err(Error::General(format!(
                "cannot write {}: something other than a regular file is in the way",
                path.display()
            ))),
        }
    }

    /// Removes the keys of `j` (removals only) on a disk too full for the
    /// journal, which is exactly when space must be freed: marks the change
    /// with an empty journal (an inode, no data block; where even that
    /// cannot be made, by removing `.size-index`, which says the same),
    /// unlinks, then writes the index in the space just freed and removes
    /// the mark. A kill anywhere leaves the mark, and the next call walks:
    /// exact either way. An index that still cannot be written is left to
    /// that walk; the removal itself succeeded.
    fn remove_unjournaled(&self, g: &DirLock, j: &Journal) -> Result<Totals> {
        if self.mark_unknown(g).is_err() {
            fsutil::remove_if_exists(&self.path(index::INDEX_FILE))?;
        }
        // Removals only: they are measured after, known or not.
        let (t, failed) = self.apply_journal(j, None)?;
        spared(self.persist(g, None, t))?;
        match failed {
            Some((_, Some(e))) => Err(e),
            _ => Ok(t),
        }
    }

    /// Looks one key up. Expired entries are reported, not removed (eviction
    /// removes them). A hit refreshes recency at most once per interval.
    ///
    /// A hit is first looked for without the dir lock
    /// ([`Cache::read_unlocked`]): files are never changed in place, so the
    /// value opened is one whole generation, and its size is checked
    /// against the sidecar's. Anything but a good hit (missing, expired,
    /// damaged, or a sidecar and value of two generations, caught by that
    /// size check) is looked at again under the lock, which also repairs a
    /// crashed change first, so it is answered exactly as before.
    pub fn read(&self, key: &str) -> Result<Lookup> {
        // A vanished dir finds no sidecar: missing either way.
        if !self.exists_checked() {
            return Ok(Lookup::Missing);
        }
        if let Ok(hit @ Lookup::Hit(..)) = self.read_unlocked(key) {
            return Ok(hit);
        }
        self.read_locked(key)
    }

    /// [`Cache::read`] under the shared lock only (after repairing a
    /// crashed change, if one is pending).
    pub fn read_locked(&self, key: &str) -> Result<Lookup> {
        if !self.exists_checked() {
            return Ok(Lookup::Missing);
        }
        let found = {
            let _guard = self.read_lock()?;
            self.open_entry(key)?
        };
        let Some((file, meta, atime)) = found else {
            return Ok(Lookup::Missing);
        };
        if meta.is_expired(self.now) {
            return Ok(Lookup::Expired(meta));
        }
        self.touch(&file, atime);
        Ok(Lookup::Hit(file, meta))
    }

    /// Reads many keys under one shared lock; returns the present, unexpired
    /// ones, in the order asked, each an open value or its bytes. The
    /// values are opened under the lock and copied after it (a slow
    /// reader of the output never holds the lock), [`READ_MANY_OPEN`] at
    /// most open at once: past that many, each further value is read whole
    /// (and closed) while the lock is still held, and so are the open ones
    /// when an open finds no descriptor free (a `ulimit -n` below 16
    /// values' need). All of them open at once failed a batch of more
    /// present keys than the descriptor limit (`ulimit -n`, often 1024)
    /// with "Too many open files"; every value read whole held a large
    /// value in memory (twice, with the caller's output) where one open
    /// descriptor streams it.
    pub fn read_many(&self, keys: &[String]) -> Result<Vec<(String, Body)>> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut open = 0;
        let _guard = self.read_lock()?;
        for k in keys {
            let entry = match self.open_entry(k) {
                // Fewer descriptors left than 16 values need (a low
                // `ulimit -n`): read the open ones, then try again.
                Err(e) if open > 0 && out_of_descriptors(&e) => {
                    self.read_open(&mut out)?;
                    open = 0;
                    self.open_entry(k)?
                }
                entry => entry?,
            };
            if let Some((mut f, m, atime)) = entry
                && !m.is_expired(self.now)
            {
                self.touch(&f, atime);
                if open < READ_MANY_OPEN {
                    open += 1;
                    out.push((k.clone(), Body::File(f)));
                } else {
                    let v = self.read_whole(k, &mut f)?;
                    out.push((k.clone(), Body::Bytes(v)));
                }
            }
        }
        Ok(out)
    }

    /// Reads (and closes) the values [`Cache::read_many`] holds open.
    fn read_open(&self, out: &mut [(String, Body)]) -> Result<()> {
        for (k, body) in out.iter_mut() {
            if let Body::File(f) = body {
                let v = self.read_whole(k, f)?;
                *body = Body::Bytes(v);
            }
        }
        Ok(())
    }

    /// The whole of a value opened by [`Cache::open_entry`].
    fn read_whole(&self, key: &str, f: &mut File) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .map_err(|e| Error::io("cannot read", self.path(key), e))?;
        Ok(v)
    }

    /// [`Cache::read`] without the dir lock and without repairing a crashed
    /// change: two opens and no more. For a caller that takes nothing but
    /// a good hit from it, asking [`Cache::read_locked`] otherwise. A
    /// sidecar and a value of two generations (a writer renaming between
    /// the two opens, or one killed between its renames: a value is always
    /// installed before its sidecar) then either fail the size check
    /// (sizes differ: asked again under the lock, never reported as
    /// damage) or pair a whole value with its predecessor's sidecar, whose
    /// expiry is no later than its own: never wrong or mixed bytes.
    /// (cache-run's record also checks its own lengths and hash.) Saves
    /// the lock (open, flock, fstat, close) and the `.journal` stat of a hit.
    pub fn read_unlocked(&self, key: &str) -> Result<Lookup> {
        let Some((file, meta, atime)) = self.open_entry(key)? else {
            return Ok(Lookup::Missing);
        };
        if meta.is_expired(self.now) {
            return Ok(Lookup::Expired(meta));
        }
        self.touch(&file, atime);
        Ok(Lookup::Hit(file, meta))
    }

    /// The shared lock, after repairing a crashed change if one is pending.
    fn read_lock(&self) -> Result<DirLock> {
        let guard = self.lock(false)?;
        if guard.journal_len.get() > 0 || journal::present(&self.dir) {
            drop(guard);
            return Ok(self.lock_and_repair()?.guard);
        }
        Ok(guard)
    }

    /// Opens `KEY.meta` and `KEY` (lock held). A value without a sidecar,
    /// or a sidecar without a value, is missing; a damaged sidecar is
    /// corruption (eviction removes such entries).
    fn open_entry(&self, key: &str) -> Result<Option<(File, Meta, i64)>> {
        let meta_path = self.path(&format!("{key}.meta"));
        let meta_bytes = match fsutil::open_read_len(&meta_path) {
            Ok((mut f, len)) => {
                // The length from the open's own fstat (files are never
                // written in place): one `read` of exactly that, not a
                // second one to find the end. Through `take`: std's
                // read_to_end for a File would ask fstat and lseek again.
                let mut b = Vec::with_capacity(len.min(MAX_SIDECAR) as usize + 1);
                Read::by_ref(&mut f)
                    .take(len.min(MAX_SIDECAR))
                    .read_to_end(&mut b)
                    .map_err(|e| Error::io("cannot read", &meta_path, e))?;
                b
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot open", &meta_path, e)),
        };
        let meta = Meta::parse(&meta_bytes).map_err(|why| {
            Error::Corruption(format!(
                "{}: {why} (cache-evict --expired removes it)",
                meta_path.display()
            ))
        })?;
        let value_path = self.path(key);
        match fsutil::open_read_noatime_meta(&value_path) {
            // The size and access time come from the open's own fstat: the
            // integrity check costs no extra system call on the hit path.
            // Both files are of one commit (opened under the lock, never
            // modified in place), so a value whose size is not the
            // sidecar's was damaged behind ffkit's back (a truncation, a
            // partial copy): never returned as good.
            Ok((_, m)) if m.len() != meta.size => Err(Error::Corruption(format!(
                "{}: the value is {} bytes but its sidecar says {} (damaged; cache-evict --expired removes it)",
                value_path.display(),
                m.len(),
                meta.size
            ))),
            // The access time, from the open's own check, for `touch`.
            Ok((f, m)) => Ok(Some((f, meta, m.atime()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot open", &value_path, e)),
        }
    }

    /// Sets the value's access time to now if it is older than the interval.
    /// Best effort: recency is a hint, a read never fails because of it.
    fn touch(&self, f: &File, atime: i64) {
        if atime < self.now - RECENCY_INTERVAL || atime > self.now + RECENCY_INTERVAL {
            let _ = fsutil::set_times(f, Some(self.now), None);
        }
    }

    /// Removes entries by `policy`; see [`evict`].
    pub fn evict(&self, policy: &EvictPolicy) -> Result<EvictReport> {
        evict::run(self, policy, None)
    }

    /// [`Cache::evict`] planning with (and sweeping) objects entries share:
    /// see [`Shared`].
    pub fn evict_with(&self, policy: &EvictPolicy, shared: &dyn Shared) -> Result<EvictReport> {
        evict::run(self, policy, Some(shared))
    }

    /// Removes keys (value and sidecar) under one exclusive lock: the
    /// eviction's commit. `plan` decides, under the lock and from the current
    /// totals, which keys go; with `dry_run` nothing is removed.
    fn remove_keys<F>(&self, dry_run: bool, plan: F) -> Result<(Totals, Totals, Vec<Evicted>)>
    where
        F: FnOnce(&Self, Totals) -> Result<Vec<Evicted>>,
    {
        let r = match self.lock_and_repair() {
            Ok(r) => r,
            // A dry run on a read-only cache: planned from a walk, as the
            // real one would be.
            Err(e) if dry_run && read_only(&e) => {
                let before = scan::totals_with(&self.dir, None)?.totals;
                let victims = plan(self, before)?;
                return Ok((before, before, victims));
            }
            Err(e) => return Err(e),
        };
        // Eviction walks anyway, so it never trusts an index that drifted
        // (a file dropped in or removed by hand): the totals are walked
        // under the lock, and a drifted index is corrected by the commit
        // (or here, when nothing is removed), so the index after eviction
        // is exact. Nothing is written before the removals: on a full disk
        // the index can be written only in the space they free.
        let before = scan::totals_with(&self.dir, None)?.totals;
        let held = r.held().filter(|&h| h == before);
        let victims = plan(self, before)?;
        if victims.is_empty() || dry_run {
            if held.is_none() {
                // Out of space: left for the next call, which walks again.
                spared(self.persist(&r.guard, None, before))?;
            }
            return Ok((before, before, victims));
        }
        let mut changes: Vec<Change> = victims
            .iter()
            .map(|v| Change {
                key: v.key.clone(),
                value: None,
                meta: None,
                bytes: 0,
            })
            .collect();
        let after = self.commit(&r.guard, before, held, &mut changes)?;
        Ok((before, after, victims))
    }
}

/// Whether `e` is the cache being read-only (a read-only mount): a call
/// that only reads then answers from what it can read.
fn read_only(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EROFS))
}

/// What [`Cache::lock_and_repair`] leaves: the lock held, and the totals.
struct Repaired {
    guard: DirLock,
    totals: Totals,
    /// Why the index was rebuilt by a walk, if it was.
    rebuilt: Option<&'static str>,
    /// Whether the index files hold `totals` (not when the disk was full).
    persisted: bool,
}

impl Repaired {
    /// What the index holds, for [`Cache::persist`].
    fn held(&self) -> Option<Totals> {
        self.persisted.then_some(self.totals)
    }
}

/// `Ok(true)` when `r` succeeded, `Ok(false)` when it failed for want of
/// space (what could not be written is left for the next call to repair),
/// other errors as they are.
/// A destination that could not be installed, and the error that stopped
/// it (none where the failure was only seen, not returned).
type Failed = (PathBuf, Option<Error>);

/// Whether an install failed because the name is held by something ffkit
/// does not replace (a directory: EISDIR, or a name taken again: EEXIST),
/// rather than for want of space or another reason the errno says.
fn in_the_way(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::EISDIR | libc::EEXIST | libc::ENOTEMPTY | libc::ENOTDIR)
        ),
        _ => false,
    }
}

fn spared(r: Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ExitKind::DiskSpace => Ok(false),
        Err(e) => Err(e),
    }
}

/// A reader that remembers whether it failed.
struct ReadSide<'a> {
    inner: &'a mut dyn Read,
    failed: bool,
}

impl Read for ReadSide<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// What is at a name (not following symlinks).
enum Found {
    /// A regular file, of this size.
    File(u64),
    /// Something that is not a regular file (a directory, a symlink...).
    Other,
    Nothing,
}

impl Found {
    /// The bytes it counts toward the cache size.
    fn size(&self) -> u64 {
        match self {
            Found::File(n) => *n,
            _ => 0,
        }
    }
}

/// What `.lock`, `len` bytes long, holds: the record's entry count (`None`:
/// no valid record), where a journal starts and how long it is. One
/// `pread` of the record; a file without one (empty, or an older ffkit's
/// journal from offset 0) is all journal.
fn read_record(f: &File, len: u64) -> (Option<u64>, u64, u64) {
    use std::os::unix::fs::FileExt;
    const REC: usize = index::COUNT_RECORD_LEN;
    let mut b = [0u8; REC];
    if len >= REC as u64
        && f.read_exact_at(&mut b, 0).is_ok()
        && let Some(n) = index::parse_count(&b)
    {
        return (Some(n), REC as u64, len - REC as u64);
    }
    (None, 0, len)
}

fn regular_size(path: &Path) -> Result<Found> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Found::File(m.len())),
        Ok(_) => Ok(Found::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Found::Nothing),
        Err(e) => Err(Error::io("cannot stat", path, e)),
    }
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Removes a prepared change's temp files.
fn discard(c: &Change) {
    for (t, _) in [&c.value, &c.meta].into_iter().flatten() {
        // An unnamed file goes when its descriptor closes.
        if let Temp::Named(p) = t {
            let _ = fs::remove_file(p);
        }
    }
}
