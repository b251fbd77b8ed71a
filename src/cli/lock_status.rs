//! `lock-status`: is a lock held, and by whom. Argument parsing and output
//! only; the verdict is `lock::status`, the same one `lock-release` uses.

use super::ExitCode;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::lock_args::{lock_dir_arg, session_arg};
use super::{Ctx, json_arg, quiet_arg};
use crate::error::{Error, Result};
use crate::lock;

pub(super) fn command() -> Command {
    Command::new("lock-status")
        .about("Show who holds a lock (exit 0 held, 1 free)")
        .long_about(
            "Print whether the lock NAME (in the lock dir) or FILE (an argument with a '/') is \
             held, and by whom: pid, host, command, since and age. The kernel is asked directly, \
             so a lock whose holder died shows as free. Exit status: 0 held, 1 free, with or \
             without output (-q prints nothing; --json prints an object).",
        )
        .arg(
            Arg::new("target")
                .value_name("NAME|FILE")
                .required(true)
                .help("Lock name in the lock dir, or a path (containing '/') to a lock file"),
        )
        .arg(
            Arg::new("dotlock")
                .long("dotlock")
                .action(ArgAction::SetTrue)
                .help("Treat the file as a dot-lock (detected from its content anyway)"),
        )
        .arg(lock_dir_arg())
        .arg(session_arg())
        .arg(json_arg())
        .arg(quiet_arg())
        .arg(super::backend_arg())
}

struct Args {
    target: String,
    dotlock: bool,
    lock_dir: Option<PathBuf>,
    session: bool,
    json: bool,
    quiet: bool,
    backend: Option<String>,
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        target: m.get_one::<String>("target").cloned().unwrap_or_default(),
        dotlock: m.get_flag("dotlock"),
        lock_dir: m.get_one::<PathBuf>("lock_dir").cloned(),
        session: m.get_flag("session"),
        json: m.get_flag("json"),
        quiet: m.get_flag("quiet"),
        backend: super::backend_flag(m),
    };
    let locks = lock::Locks::new(&ctx.cfg, a.backend.as_deref())?;
    let st = locks.status(&a.target, a.dotlock, a.lock_dir.as_deref(), a.session)?;
    let code = if st.held {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if a.quiet {
        return Ok(code);
    }
    if a.json {
        let mut out = serde_json::to_vec(&st.json(&a.target))
            .map_err(|e| Error::General(format!("cannot render JSON: {e}")))?;
        out.push(b'\n');
        ctx.write_out(&out)?;
    } else {
        ctx.write_out(st.text(&a.target).as_bytes())?;
    }
    Ok(code)
}
