//! Deploys, plans, rollbacks and destroys: `POST /v1/deploy`, `POST /v1/plan`,
//! `GET /v1/deployments`, `GET /v1/revisions`, `POST /v1/rollback`,
//! `DELETE /v1/apps/{app}`.

use serde::{Deserialize, Serialize};

/// The answer to an accepted upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentReport {
    pub app: String,
    /// The deployment's id, to follow it in `/v1/status`.
    pub deployment: u64,
    pub release: String,
    pub state: DeploymentState,
    pub services: Vec<ServiceReport>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceReport {
    pub name: String,
    /// "web", "worker", or "removed".
    pub kind: String,
    /// None: removed.
    pub revision: Option<u64>,
    pub previous: Option<u64>,
    pub changed: bool,
    pub replicas: u32,
}

/// One deployment of an app (a `wharf deploy` or a `wharf rollback`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub app: String,
    pub id: u64,
    pub release: String,
    pub changes: Vec<ServiceChange>,
    pub state: DeploymentState,
    pub message: String,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub step: DeploymentStep,
    /// When the current step began.
    #[serde(default)]
    pub step_started_at: u64,
    /// When the last changed service switched to its new revision.
    #[serde(default)]
    pub switched_at: Option<u64>,
    #[serde(default)]
    pub bake_until: Option<u64>,
    /// Why it failed or was rolled back.
    #[serde(default)]
    pub reason: Option<String>,
    /// A rollback asked for by hand (`wharf rollback`), not a deploy.
    #[serde(default)]
    pub manual: bool,
    /// Always null in answers (the server keeps the app's previous state to
    /// itself); the key stays so the JSON is what it always was.
    #[serde(default)]
    pub previous_app: Option<serde_json::Value>,
    /// A canary's moves, in order (absent without a canary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_steps: Vec<CanaryStep>,
    /// The `[env.NAME]` its release's wharf.toml was read with (absent: the base file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// One move of a canary: a step's share, or (weight 100, step 0) its promotion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryStep {
    pub service: String,
    pub revision: u64,
    pub step: u32,
    /// The new revision's share of the requests, in percent.
    pub weight: u32,
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    #[default]
    InProgress,
    Succeeded,
    Failed,
    Superseded,
    Unchanged,
    RolledBack,
}

impl DeploymentState {
    /// The wire name, e.g. "rolled_back".
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::Superseded => "superseded",
            DeploymentState::Unchanged => "unchanged",
            DeploymentState::RolledBack => "rolled_back",
        }
    }
}

/// Where an in-progress deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStep {
    /// Release commands run; nothing has moved yet.
    #[serde(rename = "release")]
    ReleaseCommand,
    /// New tasks start and take over, or wait to be switched to.
    #[default]
    Rollout,
    /// Every changed service has switched; the new revisions are watched.
    Bake,
    /// Something failed; services return to the revisions they ran before.
    Rollback,
}

impl DeploymentStep {
    /// The wire name, e.g. "bake".
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStep::ReleaseCommand => "release",
            DeploymentStep::Rollout => "rollout",
            DeploymentStep::Bake => "bake",
            DeploymentStep::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChange {
    pub service: String,
    pub from: Option<u64>,
    /// None: the service was removed from wharf.toml.
    pub to: Option<u64>,
    #[serde(default)]
    pub from_replicas: u32,
    #[serde(default)]
    pub replicas: u32,
}

/// What a deploy of an archive would change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub app: String,
    pub services: Vec<ServicePlan>,
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    pub jobs: JobChanges,
    /// Nothing would change: a deploy would be a no-op.
    pub unchanged: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicePlan {
    pub name: String,
    /// "new", "changed", "scaled", "unchanged" or "removed".
    pub action: String,
    pub revision: Option<u64>,
    /// The revision a deploy would create, when it would create one.
    pub next_revision: Option<u64>,
    /// (before, after) when the replica count would change.
    pub replicas: Option<(u32, u32)>,
    pub changes: Vec<String>,
}

/// Scheduled jobs a deploy adds, changes or removes, by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl JobChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// One revision of a service, for `wharf revisions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionView {
    pub number: u64,
    pub created_at: u64,
    pub release: String,
    /// What differs from the revision before it.
    pub changes: Vec<String>,
    pub current: bool,
    /// Its release is still stored, so it can be rolled back to.
    pub available: bool,
    /// How the last deployment that moved the service to it ended; None when
    /// no deployment on record did.
    pub outcome: Option<DeploymentState>,
    /// That deployment's id.
    pub deployment: Option<u64>,
    /// Why it failed or was rolled back.
    pub reason: Option<String>,
    /// It was live and healthy: `wharf rollback` without a revision picks
    /// the newest such one.
    pub healthy: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestroyReport {
    pub app: String,
    pub services: Vec<String>,
    /// Tasks the app had when the destroy began (all stopped now).
    pub tasks_stopped: usize,
    /// The deployment `--force` aborted.
    pub aborted_deployment: Option<u64>,
    /// Its releases were deleted too.
    pub purged: bool,
    /// Releases kept on disk (none with `--purge`).
    pub releases_kept: usize,
}
