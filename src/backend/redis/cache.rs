//! The cache on Redis (docs/redis.md, "Cache"): every entry is a value key
//! plus a metadata hash, and the total size (the sum of the values' bytes)
//! and the entry count are kept exact by Lua scripts that route every
//! write, delete, eviction and expiry through one adjustment. Expiry and
//! recency live in sorted sets (never Redis's own key expiry, which would
//! not adjust the total); expired entries go in bounded sweep steps on
//! every write, on the read that finds them, and in `cache-evict`, whose
//! steps are bounded too so no script blocks the server for long.
//!
//! Keys: `ffkit:cache:NS:` + `v:KEY`, `m:KEY`, `total`, `count`, `exp`,
//! `lru`, where NS is `dev-ID` with `FLOWFORGE_DEVELOPER`, else `default`.

use std::io::Read;

use redis::Script;

use super::conn::{Area, Conn};
use crate::backend::Target;
use crate::config::Config;
use crate::error::{Error, Result};

const WRITE: &str = concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_write.lua")
);
const READ: &str = concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_read.lua")
);
const EVICT: &str = concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_evict.lua")
);
const FIX: &str = concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_fix.lua")
);

/// Redis refuses strings above 512 MiB (`proto-max-bulk-len`).
pub const MAX_VALUE: u64 = 512 << 20;

/// Entries removed per eviction step (one script call).
const EVICT_STEP: u32 = 64;

/// The cache's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub bytes: u64,
    pub entries: u64,
}

/// What a read found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Vec<u8>),
    Missing,
    /// Expired at this epoch second (and now removed).
    Expired(i64),
}

/// What to evict.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    pub max_bytes: Option<u64>,
    pub expired: bool,
    pub all: bool,
}

/// One evicted entry.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evicted {
    pub key: String,
    pub bytes: u64,
    pub reason: String,
}

/// What an eviction did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub before: TotalsJson,
    pub after: TotalsJson,
    pub removed: Vec<Evicted>,
    /// Script calls it took.
    pub steps: u32,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct TotalsJson {
    pub bytes: u64,
    pub entries: u64,
}

impl From<Totals> for TotalsJson {
    fn from(t: Totals) -> Self {
        TotalsJson {
            bytes: t.bytes,
            entries: t.entries,
        }
    }
}

/// The counters next to a recount of the value keys.
#[derive(Clone, Copy, Debug)]
pub struct Verify {
    pub counted: Totals,
    pub recount: Totals,
}

/// A connection to one namespace's cache.
pub struct RedisCache {
    conn: Conn,
    prefix: String,
    /// `FFKIT_TEST_NOW`, else the server clock decides.
    now: Option<i64>,
}

/// The key prefix of the namespace `cfg` selects.
pub fn prefix(cfg: &Config) -> String {
    match &cfg.developer {
        Some(id) => format!("ffkit:cache:dev-{id}:"),
        None => "ffkit:cache:default:".to_string(),
    }
}

fn now_arg(now: Option<i64>) -> String {
    now.map_or_else(String::new, |n| n.to_string())
}

impl RedisCache {
    pub fn open(target: &Target, cfg: &Config) -> Result<RedisCache> {
        Ok(RedisCache {
            conn: Conn::open(target, cfg.backend_timeout, Area::Cache)?,
            prefix: prefix(cfg),
            now: cfg.now_override,
        })
    }

    /// The namespace prefix, for messages.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Writes one entry; `ttl` 0 never expires.
    pub fn write(&mut self, key: &str, value: &[u8], ttl: u64) -> Result<()> {
        if value.len() as u64 > MAX_VALUE {
            return Err(too_big(key));
        }
        let script = Script::new(WRITE);
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(key)
            .arg(value)
            .arg(ttl)
            .arg(now_arg(self.now));
        let _: i64 = self.conn.call("cannot write entry", |c| inv.invoke(c))?;
        Ok(())
    }

    /// Writes many entries in one MULTI/EXEC transaction: all or nothing,
    /// each through the same script as [`RedisCache::write`].
    pub fn write_many(&mut self, items: &[(&str, &[u8], u64)]) -> Result<()> {
        if let Some((k, _, _)) = items.iter().find(|(_, v, _)| v.len() as u64 > MAX_VALUE) {
            return Err(too_big(k));
        }
        let script = Script::new(WRITE);
        let sha: String = self.conn.call("cannot load script", |c| {
            redis::cmd("SCRIPT").arg("LOAD").arg(WRITE).query(c)
        })?;
        debug_assert_eq!(sha, script.get_hash());
        let now = now_arg(self.now);
        let mut p = redis::pipe();
        p.atomic();
        for (k, v, ttl) in items {
            p.cmd("EVALSHA")
                .arg(&sha)
                .arg(0)
                .arg(&self.prefix)
                .arg(*k)
                .arg(*v)
                .arg(*ttl)
                .arg(&now)
                .ignore();
        }
        let () = self.conn.call("cannot write entries", |c| p.query(c))?;
        Ok(())
    }

    pub fn read(&mut self, key: &str) -> Result<Lookup> {
        let script = Script::new(READ);
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix).arg(key).arg(now_arg(self.now));
        let v: Vec<redis::Value> = self.conn.call("cannot read entry", |c| inv.invoke(c))?;
        let tag = v
            .first()
            .and_then(|x| redis::from_redis_value_ref::<i64>(x).ok());
        Ok(match (tag, v.get(1)) {
            (Some(1), Some(val)) => {
                Lookup::Hit(redis::from_redis_value_ref::<Vec<u8>>(val).unwrap_or_default())
            }
            (Some(2), Some(e)) => {
                Lookup::Expired(redis::from_redis_value_ref::<i64>(e).unwrap_or(0))
            }
            _ => Lookup::Missing,
        })
    }

    /// The counters (O(1)).
    pub fn size(&mut self) -> Result<Totals> {
        let (b, n): (Option<i64>, Option<i64>) = self.conn.call("cannot read size", |c| {
            redis::pipe()
                .cmd("GET")
                .arg(format!("{}total", self.prefix))
                .cmd("GET")
                .arg(format!("{}count", self.prefix))
                .query(c)
        })?;
        Ok(Totals {
            bytes: b.unwrap_or(0).max(0) as u64,
            entries: n.unwrap_or(0).max(0) as u64,
        })
    }

    /// Recounts the value keys (SCAN + STRLEN, in batches) and compares
    /// with the counters; `fix` stores the recount. Exact on a quiet cache;
    /// concurrent writers can make it report drift that is not there.
    pub fn verify(&mut self, fix: bool) -> Result<Verify> {
        let counted = self.size()?;
        let pattern = format!("{}v:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut recount = Totals::default();
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.conn.call("cannot scan", |c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            if !keys.is_empty() {
                let mut p = redis::pipe();
                for k in &keys {
                    p.cmd("STRLEN").arg(k);
                }
                let lens: Vec<u64> = self.conn.call("cannot measure", |c| p.query(c))?;
                recount.entries += lens.len() as u64;
                recount.bytes += lens.iter().sum::<u64>();
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if fix && recount != counted {
            let script = Script::new(FIX);
            let mut inv = script.prepare_invoke();
            inv.arg(&self.prefix)
                .arg(recount.bytes)
                .arg(recount.entries);
            let _: i64 = self.conn.call("cannot fix size", |c| inv.invoke(c))?;
        }
        Ok(Verify { counted, recount })
    }

    /// Evicts in bounded steps until the policy is met.
    pub fn evict(&mut self, p: &Policy) -> Result<Report> {
        let before = self.size()?;
        let script = Script::new(EVICT);
        let mut removed = Vec::new();
        let mut steps = 0;
        loop {
            let mut inv = script.prepare_invoke();
            inv.arg(&self.prefix)
                .arg(now_arg(self.now))
                .arg(
                    p.max_bytes
                        .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX)),
                )
                .arg(u8::from(p.expired))
                .arg(u8::from(p.all))
                .arg(EVICT_STEP);
            let v: Vec<redis::Value> = self.conn.call("cannot evict", |c| inv.invoke(c))?;
            steps += 1;
            let done = v
                .first()
                .and_then(|x| redis::from_redis_value_ref::<i64>(x).ok())
                == Some(1);
            for t in v.get(1..).unwrap_or_default().chunks(3) {
                if let [k, b, r] = t {
                    removed.push(Evicted {
                        key: redis::from_redis_value_ref::<String>(k).unwrap_or_default(),
                        bytes: redis::from_redis_value_ref::<u64>(b).unwrap_or(0),
                        reason: redis::from_redis_value_ref::<String>(r).unwrap_or_default(),
                    });
                }
            }
            if done {
                break;
            }
        }
        let after = self.size()?;
        Ok(Report {
            before: before.into(),
            after: after.into(),
            removed,
            steps,
        })
    }
}

fn too_big(key: &str) -> Error {
    Error::Validation(format!(
        "{key}: value is larger than Redis's 512 MiB limit for one string (refused)"
    ))
}

/// Reads a value from `r`, refusing one above [`MAX_VALUE`] before sending it.
pub fn read_value(key: &str, r: &mut dyn Read) -> Result<Vec<u8>> {
    read_limited(key, r, MAX_VALUE)
}

fn read_limited(key: &str, r: &mut dyn Read, limit: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read", "standard input", e))?;
    if buf.len() as u64 > limit {
        return Err(too_big(key));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_above_the_limit_is_refused_before_it_is_sent() {
        let ok = read_limited("k", &mut &b"0123456789"[..], 10).unwrap();
        assert_eq!(ok.len(), 10);
        let e = read_limited("k", &mut &b"0123456789x"[..], 10).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("512 MiB"), "{e}");
    }
}
