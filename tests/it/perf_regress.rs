//! The performance regression check: instruction counts, not wall time.
//!
//! Wall time on a shared machine is noise, so this runs a few key ffkit
//! invocations under `valgrind --tool=callgrind` and compares the
//! instructions each one executes from ffkit's `main` on (Ir; the loader's
//! work before it is not ffkit's code) with `tests/perf-baseline.json` (or, in a
//! `tls` build, `tests/perf-baseline-tls.json`). More than
//! +10% fails; more than 30% fewer only warns (the baseline is probably
//! stale: bless it to lock the gain in). Every invocation runs with a
//! cleared, fixed environment (`FFKIT_TEST_NOW`, monitoring disabled except
//! where it is the thing measured) on a fixture built the same way each
//! time, so counts repeat to well under 1%.
//!
//! Update the baseline on purpose with
//! `FFKIT_BLESS_PERF=1 cargo test --test it perf_regress` (and, for the
//! `tls` build that CI tests, `tests/perf-baseline-tls.json`, with
//! `--all-features`).
//! Skipped (with a message) where valgrind is absent, in release test builds,
//! with `FFKIT_TEST_BIN` (another build under test; `.ci/run` leaves this
//! file out of that pass) and on other targets: the counts are those of the
//! debug binary that `cargo test` builds on x86_64 Linux.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::{bin, skip};

const TOLERANCE_UP: f64 = 0.10;
const STALE_DOWN: f64 = 0.30;
const TARGET: &str = "x86_64-linux-debug";
const NOW: &str = "1700000000";

/// One baseline per feature set: a `tls` build links rustls and ring,
/// whose relocation alone costs every start-up more (docs/redis.md, "TLS").
fn baseline_path() -> PathBuf {
    let name = if cfg!(feature = "tls") {
        "tests/perf-baseline-tls.json"
    } else {
        "tests/perf-baseline.json"
    };
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One measured invocation.
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Run before each measurement (not measured), e.g. to reset a dir.
    reset: Option<Box<dyn Fn()>>,
}

/// The whole, fixed environment of a measured run.
fn fixed_env(root: &Path, env: &[(&str, String)]) -> Vec<(String, String)> {
    let mut v = vec![
        ("HOME".into(), root.join("home").display().to_string()),
        (
            "FFKIT_CACHE_DIR".into(),
            root.join("cache").display().to_string(),
        ),
        ("FFKIT_TEST_NOW".into(), NOW.into()),
        ("CACHE_PERF_MONITORING".into(), "disabled".into()),
    ];
    v.retain(|(k, _)| !env.iter().any(|(e, _)| e == k));
    v.extend(env.iter().map(|(k, val)| (k.to_string(), val.clone())));
    v
}

/// `program` with nothing of the caller's environment but `fixed_env`.
fn command(program: impl AsRef<std::ffi::OsStr>, root: &Path, env: &[(&str, String)]) -> Command {
    let mut c = Command::new(program);
    c.env_clear().envs(fixed_env(root, env)).current_dir(root);
    c
}

fn ffkit(root: &Path, env: &[(&str, String)]) -> Command {
    command(bin(), root, env)
}

fn run_ok(c: &mut Command) {
    let out = c.output().expect("run ffkit");
    assert!(
        out.status.success(),
        "fixture command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn applets() -> Vec<String> {
    let out = Command::new(bin())
        .arg("--list")
        .output()
        .expect("ffkit --list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The fixture: a 200-entry cache, a batch input, a metrics log of 2,000
/// rows. Built identically on every run.
fn fixture(root: &Path) {
    fs::create_dir_all(root.join("home")).unwrap();
    let lines: String = (0..200).map(|i| format!("k{i:04}:{i:032}\n")).collect();
    fs::write(root.join("batch.txt"), &lines).unwrap();
    run_ok(ffkit(root, &[]).args(["cache-batch", "--ttl", "0", "--file", "batch.txt"]));
    let rows: String = (0..2000)
        .map(|i| {
            format!(
                "{},op{},{}.{:03}\n",
                1_699_990_000 + i,
                i % 5,
                i % 17,
                i % 1000
            )
        })
        .collect();
    fs::write(root.join("metrics.csv"), rows).unwrap();
    fs::write(root.join("lockfile"), "").unwrap();
}

fn cases(root: &Path) -> Vec<Case> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let p = |n: &str| root.join(n).display().to_string();
    let mut v = vec![
        Case {
            name: "cache-size",
            args: s(&["cache-size"]),
            env: vec![],
            reset: None,
        },
        Case {
            name: "cache-size-walk",
            args: s(&["cache-size"]),
            env: vec![("CACHE_SIZE_TRACKING", "disabled".into())],
            reset: None,
        },
        Case {
            name: "cache-write",
            args: s(&["cache-write", "k0007", "a small value"]),
            env: vec![],
            reset: None,
        },
        Case {
            name: "cache-write-selftimed",
            args: s(&["cache-write", "k0008", "a small value"]),
            env: vec![
                ("CACHE_PERF_MONITORING", "enabled".into()),
                ("CACHE_PERF_METRICS", p("self.csv")),
            ],
            reset: {
                let log = root.join("self.csv");
                Some(Box::new(move || {
                    let _ = fs::remove_file(&log);
                }))
            },
        },
        Case {
            name: "cache-read",
            args: s(&["cache-read", "k0007"]),
            env: vec![],
            reset: None,
        },
        Case {
            name: "cache-batch-200",
            args: s(&["cache-batch", "--dir", &p("batch"), "--file", "batch.txt"]),
            env: vec![],
            reset: {
                let dir = root.join("batch");
                Some(Box::new(move || {
                    let _ = fs::remove_dir_all(&dir);
                }))
            },
        },
    ];
    let have = applets();
    if have.iter().any(|a| a == "lock-acquire") {
        v.push(Case {
            name: "lock-acquire",
            args: vec![
                "lock-acquire".into(),
                p("lockfile"),
                "--".into(),
                "true".into(),
            ],
            env: vec![("PATH", "/usr/bin:/bin".into())],
            reset: None,
        });
    }
    if have.iter().any(|a| a == "perf-metrics") {
        let log = root.join("record.csv");
        v.push(Case {
            name: "perf-metrics-record",
            args: s(&["perf-metrics", "record", "bench_op", "1.5"]),
            env: vec![
                ("CACHE_PERF_MONITORING", "enabled".into()),
                ("CACHE_PERF_METRICS", p("record.csv")),
            ],
            reset: Some(Box::new(move || {
                let _ = fs::remove_file(&log);
            })),
        });
        v.push(Case {
            name: "perf-metrics-json-2000",
            args: s(&["perf-metrics", "--json"]),
            env: vec![("CACHE_PERF_METRICS", p("metrics.csv"))],
            reset: None,
        });
    }
    v
}

/// The binary valgrind runs: a copy of the test binary without its DWARF
/// (`strip --strip-debug`, named `ffkit` too). The code is the same, so is
/// the instruction count (within a few instructions of argv[0]'s length),
/// but valgrind no longer spends a third of each run reading ~25 MB of debug
/// info. Where `strip` is missing, the test binary itself.
fn measured_bin(root: &Path) -> PathBuf {
    let dir = root.join("measured");
    fs::create_dir_all(&dir).unwrap();
    let dest = dir.join("ffkit");
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dest)
        .arg(bin())
        .status()
        .is_ok_and(|s| s.success());
    if stripped {
        dest
    } else {
        eprintln!("perf_regress: strip failed; measuring the unstripped binary (slower)");
        bin()
    }
}

/// Total instructions of one run of the case under callgrind.
fn instructions(root: &Path, exe: &Path, case: &Case) -> u64 {
    if let Some(r) = &case.reset {
        r();
    }
    // One plain run first, so the measured run finds the same warm state
    // (directories created, index present) every time.
    let _ = ffkit(root, &case.env)
        .args(&case.args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Some(r) = &case.reset {
        r();
    }
    let out = command("valgrind", root, &case.env)
        .arg("--tool=callgrind")
        // ffkit's own work: what runs from its `main` (src/main.rs). Not
        // the dynamic loader's relocation of this debug binary, which was
        // half of a cache-read's count and grew with every line of code
        // anywhere in the binary (a Redis change failed the cache-read
        // case), while the shipped static-pie build relocates a tenth as
        // much (BENCHMARKS.md, "perf_regress counts from main").
        .arg("--toggle-collect=main")
        .arg(format!(
            "--callgrind-out-file={}",
            root.join("callgrind.out").display()
        ))
        .arg(exe)
        .args(&case.args)
        .stdout(Stdio::null())
        .output()
        .expect("run valgrind");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}: failed under valgrind:\n{err}",
        case.name
    );
    err.lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().to_string())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: no instruction count in:\n{err}", case.name))
}

#[test]
fn instruction_counts_stay_within_ten_percent_of_the_baseline() {
    if !valgrind_available() {
        return skip(
            "perf_regress: valgrind not found (install it; .ci/run does): \
             the instruction-count regression check did not run",
        );
    }
    if !cfg!(debug_assertions)
        || !cfg!(target_arch = "x86_64")
        || !cfg!(target_os = "linux")
        || crate::util::test_bin().is_some()
    {
        return skip(&format!(
            "perf_regress: the baseline is for the {TARGET} binary cargo builds for the test \
             run (not FFKIT_TEST_BIN's)"
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixture(root);
    let exe = measured_bin(root);
    let measured: BTreeMap<&str, u64> = cases(root)
        .iter()
        .map(|c| (c.name, instructions(root, &exe, c)))
        .collect();

    let bless = std::env::var_os("FFKIT_BLESS_PERF").is_some_and(|v| v == "1");
    let baseline: Value = fs::read(baseline_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(json!({}));
    let base = &baseline["cases"];
    if bless {
        let file = json!({
            "about": "Instruction counts (callgrind Ir) of the debug ffkit binary; see tests/it/perf_regress.rs. \
                      Update on purpose: FFKIT_BLESS_PERF=1 cargo test --test it perf_regress",
            "target": TARGET,
            "cases": measured,
        });
        fs::write(
            baseline_path(),
            serde_json::to_string_pretty(&file).unwrap() + "\n",
        )
        .unwrap();
        eprintln!(
            "perf_regress: baseline written to {}",
            baseline_path().display()
        );
        return;
    }
    let mut failures = Vec::new();
    for (name, &ir) in &measured {
        let Some(b) = base[name].as_u64() else {
            eprintln!("perf_regress: {name}: {ir} Ir, not in the baseline (bless to add it)");
            continue;
        };
        let change = ir as f64 / b as f64 - 1.0;
        eprintln!(
            "perf_regress: {name}: {ir} Ir vs baseline {b} ({:+.1}%)",
            change * 100.0
        );
        if change > TOLERANCE_UP {
            failures.push(format!(
                "{name}: {ir} instructions vs baseline {b} ({:+.1}%, tolerance +{:.0}%)",
                change * 100.0,
                TOLERANCE_UP * 100.0
            ));
        } else if change < -STALE_DOWN {
            eprintln!(
                "perf_regress: WARNING: {name} got {:.0}% cheaper; the baseline looks stale \
                 (FFKIT_BLESS_PERF=1 cargo test --test it perf_regress)",
                -change * 100.0
            );
        }
    }
    assert!(
        failures.is_empty(),
        "instruction-count regression:\n  {}\nIf the extra work is intended, update the baseline on purpose:\n  \
         FFKIT_BLESS_PERF=1 cargo test --test it perf_regress\nand commit {}.",
        failures.join("\n  "),
        baseline_path().display()
    );
}

/// Issue 27's goal for the most common cache-run call: a small hit costs no
/// more than 1.05× a `cache-read` of the same bytes (instructions; the hit
/// used to spend 18% more, most of it in clap). The metrics row is on for
/// both (the default), so each writes one.
#[test]
fn a_small_cache_run_hit_costs_no_more_than_a_cache_read_of_the_same_bytes() {
    if !valgrind_available() {
        return skip("perf_regress: valgrind not found: the cache-run hit check did not run");
    }
    if !cfg!(debug_assertions)
        || !cfg!(target_arch = "x86_64")
        || !cfg!(target_os = "linux")
        || crate::util::test_bin().is_some()
    {
        return skip(&format!(
            "perf_regress: the cache-run hit check is for the {TARGET} binary cargo builds for \
             the test run (not FFKIT_TEST_BIN's)"
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixture(root);
    let exe = measured_bin(root);
    run_ok(ffkit(root, &[]).args(["cache-write", "--ttl", "0", "hi", "hi\n"]));
    let env = vec![
        ("PATH", "/usr/bin:/bin".to_string()),
        ("CACHE_PERF_MONITORING", "enabled".into()),
        (
            "CACHE_PERF_METRICS",
            root.join("m.csv").display().to_string(),
        ),
    ];
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // The first (unmeasured) run of the hit's case is its miss.
    let hit = Case {
        name: "cache-run-hit",
        args: s(&["cache-run", "--ttl", "0", "--", "echo", "hi"]),
        env: env.clone(),
        reset: None,
    };
    let read = Case {
        name: "cache-read-same-bytes",
        args: s(&["cache-read", "hi"]),
        env,
        reset: None,
    };
    let (h, r) = (
        instructions(root, &exe, &hit),
        instructions(root, &exe, &read),
    );
    eprintln!("perf_regress: cache-run hit {h} Ir, cache-read {r} Ir");
    assert!(
        h as f64 <= r as f64 * 1.05,
        "a small cache-run hit costs {h} instructions, more than 1.05x a cache-read of the same bytes ({r})"
    );
}
