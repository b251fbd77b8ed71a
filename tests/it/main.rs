//! The one integration-test binary: a module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

mod cache;
mod hardening;
mod lock;
mod metrics;
mod shell;
