//! Progress bars: drawn on stderr for big work when stderr is a terminal,
//! never in a pipe and never with `-q`. The terminal is a real pty made by
//! util-linux `script`; where it is missing those tests print a `SKIP:`
//! line (and fail on CI).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::*;

const ENTRIES: usize = 12_000;

fn batch_file(w: &World) -> std::path::PathBuf {
    let f = w.path().join("batch.txt");
    let body: String = (0..ENTRIES).map(|i| format!("k{i}:v\n")).collect();
    fs::write(&f, body).unwrap();
    f
}

/// Runs `ffkit ARGS` with stdout and stderr on a pty; returns what it drew.
fn on_a_terminal(w: &World, args: &[&str]) -> Option<String> {
    let script = Path::new("/usr/bin/script");
    if !script.exists() {
        skip("util-linux script is not installed: no terminal to draw on (.ci/run installs it)");
        return None;
    }
    let quoted: Vec<String> = std::iter::once(bin().display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut c = Command::new(script);
    w.isolate(&mut c);
    c.args(["-qec", &quoted.join(" "), "/dev/null"]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One 12k-entry cache serves every case: writing it is the slow part.
#[test]
fn big_work_draws_a_bar_only_on_a_terminal_and_never_with_q() {
    let w = World::new();
    let f = batch_file(&w);
    let f = f.to_str().unwrap();
    let Some(drawn) = on_a_terminal(&w, &["cache-batch", "--file", f]) else {
        // Without a pty, still prove the pipe case.
        let out = w.cmd("cache-batch").args(["--file", f]).output().unwrap();
        assert!(out.status.success());
        assert_eq!(stderr_of(&out), "");
        return;
    };
    assert!(drawn.contains("writing"), "{drawn:?}");
    assert!(
        drawn.ends_with("\u{1b}[2K"),
        "the bar is cleared at the end: {drawn:?}"
    );

    // Eviction reads every sidecar: a bar for that pass on a terminal only.
    let evict = ["cache-evict", "--max-bytes", "1K", "--dry-run"];
    let out = w.cmd(evict[0]).args(&evict[1..]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(stderr_of(&out), "", "a pipe never gets a bar");
    let quiet = on_a_terminal(&w, &["cache-evict", "-q", "--max-bytes", "1K", "--dry-run"]);
    let quiet = quiet.unwrap();
    assert!(
        !quiet.contains("reading metadata") && !quiet.contains('\u{1b}'),
        "-q draws nothing: {quiet:?}"
    );
    let drawn = on_a_terminal(&w, &evict).unwrap();
    assert!(drawn.contains("reading metadata"), "{drawn:?}");
}

#[test]
fn small_work_on_a_terminal_draws_nothing() {
    let w = World::new();
    w.write("a", "1");
    let Some(drawn) = on_a_terminal(&w, &["cache-size", "--verify"]) else {
        return;
    };
    assert_eq!(
        drawn,
        "2\n"
            .replace('2', &w.size().to_string())
            .replace('\n', "\r\n")
    );
}
