//! Running a child command as a shell runs a foreground job: the one
//! child-running helper of the crate, used by command-mode locks
//! (`lock-acquire FILE -- CMD`) and by `perf-metrics time`.
//!
//! - Exit status: the command's own, 128+N when killed by signal N, 127
//!   when it is not found, 126 when it cannot be executed (docs/locks.md,
//!   "Command mode").
//! - While it runs, ffkit ignores SIGINT/SIGQUIT (the child gets them from
//!   the terminal and decides), so a Ctrl-C cannot make ffkit drop a lock
//!   or a measurement under a command that survives it.
//! - A caller may ask for a heartbeat: a callback run every so often while
//!   the child runs (dot-locks refresh their mtime with it). The wait is a
//!   poll(2) on a pidfd of the child, so no thread and no signal is used.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::time::Duration;

/// What to run.
#[derive(Clone, Debug)]
pub enum Program {
    /// A program and its arguments.
    Argv(Vec<OsString>),
    /// `SHELL -c TEXT` (flock(1)'s `-c`).
    Shell { shell: OsString, text: OsString },
}

impl Program {
    /// The process to start (`None`: an empty argv). The one place a
    /// [`Program`] becomes a [`Command`], for every backend; it starts with
    /// the caller's signal dispositions ([`crate::fsutil::as_callers_command`]).
    pub(crate) fn command(&self) -> Option<Command> {
        let mut c = self.bare()?;
        crate::fsutil::as_callers_command(&mut c);
        Some(c)
    }

    fn bare(&self) -> Option<Command> {
        match self {
            Program::Argv(v) => {
                let (first, rest) = v.split_first()?;
                let mut c = Command::new(first);
                c.args(rest);
                Some(c)
            }
            Program::Shell { shell, text } => {
                let mut c = Command::new(shell);
                c.arg("-c").arg(text);
                Some(c)
            }
        }
    }

    /// The program name for messages.
    pub fn name(&self) -> String {
        match self {
            Program::Argv(v) => v
                .first()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Program::Shell { shell, .. } => shell.to_string_lossy().into_owned(),
        }
    }

    /// The whole command line, for holder records.
    pub fn text(&self) -> String {
        match self {
            Program::Argv(v) => v
                .iter()
                .map(|s| s.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            Program::Shell { text, .. } => text.to_string_lossy().into_owned(),
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Ended {
    /// The command's exit status, or 128+signal.
    Status(u8),
    /// It could not be started: 127 (not found) or 126 (not executable),
    /// with the reason.
    NotStarted(u8, io::Error),
}

impl Ended {
    /// The exit code a shell would report.
    pub fn code(&self) -> u8 {
        match self {
            Ended::Status(c) | Ended::NotStarted(c, _) => *c,
        }
    }
}

/// Options of [`run`].
#[derive(Default)]
pub struct Options<'a> {
    /// Called once with the child's pid right after it started.
    pub on_spawn: Option<&'a mut dyn FnMut(u32)>,
    /// Called every `.0` while the child runs.
    pub heartbeat: Option<(Duration, &'a mut dyn FnMut())>,
    /// Keep SIGINT/SIGQUIT's dispositions while the child runs, so a ^C
    /// ends this process too, as it ends flock(1) (the persona).
    pub interruptible: bool,
}

fn not_started(e: io::Error) -> Ended {
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Ended::NotStarted(code, e)
}

/// Runs `prog` and waits for it (see the module doc).
pub fn run(prog: &Program, opts: Options<'_>) -> Ended {
    let Some(mut cmd) = prog.command() else {
        return not_started(io::Error::from(io::ErrorKind::NotFound));
    };
    let mut child = match crate::fsutil::with_callers_mask(|| cmd.spawn()) {
        Ok(c) => c,
        Err(e) => return not_started(e),
    };
    if !opts.interruptible {
        ignore_terminal_signals();
    }
    if let Some(f) = opts.on_spawn {
        f(child.id());
    }
    if let Some((every, beat)) = opts.heartbeat {
        wait_beating(child.id(), every, beat);
    }
    match child.wait() {
        Ok(st) => Ended::Status(status_code(st)),
        Err(e) => Ended::NotStarted(1, e),
    }
}

/// Like a shell waiting for a foreground job: ^C and ^\ go to the child
/// (same process group); we stay to pass on its end. After the spawn, so
/// the child keeps the default dispositions.
fn ignore_terminal_signals() {
    crate::fsutil::ignore_signals(&[libc::SIGINT, libc::SIGQUIT]);
}

/// Sleeps in poll(2) on a pidfd of `pid` until it exits, calling `beat`
/// every `every`. Without pidfd support, beats on a plain sleep until the
/// process is gone (it stays a zombie until reaped, so its pid is ours).
fn wait_beating(pid: u32, every: Duration, beat: &mut dyn FnMut()) {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let ts = Timespec {
        tv_sec: every.as_secs() as i64,
        tv_nsec: i64::from(every.subsec_nanos()),
    };
    match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => loop {
            let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(0) => beat(),
                Ok(_) => return,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
        },
        Err(_) => {
            while super::holder::same_process(pid, super::holder::start_time(pid)) {
                std::thread::sleep(every);
                beat();
            }
        }
    }
}

/// Replaces this process with `prog` (`-F`); returns only on failure.
pub fn exec(prog: &Program) -> Ended {
    match prog.command() {
        Some(mut c) => not_started(crate::fsutil::with_callers_mask(|| c.exec())),
        None => not_started(io::Error::from(io::ErrorKind::NotFound)),
    }
}

/// The shell's convention: the exit code, or 128 + the signal number.
pub(crate) fn status_code(st: std::process::ExitStatus) -> u8 {
    if let Some(c) = st.code() {
        return (c & 0xff) as u8;
    }
    match st.signal() {
        Some(s) => (128 + s).min(255) as u8,
        None => 1,
    }
}

/// Lets the descriptor survive exec (or not).
pub fn set_inherit(fd: std::os::unix::io::BorrowedFd<'_>, inherit: bool) -> io::Result<()> {
    use rustix::io::FdFlags;
    let flags = rustix::io::fcntl_getfd(fd)?;
    let new = if inherit {
        flags - FdFlags::CLOEXEC
    } else {
        flags | FdFlags::CLOEXEC
    };
    if new != flags {
        rustix::io::fcntl_setfd(fd, new)?;
    }
    Ok(())
}
