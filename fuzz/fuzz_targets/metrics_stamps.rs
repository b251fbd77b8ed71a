//! `perf-metrics record` inputs: durations in ms and `START END` stamps in
//! every unit: never panic, and an accepted duration is finite and >= 0.
#![no_main]

use ffkit::metrics::{StampUnit, duration_between, parse_duration_ms, validate_op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ms) = parse_duration_ms(s) {
        assert!(ms.is_finite() && ms >= 0.0);
    }
    let _ = validate_op(s);
    let (a, b) = s.split_once(' ').unwrap_or((s, s));
    for unit in [None, Some("s"), Some("ms"), Some("us"), Some("ns"), Some("auto")] {
        let unit = unit.map(|u| StampUnit::parse(u).expect("a known unit"));
        if let Ok(ms) = duration_between(a, b, unit.flatten()) {
            assert!(ms.is_finite() && ms >= 0.0, "{a} {b} -> {ms}");
        }
    }
});
