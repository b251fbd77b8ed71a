//! Where locks and the cache live: the local files (the default) or a Redis
//! server shared by many hosts (docs/redis.md).
//!
//! This module owns the choice: `FFKIT_BACKEND` (parsed once in `config`)
//! or an applet's `--backend URL`, and the validated [`Target`]. The Redis
//! engine itself is [`redis`]: one connection per call with every timeout
//! set, locks with leases and fencing counters, and a cache whose size is
//! kept exact by Lua scripts.

pub mod redis;

use std::path::PathBuf;
use std::time::Duration;

use ::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::config::Config;
use crate::error::{Error, Result};

/// A validated remote backend address.
#[derive(Clone)]
pub struct Target {
    pub(crate) info: ConnectionInfo,
    /// The URL as given (with any password): only ever handed to a child
    /// ffkit through its environment (cache-run's detached refresh).
    pub(crate) url: String,
    /// The URL as messages show it: without the password.
    pub label: String,
    /// `FFKIT_BACKEND_CA`: the PEM file of the CA that signed a `rediss://`
    /// server's certificate (else the system's roots).
    pub(crate) ca: Option<PathBuf>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("label", &self.label)
            .finish()
    }
}

impl Target {
    /// The URL with its password, for a child ffkit's `FFKIT_BACKEND`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Target {
    /// Parses a backend URL: `local` (→ `None`), `redis://[user:pass@]host:port[/db]`,
    /// `unix:///path[?db=N]`, `redis+unix:///path`, and `rediss://…` (TLS)
    /// when this build has the `tls` feature; without it `rediss://` is
    /// refused with one line saying how to get it (docs/redis.md).
    pub fn parse(url: &str) -> std::result::Result<Option<Target>, String> {
        let url = url.trim();
        if url == "local" {
            return Ok(None);
        }
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("redis" | "unix" | "redis+unix") => {}
            Some("rediss") if cfg!(feature = "tls") => {}
            Some("rediss") => {
                return Err(format!(
                    "'{}': this ffkit was built without TLS; build it with `--features tls` for \
                     rediss://, or reach Redis over a unix socket, a private network or a tunnel \
                     (docs/redis.md)",
                    redact(url)
                ));
            }
            _ => {
                return Err(format!(
                    "'{}': expected local, redis://host:port[/db], rediss://host:port[/db] or \
                     unix:///path/to/redis.sock",
                    redact(url)
                ));
            }
        }
        let info = url
            .into_connection_info()
            .map_err(|e| format!("'{}': {}", redact(url), e.to_string().trim()))?;
        if let ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } = info.addr()
            && host.is_empty()
        {
            return Err(format!("'{}': no host", redact(url)));
        }
        // No `CLIENT SETINFO` after connecting: one round trip less per
        // call, and nothing ffkit needs.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let info = info.set_redis_settings(settings);
        Ok(Some(Target {
            info,
            url: url.to_string(),
            label: redact(url),
            ca: None,
        }))
    }

    /// The target with `FFKIT_BACKEND_CA` (used by `rediss://` only).
    pub fn with_ca(mut self, ca: Option<PathBuf>) -> Target {
        self.ca = ca;
        self
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        matches!(self.info.addr(), ConnectionAddr::TcpTls { .. })
    }
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth_end, tail) = match rest.find('/') {
        Some(i) => (i, &rest[i..]),
        None => (rest.len(), ""),
    };
    let authority = &rest[..auth_end];
    match authority.rsplit_once('@') {
        Some((cred, host)) => {
            let user = cred.split_once(':').map_or(cred, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// The backend a call uses: `--backend URL` when given (`local` forces the
/// local files), else `FFKIT_BACKEND`. `None` means the local files.
pub fn select(cfg: &Config, flag: Option<&str>) -> Result<Option<Target>> {
    match flag {
        Some(u) => Target::parse(u)
            .map(|t| t.map(|t| t.with_ca(cfg.backend_ca.clone())))
            .map_err(|e| Error::Config(format!("--backend: {e}"))),
        None => Ok(cfg.backend.clone()),
    }
}

/// The timeouts and lease a remote call runs with.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connect, read and write timeout of each call.
    pub timeout: Duration,
    /// Lock lease (renewed every third of it).
    pub lease: Duration,
}

impl Limits {
    pub fn from_config(cfg: &Config) -> Limits {
        Limits {
            timeout: cfg.backend_timeout,
            lease: cfg.lock_lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(Target::parse("local").unwrap().is_none());
        let t = Target::parse("redis://u:secret@127.0.0.1:6380/2")
            .unwrap()
            .unwrap();
        assert_eq!(t.label, "redis://u:***@127.0.0.1:6380/2");
        assert!(!format!("{t:?}").is_empty());
        assert!(Target::parse("unix:///run/redis.sock").unwrap().is_some());
        assert!(
            Target::parse("redis+unix:///run/redis.sock")
                .unwrap()
                .is_some()
        );
        let tls = Target::parse("rediss://u:secret@h:6380");
        if cfg!(feature = "tls") {
            assert!(tls.unwrap().unwrap().is_tls());
        } else {
            let e = tls.unwrap_err();
            assert!(e.contains("--features tls") && !e.contains("secret"), "{e}");
        }
        assert!(!Target::parse("redis://h:1").unwrap().unwrap().is_tls());
        for bad in ["http://x", "redis://h:port", "nonsense", "redis://"] {
            let e = Target::parse(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
        let e = Target::parse("redis://u:secret@h:bad").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
