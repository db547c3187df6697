//! The steps that move traffic: new tasks start and become ready (rolling,
//! or a blue-green switch), each canary step, and the bake that watches the
//! new revision's answers; and what they look at to fail early.

use super::*;

impl Rollout {
    /// New tasks start and become ready; blue-green services switch once
    /// their whole new set is ready. Fails on the deadline, a crash loop, or a
    /// new task that exits after it was ready.
    pub(super) async fn step_rollout(
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
            let rev = ctl.catalog.revision(&app, &s.name, s.revision).await?;
            let policy = &rev.spec.deploy;
            if let Some(c) = s.canary {
                if let Some(why) = self.canary_step(ctl, d, w, &s, &p, policy).await? {
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
            let leave = policy.drain_timeout.saturating_add(rev.spec.stop_timeout);
            let verdict = rollout_verdict(&p, &s, d.step_started_at, policy.deadline, leave, ctl.now_ms());
            if verdict != RolloutVerdict::Settled {
                waiting.push(p.describe(&s));
            }
            if verdict == RolloutVerdict::Late {
                let web = rev.spec.is_web();
                let why = if p.ready < s.replicas as usize { self.not_ready(ctl, &s, &p, web) } else { p.describe(&s) };
                let only_draining = ServiceProgress { draining: 0, ..p }.settled(&s);
                return Ok(Next::Fail(if only_draining {
                    format!(
                        "tasks still draining {} after the {} deadline (drain_timeout + stop_timeout): {why}",
                        fmt_duration(leave),
                        fmt_duration(policy.deadline)
                    )
                } else {
                    format!("not ready within the {} deadline: {why}", fmt_duration(policy.deadline))
                }));
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
    pub(super) async fn step_bake(
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
    pub(super) async fn canary_step(
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
    pub(super) async fn switch_when_ready(
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

    /// How many new tasks are not ready and what their last health check
    /// (or exit) said, for a deadline's failure reason.
    pub(super) fn not_ready(&self, ctl: &Arc<Controller>, s: &ServiceRecord, p: &ServiceProgress, web: bool) -> String {
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
    pub(super) async fn new_tasks_failing(
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
    pub(super) fn new_outcomes(
        &self,
        ctl: &Arc<Controller>,
        d: &DeploymentRecord,
    ) -> HashMap<String, (String, OutcomeCounts)> {
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
    pub(super) async fn bake_time(
        &self,
        ctl: &Arc<Controller>,
        d: &DeploymentRecord,
    ) -> Result<Duration, ControlError> {
        let mut bake = Duration::ZERO;
        for c in &d.changes {
            if let (Some(to), Some(_)) = (c.to, c.from) {
                bake = bake.max(ctl.catalog.revision(&d.app, &c.service, to).await?.spec.deploy.bake);
            }
        }
        Ok(bake)
    }
}
