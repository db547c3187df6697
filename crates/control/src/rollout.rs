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

    /// Runs each changed service's release command, one at a time, as a
    /// one-off task of its new revision; then moves the services.
    async fn step_release(
        &self,
        ctl: &Arc<Controller>,
        d: &mut DeploymentRecord,
        w: &mut Watch,
    ) -> Result<Next, ControlError> {
        let app = d.app.clone();
        if let Some((task, until)) = w.release.clone() {
            let Some(status) = ctl.driver.task(&task) else {
                return Ok(Next::Fail(format!("release task {task} disappeared")));
            };
            let service = d.changes.iter().find(|c| task.starts_with(&release_prefix(&app, c, d.id))).cloned();
            let Some(change) = service else { return Ok(Next::Fail(format!("release task {task} is unknown"))) };
            if status.state == TaskState::Exited {
                let _ = ctl.driver.remove(&task).await;
                w.release = None;
                self.release_resume(ctl, d, &change.service).await;
                return Ok(match status.last_exit {
                    Some(e) if e.success() => {
                        ctl.events.event_full(
                            "deploy.release_succeeded",
                            Level::Info,
                            Some(&app),
                            Some(&change.service),
                            Some(&task),
                            format!("deployment {app}#{}: release command of {} succeeded", d.id, change.service),
                        );
                        w.released.insert(change.service.clone());
                        Next::Stay
                    }
                    _ => Next::Fail(format!(
                        "the release command of {} failed ({}); traffic never moved{}",
                        change.service,
                        crate::controller::exit_reason(&status),
                        self.last_output(ctl, &task)
                    )),
                });
            }
            if ctl.clock.instant() >= until {
                let _ = ctl.driver.stop(&task).await;
                w.release = None;
                self.release_resume(ctl, d, &change.service).await;
                return Ok(Next::Fail(format!(
                    "the release command of {} did not finish in time; it was stopped and traffic never moved{}",
                    change.service,
                    self.last_output(ctl, &task)
                )));
            }
            return Ok(Next::Stay);
        }
        // A release task from before a server restart: its outcome can't be
        // trusted to be seen whole, so it is stopped and the deploy fails.
        let leftovers: Vec<TaskStatus> = ctl
            .driver
            .tasks()
            .into_iter()
            .filter(|t| d.changes.iter().any(|c| t.spec.id.starts_with(&release_prefix(&app, c, d.id))))
            .collect();
        if !leftovers.is_empty() {
            for t in &leftovers {
                let _ = ctl.driver.stop(&t.spec.id).await;
            }
            for c in &d.changes {
                self.release_resume(ctl, d, &c.service).await;
            }
            return Ok(Next::Fail(
                "the server restarted while a release command ran; it was stopped and traffic never moved; \
                 deploy again to rerun it"
                    .into(),
            ));
        }
        for c in d.changes.clone() {
            let Some(to) = c.to else { continue };
            if w.released.contains(&c.service) {
                continue;
            }
            let rev = ctl.catalog.revision(&app, &c.service, to).await?;
            let Some(command) = rev.spec.release_command.clone() else { continue };
            let policy = &rev.spec.deploy;
            if policy.release_pause && c.from.is_some() {
                ctl.pause(&app, Some(&c.service), RELEASE_PAUSE_MAX).await?;
            }
            let id = format!("{}{}", release_prefix(&app, &c, d.id), crate::reconcile::short_id());
            let mut spec = match ctl.task_spec(&app, &c.service, &rev, &id, command, false) {
                Ok(spec) => spec,
                Err(e) => {
                    self.release_resume(ctl, d, &c.service).await;
                    return Ok(Next::Fail(format!("cannot start the release command of {}: {e}", c.service)));
                }
            };
            spec.env.insert("WHARF_RELEASE_COMMAND".into(), "1".into());
            ctl.catalog.remember(&spec);
            if let Err(e) = ctl.driver.start(spec).await {
                self.release_resume(ctl, d, &c.service).await;
                return Ok(Next::Fail(format!("cannot start the release command of {}: {e}", c.service)));
            }
            ctl.events.event_full(
                "deploy.release",
                Level::Info,
                Some(&app),
                Some(&c.service),
                Some(&id),
                format!(
                    "deployment {app}#{}: running the release command of {}@{to}{}",
                    d.id,
                    c.service,
                    if policy.release_pause && c.from.is_some() { " (requests held)" } else { "" }
                ),
            );
            let until = wharf_runtime::deadline::instant_after(ctl.clock.instant(), policy.release_timeout);
            w.release = Some((id, until));
            return Ok(Next::Stay);
        }
        // Every release succeeded: the services move, in one write with the step.
        let mut batch = Batch::default();
        for c in &d.changes {
            let Some(to) = c.to else { continue };
            let spec = ctl.catalog.revision(&app, &c.service, to).await?.spec.clone();
            let strategy = spec.deploy.strategy;
            let mut record = match ctl.db.service(&app, &c.service).await? {
                Some(old) => strategy::moving(&old, to, c.replicas, strategy),
                None => strategy::first_record(&app, &c.service, to, c.replicas),
            };
            // The revision is new with this deploy: its spec has what the file declared.
            record.declared_replicas = Some(spec.replicas);
            batch.put_service(&record);
        }
        d.step = DeploymentStep::Rollout;
        d.step_started_at = ctl.now_ms();
        batch.put_deployment(d);
        ctl.db.commit(batch).await?;
        self.deploy_event(ctl, d, Level::Info, "deploy.step", "release done; rolling out".into());
        ctl.reconciler.wake();
        Ok(Next::Stay)
    }

    /// The last lines a one-off task wrote, for a failure reason: an exit
    /// code alone rarely says why a migration failed.
    fn last_output(&self, ctl: &Arc<Controller>, task: &str) -> String {
        let filter = wharf_logs::Filter {
            task: Some(task.to_string()),
            sources: vec![wharf_logs::Source::Stdout, wharf_logs::Source::Stderr],
            ..Default::default()
        };
        let lines = ctl.logs.query(&filter, RELEASE_OUTPUT_LINES);
        if lines.is_empty() {
            return "; it wrote no output".into();
        }
        let text: Vec<String> = lines.iter().map(|r| format!("  {}", r.message)).collect();
        format!("; its last output:\n{}", text.join("\n"))
    }

    async fn release_resume(&self, ctl: &Arc<Controller>, d: &DeploymentRecord, service: &str) {
        let paused = ctl.db.pauses().await.unwrap_or_default();
        if paused.iter().any(|p| p.app == d.app && p.service.as_deref() == Some(service)) {
            if let Err(e) = ctl.resume(&d.app, Some(service)).await {
                tracing::warn!("cannot resume {}/{service} after its release: {e}", d.app);
            }
        }
    }

    /// New tasks start and become ready; blue-green services switch once
    /// their whole new set is ready. Fails on the deadline, a crash loop, or a
    /// new task that exits after it was ready.
    async fn step_rollout(
        &self,
        ctl: &Arc<Controller>,
        d: &mut DeploymentRecord,
        w: &mut Watch,
    ) -> Result<Next, ControlError> {
        let app = d.app.clone();
        if let Some(why) = self.new_tasks_failing(ctl, d, w).await? {
            return Ok(Next::Fail(why));
        }
        let mut waiting = Vec::new();
        let mut switched = false;
        for s in ctl.db.services(Some(&app)).await? {
            let p = self.service_progress(ctl, &s).await?;
            let policy = ctl.catalog.revision(&app, &s.name, s.revision).await?.spec.deploy.clone();
            if let Some(c) = s.canary {
                if let Some(why) = self.canary_step(ctl, d, w, &s, &p, &policy).await? {
                    return Ok(Next::Fail(why));
                }
                // While the new set starts, the rollout's deadline applies;
                // then the steps have their own timing.
                if c.step > 0 {
                    waiting.push(p.describe(&s));
                    continue;
                }
            }
            if self.switch_when_ready(ctl, d, &s, &p, true).await? {
                switched = true;
                continue;
            }
            let verdict = rollout_verdict(&p, &s, d.step_started_at, policy.deadline, ctl.now_ms());
            if verdict != RolloutVerdict::Settled {
                waiting.push(p.describe(&s));
            }
            if verdict == RolloutVerdict::Late {
                let web = ctl.catalog.revision(&app, &s.name, s.revision).await?.spec.is_web();
                let why = if p.ready < s.replicas as usize { self.not_ready(ctl, &s, &p, web) } else { p.describe(&s) };
                return Ok(Next::Fail(format!(
                    "not ready within the {} deadline: {why}",
                    fmt_duration(policy.deadline)
                )));
            }
        }
        // Removed services are done once their tasks are gone.
        let removed: Vec<&ServiceChange> = d.changes.iter().filter(|c| c.to.is_none()).collect();
        for c in removed {
            let left = ctl.driver.tasks().iter().filter(|t| t.spec.app == app && t.spec.service == c.service).count();
            if left > 0 {
                waiting.push(format!("{}: {left} tasks stopping", c.service));
            }
        }
        note_progress(d, w, &waiting);
        if switched || !waiting.is_empty() {
            return Ok(Next::Stay);
        }
        // Everything switched: the bake watches the new revisions.
        let bake = self.bake_time(ctl, d).await?;
        let now = ctl.now_ms();
        d.step = DeploymentStep::Bake;
        d.step_started_at = now;
        d.switched_at = Some(now);
        d.bake_until = Some(wharf_runtime::deadline::ms_after(now, bake));
        w.baseline = self.new_outcomes(ctl, d).into_iter().map(|(id, (_, c))| (id, c)).collect();
        let text = if bake.is_zero() {
            "all traffic on the new revisions".to_string()
        } else {
            format!("all traffic on the new revisions; baking for {}", fmt_duration(bake))
        };
        self.deploy_event(ctl, d, Level::Info, "deploy.step", text);
        Ok(Next::Save)
    }

    /// The new revisions serve; the old blue-green sets wait on standby.
    /// Fails when a new task exits or crash-loops, or when the answers the
    /// proxy saw from the new revisions cross a threshold.
    async fn step_bake(
        &self,
        ctl: &Arc<Controller>,
        d: &mut DeploymentRecord,
        w: &mut Watch,
    ) -> Result<Next, ControlError> {
        let app = d.app.clone();
        if let Some(why) = self.new_tasks_failing(ctl, d, w).await? {
            return Ok(Next::Fail(why));
        }
        let now_counts = self.new_outcomes(ctl, d);
        for c in &d.changes {
            let Some(to) = c.to else { continue };
            let policy = ctl.catalog.revision(&app, &c.service, to).await?.spec.deploy.clone();
            let window = bake_window(&c.service, &now_counts, &mut w.baseline);
            if let Some(why) = judge(&policy, &window) {
                return Ok(Next::Fail(format!("{}@{to}: {why}", c.service)));
            }
        }
        if !bake_over(d, ctl.now_ms()) {
            return Ok(Next::Stay);
        }
        // Good: the standby sets go.
        let mut batch = Batch::default();
        for s in ctl.db.services(Some(&app)).await? {
            if let Some(done) = strategy::baked(&s) {
                batch.put_service(&done);
            }
        }
        ctl.db.commit(batch).await?;
        ctl.reconciler.wake();
        ctl.routing.publish().await;
        Ok(Next::Finish(DeploymentState::Succeeded, "the new revisions are healthy".into()))
    }

    /// A canary's step: the new set's answers are judged by the bake's guard
    /// from the step's start; the first step begins once the whole new set is
    /// ready, each next one when the step is over, and after the last the
    /// canary is promoted (the rollout's deadline then counts again, for the
    /// old tasks to leave). Some: why the canary fails.
    async fn canary_step(
        &self,
        ctl: &Arc<Controller>,
        d: &mut DeploymentRecord,
        w: &mut Watch,
        s: &ServiceRecord,
        p: &ServiceProgress,
        policy: &DeployPolicy,
    ) -> Result<Option<String>, ControlError> {
        let Some(c) = s.canary else { return Ok(None) };
        let now = ctl.now_ms();
        if c.step > 0 {
            let window = bake_window(&s.name, &self.new_outcomes(ctl, d), &mut w.baseline);
            if let Some(why) = judge(policy, &window) {
                return Ok(Some(format!("{}@{} at {}% of the requests: {why}", s.name, s.revision, c.weight)));
            }
        }
        let due = if c.step == 0 { p.ready >= s.replicas as usize } else { strategy::canary_due(s, now) };
        if !due {
            return Ok(None);
        }
        let Some(next) = strategy::canary_next(s, &policy.steps, policy.step_interval, now) else {
            return Ok(None);
        };
        if c.step == 0 {
            // The guard counts the new tasks' answers from the first step on.
            for (id, (service, counts)) in self.new_outcomes(ctl, d) {
                if service == s.name {
                    w.baseline.insert(id, counts);
                }
            }
        }
        // A promotion or an abort by hand holds the lock and may have moved
        // the service (and the deployment) since they were read: then the
        // next tick starts over from the store.
        let _guard = self.lock().await;
        if ctl.db.service(&s.app, &s.name).await?.as_ref() != Some(s) {
            return Ok(None);
        }
        if next.canary.is_none() {
            d.step_started_at = now;
        }
        self.canary_moved(ctl, d, &next, policy.steps.len()).await?;
        Ok(None)
    }

    /// Writes a canary's next record (a step or the promotion) with the
    /// deployment that records the move, in one write; routes it, says so.
    pub(crate) async fn canary_moved(
        &self,
        ctl: &Arc<Controller>,
        d: &mut DeploymentRecord,
        next: &ServiceRecord,
        steps: usize,
    ) -> Result<(), ControlError> {
        let (step, weight) = next.canary.map_or((0, strategy::FULL_WEIGHT), |c| (c.step, c.weight));
        let at = ctl.now_ms();
        let moved = CanaryStepRecord { service: next.name.clone(), revision: next.revision, step, weight, at };
        d.canary_steps.push(moved);
        let mut batch = Batch::default();
        batch.put_service(next).put_deployment(d);
        ctl.db.commit(batch).await?;
        ctl.routing.publish().await;
        ctl.reconciler.wake();
        let (svc, rev) = (&next.name, next.revision);
        let text = match next.canary {
            Some(c) => format!("{svc}@{rev} takes {}% of the requests (step {}/{steps})", c.weight, c.step),
            None => format!("{svc}@{rev} promoted: it takes all the requests; the old tasks leave"),
        };
        let kind = if next.canary.is_some() { "deploy.canary_step" } else { "deploy.canary_promoted" };
        ctl.events.event_full(
            kind,
            Level::Info,
            Some(&d.app),
            Some(svc),
            None,
            format!("deployment {}#{}: {text}", d.app, d.id),
        );
        Ok(())
    }

    /// Blue-green: gives the desired revision all the traffic once all its
    /// tasks are ready; the revision that had it stays on standby for the bake.
    async fn switch_when_ready(
        &self,
        ctl: &Arc<Controller>,
        d: &DeploymentRecord,
        s: &ServiceRecord,
        p: &ServiceProgress,
        keep_standby: bool,
    ) -> Result<bool, ControlError> {
        if p.ready < s.replicas as usize {
            return Ok(false);
        }
        let Some(record) = strategy::switched(s, keep_standby) else { return Ok(false) };
        let standby = record.standby;
        let mut batch = Batch::default();
        batch.put_service(&record);
        ctl.db.commit(batch).await?;
        ctl.routing.publish().await;
        ctl.reconciler.wake();
        let kept = match standby {
            Some(r) => format!("; @{r} kept on standby for the bake"),
            None => String::new(),
        };
        ctl.events.event_full(
            "deploy.switched",
            Level::Info,
            Some(&d.app),
            Some(&s.name),
            None,
            format!("deployment {}#{}: {}@{} has all the traffic{kept}", d.app, d.id, s.name, s.revision),
        );
        Ok(true)
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

    /// How many new tasks are not ready and what their last health check
    /// (or exit) said, for a deadline's failure reason.
    fn not_ready(&self, ctl: &Arc<Controller>, s: &ServiceRecord, p: &ServiceProgress, web: bool) -> String {
        let draining = ctl.reconciler.drains.snapshot();
        let tasks: Vec<TaskStatus> = ctl
            .driver
            .tasks()
            .into_iter()
            .filter(|t| t.spec.restart && t.spec.app == s.app && t.spec.service == s.name)
            .filter(|t| t.spec.revision == s.revision && !draining.contains(&t.spec.id))
            .filter(|t| !ctl.is_ready(t, web))
            .collect();
        let word = if web { "healthy" } else { "running" };
        let missing = (s.replicas as usize).saturating_sub(p.ready);
        let mut out = format!("{}@{}: {missing} of {} new tasks not {word}", s.name, s.revision, s.replicas);
        let checked = tasks.iter().find_map(|t| ctl.health.view(&t.spec.id)?.last_error);
        if let Some(e) = checked {
            out.push_str(&format!("; last health check: {e}"));
        } else if let Some(t) = tasks.iter().find(|t| t.last_exit.is_some()) {
            out.push_str(&format!("; last exit: {}", crate::controller::exit_reason(t)));
        } else if web {
            out.push_str("; no health check answered yet");
        }
        out
    }

    /// Why a new task counts as failed: crash-looping, or gone after it was ready.
    async fn new_tasks_failing(
        &self,
        ctl: &Arc<Controller>,
        d: &DeploymentRecord,
        w: &mut Watch,
    ) -> Result<Option<String>, ControlError> {
        let draining = ctl.reconciler.drains.snapshot();
        for t in ctl.driver.tasks() {
            if !t.spec.restart || draining.contains(&t.spec.id) || t.spec.app != d.app {
                continue;
            }
            let Some(c) = d.changes.iter().find(|c| c.service == t.spec.service && c.to == Some(t.spec.revision))
            else {
                continue;
            };
            let web = ctl.catalog.revision(&d.app, &c.service, t.spec.revision).await?.spec.is_web();
            let exit = if t.last_exit.is_some() {
                format!(" (last: {})", crate::controller::exit_reason(&t))
            } else {
                String::new()
            };
            if t.restarts >= CRASH_LOOP_RESTARTS {
                return Ok(Some(format!(
                    "task {} of {}@{} is crash-looping: restarted {} times{exit}",
                    t.spec.id, c.service, t.spec.revision, t.restarts
                )));
            }
            match w.ready_seen.get(&t.spec.id) {
                Some(&restarts) if t.restarts > restarts || t.state != TaskState::Running => {
                    return Ok(Some(format!(
                        "task {} of {}@{} exited after it was ready{exit}",
                        t.spec.id, c.service, t.spec.revision
                    )));
                }
                Some(_) => {}
                None => {
                    if ctl.is_ready(&t, web) {
                        w.ready_seen.insert(t.spec.id.clone(), t.restarts);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Answer counters of every task of the deployment's new revisions, by
    /// task, with its service.
    fn new_outcomes(&self, ctl: &Arc<Controller>, d: &DeploymentRecord) -> HashMap<String, (String, OutcomeCounts)> {
        let checked = ctl.health.backends();
        checked
            .into_iter()
            .filter_map(|(id, _, backend)| {
                let m = ctl.catalog.owner(&id)?;
                let new =
                    m.app == d.app && d.changes.iter().any(|c| c.service == m.service && c.to == Some(m.revision));
                new.then(|| (id, (m.service.clone(), backend.outcomes())))
            })
            .collect()
    }

    /// The longest bake of the new revisions; none when nothing ran before
    /// (there would be nothing to return to).
    async fn bake_time(&self, ctl: &Arc<Controller>, d: &DeploymentRecord) -> Result<Duration, ControlError> {
        let mut bake = Duration::ZERO;
        for c in &d.changes {
            if let (Some(to), Some(_)) = (c.to, c.from) {
                bake = bake.max(ctl.catalog.revision(&d.app, &c.service, to).await?.spec.deploy.bake);
            }
        }
        Ok(bake)
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

/// Where one service stands in the rollout step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RolloutVerdict {
    Settled,
    Waiting,
    /// Not settled when the deadline passed: the deployment fails.
    Late,
}

/// The rollout's decision for one service, at `now` (clock ms): settled,
/// still within the deadline counted from the step's start, or late.
fn rollout_verdict(
    p: &ServiceProgress,
    s: &ServiceRecord,
    step_started_at: u64,
    deadline: Duration,
    now: u64,
) -> RolloutVerdict {
    if p.settled(s) {
        RolloutVerdict::Settled
    } else if now >= wharf_runtime::deadline::ms_after(step_started_at, deadline) {
        RolloutVerdict::Late
    } else {
        RolloutVerdict::Waiting
    }
}

/// The bake has lasted its time (clock ms) without crossing a threshold.
fn bake_over(d: &DeploymentRecord, now: u64) -> bool {
    now >= d.bake_until.unwrap_or(0)
}

/// The answers a service's new tasks gave since the bake began (`now`
/// against `baseline`, by task); tasks that joined later count from zero.
fn bake_window(
    service: &str,
    now: &HashMap<String, (String, OutcomeCounts)>,
    baseline: &mut HashMap<String, OutcomeCounts>,
) -> OutcomeCounts {
    let mut window = OutcomeCounts::default();
    for (task, (s, counts)) in now {
        if s == service {
            window.add(&counts.since(baseline.entry(task.clone()).or_default()));
        }
    }
    window
}

/// Why a bake window fails its thresholds, if it does.
fn judge(policy: &DeployPolicy, w: &OutcomeCounts) -> Option<String> {
    if w.total < MIN_BAKE_ANSWERS {
        return None;
    }
    // Both sides in millionths, to compare without floating point.
    if w.errors * 1_000_000 > u64::from(policy.max_error_rate.per_million) * w.total {
        return Some(format!(
            "{} of {} answers were 5xx ({:.1}%, more than the {:.1}% allowed)",
            w.errors,
            w.total,
            w.errors as f64 * 100.0 / w.total as f64,
            f64::from(policy.max_error_rate.per_million) / 10_000.0
        ));
    }
    if let (Some(max), Some(p99)) = (policy.max_p99, w.p99()) {
        if p99 > max {
            return Some(format!(
                "p99 latency over {} answers was above {} (more than the {} allowed)",
                w.total,
                fmt_duration(p99.min(Duration::from_secs(3600))),
                fmt_duration(max)
            ));
        }
    }
    None
}

/// Release task ids: `APP-SERVICE-REV-release-DEPLOYMENT-xxxxx`.
fn release_prefix(app: &str, c: &ServiceChange, deployment: u64) -> String {
    format!("{app}-{}-{}-release-{deployment}-", c.service, c.to.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bake_judges_only_with_enough_answers() {
        let policy = DeployPolicy::default();
        let few = OutcomeCounts { total: 5, errors: 5, ..Default::default() };
        assert_eq!(judge(&policy, &few), None);
        let bad = OutcomeCounts { total: 100, errors: 6, ..Default::default() };
        assert!(judge(&policy, &bad).unwrap().contains("6 of 100"));
        let fine = OutcomeCounts { total: 100, errors: 5, ..Default::default() };
        assert_eq!(judge(&policy, &fine), None);
    }

    #[test]
    fn a_bake_judges_p99_latency_when_asked_to() {
        let mut slow = OutcomeCounts { total: 100, ..Default::default() };
        // 95 answers within 10 ms, 5 within 1 s: the p99 is in the 1 s bucket.
        let fast = wharf_proxy::LATENCY_BOUNDS_MS.iter().position(|b| *b == 10).unwrap();
        let second = wharf_proxy::LATENCY_BOUNDS_MS.iter().position(|b| *b == 1000).unwrap();
        slow.buckets[fast] = 95;
        slow.buckets[second] = 5;
        assert_eq!(judge(&DeployPolicy::default(), &slow), None, "no max_p99: latency is not judged");
        let strict = DeployPolicy { max_p99: Some(Duration::from_millis(500)), ..Default::default() };
        assert!(judge(&strict, &slow).unwrap().contains("p99 latency"), "{:?}", judge(&strict, &slow));
        let loose = DeployPolicy { max_p99: Some(Duration::from_secs(2)), ..Default::default() };
        assert_eq!(judge(&loose, &slow), None);
    }

    fn service(replicas: u32, live: Option<u64>) -> ServiceRecord {
        ServiceRecord { live, ..crate::strategy::first_record("a", "web", 4, replicas) }
    }

    /// A new task that never gets healthy: the rollout waits until the
    /// deadline (on the clock, from the step's start), then fails.
    #[test]
    fn a_rollout_fails_when_a_new_task_is_not_ready_by_the_deadline() {
        use crate::clock::{Clock, TestClock};
        let clock = TestClock::new(1_774_656_000_000);
        let started = clock.now_ms();
        let deadline = Duration::from_secs(120);
        let s = service(2, None);
        let one_missing = ServiceProgress { running: 2, ready: 1, ..Default::default() };
        let verdict = |p: &ServiceProgress| rollout_verdict(p, &s, started, deadline, clock.now_ms());
        assert_eq!(verdict(&one_missing), RolloutVerdict::Waiting);
        clock.advance(deadline - Duration::from_millis(1));
        assert_eq!(verdict(&one_missing), RolloutVerdict::Waiting);
        clock.advance(Duration::from_millis(1));
        assert_eq!(verdict(&one_missing), RolloutVerdict::Late);
        let all = ServiceProgress { running: 2, ready: 2, ..Default::default() };
        assert_eq!(verdict(&all), RolloutVerdict::Settled, "ready is ready, however late");
        let leftovers = ServiceProgress { old: 1, ..all };
        assert_eq!(verdict(&leftovers), RolloutVerdict::Late, "old tasks still running");
        let not_switched = service(2, Some(3));
        assert_eq!(
            rollout_verdict(&all, &not_switched, started, deadline, started),
            RolloutVerdict::Waiting,
            "blue-green: settled only once the traffic switched"
        );
    }

    /// The bake guard: answers counted from the bake's start, judged each
    /// tick, and the bake over once its time has passed on the clock.
    #[test]
    fn a_bake_rolls_back_on_a_5xx_ratio_counted_from_its_start() {
        use crate::clock::{Clock, TestClock};
        let clock = TestClock::new(1_774_656_000_000);
        let policy = DeployPolicy { bake: Duration::from_secs(60), ..Default::default() };
        let d = DeploymentRecord {
            bake_until: Some(wharf_runtime::deadline::ms_after(clock.now_ms(), policy.bake)),
            ..Default::default()
        };
        let counts = |total, errors| OutcomeCounts { total, errors, ..Default::default() };
        let tasks = |a: OutcomeCounts, b: Option<OutcomeCounts>| {
            let mut m = HashMap::from([("t1".to_string(), ("web".to_string(), a))]);
            m.insert("w1".into(), ("worker".into(), counts(1000, 1000)));
            if let Some(b) = b {
                m.insert("t2".into(), ("web".into(), b));
            }
            m
        };
        // t1 answered 50 errors before the bake began: they don't count.
        let mut baseline: HashMap<String, OutcomeCounts> =
            tasks(counts(100, 50), None).into_iter().map(|(id, (_, c))| (id, c)).collect();
        clock.advance(Duration::from_secs(20));
        let w = bake_window("web", &tasks(counts(160, 52), None), &mut baseline);
        assert_eq!((w.total, w.errors), (60, 2));
        assert_eq!(judge(&policy, &w), None);
        assert!(!bake_over(&d, clock.now_ms()));
        // t2 joins during the bake and fails: 2 + 5 of 60 + 40 is over 5 %.
        clock.advance(Duration::from_secs(20));
        let w = bake_window("web", &tasks(counts(160, 52), Some(counts(40, 5))), &mut baseline);
        assert_eq!((w.total, w.errors), (100, 7));
        let why = judge(&policy, &w).expect("the guard rolls back");
        assert!(why.starts_with("7 of 100 answers were 5xx"), "{why}");
        clock.advance(Duration::from_secs(20));
        assert!(bake_over(&d, clock.now_ms()), "over on the clock");
    }
}
