//! Locks on Redis (docs/redis.md, "Locks"): a lease taken with
//! `SET key token NX PX lease`, released and renewed by Lua scripts that
//! check the token, a holder record beside it for `lock-status`, a fencing
//! counter bumped at every acquisition, and a wake-up list the release
//! script pushes so waiters block in `BLPOP` instead of polling.
//!
//! Keys of the lock NAME, with S its scope (`[dev-ID/][session/]NAME`,
//! each part escaped so no `/`, `{`, `}` or `%` is left in it: see
//! [`Keys::new`]): `ffkit:lock:{S}` (the token, with the lease as its
//! expiry), `ffkit:lock:{S}:holder` (hash: host, pid, start, command,
//! since, kind, token, fence, holder_pid, holder_start; same expiry),
//! `ffkit:lock:{S}:fence` (counter, never expires), `ffkit:lock:{S}:wake`
//! (list, short expiry) and `ffkit:lock:{S}:cancel:TOKEN` (an acquisition
//! given up, for a while). No name reaches another name's keys.
//!
//! Holding: command mode renews from the running ffkit ([`run_leased`]);
//! named pairs leave a holder process ([`hold_named`]) that renews and
//! watches the owner, like the local named locks.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal};

use super::conn::{Area, Conn};
use super::script::Lua;
use super::signals::Relay;
use crate::backend::{Limits, Target};
use crate::error::{Error, Result};
use crate::lock::backoff::{Schedule, Sleeps};
use crate::lock::holder;
use crate::lock::{Denied, Wait};

const ACQUIRE: Lua = Lua::new(include_str!("lua/lock_acquire.lua"));
const RELEASE: Lua = Lua::new(include_str!("lua/lock_release.lua"));
const EXTEND: Lua = Lua::new(include_str!("lua/lock_extend.lua"));
const CANCEL: Lua = Lua::new(include_str!("lua/lock_cancel.lua"));

/// Every lock script (for the digest test in `script`).
#[cfg(test)]
pub(super) const SCRIPTS: &[&Lua] = &[&ACQUIRE, &RELEASE, &EXTEND, &CANCEL];

/// How long a wake-up nobody took stays in the list.
const WAKE_TTL_MS: u64 = 10_000;

/// The keys of one lock.
#[derive(Clone, Debug)]
pub struct Keys {
    pub name: String,
    lock: String,
    holder: String,
    fence: String,
    wake: String,
    /// Prefix of the cancelled-acquisition markers (`…:cancel:TOKEN`).
    cancel: String,
}

/// `s` with `%`, `/`, `{` and `}` percent-escaped: what is left can be
/// joined with `/` and put between `{` `}` without any ambiguity.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

impl Keys {
    /// The keys of lock `name`; `developer` (`FLOWFORGE_DEVELOPER`) puts it
    /// in that namespace, `session` among the session locks.
    ///
    /// The mapping is injective: the scope `[dev-ID/][session/]NAME` is
    /// made of escaped parts (no `/`, `{` or `}` inside one), so it splits
    /// back into exactly one (developer, session, name); it sits between
    /// `{` and `}` (also a Redis Cluster hash tag: every key of a lock is
    /// on one slot) and the fixed suffixes follow the `}`. So the lock
    /// `deploy:fence` is `ffkit:lock:{deploy:fence}`, never
    /// `ffkit:lock:{deploy}:fence`, and the command-mode LOCKFILE
    /// `session/x` is not the session lock `x`.
    pub fn new(name: &str, session: bool, developer: Option<&str>) -> Keys {
        let mut scope = String::new();
        if let Some(d) = developer {
            scope.push_str("dev-");
            scope.push_str(&escape(d));
            scope.push('/');
        }
        if session {
            scope.push_str("session/");
        }
        scope.push_str(&escape(name));
        let base = format!("ffkit:lock:{{{scope}}}");
        Keys {
            name: name.to_string(),
            holder: format!("{base}:holder"),
            fence: format!("{base}:fence"),
            wake: format!("{base}:wake"),
            cancel: format!("{base}:cancel:"),
            lock: base,
        }
    }

    /// The lock's own key (the token), for tests and messages.
    pub fn lock_key(&self) -> &str {
        &self.lock
    }
}

impl Keys {
    /// The keys of a lock living beside other data: `base` and its
    /// `:holder` and `:wake`, with a fencing counter shared by all such
    /// locks (`fence`), so that nothing outlives the lock but that one
    /// counter (cache-run's per-key locks, docs/redis.md).
    pub fn beside(name: &str, base: String, fence: String) -> Keys {
        Keys {
            name: name.to_string(),
            holder: format!("{base}:holder"),
            fence,
            wake: format!("{base}:wake"),
            cancel: format!("{base}:cancel:"),
            lock: base,
        }
    }
}

/// A lock held by a background thread that renews its lease every lease/3
/// on its own connection until the `Lease` is dropped, which releases the
/// lock (and wakes a waiter). For work that runs in this process (cache-run's
/// miss); command mode uses [`run_leased`] instead.
pub struct Lease {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Lease {
    /// Starts renewing `held` on `keys` (the thread opens its own
    /// connection at once, while the caller goes on). `Err` if no thread
    /// can be started: the caller still holds the lock and must release it.
    pub fn start(
        target: &Target,
        limits: Limits,
        area: Area,
        keys: &Keys,
        held: &Held,
    ) -> io::Result<Lease> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = lost.clone();
        let (target, keys, token) = (target.clone(), keys.clone(), held.token.clone());
        let thread = std::thread::Builder::new()
            .name("ffkit-lease".into())
            .spawn(move || {
                let mut conn = Conn::open(&target, limits.timeout, area).ok();
                let every = limits.lease / 3;
                let mut last_ok = Instant::now();
                let mut ours = true;
                loop {
                    let stop = !matches!(
                        rx.recv_timeout(every),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    if conn.is_none() {
                        conn = Conn::open(&target, limits.timeout, area).ok();
                    }
                    if stop {
                        if let (Some(c), true) = (conn.as_mut(), ours) {
                            let _ = release(c, &keys, &token);
                        }
                        return;
                    }
                    if !ours {
                        continue;
                    }
                    let renewed = match conn.as_mut() {
                        Some(c) => extend(c, &keys, &token, limits.lease, &[]),
                        None => Err(Error::General("no connection".into())),
                    };
                    match renewed {
                        Ok(true) => last_ok = Instant::now(),
                        Ok(false) => ours = false,
                        Err(_) => {
                            conn = None;
                            ours = last_ok.elapsed() < limits.lease;
                        }
                    }
                    if !ours {
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })?;
        Ok(Lease {
            stop: Some(tx),
            thread: Some(thread),
            lost,
        })
    }

    /// Whether the lease was lost (lapsed or taken over) while held.
    pub fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Closing the channel wakes the thread, which releases the lock
        // (one script call, bounded by the backend timeout).
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The holder record, as `lock-status` shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// `command` (held by a running ffkit) or `named` (a holder process).
    pub kind: String,
    pub host: String,
    /// The owner: the process the lock belongs to.
    pub pid: u32,
    pub start: Option<u64>,
    pub command: String,
    /// Acquired at, epoch seconds.
    pub since: f64,
    pub token: String,
    pub fence: u64,
    /// The process renewing the lease (named pairs).
    pub holder_pid: Option<u32>,
    pub holder_start: Option<u64>,
    /// Lease left, in milliseconds, when read.
    pub lease_left_ms: i64,
}

impl Record {
    /// A record for `pid` acquired now, on this host.
    pub fn new(kind: &str, pid: u32, command: Option<String>) -> Record {
        Record {
            kind: kind.to_string(),
            host: holder::hostname(),
            pid,
            start: holder::start_time(pid),
            command: command.unwrap_or_else(|| holder::cmdline(pid).unwrap_or_default()),
            since: holder::now_epoch(),
            ..Record::default()
        }
    }

    fn fields(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("kind".to_string(), self.kind.clone()),
            ("host".to_string(), self.host.clone()),
            ("pid".to_string(), self.pid.to_string()),
            ("command".to_string(), self.command.clone()),
            ("since".to_string(), format!("{:.6}", self.since)),
        ];
        if let Some(s) = self.start {
            v.push(("start".to_string(), s.to_string()));
        }
        v
    }

    fn from_hash(h: &HashMap<String, String>, ttl: i64) -> Record {
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok());
        Record {
            kind: h.get("kind").cloned().unwrap_or_default(),
            host: h.get("host").cloned().unwrap_or_default(),
            pid: num("pid").and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            start: num("start"),
            command: h.get("command").cloned().unwrap_or_default(),
            since: h
                .get("since")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0),
            token: h.get("token").cloned().unwrap_or_default(),
            fence: num("fence").unwrap_or(0),
            holder_pid: num("holder_pid").and_then(|p| u32::try_from(p).ok()),
            holder_start: num("holder_start"),
            lease_left_ms: ttl,
        }
    }

    /// Seconds since acquisition.
    pub fn age(&self) -> f64 {
        (holder::now_epoch() - self.since).max(0.0)
    }

    /// Whether this host's `pids` include the owner.
    pub fn owned_by(&self, pids: &[u32]) -> bool {
        self.host == holder::hostname() && pids.contains(&self.pid)
    }
}

/// A lock just taken.
#[derive(Clone, Debug)]
pub struct Held {
    pub token: String,
    /// The fencing token: this acquisition's number in the lock's counter.
    pub fence: u64,
    pub waited: Duration,
    /// When the acquisition that took it was sent: its lease runs from
    /// (no later than) here.
    pub sent: Instant,
}

/// A random 128-bit token in hex.
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 16];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).map_err(|e| {
        Error::LockFailed(format!(
            "cannot draw a random lock token: {}",
            crate::error::os_reason(&e.into())
        ))
    })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What one acquisition attempt found.
enum Attempt {
    Taken(u64),
    /// Busy, with the holder's lease left in ms.
    Busy(i64),
    /// This token's acquisition was cancelled (see [`cancel`]).
    Cancelled,
}

/// One attempt with `token` (an attempt repeated with the same token after
/// an uncertain first one finds the lock its own and gets its fence),
/// running `meanwhile` while the request is on its way.
fn try_once(
    conn: &mut Conn,
    keys: &Keys,
    token: &str,
    lease: Duration,
    rec: &Record,
    meanwhile: &mut dyn FnMut(),
) -> Result<Attempt> {
    let cancel = format!("{}{token}", keys.cancel);
    let fields = rec.fields();
    let add = |c: &mut redis::Cmd| {
        c.arg(&keys.lock)
            .arg(&keys.holder)
            .arg(&keys.fence)
            .arg(&cancel)
            .arg(token)
            .arg(ms(lease));
        for (k, v) in &fields {
            c.arg(k).arg(v);
        }
    };
    let (got, n): (i64, i64) = conn.eval_then("cannot take lock", &ACQUIRE, 4, add, meanwhile)?;
    Ok(match got {
        1 => Attempt::Taken(u64::try_from(n).unwrap_or(0)),
        0 => Attempt::Busy(n),
        _ => Attempt::Cancelled,
    })
}

/// Gives up `token`'s acquisition whose outcome is unknown (its reply
/// timed out or the connection broke): on a fresh connection, marks the
/// token cancelled so the acquisition can no longer take the lock, and
/// releases it if it already did. Best effort, one timeout at most: if the
/// server cannot be reached either, a lock taken meanwhile lapses with its
/// lease (nobody renews it).
fn cancel(conn: &mut Conn, keys: &Keys, token: &str, lease: Duration) {
    if conn.reconnect().is_err() {
        return;
    }
    let marker = format!("{}{token}", keys.cancel);
    // A marker outlives any acquisition that could still arrive: ten leases.
    let keep = ms(lease.saturating_mul(10)).max(60_000);
    let _: Result<i64> = conn.eval_source("cannot cancel", CANCEL.source(), 4, |c| {
        c.arg(&keys.lock)
            .arg(&keys.holder)
            .arg(&keys.wake)
            .arg(&marker)
            .arg(token)
            .arg(WAKE_TTL_MS)
            .arg(keep);
    });
}

/// Takes lock `keys` for `rec`, waiting as `wait` says: between attempts it
/// blocks on the wake-up list for at most one step of `schedule` (and never
/// past the deadline or the holder's lease), so a missed wake-up costs at
/// most one backoff step. `on_wait` is called once, with the holder, when
/// the first attempt finds the lock busy.
///
/// A failed or uncertain attempt never leaves the lock behind: the token
/// is cancelled ([`cancel`]) before the error is returned. A waiter (the
/// first attempt found the lock busy) rides out a server blip: a failure
/// while waiting is tried again, on a new connection and with the same
/// token, until the deadline (without one: for one lease), and only then
/// returned.
///
/// `meanwhile` runs once, while the first attempt is on its way to the
/// server (command mode starts its guard there: [`super::guard::start`]);
/// not at all if that attempt cannot be sent.
///
/// `parent_owner`: a named pair's owner when it is this process's parent
/// (the shell functions' waiter, `--owner` of the shell that started it).
/// While such a waiter only waits (a `BLPOP`, holding nothing) it dies
/// with that owner, as a local one does (`PR_SET_PDEATHSIG`): a shell
/// killed while waiting leaves no waiter behind, that waited on until
/// `LOCK_TIMEOUT` or the lock's release and then said "owner pid N: no
/// such process" on the dead script's stderr. An owner gone between two
/// waits is `Denied::Interrupted`.
#[allow(clippy::too_many_arguments)]
pub fn acquire(
    conn: &mut Conn,
    keys: &Keys,
    rec: &Record,
    lease: Duration,
    wait: Wait,
    schedule: Schedule,
    on_wait: &mut dyn FnMut(Option<&Record>),
    meanwhile: &mut dyn FnMut(),
    parent_owner: Option<u32>,
) -> Result<std::result::Result<Held, Denied>> {
    let mut meanwhile = Some(meanwhile);
    let start = Instant::now();
    let token = new_token()?;
    let deadline = match wait {
        Wait::Until(d) => Some(d),
        _ => None,
    };
    let mut sleeps = Sleeps::new(schedule, deadline);
    let mut noted = false;
    let mut failing_since: Option<Instant> = None;
    loop {
        let sent = Instant::now();
        let step = waiting_step(
            conn,
            keys,
            &token,
            lease,
            rec,
            wait,
            &mut sleeps,
            &mut noted,
            on_wait,
            &mut meanwhile,
            parent_owner,
        );
        let outcome = match step {
            Ok(Step::Done(Ok((fence, sent)))) => {
                return Ok(Ok(Held {
                    token,
                    fence,
                    waited: start.elapsed(),
                    sent,
                }));
            }
            Ok(Step::Done(Err(d))) => return Ok(Err(d)),
            Ok(Step::Again) => {
                failing_since = None;
                continue;
            }
            Err(e) => e,
        };
        // A failure: the acquisition may have gone through.
        let since = *failing_since.get_or_insert(sent);
        let retry_until = deadline.unwrap_or(since + lease);
        let pause = (conn.timeout() / 4).max(Duration::from_millis(20));
        // Only a waiter rides out a blip: a call whose first attempt got no
        // answer fails within its timeout, as every other call does.
        if !noted || Instant::now() + pause >= retry_until {
            cancel(conn, keys, &token, lease);
            return Err(outcome);
        }
        std::thread::sleep(pause);
        // A server still away fails this at once or within one timeout,
        // and the loop comes back here.
        let _ = conn.reconnect();
    }
}

/// What one round of [`acquire`] ended with.
enum Step {
    /// Taken (fence, when it was sent) or denied.
    Done(std::result::Result<(u64, Instant), Denied>),
    /// Woken or a backoff step passed: try again.
    Again,
}

#[allow(clippy::too_many_arguments)]
fn waiting_step(
    conn: &mut Conn,
    keys: &Keys,
    token: &str,
    lease: Duration,
    rec: &Record,
    wait: Wait,
    sleeps: &mut Sleeps,
    noted: &mut bool,
    on_wait: &mut dyn FnMut(Option<&Record>),
    meanwhile: &mut Option<&mut dyn FnMut()>,
    parent_owner: Option<u32>,
) -> Result<Step> {
    let sent = Instant::now();
    let first = meanwhile.take();
    let left = match try_once(conn, keys, token, lease, rec, first.unwrap_or(&mut || {}))? {
        Attempt::Taken(fence) => return Ok(Step::Done(Ok((fence, sent)))),
        Attempt::Cancelled => {
            return Err(Error::LockFailed(format!(
                "lock {}: this acquisition was cancelled",
                keys.name
            )));
        }
        Attempt::Busy(left) => left,
    };
    if wait == Wait::NonBlocking {
        return Ok(Step::Done(Err(Denied::Busy)));
    }
    if !*noted {
        *noted = true;
        on_wait(status(conn, keys)?.as_ref());
    }
    let Some(mut step) = sleeps.next_at(Instant::now()) else {
        return Ok(Step::Done(Err(Denied::TimedOut)));
    };
    if left > 0 {
        // A lease that lapses (its holder died) wakes nobody: retry then.
        step = step.min(Duration::from_millis(left.unsigned_abs() + 1));
    }
    let secs = format!("{:.3}", step.as_secs_f64().max(0.001));
    let mut blpop = redis::cmd("BLPOP");
    blpop.arg(&keys.wake).arg(&secs);
    // Dies with its owner only around the BLPOP: killed while an attempt
    // is on its way, it could leave a lock taken for nobody until the
    // lease lapses. Asked, then the parent checked: an owner that exited
    // before the ask sends no signal.
    use rustix::process::{Signal, set_parent_process_death_signal};
    if let Some(owner) = parent_owner {
        let _ = set_parent_process_death_signal(Some(Signal::KILL));
        if crate::lock::parent_pid() != owner {
            let _ = set_parent_process_death_signal(None);
            return Ok(Step::Done(Err(Denied::Interrupted)));
        }
    }
    let woken: Result<Option<(String, String)>> =
        conn.cmd_waiting("cannot wait for lock", &blpop, step);
    if parent_owner.is_some() {
        let _ = set_parent_process_death_signal(None);
    }
    woken?;
    Ok(Step::Again)
}

/// Releases the lock if `token` still holds it; `false` when it did not.
pub fn release(conn: &mut Conn, keys: &Keys, token: &str) -> Result<bool> {
    let n: i64 = conn.eval("cannot release lock", &RELEASE, 3, |c| {
        c.arg(&keys.lock)
            .arg(&keys.holder)
            .arg(&keys.wake)
            .arg(token)
            .arg(WAKE_TTL_MS);
    })?;
    Ok(n == 1)
}

/// Renews the lease if `token` still holds the lock, adding `fields` to
/// the holder record; `false` when the lock is no longer ours.
pub fn extend(
    conn: &mut Conn,
    keys: &Keys,
    token: &str,
    lease: Duration,
    fields: &[(&str, String)],
) -> Result<bool> {
    let n: i64 = conn.eval("cannot renew lock", &EXTEND, 2, |c| {
        c.arg(&keys.lock)
            .arg(&keys.holder)
            .arg(token)
            .arg(ms(lease));
        for (k, v) in fields {
            c.arg(*k).arg(v);
        }
    })?;
    Ok(n == 1)
}

/// The holder of lock `keys`, or `None` when it is free.
pub fn status(conn: &mut Conn, keys: &Keys) -> Result<Option<Record>> {
    let mut p = redis::pipe();
    p.cmd("GET")
        .arg(&keys.lock)
        .cmd("PTTL")
        .arg(&keys.lock)
        .cmd("HGETALL")
        .arg(&keys.holder);
    let (token, ttl, h): (Option<String>, i64, HashMap<String, String>) =
        conn.pipe("cannot read lock", &p)?;
    let Some(token) = token else {
        return Ok(None);
    };
    let mut r = Record::from_hash(&h, ttl);
    if r.token != token {
        // The record belongs to an earlier holder (or is missing): only the
        // token is known for sure.
        r = Record {
            token,
            lease_left_ms: ttl,
            ..Record::default()
        };
    }
    Ok(Some(r))
}

/// The signals command mode passes on to the command's process group.
const FORWARDED: [i32; 4] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP];

/// How a leased command ended.
#[derive(Debug)]
pub enum RunEnd {
    /// The command ended by itself (its status, or 128+signal), and whether
    /// the lock was released (else it lapses with the lease).
    Exited { status: u8, release: Result<bool> },
    /// It could not be started (127/126).
    NotStarted(u8, io::Error),
    /// The lease could not be renewed: the command's process group was
    /// stopped (SIGTERM, then SIGKILL). `status` is how it ended.
    LeaseLost { why: String, status: u8 },
}

/// Runs `cmd` holding the lease `held` on `keys`: renews it every lease/3,
/// and stops the command's process group (SIGTERM, then SIGKILL before the
/// lease would lapse) when a renewal fails, so two holders never run at
/// once. The process's guard ([`super::guard`]) stops the group if this
/// process dies meanwhile. The terminal's INT/QUIT and TERM/HUP sent to
/// ffkit are passed on to the group. `started` runs once, as soon as the
/// command runs (guarded), so what it does overlaps the command's start
/// instead of following its exit.
pub fn run_leased(
    target: &Target,
    limits: Limits,
    mut conn: Conn,
    keys: &Keys,
    held: &Held,
    mut cmd: std::process::Command,
    started: &mut dyn FnMut(),
) -> RunEnd {
    use std::os::unix::process::CommandExt;
    // Caught, not blocked, while the command starts: it starts with the
    // caller's mask, through posix_spawn or a fork (signals.rs).
    let relay = match Relay::catch(&[&FORWARDED[..], &[libc::SIGCHLD]].concat()) {
        Ok(r) => r,
        Err(e) => {
            let _ = release(&mut conn, keys, &held.token);
            return RunEnd::NotStarted(126, e);
        }
    };
    // Normally started while the acquisition was on its way (driver.rs);
    // this is a no-op then.
    let guarded = super::guard::start();
    let tty = foreground_tty();
    let grace = limits.lease / 6;
    // The command joins the guard's group, armed before the command exists:
    // a SIGKILL of ffkit at any instant leaves nothing unguarded. Without
    // a known group (no guard), a group of its own, armed once it runs.
    let (shared, mut armed) = match super::guard::arm_own(grace) {
        Some((g, a)) => (Some(g), Some(a)),
        None => (None, None),
    };
    cmd.process_group(shared.map_or(0, |g| g as i32));
    let mut child = match crate::fsutil::with_callers_mask(|| cmd.spawn()) {
        Ok(c) => c,
        Err(e) => {
            if let Some(a) = armed.take() {
                a.disarm();
            }
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let _ = release(&mut conn, keys, &held.token);
            return RunEnd::NotStarted(code, e);
        }
    };
    relay.block();
    let pgid = shared.unwrap_or_else(|| child.id());
    if shared.is_none() && guarded {
        armed = super::guard::arm(pgid, grace);
    }
    if let (Some(t), Some(p)) = (&tty, Pid::from_raw(pgid as i32)) {
        // The command's group gets the terminal, so it can read it and
        // gets the terminal's Ctrl-C directly; continue it in case it was
        // stopped reading before the hand-over.
        let _ = rustix::termios::tcsetpgrp(t, p);
        let _ = rustix::process::kill_process_group(p, Signal::CONT);
    }
    started();
    let mut cmd = Cmd {
        child: &mut child,
        pgid,
        shared: shared.is_some(),
        armed: &mut armed,
    };
    let lease = limits.lease;
    // The lease runs from when the last successful renewal (or the
    // acquisition) was sent: it lapses on the server no later than
    // `base + lease`. Renew at a third; if renewals keep failing, SIGTERM
    // at two thirds and SIGKILL at five sixths, so the command is gone a
    // sixth of the lease before anyone else can take the lock.
    let mut base = held.sent;
    let mut next = base + lease / 3;
    let mut last_err: Option<Error> = None;
    let retry_pause = (lease / 30).max(Duration::from_millis(10));
    let mut conn = Some(conn);
    let end = loop {
        match cmd.exited() {
            Ok(true) => {
                let status = cmd.reap();
                let release = match conn.as_mut() {
                    Some(c) => {
                        c.set_cap(None);
                        release(c, keys, &held.token)
                    }
                    None => Conn::open(target, limits.timeout, Area::Lock)
                        .and_then(|mut c| release(&mut c, keys, &held.token)),
                };
                break RunEnd::Exited { status, release };
            }
            Ok(false) => {}
            Err(e) => {
                break cmd.stop(
                    base + lease * 5 / 6,
                    format!(
                        "cannot wait for the command: {}",
                        crate::error::os_reason(&e)
                    ),
                );
            }
        }
        let term_at = base + lease * 2 / 3;
        let now = Instant::now();
        if now >= term_at {
            let why = match last_err.take() {
                Some(e) => format!("lock {}: lease renewal failed: {e}", keys.name),
                None => format!("lock {}: lease renewal failed", keys.name),
            };
            break cmd.stop(base + lease * 5 / 6, why);
        }
        let due = next.min(term_at);
        if now < due {
            match relay.wait(due - now) {
                Some(sig) if sig != libc::SIGCHLD => {
                    if let Some(s) = Signal::from_named_raw(sig)
                        && let Some(p) = Pid::from_raw(pgid as i32)
                    {
                        let _ = rustix::process::kill_process_group(p, s);
                    }
                    continue;
                }
                _ => continue,
            }
        }
        let sent = Instant::now();
        match renew(target, limits, &mut conn, keys, &held.token, term_at) {
            Ok(true) => {
                base = sent;
                next = base + lease / 3;
                last_err = None;
            }
            Ok(false) => {
                // Someone else may hold it already: no grace at all.
                break cmd.kill(format!(
                    "lock {}: lease lost (expired or taken over)",
                    keys.name
                ));
            }
            Err(e) => {
                conn = None;
                last_err = Some(e);
                next = Instant::now() + retry_pause;
            }
        }
    };
    if let Some(t) = &tty {
        let _ = rustix::termios::tcsetpgrp(t, rustix::process::getpgrp());
    }
    drop(relay);
    end
}

/// Standard input, when it is the terminal and ffkit's group is in its
/// foreground (an interactive `lock-acquire NAME -- CMD`). Only the
/// terminal's process group is asked and set through it; nothing is read.
fn foreground_tty() -> Option<std::os::fd::BorrowedFd<'static>> {
    let stdin = rustix::stdio::stdin();
    let fg = rustix::termios::isatty(stdin)
        && rustix::termios::tcgetpgrp(stdin).ok() == Some(rustix::process::getpgrp());
    fg.then_some(stdin)
}

/// One renewal attempt, on a new connection if the last one broke, ending
/// by `cap` whatever the server does.
fn renew(
    target: &Target,
    limits: Limits,
    conn: &mut Option<Conn>,
    keys: &Keys,
    token: &str,
    cap: Instant,
) -> Result<bool> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(Conn::open_until(
            target,
            limits.timeout,
            Area::Lock,
            Some(cap),
        )?),
    };
    c.set_cap(Some(cap));
    extend(c, keys, token, limits.lease, &[])
}

/// The running command: our own child, in process group `pgid`, and the
/// guard armed with that group. The group is the guard's (`shared`), whose
/// number cannot be anyone else's while the guard lives, or else the
/// command's own: then the child is reaped only after the guard is
/// disarmed, and until then it is at least a zombie, so neither its pid
/// nor its group's number can be anyone else's.
struct Cmd<'a> {
    child: &'a mut std::process::Child,
    pgid: u32,
    shared: bool,
    armed: &'a mut Option<super::guard::Armed>,
}

impl Cmd<'_> {
    /// Whether the command has exited (it is not reaped).
    fn exited(&self) -> io::Result<bool> {
        let Some(pid) = Pid::from_raw(self.child.id() as i32) else {
            return Ok(true);
        };
        let how = rustix::process::WaitIdOptions::EXITED
            | rustix::process::WaitIdOptions::NOHANG
            | rustix::process::WaitIdOptions::NOWAIT;
        loop {
            match rustix::process::waitid(rustix::process::WaitId::Pid(pid), how) {
                Ok(st) => return Ok(st.is_some()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Disarms the guard and reaps the command (waiting for it if it still
    /// runs): its status, or 128+signal.
    fn reap(&mut self) -> u8 {
        if let Some(a) = self.armed.take() {
            a.disarm();
        }
        self.child
            .wait()
            .map(crate::lock::run::status_code)
            .unwrap_or(1)
    }

    fn group(&self) -> Option<Pid> {
        Pid::from_raw(self.pgid as i32)
    }

    /// Stops the command's group: SIGTERM, then SIGKILL at `kill_at` at the
    /// latest (before the lease can lapse).
    fn stop(&mut self, kill_at: Instant, why: String) -> RunEnd {
        let Some(p) = self.group() else {
            let status = self.reap();
            return RunEnd::LeaseLost { why, status };
        };
        let _ = rustix::process::kill_process_group(p, Signal::TERM);
        while !self.exited().unwrap_or(true) && Instant::now() < kill_at {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Whatever is left of the group (the command's children) goes too.
        self.kill_group(p);
        let status = self.reap();
        RunEnd::LeaseLost { why, status }
    }

    /// SIGKILLs the command's group at once (the lease is known lost).
    fn kill(&mut self, why: String) -> RunEnd {
        if let Some(p) = self.group() {
            self.kill_group(p);
        }
        let status = self.reap();
        RunEnd::LeaseLost { why, status }
    }

    /// SIGKILL to the group; the guard, when the group is its own, goes
    /// with it (it blocks every other signal): forgotten, and reaped.
    fn kill_group(&mut self, p: Pid) {
        let _ = rustix::process::kill_process_group(p, Signal::KILL);
        if self.shared {
            if let Some(a) = self.armed.take() {
                a.disarm();
            }
            super::guard::killed();
        }
    }
}

/// SIGKILL to our own unreaped child (its pid cannot have been recycled).
fn kill_own_child(pid: libc::pid_t) -> io::Result<()> {
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    rustix::process::kill_process(pid, Signal::KILL).map_err(io::Error::from)
}

/// Reaps our own child.
fn reap_own_child(pid: libc::pid_t) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

/// Named pairs: forks the holder process that keeps lock `keys` for
/// `owner`: it renews the lease every lease/3, releases the lock when the
/// owner exits, and stops renewing when the lease is lost; it then stays
/// (see [`holder_main`]) until the owner exits or `lock-release` asks.
/// Returns the holder's pid.
pub fn hold_named(
    target: &Target,
    limits: Limits,
    conn: &mut Conn,
    keys: &Keys,
    held: &Held,
    owner: u32,
) -> Result<u32> {
    let pid = Pid::from_raw(owner as i32)
        .ok_or_else(|| Error::NotFound(format!("owner pid {owner}: no such process")))?;
    let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = release(conn, keys, &held.token);
            return Err(if e == rustix::io::Errno::SRCH {
                Error::NotFound(format!("owner pid {owner}: no such process"))
            } else {
                Error::LockFailed(format!(
                    "cannot watch owner pid {owner}: {}",
                    crate::error::os_reason(&e.into())
                ))
            });
        }
    };
    // Bound before the fork, so that it answers from the moment this call
    // returns. Without it (no unix sockets here) a lost lock's release
    // says "not held", as before.
    let listener = listen_as_holder(target, keys, owner, limits.timeout);
    let child = match crate::lock::named::fork_helper() {
        Ok(Some(pid)) => pid,
        Ok(None) => holder_main(target, limits, keys, &held.token, pidfd, listener),
        Err(e) => {
            let _ = release(conn, keys, &held.token);
            return Err(Error::LockFailed(format!(
                "cannot start the holder process: {}",
                crate::error::os_reason(&e)
            )));
        }
    };
    drop(pidfd);
    drop(listener);
    let fields = [
        ("holder_pid", child.to_string()),
        (
            "holder_start",
            holder::start_time(child).map_or_else(String::new, |s| s.to_string()),
        ),
    ];
    if let Err(e) = extend(conn, keys, &held.token, limits.lease, &fields) {
        // Without its pid in the record nobody could end the holder: end it
        // and give the lock back (it lapses with the lease otherwise).
        // `child` is our own unreaped child, so its pid is ours.
        let _ = kill_own_child(child as libc::pid_t);
        reap_own_child(child as libc::pid_t);
        let _ = release(conn, keys, &held.token);
        return Err(e);
    }
    Ok(child)
}

/// The address a named pair's holder listens on while it lives: an
/// abstract unix socket (nothing on disk, gone with the process) named by
/// this user, the backend and lock, and the owner. `lock-release` finds
/// the holder of a lock the server no longer has there ([`end_listening`]).
fn holder_address(
    target: &Target,
    keys: &Keys,
    owner: u32,
) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    let uid = rustix::process::getuid().as_raw();
    let which = blake3::hash(format!("{}\n{}", target.label, keys.lock).as_bytes());
    let name = format!("ffkit/redis-holder/{uid}/{}/{owner}", &which.to_hex()[..32]);
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()
}

/// Listens on [`holder_address`] for a new holder of `owner`'s. A holder
/// still there from a lost holding of the same owner (never released) is
/// ended first.
fn listen_as_holder(
    target: &Target,
    keys: &Keys,
    owner: u32,
    timeout: Duration,
) -> Option<std::os::unix::net::UnixListener> {
    let addr = holder_address(target, keys, owner)?;
    for _ in 0..100 {
        match std::os::unix::net::UnixListener::bind_addr(&addr) {
            Ok(l) => return Some(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                // Ended: its listener closed before its answer did, but
                // the kernel may still be tearing the process down.
                end_at(&addr, timeout)?;
                std::thread::yield_now();
            }
            Err(_) => return None,
        }
    }
    None
}

/// Asks the holder of `owner`'s (one of the `owners`) for lock `keys`, if
/// one still lives on this host, to end, and waits until it has: after a
/// release by token (so that the lock is free and its holder gone when
/// `lock-release` returns, and a second release finds no holder), or when
/// the server no longer has the lock under that holder's token (lost: a
/// restart or failover that lost it, a lapsed lease). The pid of the owner
/// whose holder it was, if any. `timeout`: the backend's (a holder in the
/// middle of a renewal answers once it is done).
pub fn end_listening(
    target: &Target,
    keys: &Keys,
    owners: &[u32],
    timeout: Duration,
) -> Option<u32> {
    owners.iter().copied().find(|&owner| {
        holder_address(target, keys, owner).is_some_and(|addr| end_at(&addr, timeout).is_some())
    })
}

/// Connects to a holder's address and waits for it to end (it ends when
/// asked by a process of its own user: a connection is the request). The
/// holder's pid, if one of this user's answered.
///
/// The connect does not wait: a listener whose backlog is full (another
/// user's socket squatting the name, never accepting) would hold a
/// blocking connect forever, past every deadline; its EAGAIN is "no
/// holder of ours answers". A holder's own backlog is std's 128, for
/// releases that come one at a time.
fn end_at(addr: &std::os::unix::net::SocketAddr, timeout: Duration) -> Option<u32> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use std::io::Read;
    use std::os::linux::net::SocketAddrExt;
    let name = SocketAddrUnix::new_abstract_name(addr.as_abstract_name()?).ok()?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .ok()?;
    rustix::net::connect(&fd, &name).ok()?;
    let peer = rustix::net::sockopt::socket_peercred(&fd).ok()?;
    if peer.uid != rustix::process::getuid() {
        return None;
    }
    let mut s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(false).ok()?;
    // It closes the connection as it exits, at its next wait: a renewal
    // in progress takes at most a connect and a request.
    let _ = s.set_read_timeout(Some(timeout * 2 + Duration::from_secs(1)));
    let _ = s.read(&mut [0u8; 1]);
    Some(peer.pid.as_raw_nonzero().get() as u32)
}

/// Waits up to `d` (forever: `None`) for the owner to exit (its pidfd
/// readable) or a release to ask through `listener`: (owner gone, the
/// asker's connection). A connection from another user is dropped.
fn holder_wait(
    owner: std::os::fd::BorrowedFd<'_>,
    listener: Option<&std::os::unix::net::UnixListener>,
    d: Option<Duration>,
) -> (bool, Option<std::os::unix::net::UnixStream>) {
    use rustix::event::{PollFd, PollFlags};
    let end = d.map(|d| Instant::now() + d);
    loop {
        let left = end.map(|e| e.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return (false, None);
        }
        let ts = left.map(|d| rustix::event::Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        let mut fds = vec![PollFd::new(&owner, PollFlags::IN)];
        fds.extend(listener.map(|l| PollFd::new(l, PollFlags::IN)));
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(0) => return (false, None),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return (false, None),
        }
        if !fds[0].revents().is_empty() {
            return (true, None);
        }
        let Some(l) = listener else { continue };
        if let Ok((s, _)) = l.accept() {
            let ours = rustix::net::sockopt::socket_peercred(&s)
                .is_ok_and(|p| p.uid == rustix::process::getuid());
            if ours {
                return (false, Some(s));
            }
        }
    }
}

/// The named-pair holder process. While the lock is held it renews the
/// lease every lease/3, and releases the lock when the owner exits. Once
/// the lease is lost (a renewal finds another token or none: the server
/// restarted without it, a failover lost it, the lease lapsed) it renews
/// no more but stays, listening, until the owner exits: `lock-release`
/// then learns from it that the lock was lost rather than never taken. A
/// release that asks ends it, held or lost.
fn holder_main(
    target: &Target,
    limits: Limits,
    keys: &Keys,
    token: &str,
    owner: OwnedFd,
    listener: Option<std::os::unix::net::UnixListener>,
) -> ! {
    // The freshly forked child: its own session, stdio on /dev/null, no
    // descriptor of the caller's but the owner's pidfd (and the holder's
    // listener), terminal and pipe signals ignored — like the local named
    // holder.
    let mut keep = vec![std::os::fd::AsRawFd::as_raw_fd(&owner)];
    keep.extend(listener.as_ref().map(std::os::fd::AsRawFd::as_raw_fd));
    crate::lock::named::detach_holder(&keep);
    let every = limits.lease / 3;
    let mut conn: Option<Conn> = None;
    let mut last_ok = Instant::now();
    loop {
        let (owner_gone, asked) = holder_wait(owner.as_fd(), listener.as_ref(), Some(every));
        if let Some(asker) = asked {
            // Asked by a release that found the lock no longer ours.
            answer_and_exit(listener, asker);
        }
        if conn.is_none() {
            conn = Conn::open(target, limits.timeout, Area::Lock).ok();
        }
        if owner_gone {
            if let Some(c) = conn.as_mut() {
                let _ = release(c, keys, token);
            }
            crate::lock::named::exit_helper();
        }
        let renewed = match conn.as_mut() {
            Some(c) => extend(c, keys, token, limits.lease, &[]),
            None => Err(Error::LockFailed("no connection".into())),
        };
        match renewed {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => break,
            Err(_) => {
                conn = None;
                if last_ok.elapsed() >= limits.lease {
                    break;
                }
            }
        }
    }
    // Lost: no more renewals, nothing to release.
    drop(conn);
    if listener.is_some()
        && let (_, Some(asker)) = holder_wait(owner.as_fd(), listener.as_ref(), None)
    {
        answer_and_exit(listener, asker);
    }
    crate::lock::named::exit_helper()
}

/// Ends the holder a release asked to end: the listener closes first, so
/// that when the asker sees its connection close the address is free.
fn answer_and_exit(
    listener: Option<std::os::unix::net::UnixListener>,
    asker: std::os::unix::net::UnixStream,
) -> ! {
    drop(listener);
    drop(asker);
    crate::lock::named::exit_helper()
}

/// Signals a named pair's holder process on this host to end, if the record
/// names one that is still the same process.
pub fn end_holder(rec: &Record) {
    let (Some(hpid), true) = (rec.holder_pid, rec.host == holder::hostname()) else {
        return;
    };
    let Some(p) = Pid::from_raw(hpid as i32) else {
        return;
    };
    if let Ok(fd) = rustix::process::pidfd_open(p, PidfdFlags::empty())
        && holder::same_process(hpid, rec.holder_start)
    {
        // The pidfd pins the process; the start time proves it is the holder.
        let _ = rustix::process::pidfd_send_signal(&fd, Signal::TERM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_locks_share_a_key() {
        let names = [
            "deploy",
            "deploy:fence",
            "deploy:holder",
            "deploy:wake",
            "deploy:cancel:00",
            "deploy}",
            "{deploy}",
            "deploy}:fence",
            "session/deploy",
            "dev-a/deploy",
            "dev-a/session/deploy",
            "/tmp/deploy.lock",
            "%2Ftmp%2Fdeploy.lock",
            "a%",
            "a%25",
        ];
        let mut seen: HashMap<String, String> = HashMap::new();
        for name in names {
            for session in [false, true] {
                for dev in [None, Some("a"), Some("a/session"), Some("a}")] {
                    let k = Keys::new(name, session, dev);
                    let who = format!("{name:?} session={session} dev={dev:?}");
                    for key in [&k.lock, &k.holder, &k.fence, &k.wake] {
                        if let Some(other) = seen.insert(key.clone(), who.clone()) {
                            panic!("{key} belongs to both {other} and {who}");
                        }
                    }
                    // One hash tag for every key of the lock: one slot.
                    let tag = |s: &str| s[s.find('{').unwrap()..=s.find('}').unwrap()].to_string();
                    assert!(
                        [&k.holder, &k.fence, &k.wake, &k.cancel]
                            .iter()
                            .all(|x| tag(x) == tag(&k.lock)),
                        "{k:?}"
                    );
                }
            }
        }
        assert_eq!(Keys::new("deploy", false, None).lock, "ffkit:lock:{deploy}");
        assert_eq!(
            Keys::new("s1", true, Some("bob")).fence,
            "ffkit:lock:{dev-bob/session/s1}:fence"
        );
    }
}
