//! `cache-run`: run a command once and replay its output from the cache
//! until the TTL ends (docs/cache-run.md). Argument handling and printing
//! only; the logic is `memo`.

use super::ExitCode;
use crate::metrics::Op;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{Ctx, dir_arg, json_arg, ttl_arg};
use crate::cache::store::Reopen;
use crate::config;
use crate::error::{Error, Result};
use crate::memo::{
    self, FileMode, KeySpec, Memo, Options, Outcome, RefreshPlan, Request, RunKey, Shape,
};

/// The TTL when `--ttl` is not given.
pub(super) const DEFAULT_TTL: u64 = 60;

pub(super) fn command() -> Command {
    let flag = |long: &'static str, help: &'static str| {
        Arg::new(long)
            .long(long)
            .action(ArgAction::SetTrue)
            .help(help)
    };
    let many = |long: &'static str, name: &'static str, help: &'static str| {
        Arg::new(long)
            .long(long)
            .value_name(name)
            .action(ArgAction::Append)
            .value_parser(clap::value_parser!(OsString))
            .help(help)
    };
    Command::new("cache-run")
        .about("Run a command once and replay its output and exit status from the cache")
        .long_about(
            "Run CMD and store its stdout and stderr (in the order they interleaved), exit \
             status (128+N for a signal) and duration as one cache entry, run-<hash>; until \
             the TTL ends, the same call replays them instead of running CMD. The key is the \
             argv plus whatever --key-* and --scope add. Concurrent misses of one key run CMD \
             once; the others wait (up to LOCK_TIMEOUT) and replay its result. With --stale, \
             an older hit is replayed at once and one detached refresh runs CMD in the \
             background. A damaged entry is a miss. A call exits with CMD's status (stored or \
             fresh); ffkit's own failures exit with its codes (2-12), never 126/127: CMD not \
             found is 4, not executable 3.",
        )
        .arg(dir_arg())
        .arg(super::backend_arg())
        .arg(ttl_arg(
            "Seconds until the entry expires; 0 = never (default: 60)",
        ))
        .arg(
            Arg::new("stale")
                .long("stale")
                .value_name("SECONDS")
                .allow_hyphen_values(true)
                .value_parser(|s: &str| crate::units::parse_whole_seconds(s))
                .help("A hit older than this is replayed and refreshed in the background (less than the TTL)"),
        )
        .arg(flag("key-cwd", "Add the working directory to the key"))
        .arg(many(
            "key-env",
            "NAME",
            "Add variable NAME's value to the key; unset differs from empty (repeatable)",
        ))
        .arg(many(
            "key-file",
            "PATH",
            "Add PATH's size, mtime and inode to the key (repeatable)",
        ))
        .arg(many(
            "key-file-content",
            "PATH",
            "Add a hash of PATH's content to the key (repeatable)",
        ))
        .arg(flag(
            "key-stdin",
            "Read stdin, add it to the key, store it and feed it to CMD (else CMD's stdin is /dev/null)",
        ))
        .arg(
            Arg::new("scope")
                .long("scope")
                .value_name("STR")
                .value_parser(clap::value_parser!(OsString))
                .help("Add STR to the key (e.g. a project or a version)"),
        )
        .arg(
            many(
                "output",
                "PATH",
                "Store PATH (a file or a whole tree, relative, inside the working directory) with the entry and restore it on a hit (repeatable; local backend)",
            )
            .conflicts_with("stale"),
        )
        .arg(
            flag(
                "link",
                "Restore --output files as hard links to the store (fastest; restored files are read-only)",
            )
            .requires("output"),
        )
        .arg(flag(
            "discard-failures",
            "Do not store a run that exits non-zero",
        ))
        .arg(flag("force", "Run CMD and store the result even on a hit").conflicts_with_all(["invalidate", "print-key"]))
        .arg(flag("invalidate", "Remove the entry of this key and run nothing").conflicts_with("print-key"))
        .arg(flag("print-key", "Print the entry's key (run-<hash>) and run nothing; with --json, its state"))
        .arg(json_arg().help(
            "Print a JSON report (source, cached, status, age, hits, ...) instead of CMD's output",
        ))
        .arg(
            Arg::new("refresh-key")
                .long("refresh-key")
                .value_name("HEX")
                .hide(true)
                .help("Internal: be the detached refresh of this key"),
        )
        .arg(
            Arg::new("cmd")
                .value_name("CMD")
                .required(true)
                .num_args(1..)
                .last(true)
                .value_parser(clap::value_parser!(OsString))
                .help("The command and its arguments, after --"),
        )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Run,
    Force,
    Invalidate,
    PrintKey,
}

pub(super) struct Args {
    dir: Option<PathBuf>,
    backend: Option<String>,
    ttl: u64,
    stale: Option<u64>,
    key_cwd: bool,
    key_env: Vec<OsString>,
    key_file: Vec<OsString>,
    key_file_content: Vec<OsString>,
    key_stdin: bool,
    scope: Option<OsString>,
    discard_failures: bool,
    outputs: Vec<OsString>,
    link: bool,
    action: Action,
    json: bool,
    refresh_key: Option<String>,
    cmd: Vec<OsString>,
}

fn strings(m: &ArgMatches, id: &str) -> Vec<OsString> {
    m.get_many::<OsString>(id)
        .map(|v| v.cloned().collect())
        .unwrap_or_default()
}

/// The common calls, parsed without clap: `[--dir DIR] [--ttl SECONDS] --
/// CMD...` (what `cache_command` sends), each option at most once, with a
/// value clap would take as it is. A cache-run hit is otherwise as cheap as
/// a `cache-read`, and building and running this applet's clap parser costs
/// more than the rest of the hit (docs/cache-run.md, "Speed"). `None`:
/// anything else, which clap parses (and words any error).
/// The applet table's fast path ([`super::Argv::Fast`]): the calls
/// [`fast_args`] reads, ready to run.
pub(super) fn fast(args: &[OsString]) -> Option<super::Parsed> {
    fast_args(args).map(|a| Box::new(move |ctx: &mut Ctx| run_args(a, ctx)) as super::Parsed)
}

fn fast_args(args: &[OsString]) -> Option<Args> {
    let mut dir = None;
    let mut ttl = None;
    let mut i = 1;
    loop {
        let flag = args.get(i)?.to_str()?;
        if flag == "--" {
            break;
        }
        let value = args.get(i + 1)?;
        match flag {
            // clap refuses an empty path and takes `-x` for an option.
            "--dir" if dir.is_none() && !value.is_empty() => {
                if value.as_encoded_bytes().starts_with(b"-") {
                    return None;
                }
                dir = Some(PathBuf::from(value));
            }
            "--ttl" if ttl.is_none() => {
                ttl = Some(crate::units::parse_whole_seconds(value.to_str()?).ok()?);
            }
            _ => return None,
        }
        i += 2;
    }
    let cmd = args.get(i + 1..)?.to_vec();
    if cmd.is_empty() {
        return None;
    }
    Some(Args {
        dir,
        backend: None,
        ttl: ttl.unwrap_or(DEFAULT_TTL),
        stale: None,
        key_cwd: false,
        key_env: Vec::new(),
        key_file: Vec::new(),
        key_file_content: Vec::new(),
        key_stdin: false,
        scope: None,
        discard_failures: false,
        outputs: Vec::new(),
        link: false,
        action: Action::Run,
        json: false,
        refresh_key: None,
        cmd,
    })
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    run_args(args_of(m), ctx)
}

fn args_of(m: &ArgMatches) -> Args {
    Args {
        dir: m.get_one::<PathBuf>("dir").cloned(),
        backend: m.get_one::<String>("backend").cloned(),
        ttl: m.get_one::<u64>("ttl").copied().unwrap_or(DEFAULT_TTL),
        stale: m.get_one::<u64>("stale").copied(),
        key_cwd: m.get_flag("key-cwd"),
        key_env: strings(m, "key-env"),
        key_file: strings(m, "key-file"),
        key_file_content: strings(m, "key-file-content"),
        key_stdin: m.get_flag("key-stdin"),
        scope: m.get_one::<OsString>("scope").cloned(),
        discard_failures: m.get_flag("discard-failures"),
        outputs: strings(m, "output"),
        link: m.get_flag("link"),
        action: if m.get_flag("force") {
            Action::Force
        } else if m.get_flag("invalidate") {
            Action::Invalidate
        } else if m.get_flag("print-key") {
            Action::PrintKey
        } else {
            Action::Run
        },
        json: m.get_flag("json"),
        refresh_key: m.get_one::<String>("refresh-key").cloned(),
        cmd: strings(m, "cmd"),
    }
}

/// One call, its arguments parsed (by clap or [`fast_args`]).
pub(super) fn run_args(a: Args, ctx: &mut Ctx) -> Result<ExitCode> {
    if let Some(s) = a.stale
        && a.ttl > 0
        && s >= a.ttl
    {
        return Err(Error::Validation(format!(
            "--stale {s} must be less than the TTL ({}s)",
            a.ttl
        )));
    }
    // A name no variable can have would key nothing but its own spelling.
    if let Some(bad) = a.key_env.iter().find(|n| {
        let b = n.as_encoded_bytes();
        b.is_empty() || b.contains(&b'=') || b.contains(&0)
    }) {
        return Err(Error::Validation(format!(
            "--key-env '{}': not a variable name (empty, or with '=')",
            bad.to_string_lossy()
        )));
    }
    let cache = ctx.store(a.dir.as_deref(), a.backend.as_deref())?;
    let whence = cache.reopen();
    let store = cache.run_store()?;
    let opts = Options {
        ttl: a.ttl,
        stale: a.stale,
        discard_failures: a.discard_failures,
        lock_timeout: ctx.cfg.lock_timeout,
    };
    ctx.metric = None;
    if let Some(hex) = &a.refresh_key {
        let key = RunKey::from_hex(hex)
            .ok_or_else(|| Error::Validation(format!("--refresh-key '{hex}': not a key")))?;
        let o = Memo::new(store, key).refresh(&a.cmd, &opts)?;
        if o.source == memo::Source::Refreshed {
            ctx.metric = Some(Op::CacheRunRefresh);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // --invalidate and --print-key name the same key, so they read it too
    // (hashed only); a run spools it beside the entries, never in memory.
    let mut spool = None;
    let stdin_hash = if !a.key_stdin {
        None
    } else if matches!(a.action, Action::Run | Action::Force) {
        let dir = cache.dir().map(|d| d.join(memo::RUN_DIR));
        let s = memo::Spool::read(&mut ctx.stdin(), dir.as_deref())?;
        let h = s.info.hash;
        spool = Some(s);
        Some(h)
    } else {
        Some(memo::Spool::hash(&mut ctx.stdin())?)
    };
    let spec = key_spec(&a, stdin_hash)?;
    let key = memo::key::compute(&spec)?;
    let memo = Memo::new(store, key).with_outputs(memo::output::Outputs {
        paths: a.outputs.iter().map(PathBuf::from).collect(),
        link: a.link,
    });
    let entry = memo.key().entry();
    match a.action {
        Action::PrintKey if a.json => {
            let p = memo.peek(a.stale)?;
            let v = serde_json::json!({
                "key": entry,
                "present": p.present,
                "expired": p.expired,
                "stale": p.stale,
                "age": p.age,
                "hits": p.hits,
                "status": p.status,
                "ran_at": p.ran_at,
                "duration_ms": p.duration_ms,
                "damaged": p.damaged,
            });
            ctx.write_out(format!("{v}\n").as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        Action::PrintKey => {
            ctx.write_out(format!("{entry}\n").as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        Action::Invalidate => {
            let had = memo.invalidate(ctx.cfg.lock_timeout)?;
            if a.json {
                let v = serde_json::json!({"key": entry, "invalidated": had});
                ctx.write_out(format!("{v}\n").as_bytes())?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Action::Run | Action::Force => {}
    }
    let plan = refresh_plan(&a, &whence, memo.key());
    let req = Request {
        argv: &a.cmd,
        stdin: spool.as_ref(),
        // One channel for the command when its output goes to one file
        // (`2>&1`, a terminal): the order is then exact.
        shape: memo::ShapeOf::new(if a.json {
            || Shape::Quiet
        } else {
            || Shape::of(rustix::stdio::stdout(), rustix::stdio::stderr())
        }),
        force: a.action == Action::Force,
        refresh: plan.as_ref(),
    };
    let outcome = if a.json {
        memo.run(&req, &opts, &mut io::sink(), &mut io::sink())
    } else {
        let (mut out, mut err) = (Raw(rustix::stdio::stdout()), Raw(rustix::stdio::stderr()));
        memo.run(&req, &opts, &mut out, &mut err)
    }?;
    ctx.metric = Some(if outcome.source.cached() {
        Op::CacheRunHit
    } else {
        Op::CacheRunMiss
    });
    if let Some(why) = &outcome.store_error {
        ctx.note(format_args!("not cached: {why}"));
    }
    for p in &outcome.left_behind {
        ctx.note(format_args!(
            "{}: the replaced tree could not be removed; left behind",
            p.display()
        ));
    }
    if let Some(why) = &outcome.damaged {
        ctx.debug(format_args!("{why}: treated as a miss and rewritten"));
    }
    if a.json {
        ctx.write_out(json_report(&entry, &outcome).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ExitCode::from(outcome.status.unwrap_or(0)))
}

fn key_spec(a: &Args, stdin: Option<[u8; 32]>) -> Result<KeySpec> {
    let cwd = if a.key_cwd {
        Some(
            std::env::current_dir()
                .map_err(|e| Error::io("cannot read", "the working directory", e))?,
        )
    } else {
        None
    };
    let mut files: Vec<(PathBuf, FileMode)> = a
        .key_file
        .iter()
        .map(|p| (PathBuf::from(p), FileMode::Identity))
        .collect();
    files.extend(
        a.key_file_content
            .iter()
            .map(|p| (PathBuf::from(p), FileMode::Content)),
    );
    Ok(KeySpec {
        argv: a.cmd.clone(),
        cwd,
        env: a
            .key_env
            .iter()
            .map(|n| (n.clone(), config::user_var(n)))
            .collect(),
        files,
        stdin,
        scope: a.scope.clone(),
        outputs: a.outputs.iter().map(PathBuf::from).collect(),
    })
}

/// This program, re-run as the detached refresh of `key`, on the same cache.
fn refresh_plan(a: &Args, whence: &Reopen, key: &RunKey) -> Option<RefreshPlan> {
    a.stale?;
    let exe = std::env::current_exe().ok()?;
    let mut args: Vec<OsString> = vec!["cache-run".into()];
    args.extend(whence.args.iter().cloned());
    let env = whence.env.clone();
    args.extend(["--ttl".into(), a.ttl.to_string().into()]);
    if let Some(s) = a.stale {
        args.extend(["--stale".into(), s.to_string().into()]);
    }
    if a.discard_failures {
        args.push("--discard-failures".into());
    }
    args.extend(["--refresh-key".into(), key.hex.clone().into(), "--".into()]);
    args.extend(a.cmd.iter().cloned());
    Some(RefreshPlan { exe, args, env })
}

/// Fd 1 or 2, written unbuffered (so chunks reach it in the recorded
/// order) and without a `dup` of its own: two system calls fewer per hit.
struct Raw(std::os::fd::BorrowedFd<'static>);

impl io::Write for Raw {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::io::write(self.0, buf)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn json_report(entry: &str, o: &Outcome) -> String {
    let v = serde_json::json!({
        "key": entry,
        "source": o.source.name(),
        "cached": o.source.cached(),
        "status": o.status,
        "age": o.age,
        "hits": o.hits,
        "stored": o.stored,
        "refresh_started": o.refresh_started,
        "ran_at": o.ran_at,
        "duration_ms": o.duration_ms,
        "stdout_bytes": o.stdout_bytes,
        "stderr_bytes": o.stderr_bytes,
        "damaged": o.damaged,
        "store_error": o.store_error,
    });
    format!("{v}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(v: &[&str]) -> Option<(Option<PathBuf>, u64, Vec<OsString>)> {
        let args: Vec<OsString> = std::iter::once("cache-run")
            .chain(v.iter().copied())
            .map(OsString::from)
            .collect();
        fast_args(&args).map(|a| (a.dir, a.ttl, a.cmd))
    }

    #[test]
    fn only_the_usual_forms_skip_clap() {
        let cmd = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            fast(&["--", "echo", "--"]),
            Some((None, DEFAULT_TTL, cmd(&["echo", "--"])))
        );
        assert_eq!(
            fast(&["--ttl", "5", "--dir", "d", "--", "x"]),
            Some((Some("d".into()), 5, cmd(&["x"])))
        );
        for v in [
            &["--"][..],
            &["echo"],
            &["--dir", "d"],
            &["--dir", "", "--", "x"],
            &["--dir", "-d", "--", "x"],
            &["--dir", "--", "x"],
            &["--ttl", "x", "--", "x"],
            &["--ttl", "1", "--ttl", "1", "--", "x"],
            &["--dir=d", "--", "x"],
            &["--json", "--", "x"],
            &["--stale", "1", "--", "x"],
        ] {
            assert!(fast(v).is_none(), "{v:?}");
        }
    }
}
