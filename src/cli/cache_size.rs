//! `cache-size`: the cache's total bytes, from the index in O(1), or by a
//! walk; rebuild and verify the index.

use super::ExitCode;
use crate::metrics::Op;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::json;

use super::{Ctx, dir_arg, json_arg};
use crate::cache::{Source, Totals};
use crate::error::{Error, Result};
use crate::units::format_bytes;

pub(super) fn command() -> Command {
    Command::new("cache-size")
        .about("Print the cache size in bytes (O(1) from the size index)")
        .long_about(
            "Print the total bytes of the cache: every value and sidecar file, not ffkit's \
             own dot-files. With CACHE_SIZE_TRACKING=enabled (default) the number comes from \
             .size-index in O(1); a missing or invalid index is rebuilt by walking (one note \
             on stderr). With CACHE_SIZE_TRACKING=disabled the directory is walked.",
        )
        .arg(dir_arg())
        .arg(super::quiet_arg().help("Draw no progress bar on stderr"))
        .arg(
            Arg::new("rebuild")
                .long("rebuild")
                .action(ArgAction::SetTrue)
                .conflicts_with("verify")
                .help("Recompute the index by walking the cache dir, and rewrite it"),
        )
        .arg(
            Arg::new("verify")
                .long("verify")
                .action(ArgAction::SetTrue)
                .help("Walk and compare with the index; exit 10 on drift"),
        )
        .arg(
            Arg::new("fix")
                .long("fix")
                .action(ArgAction::SetTrue)
                .requires("verify")
                .help("With --verify: rewrite a drifted index"),
        )
        .arg(json_arg().help("Print {\"bytes\":…,\"entries\":…,\"source\":\"index\"|\"walk\"}"))
        .arg(
            Arg::new("human")
                .long("human")
                .short('H')
                .action(ArgAction::SetTrue)
                .conflicts_with("json")
                .help("Print the size like 1.2 MiB"),
        )
        .arg(super::backend_arg())
}

struct Args {
    dir: Option<PathBuf>,
    rebuild: bool,
    verify: bool,
    fix: bool,
    json: bool,
    human: bool,
    backend: Option<String>,
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: m.get_one::<PathBuf>("dir").cloned(),
        rebuild: m.get_flag("rebuild"),
        verify: m.get_flag("verify"),
        fix: m.get_flag("fix"),
        json: m.get_flag("json"),
        human: m.get_flag("human"),
        backend: super::backend_flag(m),
    };
    exec(&a, super::progress::for_call(m), ctx)
}

/// `cache-size --dir DIR`, already parsed (`cli::Direct`).
pub(super) fn direct(dir: PathBuf, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: Some(dir),
        rebuild: false,
        verify: false,
        fix: false,
        json: false,
        human: false,
        backend: None,
    };
    exec(&a, super::progress::unless_quiet(false), ctx)
}

fn exec(
    a: &Args,
    progress: Option<Box<dyn crate::cache::Progress>>,
    ctx: &mut Ctx,
) -> Result<ExitCode> {
    let mut store = ctx
        .store(a.dir.as_deref(), a.backend.as_deref())?
        .with_progress(progress);
    let backend = store.backend_label().map(str::to_string);
    let out = Out {
        a,
        backend: backend.as_deref(),
    };
    if a.rebuild {
        ctx.metric = Some(Op::RebuildSizeIndex);
        let (t, repaired) = store.rebuild()?;
        for n in &repaired {
            ctx.note(n);
        }
        return out
            .print(ctx, t, Source::Walk, None)
            .map(|()| ExitCode::SUCCESS);
    }
    if a.verify {
        let r = store.verify(a.fix)?;
        // Redis: damaged namespace-wide keys, so nothing was recounted:
        // one line each (the last as the error), and `--json` lists them
        // with no numbers.
        if let Some((last, rest)) = r.damaged.split_last() {
            for n in rest {
                ctx.note(n);
            }
            if a.json {
                let mut v = json!({
                    "bytes": null,
                    "entries": null,
                    "source": "walk",
                    "damaged": r.damaged,
                });
                if let Some(b) = out.backend {
                    v["backend"] = json!(b);
                }
                ctx.write_out(format!("{v}\n").as_bytes())?;
            }
            return Err(Error::Corruption(last.clone()));
        }
        // Damage the totals cannot show (Redis: a value without its
        // record, a key of another type, a record a read refuses or that
        // disagrees with its value), or with --fix what was dropped
        // or repaired: one line each.
        for n in &r.notes {
            ctx.note(n);
        }
        if r.index == Some(r.walk) && (a.fix || r.notes.is_empty()) {
            out.print(ctx, r.walk, Source::Walk, None)?;
            return Ok(ExitCode::SUCCESS);
        }
        if r.index == Some(r.walk) {
            if a.json {
                out.print(ctx, r.walk, Source::Walk, Some(r.index))?;
            }
            return Err(Error::Corruption(format!(
                "{} damaged entr{} in {} (run with --verify --fix to repair)",
                r.notes.len(),
                if r.notes.len() == 1 { "y" } else { "ies" },
                store.place()?
            )));
        }
        let drift = describe_drift(r.index, r.walk);
        if a.fix {
            ctx.note(format_args!("index fixed: {drift}"));
            out.print(ctx, r.walk, Source::Walk, Some(r.index))?;
            return Ok(ExitCode::SUCCESS);
        }
        if a.json {
            out.print(ctx, r.walk, Source::Walk, Some(r.index))?;
        }
        return Err(Error::Corruption(format!(
            "index drift in {}: {drift} (run with --verify --fix to repair)",
            store.place()?
        )));
    }
    let report = store.size(ctx.cfg.size_tracking, a.json)?;
    // The shell function `get_cache_size` records a row only when it did
    // more than read a valid index (a walk, a rebuild, a journal finished):
    // the fallback's forkless read of that index starts no process and
    // records none, so the builtin's in-process call and the fallback's
    // binary call (both `fn_dir`) record none either (docs/shell.md).
    if ctx.fn_dir && report.from_index {
        ctx.metric = None;
    }
    if let Some(why) = report.rebuilt {
        ctx.note(format_args!(
            "size index {why} in {}: rebuilt by walking the cache dir",
            store.place()?
        ));
    } else {
        ctx.debug(format_args!(
            "size {} bytes {}",
            report.totals.bytes,
            match report.source {
                Source::Index => "read from the index",
                Source::Walk => "by walking the dir (CACHE_SIZE_TRACKING=disabled)",
            }
        ));
    }
    out.print(ctx, report.totals, report.source, None)?;
    Ok(ExitCode::SUCCESS)
}

fn describe_drift(index: Option<Totals>, walk: Totals) -> String {
    match index {
        None => format!(
            "index missing or invalid; walk found {} bytes in {} entries",
            walk.bytes, walk.entries
        ),
        Some(i) => format!(
            "index says {} bytes in {} entries, walk found {} bytes in {} entries ({:+} bytes, {:+} entries)",
            i.bytes,
            i.entries,
            walk.bytes,
            walk.entries,
            walk.bytes as i128 - i.bytes as i128,
            walk.entries as i128 - i.entries as i128
        ),
    }
}

/// How the answer is printed.
struct Out<'a> {
    a: &'a Args,
    /// A remote backend's URL (`backend` in `--json`).
    backend: Option<&'a str>,
}

impl Out<'_> {
    fn print(
        &self,
        ctx: &mut Ctx,
        t: Totals,
        source: Source,
        index: Option<Option<Totals>>,
    ) -> Result<()> {
        let a = self.a;
        let text = if a.json {
            let mut v = json!({
                "bytes": t.bytes,
                "entries": t.entries,
                "source": match source { Source::Index => "index", Source::Walk => "walk" },
            });
            if let Some(b) = self.backend {
                v["backend"] = json!(b);
            }
            if let Some(idx) = index {
                v["index_bytes"] = json!(idx.map(|i| i.bytes));
                v["index_entries"] = json!(idx.map(|i| i.entries));
                v["drift_bytes"] = json!(idx.map(|i| t.bytes as i128 - i.bytes as i128));
                v["drift_entries"] = json!(idx.map(|i| t.entries as i128 - i.entries as i128));
            }
            format!("{v}\n")
        } else if a.human {
            format!("{}\n", format_bytes(t.bytes))
        } else {
            format!("{}\n", t.bytes)
        };
        ctx.write_out(text.as_bytes())
    }
}
