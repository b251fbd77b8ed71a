//! `rediss://`: with the `tls` feature, the lock and cache applets against a
//! real redis-server speaking TLS with a CA and a certificate made by
//! `openssl` (`FFKIT_BACKEND_CA`), the same data as its plain port, and the
//! failures — a server whose certificate nothing trusts, a CA file that is
//! missing — as one line with the documented exit code. Without the
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

    /// A `rediss://` call stopped and continued while it waits for a
    /// reply goes on (docs/redis.md, "Timeouts and failures"), as a plain
    /// one does: the connection is the `redis` crate's, whose rustls
    /// stream makes an interrupted read again (the plain ones failed with
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
