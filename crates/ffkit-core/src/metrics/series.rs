//! Latency and rate over time: the per-operation series the HTML report
//! draws (docs/metrics.md, "The page").
//!
//! Rows are grouped into time buckets of `width` seconds, aligned to
//! multiples of the width since the epoch, one small [`LogSketch`] (2 %
//! accuracy) per operation and bucket. The width is one of the round sizes
//! of [`WIDTHS`] (1 s, 5 s, 10 s, 30 s, 1 m, 5 m, … 1 d, 7 d, …), each a
//! multiple of the one before: it starts at one second and moves up the
//! ladder, merging neighbouring buckets, whenever the rows seen span more
//! than [`MAX_BUCKETS`] buckets, so one pass over a log of any length and in
//! any order ends with at most that many points per operation, all on the
//! same time axis. Memory depends on operations × buckets × the spread of
//! values in a bucket, never on the row count.

use super::sketch::LogSketch;

/// At most this many buckets span the log; the width grows beyond.
pub const MAX_BUCKETS: i64 = 120;

/// The bucket widths in seconds, smallest first, each a multiple of the one
/// before (so buckets merge whole): what a Grafana user calls round.
pub const WIDTHS: [i64; 17] = [
    1,
    5,
    10,
    30,
    60,
    5 * 60,
    10 * 60,
    30 * 60,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
    7 * 86_400,
    28 * 86_400,
    364 * 86_400,
    3640 * 86_400,
];

/// Relative accuracy of the per-bucket p95 (a chart needs no more).
pub const SERIES_ALPHA: f64 = 0.02;

/// The time axis shared by every operation: bucket width and the range of
/// timestamps seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// Seconds per bucket (one of [`WIDTHS`]).
    pub width: i64,
    /// Smallest and largest timestamp of a counted row.
    pub from: i64,
    pub to: i64,
    min_key: i64,
    max_key: i64,
}

impl Timeline {
    /// The timeline of a first row at `ts`.
    pub fn starting_at(ts: i64) -> Self {
        Timeline {
            width: 1,
            from: ts,
            to: ts,
            min_key: ts,
            max_key: ts,
        }
    }

    /// Takes in a row at `ts`; returns its bucket key and by what factor the
    /// width grew (1: it did not; else every operation's buckets must be
    /// [`TimeBuckets::coarsen`]ed by it).
    pub fn observe(&mut self, ts: i64) -> (i64, i64) {
        self.from = self.from.min(ts);
        self.to = self.to.max(ts);
        let mut key = ts.div_euclid(self.width);
        self.min_key = self.min_key.min(key);
        self.max_key = self.max_key.max(key);
        let mut factor = 1;
        while self.max_key - self.min_key + 1 > MAX_BUCKETS {
            // Past the ladder's top: tenfold steps (ten-thousand-year logs).
            let next = WIDTHS
                .iter()
                .copied()
                .find(|&w| w > self.width)
                .unwrap_or(self.width.saturating_mul(10));
            let k = next / self.width;
            self.width = next;
            self.min_key = self.min_key.div_euclid(k);
            self.max_key = self.max_key.div_euclid(k);
            key = key.div_euclid(k);
            factor *= k;
        }
        (key, factor)
    }
}

/// One bucket of one operation.
#[derive(Clone, Debug)]
struct Bucket {
    key: i64,
    sketch: LogSketch,
    min: f64,
    max: f64,
}

/// One point of a series: the bucket starting at `start` (epoch seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub start: i64,
    pub count: u64,
    /// The bucket's p50, p95 and p99 in ms, each clamped to its exact min
    /// and max.
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// The buckets of one operation, sorted by key.
#[derive(Clone, Debug, Default)]
pub struct TimeBuckets {
    buckets: Vec<Bucket>,
}

impl TimeBuckets {
    /// Bytes held on the heap (for the server's cache budget).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .map(|b| b.sketch.heap_bytes())
                .sum::<usize>()
    }

    pub fn add(&mut self, key: i64, ms: f64) {
        // Logs are appended in time order: the newest bucket is the usual hit.
        let i = match self.buckets.last() {
            Some(b) if b.key == key => self.buckets.len() - 1,
            _ => match self.buckets.binary_search_by_key(&key, |b| b.key) {
                Ok(i) => i,
                Err(i) => {
                    self.buckets.insert(
                        i,
                        Bucket {
                            key,
                            sketch: LogSketch::with_alpha(SERIES_ALPHA),
                            min: ms,
                            max: ms,
                        },
                    );
                    i
                }
            },
        };
        let b = &mut self.buckets[i];
        b.sketch.add(ms);
        b.min = b.min.min(ms);
        b.max = b.max.max(ms);
    }

    /// Divides the key of every bucket by `factor` (the width grew that
    /// much), merging the buckets that now share a key.
    pub fn coarsen(&mut self, factor: i64) {
        if factor <= 1 {
            return;
        }
        let mut out: Vec<Bucket> = Vec::with_capacity(self.buckets.len() / 2 + 1);
        for mut b in self.buckets.drain(..) {
            b.key = b.key.div_euclid(factor);
            match out.last_mut() {
                Some(last) if last.key == b.key => {
                    last.sketch.merge(&b.sketch);
                    last.min = last.min.min(b.min);
                    last.max = last.max.max(b.max);
                }
                _ => out.push(b),
            }
        }
        self.buckets = out;
    }

    /// The series, one point per non-empty bucket, oldest first.
    pub fn points(&self, width: i64) -> Vec<Point> {
        self.buckets
            .iter()
            .map(|b| {
                let q = |q: f64| b.sketch.quantile(q).map_or(0.0, |v| v.clamp(b.min, b.max));
                Point {
                    start: b.key * width,
                    count: b.sketch.count(),
                    p50: q(0.5),
                    p95: q(0.95),
                    p99: q(0.99),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds rows to a timeline and one operation's buckets, as the
    /// aggregator does.
    fn feed(rows: &[(i64, f64)]) -> (Timeline, TimeBuckets) {
        let mut tl = Timeline::starting_at(rows[0].0);
        let mut b = TimeBuckets::default();
        for &(ts, ms) in rows {
            let (key, factor) = tl.observe(ts);
            b.coarsen(factor);
            b.add(key, ms);
        }
        (tl, b)
    }

    #[test]
    fn widths_are_round_and_each_a_multiple_of_the_last() {
        assert!(WIDTHS.windows(2).all(|w| w[1] % w[0] == 0 && w[1] > w[0]));
        // Whatever the span, the width is a rung of the ladder and the
        // buckets fit.
        for span in [50, 119, 121, 600, 3_601, 86_400 * 3, 86_400 * 400] {
            let (tl, b) = feed(&[(1_700_000_000, 1.0), (1_700_000_000 + span, 2.0)]);
            assert!(WIDTHS.contains(&tl.width), "{span}: {}", tl.width);
            let p = b.points(tl.width);
            assert!((p[1].start - p[0].start) / tl.width < MAX_BUCKETS, "{span}");
            // And it is the smallest rung that fits.
            let smaller = WIDTHS.iter().rev().find(|&&w| w < tl.width);
            if let Some(w) = smaller {
                let keys = (1_700_000_000 + span) / w - 1_700_000_000 / w + 1;
                assert!(keys > MAX_BUCKETS, "{span}: {w} would fit");
            }
        }
    }

    #[test]
    fn a_short_log_keeps_one_second_buckets() {
        let (tl, b) = feed(&[(100, 1.0), (100, 3.0), (101, 5.0), (103, 7.0)]);
        assert_eq!((tl.width, tl.from, tl.to), (1, 100, 103));
        let p = b.points(tl.width);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].start, p[0].count), (100, 2));
        assert!((p[0].p95 - 3.0).abs() < 3.0 * SERIES_ALPHA);
        assert_eq!((p[2].start, p[2].count, p[2].p95), (103, 1, 7.0));
    }

    #[test]
    fn a_long_log_in_any_order_ends_with_bounded_aligned_buckets() {
        // A day of rows, every 10 s, shuffled: ~8,640 seconds of buckets
        // must shrink to at most MAX_BUCKETS, and counts must add up.
        let mut rows: Vec<(i64, f64)> = (0..8640)
            .map(|i| (1_700_000_000 + i * 10, (i % 100) as f64))
            .collect();
        fastrand::Rng::with_seed(3).shuffle(&mut rows);
        let (tl, b) = feed(&rows);
        let p = b.points(tl.width);
        assert!(p.len() as i64 <= MAX_BUCKETS, "{}", p.len());
        assert!(tl.width >= 86_400 / MAX_BUCKETS, "{}", tl.width);
        // A round width: 86,400 s / 120 = 720 s, so the next rung, 30 min.
        assert_eq!(tl.width, 1800);
        assert_eq!(p.iter().map(|x| x.count).sum::<u64>(), 8640);
        assert!(p.windows(2).all(|w| w[0].start < w[1].start));
        assert!(p.iter().all(|x| x.start % tl.width == 0));
        // Every bucket's p95 is within the sketch's accuracy of the exact
        // nearest-rank p95 of the rows in [start, start + width).
        for pt in &p {
            let mut v: Vec<f64> = rows
                .iter()
                .filter(|r| r.0 >= pt.start && r.0 < pt.start + tl.width)
                .map(|r| r.1)
                .collect();
            v.sort_unstable_by(f64::total_cmp);
            assert_eq!(v.len() as u64, pt.count);
            for (q, got) in [(0.5, pt.p50), (0.95, pt.p95), (0.99, pt.p99)] {
                let want = v[crate::metrics::sketch::rank(q, pt.count) as usize - 1];
                assert!(
                    (got - want).abs() <= want * SERIES_ALPHA * 1.0001,
                    "{pt:?} q {q} want {want}"
                );
            }
        }
    }
}
