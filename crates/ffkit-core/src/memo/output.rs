//! `cache-run --output PATH`: the files a command produces, stored with its
//! entry and restored on a hit (docs/cache-run.md, "Outputs").
//!
//! - The store: `.store/` in the cache dir holds content-addressed blobs,
//!   `.store/XX/REST` where `XXREST` is the BLAKE3 hex of the content (plus
//!   `x` for an executable file: a blob's mode is `0444`, or `0555` with
//!   `x`, so `--link` keeps the execute bit). One file per content however
//!   many entries use it; written to `.store/.tmp-*` and renamed into place
//!   under the cache lock, so a crash never leaves half a blob under a
//!   final name.
//! - The walk ([`walk`]): by directory descriptors from the working
//!   directory down, each node stat'ed and opened by its name in its
//!   directory's descriptor and checked to be the inode stat'ed, so a
//!   directory swapped for a symlink while stored is never followed.
//! - The manifest: one JSON blob per run (paths, kinds, modes, mtimes, blob
//!   names, symlink targets verbatim, hard-link groups), named in the
//!   entry's header (`outputs`), so an entry and its outputs are one commit.
//! - Accounting: a blob's bytes count in the index when it is renamed into
//!   place and stop counting when it is swept ([`sweep`]), both through
//!   [`Cache::store_change`] (crash-safe: an interrupted change leaves an
//!   empty journal, i.e. "walk"); the walk counts the store too.
//! - Mark and sweep: under an exclusive `flock` of `.store/.gc-lock`, which
//!   every store (from its first blob look-up to its entry's commit) and
//!   every restore hold shared; a sweep that finds it busy is skipped and
//!   left to the next one.
//! - Restore: each tree is built aside (a `.ffkit-restore-*` sibling of the
//!   path, same directory, same file system) and swapped in with
//!   `renameat2(RENAME_EXCHANGE)`, so the path holds the old tree or the
//!   new one, never half of either; the old one is then removed. Where the
//!   exchange is refused (FUSE, NFS: EINVAL) it is two plain renames under
//!   the directory's lock ([`swap_in_two_steps`]). A large
//!   tree's files are made by a bounded pool of threads ([`workers`]), a
//!   directory at a time, after the whole manifest was checked.
//!   A file under [`clone_from`] bytes (16 KiB; every file on btrfs) is copied (one read, one write);
//!   a larger one is cloned (FICLONE) where the file system can.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirEntryExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::cache::scan::{STORE_DIR, is_fan_dir};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::lock::{Kind as LockKind, Wait, kernel};

/// Held shared by stores and restores, exclusive by a sweep.
const GC_LOCK: &str = ".gc-lock";
/// The prefix of a tree being built beside its path.
const RESTORE_PREFIX: &str = ".ffkit-restore-";
/// The manifest format.
const VERSION: u32 = 1;

/// The `--output` paths of a call and how to restore them.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub paths: Vec<PathBuf>,
    /// Restore by hard links to the store's blobs (`--link`).
    pub link: bool,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// What a run stored: one tree (or file, or symlink) per `--output` path.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub ffkit_outputs: u32,
    pub roots: Vec<Root>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Root {
    /// The path as given (relative to the working directory).
    pub path: String,
    /// Pre-order: a directory before what it holds; `nodes[0]` (`p == ""`)
    /// is the path itself.
    pub nodes: Vec<Node>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Node {
    /// Relative to the root, `/`-separated; `""` for the root.
    pub p: String,
    #[serde(flatten)]
    pub kind: Kind,
    /// Modification time: seconds and nanoseconds.
    pub mtime: i64,
    pub nsec: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum Kind {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        size: u64,
        blob: String,
    },
    /// A hard link to the file at node index `to` of the same root.
    Hardlink {
        to: usize,
    },
    /// Stored verbatim, never followed.
    Symlink {
        target: String,
    },
}

/// Checks `--output` paths before anything runs: relative, inside the
/// working directory (no `..`, not `.` itself), not through a symlink, no
/// name of a restore's temp tree (`.ffkit-restore-*`), and none inside
/// another nor given twice. [`Error::Validation`] (exit 2) otherwise.
pub fn check_paths(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        check_path(p)?;
    }
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            let (na, nb) = (normal(a), normal(b));
            // Named as given: `x` and `./x` are one path, spelled twice.
            let how = if na == nb {
                "name the same path"
            } else if na.starts_with(&nb) || nb.starts_with(&na) {
                "overlap (one holds the other)"
            } else {
                continue;
            };
            return Err(Error::Validation(format!(
                "--output {} and --output {} {how}",
                a.display(),
                b.display()
            )));
        }
    }
    Ok(())
}

/// [`check_paths`], and no path holds the cache dir `c` or lies inside it:
/// a restore swaps a path's tree out and removes it (`cd ~; cache-run
/// --output .cache` would remove the whole cache, every entry with it), and
/// a store would walk the cache's own files, its temp blobs included. By
/// real paths: the working directory's (as `getcwd` gives it) joined with
/// the path, whose directories are no symlinks, against the cache dir's
/// with its symlinks resolved. [`Error::Validation`] (exit 2) otherwise.
pub fn check_paths_in(c: &Cache, paths: &[PathBuf]) -> Result<()> {
    check_paths(paths)?;
    let cwd = std::env::current_dir()
        .map_err(|e| Error::io("cannot read the working directory", Path::new("."), e))?;
    let cache = real_path(&cwd.join(c.dir()));
    let within = Within::new(c.dir());
    for p in paths {
        let at = cwd.join(normal(p));
        let how = if cache.starts_with(&at) {
            "holds"
        } else if at.starts_with(&cache) || within.as_ref().is_some_and(|w| w.holds(&at)) {
            "is inside"
        } else {
            continue;
        };
        return Err(Error::Validation(format!(
            "--output {}: {how} the cache dir {}",
            p.display(),
            c.dir().display()
        )));
    }
    Ok(())
}

/// The cache dir by identity, for paths that reach it through a bind
/// mount, where real paths differ (`mount --bind ~/.cache/ffkit cw` then
/// `--output cw/.store`: a hit would swap the store out and remove it).
struct Within {
    /// The cache dir's device and inode.
    id: (u64, u64),
    /// The inodes of the directories in it and in `.store/` (the fans),
    /// listed only once a bind mount of its device is on the way.
    dirs: OnceLock<HashSet<u64>>,
    dir: PathBuf,
}

impl Within {
    fn new(dir: &Path) -> Option<Within> {
        let m = fs::metadata(dir).ok()?;
        Some(Within {
            id: (m.dev(), m.ino()),
            dirs: OnceLock::new(),
            dir: dir.to_path_buf(),
        })
    }

    /// Whether the absolute `at` lies inside the cache dir (or is it) by
    /// what its directories are, not what they are named: one of them is
    /// the cache dir (a bind mount of it or of a directory above it), or
    /// is the root of a mount of the cache's device that shows a directory
    /// of the cache (a bind mount of `.store`, `.cache-run` or a fan).
    fn holds(&self, at: &Path) -> bool {
        let mut a = at;
        loop {
            // `/` is a mount root of its own: never a bind mount's view.
            let Some(parent) = a.parent() else {
                return false;
            };
            if let Ok(x) = Stat::of(a) {
                if (x.dev, x.ino) == self.id {
                    return true;
                }
                if x.dev == self.id.0 && x.mount_root == Some(true) && self.dirs().contains(&x.ino)
                {
                    return true;
                }
            }
            a = parent;
        }
    }

    fn dirs(&self) -> &HashSet<u64> {
        self.dirs.get_or_init(|| {
            let mut dirs = HashSet::new();
            let mut list = |d: &Path| {
                for de in fs::read_dir(d).into_iter().flatten().flatten() {
                    if de.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.insert(de.ino());
                    }
                }
            };
            list(&self.dir);
            list(&self.dir.join(STORE_DIR));
            dirs
        })
    }
}

/// The absolute `p` with its symlinks resolved as far as it exists (the
/// rest as named: a cache dir not made yet).
fn real_path(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = p;
    loop {
        if let Ok(r) = fs::canonicalize(at) {
            return rest.iter().rev().fold(r, |acc, name| acc.join(name));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                at = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// The path without `.` components.
fn normal(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

fn check_path(p: &Path) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Validation(format!(
            "--output {}: {why}",
            p.display()
        )))
    };
    if p.as_os_str().is_empty() {
        return bad("empty");
    }
    if p.is_absolute() {
        return bad("must be relative to the working directory");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return bad("must not contain '..'");
    }
    // `components()` drops a `.` inside or at the end (`out/.`, `d/./`),
    // but the name given is what a restore swaps: a `.` there can never
    // be exchanged (EBUSY), so every hit would fail. A leading `./` is
    // harmless (`./node_modules`).
    let raw = p.as_os_str().as_encoded_bytes();
    if raw
        .split(|&b| b == b'/')
        .skip_while(|c| *c == b".")
        .any(|c| c == b".")
    {
        return bad("must not contain '.' (but at the start)");
    }
    let n = normal(p);
    if n.as_os_str().is_empty() {
        return bad("must name something inside the working directory");
    }
    // A restore's temp names: a tree of that name beside a restored path
    // is taken for a killed restore's and removed (with the output in it).
    if n.iter()
        .any(|c| c.as_encoded_bytes().starts_with(RESTORE_PREFIX.as_bytes()))
    {
        return bad(&format!(
            "a name starting with {RESTORE_PREFIX} is a restore's temp name"
        ));
    }
    if n.to_str().is_none() {
        return bad("not UTF-8");
    }
    // Every directory on the way must be a real one (or not exist yet);
    // with a trailing slash the last name is one of them too (`via/`
    // resolves through a symlink `via`).
    let mut at = PathBuf::new();
    let parts: Vec<_> = n.components().collect();
    let dirs = if raw.ends_with(b"/") {
        &parts[..]
    } else {
        &parts[..parts.len() - 1]
    };
    for c in dirs {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return bad(&format!("{} is a symlink", at.display()));
            }
            Ok(m) if !m.is_dir() => return bad(&format!("{} is not a directory", at.display())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::io("cannot stat", &at, e)),
        }
    }
    Ok(())
}

fn store_dir(c: &Cache) -> PathBuf {
    c.dir().join(STORE_DIR)
}

/// The blob's path, for a name this module could have made (a manifest
/// is data: a name that could leave `.store/` is damage).
fn blob_path(store: &Path, name: &str) -> Option<PathBuf> {
    let hex = name.strip_suffix('x').unwrap_or(name);
    let ok = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    ok.then(|| store.join(&name[..2]).join(&name[2..]))
}

/// How [`gc_lock`] takes `.store/.gc-lock`. No wait is without bound
/// (`LOCK_TIMEOUT`): a stopped sweep, store or restore (SIGSTOP, a
/// debugger) must not hang every other call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Shared, waiting until the deadline (sweeps are short), then
    /// [`Error::Timeout`]: a store or a restore.
    Shared(Wait),
    /// Exclusive, only tried (`None` when busy): a sweep after a write.
    Try,
    /// Exclusive, waiting until the deadline (`None` then: the sweep is
    /// skipped): eviction's sweep.
    Wait(Wait),
}

fn gc_lock(store: &Path, how: Lock) -> Result<Option<File>> {
    // Nothing in the cache dir is used through a symlink: a store written
    // through one would be counted by nobody and swept by nobody.
    if fs::symlink_metadata(store).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Permission(format!(
            "{}: a symlink; the output store is never used through one",
            store.display()
        )));
    }
    let path = store.join(GC_LOCK);
    let mut cleared = false;
    let f = loop {
        break match fsutil::open_rw_create(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fsutil::create_private_dir(store)?;
                fsutil::open_rw_create(&path).map_err(|e| Error::io("cannot open", &path, e))?
            }
            // A read-only cache (a read-only mount): a store or sweep fails
            // later on its own, but a restore or a dry run only reads. The
            // lock is taken on a read-only descriptor (flock needs no write
            // access), so a sweep through a writable view of the same files
            // still waits for it; with no lock file nothing ever stored here.
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                match fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&path)
                {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io("cannot open", &path, e)),
                }
            }
            // A symlink, directory or FIFO at its name (put there by hand)
            // is no lock anybody holds (this one is a regular file, opened
            // only as one): it goes, never followed, and the lock file is
            // made again. Before, every `--output` hit failed with exit 3
            // and every eviction with 3 or 1, so the cache was never
            // trimmed again.
            Err(_) if !cleared && clear_non_regular(&path) => {
                cleared = true;
                continue;
            }
            // A file (or FIFO) in the place of `.store` itself: every
            // `--output` hit failed with exit 4 (`Not a directory`) and
            // every store was not cached. It holds no blob (the size walk
            // counts none there): it goes, and the store is made again.
            Err(e)
                if !cleared
                    && e.raw_os_error() == Some(libc::ENOTDIR)
                    && fs::symlink_metadata(store).is_ok_and(|m| !m.is_dir())
                    && fs::remove_file(store).is_ok() =>
            {
                cleared = true;
                continue;
            }
            Err(e) => return Err(Error::io("cannot open", &path, e)),
        };
    };
    let (kind, until) = match how {
        Lock::Shared(w) => (LockKind::Shared, w),
        Lock::Try => (LockKind::Exclusive, Wait::NonBlocking),
        Lock::Wait(w) => (LockKind::Exclusive, w),
    };
    let start = std::time::Instant::now();
    if wait_lock(&f, kind, until, &path)? {
        return Ok(Some(f));
    }
    match how {
        Lock::Shared(_) => Err(Error::Timeout(format!(
            "output store {}: still held by a sweep after {:.1} s (LOCK_TIMEOUT); it may be stopped",
            path.display(),
            start.elapsed().as_secs_f64()
        ))),
        Lock::Try | Lock::Wait(_) => Ok(None),
    }
}

/// Removes what is at `path` if it is not a regular file (a symlink itself,
/// not its target; a directory with its content, never entering a mount);
/// whether it did.
fn clear_non_regular(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => remove_tree(path),
        Ok(m) if !m.is_file() => fs::remove_file(path).is_ok(),
        _ => false,
    }
}

/// Takes `kind` on `f`, waiting until `until`; `false` when it passed first.
fn wait_lock(f: &File, kind: LockKind, until: Wait, path: &Path) -> Result<bool> {
    use std::os::fd::AsRawFd;
    kernel::flock_until(f.as_raw_fd(), kind, until).map_err(|e| Error::io("cannot lock", path, e))
}

/// A stored set of outputs whose entry is not written yet: holds the store
/// shared (no sweep can take its blobs) until dropped after the entry's
/// commit.
pub struct Stored {
    /// The manifest's blob name, for the entry's header.
    pub manifest: String,
    _gc: Option<File>,
}

/// A blob written to a temp file, waiting for its rename.
struct NewBlob {
    tmp: PathBuf,
    name: String,
}

/// Temp blobs not renamed into place are removed when this goes.
struct Pending(Vec<NewBlob>);

impl Drop for Pending {
    fn drop(&mut self) {
        for b in &self.0 {
            let _ = fs::remove_file(&b.tmp);
        }
    }
}

/// Stores the trees at `paths` (after a successful run) and returns the
/// manifest's name with the store held. `Err` says why not (the run is then
/// not cached): a FIFO, socket or device in a tree, a name that is not
/// UTF-8, a path missing, an I/O error.
pub fn store(c: &Cache, paths: &[PathBuf]) -> Result<Stored> {
    check_paths(paths)?;
    let store = store_dir(c);
    let gc = gc_lock(&store, Lock::Shared(c.lock_deadline()))?;
    let odd = odd_fans(&store);
    let mut pending = Pending(Vec::new());
    let mut names = HashSet::new();
    let mut roots = Vec::new();
    for p in paths {
        let nodes = walk(p, &store, &odd, &mut pending, &mut names)?;
        roots.push(Root {
            path: normal(p).to_string_lossy().into_owned(),
            nodes,
        });
    }
    let m = Manifest {
        ffkit_outputs: VERSION,
        roots,
    };
    let bytes = serde_json::to_vec(&m)
        .map_err(|e| Error::General(format!("cannot encode the output manifest: {e}")))?;
    let manifest = blake3::hash(&bytes).to_hex().to_string();
    if !names.contains(&manifest) && !blob_exists(&store, &odd, &manifest, bytes.len() as u64) {
        let (tmp, _) = fsutil::write_temp(&store, &bytes)?;
        set_mode(&tmp, 0o444)?;
        pending.0.push(NewBlob {
            tmp,
            name: manifest.clone(),
        });
    }
    if pending.0.is_empty() {
        // Every blob was there already: no change to count.
        return Ok(Stored { manifest, _gc: gc });
    }
    c.store_change(|| {
        let mut added = 0i64;
        let mut repaired = false;
        for b in &pending.0 {
            let Some(dest) = blob_path(&store, &b.name) else {
                continue;
            };
            // Measured now: the bytes the walk will find.
            let size = fs::symlink_metadata(&b.tmp)
                .map_err(|e| Error::io("cannot stat", &b.tmp, e))?
                .len();
            if let Some(parent) = dest.parent() {
                // Anything but a directory at the fan's name, put there by
                // hand: a file failed every store of the fan's blobs and
                // every restore of them (exit 4); a symlink to a directory
                // elsewhere led this rename there, and the removal of a
                // directory at the blob's name below (a store wrote and
                // deleted outside the cache). It goes (the link, never
                // what it points to) before the blob's name is looked at;
                // the index is recounted. One `lstat` per blob: a fan that
                // is a directory needs nothing more.
                match fs::symlink_metadata(parent) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(parent)
                            .map_err(|e| Error::io("cannot remove", parent, e))?;
                        repaired = true;
                        fsutil::create_private_dir(parent)?;
                    }
                    Err(_) => fsutil::create_private_dir(parent)?,
                }
            }
            match fs::symlink_metadata(&dest) {
                // Stored meanwhile by another run: ours goes.
                Ok(m) if is_blob(&m, &b.name, size) => continue,
                // Damaged by hand (cut short, grown, replaced, its mode
                // changed): ours replaces it, and the index is recounted.
                // A directory in its place is removed first (a rename
                // cannot replace one): it failed every store of the content.
                Ok(m) => {
                    repaired = true;
                    if m.is_dir() && !remove_tree(&dest) {
                        return Err(Error::io(
                            "cannot remove",
                            &dest,
                            io::Error::other("a directory in the blob's place"),
                        ));
                    }
                }
                Err(_) => added += size as i64,
            }
            fs::rename(&b.tmp, &dest).map_err(|e| Error::io("cannot install", &dest, e))?;
        }
        Ok((!repaired).then_some(added))
    })?;
    drop(pending);
    Ok(Stored { manifest, _gc: gc })
}

/// Whether the store has blob `name` whole: a file of the `len` bytes its
/// content has, with a blob's mode (a blob damaged by hand is stored
/// again, not trusted), in a fan directory that is one (not in `odd`).
fn blob_exists(store: &Path, odd: &HashSet<String>, name: &str, len: u64) -> bool {
    blob_path(store, name).is_some_and(|p| {
        !odd.contains(&name[..2]) && fs::symlink_metadata(p).is_ok_and(|m| is_blob(&m, name, len))
    })
}

/// The fan names of `.store` (`XX`) that something other than a directory
/// holds: a symlink (to a directory elsewhere: a blob "found" there would
/// be used through it), a file. One listing per store, not a `stat` per
/// file; their blobs are stored again, and the store replaces them
/// ([`store`]).
fn odd_fans(store: &Path) -> HashSet<String> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = fs::read_dir(store) else {
        return HashSet::new();
    };
    rd.flatten()
        .filter(|de| is_fan_dir(de.file_name().as_bytes()))
        .filter(|de| !de.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|de| de.file_name().into_string().ok())
        .collect()
}

/// Whether the fan directory of blob `name` (checked by [`blob_path`]) is
/// not a directory of its own: a symlink, a file. Its blobs are damage to a
/// restore, never read through it (`None` when it is one, or missing).
fn odd_fan(store: &Path, name: &str) -> Option<String> {
    let fan = store.join(name.get(..2)?);
    fs::symlink_metadata(&fan)
        .is_ok_and(|m| !m.is_dir())
        .then(|| format!("{} is not a directory", fan.display()))
}

/// A blob's mode: read-only, executable for a name ending in `x`.
fn blob_mode(name: &str) -> u32 {
    if name.ends_with('x') { 0o555 } else { 0o444 }
}

/// Whether `m` is blob `name` as a store leaves it: a regular file of `len`
/// bytes with [`blob_mode`]. A file a `--link` restore made is the blob, so
/// its user's `chmod` changes the blob's mode: `u+w` unguards every later
/// `--link` restore of that content, `000` makes it unreadable to every
/// copy restore (it failed them all with exit 3).
fn is_blob(m: &fs::Metadata, name: &str, len: u64) -> bool {
    m.is_file() && m.len() == len && m.mode() & 0o7777 == blob_mode(name)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot chmod", p, e))
}

/// What the walk needs of a path's `statx` (one call per node, as
/// `symlink_metadata` makes, but with the mount-root attribute).
struct Stat {
    mode: u32,
    dev: u64,
    ino: u64,
    nlink: u32,
    size: u64,
    /// 512-byte blocks allocated: fewer than the size takes means holes.
    blocks: u64,
    mtime: i64,
    nsec: u32,
    /// The root of a mount (`STATX_ATTR_MOUNT_ROOT`); `None` when the
    /// kernel cannot tell (before Linux 5.8).
    mount_root: Option<bool>,
}

impl Stat {
    /// `p` from the working directory, not following a last symlink.
    fn of(p: &Path) -> io::Result<Stat> {
        Stat::at(rustix::fs::CWD, p)
    }

    /// `name` in the directory `dir`, not following a symlink there.
    fn at<P: rustix::path::Arg>(dir: BorrowedFd<'_>, name: P) -> io::Result<Stat> {
        Stat::statx(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
    }

    /// What the descriptor `fd` is open on.
    fn of_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
        Stat::statx(fd, "", rustix::fs::AtFlags::EMPTY_PATH)
    }

    fn statx<P: rustix::path::Arg>(
        dir: BorrowedFd<'_>,
        name: P,
        flags: rustix::fs::AtFlags,
    ) -> io::Result<Stat> {
        use rustix::fs::{StatxAttributes, StatxFlags};
        let x = rustix::fs::statx(dir, name, flags, StatxFlags::BASIC_STATS)?;
        let root = StatxAttributes::MOUNT_ROOT;
        Ok(Stat {
            mode: x.stx_mode.into(),
            dev: libc::makedev(x.stx_dev_major, x.stx_dev_minor),
            ino: x.stx_ino,
            nlink: x.stx_nlink,
            size: x.stx_size,
            blocks: x.stx_blocks,
            mtime: x.stx_mtime.tv_sec,
            nsec: x.stx_mtime.tv_nsec,
            mount_root: x
                .stx_attributes_mask
                .contains(root)
                .then(|| x.stx_attributes.contains(root)),
        })
    }

    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// A file or directory of an output that is no longer the one the walk
/// stat'ed (rewritten, grown, or its name given to another object: a
/// directory swapped for a symlink): the run is not cached.
fn changed(path: &Path) -> Error {
    Error::General(format!("{}: changed while it was stored", path.display()))
}

/// Opens `name` in `dir` (`flags`, never following a symlink): a symlink
/// (or a non-directory where `O_DIRECTORY` asks for one) at a name the
/// walk stat'ed as something else is [`changed`]. `what` words any other
/// error. The caller checks that it got the inode it stat'ed.
fn open_at(
    dir: BorrowedFd<'_>,
    name: &str,
    flags: rustix::fs::OFlags,
    path: &Path,
    what: &'static str,
) -> Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    let flags = flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::LOOP | Errno::NOTDIR) => Err(changed(path)),
        Err(e) => Err(Error::io(what, path, e.into())),
    }
}

/// A directory of the walk whose children are still to be walked: held
/// open so that they are stat'ed and opened in it, never by a path that a
/// symlink put in place meanwhile would lead elsewhere.
struct Level {
    fd: OwnedFd,
    path: PathBuf,
    rel: String,
    dev: u64,
    /// Its children's names, the smallest last (popped first).
    names: Vec<String>,
}

/// The walk of one output: its nodes so far and where new blobs go.
struct Walk<'a> {
    root: &'a Path,
    store: &'a Path,
    /// [`odd_fans`].
    odd: &'a HashSet<String>,
    pending: &'a mut Pending,
    names: &'a mut HashSet<String>,
    nodes: Vec<Node>,
    /// Files with more than one link, by (device, inode): their first node.
    inodes: HashMap<(u64, u64), usize>,
    /// What the copies of new blobs learnt is refused: the store on another
    /// file system than the tree pays one refused call of each kind.
    copying: Copying,
}

/// Walks one output (never following a symlink, never entering a mount),
/// writing the blobs the store lacks to temp files.
///
/// By descriptors: the directory holding the output is opened from the
/// working directory one name at a time (`O_NOFOLLOW`: a symlink put on
/// the way is refused), and every node is stat'ed, opened or read by its
/// name in its directory's descriptor, each opened directory and file
/// checked to be the inode stat'ed. So a directory swapped for a symlink
/// while the tree is stored (a process the command left behind, another
/// user in a world-writable directory of the tree) is never listed or
/// read where the link points: the directory is stored as it was when
/// opened, or the run is not cached ([`changed`]). One
/// descriptor per level of the current path at most (a directory's goes
/// when its last child is opened); a tree deeper than the descriptor
/// limit fails with EMFILE, and the run is not cached.
///
/// A mount point anywhere in the tree, the path itself included, is
/// refused (the run is not cached), like a FIFO: its files are another
/// file system's (a bind mount of the cache dir into the tree would store
/// the cache's own files, temp blobs included), a restore could never put
/// them back (it never enters nor replaces a mount: the old tree would be
/// left behind at every hit), and skipping it as `tar --one-file-system`
/// does would make the restored tree silently differ from the one stored.
/// Known by `STATX_ATTR_MOUNT_ROOT` (a bind mount of the same file system
/// has the same device); a kernel without it (before 5.8): a directory on
/// another device than its parent's.
fn walk(
    root: &Path,
    store: &Path,
    odd: &HashSet<String>,
    pending: &mut Pending,
    names: &mut HashSet<String>,
) -> Result<Vec<Node>> {
    let mut w = Walk {
        root,
        store,
        odd,
        pending,
        names,
        nodes: Vec::new(),
        inodes: HashMap::new(),
        copying: Copying::new(),
    };
    // `check_paths` made sure of both.
    let n = normal(root);
    let parts: Option<Vec<&str>> = n.iter().map(|c| c.to_str()).collect();
    let Some((leaf, dirs)) = parts.as_deref().and_then(|p| p.split_last()) else {
        return Err(Error::Validation(format!(
            "--output {}: not a UTF-8 name inside the working directory",
            root.display()
        )));
    };
    // The directories on the way (`a/b` of `a/b/out`), by descriptors.
    let mut parent: Option<OwnedFd> = None;
    let mut at = PathBuf::new();
    for d in dirs {
        use rustix::fs::{Mode, OFlags};
        at.push(d);
        let from = parent.as_ref().map_or(rustix::fs::CWD, |f| f.as_fd());
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        parent = Some(match rustix::fs::openat(from, *d, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Err(not_there(root)),
            Err(e) => return Err(Error::io("cannot open", &at, e.into())),
        });
    }
    let mut levels = Vec::new();
    let from = parent.as_ref().map_or(rustix::fs::CWD, |f| f.as_fd());
    if let Some(l) = w.node(from, leaf, root.to_path_buf(), String::new(), None)? {
        levels.push(l);
    }
    drop(parent);
    while let Some(top) = levels.last_mut() {
        let Some(name) = top.names.pop() else {
            levels.pop();
            continue;
        };
        let path = top.path.join(&name);
        let rel = if top.rel.is_empty() {
            name.clone()
        } else {
            format!("{}/{name}", top.rel)
        };
        let dev = top.dev;
        // Its last child: the directory's descriptor goes once that child
        // is opened (a chain of single directories holds two at most).
        let done = if top.names.is_empty() {
            levels.pop()
        } else {
            None
        };
        let Some(dir) = done.as_ref().or(levels.last()) else {
            break;
        };
        let next = w.node(dir.fd.as_fd(), &name, path, rel, Some(dev))?;
        drop(done);
        if let Some(l) = next {
            levels.push(l);
        }
    }
    Ok(w.nodes)
}

fn not_there(root: &Path) -> Error {
    Error::General(format!(
        "--output {}: not there after the command",
        root.display()
    ))
}

impl Walk<'_> {
    /// Stores node `name` of directory `dir` (`path` from the working
    /// directory, `rel` from the root; `parent_dev`: `dir`'s device, `None`
    /// for the root), and returns a directory's [`Level`] to walk next.
    fn node(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: PathBuf,
        rel: String,
        parent_dev: Option<u64>,
    ) -> Result<Option<Level>> {
        use rustix::fs::OFlags;
        let root = self.root;
        let m = match Stat::at(dir, name) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && rel.is_empty() => {
                return Err(not_there(root));
            }
            Err(e) => return Err(Error::io("cannot stat", &path, e)),
        };
        let is_dir = m.kind() == libc::S_IFDIR;
        // A name the walk could stat but a restore could not make beside
        // the path (by names from the working directory), under its
        // longer temp name.
        let len = restore_name_len(root, &rel);
        if len >= libc::PATH_MAX as usize {
            return Err(Error::General(format!(
                "{}: a path too long to restore ({len} bytes with the restore's temp name; the limit is {})",
                path.display(),
                libc::PATH_MAX - 1
            )));
        }
        let mount = m.mount_root.unwrap_or_else(|| {
            // The path itself: its parent is looked at only here.
            let parent_dev = parent_dev.or_else(|| Stat::of_fd(dir).ok().map(|p| p.dev));
            is_dir && parent_dev.is_some_and(|d| d != m.dev)
        });
        if mount {
            return Err(Error::General(format!(
                "{}: a mount point cannot be stored",
                path.display()
            )));
        }
        let (mtime, nsec) = (m.mtime, m.nsec);
        let mut level = None;
        let kind = if is_dir {
            let fd = open_at(dir, name, OFlags::DIRECTORY, &path, "cannot list")?;
            // The directory stat'ed, not one renamed to its name since:
            // listed before anything of it is looked at.
            let now = Stat::of_fd(fd.as_fd()).map_err(|e| Error::io("cannot stat", &path, e))?;
            if now.id() != m.id() {
                return Err(changed(&path));
            }
            let mut names = list(fd.as_fd(), &path)?;
            // Pre-order, by name: the smallest is popped first.
            names.sort_by(|a, b| b.cmp(a));
            level = Some(Level {
                fd,
                path: path.clone(),
                rel: rel.clone(),
                dev: m.dev,
                names,
            });
            Kind::Dir {
                mode: m.mode & 0o7777,
            }
        } else if m.kind() == libc::S_IFLNK {
            let t = match rustix::fs::readlinkat(dir, name, Vec::new()) {
                Ok(t) => t,
                // No longer a symlink (a directory swapped back in).
                Err(rustix::io::Errno::INVAL) => return Err(changed(&path)),
                Err(e) => return Err(Error::io("cannot read link", &path, e.into())),
            };
            let Ok(target) = t.into_string() else {
                return Err(Error::General(format!(
                    "{}: a symlink target that is not UTF-8 cannot be stored",
                    path.display()
                )));
            };
            Kind::Symlink { target }
        } else if m.kind() == libc::S_IFREG {
            let id = m.id();
            match self.inodes.get(&id) {
                Some(&to) if m.nlink > 1 => Kind::Hardlink { to },
                _ => {
                    if m.nlink > 1 {
                        self.inodes.insert(id, self.nodes.len());
                    }
                    let f = open_at(dir, name, OFlags::NONBLOCK, &path, "cannot open")?;
                    // The size is the bytes hashed, not the stat's: a
                    // file that changed in between is still one record.
                    let (blob, size) = put_blob(File::from(f), &m, &path, self)?;
                    Kind::File {
                        mode: m.mode & 0o7777,
                        size,
                        blob,
                    }
                }
            }
        } else {
            let what = match m.kind() {
                libc::S_IFIFO => "a FIFO",
                libc::S_IFSOCK => "a socket",
                _ => "a device",
            };
            return Err(Error::General(format!(
                "{}: {what} cannot be stored",
                path.display()
            )));
        };
        self.nodes.push(Node {
            p: rel,
            kind,
            mtime,
            nsec,
        });
        Ok(level)
    }
}

/// The names in the directory open at `dir` (`path` for messages), all
/// UTF-8 or an error naming the first that is not.
fn list(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<String>> {
    use std::os::unix::ffi::OsStrExt;
    let entries = entries(dir).map_err(|e| Error::io("cannot list", path, e.into()))?;
    entries
        .into_iter()
        .map(|(n, _)| {
            n.into_string().map_err(|e| {
                let n = e.into_cstring();
                Error::General(format!(
                    "{}: a name that is not UTF-8 cannot be stored",
                    path.join(std::ffi::OsStr::from_bytes(n.as_bytes()))
                        .display()
                ))
            })
        })
        .collect()
}

/// The entries of the directory open at `dir` but `.` and `..`, with the
/// types `getdents64` gives (`Unknown` where the file system gives none),
/// read through one 32 KiB buffer, as `readdir(3)` reads: a directory of a
/// few hundred names in one `getdents64`, and no descriptor dup'd. The
/// store's walk and the removal of a replaced tree both list this way.
fn entries(
    dir: BorrowedFd<'_>,
) -> rustix::io::Result<Vec<(std::ffi::CString, rustix::fs::FileType)>> {
    let mut names = Vec::new();
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut rd = rustix::fs::RawDir::new(dir, buf.spare_capacity_mut());
    while let Some(e) = rd.next() {
        let e = e?;
        let n = e.file_name();
        if n != c"." && n != c".." {
            names.push((n.to_owned(), e.file_type()));
        }
    }
    Ok(names)
}

/// Hashes a regular file (open at `f` by the name the walk stat'ed as `m`;
/// `path` names it in messages) and, if the store lacks its blob, copies
/// it to a temp file there (a clone where the file system can). Returns
/// the name and the bytes hashed. Another inode than `m`'s (a file renamed
/// over the name since its `statx`) is refused once hashed, before
/// anything is stored: one `statx` of the descriptor checks both that and
/// the length. A new blob is hashed again from its temp file: a
/// file that changed between the hash and the copy (a process the command
/// left behind still writing it) is refused, never stored under the name
/// of bytes it no longer holds (every entry naming that content would
/// restore the copy's bytes).
fn put_blob(f: File, m: &Stat, path: &Path, w: &mut Walk<'_>) -> Result<(String, u64)> {
    let (mode, store) = (m.mode, w.store);
    let (hash, len) =
        hash_file(&f, Some((m.size, m.blocks))).map_err(|e| Error::io("cannot read", path, e))?;
    // A file still appended to (a process the command left behind) has
    // grown past the bytes hashed: a copy of `len` bytes would match its
    // hash and store a truncated snapshot silently. One fstat after the
    // hash, and one after the copy, catch the growth (and another inode).
    let grown =
        |f: &File| Stat::of_fd(f.as_fd()).map_or(true, |now| now.size != len || now.id() != m.id());
    if grown(&f) {
        return Err(changed(path));
    }
    let mut name = hash.to_hex().to_string();
    let exec = mode & 0o111 != 0;
    if exec {
        name.push('x');
    }
    if w.names.contains(&name) || blob_exists(store, w.odd, &name, len) {
        return Ok((name, len));
    }
    let (tmp, t) = fsutil::create_temp(store)?;
    let blob = NewBlob {
        tmp,
        name: name.clone(),
    };
    let tmp = blob.tmp.clone();
    w.pending.0.push(blob);
    // The hashed descriptor is the source: the clone and the copies take
    // explicit offsets, so its position at the end does not matter.
    clone_or_copy(&f, &t, len, &w.copying).map_err(|e| Error::io("cannot write", &tmp, e))?;
    // Read back through the same descriptor (the temp is open for reading
    // too; the copy moved no file position): the bytes the blob will hold.
    // The copy has the source's holes (or none, which reading finds too):
    // its blocks need no fstat.
    let (copied_hash, copied) =
        hash_file(&t, Some((len, m.blocks))).map_err(|e| Error::io("cannot read", &tmp, e))?;
    drop(t);
    if copied != len || copied_hash != hash || grown(&f) {
        return Err(changed(path));
    }
    set_mode(&tmp, if exec { 0o555 } else { 0o444 })?;
    w.names.insert(name.clone());
    Ok((name, len))
}

/// Zeros to hash a hole with.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The BLAKE3 hash of `f` from offset 0 to its end, and how many bytes that
/// is (read at explicit offsets: its position does not matter). Only its
/// data is read: a hole (`SEEK_DATA`/`SEEK_HOLE`) is hashed as zeros from
/// memory. Reading a hole makes the kernel zero a page cache page per 4 KiB
/// of it, so a 1 GiB sparse file of a few blocks cost its store 5 s of
/// system time (it was read twice: the file, then its new blob) and 2 GiB
/// of page cache; now it is hashed in a fraction of a second.
/// Bytes appended meanwhile are read too (what is there at the end of the
/// file), so the caller's check of the length against an `fstat` holds.
/// `stat`: its size and 512-byte blocks as the caller saw them (else one
/// `fstat`); a file with a block for every byte has no hole to look for,
/// so the usual file costs no `lseek`.
fn hash_file(f: &File, stat: Option<(u64, u64)>) -> io::Result<(blake3::Hash, u64)> {
    use rustix::fs::SeekFrom;
    use std::os::unix::fs::FileExt;
    let (size, blocks) = match stat {
        Some(s) => s,
        None => {
            let m = f.metadata()?;
            (m.len(), m.blocks())
        }
    };
    let mut h = blake3::Hasher::new();
    let mut buf = vec![
        0u8;
        usize::try_from(size.saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(128 * 1024)
    ];
    // Bytes `at..end` (to the end of the file for `None`) read into the
    // hash; where the file ends first, the bytes it had.
    let mut read = |h: &mut blake3::Hasher, mut at: u64, end: Option<u64>| -> io::Result<u64> {
        while end.is_none_or(|e| at < e) {
            let want = end.map_or(buf.len(), |e| {
                usize::try_from(e - at).unwrap_or(usize::MAX).min(buf.len())
            });
            match f.read_at(&mut buf[..want], at) {
                Ok(0) => break,
                Ok(n) => {
                    h.update(&buf[..n]);
                    at += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(at)
    };
    let zeros = |h: &mut blake3::Hasher, mut n: u64| {
        while n > 0 {
            let k = usize::try_from(n).unwrap_or(usize::MAX).min(ZEROS.len());
            h.update(&ZEROS[..k]);
            n -= k as u64;
        }
    };
    // The first hole: at the end (or beyond) for a file without holes, the
    // common case, read in one pass. A file system that cannot tell
    // (EINVAL) has none.
    let hole = if blocks.saturating_mul(512) >= size {
        size
    } else {
        match rustix::fs::seek(f, SeekFrom::Hole(0)) {
            Ok(h) => h,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        }
    };
    if hole >= size {
        let n = read(&mut h, 0, None)?;
        return Ok((h.finalize(), n));
    }
    let mut pos = 0;
    while pos < size {
        let data = match rustix::fs::seek(f, SeekFrom::Data(pos)) {
            Ok(d) => d.min(size),
            // Only a hole is left.
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        zeros(&mut h, data - pos);
        if data >= size {
            pos = size;
            break;
        }
        let end = rustix::fs::seek(f, SeekFrom::Hole(data))?.min(size);
        let got = read(&mut h, data, Some(end))?;
        pos = got;
        if got < end {
            // Cut short meanwhile: what it holds is what was read.
            return Ok((h.finalize(), got));
        }
    }
    // Anything appended meanwhile, as a plain read would see it.
    let n = read(&mut h, pos, None)?;
    Ok((h.finalize(), n))
}

/// What the copies of one tree (a restore's, shared by its threads, or a
/// store's) learnt the file systems refuse: each starts true and turns
/// false at the first refusal, so a tree pays one refused call of each
/// kind, not one per file.
struct Copying {
    /// `FICLONE` (no clones on this file system, or the store on another).
    clones: AtomicBool,
    /// `copy_file_range`: EXDEV between file systems of different types
    /// (since Linux 5.19: the cache dir on ext4, the working directory on a
    /// tmpfs), EOPNOTSUPP, ENOSYS (before 4.5), EINVAL where a file system
    /// cannot do it; each file was then tried again, then read and written.
    ranges: AtomicBool,
}

impl Copying {
    fn new() -> Copying {
        Copying {
            clones: AtomicBool::new(true),
            ranges: AtomicBool::new(true),
        }
    }
}

/// Copies the `len` bytes of `src` (at offset 0) into the empty `dst`:
/// FICLONE (a shared extent, copy-on-write) while the file system takes it,
/// else `copy_file_range` (itself a clone or an in-kernel copy) while that
/// is taken, else reads and writes ([`Copying`]). A copy keeps the holes of a sparse file
/// (`SEEK_DATA`/`SEEK_HOLE`): `copy_file_range` writes a hole's zeros on
/// most file systems (ext4), so a 1 GiB file of a few blocks would take
/// 1 GiB in the store and again in every restored tree.
fn clone_or_copy(src: &File, dst: &File, len: u64, how: &Copying) -> io::Result<()> {
    use rustix::fs::SeekFrom;
    let clones = &how.clones;
    if clones.load(Ordering::Relaxed) {
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::BADF => return Err(e.into()),
            Err(_) => clones.store(false, Ordering::Relaxed),
        }
    }
    // The first hole: at `len` or beyond (the end of the file is one) for
    // a file without holes, the common case, copied in one range. A file
    // system that cannot tell (EINVAL) has none.
    let hole = match rustix::fs::seek(src, SeekFrom::Hole(0)) {
        Ok(h) => h,
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NXIO) => len,
        Err(e) => return Err(e.into()),
    };
    if hole >= len {
        return copy_range(src, dst, 0, len, &how.ranges);
    }
    // Holes, or a file shorter than its record (its end is a hole too).
    if src.metadata()?.len() < len {
        return Err(shorter());
    }
    let mut pos = 0;
    while pos < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // Only a hole is left.
            Err(rustix::io::Errno::NXIO) => len,
            Err(e) => return Err(e.into()),
        };
        if data >= len {
            break;
        }
        let end = rustix::fs::seek(src, SeekFrom::Hole(data))?.min(len);
        copy_range(src, dst, data, end - data, &how.ranges)?;
        pos = end;
    }
    // A hole at the end: the length without blocks.
    dst.set_len(len)
}

/// The blob shrank under us: the caller checked its size, so this is
/// damage, not a short file to pass as good.
fn shorter() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the blob is shorter than its record",
    )
}

/// Copies bytes `start..start + n` of `src` to the same offsets of `dst`
/// (`copy_file_range` at explicit offsets while `ranges` holds, else reads
/// and writes; neither file's position moves).
fn copy_range(src: &File, dst: &File, start: u64, n: u64, ranges: &AtomicBool) -> io::Result<()> {
    let end = start + n;
    let (mut at_in, mut at_out) = (start, start);
    while at_in < end && ranges.load(Ordering::Relaxed) {
        let chunk = usize::try_from(end - at_in)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut at_in), dst, Some(&mut at_out), chunk) {
            Ok(0) => return Err(shorter()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            // No in-kernel copy here (an old kernel, across file systems):
            // read and write, this file and the rest of the tree.
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::OPNOTSUPP,
            ) => ranges.store(false, Ordering::Relaxed),
            Err(e) => return Err(e.into()),
        }
    }
    copy_by_reads(src, dst, at_in, end)
}

/// Bytes `at..end` of `src` to the same offsets of `dst`, read and written
/// through a buffer (`pread`/`pwrite`: neither file's position moves).
fn copy_by_reads(src: &File, dst: &File, mut at: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    if at >= end {
        return Ok(());
    }
    let mut buf = vec![
        0u8;
        usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(128 * 1024)
    ];
    while at < end {
        let want = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let got = match src.read_at(&mut buf[..want], at) {
            Ok(0) => return Err(shorter()),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all_at(&buf[..got], at)?;
        at += got as u64;
    }
    Ok(())
}

/// Restores the outputs of manifest `name` at `out.paths`; `Ok(Ok(left))`
/// names the old trees that could not be removed once swapped out (an
/// immutable file in them), left where they are. `Ok(Err(why))`:
/// the stored outputs are damaged (a missing or wrong-sized blob, a bad
/// manifest) and nothing was changed at the paths: the caller treats it as
/// a miss. `Err`: the restore itself failed (a path that cannot be written).
pub fn restore(
    c: &Cache,
    name: &str,
    out: &Outputs,
) -> Result<std::result::Result<Vec<PathBuf>, String>> {
    // A restore that fails, or finds a miss, changes nothing: the parent
    // directories it made for the paths (`--output p/q/out` with no `p`)
    // go again, deepest first, when still empty. Before, a hit failing
    // with EMFILE (exit 1) left `p/q` behind.
    let made = missing_parents(&out.paths);
    let r = restore_in(c, name, out);
    if !matches!(r, Ok(Ok(_))) {
        for d in &made {
            let _ = fs::remove_dir(d);
        }
    }
    r
}

/// The directories on the way to `paths` that do not exist yet (which a
/// restore makes), deepest first.
fn missing_parents(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut made: Vec<PathBuf> = Vec::new();
    for p in paths {
        let mut d = parent_of(p);
        while d != Path::new(".")
            && !d.as_os_str().is_empty()
            && fs::symlink_metadata(&d).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        {
            if !made.contains(&d) {
                made.push(d.clone());
            }
            match d.parent() {
                Some(up) => d = up.to_path_buf(),
                None => break,
            }
        }
    }
    made.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    made
}

/// [`restore`] itself.
fn restore_in(
    c: &Cache,
    name: &str,
    out: &Outputs,
) -> Result<std::result::Result<Vec<PathBuf>, String>> {
    check_paths(&out.paths)?;
    let store = store_dir(c);
    let until = c.lock_deadline();
    let _gc = gc_lock(&store, Lock::Shared(until))?;
    // One restore at a time into a directory (any key, any process): the
    // lock of the directory that holds each path, until every tree is in.
    let _dirs = lock_parents(&out.paths, until)?;
    let Some(mpath) = blob_path(&store, name) else {
        return Ok(Err(format!("bad manifest name {name}")));
    };
    // A fan directory replaced by a symlink (to a copy of the store
    // elsewhere) or a file is damage: no blob is read or linked through
    // it (the store that follows the miss puts a directory in its place).
    if let Some(why) = odd_fan(&store, name) {
        return Ok(Err(why));
    }
    // Like every blob a restore reads: without touching its atime.
    let bytes = match fsutil::open_read_noatime_meta(&mpath).and_then(|(mut f, m)| {
        let mut b = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(0));
        f.read_to_end(&mut b).map(|_| b)
    }) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Err("the output manifest is gone".into()));
        }
        // A symlink, directory or FIFO in its place (a dedup tool that
        // replaces duplicates with symlinks): damage, which the miss's
        // store replaces, not a failure of every hit.
        Err(e) if fsutil::is_refused(&e) => {
            return Ok(Err("the output manifest is not a regular file".into()));
        }
        Err(e) => return Err(Error::io("cannot read", &mpath, e)),
    };
    if blake3::hash(&bytes).to_hex().as_str() != name {
        return Ok(Err("the output manifest is damaged".into()));
    }
    let m: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("the output manifest is damaged: {e}"))),
    };
    if m.ffkit_outputs != VERSION || m.roots.len() != out.paths.len() {
        return Ok(Err("the output manifest does not fit".into()));
    }
    // The fans of its blobs, each looked at once (at most 256 `lstat`s).
    let mut fans = HashSet::new();
    for n in m.roots.iter().flat_map(|r| &r.nodes) {
        if let Kind::File { blob, .. } = &n.kind
            && blob_path(&store, blob).is_some()
            && fans.insert(&blob[..2])
            && let Some(why) = odd_fan(&store, blob)
        {
            return Ok(Err(why));
        }
    }
    // A path that is a mount point now (a volume mounted at
    // `node_modules` after the entry was stored) cannot be swapped
    // (EBUSY): every hit failed with exit 1. It is a miss instead, before
    // anything is built; the run that follows is not stored either (a
    // mount point is never stored), so each call runs the command, as
    // without a cache.
    if let Some(p) = out.paths.iter().find(|p| is_mount_root(p)) {
        return Ok(Err(format!("{}: a mount point; not restored", p.display())));
    }
    // Build every tree aside first; swap them in only when all are whole.
    let mut built = Vec::new();
    for (root, path) in m.roots.iter().zip(&out.paths) {
        if root.path != normal(path).to_string_lossy() {
            discard_all(&built);
            return Ok(Err("the output manifest names other paths".into()));
        }
        match build(&store, root, path, out.link) {
            Ok(Ok(tmp)) => built.push((tmp, path.clone())),
            Ok(Err(why)) => {
                discard_all(&built);
                return Ok(Err(why));
            }
            Err(e) => {
                discard_all(&built);
                return Err(e);
            }
        }
    }
    let mut left = Vec::new();
    for (i, (tmp, path)) in built.iter().enumerate() {
        match swap_in(tmp, path) {
            Ok(trees) => left.extend(trees),
            Err(e) => {
                discard_all(&built[i..]);
                return Err(e);
            }
        }
    }
    Ok(Ok(left))
}

fn discard_all(built: &[(PathBuf, PathBuf)]) {
    for (tmp, _) in built {
        remove_tree(tmp);
    }
}

/// The directory that holds `path` (`.` for a name in the working one).
fn parent_of(path: &Path) -> PathBuf {
    let path = normal(path);
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether `p` is the root of a mount (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8;
/// `false` where the kernel cannot tell: the swap then fails with EBUSY).
fn is_mount_root(p: &Path) -> bool {
    Stat::of(p).is_ok_and(|m| m.mount_root == Some(true))
}

/// The longest name a restore may give a node of the tree at `path`,
/// relative to the working directory as every restore's path is: its temp
/// tree's name (`DIR/.ffkit-restore-PID-SEQ`, with the most digits a pid
/// and a sequence number can have), `/`, the node's relative name. A
/// restore makes directories, hard links and the old tree's removal by
/// such names, and the kernel refuses one of `PATH_MAX` bytes or more
/// (ENAMETOOLONG): a tree stored with longer ones would fail every hit.
fn restore_name_len(path: &Path, rel: &str) -> usize {
    const DIGITS: usize = 10 + 1 + 20;
    let parent = parent_of(path).as_os_str().len();
    parent + 1 + RESTORE_PREFIX.len() + DIGITS + 1 + rel.len()
}

/// `mkdir -p DIR`: each directory it makes gets its owner's read, write
/// and search bits whatever the umask, as POSIX `mkdir -p` gives the
/// intermediate directories it makes write and search (read too here: a
/// restore opens the directory to lock it and lists it for the trees of
/// killed restores). Under `umask 0277` or `0777` a
/// directory made with the umask's mode (`dr--------`, `d---------`) could
/// not be entered nor written, so a restore into `p/q/out` without `p`
/// failed every hit with exit 3 (`cannot create p/q: Permission denied`)
/// where the command's own `mkdir -p p/q/out` works.
fn make_parents(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(up) = dir.parent() {
        make_parents(up)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            let m = fs::symlink_metadata(dir)?;
            if m.mode() & 0o700 != 0o700 {
                fs::set_permissions(dir, fs::Permissions::from_mode(m.mode() & 0o7777 | 0o700))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes an exclusive `flock` of the directory holding each path (made if
/// missing), in one order (device, inode) so that two restores of
/// overlapping sets never wait for each other in a circle. Two spellings of
/// one directory are one lock: the kernel locks the inode. Released when
/// the files are dropped.
/// Waits at most until `until` (`LOCK_TIMEOUT`), then [`Error::Timeout`].
fn lock_parents(paths: &[PathBuf], until: Wait) -> Result<Vec<File>> {
    let mut dirs: Vec<((u64, u64), PathBuf, File)> = Vec::new();
    for p in paths {
        let parent = parent_of(p);
        make_parents(&parent).map_err(|e| Error::io("cannot create", &parent, e))?;
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&parent)
            .map_err(|e| Error::io("cannot open", &parent, e))?;
        let m = f
            .metadata()
            .map_err(|e| Error::io("cannot stat", &parent, e))?;
        let id = (m.dev(), m.ino());
        if !dirs.iter().any(|(d, _, _)| *d == id) {
            dirs.push((id, parent, f));
        }
    }
    dirs.sort_by_key(|(id, _, _)| *id);
    let mut held = Vec::with_capacity(dirs.len());
    for (_, parent, f) in dirs {
        let start = std::time::Instant::now();
        if !wait_lock(&f, LockKind::Exclusive, until, &parent)? {
            return Err(Error::Timeout(format!(
                "restore into {}: the directory is still locked by another process after {:.1} s (LOCK_TIMEOUT)",
                parent.display(),
                start.elapsed().as_secs_f64()
            )));
        }
        held.push(f);
    }
    Ok(held)
}

/// Builds one root beside `path`; returns where.
fn build(
    store: &Path,
    root: &Root,
    path: &Path,
    link: bool,
) -> Result<std::result::Result<PathBuf, String>> {
    let parent = parent_of(path);
    make_parents(&parent).map_err(|e| Error::io("cannot create", &parent, e))?;
    remove_dead_builds(&parent);
    // Nothing is built unless a file can be made and what was built can
    // be removed again: under `ulimit -n 8` a restore built the tree's
    // directories, failed at its first file (EMFILE) and could not remove
    // them, leaving a `.ffkit-restore-*` tree beside the path at each hit.
    descriptors_free(BUILD_FDS).map_err(|e| Error::io("cannot restore", path, e))?;
    // `.ffkit-restore-PID-N`: the temp name's pid and sequence number.
    let tmp = restore_temp(&parent);
    match build_at(store, root, &tmp, link) {
        Ok(Ok(())) => Ok(Ok(tmp)),
        other => {
            remove_tree(&tmp);
            other.map(|r| r.map(|()| tmp.clone()))
        }
    }
}

/// Descriptors a restore needs free to make any file (the directory's,
/// the blob's and the new file's); removing a tree it built needs two (the
/// top's and one level's: [`remove_dir_at`] moves what is deeper up).
const BUILD_FDS: usize = 3;

/// Whether `n` more descriptors can be opened now: opened (`/`, `O_PATH`)
/// and closed again. EMFILE or ENFILE otherwise. A restore opens its
/// descriptors from the calling thread until its pool starts, so what is
/// free here is free when the build starts, and again when a failed build
/// has closed what it opened and removes its tree.
fn descriptors_free(n: usize) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(rustix::fs::open(
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
    }
    Ok(())
}

/// Threads that make a tree's files: two per CPU this process may use,
/// at most [`MAX_WORKERS`]. A restore waits on the file system per file
/// (the create, the copy and the close wait on the journal and on
/// allocation, not on a CPU), so a second thread per core overlaps those
/// waits, where `cp -a` makes one file after another. More than two per
/// core made it slower: on a quiet 2-core machine a 30,000-file restore on
/// XFS took 0.42-0.48 s with 4 threads against 0.69-0.71 s with 8, and the
/// floor of a per-file restore (`scripts/ref_restore.c`) was as fast with
/// 2 to 4 threads and half again slower from 5 on, with 4 or 8 allocation
/// groups alike; pinned to one core, 2 threads were best and 8 worst
/// (BENCHMARKS.md, "cache-run --output on a quiet machine"). On ext4
/// 4 and 8 were alike. Bounded, so one restore never floods a big machine.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_mul(2)
        .min(MAX_WORKERS)
}
/// The most threads one restore uses, whatever the machine.
const MAX_WORKERS: usize = 8;
/// Descriptors one thread making files holds at once: the directory's,
/// the blob's and the new file's, and one to spare.
const FDS_PER_WORKER: usize = 4;

/// The threads of a restore's pool ([`workers`]): as many as `free`
/// descriptors ([`free_fds`]) can serve, and at least the calling one.
/// Under `ulimit -n 16`, or with all but a dozen of 1024 descriptors
/// inherited from the caller, a pool of four threads or more took the
/// descriptors its files needed and the hit failed with EMFILE (exit 1),
/// where fewer threads restore the tree.
fn pool_size(free: usize) -> usize {
    workers().min(free / FDS_PER_WORKER).max(1)
}

/// How many more descriptors this process may open under the limit
/// `nofile`: the limit less the open ones numbered below it (listed in
/// `/proc/self/fd`, the listing's own included). Without /proc, the limit
/// less the lowest free number (an open of `dir`), as every number below
/// that is taken; numbers above it may be taken too, so it can say more
/// than there is. A failing open says none.
fn free_fds(dir: &Path, nofile: usize) -> usize {
    use std::os::fd::AsRawFd;
    if let Ok(rd) = fs::read_dir("/proc/self/fd") {
        let open = rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
            .filter(|&n| n < nofile)
            .count();
        return nofile.saturating_sub(open);
    }
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => nofile.saturating_sub(usize::try_from(fd.as_raw_fd()).unwrap_or(usize::MAX)),
        Err(_) => 0,
    }
}
/// A tree of fewer files is made by the calling thread alone: starting
/// threads would cost more than they overlap.
const PARALLEL_FROM: usize = 512;
/// Files of fewer bytes are restored by a copy (one read of the blob, one
/// write), never cloned. On XFS a FICLONE is a transaction that updates the
/// refcount btree: measured on an XFS reflink loop image, a clone cost
/// ~20 µs of system time per file whatever its size, a copy ~11 µs up to
/// 8 KiB, ~18 µs at 16 KiB and ~33 µs at 64 KiB (BENCHMARKS.md, "cache-run
/// --output"). Below this size most of a `node_modules` lies (~8 KiB on
/// average); above it a clone also saves the data's space and its
/// write-back.
const CLONE_FROM: u64 = 16 * 1024;

/// The size from which a file in the tree at `dir` is cloned: every file
/// with content on btrfs, where a clone of a small file (an inline extent
/// copied in the b-tree) is cheaper than writing it — the floor of a
/// per-file restore (`scripts/ref_restore.c`) took 0.59-0.63 s on a btrfs
/// loop image when it cloned every file against 1.07-1.12 s when it wrote
/// those under 16 KiB (BENCHMARKS.md, "cache-run --output on a quiet
/// machine") — else [`CLONE_FROM`].
fn clone_from(dir: &Path) -> u64 {
    const BTRFS_SUPER_MAGIC: u64 = 0x9123_683e;
    match rustix::fs::statfs(dir) {
        #[allow(clippy::unnecessary_cast)] // f_type's type differs by libc
        Ok(st) if st.f_type as u64 == BTRFS_SUPER_MAGIC => 1,
        _ => CLONE_FROM,
    }
}

/// Why making part of a tree stopped: damage in the store or the manifest
/// (the hit is a miss), or an error of the restore itself.
enum Fail {
    Damaged(String),
    Err(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Err(e)
    }
}

/// A root's nodes sorted by what makes them, every one checked against the
/// manifest's rules before anything is written.
struct Plan {
    /// Directory nodes, pre-order (a parent before what it holds).
    dirs: Vec<usize>,
    /// File and symlink nodes, by the directory node that holds them; only
    /// directories that hold any.
    groups: Vec<(usize, Vec<usize>)>,
    /// Hard-link nodes: made once every file is.
    links: Vec<usize>,
    /// Regular files in `groups`.
    files: usize,
}

/// Checks a root's nodes: `nodes[0]` is the path itself, and every other
/// node is a plain name inside a directory node before it, so a manifest
/// (data) never leads a write through a symlink or out of the tree; a hard
/// link names a file before it.
fn plan(root: &Root) -> std::result::Result<Plan, String> {
    let mut plan = Plan {
        dirs: Vec::new(),
        groups: Vec::new(),
        links: Vec::new(),
        files: 0,
    };
    // A directory's relative path -> its slot in `groups`.
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, n) in root.nodes.iter().enumerate() {
        let bad = || format!("bad node {:?}", n.p);
        let slot = if i == 0 {
            if !n.p.is_empty() {
                return Err(bad());
            }
            None
        } else {
            let (parent, leaf) = n.p.rsplit_once('/').unwrap_or(("", &n.p));
            if leaf.is_empty() || leaf == "." || leaf == ".." {
                return Err(bad());
            }
            Some(*at.get(parent).ok_or_else(bad)?)
        };
        match &n.kind {
            Kind::Dir { .. } => {
                at.insert(&n.p, plan.groups.len());
                plan.groups.push((i, Vec::new()));
                plan.dirs.push(i);
            }
            Kind::File { .. } | Kind::Symlink { .. } => {
                if matches!(n.kind, Kind::File { .. }) {
                    plan.files += 1;
                }
                // The path itself as a file or symlink: made alone, first.
                if let Some(g) = slot {
                    plan.groups[g].1.push(i);
                }
            }
            Kind::Hardlink { to } => match root.nodes.get(*to) {
                Some(f) if *to < i && i > 0 && matches!(f.kind, Kind::File { .. }) => {
                    plan.links.push(i)
                }
                _ => return Err(format!("bad hard link {:?}", n.p)),
            },
        }
    }
    plan.groups.retain(|(_, nodes)| !nodes.is_empty());
    Ok(plan)
}

/// Where node `n` of a root goes when the root is built at `tmp`.
fn dest_of(tmp: &Path, n: &Node) -> PathBuf {
    if n.p.is_empty() {
        tmp.to_path_buf()
    } else {
        tmp.join(&n.p)
    }
}

fn build_at(
    store: &Path,
    root: &Root,
    tmp: &Path,
    link: bool,
) -> Result<std::result::Result<(), String>> {
    let damaged = |why: String| Ok(Err(format!("stored output {}: {why}", root.path)));
    let mut plan = match plan(root) {
        Ok(p) => p,
        Err(why) => return damaged(why),
    };
    let run = |r: std::result::Result<usize, Fail>| match r {
        Ok(_) => Ok(Ok(())),
        Err(Fail::Damaged(why)) => damaged(why),
        Err(Fail::Err(e)) => Err(e),
    };
    // The path itself as a file or symlink.
    if let Some(n) = root.nodes.first()
        && !matches!(n.kind, Kind::Dir { .. })
    {
        let parent = match tmp.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let limit = nofile();
        let maker = Maker::new(store, root, link, parent, limit, limit);
        let leaf = tmp.file_name().unwrap_or_default();
        return run(maker.make_group(parent, &[(0, leaf)], &mut Vec::new()));
    }
    // Directories, parents first.
    for &i in &plan.dirs {
        let dest = dest_of(tmp, &root.nodes[i]);
        // 0700 whatever the umask while it is filled (a `umask 0777` made
        // it `d---------`, and nothing could be made in it); its own mode
        // is set last.
        fsutil::create_owned_dir(&dest).map_err(|e| Error::io("cannot create", &dest, e))?;
    }
    // Counted once, before any fan is kept: what the fans and the pool
    // share.
    let limit = nofile();
    let free = free_fds(tmp, limit);
    let maker = Maker::new(store, root, link, tmp, limit, free);
    // Files and symlinks, a directory at a time. The directory of the
    // first file that would be cloned goes first, made by the calling
    // thread alone: it shows whether this file system clones, so a tree
    // without clones pays one refused FICLONE, not one per thread. Then a
    // pool.
    let probe = (!link)
        .then(|| {
            plan.groups
                .iter()
                .position(|(_, nodes)| nodes.iter().any(|&i| maker.clones_size(&root.nodes[i])))
        })
        .flatten();
    if let Some(p) = probe {
        plan.groups.swap(0, p);
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<Fail>> = Mutex::new(None);
    let work = |only_one: bool| {
        // Each thread's buffer for the files it copies.
        let mut buf = Vec::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Some((d, nodes)) = plan.groups.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            let dir = dest_of(tmp, &root.nodes[*d]);
            let leaves: Vec<(usize, &std::ffi::OsStr)> = nodes
                .iter()
                .map(|&i| {
                    let p = root.nodes[i].p.as_str();
                    (i, std::ffi::OsStr::new(p.rsplit('/').next().unwrap_or(p)))
                })
                .collect();
            if let Err(f) = maker.make_group(&dir, &leaves, &mut buf) {
                stop.store(true, Ordering::Relaxed);
                if let Ok(mut first) = failed.lock() {
                    first.get_or_insert(f);
                }
                break;
            }
            if only_one {
                break;
            }
        }
    };
    if probe.is_some() {
        work(true);
    }
    if plan.files >= PARALLEL_FROM {
        std::thread::scope(|s| {
            for _ in 1..pool_size(free) {
                // A worker that cannot start (memory under `ulimit -v`, a
                // thread limit) leaves its share to the others; std's
                // `spawn` panicked there.
                let _ = std::thread::Builder::new()
                    .stack_size(super::capture::THREAD_STACK)
                    .spawn_scoped(s, || work(false));
            }
            work(false);
        });
    } else {
        work(false);
    }
    if let Some(f) = failed.into_inner().ok().flatten() {
        return run(Err(f));
    }
    // Hard links, to the files made above.
    for &i in &plan.links {
        let n = &root.nodes[i];
        if let Kind::Hardlink { to } = n.kind {
            let dest = dest_of(tmp, n);
            let first = dest_of(tmp, &root.nodes[to]);
            match fs::hard_link(&first, &dest) {
                Ok(()) => {}
                // With `--link` the group's first file is its blob, which
                // may have all the names its file system allows, or be one
                // the kernel refuses to link (EPERM): this one is a copy of
                // it, with the group's mode and mtime, and the first file
                // becomes a name of that copy, so the members after this
                // one link to it too: the group stays one file, as a copy
                // restore makes it. (Before, each member was a copy of its
                // own: a group of three with one name left on its blob was
                // three files.) The blob keeps its other names.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMLINK | libc::EPERM)) => {
                    let mode = match root.nodes[to].kind {
                        Kind::File { mode, .. } => mode,
                        _ => fsutil::FILE_MODE,
                    };
                    copy_of(&first, &dest, mode, n)
                        .map_err(|e| Error::io("cannot write", &dest, e))?;
                    fs::remove_file(&first)
                        .and_then(|()| fs::hard_link(&dest, &first))
                        .map_err(|e| Error::io("cannot link", &first, e))?;
                }
                Err(e) => return Err(Error::io("cannot link", &dest, e)),
            }
        }
    }
    // Directories last, deepest first: their modes (maybe read-only) and
    // mtimes, which making their content changed.
    for &i in plan.dirs.iter().rev() {
        let n = &root.nodes[i];
        let dest = dest_of(tmp, n);
        if let Kind::Dir { mode } = n.kind {
            set_mode(&dest, mode)?;
        }
        set_mtime(&dest, n.mtime, n.nsec)
            .map_err(|e| Error::io("cannot set the time of", &dest, e))?;
    }
    Ok(Ok(()))
}

/// Makes `dest` a copy of `src` (a file just restored) with `mode` and
/// node `n`'s mtime: the member of a hard-link group that cannot be one
/// more name of its file (EMLINK), which the group's other names then
/// link to.
fn copy_of(src: &Path, dest: &Path, mode: u32, n: &Node) -> io::Result<()> {
    let mut from = File::open(src)?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(fsutil::FILE_MODE)
        .open(dest)?;
    io::copy(&mut from, &mut to)?;
    rustix::fs::fchmod(&to, rustix::fs::Mode::from_raw_mode(mode))?;
    rustix::fs::futimens(&to, &mtime_only(n.mtime, n.nsec))?;
    Ok(())
}

/// What the threads making one root's files share.
struct Maker<'a> {
    store: &'a Path,
    root: &'a Root,
    link: bool,
    /// What this tree's copies learnt is refused ([`Copying`]).
    copying: Copying,
    /// Files of this size or more are cloned ([`clone_from`]).
    clone_from: u64,
    /// The process's umask, when known and when nothing else decides the
    /// mode of a new file in the tree (no default ACL): a file whose mode
    /// survives it is created with that mode, no `fchmod`.
    umask: Option<u32>,
    /// The store's fan directories (`.store/XX`), each opened once per
    /// root: a blob is opened by its name in one, not by a path walked
    /// from the root of the file system. `None`: it could not be opened,
    /// or there was no room left to keep it ([`fan_room`]); the blob is
    /// then opened by its path (whose error says why).
    fans: Vec<OnceLock<Option<OwnedFd>>>,
    /// How many more fans may be kept open: what [`fan_room`] allows.
    room: AtomicUsize,
    /// The soft descriptor limit (`ulimit -n`).
    nofile: usize,
}

/// The soft descriptor limit (`ulimit -n`); `usize::MAX` for none.
fn nofile() -> usize {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// How many fan directories one tree's restore may keep open with `free`
/// descriptors left under the limit ([`free_fds`]: the caller's inherited
/// ones, numbered wherever the caller left them, are not free): all 256
/// where that leaves room, else half of what is left once [`FD_RESERVE`]
/// are set aside. Kept fans are an
/// optimisation (one path walk per blob saved); holding 256 under `ulimit
/// -n 64` or `200`, or beside 900 descriptors the caller left open, took
/// the descriptors the files being made need, and every hit of a tree
/// whose blobs spread over the fans failed with EMFILE. (A fan is not kept
/// either when its descriptor's number lands within the reserve of the
/// limit: descriptors are numbered lowest free first, so every number
/// below it is taken, by the caller's inherited ones too.)
fn fan_room(free: usize) -> usize {
    (free.saturating_sub(FD_RESERVE) / 2).min(256)
}
/// Descriptors a restore leaves to everything but kept fans: the caller's
/// own, the locks, and three per thread making files (the directory, the
/// blob, the new file) with [`MAX_WORKERS`] threads.
const FD_RESERVE: usize = 64;

impl<'a> Maker<'a> {
    /// `limit`: [`nofile`]; `free`: the descriptors the restore may open
    /// ([`free_fds`]; the limit itself for a single file), of which
    /// [`fan_room`] may be kept.
    fn new(
        store: &'a Path,
        root: &'a Root,
        link: bool,
        tree: &Path,
        limit: usize,
        free: usize,
    ) -> Self {
        Maker {
            store,
            root,
            link,
            copying: Copying::new(),
            clone_from: if link { CLONE_FROM } else { clone_from(tree) },
            umask: if link { None } else { creation_umask(tree) },
            fans: (0..256).map(|_| OnceLock::new()).collect(),
            room: AtomicUsize::new(fan_room(free)),
            nofile: limit,
        }
    }

    /// Whether node `n` is a file a restore would try to clone.
    fn clones_size(&self, n: &Node) -> bool {
        matches!(n.kind, Kind::File { size, .. } if size >= self.clone_from)
    }

    /// Opens blob `name` (checked by [`blob_path`]) for reading: relative to
    /// its fan directory's descriptor, without following a symlink, without
    /// touching its atime where the kernel allows it.
    fn open_blob(&self, name: &str, bp: &Path) -> io::Result<File> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fan = usize::from_str_radix(&name[..2], 16)
            .ok()
            .and_then(|i| self.fans.get(i))
            .and_then(|slot| {
                slot.get_or_init(|| {
                    // No room to keep it open: by path, below.
                    self.room
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .ok()?;
                    let fd = rustix::fs::open(
                        self.store.join(&name[..2]),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .ok()?;
                    // Every number below it is taken: too few may be
                    // left above it to keep it (closed when dropped).
                    let n =
                        usize::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap_or(usize::MAX);
                    (n.saturating_add(FD_RESERVE) < self.nofile).then_some(fd)
                })
                .as_ref()
            });
        let open = |flags| match fan {
            Some(fd) => rustix::fs::openat(fd, &name[2..], flags, Mode::empty()),
            None => rustix::fs::open(bp, flags, Mode::empty()),
        };
        match open(flags | OFlags::NOATIME) {
            Err(rustix::io::Errno::PERM) => open(flags),
            r => r,
        }
        .map(File::from)
        .map_err(io::Error::from)
    }

    /// Makes the files and symlinks `nodes` (node index, name) of the root
    /// in the directory `dir`, by names relative to one descriptor of it
    /// (no path walked per file, none followed). Returns how many regular
    /// files it made. `buf`: the thread's buffer for copies.
    ///
    /// A file below [`Maker::clone_from`] bytes: open the blob, one read (which
    /// checks its size: no fstat), create the file with its mode where the
    /// umask keeps it (no fchmod), one write, `futimens`, two closes. A
    /// larger one: open, fstat (the size), create, FICLONE or
    /// `copy_file_range`, `futimens`, closes; `fchmod` only for a mode the
    /// umask or a clone would change (set-id bits).
    fn make_group(
        &self,
        dir: &Path,
        nodes: &[(usize, &std::ffi::OsStr)],
        buf: &mut Vec<u8>,
    ) -> std::result::Result<usize, Fail> {
        use rustix::fs::{AtFlags, CWD, Mode, OFlags};
        let damaged = |why: String| Err(Fail::Damaged(why));
        let dfd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("cannot open", dir, e.into()))?;
        let mut made = 0;
        for &(i, leaf) in nodes {
            let n = &self.root.nodes[i];
            let dest = || dir.join(leaf);
            match &n.kind {
                Kind::File { mode, size, blob } => {
                    let Some(bp) = blob_path(self.store, blob) else {
                        return damaged(format!("bad blob name {blob}"));
                    };
                    if self.link {
                        // One stat, not an open: the size is all a restore checks.
                        let m = match fs::symlink_metadata(&bp) {
                            Ok(m) => m,
                            // ENOTDIR: a file in its fan directory's place.
                            Err(e)
                                if e.kind() == io::ErrorKind::NotFound
                                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
                            {
                                return damaged(format!("blob {blob} is gone"));
                            }
                            Err(e) => return Err(Error::io("cannot stat", &bp, e).into()),
                        };
                        // A symlink, directory or FIFO in its place (a
                        // dedup tool's symlink): every hit of it failed
                        // with exit 1. Damage, which the store replaces.
                        if !m.is_file() {
                            return damaged(format!("blob {blob} is not a regular file"));
                        }
                        if m.len() != *size {
                            return damaged(format!("blob {blob} has the wrong size"));
                        }
                        // Its mode changed through an earlier `--link`
                        // restore: every file linked to it would get that
                        // mode. A miss, whose store replaces it.
                        if m.mode() & 0o7777 != blob_mode(blob) {
                            return damaged(format!("blob {blob} has its mode changed"));
                        }
                        match rustix::fs::linkat(CWD, &bp, &dfd, leaf, AtFlags::empty()) {
                            Ok(()) => {
                                made += 1;
                                continue;
                            }
                            // The blob has as many names as its file system
                            // allows (65,000 on ext4): a content shared by
                            // many files, restored into many trees. Every
                            // `--link` hit of it failed with exit 1; this
                            // file is copied instead, as a copy restore
                            // makes it (its own mode and mtime). So is a
                            // blob the kernel refuses to link (EPERM: made
                            // immutable, `chattr +i`; another owner's under
                            // `fs.protected_hardlinks`), which failed every
                            // hit with exit 3.
                            Err(rustix::io::Errno::MLINK | rustix::io::Errno::PERM) => {}
                            Err(e) => return Err(Error::io("cannot link", dest(), e.into()).into()),
                        }
                    }
                    // Without O_NOATIME a day's first restore would dirty
                    // every blob's inode just to note that it was read.
                    let src = match self.open_blob(blob, &bp) {
                        Ok(f) => f,
                        // ENOTDIR: a file in its fan directory's place.
                        Err(e)
                            if e.kind() == io::ErrorKind::NotFound
                                || e.raw_os_error() == Some(libc::ENOTDIR) =>
                        {
                            return damaged(format!("blob {blob} is gone"));
                        }
                        // Its mode changed through a `--link` restore
                        // (`chmod 000` of a restored file): a miss, whose
                        // store replaces it, not a failure of every hit.
                        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                            return damaged(format!("blob {blob} cannot be read"));
                        }
                        // A symlink in its place (ELOOP: never followed).
                        Err(e) if fsutil::is_refused(&e) => {
                            return damaged(format!("blob {blob} is not a regular file"));
                        }
                        Err(e) => return Err(Error::io("cannot open", &bp, e).into()),
                    };
                    // Cloned from `clone_from` (every file on btrfs), but
                    // once the file system refused a clone (the store on
                    // another file system) a small file is read and written
                    // again, not sent through the copy's fallbacks.
                    let small = *size < self.clone_from
                        || (*size < CLONE_FROM && !self.copying.clones.load(Ordering::Relaxed));
                    if small {
                        match read_exact_len(&src, *size, buf) {
                            Ok(true) => {}
                            Ok(false) => return damaged(format!("blob {blob} has the wrong size")),
                            // A directory in its place.
                            Err(e) if fsutil::is_refused(&e) => {
                                return damaged(format!("blob {blob} is not a regular file"));
                            }
                            Err(e) => return Err(Error::io("cannot read", &bp, e).into()),
                        }
                    } else {
                        match fsutil::regular_len(&src) {
                            Ok(len) if len == *size => {}
                            Ok(_) => return damaged(format!("blob {blob} has the wrong size")),
                            Err(e) if fsutil::is_refused(&e) => {
                                return damaged(format!("blob {blob} is not a regular file"));
                            }
                            Err(e) => return Err(Error::io("cannot open", &bp, e).into()),
                        }
                    }
                    // Created with its mode where the umask keeps it (and no
                    // set-id bit, which a write or clone would clear).
                    let at_create = self
                        .umask
                        .filter(|u| mode & 0o7000 == 0 && mode & u == 0)
                        .map(|_| *mode);
                    let f = rustix::fs::openat(
                        &dfd,
                        leaf,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(at_create.unwrap_or(fsutil::FILE_MODE)),
                    )
                    .map(File::from)
                    .map_err(|e| Error::io("cannot create", dest(), e.into()))?;
                    if small {
                        // `buf` holds exactly the blob (read_exact_len).
                        write_all(&f, buf).map_err(|e| Error::io("cannot write", dest(), e))?;
                    } else {
                        clone_or_copy(&src, &f, *size, &self.copying)
                            .map_err(|e| Error::io("cannot write", dest(), e))?;
                    }
                    drop(src);
                    if at_create.is_none() {
                        rustix::fs::fchmod(&f, Mode::from_raw_mode(*mode))
                            .map_err(|e| Error::io("cannot chmod", dest(), e.into()))?;
                    }
                    // On the descriptor: no second walk of the path.
                    rustix::fs::futimens(&f, &mtime_only(n.mtime, n.nsec))
                        .map_err(|e| Error::io("cannot set the time of", dest(), e.into()))?;
                    made += 1;
                }
                Kind::Symlink { target } => {
                    rustix::fs::symlinkat(target.as_str(), &dfd, leaf)
                        .map_err(|e| Error::io("cannot create", dest(), e.into()))?;
                    let _ = rustix::fs::utimensat(
                        &dfd,
                        leaf,
                        &mtime_only(n.mtime, n.nsec),
                        AtFlags::SYMLINK_NOFOLLOW,
                    );
                }
                // Planned elsewhere.
                Kind::Dir { .. } | Kind::Hardlink { .. } => {}
            }
        }
        Ok(made)
    }
}

/// Reads all of `src` into `buf` if it holds exactly `len` bytes: `false`
/// when it holds fewer or more. A read that returns less than asked of a
/// regular file is its end, so a file of the right length takes one read
/// (asking for one byte more), not a read and an fstat. A directory fails
/// (EISDIR); a FIFO or device holds what it gives, and is damage unless that
/// is exactly the recorded content's length.
fn read_exact_len(src: &File, len: u64, buf: &mut Vec<u8>) -> io::Result<bool> {
    let Ok(len) = usize::try_from(len) else {
        return Ok(false);
    };
    buf.clear();
    buf.resize(len + 1, 0);
    let mut got = 0;
    loop {
        match rustix::io::read(src, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got > len {
                    return Ok(false);
                }
                if got == len {
                    // Short of the one byte more: the end.
                    break;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::ISDIR) => return Err(fsutil::not_regular()),
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(got);
    Ok(got == len)
}

fn write_all(f: &File, mut b: &[u8]) -> io::Result<()> {
    while !b.is_empty() {
        match rustix::io::write(f, b) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => b = &b[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The umask new files in `tree` get, when it alone decides: read from
/// `/proc/self/status` (reading it with `umask(2)` would set it, racing
/// other threads), and `None` when that is not there or `tree` has a default
/// ACL (which replaces the umask for what is made in it).
fn creation_umask(tree: &Path) -> Option<u32> {
    let mut acl = [0u8; 0];
    match rustix::fs::getxattr(tree, "system.posix_acl_default", &mut acl) {
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => {}
        _ => return None,
    }
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(v.trim(), 8).ok()
}

/// Timestamps that set the mtime, and the atime to the moment this
/// process first restored (what a node just made has anyway). Not
/// `UTIME_OMIT` for the atime: some FUSE file systems (bindfs 1.14.7,
/// measured; sshfs until libfuse/sshfs#386) take an omitted time as "now"
/// and set the mtime to the present with it: every restored mtime was lost.
fn mtime_only(sec: i64, nsec: u32) -> rustix::fs::Timestamps {
    use rustix::fs::{Timespec, UTIME_OMIT};
    static ATIME: OnceLock<Option<(i64, u32)>> = OnceLock::new();
    let at = ATIME.get_or_init(|| {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some((i64::try_from(d.as_secs()).ok()?, d.subsec_nanos()))
    });
    rustix::fs::Timestamps {
        last_access: match at {
            Some((s, n)) => Timespec {
                tv_sec: *s,
                tv_nsec: (*n).into(),
            },
            // A clock before 1970: left alone.
            None => Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec.into(),
        },
    }
}

/// Sets a path's mtime (not following a symlink); the atime is left alone.
fn set_mtime(p: &Path, sec: i64, nsec: u32) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD};
    rustix::fs::utimensat(CWD, p, &mtime_only(sec, nsec), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

/// Puts the tree at `tmp` at `path` in one step, replacing what stood there
/// (exchanged, then removed). Returns where replaced trees that could not
/// be removed (whole or in part) were left: `tmp` after an exchange,
/// another `.ffkit-restore-*` name beside it after two renames.
///
/// Where `renameat2`'s flags are refused as unsupported (FUSE file systems
/// such as bindfs or sshfs, NFS: EINVAL; ENOSYS, EOPNOTSUPP), the swap is
/// two plain renames under the directory lock the restore holds
/// ([`swap_in_two_steps`]); an absent path takes one.
fn swap_in(tmp: &Path, path: &Path) -> Result<Vec<PathBuf>> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    // A name that keeps reappearing (another process making it again and
    // again) ends the call rather than spinning.
    for _ in 0..100 {
        match renameat_with(CWD, tmp, CWD, path, RenameFlags::EXCHANGE) {
            Ok(()) => {
                // The old tree is at `tmp` now.
                return Ok(left_unless(remove_tree(tmp), tmp));
            }
            Err(Errno::NOENT) => {
                match renameat_with(CWD, tmp, CWD, path, RenameFlags::NOREPLACE) {
                    Ok(()) => return Ok(Vec::new()),
                    // Made meanwhile: exchange with it.
                    Err(Errno::EXIST) => continue,
                    Err(e) if unsupported_flags(e) => match rename_into_absent(tmp, path) {
                        Ok(true) => return Ok(Vec::new()),
                        // Made meanwhile, and not a name rename may
                        // replace: swap it out.
                        Ok(false) => match swap_in_two_steps(tmp, path)? {
                            Some(left) => return Ok(left),
                            None => continue,
                        },
                        Err(e) => return Err(Error::io("cannot rename", path, e.into())),
                    },
                    Err(e) => return Err(Error::io("cannot rename", path, e.into())),
                }
            }
            Err(e) if unsupported_flags(e) => match swap_in_two_steps(tmp, path)? {
                Some(left) => return Ok(left),
                // Gone meanwhile: the absent path's rename.
                None => continue,
            },
            Err(e) => {
                remove_tree(tmp);
                return Err(Error::io("cannot replace", path, e.into()));
            }
        }
    }
    remove_tree(tmp);
    Err(Error::io(
        "cannot replace",
        path,
        io::Error::from_raw_os_error(libc::EBUSY),
    ))
}

/// `[p]` unless `gone`: a replaced tree left behind.
fn left_unless(gone: bool, p: &Path) -> Vec<PathBuf> {
    if gone {
        Vec::new()
    } else {
        vec![p.to_path_buf()]
    }
}

/// Whether `renameat2` refused its flags as such: a file system (FUSE, NFS)
/// or kernel without `RENAME_EXCHANGE` / `RENAME_NOREPLACE`.
fn unsupported_flags(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    matches!(e, Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)
}

/// The new tree at `tmp` renamed to an absent `path` by a plain
/// `rename(2)`, where `RENAME_NOREPLACE` is refused. `false`: something
/// stands at `path` by now that rename would not replace (a non-empty
/// directory: ENOTEMPTY, EEXIST; a file where the tree is a directory or
/// the other way round: ENOTDIR, EISDIR); nothing changed. What rename
/// does replace (an empty directory or a file of the tree's kind, made
/// meanwhile) is replaced, as the exchange would have (swapped out, then
/// removed).
fn rename_into_absent(tmp: &Path, path: &Path) -> std::result::Result<bool, rustix::io::Errno> {
    use rustix::fs::{CWD, renameat};
    use rustix::io::Errno;
    match renameat(CWD, tmp, CWD, path) {
        Ok(()) => Ok(true),
        Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR | Errno::ISDIR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The swap without `RENAME_EXCHANGE`: what stands at `path` is renamed
/// aside (a fresh `.ffkit-restore-PID-N` name beside it), the new tree at
/// `tmp` renamed into its place, and the old one removed. The restore
/// holds the lock of the directory, so no other restore comes between the
/// two renames; the path holds the old tree, nothing, or the whole new
/// one at every instant. A process killed between them leaves the path
/// absent and the old tree aside, which the next restore beside it removes
/// ([`remove_dead_builds`]).
///
/// `Some(left)` as [`swap_in`]; `None`: nothing stood at `path` after all
/// (the caller renames into the absent path); the new tree is still at
/// `tmp`. On an error the old tree is put back where it can be, and the
/// new one is removed.
fn swap_in_two_steps(tmp: &Path, path: &Path) -> Result<Option<Vec<PathBuf>>> {
    use rustix::fs::{CWD, renameat};
    let Some(aside) = move_aside(path).map_err(|e| {
        remove_tree(tmp);
        Error::io("cannot replace", path, e.into())
    })?
    else {
        return Ok(None);
    };
    // The path is absent now; the old tree is at `aside`.
    let mut others = Vec::<PathBuf>::new();
    let fail = |e: rustix::io::Errno, others: &[PathBuf]| {
        // The old tree back (a plain rename: the path is absent unless
        // made meanwhile, then the old tree stays aside).
        let _ = renameat(CWD, &aside, CWD, path);
        remove_tree(tmp);
        for o in others {
            remove_tree(o);
        }
        Error::io("cannot replace", path, e.into())
    };
    for _ in 0..100 {
        match rename_into_absent(tmp, path) {
            Ok(true) => {
                let mut left = left_unless(remove_tree(&aside), &aside);
                for o in &others {
                    left.extend(left_unless(remove_tree(o), o));
                }
                return Ok(Some(left));
            }
            // Made again meanwhile (not by a restore: this one holds the
            // directory's lock): out of the way too, removed with the old.
            Ok(false) => match move_aside(path) {
                Ok(Some(o)) => others.push(o),
                Ok(None) => {}
                Err(e) => return Err(fail(e, &others)),
            },
            Err(e) => return Err(fail(e, &others)),
        }
    }
    Err(fail(rustix::io::Errno::BUSY, &others))
}

/// Renames what stands at `path` to a fresh `.ffkit-restore-PID-N` name
/// beside it (a plain rename: a stale name of an earlier process with our
/// pid that rename would not replace is skipped for the next); where to.
/// `None`: nothing stands at `path`.
fn move_aside(path: &Path) -> std::result::Result<Option<PathBuf>, rustix::io::Errno> {
    use rustix::fs::{CWD, renameat};
    use rustix::io::Errno;
    let parent = parent_of(path);
    for _ in 0..100 {
        let aside = restore_temp(&parent);
        match renameat(CWD, path, CWD, &aside) {
            Ok(()) => return Ok(Some(aside)),
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR | Errno::ISDIR) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EXIST)
}

/// A fresh `.ffkit-restore-PID-N` name in `parent`: the shape a killed
/// restore's tree is removed by ([`remove_dead_builds`]).
fn restore_temp(parent: &Path) -> PathBuf {
    parent.join(format!(
        "{RESTORE_PREFIX}{}",
        fsutil::temp_path(Path::new(""))
            .to_string_lossy()
            .trim_start_matches(fsutil::TEMP_PREFIX)
    ))
}

/// Removes a file or a whole tree (never following a symlink, never
/// entering another mount), making directories without their owner's
/// `rwx` accessible first where needed. Best effort; whether nothing is
/// left at `p`.
///
/// A directory that is a mount point (a bind mount of the user's data into
/// the tree a restore replaced) holds another file system's files, not the
/// tree's: it is left, with the directories above it, so the tree is left
/// behind. `std::fs::remove_dir_all` would empty it, and the chmod a
/// read-only tree needs would change it.
///
/// Every directory is opened by its name in its parent's descriptor
/// (`O_NOFOLLOW`), looked at, changed and emptied through its own
/// descriptor, and what it holds is removed by name in it: no path longer
/// than one name is ever resolved, so a tree deeper than `PATH_MAX` (a
/// user's, swapped out by a restore) goes too, and a directory renamed or
/// replaced by a symlink while the tree is removed (a world-writable
/// directory in the tree) never leads the removal or its chmod elsewhere.
///
/// One descriptor is held per level of the path being emptied; where the
/// next level cannot be opened for want of descriptors (`ulimit -n`:
/// EMFILE, ENFILE) that directory is moved, by a rename between the two
/// descriptors held, up into the top directory of the tree, and the top is
/// listed again once the rest is gone: a chain deeper than the descriptor
/// limit (which the store takes with two) goes whole, in passes.
fn remove_tree(p: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD};
    use rustix::io::Errno;
    match rustix::fs::unlinkat(CWD, p, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => true,
        // A directory (EISDIR from Linux's unlink).
        Err(Errno::ISDIR | Errno::PERM) => remove_dir_at(CWD, p, None, None) == Removal::Gone,
        Err(_) => false,
    }
}

/// What [`remove_dir_at`] did with a directory.
#[derive(PartialEq)]
enum Removal {
    /// Emptied and removed.
    Gone,
    /// Left (or part of it): a mount inside, an immutable file, an error.
    Left,
    /// Not opened for want of descriptors (EMFILE, ENFILE): untouched.
    NoDescriptor,
}

/// The top directory of a tree [`remove_tree`] removes, into which a
/// directory too deep to open is moved ([`Removal::NoDescriptor`]), and
/// whether one was since its last listing.
struct Top<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    moved: std::cell::Cell<bool>,
    next: std::cell::Cell<u64>,
}

impl Top<'_> {
    /// Moves directory `name` of `dir` into the top under a fresh name
    /// (never over a name already there); whether it moved. Same tree,
    /// same file system: a mount point stays (EBUSY, EXDEV), left.
    ///
    /// Where `RENAME_NOREPLACE` is refused as unsupported (FUSE, NFS) the
    /// move is a plain rename, which replaces an empty directory of that
    /// name and refuses the rest (ENOTEMPTY, EEXIST, ENOTDIR): the name is
    /// in the top of the tree being removed, so nothing of anyone else's
    /// is lost, and a refused name is skipped for the next.
    fn take(&self, dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::CStr) -> bool {
        use rustix::fs::{RenameFlags, renameat_with};
        use rustix::io::Errno;
        let mut flags = RenameFlags::NOREPLACE;
        for _ in 0..1000 {
            let n = self.next.get();
            self.next.set(n + 1);
            let to = format!(".ffkit-deep-{n}");
            match renameat_with(dir, name, self.fd, to.as_str(), flags) {
                Ok(()) => {
                    self.moved.set(true);
                    return true;
                }
                Err(Errno::EXIST | Errno::NOTEMPTY | Errno::NOTDIR) => {}
                Err(e) if !flags.is_empty() && unsupported_flags(e) => {
                    flags = RenameFlags::empty();
                    // This name again, plainly.
                    self.next.set(n);
                }
                Err(_) => return false,
            }
        }
        false
    }
}

/// Empties and removes directory `name` in `dir` (whose device is
/// `parent_dev`; `None` for the top, judged by its mount flag alone), as
/// [`remove_tree`]; whether it is gone.
fn remove_dir_at<P: rustix::path::Arg + Copy>(
    dir: std::os::fd::BorrowedFd<'_>,
    name: P,
    parent_dev: Option<u64>,
    top: Option<&Top<'_>>,
) -> Removal {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxAttributes, StatxFlags};
    use rustix::io::Errno;
    use std::os::fd::{AsFd, AsRawFd};
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let no_fd = |e: Errno| {
        if matches!(e, Errno::MFILE | Errno::NFILE) {
            Removal::NoDescriptor
        } else {
            Removal::Left
        }
    };
    // O_PATH: opened whatever its mode, to be looked at before anything.
    let at = match rustix::fs::openat(dir, name, flags | OFlags::PATH, Mode::empty()) {
        Ok(at) => at,
        Err(e) => return no_fd(e),
    };
    let Ok(x) = rustix::fs::statx(&at, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS) else {
        return Removal::Left;
    };
    let dev = libc::makedev(x.stx_dev_major, x.stx_dev_minor);
    let root = StatxAttributes::MOUNT_ROOT;
    if parent_dev.is_some_and(|d| d != dev)
        || (x.stx_attributes_mask.contains(root) && x.stx_attributes.contains(root))
    {
        return Removal::Left;
    }
    if u32::from(x.stx_mode) & 0o700 != 0o700 {
        // Through the descriptor's own name: the inode looked at, never
        // what a name might lead to by now.
        let fd_name = format!("/proc/self/fd/{}", at.as_raw_fd());
        if rustix::fs::chmod(fd_name.as_str(), Mode::from_raw_mode(0o700)).is_err() {
            return Removal::Left;
        }
    }
    let d = rustix::fs::openat(&at, ".", OFlags::RDONLY | flags, Mode::empty());
    drop(at);
    let d = match d {
        Ok(d) => d,
        // One descriptor short of holding both (a restore that failed
        // for want of descriptors removes what it built with the two it
        // has: its top and one level): with the `O_PATH` one closed, the
        // directory is opened again by its name, then checked to be the
        // inode looked at (a name swapped meanwhile is left).
        Err(Errno::MFILE | Errno::NFILE) => {
            let d = match rustix::fs::openat(dir, name, OFlags::RDONLY | flags, Mode::empty()) {
                Ok(d) => d,
                Err(e) => return no_fd(e),
            };
            match rustix::fs::fstat(&d) {
                Ok(s) if s.st_dev == dev && s.st_ino == x.stx_ino => d,
                _ => return Removal::Left,
            }
        }
        Err(e) => return no_fd(e),
    };
    // The top of the tree: where a directory too deep to open goes.
    let is_top = top.is_none();
    let mine;
    let top = match top {
        Some(t) => t,
        None => {
            mine = Top {
                fd: d.as_fd(),
                moved: std::cell::Cell::new(false),
                next: std::cell::Cell::new(0),
            };
            &mine
        }
    };
    let mut pass = 0u32;
    loop {
        if is_top {
            top.moved.set(false);
        }
        // A directory's listing goes on from where the last one ended:
        // the top's next pass starts from its beginning.
        if pass > 0 && rustix::fs::seek(&d, rustix::fs::SeekFrom::Start(0)).is_err() {
            return Removal::Left;
        }
        pass += 1;
        // Its names first (one descriptor per level is held while deeper
        // ones are removed; the listing's buffer is gone before), then
        // each removed by name in it.
        let Ok(names) = entries(d.as_fd()) else {
            return Removal::Left;
        };
        let mut whole = true;
        for (n, t) in names {
            let is_dir = match t {
                FileType::Directory => true,
                FileType::Unknown => {
                    rustix::fs::statat(&d, n.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
                }
                _ => false,
            };
            whole &= if is_dir {
                match remove_dir_at(d.as_fd(), n.as_c_str(), Some(dev), Some(top)) {
                    Removal::Gone => true,
                    // Moved up, to go in the top's next pass; at the top
                    // itself there is nothing to gain.
                    Removal::NoDescriptor => !is_top && top.take(d.as_fd(), n.as_c_str()),
                    Removal::Left => false,
                }
            } else {
                matches!(
                    rustix::fs::unlinkat(&d, n.as_c_str(), AtFlags::empty()),
                    Ok(()) | Err(Errno::NOENT)
                )
            };
        }
        if !whole {
            return Removal::Left;
        }
        // The top again while this pass moved directories into it (each
        // pass removes every level above what it moved: it ends).
        if !(is_top && top.moved.get()) {
            break;
        }
    }
    if matches!(
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR),
        Ok(()) | Err(Errno::NOENT)
    ) {
        Removal::Gone
    } else {
        Removal::Left
    }
}

/// Removes trees a killed restore left beside its path; only trees owned by
/// our user. A tree is a dead restore's when its pid is gone, or is a zombie
/// not reaped yet (judged as a lock holder is:
/// [`crate::lock::holder::same_process`]), or names a process that started
/// after the tree last changed ([`reused_pid`]): the pid was reused (32768
/// pids by default), and the tree would otherwise stay as long as that
/// process lives.
///
/// Every tree of a live restore beside `path` is not simply taken for
/// dead under the directory's lock this restore holds: a directory reached
/// through two mounts (a bindfs mount and its source) has two locks, and a
/// restore through the other one may be building there now.
fn remove_dead_builds(parent: &Path) {
    // Listed whole first, by name: the listing's descriptor is closed
    // before any tree is removed, which may need every descriptor left
    // (a `DirEntry` would keep it open).
    let Ok(rd) = fs::read_dir(parent) else { return };
    let found: Vec<std::ffi::OsString> = rd
        .flatten()
        .map(|de| de.file_name())
        .filter(|n| n.as_encoded_bytes().starts_with(RESTORE_PREFIX.as_bytes()))
        .collect();
    for name in found {
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RESTORE_PREFIX))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let path = parent.join(&name);
        // Only our own: in a shared directory (`/tmp`) a name of this shape
        // may be another user's, whose files are not ours to remove (root
        // would).
        let Ok(m) = fs::symlink_metadata(&path) else {
            continue;
        };
        if m.uid() != rustix::process::geteuid().as_raw() {
            continue;
        }
        // Never this process's own: a tree built for another path of this
        // restore, whose top directory has its stored mtime by now (on a
        // file system whose ctime is the mtime, sshfs, it looks old).
        if pid != std::process::id()
            && (!crate::lock::holder::same_process(pid, None) || reused_pid(pid, &m))
        {
            remove_tree(&path);
        }
    }
}

/// Whether the live process `pid` started more than a second after the
/// tree (`m`) last changed: it did not make the tree, nor move it to its
/// name (a rename changes the moved inode's ctime). The second covers the
/// start time's clock ticks and the coarse clock of timestamps; `false`
/// where either time is unknown.
fn reused_pid(pid: u32, m: &fs::Metadata) -> bool {
    use crate::lock::holder::{epoch_of_start, start_time};
    let Some(started) = start_time(pid).and_then(epoch_of_start) else {
        return false;
    };
    #[allow(clippy::cast_precision_loss)]
    let changed = m.ctime() as f64 + f64::from(u32::try_from(m.ctime_nsec()).unwrap_or(0)) / 1e9;
    started > changed + 1.0
}

pub use crate::cache::Swept;

/// `cache-evict` with the output store: plans with the blobs (what an entry
/// frees is the blobs no other entry uses) and sweeps in each round.
pub fn evict(c: &Cache, policy: &crate::cache::EvictPolicy) -> Result<crate::cache::EvictReport> {
    c.evict_with(
        policy,
        &OutputStore {
            until: c.lock_deadline(),
        },
    )
}

/// The output store as eviction sees it ([`crate::cache::Shared`]).
struct OutputStore {
    /// The end of the sweeps' waits: one `LOCK_TIMEOUT` for the whole
    /// eviction, however many rounds.
    until: Wait,
}

impl crate::cache::Shared for OutputStore {
    fn census(&self, c: &Cache) -> Result<crate::cache::Census> {
        let store = store_dir(c);
        if !fs::symlink_metadata(&store).is_ok_and(|m| m.is_dir()) {
            return Ok(crate::cache::Census::default());
        }
        let uses = entry_uses(c, &store)?;
        let sizes = list_blobs(&store)?
            .into_iter()
            .map(|(name, _, len)| (name, len))
            .collect();
        Ok(crate::cache::Census { sizes, uses })
    }

    fn sweep(&self, c: &Cache, dry_run: bool, gone: &[String]) -> Result<Swept> {
        // Eviction waits for the stores and restores in flight: a skipped
        // sweep would leave it judging the fit with bytes about to go. But
        // only until LOCK_TIMEOUT: one stopped restore must not hang it;
        // the sweep is then skipped (`busy`), its blobs stay counted.
        sweep_with(c, dry_run, gone, Lock::Wait(self.until))
    }
}

/// Mark and sweep: removes the blobs no entry's manifest names. Marks with
/// the store held exclusively (no store or restore in flight, so no entry
/// can start using a blob meanwhile), removes under the cache lock through
/// [`Cache::store_change`]. `gone`: entries to count as removed already
/// (a dry run's victims, so it says what the real one would sweep). Skipped
/// (`busy`) when a store or restore holds the store.
pub fn sweep(c: &Cache, dry_run: bool, gone: &[String]) -> Result<Swept> {
    sweep_with(c, dry_run, gone, Lock::Try)
}

fn sweep_with(c: &Cache, dry_run: bool, gone: &[String], how: Lock) -> Result<Swept> {
    let store = store_dir(c);
    if !fs::symlink_metadata(&store).is_ok_and(|m| m.is_dir()) {
        return Ok(Swept::default());
    }
    let Some(_gc) = gc_lock(&store, how)? else {
        return Ok(Swept {
            busy: true,
            ..Swept::default()
        });
    };
    let uses = entry_uses(c, &store)?;
    let live: HashSet<&str> = uses
        .iter()
        .filter(|(k, _)| !gone.contains(k))
        .flat_map(|(_, v)| v.iter().map(String::as_str))
        .collect();
    let dead: Vec<(PathBuf, u64)> = list_blobs(&store)?
        .into_iter()
        .filter(|(name, _, _)| !live.contains(name.as_str()))
        .map(|(_, p, len)| (p, len))
        .collect();
    let mut s = Swept::default();
    if dry_run {
        s.blobs = dead.len() as u64;
        s.bytes = dead.iter().map(|d| d.1).sum();
        return Ok(s);
    }
    if dead.is_empty() {
        return Ok(s);
    }
    c.store_change(|| {
        let mut freed = 0i64;
        for (p, _) in &dead {
            // Measured now, under the lock: the bytes the index counts.
            let Ok(m) = fs::symlink_metadata(p) else {
                continue;
            };
            if m.is_file() && fs::remove_file(p).is_ok() {
                s.blobs += 1;
                s.bytes += m.len();
                freed += m.len() as i64;
            }
        }
        Ok(Some(-freed))
    })?;
    Ok(s)
}

/// Every blob in the store: (name, path, bytes).
fn list_blobs(store: &Path) -> Result<Vec<(String, PathBuf, u64)>> {
    let mut out = Vec::new();
    for fan in fs::read_dir(store).map_err(|e| Error::io("cannot list", store, e))? {
        let fan = fan.map_err(|e| Error::io("cannot list", store, e))?;
        let fname = fan.file_name();
        let Some(prefix) = fname.to_str().filter(|n| is_fan_dir(n.as_bytes())) else {
            continue;
        };
        if !fan.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(rd) = fs::read_dir(fan.path()) else {
            continue;
        };
        for b in rd.flatten() {
            let Ok(m) = b.metadata() else { continue };
            if m.is_file() {
                let name = format!("{prefix}{}", b.file_name().to_string_lossy());
                out.push((name, b.path(), m.len()));
            }
        }
    }
    Ok(out)
}

/// The blobs each `run-*` entry uses: its manifest and what that names
/// (each once). A damaged entry or manifest uses nothing (its hit is a
/// miss).
fn entry_uses(c: &Cache, store: &Path) -> Result<HashMap<String, Vec<String>>> {
    #[derive(Deserialize)]
    struct Head {
        outputs: Option<String>,
    }
    let mut uses = HashMap::new();
    let dir = c.dir();
    for de in fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))? {
        let de = de.map_err(|e| Error::io("cannot list", dir, e))?;
        let name = de.file_name();
        let Some(n) = name.to_str() else { continue };
        if !n.starts_with("run-") || n.ends_with(".meta") {
            continue;
        }
        // Without touching its atime: eviction's LRU order is by atime
        // (the engine opens it so too; a read on relatime would bump it).
        let Ok((f, _)) = fsutil::open_read_noatime_meta(&de.path()) else {
            continue;
        };
        // The header line (a header is far below 1 MiB).
        let mut line = Vec::new();
        let _ = io::BufRead::read_until(&mut io::BufReader::new(f.take(1 << 20)), b'\n', &mut line);
        let Ok(h) = serde_json::from_slice::<Head>(&line) else {
            continue;
        };
        let Some(m) = h.outputs else { continue };
        let Some(mp) = blob_path(store, &m) else {
            continue;
        };
        let mut blobs = vec![m.clone()];
        let mut seen = HashSet::from([m]);
        if let Ok(bytes) = fs::read(&mp)
            && let Ok(man) = serde_json::from_slice::<Manifest>(&bytes)
        {
            for r in man.roots {
                for node in r.nodes {
                    if let Kind::File { blob, .. } = node.kind
                        && seen.insert(blob.clone())
                    {
                        blobs.push(blob);
                    }
                }
            }
        }
        uses.insert(n.to_string(), blobs);
    }
    Ok(uses)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's bytes read by `read`-family calls (`rchar`).
    fn read_by_this_thread() -> u64 {
        fs::read_to_string("/proc/thread-self/io")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("rchar: "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    #[test]
    fn a_sparse_file_is_hashed_as_its_bytes_reading_only_its_data() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let mb = 1u64 << 20;
        // (length, data written at offsets): holes first, between, last,
        // none, an empty file.
        let cases: &[(u64, &[u64])] = &[
            (64 * mb, &[30 * mb, 64 * mb - 3]),
            (64 * mb, &[0, 5 * mb]),
            (3 * mb, &[]),
            (100_000, &[0, 4096, 8192, 99_990]),
            (0, &[]),
        ];
        for (i, &(len, at)) in cases.iter().enumerate() {
            let p = dir.path().join(i.to_string());
            let f = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&p)
                .unwrap();
            f.set_len(len).unwrap();
            for &o in at {
                f.write_all_at(b"data", o).unwrap();
            }
            let before = read_by_this_thread();
            let (hash, n) = hash_file(&f, None).unwrap();
            let read = read_by_this_thread() - before;
            let want = fs::read(&p).unwrap();
            assert_eq!(n, want.len() as u64, "case {i}");
            assert_eq!(hash, blake3::hash(&want), "case {i}");
            // A file system without holes (or without SEEK_HOLE) reads it
            // all; else only blocks with data are read.
            let sparse = fs::metadata(&p).unwrap().blocks() * 512 < len / 2;
            if sparse && len >= mb {
                assert!(read < mb, "case {i}: {read} bytes read");
            }
        }
    }

    fn node(p: &str, kind: Kind) -> Node {
        Node {
            p: p.into(),
            kind,
            mtime: 0,
            nsec: 0,
        }
    }

    /// A `copy_file_range` refused (EXDEV between a tmpfs and the temp
    /// dir's file system, since Linux 5.19) is remembered: the copy goes on
    /// by reads and writes, and the next file is not offered to it again.
    /// Where the kernel copies across them, both copies use it.
    #[test]
    fn a_refused_copy_file_range_is_remembered_and_the_copy_is_exact() {
        // Without a /dev/shm both are in the temp dir: a copy the kernel
        // makes, checked the same way.
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let src_path = a.path().join("src");
        fs::write(&src_path, &bytes).unwrap();
        let src = File::open(&src_path).unwrap();
        let dst_file = |name: &str| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(b.path().join(name))
                .unwrap()
        };
        // What the kernel says to a copy across these two.
        let probe = dst_file("probe");
        let refused = rustix::fs::copy_file_range(&src, Some(&mut 0), &probe, Some(&mut 0), 1)
            .is_err_and(|e| {
                matches!(
                    e,
                    rustix::io::Errno::XDEV
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::INVAL
                        | rustix::io::Errno::OPNOTSUPP
                )
            });
        let ranges = AtomicBool::new(true);
        for (i, name) in ["one", "two"].into_iter().enumerate() {
            let dst = dst_file(name);
            copy_range(&src, &dst, 0, bytes.len() as u64, &ranges).unwrap();
            assert_eq!(fs::read(b.path().join(name)).unwrap(), bytes, "copy {i}");
            assert_eq!(
                ranges.load(Ordering::Relaxed),
                !refused,
                "copy {i}: remembered whether the kernel refuses"
            );
        }
        // Once refused, a range copy of a part lands at its offset.
        let part = dst_file("part");
        let off = AtomicBool::new(false);
        copy_range(&src, &part, 1000, 5000, &off).unwrap();
        let got = fs::read(b.path().join("part")).unwrap();
        assert_eq!(got.len(), 6000);
        assert_eq!(&got[1000..], &bytes[1000..6000]);
        assert!(got[..1000].iter().all(|&b| b == 0));
    }

    #[test]
    fn blob_names_never_leave_the_store() {
        let s = Path::new("/s");
        let hex = "ab".repeat(32);
        assert_eq!(
            blob_path(s, &hex),
            Some(s.join("ab").join(&hex[2..])),
            "a plain blob"
        );
        assert!(
            blob_path(s, &format!("{hex}x")).is_some(),
            "an executable one"
        );
        for bad in [
            "../../etc/passwd",
            "",
            "ab",
            &hex.to_uppercase(),
            &format!("{hex}y"),
        ] {
            assert_eq!(blob_path(s, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_hostile_manifest_never_writes_through_a_symlink_or_out_of_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::create_dir(&victim).unwrap();
        let store = d.path().join("store");
        fs::create_dir(&store).unwrap();
        let dir = || Kind::Dir { mode: 0o755 };
        let link = || Kind::Symlink {
            target: victim.to_string_lossy().into_owned(),
        };
        let hostile = [
            // A directory node under a symlink the manifest made.
            vec![node("", dir()), node("l", link()), node("l/evil", dir())],
            // `..` and an empty name.
            vec![node("", dir()), node("a", dir()), node("a/..", dir())],
            vec![node("", dir()), node("../x", dir())],
            vec![node("", dir()), node("a//b", dir())],
            // A hard link to a later node, or to a non-file.
            vec![node("", dir()), node("h", Kind::Hardlink { to: 0 })],
            // A root that is not the path itself.
            vec![node("x", dir())],
        ];
        for (i, nodes) in hostile.into_iter().enumerate() {
            let root = Root {
                path: "out".into(),
                nodes,
            };
            let tmp = d.path().join(format!("t{i}"));
            let r = build_at(&store, &root, &tmp, false).unwrap();
            assert!(r.is_err(), "case {i} is damage");
            assert_eq!(fs::read_dir(&victim).unwrap().count(), 0, "case {i}");
            assert!(!d.path().join("x").exists(), "case {i}");
        }
    }

    #[test]
    fn paths_outside_or_through_symlinks_are_refused() {
        for bad in [
            "/abs", "..", "a/../b", ".", "./", "", "out/.", "d/./", "a/./b", "./a/.",
        ] {
            assert!(
                check_paths(&[PathBuf::from(bad)]).is_err(),
                "{bad:?} is refused"
            );
        }
        assert!(check_paths(&[PathBuf::from("a"), PathBuf::from("./a/b")]).is_err());
        assert!(check_paths(&[PathBuf::from("nonexistent/deeper/x")]).is_ok());
        assert!(check_paths(&[PathBuf::from("./nonexistent/x/")]).is_ok());
    }
}
