//! Listener and request forwarding.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::routing::{normalize_host, upstream_path, RoutingTable};

type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("graceful shutdown did not finish within {0:?}; open connections were closed")]
    ShutdownTimeout(Duration),
}

/// The proxy: one per server, shared by every listener.
pub struct Proxy {
    table: ArcSwap<RoutingTable>,
    client: Client<HttpConnector, Incoming>,
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

impl Proxy {
    pub fn new() -> Arc<Proxy> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Arc::new(Proxy { table: ArcSwap::from_pointee(RoutingTable::default()), client })
    }

    /// Replaces the routing snapshot; requests already routed are unaffected.
    pub fn swap(&self, table: RoutingTable) {
        self.table.store(Arc::new(table));
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
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!("proxy accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        drop(listener);
        tokio::time::timeout(grace, graceful.shutdown()).await.map_err(|_| ProxyError::ShutdownTimeout(grace))
    }

    async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let raw_host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_string();
        let host = normalize_host(&raw_host);
        let table = self.table.load();
        let Some(m) = table.lookup(&host, req.uri().path()) else {
            return page(
                StatusCode::NOT_FOUND,
                "No route",
                &format!("No route matches host `{host}` and path `{}`.", req.uri().path()),
            );
        };
        let Some(backend) = m.route.pool.pick() else {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                &format!("`{}` has no healthy tasks right now.", m.route.pool.name),
            );
        };
        let path = upstream_path(m.route, req.uri().path());
        let uri = match req.uri().query() {
            Some(q) => format!("http://{}{path}?{q}", backend.addr),
            None => format!("http://{}{path}", backend.addr),
        };
        let Ok(uri) = uri.parse::<Uri>() else {
            return page(StatusCode::BAD_REQUEST, "Bad request", "The request target is not valid.");
        };
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        forwarded_headers(headers, peer, &raw_host);
        let pool_name = m.route.pool.name.clone();
        let task = backend.task.clone();
        drop(table);
        match self.client.request(req).await {
            Ok(resp) => {
                let mut resp = resp.map(|b| b.boxed());
                strip_hop_by_hop(resp.headers_mut());
                resp
            }
            Err(e) => {
                tracing::debug!("upstream {pool_name} task {task} failed: {e}");
                page(StatusCode::BAD_GATEWAY, "Bad gateway", &format!("`{pool_name}` did not answer."))
            }
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

fn forwarded_headers(headers: &mut HeaderMap, peer: SocketAddr, host: &str) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    let ip = peer.ip().to_string();
    let xff = match headers.get(&XFF).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(XFF, v);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v.clone());
        // HTTP/2 clients send :authority instead of Host; HTTP/1.1 upstreams need Host.
        headers.entry(header::HOST).or_insert(v);
    }
}

/// A small HTML page for answers the proxy gives itself.
fn page(status: StatusCode, title: &str, detail: &str) -> Response<Body> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\
         <body><h1>{code} {title}</h1><p>{detail}</p><hr><p>wharf</p></body></html>\n",
        code = status.as_u16(),
        detail = html_escape(detail),
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
        .expect("static response parts are valid")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
