//! Hostile clients: connections that say nothing, bodies that are malformed
//! or slow, clients that stop reading. None of them may lock other clients
//! out, hold a connection for long, or count against a deployment.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);
/// How long a test waits for the server to close a connection it should.
const CLOSE_BOUND: Duration = Duration::from_secs(15);

fn started(extra: &[&str], toml: &str) -> (Server, tempfile::TempDir) {
    let s = Server::start_with(extra);
    let dir = app_dir(toml);
    s.deploy(dir.path());
    wait_for("the app to serve", LONG, || s.get("x", "/api/health").filter(|(c, _)| *c == 200));
    (s, dir)
}

/// Whether the server closed `c` (EOF or reset), reading what it sent.
fn closed_by_server(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Waits for the server to close `c`; what it sent before closing.
fn wait_closed(what: &str, c: &mut TcpStream) -> String {
    c.set_read_timeout(Some(CLOSE_BOUND)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("{what}: still open after {CLOSE_BOUND:?}")
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn metrics_url(s: &Server) -> String {
    std::fs::read_to_string(s.data.join("metrics.url")).unwrap().trim().trim_start_matches("http://").to_string()
}

/// A value of the proxy's Prometheus text, summed over its label sets.
fn metric(s: &Server, name: &str, labels: &str) -> f64 {
    let addr = metrics_url(s);
    let host_path = addr.split_once('/').unwrap();
    let (_, text) = http_get(host_path.0, "x", &format!("/{}", host_path.1), None).expect("metrics answer");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn silent_connections_never_lock_new_clients_out_and_the_limit_is_the_total() {
    // A long header timeout: here only the limit can free room.
    let (s, _dir) = started(
        &["--max-connections", "10", "--proxy-threads", "2", "--header-timeout", "60s"],
        &demo_toml("h", "1", 1, false),
    );
    let addr = s.proxy_addr();
    let mut silent: Vec<TcpStream> = (0..30).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // A new client is served: the longest-idle connections make room.
    let (code, body) = wait_for("a new client to be served", LONG, || http_get(&addr, "x", "/api/version", None));
    assert_eq!(code, 200, "{body}");
    // The limit holds over both proxy threads together: of 30 silent
    // connections and one client, at most 10 stay open.
    let mut closed = vec![false; silent.len()];
    wait_for("the silent connections over the total limit to be closed", CLOSE_BOUND, || {
        for (i, c) in silent.iter_mut().enumerate() {
            closed[i] = closed[i] || closed_by_server(c);
        }
        let open = closed.iter().filter(|c| !**c).count();
        (open <= 10).then_some(())
    });
    // Busy connections are never closed to make room: requests in flight
    // beyond the limit wait and are then served.
    drop(silent);
    let served = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..14)
        .map(|_| {
            let (addr, served) = (addr.clone(), served.clone());
            std::thread::spawn(move || {
                if http_get(&addr, "x", "/api/sleep?ms=300", None).is_some_and(|(c, _)| c == 200) {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(served.load(Ordering::Relaxed), 14);
}

#[test]
fn upgraded_connections_count_against_the_limit() {
    let (s, _dir) = started(&["--max-connections", "2", "--proxy-threads", "2"], &demo_toml("h", "1", 1, false));
    let addr = s.proxy_addr();
    let first = upgrade(&addr);
    let mut second = upgrade(&addr);
    wait_for("both upgraded connections to count as open", CLOSE_BOUND, || {
        (metric(&s, "wharf_proxy_open_connections", "") == 2.0).then_some(())
    });
    // A new client gets in once an upgraded connection ends.
    let client = std::thread::spawn(move || http_get(&addr, "x", "/api/version", None));
    drop(first);
    assert_eq!(client.join().unwrap().map(|(c, _)| c), Some(200));
    second.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    second.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here", "the other upgrade was not closed for room");
}

#[test]
fn connections_that_send_nothing_or_stall_are_closed_on_every_listener() {
    let (s, _dir) = started(&["--header-timeout", "1s", "--body-timeout", "2s"], &demo_toml("h", "1", 1, false));
    let proxy = s.proxy_addr();
    // Silent, on the proxy, the API and the metrics listener.
    for (what, addr) in [("proxy", proxy.clone()), ("API", s.api_addr()), ("metrics", metrics_url(&s))] {
        let addr = addr.split('/').next().unwrap().to_string();
        let mut c = TcpStream::connect(&addr).unwrap();
        let said = wait_closed(&format!("a silent connection to the {what}"), &mut c);
        assert_eq!(said, "", "{what}: closed without a word");
    }
    // Idle after an answer (keep-alive).
    let mut c = TcpStream::connect(&proxy).unwrap();
    c.write_all(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let said = wait_closed("an idle keep-alive connection", &mut c);
    assert_eq!(status_of(&said), 200, "{said}");
    // Part of an HTTP/2 preface: neither protocol is known yet.
    let mut c = TcpStream::connect(&proxy).unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let said = wait_closed("a connection stuck in the HTTP/2 preface", &mut c);
    assert!(said.is_empty() || status_of(&said) == 408, "{said}");
    // A whole preface and settings, then nothing: an idle h2 connection.
    let mut c = TcpStream::connect(&proxy).unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    wait_closed("an idle HTTP/2 connection", &mut c);
    // Half a request head: 408, as before.
    let mut c = TcpStream::connect(&proxy).unwrap();
    c.write_all(b"GET /api/version HTTP/1.1\r\nHo").unwrap();
    let said = wait_closed("a connection with half a request head", &mut c);
    assert_eq!(status_of(&said), 408, "{said}");
    // A client that stops reading a large answer is cut off.
    let mut c = TcpStream::connect(&proxy).unwrap();
    c.write_all(b"GET /api/bytes?n=1000000000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    wait_for("the open connection a stalled reader held to be closed", CLOSE_BOUND, || {
        (metric(&s, "wharf_proxy_open_connections", "") == 0.0).then_some(())
    });
    drop(c);
}

#[test]
fn a_slow_body_gets_408_within_the_body_timeout() {
    let (s, _dir) = started(&["--body-timeout", "1s"], &demo_toml("h", "1", 1, false));
    let mut c = TcpStream::connect(s.proxy_addr()).unwrap();
    // The task waits 30 s before answering: only the body timeout can end this.
    c.write_all(b"POST /api/sleep?ms=30000 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = c.try_clone().unwrap();
    let dripping = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // A byte every 100 ms: 100 s for the whole body.
            while !stop.load(Ordering::Relaxed) && w.write_all(b"x").is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let said = wait_closed("a connection sending its body a byte at a time", &mut c);
    stop.store(true, Ordering::Relaxed);
    dripping.join().unwrap();
    assert_eq!(status_of(&said), 408, "{said}");
    assert!(said.contains("did not arrive within"), "{said}");
    // A body that stops short, and one promised after 100-continue that never comes.
    for (what, req) in [
        (
            "a body that stops short",
            "POST /api/sleep?ms=30000 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nten bytes!",
        ),
        (
            "an expected body that never comes",
            "POST /api/sleep?ms=30000 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
        ),
    ] {
        let mut c = TcpStream::connect(s.proxy_addr()).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let said = wait_closed(what, &mut c);
        assert!(said.contains("HTTP/1.1 408 Request Timeout"), "{what}: {said}");
    }
    // None of it counted against the task.
    assert_eq!(metric(&s, "wharf_proxy_requests_total", "status=\"5"), 0.0);
}

/// Requests whose body is the client's error, each with what it is.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let head = "POST /api/sleep?ms=10000 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunked = |body: &str| [head.as_bytes(), body.as_bytes()].concat();
    let ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(100 * 1024));
    vec![
        ("a chunk size that is not hex", chunked("zz\r\nhello\r\n0\r\n\r\n")),
        ("an overflowing chunk size", chunked("fffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
        ("a negative chunk size", chunked("-5\r\nhello\r\n0\r\n\r\n")),
        ("more data than the chunk size", chunked("5\r\nhello, and more\r\n0\r\n\r\n")),
        ("a 100 KB chunk extension", chunked(&ext)),
        ("a chunk size with a 0x prefix", chunked("0x5\r\nhello\r\n0\r\n\r\n")),
        ("a bare LF after the chunk data", chunked("5\r\nhello\n0\r\n\r\n")),
    ]
}

/// Sends `req`, then closes the sending side when `half_close`; the status.
fn send(addr: &str, req: &[u8], half_close: bool) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(req);
    if half_close {
        let _ = c.shutdown(Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_bodies_and_an_empty_host_are_the_clients_errors() {
    let (s, _dir) = started(&[], &demo_toml("h", "1", 1, false));
    let addr = s.proxy_addr();
    let errors_before = metric(&s, "wharf_proxy_requests_total", "status=\"5");
    for (what, req) in malformed_bodies() {
        let said = send(&addr, &req, false);
        assert_eq!(status_of(&said), 400, "{what}: {said}");
    }
    // Bodies whose framing is wrong in the head.
    for (what, framing) in [
        ("chunked not the last coding", "Transfer-Encoding: chunked, gzip"),
        ("an overflowing Content-Length", "Content-Length: 99999999999999999999999"),
        ("a negative Content-Length", "Content-Length: -1"),
        ("a signed Content-Length", "Content-Length: +5"),
        ("an unknown coding", "Transfer-Encoding: zstd-but-not-really"),
    ] {
        let req = format!("POST /api/sleep?ms=10000 HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\nhello");
        let said = send(&addr, req.as_bytes(), false);
        assert_eq!(status_of(&said), 400, "{what}: {said}");
    }
    // A body cut short by a client that went away.
    let said =
        send(&addr, b"POST /api/sleep?ms=10000 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this", true);
    assert!(status_of(&said) == 400 || said.is_empty(), "a body cut short: {said}");
    // Host present but empty (RFC 9110 §7.2: a bad request).
    let said = raw(&addr, b"GET /api/version HTTP/1.1\r\nHost: \r\n\r\n", Duration::from_secs(5));
    assert_eq!(status_of(&said), 400, "an empty Host: {said}");
    assert!(said.contains("Host header is empty"), "{said}");
    assert_eq!(metric(&s, "wharf_proxy_requests_total", "status=\"5"), errors_before, "no 5xx was counted");
    assert!(metric(&s, "wharf_proxy_upstream_errors_total", "") == 0.0, "the task was not blamed");
    // And the task is still in rotation.
    assert_eq!(s.get("x", "/api/version").map(|(c, _)| c), Some(200));
}

fn last_deployment(s: &Server) -> serde_json::Value {
    s.json(&["deployments", "--json"]).as_array().unwrap().last().unwrap().clone()
}

fn baked(version: &str, extra_env: &str, bake: &str) -> String {
    demo_toml("h", version, 2, false).replace(
        "env = { DEMO_VERSION",
        &format!("deploy = {{ strategy = \"blue-green\", bake = \"{bake}\" }}\nenv = {{ {extra_env}DEMO_VERSION"),
    )
}

#[test]
fn malformed_bodies_during_a_bake_do_not_roll_a_good_deploy_back() {
    let (s, dir) = started(&[], &baked("1", "", "4s"));
    std::fs::write(dir.path().join("wharf.toml"), baked("2", "", "4s")).unwrap();
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    wait_for("the bake", LONG, || (last_deployment(&s)["step"] == "bake").then_some(()));
    // Many more bad requests than the bake needs to judge, all during it.
    let addr = s.proxy_addr();
    let mut answers = Vec::new();
    while last_deployment(&s)["state"] == "in_progress" && answers.len() < 400 {
        for (what, req) in malformed_bodies() {
            answers.push((what, status_of(&send(&addr, &req, false))));
        }
    }
    assert!(answers.len() >= 30, "only {} bad requests were sent during the bake", answers.len());
    let d = wait_for("the deployment to end", LONG, || {
        let d = last_deployment(&s);
        (d["state"] != "in_progress").then_some(d)
    });
    assert_eq!(d["state"], "succeeded", "{d}");
    let not_400: Vec<_> = answers.iter().filter(|(_, code)| *code != 400).collect();
    assert!(not_400.is_empty(), "{} of {} were not 400, e.g. {:?}", not_400.len(), answers.len(), not_400[0]);
}

#[test]
fn during_a_failing_bake_replayable_requests_get_the_standby_answer() {
    let (s, dir) = started(&[], &baked("1", "", "10s"));
    std::fs::write(dir.path().join("wharf.toml"), baked("2", "DEMO_FAIL_RATE = \"1\", ", "10s")).unwrap();
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop, answers) = (s.proxy_addr(), stop.clone(), answers.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let a = http_get(&addr, "x", "/api/version", None);
                    answers.lock().unwrap().push(a);
                }
            })
        })
        .collect();
    let d = wait_for("the deployment to end", LONG, || {
        let d = last_deployment(&s);
        (d["state"] != "in_progress").then_some(d)
    });
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(d["state"], "rolled_back", "the bake saw the 500s: {d}");
    let answers = answers.lock().unwrap();
    let bad: Vec<_> = answers.iter().filter(|a| !matches!(a, Some((200, _)))).collect();
    let no_healthy = bad.iter().filter(|a| a.as_ref().is_some_and(|(_, b)| b.contains("no healthy tasks"))).count();
    assert_eq!(no_healthy, 0, "wharf's own 503 while the standby set was healthy ({} answers)", answers.len());
    assert!(bad.is_empty(), "{} of {} answers were not 200, e.g. {:?}", bad.len(), answers.len(), bad.first());
}

#[test]
fn an_http2_connection_idle_after_a_request_is_closed_after_the_header_timeout() {
    let (s, _dir) = started(&["--header-timeout", "1s"], &demo_toml("h", "1", 1, false));
    let addr = s.proxy_addr();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let closed = rt.block_on(async {
        use http_body_util::BodyExt;
        let (mut sender, conn) = h2_connect(&addr).await;
        // Longer than the header timeout: in flight when the watchdog first looks.
        let resp = sender.send_request(h2_get(&addr, "/api/sleep?ms=1500")).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        // The connection is kept open by the client; only the server can end it.
        tokio::time::timeout(CLOSE_BOUND, conn).await.is_ok()
    });
    assert!(closed, "an idle HTTP/2 connection was still open after {CLOSE_BOUND:?}");
}

#[test]
fn proxy_limits_out_of_range_are_refused_at_start() {
    for (flag, value) in [
        ("--header-timeout", "0s"),
        ("--body-timeout", "0s"),
        ("--response-timeout", "18446744073709551615s"),
        ("--header-timeout", "100years"),
        ("--max-connections", "0"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(WHARF)
            .args(["server", "--api", "127.0.0.1:0", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--internal", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--data"])
            .arg(tmp.path().join("data"))
            .args([flag, value])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let exited = (0..200).find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            child.try_wait().unwrap()
        });
        if exited.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`wharf server {flag} {value}` started instead of refusing");
        }
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(!exited.unwrap().success(), "{flag} {value}: {err}");
        assert!(err.contains(flag) && err.contains("hint:"), "{flag} {value}: {err}");
    }
}

#[test]
fn an_http2_client_that_stops_reading_a_stream_is_cut_off() {
    let (s, _dir) = started(&["--body-timeout", "2s"], &demo_toml("h", "1", 1, false));
    let addr = s.proxy_addr();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let closed = rt.block_on(async {
        let (mut sender, conn) = h2_connect(&addr).await;
        // The answer's body is never read: its stream's window stays shut
        // while the connection itself keeps flowing.
        let resp = sender.send_request(h2_get(&addr, "/api/bytes?n=1000000000")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let closed = tokio::time::timeout(CLOSE_BOUND, conn).await.is_ok();
        drop(resp);
        closed
    });
    assert!(closed, "a stalled HTTP/2 stream kept its connection open past {CLOSE_BOUND:?}");
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An HTTP/2 (prior knowledge) client connection to `addr`, and the task
/// that drives it: it ends when the server closes the connection.
async fn h2_connect(addr: &str) -> (H2Sender, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

fn h2_get(addr: &str, path: &str) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    http::Request::get(format!("http://{addr}{path}")).body(http_body_util::Empty::new()).unwrap()
}
