//! `wharf`: the one binary. Server, CLI and demo app.

mod client;
mod output;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

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
    },
    /// Run an app in the foreground: a server of its own (data in DIR/.wharf), DIR deployed, logs followed; Ctrl-C stops everything.
    Up {
        /// The app directory, holding wharf.toml.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Address the proxy listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Address of the API [default: a free port, written to DIR/.wharf/api.url].
        #[arg(long, default_value = "127.0.0.1:0")]
        api: SocketAddr,
        /// Don't print the log stream.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Pack DIR, upload it as a new release and roll it out.
    Deploy {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Return once the server accepted the release, without waiting for the rollout.
        #[arg(long)]
        detach: bool,
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
    },
    /// What wharf did: deploys, restarts, health changes.
    Events {
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
        #[arg(long)]
        json: bool,
    },
    /// Validate DIR/wharf.toml; exits non-zero when it is invalid.
    Check {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of wharf.toml (for editor completion and validation).
    Schema,
    /// A small demo web app, used by the example, the tests and the benchmarks.
    Demo(wharf_demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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

async fn run(cli: Cli) -> Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Server { api, http, proxy_threads, admin, no_access_log, no_metrics } => {
            let data = g.data.clone().unwrap_or_else(server::default_data_dir);
            let mut opts = server::ServerOptions::new(data.clone(), api, http);
            opts.proxy_threads = proxy_threads.unwrap_or(opts.proxy_threads);
            opts.access_log = !no_access_log;
            opts.metrics = !no_metrics;
            opts.admin = Some(admin);
            let running = server::start(opts).await?;
            eprintln!(
                "wharf server: proxy on http://{}, API on {} (data in {})",
                running.http,
                running.api_url,
                data.display()
            );
            let sig = server::stop_signal().await;
            eprintln!("wharf server: {sig} received, stopping tasks");
            running.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up { dir, http, api, quiet } => output::up(dir, g.data, http, api, quiet).await,
        Command::Deploy { dir, detach, json } => output::deploy(&client::connect(&g)?, &dir, detach, json).await,
        Command::Status { json } => output::status(&client::connect(&g)?, json).await,
        Command::Ps { json } => output::ps(&client::connect(&g)?, json).await,
        Command::Logs { service, follow, lines, app, task, source, json } => {
            let q = output::LogArgs { service, follow, lines, app, task, source, json };
            output::logs(&client::connect(&g)?, q).await
        }
        Command::Events { lines, json } => output::events(&client::connect(&g)?, lines, json).await,
        Command::Check { dir, json } => Ok(output::check(&dir, json)),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&wharf_spec::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            wharf_demo::run(args).await.context("demo app failed")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
