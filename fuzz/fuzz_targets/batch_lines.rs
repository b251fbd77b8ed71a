//! `key:value` batch lines: never panics; every item has a valid key and
//! a value equal to its line's bytes after the first ':' (one trailing CR
//! removed); good + bad lines never exceed the non-empty lines.
#![no_main]

use ffkit::cache::batch::{Format, parse};
use ffkit::cache::key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (items, bad) = parse(data, Format::Lines);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let non_empty = lines
        .iter()
        .filter(|l| !l.strip_suffix(b"\r").unwrap_or(l).is_empty())
        .count();
    assert_eq!(items.len() + bad.len(), non_empty);
    for b in &bad {
        assert!(b.line >= 1 && b.line <= lines.len());
        assert!(!b.why.is_empty());
    }
    for it in &items {
        assert_eq!(key::validate_bytes(it.key.as_bytes()), Ok(it.key.as_str()));
        assert!(it.ttl.is_none());
        assert!(!it.value.contains(&b'\n'));
        // Round trip: re-serialising the item parses back to the same item.
        let mut line = it.key.as_bytes().to_vec();
        line.push(b':');
        line.extend_from_slice(&it.value);
        if !line.ends_with(b"\r") {
            let (again, none) = parse(&line, Format::Lines);
            assert!(none.is_empty());
            assert_eq!(again.len(), 1);
            assert_eq!(again[0], *it);
        }
    }
});
