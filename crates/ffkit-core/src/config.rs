//! The environment (README "Environment variables": the old library's
//! variables plus ffkit's own knobs), read and
//! validated in one place, once per process.
//!
//! Nothing else in ffkit calls `std::env::var`. Every variable is parsed
//! eagerly: an unknown value such as `LOCK_BACKOFF_STRATEGY=fibonacci` is an
//! [`Error::Config`] (exit 12) for every applet, never a silent fallback. An
//! empty value counts as unset, as shell scripts commonly export `VAR=`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::units;

pub use crate::namespace::{Here, current_dir, repo_root, validate_developer};

/// How a polling lock waits between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackoffStrategy {
    /// Starts at `LOCK_BACKOFF_INITIAL` (0.1 s) and doubles up to `LOCK_BACKOFF_MAX` (2.0 s).
    Exponential,
    /// A fixed 0.5 s between attempts.
    Linear,
}

/// Every setting that comes from the environment, typed.
#[derive(Clone, Debug)]
pub struct Config {
    /// `CACHE_SIZE_TRACKING`: read the size from the index (true) or walk.
    pub size_tracking: bool,
    /// `LOCK_BACKOFF_STRATEGY`.
    pub backoff: BackoffStrategy,
    /// `LOCK_BACKOFF_INITIAL` (seconds, default 0.1).
    pub backoff_initial: Duration,
    /// `LOCK_BACKOFF_MAX` (seconds, default 2.0).
    pub backoff_max: Duration,
    /// `LOCK_TIMEOUT` (seconds, fractional, default 30).
    pub lock_timeout: Duration,
    /// `LOCK_STALE_AFTER` (seconds, default 300): age after which a dotlock is stale.
    pub lock_stale_after: Duration,
    /// `LOCK_OLD_LIBRARY`: `present` (true) makes a NAME's kernel lock
    /// follow the old library's file protocol too (`lock::compat`).
    pub old_library: bool,
    /// `CACHE_PERF_MONITORING`: applets append their own timings.
    pub perf_monitoring: bool,
    /// `CACHE_PERF_METRICS`: the metrics log; default `<cache-dir>/.perf-metrics.csv`.
    pub perf_metrics: Option<PathBuf>,
    /// `FFKIT_FN_LOG_DIR` (internal, hidden): the cache dir of a shell
    /// function's caller, whose default log receives the call's rows when
    /// `CACHE_PERF_METRICS` is not set; judged as a dir ffkit picked
    /// ([`crate::metrics::log_place`]). The functions set it, never a user.
    pub fn_log_dir: Option<PathBuf>,
    /// `CACHE_PERF_MAX_BYTES` (default 10 MiB): the log is trimmed above this.
    pub perf_max_bytes: u64,
    /// `FLOWFORGE_DEVELOPER`: the namespace id.
    pub developer: Option<String>,
    /// `FF_DEBUG`.
    pub debug: bool,
    /// `FFKIT_CACHE_DIR`.
    pub cache_dir: Option<PathBuf>,
    /// `FFKIT_LOCK_DIR`.
    pub lock_dir: Option<PathBuf>,
    /// `FFKIT_TEST_NOW` (test-only, hidden): epoch seconds used as "now" for
    /// TTLs and recency, so expiry tests are deterministic.
    pub now_override: Option<i64>,
    /// `FFKIT_TEST_BACKOFF_TRACE` (test-only, hidden): log every backoff sleep to stderr.
    pub backoff_trace: bool,
    /// `FFKIT_TEST_NO_TMPFILE` (test-only, hidden): a cache write makes
    /// named temp files, as where `O_TMPFILE` is missing (docs/cache.md).
    pub no_tmpfile: bool,
    /// `SHELL`: runs `lock-acquire -c` / `flock -c` commands (default /bin/sh).
    pub shell: Option<PathBuf>,
    /// `FFKIT_BACKEND`: where locks and the cache live; `None` (unset or
    /// `local`) is the local files. Validated here (a bad URL exits 12).
    pub backend: Option<crate::backend::Target>,
    /// `FFKIT_BACKEND_TIMEOUT` (seconds, default 2): connect, read and write
    /// timeout of every call to a remote backend.
    pub backend_timeout: Duration,
    /// `FFKIT_LOCK_LEASE` (seconds, default 30): how long a lock on a
    /// remote backend outlives its last renewal.
    pub lock_lease: Duration,
    /// `FFKIT_BACKEND_CA`: the CA (PEM) a `rediss://` server's certificate
    /// is checked against; unset: the system's roots.
    pub backend_ca: Option<PathBuf>,
    home: Option<PathBuf>,
    xdg_cache_home: Option<PathBuf>,
    xdg_runtime_dir: Option<PathBuf>,
}

pub const DEFAULT_PERF_MAX_BYTES: u64 = 10 << 20;

/// One documented environment variable: the single table the man pages'
/// ENVIRONMENT section and the README's table are generated from. A test
/// below proves it names every variable [`Config::from_lookup`] reads
/// (the hidden test-only ones excepted), so the docs cannot miss a knob.
#[derive(Clone, Copy, Debug)]
pub struct EnvVar {
    pub name: &'static str,
    /// Accepted values, in words.
    pub values: &'static str,
    /// The default, or empty when unset means "not used".
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every variable ffkit reads, contract variables first, then ffkit's own
/// knobs, then the standard ones it falls back on.
pub const ENV_VARS: &[EnvVar] = &[
    EnvVar {
        name: "CACHE_SIZE_TRACKING",
        values: "enabled | disabled",
        default: "enabled",
        meaning: "enabled: cache-size reads the incremental index in O(1); disabled: it walks the cache dir",
    },
    EnvVar {
        name: "LOCK_BACKOFF_STRATEGY",
        values: "exponential | linear",
        default: "exponential",
        meaning: "how a waiting lock retries: exponential from LOCK_BACKOFF_INITIAL doubling to LOCK_BACKOFF_MAX; linear a fixed 0.5 s",
    },
    EnvVar {
        name: "LOCK_TIMEOUT",
        values: "seconds (fractional allowed)",
        default: "30",
        meaning: "how long lock acquisition, and a cache call waiting for the cache dir's lock, waits before giving up (exit 6)",
    },
    EnvVar {
        name: "CACHE_PERF_MONITORING",
        values: "enabled | disabled",
        default: "enabled",
        meaning: "enabled: applets append their own timings to the metrics log; disabled: nothing is recorded",
    },
    EnvVar {
        name: "CACHE_PERF_METRICS",
        values: "path",
        default: "<cache-dir>/.perf-metrics.csv",
        meaning: "the CSV metrics log (timestamp,operation,duration_ms); a relative path is relative to the current dir",
    },
    EnvVar {
        name: "FLOWFORGE_DEVELOPER",
        values: "developer id (letters, digits, '.', '_', '-')",
        default: "",
        meaning: "the namespace: the cache dir becomes <repo>/.flowforge/dev-<id>/cache",
    },
    EnvVar {
        name: "FF_DEBUG",
        values: "true | false",
        default: "false",
        meaning: "debug lines on stderr",
    },
    EnvVar {
        name: "FFKIT_CACHE_DIR",
        values: "path",
        default: "",
        meaning: "the cache dir (overrides the namespace and XDG default; --dir overrides it)",
    },
    EnvVar {
        name: "FFKIT_LOCK_DIR",
        values: "path",
        default: "",
        meaning: "the dir for lock files (overrides the namespace's locks/ dir)",
    },
    EnvVar {
        name: "LOCK_BACKOFF_INITIAL",
        values: "seconds",
        default: "0.1",
        meaning: "first wait of the exponential backoff",
    },
    EnvVar {
        name: "LOCK_BACKOFF_MAX",
        values: "seconds",
        default: "2.0",
        meaning: "cap of the exponential backoff",
    },
    EnvVar {
        name: "LOCK_STALE_AFTER",
        values: "seconds",
        default: "300",
        meaning: "age after which a lock whose holder cannot be checked counts as stale",
    },
    EnvVar {
        name: "LOCK_OLD_LIBRARY",
        values: "absent | present",
        default: "absent",
        meaning: "present: the old bash library may take the same lock names (a migration): ffkit's release deletes a NAME's lock file, as the old library's does (docs/locks.md)",
    },
    EnvVar {
        name: "CACHE_PERF_MAX_BYTES",
        values: "size (10485760, 10M, 1G)",
        default: "10M",
        meaning: "the metrics log is trimmed when it grows above this",
    },
    EnvVar {
        name: "FFKIT_BACKEND",
        values: "local | redis://[user:pass@]host:port[/db] | rediss://… (tls feature) | unix:///path/redis.sock[?db=N] | redis+cluster://host:port[,host:port…]",
        default: "local",
        meaning: "where locks and the cache live: the local files, or a Redis server shared by many hosts (docs/redis.md); --backend overrides it",
    },
    EnvVar {
        name: "FFKIT_BACKEND_TIMEOUT",
        values: "seconds (fractional allowed, above 0)",
        default: "2",
        meaning: "connect, read and write timeout of every Redis call: a down, paused or slow server fails within it",
    },
    EnvVar {
        name: "FFKIT_BACKEND_CA",
        values: "path of a PEM file",
        default: "",
        meaning: "rediss:// (a build with the tls feature): the CA that signed the server's certificate; unset: the system's roots",
    },
    EnvVar {
        name: "FFKIT_LOCK_LEASE",
        values: "seconds (at least 3 x FFKIT_BACKEND_TIMEOUT)",
        default: "30",
        meaning: "Redis locks: the lease renewed every third of it while held; a dead holder's lock lapses within it",
    },
    EnvVar {
        name: "XDG_CACHE_HOME",
        values: "path",
        default: "$HOME/.cache",
        meaning: "the default cache dir is $XDG_CACHE_HOME/ffkit; a relative value is ignored, as the XDG spec says",
    },
    EnvVar {
        name: "XDG_RUNTIME_DIR",
        values: "path",
        default: "",
        meaning: "per-user runtime dir, for runtime files such as default lock dirs; a relative value is ignored, as the XDG spec says",
    },
    EnvVar {
        name: "SHELL",
        values: "path",
        default: "/bin/sh",
        meaning: "the shell that runs lock-acquire -c and flock -c commands",
    },
    EnvVar {
        name: "HOME",
        values: "path",
        default: "(set by login)",
        meaning: "the default cache dir is $HOME/.cache/ffkit when XDG_CACHE_HOME is unset",
    },
];

/// Variables [`Config::from_lookup`] reads that are deliberately missing
/// from [`ENV_VARS`]: hidden, test-only hooks, and `FFKIT_FN_LOG_DIR`,
/// which only the shell functions set for the binary they run.
pub const HIDDEN_ENV_VARS: &[&str] = &[
    "FFKIT_FN_LOG_DIR",
    "FFKIT_TEST_NOW",
    "FFKIT_TEST_BACKOFF_TRACE",
    "FFKIT_TEST_NO_TMPFILE",
];

/// The raw value of a variable the user names (`cache-run --key-env NAME`):
/// part of a cache key, not a setting, so it is neither parsed nor listed in
/// [`ENV_VARS`]; `None` when unset (an empty value is distinct).
pub fn user_var(name: &OsStr) -> Option<OsString> {
    std::env::var_os(name)
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var_os(k))
    }

    /// Reads settings through `get`, so tests can supply a fake environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let text = |k: &str| -> Result<Option<String>> {
            match var(k) {
                None => Ok(None),
                Some(v) => v
                    .into_string()
                    .map(Some)
                    .map_err(|_| Error::Config(format!("{k}: value is not valid UTF-8"))),
            }
        };
        let switch = |k: &str, default: bool| -> Result<bool> {
            match text(k)?.as_deref() {
                None => Ok(default),
                Some("enabled") => Ok(true),
                Some("disabled") => Ok(false),
                Some(v) => Err(Error::Config(format!(
                    "{k}='{v}': expected 'enabled' or 'disabled'"
                ))),
            }
        };
        // Defaults as durations, not `from_secs_f64` on every read (six
        // per call of the bash builtin).
        let seconds = |k: &str, default: Duration| -> Result<Duration> {
            match text(k)? {
                None => Ok(default),
                Some(v) => units::parse_seconds(&v).map_err(|e| Error::Config(format!("{k}: {e}"))),
            }
        };
        let path = |k: &str| var(k).map(PathBuf::from);

        let backoff = match text("LOCK_BACKOFF_STRATEGY")?.as_deref() {
            None | Some("exponential") => BackoffStrategy::Exponential,
            Some("linear") => BackoffStrategy::Linear,
            Some(v) => {
                return Err(Error::Config(format!(
                    "LOCK_BACKOFF_STRATEGY='{v}': expected 'exponential' or 'linear'"
                )));
            }
        };
        let debug = match text("FF_DEBUG")?.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(Error::Config(format!(
                    "FF_DEBUG='{v}': expected 'true' or 'false'"
                )));
            }
        };
        let old_library = match text("LOCK_OLD_LIBRARY")?.as_deref() {
            None | Some("absent") => false,
            Some("present") => true,
            Some(v) => {
                return Err(Error::Config(format!(
                    "LOCK_OLD_LIBRARY='{v}': expected 'absent' or 'present'"
                )));
            }
        };
        let developer = match text("FLOWFORGE_DEVELOPER")? {
            None => None,
            Some(id) => Some(validate_developer(&id)?),
        };
        let perf_max_bytes = match text("CACHE_PERF_MAX_BYTES")? {
            None => DEFAULT_PERF_MAX_BYTES,
            Some(v) => units::parse_size(&v)
                .map_err(|e| Error::Config(format!("CACHE_PERF_MAX_BYTES: {e}")))?,
        };
        let now_override = match text("FFKIT_TEST_NOW")? {
            None => None,
            Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
                Error::Config(format!("FFKIT_TEST_NOW='{v}': expected epoch seconds"))
            })?),
        };
        let backoff_initial = seconds("LOCK_BACKOFF_INITIAL", Duration::from_millis(100))?;
        let backoff_max = seconds("LOCK_BACKOFF_MAX", Duration::from_secs(2))?;
        if backoff_initial.is_zero() || backoff_max < backoff_initial {
            return Err(Error::Config(format!(
                "LOCK_BACKOFF_INITIAL ({}s) must be above 0 and not above LOCK_BACKOFF_MAX ({}s)",
                backoff_initial.as_secs_f64(),
                backoff_max.as_secs_f64()
            )));
        }
        let backend_ca = path("FFKIT_BACKEND_CA").map(absolute);
        let backend = match text("FFKIT_BACKEND")? {
            None => None,
            Some(v) => crate::backend::Target::parse(&v)
                .map_err(|e| Error::Config(format!("FFKIT_BACKEND: {e}")))?
                .map(|t| t.with_ca(backend_ca.clone())),
        };
        let backend_timeout = seconds("FFKIT_BACKEND_TIMEOUT", Duration::from_secs(2))?;
        if backend_timeout.is_zero() {
            return Err(Error::Config(
                "FFKIT_BACKEND_TIMEOUT: must be above 0 (a call without a bound could hang)".into(),
            ));
        }
        let lock_lease = seconds("FFKIT_LOCK_LEASE", Duration::from_secs(30))?;
        if lock_lease < backend_timeout * 3 {
            return Err(Error::Config(format!(
                "FFKIT_LOCK_LEASE ({}s) must be at least 3 x FFKIT_BACKEND_TIMEOUT ({}s): a renewal must fit in a third of the lease",
                lock_lease.as_secs_f64(),
                backend_timeout.as_secs_f64()
            )));
        }
        Ok(Config {
            size_tracking: switch("CACHE_SIZE_TRACKING", true)?,
            backoff,
            backoff_initial,
            backoff_max,
            lock_timeout: seconds("LOCK_TIMEOUT", Duration::from_secs(30))?,
            lock_stale_after: seconds("LOCK_STALE_AFTER", Duration::from_secs(300))?,
            old_library,
            perf_monitoring: switch("CACHE_PERF_MONITORING", true)?,
            perf_metrics: path("CACHE_PERF_METRICS").map(absolute),
            fn_log_dir: path("FFKIT_FN_LOG_DIR").map(absolute),
            perf_max_bytes,
            developer,
            debug,
            cache_dir: path("FFKIT_CACHE_DIR"),
            lock_dir: path("FFKIT_LOCK_DIR"),
            now_override,
            backoff_trace: var("FFKIT_TEST_BACKOFF_TRACE").is_some(),
            no_tmpfile: var("FFKIT_TEST_NO_TMPFILE").is_some(),
            shell: path("SHELL"),
            backend,
            backend_timeout,
            lock_lease,
            backend_ca,
            home: path("HOME"),
            // The XDG spec: a relative value is invalid and ignored.
            xdg_cache_home: path("XDG_CACHE_HOME").filter(|p| p.is_absolute()),
            // Relative: ignored, as the XDG spec says (and as for
            // XDG_CACHE_HOME). Taken as it was, a lock outside a repository
            // was a relative path, one file in each dir a `cd` went to,
            // while the shell functions keyed their held locks on the
            // string (docs/locks.md, "Lock dir").
            xdg_runtime_dir: path("XDG_RUNTIME_DIR").filter(|p| p.is_absolute()),
        })
    }

    /// The current time in epoch seconds (or the test override).
    pub fn now(&self) -> i64 {
        self.now_override
            .unwrap_or_else(|| jiff::Timestamp::now().as_second())
    }

    /// The current time in epoch seconds rounded down and rounded up, read
    /// once (both the test override when set): TTLs count from the second
    /// rounded up, so an entry lives at least its TTL.
    pub fn now_floor_ceil(&self) -> (i64, i64) {
        if let Some(t) = self.now_override {
            return (t, t);
        }
        let t = jiff::Timestamp::now();
        let floor = t.as_second();
        (floor, floor + i64::from(t.subsec_nanosecond() > 0))
    }

    /// The FlowForge namespace dir `<repo>/.flowforge/dev-<id>`, when
    /// `FLOWFORGE_DEVELOPER` is set (the rule is [`crate::namespace`]'s).
    pub fn namespace_dir(&self) -> Result<Option<PathBuf>> {
        if self.developer.is_none() {
            return Ok(None);
        }
        Ok(self.namespace_dir_in(&Here::now()?))
    }

    /// [`Config::namespace_dir`] for a place the caller already looked up.
    pub fn namespace_dir_in(&self, here: &Here) -> Option<PathBuf> {
        self.developer.as_ref()?;
        Some(crate::namespace::Namespace::of_setting(self, here).root())
    }

    /// The cache dir: `--dir`, else `FFKIT_CACHE_DIR`, else the namespace's
    /// `cache/`, else `${XDG_CACHE_HOME:-$HOME/.cache}/ffkit`.
    pub fn cache_dir(&self, explicit: Option<&Path>) -> Result<PathBuf> {
        self.choose_cache_dir(explicit).map(|c| c.path)
    }

    /// [`Config::cache_dir`] and why that one: a dir the user named is
    /// trusted more than one ffkit picks itself (see docs/cache.md).
    pub fn choose_cache_dir(&self, explicit: Option<&Path>) -> Result<ChosenDir> {
        let chosen = |path: PathBuf, origin| Ok(ChosenDir { path, origin });
        if let Some(d) = explicit {
            return chosen(d.to_path_buf(), DirOrigin::Flag);
        }
        if let Some(d) = &self.cache_dir {
            return chosen(d.clone(), DirOrigin::Env);
        }
        if self.developer.is_some() {
            let ns = crate::namespace::Namespace::of_setting(self, &Here::now()?);
            return chosen(ns.cache_dir(), DirOrigin::Namespace);
        }
        if let Some(x) = &self.xdg_cache_home {
            return chosen(x.join("ffkit"), DirOrigin::Xdg);
        }
        match &self.home {
            Some(h) => chosen(h.join(".cache").join("ffkit"), DirOrigin::Home),
            None => Err(Error::Config(
                "cannot choose a cache dir: none of --dir, FFKIT_CACHE_DIR, FLOWFORGE_DEVELOPER, XDG_CACHE_HOME (absolute) or HOME is set".into(),
            )),
        }
    }

    /// `XDG_RUNTIME_DIR`, for per-user runtime files such as default lock dirs.
    pub fn runtime_dir(&self) -> Option<&Path> {
        self.xdg_runtime_dir.as_deref()
    }
}

/// Where a cache dir came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirOrigin {
    /// `--dir`.
    Flag,
    /// `FFKIT_CACHE_DIR`.
    Env,
    /// `FLOWFORGE_DEVELOPER`'s namespace.
    Namespace,
    /// `$XDG_CACHE_HOME/ffkit`.
    Xdg,
    /// `$HOME/.cache/ffkit`.
    Home,
    /// A shell function's dir: its namespace's, which the function picked
    /// (docs/shell.md, "Namespace").
    Functions,
}

impl DirOrigin {
    /// Whether the user named the dir (`--dir`, `FFKIT_CACHE_DIR`) rather
    /// than ffkit picking it from a namespace or a default.
    pub fn is_explicit(self) -> bool {
        matches!(self, DirOrigin::Flag | DirOrigin::Env)
    }

    /// Why this dir, in words, for messages and debug lines.
    pub fn describe(self) -> &'static str {
        match self {
            DirOrigin::Flag => "--dir",
            DirOrigin::Env => "FFKIT_CACHE_DIR",
            DirOrigin::Namespace => "the FLOWFORGE_DEVELOPER namespace",
            DirOrigin::Xdg => "XDG_CACHE_HOME",
            DirOrigin::Home => "the default under HOME",
            DirOrigin::Functions => "the shell functions' namespace",
        }
    }
}

/// A cache dir and why it was chosen.
#[derive(Clone, Debug)]
pub struct ChosenDir {
    pub path: PathBuf,
    pub origin: DirOrigin,
}

/// A relative path made absolute against the current dir, once, so that it
/// means the same for every reader and writer of the process (a bare
/// `CACHE_PERF_METRICS=perf.csv` is `./perf.csv`). Kept as given when the
/// current dir cannot be read; opening it then resolves it the same way.
fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        return p;
    }
    std::env::current_dir().map_or(p.clone(), |cwd| cwd.join(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |k| {
            vars.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn defaults() {
        let c = cfg(&[("HOME", "/h")]).unwrap();
        assert!(c.size_tracking && c.perf_monitoring && !c.debug);
        assert_eq!(c.backoff, BackoffStrategy::Exponential);
        assert_eq!(c.lock_timeout, Duration::from_secs(30));
        assert_eq!(c.lock_stale_after, Duration::from_secs(300));
        assert_eq!(c.backoff_initial, Duration::from_millis(100));
        assert_eq!(c.backoff_max, Duration::from_secs(2));
        assert_eq!(c.cache_dir(None).unwrap(), PathBuf::from("/h/.cache/ffkit"));
    }

    #[test]
    fn cache_dir_order() {
        let c = cfg(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("FFKIT_CACHE_DIR", "/f"),
        ])
        .unwrap();
        assert_eq!(
            c.cache_dir(Some(Path::new("/d"))).unwrap(),
            PathBuf::from("/d")
        );
        assert_eq!(c.cache_dir(None).unwrap(), PathBuf::from("/f"));
        let c = cfg(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]).unwrap();
        assert_eq!(c.cache_dir(None).unwrap(), PathBuf::from("/x/ffkit"));
        assert_eq!(c.choose_cache_dir(None).unwrap().origin, DirOrigin::Xdg);
    }

    #[test]
    fn a_relative_xdg_cache_home_is_ignored() {
        let c = cfg(&[("HOME", "/h"), ("XDG_CACHE_HOME", "rel/x")]).unwrap();
        let d = c.choose_cache_dir(None).unwrap();
        assert_eq!(d.path, PathBuf::from("/h/.cache/ffkit"));
        assert_eq!(d.origin, DirOrigin::Home);
    }

    #[test]
    fn a_relative_xdg_runtime_dir_is_ignored() {
        let c = cfg(&[("XDG_RUNTIME_DIR", "rel/run")]).unwrap();
        assert_eq!(c.runtime_dir(), None);
        let c = cfg(&[("XDG_RUNTIME_DIR", "/run/user/1")]).unwrap();
        assert_eq!(c.runtime_dir(), Some(Path::new("/run/user/1")));
    }

    #[test]
    fn a_relative_metrics_log_is_relative_to_the_current_dir() {
        let c = cfg(&[("CACHE_PERF_METRICS", "perf.csv")]).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.perf_metrics, Some(cwd.join("perf.csv")));
    }

    #[test]
    fn bad_values_are_config_errors() {
        for (k, v) in [
            ("CACHE_SIZE_TRACKING", "on"),
            ("LOCK_BACKOFF_STRATEGY", "fibonacci"),
            ("LOCK_TIMEOUT", "abc"),
            ("LOCK_TIMEOUT", "-1"),
            ("LOCK_STALE_AFTER", "5x"),
            ("CACHE_PERF_MONITORING", "yes"),
            ("CACHE_PERF_MAX_BYTES", "10Q"),
            ("FLOWFORGE_DEVELOPER", "../evil"),
            ("FF_DEBUG", "1"),
            ("LOCK_BACKOFF_INITIAL", "0"),
            ("LOCK_BACKOFF_MAX", "0.01"),
            ("FFKIT_BACKEND", "http://example.com"),
            ("FFKIT_BACKEND", "redis://host:notaport"),
            ("FFKIT_BACKEND_TIMEOUT", "0"),
            ("FFKIT_LOCK_LEASE", "1"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err();
            assert_eq!(e.exit_code(), 12, "{k}={v}");
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn env_table_names_every_variable_read() {
        let asked = std::cell::RefCell::new(Vec::<String>::new());
        Config::from_lookup(|k| {
            asked.borrow_mut().push(k.to_string());
            None
        })
        .unwrap();
        let mut read: Vec<String> = asked.into_inner();
        read.retain(|k| !HIDDEN_ENV_VARS.contains(&k.as_str()));
        read.sort();
        read.dedup();
        let mut documented: Vec<String> = ENV_VARS.iter().map(|v| v.name.to_string()).collect();
        documented.sort();
        assert_eq!(
            read, documented,
            "config::ENV_VARS must document every variable Config reads (add new knobs to the table)"
        );
    }

    #[test]
    fn empty_means_unset() {
        let c = cfg(&[("LOCK_TIMEOUT", ""), ("FLOWFORGE_DEVELOPER", "")]).unwrap();
        assert_eq!(c.lock_timeout, Duration::from_secs(30));
        assert!(c.developer.is_none());
    }
}
