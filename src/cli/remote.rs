//! The lock and cache applets on a remote backend (`FFKIT_BACKEND` or
//! `--backend URL`; docs/redis.md). Each applet turns its matches into one
//! of the plain requests below and hands over at one dispatch point; the
//! logic lives in `backend::redis`, this module only words the outcome.

use crate::metrics::Op;
use std::time::Duration;

use serde_json::json;

use super::{Ctx, ExitCode};
use crate::backend::redis::cache::{self as rcache, RedisCache};
use crate::backend::redis::conn::{Area, Conn};
use crate::backend::redis::lock::{self as rlock, Keys, Record, RunEnd};
use crate::backend::{Limits, Target};
use crate::error::{Error, ExitKind, Result};
use crate::lock::run::Program;
use crate::lock::{Denied, Wait, backoff, holder};

/// `lock-acquire` on the remote backend.
pub struct Acquire {
    pub target: String,
    pub program: Option<Program>,
    pub command_text: Option<String>,
    pub wait: Wait,
    /// The `-w` seconds, for the timeout message.
    pub timeout: Option<Duration>,
    pub conflict_code: Option<u8>,
    pub owner: Option<u32>,
    pub session: bool,
    /// Print the one waiting line (as locally: on a terminal, with
    /// --verbose or FF_DEBUG=true).
    pub note_wait: bool,
    pub verbose: bool,
    pub quiet: bool,
}

/// The lock name of a target: a NAME is checked like a local lock name; a
/// path (command mode's LOCKFILE) is used verbatim as the name.
fn lock_name(target: &str) -> Result<&str> {
    if crate::lock::names_a_path(target) {
        return Ok(target);
    }
    crate::lock::validate_name(target)
}

fn open(t: &Target, ctx: &Ctx) -> Result<Conn> {
    Conn::open(t, ctx.cfg.backend_timeout, Area::Lock)
}

/// "held by pid 123 (cmd) on host for 3.2s, fence 7".
fn describe(r: Option<&Record>) -> String {
    let Some(r) = r else {
        return "held".into();
    };
    if r.pid == 0 {
        return "held".into();
    }
    let mut s = format!("held by pid {}", r.pid);
    if !r.command.is_empty() {
        s.push_str(&format!(" ({})", r.command));
    }
    if !r.host.is_empty() {
        s.push_str(&format!(" on {}", r.host));
    }
    s.push_str(&format!(" for {:.1}s", r.age()));
    s
}

pub fn lock_acquire(t: &Target, req: Acquire, ctx: &mut Ctx) -> Result<ExitCode> {
    let name = lock_name(&req.target)?.to_string();
    let keys = Keys::new(&name, req.session, ctx.cfg.developer.as_deref());
    let limits = Limits::from_config(&ctx.cfg);
    let start = std::time::Instant::now();
    let owner = match (&req.program, req.owner) {
        (Some(_), _) => std::process::id(),
        (None, Some(o)) => o,
        (None, None) => rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32),
    };
    let kind = if req.program.is_some() {
        "command"
    } else {
        "named"
    };
    let rec = Record::new(kind, owner, req.command_text.clone());
    if req.program.is_none() && rec.start.is_none() && !crate::fsutil::pid_alive(owner) {
        return Err(Error::NotFound(format!(
            "owner pid {owner}: no such process"
        )));
    }
    let mut conn = open(t, ctx)?;
    if req.program.is_none()
        && let Some(r) = rlock::status(&mut conn, &keys)?
        && r.owned_by(&[owner])
        && r.kind == "named"
    {
        return Err(Error::Conflict(format!(
            "{name}: already held by this owner (pid {owner}); release it first"
        )));
    }
    let schedule = backoff::Schedule::new(
        ctx.cfg.backoff,
        ctx.cfg.backoff_initial,
        ctx.cfg.backoff_max,
    );
    let got = {
        let note = req.note_wait;
        let label = name.clone();
        let mut on_wait = |r: Option<&Record>| {
            if note {
                ctx.note(format_args!("waiting for lock {label} ({})", describe(r)));
            }
        };
        rlock::acquire(
            &mut conn,
            &keys,
            &rec,
            limits.lease,
            req.wait,
            schedule,
            &mut on_wait,
        )?
    };
    let held = match got {
        Ok(h) => h,
        Err(d) => {
            let seen = rlock::status(&mut conn, &keys).ok().flatten();
            return denied(ctx, &req, &name, d, describe(seen.as_ref()));
        }
    };
    ctx.metric_duration = Some(start.elapsed());
    if req.verbose && !req.quiet {
        ctx.note(format_args!(
            "getting lock took {:.6} seconds (fence {})",
            held.waited.as_secs_f64(),
            held.fence
        ));
    }
    let Some(program) = &req.program else {
        let hpid = rlock::hold_named(t, limits, &mut conn, &keys, &held, owner)?;
        ctx.debug(format_args!(
            "{name}: held by holder pid {hpid} for owner {owner}, fence {}",
            held.fence
        ));
        return Ok(ExitCode::SUCCESS);
    };
    let Some(mut cmd) = command_of(program) else {
        let _ = rlock::release(&mut conn, &keys, &held.token);
        return Err(Error::Validation("no command".into()));
    };
    cmd.env("FFKIT_LOCK_FENCE", held.fence.to_string());
    if req.verbose && !req.quiet {
        ctx.note(format_args!("executing {}", program.name()));
    }
    match rlock::run_leased(t, limits, conn, &keys, &held, cmd) {
        RunEnd::Exited { status, release } => {
            match release {
                Ok(true) => {}
                Ok(false) => ctx.note(format_args!(
                    "lock {name}: the lease had already lapsed when the command ended"
                )),
                Err(e) => ctx.note(format_args!(
                    "{e}; the lock lapses within {}s",
                    limits.lease.as_secs_f64()
                )),
            }
            Ok(ExitCode::from(status))
        }
        RunEnd::NotStarted(code, e) => {
            ctx.note(format_args!("cannot run {}: {e}", program.name()));
            Ok(ExitCode::from(code))
        }
        RunEnd::LeaseLost { why, status } => Err(Error::LockFailed(format!(
            "{why}: the command was stopped (it ended with status {status})"
        ))),
    }
}

fn command_of(p: &Program) -> Option<std::process::Command> {
    match p {
        Program::Argv(v) => {
            let (first, rest) = v.split_first()?;
            let mut c = std::process::Command::new(first);
            c.args(rest);
            Some(c)
        }
        Program::Shell { shell, text } => {
            let mut c = std::process::Command::new(shell);
            c.arg("-c").arg(text);
            Some(c)
        }
    }
}

fn denied(ctx: &Ctx, req: &Acquire, name: &str, d: Denied, who: String) -> Result<ExitCode> {
    let msg = match (d, req.timeout) {
        (Denied::Busy, _) => format!("{name}: busy, {who}"),
        (Denied::TimedOut, Some(t)) => {
            format!("{name}: timed out after {}s, {who}", t.as_secs_f64())
        }
        (Denied::TimedOut, None) => format!("{name}: timed out, {who}"),
        (Denied::Interrupted, _) => format!("{name}: interrupted"),
    };
    if let Some(code) = req.conflict_code {
        if !req.quiet {
            ctx.note(&msg);
        }
        return Ok(ExitCode::from(code));
    }
    if req.quiet {
        let k = match d {
            Denied::Busy => ExitKind::Conflict,
            Denied::TimedOut => ExitKind::Timeout,
            Denied::Interrupted => ExitKind::General,
        };
        return Ok(ExitCode::from(k.code()));
    }
    Err(match d {
        Denied::Busy => Error::Conflict(msg),
        Denied::TimedOut => Error::Timeout(msg),
        Denied::Interrupted => Error::General(msg),
    })
}

/// `lock-release NAME` on the remote backend.
pub struct Release {
    pub target: String,
    pub force: bool,
    pub owner: Option<u32>,
    pub session: bool,
    pub quiet: bool,
}

pub fn lock_release(t: &Target, rel: Release, ctx: &mut Ctx) -> Result<ExitCode> {
    let name = lock_name(&rel.target)?.to_string();
    let keys = Keys::new(&name, rel.session, ctx.cfg.developer.as_deref());
    let mut conn = open(t, ctx)?;
    let as_pids = match rel.owner {
        Some(p) => vec![p],
        None => holder::ancestors(std::process::id()),
    };
    let not_held = || {
        if rel.quiet {
            return Ok(ExitCode::from(ExitKind::NotFound.code()));
        }
        Err(Error::NotFound(format!("{name}: not held")))
    };
    let Some(rec) = rlock::status(&mut conn, &keys)? else {
        return not_held();
    };
    if !rel.force && !rec.owned_by(&as_pids) {
        if rel.quiet {
            return Ok(ExitCode::from(ExitKind::Conflict.code()));
        }
        return Err(Error::Conflict(format!(
            "{name}: {}, not by you (use --force to release it anyway)",
            describe(Some(&rec))
        )));
    }
    if !rlock::release(&mut conn, &keys, &rec.token)? {
        // Lapsed or released by someone else since we read it.
        return not_held();
    }
    rlock::end_holder(&rec);
    ctx.debug(format_args!("{name}: released ({})", describe(Some(&rec))));
    Ok(ExitCode::SUCCESS)
}

/// `lock-status` on the remote backend.
pub struct Status {
    pub target: String,
    pub session: bool,
    pub json: bool,
    pub quiet: bool,
}

pub fn lock_status(t: &Target, a: Status, ctx: &mut Ctx) -> Result<ExitCode> {
    let name = lock_name(&a.target)?.to_string();
    let keys = Keys::new(&name, a.session, ctx.cfg.developer.as_deref());
    let mut conn = open(t, ctx)?;
    let rec = rlock::status(&mut conn, &keys)?;
    let code = if rec.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if a.quiet {
        return Ok(code);
    }
    let text = if a.json {
        let r = rec.as_ref();
        let known = r.filter(|r| r.pid != 0);
        let v = json!({
            "lock": name,
            "backend": t.label,
            "state": if r.is_some() { "held" } else { "free" },
            "kind": "redis",
            "mode": r.map(|_| "exclusive"),
            "pid": known.map(|r| r.pid),
            "host": known.map(|r| r.host.clone()),
            "command": known.map(|r| r.command.clone()),
            "since": known.and_then(|r| rfc3339(r.since)),
            "since_epoch": known.map(|r| r.since),
            "age_seconds": known.map(|r| (r.age() * 1000.0).round() / 1000.0),
            "holder_pid": known.and_then(|r| r.holder_pid),
            "fence": known.map(|r| r.fence),
            "lease_left_seconds": r.map(|r| r.lease_left_ms as f64 / 1000.0),
            "stale": false,
        });
        format!("{v}\n")
    } else {
        match &rec {
            None => format!("{name}: free\n"),
            Some(r) => {
                let mut s = format!("{name}: held (exclusive, redis)");
                if r.pid != 0 {
                    s.push_str(&format!(" by pid {} on {}", r.pid, r.host));
                    if !r.command.is_empty() {
                        s.push_str(&format!(", command: {}", r.command));
                    }
                    if let Some(ts) = rfc3339(r.since) {
                        s.push_str(&format!(", since {ts}"));
                    }
                    s.push_str(&format!(" (age {:.1}s), fence {}", r.age(), r.fence));
                }
                s.push_str(&format!(
                    ", lease {:.1}s left\n",
                    r.lease_left_ms.max(0) as f64 / 1000.0
                ));
                s
            }
        }
    };
    ctx.write_out(text.as_bytes())?;
    Ok(code)
}

fn rfc3339(epoch: f64) -> Option<String> {
    let t = jiff::Timestamp::from_second(epoch.floor() as i64).ok()?;
    Some(t.to_string())
}

/// The cache applets refuse `--dir` on a remote backend: it names a local
/// cache, and silently ignoring it would write somewhere else.
pub fn no_dir(t: &Target, dir: Option<&std::path::Path>) -> Result<()> {
    match dir {
        Some(d) => Err(Error::Validation(format!(
            "--dir {}: names a local cache dir, but the backend is {} (use --backend local)",
            d.display(),
            t.label
        ))),
        None => Ok(()),
    }
}

/// `cache-write` on the remote backend; `value` `None` reads stdin.
pub fn cache_write(
    t: &Target,
    key: &str,
    value: Option<&[u8]>,
    ttl: u64,
    ctx: &mut Ctx,
) -> Result<ExitCode> {
    let owned;
    let bytes = match value {
        Some(v) => v,
        None => {
            owned = rcache::read_value(key, &mut ctx.stdin())?;
            &owned
        }
    };
    let mut c = RedisCache::open(t, &ctx.cfg)?;
    c.write(key, bytes, ttl)?;
    Ok(ExitCode::SUCCESS)
}

/// `cache-batch` (write mode) on the remote backend: all entries in one
/// MULTI/EXEC transaction.
pub fn cache_batch(t: &Target, items: &[(&str, &[u8], u64)], ctx: &Ctx) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let mut c = RedisCache::open(t, &ctx.cfg)?;
    c.write_many(items)
}

/// `cache-batch --read` on the remote backend: the hits among `keys`, in order.
pub fn cache_read_many(t: &Target, keys: &[String], ctx: &Ctx) -> Result<Vec<(String, Vec<u8>)>> {
    let mut c = RedisCache::open(t, &ctx.cfg)?;
    let mut out = Vec::new();
    for k in keys {
        if let rcache::Lookup::Hit(v) = c.read(k)? {
            out.push((k.clone(), v));
        }
    }
    Ok(out)
}

/// `cache-read` on the remote backend.
pub fn cache_read(t: &Target, key: &str, quiet: bool, ctx: &mut Ctx) -> Result<ExitCode> {
    let mut c = RedisCache::open(t, &ctx.cfg)?;
    let miss = match c.read(key)? {
        rcache::Lookup::Hit(v) => {
            ctx.write_out(&v)?;
            return Ok(ExitCode::SUCCESS);
        }
        rcache::Lookup::Missing => format!("{key}: no such entry"),
        rcache::Lookup::Expired(at) => format!(
            "{key}: expired {}",
            jiff::Timestamp::from_second(at).map_or_else(|_| String::new(), |t| format!("at {t}"))
        ),
    };
    if quiet {
        return Ok(ExitCode::from(ExitKind::NotFound.code()));
    }
    Err(Error::NotFound(miss))
}

/// `cache-size` on the remote backend.
pub struct Size {
    pub verify: bool,
    pub fix: bool,
    pub rebuild: bool,
    pub json: bool,
    pub human: bool,
}

pub fn cache_size(t: &Target, a: Size, ctx: &mut Ctx) -> Result<ExitCode> {
    let mut c = RedisCache::open(t, &ctx.cfg)?;
    let render = |tot: rcache::Totals, source: &str, counted: Option<rcache::Totals>| {
        if a.json {
            let mut v = json!({
                "bytes": tot.bytes,
                "entries": tot.entries,
                "source": source,
                "backend": t.label,
            });
            if let Some(i) = counted {
                v["index_bytes"] = json!(i.bytes);
                v["index_entries"] = json!(i.entries);
                v["drift_bytes"] = json!(tot.bytes as i128 - i.bytes as i128);
                v["drift_entries"] = json!(tot.entries as i128 - i.entries as i128);
            }
            format!("{v}\n")
        } else if a.human {
            format!("{}\n", crate::units::format_bytes(tot.bytes))
        } else {
            format!("{}\n", tot.bytes)
        }
    };
    if a.rebuild || a.verify {
        if a.rebuild {
            ctx.metric = Some(Op::RebuildSizeIndex);
        }
        let v = c.verify(a.fix || a.rebuild)?;
        if v.counted == v.recount || a.rebuild {
            ctx.write_out(render(v.recount, "walk", None).as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        let drift = format!(
            "counters say {} bytes in {} entries, the keys hold {} bytes in {} entries ({:+} bytes, {:+} entries)",
            v.counted.bytes,
            v.counted.entries,
            v.recount.bytes,
            v.recount.entries,
            v.recount.bytes as i128 - v.counted.bytes as i128,
            v.recount.entries as i128 - v.counted.entries as i128
        );
        if a.fix {
            ctx.note(format_args!("counters fixed: {drift}"));
            ctx.write_out(render(v.recount, "walk", Some(v.counted)).as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        if a.json {
            ctx.write_out(render(v.recount, "walk", Some(v.counted)).as_bytes())?;
        }
        return Err(Error::Corruption(format!(
            "size drift in {} {}: {drift} (run with --verify --fix to repair)",
            t.label,
            c.prefix()
        )));
    }
    ctx.write_out(render(c.size()?, "index", None).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `cache-evict` on the remote backend.
pub fn cache_evict(t: &Target, p: rcache::Policy, json: bool, ctx: &mut Ctx) -> Result<ExitCode> {
    let mut c = RedisCache::open(t, &ctx.cfg)?;
    if !(p.all || p.expired || p.older_than.is_some() || p.max_bytes.is_some()) {
        return Err(Error::Validation(
            "nothing to evict: give --max-bytes, --expired, --older-than or --all".into(),
        ));
    }
    let report = c.evict(&p)?;
    if json {
        let text = serde_json::to_string(&report)
            .map_err(|e| Error::General(format!("cannot encode the report: {e}")))?;
        ctx.write_out(format!("{text}\n").as_bytes())?;
    } else if p.dry_run {
        let mut out = String::new();
        for e in &report.removed {
            out.push_str(&format!(
                "would evict {} ({} bytes, {})\n",
                e.key, e.bytes, e.reason
            ));
        }
        ctx.write_out(out.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
