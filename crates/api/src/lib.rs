//! The HTTP JSON API. Every endpoint needs the bearer token the server wrote
//! to its data directory; errors are JSON with a kind, a message and, for an
//! invalid wharf.toml, the diagnostics with file:line:column.

pub mod client;
mod jobs;
mod server;
pub mod token;

pub use server::{router, serve, MAX_CONNECTIONS};

use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: "unauthorized", "invalid_spec", "bad_request", "not_found", "internal".
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<wharf_spec::Diagnostic>,
}
