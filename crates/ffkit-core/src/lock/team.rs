//! The team config (`<repo>/.flowforge/team/config.json`): which developer
//! namespace a caller without `FLOWFORGE_DEVELOPER` belongs to, by its
//! `git config user.email` (docs/shell.md, "Namespace"). The shell
//! functions, the bash builtin and `lock-acquire NAME` in the binary all
//! ask here, so a NAME is one file whichever way it is taken.

use std::path::Path;

use crate::config::validate_developer;
use crate::error::{Error, Result};

/// The largest team config read (a bigger file is cut there).
const MAX_TEAM_CONFIG: u64 = 16 << 20;

/// The id of the first developer (in id order) in `team.developers` whose
/// `email` equals `email`, ignoring ASCII case and surrounding blanks.
pub fn developer_for_email(email: &str, file: &std::path::Path) -> Result<Option<String>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK and a file-type check: a FIFO must not hang the lookup.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .and_then(|f| match f.metadata()?.is_file() {
            true => Ok(f),
            false => Err(crate::fsutil::not_regular()),
        })
        .map_err(|e| Error::io("cannot read", file, e))?;
    let mut text = String::new();
    f.take(MAX_TEAM_CONFIG)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("cannot read", file, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Corruption(format!("{}: not valid JSON: {e}", file.display())))?;
    let want = email.trim();
    let Some(devs) = v
        .get("team")
        .and_then(|t| t.get("developers"))
        .and_then(|d| d.as_object())
    else {
        return Ok(None);
    };
    for (id, dev) in devs {
        let matches = dev
            .get("email")
            .and_then(|e| e.as_str())
            .is_some_and(|e| e.trim().eq_ignore_ascii_case(want));
        if matches {
            return validate_developer(id)
                .map(Some)
                .map_err(|e| Error::Config(format!("{}: team.developers: {e}", file.display())));
        }
    }
    Ok(None)
}

/// The developer of the team config under `root` for the caller's
/// `git config user.email` (one `git` process), or `None`: no team config,
/// no email, nobody with that email, or a config that cannot be used (the
/// shell functions report those; a lock then uses the legacy namespace, as
/// the functions do).
pub fn team_developer(root: &Path) -> Option<String> {
    let cfg = root.join(".flowforge").join("team").join("config.json");
    if !cfg.is_file() {
        return None;
    }
    let _chld = super::kernel::SigchldBlocked::new();
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["config", "user.email"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let email = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if email.is_empty() {
        return None;
    }
    developer_for_email(&email, &cfg).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_developer_by_email_ignoring_case() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"team":{"developers":{"bob":{"email":"b@x.io"},"alice":{"email":"Alice@X.io "}}}}"#,
        )
        .unwrap();
        assert_eq!(
            developer_for_email("alice@x.io", &f).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            developer_for_email("b@x.io", &f).unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(developer_for_email("c@x.io", &f).unwrap(), None);
    }

    #[test]
    fn rejects_ids_that_are_not_plain_names_and_bad_json() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(&f, r#"{"team":{"developers":{"../x":{"email":"e@x"}}}}"#).unwrap();
        assert_eq!(developer_for_email("e@x", &f).unwrap_err().exit_code(), 12);
        std::fs::write(&f, "{").unwrap();
        assert_eq!(developer_for_email("e@x", &f).unwrap_err().exit_code(), 10);
    }
}
