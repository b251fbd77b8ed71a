//! The flock(1) persona: ffkit invoked through a symlink named `flock`
//! accepts util-linux flock's command line — `flock [OPTS] FILE CMD [ARGS]`,
//! `flock [OPTS] FILE -c CMD`, `flock [OPTS] FD` — with its abbreviated long
//! options (`--nonb`), its exit codes (1 on conflict or timeout, `-E`
//! overrides; silent unless `--verbose`) and its waiting default (forever;
//! LOCK_TIMEOUT does not apply). It runs on the same engine as
//! `lock-acquire` (waits in the kernel, lock not inherited by background
//! children unless `--inherit`... see docs/locks.md for the differences).

use super::ExitCode;
use std::ffi::OsString;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::Ctx;
use super::lock_acquire::{Request, WaitSpec, execute, kind_and_wait, shell};
use crate::error::{Error, Result};
use crate::lock::run::Program;

pub fn command() -> Command {
    Command::new("flock")
        .about("Manage locks from shell scripts (util-linux flock(1) compatible)")
        .override_usage(
            "flock [options] <file>|<directory> <command> [<argument>...]\n       \
             flock [options] <file>|<directory> -c <command>\n       \
             flock [options] <file descriptor number>",
        )
        .infer_long_args(true)
        .arg(
            Arg::new("target")
                .value_name("FILE|FD")
                .required(true)
                .help("Lock file or directory, or an open descriptor number"),
        )
        .arg(
            Arg::new("rest")
                .value_name("COMMAND")
                .num_args(1..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .value_parser(clap::value_parser!(OsString))
                .help("Command and arguments, or -c COMMAND"),
        )
        .arg(
            Arg::new("shared")
                .short('s')
                .long("shared")
                .action(ArgAction::SetTrue)
                .help("Get a shared lock"),
        )
        .arg(
            Arg::new("exclusive")
                .short('x')
                .short_alias('e')
                .long("exclusive")
                .action(ArgAction::SetTrue)
                .help("Get an exclusive lock (default)"),
        )
        .arg(
            Arg::new("unlock")
                .short('u')
                .long("unlock")
                .action(ArgAction::SetTrue)
                .help("Remove a lock"),
        )
        .arg(
            Arg::new("nonblock")
                .short('n')
                .long("nonblock")
                .alias("nb")
                .action(ArgAction::SetTrue)
                .help("Fail rather than wait"),
        )
        .arg(
            Arg::new("timeout")
                .short('w')
                .long("timeout")
                .alias("wait")
                .value_name("SECS")
                .value_parser(|s: &str| crate::units::parse_seconds(s))
                .help("Wait for a limited amount of time"),
        )
        .arg(
            Arg::new("conflict")
                .short('E')
                .long("conflict-exit-code")
                .value_name("NUMBER")
                .value_parser(clap::value_parser!(u8))
                .help("Exit code after conflict or timeout"),
        )
        .arg(
            Arg::new("close")
                .short('o')
                .long("close")
                .action(ArgAction::SetTrue)
                .help("Close file descriptor before running command"),
        )
        .arg(
            Arg::new("no_fork")
                .short('F')
                .long("no-fork")
                .action(ArgAction::SetTrue)
                .help("Execute command without forking"),
        )
        .arg(
            Arg::new("inherit")
                .long("inherit")
                .action(ArgAction::SetTrue)
                .help("ffkit: let the command's children keep the lock"),
        )
        .arg(
            Arg::new("verbose")
                .long("verbose")
                .action(ArgAction::SetTrue)
                .help("Increase verbosity"),
        )
}

pub fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    // A drop-in for flock(1) records no metrics of its own.
    ctx.metric = None;
    let target = m.get_one::<String>("target").cloned().unwrap_or_default();
    let rest: Vec<OsString> = m
        .get_many::<OsString>("rest")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let program = match rest.first().and_then(|s| s.to_str()) {
        None => None,
        Some("-c" | "--command") => {
            if rest.len() != 2 {
                return Err(Error::Validation(
                    "-c requires exactly one command argument".into(),
                ));
            }
            Some(Program::Shell {
                shell: shell(ctx),
                text: rest[1].clone(),
            })
        }
        Some(_) => Some(Program::Argv(rest)),
    };
    let fd = if program.is_none() {
        Some(
            target
                .parse::<i32>()
                .map_err(|_| Error::Validation(format!("bad file descriptor: '{target}'")))?,
        )
    } else {
        None
    };
    let (kind, wait) = kind_and_wait(m, WaitSpec::Forever);
    let req = Request {
        target: Some(target),
        fd,
        program,
        kind,
        unlock: m.get_flag("unlock"),
        wait,
        conflict_code: m.get_one::<u8>("conflict").copied(),
        close: m.get_flag("close"),
        no_fork: m.get_flag("no_fork"),
        inherit: m.get_flag("inherit"),
        dotlock: false,
        owner: None,
        lock_dir: None,
        session: false,
        verbose: m.get_flag("verbose"),
        quiet: false,
        prepare: false,
        quiet_wait: false,
        persona: true,
    };
    execute(req, ctx)
}
