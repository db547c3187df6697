//! A [`Store`] wrapper that times every operation, for the store latency
//! histogram in `/metrics`, and keeps the store's health: a store whose
//! writes fail (a full disk) must show in `wharf status`, events and
//! metrics, not only in the answer of the call that hit it.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use wharf_store::{Op, Store, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabels {
    pub op: &'static str,
}

pub(crate) type OpHistograms = Family<OpLabels, Histogram, fn() -> Histogram>;

pub(crate) fn op_histograms() -> OpHistograms {
    // 50 µs .. ~1.6 s
    Family::new_with_constructor(|| {
        Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 16))
    })
}

/// Whether the store's operations are failing, and since when.
#[derive(Debug, Default)]
pub struct StoreHealth {
    state: Mutex<StoreHealthState>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct StoreHealthState {
    /// Set at the first failure of an outage, cleared by a good write.
    pub failing_since: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Failed operations in the current outage.
    pub failures: u64,
    /// Failed operations since the server started.
    pub failures_total: u64,
}

impl StoreHealth {
    pub(crate) fn snapshot(&self) -> StoreHealthState {
        self.state.lock().unwrap().clone()
    }

    fn observe<T>(&self, write: bool, r: &Result<T, StoreError>) {
        match r {
            // A conflict or a bad record is an answer, not a sick store.
            Err(StoreError::Conflict { .. } | StoreError::Corrupt { .. }) => {}
            Err(e) => {
                let mut s = self.state.lock().unwrap();
                s.failing_since.get_or_insert_with(SystemTime::now);
                s.last_error = Some(e.to_string().lines().next().unwrap_or_default().to_string());
                s.failures = s.failures.saturating_add(1);
                s.failures_total = s.failures_total.saturating_add(1);
            }
            // Reads can work while writes fail: only a write ends an outage.
            Ok(_) if write => {
                let mut s = self.state.lock().unwrap();
                if s.failing_since.is_some() {
                    s.failing_since = None;
                    s.failures = 0;
                }
            }
            Ok(_) => {}
        }
    }
}

/// Times each `get`, `list` and `apply` of the store it wraps, and records
/// failures in the server's [`StoreHealth`].
pub struct TimedStore {
    inner: Arc<dyn Store>,
    latency: OpHistograms,
    health: Arc<StoreHealth>,
}

impl TimedStore {
    /// Wraps `inner`, observing into the histograms of `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: &crate::ServerMetrics) -> TimedStore {
        TimedStore { inner, latency: metrics.store_latency.clone(), health: metrics.store_health.clone() }
    }

    fn observe(&self, op: &'static str, start: Instant) {
        self.latency.get_or_create(&OpLabels { op }).observe(start.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let start = Instant::now();
        let r = self.inner.get(key).await;
        self.observe("get", start);
        self.health.observe(false, &r);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = Instant::now();
        let r = self.inner.list(prefix).await;
        self.observe("list", start);
        self.health.observe(false, &r);
        r
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let start = Instant::now();
        let r = self.inner.apply(ops).await;
        self.observe("apply", start);
        self.health.observe(true, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_operation_is_timed() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(wharf_store::RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let metrics = crate::ServerMetrics::default();
        let s = TimedStore::new(inner, &metrics);
        s.apply(vec![Op::Put { key: "a".into(), value: b"1".to_vec() }]).await.unwrap();
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(b"1".as_slice()));
        s.list("").await.unwrap();
        s.get("b").await.unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("store", "", metrics.store_latency.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for want in [r#"store_count{op="get"} 2"#, r#"store_count{op="list"} 1"#, r#"store_count{op="apply"} 1"#] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
