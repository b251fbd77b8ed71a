//! `KEY.meta` sidecars: never panics; a parsed sidecar re-serialises to
//! JSON that parses back to the same value.
#![no_main]

use ffkit::cache::Meta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Meta::parse(data) {
        let again = Meta::parse(&m.to_json()).expect("own output parses");
        assert_eq!(again, m);
        let _ = m.is_expired(i64::MIN);
        let _ = m.is_expired(i64::MAX);
    }
});
