//! The cache's drop-in rules (docs/cache.md): eviction from the
//! walk's totals with an exact index afterwards, the cache dir's ownership
//! and mode rules, `--dir FILE`, relative `XDG_CACHE_HOME`, TTLs that last
//! at least their length, a dir lock that follows `LOCK_TIMEOUT`, a relative
//! `CACHE_PERF_METRICS`, and `FF_DEBUG` lines. Real ffkit processes; the
//! oracle is `util::oracle`, a walk made without ffkit.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr_of(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn index_bytes(w: &World) -> u64 {
    let text = w.index().expect("an index after eviction");
    text.trim().parse().expect("a number in .size-index")
}

/// Ten entries of one size (fixed clock, keys of one length); returns it.
fn ten_entries(w: &World) -> u64 {
    for i in 0..10 {
        w.cmd("cache-write")
            .env("FFKIT_TEST_NOW", "1700000000")
            .args([&format!("k{i}"), "0123456789"])
            .assert()
            .success();
    }
    let (bytes, entries) = oracle(&w.cache());
    assert_eq!(entries, 10);
    bytes / 10
}

#[test]
fn eviction_counts_a_file_dropped_in_by_hand_and_leaves_the_index_exact() {
    let w = World::new();
    ten_entries(&w);
    fs::write(w.cache().join("dropped"), vec![b'x'; 100_000]).unwrap();
    let out = w
        .cmd("cache-evict")
        .args(["--max-bytes", "2500", "--json"])
        .output()
        .unwrap();
    let r = json(&out);
    let (bytes, _) = oracle(&w.cache());
    assert_eq!(r["after"]["bytes"], bytes, "report: {r}");
    assert!(bytes <= 2500, "{bytes} bytes left on disk: {r}");
    assert_eq!(index_bytes(&w), bytes);
}

#[test]
fn eviction_after_an_rm_removes_only_what_is_needed() {
    let w = World::new();
    let each = ten_entries(&w);
    fs::remove_file(w.cache().join("k3")).unwrap();
    fs::remove_file(w.cache().join("k3.meta")).unwrap();
    // Nine entries on disk; five fit. The index still counts ten.
    let out = w
        .cmd("cache-evict")
        .args(["--max-bytes", &(5 * each).to_string(), "--json"])
        .output()
        .unwrap();
    let r = json(&out);
    let removed = r["removed"].as_array().unwrap().len();
    assert_eq!(removed, 4, "report: {r}");
    let (bytes, entries) = oracle(&w.cache());
    assert_eq!((bytes, entries), (5 * each, 5));
    assert_eq!(index_bytes(&w), bytes);
}

#[test]
fn evict_all_after_drift_leaves_an_exact_empty_index() {
    let w = World::new();
    ten_entries(&w);
    fs::remove_file(w.cache().join("k1")).unwrap();
    let out = w
        .cmd("cache-evict")
        .args(["--all", "--json"])
        .output()
        .unwrap();
    let r = json(&out);
    assert_eq!(oracle(&w.cache()), (0, 0));
    assert_eq!(r["after"]["bytes"], 0, "{r}");
    assert_eq!(index_bytes(&w), 0);
    assert_eq!(entry_count(&w.cache()), Some(0));
}

/// Every cache applet, given a file as its dir: "not a directory", exit 3.
#[test]
fn a_file_as_the_cache_dir_is_not_a_directory_everywhere() {
    let w = World::new();
    let file = w.path().join("plain-file");
    fs::write(&file, "x").unwrap();
    let f = file.to_str().unwrap();
    let calls: Vec<Vec<&str>> = vec![
        vec!["cache-size", "--dir", f],
        vec!["cache-size", "--dir", f, "--verify"],
        vec!["cache-size", "--dir", f, "--rebuild"],
        vec!["cache-write", "--dir", f, "k", "v"],
        vec!["cache-read", "--dir", f, "k"],
        vec!["cache-evict", "--dir", f, "--all"],
        vec!["cache-batch", "--dir", f, "--read", "k"],
    ];
    for args in calls {
        let out = w.cmd(args[0]).args(&args[1..]).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("not a directory"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // FFKIT_CACHE_DIR too.
    let out = w
        .cmd("cache-size")
        .env("FFKIT_CACHE_DIR", &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
}

/// A dir others can write is refused, named or picked; exit 3, one line
/// that says why and what to do.
#[test]
fn a_cache_dir_writable_by_others_is_refused() {
    let w = World::new();
    let shared = w.path().join("shared");
    fs::create_dir(&shared).unwrap();
    w.cmd("cache-write")
        .args(["--dir", shared.to_str().unwrap(), "k", "planted"])
        .assert()
        .success();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let by_flag = w
        .cmd("cache-read")
        .args(["--dir", shared.to_str().unwrap(), "k"])
        .output()
        .unwrap();
    let by_env = w
        .cmd("cache-write")
        .env("FFKIT_CACHE_DIR", &shared)
        .args(["k", "ours"])
        .output()
        .unwrap();
    // Picked by ffkit: $XDG_CACHE_HOME/ffkit.
    let xdg = w.path().join("xdg");
    fs::create_dir_all(xdg.join("ffkit")).unwrap();
    fs::set_permissions(xdg.join("ffkit"), fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = w.cmd("cache-read");
    c.env_remove("FFKIT_CACHE_DIR")
        .env("XDG_CACHE_HOME", &xdg)
        .arg("k");
    let by_xdg = c.output().unwrap();
    for (what, out) in [
        ("--dir", by_flag),
        ("FFKIT_CACHE_DIR", by_env),
        ("XDG", by_xdg),
    ] {
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        assert!(out.stdout.is_empty(), "{what}: read a planted value");
        assert!(
            err.contains("writable by its group and others (mode 777)")
                && err.contains("chmod go-w"),
            "{what}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
    }
    assert_eq!(fs::read(shared.join("k")).unwrap(), b"planted");
}

/// A picked dir must be a real dir of ours; a named one may be a symlink.
#[test]
fn a_picked_cache_dir_must_be_ours_and_not_a_symlink() {
    let w = World::new();
    let real = w.path().join("real");
    fs::create_dir(&real).unwrap();
    let xdg = w.path().join("xdg");
    fs::create_dir(&xdg).unwrap();
    std::os::unix::fs::symlink(&real, xdg.join("ffkit")).unwrap();
    let picked = |c: &mut Command| {
        c.env_remove("FFKIT_CACHE_DIR").env("XDG_CACHE_HOME", &xdg);
    };
    let mut c = w.cmd("cache-write");
    picked(&mut c);
    let out = c.args(["k", "v"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("symbolic link"));
    // Named, the same symlink is the user's choice.
    w.cmd("cache-write")
        .env("FFKIT_CACHE_DIR", xdg.join("ffkit"))
        .args(["k", "v"])
        .assert()
        .success();
    assert_eq!(fs::read(real.join("k")).unwrap(), b"v");

    // Owned by someone else: only root can make one.
    if rustix::process::getuid().is_root() {
        fs::remove_file(xdg.join("ffkit")).unwrap();
        fs::create_dir(xdg.join("ffkit")).unwrap();
        std::os::unix::fs::chown(xdg.join("ffkit"), Some(65534), Some(65534)).unwrap();
        let mut c = w.cmd("cache-size");
        picked(&mut c);
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains("owned by uid 65534"));
        // Named explicitly, another owner is the user's business.
        w.cmd("cache-size")
            .env("FFKIT_CACHE_DIR", xdg.join("ffkit"))
            .assert()
            .success();
    } else {
        // Not a missing tool (CI may run unprivileged): say so, do not fail.
        let _ = writeln!(
            std::io::stderr(),
            "SKIP (part): not root, so no dir owned by another user to check it is refused"
        );
    }
}

/// Attack finding: a named cache dir that is a symbolic link to nothing
/// (its target removed) failed every write with exit 1 and mkdir's
/// "File exists", naming nothing the user could see there. Now: exit 4,
/// one line naming the link and its missing target, which is not created;
/// reads and sizes still see an empty cache.
#[test]
fn a_named_cache_dir_that_is_a_dangling_symlink_says_so() {
    let w = World::new();
    let gone = w.path().join("gone");
    let link = w.path().join("link");
    std::os::unix::fs::symlink(&gone, &link).unwrap();
    for dir in [link.clone(), link.join("sub")] {
        let out = w
            .cmd("cache-write")
            .env("FFKIT_CACHE_DIR", &dir)
            .args(["k", "v"])
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("symbolic link") && err.contains(&*gone.to_string_lossy()),
            "{err}"
        );
    }
    assert!(!gone.exists(), "the link's target is not created");
    // A chain (`chain -> link -> gone`) names the missing end, not `link`,
    // which exists (as a link): "create it" could not be done with it.
    let chain = w.path().join("chain");
    std::os::unix::fs::symlink("link", &chain).unwrap();
    let out = w
        .cmd("cache-write")
        .env("FFKIT_CACHE_DIR", &chain)
        .args(["k", "v"])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(&*format!("to {},", gone.display())), "{err}");
    let out = w
        .cmd("cache-size")
        .env("FFKIT_CACHE_DIR", &link)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"0\n");
}

#[test]
fn a_relative_xdg_cache_home_is_ignored() {
    let w = World::new();
    let mut c = w.cmd("cache-write");
    c.env_remove("FFKIT_CACHE_DIR")
        .env("XDG_CACHE_HOME", "rel/x")
        .args(["k", "v"]);
    c.assert().success();
    assert!(!w.path().join("rel").exists());
    assert_eq!(
        fs::read(w.path().join("home/.cache/ffkit/k")).unwrap(),
        b"v"
    );
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `--ttl 1` lives at least one second whatever the fraction of the second
/// it is written at: the sidecar's expiry is at least start + 1, and a
/// reader sees the entry until then.
#[test]
fn an_entry_lives_at_least_its_ttl() {
    let w = World::new();
    for i in 0..3 {
        let key = format!("t{i}");
        let before = epoch_now();
        w.cmd("cache-write")
            .args(["--ttl", "1", &key, "v"])
            .assert()
            .success();
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(w.cache().join(format!("{key}.meta"))).unwrap())
                .unwrap();
        let expires = meta["expires_at"].as_i64().unwrap() as f64;
        assert!(
            expires >= before + 1.0,
            "written after {before}, expires at {expires}: {meta}"
        );
    }
    let before = epoch_now();
    w.cmd("cache-write")
        .args(["--ttl", "1", "r", "v"])
        .assert()
        .success();
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let out = w.cmd("cache-read").args(["-q", "r"]).output().unwrap();
        if out.status.code() == Some(4) {
            break;
        }
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert!(Instant::now() < give_up, "never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    let gone = epoch_now();
    assert!(gone >= before + 1.0, "lived {} s", gone - before);
}

/// A bash holding the cache's `.lock` exclusively, as a writer stopped in
/// the middle of its commit does; returned once it holds it.
fn lock_holder(w: &World) -> Child {
    fs::create_dir_all(w.cache()).unwrap();
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    c.arg("-c")
        .arg("exec 9>>\"$FFKIT_CACHE_DIR/.lock\" && flock 9 && echo locked && read -r x");
    spawn_locked(c)
}

/// Runs `c` to its end (failing on a hang) and says how long it took.
fn timed(c: Command, what: &str) -> (std::process::Output, Duration) {
    let t0 = Instant::now();
    let out = output_within(c, what);
    (out, t0.elapsed())
}

/// The dir lock waits in the kernel (the crate's one wait): a writer behind
/// a held `.lock` shows in /proc/locks as blocked on it (the old wait
/// polled `try_lock` and never did), and gets the lock once it is freed.
#[test]
fn a_writer_behind_the_dir_lock_waits_in_the_kernel_and_gets_it() {
    let w = World::new();
    w.write("k", "v");
    let mut holder = lock_holder(&w);
    let lock = w.cache().join(".lock");
    let mut c = w.cmd("cache-write");
    c.args(["k2", "v2"]).env("LOCK_TIMEOUT", "60");
    let writer = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the writer blocked in flock(2) on .lock", 30, || {
        crate::cache_run::blocked_on(&lock) > 0
    });
    if let Some(mut i) = holder.stdin.take() {
        let _ = i.write_all(b"\n");
    }
    assert!(holder.wait().unwrap().success());
    let out = writer.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let read = w.cmd("cache-read").arg("k2").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim_end(), "v2");
    w.assert_exact();
}

#[test]
fn a_reader_behind_a_stopped_writer_follows_lock_timeout() {
    let w = World::new();
    w.write("k", "v");
    let mut holder = lock_holder(&w);
    // A hit takes no lock (docs/cache.md, "Concurrency and crashes"): it
    // is answered at once, the lock held or not.
    let mut c = w.cmd("cache-read");
    c.arg("k").env("LOCK_TIMEOUT", "60");
    let out = output_within(c, "a hit beside a held dir lock");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"v");
    // Anything else is looked at under the lock: a reader wants it shared,
    // a writer exclusive: both give up.
    for args in [vec!["cache-read", "nokey"], vec!["cache-write", "k2", "v"]] {
        let mut c = w.cmd(args[0]);
        c.args(&args[1..]).env("LOCK_TIMEOUT", "1");
        let (out, took) = timed(c, "a reader behind a held dir lock");
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {err}");
        assert!(err.contains("LOCK_TIMEOUT"), "{err}");
        assert!(
            !err.contains("waiting"),
            "no note without a terminal: {err}"
        );
        assert!(took >= Duration::from_millis(900), "{took:?}");
    }
    // On a terminal it says, once, that it waits.
    let script = Path::new("/usr/bin/script");
    if script.exists() {
        let mut c = Command::new(script);
        w.isolate(&mut c);
        c.env("LOCK_TIMEOUT", "1.5").args([
            "-qec",
            &format!("'{}' cache-read nokey", bin().display()),
            "/dev/null",
        ]);
        let (out, _) = timed(c, "a reader on a terminal behind a held dir lock");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.matches("waiting for the cache lock").count(),
            1,
            "{text}"
        );
        assert!(text.contains("LOCK_TIMEOUT"), "{text}");
    } else {
        skip("util-linux script not installed: the terminal note is not checked");
    }
    if let Some(mut i) = holder.stdin.take() {
        let _ = i.write_all(b"\n");
    }
    assert!(holder.wait().unwrap().success());
    w.cmd("cache-read").arg("k").assert().success();
}

/// `CACHE_PERF_METRICS=perf.csv` means ./perf.csv, for the applets' own
/// rows and for `perf-metrics record` alike.
#[test]
fn a_relative_metrics_log_is_relative_to_the_current_dir() {
    let w = World::new();
    let sub = w.path().join("work");
    fs::create_dir(&sub).unwrap();
    for args in [
        vec!["cache-write", "k", "v"],
        vec!["cache-read", "k"],
        vec!["perf-metrics", "record", "op", "1", "2"],
    ] {
        w.cmd(args[0])
            .args(&args[1..])
            .env("CACHE_PERF_METRICS", "perf.csv")
            .current_dir(&sub)
            .assert()
            .success();
    }
    let rows = fs::read_to_string(sub.join("perf.csv")).unwrap();
    for op in [",write_cache,", ",read_cache,", ",op,"] {
        assert!(rows.contains(op), "{op} missing: {rows}");
    }
}

/// FF_DEBUG=true: one prefixed line per decision on stderr.
#[test]
fn ff_debug_says_which_dir_the_index_and_where_rows_go() {
    let w = World::new();
    let run = |args: &[&str]| {
        let out = w
            .cmd(args[0])
            .args(&args[1..])
            .env("FF_DEBUG", "true")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let err = stderr_of(&out);
        let prefix = format!("ffkit {}: debug: ", args[0]);
        assert!(
            err.lines().all(|l| l.starts_with(&prefix)),
            "every line prefixed {prefix:?}: {err}"
        );
        err
    };
    let log = w.cache().join(".perf-metrics.csv");
    let cache = w.cache().display().to_string();
    let write = run(&["cache-write", "k", "v"]);
    assert!(
        write.contains(&format!("cache dir {cache} (from FFKIT_CACHE_DIR)")),
        "{write}"
    );
    assert!(write.contains("index updated"), "{write}");
    assert!(write.contains("recorded write_cache"), "{write}");
    assert!(write.contains(&log.display().to_string()), "{write}");
    let read = run(&["cache-read", "k"]);
    assert!(read.contains("k: hit"), "{read}");
    assert!(read.contains("recorded read_cache"), "{read}");
    let size = run(&["cache-size"]);
    assert!(size.contains("read from the index"), "{size}");
    let size = run(&["cache-size", "--dir", &cache]);
    assert!(size.contains("(from --dir)"), "{size}");
    let evict = run(&["cache-evict", "--all"]);
    assert!(
        evict.contains("entries evicted: 1; index now: 0 bytes"),
        "{evict}"
    );
}

/// A `cache-run` hit takes no lock either (docs/cache-run.md, "Hits"): it
/// is replayed at once beside a held dir lock, where it used to wait for
/// the shared lock and give up with exit 6.
#[test]
fn a_cache_run_hit_is_replayed_beside_a_held_dir_lock() {
    let w = World::new();
    let call = || {
        let mut c = w.cmd("cache-run");
        c.args(["--ttl", "0", "--", "echo", "hi"])
            .env("LOCK_TIMEOUT", "1");
        c
    };
    let first = output_within(call(), "the miss");
    assert!(first.status.success(), "{}", stderr_of(&first));
    let mut holder = lock_holder(&w);
    let out = output_within(call(), "a hit beside a held dir lock");
    if let Some(mut i) = holder.stdin.take() {
        let _ = i.write_all(b"\n");
    }
    assert!(holder.wait().unwrap().success());
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"hi\n");
    assert!(out.stderr.is_empty(), "{}", stderr_of(&out));
}

/// The real thing: a batch writer stopped (SIGSTOP) while its journal is
/// out, i.e. in the middle of its commit under the exclusive lock. A hit
/// of another key is answered at once (a hit takes no lock); a reader that
/// needs the lock (a missing key) gives up after LOCK_TIMEOUT instead of
/// hanging; the writer, continued, finishes its batch.
#[test]
fn a_reader_behind_a_writer_stopped_mid_commit_gives_up() {
    use rustix::process::{Pid, Signal, kill_process};
    let w = World::new();
    w.write("k", "v");
    let batch: String = (0..4_000).map(|i| format!("b{i}:v\n")).collect();
    let cache = w.cache();
    for _attempt in 0..10 {
        let mut writer = w
            .cmd("cache-batch")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(mut i) = writer.stdin.take() {
            i.write_all(batch.as_bytes()).unwrap();
        }
        let pid = Pid::from_child(&writer);
        let mut stopped = false;
        // Our own child, not yet waited for: its pid cannot be reused.
        while writer.try_wait().unwrap().is_none() {
            if journal_left(&cache) {
                kill_process(pid, Signal::STOP).unwrap();
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if stopped && journal_left(&cache) {
            let mut c = w.cmd("cache-read");
            c.arg("k").env("LOCK_TIMEOUT", "60");
            let hit = output_within(c, "a hit beside a stopped writer");
            let mut c = w.cmd("cache-read");
            c.arg("nokey").env("LOCK_TIMEOUT", "1");
            let (out, _) = timed(c, "a reader behind a stopped writer");
            kill_process(pid, Signal::CONT).unwrap();
            assert!(hit.status.success(), "{}", stderr_of(&hit));
            assert_eq!(hit.stdout, b"v");
            let status = writer.wait().unwrap();
            assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
            assert!(stderr_of(&out).contains("LOCK_TIMEOUT"));
            assert!(status.success(), "the continued writer finishes");
            assert_eq!(oracle(&w.cache()).1, 4_001);
            w.cmd("cache-read").arg("b3999").assert().success();
            return;
        }
        if stopped {
            kill_process(pid, Signal::CONT).unwrap();
        }
        assert!(writer.wait().unwrap().success());
        fs::remove_dir_all(w.cache()).unwrap();
        w.write("k", "v");
    }
    panic!("never caught the writer inside its commit in 10 attempts");
}
