//! `perf-metrics`: report, record, time, check, clean and serve the CSV
//! metrics log.
//!
//! The report formats are the exporters of `metrics::export` and the HTTP
//! server is `metrics::serve`; everything here is argument handling and
//! printing.

use super::ExitCode;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{Ctx, dir_arg, json_arg};
use crate::error::{Error, Result};
use crate::metrics::aggregate::{self, Filter, Report};
use crate::metrics::check::{self, Status};
use crate::metrics::export::{self, Exporter, Html, Json, Prometheus, Table, table::human_ms};
use crate::metrics::log::{self, Cleanup};
use crate::metrics::serve;
use crate::metrics::{self, StampUnit};
use crate::units;

/// Rows `cleanup` keeps when given no limit (the old library's
/// `cleanup_performance_metrics` took no arguments).
pub(super) const DEFAULT_KEEP_ROWS: u64 = 1000;

fn since_arg() -> Arg {
    Arg::new("since")
        .long("since")
        .value_name("DURATION")
        .global(true)
        .value_parser(|s: &str| units::parse_duration(s))
        .help("Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup")
}

pub(super) fn command() -> Command {
    Command::new("perf-metrics")
        .about("Report, record, time and check operation timings in the metrics log")
        .long_about(
            "Aggregate the CSV metrics log (timestamp,operation,duration_ms): per operation \
             count, total, avg, min, max, p50, p95, p99, as a table, JSON or Prometheus text. \
             The log is CACHE_PERF_METRICS, else <cache-dir>/.perf-metrics.csv. Malformed \
             rows are skipped and counted in one note on stderr.",
        )
        .args_conflicts_with_subcommands(true)
        .arg(dir_arg().global(true))
        .arg(since_arg())
        .arg(
            json_arg()
                .help("Print {\"OP\": {\"count\":…,\"total\":…,\"avg\":…,\"min\":…,\"max\":…,\"p50\":…,\"p95\":…,\"p99\":…}} in ms"),
        )
        .arg(
            Arg::new("prometheus")
                .long("prometheus")
                .action(ArgAction::SetTrue)
                .conflicts_with("json")
                .help("Print the Prometheus text exposition format (a summary per operation)"),
        )
        .arg(
            Arg::new("textfile")
                .long("textfile")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help("With --prometheus: write PATH atomically (temp file + rename) instead of stdout, for node_exporter's textfile collector"),
        )
        .arg(op_arg())
        .subcommand(
            Command::new("record")
                .about("Append one row: OP DURATION_MS, or OP START END / --start S --end E")
                .long_about(
                    "Append one row for OP. The duration is DURATION_MS (fractional ms), or \
                     END - START (as the old record_performance_metric op start end passed it). \
                     The unit of START/END is guessed from their size: ~1e9 epoch seconds \
                     (date +%s, $EPOCHREALTIME), ~1e12 ms (date +%s%3N), ~1e15 µs, ~1e18 ns \
                     (date +%s%N); values below 1e8 are taken as ms. --unit overrides. With \
                     CACHE_PERF_MONITORING=disabled nothing is done.",
                )
                .arg(Arg::new("operation").value_name("OP").required(true))
                .arg(
                    Arg::new("values")
                        .value_name("DURATION_MS | START END")
                        .num_args(0..=2)
                        .allow_hyphen_values(true),
                )
                .arg(
                    Arg::new("start")
                        .long("start")
                        .value_name("S")
                        .requires("end")
                        .conflicts_with("values"),
                )
                .arg(Arg::new("end").long("end").value_name("E").requires("start"))
                .arg(
                    Arg::new("unit")
                        .long("unit")
                        .value_name("UNIT")
                        .default_value("auto")
                        .help("Unit of START/END: auto, s, ms, us, ns"),
                ),
        )
        .subcommand(
            Command::new("time")
                .about("Run CMD, record its wall time as OP, exit with its status")
                .long_about(
                    "Run CMD with ARGS, record its wall time under OP (whatever its exit \
                     status), and exit with CMD's status, or 128+N when a signal N killed it. \
                     127: CMD not found; 126: CMD cannot be run.",
                )
                .arg(Arg::new("operation").value_name("OP").required(true))
                .arg(
                    Arg::new("cmd")
                        .value_name("CMD")
                        .required(true)
                        .num_args(1..)
                        .last(true)
                        .value_parser(clap::value_parser!(OsString)),
                ),
        )
        .subcommand(
            Command::new("check")
                .about("Check health rules such as get_cache_size:p95<10ms")
                .long_about(
                    "Check rules OP:STAT CMP VALUE (get_cache_size:p95<10ms, lock_acquire:max<2s, \
                     write_cache:avg<=1ms, *:p99<100ms). STAT: count, total, avg, min, max, pQ; \
                     CMP: <, <=, >, >=; VALUE: a number with ns, us, ms (default), s, m or h. \
                     Exit 0 when every rule holds, 1 when one fails (one line each on stderr), \
                     2 for a malformed rule, 4 when an operation has no data (unless \
                     --allow-missing).",
                )
                .arg(Arg::new("rules").value_name("RULE").required(true).num_args(1..))
                .arg(
                    Arg::new("allow_missing")
                        .long("allow-missing")
                        .action(ArgAction::SetTrue)
                        .help("An operation without data passes"),
                )
                .arg(json_arg().help("Print the verdict of every rule as JSON")),
        )
        .subcommand(
            Command::new("serve")
                .about("Serve the metrics over HTTP: JSON, Prometheus text and a live page")
                .long_about(
                    "Serve the metrics log over HTTP until killed: GET /api/performance/metrics \
                     (the numbers of perf-metrics --json as {\"operations\": [{\"name\", …}], \
                     \"totalTime\": …}, readable from any origin: CORS), GET /metrics (Prometheus \
                     text, CORS too) and GET / (a \
                     self-contained page with a table and charts per operation, for the 50 \
                     busiest, that refreshes \
                     itself, fits a phone, and picks and zooms its time range), each taking \
                     ?since=DURATION or ?from=EPOCH&to=EPOCH, and ?op=NAME (repeatable). Listens on \
                     loopback unless --listen says otherwise. There is no authentication: anyone \
                     who can connect can read the metrics. --since sets the filter of requests \
                     that give none.",
                )
                .arg(
                    Arg::new("listen")
                        .long("listen")
                        .value_name("ADDR")
                        .default_value(serve::DEFAULT_LISTEN)
                        .value_parser(parse_listen)
                        .help("Address to listen on: IP:PORT, [IPv6]:PORT, localhost:PORT, or PORT for 127.0.0.1 (port 0: any free port)"),
                )
                .arg(
                    Arg::new("refresh")
                        .long("refresh")
                        .value_name("SECONDS")
                        .default_value("10")
                        .value_parser(
                            clap::value_parser!(u32)
                                .range(0..=i64::from(crate::metrics::serve::MAX_REFRESH)),
                        )
                        .help("Seconds between the page's own refreshes, at most 86400 (0: only its Refresh button)"),
                ),
        )
        .subcommand(
            Command::new("report")
                .about("Write the metrics page as one static HTML file")
                .long_about(
                    "Write the page that perf-metrics serve shows (table; per operation, for the 50 \
                     busiest, the latency distribution, p50/p95/p99 and the rate over time) as one \
                     self-contained HTML \
                     file, atomically (a temp file renamed over FILE), e.g. as a CI artifact. It \
                     loads nothing from the network; its one script (the operation filter, local \
                     times) is the only one its Content-Security-Policy lets run. Its time range \
                     is --since's.",
                )
                .arg(
                    Arg::new("html")
                        .long("html")
                        .value_name("FILE")
                        .required(true)
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("Write the page to FILE"),
                )
                .arg(op_arg()),
        )
        .subcommand(
            Command::new("cleanup")
                .about("Trim the log atomically (default: keep the newest 1000 rows)")
                .long_about(
                    "Rewrite the log atomically, safe with concurrent writers: drop rows older \
                     than --older-than, keep at most --keep-rows newest rows, and drop malformed \
                     rows; comment lines stay. With neither option, keeps the newest 1000 rows \
                     (what the old cleanup_performance_metrics did without arguments).",
                )
                .arg(
                    Arg::new("keep_rows")
                        .long("keep-rows")
                        .value_name("N")
                        .value_parser(clap::value_parser!(u64))
                        .help("Keep at most the newest N rows"),
                )
                .arg(
                    Arg::new("older_than")
                        .long("older-than")
                        .value_name("DURATION")
                        .value_parser(|s: &str| units::parse_duration(s))
                        .help("Drop rows older than DURATION (e.g. 7d)"),
                )
                .arg(json_arg().help("Print {\"kept\":…,\"removed\":…,\"malformed\":…}")),
        )
}

fn op_arg() -> Arg {
    Arg::new("op")
        .long("op")
        .value_name("NAME")
        .action(ArgAction::Append)
        // An empty name matches no row: a typo (`--op "$OP"` unset), not a
        // filter; the server's `?op=` says 400 to it too.
        .value_parser(clap::builder::NonEmptyStringValueParser::new())
        .help("Only this operation (repeatable)")
}

/// `--listen`: `IP:PORT`, `[V6]:PORT`, `localhost:PORT`, or a bare port
/// (loopback). No name lookup: an address to listen on is a local one, and
/// resolving names would link the resolver into every applet's start-up.
fn parse_listen(s: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let port = s.strip_prefix("localhost:").unwrap_or(s);
    port.parse::<u16>()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .map_err(|_| format!("expected IP:PORT, [IPv6]:PORT, localhost:PORT or PORT, got '{s}'"))
}

fn ops_of(m: &ArgMatches) -> Vec<String> {
    m.get_many::<String>("op")
        .map(|v| v.cloned().collect())
        .unwrap_or_default()
}

enum Format {
    Table,
    Json,
    Prometheus,
}

pub(super) fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let dir = m.get_one::<PathBuf>("dir").cloned();
    let since = m.get_one::<Duration>("since").copied();
    let path = metrics::log_path(&ctx.cfg, dir.as_deref())?;
    let since = since.map(|d| ctx.cfg.now() - d.as_secs() as i64);
    // `--since` is global (it may sit on the subcommand), so clap takes it
    // everywhere; where no rows are read it would be ignored, and
    // `cleanup --since 7d` would keep the newest 1000 rows, not a week.
    if let Some((sub @ ("record" | "time" | "cleanup"), _)) = m.subcommand()
        && since.is_some()
    {
        let hint = if sub == "cleanup" {
            " (to drop rows older than DURATION: --older-than)"
        } else {
            ""
        };
        return Err(Error::Usage(format!(
            "--since does not apply to {sub}{hint} (see '{} {sub} --help')",
            ctx.prog
        )));
    }
    match m.subcommand() {
        Some(("record", sm)) => record(sm, ctx, &path),
        Some(("time", sm)) => time(sm, ctx, &path),
        Some(("check", sm)) => run_check(sm, ctx, &path, since),
        Some(("cleanup", sm)) => cleanup(sm, ctx, &path),
        Some(("serve", sm)) => serve(sm, ctx, &path, since_text(sm)),
        Some(("report", sm)) => html_report(sm, ctx, &path, since),
        _ => {
            let format = if m.get_flag("json") {
                Format::Json
            } else if m.get_flag("prometheus") {
                Format::Prometheus
            } else {
                Format::Table
            };
            let textfile = m.get_one::<PathBuf>("textfile").cloned();
            // clap's `requires` counts the flag's default (false) as given.
            if textfile.is_some() && !matches!(format, Format::Prometheus) {
                return Err(Error::Usage(format!(
                    "--textfile needs --prometheus (see '{} --help')",
                    ctx.prog
                )));
            }
            let filter = Filter {
                ops: ops_of(m),
                since,
                until: None,
            };
            report(ctx, &path, filter, format, textfile.as_deref())
        }
    }
}

/// The one note about rows the aggregation skipped.
fn note_malformed(ctx: &Ctx, malformed: u64, path: &Path) {
    if malformed > 0 {
        ctx.note(format_args!(
            "skipped {malformed} malformed row{} in {}",
            if malformed == 1 { "" } else { "s" },
            path.display()
        ));
    }
}

fn read_report(ctx: &Ctx, path: &Path, filter: Filter) -> Result<Report> {
    let r = aggregate::aggregate(path, filter)?;
    note_malformed(ctx, r.malformed, path);
    Ok(r)
}

fn report(
    ctx: &mut Ctx,
    path: &Path,
    filter: Filter,
    format: Format,
    textfile: Option<&Path>,
) -> Result<ExitCode> {
    // With a filter, an empty answer is about the filter, not the log.
    let filtered = !filter.ops.is_empty() || filter.since.is_some() || filter.until.is_some();
    let r = read_report(ctx, path, filter)?;
    let exporter: &dyn Exporter = match format {
        Format::Table => &Table,
        Format::Json => &Json,
        Format::Prometheus => &Prometheus,
    };
    if matches!(format, Format::Table) && r.ops.is_empty() {
        if filtered {
            ctx.note(format_args!(
                "no rows in {} match --op/--since",
                path.display()
            ));
        } else {
            ctx.note(format_args!("no metrics in {}", path.display()));
        }
    }
    let mut text = exporter.render(&r);
    if let (Format::Table, Some(h)) = (&format, metrics::hit_ratio::HitRatio::of(&r)) {
        text.push_str(&format!(
            "{h}
"
        ));
    }
    match textfile {
        Some(dest) if !export::is_standard_output(dest) => {
            export::write_file(dest, text.as_bytes())?;
        }
        _ => ctx.write_out(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

struct ServeArgs {
    listen: SocketAddr,
    refresh: u32,
}

fn serve(m: &ArgMatches, ctx: &Ctx, path: &Path, since: Option<String>) -> Result<ExitCode> {
    let a = ServeArgs {
        listen: m
            .get_one::<SocketAddr>("listen")
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9464))),
        refresh: m.get_one::<u32>("refresh").copied().unwrap_or(10),
    };
    let server = serve::bind(serve::Options {
        listen: a.listen,
        log: path.to_path_buf(),
        cfg: ctx.cfg.clone(),
        refresh: a.refresh,
        default_since: since,
    })?;
    let addr = server.local_addr();
    if !addr.ip().is_loopback() {
        ctx.note(format_args!(
            "warning: {addr} is not a loopback address and the server has no authentication: \
             anyone who can connect can read the metrics"
        ));
    }
    ctx.note(format_args!(
        "serving {} on http://{addr}/ (JSON: /api/performance/metrics, Prometheus: /metrics)",
        path.display()
    ));
    server.run()?;
    Ok(ExitCode::SUCCESS)
}

struct HtmlArgs {
    dest: PathBuf,
    ops: Vec<String>,
}

fn html_report(m: &ArgMatches, ctx: &mut Ctx, path: &Path, since: Option<i64>) -> Result<ExitCode> {
    let a = HtmlArgs {
        dest: m.get_one::<PathBuf>("html").cloned().unwrap_or_default(),
        ops: ops_of(m),
    };
    let mut filters = Vec::new();
    if let Some(s) = since_text(m) {
        filters.push(format!("since {s}"));
    }
    if !a.ops.is_empty() {
        filters.push(format!("op {}", a.ops.join(", ")));
    }
    let filter = Filter {
        ops: a.ops,
        since,
        until: None,
    };
    let r = aggregate::aggregate_with_series(path, filter)?;
    note_malformed(ctx, r.malformed, path);
    let page = Html {
        source: path.display().to_string(),
        generated: ctx.cfg.now(),
        filters: filters.join(" · "),
        refresh: None,
        query: Default::default(),
    }
    .render(&r);
    if export::is_standard_output(&a.dest) {
        ctx.write_out(page.as_bytes())?;
    } else {
        export::write_file(&a.dest, page.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--since` text as typed (global, so it may sit on the subcommand).
fn since_text(m: &ArgMatches) -> Option<String> {
    m.get_raw("since")
        .and_then(|mut v| v.next())
        .map(|s| s.to_string_lossy().into_owned())
}

struct RecordArgs {
    op: String,
    values: Vec<String>,
    start: Option<String>,
    end: Option<String>,
    unit: Option<StampUnit>,
}

fn record(m: &ArgMatches, ctx: &Ctx, path: &Path) -> Result<ExitCode> {
    let a = RecordArgs {
        op: m
            .get_one::<String>("operation")
            .cloned()
            .unwrap_or_default(),
        values: m
            .get_many::<String>("values")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        start: m.get_one::<String>("start").cloned(),
        end: m.get_one::<String>("end").cloned(),
        unit: StampUnit::parse(m.get_one::<String>("unit").map_or("auto", String::as_str))?,
    };
    record_args(a, ctx, path)
}

/// `perf-metrics record -- OP START END`, already parsed (`cli::Direct`).
pub(super) fn record_direct(op: String, start: String, end: String, ctx: &Ctx) -> Result<ExitCode> {
    let path = metrics::log_path(&ctx.cfg, None)?;
    let a = RecordArgs {
        op,
        values: vec![start, end],
        start: None,
        end: None,
        unit: None,
    };
    record_args(a, ctx, &path)
}

fn record_args(a: RecordArgs, ctx: &Ctx, path: &Path) -> Result<ExitCode> {
    metrics::validate_op(&a.op)?;
    let values: Vec<&str> = a.values.iter().map(String::as_str).collect();
    let ms = match (&values[..], a.start.as_deref(), a.end.as_deref()) {
        (&[d], None, None) => metrics::parse_duration_ms(d)?,
        (&[s, e], None, None) | (&[], Some(s), Some(e)) => metrics::duration_between(s, e, a.unit)?,
        _ => {
            return Err(Error::Validation(
                "record needs DURATION_MS, START END, or --start S --end E".into(),
            ));
        }
    };
    metrics::record(&ctx.cfg, path, &a.op, ms)?;
    Ok(ExitCode::SUCCESS)
}

fn time(m: &ArgMatches, ctx: &Ctx, path: &Path) -> Result<ExitCode> {
    use crate::lock::run::{self, Ended, Options, Program};
    let op = m
        .get_one::<String>("operation")
        .cloned()
        .unwrap_or_default();
    let cmd: Vec<OsString> = m
        .get_many::<OsString>("cmd")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    metrics::validate_op(&op)?;
    if cmd.is_empty() {
        return Err(Error::Validation("time needs a command after --".into()));
    }
    let prog = Program::Argv(cmd);
    let start = Instant::now();
    // The crate's one child runner: 126/127, 128+signal, SIGINT/SIGQUIT
    // left to the child (docs/locks.md, "Command mode").
    let ended = run::run(&prog, Options::default());
    let ended = match ended {
        Ended::NotStarted(1, e) => {
            return Err(Error::General(format!(
                "cannot wait for {}: {}",
                prog.name(),
                crate::error::os_reason(&e)
            )));
        }
        Ended::NotStarted(code, e) => {
            ctx.note(format_args!(
                "cannot run {}: {}",
                prog.name(),
                Error::io("cannot run", prog.name(), e)
                    .to_string()
                    .rsplit(": ")
                    .next()
                    .unwrap_or("failed")
            ));
            return Ok(ExitCode::from(code));
        }
        ended => ended,
    };
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if let Err(e) = metrics::record(&ctx.cfg, path, &op, ms) {
        ctx.note(format_args!("metric not recorded: {e}"));
    }
    Ok(ExitCode::from(ended.code()))
}

fn run_check(m: &ArgMatches, ctx: &mut Ctx, path: &Path, since: Option<i64>) -> Result<ExitCode> {
    let rules = m
        .get_many::<String>("rules")
        .into_iter()
        .flatten()
        .map(|r| check::parse_rule(r))
        .collect::<Result<Vec<_>>>()?;
    let allow_missing = m.get_flag("allow_missing");
    let json = m.get_flag("json");
    let r = read_report(
        ctx,
        path,
        Filter {
            ops: Vec::new(),
            since,
            until: None,
        },
    )?;
    let outcomes = check::evaluate(&r, &rules);
    let (mut failed, mut missing) = (false, false);
    for o in &outcomes {
        let shown = |v: f64| {
            if o.stat == "count" {
                format!("{v}")
            } else {
                human_ms(v)
            }
        };
        match o.status {
            Status::Pass => {}
            Status::Fail => {
                failed = true;
                ctx.note(format_args!(
                    "check failed: {}: {} of {} is {} over {} row{} (limit {})",
                    o.rule,
                    o.stat,
                    crate::metrics::shown_op(&o.op),
                    shown(o.value.unwrap_or(0.0)),
                    o.count,
                    if o.count == 1 { "" } else { "s" },
                    shown(o.threshold)
                ));
            }
            Status::Missing => {
                missing = true;
                if !allow_missing {
                    ctx.note(format_args!(
                        "check missing: {}: no data for {}",
                        o.rule, o.op
                    ));
                }
            }
        }
    }
    if json {
        let v = serde_json::json!({
            "ok": !failed && (allow_missing || !missing),
            "rules": outcomes,
        });
        ctx.write_out(format!("{v}\n").as_bytes())?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else if missing && !allow_missing {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    })
}

fn cleanup(m: &ArgMatches, ctx: &mut Ctx, path: &Path) -> Result<ExitCode> {
    let keep_rows = m.get_one::<u64>("keep_rows").copied();
    let older_than = m.get_one::<Duration>("older_than").copied();
    let c = Cleanup {
        keep_rows: if keep_rows.is_none() && older_than.is_none() {
            Some(DEFAULT_KEEP_ROWS)
        } else {
            keep_rows
        },
        cutoff: older_than.map(|d| ctx.cfg.now() - d.as_secs() as i64),
    };
    let rep = log::cleanup(path, c)?;
    if m.get_flag("json") {
        let text = serde_json::to_string(&rep)
            .map_err(|e| Error::General(format!("cannot encode the report: {e}")))?;
        ctx.write_out(format!("{text}\n").as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
