//! `--help` of the root and of every applet, in both invocation forms,
//! against committed golden files; and clap's own consistency checks.
//!
//! Regenerate the golden files after changing a clap definition with
//! `FFKIT_BLESS=1 cargo test --workspace help`, and review the diff.

use std::fs;
use std::path::PathBuf;

use ffkit::cli::{APPLETS, applet_command, root_command};

use crate::util::World;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn blessing() -> bool {
    std::env::var_os("FFKIT_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Compares (or, when blessing, writes) one golden file; returns a
/// description of the mismatch.
fn compare(name: &str, actual: &str) -> Option<String> {
    let path = golden_dir().join(name);
    if blessing() {
        fs::create_dir_all(golden_dir()).unwrap();
        fs::write(&path, actual).unwrap();
        return None;
    }
    match fs::read_to_string(&path) {
        Ok(expected) if expected == actual => None,
        Ok(expected) => Some(format!(
            "{name} differs:\n--- expected\n{expected}\n--- actual\n{actual}"
        )),
        Err(e) => Some(format!("{name}: cannot read the golden file ({e})")),
    }
}

fn help_of(mut cmd: std::process::Command) -> String {
    let out = cmd.arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "help wrote to stderr");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_output_matches_golden_files_in_both_forms() {
    let w = World::new();
    let mut expected_files = vec!["ffkit.help".to_string()];
    let mut failures = Vec::new();
    let mut root = std::process::Command::new(crate::util::bin());
    w.isolate(&mut root);
    failures.extend(compare("ffkit.help", &help_of(root)));
    for a in APPLETS {
        let sub = format!("{}.sub.help", a.name);
        let link = format!("{}.link.help", a.name);
        failures.extend(compare(&sub, &help_of(w.cmd(a.name))));
        failures.extend(compare(&link, &help_of(w.link(a.name))));
        expected_files.extend([sub, link]);
    }
    if !blessing() {
        for e in fs::read_dir(golden_dir()).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".help") && !expected_files.contains(&name) {
                failures.push(format!("{name}: golden file of no applet; delete it"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\n{} help golden file(s) differ; if the change is intended, regenerate them with \
         `FFKIT_BLESS=1 cargo test --workspace help` and review the diff",
        failures.join("\n\n"),
        failures.len()
    );
}

#[test]
fn symlink_help_names_the_applet_and_subcommand_help_names_ffkit() {
    let w = World::new();
    // A persona copying another tool's usage text (flock) is exempt.
    for a in APPLETS
        .iter()
        .filter(|a| (a.command)().get_overridden_usage().is_none())
    {
        let link = help_of(w.link(a.name));
        assert!(link.contains(&format!("Usage: {} ", a.name)), "{link}");
        let sub = help_of(w.cmd(a.name));
        assert!(sub.contains(&format!("Usage: ffkit {} ", a.name)), "{sub}");
    }
}

#[test]
fn clap_definitions_pass_debug_assert() {
    root_command().debug_assert();
    for a in APPLETS {
        applet_command(a, a.name).debug_assert();
        applet_command(a, &format!("ffkit {}", a.name)).debug_assert();
    }
}
