//! Assembles a server: store, log stream, driver, proxy, controllers and API.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;
use wharf_control::{ControlConfig, Controller, ServerMetrics, StreamSink, TimedStore};
use wharf_logs::export::{ExportOptions, Exporter, Target};
use wharf_logs::{Level, LogStream, Record, StreamOptions};
use wharf_proxy::{Proxy, ProxyConfig};
use wharf_runtime::ProcessDriver;
use wharf_store::{Db, RedbStore};

/// The file where a running server writes its API URL for the CLI to find.
pub const API_URL_FILE: &str = "api.url";
/// The file where a running server writes its metrics URL.
pub const METRICS_URL_FILE: &str = "metrics.url";
/// The file where a running server writes the proxy's URL.
pub const PROXY_URL_FILE: &str = "proxy.url";
/// The file where a running server writes its internal listener's URL.
pub const INTERNAL_URL_FILE: &str = "internal.url";
/// The file where a running server writes its DNS responder's address.
pub const DNS_ADDR_FILE: &str = "dns.addr";
/// The store's file in the data directory.
pub const STORE_FILE: &str = "store.redb";

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
    fn addr(self) -> Option<SocketAddr> {
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
    pub unreachable: crate::task_user::Unreachable,
}

impl ServerOptions {
    /// Defaults for a server in `data` listening on `http` and `api`.
    pub fn new(data: PathBuf, api: SocketAddr, http: SocketAddr) -> ServerOptions {
        ServerOptions {
            data,
            api,
            http,
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
            unreachable: crate::task_user::Unreachable::Refuse,
        }
    }
}

/// One proxy worker per core by default, as nginx's `worker_processes auto`.
pub fn default_proxy_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A started server; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    pub ctl: Arc<Controller>,
    pub api_url: String,
    pub http: SocketAddr,
    stop_tx: tokio::sync::watch::Sender<bool>,
    /// Proxy workers: threads of their own, so the control plane can never
    /// take a request's CPU time.
    proxy_threads: Vec<std::thread::JoinHandle<()>>,
    api_task: tokio::task::JoinHandle<()>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    exporters: Vec<Exporter>,
    snapshot_task: tokio::task::JoinHandle<()>,
    dns: Option<wharf_dns::Responder>,
    data: PathBuf,
    _lock: std::fs::File,
}

/// Holds an exclusive lock on the data directory for the server's life, so
/// two servers never manage the same tasks.
fn lock_data_dir(data: &Path) -> Result<std::fs::File> {
    let path = data.join("server.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(data.join("server.pid")).unwrap_or_default();
        bail!(
            "another wharf server is already running with data directory {} (pid {})\n  hint: stop it first, or use another --data directory",
            data.display(),
            pid.trim()
        );
    }
    std::fs::write(data.join("server.pid"), std::process::id().to_string())?;
    Ok(f)
}

/// How long a start waits for an address in use to come free: a server
/// restarted at once can find its old port still held for a moment, and
/// giving up then would leave its re-adopted tasks without a proxy.
const BIND_RETRY: Duration = Duration::from_secs(20);

/// Runs `attempt` until it binds, retrying an address in use for up to
/// [`BIND_RETRY`] and saying once what holds it.
fn bind_retrying<T>(
    addr: SocketAddr,
    what: &str,
    flag: &str,
    mut attempt: impl FnMut() -> std::io::Result<T>,
) -> Result<T> {
    let start = std::time::Instant::now();
    let mut said = false;
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && start.elapsed() < BIND_RETRY => {
                if !said {
                    eprintln!(
                        "wharf server: {addr} ({what}, {flag}) is in use{}; retrying for up to {}s",
                        crate::ports::holder(addr).map(|h| format!(" by {h}")).unwrap_or_default(),
                        BIND_RETRY.as_secs()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => {
                let by = if e.kind() == std::io::ErrorKind::AddrInUse {
                    crate::ports::holder(addr).map(|h| format!(" (held by {h})")).unwrap_or_default()
                } else {
                    String::new()
                };
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot listen for {what} on {addr}{by}\n  hint: is something else using it? choose another address with {flag}"
                )));
            }
        }
    }
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> Result<TcpListener> {
    let (what, flag) = (what.to_string(), flag.to_string());
    let std = tokio::task::spawn_blocking(move || {
        bind_retrying(addr, &what, &flag, || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
    })
    .await??;
    Ok(TcpListener::from_std(std)?)
}

/// Proxy worker runtimes, shut down without blocking if the start fails
/// half-way (dropping a runtime inside another one panics).
struct Runtimes(Vec<tokio::runtime::Runtime>);

impl Drop for Runtimes {
    fn drop(&mut self) {
        for rt in self.0.drain(..) {
            rt.shutdown_background();
        }
    }
}

pub async fn start(opts: ServerOptions) -> Result<Running> {
    // The server's alone; opened to 0711 below when tasks run as another
    // user (they pass through to DATA/releases, but cannot list it).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&opts.data)
        .with_context(|| format!("cannot create data directory {}", opts.data.display()))?;
    let data = opts.data.canonicalize()?;
    let lock = lock_data_dir(&data)?;
    let task_user = crate::task_user::resolve(opts.task_user.as_deref(), &data, opts.unreachable)?;
    if task_user.is_some() {
        use crate::task_user::restrict;
        restrict(&data, 0o711);
        for private in [STORE_FILE, "store.id", "logs", "tasks", "export", crate::store::SNAPSHOT_DIR, "server.lock"] {
            restrict(&data.join(private), if data.join(private).is_dir() { 0o700 } else { 0o600 });
        }
    }
    let token = wharf_api::token::load_or_create(&data).context("cannot create the API token")?;
    for t in &opts.exports {
        t.validate()?;
    }
    let metrics = Arc::new(ServerMetrics::default());
    let store = RedbStore::open(&data.join(STORE_FILE))?;
    crate::task_user::restrict(&data.join(STORE_FILE), 0o600);
    crate::task_user::restrict(&data.join("store.id"), 0o600);
    let snapshots = crate::store::Snapshots::new(&data, store.clone(), opts.snapshot_every);
    let db = Db::new(Arc::new(TimedStore::new(Arc::new(store), &metrics)));
    let logs = LogStream::open(&data.join("logs"), StreamOptions::default())?;
    // Exports start before anything of this run is logged, so they see it all.
    let mut exporters = Vec::new();
    for t in &opts.exports {
        let ex = Exporter::start(&logs, t.clone(), &data.join("export"), opts.export.clone())?;
        metrics.add_export(ex.stats());
        exporters.push(ex);
    }
    crate::task_user::restrict(&data.join("logs"), 0o700);
    let driver = ProcessDriver::new(data.join("tasks"), Arc::new(StreamSink(logs.clone())))?;
    // task.json holds each task's environment, secrets included.
    crate::task_user::restrict(&data.join("tasks"), 0o700);
    let access: Option<Arc<dyn wharf_proxy::AccessLog>> =
        if opts.access_log { Some(wharf_control::access_sink(logs.clone())) } else { None };
    let proxy = Proxy::new(ProxyConfig { metrics: opts.metrics, ..opts.proxy.clone() }, access);
    let admin_listener = match opts.admin {
        Some(addr) => Some(bind(addr, "metrics", "--admin").await?),
        None => None,
    };
    let metrics_url = admin_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| format!("http://{a}/metrics"));
    // The proxy listens before tasks are re-adopted, so they serve the
    // moment their first health check passes.
    let workers = opts.proxy_threads.max(1);
    let listeners = {
        let http = opts.http;
        tokio::task::spawn_blocking(move || proxy_listeners(http, workers, "--http", true)).await??
    };
    let http = listeners[0].local_addr()?;
    let mut internal_listeners = match opts.internal.addr() {
        None => Vec::new(),
        // A default address taken by another server turns discovery off at once.
        Some(addr) => match proxy_listeners(addr, workers, "--internal", matches!(opts.internal, Listen::At(_))) {
            Ok(l) => l,
            Err(e) if matches!(opts.internal, Listen::Default(_)) => {
                logs.append(Record::event("discovery.off", Level::Warn, format!("service discovery is off: {e:#}")));
                Vec::new()
            }
            Err(e) => return Err(e),
        },
    };
    let internal = match internal_listeners.first() {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let api_listener = bind(opts.api, "the API", "--api").await?;
    let api_addr = api_listener.local_addr()?;
    let proxy_for_admin = proxy.clone();
    let ctl = Controller::new(ControlConfig {
        data_dir: data.clone(),
        db,
        logs: logs.clone(),
        driver: Arc::new(driver),
        proxy: proxy.clone(),
        metrics,
        task_user,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut runtimes = Runtimes(Vec::new());
    for _ in 0..workers {
        runtimes.0.push(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a proxy worker's runtime")?,
        );
    }
    let dns = match internal {
        Some(addr) => {
            let handles = runtimes.0.iter().map(|r| r.handle().clone()).collect();
            let service_addrs = matches!(addr.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback());
            let listeners = service_addrs.then(|| {
                Arc::new(wharf_proxy::InternalListeners::new(proxy.clone(), addr.port(), handles, stop_rx.clone()))
            });
            ctl.enable_discovery(wharf_control::DiscoveryConfig { internal: addr, listeners });
            start_dns(opts.dns, ctl.dns_zone(), &logs)?
        }
        None => None,
    };
    if let Some(scale) = opts.clock_scale {
        ctl.use_clock(Arc::new(wharf_control::ScaledClock::new(scale)));
    }
    ctl.start().await?;

    let mut proxy_threads = Vec::new();
    let runtimes = std::mem::take(&mut runtimes.0);
    for (n, (listener, runtime)) in listeners.into_iter().zip(runtimes).enumerate() {
        let proxy = proxy.clone();
        let mut rx = stop_rx.clone();
        let mut internal_rx = stop_rx.clone();
        let internal_listener = if internal_listeners.is_empty() { None } else { Some(internal_listeners.remove(0)) };
        let thread = std::thread::Builder::new().name(format!("wharf-proxy-{n}")).spawn(move || {
            runtime.block_on(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("proxy listener unusable: {e}"),
                };
                let internal = async {
                    let Some(l) = internal_listener else { return };
                    let shutdown = async move {
                        let _ = internal_rx.wait_for(|s| *s).await;
                    };
                    match TcpListener::from_std(l) {
                        Ok(l) => {
                            if let Err(e) = proxy.clone().serve_internal(l, shutdown, Duration::from_secs(10)).await {
                                tracing::warn!("{e}");
                            }
                        }
                        Err(e) => tracing::error!("internal listener unusable: {e}"),
                    }
                };
                let external = async {
                    if let Err(e) = proxy.clone().serve(listener, shutdown, Duration::from_secs(10)).await {
                        tracing::warn!("{e}");
                    }
                };
                tokio::join!(external, internal);
            })
        })?;
        proxy_threads.push(thread);
    }
    let mut rx = stop_rx;
    let router = wharf_api::router(ctl.clone(), token);
    // The API and metrics listeners get the proxy's header timeout and stall bound.
    let (header_timeout, write_stall) = (opts.proxy.header_timeout, opts.proxy.body_timeout);
    let api_task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        wharf_api::serve(api_listener, router, header_timeout, write_stall, shutdown).await;
    });
    let admin_task = admin_listener.map(|listener| {
        let proxy = proxy_for_admin.clone();
        let ctl = ctl.clone();
        let mut rx = stop_tx.subscribe();
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let (proxy, ctl) = (proxy.clone(), ctl.clone());
                async move {
                    // Both registries end with "# EOF"; the exposition has one.
                    let mut text = proxy.metrics_text().replace("# EOF\n", "");
                    text.push_str(&ctl.metrics_text().await);
                    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                }
            }),
        );
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            wharf_api::serve(listener, router, header_timeout, write_stall, shutdown).await;
        })
    });
    let api_url = format!("http://{api_addr}");
    std::fs::write(data.join(PROXY_URL_FILE), format!("http://{http}"))?;
    match &metrics_url {
        Some(url) => std::fs::write(data.join(METRICS_URL_FILE), url)?,
        None => {
            let _ = std::fs::remove_file(data.join(METRICS_URL_FILE));
        }
    }
    match internal {
        Some(a) => std::fs::write(data.join(INTERNAL_URL_FILE), format!("http://{a}"))?,
        None => {
            let _ = std::fs::remove_file(data.join(INTERNAL_URL_FILE));
        }
    }
    match &dns {
        Some(d) => std::fs::write(data.join(DNS_ADDR_FILE), d.local_addr().to_string())?,
        None => {
            let _ = std::fs::remove_file(data.join(DNS_ADDR_FILE));
        }
    }
    std::fs::write(data.join(API_URL_FILE), &api_url)?;
    let mut started = format!("wharf server started: proxy on http://{http}, API on {api_url}");
    if let Some(a) = internal {
        started.push_str(&format!(", internal listener on http://{a}"));
    }
    if let Some(d) = &dns {
        started.push_str(&format!(", DNS on {}", d.local_addr()));
    }
    let snapshot_task = snapshots.start(stop_tx.subscribe(), logs.clone());
    let mut r = Record::event("server.started", Level::Info, started);
    r.fields.insert("data".into(), data.display().to_string().into());
    logs.append(r);
    for t in &opts.exports {
        let mut r = Record::event(
            "export.started",
            Level::Info,
            format!("exporting the log stream to {} as JSON lines", t.address()),
        );
        r.fields.insert("sink".into(), t.kind().into());
        r.fields.insert("target".into(), t.address().into());
        logs.append(r);
    }
    Ok(Running {
        ctl,
        api_url,
        http,
        stop_tx,
        proxy_threads,
        api_task,
        admin_task,
        exporters,
        snapshot_task,
        dns,
        data,
        _lock: lock,
    })
}

impl Running {
    /// Stops tasks gracefully, then the listeners.
    pub async fn stop(self) {
        self.ctl.shutdown().await;
        if let Some(dns) = self.dns {
            let _ = tokio::task::spawn_blocking(move || dns.stop()).await;
        }
        let _ = self.stop_tx.send(true);
        let threads = self.proxy_threads;
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().map(|t| t.join()).for_each(drop)).await;
        // Followed log streams never end by themselves: give open API calls a
        // moment, then close them.
        let mut api = self.api_task;
        if tokio::time::timeout(Duration::from_secs(2), &mut api).await.is_err() {
            api.abort();
        }
        if let Some(t) = self.admin_task {
            let _ = t.await;
        }
        // The last snapshot has the state the tasks were stopped in.
        let _ = self.snapshot_task.await;
        // Last, so the stop's own events are shipped too.
        for ex in self.exporters {
            ex.stop().await;
        }
        let _ = std::fs::remove_file(self.data.join(API_URL_FILE));
        let _ = std::fs::remove_file(self.data.join(PROXY_URL_FILE));
        let _ = std::fs::remove_file(self.data.join(INTERNAL_URL_FILE));
        let _ = std::fs::remove_file(self.data.join(DNS_ADDR_FILE));
        let _ = std::fs::remove_file(self.data.join("server.pid"));
    }
}

/// One listening socket per proxy worker on the same address (SO_REUSEPORT):
/// the kernel spreads connections over the workers, and each worker serves
/// its connections start to end on its own thread, without handing requests
/// between threads.
fn proxy_listeners(addr: SocketAddr, workers: usize, flag: &str, retry: bool) -> Result<Vec<std::net::TcpListener>> {
    let what = if flag == "--internal" { "internal traffic" } else { "HTTP traffic" };
    let hint = || {
        format!("cannot listen for {what} on {addr}\n  hint: is something else using it? choose another address with {flag}")
    };
    // A plain bind first: with SO_REUSEPORT alone, a second server could
    // silently share the port instead of being told it is taken. Port 0
    // picks a free port here, which the workers then share.
    let plain = || std::net::TcpListener::bind(addr)?.local_addr();
    let at = if retry { bind_retrying(addr, what, flag, plain)? } else { plain().with_context(hint)? };
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket = if at.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .with_context(hint)?;
        socket.set_reuseaddr(true).with_context(hint)?;
        socket.set_reuseport(true).with_context(hint)?;
        socket.bind(at).with_context(hint)?;
        out.push(socket.listen(4096).with_context(hint)?.into_std().with_context(hint)?);
    }
    Ok(out)
}

/// SIGINT and SIGTERM, caught from the moment this is made: made first
/// thing, so a Ctrl-C during start-up still stops tasks instead of killing
/// wharf with the default action and leaving them behind.
pub struct StopSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignal {
    pub fn new() -> Result<StopSignal> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignal {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM (also one that came earlier).
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Where a server keeps its data when not told otherwise.
pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/wharf");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("wharf");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/wharf")
}

/// Starts the DNS responder where asked; a default address that is taken
/// is reported as an event and the server runs without.
fn start_dns(at: Listen, zone: Arc<wharf_dns::Zone>, logs: &LogStream) -> Result<Option<wharf_dns::Responder>> {
    let Some(addr) = at.addr() else { return Ok(None) };
    match wharf_dns::Responder::start(addr, zone) {
        Ok(r) => Ok(Some(r)),
        Err(e) if matches!(at, Listen::Default(_)) => {
            let msg = format!("DNS responder is off: {e} (choose another address with --dns)");
            logs.append(Record::event("discovery.dns_off", Level::Warn, msg));
            Ok(None)
        }
        Err(e) => {
            Err(anyhow::Error::new(e).context("hint: is something else using it? choose another address with --dns"))
        }
    }
}
