//! Metrics log rows and `perf-metrics record` inputs: never panics; a parsed
//! row has a non-empty operation without ',' or newline and a non-negative
//! duration below `MAX_MS` (so no total overflows); a row written by ffkit's own formatter parses back
//! to the same values; user durations and `START END` stamps in every unit
//! give a non-negative duration below `MAX_MS` or an error.
#![no_main]

use ffkit::metrics::log::format_row;
use ffkit::metrics::read::{Line, MAX_MS, parse_line, parse_ms};
use ffkit::metrics::{StampUnit, duration_between, parse_duration_ms, validate_op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        if let Line::Row(r) = parse_line(line) {
            assert!(!r.op.is_empty() && !r.op.contains([',', '\n']));
            assert!(r.ms >= 0.0 && r.ms < MAX_MS);
            assert!(r.timestamp >= 0);
            if validate_op(r.op).is_ok() && r.ms < 1e12 {
                let again = format_row(r.timestamp, r.op, r.ms);
                let again = again.strip_suffix('\n').unwrap_or(&again);
                match parse_line(again.as_bytes()) {
                    Line::Row(b) => {
                        assert_eq!((b.timestamp, b.op), (r.timestamp, r.op));
                        // format_row keeps microsecond precision.
                        assert!((b.ms - r.ms).abs() <= 0.0005 + r.ms * 1e-12, "{again}");
                    }
                    other => panic!("own row {again:?} parsed as {other:?}"),
                }
            }
        }
    }
    if let Some(v) = parse_ms(data) {
        assert!(v.is_finite() && v >= 0.0);
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ms) = parse_duration_ms(s) {
        assert!((0.0..MAX_MS).contains(&ms));
    }
    let (a, b) = s.split_once(' ').unwrap_or((s, s));
    for unit in ["auto", "s", "ms", "us", "ns"] {
        let unit = StampUnit::parse(unit).expect("a known unit");
        if let Ok(ms) = duration_between(a, b, unit) {
            assert!((0.0..MAX_MS).contains(&ms), "{a} {b} -> {ms}");
        }
    }
});
