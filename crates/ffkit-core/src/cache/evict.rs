//! Eviction: which entries go, in which order, and the hard size limit.
//!
//! Selection: `--all` takes everything; `--expired` takes expired entries
//! and garbage (damaged sidecars, sidecars without a value, values whose
//! size is not their sidecar's); `--older-than`
//! takes entries created before the cut-off. Then `--max-bytes` takes, in
//! order, garbage and expired entries (by key), then the least recently used
//! (value access time, ties by key), until the size fits.
//!
//! Objects entries share (cache-run's output blobs, [`Shared`]): what an
//! entry frees is its own files plus the shared objects no remaining entry
//! uses (a blob shared by two victims counts once, with the second); the
//! objects no entry uses at all are freed by the sweep whatever goes, so
//! the plan starts from the total without them. The sweep runs in each
//! round, before the fit is checked.
//!
//! The directory is read without the lock; the decision is made under the
//! exclusive lock from the exact index and each victim's current files. An
//! entry rewritten since the walk is fresh and is skipped, and a second
//! enforcer running at once sees the first one's result, so concurrent
//! enforcers never remove more than the excess plus one entry. If writers
//! added entries meanwhile and the cache still does not fit, it walks again.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use super::scan::{self, FileInfo};
use super::{Cache, Meta, Totals};
use crate::error::{Error, Result};
use crate::fsutil;

/// What to remove.
#[derive(Clone, Debug, Default)]
pub struct EvictPolicy {
    pub max_bytes: Option<u64>,
    pub expired: bool,
    /// Remove entries created more than this many seconds ago.
    pub older_than: Option<u64>,
    pub all: bool,
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// `--all`.
    All,
    /// A damaged sidecar, a sidecar without its value, or a value whose
    /// size is not its sidecar's.
    Garbage,
    Expired,
    OlderThan,
    /// Least recently used, to fit `--max-bytes`.
    Lru,
}

#[derive(Clone, Debug, Serialize)]
pub struct Evicted {
    pub key: String,
    /// The entry's own files (value and sidecar).
    pub bytes: u64,
    pub reason: Reason,
    /// Shared objects (output blobs) that go with it: the ones no entry
    /// left uses. Not in the report when there are none.
    #[serde(skip_serializing_if = "is_zero")]
    pub blobs: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub blob_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Serialize)]
pub struct EvictReport {
    pub dry_run: bool,
    pub before: Totals,
    pub after: Totals,
    pub removed: Vec<Evicted>,
    /// Script calls a remote eviction took (absent for the local files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// What the sweeps of [`Shared`] objects removed (or would).
    #[serde(skip)]
    pub swept: Swept,
}

/// What a sweep of shared objects removed (or, dry, would remove).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub blobs: u64,
    pub bytes: u64,
    /// The store was in use: nothing was swept this time.
    pub busy: bool,
}

/// Objects entries share beyond their own files, which go when no entry
/// uses them (cache-run's output blobs: `memo::output`).
pub trait Shared {
    /// Every object with its bytes, and the objects each key uses.
    fn census(&self, cache: &Cache) -> Result<Census>;
    /// Removes the objects no entry uses, counting `gone` as removed
    /// already (dry: only counts them).
    fn sweep(&self, cache: &Cache, dry_run: bool, gone: &[String]) -> Result<Swept>;
}

/// The shared objects at one moment: [`Shared::census`].
#[derive(Debug, Default)]
pub struct Census {
    /// Object name -> bytes.
    pub sizes: HashMap<String, u64>,
    /// Key -> the objects it uses (each once).
    pub uses: HashMap<String, Vec<String>>,
}

/// How many planned-to-stay keys use each object, for the plan.
struct Users<'a> {
    census: &'a Census,
    count: HashMap<&'a str, usize>,
}

impl<'a> Users<'a> {
    fn new(census: &'a Census) -> Self {
        let mut count: HashMap<&str, usize> =
            census.sizes.keys().map(|k| (k.as_str(), 0)).collect();
        for objs in census.uses.values() {
            for o in objs {
                if let Some(n) = count.get_mut(o.as_str()) {
                    *n += 1;
                }
            }
        }
        Users { census, count }
    }

    /// The bytes of the objects no key uses: the sweep frees them anyway.
    fn unused_bytes(&self) -> u64 {
        self.count
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(o, _)| self.census.sizes[*o])
            .sum()
    }

    /// `key` goes: the objects (count, bytes) it was the last user of.
    fn release(&mut self, key: &str) -> (u64, u64) {
        let (mut n, mut bytes) = (0, 0);
        for o in self.census.uses.get(key).into_iter().flatten() {
            if let Some(c) = self.count.get_mut(o.as_str())
                && *c > 0
            {
                *c -= 1;
                if *c == 0 {
                    n += 1;
                    bytes += self.census.sizes[o.as_str()];
                }
            }
        }
        (n, bytes)
    }
}

/// One key as seen by the walk.
struct Candidate {
    key: String,
    value: Option<FileInfo>,
    sidecar: Option<FileInfo>,
    meta: Option<Meta>,
    damaged: bool,
}

impl Candidate {
    fn garbage(&self) -> bool {
        self.damaged || (self.value.is_none() && self.sidecar.is_some())
    }
    fn expired(&self, now: i64) -> bool {
        self.meta.as_ref().is_some_and(|m| m.is_expired(now))
    }
    fn created(&self) -> i64 {
        match (&self.meta, &self.value) {
            (Some(m), _) => m.created_at,
            (None, Some(v)) => v.mtime,
            (None, None) => i64::MIN,
        }
    }
    fn last_use(&self) -> i64 {
        self.value.as_ref().map_or(i64::MIN, |v| v.atime)
    }
}

/// The number of walks before giving up on writers that outpace eviction.
const MAX_ROUNDS: usize = 8;

pub fn run(
    cache: &Cache,
    policy: &EvictPolicy,
    shared: Option<&dyn Shared>,
) -> Result<EvictReport> {
    if !policy.all && !policy.expired && policy.older_than.is_none() && policy.max_bytes.is_none() {
        return Err(Error::Validation(
            "nothing to evict: give --max-bytes, --expired, --older-than or --all".into(),
        ));
    }
    if !cache.exists() {
        return Ok(EvictReport {
            dry_run: policy.dry_run,
            before: Totals::default(),
            after: Totals::default(),
            removed: vec![],
            steps: None,
            swept: Swept::default(),
        });
    }
    let mut report: Option<EvictReport> = None;
    for _ in 0..MAX_ROUNDS {
        let order = candidates(cache, policy)?;
        let census = match shared {
            Some(s) => s.census(cache)?,
            None => Census::default(),
        };
        let mut users = Users::new(&census);
        let (before, after, removed) = cache.remove_keys(policy.dry_run, |c, before| {
            plan(c, policy, before, &order, &mut users)
        })?;
        let progress = !removed.is_empty();
        let r = report.get_or_insert(EvictReport {
            dry_run: policy.dry_run,
            before,
            after,
            removed: vec![],
            steps: None,
            swept: Swept::default(),
        });
        r.after = if policy.dry_run {
            simulate(before, &removed)
        } else {
            after
        };
        r.removed.extend(removed);
        // The objects no entry uses now (or would): swept before the fit
        // is judged, so a round never evicts for bytes a sweep frees.
        if let Some(s) = shared {
            let gone: Vec<String> = r.removed.iter().map(|e| e.key.clone()).collect();
            let swept = s.sweep(
                cache,
                policy.dry_run,
                if policy.dry_run { &gone } else { &[] },
            )?;
            r.after.bytes = r.after.bytes.saturating_sub(swept.bytes);
            if policy.dry_run {
                r.swept = swept;
            } else {
                r.swept.blobs += swept.blobs;
                r.swept.bytes += swept.bytes;
                r.swept.busy |= swept.busy;
            }
            if swept.busy {
                break; // nothing more to learn this time
            }
        }
        let fits = policy.max_bytes.is_none_or(|m| r.after.bytes <= m);
        if fits || !progress || policy.dry_run {
            break;
        }
    }
    report.ok_or_else(|| Error::General("eviction did not run".into()))
}

fn simulate(before: Totals, removed: &[Evicted]) -> Totals {
    let bytes: u64 = removed.iter().map(|e| e.bytes).sum();
    Totals {
        bytes: before.bytes.saturating_sub(bytes),
        entries: before.entries.saturating_sub(removed.len() as u64),
    }
}

/// Walks and orders every key: unconditional victims first (with their
/// reason), then the rest in LRU order.
fn candidates(cache: &Cache, policy: &EvictPolicy) -> Result<Vec<(Candidate, Option<Reason>)>> {
    let s = scan::scan_with(cache.dir(), cache.progress())?;
    s.remove_stale_temps(cache.dir());
    let need_meta = policy.expired || policy.older_than.is_some() || policy.max_bytes.is_some();
    let mut by_key: BTreeMap<String, Candidate> = BTreeMap::new();
    for f in s.files {
        // Names that are not UTF-8 or not valid keys are not ffkit's: never touched.
        let Some(name) = f.name.to_str() else {
            continue;
        };
        let (key, is_sidecar) = match name.strip_suffix(".meta") {
            Some(k) => (k.to_string(), true),
            None => (name.to_string(), false),
        };
        if super::key::validate_bytes(key.as_bytes()).is_err() {
            continue;
        }
        let c = by_key.entry(key.clone()).or_insert_with(|| Candidate {
            key,
            value: None,
            sidecar: None,
            meta: None,
            damaged: false,
        });
        if is_sidecar {
            c.sidecar = Some(f);
        } else {
            c.value = Some(f);
        }
    }
    let now = cache.now();
    let mut out = Vec::with_capacity(by_key.len());
    let progress = cache.progress().filter(|_| need_meta);
    if let Some(p) = progress {
        p.start("reading metadata", Some(by_key.len() as u64));
    }
    for (_, mut c) in by_key {
        if let Some(p) = progress {
            p.advance(1);
        }
        if need_meta && c.sidecar.is_some() {
            match read_meta(cache, &c.key) {
                // A value whose size is not its sidecar's was damaged
                // behind ffkit's back: garbage, as a read calls it.
                Some(Ok(m)) => {
                    c.damaged = c.value.as_ref().is_some_and(|v| v.size != m.size);
                    c.meta = Some(m);
                }
                Some(Err(())) => c.damaged = true,
                None => c.sidecar = None,
            }
        }
        let reason = if policy.all {
            Some(Reason::All)
        } else if policy.expired && c.garbage() {
            Some(Reason::Garbage)
        } else if policy.expired && c.expired(now) {
            Some(Reason::Expired)
        } else if policy
            .older_than
            .is_some_and(|d| c.created() <= now.saturating_sub(d.min(i64::MAX as u64) as i64))
        {
            Some(Reason::OlderThan)
        } else {
            None
        };
        out.push((c, reason));
    }
    if let Some(p) = progress {
        p.finish();
    }
    // Unconditional victims first, then garbage and expired, then LRU; ties by key.
    out.sort_by(|(a, ra), (b, rb)| {
        let rank = |c: &Candidate, r: &Option<Reason>| {
            (
                r.is_none(),
                !(c.garbage() || c.expired(now)),
                if c.garbage() || c.expired(now) {
                    0
                } else {
                    c.last_use()
                },
            )
        };
        rank(a, ra)
            .cmp(&rank(b, rb))
            .then_with(|| a.key.cmp(&b.key))
    });
    Ok(out)
}

/// Reads a sidecar for eviction: `None` if it vanished, `Err` if damaged.
fn read_meta(cache: &Cache, key: &str) -> Option<std::result::Result<Meta, ()>> {
    let mut f = fsutil::open_read(&cache.dir().join(format!("{key}.meta"))).ok()?;
    let mut b = Vec::with_capacity(256);
    if f.read_to_end(&mut b).is_err() {
        return Some(Err(()));
    }
    Some(Meta::parse(&b).map_err(|_| ()))
}

/// Under the lock: the victims, measured now. Entries rewritten since the
/// walk are skipped; LRU victims are taken only while the cache is too big.
fn plan(
    cache: &Cache,
    policy: &EvictPolicy,
    before: Totals,
    order: &[(Candidate, Option<Reason>)],
    users: &mut Users,
) -> Result<Vec<Evicted>> {
    // Shared objects no entry uses go with the sweep whatever is evicted.
    let mut bytes = before.bytes.saturating_sub(users.unused_bytes());
    let mut out = Vec::new();
    for (c, reason) in order {
        let reason = match reason {
            Some(r) => *r,
            None => match policy.max_bytes {
                Some(max) if bytes > max => {
                    if c.garbage() {
                        Reason::Garbage
                    } else if c.expired(cache.now()) {
                        Reason::Expired
                    } else {
                        Reason::Lru
                    }
                }
                _ => continue,
            },
        };
        if reason != Reason::All && !unchanged(cache, c) {
            continue;
        }
        let (now_bytes, _) = cache.key_usage(&c.key)?;
        let present = |n: String| std::fs::symlink_metadata(cache.dir().join(n)).is_ok();
        if !present(c.key.clone()) && !present(format!("{}.meta", c.key)) {
            continue; // already gone
        }
        let (blobs, blob_bytes) = users.release(&c.key);
        bytes = bytes.saturating_sub(now_bytes + blob_bytes);
        out.push(Evicted {
            key: c.key.clone(),
            bytes: now_bytes,
            reason,
            blobs,
            blob_bytes,
        });
    }
    Ok(out)
}

/// Whether the key's files are still the ones the walk saw.
fn unchanged(cache: &Cache, c: &Candidate) -> bool {
    let ino = |name: String| {
        std::fs::symlink_metadata(cache.dir().join(name))
            .ok()
            .map(|m| m.ino())
    };
    c.value.as_ref().map(|v| v.ino) == ino(c.key.clone())
        && c.sidecar.as_ref().map(|v| v.ino) == ino(format!("{}.meta", c.key))
}
