//! Read-only views for `wharf status` and `wharf ps`, derived from the store
//! and from observation every time (nothing cached that could go stale).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use wharf_api_types::{AppView, CanaryView, RouteView, ServiceView, StatusView, TaskView};
use wharf_runtime::ExitInfo;

use crate::controller::{describe_exit, ControlError, Controller};

impl Controller {
    pub async fn status(self: &Arc<Self>) -> Result<StatusView, ControlError> {
        let maintenance = self.db.maintenance().await?;
        let pauses = self.db.pauses().await?;
        let covers = |app: &str, svc: &str, a: &str, s: Option<&str>| a == app && s.is_none_or(|s| s == svc);
        let mut apps = Vec::new();
        for app in self.db.apps().await? {
            let mut services = Vec::new();
            for s in self.db.services(Some(&app.name)).await? {
                let spec = &self.catalog.revision(&app.name, &s.name, s.revision).await?.spec;
                let (web, policy) = (spec.is_web(), spec.deploy.clone());
                let p = self.rollout.service_progress(self, &s).await?;
                services.push(ServiceView {
                    name: s.name.clone(),
                    kind: if web { "web" } else { "worker" }.into(),
                    revision: s.revision,
                    replicas: s.replicas,
                    running: p.running,
                    ready: p.ready,
                    old: p.old,
                    standby: p.standby,
                    draining: p.draining,
                    live: crate::strategy::PoolLayout::of(&s).live(),
                    maintenance: maintenance.iter().any(|m| covers(&app.name, &s.name, &m.app, m.service.as_deref())),
                    paused: pauses.iter().any(|p| covers(&app.name, &s.name, &p.app, p.service.as_deref())),
                    health_failing: self.health_failing(&s),
                    canary: s.canary.map(|c| CanaryView {
                        from: c.from,
                        step: c.step,
                        steps: policy.steps.len() as u32,
                        weight: c.weight,
                        next_in_secs: (c.step > 0).then(|| c.until.saturating_sub(self.now_ms()).div_ceil(1000)),
                    }),
                });
            }
            apps.push(AppView {
                routes: app
                    .routes
                    .iter()
                    .map(|r| RouteView { host: r.host.clone(), path: r.path.clone(), service: r.service.clone() })
                    .collect(),
                deployment: self.db.deployments(&app.name).await?.pop().map(crate::wire::deployment),
                name: app.name,
                release: app.release,
                deployed_at: app.deployed_at,
                services,
            });
        }
        Ok(StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.now_ms().saturating_sub(self.started_ms) / 1000,
            limits: describe_limits(&self.driver.limits()),
            problems: self.problems(),
            apps,
        })
    }

    fn health_failing(&self, s: &wharf_store::ServiceRecord) -> Vec<String> {
        let mut out: Vec<String> = self
            .driver
            .tasks()
            .into_iter()
            .filter(|t| t.spec.restart && t.spec.app == s.app && t.spec.service == s.name)
            .filter(|t| t.spec.revision == s.revision)
            .filter_map(|t| Some(format!("{}: {}", t.spec.id, self.health.failing(&t.spec.id)?)))
            .collect();
        out.sort();
        out
    }

    pub fn tasks_view(&self) -> Vec<TaskView> {
        let draining = self.reconciler.drains.snapshot();
        let mut out: Vec<TaskView> = self
            .driver
            .tasks()
            .into_iter()
            .map(|t| {
                let h = self.health.view(&t.spec.id);
                let u = self.usage.get(&t.spec.id);
                TaskView {
                    health: h.as_ref().map(|h| h.health),
                    draining: draining.contains(&t.spec.id),
                    ejected: h.as_ref().is_some_and(|h| h.backend.ejected()),
                    in_flight: h.as_ref().map_or(0, |h| h.backend.in_flight()),
                    health_error: h.and_then(|h| h.last_error),
                    port: t.spec.port,
                    state: crate::wire::task_state(t.state),
                    pid: t.pid,
                    restarts: t.restarts,
                    crashes: t.crashes,
                    last_exit: t.last_exit.map(|e| match e {
                        ExitInfo::Signal(libc::SIGKILL) if t.oom_kills > 0 => crate::controller::exit_reason(&t),
                        e => describe_exit(&e),
                    }),
                    started_at: t
                        .started_at
                        .and_then(|s| s.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64),
                    adopted: t.adopted,
                    oom_kills: t.oom_kills,
                    cpu_percent: u.map(|u| (u.cpu_percent * 10.0).round() / 10.0),
                    memory_bytes: u.map(|u| u.memory_bytes),
                    id: t.spec.id.clone(),
                    app: t.spec.app.clone(),
                    service: t.spec.service.clone(),
                    revision: t.spec.revision,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.app, &a.service, a.revision, &a.id).cmp(&(&b.app, &b.service, b.revision, &b.id)));
        out
    }
}

fn describe_limits(l: &wharf_runtime::LimitsSupport) -> String {
    match l {
        wharf_runtime::LimitsSupport::CgroupV1 => "cgroup v1".into(),
        wharf_runtime::LimitsSupport::CgroupV2 => "cgroup v2".into(),
        wharf_runtime::LimitsSupport::None { reason } => format!("none ({reason})"),
    }
}
