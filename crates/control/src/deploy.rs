//! `wharf deploy`: validate a release, turn it into revisions and desired
//! state in one atomic write, then watch the new revisions come up.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wharf_api_types::{DeploymentReport, ServiceReport};
use wharf_logs::Level;
use wharf_spec::{Service, Spec, SpecError};
use wharf_store::{
    AppRecord, Batch, DeploymentRecord, DeploymentState, DeploymentStep, JobRecord, ReleaseRecord, Revision,
    ServiceChange, ServiceRecord,
};

use crate::component::BackgroundLoop;
use crate::controller::{ControlError, Controller};
use crate::error::{Busy, InProgress, Invalid, Unavailable};
use crate::plan::{describe_jobs, job_changes};
use crate::release::{code_hash, ReleaseError, RELEASES_KEPT};
use crate::scale::deployed_replicas;
use crate::strategy;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("wharf.toml is invalid:\n{0}")]
    Invalid(SpecError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<wharf_store::StoreError> for DeployError {
    fn from(e: wharf_store::StoreError) -> Self {
        DeployError::Control(e.into())
    }
}

/// What makes a revision: the service's spec (less its replica count, which
/// is scaling, not a change), the release's code, and the digests of the
/// values of the secrets it takes (`secrets`: name → digest; never a value).
pub(crate) fn revision_digest(spec: &Service, code: &str, secrets: &BTreeMap<String, String>) -> String {
    let mut s = spec.clone();
    s.replicas = 0;
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&s).expect("specs serialize"));
    h.update(code.as_bytes());
    // Nothing is added without secrets: earlier revisions keep their digests.
    for (name, digest) in secrets {
        h.update(format!("\0secret {name}={digest}").as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Each route's certificate files load, belong together, cover its host
/// and have not expired.
async fn check_certificates(spec: &Spec, now_secs: u64) -> Result<(), ControlError> {
    let routes: Vec<(String, String, wharf_spec::TlsFiles)> = spec
        .routes
        .iter()
        .filter_map(|r| Some((format!("{}{}", r.host.as_deref()?, r.path), r.host.clone()?, r.tls.clone()?)))
        .collect();
    if routes.is_empty() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || {
        for (route, host, files) in routes {
            let checked = wharf_proxy::CertPair::load(files.cert.as_ref(), files.key.as_ref())
                .and_then(|pair| pair.check(&host, now_secs));
            if let Err(e) = checked {
                return Err(ControlError::from(Invalid::Certificate { route, why: e.to_string() }));
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| ControlError::from(Unavailable::from(e)))?
}

/// What a deploy changes in its app's services.
struct ServicePlan {
    changes: Vec<ServiceChange>,
    services: Vec<ServiceReport>,
    /// The services' records as the deployment starts.
    records: Vec<ServiceRecord>,
    /// A replica count changed (by the file, or back from a scaling).
    scaled: bool,
    /// A changed service has a release command: it runs before anything moves.
    release_first: bool,
}

impl Controller {
    /// Accepts a release archive, read with its wharf.toml's `[env.ENV]`
    /// overlay when `env` is given. Everything is validated before anything
    /// changes; a rejected deploy leaves the running app untouched.
    pub async fn deploy(
        self: &Arc<Self>,
        archive: Vec<u8>,
        env: Option<&str>,
    ) -> Result<DeploymentReport, DeployError> {
        let archive = Arc::new(archive);
        let releases = self.releases.clone();
        let a = archive.clone();
        let (staging, hash) = tokio::task::spawn_blocking(move || releases.stage(&a))
            .await
            .map_err(|e| ControlError::from(Unavailable::from(e)))??;
        let parsed = parse_release(&staging, env);
        // A reference to a secret the app does not have is refused like an invalid file.
        let parsed = parsed.and_then(|spec| match self.secrets.missing(&spec) {
            Some(e) => Err(e),
            None => Ok(spec),
        });
        let spec = match parsed {
            Ok(spec) => spec,
            Err(e) => {
                self.releases.discard(&staging);
                let first =
                    e.diagnostics().first().map(|d| format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message));
                self.events.event_full(
                    "deploy.rejected",
                    Level::Error,
                    None,
                    None,
                    None,
                    format!("deploy rejected, nothing changed: {}", first.unwrap_or_else(|| e.to_string())),
                );
                return Err(DeployError::Invalid(e));
            }
        };
        // An account this server cannot run tasks as would only fail at the
        // deadline: refuse the deploy now, with nothing changed.
        for (name, svc) in &spec.services {
            if let Err(e) = self.task_user_for(name, svc) {
                self.releases.discard(&staging);
                return Err(e.into());
            }
        }
        // A certificate that cannot be served would only show at the first
        // HTTPS request: refuse the deploy now.
        if let Err(e) = check_certificates(&spec, self.now_ms() / 1000).await {
            self.releases.discard(&staging);
            return Err(e.into());
        }
        let a = archive.clone();
        let code = tokio::task::spawn_blocking(move || code_hash(&a))
            .await
            .map_err(|e| ControlError::from(Unavailable::from(e)))??;
        let _guard = self.rollout.lock().await;
        let source = std::fs::read_to_string(staging.join(wharf_spec::FILE_NAME)).unwrap_or_default();
        self.releases.commit(&spec.app, &staging, &hash, &archive)?;
        let report = self.record_deploy(&spec, env, &hash, &code, source, archive.len() as u64).await?;
        drop(_guard);
        self.reconciler.wake();
        self.routing.wake();
        // A new revision may bring or drop a scale policy.
        self.autoscaler.wake();
        if report.state == wharf_api_types::DeploymentState::InProgress {
            self.rollout.spawn_deployment(self, &spec.app, report.deployment);
        }
        let this = self.clone();
        let app = spec.app.clone();
        tokio::spawn(async move {
            if let Err(e) = this.collect_releases(&app).await {
                tracing::warn!("release cleanup of {app} failed: {e}");
            }
        });
        Ok(report)
    }

    async fn record_deploy(
        &self,
        spec: &Spec,
        env: Option<&str>,
        hash: &str,
        code: &str,
        source: String,
        size: u64,
    ) -> Result<DeploymentReport, DeployError> {
        let app = &spec.app;
        self.check_not_destroying(app).await?;
        let old_app = self.db.app(app).await?;
        let old: BTreeMap<String, ServiceRecord> =
            self.db.services(Some(app)).await?.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut batch = Batch::default();
        let ServicePlan { changes, services, records, scaled, release_first } =
            self.plan_services(spec, hash, code, &old, &mut batch).await?;
        let routes_changed = old_app.as_ref().is_none_or(|a| a.routes != spec.routes);
        let jobs = job_changes(old_app.as_ref().map_or(&[], |a| a.jobs()), &spec.jobs);
        let state = if changes.is_empty() && !scaled && !routes_changed && jobs.is_empty() {
            DeploymentState::Unchanged
        } else {
            DeploymentState::InProgress
        };
        let history = self.db.deployments(app).await?;
        if let Some(running) = history.last().filter(|d| d.state == DeploymentState::InProgress) {
            if state != DeploymentState::Unchanged {
                return Err(ControlError::from(Busy::Deploy(InProgress::of(running))).into());
            }
        }
        // With a release command, services move only once it has succeeded.
        let step = if release_first { DeploymentStep::ReleaseCommand } else { DeploymentStep::Rollout };
        for r in &records {
            let moved = changes.iter().any(|c| c.service == r.name && c.to.is_some());
            if step == DeploymentStep::Rollout || !moved {
                batch.put_service(r);
            }
        }
        let id = history.last().map_or(1, |d| d.id + 1);
        let mut message = describe_changes(&services, state);
        if !jobs.is_empty() {
            message = format!("{message}; {}", describe_jobs(&jobs));
        }
        let now = self.now_ms();
        let deployment = DeploymentRecord {
            app: app.clone(),
            id,
            release: hash.to_string(),
            changes,
            state,
            message: message.clone(),
            started_at: now,
            finished_at: (state == DeploymentState::Unchanged).then_some(now),
            step,
            step_started_at: now,
            previous_app: old_app.clone(),
            env: env.map(str::to_string),
            ..Default::default()
        };
        batch
            .put_app(&AppRecord {
                name: app.clone(),
                release: hash.to_string(),
                routes: spec.routes.clone(),
                source,
                deployed_at: now,
                jobs: Some(
                    spec.jobs
                        .values()
                        .map(|job| JobRecord { job: job.clone(), release: hash.to_string(), deployment: Some(id) })
                        .collect(),
                ),
            })
            .put_release(&ReleaseRecord { app: app.clone(), hash: hash.to_string(), size, created_at: now })
            .put_deployment(&deployment);
        self.db.commit(batch).await?;
        self.events.event_full(
            "deploy.started",
            Level::Info,
            Some(app),
            None,
            None,
            format!("deployment {app}#{id}: {message}"),
        );
        Ok(DeploymentReport {
            app: app.clone(),
            deployment: id,
            release: hash.to_string(),
            state: crate::wire::deployment_state(state),
            services,
            message,
        })
    }

    /// Each service's new revision (stored when its spec or code changed),
    /// its record as the deployment starts, and its line in the report;
    /// services no longer declared are removed.
    async fn plan_services(
        &self,
        spec: &Spec,
        hash: &str,
        code: &str,
        old: &BTreeMap<String, ServiceRecord>,
        batch: &mut Batch,
    ) -> Result<ServicePlan, DeployError> {
        let app = &spec.app;
        let mut changes = Vec::new();
        let mut services = Vec::new();
        let mut records = Vec::new();
        let mut scaled = false;
        let mut release_first = false;
        for (name, svc) in &spec.services {
            let secrets = self.secrets.digests(app, svc);
            let digest = revision_digest(svc, code, &secrets);
            let previous = old.get(name);
            let current = match previous {
                Some(p) => self.db.revision(app, name, p.revision).await?,
                None => None,
            };
            let declared_before =
                previous.and_then(|p| p.declared_replicas).or(current.as_ref().map(|c| c.spec.replicas));
            let replicas = deployed_replicas(previous, declared_before, svc.replicas);
            let number = match current {
                Some(cur) if cur.digest == digest => cur.number,
                _ => {
                    let last = self.db.revisions(app, name).await?.last().map_or(0, |r| r.number);
                    let rev = Revision {
                        app: app.clone(),
                        service: name.clone(),
                        number: last + 1,
                        spec: svc.clone(),
                        release: hash.to_string(),
                        code: code.to_string(),
                        digest,
                        secrets,
                        created_at: self.now_ms(),
                    };
                    batch.put_revision(&rev);
                    release_first |= svc.release_command.is_some();
                    changes.push(ServiceChange {
                        service: name.clone(),
                        from: previous.map(|p| p.revision),
                        to: Some(rev.number),
                        from_replicas: previous.map_or(0, |p| p.replicas),
                        replicas,
                    });
                    rev.number
                }
            };
            scaled |= previous.is_some_and(|p| p.replicas != replicas);
            let mut record = match previous {
                Some(p) => strategy::moving(p, number, replicas, svc.deploy.strategy),
                None => strategy::first_record(app, name, number, svc.replicas),
            };
            scaled |= previous.is_some_and(|p| p.declared_replicas != Some(svc.replicas));
            record.declared_replicas = Some(svc.replicas);
            records.push(record);
            services.push(ServiceReport {
                name: name.clone(),
                kind: if svc.is_web() { "web" } else { "worker" }.into(),
                revision: Some(number),
                previous: previous.map(|p| p.revision),
                changed: previous.is_none_or(|p| p.revision != number),
                replicas,
            });
        }
        for (name, p) in old {
            if !spec.services.contains_key(name) {
                batch.delete_service(app, name);
                changes.push(ServiceChange {
                    service: name.clone(),
                    from: Some(p.revision),
                    to: None,
                    from_replicas: p.replicas,
                    replicas: 0,
                });
                services.push(ServiceReport {
                    name: name.clone(),
                    kind: "removed".into(),
                    revision: None,
                    previous: Some(p.revision),
                    changed: true,
                    replicas: 0,
                });
            }
        }
        Ok(ServicePlan { changes, services, records, scaled, release_first })
    }

    /// After a restart, deployments still in progress are driven again from
    /// the step their record says.
    pub(crate) async fn resume_deployments(self: &Arc<Self>) -> Result<(), ControlError> {
        for app in self.db.apps().await? {
            if let Some(d) = self.db.deployments(&app.name).await?.last() {
                if d.state == DeploymentState::InProgress {
                    self.events.event_full(
                        "deploy.resumed",
                        Level::Info,
                        Some(&app.name),
                        None,
                        None,
                        format!("deployment {}#{} resumed after a server restart ({:?} step)", app.name, d.id, d.step),
                    );
                    self.rollout.spawn_deployment(self, &app.name, d.id);
                }
            }
        }
        Ok(())
    }

    /// Keeps the newest releases of an app; deletes older ones that no
    /// service and no task still uses.
    async fn collect_releases(&self, app: &str) -> Result<(), ControlError> {
        let _guard = self.rollout.lock().await;
        let mut releases = self.db.releases(app).await?;
        if releases.len() <= RELEASES_KEPT {
            return Ok(());
        }
        releases.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        let mut in_use = std::collections::HashSet::new();
        for s in self.db.services(Some(app)).await? {
            in_use.insert(self.catalog.revision(app, &s.name, s.revision).await?.release.clone());
        }
        for t in self.driver.tasks().iter().filter(|t| t.spec.app == app) {
            if let Ok(r) = self.catalog.revision(app, &t.spec.service, t.spec.revision).await {
                in_use.insert(r.release.clone());
            }
        }
        for r in releases.into_iter().skip(RELEASES_KEPT) {
            if in_use.contains(&r.hash) {
                continue;
            }
            self.db.delete_release(app, &r.hash).await?;
            self.releases.delete(app, &r.hash);
            self.events.event_full(
                "release.deleted",
                Level::Info,
                Some(app),
                None,
                None,
                format!("deleted old release {}", &r.hash[..12]),
            );
        }
        Ok(())
    }
}

/// Reads a staged release's wharf.toml (with its `[env.ENV]` overlay when
/// `env` is given), under its plain name so errors point at the user's
/// file, not at the staging directory.
///
/// Only a regular file of at most 1 MiB is read (an uploaded symlink to
/// /dev/zero or a FIFO must not hang or exhaust the server).
pub(crate) fn parse_release(staging: &std::path::Path, env: Option<&str>) -> Result<Spec, SpecError> {
    let path = staging.join(wharf_spec::FILE_NAME);
    let whole = |message: String, hint: &str| {
        SpecError::new(vec![wharf_spec::Diagnostic {
            file: wharf_spec::FILE_NAME.into(),
            line: 0,
            column: 0,
            message,
            hint: Some(hint.into()),
        }])
    };
    match std::fs::symlink_metadata(&path) {
        Err(e) => Err(whole(
            format!("the release has no readable wharf.toml at its top level ({e})"),
            "deploy the directory that holds wharf.toml",
        )),
        Ok(md) if md.file_type().is_symlink() => {
            Err(whole("the release's wharf.toml is a symbolic link".into(), "deploy wharf.toml as a plain file"))
        }
        Ok(_) => {
            let text = wharf_spec::read_file(&path, wharf_spec::FILE_NAME)?;
            wharf_spec::parse_env(&text, wharf_spec::FILE_NAME, env)
        }
    }
}

fn describe_changes(services: &[ServiceReport], state: DeploymentState) -> String {
    if state == DeploymentState::Unchanged {
        return "nothing changed".into();
    }
    let parts: Vec<String> = services
        .iter()
        .map(|s| match (s.previous, s.revision) {
            (None, Some(n)) => format!("{}@{n} new", s.name),
            (Some(p), Some(n)) if p != n => format!("{}@{p} → @{n}", s.name),
            (Some(_), Some(n)) => format!("{}@{n} unchanged", s.name),
            (_, None) => format!("{} removed", s.name),
        })
        .collect();
    parts.join(", ")
}
