//! The controllers: they compare the desired state in the store with what the
//! driver and health checks observe, and act until the two agree.
//!
//! Every loop here is level-triggered and restart-safe: it derives what to do
//! from the store and from observation, never from remembered intent, so the
//! server can be killed at any point and converge again on restart.

mod access;
mod autoscaler;
mod clock;
mod component;
mod controller;
mod deploy;
mod destroy;
mod discovery;
mod disk;
mod health;
mod metrics;
mod oneoff;
mod plan;
mod reconcile;
pub mod release;
mod rollback;
mod rollout;
mod routes;
mod scale;
mod scheduler;
mod store_timing;
mod strategy;
mod top;
mod traffic;
mod usage;
mod views;

pub use access::{access_sink, AccessSink};
pub use autoscaler::{AutoscaleView, Datapoint, Decision};
pub use clock::{Clock, ScaledClock, SystemClock, TestClock};
pub use controller::{ControlConfig, ControlError, Controller, StreamSink};
pub use deploy::{DeployError, DeployReport, ServiceReport};
pub use destroy::DestroyReport;
pub use discovery::DiscoveryConfig;
pub use health::Health;
pub use metrics::ServerMetrics;
pub use oneoff::{RunEnded, RunStarted};
pub use plan::{Plan, ServicePlan};
pub use rollback::RevisionView;
pub use scheduler::{JobView, GRACE as JOB_GRACE, RUNS_KEPT as JOB_RUNS_KEPT};
pub use store_timing::TimedStore;
pub use top::{TopService, TopView};
pub use views::{AppView, ServiceView, StatusView, TaskView};
