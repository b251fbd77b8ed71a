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
    let key = key::validate(&a.key).map_err(Error::Validation)?;
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
            io::copy(&mut f, &mut io::stdout().lock())
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
