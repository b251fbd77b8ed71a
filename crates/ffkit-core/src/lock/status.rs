//! `lock::status`: is a lock held, and by whom — one verdict for every
//! applet. The kernel is asked first for kernel locks (a record left by a
//! holder that died is never taken for a holder); a dot-lock is held while
//! its file exists, and a dot-lock whose record cannot be read is "held by
//! an unknown holder", broken only by the stale rules or `--force`; only
//! `--dotlock` makes a file without a dot-lock record a dot-lock
//! (docs/locks.md, "`--dotlock`").
//!
//! [`Status`] is also what a remote backend answers ([`super::Locks`]):
//! one text form and one `--json` schema for every backend, a field absent
//! where a backend has no such thing (`path` on Redis; `backend`, `fence`
//! and `lease_left_seconds` on the local files).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::dotlock;
use super::holder::{self, Holder, KIND_DOTLOCK};
use super::kernel::{self, Probe};
use crate::error::{Error, Result};

/// Which kind of lock a file is (or `Remote`: a lock on a remote backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Kernel,
    Dotlock,
    Remote,
}

/// Decides, in one place, whether the file at `path` is a dot-lock: when
/// the caller says so (`--dotlock`), when its record says so, or — for a
/// NAME in the lock dir — when the old library holds it (its record, a
/// bare pid, fresh and alive: [`super::compat::old_library_holder`],
/// docs/locks.md, "Sharing names with the old library") while no kernel
/// lock is held on it. A stale or dead pid's file is a kernel lock file,
/// free unless a kernel lock is held, as `lock-acquire` takes it. Anything else is a kernel lock file,
/// whatever it holds: a NAME's file whose content is no record (damaged)
/// is free while no kernel lock is held on it, as every kernel-lock path
/// (`lock-acquire NAME`, the shell functions) takes it; with `--dotlock`
/// it is a dot-lock held by an unknown holder (docs/locks.md,
/// "`--dotlock`").
pub fn detect(path: &Path, hint: bool, is_name: bool) -> Result<Backend> {
    if hint {
        return Ok(Backend::Dotlock);
    }
    let Some(seen) = dotlock::look(path)? else {
        return Ok(Backend::Kernel);
    };
    match &seen.holder {
        Some(h) if h.kind == KIND_DOTLOCK => Ok(Backend::Dotlock),
        Some(_) => Ok(Backend::Kernel),
        None if is_name => {
            // Read again under the probe's shared lock: a record caught
            // half-written (its writer holds the lock exclusively) is no
            // old library's.
            let f = match kernel::open_lock_file_existing(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Backend::Kernel),
                Err(e) => return Err(Error::io("cannot probe", path, e)),
            };
            // Held by the old library only by the rule every acquirer
            // applies (`compat`): a stale or dead pid's file is free.
            let (probe, old) =
                kernel::probe_reading(&f, |f| Ok(super::compat::old_library_holder(f)))
                    .map_err(|e| Error::io("cannot probe", path, e))?;
            Ok(if probe == Probe::Free && old.flatten().is_some() {
                Backend::Dotlock
            } else {
                Backend::Kernel
            })
        }
        None => Ok(Backend::Kernel),
    }
}

/// What status found.
#[derive(Clone, Debug)]
pub struct Status {
    pub held: bool,
    pub backend: Backend,
    /// `exclusive` or `shared` when held.
    pub mode: Option<&'static str>,
    pub pid: Option<u32>,
    pub command: Option<String>,
    pub record: Option<Holder>,
    /// The holder as [`Holder`]/[`holder::Who`] describe it.
    pub holder: String,
    /// Dot-locks: the next acquirer will break it.
    pub stale: bool,
    /// The lock file (local backends).
    pub path: Option<PathBuf>,
    /// A remote lock: where it lives and its lease.
    pub remote: Option<RemoteFacts>,
}

/// What only a remote lock has.
#[derive(Clone, Debug, Default)]
pub struct RemoteFacts {
    /// The backend URL, without credentials.
    pub label: String,
    /// The holder's fencing token (when held by a known holder).
    pub fence: Option<u64>,
    /// Seconds of lease left (when held).
    pub lease_left: Option<f64>,
}

fn free(backend: Backend) -> Status {
    Status {
        held: false,
        backend,
        mode: None,
        pid: None,
        command: None,
        record: None,
        holder: String::new(),
        stale: false,
        path: None,
        remote: None,
    }
}

impl Status {
    /// A remote lock's status: held by `record` (its pid 0: an unknown
    /// holder) or free.
    pub fn remote(label: &str, record: Option<(Holder, u64, f64)>) -> Status {
        let Some((h, fence, lease_left)) = record else {
            return Status {
                remote: Some(RemoteFacts {
                    label: label.to_string(),
                    ..RemoteFacts::default()
                }),
                ..free(Backend::Remote)
            };
        };
        let known = (h.pid != 0).then_some(h);
        Status {
            held: true,
            backend: Backend::Remote,
            mode: Some("exclusive"),
            pid: known.as_ref().map(|h| h.pid),
            command: known.as_ref().map(|h| h.command.clone()),
            holder: known.clone().unwrap_or_default().to_string(),
            remote: Some(RemoteFacts {
                label: label.to_string(),
                fence: known.as_ref().map(|_| fence),
                lease_left: Some(lease_left),
            }),
            record: known,
            stale: false,
            path: None,
        }
    }
}

/// The status of the lock at `path` (see [`detect`] for `hint`, `is_name`).
pub fn status(
    path: &Path,
    hint: bool,
    is_name: bool,
    stale_after: std::time::Duration,
) -> Result<Status> {
    let mut st = local_status(path, hint, is_name, stale_after)?;
    st.path = Some(path.to_path_buf());
    Ok(st)
}

fn local_status(
    path: &Path,
    hint: bool,
    is_name: bool,
    stale_after: std::time::Duration,
) -> Result<Status> {
    if detect(path, hint, is_name)? == Backend::Dotlock {
        let Some(seen) = dotlock::look(path)? else {
            return Ok(free(Backend::Dotlock));
        };
        let rec = seen.holder.clone().filter(|h| h.kind == KIND_DOTLOCK);
        // A NAME's file the old library holds (its record, a bare pid,
        // fresh and alive: [`detect`]) is named as every acquiring path
        // names it ([`holder::Who`]); it is never stale (detect said so).
        let old_library = match (&rec, is_name) {
            (None, true) => crate::fsutil::open_read(path)
                .ok()
                .and_then(|f| super::compat::old_library_holder(&f)),
            _ => None,
        };
        let stale = old_library.is_none() && seen.is_stale(stale_after);
        let who = holder::Who {
            pid: rec.as_ref().map(|h| h.pid),
            command: rec.as_ref().map(|h| h.command.clone()),
            record: rec.clone(),
            old_library,
        };
        return Ok(Status {
            held: true,
            backend: Backend::Dotlock,
            mode: Some("exclusive"),
            pid: who.pid.or(old_library),
            holder: who.to_string(),
            command: who.command,
            record: rec,
            stale,
            path: None,
            remote: None,
        });
    }
    let f = match kernel::open_lock_file_existing(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(free(Backend::Kernel)),
        Err(e) => return Err(Error::io(crate::lock::OPEN_FAILED, path, e)),
    };
    let exclusive = match kernel::probe_file(&f).map_err(|e| Error::io("cannot probe", path, e))? {
        Probe::Free => return Ok(free(Backend::Kernel)),
        Probe::Held { exclusive } => exclusive,
    };
    let who = holder::who_of_file(&f);
    Ok(Status {
        held: true,
        backend: Backend::Kernel,
        mode: Some(if exclusive { "exclusive" } else { "shared" }),
        pid: who.pid,
        command: who.command.clone(),
        holder: who.to_string(),
        record: who.record,
        stale: false,
        path: None,
        remote: None,
    })
}

impl Status {
    /// `NAME: free` or `NAME: held (exclusive) by pid 4242 on build1,
    /// command: …, since … (age 3.2s)`, with a newline.
    pub fn text(&self, name: &str) -> String {
        if !self.held {
            return format!("{name}: free\n");
        }
        let mut s = format!("{name}: held ({}", self.mode.unwrap_or("exclusive"));
        match self.backend {
            Backend::Dotlock => s.push_str(", dotlock"),
            Backend::Remote => s.push_str(", redis"),
            Backend::Kernel => {}
        }
        s.push_str(&format!(") by {}", self.holder));
        if self.stale {
            s.push_str(", STALE (the next acquirer will remove it)");
        }
        if let Some(r) = &self.remote {
            if let Some(f) = r.fence {
                s.push_str(&format!(", fence {f}"));
            }
            if let Some(l) = r.lease_left {
                s.push_str(&format!(", lease {:.1}s left", l.max(0.0)));
            }
        }
        s.push('\n');
        s
    }

    /// The `--json` object (docs/locks.md, "`lock-status`"): one schema
    /// for every backend, a field absent where the backend has no such
    /// thing (`path` on a remote backend; `backend`, `fence` and
    /// `lease_left_seconds` on the local files).
    pub fn json(&self, name: &str) -> Value {
        let r = self.record.as_ref();
        let mut v = json!({
            "lock": name,
            "state": if self.held { "held" } else { "free" },
            "kind": match self.backend {
                Backend::Kernel => "kernel",
                Backend::Dotlock => "dotlock",
                Backend::Remote => "redis",
            },
            "mode": self.mode,
            "pid": self.pid,
            "host": r.map(|r| r.host.clone()),
            "command": self.command,
            "since": r.and_then(|r| holder::rfc3339(r.since)),
            "since_epoch": r.map(|r| r.since),
            "age_seconds": r.map(|r| (r.age() * 1000.0).round() / 1000.0),
            "holder_pid": r.and_then(|r| r.holder_pid),
            "holder_kind": r.map(|r| r.kind.clone()),
            "stale": self.stale,
        });
        if let Some(o) = v.as_object_mut() {
            if let Some(p) = &self.path {
                o.insert("path".into(), json!(p.to_string_lossy()));
            }
            if let Some(rf) = &self.remote {
                o.insert("backend".into(), json!(rf.label));
                o.insert("fence".into(), json!(rf.fence));
                o.insert("lease_left_seconds".into(), json!(rf.lease_left));
            }
        }
        v
    }
}
