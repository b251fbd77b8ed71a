//! `cache-batch`: write many entries in one process with one lock
//! acquisition and one index update, or read many keys at once.

use super::ExitCode;
use crate::metrics::Op;
use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{Ctx, dir_arg, ttl_arg};
use crate::cache::batch::{self, Format, RecordError};
use crate::cache::{NewEntry, Store, Value, key};
use crate::error::{Error, Result};

/// The old `batch_write_cache` wrote every entry with a 300 s TTL.
const DEFAULT_TTL: u64 = 300;

pub(super) fn command() -> Command {
    Command::new("cache-batch")
        .about("Write many entries at once (key:value lines or JSON lines), or read many")
        .long_about(
            "Write many entries in one operation: one lock acquisition, one index update. \
             Input (standard input or --file) is 'key:value' lines — the key ends at the \
             first ':', the value is the rest of the line; empty lines are skipped and one \
             trailing CR is removed — or, with --format jsonl, {\"key\":…,\"value\":…,\"ttl\":…} \
             lines for values with any characters. A bad line stops the batch before anything \
             is written (exit 2, naming the line); --keep-going writes the good lines, reports \
             each bad one and exits 2.\n\nWith --read, prints 'key:value' (or JSON lines) for \
             every present, unexpired key given as arguments or one per line on standard input.",
        )
        .arg(dir_arg())
        .arg(super::quiet_arg().help("Draw no progress bar on stderr"))
        .arg(
            Arg::new("file")
                .long("file")
                .short('f')
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Read the batch from FILE instead of standard input"),
        )
        .arg(
            Arg::new("format")
                .long("format")
                .value_name("FORMAT")
                .value_parser(["lines", "jsonl"])
                .default_value("lines")
                .help("Input (and --read output) format"),
        )
        .arg(ttl_arg(
            "TTL in seconds for every entry; 0 = never (default: 300)",
        ))
        .arg(
            Arg::new("keep_going")
                .long("keep-going")
                .short('k')
                .action(ArgAction::SetTrue)
                .help("Write the good lines even if some are bad (still exit 2)"),
        )
        .arg(
            Arg::new("read")
                .long("read")
                .action(ArgAction::SetTrue)
                .conflicts_with_all(["ttl", "keep_going"])
                .help("Read mode: print the entries for the given keys"),
        )
        .arg(
            Arg::new("keys")
                .value_name("KEY")
                .num_args(0..)
                .requires("read")
                .help("With --read: keys to print (default: one per line on standard input)"),
        )
        .arg(super::backend_arg())
}

struct Args {
    dir: Option<PathBuf>,
    file: Option<PathBuf>,
    format: Format,
    ttl: u64,
    keep_going: bool,
    read: bool,
    keys: Vec<String>,
    backend: Option<String>,
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: m.get_one::<PathBuf>("dir").cloned(),
        file: m.get_one::<PathBuf>("file").cloned(),
        format: match m.get_one::<String>("format").map(String::as_str) {
            Some("jsonl") => Format::Jsonl,
            _ => Format::Lines,
        },
        ttl: m.get_one::<u64>("ttl").copied().unwrap_or(DEFAULT_TTL),
        keep_going: m.get_flag("keep_going"),
        read: m.get_flag("read"),
        keys: m
            .get_many::<String>("keys")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        backend: super::backend_flag(m),
    };
    if a.read {
        let mut store = ctx
            .store(a.dir.as_deref(), a.backend.as_deref())?
            .with_progress(super::progress::for_call(m));
        ctx.metric = Some(Op::BatchRead);
        return read(&a, ctx, &mut store);
    }
    let input = match &a.file {
        Some(f) => fs::read(f).map_err(|e| Error::io("cannot read", f, e))?,
        None => {
            let mut v = Vec::new();
            ctx.stdin()
                .read_to_end(&mut v)
                .map_err(|e| Error::io("cannot read", "standard input", e))?;
            v
        }
    };
    let (items, bad) = batch::parse(&input, a.format);
    if !bad.is_empty() && !a.keep_going {
        let first = &bad[0];
        let more = match bad.len() {
            1 => String::new(),
            n => format!(" (and {} more bad lines)", n - 1),
        };
        return Err(Error::Validation(format!(
            "line {}: {}{more}; nothing was written",
            first.line, first.why
        )));
    }
    let entries = items
        .iter()
        .map(|i| NewEntry {
            key: i.key.clone(),
            value: Value::Bytes(&i.value),
            ttl: i.ttl.unwrap_or(a.ttl),
        })
        .collect::<Vec<_>>();
    if !entries.is_empty() {
        let mut store = ctx
            .store(a.dir.as_deref(), a.backend.as_deref())?
            .with_progress(super::progress::for_call(m));
        let n = entries.len();
        if let Some(totals) = store.write(entries)? {
            ctx.debug(format_args!(
                "{n} entries written in one commit; index updated: {} bytes in {} entries",
                totals.bytes, totals.entries
            ));
        }
    }
    for b in &bad {
        ctx.note(format_args!("line {}: {} (skipped)", b.line, b.why));
    }
    Ok(if bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn read(a: &Args, ctx: &mut Ctx, store: &mut Store) -> Result<ExitCode> {
    let keys = if a.keys.is_empty() {
        // Raw bytes, so a key that is not UTF-8 is a bad key (exit 2) named
        // by its line, not an I/O error.
        let mut keys = Vec::new();
        for (i, line) in ctx.stdin().split(b'\n').enumerate() {
            let line = line.map_err(|e| Error::io("cannot read", "standard input", e))?;
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if !line.is_empty() {
                let k = key::validate_bytes(line)
                    .map_err(|why| Error::Validation(format!("line {}: {why}", i + 1)))?;
                keys.push(k.to_string());
            }
        }
        keys
    } else {
        a.keys.clone()
    };
    for k in &keys {
        key::validate_bytes(k.as_bytes()).map_err(Error::Validation)?;
    }
    // Each record is written as its value is copied (after the lock is
    // released: `Cache::read_many`), through one buffer, so a batch of
    // small values is still a few large writes.
    let records = store.read_many(&keys)?;
    let mut out = io::BufWriter::with_capacity(64 * 1024, &mut ctx.out);
    let stdout = |e| Error::io("cannot write", "standard output", e);
    for (k, body) in records {
        batch::write_record(&mut out, a.format, &k, body).map_err(|e| match e {
            RecordError::Read(e) => Error::io("cannot read", format!("the value of {k}"), e),
            RecordError::Write(e) => stdout(e),
        })?;
    }
    out.flush().map_err(stdout)?;
    Ok(ExitCode::SUCCESS)
}
