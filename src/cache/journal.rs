//! The intent journal that makes the index crash-proof.
//!
//! Every change to the cache (a write, a batch, an eviction) runs under the
//! cache's exclusive lock as: write `.journal` (a new file, one write)
//! naming the index totals before the change and, per key, the bytes the
//! index counted for it and the temp files that will replace it; apply the
//! renames/unlinks; write the new index; remove `.journal`. A process killed anywhere in between
//! leaves `.journal` behind, and the next call *rolls it forward*: it
//! installs the temp files not yet installed (told apart by inode number,
//! since an install exchanges names), then sets the index to
//! `before − Σ old sizes + Σ sizes now on disk` for just the journaled keys.
//! Repair therefore costs time proportional to the change in flight, never a
//! full walk, and does not care at which step the process died.

use std::fs;
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
}

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
    /// An empty journal (its writer was killed before it wrote a byte, so
    /// before it changed anything) is removed and counts as none. Call only
    /// under the cache's exclusive lock.
    pub fn read(dir: &Path) -> Result<Option<std::result::Result<Journal, String>>> {
        let path = dir.join(JOURNAL_FILE);
        let mut b = Vec::new();
        match fsutil::open_read(&path).and_then(|mut f| f.read_to_end(&mut b)) {
            Ok(0) => {
                Journal::remove(dir)?;
                Ok(None)
            }
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

/// Whether a journal is present (one failed open on the fast path).
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

    /// A journal is a new file written whole; an empty one (its writer was
    /// killed after creating it, before changing anything) counts as none
    /// and is removed.
    #[test]
    fn a_journal_is_written_whole_and_an_empty_one_is_none() {
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
        assert!(Journal::read(d.path()).unwrap().is_none());
        assert!(!present(d.path()));
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
