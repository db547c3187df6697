//! Scaling by hand (`wharf scale`): the replica count of a service, kept in
//! its record until wharf.toml declares a different one.

use std::sync::Arc;

use wharf_logs::Level;
use wharf_store::{Batch, DeploymentState, ServiceRecord};

use crate::component::BackgroundLoop;
use crate::controller::{ControlError, Controller};
use crate::error::{Busy, InProgress, Invalid};

/// Most replicas a service may have (as wharf.toml allows; see its doc for why).
pub const MAX_REPLICAS: u32 = wharf_spec::MAX_REPLICAS;

/// The replicas a deploy asks for: wharf.toml's `replicas` when it differs
/// from what the running revision declared, else the count the service runs
/// at now (set by `wharf scale` or the autoscaler), so a deploy doesn't undo
/// a scaling nobody wrote into the file.
pub(crate) fn deployed_replicas(current: Option<&ServiceRecord>, declared_before: Option<u32>, declared: u32) -> u32 {
    match current {
        Some(cur) if declared_before == Some(declared) => cur.replicas,
        _ => declared,
    }
}

impl Controller {
    /// Sets a service's replicas. Refused while a deployment of its app runs
    /// (it owns the replica counts until it ends).
    pub async fn scale(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        replicas: u32,
        why: &str,
    ) -> Result<ServiceRecord, ControlError> {
        if replicas > MAX_REPLICAS {
            return Err(Invalid::Replicas { service: service.to_string(), replicas, max: MAX_REPLICAS }.into());
        }
        let _guard = self.rollout.lock().await;
        let svc = self.service_record(app, service).await?;
        if let Some(d) = self.db.deployments(app).await?.pop().filter(|d| d.state == DeploymentState::InProgress) {
            return Err(Busy::Scale(InProgress::of(&d)).into());
        }
        if svc.replicas == replicas {
            return Ok(svc);
        }
        let from = svc.replicas;
        let record = ServiceRecord { replicas, ..svc };
        let mut batch = Batch::default();
        batch.put_service(&record);
        self.db.commit(batch).await?;
        drop(_guard);
        self.events.event_full(
            "service.scaled",
            Level::Info,
            Some(app),
            Some(service),
            None,
            format!("{service} scaled {from} → {replicas} ({why})"),
        );
        self.reconciler.wake();
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_keeps_a_scaling_until_the_file_declares_another_count() {
        let cur = ServiceRecord { replicas: 4, ..Default::default() };
        assert_eq!(deployed_replicas(Some(&cur), Some(1), 1), 4, "file unchanged: keep 4");
        assert_eq!(deployed_replicas(Some(&cur), Some(1), 2), 2, "file says 2 now");
        assert_eq!(deployed_replicas(None, None, 3), 3, "a new service");
    }
}
