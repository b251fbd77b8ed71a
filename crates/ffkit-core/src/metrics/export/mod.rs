//! Rendering an aggregation [`Report`]: one exporter per output format behind
//! the [`Exporter`] trait (hyperfine's shape), so the CLI picks a format and
//! the formats are tested one by one.
//!
//! - [`Table`]: the aligned human table (default).
//! - [`Json`]: `{"OP": {"count":…, "total":…, "avg":…, "min":…, "max":…,
//!   "p50":…, "p95":…, "p99":…}, …}` in milliseconds — the first three keys
//!   as the old `get_performance_metrics` printed them.
//! - [`Prometheus`]: the text exposition format, one summary series per
//!   operation, in seconds as Prometheus conventions ask.
//! - [`Html`]: the self-contained page of `perf-metrics serve` and
//!   `perf-metrics report --html` (table and inline SVG charts).

pub mod html;
mod json;
mod prometheus;
pub mod table;

pub use html::Html;
pub use json::{ApiJson, Json};
pub use prometheus::Prometheus;
pub use table::Table;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::aggregate::Report;
use crate::error::{Error, Result};
use crate::fsutil;

/// The percentiles every report shows.
pub const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")];

/// One output format.
pub trait Exporter {
    /// The whole output, newline-terminated (possibly empty).
    fn render(&self, report: &Report) -> String;
}

/// Milliseconds rounded to the microsecond, as JSON prints them: integral
/// values without a fraction (`15`, as jq printed the old totals), others
/// with at most three decimals (`0.123`).
pub fn json_ms(ms: f64) -> String {
    super::log::format_ms(ms)
}

/// Writes a report to `dest` atomically: a temp file beside it, renamed
/// over it, so a reader (node_exporter's textfile collector, a browser, a
/// CI upload) sees the old file or the new one, never a partial one. The
/// temp name starts with a dot and does not end in `.prom`, so the textfile
/// collector never reads it. The file is created like any file a shell
/// redirect makes (0666 less the umask): other users, node_exporter among
/// them, may need to read it.
///
/// A `dest` that exists and is neither a regular file nor a directory
/// (after symbolic links: a FIFO, a device) is refused, "not a regular
/// file", and left as it is: the rename would replace it. Before, `report
/// --html /dev/stdout` run as root (a CI container) replaced the system's
/// `/dev/stdout` link with a regular file holding the page, and a FIFO a
/// reader waited on got a regular file in its place. Standard output
/// itself, named through a link, is the caller's to write
/// ([`is_standard_output`]).
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    if let Ok(m) = fs::metadata(dest)
        && !m.is_file()
        && !m.is_dir()
    {
        return Err(Error::io("cannot write", dest, fsutil::not_regular()));
    }
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, mut f) = loop {
        let tmp = fsutil::temp_path(dir);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("cannot create a temp file in", dir, e)),
        }
    };
    // rustix's fdatasync is a plain system call (no libc symbol to bind).
    let written = f
        .write_all(bytes)
        .and_then(|()| rustix::fs::fdatasync(&f).map_err(std::io::Error::from));
    drop(f);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot write", &tmp, e));
    }
    fsutil::install(&tmp, dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot rename into", dest, e)
    })
}

/// Whether `dest` is a symbolic link to the file open on descriptor 1
/// (`/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`, or a link of the user's
/// to one): the caller then writes the report to its standard output, as
/// the name asks. A rename over such a link replaced it (as root, the
/// system's `/dev/stdout`), and the output never reached standard output.
/// A path named outright is a file to write, whatever else it is.
pub fn is_standard_output(dest: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if !fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink()) {
        return false;
    }
    let Ok(target) = fs::metadata(dest) else {
        return false;
    };
    let Ok(out) = crate::rawfd::borrow(1).and_then(|fd| rustix::fs::fstat(fd).map_err(Into::into))
    else {
        return false;
    };
    target.dev() == out.st_dev && target.ino() == out.st_ino
}
