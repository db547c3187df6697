//! Access log entries, handed to a sink the server provides. The sink must
//! return at once (queue the entry); the proxy never waits on it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct AccessEntry {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: http::Method,
    pub host: String,
    pub path: String,
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    pub duration: Duration,
    /// "app/service" of the route, if one matched.
    pub pool: Option<Arc<str>>,
    pub task: Option<Arc<str>>,
    pub request_id: String,
    /// The request came in on an internal listener (service discovery).
    pub internal: bool,
}

pub trait AccessLog: Send + Sync + 'static {
    fn log(&self, entry: AccessEntry);
}
