//! The Redis [`Driver`]: the remote side of the library's lock and cache
//! types ([`crate::lock::Locks`], [`crate::cache::Store`],
//! [`crate::memo::Store`]) on [`super::lock`] and [`super::cache`],
//! answering in their report types. The binary's `main` installs
//! [`DRIVER`]; nothing else in the library names this module, so a program
//! that does not install it (the bash builtin) does not link the client.

use std::any::Any;
use std::cell::{RefCell, RefMut};
use std::time::Duration;

use super::cache::{self as rcache, ReadMode, RedisCache};
use super::conn::{Area, Conn};
use super::lock::{self as rlock, Keys, Lease, Record, RunEnd};
use crate::backend::remote::{Driver, LookMode, RemoteCache, RemoteLookup, RunFound, RunStore};
use crate::backend::{Limits, Target};
use crate::cache::{EvictPolicy, EvictReport, Evicted, Reason, Totals};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lock::acquire::{Mode, Outcome, Report, Request};
use crate::lock::backoff::Schedule;
use crate::lock::holder::Holder;
use crate::lock::release::Released;
use crate::lock::run::Ended;
use crate::lock::status::Status;
use crate::lock::{Denied, FENCE_VAR, Wait};

/// The Redis backend.
pub struct Redis;

/// The one instance `main` installs (`backend::remote::install`).
pub static DRIVER: Redis = Redis;

/// A remote record as the library's holder record (pid 0: unknown).
fn holder_of(r: Option<&Record>) -> Holder {
    let Some(r) = r else {
        return Holder::default();
    };
    Holder {
        kind: r.kind.clone(),
        pid: r.pid,
        start: r.start,
        host: r.host.clone(),
        command: r.command.clone(),
        since: r.since,
        holder_pid: r.holder_pid,
        holder_start: r.holder_start,
        fd: None,
    }
}

fn totals(t: rcache::Totals) -> Totals {
    Totals {
        bytes: t.bytes,
        entries: t.entries,
    }
}

impl Driver for Redis {
    fn parse(&self, url: &str) -> std::result::Result<Target, String> {
        Target::parse_redis(url)
    }

    fn lock_acquire(
        &self,
        t: &Target,
        cfg: &Config,
        name: &str,
        req: &Request,
        owner: u32,
        session: bool,
        rep: &mut dyn Report,
    ) -> Result<Outcome> {
        let keys = Keys::new(name, session, cfg.developer.as_deref());
        let limits = Limits::from_config(cfg);
        let program = match &req.mode {
            Mode::Command { program, .. } => Some(program),
            _ => None,
        };
        let kind = if program.is_some() {
            "command"
        } else {
            "named"
        };
        let rec = Record::new(kind, owner, program.map(|p| p.text()));
        let mut conn = Conn::open(t, cfg.backend_timeout, Area::Lock)?;
        if program.is_none()
            && let Some(r) = rlock::status(&mut conn, &keys)?
            && r.owned_by(&[owner])
            && r.kind == "named"
        {
            return Err(crate::lock::already_held(name, owner));
        }
        let schedule = Schedule::new(req.backoff.0, req.backoff.1, req.backoff.2);
        let got = {
            let label = req.label.as_str();
            let mut on_wait = |r: Option<&Record>| rep.waiting(label, &holder_of(r));
            // Command mode's guard is started while the first attempt is on
            // its way: a process creation the round no longer waits for.
            let mut meanwhile = || {
                if program.is_some() {
                    super::guard::start();
                }
            };
            rlock::acquire(
                &mut conn,
                &keys,
                &rec,
                limits.lease,
                req.wait.start(),
                schedule,
                &mut on_wait,
                &mut meanwhile,
                (program.is_none() && crate::lock::parent_pid() == owner).then_some(owner),
            )?
        };
        let held = match got {
            Ok(h) => h,
            Err(why) => {
                let seen = rlock::status(&mut conn, &keys).ok().flatten();
                return Ok(Outcome::Denied {
                    why,
                    holder: holder_of(seen.as_ref()).to_string(),
                });
            }
        };
        rep.fence(held.fence);
        let Some(program) = program else {
            let hpid = rlock::hold_named(t, limits, &mut conn, &keys, &held, owner)?;
            rep.taken(
                &req.label,
                &format!(
                    "redis lease, fence {}, holder pid {hpid} for owner pid {owner}",
                    held.fence
                ),
                held.waited,
            );
            return Ok(Outcome::Taken {
                waited: held.waited,
            });
        };
        rep.taken(
            &req.label,
            &format!("redis lease, fence {}", held.fence),
            held.waited,
        );
        let Some(mut cmd) = program.command() else {
            let _ = rlock::release(&mut conn, &keys, &held.token);
            return Err(Error::Validation("no command".into()));
        };
        cmd.env(FENCE_VAR, held.fence.to_string());
        rep.executing(program);
        match rlock::run_leased(t, limits, conn, &keys, &held, cmd, &mut || rep.started()) {
            RunEnd::Exited { status, release } => {
                match release {
                    Ok(true) => {}
                    Ok(false) => rep.notice(&format_args!(
                        "lock {name}: the lease had already lapsed when the command ended"
                    )),
                    Err(e) => rep.notice(&format_args!(
                        "{e}; the lock lapses within {}s",
                        limits.lease.as_secs_f64()
                    )),
                }
                Ok(Outcome::Ran(Ended::Status(status)))
            }
            RunEnd::NotStarted(code, e) => Ok(Outcome::Ran(Ended::NotStarted(code, e))),
            RunEnd::LeaseLost { why, status } => Err(Error::LockFailed(format!(
                "{why}: the command was stopped (it ended with status {status})"
            ))),
        }
    }

    fn lock_status(&self, t: &Target, cfg: &Config, name: &str, session: bool) -> Result<Status> {
        let keys = Keys::new(name, session, cfg.developer.as_deref());
        let mut conn = Conn::open(t, cfg.backend_timeout, Area::Lock)?;
        let rec = rlock::status(&mut conn, &keys)?;
        Ok(Status::remote(
            &t.label,
            rec.map(|r| {
                (
                    holder_of(Some(&r)),
                    r.fence,
                    r.lease_left_ms as f64 / 1000.0,
                )
            }),
        ))
    }

    fn lock_release(
        &self,
        t: &Target,
        cfg: &Config,
        name: &str,
        session: bool,
        may: &dyn Fn(&Holder) -> bool,
        owners: &[u32],
    ) -> Result<Released> {
        let keys = Keys::new(name, session, cfg.developer.as_deref());
        let mut conn = Conn::open(t, cfg.backend_timeout, Area::Lock)?;
        // Not held under the owners' holding: if their holder process still
        // lives here, they held it and lost it (docs/redis.md, "Named
        // pairs"); it is ended.
        let lost = |now: Option<Holder>, otherwise: Released| match rlock::end_listening(
            t,
            &keys,
            owners,
            cfg.backend_timeout,
        ) {
            Some(_) => Released::Lost(now),
            None => otherwise,
        };
        let Some(rec) = rlock::status(&mut conn, &keys)? else {
            return Ok(lost(None, Released::NotHeld));
        };
        let h = holder_of(Some(&rec));
        if !may(&h) {
            return Ok(lost(Some(h.clone()), Released::NotOwner(h)));
        }
        if !rlock::release(&mut conn, &keys, &rec.token)? {
            // Lapsed or released by someone else since we read it.
            return Ok(lost(None, Released::NotHeld));
        }
        // Ended through its socket, it is gone when this returns; a holder
        // without one (or another host's) gets a SIGTERM, as before.
        let here = rec.host == crate::lock::holder::hostname();
        if !here || rlock::end_listening(t, &keys, &[rec.pid], cfg.backend_timeout).is_none() {
            rlock::end_holder(&rec);
        }
        Ok(Released::Done(h))
    }

    fn cache(&self, t: &Target, cfg: &Config) -> Result<Box<dyn RemoteCache>> {
        Ok(Box::new(RedisCache::open(t, cfg)?))
    }

    fn run_store(&self, t: &Target, cfg: &Config) -> Box<dyn RunStore> {
        Box::new(RunRemote {
            target: t.clone(),
            cfg: cfg.clone(),
            cache: RefCell::new(None),
        })
    }
}

impl RemoteCache for RedisCache {
    fn place(&self) -> String {
        format!("{} {}", self.label(), self.prefix())
    }

    fn read(&mut self, key: &str) -> Result<RemoteLookup> {
        Ok(lookup(RedisCache::read(self, key)?))
    }

    fn read_many(&mut self, keys: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        RedisCache::read_many(self, keys)
    }

    fn write(&mut self, key: &str, value: &[u8], ttl: u64) -> Result<()> {
        RedisCache::write(self, key, value, ttl)
    }

    fn write_many(&mut self, items: &[(&str, &[u8], u64)]) -> Result<()> {
        RedisCache::write_many(self, items)
    }

    fn read_value(&self, key: &str, r: &mut dyn std::io::Read) -> Result<Vec<u8>> {
        rcache::read_value(key, r)
    }

    fn size(&mut self) -> Result<Totals> {
        RedisCache::size(self).map(totals)
    }

    fn verify(&mut self, fix: bool) -> Result<(Totals, Totals, Vec<String>, Vec<String>)> {
        let v = RedisCache::verify(self, fix)?;
        Ok((totals(v.counted), totals(v.recount), v.notes, v.damaged))
    }

    fn evict(&mut self, p: &EvictPolicy) -> Result<EvictReport> {
        let r = RedisCache::evict(
            self,
            &rcache::Policy {
                max_bytes: p.max_bytes,
                expired: p.expired,
                older_than: p.older_than,
                all: p.all,
                dry_run: p.dry_run,
            },
        )?;
        Ok(EvictReport {
            dry_run: r.dry_run,
            before: Totals {
                bytes: r.before.bytes,
                entries: r.before.entries,
            },
            after: Totals {
                bytes: r.after.bytes,
                entries: r.after.entries,
            },
            removed: r
                .removed
                .into_iter()
                .map(|e| Evicted {
                    reason: match e.reason.as_str() {
                        "all" => Reason::All,
                        "expired" => Reason::Expired,
                        "older-than" => Reason::OlderThan,
                        "lru" => Reason::Lru,
                        _ => Reason::Garbage,
                    },
                    key: e.key,
                    bytes: e.bytes,
                    // No output store on Redis (cache-run --output is local).
                    blobs: 0,
                    blob_bytes: 0,
                })
                .collect(),
            steps: Some(r.steps),
            swept: Default::default(),
        })
    }
}

fn lookup(l: rcache::Lookup) -> RemoteLookup {
    match l {
        rcache::Lookup::Hit(v) => RemoteLookup::Hit(v),
        rcache::Lookup::Missing => RemoteLookup::Missing,
        rcache::Lookup::Expired(at) => RemoteLookup::Expired(at),
    }
}

/// cache-run on Redis: one connection, opened at first use (so a server
/// that is down is found by the first look, where the call can still run
/// uncached). The entry goes through the cache scripts (its value key
/// counts in the Lua-kept total, like any `cache-write`); the lock is a
/// leased Redis lock beside the entries (`…run-lock:<hex>`), renewed by a
/// background thread while the command runs; replays are counted in the
/// entry's metadata hash, which a rewrite clears.
struct RunRemote {
    target: Target,
    cfg: Config,
    cache: RefCell<Option<RedisCache>>,
}

impl RunRemote {
    /// The connection, opened on first use.
    fn cache(&self) -> Result<RefMut<'_, RedisCache>> {
        let mut slot = self.cache.borrow_mut();
        if slot.is_none() {
            *slot = Some(RedisCache::open(&self.target, &self.cfg)?);
        }
        RefMut::filter_map(slot, Option::as_mut)
            .map_err(|_| Error::General("the backend connection is gone".into()))
    }

    fn keys(&self, entry: &str, hex: &str) -> Keys {
        let p = rcache::prefix(&self.cfg);
        Keys::beside(entry, format!("{p}run-lock:{hex}"), format!("{p}run-fence"))
    }
}

impl RunStore for RunRemote {
    fn now(&self) -> i64 {
        self.cfg.now()
    }

    fn look(&self, entry: &str, mode: LookMode) -> Result<RunFound> {
        let mode = match mode {
            LookMode::Plain => ReadMode::Plain,
            LookMode::Hit => ReadMode::Hit,
            LookMode::Peek => ReadMode::Peek,
        };
        let f = self.cache()?.read_with(entry, mode)?;
        Ok(RunFound {
            age: (f.now - f.created_at).max(0),
            hits: f.hits,
            lookup: lookup(f.lookup),
        })
    }

    fn write(&self, entry: &str, value: &[u8], ttl: u64) -> Result<()> {
        self.cache()?.write(entry, value, ttl)
    }

    fn delete(&self, entry: &str) -> Result<bool> {
        Ok(self.cache()?.delete(entry)?.is_some())
    }

    fn lock(&self, entry: &str, hex: &str, wait: Option<Duration>) -> Result<Option<Box<dyn Any>>> {
        let keys = self.keys(entry, hex);
        let limits = Limits::from_config(&self.cfg);
        let rec = Record::new(
            "cache-run",
            std::process::id(),
            Some(format!("cache-run {entry}")),
        );
        let how = wait.map_or(Wait::NonBlocking, Wait::timeout);
        let got = {
            let mut c = self.cache()?;
            rlock::acquire(
                c.conn(),
                &keys,
                &rec,
                limits.lease,
                how,
                Schedule::new(
                    self.cfg.backoff,
                    self.cfg.backoff_initial,
                    self.cfg.backoff_max,
                ),
                &mut |_| {},
                &mut || {},
                None,
            )?
        };
        let held = match got {
            Ok(h) => h,
            Err(Denied::Busy | Denied::TimedOut | Denied::Interrupted) => {
                let Some(t) = wait else {
                    return Ok(None);
                };
                return Err(Error::Timeout(format!(
                    "another run of this command still holds {} on {} after {}s (LOCK_TIMEOUT)",
                    keys.name,
                    self.target.label,
                    t.as_secs_f64()
                )));
            }
        };
        match Lease::start(&self.target, limits, Area::Cache, &keys, &held) {
            Ok(l) => Ok(Some(Box::new(l) as Box<dyn Any>)),
            Err(e) => {
                let mut c = self.cache()?;
                let _ = rlock::release(c.conn(), &keys, &held.token);
                Err(Error::General(format!(
                    "cannot start the thread renewing the lock of {}: {}",
                    keys.name,
                    crate::error::os_reason(&e)
                )))
            }
        }
    }

    fn busy(&self, entry: &str, hex: &str) -> bool {
        let keys = self.keys(entry, hex);
        let Ok(mut c) = self.cache() else { return true };
        match rlock::status(c.conn(), &keys) {
            Ok(held) => held.is_some(),
            Err(_) => true,
        }
    }
}
