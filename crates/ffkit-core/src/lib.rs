//! The core of ffkit: everything the binary, the bash builtin and the shell
//! fallback share, reached through the front end (the root package's
//! `cli`) or the builtin. Nothing here parses argv, prints or exits: a
//! result is a value or an [`Error`], and the caller words it.
//!
//! - [`backend`]: local files or a shared Redis server for locks and the cache.
//! - [`cache`]: entries, the exact incremental size index, crash repair,
//!   eviction.
//! - [`lock`]: kernel locks, named locks held across commands, dot-locks.
//! - [`memo`]: `cache-run`, a command's output memoized as a cache entry.
//! - [`metrics`]: the CSV metrics log.
//! - [`config`]: the environment contract, parsed once.
//! - [`namespace`]: every rule that turns the environment and the current
//!   dir into a path (cache dir, lock dir, lock file, metrics log, names).
//! - [`error`]: the one error type and the exit-code table.
//! - [`units`], [`fsutil`]: shared parsers and careful file primitives.
//! - [`hostfd`]: where a long-lived host (the bash builtin) keeps its descriptors.
//! - [`rawfd`]: descriptors known only by number (borrowed, or closed in a child).

pub mod backend;
pub mod cache;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod hostfd;
pub mod lock;
pub mod memo;
pub mod metrics;
pub mod namespace;
pub mod rawfd;
pub mod units;

pub use error::{Error, ExitKind, Result};
