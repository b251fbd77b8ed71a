//! The CSV metrics log (CONTRACT §2): rows `timestamp,operation,duration_ms`.
//!
//! This module owns where the log lives, how one row is written, and the
//! self-timing every cache and lock applet does. The default log is
//! `<cache-dir>/.perf-metrics.csv` — one per cache dir, as the contract
//! suggests, so each FlowForge namespace keeps its own numbers; a dot-file,
//! so it never counts toward the cache size.

pub mod log;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::error::Result;

/// File name of the default log inside a cache dir.
pub const DEFAULT_LOG_NAME: &str = ".perf-metrics.csv";

/// The log path: `CACHE_PERF_METRICS`, else the default in `cache_dir`, else
/// in the default cache dir.
pub fn log_path(cfg: &Config, cache_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = &cfg.perf_metrics {
        return Ok(p.clone());
    }
    Ok(cfg.cache_dir(cache_dir)?.join(DEFAULT_LOG_NAME))
}

/// Appends one row for an applet's own run. Called only when monitoring is
/// enabled, so a disabled monitor opens nothing. Self-timing never creates
/// a directory: a size query or a rejected key must not create the cache
/// dir just to log itself, so a run whose log dir does not exist yet is not
/// recorded.
pub fn record_self(
    cfg: &Config,
    cache_dir: Option<&Path>,
    op: &str,
    elapsed: Duration,
) -> Result<()> {
    let path = log_path(cfg, cache_dir)?;
    if !path.parent().is_some_and(Path::is_dir) {
        return Ok(());
    }
    let ms = elapsed.as_secs_f64() * 1000.0;
    log::append(&path, cfg.now(), op, ms, cfg.perf_max_bytes)
}
