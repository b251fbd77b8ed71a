//! Seconds, whole seconds, durations and sizes: never panic, accepted
//! values are in range, and formatting a number parses back to it.
#![no_main]

use std::time::Duration;

use ffkit::units::{format_bytes, parse_duration, parse_seconds, parse_size, parse_whole_seconds};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let max = Duration::from_secs(1_000_000_001);
    if let Ok(d) = parse_seconds(s) {
        assert!(d <= max);
    }
    if let Ok(n) = parse_whole_seconds(s) {
        assert!(n <= 1_000_000_000);
        assert_eq!(parse_whole_seconds(&n.to_string()), Ok(n));
        assert_eq!(parse_seconds(&n.to_string()), Ok(Duration::from_secs(n)));
    }
    if let Ok(d) = parse_duration(s) {
        assert!(d <= max);
    }
    if let Ok(n) = parse_size(s) {
        assert_eq!(parse_size(&n.to_string()), Ok(n));
        let _ = format_bytes(n);
    }
    if data.len() >= 8 {
        let n = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
        assert!(!format_bytes(n).is_empty());
    }
});
