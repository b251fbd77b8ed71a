//! Writing the metrics log: one whole row per `write(2)` on an `O_APPEND`
//! descriptor, so concurrent writers never interleave or lose rows.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

/// Formats a duration in milliseconds with microsecond precision, without
/// trailing zeros: `15`, `0.123`, `2.5`.
pub fn format_ms(ms: f64) -> String {
    let s = format!("{:.3}", ms.max(0.0));
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

/// One row, newline included.
pub fn format_row(timestamp: i64, op: &str, ms: f64) -> String {
    format!("{timestamp},{op},{}\n", format_ms(ms))
}

/// Appends one row to the log at `path`, creating it (and its directory).
/// `max_bytes` bounds the log; trimming is done by the log's maintenance.
pub fn append(path: &Path, timestamp: i64, op: &str, ms: f64, max_bytes: u64) -> Result<()> {
    let _ = max_bytes;
    let row = format_row(timestamp, op, ms);
    let mut f = match fsutil::open_rw_create(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fsutil::create_private_dir(dir)?;
            }
            fsutil::open_rw_create(path).map_err(|e| Error::io("cannot open", path, e))?
        }
        Err(e) => return Err(Error::io("cannot open", path, e)),
    };
    f.write_all(row.as_bytes())
        .map_err(|e| Error::io("cannot append to", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_formatting() {
        assert_eq!(format_ms(15.0), "15");
        assert_eq!(format_ms(0.1234), "0.123");
        assert_eq!(format_ms(2.5), "2.5");
        assert_eq!(format_ms(0.0001), "0");
        assert_eq!(
            format_row(1632123456, "write_cache", 15.0),
            "1632123456,write_cache,15\n"
        );
    }
}
