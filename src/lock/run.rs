//! Running a command while holding a lock (command mode).
//!
//! The lock's descriptor is close-on-exec unless the caller asks to
//! `inherit` it, so by default the lock ends when the command ends even if
//! the command left a background child behind; with `inherit` the command
//! and its children share the lock (flock(1)'s behaviour). While the
//! command runs, ffkit ignores the terminal's SIGINT/SIGQUIT (the command
//! gets them and decides), so a Ctrl-C cannot drop the lock under a command
//! that survives it.

use std::ffi::OsString;
use std::io;
use std::os::unix::io::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

/// What to run.
#[derive(Clone, Debug)]
pub enum Program {
    /// A program and its arguments.
    Argv(Vec<OsString>),
    /// `SHELL -c TEXT` (flock(1)'s `-c`).
    Shell { shell: OsString, text: OsString },
}

impl Program {
    fn command(&self) -> Option<Command> {
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

/// Lets `fd` survive exec (or not).
pub fn set_inherit(fd: RawFd, inherit: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let new = if inherit {
            flags & !libc::FD_CLOEXEC
        } else {
            flags | libc::FD_CLOEXEC
        };
        if new != flags && libc::fcntl(fd, libc::F_SETFD, new) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn not_started(e: io::Error) -> Ended {
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Ended::NotStarted(code, e)
}

/// Runs `prog` and waits for it.
pub fn run(prog: &Program) -> Ended {
    let Some(mut cmd) = prog.command() else {
        return not_started(io::Error::from(io::ErrorKind::NotFound));
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return not_started(e),
    };
    // SAFETY: setting signal dispositions to SIG_IGN; after the spawn, so
    // the command keeps the defaults.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    match child.wait() {
        Ok(st) => Ended::Status(status_code(st)),
        Err(e) => Ended::NotStarted(1, e),
    }
}

/// Replaces this process with `prog` (`-F`); returns only on failure.
pub fn exec(prog: &Program) -> Ended {
    match prog.command() {
        Some(mut c) => not_started(c.exec()),
        None => not_started(io::Error::from(io::ErrorKind::NotFound)),
    }
}

/// The shell's convention: the exit code, or 128 + the signal number.
pub fn status_code(st: std::process::ExitStatus) -> u8 {
    if let Some(c) = st.code() {
        return (c & 0xff) as u8;
    }
    match st.signal() {
        Some(s) => (128 + s).min(255) as u8,
        None => 1,
    }
}
