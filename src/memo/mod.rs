//! `cache-run`: a command's output memoized as an ordinary cache entry, with
//! single-flight misses and stale-while-revalidate (docs/cache-run.md).
//!
//! - [`key`]: what makes two runs the same (a BLAKE3 hash of argv and what
//!   the user adds), and the entry name `run-<hex>`.
//! - [`record`]: the value file: a header, the stdin fed to the command, the
//!   output (plain stdout, or stdout/stderr chunks in arrival order).
//! - [`capture`]: running the command of a miss and recording it.
//!
//! - [`store`]: where the entry and the per-key lock live — the local cache
//!   dir or the Redis backend; the only place the two differ.
//!
//! Locally an entry is written through `Cache::write` like every other
//! one, so it is a value file plus a `KEY.meta` sidecar, counted in the
//! exact size index, removed by eviction and subject to its TTL; on Redis it
//! goes through the backend's cache scripts and counts in its exact total.
//!
//! Single-flight: a miss takes the per-key lock — locally `flock` on
//! `.cache-run/<hex>.lock` inside the cache dir (a dot-dir, so it never
//! counts toward the size), on Redis a leased lock renewed while the
//! command runs — waiting up to `LOCK_TIMEOUT`, then looks again: if
//! another process stored the answer meanwhile it is replayed, otherwise
//! this process runs the command and stores it before unlocking. The lock
//! is never inherited by the command: if the running process dies (even
//! SIGKILL), the kernel frees the flock (the Redis lease lapses within
//! `FFKIT_LOCK_LEASE`), the next waiter finds no entry (a write is
//! all-or-nothing) and runs the command. A hit never takes that lock.

pub mod capture;
pub mod key;
pub mod record;
pub mod store;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
pub use key::{FileMode, KeySpec, RunKey};
use record::{Recording, Stored};
pub use store::{Guard, Look, Remote, Store};

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

/// How to start the detached refresh: this program, its arguments and the
/// variables it needs beyond the inherited ones (a `--backend` URL, which
/// stays out of argv so `ps` never shows its password).
#[derive(Clone, Debug)]
pub struct RefreshPlan {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
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
    /// A checked entry, its age, and the replay count its look made (Redis).
    Hit(Box<Stored>, i64, Option<u64>),
    Miss(Option<String>),
}

/// One key in one cache (local or remote: [`Store`]).
pub struct Memo<'a> {
    store: Store<'a>,
    key: RunKey,
}

impl<'a> Memo<'a> {
    pub fn new(store: Store<'a>, key: RunKey) -> Self {
        Memo { store, key }
    }

    pub fn key(&self) -> &RunKey {
        &self.key
    }

    /// The entry, if present, unexpired and intact. A damaged sidecar or
    /// value is a miss that says why. `replay`: a hit will be replayed.
    fn lookup(&self, replay: bool) -> Result<Found> {
        let entry = self.key.entry();
        Ok(match self.store.look(&self.key, replay, false)? {
            Look::Hit {
                body: Ok(s),
                age,
                hits,
            } => Found::Hit(Box::new(s), age, hits),
            Look::Hit { body: Err(why), .. } => Found::Miss(Some(format!("{entry}: {why}"))),
            Look::Expired { .. } | Look::Missing => Found::Miss(None),
            Look::Damaged(why) => Found::Miss(Some(why)),
        })
    }

    fn lock(&self, wait: Option<Duration>) -> Result<Option<Guard>> {
        self.store.lock(&self.key, wait)
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
            let found = match self.lookup(true) {
                Ok(f) => f,
                // A remote cache that cannot be reached (down, paused,
                // timing out): the command still runs, uncached.
                Err(e) if self.store.is_remote() => {
                    return self.run_uncached(req, out, err, None, e);
                }
                Err(e) => return Err(e),
            };
            match found {
                Found::Hit(s, age, hits) => {
                    match self.replay(*s, age, hits, Source::Hit, out, err)? {
                        Ok(mut o) => {
                            if let (Some(stale), Some(plan)) = (opts.stale, req.refresh)
                                && o.age > stale as i64
                            {
                                o.refresh_started = self.spawn_refresh(plan);
                            }
                            return Ok(o);
                        }
                        Err(why) => damaged = Some(why),
                    }
                }
                Found::Miss(why) => damaged = why,
            }
        }
        let guard = match self.lock(Some(opts.lock_timeout)) {
            Ok(g) => g,
            Err(e @ Error::Timeout(_)) => return Err(e),
            // The cache cannot hold the lock (a read-only or misplaced dir,
            // a backend gone meanwhile): the command still runs, uncached,
            // rather than the call failing.
            Err(e) => return self.run_uncached(req, out, err, damaged, e),
        };
        if !req.force {
            let found = match self.lookup(true) {
                Ok(f) => f,
                Err(e) if self.store.is_remote() => {
                    drop(guard);
                    return self.run_uncached(req, out, err, damaged, e);
                }
                Err(e) => return Err(e),
            };
            match found {
                Found::Hit(s, age, hits) => {
                    drop(guard);
                    match self.replay(*s, age, hits, Source::Shared, out, err)? {
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
        let rec = capture::run(req.argv, req.stdin, self.store.now(), 0, out, err)?;
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
        guard: Option<Guard>,
        damaged: Option<String>,
    ) -> Result<Outcome> {
        let rec = capture::run(
            argv,
            stdin,
            self.store.now(),
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
        // cannot take the entry (full disk, read-only dir, a backend gone)
        // must not turn that into a failure of the call.
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
        self.store.write(&self.key, &bytes, opts.ttl, id)?;
        Ok(true)
    }

    /// Replays a checked entry; `Ok(Err(why))` if its body turned out damaged
    /// (nothing was written then).
    fn replay<O: Write, E: Write>(
        &self,
        s: Stored,
        age: i64,
        counted: Option<u64>,
        source: Source,
        out: &mut O,
        err: &mut E,
    ) -> Result<std::result::Result<Outcome, String>> {
        let mut o = Outcome::new(source);
        o.describe(&s.header);
        o.age = age;
        let id = s.header.id;
        match s.replay(out, err) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Ok(Err(format!("{}: {why}", self.key.entry()))),
            Err(e) => return Err(Error::io("cannot write", "the replayed output", e)),
        }
        o.hits = self.store.count_hit(&self.key, id, counted);
        Ok(Ok(o))
    }

    /// Starts the detached refresh unless a run of this key is under way.
    fn spawn_refresh(&self, plan: &RefreshPlan) -> bool {
        if self.store.busy(&self.key) {
            return false;
        }
        Command::new(&plan.exe)
            .args(&plan.args)
            .envs(plan.env.iter().map(|(k, v)| (k, v)))
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
        let (mut stored, age) = match self.lookup(false)? {
            Found::Hit(s, age, _) => (s, age),
            Found::Miss(_) => return Ok(Outcome::new(Source::Skipped)),
        };
        if opts.stale.is_none_or(|s| age <= s as i64) {
            return Ok(Outcome::new(Source::Skipped));
        }
        let stdin = if stored.header.key_stdin {
            Some(
                stored
                    .stdin()
                    .map_err(|e| Error::io("cannot read", "the stored stdin", e))?,
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
        if !self.store.may_hold() {
            return Ok(false);
        }
        let _guard = self.lock(Some(timeout))?;
        self.store.remove(&self.key)
    }

    /// The entry's state, running nothing and changing nothing.
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
        match self.store.look(&self.key, false, true)? {
            Look::Hit { body, age, hits } => {
                p.age = Some(age);
                match body {
                    Ok(s) => {
                        p.present = true;
                        p.stale = stale.is_some_and(|st| age > st as i64);
                        p.status = Some(s.header.status);
                        p.ran_at = Some(s.header.ran_at);
                        p.duration_ms = Some(s.header.duration_ms);
                        p.hits = self.store.hits(&self.key, s.header.id, hits);
                    }
                    Err(why) => p.damaged = Some(why),
                }
            }
            Look::Expired { age } => {
                p.expired = true;
                p.age = Some(age);
            }
            Look::Missing => {}
            Look::Damaged(why) => p.damaged = Some(why),
        }
        Ok(p)
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
