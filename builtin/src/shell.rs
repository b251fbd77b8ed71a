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
use std::sync::atomic::{AtomicI32, Ordering};

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
const ATT_EXPORTED: c_int = 0x000_0001;
const ATT_READONLY: c_int = 0x000_0002;
const ATT_INTEGER: c_int = 0x000_0010;
const ATT_ARRAY: c_int = 0x000_0004;
const ATT_ASSOC: c_int = 0x000_0040;
const ATT_INVISIBLE: c_int = 0x000_1000;
const ATT_NOASSIGN: c_int = 0x000_4000;
const ATT_NAMEREF: c_int = 0x000_0800;

/// bash's `VAR_CONTEXT` (variables.h, unchanged from 4.4 to 5.3): one
/// scope of variables, the global one last.
#[repr(C)]
struct VarContext {
    name: *const c_char,
    scope: c_int,
    flags: c_int,
    up: *const VarContext,
    down: *const VarContext,
    table: *const HashTable,
}

/// bash's `HASH_TABLE` (hashlib.h, unchanged from 4.4 to 5.3).
#[repr(C)]
struct HashTable {
    bucket_array: *const *const Bucket,
    nbuckets: c_int,
    nentries: c_int,
}

/// bash's `BUCKET_CONTENTS` (hashlib.h, unchanged from 4.4 to 5.3).
#[repr(C)]
struct Bucket {
    next: *const Bucket,
    key: *const c_char,
    data: *mut c_void,
    khash: std::ffi::c_uint,
    times_found: c_int,
}

unsafe extern "C" {
    fn find_variable(name: *const c_char) -> *mut ShellVar;
    fn get_variable_value(var: *mut ShellVar) -> *const c_char;
    fn legal_identifier(name: *const c_char) -> c_int;
    fn bind_variable(name: *const c_char, value: *const c_char, flags: c_int) -> *mut ShellVar;
    fn bind_global_variable(
        name: *const c_char,
        value: *const c_char,
        flags: c_int,
    ) -> *mut ShellVar;
    fn find_global_variable(name: *const c_char) -> *mut ShellVar;
    fn maybe_make_export_env();
    fn signal_is_hard_ignored(sig: c_int) -> c_int;
    fn signal_is_ignored(sig: c_int) -> c_int;
    static subshell_environment: c_int;
    static job_control: c_int;
    static export_env: *const *const c_char;
    static interrupt_state: c_int;
    static terminating_signal: c_int;
    static pending_traps: [c_int; 0];
    static dollar_dollar_pid: libc::pid_t;
    static shell_variables: *const VarContext;
    static temporary_env: *const HashTable;
    static dist_version: *const c_char;
    fn hash_string(s: *const c_char) -> std::ffi::c_uint;
    fn array_reference(a: *mut c_void, ind: libc::intmax_t) -> *const c_char;
    fn assoc_reference(h: *mut c_void, key: *const c_char) -> *const c_char;
    fn find_variable_noref(name: *const c_char) -> *mut ShellVar;
    fn find_shell_builtin(name: *const c_char) -> *const c_void;
    fn find_function(name: *const c_char) -> *mut ShellVar;
    fn execute_shell_function(var: *mut ShellVar, words: *const WordList) -> c_int;
    fn begin_unwind_frame(tag: *const c_char);
    fn run_unwind_frame(tag: *const c_char);
    fn unwind_protect_mem(var: *mut c_char, size: c_int);
    static mut exit_immediately_on_error: c_int;
    static mut builtin_ignoring_errexit: c_int;
    fn bind_function(name: *const c_char, value: *mut c_void) -> *mut ShellVar;
    fn bind_array_variable(
        name: *const c_char,
        ind: libc::intmax_t,
        value: *const c_char,
        flags: c_int,
    ) -> *mut ShellVar;
}

/// The value of shell variable `name` as `$name` reads it (exported or
/// not, a one-command assignment `VAR=x ffkit …` included, a nameref read
/// through to its target): an indexed array's element 0 and an
/// associative array's key `0`, as the fallback and the old library read
/// them (docs/shell.md, "Variables"); `None` when that is unset, or the
/// variable is declared without a value.
pub fn var(name: &str) -> Option<OsString> {
    // Every call reads about twenty variables (each validated on every
    // call: docs/shell.md, "Bad settings"), most of them unset: the
    // lookup is [`lookup`]'s, and a value is copied only when there is one.
    let v = match lookup(name) {
        Ok(v) => v,
        Err(Some(r)) => return nameref_element(r),
        Err(None) => return None,
    };
    // SAFETY: `v` is bash's variable, valid until the next assignment; the
    // value is copied out at once. `get_variable_value` is bash's own
    // reading of `$name` (variables.c), called only for an array.
    unsafe {
        let attrs = (*v).attributes;
        if attrs & ATT_INVISIBLE != 0 {
            return None;
        }
        let value = if attrs & (ATT_ARRAY | ATT_ASSOC) != 0 {
            get_variable_value(v)
        } else {
            (*v).value
        };
        if value.is_null() {
            return None;
        }
        Some(OsString::from_vec(
            CStr::from_ptr(value).to_bytes().to_vec(),
        ))
    }
}

/// [`var`] of a variable bash hands the commands it runs: exported, or
/// a one-command assignment (`VAR=x ffkit …`, which bash marks exported),
/// and not an array (bash exports none).
pub fn exported_var(name: &str) -> Option<OsString> {
    let v = lookup(name).ok()?;
    // SAFETY: `v` is bash's variable, valid until the next assignment; only
    // its attribute bits are read.
    let attrs = unsafe { (*v).attributes };
    if attrs & ATT_EXPORTED == 0 || attrs & (ATT_ARRAY | ATT_ASSOC) != 0 {
        return None;
    }
    var(name)
}

/// Exactly what bash's `find_variable(name)` returns, or null.
///
/// `find_variable` hashes the name again for every table it searches and
/// is most of what a call spends on settings (BENCHMARKS.md, "Fourth pass
/// on the lock pair"). This walks the same tables in the same order with
/// the name hashed once: bash's scopes (`shell_variables`, innermost
/// first, down to the global table), each a `HASH_TABLE` searched as
/// `hash_search` does. Whatever this walk does not reproduce goes to
/// `find_variable` itself: a temporary environment (`VAR=x cmd`, searched
/// first by bash while a builtin runs), a variable with a dynamic value or
/// a nameref, and any bash whose tables did not pass [`fast_lookup_ok`].
///
/// `Err(Some(nameref))` when `name` is a nameref whose target names no
/// variable (`declare -n X='arr[1]'`: bash finds no variable `arr[1]`,
/// while `$X` reads that element: [`nameref_element`]); `Err(None)` when
/// unset.
fn lookup(name: &str) -> Result<*mut ShellVar, Option<*mut ShellVar>> {
    // The names are short: made a C string on the stack, hashed in the
    // same pass (a name holding a NUL names no variable).
    let mut buf = [0u8; 64];
    let heap;
    let (c, hash): (&CStr, u32) = if name.len() < buf.len() {
        let mut h = FNV_OFFSET;
        for (d, &b) in buf.iter_mut().zip(name.as_bytes()) {
            if b == 0 {
                return Err(None);
            }
            *d = b;
            h = fnv1_step(h, b);
        }
        // SAFETY: the name's bytes hold no NUL (checked above) and the
        // buffer's next byte is the zero it was filled with.
        let c = unsafe { CStr::from_bytes_with_nul_unchecked(&buf[..=name.len()]) };
        (c, h)
    } else {
        heap = CString::new(name).map_err(|_| None)?;
        (heap.as_c_str(), fnv1(heap.as_bytes()))
    };
    // SAFETY: `c` is a valid C string. `temporary_env` is a plain read of
    // bash's global. The walk reads bash's scope chain and hash tables,
    // whose layout `fast_lookup_ok` checked against `find_variable` on this
    // bash; nothing is written or kept.
    unsafe {
        let mut maybe_ref = true;
        if fast_lookup_ok() && std::ptr::read_volatile(&raw const temporary_env).is_null() {
            let v = walk_scopes(c, hash);
            if v.is_null() || ((*v).dynamic_value.is_null() && (*v).attributes & ATT_NAMEREF == 0) {
                return if v.is_null() { Err(None) } else { Ok(v) };
            }
            maybe_ref = (*v).attributes & ATT_NAMEREF != 0;
        }
        let v = find_variable(c.as_ptr());
        if !v.is_null() {
            return Ok(v);
        }
        // Only where a nameref may be (not on the usual unset name).
        if maybe_ref {
            let r = find_variable_noref(c.as_ptr());
            if !r.is_null() && (*r).attributes & ATT_NAMEREF != 0 {
                return Err(Some(r));
            }
        }
        Err(None)
    }
}

/// `$X` of a nameref X whose target is an array element, `arr[N]` (N a
/// decimal index) or `assoc[KEY]` (KEY as written): that element's value,
/// as bash expands it. A subscript bash would expand first (`arr[$i]`,
/// `arr[i+1]`) is not evaluated here: unset (docs/shell.md, "Variables").
fn nameref_element(r: *mut ShellVar) -> Option<OsString> {
    // SAFETY: `r` is bash's nameref variable (from find_variable_noref),
    // valid until the next assignment; its value and the array's element
    // are copied out at once; array_reference/assoc_reference only read.
    unsafe {
        if (*r).value.is_null() {
            return None;
        }
        let t = CStr::from_ptr((*r).value).to_bytes();
        let open = t.iter().position(|&b| b == b'[')?;
        if open == 0 || t.last() != Some(&b']') {
            return None;
        }
        let (base, sub) = (&t[..open], &t[open + 1..t.len() - 1]);
        let base = CString::new(base).ok()?;
        let a = find_variable(base.as_ptr());
        if a.is_null() || (*a).value.is_null() || (*a).attributes & ATT_INVISIBLE != 0 {
            return None;
        }
        let value = if (*a).attributes & ATT_ASSOC != 0 {
            let k = CString::new(sub).ok()?;
            assoc_reference((*a).value.cast(), k.as_ptr())
        } else {
            let s = std::str::from_utf8(sub).ok()?;
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let i: libc::intmax_t = s.parse().ok()?;
            if (*a).attributes & ATT_ARRAY != 0 {
                array_reference((*a).value.cast(), i)
            } else if i == 0 {
                (*a).value
            } else {
                std::ptr::null()
            }
        };
        if value.is_null() {
            return None;
        }
        Some(OsString::from_vec(
            CStr::from_ptr(value).to_bytes().to_vec(),
        ))
    }
}

/// bash's `hash_string` (hashlib.c): 32-bit FNV-1 over the name's bytes,
/// each a C `char` (signed on x86-64, so a byte above 127 is
/// sign-extended). [`fast_lookup_ok`] compares it with bash's own.
fn fnv1(name: &[u8]) -> u32 {
    name.iter().fold(FNV_OFFSET, |h, &b| fnv1_step(h, b))
}

const FNV_OFFSET: u32 = 2_166_136_261;

fn fnv1_step(h: u32, b: u8) -> u32 {
    h.wrapping_mul(16_777_619) ^ (b as c_char as i32 as u32)
}

/// bash's `var_lookup(name, shell_variables)`: the first scope, innermost
/// first, whose table holds `name`.
///
/// # Safety
/// Only on a bash whose layout [`fast_lookup_ok`] confirmed.
unsafe fn walk_scopes(name: &CStr, hash: u32) -> *mut ShellVar {
    // SAFETY: (the caller's) bash's own pointers, read only.
    unsafe {
        let mut vc = std::ptr::read_volatile(&raw const shell_variables);
        while !vc.is_null() {
            let t = (*vc).table;
            if !t.is_null()
                && (*t).nentries > 0
                && (*t).nbuckets > 0
                && !(*t).bucket_array.is_null()
            {
                // HASH_BUCKET: the table sizes are powers of two.
                let at = (hash & ((*t).nbuckets as u32 - 1)) as usize;
                let mut b = *(*t).bucket_array.add(at);
                while !b.is_null() {
                    if (*b).khash == hash && CStr::from_ptr((*b).key) == name {
                        return (*b).data.cast();
                    }
                    b = (*b).next;
                }
            }
            vc = (*vc).down;
        }
        std::ptr::null_mut()
    }
}

/// Whether [`walk_scopes`] may stand in for `find_variable` on this bash:
/// a bash whose `VAR_CONTEXT`, `HASH_TABLE` and `BUCKET_CONTENTS` are the
/// ones declared here (4.4 to 5.3), whose `hash_string` is [`fnv1`], and
/// on which the walk finds the very variables `find_variable` finds (a set
/// one, an unset one). Decided once per process, at the first lookup.
fn fast_lookup_ok() -> bool {
    use std::sync::atomic::AtomicU8;
    // 0: not decided yet, 1: yes, 2: no.
    static OK: AtomicU8 = AtomicU8::new(0);
    match OK.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    // SAFETY: `dist_version` is bash's version string ("5.2"); the probes
    // below run only on the versions whose layouts are declared here.
    let ok = unsafe {
        let v = CStr::from_ptr(std::ptr::read_volatile(&raw const dist_version)).to_bytes();
        let known = matches!(v, b"4.4" | b"5.0" | b"5.1" | b"5.2" | b"5.3");
        known
            && std::ptr::read_volatile(&raw const temporary_env).is_null()
            && [c"IFS", c"BASH_VERSION", c"_ffkit_no_such_variable_"]
                .into_iter()
                .all(|n| {
                    hash_string(n.as_ptr()) == fnv1(n.to_bytes())
                        && walk_scopes(n, fnv1(n.to_bytes())) == find_variable(n.as_ptr())
                })
    };
    OK.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
    ok
}

/// Why `-v VAR` could not assign.
#[derive(Debug, PartialEq, Eq)]
pub enum AssignError {
    InvalidName,
    Readonly,
    Integer,
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
        attributes_allow(find_variable(c.as_ptr()))
    }
}

/// Whether bash's variable `v` (null: none) can take a value from us:
/// not readonly, and not an integer (`declare -i`), whose assignment bash
/// evaluates as arithmetic and, on a syntax error, leaves by a longjmp
/// that would skip the builtin's own frames (and the lock bash-builtins
/// holds for the call: the next call would hang).
///
/// # Safety
/// `v` is null or a variable bash returned, not yet freed.
unsafe fn attributes_allow(v: *const ShellVar) -> Result<(), AssignError> {
    if v.is_null() {
        return Ok(());
    }
    // SAFETY: per the contract above.
    let att = unsafe { (*v).attributes };
    if att & (ATT_READONLY | ATT_NOASSIGN) != 0 {
        Err(AssignError::Readonly)
    } else if att & ATT_INTEGER != 0 {
        Err(AssignError::Integer)
    } else {
        Ok(())
    }
}

/// Assigns `value` to the global shell variable `name` when the global
/// is unset or empty (a `local` of that name in a calling function is
/// left alone, and the value outlives it); `false` when nothing was set.
pub fn set_global_if_empty(name: &str, value: &[u8]) -> bool {
    let (Ok(n), Ok(v)) = (CString::new(name), CString::new(value)) else {
        return false;
    };
    // SAFETY: valid C strings; bash copies both; the variable read is the
    // one bash just returned.
    unsafe {
        let g = find_global_variable(n.as_ptr());
        if !g.is_null() && !(*g).value.is_null() && *(*g).value != 0 {
            return false;
        }
        if attributes_allow(g).is_err() {
            return false;
        }
        !bind_global_variable(n.as_ptr(), v.as_ptr(), 0).is_null()
    }
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

/// bash's `subshell_environment` flag of a subshell made for `command &`.
const SUBSHELL_ASYNC: c_int = 0x01;

/// The signals bash ignores for itself but gives the commands it starts
/// at their default (bit `N-1` for signal N), for a child the builtin
/// starts: SIGQUIT (ignored by every bash) and SIGTERM (by an interactive
/// one) when ignored now, but not when the shell started and not by the
/// script's `trap '' SIG`; bash resets these for its own commands
/// (`restore_original_signals`). Not the job-control stops (SIGTSTP,
/// SIGTTIN, SIGTTOU): bash resets those only for a job it puts in a
/// process group of its own (`default_tty_job_signals`), and ignores them
/// for a child left in the shell's group (`$( )`), as the builtin's child
/// always is: at their default, Ctrl-Z stopped the binary and its command
/// while the shell, ignoring it, waited for them and hung.
/// In a background job of a shell without job control SIGQUIT is left as
/// it is: bash ignores it (and SIGINT) for a command run with `&`, which
/// the builtin cannot tell from a function run so. SIGINT is never reset:
/// bash catches it rather than ignoring it, so an ignored SIGINT was
/// ignored by the caller, a trap or a background job, and stays so. Every
/// other disposition is inherited as bash would hand it on (nohup's
/// SIGHUP stays ignored).
pub fn child_defaults() -> u64 {
    // SAFETY: plain reads of two ints bash sets as it forks and starts.
    let background = unsafe {
        std::ptr::read_volatile(&raw const subshell_environment) & SUBSHELL_ASYNC != 0
            && std::ptr::read_volatile(&raw const job_control) == 0
    };
    let mut bits = 0u64;
    for sig in [libc::SIGQUIT, libc::SIGTERM] {
        if background && sig == libc::SIGQUIT {
            continue;
        }
        // SAFETY: a null new action only reads the disposition into `old`,
        // plain data sigaction fills; the two bash calls read its
        // `sigmodes` table, indexed by a valid signal number.
        let reset = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
                && signal_is_hard_ignored(sig) == 0
                && signal_is_ignored(sig) == 0
        };
        if reset {
            bits |= 1 << (sig - 1);
        }
    }
    bits
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
/// under `std::process` (ECHILD). std does not reset the mask in the
/// child: start it with `fsutil::BeforeExec::EmptyMask`. The pending
/// SIGCHLD reaches bash on unblock, when there is nothing left to reap.
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
/// its first unset index: the fallback's held-lock table walks its arrays
/// from 0 to `${#name[@]} - 1` (shell/ffkit.bash), so they must stay
/// dense. (An index computed from the array's header once left a hole
/// after the first entry, and a lock handed over second was then invisible
/// to that walk: docs/shell.md, "Unloading the builtin".)
pub fn array_append(name: &str, value: &[u8]) {
    let (Ok(n), Ok(v)) = (CString::new(name), CString::new(value)) else {
        return;
    };
    // SAFETY: find_variable returns bash's variable or null; an indexed
    // array's value is its ARRAY, which bash's array_reference reads (null
    // for an unset index); bind_array_variable copies the value.
    unsafe {
        let var = find_variable(n.as_ptr());
        let mut at: libc::intmax_t = 0;
        if !var.is_null() && (*var).attributes & ATT_ARRAY != 0 && !(*var).value.is_null() {
            while !array_reference((*var).value.cast(), at).is_null() {
                at += 1;
            }
        }
        bind_array_variable(n.as_ptr(), at, v.as_ptr(), 0);
    }
}

/// bash's `WORD_LIST` (command.h): a builtin's arguments.
#[repr(C)]
pub struct WordList {
    next: *const WordList,
    word: *const WordDesc,
}

/// bash's `WORD_DESC` (command.h).
#[repr(C)]
struct WordDesc {
    word: *const c_char,
    flags: c_int,
}

/// A builtin's arguments, copied.
///
/// # Safety
/// `words` is null or the list bash passed to the builtin.
pub unsafe fn words(mut words: *const WordList) -> Vec<OsString> {
    let mut out = Vec::new();
    // SAFETY: (the caller's) bash's list, read while the builtin runs.
    unsafe {
        while !words.is_null() {
            let w = (*words).word;
            if !w.is_null() && !(*w).word.is_null() {
                out.push(OsString::from_vec(
                    CStr::from_ptr((*w).word).to_bytes().to_vec(),
                ));
            }
            words = (*words).next;
        }
    }
    out
}

/// How many [`run_function`] calls are on the stack: while one is, this
/// library's code is on the stack under the shell code it runs, and a trap
/// in that code may `enable -d` every builtin of the library
/// (`unload::entry` then keeps the library mapped). A `c_int`, so bash's
/// `unwind_protect_mem` saves and restores it with the frame's other ints.
static FALLBACK_DEPTH: AtomicI32 = AtomicI32::new(0);

/// Whether shell code run by [`run_function`] is running now.
pub fn in_function() -> bool {
    FALLBACK_DEPTH.load(Ordering::Relaxed) > 0
}

/// Runs shell function `name` with the arguments `args` (a builtin's own
/// list), as bash runs a function called by name: `execute_shell_function`,
/// the call bash's loadable builtins use. Returns its status; a function
/// that is not defined is 127 with one line, as bash says it.
///
/// `set -e` is off inside it, as bash's `eval` turns it off for code it
/// runs where the caller's context ignores failures: a builtin cannot see
/// that context (`f || handle`, `if f`), so the function's status, returned
/// as the builtin's, is what `set -e` judges, in the caller's context, as
/// for any function call. (The functions' code returns its statuses; it
/// never relies on `set -e` to stop it.) The option is restored by bash's
/// unwind-protect, also when bash leaves by a longjmp.
///
/// bash may leave this call by a longjmp (`exit`, an interrupt), skipping
/// every frame above it up to bash's own: the caller keeps nothing there
/// that needs dropping. The function's own list cell and name word live
/// on this frame, so such a jump leaks nothing.
pub fn run_function(name: &CStr, args: *const WordList) -> c_int {
    const TAG: &CStr = c"ffkit-fallback";
    // SAFETY: bash's function table and the function runner, with a
    // NUL-terminated name and a list whose head lives until the call
    // returns (bash copies the arguments into the positional parameters
    // and keeps neither the list nor its words). The two ints are bash's
    // globals, saved and restored by bash's own unwind-protect frame, as
    // its `eval` builtin does; the shell is single-threaded.
    unsafe {
        let f = find_function(name.as_ptr());
        if f.is_null() {
            errln!("bash: {}: command not found", name.to_string_lossy());
            return 127;
        }
        let word = WordDesc {
            word: name.as_ptr(),
            flags: 0,
        };
        let list = WordList {
            next: args,
            word: &word,
        };
        begin_unwind_frame(TAG.as_ptr());
        let size = std::mem::size_of::<c_int>() as c_int;
        unwind_protect_mem((&raw mut exit_immediately_on_error).cast(), size);
        unwind_protect_mem((&raw mut builtin_ignoring_errexit).cast(), size);
        // Restored by the same frame, also when bash leaves by a longjmp
        // (its top level runs the pending unwind-protects).
        unwind_protect_mem(FALLBACK_DEPTH.as_ptr().cast(), size);
        FALLBACK_DEPTH.fetch_add(1, Ordering::Relaxed);
        exit_immediately_on_error = 0;
        builtin_ignoring_errexit = 1;
        let status = execute_shell_function(f, &list);
        run_unwind_frame(TAG.as_ptr());
        status
    }
}
