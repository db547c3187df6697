//! The proxy's access log into the log stream, off the request path.
//!
//! A proxy thread copies each entry into a shard's batch: fixed-size
//! entries plus one text buffer, both reused, behind a lock nobody else
//! holds except for the swap below. So a request allocates nothing for the
//! log, hands no memory of its own to another thread to free (a lock inside
//! malloc), and while requests keep coming wakes no sleeping thread. A
//! thread of its own swaps every shard's batch out every few milliseconds,
//! turns the entries into records and appends them to the stream in one go.
//! When a round finds every shard empty it parks until the next entry (one
//! atomic load per request tells the proxy whether to wake it), so an idle
//! server pays nothing for its access log.

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use wharf_logs::{Level, LogStream, Record, Source};
use wharf_proxy::{AccessEntry, AccessLog};

/// Entries one shard holds before new ones are dropped (and counted).
const QUEUE: usize = 65_536;
/// The same for their text (long paths), so a stalled writer costs bounded memory.
const QUEUE_TEXT: usize = 32 << 20;
/// How often the writer takes the batches.
const DRAIN_EVERY: Duration = Duration::from_millis(2);
/// Proxy threads map onto shards round robin; with no more threads than
/// shards, each has its own.
const SHARDS: usize = 8;

/// One request, its text in the batch's buffer.
struct Packed {
    time_ns: u64,
    duration: Duration,
    bytes: u64,
    status: u16,
    client: IpAddr,
    internal: bool,
    has_pool: bool,
    has_task: bool,
    /// Where its text starts in the buffer, and the lengths of method,
    /// host, path, request id, pool and task, in that order.
    start: usize,
    lens: [u32; 6],
}

#[derive(Default)]
struct Batch {
    entries: Vec<Packed>,
    text: Vec<u8>,
}

impl Batch {
    fn push(&mut self, e: &AccessEntry<'_>) {
        let start = self.text.len();
        let fields = [e.method, e.host, e.path, e.request_id, e.pool.map_or("", |p| &**p), e.task.map_or("", |t| &**t)];
        let mut lens = [0u32; 6];
        for (len, f) in lens.iter_mut().zip(fields) {
            // A path longer than 4 GiB can't reach here (header limits).
            *len = f.len() as u32;
            self.text.extend_from_slice(f.as_bytes());
        }
        self.entries.push(Packed {
            time_ns: e.time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
            duration: e.duration,
            bytes: e.bytes,
            status: e.status,
            client: e.client,
            internal: e.internal,
            has_pool: e.pool.is_some(),
            has_task: e.task.is_some(),
            start,
            lens,
        });
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.text.clear();
    }
}

struct Shared {
    shards: [Mutex<Batch>; SHARDS],
    dropped: AtomicU64,
    closed: AtomicBool,
    /// The writer found nothing to write and parks (or is about to) until
    /// an entry comes in; whoever clears it wakes the writer.
    parked: AtomicBool,
}

impl Shared {
    fn all_empty(&self) -> bool {
        self.shards.iter().all(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.is_empty())
    }
}

pub struct AccessSink {
    shared: Arc<Shared>,
    /// The writer thread, to wake it from its park.
    writer: Option<std::thread::Thread>,
}

impl AccessSink {
    fn wake_writer(&self) {
        if self.shared.parked.swap(false, Ordering::SeqCst) {
            if let Some(w) = &self.writer {
                w.unpark();
            }
        }
    }
}

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn my_shard() -> usize {
    SHARD.with(|s| match s.get() {
        Some(i) => i,
        None => {
            let i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(Some(i));
            i
        }
    })
}

impl AccessLog for AccessSink {
    fn log(&self, entry: &AccessEntry<'_>) {
        let mut batch = self.shared.shards[my_shard()].lock().unwrap_or_else(|p| p.into_inner());
        if batch.entries.len() >= QUEUE || batch.text.len() >= QUEUE_TEXT {
            drop(batch);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        batch.push(entry);
        drop(batch);
        // The one check per request while the writer is awake; its store
        // happens before its last look at the shards, so an entry pushed
        // after that look sees it set.
        if self.shared.parked.load(Ordering::SeqCst) {
            self.wake_writer();
        }
    }
}

impl Drop for AccessSink {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(w) = &self.writer {
            w.unpark();
        }
    }
}

/// Starts the writer thread; lines that had to be dropped are reported as
/// an explicit "N access log lines dropped" event, never silently.
pub fn access_sink(logs: LogStream) -> Arc<AccessSink> {
    let shared = Arc::new(Shared {
        shards: std::array::from_fn(|_| Mutex::new(Batch::default())),
        dropped: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        parked: AtomicBool::new(false),
    });
    let writer = shared.clone();
    let spawned = std::thread::Builder::new().name("wharf-access-log".into()).spawn(move || {
        let mut spare = Batch::default();
        // Built outside the stream's lock, then appended in one go.
        let mut records = Vec::new();
        let mut last_report = std::time::Instant::now();
        loop {
            // Read before the drain, so entries logged before the sink was
            // dropped are all written.
            let closing = writer.closed.load(Ordering::SeqCst);
            let mut wrote = false;
            for shard in &writer.shards {
                std::mem::swap(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()), &mut spare);
                if !spare.entries.is_empty() {
                    wrote = true;
                    records.extend(spare.entries.iter().map(|e| record(e, &spare.text)));
                    logs.append_all(records.drain(..));
                }
                spare.clear();
            }
            // Also before parking: a count is never left waiting for traffic.
            if last_report.elapsed() >= Duration::from_secs(1) || closing || !wrote {
                last_report = std::time::Instant::now();
                let n = writer.dropped.swap(0, Ordering::Relaxed);
                if n > 0 {
                    let msg = format!("{n} access log lines dropped: the log stream fell behind");
                    let mut r = Record::event("access.dropped", Level::Warn, msg);
                    r.fields.insert("dropped".into(), n.into());
                    logs.append(r);
                }
            }
            if closing {
                return;
            }
            if wrote {
                std::thread::sleep(DRAIN_EVERY);
                continue;
            }
            // Nothing came in since the last round: park until an entry
            // does. Announced first, then the shards looked at once more,
            // so an entry pushed in between is either seen here or finds
            // the flag set and wakes the thread (an unpark before the park
            // makes the park return at once).
            writer.parked.store(true, Ordering::SeqCst);
            if writer.all_empty() && !writer.closed.load(Ordering::SeqCst) {
                std::thread::park();
            }
            writer.parked.store(false, Ordering::SeqCst);
        }
    });
    let writer = match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(e) => {
            tracing::error!("cannot start the access log thread: {e}");
            None
        }
    };
    Arc::new(AccessSink { shared, writer })
}

fn record(e: &Packed, text: &[u8]) -> Record {
    let mut parts = [""; 6];
    let mut at = e.start;
    for (part, len) in parts.iter_mut().zip(e.lens) {
        let end = at + len as usize;
        // Copied from &str fields whole, so every part is valid UTF-8.
        *part = std::str::from_utf8(&text[at..end]).unwrap_or("");
        at = end;
    }
    let [method, host, path, request_id, pool, task] = parts;
    // Tenths of a millisecond, rounded, with integer formatting (float
    // formatting costs more than the rest of the line).
    let tenths = (e.duration.as_micros() + 50) / 100;
    let mut message = String::with_capacity(method.len() + host.len() + path.len() + 40);
    let _ = write!(message, "{method} {host}{path} {} {}B {}.{}ms", e.status, e.bytes, tenths / 10, tenths % 10);
    let mut client = String::with_capacity(39);
    let _ = write!(client, "{}", e.client);
    let mut r = Record {
        time: e.time_ns,
        level: Some(if e.status >= 500 { Level::Error } else { Level::Info }),
        ..Record::new(Source::Access, message)
    };
    if let Some((app, service)) = pool.split_once('/').filter(|_| e.has_pool) {
        r.app = Some(app.to_string());
        r.service = Some(service.to_string());
    }
    r.task = e.has_task.then(|| task.to_string());
    // Method, host and path are in the message; the fields carry what is
    // filtered and aggregated on.
    let f = &mut r.fields;
    f.insert("status".into(), e.status.into());
    f.insert("bytes".into(), e.bytes.into());
    f.insert("duration_ms".into(), (e.duration.as_micros() as f64 / 1000.0).into());
    f.insert("request_id".into(), request_id.into());
    f.insert("client".into(), client.into());
    if e.internal {
        f.insert("internal".into(), true.into());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn packed_entries_come_back_as_the_records_they_were() {
        let pool: Arc<str> = "shop/web".into();
        let task: Arc<str> = "web-1-abc".into();
        let mut batch = Batch::default();
        let first = AccessEntry {
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            client: "10.0.0.7".parse().unwrap(),
            method: "GET",
            host: "shop.example.com",
            path: "/cart/é",
            status: 200,
            bytes: 512,
            duration: Duration::from_micros(1500),
            pool: Some(&pool),
            task: Some(&task),
            request_id: "abc123",
            internal: false,
        };
        let second = AccessEntry {
            time: SystemTime::now(),
            method: "POST",
            host: "",
            path: "/nope",
            status: 404,
            pool: None,
            task: None,
            internal: true,
            ..first
        };
        batch.push(&first);
        batch.push(&second);
        let a = record(&batch.entries[0], &batch.text);
        assert_eq!(a.message, "GET shop.example.com/cart/é 200 512B 1.5ms");
        assert_eq!(a.time, 1_700_000_000 * 1_000_000_000);
        assert_eq!(
            (a.app.as_deref(), a.service.as_deref(), a.task.as_deref()),
            (Some("shop"), Some("web"), Some("web-1-abc"))
        );
        assert_eq!(a.fields["status"], 200);
        assert_eq!(a.fields["request_id"], "abc123");
        assert_eq!(a.fields["client"], "10.0.0.7");
        assert_eq!(a.level, Some(Level::Info));
        assert!(!a.fields.contains_key("internal"));
        let b = record(&batch.entries[1], &batch.text);
        assert_eq!(b.message, "POST /nope 404 512B 1.5ms");
        assert_eq!((b.app, b.service, b.task), (None, None, None));
        assert_eq!(b.fields["internal"], true);
        batch.clear();
        assert!(batch.entries.is_empty() && batch.text.is_empty());
    }

    /// A `GET /` on shop.local answered 200, with its request id.
    fn get_root<'a>(id: &'a str, pool: Option<&'a Arc<str>>) -> AccessEntry<'a> {
        AccessEntry {
            time: SystemTime::now(),
            client: "127.0.0.1".parse().unwrap(),
            method: "GET",
            host: "shop.local",
            path: "/",
            status: 200,
            bytes: 3,
            duration: Duration::from_micros(80),
            pool,
            task: None,
            request_id: id,
            internal: false,
        }
    }

    #[test]
    fn an_idle_writer_parks_and_the_next_entry_wakes_it() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStream::open(dir.path(), wharf_logs::StreamOptions::default()).unwrap();
        let sink = access_sink(logs.clone());
        let filter = wharf_logs::Filter { sources: vec![Source::Access], ..Default::default() };
        let wait_for = |what: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !what() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            what()
        };
        for round in 0..3 {
            assert!(
                wait_for(&|| sink.shared.parked.load(Ordering::SeqCst)),
                "round {round}: the writer parks when idle"
            );
            let id = format!("r{round}");
            sink.log(&get_root(&id, None));
            assert!(
                wait_for(&|| logs.query(&filter, 10).iter().any(|r| r.fields["request_id"] == id.as_str())),
                "round {round}: the entry that came while it was parked is written"
            );
        }
    }

    #[test]
    fn every_entry_from_every_thread_reaches_the_stream_once_even_when_the_sink_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStream::open(dir.path(), wharf_logs::StreamOptions::default()).unwrap();
        let sink = access_sink(logs.clone());
        let pool: Arc<str> = "shop/web".into();
        std::thread::scope(|scope| {
            for t in 0..3 {
                let (sink, pool) = (&sink, &pool);
                scope.spawn(move || {
                    for i in 0..1000 {
                        let id = format!("t{t}-{i}");
                        sink.log(&get_root(&id, Some(pool)));
                    }
                });
            }
        });
        // The last batch is written after the sink is gone, not lost with it.
        drop(sink);
        let filter = wharf_logs::Filter { sources: vec![Source::Access], ..Default::default() };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut got = logs.query(&filter, 10_000);
        while got.len() < 3000 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            got = logs.query(&filter, 10_000);
        }
        let mut ids: Vec<String> = got.iter().map(|r| r.fields["request_id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!((got.len(), ids.len()), (3000, 3000), "each entry exactly once");
        assert!(got.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }
}
