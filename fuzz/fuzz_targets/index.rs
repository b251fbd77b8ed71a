//! `.size-index` content: never panics; accepted content is exactly the
//! canonical decimal of the number plus a newline.
#![no_main]

use ffkit::cache::index::parse_number;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(n) = parse_number(data) {
        assert_eq!(data, format!("{n}\n").as_bytes());
    }
});
