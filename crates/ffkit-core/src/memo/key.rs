//! The key of a memoized command: what makes two runs "the same".
//!
//! The key is a BLAKE3 hash (stable across Rust versions and platforms,
//! unlike std's hashers) of an unambiguous encoding of everything the user
//! says the output depends on: the argv, and optionally the working
//! directory, environment variables, files (by identity or content), the
//! bytes on stdin and a free-form scope. Every field is tagged and
//! length-prefixed, so `["ab", "c"]` and `["a", "bc"]`, or an unset and an
//! empty variable, can never encode alike. The cache entry is named
//! `run-<64 hex digits>` (see docs/cache-run.md): a valid cache key, never a
//! dot-file, and the same for every process that computes it.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of every cache-run entry's key.
pub const ENTRY_PREFIX: &str = "run-";

/// How a `--key-file` contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    /// Size, mtime (ns), inode and device: cheap, changes on every rewrite.
    Identity,
    /// BLAKE3 of the content: survives `touch` and copies.
    Content,
}

/// Everything the key is made of, as given by the user.
#[derive(Clone, Debug, Default)]
pub struct KeySpec {
    pub argv: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    /// Variable name and its value at call time (`None`: unset).
    pub env: Vec<(OsString, Option<OsString>)>,
    pub files: Vec<(PathBuf, FileMode)>,
    /// The BLAKE3 hash of the bytes read from stdin with `--key-stdin`
    /// (hashed as they were read: [`super::Spool`]).
    pub stdin: Option<[u8; 32]>,
    pub scope: Option<OsString>,
    /// `--output` paths, as given: an entry with stored outputs is only
    /// ever a hit for a call that restores the same paths.
    pub outputs: Vec<PathBuf>,
}

/// A computed key: the hash, as the 64-digit hex used in file names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunKey {
    pub hex: String,
}

impl RunKey {
    /// The cache entry's key: `run-<hex>`.
    pub fn entry(&self) -> String {
        format!("{ENTRY_PREFIX}{}", self.hex)
    }

    /// Parses the hex form back (the detached refresh is handed it).
    pub fn from_hex(s: &str) -> Option<RunKey> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| RunKey { hex: s.to_string() })
    }
}

/// Feeds tagged, length-prefixed fields to the hasher.
struct Enc(blake3::Hasher);

impl Enc {
    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update(&[tag]);
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn number(&mut self, tag: u8, n: u64) {
        self.field(tag, &n.to_le_bytes());
    }
}

/// Computes the key. Fails only when a `--key-file` cannot be read (a
/// missing file is not an error: it is a state of its own in the key).
pub fn compute(spec: &KeySpec) -> Result<RunKey> {
    let mut e = Enc(blake3::Hasher::new());
    // A format version: changing the encoding must change every key.
    e.field(b'V', b"ffkit-cache-run-1");
    e.number(b'n', spec.argv.len() as u64);
    for a in &spec.argv {
        e.field(b'a', a.as_bytes());
    }
    if let Some(cwd) = &spec.cwd {
        e.field(b'c', cwd.as_os_str().as_bytes());
    }
    for (name, value) in &spec.env {
        e.field(b'e', name.as_bytes());
        match value {
            None => e.field(b'u', b""),
            Some(v) => e.field(b's', v.as_bytes()),
        }
    }
    for (path, mode) in &spec.files {
        e.field(b'f', path.as_os_str().as_bytes());
        file_state(&mut e, path, *mode)?;
    }
    if let Some(hash) = &spec.stdin {
        e.field(b'i', hash);
    }
    if let Some(scope) = &spec.scope {
        e.field(b'S', scope.as_bytes());
    }
    for p in &spec.outputs {
        e.field(b'o', p.as_os_str().as_bytes());
    }
    Ok(RunKey {
        hex: e.0.finalize().to_hex().to_string(),
    })
}

fn file_state(e: &mut Enc, path: &Path, mode: FileMode) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            e.field(b'-', b"");
            return Ok(());
        }
        Err(err) => return Err(Error::io("cannot stat key file", path, err)),
    };
    match mode {
        FileMode::Identity => {
            e.number(b'z', meta.size());
            e.number(b'm', meta.mtime() as u64);
            e.number(b'M', meta.mtime_nsec() as u64);
            e.number(b'I', meta.ino());
            e.number(b'D', meta.dev());
        }
        FileMode::Content => {
            // Only a regular file has a content that stays put: a FIFO
            // would block (and be consumed), a device never end. Refused
            // with exit 2 rather than read with a bound.
            if !meta.is_file() {
                return Err(Error::Validation(format!(
                    "--key-file-content {}: not a regular file",
                    path.display()
                )));
            }
            let mut h = blake3::Hasher::new();
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(|err| Error::io("cannot open key file", path, err))?;
            // Swapped for a FIFO between the stat and the open.
            if !f.metadata().is_ok_and(|m| m.is_file()) {
                return Err(Error::Validation(format!(
                    "--key-file-content {}: not a regular file",
                    path.display()
                )));
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        h.update(&buf[..n]);
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(Error::io("cannot read key file", path, err)),
                }
            }
            e.field(b'h', h.finalize().as_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> KeySpec {
        KeySpec {
            argv: v.iter().map(OsString::from).collect(),
            ..KeySpec::default()
        }
    }

    #[test]
    fn argv_boundaries_are_unambiguous() {
        let a = compute(&argv(&["ab", "c"])).unwrap();
        let b = compute(&argv(&["a", "bc"])).unwrap();
        let c = compute(&argv(&["abc"])).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, compute(&argv(&["ab", "c"])).unwrap());
        assert_eq!(a.hex.len(), 64);
        assert_eq!(RunKey::from_hex(&a.hex), Some(a.clone()));
        assert!(a.entry().starts_with("run-"));
    }

    #[test]
    fn unset_and_empty_variables_differ_and_fields_do_not_alias() {
        let mut unset = argv(&["x"]);
        unset.env.push(("V".into(), None));
        let mut empty = argv(&["x"]);
        empty.env.push(("V".into(), Some("".into())));
        assert_ne!(compute(&unset).unwrap(), compute(&empty).unwrap());
        let mut scope = argv(&["x"]);
        scope.scope = Some("V".into());
        let mut stdin = argv(&["x"]);
        stdin.stdin = Some(*blake3::hash(b"").as_bytes());
        let keys = [&unset, &empty, &scope, &stdin, &argv(&["x"])].map(|s| compute(s).unwrap());
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn files_by_identity_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut s = argv(&["x"]);
        s.files.push((p.clone(), FileMode::Content));
        let missing = compute(&s).unwrap();
        fs::write(&p, "one").unwrap();
        let one = compute(&s).unwrap();
        assert_ne!(missing, one);
        // Rewriting the same content keeps a content key, not an identity key.
        let mut id = s.clone();
        id.files[0].1 = FileMode::Identity;
        let id_one = compute(&id).unwrap();
        fs::remove_file(&p).unwrap();
        fs::write(dir.path().join("g"), "one").unwrap();
        fs::rename(dir.path().join("g"), &p).unwrap();
        assert_eq!(compute(&s).unwrap(), one);
        assert_ne!(compute(&id).unwrap(), id_one);
        fs::write(&p, "two").unwrap();
        assert_ne!(compute(&s).unwrap(), one);
    }

    #[test]
    fn hex_parsing_refuses_anything_else() {
        for bad in ["", "abc", &"G".repeat(64), &"A".repeat(64), &"a".repeat(65)] {
            assert!(RunKey::from_hex(bad).is_none(), "{bad}");
        }
    }
}
