//! The proxy and its listeners. A request goes through phases, each in a
//! module of its own: [`crate::resolve`] (route, pause, maintenance),
//! [`crate::prepare`] (limits, headers, request id), [`crate::forward`]
//! (choose a task and send, under [`crate::retry`]'s policy), then
//! [`crate::respond`] streams the task's answer or [`crate::answer`] turns
//! the error that stopped it into one.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::access::AccessLog;
use crate::acme::{AcmeChallenges, CHALLENGE_PATH};
use crate::answer::LogCtx;
use crate::conns::{ConnLimits, Conns};
use crate::forward::Failure;
use crate::resolve::{Refused, Routed};
use crate::respond::RespBody;
use crate::retry::RetryBudget;
use crate::routing::RoutingTable;

/// Requests that may wait for a task at once; more get 503 at once.
const MAX_HELD: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("graceful shutdown did not finish within {0:?}; open connections were closed")]
    ShutdownTimeout(Duration),
}

/// Proxy-wide limits; routes may override some (see [`crate::RouteLimits`]).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub connect_timeout: Duration,
    /// Time a client has to send a request's headers (slowloris); also how
    /// long an idle keep-alive connection waits for its next request.
    pub header_timeout: Duration,
    /// Until the upstream's response headers arrive.
    pub response_timeout: Duration,
    pub max_body: u64,
    /// Time a request's whole body has to arrive, from its headers (else
    /// 408); also the longest a response write may stall on a client that
    /// stopped reading.
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// Count requests and latencies for `/metrics`.
    pub metrics: bool,
    /// How long a request waits for a task when its service has none that
    /// can take it (a restart, a rollback under way) before it gets 503.
    pub hold_timeout: Duration,
    /// The port of the HTTPS listener, for redirects to it; None: there is
    /// none, and routes that would redirect serve plain HTTP.
    pub https_port: Option<u16>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            max_body: 100 << 20,
            body_timeout: Duration::from_secs(60),
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_connections: 10_000,
            metrics: true,
            hold_timeout: Duration::from_secs(10),
            https_port: None,
        }
    }
}

/// The proxy: one per server, shared by every listener.
pub struct Proxy {
    table: ArcSwap<RoutingTable>,
    /// Wakes requests waiting for a task when a new snapshot comes in.
    swapped: tokio::sync::Notify,
    /// Requests waiting for a task now; bounded by MAX_HELD.
    held: std::sync::atomic::AtomicUsize,
    pub(crate) config: ProxyConfig,
    pub(crate) access: Option<Arc<dyn AccessLog>>,
    pub(crate) budget: RetryBudget,
    pub(crate) metrics: crate::metrics::Metrics,
    /// Client connections of the public listeners (every worker's), and
    /// of the internal ones: each set under its own total limit, so a
    /// flood from outside cannot lock services out of each other.
    external_conns: Arc<Conns>,
    internal_conns: Arc<Conns>,
    /// The ACME challenges pending now (control fills them).
    acme: Arc<AcmeChallenges>,
}

impl Proxy {
    pub fn new(config: ProxyConfig, access: Option<Arc<dyn AccessLog>>) -> Arc<Proxy> {
        let mut metrics = crate::metrics::Metrics::default();
        metrics.enabled = config.metrics;
        let limits =
            ConnLimits { max: config.max_connections, idle: config.header_timeout, write_stall: config.body_timeout };
        Arc::new(Proxy {
            external_conns: Conns::new(limits),
            internal_conns: Conns::new(limits),
            table: ArcSwap::from_pointee(RoutingTable::default()),
            swapped: tokio::sync::Notify::new(),
            held: std::sync::atomic::AtomicUsize::new(0),
            config,
            access,
            budget: RetryBudget::new(100),
            metrics,
            acme: AcmeChallenges::new(),
        })
    }

    /// The ACME challenges this proxy answers: HTTP-01 here, TLS-ALPN-01
    /// through a [`crate::ServedCerts`] built with them.
    pub fn acme_challenges(&self) -> Arc<AcmeChallenges> {
        self.acme.clone()
    }

    /// Replaces the routing snapshot; requests already routed are unaffected.
    pub fn swap(&self, table: RoutingTable) {
        self.metrics.observe_table(&table);
        let table = Arc::new(table);
        self.metrics.remember(table.clone());
        self.table.store(table);
        self.swapped.notify_waiters();
    }

    /// Waits (bounded) for a newer snapshot; returns the pool of that name in
    /// it. False when the request may wait no longer.
    pub(crate) async fn hold(&self, pool: &mut Arc<crate::routing::Pool>, until: Instant) -> bool {
        if Instant::now() >= until {
            return false;
        }
        if self.held.fetch_add(1, Ordering::Relaxed) >= MAX_HELD {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let before = self.table.load();
        let wait = Duration::from_millis(50).min(until - Instant::now());
        let _ = tokio::time::timeout(wait, self.swapped.notified()).await;
        self.held.fetch_sub(1, Ordering::Relaxed);
        let now = self.table.load_full();
        if !Arc::ptr_eq(&before, &now) {
            if let Some(r) = now.routes().iter().find(|r| r.pool.name == pool.name) {
                *pool = r.pool.clone();
            }
        }
        true
    }

    /// Prometheus text of the proxy's metrics.
    pub fn metrics_text(&self) -> String {
        // Read from the connection sets: upgraded connections count too.
        let open = self.external_conns.open().saturating_add(self.internal_conns.open());
        self.metrics.connections.set(i64::try_from(open).unwrap_or(i64::MAX));
        self.metrics.encode()
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Accepts connections until `shutdown` resolves, then lets in-flight
    /// requests finish for up to `grace`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), ProxyError> {
        self.serve_as(listener, None, shutdown, grace, false).await
    }

    /// Like [`Proxy::serve`], over TLS with `config` (its certificate
    /// resolver picks the certificate by SNI; ALPN offers h2 and http/1.1).
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), ProxyError> {
        let proxy = Arc::downgrade(&self);
        let tls = crate::conns::Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            outcome: Arc::new(move |outcome| {
                if let Some(p) = proxy.upgrade() {
                    p.metrics.handshake(outcome);
                }
            }),
        };
        self.serve_as(listener, Some(tls), shutdown, grace, false).await
    }

    /// Like [`Proxy::serve`], for an internal listener: requests are routed
    /// by the table's internal routes (`SERVICE.local`, ...) only.
    pub async fn serve_internal(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), ProxyError> {
        self.serve_as(listener, None, shutdown, grace, true).await
    }

    async fn serve_as(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<crate::conns::Tls>,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
        internal: bool,
    ) -> Result<(), ProxyError> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_timeout)
            .max_buf_size(self.config.max_header_bytes.max(8192))
            .max_headers(self.config.max_headers);
        builder.http2().timer(TokioTimer::new()).max_header_list_size(self.config.max_header_bytes as u32);
        let conns = if internal { self.internal_conns.clone() } else { self.external_conns.clone() };
        let proxy = self;
        let over_tls = tls.is_some();
        let make = move |peer: SocketAddr| {
            // Computed once per connection, not per request.
            let ip = HeaderValue::from_str(&peer.ip().to_string()).ok();
            let client = Arc::new(Client { addr: peer, ip, internal, tls: over_tls });
            let proxy = proxy.clone();
            move |req| {
                let (proxy, client) = (proxy.clone(), client.clone());
                async move { proxy.handle(req, &client).await }
            }
        };
        crate::conns::serve_guarded(listener, conns, builder, tls, make, shutdown, grace).await
    }

    /// A request through the pipeline: resolve its route, prepare it for
    /// the task, forward it under the retry policy, and answer with the
    /// task's response or with the error that stopped it.
    async fn handle(self: Arc<Self>, req: Request<Incoming>, client: &Client) -> Response<RespBody> {
        let start = Instant::now();
        if !client.tls && !client.internal && req.uri().path().starts_with(CHALLENGE_PATH) {
            // HTTP-01, before routing: a pending token never reaches the app.
            if let Some(key_auth) = self.acme.http_answer(req.uri().path()) {
                return Response::builder()
                    .header(http::header::CONTENT_TYPE, "text/plain")
                    .body(RespBody::Full(Some(bytes::Bytes::from(key_auth))))
                    .expect("static response parts are valid");
            }
        }
        let mut routed = match self.resolve(&req, client).await {
            Ok(routed) => routed,
            Err(Refused { error, routed }) => {
                let route = routed.as_ref().map(Routed::route);
                return self.answer_error(&LogCtx::of(&req, client, start), route, None, &error);
            }
        };
        let raw_host = std::mem::take(&mut routed.raw_host);
        let route = routed.route();
        let max_body = match self.check_limits(&req, route) {
            Ok(max) => max,
            Err(error) => return self.answer_error(&LogCtx::of(&req, client, start), Some(route), None, &error),
        };
        let mut out = self.prepare(req, client, route, max_body, raw_host, start);
        let assigned = match &out.request {
            Some(r) => route.pool.assign(r.headers()),
            None => Default::default(),
        };
        match self.forward(route, &mut out, assigned.set).await {
            Ok(answer) => self.clone().respond(route, answer, out.client_upgrade, assigned.set_cookie, out.ctx),
            Err(Failure { error, backend }) => self.answer_error(&out.ctx, Some(route), backend.as_ref(), &error),
        }
    }
}

/// The client side of a connection.
pub(crate) struct Client {
    pub addr: SocketAddr,
    /// Its IP as a header value, ready for X-Forwarded-For.
    pub ip: Option<HeaderValue>,
    /// It connected to an internal listener.
    pub internal: bool,
    /// It connected over TLS.
    pub tls: bool,
}
