//! `rediss://`: TLS (rustls on the ring provider, 1.2 and 1.3) over
//! ffkit's own TCP socket, with every socket read and write bounded by the
//! request's deadline.
//!
//! The `redis` crate's TLS stream set the socket's read timeout once per
//! request, and rustls's `complete_io` then made as many socket reads as it
//! took: each could wait that whole timeout afresh, so a server or proxy
//! that trickled one byte just under every timeout held a call about one
//! timeout per byte (a lease renewal past its cap, a lock lapsing while
//! its command ran). Here rustls is driven by hand, one socket read or
//! write at a time, each waiting at most the time left to the deadline
//! ([`Within`]): whatever the server sends, and however slowly, the
//! handshake and every reply end by their deadline (test
//! `redis_tls::rediss_a_trickling_server_fails_within_the_timeout`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::RedisError;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::backend::Target;
use crate::error::Error;

/// The client configuration of a `rediss://` target: the server's
/// certificate is checked against `FFKIT_BACKEND_CA` (a PEM file) or, when
/// that is unset, the system's roots. A CA file that cannot be read or
/// holds no certificate (garbage, empty, a private key) is a configuration
/// error (exit 12) naming the variable, not a server failure; system roots
/// that cannot be read at all are the connection's failure, `fail`'s.
pub(super) fn config(
    target: &Target,
    deadline: Instant,
    fail: impl Fn(&RedisError) -> Error,
) -> crate::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match &target.ca {
        Some(ca) => {
            let bad =
                |why: String| Error::Config(format!("FFKIT_BACKEND_CA={}: {why}", ca.display()));
            let pem = read_ca(ca, deadline).map_err(bad)?;
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| bad(format!("not a CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(
                    "no certificate in it (expected the PEM file of the CA that signed the \
                     server's certificate: -----BEGIN CERTIFICATE-----)"
                        .into(),
                ));
            }
        }
        None => {
            // `SSL_CERT_FILE` / `SSL_CERT_DIR`, else the usual `/etc/ssl`
            // places. A file among them that does not parse is skipped;
            // none at all fails the connect with the reason (a handshake
            // would only say `UnknownIssuer`).
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty()
                && let Some(e) = found.errors.into_iter().next()
            {
                return Err(fail(&RedisError::from(io::Error::other(format!(
                    "the system's CA certificates cannot be read ({e}); name the server's CA \
                     in FFKIT_BACKEND_CA"
                )))));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&RedisError::from(io::Error::other(e))))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The most a CA file may hold: far above any CA bundle (the system's
/// is about 200 KiB), far below what would hurt the machine.
const CA_MAX: usize = 16 << 20;

/// The bytes of the CA file `path`, at most [`CA_MAX`] of them, by
/// `deadline` (the call's timeout), or why not. `std::fs::read` read
/// `/dev/zero` until memory ran out, waited forever in the open of a
/// FIFO nobody writes to and in the read of one whose writer writes
/// nothing: every applet hung. The file is opened without waiting (a FIFO
/// with no writer then reads as empty: no certificate in it) and a pipe
/// that has nothing yet is waited for until the deadline, so a CA given
/// as `FFKIT_BACKEND_CA=<(…)` still works.
fn read_ca(path: &std::path::Path, deadline: Instant) -> Result<Vec<u8>, String> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    use rustix::fs::{Mode, OFlags};
    let reason = |e: io::Error| crate::error::os_reason(&e);
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| reason(e.into()))?;
    let mut file = std::fs::File::from(fd);
    let mut pem = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(pem),
            Ok(n) => {
                if pem.len() + n > CA_MAX {
                    return Err(format!(
                        "larger than {} MiB: not a CA certificate file",
                        CA_MAX >> 20
                    ));
                }
                pem.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err("nothing more to read from it within the timeout \
                                (FFKIT_BACKEND_TIMEOUT): a pipe whose writer is silent?"
                        .into());
                }
                let wait = Timespec::try_from(left).unwrap_or(Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
                let mut fds = [PollFd::new(&file, PollFlags::IN)];
                match rustix::event::poll(&mut fds, Some(&wait)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(reason(e.into())),
                }
            }
            Err(e) => return Err(reason(e)),
        }
    }
}

/// A TLS connection: rustls's state and the socket under it.
pub(super) struct Tls {
    conn: ClientConnection,
    sock: TcpStream,
    /// Whether the server asked for a client certificate.
    asked: Arc<NoClientCert>,
}

/// ffkit sends no client certificate (docs/redis.md, TLS) but notes that
/// the server asked for one: Redis's default, `tls-auth-clients yes`,
/// then refuses the connection, and rustls only says how (a TLS 1.2
/// server closes the handshake: "connection lost"; a TLS 1.3 one sends an
/// alert once the client's handshake is done, so the first request failed
/// with "received fatal alert: CertificateRequired"), never why.
#[derive(Debug, Default)]
struct NoClientCert(AtomicBool);

impl rustls::client::ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _issuers: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// What a server that requires a client certificate refused the
/// connection for, and what to do.
fn cert_required() -> io::Error {
    io::Error::other(
        "the server requires a client certificate (Redis: tls-auth-clients yes, its \
         default), which ffkit does not send: set tls-auth-clients no (or optional) on the \
         server",
    )
}

/// Whether `e` is webpki's refusal of an X.509 version 1 server
/// certificate, which rustls shows as its Debug form,
/// `Other(OtherError(UnsupportedCertVersion))`: that tells a user
/// nothing. (The error is rustls-webpki's, not a dependency of ffkit's,
/// so it is known by its name.)
fn is_version_1(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| match e {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
                format!("{o:?}").contains("UnsupportedCertVersion")
            }
            _ => false,
        })
}

/// What is wrong with a version 1 server certificate, and what to do.
fn version_1() -> io::Error {
    io::Error::other(
        "invalid peer certificate: the server's is an X.509 version 1 certificate (made \
         without extensions), which cannot name the host: make it with a subjectAltName \
         naming the host (openssl x509 -req … -extfile holding subjectAltName=DNS:host)",
    )
}

/// Whether the server ended the connection (closed it, reset it, or sent
/// an alert), not ffkit.
fn by_server(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    ) || e
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::AlertReceived(_)))
}

/// Whether `e` is the TLS 1.3 alert of a server that required a client
/// certificate.
fn is_cert_required(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)
            )
        })
}

/// The socket, each read and write waiting at most the time left to
/// `deadline` (then `TimedOut`), and made again when a stop and continue
/// of ffkit cut it short (EINTR, signal(7)).
struct Within<'a> {
    sock: &'a TcpStream,
    deadline: Instant,
}

impl Within<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        Ok(left)
    }
}

/// A receive or send timeout ends the wait with EAGAIN, which says
/// `WouldBlock`: here it is the deadline's, a timeout.
fn timed_out_if_blocked(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::from(io::ErrorKind::TimedOut)
    } else {
        e
    }
}

impl Read for Within<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.sock.set_read_timeout(Some(self.left()?))?;
            match (&mut &*self.sock).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map_err(timed_out_if_blocked),
            }
        }
    }
}

impl Within<'_> {
    /// One send by `send`, waiting at most the time left.
    fn send(&self, send: impl Fn(&mut &TcpStream) -> io::Result<usize>) -> io::Result<usize> {
        loop {
            self.sock.set_write_timeout(Some(self.left()?))?;
            match send(&mut &*self.sock) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map_err(timed_out_if_blocked),
            }
        }
    }
}

impl Write for Within<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(|s| s.write(buf))
    }

    /// rustls hands over every queued record at once (the handshake's
    /// last flight is two): one `writev`, not a write per record.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.send(|s| s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Tls {
    /// The TLS handshake with `host` (SNI, and the name the certificate
    /// must match) on `sock`, by `deadline`.
    pub(super) fn connect(
        config: &Arc<ClientConfig>,
        host: &str,
        sock: TcpStream,
        deadline: Instant,
    ) -> io::Result<Tls> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // This connection's own note of a certificate request.
        let asked = Arc::new(NoClientCert::default());
        let mut config = ClientConfig::clone(config);
        config.client_auth_cert_resolver = Arc::clone(&asked) as _;
        let conn = ClientConnection::new(Arc::new(config), name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut t = Tls { conn, sock, asked };
        match t.handshake(deadline) {
            // A server that asked for a certificate and then ended the
            // handshake refused the missing one. Only the server's own
            // ending: what ffkit found wrong (a server certificate that
            // does not verify: a TLS 1.3 server asks before it sends its
            // own) and a timeout keep their words.
            Err(e) if t.asked.0.load(Ordering::Relaxed) && by_server(&e) => Err(cert_required()),
            Err(e) if is_cert_required(&e) => Err(cert_required()),
            Err(e) if is_version_1(&e) => Err(version_1()),
            Err(e) => Err(e),
            Ok(()) => Ok(t),
        }
    }

    /// The handshake, by `deadline`.
    fn handshake(&mut self, deadline: Instant) -> io::Result<()> {
        let t = self;
        while t.conn.is_handshaking() {
            t.flush(deadline)?;
            if !t.conn.wants_read() {
                // Handshaking, nothing to send and nothing awaited:
                // rustls never leaves a handshake so, but a loop here
                // would spin.
                return Err(io::Error::other("the TLS handshake stalled"));
            }
            if t.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the TLS handshake",
                ));
            }
        }
        // The client's last flight (its Finished).
        t.flush(deadline)
    }

    /// The socket (for the idle check's `poll`).
    pub(super) fn sock(&self) -> &TcpStream {
        &self.sock
    }

    /// Sends what rustls holds for the server, by `deadline`.
    fn flush(&mut self, deadline: Instant) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut io = Within {
                sock: &self.sock,
                deadline,
            };
            if self.conn.write_tls(&mut io)? == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
        }
        Ok(())
    }

    /// One socket read into rustls, by `deadline`, and its records
    /// processed: the bytes read (0: the server closed the socket).
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let mut io = Within {
            sock: &self.sock,
            deadline,
        };
        let n = self.conn.read_tls(&mut io)?;
        if let Err(e) = self.conn.process_new_packets() {
            // The alert telling the server why, if it can be sent at once.
            let _ = self.flush(deadline);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(n)
    }

    /// Reads plaintext into `buf` by `deadline`: what rustls has already
    /// decrypted, else as many socket reads as a whole record takes, each
    /// waiting only the time left. `Ok(0)`: the server closed the
    /// connection cleanly (close_notify); a bare EOF is `UnexpectedEof`.
    pub(super) fn read(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            // Anything rustls owes the server first (a key update's answer).
            self.flush(deadline)?;
            if let Err(e) = self.fill(deadline) {
                // TLS 1.3: the refusal of a missing client certificate
                // comes after the client's handshake, at the first read.
                return Err(if is_cert_required(&e) {
                    cert_required()
                } else {
                    e
                });
            }
        }
    }

    /// Sends `data`, each socket write waiting at most `by` (progress or
    /// fail within it: a large value is the call's own work, as on a plain
    /// socket).
    pub(super) fn write_all(&mut self, mut data: &[u8], by: Duration) -> io::Result<()> {
        loop {
            while self.conn.wants_write() {
                let mut io = Within {
                    sock: &self.sock,
                    deadline: Instant::now() + by,
                };
                if self.conn.write_tls(&mut io)? == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero));
                }
            }
            if data.is_empty() {
                return Ok(());
            }
            // Encrypted into rustls's buffer up to its limit; the rest
            // after that much is sent.
            let n = self.conn.writer().write(data)?;
            if n == 0 && !self.conn.wants_write() {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            data = &data[n..];
        }
    }

    /// Whether the server closed this idle connection or sent something
    /// unasked, once `poll` said the socket is readable: what is there is
    /// read without waiting and processed. Session tickets and key
    /// updates (TLS 1.3 sends tickets after the handshake) are
    /// housekeeping and leave it usable; an EOF, a close_notify, an alert,
    /// or a plaintext byte do not. Nor does more housekeeping than
    /// [`IDLE_HOUSEKEEPING`] bytes at once: a server that keeps sending
    /// tickets (rustls bounds key updates and empty records, not tickets)
    /// would otherwise hold this loop as long as it likes; that connection
    /// is given up and a new one made.
    pub(super) fn closed_by_peer(&mut self) -> bool {
        let mut read = 0usize;
        loop {
            if read > IDLE_HOUSEKEEPING {
                return true;
            }
            match self.conn.read_tls(&mut NoWait(&self.sock)) {
                Ok(0) => return true,
                Ok(n) => {
                    read += n;
                    match self.conn.process_new_packets() {
                        Ok(s) if s.peer_has_closed() || s.plaintext_bytes_to_read() > 0 => {
                            return true;
                        }
                        Ok(_) => {}
                        Err(_) => return true,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}

/// The most unasked housekeeping (session tickets: a few hundred bytes
/// each, two after a TLS 1.3 handshake) an idle connection may have
/// waiting before it is taken for a server that will not stop.
const IDLE_HOUSEKEEPING: usize = 64 << 10;

/// The socket read without waiting (`MSG_DONTWAIT`): `WouldBlock` when
/// nothing is there.
struct NoWait<'a>(&'a TcpStream);

impl Read for NoWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        rustix::net::recv(self.0, buf, rustix::net::RecvFlags::DONTWAIT)
            .map(|(n, _)| n)
            .map_err(io::Error::from)
    }
}
