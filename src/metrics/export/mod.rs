//! Rendering an aggregation [`Report`]: one exporter per output format behind
//! the [`Exporter`] trait (hyperfine's shape), so the CLI picks a format and
//! the formats are tested one by one.
//!
//! - [`Table`]: the aligned human table (default).
//! - [`Json`]: `{"OP": {"count":…, "total":…, "avg":…, "min":…, "max":…,
//!   "p50":…, "p95":…, "p99":…}, …}` in milliseconds — the first three keys
//!   as the old `get_performance_metrics` printed them.
//! - [`Prometheus`]: the text exposition format, one summary series per
//!   operation, in seconds as Prometheus conventions ask.

mod json;
mod prometheus;
pub mod table;

pub use json::Json;
pub use prometheus::Prometheus;
pub use table::Table;

use super::aggregate::Report;

/// The percentiles every report shows.
pub const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")];

/// One output format.
pub trait Exporter {
    /// The whole output, newline-terminated (possibly empty).
    fn render(&self, report: &Report) -> String;
}

/// Milliseconds rounded to the microsecond, as JSON prints them: integral
/// values without a fraction (`15`, as jq printed the old totals), others
/// with at most three decimals (`0.123`).
pub fn json_ms(ms: f64) -> String {
    super::log::format_ms(ms)
}
