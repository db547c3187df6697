use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::record::{Record, Source};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot open log stream in {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Records kept in memory for queries and follow.
    pub window: usize,
    /// `stream.jsonl` rotates to `stream.1.jsonl` past this size.
    pub max_file_bytes: u64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { window: 100_000, max_file_bytes: 64 << 20 }
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
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
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

enum Msg {
    Record(Arc<Record>),
    Flush(mpsc::Sender<()>),
}

struct State {
    next_seq: u64,
    window: VecDeque<Arc<Record>>,
}

/// Cheap to clone; all clones append to the same stream.
#[derive(Clone)]
pub struct LogStream {
    state: Arc<Mutex<State>>,
    window: usize,
    live: broadcast::Sender<Arc<Record>>,
    writer: mpsc::Sender<Msg>,
}

const FILE: &str = "stream.jsonl";
const ROTATED: &str = "stream.1.jsonl";
/// How much of the file's tail is read back on start.
const RELOAD_BYTES: u64 = 16 << 20;

impl LogStream {
    pub fn open(dir: &Path, opts: StreamOptions) -> Result<LogStream, StreamError> {
        let open_err = |source| StreamError::Open { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let path = dir.join(FILE);
        let window = reload(&path, opts.window);
        let next_seq = window.back().map(|r| r.seq + 1).unwrap_or(1);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(open_err)?;
        let (tx, rx) = mpsc::channel();
        let max = opts.max_file_bytes;
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("wharf-logs".into())
            .spawn(move || write_loop(dir, file, max, rx))
            .map_err(open_err)?;
        let (live, _) = broadcast::channel(16_384);
        Ok(LogStream { state: Arc::new(Mutex::new(State { next_seq, window })), window: opts.window, live, writer: tx })
    }

    /// Adds a record and returns its sequence number. Never blocks on disk.
    pub fn append(&self, mut record: Record) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        record.seq = st.next_seq;
        st.next_seq += 1;
        let record = Arc::new(record);
        if st.window.len() == self.window {
            st.window.pop_front();
        }
        st.window.push_back(record.clone());
        // Sent under the lock so followers see records in sequence order.
        let _ = self.live.send(record.clone());
        let _ = self.writer.send(Msg::Record(record));
        st.next_seq - 1
    }

    /// The newest `limit` records matching `filter`, oldest first.
    pub fn query(&self, filter: &Filter, limit: usize) -> Vec<Arc<Record>> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = st.window.iter().rev().filter(|r| filter.matches(r)).take(limit).cloned().collect();
        out.reverse();
        out
    }

    /// The newest `backlog` matching records plus a receiver for everything
    /// appended after them, taken atomically: no gap, no duplicate.
    pub fn follow(&self, filter: &Filter, backlog: usize) -> (Vec<Arc<Record>>, broadcast::Receiver<Arc<Record>>) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.live.subscribe();
        let mut out: Vec<_> = st.window.iter().rev().filter(|r| filter.matches(r)).take(backlog).cloned().collect();
        out.reverse();
        (out, rx)
    }

    /// Waits until everything appended so far is written to the file.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.writer.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// Reads back the newest records from the file's tail. A torn last line
/// (crash mid-write) fails to parse and is skipped.
fn reload(path: &Path, keep: usize) -> VecDeque<Arc<Record>> {
    let mut window = VecDeque::new();
    let Ok(mut file) = File::open(path) else { return window };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(RELOAD_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return window;
    }
    let mut lines = BufReader::new(file).split(b'\n');
    if start > 0 {
        lines.next(); // most likely a partial line
    }
    for line in lines.map_while(Result::ok) {
        if let Ok(r) = serde_json::from_slice::<Record>(&line) {
            if window.len() == keep {
                window.pop_front();
            }
            window.push_back(Arc::new(r));
        }
    }
    window
}

fn write_loop(dir: PathBuf, file: File, max: u64, rx: mpsc::Receiver<Msg>) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = BufWriter::with_capacity(256 << 10, file);
    let mut line = Vec::with_capacity(512);
    while let Ok(first) = rx.recv() {
        let mut waiters = Vec::new();
        // Write everything already queued, then flush once.
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                Msg::Flush(done) => waiters.push(done),
                Msg::Record(r) => {
                    line.clear();
                    if serde_json::to_writer(&mut line, &*r).is_err() {
                        continue;
                    }
                    line.push(b'\n');
                    if let Err(e) = out.write_all(&line) {
                        tracing::error!("log stream write failed: {e}");
                    }
                    size += line.len() as u64;
                }
            }
        }
        if let Err(e) = out.flush() {
            tracing::error!("log stream flush failed: {e}");
        }
        if size > max {
            match rotate(&dir) {
                Ok(f) => {
                    out = BufWriter::with_capacity(256 << 10, f);
                    size = 0;
                }
                Err(e) => tracing::error!("log stream rotation failed: {e}"),
            }
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
    let _ = out.flush();
}

fn rotate(dir: &Path) -> std::io::Result<File> {
    std::fs::rename(dir.join(FILE), dir.join(ROTATED))?;
    OpenOptions::new().create(true).append(true).open(dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(service: &str, msg: &str) -> Record {
        let mut r = Record::new(Source::Stdout, msg);
        r.service = Some(service.into());
        r
    }

    #[test]
    fn query_filters_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
        for i in 0..10 {
            s.append(rec(if i % 2 == 0 { "api" } else { "app" }, &format!("m{i}")));
        }
        let f = Filter { service: Some("api".into()), ..Default::default() };
        let got: Vec<_> = s.query(&f, 2).iter().map(|r| r.message.clone()).collect();
        assert_eq!(got, ["m6", "m8"]);
    }

    #[test]
    fn window_is_bounded_and_reloaded_after_restart_with_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StreamOptions { window: 5, ..Default::default() };
        {
            let s = LogStream::open(dir.path(), opts.clone()).unwrap();
            for i in 0..8 {
                s.append(rec("api", &format!("m{i}")));
            }
            assert_eq!(s.query(&Filter::default(), 100).len(), 5);
            s.flush();
        }
        // A crash mid-write leaves half a line behind.
        let mut f = OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap();
        f.write_all(b"{\"seq\":9,\"ti").unwrap();
        let s = LogStream::open(dir.path(), opts).unwrap();
        let got: Vec<_> = s.query(&Filter::default(), 100).iter().map(|r| r.seq).collect();
        assert_eq!(got, [4, 5, 6, 7, 8]);
        assert_eq!(s.append(rec("api", "next")), 9, "numbering continues");
    }

    #[tokio::test]
    async fn follow_has_no_gap_or_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
        s.append(rec("api", "before"));
        let (backlog, mut rx) = s.follow(&Filter::default(), 10);
        s.append(rec("api", "after"));
        assert_eq!(backlog.len(), 1);
        assert_eq!(rx.recv().await.unwrap().message, "after");
    }

    #[test]
    fn rotates_past_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStream::open(dir.path(), StreamOptions { window: 10, max_file_bytes: 1000 }).unwrap();
        for i in 0..100 {
            s.append(rec("api", &format!("message number {i}")));
            s.flush();
        }
        assert!(dir.path().join(ROTATED).exists());
        assert!(std::fs::metadata(dir.path().join(FILE)).unwrap().len() < 1200);
    }
}
