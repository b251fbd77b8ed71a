//! Running the command of a miss: stdout and stderr as two pipes, read with
//! poll(2) in this one thread in the order they become readable, recorded as
//! tagged chunks and passed through to the caller's own stdout and stderr
//! as they arrive (so a slow miss shows its progress). Stdin is `/dev/null`
//! unless the caller hands bytes to feed (`--key-stdin`); those are written
//! through a non-blocking pipe from the same poll loop, so a command that
//! writes much before reading cannot deadlock us.
//!
//! A sink that fails (the reader of our stdout went away) stops receiving
//! but the capture goes on: the entry is still recorded whole.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, poll};

use super::record::{Recording, Stream};
use crate::error::{Error, Result};

/// The exit status as a shell reports it: the code, or 128+N for signal N.
pub fn status_code(s: std::process::ExitStatus) -> u8 {
    match (s.code(), s.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => (128 + sig).min(255) as u8,
        (None, None) => 255,
    }
}

/// The most output a miss records (held in memory until it is stored);
/// beyond it the output is still passed through, but not cached.
pub const MAX_RECORDED: u64 = 256 << 20;

/// Runs `argv`, forwarding output to `out`/`err` and recording up to
/// `limit` bytes of it.
pub fn run<O: Write, E: Write>(
    argv: &[OsString],
    stdin: Option<&[u8]>,
    now: i64,
    limit: u64,
    out: &mut O,
    err: &mut E,
) -> Result<Recording> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| Error::Validation("no command given".into()))?;
    let name = prog.to_string_lossy();
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| spawn_error(&name, e))?;
    let mut rec = Recording {
        ran_at: now,
        ..Recording::default()
    };
    let pumped = pump(&mut child, stdin, &mut rec, limit, out, err);
    // Reap the child whatever happened, so no zombie outlives us.
    let status = child
        .wait()
        .map_err(|e| Error::General(format!("cannot wait for '{name}': {e}")))?;
    pumped.map_err(|e| Error::General(format!("cannot read the output of '{name}': {e}")))?;
    rec.status = status_code(status);
    rec.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(rec)
}

/// ffkit's own codes, never 126/127 (which belong to the command).
fn spawn_error(name: &str, e: io::Error) -> Error {
    let msg = format!("cannot run '{name}': {e}");
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(msg),
        io::ErrorKind::PermissionDenied => Error::Permission(msg),
        _ => Error::General(msg),
    }
}

/// A destination that stops on its first failure.
struct Sink<'a, W: Write> {
    w: &'a mut W,
    ok: bool,
}

impl<W: Write> Sink<'_, W> {
    fn send(&mut self, b: &[u8]) {
        if self.ok {
            self.ok = self.w.write_all(b).and_then(|()| self.w.flush()).is_ok();
        }
    }
}

fn pump<O: Write, E: Write>(
    child: &mut Child,
    stdin: Option<&[u8]>,
    rec: &mut Recording,
    limit: u64,
    out: &mut O,
    err: &mut E,
) -> io::Result<()> {
    let mut recorded = 0u64;
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let mut si = child.stdin.take();
    let mut input = stdin.unwrap_or_default();
    if let Some(p) = &si {
        rustix::fs::fcntl_setfl(p, rustix::fs::OFlags::NONBLOCK)?;
    }
    if input.is_empty() {
        si = None; // EOF for the command at once
    }
    let mut sinks = (Sink { w: out, ok: true }, Sink { w: err, ok: true });
    let mut buf = vec![0u8; 64 * 1024];
    while so.is_some() || se.is_some() {
        let mut fds = Vec::with_capacity(3);
        if let Some(p) = &so {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        if let Some(p) = &se {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        if let Some(p) = &si {
            fds.push(PollFd::new(p, PollFlags::OUT));
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut i = 0;
        if so.is_some() {
            if ready[i]
                && let Some(p) = so.as_mut()
                && !drain(
                    p,
                    &mut buf,
                    Stream::Stdout,
                    rec,
                    &mut recorded,
                    limit,
                    &mut sinks.0,
                )?
            {
                so = None;
            }
            i += 1;
        }
        if se.is_some() {
            if ready[i]
                && let Some(p) = se.as_mut()
                && !drain(
                    p,
                    &mut buf,
                    Stream::Stderr,
                    rec,
                    &mut recorded,
                    limit,
                    &mut sinks.1,
                )?
            {
                se = None;
            }
            i += 1;
        }
        if si.is_some() && ready[i] {
            let p = si.as_mut().map(|p| p.write(input));
            match p {
                Some(Ok(n)) => input = &input[n..],
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                // EPIPE: the command stopped reading; that is its business.
                _ => input = &[],
            }
            if input.is_empty() {
                si = None;
            }
        }
    }
    Ok(())
}

/// One read from a ready pipe; `false` at end of file.
#[allow(clippy::too_many_arguments)]
fn drain<R: Read, W: Write>(
    p: &mut R,
    buf: &mut [u8],
    s: Stream,
    rec: &mut Recording,
    recorded: &mut u64,
    limit: u64,
    sink: &mut Sink<'_, W>,
) -> io::Result<bool> {
    loop {
        match p.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                *recorded += n as u64;
                if *recorded > limit && !rec.overflowed {
                    rec.overflowed = true;
                    rec.chunks = Vec::new();
                }
                if !rec.overflowed {
                    rec.push(s, &buf[..n]);
                }
                sink.send(&buf[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<OsString> {
        ["sh", "-c", script].map(OsString::from).to_vec()
    }

    #[test]
    fn output_past_the_limit_is_passed_through_but_not_recorded() {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let r = run(
            &sh("head -c 1000 /dev/zero; echo x >&2"),
            None,
            0,
            100,
            &mut o,
            &mut e,
        )
        .unwrap();
        assert!(r.overflowed && r.chunks.is_empty());
        assert_eq!((o.len(), e.as_slice()), (1000, &b"x\n"[..]));
        let r = run(
            &sh("printf ab; printf c >&2; printf d"),
            None,
            0,
            100,
            &mut o,
            &mut e,
        )
        .unwrap();
        assert!(!r.overflowed);
        assert_eq!(r.status, 0);
        // (Their order across the two pipes is only known when the command
        // paces its writes; the integration test does that with a handshake.)
        let of = |st| -> Vec<u8> {
            r.chunks
                .iter()
                .filter(|(t, _)| *t == st)
                .flat_map(|(_, b)| b.clone())
                .collect()
        };
        assert_eq!(
            (of(Stream::Stdout), of(Stream::Stderr)),
            (b"abd".to_vec(), b"c".to_vec())
        );
    }

    #[test]
    fn statuses_and_spawn_errors() {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let r = run(&sh("exit 9"), None, 0, 100, &mut o, &mut e).unwrap();
        assert_eq!(r.status, 9);
        // SIGTERM: a SIGINT may be ignored by inheritance (a background job
        // of a non-interactive shell), and then `kill -INT $$` does nothing.
        let r = run(&sh("kill -TERM $$"), None, 0, 100, &mut o, &mut e).unwrap();
        assert_eq!(r.status, 143);
        let err = run(
            &[OsString::from("/nonexistent/ffkit-x")],
            None,
            0,
            100,
            &mut o,
            &mut e,
        )
        .err()
        .unwrap();
        assert_eq!(err.exit_code(), 4);
        assert!(run(&[], None, 0, 100, &mut o, &mut e).is_err());
    }
}
