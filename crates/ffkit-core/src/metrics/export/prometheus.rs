//! The Prometheus text exposition format (version 0.0.4), for
//! node_exporter's textfile collector: one `summary` family,
//! `ffkit_operation_duration_seconds`, with a series per operation
//! (`operation` label) carrying the p50/p95/p99 quantiles, `_sum` and
//! `_count`. Seconds, as Prometheus conventions ask for base units.

use super::{Exporter, QUANTILES};
use crate::metrics::aggregate::Report;

pub struct Prometheus;

pub(crate) const METRIC: &str = "ffkit_operation_duration_seconds";

/// Escapes a label value: backslash, double quote and newline.
pub(crate) fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A float as Prometheus reads it (Go's ParseFloat): plain decimal.
fn num(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

impl Exporter for Prometheus {
    fn render(&self, report: &Report) -> String {
        let mut out = format!(
            "# HELP {METRIC} Wall time of FlowForge cache and lock operations, from the ffkit metrics log.\n# TYPE {METRIC} summary\n"
        );
        for s in &report.ops {
            let op = escape_label(&s.op);
            for (q, _) in QUANTILES {
                out.push_str(&format!(
                    "{METRIC}{{operation=\"{op}\",quantile=\"{q}\"}} {}\n",
                    num(s.quantile(q) / 1000.0)
                ));
            }
            out.push_str(&format!(
                "{METRIC}_sum{{operation=\"{op}\"}} {}\n",
                num(s.total / 1000.0)
            ));
            out.push_str(&format!(
                "{METRIC}_count{{operation=\"{op}\"}} {}\n",
                s.count
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_numbers() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(num(0.000123), "0.000123");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(0.0), "0");
    }
}
