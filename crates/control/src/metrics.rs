//! Server metrics (besides the proxy's own): tasks, restarts, deployments,
//! store latency, the log stream and its exports. Most are read at scrape
//! time from what the controllers observe; nothing is counted on the
//! request path.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use wharf_logs::export::ExportStats;
use wharf_runtime::TaskState;

use crate::controller::Controller;
use crate::health::Health;
use crate::store_health::StoreHealth;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    app: String,
    service: String,
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    app: String,
    service: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    app: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    /// `store`: not written to the segments; `export`: given up by an export.
    stage: &'static str,
    /// The export's target kind (`file`, `http`); empty for `store`.
    sink: &'static str,
}

const STATES: [(TaskState, &str); 5] = [
    (TaskState::Starting, "starting"),
    (TaskState::Running, "running"),
    (TaskState::Backoff, "backoff"),
    (TaskState::Stopping, "stopping"),
    (TaskState::Exited, "exited"),
];

/// Metrics counted as things happen (the rest is read at scrape time).
#[derive(Default)]
pub struct ServerMetrics {
    /// Task restarts since the server started.
    pub(crate) restarts: Counter,
    /// How store operations go; the server's store wrapper reports into it.
    pub(crate) store_health: Arc<StoreHealth>,
    exports: Mutex<Vec<Arc<ExportStats>>>,
}

impl ServerMetrics {
    /// Adds an export's counters to the metrics.
    pub fn add_export(&self, stats: Arc<ExportStats>) {
        self.exports.lock().unwrap().push(stats);
    }

    /// Where a store wrapper reports each operation's time and outcome.
    pub fn store_health(&self) -> Arc<StoreHealth> {
        self.store_health.clone()
    }
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

impl Controller {
    /// Prometheus text of the server's own metrics (see the README's
    /// "Metrics" section for what each means).
    pub async fn metrics_text(&self) -> String {
        let mut outcomes: BTreeMap<(String, String), i64> = BTreeMap::new();
        if let Ok(apps) = self.db.apps().await {
            for app in apps {
                for d in self.db.deployments(&app.name).await.unwrap_or_default() {
                    *outcomes.entry((app.name.clone(), d.state.as_str().to_string())).or_default() += 1;
                }
            }
        }

        let mut registry = Registry::with_prefix("wharf");
        let tasks = Family::<StateLabels, Gauge>::default();
        let health = Family::<TaskLabels, Gauge>::default();
        let task_restarts = Family::<TaskLabels, Gauge>::default();
        let memory = Family::<TaskLabels, Gauge>::default();
        let cpu = Family::<TaskLabels, FloatGauge>::default();
        let cpu_seconds = Family::<TaskLabels, FloatCounter>::default();
        let deployments = Family::<OutcomeLabels, Gauge>::default();
        registry.register("tasks", "Tasks by app, service and state", tasks.clone());
        registry.register("restarts", "Task restarts since the server started", self.metrics.restarts.clone());
        registry.register("task_health", "1 healthy, 0 starting, -1 unhealthy (web tasks)", health.clone());
        registry.register("task_restarts", "Restarts of the task since it was created", task_restarts.clone());
        registry.register("task_memory_bytes", "Memory the task uses", memory.clone());
        registry.register("task_cpu_percent", "CPU the task used over the last sample, 100 = one core", cpu.clone());
        registry.register("task_cpu_seconds", "CPU time the task has used", cpu_seconds.clone());
        registry.register(
            "deployments",
            "Deployments in the store's history, by app and outcome (in_progress, succeeded, failed, rolled_back, superseded, unchanged)",
            deployments.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Time of store operations, by operation (get, list, apply)",
            self.metrics.store_health.latency.clone(),
        );
        let store = self.metrics.store_health.snapshot();
        let store_errors = Counter::<u64>::default();
        store_errors.inc_by(store.failures_total);
        registry.register("store_errors", "Store operations that failed (I/O, a full disk)", store_errors);
        let failing = Gauge::<i64>::default();
        failing.set(i64::from(store.failing_since.is_some()));
        registry.register("store_failing", "1 while store writes fail, 0 once a write succeeds", failing);
        if let Some(free) = crate::disk::free_bytes(&self.data_dir) {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(free).unwrap_or(i64::MAX));
            registry.register("data_disk_free_bytes", "Free space on the data directory's disk, for the server", g);
        }
        {
            for t in self.driver.tasks() {
                let (app, service) = (t.spec.app.clone(), t.spec.service.clone());
                for (_, state) in STATES {
                    // Every state shows, zero or not.
                    let _ =
                        tasks.get_or_create_owned(&StateLabels { app: app.clone(), service: service.clone(), state });
                }
                let state = STATES.iter().find(|(s, _)| *s == t.state).map_or("exited", |(_, n)| n);
                tasks.get_or_create(&StateLabels { app: app.clone(), service: service.clone(), state }).inc();
                let l = TaskLabels { app, service, task: t.spec.id.clone() };
                if let Some(h) = self.health.health(&t.spec.id) {
                    let v = match h {
                        Health::Healthy => 1,
                        Health::Starting => 0,
                        Health::Unhealthy => -1,
                    };
                    health.get_or_create(&l).set(v);
                }
                task_restarts.get_or_create(&l).set(i64::from(t.restarts));
                if let Some(u) = self.usage.get(&t.spec.id) {
                    memory.get_or_create(&l).set(u.memory_bytes as i64);
                    cpu.get_or_create(&l).set(u.cpu_percent);
                    cpu_seconds.get_or_create(&l).inc_by(u.cpu_nanos as f64 / 1e9);
                }
            }
        }
        for ((app, outcome), n) in outcomes {
            deployments.get_or_create(&OutcomeLabels { app, outcome }).set(n);
        }

        let stream = self.logs.stats();
        let ingested = Counter::<u64>::default();
        ingested.inc_by(stream.ingested);
        let dropped = Family::<DropLabels, Counter>::default();
        dropped.get_or_create(&DropLabels { stage: "store", sink: "" }).inc_by(stream.unstored);
        let exported = Family::<SinkLabels, Counter>::default();
        let failures = Family::<SinkLabels, Counter>::default();
        let buffered = Family::<SinkLabels, Gauge>::default();
        let lag = Family::<SinkLabels, Gauge>::default();
        for e in self.metrics.exports.lock().unwrap().iter() {
            let sink = e.target().kind();
            let l = SinkLabels { sink };
            exported.get_or_create(&l).inc_by(e.exported());
            failures.get_or_create(&l).inc_by(e.failures());
            buffered.get_or_create(&l).set(e.buffered() as i64);
            lag.get_or_create(&l).set(stream.next_seq.saturating_sub(1).saturating_sub(e.position()) as i64);
            dropped.get_or_create(&DropLabels { stage: "export", sink }).inc_by(e.dropped());
        }
        registry.register(
            "log_records_ingested",
            "Records appended to the log stream since the server started",
            ingested,
        );
        registry.register(
            "log_records_dropped",
            "Log records lost: not written to disk (stage=store) or given up by an export (stage=export)",
            dropped,
        );
        registry.register("log_records_exported", "Log records an export's target accepted", exported);
        registry.register("log_export_failures", "Failed export attempts (each retry counts)", failures);
        registry.register("log_export_buffered_records", "Records waiting in an export's buffer", buffered);
        registry.register("log_export_lag_records", "Records in the stream not yet shipped by an export", lag);

        let expiry = Family::<Vec<(String, String)>, Gauge>::default();
        for c in self.certificates.views() {
            if let (true, Some(not_after)) = (c.served, c.not_after) {
                let labels = vec![("host".to_string(), c.host.clone()), ("source".to_string(), c.source.clone())];
                expiry.get_or_create(&labels).set(i64::try_from(not_after).unwrap_or(i64::MAX));
            }
        }
        registry.register(
            "certificate_expiry_seconds",
            "When the certificate served for a host expires, unix seconds, by host and source (file, acme)",
            expiry,
        );
        if let Some(acme) = &self.acme {
            registry.register(
                "acme_orders",
                "ACME certificate orders since the server started, by outcome (issued, renewed, failed)",
                acme.orders.clone(),
            );
        }

        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
