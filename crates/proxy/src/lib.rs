//! wharf's data plane. It reads an immutable [`RoutingTable`] that the
//! control plane builds and swaps in atomically; it never calls the store or
//! the controllers, so a slow control plane cannot slow a request down.
//!
//! Backends (tasks) are shared between snapshots: their in-flight counters
//! drive least-outstanding balancing and tell the control plane when a task
//! that left the table has drained.

#![forbid(unsafe_code)]

mod access;
mod acme;
mod answer;
mod backend;
mod body;
mod conns;
mod error;
mod forward;
mod internal;
mod io;
mod metrics;
mod pause;
mod prepare;
mod resolve;
mod respond;
mod retry;
mod routing;
mod server;
mod tls;

pub use access::{AccessEntry, AccessLog};
pub use acme::{AcmeChallenges, ALPN_ACME_TLS, CHALLENGE_PATH};
pub use backend::{Backend, OutcomeCounts, LATENCY_BOUNDS_MS};
pub use conns::{serve_guarded, ConnLimits, Conns, HandshakeOutcome, Tls};
pub use internal::{BindError, InternalListeners};
pub use pause::PauseGate;
pub use respond::RespBody;
pub use routing::{
    BackendSet, Balance, HostMatch, Maintenance, PlainHttp, Pool, RouteHttps, RouteLimits, RouteSpec, RoutingTable,
    Sticky, FULL_WEIGHT,
};
pub use server::{Proxy, ProxyConfig, ProxyError};
pub use tls::{
    server_config, CertInfo, CertPair, ServedCerts, TlsCerts, TlsError, ALPN_H2, ALPN_HTTP1, MAX_CHAIN_LEN,
    MAX_PEM_BYTES,
};
/// What the HTTPS listener is set up with, and how it picks a certificate.
pub use tokio_rustls::rustls::{server::ResolvesServerCert, ServerConfig as TlsConfig};
