//! The key rule: never panics; an accepted key is a safe single file name
//! whose sidecar name also fits, and is returned unchanged.
#![no_main]

use ffkit::cache::key::{MAX_KEY_BYTES, validate_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = validate_bytes(data) {
        assert_eq!(k.as_bytes(), data);
        assert!(!k.is_empty() && k.len() <= MAX_KEY_BYTES);
        assert!(format!("{k}.meta").len() <= 255);
        assert!(!k.starts_with('.') && !k.ends_with(".meta"));
        assert!(!k.contains('/') && !k.bytes().any(|b| b < 0x20 || b == 0x7f));
        let p = std::path::Path::new(k);
        assert_eq!(p.components().count(), 1);
        assert!(matches!(
            p.components().next(),
            Some(std::path::Component::Normal(_))
        ));
    }
});
