//! Health rules over an aggregation: `OP:STAT CMP VALUE`, e.g.
//! `get_cache_size:p95<10ms`, `lock_acquire:max<2s`, `*:p99<100ms`.
//!
//! Grammar (docs/metrics.md):
//! - `OP` is an operation name or `*` (every operation with data). The rule
//!   is split at its last `:`, so names may contain `:`.
//! - `STAT` is `count`, `total`, `avg`, `min`, `max` or `pQ` with
//!   `0 < Q ≤ 100` (`p50`, `p99.9`).
//! - `CMP` is `<`, `<=`, `>` or `>=`.
//! - `VALUE` is a non-negative number; for durations with an optional unit
//!   `ns`, `us`/`µs`, `ms` (the default), `s`, `m`, `h`; for `count`, a bare
//!   number.

use serde::Serialize;

use super::aggregate::{OpStats, Report};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    Count,
    Total,
    Avg,
    Min,
    Max,
    /// A quantile, 0 < q ≤ 1.
    Quantile(f64),
}

impl Stat {
    fn measure(self, s: &OpStats) -> f64 {
        match self {
            Stat::Count => s.count as f64,
            Stat::Total => s.total,
            Stat::Avg => s.avg(),
            Stat::Min => s.min,
            Stat::Max => s.max,
            Stat::Quantile(q) => s.quantile(q),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cmp {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Cmp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }
}

/// One parsed rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The rule as typed.
    pub text: String,
    /// `None` for `*`.
    pub op: Option<String>,
    /// As typed: `p95`, `max`.
    pub stat_name: String,
    pub stat: Stat,
    pub cmp: Cmp,
    /// Milliseconds, or a count.
    pub threshold: f64,
}

fn malformed(text: &str, why: &str) -> Error {
    Error::Validation(format!("malformed rule '{text}': {why}"))
}

/// Parses one rule; any mistake is a validation error (exit 2).
pub fn parse_rule(text: &str) -> Result<Rule> {
    let (op, cond) = text
        .rsplit_once(':')
        .ok_or_else(|| malformed(text, "expected OP:STAT<VALUE, e.g. get_cache_size:p95<10ms"))?;
    let op = match op {
        "*" => None,
        _ => {
            super::validate_op(op).map_err(|_| malformed(text, "bad operation name"))?;
            Some(op.to_string())
        }
    };
    let at = cond
        .find(['<', '>'])
        .ok_or_else(|| malformed(text, "expected a comparison <, <=, > or >="))?;
    let (stat_name, rest) = cond.split_at(at);
    let (cmp, value) = if let Some(v) = rest.strip_prefix("<=") {
        (Cmp::Le, v)
    } else if let Some(v) = rest.strip_prefix(">=") {
        (Cmp::Ge, v)
    } else if let Some(v) = rest.strip_prefix('<') {
        (Cmp::Lt, v)
    } else if let Some(v) = rest.strip_prefix('>') {
        (Cmp::Gt, v)
    } else {
        return Err(malformed(text, "expected a comparison <, <=, > or >="));
    };
    let stat = match stat_name {
        "count" => Stat::Count,
        "total" => Stat::Total,
        "avg" => Stat::Avg,
        "min" => Stat::Min,
        "max" => Stat::Max,
        p if p.starts_with('p') => {
            let q = super::read::parse_ms(&p.as_bytes()[1..])
                .filter(|&q| q > 0.0 && q <= 100.0)
                .ok_or_else(|| malformed(text, "a percentile is p followed by 0 < Q <= 100"))?;
            Stat::Quantile(q / 100.0)
        }
        _ => {
            return Err(malformed(
                text,
                "unknown statistic (use count, total, avg, min, max or pQ such as p95)",
            ));
        }
    };
    let threshold = parse_value(value, stat == Stat::Count).map_err(|why| malformed(text, why))?;
    Ok(Rule {
        text: text.to_string(),
        op,
        stat_name: stat_name.to_string(),
        stat,
        cmp,
        threshold,
    })
}

/// A threshold: ms for durations (unit optional), a bare number for counts.
fn parse_value(v: &str, count: bool) -> std::result::Result<f64, &'static str> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n = super::read::parse_ms(num.as_bytes()).ok_or("expected a non-negative number")?;
    if count {
        return if unit.is_empty() {
            Ok(n)
        } else {
            Err("a count takes no unit")
        };
    }
    let scale = match unit {
        "ns" => 1e-6,
        "us" | "µs" => 1e-3,
        "" | "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return Err("unknown unit (use ns, us, ms, s, m or h)"),
    };
    Ok(n * scale)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Missing,
}

/// The verdict of one rule on one operation.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub rule: String,
    pub op: String,
    pub stat: String,
    pub cmp: Cmp,
    /// The threshold in ms (or a count).
    pub threshold: f64,
    /// The measured value in ms (or a count); `None` without data.
    pub value: Option<f64>,
    /// Rows behind the value.
    pub count: u64,
    pub status: Status,
}

/// Evaluates every rule; `*` yields one outcome per operation with data (or
/// one `missing` outcome when there is none).
pub fn evaluate(report: &Report, rules: &[Rule]) -> Vec<Outcome> {
    let mut out = Vec::new();
    for r in rules {
        let targets: Vec<(String, Option<&OpStats>)> = match &r.op {
            Some(op) => vec![(op.clone(), report.get(op))],
            None if report.ops.is_empty() => vec![("*".to_string(), None)],
            None => report.ops.iter().map(|s| (s.op.clone(), Some(s))).collect(),
        };
        for (op, stats) in targets {
            let value = stats.map(|s| r.stat.measure(s));
            let status = match value {
                None => Status::Missing,
                Some(v) if r.cmp.holds(v, r.threshold) => Status::Pass,
                Some(_) => Status::Fail,
            };
            out.push(Outcome {
                rule: r.text.clone(),
                op,
                stat: r.stat_name.clone(),
                cmp: r.cmp,
                threshold: r.threshold,
                value,
                count: stats.map_or(0, |s| s.count),
                status,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        let r = parse_rule("get_cache_size:p95<10ms").unwrap();
        assert_eq!(r.op.as_deref(), Some("get_cache_size"));
        assert_eq!(
            (r.stat, r.cmp, r.threshold),
            (Stat::Quantile(0.95), Cmp::Lt, 10.0)
        );
        let r = parse_rule("lock_acquire:max<2s").unwrap();
        assert_eq!((r.stat, r.threshold), (Stat::Max, 2000.0));
        let r = parse_rule("write_cache:avg<=1ms").unwrap();
        assert_eq!((r.stat, r.cmp, r.threshold), (Stat::Avg, Cmp::Le, 1.0));
        let r = parse_rule("*:p99<100ms").unwrap();
        assert_eq!(r.op, None);
        let r = parse_rule("a:b:count>=5").unwrap();
        assert_eq!(
            (r.op.as_deref(), r.stat, r.cmp, r.threshold),
            (Some("a:b"), Stat::Count, Cmp::Ge, 5.0)
        );
        assert_eq!(parse_rule("x:p99.9>250us").unwrap().threshold, 0.25);
        assert_eq!(parse_rule("x:min>0.5").unwrap().threshold, 0.5);
    }

    #[test]
    fn rejects_malformed_rules() {
        for bad in [
            "",
            "x",
            "x:p95",
            "x:p95=10",
            "x:p95<",
            "x:p95<10parsecs",
            "x:p0<1",
            "x:p101<1",
            "x:median<1",
            ":p95<1",
            "a b:p95<1",
            "x:count<5ms",
            "x:p95<-1",
            "x:p95<<1",
        ] {
            let e = parse_rule(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("malformed rule"), "{e}");
        }
    }
}
