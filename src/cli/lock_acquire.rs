//! `lock-acquire`: take a lock in one of three modes — run a command under
//! it (`LOCKFILE -- CMD`, `-c`), lock the caller's descriptor (`--fd N`), or
//! hold a named lock until `lock-release NAME` or the owner's exit — with
//! kernel locks by default or `--dotlock`. The flock(1) persona (`flock.rs`)
//! parses flock's options into the same [`Request`] and runs [`execute`].

use super::ExitCode;
use std::ffi::OsString;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{Ctx, quiet_arg};
use crate::error::{Error, ExitKind, Result};
use crate::lock::holder::{self, Holder, Who};
use crate::lock::run::{self, Ended, Program};
use crate::lock::{self, Denied, Kind, Wait, backoff, dotlock, kernel, named};

pub fn command() -> Command {
    Command::new("lock-acquire")
        .about("Take a lock: run a command under it, lock a descriptor, or hold a named lock")
        .long_about(
            "Take a lock, waiting in the kernel (up to -w SECS, default LOCK_TIMEOUT) and \
             printing one line on stderr naming the holder while it waits.\n\n\
             Command mode: lock-acquire LOCKFILE -- CMD [ARGS...] or LOCKFILE -c 'shell command' \
             runs the command holding the lock and exits with its status (128+signal if killed). \
             The lock ends with the command even if it left background children (--inherit: they \
             keep it, as with flock(1)).\n\
             fd mode: exec 9>>FILE; lock-acquire --fd 9 locks the shell's descriptor; \
             lock-release --fd 9 (or lock-acquire -u --fd 9) drops it.\n\
             Named mode: lock-acquire NAME holds the lock in the lock dir until lock-release NAME \
             or until the owner (the calling process, or --owner PID) exits.\n\n\
             A NAME (no '/') lives in the lock dir: --lock-dir, else FFKIT_LOCK_DIR, else \
             <namespace>/locks with FLOWFORGE_DEVELOPER, else $XDG_RUNTIME_DIR/ffkit/locks or \
             /tmp/ffkit-UID/locks. Busy with -n (or -w 0) exits 5, a timeout exits 6 (-E N \
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
                .requires("target")
                .conflicts_with_all(["fd", "cmd", "command", "dotlock", "unlock"])
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
            Arg::new("inherit")
                .long("inherit")
                .action(ArgAction::SetTrue)
                .help("Let the command's children keep the lock (flock(1) behaviour)"),
        )
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

/// The options lock-acquire shares with the flock persona.
fn common_lock_args() -> Vec<Arg> {
    vec![
        Arg::new("shared")
            .short('s')
            .long("shared")
            .action(ArgAction::SetTrue)
            .conflicts_with("exclusive")
            .help("Take a shared lock"),
        Arg::new("exclusive")
            .short('x')
            .long("exclusive")
            .action(ArgAction::SetTrue)
            .help("Take an exclusive lock (default)"),
        Arg::new("nonblock")
            .short('n')
            .long("nonblock")
            .action(ArgAction::SetTrue)
            .help("Fail at once if the lock is held"),
        Arg::new("timeout")
            .short('w')
            .long("timeout")
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
            .help("Do not pass the lock to the command (the default without --inherit)"),
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
        Arg::new("verbose")
            .long("verbose")
            .action(ArgAction::SetTrue)
            .help("Report the wait and the command on stderr"),
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

/// How long to wait, before the clock starts.
#[derive(Clone, Copy, Debug)]
pub(super) enum WaitSpec {
    NonBlocking,
    Timeout(Duration),
    Forever,
}

impl WaitSpec {
    fn start(self) -> Wait {
        match self {
            WaitSpec::NonBlocking => Wait::NonBlocking,
            WaitSpec::Timeout(t) => Wait::timeout(t),
            WaitSpec::Forever => Wait::Forever,
        }
    }
}

/// One lock request, from lock-acquire's or flock's options.
pub(super) struct Request {
    pub target: Option<String>,
    pub fd: Option<RawFd>,
    pub program: Option<Program>,
    pub kind: Kind,
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
    /// forever by default.
    pub persona: bool,
}

/// The lock kind (`-s`/`-x`) and how to wait (`-n`, `-w SECS`; `-w 0` is
/// non-blocking), with `default` when neither is given — shared with the
/// flock persona, whose default differs.
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

/// `$SHELL`, else /bin/sh, for `-c` (as flock(1) does).
pub(super) fn shell(ctx: &Ctx) -> OsString {
    ctx.cfg
        .shell
        .clone()
        .map_or_else(|| OsString::from("/bin/sh"), PathBuf::into_os_string)
}

pub fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let program = if let Some(text) = m.get_one::<OsString>("command") {
        Some(Program::Shell {
            shell: shell(ctx),
            text: text.clone(),
        })
    } else {
        m.get_many::<OsString>("cmd")
            .map(|v| Program::Argv(v.cloned().collect()))
    };
    let (kind, wait) = kind_and_wait(m, WaitSpec::Timeout(ctx.cfg.lock_timeout));
    let req = Request {
        target: m.get_one::<String>("target").cloned(),
        fd: m.get_one::<i32>("fd").copied(),
        program,
        kind,
        unlock: m.get_flag("unlock"),
        wait,
        conflict_code: m.get_one::<u8>("conflict").copied(),
        close: m.get_flag("close"),
        no_fork: m.get_flag("no_fork"),
        inherit: m.get_flag("inherit"),
        dotlock: m.get_flag("dotlock"),
        owner: m.get_one::<u32>("owner").copied(),
        lock_dir: m.get_one::<PathBuf>("lock_dir").cloned(),
        session: m.get_flag("session"),
        verbose: m.get_flag("verbose"),
        quiet: m.get_flag("quiet"),
        prepare: m.get_flag("prepare"),
        quiet_wait: m.get_flag("quiet_wait"),
        persona: false,
    };
    if let Some(t) = super::backend_of(m, ctx)? {
        return remote(req, &t, ctx);
    }
    execute(req, ctx)
}

/// The request on a remote backend (docs/redis.md): command and named mode,
/// exclusive only.
fn remote(req: Request, t: &crate::backend::Target, ctx: &mut Ctx) -> Result<ExitCode> {
    let unsupported = if req.fd.is_some() {
        Some("--fd (a descriptor lock is local by nature)")
    } else if req.dotlock {
        Some("--dotlock")
    } else if req.kind == Kind::Shared {
        Some("-s/--shared")
    } else if req.no_fork {
        Some("-F/--no-fork (ffkit must stay to renew the lease)")
    } else if req.inherit {
        Some("--inherit")
    } else if req.prepare {
        Some("--prepare (there is no local lock file)")
    } else {
        None
    };
    if let Some(what) = unsupported {
        return Err(Error::Validation(format!(
            "{what} is not available with backend {} (use --backend local)",
            t.label
        )));
    }
    let Some(target) = req.target.clone() else {
        return Err(Error::Validation(
            "nothing to lock: give LOCKFILE -- CMD, -c CMD or NAME".into(),
        ));
    };
    if req.unlock {
        if req.program.is_some() {
            return Err(Error::Validation(
                "-u/--unlock takes NAME, not a command".into(),
            ));
        }
        ctx.metric = Some("lock_release");
        let rel = super::remote::Release {
            target,
            force: false,
            owner: req.owner,
            session: req.session,
            quiet: req.quiet,
        };
        return super::remote::lock_release(t, rel, ctx);
    }
    let a = super::remote::Acquire {
        target,
        command_text: req.program.as_ref().map(program_text),
        program: req.program,
        wait: req.wait.start(),
        timeout: match req.wait {
            WaitSpec::Timeout(d) => Some(d),
            _ => None,
        },
        conflict_code: req.conflict_code,
        owner: req.owner,
        session: req.session,
        note_wait: {
            use std::io::IsTerminal;
            let tty = !req.quiet_wait && std::io::stderr().is_terminal();
            !req.quiet && (tty || req.verbose || ctx.cfg.debug)
        },
        verbose: req.verbose,
        quiet: req.quiet,
    };
    super::remote::lock_acquire(t, a, ctx)
}

/// Runs a request in the mode its arguments select.
pub(super) fn execute(req: Request, ctx: &mut Ctx) -> Result<ExitCode> {
    if let Some(fd) = req.fd {
        // flock FD: the target is the descriptor number itself.
        let path = match (&req.target, req.persona) {
            (Some(t), false) => Some(lock::resolve(
                t,
                &ctx.cfg,
                req.lock_dir.as_deref(),
                req.session,
            )?),
            _ => None,
        };
        if req.unlock {
            if !req.persona {
                ctx.metric = Some("lock_release");
            }
            return unlock_fd(fd, path.as_deref(), owner_pid(&req), req.quiet);
        }
        return fd_mode(&req, fd, path.as_deref(), ctx);
    }
    if req.prepare {
        ctx.metric = None;
        let target = req.target.as_deref().unwrap_or_default();
        let path = lock::resolve(target, &ctx.cfg, req.lock_dir.as_deref(), req.session)?;
        kernel::open_lock_file(&path, true, crate::fsutil::FILE_MODE)
            .map_err(|e| Error::io("cannot open lock file", &path, e))?;
        ctx.debug(format_args!("{target}: lock file {} ready", path.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(target) = req.target.clone() else {
        return Err(Error::Validation(
            "nothing to lock: give LOCKFILE -- CMD, -c CMD, --fd N or NAME".into(),
        ));
    };
    if req.program.is_some() {
        if req.unlock {
            return Err(Error::Validation(
                "-u/--unlock takes --fd N or NAME, not a command".into(),
            ));
        }
        return command_mode(&req, Path::new(&target), ctx);
    }
    if req.persona {
        return Err(Error::Validation(format!(
            "{target}: a command is required (flock FILE CMD, flock FILE -c CMD or flock FD)"
        )));
    }
    if req.unlock {
        ctx.metric = Some("lock_release");
        let rel = super::lock_release::Release {
            target,
            force: false,
            owner: req.owner,
            lock_dir: req.lock_dir.clone(),
            session: req.session,
            dotlock: req.dotlock,
            quiet: req.quiet,
        };
        return super::lock_release::release_named(&rel, ctx);
    }
    named_mode(&req, &target, ctx)
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
        Err(lock::fd::NotHeld::NoLock) => {
            Err(Error::NotFound(format!("{}: holds no lock", fd_label(fd))))
        }
    }
}

/// The name a lock is called by in messages.
fn fd_label(fd: RawFd) -> String {
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(p) => format!("{} (fd {fd})", p.display()),
        Err(_) => format!("fd {fd}"),
    }
}

/// "held by pid 123 (bash deploy.sh) for 3.2s", as far as known.
fn describe(who: &Who) -> String {
    let mut s = String::from("held");
    if let Some(pid) = who.pid {
        s.push_str(&format!(" by pid {pid}"));
    }
    if let Some(c) = who.command.as_deref().filter(|c| !c.is_empty()) {
        s.push_str(&format!(" ({c})"));
    }
    if let Some(r) = &who.record {
        if r.host != holder::hostname() {
            s.push_str(&format!(" on {}", r.host));
        }
        s.push_str(&format!(" for {:.1}s", r.age()));
    }
    s
}

fn describe_record(h: Option<&Holder>) -> String {
    match h {
        Some(r) => describe(&Who {
            pid: Some(r.pid),
            command: Some(r.command.clone()),
            record: Some(r.clone()),
        }),
        None => "held".to_string(),
    }
}

fn describe_file(f: &File) -> String {
    describe(&holder::who_of_file(f))
}

/// Borrows a descriptor we do not own as a File, never closing it.
fn borrow_fd(fd: RawFd) -> ManuallyDrop<File> {
    // SAFETY: ManuallyDrop keeps the File from closing the caller's fd; it
    // is only used for fstat/pread while the fd is open.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

/// The one waiting line, on stderr: with `--verbose` or `FF_DEBUG=true`,
/// or when stderr is a terminal (not with `-q`/`--quiet-wait`, nor for the
/// flock persona, which is silent like flock(1)). Scripts and pipes see
/// nothing by default.
fn waiting_note(ctx: &Ctx, req: &Request, label: &str, holder: String) {
    use std::io::IsTerminal;
    if req.quiet {
        return;
    }
    let tty = !req.persona && !req.quiet_wait && std::io::stderr().is_terminal();
    if tty || req.verbose || ctx.cfg.debug {
        ctx.note(format_args!("waiting for lock {label} ({holder})"));
    }
}

/// The answer to a lock that was not taken: exit 5 (busy) or 6 (timeout),
/// or -E N, with one line unless quiet. flock persona: exit 1, silent
/// unless --verbose, as flock(1).
fn denied(ctx: &Ctx, req: &Request, label: &str, d: Denied, holder: String) -> Result<ExitCode> {
    let msg = match (d, req.wait) {
        (Denied::Busy, _) => format!("{label}: busy, {holder}"),
        (Denied::TimedOut, WaitSpec::Timeout(t)) => {
            format!("{label}: timed out after {}s, {holder}", t.as_secs_f64())
        }
        (Denied::TimedOut, _) => format!("{label}: timed out, {holder}"),
    };
    if req.persona {
        if req.verbose {
            ctx.note("failed to get lock");
        }
        return Ok(ExitCode::from(req.conflict_code.unwrap_or(1)));
    }
    if let Some(code) = req.conflict_code {
        if !req.quiet {
            ctx.note(&msg);
        }
        return Ok(ExitCode::from(code));
    }
    let kind = match d {
        Denied::Busy => ExitKind::Conflict,
        Denied::TimedOut => ExitKind::Timeout,
    };
    if req.quiet {
        return Ok(ExitCode::from(kind.code()));
    }
    Err(match d {
        Denied::Busy => Error::Conflict(msg),
        Denied::TimedOut => Error::Timeout(msg),
    })
}

fn took_note(ctx: &Ctx, req: &Request, waited: Duration) {
    if req.verbose && !req.quiet {
        ctx.note(format_args!(
            "getting lock took {}.{:06} seconds",
            waited.as_secs(),
            waited.subsec_micros()
        ));
    }
}

fn fd_mode(req: &Request, fd: RawFd, path: Option<&Path>, ctx: &mut Ctx) -> Result<ExitCode> {
    let wait = req.wait.start();
    let mut on_wait = || {
        let f = borrow_fd(fd);
        waiting_note(ctx, req, &fd_label(fd), describe_file(&f));
    };
    let got = lock::fd::acquire(fd, req.kind, wait, path, owner_pid(req), &mut on_wait)?;
    match got {
        Ok(waited) => {
            took_note(ctx, req, waited);
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => {
            let f = borrow_fd(fd);
            denied(ctx, req, &fd_label(fd), d, describe_file(&f))
        }
    }
}

/// Mode of a lock file command mode creates: like flock(1), 0666 less the
/// umask, so a lock file in a shared place can serve other users.
const COMMAND_LOCK_MODE: u32 = 0o666;

fn command_mode(req: &Request, path: &Path, ctx: &mut Ctx) -> Result<ExitCode> {
    let Some(program) = &req.program else {
        return Err(Error::Validation("no command".into()));
    };
    let label = path.display().to_string();
    let start = Instant::now();
    if req.dotlock {
        return dotlock_command(req, path, program, ctx);
    }
    let f = kernel::open_lock_file(path, false, COMMAND_LOCK_MODE)
        .map_err(|e| Error::io("cannot open lock file", path, e))?;
    let fd = f.as_raw_fd();
    let wait = req.wait.start();
    let got = kernel::lock_fd(fd, req.kind, wait, &mut || {
        waiting_note(ctx, req, &label, describe_file(&f))
    })
    .map_err(|e| Error::io("cannot lock", path, e))?;
    let waited = match got {
        Ok(w) => w,
        Err(d) => return denied(ctx, req, &label, d, describe_file(&f)),
    };
    ctx.metric_duration = Some(start.elapsed());
    took_note(ctx, req, waited);
    // -F must keep the lock across exec; --inherit passes it to children
    // unless -o closes it first.
    let inherit = req.no_fork || (req.inherit && !req.close);
    if inherit {
        run::set_inherit(fd, true).map_err(|e| Error::io("cannot pass lock to", path, e))?;
    }
    if req.verbose && !req.quiet {
        ctx.note(format_args!("executing {}", program.name()));
    }
    let ended = if req.no_fork {
        // Record now: exec never comes back.
        record_now(ctx);
        run::exec(program)
    } else {
        run::run(program)
    };
    finish(ctx, program, ended)
}

/// Writes the self-timing row before an exec replaces this process.
fn record_now(ctx: &mut Ctx) {
    if let (true, Some(op), Some(d)) = (ctx.cfg.perf_monitoring, ctx.metric, ctx.metric_duration)
        && crate::metrics::record_self(&ctx.cfg, ctx.metric_dir.as_deref(), op, d).is_ok()
    {
        ctx.metric = None;
    }
}

fn finish(ctx: &Ctx, program: &Program, ended: Ended) -> Result<ExitCode> {
    match ended {
        Ended::Status(c) => Ok(ExitCode::from(c)),
        Ended::NotStarted(code, e) => {
            ctx.note(format_args!(
                "cannot run {}: {}",
                program.name(),
                strip_os(&e)
            ));
            Ok(ExitCode::from(code))
        }
    }
}

fn strip_os(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn schedule(ctx: &Ctx) -> backoff::Schedule {
    backoff::Schedule::new(
        ctx.cfg.backoff,
        ctx.cfg.backoff_initial,
        ctx.cfg.backoff_max,
    )
}

/// Prints each backoff sleep when FFKIT_TEST_BACKOFF_TRACE is set.
fn trace_sleep(ctx: &Ctx) -> impl FnMut(Duration) + '_ {
    move |d: Duration| {
        if ctx.cfg.backoff_trace {
            ctx.note(format_args!("backoff: sleep {:.3}s", d.as_secs_f64()));
        }
    }
}

fn dotlock_command(
    req: &Request,
    path: &Path,
    program: &Program,
    ctx: &mut Ctx,
) -> Result<ExitCode> {
    if req.kind == Kind::Shared {
        return Err(Error::Validation(
            "--dotlock locks are exclusive only".into(),
        ));
    }
    let start = Instant::now();
    let label = path.display().to_string();
    let rec = Holder::new(
        holder::KIND_DOTLOCK,
        std::process::id(),
        Some(program_text(program)),
    );
    let got = {
        let mut on_wait = |h: Option<&Holder>| waiting_note(ctx, req, &label, describe_record(h));
        let mut on_sleep = trace_sleep(ctx);
        dotlock::acquire(
            path,
            &rec,
            ctx.cfg.lock_stale_after,
            req.wait.start(),
            schedule(ctx),
            &mut on_wait,
            &mut on_sleep,
        )?
    };
    let held = match got {
        Ok(h) => h,
        Err(d) => {
            let seen = dotlock::look(path)?.and_then(|s| s.holder);
            return denied(ctx, req, &label, d, describe_record(seen.as_ref()));
        }
    };
    ctx.metric_duration = Some(start.elapsed());
    took_note(ctx, req, start.elapsed());
    if req.no_fork {
        return Err(Error::Validation(
            "-F/--no-fork cannot be used with --dotlock (nobody would remove the lock)".into(),
        ));
    }
    let ended = run::run(program);
    let released = dotlock::release_held(&held);
    let out = finish(ctx, program, ended);
    released?;
    out
}

fn program_text(p: &Program) -> String {
    match p {
        Program::Argv(v) => v
            .iter()
            .map(|s| s.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        Program::Shell { text, .. } => text.to_string_lossy().into_owned(),
    }
}

/// The owner of a named lock: `--owner`, else our parent (the calling shell).
fn owner_pid(req: &Request) -> u32 {
    req.owner.unwrap_or_else(lock::parent_pid)
}

fn named_mode(req: &Request, target: &str, ctx: &mut Ctx) -> Result<ExitCode> {
    if req.kind == Kind::Shared {
        return Err(Error::Validation(
            "named locks are exclusive only; use command or fd mode for shared locks".into(),
        ));
    }
    if req.no_fork || req.inherit {
        return Err(Error::Validation("-F/--inherit need a command".into()));
    }
    let path = lock::resolve(target, &ctx.cfg, req.lock_dir.as_deref(), req.session)?;
    let owner = owner_pid(req);
    if req.dotlock {
        let mut rec = Holder::new(holder::KIND_DOTLOCK, owner, None);
        if rec.start.is_none() && !crate::fsutil::pid_alive(owner) {
            return Err(Error::NotFound(format!(
                "owner pid {owner}: no such process"
            )));
        }
        rec.holder_pid = None;
        let got = {
            let mut on_wait =
                |h: Option<&Holder>| waiting_note(ctx, req, target, describe_record(h));
            let mut on_sleep = trace_sleep(ctx);
            dotlock::acquire(
                &path,
                &rec,
                ctx.cfg.lock_stale_after,
                req.wait.start(),
                schedule(ctx),
                &mut on_wait,
                &mut on_sleep,
            )?
        };
        return match got {
            Ok(_) => Ok(ExitCode::SUCCESS),
            Err(d) => {
                let seen = dotlock::look(&path)?.and_then(|s| s.holder);
                denied(ctx, req, target, d, describe_record(seen.as_ref()))
            }
        };
    }
    let got = named::acquire(&path, req.wait.start(), owner, None, &mut |f| {
        waiting_note(ctx, req, target, describe_file(f))
    })?;
    match got {
        Ok(t) => {
            took_note(ctx, req, t.waited);
            ctx.debug(format_args!(
                "{target}: held by holder pid {} for owner {owner}",
                t.holder_pid
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => {
            let who = match kernel::open_lock_file_existing(&path) {
                Ok(f) => describe_file(&f),
                Err(_) => "held".into(),
            };
            denied(ctx, req, target, d, who)
        }
    }
}
