//! `cache-evict`: remove expired, old or least recently used entries until
//! the cache fits, or clear it.

use super::ExitCode;
use crate::metrics::Op;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{Ctx, dir_arg, json_arg};
use crate::cache::EvictPolicy;
use crate::error::{Error, Result};
use crate::units;

pub(super) fn command() -> Command {
    Command::new("cache-evict")
        .about("Evict expired, old or least recently used entries until the cache fits")
        .long_about(
            "Remove entries. --expired removes expired entries (and damaged ones); \
             --older-than removes entries created before the cut-off; --all empties the cache; \
             --max-bytes removes expired entries first, then the least recently used (ties by \
             key), until the size is at most the limit. Options combine. Concurrent evictors \
             never remove more than the excess plus one entry.",
        )
        .arg(dir_arg())
        .arg(super::quiet_arg().help("Draw no progress bar on stderr"))
        .arg(
            Arg::new("max_bytes")
                .long("max-bytes")
                .value_name("SIZE")
                .allow_hyphen_values(true)
                .value_parser(|s: &str| units::parse_size(s))
                .help("Evict until the cache is at most SIZE (104857600, 100M, 1G)"),
        )
        .arg(
            Arg::new("expired")
                .long("expired")
                .action(ArgAction::SetTrue)
                .help("Evict expired entries"),
        )
        .arg(
            Arg::new("older_than")
                .long("older-than")
                .value_name("DURATION")
                .allow_hyphen_values(true)
                .value_parser(|s: &str| units::parse_duration(s))
                .help("Evict entries created more than DURATION ago (90s, 5m, 2h, 7d)"),
        )
        .arg(
            Arg::new("all")
                .long("all")
                .action(ArgAction::SetTrue)
                .help("Evict every entry (clear the cache)"),
        )
        .arg(
            Arg::new("dry_run")
                .long("dry-run")
                .short('n')
                .action(ArgAction::SetTrue)
                .help("Print what would be evicted; remove nothing"),
        )
        .arg(json_arg().help("Print a JSON report of what was (or would be) removed"))
        .arg(super::backend_arg())
}

struct Args {
    dir: Option<PathBuf>,
    policy: EvictPolicy,
    json: bool,
    backend: Option<String>,
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: m.get_one::<PathBuf>("dir").cloned(),
        policy: EvictPolicy {
            max_bytes: m.get_one::<u64>("max_bytes").copied(),
            expired: m.get_flag("expired"),
            older_than: m
                .get_one::<std::time::Duration>("older_than")
                .map(|d| d.as_secs()),
            all: m.get_flag("all"),
            dry_run: m.get_flag("dry_run"),
        },
        json: m.get_flag("json"),
        backend: super::backend_flag(m),
    };
    if a.policy.all {
        ctx.metric = Some(Op::ClearDeveloperCache);
    }
    let mut store = ctx
        .store(a.dir.as_deref(), a.backend.as_deref())?
        .with_progress(super::progress::for_call(m));
    let done = store.evict(&a.policy)?;
    let report = done.report;
    match done.pruned {
        None | Some(Ok(0)) => {}
        Some(Ok(n)) => ctx.debug(format_args!(
            "cache-run files of {n} keys without an entry removed"
        )),
        Some(Err(e)) => ctx.debug(format_args!("cache-run files not pruned: {e}")),
    }
    let swept = match done.swept {
        None => Default::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            ctx.debug(format_args!("output store not swept: {e}"));
            Default::default()
        }
    };
    match swept {
        s if s.busy => ctx.debug(format_args!(
            "output store busy (a store or restore runs): not swept this time"
        )),
        s => ctx.debug(format_args!(
            "output blobs {}: {} ({} bytes)",
            if a.policy.dry_run {
                "that would go"
            } else {
                "swept"
            },
            s.blobs,
            s.bytes
        )),
    }
    ctx.debug(format_args!(
        "entries {}: {}; index {}: {} bytes in {} entries (before: {} bytes, walked under the lock)",
        if a.policy.dry_run {
            "that would go"
        } else {
            "evicted"
        },
        report.removed.len(),
        if a.policy.dry_run { "unchanged" } else { "now" },
        report.after.bytes,
        report.after.entries,
        report.before.bytes
    ));
    if a.json {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| Error::General(format!("cannot encode the report: {e}")))?;
        // cache-run's output blobs, only where there were any to sweep (the
        // report of a cache without outputs is unchanged).
        if (swept.blobs > 0 || swept.busy)
            && let Some(o) = v.as_object_mut()
        {
            o.insert(
                "output_blobs".into(),
                serde_json::json!({"blobs": swept.blobs, "bytes": swept.bytes, "busy": swept.busy}),
            );
        }
        let text = v.to_string();
        ctx.write_out(format!("{text}\n").as_bytes())?;
    } else if a.policy.dry_run {
        let mut out = String::new();
        for e in &report.removed {
            let reason = serde_json::to_value(e.reason)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let blobs = if e.blobs > 0 {
                format!(", and {} output blobs of {} bytes", e.blobs, e.blob_bytes)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "would evict {} ({} bytes, {reason}{blobs})\n",
                e.key, e.bytes
            ));
        }
        if swept.blobs > 0 {
            out.push_str(&format!(
                "would sweep {} output blobs ({} bytes)\n",
                swept.blobs, swept.bytes
            ));
        }
        ctx.write_out(out.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
