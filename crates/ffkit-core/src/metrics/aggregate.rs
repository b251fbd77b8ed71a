//! Aggregation: per-operation count, total, min, max and quantiles over the
//! streamed log, with optional filters by operation and age.
//!
//! Memory is bounded by the number of distinct operations, not rows: each
//! keeps a handful of numbers plus its [`Quantiles`] (at most 64 KiB exact,
//! then a ~20 KiB sketch). With [`Aggregator::with_series`] each also keeps
//! its p50/p95/p99 and row count over time ([`super::series`]) for the HTML report.

use std::collections::HashMap;
use std::path::Path;

use super::read::{self, ScanCounts};
use super::series::{Point, TimeBuckets, Timeline};
use super::sketch::Quantiles;
use crate::error::Result;

/// Which rows count.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only these operations (empty: all).
    pub ops: Vec<String>,
    /// Only rows with a timestamp at or after this epoch second.
    pub since: Option<i64>,
    /// Only rows with a timestamp at or before this epoch second.
    pub until: Option<i64>,
}

/// The running numbers of one operation.
#[derive(Clone, Debug)]
pub struct OpStats {
    pub op: String,
    pub count: u64,
    /// Sum of durations in ms.
    pub total: f64,
    pub min: f64,
    pub max: f64,
    quantiles: Quantiles,
    /// Time buckets, filled only when the aggregator tracks series.
    series: TimeBuckets,
}

impl OpStats {
    fn new(op: &str) -> Self {
        OpStats {
            op: op.to_string(),
            count: 0,
            total: 0.0,
            min: f64::INFINITY,
            max: 0.0,
            quantiles: Quantiles::default(),
            series: TimeBuckets::default(),
        }
    }

    fn add(&mut self, ms: f64) {
        self.count += 1;
        self.total += ms;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
        self.quantiles.add(ms);
    }

    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total / self.count as f64
        }
    }

    /// The `q` quantile (0 < q ≤ 1), clamped to the exact min and max.
    pub fn quantile(&self, q: f64) -> f64 {
        self.quantiles
            .quantile(q)
            .map_or(0.0, |v| v.clamp(self.min, self.max))
    }

    /// The distribution as ascending `(value ms, count)` pairs (exact values,
    /// or sketch buckets).
    pub fn distribution(&self) -> Vec<(f64, u64)> {
        self.quantiles.buckets()
    }

    /// The latency and rate series on the report's [`Timeline`] (empty unless the
    /// aggregator tracked series).
    pub fn series(&self, timeline: &Timeline) -> Vec<Point> {
        self.series.points(timeline.width)
    }
}

/// Everything one pass over the log found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One entry per operation with rows, sorted by name.
    pub ops: Vec<OpStats>,
    pub malformed: u64,
    /// The time axis of the per-operation series: `Some` when the aggregator
    /// tracked series and at least one row counted.
    pub timeline: Option<Timeline>,
}

impl Report {
    /// Which operations are among the `k` busiest (most rows, ties by name,
    /// as the report is sorted by name): the ones the page charts.
    pub fn busiest(&self, k: usize) -> Vec<bool> {
        let mut marked = vec![true; self.ops.len()];
        if self.ops.len() > k {
            let mut order: Vec<usize> = (0..self.ops.len()).collect();
            order.sort_by_key(|&i| (std::cmp::Reverse(self.ops[i].count), i));
            for &i in &order[k..] {
                marked[i] = false;
            }
        }
        marked
    }

    /// Drops the time series of all but the `k` busiest operations: the
    /// page draws no others, and a report the server keeps (up to 8 of
    /// them) then holds series for `k` operations, not for every one.
    pub fn keep_series_of_busiest(&mut self, k: usize) {
        let busiest = self.busiest(k);
        for (s, keep) in self.ops.iter_mut().zip(busiest) {
            if !keep {
                s.series = TimeBuckets::default();
            }
        }
    }

    /// About how many bytes the report holds, its allocations' overhead
    /// included: what the server's cache of reports is budgeted in.
    pub fn approx_bytes(&self) -> usize {
        // A small allocation costs its size rounded up plus a header.
        const PER_ALLOCATION: usize = 32;
        self.ops.capacity() * size_of::<OpStats>()
            + self
                .ops
                .iter()
                .map(|s| {
                    s.op.capacity()
                        + s.quantiles.heap_bytes()
                        + s.series.heap_bytes()
                        + 3 * PER_ALLOCATION
                })
                .sum::<usize>()
    }

    pub fn get(&self, op: &str) -> Option<&OpStats> {
        self.ops
            .binary_search_by(|s| s.op.as_str().cmp(op))
            .ok()
            .map(|i| &self.ops[i])
    }
}

/// The index entry of an operation the filter leaves out.
const FILTERED_OUT: usize = usize::MAX;

/// Aggregates rows one at a time; [`finish`](Aggregator::finish) gives the report.
#[derive(Default)]
pub struct Aggregator {
    filter: Filter,
    index: HashMap<Box<str>, usize>,
    ops: Vec<OpStats>,
    track_series: bool,
    timeline: Option<Timeline>,
}

impl Aggregator {
    pub fn new(filter: Filter) -> Self {
        Aggregator {
            filter,
            ..Default::default()
        }
    }

    /// Also keeps each operation's percentiles and rate over time (for the HTML report).
    pub fn with_series(mut self) -> Self {
        self.track_series = true;
        self
    }

    pub fn add(&mut self, timestamp: i64, op: &str, ms: f64) {
        if self.filter.since.is_some_and(|s| timestamp < s)
            || self.filter.until.is_some_and(|u| timestamp > u)
        {
            return;
        }
        let i = match self.index.get(op) {
            Some(&FILTERED_OUT) => return,
            Some(&i) => i,
            None => {
                if !self.filter.ops.is_empty() && !self.filter.ops.iter().any(|o| o == op) {
                    // Remembered, so each later row of it is one lookup:
                    // before, every row of an operation the filter leaves
                    // out scanned the whole list again, and a served
                    // `?op=…` repeated 1,800 times (15 KB, under the head
                    // limit) made a request ten times the work of a pass.
                    self.index.insert(op.into(), FILTERED_OUT);
                    return;
                }
                self.ops.push(OpStats::new(op));
                self.index.insert(op.into(), self.ops.len() - 1);
                self.ops.len() - 1
            }
        };
        self.ops[i].add(ms);
        if self.track_series {
            let tl = self
                .timeline
                .get_or_insert_with(|| Timeline::starting_at(timestamp));
            let (key, factor) = tl.observe(timestamp);
            if factor > 1 {
                for s in &mut self.ops {
                    s.series.coarsen(factor);
                }
            }
            self.ops[i].series.add(key, ms);
        }
    }

    pub fn finish(mut self, counts: ScanCounts) -> Report {
        for s in &mut self.ops {
            s.quantiles.finish();
        }
        self.ops.sort_by(|a, b| a.op.cmp(&b.op));
        // Up to half of a grown vector is room it was growing into.
        self.ops.shrink_to_fit();
        Report {
            ops: self.ops,
            malformed: counts.malformed,
            timeline: self.timeline,
        }
    }
}

/// Reads the log at `path` and aggregates it.
pub fn aggregate(path: &Path, filter: Filter) -> Result<Report> {
    run(path, Aggregator::new(filter))
}

/// Reads the log at `path` and aggregates it with per-operation series.
pub fn aggregate_with_series(path: &Path, filter: Filter) -> Result<Report> {
    run(path, Aggregator::new(filter).with_series())
}

fn run(path: &Path, mut agg: Aggregator) -> Result<Report> {
    let counts = read::scan(path, |r| agg.add(r.timestamp, r.op, r.ms))?;
    Ok(agg.finish(counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The busiest operations keep their series; the others' are dropped
    /// (the server's cached reports hold no series the page never draws).
    #[test]
    fn only_the_busiest_keep_their_series() {
        let mut a = Aggregator::new(Filter::default()).with_series();
        for (op, n) in [("a", 1), ("b", 3), ("c", 2), ("d", 2)] {
            for _ in 0..n {
                a.add(100, op, 1.0);
            }
        }
        let mut r = a.finish(ScanCounts::default());
        assert_eq!(
            r.busiest(2),
            [false, true, true, false],
            "b, then c before d"
        );
        assert_eq!(r.busiest(9), [true; 4]);
        r.keep_series_of_busiest(2);
        let tl = r.timeline.unwrap();
        let points: Vec<usize> = r.ops.iter().map(|s| s.series(&tl).len()).collect();
        assert_eq!(points, [0, 1, 1, 0]);
        assert_eq!(r.ops[0].count, 1, "the numbers stay");
    }

    /// An operation the filter leaves out is remembered as such: its later
    /// rows stay out, and the kept ones are counted exactly.
    #[test]
    fn a_long_op_filter_keeps_exactly_its_operations() {
        let mut ops: Vec<String> = (0..2000).map(|i| format!("z{i}")).collect();
        ops.push("b".into());
        let mut a = Aggregator::new(Filter {
            ops,
            ..Filter::default()
        });
        for (op, ms) in [("a", 1.0), ("b", 2.0), ("a", 3.0), ("b", 4.0), ("c", 5.0)] {
            a.add(100, op, ms);
        }
        let r = a.finish(ScanCounts::default());
        assert_eq!(r.ops.len(), 1);
        assert_eq!((r.ops[0].op.as_str(), r.ops[0].count), ("b", 2));
        assert_eq!(r.ops[0].total, 6.0);
    }

    #[test]
    fn filters_and_stats() {
        let mut a = Aggregator::new(Filter {
            ops: vec!["b".into(), "a".into()],
            since: Some(100),
            until: None,
        });
        a.add(100, "b", 2.0);
        a.add(150, "b", 4.0);
        a.add(99, "b", 1000.0);
        a.add(120, "a", 1.5);
        a.add(120, "c", 7.0);
        let r = a.finish(ScanCounts {
            rows: 5,
            malformed: 1,
        });
        assert_eq!(r.ops.len(), 2);
        assert_eq!(r.ops[0].op, "a");
        let b = r.get("b").unwrap();
        assert_eq!(
            (b.count, b.total, b.avg(), b.min, b.max),
            (2, 6.0, 3.0, 2.0, 4.0)
        );
        assert_eq!(b.quantile(0.5), 2.0);
        assert_eq!(b.quantile(0.99), 4.0);
        assert!(r.get("c").is_none());
        assert!(r.timeline.is_none());
    }

    #[test]
    fn series_follow_their_operation_through_the_sort() {
        let mut a = Aggregator::new(Filter::default()).with_series();
        a.add(10, "zz", 9.0);
        a.add(10, "aa", 1.0);
        a.add(12, "aa", 2.0);
        let r = a.finish(ScanCounts::default());
        let tl = r.timeline.unwrap();
        assert_eq!((tl.from, tl.to), (10, 12));
        let aa = r.ops[0].series(&tl);
        assert_eq!(r.ops[0].op, "aa");
        assert_eq!(
            aa.iter().map(|p| (p.start, p.count)).collect::<Vec<_>>(),
            [(10, 1), (12, 1)]
        );
        assert_eq!(r.ops[1].series(&tl)[0].p95, 9.0);
        assert_eq!(r.ops[0].distribution(), [(1.0, 1), (2.0, 1)]);
    }
}
