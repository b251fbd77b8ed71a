//! Running the command of a miss. Its stdout and stderr are two pipes (one
//! pipe for both when the caller's stdout and stderr are one file, so the
//! order is exact: [`Shape`]), read with poll(2) in this thread in the order
//! they become readable and recorded as tagged chunks. The chunks are also
//! handed to a second thread that passes them through to the caller's own
//! stdout and stderr (so a slow miss shows its progress): a caller whose
//! reader is slow never holds the run back, so the run is recorded, stored
//! and its lock released at the command's pace, and the caller catches up
//! afterwards ([`run`]'s `after`).
//!
//! A reader of the caller's output that goes away (EPIPE) is passed on as a
//! pipe would: the capture pipe of that stream is closed, so the command's
//! next write to it gets SIGPIPE, and the recording is marked cut (never
//! stored). Any other write error (a full disk, `/dev/full`) stops the
//! pass-through but not the capture, and is returned so the call fails.
//!
//! Stdin is `/dev/null`, a spooled file (`--key-stdin`, and the detached
//! refresh's stored stdin), or bytes written through a non-blocking pipe
//! from the same poll loop (input already in memory), so a command that
//! writes much before reading cannot deadlock us. The command gets `SIGTERM` if the thread that started it dies
//! (`PR_SET_PDEATHSIG`), so a killed ffkit does not leave it running.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, poll};

use super::record::{Recording, Stream};
use crate::error::{Error, Result, os_reason};

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

/// Bytes waiting for a slow reader before the capture waits too: 256 MiB,
/// as much as a recording holds. Counted in bytes, not chunks, so a
/// command printing many short lines never makes the run wait for a
/// stalled caller below that.
const QUEUE_BYTES: u64 = 256 << 20;

/// The pass-through's queue: chunks and how many bytes they hold.
struct Queue {
    tx: mpsc::Sender<(Stream, Vec<u8>)>,
    bytes: std::sync::Arc<AtomicU64>,
}

impl Queue {
    /// Queues a copy of `b` for the pass-through. The copy is made
    /// fallibly: when the memory left cannot hold it (`ulimit -v`, with the
    /// recording grown to the limit by the read before), the recording is
    /// given up first (it is only for the cache, and freeing it makes the
    /// room), then the queue is waited on until the reader has taken what
    /// it holds. Before, `to_vec` aborted the call (exit 134, the output cut
    /// short) on about one run in ten of a miss just over the memory left.
    fn send(&self, s: Stream, b: &[u8], rec: &mut Recording) {
        let copy = loop {
            let mut v = Vec::new();
            if v.try_reserve_exact(b.len()).is_ok() {
                v.extend_from_slice(b);
                break v;
            }
            if !rec.overflowed {
                rec.give_up_for_memory();
            } else if self.bytes.load(Ordering::Relaxed) == 0 {
                // Nothing of ours left to free: the process is out of
                // memory, as any allocation would be.
                std::alloc::handle_alloc_error(std::alloc::Layout::for_value(b));
            } else {
                // All of the queue, not one chunk: the channel's own small
                // allocations need room beside the copy.
                while self.bytes.load(Ordering::Relaxed) > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        };
        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        // The pass-through thread only ends after this side hangs up, so a
        // failed send cannot happen; nothing to do if it did.
        if self.tx.send((s, copy)).is_err() {
            return;
        }
        // Backpressure past the bound (a reader that does not read).
        while self.bytes.load(Ordering::Relaxed) > QUEUE_BYTES {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// How the command's output reaches it: two pipes, or one pipe for both
/// streams (the caller's stdout and stderr are one open file: `2>&1`, one
/// terminal), so their order is exact and everything is recorded as stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Split,
    Merged,
    /// The output is not shown (`--json`): run as `Split`, and any
    /// recording fits.
    Quiet,
}

impl Shape {
    /// `Merged` when the two descriptors lead to the same file (device and
    /// inode: a pipe, a terminal, a file opened once and dup'ed); `Quiet`
    /// when that file is `/dev/null` (`>/dev/null 2>&1` shows nothing, so it
    /// should record what fits every later caller).
    pub fn of(out: BorrowedFd<'_>, err: BorrowedFd<'_>) -> Shape {
        match (rustix::fs::fstat(out), rustix::fs::fstat(err)) {
            (Ok(a), Ok(b)) if a.st_dev == b.st_dev && a.st_ino == b.st_ino => {
                let chr = rustix::fs::FileType::from_raw_mode(a.st_mode)
                    == rustix::fs::FileType::CharacterDevice;
                let rdev = a.st_rdev;
                if chr && rustix::fs::major(rdev) == 1 && rustix::fs::minor(rdev) == 3 {
                    Shape::Quiet
                } else {
                    Shape::Merged
                }
            }
            _ => Shape::Split,
        }
    }
}

/// What the command reads.
pub enum Input<'a> {
    /// `/dev/null`.
    Null,
    /// These bytes, through a pipe.
    Bytes(&'a [u8]),
    /// This file (a spool of the caller's stdin), from its current offset.
    File(File),
}

/// What became of the pass-through to the caller.
#[derive(Debug, Default)]
pub struct Delivery {
    /// The caller's reader went away (EPIPE).
    pub gone: bool,
    /// The first other write error: output the caller did not get.
    pub error: Option<io::Error>,
}

/// Runs `argv`, recording up to `limit` bytes of its output and passing it
/// through to `out`/`err`. `after` is called once the command has ended,
/// with its recording, while the pass-through may still be catching up (the
/// place to store it and release the lock); its result is returned with the
/// recording and what became of the pass-through.
#[allow(clippy::too_many_arguments)]
pub fn run<O, E, T>(
    argv: &[OsString],
    input: Input<'_>,
    now: i64,
    limit: u64,
    shape: Shape,
    out: &mut O,
    err: &mut E,
    after: impl FnOnce(&Recording) -> T,
) -> Result<(Recording, T, Delivery)>
where
    O: Write + Send,
    E: Write + Send,
{
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| Error::Validation("no command given".into()))?;
    let name = prog.to_string_lossy();
    let mut cmd = Command::new(prog);
    cmd.args(args);
    // The shell functions' hand-over to this process (config.rs,
    // `fn_log_dir`), not the command's: an ffkit the command runs logs to
    // its own default, as it does under the builtin, which never exports it.
    cmd.env_remove("FFKIT_FN_LOG_DIR");
    let mut feed: &[u8] = &[];
    match input {
        Input::Null => {
            cmd.stdin(Stdio::null());
        }
        Input::Bytes(b) => {
            feed = b;
            cmd.stdin(Stdio::piped());
        }
        Input::File(f) => {
            cmd.stdin(Stdio::from(f));
        }
    }
    let pipe_err =
        |e: io::Error| Error::General(format!("cannot create a pipe: {}", os_reason(&e)));
    let merged = match shape {
        Shape::Merged => {
            let (r, w) = io::pipe().map_err(pipe_err)?;
            cmd.stdout(w.try_clone().map_err(pipe_err)?).stderr(w);
            Some(r)
        }
        Shape::Split | Shape::Quiet => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        }
    };
    die_with_parent(&mut cmd);
    let mut rec = Recording {
        ran_at: now,
        ..Recording::default()
    };
    let gone = [AtomicBool::new(false), AtomicBool::new(false)];
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(Stream, Vec<u8>)>();
        let bytes = std::sync::Arc::new(AtomicU64::new(0));
        let queue = Queue {
            tx,
            bytes: bytes.clone(),
        };
        let gone = &gone;
        // The pass-through thread starts before the command, so a thread
        // that cannot start (memory under `ulimit -v`, a thread limit) is
        // one line with nothing started; std's `spawn` panicked there.
        let writer = std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn_scoped(scope, move || deliver(rx, &bytes, out, err, gone))
            .map_err(|e| Error::General(format!("cannot start a thread: {}", os_reason(&e))))?;
        let started = Instant::now();
        let spawned = crate::fsutil::with_callers_mask(|| cmd.spawn());
        // The command holds the write end of a merged pipe: drop ours, or
        // its end of file never comes.
        drop(cmd);
        let mut child = spawned.map_err(|e| spawn_error(&name, e))?;
        let so: Option<File> = match merged {
            Some(r) => Some(File::from(OwnedFd::from(r))),
            None => child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
        };
        let se: Option<File> = child.stderr.take().map(|p| File::from(OwnedFd::from(p)));
        let si: Option<File> = child.stdin.take().map(|p| File::from(OwnedFd::from(p)));
        let pumped = pump(Pipes { so, se, si }, feed, &mut rec, limit, &queue, gone);
        drop(queue);
        // Reap the child whatever happened, so no zombie outlives us.
        let status = child
            .wait()
            .map_err(|e| Error::General(format!("cannot wait for '{name}': {}", os_reason(&e))));
        let finished = (|| {
            let status = status?;
            pumped.map_err(|e| {
                Error::General(format!(
                    "cannot read the output of '{name}': {}",
                    os_reason(&e)
                ))
            })?;
            rec.status = status_code(status);
            rec.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            Ok(())
        })();
        let t = finished.map(|()| after(&rec));
        let delivery = writer.join().unwrap_or_else(|_| Delivery {
            gone: false,
            error: Some(io::Error::other("the output thread failed")),
        });
        t.map(|t| (std::mem::take(&mut rec), t, delivery))
    })
}

/// The stack of the pass-through thread, which only moves chunks from a
/// channel to a writer: std's default is 2 MiB (on glibc and musl alike),
/// which under `ulimit -v` near what a call needs left no room for it.
pub(crate) const THREAD_STACK: usize = 256 * 1024;

/// `PR_SET_PDEATHSIG`: the command gets SIGTERM when the thread that
/// started it ends (ffkit killed, even by SIGKILL), as it would get SIGPIPE
/// from a pipeline whose reader died, but also while it writes nothing.
fn die_with_parent(cmd: &mut Command) {
    crate::fsutil::before_exec(
        cmd,
        crate::fsutil::BeforeExec::DieWithParent(rustix::process::Signal::TERM),
    );
}

/// ffkit's own codes, never 126/127 (which belong to the command).
fn spawn_error(name: &str, e: io::Error) -> Error {
    let msg = format!("cannot run '{name}': {}", os_reason(&e));
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(msg),
        io::ErrorKind::PermissionDenied => Error::Permission(msg),
        _ => Error::General(msg),
    }
}

/// The pass-through thread: writes each chunk to its stream in arrival
/// order. A stream whose reader went away, or that failed, gets nothing
/// more; the chunks are still drained so the capture never waits for it.
fn deliver<O: Write, E: Write>(
    rx: mpsc::Receiver<(Stream, Vec<u8>)>,
    queued: &AtomicU64,
    out: &mut O,
    err: &mut E,
    gone: &[AtomicBool; 2],
) -> Delivery {
    let mut d = Delivery::default();
    let mut dead = [false, false];
    for (s, bytes) in rx {
        queued.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
        let i = s.index();
        if dead[i] {
            continue;
        }
        let w: &mut dyn Write = match s {
            Stream::Stdout => out,
            Stream::Stderr => err,
        };
        if let Err(e) = w.write_all(&bytes).and_then(|()| w.flush()) {
            dead[i] = true;
            if e.kind() == io::ErrorKind::BrokenPipe {
                d.gone = true;
                gone[i].store(true, Ordering::Relaxed);
            } else if d.error.is_none() {
                d.error = Some(e);
            }
        }
    }
    d
}

struct Pipes {
    so: Option<File>,
    se: Option<File>,
    si: Option<File>,
}

fn pump(
    p: Pipes,
    mut input: &[u8],
    rec: &mut Recording,
    limit: u64,
    tx: &Queue,
    gone: &[AtomicBool; 2],
) -> io::Result<()> {
    let Pipes {
        mut so,
        mut se,
        mut si,
    } = p;
    let mut recorded = 0u64;
    if let Some(p) = &si {
        rustix::fs::fcntl_setfl(p, rustix::fs::OFlags::NONBLOCK)?;
    }
    if input.is_empty() {
        si = None; // EOF for the command at once
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // The caller's reader of a stream went away: close ours, so the
        // command's next write to it fails as it would in a pipeline. What
        // the pipe already holds is read first: when it ends there (the
        // command wrote all of it and closed its end before the reader
        // left, which the pass-through only learns later), the stream is
        // whole and the run may be stored.
        for (s, i, pipe) in [(Stream::Stdout, 0, &mut so), (Stream::Stderr, 1, &mut se)] {
            if gone[i].load(Ordering::Relaxed)
                && let Some(mut p) = pipe.take()
                && !ended_whole(&mut p, &mut buf, s, rec, &mut recorded, limit, tx)
            {
                rec.cut = true;
            }
        }
        if so.is_none() && se.is_none() {
            return Ok(());
        }
        let mut fds = Vec::with_capacity(3);
        for p in [&so, &se].into_iter().flatten() {
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
        let mut ready = ready.into_iter();
        for (s, pipe) in [(Stream::Stdout, &mut so), (Stream::Stderr, &mut se)] {
            if let Some(p) = pipe.as_mut()
                && ready.next() == Some(true)
                && !drain(p, &mut buf, s, rec, &mut recorded, limit, tx)?
            {
                *pipe = None;
            }
        }
        if si.is_some() && ready.next() == Some(true) {
            match si.as_mut().map(|p| p.write(input)) {
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
}

/// Whether pipe `p` of a stream whose reader went away reaches its end
/// of file without waiting: what it holds is read (and recorded, like any
/// read) without blocking. False while the command (or a process it left
/// behind) still holds the write end, when more than [`WHOLE_PROBE`] bytes
/// keep coming (`yes`), or on a read error: the stream is then cut.
fn ended_whole(
    p: &mut File,
    buf: &mut [u8],
    s: Stream,
    rec: &mut Recording,
    recorded: &mut u64,
    limit: u64,
    tx: &Queue,
) -> bool {
    if rustix::fs::fcntl_setfl(&*p, rustix::fs::OFlags::NONBLOCK).is_err() {
        return false;
    }
    let until = recorded.saturating_add(WHOLE_PROBE);
    while *recorded <= until {
        match drain(p, buf, s, rec, recorded, limit, tx) {
            Ok(true) => {}
            Ok(false) => return true,
            Err(_) => return false,
        }
    }
    false
}

/// The most a stream whose reader went away is read on to find its end
/// ([`ended_whole`]): a pipe holds 64 KiB by default, 1 MiB at most
/// (`/proc/sys/fs/pipe-max-size`), so more is a command still writing.
const WHOLE_PROBE: u64 = 1 << 20;

/// One read from a ready pipe; `false` at end of file.
fn drain<R: Read>(
    p: &mut R,
    buf: &mut [u8],
    s: Stream,
    rec: &mut Recording,
    recorded: &mut u64,
    limit: u64,
    tx: &Queue,
) -> io::Result<bool> {
    loop {
        match p.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                *recorded += n as u64;
                rec.seen[s.index()] += n as u64;
                if *recorded > limit && !rec.overflowed {
                    rec.overflowed = true;
                    rec.chunks = Vec::new();
                }
                if !rec.overflowed && !rec.push(s, &buf[..n]) {
                    rec.give_up_for_memory();
                }
                tx.send(s, &buf[..n], rec);
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

    /// `pump` with the reader of stdout already gone: a pipe whose writer
    /// wrote everything and closed is whole (recorded, not cut), one whose
    /// writer still holds it open is cut. The race the pass-through loses
    /// in `cache-run -- head -c 200000 /dev/zero | head -c1`, made certain.
    #[test]
    fn a_stream_that_ended_before_its_reader_left_is_whole() {
        for writer_open in [false, true] {
            let (r, w) = rustix::pipe::pipe().unwrap();
            let mut w = File::from(w);
            w.write_all(&[7u8; 5000]).unwrap();
            let keep = writer_open.then_some(w);
            let (tx, rx) = mpsc::channel();
            let queue = Queue {
                tx,
                bytes: std::sync::Arc::new(AtomicU64::new(0)),
            };
            let gone = [AtomicBool::new(true), AtomicBool::new(false)];
            let mut rec = Recording::default();
            let p = Pipes {
                so: Some(File::from(r)),
                se: None,
                si: None,
            };
            pump(p, &[], &mut rec, u64::MAX, &queue, &gone).unwrap();
            drop((queue, keep));
            let got: usize = rx.iter().map(|(_, b)| b.len()).sum();
            assert_eq!(rec.cut, writer_open, "writer open: {writer_open}");
            assert_eq!(got, 5000, "what the pipe held is read either way");
        }
    }

    fn sh(script: &str) -> Vec<OsString> {
        ["sh", "-c", script].map(OsString::from).to_vec()
    }

    fn cap(script: &str, limit: u64) -> Result<(Recording, Vec<u8>, Vec<u8>)> {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let (r, (), d) = run(
            &sh(script),
            Input::Null,
            0,
            limit,
            Shape::Split,
            &mut o,
            &mut e,
            |_| (),
        )?;
        assert!(!d.gone && d.error.is_none());
        Ok((r, o, e))
    }

    #[test]
    fn output_past_the_limit_is_passed_through_but_not_recorded() {
        let (r, o, e) = cap("head -c 1000 /dev/zero; echo x >&2", 100).unwrap();
        assert!(r.overflowed && r.chunks.is_empty());
        assert_eq!((o.len(), e.as_slice()), (1000, &b"x\n"[..]));
        let (r, _, _) = cap("printf ab; printf c >&2; printf d", 100).unwrap();
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
    fn one_channel_keeps_the_exact_order() {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let (r, (), _) = run(
            &sh("for i in 1 2 3; do echo o$i; echo e$i >&2; done"),
            Input::Null,
            0,
            1000,
            Shape::Merged,
            &mut o,
            &mut e,
            |_| (),
        )
        .unwrap();
        assert_eq!(o, b"o1\ne1\no2\ne2\no3\ne3\n");
        assert!(e.is_empty());
        assert_eq!(r.chunks.len(), 1);
    }

    #[test]
    fn statuses_and_spawn_errors() {
        assert_eq!(cap("exit 9", 100).unwrap().0.status, 9);
        // SIGTERM: a SIGINT may be ignored by inheritance (a background job
        // of a non-interactive shell), and then `kill -INT $$` does nothing.
        assert_eq!(cap("kill -TERM $$", 100).unwrap().0.status, 143);
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let err = run(
            &[OsString::from("/nonexistent/ffkit-x")],
            Input::Null,
            0,
            100,
            Shape::Split,
            &mut o,
            &mut e,
            |_| (),
        )
        .err()
        .unwrap();
        assert_eq!(err.exit_code(), 4);
        assert!(
            run(
                &[],
                Input::Null,
                0,
                100,
                Shape::Split,
                &mut o,
                &mut e,
                |_| ()
            )
            .is_err()
        );
    }
}
