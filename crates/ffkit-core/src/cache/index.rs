//! The size index: `.size-index`, the total bytes (the contract's file that
//! old scripts `cat`: one decimal number and a newline, always replaced
//! whole by an exchange of names, so a reader without the lock never sees
//! half of it; the file exchanged in is the spare, `.size-index.spare`,
//! rewritten only under a lease that proves nobody has it open: see
//! [`write_bytes`] and docs/architecture.md, "Why `.size-index` can be
//! recycled"),
//! and the entry count, ffkit's own number, kept as a fixed-width record at
//! the start of the lock file `.lock` ([`COUNT_RECORD_LEN`] bytes,
//! `entries=` and 20 zero-padded digits and a newline), rewritten in place
//! by one `pwrite` under the cache's exclusive lock and read under its
//! lock (shared or exclusive), so no reader sees it half-written.
//!
//! Why the count moved there: a file of its own (`.entry-count`, still
//! read once from an older cache and then removed) had to be replaced by
//! rename as `.size-index` is, which made a write of a new key create one
//! more file (a temp, then an exchange and an unlink), and file creation is
//! the dearest step of a write. The lock file is open and locked by every
//! change anyway; the change's journal follows the record in it.
//!
//! Anything else in `.size-index` (missing, empty, text, a sign, leading
//! zeros, no trailing newline, more than fits in 64 bits) is "invalid" and
//! makes the caller rebuild by walking; so is a record that does not parse.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

pub const INDEX_FILE: &str = ".size-index";
/// The index's spare: the file the next change of the bytes rewrites and
/// exchanges with `.size-index` (see [`write_bytes`]). Never read.
pub const SPARE_FILE: &str = ".size-index.spare";
/// Where an older ffkit kept the entry count: read when `.lock` holds no
/// record yet, then removed once the record holds the count.
pub const COUNT_FILE: &str = ".entry-count";

/// Bytes of the entry-count record at the start of `.lock`.
pub const COUNT_RECORD_LEN: usize = COUNT_TAG.len() + 20 + 1;
const COUNT_TAG: &[u8] = b"entries=";

/// The record for `n` entries: `entries=00000000000000000042\n`.
pub fn format_count(n: u64) -> Vec<u8> {
    format!("entries={n:020}\n").into_bytes()
}

/// Parses a record: exactly the tag, 20 digits and a newline.
pub fn parse_count(b: &[u8]) -> Option<u64> {
    let digits = b.strip_prefix(COUNT_TAG)?.strip_suffix(b"\n")?;
    if digits.len() != 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What the index accounts for: bytes of every entry and sidecar file, and
/// the number of entries (value files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub bytes: u64,
    pub entries: u64,
}

/// Parses an index file's content: exactly `digits` + `\n`, canonical.
pub fn parse_number(content: &[u8]) -> Option<u64> {
    parse_canonical(content.strip_suffix(b"\n")?)
}

/// The one rule for a number ffkit wrote and reads back as text: a
/// canonical non-negative decimal integer (`0`, or a digit 1-9 and more
/// digits; no sign, space, leading zero, fraction or exponent) that fits
/// in 64 bits. The index files are read by it, and so are the numbers of
/// an entry's record on Redis (`backend/redis/lua/cache_lib.lua`'s
/// `canon` is this rule in Lua, within the 15 digits a Lua number holds
/// exactly; `tests/it/redis_cache.rs` runs both on one table).
pub fn parse_canonical(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Reads one index file: `Ok(None)` when it is missing or invalid.
///
/// One `open` and one `read` of up to 32 bytes, no `fstat`: a valid file
/// is at most 21 bytes (20 digits and a newline), and a read of a regular
/// file returns all it has up to the buffer's size, so a read that fills
/// the buffer means "too long" (invalid) and a shorter one is the whole
/// file. What the `fstat` checked before is answered by the open and the
/// read themselves: a symlink fails the open (`O_NOFOLLOW`), a directory
/// the read (EISDIR), a FIFO opens without blocking (`O_NONBLOCK`) and
/// reads as empty or as whatever its writer put in it, which is no worse
/// than a regular file planted there with the same text (both are the
/// user's own dir's content).
pub fn read_number(path: &Path) -> Result<Option<u64>> {
    let mut f = match fsutil::open_read_unchecked(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // A symlink planted at the index is as good as no index.
        Err(e) if fsutil::is_refused(&e) => return Ok(None),
        // The spare being rewritten under its lease, reached by a reader
        // without the lock whose lookup found it at `.size-index` just
        // before a writer exchanged it away (`write_bytes`): not readable
        // now. The caller then reads under the lock, after that writer.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    let mut buf = [0u8; 32];
    let n = loop {
        match f.read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A directory (EISDIR) or a FIFO with nothing in it (EAGAIN)
            // planted at the name: no index.
            Err(e)
                if e.raw_os_error() == Some(libc::EISDIR)
                    || e.kind() == io::ErrorKind::WouldBlock =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Error::io("cannot read", path, e)),
        }
    };
    if n == buf.len() {
        return Ok(None);
    }
    Ok(parse_number(&buf[..n]))
}

/// Replaces `.size-index` with `bytes`, by an exchange of names (a reader
/// opens the old file or the new one, each whole). `known`: what is at
/// `.size-index` is ffkit's regular file, read or written under the lock
/// the caller holds; only then is the spare used, as an exchange with
/// whatever is at the name would move a planted directory to the spare's.
///
/// The new number goes into [`SPARE_FILE`] (rewritten in place, only while
/// nobody has it open: [`fsutil::rewrite_unopened`]), which is then
/// exchanged with `.size-index`; the old index becomes the spare. No inode
/// is created or freed. Where the spare cannot be used (missing, open
/// elsewhere, not ours, no leases here), a new temp file is written and
/// exchanged as before; the displaced index becomes the spare if there is
/// none, else it is unlinked. Nothing else ever trusts the spare's
/// content: a writer killed while rewriting it leaves it torn, and the
/// next writer rewrites it whole.
pub fn write_bytes(dir: &Path, bytes: u64, known: bool) -> Result<()> {
    let content = format!("{bytes}\n");
    let dest = dir.join(INDEX_FILE);
    if !known {
        return match fsutil::replace_file(&dest, content.as_bytes()) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EISDIR) => {
                replace_planted_dir(&dest, content.as_bytes())
            }
            r => r,
        };
    }
    let spare = dir.join(SPARE_FILE);
    let missing = match fsutil::rewrite_unopened(&spare, content.as_bytes()) {
        fsutil::Rewrite::Done => {
            return fsutil::exchange(&spare, &dest)
                .or_else(|_| fsutil::install(&spare, &dest))
                .map_err(|e| Error::io("cannot rename into", &dest, e));
        }
        fsutil::Rewrite::Missing => true,
        fsutil::Rewrite::Unusable => false,
    };
    let (tmp, mut f) = fsutil::create_temp(dir)?;
    if let Err(e) = f.write_all(content.as_bytes()) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot write", &tmp, e));
    }
    drop(f);
    if fsutil::exchange(&tmp, &dest).is_ok() {
        // The old index is at `tmp` now: the spare, if there is none.
        if !(missing && fsutil::rename_noreplace(&tmp, &spare).is_ok()) {
            let _ = fs::remove_file(&tmp);
        }
        return Ok(());
    }
    fsutil::install(&tmp, &dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot rename into", &dest, e)
    })
}

/// A directory planted at `.size-index` (read as no index) would refuse
/// every index write, and so every write and repair of the cache. An empty
/// one holds nothing: it is removed (`rmdir`, which never removes content)
/// and the index written in its place. One with something in it is not
/// ffkit's to delete: the cache is damaged (exit 10) until it is moved away.
fn replace_planted_dir(dest: &Path, content: &[u8]) -> Result<()> {
    match fs::remove_dir(dest) {
        Ok(()) => fsutil::replace_file(dest, content),
        // Gone meanwhile: the name is free again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => fsutil::replace_file(dest, content),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOTEMPTY | libc::EEXIST | libc::EBUSY)
            ) =>
        {
            Err(Error::Corruption(format!(
                "{} is a directory that is not empty, where the size index belongs: move it away",
                dest.display()
            )))
        }
        Err(e) => Err(Error::io("cannot remove the directory", dest, e)),
    }
}

/// Whether an index file exists at all (for the "missing" vs "invalid" note).
pub fn exists(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(INDEX_FILE)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record is fixed-width and round-trips; anything else is no record.
    #[test]
    fn the_count_record_is_fixed_width_and_strict() {
        for n in [0, 42, u64::MAX] {
            let r = format_count(n);
            assert_eq!(r.len(), COUNT_RECORD_LEN);
            assert_eq!(parse_count(&r), Some(n));
        }
        for bad in [
            &b""[..],
            b"entries=42\n",
            b"entries=0000000000000000004x\n",
            b"entries=00000000000000000042",
            b"{\"before\":{\"bytes\":0,\"entries\":0},\"records\":[]}",
            b"entries=99999999999999999999\n",
        ] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
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
