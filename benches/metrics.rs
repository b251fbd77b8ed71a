//! Criterion benchmarks of the metrics log: one row appended (the cost every
//! self-timed applet pays), and aggregation of a 1M-row log, streamed from
//! the file and from memory. Fixtures are written once, outside the
//! measured closures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ffkit::metrics::aggregate::{self, Aggregator, Filter};
use ffkit::metrics::log;
use ffkit::metrics::read::{Line, ScanCounts, parse_line};

const ROWS: u64 = 1_000_000;
const OPS: [&str; 8] = [
    "write_cache",
    "read_cache",
    "get_cache_size",
    "batch_write",
    "enforce_cache_limits",
    "lock_acquire",
    "lock_release",
    "batch_read",
];

fn log_1m() -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut s = Vec::with_capacity(ROWS as usize * 32);
    for i in 0..ROWS {
        writeln!(
            s,
            "{},{},{:.3}",
            1_700_000_000 + i / 100,
            OPS[(i % 8) as usize],
            rng.f64() * 20.0
        )
        .unwrap();
    }
    s
}

fn append(c: &mut Criterion) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("m.csv");
    c.bench_function("metrics/append_row", |b| {
        b.iter(|| log::append(&path, 1_700_000_000, "write_cache", 0.123, 10 << 20).unwrap())
    });
}

fn aggregation(c: &mut Criterion) {
    let data = log_1m();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("m.csv");
    std::fs::write(&path, &data).unwrap();
    let mut g = c.benchmark_group("metrics/aggregate_1m");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS));
    g.bench_function("file", |b| {
        b.iter(|| black_box(aggregate::aggregate(&path, Filter::default()).unwrap()))
    });
    g.bench_function("in_memory", |b| {
        b.iter(|| {
            let mut a = Aggregator::new(Filter::default());
            for line in data.split(|&b| b == b'\n') {
                if let Line::Row(r) = parse_line(line) {
                    a.add(r.timestamp, r.op, r.ms);
                }
            }
            black_box(a.finish(ScanCounts::default()))
        })
    });
    g.finish();
}

criterion_group!(benches, append, aggregation);
criterion_main!(benches);
