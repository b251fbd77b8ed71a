//! Reading the metrics log: a streaming row parser over fixed-size buffers.
//!
//! The log is three unquoted fields per line (operation names are validated
//! on write and can hold no comma, quote or newline), so a plain byte
//! splitter (`memchr` for newlines and commas) does the job of a CSV reader
//! without its quoting state machine; it reads any size of file in a 256 KiB
//! buffer. Comment lines (`#…`) and blank lines are skipped; every other line
//! that is not `timestamp,operation,duration_ms` with an integer (or
//! fractional) epoch timestamp, a non-empty UTF-8 operation and a
//! non-negative duration below [`MAX_MS`] is counted as malformed and
//! skipped.

use std::io::{self, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

/// One parsed row, borrowing the operation name from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row<'a> {
    pub timestamp: i64,
    pub op: &'a str,
    pub ms: f64,
}

/// What a line is.
#[derive(Debug, PartialEq)]
pub enum Line<'a> {
    Row(Row<'a>),
    /// A comment or blank line.
    Skip,
    Malformed,
}

/// Classifies one line (without its newline; a trailing `\r` is ignored).
pub fn parse_line(line: &[u8]) -> Line<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() || line[0] == b'#' || line.iter().all(u8::is_ascii_whitespace) {
        return Line::Skip;
    }
    match parse_row(line) {
        Some(r) => Line::Row(r),
        None => Line::Malformed,
    }
}

fn parse_row(line: &[u8]) -> Option<Row<'_>> {
    let c1 = memchr::memchr(b',', line)?;
    let rest = &line[c1 + 1..];
    let c2 = memchr::memchr(b',', rest)?;
    let (ts, op, ms) = (&line[..c1], &rest[..c2], &rest[c2 + 1..]);
    if op.is_empty() || memchr::memchr(b',', ms).is_some() {
        return None;
    }
    Some(Row {
        timestamp: parse_timestamp(ts)?,
        op: std::str::from_utf8(op).ok()?,
        ms: parse_duration(ms)?,
    })
}

/// Epoch seconds: digits, optionally with a fraction (ignored).
fn parse_timestamp(b: &[u8]) -> Option<i64> {
    let int = match memchr::memchr(b'.', b) {
        Some(i) if b[i + 1..].iter().all(u8::is_ascii_digit) => &b[..i],
        Some(_) => return None,
        None => b,
    };
    if int.is_empty() || int.len() > 18 || !int.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        int.iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0')),
    )
}

/// A duration in milliseconds: a finite, non-negative decimal number.
pub fn parse_ms(b: &[u8]) -> Option<f64> {
    // Only digits and one dot: rejects "inf", "nan", "-1", "1e3", spaces.
    if b.is_empty() || !b.iter().all(|&c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    let v: f64 = std::str::from_utf8(b).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// The bound (exclusive) of a row's duration: 10^15 ms, about 31,700
/// years. Far above any real duration, and low enough that no sum of a
/// log's rows (fewer than 10^290 of them) can overflow to infinity, which
/// `--json` cannot print (`"total": inf` is not JSON). Before, any finite
/// value was a row, and two rows of 1.7e308 ms made the report invalid.
pub const MAX_MS: f64 = 1e15;

/// A row's duration: [`parse_ms`] below [`MAX_MS`].
pub fn parse_duration(b: &[u8]) -> Option<f64> {
    parse_ms(b).filter(|&v| v < MAX_MS)
}

/// Counts from one pass over the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanCounts {
    pub rows: u64,
    pub malformed: u64,
}

const BUF: usize = 256 * 1024;

/// What [`for_each_line`] hands over for a line of [`BUF`] bytes or more:
/// no comma, so [`parse_line`] calls it malformed (and `cleanup` drops it).
const OVERLONG: &[u8] = b"\0";

/// Calls `f` for each line of `r` (without the newline) in a 256 KiB buffer.
/// A line that fills the whole buffer is far longer than any row: it is
/// read past, never held, and `f` gets one malformed stand-in for it
/// ([`OVERLONG`]). Before, the buffer grew to hold it, so a log (or a file
/// `CACHE_PERF_METRICS` named by mistake) of 200 MB without a newline cost
/// 270 MB of memory per reader, and the server one such pass per filter.
pub fn for_each_line(mut r: impl Read, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    let mut filled = 0usize;
    // The bytes before `buf[0]` began a line too long to keep.
    let mut overlong = false;
    loop {
        if filled == buf.len() {
            overlong = true;
            filled = 0;
        }
        let n = match r.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if overlong {
                f(OVERLONG);
            } else if filled > 0 {
                f(&buf[..filled]);
            }
            return Ok(());
        }
        filled += n;
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &buf[..filled]) {
            if overlong {
                f(OVERLONG);
                overlong = false;
            } else {
                f(&buf[start..nl]);
            }
            start = nl + 1;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

/// Streams the rows of the log at `path`; a missing log has no rows.
pub fn scan(path: &Path, mut f: impl FnMut(Row<'_>)) -> Result<ScanCounts> {
    let file = match fsutil::open_read(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ScanCounts::default()),
        Err(e) => return Err(Error::io("cannot open", path, e)),
    };
    let mut counts = ScanCounts::default();
    for_each_line(file, |line| match parse_line(line) {
        Line::Row(r) => {
            counts.rows += 1;
            f(r);
        }
        Line::Skip => {}
        Line::Malformed => counts.malformed += 1,
    })
    .map_err(|e| Error::io("cannot read", path, e))?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            parse_line(b"1632123456,write_cache,15"),
            Line::Row(Row {
                timestamp: 1632123456,
                op: "write_cache",
                ms: 15.0
            })
        );
        assert_eq!(
            parse_line(b"1632123456,get_cache_size,0.123\r"),
            Line::Row(Row {
                timestamp: 1632123456,
                op: "get_cache_size",
                ms: 0.123
            })
        );
        assert_eq!(parse_line(b"# timestamp,operation,duration_ms"), Line::Skip);
        assert_eq!(parse_line(b""), Line::Skip);
        assert_eq!(parse_line(b"  "), Line::Skip);
        for bad in [
            &b"garbage"[..],
            b"1,op",
            b"1,op,",
            b"1,,5",
            b"x,op,5",
            b"1,op,-5",
            b"1,op,inf",
            b"1,op,NaN",
            b"1,op,5,6",
            b"1,op,5ms",
            b"1,op,1.2.3",
            b"-1,op,5",
            b"1,\xff,5",
        ] {
            assert_eq!(
                parse_line(bad),
                Line::Malformed,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(
            matches!(parse_line(b"1632123456.75,op,1"), Line::Row(r) if r.timestamp == 1632123456)
        );
    }

    #[test]
    fn splitting_handles_chunk_boundaries_and_long_lines() {
        let mut data = Vec::new();
        let long = "x".repeat(BUF - 100);
        for i in 0..100_000 {
            data.extend_from_slice(format!("{i},op,{i}\n").as_bytes());
        }
        data.extend_from_slice(long.as_bytes());
        data.extend_from_slice(b"\n1,op,2");
        let mut n = 0;
        let mut last = Vec::new();
        let mut saw_long = false;
        for_each_line(&data[..], |l| {
            n += 1;
            saw_long |= l.len() == long.len();
            last = l.to_vec();
        })
        .unwrap();
        assert_eq!(n, 100_002);
        assert!(saw_long);
        assert_eq!(last, b"1,op,2");
        // A line just below the buffer is whole; one of the buffer's size
        // or more is one malformed stand-in, never held.
        for (len, whole) in [(BUF - 1, true), (BUF, false), (BUF * 3 + 7, false)] {
            let mut data = b"1,op,1\n".to_vec();
            data.extend(std::iter::repeat_n(b'x', len));
            data.extend_from_slice(b"\n2,op,2\n");
            let mut lines = Vec::new();
            for_each_line(&data[..], |l| lines.push(l.to_vec())).unwrap();
            assert_eq!(lines.len(), 3, "{len}");
            assert_eq!(lines[1].len() == len, whole, "{len}");
            assert_eq!(parse_line(&lines[1]), Line::Malformed, "{len}");
            assert_eq!(lines[2], b"2,op,2", "{len}");
        }
    }
}
