//! The command-line front end: the applet table, multicall dispatch, error
//! printing and self-timing.
//!
//! [`APPLETS`] is the single list of applets. It drives dispatch (on argv[0]'s
//! file name, as a symlink, or on the first argument, as `ffkit APPLET`),
//! `ffkit --list`, the root `--help`, and the generators of man pages,
//! completions and help golden tests. Only the chosen applet's clap
//! definition is built on a call, which keeps start-up cheap.
//!
//! Each applet module exposes `command()` (its clap definition) and `run()`;
//! `run` turns the matches into a plain args struct before any logic runs.

use crate::metrics::Op;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Command};
use rustix::fs::{Mode, OFlags};

use crate::cache::Cache;
use crate::config::{ChosenDir, Config, DirOrigin};
use crate::error::{Error, ExitKind, Result};

mod cache_batch;
mod cache_evict;
mod cache_read;
mod cache_run;
mod cache_size;
mod cache_write;
pub mod docs;
mod flock;
pub mod init;
pub mod install_links;
mod lock_acquire;
mod lock_args;
mod lock_release;
mod lock_status;
mod perf_metrics;
pub(crate) mod progress;
/// Whether and when `install-links` links an applet; it also picks the
/// applet's man page name and whether it is listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPolicy {
    /// Listed (`--list`, root help) and linked by every `install-links`.
    Default,
    /// A persona named after a system tool (`flock`): unlisted, reached
    /// only through a symlink of its name, which `install-links` makes only
    /// with `--persona NAME`, so ffkit never shadows a system tool unless
    /// asked to.
    Persona,
    /// Listed but never linked: run it as `ffkit APPLET` (`init`,
    /// `install-links`). Its man page is `ffkit-NAME.1` and it has no
    /// completions of its own (ffkit's cover it).
    Never,
}

/// A call an applet's own parser has already read: run it.
pub type Parsed = Box<dyn FnOnce(&mut Ctx) -> Result<ExitCode>>;

/// How an applet's command line is read. The clap definition serves its
/// help, man page and completions in every case.
#[derive(Clone, Copy)]
pub enum Argv {
    /// clap parses it (almost every applet).
    Clap,
    /// The applet parses its own command line as the tool it stands in for
    /// does (the flock persona: getopt_long's rules and sysexits codes).
    Own(fn(&[OsString], &mut Ctx) -> Result<ExitCode>),
    /// A hand parser takes the applet's usual calls, where clap would cost
    /// more than the rest of the call (cache-run's hit: docs/cache-run.md,
    /// "Speed"; lock-acquire's command mode: docs/redis.md, "Command
    /// mode"); anything it does not take (`None`) goes to clap.
    Fast(fn(&[OsString]) -> Option<Parsed>),
}

/// One applet: its name (the symlink name and the subcommand), its clap
/// definition, how its argv is read, its entry point, the operation name
/// its own run is recorded under in the metrics log (docs/metrics.md), if
/// any, its link policy and the examples of its man page.
pub struct Applet {
    pub name: &'static str,
    pub command: fn() -> Command,
    pub argv: Argv,
    pub run: fn(&ArgMatches, &mut Ctx) -> Result<ExitCode>,
    pub metric: Option<crate::metrics::Op>,
    pub link: LinkPolicy,
    /// The EXAMPLES section of its man page (`docs.rs`); a test in the
    /// xtask crate fails when it is empty.
    pub examples: &'static [docs::Example],
}

impl Applet {
    /// Listed by `--list` and the root help: every applet but a persona.
    pub fn listed(&self) -> bool {
        self.link != LinkPolicy::Persona
    }

    /// The man page, without `.1`: its own name when it is linked by default
    /// (`cache-size.1`), else `ffkit-NAME` (`ffkit-init.1`, `ffkit-flock.1`),
    /// so ffkit never installs a page over a system tool's (flock(1)) or a
    /// generic name (init(1)).
    pub fn man_page(&self) -> String {
        match self.link {
            LinkPolicy::Default => self.name.to_string(),
            LinkPolicy::Persona | LinkPolicy::Never => format!("ffkit-{}", self.name),
        }
    }
}

/// Every applet, in the order `--list` prints them.
pub static APPLETS: &[Applet] = &[
    Applet {
        name: "cache-size",
        command: cache_size::command,
        argv: Argv::Clap,
        run: cache_size::run,
        metric: Some(Op::GetCacheSize),
        link: LinkPolicy::Default,
        examples: docs::CACHE_SIZE,
    },
    Applet {
        name: "cache-write",
        command: cache_write::command,
        argv: Argv::Clap,
        run: cache_write::run,
        metric: Some(Op::WriteCache),
        link: LinkPolicy::Default,
        examples: docs::CACHE_WRITE,
    },
    Applet {
        name: "cache-read",
        command: cache_read::command,
        argv: Argv::Fast(cache_read::fast),
        run: cache_read::run,
        metric: Some(Op::ReadCache),
        link: LinkPolicy::Default,
        examples: docs::CACHE_READ,
    },
    Applet {
        name: "cache-batch",
        command: cache_batch::command,
        argv: Argv::Clap,
        run: cache_batch::run,
        metric: Some(Op::BatchWrite),
        link: LinkPolicy::Default,
        examples: docs::CACHE_BATCH,
    },
    Applet {
        name: "cache-evict",
        command: cache_evict::command,
        argv: Argv::Clap,
        run: cache_evict::run,
        metric: Some(Op::EnforceCacheLimits),
        link: LinkPolicy::Default,
        examples: docs::CACHE_EVICT,
    },
    Applet {
        name: "cache-run",
        command: cache_run::command,
        argv: Argv::Fast(cache_run::fast),
        run: cache_run::run,
        // Set per call: cache_run_hit, cache_run_miss or cache_run_refresh.
        metric: None,
        link: LinkPolicy::Default,
        examples: docs::CACHE_RUN,
    },
    Applet {
        name: "lock-acquire",
        command: lock_acquire::command,
        argv: Argv::Fast(lock_acquire::fast),
        run: lock_acquire::run,
        metric: Some(Op::LockAcquire),
        link: LinkPolicy::Default,
        examples: docs::LOCK_ACQUIRE,
    },
    Applet {
        name: "lock-release",
        command: lock_release::command,
        argv: Argv::Clap,
        run: lock_release::run,
        metric: Some(Op::LockRelease),
        link: LinkPolicy::Default,
        examples: docs::LOCK_RELEASE,
    },
    Applet {
        name: "lock-status",
        command: lock_status::command,
        argv: Argv::Clap,
        run: lock_status::run,
        metric: None,
        link: LinkPolicy::Default,
        examples: docs::LOCK_STATUS,
    },
    Applet {
        name: "flock",
        command: flock::command,
        argv: Argv::Own(flock::run_argv),
        run: flock::run,
        metric: None,
        link: LinkPolicy::Persona,
        examples: docs::FLOCK,
    },
    Applet {
        name: "init",
        command: init::command,
        argv: Argv::Clap,
        run: init::run,
        metric: None,
        link: LinkPolicy::Never,
        examples: docs::INIT,
    },
    Applet {
        name: "perf-metrics",
        command: perf_metrics::command,
        argv: Argv::Clap,
        run: perf_metrics::run,
        // Reading or writing the log must not add rows of its own.
        metric: None,
        link: LinkPolicy::Default,
        examples: docs::PERF_METRICS,
    },
    Applet {
        name: "install-links",
        command: install_links::command,
        argv: Argv::Clap,
        run: install_links::run,
        metric: None,
        link: LinkPolicy::Never,
        examples: docs::INSTALL_LINKS,
    },
];

/// What an applet's run gets besides its matches.
pub struct Ctx {
    /// How this call names itself in messages: `ffkit cache-size` or, through
    /// a symlink, `cache-size`.
    pub prog: String,
    pub cfg: Config,
    /// The operation name recorded for this run; an applet may change it
    /// (e.g. `cache-batch --read` records `batch_read`) or clear it.
    pub metric: Option<crate::metrics::Op>,
    /// The cache dir whose default metrics log receives this run's row.
    pub metric_dir: Option<PathBuf>,
    /// The duration to record instead of the whole run's (e.g. lock-acquire
    /// in command mode records the wait for the lock, not the command).
    pub metric_duration: Option<Duration>,
    /// Where the applet's standard output goes.
    pub out: Sink,
    /// Where the applet's standard input comes from.
    pub input: Input,
    /// `init` only (it runs whatever the environment holds): the error of
    /// the namespace's own settings, which `init --resolve` reports.
    pub namespace_error: Option<Error>,
    /// A shell function's call ([`FN_DIR_ARG`], or the builtin's): its
    /// `--dir` is the namespace's dir the function picked, checked as a
    /// dir ffkit picks (docs/cache.md, "Which dir"), not as one the user
    /// named.
    pub fn_dir: bool,
}

/// Where an applet's standard output goes: the process's stdout (the
/// binary), or memory (the bash builtin, which writes it to descriptor 1
/// once before returning, or assigns it to a shell variable for `-v VAR`).
pub enum Sink {
    Stdout,
    Buffer(Vec<u8>),
}

/// Room for `n` more bytes in the builtin's output buffer, or an error:
/// a value larger than the memory the shell may have (`ulimit -v`) must
/// fail the call (`cannot write standard output: out of memory`, exit 1),
/// not abort the shell, as a failed allocation does.
fn reserve(v: &mut Vec<u8>, n: usize) -> io::Result<()> {
    v.try_reserve(n)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))
}

// The one writer of the process's standard output (clippy.toml).
#[allow(clippy::disallowed_methods)]
impl Write for Sink {
    // A non-blocking stdout (EAGAIN) is waited for, never an error: a
    // value was cut at the pipe's 64 KiB and the call failed with exit 1,
    // where the builtin's write waited (`fsutil::wait_writable`, the one
    // rule of both). A failed `write` consumed nothing of `buf`, so it is
    // given again.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout => loop {
                match io::stdout().lock().write(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        crate::fsutil::wait_writable(rustix::stdio::stdout());
                    }
                    r => return r,
                }
            },
            Sink::Buffer(v) => {
                reserve(v, buf.len())?;
                v.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                while !buf.is_empty() {
                    match self.write(buf) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => buf = &buf[n..],
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Sink::Buffer(v) => {
                reserve(v, buf.len())?;
                v.extend_from_slice(buf);
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout => loop {
                match io::stdout().flush() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        crate::fsutil::wait_writable(rustix::stdio::stdout());
                    }
                    r => return r,
                }
            },
            Sink::Buffer(_) => Ok(()),
        }
    }
}

/// Where an applet's standard input comes from. `Stdin` is the process's
/// descriptor 0, read through one buffer (the binary). `Fd0` reads
/// descriptor 0 through a buffer that lives
/// only for the call: inside bash, bytes std's process-wide buffer kept
/// from one call would otherwise be handed to the next call, which may have
/// another standard input. `Bytes` is data the builtin already has (a
/// wrapper's value argument).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Stdin,
    Fd0,
    Bytes(Vec<u8>),
}

/// Descriptor 0, unbuffered: EINTR retried, EAGAIN waited for, EBADF the
/// end (the one reader of descriptor 0, the binary's and the builtin's).
struct Fd0;

impl Read for Fd0 {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match rustix::io::read(rustix::stdio::stdin(), &mut *buf) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => {}
                // A closed descriptor 0 (`<&-`) reads as empty, as the
                // binary's does: its start-up opens /dev/null there
                // ([`startup`]; docs/shell.md, "Output").
                Err(rustix::io::Errno::BADF) => return Ok(0),
                // A non-blocking descriptor 0 whose writer is behind.
                Err(rustix::io::Errno::AGAIN) => {
                    crate::fsutil::wait_readable(rustix::stdio::stdin());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Ctx {
    /// One line on stderr, prefixed with the program name.
    pub fn note(&self, msg: impl std::fmt::Display) {
        let _ = writeln!(io::stderr().lock(), "{}: {}", self.prog, one_line(&msg));
    }

    /// A debug line on stderr when `FF_DEBUG=true`.
    pub fn debug(&self, msg: impl std::fmt::Display) {
        if self.cfg.debug {
            self.note(format_args!("debug: {msg}"));
        }
    }

    /// Writes `bytes` to the applet's standard output.
    pub fn write_out(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("cannot write", "standard output", e))
    }

    /// The bytes a caller gave as the applet's standard input
    /// ([`Input::Bytes`]: the builtin's value argument), taken whole; `None`
    /// for a real standard input. A value already in memory is written by
    /// one `write` and is never streamed through a reader's buffer (which
    /// cost the builtin's write an 8 KiB buffer zeroed and a copy).
    pub fn given_bytes(&mut self) -> Option<Vec<u8>> {
        match &mut self.input {
            Input::Bytes(b) => Some(std::mem::take(b)),
            Input::Stdin | Input::Fd0 => None,
        }
    }

    /// The applet's standard input (the one reader of it: clippy.toml).
    #[allow(clippy::disallowed_methods)]
    pub fn stdin(&mut self) -> Box<dyn BufRead> {
        match &mut self.input {
            // Descriptor 0 through the same reader as the builtin's (EINTR,
            // EAGAIN and EBADF answered alike), buffered: the binary reads
            // it once, so no bytes are left behind for anyone.
            Input::Stdin => Box::new(io::BufReader::new(Fd0)),
            Input::Fd0 => Box::new(io::BufReader::new(Fd0)),
            Input::Bytes(b) => Box::new(io::Cursor::new(std::mem::take(b))),
        }
    }

    /// The cache of every cache applet: the dir for `--dir` (if given),
    /// checked (`Cache::open`), remembered for self-timing, with a note on
    /// stderr when a wait for its lock starts and stderr is a terminal.
    pub fn cache(&mut self, explicit: Option<&Path>) -> Result<Cache> {
        let chosen = match explicit {
            Some(d) if self.fn_dir => ChosenDir {
                path: d.to_path_buf(),
                origin: DirOrigin::Functions,
            },
            _ => self.cfg.choose_cache_dir(explicit)?,
        };
        self.debug(format_args!(
            "cache dir {} (from {})",
            chosen.path.display(),
            chosen.origin.describe()
        ));
        let dir = chosen.path.clone();
        let cache = Cache::open(chosen, &self.cfg).inspect_err(|_| {
            // A refused dir gets no row, neither in it nor in another log.
            self.metric = None;
        })?;
        self.metric_dir = Some(dir);
        // Whether stderr is a terminal is asked only when a wait is long
        // enough to announce, not on every call.
        let prog = self.prog.clone();
        let note = Box::new(move |lock: &Path, timeout: Duration| {
            if io::stderr().is_terminal() {
                let _ = writeln!(
                    io::stderr().lock(),
                    "{prog}: waiting for the cache lock {} (another process holds it; giving up after {} s, LOCK_TIMEOUT)",
                    lock.display(),
                    timeout.as_secs_f64()
                );
            }
        }) as crate::cache::WaitNote;
        Ok(cache.with_wait_note(Some(note)))
    }

    /// The cache of this call: the remote backend `--backend` (else
    /// `FFKIT_BACKEND`) names, else the local dir opened as [`Ctx::cache`]
    /// opens it (`cache::Store` decides; the applet never asks which).
    pub fn store(
        &mut self,
        dir: Option<&Path>,
        backend: Option<&str>,
    ) -> Result<crate::cache::Store> {
        if let Some(s) = crate::cache::Store::remote(&self.cfg, backend, dir)? {
            return Ok(s);
        }
        Ok(crate::cache::Store::Local(self.cache(dir)?))
    }
}

/// An exit status: std's `ExitCode` cannot be read back as a number, and
/// the binary returns it from a C `main` (see `src/main.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitCode(u8);

impl ExitCode {
    pub const SUCCESS: ExitCode = ExitCode(0);
    pub const FAILURE: ExitCode = ExitCode(1);

    pub fn code(self) -> u8 {
        self.0
    }
}

impl From<u8> for ExitCode {
    fn from(code: u8) -> Self {
        ExitCode(code)
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.0)
    }
}

/// The process set-up Rust's runtime would do that ffkit relies on, for a
/// binary that skips the runtime's entry point (see `src/main.rs`): SIGPIPE
/// ignored, so writing to a closed pipe is an error ffkit handles quietly
/// instead of a kill; and descriptors 0, 1 and 2 open (on `/dev/null` if the
/// caller closed them), so a file ffkit opens can never become its stdout.
pub fn startup() {
    // No thread exists yet.
    crate::fsutil::ignore_sigpipe_at_start();
    // open(2) returns the lowest free descriptor: while that is 0, 1 or 2 it
    // fills a hole the caller left (and stays open, as stdin/stdout/stderr);
    // the first one above 2 means there is none left and is closed again.
    // Not close-on-exec, so the commands ffkit runs inherit it too.
    while let Ok(fd) = rustix::fs::open(c"/dev/null", OFlags::RDWR, Mode::empty()) {
        if fd.as_raw_fd() > 2 {
            break;
        }
        let _ = fd.into_raw_fd();
    }
}

/// The whole program: picks the applet, runs it, prints any error as one
/// line, and returns the exit code. `main` is this and nothing else. The
/// binary also serves as a named lock's holder: `lock-acquire NAME`
/// re-executes it with [`crate::lock::named::HOLDER_ARG`].
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    crate::lock::named::this_binary_serves_holders();
    if args
        .get(1)
        .is_some_and(|a| a == crate::lock::named::HOLDER_ARG)
    {
        return match crate::lock::named::serve_holder(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report("ffkit", &e),
        };
    }
    run_with(
        args,
        &|k| std::env::var_os(k),
        &mut Sink::Stdout,
        Input::Stdin,
    )
}

/// What a call names: an applet and the name it prints in messages, or
/// (`None`) the root command. `args` loses a leading `ffkit` when the applet
/// is its first argument.
pub fn pick(args: &mut Vec<OsString>) -> Option<(&'static Applet, String)> {
    if args.is_empty() {
        args.push(OsString::from("ffkit"));
    }
    let stem = file_stem(&args[0]);
    if let Some(a) = find(&stem) {
        Some((a, stem))
    } else if let Some(a) = args.get(1).and_then(|s| s.to_str()).and_then(find) {
        args.remove(0);
        Some((a, format!("ffkit {}", a.name)))
    } else {
        None
    }
}

/// One call, the binary's or the bash builtin's: `env` looks variables up
/// (the process environment, or the shell's own variables), `out` receives
/// standard output, which is flushed before this returns.
pub fn run_with(
    mut args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<OsString>,
    out: &mut Sink,
    input: Input,
) -> ExitCode {
    let start = Instant::now();
    // Only in the `ffkit --fn-dir APPLET` form: through a symlink named
    // after an applet, the first argument is the applet's own.
    let fn_dir = args.get(1).is_some_and(|a| a == FN_DIR_ARG)
        && args.first().is_none_or(|a0| find(&file_stem(a0)).is_none());
    if fn_dir {
        args.remove(1);
    }
    let Some((applet, prog)) = pick(&mut args) else {
        return root(&args, out);
    };
    let code = run_applet(applet, &prog, &args, start, fn_dir, env, out, input);
    flush_out(&prog, code, out)
}

/// `ffkit --fn-dir APPLET …`, hidden: the shell functions' calls (the
/// wrappers' fallback, the builtin's in-process ones). Their `--dir` is the
/// namespace's dir, which the function picked: [`Ctx::fn_dir`].
pub const FN_DIR_ARG: &str = "--fn-dir";

/// What identifies this build to the shell loader: the version and a
/// fingerprint of the shell wrappers it embeds. The bash builtin and the
/// binary each carry the one they were built with; the loader falls back to
/// the binary when they differ (docs/shell.md, "The bash builtin").
pub fn build_id() -> String {
    format!(
        "{}+{:016x}",
        env!("CARGO_PKG_VERSION"),
        fnv1a(init::WRAPPERS.as_bytes())
    )
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// Looks an applet up by name.
pub(crate) fn find(name: &str) -> Option<&'static Applet> {
    APPLETS.iter().find(|a| a.name == name)
}

fn file_stem(argv0: &OsStr) -> String {
    Path::new(argv0)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The applet's clap definition, named as it was invoked.
pub fn applet_command(applet: &Applet, prog: &str) -> Command {
    (applet.command)()
        .name(applet.name)
        .bin_name(prog)
        .version(env!("CARGO_PKG_VERSION"))
}

/// The applets' clap definitions built so far in this process, by applet
/// and the name it was invoked as. Building a `Command` costs more than
/// parsing with it, and a long-lived caller (the bash builtin) parses
/// thousands of calls; a `Command` is immutable once built, so a forked
/// copy is as good as the original.
static COMMANDS: std::sync::Mutex<Vec<(&'static str, String, Command)>> =
    std::sync::Mutex::new(Vec::new());

/// Parses `args` with the applet's definition, built once per process.
fn parse(
    applet: &'static Applet,
    prog: &str,
    args: &[OsString],
) -> clap::error::Result<ArgMatches> {
    let mut cache = COMMANDS.lock().unwrap_or_else(|p| p.into_inner());
    let i = match cache
        .iter()
        .position(|(name, p, _)| *name == applet.name && p == prog)
    {
        Some(i) => i,
        None => {
            cache.push((applet.name, prog.to_string(), applet_command(applet, prog)));
            cache.len() - 1
        }
    };
    cache[i].2.try_get_matches_from_mut(args)
}

#[allow(clippy::too_many_arguments)]
fn run_applet(
    applet: &'static Applet,
    prog: &str,
    args: &[OsString],
    start: Instant,
    fn_dir: bool,
    env: &dyn Fn(&str) -> Option<OsString>,
    out: &mut Sink,
    input: Input,
) -> ExitCode {
    let parsed = match applet.argv {
        Argv::Clap => None,
        Argv::Own(run) => {
            return run_parsed(applet, prog, start, fn_dir, env, out, input, &mut |ctx| {
                run(args, ctx)
            });
        }
        Argv::Fast(parse) => parse(args),
    };
    if let Some(run) = parsed {
        let mut run = Some(run);
        return run_parsed(
            applet,
            prog,
            start,
            fn_dir,
            env,
            out,
            input,
            &mut |ctx| match run.take() {
                Some(run) => run(ctx),
                None => Ok(ExitCode::FAILURE),
            },
        );
    }
    let matches = match parse(applet, prog, args) {
        Ok(m) => m,
        Err(e) => return clap_exit(prog, e, out),
    };
    // The shell lock functions' calls (`--function FUNC`, hidden: the
    // fallback's and zsh's): every line in the function's name, as the
    // builtin's functions print it, a bad setting's and a denial's too
    // (docs/locks.md, "Messages").
    let function_prog = matches!(applet.name, "lock-acquire" | "lock-release")
        .then(|| matches.get_one::<String>("function"))
        .flatten()
        .map(|f| crate::lock::function_prog(f));
    let prog = function_prog.as_deref().unwrap_or(prog);
    run_parsed(applet, prog, start, fn_dir, env, out, input, &mut |ctx| {
        (applet.run)(&matches, ctx)
    })
}

/// One of the calls the bash builtin's shell functions make most, in its
/// parts. [`run_direct`] runs it exactly as `ffkit APPLET ARGS` would
/// (configuration, output, error line, exit code, self-timing row), but
/// without building and parsing an argument list, which costs more than
/// the rest of such a call. The caller passes only values that parse (a
/// TTL that [`crate::units::parse_whole_seconds`] accepts, UTF-8 text);
/// anything else goes through [`run_with`], so clap words the error.
pub enum Direct {
    /// `cache-size --dir DIR`.
    CacheSize { dir: PathBuf },
    /// `cache-read --dir DIR [-q] -- KEY`.
    CacheRead {
        dir: PathBuf,
        key: OsString,
        quiet: bool,
        /// `--fn-newline`: one newline after a hit's value (what the shell
        /// function `read_cache_with_ttl` prints).
        newline: bool,
    },
    /// `cache-write --dir DIR --ttl TTL -- KEY -`: the value is the input.
    CacheWrite {
        dir: PathBuf,
        ttl: u64,
        key: OsString,
    },
    /// `perf-metrics record -- OP START END`.
    PerfRecord {
        op: String,
        start: String,
        end: String,
    },
}

/// Runs a [`Direct`] call; see [`run_with`] for `env`, `out` and `input`.
pub fn run_direct(
    call: Direct,
    env: &dyn Fn(&str) -> Option<OsString>,
    out: &mut Sink,
    input: Input,
) -> ExitCode {
    let start = Instant::now();
    let name = match &call {
        Direct::CacheSize { .. } => "cache-size",
        Direct::CacheRead { .. } => "cache-read",
        Direct::CacheWrite { .. } => "cache-write",
        Direct::PerfRecord { .. } => "perf-metrics",
    };
    let Some(applet) = find(name) else {
        return ExitCode::FAILURE;
    };
    let prog = format!("ffkit {name}");
    let mut call = Some(call);
    // Only the builtin's shell functions make these calls: fn_dir.
    let code = run_parsed(
        applet,
        &prog,
        start,
        true,
        env,
        out,
        input,
        &mut |ctx| match call.take() {
            Some(Direct::CacheSize { dir }) => cache_size::direct(dir, ctx),
            Some(Direct::CacheRead {
                dir,
                key,
                quiet,
                newline,
            }) => cache_read::direct(dir, key, quiet, newline, ctx),
            Some(Direct::CacheWrite { dir, ttl, key }) => cache_write::direct(dir, ttl, key, ctx),
            Some(Direct::PerfRecord { op, start, end }) => {
                perf_metrics::record_direct(op, start, end, ctx)
            }
            None => Ok(ExitCode::FAILURE),
        },
    );
    flush_out(&prog, code, out)
}

/// The part of a call after its arguments are parsed: the configuration,
/// With `FF_DEBUG=true`, one debug line naming a team config that exists
/// but cannot be used (the core's [`crate::namespace::team_config_problem`]),
/// for a call whose namespace it decides (a named lock's `lock-acquire`,
/// `lock-release`, `lock-status`; `init --resolve` for the fallback
/// functions; not the fallback's own `--prepare` and `--fd` calls, which
/// follow its `init --resolve`) when neither `FLOWFORGE_DEVELOPER` nor
/// `FFKIT_LOCK_DIR` makes it moot. The call still falls back to the legacy
/// namespace, its exit unchanged (docs/shell.md, "Namespace").
pub(crate) fn note_team_config(ctx: &Ctx) {
    if !ctx.cfg.debug || ctx.cfg.developer.is_some() || ctx.cfg.lock_dir.is_some() {
        return;
    }
    if let Ok(here) = crate::namespace::Here::now()
        && let Some(problem) = crate::namespace::team_config_problem(here.top())
    {
        ctx.debug(crate::namespace::team_config_note(&problem));
    }
}

/// the applet's run (`body`), the self-timing row and the error line.
#[allow(clippy::too_many_arguments)]
fn run_parsed(
    applet: &'static Applet,
    prog: &str,
    start: Instant,
    fn_dir: bool,
    env: &dyn Fn(&str) -> Option<OsString>,
    out: &mut Sink,
    input: Input,
    body: &mut dyn FnMut(&mut Ctx) -> Result<ExitCode>,
) -> ExitCode {
    // Every applet: a write past `ulimit -f` (a value, a temp, the index,
    // a holder record, a metrics row, a replayed or passed-through output
    // on stdout) fails with EFBIG, exit 8 and one line, as in the bash
    // builtin (which blocks SIGXFSZ around every call: it must not end the
    // shell), instead of SIGXFSZ ending the process (153). The applets
    // that start a command (cache-run, lock-acquire, flock, perf-metrics
    // time) start it through `fsutil::with_callers_mask`, so it inherits
    // the mask ffkit was started with, not this one (a blocked signal
    // survives exec; docs/hardening.md). Only for the binary's stdout: the
    // bash builtin (a `Sink::Buffer`) blocks SIGXFSZ and SIGPIPE around
    // its whole call already (its `entry`), and a second mask here cost
    // each of its calls 3 more system calls.
    if matches!(out, Sink::Stdout) {
        return crate::fsutil::without_signals(&[libc::SIGXFSZ], || {
            run_parsed_body(applet, prog, start, fn_dir, env, out, input, body)
        });
    }
    run_parsed_body(applet, prog, start, fn_dir, env, out, input, body)
}

#[allow(clippy::too_many_arguments)]
fn run_parsed_body(
    applet: &'static Applet,
    prog: &str,
    start: Instant,
    fn_dir: bool,
    env: &dyn Fn(&str) -> Option<OsString>,
    out: &mut Sink,
    input: Input,
    body: &mut dyn FnMut(&mut Ctx) -> Result<ExitCode>,
) -> ExitCode {
    let mut namespace_error = None;
    let cfg = match Config::from_lookup(env) {
        Ok(c) => c,
        // `init` reads no setting: it must print the functions whatever the
        // environment holds, so that each function, once defined, reports a
        // bad value itself (exit 12, one line) instead of every call being
        // "command not found" (docs/shell.md, "Bad settings").
        // `init --resolve` needs the namespace's settings: those alone, as
        // the shell has them, when they parse.
        Err(_) if applet.name == "init" => {
            let only = |k: &str| {
                crate::namespace::SETTINGS
                    .contains(&k)
                    .then(|| env(k))
                    .flatten()
            };
            match Config::from_lookup(only) {
                Ok(c) => c,
                Err(e) => {
                    namespace_error = Some(e);
                    match Config::from_lookup(|_: &str| None) {
                        Ok(c) => c,
                        Err(e) => return report(prog, &e),
                    }
                }
            }
        }
        Err(e) => return report(prog, &e),
    };
    let mut ctx = Ctx {
        prog: prog.to_string(),
        cfg,
        metric: applet.metric,
        metric_dir: None,
        metric_duration: None,
        out: std::mem::replace(out, Sink::Buffer(Vec::new())),
        input,
        namespace_error,
        fn_dir,
    };
    if matches!(applet.name, "lock-release" | "lock-status") {
        note_team_config(&ctx);
    }
    let result = body(&mut ctx);
    *out = std::mem::replace(&mut ctx.out, Sink::Buffer(Vec::new()));
    if let (true, Some(op)) = (ctx.cfg.perf_monitoring, ctx.metric) {
        let elapsed = ctx.metric_duration.unwrap_or_else(|| start.elapsed());
        let outcome = crate::metrics::record_self(&ctx.cfg, ctx.metric_dir.as_deref(), op, elapsed);
        ctx.debug(crate::metrics::self_note(op, &outcome, elapsed));
    }
    match result {
        Ok(code) => code,
        Err(e) => report(prog, &e),
    }
}

/// Prints one error line and returns its exit code. A broken pipe on stdout
/// is a quiet success, as `head` closing the pipe is not a failure.
/// One line, whatever the message quotes (a value or path with a newline).
pub fn one_line(msg: &impl std::fmt::Display) -> String {
    msg.to_string().replace('\n', "\\n").replace('\r', "\\r")
}

pub(crate) fn report(prog: &str, e: &Error) -> ExitCode {
    if let Error::Io { source, .. } = e
        && source.kind() == io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(io::stderr().lock(), "{prog}: {}", one_line(e));
    ExitCode::from(e.exit_code())
}

/// What a failed write of an applet's standard output means, for a writer
/// that is not [`Sink`] (the bash builtin writes its collected output
/// itself): the binary's one line and exit code (`>/dev/full`: exit 8,
/// `PROG: cannot write standard output: No space left on device`), and a
/// reader that stopped reading (EPIPE) or a closed descriptor 1 (EBADF: the
/// binary's start-up opens /dev/null there) a quiet success with `code`.
pub fn stdout_failed(prog: &str, code: u8, e: io::Error) -> u8 {
    if e.raw_os_error() == Some(libc::EBADF) {
        return code;
    }
    match report(prog, &Error::io("cannot write", "standard output", e)).code() {
        0 => code,
        c => c,
    }
}

fn flush_out(prog: &str, code: ExitCode, out: &mut Sink) -> ExitCode {
    match out.flush() {
        Ok(()) => code,
        // A call that failed has said so in its one line (a write that
        // failed leaves its bytes buffered, and this flush fails again).
        Err(_) if code != ExitCode::SUCCESS => code,
        Err(e) => report(prog, &Error::io("cannot write", "standard output", e)),
    }
}

/// Help and version go to stdout with exit 0; every other clap error
/// becomes one line on stderr with exit 2.
fn clap_exit(prog: &str, e: clap::Error, out: &mut Sink) -> ExitCode {
    use clap::error::ErrorKind as K;
    match e.kind() {
        // Lost output is an error like any other write's (`>/dev/full`: 8).
        K::DisplayHelp | K::DisplayVersion => match write!(out, "{}", e.render()) {
            Ok(()) => flush_out(prog, ExitCode::SUCCESS, out),
            Err(e) => report(prog, &Error::io("cannot write", "standard output", e)),
        },
        _ => {
            // clap's message may span lines (a list of missing arguments);
            // the contract wants one line, so join everything before "Usage:".
            let rendered = e.render().to_string();
            let msg = rendered
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect::<Vec<_>>()
                .join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            report(prog, &Error::Usage(format!("{msg} (see '{prog} --help')")))
        }
    }
}

/// The root command: the applets as subcommands, plus `--list`.
pub fn root_command() -> Command {
    Command::new("ffkit")
        .version(env!("CARGO_PKG_VERSION"))
        .about("FlowForge's cache, lock and metrics helpers as one native multicall binary")
        .long_about(
            "FlowForge's cache, lock and metrics helpers as one native multicall binary.\n\n\
             Run an applet as `ffkit APPLET ARGS...`, or through a symlink named after the \
             applet (`cache-size ARGS...`).",
        )
        .subcommand_required(false)
        .arg(
            Arg::new("list")
                .long("list")
                .action(ArgAction::SetTrue)
                .help("Print the applet names, one per line"),
        )
        .subcommands(
            APPLETS
                .iter()
                .map(|a| (a.command)().name(a.name).hide(!a.listed())),
        )
        .after_help(exit_status_text())
}

fn root(args: &[OsString], out: &mut Sink) -> ExitCode {
    let prog = "ffkit";
    let m = match root_command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return clap_exit(prog, e, out),
    };
    let written = if m.get_flag("list") {
        APPLETS
            .iter()
            .filter(|a| a.listed())
            .try_for_each(|a| writeln!(out, "{}", a.name))
    } else {
        write!(out, "{}", root_command().render_help())
    };
    match written {
        Ok(()) => flush_out(prog, ExitCode::SUCCESS, out),
        Err(e) => report(prog, &Error::io("cannot write", "standard output", e)),
    }
}

/// The EXIT STATUS text, generated from the error table.
pub(crate) fn exit_status_text() -> String {
    let mut s = String::from("Exit status:\n");
    for k in ExitKind::ALL {
        s.push_str(&format!(
            "  {:>2}  {:<22} {}\n",
            k.code(),
            k.name(),
            k.meaning()
        ));
    }
    s
}

/// `--dir DIR`, shared by every cache applet.
pub(crate) fn dir_arg() -> Arg {
    Arg::new("dir")
        .long("dir")
        .value_name("DIR")
        .value_parser(clap::value_parser!(PathBuf))
        .help("Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)")
}

/// `--backend URL`, shared by the lock and cache applets (docs/redis.md).
pub(crate) fn backend_arg() -> Arg {
    Arg::new("backend")
        .long("backend")
        .value_name("URL")
        .help("Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)")
}

/// The `--backend` an applet was given, for its args struct (the library
/// picks the backend: `lock::Locks`, `cache::Store`).
pub(crate) fn backend_flag(m: &ArgMatches) -> Option<String> {
    m.get_one::<String>("backend").cloned()
}

/// `--json`, shared by applets with a machine-readable report.
pub(crate) fn json_arg() -> Arg {
    Arg::new("json")
        .long("json")
        .action(ArgAction::SetTrue)
        .help("Print a JSON report")
}

/// `-q/--quiet`.
pub(crate) fn quiet_arg() -> Arg {
    Arg::new("quiet")
        .short('q')
        .long("quiet")
        .action(ArgAction::SetTrue)
        .help("Print no message on stderr; answer by exit code")
}

/// The `KEY` positional (raw bytes; validated by the cache's key rule).
pub(crate) fn key_arg() -> Arg {
    Arg::new("key")
        .value_name("KEY")
        .required(true)
        .value_parser(clap::value_parser!(OsString))
        .help("Entry key (no '/', control characters, leading '.' or trailing '.meta'; at most 250 bytes)")
}

/// `--ttl SECONDS`.
pub(crate) fn ttl_arg(help: &'static str) -> Arg {
    Arg::new("ttl")
        .long("ttl")
        .value_name("SECONDS")
        .allow_hyphen_values(true)
        .value_parser(|s: &str| crate::units::parse_whole_seconds(s))
        .help(help)
}
