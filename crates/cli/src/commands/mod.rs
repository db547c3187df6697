//! One module per command, named after it. Each reads the server's answers
//! through the typed client and prints them (see `crate::print`).

pub mod autoscale;
pub mod certs;
pub mod check;
pub mod deploy;
pub mod deployments;
pub mod destroy;
pub mod events;
pub mod install;
pub mod jobs;
pub mod logs;
pub mod maintenance;
pub mod pause;
pub mod plan;
pub mod ps;
pub mod revisions;
pub mod rollback;
pub mod run;
pub mod scale;
pub mod secret;
pub mod status;
pub mod top;
pub mod up;
