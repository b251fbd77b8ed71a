//! Quantiles over a stream of durations in bounded memory.
//!
//! Each operation keeps its values exactly while it has at most
//! [`EXACT_LIMIT`] of them (64 KiB), so small logs get exact percentiles.
//! Beyond that the values move into a [`LogSketch`]: a DDSketch-style
//! histogram of logarithmic buckets whose every bucket spans a relative width
//! of `2α`, so any quantile it reports is within `α` = 0.5 % of the true value
//! of the same rank (half the 1 % docs/metrics.md promises). Its size depends on the
//! spread of values, not their number: 1 µs … 1 day is about 2,500 buckets
//! (20 KiB), whatever the row count.
//!
//! Percentiles use the nearest-rank definition: `pQ` is the smallest value
//! with at least `ceil(Q/100 · n)` values at or below it. It needs no
//! interpolation, so the exact and the sketched paths agree on what they
//! estimate.

/// Values kept exactly per operation before switching to the sketch.
pub const EXACT_LIMIT: usize = 8192;

/// Relative accuracy of the sketch.
pub const ALPHA: f64 = 0.005;

/// Values at or below this (in ms: one picosecond) count as zero.
const MIN_POSITIVE: f64 = 1e-9;

/// The rank (1-based) of quantile `q` in `n` sorted values (nearest rank).
pub fn rank(q: f64, n: u64) -> u64 {
    let r = (q * n as f64).ceil() as u64;
    r.clamp(1, n.max(1))
}

/// Exact values while few, a log-bucket sketch beyond.
#[derive(Clone, Debug)]
pub enum Quantiles {
    Exact { values: Vec<f64>, sorted: bool },
    Sketch(LogSketch),
}

impl Default for Quantiles {
    fn default() -> Self {
        Quantiles::Exact {
            values: Vec::new(),
            sorted: true,
        }
    }
}

impl Quantiles {
    /// Bytes held on the heap (for the server's cache budget).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Quantiles::Exact { values, .. } => values.capacity() * size_of::<f64>(),
            Quantiles::Sketch(s) => s.heap_bytes(),
        }
    }

    pub fn add(&mut self, v: f64) {
        match self {
            Quantiles::Exact { values, sorted } => {
                if values.len() < EXACT_LIMIT {
                    values.push(v);
                    *sorted = false;
                } else {
                    let mut s = LogSketch::new();
                    for &x in values.iter() {
                        s.add(x);
                    }
                    s.add(v);
                    *self = Quantiles::Sketch(s);
                }
            }
            Quantiles::Sketch(s) => s.add(v),
        }
    }

    /// Sorts the exact values once, before quantiles are asked for, and
    /// gives back the room they were growing into (a report the server
    /// keeps holds them for a while: a value of its own took 32 bytes).
    pub fn finish(&mut self) {
        if let Quantiles::Exact { values, sorted } = self {
            if !*sorted {
                values.sort_unstable_by(f64::total_cmp);
                *sorted = true;
            }
            values.shrink_to_fit();
        }
    }

    /// The distribution as `(value, count)` pairs in ascending value order:
    /// each exact value once, or each sketch bucket's representative value.
    /// Call [`finish`](Self::finish) first; this is what the HTML report's
    /// distribution chart bins.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        match self {
            Quantiles::Exact { values, sorted } => {
                let mut v = values.clone();
                if !*sorted {
                    v.sort_unstable_by(f64::total_cmp);
                }
                v.into_iter().map(|x| (x, 1)).collect()
            }
            Quantiles::Sketch(s) => s.buckets(),
        }
    }

    /// Whether the answers are exact.
    #[cfg(test)]
    fn is_exact(&self) -> bool {
        matches!(self, Quantiles::Exact { .. })
    }

    /// The `q` quantile (0 < q ≤ 1), nearest rank; `None` without values.
    /// Call [`finish`](Self::finish) first.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        match self {
            Quantiles::Exact { values, sorted } => {
                if values.is_empty() {
                    return None;
                }
                let r = rank(q, values.len() as u64) as usize;
                if *sorted {
                    values.get(r - 1).copied()
                } else {
                    let mut v = values.clone();
                    let (_, x, _) = v.select_nth_unstable_by(r - 1, f64::total_cmp);
                    Some(*x)
                }
            }
            Quantiles::Sketch(s) => s.quantile(q),
        }
    }
}

/// A DDSketch-style histogram: bucket `i` holds values in
/// `(γ^(i-1), γ^i]` with `γ = (1+α)/(1-α)`, and reports `2γ^i/(γ+1)`, which
/// is within `α` of every value in the bucket. Buckets are a dense vector
/// over the touched index range.
#[derive(Clone, Debug)]
pub struct LogSketch {
    ln_gamma: f64,
    gamma: f64,
    /// Index of `bins[0]`.
    offset: i32,
    bins: Vec<u64>,
    zeros: u64,
    count: u64,
}

impl Default for LogSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl LogSketch {
    /// Bytes held on the heap (for the server's cache budget).
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * size_of::<u64>()
    }

    pub fn new() -> Self {
        Self::with_alpha(ALPHA)
    }

    /// A sketch of relative accuracy `alpha` (0 < alpha < 1): coarser sketches
    /// are smaller; the time series of the HTML report keeps one per time
    /// bucket at 2 %.
    pub fn with_alpha(alpha: f64) -> Self {
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        LogSketch {
            ln_gamma: gamma.ln(),
            gamma,
            offset: 0,
            bins: Vec::new(),
            zeros: 0,
            count: 0,
        }
    }

    /// Values added (zeros included).
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn add(&mut self, v: f64) {
        self.count += 1;
        if v.is_nan() || v <= MIN_POSITIVE {
            self.zeros += 1;
            return;
        }
        // Finite, positive: the index fits an i32 for any f64 (|ln v| < 710).
        let i = (v.ln() / self.ln_gamma).ceil() as i32;
        if self.bins.is_empty() {
            self.offset = i;
            self.bins.push(0);
        } else if i < self.offset {
            let grow = (self.offset - i) as usize;
            let mut nb = vec![0u64; grow + self.bins.len()];
            nb[grow..].copy_from_slice(&self.bins);
            self.bins = nb;
            self.offset = i;
        } else if (i - self.offset) as usize >= self.bins.len() {
            self.bins.resize((i - self.offset) as usize + 1, 0);
        }
        self.bins[(i - self.offset) as usize] += 1;
    }

    /// Adds every value of `other`, which must have the same accuracy (the
    /// bucket indexes are only comparable then); a sketch of another accuracy
    /// is ignored rather than merged wrongly.
    pub fn merge(&mut self, other: &LogSketch) {
        if other.ln_gamma.to_bits() != self.ln_gamma.to_bits() {
            return;
        }
        self.count += other.count;
        self.zeros += other.zeros;
        if other.bins.is_empty() {
            return;
        }
        if self.bins.is_empty() {
            self.offset = other.offset;
            self.bins = other.bins.clone();
            return;
        }
        let lo = self.offset.min(other.offset);
        let hi = (self.offset + self.bins.len() as i32).max(other.offset + other.bins.len() as i32);
        let mut nb = vec![0u64; (hi - lo) as usize];
        for (src, off) in [(&self.bins, self.offset), (&other.bins, other.offset)] {
            for (k, &c) in src.iter().enumerate() {
                nb[(off - lo) as usize + k] += c;
            }
        }
        self.bins = nb;
        self.offset = lo;
    }

    /// `(representative value, count)` of every non-empty bucket, ascending;
    /// values counted as zero come first as `(0, n)`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let mut v = Vec::new();
        if self.zeros > 0 {
            v.push((0.0, self.zeros));
        }
        for (k, &c) in self.bins.iter().enumerate() {
            if c > 0 {
                v.push((self.value_of(self.offset + k as i32), c));
            }
        }
        v
    }

    fn value_of(&self, i: i32) -> f64 {
        2.0 * (i as f64 * self.ln_gamma).exp() / (self.gamma + 1.0)
    }

    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let r = rank(q, self.count);
        let mut seen = self.zeros;
        if seen >= r {
            return Some(0.0);
        }
        for (k, &c) in self.bins.iter().enumerate() {
            seen += c;
            if seen >= r {
                return Some(self.value_of(self.offset + k as i32));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &mut [f64], q: f64) -> f64 {
        values.sort_unstable_by(f64::total_cmp);
        values[rank(q, values.len() as u64) as usize - 1]
    }

    #[test]
    fn nearest_rank() {
        assert_eq!(rank(0.5, 4), 2);
        assert_eq!(rank(0.99, 100), 99);
        assert_eq!(rank(0.0, 10), 1);
        assert_eq!(rank(1.0, 10), 10);
        let mut q = Quantiles::default();
        for v in [5.0, 1.0, 3.0, 2.0, 4.0] {
            q.add(v);
        }
        q.finish();
        assert!(q.is_exact());
        assert_eq!(q.quantile(0.5), Some(3.0));
        assert_eq!(q.quantile(0.99), Some(5.0));
    }

    #[test]
    fn sketch_within_relative_error_on_skewed_data() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut values: Vec<f64> = (0..100_000)
            .map(|_| {
                // log-uniform over 1 µs .. 10 s, in ms
                10f64.powf(rng.f64() * 7.0 - 3.0)
            })
            .collect();
        let mut q = Quantiles::default();
        for &v in &values {
            q.add(v);
        }
        q.finish();
        assert!(!q.is_exact());
        for p in [0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&mut values, p);
            let got = q.quantile(p).unwrap();
            assert!(
                (got - want).abs() <= want * ALPHA * 1.0001,
                "p{p}: got {got}, want {want}"
            );
        }
    }

    #[test]
    fn merged_sketches_answer_like_one_sketch_of_all_values() {
        let mut rng = fastrand::Rng::with_seed(11);
        let values: Vec<f64> = (0..20_000)
            .map(|_| 10f64.powf(rng.f64() * 5.0 - 2.0))
            .collect();
        let mut whole = LogSketch::with_alpha(0.02);
        let (mut a, mut b) = (LogSketch::with_alpha(0.02), LogSketch::with_alpha(0.02));
        for (i, &v) in values.iter().enumerate() {
            whole.add(v);
            if i % 3 == 0 { a.add(v) } else { b.add(v) }
        }
        a.add(0.0);
        whole.add(0.0);
        a.merge(&b);
        assert_eq!(a.count(), whole.count());
        for q in [0.01, 0.5, 0.95, 0.99, 1.0] {
            assert_eq!(a.quantile(q), whole.quantile(q), "q{q}");
        }
        assert_eq!(a.buckets(), whole.buckets());
        assert_eq!(a.buckets()[0], (0.0, 1));
        // Another accuracy is refused, not merged into the wrong buckets.
        let before = a.count();
        a.merge(&LogSketch::new());
        a.merge(&{
            let mut s = LogSketch::new();
            s.add(1.0);
            s
        });
        assert_eq!(a.count(), before);
    }

    #[test]
    fn zeros_and_bounded_size() {
        let mut s = LogSketch::new();
        for _ in 0..10 {
            s.add(0.0);
        }
        s.add(1e-3);
        s.add(86_400_000.0);
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert!(s.heap_bytes() < 32 * 1024, "{}", s.heap_bytes());
        assert!(s.quantile(1.0).unwrap() > 86_000_000.0);
    }
}
