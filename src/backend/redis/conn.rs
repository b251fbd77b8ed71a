//! One connection to the Redis backend with every timeout set, and the
//! mapping of Redis failures to ffkit's one-line errors.
//!
//! The connect timeout covers the TCP connect and the handshake; read and
//! write timeouts are set on the socket before the first command, so a
//! server that is down, paused (`CLIENT PAUSE`) or slow makes the call fail
//! within `FFKIT_BACKEND_TIMEOUT`, never hang. A failure is a lock failure
//! (exit 9) for the lock applets and a general failure (exit 1, like a local
//! I/O error) for the cache applets (docs/redis.md, "Failures").

use std::time::Duration;

use redis::{Client, Connection, RedisError};

use crate::backend::Target;
use crate::error::Error;

/// Which family of applets is calling: decides the exit code of a backend failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    Lock,
    Cache,
}

/// An open connection and what its errors are reported as.
pub struct Conn {
    pub(crate) con: Connection,
    label: String,
    timeout: Duration,
    area: Area,
}

/// A `rediss://` client that trusts the CA in `ca` (PEM) instead of the
/// system's roots. A CA file that cannot be read or parsed is a
/// configuration error (exit 12), not a server failure.
#[cfg(feature = "tls")]
fn tls_client(target: &Target, ca: &std::path::Path) -> crate::Result<Client> {
    let bad = |why: String| Error::Config(format!("FFKIT_BACKEND_CA={}: {why}", ca.display()));
    let pem = std::fs::read(ca).map_err(|e| bad(crate::error::os_reason(&e)))?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Client::build_with_tls(target.info.clone(), certs).map_err(|e| bad(e.to_string()))
}

/// Without the `tls` feature no target is TLS (`Target::parse` refuses
/// `rediss://`), so this is never reached.
#[cfg(not(feature = "tls"))]
fn tls_client(target: &Target, _ca: &std::path::Path) -> crate::Result<Client> {
    Err(Error::Config(format!(
        "{}: this ffkit was built without TLS",
        target.label
    )))
}

impl Conn {
    /// Connects with `timeout` for connect, read and write.
    pub fn open(target: &Target, timeout: Duration, area: Area) -> crate::Result<Conn> {
        let fail = |e: RedisError| failure(area, &target.label, "cannot connect", timeout, &e);
        let client = match &target.ca {
            Some(ca) if target.is_tls() => tls_client(target, ca)?,
            _ => Client::open(target.info.clone()).map_err(fail)?,
        };
        let con = client.get_connection_with_timeout(timeout).map_err(fail)?;
        con.set_read_timeout(Some(timeout)).map_err(fail)?;
        con.set_write_timeout(Some(timeout)).map_err(fail)?;
        Ok(Conn {
            con,
            label: target.label.clone(),
            timeout,
            area,
        })
    }

    /// The error for a failed call doing `what`.
    pub fn fail(&self, what: &str, e: &RedisError) -> Error {
        failure(self.area, &self.label, what, self.timeout, e)
    }

    /// Runs `f` on the connection, mapping its failure.
    pub fn call<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> crate::Result<T> {
        match f(&mut self.con) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.fail(what, &e)),
        }
    }

    /// Runs a blocking command that may legitimately wait `wait` on the
    /// server (BLPOP): the read timeout is stretched by `wait` for this call
    /// only.
    pub fn call_blocking<T>(
        &mut self,
        what: &str,
        wait: Duration,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> crate::Result<T> {
        let stretched = self.timeout + wait;
        self.con
            .set_read_timeout(Some(stretched))
            .map_err(|e| self.fail(what, &e))?;
        let r = f(&mut self.con);
        let reset = self.con.set_read_timeout(Some(self.timeout));
        let v = r.map_err(|e| self.fail(what, &e))?;
        reset.map_err(|e| self.fail(what, &e))?;
        Ok(v)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// "redis://h:p: cannot connect: timed out after 2s" as the area's error.
fn failure(area: Area, label: &str, what: &str, timeout: Duration, e: &RedisError) -> Error {
    let why = if e.is_timeout() {
        format!(
            "timed out after {}s (FFKIT_BACKEND_TIMEOUT)",
            timeout.as_secs_f64()
        )
    } else if e.is_connection_refusal() {
        "connection refused (is the server running?)".to_string()
    } else if e.is_connection_dropped() {
        "connection lost".to_string()
    } else {
        one_line(&e.to_string())
    };
    let msg = format!("backend {label}: {what}: {why}");
    match area {
        Area::Lock => Error::LockFailed(msg),
        Area::Cache => Error::General(msg),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
