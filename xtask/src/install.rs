//! `cargo xtask install [--prefix P] [--features F]`: README's one-command install from a
//! clone. `cargo install` places only binaries, never the bash builtin (a
//! cdylib), so this makes the shipped build (`cargo xtask dist`: the
//! static-pie binary and `libffkit_builtin.so` in `TARGET/dist`) and lets
//! that binary install itself: `ffkit install-links --bin --prefix P`
//! copies it to `P/bin/ffkit`, links the applets there and puts the builtin
//! in `P/lib/ffkit`, the man pages and completions under `P/share`
//! (docs/shell.md, "Loading").
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

/// The second step: the built binary installs itself (and the builtin
/// beside it) into the prefix.
pub fn place(dist: &Path, opts: &Opts) -> Command {
    let mut place = Command::new(dist.join("ffkit"));
    place
        .args(["install-links", "--bin", "--prefix"])
        .arg(&opts.prefix);
    place
}

/// The shipped build (`cargo xtask dist`), then the built binary's own
/// install, stopping at the first that fails.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let opts = parse(args, |k| std::env::var_os(k))?;
    let dist = crate::dist::run(
        root,
        &crate::dist::Opts {
            features: opts.features.clone(),
            libc: None,
        },
    )?;
    let mut c = place(&dist, &opts);
    let st = c
        .status()
        .map_err(|e: io::Error| format!("cannot run {:?}: {e}", c.get_program()))?;
    if !st.success() {
        return Err(format!("{:?} failed ({st})", c.get_program()));
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
    fn the_dist_binary_installs_itself_from_the_target_dir() {
        let args = |c: &Command| -> Vec<String> {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let opts = parse(&strings(&["--features", "tls", "--prefix", "/p"]), env(&[])).unwrap();
        assert_eq!(opts.features.as_deref(), Some("tls"));
        let dist = crate::dist::out_dir(Path::new("/w"), Some("t".into()));
        let c = place(&dist, &opts);
        assert_eq!(c.get_program(), "/w/t/dist/ffkit");
        assert_eq!(args(&c), ["install-links", "--bin", "--prefix", "/p"]);
        let opts = parse(&strings(&["--prefix", "/p"]), env(&[])).unwrap();
        assert_eq!(opts.features, None);
        let dist = crate::dist::out_dir(Path::new("/w"), None);
        assert_eq!(place(&dist, &opts).get_program(), "/w/target/dist/ffkit");
    }
}
