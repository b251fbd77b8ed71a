//! The cache-run hit ratio `perf-metrics` shows: the share of `cache-run`
//! calls answered from the cache (`cache_run_hit` rows, which include calls
//! that waited for another process's run) among all calls that needed an
//! answer (`cache_run_hit` + `cache_run_miss`). Detached refreshes
//! (`cache_run_refresh`) are background work, not answers, and are left out.

use std::fmt;

use super::aggregate::Report;

pub const HIT_OP: &str = super::Op::CacheRunHit.as_str();
pub const MISS_OP: &str = super::Op::CacheRunMiss.as_str();
pub const REFRESH_OP: &str = super::Op::CacheRunRefresh.as_str();

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HitRatio {
    pub hits: u64,
    pub misses: u64,
}

impl HitRatio {
    /// The ratio of a report, or `None` when it has no cache-run calls.
    pub fn of(report: &Report) -> Option<HitRatio> {
        let count = |op| report.get(op).map_or(0, |s| s.count);
        let r = HitRatio {
            hits: count(HIT_OP),
            misses: count(MISS_OP),
        };
        (r.hits + r.misses > 0).then_some(r)
    }

    /// Between 0 and 1.
    pub fn ratio(&self) -> f64 {
        self.hits as f64 / (self.hits + self.misses).max(1) as f64
    }
}

impl fmt::Display for HitRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "cache-run hit ratio: {:.1}% ({}, {})",
            self.ratio() * 100.0,
            plural(self.hits, "hit", "hits"),
            plural(self.misses, "miss", "misses")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::aggregate::{Aggregator, Filter};
    use crate::metrics::read::ScanCounts;

    fn report(rows: &[&str]) -> Report {
        let mut a = Aggregator::new(Filter::default());
        for op in rows {
            a.add(1, op, 1.0);
        }
        a.finish(ScanCounts::default())
    }

    #[test]
    fn ratio_of_hits_and_misses_ignoring_refreshes_and_other_ops() {
        assert_eq!(HitRatio::of(&report(&["read_cache", REFRESH_OP])), None);
        let r = HitRatio::of(&report(&[
            HIT_OP,
            HIT_OP,
            HIT_OP,
            MISS_OP,
            REFRESH_OP,
            "read_cache",
        ]))
        .unwrap();
        assert_eq!((r.hits, r.misses), (3, 1));
        assert_eq!(r.to_string(), "cache-run hit ratio: 75.0% (3 hits, 1 miss)");
        let all_miss = HitRatio::of(&report(&[MISS_OP, MISS_OP])).unwrap();
        assert_eq!(
            all_miss.to_string(),
            "cache-run hit ratio: 0.0% (0 hits, 2 misses)"
        );
    }
}
