//! The flock(1) persona: ffkit invoked through a symlink named `flock`
//! behaves as util-linux 2.42 flock does — `flock [OPTS] FILE CMD [ARGS]`,
//! `flock [OPTS] FILE -c CMD`, `flock [OPTS] FD` — down to its exit codes
//! (sysexits: 64 usage, 65 a failed lock, 66 a lock file that cannot be
//! opened, 69 a command that cannot run, 71 a bad timer; 1 or `-E N` on
//! conflict or timeout) and its messages. Its command line is parsed as
//! getopt_long parses flock's (`+sexnoFuw:E:hV?`: options stop at the file,
//! the last of `-s`/`-x`/`-u` wins, long options may be abbreviated while
//! unambiguous), not with clap, whose definition ([`command`]) serves the
//! help text, the man page and the completions. The lock itself is taken by
//! the same front end and engine as `lock-acquire`, in the flock
//! [`Dialect`] (docs/locks.md, "The flock persona", lists what differs).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::lock_args::{Dialect, LockArgs, common_lock_args, execute, shell, sysexits};
use super::{Ctx, ExitCode};
use crate::error::{Error, Result};
use crate::lock::kernel::{self, Method};
use crate::lock::run::{self, Ended, Program};
use crate::lock::{Kind, WaitSpec};

pub(super) fn command() -> Command {
    Command::new("flock")
        .about("Manage locks from shell scripts (util-linux flock(1) compatible)")
        .override_usage(
            "flock [options] <file>|<directory> <command> [<argument>...]\n       \
             flock [options] <file>|<directory> -c <command>\n       \
             flock [options] <file descriptor number>",
        )
        .infer_long_args(true)
        .arg(
            Arg::new("target")
                .value_name("FILE|FD")
                .required(true)
                .help("Lock file or directory, or an open descriptor number"),
        )
        .arg(
            Arg::new("rest")
                .value_name("COMMAND")
                .num_args(1..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .value_parser(clap::value_parser!(OsString))
                .help("Command and arguments, or -c COMMAND"),
        )
        .args(common_lock_args())
        .arg(
            Arg::new("command")
                .short('c')
                .long("command")
                .value_name("COMMAND")
                .action(ArgAction::Set)
                .help("After FILE: run COMMAND through $SHELL -c (flock FILE -c COMMAND)"),
        )
}

/// Never called: the persona parses its own command line ([`run_argv`]);
/// `cli::run_applet` sends it there before clap sees it.
pub(super) fn run(_: &ArgMatches, _: &mut Ctx) -> Result<ExitCode> {
    Err(Error::General(
        "the flock persona parses its own command line".into(),
    ))
}

/// What `-s`, `-x`/`-e` and `-u` asked for (the last one given wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Lock(Kind),
    Unlock,
}

/// A timeout as flock(1) holds it: seconds and microseconds, each
/// truncated towards zero from the value strtold read.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Timeout {
    sec: f64,
    usec: f64,
}

impl Timeout {
    /// `-w 0` (or anything below a microsecond) is `-n`.
    fn is_zero(self) -> bool {
        self.sec == 0.0 && self.usec == 0.0
    }

    /// What the timer is armed with, or None when the kernel refuses it
    /// (negative, not a number, beyond time_t): flock(1) exits 71 then.
    fn duration(self) -> Option<Duration> {
        // time_t is 64-bit: a larger value converts to i64::MIN on x86-64.
        let valid = self.sec >= 0.0 && self.sec < i64::MAX as f64 && self.usec >= 0.0;
        valid.then(|| {
            let sec = self.sec as u64;
            Duration::from_secs(sec).saturating_add(Duration::from_micros(self.usec as u64))
        })
    }
}

/// flock(1)'s options, as its getopt_long loop leaves them.
#[derive(Debug, PartialEq)]
struct Opts {
    op: Op,
    nonblock: bool,
    timeout: Option<Timeout>,
    conflict: u8,
    close: bool,
    no_fork: bool,
    verbose: bool,
    fcntl: bool,
    start: u64,
    length: u64,
    /// The command's children keep the lock: always, as in flock(1)
    /// (`--inherit`, lock-acquire's extension, is accepted and changes
    /// nothing).
    inherit: bool,
}

/// What to do after parsing.
#[derive(Debug, PartialEq)]
enum What {
    /// `FILE CMD...` or `FILE -c CMD`.
    Command { file: OsString, program: Prog },
    /// `FD`.
    Fd(i32),
}

#[derive(Debug, PartialEq)]
enum Prog {
    Argv(Vec<OsString>),
    Shell(OsString),
}

/// The result of parsing.
#[derive(Debug, PartialEq)]
enum Parsed {
    Run(Opts, What),
    Help,
    Version,
    /// A usage error: the message (None: none, as for `-?`) and whether
    /// flock(1) adds "Try 'flock --help' for more information."; exit 64.
    Usage(Option<String>, bool),
}

/// flock 2.42's long options, in its table's order (getopt's messages list
/// ambiguous candidates in that order), with `--inherit` added.
const LONG: &[(&str, bool, char)] = &[
    ("shared", false, 's'),
    ("exclusive", false, 'x'),
    ("unlock", false, 'u'),
    ("nonblocking", false, 'n'),
    ("nb", false, 'n'),
    ("timeout", true, 'w'),
    ("wait", true, 'w'),
    ("conflict-exit-code", true, 'E'),
    ("close", false, 'o'),
    ("no-fork", false, 'F'),
    ("verbose", false, 'v'),
    ("fcntl", false, 'f'),
    ("start", true, 'S'),
    ("length", true, 'L'),
    ("help", false, 'h'),
    ("version", false, 'V'),
    ("inherit", false, 'I'),
];

/// The short options (`+sexnoFuw:E:hV?`); true: takes an argument.
fn short(c: u8) -> Option<bool> {
    match c {
        b's' | b'e' | b'x' | b'n' | b'o' | b'F' | b'u' | b'h' | b'V' | b'?' => Some(false),
        b'w' | b'E' => Some(true),
        _ => None,
    }
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

/// Parses `args` (without the program name) as flock 2.42 does.
fn parse(args: &[OsString]) -> Parsed {
    let usage = |m: String| Parsed::Usage(Some(m), true);
    if args.is_empty() {
        return usage("not enough arguments".into());
    }
    let mut o = Opts {
        op: Op::Lock(Kind::Exclusive),
        nonblock: false,
        timeout: None,
        conflict: 1,
        close: false,
        no_fork: false,
        verbose: false,
        fcntl: false,
        start: 0,
        length: 0,
        inherit: true,
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"--" {
            i += 1;
            break;
        }
        if a.len() < 2 || a[0] != b'-' {
            break;
        }
        i += 1;
        // Each option as (its letter, its argument).
        let mut found: Vec<(char, Option<OsString>)> = Vec::new();
        if let Some(body) = a.strip_prefix(b"--") {
            let (name, value) = match body.iter().position(|&b| b == b'=') {
                Some(p) => (&body[..p], Some(OsStr::from_bytes(&body[p + 1..]))),
                None => (body, None),
            };
            let exact = LONG.iter().find(|l| l.0.as_bytes() == name);
            let (lname, has_arg, letter) = match exact {
                Some(l) => *l,
                None => {
                    let cands: Vec<_> = LONG
                        .iter()
                        .filter(|l| l.0.as_bytes().starts_with(name))
                        .collect();
                    let Some(first) = cands.first() else {
                        return usage(format!("unrecognized option '{}'", lossy(&args[i - 1])));
                    };
                    if cands.iter().any(|c| c.1 != first.1 || c.2 != first.2) {
                        // glibc lists the first match and those that differ from it.
                        let list: Vec<String> = cands
                            .iter()
                            .filter(|c| c.0 == first.0 || c.1 != first.1 || c.2 != first.2)
                            .map(|c| format!(" '--{}'", c.0))
                            .collect();
                        return usage(format!(
                            "option '--{}' is ambiguous; possibilities:{}",
                            String::from_utf8_lossy(name),
                            list.concat()
                        ));
                    }
                    **first
                }
            };
            let arg = match (has_arg, value) {
                (false, Some(_)) => {
                    return usage(format!("option '--{lname}' doesn't allow an argument"));
                }
                (false, None) => None,
                (true, Some(v)) => Some(v.to_owned()),
                (true, None) => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        Some(v.clone())
                    }
                    None => return usage(format!("option '--{lname}' requires an argument")),
                },
            };
            found.push((letter, arg));
        } else {
            let mut k = 1;
            while k < a.len() {
                let c = a[k];
                k += 1;
                match short(c) {
                    None => {
                        return usage(format!(
                            "invalid option -- '{}'",
                            String::from_utf8_lossy(&[c])
                        ));
                    }
                    Some(false) => found.push((char::from(c), None)),
                    Some(true) => {
                        let arg = if k < a.len() {
                            Some(OsStr::from_bytes(&a[k..]).to_owned())
                        } else if let Some(v) = args.get(i) {
                            i += 1;
                            Some(v.clone())
                        } else {
                            return usage(format!(
                                "option requires an argument -- '{}'",
                                char::from(c)
                            ));
                        };
                        found.push((char::from(c), arg));
                        break;
                    }
                }
            }
        }
        for (letter, arg) in found {
            let arg = arg.unwrap_or_default();
            match letter {
                's' => o.op = Op::Lock(Kind::Shared),
                'e' | 'x' => o.op = Op::Lock(Kind::Exclusive),
                'u' => o.op = Op::Unlock,
                'o' => o.close = true,
                'F' => o.no_fork = true,
                'n' => o.nonblock = true,
                'v' => o.verbose = true,
                'f' => o.fcntl = true,
                'I' => o.inherit = true,
                'w' => match parse_timeout(&arg) {
                    Ok(t) => o.timeout = Some(t),
                    Err(m) => return Parsed::Usage(Some(m), false),
                },
                'E' => match parse_s32(&arg) {
                    Ok(n) if (0..=255).contains(&n) => o.conflict = n as u8,
                    Ok(_) => {
                        return Parsed::Usage(
                            Some("exit code out of range (expected 0 to 255)".into()),
                            false,
                        );
                    }
                    Err(why) => {
                        return Parsed::Usage(
                            Some(num_error("invalid exit code", &arg, why)),
                            false,
                        );
                    }
                },
                'S' | 'L' => {
                    let what = if letter == 'S' {
                        "invalid as start offset"
                    } else {
                        "invalid as length of lock range"
                    };
                    match parse_size(&arg) {
                        Ok(n) if letter == 'S' => o.start = n,
                        Ok(n) => o.length = n,
                        // strtosize_or_err always names the errno.
                        Err(NumError::Invalid) => {
                            return Parsed::Usage(
                                Some(format!("{what}: '{}': Invalid argument", lossy(&arg))),
                                false,
                            );
                        }
                        Err(why) => return Parsed::Usage(Some(num_error(what, &arg, why)), false),
                    }
                    o.fcntl = true;
                }
                'h' => return Parsed::Help,
                'V' => return Parsed::Version,
                // `-?`: getopt's own "unknown" answer, without a message.
                _ => return Parsed::Usage(None, true),
            }
        }
    }
    if let Some(m) = Dialect::Flock.conflicts(o.close, o.no_fork) {
        return Parsed::Usage(Some(m.into()), false);
    }
    let rest = &args[i..];
    let what = match rest {
        [] => {
            return Parsed::Usage(
                Some("requires file descriptor, file or directory".into()),
                false,
            );
        }
        [fd] => match parse_s32(fd) {
            Ok(n) => What::Fd(n as i32),
            Err(why) => {
                return Parsed::Usage(Some(num_error("bad file descriptor", fd, why)), false);
            }
        },
        [file, flag, more @ ..] if flag == "-c" || flag == "--command" => match more {
            [text] => What::Command {
                file: file.clone(),
                program: Prog::Shell(text.clone()),
            },
            _ => {
                return Parsed::Usage(
                    Some(format!(
                        "{} requires exactly one command argument",
                        lossy(flag)
                    )),
                    false,
                );
            }
        },
        [file, argv @ ..] => What::Command {
            file: file.clone(),
            program: Prog::Argv(argv.to_vec()),
        },
    };
    Parsed::Run(o, what)
}

/// Why a number did not parse: not a number at all, or out of range
/// (flock(1) then adds the system's words for ERANGE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumError {
    Invalid,
    Range,
}

fn num_error(what: &str, arg: &OsStr, why: NumError) -> String {
    match why {
        NumError::Invalid => format!("{what}: '{}'", lossy(arg)),
        NumError::Range => format!("{what}: '{}': Numerical result out of range", lossy(arg)),
    }
}

/// C's isspace in the C locale.
fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// strtoimax(s, 10) with nothing left over, within i32 (strtos32_or_err).
fn parse_s32(s: &OsStr) -> std::result::Result<i64, NumError> {
    let b = s.as_bytes();
    let t = &b[b.iter().take_while(|&&c| c_space(c)).count()..];
    let (neg, digits) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(NumError::Invalid);
    }
    let mut n: i64 = 0;
    for d in digits {
        n = match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
        {
            Some(n) => n,
            None => return Err(NumError::Range),
        };
    }
    let n = if neg { -n } else { n };
    if (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&n) {
        Ok(n)
    } else {
        Err(NumError::Range)
    }
}

/// `-w`'s value as strtold reads it (leading space, a sign, decimal or
/// hexadecimal, an exponent, `inf`, `nan`) with nothing left over, then
/// split as flock(1) does into whole seconds and microseconds.
fn parse_timeout(arg: &OsStr) -> std::result::Result<Timeout, String> {
    let bad = || format!("invalid timeout: '{}'", lossy(arg));
    let text = arg.to_str().ok_or_else(bad)?;
    let t = text.trim_start_matches(|c: char| c.is_ascii() && c_space(c as u8));
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let x = if body.len() > 2 && body[..2].eq_ignore_ascii_case("0x") {
        parse_hex_float(&body[2..]).ok_or_else(bad)?
    } else {
        // Rust reads what strtod reads here, `inf`/`infinity`/`nan` too;
        // it refuses a sign of its own after ours.
        if body.starts_with(['+', '-']) {
            return Err(bad());
        }
        body.parse::<f64>().map_err(|_| bad())?
    };
    let x = if neg { -x } else { x };
    let sec = x.trunc();
    let usec = ((x - sec) * 1_000_000.0).trunc();
    Ok(Timeout {
        sec: if sec.is_nan() { -1.0 } else { sec },
        usec: if usec.is_nan() { -1.0 } else { usec },
    })
}

/// The digits after `0x` of a C hexadecimal float: `h[.h][p[+-]d]`.
fn parse_hex_float(s: &str) -> Option<f64> {
    let (mant, exp) = match s.find(['p', 'P']) {
        Some(p) => (&s[..p], Some(&s[p + 1..])),
        None => (s, None),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars() {
        v = v * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        v += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    if let Some(e) = exp {
        let e: i32 = e.parse().ok()?;
        v *= 2f64.powi(e);
    }
    Some(v)
}

/// `--start`/`--length` as util-linux's strtosize reads them: a whole
/// number (decimal, 0x hexadecimal or 0 octal) with an optional unit, K,
/// M, G, ... (or k, m, g, ...) for powers of 1024, KiB alike, KB for powers
/// of 1000; no sign. (flock(1) also takes a fraction before a unit,
/// `0.5K`; the persona does not.)
fn parse_size(arg: &OsStr) -> std::result::Result<u64, NumError> {
    let b = arg.as_bytes();
    let t = &b[b.iter().take_while(|&&c| c_space(c)).count()..];
    let t = t.strip_prefix(b"+").unwrap_or(t);
    let (radix, digits_from) = if t.len() > 2 && (t.starts_with(b"0x") || t.starts_with(b"0X")) {
        (16, 2)
    } else if t.len() > 1 && t[0] == b'0' {
        (8, 1)
    } else {
        (10, 0)
    };
    let body = &t[digits_from..];
    let n_digits = body
        .iter()
        .take_while(|c| char::from(**c).is_digit(radix))
        .count();
    if n_digits == 0 && radix != 8 {
        return Err(NumError::Invalid);
    }
    let mut n: u64 = 0;
    for &d in &body[..n_digits] {
        let v = u64::from(char::from(d).to_digit(radix).unwrap_or(0));
        n = n
            .checked_mul(u64::from(radix))
            .and_then(|n| n.checked_add(v))
            .ok_or(NumError::Range)?;
    }
    let unit = &body[n_digits..];
    if unit.is_empty() {
        return Ok(n);
    }
    let power = b"KMGTPEZY"
        .iter()
        .position(|&c| c == unit[0].to_ascii_uppercase())
        .ok_or(NumError::Invalid)?;
    let base: u64 = match &unit[1..] {
        b"" | b"iB" | b"ib" => 1024,
        b"B" | b"b" => 1000,
        _ => return Err(NumError::Invalid),
    };
    let mut v = n;
    for _ in 0..=power {
        v = v.checked_mul(base).ok_or(NumError::Range)?;
    }
    Ok(v)
}

/// The persona's whole run, from its arguments (`args[0]` is the name it
/// was invoked as).
pub(super) fn run_argv(args: &[OsString], ctx: &mut Ctx) -> Result<ExitCode> {
    // A drop-in for flock(1) records no metrics of its own.
    ctx.metric = None;
    let (o, what) = match parse(args.get(1..).unwrap_or_default()) {
        Parsed::Run(o, w) => (o, w),
        Parsed::Help => {
            let help = super::applet_command(
                super::find("flock").ok_or_else(|| Error::General("no flock applet".into()))?,
                &ctx.prog,
            )
            .render_help()
            .to_string();
            ctx.write_out(help.as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        Parsed::Version => {
            let v = format!("flock from ffkit {}\n", env!("CARGO_PKG_VERSION"));
            ctx.write_out(v.as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        Parsed::Usage(msg, try_help) => {
            if let Some(m) = msg {
                ctx.note(m);
            }
            if try_help {
                eprintln!("Try '{} --help' for more information.", ctx.prog);
            }
            return Ok(ExitCode::from(sysexits::EX_USAGE));
        }
    };
    Ok(match locked(&o, what, ctx) {
        Ok(code) => code,
        Err((code, msg)) => {
            ctx.note(msg);
            ExitCode::from(code)
        }
    })
}

type Answer = std::result::Result<ExitCode, (u8, String)>;

/// Runs a parsed request: flock(1)'s order of failures (the lock file's
/// open, then the timer, then the lock) and answers.
fn locked(o: &Opts, what: What, ctx: &mut Ctx) -> Answer {
    let method = if o.fcntl {
        Method::Ofd {
            start: o.start,
            len: o.length,
        }
    } else {
        Method::Flock
    };
    let program = |p: Prog, ctx: &Ctx| match p {
        Prog::Argv(v) => Program::Argv(v),
        Prog::Shell(text) => Program::Shell {
            shell: shell(ctx),
            text,
        },
    };
    let (file, fd, program) = match what {
        What::Command { file, program: p } => (
            Some(follow(PathBuf::from(file))),
            None,
            Some(program(p, ctx)),
        ),
        What::Fd(fd) => (None, Some(fd), None),
    };
    // The file is opened before the timer is set up (flock(1) opens it
    // while reading its arguments), so its failure comes first.
    let exclusive_ofd = o.fcntl && o.op == Op::Lock(Kind::Exclusive);
    let dir = file.as_ref().is_some_and(|f| f.is_dir());
    // flock(1) opens a FIFO without O_NONBLOCK, so it waits there for a
    // writer (before any timer); the persona does too, then locks it as
    // any file (ffkit's own opens never block on one).
    let _fifo =
        match &file {
            Some(f)
                if std::fs::symlink_metadata(f)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type())) =>
            {
                Some(std::fs::File::open(f).map_err(|e| {
                    Dialect::flock_failure(&Error::io(crate::lock::OPEN_FAILED, f, e))
                })?)
            }
            _ => None,
        };
    // A directory opens read-only (flock(1) too drops O_CREAT and the
    // write mode an exclusive OFD lock wants when the open says EISDIR).
    let opened = match &file {
        Some(f) => Some(
            kernel::open_lock_file(f, exclusive_ofd && !dir, 0o666)
                .map_err(|e| Dialect::flock_failure(&Error::io(crate::lock::OPEN_FAILED, f, e)))?,
        ),
        None => None,
    };
    let wait = match (o.nonblock, o.timeout) {
        (true, _) => WaitSpec::NonBlocking,
        (false, Some(t)) if t.is_zero() => WaitSpec::NonBlocking,
        (false, None) => WaitSpec::Forever,
        (false, Some(t)) => match t.duration() {
            Some(d) => WaitSpec::Timeout(d),
            None => {
                return Err((
                    sysexits::EX_OSERR,
                    "cannot set up timer: Invalid argument".into(),
                ));
            }
        },
    };
    // A -w alongside -n still arms (and checks) the timer in flock(1).
    if o.nonblock
        && o.timeout
            .is_some_and(|t| !t.is_zero() && t.duration().is_none())
    {
        return Err((
            sysexits::EX_OSERR,
            "cannot set up timer: Invalid argument".into(),
        ));
    }
    if let Some(fd) = fd
        && let Err(e) =
            kernel::borrow(fd).and_then(|b| rustix::io::fcntl_getfd(b).map_err(Into::into))
    {
        return Err((
            sysexits::EX_DATAERR,
            format!("{fd}: {}", crate::error::os_reason(&e)),
        ));
    }
    if o.op == Op::Unlock {
        return unlock(o, opened, fd, method, program, ctx);
    }
    drop(opened);
    // An exclusive OFD lock on a read-only descriptor is EBADF; flock(1)
    // then reopens read-write, which a directory refuses, and reports that
    // reopen's EISDIR (or the access check's EACCES): 65.
    if let (true, true, Some(f)) = (dir, exclusive_ofd, &file) {
        let rw = rustix::fs::access(
            f,
            rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
        );
        let why = if rw.is_ok() {
            "Is a directory"
        } else {
            "Permission denied"
        };
        return Err((sysexits::EX_DATAERR, format!("{}: {why}", f.display())));
    }
    let kind = match o.op {
        Op::Lock(k) => k,
        Op::Unlock => Kind::Exclusive,
    };
    let a = LockArgs {
        target: file.as_ref().map(|f| f.to_string_lossy().into_owned()),
        fd,
        program,
        kind,
        method,
        unlock: false,
        wait,
        conflict_code: Some(o.conflict),
        close: o.close,
        no_fork: o.no_fork,
        inherit: o.inherit,
        dotlock: false,
        owner: None,
        lock_dir: None,
        session: false,
        verbose: o.verbose,
        quiet: false,
        prepare: false,
        quiet_wait: true,
        function: None,
        whole_timeout: None,
        dialect: Dialect::Flock,
        // flock(1) locks files: never a remote backend.
        backend: Some("local".into()),
    };
    execute(a, ctx).map_err(|e| match (fd, &e) {
        // The descriptor is open (checked above), so the lock call's EBADF
        // (an OFD lock the descriptor's mode does not allow) is what
        // `lock::fd::fd_error` explains as "descriptor N: not open" or "…
        // open read-only/write-only": flock(1) says `N: Bad file descriptor`.
        (Some(fd), Error::Validation(m)) if m.starts_with(&format!("descriptor {fd}")) => (
            sysexits::EX_DATAERR,
            format!(
                "{fd}: {}",
                crate::error::os_reason(&std::io::Error::from_raw_os_error(libc::EBADF))
            ),
        ),
        _ => Dialect::flock_failure(&e),
    })
}

/// flock(1) opens its path as given, following a symlink (`flock /var/lock
/// CMD`, where /var/lock is a link to /run/lock); ffkit's own opens refuse
/// one (`O_NOFOLLOW`), so the persona resolves a symlink to its target
/// first. A dangling one is left as it is, and refused.
fn follow(file: PathBuf) -> PathBuf {
    match std::fs::symlink_metadata(&file) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(&file).unwrap_or(file),
        _ => file,
    }
}

/// `-u`: drops the lock of the descriptor (flock FD), or opens the file and
/// runs the command without locking anything (flock -u FILE CMD: the new
/// open file description has no lock to drop).
fn unlock(
    o: &Opts,
    opened: Option<std::fs::File>,
    fd: Option<i32>,
    method: Method,
    program: Option<Program>,
    ctx: &mut Ctx,
) -> Answer {
    let start = Instant::now();
    let mut lines = Verbose {
        on: o.verbose,
        pending: Dialect::Flock.defers_verbose().then(Vec::new),
    };
    if let Some(fd) = fd {
        kernel::unlock_fd_with(fd, method).map_err(|e| {
            let code = match e.raw_os_error() {
                Some(libc::ENOLCK | libc::ENOMEM) => sysexits::EX_OSERR,
                _ => sysexits::EX_DATAERR,
            };
            (code, format!("{fd}: {}", crate::error::os_reason(&e)))
        })?;
    }
    lines.say(
        ctx,
        format_args!("getting lock took {}", took(start.elapsed())),
    );
    let Some(program) = program else {
        lines.flush(ctx);
        return Ok(ExitCode::SUCCESS);
    };
    lines.say(ctx, format_args!("executing {}", program.name()));
    // The descriptor goes to the command unless -o, as flock(1)'s does.
    if let Some(f) = &opened
        && !o.close
    {
        let _ = run::set_inherit(std::os::fd::AsFd::as_fd(f), true);
    }
    let ended = if o.no_fork {
        // The exec discards what flock(1) had buffered.
        lines.pending = None;
        run::exec(&program)
    } else {
        run::run(
            &program,
            run::Options {
                interruptible: true,
                ..run::Options::default()
            },
        )
    };
    drop(opened);
    lines.flush(ctx);
    match ended {
        Ended::Status(c) => Ok(ExitCode::from(c)),
        Ended::NotStarted(code, e) => Err(Dialect::Flock.not_started(&program.name(), code, &e)),
    }
}

fn took(d: Duration) -> String {
    format!("{}.{:06} seconds", d.as_secs(), d.subsec_micros())
}

/// `--verbose` lines, on stdout as flock(1) prints them, deferred to the
/// end when stdout is not a terminal ([`Dialect::defers_verbose`]).
struct Verbose {
    on: bool,
    pending: Option<Vec<u8>>,
}

impl Verbose {
    fn say(&mut self, ctx: &mut Ctx, msg: std::fmt::Arguments<'_>) {
        if !self.on {
            return;
        }
        let line = format!("{}: {msg}\n", ctx.prog);
        match &mut self.pending {
            Some(p) => p.extend_from_slice(line.as_bytes()),
            None => {
                let _ = ctx.write_out(line.as_bytes());
            }
        }
    }

    fn flush(&mut self, ctx: &mut Ctx) {
        if let Some(p) = self.pending.take() {
            let _ = ctx.write_out(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Parsed {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&v)
    }

    fn opts(args: &[&str]) -> Opts {
        match p(args) {
            Parsed::Run(o, _) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn usage(args: &[&str]) -> String {
        match p(args) {
            Parsed::Usage(Some(m), _) => m,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn the_last_of_shared_exclusive_unlock_wins() {
        assert_eq!(
            opts(&["-s", "-x", "f", "true"]).op,
            Op::Lock(Kind::Exclusive)
        );
        assert_eq!(opts(&["-xs", "f", "true"]).op, Op::Lock(Kind::Shared));
        assert_eq!(opts(&["-s", "-u", "9"]).op, Op::Unlock);
        assert_eq!(opts(&["-u", "-e", "9"]).op, Op::Lock(Kind::Exclusive));
    }

    #[test]
    fn options_stop_at_the_file_and_dashdash_is_a_command_word() {
        match p(&["f", "--", "echo", "a"]) {
            Parsed::Run(
                _,
                What::Command {
                    program: Prog::Argv(v),
                    ..
                },
            ) => {
                assert_eq!(v, ["--", "echo", "a"]);
            }
            other => panic!("{other:?}"),
        }
        match p(&["--", "-f", "-n"]) {
            Parsed::Run(
                o,
                What::Command {
                    file,
                    program: Prog::Argv(v),
                },
            ) => {
                assert!(!o.nonblock);
                assert_eq!(file, "-f");
                assert_eq!(v, ["-n"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_options_abbreviate_while_unambiguous() {
        assert!(opts(&["--nonb", "f", "true"]).nonblock);
        // nonblocking and nb mean the same: not ambiguous between them.
        assert!(opts(&["--non", "f", "true"]).nonblock);
        assert_eq!(
            usage(&["--n", "f", "true"]),
            "option '--n' is ambiguous; possibilities: '--nonblocking' '--no-fork'"
        );
        assert_eq!(
            opts(&["--time=5", "f", "true"]).timeout.map(|t| t.sec),
            Some(5.0)
        );
        assert_eq!(
            usage(&["--no", "f", "true"]),
            "option '--no' is ambiguous; possibilities: '--nonblocking' '--no-fork'"
        );
        assert_eq!(
            usage(&["--verbose=1", "f"]),
            "option '--verbose' doesn't allow an argument"
        );
        assert_eq!(
            usage(&["--timeout"]),
            "option '--timeout' requires an argument"
        );
        assert_eq!(
            usage(&["--bogus=1", "f"]),
            "unrecognized option '--bogus=1'"
        );
        assert_eq!(usage(&["-Z"]), "invalid option -- 'Z'");
        assert_eq!(usage(&["-w"]), "option requires an argument -- 'w'");
        assert_eq!(usage(&["-c", "true"]), "invalid option -- 'c'");
    }

    #[test]
    fn timeouts_read_as_strtold_then_split() {
        let t = |s: &str| opts(&["-w", s, "f", "true"]).timeout.unwrap();
        assert_eq!(t("1e3").duration(), Some(Duration::from_secs(1000)));
        assert_eq!(t("0x10").duration(), Some(Duration::from_secs(16)));
        assert_eq!(t("0x1.8p1").duration(), Some(Duration::from_secs(3)));
        assert_eq!(t(" 2.5").duration(), Some(Duration::from_millis(2500)));
        assert_eq!(
            t("99999999999").duration(),
            Some(Duration::from_secs(99_999_999_999))
        );
        assert!(t("0").is_zero() && t("1e-7").is_zero() && t("-0").is_zero());
        for bad in ["-1", "inf", "nan", "1e400", "-0.5", "1e19"] {
            assert_eq!(t(bad).duration(), None, "{bad}");
        }
        for junk in ["", "1x", "abc", "0x", "--1", "1 "] {
            assert_eq!(
                usage(&["-w", junk, "f", "true"]),
                format!("invalid timeout: '{junk}'")
            );
        }
    }

    #[test]
    fn exit_codes_descriptors_and_sizes_parse_as_util_linux() {
        assert_eq!(opts(&["-E", "7", "f", "true"]).conflict, 7);
        assert_eq!(
            usage(&["-E", "300", "f"]),
            "exit code out of range (expected 0 to 255)"
        );
        assert_eq!(usage(&["-E", "x", "f"]), "invalid exit code: 'x'");
        assert_eq!(p(&[" 9"]), Parsed::Run(opts(&["9"]), What::Fd(9)));
        assert_eq!(usage(&["abc"]), "bad file descriptor: 'abc'");
        assert_eq!(
            usage(&["99999999999"]),
            "bad file descriptor: '99999999999': Numerical result out of range"
        );
        let o = opts(&["--start", "1k", "--length=0x10", "f", "true"]);
        assert!(o.fcntl);
        assert_eq!((o.start, o.length), (1024, 16));
        assert_eq!(opts(&["--start", "2KB", "f", "t"]).start, 2000);
        assert_eq!(opts(&["--start", "1MiB", "f", "t"]).start, 1 << 20);
        assert_eq!(
            usage(&["--start", "-1", "f", "t"]),
            "invalid as start offset: '-1': Invalid argument"
        );
        assert_eq!(
            usage(&["-o", "-F", "f", "t"]),
            "the --no-fork and --close options are incompatible"
        );
        assert_eq!(
            usage(&["f", "-c"]),
            "-c requires exactly one command argument"
        );
        assert_eq!(
            usage(&["-s"]),
            "requires file descriptor, file or directory"
        );
        assert_eq!(usage(&[]), "not enough arguments");
        assert_eq!(p(&["-?"]), Parsed::Usage(None, true));
        assert_eq!(p(&["-h", "-Z"]), Parsed::Help);
    }
}
