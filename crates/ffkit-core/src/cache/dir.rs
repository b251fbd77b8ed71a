//! Whether a cache dir may be used: the checks every cache applet makes
//! before it reads or writes a dir (docs/cache.md, "Which dir, and when it
//! is refused").
//!
//! A dir ffkit picks itself (the namespace's, `$XDG_CACHE_HOME/ffkit`,
//! `~/.cache/ffkit`) follows the lock dir's rule: a real directory (not a
//! symlink), owned by the user, not writable by group or others — or
//! another user of a shared path could plant values we read or catch the
//! writes we make. A dir the user named (`--dir`, `FFKIT_CACHE_DIR`) is the
//! user's choice, symlinks and other owners included, but one that others
//! can write is still refused: anyone could plant entries in it.

use std::io;
use std::path::Path;

use crate::config::DirOrigin;
use crate::error::{Error, Result};

/// Checks `dir` if it exists; `Ok(false)` when it does not (nothing to
/// read, and a writer creates it private).
pub fn check(dir: &Path, origin: DirOrigin) -> Result<bool> {
    // Type, mode and owner only, never the times (`fsutil::owner_of`): the
    // metrics log's dir is checked on every row of the shell functions.
    let lm = match crate::fsutil::owner_of(dir, false) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("cannot inspect the cache dir", dir, e)),
    };
    let how = how_to_choose(origin);
    let m = if lm.kind == libc::S_IFLNK {
        if !origin.is_explicit() {
            return Err(Error::Permission(format!(
                "cache dir {} (from {}): is a symbolic link; refused for a dir ffkit picks itself ({how})",
                dir.display(),
                origin.describe()
            )));
        }
        match crate::fsutil::owner_of(dir, true) {
            Ok(m) => m,
            // A dangling link: a writer's mkdir fails on it with its own error.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("cannot inspect the cache dir", dir, e)),
        }
    } else {
        lm
    };
    if m.kind != libc::S_IFDIR {
        return Err(Error::Permission(format!(
            "cache dir {} (from {}): not a directory",
            dir.display(),
            origin.describe()
        )));
    }
    // Asked only where it matters (a dir ffkit picked): a system call
    // less on every call with `--dir` or FFKIT_CACHE_DIR.
    if !origin.is_explicit()
        && let uid = rustix::process::getuid().as_raw()
        && m.uid != uid
    {
        return Err(Error::Permission(format!(
            "cache dir {} (from {}): owned by uid {}, not by you (uid {uid}); refused ({how})",
            dir.display(),
            origin.describe(),
            m.uid
        )));
    }
    let mode = m.mode;
    if let Some(who) = crate::fsutil::writable_by(mode) {
        return Err(Error::Permission(format!(
            "cache dir {} (from {}): writable by {who} (mode {mode:o}), who could plant entries; refused (run chmod go-w on it, or {how})",
            dir.display(),
            origin.describe(),
        )));
    }
    Ok(true)
}

fn how_to_choose(origin: DirOrigin) -> &'static str {
    match origin {
        DirOrigin::Flag => "pass another --dir",
        DirOrigin::Env => "set FFKIT_CACHE_DIR to another dir",
        DirOrigin::Functions => {
            "make it a directory of your own: the shell functions always use their namespace's dir"
        }
        _ => "name a dir of your own with --dir or FFKIT_CACHE_DIR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn picked_and_named_dirs() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        assert!(!check(&d, DirOrigin::Xdg).unwrap());
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check(&d, DirOrigin::Xdg).unwrap());
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        for o in [DirOrigin::Xdg, DirOrigin::Flag, DirOrigin::Env] {
            let e = check(&d, o).unwrap_err();
            assert_eq!(e.exit_code(), 3);
            assert!(
                e.to_string()
                    .contains("writable by its group and others (mode 777)"),
                "{e}"
            );
        }
        // The functions' advice reads as one sentence after "run chmod go-w
        // on it, or".
        let e = check(&d, DirOrigin::Functions).unwrap_err();
        assert!(
            e.to_string()
                .contains("(run chmod go-w on it, or make it a directory of your own: "),
            "{e}"
        );
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(check(&link, DirOrigin::Flag).unwrap());
        let e = check(&link, DirOrigin::Home).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let file = t.path().join("file");
        fs::write(&file, "x").unwrap();
        for o in [DirOrigin::Flag, DirOrigin::Namespace] {
            let e = check(&file, o).unwrap_err();
            assert_eq!(e.exit_code(), 3);
            assert!(e.to_string().contains("not a directory"), "{e}");
        }
    }
}
