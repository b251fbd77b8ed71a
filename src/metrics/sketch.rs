//! Quantiles over a stream of durations in bounded memory.
//!
//! Each operation keeps its values exactly while it has at most
//! [`EXACT_LIMIT`] of them (64 KiB), so small logs get exact percentiles.
//! Beyond that the values move into a [`LogSketch`]: a DDSketch-style
//! histogram of logarithmic buckets whose every bucket spans a relative width
//! of `2α`, so any quantile it reports is within `α` = 0.5 % of the true value
//! of the same rank (half the 1 % the issue allows). Its size depends on the
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

    /// Sorts the exact values once, before quantiles are asked for.
    pub fn finish(&mut self) {
        if let Quantiles::Exact { values, sorted } = self
            && !*sorted
        {
            values.sort_unstable_by(f64::total_cmp);
            *sorted = true;
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
    pub fn new() -> Self {
        let gamma = (1.0 + ALPHA) / (1.0 - ALPHA);
        LogSketch {
            ln_gamma: gamma.ln(),
            gamma,
            offset: 0,
            bins: Vec::new(),
            zeros: 0,
            count: 0,
        }
    }

    /// Approximate heap bytes held.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.bins.capacity() * 8
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
                let i = self.offset + k as i32;
                return Some(2.0 * (i as f64 * self.ln_gamma).exp() / (self.gamma + 1.0));
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
