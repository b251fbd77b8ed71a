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
}

struct Args {
    dir: Option<PathBuf>,
    key: OsString,
    quiet: bool,
    newline: bool,
    backend: Option<String>,
}

/// The applet table's fast path ([`super::Argv::Fast`]): the shell
/// fallback's call, `cache-read [--dir D] [-q] [--fn-newline] -- KEY` (each
/// at most once, in any order; `--dir` dropped on a remote backend), read
/// without clap. `--fn-newline` (one newline after a hit's value: what
/// `read_cache_with_ttl` prints) exists on this path only, the wrappers'
/// exact form, so it costs clap nothing and is in no help or completion;
/// the binary prints the newline itself so that a reader that stops early
/// meets its quiet EPIPE, never a shell's SIGPIPE (docs/shell.md,
/// "Output"). Anything else goes to clap.
pub(super) fn fast(args: &[OsString]) -> Option<super::Parsed> {
    let mut a = Args {
        dir: None,
        key: OsString::new(),
        quiet: false,
        newline: false,
        backend: None,
    };
    let mut i = 1;
    loop {
        match args.get(i)?.to_str()? {
            "--" => break,
            // clap refuses an empty path and takes `-x` for an option.
            "--dir" if a.dir.is_none() => {
                let v = args.get(i + 1)?;
                if v.is_empty() || v.as_encoded_bytes().starts_with(b"-") {
                    return None;
                }
                a.dir = Some(PathBuf::from(v));
                i += 1;
            }
            "-q" if !a.quiet => a.quiet = true,
            "--fn-newline" if !a.newline => a.newline = true,
            _ => return None,
        }
        i += 1;
    }
    match args.get(i + 1..)? {
        [key] => a.key = key.clone(),
        _ => return None,
    }
    Some(Box::new(move |ctx: &mut Ctx| exec(a, ctx)))
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: m.get_one::<PathBuf>("dir").cloned(),
        key: m.get_one::<OsString>("key").cloned().unwrap_or_default(),
        quiet: m.get_flag("quiet"),
        newline: false,
        backend: super::backend_flag(m),
    };
    exec(a, ctx)
}

/// `cache-read --dir DIR [-q] [--fn-newline] -- KEY`, already parsed
/// (`cli::Direct`, the bash builtin's).
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
