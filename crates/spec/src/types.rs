//! The validated, typed form of a `wharf.toml`. Everything here has passed
//! validation: names are valid, routes point at existing web services, ports
//! do not clash. These types are what the rest of wharf consumes and what the
//! store persists inside revisions, so they are plain data with serde.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One app: everything one `wharf.toml` declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub app: String,
    /// Keyed by service name; BTreeMap so iteration (and hashing) is stable.
    pub services: BTreeMap<String, Service>,
    /// In file order.
    pub routes: Vec<Route>,
    /// Scheduled jobs, keyed by name.
    #[serde(default)]
    pub jobs: BTreeMap<String, crate::Job>,
    /// Where each `{ secret = "..." }` is written, so a deploy can say where a
    /// reference to a secret that is not set is. Not stored: positions are
    /// the file's, not the spec's.
    #[serde(skip)]
    pub secret_refs: Vec<SecretRef>,
}

/// One `VAR = { secret = "name" }` of a service's `env`, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub service: String,
    pub var: String,
    pub secret: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Spec {
    /// What is accepted but worth knowing before a deploy: a wildcard host
    /// can get no automatic certificate (that needs DNS-01), so without
    /// `tls` files it is served over plain HTTP only.
    pub fn notes(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.tls.is_none() && r.https != HttpsMode::Off)
            .filter_map(|r| r.host.as_deref().filter(|h| h.starts_with("*.")))
            .map(|host| {
                format!(
                    "route `{host}`: a wildcard host gets no automatic certificate (that takes DNS-01, which wharf \
                     does not do), so it is served over plain HTTP only; give the route `tls = {{ cert = \"...\", \
                     key = \"...\" }}` to serve it over HTTPS"
                )
            })
            .collect()
    }
}

/// A long-running process type of the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// argv; the first element is looked up on the task's PATH.
    pub command: Vec<String>,
    /// Working directory relative to the release directory ("." by default).
    pub workdir: String,
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are the app's secrets: variable →
    /// secret name. Only names are kept here (and in stored revisions); the
    /// values are put into a task's environment when it starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// `Some(port)` makes this a web service (routed, health-checked over HTTP/TCP);
    /// `None` makes it a worker. The number is the app's port inside a container;
    /// a process task listens on the port chosen for it (`TaskSpec.port`, `$PORT`).
    pub port: Option<u16>,
    /// Desired number of tasks (default 1; 0 is allowed and means "stopped").
    pub replicas: u32,
    /// CPU reservation in units, 1024 = one core (as in ECS). None = unlimited.
    pub cpu: Option<u32>,
    /// Memory limit in bytes. None = unlimited.
    pub memory: Option<u64>,
    /// Present for every web service (defaults filled in), None for workers.
    pub health: Option<HealthCheck>,
    /// Signal name as written, normalised to upper case with the SIG prefix, e.g. "SIGTERM".
    pub stop_signal: String,
    pub stop_timeout: Duration,
    /// The account the service's tasks run as; None: the server's task user.
    #[serde(default)]
    pub user: Option<String>,
    /// How requests are spread over the tasks of a web service.
    #[serde(default)]
    pub balance: Balance,
    /// Run once per deploy, as a one-off task of the new revision, before any
    /// new task takes traffic (database migrations). argv, like `command`.
    /// The key is `release` in wharf.toml and in stored revisions.
    #[serde(default, rename = "release")]
    pub release_command: Option<Vec<String>>,
    /// How a new revision replaces the running one.
    #[serde(default)]
    pub deploy: DeployPolicy,
    /// The autoscaler's policy; None: the replicas are set by hand.
    #[serde(default)]
    pub scale: Option<ScalePolicy>,
}

/// How the autoscaler chooses a service's replicas from its tasks' CPU,
/// measured against their reserved `cpu` (one core when none is reserved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalePolicy {
    pub min: u32,
    pub max: u32,
    pub rule: ScaleRule,
    /// Consecutive datapoints a decision needs.
    pub datapoints: u32,
    /// Each datapoint is the average CPU over this long.
    pub period: Duration,
    /// Tasks added or removed by one step-policy action.
    pub step: u32,
    /// After an action, no other for this long.
    pub cooldown: Duration,
}

/// What a `scale` table gets for the keys it leaves out (`cooldown`
/// defaults to the `period`); the JSON Schema shows the same values.
impl ScalePolicy {
    pub const DEFAULT_DATAPOINTS: u32 = 3;
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);
    pub const DEFAULT_STEP: u32 = 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRule {
    /// `datapoints` in a row at or above `above` add `step` tasks; in a row
    /// below `below` remove `step`.
    Step { above: Rate, below: Rate },
    /// Keep the average near `cpu`: out as soon as a datapoint asks for more
    /// tasks, in once `datapoints` in a row ask for fewer.
    Target { cpu: Rate },
}

/// How a deploy moves a service to a new revision, and when it gives up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployPolicy {
    pub strategy: Strategy,
    /// Rolling: tasks started above `replicas` while old ones still run.
    pub max_surge: u32,
    /// Rolling: ready tasks allowed below `replicas` while replacing.
    pub max_unavailable: u32,
    /// Every new task must be ready within this, or the deploy fails.
    pub deadline: Duration,
    /// After the switch, the new revision is watched this long (and with
    /// blue-green the old set is kept running, for an instant switch back).
    pub bake: Duration,
    /// A failed deploy returns to the last good revision by itself.
    pub auto_rollback: bool,
    /// During the bake, the new revision fails when more than this share of
    /// its answers are 5xx.
    pub max_error_rate: Rate,
    /// During the bake, the new revision fails when its p99 latency is above this.
    pub max_p99: Option<Duration>,
    /// How long a task leaving the pool may finish its requests and
    /// WebSockets before it is signalled.
    pub drain_timeout: Duration,
    /// The release command must finish within this.
    pub release_timeout: Duration,
    /// Hold the service's requests (pause) while the release command runs.
    pub release_pause: bool,
    /// Canary: the new revision's share of the requests at each step, in
    /// percent, strictly increasing within 1..=99; promoted after the last.
    #[serde(default)]
    pub steps: Vec<u32>,
    /// Canary: how long each step is watched before the next.
    #[serde(default)]
    pub step_interval: Duration,
    /// Canary: how a client is kept on one side; None: each request by weight.
    #[serde(default)]
    pub sticky: Option<StickyBy>,
}

/// How a canary keeps a client on the side (old or new tasks) it first got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StickyBy {
    /// A cookie the proxy sets on the first answer.
    Cookie,
    /// A consistent hash of this request header's value (a user id).
    Header(String),
}

impl Default for DeployPolicy {
    fn default() -> Self {
        DeployPolicy {
            strategy: Strategy::Rolling,
            max_surge: 1,
            max_unavailable: 0,
            deadline: Duration::from_secs(120),
            bake: Duration::from_secs(10),
            auto_rollback: true,
            max_error_rate: Rate::from_percent(5),
            max_p99: None,
            drain_timeout: Duration::from_secs(30),
            release_timeout: Duration::from_secs(600),
            release_pause: false,
            steps: DeployPolicy::DEFAULT_STEPS.to_vec(),
            step_interval: Duration::from_secs(60),
            sticky: None,
        }
    }
}

impl DeployPolicy {
    pub const DEFAULT_STEPS: [u32; 2] = [10, 50];
    /// At most this many canary steps.
    pub const MAX_STEPS: usize = 10;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Replace tasks a few at a time (max surge / max unavailable).
    #[default]
    Rolling,
    /// Start the whole new set, switch the pool at once, keep the old set for the bake.
    BlueGreen,
    /// Start the whole new set, give it a growing share of the requests step
    /// by step, each step watched like the bake; then all of them.
    Canary,
}

/// A share, kept in parts per million so specs stay comparable (`Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Rate {
    pub per_million: u32,
}

impl Rate {
    pub const fn from_percent(p: u32) -> Rate {
        Rate { per_million: p * 10_000 }
    }

    pub fn from_fraction(f: f64) -> Rate {
        Rate { per_million: (f.clamp(0.0, 1.0) * 1e6).round() as u32 }
    }

    pub fn fraction(self) -> f64 {
        f64::from(self.per_million) / 1e6
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.fraction() * 100.0)
    }
}

/// How a web service's requests are spread over its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Two random tasks, the one with fewer requests in flight wins.
    #[default]
    LeastOutstanding,
    RoundRobin,
}

/// What a service gets for the keys it leaves out; the JSON Schema shows
/// the same values as its defaults.
impl Service {
    pub const DEFAULT_WORKDIR: &'static str = ".";
    pub const DEFAULT_REPLICAS: u32 = 1;
    pub const DEFAULT_STOP_SIGNAL: &'static str = "SIGTERM";
    pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn is_web(&self) -> bool {
        self.port.is_some()
    }
}

/// How wharf decides that a web task is ready for traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// HTTP path to GET (must start with '/'); None means a TCP connect check.
    pub path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures during this time after a task starts do not count against it.
    pub grace: Duration,
    /// Consecutive successes before a task is healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures before a healthy task is unhealthy.
    pub unhealthy_threshold: u32,
    /// Status codes that count as passing, inclusive (default 200-399).
    #[serde(default = "default_status")]
    pub status: (u16, u16),
}

fn default_status() -> (u16, u16) {
    (200, 399)
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            grace: Duration::from_secs(0),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            status: default_status(),
        }
    }
}

/// host + path prefix → service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Lower-case host without port or trailing dot; may start with "*." for a
    /// wildcard; None matches any host.
    pub host: Option<String>,
    /// Path prefix, always starting with '/', without a trailing '/' unless it is "/".
    pub path: String,
    pub service: String,
    /// Remove the path prefix before forwarding.
    pub strip_prefix: bool,
    /// How long the service may take to start answering (response headers).
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub connect_timeout: Option<Duration>,
    /// Largest request body in bytes.
    #[serde(default)]
    pub max_body: Option<u64>,
    /// What plain-HTTP requests get.
    #[serde(default)]
    pub https: HttpsMode,
    /// Strict-Transport-Security max-age on HTTPS answers; None: no header.
    #[serde(default)]
    pub hsts: Option<Duration>,
    /// The host's certificate from files on the server, instead of one
    /// obtained automatically.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

impl Route {
    pub const DEFAULT_STRIP_PREFIX: bool = false;
    /// The longest `hsts` max-age (two years: what browsers' preload lists ask for).
    pub const MAX_HSTS: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
}

/// What a route does with a request that came over plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpsMode {
    /// 308 to the same URL over https, once the host has a certificate
    /// (until then it is served over HTTP).
    #[default]
    Redirect,
    /// Refused (403) over plain HTTP; served over HTTPS only.
    Only,
    /// Served over both, as asked.
    Off,
}

impl HttpsMode {
    pub const NAMES: [&'static str; 3] = ["redirect", "only", "off"];

    pub fn name(self) -> &'static str {
        match self {
            HttpsMode::Redirect => "redirect",
            HttpsMode::Only => "only",
            HttpsMode::Off => "off",
        }
    }
}

/// A certificate chain and its private key, as PEM files on the server
/// (absolute paths: the server reads them, not the deploying machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
}
