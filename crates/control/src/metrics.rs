//! Control-plane metrics, read at scrape time from what the controllers
//! observe (nothing is counted on the request path).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::controller::Controller;
use crate::health::Health;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    app: String,
    service: String,
    task: String,
}

impl Controller {
    /// Prometheus text: per task, its health (1 healthy, 0 starting, -1
    /// unhealthy), restarts, CPU and memory.
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::with_prefix("wharf");
        let health = Family::<TaskLabels, Gauge>::default();
        let restarts = Family::<TaskLabels, Gauge>::default();
        let memory = Family::<TaskLabels, Gauge>::default();
        let cpu = Family::<TaskLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register("task_health", "1 healthy, 0 starting, -1 unhealthy (web tasks)", health.clone());
        registry.register("task_restarts", "Restarts of the task since it was created", restarts.clone());
        registry.register("task_memory_bytes", "Memory the task uses", memory.clone());
        registry.register("task_cpu_percent", "CPU the task used over the last sample, 100 = one core", cpu.clone());
        let checks = self.health.lock().unwrap();
        let usage = self.usage.lock().unwrap();
        for t in self.driver.tasks() {
            let l = TaskLabels { app: t.spec.app.clone(), service: t.spec.service.clone(), task: t.spec.id.clone() };
            if let Some(h) = checks.get(&t.spec.id) {
                let v = match h.health() {
                    Health::Healthy => 1,
                    Health::Starting => 0,
                    Health::Unhealthy => -1,
                };
                health.get_or_create(&l).set(v);
            }
            restarts.get_or_create(&l).set(i64::from(t.restarts));
            if let Some(u) = usage.get(&t.spec.id) {
                memory.get_or_create(&l).set(u.memory_bytes as i64);
                cpu.get_or_create(&l).set(u.cpu_percent);
            }
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
