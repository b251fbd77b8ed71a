//! ffkit as a bash loadable builtin: `enable -f libffkit_builtin.so ffkit`
//! gives the shell a builtin `ffkit` with the binary's interface, running
//! the same library code in-process (docs/shell.md, "The bash builtin").
//!
//! - The fast paths run here: cache-size, cache-read, cache-write,
//!   cache-batch, cache-evict, lock-status, perf-metrics (but `time`),
//!   `lock-acquire NAME` / `lock-release NAME` (held by the shell, see
//!   [`held`]), and the shell functions (`--fn NAME`, or the builtin
//!   `_ffkit_fn_NAME` of each; see [`funcs`]).
//!   Everything else (command and descriptor modes of lock-acquire, init,
//!   install-links, flock) starts the real binary, so `ffkit X` always works.
//! - `-v VAR` right after the applet name (cache-read, cache-size,
//!   perf-metrics) assigns the output to a shell variable instead of
//!   printing it, like `printf -v`.
//! - Nothing may take the shell down: every call runs under
//!   `catch_unwind` (a panic prints one line and returns 70; the next call
//!   works), the crate is built with unwinding (see the workspace
//!   Cargo.toml), no bash function that can longjmp is ever called, waits
//!   return 128+signal as soon as bash has flagged a signal, and the output
//!   is written to descriptor 1 before the builtin returns.

/// One line on stderr that never panics. `eprintln!` panics when stderr
/// cannot be written (`2>/dev/full`); inside the builtin that panic was
/// caught, but the line reporting it panicked again, outside
/// `catch_unwind`, and the shell aborted (SIGABRT). A lost error line is
/// what the binary gives there too (`cli::report` ignores the failure).
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

mod funcs;
mod held;
mod shell;
mod unload;

use std::ffi::{CStr, OsString, c_char, c_int, c_void};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bash_builtins::{Args, Builtin, builtin_metadata};
use ffkit::cli::{Input, Sink};
use ffkit::config::Config;

builtin_metadata!(
    name = "ffkit",
    create = Ffkit::new,
    short_doc = "ffkit APPLET [-v VAR] [ARGS...]",
    long_doc = "
        Run an ffkit applet inside the shell.

        The same applets, arguments, output and exit codes as the ffkit
        binary. cache-read, cache-size and perf-metrics accept -v VAR right
        after the applet name to assign the output to VAR instead of
        printing it. See ffkit --help and docs/shell.md.
    ",
);

/// The status of a call that panicked (EX_SOFTWARE).
const PANIC_STATUS: u8 = 70;

/// The binary to run for what the builtin does not do in-process, as given
/// by the loader (`--ffkit-init`). A forked copy is still right.
static BINARY: Mutex<Option<PathBuf>> = Mutex::new(None);

struct Ffkit;

impl Ffkit {
    fn new() -> Ffkit {
        setup();
        Ffkit
    }
}

/// What every builtin of this library needs before its first call, done
/// once whichever of them bash loads first.
fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The one line a panic prints is ours (see `entry`): std's default
        // hook would print several, and a backtrace hint.
        std::panic::set_hook(Box::new(|_| {}));
        // Thousands of rows over the shell's life: keep the metrics log
        // open between them (docs/metrics.md; re-verified on every append).
        ffkit::metrics::log::keep_descriptor_open();
        track_pid();
    });
}

/// One builtin per shell function, `_ffkit_fn_NAME ARGS...`, the same call
/// as `ffkit --fn NAME ARGS...`: the function's body is that one command
/// (`NAME() { _ffkit_fn_NAME "$@"; }`), so bash expands two words fewer
/// and skips `builtin`'s own lookup per call, copies the shortest body per
/// call, and the builtin parses no `--fn NAME` (BENCHMARKS.md, "Issue 23:
/// the builtin's lock pair" and "Fourth pass on the lock pair"). The
/// functions stay shell functions (shell/ffkit.bash, `_ffkit_builtin_thin`);
/// `enable -f` loads these with `ffkit`.
///
/// These are declared here rather than with `builtin_metadata!`, whose
/// entry point holds a lock on the builtin's state for the whole call: on a
/// remote backend the builtin runs the function's fallback shell code
/// itself ([`shell_fn_call`]), and that code may leave by a longjmp
/// (`set -e`, an interrupt) or call this builtin again from a trap.
#[repr(C)]
pub struct BuiltinDef {
    name: *const c_char,
    function: extern "C" fn(*const shell::WordList) -> c_int,
    flags: c_int,
    long_doc: *const *const c_char,
    short_doc: *const c_char,
    handle: *mut c_void,
}

/// bash's BUILTIN_ENABLED (builtins.h).
const BUILTIN_ENABLED: c_int = 0x01;

/// A `long_doc`: a null-terminated array of C strings.
#[repr(transparent)]
struct Doc([*const c_char; 2]);
// SAFETY: pointers to string literals, never written.
unsafe impl Sync for Doc {}
static SHELL_FN_LONG_DOC: Doc = Doc([
    c"Called by the shell function; see docs/shell.md.".as_ptr(),
    std::ptr::null(),
]);

/// The entry point of `_ffkit_fn_FUNC`: the call in Rust, then, when it
/// answers that FFKIT_BACKEND names a remote backend (which the builtin
/// does not run), the function's fallback shell code `_ffkit_sh_FUNC` with
/// the same arguments, as the body `… || _ffkit_builtin_rc FUNC "$@"` once
/// did: its status, output, traps and `set -e` are the function's.
fn shell_fn_call(
    func: &'static str,
    fallback: &'static CStr,
    words: *const shell::WordList,
) -> c_int {
    // SAFETY: `words` is the argument list bash passes to a builtin.
    let argv = unsafe { shell::words(words) };
    let code = entry(move || call_fn(func, &argv));
    if code != funcs::USE_FALLBACK {
        return c_int::from(code);
    }
    // Nothing with a destructor is live in this frame or in the ones
    // above it in this library, so bash may leave by a longjmp from here.
    shell::run_function(fallback, words)
}

/// `enable -f` calls `NAME_builtin_load` after loading each builtin.
fn shell_fn_load() -> c_int {
    setup();
    1
}

/// The builtins of the shell functions, with bash's `NAME_struct`,
/// `NAME_builtin_load` and `NAME_builtin_unload` symbols each.
macro_rules! shell_fn_builtins {
    ($($func:literal;)*) => {
        $(const _: () = {
            #[unsafe(export_name = concat!("_ffkit_fn_", $func, "_struct"))]
            // bash writes the flags and the handle into it when it loads it.
            pub static mut DEF: BuiltinDef = BuiltinDef {
                name: concat!("_ffkit_fn_", $func, "\0").as_ptr().cast(),
                function: call,
                flags: BUILTIN_ENABLED,
                long_doc: SHELL_FN_LONG_DOC.0.as_ptr(),
                short_doc: c"ffkit's shell function of the same name without the prefix".as_ptr(),
                handle: std::ptr::null_mut(),
            };
            extern "C" fn call(words: *const shell::WordList) -> c_int {
                const FALLBACK: &CStr = match CStr::from_bytes_with_nul(
                    concat!("_ffkit_sh_", $func, "\0").as_bytes(),
                ) {
                    Ok(c) => c,
                    Err(_) => panic!("a function name holds no NUL"),
                };
                shell_fn_call($func, FALLBACK, words)
            }
            #[unsafe(export_name = concat!("_ffkit_fn_", $func, "_builtin_load"))]
            pub extern "C" fn load(_: *const c_char) -> c_int {
                shell_fn_load()
            }
            /// `enable -d _ffkit_fn_NAME`: bash calls this right before
            /// it deletes the builtin ([`unload`]).
            #[unsafe(export_name = concat!("_ffkit_fn_", $func, "_builtin_unload"))]
            pub extern "C" fn unload(_: *const c_char) {
                unload::entry(concat!("_ffkit_fn_", $func));
            }
        };)*
        /// The shell functions that have a builtin each, `_ffkit_fn_NAME`.
        pub(crate) const SHELL_FNS: &[&str] = &[$($func),*];
    };
}

/// `enable -d ffkit`: bash's unload hook drops the builtin's state just
/// before it deletes the builtin ([`unload`]).
impl Drop for Ffkit {
    fn drop(&mut self) {
        unload::entry("ffkit");
    }
}

shell_fn_builtins! {
    "get_cache_size";
    "rebuild_size_index";
    "write_cache_with_metadata";
    "read_cache_with_ttl";
    "batch_write_cache";
    "batch_read_cache";
    "enforce_cache_limits";
    "clear_developer_cache";
    "cache_provider_data";
    "get_provider_cache";
    "cache_time_tracking";
    "recover_time_tracking";
    "acquire_critical_lock";
    "release_critical_lock";
    "acquire_session_lock";
    "release_session_lock";
    "record_performance_metric";
    "get_performance_metrics";
    "cleanup_performance_metrics";
}

/// Reads the shell's pid once, and again in every forked child (a
/// `pthread_atfork` child handler: bash forks with fork(3), which runs it),
/// so a call learns whether it runs in a forked subshell without a getpid
/// system call.
fn track_pid() {
    extern "C" fn in_child() {
        CALLER_PID.store(
            rustix::process::getpid().as_raw_nonzero().get(),
            std::sync::atomic::Ordering::Relaxed,
        );
        held::forked();
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        in_child();
        // SAFETY: registers a child handler that makes one getpid(2) call
        // and one atomic store, both async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

impl Builtin for Ffkit {
    fn call(&mut self, args: &mut Args) -> bash_builtins::Result<()> {
        let argv: Vec<OsString> = args
            .raw_arguments()
            .map(|c| OsString::from_vec(c.to_bytes().to_vec()))
            .collect();
        // The shell's umask may have changed since the last call (`umask
        // 077`, a subshell's): the next creation reads it again.
        ffkit::fsutil::forget_umask();
        match entry(move || dispatch(argv)) {
            0 => Ok(()),
            c => Err(bash_builtins::Error::ExitCode(c.into())),
        }
    }
}

/// One call, under `catch_unwind`.
fn entry(call: impl FnOnce() -> u8) -> u8 {
    // A write to a closed pipe is EPIPE (a quiet success), one past `ulimit
    // -f` EFBIG (exit 8), as in the binary: SIGPIPE and SIGXFSZ would end
    // the shell, or the subshell the call runs in.
    let r = ffkit::fsutil::without_signals(&[libc::SIGPIPE, libc::SIGXFSZ], || {
        catch_unwind(AssertUnwindSafe(call))
    });
    match r {
        Ok(code) => code,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let msg = msg.replace('\n', "\\n");
            errln!("ffkit: internal error (the shell is unaffected; please report): {msg}");
            PANIC_STATUS
        }
    }
}

/// The pid of the process the builtin runs in: the shell's, or a forked
/// subshell's (kept current by [`track_pid`]); 0 before the first.
static CALLER_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

pub(crate) fn caller_pid() -> rustix::process::Pid {
    rustix::process::Pid::from_raw(CALLER_PID.load(std::sync::atomic::Ordering::Relaxed))
        .unwrap_or_else(rustix::process::getpid)
}

/// Before anything else a call does: every later pid check of the call
/// (the held-lock table, the kept metrics log) uses the caller's pid.
fn begin_call() {
    ffkit::metrics::log::set_caller_pid(caller_pid());
    held::forget_inherited();
}

/// One shell function's call (`_ffkit_fn_NAME` or `ffkit --fn NAME`).
fn call_fn(func: &str, args: &[OsString]) -> u8 {
    begin_call();
    let (code, out) = funcs::call(func, args);
    finish(funcs::applet_of(func), code, out)
}

fn dispatch(argv: Vec<OsString>) -> u8 {
    begin_call();
    let first = argv.first().map(|a| a.as_bytes()).unwrap_or_default();
    match first {
        b"--ffkit-loaded" => return 0,
        b"--ffkit-build-id" => return emit(format!("{}\n", ffkit::cli::build_id()).into_bytes()),
        b"--ffkit-init" => return init(&argv[1..]),
        b"--ffkit-held" => return emit(format!("{}\n", held::count()).into_bytes()),
        b"--ffkit-test-panic" => panic!("test-only panic requested with --ffkit-test-panic"),
        b"--fn" => {
            let Some(name) = argv.get(1).and_then(|n| n.to_str()) else {
                errln!("ffkit --fn: expected a function name");
                return 2;
            };
            let (code, out) = funcs::call(name, &argv[2..]);
            return finish(funcs::applet_of(name), code, out);
        }
        _ => {}
    }
    let applet = first.to_vec();
    let mut rest: Vec<OsString> = argv.get(1..).unwrap_or_default().to_vec();
    let mut var: Option<String> = None;
    if rest.first().is_some_and(|a| a == "-v") {
        let prog = String::from_utf8_lossy(&applet).into_owned();
        if !matches!(
            applet.as_slice(),
            b"cache-read" | b"cache-size" | b"perf-metrics"
        ) {
            errln!("ffkit {prog}: -v VAR is for cache-read, cache-size and perf-metrics only");
            return 2;
        }
        let Some(name) = rest.get(1).map(|n| n.to_string_lossy().into_owned()) else {
            errln!("ffkit {prog}: -v: expected a variable name");
            return 2;
        };
        if let Err(e) = shell::check_assignable(&name) {
            errln!("ffkit {prog}: -v {name}: {}", assign_why(&e));
            return 2;
        }
        var = Some(name);
        rest.drain(..2);
    }
    if applet == b"lock-acquire"
        && shell::in_subshell()
        && named_request(&applet, &without_backend(&rest)).is_some()
    {
        // In `$( )`, `( )`, a pipeline stage or `&`, a lock held here would
        // end with this subshell. The binary run there (bash execs it)
        // would hold it for its parent, the process that forked this
        // subshell: so does this (docs/shell.md, "Locks held by the shell"),
        // on a remote backend too, whose call is the binary's anyway (it
        // used to be started from the subshell as it was, so the lock was
        // the subshell's and ended with it, while the fallback's exec'd
        // binary held it for the shell).
        let ppid = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get());
        let mut a = vec![
            OsString::from("lock-acquire"),
            OsString::from("--owner"),
            OsString::from(ppid.to_string()),
        ];
        a.extend(rest);
        return spawn(&a);
    }
    if !in_process(&applet, &rest) {
        if let Some(v) = &var {
            errln!(
                "ffkit {}: -v {v}: only the in-process forms can assign a variable",
                String::from_utf8_lossy(&applet)
            );
            return 2;
        }
        return spawn(&argv);
    }
    if let Some(code) = named_lock(&applet, &rest) {
        return code;
    }
    if applet == b"lock-release" {
        return spawn(&argv);
    }
    let mut args = vec![OsString::from("ffkit"), OsString::from_vec(applet.clone())];
    args.extend(rest);
    // In-process calls are local by construction (`in_process`): a
    // FFKIT_BACKEND that `--backend local` overrides is not even parsed.
    let (code, out) = run_applet(
        args,
        &|k| match k {
            "FFKIT_BACKEND" => None,
            _ => command_var(k),
        },
        Input::Fd0,
    );
    match var {
        None => finish(
            &format!("ffkit {}", String::from_utf8_lossy(&applet)),
            code,
            out,
        ),
        Some(name) => {
            if code != 0 {
                // Like a failed `$(…)`: the variable keeps its old value.
                return code;
            }
            let value = match applet.as_slice() {
                b"cache-read" => &out[..],
                _ => out.strip_suffix(b"\n").unwrap_or(&out),
            };
            match shell::assign(&name, value) {
                Ok(()) => 0,
                Err(e) => {
                    errln!(
                        "ffkit {}: -v {name}: {}",
                        String::from_utf8_lossy(&applet),
                        assign_why(&e)
                    );
                    if e == shell::AssignError::Nul { 1 } else { 2 }
                }
            }
        }
    }
}

fn assign_why(e: &shell::AssignError) -> &'static str {
    match e {
        shell::AssignError::InvalidName => "not a valid identifier",
        shell::AssignError::Readonly => "readonly variable",
        shell::AssignError::Integer => {
            "an integer variable (declare -i): the value would be evaluated as arithmetic"
        }
        shell::AssignError::Nul => "the value holds a NUL byte, which a shell variable cannot",
    }
}

/// Runs one applet in-process; returns its status and its output.
pub(crate) fn run_applet(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<OsString>,
    input: Input,
) -> (u8, Vec<u8>) {
    captured(|out| ffkit::cli::run_with(args, env, out, input).code())
}

/// Runs an already parsed call (`cli::Direct`) in-process; returns its
/// status and its output.
pub(crate) fn run_direct(
    call: ffkit::cli::Direct,
    env: &dyn Fn(&str) -> Option<OsString>,
    input: Input,
) -> (u8, Vec<u8>) {
    captured(|out| ffkit::cli::run_direct(call, env, out, input).code())
}

/// `run`'s status and what it wrote, given a buffer to write into.
fn captured(run: impl FnOnce(&mut Sink) -> u8) -> (u8, Vec<u8>) {
    let mut out = Sink::Buffer(Vec::new());
    let code = run(&mut out);
    match out {
        Sink::Buffer(v) => (code, v),
        Sink::Stdout => (code, Vec::new()),
    }
}

/// Writes the output to descriptor 1, then returns the status. A failed
/// write is what it is for the binary (`cli::stdout_failed`: its line and
/// exit code; a reader that stopped reading or a closed descriptor 1 is a
/// quiet success), and the builtin is never killed by SIGPIPE for it.
fn finish(prog: &str, code: u8, out: Vec<u8>) -> u8 {
    // SIGPIPE is blocked around the whole call (`entry`).
    match write_fd1(&out) {
        Ok(()) => code,
        Err(e) => ffkit::cli::stdout_failed(prog, code, std::io::Error::from(e)),
    }
}

fn emit(out: Vec<u8>) -> u8 {
    finish("ffkit", 0, out)
}

fn write_fd1(mut buf: &[u8]) -> Result<(), rustix::io::Errno> {
    let fd = rustix::stdio::stdout();
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(rustix::io::Errno::IO),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            // A non-blocking stdout: wait until it takes more (the
            // binary's rule too).
            Err(rustix::io::Errno::AGAIN) => ffkit::fsutil::wait_writable(fd),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `--ffkit-init EXE BUILD_ID`: the loader's handshake. Records the binary
/// and fails (status 1, no message: the loader prints the one line) when
/// the binary's build differs from this library's.
fn init(a: &[OsString]) -> u8 {
    let (Some(exe), Some(id)) = (a.first(), a.get(1)) else {
        return 2;
    };
    if !id.is_empty() && id.as_bytes() != ffkit::cli::build_id().as_bytes() {
        return 1;
    }
    if !exe.is_empty() {
        *BINARY.lock().unwrap_or_else(|p| p.into_inner()) = Some(PathBuf::from(exe));
    }
    0
}

/// Whether `applet ARGS` runs here rather than in the binary. A call on a
/// remote backend (`--backend URL`, or FFKIT_BACKEND in the shell) is the
/// binary's: this library installs no remote driver, so the Redis client
/// is not linked into it (docs/shell.md, "On a Redis backend").
fn in_process(applet: &[u8], rest: &[OsString]) -> bool {
    if remote_requested(rest) {
        return false;
    }
    match applet {
        b"cache-size" | b"cache-read" | b"cache-write" | b"cache-batch" | b"cache-evict"
        | b"lock-status" => true,
        b"perf-metrics" => !rest.iter().any(|a| a == "time"),
        b"lock-acquire" | b"lock-release" => named_request(applet, rest).is_some(),
        // `ffkit --help`, `ffkit --list`, `ffkit --version`.
        b"--help" | b"-h" | b"--list" | b"--version" | b"-V" => true,
        _ => false,
    }
}

/// Whether the call names a remote backend: `--backend URL` (or
/// `--backend=URL`) other than `local`, else FFKIT_BACKEND in the shell.
fn remote_requested(rest: &[OsString]) -> bool {
    let mut flag = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--backend" {
            flag = it.next().map(|v| v.as_bytes().to_vec());
        } else if let Some(v) = a.as_bytes().strip_prefix(b"--backend=") {
            flag = Some(v.to_vec());
        }
    }
    match flag {
        Some(v) => !std::str::from_utf8(&v).is_ok_and(ffkit::backend::names_local),
        None => funcs::remote_backend(),
    }
}

/// `rest` without its `--backend URL` (`--backend=URL`) options before any
/// `--`: which backend does not change whose lock a named request takes.
fn without_backend(rest: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(rest.len());
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a.clone());
            out.extend(it.cloned());
            break;
        }
        if a == "--backend" {
            it.next();
        } else if !a.as_bytes().starts_with(b"--backend=") {
            out.push(a.clone());
        }
    }
    out
}

/// `lock-acquire [--session] [-x] [-n | -w SECS] [--lock-dir DIR] NAME` or
/// `lock-release [--session] [--lock-dir DIR] NAME`: a named lock the shell
/// holds. Any other form (a path, a command, `--fd`, `--dotlock`, `-s`,
/// `--owner`) is the binary's.
struct Named {
    name: OsString,
    session: bool,
    lock_dir: Option<PathBuf>,
    timeout: Option<Duration>,
}

fn named_request(applet: &[u8], rest: &[OsString]) -> Option<Named> {
    let acquire = applet == b"lock-acquire";
    let mut n = Named {
        name: OsString::new(),
        session: false,
        lock_dir: None,
        timeout: None,
    };
    let mut it = rest.iter();
    let mut name = None;
    while let Some(a) = it.next() {
        match a.as_bytes() {
            b"--session" => n.session = true,
            b"--lock-dir" => n.lock_dir = Some(PathBuf::from(it.next()?)),
            b"-x" | b"--exclusive" if acquire => {}
            b"-n" | b"--nonblock" if acquire => n.timeout = Some(Duration::ZERO),
            b"-w" | b"--timeout" if acquire => {
                let s = it.next()?.to_str()?;
                n.timeout = Some(ffkit::units::parse_seconds(s).ok()?);
            }
            b if b.starts_with(b"-") => return None,
            _ if ffkit::lock::names_a_path(a) => return None,
            _ if name.is_some() => return None,
            _ => name = Some(a.clone()),
        }
    }
    n.name = name?;
    Some(n)
}

/// Runs a named lock-acquire/lock-release in the held-lock table.
/// `None`: not such a request (or, for a release, a lock this shell does
/// not hold in the table: the binary answers for the other kinds).
fn named_lock(applet: &[u8], rest: &[OsString]) -> Option<u8> {
    if applet != b"lock-acquire" && applet != b"lock-release" {
        return None;
    }
    let req = named_request(applet, rest)?;
    let prog = format!("ffkit {}", String::from_utf8_lossy(applet));
    let fail = |e: &ffkit::Error| {
        errln!("{prog}: {e}");
        e.exit_code()
    };
    let cfg = match Config::from_lookup(|k| match k {
        // Only ever local here (`in_process`).
        "FFKIT_BACKEND" => None,
        _ => command_var(k),
    }) {
        Ok(c) => c,
        Err(e) => return Some(fail(&e)),
    };
    // The name first: a bad one sets nothing up. Not UTF-8: refused, as
    // the binary's argument parser refuses it.
    match req.name.to_str().map(ffkit::namespace::validate_name) {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Some(fail(&e)),
        None => {
            return Some(fail(&ffkit::Error::Validation(
                "lock name: not valid UTF-8".into(),
            )));
        }
    }
    // The namespace as the functions resolve it (the team config's
    // developer without FLOWFORGE_DEVELOPER), resolved only when no dir is
    // named.
    let dir = if req.lock_dir.is_some() || cfg.lock_dir.is_some() {
        ffkit::namespace::lock_dir(&cfg, req.lock_dir.as_deref(), req.session, None)
    } else {
        ffkit::namespace::Here::now().and_then(|here| {
            let ns = funcs::caller_namespace(&here)?;
            Ok(ns.lock_dir(&cfg, None, req.session))
        })
    };
    let file = match dir.and_then(|d| {
        // A release is a query: a missing dir is "not held", never made.
        if applet == b"lock-release" {
            ffkit::lock::check_lock_dir(&d)?;
        } else {
            ffkit::lock::make_lock_dir(&d)?;
        }
        ffkit::namespace::lock_file(&d.dir, &req.name)
    }) {
        Ok(f) => f,
        Err(e) => return Some(fail(&e)),
    };
    if applet == b"lock-release" {
        if !held::holds(&file) {
            // Not this shell's: the binary answers (a lock another
            // process took with `lock-acquire NAME`, or "not held").
            return None;
        }
        return Some(match held::release_typed(&file, &cfg) {
            Ok(()) => 0,
            Err(e) => fail(&e),
        });
    }
    let timeout = req.timeout.unwrap_or(cfg.lock_timeout);
    Some(
        match held::acquire(
            &file,
            &req.name.to_string_lossy(),
            &cfg,
            timeout,
            None,
            "ffkit",
        ) {
            Ok(()) => 0,
            Err(held::NotTaken::Signal(sig)) => (128 + sig) as u8,
            Err(held::NotTaken::Failed(e) | held::NotTaken::Denied(e)) => fail(&e),
        },
    )
}

/// A variable as the `ffkit` command reads it: as the shell has it,
/// exported or not (docs/shell.md, "Variables"), except the shell
/// functions' hidden hand-over `FFKIT_FN_LOG_DIR` (config.rs,
/// `fn_log_dir`), read only when exported, as the binary would see it: a
/// plain variable of that name (the functions never set one in the shell)
/// changed where the builtin's `ffkit perf-metrics --dir DIR` read and
/// wrote, while the fallback's binary never saw it.
fn command_var(k: &str) -> Option<OsString> {
    match k {
        "FFKIT_FN_LOG_DIR" => shell::exported_var(k),
        _ => shell::var(k),
    }
}

/// Runs the real binary with the shell's environment: its exported
/// variables, plus every variable ffkit reads as the shell has it, exported
/// or not (unset ones removed), as the fallback wrappers pass them.
fn spawn(argv: &[OsString]) -> u8 {
    let Some(exe) = binary() else {
        errln!(
            "ffkit: the ffkit binary was not found (set FFKIT_BIN); the builtin cannot run this form"
        );
        return 127;
    };
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(argv).env_clear().envs(shell::exported_env());
    // Not the call's mask (SIGCHLD, SIGPIPE, SIGXFSZ blocked), which the
    // binary would hand on to the commands it runs; and not the signals
    // bash ignores for itself (SIGQUIT always, SIGTERM when interactive),
    // which it gives its own commands at their default: `ffkit cache-run
    // -- make` typed with the builtin loaded ran make with SIGQUIT ignored,
    // and in a terminal with SIGTERM ignored too. The job-control stops
    // stay as the shell has them (`child_defaults` says why).
    let defaults = shell::child_defaults();
    ffkit::fsutil::before_exec(&mut cmd, ffkit::fsutil::BeforeExec::EmptyMask { defaults });
    let names = ffkit::config::ENV_VARS
        .iter()
        .map(|v| v.name)
        .chain(ffkit::config::HIDDEN_ENV_VARS.iter().copied());
    for k in names {
        match command_var(k) {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    match shell::with_sigchld_blocked(|| ffkit::hostfd::with_closed_on_exec(|| cmd.status())) {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(c), _) => c as u8,
                (None, Some(s)) => (128 + s) as u8,
                _ => 1,
            }
        }
        Err(e) => {
            errln!(
                "ffkit: cannot run {}: {}",
                exe.display(),
                ffkit::error::os_reason(&e)
            );
            126
        }
    }
}

/// The binary `ffkit init` was run from (`--ffkit-init`), when known.
pub(crate) fn loader_binary() -> Option<PathBuf> {
    BINARY.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The binary: the loader's, else FFKIT_BIN, else `ffkit` on the shell's PATH.
fn binary() -> Option<PathBuf> {
    if let Some(b) = loader_binary() {
        return Some(b);
    }
    if let Some(b) = shell::var("FFKIT_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(b));
    }
    let path = shell::var("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ffkit"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
