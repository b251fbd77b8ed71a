//! Criterion benchmarks of lock acquire/release as library calls: the
//! kernel (flock) path every command-mode and fd-mode lock takes, and the
//! dot-lock path (link(2) method) for file systems without kernel locks.
//! Uncontended: this is the per-call cost ffkit adds to a process start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::io::AsRawFd;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ffkit::config::BackoffStrategy;
use ffkit::lock::backoff::Schedule;
use ffkit::lock::holder::Holder;
use ffkit::lock::{Kind, Wait, dotlock, kernel};

/// One uncontended exclusive flock and its unlock on `f`.
fn lock_unlock(f: &std::fs::File) {
    let got = kernel::lock_fd(
        f.as_raw_fd(),
        Kind::Exclusive,
        kernel::Method::Flock,
        Wait::Forever,
        &mut || false,
        &mut || {},
    )
    .unwrap();
    assert!(got.is_ok());
    kernel::unlock_fd(f.as_raw_fd()).unwrap();
}

fn kernel_lock(c: &mut Criterion) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("L");
    c.bench_function("lock/kernel_open_acquire_release", |b| {
        b.iter(|| {
            let f = kernel::open_lock_file(&path, false, 0o600).unwrap();
            lock_unlock(&f);
        })
    });
    let f = kernel::open_lock_file(&path, false, 0o600).unwrap();
    c.bench_function("lock/kernel_acquire_release_open_fd", |b| {
        b.iter(|| {
            lock_unlock(&f);
        })
    });
}

fn dot_lock(c: &mut Criterion) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("L.lock");
    let rec = Holder::new("dotlock", std::process::id(), Some("bench".into()));
    let schedule = || {
        Schedule::new(
            BackoffStrategy::Exponential,
            Duration::from_millis(100),
            Duration::from_secs(2),
        )
    };
    c.bench_function("lock/dotlock_acquire_release", |b| {
        b.iter(|| {
            let Ok(held) = dotlock::acquire(
                &path,
                &rec,
                Duration::from_secs(300),
                Wait::NonBlocking,
                schedule(),
                &mut dotlock::Silent,
            )
            .unwrap() else {
                panic!("the dot-lock is free in this benchmark")
            };
            dotlock::release_held(&held).unwrap();
        })
    });
}

criterion_group!(benches, kernel_lock, dot_lock);
criterion_main!(benches);
