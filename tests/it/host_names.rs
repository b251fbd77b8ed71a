//! Redis host names, resolved by the binary under test: `localhost`
//! through /etc/hosts reaches the loopback server the test starts (a
//! cache write and read, a lock round), and a name under `.invalid` (never
//! registered, RFC 6761) fails with the documented exit code and one line
//! naming the backend (docs/redis.md, "Host names"). `.ci/run` runs this
//! against the shipped static-pie binary too (`FFKIT_TEST_BIN`), whose C
//! library (musl, or glibc) is linked in: name resolution must not need the
//! dynamic loader.

use std::process::Command;

use crate::redis::Server;
use crate::util::*;

/// An applet on the backend `url`. A resolver that does not answer is
/// asked once for at most a second (glibc reads `RES_OPTIONS`), so the
/// `.invalid` case stays quick on a machine with no DNS server.
fn on(w: &World, url: &str, applet: &str) -> Command {
    let mut c = w.cmd(applet);
    c.env("FFKIT_BACKEND", url)
        .env("FFKIT_BACKEND_TIMEOUT", "5")
        .env("FFKIT_LOCK_DIR", "/nonexistent-local-lock-dir")
        .env("RES_OPTIONS", "timeout:1 attempts:1");
    c
}

#[test]
fn localhost_resolves_through_etc_hosts_to_the_loopback_server() {
    let Some(s) = Server::start() else { return };
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .any(|l| l.split_whitespace().next() == Some("127.0.0.1") && l.contains("localhost"))
    {
        return skip("/etc/hosts maps no 127.0.0.1 to localhost: the localhost case did not run");
    }
    let w = World::new();
    let url = format!("redis://localhost:{}", s.port);
    on(&w, &url, "cache-write")
        .args(["greeting", "hello"])
        .assert()
        .success();
    let out = on(&w, &url, "cache-read").arg("greeting").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"hello");
    // The entry is on the server, not in a local cache dir.
    let v: Option<String> =
        s.query(redis::cmd("GET").arg(format!("{}v:greeting", crate::redis_cache::NS)));
    assert_eq!(v.as_deref(), Some("hello"));
    // Host names have no case: `LocalHost` is the same name (glibc finds
    // it in /etc/hosts without case; musl, byte for byte, did not, and
    // asked DNS).
    let upper = format!("redis://LocalHost:{}", s.port);
    let out = on(&w, &upper, "cache-read")
        .arg("greeting")
        .output()
        .unwrap();
    assert!(out.status.success(), "{upper}: {}", stderr_of(&out));
    assert_eq!(out.stdout, b"hello");
    let out = on(&w, &url, "lock-acquire")
        .args(["-w", "10", "deploy", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn an_invalid_host_name_fails_with_one_line_and_the_documented_code() {
    let w = World::new();
    let url = "redis://ffkit-test.invalid:6379";
    // The cache applets fail as a local I/O error does (1), the lock
    // applets with 9 (docs/redis.md, "When the server fails").
    for (applet, args, code) in [
        ("cache-read", &["k"][..], 1),
        ("cache-write", &["k", "v"], 1),
        ("lock-acquire", &["-w", "5", "deploy", "--", "true"], 9),
    ] {
        let out = on(&w, url, applet).args(args).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(code), "{applet}: {err}");
        assert_eq!(err.lines().count(), 1, "{applet}: {err}");
        assert!(
            err.starts_with(&format!("ffkit {applet}: backend {url}: ")),
            "{applet}: {err}"
        );
        assert!(out.stdout.is_empty(), "{applet}");
    }
}
