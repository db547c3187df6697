//! The proxy's access log into the log stream, off the request path: the
//! proxy only queues an entry; a thread of its own formats and appends it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use wharf_logs::{Level, LogStream, Record, Source};
use wharf_proxy::{AccessEntry, AccessLog};

/// Entries queued before new ones are dropped (and counted).
const QUEUE: usize = 65_536;
/// How often the writer looks for new entries when there were none.
const DRAIN_EVERY: Duration = Duration::from_millis(2);

pub struct AccessSink {
    tx: SyncSender<AccessEntry>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog for AccessSink {
    fn log(&self, entry: AccessEntry) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the writer thread; lines that had to be dropped are reported as
/// an explicit "N access log lines dropped" event, never silently.
pub fn access_sink(logs: LogStream) -> Arc<AccessSink> {
    let (tx, rx) = mpsc::sync_channel::<AccessEntry>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let spawned = std::thread::Builder::new().name("wharf-access-log".into()).spawn(move || {
        let mut last_report = std::time::Instant::now();
        loop {
            // Drain what is queued, then nap: the proxy's try_send then never
            // has to wake a sleeping thread (a futex call per request).
            let mut took = 0;
            loop {
                match rx.try_recv() {
                    Ok(e) => {
                        logs.append(record(e));
                        took += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = std::time::Instant::now();
                let n = counter.swap(0, Ordering::Relaxed);
                if n > 0 {
                    let msg = format!("{n} access log lines dropped: the log stream fell behind");
                    let mut r = Record::event("access.dropped", Level::Warn, msg);
                    r.fields.insert("dropped".into(), n.into());
                    logs.append(r);
                }
            }
            if took == 0 {
                std::thread::sleep(DRAIN_EVERY);
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the access log thread: {e}");
    }
    Arc::new(AccessSink { tx, dropped })
}

fn record(e: AccessEntry) -> Record {
    let ms = e.duration.as_secs_f64() * 1000.0;
    let mut r =
        Record::new(Source::Access, format!("{} {}{} {} {}B {ms:.1}ms", e.method, e.host, e.path, e.status, e.bytes));
    r.time = e.time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    r.level = Some(if e.status >= 500 { Level::Error } else { Level::Info });
    if let Some((app, service)) = e.pool.as_deref().and_then(|p| p.split_once('/')) {
        r.app = Some(app.to_string());
        r.service = Some(service.to_string());
    }
    r.task = e.task.map(|t| t.to_string());
    // Method, host and path are in the message; the fields carry what is
    // filtered and aggregated on.
    let f = &mut r.fields;
    f.insert("status".into(), e.status.into());
    f.insert("bytes".into(), e.bytes.into());
    f.insert("duration_ms".into(), ((ms * 1000.0).round() / 1000.0).into());
    f.insert("request_id".into(), e.request_id.into());
    f.insert("client".into(), e.client.to_string().into());
    if e.internal {
        f.insert("internal".into(), true.into());
    }
    r
}
