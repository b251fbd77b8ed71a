//! `perf-metrics check` rules: never panic; an accepted rule has a
//! non-negative threshold, a quantile in (0, 1], and parses the same way
//! again from its own text.
#![no_main]

use ffkit::metrics::check::{Stat, parse_rule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rule) = parse_rule(text) {
        assert!(rule.threshold >= 0.0, "{text}");
        if let Stat::Quantile(q) = rule.stat {
            assert!(q > 0.0 && q <= 1.0, "{text}");
        }
        assert_eq!(parse_rule(&rule.text).ok(), Some(rule.clone()));
    }
});
