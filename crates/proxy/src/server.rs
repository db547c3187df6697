//! Listener and request forwarding.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use crate::access::{AccessEntry, AccessLog};
use crate::backend::{random_u64, Backend, InFlight};
use crate::body::{BodyError, ReqBody};
use crate::conns::{ConnLimits, Conns};
use crate::pause::PauseOutcome;
use crate::routing::{normalize_host, upstream_path, RouteSpec, RoutingTable};

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
        }
    }
}

/// Retries may add at most ~20% to the load (plus a small floor), so a
/// failing service is not hit with a storm of retries.
struct RetryBudget {
    /// Tenths of a retry.
    tokens: AtomicI64,
}

impl RetryBudget {
    const PER_REQUEST: i64 = 2;
    const PER_RETRY: i64 = 10;
    const CAP: i64 = 1000;

    fn deposit(&self) {
        if self.tokens.load(Ordering::Relaxed) < Self::CAP {
            self.tokens.fetch_add(Self::PER_REQUEST, Ordering::Relaxed);
        }
    }

    fn withdraw(&self) -> bool {
        if self.tokens.fetch_sub(Self::PER_RETRY, Ordering::Relaxed) >= Self::PER_RETRY {
            true
        } else {
            self.tokens.fetch_add(Self::PER_RETRY, Ordering::Relaxed);
            false
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
    config: ProxyConfig,
    access: Option<Arc<dyn AccessLog>>,
    budget: RetryBudget,
    pub(crate) metrics: crate::metrics::Metrics,
    /// Client connections of the public listeners (every worker's), and
    /// of the internal ones: each set under its own total limit, so a
    /// flood from outside cannot lock services out of each other.
    external_conns: Arc<Conns>,
    internal_conns: Arc<Conns>,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Backends tried for one request at most.
const MAX_ATTEMPTS: usize = 3;
/// How long a replay waits for a new routing snapshot before it goes back
/// to the only task, which just reset a new connection.
const SAME_TASK_REPLAY_WAIT: Duration = Duration::from_millis(500);
/// Requests that may wait for a task at once; more get 503 at once.
const MAX_HELD: usize = 10_000;

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
            budget: RetryBudget { tokens: AtomicI64::new(100) },
            metrics,
        })
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
    async fn hold(&self, pool: &mut Arc<crate::routing::Pool>, until: Instant) -> bool {
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
        self.serve_as(listener, shutdown, grace, false).await
    }

    /// Like [`Proxy::serve`], for an internal listener: requests are routed
    /// by the table's internal routes (`SERVICE.local`, ...) only.
    pub async fn serve_internal(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), ProxyError> {
        self.serve_as(listener, shutdown, grace, true).await
    }

    async fn serve_as(
        self: Arc<Self>,
        listener: TcpListener,
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
        let make = move |peer: SocketAddr| {
            // Computed once per connection, not per request.
            let client =
                Arc::new(Client { addr: peer, ip: HeaderValue::from_str(&peer.ip().to_string()).ok(), internal });
            let proxy = proxy.clone();
            move |req| {
                let (proxy, client) = (proxy.clone(), client.clone());
                async move { proxy.handle(req, &client).await }
            }
        };
        crate::conns::serve_guarded(listener, conns, builder, make, shutdown, grace).await
    }

    async fn handle(self: Arc<Self>, mut req: Request<Incoming>, client: &Client) -> Response<RespBody> {
        let start = Instant::now();
        let peer = client.addr;
        let raw_host = match request_host(&req) {
            Ok(h) => h,
            Err(why) => {
                return self.answer_ctx(
                    &LogCtx::of(&req, client, start),
                    None,
                    None,
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    why,
                )
            }
        };
        let host = normalize_host(&raw_host);
        // A paused pool sends us around again once released. The route is
        // borrowed from the snapshot, which this request keeps alive.
        let mut table = self.table.load_full();
        let idx = loop {
            let found = if client.internal {
                table.lookup_internal_index(&host, req.uri().path())
            } else {
                table.lookup_index(&host, req.uri().path())
            };
            let Some(idx) = found else {
                let detail = format!("No route matches host `{host}` and path `{}`.", req.uri().path());
                return self.answer_ctx(
                    &LogCtx::of(&req, client, start),
                    None,
                    None,
                    StatusCode::NOT_FOUND,
                    "No route",
                    &detail,
                );
            };
            let Some(gate) = table.routes()[idx].pool.pause.clone() else { break idx };
            match gate.wait().await {
                PauseOutcome::Released => table = self.table.load_full(),
                PauseOutcome::Refused => {
                    let route = &table.routes()[idx];
                    let detail = format!("`{}` is paused; try again shortly.", route.pool.name);
                    return self.answer_ctx(
                        &LogCtx::of(&req, client, start),
                        Some(route),
                        None,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Paused",
                        &detail,
                    );
                }
            }
        };
        let route = &table.routes()[idx];
        if let Some(m) = &route.pool.maintenance {
            // The task's own health check (the path as the task sees it) still goes through.
            if route.pool.health_path.as_deref() != Some(upstream_path(route, req.uri().path()).as_ref()) {
                self.metrics.count(&route.pool, 503);
                self.log_ctx(&LogCtx::of(&req, client, start), Some(route), None, 503, m.page.len() as u64);
                return Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                    .header(header::RETRY_AFTER, m.retry_after_secs)
                    .header(header::CACHE_CONTROL, "no-store")
                    .body(RespBody::Full(Some(m.page.clone())))
                    .expect("static response parts are valid");
            }
        }
        let max_body = route.limits.max_body.unwrap_or(self.config.max_body);
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            let detail = format!("The request body is larger than {max_body} bytes.");
            return self.answer_ctx(
                &LogCtx::of(&req, client, start),
                Some(route),
                None,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
                &detail,
            );
        }
        self.budget.deposit();
        let request_id = match req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
            Some(id) if !id.is_empty() && id.len() <= 200 => id.to_string(),
            _ => format!("{:016x}{:016x}", random_u64(), random_u64()),
        };
        let upgrade = is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let log_method = parts.method.clone();
        // Only an access log needs its own copy of the path.
        let log_path = if self.access.is_some() { parts.uri.path().to_string() } else { String::new() };
        let path = upstream_path(route, parts.uri.path());
        // Unchanged paths keep the client's bytes as they are (no copy).
        let pq = match parts.uri.query() {
            _ if path == parts.uri.path() => parts.uri.path_and_query().cloned(),
            Some(q) => PathAndQuery::try_from(format!("{path}?{q}")).ok(),
            None => PathAndQuery::try_from(path.as_ref()).ok(),
        };
        parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
        parts.version = Version::HTTP_11;
        let keep_upgrade = if upgrade { parts.headers.get(header::UPGRADE).cloned() } else { None };
        strip_hop_by_hop(&mut parts.headers);
        if let Some(u) = keep_upgrade {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, u);
        }
        forwarded_headers(&mut parts.headers, client, &raw_host);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            parts.headers.insert(X_REQUEST_ID, v);
        }
        let bodyless = declared.unwrap_or(0) == 0 && body.is_end_stream();
        let idempotent = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );
        // Kept only when the request could be sent again after a reset.
        // An upgrade handshake may be sent again too: nothing was upgraded yet.
        let mut replay =
            (idempotent && bodyless).then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
        // Set once the client's body has all arrived; Empty has none to wait for.
        let mut body_done = None;
        let body = if bodyless {
            ReqBody::Empty
        } else {
            let deadline = start.checked_add(self.config.body_timeout).unwrap_or(start + Duration::from_secs(86_400));
            let (b, done) = crate::body::ClientBody::new(body, max_body, deadline);
            body_done = Some(done);
            ReqBody::Stream(b)
        };
        let mut pending = Some(Request::from_parts(parts, body));
        let mut replaying = false;
        // Backends that failed this request; the common case never allocates.
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let connect_timeout = route.limits.connect_timeout.unwrap_or(self.config.connect_timeout);
        let response_timeout = route.limits.response_timeout.unwrap_or(self.config.response_timeout);
        let ctx = LogCtx {
            method: log_method,
            host: raw_host,
            path: log_path,
            request_id,
            peer,
            start,
            internal: client.internal,
        };
        let mut failure =
            (StatusCode::SERVICE_UNAVAILABLE, format!("`{}` has no healthy tasks right now.", route.pool.name));
        let mut pool = route.pool.clone();
        let mut attempt = 0;
        let mut hold_until: Option<Instant> = None;
        // After a 5xx from the pool, the request goes to the fallback set only;
        // the 5xx is kept meanwhile, and is the answer if the fallback set
        // gives none.
        let mut fallback_only = false;
        let mut held_5xx: Option<Held> = None;
        // Attempts count requests sent; connect failures only exclude a task.
        loop {
            if attempt >= MAX_ATTEMPTS {
                break;
            }
            // A replay after a reset prefers another task, but may use the
            // same one (once, on a new connection) when it is the only one.
            let picked = if fallback_only {
                pool.pick_fallback(&tried)
            } else {
                let same = std::mem::take(&mut replaying);
                // Then the fallback set (a blue-green bake's standby tasks).
                pool.pick(&tried)
                    .or_else(|| if same { pool.pick(&[]) } else { None })
                    .or_else(|| pool.pick_fallback(&tried))
            };
            let Some(backend) = picked else {
                // Nothing can take it now: wait for tasks (bounded) unless
                // the request can't be sent again.
                if pending.is_none() || fallback_only {
                    break;
                }
                let until = *hold_until.get_or_insert_with(|| Instant::now() + self.config.hold_timeout);
                let before = pool.clone();
                if !self.hold(&mut pool, until).await {
                    break;
                }
                if !Arc::ptr_eq(&before, &pool) {
                    // A new snapshot: tasks that failed may be back, checked healthy.
                    tried.retain(|b| b.ejected());
                }
                continue;
            };
            let guard = backend.start();
            // `pooled`: the connection came from the idle pool.
            let (mut conn, pooled) = match connect(&backend, connect_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    backend.failed();
                    tried.push(backend.clone());
                    self.metrics.upstream_error(&route.pool.name, "connect");
                    tracing::debug!("connect to {} ({}) failed: {e}", backend.task, backend.addr);
                    failure =
                        (StatusCode::BAD_GATEWAY, format!("`{}` did not accept the connection.", route.pool.name));
                    continue;
                }
            };
            // Going to the standby set is no retry storm: it is healthy and
            // took this traffic before the bake.
            let to_standby = fallback_only || pool.fallback.iter().any(|b| Arc::ptr_eq(b, &backend));
            if attempt > 0 && !to_standby && !self.budget.withdraw() {
                break;
            }
            attempt += 1;
            let req = pending.take().expect("a request is pending for every attempt");
            let sent = tokio::time::timeout(response_timeout, conn.try_send_request(req)).await;
            match sent {
                Err(_) => {
                    if body_done.as_ref().is_some_and(|d| !d.load(Ordering::Relaxed)) {
                        // Still waiting for the client's body: the client is slow, not the task.
                        return self.client_fault(&ctx, route, &BodyError::Timeout, max_body);
                    }
                    if let Some(h) = held_5xx.take() {
                        return self.clone().respond(route, h.guard, h.conn, h.resp, client_upgrade, ctx);
                    }
                    self.metrics.upstream_error(&route.pool.name, "timeout");
                    let detail =
                        format!("`{}` did not answer within {}s.", route.pool.name, response_timeout.as_secs_f64());
                    return self.answer_ctx(
                        &ctx,
                        Some(route),
                        Some(&backend),
                        StatusCode::GATEWAY_TIMEOUT,
                        "Gateway timeout",
                        &detail,
                    );
                }
                Ok(Ok(resp)) => {
                    backend.succeeded();
                    let status = resp.status();
                    if let Some(h) = held_5xx.take() {
                        // The set on standby answered instead; the 5xx still
                        // counts against the task that gave it.
                        h.guard.backend().answered(h.resp.status().as_u16(), Some(ctx.start.elapsed()));
                        self.metrics.upstream_error(&pool.name, "5xx_fallback");
                    }
                    if status.is_server_error() && !fallback_only && !pool.fallback.is_empty() {
                        if let Some((method, uri, headers)) = replay.take() {
                            tried.push(backend);
                            held_5xx = Some(Held { guard, conn, resp });
                            let mut again = Request::new(ReqBody::Empty);
                            *again.method_mut() = method;
                            *again.uri_mut() = uri;
                            *again.headers_mut() = headers;
                            pending = Some(again);
                            fallback_only = true;
                            continue;
                        }
                    }
                    return self.clone().respond(route, guard, conn, resp, client_upgrade, ctx);
                }
                Ok(Err(mut e)) => {
                    tried.push(backend.clone());
                    if let Some(unsent) = e.take_message() {
                        // The connection closed before the request left: safe to send elsewhere.
                        pending = Some(unsent);
                        continue;
                    }
                    let err = e.into_error();
                    if let Some(fault) = client_body_error(&err) {
                        // The client's own error: the task is not to blame for it.
                        return self.client_fault(&ctx, route, fault, max_body);
                    }
                    backend.failed();
                    self.metrics.upstream_error(&route.pool.name, "reset");
                    tracing::debug!("{} ({}) failed: {err}", backend.task, backend.addr);
                    failure = (
                        StatusCode::BAD_GATEWAY,
                        format!("`{}` closed the connection without answering.", route.pool.name),
                    );
                    // Reset before any response byte: an idempotent, bodyless request is sent once more.
                    match replay.take() {
                        Some((method, uri, headers)) => {
                            let mut again = Request::new(ReqBody::Empty);
                            *again.method_mut() = method;
                            *again.uri_mut() = uri;
                            *again.headers_mut() = headers;
                            pending = Some(again);
                            replaying = true;
                            if pool.pick(&tried).is_none() {
                                // The only task reset the connection: it may be going
                                // away (routing hears of an exit within milliseconds).
                                // Give routing a moment to say so before sending it
                                // back there; a reset of a new connection says more.
                                let wait = if pooled { SAME_TASK_REPLAY_WAIT / 5 } else { SAME_TASK_REPLAY_WAIT };
                                let until = Instant::now() + wait;
                                let before = pool.clone();
                                while Arc::ptr_eq(&before, &pool) && self.hold(&mut pool, until).await {}
                            }
                        }
                        None => break,
                    }
                }
            }
        }
        if let Some(h) = held_5xx {
            // The standby set could not answer: the new set's answer stands.
            return self.clone().respond(route, h.guard, h.conn, h.resp, client_upgrade, ctx);
        }
        let (status, detail) = failure;
        let title = if status == StatusCode::BAD_GATEWAY { "Bad gateway" } else { "Service unavailable" };
        self.answer_ctx(&ctx, Some(route), tried.last(), status, title, &detail)
    }

    /// Turns an upstream response into ours; the body wrapper keeps the
    /// task counted as busy, returns the connection to the pool and writes
    /// the access log line when the last byte has gone out.
    fn respond(
        self: Arc<Self>,
        route: &RouteSpec,
        mut guard: InFlight,
        conn: SendRequest<ReqBody>,
        mut resp: Response<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        ctx: LogCtx,
    ) -> Response<RespBody> {
        let status = resp.status();
        self.metrics.count(&route.pool, status.as_u16());
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client) = client_upgrade else {
                let detail = format!("`{}` switched protocols on a request that did not ask to.", route.pool.name);
                return self.answer_ctx(
                    &ctx,
                    Some(route),
                    Some(guard.backend()),
                    StatusCode::BAD_GATEWAY,
                    "Bad gateway",
                    &detail,
                );
            };
            let upstream = hyper::upgrade::on(&mut resp);
            guard.mark_upgraded();
            self.log_ctx(&ctx, Some(route), Some(guard.backend()), 101, 0);
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
                }
                drop((guard, conn));
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, RespBody::Full(None));
        }
        strip_hop_by_hop(resp.headers_mut());
        let (parts, body) = resp.into_parts();
        let stats = self.metrics.pool_stats(&route.pool).cloned();
        let done = Done {
            proxy: self,
            pool: route.pool.name.clone(),
            stats,
            status: status.as_u16(),
            guard,
            conn: Some(conn),
            ctx,
        };
        Response::from_parts(parts, RespBody::Upstream(UpstreamBody { inner: body, sent: 0, done: Some(done) }))
    }

    /// Answers a request whose body the client got wrong: a 4xx, never
    /// counted against the task it was being sent to.
    fn client_fault(&self, ctx: &LogCtx, route: &RouteSpec, fault: &BodyError, max_body: u64) -> Response<RespBody> {
        let (status, title, detail) = match fault {
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
                format!("The request body is larger than {max_body} bytes."),
            ),
            BodyError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout",
                format!("The request body did not arrive within {}s.", self.config.body_timeout.as_secs_f64()),
            ),
            BodyError::Client(e) => {
                (StatusCode::BAD_REQUEST, "Bad request", format!("The request body is malformed: {e}."))
            }
        };
        self.answer_ctx(ctx, Some(route), None, status, title, &detail)
    }

    fn answer_ctx(
        &self,
        ctx: &LogCtx,
        route: Option<&RouteSpec>,
        backend: Option<&Arc<Backend>>,
        status: StatusCode,
        title: &str,
        detail: &str,
    ) -> Response<RespBody> {
        let resp = page(status, title, detail);
        let len = match resp.body() {
            RespBody::Full(Some(b)) => b.len() as u64,
            _ => 0,
        };
        if let Some(r) = route {
            self.metrics.count(&r.pool, status.as_u16());
        }
        if let Some(b) = backend {
            b.answered(status.as_u16(), Some(ctx.start.elapsed()));
        }
        self.log_ctx(ctx, route, backend, status.as_u16(), len);
        resp
    }

    fn log_ctx(
        &self,
        ctx: &LogCtx,
        route: Option<&RouteSpec>,
        backend: Option<&Arc<Backend>>,
        status: u16,
        bytes: u64,
    ) {
        if let Some(sink) = &self.access {
            sink.log(&ctx.entry(route.map(|r| &r.pool.name), backend.map(|b| &b.task), status, bytes));
        }
    }
}

/// What the access log needs to know of a request once it is answered.
struct LogCtx {
    method: Method,
    host: String,
    path: String,
    request_id: String,
    peer: SocketAddr,
    start: Instant,
    internal: bool,
}

impl LogCtx {
    /// For answers given before the request was taken apart.
    fn of(req: &Request<Incoming>, client: &Client, start: Instant) -> LogCtx {
        LogCtx {
            method: req.method().clone(),
            host: req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string(),
            path: req.uri().path().to_string(),
            request_id: req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
            peer: client.addr,
            start,
            internal: client.internal,
        }
    }

    fn entry<'a>(
        &'a self,
        pool: Option<&'a Arc<str>>,
        task: Option<&'a Arc<str>>,
        status: u16,
        bytes: u64,
    ) -> AccessEntry<'a> {
        AccessEntry {
            time: SystemTime::now(),
            client: self.peer.ip(),
            duration: self.start.elapsed(),
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            status,
            bytes,
            pool,
            task,
            request_id: &self.request_id,
            internal: self.internal,
        }
    }
}

/// Finishes a forwarded request when its response body ends (or is dropped).
struct Done {
    proxy: Arc<Proxy>,
    pool: Arc<str>,
    stats: Option<Arc<crate::metrics::PoolStats>>,
    status: u16,
    guard: InFlight,
    conn: Option<SendRequest<ReqBody>>,
    ctx: LogCtx,
}

impl Done {
    fn finish(mut self, sent: u64, complete: bool) {
        if complete {
            if let Some(conn) = self.conn.take() {
                self.guard.backend().put_idle(conn);
            }
        }
        let took = self.ctx.start.elapsed();
        self.guard.backend().answered(self.status, Some(took));
        if let Some(stats) = &self.stats {
            crate::metrics::Metrics::latency(stats, took);
        }
        if let Some(sink) = &self.proxy.access {
            let task = Some(&self.guard.backend().task);
            sink.log(&self.ctx.entry(Some(&self.pool), task, self.status, sent));
        }
    }
}

/// The response body: a page of our own, or the upstream's, streamed.
// Moved once into hyper's response; boxing the large variant would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum RespBody {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

pub struct UpstreamBody {
    inner: Incoming,
    sent: u64,
    done: Option<Done>,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Bodyless answers (HEAD, 204, 304) are never polled: they ended
        // cleanly. Otherwise the client went away mid-body and the
        // connection can't be reused.
        if let Some(done) = self.done.take() {
            done.finish(self.sent, self.inner.is_end_stream());
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Upstream(u) => {
                let polled = Pin::new(&mut u.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            u.sent += d.len() as u64;
                        }
                        if u.inner.is_end_stream() {
                            if let Some(done) = u.done.take() {
                                done.finish(u.sent, true);
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(done) = u.done.take() {
                            done.finish(u.sent, true);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(done) = u.done.take() {
                            done.finish(u.sent, false);
                        }
                    }
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Upstream(u) => u.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RespBody::Full(None) => SizeHint::with_exact(0),
            RespBody::Upstream(u) => u.inner.size_hint(),
        }
    }
}

/// A pooled connection, or a new one.
/// A connection to the backend: a pooled one (true) or a new one.
async fn connect(backend: &Backend, timeout: Duration) -> Result<(SendRequest<ReqBody>, bool), String> {
    if let Some(conn) = backend.take_idle() {
        return Ok((conn, true));
    }
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(backend.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no connection within {timeout:?}")),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok((sender, false))
}

/// The client's body error behind a failed upstream request, if that is
/// why it failed.
fn client_body_error(err: &hyper::Error) -> Option<&BodyError> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = src {
        if let Some(b) = e.downcast_ref::<BodyError>() {
            return Some(b);
        }
        src = e.source();
    }
    None
}

/// A task's 5xx kept while the standby set is asked instead.
struct Held {
    guard: InFlight,
    conn: SendRequest<ReqBody>,
    resp: Response<Incoming>,
}

/// The request's host: the Host header (HTTP/1.1 requires one) or the
/// HTTP/2 authority. A malformed one is a 400.
fn request_host(req: &Request<Incoming>) -> Result<String, &'static str> {
    let hosts = req.headers().get_all(header::HOST);
    let mut it = hosts.iter();
    let host = match (it.next(), it.next()) {
        (Some(_), Some(_)) => return Err("The request has more than one Host header."),
        (Some(h), None) if h.is_empty() => return Err("The Host header is empty."),
        (Some(h), None) => h.to_str().map_err(|_| "The Host header is not valid.")?.to_string(),
        (None, _) => match req.uri().authority() {
            Some(a) => a.as_str().to_string(),
            None if req.version() == Version::HTTP_10 => String::new(),
            None => return Err("The request has no Host header."),
        },
    };
    let valid = host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    if !valid {
        return Err("The Host header is not valid.");
    }
    Ok(host)
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    if let Some(conn) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .ok()
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
}

/// The client side of a connection.
struct Client {
    addr: SocketAddr,
    /// Its IP as a header value, ready for X-Forwarded-For.
    ip: Option<HeaderValue>,
    /// It connected to an internal listener.
    internal: bool,
}

fn forwarded_headers(headers: &mut HeaderMap, client: &Client, host: &str) {
    match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {}", client.addr.ip())) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        None => {
            if let Some(ip) = &client.ip {
                headers.insert(X_FORWARDED_FOR, ip.clone());
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    // The client's Host value is shared, not copied.
    if let Some(v) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, v);
    } else if let Ok(v) = HeaderValue::from_str(host) {
        // HTTP/2 clients send :authority instead of Host; HTTP/1.1 upstreams need Host.
        headers.insert(X_FORWARDED_HOST, v.clone());
        headers.insert(header::HOST, v);
    }
}

/// A small HTML page for answers the proxy gives itself.
fn page(status: StatusCode, title: &str, detail: &str) -> Response<RespBody> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\
         <body><h1>{code} {title}</h1><p>{detail}</p><hr><p>wharf</p></body></html>\n",
        code = status.as_u16(),
        detail = html_escape(detail),
    );
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp = resp.header(header::RETRY_AFTER, "5");
    }
    if status.is_client_error() && status != StatusCode::NOT_FOUND {
        // After a malformed request the connection's state is unknown.
        resp = resp.header(header::CONNECTION, "close");
    }
    resp.body(RespBody::Full(Some(Bytes::from(body)))).expect("static response parts are valid")
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget_allows_about_a_fifth_of_traffic() {
        let budget = RetryBudget { tokens: AtomicI64::new(0) };
        assert!(!budget.withdraw(), "no traffic yet, no retries");
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.withdraw() {
                retries += 1;
            }
        }
        assert_eq!(retries, 200, "one retry per five requests when every request fails");
        for _ in 0..100_000 {
            budget.deposit();
        }
        let burst = (0..1000).filter(|_| budget.withdraw()).count();
        assert!(burst <= 101, "saved-up retries are capped: {burst}");
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
