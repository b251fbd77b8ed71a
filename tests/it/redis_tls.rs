//! `rediss://`: with the `tls` feature, the lock and cache applets against a
//! real redis-server speaking TLS with a CA and a certificate made by
//! `openssl` (`FFKIT_BACKEND_CA`), the same data as its plain port, and the
//! failures — a server whose certificate nothing trusts, a CA file that is
//! missing, a server silent or trickling in the handshake or in a reply —
//! as one line with the documented exit code. Without the
//! feature, `rediss://` is refused with exit 12 saying how to get it.

use crate::util::*;

#[cfg(feature = "tls")]
mod with_tls {
    use super::*;
    use crate::redis::Server;
    use predicates::str::contains;
    use std::process::Command;

    /// The TLS port with the test CA, and a roomier timeout than the plain
    /// tests' 2 s (with a lease of 30 s, the minimum 3 T): no test here is
    /// about the timeout (the stop-and-continue one sets its own), and a
    /// debug build's handshakes on a loaded 2-CPU machine must not turn
    /// into one (the locks-and-cache test below failed once under load).
    fn ff(w: &World, s: &Server, applet: &str) -> Command {
        let mut c = w.cmd(applet);
        crate::redis::env(&mut c, s);
        c.env("FFKIT_BACKEND", s.tls_url())
            .env("FFKIT_BACKEND_CA", s.ca())
            .env("FFKIT_BACKEND_TIMEOUT", "10")
            .env("FFKIT_LOCK_LEASE", "30");
        c
    }

    /// A `rediss://` request goes out as soon as it is written: the socket
    /// has TCP_NODELAY before its first send. Before, the handshake's last
    /// flight and the first request were small sends in a row, and Nagle
    /// held each until the server's delayed ACK of the one before: 40 ms a
    /// call (BENCHMARKS.md). Traced with strace, not timed.
    #[test]
    fn rediss_requests_go_out_at_once_nodelay_before_the_first_send() {
        if !crate::util::need("strace", "the sends of a rediss:// call") {
            return;
        }
        let Some(s) = Server::start_tls() else {
            return;
        };
        let w = World::new();
        ff(&w, &s, "cache-write")
            .args(["k", "v"])
            .assert()
            .success();
        let read = ff(&w, &s, "cache-read");
        let trace = w.path().join("trace");
        let mut c = Command::new("strace");
        for (k, v) in read.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = read.get_current_dir() {
            c.current_dir(d);
        }
        c.args([
            "-f",
            "-qq",
            "-e",
            "trace=setsockopt,sendto,sendmsg,writev",
            "-o",
        ])
        .arg(&trace)
        .arg(read.get_program())
        .args(read.get_args())
        .arg("k");
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(o.stdout, b"v");
        let t = std::fs::read_to_string(&trace).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        let at = |what: &[&str]| {
            lines
                .iter()
                .position(|l| what.iter().any(|w| l.contains(w)))
        };
        let nodelay = at(&["TCP_NODELAY, [1]"]).unwrap_or_else(|| panic!("no TCP_NODELAY:\n{t}"));
        let sent =
            at(&["sendto(", "sendmsg(", "writev("]).unwrap_or_else(|| panic!("no send:\n{t}"));
        assert!(nodelay < sent, "TCP_NODELAY after the first send:\n{t}");
    }

    /// A `rediss://` call stopped and continued while it waits for a
    /// reply goes on (docs/redis.md, "Timeouts and failures"), as a plain
    /// one does: ffkit's TLS stream makes a socket read cut short by EINTR
    /// again, within the same deadline (the plain ones failed with
    /// "Interrupted system call" until ffkit read them itself).
    #[test]
    fn rediss_call_stopped_and_continued_while_waiting_goes_on() {
        let Some(s) = Server::start_tls() else {
            return;
        };
        let w = World::new();
        ff(&w, &s, "cache-write")
            .args(["k", "v"])
            .assert()
            .success();
        let _: String = s.query(redis::cmd("CLIENT").arg("PAUSE").arg(3000).arg("ALL"));
        let mut c = ff(&w, &s, "cache-read");
        c.arg("k")
            .env("FFKIT_BACKEND_TIMEOUT", "20")
            .env("FFKIT_LOCK_LEASE", "60")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = crate::redis_faults::stop_and_continue_in_recv(c.spawn().unwrap());
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert_eq!(out.stdout, b"v");
    }

    /// A `rediss://` server that accepts the TCP connection and then says
    /// nothing (a plain Redis port waiting for the end of what it takes
    /// for an inline command, a black-holing proxy) fails the call within
    /// its timeout, as a plain one does (docs/redis.md, "Timeouts and
    /// failures": the TLS handshake is inside the connect's request).
    /// The handshake runs inside the first write, whose reads had no
    /// timeout: every applet hung until killed.
    #[test]
    fn rediss_a_server_silent_in_the_handshake_fails_within_the_timeout() {
        let Some(s) = Server::start_tls() else {
            return;
        };
        let w = World::new();
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        // Accepts and keeps every connection open, reading nothing.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in silent.incoming() {
                held.push(c);
            }
        });
        for url in [
            format!("rediss://localhost:{port}"),
            // AUTH and SELECT are the first write then, not a PING.
            format!("rediss://u:pw@localhost:{port}/3"),
        ] {
            for (applet, extra, code) in
                [("cache-size", &[][..], 1), ("lock-status", &["L"][..], 9)]
            {
                let mut c = ff(&w, &s, applet);
                c.env("FFKIT_BACKEND", &url)
                    .env("FFKIT_BACKEND_TIMEOUT", "0.3")
                    .env("FFKIT_LOCK_LEASE", "30")
                    .args(extra)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                let mut child = c.spawn().unwrap();
                // Two timeouts at most (connect, then the handshake's
                // request); 10 s is far past that, even on a loaded box.
                let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while child.try_wait().unwrap().is_none() {
                    if std::time::Instant::now() > give_up {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("{applet} {url}: still waiting 10 s in with a 0.3 s timeout");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let out = child.wait_with_output().unwrap();
                assert_eq!(out.status.code(), Some(code), "{}", stderr_of(&out));
                let lines = stderr_lines(&out);
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert!(
                    lines[0].contains("cannot connect")
                        && lines[0].contains("timed out")
                        && !lines[0].contains("pw@"),
                    "{lines:?}"
                );
            }
        }
    }

    /// Where a trickling fixture starts to trickle.
    #[derive(Clone, Copy, Debug)]
    enum Trickle {
        /// It answers the ClientHello with the header of a 16 KiB
        /// handshake record, then sends its bytes one at a time.
        Handshake,
        /// It relays the real TLS server through the handshake, and from
        /// the client's first request on (its second application-data
        /// record: the first is its Finished) passes what the server
        /// sends on one byte at a time.
        Reply,
        /// As `Reply`, from when the test sets the fixture's switch on.
        Later,
    }

    /// A loopback listener for one connection that trickles (`mode`): one
    /// byte every `every`, forever, as long as the client keeps the
    /// connection open. The thread answers how long the client kept it
    /// open once the trickle began (`None`: still open after `give_up`).
    /// `Trickle::Later` starts when `switch` is set.
    fn trickler(
        mode: Trickle,
        tls_port: u16,
        every: std::time::Duration,
        give_up: std::time::Duration,
        switch: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> (u16, std::thread::JoinHandle<Option<std::time::Duration>>) {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let switch = Arc::clone(switch);
        use std::time::Instant;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut client, _) = l.accept().unwrap();
            // Waits for the client to close, reading (and dropping) what
            // it sends until `until`: whether it closed, and when.
            let closed_by = |c: &mut std::net::TcpStream, until: Instant| {
                let mut buf = [0u8; 4096];
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    c.set_read_timeout(Some(left)).unwrap();
                    match c.read(&mut buf) {
                        Ok(0) => return Some(Instant::now()),
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            return None;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return Some(Instant::now()),
                    }
                }
            };
            match mode {
                Trickle::Handshake => {
                    let mut hello = [0u8; 4096];
                    let _ = client.read(&mut hello);
                    let began = Instant::now();
                    // A handshake record of 16,384 bytes.
                    client.write_all(&[0x16, 0x03, 0x03, 0x40, 0x00]).unwrap();
                    while began.elapsed() < give_up {
                        if let Some(at) = closed_by(&mut client, Instant::now() + every) {
                            return Some(at - began);
                        }
                        if client.write_all(&[0]).is_err() {
                            return Some(began.elapsed());
                        }
                    }
                    None
                }
                Trickle::Reply | Trickle::Later => {
                    let mut server = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
                    let began: Arc<Mutex<Option<Instant>>> = Arc::default();
                    let trickling = match mode {
                        Trickle::Later => switch,
                        _ => Arc::new(AtomicBool::new(false)),
                    };
                    // Server to client: as it comes, then (once the client
                    // has sent its request) one byte every `every`.
                    let (mut from, mut to) =
                        (server.try_clone().unwrap(), client.try_clone().unwrap());
                    let on = Arc::clone(&trickling);
                    // Dropped when the client has closed: the trickle stops.
                    let (closing, closed) = std::sync::mpsc::channel::<()>();
                    let down = std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        let mut owed = std::collections::VecDeque::new();
                        loop {
                            if owed.is_empty() {
                                match from.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) if !on.load(Ordering::SeqCst) => {
                                        if to.write_all(&buf[..n]).is_err() {
                                            return;
                                        }
                                    }
                                    Ok(n) => owed.extend(&buf[..n]),
                                }
                            } else {
                                if closed.recv_timeout(every)
                                    != Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                                {
                                    return;
                                }
                                let b = owed.pop_front().unwrap_or(0);
                                if to.write_all(&[b]).is_err() {
                                    return;
                                }
                            }
                        }
                    });
                    // Client to server: relayed, its records counted.
                    let mut buf = [0u8; 4096];
                    let (mut sent, mut at, mut app_records) = (Vec::new(), 0usize, 0);
                    let start = Instant::now();
                    let closed = loop {
                        if start.elapsed() > give_up * 2 {
                            break None;
                        }
                        let n = match client.read(&mut buf) {
                            Ok(0) | Err(_) => break Some(Instant::now()),
                            Ok(n) => n,
                        };
                        sent.extend_from_slice(&buf[..n]);
                        // Record headers: type, version (2), length (2).
                        while let Some(h) = sent.get(at..at + 5) {
                            if h[0] == 0x17 {
                                app_records += 1;
                                if app_records == 2 && matches!(mode, Trickle::Reply) {
                                    *began.lock().unwrap() = Some(Instant::now());
                                    trickling.store(true, Ordering::SeqCst);
                                }
                            }
                            at += 5 + (usize::from(h[3]) << 8 | usize::from(h[4]));
                        }
                        if server.write_all(&buf[..n]).is_err() {
                            break None;
                        }
                    };
                    drop(closing);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    let _ = down.join();
                    let began = *began.lock().unwrap();
                    match (began, closed) {
                        (Some(b), Some(c)) if c - b <= give_up => Some(c - b),
                        _ => None,
                    }
                }
            }
        });
        (port, h)
    }

    /// A `rediss://` server or proxy that trickles — one byte just under
    /// every timeout — fails the call within about its timeout, during the
    /// TLS handshake and after it (docs/redis.md, "Timeouts and
    /// failures"). The `redis` crate's TLS stream waited a whole timeout
    /// per socket read, so each byte bought the server another timeout:
    /// `lock-status` under FFKIT_BACKEND_TIMEOUT=1 was held for over 20 s
    /// until killed (a 16 KiB record takes hours). ffkit's own stream
    /// waits only the time left to the request's deadline. The four calls
    /// run at once, each against its own fixture.
    #[test]
    fn rediss_a_trickling_server_fails_within_the_timeout() {
        let Some(s) = Server::start_tls() else {
            return;
        };
        let w = World::new();
        let t = std::time::Duration::from_secs(1);
        // Generous for a loaded machine; the old stream took a timeout
        // per byte and never got near it.
        let bound = t * 3;
        let give_up = std::time::Duration::from_secs(30);
        let tls_port = s.tls_port.unwrap();
        let mut running = Vec::new();
        // A URL with a password: its AUTH is the first request, inside the
        // handshake's deadline ("cannot connect").
        let cases = [
            (Trickle::Handshake, "", "cache-size", &[][..], 1),
            (Trickle::Handshake, "", "lock-status", &["L"][..], 9),
            (Trickle::Reply, "", "cache-size", &[][..], 1),
            (Trickle::Reply, "", "lock-status", &["L"][..], 9),
            (Trickle::Reply, "u:pw@", "cache-size", &[][..], 1),
        ];
        for (mode, auth, applet, extra, code) in cases {
            let (port, fixture) = trickler(mode, tls_port, t * 4 / 5, give_up, &Default::default());
            let mut c = ff(&w, &s, applet);
            c.env("FFKIT_BACKEND", format!("rediss://{auth}localhost:{port}"))
                .env("FFKIT_BACKEND_TIMEOUT", "1")
                .args(extra)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let what = format!("{mode:?} {auth}{applet}");
            running.push((what, mode, auth, code, c.spawn().unwrap(), fixture));
        }
        // Every call waited for (a call still running at `give_up` killed:
        // our own child, not yet waited for) before any is judged, so a
        // failure leaves none behind.
        let give_up_at = std::time::Instant::now() + give_up;
        let mut ended = Vec::new();
        for (what, mode, auth, code, mut child, fixture) in running {
            let mut bounded = true;
            while child.try_wait().unwrap().is_none() {
                if std::time::Instant::now() > give_up_at {
                    let _ = child.kill();
                    bounded = false;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            ended.push((what, mode, auth, code, bounded, child, fixture));
        }
        for (what, mode, auth, code, bounded, child, fixture) in ended {
            let out = child.wait_with_output().unwrap();
            let held = fixture.join().unwrap();
            assert!(
                bounded,
                "{what}: still waiting {give_up:?} in with a 1 s timeout"
            );
            assert!(
                held.is_some_and(|h| h <= bound),
                "{what}: held the trickling connection {held:?} (bound {bound:?}): {}",
                stderr_of(&out)
            );
            assert_eq!(out.status.code(), Some(code), "{what}: {}", stderr_of(&out));
            let lines = stderr_lines(&out);
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(
                lines[0].contains("timed out after 1s (FFKIT_BACKEND_TIMEOUT)")
                    && !lines[0].contains("pw@")
                    && (matches!(mode, Trickle::Reply) && auth.is_empty()
                        || lines[0].contains("cannot connect")),
                "{what}: {lines:?}"
            );
        }
    }

    /// A command-mode holder whose `rediss://` link starts to trickle
    /// (one byte just under every timeout) stops its command before the
    /// lease lapses, as over a plain link that goes silent
    /// (`redis_faults::redis_holder_cut_off_at_the_minimum_lease_stops_its_command_before_it_lapses`):
    /// each renewal ends by its cap (docs/redis.md, "Locks", the L/3 row).
    /// On the `redis` crate's TLS stream a trickled renewal reply held the
    /// holder past its cap, and the lock lapsed while the command ran. T =
    /// 0.5 s and the smallest lease allowed, 3 T.
    #[test]
    fn rediss_holder_whose_link_trickles_stops_its_command_before_it_lapses() {
        let Some(s) = Server::start_tls() else {
            return;
        };
        let w = World::new();
        let switch = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let every = std::time::Duration::from_millis(400);
        let give_up = std::time::Duration::from_secs(20);
        let (port, fixture) =
            trickler(Trickle::Later, s.tls_port.unwrap(), every, give_up, &switch);
        let pidfile = w.path().join("cmd.pid");
        let mut holder = ff(&w, &s, "lock-acquire")
            .env("FFKIT_BACKEND", format!("rediss://localhost:{port}"))
            .env("FFKIT_BACKEND_TIMEOUT", "0.5")
            .env("FFKIT_LOCK_LEASE", "1.5")
            .args(["trickled", "-c"])
            .arg(format!(
                "echo $$ > {}.tmp && mv {0}.tmp {0}; trap '' TERM; exec sleep 60",
                pidfile.display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = crate::redis_faults::pid_from(&pidfile);
        // A pidfd on the command (alive: it sleeps until stopped) tells
        // when it is gone; nothing is ever sent to it from here.
        let fd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        let died = std::thread::spawn(move || {
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let _ = rustix::event::poll(&mut fds, None);
            std::time::Instant::now()
        });
        switch.store(true, std::sync::atomic::Ordering::SeqCst);
        // The server's view (its plain port): when the lease lapses.
        let stop = std::time::Instant::now() + give_up;
        let lapsed = loop {
            let held: Option<String> = s.query(redis::cmd("GET").arg("ffkit:lock:{trickled}"));
            if held.is_none() {
                break std::time::Instant::now();
            }
            if std::time::Instant::now() > stop {
                // Our own child, not yet waited for.
                let _ = holder.kill();
                let _ = holder.wait();
                panic!("the lease never lapsed");
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let st = holder.wait().unwrap();
        let died = died.join().unwrap();
        let _ = fixture.join();
        // It ignores SIGTERM: SIGKILL must come a sixth of the lease
        // (250 ms) before the lapse; most of that is left for a loaded
        // machine.
        assert!(
            died + std::time::Duration::from_millis(30) < lapsed,
            "the command outlived its lease: died {:?} after the lapse",
            died.saturating_duration_since(lapsed)
        );
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(holder.stderr.as_mut().unwrap(), &mut err);
        assert_eq!(st.code(), Some(9), "{err}");
        assert!(err.contains("lease renewal failed"), "{err}");
    }

    /// A `rediss://` connection the server closed while a command-mode
    /// holder kept it between requests (`CLIENT KILL`, a server's idle
    /// `timeout`) is replaced before the next request, as a plain one is
    /// (`redis_faults::redis_a_connection_the_server_closed_while_idle_is_replaced_not_lost`):
    /// the release after the command is not lost, so the lock is free at
    /// once. The idle check reads what a TLS server sent unasked (TLS 1.3
    /// session tickets come after the handshake) and keeps the connection
    /// unless it is a close, an alert or a reply; the crate's stream was
    /// never checked, and its release failed with "connection lost".
    #[test]
    fn rediss_a_connection_the_server_closed_while_idle_is_replaced_not_lost() {
        let Some(s) = Server::start_tls() else {
            return;
        };
        let w = World::new();
        let flag = w.path().join("started");
        let go = w.path().join("go");
        let wait_cmd = format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done; echo out",
            flag.display(),
            go.display()
        );
        let child = ff(&w, &s, "lock-acquire")
            .args(["idle-lock", "--", "sh", "-c", &wait_cmd])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        assert!(eventually(|| flag.exists()), "the command never started");
        let _: redis::Value = s.query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal"));
        std::fs::write(&go, "").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!((out.status.code(), stderr_of(&out).as_str()), (Some(0), ""));
        assert_eq!(out.stdout, b"out\n");
        let st = ff(&w, &s, "lock-status").arg("idle-lock").output().unwrap();
        assert_eq!(
            st.status.code(),
            Some(1),
            "still held: {}",
            String::from_utf8_lossy(&st.stdout)
        );
    }

    #[test]
    fn rediss_with_the_ca_runs_locks_and_the_cache_on_the_same_server() {
        let Some(s) = Server::start_tls() else {
            return;
        };
        let w = World::new();
        ff(&w, &s, "cache-write")
            .args(["k", "hello"])
            .assert()
            .success();
        ff(&w, &s, "cache-read")
            .arg("k")
            .assert()
            .success()
            .stdout("hello");
        ff(&w, &s, "cache-size").assert().success().stdout("5\n");
        // The plain port sees what went through TLS.
        ff(&w, &s, "cache-read")
            .args(["--backend", &s.url(), "k"])
            .assert()
            .success()
            .stdout("hello");
        let out = ff(&w, &s, "lock-acquire")
            .args(["deploy", "--", "sh", "-c", "echo $FFKIT_LOCK_FENCE"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert!(parse_u64(&out.stdout) > 0, "a fencing token");
        ff(&w, &s, "lock-acquire").arg("pair").assert().success();
        ff(&w, &s, "lock-status")
            .arg("pair")
            .assert()
            .code(0)
            .stdout(contains("held"));
        ff(&w, &s, "lock-release").arg("pair").assert().success();
        ff(&w, &s, "lock-status").arg("pair").assert().code(1);
    }

    #[test]
    fn an_untrusted_certificate_and_a_missing_ca_fail_with_one_line() {
        let Some(s) = Server::start_tls() else {
            return;
        };
        let w = World::new();
        // No FFKIT_BACKEND_CA: the system's roots do not know the test CA.
        for (applet, args, code) in [
            ("cache-read", &["k"][..], 1),
            ("lock-status", &["L"][..], 9),
        ] {
            let out = ff(&w, &s, applet)
                .env_remove("FFKIT_BACKEND_CA")
                .args(args)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(code), "{}", stderr_of(&out));
            let lines = stderr_lines(&out);
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(
                lines[0].contains(&s.tls_url())
                    && lines[0].contains("cannot connect")
                    && lines[0].contains("certificate"),
                "{lines:?}"
            );
        }
        // A CA file that holds no certificate is a configuration error,
        // whatever the applet: garbage, an empty file, a private key.
        let garbage = w.path().join("garbage.pem");
        std::fs::write(&garbage, "this is not a certificate\n").unwrap();
        let empty = w.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let broken = w.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for ca in [garbage, empty, broken, s.dir.path().join("server.key")] {
            for (applet, args) in [
                ("cache-write", &["k", "v"][..]),
                ("lock-status", &["L"][..]),
            ] {
                let out = ff(&w, &s, applet)
                    .env("FFKIT_BACKEND_CA", &ca)
                    .args(args)
                    .output()
                    .unwrap();
                assert_eq!(out.status.code(), Some(12), "{ca:?}: {}", stderr_of(&out));
                let lines = stderr_lines(&out);
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert!(lines[0].contains("FFKIT_BACKEND_CA="), "{lines:?}");
            }
        }
        let out = ff(&w, &s, "cache-read")
            .env("FFKIT_BACKEND_CA", w.path().join("no-such-ca.pem"))
            .arg("k")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(12), "{}", stderr_of(&out));
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("FFKIT_BACKEND_CA="), "{lines:?}");

        // A server that requires a client certificate (Redis's default,
        // `tls-auth-clients yes`): ffkit sends none (docs/redis.md, TLS),
        // and the line says so, over TLS 1.3 (whose server refuses after
        // the client's handshake is done: the line said `received fatal
        // alert: CertificateRequired`) and 1.2 (whose server closes the
        // handshake: `cannot connect: connection lost`).
        let _: String = s.query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("tls-auth-clients")
                .arg("yes"),
        );
        for proto in ["TLSv1.3", "TLSv1.2"] {
            let _: String = s.query(
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("tls-protocols")
                    .arg(proto),
            );
            for (applet, args, code) in [
                ("cache-read", &["k"][..], 1),
                ("lock-status", &["L"][..], 9),
            ] {
                let out = ff(&w, &s, applet).args(args).output().unwrap();
                assert_eq!(
                    out.status.code(),
                    Some(code),
                    "{proto}: {}",
                    stderr_of(&out)
                );
                let lines = stderr_lines(&out);
                assert_eq!(lines.len(), 1, "{proto}: {lines:?}");
                assert!(
                    lines[0].contains("client certificate")
                        && lines[0].contains("tls-auth-clients"),
                    "{proto}: {lines:?}"
                );
            }
            // The server asks for a certificate before (TLS 1.3) or with
            // (TLS 1.2) its own: one that does not verify still says so.
            let out = ff(&w, &s, "lock-status")
                .env_remove("FFKIT_BACKEND_CA")
                .arg("L")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(9), "{proto}: {}", stderr_of(&out));
            let lines = stderr_lines(&out);
            assert!(
                lines.len() == 1
                    && lines[0].contains("UnknownIssuer")
                    && !lines[0].contains("client certificate"),
                "{proto}: {lines:?}"
            );
        }

        // An X.509 version 1 certificate (what `openssl x509 -req` makes
        // without -extfile) cannot name the host: the line says so and
        // how to make one (it said `Other(OtherError(UnsupportedCertVersion))`).
        let _: String = s.query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("tls-auth-clients")
                .arg("no"),
        );
        let made = Command::new("openssl")
            .args(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem"])
            .args(["-CAkey", "ca.key", "-CAcreateserial", "-out", "v1.pem"])
            .args(["-days", "2"])
            .current_dir(s.dir.path())
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", stderr_of(&made));
        let _: String = s.query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("tls-cert-file")
                .arg(s.dir.path().join("v1.pem").to_string_lossy().as_ref()),
        );
        let out = ff(&w, &s, "cache-read").arg("k").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
        let lines = stderr_lines(&out);
        assert!(
            lines.len() == 1
                && lines[0].contains("version 1")
                && lines[0].contains("subjectAltName"),
            "{lines:?}"
        );
    }

    /// A `FFKIT_BACKEND_CA` that never ends or never arrives is exit 12
    /// with one line naming it, by the call's timeout (docs/redis.md,
    /// TLS): `/dev/zero` (read until memory ran out: here, under a 1 GiB
    /// limit, until the read gave up "out of memory"), a FIFO nobody
    /// writes to (the open waited for a writer forever), one whose writer
    /// holds it open and writes nothing (the read waited forever). A CA
    /// that arrives through a pipe, as `FFKIT_BACKEND_CA=<(…)` gives it,
    /// still works. The CA is read before connecting: the target is a
    /// closed loopback port, and no server is needed.
    #[test]
    fn rediss_a_ca_that_never_ends_or_never_arrives_fails_with_one_line() {
        let w = World::new();
        let run = |ca: &std::path::Path, what: &str| {
            // Under a 1 GiB address-space limit: reading /dev/zero to the
            // end must fail the test, not the machine.
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("ulimit -v 1048576 && exec \"$0\" lock-status L")
                .arg(bin());
            w.isolate(&mut c);
            c.env("FFKIT_BACKEND", "rediss://localhost:1")
                .env("FFKIT_BACKEND_CA", ca)
                .env("FFKIT_BACKEND_TIMEOUT", "0.5");
            let out = output_within(c, what);
            assert_eq!(out.status.code(), Some(12), "{what}: {}", stderr_of(&out));
            let lines = stderr_lines(&out);
            assert_eq!(lines.len(), 1, "{what}: {lines:?}");
            assert!(lines[0].contains("FFKIT_BACKEND_CA="), "{what}: {lines:?}");
            lines[0].clone()
        };
        let line = run(std::path::Path::new("/dev/zero"), "/dev/zero");
        assert!(line.contains("larger than"), "{line}");
        let fifo = w.path().join("ca.fifo");
        crate::util::mkfifo(&fifo);
        let _ = run(&fifo, "a FIFO with no writer");
        // Read and write: the open does not wait, and the FIFO has a
        // writer that never writes.
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let line = run(&fifo, "a FIFO whose writer writes nothing");
        assert!(line.contains("FFKIT_BACKEND_TIMEOUT"), "{line}");
        drop(held);
        // A CA through a pipe that is written a little later: read, and
        // the call gets as far as the (refused) connect, exit 9.
        if !crate::util::need("openssl", "the CA through a pipe") {
            return;
        }
        crate::redis::make_certs(w.path());
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg("FFKIT_BACKEND_CA=<(sleep 0.2; cat ca.pem) exec \"$0\" lock-status L")
            .arg(bin());
        w.isolate(&mut c);
        c.env("FFKIT_BACKEND", "rediss://localhost:1")
            .env("FFKIT_BACKEND_TIMEOUT", "10")
            .env("FFKIT_LOCK_LEASE", "30");
        let out = output_within(c, "a CA through a pipe");
        assert_eq!(out.status.code(), Some(9), "{}", stderr_of(&out));
        let lines = stderr_lines(&out);
        assert!(
            lines.len() == 1 && lines[0].contains("cannot connect"),
            "{lines:?}"
        );
    }
}

#[cfg(not(feature = "tls"))]
#[test]
fn rediss_is_refused_by_a_build_without_tls() {
    let w = World::new();
    let out = w
        .cmd("cache-size")
        .env("FFKIT_BACKEND", "rediss://u:secret@localhost:6380")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("--features tls") && !lines[0].contains("secret"),
        "{lines:?}"
    );
}
