//! `perf-metrics serve`, `report --html` and `--prometheus --textfile`:
//! a real server on a free loopback port (port 0, the bound address read
//! from its stderr line), spoken to over raw TCP; the page loaded in
//! headless chromium; the files checked on disk.
//!
//! The oracle for every HTTP answer is the CLI itself: the body of
//! `/api/performance/metrics` must hold the numbers of `perf-metrics --json`
//! with the same filters, in the seed's shape (an `operations` array), and
//! `/metrics` must equal `--prometheus` byte for byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use std::{fs, thread};

use crate::util::*;

/// The fixed "now" of every server and CLI call here.
const NOW: i64 = 1_700_010_000;

/// A log of `ops` operations, rows spread over the 10,000 s before NOW,
/// with a malformed row and a comment.
fn write_log(path: &Path, ops: usize, rows: usize) {
    let mut s = String::from("# timestamp,operation,duration_ms\n");
    for i in 0..rows {
        let op = i % ops;
        let ts = NOW - 10_000 + (i as i64 * 10_000 / rows as i64);
        let ms = (op + 1) as f64 * 0.05 * (1.0 + (i % 37) as f64 / 10.0);
        s.push_str(&format!("{ts},op_{op},{ms:.3}\n"));
    }
    s.push_str("garbage line\n");
    fs::write(path, s).unwrap();
}

/// `ffkit perf-metrics …` against the log, at NOW.
fn pm(w: &World, log: &Path) -> Command {
    let mut c = w.cmd("perf-metrics");
    c.env("CACHE_PERF_METRICS", log)
        .env("FFKIT_TEST_NOW", NOW.to_string());
    c
}

/// A running `perf-metrics serve`, killed (it is our child) on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(w: &World, log: &Path, extra: &[&str]) -> Server {
        let mut child = pm(w, log)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        // The first line names the address; a failure to bind ends the
        // output instead, and the test fails with what it said.
        let line = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("serve did not report its address: {line:?}")
            });
        // Keep draining stderr so the server never blocks on a full pipe.
        thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One parsed HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    // Generous: a loaded 2-core machine; a hang shows up as a failure.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Sends raw bytes as one request on a fresh connection and reads the
/// whole answer (the request asks the server to close).
fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read answer");
    parse(&buf)
}

fn request(addr: SocketAddr, method: &str, target: &str) -> Answer {
    raw(
        addr,
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn get(addr: SocketAddr, target: &str) -> Answer {
    request(addr, "GET", target)
}

fn parse(buf: &[u8]) -> Answer {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

fn cli_out(c: &mut Command) -> Vec<u8> {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    out.stdout
}

/// Whether `tool` runs; on CI (`CI=true`) a missing tool fails the test.
fn have(tool: &str) -> bool {
    crate::util::need(tool, "this check")
}

#[test]
fn serve_api_is_exactly_the_cli_json_and_prometheus_with_the_same_filters() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 4, 3000);
    let s = Server::start(&w, &log, &[]);
    for (query, args) in [
        ("", vec![]),
        ("?since=1h", vec!["--since", "1h"]),
        ("?op=op_1&op=op_3", vec!["--op", "op_1", "--op", "op_3"]),
        ("?since=30m&op=op_2", vec!["--since", "30m", "--op", "op_2"]),
        ("?op=missing", vec!["--op", "missing"]),
    ] {
        let a = get(s.addr, &format!("/api/performance/metrics{query}"));
        assert_eq!(a.status, 200, "{query}: {}", a.text());
        assert_eq!(a.header("Content-Type"), Some("application/json"));
        assert_eq!(a.header("Access-Control-Allow-Origin"), Some("*"));
        let want = cli_out(pm(&w, &log).arg("--json").args(&args));
        assert_seed_shape_of(&a.body, &want, query);
        let a = get(s.addr, &format!("/metrics{query}"));
        assert_eq!(a.status, 200);
        assert!(
            a.header("Content-Type")
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let want = cli_out(pm(&w, &log).arg("--prometheus").args(&args));
        assert_eq!(a.text(), String::from_utf8_lossy(&want), "{query}");
    }
    // The malformed row is announced, as the CLI's note does.
    let a = get(s.addr, "/api/performance/metrics");
    assert_eq!(a.header("X-Ffkit-Malformed-Rows"), Some("1"));
    // New rows show up in the next answer (the cache follows the log).
    let before = get(s.addr, "/api/performance/metrics").text();
    pm(&w, &log)
        .args(["record", "fresh_op", "2.5"])
        .assert()
        .success();
    let after = get(s.addr, "/api/performance/metrics").text();
    assert_ne!(before, after);
    assert_seed_shape_of(after.as_bytes(), &cli_out(pm(&w, &log).arg("--json")), "");
    assert!(
        after.contains("{\"name\": \"fresh_op\", \"count\": 1, \"avg\": 2.5,"),
        "{after}"
    );
}

/// Checks that `api` is the seed's shape of the CLI's `--json` output `cli`
/// (`perf-metrics --json` keeps the contract's shape, keyed by operation):
/// `{"operations": [{"name", "count", "avg", "min", "max", "total", "p50",
/// "p95", "p99"}, …], "totalTime": Σ total, "avgWorktreeCreation": …}`.
fn assert_seed_shape_of(api: &[u8], cli: &[u8], what: &str) {
    use serde_json::Value;
    // The seed's key order, as written (serde_json's map sorts keys).
    let text = String::from_utf8_lossy(api);
    let order = "\", \"count\": ";
    let order2 = ", \"avg\": ";
    assert!(
        text.matches("{\"name\": \"").count() == text.matches(order).count(),
        "{what}: {text}"
    );
    assert!(
        text.matches(order).count() == text.matches(order2).count(),
        "{what}: {text}"
    );
    let api: Value = serde_json::from_slice(api).unwrap_or_else(|e| panic!("{what}: {e}"));
    let cli: serde_json::Map<String, Value> = serde_json::from_slice(cli).unwrap();
    let ops = api["operations"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no operations array: {api}"));
    assert_eq!(ops.len(), cli.len(), "{what}");
    let mut total = 0.0;
    for (op, (name, want)) in ops.iter().zip(&cli) {
        assert_eq!(op["name"], name.as_str(), "{what}");
        let mut keys: Vec<&str> = op.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want_keys = [
            "name", "count", "avg", "min", "max", "total", "p50", "p95", "p99",
        ];
        want_keys.sort_unstable();
        assert_eq!(keys, want_keys, "{what}");
        for k in ["count", "avg", "min", "max", "total", "p50", "p95", "p99"] {
            assert_eq!(op[k], want[k], "{what}: {name}.{k}");
        }
        total += want["total"].as_f64().unwrap();
    }
    let got = api["totalTime"].as_f64().unwrap();
    assert!(
        (got - total).abs() < 0.002 * cli.len().max(1) as f64,
        "{what}: {got} vs {total}"
    );
    assert!(api["avgWorktreeCreation"].is_null(), "{what}");
}

#[test]
fn serve_metrics_pass_promtool_check_metrics() {
    if !have("promtool") {
        return;
    }
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 3, 500);
    // An operation name that needs escaping in a label (a hand-edited log).
    fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(format!("{},we\"ird\\op,1.5\n", NOW - 5).as_bytes())
        .unwrap();
    let s = Server::start(&w, &log, &[]);
    let body = get(s.addr, "/metrics").body;
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(&body).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn serve_answers_bad_requests_with_4xx_and_keeps_serving() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 2, 100);
    let s = Server::start(&w, &log, &[]);
    assert_eq!(get(s.addr, "/nope").status, 404);
    assert_eq!(get(s.addr, "/api/performance").status, 404);
    let a = request(s.addr, "POST", "/api/performance/metrics");
    assert_eq!(a.status, 405);
    assert_eq!(a.header("Allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(request(s.addr, "DELETE", "/").status, 405);
    for q in [
        "/?since=soon",
        "/metrics?since=",
        "/api/performance/metrics?since=1h&since=2h",
        "/api/performance/metrics?op=",
        "/api/performance/metrics?colour=red",
        "/api/performance/metrics?op=%zz",
        "/api/performance/metrics?op=%ff",
    ] {
        let a = get(s.addr, q);
        assert_eq!(a.status, 400, "{q}: {}", a.text());
    }
    // Not HTTP at all, a request line without a version, another version,
    // a head beyond the cap.
    assert_eq!(raw(s.addr, b"hello there\r\n\r\n").status, 400);
    assert_eq!(raw(s.addr, b"GET /\r\n\r\n").status, 400);
    assert_eq!(raw(s.addr, b"GET / HTTP/2.0\r\n\r\n").status, 505);
    let mut big = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..1000 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(20)).as_bytes());
    }
    assert_eq!(raw(s.addr, &big).status, 431);
    // A percent-encoded name is decoded like the CLI's --op.
    let a = get(s.addr, "/api/performance/metrics?op=op%5F1");
    assert!(
        a.text()
            .starts_with("{\"operations\": [{\"name\": \"op_1\""),
        "{}",
        a.text()
    );
    // HEAD: the headers of GET, no body.
    let a = request(s.addr, "HEAD", "/");
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty());
    assert!(a.header("Content-Security-Policy").is_some());
    // Still alive and right after all that.
    let a = get(s.addr, "/api/performance/metrics");
    assert_eq!(a.status, 200);
    assert_seed_shape_of(&a.body, &cli_out(pm(&w, &log).arg("--json")), "after");
}

/// Sends `bytes` without closing our side and reads the answer: the server
/// must answer on what it has, not on a timeout or our EOF.
fn answer_to_partial(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut c = connect(addr);
    c.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    parse(&buf)
}

#[test]
fn serve_caps_request_heads_at_16_kib_and_refuses_non_http_bytes_at_once() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 2, 100);
    let s = Server::start(&w, &log, &[]);
    // A head of exactly 16 KiB, its blank line included, is answered; one
    // byte more is 431 (the cap was 16 KiB on paper and up to 20 in fact).
    let head = |n: usize| {
        let mut h =
            b"GET /api/performance/metrics HTTP/1.1\r\nConnection: close\r\nX-Pad: ".to_vec();
        h.resize(n - 4, b'p');
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    let a = raw(s.addr, &head(16 * 1024));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(raw(s.addr, &head(16 * 1024 + 1)).status, 431);
    assert_eq!(raw(s.addr, &head(18 * 1024)).status, 431);
    // The start of a TLS ClientHello, no newline, connection kept open: a
    // 400 on these bytes, not a 408 when the read timeout ends.
    let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x9b";
    let a = answer_to_partial(s.addr, hello);
    assert_eq!(a.status, 400, "{}", a.text());
    // A half-sent request is still waited for (and timed out, 408).
    let a = answer_to_partial(s.addr, b"GET / HTTP/1.1\r\nHost: x");
    assert_eq!(a.status, 408);
}

#[test]
fn serve_cuts_off_a_head_trickled_a_line_at_a_time() {
    use std::io::{Read, Write};
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 2, 100);
    let s = Server::start(&w, &log, &[]);
    // Slowloris: one header line every 500 ms, each read well within the
    // 5 s read timeout. The head as a whole gets 5 s: 408, then closed.
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let start = std::time::Instant::now();
    let mut lines = 0;
    // Bounded: 60 lines (30 s) at most; the server must answer long before.
    while lines < 60 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if c.write_all(format!("X-Drip-{lines}: 1\r\n").as_bytes())
            .is_err()
        {
            break;
        }
        lines += 1;
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let answered =
            matches!(c.read(&mut b), Ok(n) if n > 0 && b[..n].starts_with(b"HTTP/1.1 408"));
        c.set_nonblocking(false).unwrap();
        if answered {
            break;
        }
    }
    let took = start.elapsed();
    eprintln!("a trickled head was cut off after {took:?} ({lines} lines)");
    assert!(lines < 60, "never answered while it trickled for 30 s");
}

#[test]
fn serve_api_answers_cors_preflights_and_gets_from_any_origin() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 2, 100);
    let s = Server::start(&w, &log, &[]);
    let a = raw(
        s.addr,
        b"OPTIONS /api/performance/metrics HTTP/1.1\r\nHost: x\r\nOrigin: http://dash.example:3000\r\n\
          Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: x-requested-with, authorization\r\n\
          Connection: close\r\n\r\n",
    );
    assert_eq!(a.status, 204, "{}", a.text());
    assert!(a.body.is_empty() && a.header("Content-Length").is_none());
    assert_eq!(a.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(
        a.header("Access-Control-Allow-Methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert_eq!(
        a.header("Access-Control-Allow-Headers"),
        Some("x-requested-with, authorization")
    );
    for path in [
        "/api/performance/metrics",
        "/metrics",
        "/metrics?since=nope",
    ] {
        let a = raw(
            s.addr,
            format!(
                "GET {path} HTTP/1.1\r\nOrigin: http://dash.example\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(a.header("Access-Control-Allow-Origin"), Some("*"), "{path}");
    }
    // The page itself is not for other origins.
    assert_eq!(request(s.addr, "OPTIONS", "/").status, 405);
    assert!(
        get(s.addr, "/")
            .header("Access-Control-Allow-Origin")
            .is_none()
    );
}

#[test]
fn serve_answers_fifty_concurrent_clients_alike() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 5, 20_000);
    let want = cli_out(pm(&w, &log).arg("--json"));
    let s = Server::start(&w, &log, &[]);
    let addr = s.addr;
    let gate = Arc::new(Barrier::new(50));
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let gate = gate.clone();
            thread::spawn(move || {
                gate.wait();
                let path = match i % 3 {
                    0 => "/api/performance/metrics",
                    1 => "/metrics",
                    _ => "/",
                };
                (path, get(addr, path))
            })
        })
        .collect();
    for c in clients {
        let (path, a) = c.join().unwrap();
        assert_eq!(a.status, 200, "{path}");
        if path == "/api/performance/metrics" {
            assert_seed_shape_of(&a.body, &want, path);
        } else if path == "/" {
            assert_eq!(a.text().matches("<svg class=\"chart dist\"").count(), 5);
        }
    }
}

#[test]
fn serve_is_not_blocked_by_half_sent_or_silent_clients() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 2, 200);
    let s = Server::start(&w, &log, &[]);
    // A client that reads its answers a trickle at a time (1 KiB every
    // 100 ms, below the rate the server gives an answer): every write of the
    // server makes progress, so a per-write timeout never fired and the
    // connection (its slot, its thread) was held for as long as the client
    // kept reading; 128 such clients shut everyone else out with 503.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        let mut c = connect(s.addr);
        // Far more than loopback's socket buffers hold.
        c.write_all(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(400))
            .unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                thread::sleep(Duration::from_millis(100));
                if c.read(&mut buf).unwrap_or(0) == 0 {
                    break;
                }
            }
        })
    };
    // More stuck clients than the server has workers: connections that sent
    // half a request line, headers without the blank line, a body shorter
    // than its Content-Length, or nothing at all.
    let mut stuck = Vec::new();
    for i in 0..12 {
        let mut c = connect(s.addr);
        let part: &[u8] = match i % 4 {
            0 => b"GET /api/perf",
            1 => b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
            2 => b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
            _ => b"",
        };
        c.write_all(part).unwrap();
        stuck.push(c);
    }
    // Everyone else is answered, repeatedly, while they hang on.
    let want = cli_out(pm(&w, &log).arg("--json"));
    for _ in 0..5 {
        let a = get(s.addr, "/api/performance/metrics");
        assert_eq!(a.status, 200);
        assert_seed_shape_of(&a.body, &want, "beside stuck clients");
    }
    // The stuck ones are let go after the read timeout: half a request
    // gets a 408, a silent connection is closed (the socket's own 60 s
    // timeout would fail the test if the server held on).
    let mut half = stuck.remove(1);
    let mut rest = Vec::new();
    half.read_to_end(&mut rest)
        .expect("the server closes a half-sent request");
    assert!(
        rest.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    let mut silent = stuck.pop().unwrap();
    let mut rest = Vec::new();
    silent
        .read_to_end(&mut rest)
        .expect("the server closes a silent connection");
    assert!(rest.is_empty());
    // And a keep-alive client gets several answers on one connection.
    let mut c = connect(s.addr);
    for _ in 0..3 {
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let a = read_one(&mut c);
        assert_eq!(a.status, 200);
    }
    drop(c);
    drop(stuck);
    // The trickling reader is cut off by its answer's send deadline (5 s
    // plus a second per 64 KiB): the server is soon down to its main
    // thread, every connection's thread gone, while the client still
    // reads what the kernel had buffered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let task = format!("/proc/{}/task", s.child.id());
    let threads = || fs::read_dir(&task).map(|d| d.count()).unwrap_or(0);
    while threads() > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let left = threads();
    stop.store(true, std::sync::atomic::Ordering::Release);
    trickler.join().unwrap();
    assert_eq!(left, 1, "a connection thread outlived its deadlines");
}

#[test]
fn serve_makes_room_for_a_newcomer_by_closing_the_longest_idle_keep_alive_connection() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 1, 10);
    let s = Server::start(&w, &log, &[]);
    // Every slot (128) taken by a keep-alive client answered once and now
    // idle between requests: before, such clients sending one small
    // request every few seconds kept everyone else out with 503.
    let mut idle = Vec::new();
    for _ in 0..128 {
        let mut c = connect(s.addr);
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_one(&mut c).status, 200);
        idle.push(c);
    }
    for _ in 0..3 {
        assert_eq!(get(s.addr, "/metrics").status, 200);
    }
    // The ones closed for them were the longest idle: the first ones.
    let mut rest = Vec::new();
    idle[0]
        .read_to_end(&mut rest)
        .expect("the oldest idle connection is closed");
    assert!(rest.is_empty());
}

#[test]
fn serve_drains_after_an_error_answer_for_a_second_in_all() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 1, 10);
    let s = Server::start(&w, &log, &[]);
    // After a 400 the server reads and drops what the client still sends,
    // so that the kernel does not reset the answer away; a client that
    // trickled a byte every 200 ms kept that going (and its slot taken)
    // for up to 1 MiB of bytes. Now one second in all.
    let mut c = connect(s.addr);
    c.write_all(b"\x16\x03\x01junk\r\n\r\n").unwrap();
    // The answer, then the end of what the server sends (it shut its side).
    let mut answer = Vec::new();
    c.read_to_end(&mut answer)
        .expect("the 400 and the server's end");
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let started = Instant::now();
    let closed = loop {
        thread::sleep(Duration::from_millis(200));
        if c.write_all(b"x").is_err() || started.elapsed() > Duration::from_secs(30) {
            break started.elapsed();
        }
    };
    assert!(
        closed < Duration::from_secs(30),
        "still draining after {closed:?}"
    );
}

/// Reads one answer with a Content-Length from a kept-alive connection.
fn read_one(c: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(c.read(&mut byte).unwrap(), 1, "connection closed early");
        buf.push(byte[0]);
    }
    let mut a = parse(&buf);
    let n: usize = a.header("Content-Length").unwrap().parse().unwrap();
    let mut body = vec![0u8; n];
    c.read_exact(&mut body).unwrap();
    a.body = body;
    a
}

#[test]
fn serve_refuses_a_busy_port_and_a_bad_listen_address() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 1, 10);
    let s = Server::start(&w, &log, &[]);
    let out = pm(&w, &log)
        .args(["serve", "--listen", &s.addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("cannot listen on"),
        "{}",
        stderr_of(&out)
    );
    for bad in ["nowhere:x", "1.2.3.4", "99999"] {
        pm(&w, &log)
            .args(["serve", "--listen", bad])
            .assert()
            .code(2);
    }
    pm(&w, &log)
        .args(["serve", "--listen", "127.0.0.1:0", "--since", "soon"])
        .assert()
        .code(2);
}

/// Headless chromium with the flags this machine needs (no network
/// beyond loopback), in the fresh profile dir `profile`, under coreutils'
/// timeout: a browser that hangs fails the test instead of stalling the
/// suite.
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "10", "120", "chromium"])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Loads `url`, lets `budget_ms` of virtual time pass (timers included),
/// and returns the DOM and the console lines chromium logged.
fn load(w: &World, url: &str, budget_ms: u32) -> (String, Vec<String>) {
    let profile = tempfile::tempdir_in(w.path()).unwrap();
    let mut c = chromium(profile.path());
    c.args(["--enable-logging=stderr", "--v=0"]);
    // A budget of 0 makes chromium wait forever: no flag then.
    if budget_ms > 0 {
        c.arg(format!("--virtual-time-budget={budget_ms}"));
    }
    let out = c
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium: {}", stderr_of(&out));
    let console = stderr_of(&out)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

#[test]
fn the_page_loads_in_headless_chromium_without_console_errors_and_draws_every_operation() {
    if !have("chromium") {
        return;
    }
    let w = World::new();
    // The console check can fail: a page that logs is caught.
    let bad = w.path().join("bad.html");
    fs::write(
        &bad,
        "<!DOCTYPE html><title>x</title><script>nope();</script>",
    )
    .unwrap();
    let (_, console) = load(&w, &format!("file://{}", bad.display()), 0);
    assert!(
        console.iter().any(|l| l.contains("nope is not defined")),
        "the console detector saw nothing: {console:?}"
    );

    let log = w.path().join("log.csv");
    write_log(&log, 6, 5000);
    let s = Server::start(&w, &log, &["--refresh", "1"]);
    // Served: the charts are there, and after a few (virtual) seconds the
    // page has refreshed itself from the server, still without errors.
    let (dom, console) = load(&w, &format!("http://{}/", s.addr), 3500);
    assert!(console.is_empty(), "console: {console:?}");
    assert_eq!(dom.matches("<svg class=\"chart dist\"").count(), 6, "{dom}");
    assert_eq!(dom.matches("<svg class=\"chart series\"").count(), 6);
    assert_eq!(dom.matches("<article class=\"op\"").count(), 6);
    assert!(dom.contains("class=\"bar\"") && dom.contains("<polyline class=\"line m-p99\""));
    assert!(
        dom.contains("<span id=\"status\" role=\"status\">updated"),
        "the page did not refresh itself"
    );
    // A filter in the URL carries through (and through the refresh).
    let (dom, console) = load(&w, &format!("http://{}/?op=op_2&op=op_4", s.addr), 0);
    assert!(console.is_empty(), "console: {console:?}");
    assert_eq!(dom.matches("<svg class=\"chart dist\"").count(), 2);

    // The static report: same charts, no errors from file://.
    let page = w.path().join("report.html");
    pm(&w, &log)
        .args(["report", "--html"])
        .arg(&page)
        .assert()
        .success();
    let (dom, console) = load(&w, &format!("file://{}", page.display()), 0);
    assert!(console.is_empty(), "console: {console:?}");
    assert_eq!(dom.matches("<svg class=\"chart dist\"").count(), 6);
}

#[test]
fn report_html_writes_one_self_contained_file_atomically() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 3, 900);
    let out_dir = w.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let page = out_dir.join("metrics.html");
    fs::write(&page, "old").unwrap();
    pm(&w, &log)
        .args(["report", "--since", "2h", "--html"])
        .arg(&page)
        .assert()
        .success()
        .stdout("");
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg class=\"chart dist\"").count(), 3);
    assert!(!html.contains("http://") && !html.contains("https://"));
    // One script, and the CSP lets exactly that one run (by its hash).
    assert_eq!(html.matches("<script").count(), 1);
    let csp = html
        .split("http-equiv=\"Content-Security-Policy\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .unwrap();
    assert!(
        script_src.starts_with("script-src 'sha256-") && !script_src.contains("unsafe"),
        "{csp}"
    );
    assert!(html.contains("since 2h"));
    // Nothing but the page is left in its dir (no temp file).
    let names: Vec<PathBuf> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names, std::slice::from_ref(&page));
    // --op narrows it; a missing dir is exit 4 and creates nothing.
    pm(&w, &log)
        .args(["report", "--op", "op_0", "--html"])
        .arg(&page)
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(&page)
            .unwrap()
            .matches("<svg class=\"chart dist\"")
            .count(),
        1
    );
    pm(&w, &log)
        .args(["report", "--html"])
        .arg(w.path().join("no/such/dir/x.html"))
        .assert()
        .code(4);
    pm(&w, &log).arg("report").assert().code(2);
}

#[test]
fn prometheus_textfile_is_written_atomically_and_readable_like_any_file() {
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 2, 50);
    let dir = w.path().join("textfile");
    fs::create_dir(&dir).unwrap();
    let prom = dir.join("ffkit.prom");
    pm(&w, &log)
        .args(["--prometheus", "--textfile"])
        .arg(&prom)
        .assert()
        .success()
        .stdout("");
    let want = cli_out(pm(&w, &log).arg("--prometheus"));
    assert_eq!(fs::read(&prom).unwrap(), want);
    // The mode a plain file created in the same place gets (umask applied).
    use std::os::unix::fs::PermissionsExt;
    let plain = w.path().join("plain");
    fs::write(&plain, "").unwrap();
    assert_eq!(
        fs::metadata(&prom).unwrap().permissions().mode() & 0o777,
        fs::metadata(&plain).unwrap().permissions().mode() & 0o777
    );
    // Rewritten in place (a new inode: readers never see a partial file).
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(&prom).unwrap().ino();
    pm(&w, &log)
        .args(["record", "another", "1"])
        .assert()
        .success();
    pm(&w, &log)
        .args(["--prometheus", "--textfile"])
        .arg(&prom)
        .assert()
        .success();
    assert_ne!(fs::metadata(&prom).unwrap().ino(), ino);
    assert!(
        fs::read_to_string(&prom)
            .unwrap()
            .contains("operation=\"another\"")
    );
    let names: Vec<_> = fs::read_dir(&dir).unwrap().collect();
    assert_eq!(names.len(), 1, "a temp file was left behind");
    // --textfile needs --prometheus.
    pm(&w, &log)
        .args(["--json", "--textfile"])
        .arg(&prom)
        .assert()
        .code(2);
}

#[test]
fn report_and_textfile_never_replace_a_fifo_or_a_stdout_link() {
    // A rename over the destination replaced it: `report --html
    // /dev/stdout` as root made the system's /dev/stdout link a regular
    // file (and the page never reached stdout), and a FIFO a reader
    // waited on got a regular file in its place.
    use std::os::unix::fs::FileTypeExt;
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 2, 50);
    let want = cli_out(pm(&w, &log).arg("--prometheus"));

    // A link to this process's stdout (what /dev/stdout is), a pipe or a
    // file: the output goes there, the link stays.
    let link = w.path().join("stdout");
    std::os::unix::fs::symlink("/proc/self/fd/1", &link).unwrap();
    let got = cli_out(pm(&w, &log).args(["--prometheus", "--textfile"]).arg(&link));
    assert!(is_symlink(&link), "the link was replaced by a file");
    assert_eq!(got, want);
    let page = cli_out(pm(&w, &log).args(["report", "--html"]).arg(&link));
    assert!(is_symlink(&link), "the link was replaced by a file");
    assert!(page.starts_with(b"<!DOCTYPE html>"));
    let file = w.path().join("out.txt");
    let status = pm(&w, &log)
        .args(["--prometheus", "--textfile"])
        .arg(&link)
        .stdout(fs::File::create(&file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(is_symlink(&link), "the link was replaced by a file");
    assert_eq!(fs::read(&file).unwrap(), want);

    // A FIFO (and a link to one) is not a regular file: refused, exit 1,
    // left as it is.
    let fifo = w.path().join("ffkit.prom");
    mkfifo(&fifo);
    let to_fifo = w.path().join("to-fifo");
    std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
    for dest in [&fifo, &to_fifo] {
        pm(&w, &log)
            .args(["--prometheus", "--textfile"])
            .arg(dest)
            .assert()
            .code(1)
            .stdout("")
            .stderr(predicates::str::contains("not a regular file"));
        pm(&w, &log)
            .args(["report", "--html"])
            .arg(dest)
            .assert()
            .code(1)
            .stderr(predicates::str::contains("not a regular file"));
    }
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(is_symlink(&to_fifo));
    // No temp file was left beside them.
    let names: Vec<_> = fs::read_dir(w.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.to_string_lossy().starts_with(".tmp-")),
        "{names:?}"
    );
}

#[test]
fn serve_page_of_a_big_log_stays_small() {
    // 300,000 rows: the page's size depends on operations, not rows (the
    // time is measured in docs/metrics.md, not asserted).
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 4, 300_000);
    let s = Server::start(&w, &log, &[]);
    let t = Instant::now();
    let a = get(s.addr, "/");
    let b = get(s.addr, "/");
    assert_eq!(a.status, 200);
    assert!(a.body.len() < 200_000, "{} bytes", a.body.len());
    assert_eq!(a.body, b.body);
    eprintln!(
        "serve: two page loads of a 300k-row log took {:?}",
        t.elapsed()
    );
}

// ------------------------------------------------------- chromium over CDP

/// Headless chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: it reads commands on fd 3 and writes answers
/// and events on fd 4, each a JSON text ended by a NUL), with one page.
/// Console messages, uncaught exceptions and log entries of level warning
/// or error (a CSP violation is one) are collected in `console`.
struct Browser {
    child: Child,
    tx: fs::File,
    rx: BufReader<fs::File>,
    next: u64,
    session: String,
    console: Vec<String>,
    _profile: tempfile::TempDir,
}

/// A pipe whose two ends are close-on-exec and numbered above 100 (so
/// that placing them at 3 and 4 in the child cannot clobber one another).
fn cdp_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let high = |fd: i32| {
        // SAFETY: fd is ours and open; F_DUPFD_CLOEXEC returns a new one.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
        assert!(h >= 100);
        // SAFETY: both are open descriptors owned by nobody else.
        unsafe {
            libc::close(fd);
            OwnedFd::from_raw_fd(h)
        }
    };
    (high(fds[0]), high(fds[1]))
}

impl Browser {
    /// Starts chromium (under coreutils' timeout: a hung browser fails the
    /// test instead of stalling the suite) and opens one page.
    fn launch(w: &World) -> Browser {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir_in(w.path()).unwrap();
        let (to_chrome_r, to_chrome_w) = cdp_pipe();
        let (from_chrome_r, from_chrome_w) = cdp_pipe();
        let (r3, w4) = (to_chrome_r.as_raw_fd(), from_chrome_w.as_raw_fd());
        let mut c = chromium(profile.path());
        c.args(["--hide-scrollbars", "--remote-debugging-pipe"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only dup2, async-signal-safe; the
        // copies at 3 and 4 are not close-on-exec, the originals are.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(r3, 3) < 0 || libc::dup2(w4, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("spawn chromium");
        drop((to_chrome_r, from_chrome_w));
        let mut b = Browser {
            child,
            tx: fs::File::from(to_chrome_w),
            rx: BufReader::new(fs::File::from(from_chrome_r)),
            next: 0,
            session: String::new(),
            console: Vec::new(),
            _profile: profile,
        };
        let target = b.call_on(
            None,
            "Target.createTarget",
            serde_json::json!({"url": "about:blank"}),
        );
        let id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = b.call_on(
            None,
            "Target.attachToTarget",
            serde_json::json!({"targetId": id, "flatten": true}),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(domain, serde_json::json!({}));
        }
        b
    }

    /// Reads the next message; notes console lines.
    fn read(&mut self) -> serde_json::Value {
        let mut buf = Vec::new();
        let n = self.rx.read_until(0, &mut buf).expect("read from chromium");
        assert!(n > 0, "chromium closed its pipe");
        buf.pop();
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("CDP JSON");
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                self.console
                    .push(format!("console.{}: {}", p["type"], args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                self.console.push(format!(
                    "uncaught: {} {}",
                    d["text"], d["exception"]["description"]
                ));
            }
            Some("Log.entryAdded") => {
                let e = &p["entry"];
                if matches!(e["level"].as_str(), Some("error" | "warning")) {
                    self.console
                        .push(format!("log {}: {}", e["level"], e["text"]));
                }
            }
            _ => {}
        }
        v
    }

    fn call_on(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.tx.write_all(&bytes).expect("write to chromium");
        loop {
            let v = self.read();
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// A command to the page.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let s = self.session.clone();
        self.call_on(Some(&s), method, params)
    }

    /// Waits for an event of the page.
    fn wait_for(&mut self, event: &str) -> serde_json::Value {
        loop {
            let v = self.read();
            if v["method"] == event {
                return v["params"].clone();
            }
        }
    }

    /// Loads `url` in a viewport of `width` × `height` CSS pixels (a phone's
    /// when `mobile`: the viewport meta tag applies) and waits for its load.
    fn open(&mut self, url: &str, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
        self.call("Page.navigate", serde_json::json!({"url": url}));
        self.wait_for("Page.loadEventFired");
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// A mouse drag from `a` to `b` (page coordinates).
    fn drag(&mut self, a: (f64, f64), b: (f64, f64)) {
        let ev = |t: &str, (x, y): (f64, f64), buttons: u8| serde_json::json!({"type": t, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1});
        self.call("Input.dispatchMouseEvent", ev("mouseMoved", a, 0));
        self.call("Input.dispatchMouseEvent", ev("mousePressed", a, 1));
        let mid = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
        self.call("Input.dispatchMouseEvent", ev("mouseMoved", mid, 1));
        self.call("Input.dispatchMouseEvent", ev("mouseMoved", b, 1));
        self.call("Input.dispatchMouseEvent", ev("mouseReleased", b, 0));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the layout probe measures in a loaded page: horizontal overflow,
/// the smallest text as rendered (an SVG's text scaled by its viewBox),
/// table cells out of view, the charts drawn.
const PROBE: &str = r#"(() => {
  const de = document.documentElement;
  let min = 1e9, where = '';
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = walk.nextNode());) {
    if (!n.textContent.trim()) continue;
    const el = n.parentElement;
    if (el.closest('[hidden], title, script, style')) continue;
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height) continue;
    let size = parseFloat(getComputedStyle(el).fontSize);
    const svg = el.closest('svg');
    if (svg) size *= svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    if (size < min) { min = size; where = el.tagName + ' ' + n.textContent.trim().slice(0, 40); }
  }
  const out = [];
  for (const td of document.querySelectorAll('td')) {
    const r = td.getBoundingClientRect();
    if (r.left < -0.5 || r.right > innerWidth + 0.5) out.push(td.textContent);
  }
  const n = (sel) => document.querySelectorAll(sel).length;
  return {scroll: de.scrollWidth, inner: innerWidth, minFont: min, where, out,
          dist: n('svg.dist'), series: n('svg.series'), rate: n('svg.rate'),
          cards: n('article.op'), local: n('time[data-t] + span.local')};
})()"#;

/// Loads `url` at a phone's 390×844 and a desktop's 1280×900 and checks
/// the layout: no horizontal scroll, no text under 12 px, every number of
/// the table in view, `ops` operations drawn, local times added, and not a
/// console message.
fn check_layout(b: &mut Browser, url: &str, ops: u64) {
    for (w, h, mobile) in [(390, 844, true), (1280, 900, false)] {
        b.console.clear();
        b.open(url, w, h, mobile);
        let m = b.eval(PROBE);
        let what = format!("{url} at {w}x{h}: {m}");
        assert_eq!(m["inner"], w, "{what}");
        assert!(
            m["scroll"].as_u64() <= m["inner"].as_u64(),
            "horizontal scroll: {what}"
        );
        assert!(
            m["minFont"].as_f64().unwrap() >= 12.0,
            "text under 12 px: {what}"
        );
        assert_eq!(
            m["out"].as_array().map(Vec::len),
            Some(0),
            "cells out of view: {what}"
        );
        for k in ["dist", "series", "rate", "cards"] {
            assert_eq!(m[k].as_u64(), Some(ops), "{k}: {what}");
        }
        assert!(m["local"].as_u64() >= Some(2), "no local times: {what}");
        assert!(b.console.is_empty(), "console: {:?} ({what})", b.console);
    }
}

/// A log like write_log's, plus an operation with a very long name.
fn write_page_log(path: &Path) {
    write_log(path, 5, 3000);
    let long = format!("ffkit.pipeline:{}", "very_long_operation_name_".repeat(4));
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    for i in 0..50 {
        writeln!(
            f,
            "{},{long},{}",
            NOW - 5000 + i * 60,
            1.5 + i as f64 / 10.0
        )
        .unwrap();
    }
}

#[test]
fn the_page_fits_a_phone_and_a_desktop_in_chromium_served_and_static() {
    if !have("chromium") {
        return;
    }
    let w = World::new();
    let log = w.path().join("log.csv");
    write_page_log(&log);
    let mut b = Browser::launch(&w);
    // The detector can fail: a page that throws, and one whose inline
    // script the CSP refuses, are both caught.
    let bad = w.path().join("bad.html");
    fs::write(
        &bad,
        "<!DOCTYPE html><meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'sha256-AAAA'\">\
         <title>x</title><script>nope();</script>",
    )
    .unwrap();
    b.open(&format!("file://{}", bad.display()), 390, 844, true);
    assert!(
        b.console
            .iter()
            .any(|l| l.contains("Content Security Policy")),
        "the console detector saw nothing: {:?}",
        b.console
    );
    let s = Server::start(&w, &log, &["--refresh", "0"]);
    check_layout(&mut b, &format!("http://{}/", s.addr), 6);
    let page = w.path().join("report.html");
    pm(&w, &log)
        .args(["report", "--html"])
        .arg(&page)
        .assert()
        .success();
    check_layout(&mut b, &format!("file://{}", page.display()), 6);
}

#[test]
fn the_page_filters_operations_and_zooms_by_dragging_across_a_time_chart() {
    if !have("chromium") {
        return;
    }
    let w = World::new();
    let log = w.path().join("log.csv");
    write_page_log(&log);
    let s = Server::start(&w, &log, &["--refresh", "0"]);
    let mut b = Browser::launch(&w);
    b.open(&format!("http://{}/", s.addr), 1280, 900, false);
    // The filter hides the other operations' rows and cards as one types.
    let shown = b.eval(
        "(() => { const f = document.getElementById('filter'); f.value = 'op_1, pipeline';
           f.dispatchEvent(new Event('input'));
           const vis = (s) => [...document.querySelectorAll(s)].filter((e) => !e.hidden).length;
           return [vis('article.op'), vis('tbody tr'), document.getElementById('shown').textContent]; })()",
    );
    assert_eq!(shown, serde_json::json!([2, 2, "2 of 6 shown"]));
    // A range preset is a link to the same page with ?since=.
    let href = b.eval("document.querySelector('nav.range a').getAttribute('href')");
    assert_eq!(href, "?since=5m");
    // Drag from 25 % to 75 % of the first latency chart's plot: the page
    // asks the server for that range, and shows it.
    let geo = b.eval(
        "(() => { const s = document.querySelector('svg.series'); s.scrollIntoView();
           const r = s.getBoundingClientRect(), d = s.dataset, k = r.width / s.viewBox.baseVal.width;
           return [r.left + k * Number(d.x0), r.left + k * Number(d.x1), r.top + r.height / 2,
                   Number(d.t0), Number(d.t1)]; })()",
    );
    let g: Vec<f64> = geo
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (xa, xb) = (g[0] + (g[1] - g[0]) * 0.25, g[0] + (g[1] - g[0]) * 0.75);
    b.drag((xa, g[2]), (xb, g[2]));
    b.wait_for("Page.loadEventFired");
    let search = b.eval("location.search");
    let q: Vec<i64> = search
        .as_str()
        .unwrap()
        .trim_start_matches('?')
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(_, v)| v.parse().unwrap())
        .collect();
    let (t0, t1) = (g[3], g[4]);
    let want = (t0 + (t1 - t0) * 0.25, t0 + (t1 - t0) * 0.75);
    // A pixel is worth (t1 - t0) / plot width seconds.
    let slack = (t1 - t0) / (g[1] - g[0]) * 3.0;
    assert_eq!(q.len(), 2, "{search}");
    assert!(
        (q[0] as f64 - want.0).abs() <= slack && (q[1] as f64 - want.1).abs() <= slack,
        "{search} vs {want:?}"
    );
    // The zoomed page's data is that range: its rows are the CLI's count
    // over the same window.
    let meta = b.eval("document.getElementById('meta').textContent");
    assert!(meta.as_str().unwrap().contains("from 2023-"), "{meta}");
    let rows = b.eval(
        "[...document.querySelectorAll('tbody td[data-label=Count]')].reduce((a, td) => a + Number(td.textContent.replace(/\\s/g, '')), 0)",
    );
    let raw = fs::read_to_string(&log).unwrap();
    let want_rows = raw
        .lines()
        .filter_map(|l| l.split(',').next()?.parse::<i64>().ok())
        .filter(|t| *t >= q[0] && *t <= q[1])
        .count();
    assert_eq!(rows.as_u64(), Some(want_rows as u64));
    assert!(b.console.is_empty(), "{:?}", b.console);
}

#[test]
fn a_dashboard_on_another_origin_reads_the_api_like_vibetrees() {
    if !have("chromium") {
        return;
    }
    let w = World::new();
    let log = w.path().join("log.csv");
    write_log(&log, 3, 300);
    let s = Server::start(&w, &log, &[]);
    let mut b = Browser::launch(&w);
    // The dashboard's origin is http://localhost:PORT; the API's is
    // http://127.0.0.1:PORT: another origin. A custom header makes the
    // browser send a preflight first.
    b.open(
        &format!("http://localhost:{}/metrics", s.addr.port()),
        1280,
        900,
        false,
    );
    let got = b.eval(&format!(
        "fetch('http://{}/api/performance/metrics', {{headers: {{'X-Requested-With': 'vibetrees'}}}})
           .then((r) => r.json())
           .then((data) => data.operations.map((op) => op.name + ':' + op.count).join(' ') + ' total ' + (data.totalTime > 0))",
        s.addr
    ));
    assert_eq!(got, "op_0:100 op_1:100 op_2:100 total true");
    assert!(b.console.is_empty(), "{:?}", b.console);
}
