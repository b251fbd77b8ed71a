//! The Redis backend (docs/redis.md): [`conn`] opens one connection per
//! call with every timeout set and maps failures to exit codes; [`lock`]
//! holds leased locks with fencing tokens; [`cache`] keeps entries whose
//! total size Lua scripts keep exact. The Lua scripts live beside this file
//! in `lua/` and are embedded at build time, with their SHA-1 ([`script`]);
//! `signals` relays the signals command mode forwards to its command;
//! `tls` is `rediss://`'s stream (feature `tls`).
//! [`driver`] is the only door in: the [`crate::backend::remote::Driver`]
//! the binary installs.

pub use driver::DRIVER;

pub mod cache;
pub mod conn;
pub mod driver;
mod guard;
pub mod lock;
mod lookup;
pub mod script;
mod signals;
#[cfg(feature = "tls")]
mod tls;
