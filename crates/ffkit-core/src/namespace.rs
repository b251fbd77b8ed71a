//! The namespace: where a caller's cache, locks and metrics log live, in
//! one place for the binary, the bash builtin and the shell fallback (which
//! asks the binary, `ffkit init --resolve`, instead of deriving any of it:
//! docs/shell.md, "Namespace").
//!
//! It owns every rule that turns the environment and the current dir into
//! a path: the repository top (the nearest ancestor holding `.git`), the
//! developer id (`FLOWFORGE_DEVELOPER`, else the team config's developer for
//! `git config user.email`), the namespace root (`<top>/.flowforge[/dev-<id>]`),
//! its cache dir and metrics log, the lock dir (`FFKIT_LOCK_DIR`, the
//! namespace's, else a per-user runtime dir), the lock file of a name
//! (`<lock dir>/<NAME>.lock`) and the two name rules (developer ids and lock
//! names), counted in bytes. It names paths only: creating and checking
//! dirs is the caller's (`lock::make_lock_dir`, the cache's `open`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};

/// The namespace dir under the repository top.
pub const FLOWFORGE_DIR: &str = ".flowforge";

/// A lock NAME's file is `<lock dir>/<NAME><SUFFIX>`.
pub const LOCK_SUFFIX: &str = ".lock";

/// The metrics log's name in a cache dir (without `CACHE_PERF_METRICS`).
pub const METRICS_LOG: &str = ".perf-metrics.csv";

/// The settings the namespace reads (`init --resolve` reads these alone
/// when another setting is bad, as the functions' namespace does not
/// depend on it).
pub const SETTINGS: &[&str] = &[
    "FLOWFORGE_DEVELOPER",
    "FFKIT_LOCK_DIR",
    "CACHE_PERF_METRICS",
    "XDG_RUNTIME_DIR",
];

/// The largest team config read (a bigger file is cut there).
const MAX_TEAM_CONFIG: u64 = 16 << 20;

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// Whether `id` is a plain developer id: ASCII letters, digits, `.`, `_`,
/// `-`, not empty, not starting with `.`, at most 64 bytes.
fn is_plain_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id[0] != b'.'
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn id_message(what: &str, id: &[u8]) -> String {
    format!(
        "{what}='{}': expected letters, digits, '.', '_' or '-' (not leading '.'), at most 64",
        String::from_utf8_lossy(id)
    )
}

/// `FLOWFORGE_DEVELOPER` (or a team config's id): it becomes the path
/// component `dev-<id>`, so it must be a plain id; anything else is a
/// setting error (exit 12).
pub fn validate_developer(id: &str) -> Result<String> {
    if is_plain_id(id.as_bytes()) {
        Ok(id.to_string())
    } else {
        Err(Error::Config(id_message(
            "FLOWFORGE_DEVELOPER",
            id.as_bytes(),
        )))
    }
}

/// A `dev_id` argument of a shell function (`what` names it in the
/// message): the same rule as [`validate_developer`], but bad input
/// (exit 2).
pub fn validate_developer_arg<'a>(id: &'a OsStr, what: &str) -> Result<&'a str> {
    match id.to_str() {
        Some(s) if is_plain_id(id.as_bytes()) => Ok(s),
        _ => Err(Error::Validation(id_message(what, id.as_bytes()))),
    }
}

/// A lock name is one plain path component: no `/`, no control characters,
/// not empty, not starting with `.` (ffkit's temp and break files are
/// dot-files), at most 200 bytes (bytes, as the file system counts them:
/// 101 "é" are 202 bytes and refused). The one rule for the binary, the
/// bash builtin and the fallback functions (which ask the binary).
pub fn validate_name(name: &str) -> Result<&str> {
    validate_name_bytes(name.as_bytes())?;
    Ok(name)
}

/// [`validate_name`] for a name that may not be UTF-8 (a shell argument).
pub fn validate_name_bytes(name: &[u8]) -> Result<()> {
    // UTF-8 too: the binary's arguments are text, so a name it cannot take
    // must not be a name the builtin takes.
    let ok = !name.is_empty()
        && name.len() <= 200
        && name[0] != b'.'
        && !name.iter().any(|&b| b == b'/' || b.is_ascii_control())
        && std::str::from_utf8(name).is_ok();
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "lock name '{}': expected one plain name (UTF-8, no '/', control characters or leading '.', at most 200 bytes)",
            String::from_utf8_lossy(name).escape_debug()
        )))
    }
}

/// The file of lock `name` in `dir`: `<dir>/<name>.lock`, the name checked
/// by [`validate_name_bytes`].
pub fn lock_file(dir: &Path, name: &OsStr) -> Result<PathBuf> {
    validate_name_bytes(name.as_bytes())?;
    let mut file = name.to_os_string();
    file.push(LOCK_SUFFIX);
    Ok(dir.join(file))
}

// ---------------------------------------------------------------------------
// Where a call runs
// ---------------------------------------------------------------------------

/// The current dir.
pub fn current_dir() -> Result<PathBuf> {
    std::env::current_dir().map_err(|e| Error::io("cannot read the current directory", ".", e))
}

/// Where a call runs: the current dir and the repository root above it
/// (the nearest ancestor holding `.git`), looked up once per call.
#[derive(Clone, Debug)]
pub struct Here {
    pub cwd: PathBuf,
    pub root: Option<PathBuf>,
}

impl Here {
    /// Reads the current dir and finds the repository root.
    pub fn now() -> Result<Here> {
        Ok(Here::at(current_dir()?))
    }

    /// The place of a current dir the caller read.
    pub fn at(cwd: PathBuf) -> Here {
        let root = repo_root(&cwd).map(Path::to_path_buf);
        Here { cwd, root }
    }

    /// The repository root, or the current dir outside a repository.
    pub fn top(&self) -> &Path {
        self.root.as_deref().unwrap_or(&self.cwd)
    }
}

/// The nearest ancestor of `start` (itself included) that holds `.git` (a
/// dir, or the file of a linked worktree or submodule), found without git
/// (one `statx` per ancestor, asking for no times: [`crate::fsutil::Ident`]).
pub fn repo_root(start: &Path) -> Option<&Path> {
    start
        .ancestors()
        .find(|d| crate::fsutil::ident_child(d, ".git", crate::fsutil::Want::Id).is_ok())
}

// ---------------------------------------------------------------------------
// The team config
// ---------------------------------------------------------------------------

/// The team config of a repository top: `<top>/.flowforge/team/config.json`.
pub fn team_config(top: &Path) -> PathBuf {
    top.join(FLOWFORGE_DIR).join("team").join("config.json")
}

/// What identifies a version of the team config without reading it (device,
/// inode, size, modification time): a cached lookup is good while this is
/// unchanged. `None`: no regular file there.
pub fn team_config_identity(top: &Path) -> Option<(u64, u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(team_config(top)).ok()?;
    m.is_file()
        .then(|| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The team config `file`, read (a FIFO must not hang it: O_NONBLOCK and a
/// file-type check; at most [`MAX_TEAM_CONFIG`] bytes) and parsed.
/// Malformed JSON is [`Error::Corruption`].
fn read_team_config(file: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
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
    serde_json::from_str(&text)
        .map_err(|e| Error::Corruption(format!("{}: not valid JSON: {e}", file.display())))
}

/// The `team.developers` object of a parsed team config (`None`: absent or
/// not an object, so nobody is named).
fn developers(v: &serde_json::Value) -> Option<&serde_json::Map<String, serde_json::Value>> {
    v.get("team")
        .and_then(|t| t.get("developers"))
        .and_then(|d| d.as_object())
}

/// The id of the first developer (in id order) in `team.developers` whose
/// `email` equals `email`, ignoring ASCII case and surrounding blanks.
pub fn developer_for_email(email: &str, file: &Path) -> Result<Option<String>> {
    let v = read_team_config(file)?;
    let want = email.trim();
    let Some(devs) = developers(&v) else {
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

/// Why the team config under `top` cannot be used, if one is there and
/// cannot (unreadable, not valid JSON, no `team.developers` object): the
/// caller is then in the legacy namespace, as docs/shell.md ("Namespace")
/// says, and the front end names the problem in one debug line
/// ([`team_config_note`]). `None`: no team config, or a usable one. Reads
/// the file again; the front ends ask only with `FF_DEBUG=true`.
pub fn team_config_problem(top: &Path) -> Option<Error> {
    let file = team_config(top);
    if std::fs::symlink_metadata(&file).is_err() {
        return None;
    }
    match read_team_config(&file) {
        Err(e) => Some(e),
        Ok(v) if developers(&v).is_none() => Some(Error::Corruption(format!(
            "{}: no team.developers object",
            file.display()
        ))),
        Ok(_) => None,
    }
}

/// The debug line's text for a team config that is not used (one rule for
/// the binary and the builtin; each adds its own prefix).
pub fn team_config_note(problem: &Error) -> String {
    format!("team config ignored, legacy namespace: {problem}")
}

/// `git config user.email` in `top` (one `git` process, SIGCHLD blocked),
/// with this process's environment; `None` when git fails or says nothing.
pub fn git_email(top: &Path) -> Option<String> {
    let mut git = std::process::Command::new("git");
    git.arg("-C").arg(top);
    email_of(git)
}

/// Runs a prepared `git -C TOP` (the caller chose its environment) for
/// `config user.email`.
pub fn email_of(mut git: std::process::Command) -> Option<String> {
    git.args(["config", "user.email"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    crate::fsutil::before_exec(
        &mut git,
        crate::fsutil::BeforeExec::EmptyMask { defaults: 0 },
    );
    let out = {
        let _chld = crate::lock::kernel::SigchldBlocked::new();
        git.output().ok()?
    };
    let email = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !email.is_empty()).then_some(email)
}

/// The developer of the team config under `top` for the email `email`
/// finds (`None`: no team config, no email, nobody with that email, or a
/// config that cannot be used: the caller then is in the legacy namespace).
/// `email` runs only when the team config exists.
pub fn team_developer(top: &Path, email: impl FnOnce(&Path) -> Option<String>) -> Option<String> {
    let cfg = team_config(top);
    if !cfg.is_file() {
        return None;
    }
    let email = email(top)?;
    developer_for_email(&email, &cfg).ok().flatten()
}

// ---------------------------------------------------------------------------
// The namespace
// ---------------------------------------------------------------------------

/// A caller's namespace: the repository top and the developer it belongs
/// to (none: the legacy namespace `<top>/.flowforge`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    top: PathBuf,
    in_repo: bool,
    developer: Option<String>,
}

/// A lock dir and, for a per-user default in a shared place, the base dir
/// that must be checked (owner, mode) with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockDir {
    pub dir: PathBuf,
    /// `Some(base)`: `$XDG_RUNTIME_DIR/ffkit` or `/tmp/ffkit-<uid>`, which
    /// [`crate::lock::make_lock_dir`] checks on every call.
    pub shared_base: Option<PathBuf>,
}

impl Namespace {
    /// The namespace of `FLOWFORGE_DEVELOPER` alone (no team lookup): what
    /// the binary's default cache dir uses.
    pub fn of_setting(cfg: &Config, here: &Here) -> Namespace {
        Namespace {
            top: here.top().to_path_buf(),
            in_repo: here.root.is_some(),
            developer: cfg.developer.clone(),
        }
    }

    /// The caller's namespace (docs/shell.md, "Namespace"):
    /// `FLOWFORGE_DEVELOPER` (already validated, in `developer`), else the
    /// team config's developer under the top (`team`, given the top, runs
    /// only then: [`team_developer`] or a cached answer), else legacy.
    pub fn resolve(
        developer: Option<&str>,
        here: &Here,
        team: impl FnOnce(&Path) -> Option<String>,
    ) -> Namespace {
        let developer = match developer {
            Some(d) => Some(d.to_string()),
            None => team(here.top()),
        };
        Namespace {
            top: here.top().to_path_buf(),
            in_repo: here.root.is_some(),
            developer,
        }
    }

    /// [`Namespace::resolve`] with the settings and this process's git.
    pub fn of(cfg: &Config, here: &Here) -> Namespace {
        Namespace::resolve(cfg.developer.as_deref(), here, |top| {
            team_developer(top, git_email)
        })
    }

    /// Another developer's namespace in the same repository (a `dev_id`
    /// argument, checked with [`validate_developer_arg`]).
    pub fn for_developer(&self, id: &str) -> Namespace {
        Namespace {
            developer: Some(id.to_string()),
            ..self.clone()
        }
    }

    /// The developer id, if any (none: legacy).
    pub fn developer(&self) -> Option<&str> {
        self.developer.as_deref()
    }

    /// `<top>/.flowforge/dev-<id>`, or `<top>/.flowforge` in legacy mode.
    pub fn root(&self) -> PathBuf {
        let base = self.top.join(FLOWFORGE_DIR);
        match &self.developer {
            Some(id) => base.join(format!("dev-{id}")),
            None => base,
        }
    }

    /// `<namespace>/cache`.
    pub fn cache_dir(&self) -> PathBuf {
        self.root().join("cache")
    }

    /// The log of a caller in this namespace: `setting`
    /// (`CACHE_PERF_METRICS`, the user's choice), else the default log of
    /// `<namespace>/cache`, a dir the shell functions picked, so judged as
    /// the cache judges it ([`crate::metrics::LogPlace::check`]).
    pub fn metrics_log(&self, setting: Option<&Path>) -> crate::metrics::LogPlace {
        use crate::metrics::LogPlace;
        match setting {
            Some(p) => LogPlace::Named(p.to_path_buf()),
            None => LogPlace::InDir(self.cache_dir(), crate::config::DirOrigin::Functions),
        }
    }

    /// Where named locks live (docs/locks.md, "Lock dir"): `explicit`
    /// (`--lock-dir`), else `FFKIT_LOCK_DIR`, else `<namespace>/locks` with a
    /// developer or inside a repository, else `$XDG_RUNTIME_DIR/ffkit/locks`,
    /// else `/tmp/ffkit-<uid>/locks`. Session locks: `sessions/locks` in the
    /// namespace and the per-user dirs, `sessions/` in a named dir.
    ///
    /// A relative dir is the current dir's, made absolute here (when the
    /// current dir can be read), so that a lock's file is one file however
    /// it is reached: the shell functions key their held locks on it, and
    /// a release after a `cd` names the other dir's lock, as `$PWD/rl`
    /// would, not the lock taken in the first dir (the builtin released
    /// that one, the fallback refused with the wrong line and kept it).
    pub fn lock_dir(&self, cfg: &Config, explicit: Option<&Path>, session: bool) -> LockDir {
        if let Some(d) = explicit.or(cfg.lock_dir.as_deref()) {
            let abs;
            let d = if d.is_relative()
                && let Ok(cwd) = current_dir()
            {
                abs = cwd.join(d);
                abs.as_path()
            } else {
                d
            };
            let dir = if session {
                d.join("sessions")
            } else {
                d.to_path_buf()
            };
            return LockDir {
                dir,
                shared_base: None,
            };
        }
        let in_base = |base: PathBuf| {
            if session {
                base.join("sessions").join("locks")
            } else {
                base.join("locks")
            }
        };
        if self.developer.is_some() || self.in_repo {
            return LockDir {
                dir: in_base(self.root()),
                shared_base: None,
            };
        }
        let base = match cfg.runtime_dir() {
            Some(r) => r.join("ffkit"),
            None => PathBuf::from(format!("/tmp/ffkit-{}", rustix::process::getuid().as_raw())),
        };
        LockDir {
            dir: in_base(base.clone()),
            shared_base: Some(base),
        }
    }
}

/// The lock dir for `cfg` in the current dir: the namespace (and with it
/// the team lookup) is resolved only when no dir is named.
pub fn lock_dir(
    cfg: &Config,
    explicit: Option<&Path>,
    session: bool,
    here: Option<&Here>,
) -> Result<LockDir> {
    if explicit.is_some() || cfg.lock_dir.is_some() {
        // Named: the namespace plays no part.
        let none = Namespace {
            top: PathBuf::new(),
            in_repo: false,
            developer: None,
        };
        return Ok(none.lock_dir(cfg, explicit, session));
    }
    let ns = match here {
        Some(h) => Namespace::of(cfg, h),
        None => Namespace::of(cfg, &Here::now()?),
    };
    Ok(ns.lock_dir(cfg, None, session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn cfg(vars: &[(&str, &str)]) -> Config {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |k| {
            vars.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| OsString::from(v))
        })
        .unwrap()
    }

    fn here(cwd: &str, root: Option<&str>) -> Here {
        Here {
            cwd: cwd.into(),
            root: root.map(PathBuf::from),
        }
    }

    #[test]
    fn the_namespace_paths() {
        let h = here("/r/sub", Some("/r"));
        let c = cfg(&[]);
        let legacy = Namespace::resolve(None, &h, |_| None);
        assert_eq!(legacy.root(), Path::new("/r/.flowforge"));
        assert_eq!(legacy.cache_dir(), Path::new("/r/.flowforge/cache"));
        assert_eq!(
            legacy.metrics_log(c.perf_metrics.as_deref()).path(),
            Path::new("/r/.flowforge/cache/.perf-metrics.csv")
        );
        assert_eq!(
            legacy.lock_dir(&c, None, true).dir,
            Path::new("/r/.flowforge/sessions/locks")
        );
        let team = Namespace::resolve(None, &h, |top| {
            assert_eq!(top, Path::new("/r"));
            Some("carol".into())
        });
        assert_eq!(team.root(), Path::new("/r/.flowforge/dev-carol"));
        let env = Namespace::resolve(Some("alice"), &h, |_| panic!("no team lookup"));
        assert_eq!(
            env.for_developer("bob").lock_dir(&c, None, false).dir,
            Path::new("/r/.flowforge/dev-bob/locks")
        );
        let named = cfg(&[("FFKIT_LOCK_DIR", "/l")]);
        assert_eq!(
            env.lock_dir(&named, None, true).dir,
            Path::new("/l/sessions")
        );
        let outside = Namespace::resolve(None, &here("/tmp/x", None), |_| None);
        let rt = cfg(&[("XDG_RUNTIME_DIR", "/run/user/7")]);
        let d = outside.lock_dir(&rt, None, false);
        assert_eq!(d.dir, Path::new("/run/user/7/ffkit/locks"));
        assert_eq!(
            d.shared_base.as_deref(),
            Some(Path::new("/run/user/7/ffkit"))
        );
    }

    #[test]
    fn names_are_counted_in_bytes() {
        assert!(validate_name(&"é".repeat(100)).is_ok());
        assert_eq!(validate_name(&"é".repeat(101)).unwrap_err().exit_code(), 2);
        for bad in ["", ".x", "..", "a/b", "a\tb", "a\u{7f}"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let f = lock_file(Path::new("/d"), OsStr::new("sp ace*")).unwrap();
        assert_eq!(f, Path::new("/d/sp ace*.lock"));
        assert!(validate_developer(&"a".repeat(65)).is_err());
        assert_eq!(
            validate_developer_arg(OsStr::new("../x"), "f: dev_id")
                .unwrap_err()
                .exit_code(),
            2
        );
    }
}
