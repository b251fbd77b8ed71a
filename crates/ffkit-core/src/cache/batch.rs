//! Batch input: `key:value` lines (the old `batch_write_cache` format) or
//! JSON lines, parsed whole before anything is written.
//!
//! Lines format: the key ends at the first `:`, the value is the rest of the
//! line, byte for byte; empty lines are skipped; one trailing CR is removed
//! (files edited on Windows), so a value cannot end in CR there — use jsonl.
//! JSON lines: `{"key": "...", "value": "...", "ttl": N}` (`ttl` optional,
//! unknown fields refused); values are any Unicode text, newlines included.

use std::borrow::Cow;

use serde::Deserialize;

use super::key;

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
}
