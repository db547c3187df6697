//! Access log entries, handed to a sink the server provides. The entry
//! borrows from the request: the sink copies what it keeps (into a buffer
//! it reuses) and must return at once; the proxy never waits on it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy)]
pub struct AccessEntry<'a> {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    pub duration: Duration,
    /// "app/service" of the route, if one matched.
    pub pool: Option<&'a Arc<str>>,
    pub task: Option<&'a Arc<str>>,
    pub request_id: &'a str,
    /// The request came in on an internal listener (service discovery).
    pub internal: bool,
}

pub trait AccessLog: Send + Sync + 'static {
    fn log(&self, entry: &AccessEntry<'_>);
}
