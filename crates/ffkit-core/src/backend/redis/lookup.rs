//! Looking a Redis host name up within the call's deadline (issue 24:
//! one deadline for the whole call, whatever the network does).
//!
//! glibc's `getaddrinfo` has no timeout of its own: a DNS server that does
//! not answer costs `/etc/resolv.conf`'s `timeout:` × `attempts:` × servers
//! (5 s × 2 × N by default) before it gives up. So a name that may go to
//! DNS is looked up in a helper thread, and the call waits for it only
//! until its deadline; past it, the call fails as an unreachable server
//! does ("cannot connect: timed out …") and the thread is abandoned (it
//! owns only a copy of the name, and leaves its answer in a slot nobody
//! reads; the process's exit ends it). A lookup that answers in time
//! is joined, so no thread outlives a successful connect (a named lock's
//! holder is a fork of the call).
//!
//! No thread where no resolver can be asked: an IP address literal, and a
//! name that `/etc/hosts` holds when `/etc/nsswitch.conf`'s `hosts:` line
//! starts with `files` (glibc stops at the first source that finds the
//! name). Those are looked up inline, as before.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use redis::{RedisError, RedisResult};

/// The error of a lookup that did not answer by the deadline: a timeout
/// (`RedisError::is_timeout`), worded so that [`super::conn`] can say
/// which wait it was.
pub(super) const TIMED_OUT: &str = "looking up the host name timed out";

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, TIMED_OUT))
}

/// The addresses of `host:port`, by `deadline`. A name `/etc/hosts` holds
/// (when it is asked first) is looked up as that file spells it: DNS names
/// have no case, and glibc finds `LocalHost` there, but musl only
/// `localhost`.
pub(super) fn addresses(host: &str, port: u16, deadline: Instant) -> RedisResult<Vec<SocketAddr>> {
    let resolve = move |host: String| -> RedisResult<Vec<SocketAddr>> {
        Ok((host.as_str(), port).to_socket_addrs()?.collect())
    };
    let (name, stall) = match host.parse::<IpAddr>() {
        Ok(_) => (host.to_string(), false),
        Err(_) => match hosts_file_spelling(host) {
            Some(spelled) if files_first_here() => (spelled, false),
            // musl reads `/etc/hosts` first whatever `nsswitch.conf` says
            // (or when there is none, as on Alpine): the file's spelling
            // still, but in the thread, as the docs say.
            Some(spelled) if cfg!(target_env = "musl") => (spelled, true),
            _ => (host.to_string(), true),
        },
    };
    bounded(stall, deadline, name, resolve)
}

/// Runs `work(input)` (the lookup, and what needs its answer) by
/// `deadline`: here if it cannot stall (no resolver can be asked), else in
/// a helper thread it waits for until `deadline`. If no thread can be
/// started (out of processes or memory), `work` runs here, unbounded, as
/// before. The answer comes back through a slot and a condition variable,
/// and the thread runs a boxed job: one instantiation of the thread
/// machinery (each is relocated at every start-up, lookup or not: `mpsc`
/// and a generic spawn cost the debug binary ~250 relocations).
fn bounded<I, T, F>(stall: bool, deadline: Instant, input: I, work: F) -> RedisResult<T>
where
    I: Clone + Send + 'static,
    T: Send + 'static,
    F: FnOnce(I) -> RedisResult<T> + Clone + Send + 'static,
{
    if !stall {
        return work(input);
    }
    if deadline.saturating_duration_since(Instant::now()).is_zero() {
        return Err(timed_out());
    }
    type Slot<T> = Arc<(Mutex<Option<RedisResult<T>>>, Condvar)>;
    let slot: Slot<T> = Arc::new((Mutex::new(None), Condvar::new()));
    let theirs = Arc::clone(&slot);
    let (i, w) = (input.clone(), work.clone());
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let r = w(i);
        let (answer, ready) = &*theirs;
        // Nobody may wait any more (the call gave up): then nothing reads it.
        *answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
        ready.notify_one();
    });
    let Ok(thread) = spawn(job) else {
        return work(input);
    };
    let (answer, ready) = &*slot;
    let mut got = answer.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if let Some(r) = got.take() {
            drop(got);
            // It has given its answer: only its exit is left.
            let _ = thread.join();
            return r;
        }
        // The slot is empty and we hold its lock: a finished thread gave
        // no answer (it panicked).
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Past the deadline: the thread is left to finish alone.
            return Err(timed_out());
        }
        if thread.is_finished() {
            return Err(RedisError::from((
                redis::ErrorKind::Io,
                "the host name lookup failed",
            )));
        }
        got = ready
            .wait_timeout(got, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Starts the helper thread (not generic: one copy of std's spawn).
fn spawn(job: Box<dyn FnOnce() + Send>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ffkit-lookup".into())
        .spawn(job)
}

/// How `/etc/hosts` spells `host`, if a line of it names it (without case).
fn hosts_file_spelling(host: &str) -> Option<String> {
    hosts_spelling(&read_small("/etc/hosts")?, host)
}

/// Whether `hosts:` in `/etc/nsswitch.conf` starts with `files`. No
/// nsswitch.conf: glibc's built-in default asks DNS first.
fn files_first_here() -> bool {
    read_small("/etc/nsswitch.conf").is_some_and(|t| files_first(&String::from_utf8_lossy(&t)))
}

/// A configuration file's bytes, read without `std::fs::read`'s size
/// probe (a `statx` and an `lseek` more per file).
fn read_small(path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Some(text),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Whether the (first) `hosts:` line of an nsswitch.conf text starts with
/// the `files` source.
fn files_first(nss: &str) -> bool {
    nss.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim_start())
        .find_map(|l| l.strip_prefix("hosts:"))
        .and_then(|s| s.split_whitespace().next())
        == Some("files")
}

/// How a hosts-file text spells `host`, if it gives it an address (as its
/// canonical name or an alias; the first line that does).
fn hosts_spelling(text: &[u8], host: &str) -> Option<String> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let line = line.split(|&b| b == b'#').next().unwrap_or_default();
        line.split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .skip(1)
            .find(|name| name.eq_ignore_ascii_case(host.as_bytes()))
            .and_then(|name| std::str::from_utf8(name).ok())
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_first_reads_the_hosts_line() {
        assert!(files_first(
            "passwd: files\nhosts:          files mdns4_minimal [NOTFOUND=return] dns\n"
        ));
        assert!(files_first("hosts:files dns"));
        assert!(!files_first("hosts: dns files"));
        assert!(!files_first("hosts: resolve [!UNAVAIL=return] files"));
        assert!(!files_first("# hosts: files\n"));
        assert!(!files_first("passwd: files\n"));
    }

    #[test]
    fn hosts_names_matches_names_and_aliases_not_addresses_or_comments() {
        let t = b"127.0.0.1 localhost\n::1\tlocalhost ip6-localhost # ip6-loopback\n10.0.0.5 Cache.Internal cache\n# 10.0.0.6 old\n";
        let names = |h| hosts_spelling(t, h);
        assert_eq!(names("localhost").as_deref(), Some("localhost"));
        assert_eq!(names("LocalHost").as_deref(), Some("localhost"));
        assert_eq!(names("ip6-localhost").as_deref(), Some("ip6-localhost"));
        assert_eq!(names("cache.internal").as_deref(), Some("Cache.Internal"));
        assert_eq!(names("cache").as_deref(), Some("cache"));
        assert_eq!(names("ip6-loopback"), None);
        assert_eq!(names("old"), None);
        assert_eq!(names("127.0.0.1"), None);
        assert_eq!(names("cache.internal."), None);
    }
}
