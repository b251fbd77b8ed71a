//! Batch input: `key:value` lines (the old `batch_write_cache` format) or
//! JSON lines, parsed whole before anything is written.
//!
//! Lines format: the key ends at the first `:`, the value is the rest of the
//! line, byte for byte; empty lines are skipped; one trailing CR is removed
//! (files edited on Windows), so a value cannot end in CR there — use jsonl.
//! JSON lines: `{"key": "...", "value": "...", "ttl": N}` (`ttl` optional,
//! unknown fields refused); values are any Unicode text, newlines included.
//!
//! Batch output (`--read`): [`write_record`] writes one record as its value
//! comes, never holding the value whole (a value of 300 MB was held twice).

use std::borrow::Cow;
use std::io::{self, Read, Write};

use serde::Deserialize;

use super::key;
use super::store::Body;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Lines,
    Jsonl,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub key: String,
    pub value: Cow<'a, [u8]>,
    /// A per-line TTL (jsonl only).
    pub ttl: Option<u64>,
}

/// A line that cannot be written, by 1-based line number.
#[derive(Debug, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub why: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonItem {
    key: String,
    value: String,
    #[serde(default)]
    ttl: Option<u64>,
}

/// Parses all of `input`; returns the good items and the bad lines.
pub fn parse(input: &[u8], format: Format) -> (Vec<Item<'_>>, Vec<BadLine>) {
    let mut items = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in input.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let parsed = match format {
            Format::Lines => parse_line(line),
            Format::Jsonl => parse_json(line),
        };
        match parsed {
            Ok(item) => items.push(item),
            Err(why) => bad.push(BadLine { line: i + 1, why }),
        }
    }
    (items, bad)
}

fn parse_line(line: &[u8]) -> Result<Item<'_>, String> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| "no ':' between key and value".to_string())?;
    let k = key::validate_bytes(&line[..colon])?;
    Ok(Item {
        key: k.to_string(),
        value: Cow::Borrowed(&line[colon + 1..]),
        ttl: None,
    })
}

fn parse_json(line: &[u8]) -> Result<Item<'static>, String> {
    let j: JsonItem = serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    key::validate_bytes(j.key.as_bytes())?;
    if let Some(t) = j.ttl {
        // The same range as `--ttl`: one rule for every TTL.
        crate::units::parse_whole_seconds(&t.to_string()).map_err(|e| format!("ttl: {e}"))?;
    }
    Ok(Item {
        key: j.key,
        value: Cow::Owned(j.value.into_bytes()),
        ttl: j.ttl,
    })
}

/// How much of a value is copied at a time.
const CHUNK: usize = 64 * 1024;

/// What stopped [`write_record`]: reading the value, or writing the record.
#[derive(Debug)]
pub enum RecordError {
    Read(io::Error),
    Write(io::Error),
}

/// Writes one `--read` record to `w`: `key:value\n`, or
/// `{"key":…,"value":…}\n` with the value as `String::from_utf8_lossy`
/// of its bytes (what serde_json wrote of the whole value: the same
/// bytes), [`CHUNK`] bytes at a time.
pub fn write_record(
    w: &mut dyn Write,
    format: Format,
    key: &str,
    body: Body,
) -> Result<(), RecordError> {
    let mut body: Box<dyn Read> = match body {
        Body::File(f) => Box::new(f),
        Body::Bytes(v) => Box::new(io::Cursor::new(v)),
    };
    let wr = RecordError::Write;
    match format {
        Format::Lines => {
            w.write_all(key.as_bytes()).map_err(wr)?;
            w.write_all(b":").map_err(wr)?;
            copy(&mut body, w)?;
            w.write_all(b"\n").map_err(wr)
        }
        Format::Jsonl => {
            // A key is short, UTF-8 without controls (`é`, `"`, `\`, U+2028
            // are valid): serde_json writes it as it wrote the whole record.
            let k = serde_json::to_string(key).map_err(|e| wr(io::Error::other(e)))?;
            w.write_all(b"{\"key\":").map_err(wr)?;
            w.write_all(k.as_bytes()).map_err(wr)?;
            w.write_all(b",\"value\":\"").map_err(wr)?;
            copy_json_lossy(&mut body, w)?;
            w.write_all(b"\"}\n").map_err(wr)
        }
    }
}

/// One `read` of up to `buf.len()` bytes (0: the end), EINTR retried.
fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, RecordError> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            n => return n.map_err(RecordError::Read),
        }
    }
}

fn copy(r: &mut dyn Read, w: &mut dyn Write) -> Result<(), RecordError> {
    let mut buf = vec![0; CHUNK];
    loop {
        match read_some(r, &mut buf)? {
            0 => return Ok(()),
            n => w.write_all(&buf[..n]).map_err(RecordError::Write)?,
        }
    }
}

/// Copies `r` as the inside of a JSON string, as serde_json writes
/// `String::from_utf8_lossy` of all of it: a sequence cut by a chunk's end
/// is carried to the next chunk, so only what the whole value has invalid
/// becomes U+FFFD (one per maximal invalid part, as `from_utf8_lossy`).
fn copy_json_lossy(r: &mut dyn Read, w: &mut dyn Write) -> Result<(), RecordError> {
    let mut buf = vec![0; CHUNK];
    let mut have = 0;
    loop {
        let n = read_some(r, &mut buf[have..])?;
        let end = have + n;
        let eof = n == 0;
        let mut carry = 0;
        let mut chunks = buf[..end].utf8_chunks().peekable();
        while let Some(c) = chunks.next() {
            escape_json(c.valid(), w).map_err(RecordError::Write)?;
            let bad = c.invalid();
            if bad.is_empty() {
                continue;
            }
            // The last invalid part, if it is the start of a sequence the
            // next read may complete, waits for that read.
            let cut = chunks.peek().is_none()
                && !eof
                && std::str::from_utf8(bad).is_err_and(|e| e.error_len().is_none());
            if cut {
                carry = bad.len();
            } else {
                w.write_all("\u{FFFD}".as_bytes())
                    .map_err(RecordError::Write)?;
            }
        }
        if eof {
            return Ok(());
        }
        buf.copy_within(end - carry..end, 0);
        have = carry;
    }
}

/// Writes `s` escaped as serde_json escapes a string's characters: `"`,
/// `\\` and the controls below U+0020 (`\b \t \n \f \r` short, the
/// others `\u00xx`); everything else as it is.
fn escape_json(s: &str, w: &mut dyn Write) -> io::Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0..0x20 => b"",
            _ => continue,
        };
        w.write_all(&bytes[start..i])?;
        if short.is_empty() {
            let u = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ];
            w.write_all(&u)?;
        } else {
            w.write_all(short)?;
        }
        start = i + 1;
    }
    w.write_all(&bytes[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_first_colon() {
        let (items, bad) = parse(b"a:1\n\nb:x:y\r\nc:\n", Format::Lines);
        assert!(bad.is_empty());
        let kv: Vec<(&str, &[u8])> = items.iter().map(|i| (i.key.as_str(), &*i.value)).collect();
        assert_eq!(kv, [("a", &b"1"[..]), ("b", b"x:y"), ("c", b"")]);
    }

    #[test]
    fn bad_lines_are_numbered() {
        let (items, bad) = parse(b"ok:1\nnocolon\n:empty\n.hidden:x\n", Format::Lines);
        assert_eq!(items.len(), 1);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn jsonl() {
        let (items, bad) = parse(
            b"{\"key\":\"k\",\"value\":\"a\\nb\",\"ttl\":5}\n{\"key\":\"k2\",\"value\":\"\"}\nnot json\n{\"key\":\"x\"}\n{\"key\":\"y\",\"value\":\"v\",\"extra\":1}\n",
            Format::Jsonl,
        );
        assert_eq!(
            items[0],
            Item {
                key: "k".into(),
                value: Cow::Borrowed(b"a\nb"),
                ttl: Some(5)
            }
        );
        assert_eq!(items[1].ttl, None);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [3, 4, 5]);
    }

    #[test]
    fn jsonl_ttls_have_the_range_of_ttl_option() {
        let ok = b"{\"key\":\"k\",\"value\":\"v\",\"ttl\":1000000000}\n";
        assert_eq!(parse(ok, Format::Jsonl).0.len(), 1);
        for ttl in ["1000000001", "18446744073709551615", "-1", "1.5"] {
            let line = format!("{{\"key\":\"k\",\"value\":\"v\",\"ttl\":{ttl}}}\n");
            let (items, bad) = parse(line.as_bytes(), Format::Jsonl);
            assert!(items.is_empty() && bad.len() == 1, "{ttl}");
        }
    }

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn jsonl_of(key: &str, v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_record(&mut out, Format::Jsonl, key, Body::Bytes(v.to_vec())).unwrap();
        out
    }

    #[test]
    fn read_records_are_what_serde_json_wrote_of_the_whole_value() {
        let mut cases: Vec<Vec<u8>> = (0u8..=0x7f).map(|b| vec![b'a', b, b'z']).collect();
        cases.push("é€😀\u{7f}\u{2028}".as_bytes().to_vec());
        cases.push(b"\xff\xfe ok \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf".to_vec());
        cases.push(b"tail cut \xf0\x9f\x98".to_vec());
        cases.push(Vec::new());
        for v in &cases {
            let whole = serde_json::json!({ "key": "k", "value": String::from_utf8_lossy(v) });
            let want = format!("{whole}\n").into_bytes();
            assert_eq!(jsonl_of("k", v), want, "{v:?}");
            // Split at every byte: sequences cut between reads.
            let mut out = Vec::new();
            copy_json_lossy(&mut Trickle(v, 1), &mut out).unwrap();
            let inner = serde_json::to_string(&String::from_utf8_lossy(v)).unwrap();
            assert_eq!(out, inner.as_bytes()[1..inner.len() - 1], "{v:?}");
        }
        let mut lines = Vec::new();
        write_record(
            &mut lines,
            Format::Lines,
            "k",
            Body::Bytes(b"a\xffb".to_vec()),
        )
        .unwrap();
        assert_eq!(lines, b"k:a\xffb\n");
    }

    #[test]
    fn a_value_longer_than_a_chunk_is_copied_whole() {
        let mut v = "😀".repeat(CHUNK).into_bytes();
        v.insert(CHUNK - 1, 0xff);
        let inner = serde_json::to_string(&String::from_utf8_lossy(&v)).unwrap();
        let mut out = Vec::new();
        copy_json_lossy(&mut Trickle(&v, CHUNK - 3), &mut out).unwrap();
        assert_eq!(out, inner.as_bytes()[1..inner.len() - 1]);
    }
}
