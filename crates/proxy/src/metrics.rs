//! Prometheus metrics of the data plane. Label sets are small (service,
//! status code, error kind), so per-request updates stay cheap.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::routing::RoutingTable;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    service: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    service: String,
    task: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    /// Off: per-request counting is skipped (for measuring its cost).
    pub(crate) enabled: bool,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<ErrorLabels, Counter>,
    pub(crate) connections: Gauge,
    pool_size: Family<ServiceLabels, Gauge>,
    backend_ejected: Family<BackendLabels, Gauge>,
    backend_in_flight: Family<BackendLabels, Gauge>,
    /// The table last observed, so ejection and load gauges are read at scrape time.
    table: arc_swap::ArcSwapOption<RoutingTable>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wharf_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<ServiceLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        let connections = Gauge::default();
        let pool_size = Family::<ServiceLabels, Gauge>::default();
        let backend_ejected = Family::<BackendLabels, Gauge>::default();
        let backend_in_flight = Family::<BackendLabels, Gauge>::default();
        registry.register("requests", "Requests answered, by service and status", requests.clone());
        registry.register("request_duration_seconds", "Time from request to the last response byte", latency.clone());
        registry.register("upstream_errors", "Failed attempts to reach a task, by kind", upstream_errors.clone());
        registry.register("open_connections", "Client connections open now", connections.clone());
        registry.register("pool_backends", "Healthy, non-draining tasks that can take requests", pool_size.clone());
        registry.register(
            "backend_ejected",
            "1 while passive checks keep a task out of rotation",
            backend_ejected.clone(),
        );
        registry.register(
            "backend_in_flight",
            "Requests and upgraded connections on a task",
            backend_in_flight.clone(),
        );
        Metrics {
            enabled: true,
            registry,
            requests,
            latency,
            upstream_errors,
            connections,
            pool_size,
            backend_ejected,
            backend_in_flight,
            table: arc_swap::ArcSwapOption::empty(),
        }
    }
}

impl Metrics {
    pub(crate) fn count(&self, service: &str, status: u16) {
        if !self.enabled {
            return;
        }
        self.requests.get_or_create(&RequestLabels { service: service.to_string(), status }).inc();
    }

    pub(crate) fn latency(&self, service: &str, d: Duration) {
        if !self.enabled {
            return;
        }
        self.latency.get_or_create(&ServiceLabels { service: service.to_string() }).observe(d.as_secs_f64());
    }

    pub(crate) fn upstream_error(&self, service: &str, kind: &'static str) {
        self.upstream_errors.get_or_create(&ErrorLabels { service: service.to_string(), kind }).inc();
    }

    pub(crate) fn observe_table(&self, table: &RoutingTable) {
        self.pool_size.clear();
        for r in table.routes() {
            self.pool_size
                .get_or_create(&ServiceLabels { service: r.pool.name.to_string() })
                .set(r.pool.backends.len() as i64);
        }
        self.table.store(None);
    }

    pub(crate) fn remember(&self, table: Arc<RoutingTable>) {
        self.table.store(Some(table));
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        self.backend_ejected.clear();
        self.backend_in_flight.clear();
        if let Some(t) = self.table.load_full() {
            for r in t.routes() {
                for b in &r.pool.backends {
                    let l = BackendLabels { service: r.pool.name.to_string(), task: b.task.to_string() };
                    self.backend_ejected.get_or_create(&l).set(b.ejected() as i64);
                    self.backend_in_flight.get_or_create(&l).set(b.in_flight() as i64);
                }
            }
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
