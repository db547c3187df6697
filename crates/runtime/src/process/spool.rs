//! Output spooling: a task writes stdout/stderr to files (O_APPEND) in its
//! directory, never to a pipe, so it can't get SIGPIPE when the server dies.
//! The tailer reads new bytes, splits them into lines for the sink, and
//! records how far it got in its offsets file (`offsets.rs`), so the next
//! server resumes there (a few lines may be delivered twice after a crash;
//! none are lost). It
//! sleeps until the driver's inotify watcher reports a write in the task's
//! directory, so a quiet task costs no CPU.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::inotify::Watcher;
use super::offsets::{Loaded, Offsets, OffsetsFile};
use super::state::{STDERR_FILE, STDOUT_FILE};
use crate::{LogSink, OutputStream, TaskSpec};

/// Longer lines are cut into pieces of at most this many bytes.
pub const MAX_LINE: usize = 16 * 1024;
/// Appended to every piece of a cut line but the last.
pub const CUT_MARKER: &str = "…[cut]";
/// A partial last line is delivered after this long without its newline.
const PARTIAL_AFTER: Duration = Duration::from_secs(1);
const SAVE_EVERY: Duration = Duration::from_millis(100);
/// Punch holes once this much has been consumed since the last hole.
const PUNCH_MIN: u64 = 1024 * 1024;
const CHUNK: usize = 64 * 1024;
/// How long the tail loop sleeps when there is nothing new and no watch
/// wakes it (the directory could not be watched): a task that wrote in the
/// last second is polled every 2 ms, a quiet one every 10 ms.
pub const IDLE_POLL: Duration = Duration::from_millis(10);
const ACTIVE_POLL: Duration = Duration::from_millis(2);
const ACTIVE_FOR: Duration = Duration::from_secs(1);
/// With a watch, writes wake the tail; this poll is only a backstop (a write
/// the kernel does not report, e.g. through a shared mapping). Long, so that
/// 1,000 quiet tasks cost about nothing.
pub const SAFETY_POLL: Duration = Duration::from_secs(30);

struct Stream {
    kind: OutputStream,
    path: PathBuf,
    file: Option<File>,
    /// Bytes read from the file (pending included).
    read_pos: u64,
    /// A partial line, not delivered yet.
    pending: Vec<u8>,
    pending_since: Option<Instant>,
    /// Everything before this offset is a hole.
    punched: u64,
    can_punch: bool,
}

impl Stream {
    fn consumed(&self) -> u64 {
        self.read_pos - self.pending.len() as u64
    }

    fn open(&mut self) -> Option<&File> {
        if self.file.is_none() {
            // Read-write: fallocate needs a writable fd.
            self.file = OpenOptions::new().read(true).write(true).open(&self.path).ok();
        }
        self.file.as_ref()
    }
}

pub struct Spool {
    dir: PathBuf,
    spec: Arc<TaskSpec>,
    sink: Arc<dyn LogSink>,
    streams: [Stream; 2],
    offsets: OffsetsFile,
    saved: Offsets,
    last_save: Instant,
    buf: Vec<u8>,
}

impl Spool {
    /// Open the spool of the task in `dir`, resuming at the saved offsets.
    pub fn open(dir: &Path, spec: Arc<TaskSpec>, sink: Arc<dyn LogSink>) -> Spool {
        let (offsets, loaded) = OffsetsFile::load(dir);
        let saved = match loaded {
            Loaded::Nothing | Loaded::Damaged => Offsets::default(),
            Loaded::Saved(o) => o,
        };
        if loaded == Loaded::Damaged {
            tracing::warn!(
                task = %spec.id,
                "the saved output offsets are damaged: resuming at the first byte not yet punched out of each file (lines may repeat)"
            );
        }
        let stream = |kind, name: &str, offset: u64| {
            let path = dir.join(name);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let offset = if loaded == Loaded::Damaged {
                // Never an offset we cannot vouch for, and never into a hole.
                first_data(&path).min(len)
            } else if offset > len {
                // An offset past the end: the file was truncated after a full drain.
                0
            } else {
                offset
            };
            Stream {
                kind,
                path,
                file: None,
                read_pos: offset,
                pending: Vec::new(),
                pending_since: None,
                punched: 0,
                can_punch: true,
            }
        };
        let streams = [
            stream(OutputStream::Stdout, STDOUT_FILE, saved.stdout),
            stream(OutputStream::Stderr, STDERR_FILE, saved.stderr),
        ];
        Spool {
            dir: dir.to_path_buf(),
            spec,
            sink,
            streams,
            offsets,
            saved,
            last_save: Instant::now(),
            buf: vec![0; CHUNK],
        }
    }

    /// One round: read what is new (up to a chunk per stream), deliver
    /// complete lines, flush old partial lines, save offsets now and then.
    /// Returns whether anything was read.
    pub fn poll(&mut self) -> bool {
        let mut any = false;
        for i in 0..2 {
            any |= self.read(i);
        }
        let now = Instant::now();
        for i in 0..2 {
            if self.streams[i].pending_since.is_some_and(|t| now.duration_since(t) >= PARTIAL_AFTER) {
                self.flush(i);
            }
        }
        if self.last_save.elapsed() >= SAVE_EVERY {
            self.save();
        }
        any
    }

    /// When `poll` has work to do without new bytes: a partial line to
    /// deliver, consumed offsets to save. None: only new bytes matter.
    pub fn next_due(&self) -> Option<Instant> {
        let partial = self.streams.iter().filter_map(|s| s.pending_since).map(|t| t + PARTIAL_AFTER);
        let unsaved = Offsets { stdout: self.streams[0].consumed(), stderr: self.streams[1].consumed() } != self.saved;
        let save = unsaved.then(|| self.last_save + SAVE_EVERY);
        partial.chain(save).min()
    }

    /// Read everything there is, deliver partial lines too, and save: used
    /// when no process writes anymore (exit, stop).
    pub fn drain(&mut self) {
        // Up to the current ends only: a writer that survived cannot keep
        // this going forever.
        let ends: Vec<u64> =
            self.streams.iter().map(|s| std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0)).collect();
        loop {
            let mut progress = false;
            for (i, &end) in ends.iter().enumerate() {
                if self.streams[i].read_pos < end {
                    progress |= self.read(i);
                }
            }
            if !progress {
                break;
            }
        }
        self.flush(0);
        self.flush(1);
        self.save();
    }

    /// Between two processes of a task (nothing writes): start the files
    /// over if everything was consumed, so they don't grow forever.
    pub fn reset_if_drained(&mut self) {
        let mut changed = false;
        for s in &mut self.streams {
            if !s.pending.is_empty() || s.read_pos == 0 {
                continue;
            }
            let pos = s.read_pos;
            let Some(f) = s.open() else { continue };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len == pos && f.set_len(0).is_ok() {
                s.read_pos = 0;
                s.punched = 0;
                changed = true;
            }
        }
        if changed {
            // Truncated before saved: a crash in between leaves offsets past
            // the end, which open() treats as 0.
            self.save();
        }
    }

    fn read(&mut self, i: usize) -> bool {
        let s = &mut self.streams[i];
        let pos = s.read_pos;
        let Some(f) = s.open() else { return false };
        let n = match f.read_at(&mut self.buf, pos) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("reading {}: {e}", s.path.display());
                0
            }
        };
        if n == 0 {
            return false;
        }
        s.read_pos += n as u64;
        s.pending.extend_from_slice(&self.buf[..n]);
        split_lines(&*self.sink, &self.spec, s);
        true
    }

    fn flush(&mut self, i: usize) {
        let s = &mut self.streams[i];
        if !s.pending.is_empty() {
            deliver(&*self.sink, &self.spec, s.kind, &s.pending);
            s.pending.clear();
        }
        s.pending_since = None;
    }

    /// Persist the consumed offsets; then punch holes up to them (never
    /// beyond what is saved: a crash must not make a later server read holes).
    pub fn save(&mut self) {
        self.last_save = Instant::now();
        let now = Offsets { stdout: self.streams[0].consumed(), stderr: self.streams[1].consumed() };
        if now == self.saved {
            return;
        }
        if let Err(e) = self.offsets.save(now) {
            tracing::warn!(task = %self.spec.id, "cannot save output offsets: {e}");
            return;
        }
        self.saved = now;
        for (s, upto) in self.streams.iter_mut().zip([now.stdout, now.stderr]) {
            punch(s, upto);
        }
    }
}

/// Where the first data of `path` is: 0 unless its start was punched out,
/// the length if it is all hole.
#[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
fn first_data(path: &Path) -> u64 {
    let Ok(f) = File::open(path) else { return 0 };
    // SAFETY: lseek on an fd we own; it only moves that fd's position.
    let at = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
    if at >= 0 {
        return at as u64;
    }
    match io::Error::last_os_error().raw_os_error() {
        // No data at or after 0: holes only (or empty).
        Some(libc::ENXIO) => f.metadata().map(|m| m.len()).unwrap_or(0),
        // SEEK_DATA unsupported: a file system that cannot punch holes either.
        _ => 0,
    }
}

#[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
fn punch(s: &mut Stream, upto: u64) {
    let upto = upto & !4095;
    if !s.can_punch || upto < s.punched + PUNCH_MIN {
        return;
    }
    let Some(f) = s.open() else { return };
    // SAFETY: fallocate on an fd we own; KEEP_SIZE leaves the length alone,
    // so concurrent O_APPEND writes are unaffected.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            s.punched as libc::off_t,
            (upto - s.punched) as libc::off_t,
        )
    };
    if r == 0 {
        s.punched = upto;
    } else {
        let e = io::Error::last_os_error();
        tracing::debug!("cannot punch holes in {}: {e}", s.path.display());
        s.can_punch = false;
    }
}

fn split_lines(sink: &dyn LogSink, spec: &TaskSpec, s: &mut Stream) {
    let mut start = 0;
    while let Some(pos) = s.pending[start..].iter().position(|&b| b == b'\n') {
        let end = start + pos;
        let mut line = &s.pending[start..end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        deliver(sink, spec, s.kind, line);
        start = end + 1;
    }
    // A partial line that is already too long: deliver its full pieces now.
    while s.pending.len() - start > MAX_LINE {
        let cut = cut_point(&s.pending[start..]);
        deliver_piece(sink, spec, s.kind, &s.pending[start..start + cut]);
        start += cut;
    }
    if start > 0 {
        s.pending.drain(..start);
        s.pending_since = None;
    }
    if s.pending.is_empty() {
        s.pending_since = None;
    } else if s.pending_since.is_none() {
        s.pending_since = Some(Instant::now());
    }
}

fn deliver(sink: &dyn LogSink, spec: &TaskSpec, kind: OutputStream, mut line: &[u8]) {
    while line.len() > MAX_LINE {
        let cut = cut_point(line);
        deliver_piece(sink, spec, kind, &line[..cut]);
        line = &line[cut..];
    }
    sink.line(spec, kind, line);
}

fn deliver_piece(sink: &dyn LogSink, spec: &TaskSpec, kind: OutputStream, piece: &[u8]) {
    let mut v = Vec::with_capacity(piece.len() + CUT_MARKER.len());
    v.extend_from_slice(piece);
    v.extend_from_slice(CUT_MARKER.as_bytes());
    sink.line(spec, kind, &v);
}

/// Where to cut a too-long line: at MAX_LINE, moved back (at most 3 bytes)
/// so as not to split a UTF-8 sequence.
fn cut_point(line: &[u8]) -> usize {
    let mut cut = MAX_LINE;
    for _ in 0..3 {
        if line[cut] & 0xC0 == 0x80 {
            cut -= 1;
        } else {
            return cut;
        }
    }
    if line[cut] & 0xC0 == 0x80 {
        MAX_LINE
    } else {
        cut
    }
}

/// The per-task tail loop: runs until aborted. With `watcher`, it sleeps
/// until a file of the task's directory is written (or a partial line or a
/// save is due); without one, or if the directory can't be watched, it polls.
pub async fn tail(spool: Arc<Mutex<Spool>>, watcher: Option<Arc<Watcher>>) {
    let watch = watcher.and_then(|w| {
        let dir = lock(&spool).dir.clone();
        w.watch(&dir).map_err(|e| tracing::debug!("cannot watch {}, polling it: {e}", dir.display())).ok()
    });
    let mut last_busy: Option<Instant> = None;
    loop {
        let (busy, due) = may_block(|| {
            let mut s = lock(&spool);
            let busy = s.poll();
            (busy, s.next_due())
        });
        if busy {
            last_busy = Some(Instant::now());
            tokio::task::yield_now().await;
            continue;
        }
        match &watch {
            Some(w) if w.live() => {
                let backstop = Instant::now() + SAFETY_POLL;
                let until = due.map_or(backstop, |d| d.min(backstop));
                tokio::select! {
                    _ = w.changed() => {}
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
            }
            _ if last_busy.is_some_and(|t| t.elapsed() < ACTIVE_FOR) => tokio::time::sleep(ACTIVE_POLL).await,
            _ => tokio::time::sleep(IDLE_POLL).await,
        }
    }
}

/// Runs a poll, which may block: the sink waits while the log stream's
/// writer is too far behind (its back-pressure), and file calls can wait
/// for the disk. On a multi-thread runtime the worker's other tasks move
/// to another thread meanwhile; without that, two noisy tasks' tails
/// waiting on back-pressure held both workers of a 2-core server, and the
/// API, the control loops and every quiet task's tail waited with them.
fn may_block<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Default)]
    struct Lines(Mutex<Vec<(OutputStream, Vec<u8>)>>);
    impl LogSink for Lines {
        fn line(&self, _: &TaskSpec, stream: OutputStream, line: &[u8]) {
            self.0.lock().unwrap().push((stream, line.to_vec()));
        }
    }

    fn setup() -> (tempfile::TempDir, Arc<Lines>, Spool, File) {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Lines::default());
        let out = File::create(dir.path().join(STDOUT_FILE)).unwrap();
        File::create(dir.path().join(STDERR_FILE)).unwrap();
        let spec = TaskSpec::new("t", vec!["x".into()], "/");
        let spool = Spool::open(dir.path(), Arc::new(spec), sink.clone());
        (dir, sink, spool, out)
    }

    fn lines(sink: &Lines) -> Vec<Vec<u8>> {
        sink.0.lock().unwrap().iter().map(|(_, l)| l.clone()).collect()
    }

    #[test]
    fn splits_and_resumes() {
        let (dir, sink, mut spool, mut out) = setup();
        out.write_all(b"one\r\ntwo\nthr").unwrap();
        spool.poll();
        assert_eq!(lines(&sink), vec![b"one".to_vec(), b"two".to_vec()]);
        spool.save();
        out.write_all(b"ee\n").unwrap();
        // A new spool (another server) resumes after "two\n".
        let sink2 = Arc::new(Lines::default());
        let mut spool2 = Spool::open(dir.path(), spool.spec.clone(), sink2.clone());
        spool2.drain();
        assert_eq!(lines(&sink2), vec![b"three".to_vec()]);
    }

    #[test]
    fn damaged_offsets_resume_after_the_punched_part_never_in_a_hole() {
        let (dir, sink, mut spool, mut out) = setup();
        // Past PUNCH_MIN, so the save punches the start of the file out.
        let lines_before = 2 * PUNCH_MIN as usize / 16;
        for i in 0..lines_before {
            writeln!(out, "line {i:010}").unwrap(); // 16 bytes
        }
        spool.drain();
        assert_eq!(lines(&sink).len(), lines_before);
        let punched = spool.streams[0].punched;
        std::fs::write(dir.path().join(super::super::offsets::OFFSETS_FILE), [0x5a; 80]).unwrap();
        out.write_all(b"after\n").unwrap();

        let sink2 = Arc::new(Lines::default());
        Spool::open(dir.path(), spool.spec.clone(), sink2.clone()).drain();
        let got = lines(&sink2);
        assert!(got.iter().all(|l| !l.contains(&0)), "a hole was read as text");
        assert_eq!(got.last().map(Vec::as_slice), Some(&b"after"[..]), "nothing after the damage is lost");
        // Lines repeat (from the first byte not punched out), but no more than that.
        let want = (lines_before * 16 - punched as usize) / 16 + 1;
        assert_eq!(got.len(), want, "resumed at byte {punched}");
    }

    #[test]
    fn cuts_long_lines_on_char_boundaries() {
        let (_dir, sink, mut spool, mut out) = setup();
        let mut long = vec![b'a'; MAX_LINE - 1];
        long.extend_from_slice("é".as_bytes()); // straddles MAX_LINE
        long.extend_from_slice(&[b'b'; 100]);
        out.write_all(&long).unwrap();
        out.write_all(b"\n").unwrap();
        spool.drain();
        let got = lines(&sink);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE - 1 + CUT_MARKER.len());
        assert!(got[0].ends_with(CUT_MARKER.as_bytes()));
        assert!(got[1].starts_with("é".as_bytes()));
        let mut joined = got[0][..got[0].len() - CUT_MARKER.len()].to_vec();
        joined.extend_from_slice(&got[1]);
        assert_eq!(joined, long);
    }

    #[test]
    fn truncates_when_drained() {
        let (dir, _sink, mut spool, mut out) = setup();
        out.write_all(b"x\n").unwrap();
        spool.drain();
        spool.reset_if_drained();
        assert_eq!(std::fs::metadata(dir.path().join(STDOUT_FILE)).unwrap().len(), 0);
        assert_eq!(OffsetsFile::load(dir.path()).1, Loaded::Saved(Offsets::default()));
    }

    #[test]
    fn due_only_while_a_partial_line_or_a_save_waits() {
        let (_dir, sink, mut spool, mut out) = setup();
        spool.poll();
        assert_eq!(spool.next_due(), None, "nothing read, nothing due: the tail sleeps until a write");
        out.write_all(b"abc").unwrap();
        spool.poll();
        let since = spool.streams[0].pending_since.expect("a partial line");
        assert_eq!(spool.next_due(), Some(since + PARTIAL_AFTER));
        out.write_all(b"\n").unwrap();
        spool.poll();
        assert_eq!(lines(&sink), vec![b"abc".to_vec()]);
        if spool.saved.stdout == 0 {
            assert_eq!(spool.next_due(), Some(spool.last_save + SAVE_EVERY), "the offsets wait to be saved");
        }
        spool.save();
        assert_eq!(spool.next_due(), None);
    }

    #[tokio::test]
    async fn a_write_wakes_the_tail_before_its_backstop() {
        let (_dir, sink, spool, mut out) = setup();
        let watcher = Watcher::new().unwrap();
        let tail = tokio::spawn(tail(Arc::new(Mutex::new(spool)), Some(watcher)));
        let wait_lines = |n: usize| {
            let sink = sink.clone();
            async move {
                // Shorter than SAFETY_POLL: only the watch can deliver in time.
                for _ in 0..300 {
                    if lines(&sink).len() >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("{n} lines not delivered within 3 s: {:?}", lines(&sink));
            }
        };
        out.write_all(b"first\n").unwrap();
        wait_lines(1).await;
        // The tail is asleep now, waiting for a write.
        tokio::time::sleep(Duration::from_millis(200)).await;
        out.write_all(b"second\n").unwrap();
        wait_lines(2).await;
        assert_eq!(lines(&sink), vec![b"first".to_vec(), b"second".to_vec()]);
        tail.abort();
    }

    /// A sink whose lines of task "noisy" wait until released, as task
    /// output waits on the log stream's back-pressure.
    struct Held {
        lines: Lines,
        released: Mutex<bool>,
        cv: std::sync::Condvar,
    }
    impl LogSink for Held {
        fn line(&self, spec: &TaskSpec, stream: OutputStream, line: &[u8]) {
            if spec.id == "noisy" {
                let mut r = self.released.lock().unwrap();
                while !*r {
                    r = self.cv.wait(r).unwrap();
                }
            }
            self.lines.line(spec, stream, line);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_tail_held_by_back_pressure_does_not_hold_the_runtime() {
        let sink = Arc::new(Held { lines: Lines::default(), released: Mutex::new(false), cv: Default::default() });
        let spool_of = |id: &str| {
            let dir = tempfile::tempdir().unwrap();
            let out = File::create(dir.path().join(STDOUT_FILE)).unwrap();
            File::create(dir.path().join(STDERR_FILE)).unwrap();
            let spool = Spool::open(dir.path(), Arc::new(TaskSpec::new(id, vec!["x".into()], "/")), sink.clone());
            (dir, Arc::new(Mutex::new(spool)), out)
        };
        let (_d1, noisy, mut noisy_out) = spool_of("noisy");
        let (_d2, quiet, mut quiet_out) = spool_of("quiet");
        noisy_out.write_all(b"held\n").unwrap();
        // The only worker runs the noisy tail first; it blocks in the sink.
        // Waits below are the thread's own, not the runtime's timers: a held
        // worker would stop those too, and the test would hang, not fail.
        let noisy_tail = tokio::spawn(tail(noisy, None));
        std::thread::sleep(Duration::from_millis(50));
        quiet_out.write_all(b"through\n").unwrap();
        let quiet_tail = tokio::spawn(tail(quiet, None));
        let mut delivered = false;
        for _ in 0..300 {
            if lines(&sink.lines).contains(&b"through".to_vec()) {
                delivered = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        *sink.released.lock().unwrap() = true;
        sink.cv.notify_all();
        assert!(delivered, "the quiet task's line waited for the noisy task's sink: {:?}", lines(&sink.lines));
        noisy_tail.abort();
        quiet_tail.abort();
    }

    #[tokio::test]
    async fn a_quiet_tail_saves_its_offsets_so_a_crash_repeats_nothing() {
        let (dir, sink, spool, mut out) = setup();
        let spec = spool.spec.clone();
        let tail = tokio::spawn(tail(Arc::new(Mutex::new(spool)), Some(Watcher::new().unwrap())));
        out.write_all(b"one\ntwo\n").unwrap();
        // No more writes: only the tail's own timer can save the offsets,
        // and before its backstop poll (SAFETY_POLL) would.
        let read_saved = || match OffsetsFile::load(dir.path()).1 {
            Loaded::Saved(o) => Some(o),
            _ => None,
        };
        for _ in 0..300 {
            if read_saved().is_some_and(|o| o.stdout == 8) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let saved = read_saved().unwrap_or_default();
        assert_eq!(saved.stdout, 8, "the consumed offset is saved while the task is quiet");
        assert_eq!(lines(&sink), vec![b"one".to_vec(), b"two".to_vec()]);
        // The server dies (no save on the way out); the task writes on.
        tail.abort();
        let _ = tail.await;
        out.write_all(b"three\n").unwrap();
        let sink2 = Arc::new(Lines::default());
        Spool::open(dir.path(), spec, sink2.clone()).drain();
        assert_eq!(lines(&sink2), vec![b"three".to_vec()], "nothing lost, nothing repeated");
    }
}
