//! A [`Store`] wrapper that times every operation, for the store latency
//! histogram in `/metrics`.

use std::sync::Arc;
use std::time::Instant;

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

/// Times each `get`, `list` and `apply` of the store it wraps.
pub struct TimedStore {
    inner: Arc<dyn Store>,
    latency: OpHistograms,
}

impl TimedStore {
    /// Wraps `inner`, observing into the histograms of `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: &crate::ServerMetrics) -> TimedStore {
        TimedStore { inner, latency: metrics.store_latency.clone() }
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
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = Instant::now();
        let r = self.inner.list(prefix).await;
        self.observe("list", start);
        r
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let start = Instant::now();
        let r = self.inner.apply(ops).await;
        self.observe("apply", start);
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
