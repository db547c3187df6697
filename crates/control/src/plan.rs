//! `wharf plan`: what a deploy of a release would change, computed exactly
//! as a deploy would, without writing anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use wharf_spec::Route;

use crate::controller::{ControlError, Controller};
use crate::deploy::{parse_release, revision_digest, DeployError};
use crate::release::code_hash;
use crate::rollback::spec_changes;

#[derive(Debug, Serialize)]
pub struct ServicePlan {
    pub name: String,
    /// "new", "changed", "scaled", "unchanged" or "removed".
    pub action: &'static str,
    pub revision: Option<u64>,
    /// The revision a deploy would create, when it would create one.
    pub next_revision: Option<u64>,
    pub replicas: Option<(u32, u32)>,
    pub changes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub app: String,
    pub services: Vec<ServicePlan>,
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    /// Nothing would change: a deploy would be a no-op.
    pub unchanged: bool,
}

fn route_text(r: &Route) -> String {
    format!("{}{} → {}", r.host.as_deref().unwrap_or(""), r.path, r.service)
}

impl Controller {
    pub async fn plan(self: &Arc<Self>, archive: Vec<u8>) -> Result<Plan, DeployError> {
        let releases = self.releases.clone();
        let archive = Arc::new(archive);
        let a = archive.clone();
        let (staging, _hash) = tokio::task::spawn_blocking(move || releases.stage(&a))
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))??;
        let parsed = parse_release(&staging);
        self.releases.discard(&staging);
        let spec = parsed.map_err(DeployError::Invalid)?;
        let a = archive.clone();
        let code = tokio::task::spawn_blocking(move || code_hash(&a))
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))??;
        let app = &spec.app;
        let old: BTreeMap<String, wharf_store::ServiceRecord> =
            self.db.services(Some(app)).await?.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut services = Vec::new();
        for (name, svc) in &spec.services {
            let Some(cur) = old.get(name) else {
                services.push(ServicePlan {
                    name: name.clone(),
                    action: "new",
                    revision: None,
                    next_revision: Some(self.db.revisions(app, name).await?.last().map_or(1, |r| r.number + 1)),
                    replicas: Some((0, svc.replicas)),
                    changes: vec![],
                });
                continue;
            };
            let rev = self.revision(app, name, cur.revision).await?;
            let same = rev.digest == revision_digest(svc, &code);
            let mut changes = if same { vec![] } else { spec_changes(&rev.spec, svc) };
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
                },
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
                    action: "removed",
                    revision: Some(cur.revision),
                    next_revision: None,
                    replicas: Some((cur.replicas, 0)),
                    changes: vec![],
                });
            }
        }
        let old_routes: Vec<String> =
            self.db.app(app).await?.map(|a| a.routes.iter().map(route_text).collect()).unwrap_or_default();
        let new_routes: Vec<String> = spec.routes.iter().map(route_text).collect();
        let routes_added: Vec<String> = new_routes.iter().filter(|r| !old_routes.contains(r)).cloned().collect();
        let routes_removed: Vec<String> = old_routes.iter().filter(|r| !new_routes.contains(r)).cloned().collect();
        let unchanged =
            routes_added.is_empty() && routes_removed.is_empty() && services.iter().all(|s| s.action == "unchanged");
        Ok(Plan { app: app.clone(), services, routes_added, routes_removed, unchanged })
    }
}
