//! An in-process proxy with routes and fake backends in a few lines, to test
//! the request pipeline without the whole server:
//!
//! ```ignore
//! let ok = ok_backend("ok");
//! let h = Harness::new().route("a.test/", pool_of(&[&ok, &refusing_backend()])).start().await;
//! assert_eq!(h.get("a.test", "/x").await.status, 200);
//! ```
//!
//! Fake backends are real HTTP servers on 127.0.0.1:0, spawned on the
//! test's runtime; they stop with it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wharf_proxy::{Backend, BackendSet, HostMatch, Pool, Proxy, ProxyConfig, RouteLimits, RouteSpec, RoutingTable};

/// What a fake backend does with each request.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// 200, echoing its name, the request line and the request headers.
    Echo,
    /// This status, with its name as the body.
    Status(u16),
    /// Reads the request head, then closes the connection without a byte.
    Close,
    /// Reads the request head and never answers.
    Hang,
}

/// A backend task that is a real server on loopback.
pub struct Fake {
    pub name: String,
    pub addr: SocketAddr,
    /// The proxy's view of it; the same one in every pool it is put in.
    pub backend: Arc<Backend>,
    hits: Arc<AtomicUsize>,
}

impl Fake {
    /// Requests that reached it (request heads read).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub fn ok_backend(name: &str) -> Fake {
    fake(name, Behaviour::Echo)
}

pub fn failing_backend(name: &str, status: u16) -> Fake {
    fake(name, Behaviour::Status(status))
}

pub fn closing_backend(name: &str) -> Fake {
    fake(name, Behaviour::Close)
}

pub fn hanging_backend(name: &str) -> Fake {
    fake(name, Behaviour::Hang)
}

/// An address nothing listens on: connecting is refused.
pub fn refusing_backend(name: &str) -> Fake {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    Fake { name: name.into(), addr, backend: Arc::new(Backend::new(name, addr)), hits: Arc::default() }
}

/// Starts a fake backend on the current runtime.
pub fn fake(name: &str, behaviour: Behaviour) -> Fake {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let addr = std_listener.local_addr().expect("addr");
    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
    let hits = Arc::new(AtomicUsize::new(0));
    let (task_name, task_hits) = (name.to_string(), hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let (name, hits) = (task_name.clone(), task_hits.clone());
            tokio::spawn(async move {
                match behaviour {
                    Behaviour::Close | Behaviour::Hang => {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        hits.fetch_add(1, Ordering::SeqCst);
                        if let Behaviour::Hang = behaviour {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        let _ = stream.shutdown().await;
                    }
                    Behaviour::Echo | Behaviour::Status(_) => {
                        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let name = name.clone();
                            async move {
                                let mut text = format!("{name}\n{} {}\n", req.method(), req.uri());
                                for (k, v) in req.headers() {
                                    text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                                }
                                let status = match behaviour {
                                    Behaviour::Status(s) => {
                                        text = name;
                                        s
                                    }
                                    _ => 200,
                                };
                                let _ = req.into_body().collect().await;
                                let resp = http::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(text)))
                                    .expect("valid response");
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    Fake { name: name.into(), addr, backend: Arc::new(Backend::new(name, addr)), hits }
}

/// A pool of one set with these backends.
pub fn pool_of(fakes: &[&Fake]) -> Pool {
    Pool::new("app/web", fakes.iter().map(|f| f.backend.clone()).collect())
}

/// A backend set of these backends.
pub fn set_of(key: u64, weight: u32, fakes: &[&Fake]) -> BackendSet {
    BackendSet::new(key, weight, fakes.iter().map(|f| f.backend.clone()).collect())
}

/// "a.test/api" → a route for host a.test and path /api; "/x" → any host.
pub fn route_at(at: &str, pool: Pool) -> RouteSpec {
    let (host, path) = match at.find('/') {
        Some(0) => (None, at),
        Some(i) => (Some(&at[..i]), &at[i..]),
        None => (Some(at), "/"),
    };
    RouteSpec {
        host: HostMatch::from_spec(host),
        path: path.to_string(),
        strip_prefix: false,
        pool: Arc::new(pool),
        limits: RouteLimits::default(),
        https: Default::default(),
    }
}

/// A proxy to be started, with its routes.
pub struct Harness {
    routes: Vec<RouteSpec>,
    config: ProxyConfig,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Harness {
    /// Default limits, except that a request waits at most 2s for a task.
    pub fn new() -> Harness {
        let config = ProxyConfig { hold_timeout: Duration::from_secs(2), ..ProxyConfig::default() };
        Harness { routes: Vec::new(), config }
    }

    pub fn config(mut self, change: impl FnOnce(&mut ProxyConfig)) -> Harness {
        change(&mut self.config);
        self
    }

    pub fn route(self, at: &str, pool: Pool) -> Harness {
        self.route_spec(route_at(at, pool))
    }

    pub fn route_spec(mut self, route: RouteSpec) -> Harness {
        self.routes.push(route);
        self
    }

    pub async fn start(self) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("addr");
        let proxy = Proxy::new(self.config, None);
        proxy.swap(RoutingTable::new(self.routes));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = proxy.clone();
        tokio::spawn(async move {
            let _ = serving
                .serve(
                    listener,
                    async move {
                        let _ = stopped.await;
                    },
                    Duration::from_secs(1),
                )
                .await;
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Running { proxy, addr, client, _stop: stop }
    }
}

/// A started proxy; stops when dropped.
pub struct Running {
    pub proxy: Arc<Proxy>,
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Running {
    /// Replaces the routing snapshot.
    pub fn swap(&self, routes: Vec<RouteSpec>) {
        self.proxy.swap(RoutingTable::new(routes));
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(self.request(Method::GET, host, path).body(Full::default()).expect("request")).await
    }

    /// A request builder aimed at the proxy, with its Host header set.
    pub fn request(&self, method: Method, host: &str, path: &str) -> http::request::Builder {
        Request::builder().method(method).uri(format!("http://{}{path}", self.addr)).header(http::header::HOST, host)
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = self.client.request(req).await.expect("the proxy answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
    }
}

/// Waits (bounded) until `cond` holds; false if it never did.
pub async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
