//! The JSON records ffkit reads back from files anyone with access to the
//! directory could have edited: `KEY.meta` sidecars and lock holder records
//! (plus lock-name validation on the same bytes). Never panics; a parsed
//! record re-serialises to JSON that parses back to the same value; an
//! accepted lock name is a single plain file name.
#![no_main]

use ffkit::cache::Meta;
use ffkit::lock::holder::Holder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Meta::parse(data) {
        let again = Meta::parse(&m.to_json()).expect("own output parses");
        assert_eq!(again, m);
        let _ = m.is_expired(i64::MIN);
        let _ = m.is_expired(i64::MAX);
    }
    if let Some(h) = Holder::parse(data) {
        assert!(h.since.is_finite());
        let again = Holder::parse(&h.to_line()).expect("own record parses");
        // serde_json (without `float_roundtrip`) may read a float back one
        // ulp off; everything else must match exactly.
        let tol = h.since.abs() * 4.0 * f64::EPSILON;
        assert!((again.since - h.since).abs() <= tol, "{again:?} vs {h:?}");
        assert_eq!(Holder { since: h.since, ..again }, h);
        assert!(h.age() >= 0.0);
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(n) = ffkit::lock::validate_name(s)
    {
        assert!(!n.is_empty() && n.len() <= 200 && !n.starts_with('.'));
        assert!(!n.contains('/') && !n.bytes().any(|b| b.is_ascii_control()));
        let p = std::path::Path::new(n);
        assert!(matches!(
            p.components().next(),
            Some(std::path::Component::Normal(_))
        ) && p.components().count() == 1);
    }
});
