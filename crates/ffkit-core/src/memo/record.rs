//! The value of a cache-run entry: one recorded run, self-describing and
//! checked before a single byte of it is replayed.
//!
//! Layout (docs/cache-run.md): a one-line JSON header, then the stdin that
//! was fed to the command (with `--key-stdin`, so a refresh can feed it
//! again), then the output. When the command wrote nothing to stderr the
//! output is stdout's bytes as they are; otherwise it is a sequence of chunks `[tag: 1 stdout | 2 stderr][len: u32
//! LE][bytes]` in the order they arrived. The header gives every length, so
//! a truncated or padded file is recognised from its size alone (one fstat)
//! and is a miss, never a partial replay. The header also carries the
//! BLAKE3 hash of the output (and of the stored stdin): a hit checks the
//! hash before it writes a byte (a small or framed output read into memory
//! once; a larger plain one in two passes through a 128 KiB buffer), so a
//! same-length corruption is a miss too, never wrong bytes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

/// Which stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// 0 for stdout, 1 for stderr.
    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    fn tag(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
}

/// The header line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Format version; also the marker that this value is a recorded run.
    pub ffkit_run: u32,
    /// A random id of this recording (the hit counter's generation).
    pub id: u64,
    /// Exit status, or 128+N for a death by signal N.
    pub status: u8,
    /// When the run started, epoch seconds.
    pub ran_at: i64,
    pub duration_ms: f64,
    /// Whether stdin was part of the key (and is stored, `stdin` bytes).
    pub key_stdin: bool,
    pub stdin: u64,
    pub stdout: u64,
    pub stderr: u64,
    /// Number of framed chunks (0 when the output is plain stdout).
    pub chunks: u64,
    /// The command saw one channel for stdout and stderr (the caller's were
    /// one file): everything is recorded as stdout, in its exact order.
    pub merged: bool,
    /// BLAKE3 (hex) of the output bytes as stored (plain or framed).
    pub hash: String,
    /// BLAKE3 (hex) of the stored stdin (empty without `--key-stdin`).
    pub stdin_hash: String,
    /// `--output`: the name of the manifest of the stored outputs in the
    /// output store (`memo::output`); absent without `--output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<String>,
}

/// Version 2 added `merged` and the hashes; a version-1 entry is a miss
/// (it is rewritten by its next call).
const VERSION: u32 = 2;
/// Bytes of framing per chunk: tag and length.
const FRAME: u64 = 5;
/// The first read of a hit: the header and, for small outputs, everything.
const FIRST_READ: usize = 16 * 1024;

impl Header {
    /// Plain stdout: replayed without framing, a large one in two passes.
    pub fn plain(&self) -> bool {
        self.stderr == 0
    }

    fn output_len(&self) -> Option<u64> {
        if self.plain() {
            Some(self.stdout)
        } else {
            self.stdout
                .checked_add(self.stderr)?
                .checked_add(self.chunks.checked_mul(FRAME)?)
        }
    }
}

/// A finished run, as captured (chunks coalesced per stream).
#[derive(Debug, Default)]
pub struct Recording {
    pub chunks: Vec<(Stream, Vec<u8>)>,
    pub status: u8,
    pub ran_at: i64,
    pub duration_ms: f64,
    /// The output went past the recording limit, or past the memory left
    /// (`out_of_memory`): `chunks` was dropped and the run must not be
    /// stored (it was still passed through whole).
    pub overflowed: bool,
    pub out_of_memory: bool,
    /// A reader of the caller's output went away and the command's pipe was
    /// closed: the output may be cut short, so it is never stored.
    pub cut: bool,
    /// Bytes the command printed on stdout and stderr, recorded or not (a
    /// run past the limit, or one that is not stored: `--json`'s counts).
    pub seen: [u64; 2],
}

/// The stdin stored in an entry: its length and BLAKE3 hash (the bytes
/// come from the caller: a spool file, or memory).
#[derive(Clone, Copy, Debug)]
pub struct StdinInfo {
    pub len: u64,
    pub hash: [u8; 32],
}

/// The size past which a recording's buffer is not grown but a new one
/// started ([`Recording::push`]).
const SEGMENT: usize = 1 << 20;

impl Recording {
    /// Appends output, merging with the previous chunk of the same stream;
    /// `false` when the memory left cannot hold it (`ulimit -v`, a small
    /// container): the recording is only for the cache, so the caller
    /// stops recording rather than let the failed allocation abort the
    /// call mid-output.
    #[must_use]
    pub fn push(&mut self, s: Stream, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        match self.chunks.last_mut() {
            // Merged into the last chunk of the same stream while it has
            // room, or while it is small: a buffer grown past SEGMENT by
            // doubling would be copied on each growth by an allocator
            // without `mremap` (the shipped musl build's), holding the
            // output twice at that moment (66 MiB for 32 MiB).
            Some((last, buf))
                if *last == s
                    && (buf.len() + bytes.len() <= buf.capacity() || buf.capacity() < SEGMENT) =>
            {
                // The amortised doubling first, else just what is needed.
                if buf.try_reserve(bytes.len()).is_err()
                    && buf.try_reserve_exact(bytes.len()).is_err()
                {
                    return false;
                }
                buf.extend_from_slice(bytes);
            }
            // A new chunk (another frame of the same stream is as valid as
            // one large frame), SEGMENT at once when it will grow.
            _ => {
                let mut v = Vec::new();
                let room = if self.chunks.last().is_some_and(|(last, _)| *last == s) {
                    bytes.len().max(SEGMENT)
                } else {
                    bytes.len()
                };
                if (v.try_reserve_exact(room).is_err() && v.try_reserve_exact(bytes.len()).is_err())
                    || self.chunks.try_reserve(1).is_err()
                {
                    return false;
                }
                v.extend_from_slice(bytes);
                self.chunks.push((s, v));
            }
        }
        true
    }

    /// Stops recording because the memory left cannot hold more: what was
    /// recorded is freed, and the run is passed through uncached ("not
    /// cached: the output does not fit in the memory left").
    pub fn give_up_for_memory(&mut self) {
        self.overflowed = true;
        self.out_of_memory = true;
        self.chunks = Vec::new();
    }

    fn total(&self, s: Stream) -> u64 {
        self.chunks
            .iter()
            .filter(|(t, _)| *t == s)
            .map(|(_, b)| b.len() as u64)
            .sum()
    }

    /// The value file's parts for recording `id`: the header line, then
    /// (the caller puts the stdin described by `stdin` here) the output,
    /// read from the recording as it is written: a second copy of an
    /// output of up to 256 MiB is never made.
    pub fn encode_parts(
        &self,
        id: u64,
        stdin: Option<StdinInfo>,
        merged: bool,
        outputs: Option<String>,
    ) -> (Vec<u8>, Body<'_>) {
        let stderr = self.total(Stream::Stderr);
        let plain = stderr == 0;
        let body = Body {
            rec: self,
            plain,
            chunk: 0,
            pos: 0,
        };
        let mut hasher = blake3::Hasher::new();
        for (s, b) in &self.chunks {
            if !plain {
                hasher.update(&frame(*s, b));
            }
            hasher.update(b);
        }
        let h = Header {
            ffkit_run: VERSION,
            id,
            status: self.status,
            ran_at: self.ran_at,
            duration_ms: self.duration_ms,
            key_stdin: stdin.is_some(),
            stdin: stdin.map_or(0, |s| s.len),
            stdout: self.total(Stream::Stdout),
            stderr,
            chunks: if plain { 0 } else { self.chunks.len() as u64 },
            merged,
            hash: hasher.finalize().to_hex().to_string(),
            stdin_hash: stdin.map_or_else(String::new, |s| {
                blake3::Hash::from_bytes(s.hash).to_hex().to_string()
            }),
            outputs,
        };
        let mut head = serde_json::to_vec(&h).unwrap_or_default();
        head.push(b'\n');
        (head, body)
    }

    /// The bytes of the value file, with the header for `id`.
    pub fn encode(&self, id: u64, stdin: Option<&[u8]>, merged: bool) -> Vec<u8> {
        let info = stdin.map(|s| StdinInfo {
            len: s.len() as u64,
            hash: *blake3::hash(s).as_bytes(),
        });
        let (mut v, mut body) = self.encode_parts(id, info, merged, None);
        v.extend_from_slice(stdin.unwrap_or_default());
        // Reading from memory cannot fail.
        let _ = body.read_to_end(&mut v);
        v
    }
}

/// A chunk's frame: its tag and its length (u32 LE).
fn frame(s: Stream, b: &[u8]) -> [u8; 5] {
    let n = (b.len() as u32).to_le_bytes();
    [s.tag(), n[0], n[1], n[2], n[3]]
}

/// The output part of a value, read from its [`Recording`]: each chunk's
/// bytes, framed unless the output is plain (stdout only).
pub struct Body<'a> {
    rec: &'a Recording,
    plain: bool,
    /// The chunk being read, and the offset in it, its frame included.
    chunk: usize,
    pos: usize,
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some((s, b)) = self.rec.chunks.get(self.chunk) {
            let head = if self.plain { 0 } else { 5 };
            let n = if self.pos < head {
                let f = frame(*s, b);
                let n = buf.len().min(head - self.pos);
                buf[..n].copy_from_slice(&f[self.pos..self.pos + n]);
                n
            } else {
                let rest = &b[self.pos - head..];
                let n = buf.len().min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                n
            };
            if n == 0 && !buf.is_empty() {
                self.chunk += 1;
                self.pos = 0;
                continue;
            }
            self.pos += n;
            return Ok(n);
        }
        Ok(0)
    }
}

/// The stored stdin of an entry ([`Stored::stdin_reader`]).
pub struct StoredStdin<'a> {
    s: &'a Stored,
    off: u64,
    end: u64,
}

impl Read for StoredStdin<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf.len().min(self.end.saturating_sub(self.off) as usize);
        if want == 0 {
            return Ok(0);
        }
        let first = self.s.first.len() as u64;
        let n = if self.off < first {
            let at = self.off as usize;
            let n = want.min((first - self.off) as usize);
            buf[..n].copy_from_slice(&self.s.first[at..at + n]);
            n
        } else {
            // An in-memory value is whole in `first`: past it, it is short.
            let f = self.s.file.as_ref().ok_or(io::ErrorKind::UnexpectedEof)?;
            match f.read_at(&mut buf[..want], self.off)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => n,
            }
        };
        self.off += n as u64;
        Ok(n)
    }
}

/// An opened entry whose header and length have been checked: a value
/// file (local cache), or a value already in memory (the Redis backend).
pub struct Stored {
    pub header: Header,
    /// `None` when the whole value is in `first`.
    file: Option<File>,
    /// Bytes read so far, from offset 0 (header and maybe more).
    first: Vec<u8>,
    head_len: usize,
    len: u64,
}

impl Stored {
    /// Reads and checks the header against the file's size. `Err` says what
    /// is damaged (the caller treats it as a miss).
    pub fn open(file: File) -> Result<Stored, String> {
        let len = file
            .metadata()
            .map_err(|e| format!("cannot stat: {}", crate::error::os_reason(&e)))?
            .len();
        Stored::open_len(file, len)
    }

    /// [`Stored::open`] for a file whose length the caller has from its own
    /// `fstat` (the cache's hit, which checked it against the sidecar): no
    /// second one.
    pub fn open_len(mut file: File, len: u64) -> Result<Stored, String> {
        let mut first = vec![0u8; FIRST_READ.min(len as usize)];
        file.read_exact(&mut first)
            .map_err(|e| format!("cannot read: {}", crate::error::os_reason(&e)))?;
        Stored::parse(Some(file), first, len)
    }

    /// Checks a value read whole into memory (from the Redis backend).
    pub fn from_bytes(value: Vec<u8>) -> Result<Stored, String> {
        let len = value.len() as u64;
        Stored::parse(None, value, len)
    }

    fn parse(file: Option<File>, first: Vec<u8>, len: u64) -> Result<Stored, String> {
        let Some(nl) = memchr::memchr(b'\n', &first) else {
            return Err("no header line".into());
        };
        let header: Header =
            serde_json::from_slice(&first[..nl]).map_err(|e| format!("damaged header: {e}"))?;
        if header.ffkit_run != VERSION {
            return Err(format!("unknown format version {}", header.ffkit_run));
        }
        let head_len = nl + 1;
        let want = header
            .output_len()
            .and_then(|o| o.checked_add(header.stdin))
            .and_then(|b| b.checked_add(head_len as u64));
        if want != Some(len) {
            return Err(format!(
                "{len} bytes on disk, the header describes {}",
                want.map_or_else(|| "an impossible size".to_string(), |w| w.to_string())
            ));
        }
        Ok(Stored {
            header,
            file,
            first,
            head_len,
            len,
        })
    }

    /// The value file's size.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Reads `len` bytes at `offset`, using what the first read already has.
    fn read_at(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let end = offset + len;
        if end <= self.first.len() as u64 {
            return Ok(self.first[offset as usize..end as usize].to_vec());
        }
        let f = self.file_mut()?;
        f.seek(SeekFrom::Start(offset))?;
        // Up to 256 MiB: where the memory left cannot hold it (`ulimit -v`)
        // the failed allocation must not abort the call (OutOfMemory).
        let mut v = Vec::new();
        v.try_reserve_exact(len as usize)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        v.resize(len as usize, 0);
        f.read_exact(&mut v)?;
        Ok(v)
    }

    /// The value file; an in-memory value is whole in `first`, so asking
    /// for more than it holds means it is shorter than its header says.
    fn file_mut(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    /// The stored stdin as a reader, from the first read and then the
    /// file, never whole in memory; not checked: the reader hashes what it
    /// reads (the refresh's spool) and compares with `header.stdin_hash`.
    pub fn stdin_reader(&self) -> StoredStdin<'_> {
        let off = self.head_len as u64;
        StoredStdin {
            s: self,
            off,
            end: off + self.header.stdin,
        }
    }

    /// The stdin that was fed to the command, checked against its hash
    /// (`Ok(Err(why))`: damaged).
    pub fn stdin(&mut self) -> io::Result<Result<Vec<u8>, String>> {
        let v = self.read_at(self.head_len as u64, self.header.stdin)?;
        if blake3::hash(&v).to_hex().as_str() != self.header.stdin_hash {
            return Ok(Err("the stored stdin does not match its hash".into()));
        }
        Ok(Ok(v))
    }

    /// Whether this recording may be replayed to a caller of `merged`
    /// shape: a merged recording holds stderr's bytes as stdout, so it is
    /// wrong for a caller whose stdout and stderr differ.
    /// `merged` is asked only of a merged recording.
    pub fn fits(&self, merged: impl FnOnce() -> bool) -> bool {
        !self.header.merged || merged()
    }

    /// The output, read whole and checked against the header's hash before
    /// a byte of it is written: one read (no separate checking pass), the
    /// hash at memory speed. `Ok(Err(why))`: damaged.
    fn checked_output(&mut self) -> io::Result<Result<Vec<u8>, String>> {
        let start = self.head_len as u64 + self.header.stdin;
        let len = self.header.output_len().unwrap_or(0);
        let body = match self.read_at(start, len) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Err("shorter than its header says".into()));
            }
            // Not replayable here, as a damaged entry is not: the command
            // runs instead (and its output passes through uncached), where
            // the failed allocation aborted the call.
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                return Ok(Err("the output does not fit in the memory left".into()));
            }
            Err(e) => return Err(e),
        };
        if blake3::hash(&body).to_hex().as_str() != self.header.hash {
            return Ok(Err("the output does not match its hash".into()));
        }
        Ok(Ok(body))
    }

    /// Replays the output to `out` and `err` in the recorded order. The
    /// output is read and checked whole (size, framing, hash) before
    /// anything is written, so a damaged entry is `Ok(Err(why))` with
    /// nothing replayed; write errors (a closed pipe) are `Err`.
    pub fn replay<O: Write, E: Write>(
        mut self,
        out: &mut O,
        err: &mut E,
    ) -> io::Result<Result<(), String>> {
        let start = self.head_len as u64 + self.header.stdin;
        let len = self.header.output_len().unwrap_or(0);
        if self.header.plain()
            && start + len > self.first.len() as u64
            && let Some(file) = &self.file
        {
            return replay_in_passes(file, start, len, &self.header.hash, out);
        }
        let body = match self.checked_output()? {
            Ok(b) => b,
            Err(why) => return Ok(Err(why)),
        };
        if self.header.plain() {
            out.write_all(&body)?;
            out.flush()?;
            return Ok(Ok(()));
        }
        let chunks = match parse_chunks(&body, &self.header) {
            Ok(c) => c,
            Err(why) => return Ok(Err(why)),
        };
        // A stream that fails (its reader gone, a full disk) gets nothing
        // more, but the other one is replayed on, as the miss passes it on
        // (capture's `deliver`). The first failure is returned at the end:
        // any other error before an EPIPE, which the caller passes over.
        let mut dead = [false, false];
        let mut failed: Option<io::Error> = None;
        for (s, bytes) in chunks {
            if dead[s.index()] {
                continue;
            }
            let w: &mut dyn Write = match s {
                Stream::Stdout => out,
                Stream::Stderr => err,
            };
            if let Err(e) = w.write_all(bytes).and_then(|()| w.flush()) {
                dead[s.index()] = true;
                let pipe = |e: &io::Error| e.kind() == io::ErrorKind::BrokenPipe;
                if failed.as_ref().is_none_or(|f| pipe(f) && !pipe(&e)) {
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(Ok(())),
        }
    }
}

/// The buffer of a plain output that the first read did not hold whole.
const PASS_BUF: usize = 128 * 1024;

/// Replays a plain output that the first read did not hold: one pass
/// reads it and checks its hash, a second one reads it again and writes
/// it, both through one 128 KiB buffer. Nothing is written before the
/// whole output is known to be good, and the output is never held whole:
/// a 10 MB buffer costs the kernel more (zeroed pages, a fault per page)
/// than reading the file twice from the page cache (docs/cache-run.md,
/// "Hits"). An entry is never changed in place (a rewrite renames a new
/// file over the name; this one stays as it was), so the second pass reads
/// what the first checked; a file cut short between the passes by someone
/// else ends the replay with an error, never with other bytes.
fn replay_in_passes<O: Write>(
    file: &File,
    start: u64,
    len: u64,
    hash: &str,
    out: &mut O,
) -> io::Result<Result<(), String>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; PASS_BUF.min(len as usize)];
    let mut hasher = blake3::Hasher::new();
    let mut done = 0;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        match file.read_exact_at(&mut buf[..n], start + done) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Err("shorter than its header says".into()));
            }
            Err(e) => return Err(e),
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    if hasher.finalize().to_hex().as_str() != hash {
        return Ok(Err("the output does not match its hash".into()));
    }
    let mut done = 0;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        file.read_exact_at(&mut buf[..n], start + done)
            .map_err(|e| {
                io::Error::other(format!("the entry changed while it was replayed: {e}"))
            })?;
        out.write_all(&buf[..n])?;
        done += n as u64;
    }
    out.flush()?;
    Ok(Ok(()))
}

/// Splits framed output, checking it against the header's totals.
fn parse_chunks<'a>(mut body: &'a [u8], h: &Header) -> Result<Vec<(Stream, &'a [u8])>, String> {
    let mut v = Vec::with_capacity(h.chunks.min(1 << 20) as usize);
    let (mut out, mut err) = (0u64, 0u64);
    while !body.is_empty() {
        if body.len() < FRAME as usize {
            return Err("a chunk header is cut short".into());
        }
        let s = match body[0] {
            1 => Stream::Stdout,
            2 => Stream::Stderr,
            t => return Err(format!("unknown chunk tag {t}")),
        };
        let n = u32::from_le_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let rest = &body[FRAME as usize..];
        if rest.len() < n {
            return Err("a chunk is cut short".into());
        }
        match s {
            Stream::Stdout => out += n as u64,
            Stream::Stderr => err += n as u64,
        }
        v.push((s, &rest[..n]));
        body = &rest[n..];
    }
    if v.len() as u64 != h.chunks || out != h.stdout || err != h.stderr {
        return Err("chunks do not add up to the header's totals".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(parts: &[(Stream, &str)]) -> Recording {
        let mut r = Recording {
            status: 3,
            ran_at: 1000,
            duration_ms: 1.5,
            ..Recording::default()
        };
        for (s, b) in parts {
            assert!(r.push(*s, b.as_bytes()));
        }
        r
    }

    fn stored(bytes: &[u8]) -> Result<Stored, String> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let from_file = Stored::open(f);
        // The in-memory form (Redis) accepts and refuses exactly the same.
        let from_bytes = Stored::from_bytes(bytes.to_vec());
        assert_eq!(
            from_file
                .as_ref()
                .map(|s| s.header.clone())
                .map_err(Clone::clone),
            from_bytes
                .as_ref()
                .map(|s| s.header.clone())
                .map_err(Clone::clone)
        );
        from_file
    }

    #[test]
    fn an_in_memory_value_replays_like_the_file() {
        let big = "y".repeat(3 * FIRST_READ);
        for v in [
            recording(&[(Stream::Stdout, &big)]).encode(1, Some(b"in"), false),
            recording(&[(Stream::Stdout, "o"), (Stream::Stderr, &big)]).encode(2, None, false),
        ] {
            let (mut o, mut e) = (Vec::new(), Vec::new());
            Stored::from_bytes(v.clone())
                .unwrap()
                .replay(&mut o, &mut e)
                .unwrap()
                .unwrap();
            assert_eq!((o, e), replay(&v));
        }
    }

    fn replay(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        stored(bytes)
            .unwrap()
            .replay(&mut o, &mut e)
            .unwrap()
            .unwrap();
        (o, e)
    }

    /// A large output is recorded in buffers of about SEGMENT, never one
    /// buffer grown by doubling (an allocator without `mremap`, the shipped
    /// musl build's, copies on each growth: 66 MiB peak for a 32 MiB miss
    /// in CI's pass over the shipped build), and it stores and replays the
    /// same bytes, plain or framed.
    #[test]
    fn a_large_output_is_recorded_in_segments_and_replays_whole() {
        let piece: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
        for with_stderr in [false, true] {
            let mut r = Recording::default();
            for _ in 0..48 {
                assert!(r.push(Stream::Stdout, &piece));
            }
            if with_stderr {
                assert!(r.push(Stream::Stderr, b"e"));
            }
            let stdout: Vec<u8> = piece.repeat(48);
            assert!(r.chunks.len() >= 3, "{} chunks", r.chunks.len());
            for (_, b) in &r.chunks {
                assert!(b.capacity() <= 2 * SEGMENT, "capacity {}", b.capacity());
            }
            let v = r.encode(1, None, false);
            assert_eq!(stored(&v).unwrap().header.plain(), !with_stderr);
            let want_err = if with_stderr {
                b"e".to_vec()
            } else {
                Vec::new()
            };
            assert_eq!(replay(&v), (stdout, want_err));
        }
    }

    #[test]
    fn plain_and_framed_round_trip_in_order() {
        let plain = recording(&[(Stream::Stdout, "a"), (Stream::Stdout, "b")]);
        assert_eq!(plain.chunks.len(), 1, "same-stream chunks merge");
        let v = plain.encode(7, None, false);
        let s = stored(&v).unwrap();
        assert!(s.header.plain());
        assert_eq!((s.header.status, s.header.id), (3, 7));
        assert_eq!(replay(&v), (b"ab".to_vec(), Vec::new()));

        let mixed = recording(&[
            (Stream::Stdout, "o1"),
            (Stream::Stderr, "e1"),
            (Stream::Stdout, "o2"),
        ]);
        let v = mixed.encode(1, Some(b"in"), false);
        let mut s = stored(&v).unwrap();
        assert_eq!(s.stdin().unwrap().unwrap(), b"in");
        assert_eq!(s.header.chunks, 3);
        assert_eq!(replay(&v), (b"o1o2".to_vec(), b"e1".to_vec()));
    }

    #[test]
    fn large_plain_output_is_copied_from_the_file() {
        let big = "x".repeat(3 * FIRST_READ);
        let v = recording(&[(Stream::Stdout, &big)]).encode(1, Some(b"stdin"), false);
        assert_eq!(replay(&v).0, big.as_bytes());
    }

    /// Records the largest single write.
    struct Widest(Vec<u8>, usize);

    impl Write for Widest {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.1 = self.1.max(b.len());
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_large_plain_hit_is_checked_then_written_through_a_bounded_buffer() {
        let big: Vec<u8> = (0..PASS_BUF * 5 / 2).map(|i| (i % 251) as u8).collect();
        let mut r = recording(&[]);
        assert!(r.push(Stream::Stdout, &big));
        let v = r.encode(1, Some(b"stdin"), false);
        let mut o = Widest(Vec::new(), 0);
        stored(&v)
            .unwrap()
            .replay(&mut o, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert!(o.0 == big, "the output replayed whole");
        assert!(o.1 <= PASS_BUF, "never held whole: widest write {}", o.1);
        // A flipped byte in any pass-sized piece: nothing written.
        for at in [0, PASS_BUF + 7, big.len() - 1] {
            let mut bad = v.clone();
            let i = v.len() - big.len() + at;
            bad[i] ^= 1;
            let mut o = Widest(Vec::new(), 0);
            let r = stored(&bad)
                .unwrap()
                .replay(&mut o, &mut Vec::new())
                .unwrap();
            assert!(r.is_err(), "a flipped byte at {at}");
            assert!(o.0.is_empty(), "nothing replayed");
        }
    }

    #[test]
    fn every_truncation_and_padding_is_refused_before_replay() {
        let v =
            recording(&[(Stream::Stdout, "out"), (Stream::Stderr, "err")]).encode(1, None, false);
        for cut in 0..v.len() {
            assert!(stored(&v[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = v.clone();
        padded.push(b'x');
        assert!(stored(&padded).is_err());
        // A flipped tag keeps the size: the framing check catches it.
        let mut bad = v.clone();
        let nl = bad.iter().position(|&b| b == b'\n').unwrap();
        bad[nl + 1] = 9;
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let r = stored(&bad).unwrap().replay(&mut o, &mut e).unwrap();
        assert!(r.is_err());
        assert!(o.is_empty() && e.is_empty(), "nothing replayed");
        assert!(stored(b"not a run\n").is_err());
    }

    #[test]
    fn a_same_length_corruption_fails_the_hash_before_a_byte_is_written() {
        let big = "y".repeat(3 * FIRST_READ);
        for v in [
            recording(&[(Stream::Stdout, "hello world")]).encode(1, None, false),
            recording(&[(Stream::Stdout, &big)]).encode(1, None, false),
            recording(&[(Stream::Stdout, "hello"), (Stream::Stderr, "world")])
                .encode(1, None, true),
        ] {
            let mut bad = v.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x20;
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let r = stored(&bad).unwrap().replay(&mut o, &mut e).unwrap();
            assert!(r.is_err(), "a flipped last byte");
            assert!(o.is_empty() && e.is_empty(), "nothing replayed");
        }
        let v = recording(&[(Stream::Stdout, "o")]).encode(1, Some(b"input"), false);
        let mut bad = v.clone();
        let at = bad.windows(5).position(|w| w == b"input").unwrap();
        bad[at] = b'I';
        assert!(stored(&bad).unwrap().stdin().unwrap().is_err());
        assert_eq!(stored(&v).unwrap().stdin().unwrap().unwrap(), b"input");
    }
}
