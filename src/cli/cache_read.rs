//! `cache-read`: print an entry's value byte-exact if present and unexpired.

use super::ExitCode;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use clap::{ArgMatches, Command};

use super::{Ctx, dir_arg, key_arg, quiet_arg};
use crate::cache::{Lookup, key};
use crate::error::{Error, ExitKind, Result};

pub fn command() -> Command {
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
}

pub fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: m.get_one::<PathBuf>("dir").cloned(),
        key: m.get_one::<OsString>("key").cloned().unwrap_or_default(),
        quiet: m.get_flag("quiet"),
    };
    exec(a, m.get_one::<String>("backend").map(String::as_str), ctx)
}

/// `cache-read --dir DIR [-q] -- KEY`, already parsed (`cli::Direct`).
pub(super) fn direct(dir: PathBuf, key: OsString, quiet: bool, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: Some(dir),
        key,
        quiet,
    };
    exec(a, None, ctx)
}

fn exec(a: Args, backend: Option<&str>, ctx: &mut Ctx) -> Result<ExitCode> {
    let key = key::validate(&a.key).map_err(Error::Validation)?;
    if let Some(t) = crate::backend::select(&ctx.cfg, backend)? {
        super::remote::no_dir(&t, a.dir.as_deref())?;
        return super::remote::cache_read(&t, key, a.quiet, ctx);
    }
    let cache = ctx.cache(a.dir.as_deref())?;
    let found = cache.read(key)?;
    ctx.debug(format_args!(
        "{key}: {}",
        match &found {
            Lookup::Hit(_, m) => format!("hit ({} bytes, expires {})", m.size, expiry(m)),
            Lookup::Missing => "no such entry".into(),
            Lookup::Expired(m) => format!("expired at {}", expiry(m)),
        }
    ));
    let miss = match found {
        Lookup::Hit(mut f, _) => {
            io::copy(&mut f, &mut ctx.out)
                .map_err(|e| Error::io("cannot write", "standard output", e))?;
            return Ok(ExitCode::SUCCESS);
        }
        Lookup::Missing => format!("{key}: no such entry"),
        Lookup::Expired(m) => format!(
            "{key}: expired {}",
            m.expires_at
                .and_then(|t| jiff::Timestamp::from_second(t).ok())
                .map_or_else(String::new, |t| format!("at {t}"))
        ),
    };
    if a.quiet {
        return Ok(ExitCode::from(ExitKind::NotFound.code()));
    }
    Err(Error::NotFound(miss))
}

/// When an entry expires, for debug lines: epoch seconds, or "never".
fn expiry(m: &crate::cache::Meta) -> String {
    m.expires_at
        .map_or_else(|| "never".into(), |t| t.to_string())
}
