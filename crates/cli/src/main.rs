//! `wharf`: the one binary. Server, CLI and demo app.

mod acme;
mod client;
mod commands;
mod discovery;
mod print;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
// The server is assembled by its own crate; the commands know it by these names.
use wharf_server as server;
use wharf_server::task_user;

#[derive(Parser)]
#[command(name = "wharf", version, about = "Run web apps in production from one wharf.toml", propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// How the CLI finds a server.
#[derive(Args, Clone, Debug)]
pub struct Global {
    /// API URL of the server, e.g. http://127.0.0.1:7878 [default: read from the data directory]
    #[arg(long, env = "WHARF_SERVER", global = true)]
    server: Option<String>,
    /// API token [default: read from the data directory]
    #[arg(long, env = "WHARF_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Server data directory [default: ./.wharf if present, else /var/lib/wharf as root, else ~/.local/share/wharf]
    #[arg(long, env = "WHARF_DATA", global = true)]
    data: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the wharf server: supervises tasks, proxies traffic, serves the API.
    Server {
        /// Address of the API (keep it on loopback; every call needs the token).
        #[arg(long, default_value = "127.0.0.1:7878")]
        api: SocketAddr,
        /// Address the proxy listens on for HTTP traffic.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Address the proxy listens on for HTTPS (e.g. 0.0.0.0:443) [default: no HTTPS].
        /// Each host is served with the certificate its route names (`tls` in wharf.toml), or one
        /// obtained over ACME (see --acme-directory).
        #[arg(long)]
        https: Option<SocketAddr>,
        /// Proxy worker threads [default: one per core].
        #[arg(long)]
        proxy_threads: Option<usize>,
        /// Serve Prometheus metrics on this address at /metrics (no token: keep it private).
        #[arg(long, default_value = "127.0.0.1:9190")]
        admin: SocketAddr,
        /// Don't write an access log line per request.
        #[arg(long)]
        no_access_log: bool,
        /// Don't count requests for metrics (the /metrics listener still runs).
        #[arg(long)]
        no_metrics: bool,
        /// Time a client has to send request headers; also how long a connection with no request
        /// in flight (a silent new one, an idle keep-alive one) is kept.
        #[arg(long, default_value = "10s", value_parser = proxy_timeout)]
        header_timeout: std::time::Duration,
        /// Time a task has to start answering.
        #[arg(long, default_value = "60s", value_parser = proxy_timeout)]
        response_timeout: std::time::Duration,
        /// Time a request's whole body has to arrive once its headers have (else 408); also the
        /// longest a response may wait on a client that stopped reading.
        #[arg(long, default_value = "60s", value_parser = proxy_timeout)]
        body_timeout: std::time::Duration,
        /// Largest request body in bytes; larger ones get 413.
        #[arg(long, default_value_t = 100 << 20)]
        max_body: u64,
        /// Most client connections open at once, over every proxy thread together; at the limit
        /// the longest-idle one is closed for a new client, and while all are busy new ones wait.
        #[arg(long, default_value_t = 10_000, value_parser = connection_limit)]
        max_connections: usize,
        #[command(flatten)]
        export: ExportArgs,
        #[command(flatten)]
        discovery: discovery::DiscoveryArgs,
        #[command(flatten)]
        acme: acme::AcmeArgs,
        /// Test seam: run the job scheduler's clock N times faster than real time.
        #[arg(long, hide = true)]
        clock_scale: Option<f64>,
        /// How often the store is snapshotted into DATA/snapshots when it changed (1s..24h; the last 10 are kept).
        #[arg(long, default_value = "1m", value_parser = parse_snapshot_every)]
        store_snapshot_every: std::time::Duration,
        /// The user tasks run as when the server runs as root [default: nobody]; `root` keeps them root.
        #[arg(long, env = "WHARF_TASK_USER")]
        task_user: Option<String>,
    },
    /// Run an app in the foreground: a server of its own (data in DIR/.wharf), DIR deployed, logs followed; Ctrl-C stops everything.
    Up {
        /// The app directory, holding wharf.toml.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Address the proxy listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Also serve HTTPS here (e.g. 127.0.0.1:8443), each route host with a certificate from a
        /// local CA wharf makes (trust DIR/.wharf/local-ca/ca.pem) or from its `tls` files [default: off].
        #[arg(long)]
        https: Option<SocketAddr>,
        /// Address of the API [default: a free port, written to DIR/.wharf/api.url].
        #[arg(long, default_value = "127.0.0.1:0")]
        api: SocketAddr,
        /// Don't print the log stream.
        #[arg(long, short)]
        quiet: bool,
        /// Run the environment NAME ([env.NAME] of wharf.toml), as `wharf deploy --env` would deploy it.
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
    },
    /// Pack DIR, upload it as a new release and roll it out; with --promote,
    /// give a running canary all the requests now: `wharf deploy --promote [SERVICE]`.
    Deploy {
        /// The app's directory; with --promote, the service (default: every canary of the app).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Return once the server accepted the release, without waiting for the rollout.
        #[arg(long)]
        detach: bool,
        /// Promote the running canary deploy, skipping its remaining steps.
        #[arg(long)]
        promote: bool,
        /// The app whose canary to promote.
        #[arg(long, requires = "promote")]
        app: Option<String>,
        /// Deploy the environment NAME: wharf.toml with its [env.NAME] applied, as its own app
        /// (default name APP-NAME).
        #[arg(long, value_name = "NAME", conflicts_with = "promote")]
        env: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Set how many tasks a service runs: `wharf scale api=3 worker=2`. Kept until wharf.toml
    /// declares a different `replicas`; scale-in drains tasks before stopping them.
    Scale {
        /// SERVICE=REPLICAS, one or more.
        #[arg(required = true)]
        targets: Vec<String>,
        #[arg(long)]
        app: Option<String>,
        /// Return at once instead of waiting for the tasks.
        #[arg(long)]
        detach: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run a command once with a service's current revision and environment (migrations,
    /// consoles, maintenance scripts): `wharf run api -- python manage.py migrate`. Prints its
    /// output and exits with its exit status.
    Run {
        service: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[arg(long)]
        app: Option<String>,
    },
    /// The autoscaler of a service: its policy, recent CPU datapoints and decisions.
    Autoscale {
        service: String,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A service's revisions, with what changed in each and which can be rolled back to.
    Revisions {
        service: String,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Roll a service back to an earlier revision (default: the last one that was live and healthy), with no downtime.
    Rollback {
        service: String,
        /// Revision number, as `wharf revisions` shows it.
        revision: Option<u64>,
        #[arg(long)]
        app: Option<String>,
        /// Return at once instead of following the rollout.
        #[arg(long)]
        detach: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove an app: stop its tasks (draining), delete its routes, services, jobs, deployments and revisions.
    Destroy {
        app: String,
        /// Don't ask for confirmation (for scripts).
        #[arg(long)]
        yes: bool,
        /// Delete its stored releases too (kept by default).
        #[arg(long)]
        purge: bool,
        /// Abort a deployment in progress instead of refusing.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Deployment history: when, how long, outcome, what changed.
    Deployments {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show each route host's certificate: source, issuer, expiry, errors.
    Certs {
        #[arg(long)]
        json: bool,
    },
    /// Show what `wharf deploy DIR` would change (per service and route), without changing anything.
    Plan {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Plan the environment NAME ([env.NAME] of wharf.toml), as `wharf deploy --env` would deploy it.
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Apps, services and their revisions, replicas and readiness.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Tasks: state, health, pid, port, restarts, CPU and memory.
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Per service: tasks, CPU, memory, requests/s and p99 latency, refreshed every second.
    Top {
        /// Print one snapshot (rates over one interval) and exit.
        #[arg(long)]
        once: bool,
        /// One JSON object per snapshot (with --once: exactly one).
        #[arg(long)]
        json: bool,
        /// Stop after this many snapshots [default: until Ctrl-C].
        #[arg(long, value_name = "N")]
        iterations: Option<u64>,
        /// Time between snapshots (rates and p99 are over it).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// The log stream: task output and events.
    Logs {
        /// Only this service.
        service: Option<String>,
        /// Keep printing new records as they arrive.
        #[arg(long, short)]
        follow: bool,
        /// How many past records to print.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        task: Option<String>,
        /// stdout, stderr, event, access, job (comma-separated).
        #[arg(long)]
        source: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only records from then on: a duration ago (`10m`, `2h 30m`) or a
        /// timestamp (`2024-05-01T12:00:00Z`, `2024-05-01 12:00:00` in UTC).
        #[arg(long)]
        since: Option<String>,
        /// Only records before then (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        /// Only records whose message matches this regular expression
        /// (matched on the server).
        #[arg(long)]
        grep: Option<String>,
    },
    /// What wharf did: deploys, restarts, health changes.
    Events {
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
        #[arg(long)]
        json: bool,
    },
    /// Answer requests with a 503 maintenance page (the health-check path keeps working); survives restarts.
    Maintenance {
        #[arg(value_enum)]
        state: OnOff,
        /// The app [default: the only one deployed].
        #[arg(long)]
        app: Option<String>,
        /// Only this service [default: the whole app].
        #[arg(long)]
        service: Option<String>,
        /// Text of the built-in page.
        #[arg(long)]
        message: Option<String>,
        /// An HTML file to serve instead of the built-in page.
        #[arg(long)]
        page: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Hold new requests (e.g. around a migration) until `wharf resume`; after --max they get 503.
    Pause {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        service: Option<String>,
        /// Longest pause.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        max: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
    /// Release the requests held by `wharf pause`.
    Resume {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Scheduled jobs: schedule, time zone, next run, last run's outcome.
    Jobs {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One job: its runs, or run it now.
    Job {
        #[command(subcommand)]
        command: commands::jobs::JobCommand,
    },
    /// An app's secrets: set (value from stdin), ls, rm. Values are never printed.
    Secret {
        #[command(subcommand)]
        command: commands::secret::SecretCommand,
    },
    /// Validate DIR/wharf.toml; exits non-zero when it is invalid.
    Check {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Check the environment NAME: the file with [env.NAME] applied (every environment is
        /// checked either way; this shows that one's result).
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of wharf.toml (for editor completion and validation).
    Schema,
    /// Check the store and its snapshots, or restore a snapshot (with the server stopped).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// A small demo web app, used by the example, the tests and the benchmarks.
    Demo(wharf_demo::DemoArgs),
    /// Install wharf as a systemd service: the binary, the server's user, the data directory
    /// (--data, default /var/lib/wharf) and wharf.service. Running it again changes nothing.
    Install(commands::install::InstallArgs),
    /// Remove wharf.service; the data directory only with --purge --yes.
    Uninstall(commands::install::UninstallArgs),
}

fn parse_snapshot_every(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 30s, 5m, 1h)"))?;
    if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(86400)).contains(&d) {
        return Err("must be between 1s and 24h".into());
    }
    Ok(d)
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Read the store (unless a server has it open) and every snapshot whole; exit 1 if the store is damaged.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Put the newest snapshot that reads whole (or SNAPSHOT) in place of the store; the old file is kept beside it.
    Restore {
        /// A snapshot file [default: the newest good one in DATA/snapshots].
        snapshot: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Export of the log stream (`wharf server`).
#[derive(Args, Clone, Debug)]
struct ExportArgs {
    /// Append the log stream to this file as JSON lines (the JSON of `wharf logs --json`); reopened when rotated.
    #[arg(long, env = "WHARF_EXPORT_FILE", value_name = "PATH")]
    export_file: Option<PathBuf>,
    /// POST the log stream as newline-delimited JSON batches to this http:// URL (e.g. a Vector http_server source).
    #[arg(long, env = "WHARF_EXPORT_HTTP", value_name = "URL")]
    export_http: Option<String>,
    /// An extra header for --export-http, `Name: value` (repeatable), e.g. `Authorization: Bearer TOKEN`.
    #[arg(long = "export-header", value_name = "HEADER")]
    export_headers: Vec<String>,
    /// Records each export keeps in memory while its target is down or slow; beyond that the oldest are dropped (counted, and reported as an export.dropped event).
    #[arg(long, env = "WHARF_EXPORT_BUFFER", value_name = "N", default_value_t = 100_000)]
    export_buffer: usize,
    /// Longest wait between retries of a failed export; the wait starts at 100ms and doubles up to this.
    #[arg(long, env = "WHARF_EXPORT_RETRY_MAX", value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    export_retry_max: std::time::Duration,
}

impl ExportArgs {
    fn apply(self, opts: &mut server::ServerOptions) -> Result<()> {
        if let Some(path) = self.export_file {
            let path = std::path::absolute(&path).with_context(|| format!("invalid export file {}", path.display()))?;
            opts.exports.push(wharf_logs::export::Target::File(path));
        }
        match self.export_http {
            Some(url) => opts.exports.push(wharf_logs::export::Target::Http { url, headers: self.export_headers }),
            None if !self.export_headers.is_empty() => anyhow::bail!("--export-header needs --export-http"),
            None => {}
        }
        opts.export.buffer = self.export_buffer.max(1);
        opts.export.backoff.max = self.export_retry_max.max(opts.export.backoff.initial);
        Ok(())
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OnOff {
    On,
    Off,
}

#[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Server { .. } | Command::Up { .. } | Command::Demo(_)) {
        // A client command whose reader went away (`wharf schema | head -1`)
        // ends quietly, as Unix tools do, instead of a panic in println!.
        // Servers keep SIGPIPE ignored: a write to a closed socket or pipe
        // must fail one request, not kill every task's supervisor.
        // SAFETY: before any thread starts; restores the default disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Longest proxy timeout accepted: deadlines are instants, and a timeout
/// of a day is already no timeout at all.
const MAX_PROXY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A proxy timeout flag: more than zero (zero would close every connection
/// at once) and at most a day.
fn proxy_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}\n  hint: a duration such as 10s, 500ms or 2m"))?;
    if d.is_zero() || d > MAX_PROXY_TIMEOUT {
        return Err(format!("`{s}` is out of range\n  hint: give a duration from 1ms to 24h"));
    }
    Ok(d)
}

/// `--max-connections`: at least one, at most a million.
fn connection_limit(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}\n  hint: a whole number such as 10000"))?;
    if !(1..=1_000_000).contains(&n) {
        return Err(format!("{n} is out of range\n  hint: give a number from 1 to 1000000"));
    }
    Ok(n)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Server {
            api,
            http,
            https,
            proxy_threads,
            admin,
            no_access_log,
            no_metrics,
            header_timeout,
            response_timeout,
            body_timeout,
            max_body,
            max_connections,
            export,
            discovery,
            acme,
            clock_scale,
            store_snapshot_every,
            task_user,
        } => {
            let mut stop = server::StopSignal::new()?;
            let data = g.data.clone().unwrap_or_else(server::default_data_dir);
            let mut opts = server::ServerOptions::new(data.clone(), api, http);
            opts.secret_key = std::env::var(server::SECRET_KEY_ENV).ok();
            opts.https = https;
            opts.proxy_threads = proxy_threads.unwrap_or(opts.proxy_threads);
            opts.access_log = !no_access_log;
            opts.metrics = !no_metrics;
            opts.admin = Some(admin);
            opts.proxy.header_timeout = header_timeout;
            opts.proxy.response_timeout = response_timeout;
            opts.proxy.max_body = max_body;
            opts.proxy.body_timeout = body_timeout;
            opts.proxy.max_connections = max_connections;
            export.apply(&mut opts)?;
            discovery.apply(&mut opts)?;
            acme.apply(&mut opts)?;
            opts.clock_scale = clock_scale;
            opts.snapshot_every = store_snapshot_every;
            opts.task_user = task_user;
            let running = server::start(opts).await?;
            let https = running.https.map(|h| format!(" and https://{h}")).unwrap_or_default();
            eprintln!(
                "wharf server: proxy on http://{}{https}, API on {} (data in {})",
                running.http,
                running.api_url,
                data.display()
            );
            let sig = stop.recv().await;
            eprintln!("wharf server: {sig} received, stopping tasks");
            running.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up { dir, http, https, api, quiet, env } => {
            commands::up::up(dir, env.as_deref(), g.data, commands::up::Listen { http, https, api }, quiet).await
        }
        Command::Deploy { dir, promote: true, app, detach, json, .. } => {
            let service = Some(dir.to_string_lossy().into_owned()).filter(|d| d != ".");
            commands::deploy::promote(&client::connect(&g)?, app, service, detach, json).await
        }
        Command::Deploy { dir, detach, env, json, .. } => {
            commands::deploy::deploy(&client::connect(&g)?, &dir, env.as_deref(), detach, json).await
        }
        Command::Status { json } => commands::status::status(&client::connect(&g)?, json).await,
        Command::Ps { json } => commands::ps::ps(&client::connect(&g)?, json).await,
        Command::Top { once, json, iterations, interval } => {
            let interval = interval.max(std::time::Duration::from_millis(100));
            let args = commands::top::TopArgs { once, json, iterations, interval };
            commands::top::top(&client::connect(&g)?, args).await
        }
        Command::Logs { service, follow, lines, app, task, source, json, since, until, grep } => {
            let q = commands::logs::LogArgs { service, follow, lines, app, task, source, json, since, until, grep };
            commands::logs::logs(&client::connect(&g)?, q).await
        }
        Command::Events { lines, json } => commands::events::events(&client::connect(&g)?, lines, json).await,
        Command::Maintenance { state, app, service, message, page, json } => {
            let on = state == OnOff::On;
            commands::maintenance::maintenance(&client::connect(&g)?, on, app, service, message, page, json).await
        }
        Command::Pause { app, service, max, json } => {
            commands::pause::pause(&client::connect(&g)?, app, service, max, json).await
        }
        Command::Resume { app, service, json } => {
            commands::pause::resume(&client::connect(&g)?, app, service, json).await
        }
        Command::Plan { dir, env, json } => {
            commands::plan::plan(&client::connect(&g)?, &dir, env.as_deref(), json).await
        }
        Command::Scale { targets, app, detach, json } => {
            commands::scale::scale(&client::connect(&g)?, app, targets, detach, json).await
        }
        Command::Run { service, command, app } => {
            commands::run::run(&client::connect(&g)?, app, service, command).await
        }
        Command::Autoscale { service, app, json } => {
            commands::autoscale::autoscale(&client::connect(&g)?, app, service, json).await
        }
        Command::Revisions { service, app, json } => {
            commands::revisions::revisions(&client::connect(&g)?, app, service, json).await
        }
        Command::Rollback { service, revision, app, detach, json } => {
            commands::rollback::rollback(&client::connect(&g)?, app, service, revision, detach, json).await
        }
        Command::Destroy { app, yes, purge, force, json } => {
            commands::destroy::destroy(&client::connect(&g)?, &app, yes, purge, force, json).await
        }
        Command::Deployments { app, json } => {
            commands::deployments::deployments(&client::connect(&g)?, app, json).await
        }
        Command::Certs { json } => commands::certs::certs(&client::connect(&g)?, json).await,
        Command::Jobs { app, json } => commands::jobs::list(&client::connect(&g)?, app, json).await,
        Command::Job { command } => commands::jobs::run(&client::connect(&g)?, command).await,
        Command::Secret { command } => commands::secret::run(&client::connect(&g)?, command).await,
        Command::Check { dir, env, json } => Ok(commands::check::check(&dir, env.as_deref(), json)),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&wharf_spec::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Store { command } => {
            // As the other commands find a server: --data, ./.wharf, the default.
            let data = g.data.clone().unwrap_or_else(|| {
                let local = PathBuf::from(".wharf");
                if local.is_dir() {
                    local
                } else {
                    server::default_data_dir()
                }
            });
            match command {
                StoreCommand::Check { json } => store::check(&data, json),
                StoreCommand::Restore { snapshot, json } => store::restore(&data, snapshot, json),
            }
        }
        Command::Demo(args) => {
            wharf_demo::run(args).await.context("demo app failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Install(args) => commands::install::install(args, g.data, &server_flags()),
        Command::Uninstall(args) => commands::install::uninstall(args, g.data),
    }
}

/// The long flags `wharf server` takes (its own and the global ones), so
/// `wharf install` writes a unit with only flags this binary knows.
fn server_flags() -> Vec<String> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let server = cli.find_subcommand("server").into_iter().flat_map(|s| s.get_arguments());
    cli.get_arguments().chain(server).filter_map(|a| a.get_long().map(String::from)).collect()
}
