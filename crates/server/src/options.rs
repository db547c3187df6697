//! What a server is started with: the CLI turns its flags into these.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wharf_logs::export::{ExportOptions, Target};
use wharf_proxy::ProxyConfig;

use crate::task_user::Unreachable;

/// Where an optional listener goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    /// The default address: if it is taken, the server says so and runs without.
    Default(SocketAddr),
    /// Asked for: if it is taken, the server does not start.
    At(SocketAddr),
}

impl Listen {
    pub(crate) fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::Default(a) | Listen::At(a) => Some(a),
        }
    }
}

pub struct ServerOptions {
    pub data: PathBuf,
    pub api: SocketAddr,
    pub http: SocketAddr,
    /// The proxy's HTTPS listener; None: no HTTPS.
    pub https: Option<SocketAddr>,
    /// Worker threads of the proxy's own runtime.
    pub proxy_threads: usize,
    /// One access log line per request into the stream.
    pub access_log: bool,
    /// Per-request metrics, served as Prometheus text on `admin`.
    pub metrics: bool,
    /// Address of the metrics listener (no token: keep it private).
    pub admin: Option<SocketAddr>,
    pub proxy: ProxyConfig,
    /// Where to export the log stream (a file, an HTTP endpoint, or both).
    pub exports: Vec<Target>,
    pub export: ExportOptions,
    /// The proxy's internal listener (service discovery).
    pub internal: Listen,
    /// The DNS responder (service discovery); needs the internal listener.
    pub dns: Listen,
    /// Test seam: the job scheduler's clock runs this many times faster.
    pub clock_scale: Option<f64>,
    /// How often the store is snapshotted (when it changed).
    pub snapshot_every: Duration,
    /// The account tasks run as when the server is root [default: nobody].
    pub task_user: Option<String>,
    /// What to do when that account cannot reach the data directory.
    pub unreachable: Unreachable,
    /// Automatic certificates for hosts without files (needs `https`); None: off.
    pub acme: Option<wharf_control::AcmeConfig>,
    /// The secrets' key as 64 hex digits (the CLI passes `$WHARF_SECRET_KEY`);
    /// None: `DATA/secret.key`, created on first use.
    pub secret_key: Option<String>,
}

impl ServerOptions {
    /// Defaults for a server in `data` listening on `http` and `api`.
    pub fn new(data: PathBuf, api: SocketAddr, http: SocketAddr) -> ServerOptions {
        ServerOptions {
            data,
            api,
            http,
            https: None,
            proxy_threads: default_proxy_threads(),
            access_log: true,
            metrics: true,
            admin: None,
            proxy: ProxyConfig::default(),
            exports: Vec::new(),
            export: ExportOptions::default(),
            internal: Listen::Default(SocketAddr::from(([127, 0, 0, 1], 8181))),
            dns: Listen::Default(SocketAddr::from(([127, 0, 0, 1], 8053))),
            clock_scale: None,
            snapshot_every: crate::store::DEFAULT_EVERY,
            task_user: None,
            unreachable: Unreachable::Refuse,
            acme: None,
            secret_key: None,
        }
    }
}

/// One proxy worker per core by default, as nginx's `worker_processes auto`.
pub fn default_proxy_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where a server keeps its data when not told otherwise.
pub fn default_data_dir() -> PathBuf {
    if wharf_runtime::running_as_root() {
        return PathBuf::from("/var/lib/wharf");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("wharf");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/wharf")
}
