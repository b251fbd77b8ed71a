//! `cache-write`: write one entry (value + sidecar) atomically.

use super::ExitCode;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::{Arg, ArgMatches, Command};

use super::{Ctx, dir_arg, key_arg, ttl_arg};
use crate::cache::{NewEntry, Value, key};
use crate::error::{Error, Result};

pub(super) fn command() -> Command {
    Command::new("cache-write")
        .about("Write a cache entry (value and metadata) atomically")
        .long_about(
            "Write the entry KEY: the value file and its KEY.meta sidecar. The value comes \
             from VALUE, or from standard input when VALUE is absent or '-' (binary-safe, any \
             size). A concurrent reader sees the complete old entry or the complete new one.",
        )
        .arg(dir_arg())
        .arg(key_arg())
        .arg(
            Arg::new("value")
                .value_name("VALUE")
                .value_parser(clap::value_parser!(OsString))
                .allow_hyphen_values(true)
                .help("The value; '-' or absent: read standard input"),
        )
        .arg(ttl_arg(
            "Seconds until the entry expires; 0 = never (default: never)",
        ))
        .arg(super::backend_arg())
}

struct Args {
    dir: Option<PathBuf>,
    key: OsString,
    value: Option<OsString>,
    ttl: u64,
    backend: Option<String>,
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: m.get_one::<PathBuf>("dir").cloned(),
        key: m.get_one::<OsString>("key").cloned().unwrap_or_default(),
        value: m.get_one::<OsString>("value").cloned(),
        ttl: m.get_one::<u64>("ttl").copied().unwrap_or(0),
        backend: super::backend_flag(m),
    };
    exec(a, ctx)
}

/// `cache-write --dir DIR --ttl TTL -- KEY -` (the value from standard
/// input), already parsed (`cli::Direct`).
pub(super) fn direct(dir: PathBuf, ttl: u64, key: OsString, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: Some(dir),
        key,
        value: None,
        ttl,
        backend: None,
    };
    exec(a, ctx)
}

fn exec(a: Args, ctx: &mut Ctx) -> Result<ExitCode> {
    let key = key::validate(&a.key)
        .map_err(Error::Validation)?
        .to_string();
    let mut store = ctx.store(a.dir.as_deref(), a.backend.as_deref())?;
    let given = match a.value.as_deref() {
        Some(v) if v.as_bytes() != b"-" => None,
        _ => ctx.given_bytes(),
    };
    let mut stdin;
    let value = match (a.value.as_deref(), &given) {
        (Some(v), _) if v.as_bytes() != b"-" => Value::Bytes(v.as_bytes()),
        (_, Some(b)) => Value::Bytes(b),
        _ => {
            stdin = ctx.stdin();
            Value::Reader(&mut stdin)
        }
    };
    let totals = store.write(vec![NewEntry {
        key: key.clone(),
        value,
        ttl: a.ttl,
    }])?;
    if let Some(t) = totals {
        ctx.debug(format_args!(
            "{key}: written (ttl {} s); index updated: {} bytes in {} entries",
            a.ttl, t.bytes, t.entries
        ));
    }
    Ok(ExitCode::SUCCESS)
}
