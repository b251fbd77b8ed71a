//! Criterion benchmarks of the cache engine's hot paths, called as library
//! functions: the index update, one entry write, batch parse + write, and
//! victim selection for eviction. Fixtures are built outside the measured
//! closures (`iter_batched` setup or once per benchmark).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ffkit::cache::batch::{self, Format};
use ffkit::cache::index;
use ffkit::cache::{Cache, EvictPolicy, NewEntry, Value};

const NOW: i64 = 1_700_000_000;

/// `n` lines of `key-i:value-i` (the old `batch_write_cache` format).
fn batch_input(n: usize) -> Vec<u8> {
    let mut s = Vec::with_capacity(n * 24);
    for i in 0..n {
        s.extend_from_slice(format!("key-{i}:value-{i}\n").as_bytes());
    }
    s
}

/// Writes `input` as one batch into `dir`.
fn write_batch(dir: &Path, input: &[u8]) {
    let (items, bad) = batch::parse(input, Format::Lines);
    assert!(bad.is_empty());
    let entries = items
        .iter()
        .map(|i| NewEntry {
            key: i.key.clone(),
            value: Value::Bytes(&i.value),
            ttl: 300,
        })
        .collect();
    Cache::new(dir, NOW, false).write(entries).unwrap();
}

fn index_update(c: &mut Criterion) {
    let d = tempfile::tempdir().unwrap();
    let mut n = 0u64;
    c.bench_function("cache/index_update", |b| {
        b.iter(|| {
            n += 1;
            // `.size-index`'s replacement (after the first: its spare
            // rewritten and exchanged in, as a commit does); the entry
            // count is a `pwrite` into the held `.lock`, not a file.
            index::write_bytes(d.path(), n * 100, n > 1).unwrap();
        })
    });
    c.bench_function("cache/index_read", |b| {
        b.iter(|| black_box(index::read_number(&d.path().join(index::INDEX_FILE)).unwrap()))
    });
}

fn entry_write(c: &mut Criterion) {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path(), NOW, false);
    // A warm cache of 1,000 entries; each iteration overwrites one key.
    write_batch(d.path(), &batch_input(1_000));
    let value = b"a small cached value".to_vec();
    c.bench_function("cache/entry_write", |b| {
        b.iter(|| {
            cache
                .write(vec![NewEntry {
                    key: "key-7".into(),
                    value: Value::Bytes(&value),
                    ttl: 0,
                }])
                .unwrap()
        })
    });
    c.bench_function("cache/entry_read", |b| {
        b.iter(|| black_box(cache.read("key-7").unwrap()))
    });
}

fn batch_parse_write(c: &mut Criterion) {
    const N: usize = 1_000;
    let input = batch_input(N);
    let mut g = c.benchmark_group("cache/batch");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("parse_1000", |b| {
        b.iter(|| black_box(batch::parse(black_box(&input), Format::Lines)))
    });
    g.sample_size(20);
    g.bench_function("parse_write_1000_fresh", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |d| {
                write_batch(d.path(), &input);
                d // dropped (removed) outside the measurement
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn victim_selection(c: &mut Criterion) {
    const N: usize = 10_000;
    let d = tempfile::tempdir().unwrap();
    write_batch(d.path(), &batch_input(N));
    let cache = Cache::new(d.path(), NOW, false);
    let total = cache.size(true).unwrap().totals;
    // Enough excess that 10% of the entries are chosen; dry run: nothing is
    // removed, so every iteration selects from the same fixture.
    let policy = EvictPolicy {
        max_bytes: Some(total.bytes - total.bytes / 10),
        dry_run: true,
        ..EvictPolicy::default()
    };
    let mut g = c.benchmark_group("cache/evict");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("select_10pct_of_10k", |b| {
        b.iter(|| {
            let r = cache.evict(&policy).unwrap();
            assert!(!r.removed.is_empty());
            black_box(r)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    index_update,
    entry_write,
    batch_parse_write,
    victim_selection
);
criterion_main!(benches);
