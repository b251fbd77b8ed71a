//! The JSON report health checks read: a stable key order (operations by
//! name; fields count, total, avg, min, max, p50, p95, p99), durations in
//! milliseconds.

use super::{Exporter, QUANTILES, json_ms};
use crate::metrics::aggregate::Report;

pub struct Json;

impl Exporter for Json {
    fn render(&self, report: &Report) -> String {
        let mut out = String::from("{");
        for (i, s) in report.ops.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            // Operation names are validated on write, but a hand-edited log
            // may hold anything: escape through serde_json.
            let name = serde_json::to_string(&s.op).unwrap_or_else(|_| "\"\"".into());
            out.push_str(&format!(
                "{name}: {{\"count\": {}, \"total\": {}, \"avg\": {}, \"min\": {}, \"max\": {}",
                s.count,
                json_ms(s.total),
                json_ms(s.avg()),
                json_ms(s.min),
                json_ms(s.max)
            ));
            for (q, label) in QUANTILES {
                out.push_str(&format!(", \"{label}\": {}", json_ms(s.quantile(q))));
            }
            out.push('}');
        }
        out.push_str("}\n");
        out
    }
}
