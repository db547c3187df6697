//! The store as the server's metrics and health see it: how long each
//! operation takes, for the store latency histogram in `/metrics`, and
//! whether writes fail. A store whose writes fail (a full disk) must show in
//! `wharf status`, events and metrics, not only in the answer of the call
//! that hit it. The wrapper that times a store lives with the server's
//! assembly and reports here.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use wharf_store::StoreError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabels {
    pub op: &'static str,
}

pub(crate) type OpHistograms = Family<OpLabels, Histogram, fn() -> Histogram>;

fn op_histograms() -> OpHistograms {
    // 50 µs .. ~1.6 s
    Family::new_with_constructor(|| {
        Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 16))
    })
}

/// A store operation, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Get,
    List,
    Apply,
}

impl StoreOp {
    fn label(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::List => "list",
            StoreOp::Apply => "apply",
        }
    }
}

/// How long store operations take, whether they are failing, and since when.
pub struct StoreHealth {
    pub(crate) latency: OpHistograms,
    state: Mutex<StoreHealthState>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth { latency: op_histograms(), state: Mutex::default() }
    }
}

impl std::fmt::Debug for StoreHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHealth").field("state", &self.snapshot()).finish_non_exhaustive()
    }
}

/// The store's health at one moment.
#[derive(Debug, Default, Clone)]
pub struct StoreHealthState {
    /// Set at the first failure of an outage, cleared by a good write.
    pub failing_since: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Failed operations in the current outage.
    pub failures: u64,
    /// Failed operations since the server started.
    pub failures_total: u64,
}

impl StoreHealth {
    pub fn snapshot(&self) -> StoreHealthState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notes one operation: how long it took and how it ended. The outage's
    /// start is stamped with wall time: it is shown ("failing for 3m"), and
    /// the store wrapper that calls this has no controller clock.
    #[allow(clippy::disallowed_methods)]
    pub fn observe<T>(&self, op: StoreOp, took: Duration, r: &Result<T, StoreError>) {
        self.latency.get_or_create(&OpLabels { op: op.label() }).observe(took.as_secs_f64());
        match r {
            // A conflict or a bad record is an answer, not a sick store.
            Err(StoreError::Conflict { .. } | StoreError::Corrupt { .. }) => {}
            Err(e) => {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                s.failing_since.get_or_insert_with(SystemTime::now);
                s.last_error = Some(e.to_string().lines().next().unwrap_or_default().to_string());
                s.failures = s.failures.saturating_add(1);
                s.failures_total = s.failures_total.saturating_add(1);
            }
            // Reads can work while writes fail: only a write ends an outage.
            Ok(_) if op == StoreOp::Apply => {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if s.failing_since.is_some() {
                    s.failing_since = None;
                    s.failures = 0;
                }
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_timed() {
        let health = StoreHealth::default();
        let ok: Result<(), StoreError> = Ok(());
        for op in [StoreOp::Apply, StoreOp::Get, StoreOp::List, StoreOp::Get] {
            health.observe(op, Duration::from_micros(80), &ok);
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("store", "", health.latency.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for want in [r#"store_count{op="get"} 2"#, r#"store_count{op="list"} 1"#, r#"store_count{op="apply"} 1"#] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }

    #[test]
    fn a_failed_write_starts_an_outage_and_only_a_good_write_ends_it() {
        let health = StoreHealth::default();
        let full: Result<(), StoreError> = Err(StoreError::DiskFull("no space".into()));
        let ok: Result<(), StoreError> = Ok(());
        let conflict: Result<(), StoreError> = Err(StoreError::Conflict { key: "k".into() });
        health.observe(StoreOp::Apply, Duration::ZERO, &conflict);
        assert!(health.snapshot().failing_since.is_none(), "a conflict is an answer");
        health.observe(StoreOp::Apply, Duration::ZERO, &full);
        health.observe(StoreOp::Get, Duration::ZERO, &ok);
        let s = health.snapshot();
        assert!(s.failing_since.is_some(), "a good read does not end it");
        assert_eq!((s.failures, s.failures_total), (1, 1));
        health.observe(StoreOp::Apply, Duration::ZERO, &ok);
        let s = health.snapshot();
        assert!(s.failing_since.is_none());
        assert_eq!((s.failures, s.failures_total), (0, 1));
    }
}
