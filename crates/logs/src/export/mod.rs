//! Export: the stream shipped as JSON lines (the same JSON as
//! `wharf logs --json`) to a file or an HTTP endpoint.
//!
//! Per target, off the ingest path:
//!
//! ```text
//! stream ──subscribe──► pump ──► Buffer (bounded) ──► shipper ──► sink
//! ```
//!
//! - The pump moves new records from a stream subscription into the buffer.
//!   It never waits: when the buffer is full the oldest record is dropped and
//!   counted, and once a second the pump appends an `export.dropped` event
//!   ("N records dropped by export to X") to the stream, so loss is never
//!   silent (the event is in `wharf logs` and is itself exported).
//! - The shipper takes batches (up to `batch_records` / `batch_bytes`,
//!   lingering briefly for a fuller one) and ships each until it succeeds,
//!   retrying with capped exponential backoff. A batch the target refuses
//!   for good (a 4xx other than 408/429) is dropped, counted and reported.
//! - After each shipped batch the position (the last shipped seq) is saved
//!   in the state directory, at most once a second and at stop. On start, the
//!   records after the saved position still in the stream's segments are
//!   shipped first (waiting for room, since they are safe on disk): delivery
//!   is at least once, and a crash re-ships at most the last second's batches.
//!   A new target (no saved position, or one saved for another target)
//!   starts with the records appended from then on.

mod backoff;
mod buffer;
mod sink;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use backoff::Backoff;
pub use buffer::Buffer;
pub use sink::ShipError;

use crate::{Level, LogStream, Record};
use sink::{FileSink, HttpSink, Sink};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid export URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid export header `{header}`: {reason}")]
    InvalidHeader { header: String, reason: String },
    #[error("cannot open export file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("cannot create the export state directory {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
}

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Appended to this file.
    File(PathBuf),
    /// POSTed in batches to this `http://` URL, with these extra headers
    /// (`Name: value`).
    Http { url: String, headers: Vec<String> },
}

impl Target {
    /// `file` or `http`: the metrics label and the position file's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::File(_) => "file",
            Target::Http { .. } => "http",
        }
    }

    /// The path or URL.
    pub fn address(&self) -> String {
        match self {
            Target::File(p) => p.display().to_string(),
            Target::Http { url, .. } => url.clone(),
        }
    }

    /// Checks the target without touching it (URL and header syntax).
    pub fn validate(&self) -> Result<(), ExportError> {
        if let Target::Http { url, headers } = self {
            sink::parse_url(url)?;
            sink::parse_headers(headers)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Records held in memory while the target is slow or down (plus the
    /// batch being shipped); beyond that the oldest are dropped.
    pub buffer: usize,
    /// Most records per batch.
    pub batch_records: usize,
    /// A batch is closed once its JSON reaches this size.
    pub batch_bytes: usize,
    /// How long a partial batch waits for more records.
    pub linger: Duration,
    pub backoff: Backoff,
    /// Longest wait for one shipment (HTTP: until the whole answer).
    pub timeout: Duration,
    /// At stop: how long to keep shipping what is buffered.
    pub drain: Duration,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            buffer: 100_000,
            batch_records: 1000,
            batch_bytes: 1 << 20,
            linger: Duration::from_millis(200),
            backoff: Backoff::default(),
            timeout: Duration::from_secs(10),
            drain: Duration::from_secs(5),
        }
    }
}

/// What an exporter has done, for metrics.
pub struct ExportStats {
    target: Target,
    buffer: Arc<Buffer>,
    exported: AtomicU64,
    /// Records in batches the target refused for good.
    refused: AtomicU64,
    failures: AtomicU64,
    position: AtomicU64,
}

impl ExportStats {
    pub fn target(&self) -> &Target {
        &self.target
    }
    /// Records the target accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }
    /// Records given up: dropped from a full buffer, or refused by the target.
    pub fn dropped(&self) -> u64 {
        self.buffer.dropped() + self.refused.load(Ordering::Relaxed)
    }
    /// Failed shipments (each retry counts).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    /// Records waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
    /// The seq of the last record shipped (or given up).
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }
}

/// A running export to one target. [`Exporter::stop`] ships what is
/// buffered (for up to `drain`) and saves the position.
pub struct Exporter {
    stats: Arc<ExportStats>,
    /// Stops the pump; the shipper is stopped once the pump has taken in
    /// the last records.
    stop_pump: watch::Sender<bool>,
    stop_shipper: watch::Sender<bool>,
    pump: JoinHandle<()>,
    shipper: JoinHandle<()>,
}

/// Records a subscription may fall behind the pump before it lags; the pump
/// only moves them into the buffer, so this is rarely more than a few.
const SUBSCRIPTION: usize = 16_384;
/// Records the pump moves into the buffer per lock.
const PUMP_BATCH: usize = 1024;
/// Records the shipper takes from the buffer per lock.
const TAKE: usize = 64;
const SAVE_EVERY: Duration = Duration::from_secs(1);
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Records read from the segments per round when catching up.
const CATCH_UP_PAGE: usize = 1000;

impl Exporter {
    /// Starts exporting `stream` to `target`; the position is kept in
    /// `state_dir`. Must run inside a tokio runtime.
    pub fn start(
        stream: &LogStream,
        target: Target,
        state_dir: &Path,
        opts: ExportOptions,
    ) -> Result<Exporter, ExportError> {
        let sink = match &target {
            Target::File(path) => Sink::File(FileSink::open(path.clone())?),
            Target::Http { url, headers } => {
                Sink::Http(Box::new(HttpSink::new(sink::parse_url(url)?, sink::parse_headers(headers)?)))
            }
        };
        std::fs::create_dir_all(state_dir)
            .map_err(|source| ExportError::State { path: state_dir.to_path_buf(), source })?;
        let (start, rx) = stream.subscribe(SUBSCRIPTION);
        let mut position = Position::new(state_dir, &target);
        let resume_after = match position.load() {
            Some(seq) if seq < start => seq,
            _ => start - 1,
        };
        position.seq = resume_after;
        let buffer = Arc::new(Buffer::new(opts.buffer));
        let stats = Arc::new(ExportStats {
            target,
            buffer: buffer.clone(),
            exported: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            position: AtomicU64::new(resume_after),
        });
        let (stop_pump, pump_rx) = watch::channel(false);
        let (stop_shipper, shipper_rx) = watch::channel(false);
        let pump = Pump { stream: stream.clone(), stats: stats.clone(), reported: 0 };
        let pump = tokio::spawn(pump.run(rx, resume_after, start, pump_rx));
        let shipper = Shipper { sink, stream: stream.clone(), stats: stats.clone(), position, opts, failing: 0 };
        let shipper = tokio::spawn(shipper.run(shipper_rx));
        Ok(Exporter { stats, stop_pump, stop_shipper, pump, shipper })
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }

    /// Takes in everything appended so far, ships what is buffered (giving
    /// up after `drain`; those records are shipped after the next start)
    /// and saves the position.
    pub async fn stop(self) {
        let _ = self.stop_pump.send(true);
        let _ = self.pump.await;
        let _ = self.stop_shipper.send(true);
        let _ = self.shipper.await;
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn event(target: &Target, kind: &str, level: Level, message: String) -> Record {
    let mut r = Record::event(kind, level, message);
    r.fields.insert("sink".into(), target.kind().into());
    r.fields.insert("target".into(), target.address().into());
    r
}

struct Pump {
    stream: LogStream,
    stats: Arc<ExportStats>,
    /// Drops already reported in an event.
    reported: u64,
}

impl Pump {
    async fn run(
        mut self,
        mut rx: broadcast::Receiver<Arc<Record>>,
        resume_after: u64,
        start: u64,
        mut stop: watch::Receiver<bool>,
    ) {
        let buffer = self.stats.buffer.clone();
        // Catch up with what the last run did not ship, from the segments.
        let mut after = resume_after;
        while after + 1 < start {
            let stream = self.stream.clone();
            let page = match tokio::task::spawn_blocking(move || stream.read_after(after, start, CATCH_UP_PAGE)).await {
                Ok(p) => p,
                Err(_) => break,
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page {
                tokio::select! {
                    _ = buffer.push_when_room(r) => {}
                    _ = stopped(&mut stop) => return,
                }
            }
        }
        let mut report = tokio::time::interval(REPORT_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(r) => {
                        // Whatever else is waiting goes in under the same lock.
                        let mut batch = vec![r];
                        while batch.len() < PUMP_BATCH {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(broadcast::error::TryRecvError::Lagged(n)) => buffer.count_dropped(n),
                                Err(_) => break,
                            }
                        }
                        buffer.push_many(batch);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => buffer.count_dropped(n),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = report.tick() => self.report_drops(),
                _ = stopped(&mut stop) => break,
            }
        }
        // Everything appended before the stop is taken in.
        loop {
            match rx.try_recv() {
                Ok(r) => {
                    buffer.push(r);
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => buffer.count_dropped(n),
                Err(_) => break,
            }
        }
        self.report_drops();
    }

    /// Appends an event for drops not reported yet.
    fn report_drops(&mut self) {
        let dropped = self.stats.buffer.dropped();
        if dropped <= self.reported {
            return;
        }
        let n = dropped - self.reported;
        self.reported = dropped;
        let t = &self.stats.target;
        let mut r = event(
            t,
            "export.dropped",
            Level::Warn,
            format!(
                "{n} records dropped by export to {}: its buffer of {} records was full (the target is down or too slow)",
                t.address(),
                self.stats.buffer.capacity()
            ),
        );
        r.fields.insert("dropped".into(), n.into());
        r.fields.insert("dropped_total".into(), dropped.into());
        self.stream.append(r);
    }
}

struct Shipper {
    sink: Sink,
    stream: LogStream,
    stats: Arc<ExportStats>,
    position: Position,
    opts: ExportOptions,
    /// Consecutive failed attempts.
    failing: u32,
}

impl Shipper {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let buffer = self.stats.buffer.clone();
        // Set once stopping: the time to give up shipping.
        let mut deadline: Option<Instant> = None;
        loop {
            if buffer.is_empty() {
                if deadline.is_some() {
                    break;
                }
                tokio::select! {
                    _ = buffer.pushed() => {}
                    _ = stopped(&mut stop) => deadline = Some(Instant::now() + self.opts.drain),
                }
                continue;
            }
            if deadline.is_none() && buffer.len() < self.opts.batch_records {
                tokio::select! {
                    _ = tokio::time::sleep(self.opts.linger) => {}
                    _ = stopped(&mut stop) => deadline = Some(Instant::now() + self.opts.drain),
                }
            }
            let Some((body, count, last)) = self.take_batch(&buffer) else { continue };
            if !self.ship(body, count, &mut stop, &mut deadline).await {
                // Given up at stop: not shipped, so not past the position;
                // the next start ships these from the segments.
                break;
            }
            self.stats.position.store(last, Ordering::Relaxed);
            self.position.seq = last;
            if self.position.saved.elapsed() >= SAVE_EVERY {
                self.position.save();
            }
        }
        self.position.save();
    }

    /// Encodes up to a batch of records as JSON lines.
    fn take_batch(&self, buffer: &Buffer) -> Option<(Bytes, u64, u64)> {
        let mut body = Vec::with_capacity(64 << 10);
        let mut count = 0u64;
        let mut last = None;
        let mut taken = 0;
        while taken < self.opts.batch_records && body.len() < self.opts.batch_bytes {
            let chunk = buffer.take(TAKE.min(self.opts.batch_records - taken));
            if chunk.is_empty() {
                break;
            }
            taken += chunk.len();
            for r in chunk {
                if serde_json::to_writer(&mut body, &*r).is_ok() {
                    body.push(b'\n');
                    count += 1;
                }
                last = Some(r.seq);
            }
        }
        last.map(|last| (Bytes::from(body), count, last))
    }

    /// Ships one batch until it succeeds (true) or is refused for good
    /// (true: dropped and reported), or until the stop deadline (false).
    async fn ship(
        &mut self,
        body: Bytes,
        count: u64,
        stop: &mut watch::Receiver<bool>,
        deadline: &mut Option<Instant>,
    ) -> bool {
        let target = self.stats.target.clone();
        loop {
            let res = match tokio::time::timeout(self.opts.timeout, self.sink.ship(body.clone())).await {
                Ok(r) => r,
                Err(_) => Err(ShipError::Timeout(self.opts.timeout)),
            };
            let err = match res {
                Ok(()) => {
                    self.stats.exported.fetch_add(count, Ordering::Relaxed);
                    if self.failing > 0 {
                        let msg = format!(
                            "export to {} recovered after {} failed attempts; nothing was lost in the meantime unless an export.dropped event says so",
                            target.address(),
                            self.failing
                        );
                        self.stream.append(event(&target, "export.recovered", Level::Info, msg));
                        self.failing = 0;
                    }
                    return true;
                }
                Err(e) => e,
            };
            if !err.retryable() {
                self.stats.refused.fetch_add(count, Ordering::Relaxed);
                let mut r = event(
                    &target,
                    "export.dropped",
                    Level::Error,
                    format!(
                        "{count} records dropped by export to {}: the target refused them ({err})",
                        target.address()
                    ),
                );
                r.fields.insert("dropped".into(), count.into());
                self.stream.append(r);
                return true;
            }
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            let delay = self.opts.backoff.delay(self.failing);
            if self.failing == 0 {
                let msg = format!(
                    "export to {} failed: {err}; retrying with backoff (up to {:?} apart), keeping up to {} records meanwhile",
                    target.address(),
                    self.opts.backoff.max,
                    self.stats.buffer.capacity()
                );
                self.stream.append(event(&target, "export.failing", Level::Warn, msg));
            }
            tracing::debug!("export to {} failed: {err}", target.address());
            self.failing = self.failing.saturating_add(1);
            match *deadline {
                Some(d) => {
                    // Saturating: a wait too long for the clock is past any deadline.
                    if Instant::now().checked_add(delay).is_none_or(|t| t >= d) {
                        return false;
                    }
                    tokio::time::sleep(delay).await;
                }
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopped(stop) => *deadline = Some(Instant::now() + self.opts.drain),
                    }
                }
            }
        }
    }
}

/// The last shipped seq, saved per target kind in the state directory.
struct Position {
    path: PathBuf,
    target: String,
    seq: u64,
    saved: Instant,
    saved_seq: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct PositionFile {
    target: String,
    seq: u64,
}

impl Position {
    fn new(dir: &Path, target: &Target) -> Position {
        Position {
            path: dir.join(format!("{}.position", target.kind())),
            target: target.address(),
            seq: 0,
            saved: Instant::now(),
            saved_seq: None,
        }
    }

    /// The saved seq, if it was saved for this target.
    fn load(&mut self) -> Option<u64> {
        let raw = std::fs::read(&self.path).ok()?;
        let f: PositionFile = serde_json::from_slice(&raw).ok()?;
        (f.target == self.target).then(|| {
            self.saved_seq = Some(f.seq);
            f.seq
        })
    }

    fn save(&mut self) {
        self.saved = Instant::now();
        if self.saved_seq == Some(self.seq) {
            return;
        }
        let body = PositionFile { target: self.target.clone(), seq: self.seq };
        let tmp = self.path.with_extension("position.tmp");
        let res = serde_json::to_vec(&body)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        match res {
            Ok(()) => self.saved_seq = Some(self.seq),
            Err(e) => tracing::warn!("cannot save the export position in {}: {e}", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests;
