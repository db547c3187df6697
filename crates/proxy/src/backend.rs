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
