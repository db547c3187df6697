//! The release step: each changed service's release command (migrations)
//! runs once, as a one-off task of its new revision, before traffic moves.

use super::*;

impl Rollout {
    /// Runs each changed service's release command, one at a time, as a
    /// one-off task of its new revision; then moves the services.
    pub(super) async fn step_release(
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
    pub(super) fn last_output(&self, ctl: &Arc<Controller>, task: &str) -> String {
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

    pub(super) async fn release_resume(&self, ctl: &Arc<Controller>, d: &DeploymentRecord, service: &str) {
        let paused = ctl.db.pauses().await.unwrap_or_default();
        if paused.iter().any(|p| p.app == d.app && p.service.as_deref() == Some(service)) {
            if let Err(e) = ctl.resume(&d.app, Some(service)).await {
                tracing::warn!("cannot resume {}/{service} after its release: {e}", d.app);
            }
        }
    }
}

/// Release task ids: `APP-SERVICE-REV-release-DEPLOYMENT-xxxxx`.
pub(super) fn release_prefix(app: &str, c: &ServiceChange, deployment: u64) -> String {
    format!("{app}-{}-{}-release-{deployment}-", c.service, c.to.unwrap_or(0))
}
