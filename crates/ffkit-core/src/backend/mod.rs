//! Where locks and the cache live: the local files (the default) or a Redis
//! server shared by many hosts (docs/redis.md).
//!
//! This module owns the choice: `FFKIT_BACKEND` (parsed once in `config`)
//! or an applet's `--backend URL`, and the validated [`Target`]. The front
//! end never sees it: it hands the `--backend` flag to one of the seam
//! types, [`crate::lock::Locks`], [`crate::cache::Store`] or
//! [`crate::memo::Store`], which pick the local files or the remote
//! [`remote::Driver`] and return the same report types for both
//! (docs/architecture.md, "The backend seam").
//!
//! The Redis engine itself is [`redis`] (cargo feature `redis`): one
//! connection per call with every timeout set, locks with leases and
//! fencing counters, and a cache whose size is kept exact by Lua scripts.
//! It is reached only through the driver the binary installs
//! ([`remote::install`]), never called by name from the rest of the
//! library, so a program that does not install it (the bash builtin) does
//! not link the Redis client.

#[cfg(feature = "redis")]
pub mod redis;
pub mod remote;

use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "redis")]
use ::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::config::Config;
use crate::error::{Error, Result};

/// A validated remote backend address.
#[derive(Clone)]
pub struct Target {
    #[cfg(feature = "redis")]
    pub(crate) info: ConnectionInfo,
    /// The URL as given (with any password): only ever handed to a child
    /// ffkit through its environment (cache-run's detached refresh).
    pub(crate) url: String,
    /// The URL as messages show it: without any credential.
    pub label: String,
    /// The URL's credentials, scrubbed from every message ([`Target::scrub`]).
    secrets: Vec<String>,
    /// `FFKIT_BACKEND_CA`: the PEM file of the CA that signed a `rediss://`
    /// server's certificate (else the system's roots).
    pub(crate) ca: Option<PathBuf>,
    /// `redis+cluster://`: the seed nodes, tried in order for the slot map
    /// (empty: one server). `info` then holds the first seed and the
    /// credentials every node is sent.
    #[cfg(feature = "redis")]
    pub(crate) seeds: Vec<ConnectionAddr>,
    /// `rediss://`: the connection speaks TLS (ffkit's own rustls stream
    /// over its own socket, `redis/conn.rs`); `info` then holds the
    /// plain address the URL names.
    #[cfg(feature = "redis")]
    pub(crate) tls: bool,
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

/// Whether a `FFKIT_BACKEND` or `--backend` value names the local files:
/// `local` exactly (unset and empty are the default, local, too). The one
/// rule the binary, the bash builtin and `_ffkit_remote` in
/// shell/ffkit.bash follow; any other value is a server's URL (blanks
/// around one are ignored) or refused, by [`Target::parse`].
pub fn names_local(value: &str) -> bool {
    value == "local"
}

impl Target {
    /// Parses a backend URL: `local` (→ `None`), else whatever the
    /// installed remote driver accepts ([`remote::Driver::parse`]; the
    /// Redis one: [`Target::parse_redis`]). Without a driver every other
    /// URL is refused.
    pub fn parse(url: &str) -> std::result::Result<Option<Target>, String> {
        if names_local(url) {
            return Ok(None);
        }
        if url.trim() == "local" {
            // The shell functions and the bash builtin send every value
            // but `local` itself to a server's code path (the cache then
            // loses its namespace's dir, a lock its shell's descriptor):
            // reading ` local` as local here would have made the binary
            // alone answer for the local files.
            return Err(format!(
                "'{url}': blanks around local; write local exactly (or leave it unset)"
            ));
        }
        match remote::driver() {
            Some(d) => d.parse(url.trim()).map(Some),
            None => Err(format!(
                "'{}': this program has no remote backend (the bash builtin hands remote \
                 calls to the ffkit binary; a binary built without the `redis` feature has \
                 none); use local",
                redact(url.trim())
            )),
        }
    }
}

#[cfg(feature = "redis")]
impl Target {
    /// Parses a Redis URL: `redis://[user:pass@]host:port[/db]`,
    /// `unix:///path[?db=N]`, `redis+unix:///path`,
    /// `redis+cluster://[user:pass@]host:port[,host:port…]` (a Redis
    /// Cluster, by its seed nodes), and `rediss://…` (TLS) when this build
    /// has the `tls` feature; without it `rediss://` is refused with one
    /// line saying how to get it (docs/redis.md).
    pub(crate) fn parse_redis(url: &str) -> std::result::Result<Target, String> {
        let url = url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("redis+cluster") => return parse_cluster(url),
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
                    "'{}': expected local, redis://host:port[/db], rediss://host:port[/db], \
                     unix:///path/to/redis.sock or redis+cluster://host:port[,host:port…]",
                    redact(url)
                ));
            }
        }
        if let Err(why) = unused_url_parts(url) {
            return Err(format!("'{}': {why}", redact(url)));
        }
        // `rediss://` is read as the `redis://` URL it is otherwise: the
        // `redis` crate parses it only with its own TLS stack linked, and
        // ffkit's TLS is its own (`redis/conn.rs`); `tls` says which.
        let tls = scheme == Some("rediss");
        let plain = match url.strip_prefix("rediss://") {
            Some(rest) => format!("redis://{rest}"),
            None => url.to_string(),
        };
        let info = plain.as_str().into_connection_info().map_err(|e| {
            let why = e.to_string();
            let mut why = why.trim().to_string();
            for s in secrets(url) {
                why = why.replace(s.as_str(), "***");
            }
            format!("'{}': {why}", redact(url))
        })?;
        if let ConnectionAddr::Tcp(host, _) = info.addr()
            && host.is_empty()
        {
            return Err(format!("'{}': no host", redact(url)));
        }
        if let Err(why) = user_without_password(&info) {
            return Err(format!("'{}': {why}", redact(url)));
        }
        if info.redis_settings().db() < 0 {
            return Err(format!(
                "'{}': database {} is not a database number (0 or more)",
                redact(url),
                info.redis_settings().db()
            ));
        }
        // No `CLIENT SETINFO` after connecting: one round trip less per
        // call, and nothing ffkit needs.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let info = info.set_redis_settings(settings);
        Ok(Target {
            info,
            url: url.to_string(),
            label: redact(url),
            secrets: secrets(url),
            ca: None,
            seeds: Vec::new(),
            tls,
        })
    }

    /// Whether this is a Redis Cluster (`redis+cluster://`).
    pub fn is_cluster(&self) -> bool {
        !self.seeds.is_empty()
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl Target {
    /// The target with `FFKIT_BACKEND_CA` (used by `rediss://` only).
    pub fn with_ca(mut self, ca: Option<PathBuf>) -> Target {
        self.ca = ca;
        self
    }

    /// `text` with every credential of the URL replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.secrets {
            t = t.replace(s.as_str(), "***");
        }
        t
    }
}

/// `redis+cluster://[user:pass@]host:port[,host:port…]`: each seed is
/// parsed as `redis://[user:pass@]host:port` (one parser for hosts, ports
/// and percent-escaped passwords); a cluster has only database 0, so a
/// path other than `/` or `/0` is refused, and so is a query.
#[cfg(feature = "redis")]
fn parse_cluster(url: &str) -> std::result::Result<Target, String> {
    let bad = |why: &str| format!("'{}': {why}", redact(url));
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let (cred, rest) = match rest.rsplit_once('@') {
        Some((c, r)) => (Some(c), r),
        None => (None, rest),
    };
    if cred.is_some_and(|c| c.contains(['/', '?', '#'])) {
        return Err(bad(HOST_ENDS));
    }
    if rest.contains(['?', '#']) {
        return Err(bad("a cluster URL takes no query"));
    }
    let (hosts, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    if !matches!(path, "" | "0") {
        return Err(bad(
            "a Redis Cluster has only database 0 (keep fleets apart with another cluster)",
        ));
    }
    let mut seeds = Vec::new();
    let mut first = None;
    for hp in hosts.split(',') {
        let hp = hp.trim();
        if hp.is_empty() {
            return Err(bad("an empty host in the seed list"));
        }
        let one = match cred {
            Some(c) => format!("redis://{c}@{hp}"),
            None => format!("redis://{hp}"),
        };
        let info = one.as_str().into_connection_info().map_err(|e| {
            let mut why = e.to_string().trim().to_string();
            for s in secrets(url) {
                why = why.replace(s.as_str(), "***");
            }
            bad(&format!("{hp}: {why}"))
        })?;
        match info.addr() {
            ConnectionAddr::Tcp(host, _) if !host.is_empty() => {}
            _ => return Err(bad(&format!("{hp}: expected host:port"))),
        }
        if !hp.contains(':') || hp.ends_with(']') {
            return Err(bad(&format!("{hp}: expected host:port")));
        }
        seeds.push(info.addr().clone());
        first.get_or_insert(info);
    }
    let Some(info) = first else {
        return Err(bad("no host"));
    };
    user_without_password(&info).map_err(|why| bad(&why))?;
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    Ok(Target {
        info: info.set_redis_settings(settings),
        url: url.to_string(),
        label: redact(url),
        secrets: secrets(url),
        ca: None,
        seeds,
        tls: false,
    })
}

/// Refuses a user name without a password (`redis://word@host`,
/// `unix:///path?user=NAME`): Redis's `AUTH` takes a password, so the
/// name would never be sent and the call would run as the default user.
/// redis-cli reads `redis://PASSWORD@host` as a password alone; ffkit,
/// like the `redis` crate, reads a user name there, and used to drop it
/// without a word.
#[cfg(feature = "redis")]
fn user_without_password(info: &ConnectionInfo) -> std::result::Result<(), String> {
    let r = info.redis_settings();
    match (r.username(), r.password()) {
        (Some(_), None) => Err(
            "a user name without a password is never sent (AUTH takes a \
             password): give both, user:password@host (unix://: ?user=NAME&pass=PASSWORD), \
             or a password alone, :password@host"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Why a URL with `/`, `?` or `#` before its last `@` is refused.
#[cfg(feature = "redis")]
const HOST_ENDS: &str = "a '/', '?' or '#' before the '@' ends the host part of a URL (a \
     password holding one is written %2F, %3F or %23)";

/// Refuses the parts of a one-server URL that the connection would not
/// use, rather than connecting without them: a query parameter other than
/// `db`, `user` and `pass` of a `unix://` URL (the only ones it reads) and
/// any query of a `redis://`/`rediss://` URL (its database is the path;
/// `redis://h:6379?db=4` used to write to database 0, where another team's
/// cache may live), and a `#fragment` (`rediss://…#insecure`: there is no
/// insecure mode). On `redis://` the query is looked for after the last
/// `@`, so a password holding `?` or `#` is not taken for one.
#[cfg(feature = "redis")]
fn unused_url_parts(url: &str) -> std::result::Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(());
    };
    let unix = matches!(scheme, "unix" | "redis+unix");
    let (cred, tail) = match rest.rsplit_once('@') {
        Some((cred, tail)) if !unix => (cred, tail),
        _ => ("", rest),
    };
    // A URL parser ends the host part at the first `/`, `?` or `#`, so a
    // password holding one (`redis://pa#ss@host`, redis-cli's password
    // alone) is never read as written: the text before it became the host
    // (its name looked up in DNS, a piece of the password sent out) and
    // the rest a fragment, query or path. Refused, before any lookup.
    if cred.contains(['/', '?', '#']) {
        return Err(HOST_ENDS.into());
    }
    if tail.contains('#') {
        return Err(
            "a URL fragment ('#…') is not used: there is no insecure mode (a '#' in \
                    a password is written %23)"
                .into(),
        );
    }
    let Some((_, query)) = tail.split_once('?') else {
        return Ok(());
    };
    let mut seen: Vec<String> = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let key = percent_decode(kv.split_once('=').map_or(kv, |(k, _)| k));
        if unix && matches!(key.as_str(), "db" | "user" | "pass") {
            // `?db=2&db=3` would use one of them and drop the other.
            if seen.contains(&key) {
                return Err(format!("query parameter '{key}' is given twice"));
            }
            seen.push(key);
            continue;
        }
        return Err(if unix {
            format!(
                "query parameter '{key}' is not used by a {scheme}:// URL (it takes db, user \
                 and pass: {scheme}:///path?db=N&pass=PASSWORD)"
            )
        } else {
            format!(
                "query parameter '{key}' is not used by a {scheme}:// URL (the database is \
                 the path and the password goes before the host: \
                 {scheme}://user:password@host:port/DB)"
            )
        });
    }
    Ok(())
}

/// Query parameters of a backend URL that carry a credential.
const SECRET_PARAMS: [&str; 4] = ["pass", "password", "passwd", "pwd"];

/// The URL with every credential replaced by `***`: the password of
/// `user:password@` (everything before the last `@` but the user name, so
/// a password holding `/`, `?` or `@` does not leak either) and the value
/// of a `pass=`/`password=` query parameter (`unix:///path?pass=…`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let rest = match rest.rsplit_once('@') {
        Some((cred, tail)) => {
            let user = match cred.split_once(':') {
                Some((u, _)) if !u.contains(['/', '?', '#']) => u,
                Some(_) => "",
                // `word@host`: the `redis` crate takes it for a user name,
                // but redis-cli (`-u`) for the password, so a URL shared
                // with redis-cli holds the password there: hidden whole.
                None => return format!("{scheme}://***@{}", redact_query(tail)),
            };
            format!("{user}:***@{}", redact_query(tail))
        }
        None => redact_query(rest),
    };
    format!("{scheme}://{rest}")
}

/// `s` with the values of the credential query parameters replaced.
fn redact_query(s: &str) -> String {
    let Some((head, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

fn is_secret_param(k: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| k.eq_ignore_ascii_case(p))
}

/// The credentials in `url`, as written and percent-decoded, for scrubbing
/// messages (a library error could quote them).
#[cfg(feature = "redis")]
fn secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some((_, rest)) = url.split_once("://") else {
        return out;
    };
    if let Some((cred, _)) = rest.rsplit_once('@') {
        // `user:password`, or a lone word (redis-cli's password alone).
        // An empty password is no secret, and `user:` without one is
        // refused: `redis://:@host` would make every `:` of a message `***`.
        match cred.split_once(':') {
            Some((_, "")) => {}
            Some((_, password)) => {
                out.push(password.to_string());
                out.push(cred.to_string());
            }
            None => out.push(cred.to_string()),
        }
    }
    if let Some((_, query)) = rest.split_once('?') {
        for kv in query.split('&') {
            if let Some((k, v)) = kv.split_once('=')
                && is_secret_param(k)
            {
                out.push(v.to_string());
            }
        }
    }
    let decoded: Vec<String> = out.iter().map(|s| percent_decode(s)).collect();
    out.extend(decoded);
    out.retain(|s| !s.is_empty());
    // Longest first, so a password is replaced before a part of it.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

#[cfg(feature = "redis")]
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    /// The parse the binary runs (with the Redis driver installed).
    fn parse(url: &str) -> std::result::Result<Option<Target>, String> {
        remote::install(&redis::DRIVER);
        Target::parse(url)
    }

    #[test]
    fn urls() {
        assert!(parse("local").unwrap().is_none());
        let t = parse("redis://u:secret@127.0.0.1:6380/2").unwrap().unwrap();
        assert_eq!(t.label, "redis://u:***@127.0.0.1:6380/2");
        assert!(!format!("{t:?}").is_empty());
        assert!(parse("unix:///run/redis.sock").unwrap().is_some());
        assert!(parse("redis+unix:///run/redis.sock").unwrap().is_some());
        let tls = parse("rediss://u:secret@h:6380");
        if cfg!(feature = "tls") {
            // Read as the plain address it names, with its credentials.
            let t = tls.unwrap().unwrap();
            assert!(t.is_tls() && t.label == "rediss://u:***@h:6380");
            assert_eq!(t.info.addr(), &ConnectionAddr::Tcp("h".into(), 6380));
            assert_eq!(t.info.redis_settings().password(), Some("secret"));
        } else {
            let e = tls.unwrap_err();
            assert!(e.contains("--features tls") && !e.contains("secret"), "{e}");
        }
        assert!(!parse("redis://h:1").unwrap().unwrap().is_tls());
        for bad in ["http://x", "redis://h:port", "nonsense", "redis://"] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
        let e = parse("redis://u:secret@h:bad").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        // What the connection would not use is refused, not dropped.
        for (bad, says) in [
            ("redis://u:secret@h:1?db=4", "'db'"),
            ("redis://h:1/2?password=secret", "'password'"),
            ("redis://h:1#insecure", "no insecure mode"),
            ("redis://h:1/#x", "fragment"),
            ("unix:///r.sock?database=3", "'database'"),
            ("redis+unix:///r.sock?db=1&password=secret", "'password'"),
            ("unix:///r.sock#x?pass=secret", "fragment"),
            ("unix:///r.sock?pass=sec#ret", "%23"),
            ("redis://h:1?%64b=4", "'db'"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says) && !e.contains("secret"), "{bad}: {e}");
        }
        if cfg!(feature = "tls") {
            let e = parse("rediss://h:1#insecure").unwrap_err();
            assert!(e.contains("no insecure mode"), "{e}");
        }
        for good in [
            "unix:///r.sock?db=3&user=u&pass=s%3Fc%23r%26t",
            "redis://u:p%3Fa%23s@h:1/3",
            "redis://h:1/",
            "unix:///r.sock?",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn cluster_urls() {
        let t = parse("redis+cluster://u:s3cret@127.0.0.1:7001,127.0.0.1:7002,[::1]:7003")
            .unwrap()
            .unwrap();
        assert!(t.is_cluster() && !t.is_tls());
        assert_eq!(t.seeds.len(), 3);
        assert_eq!(
            t.label,
            "redis+cluster://u:***@127.0.0.1:7001,127.0.0.1:7002,[::1]:7003"
        );
        assert_eq!(t.info.redis_settings().password(), Some("s3cret"));
        assert!(matches!(&t.seeds[2], ConnectionAddr::Tcp(h, 7003) if h == "::1"));
        let one = parse("redis+cluster://h:1/0").unwrap().unwrap();
        assert_eq!(one.seeds.len(), 1);
        assert!(!parse("redis://h:1").unwrap().unwrap().is_cluster());
        for bad in [
            "redis+cluster://",
            "redis+cluster://h:1,,h:2",
            "redis+cluster://h:1/2",
            "redis+cluster://h",
            "redis+cluster://u:s3cret@h:1?db=2",
            "redis+cluster://u:s3cret@h:x,h:2",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{bad}: {e}");
        }
    }

    #[test]
    fn no_credential_is_shown_in_any_url_form() {
        for (url, shown) in [
            ("redis://u:s3cret@h:6379/2", "redis://u:***@h:6379/2"),
            ("redis://:s3cret@h:6379", "redis://:***@h:6379"),
            ("redis://u:s3/c?r@et@h:1", "redis://u:***@h:1"),
            (
                "unix:///run/r.sock?pass=s3cret&db=2",
                "unix:///run/r.sock?pass=***&db=2",
            ),
            (
                "redis+unix:///r.sock?db=1&password=s3cret",
                "redis+unix:///r.sock?db=1&password=***",
            ),
            (
                "redis://h:1/0?PASSWORD=s3cret",
                "redis://h:1/0?PASSWORD=***",
            ),
            ("redis://u:s%33cret@h:1", "redis://u:***@h:1"),
            ("redis://s3cret@h:1", "redis://***@h:1"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            let t = Target {
                info: "redis://h:1".into_connection_info().unwrap(),
                url: url.into(),
                label: redact(url),
                secrets: secrets(url),
                ca: None,
                seeds: Vec::new(),
                tls: false,
            };
            let msg = t.scrub(&format!("error: {url} said s3cret, s3/c?r@et"));
            let leaked = if url.contains("s3/c") {
                "c?r@et"
            } else {
                "s3cret"
            };
            assert!(!url.contains(leaked) || !msg.contains(leaked), "{msg}");
        }
        assert!(secrets("redis://u:s%33cret@h:1").contains(&"s3cret".to_string()));
        assert!(secrets("redis://:@h:1").is_empty());
    }
}
