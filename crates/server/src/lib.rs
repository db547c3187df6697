//! Assembles a wharf server from the pieces: the data directory and its
//! lock, the store and its snapshots, the log stream and its exports, the
//! process driver, the proxy and its listeners, the controllers, the API,
//! the metrics endpoint and the DNS responder.
//!
//! `wharf server` and `wharf up` both start through [`start`]; the glue
//! between pieces that know nothing of each other (the proxy's access log
//! and task output into the log stream, store operations into the metrics)
//! lives here too, so the pieces stay independent.

#![forbid(unsafe_code)]

mod access;
mod error;
mod listen;
mod metrics;
mod options;
mod ports;
mod signal;
mod start;
pub mod store;
mod task_output;
pub mod task_user;
mod timed_store;

pub use access::{access_sink, AccessSink};
pub use error::ServerError;
pub use options::{default_data_dir, default_proxy_threads, Listen, ServerOptions};
pub use signal::StopSignal;
pub use start::{start, Running};
pub use task_output::StreamSink;
pub use timed_store::TimedStore;
/// What `wharf server`'s ACME flags set.
pub use wharf_control::{AcmeChallenge, AcmeConfig, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, LOCAL_CA};
/// The environment variable the secrets' key may come from (64 hex digits).
pub use wharf_secrets::KEY_ENV as SECRET_KEY_ENV;

/// The file where a running server writes its API URL for the CLI to find.
pub const API_URL_FILE: &str = "api.url";
/// The file where a running server writes its metrics URL.
pub const METRICS_URL_FILE: &str = "metrics.url";
/// The file where a running server writes the proxy's URL.
pub const PROXY_URL_FILE: &str = "proxy.url";
/// The file where a running server writes its HTTPS listener's URL (when it has one).
pub const HTTPS_URL_FILE: &str = "https.url";
/// The file where a running server writes its internal listener's URL.
pub const INTERNAL_URL_FILE: &str = "internal.url";
/// The file where a running server writes its DNS responder's address.
pub const DNS_ADDR_FILE: &str = "dns.addr";
/// The store's file in the data directory.
pub const STORE_FILE: &str = "store.redb";
