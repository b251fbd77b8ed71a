//! `lock::acquire`: one lock request — from `lock-acquire`, the flock(1)
//! persona or an in-process caller — validated as a whole first, then run
//! in the mode it selects (docs/locks.md, "Modes"):
//!
//! - **command mode**: lock a file, run a command holding it, release;
//! - **fd mode**: lock the caller's descriptor (a NAME's lock file gets the
//!   caller's holder record, see [`super::fd`]);
//! - **named mode**: hold a NAME's lock across separate commands (a holder
//!   process, [`super::named`], or a dot-lock, [`super::dotlock`]).
//!
//! Nothing here prints: what a front end may want to say (whom we wait
//! for, a stale lock broken, how the lock was taken) goes through
//! [`Report`], and the result is an [`Outcome`] the front end maps to an
//! exit code.

use std::fmt::Display;
use std::os::unix::io::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::backoff::Schedule;
use super::holder::{self, Holder};
use super::kernel::{self, Method};
use super::run::{self, Ended, Options, Program};
use super::{Denied, Kind, WaitSpec, dotlock, named};
use crate::config::BackoffStrategy;
use crate::error::{Error, Result};

/// What to lock, and how it is held.
#[derive(Debug)]
pub enum Mode {
    /// Run `program` holding the lock on `path`.
    Command { path: PathBuf, program: Program },
    /// Lock the caller's descriptor `fd`; `path` is a NAME's lock file,
    /// which `fd` must be open on and which gets the owner's record.
    /// `function`: the shell functions' descriptor (`--function FUNC`,
    /// [`super::fd::acquire`]).
    Fd {
        fd: RawFd,
        path: Option<PathBuf>,
        function: bool,
    },
    /// Hold the lock at `path` until released or the owner exits.
    Named { path: PathBuf },
}

/// One lock request.
#[derive(Debug)]
pub struct Request {
    pub mode: Mode,
    /// How messages name the lock (the NAME or path as given).
    pub label: String,
    pub kind: Kind,
    pub wait: WaitSpec,
    pub method: Method,
    pub dotlock: bool,
    /// Command mode: the command's children keep the lock after it exits
    /// (no explicit unlock; flock(1)'s exact behaviour).
    pub inherit: bool,
    /// Command mode: do not pass the lock to the command at all (`-o`).
    pub close: bool,
    /// Command mode: exec the command in place (`-F`).
    pub no_fork: bool,
    /// Command mode: a ^C (SIGINT, SIGQUIT) while the command runs ends
    /// the caller too, as it ends flock(1); otherwise the caller ignores
    /// them and passes on how the command ended ([`run::Options`]).
    pub interruptible: bool,
    /// The process the lock belongs to (named and fd mode).
    pub owner: u32,
    /// `LOCK_STALE_AFTER` (dot-locks).
    pub stale_after: Duration,
    /// `LOCK_BACKOFF_STRATEGY`, `LOCK_BACKOFF_INITIAL`, `LOCK_BACKOFF_MAX`.
    pub backoff: (BackoffStrategy, Duration, Duration),
    /// `LOCK_OLD_LIBRARY=present`: a NAME's lock follows the old
    /// library's file protocol too ([`super::compat::Rule::follow`]).
    pub old_library: bool,
}

/// What an acquisition tells its front end while it works. Every method
/// has a silent default.
pub trait Report {
    /// Once, just before waiting, with whom we wait for.
    fn waiting(&mut self, _label: &str, _holder: &dyn Display) {}
    /// A stale dot-lock was broken.
    fn broke(&mut self, _label: &str, _holder: &dyn Display) {}
    /// The lock was taken: how, and how long the wait was.
    fn taken(&mut self, _label: &str, _how: &str, _waited: Duration) {}
    /// Every backoff sleep (dot-locks).
    fn sleeping(&mut self, _d: Duration) {}
    /// Command mode: about to run the command.
    fn executing(&mut self, _program: &Program) {}
    /// Command mode: the command has started; whatever is done here runs
    /// while it does, off the round's critical path (the front end writes
    /// its self-timing row, whose duration, the wait, is known by now).
    fn started(&mut self) {}
    /// `-F`: about to exec (nothing runs after this in our process).
    fn before_exec(&mut self) {}
    /// A remote lock: its fencing token, just before [`Report::taken`].
    fn fence(&mut self, _fence: u64) {}
    /// Something the caller must hear although the request did not fail
    /// (a remote lease that lapsed or could not be released).
    fn notice(&mut self, _msg: &dyn Display) {}
}

/// The result of a request that did not fail.
#[derive(Debug)]
pub enum Outcome {
    /// Fd and named mode: the lock is held.
    Taken { waited: Duration },
    /// Not taken: busy or timed out, with the holder's description.
    Denied { why: Denied, holder: String },
    /// Command mode: how the command ended (the lock is released).
    Ran(Ended),
}

/// Mode of a lock file command mode creates: like flock(1), 0666 less the
/// umask, so a lock file in a shared place can serve other users.
const COMMAND_LOCK_MODE: u32 = 0o666;

impl Request {
    /// Every option checked before anything is taken, so a refused request
    /// never leaves a lock or a file behind.
    pub fn validate(&self) -> Result<()> {
        let ofd = matches!(self.method, Method::Ofd { .. });
        match &self.mode {
            Mode::Command { .. } => {
                if self.dotlock && self.kind == Kind::Shared {
                    return Err(Error::Validation(
                        "--dotlock locks are exclusive only".into(),
                    ));
                }
                if self.dotlock && self.no_fork {
                    return Err(Error::Validation(
                        "-F/--no-fork cannot be used with --dotlock (nobody would remove the lock)"
                            .into(),
                    ));
                }
                if self.dotlock && ofd {
                    return Err(Error::Validation(
                        "--fcntl and --dotlock are different locks; choose one".into(),
                    ));
                }
            }
            Mode::Fd { .. } => {
                if self.dotlock {
                    return Err(Error::Validation(
                        "--dotlock takes a file, not a descriptor".into(),
                    ));
                }
            }
            Mode::Named { .. } => {
                if self.kind == Kind::Shared {
                    return Err(Error::Validation(
                        "named locks are exclusive only; use command or fd mode for shared locks"
                            .into(),
                    ));
                }
                if self.no_fork || self.inherit {
                    return Err(Error::Validation("-F/--inherit need a command".into()));
                }
                if ofd {
                    return Err(Error::Validation(
                        "--fcntl needs a command or a descriptor".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn schedule(&self) -> Schedule {
        Schedule::new(self.backoff.0, self.backoff.1, self.backoff.2)
    }

    fn compat_rule(&self) -> super::compat::Rule {
        super::compat::Rule {
            follow: self.old_library,
            backoff: self.backoff,
        }
    }

    fn method_text(&self) -> &'static str {
        method_text(self.method)
    }
}

fn method_text(m: Method) -> &'static str {
    match m {
        Method::Flock => "kernel flock",
        Method::Ofd { .. } => "kernel OFD fcntl lock",
    }
}

/// `FF_DEBUG`'s line for a lock taken (docs/locks.md): the binary's
/// reporter and the bash builtin both print these words, so the builtin,
/// the fallback and zsh say the same thing (prefix: the caller's).
pub fn taken_note(label: &str, how: &str, waited: Duration) -> String {
    format!(
        "lock {label}: taken by {how} after {:.6}s",
        waited.as_secs_f64()
    )
}

/// The "how" of [`taken_note`] for a lock taken on the caller's descriptor
/// `fd` (`--fd`, the shell functions' lock), with `record_for` the pid the
/// holder record names when there is one (a NAME's file).
pub fn on_callers_fd(method: Method, kind: Kind, fd: RawFd, record_for: Option<u32>) -> String {
    format!(
        "{} ({}) on the caller's fd {fd}{}",
        method_text(method),
        kind_text(kind),
        record_for
            .map(|p| format!(", holder record for pid {p}"))
            .unwrap_or_default()
    )
}

fn kind_text(k: Kind) -> &'static str {
    match k {
        Kind::Shared => "shared",
        Kind::Exclusive => "exclusive",
    }
}

/// Runs `req` (after [`Request::validate`]).
pub fn acquire(req: &Request, rep: &mut dyn Report) -> Result<Outcome> {
    req.validate()?;
    match &req.mode {
        Mode::Command { path, program } if req.dotlock => dotlock_command(req, path, program, rep),
        Mode::Command { path, program } => command(req, path, program, rep),
        Mode::Fd { fd, path, function } => fd_mode(req, *fd, path.as_deref(), *function, rep),
        Mode::Named { path } if req.dotlock => dotlock_named(req, path, rep),
        Mode::Named { path } => named_mode(req, path, rep),
    }
}

/// Who holds the kernel lock at `path` (or the descriptor), as text.
fn command(req: &Request, path: &Path, program: &Program, rep: &mut dyn Report) -> Result<Outcome> {
    // An exclusive OFD lock needs a writable descriptor (flock(1) reopens
    // read-write for it too); flock(2) is happy with a read-only one.
    let write = matches!(req.method, Method::Ofd { .. }) && req.kind == Kind::Exclusive;
    let f = kernel::open_lock_file(path, write, COMMAND_LOCK_MODE)
        .map_err(|e| Error::io(crate::lock::OPEN_FAILED, path, e))?;
    let fd = f.as_raw_fd();
    let got = kernel::lock_fd(
        fd,
        req.kind,
        req.method,
        req.wait.start(),
        &mut || false,
        &mut || rep.waiting(&req.label, &holder::describe_kernel_holder(&f)),
    )
    .map_err(|e| Error::io("cannot lock", path, e))?;
    let waited = match got {
        Ok(w) => w,
        Err(why) => {
            return Ok(Outcome::Denied {
                why,
                holder: holder::describe_kernel_holder(&f),
            });
        }
    };
    rep.taken(
        &req.label,
        &format!("{} ({}) on fd {fd}", req.method_text(), kind_text(req.kind)),
        waited,
    );
    // The command inherits the locked open file description, so the lock
    // lives while the command does even if ffkit is killed; when it exits,
    // ffkit unlocks explicitly, which drops the lock for every descriptor
    // sharing the description (a background child left behind does not
    // keep it) — unless --inherit asks for exactly that. -o keeps it from
    // the command (ffkit alone holds it); -F must pass it across exec.
    let pass = req.no_fork || !req.close;
    if pass {
        run::set_inherit(f.as_fd(), true).map_err(|e| Error::io("cannot pass lock to", path, e))?;
    }
    rep.executing(program);
    if req.no_fork {
        rep.before_exec();
        return Ok(Outcome::Ran(run::exec(program)));
    }
    let ended = run::run(
        program,
        Options {
            on_spawn: Some(&mut |_| rep.started()),
            interruptible: req.interruptible,
            ..Options::default()
        },
    );
    if pass && !req.inherit {
        kernel::unlock_fd_with(fd, req.method).map_err(|e| Error::io("cannot unlock", path, e))?;
    }
    Ok(Outcome::Ran(ended))
}

/// One dot-lock acquisition for `req`, its events reported to `rep` (command
/// mode and named pairs take the lock the same way).
fn take_dotlock(
    req: &Request,
    path: &Path,
    rec: &Holder,
    rep: &mut dyn Report,
) -> Result<std::result::Result<dotlock::Held, Denied>> {
    dotlock::acquire(
        path,
        rec,
        req.stale_after,
        req.wait.start(),
        req.schedule(),
        &mut DotEvents {
            label: &req.label,
            rep,
        },
    )
}

/// Forwards dot-lock events to the front end's [`Report`].
struct DotEvents<'a> {
    label: &'a str,
    rep: &'a mut dyn Report,
}

impl dotlock::Events for DotEvents<'_> {
    fn waiting(&mut self, h: Option<&Holder>) {
        self.rep.waiting(self.label, &describe(h));
    }
    fn sleeping(&mut self, d: Duration) {
        self.rep.sleeping(d);
    }
    fn broke(&mut self, h: Option<&Holder>) {
        self.rep.broke(self.label, &describe(h));
    }
}

/// A dot-lock's record as text; an unreadable one is an unknown holder.
fn describe(h: Option<&Holder>) -> String {
    h.map_or_else(|| Holder::default().to_string(), Holder::to_string)
}

fn dot_denied(path: &Path, why: Denied) -> Result<Outcome> {
    let seen = dotlock::look(path)?.and_then(|s| s.holder);
    Ok(Outcome::Denied {
        why,
        holder: describe(seen.as_ref()),
    })
}

fn dotlock_command(
    req: &Request,
    path: &Path,
    program: &Program,
    rep: &mut dyn Report,
) -> Result<Outcome> {
    let start = Instant::now();
    let rec = Holder::new(
        holder::KIND_DOTLOCK,
        std::process::id(),
        Some(program.text()),
    );
    let got = take_dotlock(req, path, &rec, rep)?;
    let held = match got {
        Ok(h) => h,
        Err(why) => return dot_denied(path, why),
    };
    rep.taken(&req.label, "dot-lock (link)", start.elapsed());
    rep.executing(program);
    // The record names the command too, so killing ffkit does not make a
    // lock whose command still runs look stale; the heartbeat keeps the
    // mtime fresh for waiters on other hosts.
    let ended = run::run(
        program,
        Options {
            on_spawn: Some(&mut |pid| {
                dotlock::set_runner(&held, &rec, pid);
                rep.started();
            }),
            heartbeat: Some((dotlock::heartbeat_every(req.stale_after), &mut || {
                dotlock::heartbeat(&held)
            })),
            interruptible: req.interruptible,
        },
    );
    dotlock::release_held(&held)?;
    Ok(Outcome::Ran(ended))
}

fn fd_mode(
    req: &Request,
    fd: RawFd,
    path: Option<&Path>,
    function: bool,
    rep: &mut dyn Report,
) -> Result<Outcome> {
    let label = fd_label(fd);
    let who = || match path.map(kernel::open_lock_file_existing) {
        Some(Ok(f)) => holder::describe_kernel_holder(&f),
        _ => match std::fs::File::open(format!("/proc/self/fd/{fd}")) {
            Ok(f) => holder::describe_kernel_holder(&f),
            Err(_) => Holder::default().to_string(),
        },
    };
    let got = super::fd::acquire(
        fd,
        req.kind,
        req.method,
        req.wait.start(),
        path,
        req.owner,
        // A NAME's file follows the old library's file protocol (`compat`).
        (!super::names_a_path(&req.label)).then_some(req.compat_rule()),
        function,
        &mut || rep.waiting(&label, &who()),
    )?;
    match got {
        Ok(waited) => {
            rep.taken(
                &req.label,
                &on_callers_fd(
                    req.method,
                    req.kind,
                    fd,
                    path.is_some().then_some(req.owner),
                ),
                waited,
            );
            Ok(Outcome::Taken { waited })
        }
        Err(why) => Ok(Outcome::Denied { why, holder: who() }),
    }
}

/// The name a descriptor is called by in messages.
pub fn fd_label(fd: RawFd) -> String {
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(p) => format!("{} (fd {fd})", p.display()),
        Err(_) => format!("fd {fd}"),
    }
}

fn dotlock_named(req: &Request, path: &Path, rep: &mut dyn Report) -> Result<Outcome> {
    let owner = req.owner;
    let start = Instant::now();
    super::owner_alive(owner)?;
    let rec = Holder::new(holder::KIND_DOTLOCK, owner, None);
    let got = take_dotlock(req, path, &rec, rep)?;
    match got {
        Ok(_) => {
            let waited = start.elapsed();
            rep.taken(
                &req.label,
                &format!("named dot-lock (link) for owner pid {owner}"),
                waited,
            );
            Ok(Outcome::Taken { waited })
        }
        Err(why) => dot_denied(path, why),
    }
}

fn named_mode(req: &Request, path: &Path, rep: &mut dyn Report) -> Result<Outcome> {
    let owner = req.owner;
    // A NAME's file follows the old library's file protocol (`compat`).
    let compat = (!super::names_a_path(&req.label)).then_some(req.compat_rule());
    let got = named::acquire(path, req.wait.start(), owner, None, compat, &mut |f| {
        rep.waiting(&req.label, &holder::describe_kernel_holder(f))
    })?;
    match got {
        Ok(t) => {
            rep.taken(
                &req.label,
                &format!(
                    "named kernel flock, holder pid {} for owner pid {owner}",
                    t.holder_pid
                ),
                t.waited,
            );
            Ok(Outcome::Taken { waited: t.waited })
        }
        Err(why) => {
            let holder = holder::describe_lock_file(path);
            Ok(Outcome::Denied { why, holder })
        }
    }
}
