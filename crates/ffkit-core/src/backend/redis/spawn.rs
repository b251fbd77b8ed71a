//! Command mode's spawn on Redis: the command is started by a `vfork`-like
//! `clone(CLONE_VM | CLONE_VFORK)` whose child resets only the signals
//! ffkit itself changed, then execs. glibc's `posix_spawn` (what std's
//! `Command::spawn` uses) cannot be told which signals have a handler: its
//! child queries and resets every one of the 64 (glibc 2.36: about 128
//! `rt_sigaction` calls), all while ffkit is suspended, on the lock
//! round's critical path (BENCHMARKS.md, "Issue 24's lock round, sixth
//! pass").
//!
//! The command starts exactly as std's spawn started it (glibc's
//! `posix_spawnp` with `POSIX_SPAWN_SETSIGMASK` empty and
//! `POSIX_SPAWN_SETSIGDEF` {SIGPIPE}): an empty signal mask; SIGPIPE and
//! each signal ffkit catches (the relay's, [`super::signals`]) at their
//! default; every other disposition as ffkit's caller left it (ffkit
//! installs no other handler, and an ignored signal stays ignored across
//! `exec`); the process group asked for; ffkit's environment with the
//! command's changes, sorted by name as std sorts it; ffkit's descriptors
//! but the close-on-exec ones; and the program found as `posix_spawnp`
//! finds it: a name holding a `/` is used as it is, any other is tried in
//! each directory of `PATH` (the command's, `/bin:/usr/bin` without one,
//! an empty entry the current directory), going on past a file it may not
//! execute (EACCES, reported if nothing else is found) or a missing one,
//! and stopping at any other error. Which error it was comes back to ffkit
//! through memory the child shares, as glibc's does.
//!
//! The child shares ffkit's memory and runs while ffkit is suspended
//! (`CLONE_VFORK`: until the `exec` succeeds or the child exits), so it
//! allocates nothing, writes only its own stack and the [`Job`]'s error
//! word, and calls only libc's system-call wrappers (`setpgid`,
//! `sigaction`, `sigprocmask`, `execve`, `_exit`), as glibc's own
//! `posix_spawn` child does. ffkit blocks every signal around the clone,
//! so no handler of ffkit's can run in the child before it has reset them:
//! the child unblocks signals only after the resets. (glibc's two internal
//! signals, which `pthread_sigmask` leaves unblocked, have no handler in
//! ffkit: it cancels no thread and changes no id.)
//!
//! The one `unsafe` function call per step is the libc call, which no safe
//! crate wraps for a child sharing its parent's memory.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow};

/// The child's stack, in bytes: its few frames (the child function and
/// libc's wrappers) need a small part of it.
const STACK_BYTES: usize = 64 << 10;

/// glibc's `_CS_PATH`: the search path without a `PATH` variable.
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// Everything the child needs, made before the clone (the child cannot
/// allocate). The pointers point into the `CString`s kept beside them.
struct Job {
    /// The files to try, in order.
    paths: Vec<CString>,
    /// `argv` and `envp`, each ending in a null pointer.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The process group to join (`setpgid(0, pgid)`; 0: its own).
    pgid: libc::pid_t,
    /// The signals to set to SIG_DFL.
    reset: Vec<libc::c_int>,
    /// The errno of the step that failed (0: the exec succeeded).
    err: AtomicI32,
}

/// A command started by [`spawn`]: our own child until [`Spawned::wait`]
/// has reaped it.
#[derive(Debug)]
pub(super) struct Spawned {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl Spawned {
    /// The command's pid.
    pub(super) fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// Waits for the command to exit and reaps it (once; later calls give
    /// the same status).
    pub(super) fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        let st = reap(self.pid)?;
        self.status = Some(st);
        Ok(st)
    }
}

/// Waits for our own child `pid` and reaps it.
fn reap(pid: libc::pid_t) -> io::Result<ExitStatus> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => {
                return Ok(ExitStatus::from_raw(st.as_raw() as libc::c_int));
            }
            Ok(None) => return Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn c_string(b: Vec<u8>) -> io::Result<CString> {
    CString::new(b).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// The files `posix_spawnp` would try for `prog` with the search path
/// `path` (module comment).
fn candidates(prog: &OsStr, path: Option<&OsStr>) -> io::Result<Vec<CString>> {
    let p = prog.as_bytes();
    if p.contains(&b'/') {
        return Ok(vec![c_string(p.to_vec())?]);
    }
    let path = path.map_or(DEFAULT_PATH, OsStr::as_bytes);
    path.split(|&b| b == b':')
        .map(|dir| {
            let mut f = Vec::with_capacity(dir.len() + 1 + p.len());
            if !dir.is_empty() {
                f.extend_from_slice(dir);
                f.push(b'/');
            }
            f.extend_from_slice(p);
            c_string(f)
        })
        .collect()
}

/// Starts `cmd` (its program, arguments and environment changes; nothing
/// else of a `Command` is used, and nothing else is set by command mode)
/// in process group `pgid` (`None`: a group of its own, as
/// `Command::process_group(0)`), with each of `caught` — the signals this
/// process has a handler for — and SIGPIPE back at their default (module
/// comment). A command that cannot be started is an error whose kind is
/// `NotFound` when no file was found, as std's.
pub(super) fn spawn(cmd: &Command, pgid: Option<u32>, caught: &[i32]) -> io::Result<Spawned> {
    let prog = cmd.get_program();
    if prog.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let mut args = Vec::with_capacity(1 + cmd.get_args().len());
    args.push(c_string(prog.as_bytes().to_vec())?);
    for a in cmd.get_args() {
        args.push(c_string(a.as_bytes().to_vec())?);
    }
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => env.insert(k.to_owned(), v.to_owned()),
            None => env.remove(k),
        };
    }
    let paths = candidates(prog, env.get(OsStr::new("PATH")).map(OsString::as_os_str))?;
    let vars = env
        .into_iter()
        .map(|(k, v)| {
            let mut b = k.into_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            c_string(b)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let mut reset = caught.to_vec();
    if !reset.contains(&libc::SIGPIPE) {
        reset.push(libc::SIGPIPE);
    }
    let job = Job {
        paths,
        argv: ptrs(&args),
        envp: ptrs(&vars),
        pgid: pgid.map_or(0, |g| g as libc::pid_t),
        reset,
        err: AtomicI32::new(0),
    };
    let mut stack: Vec<u128> = Vec::with_capacity(STACK_BYTES / 16);
    let top = stack.as_mut_ptr().wrapping_add(stack.capacity());
    // Every signal blocked until the child has reset ffkit's handlers: the
    // child inherits the mask.
    let old = SigSet::all().thread_swap_mask(SigmaskHow::SIG_SETMASK)?;
    // SAFETY: `child` runs on `stack` (16-byte aligned, its end passed as
    // the stack grows down), which nothing else uses and which lives past
    // the call; CLONE_VFORK suspends this thread until the child has
    // exec'd or exited, so `job` (and the strings its pointers point into)
    // outlive every use the child makes of them; the child allocates
    // nothing and makes only async-signal-safe libc calls (module comment).
    let pid = unsafe {
        libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(&job).cast_mut().cast(),
        )
    };
    let clone_err = io::Error::last_os_error();
    let _ = old.thread_set_mask();
    drop(stack);
    if pid <= 0 {
        return Err(clone_err);
    }
    match job.err.load(Ordering::SeqCst) {
        0 => Ok(Spawned { pid, status: None }),
        e => {
            let _ = reap(pid);
            Err(io::Error::from_raw_os_error(e))
        }
    }
}

/// The errno of the last failed libc call in the child (this thread's,
/// the suspended parent's: shared memory, nobody else reads it meanwhile).
fn errno() -> libc::c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .filter(|&e| e != 0)
        .unwrap_or(libc::EIO)
}

/// The child: joins the group, resets the signals, unblocks them and
/// execs; on a failure it stores the errno in the job and exits 127.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Job` `spawn` passed, alive and unchanged while
    // this child runs (the parent is suspended: CLONE_VFORK).
    let job = unsafe { &*arg.cast_const().cast::<Job>() };
    let fail = |e: libc::c_int| -> libc::c_int {
        job.err.store(e, Ordering::SeqCst);
        // SAFETY: _exit ends this process at once (no atexit handler, no
        // flush of buffers the parent owns).
        unsafe { libc::_exit(127) }
    };
    // SAFETY: a plain system-call wrapper.
    if unsafe { libc::setpgid(0, job.pgid) } != 0 {
        return fail(errno());
    }
    // SAFETY: an all-zero sigaction is SIG_DFL with no flags and an empty
    // mask, a valid value of the C struct.
    let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    dfl.sa_sigaction = libc::SIG_DFL;
    for &s in &job.reset {
        // SAFETY: SIG_DFL installs no handler; the old action is not asked.
        unsafe { libc::sigaction(s, &raw const dfl, std::ptr::null_mut()) };
    }
    // SAFETY: an all-zero sigset_t is the empty set.
    let none: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a plain system-call wrapper on a valid set.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &raw const none, std::ptr::null_mut()) } != 0 {
        return fail(errno());
    }
    let mut err = libc::ENOENT;
    let mut denied = false;
    for p in &job.paths {
        // SAFETY: `p` and both arrays are NUL-terminated and end in a null
        // pointer, built by `spawn` and alive (above).
        unsafe { libc::execve(p.as_ptr(), job.argv.as_ptr(), job.envp.as_ptr()) };
        err = errno();
        match err {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return fail(err),
        }
    }
    fail(if denied { libc::EACCES } else { err })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_follows_posix_spawnp() {
        let c = |p: &str, path: Option<&str>| {
            candidates(OsStr::new(p), path.map(OsStr::new))
                .unwrap()
                .into_iter()
                .map(|c| c.into_string().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(c("./x", Some("/a:/b")), ["./x"]);
        assert_eq!(c("/bin/x", None), ["/bin/x"]);
        assert_eq!(c("x", Some("/a::/b/")), ["/a/x", "x", "/b//x"]);
        assert_eq!(c("x", None), ["/bin/x", "/usr/bin/x"]);
        assert_eq!(c("x", Some("")), ["x"]);
    }

    #[test]
    fn a_command_runs_with_its_arguments_and_environment() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("test \"$1-$SPAWN_T\" = a-b && exit 7")
            .arg("sh")
            .arg("a")
            .env("SPAWN_T", "b");
        let mut s = spawn(&cmd, None, &[]).unwrap();
        assert_eq!(s.wait().unwrap().code(), Some(7));
        assert_eq!(s.wait().unwrap().code(), Some(7));
    }

    #[test]
    fn a_missing_program_is_not_found_and_a_directory_is_denied() {
        let e = spawn(&Command::new("ffkit-no-such-program-x"), None, &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = spawn(&Command::new(""), None, &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = spawn(&Command::new("/"), None, &[]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }
}
