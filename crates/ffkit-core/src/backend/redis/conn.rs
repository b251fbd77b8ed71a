//! One connection to the Redis backend with every wait bounded, and the
//! mapping of Redis failures to ffkit's one-line errors.
//!
//! **One deadline per request.** A request — one command, one script call
//! or one pipeline of many commands — has one deadline,
//! `FFKIT_BACKEND_TIMEOUT` after it is sent, for *all* its replies: before
//! each socket read the socket's read timeout is set to the time left, so
//! a server that stops answering halfway through a pipeline of 300 replies
//! costs one timeout, not 300 (the `redis` crate's own pipeline reading
//! waits a full timeout per reply), and one that trickles a byte at a time
//! cannot stretch it either (a `rediss://` stream too: `tls.rs`). The first timeout or broken read
//! **drops the connection**: replies still in flight could otherwise be
//! taken for the answers to later requests, and every later request on it
//! fails at once with the same error. Connecting is the TCP connect (one
//! timeout), then the handshake with one deadline: the TLS handshake of a
//! `rediss://` target (so its failures say "cannot connect"), then AUTH
//! and SELECT as one request.
//!
//! **A Redis Cluster** (`redis+cluster://`) is the same machinery on one
//! node at a time, not the crate's `ClusterConnection` (one read timeout
//! per reply, its own sleeps and retries, no `MULTI`/`EXEC` pipelines):
//! the first seed that answers gives the slot map (`CLUSTER SLOTS`), and
//! each request goes to the master of its key's slot (`cmd_key`; keyless
//! ones to the home key's, [`Conn::set_home`]), connecting to it if needed;
//! a `MOVED` reply sends the request once more to the node it names. Every
//! key one script touches shares a hash tag, so it is on that one node.
//!
//! A failure is a lock failure (exit 9) for the lock applets and a general
//! failure (exit 1, like a local I/O error) for the cache applets
//! (docs/redis.md, "Timeouts and failures"). No message ever shows a
//! credential of the URL ([`Target::scrub`]).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use redis::{Cmd, ConnectionAddr, FromRedisValue, Pipeline, RedisError, Value};

use super::script::Lua;
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
    con: Option<Link>,
    /// On a cluster: the node `con` is connected to, the slot map (ranges
    /// of slots and their master), and the key that keyless commands
    /// (`TIME`, `SCRIPT LOAD`) are routed by ([`Conn::set_home`]).
    node: Option<ConnectionAddr>,
    slots: Vec<(u16, u16, ConnectionAddr)>,
    home: Option<Vec<u8>>,
    target: Target,
    timeout: Duration,
    area: Area,
    /// A bound on every request's deadline (command mode's renewals must
    /// end before the command has to be stopped), if any.
    cap: Option<Instant>,
    /// Why the connection was dropped (a timeout or a broken read), if it was.
    broken: Option<RedisError>,
    /// `rediss://`: the TLS client configuration (the CA or the system's
    /// roots), made at the first connect and kept for reconnects.
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// A connection: ffkit's own socket (plain TCP, a unix socket, or TLS
/// over TCP), read through [`Deadline`] and parsed by the `redis` crate's
/// [`redis::Parser`] (which keeps the bytes read past a reply for the
/// next). The crate's `Connection` took a read that a stop and continue of
/// ffkit cut short (Ctrl-Z and `fg`, SIGSTOP/SIGCONT, a debugger, a cgroup
/// freeze: on a socket with a receive timeout the kernel fails it with
/// EINTR, signal(7)) for a lost reply, and failed the call with
/// "Interrupted system call"; here the read just goes on, within the same
/// deadline. Its TLS stream waited up to a whole timeout per socket read
/// (`tls.rs`), so a `rediss://` connection is ffkit's own too.
struct Link {
    stream: Stream,
    parser: redis::Parser,
    /// Whether a request has been answered on it: only then can it have
    /// sat idle long enough for the server to close it.
    used: bool,
}

impl Link {
    /// Whether the server has closed this connection (or sent something
    /// unasked, which leaves the stream untrustworthy too) while it sat
    /// idle between requests. Asked without waiting (a TLS connection
    /// reads what is there: session tickets leave it usable).
    fn closed_by_peer(&mut self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let fd = match &self.stream {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.sock().as_fd(),
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN | PollFlags::RDHUP)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if !matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0) {
            return false;
        }
        match &mut self.stream {
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.closed_by_peer(),
            _ => true,
        }
    }
}

enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::Tls>),
}

impl Stream {
    /// One read by `deadline` (a read past it fails as timed out; a read
    /// cut short by EINTR is made again). A TLS stream may make several
    /// socket reads for one record, each waiting only the time left.
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
        use std::io::Read;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
            }
            let r = match self {
                Stream::Tcp(s) => s.set_read_timeout(Some(left)).and_then(|()| s.read(buf)),
                Stream::Unix(s) => s.set_read_timeout(Some(left)).and_then(|()| s.read(buf)),
                #[cfg(feature = "tls")]
                Stream::Tls(t) => t.read(buf, deadline),
            };
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// Sends `packed`, each write waiting at most `by` (a write cut short
    /// by EINTR is made again).
    fn write_all_within(&mut self, packed: &[u8], by: Duration) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Stream::Tcp(s) => s
                .set_write_timeout(Some(by))
                .and_then(|()| s.write_all(packed)),
            Stream::Unix(s) => s
                .set_write_timeout(Some(by))
                .and_then(|()| s.write_all(packed)),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.write_all(packed, by),
        }
    }
}

/// Reads `stream` until `deadline` ([`Stream::read_by`]).
struct Deadline<'a> {
    stream: &'a mut Stream,
    deadline: Instant,
}

impl std::io::Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.read_by(buf, self.deadline)
    }
}

impl Link {
    fn new(stream: Stream) -> Link {
        Link {
            stream,
            parser: redis::Parser::new(),
            used: false,
        }
    }

    /// Sends `packed`, each write waiting at most `by`.
    fn send(&mut self, packed: &[u8], by: Duration) -> redis::RedisResult<()> {
        Ok(self.stream.write_all_within(packed, by)?)
    }

    /// The next reply, by `deadline` (a timeout otherwise).
    fn recv(&mut self, deadline: Instant) -> redis::RedisResult<Value> {
        self.parser.parse_value(Deadline {
            stream: &mut self.stream,
            deadline,
        })
    }
}

/// The connect within one `timeout`, however many addresses the host
/// name has, the name's lookup included. The `redis` crate tries each
/// address with the whole timeout (a name with an A and an AAAA record, or
/// several A records, whose addresses all black-hole would cost that many
/// timeouts, and a lease renewal capped at two thirds of the lease could
/// run past the lease): here a name is resolved once and each address gets
/// the time left divided by the addresses still to try, so a refused
/// address hands its share on and the last one gets whatever is left. A
/// name that may go to DNS is looked up in a helper thread the call waits
/// for until the deadline ([`super::lookup`]): a resolver that does not
/// answer costs the call its timeout, not the resolver's own. A unix
/// socket is connected at once (as the crate does). `rediss://` is the
/// same TCP connect; the TLS handshake follows ([`Conn::connect_with`]).
fn tcp_connect(addr: &ConnectionAddr, timeout: Duration) -> redis::RedisResult<Stream> {
    let deadline = Instant::now() + timeout;
    let (host, port) = match addr {
        ConnectionAddr::Tcp(h, p) => (h.as_str(), *p),
        ConnectionAddr::Unix(path) => return unix_connect(path, deadline).map(Stream::Unix),
        // ffkit's targets are parsed to plain addresses (`Target::tls`
        // says TLS): nothing else is ever built.
        _ => {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a TCP or unix-socket address",
            )));
        }
    };
    let addrs = super::lookup::addresses(host, port, deadline)?;
    let n = u32::try_from(addrs.len()).unwrap_or(u32::MAX);
    let mut last = None;
    for (i, a) in (0u32..).zip(&addrs) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        match std::net::TcpStream::connect_timeout(a, left / (n - i)) {
            Ok(s) => {
                // A request goes out as soon as it is written. Over TLS the
                // handshake's last flight and the first request are
                // separate writes, and Nagle held the second until the
                // server's delayed ACK of the first: 40 ms per rediss://
                // call (hiredis and redis-rs set it too).
                let _ = s.set_nodelay(true);
                return Ok(Stream::Tcp(s));
            }
            Err(e) => last = Some(RedisError::from(e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "could not resolve to any addresses",
        ))
    }))
}

/// A unix socket's connect, by `deadline`. A server that does not accept
/// (stopped, hung, busy in a long script) lets its listen backlog fill:
/// each call that gave up left its connection queued there, and once it
/// is full the kernel holds a blocking connect until the server accepts,
/// forever past every timeout (`std`'s `UnixStream::connect`, before).
/// With a send timeout on the socket the kernel waits at most that long
/// and then answers EAGAIN, which is a timeout like any other.
fn unix_connect(
    path: &std::path::Path,
    deadline: Instant,
) -> redis::RedisResult<std::os::unix::net::UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, sockopt};
    let addr = SocketAddrUnix::new(path).map_err(std::io::Error::from)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(left))
            .map_err(std::io::Error::from)?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => return Ok(std::os::unix::net::UnixStream::from(fd)),
            // A stop and continue of ffkit (signal(7)): the wait goes on.
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Err(timed_out()),
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "timed out",
    ))
}

impl Conn {
    /// Connects with `timeout` for connect, read and write.
    pub fn open(target: &Target, timeout: Duration, area: Area) -> crate::Result<Conn> {
        Conn::open_until(target, timeout, area, None)
    }

    /// [`Conn::open`] with every wait, the connect's too, ending by `cap`.
    pub fn open_until(
        target: &Target,
        timeout: Duration,
        area: Area,
        cap: Option<Instant>,
    ) -> crate::Result<Conn> {
        let mut c = Conn {
            con: None,
            node: None,
            slots: Vec::new(),
            home: None,
            target: target.clone(),
            timeout,
            area,
            cap,
            broken: None,
            #[cfg(feature = "tls")]
            tls: None,
        };
        c.connect()?;
        Ok(c)
    }

    /// (Re)connects, replacing a dropped connection.
    pub fn reconnect(&mut self) -> crate::Result<()> {
        self.con = None;
        self.broken = None;
        self.connect()
    }

    fn connect(&mut self) -> crate::Result<()> {
        if !self.target.is_cluster() {
            return self.connect_node(None);
        }
        // A cluster: the first seed that answers gives the slot map.
        let mut last = None;
        for seed in self.target.seeds.clone() {
            match self
                .connect_node(Some(seed))
                .and_then(|()| self.load_slots())
            {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            self.con = None;
            self.broken = None;
        }
        Err(last.unwrap_or_else(|| self.fail("cannot connect", &timed_out())))
    }

    /// `CLUSTER SLOTS` from the connected node: the master of every range.
    fn load_slots(&mut self) -> crate::Result<()> {
        let what = "cannot read the cluster's slot map";
        let packed = redis::cmd("CLUSTER").arg("SLOTS").get_packed_command();
        let v = self
            .request(Route::Here, &packed, 1, Duration::ZERO)
            .and_then(|mut v| v.pop().unwrap_or(Value::Nil).extract_error())
            .map_err(|e| self.fail(what, &e))?;
        let here = match &self.node {
            Some(ConnectionAddr::Tcp(h, _)) => h.clone(),
            _ => String::new(),
        };
        let mut slots = Vec::new();
        if let Value::Array(ranges) = v {
            for r in ranges {
                let Value::Array(r) = r else { continue };
                let (Some(Value::Int(a)), Some(Value::Int(b)), Some(Value::Array(m))) =
                    (r.first(), r.get(1), r.get(2))
                else {
                    continue;
                };
                let host = match m.first() {
                    Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                    Some(Value::SimpleString(h)) => h.clone(),
                    _ => continue,
                };
                // "" or "?": the node does not know its own address; it
                // is the one asked.
                let host = if host.is_empty() || host == "?" {
                    here.clone()
                } else {
                    host
                };
                let (Some(Value::Int(port)), Ok(a), Ok(b)) =
                    (m.get(1), u16::try_from(*a), u16::try_from(*b))
                else {
                    continue;
                };
                let Ok(port) = u16::try_from(*port) else {
                    continue;
                };
                slots.push((a, b, ConnectionAddr::Tcp(host, port)));
            }
        }
        if slots.is_empty() {
            return Err(self.fail(
                what,
                &RedisError::from((
                    redis::ErrorKind::Client,
                    "no slot is served (is the cluster created?)",
                )),
            ));
        }
        self.slots = slots;
        Ok(())
    }

    /// On a cluster, routes keyless commands (`TIME`, `SCRIPT LOAD`) to
    /// the node of `key`'s slot: a cache's namespace, whose scripts must be
    /// loaded where they run.
    pub fn set_home(&mut self, key: &str) {
        self.home = Some(key.as_bytes().to_vec());
    }

    /// On a cluster, makes `con` the master of `key`'s slot (the home key's
    /// if `key` is `None`), connecting to it if it is another node. A
    /// single server: nothing.
    fn route(&mut self, key: Option<&[u8]>) -> redis::RedisResult<()> {
        if !self.target.is_cluster() {
            return Ok(());
        }
        let Some(key) = key.or(self.home.as_deref()) else {
            return Ok(());
        };
        let slot = key_slot(key);
        let Some(addr) = self
            .slots
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, n)| n.clone())
        else {
            // Not in the map: the node we have answers MOVED if it is not
            // its slot.
            return Ok(());
        };
        self.go_to(addr)
    }

    /// Connects to the cluster node `addr` unless `con` already is it.
    fn go_to(&mut self, addr: ConnectionAddr) -> redis::RedisResult<()> {
        if self.con.is_some() && self.node.as_ref() == Some(&addr) {
            return Ok(());
        }
        self.con = None;
        self.broken = None;
        // Its failure is the request's (a timeout says so, a refusal too).
        self.node = Some(addr);
        self.connect_with()
    }

    /// Connects to the target (`addr`: to that cluster node), with the
    /// failure worded for a message: a CA file that cannot be used is a
    /// configuration error (exit 12), the rest "cannot connect".
    fn connect_node(&mut self, addr: Option<ConnectionAddr>) -> crate::Result<()> {
        let what = "cannot connect";
        #[cfg(feature = "tls")]
        if self.target.is_tls() && self.tls.is_none() {
            // The CA file too is read by the connect's deadline (a pipe).
            let deadline = Instant::now() + self.timeout;
            let deadline = self.cap.map_or(deadline, |c| c.min(deadline));
            self.tls = Some(super::tls::config(&self.target, deadline, |e| {
                self.fail(what, e)
            })?);
        }
        self.node = addr;
        self.connect_with().map_err(|e| self.fail(what, &e))
    }

    /// The address connected to: the cluster node, else the target's.
    fn addr(&self) -> ConnectionAddr {
        self.node
            .clone()
            .unwrap_or_else(|| self.target.info.addr().clone())
    }

    /// The TCP connect (one timeout, within the cap), then the handshake
    /// as one request with one deadline: the TLS handshake of a
    /// `rediss://` target, and AUTH and SELECT.
    fn connect_with(&mut self) -> redis::RedisResult<()> {
        let capped = |d: Instant| self.cap.map_or(d, |c| c.min(d));
        let timeout =
            capped(Instant::now() + self.timeout).saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            return Err(timed_out());
        }
        let addr = self.addr();
        let stream = tcp_connect(&addr, timeout)?;
        let deadline = capped(Instant::now() + self.timeout);
        let stream = self.secure(stream, &addr, deadline)?;
        self.con = Some(Link::new(stream));
        // The `redis` crate would send AUTH and SELECT one by one, each
        // with the time left: they go below as one request instead, with
        // the handshake's deadline.
        let settings = self.target.info.redis_settings();
        let mut setup = redis::pipe();
        if let Some(pw) = settings.password() {
            let auth = setup.cmd("AUTH");
            if let Some(u) = settings.username() {
                auth.arg(u);
            }
            auth.arg(pw);
        }
        if settings.db() != 0 {
            setup.cmd("SELECT").arg(settings.db());
        }
        if !setup.is_empty() {
            // On this node, whatever its slots, by the handshake's deadline.
            let cap = self.cap.replace(deadline);
            let r = self.pipe_values(Route::Here, &setup);
            self.cap = cap;
            r?;
        }
        Ok(())
    }

    /// A `rediss://` target's TLS handshake on `stream`, by `deadline` (a
    /// certificate that does not verify is "cannot connect", never the
    /// failure of whatever came first); other streams as they are. A TLS
    /// target is never spoken to in the clear: without its configuration
    /// (made by [`Conn::connect_node`]) the connect fails.
    #[cfg(feature = "tls")]
    fn secure(
        &self,
        stream: Stream,
        addr: &ConnectionAddr,
        deadline: Instant,
    ) -> redis::RedisResult<Stream> {
        if !self.target.is_tls() {
            return Ok(stream);
        }
        match (&self.tls, stream, addr) {
            (Some(config), Stream::Tcp(sock), ConnectionAddr::Tcp(host, _)) => {
                let t = super::tls::Tls::connect(config, host, sock, deadline)?;
                Ok(Stream::Tls(Box::new(t)))
            }
            _ => Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a rediss:// target without its TLS configuration",
            ))),
        }
    }

    /// Without the `tls` feature no target is TLS (`Target::parse` refuses
    /// `rediss://`).
    #[cfg(not(feature = "tls"))]
    fn secure(
        &self,
        stream: Stream,
        _addr: &ConnectionAddr,
        _deadline: Instant,
    ) -> redis::RedisResult<Stream> {
        Ok(stream)
    }

    /// Bounds every later request's deadline by `cap` (`None`: no bound
    /// beyond the timeout).
    pub fn set_cap(&mut self, cap: Option<Instant>) {
        self.cap = cap;
    }

    /// The error for a failed call doing `what`.
    pub fn fail(&self, what: &str, e: &RedisError) -> Error {
        failure(self.area, &self.target, what, self.timeout, e)
    }

    /// Sends `packed` (`replies` commands) and reads their replies against
    /// one deadline: the timeout from when the request is sent (plus
    /// `extra`, the wait a blocking command asked the server for, and a
    /// second per 64 MiB sent, the server's own work on a large value), or
    /// the cap if sooner. Sending makes progress or fails within the
    /// timeout (a large value is the call's own work). The first failure
    /// drops the connection.
    fn request(
        &mut self,
        route: Route<'_>,
        packed: &[u8],
        replies: usize,
        extra: Duration,
    ) -> redis::RedisResult<Vec<Value>> {
        self.request_then(route, packed, replies, extra, None)
    }

    /// [`Conn::request`], running `meanwhile` (once) after the request is
    /// sent and before its replies are read: local work that then costs
    /// the call nothing but time it spends waiting for the server anyway.
    /// The request's deadline still runs from when it was sent. A request
    /// that cannot be sent does not run it.
    fn request_then(
        &mut self,
        route: Route<'_>,
        packed: &[u8],
        replies: usize,
        extra: Duration,
        meanwhile: Option<&mut dyn FnMut()>,
    ) -> redis::RedisResult<Vec<Value>> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        // A connection kept between requests (a lock holder's, renewing
        // every lease/3; cache-run's, across its command) is closed by a
        // server's idle `timeout`, a proxy, `CLIENT KILL` or a restart. A
        // request sent on it was lost ("connection lost"): the release
        // after a command left the lock held until its lease lapsed, and
        // cache-run's store failed. Such a close is seen before sending,
        // so nothing was sent and connecting again is safe.
        if self
            .con
            .as_mut()
            .is_some_and(|l| l.used && l.closed_by_peer())
        {
            self.con = None;
            self.connect_with()?;
        }
        let r = match route {
            Route::Here => self.exchange(packed, replies, extra, meanwhile),
            Route::Key(key) => self.route(key).and_then(|()| {
                let v = self.exchange(packed, replies, extra, meanwhile)?;
                // A slot that moved (a failover, a resharding) since the
                // map was read: once more on the node the reply names.
                match moved(&v) {
                    Some((slot, addr)) => {
                        self.slots.insert(0, (slot, slot, addr.clone()));
                        self.go_to(addr)?;
                        self.exchange(packed, replies, extra, None)
                    }
                    None => Ok(v),
                }
            }),
        };
        // Replies come back as values (a server's error reply too): an
        // `Err` here is the socket or the protocol, and the stream can no
        // longer be trusted.
        if let Err(e) = &r {
            self.broken = Some(e.clone());
            self.con = None;
        }
        r
    }

    fn exchange(
        &mut self,
        packed: &[u8],
        replies: usize,
        extra: Duration,
        meanwhile: Option<&mut dyn FnMut()>,
    ) -> redis::RedisResult<Vec<Value>> {
        let (timeout, cap) = (self.timeout, self.cap);
        let con = self.con.as_mut().ok_or_else(|| {
            RedisError::from(std::io::Error::from(std::io::ErrorKind::NotConnected))
        })?;
        let left = |d: Instant| {
            let l = d.saturating_duration_since(Instant::now());
            (!l.is_zero()).then_some(l).ok_or_else(timed_out)
        };
        let capped = |d: Instant| cap.map_or(d, |c| c.min(d));
        con.send(packed, left(capped(Instant::now() + timeout))?)?;
        let deadline =
            capped(Instant::now() + timeout + extra + server_work(packed.len(), replies));
        if let Some(f) = meanwhile {
            f();
        }
        warm_reply_parser();
        let mut out = Vec::with_capacity(replies);
        while out.len() < replies {
            match con.recv(deadline)? {
                Value::Push { .. } => continue,
                v => out.push(v),
            }
        }
        con.used = true;
        Ok(out)
    }

    /// One command.
    pub fn cmd<T: FromRedisValue>(&mut self, what: &str, cmd: &Cmd) -> crate::Result<T> {
        self.cmd_waiting(what, cmd, Duration::ZERO)
    }

    /// A command that may legitimately keep the server `wait` (a BLPOP's
    /// wait, a large value's GET: [`value_work`]): its deadline is
    /// stretched by `wait`, never more.
    pub fn cmd_waiting<T: FromRedisValue>(
        &mut self,
        what: &str,
        cmd: &Cmd,
        wait: Duration,
    ) -> crate::Result<T> {
        let r = self
            .request(Route::Key(cmd_key(cmd)), &cmd.get_packed_command(), 1, wait)
            .and_then(|mut v| v.pop().unwrap_or(Value::Nil).extract_error())
            .and_then(|v| redis::from_redis_value(v).map_err(RedisError::from));
        r.map_err(|e| self.fail(what, &e))
    }

    /// A pipeline: its replies as one array (a transaction: what `EXEC`
    /// returned), read against one deadline.
    pub fn pipe<T: FromRedisValue>(&mut self, what: &str, p: &Pipeline) -> crate::Result<T> {
        let key = p.cmd_iter().find_map(cmd_key);
        let r = self
            .pipe_values(Route::Key(key), p)
            .and_then(|v| redis::from_redis_value(Value::Array(v)).map_err(RedisError::from));
        r.map_err(|e| self.fail(what, &e))
    }

    /// A pipeline (not a transaction) whose replies are taken one by one:
    /// a command the server answers with an error (`WRONGTYPE` on a key
    /// changed behind ffkit's back) stays in its place as a
    /// `Value::ServerError` instead of failing the whole request.
    pub fn pipe_replies(&mut self, what: &str, p: &Pipeline) -> crate::Result<Vec<Value>> {
        debug_assert!(!p.is_transaction());
        let key = p.cmd_iter().find_map(cmd_key);
        let n = p.len();
        let r = self.request(Route::Key(key), &p.get_packed_pipeline(), n, Duration::ZERO);
        r.map_err(|e| self.fail(what, &e))
    }

    fn pipe_values(&mut self, route: Route<'_>, p: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        let tx = p.is_transaction();
        let n = p.len() + if tx { 2 } else { 0 };
        let mut v = self.request(route, &p.get_packed_pipeline(), n, Duration::ZERO)?;
        if !tx {
            return Value::Array(v).extract_error().map(|a| match a {
                Value::Array(items) => items,
                other => vec![other],
            });
        }
        // MULTI's OK, one QUEUED per command, then EXEC's array. A command
        // the server refused to queue aborts the transaction: say why once
        // (an out-of-memory batch would otherwise repeat it per line).
        let exec = v.pop().unwrap_or(Value::Nil);
        let refused: Vec<_> = v
            .into_iter()
            .filter_map(|x| match x {
                Value::ServerError(e) => Some(e),
                _ => None,
            })
            .collect();
        if let Some(first) = refused.first() {
            let detail = format!(
                "{}{}",
                first.details().unwrap_or_default(),
                if refused.len() > 1 {
                    format!(" (and {} more commands refused)", refused.len() - 1)
                } else {
                    String::new()
                }
            );
            return Err(RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort),
                "transaction aborted",
                format!("{} {detail}", first.code()),
            )));
        }
        match exec.extract_error()? {
            Value::Array(items) => Value::Array(items).extract_error().map(|a| match a {
                Value::Array(items) => items,
                other => vec![other],
            }),
            Value::Nil => Err(RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort),
                "transaction aborted",
            ))),
            other => Ok(vec![other]),
        }
    }

    /// Runs `script` with `nkeys` keys and then the arguments that `add`
    /// appends: `EVALSHA` with the digest computed at build time, and
    /// `EVAL` if the server does not have it cached (two requests, each
    /// with its deadline; once per script and server start).
    pub fn eval<T: FromRedisValue>(
        &mut self,
        what: &str,
        script: &Lua,
        nkeys: usize,
        add: impl Fn(&mut Cmd),
    ) -> crate::Result<T> {
        self.eval_then(what, script, nkeys, add, &mut || {})
    }

    /// [`Conn::eval`], running `meanwhile` once, while the first request
    /// is on its way (see [`Conn::request_then`]).
    pub fn eval_then<T: FromRedisValue>(
        &mut self,
        what: &str,
        script: &Lua,
        nkeys: usize,
        add: impl Fn(&mut Cmd),
        meanwhile: &mut dyn FnMut(),
    ) -> crate::Result<T> {
        self.eval_inner(what, script, nkeys, Duration::ZERO, add, Some(meanwhile))
    }

    /// [`Conn::eval`] of a script that does the work of many commands (a
    /// batch of reads) and may answer with many bytes: its deadline is
    /// stretched by `work` ([`reply_work`], [`value_work`]), never more.
    pub fn eval_working<T: FromRedisValue>(
        &mut self,
        what: &str,
        script: &Lua,
        nkeys: usize,
        work: Duration,
        add: impl Fn(&mut Cmd),
    ) -> crate::Result<T> {
        self.eval_inner(what, script, nkeys, work, add, None)
    }

    fn eval_inner<T: FromRedisValue>(
        &mut self,
        what: &str,
        script: &Lua,
        nkeys: usize,
        work: Duration,
        add: impl Fn(&mut Cmd),
        meanwhile: Option<&mut dyn FnMut()>,
    ) -> crate::Result<T> {
        let mut c = redis::cmd("EVALSHA");
        c.arg(script.sha()).arg(nkeys);
        add(&mut c);
        let key = cmd_key(&c);
        let first = self
            .request_then(Route::Key(key), &c.get_packed_command(), 1, work, meanwhile)
            .map(|mut v| v.pop().unwrap_or(Value::Nil));
        let v = match first {
            Ok(Value::ServerError(e)) if e.code() == "NOSCRIPT" => {
                let mut c = redis::cmd("EVAL");
                c.arg(script.source()).arg(nkeys);
                add(&mut c);
                self.request(Route::Key(key), &c.get_packed_command(), 1, work)
                    .map(|mut v| v.pop().unwrap_or(Value::Nil))
            }
            other => other,
        };
        let r = v
            .and_then(Value::extract_error)
            .and_then(|v| redis::from_redis_value(v).map_err(RedisError::from));
        r.map_err(|e| self.fail(what, &e))
    }

    /// Runs `source` with `EVAL` (no `EVALSHA` first): one request that
    /// runs whenever it reaches the server, even if it times out here and
    /// the server had never seen the script (an `EVALSHA` would then be
    /// refused with NOSCRIPT when the server gets to it).
    pub fn eval_source<T: FromRedisValue>(
        &mut self,
        what: &str,
        source: &str,
        nkeys: usize,
        add: impl Fn(&mut Cmd),
    ) -> crate::Result<T> {
        let mut c = redis::cmd("EVAL");
        c.arg(source).arg(nkeys);
        add(&mut c);
        self.cmd(what, &c)
    }

    pub fn label(&self) -> &str {
        &self.target.label
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The target this connection was opened on.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// Where a request goes: the connected node as it is (the handshake), or,
/// on a cluster, the master of the key's slot (none: the home key's).
#[derive(Clone, Copy)]
enum Route<'a> {
    Here,
    Key(Option<&'a [u8]>),
}

/// The key a command is routed by on a cluster: the first declared key of
/// a script, the pattern of a `SCAN … MATCH` (all of a namespace's keys
/// share its hash tag), or the first argument of a keyed command; `None`
/// for keyless ones (`TIME`, `PING`, `SCRIPT`, `AUTH`, `CLUSTER`).
fn cmd_key(cmd: &Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" => {
            let n: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if n == 0 { None } else { args.get(3).copied() }
        }
        b"SCAN" => args
            .iter()
            .position(|a| a.eq_ignore_ascii_case(b"MATCH"))
            .and_then(|i| args.get(i + 1).copied()),
        b"TIME" | b"PING" | b"SCRIPT" | b"AUTH" | b"SELECT" | b"CLUSTER" | b"MULTI" | b"EXEC" => {
            None
        }
        _ => args.get(1).copied(),
    }
}

/// A `MOVED slot host:port` reply among `v`: the slot and its new master.
fn moved(v: &[Value]) -> Option<(u16, ConnectionAddr)> {
    v.iter().find_map(|x| match x {
        Value::ServerError(e) if e.code() == "MOVED" => {
            let mut it = e.details()?.split_whitespace();
            let slot = it.next()?.parse().ok()?;
            let (host, port) = it.next()?.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((
                slot,
                ConnectionAddr::Tcp(host.to_string(), port.parse().ok()?),
            ))
        }
        _ => None,
    })
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag —
/// the part between the first `{` and the next `}`, if not empty — or of
/// the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&c| c == b'{').and_then(|i| {
        let rest = &key[i + 1..];
        let j = rest.iter().position(|&c| c == b'}')?;
        (j > 0).then(|| &rest[..j])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(key) {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// "redis://h:p: cannot connect: timed out after 2s" as the area's error.
fn failure(area: Area, target: &Target, what: &str, timeout: Duration, e: &RedisError) -> Error {
    // A cache script that found a namespace-wide key damaged answered so
    // before writing anything: damage (exit 10), not a failed call.
    if e.code() == Some(super::cache::DAMAGED_CODE) {
        return Error::Corruption(target.scrub(&format!(
            "{} {}",
            target.label,
            super::cache::namespace_damage_reply(e.detail().unwrap_or_default())
        )));
    }
    let text = e.to_string();
    let why = if e.is_timeout() {
        // A lookup that did not answer says so: the server may be fine.
        let lookup = if text.contains(super::lookup::TIMED_OUT) {
            " looking up the host name"
        } else {
            ""
        };
        format!(
            "timed out after {}s (FFKIT_BACKEND_TIMEOUT){lookup}",
            timeout.as_secs_f64()
        )
    } else if e.is_connection_refusal() {
        "connection refused (is the server running?)".to_string()
    } else if text.contains("NOAUTH") || text.contains("unauthenticated") {
        "the server requires a password (NOAUTH): give it in the URL, \
         redis://user:password@host:port (a password alone: redis://:password@host:port)"
            .to_string()
    } else if e.code() == Some("OOM") || text.starts_with("\"OOM\"") {
        // Redis's own text ends with the script's hash and line
        // (`script: 3f0…, on @user_script:346.`), which tell a user nothing.
        "the server is out of memory (OOM: maxmemory reached, eviction policy \
         noeviction) and refuses writes; reads are still answered"
            .to_string()
    } else if e.is_connection_dropped() {
        "connection lost".to_string()
    } else {
        one_line(&crate::error::os_texts(&text))
    };
    let msg = target.scrub(&format!("backend {}: {what}: {why}", target.label));
    match area {
        Area::Lock => Error::LockFailed(msg),
        Area::Cache => Error::General(msg),
    }
}

/// One line of at most 300 characters.
fn one_line(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

/// The server's own time for a value of `bytes` sent back (a `GET` of a
/// large value): what [`server_work`] allows for one sent, a second per
/// 64 MiB, for [`Conn::cmd_waiting`].
pub(crate) fn value_work(bytes: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / (64u64 << 20) as f64)
}

/// The server's own work on one request, added to its deadline: a second
/// per 64 MiB sent (a script storing a large value), and 50 µs per reply
/// (a transaction's EXEC answers once every command in it has run: 200,000
/// cache writes keep a server busy for seconds, silently). About what a
/// write script costs a server on loopback (median 23 µs, mean 78 µs under
/// load: docs/redis.md, "Timeouts and failures"); beyond it a batch
/// spends its own timeout.
fn server_work(bytes: usize, replies: usize) -> Duration {
    value_work(bytes as u64) + reply_work(replies)
}

/// The server's own time for `n` commands' worth of work (50 µs each):
/// the replies of a pipeline or a transaction, or the keys one script
/// reads ([`Conn::eval_working`]).
pub(crate) fn reply_work(n: usize) -> Duration {
    Duration::from_micros(50).saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The reply parser (the `redis` crate's, through `memchr`) asks the CPU
/// for its features the first time it runs: CPUID instructions, each a
/// trap to the hypervisor in a virtual machine (about 19 µs in all on the
/// benchmark VM; BENCHMARKS.md, "Issue 24's lock round, sixth pass"). The
/// first request asks instead, from std's detection cache, which memchr
/// reads, while it is on its way: the wait for the reply hides it. Later
/// calls read the cache (one atomic load).
fn warm_reply_parser() {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = std::arch::is_x86_feature_detected!("avx2");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_redis_cluster_slots() {
        // Values of `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(
            key_slot(b"ffkit:lock:{deploy}:fence"),
            key_slot(b"ffkit:lock:{deploy}")
        );
    }

    #[test]
    fn moved_replies_name_the_new_master() {
        let reply = |s: &str| redis::parse_redis_value(s.as_bytes()).unwrap();
        let v = [
            reply("+QUEUED\r\n"),
            reply("-MOVED 3999 127.0.0.1:6381\r\n"),
        ];
        assert_eq!(
            moved(&v),
            Some((3999, ConnectionAddr::Tcp("127.0.0.1".into(), 6381)))
        );
        let v6 = [reply("-MOVED 7 [::1]:7000\r\n")];
        assert_eq!(
            moved(&v6),
            Some((7, ConnectionAddr::Tcp("::1".into(), 7000)))
        );
        assert_eq!(moved(&[reply("-ERR MOVED nothing\r\n")]), None);
        assert_eq!(moved(&[reply("-ASK 1 h:1\r\n")]), None);
    }

    #[test]
    fn commands_route_by_their_key() {
        let mut c = redis::cmd("EVALSHA");
        c.arg("abc").arg(2).arg("k1").arg("k2").arg("a");
        assert_eq!(cmd_key(&c), Some(&b"k1"[..]));
        let mut c = redis::cmd("EVAL");
        c.arg("src").arg(0).arg("a");
        assert_eq!(cmd_key(&c), None);
        let mut c = redis::cmd("SCAN");
        c.arg(0).arg("MATCH").arg("p{x}:v:*").arg("COUNT").arg(10);
        assert_eq!(cmd_key(&c), Some(&b"p{x}:v:*"[..]));
        assert_eq!(cmd_key(&redis::cmd("TIME")), None);
        let mut c = redis::cmd("SCRIPT");
        c.arg("LOAD").arg("x");
        assert_eq!(cmd_key(&c), None);
        let mut c = redis::cmd("GET");
        c.arg("k");
        assert_eq!(cmd_key(&c), Some(&b"k"[..]));
    }
}
