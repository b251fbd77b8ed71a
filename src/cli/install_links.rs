//! `install-links`: creates (or removes) the applet symlinks that make the
//! multicall binary answer to `cache-size`, `cache-write`, …, and can place
//! the man pages and shell completions under a prefix.
//!
//! A link is "ffkit's" when it is a symlink that resolves to the running
//! binary or points at a file named `ffkit` (another build of it); only
//! such links are replaced or removed. Anything else in the way is a
//! conflict (exit 5, nothing changed) unless `--force`; a directory in the
//! way is never replaced. Personas — applets named after a system tool,
//! such as `flock` — are linked only when asked by `--persona NAME`, so a
//! default install never shadows the system's tool.
//!
//! The man pages and completions are the committed, generated files,
//! embedded at build time (see `build.rs`), so an installed binary can place
//! them without the source tree. Installed files are 0644; a file is only
//! rewritten when its content differs.
//!
//! Under a prefix, what it placed is listed in `P/lib/ffkit/install-links.list`
//! (the manifest: each file with the blake3 of what was written, each link
//! with its target), and `--remove` removes exactly those entries that still
//! match, then the manifest: a file changed since is left with one line,
//! and a file that was already there, identical, when the install ran (a
//! distribution package's) was not placed by us and is not listed. Without
//! a manifest (an install by an older ffkit) `--remove` deletes the files
//! whose content is exactly what this build would install.

use super::ExitCode;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{APPLETS, Applet, Ctx, quiet_arg};
use crate::error::{Error, Result};
use crate::fsutil;

include!(concat!(env!("OUT_DIR"), "/embedded_docs.rs"));

/// This applet manages links; a symlink named after it would be pointless
/// (its row says `LinkPolicy::Never`, as `init`'s does: a symlink named
/// `init` would be a confusing command of its own).
const SELF: &str = "install-links";

pub use super::LinkPolicy;

/// An applet's link policy: its row's `link` in `super::APPLETS`.
pub fn link_policy(a: &Applet) -> LinkPolicy {
    a.link
}

/// The applets linked by default.
pub fn default_links() -> Vec<&'static str> {
    names_with(|p| p == LinkPolicy::Default)
}

/// The persona applets (`--persona NAME`).
pub fn personas() -> Vec<&'static str> {
    names_with(|p| p == LinkPolicy::Persona)
}

fn names_with(f: impl Fn(LinkPolicy) -> bool) -> Vec<&'static str> {
    APPLETS
        .iter()
        .filter(|a| f(link_policy(a)))
        .map(|a| a.name)
        .collect()
}

pub fn command() -> Command {
    Command::new(SELF)
        .about("Create the applet symlinks, and optionally install man pages and completions")
        .long_about(
            "Create a symlink per applet (cache-size, cache-write, ...) pointing at this binary, \
             next to it or in --dir. Idempotent: links already in place are left alone, ffkit \
             links to another build are updated. A file in the way that is not ffkit's link is \
             a conflict (exit 5, nothing changed) unless --force; a directory is never replaced. \
             Personas named after system tools (flock) are linked only with --persona; \
             init and install-links are run as `ffkit init`, never linked. \
             --prefix P puts the links in P/bin (unless --dir) and also installs the man pages \
             into P/share/man/man1 and the bash, zsh and \
             fish completions into P/share/{bash-completion/completions,zsh/site-functions,\
             fish/vendor_completions.d}, and the bash builtin the build left beside this binary \
             (libffkit_builtin.so) into P/lib/ffkit. --bin (with --prefix) first copies this \
             binary to P/bin/ffkit and links there: a whole install from a build directory \
             (`cargo xtask install` runs it). --remove undoes all of this, removing only \
             ffkit's own links and files.",
        )
        .arg(
            Arg::new("dir")
                .long("dir")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Where to create the links (default: PREFIX/bin with --prefix, else the directory of the ffkit binary)"),
        )
        .arg(
            Arg::new("force")
                .long("force")
                .short('f')
                .action(ArgAction::SetTrue)
                .conflicts_with("remove")
                .help("Replace files in the way that are not ffkit's links"),
        )
        .arg(
            Arg::new("remove")
                .long("remove")
                .action(ArgAction::SetTrue)
                .help("Remove ffkit's links (and, with --prefix, its man pages and completions)"),
        )
        .arg(
            Arg::new("prefix")
                .long("prefix")
                .value_name("PREFIX")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Also install man pages and completions under PREFIX/share"),
        )
        .arg(
            Arg::new("bin")
                .long("bin")
                .action(ArgAction::SetTrue)
                .requires("prefix")
                .help("Also copy this binary to PREFIX/bin/ffkit and link there"),
        )
        .arg(
            Arg::new("persona")
                .long("persona")
                .value_name("NAME")
                .action(ArgAction::Append)
                .help("Also link the persona applet NAME (e.g. flock), shadowing the system tool"),
        )
        .arg(quiet_arg().help("Print no summary"))
}

struct Args {
    dir: Option<PathBuf>,
    force: bool,
    remove: bool,
    prefix: Option<PathBuf>,
    /// Copy the running binary to `prefix/bin/ffkit` (or, with `remove`,
    /// remove it there when it is this build).
    bin: bool,
    personas: Vec<String>,
    quiet: bool,
}

/// What is at a link's path now.
enum Found {
    Absent,
    /// ffkit's link, pointing where it should.
    Linked,
    /// ffkit's link to another ffkit (another build or install).
    OtherFfkit,
    /// A file or symlink that is not ffkit's.
    Foreign,
    Directory,
}

#[derive(Default)]
struct Tally {
    created: usize,
    updated: usize,
    unchanged: usize,
    removed: usize,
    skipped: Vec<PathBuf>,
    /// Entries of the manifest changed since they were placed: kept.
    changed: Vec<PathBuf>,
    files_written: usize,
    files_removed: usize,
    /// What this run placed, for the manifest.
    placed: Vec<(PathBuf, Placed)>,
}

/// One thing install-links placed, as its manifest line records it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Placed {
    /// A file with this content (blake3, hex).
    File(String),
    /// A symlink to this target.
    Link(PathBuf),
}

/// The manifest of what install-links placed under a prefix.
const MANIFEST: &str = "install-links.list";

fn manifest_path(prefix: &Path) -> PathBuf {
    prefix.join("lib").join("ffkit").join(MANIFEST)
}

/// Whether `path` still holds what `what` says was placed there.
fn still_placed(path: &Path, what: &Placed) -> bool {
    match what {
        Placed::File(hash) => {
            fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
                && fs::read(path).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == hash)
        }
        Placed::Link(target) => fs::read_link(path).is_ok_and(|t| &t == target),
    }
}

/// The manifest's entries, paths made whole again (a relative one is under
/// the prefix); `None` when there is none. Lines it cannot read are
/// skipped: what they named is left in place.
fn read_manifest(prefix: &Path) -> Result<Option<Vec<(PathBuf, Placed)>>> {
    use std::os::unix::ffi::OsStrExt;
    let path = manifest_path(prefix);
    // Only a regular file is ours (written by `place`, a rename): a list
    // that is a symlink would make another list's entries ours to remove.
    match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Ok(m) if !m.is_file() => {
            return Err(Error::General(format!(
                "{} is not a regular file: nothing removed",
                path.display()
            )));
        }
        _ => {}
    }
    let text = fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let mut f = line.splitn(3, |&b| b == b'\t');
        let (Some(kind), Some(what), Some(at)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let what = match kind {
            b"file" => Placed::File(String::from_utf8_lossy(what).into_owned()),
            b"link" => Placed::Link(PathBuf::from(std::ffi::OsStr::from_bytes(what))),
            _ => continue,
        };
        if let Some(path) = listable(prefix, Path::new(std::ffi::OsStr::from_bytes(at)), &what) {
            out.push((path, what));
        }
    }
    Ok(Some(out))
}

/// Where a manifest line may point, whatever the list says (it is a file
/// anyone who can write the prefix can edit): a path under the prefix,
/// with no `..` and no symlinked directory on the way, or, outside it
/// (links made in a `--dir`), only a symlink named like one of ffkit's
/// links. Anything else is skipped, so left in place.
fn listable(prefix: &Path, at: &Path, what: &Placed) -> Option<PathBuf> {
    use std::path::Component;
    if at.is_absolute() {
        let ours = at
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| names_for_removal().contains(&n));
        return (ours && matches!(what, Placed::Link(_))).then(|| at.to_path_buf());
    }
    if !at.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut dir = prefix.to_path_buf();
    for c in at.parent()?.components() {
        dir.push(c);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return None;
        }
    }
    Some(prefix.join(at))
}

/// Writes the manifest: the entries of the last one that still match and
/// are not replaced, then what this run placed. A path under the prefix
/// is kept relative to it (the tree can be moved); a path or target with a
/// tab or a newline cannot be a line and is not listed (so never removed).
fn write_manifest(prefix: &Path, t: &Tally) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut entries: Vec<(PathBuf, Placed)> = read_manifest(prefix)?
        .unwrap_or_default()
        .into_iter()
        .filter(|(p, what)| !t.placed.iter().any(|(q, _)| q == p) && still_placed(p, what))
        .collect();
    entries.extend(t.placed.iter().cloned());
    let mut text = Vec::new();
    for (path, what) in &entries {
        // Outside the prefix (`--dir`), absolute: read back, a relative
        // path would be taken as under the prefix.
        let outside;
        let at = match path.strip_prefix(prefix) {
            Ok(rel) => rel,
            Err(_) => {
                outside = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                &outside
            }
        }
        .as_os_str()
        .as_bytes();
        let (kind, val): (&[u8], &[u8]) = match what {
            Placed::File(h) => (b"file", h.as_bytes()),
            Placed::Link(target) => (b"link", target.as_os_str().as_bytes()),
        };
        if [at, val]
            .iter()
            .any(|b| b.contains(&b'\n') || b.contains(&b'\t'))
        {
            continue;
        }
        text.extend_from_slice(&[kind, b"\t", val, b"\t", at, b"\n"].concat());
    }
    let dest = manifest_path(prefix);
    let mut quiet = Tally::default();
    place(&dest, prefix, &text, 0o644, &mut quiet)
}

/// `--remove` under a prefix with a manifest: removes each listed entry
/// that still holds what was placed, keeps (and names) one changed since,
/// then removes the manifest.
fn remove_listed(prefix: &Path, entries: Vec<(PathBuf, Placed)>, t: &mut Tally) -> Result<()> {
    for (path, what) in entries {
        if still_placed(&path, &what) {
            fsutil::remove_if_exists(&path)?;
            match what {
                Placed::File(_) => t.files_removed += 1,
                Placed::Link(_) => t.removed += 1,
            }
        } else if fs::symlink_metadata(&path).is_ok() {
            t.changed.push(path);
        }
    }
    fsutil::remove_if_exists(&manifest_path(prefix))?;
    Ok(())
}

pub fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        dir: m.get_one::<PathBuf>("dir").cloned(),
        force: m.get_flag("force"),
        remove: m.get_flag("remove"),
        prefix: m.get_one::<PathBuf>("prefix").cloned(),
        bin: m.get_flag("bin"),
        personas: m
            .get_many::<String>("persona")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        quiet: m.get_flag("quiet"),
    };
    let known = personas();
    for p in &a.personas {
        if !known.contains(&p.as_str()) {
            return Err(Error::Validation(format!(
                "--persona {p}: not a persona applet (personas: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    let running = std::env::current_exe()
        .map_err(|e| Error::io("cannot locate the running binary", "/proc/self/exe", e))?;
    // Where the build left the builtin (beside the running binary).
    let build_dir = running.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut t = Tally::default();
    // The binary the links point at: the running one, or with --bin its
    // copy in PREFIX/bin.
    let exe = match (&a.prefix, a.bin) {
        (Some(p), true) => p.join("bin").join("ffkit"),
        _ => running.clone(),
    };
    if let (Some(p), true) = (&a.prefix, a.bin && !a.remove) {
        let bytes = fs::read(&running).map_err(|e| Error::io("cannot read", &running, e))?;
        place(&exe, p, &bytes, 0o755, &mut t)?;
    }
    // What an earlier install under this prefix placed (read before any
    // removal below changes what is on disk).
    let listed = match (&a.prefix, a.remove) {
        (Some(p), true) => read_manifest(p)?,
        _ => None,
    };
    let exe_dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    // The links go in --dir, else in PREFIX/bin with --prefix (an install
    // under a prefix puts its commands there, wherever the binary is), else
    // beside the binary.
    let dir = match (&a.dir, &a.prefix) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => p.join("bin"),
        (None, None) => exe_dir.clone(),
    };
    // Next to the binary the link is relative, so the pair can be moved together.
    let target: PathBuf = if same_dir(&dir, &exe_dir) {
        exe.file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| exe.clone())
    } else {
        exe.clone()
    };
    let names = linked_names(&a.personas);
    if a.remove {
        for name in &names_for_removal() {
            let path = dir.join(name);
            match classify(&path, &target, &exe) {
                Found::Linked | Found::OtherFfkit => {
                    fs::remove_file(&path).map_err(|e| Error::io("cannot remove", &path, e))?;
                    t.removed += 1;
                }
                Found::Foreign | Found::Directory => t.skipped.push(path),
                Found::Absent => {}
            }
        }
        match (&a.prefix, listed) {
            (Some(p), Some(entries)) => remove_listed(p, entries, &mut t)?,
            (Some(p), None) => {
                remove_docs(p, &mut t)?;
                remove_builtin(&build_dir, p, &mut t)?;
                if a.bin {
                    remove_if_same(&exe, &running, &mut t)?;
                }
            }
            (None, _) => {}
        }
    } else {
        let mut plan = Vec::new();
        let mut conflicts = Vec::new();
        for name in &names {
            let path = dir.join(name);
            match classify(&path, &target, &exe) {
                Found::Absent => plan.push((path, false)),
                Found::Linked => t.unchanged += 1,
                Found::OtherFfkit => plan.push((path, true)),
                Found::Foreign if a.force => plan.push((path, true)),
                Found::Foreign => conflicts.push((path, false)),
                Found::Directory => conflicts.push((path, true)),
            }
        }
        if !conflicts.is_empty() {
            let list: Vec<String> = conflicts
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            // The hint names what would help: --force only for files (a
            // directory in the way was told "use --force", which never
            // replaces one).
            let dirs = conflicts.iter().any(|&(_, dir)| dir);
            let files = conflicts.iter().any(|&(_, dir)| !dir);
            return Err(Error::Conflict(format!(
                "{} not ffkit's link{}, nothing changed: {}{}",
                if list.len() == 1 { "is" } else { "are" },
                if list.len() == 1 { "" } else { "s" },
                list.join(", "),
                match (files, dirs) {
                    (true, true) => {
                        " (use --force to replace files; directories are never replaced)"
                    }
                    (true, false) => " (use --force to replace files)",
                    _ => " (directories are never replaced)",
                }
            )));
        }
        if !plan.is_empty() {
            fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        }
        for (path, replace) in plan {
            link(&target, &path)?;
            t.placed.push((path, Placed::Link(target.clone())));
            if replace {
                t.updated += 1;
            } else {
                t.created += 1;
            }
        }
        if let Some(p) = &a.prefix {
            install_docs(p, &names, &mut t)?;
            install_builtin(&build_dir, p, &mut t)?;
            write_manifest(p, &t)?;
        }
    }
    for p in &t.skipped {
        ctx.note(format_args!(
            "left {} alone: not ffkit's link or this build's file",
            p.display()
        ));
    }
    for p in &t.changed {
        ctx.note(format_args!(
            "left {} alone: changed since install-links placed it",
            p.display()
        ));
    }
    if !a.quiet {
        let summary = if a.remove {
            format!("removed {} links from {}", t.removed, dir.display())
        } else {
            format!(
                "{} links in {}: {} created, {} updated, {} already in place",
                t.created + t.updated + t.unchanged,
                dir.display(),
                t.created,
                t.updated,
                t.unchanged
            )
        };
        let docs = match &a.prefix {
            Some(p) if a.remove => {
                format!("; removed {} files under {}", t.files_removed, p.display())
            }
            Some(p) => format!("; {} files written under {}", t.files_written, p.display()),
            None => String::new(),
        };
        ctx.write_out(format!("{summary}{docs}\n").as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The applets to link: the default ones and the personas asked for.
fn linked_names(personas: &[String]) -> Vec<&'static str> {
    names_with(|p| p == LinkPolicy::Default)
        .into_iter()
        .chain(
            self::personas()
                .into_iter()
                .filter(|n| personas.iter().any(|p| p == n)),
        )
        .collect()
}

/// `--remove` removes every link of ours, personas included.
fn names_for_removal() -> Vec<&'static str> {
    names_with(|p| p != LinkPolicy::Never)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn classify(path: &Path, target: &Path, exe: &Path) -> Found {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Found::Absent;
    };
    if meta.is_dir() {
        return Found::Directory;
    }
    if !meta.file_type().is_symlink() {
        return Found::Foreign;
    }
    let Ok(points_at) = fs::read_link(path) else {
        return Found::Foreign;
    };
    if points_at == target {
        return Found::Linked;
    }
    let resolved = path.parent().unwrap_or(Path::new(".")).join(&points_at);
    if let (Ok(r), Ok(e)) = (fs::canonicalize(&resolved), fs::canonicalize(exe))
        && r == e
    {
        return Found::Linked;
    }
    if points_at.file_name() == Some(OsString::from("ffkit").as_os_str()) {
        Found::OtherFfkit
    } else {
        Found::Foreign
    }
}

/// Creates or atomically replaces the symlink `path` -> `target`.
fn link(target: &Path, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = fsutil::temp_path(dir);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot rename into", path, e)
    })
}

/// An embedded doc file: the command it documents and where it goes under
/// a prefix.
fn doc_destination(rel: &str) -> Option<(&str, bool, PathBuf)> {
    let (dir, file) = rel.rsplit_once('/')?;
    let (name, is_man, dest) = match dir {
        "man" => (file.strip_suffix(".1")?, true, "share/man/man1"),
        "completions/bash" => (file, false, "share/bash-completion/completions"),
        "completions/zsh" => (file.strip_prefix('_')?, false, "share/zsh/site-functions"),
        "completions/fish" => (
            file.strip_suffix(".fish")?,
            false,
            "share/fish/vendor_completions.d",
        ),
        _ => return None,
    };
    Some((name, is_man, Path::new(dest).join(file)))
}

/// The man pages of ffkit, of the linked applets and of the others
/// (`ffkit-init.1`, and a persona's `ffkit-flock.1`, whose name shadows no
/// system page, so every page `ffkit(1)` names is installed). Completions
/// of `ffkit` and of the linked names only: a persona's (`flock`) would
/// replace the system tool's.
fn wanted(name: &str, is_man: bool, linked: &[&str]) -> bool {
    if name == "ffkit" {
        return true;
    }
    if !is_man {
        return linked.contains(&name);
    }
    APPLETS.iter().any(|a| {
        a.man_page() == name && (linked.contains(&a.name) || link_policy(a) != LinkPolicy::Default)
    })
}

fn install_docs(prefix: &Path, linked: &[&str], t: &mut Tally) -> Result<()> {
    for (rel, bytes) in EMBEDDED {
        let Some((name, is_man, dest)) = doc_destination(rel) else {
            continue;
        };
        if !wanted(name, is_man, linked) {
            continue;
        }
        place(&prefix.join(dest), prefix, bytes, 0o644, t)?;
    }
    Ok(())
}

/// Puts `bytes` at `dest` with `mode`, whole (temp file and rename), unless
/// it already holds exactly them; counts what it wrote.
fn place(dest: &Path, prefix: &Path, bytes: &[u8], mode: u32, t: &mut Tally) -> Result<()> {
    if fs::read(dest).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let dir = dest.parent().unwrap_or(prefix);
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let (tmp, _) = fsutil::write_temp(dir, bytes)?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot set the mode of", &tmp, e))
        .and_then(|()| {
            fs::rename(&tmp, dest).map_err(|e| Error::io("cannot rename into", dest, e))
        });
    if placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    placed?;
    t.files_written += 1;
    t.placed.push((
        dest.to_path_buf(),
        Placed::File(blake3::hash(bytes).to_hex().to_string()),
    ));
    Ok(())
}

/// The bash builtin, when the build that made this binary left one beside
/// it (`cargo build --release`), goes to `P/lib/ffkit/` where the shell
/// loader looks for it relative to a binary in `P/bin` (docs/shell.md).
const BUILTIN_SO: &str = "libffkit_builtin.so";

fn builtin_destination(prefix: &Path) -> PathBuf {
    prefix.join("lib").join("ffkit").join(BUILTIN_SO)
}

fn install_builtin(exe_dir: &Path, prefix: &Path, t: &mut Tally) -> Result<()> {
    let src = exe_dir.join(BUILTIN_SO);
    let Ok(bytes) = fs::read(&src) else {
        return Ok(());
    };
    place(&builtin_destination(prefix), prefix, &bytes, 0o755, t)
}

/// Removes the installed builtin only when it is this build's.
fn remove_builtin(build_dir: &Path, prefix: &Path, t: &mut Tally) -> Result<()> {
    remove_if_same(&builtin_destination(prefix), &build_dir.join(BUILTIN_SO), t)
}

/// Removes the installed file `dest` only when its content is `ours`'s
/// (this build's); another build's file is left alone and named.
fn remove_if_same(dest: &Path, ours: &Path, t: &mut Tally) -> Result<()> {
    match (fs::read(ours), fs::read(dest)) {
        (Ok(ours), Ok(old)) if ours == old => {
            fsutil::remove_if_exists(dest)?;
            t.files_removed += 1;
        }
        (_, Ok(_)) => t.skipped.push(dest.to_path_buf()),
        _ => {}
    }
    Ok(())
}

fn remove_docs(prefix: &Path, t: &mut Tally) -> Result<()> {
    for (rel, bytes) in EMBEDDED {
        let Some((_, _, dest)) = doc_destination(rel) else {
            continue;
        };
        let dest = prefix.join(dest);
        match fs::read(&dest) {
            Ok(old) if old == *bytes => {
                fsutil::remove_if_exists(&dest)?;
                t.files_removed += 1;
            }
            Ok(_) => t.skipped.push(dest),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot read", &dest, e)),
        }
    }
    Ok(())
}
