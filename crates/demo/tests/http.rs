//! The web role, in-process on port 0, checked with real HTTP/1.1 and h2c clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use wharf_demo::{DemoArgs, Role};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(args: DemoArgs) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wharf_demo::serve(args, listener, async {
            let _ = stopped.await;
        }));
        Server { addr, stop: Some(stop), task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(TIMEOUT, self.task).await.expect("server stops").unwrap().unwrap();
    }
}

fn args(name: &str) -> DemoArgs {
    DemoArgs {
        name: name.into(),
        version_label: "7".into(),
        task: Some("web-7-1".into()),
        revision: Some("web@7".into()),
        ..DemoArgs::default()
    }
}

struct Reply {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers)).to_str().unwrap()
    }
}

async fn read(res: Response<Incoming>) -> Reply {
    let (parts, body) = res.into_parts();
    let body = tokio::time::timeout(TIMEOUT, body.collect()).await.unwrap().unwrap().to_bytes();
    Reply { status: parts.status, version: parts.version, headers: parts.headers, body }
}

async fn get_with(http2: bool, url: &str) -> Reply {
    let mut builder = Client::builder(TokioExecutor::new());
    if http2 {
        builder.http2_only(true);
    }
    let client = builder.build_http::<Empty<Bytes>>();
    let res = tokio::time::timeout(TIMEOUT, client.get(url.parse().unwrap())).await.unwrap().unwrap();
    read(res).await
}

async fn get(url: &str) -> Reply {
    get_with(false, url).await
}

/// A request body fed chunk by chunk from a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(TIMEOUT, body.frame()).await.expect("a frame in time")?.unwrap();
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Some(data);
            }
        }
    }
}

#[tokio::test]
async fn root_over_http1_and_h2c() {
    let server = Server::start(args("alpha")).await;

    let reply = get(&server.url("/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_11);
    assert_eq!(reply.text(), "hello from alpha (version 7, task web-7-1)\n");
    assert_eq!(reply.header("x-demo-name"), "alpha");
    assert_eq!(reply.header("x-demo-task"), "web-7-1");
    assert_eq!(reply.header("content-type"), "text/plain; charset=utf-8");

    let reply = get_with(true, &server.url("/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.text(), "hello from alpha (version 7, task web-7-1)\n");
    assert_eq!(reply.header("x-demo-name"), "alpha");
    assert_eq!(reply.header("x-demo-task"), "web-7-1");

    server.stop().await;
}

#[tokio::test]
async fn http1_keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::start(args("ka")).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for path in ["/", "/health", "/version", "/status/404", "/"] {
        sender.ready().await.unwrap();
        let req = Request::get(path).header("host", "demo").body(Empty::<Bytes>::new()).unwrap();
        let reply = read(sender.send_request(req).await.unwrap()).await;
        assert!(reply.status == StatusCode::OK || reply.status == StatusCode::NOT_FOUND);
        assert_eq!(reply.header("x-demo-name"), "ka");
    }
    server.stop().await;
}

#[tokio::test]
async fn no_task_gives_empty_task_header() {
    let server = Server::start(DemoArgs::default()).await;
    let reply = get(&server.url("/")).await;
    assert_eq!(reply.text(), "hello from demo (version 1, task -)\n");
    assert_eq!(reply.header("x-demo-name"), "demo");
    assert_eq!(reply.header("x-demo-task"), "");
    let version: serde_json::Value = serde_json::from_slice(&get(&server.url("/version")).await.body).unwrap();
    assert_eq!(version["task"], serde_json::Value::Null);
    assert_eq!(version["revision"], serde_json::Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn health_and_failing_health() {
    let server = Server::start(args("h")).await;
    let reply = get(&server.url("/health")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok");
    server.stop().await;

    let server = Server::start(DemoArgs { fail_health: true, ..args("h") }).await;
    let reply = get(&server.url("/health")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("x-demo-name"), "h");
    // The rest still works.
    assert_eq!(get(&server.url("/")).await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn version_is_json() {
    let server = Server::start(args("v")).await;
    let reply = get(&server.url("/version")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "v",
            "version": "7",
            "revision": "web@7",
            "task": "web-7-1",
            "pid": std::process::id(),
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn status_codes() {
    let server = Server::start(args("s")).await;
    let reply = get(&server.url("/status/418")).await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(reply.text(), "418 I'm a teapot\n");
    assert_eq!(reply.header("x-demo-name"), "s");

    let reply = get(&server.url("/status/503")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    let reply = get_with(true, &server.url("/status/204")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty());

    for bad in ["/status/abc", "/status/100", "/status/1000", "/status/"] {
        assert_eq!(get(&server.url(bad)).await.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = Server::start(args("n")).await;
    for path in ["/nope", "/health/", "/status", "/echo/x"] {
        let reply = get(&server.url(path)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.header("x-demo-name"), "n");
        assert_eq!(reply.header("x-demo-task"), "web-7-1");
    }
    server.stop().await;
}

#[tokio::test]
async fn env_reports_the_environment() {
    let server = Server::start(args("e")).await;
    // Cargo sets this for test binaries.
    let reply = get(&server.url("/env?key=CARGO_PKG_NAME")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "wharf-demo");
    assert_eq!(reply.header("x-demo-name"), "e");

    let reply = get(&server.url("/env?key=WHARF_DEMO_SURELY_UNSET_42")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    assert_eq!(get(&server.url("/env")).await.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

async fn echo_streams(http2: bool) {
    let server = Server::start(args("echo")).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let io = TokioIo::new(stream);
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let req = Request::post(server.url("/echo"))
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-custom", "a")
        .header("x-custom", "b")
        .header("content-type", "text/x-test")
        .body(ChannelBody(rx))
        .unwrap();
    let res = if http2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        tokio::spawn(async move { sender.send_request(req).await })
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        tokio::spawn(async move { sender.send_request(req).await })
    };

    // The response starts before the request body is finished, and each
    // chunk comes back before the next one is sent.
    tx.send(Bytes::from_static(b"first chunk")).await.unwrap();
    let res = tokio::time::timeout(TIMEOUT, res).await.unwrap().unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-demo-name"], "echo");
    assert_eq!(res.headers()["content-type"], "text/x-test");
    let seen: serde_json::Value = serde_json::from_slice(res.headers()["x-demo-request-headers"].as_bytes()).unwrap();
    assert_eq!(seen["x-forwarded-for"], "10.1.2.3");
    assert_eq!(seen["x-custom"], "a, b");
    assert_eq!(seen["host"], server.addr.to_string());

    let mut body = res.into_body();
    assert_eq!(next_data(&mut body).await.unwrap(), "first chunk");
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(next_data(&mut body).await.unwrap(), "second");
    drop(tx);
    assert_eq!(next_data(&mut body).await, None);
    server.stop().await;
}

#[tokio::test]
async fn echo_streams_over_http1() {
    echo_streams(false).await;
}

#[tokio::test]
async fn echo_streams_over_h2c() {
    echo_streams(true).await;
}

#[tokio::test]
async fn echo_with_a_whole_body() {
    let server = Server::start(args("echo")).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let req =
        Request::put(server.url("/echo")).body(http_body_util::Full::new(Bytes::from(vec![b'z'; 300_000]))).unwrap();
    let reply = read(client.request(req).await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 300_000);
    assert!(reply.body.iter().all(|b| *b == b'z'));
    assert_eq!(reply.header("content-type"), "application/octet-stream");
    server.stop().await;
}

#[tokio::test]
async fn bytes_streams_n_bytes() {
    let server = Server::start(args("b")).await;
    for (http2, n) in [(false, 0usize), (false, 200_000), (true, 150_001)] {
        let reply = get_with(http2, &server.url(&format!("/bytes?n={n}"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), n);
        assert!(reply.body.iter().all(|b| *b == b'x'));
    }
    assert_eq!(get(&server.url("/bytes")).await.body.len(), 1024);
    assert_eq!(get(&server.url("/bytes?n=-1")).await.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn sleep_and_burn_take_their_time() {
    let server = Server::start(args("t")).await;
    let started = Instant::now();
    let reply = get(&server.url("/sleep?ms=60")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "slept 60 ms\n");
    assert!(started.elapsed() >= Duration::from_millis(60));

    let started = Instant::now();
    let reply = get(&server.url("/burn?ms=40")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text().starts_with("burned 40 ms of cpu, took "), "{}", reply.text());
    assert!(started.elapsed() >= Duration::from_millis(40));

    assert_eq!(get(&server.url("/sleep?ms=soon")).await.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn log_and_alloc() {
    let server = Server::start(args("l")).await;
    let reply = get(&server.url("/log?lines=2&stream=stderr&text=from+the+test")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "wrote 2 line(s) to stderr\n");
    let reply = get(&server.url("/log?stream=syslog")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let reply = get(&server.url("/alloc?mib=2")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text().starts_with("allocated 2 MiB, holding "), "{}", reply.text());
    server.stop().await;
}

#[tokio::test]
async fn fail_rate_fails_root_only() {
    let server = Server::start(DemoArgs { fail_rate: 1.0, ..args("f") }).await;
    let reply = get(&server.url("/")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.header("x-demo-name"), "f");
    assert_eq!(get(&server.url("/health")).await.status, StatusCode::OK);
    server.stop().await;

    let server = Server::start(DemoArgs { fail_rate: 0.5, ..args("f") }).await;
    let mut failed = 0;
    for _ in 0..100 {
        if get(&server.url("/")).await.status == StatusCode::INTERNAL_SERVER_ERROR {
            failed += 1;
        }
    }
    assert!((15..=85).contains(&failed), "{failed} of 100 failed");
    server.stop().await;
}

#[tokio::test]
async fn graceful_stop_finishes_in_flight_requests() {
    let server = Server::start(args("g")).await;
    let url = server.url("/sleep?ms=400");
    let in_flight = tokio::spawn(async move { get(&url).await });
    let in_flight_h2 = {
        let url = server.url("/sleep?ms=400");
        tokio::spawn(async move { get_with(true, &url).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let addr = server.addr;
    server.stop().await;
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "slept 400 ms\n");
    assert_eq!(in_flight_h2.await.unwrap().status, StatusCode::OK);
    // No longer accepting.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn worker_ticks_and_stops() {
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = tokio::spawn(wharf_demo::work(
        DemoArgs { role: Role::Worker, log_every: Some(Duration::from_millis(10)), ..args("w") },
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn run_without_a_port_is_an_error() {
    let err = wharf_demo::run(DemoArgs::default()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("--port"), "{err}");
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,
}

#[test]
fn command_line() {
    let cli = Cli::try_parse_from([
        "demo",
        "worker",
        "--name",
        "jobs",
        "--port",
        "0",
        "--version-label",
        "3",
        "--startup-delay",
        "200ms",
        "--exit-after",
        "1m 30s",
        "--fail-health",
        "--fail-rate",
        "0.25",
        "--alloc-mib",
        "16",
        "--log-every",
        "off",
        "--crash-at-start",
    ])
    .unwrap()
    .demo;
    assert_eq!(cli.role, Role::Worker);
    assert_eq!(cli.name, "jobs");
    assert_eq!(cli.port, Some(0));
    assert_eq!(cli.version_label, "3");
    assert_eq!(cli.startup_delay, Some(Duration::from_millis(200)));
    assert_eq!(cli.exit_after, Some(Duration::from_secs(90)));
    assert!(cli.fail_health && cli.crash_at_start);
    assert_eq!(cli.fail_rate, 0.25);
    assert_eq!(cli.alloc_mib, 16);
    assert_eq!(cli.log_every, Some(Duration::ZERO));

    assert!(Cli::try_parse_from(["demo", "--fail-rate", "1.5"]).is_err());
    assert!(Cli::try_parse_from(["demo", "--startup-delay", "soon"]).is_err());
    assert!(Cli::try_parse_from(["demo", "cron"]).is_err());
    let cli = Cli::try_parse_from(["demo", "web"]).unwrap().demo;
    assert_eq!(cli.role, Role::Web);
}
