//! `cache-read`: print an entry's value byte-exact if present and unexpired.

use super::ExitCode;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use clap::{ArgMatches, Command};

use super::{Ctx, dir_arg, key_arg, quiet_arg};
use crate::cache::key;
use crate::cache::store::{Body, Found};
use crate::error::{Error, ExitKind, Result};

pub(super) fn command() -> Command {
    Command::new("cache-read")
        .about("Print a cache entry's value if present and not expired (exit 4 otherwise)")
        .long_about(
            "Print the value of KEY byte for byte. A missing or expired entry exits 4 with one \
             line on stderr saying which (-q silences it). A hit refreshes the entry's recency \
             for LRU eviction at most once a minute.",
        )
        .arg(dir_arg())
        .arg(key_arg())
        .arg(quiet_arg())
        .arg(super::backend_arg())
        .arg(
            // The shell function read_cache_with_ttl's output: the value,
            // then one newline, written by this process, so a reader that
            // stops early meets the binary's quiet EPIPE, never a shell's
            // SIGPIPE (docs/shell.md, "Output").
            clap::Arg::new("fn-newline")
                .long("fn-newline")
                .hide(true)
                .action(clap::ArgAction::SetTrue),
        )
}

struct Args {
    dir: Option<PathBuf>,
    key: OsString,
    quiet: bool,
    newline: bool,
    backend: Option<String>,
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: m.get_one::<PathBuf>("dir").cloned(),
        key: m.get_one::<OsString>("key").cloned().unwrap_or_default(),
        quiet: m.get_flag("quiet"),
        newline: m.get_flag("fn-newline"),
        backend: super::backend_flag(m),
    };
    exec(a, ctx)
}

/// `cache-read --dir DIR [-q] [--fn-newline] -- KEY`, already parsed
/// (`cli::Direct`).
pub(super) fn direct(
    dir: PathBuf,
    key: OsString,
    quiet: bool,
    newline: bool,
    ctx: &mut Ctx,
) -> Result<ExitCode> {
    let a = Args {
        dir: Some(dir),
        key,
        quiet,
        newline,
        backend: None,
    };
    exec(a, ctx)
}

fn exec(a: Args, ctx: &mut Ctx) -> Result<ExitCode> {
    let key = key::validate(&a.key).map_err(Error::Validation)?;
    let mut store = ctx.store(a.dir.as_deref(), a.backend.as_deref())?;
    let found = store.read(key)?;
    ctx.debug(format_args!(
        "{key}: {}",
        match &found {
            Found::Hit(_, Some(m)) =>
                format!("hit ({} bytes, expires {})", m.size, expiry(m.expires_at)),
            Found::Hit(Body::Bytes(v), None) => format!("hit ({} bytes)", v.len()),
            Found::Hit(Body::File(_), None) => "hit".into(),
            Found::Missing => "no such entry".into(),
            Found::Expired(at) => format!("expired at {}", expiry(*at)),
        }
    ));
    let miss = match found {
        Found::Hit(Body::File(f), m) => {
            // The value's length is its sidecar's size (checked against the
            // open's fstat): reading exactly that spares the empty `read`
            // that would find the end.
            let len = m.map_or(u64::MAX, |m| m.size);
            io::copy(&mut io::Read::take(f, len), &mut ctx.out)
                .map_err(|e| Error::io("cannot write", "standard output", e))?;
            if a.newline {
                ctx.write_out(b"\n")?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Found::Hit(Body::Bytes(mut v), _) => {
            if a.newline {
                v.push(b'\n');
            }
            ctx.write_out(&v)?;
            return Ok(ExitCode::SUCCESS);
        }
        Found::Missing => format!("{key}: no such entry"),
        Found::Expired(at) => format!(
            "{key}: expired {}",
            at.and_then(|t| jiff::Timestamp::from_second(t).ok())
                .map_or_else(
                    || at.map_or_else(String::new, |t| format!("at epoch second {t}")),
                    |t| format!("at {t}")
                )
        ),
    };
    if a.quiet {
        return Ok(ExitCode::from(ExitKind::NotFound.code()));
    }
    Err(Error::NotFound(miss))
}

/// When an entry expires, for debug lines: epoch seconds, or "never".
fn expiry(at: Option<i64>) -> String {
    at.map_or_else(|| "never".into(), |t| t.to_string())
}
