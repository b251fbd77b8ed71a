//! The HTTP/1.1 wire layer of `perf-metrics serve` (docs/metrics.md,
//! "Slow and stuck clients"): accepting connections, reading request heads,
//! writing answers. What to answer is the caller's business (`serve.rs`).
//!
//! Small on purpose and synchronous: one thread per connection, at most
//! [`MAX_CONNECTIONS`] at a time, each socket with a read and a write
//! timeout. A client that sends half a request, or nothing, is answered 408
//! (or dropped, if it sent nothing) [`READ_TIMEOUT`] after the head began,
//! however it trickles its bytes (one deadline per head); one that stops
//! reading its answer, or reads it a trickle at a time, is dropped when the
//! answer's send deadline passes ([`WRITE_TIMEOUT`] plus a second per
//! [`MIN_SEND_RATE`] bytes: one deadline per answer, not per write); the
//! bytes a client sends after an error answer are drained for at most
//! [`DRAIN_TIMEOUT`] in all; none of them ever delays another connection or
//! holds its slot for long. A full house makes room by closing the
//! connection that has waited longest for its next request ([`Waiting`]),
//! and answers 503 at once, instead of queueing, only when every
//! connection is busy with a request. Request heads are capped at [`MAX_HEAD`] bytes (431 beyond)
//! and parsed with httparse as they arrive, so bytes that cannot start an
//! HTTP request (a TLS ClientHello) are answered 400 at once.
//! Bodies are never read: every path is GET or HEAD, so a request that
//! announces a body is answered and its connection closed.
//!
//! (An earlier version used `tiny_http`: its thread pool can park a new
//! connection's task behind connections that never finish, so a few stuck
//! clients starved everyone else — the test
//! `serve_is_not_blocked_by_half_sent_or_silent_clients` caught it — and
//! it has no read timeouts or head limit.)

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A connection that sends nothing (or half a request) for this long is
/// closed; a keep-alive connection idle this long too.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A client that stops reading its answer is dropped after this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes per second an answer is given on top of [`WRITE_TIMEOUT`]: an
/// answer of N bytes must be taken within WRITE_TIMEOUT + N / this. Without
/// it a client reading a kilobyte a second (a small receive window, one
/// read every few seconds) kept its connection, and with 128 of them
/// everyone else got 503 for hours.
pub const MIN_SEND_RATE: u64 = 64 * 1024;

/// How long, in all, the bytes a client sends after an error answer are
/// read and dropped before the connection is closed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections served at once; beyond, new ones get a 503.
pub const MAX_CONNECTIONS: usize = 128;

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// One request, as far as this server cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (`/path?query`).
    pub target: String,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// The header fields: names in lower case, values trimmed (bytes that
    /// are not UTF-8 replaced).
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of the first field named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One answer.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Headers besides Content-Type, Content-Length, Cache-Control,
    /// X-Content-Type-Options, Date and Connection, which every answer has.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A plain-text answer (a newline is added).
    pub fn text(status: u16, msg: impl Into<String>) -> Response {
        let mut body = msg.into();
        body.push('\n');
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into_bytes(),
            headers: Vec::new(),
        }
    }
}

/// What answers a request.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// Decrements the live-connection count when a connection ends (or its
/// thread could not start).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections waiting for a request (their next on a keep-alive
/// connection, or their first), oldest first, each with a handle to close
/// it. Without it, 128 keep-alive clients sending one small request every
/// few seconds held every slot for good, and everyone else got 503: a full
/// house now closes the one that has waited longest (HTTP/1.1 lets a
/// server close an idle keep-alive connection; clients reconnect) and
/// serves the newcomer in its place.
#[derive(Default)]
struct Waiting {
    next: std::sync::atomic::AtomicU64,
    list: std::sync::Mutex<std::collections::VecDeque<(u64, TcpStream)>>,
}

impl Waiting {
    fn list(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, TcpStream)>> {
        // A panic elsewhere cannot leave the list half-changed.
        self.list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes `s` as waiting; `None` if it cannot be (no descriptor left for
    /// its handle): it is then never closed for a newcomer.
    fn add(&self, s: &TcpStream) -> Option<u64> {
        let handle = s.try_clone().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.list().push_back((id, handle));
        Some(id)
    }

    fn remove(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.list().retain(|(i, _)| *i != id);
        }
    }

    /// Closes the connection that has waited longest: its read ends at
    /// once and its thread gives its slot back. `false` if none waits.
    fn close_oldest(&self) -> bool {
        let oldest = self.list().pop_front();
        match oldest {
            Some((_, s)) => {
                let _ = s.shutdown(Shutdown::Both);
                true
            }
            None => false,
        }
    }
}

/// Accepts and serves connections forever; returns only the accept error
/// that cannot be waited out.
pub fn serve(listener: &TcpListener, handler: Arc<Handler>) -> io::Error {
    let live = Arc::new(AtomicUsize::new(0));
    let waiting = Arc::new(Waiting::default());
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => match e.raw_os_error() {
                // Out of descriptors or memory: wait for connections to end.
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                // The peer gave up before we accepted; a signal.
                Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => continue,
                _ => return e,
            },
        };
        // Room is made by closing a waiting connection; the count drops
        // back when its thread has ended, a moment later.
        if live.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS && !waiting.close_oldest() {
            live.fetch_sub(1, Ordering::AcqRel);
            let busy = Response::text(503, "too many connections; try again");
            let bytes = answer_bytes(&busy, false, false);
            let _ = send_within(&stream, &bytes, Instant::now() + Duration::from_secs(1));
            continue;
        }
        let slot = Slot(live.clone());
        let handler = handler.clone();
        let waiting = waiting.clone();
        // A thread that cannot start drops the closure, the slot and the
        // stream: the client sees its connection closed.
        let _ = std::thread::Builder::new()
            .name("ffkit-serve".into())
            .spawn(move || {
                let _slot = slot;
                connection(stream, &*handler, &waiting);
            });
    }
}

/// Serves the requests of one connection until it closes, times out, or a
/// request cannot be followed by another.
fn connection(s: TcpStream, handler: &Handler, waiting: &Waiting) {
    if s.set_read_timeout(Some(READ_TIMEOUT)).is_err()
        || s.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    loop {
        // One deadline for the whole head, not one per read: a client that
        // trickles a header line every few seconds is still cut off.
        let mut within = Deadline {
            s: &s,
            until: Instant::now() + READ_TIMEOUT,
        };
        // Waiting for a request, unless pipelined bytes are already here.
        let id = if buf.is_empty() {
            waiting.add(&s)
        } else {
            None
        };
        let head = read_head(&mut within, &mut buf);
        waiting.remove(id);
        let (req, has_body) = match head {
            Ok(Some(h)) => h,
            // Closed or idle before a request began: nothing to say.
            Ok(None) | Err(HeadError::Io) => return,
            Err(HeadError::Timeout) => {
                return close_with(s, &Response::text(408, "request not complete in time"));
            }
            Err(HeadError::TooLarge) => {
                return close_with(s, &Response::text(431, "request head too large"));
            }
            Err(HeadError::Bad(status, msg)) => {
                return close_with(s, &Response::text(status, msg));
            }
        };
        let resp = handler(&req);
        // The body of a request is never read, so after one the next
        // request's start is unknown: close.
        let keep = req.keep_alive && !has_body;
        // The head, then the body where it is: a copy of the body after
        // the head doubled what a big answer held (a /metrics of 378,000
        // operation names is 170 MB) for as long as its client read it.
        let head = answer_bytes(&resp, true, keep);
        let body: &[u8] = if req.method == "HEAD" || resp.status == 204 {
            &[]
        } else {
            &resp.body
        };
        let until = send_deadline(head.len() + body.len());
        if send_within(&s, &head, until)
            .and_then(|()| send_within(&s, body, until))
            .is_err()
            || !keep
        {
            return;
        }
    }
}

/// Reads from the stream until one instant: each read waits at most what
/// is left (then a `TimedOut` error, as a socket read timeout gives).
struct Deadline<'a> {
    s: &'a TcpStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.s.set_read_timeout(Some(left))?;
        (&mut &*self.s).read(buf)
    }
}

/// Answers an error and closes gracefully: stop sending, then read (and
/// drop) what the client still sends, for at most a second and 1 MiB, so
/// the kernel does not reset the connection over unread bytes before the
/// client has read the answer.
fn close_with(s: TcpStream, r: &Response) {
    let bytes = answer_bytes(r, false, false);
    if send_within(&s, &bytes, send_deadline(bytes.len())).is_err() {
        return;
    }
    let _ = s.shutdown(Shutdown::Write);
    // One deadline for the whole drain, not a timeout per read: a client
    // that trickled a byte every half second kept the connection (and its
    // slot) for up to 1 MiB of them, days.
    let mut within = Deadline {
        s: &s,
        until: Instant::now() + DRAIN_TIMEOUT,
    };
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    while total < 1 << 20 {
        match within.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

/// When an answer of `len` bytes must have been taken by the client.
fn send_deadline(len: usize) -> Instant {
    let extra = Duration::from_secs_f64(len as f64 / MIN_SEND_RATE as f64);
    Instant::now() + WRITE_TIMEOUT + extra
}

/// Sends `bytes` by `until`, however the client paces its reads: each write
/// waits at most what is left (a socket write timeout alone restarts with
/// every write that makes progress, so a trickling reader never hit it).
fn send_within(s: &TcpStream, bytes: &[u8], until: Instant) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_write_timeout(Some(left))?;
        match (&mut &*s).write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client stopped mid-request.
    Timeout,
    /// The head passed [`MAX_HEAD`] bytes, or [`MAX_HEADERS`] fields.
    TooLarge,
    /// Closed mid-request, or a socket error.
    Io,
    /// Not a request this server takes: the status and text to answer.
    Bad(u16, String),
}

/// Header fields a head may have (beyond: 431).
pub const MAX_HEADERS: usize = 128;

/// Reads one request head. `buf` keeps bytes read past it (a pipelined
/// next request). `Ok(None)`: the connection closed or stayed idle before
/// a request began.
///
/// The bytes are parsed after every read, so a first line that cannot be
/// HTTP (a TLS ClientHello: a non-token byte where the method is) is
/// answered 400 as soon as it arrives, not after the read timeout. The
/// head, its ending blank line included, may be [`MAX_HEAD`] bytes long.
fn read_head(s: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<(Request, bool)>, HeadError> {
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some((_, _, len))) if len > MAX_HEAD => return Err(HeadError::TooLarge),
                Ok(Some((req, body, len))) => {
                    buf.drain(..len);
                    return Ok(Some((req, body)));
                }
                Ok(None) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        match s.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err(HeadError::Io),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return if buf.iter().all(|b| b.is_ascii_whitespace()) {
                    Ok(None)
                } else {
                    Err(HeadError::Timeout)
                };
            }
            Err(_) => return Err(HeadError::Io),
        }
    }
}

/// Parses the bytes of a request head so far (httparse): `Ok(None)` while
/// they may still become one, else the request, whether it announced a
/// body, and the head's length with its ending blank line. Lines may end
/// in `\r\n` or `\n`; blank lines before the request line are skipped
/// (RFC 9112 2.2).
fn parse_head(bytes: &[u8]) -> Result<Option<(Request, bool, usize)>, HeadError> {
    let bad = |m: &str| HeadError::Bad(400, m.to_string());
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut rq = httparse::Request::new(&mut fields);
    let len = match rq.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => {
            // `GET / HTTP/2.0`: HTTP, but not a version served here.
            let line = bytes
                .split(|&b| b == b'\n')
                .find(|l| !l.trim_ascii().is_empty());
            let v = line.and_then(|l| l.rsplit(|&b| b == b' ').next());
            return Err(match v.map(|v| String::from_utf8_lossy(v.trim_ascii())) {
                Some(v) if v.starts_with("HTTP/") && line.is_some_and(|l| l.len() > v.len()) => {
                    HeadError::Bad(505, format!("{v} is not supported: use HTTP/1.1"))
                }
                _ => bad("malformed HTTP version"),
            });
        }
        Err(httparse::Error::Token) => return Err(bad("malformed request line")),
        Err(httparse::Error::HeaderName) => return Err(bad("malformed header name")),
        Err(httparse::Error::HeaderValue) => return Err(bad("malformed header value")),
        Err(_) => return Err(bad("malformed request head")),
    };
    let (Some(method), Some(target), Some(minor)) = (rq.method, rq.path, rq.version) else {
        return Err(bad("malformed request line"));
    };
    // httparse lets bytes above 0x7f through; a target is ASCII (RFC 3986).
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("malformed request target"));
    }
    let http10 = minor == 0;
    let (mut close, mut keep, mut has_body) = (false, false, false);
    let mut headers = Vec::with_capacity(rq.headers.len());
    for h in rq.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        match name.as_str() {
            "connection" => {
                for t in value.split(',').map(str::trim) {
                    close |= t.eq_ignore_ascii_case("close");
                    keep |= t.eq_ignore_ascii_case("keep-alive");
                }
            }
            "content-length" => match value.parse::<u64>() {
                Ok(n) => has_body |= n > 0,
                Err(_) => return Err(bad("malformed Content-Length")),
            },
            "transfer-encoding" => has_body = true,
            _ => {}
        }
        headers.push((name, value));
    }
    let keep_alive = !close && (!http10 || keep);
    Ok(Some((
        Request {
            method: method.to_string(),
            target: target.to_string(),
            keep_alive,
            headers,
        },
        has_body,
        len,
    )))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// One answer's bytes (without the body for HEAD), to be sent in one write.
fn answer_bytes(r: &Response, head_only: bool, keep_alive: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    // A 204 has neither (RFC 9110 8.6, 15.3.5).
    if r.status != 204 {
        out.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            r.content_type,
            r.body.len()
        ));
    }
    out.push_str(&format!(
        "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nDate: {}\r\n",
        jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S GMT")
    ));
    for (k, v) in &r.headers {
        // Values are ours, but never let one end the head early.
        if !v.contains(['\r', '\n']) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut bytes = out.into_bytes();
    if !head_only && r.status != 204 {
        bytes.extend_from_slice(&r.body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete head, parsed.
    fn head(b: &[u8]) -> (Request, bool) {
        let (r, body, len) = parse_head(b).unwrap().unwrap();
        assert_eq!(len, b.len());
        (r, body)
    }

    fn status(b: &[u8]) -> u16 {
        match parse_head(b) {
            Err(HeadError::Bad(s, _)) => s,
            Err(HeadError::TooLarge) => 431,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn heads() {
        let (r, body) = head(b"GET /x?a=1 HTTP/1.1\r\nHost: h\r\nOrigin: http://o\r\n\r\n");
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.keep_alive, body),
            ("GET", "/x?a=1", true, false)
        );
        assert_eq!(r.header("origin"), Some("http://o"));
        let (r, _) = head(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive);
        let (r, _) = head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
        assert!(head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").1);
        assert!(head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").1);
        head(b"\r\nGET / HTTP/1.1\r\n\r\n");
        head(b"GET / HTTP/1.1\nHost: h\n\n");
        for bad in [
            &b"hello there\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET / FTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\xff\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
        // Too many fields is a head too large.
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(status(many.as_bytes()), 431);
    }

    #[test]
    fn a_first_line_that_cannot_be_http_is_refused_before_its_end() {
        // Partial heads that may still become requests wait for more.
        for partial in [&b"G"[..], b"GET", b"GET /x", b"GET /x HTTP/1.", b"\r\nGE"] {
            assert!(matches!(parse_head(partial), Ok(None)), "{partial:?}");
        }
        // (`SSH-2.0-OpenSSH_9.6` could still be a method: it waits.)
        assert!(matches!(parse_head(b"SSH-2.0-OpenSSH_9.6"), Ok(None)));
        // A TLS ClientHello's first bytes, binary: 400 at once.
        for junk in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"\x00\x00",
            b"GET /x\x01",
        ] {
            assert_eq!(status(junk), 400, "{junk:?}");
        }
    }

    /// A reader that hands out its bytes, then fails as a read timeout
    /// does: what a client that stops sending looks like.
    struct Stalls<'a>(&'a [u8]);

    impl Read for Stalls<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = out.len().min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn reading_heads_keeps_pipelined_bytes_and_caps_the_size_at_max_head() {
        let mut buf = Vec::new();
        let mut src: &[u8] = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\n\nGET /c";
        assert_eq!(
            read_head(&mut src, &mut buf).unwrap().unwrap().0.target,
            "/a"
        );
        assert_eq!(
            read_head(&mut src, &mut buf).unwrap().unwrap().0.target,
            "/b"
        );
        // Closed mid-request.
        assert_eq!(read_head(&mut src, &mut buf), Err(HeadError::Io));
        let mut empty: &[u8] = b"";
        assert_eq!(read_head(&mut empty, &mut Vec::new()), Ok(None));
        // A head of exactly MAX_HEAD bytes (its blank line included) is
        // read; one byte more is 431, whatever follows it.
        let sized = |n: usize| {
            let pre = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
            let mut h = pre.clone();
            h.resize(n - 4, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            assert_eq!(h.len(), n);
            h
        };
        let ok = sized(MAX_HEAD);
        let (r, _) = read_head(&mut &ok[..], &mut Vec::new()).unwrap().unwrap();
        assert_eq!(r.header("x-pad").map(str::len), Some(MAX_HEAD - 4 - 23));
        let mut over = sized(MAX_HEAD + 1);
        over.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            read_head(&mut &over[..], &mut Vec::new()),
            Err(HeadError::TooLarge)
        );
        // Without an end in sight, too.
        let huge = vec![b'a'; MAX_HEAD + 10_000];
        assert_eq!(
            read_head(&mut &huge[..], &mut Vec::new()),
            Err(HeadError::TooLarge)
        );
        // A half-sent head that stalls is a timeout; a junk one is not
        // waited for.
        let mut half = Stalls(b"GET / HTTP/1.1\r\nHost");
        assert_eq!(
            read_head(&mut half, &mut Vec::new()),
            Err(HeadError::Timeout)
        );
        let mut hello = Stalls(b"\x16\x03\x01\x00\xa5\x01");
        assert!(matches!(
            read_head(&mut hello, &mut Vec::new()),
            Err(HeadError::Bad(400, _))
        ));
    }

    #[test]
    fn answers_have_their_length_and_head_has_no_body() {
        let r = Response::text(404, "nope");
        let out = answer_bytes(&r, false, true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(
            s.contains("Content-Length: 5\r\n") && s.ends_with("\r\n\r\nnope\n"),
            "{s}"
        );
        assert!(s.contains("Connection: keep-alive"));
        let out = answer_bytes(&r, true, false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("Connection: close\r\n\r\n") && s.contains("Content-Length: 5"));
    }

    #[test]
    fn a_reader_that_trickles_is_cut_off_at_the_send_deadline() {
        // A client that keeps reading a little at a time makes every write
        // progress, so a per-write timeout never fires; the deadline does.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while !done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(20));
                    if (&c).read(&mut buf).unwrap_or(0) == 0 {
                        break;
                    }
                }
            })
        };
        // Far more than loopback's socket buffers hold.
        let big = vec![b'x'; 64 << 20];
        let started = Instant::now();
        let e = send_within(&s, &big, started + Duration::from_millis(300)).unwrap_err();
        let took = started.elapsed();
        done.store(true, Ordering::Release);
        drop(s);
        reader.join().unwrap();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{e:?}"
        );
        // Generous for a loaded machine; without the deadline it ran on for
        // as long as the reader kept reading (minutes).
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
