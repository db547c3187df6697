//! A [`Store`] wrapper that times every operation and reports how it went
//! to the server's [`StoreHealth`], so `/metrics` has the store's latency
//! and a failing store shows in `wharf status` and events.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use wharf_control::{StoreHealth, StoreOp};
use wharf_store::{Op, Store, StoreError};

/// Times each `get`, `list` and `apply` of the store it wraps.
pub struct TimedStore {
    inner: Arc<dyn Store>,
    health: Arc<StoreHealth>,
}

impl TimedStore {
    /// Wraps `inner`, reporting into `health` (the server metrics' own).
    pub fn new(inner: Arc<dyn Store>, health: Arc<StoreHealth>) -> TimedStore {
        TimedStore { inner, health }
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let start = Instant::now();
        let r = self.inner.get(key).await;
        self.health.observe(StoreOp::Get, start.elapsed(), &r);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = Instant::now();
        let r = self.inner.list(prefix).await;
        self.health.observe(StoreOp::List, start.elapsed(), &r);
        r
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let start = Instant::now();
        let r = self.inner.apply(ops).await;
        self.health.observe(StoreOp::Apply, start.elapsed(), &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose writes fail until told otherwise, as on a full disk.
    struct FullDisk {
        inner: wharf_store::MemStore,
        full: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Store for FullDisk {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
            if self.full.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StoreError::DiskFull("no space left on device".into()));
            }
            self.inner.apply(ops).await
        }
    }

    #[tokio::test]
    async fn each_operation_reaches_the_store_health_and_a_good_write_ends_an_outage() {
        let inner = Arc::new(FullDisk { inner: Default::default(), full: true.into() });
        let health = Arc::new(StoreHealth::default());
        let s = TimedStore::new(inner.clone(), health.clone());
        let put = || vec![Op::Put { key: "a".into(), value: b"1".to_vec() }];
        assert!(s.apply(put()).await.is_err());
        assert!(s.get("a").await.unwrap().is_none());
        let failing = health.snapshot();
        assert!(failing.failing_since.is_some());
        assert_eq!(failing.failures, 1);
        assert!(failing.last_error.unwrap_or_default().contains("no space"));
        inner.full.store(false, std::sync::atomic::Ordering::Relaxed);
        s.apply(put()).await.unwrap();
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(b"1".as_slice()));
        let after = health.snapshot();
        assert!(after.failing_since.is_none());
        assert_eq!(after.failures_total, 1);
    }
}
