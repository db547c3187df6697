//! The typed records wharf keeps. Timestamps are Unix milliseconds.

use serde::{Deserialize, Serialize};
use wharf_spec::{Route, Service};

use crate::JobRecord;

/// The last accepted deploy of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub name: String,
    /// Content hash of the release the app currently runs.
    pub release: String,
    pub routes: Vec<Route>,
    /// The wharf.toml text of that release, for `status` and diffing.
    pub source: String,
    pub deployed_at: u64,
    /// The jobs that release declares, by name, so that no reader has to
    /// parse `source` again. None only in records written before jobs were
    /// recorded: [`Db::app`](crate::Db::app) and [`Db::apps`](crate::Db::apps)
    /// fill them in from `source` (and write them back) on first read.
    #[serde(default)]
    pub jobs: Option<Vec<JobRecord>>,
}

impl AppRecord {
    /// The app's jobs, by name; empty when none were recorded.
    pub fn jobs(&self) -> &[JobRecord] {
        self.jobs.as_deref().unwrap_or_default()
    }
}

/// The desired state of one service: which revision, how many tasks, and
/// during a blue-green deploy which revision has the traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub app: String,
    pub name: String,
    pub revision: u64,
    pub replicas: u32,
    /// Only tasks of this revision are in the pool (blue-green: the old set
    /// until the switch, then the new one). None: every ready task.
    #[serde(default)]
    pub live: Option<u64>,
    /// Tasks of this revision keep running out of the pool (blue-green bake:
    /// the old set, for an instant switch back).
    #[serde(default)]
    pub standby: Option<u64>,
    /// The `replicas` wharf.toml declared at the last deploy; `replicas`
    /// differs when scaled by hand or by the autoscaler since.
    #[serde(default)]
    pub declared_replicas: Option<u32>,
    /// A canary under way: its step and the new revision's share, kept so a
    /// restarted server resumes at the same weights.
    #[serde(default)]
    pub canary: Option<CanaryRecord>,
}

/// Where a canary deploy stands; `revision` of its service is the new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRecord {
    /// The revision that had the traffic; it keeps the rest of the requests.
    pub from: u64,
    /// 0 while the new set starts (no share yet); then 1 to the number of steps.
    pub step: u32,
    /// The new revision's share of the requests, in percent.
    pub weight: u32,
    /// When the step ends (Unix ms): the next step, or the promotion after the last.
    pub until: u64,
}

/// An immutable, numbered snapshot of a service's spec and release (`api@7`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub app: String,
    pub service: String,
    pub number: u64,
    /// The service's spec: a revision is a spec plus a release (the word
    /// table's meaning), and a spec of one service is a `wharf_spec::Service`.
    pub spec: Service,
    /// The release (code) the revision runs, by content hash.
    pub release: String,
    /// Hash of the release's code without wharf.toml, to tell code changes
    /// from settings changes.
    #[serde(default)]
    pub code: String,
    /// Hash of spec + code (+ the digests of its secrets' values): an
    /// unchanged service keeps its revision.
    pub digest: String,
    /// The secrets it takes, name → digest of the value when it was made
    /// (never the value): tells which secret changed between revisions.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, String>,
    pub created_at: u64,
}

/// Code uploaded by `wharf deploy`, stored once per content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub app: String,
    pub hash: String,
    pub size: u64,
    pub created_at: u64,
}

/// A task wharf decided to run. What is actually running is observed from
/// the driver; this record is the intent, kept until the task is stopped.
/// Its port lives in the driver's task spec, the one place it is chosen
/// (records written with a `port` field still load; it is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub app: String,
    pub service: String,
    pub revision: u64,
    pub created_at: u64,
}

/// A web task's last settled health, for the process `pid` (a restarted
/// process has another pid and proves itself again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHealthRecord {
    pub id: String,
    pub pid: u32,
    pub healthy: bool,
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    #[default]
    /// Desired state changed; tasks of the new revisions are starting.
    InProgress,
    /// Every changed service has its new revision running and healthy.
    Succeeded,
    /// The new revisions did not become ready in time; see the message.
    Failed,
    /// A newer deployment of the same app took over before this one finished.
    Superseded,
    /// Nothing changed.
    Unchanged,
    /// The deployment failed (see the message) and its services are back on
    /// the revisions they ran before.
    RolledBack,
}

impl DeploymentState {
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

/// Where an in-progress deployment is; with the record, enough to resume
/// after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStep {
    /// Release commands run; nothing has moved yet.
    #[serde(rename = "release")]
    ReleaseCommand,
    /// New tasks start and take over (rolling), or wait to be switched to (blue-green).
    #[default]
    Rollout,
    /// Every changed service has switched; the new revisions are watched.
    Bake,
    /// Something failed; services return to the revisions they ran before.
    Rollback,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChange {
    pub service: String,
    pub from: Option<u64>,
    /// None: the service was removed from wharf.toml.
    pub to: Option<u64>,
    /// Replicas before, to return to them on rollback.
    #[serde(default)]
    pub from_replicas: u32,
    /// Replicas asked for.
    #[serde(default)]
    pub replicas: u32,
}

/// One `wharf deploy` of an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
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
    /// When the current step began (its deadline counts from here).
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
    /// The app as it was before (routes, jobs, release), put back if the
    /// deployment rolls back. None for a first deploy or a manual rollback.
    #[serde(default)]
    pub previous_app: Option<AppRecord>,
    /// A canary's moves, in order, for `wharf deployments`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_steps: Vec<CanaryStepRecord>,
    /// The `[env.NAME]` the release's wharf.toml was read with, so that
    /// anything reading it again gets the same spec. None: the base file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// One move of a canary: a step's share, or (weight 100) its promotion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryStepRecord {
    pub service: String,
    pub revision: u64,
    /// 1 to the number of steps; 0 for the promotion.
    pub step: u32,
    /// The new revision's share of the requests, in percent.
    pub weight: u32,
    pub at: u64,
}

impl DeploymentRecord {
    /// Without the copy of the previous app, for listings.
    pub fn summary(mut self) -> DeploymentRecord {
        self.previous_app = None;
        self
    }
}

/// Something wharf did or saw, kept for history (also sent to the log stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub time: u64,
    pub app: Option<String>,
    pub service: Option<String>,
    pub task: Option<String>,
    /// Short machine-readable kind, e.g. "task.restarted", "deploy.rejected".
    pub kind: String,
    pub message: String,
}

/// Maintenance mode of a whole app (`service` None) or one service: the
/// proxy answers 503 with a page instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceRecord {
    pub app: String,
    pub service: Option<String>,
    pub message: Option<String>,
    /// A complete HTML page to serve instead of the built-in one.
    pub page: Option<String>,
    pub since: u64,
}

/// A paused app or service: requests are held until resume or `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    pub app: String,
    pub service: Option<String>,
    pub since: u64,
    /// After this (Unix ms) held and new requests get 503 until resumed.
    pub until: u64,
}

/// `wharf destroy APP` under way: written first, with the app's record and
/// services removed in the same write, so a server killed in the middle
/// finishes the job after its restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyRecord {
    pub app: String,
    /// Delete the app's releases (records and files) too.
    pub purge: bool,
    pub started_at: u64,
    /// The services it had, for the report.
    #[serde(default)]
    pub services: Vec<String>,
}

#[cfg(test)]
mod canary_tests {
    use super::*;

    /// Records written before canaries load, with no canary under way; a
    /// record without one is written as before.
    #[test]
    fn records_from_before_canaries_load_without_one() {
        let old = r#"{"app":"a","name":"web","revision":3,"replicas":2,"live":null,"standby":null}"#;
        let s: ServiceRecord = serde_json::from_str(old).unwrap();
        assert_eq!((s.revision, s.canary), (3, None));
        let d: DeploymentRecord = serde_json::from_str(
            r#"{"app":"a","id":1,"release":"r","changes":[],"state":"succeeded","message":"m","started_at":1,"finished_at":2}"#,
        )
        .unwrap();
        assert!(d.canary_steps.is_empty());
        assert!(!serde_json::to_string(&d).unwrap().contains("canary"));
        let c = CanaryRecord { from: 3, step: 1, weight: 10, until: 99 };
        let with = ServiceRecord { canary: Some(c), ..s };
        let back: ServiceRecord = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back.canary, Some(c), "a restarted server reads the same step and weights");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_record_with_the_old_port_field_still_loads() {
        let old = r#"{"id":"t","app":"a","service":"web","revision":3,"port":21000,"created_at":7}"#;
        let r: TaskRecord = serde_json::from_str(old).unwrap();
        assert_eq!((r.id.as_str(), r.revision, r.created_at), ("t", 3, 7));
    }
}

/// The ACME account wharf orders certificates with, per directory URL: kept
/// in the store so a restart (and later every server of a cluster) uses
/// the same account instead of registering a new one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeAccountRecord {
    pub directory: String,
    /// The account's credentials as the ACME client serializes them (they
    /// hold the account's private key).
    pub credentials: String,
    pub created_at: u64,
}

/// By hand, so the account key is never printed.
impl std::fmt::Debug for AcmeAccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeAccountRecord")
            .field("directory", &self.directory)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A certificate obtained over ACME for one host: what a restarted server
/// serves at once, without a new order.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeCertRecord {
    pub host: String,
    /// PEM, leaf first.
    pub chain_pem: String,
    /// PEM (PKCS#8), the key made for this certificate.
    pub key_pem: String,
    /// Validity of the leaf, unix seconds.
    pub not_before: u64,
    pub not_after: u64,
    /// When it was obtained, unix milliseconds.
    pub issued_at: u64,
}

/// By hand, so the private key is never printed.
impl std::fmt::Debug for AcmeCertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeCertRecord")
            .field("host", &self.host)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

/// One secret of an app, sealed with the server's secret key (the
/// `wharf-secrets` envelope, its name as associated data).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub app: String,
    pub name: String,
    /// Hex of nonce, ciphertext and tag; never the value.
    pub sealed: String,
    /// Keyed digest of the value: what revisions include, so a changed
    /// value makes a new revision of the services that use it.
    pub digest: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// Without the sealed bytes: records end up in logs and panics.
impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("app", &self.app)
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}
