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

/// The shape of the VibeTrees seed's `GET /api/performance/metrics`
/// (docs/metrics.md, "Serving the metrics"): `{"operations": [{"name",
/// "count", "avg", "min", "max", "total", "p50", "p95", "p99"}, …],
/// "totalTime": …, "avgWorktreeCreation": …}`, durations in ms as in
/// [`Json`], operations sorted by name. `totalTime` is the sum of every
/// operation's total; `avgWorktreeCreation` the avg of the operation
/// [`WORKTREE_OP`] (the seed's name for a whole worktree creation), `null`
/// when the log has none.
pub struct ApiJson;

/// The operation whose avg is the seed's `avgWorktreeCreation`.
pub(crate) const WORKTREE_OP: &str = "create-worktree-total";

impl Exporter for ApiJson {
    fn render(&self, report: &Report) -> String {
        let mut out = String::from("{\"operations\": [");
        let mut total = 0.0;
        for (i, s) in report.ops.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            total += s.total;
            let name = serde_json::to_string(&s.op).unwrap_or_else(|_| "\"\"".into());
            out.push_str(&format!(
                "{{\"name\": {name}, \"count\": {}, \"avg\": {}, \"min\": {}, \"max\": {}, \"total\": {}",
                s.count,
                json_ms(s.avg()),
                json_ms(s.min),
                json_ms(s.max),
                json_ms(s.total)
            ));
            for (q, label) in QUANTILES {
                out.push_str(&format!(", \"{label}\": {}", json_ms(s.quantile(q))));
            }
            out.push('}');
        }
        let worktree = report
            .ops
            .iter()
            .find(|s| s.op == WORKTREE_OP)
            .map_or_else(|| "null".to_string(), |s| json_ms(s.avg()));
        out.push_str(&format!(
            "], \"totalTime\": {}, \"avgWorktreeCreation\": {worktree}}}\n",
            json_ms(total)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::aggregate::{Aggregator, Filter};
    use crate::metrics::read::ScanCounts;

    #[test]
    fn the_api_shape_is_the_seeds() {
        let mut a = Aggregator::new(Filter::default());
        for (op, ms) in [
            ("create-worktree-total", 26012.45),
            ("create-worktree-total", 31289.67),
            ("git-worktree-add", 1567.25),
        ] {
            a.add(1, op, ms);
        }
        let r = a.finish(ScanCounts {
            rows: 3,
            malformed: 0,
        });
        let v: serde_json::Value = serde_json::from_str(&ApiJson.render(&r)).unwrap();
        let ops = v["operations"].as_array().unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["name"], "create-worktree-total");
        assert_eq!(ops[0]["count"], 2);
        assert_eq!(ops[0]["avg"], 28651.06);
        assert_eq!(
            (ops[0]["min"].clone(), ops[0]["max"].clone()),
            (26012.45.into(), 31289.67.into())
        );
        assert_eq!(ops[0]["total"], 57302.12);
        assert_eq!(ops[1]["p99"], 1567.25);
        assert_eq!(v["totalTime"], 58869.37);
        assert_eq!(v["avgWorktreeCreation"], 28651.06);
        let v: serde_json::Value =
            serde_json::from_str(&ApiJson.render(&Report::default())).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"operations": [], "totalTime": 0, "avgWorktreeCreation": null})
        );
    }
}
