//! ffkit: FlowForge's cache, lock and metrics helpers as one native
//! multicall binary. This crate is the front end; the logic is the core
//! crate, `ffkit-core` (crates/ffkit-core), re-exported here so every way
//! in names one library.
//!
//! - [`cli`]: the applet table, dispatch and the applets' argument handling —
//!   the only part that knows clap or prints.
//! - the core ([`ffkit_core`]): [`backend`], [`cache`], [`lock`], [`memo`],
//!   [`metrics`], [`config`], [`namespace`], [`error`], [`units`], [`fsutil`],
//!   [`hostfd`]. It never parses argv, never prints and never exits; the
//!   compiler keeps it so (it depends on neither clap nor a terminal crate,
//!   and denies clippy's print lints).

pub mod cli;

pub use ffkit_core::{Error, ExitKind, Result};
pub use ffkit_core::{
    backend, cache, config, error, fsutil, hostfd, lock, memo, metrics, namespace, units,
};
