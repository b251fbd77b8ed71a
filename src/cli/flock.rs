//! The flock(1) persona: ffkit invoked through a symlink named `flock`
//! accepts util-linux 2.42 flock's command line — `flock [OPTS] FILE CMD
//! [ARGS]`, `flock [OPTS] FILE -c CMD`, `flock [OPTS] FD` — with its
//! abbreviated long options (`--nonb`), `--fcntl` open file description
//! locks with `--start`/`--length` ranges (either implies `--fcntl`), its
//! exit codes (1 on conflict or timeout, `-E` overrides; silent unless
//! `--verbose`, whose lines go to stdout) and its waiting default (forever;
//! LOCK_TIMEOUT does not apply). Argument parsing only: it runs on the same
//! front end and engine as `lock-acquire` (docs/locks.md lists the
//! remaining differences).

use super::ExitCode;
use std::ffi::OsString;

use clap::{Arg, ArgMatches, Command};

use super::Ctx;
use super::lock_args::{LockArgs, common_lock_args, execute, shell};
use crate::error::{Error, Result};
use crate::lock::WaitSpec;
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
        .args(common_lock_args())
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
    let mut a = LockArgs::from_common(m, WaitSpec::Forever);
    a.target = Some(target);
    a.fd = fd;
    a.program = program;
    a.persona = true;
    execute(a, ctx)
}
