//! `enable -d` of the library's builtins: the shell functions keep working.
//!
//! Each function's body names its own builtin (`_ffkit_fn_NAME`, for
//! speed: shell/ffkit.bash, `_ffkit_builtin_thin`); with that builtin
//! deleted the body would be "command not found" (127). bash calls
//! `NAME_builtin_unload` before it deletes a builtin (for `ffkit`,
//! bash-builtins drops the builtin's value there: `Drop` of `Ffkit`; each
//! `_ffkit_fn_NAME` has its own hook, lib.rs `shell_fn_builtins!`), so each
//! builtin's hook points the functions that lose their way in at the next path
//! (docs/shell.md, "Unloading the builtin"):
//!
//! - while `ffkit` stays, a function whose own builtin goes is given the
//!   body of `_ffkit_gn` (`builtin ffkit --fn NAME "$@" || …`): the same
//!   library, the same held-lock table;
//! - when `ffkit` is gone too and some function has no builtin left, every
//!   function is given its fallback body (`_ffkit_sh_NAME`, which runs the
//!   binary), and the locks this shell holds are handed to the fallback's
//!   table (`_ffkit_lock_files`/`_fds`/`_pids`), so `release_critical_lock`
//!   still releases a lock taken before, and only in this shell.
//!
//!   When FFKIT_BIN is unset or empty, it is set (not exported) to the
//!   binary `ffkit init` was run from, so that path finds the binary even
//!   when `ffkit` is not on PATH.
//!
//! The functions are re-pointed by copying bash function bodies
//! (`shell::copy_function`); no shell code is parsed or run here.

use std::os::unix::ffi::OsStrExt;

use crate::{SHELL_FNS, held, shell};

/// Called from the builtin's `Drop`, which bash's `NAME_builtin_unload`
/// hook runs right before it deletes the builtin `going`.
pub fn entry(going: &str) {
    if shell::in_function() {
        keep_mapped();
    }
    // Never unwind into bash.
    let _ = std::panic::catch_unwind(|| on_unload(going));
}

/// Keeps this library mapped for the rest of the process. Called when a
/// builtin is deleted while a builtin of this library runs shell code (the
/// fallback on a remote backend, `shell::run_function`): a trap in that
/// code (DEBUG under `set -T`, USR1 while the fallback waits) may
/// `enable -d` every builtin, and bash would then dlclose the library with
/// its code still on the stack under the trap; the return into it jumped
/// into unmapped memory (exit 139). One more reference, marked
/// `RTLD_NODELETE`, makes bash's dlclose leave the mapping in place
/// (docs/shell.md, "Unloading the builtin").
///
/// A later `enable -f` of the same path then gets this mapping again,
/// statics included; the hook has emptied the held-lock table (handed
/// over), bash-builtins drops and rebuilds `ffkit`'s state, and the rest
/// are caches every call checks again.
fn keep_mapped() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static KEPT: AtomicBool = AtomicBool::new(false);
    if KEPT.swap(true, Ordering::Relaxed) {
        return;
    }
    let here: fn(&str) = entry;
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr only reads the loader's tables for an address of this
    // library's own code, and writes into `info`, which lives here.
    let found = unsafe { libc::dladdr(here as *const libc::c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return;
    }
    // SAFETY: `dli_fname` is the loader's NUL-terminated path of this
    // library, loaded now; RTLD_NOLOAD loads nothing and runs no
    // constructor: it takes a reference on the loaded library and marks
    // it not to be deleted. The handle is never closed, on purpose.
    let _ = unsafe {
        libc::dlopen(
            info.dli_fname,
            libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        )
    };
}

fn on_unload(going: &str) {
    let present = |b: &str| b != going && shell::builtin_enabled(b);
    let mut own = [false; 32];
    for (i, f) in SHELL_FNS.iter().enumerate() {
        own[i] = present(&format!("_ffkit_fn_{f}"));
    }
    if present("ffkit") {
        for (i, f) in SHELL_FNS.iter().enumerate() {
            // A library of an older build was never given per-function
            // bodies: its functions call `builtin ffkit --fn` already.
            if !own[i] && going == format!("_ffkit_fn_{f}") {
                shell::copy_function("_ffkit_gn", f);
            }
        }
        return;
    }
    if own.iter().take(SHELL_FNS.len()).all(|&o| o) {
        // Only `ffkit` goes: every function still has its own builtin.
        return;
    }
    for f in SHELL_FNS {
        shell::copy_function(&format!("_ffkit_sh_{f}"), f);
    }
    // The binary path finds the binary by FFKIT_BIN, else `ffkit` on PATH
    // (`_ffkit_bin_check`). A shell set up with `eval "$(/abs/ffkit init
    // bash)"` may have neither, and every function would then fail with
    // "ffkit binary not found": the binary init was run with is the one
    // the builtin itself starts, so FFKIT_BIN (unset or empty only; not
    // exported) names it (docs/shell.md, "Unloading the builtin").
    let pid = crate::caller_pid().as_raw_nonzero().get().to_string();
    for (path, fd) in held::hand_over() {
        shell::array_append("_ffkit_lock_files", path.as_os_str().as_bytes());
        shell::array_append("_ffkit_lock_fds", fd.to_string().as_bytes());
        shell::array_append("_ffkit_lock_pids", pid.as_bytes());
    }
    // The global one, so that a `local FFKIT_BIN` of the function that ran
    // `enable -d` does not take it away on return; never an integer
    // variable, whose assignment could leave by a longjmp.
    if let Some(exe) = crate::loader_binary() {
        shell::set_global_if_empty("FFKIT_BIN", exe.as_os_str().as_bytes());
    }
}
