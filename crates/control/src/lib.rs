//! The controllers: they compare the desired state in the store with what the
//! driver and health checks observe, and act until the two agree.
//!
//! Every loop here is level-triggered and restart-safe: it derives what to do
//! from the store and from observation, never from remembered intent, so the
//! server can be killed at any point and converge again on restart.

mod acme;
mod autoscaler;
mod catalog;
mod certs;
mod clock;
mod component;
mod controller;
mod deploy;
mod destroy;
mod discovery;
mod disk;
mod error;
mod events;
mod health;
mod local_ca;
mod metrics;
mod oneoff;
mod plan;
mod probe;
mod reconcile;
pub mod release;
mod rollback;
mod rollout;
mod routes;
mod scale;
mod scheduler;
mod secrets;
mod store_health;
mod strategy;
mod top;
mod traffic;
mod usage;
mod views;
pub mod wire;

pub use acme::{AcmeChallenge, AcmeConfig, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, LOCAL_CA};
pub use clock::{Clock, ScaledClock, SystemClock, TestClock};
pub use controller::{ControlConfig, ControlError, Controller};
pub use deploy::DeployError;
pub use discovery::DiscoveryConfig;
pub use error::{Busy, InProgress, Invalid, NoAbort, NotFound, Unavailable};
pub use health::Health;
pub use metrics::ServerMetrics;
pub use scheduler::{GRACE as JOB_GRACE, RUNS_KEPT as JOB_RUNS_KEPT};
pub use secrets::TaskSecrets;
pub use store_health::{StoreHealth, StoreHealthState, StoreOp};
/// The cause inside [`ControlError::Store`], for callers that answer each kind differently.
pub use wharf_store::StoreError;
