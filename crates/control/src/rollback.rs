//! Revisions history and one-command rollback. A rollback is an ordinary
//! rollout to an older, retained revision: new tasks start, take traffic
//! once healthy, and only then do the current ones drain and stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use wharf_api_types::RevisionView;
use wharf_logs::Level;
use wharf_spec::Service;
use wharf_store::{Batch, DeploymentRecord, DeploymentState, DeploymentStep, Revision, ServiceChange};

use crate::component::BackgroundLoop;
use crate::controller::{ControlError, Controller};
use crate::error::{Busy, InProgress, Invalid, NoAbort, NotFound};
use crate::strategy;

/// What the deployment history says about each revision of one service.
#[derive(Default)]
struct History {
    /// Revision → (deployment id, state, reason) of the last deployment to it.
    last: HashMap<u64, (u64, DeploymentState, Option<String>)>,
    /// Revisions that were running when a deployment moved the service away.
    left: HashSet<u64>,
}

impl History {
    fn of(deployments: &[DeploymentRecord], service: &str) -> History {
        let mut h = History::default();
        for d in deployments {
            for c in d.changes.iter().filter(|c| c.service == service) {
                if let Some(to) = c.to {
                    h.last.insert(to, (d.id, d.state, d.reason.clone()));
                }
                if let Some(from) = c.from {
                    h.left.insert(from);
                }
            }
        }
        h
    }

    fn healthy(&self, n: u64) -> bool {
        match self.last.get(&n) {
            Some((_, state, _)) => *state == DeploymentState::Succeeded,
            None => self.left.contains(&n),
        }
    }
}

/// The settings that differ between two revisions of a service, by name.
pub(crate) fn spec_changes(before: &Service, after: &Service) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, changed: bool| {
        if changed {
            out.push(name.to_string());
        }
    };
    check("command", before.command != after.command);
    check("workdir", before.workdir != after.workdir);
    check("port", before.port != after.port);
    check("cpu", before.cpu != after.cpu);
    check("memory", before.memory != after.memory);
    check("health", before.health != after.health);
    check("stop_signal", before.stop_signal != after.stop_signal);
    check("stop_timeout", before.stop_timeout != after.stop_timeout);
    check("balance", before.balance != after.balance);
    check("release", before.release_command != after.release_command);
    check("deploy", before.deploy != after.deploy);
    check("scale", before.scale != after.scale);
    let keys: std::collections::BTreeSet<&String> =
        before.env.keys().chain(after.env.keys()).chain(before.secrets.keys()).chain(after.secrets.keys()).collect();
    for k in keys {
        if before.env.get(k) != after.env.get(k) || before.secrets.get(k) != after.secrets.get(k) {
            out.push(format!("env {k}"));
        }
    }
    out
}

impl Controller {
    /// A service's revisions, oldest first, each with what changed.
    pub async fn revisions(&self, app: &str, service: &str) -> Result<Vec<RevisionView>, ControlError> {
        let current = self.db.service(app, service).await?.map(|s| s.revision);
        let revisions = self.db.revisions(app, service).await?;
        if revisions.is_empty() {
            return Err(NotFound::Service { app: app.to_string(), service: service.to_string() }.into());
        }
        let history = History::of(&self.db.deployments(app).await?, service);
        let mut out = Vec::new();
        let mut before: Option<&Revision> = None;
        for r in &revisions {
            let changes = match before {
                None => vec!["first revision".to_string()],
                Some(b) => {
                    let mut c = spec_changes(&b.spec, &r.spec);
                    c.extend(crate::secrets::secret_changes(&b.secrets, &r.secrets));
                    if b.code != r.code {
                        c.insert(0, "code".into());
                    }
                    c
                }
            };
            out.push(RevisionView {
                number: r.number,
                created_at: r.created_at,
                release: r.release[..12.min(r.release.len())].to_string(),
                changes,
                current: Some(r.number) == current,
                available: self.releases.path(app, &r.release).exists(),
                outcome: history.last.get(&r.number).map(|(_, state, _)| crate::wire::deployment_state(*state)),
                deployment: history.last.get(&r.number).map(|(id, _, _)| *id),
                reason: history.last.get(&r.number).and_then(|(_, _, why)| why.clone()),
                healthy: history.healthy(r.number),
            });
            before = Some(r);
        }
        Ok(out)
    }

    /// Rolls `service` back to revision `to` (default: the newest earlier
    /// revision that was live and healthy, so never one whose own deploy
    /// failed or was rolled back). Returns the deployment that carries it out. While a
    /// deployment of the app is in progress, this aborts it instead: its
    /// services return to what they ran before (an instant switch during a
    /// blue-green bake).
    pub async fn rollback(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        to: Option<u64>,
    ) -> Result<DeploymentRecord, ControlError> {
        let _guard = self.rollout.lock().await;
        let svc = self.service_record(app, service).await?;
        if let Some(mut running) =
            self.db.deployments(app).await?.pop().filter(|d| d.state == DeploymentState::InProgress)
        {
            return self.abort(&mut running, service, to).await;
        }
        let revisions = self.db.revisions(app, service).await?;
        let target = match to {
            Some(n) => revisions.iter().find(|r| r.number == n).ok_or_else(|| {
                let known = revisions.iter().map(|r| r.number).collect();
                ControlError::from(NotFound::Revision { service: service.to_string(), number: n, known })
            })?,
            None => {
                let history = History::of(&self.db.deployments(app).await?, service);
                let earlier: Vec<&Revision> = revisions.iter().rev().filter(|r| r.number < svc.revision).collect();
                if earlier.is_empty() {
                    return Err(Invalid::FirstRevision { service: service.to_string(), number: svc.revision }.into());
                }
                let Some(good) = earlier.iter().copied().find(|r| history.healthy(r.number)) else {
                    let skipped: Vec<String> = earlier
                        .iter()
                        .map(|r| {
                            let how = history.last.get(&r.number).map_or("never live", |(_, st, _)| st.as_str());
                            format!("@{} {how}", r.number)
                        })
                        .collect();
                    return Err(Invalid::NoHealthyEarlier { service: service.to_string(), skipped }.into());
                };
                good
            }
        };
        if target.number == svc.revision {
            return Err(Invalid::AlreadyRuns { service: service.to_string(), number: target.number }.into());
        }
        if !self.releases.path(app, &target.release).exists() {
            return Err(Invalid::ReleaseGone { service: service.to_string(), number: target.number }.into());
        }
        let last = self.db.deployments(app).await?.pop();
        let id = last.as_ref().map_or(1, |d| d.id + 1);
        let message = format!("rollback of {service}: @{} → @{}", svc.revision, target.number);
        let now = self.now_ms();
        let deployment = DeploymentRecord {
            app: app.to_string(),
            id,
            release: target.release.clone(),
            changes: vec![ServiceChange {
                service: service.to_string(),
                from: Some(svc.revision),
                to: Some(target.number),
                from_replicas: svc.replicas,
                replicas: svc.replicas,
            }],
            state: DeploymentState::InProgress,
            message: message.clone(),
            started_at: now,
            step: DeploymentStep::Rollout,
            step_started_at: now,
            manual: true,
            // Still the app of the same environment.
            env: last.and_then(|d| d.env),
            ..Default::default()
        };
        let mut batch = Batch::default();
        let strategy = target.spec.deploy.strategy;
        batch.put_service(&strategy::moving(&svc, target.number, svc.replicas, strategy)).put_deployment(&deployment);
        self.db.commit(batch).await?;
        drop(_guard);
        self.events.event_full(
            "deploy.rollback",
            Level::Warn,
            Some(app),
            Some(service),
            None,
            format!("deployment {app}#{id}: {message}"),
        );
        self.reconciler.wake();
        self.routing.wake();
        // A new revision may bring or drop a scale policy.
        self.autoscaler.wake();
        self.rollout.spawn_deployment(self, app, id);
        Ok(deployment)
    }

    /// `wharf deploy --promote`: the running deployment's canaries (or the
    /// one of `service`) take all the requests now, skipping their remaining
    /// steps; the deployment then finishes like after its last step.
    pub async fn promote(self: &Arc<Self>, app: &str, service: Option<&str>) -> Result<DeploymentRecord, ControlError> {
        let _guard = self.rollout.lock().await;
        let running = self.db.deployments(app).await?.pop().filter(|d| d.state == DeploymentState::InProgress);
        let Some(mut d) = running else {
            return Err(Invalid::NoCanaryRunning { app: app.to_string() }.into());
        };
        if let Some(name) = service {
            self.service_record(app, name).await?;
        }
        let mut promoted = false;
        for s in self.db.services(Some(app)).await? {
            let Some(c) = s.canary.filter(|_| service.is_none_or(|n| n == s.name)) else { continue };
            if c.step == 0 {
                return Err(Busy::CanaryStarting { service: s.name.clone(), revision: s.revision }.into());
            }
            let Some(next) = crate::strategy::promoted(&s) else { continue };
            // The rollout's deadline counts again from here, for the old tasks to leave.
            d.step_started_at = self.now_ms();
            self.rollout.canary_moved(self, &mut d, &next, 0).await?;
            promoted = true;
        }
        if !promoted {
            return Err(
                Invalid::NoCanary { app: app.to_string(), id: d.id, service: service.map(str::to_string) }.into()
            );
        }
        Ok(d)
    }

    /// `wharf rollback` while a deployment runs: it is rolled back.
    async fn abort(
        self: &Arc<Self>,
        d: &mut DeploymentRecord,
        service: &str,
        to: Option<u64>,
    ) -> Result<DeploymentRecord, ControlError> {
        let busy = |why: NoAbort| Err(Busy::Rollback { deployment: InProgress::of(d), why }.into());
        let Some(change) = d.changes.iter().find(|c| c.service == service) else {
            return busy(NoAbort::OtherService { service: service.to_string() });
        };
        if d.step == DeploymentStep::Rollback {
            return busy(NoAbort::RollingBack);
        }
        if to.is_some() && to != change.from {
            return busy(NoAbort::OtherRevision { service: service.to_string(), from: change.from });
        }
        self.rollout.roll_back(self, d, format!("rolled back by hand (`wharf rollback {service}`)")).await?;
        self.rollout.spawn_deployment(self, &d.app.clone(), d.id);
        Ok(d.clone())
    }
}
