//! JSON-lines batch input: never panics; every item has a valid key; an
//! item re-encoded as JSON parses back to the same item.
#![no_main]

use ffkit::cache::batch::{Format, parse};
use ffkit::cache::key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (items, _bad) = parse(data, Format::Jsonl);
    for it in &items {
        assert_eq!(key::validate_bytes(it.key.as_bytes()), Ok(it.key.as_str()));
        let value = std::str::from_utf8(&it.value).expect("jsonl values are text");
        let mut j = serde_json::json!({ "key": it.key, "value": value });
        if let Some(t) = it.ttl {
            j["ttl"] = t.into();
        }
        let line = j.to_string();
        let (again, bad) = parse(line.as_bytes(), Format::Jsonl);
        assert!(bad.is_empty(), "{line}");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].key, it.key);
        assert_eq!(*again[0].value, *it.value);
        assert_eq!(again[0].ttl, it.ttl);
    }
});
