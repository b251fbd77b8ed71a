//! The environment: every variable ffkit reads (README's environment table,
//! `config::ENV_VARS`) with a wrong value makes every applet exit 12 with
//! one stderr line naming the variable, before touching anything — except
//! `init`, which reads no setting and always prints the functions, so that
//! each function reports the bad value itself (docs/shell.md, "Bad
//! settings"; `builtin::init_prints_the_functions_with_a_bad_setting_and_each_call_fails_12`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::util::*;

#[test]
fn every_bad_environment_value_exits_12_for_every_applet() {
    let w = seeded();
    let applets: &[(&str, &[&str], &[u8])] = &[
        ("cache-size", &[], b""),
        ("cache-write", &["k", "v"], b""),
        ("cache-read", &["seed"], b""),
        ("cache-batch", &[], b"k:v\n"),
        ("cache-batch", &["--read", "seed"], b""),
        ("cache-evict", &["--all"], b""),
        ("perf-metrics", &[], b""),
        ("perf-metrics", &["record", "x", "1"], b""),
        ("install-links", &["--dir", "links"], b""),
        ("lock-acquire", &["-n", "x", "--", "true"], b""),
        ("lock-status", &["x"], b""),
        ("lock-release", &["x"], b""),
    ];
    let locks = w.path().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    for (var, val) in BAD_ENV {
        for (applet, args, stdin) in applets {
            let mut c = w.cmd(applet);
            c.args(*args)
                .env("FFKIT_LOCK_DIR", &locks)
                .env(var, OsStr::from_bytes(val));
            let what = format!(
                "{applet} {args:?} with {var}={}",
                String::from_utf8_lossy(val)
            );
            let out = check(&w, &what, c, stdin, 12, 1);
            assert!(stderr_of(&out).contains(var), "{what}: {}", stderr_of(&out));
        }
    }
    assert_eq!(oracle(&w.cache()).1, 1, "nothing written or evicted");
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        0,
        "no lock file created"
    );
}
