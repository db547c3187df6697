//! Starting a server, step by step, and stopping it.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use wharf_control::{ControlConfig, Controller, ServerMetrics};
use wharf_logs::export::Exporter;
use wharf_logs::{Level, LogStream, Record, StreamOptions};
use wharf_proxy::{Proxy, ProxyConfig};
use wharf_runtime::{ProcessDriver, TaskUser};
use wharf_store::{Db, RedbStore};

use crate::error::{Chain, Context, ServerError};
use crate::listen::{bind, proxy_listeners};
use crate::options::{Listen, ServerOptions};
use crate::store::{Snapshots, SNAPSHOT_DIR};
use crate::task_user::restrict;
use crate::{
    StreamSink, TimedStore, API_URL_FILE, DNS_ADDR_FILE, HTTPS_URL_FILE, INTERNAL_URL_FILE, METRICS_URL_FILE,
    PROXY_URL_FILE, STORE_FILE,
};

/// How long the proxy, API and metrics listeners let open requests finish at a stop.
const DRAIN: Duration = Duration::from_secs(10);

/// A started server; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    pub ctl: Arc<Controller>,
    pub api_url: String,
    pub http: SocketAddr,
    /// The HTTPS listener, when the server has one.
    pub https: Option<SocketAddr>,
    stop_tx: watch::Sender<bool>,
    serving: Serving,
    exporters: Vec<Exporter>,
    snapshot_task: tokio::task::JoinHandle<()>,
    dns: Option<wharf_dns::Responder>,
    data: PathBuf,
    _lock: std::fs::File,
}

/// The data directory, locked and ready for this server.
struct DataDir {
    path: PathBuf,
    lock: std::fs::File,
    task_user: Option<TaskUser>,
    token: wharf_api::token::Tokens,
}

/// The store as the controllers use it, and the snapshots of its file.
struct OpenStore {
    db: Db,
    snapshots: Snapshots,
}

/// Every listener, bound before anything serves: the proxy's (one socket
/// per worker), the internal one of service discovery, the API's and the
/// metrics'.
struct Listeners {
    http: Vec<std::net::TcpListener>,
    /// Empty without `--https`.
    https: Vec<std::net::TcpListener>,
    internal: Vec<std::net::TcpListener>,
    api: TcpListener,
    admin: Option<TcpListener>,
}

impl Listeners {
    fn http_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.http[0].local_addr()?)
    }

    fn https_addr(&self) -> Result<Option<SocketAddr>, ServerError> {
        Ok(match self.https.first() {
            Some(l) => Some(l.local_addr()?),
            None => None,
        })
    }

    fn internal_addr(&self) -> Result<Option<SocketAddr>, ServerError> {
        Ok(match self.internal.first() {
            Some(l) => Some(l.local_addr()?),
            None => None,
        })
    }
}

/// Where the started server can be reached, for its address files and
/// the "started" event.
struct Addresses {
    http: SocketAddr,
    https: Option<SocketAddr>,
    api_url: String,
    metrics_url: Option<String>,
    internal: Option<SocketAddr>,
    dns: Option<SocketAddr>,
}

impl Addresses {
    fn of(
        l: &Listeners,
        internal: Option<SocketAddr>,
        dns: Option<&wharf_dns::Responder>,
    ) -> Result<Addresses, ServerError> {
        Ok(Addresses {
            http: l.http_addr()?,
            https: l.https_addr()?,
            api_url: format!("http://{}", l.api.local_addr()?),
            metrics_url: l.admin.as_ref().and_then(|l| l.local_addr().ok()).map(|a| format!("http://{a}/metrics")),
            internal,
            dns: dns.map(|d| d.local_addr()),
        })
    }
}

/// What serves requests once the controller runs.
struct Serving {
    /// Proxy workers: threads of their own, so the control plane can never
    /// take a request's CPU time.
    proxy_threads: Vec<std::thread::JoinHandle<()>>,
    api: tokio::task::JoinHandle<()>,
    admin: Option<tokio::task::JoinHandle<()>>,
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

/// Starts a server: the order of the steps matters (see each).
pub async fn start(opts: ServerOptions) -> Result<Running, ServerError> {
    let dir = prepare_data_dir(&opts)?;
    for t in &opts.exports {
        t.validate()?;
    }
    let metrics = Arc::new(ServerMetrics::default());
    let store = open_store(&dir.path, &metrics, opts.snapshot_every)?;
    let (logs, exporters) = open_log_stream(&dir.path, &opts, &metrics)?;
    // Before the driver: it opens tasks' sealed variables with this key.
    let secrets = Arc::new(
        wharf_secrets::SecretBox::load(&dir.path, opts.secret_key.as_deref())
            .map_err(|e| ServerError::Refused(e.to_string()))?,
    );
    let driver = start_driver(&dir.path, &logs, &secrets)?;
    let listeners = bind_listeners(&opts, &logs).await?;
    let proxy = build_proxy(&opts, &logs, listeners.https_addr()?);
    let ctl = Controller::new(ControlConfig {
        data_dir: dir.path.clone(),
        db: store.db,
        logs: logs.clone(),
        driver: Arc::new(driver),
        proxy: proxy.clone(),
        metrics,
        task_user: dir.task_user,
        acme: opts.acme.clone().filter(|_| opts.https.is_some()),
        secrets,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let runtimes = worker_runtimes(opts.proxy_threads.max(1))?;
    let internal = listeners.internal_addr()?;
    let dns = enable_discovery(&ctl, &proxy, internal, &runtimes, &stop_rx, opts.dns, &logs)?;
    start_controller(&ctl, opts.clock_scale).await?;
    let addrs = Addresses::of(&listeners, internal, dns.as_ref())?;
    let serving = start_serving(&opts, &ctl, &proxy, listeners, runtimes, dir.token, &stop_tx)?;
    write_address_files(&dir.path, &addrs)?;
    let snapshot_task = store.snapshots.start(stop_tx.subscribe(), logs.clone());
    announce(&logs, &dir.path, &addrs, &opts);
    Ok(Running {
        ctl,
        api_url: addrs.api_url,
        http: addrs.http,
        https: addrs.https,
        stop_tx,
        serving,
        exporters,
        snapshot_task,
        dns,
        data: dir.path,
        _lock: dir.lock,
    })
}

/// Creates and locks the data directory, resolves the task user (and
/// opens the directory to it where it must), and loads the API token.
fn prepare_data_dir(opts: &ServerOptions) -> Result<DataDir, ServerError> {
    // The server's alone; opened to 0711 below when tasks run as another
    // user (they pass through to DATA/releases, but cannot list it).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&opts.data)
        .with_context(|| format!("cannot create data directory {}", opts.data.display()))?;
    let path = opts.data.canonicalize()?;
    let lock = lock_data_dir(&path)?;
    let task_user = crate::task_user::resolve(opts.task_user.as_deref(), &path, opts.unreachable)?;
    if task_user.is_some() {
        restrict(&path, 0o711);
        for private in [STORE_FILE, "store.id", "logs", "tasks", "export", SNAPSHOT_DIR, "server.lock"] {
            restrict(&path.join(private), if path.join(private).is_dir() { 0o700 } else { 0o600 });
        }
    }
    let token = wharf_api::token::load_or_create_both(&path).context("cannot create the API tokens")?;
    Ok(DataDir { path, lock, task_user, token })
}

/// Holds an exclusive lock on the data directory for the server's life, so
/// two servers never manage the same tasks.
fn lock_data_dir(data: &Path) -> Result<std::fs::File, ServerError> {
    let path = data.join("server.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(data.join("server.pid")).unwrap_or_default();
            return Err(ServerError::Refused(format!(
            "another wharf server is already running with data directory {} (pid {})\n  hint: stop it first, or use another --data directory",
            data.display(),
            pid.trim()
        )));
        }
    }
    std::fs::write(data.join("server.pid"), std::process::id().to_string())?;
    Ok(f)
}

/// Opens the store (a damaged file stops the start here), times its
/// operations into the server's metrics, and prepares its snapshots.
fn open_store(data: &Path, metrics: &ServerMetrics, every: Duration) -> Result<OpenStore, ServerError> {
    let store = RedbStore::open(&data.join(STORE_FILE))?;
    restrict(&data.join(STORE_FILE), 0o600);
    restrict(&data.join("store.id"), 0o600);
    let snapshots = Snapshots::new(data, store.clone(), every);
    let db = Db::new(Arc::new(TimedStore::new(Arc::new(store), metrics.store_health())));
    Ok(OpenStore { db, snapshots })
}

/// Opens the log stream and starts its exports, before anything of this
/// run is logged, so they see it all.
fn open_log_stream(
    data: &Path,
    opts: &ServerOptions,
    metrics: &ServerMetrics,
) -> Result<(LogStream, Vec<Exporter>), ServerError> {
    let logs = LogStream::open(&data.join("logs"), StreamOptions::default())?;
    let mut exporters = Vec::new();
    for t in &opts.exports {
        let ex = Exporter::start(&logs, t.clone(), &data.join("export"), opts.export.clone())?;
        metrics.add_export(ex.stats());
        exporters.push(ex);
    }
    restrict(&data.join("logs"), 0o700);
    Ok((logs, exporters))
}

/// The process driver, its tasks' output going into the log stream.
fn start_driver(
    data: &Path,
    logs: &LogStream,
    secrets: &Arc<wharf_secrets::SecretBox>,
) -> Result<ProcessDriver, ServerError> {
    let options = wharf_runtime::ProcessDriverOptions::default()
        .env_opener(Arc::new(wharf_control::TaskSecrets(secrets.clone())));
    let driver = ProcessDriver::with_options(data.join("tasks"), Arc::new(StreamSink(logs.clone())), options)?;
    // task.json holds each task's environment (its secrets sealed for that task).
    restrict(&data.join("tasks"), 0o700);
    Ok(driver)
}

/// The proxy, its access log going into the log stream (unless turned off);
/// plain-HTTP redirects go to the HTTPS listener's port.
fn build_proxy(opts: &ServerOptions, logs: &LogStream, https: Option<SocketAddr>) -> Arc<Proxy> {
    let access: Option<Arc<dyn wharf_proxy::AccessLog>> =
        if opts.access_log { Some(crate::access_sink(logs.clone())) } else { None };
    let config = ProxyConfig { metrics: opts.metrics, https_port: https.map(|a| a.port()), ..opts.proxy.clone() };
    Proxy::new(config, access)
}

/// Binds every listener. The proxy listens before tasks are re-adopted, so
/// they serve the moment their first health check passes; a default
/// internal address that is taken turns service discovery off instead.
async fn bind_listeners(opts: &ServerOptions, logs: &LogStream) -> Result<Listeners, ServerError> {
    let admin = match opts.admin {
        Some(addr) => Some(bind(addr, "metrics", "--admin").await?),
        None => None,
    };
    let workers = opts.proxy_threads.max(1);
    let http = {
        let http = opts.http;
        tokio::task::spawn_blocking(move || proxy_listeners(http, workers, "--http", true)).await??
    };
    let https = match opts.https {
        Some(addr) => tokio::task::spawn_blocking(move || proxy_listeners(addr, workers, "--https", true)).await??,
        None => Vec::new(),
    };
    let internal = match opts.internal.addr() {
        None => Vec::new(),
        Some(addr) => match proxy_listeners(addr, workers, "--internal", matches!(opts.internal, Listen::At(_))) {
            Ok(l) => l,
            Err(e) if matches!(opts.internal, Listen::Default(_)) => {
                let msg = format!("service discovery is off: {}", Chain(&e));
                logs.append(Record::event("discovery.off", Level::Warn, msg));
                Vec::new()
            }
            Err(e) => return Err(e),
        },
    };
    let api = bind(opts.api, "the API", "--api").await?;
    Ok(Listeners { http, https, internal, api, admin })
}

/// One current-thread runtime per proxy worker.
fn worker_runtimes(workers: usize) -> Result<Runtimes, ServerError> {
    let mut runtimes = Runtimes(Vec::new());
    for _ in 0..workers {
        runtimes.0.push(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a proxy worker's runtime")?,
        );
    }
    Ok(runtimes)
}

/// Service discovery, when the internal listener is up: tasks reach
/// services by name through it (and at their own loopback addresses when
/// it is on loopback), and the DNS responder answers their names.
fn enable_discovery(
    ctl: &Controller,
    proxy: &Arc<Proxy>,
    internal: Option<SocketAddr>,
    runtimes: &Runtimes,
    stop_rx: &watch::Receiver<bool>,
    dns: Listen,
    logs: &LogStream,
) -> Result<Option<wharf_dns::Responder>, ServerError> {
    let Some(addr) = internal else { return Ok(None) };
    let handles = runtimes.0.iter().map(|r| r.handle().clone()).collect();
    let service_addrs = matches!(addr.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback());
    let listeners = service_addrs
        .then(|| Arc::new(wharf_proxy::InternalListeners::new(proxy.clone(), addr.port(), handles, stop_rx.clone())));
    ctl.enable_discovery(wharf_control::DiscoveryConfig { internal: addr, listeners });
    start_dns(dns, ctl.dns_zone(), logs)
}

/// Starts the DNS responder where asked; a default address that is taken
/// is reported as an event and the server runs without.
fn start_dns(
    at: Listen,
    zone: Arc<wharf_dns::Zone>,
    logs: &LogStream,
) -> Result<Option<wharf_dns::Responder>, ServerError> {
    let Some(addr) = at.addr() else { return Ok(None) };
    match wharf_dns::Responder::start(addr, zone) {
        Ok(r) => Ok(Some(r)),
        Err(e) if matches!(at, Listen::Default(_)) => {
            let msg = format!("DNS responder is off: {e} (choose another address with --dns)");
            logs.append(Record::event("discovery.dns_off", Level::Warn, msg));
            Ok(None)
        }
        Err(e) => Err(e).context("hint: is something else using it? choose another address with --dns"),
    }
}

/// Sets the clock and starts the controller, which re-adopts the tasks:
/// the proxy's listeners are bound by now, so they serve the moment their
/// first health check passes.
async fn start_controller(ctl: &Arc<Controller>, clock_scale: Option<f64>) -> Result<(), ServerError> {
    if let Some(scale) = clock_scale {
        ctl.use_clock(Arc::new(wharf_control::ScaledClock::new(scale)));
    }
    Ok(ctl.start().await?)
}

/// Starts the proxy workers, the API and the metrics endpoint on their
/// listeners, until the stop.
fn start_serving(
    opts: &ServerOptions,
    ctl: &Arc<Controller>,
    proxy: &Arc<Proxy>,
    listeners: Listeners,
    runtimes: Runtimes,
    token: wharf_api::token::Tokens,
    stop: &watch::Sender<bool>,
) -> Result<Serving, ServerError> {
    let tls = match listeners.https.is_empty() {
        true => None,
        false => Some(wharf_proxy::server_config(ctl.tls_resolver()).context("cannot set up HTTPS")?),
    };
    let sockets = WorkerSockets { http: listeners.http, https: listeners.https, internal: listeners.internal, tls };
    let proxy_threads = spawn_proxy_workers(proxy, sockets, runtimes, &stop.subscribe())?;
    // The API and metrics listeners get the proxy's header timeout and stall bound.
    let limits = (opts.proxy.header_timeout, opts.proxy.body_timeout);
    let api = serve(listeners.api, wharf_api::router(ctl.clone(), token), limits, stop.subscribe());
    let admin =
        listeners.admin.map(|l| serve(l, crate::metrics::router(proxy.clone(), ctl.clone()), limits, stop.subscribe()));
    Ok(Serving { proxy_threads, api, admin })
}

/// The proxy's sockets, one of each kind per worker.
struct WorkerSockets {
    http: Vec<std::net::TcpListener>,
    https: Vec<std::net::TcpListener>,
    internal: Vec<std::net::TcpListener>,
    /// The TLS setup the HTTPS sockets serve with.
    tls: Option<Arc<wharf_proxy::TlsConfig>>,
}

/// Which of the proxy's listeners a socket is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Https,
    Internal,
}

/// One thread per proxy worker, each with its own runtime serving its own
/// sockets (plain HTTP, HTTPS when asked, internal when discovery is on)
/// until the stop.
fn spawn_proxy_workers(
    proxy: &Arc<Proxy>,
    sockets: WorkerSockets,
    mut runtimes: Runtimes,
    stop_rx: &watch::Receiver<bool>,
) -> Result<Vec<std::thread::JoinHandle<()>>, ServerError> {
    let WorkerSockets { http, mut https, mut internal, tls } = sockets;
    let mut threads = Vec::new();
    let runtimes = std::mem::take(&mut runtimes.0);
    for (n, (listener, runtime)) in http.into_iter().zip(runtimes).enumerate() {
        let proxy = proxy.clone();
        let https = if https.is_empty() { None } else { Some(https.remove(0)) };
        let internal = if internal.is_empty() { None } else { Some(internal.remove(0)) };
        let (tls, rx) = (tls.clone(), stop_rx.clone());
        let thread = std::thread::Builder::new().name(format!("wharf-proxy-{n}")).spawn(move || {
            runtime.block_on(async move {
                let plain = serve_proxy(&proxy, Some(listener), Kind::Http, None, rx.clone());
                let secure = serve_proxy(&proxy, https, Kind::Https, tls, rx.clone());
                let internal = serve_proxy(&proxy, internal, Kind::Internal, None, rx);
                tokio::join!(plain, secure, internal);
            })
        })?;
        threads.push(thread);
    }
    Ok(threads)
}

/// Serves one proxy socket (if any) on the current worker until the stop.
async fn serve_proxy(
    proxy: &Arc<Proxy>,
    listener: Option<std::net::TcpListener>,
    kind: Kind,
    tls: Option<Arc<wharf_proxy::TlsConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(l) = listener else { return };
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let l = match TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) if kind == Kind::Internal => return tracing::error!("internal listener unusable: {e}"),
        Err(e) => return tracing::error!("proxy listener unusable: {e}"),
    };
    let served = match (kind, tls) {
        (Kind::Internal, _) => proxy.clone().serve_internal(l, shutdown, DRAIN).await,
        (Kind::Https, Some(tls)) => proxy.clone().serve_tls(l, tls, shutdown, DRAIN).await,
        (Kind::Https, None) => return tracing::error!("HTTPS listener without a TLS setup"),
        (Kind::Http, _) => proxy.clone().serve(l, shutdown, DRAIN).await,
    };
    if let Err(e) = served {
        tracing::warn!("{e}");
    }
}

/// Serves `router` on `listener` (the API, the metrics) until the stop.
fn serve(
    listener: TcpListener,
    router: axum::Router,
    (header_timeout, write_stall): (Duration, Duration),
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        wharf_api::serve(listener, router, header_timeout, write_stall, shutdown).await;
    })
}

/// Writes where the server listens into the data directory, for the CLI;
/// a listener that is off has its file removed.
fn write_address_files(data: &Path, a: &Addresses) -> Result<(), ServerError> {
    std::fs::write(data.join(PROXY_URL_FILE), format!("http://{}", a.http))?;
    let optional = [
        (HTTPS_URL_FILE, a.https.map(|h| format!("https://{h}"))),
        (METRICS_URL_FILE, a.metrics_url.clone()),
        (INTERNAL_URL_FILE, a.internal.map(|i| format!("http://{i}"))),
        (DNS_ADDR_FILE, a.dns.map(|d| d.to_string())),
    ];
    for (file, content) in optional {
        match content {
            Some(c) => std::fs::write(data.join(file), c)?,
            None => {
                let _ = std::fs::remove_file(data.join(file));
            }
        }
    }
    std::fs::write(data.join(API_URL_FILE), &a.api_url)?;
    Ok(())
}

/// The "server started" event, and one per export.
fn announce(logs: &LogStream, data: &Path, a: &Addresses, opts: &ServerOptions) {
    let mut started = format!("wharf server started: proxy on http://{}", a.http);
    if let Some(h) = a.https {
        started.push_str(&format!(" and https://{h}"));
    }
    started.push_str(&format!(", API on {}", a.api_url));
    if let Some(i) = a.internal {
        started.push_str(&format!(", internal listener on http://{i}"));
    }
    if let Some(d) = a.dns {
        started.push_str(&format!(", DNS on {d}"));
    }
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
}

impl Running {
    /// Stops tasks gracefully, then the listeners.
    pub async fn stop(self) {
        self.ctl.shutdown().await;
        if let Some(dns) = self.dns {
            let _ = tokio::task::spawn_blocking(move || dns.stop()).await;
        }
        let _ = self.stop_tx.send(true);
        let threads = self.serving.proxy_threads;
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().map(|t| t.join()).for_each(drop)).await;
        // Followed log streams never end by themselves: give open API calls a
        // moment, then close them.
        let mut api = self.serving.api;
        if tokio::time::timeout(Duration::from_secs(2), &mut api).await.is_err() {
            api.abort();
        }
        if let Some(t) = self.serving.admin {
            let _ = t.await;
        }
        // The last snapshot has the state the tasks were stopped in.
        let _ = self.snapshot_task.await;
        // Last, so the stop's own events are shipped too.
        for ex in self.exporters {
            ex.stop().await;
        }
        for file in [API_URL_FILE, PROXY_URL_FILE, HTTPS_URL_FILE, INTERNAL_URL_FILE, DNS_ADDR_FILE, "server.pid"] {
            let _ = std::fs::remove_file(self.data.join(file));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task_user::Unreachable;

    fn options(data: &Path) -> ServerOptions {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut opts = ServerOptions::new(data.to_path_buf(), any, any);
        opts.proxy_threads = 1;
        opts.admin = Some(any);
        opts.internal = Listen::Off;
        opts.dns = Listen::Off;
        opts.unreachable = Unreachable::RunAsServer;
        opts
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_started_server_says_where_it_listens_holds_its_data_dir_and_cleans_up_at_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let running = start(options(&data)).await.unwrap();
        let read = |f: &str| std::fs::read_to_string(data.join(f)).ok();
        assert_eq!(read(API_URL_FILE), Some(running.api_url.clone()));
        assert_eq!(read(PROXY_URL_FILE), Some(format!("http://{}", running.http)));
        assert!(read(METRICS_URL_FILE).is_some_and(|u| u.ends_with("/metrics")));
        assert_eq!(read(INTERNAL_URL_FILE), None, "discovery is off");

        assert!(crate::store::running_server(&data).is_some());
        let second = start(options(&data)).await.err().expect("a second server on the same data is refused");
        assert!(matches!(second, ServerError::Refused(_)), "{second:?}");
        assert!(second.to_string().starts_with("another wharf server is already running"), "{second}");

        running.stop().await;
        assert_eq!((read(API_URL_FILE), read(PROXY_URL_FILE), read("server.pid")), (None, None, None));
        assert_eq!(crate::store::running_server(&data), None, "the lock went with it");
    }
}
