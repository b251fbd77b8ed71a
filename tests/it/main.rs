//! The one integration-test binary: a module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test binary has no API: `pub` here means "shared between modules".
#![allow(unreachable_pub)]

mod util;

mod builtin;
mod cache;
mod cache_output;
mod cache_rules;
mod cache_run;
mod env;
mod filesystem;
mod flock_compat;
mod help;
mod host_names;
mod install_links;
mod lock;
mod lock_holes;
mod lock_identity;
mod lock_verdicts;
mod memory_limits;
mod metrics;
mod os_texts;
mod perf_regress;
mod progress;
mod redis;
mod redis_cache;
mod redis_cluster;
mod redis_faults;
mod redis_run;
mod redis_tls;
mod serve;
mod shell;
mod shell_output;
mod shell_paths;
mod shell_unload;
mod shell_vars;
