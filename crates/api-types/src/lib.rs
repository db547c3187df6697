//! The requests and answers of wharf's HTTP API: plain serde types, shared by
//! the server (which builds them) and the client (which reads them), so both
//! sides agree on the JSON by construction instead of by field-name lookups.
//!
//! Times are Unix milliseconds unless a field says otherwise. Changing a
//! field here changes the wire format: add fields, don't rename them.

#![forbid(unsafe_code)]

mod deploy;
mod error;
mod jobs;
mod ops;
mod requests;
mod secrets;
mod status;

pub use deploy::{
    CanaryStep, Deployment, DeploymentReport, DeploymentState, DeploymentStep, DestroyReport, JobChanges, Plan,
    RevisionView, ServiceChange, ServicePlan, ServiceReport,
};
pub use error::{ErrorBody, ErrorDetail};
pub use jobs::{JobList, JobRun, JobView, RunState, RunTrigger};
pub use ops::quantile;
pub use ops::{
    AutoscaleView, Datapoint, Decision, Event, MaintenanceState, PauseState, RunEnded, RunStarted, ScaledService,
    StoppedRun, TopService, TopView,
};
pub use requests::{
    AppQuery, DeployQuery, DestroyQuery, EventQuery, JobRunsQuery, LogQuery, MaintenanceRequest, PauseRequest,
    PromoteRequest, RollbackRequest, RunRequest, ScaleRequest, ServiceQuery, TriggerRequest,
};
pub use secrets::{SecretRemoveQuery, SecretRemoved, SecretSet, SecretSetRequest, SecretView};
pub use status::{AppView, CanaryView, CertView, Health, RouteView, ServiceView, StatusView, TaskState, TaskView};
/// Where an invalid wharf.toml is wrong, in error answers.
pub use wharf_spec::Diagnostic;

/// The file in a server's data directory that holds its API token: the
/// server writes it on first start, a client on the same machine reads it.
pub const TOKEN_FILE: &str = "token";
/// The read-only API token's file in the data directory: it reads
/// everything the full token reads (GET), and changes nothing.
pub const READ_TOKEN_FILE: &str = "token.read";
