//! `lock-acquire`: take a lock in one of three modes — run a command under
//! it (`LOCKFILE -- CMD`, `-c`), lock the caller's descriptor (`--fd N`), or
//! hold a named lock until `lock-release NAME` or the owner's exit — with
//! kernel locks by default or `--dotlock`. Argument parsing only: the shared
//! lock options and the front end live in `lock_args`, the logic in
//! `lock::acquire`.

use super::ExitCode;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::lock_args::{
    LockArgs, common_lock_args, execute, lock_dir_arg, owner_arg, session_arg, shell,
};
use super::{Ctx, quiet_arg};
use crate::error::Result;
use crate::lock::WaitSpec;
use crate::lock::run::Program;

pub(super) fn command() -> Command {
    Command::new("lock-acquire")
        .about("Take a lock: run a command under it, lock a descriptor, or hold a named lock")
        .long_about(
            "Take a lock, waiting in the kernel (up to -w SECS, default LOCK_TIMEOUT). While it \
             waits it prints one line on stderr naming the holder when stderr is a terminal, with \
             --verbose or with FF_DEBUG=true.\n\n\
             Command mode: lock-acquire LOCKFILE -- CMD [ARGS...] or LOCKFILE -c 'shell command' \
             runs the command holding the lock and exits with its status (128+signal if killed). \
             The command inherits the lock (it lives while the command runs, even if ffkit is \
             killed); when the command exits ffkit unlocks it, even if it left background children \
             (--inherit: they keep it, as with flock(1); -o: the command does not get it).\n\
             fd mode: exec 9>>FILE; lock-acquire --fd 9 locks the shell's descriptor; \
             lock-release --fd 9 (or lock-acquire -u --fd 9) drops it.\n\
             Named mode: lock-acquire NAME holds the lock in the lock dir until lock-release NAME \
             or until the owner (the calling process, or --owner PID) exits.\n\n\
             A NAME (no '/') is the file NAME.lock in the lock dir, the same file the shell \
             wrappers lock: --lock-dir, else FFKIT_LOCK_DIR, else <namespace>/locks with \
             FLOWFORGE_DEVELOPER, else <repo>/.flowforge/locks in a git repository, else \
             $XDG_RUNTIME_DIR/ffkit/locks or /tmp/ffkit-UID/locks. Busy with -n (or -w 0) exits 5, a timeout exits 6 (-E N \
             replaces both).",
        )
        .arg(
            Arg::new("target")
                .value_name("LOCKFILE|NAME")
                .help("Lock file (command mode) or lock name / path (named mode)"),
        )
        .arg(
            Arg::new("cmd")
                .value_name("CMD")
                .num_args(1..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .value_parser(clap::value_parser!(OsString))
                .help("Command to run holding the lock (after --)"),
        )
        .arg(
            Arg::new("command")
                .short('c')
                .long("command")
                .value_name("SHELLCMD")
                .value_parser(clap::value_parser!(OsString))
                .conflicts_with("cmd")
                .help("Run SHELLCMD with $SHELL -c (default /bin/sh) holding the lock"),
        )
        .arg(
            Arg::new("fd")
                .long("fd")
                .value_name("N")
                .value_parser(clap::value_parser!(i32).range(0..))
                .conflicts_with_all(["cmd", "command", "dotlock"])
                .help("Lock the caller's open descriptor N (fd mode); with NAME, N must be open on NAME's lock file, whose record then names the caller"),
        )
        .arg(
            Arg::new("prepare")
                .long("prepare")
                .action(ArgAction::SetTrue)
                .help("Create NAME's lock dir (0700) and lock file (0600) and exit, taking nothing"),
        )
        .arg(
            Arg::new("quiet_wait")
                .long("quiet-wait")
                .action(ArgAction::SetTrue)
                .help("Never print the waiting line, even on a terminal (FF_DEBUG=true still does)"),
        )
        .args(common_lock_args())
        .arg(
            Arg::new("dotlock")
                .long("dotlock")
                .action(ArgAction::SetTrue)
                .help("Use a link(2) dot-lock file instead of a kernel lock (for NFS)"),
        )
        .arg(owner_arg())
        .arg(lock_dir_arg())
        .arg(session_arg())
        .arg(quiet_arg())
        .arg(super::backend_arg())
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let program = if let Some(text) = m.get_one::<OsString>("command") {
        Some(Program::Shell {
            shell: shell(ctx),
            text: text.clone(),
        })
    } else {
        m.get_many::<OsString>("cmd")
            .map(|v| Program::Argv(v.cloned().collect()))
    };
    let mut a = LockArgs::from_common(m, WaitSpec::Timeout(ctx.cfg.lock_timeout));
    a.target = m.get_one::<String>("target").cloned();
    a.fd = m.get_one::<i32>("fd").copied();
    a.program = program;
    a.dotlock = m.get_flag("dotlock");
    a.owner = m.get_one::<u32>("owner").copied();
    a.lock_dir = m.get_one::<PathBuf>("lock_dir").cloned();
    a.session = m.get_flag("session");
    a.quiet = m.get_flag("quiet");
    a.prepare = m.get_flag("prepare");
    a.quiet_wait = m.get_flag("quiet_wait");
    a.backend = super::backend_flag(m);
    execute(a, ctx)
}
