//! Prometheus metrics of the data plane. Label sets are small (service,
//! status code, error kind), so per-request updates stay cheap.

use std::sync::{Arc, OnceLock};
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
struct HandshakeLabels {
    outcome: &'static str,
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
    handshakes: Family<HandshakeLabels, Counter>,
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
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        let pool_size = Family::<ServiceLabels, Gauge>::default();
        let backend_ejected = Family::<BackendLabels, Gauge>::default();
        let backend_in_flight = Family::<BackendLabels, Gauge>::default();
        registry.register("requests", "Requests answered, by service and status", requests.clone());
        registry.register("request_duration_seconds", "Time from request to the last response byte", latency.clone());
        registry.register("upstream_errors", "Failed attempts to reach a task, by kind", upstream_errors.clone());
        registry.register("open_connections", "Client connections open now", connections.clone());
        registry.register(
            "tls_handshakes",
            "TLS handshakes by outcome: ok, or why one failed (timeout, unknown_name, no_common_protocol, bad_record, closed)",
            handshakes.clone(),
        );
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
            handshakes,
            pool_size,
            backend_ejected,
            backend_in_flight,
            table: arc_swap::ArcSwapOption::empty(),
        }
    }
}

/// One pool's metric handles, made once: counting a request is then an
/// atomic add, with no label hashing or allocation on the request path.
pub struct PoolStats {
    service: Arc<str>,
    /// Request counters by status code 100..=599, created on first use.
    codes: Box<[OnceLock<Counter>]>,
    latency: Histogram,
}

impl std::fmt::Debug for PoolStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolStats").field("service", &self.service).finish()
    }
}

impl Metrics {
    /// The handles of a pool's service (shared by every snapshot's pool of that name).
    pub(crate) fn pool_stats<'p>(&self, pool: &'p crate::routing::Pool) -> Option<&'p Arc<PoolStats>> {
        if !self.enabled {
            return None;
        }
        Some(pool.stats.get_or_init(|| {
            let latency = self.latency.get_or_create(&ServiceLabels { service: pool.name.to_string() }).clone();
            Arc::new(PoolStats {
                service: pool.name.clone(),
                codes: (100..600).map(|_| OnceLock::new()).collect(),
                latency,
            })
        }))
    }

    /// One TLS handshake's outcome; counted even with request metrics off (they are per connection).
    pub(crate) fn handshake(&self, outcome: crate::conns::HandshakeOutcome) {
        self.handshakes.get_or_create(&HandshakeLabels { outcome: outcome.label() }).inc();
    }

    pub(crate) fn count(&self, pool: &crate::routing::Pool, status: u16) {
        let Some(stats) = self.pool_stats(pool) else { return };
        match stats.codes.get(usize::from(status).wrapping_sub(100)) {
            Some(slot) => slot
                .get_or_init(|| {
                    self.requests.get_or_create(&RequestLabels { service: stats.service.to_string(), status }).clone()
                })
                .inc(),
            None => self.requests.get_or_create(&RequestLabels { service: stats.service.to_string(), status }).inc(),
        };
    }

    pub(crate) fn latency(stats: &PoolStats, d: Duration) {
        stats.latency.observe(d.as_secs_f64());
    }

    pub(crate) fn upstream_error(&self, service: &str, kind: &'static str) {
        self.upstream_errors.get_or_create(&ErrorLabels { service: service.to_string(), kind }).inc();
    }

    pub(crate) fn observe_table(&self, table: &RoutingTable) {
        self.pool_size.clear();
        for r in table.routes() {
            self.pool_size
                .get_or_create(&ServiceLabels { service: r.pool.name.to_string() })
                .set(i64::try_from(r.pool.backends().count()).unwrap_or(i64::MAX));
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
                for b in r.pool.backends() {
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
