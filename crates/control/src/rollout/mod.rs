//! Drives a deployment through its steps: release → rollout → bake, or
//! rollback when something fails. The step lives in the deployment's record
//! and the desired state in the service records, so a server killed at any
//! moment resumes here from the store and what it observes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_logs::Level;
use wharf_proxy::OutcomeCounts;
use wharf_runtime::{TaskState, TaskStatus};
use wharf_spec::DeployPolicy;
use wharf_store::{
    Batch, CanaryStepRecord, DeploymentRecord, DeploymentState, DeploymentStep, ServiceChange, ServiceRecord,
};

use crate::component::BackgroundLoop;
use crate::controller::{fmt_duration, ControlError, Controller};
use crate::strategy::{self, Place, PoolLayout};

mod release;
mod steps;
mod verdict;

use release::release_prefix;
use verdict::{bake_over, bake_window, judge, rollout_verdict, RolloutVerdict};

/// How often a deployment looks at its tasks.
const TICK: Duration = Duration::from_millis(100);
/// Restarts of one new task that make a crash loop.
const CRASH_LOOP_RESTARTS: u32 = 3;
/// Answers needed before a bake judges a revision's error rate or latency.
const MIN_BAKE_ANSWERS: u64 = 20;
/// Lines of a failed release command's output quoted in the failure reason.
const RELEASE_OUTPUT_LINES: usize = 20;
/// Longest a paused release may hold requests (the pause's own cap).
const RELEASE_PAUSE_MAX: Duration = Duration::from_secs(600);

/// What a driver remembers between ticks; rebuilt from observation after a restart.
#[derive(Default)]
struct Watch {
    /// New tasks seen ready, with their restart count then.
    ready_seen: HashMap<String, u32>,
    /// Answer counters of new tasks when the bake began.
    baseline: HashMap<String, OutcomeCounts>,
    /// The release task running now, and when it must end.
    release: Option<(String, std::time::Instant)>,
    /// Services whose release command has succeeded.
    released: HashSet<String>,
    /// Last progress line, to log changes only.
    last_progress: String,
}

/// One tick's verdict.
enum Next {
    Stay,
    /// Persist the record as changed.
    Save,
    Fail(String),
    Finish(DeploymentState, String),
}

/// The rollout: drives each deployment through its steps, one driver per
/// deployment, and serialises the changes to desired state.
#[derive(Default)]
pub(crate) struct Rollout {
    lock: tokio::sync::Mutex<()>,
    /// Deployments a driver is working on (app, id): one driver each.
    driving: Mutex<HashSet<(String, u64)>>,
}

impl Rollout {
    /// Starts driving a deployment unless a driver already does.
    pub(crate) fn spawn_deployment(self: &Arc<Self>, ctl: &Arc<Controller>, app: &str, id: u64) {
        if !self.driving.lock().unwrap().insert((app.to_string(), id)) {
            return;
        }
        let (this, ctl) = (self.clone(), ctl.clone());
        let app = app.to_string();
        tokio::spawn(async move {
            this.drive(&ctl, &app, id).await;
            this.driving.lock().unwrap().remove(&(app, id));
        });
    }

    /// Whether a driver works on the deployment (app, id).
    pub(crate) fn is_driving(&self, app: &str, id: u64) -> bool {
        self.driving.lock().unwrap().contains(&(app.to_string(), id))
    }

    /// Held while desired state changes (deploy, rollback, scale, destroy),
    /// so two of them never interleave.
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    async fn drive(&self, ctl: &Arc<Controller>, app: &str, id: u64) {
        let mut stop = ctl.stopping();
        let mut watch = Watch::default();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => return,
            }
            let d = match ctl.db.deployment(app, id).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("deployment {app}#{id}: store unavailable: {e}");
                    continue;
                }
            };
            let Some(mut d) = d else { return };
            if d.state != DeploymentState::InProgress || ctl.destroying.contains(app) {
                return;
            }
            let next = match self.step(ctl, &mut d, &mut watch).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("deployment {app}#{id}: {e}");
                    continue;
                }
            };
            let saved = match next {
                Next::Stay => Ok(()),
                Next::Save => ctl.db.put_deployment(&d).await.map_err(ControlError::from),
                Next::Fail(reason) => self.fail(ctl, &mut d, &mut watch, reason).await,
                Next::Finish(state, message) => self.finish(ctl, &mut d, state, message).await,
            };
            if let Err(e) = saved {
                tracing::warn!("deployment {app}#{id}: cannot record progress: {e}");
            }
        }
    }

    async fn step(&self, ctl: &Arc<Controller>, d: &mut DeploymentRecord, w: &mut Watch) -> Result<Next, ControlError> {
        match d.step {
            DeploymentStep::ReleaseCommand => self.step_release(ctl, d, w).await,
            DeploymentStep::Rollout => self.step_rollout(ctl, d, w).await,
            DeploymentStep::Bake => self.step_bake(ctl, d, w).await,
            DeploymentStep::Rollback => self.step_rollback(ctl, d).await,
        }
    }

    /// Waits until the services run their previous revisions again.
    async fn step_rollback(&self, ctl: &Arc<Controller>, d: &mut DeploymentRecord) -> Result<Next, ControlError> {
        let app = d.app.clone();
        // A release command still running (a rollback asked for during the release) stops.
        for t in ctl.driver.tasks() {
            if d.changes.iter().any(|c| t.spec.id.starts_with(&release_prefix(&app, c, d.id))) {
                let _ = ctl.driver.stop(&t.spec.id).await;
                self.release_resume(ctl, d, &t.spec.service).await;
            }
        }
        let mut waiting = Vec::new();
        for s in ctl.db.services(Some(&app)).await? {
            let p = self.service_progress(ctl, &s).await?;
            if self.switch_when_ready(ctl, d, &s, &p, false).await? {
                waiting.push(format!("{}: switched", s.name));
                continue;
            }
            if !p.settled(&s) {
                waiting.push(p.describe(&s));
            }
        }
        for c in d.changes.iter().filter(|c| c.from.is_none()) {
            if ctl.driver.tasks().iter().any(|t| t.spec.app == app && t.spec.service == c.service && t.spec.restart) {
                waiting.push(format!("{}: tasks stopping", c.service));
            }
        }
        if !waiting.is_empty() {
            let limit = d.step_started_at + 300_000;
            if ctl.now_ms() >= limit {
                return Ok(Next::Finish(
                    DeploymentState::Failed,
                    format!("the rollback did not finish within 5 minutes: {}", waiting.join("; ")),
                ));
            }
            return Ok(Next::Stay);
        }
        Ok(Next::Finish(DeploymentState::RolledBack, "back on the previous revisions".into()))
    }

    /// Returns the services to the revisions they ran before (an instant
    /// switch where the old set is on standby), or stops with Failed when
    /// there is nothing to return to or automatic rollback is off.
    async fn fail(
        &self,
        ctl: &Arc<Controller>,
        d: &mut DeploymentRecord,
        w: &mut Watch,
        reason: String,
    ) -> Result<(), ControlError> {
        if d.step == DeploymentStep::ReleaseCommand {
            // Nothing moved; the routes and jobs that came with it go back,
            // in the same write that ends the deployment.
            let mut batch = Batch::default();
            if let Some(app) = &d.previous_app {
                batch.put_app(app);
            }
            self.finish_with(ctl, d, DeploymentState::Failed, reason, batch).await?;
            ctl.routing.publish().await;
            return Ok(());
        }
        let mut auto = true;
        for c in &d.changes {
            if let Some(to) = c.to {
                auto &= ctl.catalog.revision(&d.app, &c.service, to).await?.spec.deploy.auto_rollback;
            }
        }
        let anything_before = d.changes.iter().any(|c| c.from.is_some());
        if d.changes.is_empty() {
            // Scaling only: no revision to return to; the replicas stay asked for.
            return self.finish(ctl, d, DeploymentState::Failed, reason).await;
        }
        if !auto || !anything_before {
            let why = if anything_before {
                format!("{reason}; automatic rollback is off, the new revisions stay")
            } else {
                format!("{reason}; there is no previous revision to roll back to")
            };
            return self.finish(ctl, d, DeploymentState::Failed, why).await;
        }
        self.roll_back(ctl, d, reason).await?;
        w.ready_seen.clear();
        Ok(())
    }

    /// Writes the previous revisions back as desired state and moves the
    /// deployment to its rollback step, in one write.
    pub(crate) async fn roll_back(
        &self,
        ctl: &Arc<Controller>,
        d: &mut DeploymentRecord,
        reason: String,
    ) -> Result<(), ControlError> {
        let mut batch = Batch::default();
        for c in &d.changes {
            let current = ctl.db.service(&d.app, &c.service).await?;
            match (c.from, current) {
                (Some(from), Some(cur)) => {
                    let strategy = ctl.catalog.revision(&d.app, &c.service, from).await?.spec.deploy.strategy;
                    batch.put_service(&strategy::moving(&cur, from, c.from_replicas, strategy));
                }
                (Some(from), None) => {
                    batch.put_service(&strategy::first_record(&d.app, &c.service, from, c.from_replicas));
                }
                (None, Some(_)) => {
                    batch.delete_service(&d.app, &c.service);
                }
                (None, None) => {}
            }
        }
        // Routes and jobs go back with the services.
        if let Some(app) = &d.previous_app {
            batch.put_app(app);
        }
        d.step = DeploymentStep::Rollback;
        d.step_started_at = ctl.now_ms();
        d.reason = Some(reason.clone());
        batch.put_deployment(d);
        ctl.db.commit(batch).await?;
        ctl.routing.publish().await;
        ctl.reconciler.wake();
        self.deploy_event(ctl, d, Level::Warn, "deploy.rolling_back", format!("rolling back: {reason}"));
        Ok(())
    }

    async fn finish(
        &self,
        ctl: &Arc<Controller>,
        d: &mut DeploymentRecord,
        state: DeploymentState,
        message: String,
    ) -> Result<(), ControlError> {
        self.finish_with(ctl, d, state, message, Batch::default()).await
    }

    /// Ends the deployment, writing `batch` with it.
    async fn finish_with(
        &self,
        ctl: &Arc<Controller>,
        d: &mut DeploymentRecord,
        state: DeploymentState,
        message: String,
        mut batch: Batch,
    ) -> Result<(), ControlError> {
        d.state = state;
        d.finished_at = Some(ctl.now_ms());
        if state != DeploymentState::Succeeded {
            let why = match d.reason.take() {
                Some(r) if state == DeploymentState::RolledBack => r,
                Some(r) => format!("{r}; {message}"),
                None => message.clone(),
            };
            d.reason = Some(why);
        }
        batch.put_deployment(d);
        ctl.db.commit(batch).await?;
        let level = if state == DeploymentState::Succeeded { Level::Info } else { Level::Warn };
        let text = match &d.reason {
            Some(r) => format!("{}: {r}", state.as_str()),
            None => format!("{}: {message}", state.as_str()),
        };
        self.deploy_event(ctl, d, level, &format!("deploy.{}", state.as_str()), text);
        Ok(())
    }

    fn deploy_event(&self, ctl: &Arc<Controller>, d: &DeploymentRecord, level: Level, kind: &str, text: String) {
        ctl.events.event_full(kind, level, Some(&d.app), None, None, format!("deployment {}#{}: {text}", d.app, d.id));
    }

    /// Where a service's tasks are against its desired record.
    pub(crate) async fn service_progress(
        &self,
        ctl: &Arc<Controller>,
        s: &ServiceRecord,
    ) -> Result<ServiceProgress, ControlError> {
        let web = ctl.catalog.revision(&s.app, &s.name, s.revision).await?.spec.is_web();
        let draining = ctl.reconciler.drains.snapshot();
        let layout = PoolLayout::of(s);
        let mut p = ServiceProgress::default();
        for t in ctl.driver.tasks() {
            if !t.spec.restart || t.spec.app != s.app || t.spec.service != s.name {
                continue;
            }
            if draining.contains(&t.spec.id) || t.state == TaskState::Stopping {
                p.draining += 1;
            } else if t.spec.revision == s.revision {
                p.running += 1;
                if ctl.is_ready(&t, web) {
                    p.ready += 1;
                }
            } else if layout.place(t.spec.revision) == Place::Standby {
                p.standby += 1;
            } else {
                p.old += 1;
            }
        }
        Ok(p)
    }
}

/// Logs a deployment's progress line when it changes.
fn note_progress(d: &DeploymentRecord, w: &mut Watch, waiting: &[String]) {
    let line = waiting.join("; ");
    if line != w.last_progress && !line.is_empty() {
        tracing::debug!("deployment {}#{}: {line}", d.app, d.id);
    }
    w.last_progress = line;
}

/// Counts of one service's tasks.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ServiceProgress {
    /// Tasks of the desired revision (starting or running).
    pub running: usize,
    pub ready: usize,
    /// Tasks of older revisions still serving or starting.
    pub old: usize,
    /// Tasks of the revision kept out of the pool for an instant switch back.
    pub standby: usize,
    /// Tasks out of the pool, finishing their requests before they stop.
    pub draining: usize,
}

impl ServiceProgress {
    /// The desired revision runs exactly its replicas, all ready, and only
    /// the standby set is left beside it; blue-green has switched.
    fn settled(&self, s: &ServiceRecord) -> bool {
        self.ready >= s.replicas as usize
            && self.running == s.replicas as usize
            && self.old == 0
            && self.draining == 0
            && PoolLayout::of(s).switched()
    }

    fn describe(&self, s: &ServiceRecord) -> String {
        let mut out = format!("{}@{}: {}/{} ready", s.name, s.revision, self.ready, s.replicas);
        if self.old > 0 {
            out.push_str(&format!(", {} old", self.old));
        }
        if self.draining > 0 {
            out.push_str(&format!(", {} draining", self.draining));
        }
        out
    }
}
