//! The key rule: which names may become cache entries.
//!
//! A key becomes a file name in the cache dir, next to its `KEY.meta`
//! sidecar and ffkit's dot-file control files. So a key is rejected when it
//! could escape the dir or collide with those: empty; longer than 250 bytes
//! (so `KEY.meta` still fits a 255-byte file name); containing `/`, NUL or any
//! other ASCII control character (newline, tab, CR, ...); starting with `.`
//! (which covers `.`, `..`, `../x` and every control file); ending in `.meta`;
//! not valid UTF-8 (the sidecar stores the key as a JSON string).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 250;

/// Checks a key and returns it as text, or says why it is refused.
pub fn validate(key: &OsStr) -> Result<&str, String> {
    validate_bytes(key.as_bytes())
}

/// [`validate`] over raw bytes (batch input).
pub fn validate_bytes(key: &[u8]) -> Result<&str, String> {
    let shown = || String::from_utf8_lossy(key).escape_debug().to_string();
    let why = if key.is_empty() {
        "is empty"
    } else if key.len() > MAX_KEY_BYTES {
        "is longer than 250 bytes"
    } else if key.contains(&b'/') {
        "contains '/'"
    } else if key.iter().any(|&b| b < 0x20 || b == 0x7f) {
        "contains a control character (NUL, newline, tab, ...)"
    } else if key[0] == b'.' {
        "starts with '.' (reserved for control files)"
    } else if key.ends_with(b".meta") {
        "ends with '.meta' (reserved for sidecars)"
    } else {
        return std::str::from_utf8(key)
            .map_err(|_| format!("invalid key '{}': is not valid UTF-8", shown()));
    };
    Err(format!("invalid key '{}': {why}", shown()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for k in [
            "a",
            "provider:github",
            "with space",
            "a..b",
            "ünïcode",
            "x.meta2",
            &"k".repeat(250),
        ] {
            assert_eq!(validate_bytes(k.as_bytes()), Ok(k));
        }
    }

    #[test]
    fn rejects_escapes_and_collisions() {
        let long = "k".repeat(251);
        for k in [
            &b""[..],
            b".",
            b"..",
            b"../x",
            b"a/b",
            b".hidden",
            b"x.meta",
            b".size-index",
            b"a\0b",
            b"a\nb",
            b"a\rb",
            b"\xff\xfe",
            long.as_bytes(),
        ] {
            assert!(validate_bytes(k).is_err(), "{k:?}");
        }
    }
}
