//! The one description of `wharf.toml`: these serde structs say which keys
//! each table takes (in the order hints list them), their types and ranges,
//! their defaults and what they mean. From them come the JSON Schema that
//! editors (VS Code Even Better TOML, taplo) use, the key lists `check.rs`
//! validates against ([`Table::keys`]) and the generated key reference
//! (`docs/wharf.toml.md`). Doc comments here become the descriptions editors show.
//!
//! Validation itself is done by `check.rs`, which reports every problem with
//! its position and turns the file into the typed model of `types.rs`.

#![allow(dead_code)] // fields are read by serde and schemars only

use std::collections::BTreeMap;

use std::sync::OnceLock;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::values::MAX_REPLICAS;
use crate::{
    Balance, Concurrency, DeployPolicy, HealthCheck, HttpsMode, Job, Route, ScalePolicy, Service, DEFAULT_JOB_TIMEOUT,
};

/// The production setup of one app: its services and the routes to them.
/// Lives at the root of the app's repository as `wharf.toml`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wharf.toml")]
pub(crate) struct File {
    /// The app's name: lowercase letters, digits and '-', starting with a
    /// letter and not ending with '-', at most 40 characters.
    #[schemars(pattern(crate::values::NAME_PATTERN), example = &"convergence")]
    pub app: String,

    /// Long-running services, one table each: `[service.api]`. A service with a
    /// `port` is a web service (routed, health-checked); one without is a worker.
    /// Service names follow the same rule as the app name.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": crate::values::NAME_PATTERN }))]
    pub service: BTreeMap<String, ServiceTable>,

    /// Routes from "HOST/PATH", "HOST" or "/PATH" to a web service. Hosts match
    /// case-insensitively and without a port; "*.example.com" matches any
    /// subdomain; a key without a host matches any host. Paths are prefixes.
    /// Example: `"example.com/api" = "api"`.
    #[serde(default)]
    pub route: BTreeMap<String, RouteTarget>,

    /// Scheduled jobs, one table each: `[job.nightly-digest]`. A job runs its
    /// command on a cron schedule, as a one-off task with the code and
    /// environment of one of the app's services. Job names follow the same
    /// rule as service names.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": crate::values::NAME_PATTERN }))]
    pub job: BTreeMap<String, JobTable>,

    /// Environments, one overlay each: `[env.staging]`. `wharf deploy --env
    /// staging` deploys the base file with the overlay applied, as its own
    /// app (default name "APP-staging", with its own secrets). Environment
    /// names follow the same rule as the app name; at most 16 environments.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": crate::values::NAME_PATTERN }, "maxProperties" = crate::values::MAX_ENVIRONMENTS))]
    pub env: BTreeMap<String, EnvTable>,
}

/// One environment: keys that replace the base file's.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvTable {
    /// The environment's app name. Default: the base app's name, '-', the
    /// environment's name ("shop-staging").
    #[schemars(pattern(crate::values::NAME_PATTERN), example = &"shop-staging")]
    pub app: Option<String>,

    /// Keys of a base service, by service: `[env.staging.service.web]`
    /// `replicas = 1`. Each key replaces the base's, except `env`, which is
    /// merged by variable (the overlay's value wins). The service must be
    /// declared in the base file.
    #[serde(default)]
    pub service: BTreeMap<String, BTreeMap<String, serde_json::Value>>,

    /// The environment's routes: replaces the base's `[route]` table as a
    /// whole, so no host of the base reaches this environment.
    #[serde(default)]
    pub route: BTreeMap<String, RouteTarget>,

    /// Keys of a base job, by job: `[env.staging.job.digest]`; each replaces
    /// the base's. The job must be declared in the base file.
    #[serde(default)]
    pub job: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

/// One scheduled job.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobTable {
    /// When to run: five cron fields, minute hour day-of-month month
    /// day-of-week ("0 3 * * *" is 03:00 every day, "*/5 * * * *" every five
    /// minutes), or @hourly, @daily, @weekly, @monthly, @yearly.
    #[schemars(example = &"0 3 * * *")]
    pub schedule: String,
    /// The IANA time zone the schedule is read in, e.g. "Europe/Paris".
    /// Default "UTC". Daylight saving changes are followed.
    #[schemars(extend("default" = Job::DEFAULT_TIMEZONE))]
    pub timezone: Option<String>,
    /// What to run; same form as a service's `command`.
    pub command: Command,
    /// The service whose current revision (code, workdir, env, limits) the
    /// job runs with. May be left out when the app has one service.
    pub service: Option<String>,
    /// A run still going after this is stopped and recorded as timed out. At most 7 days. Default "1h".
    #[schemars(extend("default" = duration(DEFAULT_JOB_TIMEOUT)))]
    pub timeout: Option<String>,
    /// How many times a failed run is tried again, with backoff. Default 0.
    #[schemars(range(min = 0, max = 10), extend("default" = Job::DEFAULT_RETRIES))]
    pub retries: Option<u32>,
    /// When a run is due while the previous one still runs: "forbid" skips
    /// the new one (and records it), "allow" runs both, "replace" stops the
    /// old one. Default "forbid".
    #[schemars(extend("enum" = ["forbid", "allow", "replace"], "default" = Concurrency::default()))]
    pub concurrency: Option<String>,
}

/// One service: a long-running process type of the app.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceTable {
    /// What to run. An array is the argv: `["node", "server.js"]`; the first
    /// item is looked up on PATH. `$PORT` and `${NAME}` are replaced from the
    /// task's environment; `$$` is a literal `$`. A single string is split on whitespace (no
    /// quoting), so `"python -m rq worker"` works but anything with quotes
    /// must be written as an array.
    pub command: Command,

    /// Working directory, relative to the release directory. Default ".".
    /// Absolute paths and `..` are rejected.
    #[schemars(extend("default" = Service::DEFAULT_WORKDIR))]
    pub workdir: Option<String>,

    /// Having a port makes this a web service: it is health-checked and can be
    /// routed to. It is the port the app listens on inside a container (a
    /// container driver publishes it); a process task gets a free port of its
    /// own in $PORT instead and must listen there, so tasks and revisions run
    /// side by side. Unique per app.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,

    /// Number of tasks to run. Default 1; 0 keeps the service stopped.
    #[schemars(range(min = 0, max = MAX_REPLICAS), extend("default" = Service::DEFAULT_REPLICAS))]
    pub replicas: Option<u32>,

    /// CPU reservation in units: 1024 is one core (as in ECS). Default: unlimited.
    #[schemars(range(min = 1, max = 65536), example = 1024)]
    pub cpu: Option<u32>,

    /// Memory limit: a size like "512MiB", "1GiB" or "256MB", or an integer
    /// number of bytes. At least 4MiB, at most 1TiB. Default: unlimited.
    pub memory: Option<Size>,

    /// Environment variables for the service's tasks. Names: letters, digits
    /// and '_', not starting with a digit. Values must be strings (quote numbers),
    /// or `{ secret = "name" }` for one of the app's secrets (`wharf secret set`).
    #[schemars(extend("propertyNames" = { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }))]
    pub env: Option<BTreeMap<String, EnvValue>>,

    /// Signal sent to stop a task: SIGTERM (default), SIGINT, SIGQUIT, SIGHUP,
    /// SIGUSR1, SIGUSR2, SIGKILL or SIGWINCH. The "SIG" prefix is optional and
    /// case does not matter.
    #[schemars(
        extend("default" = Service::DEFAULT_STOP_SIGNAL),
        extend("examples" = ["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGWINCH"])
    )]
    pub stop_signal: Option<String>,

    /// How long to wait after the stop signal before killing the task: a
    /// duration like "10s" (default), "1m30s" or "250ms"; at most 1h.
    #[schemars(extend("default" = duration(Service::DEFAULT_STOP_TIMEOUT)))]
    pub stop_timeout: Option<String>,

    /// The account the service's tasks run as (a root server only; it must
    /// exist). Default: the server's task user (`nobody`, `--task-user`).
    #[schemars(extend("examples" = ["www-data"]), extend("pattern" = "^[a-z_][a-z0-9_-]{0,31}$"))]
    pub user: Option<String>,

    /// How wharf decides a task is ready for traffic. Only for web services
    /// (with a `port`); without it, a web service gets a TCP connect check
    /// every 5s.
    pub health: Option<HealthTable>,
    /// How requests are spread over the tasks of a web service:
    /// "least_outstanding" (two random tasks, the less busy wins) or "round_robin".
    #[schemars(extend("enum" = ["least_outstanding", "round_robin"], "default" = Balance::default()))]
    pub balance: Option<String>,

    /// Run once per deploy as a one-off task of the new revision, before any
    /// new task takes traffic: database migrations. Same form as `command`.
    /// If it fails, the deploy stops and traffic never moves.
    pub release: Option<Command>,

    /// How a deploy replaces the running revision, and when it rolls back.
    pub deploy: Option<DeployTable>,

    /// Autoscaling on CPU: replicas between `min` and `max`, by a step policy
    /// (`cpu_above`/`cpu_below`) or target tracking (`target_cpu`).
    pub scale: Option<ScaleTable>,
}

/// One environment variable's value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum EnvValue {
    Text(String),
    Secret(SecretTable),
}

/// A secret of the app as the value: set with `wharf secret set NAME` (the
/// value read from stdin), kept encrypted by the server and put only into
/// the task's environment; shown as `***` everywhere else.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretTable {
    /// The secret's name: letters, digits, '_' and '-', starting with a letter.
    #[schemars(example = &"db_password")]
    pub secret: String,
}

/// Autoscaler settings. CPU is measured against the reserved `cpu` (one core
/// when none is reserved).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScaleTable {
    /// Fewest replicas. Required.
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub min: u32,
    /// Most replicas. Required.
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub max: u32,
    /// Step policy: `datapoints` periods in a row at or above this add `step` tasks.
    pub cpu_above: Option<RateSpec>,
    /// Step policy: `datapoints` periods in a row below this remove `step` tasks. Default: `cpu_above`.
    pub cpu_below: Option<RateSpec>,
    /// Target tracking: keep the average CPU near this.
    pub target_cpu: Option<RateSpec>,
    /// Consecutive datapoints a decision needs. Default 3.
    #[schemars(range(min = 1, max = 100), extend("default" = ScalePolicy::DEFAULT_DATAPOINTS))]
    pub datapoints: Option<u32>,
    /// Length of one datapoint (average CPU over it). At most 1h. Default "1m".
    #[schemars(extend("default" = duration(ScalePolicy::DEFAULT_PERIOD)))]
    pub period: Option<String>,
    /// Tasks added or removed per step-policy action. Default 1.
    #[schemars(range(min = 1, max = MAX_REPLICAS), extend("default" = ScalePolicy::DEFAULT_STEP))]
    pub step: Option<u32>,
    /// No other action this long after one. At most 1 day. Default: `period`.
    pub cooldown: Option<String>,
}

/// Deploy settings; every key is optional.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployTable {
    /// "rolling" replaces tasks a few at a time; "blue-green" starts the
    /// whole new set, switches traffic at once, and keeps the old set running
    /// during the bake for an instant switch back; "canary" starts the whole
    /// new set and gives it a growing share of the requests (`steps`).
    #[schemars(extend("enum" = ["rolling", "blue-green", "canary"], "default" = DeployPolicy::default().strategy))]
    pub strategy: Option<String>,
    /// Rolling: tasks started above `replicas` while old ones still run. Default 1.
    #[schemars(range(min = 0, max = MAX_REPLICAS), extend("default" = DeployPolicy::default().max_surge))]
    pub max_surge: Option<u32>,
    /// Rolling: ready tasks allowed below `replicas` during the deploy. Default 0.
    #[schemars(range(min = 0, max = MAX_REPLICAS), extend("default" = DeployPolicy::default().max_unavailable))]
    pub max_unavailable: Option<u32>,
    /// Every new task must be ready within this, or the deploy fails. At most 1 day. Default "2m".
    #[schemars(extend("default" = duration(DeployPolicy::default().deadline)))]
    pub deadline: Option<String>,
    /// After the switch, how long the new revision is watched before the
    /// deploy succeeds. At most 1 day. Default "10s".
    #[schemars(extend("default" = duration(DeployPolicy::default().bake)))]
    pub bake: Option<String>,
    /// Return to the last good revision when a deploy fails. Default true.
    #[schemars(extend("default" = DeployPolicy::default().auto_rollback))]
    pub auto_rollback: Option<bool>,
    /// During the bake, the largest share of 5xx answers: 0.05 or "5%". Default "5%".
    #[schemars(extend("default" = DeployPolicy::default().max_error_rate.to_string()))]
    pub max_error_rate: Option<RateSpec>,
    /// During the bake, the highest p99 latency ("800ms"). At most 1h. Default: not checked.
    pub max_p99: Option<String>,
    /// How long a task leaving the pool may finish its requests and
    /// WebSockets before it is signalled. At most 1h. Default "30s".
    #[schemars(extend("default" = duration(DeployPolicy::default().drain_timeout)))]
    pub drain_timeout: Option<String>,
    /// How long the release command may run. At most 1 day. Default "10m".
    #[schemars(extend("default" = duration(DeployPolicy::default().release_timeout)))]
    pub release_timeout: Option<String>,
    /// Hold the service's requests while the release command runs. Default false.
    #[schemars(extend("default" = DeployPolicy::default().release_pause))]
    pub release_pause: Option<bool>,
    /// Canary: the new revision's share of the requests at each step
    /// ("10%"), strictly increasing from 1% to 99%, at most 10 steps; each
    /// step is watched like the bake, and after the last the new revision
    /// gets all the requests. Default ["10%", "50%"].
    #[schemars(length(min = 1, max = 10), extend("default" = ["10%", "50%"]))]
    pub steps: Option<Vec<String>>,
    /// Canary: how long each step lasts. At most 1 day. Default "1m".
    #[schemars(extend("default" = duration(DeployPolicy::default().step_interval)))]
    pub step_interval: Option<String>,
    /// Canary: keep a client on the side it first got: true (a cookie) or
    /// "header:NAME" (a consistent hash of that request header). Default: by
    /// weight alone.
    pub sticky: Option<StickySpec>,
}

/// A canary's stickiness: true, or "header:NAME".
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum StickySpec {
    Cookie(bool),
    Header(#[schemars(pattern("^header:[A-Za-z0-9_-]{1,64}$"), example = &"header:X-User-Id")] String),
}

/// A share: a fraction or a percentage.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum RateSpec {
    Fraction(#[schemars(range(min = 0.0, max = 1.0))] f64),
    Percent(#[schemars(pattern("^[0-9.]+%$"), example = &"5%")] String),
}

/// argv as an array, or one string split on whitespace.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum Command {
    /// The argv, one item per argument: ["node", "server.js"].
    Argv(#[schemars(length(min = 1))] Vec<String>),
    /// A command line split on whitespace (no quoting): "python -m rq worker".
    Line(#[schemars(length(min = 1))] String),
}

/// A human size or a number of bytes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum Size {
    /// Bytes.
    Bytes(#[schemars(range(min = crate::check::MIN_MEMORY))] u64),
    /// A number and a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB,
    /// GiB, TiB (powers of 1024; "Mi" etc. also work). "512m" is rejected as ambiguous.
    Human(#[schemars(example = &"512MiB")] String),
}

/// Health check settings; every key is optional.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthTable {
    /// HTTP path to GET, starting with '/'. Without it the check is a TCP
    /// connect to the port.
    #[schemars(pattern("^/"), example = &"/healthz")]
    pub path: Option<String>,
    /// Time between checks. At most 1h. Default "5s".
    #[schemars(extend("default" = duration(HealthCheck::default().interval)))]
    pub interval: Option<String>,
    /// How long one check may take; at most `interval`. Default "2s".
    #[schemars(extend("default" = duration(HealthCheck::default().timeout)))]
    pub timeout: Option<String>,
    /// After a task starts, failures during this time do not count. At most 1h. Default "0s".
    #[schemars(extend("default" = duration(HealthCheck::default().grace)))]
    pub grace: Option<String>,
    /// Consecutive successes before a task gets traffic. Default 1.
    #[schemars(range(min = 1, max = 100), extend("default" = HealthCheck::default().healthy_threshold))]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures before a healthy task stops getting traffic. Default 3.
    #[schemars(range(min = 1, max = 100), extend("default" = HealthCheck::default().unhealthy_threshold))]
    pub unhealthy_threshold: Option<u32>,
    /// Status codes that pass: one code (200) or an inclusive range ("200-299").
    #[schemars(extend("default" = status(HealthCheck::default().status)))]
    pub status: Option<StatusSpec>,
}

/// Where a route goes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum RouteTarget {
    /// The name of a web service.
    Service(String),
    /// A web service, with options.
    Table(RouteTable),
}

/// A route with options.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteTable {
    /// The name of a web service (one with a `port`).
    pub service: String,
    /// Remove the route's path prefix before forwarding: on a "/api" route,
    /// a request for /api/users reaches the service as /users. Default false.
    #[schemars(extend("default" = Route::DEFAULT_STRIP_PREFIX))]
    pub strip_prefix: Option<bool>,
    /// How long the service may take to start answering ("30s"); at most 1h; default 60s.
    pub timeout: Option<String>,
    /// How long connecting to a task may take ("2s"); at most 1h; default 5s.
    pub connect_timeout: Option<String>,
    /// Largest request body ("10MiB"); larger ones get 413. At most 1TiB; default 100MiB
    /// (the server's, like the two timeouts above).
    pub max_body: Option<RouteSize>,
    /// Requests over plain HTTP: "redirect" (308 to https once the host has a
    /// certificate), "only" (refused with 403; HTTPS only) or "off" (served as they come).
    #[schemars(extend("enum" = HttpsMode::NAMES, "default" = HttpsMode::default()))]
    pub https: Option<String>,
    /// Send Strict-Transport-Security with this max-age on HTTPS answers
    /// ("365d"); at most 2 years. Off by default: once a browser has seen it,
    /// the host cannot go back to plain HTTP for that long.
    pub hsts: Option<String>,
    /// The host's certificate from files on the server instead of an automatic
    /// one: { cert = "/etc/wharf/certs/example.com.pem", key = "/etc/wharf/certs/example.com.key" }.
    /// Needed for wildcard hosts. Checked at deploy (the key matches, the
    /// certificate covers the host and has not expired) and re-read when the files change.
    pub tls: Option<TlsTable>,
}

/// A certificate from files on the server.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsTable {
    /// The certificate chain, PEM, leaf first (absolute path on the server).
    pub cert: String,
    /// Its private key, PEM: PKCS#8, RSA or EC (absolute path on the server).
    pub key: String,
}

/// A status code or an inclusive range.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum StatusSpec {
    Code(#[schemars(range(min = 100, max = 599))] u16),
    Range(#[schemars(pattern("^[1-5][0-9][0-9]-[1-5][0-9][0-9]$"), example = &"200-299")] String),
}

/// A body size: bytes or a human size.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum RouteSize {
    /// Bytes.
    Bytes(u64),
    /// A size with a unit, e.g. "10MiB".
    Human(#[schemars(example = &"10MiB")] String),
}

/// A default duration as a file would write it ("10s", "2m").
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A default status range as a file would write it ("200-399").
fn status((low, high): (u16, u16)) -> String {
    format!("{low}-{high}")
}

/// A table of `wharf.toml`, named after the struct that describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Top,
    Service,
    Health,
    Deploy,
    Scale,
    Route,
    Tls,
    Job,
    Env,
}

impl Table {
    pub(crate) const ALL: [Table; 9] = [
        Table::Top,
        Table::Service,
        Table::Health,
        Table::Deploy,
        Table::Scale,
        Table::Route,
        Table::Tls,
        Table::Job,
        Table::Env,
    ];

    /// The keys the table accepts, in declaration order, read from its
    /// struct's derived `Deserialize` (so a new field is a new key).
    pub(crate) fn keys(self) -> &'static [&'static str] {
        match self {
            Table::Top => fields::<File>(),
            Table::Service => fields::<ServiceTable>(),
            Table::Health => fields::<HealthTable>(),
            Table::Deploy => fields::<DeployTable>(),
            Table::Scale => fields::<ScaleTable>(),
            Table::Route => fields::<RouteTable>(),
            Table::Tls => fields::<TlsTable>(),
            Table::Job => fields::<JobTable>(),
            Table::Env => fields::<EnvTable>(),
        }
    }

    /// Where the table's properties are in [`json_schema`].
    pub(crate) fn pointer(self) -> &'static str {
        match self {
            Table::Top => "/properties",
            Table::Service => "/definitions/ServiceTable/properties",
            Table::Health => "/definitions/HealthTable/properties",
            Table::Deploy => "/definitions/DeployTable/properties",
            Table::Scale => "/definitions/ScaleTable/properties",
            Table::Route => "/definitions/RouteTable/properties",
            Table::Tls => "/definitions/TlsTable/properties",
            Table::Job => "/definitions/JobTable/properties",
            Table::Env => "/definitions/EnvTable/properties",
        }
    }

    /// The inclusive range the description gives integer `key`: the
    /// checker enforces the bounds the schema shows.
    pub(crate) fn int_range(self, key: &str) -> (i64, i64) {
        static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
        let property = SCHEMA
            .get_or_init(json_schema)
            .pointer(self.pointer())
            .and_then(|p| p.get(key))
            .filter(|p| p["type"] == "integer")
            .unwrap_or_else(|| panic!("{self:?}.{key} is not an integer key of the description"));
        let bound = |name: &str| property.get(name).and_then(serde_json::Value::as_i64);
        (bound("minimum").unwrap_or(0), bound("maximum").unwrap_or(i64::MAX))
    }

    /// How the table is written in a file, for the key reference.
    pub(crate) fn heading(self) -> &'static str {
        match self {
            Table::Top => "top level",
            Table::Service => "[service.NAME]",
            Table::Health => "[service.NAME] health = { ... }",
            Table::Deploy => "[service.NAME] deploy = { ... }",
            Table::Scale => "[service.NAME] scale = { ... }",
            Table::Route => "[route] \"HOST/PATH\" = { ... }",
            Table::Tls => "[route] \"HOST/PATH\" = { tls = { ... } }",
            Table::Job => "[job.NAME]",
            Table::Env => "[env.NAME]",
        }
    }
}

/// The field names serde's derive passes to `deserialize_struct`: asking a
/// deserializer that stops right there gives them without a value to read.
fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe;
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names only")
        }
    }
    impl std::error::Error for Fields {}
    impl serde::de::Error for Fields {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }
    impl<'de> serde::Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Fields(fields)) => fields,
        Ok(_) => &[],
    }
}

/// The JSON Schema (draft-07, which editors support best) of `wharf.toml`.
pub(crate) fn json_schema() -> serde_json::Value {
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<File>()
        .to_value();
    tidy(&mut schema);
    schema
}

/// TOML has no null, so the `null` that schemars allows for `Option` fields
/// only confuses editors; the Rust-specific "uint32"-style formats likewise.
fn tidy(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any_of)) = map.get_mut("anyOf") {
                any_of.retain(|s| s.get("type").is_none_or(|t| t != "null"));
                if any_of.len() == 1 {
                    let only = any_of.remove(0);
                    map.remove("anyOf");
                    map.insert("allOf".into(), Value::Array(vec![only]));
                }
            }
            if map.get("format").and_then(Value::as_str).is_some_and(|f| f.starts_with("uint") || f.starts_with("int"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn properties(schema: &serde_json::Value, pointer: &str) -> BTreeSet<String> {
        schema
            .pointer(pointer)
            .and_then(|p| p.as_object())
            .unwrap_or_else(|| panic!("no properties at {pointer}: {schema:#}"))
            .keys()
            .cloned()
            .collect()
    }

    fn set(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    /// The validator's key lists and the schema come from the same structs.
    #[test]
    fn schema_keys_are_the_table_keys() {
        let schema = json_schema();
        for table in Table::ALL {
            assert!(!table.keys().is_empty(), "{table:?} has no keys");
            assert_eq!(properties(&schema, table.pointer()), set(table.keys()), "{table:?}");
        }
        // The order hints list them in.
        assert_eq!(Table::Top.keys(), ["app", "service", "route", "job", "env"]);
        assert_eq!(&Table::Service.keys()[..3], ["command", "workdir", "port"]);
    }

    /// A file with `line` written inside a minimal `table`.
    fn with_line(table: Table, line: &str) -> String {
        let (before, after) = match table {
            Table::Top => ("app = \"a\"\nservice.w.command = \"x\"\n", ""),
            Table::Service => ("app = \"a\"\n[service.w]\ncommand = \"x\"\nport = 1\n", ""),
            Table::Health => ("app = \"a\"\n[service.w]\ncommand = \"x\"\nport = 1\n[service.w.health]\n", ""),
            Table::Deploy => ("app = \"a\"\n[service.w]\ncommand = \"x\"\nport = 1\n[service.w.deploy]\n", ""),
            Table::Scale => (
                "app = \"a\"\n[service.w]\ncommand = \"x\"\n[service.w.scale]\nmin = 1\nmax = 2\ntarget_cpu = 0.5\n",
                "",
            ),
            Table::Route => {
                ("app = \"a\"\n[service.w]\ncommand = \"x\"\nport = 1\n[route.\"/\"]\nservice = \"w\"\n", "")
            }
            Table::Tls => (
                "app = \"a\"\n[service.w]\ncommand = \"x\"\nport = 1\n[route.\"a.example/\"]\nservice = \"w\"\n\
                 [route.\"a.example/\".tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
                "",
            ),
            Table::Job => {
                ("app = \"a\"\n[service.w]\ncommand = \"x\"\n[job.j]\nschedule = \"@daily\"\ncommand = \"y\"\n", "")
            }
            Table::Env => ("app = \"a\"\n[service.w]\ncommand = \"x\"\n[env.e]\n", ""),
        };
        format!("{before}{line}\n{after}")
    }

    fn messages(text: &str) -> Vec<String> {
        match crate::parse(text, "wharf.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics().iter().map(|d| d.message.clone()).collect(),
        }
    }

    /// Every key the description knows is accepted by the checker in its
    /// table (its value may be wrong, its name is not), and any other key is
    /// rejected in every table.
    #[test]
    fn the_checker_takes_exactly_the_described_keys() {
        for table in Table::ALL {
            assert!(messages(&with_line(table, "")).is_empty(), "{table:?}: {:?}", messages(&with_line(table, "")));
            for key in table.keys() {
                let text = with_line(table, &format!("{key} = 1"));
                let all = messages(&text);
                if all.iter().any(|m| m.contains("duplicate key")) {
                    continue; // the minimal table already sets it, so it is accepted
                }
                assert!(!all.iter().any(|m| m.starts_with("unknown key")), "{table:?}.{key}: {all:?}\n{text}");
            }
            let all = messages(&with_line(table, "zz_not_a_key = 1"));
            assert!(all.iter().any(|m| m.starts_with("unknown key `zz_not_a_key`")), "{table:?}: {all:?}");
        }
    }

    /// The defaults the schema shows are the ones the checker fills in:
    /// writing each one out gives the same spec as leaving it out.
    #[test]
    fn schema_defaults_are_the_checkers_defaults() {
        let schema = json_schema();
        let mut checked = 0;
        for table in Table::ALL {
            let properties = schema.pointer(table.pointer()).and_then(|p| p.as_object()).unwrap();
            let without = crate::parse(&with_line(table, ""), "wharf.toml").unwrap();
            for (key, property) in properties {
                let Some(default) = property.get("default") else { continue };
                let written = match default {
                    serde_json::Value::String(s) => format!("{s:?}"),
                    other => other.to_string(),
                };
                let text = with_line(table, &format!("{key} = {written}"));
                let with = crate::parse(&text, "wharf.toml").unwrap_or_else(|e| panic!("{table:?}.{key}: {e}"));
                assert_eq!(with, without, "{table:?}.{key} = {written} is not what leaving it out gives");
                checked += 1;
            }
        }
        assert!(checked >= 28, "only {checked} defaults in the schema");
    }

    /// A default the description's prose states ("Default \"5s\"."), as written.
    fn prose_default(description: &str) -> Option<String> {
        let rest = &description[description.find("Default ")? + "Default ".len()..];
        let written = match rest.strip_prefix('"') {
            Some(quoted) => format!("\"{}\"", &quoted[..quoted.find('"')?]),
            None => rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '%')).next()?.to_string(),
        };
        (!written.is_empty()).then_some(written)
    }

    /// Where a description states a default in words ("Default 1."), it is
    /// the declared one. A default the server chooses (a route's limits) is
    /// written in lower case: "default 60s".
    #[test]
    fn prose_defaults_are_the_declared_defaults() {
        let schema = json_schema();
        let mut stated = 0;
        for table in Table::ALL {
            for (key, p) in schema.pointer(table.pointer()).and_then(|p| p.as_object()).unwrap() {
                let Some(words) = p["description"].as_str().and_then(prose_default) else { continue };
                let declared = p.get("default").map(crate::reference::toml_value);
                assert_eq!(declared.as_deref(), Some(words.as_str()), "{table:?}.{key}: {}", p["description"]);
                stated += 1;
            }
        }
        assert!(stated >= 20, "only {stated} defaults stated in words");
        assert_eq!(prose_default("Number of tasks. Default 1; 0 stops it."), Some("1".into()));
        assert_eq!(prose_default("Default: unlimited."), None);
    }

    /// A file with `key = value` inside a minimal `table`, replacing the
    /// minimal table's own line for `key` if it has one.
    fn with_key(table: Table, key: &str, value: &str) -> String {
        let text = with_line(table, "\u{0}");
        let (before, after) = text.split_once('\u{0}').unwrap();
        let own = before.rfind("\n[").map_or(0, |i| i + 1);
        let kept: String = before[own..]
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")) && !l.starts_with(&format!("{key}.")))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{}{kept}{key} = {value}{after}", &before[..own])
    }

    /// The JSON types a property allows, through `$ref`, `allOf` and `anyOf`.
    fn types(root: &serde_json::Value, p: &serde_json::Value) -> Vec<String> {
        if let Some(name) = p.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.rsplit('/').next()) {
            return types(root, &root["definitions"][name]);
        }
        if let Some(list) = p.get("allOf").or_else(|| p.get("anyOf")).and_then(|l| l.as_array()) {
            return list.iter().flat_map(|v| types(root, v)).collect();
        }
        p.get("type").and_then(|t| t.as_str()).map(str::to_string).into_iter().collect()
    }

    /// The checker rejects every value of a type the schema does not allow,
    /// and integers outside the range it gives (and takes its ends); it
    /// takes every choice the schema lists for a key, and nothing else.
    #[test]
    fn the_checker_enforces_the_described_types_and_ranges() {
        let schema = json_schema();
        let samples = [
            ("string", "\"zz\"", "a string"),
            ("integer", "7", "an integer"),
            ("number", "0.5", "a float"),
            ("boolean", "true", "a boolean"),
            ("array", "[\"zz\"]", "an array"),
            ("object", "{}", "a table"),
        ];
        let mut checked = 0;
        for table in Table::ALL {
            for key in table.keys() {
                let p = &schema.pointer(table.pointer()).unwrap()[*key];
                let allowed = types(&schema, p);
                assert!(!allowed.is_empty(), "{table:?}.{key} has no type");
                for (ty, written, found) in samples {
                    if allowed.iter().any(|a| a == ty || (ty == "integer" && a == "number")) {
                        continue;
                    }
                    let all = messages(&with_key(table, key, written));
                    assert!(
                        all.iter().any(|m| m.ends_with(&format!("found {found}"))),
                        "{table:?}.{key} = {written} is not refused for its type, but the schema allows {allowed:?}: {all:?}"
                    );
                    checked += 1;
                }
                for choice in p.get("enum").and_then(|e| e.as_array()).into_iter().flatten() {
                    let written = crate::reference::toml_value(choice);
                    let all = messages(&with_key(table, key, &written));
                    assert!(all.is_empty(), "{table:?}.{key} = {written} is in the schema's enum: {all:?}");
                    let all = messages(&with_key(table, key, "\"zz\""));
                    assert!(
                        all.iter().any(|m| m.contains(key)),
                        "{table:?}.{key} = \"zz\" is not in the enum: {all:?}"
                    );
                    checked += 1;
                }
                if p["type"] != "integer" {
                    continue;
                }
                let (min, max) = table.int_range(key);
                let out_of_range = |n: i64| {
                    messages(&with_key(table, key, &n.to_string())).iter().any(|m| {
                        m.contains("must be an integer")
                            || m.contains("must be at most")
                            || m.contains("must be a non-negative")
                    })
                };
                assert!(out_of_range(min - 1), "{table:?}.{key} = {} is accepted", min - 1);
                assert!(!out_of_range(min), "{table:?}.{key} = {min} is refused");
                if max < i64::MAX {
                    assert!(out_of_range(max + 1), "{table:?}.{key} = {} is accepted", max + 1);
                    assert!(!out_of_range(max), "{table:?}.{key} = {max} is refused");
                }
                checked += 1;
            }
        }
        assert!(checked >= 200, "only {checked} checks");
    }

    #[test]
    fn schema_is_toml_shaped() {
        let text = json_schema().to_string();
        assert!(!text.contains("null"), "TOML has no null: {text}");
        assert!(!text.contains("uint"), "{text}");
    }

    #[test]
    fn every_key_has_a_description() {
        fn walk(v: &serde_json::Value, path: &str) {
            if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
                for (key, prop) in props {
                    assert!(prop.get("description").is_some(), "{path}.{key} has no description");
                }
            }
            if let Some(defs) = v.get("definitions").and_then(|d| d.as_object()) {
                for (name, def) in defs {
                    walk(def, name);
                }
            }
        }
        walk(&json_schema(), "");
    }

    #[test]
    fn strict_structs_accept_the_full_example() {
        let file: File = toml::from_str(crate::tests::FULL).expect("raw structs accept the example");
        assert_eq!(file.service.len(), 3);
        let err = toml::from_str::<File>("app = \"a\"\n[service.x]\ncomand = \"x\"\n").unwrap_err();
        assert!(err.message().contains("unknown field"), "{err}");
    }
}
