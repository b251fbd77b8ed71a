//! The one error type of ffkit and the contract's exit-code table.
//!
//! Every failure anywhere in the library becomes an [`Error`]; `main` prints
//! it as one line and exits with [`Error::exit_code`]. The table in
//! [`ExitKind::ALL`] is the old library's exit-code table verbatim; the man
//! pages' EXIT STATUS section and the README's exit-code table are generated
//! from it, so they cannot drift.

use std::io;
use std::path::{Path, PathBuf};

/// One row of the contract's exit-code table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Success,
    General,
    Validation,
    Permission,
    NotFound,
    Conflict,
    Timeout,
    DiskSpace,
    LockFailed,
    Corruption,
    Config,
}

impl ExitKind {
    /// Every row, in code order: the source for docs and man pages.
    pub const ALL: [ExitKind; 11] = [
        ExitKind::Success,
        ExitKind::General,
        ExitKind::Validation,
        ExitKind::Permission,
        ExitKind::NotFound,
        ExitKind::Conflict,
        ExitKind::Timeout,
        ExitKind::DiskSpace,
        ExitKind::LockFailed,
        ExitKind::Corruption,
        ExitKind::Config,
    ];

    pub const fn code(self) -> u8 {
        match self {
            ExitKind::Success => 0,
            ExitKind::General => 1,
            ExitKind::Validation => 2,
            ExitKind::Permission => 3,
            ExitKind::NotFound => 4,
            ExitKind::Conflict => 5,
            ExitKind::Timeout => 6,
            ExitKind::DiskSpace => 8,
            ExitKind::LockFailed => 9,
            ExitKind::Corruption => 10,
            ExitKind::Config => 12,
        }
    }

    /// The old library's constant name.
    pub const fn name(self) -> &'static str {
        match self {
            ExitKind::Success => "FF_SUCCESS",
            ExitKind::General => "FF_ERROR_GENERAL",
            ExitKind::Validation => "FF_ERROR_VALIDATION",
            ExitKind::Permission => "FF_ERROR_PERMISSION",
            ExitKind::NotFound => "FF_ERROR_NOT_FOUND",
            ExitKind::Conflict => "FF_ERROR_CONFLICT",
            ExitKind::Timeout => "FF_ERROR_TIMEOUT",
            ExitKind::DiskSpace => "FF_ERROR_DISK_SPACE",
            ExitKind::LockFailed => "FF_ERROR_LOCK_FAILED",
            ExitKind::Corruption => "FF_ERROR_CORRUPTION",
            ExitKind::Config => "FF_ERROR_CONFIG",
        }
    }

    pub const fn meaning(self) -> &'static str {
        match self {
            ExitKind::Success => "done",
            ExitKind::General => {
                "anything else; also \"not found / expired\" where a plain boolean answer is expected"
            }
            ExitKind::Validation => {
                "bad arguments or input (bad key, bad TTL, malformed batch line)"
            }
            ExitKind::Permission => "cannot read, write or create",
            ExitKind::NotFound => "no such entry, lock or file",
            ExitKind::Conflict => "lock held by someone else (non-blocking request)",
            ExitKind::Timeout => "waited LOCK_TIMEOUT and gave up",
            ExitKind::DiskSpace => "out of disk space; nothing half-written is left visible",
            ExitKind::LockFailed => "lock could not be taken for another reason",
            ExitKind::Corruption => "damaged data that could not be healed automatically",
            ExitKind::Config => "bad environment variable or option value",
        }
    }
}

/// Every way an ffkit command can fail. The message is the "what failed: why"
/// part of the one stderr line; the applet prefix is added by the front end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    General(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    DiskSpace(String),
    #[error("{0}")]
    LockFailed(String),
    #[error("{0}")]
    Corruption(String),
    #[error("{0}")]
    Config(String),
    /// A system call failed on a path; the errno decides the exit code.
    #[error("{what} {}: {}", path.display(), io_reason(source))]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Command-line parsing failed; clap renders the message.
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O failure: `what` is a verb phrase ("cannot write").
    pub fn io(what: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Io {
            what,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn kind(&self) -> ExitKind {
        match self {
            Error::General(_) => ExitKind::General,
            Error::Validation(_) | Error::Usage(_) => ExitKind::Validation,
            Error::Permission(_) => ExitKind::Permission,
            Error::NotFound(_) => ExitKind::NotFound,
            Error::Conflict(_) => ExitKind::Conflict,
            Error::Timeout(_) => ExitKind::Timeout,
            Error::DiskSpace(_) => ExitKind::DiskSpace,
            Error::LockFailed(_) => ExitKind::LockFailed,
            Error::Corruption(_) => ExitKind::Corruption,
            Error::Config(_) => ExitKind::Config,
            Error::Io { source, .. } => io_kind(source),
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.kind().code()
    }
}

/// Maps an errno to the contract's table: permission problems (including a
/// symlink refused by O_NOFOLLOW) are 3, a full disk or quota is 8, a missing
/// file is 4, everything else is 1.
pub fn io_kind(e: &io::Error) -> ExitKind {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::ELOOP) => ExitKind::Permission,
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => ExitKind::DiskSpace,
        Some(libc::ENOENT | libc::ENOTDIR) => ExitKind::NotFound,
        _ => match e.kind() {
            io::ErrorKind::PermissionDenied => ExitKind::Permission,
            io::ErrorKind::NotFound => ExitKind::NotFound,
            _ => ExitKind::General,
        },
    }
}

/// glibc's words for the errnos whose text musl words differently
/// (`strerror`), for those a file, process or socket call can return. The
/// shipped binary may link musl while the bash builtin runs on bash's glibc
/// (DEVELOPERS.md, "The shipped build"); with this table one failure reads
/// the same on every path. A test checks each entry against glibc.
const GLIBC_TEXTS: &[(i32, &str)] = &[
    (libc::EIO, "Input/output error"),
    (libc::ECHILD, "No child processes"),
    (libc::ENOMEM, "Cannot allocate memory"),
    (libc::EBUSY, "Device or resource busy"),
    (libc::EXDEV, "Invalid cross-device link"),
    (libc::EMFILE, "Too many open files"),
    (libc::ENOTTY, "Inappropriate ioctl for device"),
    (libc::ESPIPE, "Illegal seek"),
    (libc::ERANGE, "Numerical result out of range"),
    (libc::EDEADLK, "Resource deadlock avoided"),
    (libc::ENAMETOOLONG, "File name too long"),
    (libc::ELOOP, "Too many levels of symbolic links"),
    (libc::ETIME, "Timer expired"),
    (libc::EOVERFLOW, "Value too large for defined data type"),
    (
        libc::EILSEQ,
        "Invalid or incomplete multibyte or wide character",
    ),
    (libc::ENOTSOCK, "Socket operation on non-socket"),
    (libc::EMSGSIZE, "Message too long"),
    (libc::EOPNOTSUPP, "Operation not supported"),
    (libc::EADDRINUSE, "Address already in use"),
    (libc::EADDRNOTAVAIL, "Cannot assign requested address"),
    (libc::ENETUNREACH, "Network is unreachable"),
    (libc::ENETRESET, "Network dropped connection on reset"),
    (libc::ECONNABORTED, "Software caused connection abort"),
    (libc::EISCONN, "Transport endpoint is already connected"),
    (libc::ENOTCONN, "Transport endpoint is not connected"),
    (
        libc::ESHUTDOWN,
        "Cannot send after transport endpoint shutdown",
    ),
    (libc::ETIMEDOUT, "Connection timed out"),
    (libc::EHOSTUNREACH, "No route to host"),
    (libc::EINPROGRESS, "Operation now in progress"),
    (libc::EUCLEAN, "Structure needs cleaning"),
    (libc::EDQUOT, "Disk quota exceeded"),
    (libc::EOWNERDEAD, "Owner died"),
];

/// The reason text of an I/O error for a one-line message: std's text
/// without its " (os error N)" suffix, in glibc's words whichever C library
/// the binary links ([`GLIBC_TEXTS`]). The one place that strips it; every
/// message about an I/O error goes through here.
pub fn os_reason(e: &io::Error) -> String {
    if let Some(&(_, text)) = e
        .raw_os_error()
        .and_then(|n| GLIBC_TEXTS.iter().find(|(m, _)| *m == n))
    {
        return text.to_string();
    }
    std_words(e)
}

/// How std (with this C library) words an I/O error: its text without the
/// " (os error N)" suffix it appends.
fn std_words(e: &io::Error) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.find(" (os error") {
        s.truncate(i);
    }
    s
}

/// `text` (another library's error message: the Redis client's) with
/// each I/O error std wrote into it, `<this C library's words> (os error
/// N)`, put as [`os_reason`] puts it: glibc's words, no suffix. The Redis
/// client's connect failures carry the socket call's error this way
/// (`Network unreachable (os error 101)` from the musl build, `Network is
/// unreachable (os error 101)` from a glibc one).
pub fn os_texts(text: &str) -> String {
    const OS_ERROR_MARK: &str = " (os error ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(OS_ERROR_MARK) {
        let after = &rest[i + OS_ERROR_MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let closed = after[digits..].starts_with(')');
        let known = after[..digits]
            .parse::<i32>()
            .ok()
            .filter(|_| closed)
            .map(io::Error::from_raw_os_error)
            .map(|e| (std_words(&e), e));
        match known {
            Some((w, e)) if rest[..i].ends_with(w.as_str()) => {
                out.push_str(&rest[..i - w.len()]);
                out.push_str(&os_reason(&e));
                rest = &after[digits + 1..];
            }
            _ => {
                out.push_str(&rest[..i + OS_ERROR_MARK.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// [`os_reason`], naming ELOOP (an `O_NOFOLLOW` open of a symlink) as the
/// refusal it is.
fn io_reason(e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return "is a symbolic link (refused)".to_string();
    }
    os_reason(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_contract_codes() {
        let codes: Vec<u8> = ExitKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12]);
    }

    #[test]
    fn errno_classification() {
        let e = |n| Error::io("cannot write", "/x", io::Error::from_raw_os_error(n));
        assert_eq!(e(libc::ENOSPC).exit_code(), 8);
        assert_eq!(e(libc::EACCES).exit_code(), 3);
        assert_eq!(e(libc::ELOOP).exit_code(), 3);
        assert_eq!(e(libc::ENOENT).exit_code(), 4);
        assert_eq!(e(libc::EIO).exit_code(), 1);
        assert_eq!(
            e(libc::ENOSPC).to_string(),
            "cannot write /x: No space left on device"
        );
    }

    #[test]
    fn os_reason_drops_only_the_os_error_suffix() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert!(e.to_string().ends_with("(os error 2)"), "{e}");
        assert_eq!(os_reason(&e), "No such file or directory");
        let plain = io::Error::other("no suffix here");
        assert_eq!(os_reason(&plain), "no suffix here");
        assert_eq!(
            os_reason(&io::Error::from_raw_os_error(libc::EDQUOT)),
            "Disk quota exceeded"
        );
    }

    #[test]
    fn os_texts_rewrites_each_embedded_io_error() {
        let std_text = |n| io::Error::from_raw_os_error(n).to_string();
        let s = format!(
            "cannot connect: {}; then {}",
            std_text(libc::ENETUNREACH),
            std_text(libc::ECONNRESET)
        );
        assert_eq!(
            os_texts(&s),
            "cannot connect: Network is unreachable; then Connection reset by peer"
        );
        for odd in [
            "x (os error ",
            "x (os error 12",
            "x (os error 1a)",
            "(os error 5)",
        ] {
            assert_eq!(os_texts(odd), odd);
        }
        assert_eq!(os_texts("no errors here"), "no errors here");
    }

    /// Each of ffkit's own texts is glibc's, word for word: on glibc the
    /// table changes nothing, and a musl build reads the same.
    #[cfg(target_env = "gnu")]
    #[test]
    fn the_errno_texts_are_glibcs() {
        for &(n, text) in GLIBC_TEXTS {
            let e = io::Error::from_raw_os_error(n).to_string();
            assert_eq!(e, format!("{text} (os error {n})"), "errno {n}");
        }
        let mut n: Vec<i32> = GLIBC_TEXTS.iter().map(|(n, _)| *n).collect();
        n.sort_unstable();
        n.dedup();
        assert_eq!(n.len(), GLIBC_TEXTS.len(), "one entry per errno");
    }
}
