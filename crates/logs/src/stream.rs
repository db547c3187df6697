use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::record::{now_nanos, Record, Source};
use crate::segment::{self, SegmentMeta, HEADER, MAGIC};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot open log stream in {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Records kept in memory (besides those not written yet): the newest
    /// records are served from here, older ones from the segments.
    pub window: usize,
    /// A segment is sealed (and a new one started) past this size.
    pub max_file_bytes: u64,
    /// Retention by size: the oldest segments go once all of them together
    /// are larger than this.
    pub max_total_bytes: u64,
    /// Retention by age: a segment goes once its newest record is older.
    pub max_age: Duration,
    /// Back-pressure bound: task output waits in `append` while this many
    /// records are not written yet (other sources never wait).
    pub max_unwritten: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            window: 20_000,
            max_file_bytes: 32 << 20,
            max_total_bytes: 1 << 30,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_unwritten: 32_768,
        }
    }
}

/// Which records a query or follower wants. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub app: Option<String>,
    pub service: Option<String>,
    pub task: Option<String>,
    pub sources: Vec<Source>,
    /// Unix nanoseconds, inclusive.
    pub since: Option<u64>,
    /// Unix nanoseconds, exclusive.
    pub until: Option<u64>,
    /// Only records whose message matches.
    pub grep: Option<regex::Regex>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        self.matches_fields(r) && self.grep.as_ref().is_none_or(|g| g.is_match(&r.message))
    }

    /// [`Filter::matches`] without the grep (the cheap part).
    fn matches_fields(&self, r: &Record) -> bool {
        fn eq(want: &Option<String>, have: &Option<String>) -> bool {
            want.is_none() || want == have
        }
        eq(&self.app, &r.app)
            && eq(&self.service, &r.service)
            && eq(&self.task, &r.task)
            && (self.sources.is_empty() || self.sources.contains(&r.source))
            && self.since.is_none_or(|t| r.time >= t)
            && self.until.is_none_or(|t| r.time < t)
    }
}

/// Records a follower may fall behind before it is told it skipped some.
const FOLLOW_BUFFER: usize = 16_384;
/// Records handed to the writer per round (bounds the writer's memory).
const BATCH: usize = 4096;
/// Written data is synced to disk at least this often.
const SYNC_EVERY: Duration = Duration::from_secs(1);
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// The active segment is sealed after this long, so age retention can drop
/// old records even on a quiet stream.
const SEGMENT_MAX_AGE: Duration = Duration::from_secs(3600);
const SEGMENTS_DIR: &str = "segments";

struct State {
    next_seq: u64,
    /// Newest records, contiguous in seq. Only written records are evicted,
    /// so window + segments always cover the whole stream.
    window: VecDeque<Arc<Record>>,
    /// Highest seq handed to the OS by the writer.
    written: u64,
    writer_idle: bool,
    /// Set when the writer stopped (shutdown or panic): nobody waits anymore.
    writer_gone: bool,
    waiters: usize,
    shutdown: bool,
    /// Each follower gets only the records its filter selects (grep aside),
    /// so a follower of one quiet service never lags behind a noisy one.
    followers: Vec<(Filter, broadcast::Sender<Arc<Record>>)>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer.
    work: Condvar,
    /// Signalled after each written batch (back-pressure and flush waiters).
    written_cv: Condvar,
    /// Index of every segment, oldest first; the last one is being written.
    segments: Mutex<Vec<Arc<SegmentMeta>>>,
    dir: PathBuf,
    opts: StreamOptions,
    /// Segment files opened by queries (lets tests prove index skipping).
    segments_read: AtomicU64,
    /// Records appended since the stream was opened.
    ingested: AtomicU64,
    /// Records whose write to a segment failed (still in memory and sent to
    /// followers, but not on disk).
    unstored: AtomicU64,
}

impl Shared {
    /// Numbers a record and puts it in the window and to the followers.
    /// Waits for the writer first if task output is too far ahead of it.
    fn push<'a>(&'a self, mut st: MutexGuard<'a, State>, mut record: Record) -> (MutexGuard<'a, State>, u64) {
        if matches!(record.source, Source::Stdout | Source::Stderr) {
            let bound = self.opts.max_unwritten.max(1) as u64;
            while st.next_seq - 1 - st.written >= bound && !st.writer_gone {
                st.waiters += 1;
                // Waiting releases the lock: the writer has to run.
                self.wake_writer(&mut st);
                st = self.written_cv.wait(st).unwrap_or_else(|p| p.into_inner());
                st.waiters -= 1;
            }
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        record.seq = seq;
        self.ingested.fetch_add(1, Ordering::Relaxed);
        let record = Arc::new(record);
        while st.window.len() >= self.opts.window && st.window.front().is_some_and(|r| r.seq <= st.written) {
            st.window.pop_front();
        }
        st.window.push_back(record.clone());
        // Sent under the lock so followers see records in sequence order.
        if !st.followers.is_empty() {
            st.followers.retain(|(f, tx)| {
                if f.matches_fields(&record) {
                    return tx.send(record.clone()).is_ok();
                }
                tx.receiver_count() > 0
            });
        }
        (st, seq)
    }

    fn wake_writer(&self, st: &mut State) {
        if st.writer_idle {
            st.writer_idle = false;
            self.work.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn segments(&self) -> MutexGuard<'_, Vec<Arc<SegmentMeta>>> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stops the writer (after it has written everything) when the last handle goes.
struct Owner {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// Cheap to clone; all clones append to the same stream.
#[derive(Clone)]
pub struct LogStream {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl LogStream {
    /// Opens (or creates) the stream in `dir`: reads the segment indexes,
    /// cuts a torn tail off the last segment, and starts the writer.
    pub fn open(dir: &Path, opts: StreamOptions) -> Result<LogStream, StreamError> {
        let open_err = |source| StreamError::Open { path: dir.to_path_buf(), source };
        let seg_dir = dir.join(SEGMENTS_DIR);
        std::fs::create_dir_all(&seg_dir).map_err(open_err)?;
        let (metas, file) = recover(&seg_dir).map_err(open_err)?;
        let active = metas.last().expect("recover leaves an active segment");
        let next_seq = if active.is_empty() { active.first_seq } else { active.last_seq + 1 };
        let meta = (**active).clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_seq,
                window: VecDeque::new(),
                written: next_seq - 1,
                writer_idle: false,
                writer_gone: false,
                waiters: 0,
                shutdown: false,
                followers: Vec::new(),
            }),
            work: Condvar::new(),
            written_cv: Condvar::new(),
            segments: Mutex::new(metas),
            dir: seg_dir,
            opts,
            segments_read: AtomicU64::new(0),
            ingested: AtomicU64::new(0),
            unstored: AtomicU64::new(0),
        });
        let writer = Writer {
            shared: shared.clone(),
            file: Arc::new(file),
            syncer: Syncer::start()
                .map_err(|e| tracing::warn!("cannot start the log stream's sync thread, syncing inline: {e}"))
                .ok(),
            meta,
            buf: Vec::with_capacity(1 << 20),
            buf_records: 0,
            payload: Vec::with_capacity(1024),
            opened: Instant::now(),
            dirty: false,
            failed_writes: 0,
            failed_since_report: 0,
            last_report: None,
        };
        let thread =
            std::thread::Builder::new().name("wharf-logs".into()).spawn(move || writer.run()).map_err(open_err)?;
        let owner = Arc::new(Owner { shared: shared.clone(), thread: Mutex::new(Some(thread)) });
        Ok(LogStream { shared, _owner: owner })
    }

    /// Adds a record and returns its sequence number. Task output (stdout,
    /// stderr) waits here while too much is unwritten: that is the stream's
    /// back-pressure, and the driver's spool files absorb it without the
    /// task noticing. Events and other sources never wait.
    pub fn append(&self, record: Record) -> u64 {
        let sh = &*self.shared;
        let st = sh.lock();
        let (mut st, seq) = sh.push(st, record);
        sh.wake_writer(&mut st);
        seq
    }

    /// Adds records in one go: one lock and at most one wake-up of the
    /// writer for the lot, which is what a high-rate source (the proxy's
    /// access log) needs. Task output still waits as in [`LogStream::append`].
    pub fn append_all(&self, records: impl IntoIterator<Item = Record>) {
        let sh = &*self.shared;
        let mut st = sh.lock();
        for record in records {
            st = sh.push(st, record).0;
        }
        sh.wake_writer(&mut st);
    }

    /// The newest `limit` records matching `filter`, oldest first: from
    /// memory, then from the segments (newest first, skipping the segments
    /// and blocks whose index rules them out).
    pub fn query(&self, filter: &Filter, limit: usize) -> Vec<Arc<Record>> {
        let (window, below) = {
            let st = self.shared.lock();
            (st.window.iter().cloned().collect::<Vec<_>>(), st.window.front().map_or(st.next_seq, |r| r.seq))
        };
        self.collect(filter, limit, window, below)
    }

    /// The newest `backlog` matching records plus a receiver for everything
    /// appended after them, taken atomically: no gap, no duplicate.
    pub fn follow(&self, filter: &Filter, backlog: usize) -> (Vec<Arc<Record>>, broadcast::Receiver<Arc<Record>>) {
        let (window, below, rx) = {
            let mut st = self.shared.lock();
            let (tx, rx) = broadcast::channel(FOLLOW_BUFFER);
            st.followers.push((filter.clone(), tx));
            (st.window.iter().cloned().collect::<Vec<_>>(), st.window.front().map_or(st.next_seq, |r| r.seq), rx)
        };
        (self.collect(filter, backlog, window, below), rx)
    }

    /// A receiver of every record appended from now on, with room for
    /// `capacity` records it has not taken yet (beyond that it lags, and the
    /// receiver is told how many it missed). Returns the seq of the first
    /// record it will get.
    pub fn subscribe(&self, capacity: usize) -> (u64, broadcast::Receiver<Arc<Record>>) {
        let mut st = self.shared.lock();
        let (tx, rx) = broadcast::channel(capacity.max(1));
        st.followers.push((Filter::default(), tx));
        (st.next_seq, rx)
    }

    /// Up to `limit` records with `after < seq < before`, oldest first:
    /// from the segments, then from memory. For readers that keep their own
    /// position in the stream (an exporter resuming after a restart).
    pub fn read_after(&self, after: u64, before: u64, limit: usize) -> Vec<Arc<Record>> {
        let (window, front) = {
            let st = self.shared.lock();
            let front = st.window.front().map_or(st.next_seq, |r| r.seq);
            let window: Vec<_> = st.window.iter().filter(|r| r.seq > after && r.seq < before).cloned().collect();
            (window, front)
        };
        let mut out = Vec::new();
        // Everything below the window's front is written (only written
        // records leave memory), so the segments hold it unless retention
        // removed it.
        let disk_below = front.min(before);
        if after + 1 < disk_below {
            self.read_disk_range(after, disk_below, limit, &mut out);
        }
        let last = out.last().map_or(after, |r: &Arc<Record>| r.seq);
        out.extend(window.into_iter().filter(|r| r.seq > last).take(limit - out.len()));
        out
    }

    /// Appends records with `after < seq < below` from the segments, oldest
    /// first, until `out` holds `limit`.
    fn read_disk_range(&self, after: u64, below: u64, limit: usize, out: &mut Vec<Arc<Record>>) {
        let metas = self.shared.segments().clone();
        for meta in &metas {
            if meta.is_empty() || meta.last_seq <= after || meta.first_seq >= below {
                continue;
            }
            let Ok(file) = File::open(segment::log_path(&self.shared.dir, meta.first_seq)) else { continue };
            self.shared.segments_read.fetch_add(1, Ordering::Relaxed);
            for i in 0..meta.blocks.len() {
                let block_last = meta.blocks.get(i + 1).map_or(meta.last_seq, |b| b.first_seq.saturating_sub(1));
                if block_last <= after {
                    continue;
                }
                if meta.blocks[i].first_seq >= below {
                    return;
                }
                let (start, end) = meta.block_range(i);
                let buf = match segment::read_range(&file, start, end) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!("reading log segment {}: {e}", meta.first_seq);
                        continue;
                    }
                };
                for r in segment::parse_block(&buf).filter(|r| r.seq > after && r.seq < below) {
                    out.push(Arc::new(r));
                    if out.len() >= limit {
                        return;
                    }
                }
            }
        }
    }

    /// Counters since the stream was opened.
    pub fn stats(&self) -> StreamStats {
        let next_seq = self.shared.lock().next_seq;
        StreamStats {
            ingested: self.shared.ingested.load(Ordering::Relaxed),
            unstored: self.shared.unstored.load(Ordering::Relaxed),
            next_seq,
        }
    }

    /// Matches from the memory snapshot, then from disk for seq < `below`.
    fn collect(&self, filter: &Filter, limit: usize, window: Vec<Arc<Record>>, below: u64) -> Vec<Arc<Record>> {
        let mut out: Vec<_> = window.into_iter().rev().filter(|r| filter.matches(r)).take(limit).collect();
        if out.len() < limit {
            self.read_disk(filter, limit, below, &mut out);
        }
        out.reverse();
        out
    }

    /// Appends matches with seq < `below` to `out` (newest first) until it
    /// holds `limit` records.
    fn read_disk(&self, filter: &Filter, limit: usize, below: u64, out: &mut Vec<Arc<Record>>) {
        let metas = self.shared.segments().clone();
        for meta in metas.iter().rev() {
            if !meta.may_match(filter, below) {
                continue;
            }
            // Gone: retention removed it meanwhile.
            let Ok(file) = File::open(segment::log_path(&self.shared.dir, meta.first_seq)) else { continue };
            self.shared.segments_read.fetch_add(1, Ordering::Relaxed);
            for i in (0..meta.blocks.len()).rev() {
                if !segment::block_may_match(&meta.blocks[i], filter, below) {
                    continue;
                }
                let (start, end) = meta.block_range(i);
                let buf = match segment::read_range(&file, start, end) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!("reading log segment {}: {e}", meta.first_seq);
                        continue;
                    }
                };
                let mut hits: Vec<Record> =
                    segment::parse_block(&buf).filter(|r| r.seq < below && filter.matches(r)).collect();
                while let Some(r) = hits.pop() {
                    out.push(Arc::new(r));
                    if out.len() >= limit {
                        return;
                    }
                }
            }
        }
    }

    /// Waits until everything appended so far is written to the segment
    /// file (handed to the OS; it is synced within a second).
    pub fn flush(&self) {
        let sh = &*self.shared;
        let mut st = sh.lock();
        let target = st.next_seq - 1;
        while st.written < target && !st.writer_gone {
            if st.writer_idle {
                st.writer_idle = false;
                sh.work.notify_one();
            }
            st.waiters += 1;
            st = sh.written_cv.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiters -= 1;
        }
    }

    /// Applies retention now (the writer also does it on every segment roll
    /// and every minute). Never removes the segment being written.
    pub fn enforce_retention(&self) {
        enforce_retention(&self.shared, now_nanos());
    }

    /// How many segment files queries have opened so far.
    pub fn segments_read(&self) -> u64 {
        self.shared.segments_read.load(Ordering::Relaxed)
    }

    /// Number of segments and their total size in bytes.
    pub fn disk_usage(&self) -> (usize, u64) {
        let segs = self.shared.segments();
        (segs.len(), segs.iter().map(|m| m.bytes).sum())
    }
}

/// What a stream has seen since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Records appended.
    pub ingested: u64,
    /// Records that could not be written to disk (kept in memory only).
    pub unstored: u64,
    /// The seq the next record will get.
    pub next_seq: u64,
}

/// Loads every segment's index (rebuilding missing ones), cuts a torn tail
/// off the last segment, and opens the segment to write to.
fn recover(dir: &Path) -> std::io::Result<(Vec<Arc<SegmentMeta>>, File)> {
    let seqs = segment::list(dir)?;
    let mut metas = Vec::with_capacity(seqs.len() + 1);
    let mut active = None;
    for (i, &first) in seqs.iter().enumerate() {
        let last = i + 1 == seqs.len();
        if let Some(m) = segment::load_index(dir, first) {
            metas.push(Arc::new(m));
            continue;
        }
        let path = segment::log_path(dir, first);
        let meta = segment::scan(&path, first)?;
        let len = std::fs::metadata(&path)?.len();
        if meta.bytes < len {
            tracing::warn!(segment = %path.display(), "cutting {} bytes of torn or corrupt log tail", len - meta.bytes);
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        if meta.bytes < HEADER as u64 {
            file.set_len(0)?;
            file.write_all_at(MAGIC, 0)?;
        } else if meta.bytes < len {
            file.set_len(meta.bytes)?;
        }
        let mut meta = meta;
        meta.bytes = meta.bytes.max(HEADER as u64);
        if last {
            active = Some(file);
        } else if let Err(e) = segment::save_index(dir, &meta) {
            tracing::warn!("cannot save log index: {e}");
        }
        metas.push(Arc::new(meta));
    }
    let file = match active {
        Some(f) => f,
        None => {
            // No segment yet, or the last one is sealed: start a new one.
            let next = metas.last().map_or(1, |m| if m.is_empty() { m.first_seq } else { m.last_seq + 1 });
            let (file, meta) = create_segment(dir, next)?;
            metas.push(Arc::new(meta));
            file
        }
    };
    Ok((metas, file))
}

fn create_segment(dir: &Path, first_seq: u64) -> std::io::Result<(File, SegmentMeta)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(segment::log_path(dir, first_seq))?;
    file.write_all(MAGIC)?;
    Ok((file, SegmentMeta::new(first_seq)))
}

/// Drops the oldest sealed segments while they are too old or too many bytes.
fn enforce_retention(sh: &Shared, now: u64) {
    let max_age = sh.opts.max_age.as_nanos() as u64;
    let doomed: Vec<u64> = {
        let mut segs = sh.segments();
        let mut total: u64 = segs.iter().map(|m| m.bytes).sum();
        let mut doomed = Vec::new();
        while segs.len() > 1 {
            let old = &segs[0];
            if total <= sh.opts.max_total_bytes && (old.is_empty() || old.max_time.saturating_add(max_age) >= now) {
                break;
            }
            total -= old.bytes;
            doomed.push(old.first_seq);
            segs.remove(0);
        }
        doomed
    };
    for first in doomed {
        tracing::debug!("log retention: removing segment {first}");
        let _ = std::fs::remove_file(segment::idx_path(&sh.dir, first));
        if let Err(e) = std::fs::remove_file(segment::log_path(&sh.dir, first)) {
            tracing::warn!("cannot remove old log segment {first}: {e}");
        }
    }
}

/// The writer thread: takes unwritten records from the window in batches,
/// frames them into the active segment, keeps its index, rolls and syncs.
struct Writer {
    shared: Arc<Shared>,
    /// Shared with the syncer.
    file: Arc<File>,
    /// Syncs the active segment every second without the writer waiting;
    /// None if its thread could not start (the writer syncs itself then).
    syncer: Option<Syncer>,
    /// The active segment's index (published to `shared.segments` per batch).
    meta: SegmentMeta,
    buf: Vec<u8>,
    /// Records framed in `buf`.
    buf_records: u64,
    payload: Vec<u8>,
    opened: Instant,
    dirty: bool,
    /// Failed writes since the last report: a full disk fails every batch,
    /// and one line per batch would bury the server's log.
    failed_writes: u64,
    failed_since_report: u64,
    last_report: Option<Instant>,
}

/// Repeated write failures are reported at most this often.
const WRITE_ERROR_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Marks the writer gone if it stops for any reason (even a panic), so
/// nobody waits on it forever.
struct GoneGuard(Arc<Shared>);

impl Drop for GoneGuard {
    fn drop(&mut self) {
        self.0.lock().writer_gone = true;
        self.0.written_cv.notify_all();
    }
}

impl Writer {
    fn run(mut self) {
        let _guard = GoneGuard(self.shared.clone());
        let mut last_sync = Instant::now();
        let mut last_retention = Instant::now();
        enforce_retention(&self.shared, now_nanos());
        loop {
            let batch = {
                let mut st = self.shared.lock();
                loop {
                    if st.next_seq - 1 > st.written {
                        break;
                    }
                    if st.shutdown {
                        drop(st);
                        self.sync();
                        if let Some(s) = self.syncer.take() {
                            s.stop();
                        }
                        return;
                    }
                    st.writer_idle = true;
                    let (g, timeout) = self.shared.work.wait_timeout(st, SYNC_EVERY).unwrap_or_else(|p| p.into_inner());
                    st = g;
                    st.writer_idle = false;
                    if timeout.timed_out() {
                        break;
                    }
                }
                let from = st.written + 1;
                let first = st.window.front().map_or(from, |r| r.seq);
                let skip = (from - first) as usize;
                st.window.iter().skip(skip).take(BATCH).cloned().collect::<Vec<_>>()
            };
            if let Some(last) = batch.last() {
                let last = last.seq;
                self.write(&batch);
                drop(batch);
                let mut st = self.shared.lock();
                st.written = last;
                let window = self.shared.opts.window;
                while st.window.len() > window && st.window.front().is_some_and(|r| r.seq <= last) {
                    st.window.pop_front();
                }
                if st.waiters > 0 {
                    self.shared.written_cv.notify_all();
                }
            }
            if last_sync.elapsed() >= SYNC_EVERY {
                self.sync_soon();
                last_sync = Instant::now();
            }
            if !self.meta.is_empty() && self.opened.elapsed() >= SEGMENT_MAX_AGE {
                self.roll(self.meta.last_seq + 1);
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                enforce_retention(&self.shared, now_nanos());
                last_retention = Instant::now();
            }
        }
    }

    fn write(&mut self, batch: &[Arc<Record>]) {
        for r in batch {
            self.payload.clear();
            if let Err(e) = serde_json::to_writer(&mut self.payload, &**r) {
                tracing::error!("cannot encode log record {}: {e}", r.seq);
                continue;
            }
            let frame = 8 + self.payload.len() as u64;
            let offset = self.meta.bytes + self.buf.len() as u64;
            if offset + frame > self.shared.opts.max_file_bytes && !self.meta.is_empty() {
                self.write_out();
                self.roll(r.seq);
            }
            let offset = self.meta.bytes + self.buf.len() as u64;
            segment::encode_frame(&mut self.buf, &self.payload);
            self.buf_records += 1;
            self.meta.add(offset, segment::Entry::of(r));
        }
        self.write_out();
    }

    /// Writes the buffered frames and publishes the index that covers them.
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.file.write_all_at(&self.buf, self.meta.bytes) {
            Ok(()) => {
                self.meta.bytes += self.buf.len() as u64;
                if self.failed_writes > 0 {
                    tracing::warn!("log stream writes succeed again after {} failed writes", self.failed_writes);
                    self.failed_writes = 0;
                    self.failed_since_report = 0;
                    self.last_report = None;
                }
            }
            // The records stay in memory and in followers; they just won't
            // be on disk. Loud, since that is loss for later queries, but
            // once per interval: the count is in the metrics.
            Err(e) => {
                self.shared.unstored.fetch_add(self.buf_records, Ordering::Relaxed);
                self.failed_writes += 1;
                self.failed_since_report += 1;
                if self.last_report.is_none_or(|t| t.elapsed() >= WRITE_ERROR_REPORT_EVERY) {
                    tracing::error!(
                        "log stream writes fail ({} since the last report), records are kept in memory only: {e}",
                        self.failed_since_report
                    );
                    self.failed_since_report = 0;
                    self.last_report = Some(Instant::now());
                }
            }
        }
        self.buf.clear();
        self.buf_records = 0;
        self.dirty = true;
        let published = Arc::new(self.meta.clone());
        if let Some(last) = self.shared.segments().last_mut() {
            *last = published;
        }
    }

    /// Has the syncer sync what is written so far; inline without one.
    fn sync_soon(&mut self) {
        match &self.syncer {
            Some(s) if self.dirty => {
                s.request(&self.file);
                self.dirty = false;
            }
            Some(_) => {}
            None => self.sync(),
        }
    }

    /// Syncs now, on the writer (at a roll and at shutdown).
    fn sync(&mut self) {
        if self.dirty {
            if let Err(e) = self.file.sync_data() {
                tracing::warn!("log stream sync failed: {e}");
            }
            self.dirty = false;
        }
    }

    /// Seals the active segment (sync + saved index) and starts the next.
    fn roll(&mut self, next_seq: u64) {
        // Whatever the syncer has in hand: the index must not be saved
        // before the data it describes is on disk.
        self.dirty = true;
        self.sync();
        let dir = self.shared.dir.clone();
        if let Err(e) = segment::save_index(&dir, &self.meta) {
            tracing::warn!("cannot save log index: {e}");
        }
        match create_segment(&dir, next_seq) {
            Ok((file, meta)) => {
                self.file = Arc::new(file);
                self.meta = meta;
                self.opened = Instant::now();
                self.shared.segments().push(Arc::new(self.meta.clone()));
            }
            Err(e) => {
                // Still active: its index must not claim it is sealed.
                let _ = std::fs::remove_file(segment::idx_path(&dir, self.meta.first_seq));
                tracing::error!("cannot start a new log segment, continuing the current one: {e}");
            }
        }
        enforce_retention(&self.shared, now_nanos());
    }
}

/// The thread that syncs the active segment for the writer. An fdatasync
/// waits for a journal commit (150–200 ms seen on ext4 here while tasks
/// wrote a lot); done on the writer, task output backed up behind it in the
/// stream's back-pressure and every follower waited with it.
struct Syncer {
    tx: std::sync::mpsc::SyncSender<Arc<File>>,
    thread: std::thread::JoinHandle<()>,
}

impl Syncer {
    fn start() -> std::io::Result<Syncer> {
        // One request waiting at most: it covers everything written before
        // it is taken, so a later one adds nothing.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<File>>(1);
        let thread = std::thread::Builder::new().name("wharf-logs-sync".into()).spawn(move || {
            for file in rx {
                if let Err(e) = file.sync_data() {
                    tracing::warn!("log stream sync failed: {e}");
                }
            }
        })?;
        Ok(Syncer { tx, thread })
    }

    /// Never waits: a request already waiting will cover this one.
    fn request(&self, file: &Arc<File>) {
        let _ = self.tx.try_send(file.clone());
    }

    /// Ends the thread after the sync it is doing.
    fn stop(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// Compiles a `--grep` pattern, with a bound on the compiled size so a
/// pattern from a request cannot take the server's memory.
pub fn compile_grep(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid grep pattern `{pattern}`: {e}"))
}
