//! The lock applets' shared arguments, in one place (not an applet): the
//! options `lock-acquire` and the flock(1) persona share, `--owner`,
//! `--lock-dir`, `--session`, their parsing into a [`LockArgs`], and the
//! one front end that turns it into a [`lock::acquire::Request`], prints
//! what [`Report`] hears and maps the [`Outcome`] to an exit code
//! (docs/locks.md, "Exit codes").

use std::ffi::OsString;
use std::fmt::Display;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches};

use super::{Ctx, ExitCode};
use crate::error::{Error, ExitKind, Result};
use crate::lock::acquire::{self, Mode, Outcome, Report};
use crate::lock::kernel::Method;
use crate::lock::release::{self, Released};
use crate::lock::run::{Ended, Program};
use crate::lock::{self, Denied, Kind, WaitSpec};

/// The options lock-acquire shares with the flock persona (flock(1) 2.42's
/// spellings: `-e` for `-x`, `--nb`, `--wait`).
pub(super) fn common_lock_args() -> Vec<Arg> {
    vec![
        Arg::new("shared")
            .short('s')
            .long("shared")
            .action(ArgAction::SetTrue)
            .conflicts_with("exclusive")
            .help("Take a shared lock"),
        Arg::new("exclusive")
            .short('x')
            .short_alias('e')
            .long("exclusive")
            .action(ArgAction::SetTrue)
            .help("Take an exclusive lock (default)"),
        Arg::new("nonblock")
            .short('n')
            .long("nonblock")
            .aliases(["nb", "nonblocking"])
            .action(ArgAction::SetTrue)
            .help("Fail at once if the lock is held"),
        Arg::new("timeout")
            .short('w')
            .long("timeout")
            .alias("wait")
            .value_name("SECS")
            .value_parser(|s: &str| crate::units::parse_seconds(s))
            .help("Give up after SECS (fractional; 0 = non-blocking)"),
        Arg::new("conflict")
            .short('E')
            .long("conflict-exit-code")
            .value_name("N")
            .value_parser(clap::value_parser!(u8))
            .help("Exit code when busy or timed out"),
        Arg::new("close")
            .short('o')
            .long("close")
            .action(ArgAction::SetTrue)
            .help(
                "Do not pass the lock to the command (ffkit alone holds it while the command runs)",
            ),
        Arg::new("unlock")
            .short('u')
            .long("unlock")
            .action(ArgAction::SetTrue)
            .help("Release instead of acquire"),
        Arg::new("no_fork")
            .short('F')
            .long("no-fork")
            .action(ArgAction::SetTrue)
            .help("Exec the command in place (it inherits the lock)"),
        Arg::new("inherit")
            .long("inherit")
            .action(ArgAction::SetTrue)
            .help("Let the command's children keep the lock after it exits (flock(1) behaviour)"),
        Arg::new("fcntl")
            .long("fcntl")
            .action(ArgAction::SetTrue)
            .help("Use an open file description lock (fcntl F_OFD_SETLK) instead of flock(2)"),
        Arg::new("start")
            .long("start")
            .value_name("OFFSET")
            .value_parser(clap::value_parser!(u64))
            .help("First byte of an OFD lock's range (default 0; implies --fcntl)"),
        Arg::new("length")
            .long("length")
            .value_name("LENGTH")
            .value_parser(clap::value_parser!(u64))
            .help(
                "Bytes in an OFD lock's range (default 0: to the end of the file; implies --fcntl)",
            ),
        Arg::new("verbose")
            .long("verbose")
            .action(ArgAction::SetTrue)
            .help("Report the wait, how long getting the lock took and the command"),
    ]
}

pub(super) fn owner_arg() -> Arg {
    Arg::new("owner")
        .long("owner")
        .value_name("PID")
        .value_parser(clap::value_parser!(u32).range(1..))
        .help("Named mode: the process the lock belongs to (default: the caller)")
}

pub(super) fn lock_dir_arg() -> Arg {
    Arg::new("lock_dir")
        .long("lock-dir")
        .value_name("DIR")
        .value_parser(clap::value_parser!(PathBuf))
        .help("Directory of named locks (default: FFKIT_LOCK_DIR, <namespace>/locks, or a per-user runtime dir)")
}

pub(super) fn session_arg() -> Arg {
    Arg::new("session")
        .long("session")
        .action(ArgAction::SetTrue)
        .help("NAME is a session lock: <namespace>/sessions/locks (or sessions/ in the lock dir)")
}

/// The lock kind (`-s`/`-x`) and how to wait (`-n`, `-w SECS`; `-w 0` is
/// non-blocking), with `default` when neither is given.
pub(super) fn kind_and_wait(m: &ArgMatches, default: WaitSpec) -> (Kind, WaitSpec) {
    let kind = if m.get_flag("shared") {
        Kind::Shared
    } else {
        Kind::Exclusive
    };
    let wait = match (m.get_flag("nonblock"), m.get_one::<Duration>("timeout")) {
        (true, _) => WaitSpec::NonBlocking,
        (false, Some(t)) if t.is_zero() => WaitSpec::NonBlocking,
        (false, Some(t)) => WaitSpec::Timeout(*t),
        (false, None) => default,
    };
    (kind, wait)
}

/// `--fcntl [--start N] [--length N]` (either of which implies `--fcntl`,
/// as in flock(1) 2.42), else flock(2).
pub(super) fn method(m: &ArgMatches) -> Method {
    if m.get_flag("fcntl") || m.contains_id("start") || m.contains_id("length") {
        Method::Ofd {
            start: m.get_one::<u64>("start").copied().unwrap_or(0),
            len: m.get_one::<u64>("length").copied().unwrap_or(0),
        }
    } else {
        Method::Flock
    }
}

/// `$SHELL`, else /bin/sh, for `-c` (as flock(1) does).
pub(super) fn shell(ctx: &Ctx) -> OsString {
    ctx.cfg
        .shell
        .clone()
        .map_or_else(|| OsString::from("/bin/sh"), PathBuf::into_os_string)
}

/// One lock request as parsed from `lock-acquire`'s or flock's options.
pub(super) struct LockArgs {
    pub target: Option<String>,
    pub fd: Option<RawFd>,
    pub program: Option<Program>,
    pub kind: Kind,
    pub method: Method,
    pub unlock: bool,
    pub wait: WaitSpec,
    pub conflict_code: Option<u8>,
    pub close: bool,
    pub no_fork: bool,
    pub inherit: bool,
    pub dotlock: bool,
    pub owner: Option<u32>,
    pub lock_dir: Option<PathBuf>,
    pub session: bool,
    pub verbose: bool,
    pub quiet: bool,
    pub prepare: bool,
    pub quiet_wait: bool,
    /// flock(1) persona: conflicts exit 1 silently, no named mode, waits
    /// forever by default, --verbose lines on stdout.
    pub persona: bool,
}

impl LockArgs {
    /// The options shared by both front ends, from their matches.
    pub(super) fn from_common(m: &ArgMatches, default_wait: WaitSpec) -> LockArgs {
        let (kind, wait) = kind_and_wait(m, default_wait);
        LockArgs {
            target: None,
            fd: None,
            program: None,
            kind,
            method: method(m),
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
            persona: false,
        }
    }

    fn resolve(&self, target: &str, ctx: &Ctx) -> Result<PathBuf> {
        lock::resolve(target, &ctx.cfg, self.lock_dir.as_deref(), self.session)
    }

    fn owner(&self) -> u32 {
        self.owner.unwrap_or_else(lock::parent_pid)
    }
}

/// Prints what an acquisition reports, as the front end's flags say.
struct Front<'a> {
    ctx: &'a mut Ctx,
    quiet: bool,
    verbose: bool,
    persona: bool,
    quiet_wait: bool,
}

impl Front<'_> {
    /// A --verbose line: on stdout for the persona (flock(1) 2.41+), on
    /// stderr for lock-acquire (which never writes stdout).
    fn verbose_line(&self, msg: impl Display) {
        if !self.verbose || self.quiet {
            return;
        }
        if self.persona {
            let _ = super::write_stdout(format!("{}: {msg}\n", self.ctx.prog).as_bytes());
        } else {
            self.ctx.note(msg);
        }
    }
}

impl Report for Front<'_> {
    /// The one waiting line, on stderr: with `--verbose` or `FF_DEBUG=true`,
    /// or when stderr is a terminal (not with `-q`/`--quiet-wait`, nor for
    /// the persona, silent like flock(1)). Scripts see nothing by default.
    fn waiting(&mut self, label: &str, holder: &dyn Display) {
        use std::io::IsTerminal;
        if self.quiet {
            return;
        }
        let tty = !self.persona && !self.quiet_wait && std::io::stderr().is_terminal();
        if tty || (self.verbose && !self.persona) || self.ctx.cfg.debug {
            self.ctx
                .note(format_args!("waiting for lock {label} (held by {holder})"));
        }
    }

    fn broke(&mut self, label: &str, holder: &dyn Display) {
        if !self.quiet {
            self.ctx
                .note(format_args!("{label}: broke a stale lock held by {holder}"));
        }
    }

    fn taken(&mut self, label: &str, how: &str, waited: Duration) {
        self.ctx.metric_duration = Some(waited);
        self.ctx.debug(format_args!(
            "lock {label}: taken by {how} after {:.6}s",
            waited.as_secs_f64()
        ));
        self.verbose_line(format_args!(
            "getting lock took {}.{:06} seconds",
            waited.as_secs(),
            waited.subsec_micros()
        ));
    }

    fn sleeping(&mut self, d: Duration) {
        if self.ctx.cfg.backoff_trace {
            self.ctx
                .note(format_args!("backoff: sleep {:.3}s", d.as_secs_f64()));
        }
    }

    fn executing(&mut self, program: &Program) {
        self.verbose_line(format_args!("executing {}", program.name()));
    }

    /// Writes the self-timing row before an exec replaces this process.
    fn before_exec(&mut self) {
        let ctx = &mut *self.ctx;
        if let (true, Some(op), Some(d)) =
            (ctx.cfg.perf_monitoring, ctx.metric, ctx.metric_duration)
            && crate::metrics::record_self(&ctx.cfg, ctx.metric_dir.as_deref(), op, d).is_ok()
        {
            ctx.metric = None;
        }
    }
}

/// Runs a request in the mode its arguments select.
pub(super) fn execute(a: LockArgs, ctx: &mut Ctx) -> Result<ExitCode> {
    let owner = a.owner();
    if a.prepare && a.fd.is_some() {
        return Err(Error::Validation(
            "--prepare takes a NAME, not a descriptor".into(),
        ));
    }
    let mode = if let Some(fd) = a.fd {
        // flock FD: the target is the descriptor number itself.
        let path = match (&a.target, a.persona) {
            (Some(t), false) => Some(a.resolve(t, ctx)?),
            _ => None,
        };
        if a.unlock {
            if !a.persona {
                ctx.metric = Some("lock_release");
            }
            return unlock_fd(fd, path.as_deref(), owner, a.quiet);
        }
        Mode::Fd { fd, path }
    } else {
        let Some(target) = a.target.clone() else {
            return Err(Error::Validation(
                "nothing to lock: give LOCKFILE -- CMD, -c CMD, --fd N or NAME".into(),
            ));
        };
        if a.prepare {
            if a.program.is_some() || a.dotlock || a.unlock {
                return Err(Error::Validation(
                    "--prepare takes a NAME and nothing else to do".into(),
                ));
            }
            ctx.metric = None;
            let path = a.resolve(&target, ctx)?;
            lock::kernel::open_lock_file(&path, true, crate::fsutil::FILE_MODE)
                .map_err(|e| Error::io("cannot open lock file", &path, e))?;
            ctx.debug(format_args!("{target}: lock file {} ready", path.display()));
            return Ok(ExitCode::SUCCESS);
        }
        match a.program.clone() {
            Some(program) => {
                if a.unlock {
                    return Err(Error::Validation(
                        "-u/--unlock takes --fd N or NAME, not a command".into(),
                    ));
                }
                Mode::Command {
                    path: PathBuf::from(&target),
                    program,
                }
            }
            None if a.persona => {
                return Err(Error::Validation(format!(
                    "{target}: a command is required (flock FILE CMD, flock FILE -c CMD or flock FD)"
                )));
            }
            None if a.unlock => {
                ctx.metric = Some("lock_release");
                return release_named(
                    ctx,
                    &target,
                    &Releasing {
                        force: false,
                        owner: a.owner,
                        lock_dir: a.lock_dir.as_deref(),
                        session: a.session,
                        dotlock: a.dotlock,
                        quiet: a.quiet,
                    },
                );
            }
            None => Mode::Named {
                path: a.resolve(&target, ctx)?,
            },
        }
    };
    let label = match &mode {
        Mode::Fd { fd, path: None } => acquire::fd_label(*fd),
        _ => a.target.clone().unwrap_or_default(),
    };
    let req = acquire::Request {
        mode,
        label: label.clone(),
        kind: a.kind,
        wait: a.wait,
        method: a.method,
        dotlock: a.dotlock,
        inherit: a.inherit,
        close: a.close,
        no_fork: a.no_fork,
        owner,
        stale_after: ctx.cfg.lock_stale_after,
        backoff: (
            ctx.cfg.backoff,
            ctx.cfg.backoff_initial,
            ctx.cfg.backoff_max,
        ),
    };
    let outcome = {
        let mut front = Front {
            ctx: &mut *ctx,
            quiet: a.quiet,
            verbose: a.verbose,
            persona: a.persona,
            quiet_wait: a.quiet_wait,
        };
        acquire::acquire(&req, &mut front)?
    };
    match outcome {
        Outcome::Taken { .. } => Ok(ExitCode::SUCCESS),
        Outcome::Denied { why, holder } => denied(ctx, &a, &label, why, &holder),
        Outcome::Ran(Ended::Status(c)) => Ok(ExitCode::from(c)),
        Outcome::Ran(Ended::NotStarted(code, e)) => {
            let name = match &req.mode {
                Mode::Command { program, .. } => program.name(),
                _ => String::new(),
            };
            ctx.note(format_args!(
                "cannot run {name}: {}",
                Error::io("cannot run", &name, e)
                    .to_string()
                    .rsplit(": ")
                    .next()
                    .unwrap_or("failed")
            ));
            Ok(ExitCode::from(code))
        }
    }
}

/// The answer to a lock that was not taken: exit 5 (busy) or 6 (timeout),
/// or -E N, with one line unless quiet. flock persona: exit 1, silent
/// unless --verbose, as flock(1).
fn denied(ctx: &Ctx, a: &LockArgs, label: &str, d: Denied, holder: &str) -> Result<ExitCode> {
    let msg = match (d, a.wait) {
        (Denied::Busy, _) => format!("{label}: busy, held by {holder}"),
        (Denied::TimedOut, WaitSpec::Timeout(t)) => {
            format!(
                "{label}: timed out after {}s, held by {holder}",
                t.as_secs_f64()
            )
        }
        (Denied::TimedOut, _) => format!("{label}: timed out, held by {holder}"),
        (Denied::Interrupted, _) => format!("{label}: interrupted"),
    };
    if a.persona {
        if a.verbose {
            ctx.note(match d {
                Denied::TimedOut => "timeout while waiting to get lock",
                _ => "failed to get lock",
            });
        }
        return Ok(ExitCode::from(a.conflict_code.unwrap_or(1)));
    }
    if let Some(code) = a.conflict_code {
        if !a.quiet {
            ctx.note(&msg);
        }
        return Ok(ExitCode::from(code));
    }
    let kind = match d {
        Denied::Busy => ExitKind::Conflict,
        Denied::TimedOut => ExitKind::Timeout,
        Denied::Interrupted => ExitKind::General,
    };
    if a.quiet {
        return Ok(ExitCode::from(kind.code()));
    }
    Err(match d {
        Denied::Busy => Error::Conflict(msg),
        Denied::TimedOut => Error::Timeout(msg),
        Denied::Interrupted => Error::General(msg),
    })
}

/// Drops the lock on the caller's descriptor `fd` (open on `path` when a
/// NAME was given): exit 4 when that descriptor holds no lock.
pub(super) fn unlock_fd(
    fd: RawFd,
    path: Option<&Path>,
    owner: u32,
    quiet: bool,
) -> Result<ExitCode> {
    match lock::fd::release(fd, path, owner)? {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(lock::fd::NotHeld::NoLock) if quiet => Ok(ExitCode::from(ExitKind::NotFound.code())),
        Err(lock::fd::NotHeld::NoLock) => Err(Error::NotFound(format!(
            "{}: holds no lock",
            acquire::fd_label(fd)
        ))),
    }
}

/// How a named release was asked for.
pub(super) struct Releasing<'a> {
    pub force: bool,
    pub owner: Option<u32>,
    pub lock_dir: Option<&'a Path>,
    pub session: bool,
    pub dotlock: bool,
    pub quiet: bool,
}

/// Releases a named lock, checking ownership; the messages and exit codes
/// of `lock-release NAME` and `lock-acquire -u NAME`.
pub(super) fn release_named(ctx: &mut Ctx, name: &str, r: &Releasing<'_>) -> Result<ExitCode> {
    let path = lock::resolve(name, &ctx.cfg, r.lock_dir, r.session)?;
    let rel = release::Release {
        path: &path,
        force: r.force,
        as_pids: release::releasers(r.owner),
        dotlock: r.dotlock,
        is_name: !name.contains('/'),
    };
    match release::release(&rel)? {
        Released::Done(h) => {
            ctx.debug(format_args!("lock {name}: released (it was held by {h})"));
            Ok(ExitCode::SUCCESS)
        }
        Released::NotHeld if r.quiet => Ok(ExitCode::from(ExitKind::NotFound.code())),
        Released::NotHeld => Err(Error::NotFound(format!("{name}: not held"))),
        Released::NotOwner(_) if r.quiet => Ok(ExitCode::from(ExitKind::Conflict.code())),
        Released::NotOwner(h) => Err(Error::Conflict(format!(
            "{name}: held by {h}, not by you (use --force to release it anyway)"
        ))),
    }
}
