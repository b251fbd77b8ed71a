//! Locks on the Redis backend, against a real `redis-server` each test
//! starts on a free loopback port (no persistence, its own temp dir) and
//! kills at the end: exact counts under contention in command mode and
//! with named pairs, fencing tokens, a SIGKILLed holder handing over within
//! the lease, a server killed or paused mid-run failing every call within
//! the timeout with the documented code, and a restart losing the locks.
//! Without redis-server the tests print a SKIP line, and fail on CI.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::util::*;

/// A redis-server this test owns.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// A second port speaking TLS (`start_tls`), with its CA and server
    /// certificate in `dir`.
    pub tls_port: Option<u16>,
    pub dir: tempfile::TempDir,
    /// The test's own oracle connection, made on first use (see `query`).
    oracle: Mutex<Option<redis::Connection>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether redis-server can run here; `false` prints a SKIP line, and on
/// CI (`CI=true`) the test fails instead.
pub fn available() -> bool {
    crate::util::need("redis-server", "the Redis backend tests")
}

impl Server {
    /// Starts a server on a free loopback port, or `None` (SKIP) without
    /// redis-server.
    pub fn start() -> Option<Server> {
        Self::start_with(false)
    }

    /// A server that also speaks TLS on `tls_port`, for `localhost`, with
    /// a certificate signed by a CA made here with `openssl` (`ca()`), or
    /// `None` (SKIP) without redis-server or openssl.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub fn start_tls() -> Option<Server> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Option<Server> {
        if !available() || (tls && !crate::util::need("openssl", "the rediss:// tests")) {
            return None;
        }
        let mut s = Server {
            child: None,
            port: 0,
            tls_port: None,
            dir: tempfile::tempdir().unwrap(),
            oracle: Mutex::new(None),
        };
        if tls {
            make_certs(s.dir.path());
        }
        for _ in 0..20 {
            s.port = free_port();
            s.tls_port = tls.then(free_port);
            if s.spawn() {
                return Some(s);
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// The CA that signed the TLS port's certificate.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The TLS port's URL.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub fn tls_url(&self) -> String {
        format!("rediss://localhost:{}", self.tls_port.unwrap_or(0))
    }

    /// (Re)starts the server on its port; whether it came up.
    pub fn spawn(&mut self) -> bool {
        let mut c = Command::new("redis-server");
        if let Some(p) = self.tls_port {
            let d = self.dir.path();
            c.args(["--tls-port", &p.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(d.join("server.pem"))
                .arg("--tls-key-file")
                .arg(d.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.pem"));
        }
        let child = c
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--unixsocket")
            .arg(self.dir.path().join("redis.sock"))
            .args(["--unixsocketperm", "700"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let give_up = Instant::now() + Duration::from_secs(20);
        while Instant::now() < give_up {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                self.child = None;
                return false;
            }
            if self.ping() {
                return true;
            }
            sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The same server through its unix socket.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.dir.path().join("redis.sock").display())
    }

    fn client(&self) -> redis::RedisResult<redis::Connection> {
        let c = redis::Client::open(self.url())?;
        let con = c.get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(con)
    }

    fn ping(&self) -> bool {
        self.client()
            .is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
    }

    /// A new connection, tried again for up to 20 s: a loaded machine may
    /// drop a SYN or be slow to accept, and the test must not fail for it.
    /// Its reads have no timeout: on a socket with a receive timeout
    /// (SO_RCVTIMEO) the kernel does not restart a `recv` that a stop and
    /// continue of this process (SIGSTOP/SIGCONT, a ptrace attach, a
    /// cgroup freeze) cut short, and it fails with EINTR (signal(7)), after
    /// the command was sent; without one the `recv` goes on transparently
    /// (this process catches no signal: libtest and these tests install no
    /// handler). A server that never answers is not a case the tests make:
    /// a paused one answers once its pause ends.
    fn connect(&self) -> redis::Connection {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            match self.client().and_then(|c| {
                c.set_read_timeout(None)?;
                Ok(c)
            }) {
                Ok(c) => return c,
                Err(e) if Instant::now() >= give_up => {
                    panic!("cannot connect to the test server on {}: {e}", self.url())
                }
                Err(_) => sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Runs one command on the server through the test's own oracle
    /// connection, kept across calls. A connection the server dropped (it
    /// was killed and started again) is replaced and the command sent once
    /// more: it never reached the server.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let mut held = self.oracle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fresh = held.is_none();
        loop {
            let con = held.get_or_insert_with(|| self.connect());
            match cmd.query(con) {
                Ok(v) => return v,
                Err(e) if !fresh && e.is_connection_dropped() => {
                    *held = None;
                    fresh = true;
                }
                Err(e) => panic!("query the test server: {e}"),
            }
        }
    }

    /// Runs `cmd` on a connection of its own in a thread (a command that
    /// blocks the server, like DEBUG SLEEP), and returns once the server
    /// has stopped answering: a probe's PING no longer gets a reply within
    /// 50 ms. The thread ends when the command is answered.
    pub fn stall_with(&self, cmd: redis::Cmd) -> std::thread::JoinHandle<()> {
        let mut con = self.connect();
        let t = std::thread::spawn(move || {
            let _: redis::Value = cmd.query(&mut con).unwrap();
        });
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            // The client's connect sends a command too (CLIENT SETINFO).
            let answered = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(50)))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_millis(50)))?;
                    redis::cmd("PING").query::<String>(&mut c)
                });
            if answered.as_ref().is_err_and(|e| e.is_timeout()) {
                return t;
            }
            assert!(Instant::now() < give_up, "the server never stalled");
            sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the test's oracle connection is the server's only
    /// client: every command other clients sent (queued behind a stall,
    /// say) has run by then.
    pub fn quiesce(&self) {
        wait_until("the other clients to be gone", 30, || {
            let info: String = self.query(redis::cmd("INFO").arg("clients"));
            info.lines().any(|l| l.trim() == "connected_clients:1")
        });
    }

    /// SIGKILLs the server (our own child) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fault tool: a TCP relay on a loopback port to the test server, in
/// threads of the test process, that can be told to stop forwarding —
/// everything at once ([`Proxy::blackhole`], a network partition: no data
/// either way, new connections accepted and then ignored), or the
/// server's replies partway through a request ([`Proxy::cut_after`], a
/// server that stops answering mid-call).
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    stop: std::sync::atomic::AtomicBool,
    blackhole: std::sync::atomic::AtomicBool,
    /// Client-to-server bytes relayed since the last `cut_after`.
    sent: std::sync::atomic::AtomicUsize,
    /// `(trigger, allowance)`: once `sent` exceeds trigger, relay at most
    /// allowance more reply bytes, then none.
    cut: Mutex<Option<(usize, usize)>>,
    /// `(trigger, hold)`: once `sent` exceeds trigger, every reply byte is
    /// held until `hold` after the last request byte went through.
    hold: Mutex<Option<(usize, Duration)>>,
    /// When the last request byte past the hold's trigger was relayed.
    last_request: Mutex<Option<Instant>>,
}

impl Proxy {
    /// A relay to `server`'s port, forwarding everything until told otherwise.
    pub fn start(server: &Server) -> Proxy {
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = server.port;
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (from, to, replies) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        false,
                    ),
                    (server, client, true),
                ] {
                    let st = st.clone();
                    std::thread::spawn(move || pump(from, to, replies, &st));
                }
            }
        });
        Proxy { port, state }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding anything, on every connection, old and new.
    pub fn blackhole(&self) {
        self.state
            .blackhole
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forwards again after [`Proxy::blackhole`] (on new connections: the
    /// old ones lost what was sent meanwhile).
    pub fn resume(&self) {
        self.state
            .blackhole
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Once the clients have sent more than `request_bytes` from now on,
    /// lets `reply_bytes` more bytes of replies through, then no more
    /// (requests still reach the server).
    pub fn cut_after(&self, request_bytes: usize, reply_bytes: usize) {
        self.state
            .sent
            .store(0, std::sync::atomic::Ordering::SeqCst);
        *self
            .state
            .cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((request_bytes, reply_bytes));
    }
}

impl Proxy {
    /// Once the clients have sent more than `request_bytes` from now on,
    /// holds every reply until `hold` after the client sent the last
    /// request byte: a reply then comes at least `hold` after its request
    /// was sent, however fast the server is, and no later than that or the
    /// server's own answer, whichever is last.
    pub fn hold_replies_after(&self, request_bytes: usize, hold: Duration) {
        self.state
            .sent
            .store(0, std::sync::atomic::Ordering::SeqCst);
        *self
            .state
            .last_request
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        *self
            .state
            .hold
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((request_bytes, hold));
    }
}

impl ProxyState {
    /// The hold, once its trigger is crossed.
    fn holding(&self) -> Option<Duration> {
        let hold = *self.hold.lock().unwrap_or_else(PoisonError::into_inner);
        hold.filter(|(trigger, _)| self.sent.load(std::sync::atomic::Ordering::SeqCst) > *trigger)
            .map(|(_, d)| d)
    }

    /// Waits until `hold` after the last request byte relayed (which may
    /// move while waiting: a reply to an earlier part of a request still
    /// being sent is held with the rest).
    fn wait_out(&self, hold: Duration) {
        loop {
            let last = *self
                .last_request
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let left = last.map_or(Duration::from_millis(10), |t| {
                (t + hold).saturating_duration_since(Instant::now())
            });
            if left.is_zero() || self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            sleep(left.min(Duration::from_millis(50)));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Relays `from` to `to` until either side closes or the proxy stops,
/// dropping what the proxy's state says must not pass. What is read is
/// queued for a writer of its own, so a slow receiver never delays the
/// reading: a request's bytes are seen (`last_request`) when the client
/// has sent them, not when the server has taken them.
///
/// A hold delays only the writing. The reading goes on, so the server
/// always finds its replies taken at once: a relay that stopped reading
/// for the hold filled the server's socket, and Linux then clamped the
/// window the relay's socket offered below one segment; the server's
/// kernel sent nothing more until its zero-window probe timer fired,
/// backed off to seconds by then (`ss -tino` on the server's socket:
/// `timer:(persist,3.0s) backoff:4 snd_wnd:43008 mss:46592
/// notsent:282193`), so the rest of the replies reached the client up to
/// seconds after the hold had ended, past its deadline (the flaky
/// `redis_a_large_batch_that_the_server_stores_is_not_reported_as_timed_out`).
fn pump(mut from: std::net::TcpStream, to: std::net::TcpStream, replies: bool, st: &ProxyState) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering::SeqCst;
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // A chunk, and the hold to wait out before writing it (if any).
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<u8>, Option<Duration>)>();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut to = to;
            for (chunk, hold) in rx {
                if let Some(hold) = hold {
                    st.wait_out(hold);
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
        let mut buf = vec![0u8; 64 << 10];
        while !st.stop.load(SeqCst) {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                // EINTR too: with a receive timeout set, a stop and
                // continue of this process (SIGSTOP/SIGCONT, a ptrace
                // attach, a cgroup freeze) cuts the read short (signal(7),
                // see `Server::connect`); it must not end the relay.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(_) => break,
            };
            if st.blackhole.load(SeqCst) {
                continue;
            }
            let (pass, hold) = if replies {
                let hold = st.holding();
                let mut cut = st.cut.lock().unwrap_or_else(PoisonError::into_inner);
                let pass = match cut.as_mut() {
                    Some((trigger, allowance)) if st.sent.load(SeqCst) > *trigger => {
                        let pass = n.min(*allowance);
                        *allowance -= pass;
                        pass
                    }
                    _ => n,
                };
                (pass, hold)
            } else {
                st.sent.fetch_add(n, SeqCst);
                if st.holding().is_some() {
                    *st.last_request
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                }
                (n, None)
            };
            if tx.send((buf[..pass].to_vec(), hold)).is_err() {
                break;
            }
        }
        drop(tx);
        let _ = writer.join();
    });
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 it signed,
/// in `dir` (ca.pem, server.pem, server.key).
pub fn make_certs(dir: &Path) {
    let openssl = |args: &str| {
        let o = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", stderr_of(&o));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let args = |rest: &str| format!("req {ec} {rest}");
    openssl(&args(
        "-x509 -days 2 -keyout ca.key -out ca.pem -subj /CN=ffkit-test-ca",
    ));
    openssl(&args(
        "-keyout server.key -out server.csr -subj /CN=localhost",
    ));
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
         -days 2 -extfile ext",
    );
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The world's environment for the Redis backend with a test-sized lease
/// (6 s) and a timeout (2 s) that a loaded 2-core machine still meets; the
/// timeout tests shorten it.
pub fn env(c: &mut Command, s: &Server) {
    c.env("FFKIT_BACKEND", s.url())
        .env("FFKIT_BACKEND_TIMEOUT", "2")
        .env("FFKIT_LOCK_LEASE", "6")
        .env("FFKIT_LOCK_DIR", "/nonexistent-local-lock-dir");
}

fn ff(w: &World, s: &Server, applet: &str) -> Command {
    let mut c = w.cmd(applet);
    env(&mut c, s);
    c
}

fn bash(w: &World, s: &Server, script: &str) -> Command {
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    env(&mut c, s);
    c.env("FF", bin()).arg("-c").arg(script);
    c
}

const PROCS: usize = 16;
const INCREMENTS: usize = 50;

/// PROCS bash loops of INCREMENTS `body`s each, at once; every body must
/// increment the counter file `c` under the lock. Returns the counter.
fn contention(w: &World, s: &Server, body: &str) -> String {
    std::fs::write(w.path().join("c"), "0\n").unwrap();
    let script = format!("for i in $(seq {INCREMENTS}); do {body}; done");
    let kids: Vec<Child> = (0..PROCS)
        .map(|_| {
            let mut c = bash(w, s, &script);
            c.env("LOCK_TIMEOUT", "120")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    std::fs::read_to_string(w.path().join("c"))
        .unwrap()
        .trim()
        .to_string()
}

/// The test's own oracle survives its process being stopped and continued
/// (SIGSTOP/SIGCONT, a ptrace attach, a cgroup freeze: nothing this suite
/// controls) while it waits for a reply. The kernel restarts a blocked
/// `recv` after a stop when no handler runs, except on a socket with a
/// receive timeout (SO_RCVTIMEO), which fails with EINTR instead
/// (signal(7)): the oracle's 5 s read timeout made `Server::query` panic
/// with "Interrupted system call". A child test process (this binary,
/// [`oracle_child`]) stalls its own server, sends INCRBY through its
/// oracle, and is stopped and continued while it waits; the reply must
/// come back, once (the command is not sent again).
#[test]
fn redis_oracle_query_survives_a_stop_and_continue() {
    if !available() {
        return;
    }
    use rustix::process::{Pid, Signal, kill_process};
    let tmp = tempfile::tempdir().unwrap();
    let mark = tmp.path().join("stalled");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "redis::oracle_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FFKIT_TEST_ORACLE_MARK", &mark)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Our own child, not yet waited for: its pid cannot be reused.
    let pid = Pid::from_child(&child);
    let task_dir = format!("/proc/{}/task", child.id());
    // Some thread of the child blocked in a socket read (the oracle's).
    let in_recv = || {
        std::fs::read_dir(&task_dir).is_ok_and(|d| {
            d.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("syscall")).is_ok_and(|l| {
                    let nr = l.split_whitespace().next().and_then(|n| n.parse().ok());
                    nr == Some(libc::SYS_recvfrom) || nr == Some(libc::SYS_read)
                })
            })
        })
    };
    until("the child to stall its server", || mark.exists());
    until("the child's oracle to wait for its reply", in_recv);
    kill_process(pid, Signal::STOP).unwrap();
    until("the child to stop", || {
        std::fs::read_to_string(format!("/proc/{}/stat", child.id())).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('T'))
        })
    });
    kill_process(pid, Signal::CONT).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("oracle: 1 1"), "{text}");
}

/// The child half of [`redis_oracle_query_survives_a_stop_and_continue`]:
/// does nothing unless FFKIT_TEST_ORACLE_MARK is set.
#[test]
fn oracle_child() {
    let Some(mark) = std::env::var_os("FFKIT_TEST_ORACLE_MARK") else {
        return;
    };
    let Some(s) = Server::start() else { return };
    // The oracle connects now: its connection sends a command of its own.
    let _: String = s.query(&mut redis::cmd("PING"));
    let stall = s.stall_with({
        let mut c = redis::cmd("DEBUG");
        c.arg("SLEEP").arg(2);
        c
    });
    std::fs::write(&mark, b"").unwrap();
    let n: i64 = s.query(redis::cmd("INCRBY").arg("n").arg(1));
    let again: i64 = s.query(redis::cmd("GET").arg("n"));
    stall.join().unwrap();
    println!("oracle: {n} {again}");
}

/// On Redis, command mode's self-timing row is written while the command
/// runs (off the round's critical path), once.
#[test]
fn redis_command_mode_writes_its_metrics_row_while_the_command_runs() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    std::fs::create_dir_all(w.cache()).expect("cache dir");
    let out = ff(&w, &s, "lock-acquire")
        .args(["lk", "--", "sh", "-c", &waits_for_its_row(&w)])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let log = std::fs::read_to_string(w.metrics_log()).expect("metrics log");
    assert_eq!(log.matches(",lock_acquire,").count(), 1, "{log}");
}

/// On Redis too, `lock-acquire`'s plain calls (its hand parser) answer as
/// clap's do: the command's status with a fencing token in its
/// environment, a busy lock, a server that is not there.
#[test]
fn redis_lock_acquire_fast_path_answers_as_clap_does() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let url = s.url();
    let closed = format!("redis://127.0.0.1:{}", free_port());
    let (url_eq, closed_eq) = (format!("--backend={url}"), format!("--backend={closed}"));
    let run = "test -n \"$FFKIT_LOCK_FENCE\" && echo fenced; exit 3";
    let cmd = || {
        let mut c = w.cmd("lock-acquire");
        env(&mut c, &s);
        c.env_remove("FFKIT_BACKEND");
        c
    };
    assert_fast_path_answers_as_clap(
        &cmd,
        &[
            (
                &["--backend", &url, "lk", "--", "sh", "-c", run],
                &[&url_eq, "lk", "--", "sh", "-c", run],
            ),
            (
                &["--backend", &url, "-w", "1", "lk", "--", "/nonexistent/cmd"],
                &[&url_eq, "--timeout=1", "lk", "--", "/nonexistent/cmd"],
            ),
            (
                &["--backend", &closed, "lk", "--", "true"],
                &[&closed_eq, "lk", "--", "true"],
            ),
        ],
    );
    let mut holder = cmd();
    holder.args([
        "--backend",
        &url,
        "lk",
        "--",
        "sh",
        "-c",
        "echo locked; read x",
    ]);
    let mut holder = spawn_locked(holder);
    assert_fast_path_answers_as_clap(
        &cmd,
        &[(
            &["--backend", &url, "-w", "0", "lk", "--", "true"],
            &[&url_eq, "--timeout=0", "lk", "--", "true"],
        )],
    );
    drop(holder.stdin.take());
    let _ = holder.wait();
}

#[test]
fn redis_command_mode_counts_exactly_and_fences_grow() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    // Each command also logs its fencing token: under the lock the tokens
    // must come out strictly increasing in the order the holders ran.
    let body = "$FF lock-acquire -q cnt -c 'read n < c; echo $((n+1)) > c; echo $FFKIT_LOCK_FENCE >> fences'";
    assert_eq!(contention(&w, &s, body), (PROCS * INCREMENTS).to_string());
    let fences: Vec<u64> = std::fs::read_to_string(w.path().join("fences"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(fences.len(), PROCS * INCREMENTS);
    assert!(
        fences.windows(2).all(|p| p[0] < p[1]),
        "fencing tokens must grow with every acquisition"
    );
    // Every lock was released: nothing but the counter and a lapsing
    // wake-up list remains.
    let held: Option<String> = s.query(redis::cmd("GET").arg("ffkit:lock:{cnt}"));
    assert_eq!(held, None);
}

// Named pairs under contention: one body for every backend,
// lock.rs `named_pairs_count_exactly_under_contention_on_every_backend`.

fn status_json(w: &World, s: &Server, name: &str) -> serde_json::Value {
    let out = ff(w, s, "lock-status")
        .args(["--json", name])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Whether a process with this pid and /proc start time still runs.
fn running(pid: u32, start: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        let rest = &st[st.rfind(')').unwrap() + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(19) == Some(&start) && f.first() != Some(&"Z")
    })
}

fn start_of(pid: u32) -> String {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &st[st.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().to_string()
}

/// A command-mode holder whose command writes its pid to `pidfile` and
/// sleeps; returns the ffkit child once the command runs.
fn command_holder(w: &World, s: &Server, name: &str, pidfile: &Path) -> Child {
    command_holder_running(w, s, name, pidfile, "exec sleep 60")
}

/// [`command_holder`] whose command runs `rest` after writing its pid.
fn command_holder_running(w: &World, s: &Server, name: &str, pidfile: &Path, rest: &str) -> Child {
    let mut c = ff(w, s, "lock-acquire");
    c.args([name, "-c"])
        .arg(format!("echo $$ > {}; {rest}", pidfile.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    wait_until("the command to start", 20, || {
        std::fs::read_to_string(pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    child
}

fn pid_in(p: &Path) -> u32 {
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

#[test]
fn redis_sigkilled_command_holder_stops_its_command_and_hands_over_within_the_lease() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let pidfile = w.path().join("cmd.pid");
    let mut holder = command_holder(&w, &s, "k", &pidfile);
    let cmd_pid = pid_in(&pidfile);
    let cmd_start = start_of(cmd_pid);
    let t0 = Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The guard stops the command at once: two holders never run together.
    wait_until("the orphaned command to be stopped", 20, || {
        !running(cmd_pid, &cmd_start)
    });
    let out = ff(&w, &s, "lock-acquire")
        .args(["-w", "30", "k", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    // The lease (6 s) lapsed; generous bound for a loaded machine.
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

/// SIGKILL to ffkit's whole process group (`kill -9 %1`, a CI runner ending
/// a job) does not take the guard along: it has a group of its own, so it
/// still stops the command (in its own group too) before the lease lapses.
#[test]
fn redis_sigkill_of_the_holders_whole_group_still_stops_its_command() {
    use std::os::unix::process::CommandExt;
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let pidfile = w.path().join("cmd.pid");
    let mut c = ff(&w, &s, "lock-acquire");
    c.args(["k", "-c"])
        .arg(format!("echo $$ > {}; exec sleep 60", pidfile.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut holder = c.spawn().unwrap();
    wait_until("the command to start", 20, || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    let cmd_pid = pid_in(&pidfile);
    let cmd_start = start_of(cmd_pid);
    let group = rustix::process::Pid::from_child(&holder);
    rustix::process::kill_process_group(group, rustix::process::Signal::KILL).unwrap();
    holder.wait().unwrap();
    wait_until(
        "the command of a group-killed holder to be stopped",
        20,
        || !running(cmd_pid, &cmd_start),
    );
}

/// ffkit SIGKILLed the instant its command has started, before it could
/// do anything more (issue 24): the command, started in the guard's group
/// with the guard armed beforehand, is still stopped, and so never runs
/// beside the next holder. strace holds ffkit in the spawn's system call
/// (5 s before it returns) while the command kills ffkit, its parent: the
/// widest possible gap between the spawn and anything ffkit does after it.
/// Before, the guard was armed only after the spawn returned, so the
/// command ran on past the lease, beside the next holder.
#[test]
fn redis_holder_sigkilled_as_its_command_starts_still_has_it_stopped() {
    if !need("strace", "holding ffkit in its spawn") {
        return;
    }
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let pidfile = w.path().join("cmd.pid");
    let mut c = Command::new("strace");
    w.isolate(&mut c);
    env(&mut c, &s);
    c.args(["-q", "-o", "/dev/null", "-e", "trace=clone3,vfork"])
        .args(["-e", "inject=clone3,vfork:delay_exit=5000000", "--"])
        .arg(bin())
        .args(["lock-acquire", "k", "-c"])
        .arg(format!(
            "echo $$ > {}; kill -9 $PPID; exec sleep 30",
            pidfile.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let st = c.status().unwrap();
    assert!(!st.success(), "ffkit was not SIGKILLed: {st:?}");
    let cmd_pid = pid_in(&pidfile);
    // Gone already (stopped and reaped) is what the test wants to see.
    let stat = std::fs::read_to_string(format!("/proc/{cmd_pid}/stat")).ok();
    let start = stat.map(|_| start_of(cmd_pid)).unwrap_or_default();
    // The next holder gets the lock once the lease (6 s) lapses: by then
    // the first command must be gone.
    let out = ff(&w, &s, "lock-acquire")
        .args(["-w", "30", "k", "--", "true"])
        .output()
        .unwrap();
    let alive = !start.is_empty() && running(cmd_pid, &start);
    if alive {
        // Our own descendant (same pid and start time): do not leave it.
        let pid = rustix::process::Pid::from_raw(cmd_pid as i32).unwrap();
        if let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            && running(cmd_pid, &start)
        {
            let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
        }
    }
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        !alive,
        "the command outlived its lease: two holders ran at once"
    );
}

/// A lock round waits for no guard (docs/redis.md, "Command mode"): the
/// guard process is started while the acquisition is on its way (between
/// the request and its reply), ffkit neither signals it nor waits for it,
/// and it exits by itself, with 0, after ffkit (which left no command
/// running). Before, it was started after the command and SIGKILLed and
/// reaped at the end of every round. Traced with strace.
#[test]
fn redis_lock_round_starts_its_guard_during_the_acquisition_and_never_waits_for_it() {
    if !need("strace", "the system calls of a lock round") {
        return;
    }
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let log = w.path().join("trace");
    let mut c = Command::new("strace");
    w.isolate(&mut c);
    env(&mut c, &s);
    c.args(["-f", "-q", "-e", "signal=none", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=sendto,recvfrom,clone,clone3,setpgid,kill,tgkill,wait4,waitid,exit,exit_group",
            "--",
        ])
        .arg(bin())
        .args(["lock-acquire", "g", "--", "true"]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let t = std::fs::read_to_string(&log).unwrap();
    let pid_of = |l: &str| l.split_whitespace().next().unwrap_or("").to_string();
    let ffkit = pid_of(t.lines().next().unwrap_or(""));
    let mine: Vec<&str> = t.lines().filter(|l| pid_of(l) == ffkit).collect();
    let at = |what: &dyn Fn(&str) -> bool| mine.iter().position(|l| what(l));
    let sent = at(&|l| l.contains("sendto(") && l.contains("EVALSHA")).expect("acquire sent");
    let read = at(&|l| l.contains("recvfrom")).expect("reply read");
    let cloned = at(&|l| l.contains("flags=CLONE_VM|SIGCHLD")).expect("guard started");
    assert!(sent < cloned && cloned < read, "{t}");
    let guard = t
        .lines()
        .find(|l| pid_of(l) != ffkit && l.contains(" exit(0)"))
        .map(pid_of)
        .expect("the guard ends with exit(0)");
    // ffkit puts the guard in a group of its own while the acquisition is
    // still on its way, and the command joins that group: the spawn knows
    // the group to stop before the command exists.
    // strace splits the call when the guard's own setpgid runs at the
    // same moment (`setpgid(G, G <unfinished ...>`, then `<... setpgid
    // resumed>) = 0`): the result is on whichever line ends the call.
    let grouped = at(&|l| l.contains(&format!("setpgid({guard}, {guard}")))
        .expect("the guard's group set by ffkit");
    let result = if mine[grouped].contains("<unfinished") {
        mine[grouped..]
            .iter()
            .find(|l| l.contains("<... setpgid resumed>"))
            .expect("the setpgid's result")
    } else {
        &mine[grouped]
    };
    assert!(result.ends_with("= 0"), "{t}");
    // musl's posix_spawn is a clone with CLONE_VFORK (glibc's is clone3 or
    // vfork); a glibc build forks the command (`fsutil::as_callers_command`:
    // glibc's posix_spawn ignores signals 32 and 33 in the child), a clone
    // with CLONE_CHILD_SETTID. The shipped build may link either.
    let spawned = at(&|l| {
        l.contains("clone3(")
            || l.contains("vfork(")
            || l.contains("CLONE_VFORK")
            || l.contains("CLONE_CHILD_SETTID")
    })
    .expect("spawn");
    assert!(
        cloned < grouped && grouped < read && grouped < spawned,
        "{t}"
    );
    assert!(
        t.lines().any(|l| pid_of(l) != ffkit
            && pid_of(l) != guard
            && l.contains(&format!("setpgid(0, {guard})"))
            && l.ends_with("= 0")),
        "the command joins the guard's group: {t}"
    );
    assert!(!mine.iter().any(|l| l.contains("kill(")), "{t}");
    assert!(
        !mine
            .iter()
            .any(|l| (l.contains("wait4(") || l.contains("waitid(")) && l.contains(&guard)),
        "{t}"
    );
    let exited = |p: &str| {
        t.lines()
            .position(|l| pid_of(l) == p && l.contains("+++ exited with 0 +++"))
    };
    let (Some(f), Some(g)) = (exited(&ffkit), exited(&guard)) else {
        panic!("{t}");
    };
    assert!(f < g, "the guard outlives ffkit: {t}");
}

#[test]
fn redis_sigkilled_named_holder_lapses_within_the_lease() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let mut owner = Command::new("sleep").arg("120").spawn().unwrap();
    ff(&w, &s, "lock-acquire")
        .args(["--owner", &owner.id().to_string(), "n"])
        .assert()
        .success();
    let st = status_json(&w, &s, "n");
    assert_eq!(st["state"], "held", "{st}");
    assert_eq!(st["pid"], owner.id(), "{st}");
    let hpid = st["holder_pid"].as_u64().unwrap() as u32;
    let hstart = start_of(hpid);
    // The holder is ours (started by our ffkit); the pidfd makes the kill
    // race-free against pid reuse.
    let pid = rustix::process::Pid::from_raw(hpid as i32).unwrap();
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    assert!(running(hpid, &hstart));
    rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL).unwrap();
    let t0 = Instant::now();
    let out = ff(&w, &s, "lock-acquire")
        .args(["-w", "30", "n", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let _ = owner.kill();
    let _ = owner.wait();
}

#[test]
fn redis_named_lock_is_released_when_its_owner_dies() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let mut owner = Command::new("sleep").arg("120").spawn().unwrap();
    ff(&w, &s, "lock-acquire")
        .args(["--owner", &owner.id().to_string(), "o"])
        .assert()
        .success();
    // Another owner may not release it; a second acquire by the same owner is refused.
    ff(&w, &s, "lock-release").arg("o").assert().code(5);
    ff(&w, &s, "lock-acquire")
        .args(["--owner", &owner.id().to_string(), "o"])
        .assert()
        .code(5);
    owner.kill().unwrap();
    owner.wait().unwrap();
    // The holder watches its owner through a pidfd and releases at once,
    // well before the 6 s lease would lapse.
    wait_until("the lock to be released", 20, || {
        status_json(&w, &s, "o")["state"] == "free"
    });
    let held: Option<String> = s.query(redis::cmd("GET").arg("ffkit:lock:{o}"));
    assert_eq!(held, None);
}

#[test]
fn redis_waiter_is_woken_by_the_release_and_times_out_with_6() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let owner = Command::new("sleep").arg("120").spawn().unwrap();
    let o = owner.id().to_string();
    ff(&w, &s, "lock-acquire")
        .args(["--owner", &o, "wk"])
        .assert()
        .success();
    let out = ff(&w, &s, "lock-acquire")
        .args(["-w", "0.3", "wk", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("timed out"), "{}", stderr_of(&out));
    ff(&w, &s, "lock-acquire")
        .args(["-n", "wk", "--", "true"])
        .assert()
        .code(5);
    // A named waiter with a 30 s backoff step gets the lock through the
    // release's wake-up: it pops the wake-up list, which would otherwise
    // still hold the release's entry (it lapses after 10 s).
    let owner2 = Command::new("sleep").arg("120").spawn().unwrap();
    let mut waiter = ff(&w, &s, "lock-acquire");
    waiter
        .args([
            "-w",
            "60",
            "--verbose",
            "--owner",
            &owner2.id().to_string(),
            "wk",
        ])
        .env("LOCK_BACKOFF_INITIAL", "30")
        .env("LOCK_BACKOFF_MAX", "30")
        .stderr(Stdio::piped());
    let mut waiter = waiter.spawn().unwrap();
    let mut err = BufReader::new(waiter.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("waiting for lock wk"), "{line}");
    ff(&w, &s, "lock-release")
        .args(["--owner", &o, "wk"])
        .assert()
        .success();
    let st = waiter.wait().unwrap();
    assert!(st.success());
    let left: i64 = s.query(redis::cmd("LLEN").arg("ffkit:lock:{wk}:wake"));
    assert_eq!(left, 0, "the waiter took the wake-up");
    assert_eq!(status_json(&w, &s, "wk")["pid"], owner2.id());
    for mut o in [owner, owner2] {
        let _ = o.kill();
        let _ = o.wait();
    }
}

/// Runs `c` and returns (exit code, stderr, elapsed).
fn timed(mut c: Command) -> (Option<i32>, String, Duration) {
    let t0 = Instant::now();
    let out = c.output().unwrap();
    (out.status.code(), stderr_of(&out), t0.elapsed())
}

#[test]
fn redis_killed_server_fails_every_call_within_the_timeout() {
    let Some(mut s) = Server::start() else { return };
    let w = World::new();
    let pidfile = w.path().join("cmd.pid");
    let termfile = w.path().join("got-term");
    // The command notes the SIGTERM that stops it (and would exit at once
    // on it; the SIGKILL after the grace period is the fallback).
    let mut holder = command_holder_running(
        &w,
        &s,
        "dead",
        &pidfile,
        &format!(
            "trap 'echo > {}; exit 0' TERM; while :; do sleep 0.1; done",
            termfile.display()
        ),
    );
    let cmd_pid = pid_in(&pidfile);
    let cmd_start = start_of(cmd_pid);
    s.kill9();
    // The running holder cannot renew: it stops its command and exits 9.
    let err = BufReader::new(holder.stderr.take().unwrap())
        .lines()
        .map_while(|l| l.ok())
        .collect::<Vec<_>>()
        .join("\n");
    let st = holder.wait().unwrap();
    assert_eq!(st.code(), Some(9), "{err}");
    assert!(err.contains("lease renewal failed"), "{err}");
    assert!(!running(cmd_pid, &cmd_start), "command still running");
    assert!(termfile.exists(), "the command was sent SIGTERM first");
    for (applet, args, code) in [
        ("lock-acquire", vec!["x", "--", "true"], 9),
        ("lock-acquire", vec!["named"], 9),
        ("lock-release", vec!["named"], 9),
        ("lock-status", vec!["x"], 9),
    ] {
        let mut c = ff(&w, &s, applet);
        c.args(&args);
        let (got, err, took) = timed(c);
        assert_eq!(got, Some(code), "{applet} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("backend redis://127.0.0.1"), "{err}");
        assert!(took < Duration::from_secs(10), "{applet}: {took:?}");
    }
}

#[test]
fn redis_paused_server_times_out_instead_of_hanging() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let _: String = s.query(redis::cmd("CLIENT").arg("PAUSE").arg(30_000).arg("ALL"));
    for (applet, args) in [
        ("lock-status", vec!["p"]),
        ("lock-acquire", vec!["p", "--", "true"]),
    ] {
        let mut c = ff(&w, &s, applet);
        c.args(&args).env("FFKIT_BACKEND_TIMEOUT", "0.5");
        let (got, err, took) = timed(c);
        assert_eq!(got, Some(9), "{applet}: {err}");
        assert!(err.contains("timed out after 0.5s"), "{err}");
        assert!(took < Duration::from_secs(20), "{applet} hung: {took:?}");
    }
}

#[test]
fn redis_restart_without_persistence_loses_locks_and_fences_still_grow() {
    let Some(mut s) = Server::start() else { return };
    let w = World::new();
    let fence = |w: &World, s: &Server| -> u64 {
        let out = ff(w, s, "lock-acquire")
            .args(["r", "-c", "echo $FFKIT_LOCK_FENCE"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        parse_u64(&out.stdout)
    };
    let before = fence(&w, &s);
    let mut owner = Command::new("sleep").arg("120").spawn().unwrap();
    ff(&w, &s, "lock-acquire")
        .args(["--owner", &owner.id().to_string(), "r"])
        .assert()
        .success();
    let hpid = status_json(&w, &s, "r")["holder_pid"].as_u64().unwrap() as u32;
    let hstart = start_of(hpid);
    s.kill9();
    assert!(s.spawn(), "restart");
    // Documented: the lock is gone with the restart and anyone may take it;
    // the old holder's next renewal finds its token gone and it renews no
    // more, and it ends with its owner (a release by the owner would say
    // "lost": redis_faults.rs).
    assert_eq!(status_json(&w, &s, "r")["state"], "free");
    let after = fence(&w, &s);
    assert!(after > before, "fence went back: {before} -> {after}");
    wait_until("the old holder to give up", 20, || stopped_renewing(hpid));
    assert!(running(hpid, &hstart));
    let _ = owner.kill();
    let _ = owner.wait();
    wait_until("the old holder to end with its owner", 20, || {
        !running(hpid, &hstart)
    });
}

/// Whether a Redis named pair's holder process `pid` has stopped renewing
/// (it found its lock lost): it then waits for its owner or a release
/// with no timeout, a `ppoll` whose timeout argument is NULL, where a
/// renewing holder's has one.
pub fn stopped_renewing(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first().and_then(|n| n.parse().ok()) == Some(libc::SYS_ppoll) && f.get(3) == Some(&"0x0")
    })
}

/// A bash script waiting for a Redis lock in `acquire_critical_lock` runs
/// a trapped TERM sent to it alone at once, and the call returns 143
/// holding nothing, with the builtin as without it, as the local wait does
/// (docs/redis.md, "The shell wrappers"). The wait was the binary run as a
/// foreground command, and bash holds a trapped signal back until that
/// ends: the trap ran only at LOCK_TIMEOUT (30 s here), the call exit 6.
#[test]
fn redis_a_trapped_signal_ends_a_shell_functions_wait_at_once() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let mut holder = ff(&w, &s, "lock-acquire")
        .args(["T", "--", "sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the holder to hold T", 30, || {
        ff(&w, &s, "lock-status")
            .arg("T")
            .output()
            .unwrap()
            .status
            .success()
    });
    let script = format!(
        r#". "{src}/shell/ffkit.bash"
FFKIT_BACKEND={url}
trap 'echo trapped' TERM
rc=0; acquire_critical_lock T || rc=$?
echo "rc=$rc"
"#,
        src = env!("CARGO_MANIFEST_DIR"),
        url = s.url()
    );
    for builtin in [None, Some("off")] {
        let mut c = Command::new("bash");
        w.isolate(&mut c);
        c.env("FFKIT_BIN", bin())
            .env("FFKIT_LOCK_LEASE", "6")
            .env("LOCK_TIMEOUT", "30")
            .env_remove("FFKIT_BUILTIN")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(b) = builtin {
            c.env("FFKIT_BUILTIN", b);
        }
        let waiter = c.spawn().unwrap();
        wait_until("the waiter's BLPOP", 30, || {
            let clients: String = s.query(redis::cmd("CLIENT").arg("LIST"));
            clients.contains("cmd=blpop")
        });
        let t0 = Instant::now();
        let st = Command::new("kill")
            .args(["-TERM", &waiter.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let out = output_of_within(waiter, Duration::from_secs(10));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "trapped\nrc=143\n",
            "FFKIT_BUILTIN={builtin:?} after {:?}: {}",
            t0.elapsed(),
            stderr_of(&out)
        );
        // The holder still holds it; the waiter left nothing behind.
        let st = ff(&w, &s, "lock-status").arg("T").output().unwrap();
        assert!(
            String::from_utf8_lossy(&st.stdout).contains(&format!("by pid {}", holder.id())),
            "{}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Waits for `child` to end, killing it (and failing) after `limit`.
fn output_of_within(mut child: Child, limit: Duration) -> std::process::Output {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running {limit:?} after the signal");
        }
        sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// `ffkit lock-acquire NAME` typed in a `( )`, `$( )` or pipeline stage of
/// bash holds the lock for the shell on Redis too, with the builtin as
/// without it (docs/shell.md, "Locks": bash execs the binary in place of
/// the subshell, and the builtin hands it `--owner` the subshell's
/// parent). On a remote backend the builtin used to start the binary from
/// the subshell as it was: the lock was the subshell's, and its holder
/// released it as soon as the subshell exited.
#[test]
fn redis_ffkit_lock_acquire_in_a_subshell_holds_for_the_shell_with_the_builtin_too() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    w.link("ffkit");
    let script = format!(
        r#"set -e
. "{src}/shell/ffkit.bash"
export FFKIT_BACKEND={url}
( ffkit lock-acquire q1 )
x=$(ffkit lock-acquire q2)
ffkit lock-acquire q3 | cat
( ffkit lock-acquire --backend "$FFKIT_BACKEND" q4 )
for l in q1 q2 q3 q4; do
    st=$("$FFKIT_BIN" lock-status "$l") || {{ echo "$l: not held" >&2; exit 1; }}
    case $st in *"by pid $$ "*) ;; *) echo "$l: $st" >&2; exit 1;; esac
done
for l in q1 q2 q3 q4; do ffkit lock-release "$l"; done
"#,
        src = env!("CARGO_MANIFEST_DIR"),
        url = s.url()
    );
    for builtin in [None, Some("off")] {
        let mut c = Command::new("bash");
        w.isolate(&mut c);
        c.env("FFKIT_BIN", bin())
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", w.path().join("bin").display()),
            )
            .env("FFKIT_LOCK_LEASE", "6")
            .env_remove("FFKIT_BUILTIN")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null());
        if let Some(b) = builtin {
            c.env("FFKIT_BUILTIN", b);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "FFKIT_BUILTIN={builtin:?}: {}",
            stderr_of(&out)
        );
    }
}

/// `local` with blanks around it (` local`, `local `, a tab), and `LOCAL`
/// under bash's `nocasematch` / zsh's `nocasematch`, get one answer on
/// every way in: exit 12 with one line (docs/redis.md, "Selecting it").
/// Before, the binary trimmed ` local` to local while the functions (the
/// builtin, its fallback, zsh) took it for a server's URL and dropped the
/// namespace's `--dir`: the entry landed in FFKIT_CACHE_DIR instead of the
/// repository's cache, and a lock was a holder process's named pair
/// instead of the shell's descriptor. And `_ffkit_remote`'s `[[ != local ]]`
/// obeyed nocasematch, so `LOCAL` ran the local files in the fallback
/// where the binary refuses it.
#[test]
fn redis_local_is_local_only_as_written_on_every_way_in() {
    let r = crate::shell::Repo::new();
    let elsewhere = r.tmp.path().join("elsewhere");
    for value in [" local", "local ", "\tlocal", "LOCAL"] {
        let out = Command::new(bin())
            .env_clear()
            .env("HOME", r.tmp.path().join("home"))
            .env("FFKIT_CACHE_DIR", &elsewhere)
            .env("FFKIT_BACKEND", value)
            .arg("cache-size")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(12),
            "binary {value:?}: {}",
            stderr_of(&out)
        );
        assert_eq!(stderr_lines(&out).len(), 1, "{value:?}");
        let script = "shopt -s nocasematch 2>/dev/null || setopt nocasematch\n\
                      rc=0; write_cache_with_metadata k v 60 || rc=$?; echo \"w=$rc\"\n\
                      rc=0; acquire_critical_lock L || rc=$?; echo \"acq=$rc\"\n";
        let mut ways = vec![("bash", None), ("bash", Some("off"))];
        if have("zsh") {
            ways.push(("zsh", None));
        }
        for (shell, builtin) in ways {
            let mut c = r.sh(shell, script);
            c.env_remove("FFKIT_BUILTIN")
                .env("FFKIT_CACHE_DIR", &elsewhere)
                .env("FFKIT_BACKEND", value);
            if let Some(b) = builtin {
                c.env("FFKIT_BUILTIN", b);
            }
            let out = c.output().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "w=12\nacq=12\n",
                "{shell} FFKIT_BUILTIN={builtin:?} FFKIT_BACKEND={value:?}: {}",
                stderr_of(&out)
            );
        }
        assert!(!elsewhere.exists(), "{value:?}: written to FFKIT_CACHE_DIR");
        assert!(
            !r.cache().exists(),
            "{value:?}: written to the repository's cache"
        );
    }
}

#[test]
fn redis_bad_urls_exit_12_and_unsupported_modes_exit_2() {
    let w = World::new();
    // rediss:// is a bad URL only in a build without TLS (redis_tls.rs).
    let tls_refused = (!cfg!(feature = "tls")).then_some("rediss://h:6380");
    for url in ["http://x", "redis://h:port"]
        .into_iter()
        .chain(tls_refused)
    {
        let out = w
            .cmd("lock-status")
            .args(["--backend", url, "x"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(12), "{url}");
        assert_eq!(stderr_of(&out).lines().count(), 1);
        let out = w
            .cmd("cache-size")
            .env("FFKIT_BACKEND", url)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(12), "{url}");
    }
    for args in [
        vec!["--fd", "0"],
        vec!["--dotlock", "x", "--", "true"],
        vec!["-s", "x", "--", "true"],
    ] {
        let out = w
            .cmd("lock-acquire")
            .args(["--backend", "redis://127.0.0.1:1"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
    }
    // `--backend local` overrides FFKIT_BACKEND.
    w.cmd("lock-status")
        .env("FFKIT_BACKEND", "redis://127.0.0.1:1")
        .env("FFKIT_LOCK_DIR", w.path().join("locks"))
        .args(["--backend", "local", "free-one"])
        .assert()
        .code(1);
}

#[test]
fn redis_shell_wrappers_follow_an_unexported_ffkit_backend() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let script = format!(
        r#"set -e
. "{src}/shell/ffkit.bash"
FFKIT_BACKEND={url}
FFKIT_BACKEND_TIMEOUT=2
FFKIT_LOCK_LEASE=6
write_cache_with_metadata k1 hello 0
v=$(read_cache_with_ttl k1)
[ "$v" = hello ] || {{ echo "read: $v" >&2; exit 1; }}
[ "$(get_cache_size)" = 5 ] || {{ echo "size: $(get_cache_size)" >&2; exit 1; }}
batch_write_cache $'b1:x\nb2:yy'
[ "$(batch_read_cache b2 nope b1)" = $'b2:yy\nb1:x' ] || {{ echo "batch read" >&2; exit 1; }}
FLOWFORGE_DEVELOPER=alice write_cache_with_metadata k2 abc 0
acquire_critical_lock deploy
echo "$$" > shell.pid
rc=0; acquire_critical_lock deploy 2>/dev/null || rc=$?
[ "$rc" = 5 ] || {{ echo "second acquire: $rc" >&2; exit 1; }}
"$FFKIT_BIN" lock-status --backend "$FFKIT_BACKEND" deploy > status.txt
release_critical_lock deploy
rc=0; release_critical_lock deploy 2>/dev/null || rc=$?
[ "$rc" = 4 ] || {{ echo "second release: $rc" >&2; exit 1; }}
acquire_session_lock bob s1
release_session_lock bob s1
"#,
        src = env!("CARGO_MANIFEST_DIR"),
        url = s.url()
    );
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.env("FFKIT_BIN", bin()).arg("-c").arg(&script);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let shell_pid = std::fs::read_to_string(w.path().join("shell.pid")).unwrap();
    let status = std::fs::read_to_string(w.path().join("status.txt")).unwrap();
    assert!(
        status.contains(&format!("by pid {}", shell_pid.trim())),
        "{status}"
    );
    let v: Option<String> = s.query(redis::cmd("GET").arg("ffkit:cache:{default}:v:k1"));
    assert_eq!(v.as_deref(), Some("hello"));
    let v: Option<String> = s.query(redis::cmd("GET").arg("ffkit:cache:{dev-alice}:v:k2"));
    assert_eq!(v.as_deref(), Some("abc"));
    let fence: Option<u64> =
        s.query(redis::cmd("GET").arg("ffkit:lock:{dev-bob/session/s1}:fence"));
    assert!(fence.is_some(), "the session lock lives in bob's namespace");
    // Nothing was written locally.
    assert!(!w.path().join(".flowforge/cache").exists());
}

/// A shell function's lock on Redis belongs to the shell that took it, a
/// subshell's own pid, not `$$` (docs/shell.md, "Locks"; docs/redis.md,
/// "The shell wrappers"), on every way in: the builtin, its fallback and
/// zsh. Before, the fallback passed `--owner $$`, the top shell's pid in
/// a `( )`, `$( )` or `&`: a lock a subshell took outlived it (the next
/// `( acquire_critical_lock x )` of a loop was exit 5, "already held by
/// this owner"), and a subshell released its shell's lock (0, where the
/// local lock answers 4 and stays held).
#[test]
fn redis_a_subshell_owns_its_own_lock_and_cannot_release_its_shells() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let script = format!(
        r#"set -e
. "{src}/shell/ffkit.bash"
FFKIT_BACKEND={url}
for i in 1 2; do ( acquire_critical_lock sub ); done
acquire_critical_lock top
rc=0; ( release_critical_lock top 2>/dev/null ) || rc=$?
[ "$rc" = 4 ] || {{ echo "( ) release: $rc" >&2; exit 1; }}
rc=0; x=$(release_critical_lock top 2>/dev/null) || rc=$?
[ "$rc" = 4 ] || {{ echo "\$( ) release: $rc" >&2; exit 1; }}
"$FFKIT_BIN" lock-status --backend "$FFKIT_BACKEND" top >/dev/null || {{ echo "top not held" >&2; exit 1; }}
release_critical_lock top
"#,
        src = env!("CARGO_MANIFEST_DIR"),
        url = s.url()
    );
    let mut ways = vec![("bash", None), ("bash", Some("off"))];
    if have("zsh") {
        ways.push(("zsh", None));
    }
    for (shell, builtin) in ways {
        let mut c = Command::new(shell);
        w.isolate(&mut c);
        c.env("FFKIT_BIN", bin())
            .env("FFKIT_LOCK_LEASE", "6")
            .env("LOCK_TIMEOUT", "20")
            .env_remove("FFKIT_BUILTIN")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null());
        if let Some(b) = builtin {
            c.env("FFKIT_BUILTIN", b);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{shell} FFKIT_BUILTIN={builtin:?}: {}",
            stderr_of(&out)
        );
        let held: bool = s.query(redis::cmd("EXISTS").arg("ffkit:lock:{top}"));
        assert!(!held, "{shell}: the shell's release freed it");
    }
}

/// The pids of the processes whose command line holds `needle` (read
/// from /proc; nothing is signalled).
fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// A shell killed while its lock function waits for a Redis lock leaves
/// no waiter behind, as a local wait does (docs/redis.md, "The shell
/// wrappers"): before, the binary waiting for the shell (`--owner PID`)
/// stayed, an orphan, until the lock was free or `LOCK_TIMEOUT`, then
/// printed "owner pid PID: no such process". The bash fallback's and the
/// builtin's asynchronous waiter, and zsh's foreground one.
#[test]
fn redis_a_shell_killed_while_waiting_leaves_no_waiter_behind() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let mut holder = ff(&w, &s, "lock-acquire")
        .args(["orphan", "--", "sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while !s.query::<bool>(redis::cmd("EXISTS").arg("ffkit:lock:{orphan}")) {
        assert!(Instant::now() < until, "the holder never took the lock");
        sleep(Duration::from_millis(20));
    }
    let mut ways = vec![("bash", None), ("bash", Some("off"))];
    if have("zsh") {
        ways.push(("zsh", None));
    }
    for (shell, builtin) in ways {
        let mut c = Command::new(shell);
        w.isolate(&mut c);
        env(&mut c, &s);
        c.env("FFKIT_BIN", bin())
            .env("LOCK_TIMEOUT", "60")
            .env_remove("FFKIT_BUILTIN")
            .arg("-c")
            .arg(format!(
                ". \"{}/shell/ffkit.bash\"; acquire_critical_lock orphan; echo got",
                env!("CARGO_MANIFEST_DIR")
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(b) = builtin {
            c.env("FFKIT_BUILTIN", b);
        }
        let mut sh = c.spawn().unwrap();
        let needle = format!("--owner {} ", sh.id());
        // Waiting: its BLPOP is on the server.
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let clients: String = s.query(redis::cmd("CLIENT").arg("LIST"));
            if clients.contains("cmd=blpop") && !pids_with(&needle).is_empty() {
                break;
            }
            assert!(Instant::now() < until, "{shell}: no waiter");
            sleep(Duration::from_millis(20));
        }
        // SAFETY: `sh` is this test's own child, not yet reaped, so its
        // pid is still its own.
        unsafe { libc::kill(sh.id() as libc::pid_t, libc::SIGTERM) };
        sh.wait().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while !pids_with(&needle).is_empty() {
            assert!(
                Instant::now() < until,
                "{shell} FFKIT_BUILTIN={builtin:?}: a waiter outlived its shell"
            );
            sleep(Duration::from_millis(20));
        }
    }
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Whether util-linux `script` (a pseudo-terminal) is here; SKIP, or FAIL on CI.
fn have_script() -> bool {
    crate::util::need("script", "the terminal test")
}

/// Runs `cmd` on a pseudo-terminal, feeding it `input` once `ready()`
/// holds; returns (status, output).
fn on_a_terminal(
    w: &World,
    s: &Server,
    cmd: &str,
    input: &[u8],
    mut ready: impl FnMut() -> bool,
) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    let mut c = Command::new("script");
    w.isolate(&mut c);
    env(&mut c, s);
    c.args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    wait_until("the command to own the terminal", 30, &mut ready);
    child.stdin.as_mut().unwrap().write_all(input).unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (child.wait().unwrap().code(), out)
}

/// Whether the process in `pidfile` runs `comm` and its process group is
/// its terminal's foreground group (/proc/PID/stat fields 5 and 8).
fn in_foreground(pidfile: &Path, comm: &str) -> bool {
    let Ok(pid) = std::fs::read_to_string(pidfile) else {
        return false;
    };
    let Ok(st) = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) else {
        return false;
    };
    let (Some(open), Some(close)) = (st.find('('), st.rfind(')')) else {
        return false;
    };
    let f: Vec<&str> = st[close + 1..].split_whitespace().collect();
    &st[open + 1..close] == comm && f.len() > 5 && f[2] == f[5]
}

#[test]
fn redis_command_mode_hands_the_terminal_to_the_command() {
    let Some(s) = Server::start() else { return };
    if !have_script() {
        return;
    }
    let w = World::new();
    let ff = bin().display().to_string();
    let pidfile = w.path().join("tty.pid");
    let p = pidfile.display().to_string();
    // The command (in its own process group) gets the terminal and can read it...
    let (code, out) = on_a_terminal(
        &w,
        &s,
        &format!("{ff} lock-acquire t -- sh -c 'echo $$ > {p}; read x; echo got:$x'"),
        b"hello\n",
        || in_foreground(&pidfile, "sh"),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("got:hello"), "{out}");
    std::fs::remove_file(&pidfile).unwrap();
    // ...and gets the terminal's Ctrl-C; the lock is released after it.
    let (code, out) = on_a_terminal(
        &w,
        &s,
        &format!("{ff} lock-acquire t -- sh -c 'echo $$ > {p}; exec sleep 60'"),
        b"\x03",
        || in_foreground(&pidfile, "sleep"),
    );
    assert_eq!(code, Some(130), "{out}");
    assert_eq!(status_json(&w, &s, "t")["state"], "free");
}

#[test]
fn redis_over_a_unix_socket_and_a_database_number() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    for url in [s.unix_url(), format!("{}?db=3", s.unix_url())] {
        let run = |applet: &str, args: &[&str]| {
            let mut c = w.cmd(applet);
            env(&mut c, &s);
            c.env("FFKIT_BACKEND", &url).args(args).output().unwrap()
        };
        let out = run("lock-acquire", &["u", "-c", "echo $FFKIT_LOCK_FENCE"]);
        assert!(out.status.success(), "{url}: {}", stderr_of(&out));
        let out = run("cache-write", &["uk", "v"]);
        assert!(out.status.success(), "{url}: {}", stderr_of(&out));
        assert_eq!(run("cache-read", &["uk"]).stdout, b"v");
    }
    // db 0 and db 3 are separate caches.
    let dbs: String = s.query(redis::cmd("INFO").arg("keyspace"));
    assert!(dbs.contains("db0:") && dbs.contains("db3:"), "{dbs}");
}

/// A URL part the connection would not use is exit 12, not dropped:
/// `redis://host:port?db=3` (redis-py's spelling) used to write to
/// database 0 without a word, and `unix://…?password=…` to connect without
/// the password.
#[test]
fn redis_url_parts_the_connection_would_not_use_exit_12() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    for url in [
        format!("{}?db=3", s.url()),
        format!("{}/?db=3", s.url()),
        format!("{}#insecure", s.url()),
        format!("{}?database=3", s.unix_url()),
        format!("{}?password=s3cret", s.unix_url()),
        // One of two databases would be dropped; no database is negative.
        format!("{}?db=2&db=3", s.unix_url()),
        format!("{}/-1", s.url()),
        // A password alone holding `#` or `?`: the URL's host would be the
        // text before it (looked up in DNS), the rest a fragment or query.
        s.url().replacen("redis://", "redis://x.invalid#s3cret@", 1),
        s.url().replacen("redis://", "redis://x.invalid?s3cret@", 1),
        s.url()
            .replacen("redis://", "redis://u:x.invalid#s3cret@", 1),
        s.url()
            .replacen("redis://", "redis+cluster://x.invalid#s3cret@", 1),
        // A user name without a password is never sent (AUTH takes a
        // password): redis-cli's password alone, `redis://PASSWORD@host`,
        // used to connect as the default user without a word.
        s.url().replacen("redis://", "redis://s3cret@", 1),
        s.url().replacen("redis://", "redis://bob:@", 1),
        s.url().replacen("redis://", "redis+cluster://s3cret@", 1),
        format!("{}?user=bob", s.unix_url()),
    ] {
        for (applet, args) in [
            ("cache-write", &["k", "v"][..]),
            ("lock-acquire", &["n", "-c", "true"]),
        ] {
            let mut c = w.cmd(applet);
            env(&mut c, &s);
            let out = c.env("FFKIT_BACKEND", &url).args(args).output().unwrap();
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(12), "{applet} {url}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
    let dbs: String = s.query(redis::cmd("INFO").arg("keyspace"));
    assert!(!dbs.contains("keys="), "something was written: {dbs}");
}

/// `redis://:@host`, an empty password alone (the `redis` crate sends
/// none), holds no secret: its `:` was taken for one, and every `:` of the
/// message became `***` (`redis***//******@127.0.0.1***PORT*** cannot
/// connect*** …`). Nothing listens on the port: no server needed.
#[test]
fn redis_an_empty_password_alone_leaves_the_message_readable() {
    let w = World::new();
    let port = free_port();
    let out = w
        .cmd("lock-status")
        .env("FFKIT_BACKEND", format!("redis://:@127.0.0.1:{port}"))
        .env("FFKIT_BACKEND_TIMEOUT", "2")
        .arg("x")
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(
        err.contains(&format!("@127.0.0.1:{port}: cannot connect: ")),
        "{err}"
    );
}

/// The `SigBlk:` and `SigIgn:` lines of a `grep` of /proc/self/status.
fn sig_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("SigBlk:") || l.starts_with("SigIgn:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn redis_command_mode_starts_the_command_as_the_caller_would_and_passes_term_on() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    // ffkit catches INT, QUIT, TERM, HUP and CHLD while the command runs
    // and blocks them between its waits: the command starts with the
    // mask and the dispositions a direct start from here would give it.
    let probe = ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"];
    let mut direct = Command::new(probe[0]);
    w.isolate(&mut direct);
    let direct = direct.args(&probe[1..]).output().unwrap();
    let via = ff(&w, &s, "lock-acquire")
        .arg("sig")
        .arg("--")
        .args(probe)
        .output()
        .unwrap();
    assert!(via.status.success(), "{}", stderr_of(&via));
    assert_eq!(
        sig_lines(&via).len(),
        2,
        "{}",
        String::from_utf8_lossy(&via.stdout)
    );
    assert_eq!(sig_lines(&via), sig_lines(&direct));
    // A signal ignored when ffkit starts (`nohup`, `trap '' HUP`) stays
    // ignored for the command, as in a direct start: it was caught (so
    // reset to its default in the command) when the suite ran under nohup.
    let ignoring = |what: &str| {
        let o = bash(
            &w,
            &s,
            &format!(
                "trap '' HUP TERM PIPE; exec {what} grep -E '^Sig(Blk|Ign):' /proc/self/status"
            ),
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        sig_lines(&o)
    };
    let direct = ignoring("");
    let ignored = |l: &String| {
        l.strip_prefix("SigIgn:\t")
            .and_then(|m| u64::from_str_radix(m, 16).ok())
            .is_some_and(|m| m & 0x5001 == 0x5001)
    };
    // SIGPIPE too: ffkit ignores it for itself and std's spawn reset it,
    // so the command got it at its default under `trap '' PIPE`.
    assert!(
        direct.iter().any(ignored),
        "HUP, PIPE and TERM ignored: {direct:?}"
    );
    assert_eq!(ignoring("\"$FF\" lock-acquire sig --"), direct);
    // A SIGTERM sent to ffkit reaches the command's process group; the
    // command's status is ffkit's and the lock is released.
    let pidfile = w.path().join("cmd.pid");
    let termfile = w.path().join("got-term");
    let trapped = w.path().join("trapped");
    let mut holder = command_holder_running(
        &w,
        &s,
        "sig",
        &pidfile,
        &format!(
            "trap 'echo > {}; exit 7' TERM; echo > {}; while :; do sleep 0.05; done",
            termfile.display(),
            trapped.display()
        ),
    );
    // The pid file is written before the trap is set: a TERM sent between
    // the two ended the command by the signal (143, not 7).
    wait_until("the command's TERM trap", 20, || trapped.exists());
    let pid = rustix::process::Pid::from_raw(holder.id() as i32).unwrap();
    // Our own unreaped child: the pid cannot have been recycled.
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let st = holder.wait().unwrap();
    assert_eq!(st.code(), Some(7));
    assert!(termfile.exists(), "the command got the SIGTERM");
    assert_eq!(status_json(&w, &s, "sig")["state"], "free");
}

/// A `MONITOR` connection: every command the server runs, in order.
struct Monitor(BufReader<std::net::TcpStream>, u32);

impl Monitor {
    fn new(s: &Server) -> Monitor {
        use std::io::Write;
        let mut t = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        t.write_all(b"MONITOR\r\n").unwrap();
        let mut m = Monitor(BufReader::new(t), 0);
        let mut ok = String::new();
        m.0.read_line(&mut ok).unwrap();
        assert_eq!(ok.trim(), "+OK");
        m
    }

    /// The commands clients sent (not those scripts ran) since the last
    /// call, by name: read up to a sentinel the oracle sends now.
    fn sent(&mut self, s: &Server) -> Vec<String> {
        self.1 += 1;
        let mark = format!("ffkit-test-mark-{}", self.1);
        let _: String = s.query(redis::cmd("ECHO").arg(&mark));
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            assert!(self.0.read_line(&mut l).unwrap() > 0, "MONITOR ended");
            if l.contains(&mark) {
                return out;
            }
            // +1733333333.123456 [0 127.0.0.1:5555] "EVALSHA" "…" …
            if l.contains(" lua] ") {
                continue;
            }
            if let Some(name) = l.split('"').nth(1) {
                out.push(name.to_ascii_uppercase());
            }
        }
    }
}

#[test]
fn redis_a_warm_call_is_one_command_per_round_trip() {
    let Some(s) = Server::start() else { return };
    let w = World::new();
    let mut m = Monitor::new(&s);
    let mut run = |applet: &str, args: &[&str]| {
        m.sent(&s);
        let out = ff(&w, &s, applet).args(args).output().unwrap();
        assert!(out.status.success(), "{applet}: {}", stderr_of(&out));
        m.sent(&s)
    };
    // Cold: the script is not cached on the server yet, so EVALSHA is
    // refused and EVAL follows (once per script and server start).
    let _: String = s.query(redis::cmd("SCRIPT").arg("FLUSH"));
    assert_eq!(run("cache-write", &["k", "v"]), ["EVALSHA", "EVAL"]);
    // Warm: one command per round trip, nothing at connect (no HELLO,
    // CLIENT SETINFO, AUTH or SELECT without a password or database).
    assert_eq!(run("cache-write", &["k", "v"]), ["EVALSHA"]);
    run("cache-read", &["k"]);
    assert_eq!(run("cache-read", &["k"]), ["EVALSHA"]);
    run("lock-acquire", &["l", "--", "true"]);
    // A lock round: the acquire and the release.
    assert_eq!(
        run("lock-acquire", &["l", "--", "true"]),
        ["EVALSHA", "EVALSHA"]
    );
}
