//! cache-run --output: byte-exact restore of a generated tree (nested,
//! symlinks in and out of the tree, hard links, modes, mtimes, a name with
//! a newline) against an independent snapshot, edits of restored files,
//! 8 concurrent misses, SIGKILL during store and restore, eviction of
//! exactly the unshared blobs, hostile trees and paths, the Redis refusal
//! and the shell wrapper; blobs, manifests and fans replaced by hand, blobs
//! `--link` cannot name once more (EMLINK, EPERM), fans and blobs
//! symlinked outside the cache, `.store/.gc-lock` replaced by hand, and a restore's parents under a umask
//! without owner bits.
//!
//! The oracles are computed here without ffkit: the generator's own record
//! of the tree it made (sha256, mode, link target, hard-link group) is
//! compared with a manifest walked from the restored tree; a snapshot of a tree is
//! every path with its kind, mode, mtime (ns), content or link target and
//! hard-link group (by inode); the size oracle is the engine's (top-level
//! files) plus every regular file under `.store/XX/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cache_run::{runs, wrapper};
use crate::util::*;

/// One path of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        content: Vec<u8>,
        group: String,
    },
    Symlink {
        target: PathBuf,
    },
}

/// Every path under `root` (not following symlinks), independently of
/// ffkit: hard links grouped by inode under the first path of the group.
fn snapshot(root: &Path) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<u64, String> = BTreeMap::new();
    let mut paths = vec![String::new()];
    let mut all = Vec::new();
    while let Some(rel) = paths.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap().flatten() {
                let n = e.file_name().into_string().unwrap();
                paths.push(if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                });
            }
        }
        all.push((rel, p, m));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, p, m) in all {
        let mtime = (m.mtime(), m.mtime_nsec());
        let item = if m.file_type().is_symlink() {
            Item::Symlink {
                target: fs::read_link(&p).unwrap(),
            }
        } else if m.is_dir() {
            Item::Dir {
                mode: m.mode() & 0o7777,
                mtime,
            }
        } else {
            let group = groups.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            Item::File {
                mode: m.mode() & 0o7777,
                mtime,
                content: fs::read(&p).unwrap(),
                group,
            }
        };
        out.insert(rel, item);
    }
    out
}

/// Bytes of the engine's oracle plus every blob in `.store/XX/`.
fn oracle_with_store(cache: &Path) -> (u64, u64) {
    let (mut bytes, entries) = oracle(cache);
    for b in blobs(cache) {
        bytes += fs::symlink_metadata(&b).unwrap().len();
    }
    (bytes, entries)
}

fn blobs(cache: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(rd) = fs::read_dir(cache.join(".store")) else {
        return out;
    };
    for fan in rd.flatten() {
        let n = fan.file_name().into_string().unwrap();
        if n.len() != 2 || !fan.file_type().unwrap().is_dir() {
            continue;
        }
        for b in fs::read_dir(fan.path()).unwrap().flatten() {
            if b.file_type().unwrap().is_file() {
                out.insert(b.path());
            }
        }
    }
    out
}

/// The index files agree with the oracle (store included), no journal is
/// left, and `cache-size --verify` agrees too.
fn assert_exact_with_store(w: &World, what: &str) {
    // A size query first: it repairs what a killed process left.
    let o = w.cmd("cache-size").arg("--json").output().unwrap();
    assert!(o.status.success(), "{what}: cache-size: {}", stderr_of(&o));
    let (bytes, entries) = oracle_with_store(&w.cache());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["bytes"], bytes, "{what}: cache-size bytes");
    let read = |n: &str| fs::read_to_string(w.cache().join(n)).unwrap_or_default();
    assert_eq!(read(".size-index"), format!("{bytes}\n"), "{what}: bytes");
    assert_eq!(entry_count(&w.cache()), Some(entries), "{what}: entries");
    assert!(!journal_left(&w.cache()), "{what}: journal left");
    let o = w.cmd("cache-size").arg("--verify").output().unwrap();
    assert!(o.status.success(), "{what}: verify: {}", stderr_of(&o));
}

/// One path of the generator's own record of a tree: what it made, not
/// what is on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Dir {
        mode: u32,
    },
    File {
        sha256: String,
        mode: u32,
        group: String,
    },
    Symlink {
        target: PathBuf,
    },
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The manifest of a tree on disk, by a walk of its own (sha256, mode,
/// link target; a hard-link group is named by its smallest path).
fn manifest(root: &Path) -> BTreeMap<String, Want> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let m = fs::symlink_metadata(&p).unwrap();
        let w = if m.file_type().is_symlink() {
            Want::Symlink {
                target: fs::read_link(&p).unwrap(),
            }
        } else if m.is_dir() {
            for e in fs::read_dir(&p).unwrap().flatten() {
                let n = e.file_name().into_string().unwrap();
                todo.push(if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                });
            }
            Want::Dir {
                mode: m.mode() & 0o7777,
            }
        } else {
            inodes.entry(m.ino()).or_default().push(rel.clone());
            Want::File {
                sha256: sha256(&fs::read(&p).unwrap()),
                mode: m.mode() & 0o7777,
                group: String::new(),
            }
        };
        out.insert(rel, w);
    }
    for paths in inodes.values() {
        let first = paths.iter().min().unwrap().clone();
        for p in paths {
            if let Some(Want::File { group, .. }) = out.get_mut(p) {
                *group = first.clone();
            }
        }
    }
    out
}

/// Generates a tree of `n` regular files under `root`, all in this process
/// (no process per file), and returns its record: nested directories (up
/// to 4 deep, some named with a newline, read-only, sticky, group-only),
/// files of varied sizes and modes (set-uid included), duplicate contents
/// (shared blobs), empty files, hard-link groups across directories,
/// symlinks into the tree, out of it (`/etc`, `../..`) and dangling, names
/// with newlines, and a distinct nanosecond mtime on every file and
/// directory.
fn generate(root: &Path, n: usize) -> BTreeMap<String, Want> {
    let mut want = BTreeMap::new();
    let mut dirs: Vec<(String, u32)> = vec![(String::new(), 0o755)];
    let mut links: Vec<(String, String)> = Vec::new();
    fs::create_dir_all(root).unwrap();
    let dir_mode = |i: usize| match i % 11 {
        3 => 0o750,
        7 => 0o1777,
        9 => 0o555,
        _ => 0o755,
    };
    let mkdir = |rel: String, mode: u32, dirs: &mut Vec<(String, u32)>| {
        if !dirs.iter().any(|(d, _)| *d == rel) {
            fs::create_dir(root.join(&rel)).unwrap();
            dirs.push((rel, mode));
        }
    };
    let file_modes = [0o644, 0o755, 0o600, 0o444, 0o4755, 0o640, 0o700];
    for i in 0..n {
        // d{0..16}/e{0..4}[/g{0..2}[/h{0..1}]]; one directory name with a newline.
        let a = if i % 17 == 16 {
            "nl\ndir".to_string()
        } else {
            format!("d{}", i % 17)
        };
        let mut rel = a;
        mkdir(rel.clone(), dir_mode(i % 17), &mut dirs);
        rel = format!("{rel}/e{}", i % 5);
        mkdir(rel.clone(), dir_mode(i % 5 + 1), &mut dirs);
        if i % 3 != 0 {
            rel = format!("{rel}/g{}", i % 3);
            mkdir(rel.clone(), 0o755, &mut dirs);
            if i % 4 == 0 {
                rel = format!("{rel}/h{}", i % 2);
                mkdir(rel.clone(), 0o711, &mut dirs);
            }
        }
        let name = if i % 500 == 3 {
            format!("f{i}\nsecond line")
        } else {
            format!("f{i}")
        };
        let path = format!("{rel}/{name}");
        let body: Vec<u8> = match i {
            _ if i % 7 == 0 => b"duplicate content\n".to_vec(),
            _ if i % 101 == 0 => Vec::new(),
            _ if i % 997 == 0 => (0..200_000u32).map(|x| (x * 31 + i as u32) as u8).collect(),
            _ => format!("file {i}\n").repeat(i % 50 + 1).into_bytes(),
        };
        fs::write(root.join(&path), &body).unwrap();
        let mode = file_modes[i % file_modes.len()];
        fs::set_permissions(root.join(&path), fs::Permissions::from_mode(mode)).unwrap();
        want.insert(
            path.clone(),
            Want::File {
                sha256: sha256(&body),
                mode,
                group: path.clone(),
            },
        );
        // Hard links: another name in another directory (and a third).
        if i % 250 == 5 {
            let l = format!("d{}/link-of-{i}", (i + 1) % 16);
            mkdir(
                format!("d{}", (i + 1) % 16),
                dir_mode((i + 1) % 16),
                &mut dirs,
            );
            fs::hard_link(root.join(&path), root.join(&l)).unwrap();
            links.push((path.clone(), l.clone()));
            if i % 500 == 5 {
                let l2 = format!("{rel}/second-link-of-{i}");
                fs::hard_link(root.join(&path), root.join(&l2)).unwrap();
                links.push((path.clone(), l2));
            }
        }
        // Symlinks beside it: into the tree, out of it, dangling.
        if i % 300 == 7 {
            for (k, target) in [
                ("in", name.clone()),
                ("up", "../..".to_string()),
                ("etc", "/etc/passwd".to_string()),
                ("out", "../../../../../outside".to_string()),
                ("dangling", format!("gone-{i}")),
            ] {
                let l = format!("{rel}/{k}-{i}");
                symlink(&target, root.join(&l)).unwrap();
                want.insert(
                    l,
                    Want::Symlink {
                        target: target.into(),
                    },
                );
            }
        }
    }
    // Hard-link groups: every name of one file, named by its smallest path.
    for (orig, link) in &links {
        let first = links
            .iter()
            .filter(|(o, _)| o == orig)
            .map(|(_, l)| l)
            .chain([orig])
            .min()
            .unwrap()
            .clone();
        for p in [orig, link] {
            let Some(Want::File { sha256, mode, .. }) = want.get(orig).cloned() else {
                unreachable!()
            };
            want.insert(
                p.clone(),
                Want::File {
                    sha256,
                    mode,
                    group: first.clone(),
                },
            );
        }
    }
    // mtimes (files, then directories deepest first), then directory modes.
    let t = |i: usize| {
        std::time::UNIX_EPOCH
            + Duration::new(1_600_000_000 + i as u64, (i as u32 * 7919) % 1_000_000_000)
    };
    let files: Vec<String> = want
        .iter()
        .filter(|(_, w)| matches!(w, Want::File { .. }))
        .map(|(p, _)| p.clone())
        .collect();
    for (i, p) in files.iter().enumerate() {
        fs::File::open(root.join(p))
            .unwrap()
            .set_modified(t(i))
            .unwrap();
    }
    dirs.sort_by_key(|(d, _)| {
        std::cmp::Reverse(d.matches('/').count() + usize::from(!d.is_empty()))
    });
    for (i, (d, mode)) in dirs.iter().enumerate() {
        let p = if d.is_empty() {
            root.to_path_buf()
        } else {
            root.join(d)
        };
        fs::File::open(&p).unwrap().set_modified(t(n + i)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        want.insert(d.clone(), Want::Dir { mode: *mode });
    }
    want
}

/// `ffkit cache-run ARGS -- sh -c SCRIPT` in the world.
/// Entries never expire here (`--ttl 0`): on a loaded machine a 10,000-file
/// test outlasts the default 60 s, and a hit turning into a miss by expiry
/// is not what these tests look at.
fn run(w: &World, args: &[&str], script: &str) -> Command {
    let mut c = w.cmd("cache-run");
    c.args(["--ttl", "0"])
        .args(args)
        .args(["--", "sh", "-c", script]);
    c
}

/// `run`'s `--output out` call of `sh -c SCRIPT` under `strace -f -e
/// trace=FILTER -o TRACE`, in the world's dir.
fn traced_run(w: &World, filter: &str, trace: &Path, script: &str) -> Command {
    let mut c = Command::new("strace");
    w.isolate(&mut c);
    c.args(["-f", "-qq", "-e", &format!("trace={filter}"), "-o"])
        .arg(trace)
        .arg(bin())
        .args([
            "cache-run",
            "--ttl",
            "0",
            "--output",
            "out",
            "--",
            "sh",
            "-c",
            script,
        ])
        .current_dir(w.path());
    c
}

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The script that "builds" `out` from `src` and counts its runs.
const COPY: &str = "echo run >> runs; cp -a src out; echo built";

fn remove_tree(p: &Path) {
    if fs::symlink_metadata(p).is_err() {
        return;
    }
    Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(p)
        .status()
        .unwrap();
    fs::remove_dir_all(p).unwrap();
}

/// The tree at `root` is `record` (the generator's manifest) and `snap`
/// (mtimes and contents); the first difference is named, not a dump of
/// 10,000 paths.
fn assert_tree(
    root: &Path,
    record: &BTreeMap<String, Want>,
    snap: &BTreeMap<String, Item>,
    what: &str,
) {
    let got = manifest(root);
    let keys: BTreeSet<&String> = got.keys().chain(record.keys()).collect();
    for k in keys {
        assert_eq!(
            got.get(k),
            record.get(k),
            "{what}: {k:?} against the manifest"
        );
    }
    let got = snapshot(root);
    let keys: BTreeSet<&String> = got.keys().chain(snap.keys()).collect();
    for k in keys {
        assert_eq!(
            got.get(k),
            snap.get(k),
            "{what}: {k:?} against the snapshot"
        );
    }
}

#[test]
fn a_generated_tree_is_restored_byte_exact_and_replaces_what_stood_there() {
    let w = World::new();
    let t0 = Instant::now();
    let record = generate(&w.path().join("src"), 10_000);
    let generated = t0.elapsed();
    assert_eq!(ok(&mut run(&w, &["--output", "out"], COPY)), "built\n");
    let stored = t0.elapsed();
    let want = snapshot(&w.path().join("out"));
    assert_tree(&w.path().join("out"), &record, &want, "the command's tree");
    assert!(want.len() > 10_000, "{}", want.len());
    assert!(
        record
            .values()
            .filter(|w| matches!(w, Want::Symlink { .. }))
            .count()
            > 100
            && record.keys().filter(|p| p.contains('\n')).count() > 500
            && record
                .iter()
                .filter(|(p, w)| matches!(w, Want::File { group, .. } if group != *p))
                .count()
                > 40,
        "the tree has symlinks, names with newlines and hard links"
    );
    assert_exact_with_store(&w, "after the store");
    // Blobs: one per distinct (content, exec bit), /etc never read.
    let store = blobs(&w.cache());
    assert!(
        store.len() < 10_000,
        "duplicates share a blob: {}",
        store.len()
    );
    // What stood at the path goes: another tree with other files.
    remove_tree(&w.path().join("out"));
    fs::create_dir_all(w.path().join("out/stray/deeper")).unwrap();
    fs::write(w.path().join("out/stray/deeper/x"), "x").unwrap();
    let t1 = Instant::now();
    assert_eq!(ok(&mut run(&w, &["--output", "out"], COPY)), "built\n");
    let restored = t1.elapsed();
    assert_eq!(runs(&w), 1, "the second call is a hit");
    assert_tree(&w.path().join("out"), &record, &want, "the restored tree");
    eprintln!(
        "10,000 files: generated in {generated:?}, run and stored in {:?}, restored in {restored:?}",
        stored - generated
    );
    // Nothing is left beside it.
    let siblings: Vec<_> = fs::read_dir(w.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".ffkit"))
        .collect();
    assert!(siblings.is_empty(), "{siblings:?}");
    // A file in place of the tree is replaced too (nothing at all in its
    // place: the --link restore below, and the small trees' tests).
    remove_tree(&w.path().join("out"));
    fs::write(w.path().join("out"), "a file").unwrap();
    ok(&mut run(&w, &["--output", "out"], COPY));
    assert_eq!(snapshot(&w.path().join("out")), want);
    assert_eq!(runs(&w), 1);
    assert_exact_with_store(&w, "after the hits");

    // --link: same content and tree, files are hard links into the store.
    remove_tree(&w.path().join("out"));
    ok(&mut run(&w, &["--output", "out", "--link"], COPY));
    let got = snapshot(&w.path().join("out"));
    assert_eq!(got.len(), want.len());
    for (p, item) in &want {
        match (item, &got[p]) {
            (
                Item::File { content: a, .. },
                Item::File {
                    content: b, mode, ..
                },
            ) => {
                assert_eq!(a, b, "{p}");
                assert_eq!(mode & 0o222, 0, "{p}: read-only with --link");
            }
            (a, b) => assert_eq!(a, b, "{p}"),
        }
    }
    let m = fs::metadata(w.path().join("out/d0/e0/f0")).unwrap();
    assert!(
        m.nlink() >= 3,
        "a duplicate is linked from the store: {}",
        m.nlink()
    );
    assert_eq!(runs(&w), 1);
    assert_exact_with_store(&w, "after --link");
}

#[test]
fn an_edit_of_a_restored_file_never_changes_the_cache() {
    let w = World::new();
    let script = "echo run >> runs; mkdir -p out/a; printf original > out/a/f; chmod 640 out/a/f";
    ok(&mut run(&w, &["--output", "out"], script));
    let want = snapshot(&w.path().join("out"));
    fs::remove_dir_all(w.path().join("out")).unwrap();
    ok(&mut run(&w, &["--output", "out"], script));
    // Edit in place (same inode), append, chmod.
    fs::write(w.path().join("out/a/f"), "EDITED").unwrap();
    fs::set_permissions(w.path().join("out/a/f"), fs::Permissions::from_mode(0o777)).unwrap();
    let before = blobs(&w.cache())
        .into_iter()
        .map(|b| (fs::read(&b).unwrap(), b))
        .collect::<Vec<_>>();
    ok(&mut run(&w, &["--output", "out"], script));
    assert_eq!(snapshot(&w.path().join("out")), want, "the original again");
    let after = blobs(&w.cache())
        .into_iter()
        .map(|b| (fs::read(&b).unwrap(), b))
        .collect::<Vec<_>>();
    assert_eq!(before, after, "the store is untouched");
    assert_eq!(runs(&w), 1);
}

#[test]
fn a_blob_damaged_by_hand_is_stored_again_and_the_next_call_is_a_hit() {
    let w = World::new();
    let script = "echo run >> runs; mkdir -p out; printf hello-blob > out/f";
    ok(&mut run(&w, &["--output", "out"], script));
    // The one blob holding hello-blob, cut short (the manifest is the other).
    let blob = blobs(&w.cache())
        .into_iter()
        .find(|b| fs::read(b).unwrap() == b"hello-blob")
        .unwrap();
    let f = fs::OpenOptions::new().write(true).open(&blob).unwrap();
    f.set_len(3).unwrap();
    drop(f);
    // Damage is a miss: the command runs and the blob is stored again ...
    ok(&mut run(&w, &["--output", "out"], script));
    assert_eq!(runs(&w), 2);
    assert_eq!(fs::read(&blob).unwrap(), b"hello-blob");
    assert_exact_with_store(&w, "after the repair");
    // ... so the next call is a hit that restores the right bytes.
    fs::remove_dir_all(w.path().join("out")).unwrap();
    ok(&mut run(&w, &["--output", "out"], script));
    assert_eq!(runs(&w), 2, "a hit again");
    assert_eq!(fs::read(w.path().join("out/f")).unwrap(), b"hello-blob");
}

/// Attack finding: a blob or the manifest replaced by hand with a symlink
/// (a dedup tool that replaces duplicate files by symlinks), a directory
/// or a FIFO failed every hit with exit 3 (`is a symbolic link
/// (refused)`) or 1 (`not a regular file`), in copy and `--link` mode, and
/// a directory there failed every store of that content too. Now each is
/// damage: a miss, whose store puts the blob back (a directory removed
/// first), the next call a hit, and the index exact.
#[test]
fn a_blob_or_manifest_replaced_by_a_symlink_dir_or_fifo_is_a_miss_and_stored_again() {
    let w = World::new();
    // Fixed mtimes: every run stores the same manifest.
    let script = "echo run >> runs; rm -rf out; mkdir out; printf small-blob > out/s; \
                  head -c 20000 /dev/zero | tr '\\0' b > out/big; \
                  touch -d @1000000000 out/s out/big out; echo made";
    ok(&mut run(&w, &["--output", "out"], script));
    let find = |which: &str| {
        blobs(&w.cache())
            .into_iter()
            .find(|b| {
                let c = fs::read(b).unwrap();
                match which {
                    "small" => c == b"small-blob",
                    "big" => c.len() == 20000,
                    _ => c.starts_with(b"{\"ffkit_outputs\""),
                }
            })
            .unwrap()
    };
    let saved = w.path().join("saved");
    let mut want_runs = 1;
    for kind in ["symlink", "dir", "fifo"] {
        for link in [false, true] {
            for which in ["small", "big", "manifest"] {
                let what = format!("{which} as a {kind}, link {link}");
                let b = find(which);
                fs::copy(&b, &saved).unwrap();
                fs::remove_file(&b).unwrap();
                match kind {
                    "symlink" => symlink(&saved, &b).unwrap(),
                    "dir" => {
                        fs::create_dir(&b).unwrap();
                        fs::write(b.join("x"), "x").unwrap();
                    }
                    _ => mkfifo(&b),
                }
                let args: &[&str] = if link {
                    &["--link", "--output", "out"]
                } else {
                    &["--output", "out"]
                };
                for hit in [false, true] {
                    let o = run(&w, args, script).output().unwrap();
                    assert!(o.status.success(), "{what}: {}", stderr_of(&o));
                    assert!(o.stderr.is_empty(), "{what}: {}", stderr_of(&o));
                    assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n", "{what}");
                    if !hit {
                        want_runs += 1;
                    }
                    assert_eq!(runs(&w), want_runs, "{what}: hit {hit}");
                }
                assert!(fs::symlink_metadata(&b).unwrap().is_file(), "{what}");
                assert_eq!(fs::read(w.path().join("out/s")).unwrap(), b"small-blob");
                assert_eq!(
                    fs::read(w.path().join("out/big")).unwrap(),
                    vec![b'b'; 20000]
                );
                assert_exact_with_store(&w, &what);
            }
        }
    }
    // A file in the place of a blob's fan directory: exit 4 (`Not a
    // directory`) on every hit before; now a miss whose store makes the fan
    // again.
    let fan = find("big").parent().unwrap().to_path_buf();
    fs::rename(&fan, w.path().join("fan")).unwrap();
    fs::write(&fan, "junk").unwrap();
    for (hit, want) in [(false, want_runs + 1), (true, want_runs + 1)] {
        let o = run(&w, &["--output", "out"], script).output().unwrap();
        assert!(o.status.success(), "fan, hit {hit}: {}", stderr_of(&o));
        assert_eq!(runs(&w), want, "fan, hit {hit}");
    }
    assert!(fan.is_dir());
    assert_eq!(
        fs::read(w.path().join("out/big")).unwrap(),
        vec![b'b'; 20000]
    );
    assert_exact_with_store(&w, "after the fan");
}

/// Attack finding: a fan directory `.store/XX` replaced by a symlink to a
/// directory elsewhere (the store moved by hand, a dedup tool) was followed:
/// a store renamed new blobs into the directory it points to, removed a
/// directory standing at a blob's name there (with what it held), and
/// hits read and linked the blobs found there. Now nothing outside the cache
/// is written, removed or read: such a fan is damage to a restore (a miss),
/// and the store replaces the link (never its target) with a directory. A
/// blob replaced by a symlink to a file elsewhere is replaced, its target
/// left alone, also by a sweep.
#[test]
fn a_fan_or_blob_symlinked_outside_the_cache_is_never_written_through() {
    let w = World::new();
    let script = "echo run >> runs; rm -rf out; mkdir out; printf fan-blob > out/s; \
                  touch -d @1000000000 out/s out; echo made";
    ok(&mut run(&w, &["--output", "out"], script));
    let blob = blobs(&w.cache())
        .into_iter()
        .find(|b| fs::read(b).unwrap() == b"fan-blob")
        .unwrap();
    let fan = blob.parent().unwrap().to_path_buf();
    // Elsewhere: a copy of the fan whose blob is a directory holding a file
    // (what a store removed), and a file a blob's symlink points to.
    let outside = w.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let there = outside.join(fan.file_name().unwrap());
    fs::create_dir(&there).unwrap();
    let at_name = there.join(blob.file_name().unwrap());
    fs::create_dir(&at_name).unwrap();
    fs::write(at_name.join("precious"), "keep").unwrap();
    fs::write(outside.join("target"), "other").unwrap();
    fs::set_permissions(outside.join("target"), fs::Permissions::from_mode(0o640)).unwrap();
    let before = snapshot(&outside);
    fs::remove_dir_all(&fan).unwrap();
    symlink(&there, &fan).unwrap();
    let mut want_runs = 1;
    for (what, args) in [
        ("copy", &["--output", "out"][..]),
        ("link", &["--link", "--output", "out"][..]),
    ] {
        for hit in [false, true] {
            let o = run(&w, args, script).output().unwrap();
            assert!(o.status.success(), "{what}: {}", stderr_of(&o));
            assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n", "{what}");
            want_runs += usize::from(!hit);
            assert_eq!(runs(&w), want_runs, "{what}: hit {hit}");
            assert_eq!(fs::read(w.path().join("out/s")).unwrap(), b"fan-blob");
            assert_eq!(
                snapshot(&outside),
                before,
                "{what}: nothing outside changed"
            );
            assert!(fs::symlink_metadata(&fan).unwrap().is_dir(), "{what}");
            assert_exact_with_store(&w, what);
        }
        // The fan a symlink again for the next mode.
        fs::remove_dir_all(&fan).unwrap();
        symlink(&there, &fan).unwrap();
    }
    // A blob as a symlink to a file elsewhere: replaced by the store, swept
    // by an eviction; the file it pointed to keeps its bytes and mode.
    fs::remove_dir_all(&fan).unwrap();
    ok(&mut run(&w, &["--output", "out"], script));
    let blob_link = blobs(&w.cache())
        .into_iter()
        .find(|b| fs::read(b).unwrap() == b"fan-blob")
        .unwrap();
    fs::remove_file(&blob_link).unwrap();
    symlink(outside.join("target"), &blob_link).unwrap();
    let o = run(&w, &["--output", "out"], script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(fs::symlink_metadata(&blob_link).unwrap().is_file());
    symlink(outside.join("target"), fan.join("0".repeat(62))).unwrap();
    let o = w.cmd("cache-evict").arg("--all").output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(snapshot(&outside), before, "nothing outside changed");
    assert_exact_with_store(&w, "after the eviction");
}

/// Attack finding: `.store/.gc-lock` replaced by hand with a symlink, a
/// directory or a FIFO failed every `--output` hit with exit 3 and every
/// eviction with exit 3 or 1 (`cannot open …/.gc-lock: is a symbolic link
/// (refused)`, `Is a directory`), so the cache was never trimmed again.
/// Now it is no lock anybody holds: it goes (never followed) and the lock
/// file is made again. So does a file in the place of `.store` itself.
#[test]
fn a_gc_lock_replaced_by_a_symlink_dir_or_fifo_is_made_again() {
    let w = World::new();
    let script = "echo run >> runs; rm -rf out; mkdir out; printf gc > out/f; echo made";
    ok(&mut run(&w, &["--output", "out"], script));
    let lock = w.cache().join(".store/.gc-lock");
    let elsewhere = w.path().join("elsewhere");
    fs::write(&elsewhere, "theirs").unwrap();
    for kind in ["symlink", "dir", "fifo"] {
        fs::remove_file(&lock).unwrap();
        match kind {
            "symlink" => symlink(&elsewhere, &lock).unwrap(),
            "dir" => {
                fs::create_dir(&lock).unwrap();
                fs::write(lock.join("x"), "x").unwrap();
            }
            _ => mkfifo(&lock),
        }
        let o = run(&w, &["--output", "out"], script).output().unwrap();
        assert!(o.status.success(), "{kind}: {}", stderr_of(&o));
        assert!(o.stderr.is_empty(), "{kind}: {}", stderr_of(&o));
        assert_eq!(runs(&w), 1, "{kind}: a hit");
        assert!(fs::symlink_metadata(&lock).unwrap().is_file(), "{kind}");
        assert_eq!(fs::read(&elsewhere).unwrap(), b"theirs", "{kind}");
    }
    fs::remove_file(&lock).unwrap();
    fs::create_dir(&lock).unwrap();
    let o = w.cmd("cache-evict").arg("--all").output().unwrap();
    assert!(o.status.success(), "evict: {}", stderr_of(&o));
    assert!(blobs(&w.cache()).is_empty(), "swept");
    assert_exact_with_store(&w, "after the eviction");
    // A file in the place of `.store` itself: every hit failed with exit 4
    // (`Not a directory`), every store was not cached. Now it goes.
    ok(&mut run(&w, &["--output", "out"], script));
    let store = w.cache().join(".store");
    remove_tree(&store);
    fs::write(&store, "junk").unwrap();
    // The blobs just removed by hand are drift: repaired first.
    let o = w
        .cmd("cache-size")
        .args(["--verify", "--fix"])
        .output()
        .unwrap();
    assert!(o.status.code().is_some(), "{}", stderr_of(&o));
    for (hit, want) in [(false, 3), (true, 3)] {
        let o = run(&w, &["--output", "out"], script).output().unwrap();
        assert!(
            o.status.success(),
            "store a file, hit {hit}: {}",
            stderr_of(&o)
        );
        assert!(o.stderr.is_empty(), "{}", stderr_of(&o));
        assert_eq!(runs(&w), want, "store a file, hit {hit}");
    }
    assert!(fs::symlink_metadata(&store).unwrap().is_dir());
    assert_exact_with_store(&w, "after the store was a file");
}

/// Every blob in the store holds the content its name says (BLAKE3 hex,
/// `x` for an executable file): the store is content-addressed, so a blob
/// under another content's name is restored by every entry that names that
/// content.
fn assert_blobs_hold_their_names(w: &World, what: &str) {
    for b in blobs(&w.cache()) {
        let fan = b.parent().unwrap().file_name().unwrap().to_str().unwrap();
        let name = format!("{fan}{}", b.file_name().unwrap().to_str().unwrap());
        let m = fs::symlink_metadata(&b).unwrap();
        let mut want = blake3::hash(&fs::read(&b).unwrap()).to_hex().to_string();
        if m.mode() & 0o111 != 0 {
            want.push('x');
        }
        assert_eq!(
            name,
            want,
            "{what}: blob {} holds other content",
            b.display()
        );
    }
}

/// A process the command left behind that still writes an output while the
/// run is stored: the store hashes the file, then copies it into a new blob,
/// so without a check the blob holds the bytes of the copy under the name
/// of the bytes hashed, and every later entry with the hashed content (an
/// honest run) would restore the other bytes. Either the stored blob is what
/// its name says, or the run is not cached (one line).
#[test]
fn a_file_still_being_written_while_stored_never_puts_other_bytes_under_its_name() {
    let w = World::new();
    // 32 MiB, its first 12 bytes rewritten with a counter until `stop`
    // exists: hashing and copying it span many rewrites.
    let script = "echo run >> runs; mkdir out; head -c 33554432 /dev/zero > out/f; \
        (i=0; while [ ! -e stop ]; do i=$((i+1)); \
        printf %012d $i | dd of=out/f conv=notrunc status=none; \
        [ $i = 3 ] && : > ready; done; : > stopped) </dev/null >/dev/null 2>&1 & \
        until [ -e ready ]; do sleep 0.01; done; echo built";
    let o = run(&w, &["--output", "out"], script).output().unwrap();
    fs::write(w.path().join("stop"), "").unwrap();
    until("the writer stops", || w.path().join("stopped").exists());
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "built\n");
    let err = stderr_of(&o);
    assert!(
        err.is_empty() || err.contains("out/f: changed while it was stored"),
        "{err}"
    );
    assert_blobs_hold_their_names(&w, "after the store");
    assert_exact_with_store(&w, "after the store");
}

/// A file still appended to while it is stored (a process the command left
/// behind) is not cached as a truncated snapshot: the copy takes exactly the
/// bytes hashed, so the read-back matched and the next call restored a
/// shorter file without a word. The run is not cached, with one line.
#[test]
fn a_file_still_appended_to_while_stored_is_not_cached() {
    // 32 MiB, then one byte appended at a time until `stop` exists.
    let script = "echo run >> runs; mkdir out; head -c 33554432 /dev/zero > out/f; \
        (i=0; while [ ! -e stop ]; do i=$((i+1)); printf x >> out/f; \
        [ $i = 3 ] && : > ready; done; : > stopped) </dev/null >/dev/null 2>&1 & \
        until [ -e ready ] || [ -e stop ]; do sleep 0.01; done; echo built";
    // The appender must run while ffkit reads the file; on a loaded
    // machine it may get no CPU in that window (seen once in a suite run
    // at load 8), and then the file did not change while it was stored, so
    // storing it was right. Such a try is checked for an exact index and
    // made again; one try in five must see the change.
    let mut tries = 0;
    let w = loop {
        tries += 1;
        let w = World::new();
        let o = run(&w, &["--output", "out"], script).output().unwrap();
        fs::write(w.path().join("stop"), "").unwrap();
        until("the writer stops", || w.path().join("stopped").exists());
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_exact_with_store(&w, "after the store");
        if stderr_of(&o).contains("out/f: changed while it was stored") {
            break w;
        }
        assert!(
            tries < 5,
            "no store in {tries} saw the appends: {}",
            stderr_of(&o)
        );
        eprintln!("try {tries}: the appender did not run during the store; again");
    };
    // The same call again, `stop` now there (nothing appends): a run, so
    // the first was not cached.
    fs::remove_file(w.path().join("stopped")).unwrap();
    fs::remove_dir_all(w.path().join("out")).unwrap();
    let o = run(&w, &["--output", "out"], script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 2, "the first run was not cached");
}

/// Bytes a file takes on disk (its allocated blocks).
fn allocated(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().blocks() * 512
}

/// A sparse file (a 64 MiB hole with a few bytes of data) keeps its holes:
/// its blob and its restored copy take about the blocks the original takes,
/// not 64 MiB each, and read back the same bytes.
#[test]
fn a_sparse_file_is_stored_and_restored_with_its_holes() {
    let w = World::new();
    let script = "echo run >> runs; mkdir out; truncate -s 64M out/sparse; \
        printf middle | dd of=out/sparse bs=1 seek=30000000 conv=notrunc status=none; \
        printf end | dd of=out/sparse bs=1 seek=67108861 conv=notrunc status=none";
    ok(&mut run(&w, &["--output", "out"], script));
    let orig = w.path().join("out/sparse");
    let want = fs::read(&orig).unwrap();
    assert_eq!(want.len(), 64 << 20);
    let small = allocated(&orig) + (1 << 20);
    let blob = blobs(&w.cache())
        .into_iter()
        .find(|b| fs::symlink_metadata(b).unwrap().len() == 64 << 20)
        .unwrap();
    assert!(
        allocated(&blob) <= small,
        "the blob takes {} bytes on disk",
        allocated(&blob)
    );
    assert_blobs_hold_their_names(&w, "after the store");
    fs::remove_dir_all(w.path().join("out")).unwrap();
    ok(&mut run(&w, &["--output", "out"], script));
    assert_eq!(runs(&w), 1, "a hit");
    assert!(
        allocated(&orig) <= small,
        "the restored file takes {} bytes on disk",
        allocated(&orig)
    );
    assert!(fs::read(&orig).unwrap() == want, "the same bytes");
    assert_exact_with_store(&w, "after the restore");
}

/// An output that holds the cache dir (`cd ~; cache-run --output .cache`
/// with the default `~/.cache/ffkit`), or lies inside it, is refused before
/// anything runs: a store would walk the cache's own files and a hit would
/// swap the whole cache out and remove it, every other entry with it. The
/// cache dir is compared by its real path (here also named through a
/// symlink).
#[test]
fn an_output_that_holds_the_cache_dir_or_lies_inside_it_is_refused() {
    let w = World::new();
    fs::create_dir(w.path().join("out")).unwrap();
    symlink("out", w.path().join("via")).unwrap();
    let script = "echo run >> runs; mkdir -p out; echo v > out/f";
    // Another entry, to see that the cache stays whole.
    ok(&mut run(&w, &[], "echo other"));
    for (cache, output) in [
        (w.cache(), "cache"),
        (w.cache(), "cache/.store"),
        (w.path().join("out/ffcache"), "out"),
        (w.path().join("via/ffcache"), "out"),
    ] {
        let o = run(&w, &["--output", output], script)
            .env("FFKIT_CACHE_DIR", &cache)
            .output()
            .unwrap();
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(2), "--output {output}: {err}");
        assert!(err.contains("the cache dir"), "--output {output}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            !w.path().join("runs").exists(),
            "--output {output}: nothing ran"
        );
    }
    assert_eq!(ok(&mut run(&w, &[], "echo other")), "other\n");
    assert_exact_with_store(&w, "the cache is whole");
}

/// Unmounts (lazily) every mount under `root` when dropped, wherever a
/// restore moved it.
struct Mounts(PathBuf);

impl Drop for Mounts {
    fn drop(&mut self) {
        let Ok(text) = fs::read_to_string("/proc/self/mounts") else {
            return;
        };
        let root = self.0.to_string_lossy().into_owned();
        for at in text.lines().filter_map(|l| l.split(' ').nth(1)) {
            if at.starts_with(&root) {
                // A mount under one already detached is gone with it:
                // umount's "no mount point specified" is not news.
                let _ = Command::new("umount")
                    .args(["-l", at])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A mount inside the tree a restore replaces (a bind mount of the user's
/// data into `out/mnt`) is another file system's files, not the tree's:
/// removing the replaced tree never enters it (it emptied the bind mount's
/// source and made it 0700). The replaced tree is then left behind, named on
/// stderr, with the mount in it.
#[test]
fn removing_a_replaced_tree_never_enters_a_mount_inside_it() {
    if !crate::util::need_root("not root: the mount-inside-a-tree test needs a bind mount") {
        return;
    }
    let w = World::new();
    let _guard = Mounts(w.path().to_path_buf());
    let precious = w.path().join("precious");
    fs::create_dir_all(precious.join("sub")).unwrap();
    fs::write(precious.join("data"), "keep").unwrap();
    fs::write(precious.join("sub/more"), "keep too").unwrap();
    fs::set_permissions(&precious, fs::Permissions::from_mode(0o751)).unwrap();
    let script = "echo run >> runs; mkdir -p out; echo new > out/f";
    ok(&mut run(&w, &["--output", "out"], script));
    fs::create_dir(w.path().join("out/mnt")).unwrap();
    let o = Command::new("mount")
        .arg("--bind")
        .arg(&precious)
        .arg(w.path().join("out/mnt"))
        .output()
        .unwrap();
    if !o.status.success() {
        skip(&format!("cannot bind-mount: {}", stderr_of(&o).trim()));
        return;
    }
    let o = run(&w, &["--output", "out"], script).output().unwrap();
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(runs(&w), 1, "a hit");
    assert_eq!(fs::read_to_string(w.path().join("out/f")).unwrap(), "new\n");
    assert!(
        !w.path().join("out/mnt").exists(),
        "the new tree is in place"
    );
    assert_eq!(fs::read_to_string(precious.join("data")).unwrap(), "keep");
    assert_eq!(
        fs::read_to_string(precious.join("sub/more")).unwrap(),
        "keep too"
    );
    assert_eq!(
        fs::symlink_metadata(&precious).unwrap().mode() & 0o7777,
        0o751,
        "the mount's root is not chmodded"
    );
    assert!(err.contains("left behind"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A mount point inside an output (a bind mount of the cache dir, of a part
/// of it, or of a file), or the output itself as one, is refused at store
/// like a FIFO: one line, the command's output and status pass, nothing
/// stored. It walked into the bind-mounted cache and stored the cache's own
/// files (`.lock`, `.size-index`, entries, blobs) as the tree; the hit then
/// restored that copy and left the mount behind in the replaced tree.
#[test]
fn a_mount_point_inside_an_output_is_never_stored() {
    if !crate::util::need_root("not root: the mount-point test needs bind mounts") {
        return;
    }
    let w = World::new();
    let _guard = Mounts(w.path().to_path_buf());
    // An entry with outputs first: the cache has a store and entries.
    ok(&mut run(
        &w,
        &["--output", "other"],
        "mkdir -p other; echo o > other/f",
    ));
    let before = blobs(&w.cache());
    let bind = |src: &Path, at: &Path| {
        let o = Command::new("mount")
            .arg("--bind")
            .arg(src)
            .arg(at)
            .output()
            .unwrap();
        o.status.success().then_some(()).ok_or(stderr_of(&o))
    };
    fs::create_dir_all(w.path().join("sub/m")).unwrap();
    fs::create_dir_all(w.path().join("t/s")).unwrap();
    fs::create_dir_all(w.path().join("u")).unwrap();
    fs::create_dir_all(w.path().join("userdir")).unwrap();
    fs::write(w.path().join("data"), "user data").unwrap();
    fs::write(w.path().join("sub/z"), "").unwrap();
    for (src, at) in [
        (w.cache(), "sub/m"),
        (w.cache().join(".store"), "t/s"),
        (w.path().join("userdir"), "u"),
        (w.path().join("data"), "sub/z"),
    ] {
        if let Err(e) = bind(&src, &w.path().join(at)) {
            skip(&format!("cannot bind-mount: {}", e.trim()));
            return;
        }
    }
    // The cache's bind mount inside the tree, a part of the cache inside
    // the tree, a directory's bind mount as the path itself, a file's bind
    // mount as the path itself.
    for (output, at) in [
        ("sub", "sub/m"),
        ("t", "t/s"),
        ("u", "u"),
        ("sub/z", "sub/z"),
    ] {
        let n = runs(&w);
        for _ in 0..2 {
            let o = run(
                &w,
                &["--output", output],
                "echo run >> runs; echo ran; exit 0",
            )
            .output()
            .unwrap();
            let err = stderr_of(&o);
            assert_eq!(o.status.code(), Some(0), "--output {output}: {err}");
            assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n");
            assert!(
                err.contains("not cached") && err.contains(&format!("{at}: a mount point")),
                "--output {output}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert_eq!(runs(&w), n + 2, "--output {output}: never a hit");
        assert_eq!(
            blobs(&w.cache()),
            before,
            "--output {output}: nothing stored"
        );
    }
    assert!(
        fs::read_dir(w.path()).unwrap().flatten().all(|e| !e
            .file_name()
            .to_string_lossy()
            .starts_with(".ffkit-restore-")),
        "no tree left behind"
    );
    assert_eq!(
        fs::read_to_string(w.path().join("data")).unwrap(),
        "user data"
    );
    drop(_guard);
    assert_exact_with_store(&w, "the cache after the refusals");
}

/// An output reached through a bind mount of the cache dir, of a directory
/// in it or of one above it is inside the cache dir and refused before
/// anything runs (exit 2, one line), as one named by its real path is. Real
/// paths differ across a bind mount: `--output cw/.store` was stored (the
/// store walked into itself) and its hit swapped the live store out for
/// the stored copy and removed it: blobs gone, index drift.
#[test]
fn an_output_reached_through_a_bind_mount_of_the_cache_is_refused() {
    if !crate::util::need_root("not root: the bind-mount test needs bind mounts") {
        return;
    }
    let w = World::new();
    let _guard = Mounts(w.path().to_path_buf());
    let keep = "mkdir -p o; echo keep > o/f; echo kept";
    ok(&mut run(&w, &["--output", "o"], keep));
    let fan = blobs(&w.cache())
        .into_iter()
        .next()
        .and_then(|b| b.parent().map(Path::to_path_buf))
        .unwrap();
    let mut cases: Vec<(PathBuf, &str, Vec<&str>)> = vec![
        (
            w.cache(),
            "cw",
            vec!["cw", "cw/.store", "cw/x", "cw/.cache-run/z"],
        ),
        (w.cache().join(".store"), "st", vec!["st", "st/q"]),
        (fan, "fan", vec!["fan/q"]),
        (
            w.path().to_path_buf(),
            "up",
            vec!["up/cache/.store", "up/cache/new"],
        ),
    ];
    for (src, at, outputs) in cases.drain(..) {
        fs::create_dir_all(w.path().join(at)).unwrap();
        let o = Command::new("mount")
            .arg("--bind")
            .arg(&src)
            .arg(w.path().join(at))
            .output()
            .unwrap();
        if !o.status.success() {
            skip(&format!("cannot bind-mount: {}", stderr_of(&o).trim()));
            return;
        }
        for output in outputs {
            let script = format!("echo run >> runs; mkdir -p {output}; echo x > {output}/f");
            let o = run(&w, &["--output", output], &script).output().unwrap();
            let err = stderr_of(&o);
            assert_eq!(o.status.code(), Some(2), "--output {output}: {err}");
            assert!(err.contains("the cache dir"), "--output {output}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert_eq!(runs(&w), 0, "--output {output}: nothing ran");
        }
    }
    drop(_guard);
    fs::remove_dir_all(w.path().join("o")).unwrap();
    assert_eq!(ok(&mut run(&w, &["--output", "o"], keep)), "kept\n");
    assert_eq!(fs::read_to_string(w.path().join("o/f")).unwrap(), "keep\n");
    assert_exact_with_store(&w, "the cache is whole");
}

/// 2,000 files in 50 directories: above the size from which a restore
/// makes files on a pool of threads.
const WIDE: &str = "echo run >> runs; for d in $(seq 1 50); do mkdir -p out/d$d; \
    for f in $(seq 1 40); do echo $d.$f > out/d$d/f$f; done; done";

#[test]
fn a_large_tree_is_made_by_a_bounded_pool_of_threads_paying_one_refused_clone_at_most() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIP: strace is not installed");
        return;
    }
    let w = World::new();
    ok(&mut run(&w, &["--output", "out"], WIDE));
    let want = snapshot(&w.path().join("out"));
    remove_tree(&w.path().join("out"));
    let trace = w.path().join("trace");
    ok(&mut traced_run(&w, "openat,ioctl", &trace, WIDE));
    assert_eq!(runs(&w), 1, "a hit");
    assert_eq!(snapshot(&w.path().join("out")), want, "restored exactly");
    let text = fs::read_to_string(&trace).unwrap();
    // `PID openat(..., O_WRONLY|O_CREAT|O_EXCL|..., 0600) = FD`: the files
    // the restore made, by the thread that made each.
    let mut by_thread: BTreeMap<&str, usize> = BTreeMap::new();
    for l in text.lines() {
        if l.contains("openat(") && l.contains("O_CREAT|O_EXCL") && !l.contains("= -1") {
            let tid = l.split_whitespace().next().unwrap();
            *by_thread.entry(tid).or_default() += 1;
        }
    }
    assert!(
        by_thread.values().sum::<usize>() >= 2000,
        "every file created: {by_thread:?}"
    );
    assert!(
        (2..=8).contains(&by_thread.len()),
        "made by 2 to 8 threads: {by_thread:?}"
    );
    // No FICLONE refused per file or per thread: one probe per tree.
    let refused = text
        .lines()
        .filter(|l| l.contains("FICLONE") && l.contains("= -1"))
        .count();
    assert!(refused <= 1, "{refused} refused FICLONEs");
}

/// Files either side of the size from which a restore clones, with modes
/// a umask keeps (0444, 0755), strips (0666 under 022) and set-id bits.
const SIZES: &str = "echo run >> runs; mkdir out; : > out/empty; printf x > out/one; \
    head -c 16383 /dev/urandom > out/below; head -c 16384 /dev/urandom > out/at; \
    head -c 100000 /dev/urandom > out/big; chmod 444 out/one; chmod 755 out/below; \
    chmod 666 out/empty; chmod 4755 out/at";

/// `traced_run` under `umask MASK` (the restore creates files with their
/// mode where the umask keeps it).
fn traced_run_umask(w: &World, mask: &str, filter: &str, trace: &Path) -> Command {
    let inner = traced_run(w, filter, trace, SIZES);
    let mut c = Command::new("sh");
    w.isolate(&mut c);
    c.arg("-c")
        .arg(format!("umask {mask} && exec \"$@\""))
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(w.path());
    c
}

#[test]
fn files_either_side_of_16_kib_are_restored_byte_exact_the_small_ones_by_one_write_without_fchmod()
{
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIP: strace is not installed");
        return;
    }
    let w = World::new();
    let trace = w.path().join("trace");
    ok(&mut traced_run_umask(&w, "022", "fchmod", &trace));
    let want = snapshot(&w.path().join("out"));
    assert_eq!(
        want.get("at")
            .map(|i| matches!(i, Item::File { mode: 0o4755, .. })),
        Some(true),
        "the set-uid bit was stored"
    );
    for mask in ["022", "077"] {
        remove_tree(&w.path().join("out"));
        ok(&mut traced_run_umask(
            &w,
            mask,
            "fchmod,write,copy_file_range,ioctl",
            &trace,
        ));
        assert_eq!(runs(&w), 1, "a hit");
        assert_eq!(snapshot(&w.path().join("out")), want, "umask {mask}");
        let text = fs::read_to_string(&trace).unwrap();
        // strace pads before ` = RESULT`.
        let count = |what: &str, ends: &str| {
            text.lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|l| l.contains(what) && l.ends_with(ends))
                .count()
        };
        // Below 16 KiB: one write of the bytes read; from 16 KiB: a clone
        // or an in-kernel copy, never a write from here.
        assert_eq!(count("write(", ", 1) = 1"), 1, "one: {text}");
        assert_eq!(count("write(", ", 16383) = 16383"), 1, "below: {text}");
        assert_eq!(count("write(", "= 16384") + count("write(", "= 100000"), 0);
        let cloned_or_copied = |n: &str| {
            count("copy_file_range(", &format!("= {n}"))
                + text
                    .lines()
                    .filter(|l| l.contains("FICLONE") && l.trim_end().ends_with("= 0"))
                    .count()
        };
        assert!(
            cloned_or_copied("16384") + cloned_or_copied("100000") >= 2,
            "{text}"
        );
        // fchmod only for the modes creation cannot give: under 022 the
        // set-uid file and the 0666 one; under 077 every one.
        let fchmods = count("fchmod(", "= 0");
        if mask == "022" {
            assert_eq!(fchmods, 2, "at (4755) and empty (0666): {text}");
        } else {
            assert_eq!(fchmods, 5, "every file (077 strips every mode): {text}");
        }
    }
}

#[test]
fn a_damaged_blob_midway_through_a_parallel_restore_is_a_miss_and_leaves_nothing_beside() {
    let w = World::new();
    ok(&mut run(&w, &["--output", "out"], WIDE));
    let want = snapshot(&w.path().join("out"));
    // The blob of one file deep in the tree goes.
    let blob = blobs(&w.cache())
        .into_iter()
        .find(|b| fs::read(b).unwrap() == b"37.21\n")
        .unwrap();
    fs::remove_file(&blob).unwrap();
    fs::write(w.path().join("out/d1/f1"), "edited").unwrap();
    ok(&mut run(&w, &["--output", "out"], WIDE));
    assert_eq!(runs(&w), 2, "damage is a miss: the command ran again");
    let got = snapshot(&w.path().join("out"));
    assert!(got.keys().eq(want.keys()), "the command's tree");
    assert_eq!(fs::read(w.path().join("out/d1/f1")).unwrap(), b"1.1\n");
    let beside: Vec<_> = fs::read_dir(w.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".ffkit"))
        .collect();
    assert!(
        beside.is_empty(),
        "nothing left beside the path: {beside:?}"
    );
    assert!(blob.exists(), "stored again");
    remove_tree(&w.path().join("out"));
    ok(&mut run(&w, &["--output", "out"], WIDE));
    assert_eq!(runs(&w), 2, "a hit again");
    assert_eq!(fs::read(w.path().join("out/d37/f21")).unwrap(), b"37.21\n");
    assert_eq!(snapshot(&w.path().join("out")).len(), want.len());
}

#[test]
fn a_copy_restore_leaves_the_access_times_of_the_blobs_alone() {
    use std::fs::FileTimes;
    let w = World::new();
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let set_old = |p: &Path| {
        fs::File::open(p)
            .unwrap()
            .set_times(FileTimes::new().set_accessed(old))
            .unwrap()
    };
    let atime = |p: &Path| fs::metadata(p).unwrap().accessed().unwrap();
    // Where reads never update atimes (noatime), there is nothing to see.
    let probe = w.path().join("probe");
    fs::write(&probe, "x").unwrap();
    set_old(&probe);
    fs::read(&probe).unwrap();
    if atime(&probe) == old {
        eprintln!("SKIP: this file system does not update access times on read");
        return;
    }
    let script = "echo run >> runs; mkdir -p out/sub; printf a > out/a; printf bb > out/sub/b";
    ok(&mut run(&w, &["--output", "out"], script));
    let store = blobs(&w.cache());
    assert_eq!(store.len(), 3, "two files and the manifest");
    for b in &store {
        set_old(b);
    }
    remove_tree(&w.path().join("out"));
    ok(&mut run(&w, &["--output", "out"], script));
    assert_eq!(runs(&w), 1, "a hit");
    assert_eq!(fs::read(w.path().join("out/sub/b")).unwrap(), b"bb");
    for b in &store {
        assert_eq!(
            atime(b),
            old,
            "{} was read with its atime updated",
            b.display()
        );
    }
}

#[test]
fn eight_concurrent_misses_run_once_and_each_restores_its_own_dir() {
    let w = World::new();
    let runs_file = w.path().join("runs");
    let script = format!(
        "echo run >> '{}'; mkdir out; i=0; while [ $i -lt 200 ]; do echo $i > out/f$i; i=$((i+1)); done; echo done",
        runs_file.display()
    );
    let mut kids = Vec::new();
    for i in 0..8 {
        let d = w.path().join(format!("wt{i}"));
        fs::create_dir(&d).unwrap();
        let mut c = run(&w, &["--output", "out"], &script);
        c.current_dir(&d)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        kids.push((d, c.spawn().unwrap()));
    }
    for (d, k) in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "done\n");
        for i in 0..200 {
            assert_eq!(
                fs::read_to_string(d.join(format!("out/f{i}"))).unwrap(),
                format!("{i}\n")
            );
        }
    }
    assert_eq!(runs(&w), 1, "one run for 8 concurrent misses");
    assert_exact_with_store(&w, "after 8 misses");
}

/// Spawns `c` and SIGKILLs it as soon as `cond` holds (polled without a
/// sleep); whether it was caught before it ended.
fn kill_when(mut c: Command, mut cond: impl FnMut() -> bool) -> bool {
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if cond() {
            let caught = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            let _ = child.wait();
            return caught;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > end {
            return false;
        }
        std::thread::yield_now();
    }
}

#[test]
fn sigkill_during_store_and_restore_never_leaves_half_a_tree_and_the_index_stays_exact() {
    let w = World::new();
    generate(&w.path().join("src"), 1500);
    let store_tmp = |w: &World| {
        fs::read_dir(w.cache().join(".store")).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        })
    };
    // Store: killed while blobs are being written. The entry is absent or
    // whole, the index exact after a repair.
    let mut caught_store = 0;
    for _ in 0..3 {
        remove_tree(&w.path().join("out"));
        if kill_when(run(&w, &["--output", "out", "--force"], COPY), || {
            store_tmp(&w)
        }) {
            caught_store += 1;
        }
        assert_exact_with_store(&w, "after a store was killed");
    }
    remove_tree(&w.path().join("out"));
    ok(&mut run(&w, &["--output", "out"], COPY));
    let want = snapshot(&w.path().join("out"));
    let runs_before = runs(&w);
    // Restore: killed while the tree is built aside. The path holds the old
    // tree or the whole new one, never a part.
    let mut caught_restore = 0;
    for _ in 0..3 {
        remove_tree(&w.path().join("out"));
        fs::create_dir_all(w.path().join("out/old")).unwrap();
        fs::write(w.path().join("out/old/marker"), "old").unwrap();
        let old = snapshot(&w.path().join("out"));
        let building = || {
            fs::read_dir(w.path()).is_ok_and(|rd| {
                rd.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".ffkit-restore-")
                })
            })
        };
        if kill_when(run(&w, &["--output", "out"], COPY), building) {
            caught_restore += 1;
        }
        let now = snapshot(&w.path().join("out"));
        assert!(now == old || now == want, "half a tree at the path");
        assert_exact_with_store(&w, "after a restore was killed");
    }
    // The next restore is whole and removes what the killed ones left.
    ok(&mut run(&w, &["--output", "out"], COPY));
    assert_eq!(snapshot(&w.path().join("out")), want);
    assert_eq!(runs(&w), runs_before, "restores ran nothing");
    let left: Vec<_> = fs::read_dir(w.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ffkit-restore-")
        })
        .collect();
    assert!(left.is_empty(), "dead builds are removed");
    eprintln!("killed mid-store {caught_store}/3, mid-restore {caught_restore}/3");
}

/// A restore killed while its parent has not reaped it yet (a zombie, as
/// a killed job stays until its shell waits) has stopped for good: the next
/// restore beside it removes the tree it left, as for a pid that is gone.
/// Before, kill(0) of the zombie succeeded and the tree stayed.
#[test]
fn the_tree_of_a_killed_restore_not_yet_reaped_is_removed() {
    let w = World::new();
    generate(&w.path().join("src"), 20);
    ok(&mut run(&w, &["--output", "out"], COPY));
    // A zombie of our own: a child that has exited and is not waited for.
    let mut z = Command::new("true").spawn().unwrap();
    let pid = z.id();
    let stat = format!("/proc/{pid}/stat");
    let end = Instant::now() + Duration::from_secs(60);
    while !fs::read_to_string(&stat).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    }) {
        assert!(Instant::now() < end, "the child never exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = w.path().join(format!(".ffkit-restore-{pid}-dead"));
    fs::create_dir_all(left.join("half/a/tree")).unwrap();
    fs::write(left.join("half/file"), "x").unwrap();
    ok(&mut run(&w, &["--output", "out"], COPY));
    let gone = !left.exists();
    z.wait().unwrap();
    assert!(gone, "the zombie restorer's tree was left");
}

/// A killed restore's tree whose pid now names another live process (pid
/// reuse: 32768 pids by default) is removed by the next restore beside it,
/// as that process started after the tree last changed; before, it stayed
/// as long as the process lived. A tree named after that process and made
/// after it started is kept (a restore through another mount of the
/// directory, under another lock, may be building it). The pid is given
/// again with `ns_last_pid` (root).
#[test]
fn the_tree_of_a_killed_restore_whose_pid_was_reused_is_removed() {
    if !crate::util::need_root("not root: the test sets ns_last_pid") {
        return;
    }
    let w = World::new();
    generate(&w.path().join("src"), 20);
    ok(&mut run(&w, &["--output", "out"], COPY));
    let epoch = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    for _ in 0..5 {
        // A pid free now: a child waited for.
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        let left = w.path().join(format!(".ffkit-restore-{pid}-7"));
        fs::create_dir_all(left.join("half/a/tree")).unwrap();
        fs::write(left.join("half/file"), "x").unwrap();
        let m = fs::metadata(&left).unwrap();
        let changed = m.ctime() as f64 + m.ctime_nsec() as f64 / 1e9;
        // The new process starts well after the tree's last change, beyond
        // ffkit's second and the start time's error (/proc/stat's btime is
        // whole seconds): a wait for the clock, not for another process.
        while epoch() < changed + 3.0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The same pid again, for a process that stays alive (other
        // processes on the machine may take it first: tried again).
        let mut alive = None;
        for _ in 0..50 {
            fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
            let mut s = Command::new("sleep").arg("1000").spawn().unwrap();
            if s.id() == pid {
                alive = Some(s);
                break;
            }
            s.kill().unwrap();
            s.wait().unwrap();
        }
        let Some(mut s) = alive else {
            fs::remove_dir_all(&left).unwrap();
            continue;
        };
        // Made by that process's time: kept.
        let live = w.path().join(format!(".ffkit-restore-{pid}-8"));
        fs::create_dir_all(live.join("d")).unwrap();
        let hit = run(&w, &["--output", "out"], COPY).output();
        let gone = !left.exists();
        let kept = live.join("d").is_dir();
        s.kill().unwrap();
        s.wait().unwrap();
        let hit = hit.unwrap();
        assert!(hit.status.success(), "{}", stderr_of(&hit));
        assert_eq!(runs(&w), 1, "a hit");
        assert!(gone, "the tree of a reused pid was left");
        assert!(
            kept,
            "a tree made after its pid's process started was removed"
        );
        return;
    }
    skip("the pid was taken by other processes every time");
}

#[test]
fn eviction_frees_exactly_the_blobs_no_other_entry_uses() {
    let w = World::new();
    let make = |extra: &str| {
        format!("mkdir -p out; printf shared > out/shared; printf '{extra}' > out/own")
    };
    ok(&mut run(
        &w,
        &["--output", "out", "--scope", "a"],
        &make("only in a"),
    ));
    let after_a = blobs(&w.cache());
    ok(&mut run(
        &w,
        &["--output", "out", "--scope", "b"],
        &make("only in b"),
    ));
    let after_b = blobs(&w.cache());
    // a: shared + own + manifest; b adds its own file and manifest.
    assert_eq!(after_a.len(), 3);
    assert_eq!(after_b.len(), 5);
    assert_exact_with_store(&w, "two entries");
    // Dropping a frees a's own blob and manifest, nothing of b's.
    let o = run(
        &w,
        &["--output", "out", "--scope", "a", "--invalidate"],
        &make("only in a"),
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let after_inv = blobs(&w.cache());
    let gone: BTreeSet<_> = after_b.difference(&after_inv).cloned().collect();
    let a_only: BTreeSet<_> = after_a.difference(&after_b).cloned().collect();
    assert!(a_only.is_empty());
    assert_eq!(gone.len(), 2, "a's own file and manifest: {gone:?}");
    assert!(gone.is_subset(&after_a));
    assert_exact_with_store(&w, "after --invalidate");
    // b still restores whole.
    fs::remove_dir_all(w.path().join("out")).unwrap();
    ok(&mut run(
        &w,
        &["--output", "out", "--scope", "b"],
        &make("only in b"),
    ));
    assert_eq!(
        fs::read_to_string(w.path().join("out/own")).unwrap(),
        "only in b"
    );
    // A dry run says what would go and removes nothing.
    let o = w
        .cmd("cache-evict")
        .args(["--all", "--dry-run"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let b_bytes: u64 = after_inv
        .iter()
        .map(|b| fs::metadata(b).unwrap().len())
        .sum();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.ends_with(&format!("would sweep 3 output blobs ({b_bytes} bytes)\n")),
        "{text}"
    );
    let o = w
        .cmd("cache-evict")
        .args(["--all", "--dry-run", "--json"])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["output_blobs"]["blobs"], 3, "{j}");
    assert_eq!(j["output_blobs"]["bytes"], b_bytes, "{j}");
    assert_eq!(
        j["after"]["bytes"], 0,
        "what would be left, sweep included: {j}"
    );
    assert_eq!(blobs(&w.cache()), after_inv, "a dry run removes nothing");
    // Evicting everything frees every blob, and the report says so.
    let o = w
        .cmd("cache-evict")
        .args(["--all", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["after"]["bytes"], 0, "what is left, sweep included: {j}");
    assert!(blobs(&w.cache()).is_empty(), "{:?}", blobs(&w.cache()));
    assert_exact_with_store(&w, "after cache-evict --all");
}

#[test]
fn hostile_trees_and_paths_are_refused_or_stored_safely() {
    let w = World::new();
    // Paths: refused with one line and exit 2, before anything runs.
    fs::create_dir(w.path().join("real")).unwrap();
    symlink("real", w.path().join("via")).unwrap();
    // A `.` after the first name (every hit would fail to swap it) and a
    // trailing slash through a symlink (it would store what `real` holds).
    for bad in [
        "/tmp/x",
        "../x",
        "a/../../x",
        ".",
        "via/out",
        "out/.",
        "d/./",
        "a/./b",
        "via/",
        "via//",
    ] {
        let o = run(&w, &["--output", bad], "echo run >> runs")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr_of(&o));
        assert_eq!(stderr_lines(&o).len(), 1, "{bad}: {}", stderr_of(&o));
    }
    // Overlapping, or one path twice however spelled.
    for pair in [
        ["a", "a/b"],
        ["a", "a"],
        ["a", "./a"],
        ["a/", "a"],
        ["./", "a"],
    ] {
        let o = run(
            &w,
            &["--output", pair[0], "--output", pair[1]],
            "echo run >> runs",
        )
        .output()
        .unwrap();
        assert_eq!(o.status.code(), Some(2), "{pair:?}: {}", stderr_of(&o));
        assert_eq!(stderr_lines(&o).len(), 1, "{pair:?}: {}", stderr_of(&o));
    }
    assert_eq!(runs(&w), 0, "nothing ran");
    // A FIFO in the tree (its name with a newline: the note stays one
    // line): the run's output and status pass, nothing stored.
    let fifo = "echo run >> runs; mkdir -p f; mkfifo 'f/pi\npe'; echo made";
    let o = run(&w, &["--output", "f"], fifo).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n");
    let err = stderr_of(&o);
    assert!(err.contains("not cached") && err.contains("FIFO"), "{err}");
    assert_eq!(stderr_lines(&o).len(), 1, "{err}");
    assert!(
        blobs(&w.cache()).is_empty(),
        "no blob of a refused tree is left"
    );
    assert_exact_with_store(&w, "after the FIFO");
    // A symlink to /etc: stored as a link, never followed.
    let etc = "echo run >> runs; mkdir -p e; ln -s /etc e/etc; ln -s /etc/passwd e/pw";
    ok(&mut run(&w, &["--output", "e"], etc));
    let store_bytes: u64 = blobs(&w.cache())
        .iter()
        .map(|b| fs::metadata(b).unwrap().len())
        .sum();
    assert!(store_bytes < 4096, "only a manifest: {store_bytes}");
    fs::remove_dir_all(w.path().join("e")).unwrap();
    ok(&mut run(&w, &["--output", "e"], etc));
    assert_eq!(
        fs::read_link(w.path().join("e/etc")).unwrap(),
        Path::new("/etc")
    );
    assert_eq!(
        fs::read_link(w.path().join("e/pw")).unwrap(),
        Path::new("/etc/passwd")
    );
    // A failed run is not stored: the next call runs again.
    let failing = "echo run >> runs; mkdir -p g; echo half > g/x; exit 3";
    let n = runs(&w);
    for _ in 0..2 {
        let o = run(&w, &["--output", "g"], failing).output().unwrap();
        assert_eq!(o.status.code(), Some(3));
    }
    assert_eq!(runs(&w), n + 2);
    // The output missing after the command: not cached, one line.
    let o = run(&w, &["--output", "never"], "echo run >> runs")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(stderr_of(&o).contains("not cached"), "{}", stderr_of(&o));
}

/// `--output` spelled as a user would: each form either works (stored,
/// then restored exactly over whatever stands there by the next call) or
/// is refused before anything runs with one line and its exit code.
#[test]
fn output_path_forms_are_restored_exactly_or_refused_with_one_line() {
    let w = World::new();
    let hit = |path: &str, script: &str, what: &str| {
        let n = runs(&w);
        ok(&mut run(&w, &["--output", path], script));
        assert_eq!(runs(&w), n + 1, "{what}: a miss first");
        let root = w.path().join(path.trim_end_matches('/'));
        let want = snapshot(&root);
        // What stands there by the next call is replaced: a directory
        // where a file was and the other way round (an edited directory
        // for `y/`, which names a directory: a file there is refused).
        if path.ends_with('/') {
            fs::write(root.join("f"), "edited").unwrap();
            fs::create_dir(root.join("extra")).unwrap();
        } else if fs::symlink_metadata(&root).unwrap().is_dir() {
            remove_tree(&root);
            fs::write(&root, "a file now").unwrap();
        } else {
            fs::remove_file(&root).unwrap();
            fs::create_dir_all(root.join("sub")).unwrap();
            fs::write(root.join("sub/q"), "a dir now").unwrap();
        }
        let o = run(&w, &["--output", path], script).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{what}: {}", stderr_of(&o));
        assert_eq!(stderr_of(&o), "", "{what}");
        assert_eq!(runs(&w), n + 1, "{what}: a hit");
        assert_eq!(snapshot(&root), want, "{what}: restored exactly");
        assert_eq!(
            ffkit_siblings(&w),
            Vec::<String>::new(),
            "{what}: nothing beside"
        );
    };
    let dir = |p: &str| {
        format!(
            "echo run >> runs; rm -rf '{p}'; mkdir -p '{p}/s'; echo a > '{p}/f'; \
             printf 'b\\n' > '{p}/s/with space'; echo made"
        )
    };
    hit("./x", &dir("x"), "a leading ./");
    hit("y/", &dir("y"), "a trailing slash");
    hit("sp ace\nnl", &dir("sp ace\nnl"), "a space and a newline");
    hit(
        "z",
        "echo run >> runs; rm -rf z; echo file > z; echo made",
        "a file, then a dir there",
    );
    // A parent that does not exist yet: made by the run, and again by a
    // restore once it is gone.
    let deep = "echo run >> runs; mkdir -p new/dir; echo v > new/dir/x; echo made";
    ok(&mut run(&w, &["--output", "new/dir/x"], deep));
    remove_tree(&w.path().join("new"));
    ok(&mut run(&w, &["--output", "new/dir/x"], deep));
    assert_eq!(fs::read(w.path().join("new/dir/x")).unwrap(), b"v\n");
    let n = runs(&w);
    // Refused: the same path twice however spelled, one inside the other,
    // a restore's temp name; each with one line naming the paths as given.
    for (args, says) in [
        (
            &["x", "./x"][..],
            "--output x and --output ./x name the same path",
        ),
        (
            &["x/", "x"][..],
            "--output x/ and --output x name the same path",
        ),
        (&["a", "a/b"][..], "--output a and --output a/b overlap"),
        (
            &[".ffkit-restore-1-0"][..],
            "--output .ffkit-restore-1-0: a name starting with .ffkit-restore-",
        ),
        (
            &["d/.ffkit-restore-x/o"][..],
            "--output d/.ffkit-restore-x/o: a name starting with .ffkit-restore-",
        ),
    ] {
        let args: Vec<&str> = args.iter().flat_map(|p| ["--output", *p]).collect();
        let o = run(&w, &args, "echo run >> runs").output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr_of(&o));
        assert_eq!(stderr_lines(&o).len(), 1, "{args:?}: {}", stderr_of(&o));
        assert!(stderr_of(&o).contains(says), "{args:?}: {}", stderr_of(&o));
    }
    // `y/` names a directory: a file there is refused, not replaced.
    remove_tree(&w.path().join("y"));
    fs::write(w.path().join("y"), "a file").unwrap();
    let o = run(&w, &["--output", "y/"], &dir("y")).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
    assert!(
        stderr_of(&o).contains("--output y/: y is not a directory"),
        "{}",
        stderr_of(&o)
    );
    assert_eq!(fs::read(w.path().join("y")).unwrap(), b"a file");
    // A `x/` that the run made a file: not cached, one line.
    let o = run(&w, &["--output", "f/"], "echo run >> runs; echo no > f")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
    assert!(
        stderr_of(&o).contains("not cached: --output f/: f is not a directory"),
        "{}",
        stderr_of(&o)
    );
    assert_eq!(stderr_lines(&o).len(), 1);
    assert_eq!(runs(&w), n + 1, "nothing else ran");
    // A working directory removed before the call: exit 4, one line,
    // nothing run.
    fs::create_dir(w.path().join("gone")).unwrap();
    let mut c = Command::new("sh");
    w.isolate(&mut c);
    c.args(["-c", "cd gone && rmdir ../gone && exec \"$@\"", "sh"])
        .arg(bin())
        .args(["cache-run", "--ttl", "0", "--output", "out", "--"])
        .args(["sh", "-c", "echo run >> ../runs"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr_of(&o));
    assert!(
        stderr_of(&o).contains("cannot read the working directory"),
        "{}",
        stderr_of(&o)
    );
    assert_eq!(stderr_lines(&o).len(), 1);
    assert_eq!(runs(&w), n + 1, "nothing ran");
    assert_exact_with_store(&w, "after the forms");
}

/// The working directory on a tmpfs (`/dev/shm`), the cache dir not: a
/// store and a restore copy across file systems, byte-exact, and
/// `copy_file_range`, refused there since Linux 5.19 (EXDEV), is tried
/// once per tree, not once per file of 16 KiB or more.
#[test]
fn outputs_on_another_file_system_than_the_cache_are_copied_exactly_with_one_refused_range() {
    let w = World::new();
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        skip("no /dev/shm: the working directory cannot be on a tmpfs");
        return;
    };
    let runs_at = w.path().join("runs");
    let script = format!(
        "echo run >> '{}'; rm -rf out; mkdir -p out/d; for i in 1 2 3 4 5 6; do \
         head -c $((20000 + i)) /dev/urandom > out/d/f$i; done; echo small > out/s; echo made",
        runs_at.display()
    );
    let call = |trace: Option<&Path>| {
        let mut c = match trace {
            Some(t) => {
                let mut c = Command::new("strace");
                c.args(["-f", "-qq", "-e", "trace=copy_file_range", "-o"])
                    .arg(t)
                    .arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        w.isolate(&mut c);
        c.current_dir(shm.path())
            .args(["cache-run", "--ttl", "0", "--output", "out", "--"])
            .args(["sh", "-c", &script]);
        c
    };
    let strace = have("strace");
    let count = |t: &Path| {
        fs::read_to_string(t)
            .unwrap()
            .lines()
            .filter(|l| l.contains("copy_file_range("))
            .count()
    };
    let trace = w.path().join("trace");
    ok(&mut call(strace.then_some(trace.as_path())));
    if strace {
        assert!(
            count(&trace) <= 1,
            "store: {}",
            fs::read_to_string(&trace).unwrap()
        );
    }
    let want = snapshot(&shm.path().join("out"));
    fs::write(shm.path().join("out/d/f1"), "edited").unwrap();
    ok(&mut call(strace.then_some(trace.as_path())));
    if strace {
        assert!(
            count(&trace) <= 1,
            "restore: {}",
            fs::read_to_string(&trace).unwrap()
        );
    } else {
        skip("strace not installed: copy_file_range calls not counted");
    }
    assert_eq!(runs(&w), 1, "a hit");
    assert_eq!(snapshot(&shm.path().join("out")), want, "restored exactly");
    assert_exact_with_store(&w, "after the hit");
}

#[test]
fn output_on_redis_is_refused_with_one_line() {
    let w = World::new();
    let o = w
        .cmd("cache-run")
        .args([
            "--backend",
            "redis://127.0.0.1:1",
            "--output",
            "out",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
    assert_eq!(stderr_lines(&o).len(), 1, "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("local backend"), "{}", stderr_of(&o));
    // --stale cannot go with --output (a background refresh would have
    // nowhere to restore to); --link needs --output.
    for args in [
        &["--output", "out", "--stale", "5", "--", "true"][..],
        &["--link", "--", "true"][..],
    ] {
        let o = w.cmd("cache-run").args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr_of(&o));
    }
}

#[test]
fn cache_command_output_works_through_the_wrapper_with_and_without_the_builtin() {
    for builtin in ["on", "off"] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("repo/.git")).unwrap();
        fs::create_dir_all(root.join("home")).unwrap();
        let script = r#"
            c='echo run >> runs; mkdir -p node_modules/.bin; echo "module" > node_modules/m.js; echo installed'
            cache_command --output node_modules -- sh -c "$c"
            rm -rf node_modules
            cache_command --output node_modules -- sh -c "$c"
            cat node_modules/m.js
        "#;
        let mut c = wrapper(root, "bash", script);
        if builtin == "off" {
            c.env("FFKIT_BUILTIN", "off");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{builtin}: {}", stderr_of(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "installed\ninstalled\nmodule\n",
            "{builtin}"
        );
        let runs = fs::read_to_string(root.join("repo/runs")).unwrap();
        assert_eq!(
            runs.lines().count(),
            1,
            "{builtin}: the second call is a hit"
        );
    }
}

#[test]
fn restores_into_one_directory_run_one_after_another_and_into_others_in_parallel() {
    let w = World::new();
    let src = w.path().join("src");
    generate(&src, 400);
    let script = format!(
        "echo run >> '{}'; cp -a '{}' out; echo built",
        w.path().join("runs").display(),
        src.display()
    );
    let dir = |n: &str| {
        let d = w.path().join(n);
        fs::create_dir_all(&d).unwrap();
        d
    };
    let restore = |d: &Path| {
        let mut c = run(&w, &["--output", "out"], &script);
        c.current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    // The entry, made in a third directory.
    let o = restore(&dir("first")).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let want = snapshot(&dir("first").join("out"));
    let (same, other) = (dir("same"), dir("other"));
    if !need("flock", "the same-directory restore test") {
        return;
    }
    // Another process holds the directory `same` (as a restore into it
    // would): restores into `same` wait, one into `other` does not.
    let ready = w.path().join("held");
    let mut holder = Command::new("flock")
        .arg(&same)
        .args([
            "sh",
            "-c",
            "echo > \"$0\"; read x; exit 0",
            ready.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the holder", 60, || ready.exists());
    let waiting: Vec<_> = (0..3).map(|_| restore(&same).spawn().unwrap()).collect();
    let o = output_within(restore(&other), "a restore into another directory");
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(snapshot(&other.join("out")), want);
    let siblings = |d: &Path| {
        fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".ffkit-restore-")
            })
            .count()
    };
    assert!(
        !same.join("out").exists() && siblings(&same) == 0,
        "a restore into the held directory did not wait"
    );
    let mut waiting = waiting;
    for k in &mut waiting {
        assert!(k.try_wait().unwrap().is_none(), "a restore did not wait");
    }
    // Released: the three run one after another, never two trees being
    // built beside `out` at once.
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    let mut most = 0;
    let end = Instant::now() + Duration::from_secs(120);
    while waiting.iter_mut().any(|k| k.try_wait().unwrap().is_none()) {
        most = most.max(siblings(&same));
        assert!(Instant::now() < end, "the restores hang");
        std::thread::yield_now();
    }
    for k in waiting {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "built\n");
    }
    assert!(most <= 1, "{most} trees were built beside one path at once");
    assert_eq!(snapshot(&same.join("out")), want);
    assert_eq!(siblings(&same), 0);
    assert_eq!(runs(&w), 1, "restores ran nothing");
}

/// A process holding `flock [-s] PATH` (as a stopped restore or sweep
/// would) until its stdin is closed.
fn hold(w: &World, path: &Path, shared: bool) -> std::process::Child {
    let ready = w.path().join("held");
    let _ = fs::remove_file(&ready);
    let mut c = Command::new("flock");
    if shared {
        c.arg("-s");
    }
    let child = c
        .arg(path)
        .args([
            "sh",
            "-c",
            "echo > \"$0\"; read x; exit 0",
            ready.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the holder", 60, || ready.exists());
    child
}

fn release(mut holder: std::process::Child) {
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
}

#[test]
fn a_held_store_or_directory_is_waited_for_at_most_lock_timeout() {
    if !need("flock", "the LOCK_TIMEOUT test of --output") {
        return;
    }
    let w = World::new();
    fs::create_dir(w.path().join("src")).unwrap();
    fs::write(w.path().join("src/f"), "data").unwrap();
    ok(&mut run(&w, &["--output", "out"], COPY));
    let gc = w.cache().join(".store/.gc-lock");
    let hit = || {
        let mut c = run(&w, &["--output", "out"], COPY);
        c.env("LOCK_TIMEOUT", "1");
        c
    };
    // Another restore into the working directory, stopped: exit 6 after
    // LOCK_TIMEOUT, nothing run.
    let h = hold(&w, w.path(), false);
    let o = output_within(hit(), "a restore into a held directory");
    release(h);
    assert_eq!(o.status.code(), Some(6), "{}", stderr_of(&o));
    assert_eq!(stderr_lines(&o).len(), 1, "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("LOCK_TIMEOUT"), "{}", stderr_of(&o));
    // A stopped sweep: the same.
    let h = hold(&w, &gc, false);
    let o = output_within(hit(), "a restore beside a stopped sweep");
    release(h);
    assert_eq!(o.status.code(), Some(6), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 1, "nothing ran again");
    // A stopped restore (the store held shared): eviction skips the sweep
    // after LOCK_TIMEOUT, evicts, and the blobs stay for the next one.
    let h = hold(&w, &gc, true);
    for args in [&["--max-bytes", "1"][..], &["--all"][..]] {
        let mut c = w.cmd("cache-evict");
        c.args(args).env("LOCK_TIMEOUT", "1");
        let o = output_within(c, "cache-evict beside a stopped restore");
        assert!(o.status.success(), "{args:?}: {}", stderr_of(&o));
    }
    assert!(!blobs(&w.cache()).is_empty(), "the sweep was skipped");
    release(h);
    let o = w.cmd("cache-evict").arg("--all").output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(blobs(&w.cache()).is_empty(), "swept once free");
    assert_exact_with_store(&w, "after the sweeps");
}

#[test]
fn an_old_tree_that_cannot_be_removed_is_named_on_stderr() {
    let w = World::new();
    fs::create_dir(w.path().join("src")).unwrap();
    fs::write(w.path().join("src/f"), "data").unwrap();
    let call = || run(&w, &["--output", "out"], COPY).output().unwrap();
    let o = call();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let pinned = w.path().join("out/f");
    let chattr = |flag: &str, p: &Path| {
        Command::new("chattr")
            .arg(flag)
            .arg(p)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i", &pinned) {
        crate::util::skip_fs("chattr +i not possible here (needs root and a file system with it)");
        return;
    }
    let o = call();
    let left: Vec<PathBuf> = fs::read_dir(w.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".ffkit-restore-"))
        .collect();
    for p in &left {
        chattr("-i", &p.join("f"));
    }
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(o.stdout, b"built\n");
    assert_eq!(left.len(), 1, "{left:?}");
    // Named as the docs say: `.ffkit-restore-PID-N`.
    let name = left[0].file_name().unwrap().to_string_lossy().to_string();
    let parts: Vec<&str> = name
        .strip_prefix(".ffkit-restore-")
        .unwrap_or_default()
        .split('-')
        .collect();
    assert!(
        parts.len() == 2 && parts.iter().all(|p| p.parse::<u64>().is_ok()),
        "{name}"
    );
    let err = stderr_of(&o);
    let name = left[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name) && err.contains("left behind"), "{err}");
    assert_eq!(stderr_lines(&o).len(), 1, "{err}");
    assert_eq!(fs::read_to_string(w.path().join("out/f")).unwrap(), "data");
    assert_eq!(runs(&w), 1);
}

#[test]
fn a_symlinked_store_is_never_written_through_or_counted() {
    let w = World::new();
    w.write("k", "v");
    let elsewhere = w.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, w.cache().join(".store")).unwrap();
    fs::create_dir(w.path().join("src")).unwrap();
    fs::write(w.path().join("src/f"), "data").unwrap();
    let o = run(&w, &["--output", "out"], COPY).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(o.stdout, b"built\n");
    let err = stderr_of(&o);
    assert!(
        err.contains("not cached") && err.contains("symlink"),
        "{err}"
    );
    assert_eq!(stderr_lines(&o).len(), 1, "{err}");
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written through"
    );
    let o = w.cmd("cache-size").arg("--verify").output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let o = w.cmd("cache-evict").arg("--all").output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(w.size(), 0);
}

/// The `run-*` entries (value names) in the cache.
fn entries(w: &World) -> BTreeSet<String> {
    let Ok(rd) = fs::read_dir(w.cache()) else {
        return BTreeSet::new();
    };
    rd.flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with("run-") && !n.ends_with(".meta"))
        .collect()
}

#[test]
fn evict_max_bytes_plans_with_the_blobs_an_entry_frees_and_dry_run_shows_them() {
    let w = World::new();
    let len = |p: &Path| fs::symlink_metadata(p).map_or(0, |m| m.len());
    // Three entries, oldest first: "shared" is in all three, "ab" in a and
    // b, each has a file of its own. Per entry, from the walk: its new
    // value, its new blobs.
    let mut made = Vec::new();
    for (scope, files) in [
        (
            "a",
            "printf shared > out/s; printf ab-content > out/ab; printf only-a > out/own",
        ),
        (
            "b",
            "printf shared > out/s; printf ab-content > out/ab; printf only-b-longer > out/own",
        ),
        (
            "c",
            "printf shared > out/s; printf only-c-much-longer-still > out/own",
        ),
    ] {
        let (e0, b0) = (entries(&w), blobs(&w.cache()));
        let _ = fs::remove_dir_all(w.path().join("out"));
        ok(&mut run(
            &w,
            &["--output", "out", "--scope", scope],
            &format!("echo run >> runs; mkdir out; {files}"),
        ));
        let e: Vec<_> = entries(&w).difference(&e0).cloned().collect();
        assert_eq!(e.len(), 1, "{scope}: one new entry");
        let new: BTreeSet<_> = blobs(&w.cache()).difference(&b0).cloned().collect();
        made.push((e[0].clone(), new));
    }
    let blob = |content: &str| {
        blobs(&w.cache())
            .into_iter()
            .find(|b| fs::read(b).unwrap() == content.as_bytes())
            .unwrap()
    };
    let (ab, shared) = (blob("ab-content"), blob("shared"));
    assert!(made[0].1.contains(&ab) && made[0].1.contains(&shared));
    // A blob no entry uses (left by hand): the sweep frees it whatever goes.
    let orphan_dir = w.cache().join(".store/00");
    fs::create_dir_all(&orphan_dir).unwrap();
    fs::write(orphan_dir.join("1".repeat(62)), "an orphan blob").unwrap();
    let orphan = len(&orphan_dir.join("1".repeat(62)));
    // LRU: a, then b, then c.
    for (i, (e, _)) in made.iter().enumerate() {
        let t = format!("2020-01-0{} 00:00:00", i + 1);
        let st = Command::new("touch")
            .args(["-a", "-d", &t])
            .arg(w.cache().join(e))
            .status()
            .unwrap();
        assert!(st.success());
    }
    // The oracle: what each entry frees when it goes in this order (its own
    // files, and the blobs no later entry uses: "ab" goes with b).
    let own = |e: &str| len(&w.cache().join(e)) + len(&w.cache().join(format!("{e}.meta")));
    let sum = |s: &BTreeSet<PathBuf>| s.iter().map(|b| len(b)).sum::<u64>();
    let (total, _) = oracle_with_store(&w.cache());
    let a_blobs: BTreeSet<_> = made[0]
        .1
        .iter()
        .filter(|b| **b != ab && **b != shared)
        .cloned()
        .collect();
    let mut b_blobs = made[1].1.clone();
    b_blobs.insert(ab.clone());
    let frees_a = own(&made[0].0) + sum(&a_blobs);
    let frees_b = own(&made[1].0) + sum(&b_blobs);
    assert_eq!(
        (a_blobs.len(), b_blobs.len()),
        (2, 3),
        "own file + manifest (+ ab)"
    );
    let evict = |limit: u64, dry: bool| {
        let mut c = w.cmd("cache-evict");
        c.args(["--max-bytes", &limit.to_string()]);
        if dry {
            c.arg("--dry-run");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Exactly a's share over the limit: a alone goes.
    let limit = total - orphan - frees_a;
    assert_eq!(
        evict(limit, true),
        format!(
            "would evict {} ({} bytes, lru, and 2 output blobs of {} bytes)\n\
             would sweep 3 output blobs ({} bytes)\n",
            made[0].0,
            own(&made[0].0),
            sum(&a_blobs),
            sum(&a_blobs) + orphan
        )
    );
    // One byte less: b goes too, "ab" with it, counted once.
    let limit = total - orphan - frees_a - frees_b;
    let text = evict(limit, true);
    assert_eq!(
        text,
        format!(
            "would evict {} ({} bytes, lru, and 2 output blobs of {} bytes)\n\
             would evict {} ({} bytes, lru, and 3 output blobs of {} bytes)\n\
             would sweep 6 output blobs ({} bytes)\n",
            made[0].0,
            own(&made[0].0),
            sum(&a_blobs),
            made[1].0,
            own(&made[1].0),
            sum(&b_blobs),
            sum(&a_blobs) + sum(&b_blobs) + orphan
        )
    );
    let o = w
        .cmd("cache-evict")
        .args(["--max-bytes", &limit.to_string(), "--dry-run", "--json"])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["after"]["bytes"], limit, "{j}");
    assert_eq!(j["removed"][1]["blob_bytes"], sum(&b_blobs), "{j}");
    // The real one removes exactly that: c and its blobs stay.
    evict(limit, false);
    assert_eq!(entries(&w), BTreeSet::from([made[2].0.clone()]));
    let left: BTreeSet<_> = made[2].1.iter().cloned().chain([shared]).collect();
    assert_eq!(blobs(&w.cache()), left);
    assert_eq!(oracle_with_store(&w.cache()).0, limit);
    assert_exact_with_store(&w, "after --max-bytes");
    let _ = fs::remove_dir_all(w.path().join("out"));
    ok(&mut run(
        &w,
        &["--output", "out", "--scope", "c"],
        "echo run >> runs; mkdir out; printf shared > out/s; printf only-c-much-longer-still > out/own",
    ));
    assert_eq!(
        fs::read_to_string(w.path().join("out/own")).unwrap(),
        "only-c-much-longer-still"
    );
    assert_eq!(runs(&w), 3, "c was a hit");
}

/// The reflink-capable file systems the restore is tested on.
#[derive(Clone, Copy, Debug)]
enum ReflinkFs {
    /// XFS with `reflink=1`: a clone is a refcount-btree transaction.
    Xfs,
    /// btrfs: every extent is reference-counted; small files are inline.
    Btrfs,
}

impl ReflinkFs {
    /// The mkfs command line (without the image).
    fn mkfs(self) -> (&'static str, &'static [&'static str]) {
        match self {
            ReflinkFs::Xfs => ("mkfs.xfs", &["-q", "-m", "reflink=1"]),
            ReflinkFs::Btrfs => ("mkfs.btrfs", &["-q"]),
        }
    }
}

/// A reflink-capable file system on a loop device, mounted under a temp
/// dir; unmounted, detached and removed on every path (Drop).
struct ReflinkLoop {
    _tmp: tempfile::TempDir,
    dev: Option<String>,
    mnt: PathBuf,
    mounted: bool,
}

impl ReflinkLoop {
    /// `None` (with a visible SKIP line) where this cannot be made: not
    /// root, no mkfs for `kind`, no free loop device, mounting not allowed.
    fn new(kind: ReflinkFs) -> Option<ReflinkLoop> {
        if !crate::util::need_root(&format!(
            "not root: the reflink restore test ({kind:?}) needs a loop mount"
        )) {
            return None;
        }
        let what = "the reflink restore test";
        let (mkfs, args) = kind.mkfs();
        if !need(mkfs, what) || !need("filefrag", what) || !need("strace", what) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("fs.img");
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let mut me = ReflinkLoop {
            _tmp: tmp,
            dev: None,
            mnt,
            mounted: false,
        };
        // 320 MiB, sparse: XFS's smallest (btrfs's is about 115 MiB).
        fs::File::create(&img).unwrap().set_len(320 << 20).unwrap();
        let quiet = |c: &mut Command| {
            c.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .unwrap()
        };
        let o = quiet(Command::new(mkfs).args(args).arg(&img));
        if !o.status.success() {
            skip(&format!("{mkfs} failed: {}", stderr_of(&o).trim()));
            return None;
        }
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        if !o.status.success() {
            skip(&format!("no loop device: {}", stderr_of(&o).trim()));
            return None;
        }
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        me.dev = Some(dev.clone());
        let o = quiet(Command::new("mount").arg(&dev).arg(&me.mnt));
        if !o.status.success() {
            skip(&format!(
                "cannot mount a loop device: {}",
                stderr_of(&o).trim()
            ));
            return None;
        }
        me.mounted = true;
        Some(me)
    }
}

impl Drop for ReflinkLoop {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.mnt)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Busy (a process of a failed test still in it): detach lazily.
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if let Some(dev) = &self.dev {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

/// Whether every extent of `p` is shared (filefrag's `shared` flag).
fn all_extents_shared(p: &Path) -> bool {
    let o = Command::new("filefrag").arg("-v").arg(p).output().unwrap();
    assert!(o.status.success(), "filefrag: {}", stderr_of(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let extents: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.trim_start()
                .split(':')
                .next()
                .is_some_and(|n| n.trim().parse::<u32>().is_ok())
        })
        .collect();
    !extents.is_empty() && extents.iter().all(|l| l.contains("shared"))
}

#[test]
fn on_a_reflink_file_system_store_and_restore_clone_and_stay_byte_exact() {
    reflink_store_and_restore(ReflinkFs::Xfs);
}

#[test]
fn on_btrfs_store_and_restore_clone_and_stay_byte_exact() {
    reflink_store_and_restore(ReflinkFs::Btrfs);
}

/// A tree on btrfs whose store is on another file system (the cache under
/// the test's temp dir): the first clone is refused (EXDEV), and from then
/// on the small files are read and written again (one `write` each), not
/// sent through `copy_file_range` and its fallbacks as every file on btrfs
/// would be otherwise; the tree is byte-exact.
#[test]
fn on_btrfs_with_the_store_elsewhere_small_files_are_written_once_refused() {
    let Some(fs_) = ReflinkLoop::new(ReflinkFs::Btrfs) else {
        return;
    };
    let w = World::new();
    let work = fs_.mnt.join("work");
    fs::create_dir_all(&work).unwrap();
    let script = "echo run >> runs; mkdir -p out/sub; printf small > out/small; \
        head -c 3000 /dev/urandom > out/sub/three; head -c 100000 /dev/urandom > out/big";
    let call = |c: &mut Command| {
        c.current_dir(&work)
            .env("FFKIT_CACHE_DIR", w.path().join("cache"));
    };
    let mut c = run(&w, &["--output", "out"], script);
    call(&mut c);
    ok(&mut c);
    let want = snapshot(&work.join("out"));
    remove_tree(&work.join("out"));
    let trace = w.path().join("trace");
    let mut c = traced_run(&w, "ioctl,write,copy_file_range", &trace, script);
    call(&mut c);
    ok(&mut c);
    assert_eq!(snapshot(&work.join("out")), want, "byte-exact");
    let text = fs::read_to_string(&trace).unwrap();
    let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("FICLONE"), 1, "one refused clone: {text}");
    assert_eq!(count("copy_file_range"), 1, "big only: {text}");
    let written = |n: usize| {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| l.contains("write(") && l.ends_with(&format!(", {n}) = {n}")))
            .count()
    };
    assert_eq!(written(5), 1, "small written: {text}");
    assert_eq!(written(3000), 1, "three written: {text}");
}

/// Store and restore on a loop-mounted `kind`: files of 16 KiB or more are
/// cloned both ways (one FICLONE each), smaller ones copied on XFS and
/// cloned on btrfs (where that is cheaper than writing them); byte-exact;
/// an edit of a clone never reaches the store.
fn reflink_store_and_restore(kind: ReflinkFs) {
    let Some(fs_) = ReflinkLoop::new(kind) else {
        return;
    };
    let w = World::new();
    let (cache, work) = (fs_.mnt.join("cache"), fs_.mnt.join("work"));
    fs::create_dir_all(&work).unwrap();
    let script = "echo run >> runs; mkdir -p out/sub; \
        head -c 3000000 /dev/urandom > out/big; head -c 700000 /dev/urandom > out/sub/mid; \
        chmod 751 out/sub/mid; printf small > out/small; ln -s big out/link; ln out/big out/sub/hard; \
        head -c 16383 /dev/urandom > out/below; head -c 16384 /dev/urandom > out/at";
    let call = || {
        let mut c = run(&w, &["--output", "out"], script);
        c.current_dir(&work).env("FFKIT_CACHE_DIR", &cache);
        c
    };
    ok(&mut call());
    // The store cloned the command's files: they share their extents.
    assert!(
        all_extents_shared(&work.join("out/big")),
        "big was not cloned into the store"
    );
    assert!(all_extents_shared(&work.join("out/sub/mid")));
    let want = snapshot(&work.join("out"));
    remove_tree(&work.join("out"));
    // The restore under strace: each regular file of 16 KiB or more is one
    // FICLONE that succeeds (copy_file_range may reflink on XFS too, so
    // the extents alone would not tell); a smaller one is one write of its
    // bytes (on XFS a clone costs more than copying a small file).
    let trace = w.path().join("trace");
    let mut c = traced_run(&w, "ioctl,write", &trace, script);
    c.current_dir(&work).env("FFKIT_CACHE_DIR", &cache);
    ok(&mut c);
    let text = fs::read_to_string(&trace).unwrap();
    let clones = text
        .lines()
        .filter(|l| l.contains("FICLONE") && l.trim_end().ends_with("= 0"))
        .count();
    // On btrfs every file with content is cloned (docs/cache-run.md).
    let small_cloned = matches!(kind, ReflinkFs::Btrfs);
    assert_eq!(
        clones,
        if small_cloned { 5 } else { 3 },
        "big, sub/mid and at (16 KiB) restored by FICLONE, and on btrfs small and below: {text}"
    );
    let written = |n: usize| {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| l.contains("write(") && l.ends_with(&format!(", {n}) = {n}")))
            .count()
    };
    let copied = usize::from(!small_cloned);
    assert_eq!(written(5), copied, "small copied on XFS only: {text}");
    assert_eq!(
        written(16383),
        copied,
        "below (16 KiB - 1) copied on XFS only: {text}"
    );
    assert_eq!(
        fs::read_to_string(work.join("runs"))
            .unwrap()
            .lines()
            .count(),
        1,
        "a hit"
    );
    let got = snapshot(&work.join("out"));
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k}");
    }
    assert_eq!(got.len(), want.len());
    // The restore cloned them from the store (FICLONE): shared extents, no
    // data written.
    for f in ["out/big", "out/sub/mid", "out/at"] {
        assert!(
            all_extents_shared(&work.join(f)),
            "{f} was copied, not cloned"
        );
    }
    assert_eq!(
        all_extents_shared(&work.join("out/below")),
        small_cloned,
        "below cloned on btrfs only"
    );
    // A write to a clone never reaches the store (copy on write).
    fs::write(work.join("out/big"), "edited").unwrap();
    remove_tree(&work.join("out"));
    ok(&mut call());
    assert_eq!(snapshot(&work.join("out")), want, "the store is intact");
}

/// SIGKILL of an eviction while it removes entries and sweeps their blobs
/// (a journal is on disk: the window of both): the index is exact after
/// the next call's repair, and another entry's tree still restores whole,
/// never from a half-swept store.
#[test]
fn sigkill_during_evictions_sweep_leaves_the_index_exact_and_other_trees_whole() {
    let w = World::new();
    let a = "echo run >> runs; mkdir -p a; for i in $(seq 1 1500); do echo A$i > a/f$i; done";
    let b = "echo run >> runs; mkdir -p b/d; for i in $(seq 1 40); do echo B$i > b/d/f$i; done";
    ok(&mut run(&w, &["--output", "b"], b));
    let want = snapshot(&w.path().join("b"));
    let journal = w.cache().join(".journal");
    let mut caught = 0;
    for _ in 0..4 {
        ok(&mut run(&w, &["--output", "a", "--force"], a));
        let n = runs(&w);
        if kill_when(run(&w, &["--output", "a", "--invalidate"], a), || {
            fs::symlink_metadata(&journal).is_ok()
        }) {
            caught += 1;
        }
        assert_exact_with_store(&w, "after an eviction was killed");
        remove_tree(&w.path().join("b"));
        ok(&mut run(&w, &["--output", "b"], b));
        assert_eq!(snapshot(&w.path().join("b")), want, "b restored whole");
        assert_eq!(runs(&w), n, "b was a hit");
        // A sweep after the kill takes what the killed one left.
        let o = w
            .cmd("cache-evict")
            .arg("--max-bytes")
            .arg("1G")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_exact_with_store(&w, "after the next eviction");
    }
    eprintln!("killed mid-eviction {caught}/4");
}

/// A full disk: a store that does not fit is not cached (one line, the
/// command's output and status pass, no temp blob left, the index exact);
/// a restore that does not fit is exit 8 with one line, and the path keeps
/// its old tree, nothing beside it, nothing replayed, nothing run.
#[test]
fn a_full_disk_during_store_or_restore_is_one_line_and_changes_nothing() {
    if !crate::util::need_root("not root: the full-disk test mounts a small tmpfs") {
        return;
    }
    let tmpfs = |at: &Path| {
        fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        o.status.success().then_some(()).ok_or(stderr_of(&o))
    };
    // The store: the cache dir on a 1 MiB tmpfs.
    let w = World::new();
    let _guard = Mounts(w.path().to_path_buf());
    if let Err(e) = tmpfs(&w.cache()) {
        skip(&format!("cannot mount a tmpfs: {}", e.trim()));
        return;
    }
    let big = "echo run >> runs; mkdir -p out; head -c 1500000 /dev/urandom > out/f; echo made";
    for _ in 0..2 {
        let o = run(&w, &["--output", "out"], big).output().unwrap();
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n");
        assert!(
            err.contains("not cached") && err.contains("No space left"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_eq!(runs(&w), 2, "never a hit");
    let temps: Vec<_> = fs::read_dir(w.cache().join(".store"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(temps.is_empty(), "no temp blob left: {temps:?}");
    assert!(blobs(&w.cache()).is_empty());
    assert_exact_with_store(&w, "after the full store");
    // The restore: the working directory on a 1 MiB tmpfs, the cache not.
    let w = World::new();
    let _guard = Mounts(w.path().to_path_buf());
    let small = w.path().join("small");
    if let Err(e) = tmpfs(&small) {
        skip(&format!("cannot mount a tmpfs: {}", e.trim()));
        return;
    }
    let fill = "echo run >> ../runs; mkdir -p out; head -c 700000 /dev/urandom > out/f; echo made";
    let call = || {
        let mut c = run(&w, &["--output", "out"], fill);
        c.current_dir(&small);
        c
    };
    ok(&mut call());
    fs::write(small.join("out/marker"), "old").unwrap();
    let old = snapshot(&small.join("out"));
    let o = call().output().unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(8), "{err}");
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(o.stdout.is_empty(), "nothing replayed");
    assert_eq!(runs(&w), 1, "nothing run");
    assert_eq!(snapshot(&small.join("out")), old, "the old tree stays");
    let beside: Vec<_> = fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        beside,
        vec![std::ffi::OsString::from("out")],
        "nothing beside"
    );
    assert_exact_with_store(&w, "after the full restore");
}

/// A tree the walk can name from the working directory but a restore could
/// not make beside it (its temp name `./.ffkit-restore-PID-N` is longer
/// than the path's, and a name of PATH_MAX bytes is refused) is not
/// cached: before, a deep file made every hit leave its old tree behind,
/// one more each hit, none ever removed; a deep directory made every hit
/// fail with exit 1 (`cannot create …: File name too long`). A tree just
/// short of that is stored, restored and replaced as any other.
#[test]
fn a_tree_too_deep_to_restore_beside_its_path_is_not_cached() {
    let w = World::new();
    let d = "d".repeat(200);
    let deep = |levels: usize| format!("o{}", format!("/{d}").repeat(levels));
    // (what, script, its deepest path's length)
    let file = |levels: usize, total: usize| {
        let dir = deep(levels);
        let leaf = "f".repeat(total - dir.len() - 1);
        format!("echo run >> runs; mkdir -p {dir}; : > {dir}/{leaf}; echo made")
    };
    let dir = |levels: usize, total: usize| {
        let dir = deep(levels);
        let leaf = "e".repeat(total - dir.len() - 1);
        format!("echo run >> runs; mkdir -p {dir}/{leaf}; echo made")
    };
    for (what, script) in [("a file", file(20, 4080)), ("a directory", dir(20, 4085))] {
        let n = runs(&w);
        for _ in 0..3 {
            let o = run(&w, &["--output", "o"], &script).output().unwrap();
            let err = stderr_of(&o);
            assert_eq!(o.status.code(), Some(0), "{what}: {err}");
            assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n", "{what}");
            assert!(
                err.contains("not cached") && err.contains("too long to restore"),
                "{what}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{what}: {err}");
        }
        assert_eq!(runs(&w), n + 3, "{what}: never a hit");
        let beside: Vec<_> = fs::read_dir(w.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".ffkit-restore-")
            })
            .collect();
        assert!(beside.is_empty(), "{what}: nothing left beside");
        assert!(blobs(&w.cache()).is_empty(), "{what}: nothing stored");
        fs::remove_dir_all(w.path().join("o")).unwrap();
    }
    // Just short of the limit: stored, restored, and each hit removes the
    // tree it replaces.
    let fits = file(19, 3921);
    ok(&mut run(&w, &["--output", "o"], &fits));
    let n = runs(&w);
    for _ in 0..3 {
        let o = run(&w, &["--output", "o"], &fits).output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert!(o.stderr.is_empty(), "{}", stderr_of(&o));
    }
    assert_eq!(runs(&w), n, "hits");
    let names: Vec<_> = fs::read_dir(w.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ffkit-restore-"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert_exact_with_store(&w, "after the deep trees");
}

/// A tree at the path deeper than a path can name (made by the user, not
/// stored: a restore swaps it out under its temp name, which is longer) is
/// removed whole by a hit: removal goes by names in each directory's
/// descriptor, never by a path from the working directory. Before, it
/// failed with ENAMETOOLONG and the tree was left behind, named on stderr,
/// and no later restore could remove it either. Directories without their
/// owner's rwx in it go too.
#[test]
fn a_replaced_tree_deeper_than_a_path_can_name_is_removed_whole() {
    let w = World::new();
    let script = "echo run >> runs; mkdir -p o; echo v > o/f; echo made";
    ok(&mut run(&w, &["--output", "o"], script));
    // 4,080 bytes from the working directory: a file in 20 levels of
    // 200-byte names, and directories without rwx on the way.
    let d = "d".repeat(200);
    let dir = format!("o{}", format!("/{d}").repeat(20));
    let leaf = "f".repeat(4080 - dir.len() - 1);
    remove_tree(&w.path().join("o"));
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkdir -p {dir} && echo deep > {dir}/{leaf} && chmod 0 o/{d}/{d} && chmod 500 o/{d}"
        ))
        .current_dir(w.path())
        .status()
        .unwrap();
    assert!(made.success());
    let o = run(&w, &["--output", "o"], script).output().unwrap();
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert!(o.stderr.is_empty(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n");
    assert_eq!(runs(&w), 1, "a hit");
    assert_eq!(fs::read_to_string(w.path().join("o/f")).unwrap(), "v\n");
    let beside: Vec<_> = fs::read_dir(w.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ffkit-restore-"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
}

/// A killed restore's tree is removed by the next restore beside it only
/// when it is our user's: in a shared directory a name of that shape may be
/// another user's, and root removed it.
#[test]
fn another_users_tree_named_like_a_dead_restore_is_left_alone() {
    if !crate::util::need_root("not root: the test gives a tree to another user") {
        return;
    }
    let w = World::new();
    let script = "echo run >> runs; mkdir -p o; echo v > o/f";
    ok(&mut run(&w, &["--output", "o"], script));
    // A pid that is gone: a child waited for.
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    let theirs = w.path().join(format!(".ffkit-restore-{pid}-0"));
    let ours = w.path().join(format!(".ffkit-restore-{pid}-1"));
    for t in [&theirs, &ours] {
        fs::create_dir_all(t.join("d")).unwrap();
        fs::write(t.join("d/f"), "data").unwrap();
    }
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(chown.success());
    ok(&mut run(&w, &["--output", "o"], script));
    assert_eq!(runs(&w), 1, "a hit");
    assert!(!ours.exists(), "our dead restore's tree is removed");
    assert_eq!(
        fs::read_to_string(theirs.join("d/f")).unwrap(),
        "data",
        "another user's is left"
    );
}

/// A file a `--link` restore made is the blob: its user's `chmod` changes
/// the blob's mode. `chmod 000` of one made every copy restore of that
/// content fail with exit 3 (`cannot open …/.store/…: Permission denied`),
/// `--force` included, until an eviction; `chmod u+w` gave every later
/// `--link` restore writable files. Now a blob with another mode than a
/// store gives it is damage: a miss, whose store replaces it, then hits.
/// Run as nobody (root ignores the mode).
#[test]
fn a_blob_chmodded_through_a_link_restore_is_a_miss_and_stored_again() {
    if !crate::util::need_root("not root: the test runs ffkit as nobody") {
        return;
    }
    let Some(w) = nobodys_world() else {
        return;
    };
    let script = "echo run >> runs; rm -rf o; mkdir -p o; echo v > o/f; echo made";
    let call = |link: bool| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin());
        w.isolate(&mut c);
        c.current_dir(w.path())
            .args(["cache-run", "--ttl", "0", "--output", "o"]);
        if link {
            c.arg("--link");
        }
        c.args(["--", "sh", "-c", script]);
        c.output().unwrap()
    };
    let o = call(false);
    if !o.status.success() {
        skip(&format!(
            "nobody cannot run the test binary: {}",
            stderr_of(&o)
        ));
        return;
    }
    let o = call(true);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 1, "a --link hit");
    let f = w.path().join("o/f");
    // The user makes the restored file (the blob) unreadable.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).unwrap();
    let o = call(false);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n");
    assert_eq!(runs(&w), 2, "a miss");
    let o = call(false);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(o.stderr.is_empty(), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 2, "a hit again");
    assert_eq!(fs::read_to_string(&f).unwrap(), "v\n");
    // Writable through a --link restore (chmod u+w): the next --link
    // restore is a miss, and the one after links a read-only blob again.
    let o = call(true);
    assert!(o.status.success(), "{}", stderr_of(&o));
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    let o = call(true);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 3, "a miss");
    let o = call(true);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 3, "a hit");
    assert_eq!(fs::symlink_metadata(&f).unwrap().mode() & 0o7777, 0o444);
    assert_exact_with_store(&w, "after the repairs");
}

/// Attack finding: a `--link` restore makes one more name of a blob per
/// file, and a file system caps the names of one inode (65,000 on ext4):
/// a content many files share (an empty file, one LICENSE), restored into
/// a few trees, reached the cap and every `--link` hit failed with exit 1,
/// `cannot link ./.ffkit-restore-…/a: Too many links`. Now a file whose
/// blob is full is copied (its recorded mode and mtime), and a member of a
/// hard-link group that cannot be linked to its first file is a copy of it.
#[test]
fn a_link_restore_of_a_blob_with_all_the_names_it_can_have_copies_the_file() {
    let w = World::new();
    let script = "echo run >> runs; rm -rf o; mkdir -p o; echo full-blob > o/a; \
                  ln o/a o/h; ln o/a o/g; chmod 640 o/a; touch -d @1000000000 o/a; echo made";
    let call = || {
        let mut c = run(&w, &["--link", "--output", "o"], script);
        c.current_dir(w.path());
        c
    };
    ok(&mut run(&w, &["--output", "o"], script));
    let blob = a_blob_holds(&w, b"full-blob").unwrap();
    // Names for the blob until its file system refuses one more.
    let names = w.path().join("names");
    fs::create_dir(&names).unwrap();
    let mut n = 0u32;
    let full = loop {
        match fs::hard_link(&blob, names.join(n.to_string())) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => break true,
            Err(e) => panic!("{e}"),
        }
        if n > 70_000 {
            break false;
        }
    };
    if !full {
        crate::util::skip_fs("the temp dir's file system has no link limit below 70,000");
        return;
    }
    let check = |what: &str| {
        let o = call().output().unwrap();
        assert!(o.status.success(), "{what}: {}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n", "{what}");
        assert!(o.stderr.is_empty(), "{what}: {}", stderr_of(&o));
        assert_eq!(runs(&w), 1, "{what}: a hit");
        for f in ["o/a", "o/h", "o/g"] {
            assert_eq!(
                fs::read(w.path().join(f)).unwrap(),
                b"full-blob\n",
                "{what}: {f}"
            );
        }
    };
    // The blob is full: both files are copies, one group again.
    check("a full blob");
    let a = fs::metadata(w.path().join("o/a")).unwrap();
    let h = fs::metadata(w.path().join("o/h")).unwrap();
    assert_eq!((a.mode() & 0o7777, a.mtime()), (0o640, 1_000_000_000));
    assert_eq!(a.ino(), h.ino(), "the group is one file");
    assert_ne!(a.ino(), fs::metadata(&blob).unwrap().ino(), "a copy");
    // One name free: `o/a` could be the blob, but `o/h` cannot: the group
    // is one copy with its mode and mtime (it was split in two: `o/a` the
    // blob, `o/h` a copy; a group of three was three files), and the name
    // `o/a` took is given back.
    fs::remove_file(names.join("0")).unwrap();
    check("one name free");
    let a = fs::metadata(w.path().join("o/a")).unwrap();
    let h = fs::metadata(w.path().join("o/h")).unwrap();
    let g = fs::metadata(w.path().join("o/g")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (h.ino(), 3), "the group is one file");
    assert_eq!(a.ino(), g.ino(), "the group is one file");
    assert_ne!(a.ino(), fs::metadata(&blob).unwrap().ino(), "a copy");
    assert_eq!((h.mode() & 0o7777, h.mtime()), (0o640, 1_000_000_000));
    assert_eq!(fs::metadata(&blob).unwrap().nlink(), 64_999);
    assert_exact_with_store(&w, "after the restores");
}

/// Attack finding: a blob the kernel refuses to link (`chattr +i`; the
/// same EPERM as another owner's blob under `fs.protected_hardlinks`)
/// failed every `--link` hit with exit 3, `cannot link …: Operation not
/// permitted`. Now that file is copied, and a copy restore never cared.
#[test]
fn a_link_restore_of_a_blob_the_kernel_refuses_to_link_copies_the_file() {
    let w = World::new();
    let script = "echo run >> runs; rm -rf o; mkdir -p o; echo pinned-blob > o/a; \
                  ln o/a o/h; echo made";
    ok(&mut run(&w, &["--output", "o"], script));
    let blob = a_blob_holds(&w, b"pinned-blob").unwrap();
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&blob)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        crate::util::skip_fs("chattr +i not possible here (needs root and a file system with it)");
        return;
    }
    let o = run(&w, &["--link", "--output", "o"], script)
        .output()
        .unwrap();
    let removed = chattr("-i");
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(removed);
    assert!(o.stderr.is_empty(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n");
    assert_eq!(runs(&w), 1, "a hit");
    for f in ["o/a", "o/h"] {
        assert_eq!(fs::read(w.path().join(f)).unwrap(), b"pinned-blob\n", "{f}");
    }
    let a = fs::metadata(w.path().join("o/a")).unwrap();
    assert_ne!(a.ino(), fs::metadata(&blob).unwrap().ino(), "a copy");
    assert_eq!(a.ino(), fs::metadata(w.path().join("o/h")).unwrap().ino());
    assert_exact_with_store(&w, "after the restore");
}

/// A restorer stopped (SIGSTOP) midway while another process evicts its
/// entry: the eviction removes the entry but not the blobs in use (its
/// sweep waits LOCK_TIMEOUT for the store, then is skipped), and the
/// restorer, continued, puts the whole tree in place and replays its
/// output; the next eviction sweeps the blobs and the index stays exact.
#[test]
fn a_stopped_restorer_gets_its_whole_tree_while_another_process_evicts() {
    let w = World::new();
    let src = w.path().join("src");
    generate(&src, 1500);
    ok(&mut run(&w, &["--output", "out"], COPY));
    let want = snapshot(&w.path().join("out"));
    remove_tree(&w.path().join("out"));
    let mut child = run(&w, &["--output", "out"], COPY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let building = || {
        fs::read_dir(w.path()).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".ffkit-restore-")
            })
        })
    };
    let end = Instant::now() + Duration::from_secs(60);
    let mut stopped = false;
    while Instant::now() < end && child.try_wait().unwrap().is_none() {
        if building() {
            // SAFETY: kill(2) of our own child, which has not been waited
            // for (try_wait said it runs), so the pid is still ours.
            stopped = unsafe { libc::kill(pid, libc::SIGSTOP) } == 0;
            break;
        }
        std::thread::yield_now();
    }
    let evicted = w
        .cmd("cache-evict")
        .args(["--all", "--json"])
        .env("LOCK_TIMEOUT", "1")
        .output()
        .unwrap();
    if stopped {
        // SAFETY: as above; the child is stopped, not reaped.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
    let o = child.wait_with_output().unwrap();
    assert!(evicted.status.success(), "{}", stderr_of(&evicted));
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "built\n");
    assert_eq!(runs(&w), 1, "a hit, never a rerun");
    assert_eq!(snapshot(&w.path().join("out")), want, "the whole tree");
    if stopped {
        let j: serde_json::Value = serde_json::from_slice(&evicted.stdout).unwrap();
        assert_eq!(j["output_blobs"]["busy"], true, "{j}");
        assert!(!blobs(&w.cache()).is_empty(), "the blobs in use stay");
    }
    let o = w.cmd("cache-evict").arg("--all").output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(blobs(&w.cache()).is_empty(), "swept");
    assert_exact_with_store(&w, "after both evictions");
    eprintln!("restorer stopped midway: {stopped}");
}

/// A path that became a mount point after its entry was stored (a volume
/// mounted at `node_modules`) cannot be swapped (EBUSY): every hit failed
/// with exit 1, `cannot replace o: Device or resource busy`. Now it is a
/// miss before anything is built: the command runs (into the mount, as
/// without ffkit), its run is not stored (a mount point never is: one
/// line), nothing is left beside, and the entry serves again once the
/// mount is gone.
#[test]
fn a_path_that_became_a_mount_point_is_a_miss_not_a_failure() {
    if !crate::util::need_root("not root: the test mounts a tmpfs") {
        return;
    }
    let w = World::new();
    let _guard = Mounts(w.path().to_path_buf());
    let script = "echo run >> runs; mkdir -p o; echo v > o/f; echo made";
    ok(&mut run(&w, &["--output", "o"], script));
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(w.path().join("o"))
        .output()
        .unwrap();
    if !o.status.success() {
        skip(&format!("cannot mount a tmpfs: {}", stderr_of(&o).trim()));
        return;
    }
    for n in 2..4 {
        let o = run(&w, &["--output", "o"], script).output().unwrap();
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n");
        assert!(
            err.contains("not cached") && err.contains("o: a mount point"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(runs(&w), n, "the command ran");
    }
    assert_eq!(fs::read_to_string(w.path().join("o/f")).unwrap(), "v\n");
    let beside: Vec<_> = fs::read_dir(w.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ffkit-restore-"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    drop(_guard);
    let o = run(&w, &["--output", "o"], script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 3, "a hit once the mount is gone");
    assert_exact_with_store(&w, "after the mount");
}

/// A child test process of this binary, killed by its parent's guard.
struct Swapper(std::process::Child);

impl Drop for Swapper {
    fn drop(&mut self) {
        // Our own child, not yet waited for: its pid cannot be reused.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a blob in the store holds `marker`.
fn a_blob_holds(w: &World, marker: &[u8]) -> Option<PathBuf> {
    blobs(&w.cache())
        .into_iter()
        .find(|b| fs::read(b).is_ok_and(|c| c.windows(marker.len()).any(|x| x == marker)))
}

/// A command that leaves `out` as it is (made by the test).
const BUILT: &str = "echo run >> runs; echo built";

/// `out/sub` (200 files) and `aside`, a symlink to a directory outside the
/// working directory holding files of the same names with a secret, made
/// in `w`; the secret's marker.
fn a_tree_and_a_secret_beside(w: &World, secret: &Path) -> String {
    let marker = format!(
        "ffkit-secret-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let sub = w.path().join("out/sub");
    fs::create_dir_all(&sub).unwrap();
    for i in 0..200 {
        let n = format!("f{i:03}");
        fs::write(sub.join(&n), format!("public {i}\n")).unwrap();
        fs::write(secret.join(&n), format!("{marker} {i}\n")).unwrap();
    }
    symlink(secret, w.path().join("aside")).unwrap();
    marker
}

/// Puts the directory back at `out/sub` (and the symlink at `aside`) if
/// the swapper left them exchanged.
fn unswap(w: &World) {
    if is_symlink(&w.path().join("out/sub")) {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            w.path().join("out/sub"),
            rustix::fs::CWD,
            w.path().join("aside"),
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .unwrap();
    }
}

/// The child half of
/// [`a_directory_swapped_for_a_symlink_while_stored_never_stores_what_the_link_leads_to`]:
/// does nothing unless FFKIT_TEST_SWAP names a directory; there it
/// exchanges `out/sub` and `aside` (`renameat2(RENAME_EXCHANGE)`) as fast
/// as it can, until one is gone (the test's directory removed) or it is
/// killed. `swapping` says it has started.
#[test]
fn swapper_child() {
    let Some(dir) = std::env::var_os("FFKIT_TEST_SWAP") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let (a, b) = (dir.join("out/sub"), dir.join("aside"));
    for n in 0u64.. {
        let swapped = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &a,
            rustix::fs::CWD,
            &b,
            rustix::fs::RenameFlags::EXCHANGE,
        );
        if swapped.is_err() {
            return;
        }
        if n == 1000 {
            fs::write(dir.join("swapping"), "").unwrap();
        }
    }
}

/// A process the command left behind (here one the test owns) swaps a
/// directory of the output with a symlink to a directory outside the
/// working directory, as fast as it can, while runs are stored. The store
/// walked the tree by paths from the working directory, so a directory
/// stat'ed as one and swapped before its files were opened was listed and
/// read where the link pointed: the secret files' bytes were stored as
/// `sub/fNNN`, and every later hit restored them into the tree (in the
/// first run, nearly always). By descriptors, each name is looked up in
/// the directory the walk stat'ed and opened: a run is stored with the
/// tree's own files (or `sub` as a link, stored verbatim), or not cached
/// (`changed while it was stored`, one line); never a secret byte in a
/// blob or a restored file, and the index stays exact.
#[test]
fn a_directory_swapped_for_a_symlink_while_stored_never_stores_what_the_link_leads_to() {
    let w = World::new();
    let secret = tempfile::tempdir().unwrap();
    let marker = a_tree_and_a_secret_beside(&w, secret.path());
    let swapper = Swapper(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "cache_output::swapper_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FFKIT_TEST_SWAP", w.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until("the swapper swaps", || w.path().join("swapping").exists());
    let (mut stored, mut refused) = (0, 0);
    for i in 0..40 {
        let o = run(&w, &["--force", "--output", "out"], BUILT)
            .output()
            .unwrap();
        if let Some(b) = a_blob_holds(&w, marker.as_bytes()) {
            panic!(
                "run {i} ({stored} stored, {refused} refused before): blob {} holds the secret",
                b.display()
            );
        }
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "built\n");
        let err = stderr_of(&o);
        if err.is_empty() {
            stored += 1;
        } else {
            assert!(
                err.contains("not cached") && err.contains("out/sub: changed while it was stored"),
                "{err}"
            );
            assert_eq!(stderr_lines(&o).len(), 1, "{err}");
            refused += 1;
        }
    }
    drop(swapper);
    eprintln!("{stored} runs stored, {refused} not cached");
    assert!(stored > 0, "no run was stored: nothing to restore");
    unswap(&w);
    // A hit: the last stored run's tree, restored.
    let o = run(&w, &["--output", "out"], BUILT).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 40, "a hit");
    for (p, item) in snapshot(&w.path().join("out")) {
        if let Item::File { content, .. } = item {
            let holds = content
                .windows(marker.len())
                .any(|x| x == marker.as_bytes());
            assert!(!holds, "restored {p} holds the secret");
        }
    }
    assert_exact_with_store(&w, "after the swaps");
}

/// `ffkit cache-run --ttl 0 --output out -- sh -c SCRIPT` with at most
/// `nofile` descriptors (`ulimit -n`).
fn run_with_nofile(w: &World, nofile: u32, script: &str) -> std::process::Output {
    run_after(w, &format!("ulimit -n {nofile}"), script)
}

/// `ffkit cache-run --ttl 0 --output out -- sh -c SCRIPT` started by bash
/// after `prelude` (a limit, descriptors left open).
fn run_after(w: &World, prelude: &str, script: &str) -> std::process::Output {
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.current_dir(w.path())
        .args(["-c", &format!("{prelude} && exec \"$@\""), "bash"])
        .arg(bin())
        .args([
            "cache-run",
            "--ttl",
            "0",
            "--output",
            "out",
            "--",
            "sh",
            "-c",
        ])
        .arg(script);
    c.output().unwrap()
}

/// A hit with too few descriptors to make a file (`ulimit -n 6` to `8`:
/// the entry, the store's lock and the directory's take three) fails with
/// one line and exit 1, and changes nothing: before, it built the tree's
/// directories, failed at its first file (EMFILE) and could not remove
/// them either, leaving a `.ffkit-restore-*` tree beside the path at each
/// hit. A killed restore's tree found beside the path is still removed
/// with the two descriptors left; one more lets the hit restore.
#[test]
fn a_restore_without_the_descriptors_to_make_a_file_changes_nothing_and_leaves_nothing() {
    let w = World::new();
    let script = "echo run >> runs; rm -rf out; mkdir -p out/a/b/c out/d; \
         for i in 1 2 3 4 5 6; do echo $i > out/a/b/c/f$i; echo $i > out/d/g$i; done; echo made";
    ok(&mut run(&w, &["--output", "out"], script));
    let want = snapshot(&w.path().join("out"));
    fs::write(w.path().join("out/a/b/c/f1"), "edited").unwrap();
    let old = snapshot(&w.path().join("out"));
    // A killed restore's tree, its pid gone (beyond pid_max's limit).
    let dead = w.path().join(".ffkit-restore-4194305-0");
    fs::create_dir_all(dead.join("x/y/z")).unwrap();
    fs::write(dead.join("x/y/z/f"), "old").unwrap();
    for nofile in [6, 7, 8] {
        let o = run_with_nofile(&w, nofile, script);
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(1), "ulimit -n {nofile}: {err}");
        assert!(err.contains("Too many open files"), "{err}");
        assert_eq!(err.lines().count(), 1, "ulimit -n {nofile}: {err}");
        assert!(o.stdout.is_empty(), "ulimit -n {nofile}: nothing replayed");
        assert_eq!(runs(&w), 1, "ulimit -n {nofile}: nothing run");
        assert_eq!(
            snapshot(&w.path().join("out")),
            old,
            "ulimit -n {nofile}: the old tree stays"
        );
    }
    assert_eq!(
        ffkit_siblings(&w),
        Vec::<String>::new(),
        "nothing built beside, the dead restore's tree removed"
    );
    let o = run_with_nofile(&w, 9, script);
    assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n");
    assert_eq!(runs(&w), 1, "a hit");
    assert_eq!(snapshot(&w.path().join("out")), want, "restored whole");
    assert_exact_with_store(&w, "after the hits");
}

/// The store holds a descriptor per level of the path it walks (a
/// directory's goes once its last child is opened): a tree whose open
/// levels outnumber the descriptor limit is not cached (EMFILE, one line;
/// the run's output and status pass, and the next call runs again), while
/// a chain of single directories as deep is stored (two descriptors at a
/// time) and restored.
#[test]
fn a_tree_deeper_than_the_descriptor_limit_is_not_cached_and_a_chain_is_stored() {
    let w = World::new();
    // 100 levels, each a directory `a` and a file `z` after it: every
    // level stays open while `a` is walked.
    let wide = "echo run >> runs; rm -rf out; d=out; i=0; while [ $i -lt 100 ]; do \
        mkdir -p $d/a; : > $d/z; d=$d/a; i=$((i+1)); done; echo made";
    for n in 1..=2 {
        let o = run_with_nofile(&w, 64, wide);
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n");
        assert!(
            err.contains("not cached") && err.contains("Too many open files"),
            "{err}"
        );
        assert_eq!(stderr_lines(&o).len(), 1, "{err}");
        assert_eq!(runs(&w), n, "never a hit");
    }
    assert!(blobs(&w.cache()).is_empty(), "nothing stored");
    assert_exact_with_store(&w, "after the deep tree");
    // A chain of 100 directories, a file at the bottom.
    let chain = "echo run >> runs; rm -rf out; mkdir -p out/$(printf 'b/%.0s' $(seq 100)); \
        echo deep > out/$(printf 'b/%.0s' $(seq 100))f; echo made";
    let o = run_with_nofile(&w, 64, chain);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(stderr_of(&o), "", "stored");
    let before = snapshot(&w.path().join("out"));
    // Under the same limit: the hit swaps the chain the miss left for the
    // stored one, and removes the replaced chain whole, deeper than the
    // descriptors it may hold (it moves what it cannot open up into the
    // tree's top and lists the top again), leaving nothing beside `out`.
    for n in 3..=4 {
        let o = run_with_nofile(&w, 64, chain);
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(stderr_of(&o), "", "nothing left behind");
        assert_eq!(runs(&w), 3, "a hit");
        assert_eq!(snapshot(&w.path().join("out")), before, "restored whole");
        let beside: Vec<_> = fs::read_dir(w.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".ffkit"))
            .collect();
        assert!(beside.is_empty(), "hit {n}: {beside:?}");
    }
    assert_exact_with_store(&w, "after the chain");
}

/// Continues a process stopped by [`stopped_at`] when dropped, also if the
/// test fails before.
struct Cont(rustix::process::Pid);

impl Drop for Cont {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.0, rustix::process::Signal::CONT);
    }
}

/// `run`'s `--output out` call of [`BUILT`] under `strace -f`, which stops
/// it (SIGSTOP) once its `when`-th `syscall` that names `dir` (`-P`: by
/// its path or a descriptor of it) has returned; waits for that stop.
/// The process is the test's (started through strace, not reaped while
/// stopped), continued when the [`Cont`] goes.
fn stopped_at(w: &World, dir: &str, syscall: &str, when: u32) -> (std::process::Child, Cont) {
    let trace = w.path().join("trace");
    let mut c = Command::new("strace");
    w.isolate(&mut c);
    c.args(["-f", "-o"])
        .arg(&trace)
        .arg("-P")
        .arg(fs::canonicalize(w.path().join(dir)).unwrap())
        .args([
            "-e",
            &format!("trace={syscall}"),
            "-e",
            &format!("inject={syscall}:signal=SIGSTOP:when={when}"),
        ])
        .arg(bin())
        .args(["cache-run", "--ttl", "0", "--output", "out", "--"])
        .args(["sh", "-c", BUILT])
        .current_dir(w.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // `PID --- stopped by SIGSTOP ---`: the group stop strace reports.
    let mut stopped = None;
    until("ffkit is stopped", || {
        stopped = fs::read_to_string(&trace).ok().and_then(|t| {
            t.lines()
                .find(|l| l.ends_with("--- stopped by SIGSTOP ---"))
                .and_then(|l| l.split_whitespace().next()?.parse::<i32>().ok())
        });
        stopped.is_some()
    });
    let cont = Cont(stopped.and_then(rustix::process::Pid::from_raw).unwrap());
    (child, cont)
}

/// The swap of
/// [`a_directory_swapped_for_a_symlink_while_stored_never_stores_what_the_link_leads_to`]
/// at one chosen moment, without timing: ffkit runs under `strace`, which
/// stops it (SIGSTOP) at its first `getdents64` of `out/sub` (`-P`), i.e.
/// once `sub` was stat'ed as a directory and opened; the test then swaps
/// `sub` for the symlink and continues it (SIGCONT to that process, which
/// the test started through strace and strace has not reaped). By paths,
/// every file of `sub` was then stat'ed and read through the link (the
/// secret stored, then restored into the tree by the hit); by
/// descriptors, the run is stored with `sub`'s own files.
#[test]
fn a_directory_swapped_for_a_symlink_once_it_is_listed_is_stored_as_it_was() {
    if !need("strace", "the swap at a chosen system call") {
        return;
    }
    let w = World::new();
    let secret = tempfile::tempdir().unwrap();
    let marker = a_tree_and_a_secret_beside(&w, secret.path());
    let (child, cont) = stopped_at(&w, "out/sub", "getdents64", 1);
    // The directory is open and being listed: now the symlink takes its name.
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        w.path().join("out/sub"),
        rustix::fs::CWD,
        w.path().join("aside"),
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .unwrap();
    assert!(is_symlink(&w.path().join("out/sub")));
    drop(cont);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "built\n");
    if let Some(b) = a_blob_holds(&w, marker.as_bytes()) {
        panic!("blob {} holds the secret", b.display());
    }
    // Stored, whole: the hit restores `sub` as the directory it was.
    assert!(!stderr_of(&o).contains("not cached"), "{}", stderr_of(&o));
    let o = run(&w, &["--output", "out"], BUILT).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 1, "a hit");
    assert!(!is_symlink(&w.path().join("out/sub")));
    for i in 0..200 {
        let got = fs::read_to_string(w.path().join(format!("out/sub/f{i:03}"))).unwrap();
        assert_eq!(got, format!("public {i}\n"));
    }
    assert_exact_with_store(&w, "after the swap");
}

/// A file of the tree replaced (another inode renamed over its name)
/// between the walk's `statx` of it and its opening: strace stops ffkit
/// after its second `statx` in `out/sub` (the first checks the directory
/// opened, the second is `f000`'s), and the test renames a file from
/// outside the tree over `out/sub/f000`. The walk recorded `f000`'s mode,
/// mtime and inode (its hard-link group) from the `statx`, so bytes of
/// another inode are not that file: not cached (`changed while it was
/// stored`, one line), nothing stored, and the next call runs again.
#[test]
fn a_file_replaced_between_its_stat_and_its_opening_is_not_cached() {
    if !need("strace", "the swap at a chosen system call") {
        return;
    }
    let w = World::new();
    let secret = tempfile::tempdir().unwrap();
    a_tree_and_a_secret_beside(&w, secret.path());
    fs::write(w.path().join("other"), "another file\n").unwrap();
    let (child, cont) = stopped_at(&w, "out/sub", "statx", 2);
    fs::rename(w.path().join("other"), w.path().join("out/sub/f000")).unwrap();
    drop(cont);
    let o = child.wait_with_output().unwrap();
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "built\n");
    assert!(
        err.contains("not cached: out/sub/f000: changed while it was stored"),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| !l.is_empty()).count(), 1, "{err}");
    assert!(blobs(&w.cache()).is_empty(), "nothing stored");
    let o = run(&w, &["--output", "out"], BUILT).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(runs(&w), 2, "the first run was not cached");
    assert_exact_with_store(&w, "after the replaced file");
}

/// A restore opens each blob by its name in its fan directory
/// (`.store/XX`), each fan opened once per tree and kept: up to 256
/// descriptors. Under a low descriptor limit (`ulimit -n 64`, or 200) those
/// took every descriptor the files being made need, and every hit of a tree
/// whose blobs spread over the fans failed with exit 1 (`cannot create
/// ./.ffkit-restore-…/f: Too many open files`), the path unchanged, the
/// command not run: the cache was unusable. Now the fans kept open are
/// bounded by the limit (the rest are opened by path), so the hit restores
/// the whole tree, by the pool of threads (600 files) as by one (300).
#[test]
fn a_restore_under_a_low_descriptor_limit_keeps_only_the_fans_it_has_room_for() {
    for files in [600, 300] {
        let w = World::new();
        // Every file its own content: its blobs fall in most of the 256 fans.
        let script = format!(
            "echo run >> runs; rm -rf out; mkdir -p out/a out/b; i=0; while [ $i -lt {files} ]; do \
             echo $i > out/$((i % 2 == 0 ? 0 : 1))$i; i=$((i+1)); done; \
             mv out/0* out/a/ 2>/dev/null; echo made"
        );
        let o = run(&w, &["--output", "out"], &script).output().unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        assert_eq!(stderr_of(&o), "", "stored");
        let fans = fs::read_dir(w.cache().join(".store"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() == 2)
            .count();
        assert!(fans > 150, "{fans} fans used");
        let want = snapshot(&w.path().join("out"));
        for nofile in [64, 200] {
            remove_tree(&w.path().join("out"));
            let o = run_with_nofile(&w, nofile, &script);
            let err = stderr_of(&o);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{files} files, ulimit -n {nofile}: {err}"
            );
            assert_eq!(err, "", "{files} files, ulimit -n {nofile}");
            assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n");
            assert_eq!(runs(&w), 1, "{files} files, ulimit -n {nofile}: a hit");
            assert_eq!(
                snapshot(&w.path().join("out")),
                want,
                "{files} files, ulimit -n {nofile}: restored whole"
            );
        }
        assert_exact_with_store(&w, "after the hits");
    }
}

/// The same with the descriptors taken by the caller instead of a low
/// limit: `ulimit -n 1024` with 900 descriptors inherited open (a build
/// tool that leaks them). 256 kept fans on top of those took the rest, and
/// the hit failed with EMFILE (exit 1); a fan whose descriptor lands within
/// the reserve of the limit is not kept.
#[test]
fn a_restore_beside_many_inherited_descriptors_keeps_only_the_fans_it_has_room_for() {
    let w = World::new();
    let script = "echo run >> runs; rm -rf out; mkdir -p out/a out/b; i=0; while [ $i -lt 600 ]; do \
         echo $i > out/$((i % 2 == 0 ? 0 : 1))$i; i=$((i+1)); done; \
         mv out/0* out/a/ 2>/dev/null; echo made";
    let o = run(&w, &["--output", "out"], script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let want = snapshot(&w.path().join("out"));
    remove_tree(&w.path().join("out"));
    // bash opens descriptors 10..909 on /dev/null, then execs ffkit with them.
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.current_dir(w.path())
        .args([
            "-c",
            "ulimit -n 1024 && for ((i = 10; i < 910; i++)); do eval \"exec $i</dev/null\"; done && exec \"$@\"",
            "bash",
        ])
        .arg(bin())
        .args([
            "cache-run", "--ttl", "0", "--output", "out", "--", "sh", "-c", script,
        ]);
    let o = c.output().unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(err, "");
    assert_eq!(runs(&w), 1, "a hit");
    assert_eq!(snapshot(&w.path().join("out")), want, "restored whole");
}

// ---------------------------------------------------------------- FUSE

/// A world whose whole directory (cache dir, outputs, `runs`) is a bindfs
/// mount of a backing directory: a FUSE file system whose `renameat2`
/// refuses `RENAME_EXCHANGE` and `RENAME_NOREPLACE` (EINVAL), as sshfs and
/// NFS do. Fields drop in order: the mount goes first (also when the test
/// fails), then the world's and the backing's directories.
struct FuseWorld {
    _mount: Bindfs,
    w: World,
    _backing: tempfile::TempDir,
}

/// A bindfs mount, unmounted (lazily) on drop.
struct Bindfs(PathBuf);

impl Drop for Bindfs {
    fn drop(&mut self) {
        let lazy = |tool: &str, arg: &str| {
            Command::new(tool)
                .arg(arg)
                .arg(&self.0)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !lazy("fusermount3", "-uz") {
            lazy("umount", "-l");
        }
    }
}

/// A [`FuseWorld`], or `None` after a `SKIP:` line: no bindfs binary is a
/// [`skip`] (a failure on CI, which installs it); no usable `/dev/fuse` is
/// a visible SKIP everywhere (a CI machine may lack the device).
fn fuse_world(what: &str) -> Option<FuseWorld> {
    if !need("bindfs", what) {
        return None;
    }
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: /dev/fuse cannot be opened ({e}): {what} did not run"
        );
        return None;
    }
    let w = World::new();
    // The mount point empty (FUSE refuses another), `home` in the backing.
    fs::remove_dir(w.path().join("home")).unwrap();
    let backing = tempfile::tempdir().unwrap();
    fs::create_dir_all(backing.path().join("home")).unwrap();
    let o = Command::new("bindfs")
        .arg(backing.path())
        .arg(w.path())
        .output()
        .unwrap();
    if !o.status.success() {
        skip(&format!(
            "bindfs cannot mount ({}): {what} did not run",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
        return None;
    }
    let mount = Bindfs(w.path().to_path_buf());
    // What the tests are about: the mount refuses the exchange.
    let (a, b) = (w.path().join("probe-a"), w.path().join("probe-b"));
    fs::write(&a, "a").unwrap();
    fs::write(&b, "b").unwrap();
    let refused = rustix::fs::renameat_with(
        rustix::fs::CWD,
        &a,
        rustix::fs::CWD,
        &b,
        rustix::fs::RenameFlags::EXCHANGE,
    ) == Err(rustix::io::Errno::INVAL);
    fs::remove_file(&a).unwrap();
    fs::remove_file(&b).unwrap();
    if !refused {
        eprintln!("note: this bindfs exchanges names; the fallback is not what runs");
    }
    Some(FuseWorld {
        _mount: mount,
        w,
        _backing: backing,
    })
}

/// The `.ffkit-*` names beside the outputs.
fn ffkit_siblings(w: &World) -> Vec<String> {
    fs::read_dir(w.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ffkit"))
        .collect()
}

/// On a file system without `renameat2` flags every hit failed with exit 1
/// (`cannot rename out: Invalid argument` into an absent path, `cannot
/// replace out: …` over a tree). Now each restores the stored tree byte
/// exact over nothing, a tree, a file and an empty directory, with and
/// without `--link`, leaves nothing beside, and the index stays exact.
#[test]
fn on_fuse_a_hit_restores_byte_exact_over_nothing_a_tree_a_file_or_an_empty_dir() {
    let Some(fw) = fuse_world("cache-run --output on FUSE") else {
        return;
    };
    let w = &fw.w;
    let record = generate(&w.path().join("src"), 100);
    let out = w.path().join("out");
    assert_eq!(ok(&mut run(w, &["--output", "out"], COPY)), "built\n");
    let want = snapshot(&out);
    assert_tree(&out, &record, &want, "the command's tree");
    assert_exact_with_store(w, "after the store");
    type Make = fn(&Path);
    let before: [(&str, Make); 4] = [
        ("nothing", |_| {}),
        ("a tree", |p| {
            fs::create_dir_all(p.join("stray/deeper")).unwrap();
            fs::write(p.join("stray/deeper/x"), "x").unwrap();
        }),
        ("a file", |p| fs::write(p, "a file").unwrap()),
        ("an empty dir", |p| fs::create_dir(p).unwrap()),
    ];
    for (what, make) in before {
        remove_tree(&out);
        make(&out);
        let o = run(w, &["--output", "out"], COPY).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "over {what}: {}", stderr_of(&o));
        assert_tree(&out, &record, &want, &format!("restored over {what}"));
        assert!(
            ffkit_siblings(w).is_empty(),
            "over {what}: {:?}",
            ffkit_siblings(w)
        );
    }
    // The hit over the tree it restored itself, and --link (hard links
    // into the store) over it.
    ok(&mut run(w, &["--output", "out"], COPY));
    assert_tree(&out, &record, &want, "restored over itself");
    ok(&mut run(w, &["--output", "out", "--link"], COPY));
    assert_eq!(manifest(&out).len(), record.len(), "--link");
    for (p, item) in &want {
        if let Item::File { content, .. } = item {
            assert_eq!(&fs::read(out.join(p)).unwrap(), content, "--link: {p}");
        }
    }
    assert!(ffkit_siblings(w).is_empty(), "{:?}", ffkit_siblings(w));
    assert_eq!(runs(w), 1, "every call after the first is a hit");
    assert_exact_with_store(w, "after the hits");
    let o = w.cmd("cache-size").arg("--verify").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
}

/// The two-rename swap killed between its renames (strace delivers
/// SIGKILL as the second `renameat` naming `out` starts): the path is
/// absent, the old tree aside, never half of either; the next restore
/// puts the whole tree in and removes what the killed one left.
#[test]
fn on_fuse_a_restore_killed_between_its_two_renames_never_leaves_half_a_tree() {
    if !need("strace", "SIGKILL between the two renames on FUSE") {
        return;
    }
    let Some(fw) = fuse_world("SIGKILL between the two renames on FUSE") else {
        return;
    };
    let w = &fw.w;
    let record = generate(&w.path().join("src"), 100);
    let out = w.path().join("out");
    ok(&mut run(w, &["--output", "out"], COPY));
    let want = snapshot(&out);
    remove_tree(&out);
    fs::create_dir_all(out.join("old")).unwrap();
    fs::write(out.join("old/marker"), "old").unwrap();
    let old = snapshot(&out);
    let trace = w.path().join("trace");
    let mut c = Command::new("strace");
    w.isolate(&mut c);
    c.args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args(["-P", "out", "-e", "trace=renameat,renameat2"])
        .args(["-e", "inject=renameat:signal=SIGKILL:when=2"])
        .arg(bin())
        .args(["cache-run", "--ttl", "0", "--output", "out", "--"])
        .args(["sh", "-c", COPY]);
    let o = c.output().unwrap();
    let t = fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        t.contains("killed by SIGKILL"),
        "not killed: {t}\n{}",
        stderr_of(&o)
    );
    // Between the renames: nothing at the path, the old tree whole aside.
    assert!(fs::symlink_metadata(&out).is_err(), "{t}");
    let aside: Vec<_> = ffkit_siblings(w)
        .into_iter()
        .map(|n| w.path().join(n))
        .filter(|p| snapshot(p) == old)
        .collect();
    assert_eq!(aside.len(), 1, "the old tree whole aside: {t}");
    // The next restore: whole, and what the killed one left is gone.
    ok(&mut run(w, &["--output", "out"], COPY));
    assert_tree(&out, &record, &want, "the restore after the kill");
    assert!(ffkit_siblings(w).is_empty(), "{:?}", ffkit_siblings(w));
    assert_eq!(runs(w), 1, "restores ran nothing");
    assert_exact_with_store(w, "after the kill");
}

/// A kernel lock taken through a bindfs mount is exclusive between the
/// processes that take it through that mount (bindfs without lock
/// forwarding: the kernel's FUSE inode holds it).
#[test]
fn on_fuse_a_lock_through_the_mount_is_exclusive_between_processes() {
    let Some(fw) = fuse_world("locks on FUSE") else {
        return;
    };
    let w = &fw.w;
    let mut acquire = w.cmd("lock-acquire");
    acquire.args(["./L", "--", "sh", "-c", "echo locked; read x || :"]);
    let mut holder = crate::util::spawn_locked(acquire);
    let o = w
        .cmd("lock-acquire")
        .args(["-w", "0", "./L", "--", "echo", "second"])
        .output()
        .unwrap();
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert_eq!(o.status.code(), Some(5), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
    let o = w
        .cmd("lock-acquire")
        .args(["-w", "0", "./L", "--", "echo", "free"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "free\n",
        "{}",
        stderr_of(&o)
    );
}

/// The removal of a replaced chain deeper than the descriptor limit moves
/// what it cannot open up into the tree's top with `RENAME_NOREPLACE`,
/// which FUSE refuses (EINVAL): the chain was left behind and named on
/// stderr. Now a plain rename there, and the chain goes whole.
#[test]
fn on_fuse_a_replaced_chain_deeper_than_the_descriptor_limit_is_removed_whole() {
    let Some(fw) = fuse_world("removal of a deep chain on FUSE") else {
        return;
    };
    let w = &fw.w;
    let chain = "echo run >> runs; rm -rf out; mkdir -p out/$(printf 'b/%.0s' $(seq 100)); \
        echo deep > out/$(printf 'b/%.0s' $(seq 100))f; echo made";
    let o = run_with_nofile(w, 64, chain);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(stderr_of(&o), "", "stored");
    let before = snapshot(&w.path().join("out"));
    let o = run_with_nofile(w, 64, chain);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(stderr_of(&o), "", "nothing left behind");
    assert_eq!(runs(w), 1, "a hit");
    assert_eq!(snapshot(&w.path().join("out")), before, "restored whole");
    assert!(ffkit_siblings(w).is_empty(), "{:?}", ffkit_siblings(w));
    assert_exact_with_store(w, "after the chain");
}

/// A replaced tree that cannot be removed (a mount inside it) is named on
/// stderr where it is: after the two renames that is the name it was moved
/// aside to, not the new tree's former temp name (which named a path
/// that no longer existed).
#[test]
fn on_fuse_a_replaced_tree_left_behind_is_named_where_it_is() {
    if !crate::util::need_root("not root: the mount-inside-a-tree test needs a bind mount") {
        return;
    }
    let Some(fw) = fuse_world("a tree left behind on FUSE") else {
        return;
    };
    let w = &fw.w;
    // Dropped before the bindfs mount: the bind mount inside it first.
    let _inner = Mounts(w.path().to_path_buf());
    let precious = tempfile::tempdir().unwrap();
    fs::write(precious.path().join("data"), "keep").unwrap();
    let script = "echo run >> runs; mkdir -p out; echo new > out/f";
    ok(&mut run(w, &["--output", "out"], script));
    fs::create_dir(w.path().join("out/mnt")).unwrap();
    let o = Command::new("mount")
        .arg("--bind")
        .arg(precious.path())
        .arg(w.path().join("out/mnt"))
        .output()
        .unwrap();
    if !o.status.success() {
        skip(&format!("cannot bind-mount: {}", stderr_of(&o).trim()));
        return;
    }
    let o = run(w, &["--output", "out"], script).output().unwrap();
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(runs(w), 1, "a hit");
    assert_eq!(fs::read_to_string(w.path().join("out/f")).unwrap(), "new\n");
    assert_eq!(
        fs::read_to_string(precious.path().join("data")).unwrap(),
        "keep"
    );
    let named = err
        .strip_prefix("ffkit cache-run: ")
        .and_then(|l| l.split(": the replaced tree").next())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        w.path().join(named).join("mnt/data").exists(),
        "{named} holds the tree left behind: {err}"
    );
}

/// Attack finding: the pool of threads making a tree's files (two per CPU,
/// at most 8) was sized by the CPUs alone. With few descriptors left (a
/// hit under `ulimit -n 12`, or under 1024 beside descriptors 10..1015
/// inherited from the caller, which leaves 3..9 free: holes the kept fans
/// took first) the threads took the descriptors their files needed and the
/// hit failed with exit 1 (`cannot create ./.ffkit-restore-…/f: Too many
/// open files`), where one thread restores the tree. Now the pool and the
/// kept fans are sized by the descriptors actually free (`/proc/self/fd`
/// counted once per tree), and the hit restores it whole.
#[test]
fn a_restore_with_a_dozen_descriptors_free_sizes_its_pool_to_them() {
    let w = World::new();
    let script = "echo run >> runs; rm -rf out; i=0; while [ $i -lt 700 ]; do \
         d=out/d$((i % 40)); mkdir -p $d; echo $i > $d/f$i; i=$((i+1)); done; echo made";
    let o = run(&w, &["--output", "out"], script).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let want = snapshot(&w.path().join("out"));
    for (case, prelude) in [
        ("ulimit -n 12", "ulimit -n 12"),
        (
            "1006 inherited",
            "ulimit -n 1024 && for ((i = 10; i < 1016; i++)); do eval \"exec $i</dev/null\"; done",
        ),
    ] {
        remove_tree(&w.path().join("out"));
        let o = run_after(&w, prelude, script);
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(0), "{case}: {err}");
        assert_eq!(err, "", "{case}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n", "{case}");
        assert_eq!(runs(&w), 1, "{case}: a hit");
        assert_eq!(
            snapshot(&w.path().join("out")),
            want,
            "{case}: restored whole"
        );
    }
    assert_exact_with_store(&w, "after the hits");
}

/// A world owned by nobody (65534), whose files nobody can reach, when
/// root can drop its privileges with `setpriv`; `None` (skipped) if not.
fn nobodys_world() -> Option<World> {
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        skip("cannot drop privileges with setpriv");
        return None;
    }
    let w = World::new();
    let mut p = w.path().to_path_buf();
    while let Some(parent) = p.parent() {
        if fs::metadata(parent).is_ok_and(|m| m.mode() & 0o001 == 0) {
            skip("a parent of the temp dir is not searchable by other users");
            return None;
        }
        p = parent.to_path_buf();
    }
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(w.path())
        .status()
        .unwrap();
    assert!(chown.success());
    Some(w)
}

/// Attack finding: a restore makes the missing parents of its path with
/// the umask's mode, so under `umask 0777` (or `0277`) a user who is not
/// root got `d---------` parents it could not enter: every hit of
/// `--output p/q/out` without `p` failed with exit 3 (`cannot create p/q:
/// Permission denied`), where the command's own `mkdir -p p/q/out` works
/// (POSIX gives the directories `mkdir -p` makes on the way their owner's
/// write and search bits). Now the parents a restore makes are the
/// owner's to enter, read and write.
#[test]
fn a_restore_under_a_umask_without_owner_bits_makes_parents_its_owner_can_enter() {
    if !crate::util::need_root("not root: the test runs ffkit as nobody") {
        return;
    }
    let Some(w) = nobodys_world() else {
        return;
    };
    let script = "echo run >> runs; mkdir -p p/q/out; echo v > p/q/out/f; echo made";
    let call = |umask: &str, link: bool| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(format!("umask {umask}; exec \"$@\""))
        .arg("sh")
        .arg(bin());
        w.isolate(&mut c);
        c.current_dir(w.path())
            .args(["cache-run", "--ttl", "0", "--output", "p/q/out"]);
        if link {
            c.arg("--link");
        }
        c.args(["--", "sh", "-c", script]);
        c.output().unwrap()
    };
    let o = call("022", false);
    if !o.status.success() {
        skip(&format!(
            "nobody cannot run the test binary: {}",
            stderr_of(&o)
        ));
        return;
    }
    for (umask, link) in [("0777", false), ("0277", false), ("0777", true)] {
        let what = format!("umask {umask}, link {link}");
        fs::remove_dir_all(w.path().join("p")).unwrap();
        let o = call(umask, link);
        assert!(o.status.success(), "{what}: {}", stderr_of(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "made\n", "{what}");
        assert_eq!(runs(&w), 1, "{what}: a hit");
        assert_eq!(
            fs::read(w.path().join("p/q/out/f")).unwrap(),
            b"v\n",
            "{what}"
        );
        for d in ["p", "p/q"] {
            let mode = fs::metadata(w.path().join(d)).unwrap().mode();
            assert_eq!(mode & 0o700, 0o700, "{what}: {d} is {mode:o}");
        }
    }
}

/// Attack finding: a hit that fails (here for want of descriptors, `ulimit
/// -n 8`: exit 1) changes nothing, the parent directories a restore makes
/// for a path included: `--output p/q/out` with no `p` left `p/q` behind.
/// A directory that stood there before stays.
#[test]
fn a_failed_restore_leaves_no_parent_directory_it_made() {
    let w = World::new();
    let script = "mkdir -p p/q/out/x; echo 1 > p/q/out/x/f";
    let call = |prelude: &str| {
        let mut c = Command::new("bash");
        w.isolate(&mut c);
        c.current_dir(w.path())
            .args(["-c", &format!("{prelude} && exec \"$@\""), "bash"])
            .arg(bin())
            .args(["cache-run", "--ttl", "0", "--output", "p/q/out", "--"])
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    };
    let o = call("true");
    assert!(o.status.success(), "{}", stderr_of(&o));
    remove_tree(&w.path().join("p"));
    let o = call("ulimit -n 8");
    assert_eq!(o.status.code(), Some(1), "{}", stderr_of(&o));
    assert!(!w.path().join("p").exists(), "p left behind");
    fs::create_dir(w.path().join("p")).unwrap();
    let o = call("ulimit -n 8");
    assert_eq!(o.status.code(), Some(1), "{}", stderr_of(&o));
    assert!(w.path().join("p").is_dir(), "p removed");
    assert!(!w.path().join("p/q").exists(), "p/q left behind");
}
