//! `cache-run`: a command's output memoized as an ordinary cache entry, with
//! single-flight misses and stale-while-revalidate (docs/cache-run.md).
//!
//! - [`key`]: what makes two runs the same (a BLAKE3 hash of argv and what
//!   the user adds), and the entry name `run-<hex>`.
//! - [`record`]: the value file: a header, the stdin fed to the command, the
//!   output (plain stdout, or stdout/stderr chunks in arrival order).
//! - [`capture`]: running the command of a miss and recording it.
//!
//! An entry is written through [`Cache::write`] like every other one, so it
//! is a value file plus a `KEY.meta` sidecar, counted in the exact size
//! index, removed by eviction and subject to its TTL.
//!
//! Single-flight: a miss takes a per-key kernel lock (flock) on
//! `.cache-run/<hex>.lock` inside the cache dir — a dot-dir, so it never
//! counts toward the size — waiting up to `LOCK_TIMEOUT`, then looks again:
//! if another process stored the answer meanwhile it is replayed, otherwise
//! this process runs the command and stores it before unlocking. The lock
//! descriptor is close-on-exec, so the command never inherits it: if the
//! running process dies (even SIGKILL), the kernel frees the lock, the next
//! waiter finds no entry (a write is all-or-nothing) and runs the command.
//! A hit never takes that lock. Hits are counted in `.cache-run/<hex>.hits`
//! (generation id and count, under a brief flock of that file).

pub mod capture;
pub mod key;
pub mod record;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cache::{Cache, Lookup, Meta, NewEntry, Value};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::lock::{self, Kind, Wait};
pub use key::{FileMode, KeySpec, RunKey};
use record::{Recording, Stored};

/// The dot-dir in the cache dir holding the per-key lock and hit files.
pub const RUN_DIR: &str = ".cache-run";

/// How entries are written and when they are refreshed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seconds; 0 = never expires.
    pub ttl: u64,
    /// A hit older than this many seconds starts one detached refresh.
    pub stale: Option<u64>,
    /// Non-zero exits are not stored.
    pub discard_failures: bool,
    /// How long a miss waits for another run of the same key.
    pub lock_timeout: Duration,
}

/// How to start the detached refresh: this program and its arguments.
#[derive(Clone, Debug)]
pub struct RefreshPlan {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

/// What a call asks for.
pub struct Request<'a> {
    pub argv: &'a [OsString],
    /// Bytes to feed the command (`--key-stdin`); `None`: /dev/null.
    pub stdin: Option<&'a [u8]>,
    /// Run and store even if an entry is there (`--force`).
    pub force: bool,
    /// Where stale hits start a refresh.
    pub refresh: Option<&'a RefreshPlan>,
}

/// Where the answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Replayed from the cache.
    Hit,
    /// Replayed from the cache after waiting for another process's run.
    Shared,
    /// This process ran the command.
    Ran,
    /// The detached refresh ran the command.
    Refreshed,
    /// The detached refresh had nothing to do (someone else refreshed, or
    /// the entry is gone or fresh).
    Skipped,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Shared => "shared",
            Source::Ran => "ran",
            Source::Refreshed => "refreshed",
            Source::Skipped => "skipped",
        }
    }

    /// Whether the answer was replayed rather than run.
    pub fn cached(self) -> bool {
        matches!(self, Source::Hit | Source::Shared)
    }
}

/// The result of a call.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub source: Source,
    /// The command's status (stored or just run); `None` when skipped.
    pub status: Option<u8>,
    /// Seconds since the entry was written (0 for a fresh run).
    pub age: i64,
    /// Replays of this entry so far, this one included.
    pub hits: u64,
    /// Whether this call wrote the entry.
    pub stored: bool,
    /// Whether a detached refresh was started.
    pub refresh_started: bool,
    /// Set when an entry was found damaged and treated as a miss: why.
    pub damaged: Option<String>,
    /// Set when the run could not be stored: why (the call still succeeds
    /// with the command's status).
    pub store_error: Option<String>,
    pub ran_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

impl Outcome {
    fn new(source: Source) -> Outcome {
        Outcome {
            source,
            status: None,
            age: 0,
            hits: 0,
            stored: false,
            refresh_started: false,
            damaged: None,
            store_error: None,
            ran_at: None,
            duration_ms: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
        }
    }

    fn describe(&mut self, h: &record::Header) {
        self.status = Some(h.status);
        self.ran_at = Some(h.ran_at);
        self.duration_ms = Some(h.duration_ms);
        self.stdout_bytes = h.stdout;
        self.stderr_bytes = h.stderr;
    }
}

/// What `--print-key --json` shows without running anything.
#[derive(Clone, Debug)]
pub struct Peek {
    pub present: bool,
    pub expired: bool,
    pub stale: bool,
    pub age: Option<i64>,
    pub hits: u64,
    pub status: Option<u8>,
    pub ran_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub damaged: Option<String>,
}

/// The lookup of one key.
enum Found {
    Hit(Box<Stored>, Meta),
    Miss(Option<String>),
}

/// One key in one cache.
pub struct Memo<'a> {
    cache: &'a Cache,
    key: RunKey,
}

impl<'a> Memo<'a> {
    pub fn new(cache: &'a Cache, key: RunKey) -> Self {
        Memo { cache, key }
    }

    pub fn key(&self) -> &RunKey {
        &self.key
    }

    fn run_dir(&self) -> PathBuf {
        self.cache.dir().join(RUN_DIR)
    }

    fn side_file(&self, ext: &str) -> PathBuf {
        self.run_dir().join(format!("{}.{ext}", self.key.hex))
    }

    /// The entry, if present, unexpired and intact. A damaged sidecar or
    /// value is a miss that says why.
    fn lookup(&self) -> Result<Found> {
        let entry = self.key.entry();
        match self.cache.read(&entry) {
            Ok(Lookup::Hit(file, meta)) => match Stored::open(file) {
                Ok(s) if s.header_matches(&meta) => Ok(Found::Hit(Box::new(s), meta)),
                Ok(_) => Ok(Found::Miss(Some(format!(
                    "{entry}: value and sidecar disagree"
                )))),
                Err(why) => Ok(Found::Miss(Some(format!("{entry}: {why}")))),
            },
            Ok(Lookup::Missing | Lookup::Expired(_)) => Ok(Found::Miss(None)),
            Err(Error::Corruption(why)) => Ok(Found::Miss(Some(why))),
            Err(e) => Err(e),
        }
    }

    fn age(&self, meta: &Meta) -> i64 {
        (self.cache.now() - meta.created_at).max(0)
    }

    /// Takes the per-key lock: at once if free; else waits up to `wait`
    /// (`None`: not at all, and returns `None`).
    fn lock(&self, wait: Option<Duration>) -> Result<Option<File>> {
        let dir = self.run_dir();
        fsutil::create_private_dir(&dir)?;
        let path = self.side_file("lock");
        let f = fsutil::open_rw_create(&path)
            .map_err(|e| Error::io("cannot open lock file", &path, e))?;
        match f.try_lock() {
            Ok(()) => return Ok(Some(f)),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(Error::LockFailed(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
        let Some(t) = wait else {
            return Ok(None);
        };
        match lock::kernel::lock_fd(
            f.as_raw_fd(),
            Kind::Exclusive,
            lock::kernel::Method::Flock,
            Wait::timeout(t),
            &mut || {},
        ) {
            Ok(Ok(_)) => Ok(Some(f)),
            Ok(Err(_)) => Err(Error::Timeout(format!(
                "another run of this command still holds {} after {}s (LOCK_TIMEOUT)",
                path.display(),
                t.as_secs_f64()
            ))),
            Err(e) => Err(Error::LockFailed(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }

    /// Serves a call: a hit is replayed (and may start a refresh); a miss
    /// runs the command once per key across processes and stores it.
    pub fn run<O: Write, E: Write>(
        &self,
        req: &Request<'_>,
        opts: &Options,
        out: &mut O,
        err: &mut E,
    ) -> Result<Outcome> {
        let mut damaged = None;
        if !req.force {
            match self.lookup()? {
                Found::Hit(s, meta) => match self.replay(*s, &meta, Source::Hit, out, err)? {
                    Ok(mut o) => {
                        if let (Some(stale), Some(plan)) = (opts.stale, req.refresh)
                            && o.age > stale as i64
                        {
                            o.refresh_started = self.spawn_refresh(plan);
                        }
                        return Ok(o);
                    }
                    Err(why) => damaged = Some(why),
                },
                Found::Miss(why) => damaged = why,
            }
        }
        let guard = match self.lock(Some(opts.lock_timeout)) {
            Ok(g) => g,
            Err(e @ Error::Timeout(_)) => return Err(e),
            // The cache dir cannot hold the lock (read-only, not a dir):
            // the command still runs, uncached, rather than the call failing.
            Err(e) => return self.run_uncached(req, out, err, damaged, e),
        };
        if !req.force {
            match self.lookup()? {
                Found::Hit(s, meta) => {
                    drop(guard);
                    match self.replay(*s, &meta, Source::Shared, out, err)? {
                        Ok(o) => return Ok(o),
                        Err(why) => {
                            damaged.get_or_insert(why);
                            // Damaged between two looks: run it ourselves.
                            let guard = self.lock(Some(opts.lock_timeout))?;
                            return self.run_and_store(
                                req.argv, req.stdin, opts, out, err, guard, damaged,
                            );
                        }
                    }
                }
                Found::Miss(why) => {
                    if damaged.is_none() {
                        damaged = why;
                    }
                }
            }
        }
        self.run_and_store(req.argv, req.stdin, opts, out, err, guard, damaged)
    }

    /// Runs without the per-key lock and stores nothing; `why` says why.
    fn run_uncached<O: Write, E: Write>(
        &self,
        req: &Request<'_>,
        out: &mut O,
        err: &mut E,
        damaged: Option<String>,
        why: Error,
    ) -> Result<Outcome> {
        let rec = capture::run(req.argv, req.stdin, self.cache.now(), 0, out, err)?;
        let mut o = Outcome::new(Source::Ran);
        o.damaged = damaged;
        o.status = Some(rec.status);
        o.ran_at = Some(rec.ran_at);
        o.duration_ms = Some(rec.duration_ms);
        o.store_error = Some(why.to_string());
        Ok(o)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_and_store<O: Write, E: Write>(
        &self,
        argv: &[OsString],
        stdin: Option<&[u8]>,
        opts: &Options,
        out: &mut O,
        err: &mut E,
        guard: Option<File>,
        damaged: Option<String>,
    ) -> Result<Outcome> {
        let rec = capture::run(
            argv,
            stdin,
            self.cache.now(),
            capture::MAX_RECORDED,
            out,
            err,
        )?;
        let mut o = Outcome::new(Source::Ran);
        o.damaged = damaged;
        if rec.overflowed {
            o.store_error = Some(format!(
                "the output is larger than {} MiB",
                capture::MAX_RECORDED >> 20
            ));
            o.status = Some(rec.status);
            return Ok(o);
        }
        // The command ran and its output was passed through: a cache that
        // cannot take the entry (full disk, read-only dir) must not turn
        // that into a failure of the call.
        match self.store(&rec, stdin, opts) {
            Ok(stored) => o.stored = stored,
            Err(e) => o.store_error = Some(e.to_string()),
        }
        drop(guard);
        o.status = Some(rec.status);
        o.ran_at = Some(rec.ran_at);
        o.duration_ms = Some(rec.duration_ms);
        for (s, b) in &rec.chunks {
            match s {
                record::Stream::Stdout => o.stdout_bytes += b.len() as u64,
                record::Stream::Stderr => o.stderr_bytes += b.len() as u64,
            }
        }
        Ok(o)
    }

    /// Writes the recording unless it failed and failures are discarded.
    fn store(&self, rec: &Recording, stdin: Option<&[u8]>, opts: &Options) -> Result<bool> {
        if rec.status != 0 && opts.discard_failures {
            return Ok(false);
        }
        let id = fresh_id(&self.key);
        let bytes = rec.encode(id, stdin);
        self.cache.write(vec![NewEntry {
            key: self.key.entry(),
            value: Value::Bytes(&bytes),
            ttl: opts.ttl,
        }])?;
        self.count_hit(id, true);
        Ok(true)
    }

    /// Replays a checked entry; `Ok(Err(why))` if its body turned out damaged
    /// (nothing was written then).
    fn replay<O: Write, E: Write>(
        &self,
        s: Stored,
        meta: &Meta,
        source: Source,
        out: &mut O,
        err: &mut E,
    ) -> Result<std::result::Result<Outcome, String>> {
        let mut o = Outcome::new(source);
        o.describe(&s.header);
        o.age = self.age(meta);
        let id = s.header.id;
        match s.replay(out, err) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Ok(Err(format!("{}: {why}", self.key.entry()))),
            Err(e) => return Err(Error::io("cannot write", "the replayed output", e)),
        }
        o.hits = self.count_hit(id, false);
        Ok(Ok(o))
    }

    /// Starts the detached refresh unless a run of this key is under way.
    fn spawn_refresh(&self, plan: &RefreshPlan) -> bool {
        match self.lock(None) {
            Ok(Some(f)) => drop(f),
            _ => return false,
        }
        Command::new(&plan.exe)
            .args(&plan.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .is_ok()
    }

    /// The body of the detached refresh: in its own session, with the
    /// per-key lock taken without waiting (another run or refresh of the key
    /// means there is nothing to do), and only while the entry is still
    /// there and still stale. The stored stdin is fed again.
    pub fn refresh(&self, argv: &[OsString], opts: &Options) -> Result<Outcome> {
        // Not a session leader already (we were just spawned), so this
        // succeeds; failing it would only keep us in the caller's session.
        let _ = rustix::process::setsid();
        let Some(guard) = self.lock(None)? else {
            return Ok(Outcome::new(Source::Skipped));
        };
        let (mut stored, meta) = match self.lookup()? {
            Found::Hit(s, m) => (s, m),
            Found::Miss(_) => return Ok(Outcome::new(Source::Skipped)),
        };
        if opts.stale.is_none_or(|s| self.age(&meta) <= s as i64) {
            return Ok(Outcome::new(Source::Skipped));
        }
        let stdin = if stored.header.key_stdin {
            Some(
                stored
                    .stdin()
                    .map_err(|e| Error::io("cannot read", self.cache.dir(), e))?,
            )
        } else {
            None
        };
        let mut o = self.run_and_store(
            argv,
            stdin.as_deref(),
            opts,
            &mut io::sink(),
            &mut io::sink(),
            Some(guard),
            None,
        )?;
        o.source = Source::Refreshed;
        Ok(o)
    }

    /// Drops the entry (after any run of the key in progress has stored its
    /// answer). Returns whether there was one.
    pub fn invalidate(&self, timeout: Duration) -> Result<bool> {
        let entry = self.key.entry();
        if !self.cache.dir().is_dir() {
            return Ok(false);
        }
        let _guard = self.lock(Some(timeout))?;
        let had = self.cache.dir().join(&entry).exists();
        self.cache.remove(&[entry])?;
        let _ = fs::remove_file(self.side_file("hits"));
        Ok(had)
    }

    /// The entry's state, running nothing.
    pub fn peek(&self, stale: Option<u64>) -> Result<Peek> {
        let mut p = Peek {
            present: false,
            expired: false,
            stale: false,
            age: None,
            hits: 0,
            status: None,
            ran_at: None,
            duration_ms: None,
            damaged: None,
        };
        match self.cache.read(&self.key.entry()) {
            Ok(Lookup::Hit(file, meta)) => {
                p.age = Some(self.age(&meta));
                match Stored::open(file) {
                    Ok(s) => {
                        p.present = true;
                        p.stale = stale.is_some_and(|st| self.age(&meta) > st as i64);
                        p.status = Some(s.header.status);
                        p.ran_at = Some(s.header.ran_at);
                        p.duration_ms = Some(s.header.duration_ms);
                        p.hits = self.read_hits(s.header.id);
                    }
                    Err(why) => p.damaged = Some(why),
                }
            }
            Ok(Lookup::Expired(meta)) => {
                p.expired = true;
                p.age = Some(self.age(&meta));
            }
            Ok(Lookup::Missing) => {}
            Err(Error::Corruption(why)) => p.damaged = Some(why),
            Err(e) => return Err(e),
        }
        Ok(p)
    }

    /// Counts a replay of generation `id` (or, with `reset`, starts a new
    /// generation at 0). Best effort: a count is a hint, never a failure.
    fn count_hit(&self, id: u64, reset: bool) -> u64 {
        let path = self.side_file("hits");
        let update = || -> io::Result<u64> {
            let f = open_hits(&path, true)?;
            f.lock()?;
            let (gen_, n) = read_counter(&f);
            let n = if reset {
                0
            } else if gen_ == id {
                n + 1
            } else {
                1
            };
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&id.to_le_bytes());
            b[8..].copy_from_slice(&n.to_le_bytes());
            f.write_all_at(&b, 0)?;
            Ok(n)
        };
        update().unwrap_or(0)
    }

    fn read_hits(&self, id: u64) -> u64 {
        match open_hits(&self.side_file("hits"), false) {
            Ok(f) => match read_counter(&f) {
                (g, n) if g == id => n,
                _ => 0,
            },
            Err(_) => 0,
        }
    }
}

impl Stored {
    /// The sidecar's size is the value file's (both written by one commit).
    fn header_matches(&self, meta: &Meta) -> bool {
        self.file_len() == meta.size
    }
}

fn open_hits(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .mode(fsutil::FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
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

/// An id no other recording of this key has: hashed from the key, the
/// process and the wall clock's nanoseconds.
fn fresh_id(key: &RunKey) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = blake3::Hasher::new();
    h.update(key.hex.as_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&nanos.to_le_bytes());
    let b = h.finalize();
    let b = b.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}
