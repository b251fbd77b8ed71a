//! `cache-run`: a command's output memoized as an ordinary cache entry, with
//! single-flight misses and stale-while-revalidate (docs/cache-run.md).
//!
//! - [`key`]: what makes two runs the same (a BLAKE3 hash of argv and what
//!   the user adds), and the entry name `run-<hex>`.
//! - [`record`]: the value file: a header, the stdin fed to the command, the
//!   output (plain stdout, or stdout/stderr chunks in arrival order).
//! - [`capture`]: running the command of a miss and recording it.
//!
//! - [`output`]: `--output`: the files a run produced, stored as
//!   content-addressed blobs with a manifest, restored on a hit.
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
pub mod output;
pub mod record;
pub mod store;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
pub use capture::Shape;
use capture::{Delivery, Input};
pub use key::{FileMode, KeySpec, RunKey};
use record::{Recording, StdinInfo, Stored};
pub use store::{Guard, Look, Store};

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

/// The caller's stdin (`--key-stdin`), hashed while it was copied to an
/// unnamed temp file: never held in memory, fed to the command from the
/// file and copied into the entry from it.
pub struct Spool {
    file: File,
    pub info: StdinInfo,
}

impl Spool {
    /// Copies `r` to end of file into an unnamed temp file in `dir` (on
    /// Redis, `None`: an anonymous memory file, as the value is sent whole
    /// from memory anyway), hashing it on the way.
    /// A spool in `dir` that cannot be written to its end (a full disk, a
    /// quota) moves to memory, as one that cannot be made there does: the
    /// cache is an optimisation, so its disk filling up must not keep the
    /// command from running (its entry then fails to store, one line).
    pub fn read(r: &mut dyn Read, dir: Option<&Path>) -> Result<Spool> {
        let mut file = match dir {
            Some(d) => temp_file(d)?,
            None => memory_file()?,
        };
        let info = copy_hashed(r, Some((&mut file, dir.is_some())))?;
        Ok(Spool { file, info })
    }

    /// Only the hash of `r` (`--print-key`, `--invalidate`: the key, not
    /// the bytes).
    pub fn hash(r: &mut dyn Read) -> Result<[u8; 32]> {
        Ok(copy_hashed(r, None)?.hash)
    }
}

/// Copies `r` into `to`'s file (when given) while hashing it. `to`'s flag:
/// the file is on disk and may move to memory when a write to it fails
/// ([`to_memory`]).
fn copy_hashed(r: &mut dyn Read, mut to: Option<(&mut File, bool)>) -> Result<StdinInfo> {
    let mut h = blake3::Hasher::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    // The error that moved the spool to memory (a full disk), if it did.
    let mut disk_err: Option<io::Error> = None;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read", "standard input", e)),
        };
        h.update(&buf[..n]);
        if let Some((f, on_disk)) = to.as_mut() {
            // A spool moved to memory is held there up to the cap; past
            // it, the disk's error, as before the move existed.
            if let Some(e) = disk_err.take_if(|_| len + n as u64 > MEMORY_SPOOL_MAX) {
                return Err(Error::io("cannot write", "the spool of standard input", e));
            }
            if let Err(e) = f.write_all_at(&buf[..n], len) {
                let fits = len + n as u64 <= MEMORY_SPOOL_MAX;
                let moved = if *on_disk && fits {
                    to_memory(f, len)
                } else {
                    None
                };
                let Some(mem) = moved else {
                    return Err(Error::io("cannot write", "the spool of standard input", e));
                };
                **f = mem;
                *on_disk = false;
                f.write_all_at(&buf[..n], len)
                    .map_err(|e| Error::io("cannot write", "the spool of standard input", e))?;
                disk_err = Some(e);
            }
        }
        len += n as u64;
    }
    Ok(StdinInfo {
        len,
        hash: *h.finalize().as_bytes(),
    })
}

/// The most of a `--key-stdin` input held in memory after its spool's
/// disk filled up ([`copy_hashed`]): beyond it the call fails with the
/// disk's error (exit 8) and runs nothing, as before the move existed,
/// rather than take the machine's memory (an input larger than the disk,
/// or one that never ends, went on into memory until the OOM killer).
pub const MEMORY_SPOOL_MAX: u64 = 256 << 20;

/// A memory file holding the first `len` bytes of `disk`, the part of a
/// spool written before a write to it failed; `None` if it cannot be made.
fn to_memory(disk: &File, len: u64) -> Option<File> {
    let mem = memory_file().ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    while off < len {
        let want = buf.len().min((len - off) as usize);
        let n = match disk.read_at(&mut buf[..want], off) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        mem.write_all_at(&buf[..n], off).ok()?;
        off += n as u64;
    }
    Some(mem)
}

fn memory_file() -> Result<File> {
    rustix::fs::memfd_create("ffkit-stdin", rustix::fs::MemfdFlags::CLOEXEC)
        .map(File::from)
        .map_err(|e| Error::io("cannot create", "a memory file", e.into()))
}

/// An unnamed file in `dir` (O_TMPFILE), else in memory.
fn temp_file(dir: &Path) -> Result<File> {
    use rustix::fs::{Mode, OFlags};
    let made = crate::fsutil::create_private_dir(dir).ok().and_then(|()| {
        rustix::fs::open(
            dir,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(crate::fsutil::FILE_MODE),
        )
        .ok()
        .filter(|f| crate::fsutil::fix_created_mode(f, crate::fsutil::FILE_MODE).is_ok())
    });
    match made {
        Some(fd) => Ok(File::from(fd)),
        None => memory_file(),
    }
}

/// Reads a file from `off` to `end` with pread, leaving its offset alone
/// (the command reads the same open file).
struct Pread<'a> {
    f: &'a File,
    off: u64,
    end: u64,
}

impl Read for Pread<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.off) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.f.read_at(&mut buf[..want], self.off)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.off += n as u64;
        Ok(n)
    }
}

/// What a run is fed: nothing, or a spooled stdin (the caller's, or the
/// entry's for the refresh).
#[derive(Clone, Copy)]
enum Fed<'a> {
    Null,
    Spool(&'a Spool),
}

impl Fed<'_> {
    fn input(&self) -> Result<Input<'_>> {
        Ok(match self {
            Fed::Null => Input::Null,
            Fed::Spool(s) => {
                let f = s
                    .file
                    .try_clone()
                    .map_err(|e| Error::io("cannot reopen", "the spool of standard input", e))?;
                // The command reads its own description from the start.
                let f = rewound(f)?;
                Input::File(f)
            }
        })
    }

    fn info(&self) -> Option<StdinInfo> {
        match self {
            Fed::Null => None,
            Fed::Spool(s) => Some(s.info),
        }
    }

    fn reader(&self) -> Box<dyn Read + '_> {
        match self {
            Fed::Null => Box::new(io::empty()),
            Fed::Spool(s) => Box::new(Pread {
                f: &s.file,
                off: 0,
                end: s.info.len,
            }),
        }
    }
}

/// A dup shares its offset: rewind it (nothing else reads it meanwhile).
fn rewound(mut f: File) -> Result<File> {
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(0))
        .map_err(|e| Error::io("cannot rewind", "the spool of standard input", e))?;
    Ok(f)
}

/// The caller's [`Shape`], found (two `fstat` calls) the first time it
/// is asked for.
pub struct ShapeOf {
    find: fn() -> Shape,
    known: std::cell::OnceCell<Shape>,
}

impl ShapeOf {
    pub fn new(find: fn() -> Shape) -> ShapeOf {
        ShapeOf {
            find,
            known: std::cell::OnceCell::new(),
        }
    }

    pub fn get(&self) -> Shape {
        *self.known.get_or_init(self.find)
    }
}

/// What a call asks for.
pub struct Request<'a> {
    pub argv: &'a [OsString],
    /// The caller's stdin to feed the command (`--key-stdin`); `None`:
    /// /dev/null.
    pub stdin: Option<&'a Spool>,
    /// Whether the caller's stdout and stderr are one file.
    pub shape: ShapeOf,
    /// Run and store even if an entry is there (`--force`).
    pub force: bool,
    /// Where stale hits start a refresh.
    pub refresh: Option<&'a RefreshPlan>,
}

impl Request<'_> {
    fn fed(&self) -> Fed<'_> {
        self.stdin.map_or(Fed::Null, Fed::Spool)
    }
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
    /// `--output`: old trees swapped out by the restore that could not be
    /// removed (an immutable file in them), left where they are.
    pub left_behind: Vec<std::path::PathBuf>,
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
            left_behind: Vec::new(),
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
    outputs: output::Outputs,
}

impl<'a> Memo<'a> {
    pub fn new(store: Store<'a>, key: RunKey) -> Self {
        Memo {
            store,
            key,
            outputs: output::Outputs::default(),
        }
    }

    /// Stores and restores these `--output` paths with the entry (local
    /// backend only).
    pub fn with_outputs(mut self, outputs: output::Outputs) -> Self {
        self.outputs = outputs;
        self
    }

    pub fn key(&self) -> &RunKey {
        &self.key
    }

    /// The entry, if present, unexpired, intact and of a shape the caller
    /// can take (`merged`: its stdout and stderr are one file). A damaged
    /// sidecar or value is a miss that says why. `replay`: a hit will be
    /// replayed.
    fn lookup(&self, replay: bool, merged: &dyn Fn() -> bool) -> Result<Found> {
        let entry = self.key.entry();
        Ok(match self.store.look(&self.key, replay, false)? {
            Look::Hit { body: Ok(s), .. } if !s.fits(merged) => Found::Miss(None),
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
    pub fn run<O: Write + Send, E: Write + Send>(
        &self,
        req: &Request<'_>,
        opts: &Options,
        out: &mut O,
        err: &mut E,
    ) -> Result<Outcome> {
        // Which recordings this caller can take: a merged one only when its
        // own stdout and stderr are one file, or nothing is shown.
        // Asked only of a merged recording (a two-pipe one fits every
        // caller), so most hits never look at the caller's descriptors.
        let merged = || req.shape.get() != Shape::Split;
        let mut damaged = None;
        if !self.outputs.is_empty() {
            if self.store.is_remote() {
                return Err(Error::Validation(
                    "--output needs the local backend (FFKIT_BACKEND=local): outputs are not stored on Redis".into(),
                ));
            }
            match &self.store {
                Store::Local(c) => output::check_paths_in(c, &self.outputs.paths)?,
                _ => output::check_paths(&self.outputs.paths)?,
            }
        }
        if !req.force {
            let found = match self.lookup(true, &merged) {
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
                    match self.replay(*s, age, Some(hits), Source::Hit, out, err)? {
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
        // The last failure handed to waiters before we (maybe) wait: one
        // that appears while we wait is the run we waited for.
        let failed_before = self.store.failure_id(&self.key);
        let mut guard = match self.lock(Some(opts.lock_timeout)) {
            Ok(g) => g,
            Err(e @ Error::Timeout(_)) => return Err(e),
            // The cache cannot hold the lock (a read-only or misplaced dir,
            // a backend gone meanwhile): the command still runs, uncached,
            // rather than the call failing.
            Err(e) => return self.run_uncached(req, out, err, damaged, e),
        };
        if !req.force {
            let found = match self.lookup(true, &merged) {
                Ok(f) => f,
                Err(e) if self.store.is_remote() => {
                    drop(guard);
                    return self.run_uncached(req, out, err, damaged, e);
                }
                Err(e) => return Err(e),
            };
            let shared = match found {
                Found::Hit(s, age, hits) => Some((*s, age, Some(hits))),
                Found::Miss(why) => {
                    if damaged.is_none() {
                        damaged = why;
                    }
                    // The run we waited for failed and was not stored
                    // (--discard-failures): its result is ours too.
                    self.store
                        .failure(&self.key)
                        .filter(|f| Some(f.header.id) != failed_before && f.fits(merged))
                        .map(|f| (f, 0, None))
                }
            };
            if let Some((s, age, hits)) = shared {
                drop(guard);
                match self.replay(s, age, hits, Source::Shared, out, err)? {
                    Ok(o) => return Ok(o),
                    Err(why) => {
                        damaged.get_or_insert(why);
                        // Damaged between two looks: run it ourselves.
                        guard = self.lock(Some(opts.lock_timeout))?;
                    }
                }
            }
        }
        self.run_and_store(
            req.argv,
            req.fed(),
            req.shape.get(),
            opts,
            out,
            err,
            guard,
            damaged,
        )
    }

    /// Runs without the per-key lock and stores nothing; `why` says why.
    fn run_uncached<O: Write + Send, E: Write + Send>(
        &self,
        req: &Request<'_>,
        out: &mut O,
        err: &mut E,
        damaged: Option<String>,
        why: Error,
    ) -> Result<Outcome> {
        let fed = req.fed();
        let (rec, (), delivery) = capture::run(
            req.argv,
            fed.input()?,
            self.store.now(),
            0,
            req.shape.get(),
            out,
            err,
            |_| (),
        )?;
        let mut o = Outcome::new(Source::Ran);
        o.damaged = damaged;
        o.store_error = Some(why.to_string());
        finish(o, &rec, delivery)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_and_store<O: Write + Send, E: Write + Send>(
        &self,
        argv: &[OsString],
        fed: Fed<'_>,
        shape: Shape,
        opts: &Options,
        out: &mut O,
        err: &mut E,
        guard: Option<Guard>,
        damaged: Option<String>,
    ) -> Result<Outcome> {
        let mut guard = guard;
        let (rec, stored, delivery) = capture::run(
            argv,
            fed.input()?,
            self.store.now(),
            capture::MAX_RECORDED,
            shape,
            out,
            err,
            |rec| {
                // Stored (or handed to waiters) and unlocked at the
                // command's pace, while the caller's reader catches up.
                let r = if rec.out_of_memory {
                    Err("the output does not fit in the memory left".to_string())
                } else if rec.overflowed {
                    Err(format!(
                        "the output is larger than {} MiB",
                        capture::MAX_RECORDED >> 20
                    ))
                } else if rec.cut {
                    // The caller's reader went away and the command was
                    // stopped as a pipe would: its output may be cut short.
                    Ok(false)
                } else {
                    // A cache that cannot take the entry (full disk,
                    // read-only dir, a backend gone) must not turn a run
                    // that worked into a failure of the call.
                    self.store(rec, fed, shape == Shape::Merged, opts)
                        .map_err(|e| e.to_string())
                };
                drop(guard.take());
                r
            },
        )?;
        let mut o = Outcome::new(Source::Ran);
        o.damaged = damaged;
        match stored {
            Ok(s) => o.stored = s,
            Err(e) => o.store_error = Some(e),
        }
        finish(o, &rec, delivery)
    }

    /// Writes the recording; a failure with `--discard-failures` is not
    /// stored but handed to the waiters of this run.
    fn store(&self, rec: &Recording, fed: Fed<'_>, merged: bool, opts: &Options) -> Result<bool> {
        let id = fresh_id(&self.key);
        // With --output a failed run is never stored: its outputs are
        // whatever it left half done.
        let discard = rec.status != 0 && (opts.discard_failures || !self.outputs.is_empty());
        // The outputs first: the store stays held (no sweep) until the
        // entry naming their manifest is committed.
        let outputs = match (&self.store, discard || self.outputs.is_empty()) {
            (Store::Local(c), false) => Some(output::store(c, &self.outputs.paths)?),
            _ => None,
        };
        let (head, mut body) = rec.encode_parts(
            id,
            fed.info(),
            merged,
            outputs.as_ref().map(|o| o.manifest.clone()),
        );
        let mut value = head.as_slice().chain(fed.reader()).chain(&mut body);
        if discard {
            self.store.put_failure(&self.key, &mut value);
            return Ok(false);
        }
        self.store.write(&self.key, &mut value, opts.ttl, id)?;
        drop(outputs);
        Ok(true)
    }

    /// Replays a checked entry; `Ok(Err(why))` if its body turned out damaged
    /// (nothing was written then). A reader that goes away (EPIPE) ends the
    /// replay, and the call still answers the stored status, as the command
    /// would have. `count`: the look's own count (Redis), `Some(None)` to
    /// count it locally, `None` not to count (a failure handed to waiters).
    fn replay<O: Write, E: Write>(
        &self,
        s: Stored,
        age: i64,
        count: Option<Option<u64>>,
        source: Source,
        out: &mut O,
        err: &mut E,
    ) -> Result<std::result::Result<Outcome, String>> {
        let mut o = Outcome::new(source);
        o.describe(&s.header);
        o.age = age;
        let id = s.header.id;
        // The outputs before the output: a restore that finds the stored
        // outputs damaged is a miss, and nothing has been written yet.
        if !self.outputs.is_empty() {
            match (&s.header.outputs, &self.store) {
                (Some(m), Store::Local(c)) => match output::restore(c, m, &self.outputs)? {
                    Ok(left) => o.left_behind = left,
                    Err(why) => return Ok(Err(format!("{}: {why}", self.key.entry()))),
                },
                // A failure handed to waiters has none.
                _ if s.header.status != 0 => {}
                _ => {
                    return Ok(Err(format!("{}: no stored outputs", self.key.entry())));
                }
            }
        }
        match s.replay(out, err) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Ok(Err(format!("{}: {why}", self.key.entry()))),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(Error::io("cannot write", "the replayed output", e)),
        }
        if let Some(counted) = count {
            o.hits = self.store.count_hit(&self.key, id, counted);
        }
        Ok(Ok(o))
    }

    /// Starts the detached refresh unless a run of this key is under way.
    /// It gets none of our descriptors but 0-2 (all `/dev/null`): a pipe a
    /// caller passed us as fd 3 must not wait for the refresh.
    fn spawn_refresh(&self, plan: &RefreshPlan) -> bool {
        if self.store.busy(&self.key) {
            return false;
        }
        let mut cmd = Command::new(&plan.exe);
        cmd.args(&plan.args)
            .envs(plan.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // None of our descriptors but 0-2: a pipe a caller passed us as fd
        // 3 must not wait for the refresh.
        crate::fsutil::before_exec(&mut cmd, crate::fsutil::BeforeExec::CloseFrom3);
        crate::fsutil::with_callers_mask(|| cmd.spawn()).is_ok()
    }

    /// The body of the detached refresh: in its own session, with the
    /// per-key lock taken without waiting (another run or refresh of the key
    /// means there is nothing to do), and only while the entry is still
    /// there and still stale. The stored stdin is fed again, and the
    /// entry's shape (one channel or two) is kept.
    pub fn refresh(&self, argv: &[OsString], opts: &Options) -> Result<Outcome> {
        // Not a session leader already (we were just spawned), so this
        // succeeds; failing it would only keep us in the caller's session.
        let _ = rustix::process::setsid();
        let Some(guard) = self.lock(None)? else {
            return Ok(Outcome::new(Source::Skipped));
        };
        let (stored, age) = match self.lookup(false, &|| true)? {
            Found::Hit(s, age, _) => (s, age),
            Found::Miss(_) => return Ok(Outcome::new(Source::Skipped)),
        };
        if opts.stale.is_none_or(|s| age <= s as i64) {
            return Ok(Outcome::new(Source::Skipped));
        }
        // The stored stdin is spooled from the entry as a caller's is (a
        // temp file beside the entries; in memory on Redis), never read
        // whole into memory: it may be as large as what was piped in.
        let spool = if stored.header.key_stdin {
            let dir = match &self.store {
                Store::Local(c) => Some(c.dir().join(RUN_DIR)),
                _ => None,
            };
            let s = Spool::read(&mut stored.stdin_reader(), dir.as_deref())?;
            let hash = blake3::Hash::from_bytes(s.info.hash).to_hex();
            if s.info.len != stored.header.stdin || hash.as_str() != stored.header.stdin_hash {
                // Damaged: the next call is a miss and runs it.
                return Ok(Outcome::new(Source::Skipped));
            }
            Some(s)
        } else {
            None
        };
        let shape = if stored.header.merged {
            Shape::Merged
        } else {
            Shape::Split
        };
        let mut o = self.run_and_store(
            argv,
            spool.as_ref().map_or(Fed::Null, Fed::Spool),
            shape,
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
        // A lock file that cannot be made for want of space is held by
        // nobody: removing needs no lock then, and must work exactly when
        // space is needed (the removal itself is the cache engine's).
        let _guard = match self.lock(Some(timeout)) {
            Ok(g) => g,
            Err(e) if !self.store.is_remote() && e.exit_code() == 8 => None,
            Err(e) => return Err(e),
        };
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

/// The outcome of a run, from its recording and what became of the
/// pass-through: output the caller did not get (a full disk, `/dev/full`)
/// fails the call, even though the run may be stored; a reader that went
/// away (EPIPE) does not.
fn finish(mut o: Outcome, rec: &Recording, delivery: Delivery) -> Result<Outcome> {
    if let Some(e) = delivery.error {
        return Err(Error::io("cannot write", "the command's output", e));
    }
    o.status = Some(rec.status);
    o.ran_at = Some(rec.ran_at);
    o.duration_ms = Some(rec.duration_ms);
    // What the command printed, also when it was not recorded (past the
    // limit, or a run that is not stored).
    [o.stdout_bytes, o.stderr_bytes] = rec.seen;
    Ok(o)
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
