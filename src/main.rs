//! The ffkit binary: everything happens in [`ffkit::cli::main`].
//!
//! `#![no_main]`, because ffkit is started thousands of times a day and a
//! process start is most of what a call costs. Rust's usual entry point
//! spends about a fifth of a whole `cache-size` call (~110k of ~490k
//! instructions) asking glibc for the main thread's stack bounds — glibc
//! parses /proc/self/maps — only to print a nicer message on stack overflow.
//! We keep the two parts of that start-up that matter and do them ourselves
//! in [`ffkit::cli::startup`]: SIGPIPE ignored (a closed pipe is an EPIPE
//! that ffkit answers quietly) and file descriptors 0-2 guaranteed open.
//! Arguments are read from `main`'s own `argc`/`argv`: `std::env::args_os`
//! is empty here on musl (only glibc hands them to std before `main`), and
//! the shipped build links musl where it can (DEVELOPERS.md, "The shipped
//! build"). The front end flushes stdout itself before returning.
//!
//! The binary, and only the binary, installs the Redis backend (cargo
//! feature `redis`): the library reaches it only through this installed
//! driver, so the bash builtin, which installs none, does not link the
//! Redis client (docs/architecture.md, "The backend seam").

#![no_main]

#[unsafe(no_mangle)]
extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    use std::os::unix::ffi::OsStrExt;
    ffkit::cli::startup();
    #[cfg(feature = "redis")]
    ffkit::backend::remote::install(&ffkit::backend::redis::DRIVER);
    let n = usize::try_from(argc).unwrap_or(0);
    let args = (0..n).map(|i| {
        // SAFETY: the C runtime calls `main` with `argc` pointers in `argv`,
        // each to a NUL-terminated string that lives as long as the process.
        let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
        std::ffi::OsStr::from_bytes(arg.to_bytes()).to_os_string()
    });
    ffkit::cli::main(args).code().into()
}

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;
