//! `lock-status`: is a lock held, and by whom. The kernel is asked first
//! (a record left by a holder that died is never taken for a holder).

use super::ExitCode;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{Value, json};

use super::lock_acquire::{lock_dir_arg, session_arg};
use super::{Ctx, json_arg, quiet_arg, write_stdout};
use crate::error::{Error, Result};
use crate::lock::holder::{self, Holder, KIND_DOTLOCK};
use crate::lock::kernel::{self, Probe};
use crate::lock::{self, dotlock};

pub fn command() -> Command {
    Command::new("lock-status")
        .about("Show who holds a lock (exit 0 held, 1 free)")
        .long_about(
            "Print whether the lock NAME (in the lock dir) or FILE (an argument with a '/') is \
             held, and by whom: pid, host, command, since and age. The kernel is asked directly, \
             so a lock whose holder died shows as free. Exit status: 0 held, 1 free, with or \
             without output (-q prints nothing; --json prints an object).",
        )
        .arg(
            Arg::new("target")
                .value_name("NAME|FILE")
                .required(true)
                .help("Lock name in the lock dir, or a path (containing '/') to a lock file"),
        )
        .arg(
            Arg::new("dotlock")
                .long("dotlock")
                .action(ArgAction::SetTrue)
                .help("Treat the file as a dot-lock (detected from its content anyway)"),
        )
        .arg(lock_dir_arg())
        .arg(session_arg())
        .arg(json_arg())
        .arg(quiet_arg())
        .arg(super::backend_arg())
}

struct Args {
    target: String,
    dotlock: bool,
    lock_dir: Option<PathBuf>,
    session: bool,
    json: bool,
    quiet: bool,
}

/// What status found.
struct Status {
    held: bool,
    kind: &'static str,
    mode: Option<&'static str>,
    pid: Option<u32>,
    command: Option<String>,
    record: Option<Holder>,
    stale: bool,
}

pub fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        target: m.get_one::<String>("target").cloned().unwrap_or_default(),
        dotlock: m.get_flag("dotlock"),
        lock_dir: m.get_one::<PathBuf>("lock_dir").cloned(),
        session: m.get_flag("session"),
        json: m.get_flag("json"),
        quiet: m.get_flag("quiet"),
    };
    if let Some(t) = super::backend_of(m, ctx)? {
        let s = super::remote::Status {
            target: a.target,
            session: a.session,
            json: a.json,
            quiet: a.quiet,
        };
        return super::remote::lock_status(&t, s, ctx);
    }
    let path = lock::resolve(&a.target, &ctx.cfg, a.lock_dir.as_deref(), a.session)?;
    let st = status(&path, a.dotlock, ctx)?;
    let code = if st.held {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if a.quiet {
        return Ok(code);
    }
    if a.json {
        let mut out = serde_json::to_vec(&to_json(&a.target, &path, &st))
            .map_err(|e| Error::General(format!("cannot render JSON: {e}")))?;
        out.push(b'\n');
        write_stdout(&out)?;
    } else {
        write_stdout(to_text(&a.target, &st).as_bytes())?;
    }
    Ok(code)
}

fn status(path: &std::path::Path, force_dot: bool, ctx: &Ctx) -> Result<Status> {
    let seen = dotlock::look(path)?;
    let dot_rec = seen
        .as_ref()
        .and_then(|s| s.holder.clone())
        .filter(|h| h.kind == KIND_DOTLOCK);
    if force_dot || dot_rec.is_some() {
        let stale = seen
            .as_ref()
            .is_some_and(|s| s.is_stale(ctx.cfg.lock_stale_after));
        return Ok(Status {
            held: seen.is_some(),
            kind: "dotlock",
            mode: seen.as_ref().map(|_| "exclusive"),
            pid: dot_rec.as_ref().map(|h| h.pid),
            command: dot_rec.as_ref().map(|h| h.command.clone()),
            record: dot_rec,
            stale,
        });
    }
    let f = match kernel::open_lock_file_existing(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(free("kernel"));
        }
        Err(e) => return Err(Error::io("cannot open lock file", path, e)),
    };
    let probe = kernel::probe_file(&f).map_err(|e| Error::io("cannot probe", path, e))?;
    let exclusive = match probe {
        Probe::Missing | Probe::Free => return Ok(free("kernel")),
        Probe::Held { exclusive } => exclusive,
    };
    let who = holder::who_of_file(&f);
    Ok(Status {
        held: true,
        kind: "kernel",
        mode: Some(if exclusive { "exclusive" } else { "shared" }),
        pid: who.pid,
        command: who.command,
        record: who.record,
        stale: false,
    })
}

fn free(kind: &'static str) -> Status {
    Status {
        held: false,
        kind,
        mode: None,
        pid: None,
        command: None,
        record: None,
        stale: false,
    }
}

fn rfc3339(epoch: f64) -> Option<String> {
    let t = jiff::Timestamp::from_second(epoch.floor() as i64).ok()?;
    Some(t.to_string())
}

fn to_text(name: &str, st: &Status) -> String {
    if !st.held {
        return format!("{name}: free\n");
    }
    let mut s = format!("{name}: held ({}", st.mode.unwrap_or("exclusive"));
    if st.kind == "dotlock" {
        s.push_str(", dotlock");
    }
    s.push(')');
    if let Some(pid) = st.pid {
        s.push_str(&format!(" by pid {pid}"));
    }
    if let Some(r) = st.record.as_ref().filter(|r| !r.host.is_empty()) {
        s.push_str(&format!(" on {}", r.host));
    }
    if let Some(c) = st.command.as_deref().filter(|c| !c.is_empty()) {
        s.push_str(&format!(", command: {c}"));
    }
    if let Some(r) = &st.record {
        if let Some(t) = rfc3339(r.since) {
            s.push_str(&format!(", since {t}"));
        }
        s.push_str(&format!(" (age {:.1}s)", r.age()));
    }
    if st.stale {
        s.push_str(", STALE (the next acquirer will remove it)");
    }
    s.push('\n');
    s
}

fn to_json(name: &str, path: &std::path::Path, st: &Status) -> Value {
    let r = st.record.as_ref();
    json!({
        "lock": name,
        "path": path.to_string_lossy(),
        "state": if st.held { "held" } else { "free" },
        "kind": st.kind,
        "mode": st.mode,
        "pid": st.pid,
        "host": r.map(|r| r.host.clone()),
        "command": st.command,
        "since": r.and_then(|r| rfc3339(r.since)),
        "since_epoch": r.map(|r| r.since),
        "age_seconds": r.map(|r| (r.age() * 1000.0).round() / 1000.0),
        "holder_pid": r.and_then(|r| r.holder_pid),
        "stale": st.stale,
    })
}
