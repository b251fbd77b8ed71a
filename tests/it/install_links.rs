//! `install-links`: links every applet, idempotently, refuses to replace
//! what is not its own, removes only its own, and places the generated man
//! pages and completions under a prefix.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::util::*;

/// The applets install-links links by default.
fn linked() -> Vec<&'static str> {
    let names = ffkit::cli::install_links::default_links();
    assert!(names.contains(&"cache-size") && !names.contains(&"install-links"));
    assert!(!names.contains(&"init") && !names.contains(&"flock"));
    names
}

fn install(w: &World, dir: &Path) -> std::process::Command {
    let mut c = w.cmd("install-links");
    c.arg("--dir").arg(dir);
    c
}

#[test]
fn links_every_applet_and_the_links_work() {
    let w = World::new();
    let dir = w.path().join("links");
    install(&w, &dir).assert().success();
    for name in linked() {
        let target = fs::read_link(dir.join(name)).unwrap();
        assert_eq!(
            fs::canonicalize(&target).unwrap(),
            fs::canonicalize(bin()).unwrap()
        );
    }
    assert!(!dir.join("install-links").exists());
    let mut c = std::process::Command::new(dir.join("cache-write"));
    w.isolate(&mut c);
    c.args(["k", "v"]).assert().success();
    let mut c = std::process::Command::new(dir.join("cache-size"));
    w.isolate(&mut c);
    c.assert()
        .success()
        .stdout(predicates::str::is_match(r"^\d+\n$").unwrap());
}

#[test]
fn second_run_changes_nothing() {
    let w = World::new();
    let dir = w.path().join("links");
    install(&w, &dir).assert().success();
    let before: Vec<PathBuf> = linked()
        .iter()
        .map(|n| fs::read_link(dir.join(n)).unwrap())
        .collect();
    let out = install(&w, &dir).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 created, 0 updated"), "{text}");
    let after: Vec<PathBuf> = linked()
        .iter()
        .map(|n| fs::read_link(dir.join(n)).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn a_foreign_file_is_a_conflict_and_nothing_changes_unless_forced() {
    let w = World::new();
    let dir = w.path().join("links");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("cache-read"), "#!/bin/sh\necho mine\n").unwrap();
    let out = install(&w, &dir).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = stderr_of(&out);
    assert!(err.starts_with("ffkit install-links: "), "{err}");
    assert!(
        err.contains("cache-read") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !dir.join("cache-size").exists(),
        "a conflict must change nothing"
    );
    assert_eq!(
        fs::read_to_string(dir.join("cache-read")).unwrap(),
        "#!/bin/sh\necho mine\n"
    );

    install(&w, &dir).arg("--force").assert().success();
    assert!(
        fs::symlink_metadata(dir.join("cache-read"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_directory_in_the_way_is_never_replaced() {
    let w = World::new();
    let dir = w.path().join("links");
    fs::create_dir_all(dir.join("cache-size")).unwrap();
    // The hint names what would help: --force never replaces a directory,
    // so it is not offered for one (it was: "use --force to replace files").
    let err = |c: &mut std::process::Command| {
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(5));
        stderr_of(&out)
    };
    let plain = err(&mut install(&w, &dir));
    assert!(
        plain.ends_with("(directories are never replaced)\n") && !plain.contains("--force"),
        "{plain}"
    );
    let forced = err(install(&w, &dir).arg("--force"));
    assert!(
        forced.ends_with("(directories are never replaced)\n"),
        "{forced}"
    );
    assert!(dir.join("cache-size").is_dir());
    // A file and a directory in the way: both hints.
    fs::write(dir.join("cache-read"), "mine\n").unwrap();
    let both = err(&mut install(&w, &dir));
    assert!(
        both.contains("use --force to replace files; directories are never replaced"),
        "{both}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("cache-read")).unwrap(),
        "mine\n"
    );
}

#[test]
fn a_link_to_another_ffkit_build_is_updated() {
    let w = World::new();
    let dir = w.path().join("links");
    fs::create_dir_all(&dir).unwrap();
    symlink("/old/install/ffkit", dir.join("cache-size")).unwrap();
    symlink("/usr/bin/somethingelse", dir.join("cache-write")).unwrap();
    install(&w, &dir).assert().code(5);
    fs::remove_file(dir.join("cache-write")).unwrap();
    install(&w, &dir).assert().success();
    let t = fs::read_link(dir.join("cache-size")).unwrap();
    assert_eq!(
        fs::canonicalize(t).unwrap(),
        fs::canonicalize(bin()).unwrap()
    );
}

#[test]
fn remove_takes_only_ffkits_own_links() {
    let w = World::new();
    let dir = w.path().join("links");
    install(&w, &dir).assert().success();
    fs::remove_file(dir.join("cache-read")).unwrap();
    fs::write(dir.join("cache-read"), "mine").unwrap();
    fs::write(dir.join("unrelated"), "x").unwrap();
    let out = install(&w, &dir).arg("--remove").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("left") && stderr_of(&out).contains("cache-read"));
    for name in linked().into_iter().filter(|n| *n != "cache-read") {
        assert!(
            fs::symlink_metadata(dir.join(name)).is_err(),
            "{name} not removed"
        );
    }
    assert_eq!(fs::read_to_string(dir.join("cache-read")).unwrap(), "mine");
    assert!(dir.join("unrelated").exists());
}

#[test]
fn default_dir_is_next_to_the_binary_with_relative_links() {
    let w = World::new();
    let bindir = w.path().join("prefix/bin");
    fs::create_dir_all(&bindir).unwrap();
    let exe = bindir.join("ffkit");
    fs::copy(bin(), &exe).unwrap();
    // Another test thread's fork may briefly inherit the copy's write
    // descriptor, making exec fail with ETXTBSY: retry that, nothing else.
    let out = (0..100)
        .find_map(|_| {
            let mut c = std::process::Command::new(&exe);
            w.isolate(&mut c);
            match c.args(["install-links", "-q"]).output() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                }
                r => Some(r.unwrap()),
            }
        })
        .expect("exec kept failing with ETXTBSY");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
    for name in linked() {
        assert_eq!(
            fs::read_link(bindir.join(name)).unwrap(),
            PathBuf::from("ffkit")
        );
    }
}

#[test]
fn prefix_places_the_committed_man_pages_and_completions_and_remove_takes_them_back() {
    let w = World::new();
    let dir = w.path().join("links");
    let prefix = w.path().join("usr");
    install(&w, &dir)
        .arg("--prefix")
        .arg(&prefix)
        .assert()
        .success();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let share = prefix.join("share");
    let mut names: Vec<&str> = linked();
    names.push("ffkit");
    for name in &names {
        for (committed, installed) in [
            (format!("man/{name}.1"), format!("man/man1/{name}.1")),
            (
                format!("completions/bash/{name}"),
                format!("bash-completion/completions/{name}"),
            ),
            (
                format!("completions/zsh/_{name}"),
                format!("zsh/site-functions/_{name}"),
            ),
            (
                format!("completions/fish/{name}.fish"),
                format!("fish/vendor_completions.d/{name}.fish"),
            ),
        ] {
            assert_eq!(
                fs::read(share.join(&installed)).unwrap(),
                fs::read(repo.join(&committed)).unwrap(),
                "{installed}"
            );
        }
    }
    // ffkit-only applets have ffkit-NAME pages and no completions of their own.
    assert!(share.join("man/man1/ffkit-install-links.1").exists());
    assert!(share.join("man/man1/ffkit-init.1").exists());
    assert!(
        !share
            .join("bash-completion/completions/install-links")
            .exists()
    );
    // Every page ffkit(1) names is installed, the persona's ffkit-flock.1
    // too (its name shadows nothing); but no flock.1 and no flock
    // completion, which would replace the system tool's.
    let root_page = fs::read_to_string(share.join("man/man1/ffkit.1")).unwrap();
    let see_also = root_page.rsplit(".SH \"SEE ALSO\"").next().unwrap();
    for page in see_also.split(|c: char| c == ',' || c.is_whitespace()) {
        let Some(name) = page.strip_suffix("(1)") else {
            continue;
        };
        let name = name.replace("\\-", "-");
        assert!(
            share.join(format!("man/man1/{name}.1")).exists(),
            "ffkit(1) names {name}(1), which is not installed"
        );
    }
    assert!(see_also.contains("ffkit\\-flock(1)"), "{see_also}");
    assert!(!share.join("man/man1/flock.1").exists());
    assert!(!share.join("bash-completion/completions/flock").exists());

    // A page a person edited is theirs now: --remove leaves it.
    fs::write(share.join("man/man1/cache-size.1"), "edited").unwrap();
    install(&w, &dir)
        .arg("--remove")
        .arg("--prefix")
        .arg(&prefix)
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(share.join("man/man1/cache-size.1")).unwrap(),
        "edited"
    );
    assert!(!share.join("man/man1/ffkit.1").exists());
    assert!(!share.join("zsh/site-functions/_ffkit").exists());
}

#[test]
fn an_unknown_persona_is_a_usage_error() {
    let w = World::new();
    let dir = w.path().join("links");
    install(&w, &dir)
        .args(["--persona", "cache-size"])
        .assert()
        .code(2);
    assert!(!dir.exists());
}

#[test]
fn a_persona_is_linked_only_when_asked() {
    let w = World::new();
    let dir = w.path().join("links");
    let prefix = w.path().join("usr");
    install(&w, &dir).assert().success();
    assert!(fs::symlink_metadata(dir.join("flock")).is_err());
    install(&w, &dir)
        .args(["--persona", "flock", "--prefix"])
        .arg(&prefix)
        .assert()
        .success();
    assert!(
        fs::symlink_metadata(dir.join("flock"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(prefix.join("share/man/man1/ffkit-flock.1").exists());
    assert!(
        prefix
            .join("share/bash-completion/completions/flock")
            .exists()
    );
    // --remove takes personas too.
    install(&w, &dir).arg("--remove").assert().success();
    assert!(fs::symlink_metadata(dir.join("flock")).is_err());
}

#[test]
fn prefix_puts_the_links_in_its_bin_dir_personas_too() {
    let w = World::new();
    let prefix = w.path().join("usr");
    w.cmd("install-links")
        .args(["--persona", "flock", "--prefix"])
        .arg(&prefix)
        .assert()
        .success();
    for name in linked().into_iter().chain(["flock"]) {
        let link = prefix.join("bin").join(name);
        let target = fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
        assert_eq!(
            fs::canonicalize(prefix.join("bin").join(&target)).unwrap(),
            fs::canonicalize(bin()).unwrap(),
            "{name}"
        );
    }
    w.cmd("install-links")
        .args(["--remove", "--prefix"])
        .arg(&prefix)
        .assert()
        .success();
    assert!(fs::symlink_metadata(prefix.join("bin/flock")).is_err());
    assert!(fs::symlink_metadata(prefix.join("bin/cache-size")).is_err());
}

/// The Debian package (`scripts/build-deb.sh`, from this test build's
/// binary and builtin): unpacked into a scratch root, its binary runs, its
/// links point at it, `man -l` renders its gzipped pages, the shell loader
/// finds its builtin in /usr/lib/ffkit, and the completions are in Debian's
/// places. (`.ci/run` builds the release package and runs lintian on it.)
#[test]
fn the_debian_package_unpacks_and_runs_from_a_scratch_root() {
    use std::process::Command;
    if !need("dpkg-deb", "the Debian package test")
        || !need("dpkg-shlibdeps", "the Debian package test")
    {
        return;
    }
    let w = World::new();
    let lib = crate::builtin::library(&bin());
    let out_dir = w.path().join("deb");
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-deb.sh"))
        .arg("--bin")
        .arg(bin())
        .arg("--builtin")
        .arg(&lib)
        .arg("--out")
        .arg(&out_dir)
        .args(["--compress", "gzip"])
        .output()
        .unwrap();
    assert!(out.status.success(), "build-deb: {}", stderr_of(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let deb = PathBuf::from(stdout.lines().last().unwrap());
    assert!(deb.starts_with(&out_dir) && deb.is_file(), "{stdout}");

    let field = |f: &str| {
        let o = Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg(f)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "ffkit");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));

    let root = w.path().join("root");
    let x = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", stderr_of(&x));
    let usr = root.join("usr");
    let ffkit = usr.join("bin/ffkit");

    // The binary and its links.
    let mut c = Command::new(&ffkit);
    w.isolate(&mut c);
    let v = c.arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout),
        format!("ffkit {}\n", env!("CARGO_PKG_VERSION"))
    );
    for name in linked() {
        assert_eq!(
            fs::read_link(usr.join("bin").join(name)).unwrap(),
            Path::new("ffkit"),
            "{name}"
        );
    }
    // Never util-linux's flock, nor its completions.
    assert!(fs::symlink_metadata(usr.join("bin/flock")).is_err());
    assert!(!usr.join("share/bash-completion/completions/flock").exists());

    // Every page, gzipped, each one ffkit(1) names among them; man renders one.
    let man1 = usr.join("share/man/man1");
    let pages: Vec<String> = fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(pages.iter().all(|p| p.ends_with(".1.gz")), "{pages:?}");
    for a in ffkit::cli::APPLETS {
        assert!(
            pages.contains(&format!("{}.1.gz", a.man_page())),
            "{} not in {pages:?}",
            a.man_page()
        );
    }
    if need("man", "man -l of the packaged page") {
        let m = Command::new("man")
            .arg("-l")
            .arg(man1.join("ffkit.1.gz"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&m.stdout);
        assert!(
            m.status.success() && text.contains("SEE ALSO") && text.contains("ffkit-flock(1)"),
            "{text}"
        );
    }

    // Completions in Debian's places.
    for f in [
        "share/bash-completion/completions/ffkit",
        "share/bash-completion/completions/perf-metrics",
        "share/zsh/vendor-completions/_ffkit",
        "share/zsh/vendor-completions/_cache-size",
        "share/fish/vendor_completions.d/ffkit.fish",
    ] {
        assert!(usr.join(f).is_file(), "{f}");
    }
    assert!(!usr.join("share/zsh/site-functions").exists());
    assert!(usr.join("share/doc/ffkit/copyright").is_file());
    assert!(usr.join("share/doc/ffkit/changelog.Debian.gz").is_file());

    // The builtin, found by the loader beside the packaged binary.
    assert!(usr.join("lib/ffkit/libffkit_builtin.so").is_file());
    let mut b = Command::new("bash");
    w.isolate(&mut b);
    b.arg("-c")
        .arg(r#"eval "$("$1" init bash)" && type -t ffkit && ffkit cache-write k v && ffkit cache-read k"#)
        .arg("bash")
        .arg(&ffkit);
    let o = b.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "builtin\nv",
        "{}",
        stderr_of(&o)
    );
}

/// Every file (not directory) under `root`, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `--remove --prefix P` takes back everything an install placed, by its
/// manifest (`P/lib/ffkit/install-links.list`), the binary `--bin` copied
/// included, whether or not `--remove` is given `--bin`. Before, the copied
/// `P/bin/ffkit` was left behind. A file changed since it was placed is
/// kept, with one line; a file that was already there, identical, before
/// the install (a distribution package's) was not placed by us and stays.
#[test]
fn remove_takes_back_what_the_manifest_lists_and_keeps_what_changed() {
    let w = World::new();
    let prefix = w.path().join("usr");
    let install = |args: &[&str]| {
        let o = w
            .cmd("install-links")
            .args(args)
            .arg("--prefix")
            .arg(&prefix)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr_of(&o));
        o
    };
    install(&["--bin"]);
    assert!(prefix.join("bin/ffkit").is_file());
    // Idempotent: a second run keeps every entry in the manifest.
    install(&["--bin"]);
    let o = install(&["--remove"]);
    assert!(stderr_of(&o).is_empty(), "{}", stderr_of(&o));
    assert_eq!(
        files_under(&prefix),
        Vec::<PathBuf>::new(),
        "all of ours gone"
    );

    // A page edited after the install is kept, named once; one that was
    // there before, identical, was not ours.
    let page = prefix.join("share/man/man1/ffkit.1");
    let theirs = prefix.join("share/man/man1/cache-size.1");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    fs::copy(repo.join("man/cache-size.1"), &theirs).unwrap();
    install(&["--bin"]);
    fs::write(&page, "edited").unwrap();
    let o = install(&["--remove"]);
    let err = stderr_of(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "left {} alone: changed since install-links placed it",
            page.display()
        )),
        "{err}"
    );
    assert_eq!(
        files_under(&prefix),
        vec![page.clone(), theirs.clone()]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(fs::read_to_string(&page).unwrap(), "edited");
    assert_eq!(
        fs::read(&theirs).unwrap(),
        fs::read(repo.join("man/cache-size.1")).unwrap()
    );
}

/// The manifest is a file anyone who can write the prefix can edit: a line
/// naming a path outside the prefix (absolute, through `..`, or through a
/// symlinked directory inside it), or a list that is a symlink to another
/// list, never makes `--remove` delete what install-links did not place.
#[test]
fn remove_never_follows_a_tampered_manifest_out_of_the_prefix() {
    use std::os::unix::fs::symlink;
    let w = World::new();
    let prefix = w.path().join("usr");
    let victim = w.path().join("victim");
    fs::create_dir_all(&victim).unwrap();
    let run = |args: &[&str]| {
        w.cmd("install-links")
            .args(args)
            .arg("--prefix")
            .arg(&prefix)
            .output()
            .unwrap()
    };
    assert!(run(&[]).status.success());
    let list = prefix.join("lib/ffkit/install-links.list");
    let text = fs::read_to_string(&list).unwrap();
    // A copy of a placed page, listed with its true hash, outside the prefix.
    let (hash, page) = text
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0] == "file").then(|| (f[1].to_string(), f[2].to_string()))
        })
        .expect("a file entry");
    fs::copy(prefix.join(&page), victim.join("copy")).unwrap();
    symlink("/etc/passwd", victim.join("important")).unwrap();
    fs::create_dir_all(prefix.join("share")).unwrap();
    symlink(&victim, prefix.join("share/esc")).unwrap();
    let rel_up = "share/../../victim/copy";
    let extra = format!(
        "link\t/etc/passwd\t{}\nfile\t{hash}\t{}\nfile\t{hash}\t{rel_up}\nfile\t{hash}\tshare/esc/copy\n",
        victim.join("important").display(),
        victim.join("copy").display(),
    );
    fs::write(&list, format!("{text}{extra}")).unwrap();
    let o = run(&["--remove"]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(
        victim.join("copy").is_file(),
        "a file outside the prefix was removed"
    );
    assert!(
        fs::symlink_metadata(victim.join("important")).is_ok(),
        "a link outside the prefix was removed"
    );

    // A list that is a symlink to another prefix's list: refused whole.
    let other = w.path().join("other");
    let o = w
        .cmd("install-links")
        .arg("--prefix")
        .arg(&other)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(run(&[]).status.success());
    fs::remove_file(&list).unwrap();
    symlink(other.join("lib/ffkit/install-links.list"), &list).unwrap();
    let o = run(&["--remove"]);
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not a regular file"), "{err}");
    assert!(
        other.join("bin/cache-size").exists(),
        "another prefix's links removed"
    );
}
