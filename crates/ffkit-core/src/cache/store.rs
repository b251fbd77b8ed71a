//! [`Store`]: the one type the cache applets call, over the local cache dir
//! ([`Cache`]) and a remote backend (docs/redis.md). It answers in the
//! same report types for both ([`Found`], [`Totals`], [`SizeReport`],
//! [`VerifyReport`], [`EvictDone`]), so an applet words an outcome once and
//! never asks which backend ran; what only one backend has is an `Option`.
//!
//! A remote cache is opened at its first use, so a call with nothing to
//! send (an empty batch) never connects.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Cache, EvictPolicy, EvictReport, Lookup, Meta, NewEntry, SizeReport, Source, Totals};
use super::{Value, VerifyReport};
use crate::backend::remote::{RemoteCache, RemoteLookup};
use crate::backend::{self, Target};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::memo::output::Swept;

/// The cache of one call.
pub enum Store {
    Local(Cache),
    Remote(Box<Remote>),
}

/// A remote cache, connected at first use.
pub struct Remote {
    target: Target,
    cfg: Config,
    conn: Option<Box<dyn RemoteCache>>,
}

impl Remote {
    fn conn(&mut self) -> Result<&mut dyn RemoteCache> {
        if self.conn.is_none() {
            let d = backend::remote::driver().ok_or_else(|| {
                Error::Config(format!(
                    "backend {}: no remote backend in this program",
                    self.target.label
                ))
            })?;
            self.conn = Some(d.cache(&self.target, &self.cfg)?);
        }
        match self.conn.as_deref_mut() {
            Some(c) => Ok(c),
            None => Err(Error::General("the backend connection is gone".into())),
        }
    }
}

/// How a child ffkit reaches a cache ([`Store::reopen`]).
pub struct Reopen {
    pub args: Vec<std::ffi::OsString>,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

/// A read's answer.
pub enum Found {
    /// The value, and (local files) the entry's sidecar.
    Hit(Body, Option<Meta>),
    Missing,
    /// Expired (at this epoch second, when known).
    Expired(Option<i64>),
}

/// A value read: an open file (local) or the bytes (remote).
pub enum Body {
    File(File),
    Bytes(Vec<u8>),
}

/// What an eviction did, with the local files' tidy-up of cache-run's
/// side files and output blobs (`None` where the backend has none).
pub struct EvictDone {
    pub report: EvictReport,
    /// cache-run's per-key files of keys without an entry, removed.
    pub pruned: Option<Result<usize>>,
    /// cache-run's output blobs no entry uses, swept (or counted).
    pub swept: Option<Result<Swept>>,
}

impl Store {
    /// The remote cache `--backend FLAG` (else `FFKIT_BACKEND`) names, or
    /// `None` for the local files (which the caller opens, with its
    /// notes, as a [`Cache`]). `--dir` names a local cache: on a remote
    /// backend it is refused rather than silently ignored.
    pub fn remote(cfg: &Config, flag: Option<&str>, dir: Option<&Path>) -> Result<Option<Store>> {
        let Some(target) = backend::select(cfg, flag)? else {
            return Ok(None);
        };
        if let Some(d) = dir {
            return Err(Error::Validation(format!(
                "--dir {}: names a local cache dir, but the backend is {} (use --backend local)",
                d.display(),
                target.label
            )));
        }
        Ok(Some(Store::Remote(Box::new(Remote {
            target,
            cfg: cfg.clone(),
            conn: None,
        }))))
    }

    /// Where the cache is, for messages: the dir, or the backend URL and
    /// namespace.
    pub fn place(&mut self) -> Result<String> {
        match self {
            Store::Local(c) => Ok(c.dir().display().to_string()),
            Store::Remote(r) => Ok(r.conn()?.place()),
        }
    }

    /// Reports a local walk's progress to `p` (a remote backend has none).
    pub fn with_progress(self, p: Option<Box<dyn super::Progress>>) -> Store {
        match self {
            Store::Local(c) => Store::Local(c.with_progress(p)),
            remote => remote,
        }
    }

    /// How a child ffkit (cache-run's detached refresh) reaches this same
    /// cache: arguments, and variables for its environment (a backend URL
    /// with its password goes there, never into an argv).
    pub fn reopen(&self) -> Reopen {
        match self {
            Store::Local(c) => Reopen {
                args: vec![
                    "--backend".into(),
                    "local".into(),
                    "--dir".into(),
                    c.dir().into(),
                ],
                env: Vec::new(),
            },
            Store::Remote(r) => Reopen {
                args: Vec::new(),
                env: vec![("FFKIT_BACKEND".into(), r.target.url().into())],
            },
        }
    }

    /// cache-run's entries and per-key lock in this cache.
    pub fn run_store(&self) -> Result<crate::memo::Store<'_>> {
        match self {
            Store::Local(c) => Ok(crate::memo::Store::Local(c)),
            Store::Remote(r) => crate::memo::Store::remote(&r.target, &r.cfg),
        }
    }

    /// The remote backend's URL (without credentials); `None` locally.
    pub fn backend_label(&self) -> Option<&str> {
        match self {
            Store::Local(_) => None,
            Store::Remote(r) => Some(&r.target.label),
        }
    }

    /// The local dir; `None` on a remote backend.
    pub fn dir(&self) -> Option<PathBuf> {
        match self {
            Store::Local(c) => Some(c.dir().to_path_buf()),
            Store::Remote(_) => None,
        }
    }

    pub fn read(&mut self, key: &str) -> Result<Found> {
        match self {
            Store::Local(c) => Ok(match c.read(key)? {
                Lookup::Hit(f, m) => Found::Hit(Body::File(f), Some(m)),
                Lookup::Missing => Found::Missing,
                Lookup::Expired(m) => Found::Expired(m.expires_at),
            }),
            Store::Remote(r) => Ok(match r.conn()?.read(key)? {
                RemoteLookup::Hit(v) => Found::Hit(Body::Bytes(v), None),
                RemoteLookup::Missing => Found::Missing,
                RemoteLookup::Expired(at) => Found::Expired(Some(at)),
            }),
        }
    }

    /// The present, unexpired entries among `keys`, in order (a local
    /// value open where it can be, to be copied as it is written:
    /// [`super::batch::write_record`]).
    pub fn read_many(&mut self, keys: &[String]) -> Result<Vec<(String, Body)>> {
        match self {
            Store::Local(c) => c.read_many(keys),
            Store::Remote(r) => Ok(r
                .conn()?
                .read_many(keys)?
                .into_iter()
                .map(|(k, v)| (k, Body::Bytes(v)))
                .collect()),
        }
    }

    /// Writes the entries in one commit (local) or one transaction
    /// (remote). The new totals where the backend returns them.
    pub fn write(&mut self, entries: Vec<NewEntry<'_>>) -> Result<Option<Totals>> {
        if entries.is_empty() {
            return Ok(None);
        }
        match self {
            Store::Local(c) => c.write(entries).map(Some),
            Store::Remote(r) => {
                let c = r.conn()?;
                let mut owned = Vec::with_capacity(entries.len());
                for e in entries {
                    let bytes = match e.value {
                        Value::Bytes(b) => b.to_vec(),
                        Value::Reader(rd) => c.read_value(&e.key, rd)?,
                    };
                    owned.push((e.key, bytes, e.ttl));
                }
                if let [(k, v, ttl)] = &owned[..] {
                    c.write(k, v, *ttl)?;
                } else {
                    let items: Vec<(&str, &[u8], u64)> = owned
                        .iter()
                        .map(|(k, v, t)| (k.as_str(), &v[..], *t))
                        .collect();
                    c.write_many(&items)?;
                }
                Ok(None)
            }
        }
    }

    /// The size: from the index (the counters), or by a walk when size
    /// tracking is off (`tracking`) or an exact answer is asked (`exact`).
    pub fn size(&mut self, tracking: bool, exact: bool) -> Result<SizeReport> {
        match self {
            Store::Local(c) if !tracking => c.size(false),
            Store::Local(c) if exact => c.size(true),
            Store::Local(c) => c.size_bytes(),
            Store::Remote(r) => Ok(SizeReport {
                totals: r.conn()?.size()?,
                source: Source::Index,
                rebuilt: None,
                from_index: false,
            }),
        }
    }

    /// The index (the counters) rebuilt from a walk (a recount), with a
    /// line for each damaged key or entry repaired on the way (Redis: what
    /// `--verify --fix` reports; a local rebuild has none to report).
    pub fn rebuild(&mut self) -> Result<(Totals, Vec<String>)> {
        match self {
            Store::Local(c) => c.rebuild().map(|t| (t, Vec::new())),
            // With `fix`, damaged keys are repaired and reported in the
            // notes (the damaged list is only filled without it).
            Store::Remote(r) => r
                .conn()?
                .verify(true)
                .map(|(_, recount, notes, _)| (recount, notes)),
        }
    }

    /// The index (the counters) next to a walk (a recount); `fix` makes
    /// the index the walk's.
    pub fn verify(&mut self, fix: bool) -> Result<VerifyReport> {
        match self {
            Store::Local(c) => c.verify(fix),
            Store::Remote(r) => {
                let (counted, recount, notes, damaged) = r.conn()?.verify(fix)?;
                Ok(VerifyReport {
                    index: Some(counted),
                    walk: recount,
                    notes,
                    damaged,
                })
            }
        }
    }

    /// Evicts by `policy` (refused when it asks for nothing), then tidies
    /// what only the local files have.
    pub fn evict(&mut self, policy: &EvictPolicy) -> Result<EvictDone> {
        if !policy.all
            && !policy.expired
            && policy.older_than.is_none()
            && policy.max_bytes.is_none()
        {
            return Err(Error::Validation(
                "nothing to evict: give --max-bytes, --expired, --older-than or --all".into(),
            ));
        }
        let c = match self {
            Store::Remote(r) => {
                return Ok(EvictDone {
                    report: r.conn()?.evict(policy)?,
                    pruned: None,
                    swept: None,
                });
            }
            Store::Local(c) => c,
        };
        // cache-run's output blobs are planned with and swept in each round
        // (mark and sweep; with --dry-run, only counted).
        let report = crate::memo::output::evict(c, policy)?;
        // cache-run's per-key files of keys that have no entry any more.
        let pruned = (!policy.dry_run).then(|| crate::memo::store::prune_local(c));
        let swept = Ok(report.swept);
        Ok(EvictDone {
            report,
            pruned,
            swept: Some(swept),
        })
    }
}
