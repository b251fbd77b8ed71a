//! The directory walk: the "du" of the cache, used to rebuild or verify the
//! index, for `CACHE_SIZE_TRACKING=disabled`, and to pick eviction victims.
//!
//! The cache is one flat directory (keys cannot contain `/`), so this is a
//! single `readdir` plus one `fstatat` per regular file — what `du -sb` does,
//! minus its recursion — and, for cache-run's output store, the same over
//! `.store/XX/` (bytes only: a blob is no entry). Subdirectories, symlinks and other non-regular files
//! are not the cache's and are neither counted nor followed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::index::Totals;
use super::progress::Progress;
use crate::error::{Error, Result};
use crate::fsutil;

/// A counted file: a value, a sidecar, or a stray.
#[derive(Clone, Debug)]
pub struct FileInfo {
    pub name: OsString,
    pub size: u64,
    /// Last use (access time), epoch seconds.
    pub atime: i64,
    /// Last change of content, epoch seconds.
    pub mtime: i64,
    pub ino: u64,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub totals: Totals,
    pub files: Vec<FileInfo>,
    /// ffkit temp files seen (`.tmp-*`), candidates for cleanup.
    pub temps: Vec<OsString>,
}

/// A temp file is stale when its writer is gone or it is a day old.
const STALE_TEMP_SECS: i64 = 86_400;

/// Directory entries seen between two progress reports, which keeps the
/// hook's cost out of the walk's profile.
const PROGRESS_STEP: u64 = 1024;

/// Walks `dir` (not following symlinks), keeping every counted file and
/// reporting the directory entries seen to `progress`.
pub fn scan_with(dir: &Path, progress: Option<&dyn Progress>) -> Result<Scan> {
    walk(dir, true, progress)
}

/// Walks `dir` for the totals (and temps) only: what a size query, a
/// verify or a rebuild needs. Keeping no per-file record holds memory flat
/// and saves an allocation per file on a 100k-entry walk.
pub fn totals_with(dir: &Path, progress: Option<&dyn Progress>) -> Result<Scan> {
    walk(dir, false, progress)
}

fn walk(dir: &Path, keep_files: bool, progress: Option<&dyn Progress>) -> Result<Scan> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))?;
    let mut s = Scan::default();
    if let Some(p) = progress {
        p.start("walking", None);
    }
    let mut seen = 0u64;
    for de in rd {
        seen += 1;
        if seen.is_multiple_of(PROGRESS_STEP)
            && let Some(p) = progress
        {
            p.advance(PROGRESS_STEP);
        }
        let de = de.map_err(|e| Error::io("cannot list", dir, e))?;
        let name = de.file_name();
        let bytes = name.as_bytes();
        if bytes.first() == Some(&b'.') {
            if bytes.starts_with(fsutil::TEMP_PREFIX.as_bytes()) {
                s.temps.push(name);
            }
            continue;
        }
        let ft = match de.file_type() {
            Ok(t) => t,
            Err(_) => continue, // vanished meanwhile
        };
        if !ft.is_file() {
            continue;
        }
        let m = match de.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("cannot stat", de.path(), e)),
        };
        s.totals.bytes += m.len();
        if !bytes.ends_with(b".meta") {
            s.totals.entries += 1;
        }
        if keep_files {
            s.files.push(FileInfo {
                name,
                size: m.len(),
                atime: m.atime(),
                mtime: m.mtime(),
                ino: m.ino(),
            });
        }
    }
    store_blobs(dir, &mut s)?;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(s)
}

/// The directory of cache-run's output store (its blobs count toward the
/// bytes: see `memo::output`).
pub const STORE_DIR: &str = ".store";

/// Adds the store's blobs to the bytes: every regular file in a two-hex-digit
/// directory of `.store/` (its temps, `.store/.tmp-*`, are listed for
/// cleanup, never counted). Not followed: symlinks and anything else.
fn store_blobs(dir: &Path, s: &mut Scan) -> Result<()> {
    let store = dir.join(STORE_DIR);
    // A symlink in its place is not the store (memo::output refuses to
    // use one): its target is never counted.
    if fs::symlink_metadata(&store).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(());
    }
    let rd = match fs::read_dir(&store) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(()),
        Err(e) => return Err(Error::io("cannot list", &store, e)),
    };
    for de in rd {
        let de = de.map_err(|e| Error::io("cannot list", &store, e))?;
        let name = de.file_name();
        if name.as_bytes().starts_with(fsutil::TEMP_PREFIX.as_bytes()) {
            s.temps
                .push(Path::new(STORE_DIR).join(&name).into_os_string());
            continue;
        }
        if !is_fan_dir(name.as_bytes()) || !de.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let sub = de.path();
        let rd = match fs::read_dir(&sub) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("cannot list", &sub, e)),
        };
        for b in rd {
            let b = b.map_err(|e| Error::io("cannot list", &sub, e))?;
            if !b.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            match b.metadata() {
                Ok(m) => s.totals.bytes += m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("cannot stat", b.path(), e)),
            }
        }
    }
    Ok(())
}

/// A store fan-out directory's name: two lowercase hex digits.
pub fn is_fan_dir(name: &[u8]) -> bool {
    name.len() == 2
        && name
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Scan {
    /// Removes temp files left by dead processes (or older than a day).
    /// Best effort: a temp file costs disk, never correctness.
    pub fn remove_stale_temps(&self, dir: &Path) {
        let now = jiff::Timestamp::now().as_second();
        let me = std::process::id();
        // One probe per writer, not per temp: a batch in flight owns two
        // temps per line, and eviction walks up to eight times. A pid found
        // gone stays gone for this list: every temp in it was made before
        // the walk, so its maker had exited by the probe, and a process
        // given the same pid later made none of them.
        let mut alive: BTreeMap<u32, bool> = BTreeMap::new();
        for t in &self.temps {
            // A store temp is listed as `.store/.tmp-…`: its own name counts.
            let pid = Path::new(t)
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(fsutil::TEMP_PREFIX))
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            // Our own temps are in flight (a batch prepares all of its temps
            // before the lock, so a first write can see thousands of them):
            // skip them without a stat or a kill(2) each.
            if pid == Some(me) {
                continue;
            }
            let path = dir.join(t);
            // A dead writer's temp goes whatever its age: no stat for it.
            // Dead as the lock code judges a holder: an exited writer not
            // yet reaped (a zombie, as a killed orphan is until init gets to
            // it) passes kill(0) but has closed its files for good.
            let dead = pid.is_none_or(|p| {
                !*alive
                    .entry(p)
                    .or_insert_with(|| crate::lock::holder::same_process(p, None))
            });
            if dead || fs::symlink_metadata(&path).is_ok_and(|m| now - m.mtime() > STALE_TEMP_SECS)
            {
                let _ = fs::remove_file(&path);
            }
        }
    }
}
