//! The HTTP JSON API. Every endpoint needs the bearer token the server wrote
//! to its data directory; errors are JSON with a kind, a message and, for an
//! invalid wharf.toml, the diagnostics with file:line:column.

#![forbid(unsafe_code)]

mod jobs;
mod secrets;
mod server;
pub mod token;
mod ui;

pub use server::{router, serve, MAX_CONNECTIONS};

pub use wharf_api_types::{ErrorBody, ErrorDetail};
