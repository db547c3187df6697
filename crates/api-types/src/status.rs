//! `GET /v1/status` and `GET /v1/tasks`: apps, services and tasks as they are now.

use serde::{Deserialize, Serialize};

use crate::Deployment;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub uptime_secs: u64,
    pub limits: String,
    /// What is wrong with the server itself (a failing store, a full disk).
    pub problems: Vec<String>,
    pub apps: Vec<AppView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppView {
    pub name: String,
    pub release: String,
    pub deployed_at: u64,
    pub routes: Vec<RouteView>,
    pub services: Vec<ServiceView>,
    /// The newest deployment of the app.
    pub deployment: Option<Deployment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteView {
    pub host: Option<String>,
    pub path: String,
    pub service: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    /// "web" or "worker".
    pub kind: String,
    pub revision: u64,
    pub replicas: u32,
    /// Tasks of the current revision.
    pub running: usize,
    /// Of those, healthy (web) or running (worker).
    pub ready: usize,
    /// Tasks of earlier revisions still serving or starting (during a deploy).
    pub old: usize,
    /// Tasks of the revision kept out of the pool for an instant switch back
    /// (a blue-green bake).
    pub standby: usize,
    /// Tasks out of the pool, finishing their requests before they stop.
    pub draining: usize,
    /// Blue-green: the revision whose tasks have the traffic; None: every ready task.
    pub live: Option<u64>,
    /// Answering with the maintenance page (this service or the whole app).
    pub maintenance: bool,
    /// Holding requests until resumed.
    pub paused: bool,
    /// Tasks of the current revision that keep failing their health checks
    /// (for a second or more), each as "TASK: last check's error".
    pub health_failing: Vec<String>,
    /// A canary deploy under way: how the requests are split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryView>,
}

/// A canary's split: the new revision (the service's `revision`) takes
/// `weight` percent of the requests, `from` the rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryView {
    pub from: u64,
    /// 0 while the new set starts; then 1 to `steps`.
    pub step: u32,
    pub steps: u32,
    pub weight: u32,
    /// Seconds until the next step (or the promotion after the last); None while the new set starts.
    pub next_in_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub app: String,
    pub service: String,
    pub revision: u64,
    pub state: TaskState,
    pub health: Option<Health>,
    pub health_error: Option<String>,
    pub draining: bool,
    /// Kept out of rotation: by passive checks (connection refused or reset), or at once when its health checks fail.
    pub ejected: bool,
    /// Requests and upgraded connections on the task right now.
    pub in_flight: u64,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub restarts: u32,
    pub crashes: u32,
    pub last_exit: Option<String>,
    pub started_at: Option<u64>,
    pub adopted: bool,
    pub oom_kills: u32,
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
}

/// Lifecycle of a task, as the runtime reports it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Being (re)spawned.
    Starting,
    /// The process runs.
    Running,
    /// Exited; waiting to be restarted.
    Backoff,
    /// A graceful stop is in progress.
    Stopping,
    /// Exited and not restarting.
    Exited,
}

impl TaskState {
    /// The wire name, e.g. "backoff".
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Backoff => "backoff",
            TaskState::Stopping => "stopping",
            TaskState::Exited => "exited",
        }
    }
}

/// A task's health, from its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not yet passed its checks since it (re)started.
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    /// The wire name, e.g. "healthy".
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// `GET /v1/certs`: one host's certificate, as `wharf certs` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertView {
    /// The route's host.
    pub host: String,
    /// Where it comes from: "file", "acme", or "none" (a wildcard host without files).
    pub source: String,
    /// The certificate file.
    pub file: String,
    /// Served now (false: it failed to load, see `error`, or does not cover the host).
    pub served: bool,
    /// The names it is valid for.
    pub names: Vec<String>,
    pub issuer: Option<String>,
    /// Unix seconds.
    pub not_after: Option<u64>,
    pub expired: bool,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: Option<String>,
    /// Why it is not served, or what is wrong with it (for ACME: the last
    /// failed order's error).
    pub error: Option<String>,
    /// ACME: when it is renewed (unix seconds), at two thirds of its lifetime.
    #[serde(default)]
    pub next_renewal: Option<u64>,
}
