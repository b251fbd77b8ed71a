//! The intent journal that makes the index crash-proof.
//!
//! Every change to the cache (a write, a batch, an eviction) runs under the
//! cache's exclusive lock as: write the journal into the lock file `.lock`
//! itself (one `pwrite` from offset 0 of the entry-count record that
//! starts the file, see [`super::index`], set to the count the change will
//! leave, followed by the journal, through the descriptor that holds the
//! lock) naming the index totals before the change and, per key, the bytes
//! the index counted for it and the temp files that will replace it; apply
//! the renames/unlinks; write the new index; cut `.lock` back to the
//! record. The record is trusted only while no journal follows it, so
//! writing the count early is safe: a roll-forward starts from the
//! journal's `before` and rewrites the record when it differs. A
//! process killed anywhere in between leaves a longer `.lock`, and the
//! next call, which learns the length from the `fstat` it makes of `.lock`
//! after taking the lock anyway, *rolls it forward*: it
//! installs the temp files not yet installed (told apart by inode number,
//! since an install exchanges names), then sets the index to
//! `before − Σ old sizes + Σ sizes now on disk` for just the journaled keys.
//! Repair therefore costs time proportional to the change in flight, not a
//! full walk, and does not care at which step the process died. A new
//! key's unnamed temp files ([`Record::unnamed`]) cannot be installed
//! after their writer died; a pair half linked is taken back instead.
//!
//! The journal lives in `.lock` rather than in a file of its own because a
//! new file costs an inode allocation, the most expensive step of a write
//! on ext4 (and the floor a write of a new key pays twice anyway, for the
//! value and its sidecar): the lock file is opened by every change already,
//! and a `pwrite` plus an `ftruncate` into it allocate no inode (the
//! record's one block is the file's for good). `.journal`, a file, is still
//! read (and removed) when present: it is the mark below, or the journal an
//! older ffkit left; so is a journal at the very start of `.lock` (no record
//! before it), as the ffkit before the record wrote it.
//!
//! On a full disk a journal with content cannot be written, and that is
//! exactly when space must be freed. A removal then marks itself with an
//! empty `.journal` ([`mark_unknown`]: an inode, no data block) before it
//! unlinks anything; an empty journal means "the index is unknown", and the
//! next call walks to repair it. Exact either way, a walk's cost only for a
//! removal that was killed on a full disk.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::index::Totals;
use crate::error::{Error, Result};
use crate::fsutil;

pub const JOURNAL_FILE: &str = ".journal";

/// One key's change. No temp files means the entry is removed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    /// Bytes the index counts for `KEY` and `KEY.meta` before the change.
    pub old_bytes: u64,
    /// Whether `KEY` counted as an entry before the change.
    pub old_entry: bool,
    /// Temp file (name in the cache dir) that becomes `KEY`.
    pub value_tmp: Option<String>,
    /// Its inode number: tells an installed file from a pending one.
    #[serde(default)]
    pub value_ino: u64,
    /// Temp file that becomes `KEY.meta`.
    pub meta_tmp: Option<String>,
    #[serde(default)]
    pub meta_ino: u64,
    /// The two temp files are unnamed (`O_TMPFILE`; both temp names are
    /// then [`UNNAMED_TMP`]) and are linked at the key's two names, which
    /// were both free: a roll-forward cannot install them (they died with
    /// their writer) and takes a half-linked pair back instead (see
    /// `Cache::apply_unnamed`). Written only when set, so a journal of
    /// named temps reads as an older ffkit wrote it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unnamed: bool,
}

/// The temp name a journal gives an unnamed temp file: a name ffkit never
/// creates (its temps are `.tmp-PID-N`), so an older ffkit rolling such a
/// journal forward finds nothing to install and measures the key.
pub const UNNAMED_TMP: &str = ".tmp-unnamed";

#[derive(Debug, Serialize, Deserialize)]
pub struct Journal {
    pub before: Totals,
    pub records: Vec<Record>,
}

impl Journal {
    /// Writes the journal into `dir`: a new file (O_EXCL, no symlink
    /// followed) filled by one `write`, so it is whole, or empty if the
    /// writer was killed between creating and filling it — and an empty
    /// journal means nothing was changed yet, as the renames start only
    /// after this returns ([`Journal::read`] removes it). The caller holds the
    /// cache's exclusive lock and has just found no journal there; should one
    /// appear anyway (not ffkit's), it is replaced by rename instead.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| Error::General(format!("cannot encode the journal: {e}")))?;
        let path = dir.join(JOURNAL_FILE);
        match fsutil::create_new(&path) {
            Ok(mut f) => f.write_all(&bytes).map_err(|e| {
                let _ = fs::remove_file(&path);
                Error::io("cannot write", &path, e)
            }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fsutil::replace_file(&path, &bytes)
            }
            Err(e) => Err(Error::io("cannot create", &path, e)),
        }
    }

    /// Reads a left-over journal: `Ok(None)` when there is none, `Err` with a
    /// reason when it is damaged (the caller then rebuilds by walking).
    /// A symlink (or FIFO, dir...) planted at `.journal` is never followed:
    /// it counts as damaged.
    ///
    /// An empty journal says only that a change may be in flight — a
    /// removal with no room for its journal ([`mark_unknown`]), or a writer
    /// killed between creating its journal and filling it — so, like a
    /// damaged one, it is an `Err`: the caller walks. Call only under the
    /// cache's exclusive lock.
    pub fn read(dir: &Path) -> Result<Option<std::result::Result<Journal, String>>> {
        let path = dir.join(JOURNAL_FILE);
        let mut b = Vec::new();
        match fsutil::open_read(&path).and_then(|mut f| f.read_to_end(&mut b)) {
            Ok(0) => Ok(Some(Err(INTERRUPTED.to_string()))),
            Ok(_) => Ok(Some(
                serde_json::from_slice(&b).map_err(|e| format!("damaged journal: {e}")),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if fsutil::is_refused(&e) => {
                Ok(Some(Err(format!("the journal is refused: {e}"))))
            }
            Err(e) => Err(Error::io("cannot read", &path, e)),
        }
    }

    pub fn remove(dir: &Path) -> Result<()> {
        fsutil::remove_if_exists(&dir.join(JOURNAL_FILE))
    }
}

/// Writes `record` (the entry-count record, see [`super::index`]) and `j`
/// after it into the lock file `lock`, held exclusively, from offset 0: one
/// `pwrite`, whole (it stays within the file's first page, which a SIGKILL
/// does not tear) or, for a journal longer than a page cut short, a file
/// longer than the record whose journal does not parse (damaged: the next
/// call walks). The record is trusted only while the file is exactly the
/// record. On failure (a full disk) the file is put back as it was: the
/// record of `old`, the count it held, rewritten (inside the file's first
/// block, which needs no new space) and the file cut after it; or, when it
/// had none or that fails, cut to nothing (no record: the next call
/// walks). So nothing is left that looks like a change in flight, nor a
/// count that was never reached. Returns the journal's bytes (without the
/// record).
pub fn write_into(
    j: &Journal,
    lock: &File,
    record: &[u8],
    old: Option<u64>,
    path: &Path,
) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut bytes = record.to_vec();
    serde_json::to_writer(&mut bytes, j)
        .map_err(|e| Error::General(format!("cannot encode the journal: {e}")))?;
    match lock.write_all_at(&bytes, 0) {
        Ok(()) => Ok((bytes.len() - record.len()) as u64),
        Err(e) => {
            let restored = old.is_some_and(|n| {
                let r = super::index::format_count(n);
                lock.write_all_at(&r, 0).is_ok() && lock.set_len(r.len() as u64).is_ok()
            });
            if !restored {
                let _ = lock.set_len(0);
            }
            Err(Error::io("cannot write the journal into", path, e))
        }
    }
}

/// Reads the journal held in the lock file: `len` bytes from `at` (what its
/// holder found after taking the lock): as [`Journal::read`] does for
/// `.journal`. Call only under the cache's exclusive lock.
pub fn read_from(lock: &File, at: u64, len: u64) -> Result<std::result::Result<Journal, String>> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(MAX_LEN)];
    let mut n = 0;
    while n < b.len() {
        match lock.read_at(&mut b[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Ok(Err(format!(
                    "the journal cannot be read: {}",
                    crate::error::os_reason(&e)
                )));
            }
        }
    }
    b.truncate(n);
    Ok(serde_json::from_slice(&b).map_err(|e| format!("damaged journal: {e}")))
}

/// Longest journal read back from `.lock` (a batch of 100,000 long keys is
/// far below); anything longer was not written by ffkit and does not parse.
const MAX_LEN: usize = 1 << 30;

/// Cuts the lock file back to `keep` bytes (the entry-count record, or
/// nothing in a file without one): the change it journaled is complete.
pub fn clear(lock: &File, keep: u64, path: &Path) -> Result<()> {
    lock.set_len(keep)
        .map_err(|e| Error::io("cannot clear the journal in", path, e))
}

/// Why an empty journal is walked over: what `cache-size` says it rebuilt.
pub const INTERRUPTED: &str = "unknown after an interrupted change (empty journal)";

/// Leaves an empty `.journal` in `dir`: "a change is in flight, its size is
/// unknown: walk". It needs an inode but no data block, so a removal can
/// mark itself on a full disk, where a journal with content cannot be
/// written; a journal already there (one a repair could not finish for
/// want of space, its renames done) is cut to nothing, which frees blocks.
/// No symlink is followed and only a regular file is accepted.
pub fn mark_unknown(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(JOURNAL_FILE))?;
    let m = f.metadata()?;
    if m.file_type().is_file() {
        // 0600 whatever the umask, from the fstat made anyway.
        fsutil::fix_mode_of(&f, m.mode() & 0o7777, fsutil::FILE_MODE)
    } else {
        Err(fsutil::not_regular())
    }
}

/// Whether a `.journal` file is present (one failed `stat` on the fast
/// path). The journal in `.lock` is told by the lock file's length.
pub fn present(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(JOURNAL_FILE)).is_ok()
}

impl Record {
    /// A record ffkit could have written: a valid key and plain temp-file
    /// names, both or neither. Anything else means the journal was tampered
    /// with, and the caller rebuilds by walking instead of trusting it.
    pub fn is_sane(&self) -> bool {
        let tmp_ok = |t: &Option<String>| {
            t.as_deref()
                .is_none_or(|n| n.starts_with(fsutil::TEMP_PREFIX) && !n.contains('/'))
        };
        super::key::validate_bytes(self.key.as_bytes()).is_ok()
            && tmp_ok(&self.value_tmp)
            && tmp_ok(&self.meta_tmp)
            && self.value_tmp.is_some() == self.meta_tmp.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal is a new file written whole; an empty one (a removal's
    /// mark, or a writer killed after creating it) says "walk".
    #[test]
    fn a_journal_is_written_whole_and_an_empty_one_means_walk() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal {
            before: Totals {
                bytes: 7,
                entries: 1,
            },
            records: vec![],
        };
        j.write(d.path()).unwrap();
        let back = Journal::read(d.path()).unwrap().unwrap().unwrap();
        assert_eq!(back.before, j.before);
        Journal::remove(d.path()).unwrap();
        fs::write(d.path().join(JOURNAL_FILE), b"").unwrap();
        assert!(matches!(Journal::read(d.path()), Ok(Some(Err(_)))));
        j.write(d.path()).unwrap();
        mark_unknown(d.path()).unwrap();
        assert!(matches!(Journal::read(d.path()), Ok(Some(Err(_)))));
        Journal::remove(d.path()).unwrap();
        assert!(!present(d.path()));
        std::os::unix::fs::symlink("elsewhere", d.path().join(JOURNAL_FILE)).unwrap();
        assert!(mark_unknown(d.path()).is_err());
        assert!(!d.path().join("elsewhere").exists());
    }

    #[test]
    fn a_symlinked_journal_is_damaged_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        let j = Journal {
            before: Totals::default(),
            records: vec![],
        };
        fs::write(&target, serde_json::to_vec(&j).unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, d.path().join(JOURNAL_FILE)).unwrap();
        assert!(matches!(Journal::read(d.path()), Ok(Some(Err(_)))));
        fs::remove_file(d.path().join(JOURNAL_FILE)).unwrap();
        fs::copy(&target, d.path().join(JOURNAL_FILE)).unwrap();
        assert!(matches!(Journal::read(d.path()), Ok(Some(Ok(_)))));
    }
}
