//! The CSV metrics log (docs/metrics.md): rows `timestamp,operation,duration_ms`.
//!
//! This module owns where the log lives, how rows are written ([`log`]),
//! read ([`read`]) and aggregated ([`aggregate`], [`sketch`]), how reports are
//! rendered ([`export`]) and served over HTTP ([`serve`]), how health rules
//! are checked ([`check`]), the cache-run hit ratio ([`hit_ratio`]), and the
//! self-timing every cache and lock applet does.
//!
//! The default log is `<cache-dir>/.perf-metrics.csv` — one per cache dir, as
//! the contract suggests, so each FlowForge namespace keeps its own numbers
//! next to the cache they describe (and `cache-evict --all` of one developer
//! never touches another's); a dot-file, so it never counts toward the cache
//! size. `CACHE_PERF_METRICS` overrides it.

pub mod aggregate;
pub mod check;
pub mod export;
pub mod hit_ratio;
pub mod http;
pub mod log;
pub mod read;
pub mod series;
pub mod serve;
pub mod sketch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, DirOrigin};
use crate::error::{Error, Result};

/// The operations ffkit records its own runs under: the contract's names
/// (the old library's `record_performance_metric` rows) and cache-run's.
/// Written once here; the applet table, the lock front end, the builtin and
/// the hit-ratio report name them through this type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    GetCacheSize,
    RebuildSizeIndex,
    WriteCache,
    ReadCache,
    BatchWrite,
    BatchRead,
    EnforceCacheLimits,
    ClearDeveloperCache,
    LockAcquire,
    LockRelease,
    CacheRunHit,
    CacheRunMiss,
    CacheRunRefresh,
}

impl Op {
    /// The name in the log's `operation` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::GetCacheSize => "get_cache_size",
            Op::RebuildSizeIndex => "rebuild_size_index",
            Op::WriteCache => "write_cache",
            Op::ReadCache => "read_cache",
            Op::BatchWrite => "batch_write",
            Op::BatchRead => "batch_read",
            Op::EnforceCacheLimits => "enforce_cache_limits",
            Op::ClearDeveloperCache => "clear_developer_cache",
            Op::LockAcquire => "lock_acquire",
            Op::LockRelease => "lock_release",
            Op::CacheRunHit => "cache_run_hit",
            Op::CacheRunMiss => "cache_run_miss",
            Op::CacheRunRefresh => "cache_run_refresh",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// File name of the default log inside a cache dir.
pub const DEFAULT_LOG_NAME: &str = crate::namespace::METRICS_LOG;

/// Where the log is, and who chose it (docs/metrics.md, "Where the log
/// lives"): the user, with `CACHE_PERF_METRICS` (used wherever it points,
/// as the user's choice), or ffkit: the default log in a cache dir, which
/// is judged as that cache dir is (docs/cache.md, "Which dir, and when it
/// is refused"), so no row is written to, nor read from, a dir the cache
/// applets refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogPlace {
    /// `CACHE_PERF_METRICS`.
    Named(PathBuf),
    /// `<dir>/.perf-metrics.csv` of a cache dir and why that dir.
    InDir(PathBuf, DirOrigin),
}

impl LogPlace {
    /// The log's path (its dir unchecked).
    pub fn path(&self) -> PathBuf {
        match self {
            LogPlace::Named(p) => p.clone(),
            LogPlace::InDir(d, _) => d.join(DEFAULT_LOG_NAME),
        }
    }

    /// How a shell function hands this log to the applet it runs, as the
    /// two variables the configuration reads ([`log_place`]):
    /// `CACHE_PERF_METRICS` for a named log, `FFKIT_FN_LOG_DIR` for a
    /// default one (its dir then judged as a dir the functions picked).
    pub fn fn_vars(&self) -> (Option<&Path>, Option<&Path>) {
        match self {
            LogPlace::Named(p) => (Some(p), None),
            LogPlace::InDir(d, _) => (None, Some(d)),
        }
    }

    /// Whether the log may be used: a named log always; a default one when
    /// its dir passes `cache::dir::check` with the dir's origin (`Ok(false)`:
    /// the dir does not exist yet). A refused dir is the cache's error (exit
    /// 3, the same line every cache applet prints for it).
    pub fn check(&self) -> Result<bool> {
        match self {
            LogPlace::Named(_) => Ok(true),
            LogPlace::InDir(d, origin) => crate::cache::dir::check(d, *origin),
        }
    }
}

/// The one rule for where a call's log is: `CACHE_PERF_METRICS`, else the
/// shell functions' caller's cache dir (`FFKIT_FN_LOG_DIR`, a dir the
/// functions picked), else `cache_dir` (`--dir`) or the default cache dir.
/// The binary, the bash builtin and the shell fallback all end here.
pub fn log_place(cfg: &Config, cache_dir: Option<&Path>) -> Result<LogPlace> {
    if let Some(p) = &cfg.perf_metrics {
        return Ok(LogPlace::Named(p.clone()));
    }
    if let Some(d) = &cfg.fn_log_dir {
        return Ok(LogPlace::InDir(d.clone(), DirOrigin::Functions));
    }
    let c = cfg.choose_cache_dir(cache_dir)?;
    Ok(LogPlace::InDir(c.path, c.origin))
}

/// The log path ([`log_place`]), its dir checked: a default log in a dir
/// the cache refuses is refused (exit 3) for reading and writing alike.
pub fn log_path(cfg: &Config, cache_dir: Option<&Path>) -> Result<PathBuf> {
    let place = log_place(cfg, cache_dir)?;
    place.check()?;
    Ok(place.path())
}

/// `FF_DEBUG`'s line for what [`record_self`] did with `op`'s row
/// (docs/metrics.md): the binary's front end and the bash builtin print
/// these words, so every way into a lock function says the same thing.
pub fn self_note(op: Op, outcome: &Result<Option<PathBuf>>, elapsed: Duration) -> String {
    let op = op.as_str();
    match outcome {
        Ok(Some(log)) => format!(
            "recorded {op} ({:.3} ms) in {}",
            elapsed.as_secs_f64() * 1000.0,
            log.display()
        ),
        Ok(None) => format!("{op} not recorded: the metrics log's dir does not exist"),
        Err(e) => format!("metrics not recorded: {e}"),
    }
}

/// Appends one row for an applet's own run. Called only when monitoring is
/// enabled, so a disabled monitor opens nothing. Self-timing never creates
/// a directory: a size query or a rejected key must not create the cache
/// dir just to log itself, so a run whose log dir does not exist yet is not
/// recorded. A default log whose dir the cache refuses ([`LogPlace::check`])
/// gets no row: the error is returned, and every caller drops the row
/// (the applet's or lock's own work stands). `opened`: a cache dir the
/// caller already opened, so checked (a default log there is not checked
/// twice). Returns the log the row went to, if one was written.
pub fn record_self(
    cfg: &Config,
    opened: Option<&Path>,
    op: Op,
    elapsed: Duration,
) -> Result<Option<PathBuf>> {
    let op = op.as_str();
    let place = log_place(cfg, opened)?;
    if !cfg.perf_monitoring {
        return Ok(None);
    }
    if let LogPlace::InDir(d, _) = &place
        && opened != Some(d.as_path())
        && !place.check()?
    {
        // Its dir does not exist: nothing to record into.
        return Ok(None);
    }
    let path = place.path();
    let ms = elapsed.as_secs_f64() * 1000.0;
    // A log named without a directory is not recorded (as before: it
    // would be written wherever the caller stands).
    if path.parent().is_none_or(|d| d.as_os_str().is_empty()) {
        return Ok(None);
    }
    let kept = log::append_in_existing_dir(&path, cfg.now(), op, ms, cfg.perf_max_bytes)?;
    Ok(kept.then_some(path))
}

/// Appends one row `now,op,ms` to `path` (trimming above the cap), or does
/// nothing at all when monitoring is disabled.
pub fn record(cfg: &Config, path: &Path, op: &str, ms: f64) -> Result<()> {
    if !cfg.perf_monitoring {
        return Ok(());
    }
    log::append(path, cfg.now(), op, ms, cfg.perf_max_bytes)
}

/// An operation name must survive the CSV unquoted and the Prometheus label
/// escaped: 1-128 bytes of letters, digits, `_ . : -`.
pub fn validate_op(op: &str) -> Result<()> {
    let ok = !op.is_empty()
        && op.len() <= 128
        && op
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "invalid operation name '{op}': expected 1-128 letters, digits, '_', '.', ':' or '-'"
        )))
    }
}

/// An operation name as a terminal shows it (the table, `check`'s lines):
/// control characters (C0 such as ESC, CR and tab, DEL, C1) and the
/// characters that reorder or break a line ([`reorders_or_breaks`])
/// escaped as Rust writes them (`\u{1b}`, `\r`, `\t`, `\u{202e}`),
/// everything else as it is. The reader takes any UTF-8 name without a
/// comma, so a log another user or an old script wrote could otherwise
/// retitle, clear or rewrite the terminal of whoever reads the report, or
/// show the rest of its line reversed. JSON, Prometheus and the page
/// escape names by their own rules.
pub fn shown_op(op: &str) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| c.is_control() || reorders_or_breaks(c);
    if !op.chars().any(escaped) {
        return std::borrow::Cow::Borrowed(op);
    }
    let mut s = String::with_capacity(op.len() + 8);
    for c in op.chars() {
        if escaped(c) {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    std::borrow::Cow::Owned(s)
}

/// Unicode's bidirectional formatting characters (the marks U+061C,
/// U+200E, U+200F, the embeddings and overrides U+202A-U+202E, the
/// isolates U+2066-U+2069) and the line and paragraph separators U+2028,
/// U+2029. Not controls to [`char::is_control`], but a bidi-capable
/// terminal (VTE, Konsole) shows the rest of the line after an override
/// reversed ("Trojan Source"), so a table row's numbers could read as
/// others, and some terminals break the line at a separator.
fn reorders_or_breaks(c: char) -> bool {
    matches!(
        c,
        '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            | '\u{2028}' | '\u{2029}'
    )
}

/// A duration in milliseconds typed by a user: a non-negative number below
/// [`read::MAX_MS`] (what a reader takes as a row's duration).
pub fn parse_duration_ms(s: &str) -> Result<f64> {
    read::parse_duration(s.trim().as_bytes()).ok_or_else(|| {
        Error::Validation(format!(
            "invalid duration '{s}': expected non-negative milliseconds below 10^15, such as 15 or 0.25"
        ))
    })
}

/// The unit of `record --start S --end E` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl StampUnit {
    fn ms_per_unit(self) -> f64 {
        match self {
            StampUnit::Seconds => 1000.0,
            StampUnit::Millis => 1.0,
            StampUnit::Micros => 1e-3,
            StampUnit::Nanos => 1e-6,
        }
    }

    /// The unit an epoch stamp of this magnitude is in: `date +%s` (1e9),
    /// `+%s%3N` (1e12), `+%s%6N` (1e15), `+%s%N` (1e18). Values below 1e8
    /// are not epoch stamps (e.g. `$SECONDS`-style counters, or test values):
    /// the old library wrote their difference as milliseconds, and so do we.
    pub fn guess(v: f64) -> StampUnit {
        if v >= 1e17 {
            StampUnit::Nanos
        } else if v >= 1e14 {
            StampUnit::Micros
        } else if !(1e8..1e11).contains(&v) {
            StampUnit::Millis
        } else {
            StampUnit::Seconds
        }
    }

    pub fn parse(s: &str) -> Result<Option<StampUnit>> {
        Ok(Some(match s {
            "auto" => return Ok(None),
            "s" => StampUnit::Seconds,
            "ms" => StampUnit::Millis,
            "us" => StampUnit::Micros,
            "ns" => StampUnit::Nanos,
            _ => {
                return Err(Error::Validation(format!(
                    "invalid unit '{s}': expected auto, s, ms, us or ns"
                )));
            }
        }))
    }
}

/// The duration in ms between two stamps, as `record_performance_metric op
/// start end` passes them. With `unit` `None` it is guessed from the
/// magnitude of `start` ([`StampUnit::guess`]), and `end` must look like the
/// same unit. Fractional stamps (`$EPOCHREALTIME`, `date +%s.%N`) work.
pub fn duration_between(start: &str, end: &str, unit: Option<StampUnit>) -> Result<f64> {
    let num = |s: &str| -> Result<f64> {
        // bash writes $EPOCHREALTIME with the locale's decimal point
        // (`1796666136,023404` under de_DE): one comma is that point.
        let t = s.trim();
        let dotted;
        let t = match t.split_once(',') {
            Some((int, frac)) if !frac.contains(',') => {
                dotted = format!("{int}.{frac}");
                dotted.as_str()
            }
            _ => t,
        };
        read::parse_ms(t.as_bytes()).ok_or_else(|| {
            Error::Validation(format!(
                "invalid time stamp '{s}': expected a non-negative number"
            ))
        })
    };
    let (s, e) = (num(start)?, num(end)?);
    let unit = match unit {
        Some(u) => u,
        None => {
            let u = StampUnit::guess(s);
            if StampUnit::guess(e) != u {
                return Err(Error::Validation(format!(
                    "start '{start}' and end '{end}' look like different units (use --unit)"
                )));
            }
            u
        }
    };
    if e < s {
        return Err(Error::Validation(format!(
            "end '{end}' is before start '{start}'"
        )));
    }
    // Subtract first: nanosecond stamps lose sub-µs precision in f64, the
    // difference is what matters.
    let ms = (e - s) * unit.ms_per_unit();
    // Huge stamps in seconds can overflow to infinity, which would write a
    // row ("inf") that every reader rejects; so would one at or above the
    // rows' bound.
    if !ms.is_finite() || ms >= read::MAX_MS {
        return Err(Error::Validation(format!(
            "the duration from '{start}' to '{end}' is too large (10^15 ms or more)"
        )));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_end_units() {
        let d = |s, e| duration_between(s, e, None).unwrap();
        assert_eq!(d("1700000000", "1700000002"), 2000.0);
        assert_eq!(d("1700000000000", "1700000000015"), 15.0);
        assert_eq!(d("1700000000000000", "1700000000001500"), 1.5);
        assert!((d("1700000000000000000", "1700000000002500000") - 2.5).abs() < 1e-3);
        assert!((d("1700000000.250000", "1700000000.750000") - 500.0).abs() < 1e-3);
        assert_eq!(d("100", "115"), 15.0);
        assert_eq!(
            duration_between("1", "3", Some(StampUnit::Seconds)).unwrap(),
            2000.0
        );
        for (s, e) in [
            ("5", "3"),
            ("x", "3"),
            ("1700000000", "1700000000000"),
            ("-1", "3"),
        ] {
            assert_eq!(
                duration_between(s, e, None).unwrap_err().exit_code(),
                2,
                "{s} {e}"
            );
        }
    }

    #[test]
    fn op_names() {
        for ok in ["write_cache", "lock:acquire", "a.b-c", "X1"] {
            validate_op(ok).unwrap();
        }
        for bad in ["", "a,b", "a b", "a\nb", "a\"b", &"x".repeat(129)] {
            assert_eq!(validate_op(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
        assert_eq!(parse_duration_ms("0.25").unwrap(), 0.25);
        assert!(parse_duration_ms("-1").is_err());
    }
}
