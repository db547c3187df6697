//! The overview's data and its live stream. The data comes from the same
//! controller views as `GET /v1/status` and `GET /v1/top`; rates are the
//! difference of two `top` snapshots, as `wharf top` computes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, Semaphore};
use wharf_api_types::{StatusView, TopView};
use wharf_control::{ControlError, Controller};

/// How often the live stream sends a fresh overview.
pub(crate) const PUSH_EVERY: Duration = Duration::from_secs(2);
/// Overviews a live client may fall behind by before it is closed (its
/// browser reconnects); the sender never waits for a client.
pub(crate) const CLIENT_BUFFER: usize = 4;
/// Live clients at once; one more is answered 503.
pub(crate) const MAX_LIVE_CLIENTS: usize = 64;
/// The shortest span two snapshots are compared over, so rates are not noise.
const MIN_SPAN_MS: u64 = 1000;

/// A service's numbers over the last span; None before there are two snapshots.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rates {
    pub(crate) requests_per_sec: Option<f64>,
    pub(crate) errors_per_sec: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) cpu_percent: f64,
    pub(crate) memory_bytes: u64,
}

/// What the overview page shows.
pub(crate) struct Overview {
    pub(crate) status: StatusView,
    /// By (app, service).
    pub(crate) rates: HashMap<(String, String), Rates>,
}

/// The top snapshots rates are computed from.
#[derive(Default)]
struct Snapshots {
    older: Option<TopView>,
    newer: Option<TopView>,
}

/// The live stream's one producer, started by the first client and ended
/// when the last one leaves, and the cap on clients.
pub(crate) struct Live {
    ctl: Arc<Controller>,
    sender: Mutex<Option<broadcast::Sender<Arc<str>>>>,
    snapshots: Mutex<Snapshots>,
    pub(crate) clients: Arc<Semaphore>,
}

impl Live {
    pub(crate) fn new(ctl: Arc<Controller>) -> Live {
        Live {
            ctl,
            sender: Mutex::new(None),
            snapshots: Mutex::new(Snapshots::default()),
            clients: Arc::new(Semaphore::new(MAX_LIVE_CLIENTS)),
        }
    }

    /// The overview now.
    pub(crate) async fn overview(&self) -> Result<Overview, ControlError> {
        let status = self.ctl.status().await?;
        let top = self.ctl.top().await?;
        let rates = self.rates(top);
        Ok(Overview { status, rates })
    }

    /// Rates of `top` against the newest snapshot at least a second older.
    fn rates(&self, top: TopView) -> HashMap<(String, String), Rates> {
        let mut snaps = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let base = match &snaps.newer {
            Some(n) if top.time_ms.saturating_sub(n.time_ms) >= MIN_SPAN_MS => Some(n),
            _ => snaps.older.as_ref(),
        };
        let rates = compute(base, &top);
        if snaps.newer.as_ref().is_none_or(|n| top.time_ms.saturating_sub(n.time_ms) >= MIN_SPAN_MS) {
            snaps.older = snaps.newer.take();
            snaps.newer = Some(top);
        }
        rates
    }

    /// A receiver of rendered overviews, starting the producer if none runs.
    pub(crate) fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<Arc<str>> {
        let mut slot = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = slot.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(CLIENT_BUFFER);
        *slot = Some(tx.clone());
        let live = self.clone();
        tokio::spawn(async move { live.produce(tx).await });
        rx
    }

    /// Renders one overview per period for every client; ends when none is left.
    async fn produce(self: Arc<Self>, tx: broadcast::Sender<Arc<str>>) {
        let mut tick = tokio::time::interval(PUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            {
                // Under the lock: a client subscribing now either sees this
                // producer or, once it is gone, starts the next one.
                let mut slot = self.sender.lock().unwrap_or_else(|e| e.into_inner());
                if tx.receiver_count() == 0 {
                    *slot = None;
                    return;
                }
            }
            let html: Arc<str> = super::pages::live_fragment(&self.overview().await, now_ms()).into_string().into();
            // Never waits: a client that fell behind loses the oldest overviews.
            let _ = tx.send(html);
        }
    }
}

/// Unix milliseconds now, for "how long ago".
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Per service of `cur`: rates since `base` (when given) and its usage now.
fn compute(base: Option<&TopView>, cur: &TopView) -> HashMap<(String, String), Rates> {
    let secs = base.map(|b| (cur.time_ms.saturating_sub(b.time_ms) as f64 / 1000.0).max(0.001));
    cur.services
        .iter()
        .map(|s| {
            let before = base.and_then(|b| b.services.iter().find(|p| p.app == s.app && p.service == s.service));
            // A counter that went down: the server restarted; count from zero.
            let delta = |now: u64, then: u64| if now >= then { now - then } else { now };
            let (req0, err0) = before.map_or((0, 0), |p| (p.requests, p.errors));
            let buckets: Vec<(f64, u64)> = s
                .latency
                .iter()
                .map(|&(le, n)| {
                    let then = before.and_then(|p| p.latency.iter().find(|b| b.0 == le)).map_or(0, |b| b.1);
                    (le, delta(n, then))
                })
                .collect();
            let rates = Rates {
                requests_per_sec: secs.map(|t| delta(s.requests, req0) as f64 / t),
                errors_per_sec: secs.map(|t| delta(s.errors, err0) as f64 / t),
                p99_ms: secs.and_then(|_| wharf_api_types::quantile(&buckets, 0.99)).map(|q| q * 1000.0),
                cpu_percent: s.cpu_percent,
                memory_bytes: s.memory_bytes,
            };
            ((s.app.clone(), s.service.clone()), rates)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api_types::TopService;

    fn top(time_ms: u64, requests: u64, errors: u64) -> TopView {
        let service = TopService {
            app: "shop".into(),
            service: "api".into(),
            kind: "web".into(),
            replicas: 2,
            tasks: 2,
            ready: 2,
            cpu_percent: 12.5,
            memory_bytes: 1 << 20,
            requests,
            errors,
            latency: vec![(0.01, requests), (f64::MAX, requests)],
        };
        TopView { time_ms, services: vec![service] }
    }

    #[test]
    fn rates_are_the_difference_of_two_snapshots() {
        let first = compute(None, &top(1000, 10, 0));
        assert!(first[&("shop".into(), "api".into())].requests_per_sec.is_none());
        let r = &compute(Some(&top(1000, 10, 0)), &top(3000, 30, 4))[&("shop".into(), "api".into())];
        assert_eq!(r.requests_per_sec, Some(10.0));
        assert_eq!(r.errors_per_sec, Some(2.0));
        assert!(r.p99_ms.unwrap() <= 10.0);
        assert_eq!(r.memory_bytes, 1 << 20);
    }
}
