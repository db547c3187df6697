//! `wharf plan`: what a deploy of a release would change, computed exactly
//! as a deploy would, without writing anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use wharf_api_types::{JobChanges, Plan, ServicePlan};
use wharf_spec::Route;
use wharf_store::JobRecord;

use crate::controller::{ControlError, Controller};
use crate::deploy::{parse_release, revision_digest, DeployError};
use crate::error::Unavailable;
use crate::release::code_hash;
use crate::rollback::spec_changes;

/// Scheduled jobs a deploy adds, changes or removes: between the jobs the
/// app runs now (`old`, empty for a new app) and the new spec's.
pub(crate) fn job_changes(old: &[JobRecord], new: &BTreeMap<String, wharf_spec::Job>) -> JobChanges {
    let old: BTreeMap<&str, &wharf_spec::Job> = old.iter().map(|r| (r.job.name.as_str(), &r.job)).collect();
    JobChanges {
        added: new.keys().filter(|k| !old.contains_key(k.as_str())).cloned().collect(),
        changed: new
            .iter()
            .filter(|(k, j)| old.get(k.as_str()).is_some_and(|o| *o != *j))
            .map(|(k, _)| k.clone())
            .collect(),
        removed: old.keys().filter(|k| !new.contains_key(**k)).map(|k| k.to_string()).collect(),
    }
}

/// "jobs: +digest, ~cleanup, -old" or "".
pub(crate) fn describe_jobs(jobs: &JobChanges) -> String {
    let parts: Vec<String> = (jobs.added.iter().map(|j| format!("+{j}")))
        .chain(jobs.changed.iter().map(|j| format!("~{j}")))
        .chain(jobs.removed.iter().map(|j| format!("-{j}")))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("jobs {}", parts.join(" "))
    }
}

fn route_text(r: &Route) -> String {
    format!("{}{} → {}", r.host.as_deref().unwrap_or(""), r.path, r.service)
}

impl Controller {
    /// What deploying `archive` (read for `env`, as [`Controller::deploy`] does) would change.
    pub async fn plan(self: &Arc<Self>, archive: Vec<u8>, env: Option<&str>) -> Result<Plan, DeployError> {
        let releases = self.releases.clone();
        let archive = Arc::new(archive);
        let a = archive.clone();
        let (staging, _hash) = tokio::task::spawn_blocking(move || releases.stage(&a))
            .await
            .map_err(|e| ControlError::from(Unavailable::from(e)))??;
        let parsed = parse_release(&staging, env);
        self.releases.discard(&staging);
        let spec = parsed.map_err(DeployError::Invalid)?;
        if let Some(e) = self.secrets.missing(&spec) {
            return Err(DeployError::Invalid(e));
        }
        let a = archive.clone();
        let code = tokio::task::spawn_blocking(move || code_hash(&a))
            .await
            .map_err(|e| ControlError::from(Unavailable::from(e)))??;
        let app = &spec.app;
        let old: BTreeMap<String, wharf_store::ServiceRecord> =
            self.db.services(Some(app)).await?.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut services = Vec::new();
        for (name, svc) in &spec.services {
            let Some(cur) = old.get(name) else {
                services.push(ServicePlan {
                    name: name.clone(),
                    action: "new".into(),
                    revision: None,
                    next_revision: Some(self.db.revisions(app, name).await?.last().map_or(1, |r| r.number + 1)),
                    replicas: Some((0, svc.replicas)),
                    changes: vec![],
                });
                continue;
            };
            let rev = self.catalog.revision(app, name, cur.revision).await?;
            let secrets = self.secrets.digests(app, svc);
            let same = rev.digest == revision_digest(svc, &code, &secrets);
            let mut changes = if same { vec![] } else { spec_changes(&rev.spec, svc) };
            if !same {
                changes.extend(crate::secrets::secret_changes(&rev.secrets, &secrets));
            }
            if !same && rev.code != code {
                changes.insert(0, "code".into());
            }
            let declared_before = cur.declared_replicas.unwrap_or(rev.spec.replicas);
            let replicas = crate::scale::deployed_replicas(Some(cur), Some(declared_before), svc.replicas);
            let scaled = cur.replicas != replicas;
            let last = self.db.revisions(app, name).await?.last().map_or(0, |r| r.number);
            services.push(ServicePlan {
                name: name.clone(),
                action: match (same, scaled) {
                    (false, _) => "changed",
                    (true, true) => "scaled",
                    (true, false) => "unchanged",
                }
                .into(),
                revision: Some(cur.revision),
                next_revision: (!same).then_some(last + 1),
                replicas: scaled.then_some((cur.replicas, replicas)),
                changes,
            });
        }
        for (name, cur) in &old {
            if !spec.services.contains_key(name) {
                services.push(ServicePlan {
                    name: name.clone(),
                    action: "removed".into(),
                    revision: Some(cur.revision),
                    next_revision: None,
                    replicas: Some((cur.replicas, 0)),
                    changes: vec![],
                });
            }
        }
        let old_app = self.db.app(app).await?;
        let jobs = job_changes(old_app.as_ref().map_or(&[], |a| a.jobs()), &spec.jobs);
        let old_routes: Vec<String> = old_app.map(|a| a.routes.iter().map(route_text).collect()).unwrap_or_default();
        let new_routes: Vec<String> = spec.routes.iter().map(route_text).collect();
        let routes_added: Vec<String> = new_routes.iter().filter(|r| !old_routes.contains(r)).cloned().collect();
        let routes_removed: Vec<String> = old_routes.iter().filter(|r| !new_routes.contains(r)).cloned().collect();
        let unchanged = routes_added.is_empty()
            && routes_removed.is_empty()
            && jobs.is_empty()
            && services.iter().all(|s| s.action == "unchanged");
        Ok(Plan { app: app.clone(), services, routes_added, routes_removed, jobs, unchanged })
    }
}
