//! The size index: `.size-index` (total bytes, the contract's file that old
//! scripts `cat`) and `.entry-count` (number of entries), each one decimal
//! number and a newline, always replaced whole by rename.
//!
//! Anything else in those files (missing, empty, text, a sign, leading
//! zeros, no trailing newline, more than fits in 64 bits) is "invalid" and
//! makes the caller rebuild by walking.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

pub const INDEX_FILE: &str = ".size-index";
pub const COUNT_FILE: &str = ".entry-count";

/// What the index accounts for: bytes of every entry and sidecar file, and
/// the number of entries (value files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub bytes: u64,
    pub entries: u64,
}

/// Parses an index file's content: exactly `digits` + `\n`, canonical.
pub fn parse_number(content: &[u8]) -> Option<u64> {
    let digits = content.strip_suffix(b"\n")?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Reads one index file: `Ok(None)` when it is missing or invalid.
pub fn read_number(path: &Path) -> Result<Option<u64>> {
    // The open's fstat gives the length: a valid file is read by one
    // `read` (no second one to find its end).
    let (mut f, len) = match fsutil::open_read_len(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // A symlink (or FIFO, dir...) planted at the index is as good as no index.
        Err(e) if fsutil::is_refused(&e) => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    // ffkit never writes these files in place, so the length is the
    // content's: anything as long as the buffer is too long to be valid.
    let mut buf = [0u8; 32];
    if len >= buf.len() as u64 {
        return Ok(None);
    }
    let mut n = 0;
    while (n as u64) < len {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("cannot read", path, e)),
        }
    }
    Ok(parse_number(&buf[..n]))
}

/// Reads both files; `None` unless both are valid.
pub fn read(dir: &Path) -> Result<Option<Totals>> {
    let Some(bytes) = read_number(&dir.join(INDEX_FILE))? else {
        return Ok(None);
    };
    Ok(read_number(&dir.join(COUNT_FILE))?.map(|entries| Totals { bytes, entries }))
}

/// Writes both files, each by rename: count first, so the contract's
/// `.size-index` is the last word.
pub fn write(dir: &Path, t: Totals) -> Result<()> {
    write_changed(dir, None, t)
}

/// [`write`] for a change from `held`, the totals both files hold now (read
/// or written under the cache's lock, which is still held): a file whose
/// number did not change is left alone rather than replaced by an identical
/// copy (an overwrite keeps the entry count; a value of the same size keeps
/// the bytes). `None` writes both, as a roll-forward must: a crashed writer
/// may have replaced one file already.
pub fn write_changed(dir: &Path, held: Option<Totals>, t: Totals) -> Result<()> {
    if held.is_none_or(|h| h.entries != t.entries) {
        fsutil::replace_file(&dir.join(COUNT_FILE), format!("{}\n", t.entries).as_bytes())?;
    }
    if held.is_none_or(|h| h.bytes != t.bytes) {
        fsutil::replace_file(&dir.join(INDEX_FILE), format!("{}\n", t.bytes).as_bytes())?;
    }
    Ok(())
}

/// Whether an index file exists at all (for the "missing" vs "invalid" note).
pub fn exists(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(INDEX_FILE)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose number did not change keeps its inode (no copy renamed
    /// over it); one that changed, or any with no held totals, is replaced.
    #[test]
    fn only_changed_files_are_replaced_unless_nothing_is_held() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let ino = |name| fs::metadata(d.path().join(name)).unwrap().ino();
        let t = Totals {
            bytes: 10,
            entries: 2,
        };
        write(d.path(), t).unwrap();
        let (count, bytes) = (ino(COUNT_FILE), ino(INDEX_FILE));
        let t2 = Totals { bytes: 12, ..t };
        write_changed(d.path(), Some(t), t2).unwrap();
        assert_eq!(ino(COUNT_FILE), count);
        assert_ne!(ino(INDEX_FILE), bytes);
        assert_eq!(read(d.path()).unwrap(), Some(t2));
        let bytes = ino(INDEX_FILE);
        write_changed(d.path(), None, t2).unwrap();
        assert_ne!(ino(COUNT_FILE), count);
        assert_ne!(ino(INDEX_FILE), bytes);
        assert_eq!(read(d.path()).unwrap(), Some(t2));
    }

    #[test]
    fn parses_only_canonical_numbers() {
        assert_eq!(parse_number(b"0\n"), Some(0));
        assert_eq!(parse_number(b"1048576\n"), Some(1_048_576));
        assert_eq!(parse_number(b"18446744073709551615\n"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"\n",
            b"12",
            b"-5\n",
            b"abc\n",
            b"1 2\n",
            b"012\n",
            b"1\0\n",
            b"1180591620717411303424\n",
            b"18446744073709551616\n",
            b"5\n\n",
            b" 5\n",
        ] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }
}
