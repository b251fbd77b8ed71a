//! The seam between the library and a remote backend: what the lock and
//! cache types ([`crate::lock::Locks`], [`crate::cache::Store`],
//! [`crate::memo::Store`]) ask of one, in the library's own report types.
//!
//! The library never names the Redis client. A remote backend is a
//! [`Driver`] installed once per process with [`install`]: the binary's
//! `main` installs the Redis one (`backend::redis::DRIVER`, cargo feature
//! `redis`, on by default). The bash builtin installs none, so nothing it
//! can reach refers to the Redis client and the linker leaves it out of the
//! `.so`; it hands every remote call to the binary instead (docs/shell.md).
//! Without a driver a remote URL is refused as a bad `FFKIT_BACKEND` /
//! `--backend` (exit 12), naming why.

use std::any::Any;
use std::sync::OnceLock;
use std::time::Duration;

use super::Target;
use crate::cache::{EvictPolicy, EvictReport, Totals};
use crate::config::Config;
use crate::error::Result;
use crate::lock::acquire::{Outcome, Report, Request};
use crate::lock::release::Released;
use crate::lock::status::Status;

/// A remote backend: parses its URLs and opens its locks and caches.
pub trait Driver: Sync {
    /// Parses a URL that is not `local` (the whole check: a bad one is
    /// refused here, with the message to show).
    fn parse(&self, url: &str) -> std::result::Result<Target, String>;
    /// Runs an acquisition ([`Request::validate`] and the remote refusals
    /// already passed, the owner checked); `name` is the lock's name (or a
    /// path, verbatim), `owner` the process it belongs to.
    #[allow(clippy::too_many_arguments)]
    fn lock_acquire(
        &self,
        t: &Target,
        cfg: &Config,
        name: &str,
        req: &Request,
        owner: u32,
        session: bool,
        rep: &mut dyn Report,
    ) -> Result<Outcome>;
    /// The lock's current record, if held.
    fn lock_status(&self, t: &Target, cfg: &Config, name: &str, session: bool) -> Result<Status>;
    /// Releases the lock if `may` allows its holder. `owners`: the pids
    /// whose holding this release is ([`crate::lock::release::releasers`]),
    /// for telling a lock lost while they held it from one never taken.
    fn lock_release(
        &self,
        t: &Target,
        cfg: &Config,
        name: &str,
        session: bool,
        may: &dyn Fn(&crate::lock::holder::Holder) -> bool,
        owners: &[u32],
    ) -> Result<Released>;
    /// A connection to the namespace's cache.
    fn cache(&self, t: &Target, cfg: &Config) -> Result<Box<dyn RemoteCache>>;
    /// cache-run's entries and per-key lock (opened at first use).
    fn run_store(&self, t: &Target, cfg: &Config) -> Box<dyn RunStore>;
}

/// What a read of a remote entry found.
#[derive(Debug)]
pub enum RemoteLookup {
    Hit(Vec<u8>),
    Missing,
    /// Expired at this epoch second (and now removed).
    Expired(i64),
}

/// One namespace's cache on a remote backend.
pub trait RemoteCache {
    /// Where the cache is, for messages: the URL (without credentials) and
    /// the namespace's key prefix.
    fn place(&self) -> String;
    fn read(&mut self, key: &str) -> Result<RemoteLookup>;
    /// The present, unexpired entries among `keys`, in their order, each
    /// read as [`RemoteCache::read`] reads it (`cache-batch --read`).
    fn read_many(&mut self, keys: &[String]) -> Result<Vec<(String, Vec<u8>)>>;
    fn write(&mut self, key: &str, value: &[u8], ttl: u64) -> Result<()>;
    /// Every entry in one transaction.
    fn write_many(&mut self, items: &[(&str, &[u8], u64)]) -> Result<()>;
    /// Reads a value to write from `r`, refusing one larger than an entry
    /// can hold before anything is sent.
    fn read_value(&self, key: &str, r: &mut dyn std::io::Read) -> Result<Vec<u8>>;
    fn size(&mut self) -> Result<Totals>;
    /// The kept counters next to a recount (`fix`: the counters take the
    /// recount), and damage the counters cannot show, one line each (with
    /// `fix`: what was dropped or repaired); last, without `fix`, every
    /// damaged namespace-wide key (then nothing was recounted).
    #[allow(clippy::type_complexity)]
    fn verify(&mut self, fix: bool) -> Result<(Totals, Totals, Vec<String>, Vec<String>)>;
    fn evict(&mut self, p: &EvictPolicy) -> Result<EvictReport>;
}

/// How a cache-run look treats the entry (see `memo::Store::look`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookMode {
    /// A plain read: a hit refreshes recency, an expired entry goes.
    Plain,
    /// A replay: as `Plain`, and counted.
    Hit,
    /// Look only.
    Peek,
}

/// A cache-run look at a remote entry.
#[derive(Debug)]
pub struct RunFound {
    pub lookup: RemoteLookup,
    /// Seconds since the entry was made (by the server's clock).
    pub age: i64,
    /// Replays counted (the look's own included).
    pub hits: u64,
}

/// cache-run's side of a remote backend: the entries and per-key lock.
pub trait RunStore {
    /// "Now" for a new recording.
    fn now(&self) -> i64;
    fn look(&self, entry: &str, mode: LookMode) -> Result<RunFound>;
    fn write(&self, entry: &str, value: &[u8], ttl: u64) -> Result<()>;
    /// Whether there was an entry to remove.
    fn delete(&self, entry: &str) -> Result<bool>;
    /// Takes the per-key lock of `hex` (`None`: do not wait); the guard
    /// releases it when dropped. `Ok(None)`: busy without a wait.
    fn lock(&self, entry: &str, hex: &str, wait: Option<Duration>) -> Result<Option<Box<dyn Any>>>;
    /// Whether a run of `hex` holds its lock now (true when unsure).
    fn busy(&self, entry: &str, hex: &str) -> bool;
}

static DRIVER: OnceLock<&'static dyn Driver> = OnceLock::new();

/// Installs the remote backend of this process (the first call wins).
pub fn install(d: &'static dyn Driver) {
    let _ = DRIVER.set(d);
}

/// The installed driver, if any.
pub(crate) fn driver() -> Option<&'static dyn Driver> {
    DRIVER.get().copied()
}
