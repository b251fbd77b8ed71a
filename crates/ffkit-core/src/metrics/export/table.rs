//! The human table: one row per operation, right-aligned columns, each
//! duration in the unit that reads best (µs, ms or s).

use super::{Exporter, QUANTILES};
use crate::metrics::aggregate::Report;

pub struct Table;

/// A duration in ms, as a person reads it: `850 µs`, `12.3 ms`, `2.05 s`.
pub fn human_ms(ms: f64) -> String {
    if ms == 0.0 {
        "0".into()
    } else if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{} ms", three_digits(ms))
    } else {
        format!("{} s", three_digits(ms / 1000.0))
    }
}

/// Three significant digits (at least the integer part).
fn three_digits(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

impl Exporter for Table {
    fn render(&self, report: &Report) -> String {
        if report.ops.is_empty() {
            return String::new();
        }
        let mut header: Vec<String> = ["OPERATION", "COUNT", "TOTAL", "AVG", "MIN", "MAX"]
            .map(String::from)
            .to_vec();
        header.extend(QUANTILES.iter().map(|(_, l)| l.to_uppercase()));
        let mut rows = vec![header];
        for s in &report.ops {
            let mut r = vec![
                // Control characters escaped: the table goes to a terminal.
                crate::metrics::shown_op(&s.op).into_owned(),
                s.count.to_string(),
                human_ms(s.total),
                human_ms(s.avg()),
                human_ms(s.min),
                human_ms(s.max),
            ];
            r.extend(QUANTILES.iter().map(|&(q, _)| human_ms(s.quantile(q))));
            rows.push(r);
        }
        let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..rows[0].len()).map(width).collect();
        let mut out = String::new();
        for r in &rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c == 0 {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str("  ");
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}
