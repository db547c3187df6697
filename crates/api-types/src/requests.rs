//! Request bodies and query strings. No `app` means the only app deployed.
//! Unknown fields are refused, so a typo is an error, not a silent default.

use serde::{Deserialize, Serialize};

/// `?app=A`: `GET /v1/deployments`, `GET /v1/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppQuery {
    pub app: Option<String>,
}

/// `?app=A&service=S`: `GET /v1/revisions`, `GET /v1/autoscale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceQuery {
    pub app: Option<String>,
    pub service: String,
}

/// `?env=E`: `POST /v1/deploy`, `POST /v1/plan`: the release's wharf.toml
/// is read with its `[env.E]` overlay (no env: the base file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployQuery {
    pub env: Option<String>,
}

/// `GET /v1/events?n=N`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    pub n: Option<usize>,
}

/// `GET /v1/logs`: which records, and whether to keep the answer open.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    pub app: Option<String>,
    pub service: Option<String>,
    pub task: Option<String>,
    /// Comma-separated sources.
    pub source: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<u64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<u64>,
    /// A regular expression the message must match.
    pub grep: Option<String>,
    pub n: Option<usize>,
    #[serde(default)]
    pub follow: bool,
}

/// `GET /v1/jobs/runs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRunsQuery {
    pub app: Option<String>,
    pub job: String,
    /// The newest N runs (default all that are kept).
    pub n: Option<usize>,
}

/// `DELETE /v1/apps/{app}?purge=..&force=..`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyQuery {
    /// Delete the app's stored releases too.
    #[serde(default)]
    pub purge: bool,
    /// Abort a deployment in progress instead of refusing.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/jobs/trigger`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    pub app: Option<String>,
    pub job: String,
}

/// `POST /v1/maintenance`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    pub app: Option<String>,
    pub service: Option<String>,
    pub on: bool,
    pub message: Option<String>,
    /// A complete HTML page.
    pub page: Option<String>,
}

/// `POST /v1/pause` and `POST /v1/resume`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    pub app: Option<String>,
    pub service: Option<String>,
    /// Longest pause; held requests get 503 after it. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_secs: Option<u64>,
}

/// `POST /v1/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub app: Option<String>,
    pub service: String,
    /// Default: the last revision that was live and healthy.
    pub revision: Option<u64>,
}

/// `POST /v1/promote`: a canary takes all the requests now, skipping its
/// remaining steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    pub app: Option<String>,
    /// Default: every service of the app's running canary.
    pub service: Option<String>,
}

/// `POST /v1/scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub app: Option<String>,
    pub service: String,
    pub replicas: u32,
}

/// `POST /v1/run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub app: Option<String>,
    pub service: String,
    pub command: Vec<String>,
}
