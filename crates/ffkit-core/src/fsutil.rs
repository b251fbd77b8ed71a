//! Small, careful file-system primitives shared by the cache, lock and
//! metrics modules: private directories, exclusive temp files (named, or
//! unnamed with `O_TMPFILE` and linked in place), atomic replacement by
//! rename, opening without following symlinks, and setting file times from
//! ffkit's clock.
//!
//! Every file ffkit opens inside its own directories goes through here, so
//! the "never write through a planted symlink" rule (O_NOFOLLOW) and the file
//! modes (0700 directories, 0600 files) live in one place.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{CWD, RenameFlags, Timespec, Timestamps};
use rustix::io::Errno;
use rustix::process::Pid;

use crate::error::{Error, Result};

/// Mode of every directory ffkit creates: private to the user.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file ffkit creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode 0700, whatever the
/// umask (see [`umask`]).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    // Usually it exists: one stat then, instead of mkdir's EEXIST and the
    // stat that follows it. (Both follow symlinks, as `mkdir -p` does.)
    if fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let made = if umask() & DIR_MODE == 0 {
        DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
    } else {
        // The umask takes owner bits (`umask 0777`): each directory made
        // gets them back before anything is made in it, or the next mkdir
        // in it fails and a `d---------` is left for every later call.
        mkdir_private(dir)
    };
    made.map_err(|e| match dangling_link(dir) {
        // A user-named dir (or one above it) that is a symbolic link to
        // nothing: mkdir's EEXIST ("File exists") named nothing the user
        // could see there. Not followed into being: its target is theirs.
        Some((link, target)) if e.kind() == io::ErrorKind::AlreadyExists => {
            let which = if link == dir {
                "a symbolic link".to_string()
            } else {
                format!("{} is a symbolic link", link.display())
            };
            Error::NotFound(format!(
                "cannot create directory {}: {which} to {}, which does not exist (create it, or name another dir)",
                dir.display(),
                target.display()
            ))
        }
        _ => Error::io("cannot create directory", dir, e),
    })
}

/// The nearest of `dir` and its ancestors that is a symbolic link whose
/// target does not exist, with the missing target: at the end of a chain
/// of links (`a -> b -> gone`: `gone`, not `b`, which exists as a link, so
/// "create it" could not be done).
fn dangling_link(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let link = dir
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| {
            fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink())
                && fs::metadata(a).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        })?;
    let mut target = fs::read_link(link).ok()?;
    let mut at = link.to_path_buf();
    // Bounded as the kernel bounds a chain (40 links).
    for _ in 0..40 {
        let next = at
            .parent()
            .map_or_else(|| target.clone(), |p| p.join(&target));
        if !fs::symlink_metadata(&next).is_ok_and(|m| m.file_type().is_symlink()) {
            break;
        }
        let Ok(t) = fs::read_link(&next) else { break };
        at = next;
        target = t;
    }
    if at != link {
        target = at.parent().map_or(target.clone(), |p| p.join(&target));
    }
    Some((link.to_path_buf(), target))
}

/// `mkdir -p` of `dir` where each new directory is chmod'ed to 0700.
fn mkdir_private(dir: &Path) -> io::Result<()> {
    let mkdir = |d: &Path| match DirBuilder::new().mode(DIR_MODE).create(d) {
        Ok(()) => chmod_new_dir(d),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => Ok(()),
        Err(e) => Err(e),
    };
    match mkdir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => {
                    mkdir_private(parent)?;
                    mkdir(dir)
                }
                None => Err(e),
            }
        }
        r => r,
    }
}

/// Creates the one directory `d` (its parent exists) with mode 0700
/// whatever the umask; EEXIST if something is there.
pub fn create_owned_dir(d: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(d)?;
    if umask() & DIR_MODE != 0 {
        chmod_new_dir(d)?;
    }
    Ok(())
}

/// Gives the directory this process just made at `d` its mode 0700,
/// through a descriptor that did not follow a symlink (one swapped in
/// after the mkdir is never chmod'ed through); by the path where there is
/// no `/proc` (an `O_PATH` descriptor cannot be `fchmod`ed).
fn chmod_new_dir(d: &Path) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let mode = Mode::from_raw_mode(DIR_MODE);
    if proc_fd_links() {
        let fd = rustix::fs::open(
            d,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        rustix::fs::chmod(proc.as_str(), mode)?;
    } else {
        rustix::fs::chmod(d, mode)?;
    }
    Ok(())
}

/// "Not read yet", for [`UMASK`].
const UMASK_UNKNOWN: u32 = u32::MAX;
/// The process's umask as [`umask`] last read it.
static UMASK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(UMASK_UNKNOWN);

/// The process's umask, read once per process (again after
/// [`forget_umask`]) and only by a process that creates something: a
/// call that creates nothing (a cache hit) makes no system call for it,
/// one that creates makes one `umask(2)` (two where the umask is not the
/// usual 022), and each file or directory created makes none more unless
/// the umask takes owner bits from its fixed mode, when it is `fchmod`ed
/// back (docs/hardening.md, "Modes").
///
/// Read by setting it to 022 and, where it was something else, back:
/// `/proc/self/status` would cost an open, a read and a close, and is not
/// there in every chroot. For that instant a file another thread of this
/// process creates gets 022; ffkit's own files and dirs have fixed modes
/// that 022 does not change, and the bash builtin has one thread.
pub fn umask() -> u32 {
    use rustix::fs::Mode;
    let known = UMASK.load(Ordering::Relaxed);
    if known != UMASK_UNKNOWN {
        return known;
    }
    let usual = Mode::from_raw_mode(0o022);
    let old = rustix::process::umask(usual);
    if old != usual {
        rustix::process::umask(old);
    }
    let u = old.as_raw_mode() & 0o777;
    UMASK.store(u, Ordering::Relaxed);
    u
}

/// Forgets the umask [`umask`] read: for a long-lived process whose
/// umask may change between calls (the bash builtin, at each call).
pub fn forget_umask() {
    UMASK.store(UMASK_UNKNOWN, Ordering::Relaxed);
}

/// Whether `mode` is one the umask must not shape: a private mode (no bit
/// for group or others: 0600, 0700), which ffkit's files and dirs have
/// exactly. A mode with bits for others (0666 of a command-mode lock file,
/// like flock(1)'s; 0644 of an old library's dot lock) is the umask's to
/// shape, as for any program.
fn is_fixed(mode: u32) -> bool {
    mode & 0o077 == 0
}

/// Gives the file this process just created at `f` (`O_EXCL` or
/// `O_TMPFILE`) its fixed `mode` when the umask took bits from it: no
/// system call unless it did. A mode with bits for others is left to the
/// umask ([`is_fixed`]).
pub fn fix_created_mode(f: impl std::os::fd::AsFd, mode: u32) -> io::Result<()> {
    if is_fixed(mode) && umask() & mode != 0 {
        rustix::fs::fchmod(f, rustix::fs::Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

/// [`fix_created_mode`] for a file opened with `O_CREAT` but not
/// `O_EXCL`, which may have been there: only where the umask takes bits
/// (then one `fstat`), and only if the file lacks some of `mode`'s bits
/// (an existing file of ours is never changed otherwise; one a spoiling
/// umask left without its owner's read or write gets them back). A file
/// of another user (EPERM) is left as it is: whoever opens it is checked
/// by the kernel as before.
pub fn fix_opened_mode(f: &File, mode: u32) -> io::Result<()> {
    if !is_fixed(mode) || umask() & mode == 0 {
        return Ok(());
    }
    let have = rustix::fs::fstat(f)?.st_mode & 0o7777;
    fix_mode_of(f, have, mode)
}

/// [`fix_opened_mode`] for a caller that has the file's mode bits already
/// (`have`, from an fstat it makes anyway).
pub fn fix_mode_of(f: &File, have: u32, mode: u32) -> io::Result<()> {
    if is_fixed(mode) && have & mode != mode {
        match rustix::fs::fchmod(f, rustix::fs::Mode::from_raw_mode(mode)) {
            Err(rustix::io::Errno::PERM) | Ok(()) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Who besides its owner can write a file or dir of mode `mode`: `its
/// group`, `others`, or `its group and others` (`None`: nobody). The one
/// wording of every "writable by ..." refusal (a cache dir, a lock dir).
pub fn writable_by(mode: u32) -> Option<&'static str> {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("its group and others"),
        (true, false) => Some("its group"),
        (false, true) => Some("others"),
        (false, false) => None,
    }
}

/// Opens an existing file for reading without following a symlink.
/// Anything but a regular file (a FIFO, directory, device or socket planted
/// in the cache dir) is refused with [`not_regular`]; O_NONBLOCK keeps a
/// FIFO from blocking the open itself (it has no effect on regular files).
pub fn open_read(path: &Path) -> io::Result<File> {
    regular(
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?,
    )
}

/// [`open_read`] without its regular-file check (no `fstat`): for a
/// caller whose `read` itself refuses what is not a regular file (the
/// size index: [`crate::cache::index::read_number`]).
pub fn open_read_unchecked(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// [`open_read`] that also returns the file's size, from the fstat its
/// regular-file check makes anyway.
pub fn open_read_len(path: &Path) -> io::Result<(File, u64)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if m.file_type().is_file() {
        Ok((f, m.len()))
    } else {
        Err(not_regular())
    }
}

/// The error for a path that exists but is not a regular file.
pub fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
}

/// Whether an open failed because ffkit refused the file: a symlink
/// (ELOOP) or not a regular file. Callers that can heal (the index, the
/// journal) treat such a file as damaged.
pub fn is_refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
        || (e.raw_os_error().is_none() && e.kind() == io::ErrorKind::InvalidInput)
}

fn regular(f: File) -> io::Result<File> {
    if f.metadata()?.file_type().is_file() {
        Ok(f)
    } else {
        Err(not_regular())
    }
}

/// Opens an existing file for reading without following a symlink and,
/// where the kernel allows it (we own the file), without updating its access
/// time: ffkit sets access times itself, as its LRU recency.
/// Returns the metadata its regular-file check read too (the caller's
/// access time, for recency, without another fstat).
pub fn open_read_noatime_meta(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME | libc::O_NONBLOCK)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_read(path)?,
        r => r?,
    };
    let m = f.metadata()?;
    if m.file_type().is_file() {
        Ok((f, m))
    } else {
        Err(not_regular())
    }
}

/// Opens (creating if needed, never truncating) a file for reading and
/// appending, without following a symlink.
pub fn open_rw_create(path: &Path) -> io::Result<File> {
    // 0600 whatever the umask, from the fstat made anyway.
    let f = open_rw_create_unchecked(path)?;
    regular_len_private(&f)?;
    Ok(f)
}

/// [`open_rw_create`] without the regular-file check, for a caller that
/// makes its own `fstat` later (a lock file, checked once it is locked).
/// A FIFO opens (O_NONBLOCK) and must be refused by that check, which also
/// gives the file its 0600 ([`fix_mode_of`] with the mode it read).
pub fn open_rw_create_unchecked(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// [`open_rw_create_unchecked`] without `O_APPEND`, for a file written at
/// explicit offsets (`pwrite`): the cache's `.lock`, whose first bytes are
/// the entry-count record, rewritten in place under the lock (on Linux a
/// `pwrite` on an `O_APPEND` descriptor appends whatever the offset).
pub fn open_rw_create_at(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// [`regular_len`] of a file ffkit opened with `O_CREAT` and mode 0600,
/// which gets its 0600 back from that same `fstat` if a umask took bits
/// from it ([`fix_mode_of`]): the cache's `.lock`.
/// Also returns its number of names (hard links), from the same `fstat`.
pub fn regular_len_private(f: &File) -> io::Result<(u64, u64)> {
    let m = f.metadata()?;
    if !m.file_type().is_file() {
        return Err(not_regular());
    }
    fix_mode_of(f, m.mode() & 0o7777, FILE_MODE)?;
    Ok((m.len(), m.nlink()))
}

/// The length of `f` if it is a regular file (one `fstat`), else the
/// "not a regular file" error.
pub fn regular_len(f: &File) -> io::Result<u64> {
    let m = f.metadata()?;
    if m.file_type().is_file() {
        Ok(m.len())
    } else {
        Err(not_regular())
    }
}

/// What the hot paths (the metrics append, the lock files) ask of a file:
/// its identity, type and size, and never its times. On Linux ≥ 6.13 a
/// `stat` that returns mtime or ctime marks the inode "ctime queried", so
/// the file's next write must take a fine-grained timestamp and dirty the
/// inode (on ext4 a journal handle): `fstat` and `std`'s metadata (statx
/// with `STATX_ALL`) cost every following `write`/`ftruncate` that. `statx`
/// with a mask of only these fields leaves the inode alone. The device is
/// always returned; it is encoded as `fstat`'s `st_dev` and `std`'s
/// `MetadataExt::dev` are (`makedev`), so identities from either compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ident {
    pub dev: u64,
    pub ino: u64,
    /// Meaningful only where the caller asked for [`Want::Size`].
    pub size: u64,
    /// The file type bits of the mode (`S_IFMT`); 0 unless asked for.
    pub kind: u32,
    /// The permission bits of the mode (`0o7777`); 0 unless the kind was
    /// asked for (`STATX_MODE` comes with `STATX_TYPE`: no ctime query).
    pub perm: u32,
    /// The number of names (hard links); meaningful where the size is
    /// asked for (`STATX_NLINK` rides along: no extra call, no times).
    pub nlink: u64,
}

impl Ident {
    /// A regular file (needs [`Want::KindSize`]).
    pub fn is_file(&self) -> bool {
        self.kind == libc::S_IFREG
    }

    /// The same file as `(dev, ino)`.
    pub fn is(&self, dev: u64, ino: u64) -> bool {
        self.dev == dev && self.ino == ino
    }
}

/// The fields an [`Ident`] is asked for, besides device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Device and inode only.
    Id,
    /// And the size and the link count.
    Size,
    /// And the file type, the size and the link count.
    KindSize,
}

fn statx_mask(want: Want) -> rustix::fs::StatxFlags {
    use rustix::fs::StatxFlags as F;
    match want {
        Want::Id => F::INO,
        Want::Size => F::INO | F::SIZE | F::NLINK,
        Want::KindSize => F::INO | F::TYPE | F::MODE | F::SIZE | F::NLINK,
    }
}

fn ident_of(x: &rustix::fs::Statx) -> Ident {
    Ident {
        dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
        ino: x.stx_ino,
        size: x.stx_size,
        kind: u32::from(x.stx_mode) & libc::S_IFMT,
        perm: u32::from(x.stx_mode) & 0o7777,
        nlink: u64::from(x.stx_nlink),
    }
}

/// [`Ident`] of the file open at `fd`: `statx(fd, "", AT_EMPTY_PATH)`
/// with the minimal mask (see [`Ident`] for why not `fstat`).
pub fn ident_fd(fd: impl std::os::fd::AsFd, want: Want) -> io::Result<Ident> {
    let flags = rustix::fs::AtFlags::EMPTY_PATH;
    match rustix::fs::statx(&fd, c"", flags, statx_mask(want)) {
        Ok(x) => Ok(ident_of(&x)),
        Err(e) if no_statx(e) => Ok(ident_of_stat(&rustix::fs::fstat(&fd)?)),
        Err(e) => Err(e.into()),
    }
}

/// A kernel without `statx` (before Linux 4.11: ENOSYS) or a sandbox that
/// refuses it (an old container seccomp profile: EPERM, which a `statx`
/// of a path or descriptor does not return otherwise): `fstat`/`lstat`
/// answer instead. (rustix's `linux_4_11` feature: no probe call of its
/// own after a first failing `statx`.)
fn no_statx(e: Errno) -> bool {
    matches!(e, Errno::NOSYS | Errno::PERM)
}

fn ident_of_stat(st: &rustix::fs::Stat) -> Ident {
    Ident {
        dev: st.st_dev,
        ino: st.st_ino,
        size: u64::try_from(st.st_size).unwrap_or(0),
        kind: st.st_mode & libc::S_IFMT,
        perm: st.st_mode & 0o7777,
        #[allow(clippy::useless_conversion)] // nlink_t is u32 on some targets
        nlink: u64::from(st.st_nlink),
    }
}

/// [`Ident`] of `path` itself, a symlink not followed (as `lstat`), with
/// the minimal mask (see [`Ident`]).
pub fn ident_path(path: &Path, want: Want) -> io::Result<Ident> {
    ident_at(path, want)
}

/// [`ident_path`] of a path as a `Path` or as a C string made already.
fn ident_at<P: rustix::path::Arg + Copy>(path: P, want: Want) -> io::Result<Ident> {
    let flags = rustix::fs::AtFlags::SYMLINK_NOFOLLOW;
    match rustix::fs::statx(CWD, path, flags, statx_mask(want)) {
        Ok(x) => Ok(ident_of(&x)),
        Err(e) if no_statx(e) => Ok(ident_of_stat(&rustix::fs::statat(CWD, path, flags)?)),
        Err(e) => Err(e.into()),
    }
}

/// The file type, permission bits and owner of a path, asked for without
/// its times (see [`Ident`] for why): what a dir check needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The file type bits (`S_IFMT`).
    pub kind: u32,
    /// The permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
}

/// [`Owner`] of `path`: the link itself (as `lstat`), or with `follow`
/// what it points to (as `stat`). A statx of type, mode and owner only, so
/// the shell functions' per-row check of their log's dir leaves the dir's
/// inode alone.
pub fn owner_of(path: &Path, follow: bool) -> io::Result<Owner> {
    use rustix::fs::{AtFlags, StatxFlags as F};
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    match rustix::fs::statx(CWD, path, flags, F::TYPE | F::MODE | F::UID) {
        Ok(x) => Ok(Owner {
            kind: u32::from(x.stx_mode) & libc::S_IFMT,
            mode: u32::from(x.stx_mode) & 0o7777,
            uid: x.stx_uid,
        }),
        Err(e) if no_statx(e) => {
            let st = rustix::fs::statat(CWD, path, flags)?;
            Ok(Owner {
                kind: st.st_mode & libc::S_IFMT,
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// [`ident_path`] of `dir/name`, the path composed on the stack when it is
/// short (no allocation: the bash builtin probes `.git` on every call).
pub fn ident_child(dir: &Path, name: &str, want: Want) -> io::Result<Ident> {
    use std::os::unix::ffi::OsStrExt;
    let (d, n) = (dir.as_os_str().as_bytes(), name.as_bytes());
    let mut buf = [0u8; 512];
    let len = d.len() + 1 + n.len();
    // (An empty `dir`, the last ancestor of a relative path, joins to
    // `name` alone.)
    if d.is_empty() || len >= buf.len() {
        return ident_path(&dir.join(name), want);
    }
    buf[..d.len()].copy_from_slice(d);
    buf[d.len()] = b'/';
    buf[d.len() + 1..len].copy_from_slice(n);
    match std::ffi::CStr::from_bytes_with_nul(&buf[..=len]) {
        Ok(c) => ident_at(c, want),
        // A NUL inside: the path's own answer, as for a long one.
        Err(_) => ident_path(&dir.join(name), want),
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Prefix of every temp file ffkit creates; a dot-file, so it never counts
/// toward the cache size, and never a valid key.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A fresh temp-file path in `dir`: `.tmp-<pid>-<seq>`, unique per process.
pub fn temp_path(dir: &Path) -> PathBuf {
    let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

/// Creates a new exclusive temp file in `dir` ([`create_new`]: O_EXCL,
/// O_NOFOLLOW, 0600, open for reading too: a new output blob is hashed
/// again from its copy).
pub fn create_temp(dir: &Path) -> Result<(PathBuf, File)> {
    loop {
        let path = temp_path(dir);
        match create_new(&path) {
            Ok(f) => return Ok((path, f)),
            // A stale temp of an earlier process with our pid: pick the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("cannot create", &path, e)),
        }
    }
}

/// Writes `bytes` to a temp file in `dir` and returns its path and inode
/// number, ready to be installed. On failure nothing is left behind.
pub fn write_temp(dir: &Path, bytes: &[u8]) -> Result<(PathBuf, u64)> {
    let (path, mut f) = create_temp(dir)?;
    match f.write_all(bytes).and_then(|()| f.metadata()) {
        Ok(m) => Ok((path, m.ino())),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(Error::io("cannot write", &path, e))
        }
    }
}

/// An unnamed file in `dir` (`O_TMPFILE`, mode 0600), for a new name that
/// [`link_unnamed`] gives it later: a write of a new key makes its value
/// and sidecar this way, one metadata operation cheaper on ext4 than a
/// temp name created and renamed, and a process killed before the link
/// leaves nothing behind (the kernel frees the inode). `Ok(None)` where it
/// cannot work: the file system or kernel has no `O_TMPFILE` (EOPNOTSUPP,
/// EISDIR, EINVAL), or `/proc/self/fd` is missing (the link goes through
/// it); the caller then makes a named temp file, which reports a real
/// error (a read-only dir, no space) in its own words.
pub fn create_unnamed(dir: &Path) -> Option<File> {
    use rustix::fs::{Mode, OFlags};
    if !proc_fd_links() {
        return None;
    }
    let f = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(FILE_MODE),
    )
    .ok()?;
    // A failed fchmod: the named temp file reports the trouble instead.
    fix_created_mode(&f, FILE_MODE).ok()?;
    Some(File::from(f))
}

/// Gives the unnamed file `f` ([`create_unnamed`]) the name `dest`, which
/// must be free. EEXIST if something is at `dest`; nothing is ever
/// replaced.
///
/// First by `linkat(f, "", AT_EMPTY_PATH)`, the descriptor itself: no path
/// walk through `/proc` (2–7 µs less per link on ext4 here; BENCHMARKS.md,
/// "Issue 27's write goal, sixth pass"). Linux allows it to a caller with
/// `CAP_DAC_READ_SEARCH` and, since 6.10, to the file's own opener;
/// elsewhere it fails (ENOENT or EPERM) and the link is made by
/// `linkat` of `/proc/self/fd/N` (no privilege needed), which the process
/// then uses for every later link, so a refusal costs one call once.
pub fn link_unnamed(f: &File, dest: &Path) -> io::Result<()> {
    use rustix::fs::AtFlags;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;
    /// Set once `AT_EMPTY_PATH` was refused and `/proc` worked instead.
    static NO_FLINK: AtomicBool = AtomicBool::new(false);
    if !NO_FLINK.load(Ordering::Relaxed) {
        match rustix::fs::linkat(f, c"", CWD, dest, AtFlags::EMPTY_PATH) {
            Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::PERM => {}
            r => return r.map_err(Into::into),
        }
    }
    let proc = format!("/proc/self/fd/{}", f.as_raw_fd());
    rustix::fs::linkat(CWD, proc.as_str(), CWD, dest, AtFlags::SYMLINK_FOLLOW)?;
    NO_FLINK.store(true, Ordering::Relaxed);
    Ok(())
}

/// Gives the unnamed file `f` a fresh temp name in `dir` ([`temp_path`]),
/// for a caller that needs a name to rename (an existing key is replaced
/// by exchange, see [`install`]).
pub fn name_unnamed(f: &File, dir: &Path) -> Result<PathBuf> {
    loop {
        let path = temp_path(dir);
        match link_unnamed(f, &path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::io(
                    "cannot link an unnamed temp file (O_TMPFILE) at",
                    &path,
                    e,
                ));
            }
        }
    }
}

/// Whether `/proc/self/fd` links work here (looked at once per process:
/// a chroot or container without `/proc` has none).
fn proc_fd_links() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Replaces `dest` with `bytes` atomically: a reader sees the old content or
/// the new, never a partial file. A new file is renamed over it (no file is
/// ever modified in place: a reader may hold the old one open), without
/// [`write_temp`]'s fstat, as no inode number is needed here.
pub fn replace_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let (tmp, mut f) = create_temp(dir)?;
    if let Err(e) = f.write_all(bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot write", &tmp, e));
    }
    drop(f);
    install(&tmp, dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot rename into", dest, e)
    })
}

/// What [`rewrite_unopened`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// The file now holds exactly the bytes given.
    Done,
    /// Nothing is at the path.
    Missing,
    /// Something is there that could not be rewritten now: open elsewhere
    /// (or being opened), not a regular file, not ours, on a file system
    /// without leases, or the write failed. Its content is then unknown.
    Unusable,
}

/// Whether `m` is a regular file with one name: a file ffkit rewrites in
/// place through its own name. A second name (a hard link planted to
/// another file) would have the write land in that file too.
pub fn sole_regular(m: &fs::Metadata) -> bool {
    m.file_type().is_file() && m.nlink() == 1
}

/// Rewrites the regular file at `path` in place with `bytes`, only when no
/// open file description of it exists anywhere, and so that none can be
/// made until it is whole: a write lease (`fcntl(F_SETLEASE, F_WRLCK)`) is
/// granted only when nobody else has the file open (the kernel counts the
/// inode's readers and writers, and an open counts itself before it looks
/// for a lease, so an open racing the grant is either counted or sees the
/// lease), and while it is held every open of the file, by any name, waits
/// (or fails, with `O_NONBLOCK`) until it is released, by the close right
/// after the write. Every read goes through an open file description
/// (`read`, `mmap`, `sendfile` alike), so no read can overlap the write:
/// a reader sees the file before it or after it. What breaks the lease
/// (an open during the write) signals the holder: the signal is set to
/// `SIGURG`, ignored unless handled, so a shell that loaded the builtin is
/// never killed by the default `SIGIO`. The lease is held for one `pwrite`
/// (and an `ftruncate` when the content got shorter); a holder stopped in
/// between makes an opener wait at most the kernel's `lease-break-time`.
/// `Unusable` where leases are not to be had (another user's file, NFS,
/// `fs.leases-enable=0`), and for anything but a regular file with one
/// name (no symlink is followed, a FIFO does not block the open).
pub fn rewrite_unopened(path: &Path, bytes: &[u8]) -> Rewrite {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let f = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Rewrite::Missing,
        Err(_) => return Rewrite::Unusable,
    };
    let Ok(m) = f.metadata() else {
        return Rewrite::Unusable;
    };
    if !sole_regular(&m) {
        return Rewrite::Unusable;
    }
    // Linux's `F_SETSIG` (<bits/fcntl-linux.h>, the same on every
    // architecture); the libc crate does not export it.
    const F_SETSIG: libc::c_int = 10;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl with integer arguments on `fd`, which `f` owns and
    // keeps open across these calls; no memory is passed.
    let leased = unsafe {
        libc::fcntl(fd, F_SETSIG, libc::SIGURG) == 0
            && libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) == 0
    };
    if !leased {
        return Rewrite::Unusable;
    }
    let len = bytes.len() as u64;
    let written = f.write_all_at(bytes, 0).and_then(|()| {
        if m.len() > len {
            f.set_len(len)
        } else {
            Ok(())
        }
    });
    // Closing the only descriptor that holds the lease releases it (one
    // system call instead of `F_UNLCK` and a close): opens waiting on it
    // go on now, and find the file whole.
    drop(f);
    if written.is_ok() {
        Rewrite::Done
    } else {
        Rewrite::Unusable
    }
}

/// Exchanges the names `a` and `b` (`renameat2(RENAME_EXCHANGE)`), both
/// relative to the working directory as `rename(2)` would resolve them.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
}

/// Renames `from` to `dest` only if `dest` is free (`RENAME_NOREPLACE`;
/// no fallback: an error leaves both as they were).
pub fn rename_noreplace(from: &Path, dest: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(CWD, from, CWD, dest, RenameFlags::NOREPLACE).map_err(io::Error::from)
}

/// Creates a new file at `path` (O_EXCL, O_NOFOLLOW, 0600) for writing,
/// and reading: a caller may check what it wrote without a second open.
pub fn create_new(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if let Err(e) = fix_created_mode(&f, FILE_MODE) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(f)
}

/// Moves the file `from` to `dest`, atomically replacing whatever is there.
///
/// A plain `rename(2)` over an existing file makes ext4 flush the new file's
/// data first (its `auto_da_alloc` heuristic), which costs 0.2–2 ms per call
/// — more than the rest of a cache write together. Exchanging the two names
/// with `renameat2(RENAME_EXCHANGE)` and unlinking the old file (now at
/// `from`) is just as atomic for readers and takes microseconds. Where the
/// exchange is not possible (no `dest` yet, or a file system without it) this
/// is a plain rename. A directory is never displaced: if `dest` was one, the
/// exchange is undone and the call fails with EISDIR, as rename would.
pub fn install(from: &Path, dest: &Path) -> io::Result<()> {
    match exchange(from, dest) {
        Ok(()) => match fs::remove_file(from) {
            Err(e)
                if e.raw_os_error() == Some(libc::EISDIR)
                    || e.kind() == io::ErrorKind::IsADirectory =>
            {
                let _ = exchange(from, dest);
                Err(io::Error::from_raw_os_error(libc::EISDIR))
            }
            // The old file is already out of sight; a left-over temp name is
            // removed by the next walk.
            _ => Ok(()),
        },
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            fs::rename(from, dest)
        }
        Err(e) => Err(e),
    }
}

/// [`install`] for a `dest` that was not there a moment ago (the caller
/// looked under the cache's lock): `renameat2(RENAME_NOREPLACE)`, one call,
/// where `install` would first try an exchange that fails with ENOENT. If
/// something is there after all (EEXIST), or the file system has no
/// `renameat2` flags (EINVAL, ENOSYS), it is [`install`] as before.
pub fn install_new(from: &Path, dest: &Path) -> io::Result<()> {
    match rename_noreplace(from, dest) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EEXIST | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            install(from, dest)
        }
        r => r,
    }
}

/// Removes a file; a file already gone is fine.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// Sets a file's access and/or modification time to `epoch` seconds
/// (`None` leaves that time unchanged), through its open descriptor.
pub fn set_times(f: &File, atime: Option<i64>, mtime: Option<i64>) -> io::Result<()> {
    let spec = |t: Option<i64>| match t {
        Some(s) => Timespec {
            tv_sec: s,
            tv_nsec: 0,
        },
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
    };
    let times = Timestamps {
        last_access: spec(atime),
        last_modification: spec(mtime),
    };
    rustix::fs::futimens(f, &times).map_err(io::Error::from)
}

/// Whether a process with this pid exists (signal 0 probe). A pid we may not
/// signal (EPERM) exists.
pub fn pid_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    matches!(
        rustix::process::test_kill_process(pid),
        Ok(()) | Err(Errno::PERM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_is_whole_and_refuses_symlinked_temp_dir_entries() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        replace_file(&p, b"one\n").unwrap();
        replace_file(&p, b"two\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two\n");
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = open_read(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn fifos_and_dirs_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(
            CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for p in [&fifo, &d.path().to_path_buf()] {
            assert!(is_refused(&open_read(p).unwrap_err()), "{p:?}");
            assert!(is_refused(&open_read_noatime_meta(p).unwrap_err()), "{p:?}");
        }
        assert!(is_refused(&open_rw_create(&fifo).unwrap_err()));
        let f = d.path().join("f");
        fs::write(&f, b"x").unwrap();
        assert!(open_read(&f).is_ok() && open_read_noatime_meta(&f).is_ok());
        assert!(open_rw_create(&f).is_ok());
    }

    #[test]
    fn install_replaces_files_but_never_displaces_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let (t1, _) = write_temp(d.path(), b"new").unwrap();
        let dest = d.path().join("dest");
        install(&t1, &dest).unwrap(); // no dest yet: plain rename
        let (t2, _) = write_temp(d.path(), b"newer").unwrap();
        install(&t2, &dest).unwrap(); // exchange + unlink
        assert_eq!(fs::read(&dest).unwrap(), b"newer");
        assert!(!t2.exists(), "the old file is gone");
        let dir = d.path().join("dir");
        fs::create_dir(&dir).unwrap();
        let (t3, _) = write_temp(d.path(), b"x").unwrap();
        assert!(install(&t3, &dir).is_err());
        assert!(dir.is_dir() && t3.is_file(), "nothing moved");
        // install_new: a new name in one rename; a file or a directory
        // found there after all is handled as install would.
        let (t4, _) = write_temp(d.path(), b"4").unwrap();
        let fresh = d.path().join("fresh");
        install_new(&t4, &fresh).unwrap();
        assert_eq!(fs::read(&fresh).unwrap(), b"4");
        let (t5, _) = write_temp(d.path(), b"5").unwrap();
        install_new(&t5, &fresh).unwrap();
        assert_eq!(fs::read(&fresh).unwrap(), b"5");
        assert!(!t5.exists(), "the old file is gone");
        assert!(install_new(&t3, &dir).is_err());
        assert!(dir.is_dir() && t3.is_file(), "nothing moved");
    }

    #[test]
    fn own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }
}

/// Waits until `fd` can take a write: a non-blocking standard output (the
/// pipe's other user set O_NONBLOCK on the shared file description) whose
/// reader is behind answers EAGAIN, which is not an error but a wait. The
/// one rule of the binary's stdout and the bash builtin's. Returns on an
/// error or hang-up too: the next write reports it.
pub fn wait_writable(fd: std::os::fd::BorrowedFd<'_>) {
    wait_for(fd, rustix::event::PollFlags::OUT);
}

/// [`wait_writable`] for reading: a non-blocking standard input whose
/// writer is behind (EAGAIN) is waited for, never taken for an error or
/// for its end.
pub fn wait_readable(fd: std::os::fd::BorrowedFd<'_>) {
    wait_for(fd, rustix::event::PollFlags::IN);
}

fn wait_for(fd: std::os::fd::BorrowedFd<'_>, what: rustix::event::PollFlags) {
    use rustix::event::{PollFd, poll};
    loop {
        let mut fds = [PollFd::new(&fd, what)];
        match poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => {}
            _ => return,
        }
    }
}

/// Runs `f` with `sigs` blocked in this thread, then takes back any of them
/// that `f` raised before restoring the mask: a write to a closed pipe
/// (SIGPIPE) or past `ulimit -f` (SIGXFSZ) then fails with its errno
/// (EPIPE, EFBIG), as in the binary, and never ends the process `f` runs
/// in by the signal's default action (the shell, for the bash builtin).
/// A signal the thread had blocked already is left alone (pending or not:
/// it is the caller's); one it had not blocked cannot have been pending
/// before, so one pending now was raised by `f`. Three system calls
/// (block, `sigtimedwait`, restore; two when all of `sigs` were blocked
/// already), one more for each signal taken back. A child
/// started meanwhile inherits the mask (std does not reset it): start it
/// with [`BeforeExec::EmptyMask`], or through [`with_callers_mask`], which
/// gives it the mask this thread had before.
pub fn without_signals<T>(sigs: &[libc::c_int], f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data that sigemptyset/sigaddset initialise;
    // pthread_sigmask changes only this thread's mask, which is restored
    // below. libc because neither nix 0.32 nor rustix (outside its runtime
    // module) offers sigtimedwait, which the sets are for.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    // The signals this call blocks anew (`fresh`): one of them pending
    // after `f` was raised by `f`; and, with those outer calls blocked,
    // what [`with_callers_mask`] unblocks for a command (`mine`).
    let outer = BLOCKED_HERE.with(|b| b.get());
    // SAFETY: sigset_t is plain data (Copy) that sigemptyset initialises;
    // sigismember/sigaddset only read and set bits of the sets built here.
    // libc, as above: these are the raw sets the calls around use (nix's
    // SigSet offers no sigtimedwait).
    let (fresh, mine, any) = unsafe {
        let mut fresh: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut fresh);
        let mut mine = outer.unwrap_or(fresh);
        let mut any = false;
        for &s in sigs {
            if libc::sigismember(&old, s) != 1 {
                libc::sigaddset(&mut fresh, s);
                libc::sigaddset(&mut mine, s);
                any = true;
            }
        }
        (fresh, mine, any)
    };
    BLOCKED_HERE.with(|b| b.set(Some(mine)));
    let r = f();
    BLOCKED_HERE.with(|b| b.set(outer));
    if any {
        take_pending(&fresh);
    }
    // SAFETY: restores the mask saved above, on this thread.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    r
}

thread_local! {
    /// The signals [`without_signals`] calls running on this thread blocked
    /// that were not blocked before them (`None`: no such call runs).
    static BLOCKED_HERE: std::cell::Cell<Option<libc::sigset_t>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f` — the start (spawn or exec) of a command — with the signals
/// that [`without_signals`] calls on this thread blocked unblocked again,
/// so the command inherits the mask this thread had before them, as it
/// would from a direct start (an applet that starts a command blocks
/// SIGXFSZ for its own writes: a blocked signal survives fork and exec).
/// One of them raised meanwhile by our own write (which failed with EFBIG
/// or EPIPE already) is taken back first, so unblocking it cannot end
/// this process. Blocked again afterwards. Outside such a call, just `f`.
pub fn with_callers_mask<T>(f: impl FnOnce() -> T) -> T {
    let Some(mine) = BLOCKED_HERE.with(|b| b.get()) else {
        return f();
    };
    take_pending(&mine);
    // SAFETY: `mine` is a signal set built by `without_signals`; the mask
    // changes only for those signals, on this thread, and they are blocked
    // again before returning. libc, as in `without_signals`.
    unsafe {
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &mine, std::ptr::null_mut());
    }
    let r = f();
    // SAFETY: as above (libc, the same raw set): blocks it again on this
    // thread.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &mine, std::ptr::null_mut());
    }
    r
}

/// Takes back every signal of `set` (blocked on this thread) that is
/// pending, without waiting: one `sigtimedwait` when none is.
fn take_pending(set: &libc::sigset_t) {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: reads `set`; a zero timeout takes a signal of it only when
    // one is pending. libc because neither nix 0.32 nor rustix (outside its
    // runtime module) offers sigtimedwait.
    while unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &zero) } > 0 {}
}

/// Sets each of `sigs` to be ignored (SIG_IGN): no handler is installed,
/// so this is safe in a freshly forked child too.
pub fn ignore_signals(sigs: &[libc::c_int]) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for &sig in sigs {
        if let Ok(sig) = Signal::try_from(sig) {
            let _ = set_action(sig, &ignore);
        }
    }
}

/// SIGPIPE's disposition when the binary started ([`ignore_sigpipe_at_start`]):
/// 0 not known (not the binary: the bash builtin, which asks the process
/// at each spawn), 1 at its default or caught, 2 ignored by the caller.
static SIGPIPE_AT_START: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The binary's start: SIGPIPE ignored for ffkit itself (a closed pipe is
/// an EPIPE it answers quietly), and whether its caller had ignored it
/// noted first, for the commands it starts ([`callers_sigpipe_ignored`]).
pub fn ignore_sigpipe_at_start() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let was = set_action(Signal::SIGPIPE, &ignore);
    let state = match was {
        Ok(old) if matches!(old.handler(), SigHandler::SigIgn) => 2,
        _ => 1,
    };
    SIGPIPE_AT_START.store(state, std::sync::atomic::Ordering::Relaxed);
}

/// Whether whoever started us ignores SIGPIPE (`trap '' PIPE`, a caller
/// that starts its children so): a command ffkit runs for it must then
/// start with SIGPIPE ignored too, as it would without ffkit in between,
/// not at the default std's spawn resets it to. In the binary, what the
/// start found; elsewhere (the bash builtin, inside the shell) the
/// process's disposition now, which is the shell's.
pub fn callers_sigpipe_ignored() -> bool {
    match SIGPIPE_AT_START.load(std::sync::atomic::Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => {
            // SAFETY: a null new action only reads the disposition into
            // `old`, plain data that sigaction fills; libc because nix's
            // sigaction always installs one.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
            }
        }
    }
}

/// Installs `action` for `sig`, returning the one it replaces: the crate's
/// one `sigaction` (neither std, rustix nor nix sets a disposition
/// safely). Crate-private, because its soundness rests on what the crate
/// installs: SIG_IGN ([`ignore_signals`]), the Redis relay's handler (one
/// write(2) to a pipe, async-signal-safe, errno untouched), or an action
/// an earlier call returned.
pub(crate) fn set_action(
    sig: nix::sys::signal::Signal,
    action: &nix::sys::signal::SigAction,
) -> io::Result<nix::sys::signal::SigAction> {
    // SAFETY: the handlers installed are the ones listed above, each safe
    // to run at any point of the program; sigaction itself is
    // async-signal-safe (a forked child may call it).
    unsafe { nix::sys::signal::sigaction(sig, action) }.map_err(io::Error::from)
}

/// What a child started with `std::process` does between fork and exec.
#[derive(Clone, Copy, Debug)]
pub enum BeforeExec {
    /// `PR_SET_PDEATHSIG` with this signal, checked against the parent
    /// dying first (then the exec is refused).
    DieWithParent(rustix::process::Signal),
    /// Every descriptor from 3 up marked close-on-exec (rather than closed,
    /// which keeps std's own exec-error pipe working).
    CloseFrom3,
    /// A named lock's holder (`lock::named`): a session of its own, SIGHUP,
    /// SIGINT and SIGPIPE ignored (an ignored disposition survives exec),
    /// and [`BeforeExec::CloseFrom3`] but for `keep`, which it inherits.
    Holder { keep: [std::os::fd::RawFd; 2] },
    /// An empty signal mask: a child started by the bash builtin (the
    /// binary for the forms that do not run in-process, `git` for the team
    /// lookup) inherits the mask of the call that starts it, SIGCHLD,
    /// SIGPIPE and SIGXFSZ blocked (`with_sigchld_blocked`,
    /// [`without_signals`]), and would hand it to the commands it runs.
    /// `defaults`: signals (bit `N-1` for signal N) set back to their
    /// default, those the shell ignores for itself but not for the
    /// commands it starts (the builtin's `shell::child_defaults`).
    EmptyMask { defaults: u64 },
    /// Nothing more than every child gets (SIGPIPE ignored again when the
    /// caller ignored it): a command run for the caller
    /// ([`as_callers_command`]).
    AsCaller,
}

/// Makes `cmd`, a command ffkit runs for its caller (`lock-acquire L --
/// CMD` on either backend, flock's, `perf-metrics time`), start with the
/// caller's signal dispositions, as the shell would start it. Two things
/// stood in the way: std's spawn resets SIGPIPE to its default (ffkit
/// ignores it for itself; a caller's `trap '' PIPE` was lost), which the
/// common step of [`before_exec`] undoes; and glibc's `posix_spawn`, which
/// std uses when no `pre_exec` is set, starts the child with signals 32
/// and 33 (its internal ones) ignored, which a forked child does not. So
/// a `pre_exec` is set (std then forks) under glibc always, and under
/// musl, whose `posix_spawn` leaves them alone (and saves the Redis lock
/// round a fork, BENCHMARKS.md), only when the caller ignores SIGPIPE.
pub fn as_callers_command(cmd: &mut std::process::Command) {
    if cfg!(target_env = "gnu") || callers_sigpipe_ignored() {
        before_exec(cmd, BeforeExec::AsCaller);
    }
}

/// Arranges `what` in `cmd`'s child, between fork and exec: the one
/// `pre_exec` of the crate.
pub fn before_exec(cmd: &mut std::process::Command, what: BeforeExec) {
    use std::os::unix::process::CommandExt;
    let parent = rustix::process::getpid();
    // std resets SIGPIPE to its default in the child before this closure
    // runs; a caller that ignores it gets it ignored again here.
    let pipe_ignored = callers_sigpipe_ignored();
    // SAFETY: the closure runs between fork and exec in the child and makes
    // only async-signal-safe system calls (prctl, getppid, setsid, signal,
    // sigprocmask, close_range, fcntl); it allocates nothing (the error is a
    // static message).
    unsafe {
        cmd.pre_exec(move || {
            let cloexec_from_3 = || {
                let r = libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                if r != 0 {
                    // Older kernels: mark them one by one.
                    for fd in 3..1024 {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                }
            };
            if pipe_ignored {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            }
            match what {
                BeforeExec::EmptyMask { defaults } => {
                    let mut none: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut none);
                    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                    for sig in 1..=64 {
                        if defaults & (1u64 << (sig - 1)) != 0 {
                            libc::signal(sig, libc::SIG_DFL);
                        }
                    }
                }
                BeforeExec::DieWithParent(sig) => {
                    rustix::process::set_parent_process_death_signal(Some(sig))?;
                    // The parent died before the prctl: do not run orphaned.
                    if rustix::process::getppid() != Some(parent) {
                        return Err(io::Error::other("ffkit went away"));
                    }
                }
                BeforeExec::CloseFrom3 => cloexec_from_3(),
                BeforeExec::AsCaller => {}
                BeforeExec::Holder { keep } => {
                    // A fresh child leads no process group, so this succeeds.
                    let _ = rustix::process::setsid();
                    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE] {
                        libc::signal(sig, libc::SIG_IGN);
                    }
                    cloexec_from_3();
                    for fd in keep {
                        libc::fcntl(fd, libc::F_SETFD, 0);
                    }
                }
            }
            Ok(())
        });
    }
}
