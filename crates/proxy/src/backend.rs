//! Backends (one per task) outlive routing snapshots: their counters of
//! in-flight requests and open upgrades are what draining waits on, and what
//! least-outstanding balancing compares.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use crate::body::ReqBody;

/// Idle upstream connections kept per backend and worker thread.
const MAX_IDLE: usize = 256;
/// Idle pools per backend: one per proxy worker thread (modulo), so a
/// worker reuses connections whose tasks run on its own runtime.
const SLOTS: usize = 16;
/// Passive ejection: first and longest exclusion after connection failures.
const EJECT_BASE: Duration = Duration::from_millis(250);
const EJECT_MAX: Duration = Duration::from_secs(30);

pub struct Backend {
    pub addr: SocketAddr,
    pub task: Arc<str>,
    /// Requests being forwarded plus open upgraded connections.
    in_flight: AtomicU64,
    upgraded: AtomicU64,
    /// Consecutive connect/reset failures; drives ejection backoff.
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the backend is skipped.
    ejected_until: AtomicU64,
    epoch: Instant,
    idle: [Mutex<Vec<SendRequest<ReqBody>>>; SLOTS],
    outcomes: Outcomes,
}

/// Upper bounds (ms) of the latency buckets kept per backend; the last
/// bucket takes everything slower.
pub const LATENCY_BOUNDS_MS: [u64; 16] = [1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000, 10000, 30000];

/// Answers a backend gave: how many, how many 5xx, and how fast. Kept so a
/// deploy can judge a new revision by what its clients actually saw.
#[derive(Default)]
struct Outcomes {
    total: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
}

/// A copy of a backend's answer counters; subtract two to get a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub total: u64,
    /// Answers with a 5xx status, the proxy's own 502/504 included.
    pub errors: u64,
    pub buckets: [u64; LATENCY_BOUNDS_MS.len() + 1],
}

impl OutcomeCounts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &OutcomeCounts) -> OutcomeCounts {
        let mut out = OutcomeCounts {
            total: self.total.saturating_sub(earlier.total),
            errors: self.errors.saturating_sub(earlier.errors),
            ..Default::default()
        };
        for (i, b) in out.buckets.iter_mut().enumerate() {
            *b = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        out
    }

    pub fn add(&mut self, other: &OutcomeCounts) {
        self.total += other.total;
        self.errors += other.errors;
        for (i, b) in self.buckets.iter_mut().enumerate() {
            *b += other.buckets[i];
        }
    }

    /// The upper bound of the bucket holding the 99th percentile; None
    /// without answers, `Duration::MAX` when it is in the open last bucket.
    pub fn p99(&self) -> Option<Duration> {
        let timed: u64 = self.buckets.iter().sum();
        if timed == 0 {
            return None;
        }
        let rank = timed - timed / 100;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return Some(LATENCY_BOUNDS_MS.get(i).map_or(Duration::MAX, |ms| Duration::from_millis(*ms)));
            }
        }
        Some(Duration::MAX)
    }
}

/// This thread's idle-pool slot.
fn slot() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = Cell::new(NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS);
    }
    SLOT.with(|s| s.get())
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("addr", &self.addr).field("task", &self.task).finish()
    }
}

impl Backend {
    pub fn new(task: impl Into<Arc<str>>, addr: SocketAddr) -> Backend {
        Backend {
            addr,
            task: task.into(),
            in_flight: AtomicU64::new(0),
            upgraded: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            epoch: Instant::now(),
            idle: std::array::from_fn(|_| Mutex::new(Vec::new())),
            outcomes: Outcomes::default(),
        }
    }

    /// Counts one answer given on behalf of this backend.
    pub(crate) fn answered(&self, status: u16, took: Option<Duration>) {
        let o = &self.outcomes;
        o.total.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            o.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(took) = took {
            let ms = took.as_millis() as u64;
            let i = LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len());
            o.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn outcomes(&self) -> OutcomeCounts {
        let o = &self.outcomes;
        OutcomeCounts {
            total: o.total.load(Ordering::Relaxed),
            errors: o.errors.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| o.buckets[i].load(Ordering::Relaxed)),
        }
    }

    /// Requests and upgraded connections currently using this backend.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Open upgraded (WebSocket) connections.
    pub fn upgraded(&self) -> u64 {
        self.upgraded.load(Ordering::Relaxed)
    }

    /// Whether passive ejection currently keeps new requests away.
    pub fn ejected(&self) -> bool {
        (self.epoch.elapsed().as_millis() as u64) < self.ejected_until.load(Ordering::Relaxed)
    }

    pub(crate) fn load(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { backend: self.clone(), upgraded: false }
    }

    /// A connect error or reset: keep new requests away for a while, longer
    /// each time it happens in a row.
    pub(crate) fn failed(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let wait = (EJECT_BASE * 2u32.saturating_pow(n)).min(EJECT_MAX);
        let until = (self.epoch.elapsed() + wait).as_millis() as u64;
        self.ejected_until.store(until, Ordering::Relaxed);
    }

    /// The task failed its health checks: kept away from new requests at
    /// once, until [`Backend::revive`], without waiting for the next routing
    /// snapshot (which leaves it out too).
    pub fn eject_until_revived(&self) {
        self.ejected_until.store(u64::MAX, Ordering::Relaxed);
    }

    /// The task passed its health checks again: no longer ejected.
    pub fn revive(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejected_until.store(0, Ordering::Relaxed);
    }

    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// A pooled connection that is still open and ready, if any.
    pub(crate) fn take_idle(&self) -> Option<SendRequest<ReqBody>> {
        let mut idle = self.idle[slot()].lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    pub(crate) fn put_idle(&self, conn: SendRequest<ReqBody>) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle[slot()].lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Drops pooled connections, e.g. once the task is gone.
    pub fn close_idle(&self) {
        for pool in &self.idle {
            pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

/// Counts a request (or an upgraded connection) against its backend for as
/// long as it lives.
pub(crate) struct InFlight {
    backend: Arc<Backend>,
    upgraded: bool,
}

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    pub fn mark_upgraded(&mut self) {
        if !self.upgraded {
            self.upgraded = true;
            self.backend.upgraded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.upgraded {
            self.backend.upgraded.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Small, fast, good-enough randomness for balancing and request ids.
pub(crate) fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            // Time plus a per-thread stack address: distinct seeds per thread.
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            let marker = 0u8;
            (nanos ^ (&marker as *const u8 as u64).rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_windows_and_p99() {
        let b = Backend::new("t", "127.0.0.1:1".parse().unwrap());
        for _ in 0..98 {
            b.answered(200, Some(Duration::from_millis(3)));
        }
        let before = b.outcomes();
        assert_eq!(before.p99(), Some(Duration::from_millis(5)));
        b.answered(503, Some(Duration::from_millis(400)));
        b.answered(502, None);
        let window = b.outcomes().since(&before);
        assert_eq!((window.total, window.errors), (2, 2));
        assert_eq!(window.p99(), Some(Duration::from_millis(500)));
        let mut all = before;
        all.add(&window);
        assert_eq!(all, b.outcomes());
        b.answered(200, Some(Duration::from_secs(60)));
        assert_eq!(b.outcomes().since(&before).p99(), Some(Duration::MAX));
    }
}
