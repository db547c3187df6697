//! `wharf destroy APP`: removes an app. The intent is stored first, in the
//! same write that removes the app's record (so its routes and jobs) and its
//! services, so the reconciler drains and stops its tasks as it does for any
//! removed service, and a server killed in the middle finishes the job after
//! its restart. The history (revisions, deployments, job runs...) goes last.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_api_types::DestroyReport;
use wharf_logs::Level;
use wharf_store::{Batch, DeploymentState, DestroyRecord};

use crate::component::BackgroundLoop;
use crate::controller::{ControlError, Controller};
use crate::error::{Busy, InProgress, Invalid, NotFound, Unavailable};

/// How long a destroy waits for a deployment driver to notice and let go.
const DRIVER_LET_GO: Duration = Duration::from_secs(30);
/// How long a destroy waits for the app's tasks to drain and stop before it
/// reports them still stopping (it carries on in the background).
const TASKS_GONE: Duration = Duration::from_secs(600);

/// Apps being destroyed now: nothing may change them, their deployment
/// drivers let go. The store keeps the destroy itself, for a restart.
#[derive(Default)]
pub(crate) struct Destroying(Mutex<HashSet<String>>);

impl Destroying {
    fn begin(&self, app: &str) {
        self.0.lock().unwrap().insert(app.to_string());
    }

    fn end(&self, app: &str) {
        self.0.lock().unwrap().remove(app);
    }

    pub(crate) fn contains(&self, app: &str) -> bool {
        self.0.lock().unwrap().contains(app)
    }
}

impl Controller {
    /// Removes `app`: stops its tasks (draining them), removes its routes,
    /// services, jobs, deployments and revisions; keeps its releases unless
    /// `purge`. Refused while a deployment runs unless `force` (which aborts
    /// it where it stands). Answers once the app is gone.
    pub async fn destroy(self: &Arc<Self>, app: &str, purge: bool, force: bool) -> Result<DestroyReport, ControlError> {
        // The name becomes store keys and a directory to delete: only real app names.
        let valid = app.len() <= 40
            && app.starts_with(|c: char| c.is_ascii_lowercase())
            && app.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(Invalid::AppName { app: app.to_string() }.into());
        }
        let guard = self.rollout.lock().await;
        if let Some(r) = self.db.destroy(app).await? {
            // Already under way (asked twice, or resumed after a restart): wait for it.
            drop(guard);
            self.destroying.begin(app);
            return self.finish_destroy(&r, None, 0).await;
        }
        let record = self.db.app(app).await?;
        let services = self.db.services(Some(app)).await?;
        if record.is_none() && services.is_empty() {
            return Err(NotFound::App { app: app.to_string() }.into());
        }
        let mut running = self.db.deployments(app).await?.pop().filter(|d| d.state == DeploymentState::InProgress);
        if let Some(d) = &running {
            if !force {
                return Err(Busy::Destroy(InProgress::of(d)).into());
            }
        }
        // The deployment's driver lets go before anything is written, so it
        // cannot write its services back behind the destroy.
        self.destroying.begin(app);
        if let Some(d) = &running {
            let until = self.clock.instant() + DRIVER_LET_GO;
            while self.rollout.is_driving(app, d.id) && self.clock.instant() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let tasks = self.driver.tasks().iter().filter(|t| t.spec.app == app).count();
        let intent = DestroyRecord {
            app: app.to_string(),
            purge,
            started_at: self.now_ms(),
            services: services.iter().map(|s| s.name.clone()).collect(),
        };
        let mut batch = Batch::default();
        batch.put_destroy(&intent).delete_app(app);
        for s in &services {
            batch.delete_service(app, &s.name);
        }
        if let Some(d) = running.as_mut() {
            d.state = DeploymentState::Failed;
            d.finished_at = Some(self.now_ms());
            d.reason = Some("aborted: the app is being destroyed (`wharf destroy --force`)".into());
            batch.put_deployment(d);
        }
        if let Err(e) = self.db.commit(batch).await {
            self.destroying.end(app);
            return Err(e.into());
        }
        drop(guard);
        self.events.event_full(
            "app.destroying",
            Level::Warn,
            Some(app),
            None,
            None,
            format!(
                "destroying app {app}: stopping {tasks} tasks{}{}",
                running.as_ref().map_or_else(String::new, |d| format!(", deployment #{} aborted", d.id)),
                if purge { "; its releases will be deleted" } else { "" }
            ),
        );
        self.routing.publish().await;
        self.reconciler.wake();
        self.finish_destroy(&intent, running.map(|d| d.id), tasks).await
    }

    /// After a restart: destroys that were under way carry on.
    pub(crate) fn resume_destroys(self: &Arc<Self>, pending: Vec<DestroyRecord>) {
        for r in pending {
            self.destroying.begin(&r.app);
            self.events.event_full(
                "app.destroying",
                Level::Info,
                Some(&r.app),
                None,
                None,
                format!("destroy of app {} resumed after a server restart", r.app),
            );
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.finish_destroy(&r, None, 0).await {
                    tracing::warn!("destroy of {} did not finish: {e}", r.app);
                }
            });
        }
    }

    /// Waits until the app's tasks are gone (one-offs are stopped here, the
    /// services' tasks by the reconciler), then deletes its history, and its
    /// releases when asked. The intent record goes last, in the same write.
    /// Runs in a task of its own so a caller that hangs up doesn't stop it.
    async fn finish_destroy(
        self: &Arc<Self>,
        r: &DestroyRecord,
        aborted: Option<u64>,
        tasks: usize,
    ) -> Result<DestroyReport, ControlError> {
        let this = self.clone();
        let r = r.clone();
        tokio::spawn(async move { this.finish_destroy_now(r, aborted, tasks).await })
            .await
            .map_err(Unavailable::DestroyStopped)?
    }

    async fn finish_destroy_now(
        self: &Arc<Self>,
        r: DestroyRecord,
        aborted: Option<u64>,
        tasks: usize,
    ) -> Result<DestroyReport, ControlError> {
        let app = r.app.as_str();
        for t in self.driver.tasks().into_iter().filter(|t| t.spec.app == app && !t.spec.restart) {
            let _ = self.driver.stop(&t.spec.id).await;
        }
        let until = self.clock.instant() + TASKS_GONE;
        loop {
            let left = self.driver.tasks().iter().filter(|t| t.spec.app == app).count();
            if left == 0 {
                break;
            }
            if self.clock.instant() >= until {
                return Err(Unavailable::StillStopping { app: app.to_string(), left }.into());
            }
            self.reconciler.wake();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if r.purge {
            self.releases
                .delete_app(app)
                .map_err(|source| Unavailable::DeleteReleases { app: app.to_string(), source })?;
        }
        let _guard = self.rollout.lock().await;
        let mut batch = Batch::default();
        self.db.delete_app_history(&mut batch, app, r.purge).await?;
        for s in self.db.services(Some(app)).await? {
            batch.delete_service(app, &s.name);
        }
        batch.delete_app(app).delete_destroy(app);
        self.db.commit(batch).await?;
        let releases_kept = if r.purge { 0 } else { self.db.releases(app).await?.len() };
        drop(_guard);
        self.forget_app(app);
        self.routing.publish().await;
        self.events.event_full(
            "app.destroyed",
            Level::Warn,
            Some(app),
            None,
            None,
            format!(
                "app {app} destroyed{}",
                if r.purge { " with its releases".to_string() } else { format!("; {releases_kept} releases kept") }
            ),
        );
        Ok(DestroyReport {
            app: app.to_string(),
            services: r.services.clone(),
            tasks_stopped: tasks,
            aborted_deployment: aborted,
            purged: r.purge,
            releases_kept,
        })
    }

    /// Drops what the controller remembers about an app, so a new app of
    /// the same name starts from scratch (its revision 1 is not the old one).
    fn forget_app(&self, app: &str) {
        self.catalog.forget_app(app);
        self.reconciler.forget_app(app);
        self.autoscaler.forget_app(app);
        self.pauses.release_app(app);
        self.destroying.end(app);
    }

    /// Refuses to change an app that is being destroyed.
    pub(crate) async fn check_not_destroying(&self, app: &str) -> Result<(), ControlError> {
        if self.destroying.contains(app) || self.db.destroy(app).await?.is_some() {
            return Err(Busy::Destroying { app: app.to_string() }.into());
        }
        Ok(())
    }
}
