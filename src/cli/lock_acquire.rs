//! `lock-acquire`: take a lock in one of three modes — run a command under
//! it (`LOCKFILE -- CMD`, `-c`), lock the caller's descriptor (`--fd N`), or
//! hold a named lock until `lock-release NAME` or the owner's exit — with
//! kernel locks by default or `--dotlock`. Argument parsing only: the shared
//! lock options and the front end live in `lock_args`, the logic in
//! `lock::acquire`.

use super::ExitCode;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::lock_args::{
    Dialect, LockArgs, common_lock_args, execute, lock_dir_arg, owner_arg, session_arg, shell,
    wait_spec,
};
use super::{Ctx, quiet_arg};
use crate::error::Result;
use crate::lock::kernel::Method;
use crate::lock::run::Program;
use crate::lock::{Kind, WaitSpec};

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
            // The shell functions' fallback (`acquire_critical_lock NAME`):
            // its descriptor marked as theirs (`lock::fd::acquire`).
            Arg::new("function")
                .long("function")
                .value_name("FUNC")
                .hide(true)
                .help("For shell/ffkit.bash: take NAME on --fd N (or --prepare it) as shell function FUNC does, failures in its words")
                .requires("target"),
        )
        .arg(
            // The fallback's retry after its lock file was replaced while
            // waiting: `-w LEFT`, and a timeout said as the whole call's.
            Arg::new("whole_timeout")
                .long("whole-timeout")
                .value_name("SECS")
                .hide(true)
                .value_parser(|s: &str| crate::units::parse_seconds(s))
                .requires("function")
                .help("For shell/ffkit.bash: say a timeout as after SECS, the whole call's"),
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
    let a = args_of(m, ctx);
    execute(a, ctx)
}

/// clap's matches as a request (`ctx` gives `-c`'s shell and the default
/// wait, `LOCK_TIMEOUT`).
fn args_of(m: &ArgMatches, ctx: &Ctx) -> LockArgs {
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
    a.function = m.get_one::<String>("function").cloned();
    a.whole_timeout = m.get_one::<Duration>("whole_timeout").copied();
    a.backend = super::backend_flag(m);
    a
}

/// The plain command-mode call, read without clap:
/// `[--backend URL] [-w SECS] LOCKFILE|NAME -- CMD [ARGS...]`, each option
/// at most once, as separate words, in any order before the target. A
/// Redis lock round is otherwise start-up, clap and two round trips, and
/// building and running this applet's clap parser (some thirty options)
/// is most of what ffkit adds before the first round trip
/// (docs/redis.md, "Command mode"). Anything else — another option, a
/// value clap would read otherwise or refuse (empty, starting with `-`,
/// not UTF-8, an unparsable `-w`), a repeated option, no command — is
/// `None`, and clap parses it and words any error.
struct Plain {
    backend: Option<String>,
    timeout: Option<Duration>,
    target: String,
    cmd: Vec<OsString>,
}

/// The applet table's fast path ([`super::Argv::Fast`]): the calls
/// [`fast_args`] reads, ready to run.
pub(super) fn fast(args: &[OsString]) -> Option<super::Parsed> {
    let p = fast_args(args)?;
    Some(Box::new(move |ctx: &mut Ctx| {
        let a = p.into_args(ctx);
        execute(a, ctx)
    }))
}

fn fast_args(args: &[OsString]) -> Option<Plain> {
    // An option's value as clap takes it without further ado: UTF-8 (both
    // are `String`s to clap), not empty, not a word clap would read as an
    // option.
    fn value(v: Option<&OsString>) -> Option<&str> {
        let s = v?.to_str()?;
        (!s.is_empty() && !s.starts_with('-')).then_some(s)
    }
    let mut backend = None;
    let mut timeout = None;
    let mut i = 1;
    let target = loop {
        let word = args.get(i)?.to_str()?;
        match word {
            "--backend" if backend.is_none() => {
                backend = Some(value(args.get(i + 1))?.to_owned());
            }
            "-w" if timeout.is_none() => {
                timeout = Some(crate::units::parse_seconds(value(args.get(i + 1))?).ok()?);
            }
            _ if !word.is_empty() && !word.starts_with('-') => break word.to_owned(),
            _ => return None,
        }
        i += 2;
    };
    if args.get(i + 1)? != "--" {
        return None;
    }
    let cmd = args.get(i + 2..)?.to_vec();
    if cmd.is_empty() {
        return None;
    }
    Some(Plain {
        backend,
        timeout,
        target,
        cmd,
    })
}

impl Plain {
    /// The request clap's path ([`args_of`]) makes of the same words.
    fn into_args(self, ctx: &Ctx) -> LockArgs {
        LockArgs {
            target: Some(self.target),
            fd: None,
            program: Some(Program::Argv(self.cmd)),
            kind: Kind::Exclusive,
            method: Method::Flock,
            unlock: false,
            wait: wait_spec(false, self.timeout, WaitSpec::Timeout(ctx.cfg.lock_timeout)),
            conflict_code: None,
            close: false,
            no_fork: false,
            inherit: false,
            dotlock: false,
            owner: None,
            lock_dir: None,
            session: false,
            verbose: false,
            quiet: false,
            prepare: false,
            quiet_wait: false,
            function: None,
            whole_timeout: None,
            dialect: Dialect::Ffkit,
            backend: self.backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<OsString> {
        std::iter::once("lock-acquire")
            .chain(v.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn ctx() -> Ctx {
        let cfg = crate::config::Config::from_lookup(|k: &str| {
            (k == "LOCK_TIMEOUT").then(|| OsString::from("7"))
        })
        .expect("a valid test configuration");
        Ctx {
            prog: "lock-acquire".into(),
            cfg,
            metric: None,
            metric_dir: None,
            metric_duration: None,
            out: super::super::Sink::Buffer(Vec::new()),
            input: super::super::Input::Bytes(Vec::new()),
            namespace_error: None,
            fn_dir: false,
        }
    }

    /// What clap's path makes of `v`: the request, or its error.
    fn by_clap(v: &[&str]) -> std::result::Result<String, clap::error::ErrorKind> {
        let m = command()
            .try_get_matches_from(words(v))
            .map_err(|e| e.kind())?;
        Ok(format!("{:?}", args_of(&m, &ctx())))
    }

    fn by_fast(v: &[&str]) -> Option<String> {
        fast_args(&words(v)).map(|p| format!("{:?}", p.into_args(&ctx())))
    }

    /// Every call the fast path takes is the request clap makes of it.
    #[test]
    fn the_fast_path_and_clap_agree() {
        for v in [
            &["lk", "--", "true"][..],
            &["/tmp/x/lk", "--", "sh", "-c", "exit 3"],
            &["--backend", "redis://127.0.0.1:1", "lk", "--", "true"],
            &["--backend", "local", "-w", "2.5", "lk", "--", "true"],
            &["-w", "0", "--backend", "local", "lk", "--", "true", "--"],
            &["-w", "3", "lk", "--", "--help"],
            &["-w", " 1", "lk", "--", "x"],
            &["lk", "--", "-c", "x", "--backend", "y"],
        ] {
            let fast = by_fast(v).unwrap_or_else(|| panic!("not taken: {v:?}"));
            assert_eq!(Ok(fast), by_clap(v), "{v:?}");
        }
    }

    /// Everything else goes to clap, which takes it or words the error.
    #[test]
    fn the_fast_path_leaves_the_rest_to_clap() {
        for v in [
            &[][..],
            &["lk"],
            &["lk", "--"],
            &["--", "lk", "true"],
            &["lk", "true"],
            &["lk", "-c", "true"],
            &["-n", "lk", "--", "true"],
            &["-w", "x", "lk", "--", "true"],
            &["-w", "-1", "lk", "--", "true"],
            &["-w", "", "lk", "--", "true"],
            &["-w", "1", "-w", "2", "lk", "--", "true"],
            &["-w1", "lk", "--", "true"],
            &["--timeout", "1", "lk", "--", "true"],
            &["--backend", "", "lk", "--", "true"],
            &["--backend", "-x", "lk", "--", "true"],
            &["--backend=local", "lk", "--", "true"],
            &["--backend", "a", "--backend", "b", "lk", "--", "true"],
            &["--backend"],
            &["-w"],
            &["", "--", "true"],
            &["-", "--", "true"],
            &["--help"],
            &["lk", "-w", "1", "--", "true"],
            &["lk", "extra", "--", "true"],
        ] {
            assert!(
                by_fast(v).is_none(),
                "taken: {v:?} (clap: {:?})",
                by_clap(v)
            );
        }
        let not_utf8 = |s: &[u8]| OsString::from(std::ffi::OsStr::from_bytes(s));
        use std::os::unix::ffi::OsStrExt;
        let mut v = words(&["--", "true"]);
        v.insert(1, not_utf8(b"l\xffk"));
        assert!(fast_args(&v).is_none());
        let mut v = words(&["lk", "--", "true"]);
        v.splice(1..1, [OsString::from("--backend"), not_utf8(b"\xff")]);
        assert!(fast_args(&v).is_none());
        // The command's own words need not be UTF-8: clap takes them as is.
        let mut v = words(&["lk", "--"]);
        v.push(not_utf8(b"\xff"));
        assert!(fast_args(&v).is_some());
        let m = command().try_get_matches_from(&v).expect("clap takes it");
        assert_eq!(
            format!("{:?}", args_of(&m, &ctx())),
            format!(
                "{:?}",
                fast_args(&v).map(|p| p.into_args(&ctx())).expect("taken")
            )
        );
    }
}
