//! The HTTP/1.1 wire layer of `perf-metrics serve` (docs/metrics.md,
//! "Slow and stuck clients"): accepting connections, reading request heads,
//! writing answers. What to answer is the caller's business (`serve.rs`).
//!
//! Small on purpose and synchronous: one thread per connection, at most
//! [`MAX_CONNECTIONS`] at a time, each socket with a read and a write
//! timeout. A client that sends half a request, or nothing, is answered 408
//! (or dropped, if it sent nothing) after [`READ_TIMEOUT`]; one that stops
//! reading its answer is dropped after [`WRITE_TIMEOUT`]; neither ever
//! delays another connection, and a full house answers 503 at once instead
//! of queueing. Request heads are capped at [`MAX_HEAD`] bytes (431 beyond).
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
use std::time::Duration;

/// A connection that sends nothing (or half a request) for this long is
/// closed; a keep-alive connection idle this long too.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A client that stops reading its answer is dropped after this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Accepts and serves connections forever; returns only the accept error
/// that cannot be waited out.
pub fn serve(listener: &TcpListener, handler: Arc<Handler>) -> io::Error {
    let live = Arc::new(AtomicUsize::new(0));
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
        if live.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            live.fetch_sub(1, Ordering::AcqRel);
            let mut s = stream;
            let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
            let busy = Response::text(503, "too many connections; try again");
            let _ = write_response(&mut s, &busy, false, false);
            continue;
        }
        let slot = Slot(live.clone());
        let handler = handler.clone();
        // A thread that cannot start drops the closure, the slot and the
        // stream: the client sees its connection closed.
        let _ = std::thread::Builder::new()
            .name("ffkit-serve".into())
            .spawn(move || {
                let _slot = slot;
                connection(stream, &*handler);
            });
    }
}

/// Serves the requests of one connection until it closes, times out, or a
/// request cannot be followed by another.
fn connection(mut s: TcpStream, handler: &Handler) {
    if s.set_read_timeout(Some(READ_TIMEOUT)).is_err()
        || s.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head = match read_head(&mut s, &mut buf) {
            Ok(Some(h)) => h,
            // Closed or idle before a request began: nothing to say.
            Ok(None) | Err(HeadError::Io) => return,
            Err(HeadError::Timeout) => {
                return close_with(s, &Response::text(408, "request not complete in time"));
            }
            Err(HeadError::TooLarge) => {
                return close_with(s, &Response::text(431, "request head too large"));
            }
        };
        let (req, has_body) = match parse_head(&head) {
            Ok(r) => r,
            Err((status, msg)) => return close_with(s, &Response::text(status, msg)),
        };
        let resp = handler(&req);
        // The body of a request is never read, so after one the next
        // request's start is unknown: close.
        let keep = req.keep_alive && !has_body;
        if write_response(&mut s, &resp, req.method == "HEAD", keep).is_err() || !keep {
            return;
        }
    }
}

/// Answers an error and closes gracefully: stop sending, then read (and
/// drop) what the client still sends, for at most a second and 1 MiB, so
/// the kernel does not reset the connection over unread bytes before the
/// client has read the answer.
fn close_with(mut s: TcpStream, r: &Response) {
    if write_response(&mut s, r, false, false).is_err() {
        return;
    }
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    while total < 1 << 20 {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client stopped mid-request.
    Timeout,
    TooLarge,
    /// Closed mid-request, or a socket error.
    Io,
}

/// Reads up to the blank line ending a request head. `buf` keeps bytes read
/// past it (a pipelined next request). `Ok(None)`: the connection closed or
/// stayed idle before a request began.
fn read_head(s: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, HeadError> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((end, sep)) = head_end(buf) {
            let head = buf[..end].to_vec();
            buf.drain(..end + sep);
            return Ok(Some(head));
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
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

/// Where the head ends: the offset of the blank line and its length
/// (`\r\n\r\n`, or `\n\n` from a lenient client).
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a request head; the error is the status and text to answer.
/// Returns the request and whether it announced a body.
fn parse_head(head: &[u8]) -> Result<(Request, bool), (u16, String)> {
    let bad = |m: &str| (400, m.to_string());
    let text = std::str::from_utf8(head).map_err(|_| bad("request head is not UTF-8"))?;
    // Leading blank lines before a request line are allowed (RFC 9112 2.2).
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let line = lines.next().ok_or_else(|| bad("empty request"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad("malformed request line"));
    };
    if !is_token(method) {
        return Err(bad("malformed method"));
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("malformed request target"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => {
            return Err((505, format!("{v} is not supported: use HTTP/1.1")));
        }
        _ => return Err(bad("malformed HTTP version")),
    };
    let (mut close, mut keep, mut has_body) = (false, false, false);
    for l in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = l.split_once(':') else {
            return Err(bad("malformed header line"));
        };
        if !is_token(name) {
            return Err(bad("malformed header name"));
        }
        let value = value.trim().to_ascii_lowercase();
        match name.to_ascii_lowercase().as_str() {
            "connection" => {
                for t in value.split(',').map(str::trim) {
                    close |= t == "close";
                    keep |= t == "keep-alive";
                }
            }
            "content-length" => match value.parse::<u64>() {
                Ok(n) => has_body |= n > 0,
                Err(_) => return Err(bad("malformed Content-Length")),
            },
            "transfer-encoding" => has_body = true,
            _ => {}
        }
    }
    let keep_alive = !close && (!http10 || keep);
    Ok((
        Request {
            method: method.to_string(),
            target: target.to_string(),
            keep_alive,
        },
        has_body,
    ))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
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

/// Writes one answer (without the body for HEAD) in one write.
fn write_response(
    s: &mut impl Write,
    r: &Response,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nDate: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len(),
        jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S GMT")
    );
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
    if !head_only {
        bytes.extend_from_slice(&r.body);
    }
    s.write_all(&bytes)?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let (r, body) = parse_head(b"GET /x?a=1 HTTP/1.1\r\nHost: h\r\n").unwrap();
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.keep_alive, body),
            ("GET", "/x?a=1", true, false)
        );
        let (r, _) = parse_head(b"GET / HTTP/1.0").unwrap();
        assert!(!r.keep_alive);
        let (r, _) = parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").unwrap();
        assert!(r.keep_alive);
        let (r, _) = parse_head(b"GET / HTTP/1.1\r\nConnection: close").unwrap();
        assert!(!r.keep_alive);
        assert!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: 3")
                .unwrap()
                .1
        );
        assert!(
            parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked")
                .unwrap()
                .1
        );
        assert!(parse_head(b"\r\nGET / HTTP/1.1").is_ok());
        for bad in [
            &b"hello there"[..],
            b"GET /",
            b"GET  / HTTP/1.1",
            b"GET / HTTP/1.1 x",
            b"G(T / HTTP/1.1",
            b"GET /\x01 HTTP/1.1",
            b"GET / FTP/1.0",
            b"GET / HTTP/1.1\r\nno colon",
            b"GET / HTTP/1.1\r\nBad Name: x",
            b"GET / HTTP/1.1\r\nContent-Length: -1",
            b"GET / HTTP/1.1\xff",
        ] {
            assert_eq!(
                parse_head(bad).unwrap_err().0,
                400,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_head(b"GET / HTTP/2.0").unwrap_err().0, 505);
    }

    #[test]
    fn reading_heads_keeps_pipelined_bytes_and_caps_the_size() {
        let mut buf = Vec::new();
        let mut src: &[u8] = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\n\nGET /c";
        assert_eq!(
            read_head(&mut src, &mut buf).unwrap().unwrap(),
            b"GET /a HTTP/1.1"
        );
        assert_eq!(
            read_head(&mut src, &mut buf).unwrap().unwrap(),
            b"GET /b HTTP/1.1"
        );
        // Closed mid-request.
        assert_eq!(read_head(&mut src, &mut buf), Err(HeadError::Io));
        let mut empty: &[u8] = b"";
        assert_eq!(read_head(&mut empty, &mut Vec::new()), Ok(None));
        let huge = vec![b'a'; MAX_HEAD + 10_000];
        assert_eq!(
            read_head(&mut &huge[..], &mut Vec::new()),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn answers_have_their_length_and_head_has_no_body() {
        let r = Response::text(404, "nope");
        let mut out = Vec::new();
        write_response(&mut out, &r, false, true).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(
            s.contains("Content-Length: 5\r\n") && s.ends_with("\r\n\r\nnope\n"),
            "{s}"
        );
        assert!(s.contains("Connection: keep-alive"));
        let mut out = Vec::new();
        write_response(&mut out, &r, true, false).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("Connection: close\r\n\r\n") && s.contains("Content-Length: 5"));
    }
}
