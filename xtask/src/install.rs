//! `cargo xtask install [--prefix P]`: README's one-command install from a
//! clone. `cargo install` places only binaries, never the bash builtin (a
//! cdylib), so this builds the workspace in release (the binary and
//! `libffkit_builtin.so`) and lets that binary install itself:
//! `ffkit install-links --bin --prefix P` copies it to `P/bin/ffkit`, links
//! the applets there and puts the builtin in `P/lib/ffkit`, the man pages
//! and completions under `P/share` (docs/shell.md, "Loading").
//!
//! The default prefix is cargo's own (`$CARGO_HOME`, else `~/.cargo`), so
//! `ffkit` lands in the `bin/` that `cargo install` uses and is on PATH
//! wherever that is.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where to install: `--prefix P`, else cargo's home.
pub fn prefix(args: &[String], env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, String> {
    match args {
        [] => env("CARGO_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                env("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| Path::new(&h).join(".cargo"))
            })
            .ok_or_else(|| "neither CARGO_HOME nor HOME is set; pass --prefix P".to_string()),
        [flag, p] if flag == "--prefix" && !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err("usage: cargo xtask install [--prefix P]".to_string()),
    }
}

/// The two steps: the release build, then the built binary's own install.
pub fn commands(root: &Path, target_dir: Option<OsString>, prefix: &Path) -> [Command; 2] {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    // The workspace's default members: the binary and the builtin.
    build.args(["build", "--release"]).current_dir(root);
    let target = target_dir
        .filter(|d| !d.is_empty())
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    let mut place = Command::new(target.join("release").join("ffkit"));
    place
        .args(["install-links", "--bin", "--prefix"])
        .arg(prefix);
    [build, place]
}

/// Runs both steps, stopping at the first that fails.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let prefix = prefix(args, |k| std::env::var_os(k))?;
    for mut c in commands(root, std::env::var_os("CARGO_TARGET_DIR"), &prefix) {
        let st = c
            .status()
            .map_err(|e: io::Error| format!("cannot run {:?}: {e}", c.get_program()))?;
        if !st.success() {
            return Err(format!("{:?} failed ({st})", c.get_program()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_prefix_is_cargo_home_then_home_dot_cargo_then_given() {
        let none: [String; 0] = [];
        assert_eq!(
            prefix(&none, env(&[("CARGO_HOME", "/c"), ("HOME", "/h")])),
            Ok(PathBuf::from("/c"))
        );
        assert_eq!(
            prefix(&none, env(&[("CARGO_HOME", ""), ("HOME", "/h")])),
            Ok(PathBuf::from("/h/.cargo"))
        );
        assert!(prefix(&none, env(&[])).is_err());
        let given = ["--prefix".to_string(), "/p".to_string()];
        assert_eq!(
            prefix(&given, env(&[("HOME", "/h")])),
            Ok(PathBuf::from("/p"))
        );
        assert!(prefix(&["--prefix".to_string()], env(&[])).is_err());
        assert!(prefix(&["--bogus".to_string(), "x".to_string()], env(&[])).is_err());
    }

    #[test]
    fn the_built_binary_installs_itself_from_the_target_dir() {
        let [build, place] = commands(Path::new("/w"), Some("t".into()), Path::new("/p"));
        let args = |c: &Command| -> Vec<String> {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(args(&build), ["build", "--release"]);
        assert_eq!(build.get_current_dir(), Some(Path::new("/w")));
        assert_eq!(place.get_program(), "/w/t/release/ffkit");
        assert_eq!(args(&place), ["install-links", "--bin", "--prefix", "/p"]);
        let [_, place] = commands(Path::new("/w"), None, Path::new("/p"));
        assert_eq!(place.get_program(), "/w/target/release/ffkit");
    }
}
