//! `perf-metrics serve`: the metrics log over HTTP (docs/metrics.md,
//! "Serving the metrics").
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/performance/metrics` | exactly `perf-metrics --json` |
//! | `GET /metrics` | exactly `perf-metrics --prometheus` |
//! | `GET /` | the HTML page ([`Html`]), refreshing itself |
//!
//! each with the filters `?since=DURATION` and `?op=NAME` (repeatable).
//! `HEAD` is answered like `GET` without a body; another method on these
//! paths is 405, another path 404, a malformed query 400.
//!
//! The wire is [`super::http`]: one thread per connection (at most 128),
//! read and write timeouts of 5 s, so a client that sends half a request,
//! sends nothing, or stops reading never delays another, and is dropped
//! after a few seconds.
//!
//! One pass over the log serves all three views. The result is kept per
//! filter and reused while the log's identity, size and times are
//! unchanged, and concurrent requests for the same data wait for the one
//! pass in progress instead of each reading a 10-million-row log.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::aggregate::{self, Filter, Report};
use super::export::{ApiJson, Exporter, Html, Prometheus, html, html::CSP, html::PageQuery};
use super::http::{self, Request, Response as Reply};
use crate::config::Config;
use crate::error::{Error, Result};

/// The default `--listen` address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Reports kept (one per distinct filter and log state).
const CACHE_ENTRIES: usize = 8;

/// What the kept reports may hold together (their
/// [`Report::approx_bytes`]); the oldest go first, the newest is always
/// kept. A report's size follows the log's operation names, not its rows:
/// a 10 MiB log of 378,000 names (`build-$id`) makes a 115 MB report, and
/// eight requests with eight `since` values held 930 MB for good.
const CACHE_BYTES: usize = 64 << 20;

/// Requests worked on at once (the pass over the log, or the cached
/// report, and the rendering of the answer); more wait their turn, then
/// find the report a waiting twin made. The work is CPU-bound, so two keep
/// a 2-core machine busy; without the limit, 16 concurrent requests with 16
/// `since` values on that log built 16 reports and answers at once: 4.5 GB.
const MAX_PASSES: usize = 2;

/// The paths the server answers, for the 404 text.
const PATHS: &str = "/, /api/performance/metrics, /metrics";

/// The longest `--refresh`, in seconds: one day. The page's script waits
/// with `setInterval`, which browsers (and node) run at once, every
/// millisecond, for a delay above 2^31 - 1 ms (24.8 days): a larger
/// `--refresh`, meant as "hardly ever", made every open page hammer the
/// server with requests.
pub const MAX_REFRESH: u32 = 86_400;

/// How to serve.
#[derive(Clone, Debug)]
pub struct Options {
    pub listen: SocketAddr,
    /// The metrics log.
    pub log: PathBuf,
    /// For `now()` (the `since` filter) and nothing else.
    pub cfg: Config,
    /// Seconds between the page's own refreshes (0: only by the button),
    /// at most [`MAX_REFRESH`].
    pub refresh: u32,
    /// The `since` of requests that give none (`--since`), as typed.
    pub default_since: Option<String>,
}

/// A bound server, not yet answering.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    log: PathBuf,
    cfg: Config,
    refresh: u32,
    default_since: Option<(String, Duration)>,
    cache: Mutex<Vec<(Key, Arc<OnceLock<Snapshot>>)>>,
    /// [`CACHE_BYTES`], smaller in tests.
    cache_bytes: usize,
    passes: Passes,
}

/// Counts the requests being worked on (a pass over the log or a kept
/// report, and the rendering), at most [`MAX_PASSES`].
#[derive(Default)]
struct Passes {
    running: Mutex<usize>,
    ended: Condvar,
    /// The most that ever ran at once (for the tests).
    most: AtomicUsize,
}

impl Passes {
    /// Runs `pass` once fewer than [`MAX_PASSES`] others are worked on.
    fn run<T>(&self, pass: impl FnOnce() -> T) -> T {
        let mut n = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        while *n >= MAX_PASSES {
            n = self.ended.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
        *n += 1;
        self.most.fetch_max(*n, Ordering::Relaxed);
        drop(n);
        /// Gives the place back however the pass ends (a panic included).
        struct Ended<'a>(&'a Passes);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                let mut n = self
                    .0
                    .running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *n -= 1;
                self.0.ended.notify_one();
            }
        }
        let _ended = Ended(self);
        pass()
    }
}

/// A report, or why there is none (the text of a 500).
type Snapshot = std::result::Result<Arc<Report>, String>;

/// What makes a cached report still right: the filter and the log's state.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    ops: Vec<String>,
    since: Option<i64>,
    until: Option<i64>,
    file: Option<(u64, u64, u64, i64, i64, i64, i64)>,
}

fn file_state(path: &Path) -> Option<(u64, u64, u64, i64, i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// Binds the listening socket. Nothing is answered until [`Server::run`].
pub fn bind(opts: Options) -> Result<Server> {
    let default_since = match opts.default_since {
        Some(s) => {
            let d = crate::units::parse_duration(&s).map_err(Error::Validation)?;
            Some((s, d))
        }
        None => None,
    };
    if opts.refresh > MAX_REFRESH {
        return Err(Error::Validation(format!(
            "refresh every {} s: at most {MAX_REFRESH} (one day)",
            opts.refresh
        )));
    }
    let listener = TcpListener::bind(opts.listen).map_err(|e| {
        let msg = format!("cannot listen on {}: {}", opts.listen, e);
        match e.kind() {
            std::io::ErrorKind::AddrInUse => Error::Conflict(msg),
            std::io::ErrorKind::PermissionDenied => Error::Permission(msg),
            _ => Error::General(msg),
        }
    })?;
    let addr = listener.local_addr().map_err(|e| {
        Error::General(format!(
            "cannot read the listening address: {}",
            crate::error::os_reason(&e)
        ))
    })?;
    Ok(Server {
        listener,
        addr,
        state: Arc::new(State {
            log: opts.log,
            cfg: opts.cfg,
            refresh: opts.refresh,
            default_since,
            cache: Mutex::new(Vec::new()),
            cache_bytes: CACHE_BYTES,
            passes: Passes::default(),
        }),
    })
}

impl Server {
    /// The address actually bound (the port chosen for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests until accepting fails for good (not for a lack
    /// of descriptors, which is waited out); returns that failure.
    pub fn run(self) -> Result<()> {
        let state = self.state;
        let e = http::serve(
            &self.listener,
            Arc::new(move |rq: &Request| state.answer(rq)),
        );
        Err(Error::General(format!(
            "cannot accept connections on {}: {}",
            self.addr,
            crate::error::os_reason(&e)
        )))
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Page,
    Json,
    Prometheus,
}

/// The query of a request, validated.
#[derive(Debug, Default, PartialEq)]
struct Query {
    since: Option<(String, Duration)>,
    /// An absolute range, epoch seconds (the page's zoom).
    from: Option<i64>,
    to: Option<i64>,
    ops: Vec<String>,
}

impl State {
    fn answer(&self, rq: &Request) -> Reply {
        let asked = rq.header("access-control-request-headers");
        self.route(&rq.method, &rq.target, asked)
    }

    /// The answer to `METHOD target`; never panics, whatever the input.
    /// The data paths answer CORS: every answer, errors included, carries
    /// `Access-Control-Allow-Origin: *`, and `OPTIONS` (a preflight, with
    /// `asked` its `Access-Control-Request-Headers`) is 204.
    fn route(&self, method: &str, target: &str, asked: Option<&str>) -> Reply {
        let target = origin_form(target);
        let target = target.as_ref();
        let mut r = self.route_inner(method, target, asked);
        if r.status != 404 && is_data_path(target) {
            r.headers.push(("Access-Control-Allow-Origin", "*".into()));
            r.headers.push((
                "Access-Control-Expose-Headers",
                "X-Ffkit-Malformed-Rows".into(),
            ));
        }
        r
    }

    fn route_inner(&self, method: &str, target: &str, asked: Option<&str>) -> Reply {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, q),
            None => (target, ""),
        };
        if !path.starts_with('/') {
            return Reply::text(400, format!("bad request target '{target}'"));
        }
        let view = match path {
            "/" | "/index.html" => View::Page,
            "/api/performance/metrics" => View::Json,
            "/metrics" => View::Prometheus,
            // A browser pointed at /metrics asks for it: nothing, not a 404
            // on its console.
            "/favicon.ico" if method == "GET" || method == "HEAD" => {
                let mut r = Reply::text(204, "");
                r.body.clear();
                return r;
            }
            _ => return Reply::text(404, format!("not found: {path} (try {PATHS})")),
        };
        let cors = view != View::Page;
        if cors && method == "OPTIONS" {
            return preflight(asked);
        }
        if method != "GET" && method != "HEAD" {
            let allow = if cors {
                "GET, HEAD, OPTIONS"
            } else {
                "GET, HEAD"
            };
            let mut r = Reply::text(405, format!("method {method} not allowed: use {allow}"));
            r.headers.push(("Allow", allow.into()));
            return r;
        }
        let mut q = match parse_query(query) {
            Ok(q) => q,
            Err(msg) => return Reply::text(400, msg),
        };
        if q.since.is_none() && q.from.is_none() && q.to.is_none() {
            q.since.clone_from(&self.default_since);
        }
        let since = match (&q.since, q.from) {
            (Some((_, d)), _) => Some(self.cfg.now() - d.as_secs() as i64),
            (None, from) => from,
        };
        // The pass and the rendering are the work whose memory grows with
        // the log's operation names: at most MAX_PASSES requests do it at
        // once, the others wait their turn.
        self.passes.run(|| self.answer_with_report(view, &q, since))
    }

    fn answer_with_report(&self, view: View, q: &Query, since: Option<i64>) -> Reply {
        let report = match self.report(q.ops.clone(), since, q.to) {
            Ok(r) => r,
            Err(msg) => return Reply::text(500, msg),
        };
        let (content_type, body) = match view {
            View::Json => ("application/json", ApiJson.render(&report)),
            View::Prometheus => (
                "text/plain; version=0.0.4; charset=utf-8",
                Prometheus.render(&report),
            ),
            View::Page => (
                "text/html; charset=utf-8",
                Html {
                    source: self.log.display().to_string(),
                    generated: self.cfg.now(),
                    filters: describe(q),
                    refresh: Some(self.refresh),
                    query: PageQuery {
                        since: q.since.as_ref().map(|(s, _)| s.clone()),
                        from: q.from,
                        to: q.to,
                        ops: q.ops.clone(),
                    },
                }
                .render(&report),
            ),
        };
        let mut r = Reply {
            status: 200,
            content_type,
            body: body.into_bytes(),
            headers: Vec::new(),
        };
        if view == View::Page {
            r.headers.push(("Content-Security-Policy", CSP.into()));
        }
        if report.malformed > 0 {
            r.headers
                .push(("X-Ffkit-Malformed-Rows", report.malformed.to_string()));
        }
        r
    }

    /// The report for a filter: cached while the log is unchanged; one pass
    /// at a time per key, the others wait for it.
    fn report(&self, ops: Vec<String>, since: Option<i64>, until: Option<i64>) -> Snapshot {
        let key = Key {
            ops,
            since,
            until,
            file: file_state(&self.log),
        };
        let cell = {
            let mut cache = match self.cache.lock() {
                Ok(c) => c,
                // A worker that panicked mid-update left nothing half-done
                // that matters: the list only holds finished or pending cells.
                Err(p) => p.into_inner(),
            };
            match cache.iter().find(|(k, _)| *k == key) {
                Some((_, c)) => c.clone(),
                None => {
                    if cache.len() >= CACHE_ENTRIES {
                        cache.remove(0);
                    }
                    let c = Arc::new(OnceLock::new());
                    cache.push((key.clone(), c.clone()));
                    c
                }
            }
        };
        let mut made = false;
        let snap = cell
            .get_or_init(|| {
                made = true;
                aggregate::aggregate_with_series(
                    &self.log,
                    Filter {
                        ops: key.ops.clone(),
                        since: key.since,
                        until: key.until,
                    },
                )
                .map(|mut r| {
                    // Kept for later requests: only the series the page draws.
                    r.keep_series_of_busiest(crate::metrics::export::html::MAX_CHARTED_OPS);
                    Arc::new(r)
                })
                .map_err(|e| e.to_string())
            })
            .clone();
        if snap.is_err() {
            // Do not keep a failure: the next request tries again.
            if let Ok(mut cache) = self.cache.lock() {
                cache.retain(|(k, c)| !(k == &key && Arc::ptr_eq(c, &cell)));
            }
        } else if made {
            self.trim_cache(&cell);
        }
        snap
    }

    /// Drops the oldest kept reports until those made hold at most
    /// `cache_bytes` together; `newest` (the one just made) always stays.
    fn trim_cache(&self, newest: &Arc<OnceLock<Snapshot>>) {
        let size = |c: &OnceLock<Snapshot>| match c.get() {
            Some(Ok(r)) => r.approx_bytes(),
            _ => 0,
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total: usize = cache.iter().map(|(_, c)| size(c)).sum();
        let mut i = 0;
        while total > self.cache_bytes && i < cache.len() {
            let bytes = size(&cache[i].1);
            if bytes == 0 || Arc::ptr_eq(&cache[i].1, newest) {
                i += 1;
            } else {
                total -= bytes;
                cache.remove(i);
            }
        }
    }
}

/// The path and query of a request target in the absolute form
/// (`http://host:port/metrics?since=1h`, what a client sends to a proxy),
/// which a server must accept (RFC 9112, 3.2.2): before, it was 400. Any
/// other target is returned as it is.
fn origin_form(target: &str) -> std::borrow::Cow<'_, str> {
    let scheme = target.split_once("://").map(|(s, _)| s);
    let rest = match scheme {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
            &target[s.len() + 3..]
        }
        _ => return target.into(),
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].into(),
        Some(i) => format!("/{}", &rest[i..]).into(),
        None => "/".into(),
    }
}

/// Whether a target is one of the data paths, which answer CORS.
fn is_data_path(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    matches!(path, "/api/performance/metrics" | "/metrics")
}

/// The answer to a CORS preflight: any origin may GET, with the headers it
/// asked for when they are a list of header names (anything else is left
/// out, and the browser refuses the request it meant to send).
fn preflight(asked: Option<&str>) -> Reply {
    let mut r = Reply::text(204, "");
    r.body.clear();
    r.headers
        .push(("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS".into()));
    if let Some(list) = asked {
        let names = list.split(',').map(str::trim).filter(|n| !n.is_empty());
        let ok = names.clone().all(|n| {
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        });
        let names: Vec<&str> = names.collect();
        if ok && !names.is_empty() {
            r.headers
                .push(("Access-Control-Allow-Headers", names.join(", ")));
        }
    }
    r.headers.push(("Access-Control-Max-Age", "600".into()));
    r
}

/// The filters as the page's header says them.
fn describe(q: &Query) -> String {
    let mut parts = Vec::new();
    if let Some((s, _)) = &q.since {
        parts.push(format!("since {s}"));
    }
    let utc = |t: i64| {
        jiff::Timestamp::from_second(t).map_or_else(
            |_| t.to_string(),
            |ts| ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
    };
    match (q.from, q.to) {
        (Some(a), Some(b)) => parts.push(format!("from {} to {}", utc(a), utc(b))),
        (Some(a), None) => parts.push(format!("from {}", utc(a))),
        (None, Some(b)) => parts.push(format!("to {}", utc(b))),
        (None, None) => {}
    }
    if !q.ops.is_empty() {
        parts.push(format!("op {}", q.ops.join(", ")));
    }
    parts.join(" · ")
}

fn parse_query(query: &str) -> std::result::Result<Query, String> {
    let mut q = Query::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        match k.as_str() {
            "since" => {
                if q.since.is_some() {
                    return Err("'since' given twice".into());
                }
                let d =
                    crate::units::parse_duration(&v).map_err(|e| format!("bad 'since': {e}"))?;
                q.since = Some((v, d));
            }
            "op" => {
                if v.is_empty() {
                    return Err("empty 'op'".into());
                }
                q.ops.push(v);
            }
            "from" | "to" => {
                let slot = if k == "from" { &mut q.from } else { &mut q.to };
                if slot.is_some() {
                    return Err(format!("'{k}' given twice"));
                }
                let t = v
                    .parse::<i64>()
                    .ok()
                    .filter(|t| (0..=html::MAX_EPOCH).contains(t))
                    .ok_or_else(|| format!("bad '{k}': '{v}' is not an epoch second"))?;
                *slot = Some(t);
            }
            _ => {
                return Err(format!(
                    "unknown query parameter '{k}' (expected since, from, to, op)"
                ));
            }
        }
    }
    if q.since.is_some() && (q.from.is_some() || q.to.is_some()) {
        return Err("'since' and 'from'/'to' exclude each other".into());
    }
    if let (Some(a), Some(b)) = (q.from, q.to)
        && a > b
    {
        return Err("'from' is after 'to'".into());
    }
    Ok(q)
}

/// Percent-decoding of a query component (`+` is a space); invalid escapes
/// and non-UTF-8 results are errors.
fn decode(s: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => return Err(format!("bad percent-encoding in '{s}'")),
                }
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query is not UTF-8: '{s}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(log: &Path) -> State {
        let cfg = Config::from_lookup(|k| (k == "FFKIT_TEST_NOW").then(|| "1000".into())).unwrap();
        State {
            log: log.to_path_buf(),
            cfg,
            refresh: 10,
            default_since: None,
            cache: Mutex::new(Vec::new()),
            cache_bytes: CACHE_BYTES,
            passes: Passes::default(),
        }
    }

    /// A log of `names` operation names, a row each, one second apart.
    fn names_log(path: &Path, names: usize) {
        let rows: String = (0..names)
            .map(|i| format!("{},build-{i},1.5\n", i))
            .collect();
        std::fs::write(path, rows).unwrap();
    }

    #[test]
    fn kept_reports_stay_within_their_byte_budget_and_the_newest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.csv");
        names_log(&log, 2000);
        let mut s = state(&log);
        let one = s.report(Vec::new(), Some(0), None).unwrap().approx_bytes();
        assert!(one > 2000 * 64, "{one} bytes for 2000 names");
        // Room for two reports of the whole log, not three.
        s.cache_bytes = one * 5 / 2;
        for since in 0..8 {
            s.report(Vec::new(), Some(since), None).unwrap();
            let kept = s.cache.lock().unwrap();
            let held: usize = kept
                .iter()
                .map(|(_, c)| c.get().unwrap().as_ref().unwrap().approx_bytes())
                .sum();
            assert!(held <= s.cache_bytes, "{} reports hold {held}", kept.len());
            assert_eq!(
                kept.last().unwrap().0.since,
                Some(since),
                "the newest is kept"
            );
        }
        assert_eq!(s.cache.lock().unwrap().len(), 2);
        // One report over the budget on its own is still kept, alone: the
        // next request for it is answered without a pass.
        s.cache_bytes = one / 2;
        let a = s.report(Vec::new(), Some(100), None).unwrap();
        assert_eq!(s.cache.lock().unwrap().len(), 1);
        let b = s.report(Vec::new(), Some(100), None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn concurrent_requests_for_distinct_reports_make_at_most_two_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.csv");
        names_log(&log, 3000);
        let s = state(&log);
        std::thread::scope(|t| {
            for since in 0..8 {
                let s = &s;
                t.spawn(move || {
                    let target = format!("/metrics?from={since}");
                    assert_eq!(s.route("GET", &target, None).status, 200);
                });
            }
        });
        let most = s.passes.most.load(Ordering::Relaxed);
        assert!((1..=MAX_PASSES).contains(&most), "{most} passes at once");
        assert_eq!(*s.passes.running.lock().unwrap(), 0);
    }

    #[test]
    fn queries() {
        assert_eq!(decode("a%3Ab+c").unwrap(), "a:b c");
        assert!(decode("%zz").is_err() && decode("%4").is_err() && decode("%ff").is_err());
        let q = parse_query("since=1h&op=a&op=b%2Cc").unwrap();
        assert_eq!(q.since.unwrap().1, Duration::from_secs(3600));
        assert_eq!(q.ops, ["a", "b,c"]);
        let q = parse_query("from=100&to=200&op=a").unwrap();
        assert_eq!((q.from, q.to), (Some(100), Some(200)));
        for bad in [
            "since=abc",
            "since=1h&since=2h",
            "op=",
            "x=1",
            "since",
            "from=1&from=2",
            "from=x",
            "to=-5",
            "from=9&to=8",
            "since=1h&from=5",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_query("").unwrap(), Query::default());
    }

    #[test]
    fn routes_and_status_codes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.csv");
        std::fs::write(&log, "990,a,1\n995,b,2\n100,a,50\nbad\n").unwrap();
        let s = state(&log);
        let r = s.route("GET", "/api/performance/metrics?since=20s", None);
        assert_eq!(r.status, 200);
        let body = String::from_utf8(r.body).unwrap();
        assert!(
            body.contains("{\"name\": \"a\", \"count\": 1,") && body.contains("\"b\""),
            "{body}"
        );
        assert!(
            r.headers
                .contains(&("X-Ffkit-Malformed-Rows", "1".to_string()))
                && r.headers
                    .contains(&("Access-Control-Allow-Origin", "*".to_string())),
            "{:?}",
            r.headers
        );
        // The absolute form (through a proxy) is the same request.
        for (abs, path) in [
            (
                "http://127.0.0.1:9464/metrics?since=20s",
                "/metrics?since=20s",
            ),
            (
                "HTTP://localhost/api/performance/metrics",
                "/api/performance/metrics",
            ),
            ("http://h:1?since=20s", "/?since=20s"),
            ("http://h", "/"),
        ] {
            let (a, b) = (s.route("GET", abs, None), s.route("GET", path, None));
            assert_eq!((a.status, a.headers.len()), (200, b.headers.len()), "{abs}");
            if !path.starts_with("/?") && path != "/" {
                assert_eq!(a.body, b.body, "{abs}");
            }
        }
        assert_eq!(s.route("GET", "ftp://h/metrics", None).status, 400);
        assert_eq!(s.route("GET", "http://h/nope", None).status, 404);
        // A preflight: 204, the methods, the headers asked for when they
        // are names; the page answers no CORS.
        let p = s.route("OPTIONS", "/metrics", Some("X-Custom, content-type"));
        assert_eq!(p.status, 204);
        assert!(p.headers.contains(&(
            "Access-Control-Allow-Headers",
            "X-Custom, content-type".to_string()
        )));
        assert!(
            p.headers
                .contains(&("Access-Control-Allow-Origin", "*".to_string()))
        );
        let p = s.route("OPTIONS", "/api/performance/metrics", Some("a b"));
        assert!(
            p.headers
                .iter()
                .all(|h| h.0 != "Access-Control-Allow-Headers")
        );
        let p = s.route("OPTIONS", "/", None);
        assert_eq!(p.status, 405);
        assert!(p.headers.iter().all(|h| !h.0.starts_with("Access-Control")));
        assert_eq!(s.route("GET", "/metrics?op=b", None).status, 200);
        assert_eq!(s.route("HEAD", "/", None).status, 200);
        assert_eq!(s.route("GET", "/nope", None).status, 404);
        assert_eq!(s.route("POST", "/metrics", None).status, 405);
        assert_eq!(s.route("GET", "/?since=soon", None).status, 400);
        assert_eq!(s.route("GET", "*", None).status, 400);
        // Every range preset of the page is a query the server takes, and
        // so is a zoom.
        for p in crate::metrics::export::html::PRESETS {
            // "All" links to `?`.
            let target = if p.is_empty() {
                "/?".to_string()
            } else {
                format!("/?since={p}")
            };
            assert_eq!(s.route("GET", &target, None).status, 200, "{p}");
        }
        let r = s.route("GET", "/?from=990&to=995&op=a", None);
        assert_eq!(r.status, 200);
        let page = String::from_utf8(r.body).unwrap();
        assert!(
            page.contains("1 row ")
                && page.contains("from 1970-01-01 00:16:30 UTC to 1970-01-01 00:16:35 UTC"),
            "{page}"
        );
        assert_eq!(s.route("GET", "/favicon.ico", None).status, 204);
        // The cache follows the log: a new row shows up.
        std::fs::write(&log, "990,a,1\n995,b,2\n996,c,3\n").unwrap();
        let body =
            String::from_utf8(s.route("GET", "/api/performance/metrics", None).body).unwrap();
        assert!(body.contains("\"c\""), "{body}");
    }
}
