//! The cache on Redis (docs/redis.md, "Cache"): every entry is a value key
//! plus a metadata hash, and the total size (the sum of the values' bytes)
//! and the entry count are kept exact by Lua scripts that route every
//! write, delete, eviction and expiry through one adjustment. Expiry and
//! recency live in sorted sets (never Redis's own key expiry, which would
//! not adjust the total); expired entries go in bounded sweep steps on
//! every write, on the read that finds them, and in `cache-evict`, whose
//! steps are bounded too so no script blocks the server for long.
//!
//! Keys: `ffkit:cache:{NS}:` + `v:KEY`, `m:KEY`, `total`, `count`, `exp`,
//! `lru`, where NS is `dev-ID` with `FLOWFORGE_DEVELOPER`, else `default`.
//! `{NS}` is a Redis Cluster hash tag: a namespace lives on one slot, so
//! the scripts (which declare `…total` as their key, for the routing) can
//! touch all of its keys in one atomic step.

use std::io::Read;

use super::conn::{Area, Conn};
use super::script::Lua;
use crate::backend::Target;
use crate::config::Config;
use crate::error::{Error, Result};

/// One SCAN step of the value keys: the next cursor, the keys, their
/// entry names.
type ScanStep = (u64, Vec<Vec<u8>>, Vec<Vec<u8>>);

const WRITE: Lua = Lua::new(concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_write.lua")
));
const READ: Lua = Lua::new(concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_read_entry.lua"),
    include_str!("lua/cache_read.lua")
));
const READ_MANY: Lua = Lua::new(concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_read_entry.lua"),
    include_str!("lua/cache_read_many.lua")
));

/// `cache-batch --read` asks for at most this many keys per request (one
/// script call): some 5 ms of a server's time at ~10 µs a key (a script
/// blocks every other client while it runs).
const READ_KEYS_PER_REQUEST: usize = 256;
/// … and at most this many bytes of values inline in its reply (the
/// script stops before a value that would not fit; the first always
/// fits): what one `cache-read` of a value at `BIG_VALUE`, the largest
/// value sent inline, carries.
const READ_BYTES_PER_REQUEST: u64 = 4 << 20;
const EVICT: Lua = Lua::new(concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_evict.lua")
));
const DELETE: Lua = Lua::new(concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_delete.lua")
));
const VERIFY: Lua = Lua::new(concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_verify.lua")
));
const FIX: Lua = Lua::new(concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_fix.lua")
));
const REPAIR: Lua = Lua::new(concat!(
    include_str!("lua/cache_lib.lua"),
    include_str!("lua/cache_repair.lua")
));

/// Every cache script (for the digest test in `script`).
#[cfg(test)]
pub(super) const SCRIPTS: &[&Lua] = &[
    &WRITE, &READ, &READ_MANY, &EVICT, &DELETE, &VERIFY, &FIX, &REPAIR,
];

/// The error reply code of a script that found a namespace-wide key
/// damaged (`namespace_check` in `cache_lib.lua`).
pub(super) const DAMAGED_CODE: &str = "FFKIT_DAMAGED";

/// A damaged namespace-wide key, in one line: `key: holds …`.
/// `kind` is `value` (a counter's text, `raw` its first bytes and `len`
/// its length) or `type` (`raw` the key's type).
fn namespace_damage(key: &[u8], kind: &[u8], raw: &[u8], len: u64) -> String {
    let key = String::from_utf8_lossy(key);
    let shown = |b: &[u8]| {
        let s = String::from_utf8_lossy(&b[..b.len().min(SHOWN_BYTES)])
            .escape_debug()
            .to_string();
        if len as usize > SHOWN_BYTES {
            format!("'{s}'... ({len} bytes)")
        } else {
            format!("'{s}'")
        }
    };
    if kind == b"value" {
        format!("{key}: holds {}, not a canonical whole number", shown(raw))
    } else if kind == b"missing" {
        format!("{key}: missing while the namespace holds entries")
    } else {
        let t = String::from_utf8_lossy(raw);
        let want = if key.ends_with("total") || key.ends_with("count") {
            "a string"
        } else {
            "a sorted set"
        };
        format!("{key}: holds a {t}, not {want}")
    }
}

/// One line per damaged namespace-wide key in a `cache_repair.lua`
/// reply (four items each: key, kind, raw, length).
fn damage_lines(r: &[redis::Value]) -> Vec<String> {
    let b = |v: &redis::Value| redis::from_redis_value_ref::<Vec<u8>>(v).unwrap_or_default();
    r.chunks(4)
        .filter_map(|d| {
            let [key, kind, raw, len] = d else {
                return None;
            };
            let len = redis::from_redis_value_ref::<u64>(len).unwrap_or(0);
            Some(namespace_damage(&b(key), &b(kind), &b(raw), len))
        })
        .collect()
}

/// Decodes a word `esc` in `cache_lib.lua` percent-escaped.
fn unescape(word: &str) -> Vec<u8> {
    let b = word.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The one line for a script's `FFKIT_DAMAGED` reply (its detail:
/// `key kind raw [length]`), after the backend's label.
pub(super) fn namespace_damage_reply(detail: &str) -> String {
    let mut w = detail.split(' ');
    let mut next = || unescape(w.next().unwrap_or_default());
    let (key, kind, raw) = (next(), next(), next());
    let len = std::str::from_utf8(&next())
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(raw.len() as u64);
    format!(
        "{} (damaged; nothing was changed: `ffkit cache-size --verify --fix` repairs it)",
        namespace_damage(&key, &kind, &raw, len)
    )
}

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

/// How a read treats the entry it finds (`cache_read.lua`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// `cache-read`: a hit refreshes recency, an expired entry is dropped.
    Plain,
    /// A `cache-run` replay: as `Plain`, and the replay is counted.
    Hit,
    /// Look only: no recency, no expiry, no count.
    Peek,
}

impl ReadMode {
    fn arg(self) -> &'static str {
        match self {
            ReadMode::Plain => "",
            ReadMode::Hit => "hit",
            ReadMode::Peek => "peek",
        }
    }
}

/// A read with the entry's metadata and the clock it was judged by.
#[derive(Debug)]
pub struct Found {
    pub lookup: Lookup,
    /// The entry's `created_at` (0 when missing).
    pub created_at: i64,
    /// "Now" as the script saw it (the server clock, or `FFKIT_TEST_NOW`).
    pub now: i64,
    /// Counted replays of this recording (cache-run).
    pub hits: u64,
}

/// What `cache_read.lua` found wrong with an entry: its reply after
/// `{3, now}` (see the script's header), worded for one line.
#[derive(Debug, PartialEq, Eq)]
enum Damage {
    /// A record field missing (`None`) or not a canonical number (the
    /// value's first bytes, as the script sends at most 64, and its length).
    Field {
        name: String,
        raw: Option<(Vec<u8>, u64)>,
    },
    /// The metadata key holds this type, not a hash.
    Metadata(String),
    /// The value key holds this type, not a string (`none`: missing).
    Value(String),
    /// The value's length is not the recorded size.
    Length { recorded: i64, len: i64 },
    /// A value key without its metadata key.
    Orphan,
}

/// Bytes of a bad field's value a message shows (escaped), at most.
const SHOWN_BYTES: usize = 32;

impl Damage {
    fn from_reply(r: &[redis::Value]) -> Damage {
        let text = |i: usize| {
            r.get(i)
                .and_then(|x| redis::from_redis_value_ref::<String>(x).ok())
                .unwrap_or_default()
        };
        let int = |i: usize| {
            r.get(i)
                .and_then(|x| redis::from_redis_value_ref::<i64>(x).ok())
                .unwrap_or(-1)
        };
        match text(0).as_str() {
            "field" => Damage::Field {
                name: text(1),
                raw: r
                    .get(2)
                    .and_then(|x| redis::from_redis_value_ref::<Option<Vec<u8>>>(x).ok())
                    .flatten()
                    .map(|b| (b, int(3).max(0) as u64)),
            },
            "metadata" => Damage::Metadata(text(1)),
            "value" => Damage::Value(text(1)),
            "orphan" => Damage::Orphan,
            _ => Damage::Length {
                recorded: int(1),
                len: int(2),
            },
        }
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Field { name, raw: None } => write!(f, "its record has no {name}"),
            Damage::Field {
                name,
                raw: Some((b, len)),
            } => {
                let shown = String::from_utf8_lossy(&b[..b.len().min(SHOWN_BYTES)]);
                write!(f, "its record's {name} is '{}'", shown.escape_debug())?;
                if *len as usize > SHOWN_BYTES {
                    write!(f, "... ({len} bytes)")?;
                }
                let bound = match name.as_str() {
                    "size" => " (0 to 536870912)",
                    "ttl" => " (0 to 1000000000)",
                    _ => "",
                };
                write!(f, ", not a canonical whole number{bound}")
            }
            Damage::Metadata(t) => write!(f, "its metadata key holds a {t}, not a hash"),
            Damage::Value(t) if t == "none" => write!(f, "the value is missing"),
            Damage::Value(t) => write!(f, "the value key holds a {t}, not a string"),
            Damage::Length { recorded, len } => {
                write!(f, "the value is {len} bytes but its record says {recorded}")
            }
            Damage::Orphan => write!(f, "the value has no record (its metadata key is missing)"),
        }
    }
}

/// What to evict.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    pub max_bytes: Option<u64>,
    pub expired: bool,
    /// Entries created this many seconds ago or earlier.
    pub older_than: Option<u64>,
    pub all: bool,
    /// Report what would go; remove nothing.
    pub dry_run: bool,
}

/// One evicted entry.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evicted {
    pub key: String,
    pub bytes: u64,
    pub reason: String,
}

/// What an eviction did (or, with `dry_run`, would do).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
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
#[derive(Clone, Debug)]
pub struct Verify {
    pub counted: Totals,
    pub recount: Totals,
    /// Damage the counters cannot show, one line each: a value without
    /// its record, a value key of another type, a damaged namespace-wide
    /// key; with `fix`, what was dropped or repaired.
    pub notes: Vec<String>,
    /// Without `fix`: every damaged namespace-wide key, one line each;
    /// when any is, nothing was recounted (the totals are zero).
    pub damaged: Vec<String>,
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
        Some(id) => format!("ffkit:cache:{{dev-{id}}}:"),
        None => "ffkit:cache:{default}:".to_string(),
    }
}

fn now_arg(now: Option<i64>) -> String {
    now.map_or_else(String::new, |n| n.to_string())
}

impl RedisCache {
    pub fn open(target: &Target, cfg: &Config) -> Result<RedisCache> {
        let prefix = prefix(cfg);
        let mut conn = Conn::open(target, cfg.backend_timeout, Area::Cache)?;
        // On a cluster, the namespace's node: the scripts `SCRIPT LOAD`
        // loads run there, and `TIME` is its clock.
        conn.set_home(&prefix);
        Ok(RedisCache {
            conn,
            prefix,
            now: cfg.now_override,
        })
    }

    /// The backend URL (without credentials), for messages.
    pub fn label(&self) -> &str {
        self.conn.label()
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
        let now = now_arg(self.now);
        let prefix = &self.prefix;
        let _: i64 = self.conn.eval("cannot write entry", &WRITE, 1, |c| {
            c.arg(format!("{prefix}total"))
                .arg(prefix)
                .arg(key)
                .arg(value)
                .arg(ttl)
                .arg(&now);
        })?;
        Ok(())
    }

    /// Writes many entries in one MULTI/EXEC transaction: all or nothing,
    /// each through the same script as [`RedisCache::write`].
    pub fn write_many(&mut self, items: &[(&str, &[u8], u64)]) -> Result<()> {
        if let Some((k, _, _)) = items.iter().find(|(_, v, _)| v.len() as u64 > MAX_VALUE) {
            return Err(too_big(k));
        }
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(WRITE.source());
        let sha: String = self.conn.cmd("cannot load script", &load)?;
        debug_assert_eq!(sha.as_bytes(), WRITE.sha());
        let now = now_arg(self.now);
        let mut p = redis::pipe();
        p.atomic();
        for (k, v, ttl) in items {
            p.cmd("EVALSHA")
                .arg(&sha)
                .arg(1)
                .arg(format!("{}total", self.prefix))
                .arg(&self.prefix)
                .arg(*k)
                .arg(*v)
                .arg(*ttl)
                .arg(&now);
        }
        let _: Vec<redis::Value> = self.conn.pipe("cannot write entries", &p)?;
        Ok(())
    }

    pub fn read(&mut self, key: &str) -> Result<Lookup> {
        Ok(self.read_with(key, ReadMode::Plain)?.lookup)
    }

    /// Reads one entry with its metadata, as `mode` says. A large value
    /// (over 4 MiB) is not returned by the script, which only checks it
    /// and does the bookkeeping (`cache_read.lua`): it is then fetched by a
    /// `GET` of its own, whose deadline grows by a second per 64 MiB as a
    /// large write's does. If a writer replaced or dropped the value in
    /// between (its length is no longer the record's), the read starts
    /// again; after three such races it is a miss.
    pub fn read_with(&mut self, key: &str, mode: ReadMode) -> Result<Found> {
        let (f, large) = self.read_once(key, mode)?;
        match large {
            Some(size) => self.fetch_large(key, mode, f, size),
            None => Ok(f),
        }
    }

    /// The value over 4 MiB that a read found (`f`, `size` bytes): a `GET`
    /// of its own, whose deadline grows by a second per 64 MiB. If a
    /// writer replaced or dropped it in between (its length is no longer
    /// the record's), the read starts again; after three reads in all, a
    /// miss.
    fn fetch_large(&mut self, key: &str, mode: ReadMode, mut f: Found, size: u64) -> Result<Found> {
        let vkey = format!("{}v:{key}", self.prefix);
        let mut size = size;
        for again in 0..3 {
            if again > 0 {
                let (g, large) = self.read_once(key, mode)?;
                match large {
                    Some(s) => (f, size) = (g, s),
                    None => return Ok(g),
                }
            }
            let v: Option<Vec<u8>> = self.conn.cmd_waiting(
                "cannot read entry",
                redis::cmd("GET").arg(&vkey),
                super::conn::value_work(size),
            )?;
            if let Some(v) = v.filter(|v| v.len() as u64 == size) {
                f.lookup = Lookup::Hit(v);
                return Ok(f);
            }
        }
        Ok(Found {
            lookup: Lookup::Missing,
            created_at: 0,
            now: self.now.unwrap_or(0),
            hits: 0,
        })
    }

    /// One run of the read script: the entry, and the size of a large
    /// value the script left to fetch (`lookup` is then `Missing`).
    fn read_once(&mut self, key: &str, mode: ReadMode) -> Result<(Found, Option<u64>)> {
        let now = now_arg(self.now);
        let prefix = &self.prefix;
        let v: Vec<redis::Value> = self.conn.eval("cannot read entry", &READ, 1, |c| {
            c.arg(format!("{prefix}total"))
                .arg(prefix)
                .arg(key)
                .arg(&now)
                .arg(mode.arg());
        })?;
        self.entry_reply(key, mode, v)
    }

    /// What `read_entry` (cache_read_entry.lua) answered for `key`: the
    /// entry, and the size of a large value left to fetch.
    fn entry_reply(
        &self,
        key: &str,
        mode: ReadMode,
        v: Vec<redis::Value>,
    ) -> Result<(Found, Option<u64>)> {
        let int = |i: usize| {
            v.get(i)
                .and_then(|x| redis::from_redis_value_ref::<i64>(x).ok())
        };
        let lookup = match (int(0), v.get(1)) {
            (Some(1), Some(val)) => {
                Lookup::Hit(redis::from_redis_value_ref::<Vec<u8>>(val).unwrap_or_default())
            }
            (Some(2), Some(_)) => Lookup::Expired(int(1).unwrap_or(0)),
            (Some(3), _) => {
                let what = Damage::from_reply(v.get(2..).unwrap_or_default());
                return Err(self.damaged(key, &what, mode));
            }
            _ => Lookup::Missing,
        };
        let large = match int(0) {
            Some(4) => Some(int(1).map_or(0, |n| n.max(0) as u64)),
            _ => None,
        };
        let now = int(3).or(self.now).unwrap_or(0);
        let found = Found {
            lookup,
            created_at: int(2).unwrap_or(0),
            now,
            hits: int(4).map_or(0, |h| h.max(0) as u64),
        };
        Ok((found, large))
    }

    /// `cache-batch --read`: the present, unexpired entries among `keys`,
    /// in their order, each read as [`RedisCache::read`] reads it (recency,
    /// expiry, damage: exit 10 at the first damaged one, the keys after it
    /// not read). Many keys per request (`cache_read_many.lua`), at most
    /// [`READ_KEYS_PER_REQUEST`] and [`READ_BYTES_PER_REQUEST`] bytes of
    /// values inline; a value over 4 MiB is fetched by a `GET` of its own,
    /// as by `read`. Each request has its deadline, grown by the server's
    /// work on its keys and the bytes it may carry back.
    pub fn read_many(&mut self, keys: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        let mode = ReadMode::Plain;
        let now = now_arg(self.now);
        let mut out = Vec::new();
        let mut rest = keys;
        while !rest.is_empty() {
            let ask = &rest[..rest.len().min(READ_KEYS_PER_REQUEST)];
            let prefix = &self.prefix;
            let work = super::conn::reply_work(ask.len())
                + super::conn::value_work(READ_BYTES_PER_REQUEST);
            let replies: Vec<Vec<redis::Value>> =
                self.conn
                    .eval_working("cannot read entries", &READ_MANY, 1, work, |c| {
                        c.arg(format!("{prefix}total"))
                            .arg(prefix)
                            .arg(&now)
                            .arg(mode.arg())
                            .arg(READ_BYTES_PER_REQUEST);
                        for k in ask {
                            c.arg(k);
                        }
                    })?;
            if replies.is_empty() {
                // The script always answers its first key.
                return Err(Error::General(format!(
                    "backend {}: cannot read entries: the server answered none of {} keys",
                    self.conn.label(),
                    ask.len()
                )));
            }
            let answered = replies.len().min(ask.len());
            for (k, v) in ask.iter().zip(replies) {
                let (f, large) = self.entry_reply(k, mode, v)?;
                let f = match large {
                    Some(size) => self.fetch_large(k, mode, f, size)?,
                    None => f,
                };
                if let Lookup::Hit(v) = f.lookup {
                    out.push((k.clone(), v));
                }
            }
            rest = &rest[answered..];
        }
        Ok(out)
    }
    /// The error for an entry `cache_read.lua` found damaged: the same
    /// [`Error::Corruption`] (exit 10) as a local value whose length is not
    /// its sidecar's size; cache-run takes it as a miss.
    fn damaged(&self, key: &str, what: &Damage, mode: ReadMode) -> Error {
        let then = if mode == ReadMode::Peek {
            "damaged; the next read removes it"
        } else {
            "damaged; removed"
        };
        Error::Corruption(format!(
            "{} {}v:{key}: {what} ({then})",
            self.conn.label(),
            self.prefix
        ))
    }

    /// Removes one entry through the script that adjusts the total; its
    /// value's bytes, or `None` if there was none.
    pub fn delete(&mut self, key: &str) -> Result<Option<u64>> {
        let prefix = &self.prefix;
        let n: i64 = self.conn.eval("cannot delete entry", &DELETE, 1, |c| {
            c.arg(format!("{prefix}total")).arg(prefix).arg(key);
        })?;
        Ok(u64::try_from(n).ok())
    }

    /// Removes entry `key` (as the server names it) if its value key still
    /// holds another type than a string: a damaged entry a verify found.
    /// Whether it was removed.
    fn delete_wrongtype(&mut self, key: &[u8]) -> Result<bool> {
        let prefix = &self.prefix;
        let n: i64 = self.conn.eval("cannot delete entry", &DELETE, 1, |c| {
            c.arg(format!("{prefix}total"))
                .arg(prefix)
                .arg(key)
                .arg("wrongtype");
        })?;
        Ok(n >= 0)
    }

    /// Notes each of `found` (name, shown key) that is a value without
    /// its record now, and with `fix` drops it (only if it still is).
    fn note_orphans(
        &mut self,
        fix: bool,
        found: Vec<(Vec<u8>, String)>,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let label = self.conn.label().to_string();
        if fix {
            for (name, shown) in found {
                if let Some(b) = self.delete_orphan(&name)? {
                    notes.push(format!(
                        "dropped {label} {shown}: a value without its record ({b} bytes off the total)"
                    ));
                }
            }
            return Ok(());
        }
        let prefix = &self.prefix;
        let now: Vec<i64> = self.conn.eval("cannot verify", &REPAIR, 1, |c| {
            c.arg(format!("{prefix}total")).arg(prefix).arg("orphans");
            for (n, _) in &found {
                c.arg(n);
            }
        })?;
        for ((_, shown), o) in found.into_iter().zip(now) {
            if o == 1 {
                notes.push(format!(
                    "{label} {shown}: a value without its record (damaged)"
                ));
            }
        }
        Ok(())
    }

    /// Notes each of `found` (name, shown key) whose record a read would
    /// find damaged now, or whose value's length is not its recorded size
    /// (`stored_damage` in `cache_lib.lua`, checked atomically, in the
    /// read's words), and with `fix` drops it (only if it still is): the
    /// counters may agree with the recount (a size rewritten to another
    /// number) while the drop a read would make takes the wrong size off.
    /// A drop is seen by this verify as any concurrent drop (the key is
    /// touched), so the counters are exact after `--fix`.
    fn note_damaged_records(
        &mut self,
        fix: bool,
        found: Vec<(Vec<u8>, String)>,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let prefix = self.prefix.clone();
        let now: Vec<Vec<redis::Value>> = self.conn.eval("cannot verify", &REPAIR, 1, |c| {
            c.arg(format!("{prefix}total")).arg(&prefix).arg("records");
            for (n, _) in &found {
                c.arg(n);
            }
        })?;
        let label = self.conn.label().to_string();
        for ((name, shown), d) in found.into_iter().zip(now) {
            if d.is_empty() {
                continue;
            }
            let what = Damage::from_reply(&d);
            if !fix {
                notes.push(format!("{label} {shown}: {what} (damaged)"));
                continue;
            }
            let n: i64 = self.conn.eval("cannot delete entry", &DELETE, 1, |c| {
                c.arg(format!("{prefix}total"))
                    .arg(&prefix)
                    .arg(&name)
                    .arg("damaged");
            })?;
            if n >= 0 {
                notes.push(format!("dropped {label} {shown}: {what}"));
            }
        }
        Ok(())
    }

    /// Removes entry `key`'s value if it is still without its record: the
    /// bytes taken off the total (0 when it was never counted), `None` if
    /// it was not removed (rewritten or gone since it was found).
    fn delete_orphan(&mut self, key: &[u8]) -> Result<Option<u64>> {
        let prefix = &self.prefix;
        let n: i64 = self.conn.eval("cannot delete entry", &DELETE, 1, |c| {
            c.arg(format!("{prefix}total"))
                .arg(prefix)
                .arg(key)
                .arg("orphan");
        })?;
        Ok(u64::try_from(n).ok())
    }

    /// The connection, for the cache-run lock beside the entries.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// `FFKIT_TEST_NOW`, if set.
    pub fn now_override(&self) -> Option<i64> {
        self.now
    }

    /// The counters (O(1)).
    /// A counter that is not a canonical whole number, or not a string,
    /// is damage (exit 10), as the scripts answer it: never shown as 0.
    pub fn size(&mut self) -> Result<Totals> {
        self.counters("cannot read size")?.map_err(|line| {
            Error::Corruption(format!(
                "{} {line} (damaged: `ffkit cache-size --verify --fix` repairs it)",
                self.conn.label()
            ))
        })
    }

    /// The counters, or the line of the first damaged namespace-wide key:
    /// one script call, as every other applet checks those keys
    /// (`cache_repair.lua` 'size'), the same round trip as two GETs.
    /// `what` names the call in a connection error.
    fn counters(&mut self, what: &str) -> Result<std::result::Result<Totals, String>> {
        let prefix = &self.prefix;
        let r: Vec<redis::Value> = self.conn.eval(what, &REPAIR, 1, |c| {
            c.arg(format!("{prefix}total")).arg(prefix).arg("size");
        })?;
        let int = |i: usize| {
            r.get(i)
                .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
                .unwrap_or(0)
        };
        if int(0) == 0 {
            return Ok(Ok(Totals {
                bytes: int(1).max(0) as u64,
                entries: int(2).max(0) as u64,
            }));
        }
        Ok(Err(damage_lines(r.get(1..).unwrap_or_default())
            .into_iter()
            .next()
            .unwrap_or_default()))
    }

    /// Recounts the value keys (SCAN + STRLEN, in batches) and compares
    /// with the counters; `fix` corrects them by the drift. Exact under
    /// concurrent writers too: while it runs, every write and drop notes its
    /// key for this verify (`cache_verify.lua`), and the last step measures
    /// those keys again in the same atomic step that reads the counters.
    ///
    /// Damage the counters cannot show is reported as notes: a damaged
    /// namespace-wide key (`total`, `count`, the index sets), a value
    /// without its record, a value key of another type, a record a read
    /// would refuse or whose size is not its value's length. Without `fix` a
    /// damaged namespace-wide key ends the verify there (no recount can
    /// be compared with a counter that is no number); with `fix` it is
    /// deleted first, the counters then take the recount and the index
    /// sets are rebuilt from the records while the scan runs.
    pub fn verify(&mut self, fix: bool) -> Result<Verify> {
        let mut notes = Vec::new();
        let mut reindex = false;
        let prefix = self.prefix.clone();
        let mode = if fix { "repair" } else { "check" };
        let found: Vec<redis::Value> = self.conn.eval("cannot verify", &REPAIR, 1, |c| {
            c.arg(format!("{prefix}total")).arg(&prefix).arg(mode);
        })?;
        let label = self.conn.label().to_string();
        let lines = damage_lines(&found);
        if !fix && !lines.is_empty() {
            // No recount can be compared with a counter that is no number.
            return Ok(Verify {
                counted: Totals::default(),
                recount: Totals::default(),
                notes,
                damaged: lines
                    .iter()
                    .map(|l| format!("{label} {l} (damaged: run with --verify --fix to repair)"))
                    .collect(),
            });
        }
        for (d, line) in found.chunks(4).zip(&lines) {
            let key = redis::from_redis_value_ref::<Vec<u8>>(&d[0]).unwrap_or_default();
            let counter = key.ends_with(b"total") || key.ends_with(b"count");
            reindex |= !counter;
            let how = if counter {
                "set to 0, then to the recount"
            } else {
                "deleted, rebuilt from the entries"
            };
            notes.push(format!("repaired {label} {line}: {how}"));
        }
        let mut tries = 0;
        let (counted, recount) = loop {
            tries += 1;
            if let Some(v) = self.verify_once(fix, reindex, &mut notes)? {
                break v;
            }
            if tries == 3 {
                return Err(Error::General(format!(
                    "{}: the recount kept falling behind its 60 s window; try again",
                    self.prefix
                )));
            }
        };
        if fix && recount != counted {
            let prefix = &self.prefix;
            let _: i64 = self.conn.eval("cannot fix size", &FIX, 1, |c| {
                c.arg(format!("{prefix}total"))
                    .arg(prefix)
                    .arg((recount.bytes as i128 - counted.bytes as i128).to_string())
                    .arg((recount.entries as i128 - counted.entries as i128).to_string());
            })?;
        }
        Ok(Verify {
            counted,
            recount,
            notes,
            damaged: Vec::new(),
        })
    }

    /// One verify step of `cache_verify.lua`.
    fn verify_step(&mut self, mode: &str, id: &str) -> Result<Vec<redis::Value>> {
        let prefix = &self.prefix;
        let v: redis::Value = self.conn.eval("cannot verify", &VERIFY, 1, |c| {
            c.arg(format!("{prefix}total"))
                .arg(prefix)
                .arg(mode)
                .arg(id);
        })?;
        Ok(match v {
            redis::Value::Array(items) => items,
            other => vec![other],
        })
    }

    /// One recount: `(counters, recount)` at one instant, or `None` if the
    /// registration lapsed (a scan slower than 60 s between two batches).
    /// A value key that holds another type than a string (changed behind
    /// ffkit's back) holds no value: the recount leaves it out, so its
    /// entry shows as drift, and with `fix` the entry is dropped (the
    /// value, its metadata and the counters together, as a read that finds
    /// it does), which this verify then sees as any concurrent drop.
    ///
    /// A value without its record is no entry: left out of the recount
    /// (so a counted one shows as drift), noted, and with `fix` dropped
    /// as a read that finds it does (`drop` in `cache_lib.lua` takes it
    /// off the counters only if they held it). `reindex` adds each entry
    /// scanned to the index sets it is missing from (after a damaged set
    /// was deleted).
    fn verify_once(
        &mut self,
        fix: bool,
        reindex: bool,
        notes: &mut Vec<String>,
    ) -> Result<Option<(Totals, Totals)>> {
        let label = self.conn.label().to_string();
        let id = super::lock::new_token()?;
        self.verify_step("begin", &id)?;
        let mut cursor: u64 = 0;
        // SCAN can return a key twice (a rehash under writers): by name.
        let mut seen: std::collections::HashMap<Vec<u8>, u64> = std::collections::HashMap::new();
        loop {
            let (next, keys, names) = self.scan_values(cursor)?;
            if !keys.is_empty() {
                let mut p = redis::pipe();
                for (k, name) in keys.iter().zip(&names) {
                    p.cmd("STRLEN").arg(k);
                    p.cmd("EXISTS")
                        .arg([self.prefix.as_bytes(), b"m:", name].concat());
                }
                let lens = self.conn.pipe_replies("cannot measure", &p)?;
                if reindex {
                    let prefix = &self.prefix;
                    let _: i64 = self.conn.eval("cannot rebuild index", &REPAIR, 1, |c| {
                        c.arg(format!("{prefix}total")).arg(prefix).arg("reindex");
                        for n in &names {
                            c.arg(n);
                        }
                    })?;
                }
                // Values that looked recordless: checked again atomically
                // below (the pipeline is not a snapshot: a drop between
                // its STRLEN and EXISTS looks the same, and is touched).
                let mut orphans = Vec::new();
                // Entries with a string value and a record: their records
                // checked below as a read checks them.
                let mut entries = Vec::new();
                for ((k, name), r) in keys.into_iter().zip(names).zip(lens.chunks(2)) {
                    let [n, has_record] = r else { continue };
                    let shown = String::from_utf8_lossy(&k).escape_debug().to_string();
                    match n {
                        redis::Value::Int(_) if matches!(has_record, redis::Value::Int(0)) => {
                            orphans.push((name, shown));
                        }
                        redis::Value::Int(n) => {
                            seen.insert(name.clone(), (*n).max(0) as u64);
                            entries.push((name, shown));
                        }
                        // Gone since the scan (STRLEN of no key is 0, so
                        // this is only a key of another type).
                        redis::Value::ServerError(e) if e.code() == "WRONGTYPE" => {
                            if fix {
                                if self.delete_wrongtype(&name)? {
                                    notes.push(format!(
                                        "dropped {label} {shown}: the value key is not a string"
                                    ));
                                }
                            } else {
                                notes.push(format!(
                                    "{label} {shown}: the value key is not a string (damaged)"
                                ));
                            }
                        }
                        other => {
                            return Err(Error::General(format!(
                                "{}: cannot measure {}: unexpected reply {other:?}",
                                self.conn.label(),
                                String::from_utf8_lossy(&k).escape_debug()
                            )));
                        }
                    }
                }
                self.note_orphans(fix, orphans, notes)?;
                self.note_damaged_records(fix, entries, notes)?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
            self.verify_step("renew", &id)?;
        }
        let v = self.verify_step("end", &id)?;
        let int = |i: usize| {
            v.get(i)
                .and_then(|x| redis::from_redis_value_ref::<i64>(x).ok())
                .unwrap_or(0)
        };
        if int(0) != 1 {
            return Ok(None);
        }
        let counted = Totals {
            bytes: int(1).max(0) as u64,
            entries: int(2).max(0) as u64,
        };
        for t in v.get(3..).unwrap_or_default().chunks(2) {
            if let [k, n] = t {
                let k = redis::from_redis_value_ref::<Vec<u8>>(k).unwrap_or_default();
                match redis::from_redis_value_ref::<i64>(n) {
                    Ok(n) if n >= 0 => {
                        seen.insert(k, n as u64);
                    }
                    _ => {
                        seen.remove(&k);
                    }
                }
            }
        }
        let recount = Totals {
            bytes: seen.values().sum(),
            entries: seen.len() as u64,
        };
        Ok(Some((counted, recount)))
    }

    /// Evicts in bounded steps until the policy is met (with `dry_run`:
    /// works out what would go, in read-only batches).
    pub fn evict(&mut self, p: &Policy) -> Result<Report> {
        if p.dry_run {
            return self.plan_eviction(p);
        }
        let before = self.size()?;
        let mut removed = Vec::new();
        let mut steps = 0;
        let now = now_arg(self.now);
        let max = p
            .max_bytes
            .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
        let older = p
            .older_than
            .map_or(-1, |d| i64::try_from(d).unwrap_or(i64::MAX));
        loop {
            let prefix = &self.prefix;
            let v: Vec<redis::Value> = self.conn.eval("cannot evict", &EVICT, 1, |c| {
                c.arg(format!("{prefix}total"))
                    .arg(prefix)
                    .arg(&now)
                    .arg(max)
                    .arg(u8::from(p.expired))
                    .arg(u8::from(p.all))
                    .arg(EVICT_STEP)
                    .arg(older);
            })?;
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
        // Values without their record that no index set names (set by
        // hand, or their entry's members gone too): only a scan finds them.
        if p.all {
            for name in self.scan_orphans()? {
                if let Some(bytes) = self.delete_orphan(&name)? {
                    removed.push(Evicted {
                        key: String::from_utf8_lossy(&name).into_owned(),
                        bytes,
                        reason: "all".to_string(),
                    });
                }
            }
        }
        let after = self.size()?;
        Ok(Report {
            dry_run: false,
            before: before.into(),
            after: after.into(),
            removed,
            steps,
        })
    }
}

/// Members read per round trip by a dry run.
const PLAN_BATCH: usize = 256;

/// Where a dry run reads its candidates from, in the order a real
/// eviction takes them (`cache_evict.lua`).
enum Range {
    /// Members scored at most this (expiry or creation time).
    UpTo(&'static str, i64),
    /// Every member, lowest score first (recency).
    All(&'static str),
}

impl RedisCache {
    /// The server's clock, unless `FFKIT_TEST_NOW` replaces it.
    fn clock(&mut self) -> Result<i64> {
        if let Some(n) = self.now {
            return Ok(n);
        }
        let (s, _): (i64, i64) = self
            .conn
            .cmd("cannot read the server clock", &redis::cmd("TIME"))?;
        Ok(s)
    }

    /// One batch of `range`'s members from `offset`, with their values'
    /// sizes (members whose entry vanished meanwhile are left out).
    fn batch(&mut self, range: &Range, offset: usize) -> Result<(Vec<(String, u64)>, bool)> {
        let cmd = match range {
            Range::UpTo(set, max) => {
                let mut c = redis::cmd("ZRANGEBYSCORE");
                c.arg(format!("{}{set}", self.prefix))
                    .arg("-inf")
                    .arg(*max)
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(PLAN_BATCH);
                c
            }
            Range::All(set) => {
                let mut c = redis::cmd("ZRANGE");
                c.arg(format!("{}{set}", self.prefix))
                    .arg(offset)
                    .arg(offset + PLAN_BATCH - 1);
                c
            }
        };
        let keys: Vec<String> = self.conn.cmd("cannot plan eviction", &cmd)?;
        let more = keys.len() == PLAN_BATCH;
        if keys.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut p = redis::pipe();
        for k in &keys {
            let meta = format!("{}m:{k}", self.prefix);
            p.cmd("TYPE").arg(&meta);
            p.cmd("HGET").arg(&meta).arg("size");
            p.cmd("STRLEN").arg(format!("{}v:{k}", self.prefix));
            p.cmd("EXISTS").arg(format!("{}v:{k}", self.prefix));
        }
        let replies = self.conn.pipe_replies("cannot plan eviction", &p)?;
        let found = keys
            .into_iter()
            .zip(replies.chunks(4))
            .filter_map(|(k, r)| dropped_bytes(r).map(|b| (k, b)))
            .collect();
        Ok((found, more))
    }

    /// One SCAN step over the namespace's value keys, from CURSOR: the next
    /// cursor, the keys, and the entry names they hold (the keys without
    /// the `v:` prefix).
    fn scan_values(&mut self, cursor: u64) -> Result<ScanStep> {
        let strip = format!("{}v:", self.prefix);
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(format!("{strip}*"))
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<Vec<u8>>) = self.conn.cmd("cannot scan", &scan)?;
        let names = keys
            .iter()
            .map(|k| k.strip_prefix(strip.as_bytes()).unwrap_or(k).to_vec())
            .collect();
        Ok((next, keys, names))
    }

    /// The entries (by name) whose value key has no metadata key: a SCAN
    /// of the namespace's value keys in batches, each checked with one
    /// pipeline of `EXISTS`.
    fn scan_orphans(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut cursor: u64 = 0;
        let mut out = std::collections::BTreeSet::new();
        loop {
            let (next, keys, names) = self.scan_values(cursor)?;
            if !keys.is_empty() {
                let mut p = redis::pipe();
                for n in &names {
                    p.cmd("EXISTS")
                        .arg([self.prefix.as_bytes(), b"m:", n].concat());
                }
                let has: Vec<redis::Value> = self.conn.pipe_replies("cannot scan", &p)?;
                for (n, h) in names.into_iter().zip(has) {
                    if matches!(h, redis::Value::Int(0)) {
                        out.insert(n);
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(out.into_iter().collect())
    }

    /// `--dry-run`: what [`RedisCache::evict`] would remove now, worked out
    /// with read-only batches (nothing is locked or changed, so writers
    /// running meanwhile can make the real eviction differ).
    fn plan_eviction(&mut self, p: &Policy) -> Result<Report> {
        // The sets it reads must be sets: a damaged namespace-wide key is
        // the same exit 10 and line the eviction itself would give (the
        // counters' call checks them all).
        let before = self.counters("cannot plan eviction")?.map_err(|line| {
            Error::Corruption(format!(
                "{} {line} (damaged; nothing was changed: `ffkit cache-size --verify --fix` repairs it)",
                self.conn.label()
            ))
        })?;
        let now = self.clock()?;
        let mut chosen: Vec<Evicted> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut bytes = before.bytes;
        let mut steps = 0;
        let mut passes: Vec<(Range, &str)> = Vec::new();
        if p.expired || p.max_bytes.is_some() {
            passes.push((Range::UpTo("exp", now), "expired"));
        }
        if let Some(d) = p.older_than {
            let cut = now.saturating_sub(i64::try_from(d).unwrap_or(i64::MAX));
            passes.push((Range::UpTo("crt", cut), "older-than"));
        }
        if p.all {
            passes.push((Range::All("lru"), "all"));
        } else if p.max_bytes.is_some() {
            passes.push((Range::All("lru"), "lru"));
        }
        for (range, reason) in &passes {
            let lru = *reason == "lru";
            let mut offset = 0;
            'pass: loop {
                if lru && p.max_bytes.is_some_and(|m| bytes <= m) {
                    break;
                }
                let (batch, more) = self.batch(range, offset)?;
                steps += 1;
                offset += PLAN_BATCH;
                for (k, size) in batch {
                    if lru && p.max_bytes.is_some_and(|m| bytes <= m) {
                        break 'pass;
                    }
                    if !seen.insert(k.clone()) {
                        continue;
                    }
                    bytes = bytes.saturating_sub(size);
                    chosen.push(Evicted {
                        key: k,
                        bytes: size,
                        reason: (*reason).to_string(),
                    });
                }
                if !more {
                    break;
                }
            }
        }
        let mut entries = before.entries.saturating_sub(chosen.len() as u64);
        if p.all {
            // A value without its record that no index set names was never
            // counted: it goes, and takes nothing off the counters.
            for name in self.scan_orphans()? {
                let key = String::from_utf8_lossy(&name).into_owned();
                if seen.insert(key.clone()) {
                    chosen.push(Evicted {
                        key,
                        bytes: 0,
                        reason: "all".to_string(),
                    });
                    entries += 1;
                }
            }
        }
        let after = Totals { bytes, entries };
        Ok(Report {
            dry_run: true,
            before: before.into(),
            after: after.into(),
            removed: chosen,
            steps,
        })
    }
}

/// The bytes `drop` in `cache_lib.lua` takes off the total for an entry,
/// from the replies to `TYPE m:KEY`, `HGET m:KEY size`, `STRLEN v:KEY`,
/// `EXISTS v:KEY` (errors left in place): the recorded size when it is
/// canonical and fits in a value, else the value's length (0 if the value
/// key holds no string); `None` when there is no entry. A value without
/// its record (an orphan) found through an index set was counted: its
/// length.
fn dropped_bytes(r: &[redis::Value]) -> Option<u64> {
    let [kind, size, len, value] = r else {
        return None;
    };
    let kind = redis::from_redis_value_ref::<String>(kind).ok()?;
    if kind == "none" && !matches!(value, redis::Value::Int(1)) {
        return None;
    }
    let recorded = redis::from_redis_value_ref::<Vec<u8>>(size)
        .ok()
        .and_then(|b| crate::cache::index::parse_canonical(&b))
        .filter(|&n| n <= MAX_VALUE);
    Some(recorded.unwrap_or_else(|| match len {
        redis::Value::Int(n) => (*n).max(0) as u64,
        _ => 0,
    }))
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
