//! perf-metrics: the log's concurrency guarantees (real processes), the
//! aggregation against independent oracles (awk, a sort), the exporters,
//! health-check rules and their exit codes, and self-timing of the cache
//! applets.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::thread;

use crate::util::*;
use predicates::prelude::*;
use serde_json::Value;

fn metrics(w: &World) -> Command {
    w.cmd("perf-metrics")
}

fn json_report(w: &World, extra: &[&str]) -> Value {
    let out = metrics(w).arg("--json").args(extra).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every line of the log, asserting each is a well-formed row. Blank
/// lines are skipped, as readers skip them (docs/metrics.md): an appender
/// that reads the log's last byte while another's row is half in the page
/// cache (a row across a page boundary) heals a line that was not cut, and
/// leaves one (seen once in 3,200 racing appends of CI's shipped build).
fn rows(path: &Path) -> Vec<(i64, String, f64)> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 3, "malformed row {l:?}");
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// Runs `n` records per worker in `workers` threads, each spawning ffkit.
fn spawn_records(w: &World, workers: usize, n: usize, env: &[(&str, &str)]) {
    thread::scope(|s| {
        for i in 0..workers {
            s.spawn(move || {
                for j in 0..n {
                    let mut c = metrics(w);
                    c.args(["record", &format!("w{i}"), &j.to_string()]);
                    for (k, v) in env {
                        c.env(k, v);
                    }
                    let out = c.output().unwrap();
                    assert!(out.status.success(), "{}", stderr_of(&out));
                }
            });
        }
    });
}

#[test]
fn concurrent_records_from_16_processes_are_all_whole_rows() {
    let w = World::new();
    // 16 writers at once, 200 rows each: 3,200 racing appends.
    spawn_records(&w, 16, 200, &[]);
    let rows = rows(&w.metrics_log());
    assert_eq!(rows.len(), 3_200);
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    for (_, op, ms) in rows {
        seen.entry(op).or_default().push(ms as u32);
    }
    assert_eq!(seen.len(), 16);
    for (op, mut v) in seen {
        v.sort_unstable();
        assert_eq!(v, (0..200).collect::<Vec<_>>(), "{op}");
    }
    assert_no_temps(&w.cache(), "metrics");
}

#[test]
fn automatic_trim_under_concurrent_appends_keeps_a_contiguous_newest_suffix() {
    let w = World::new();
    let cap = 2000u64;
    spawn_records(&w, 4, 150, &[("CACHE_PERF_MAX_BYTES", "2000")]);
    let path = w.metrics_log();
    assert!(fs::metadata(&path).unwrap().len() <= cap);
    let rows = rows(&path);
    assert!(!rows.is_empty());
    // A trim removes a prefix of the file, and a writer's rows are in its
    // order, so what survives of each writer must be a gap-free run ending at
    // its last row: a lost append would leave a hole or a missing tail.
    let mut per: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (_, op, ms) in &rows {
        per.entry(op.clone()).or_default().push(*ms as u32);
    }
    let writer_with_last_row = &rows.last().unwrap().1;
    for (op, v) in &per {
        let first = v[0];
        assert_eq!(
            v,
            &(first..first + v.len() as u32).collect::<Vec<_>>(),
            "{op}: {v:?}"
        );
        if op == writer_with_last_row {
            assert_eq!(*v.last().unwrap(), 149);
        }
    }
    assert_no_temps(&w.cache(), "metrics");
}

#[test]
fn cleanup_racing_appenders_loses_only_rows_meant_to_go() {
    let w = World::new();
    fs::create_dir_all(w.cache()).unwrap();
    let path = w.metrics_log();
    let mut old = String::from("# timestamp,operation,duration_ms\n");
    for i in 0..5000 {
        old.push_str(&format!("1000,old,{i}\n"));
    }
    fs::write(&path, old).unwrap();
    let now = [("FFKIT_TEST_NOW", "2000")];
    thread::scope(|s| {
        s.spawn(|| spawn_records(&w, 3, 150, &now));
        s.spawn(|| {
            for _ in 0..20 {
                metrics(&w)
                    .args(["cleanup", "--older-than", "500s"])
                    .env("FFKIT_TEST_NOW", "2000")
                    .assert()
                    .success();
            }
        });
    });
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# timestamp,operation,duration_ms\n"));
    let rows = rows(&path);
    assert!(rows.iter().all(|r| r.1 != "old"), "old rows survived");
    assert_eq!(rows.len(), 450, "appended rows were lost");
    // And --keep-rows keeps exactly the newest N.
    metrics(&w)
        .args(["cleanup", "--keep-rows", "10", "--json"])
        .assert()
        .success()
        .stdout("{\"kept\":10,\"removed\":440,\"malformed\":0}\n");
    assert_eq!(rows_after(&path), 10);
    assert_no_temps(&w.cache(), "metrics");
}

fn rows_after(path: &Path) -> usize {
    rows(path).len()
}

#[test]
fn cleanup_without_options_keeps_the_newest_1000_rows() {
    let w = World::new();
    fs::create_dir_all(w.cache()).unwrap();
    let body: String = (0..1500).map(|i| format!("{i},op,{i}\n")).collect();
    fs::write(w.metrics_log(), body).unwrap();
    metrics(&w).arg("cleanup").assert().success().stdout("");
    let r = rows(&w.metrics_log());
    assert_eq!(r.len(), 1000);
    assert_eq!(r[0].0, 500);
    // A missing log is nothing to clean.
    let w2 = World::new();
    metrics(&w2).arg("cleanup").assert().success();
    assert!(!w2.metrics_log().exists());
}

#[test]
fn disabled_monitoring_records_nothing_and_creates_no_file() {
    let w = World::new();
    let elsewhere = w.path().join("nodir").join("m.csv");
    for env in [None, Some(&elsewhere)] {
        let d = |c: &mut Command| {
            c.env("CACHE_PERF_MONITORING", "disabled");
            if let Some(p) = env {
                c.env("CACHE_PERF_METRICS", p);
            }
        };
        let mut c = metrics(&w);
        d(&mut c);
        c.args(["record", "x", "5"]).assert().success();
        let mut c = metrics(&w);
        d(&mut c);
        c.args(["time", "x", "--", "sh", "-c", "exit 7"])
            .assert()
            .code(7);
        let mut c = w.cmd("cache-write");
        d(&mut c);
        c.args(["k", "v"]).assert().success();
        let mut c = w.cmd("cache-size");
        d(&mut c);
        c.assert().success();
    }
    assert!(!w.metrics_log().exists());
    assert!(!elsewhere.exists() && !w.path().join("nodir").exists());
}

#[test]
fn perf_metrics_itself_is_not_timed() {
    let w = World::new();
    metrics(&w).args(["record", "a", "1"]).assert().success();
    metrics(&w).assert().success();
    metrics(&w).arg("--json").assert().success();
    metrics(&w).args(["check", "a:max<1s"]).assert().success();
    assert_eq!(rows(&w.metrics_log()).len(), 1);
}

#[test]
fn self_timing_rows_use_the_old_operation_names() {
    let w = World::new();
    w.write("a", "1");
    w.cmd("cache-read").arg("a").assert().success();
    w.cmd("cache-size").assert().success();
    w.cmd("cache-size").arg("--rebuild").assert().success();
    assert_cmd::Command::from_std(w.cmd("cache-batch"))
        .write_stdin("b:2\nc:3\n")
        .assert()
        .success();
    w.cmd("cache-batch")
        .args(["--read", "b"])
        .assert()
        .success();
    w.cmd("cache-evict")
        .args(["--max-bytes", "1000000"])
        .assert()
        .success();
    w.cmd("cache-evict").arg("--all").assert().success();
    let ops: Vec<String> = rows(&w.metrics_log()).into_iter().map(|r| r.1).collect();
    assert_eq!(
        ops,
        [
            "write_cache",
            "read_cache",
            "get_cache_size",
            "rebuild_size_index",
            "batch_write",
            "batch_read",
            "enforce_cache_limits",
            "clear_developer_cache"
        ]
    );
    // Sub-millisecond runs are recorded with fractional ms.
    assert!(rows(&w.metrics_log()).iter().all(|r| r.2 >= 0.0));
    // CACHE_PERF_METRICS moves the log.
    let other = w.path().join("elsewhere.csv");
    w.cmd("cache-size")
        .env("CACHE_PERF_METRICS", &other)
        .assert()
        .success();
    assert_eq!(rows(&other)[0].1, "get_cache_size");
}

#[test]
fn record_forms_and_their_validation() {
    let w = World::new();
    let rec = |args: &[&str]| {
        let mut c = metrics(&w);
        c.arg("record").args(args);
        c
    };
    rec(&["a", "1.25"]).assert().success();
    rec(&["b", "1700000000000", "1700000000015"])
        .assert()
        .success();
    rec(&["c", "--start", "1700000000", "--end", "1700000003"])
        .assert()
        .success();
    rec(&[
        "d",
        "--start",
        "1700000000000000000",
        "--end",
        "1700000000002000000",
    ])
    .assert()
    .success();
    rec(&["e", "--start", "1", "--end", "4", "--unit", "s"])
        .assert()
        .success();
    let r = rows(&w.metrics_log());
    let ms: Vec<(String, f64)> = r.into_iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(
        ms,
        [
            ("a".into(), 1.25),
            ("b".into(), 15.0),
            ("c".into(), 3000.0),
            ("d".into(), 2.0),
            ("e".into(), 3000.0)
        ]
    );
    for bad in [
        &["a,b", "1"][..],
        &["a", "-1"],
        &["a", "abc"],
        &["a"],
        &["a", "5", "3"],
        &["a", "--start", "1700000000", "--end", "1700000000000"],
        &["a", "--start", "1"],
        &["a", "1", "--unit", "parsecs", "--start", "1", "--end", "2"],
    ] {
        rec(bad)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("perf-metrics"));
    }
    assert_eq!(rows(&w.metrics_log()).len(), 5);
}

#[test]
fn time_passes_on_the_status_and_records_the_wall_time() {
    let w = World::new();
    metrics(&w)
        .args([
            "time",
            "slow",
            "--",
            "sh",
            "-c",
            "sleep 0.2; echo hi; exit 3",
        ])
        .assert()
        .code(3)
        .stdout("hi\n");
    metrics(&w)
        .args(["time", "killed", "--", "sh", "-c", "kill -TERM $$"])
        .assert()
        .code(128 + 15);
    metrics(&w)
        .args(["time", "missing", "--", "/no/such/cmd"])
        .assert()
        .code(127);
    let r = rows(&w.metrics_log());
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].1, "slow");
    assert!(r[0].2 >= 200.0 && r[0].2 < 5000.0, "{}", r[0].2);
    assert_eq!(r[1].1, "killed");
}

/// Writes a generated log: `n` rows over a few operations with log-normal-ish
/// durations, plus comments and malformed lines.
fn generated_log(path: &Path, n: usize) -> usize {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    writeln!(f, "# timestamp,operation,duration_ms").unwrap();
    let ops = [
        "write_cache",
        "read_cache",
        "get_cache_size",
        "lock_acquire",
    ];
    let mut malformed = 0;
    for i in 0..n {
        // Mostly two heavy operations (above the exact limit, so sketched).
        let op = ops[[0, 0, 1, 1, 2, 3][rng.usize(0..6)]];
        let ms = (10f64.powf(rng.f64() * 5.0 - 3.0) * 1000.0).round() / 1000.0;
        writeln!(f, "{},{op},{ms}", 1_700_000_000 + i as i64).unwrap();
        if i % 997 == 0 {
            writeln!(
                f,
                "{}",
                ["junk", "1,op", "x,op,1", "1,op,-2", "# note"][i % 5]
            )
            .unwrap();
            malformed += usize::from(i % 5 != 4);
        }
    }
    malformed
}

#[test]
fn aggregation_matches_awk_and_a_sort_based_oracle() {
    let w = World::new();
    let path = w.metrics_log();
    let malformed = generated_log(&path, 60_000);
    let out = metrics(&w).arg("--json").output().unwrap();
    assert!(out.status.success());
    assert!(
        stderr_of(&out).contains(&format!("skipped {malformed} malformed rows")),
        "{}",
        stderr_of(&out)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Key order is part of the interface.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("{\"count\": "), "{text}");
    let first = text.find("\"get_cache_size\"").unwrap();
    assert!(first < text.find("\"lock_acquire\"").unwrap());

    let awk = Command::new("awk")
        .args([
            "-F,",
            r#"$0 !~ /^#/ && NF == 3 && $1 ~ /^[0-9]+$/ && $3 ~ /^[0-9.]+$/ {
                c[$2]++; t[$2] += $3
                if (!($2 in mn) || $3 < mn[$2]) mn[$2] = $3
                if (!($2 in mx) || $3 > mx[$2]) mx[$2] = $3
              }
              END { for (k in c) printf "%s %d %.6f %.6f %.6f\n", k, c[k], t[k], mn[k], mx[k] }"#,
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(awk.status.success());
    let mut sorted: HashMap<String, Vec<f64>> = HashMap::new();
    for l in fs::read_to_string(&path).unwrap().lines() {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() == 3
            && !f[0].is_empty()
            && f[0].bytes().all(|b| b.is_ascii_digit())
            && let Ok(v) = f[2].parse::<f64>()
            && v >= 0.0
        {
            sorted.entry(f[1].to_string()).or_default().push(v);
        }
    }
    let lines = String::from_utf8(awk.stdout).unwrap();
    assert_eq!(lines.lines().count(), 4);
    for l in lines.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let op = f[0];
        let g = &got[op];
        let num = |k: &str| g[k].as_f64().unwrap();
        let want: Vec<f64> = f[1..].iter().map(|x| x.parse().unwrap()).collect();
        assert_eq!(g["count"].as_u64().unwrap(), want[0] as u64, "{op}");
        assert!(
            (num("total") - want[1]).abs() <= 1e-3 + want[1] * 1e-9,
            "{op} total"
        );
        assert!((num("avg") - want[1] / want[0]).abs() <= 1e-3, "{op} avg");
        assert!((num("min") - want[2]).abs() < 1e-9, "{op} min");
        assert!((num("max") - want[3]).abs() < 1e-9, "{op} max");
        let v = sorted.get_mut(op).unwrap();
        v.sort_by(f64::total_cmp);
        for (q, k) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
            let rank = ((q * v.len() as f64).ceil() as usize).max(1);
            let exact = v[rank - 1];
            // 1% relative, plus the 0.001 ms of JSON rounding.
            assert!(
                (num(k) - exact).abs() <= exact * 0.01 + 1e-3,
                "{op} {k}: {} vs {exact}",
                num(k)
            );
        }
    }
    // Filters: --op and --since.
    let only = json_report(&w, &["--op", "lock_acquire", "--op", "read_cache"]);
    assert_eq!(only.as_object().unwrap().len(), 2);
    let recent = json_report(&w, &["--since", "100s"]);
    assert_eq!(recent.as_object().map(|o| o.len()), Some(0));
    let now = (1_700_000_000 + 60_000).to_string();
    let out = metrics(&w)
        .args(["--json", "--since", "100s"])
        .env("FFKIT_TEST_NOW", &now)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n: u64 = v
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert_eq!(n, 100);
}

#[test]
fn comments_blank_and_malformed_rows_are_skipped_and_counted() {
    let w = World::new();
    fs::create_dir_all(w.cache()).unwrap();
    fs::write(
        w.metrics_log(),
        "# timestamp,operation,duration_ms\n1,a,1\n\n# a comment\nnot a row\n2,a,3\r\n3,a,\n4,a,5,6\n5,a,0.5",
    )
    .unwrap();
    let out = metrics(&w).arg("--json").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"a\": {\"count\": 3, \"total\": 4.5, \"avg\": 1.5, \"min\": 0.5, \"max\": 3, \"p50\": 1, \"p95\": 3, \"p99\": 3}}\n"
    );
    assert_eq!(
        stderr_of(&out),
        format!(
            "ffkit perf-metrics: skipped 3 malformed rows in {}\n",
            w.metrics_log().display()
        )
    );
    // The table has a header and one aligned row per operation.
    let out = metrics(&w).output().unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("OPERATION") && lines[0].ends_with("P99"));
    assert!(
        lines[1].starts_with("a ") && lines[1].contains("4.50 ms") && lines[1].ends_with("3.00 ms")
    );
    // A missing log: an empty JSON object, a note for the table.
    let w2 = World::new();
    metrics(&w2).arg("--json").assert().success().stdout("{}\n");
    metrics(&w2)
        .assert()
        .success()
        .stdout("")
        .stderr(predicate::str::contains("no metrics"));
}

#[test]
fn check_rules_exit_codes() {
    let w = World::new();
    for (op, ms) in [
        ("get_cache_size", "2"),
        ("get_cache_size", "4"),
        ("lock_acquire", "1500"),
    ] {
        metrics(&w).args(["record", op, ms]).assert().success();
    }
    let check = |rules: &[&str]| {
        let mut c = metrics(&w);
        c.arg("check").args(rules);
        c
    };
    check(&[
        "get_cache_size:p95<10ms",
        "lock_acquire:max<2s",
        "*:count>=1",
    ])
    .assert()
    .code(0)
    .stderr("");
    check(&["get_cache_size:avg<=3ms"]).assert().code(0);
    check(&["get_cache_size:p95<3ms", "lock_acquire:max<2s"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("get_cache_size:p95<3ms")
                .and(predicate::str::contains("4.00 ms"))
                .and(predicate::str::contains("lock_acquire").not()),
        );
    let out = check(&["*:p99<100ms"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr_of(&out).lines().count(), 1, "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("lock_acquire is 1.50 s"));
    // One row is "1 row", two are "2 rows".
    let out = check(&["lock_acquire:max<1s", "get_cache_size:max<3ms"])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(err.contains("is 1.50 s over 1 row (limit"), "{err}");
    assert!(err.contains("is 4.00 ms over 2 rows (limit"), "{err}");
    check(&["get_cache_size:p95<<3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("malformed rule"));
    check(&["get_cache_size:p95<10ms", "oops"]).assert().code(2);
    check(&["write_cache:avg<=1ms"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no data for write_cache"));
    check(&["write_cache:avg<=1ms", "--allow-missing"])
        .assert()
        .code(0);
    // A failure outranks missing data.
    check(&["write_cache:avg<=1ms", "lock_acquire:max<1s"])
        .assert()
        .code(1);
    let out = check(&["lock_acquire:max<1s", "write_cache:avg<=1ms", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["rules"][0]["status"], "fail");
    assert_eq!(v["rules"][0]["value"], 1500.0);
    assert_eq!(v["rules"][1]["status"], "missing");
    // No data at all for '*'.
    let w2 = World::new();
    metrics(&w2).args(["check", "*:p99<100ms"]).assert().code(4);
    metrics(&w2)
        .args(["check", "*:p99<100ms", "--allow-missing"])
        .assert()
        .code(0);
}

/// A minimal parser of the Prometheus text format: returns samples as
/// (name, labels, value), checking HELP/TYPE lines and escaping.
fn parse_prometheus(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let valid_name = |n: &str| {
        let mut b = n.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
    };
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap();
            assert!(valid_name(name), "{line}");
            if kind == "TYPE" {
                types.insert(name.to_string(), parts.next().unwrap().to_string());
            } else {
                assert_eq!(kind, "HELP", "{line}");
            }
            continue;
        }
        let brace = line.find('{').unwrap();
        let name = &line[..brace];
        assert!(valid_name(name), "{line}");
        let base = name.trim_end_matches("_sum").trim_end_matches("_count");
        assert_eq!(
            types.get(base).map(String::as_str),
            Some("summary"),
            "{line}"
        );
        let mut labels = BTreeMap::new();
        let mut chars = line[brace + 1..].chars();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert!(valid_name(&key), "{line}");
            assert_eq!(chars.next(), Some('"'));
            let mut val = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => match chars.next().unwrap() {
                        'n' => val.push('\n'),
                        c @ ('\\' | '"') => val.push(c),
                        c => panic!("bad escape \\{c} in {line}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline"),
                    c => val.push(c),
                }
            }
            labels.insert(key, val);
            match chars.next().unwrap() {
                ',' => continue,
                '}' => break,
                c => panic!("unexpected {c} in {line}"),
            }
        }
        let rest: String = chars.collect();
        let value: f64 = rest.strip_prefix(' ').unwrap().parse().unwrap();
        samples.push((name.to_string(), labels, value));
    }
    samples
}

#[test]
fn prometheus_output_parses_and_escapes_labels() {
    let w = World::new();
    fs::create_dir_all(w.cache()).unwrap();
    fs::write(
        w.metrics_log(),
        "1,write_cache,1\n2,write_cache,3\n3,we\"ird\\op,1500\n",
    )
    .unwrap();
    let out = metrics(&w).arg("--prometheus").output().unwrap();
    assert!(out.status.success());
    let samples = parse_prometheus(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(samples.len(), 10);
    let get = |name: &str, op: &str, q: Option<&str>| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name && l["operation"] == op && l.get("quantile").map(String::as_str) == q
            })
            .map(|s| s.2)
            .unwrap()
    };
    let m = "ffkit_operation_duration_seconds";
    assert_eq!(get(&format!("{m}_count"), "write_cache", None), 2.0);
    assert_eq!(get(&format!("{m}_sum"), "write_cache", None), 0.004);
    assert_eq!(get(m, "write_cache", Some("0.5")), 0.001);
    assert_eq!(get(m, "write_cache", Some("0.99")), 0.003);
    assert_eq!(get(m, "we\"ird\\op", Some("0.95")), 1.5);
}

// ---------------------------------------------------------------- a damaged or hostile log
// Damaged rows, bad arguments, a planted symlink or FIFO, a closed pipe
// (docs/hardening.md, docs/metrics.md).

#[test]
fn a_symlinked_metrics_log_is_never_written_through() {
    let w = seeded();
    let t = Target::new(&w, "metrics", b"# precious\n");
    plant(&w, ".perf-metrics.csv", &t.path);
    let mut c = w.cmd("cache-write");
    c.args(["k", "v"]);
    check(&w, "write with symlinked default metrics log", c, b"", 0, 0);
    t.assert_untouched("default log");
    let link = w.path().join("outside").join("metrics-link");
    std::os::unix::fs::symlink(&t.path, &link).unwrap();
    let mut c = w.cmd("cache-write");
    c.args(["k", "v"]).env("CACHE_PERF_METRICS", &link);
    check(&w, "write with symlinked CACHE_PERF_METRICS", c, b"", 0, 0);
    t.assert_untouched("CACHE_PERF_METRICS");
}

#[test]
fn a_damaged_metrics_log_is_counted_not_fatal() {
    let w = seeded();
    let mut log = b"# timestamp,operation,duration_ms\n".to_vec();
    let good = [
        "1700000000,write_cache,0.5",
        "1700000001,write_cache,1.5",
        "1700000002.25,get_cache_size,2",
    ];
    let bad: Vec<Vec<u8>> = vec![
        b"1,2".to_vec(),                                              // too few columns
        b"1700000000,x,1,4".to_vec(),                                 // too many
        b"1700000000".to_vec(),                                       // one column
        b"1700000000,x,abc".to_vec(),                                 // non-numeric duration
        b"1700000000,x,-1".to_vec(),                                  // negative
        b"1700000000,x,inf".to_vec(),                                 // not finite
        b"1700000000,x,nan".to_vec(),                                 //
        b"1700000000,x,1e3".to_vec(),                                 // exponent
        b"1700000000,x,".to_vec(),                                    // empty duration
        b"abc,x,1".to_vec(),                                          // bad timestamp
        b"-5,x,1".to_vec(),                                           //
        b"99999999999999999999,x,1".to_vec(),                         // timestamp overflow
        b",x,1".to_vec(),                                             //
        b"1700000000,,1".to_vec(),                                    // empty operation
        b"1700000000,\xff\xfe,1".to_vec(),                            // not UTF-8
        b"1700000000,x\0y,1\0".to_vec(),                              // NUL bytes
        vec![b'a'; 5 << 20],                                          // a 5 MiB line
        [b"1700000000,x,".as_slice(), &vec![b'9'; 400_000]].concat(), // huge number
    ];
    for g in &good {
        log.extend_from_slice(g.as_bytes());
        log.push(b'\n');
    }
    for b in &bad {
        log.extend_from_slice(b);
        log.extend_from_slice(b"\r\n");
    }
    log.extend_from_slice(b"\n   \n# a comment\n1700000003,get_cache_size,1"); // no final newline
    fs::write(w.metrics_log(), &log).unwrap();
    for fmt in [&[][..], &["--json"], &["--prometheus"]] {
        let mut c = w.cmd("perf-metrics");
        c.args(fmt);
        let out = check(&w, &format!("perf-metrics {fmt:?}"), c, b"", 0, 1);
        let err = stderr_of(&out);
        assert!(
            err.contains(&format!("skipped {} malformed rows", bad.len())),
            "{err}"
        );
        if fmt == ["--json"] {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["write_cache"]["count"], 2);
            assert_eq!(v["get_cache_size"]["count"], 2);
            assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
        }
    }
    let mut c = w.cmd("perf-metrics");
    c.args(["check", "write_cache:max<2ms", "get_cache_size:count>=2"]);
    check(&w, "check over a damaged log", c, b"", 0, 1);
    // cleanup drops the malformed rows and keeps the good ones (and comments).
    let mut c = w.cmd("perf-metrics");
    c.args(["cleanup", "--keep-rows", "100"]);
    let before = outside_snapshot(&w);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains("panicked"));
    assert_eq!(outside_snapshot(&w), before);
    let mut c = w.cmd("perf-metrics");
    c.arg("--json");
    let out = check(&w, "after cleanup", c, b"", 0, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["write_cache"]["count"], 2);
}

#[test]
fn bad_metrics_arguments_exit_2_and_leave_the_log_alone() {
    let w = seeded();
    fs::write(w.metrics_log(), b"1700000000,write_cache,1\n").unwrap();
    let cases: &[&[&str]] = &[
        &["record", "x", "-1"],
        &["record", "x", "abc"],
        &["record", "x", "1e999"],
        &["record", "x", "5x"],
        &["record", "x", "inf"],
        &["record", "x", "nan"],
        &["record", "a,b", "1"],
        &["record", "a\nb", "1"],
        &["record", "", "1"],
        &["record", "x", "1", "2", "3"],
        &["record", "x", "5", "1"],
        &["record", "x", "1700000000", "1700000000000"],
        &["record", "--unit", "fortnight", "x", "1", "2"],
        &["--since", "5x"],
        &["--since", "-1"],
        &["--since", "99999999999999999999"],
        &["cleanup", "--keep-rows", "-1"],
        &["cleanup", "--older-than", "1e999"],
        // Options that would be ignored: before, `cleanup --since 7d` kept
        // the newest 1000 rows and exited 0, `--op ''` matched nothing.
        &["cleanup", "--since", "7d"],
        &["record", "--since", "1h", "x", "1"],
        &["time", "--since", "1h", "x", "--", "true"],
        &["--op", ""],
        &["check", "--op", "", "x:max<1"],
        &["check", "x"],
        &["check", "x:p0<1"],
        &["check", "x:p101<1"],
        &["check", "x:p95<-1"],
        &["check", "x:count<1ms"],
        &["check", "x:p95<1e3"],
        &["check", "a,b:p95<1"],
        &["check", "x:max<1yr"],
        &["check", "x:p95"],
    ];
    for args in cases {
        let mut c = w.cmd("perf-metrics");
        c.args(*args);
        check(&w, &format!("perf-metrics {args:?}"), c, b"", 2, 1);
        assert_eq!(
            fs::read(w.metrics_log()).unwrap(),
            b"1700000000,write_cache,1\n"
        );
    } // Above 2^31 - 1 ms a browser's setInterval fires every millisecond, so
    // a longer --refresh made every open page hammer the server; before,
    // serve started (killed after 60 s here: a failure, not a hang).
    for refresh in ["86401", "4294967295"] {
        let mut c = w.cmd("perf-metrics");
        c.args(["serve", "--listen", "127.0.0.1:0", "--refresh", refresh]);
        let out = output_within(c, &format!("serve --refresh {refresh}"));
        assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains("86400"), "{}", stderr_of(&out));
    }
}

#[test]
fn perf_metrics_refuses_symlinked_and_non_file_logs() {
    let w = seeded();
    let t = Target::new(&w, "metrics", b"1700000000,x,1\n");
    for planted in ["symlink", "fifo"] {
        let log = w.metrics_log();
        let _ = fs::remove_file(&log);
        if planted == "symlink" {
            std::os::unix::fs::symlink(&t.path, &log).unwrap();
        } else {
            mkfifo(&log);
        }
        let code = if planted == "symlink" { 3 } else { 1 };
        for args in [
            &[][..],
            &["record", "y", "1"],
            &["cleanup"],
            &["check", "x:max<1"],
        ] {
            let mut c = w.cmd("perf-metrics");
            c.args(args);
            let out = output_within(c, &format!("{planted} {args:?}"));
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(code), "{planted} {args:?}: {err}");
            assert_eq!(stderr_lines(&out).len(), 1, "{err}");
            assert!(err.contains(".perf-metrics.csv"), "{err}");
        }
        t.assert_untouched(planted);
    }
}

#[test]
fn perf_metrics_into_a_closed_pipe_exits_quietly() {
    let w = World::new();
    fs::create_dir_all(w.cache()).unwrap();
    let mut log = String::new();
    for i in 0..5000 {
        log.push_str(&format!("1700000000,op{i},1.5\n"));
    }
    fs::write(w.metrics_log(), log).unwrap();
    for fmt in ["", "--json", "--prometheus"] {
        let (code, err) = pipeline(&w, &format!("perf-metrics {fmt}"), "head -1");
        assert_eq!(code, 0, "perf-metrics {fmt} | head -1: {err}");
        assert!(err.is_empty(), "perf-metrics {fmt}: stderr {err:?}");
    }
}

/// fuzz `metrics_row`, crash-d723536d: `record --unit s OP START END` with
/// an END near f64::MAX wrote the row `…,op,inf`, which every reader then
/// rejected as malformed. Now exit 2 and nothing written.
#[test]
fn fuzz_regression_record_of_an_overflowing_duration_is_refused() {
    let w = seeded();
    fs::write(w.metrics_log(), b"1700000000,write_cache,1\n").unwrap();
    let end = "9".repeat(306);
    let mut c = w.cmd("perf-metrics");
    c.args(["record", "--unit", "s", "op", "888885555555555", &end]);
    let out = check(&w, "overflowing record", c, b"", 2, 1);
    assert!(stderr_of(&out).contains("too large"), "{}", stderr_of(&out));
    assert_eq!(
        fs::read(w.metrics_log()).unwrap(),
        b"1700000000,write_cache,1\n"
    );
}

/// A trim (the automatic one, `CACHE_PERF_MAX_BYTES`) and a cleanup
/// rewrite the log into a new file: it keeps the log's permission bits, so
/// a log a group shares stays writable for the others. Before, both left
/// it 0600 (the temp file's mode).
#[test]
fn trim_and_cleanup_keep_the_logs_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let w = World::new();
    let log = w.path().join("shared.csv");
    let record = |extra: &[(&str, &str)]| {
        let o = w
            .cmd("perf-metrics")
            .args(["record", "op", "1"])
            .env("CACHE_PERF_METRICS", &log)
            .envs(extra.iter().copied())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
    };
    for _ in 0..3 {
        record(&[]);
    }
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    fs::set_permissions(&log, fs::Permissions::from_mode(0o664)).unwrap();
    // Held open so its inode number cannot be handed to the rewritten file
    // (ext4 reuses a freed one: a loaded suite run saw the same number).
    let old = fs::File::open(&log).unwrap();
    let before = old.metadata().unwrap().ino();
    for _ in 0..20 {
        record(&[("CACHE_PERF_MAX_BYTES", "100")]);
    }
    assert_ne!(fs::metadata(&log).unwrap().ino(), before, "trimmed");
    assert_eq!(mode(&log), 0o664, "after the automatic trim");
    fs::set_permissions(&log, fs::Permissions::from_mode(0o640)).unwrap();
    let old = fs::File::open(&log).unwrap();
    let before = old.metadata().unwrap().ino();
    let o = w
        .cmd("perf-metrics")
        .args(["cleanup", "--keep-rows", "1"])
        .env("CACHE_PERF_METRICS", &log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_ne!(fs::metadata(&log).unwrap().ino(), before, "rewritten");
    assert_eq!(mode(&log), 0o640, "after a cleanup");
}

/// A duration is below 10^15 ms (about 31,700 years), so no total of any
/// log can overflow. Before, `record` took any finite number, and two rows
/// of 1.7e308 ms summed to infinity: `--json` (and so
/// `get_performance_metrics` and the served API) printed `"total": inf`,
/// which is not JSON, and the table `inf s`.
#[test]
fn durations_are_bounded_so_every_total_is_finite_json() {
    let w = seeded();
    let huge = format!("17{}", "0".repeat(307));
    fs::write(
        w.metrics_log(),
        format!(
            "1700000000,op,{huge}\n1700000000,op,{huge}\n\
             1700000000,op,1000000000000000\n1700000000,op,999999999999999\n1700000000,op,1\n"
        ),
    )
    .unwrap();
    let mut c = w.cmd("perf-metrics");
    c.arg("--json");
    let out = check(&w, "--json over absurd durations", c, b"", 0, 1);
    assert!(
        stderr_of(&out).contains("skipped 3 malformed rows"),
        "{}",
        stderr_of(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["op"]["count"], 2);
    assert_eq!(v["op"]["max"].as_f64(), Some(999_999_999_999_999.0));
    for args in [
        &["record", "x", &huge][..],
        &["record", "x", "1000000000000000"],
    ] {
        let mut c = w.cmd("perf-metrics");
        c.args(args);
        let before = fs::read(w.metrics_log()).unwrap();
        check(&w, &format!("{args:?}"), c, b"", 2, 1);
        assert_eq!(fs::read(w.metrics_log()).unwrap(), before);
    }
    let mut c = w.cmd("perf-metrics");
    c.args(["record", "x", "999999999999999"]);
    check(&w, "the largest duration", c, b"", 0, 0);
}

/// A log that ends mid-line (an old script's `printf '%s,%s,%s' >> log`,
/// an editor that drops the final newline) gets a newline before the next
/// row, on every path: the binary, the builtin's kept descriptor (a line
/// left unfinished between two of its rows) and the fallbacks. Before, the
/// row was glued to it: `…,old,5` + `1796…,new,1` made one malformed line
/// (both rows lost), `9` + `1796…,b,1` a row with a wrong timestamp.
#[test]
fn a_row_appended_after_an_unfinished_line_starts_a_line_of_its_own() {
    let script = "record_performance_metric a 1 2\n\
                  printf 9 >> \"$CACHE_PERF_METRICS\"\n\
                  record_performance_metric b 1 2\n\
                  printf 1700000000,c,3 >> \"$CACHE_PERF_METRICS\"\n\
                  record_performance_metric d 1 2\n\
                  get_performance_metrics";
    let binary = "B=$FFKIT_BIN\n\"$B\" perf-metrics record a 1\n\
                  printf 9 >> \"$CACHE_PERF_METRICS\"\n\
                  \"$B\" perf-metrics record b 1\n\
                  printf 1700000000,c,3 >> \"$CACHE_PERF_METRICS\"\n\
                  \"$B\" perf-metrics record d 1\n\
                  \"$B\" perf-metrics --json";
    for way in crate::shell_paths::ways().into_iter().chain(["binary"]) {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log.csv");
        fs::write(&log, "1700000000,old,5").unwrap();
        let mut c = if way == "binary" {
            crate::shell_paths::sh("fallback", tmp.path(), tmp.path(), binary)
        } else {
            crate::shell_paths::sh(way, tmp.path(), tmp.path(), script)
        };
        let o = c.env("CACHE_PERF_METRICS", &log).output().unwrap();
        let (out, err) = crate::shell_paths::text(&o);
        assert!(o.status.success(), "{way}: {err}");
        assert!(err.contains("skipped 1 malformed row "), "{way}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{way}: {e}: {out}"));
        for op in ["old", "a", "b", "c", "d"] {
            assert_eq!(v[op]["count"], 1, "{way}: {op}: {v}");
        }
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("1700000000,old,5\n"), "{way}: {text}");
        assert!(
            text.contains("\n9\n") && text.contains("\n1700000000,c,3\n"),
            "{way}: {text}"
        );
    }
}

/// Attack finding: the builtin's kept descriptor read the log's last byte
/// only when the size differed from the one its last row left. A log
/// rewritten in place to that same size but ending mid-line (`cat
/// backup > log`, an editor saving over it) had the next row glued to the
/// unfinished line: both lost. The kept descriptor now reads the last byte
/// on every row, like the open-per-append path.
#[test]
fn a_row_after_a_same_size_in_place_rewrite_ending_mid_line_starts_its_own_line() {
    let script = "record_performance_metric a 1 2\n\
                  L=$CACHE_PERF_METRICS; s=$(wc -c < \"$L\")\n\
                  { head -c $((s - 1)) \"$L\"; printf x; } > \"$L.new\"\n\
                  cat \"$L.new\" > \"$L\"\n\
                  [ \"$(wc -c < \"$L\")\" -eq \"$s\" ] || exit 98\n\
                  record_performance_metric b 1 2";
    for way in crate::shell_paths::ways() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log.csv");
        let o = crate::shell_paths::sh(way, tmp.path(), tmp.path(), script)
            .env("CACHE_PERF_METRICS", &log)
            .output()
            .unwrap();
        let (_, err) = crate::shell_paths::text(&o);
        assert!(o.status.success(), "{way}: {err}");
        let text = fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{way}: {text:?}");
        assert!(lines[0].ends_with(",a,1x"), "{way}: {text:?}");
        assert!(lines[1].ends_with(",b,1"), "{way}: {text:?}");
    }
}

/// The reader takes any UTF-8 operation name without a comma, so a log
/// (one a group shares, one an old script wrote) can hold terminal control
/// sequences. The table and `check`'s lines show them escaped (`\u{1b}`,
/// `\t`, `\u{7f}`): before, `ESC ] 0 ; … BEL` retitled the terminal, `ESC
/// [ 2 J` cleared it, and a CR hid what came before it.
#[test]
fn operation_names_cannot_send_control_sequences_to_the_terminal() {
    let w = seeded();
    fs::write(
        w.metrics_log(),
        b"1700000000,\x1b]0;pwned\x07title,1\n1700000000,clear\x1b[2J,2\n\
          1700000000,tab\there,3\n1700000000,del\x7fx\xc2\x9b,4\n1700000000,plain-op,5\n",
    )
    .unwrap();
    let clean = |what: &str, b: &[u8]| {
        assert!(
            !b.iter().any(|&c| (c < 0x20 && c != b'\n') || c == 0x7f)
                && !String::from_utf8_lossy(b).contains('\u{9b}'),
            "{what}: {:?}",
            String::from_utf8_lossy(b)
        );
    };
    let c = w.cmd("perf-metrics");
    let out = check(&w, "the table", c, b"", 0, 0);
    clean("table", &out.stdout);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for shown in [
        "\\u{1b}]0;pwned\\u{7}title",
        "clear\\u{1b}[2J",
        "tab\\there",
        "del\\u{7f}x\\u{9b}",
    ] {
        assert!(table.contains(shown), "{shown}: {table}");
    }
    // The columns still line up: every line as wide as the header.
    let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
    assert!(widths.iter().all(|&n| n == widths[0]), "{table}");
    let mut c = w.cmd("perf-metrics");
    c.args(["check", "*:max<0.5"]);
    let out = check(&w, "check", c, b"", 1, 5);
    clean("check", &out.stderr);
    assert!(
        stderr_of(&out).contains("max of \\u{1b}]0;pwned\\u{7}title is"),
        "{}",
        stderr_of(&out)
    );
}

/// Attack finding: only C0, DEL and C1 were escaped, so a name with a
/// bidirectional override (U+202E, as in "Trojan Source") reordered the
/// rest of its table line on a bidi-capable terminal (VTE, Konsole): the
/// numbers after it showed reversed. U+2028/U+2029 broke the line on some.
/// They are escaped too, in the table and in `check`'s lines.
#[test]
fn operation_names_cannot_reorder_or_break_the_terminal_line() {
    let w = seeded();
    fs::write(
        w.metrics_log(),
        "1700000000,rtl\u{202e}x,1\n1700000000,iso\u{2066}y\u{2069},2\n\
         1700000000,ls\u{2028}ps\u{2029},3\n1700000000,mark\u{200f}\u{61c},4\n\
         1700000000,caf\u{e9}-\u{65e5}\u{672c},5\n",
    )
    .unwrap();
    let out = check(&w, "the table", w.cmd("perf-metrics"), b"", 0, 0);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for shown in [
        "rtl\\u{202e}x",
        "iso\\u{2066}y\\u{2069}",
        "ls\\u{2028}ps\\u{2029}",
        "mark\\u{200f}\\u{61c}",
        "caf\u{e9}-\u{65e5}\u{672c}",
    ] {
        assert!(table.contains(shown), "{shown}: {table}");
    }
    let mut c = w.cmd("perf-metrics");
    c.args(["check", "*:max<0.5"]);
    let out = check(&w, "check", c, b"", 1, 5);
    let err = stderr_of(&out);
    assert!(err.contains("max of rtl\\u{202e}x is"), "{err}");
    assert!(
        !err.contains('\u{202e}') && !err.contains('\u{2028}'),
        "{err}"
    );
}

/// Attack finding: a table whose --op or --since matched no row said "no
/// metrics in LOG" of a log full of rows. It now says the filter matched
/// nothing; a log without rows still says "no metrics".
#[test]
fn an_empty_filtered_table_blames_the_filter_not_the_log() {
    let w = seeded();
    fs::write(w.metrics_log(), "1700000000,a,1\n").unwrap();
    for args in [&["--op", "nosuch"][..], &["--since", "1s"]] {
        let mut c = w.cmd("perf-metrics");
        c.args(args);
        let out = check(&w, "filtered", c, b"", 0, 1);
        let err = stderr_of(&out);
        assert!(
            err.contains("match --op/--since") && !err.contains("no metrics"),
            "{args:?}: {err}"
        );
    }
    fs::write(w.metrics_log(), "").unwrap();
    let out = check(&w, "empty", w.cmd("perf-metrics"), b"", 0, 1);
    assert!(
        stderr_of(&out).contains("no metrics in"),
        "{}",
        stderr_of(&out)
    );
}

/// The page's size is bounded whatever the number of operation names: a
/// log of 1,100 names (one row each) made a 5.5 MB page, one of 20,000 a
/// 220 MB one, and four `GET /` of it at once held 1.8 GB in the server
/// for 48 s. Now charts for the 50 busiest, table rows for the 1,000
/// busiest, and a note saying so; `--json` still has every one.
#[test]
fn the_page_of_a_log_with_many_operation_names_stays_small() {
    let w = seeded();
    let mut log = String::new();
    for i in 0..1_100 {
        log.push_str(&format!("{},op{i:04},1\n", 1_700_000_000 + i));
    }
    log.push_str("1700000000,op1099,2\n");
    fs::write(w.metrics_log(), log).unwrap();
    let page = w.path().join("page.html");
    let o = w
        .cmd("perf-metrics")
        .args(["report", "--html"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.len() < 4 << 20, "{} bytes", html.len());
    assert_eq!(html.matches("<article").count(), 50);
    assert!(
        html.contains("data-op=\"op1099\">"),
        "the busiest is charted"
    );
    assert_eq!(json_report(&w, &[]).as_object().unwrap().len(), 1_100);
}

/// bash writes `$EPOCHREALTIME` with the locale's decimal point:
/// `1796666136,023404` under de_DE or fr_FR. The docs name it as a START
/// and END of `record` and `record_performance_metric`; before, both were
/// exit 2 there ("invalid time stamp"). A comma is taken as the decimal
/// point of a stamp, on every path (never in a row's duration, where it is
/// the CSV separator).
#[test]
fn epochrealtime_with_a_decimal_comma_is_a_time_stamp_on_every_path() {
    let script = "record_performance_metric op 1796666136,023404 1796666136,025904 && \
                  get_performance_metrics";
    let binary = "\"$FFKIT_BIN\" perf-metrics record op 1796666136,023404 1796666136,025904 && \
                  \"$FFKIT_BIN\" perf-metrics --json";
    for way in crate::shell_paths::ways().into_iter().chain(["binary"]) {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log.csv");
        let s = if way == "binary" { binary } else { script };
        let way_in = if way == "binary" { "fallback" } else { way };
        let o = crate::shell_paths::sh(way_in, tmp.path(), tmp.path(), s)
            .env("CACHE_PERF_METRICS", &log)
            .output()
            .unwrap();
        let (out, err) = crate::shell_paths::text(&o);
        assert!(o.status.success(), "{way}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{way}: {e}: {out}"));
        assert_eq!(v["op"]["total"].as_f64(), Some(2.5), "{way}: {v}");
    }
    // Not a duration: `record op 2,5` is still exit 2.
    let w = seeded();
    let mut c = w.cmd("perf-metrics");
    c.args(["record", "op", "2,5"]);
    check(&w, "record op 2,5", c, b"", 2, 1);
}

/// A line of 256 KiB or more is far longer than any row: the reader reads
/// past it in its 256 KiB buffer and counts it as one malformed row. Before,
/// the buffer grew to hold it, so a 40 MiB line (a log without newlines, a
/// file CACHE_PERF_METRICS named by mistake) needed 64 MiB, and 200 MB
/// 270 MB, per reader: under `ulimit -v 60000` the report aborted (exit
/// 134, "memory allocation failed").
#[test]
fn a_line_without_end_is_read_past_in_bounded_memory() {
    let w = seeded();
    let mut log = b"1700000000,op,1\n".to_vec();
    log.resize(log.len() + (40 << 20), b'x');
    log.extend_from_slice(b"\n1700000001,op,2\n");
    fs::write(w.metrics_log(), &log).unwrap();
    drop(log);
    let mut c = Command::new("bash");
    w.isolate(&mut c);
    let out = c
        .arg("-c")
        .arg("ulimit -v 60000 && exec \"$0\" perf-metrics --json")
        .arg(bin())
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("skipped 1 malformed row "), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["op"]["count"], 2, "{v}");
}

/// A metrics log with a second name (`ln victim DIR/.perf-metrics.csv`, a
/// dedup tool, `cp -al`): rows were appended to the other file too. The
/// path now gets a file of its own with the same rows before a row goes
/// in, for the default log and a `CACHE_PERF_METRICS` alike; the other
/// name keeps its bytes and mode and is never written again.
#[test]
fn a_metrics_log_with_a_second_name_is_split_off_never_written_through() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let w = seeded();
    let chosen = w.path().join("outside").join("chosen.csv");
    for (what, log, env) in [
        ("default log", w.metrics_log(), None),
        ("CACHE_PERF_METRICS", chosen.clone(), Some(&chosen)),
    ] {
        let t = Target::new(&w, &format!("victim-{}", env.is_some()), b"1,precious,1\n");
        fs::set_permissions(&t.path, fs::Permissions::from_mode(0o640)).unwrap();
        let _ = fs::remove_file(&log);
        fs::hard_link(&t.path, &log).unwrap();
        let mut c = w.cmd("cache-write");
        c.args(["k", "v"]);
        if let Some(p) = env {
            c.env("CACHE_PERF_METRICS", p);
        }
        let o = c.output().unwrap();
        assert!(o.status.success() && o.stderr.is_empty(), "{what}: {o:?}");
        t.assert_untouched(what);
        let m = fs::metadata(&t.path).unwrap();
        assert_eq!((m.nlink(), m.mode() & 0o777), (1, 0o640), "{what}: victim");
        let rows = fs::read_to_string(&log).unwrap();
        assert!(
            rows.starts_with("1,precious,1\n") && rows.contains(",write_cache,"),
            "{what}: {rows:?}"
        );
        assert_eq!(fs::metadata(&log).unwrap().nlink(), 1, "{what}");
    }
}

/// A log with a second name in a dir its user cannot write: the copy that
/// would give it a file of its own cannot be made, so the row is refused
/// (never written through the other name) with one line that says why,
/// exit 3; a self-timing row is dropped silently and the applet succeeds.
#[test]
fn a_linked_log_in_a_dir_its_user_cannot_write_is_refused_saying_why() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
    let w = seeded();
    let Some(mut rec) = as_nobody(&w, "the unwritable dir of a linked log") else {
        return;
    };
    let ro = w.path().join("ro");
    let cache = w.path().join("nobodys-cache");
    fs::create_dir_all(&ro).unwrap();
    fs::create_dir_all(&cache).unwrap();
    let t = Target::new(&w, "linked-victim", b"1,precious,1\n");
    let log = ro.join("log.csv");
    fs::hard_link(&t.path, &log).unwrap();
    for p in [&ro, &cache, &t.path, &w.path().join("outside")] {
        chown(p, Some(65534), Some(65534)).unwrap();
    }
    fs::set_permissions(&t.path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let ino = fs::metadata(&log).unwrap().ino();
    let o = rec
        .args(["perf-metrics", "record", "op", "1"])
        .env("CACHE_PERF_METRICS", &log)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{}: it has 2 names", log.display()))
            && err.contains("Permission denied"),
        "{err}"
    );
    let mut c = as_nobody(&w, "the unwritable dir of a linked log").unwrap();
    let o = c
        .args(["cache-write", "--dir"])
        .arg(&cache)
        .args(["k", "v"])
        .env("CACHE_PERF_METRICS", &log)
        .output()
        .unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "{o:?}");
    t.assert_untouched("linked victim");
    assert_eq!(fs::metadata(&log).unwrap().ino(), ino);
}
