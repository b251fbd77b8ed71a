//! The lock applets' shared arguments, in one place (not an applet): the
//! options `lock-acquire` and the flock(1) persona share, `--owner`,
//! `--lock-dir`, `--session`, their parsing into a [`LockArgs`], and the
//! one front end that turns it into a [`lock::acquire::Request`], prints
//! what [`Report`] hears and maps the [`Outcome`] to an exit code
//! (docs/locks.md, "Exit codes").

use crate::metrics::Op;
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
use crate::lock::release::Released;
use crate::lock::run::{Ended, Program};
use crate::lock::{self, Denied, Kind, LocalOnly, Locks, WaitSpec};

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
    let wait = wait_spec(
        m.get_flag("nonblock"),
        m.get_one::<Duration>("timeout").copied(),
        default,
    );
    (kind, wait)
}

/// How to wait, from `-n` and `-w SECS` (`-w 0` is non-blocking), with
/// `default` when neither is given: clap's path and `lock-acquire`'s fast
/// path share it.
pub(super) fn wait_spec(nonblock: bool, timeout: Option<Duration>, default: WaitSpec) -> WaitSpec {
    match (nonblock, timeout) {
        (true, _) => WaitSpec::NonBlocking,
        (false, Some(t)) if t.is_zero() => WaitSpec::NonBlocking,
        (false, Some(t)) => WaitSpec::Timeout(t),
        (false, None) => default,
    }
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
/// `Debug` lets a test compare what clap and `lock-acquire`'s fast path
/// make of the same command line.
#[derive(Debug)]
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
    /// `--function FUNC` (hidden): the shell functions' fallback takes a
    /// NAME's lock on its descriptor (`lock::fd::acquire`'s `function`);
    /// an owner asking again is refused in FUNC's words.
    pub function: Option<String>,
    /// `--whole-timeout SECS` (hidden, with `--function`): the fallback's
    /// retry waits with what is left of LOCK_TIMEOUT (`-w LEFT`), and its
    /// timeout is said as the whole call's, `timed out after SECS`, as the
    /// builtin says it (docs/locks.md, "Messages").
    pub whole_timeout: Option<std::time::Duration>,
    /// Whose rules the answers follow: ffkit's or flock(1)'s.
    pub dialect: Dialect,
    /// `--backend` (the library picks: `lock::Locks`).
    pub backend: Option<String>,
}

/// The exit codes of flock(1) (util-linux, from sysexits.h) that the flock
/// dialect answers with.
pub(super) mod sysexits {
    pub(crate) const EX_USAGE: u8 = 64;
    pub(crate) const EX_DATAERR: u8 = 65;
    pub(crate) const EX_NOINPUT: u8 = 66;
    pub(crate) const EX_UNAVAILABLE: u8 = 69;
    pub(crate) const EX_OSERR: u8 = 71;
    pub(crate) const EX_CANTCREAT: u8 = 73;
}

/// Whose rules a lock request's answers follow (docs/locks.md, "The flock
/// persona"): `lock-acquire`'s own contract, or util-linux flock(1) 2.42's
/// for the persona. The dialect owns every difference: exit codes (busy,
/// timeout, a command that cannot start, failures), where `--verbose` lines
/// go, whether the waiting line is printed, and the option conflicts; the
/// front end is arguments plus one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Ffkit,
    Flock,
}

impl Dialect {
    /// `--verbose` lines: on stdout for flock(1) (2.41+ prints them there),
    /// on stderr for lock-acquire (which never writes stdout).
    pub(super) fn verbose_on_stdout(self) -> bool {
        self == Dialect::Flock
    }

    /// Whether stdout's `--verbose` lines wait for the end of the run:
    /// flock(1) prints them with stdio, whose buffer a pipe or file gets
    /// when flock exits (after the command's own output; never with `-F`,
    /// whose exec discards it), a terminal at once.
    pub(super) fn defers_verbose(self) -> bool {
        self.verbose_on_stdout() && !rustix::termios::isatty(rustix::stdio::stdout())
    }

    /// The one waiting line: printed with `--verbose` or `FF_DEBUG=true`, or
    /// when stderr is a terminal (not with `--quiet-wait`); flock(1) never
    /// prints one (only `FF_DEBUG=true` does). `quiet` (`-q`) silences it.
    pub(super) fn says_waiting(
        self,
        quiet: bool,
        quiet_wait: bool,
        verbose: bool,
        debug: bool,
    ) -> bool {
        use std::io::IsTerminal;
        if quiet {
            return false;
        }
        match self {
            Dialect::Flock => debug,
            Dialect::Ffkit => debug || verbose || (!quiet_wait && std::io::stderr().is_terminal()),
        }
    }

    /// Options that cannot go together: flock(1) refuses `-F` with `-o`
    /// (lock-acquire lets `-F` win, as it always has).
    pub(super) fn conflicts(self, close: bool, no_fork: bool) -> Option<&'static str> {
        (self == Dialect::Flock && close && no_fork)
            .then_some("the --no-fork and --close options are incompatible")
    }

    /// A command that could not be started: lock-acquire's 127/126 (as a
    /// shell) with `cannot run NAME: why`; flock(1)'s `failed to execute
    /// NAME: why` and 69 (EX_UNAVAILABLE; 71 when memory ran out).
    pub(super) fn not_started(self, name: &str, code: u8, e: &std::io::Error) -> (u8, String) {
        let why = crate::error::os_reason(e);
        match self {
            Dialect::Ffkit => (code, format!("cannot run {name}: {why}")),
            Dialect::Flock => (
                if e.raw_os_error() == Some(libc::ENOMEM) {
                    sysexits::EX_OSERR
                } else {
                    sysexits::EX_UNAVAILABLE
                },
                format!("failed to execute {name}: {why}"),
            ),
        }
    }

    /// flock(1)'s exit code and message for an error (lock-acquire reports
    /// errors through [`crate::cli::report`] instead): an unopenable lock
    /// file 66 (71 out of memory or descriptors, 73 read-only or full file
    /// system), a failed lock 65 (71 for ENOLCK/ENOMEM), a usage error 64.
    /// The two I/O cases are told apart by the words `lock::acquire` uses
    /// for them (the persona's differential test pins both).
    pub(super) fn flock_failure(e: &Error) -> (u8, String) {
        use sysexits::*;
        match e {
            Error::Io { what, path, source } => {
                let errno = source.raw_os_error().unwrap_or(0);
                let why = crate::error::os_reason(source);
                if *what == lock::OPEN_FAILED {
                    let code = match errno {
                        libc::ENOMEM | libc::EMFILE | libc::ENFILE => EX_OSERR,
                        libc::EROFS | libc::ENOSPC => EX_CANTCREAT,
                        _ => EX_NOINPUT,
                    };
                    (code, format!("{what} {}: {why}", path.display()))
                } else if *what == "cannot lock" {
                    let code = match errno {
                        libc::ENOLCK | libc::ENOMEM => EX_OSERR,
                        _ => EX_DATAERR,
                    };
                    (code, format!("{}: {why}", path.display()))
                } else {
                    (EX_OSERR, e.to_string())
                }
            }
            Error::Usage(m) | Error::Validation(m) => (EX_USAGE, m.clone()),
            other => (EX_DATAERR, other.to_string()),
        }
    }
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
            function: None,
            whole_timeout: None,
            dialect: Dialect::Ffkit,
            backend: None,
        }
    }
}

/// Prints what an acquisition reports, as the front end's flags say.
struct Front<'a> {
    ctx: &'a mut Ctx,
    quiet: bool,
    verbose: bool,
    dialect: Dialect,
    quiet_wait: bool,
    /// Deferred `--verbose` lines ([`Dialect::defers_verbose`]).
    pending: Option<Vec<u8>>,
    /// A remote lock's fencing token, for the verbose line.
    fence: Option<u64>,
}

impl Front<'_> {
    /// A --verbose line, where the dialect puts it.
    fn verbose_line(&mut self, msg: impl Display) {
        if !self.verbose || self.quiet {
            return;
        }
        if self.dialect.verbose_on_stdout() {
            let line = format!("{}: {msg}\n", self.ctx.prog);
            match &mut self.pending {
                Some(p) => p.extend_from_slice(line.as_bytes()),
                None => {
                    let _ = self.ctx.write_out(line.as_bytes());
                }
            }
        } else {
            self.ctx.note(msg);
        }
    }
}

impl Report for Front<'_> {
    /// The one waiting line, on stderr, when the dialect says so
    /// ([`Dialect::says_waiting`]). Scripts see nothing by default.
    fn waiting(&mut self, label: &str, holder: &dyn Display) {
        if self.dialect.says_waiting(
            self.quiet,
            self.quiet_wait,
            self.verbose,
            self.ctx.cfg.debug,
        ) {
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
        self.ctx
            .debug(crate::lock::acquire::taken_note(label, how, waited));
        let fence = self
            .fence
            .map(|f| format!(" (fence {f})"))
            .unwrap_or_default();
        self.verbose_line(format_args!(
            "getting lock took {}.{:06} seconds{fence}",
            waited.as_secs(),
            waited.subsec_micros()
        ));
    }

    fn fence(&mut self, fence: u64) {
        self.fence = Some(fence);
    }

    fn notice(&mut self, msg: &dyn Display) {
        self.ctx.note(msg);
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
        if let Some(p) = &mut self.pending {
            p.clear();
        }
        self.record_wait();
    }

    /// Writes the self-timing row while the command runs: its duration is
    /// the wait, known by now, and the row's system calls (open, lock,
    /// append) then overlap the command's start instead of following its
    /// exit and the release (docs/metrics.md, "Self-timing").
    fn started(&mut self) {
        self.record_wait();
    }
}

impl Front<'_> {
    /// The row of the wait for the lock, now, if monitoring is on and no
    /// row was written yet; a failure leaves it to the end of the call,
    /// which tries again and says why with `FF_DEBUG=true`.
    fn record_wait(&mut self) {
        let ctx = &mut *self.ctx;
        if let (true, Some(op), Some(d)) =
            (ctx.cfg.perf_monitoring, ctx.metric, ctx.metric_duration)
            && crate::metrics::record_self(&ctx.cfg, ctx.metric_dir.as_deref(), op, d).is_ok()
        {
            ctx.metric = None;
        }
    }
}

/// Runs a request in the mode its arguments select, on the backend
/// `lock::Locks` picks.
pub(super) fn execute(a: LockArgs, ctx: &mut Ctx) -> Result<ExitCode> {
    let locks = Locks::new(&ctx.cfg, a.backend.as_deref())?;
    locks.check(LocalOnly {
        fd: a.fd.is_some(),
        dotlock: a.dotlock,
        shared: a.kind == Kind::Shared,
        no_fork: a.no_fork,
        inherit: a.inherit,
        prepare: a.prepare,
        function: a.function.is_some(),
    })?;
    let owner = a.owner.unwrap_or_else(lock::parent_pid);
    if a.function.is_some() && a.fd.is_none() && !a.prepare {
        return Err(Error::Validation(
            "--function takes --fd N NAME or --prepare NAME".into(),
        ));
    }
    if a.prepare && a.fd.is_some() {
        return Err(Error::Validation(
            "--prepare takes a NAME, not a descriptor".into(),
        ));
    }
    if a.fd.is_none()
        && !a.prepare
        && a.dialect == Dialect::Ffkit
        && a.lock_dir.is_none()
        && a.target.as_deref().is_some_and(|t| !lock::names_a_path(t))
    {
        super::note_team_config(ctx);
    }
    let resolve = |t: &str| locks.resolve(t, a.lock_dir.as_deref(), a.session);
    let mode = if let Some(fd) = a.fd {
        // flock FD: the target is the descriptor number itself.
        let path = match (&a.target, a.dialect) {
            // `-u`: a release, which never creates the lock dir.
            (Some(t), Dialect::Ffkit) if a.unlock => {
                Some(locks.resolve_query(t, a.lock_dir.as_deref(), a.session)?)
            }
            (Some(t), Dialect::Ffkit) => Some(resolve(t)?),
            _ => None,
        };
        if a.unlock {
            if a.dialect == Dialect::Ffkit {
                ctx.metric = Some(Op::LockRelease);
            }
            let delete = deletes_at_release(a.target.as_deref(), &ctx.cfg);
            return unlock_fd(fd, delete, path.as_deref(), owner, a.quiet);
        }
        Mode::Fd {
            fd,
            // Only a NAME's descriptor is the functions'.
            function: a.function.is_some() && path.is_some(),
            path,
        }
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
            let path = resolve(&target)?;
            if lock::names_a_path(&target) {
                lock::kernel::open_lock_file(&path, true, crate::fsutil::FILE_MODE).map(drop)
            } else {
                let rule = lock::compat::Rule::of(&ctx.cfg);
                lock::compat::prepare(rule, &path, crate::fsutil::FILE_MODE, owner)
            }
            .map_err(|e| Error::io(lock::OPEN_FAILED, &path, e))?;
            ctx.debug(lock::prepared_note(&target, &path));
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
            None if a.dialect == Dialect::Flock => {
                return Err(Error::Validation(format!(
                    "{target}: a command is required (flock FILE CMD, flock FILE -c CMD or flock FD)"
                )));
            }
            None if a.unlock => {
                ctx.metric = Some(Op::LockRelease);
                return release_named(
                    ctx,
                    &locks,
                    &target,
                    &lock::Releasing {
                        force: false,
                        owner: a.owner,
                        lock_dir: a.lock_dir.as_deref(),
                        session: a.session,
                        dotlock: a.dotlock,
                    },
                    a.quiet,
                );
            }
            None => Mode::Named {
                path: resolve(&target)?,
            },
        }
    };
    let label = match &mode {
        Mode::Fd { fd, path: None, .. } => acquire::fd_label(*fd),
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
        interruptible: a.dialect == Dialect::Flock,
        owner,
        stale_after: ctx.cfg.lock_stale_after,
        backoff: (
            ctx.cfg.backoff,
            ctx.cfg.backoff_initial,
            ctx.cfg.backoff_max,
        ),
        old_library: ctx.cfg.old_library,
    };
    let (outcome, pending) = {
        let mut front = Front {
            ctx: &mut *ctx,
            quiet: a.quiet,
            verbose: a.verbose,
            dialect: a.dialect,
            quiet_wait: a.quiet_wait,
            pending: a.dialect.defers_verbose().then(Vec::new),
            fence: None,
        };
        let outcome = locks.acquire(&req, a.session, &mut front);
        (outcome, front.pending)
    };
    if let Some(p) = pending {
        let _ = ctx.write_out(&p);
    }
    let outcome = match outcome {
        // The owner asking again (a copy of its descriptor holds the
        // lock: `lock::fd::acquire`), in the shell function's words, as
        // the builtin's function says it.
        Err(e)
            if e.exit_code() == ExitKind::Conflict.code()
                && let Some(func) = &a.function =>
        {
            return Ok(super::lock_release::in_function_words(func, Err(e)));
        }
        // The wrappers (--quiet-wait) open a NAME's file again and retry
        // when the one they opened was deleted or replaced (released)
        // before the lock was taken (shell/ffkit.bash, lock::compat): an
        // answer, not an error to print. A descriptor on a file that still
        // has a name is another file: the wrappers and ffkit disagree on
        // where NAME lives, which is said (one line).
        Err(e)
            if a.quiet_wait
                && e.exit_code() == ExitKind::Validation.code()
                && let Mode::Fd {
                    fd, path: Some(p), ..
                } = &req.mode
                && !lock::compat::fd_names(*fd, p)
                && lock::compat::fd_unlinked(*fd) =>
        {
            return Ok(ExitCode::from(ExitKind::Validation.code()));
        }
        r => r?,
    };
    match outcome {
        Outcome::Taken { .. } => Ok(ExitCode::SUCCESS),
        Outcome::Denied { why, holder } => {
            // The bash fallback's first, non-blocking try (`-n -E 75
            // --function F`), which it follows with the real wait when the
            // lock is busy: that wait is the function's one `lock_acquire`
            // row, as on the builtin and in zsh (docs/metrics.md,
            // "Self-timing"). Recording the try too made two rows of one
            // contended call.
            if a.function.is_some() && a.conflict_code.is_some() {
                ctx.metric = None;
            }
            denied(ctx, &a, &label, why, &holder)
        }
        Outcome::Ran(Ended::Status(c)) => Ok(ExitCode::from(c)),
        Outcome::Ran(Ended::NotStarted(code, e)) => {
            let name = match &req.mode {
                Mode::Command { program, .. } => program.name(),
                _ => String::new(),
            };
            let (code, msg) = a.dialect.not_started(&name, code, &e);
            ctx.note(msg);
            Ok(ExitCode::from(code))
        }
    }
}

/// The answer to a lock that was not taken: exit 5 (busy) or 6 (timeout),
/// or -E N, with one line unless quiet. flock persona: exit 1, silent
/// unless --verbose, as flock(1).
fn denied(ctx: &Ctx, a: &LockArgs, label: &str, d: Denied, holder: &str) -> Result<ExitCode> {
    // One line per failure, written once in the core (the builtin's
    // `lock-acquire` and lock functions print the same).
    let err = match (d, a.whole_timeout) {
        (Denied::TimedOut, Some(t)) => d.error(label, WaitSpec::Timeout(t), holder),
        _ => d.error(label, a.wait, holder),
    };
    let msg = err.to_string();
    if a.dialect == Dialect::Flock {
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
    if a.quiet {
        return Ok(ExitCode::from(err.exit_code()));
    }
    Err(err)
}

/// Whether a release of `target` deletes its lock file: a NAME's, with
/// `LOCK_OLD_LIBRARY=present` (the old library's file protocol,
/// `lock::compat`).
pub(super) fn deletes_at_release(target: Option<&str>, cfg: &crate::config::Config) -> bool {
    cfg.old_library && target.is_some_and(|t| !lock::names_a_path(t))
}

/// Drops the lock on the caller's descriptor `fd` (open on `path` when a
/// NAME was given; `delete`: see [`deletes_at_release`]): exit 4 when that
/// descriptor holds no lock.
pub(super) fn unlock_fd(
    fd: RawFd,
    delete: bool,
    path: Option<&Path>,
    owner: u32,
    quiet: bool,
) -> Result<ExitCode> {
    match lock::fd::release(fd, path, owner, delete)? {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // (`Reopened` is a shell function's answer alone.)
        Err(_) if quiet => Ok(ExitCode::from(ExitKind::NotFound.code())),
        Err(_) => Err(Error::NotFound(format!(
            "{}: holds no lock",
            acquire::fd_label(fd)
        ))),
    }
}

/// Releases a named lock, checking ownership; the messages and exit codes
/// of `lock-release NAME` and `lock-acquire -u NAME`, whatever the backend.
pub(super) fn release_named(
    ctx: &mut Ctx,
    locks: &Locks,
    name: &str,
    r: &lock::Releasing<'_>,
    quiet: bool,
) -> Result<ExitCode> {
    match locks.release(name, r)? {
        Released::Done(h) => {
            ctx.debug(format_args!("lock {name}: released (it was held by {h})"));
            Ok(ExitCode::SUCCESS)
        }
        Released::NotHeld if quiet => Ok(ExitCode::from(ExitKind::NotFound.code())),
        Released::NotHeld => Err(Error::NotFound(format!("{name}: not held"))),
        Released::ByParentShell(..) if quiet => Ok(ExitCode::from(ExitKind::NotFound.code())),
        Released::ByParentShell(h, label) => Err(lock::release::descendant(&label, &h)),
        Released::Lost(_) if quiet => Ok(ExitCode::from(ExitKind::LockFailed.code())),
        Released::Lost(now) => Err(Error::LockFailed(format!(
            "{name}: lost while held: the server no longer had this holding (a restart or \
             failover lost it, or its lease lapsed); nothing was released{}",
            now.map(|h| format!(", and it is now held by {h}"))
                .unwrap_or_default()
        ))),
        Released::NotOwner(_) if quiet => Ok(ExitCode::from(ExitKind::Conflict.code())),
        Released::NotOwner(h) => Err(Error::Conflict(format!(
            "{name}: held by {h}, not by you (use --force to release it anyway)"
        ))),
    }
}
