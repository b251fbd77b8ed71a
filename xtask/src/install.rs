//! `cargo xtask install [--prefix P] [--features F]`: README's one-command install from a
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

/// What `cargo xtask install` was asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Opts {
    /// `--prefix P`, else cargo's home.
    pub prefix: PathBuf,
    /// `--features F` for the build (`tls`).
    pub features: Option<String>,
}

const USAGE: &str = "usage: cargo xtask install [--prefix P] [--features F]";

/// Parses `[--prefix P] [--features F]`, in any order.
pub fn parse(args: &[String], env: impl Fn(&str) -> Option<OsString>) -> Result<Opts, String> {
    let mut prefix = None;
    let mut features = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let slot = match a.as_str() {
            "--prefix" => &mut prefix,
            "--features" => &mut features,
            _ => return Err(USAGE.to_string()),
        };
        match it.next() {
            Some(v) if !v.is_empty() && slot.is_none() => *slot = Some(v.clone()),
            _ => return Err(USAGE.to_string()),
        }
    }
    let prefix = match prefix {
        Some(p) => PathBuf::from(p),
        None => env("CARGO_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                env("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| Path::new(&h).join(".cargo"))
            })
            .ok_or_else(|| "neither CARGO_HOME nor HOME is set; pass --prefix P".to_string())?,
    };
    Ok(Opts { prefix, features })
}

/// The two steps: the release build, then the built binary's own install.
pub fn commands(root: &Path, target_dir: Option<OsString>, opts: &Opts) -> [Command; 2] {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    // The workspace's default members: the binary and the builtin.
    build.args(["build", "--release"]).current_dir(root);
    if let Some(f) = &opts.features {
        build.args(["--features", f]);
    }
    let target = target_dir
        .filter(|d| !d.is_empty())
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    let mut place = Command::new(target.join("release").join("ffkit"));
    place
        .args(["install-links", "--bin", "--prefix"])
        .arg(&opts.prefix);
    [build, place]
}

/// Runs both steps, stopping at the first that fails.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let opts = parse(args, |k| std::env::var_os(k))?;
    for mut c in commands(root, std::env::var_os("CARGO_TARGET_DIR"), &opts) {
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

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_prefix_is_cargo_home_then_home_dot_cargo_then_given() {
        let prefix = |args: &[&str], vars: &[(&str, &str)]| {
            parse(&strings(args), env(vars)).map(|o| o.prefix)
        };
        let both = [("CARGO_HOME", "/c"), ("HOME", "/h")];
        assert_eq!(prefix(&[], &both), Ok(PathBuf::from("/c")));
        assert_eq!(
            prefix(&[], &[("CARGO_HOME", ""), ("HOME", "/h")]),
            Ok(PathBuf::from("/h/.cargo"))
        );
        assert!(prefix(&[], &[]).is_err());
        assert_eq!(prefix(&["--prefix", "/p"], &both), Ok(PathBuf::from("/p")));
        for bad in [
            &["--prefix"][..],
            &["--bogus", "x"],
            &["--prefix", "/a", "--prefix", "/b"],
        ] {
            assert!(parse(&strings(bad), env(&both)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_built_binary_installs_itself_from_the_target_dir() {
        let args = |c: &Command| -> Vec<String> {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let opts = parse(&strings(&["--features", "tls", "--prefix", "/p"]), env(&[])).unwrap();
        let [build, place] = commands(Path::new("/w"), Some("t".into()), &opts);
        assert_eq!(args(&build), ["build", "--release", "--features", "tls"]);
        assert_eq!(build.get_current_dir(), Some(Path::new("/w")));
        assert_eq!(place.get_program(), "/w/t/release/ffkit");
        assert_eq!(args(&place), ["install-links", "--bin", "--prefix", "/p"]);
        let opts = parse(&strings(&["--prefix", "/p"]), env(&[])).unwrap();
        let [build, place] = commands(Path::new("/w"), None, &opts);
        assert_eq!(args(&build), ["build", "--release"]);
        assert_eq!(place.get_program(), "/w/target/release/ffkit");
    }
}
