//! The bash side of the builtin: the shell's own variables (read for the
//! configuration, exported or not, and assigned for `-v VAR`), the
//! signal flags bash's handlers set, `$$`, and the environment bash would give a
//! command it runs.
//!
//! bash exports these symbols to loadable builtins (its
//! `examples/loadables` use the same ones). Nothing here calls back into
//! bash code that could longjmp (`QUIT`, `throw_to_top_level`,
//! `check_signals`): the builtin only reads flags and returns a status,
//! and bash acts on the signal after the builtin returns.

use std::ffi::{CStr, CString, OsString, c_char, c_int, c_void};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The head of bash's `SHELL_VAR` (variables.h), as far as it is read.
#[repr(C)]
struct ShellVar {
    name: *const c_char,
    value: *mut c_char,
    exportstr: *const c_char,
    dynamic_value: *const c_void,
    assign_func: *const c_void,
    attributes: c_int,
    context: c_int,
}

// Attribute bits from bash's variables.h.
const ATT_READONLY: c_int = 0x000_0002;
const ATT_ARRAY: c_int = 0x000_0004;
const ATT_ASSOC: c_int = 0x000_0040;
const ATT_INVISIBLE: c_int = 0x000_1000;
const ATT_NOASSIGN: c_int = 0x000_4000;

unsafe extern "C" {
    fn find_variable(name: *const c_char) -> *mut ShellVar;
    fn legal_identifier(name: *const c_char) -> c_int;
    fn bind_variable(name: *const c_char, value: *const c_char, flags: c_int) -> *mut ShellVar;
    fn maybe_make_export_env();
    static export_env: *const *const c_char;
    static interrupt_state: c_int;
    static terminating_signal: c_int;
    static pending_traps: [c_int; 0];
    static dollar_dollar_pid: libc::pid_t;
    fn find_shell_builtin(name: *const c_char) -> *const c_void;
    fn find_function(name: *const c_char) -> *mut ShellVar;
    fn bind_function(name: *const c_char, value: *mut c_void) -> *mut ShellVar;
    fn bind_array_variable(
        name: *const c_char,
        ind: libc::intmax_t,
        value: *const c_char,
        flags: c_int,
    ) -> *mut ShellVar;
}

/// The head of bash's `ARRAY` (array.h), as far as it is read.
#[repr(C)]
struct Array {
    kind: c_int,
    max_index: libc::intmax_t,
}

/// The value of shell variable `name` (exported or not, a one-command
/// assignment `VAR=x ffkit …` included), or `None` when it is unset, an
/// array, or declared without a value.
pub fn var(name: &str) -> Option<OsString> {
    // Every call reads a dozen or more variables: their names are short,
    // so they are made C strings on the stack, not in an allocation.
    let mut buf = [0u8; 64];
    let heap;
    let c: &CStr = if name.len() < buf.len() {
        buf[..name.len()].copy_from_slice(name.as_bytes());
        // Refuses a name holding a NUL.
        CStr::from_bytes_with_nul(&buf[..=name.len()]).ok()?
    } else {
        heap = CString::new(name).ok()?;
        &heap
    };
    // SAFETY: `c` is a valid C string; bash returns a pointer into its own
    // variable table or null, valid until the next assignment, and the value
    // is copied out at once.
    unsafe {
        let v = find_variable(c.as_ptr());
        if v.is_null() {
            return None;
        }
        let attrs = (*v).attributes;
        if attrs & (ATT_ARRAY | ATT_ASSOC | ATT_INVISIBLE) != 0 || (*v).value.is_null() {
            return None;
        }
        Some(OsString::from_vec(
            CStr::from_ptr((*v).value).to_bytes().to_vec(),
        ))
    }
}

/// Why `-v VAR` could not assign.
#[derive(Debug, PartialEq, Eq)]
pub enum AssignError {
    InvalidName,
    Readonly,
    Nul,
}

/// Checks that `name` can be assigned, as `printf -v` does before it runs.
pub fn check_assignable(name: &str) -> Result<(), AssignError> {
    let c = CString::new(name).map_err(|_| AssignError::InvalidName)?;
    // SAFETY: valid C string; both functions only read it and bash's tables.
    unsafe {
        if legal_identifier(c.as_ptr()) == 0 {
            return Err(AssignError::InvalidName);
        }
        let v = find_variable(c.as_ptr());
        if !v.is_null() && (*v).attributes & (ATT_READONLY | ATT_NOASSIGN) != 0 {
            return Err(AssignError::Readonly);
        }
    }
    Ok(())
}

/// Assigns `value` to shell variable `name` (after [`check_assignable`]).
pub fn assign(name: &str, value: &[u8]) -> Result<(), AssignError> {
    check_assignable(name)?;
    let n = CString::new(name).map_err(|_| AssignError::InvalidName)?;
    let v = CString::new(value).map_err(|_| AssignError::Nul)?;
    // SAFETY: valid C strings; bash copies both.
    let r = unsafe { bind_variable(n.as_ptr(), v.as_ptr(), 0) };
    if r.is_null() {
        Err(AssignError::Readonly)
    } else {
        Ok(())
    }
}

/// The signal a lock wait must give up for: SIGINT when bash's handler set
/// `interrupt_state`, a terminating signal (SIGTERM, SIGHUP … untrapped),
/// or SIGINT, SIGTERM, SIGHUP or SIGQUIT caught by a trap. bash runs the
/// trap or the default action once the builtin returns 128 + that signal.
/// Any other trapped signal (CHLD, USR1, WINCH, ALRM …) lets the script go
/// on: the wait continues and bash runs its trap when the builtin returns,
/// as it does for a foreground command (docs/shell.md).
pub fn wait_ending_signal() -> Option<c_int> {
    // SAFETY: plain reads of `volatile sig_atomic_t` globals, and of
    // `pending_traps[sig]` (an int array of NSIG entries, 65 on Linux),
    // that bash's signal handlers write; a volatile read sees the store.
    unsafe {
        let term = std::ptr::read_volatile(&raw const terminating_signal);
        if term != 0 {
            return Some(term);
        }
        if std::ptr::read_volatile(&raw const interrupt_state) != 0 {
            return Some(libc::SIGINT);
        }
        let traps = (&raw const pending_traps).cast::<c_int>();
        [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT]
            .into_iter()
            .find(|&sig| std::ptr::read_volatile(traps.add(sig as usize)) != 0)
    }
}

/// Whether this call runs in a forked subshell of the shell (`( )`, `$( )`,
/// a pipeline stage, `&`): its pid is not the shell's `$$`.
pub fn in_subshell() -> bool {
    // SAFETY: a plain read of bash's `$$`, set once at start-up.
    let shell = unsafe { std::ptr::read_volatile(&raw const dollar_dollar_pid) };
    shell > 0 && crate::caller_pid().as_raw_nonzero().get() != shell
}

/// The environment bash would give a command it runs now (its exported
/// variables), as `NAME=value` entries.
pub fn exported_env() -> Vec<(OsString, OsString)> {
    let mut out = Vec::new();
    // SAFETY: maybe_make_export_env rebuilds bash's `export_env`, a
    // null-terminated array of C strings owned by bash; it is read at once.
    unsafe {
        maybe_make_export_env();
        let mut p = export_env;
        if p.is_null() {
            return out;
        }
        while !(*p).is_null() {
            let bytes = CStr::from_ptr(*p).to_bytes();
            if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
                out.push((
                    std::ffi::OsStr::from_bytes(&bytes[..eq]).to_os_string(),
                    std::ffi::OsStr::from_bytes(&bytes[eq + 1..]).to_os_string(),
                ));
            }
            p = p.add(1);
        }
    }
    out
}

/// Runs `f` (which starts and waits for a child process) with SIGCHLD
/// blocked. bash's SIGCHLD handler reaps every child it sees
/// (`waitpid(-1)`), so without this the child's status could be taken from
/// under `std::process` (ECHILD). The child itself starts with an empty
/// mask (std resets it); the pending SIGCHLD reaches bash on unblock, when
/// there is nothing left to reap.
pub fn with_sigchld_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data that sigemptyset/sigaddset initialise;
    // pthread_sigmask only changes this thread's mask, restored below.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    let r = f();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    r
}

/// Whether `name` is an enabled builtin of the shell now.
pub fn builtin_enabled(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: a lookup in bash's builtin table by a NUL-terminated name;
    // nothing is kept.
    unsafe { !find_shell_builtin(c.as_ptr()).is_null() }
}

/// Defines function `to` with a copy of function `from`'s body (bash's
/// `bind_function` copies it), as `eval "to() …"` would; false when `from`
/// is not a function. `${FUNCNAME[0]}` in the copy is `to`. A call of `to`
/// under way runs its own copy of the old body (bash copies a body before
/// running it), so this is safe from within `to` too.
pub fn copy_function(from: &str, to: &str) -> bool {
    let (Ok(f), Ok(t)) = (CString::new(from), CString::new(to)) else {
        return false;
    };
    // SAFETY: bash's own function table calls, with NUL-terminated names;
    // `value` of a function's variable is its COMMAND, which bind_function
    // copies before anything is freed.
    unsafe {
        let v = find_function(f.as_ptr());
        if v.is_null() || (*v).value.is_null() {
            return false;
        }
        !bind_function(t.as_ptr(), (*v).value.cast()).is_null()
    }
}

/// Appends `value` to the indexed array `name` (created when unset), at
/// its highest index plus one.
pub fn array_append(name: &str, value: &[u8]) {
    let (Ok(n), Ok(v)) = (CString::new(name), CString::new(value)) else {
        return;
    };
    // SAFETY: find_variable returns bash's variable or null; an indexed
    // array's value is its ARRAY, whose head is read; bind_array_variable
    // copies the value.
    unsafe {
        let var = find_variable(n.as_ptr());
        let at = if var.is_null() || (*var).attributes & ATT_ARRAY == 0 || (*var).value.is_null() {
            0
        } else {
            (*(*var).value.cast::<Array>()).max_index + 1
        };
        bind_array_variable(n.as_ptr(), at, v.as_ptr(), 0);
    }
}
