//! The proxy end to end: the real binary, real tasks, raw sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

fn app(name: &str, version: &str, replicas: u32) -> String {
    demo_toml(name, version, replicas, false)
}

fn ok(s: &Server, path: &str) -> Option<String> {
    s.get("example.test", path).filter(|(c, _)| *c == 200).map(|(_, b)| b)
}

fn started(extra: &[&str], toml: &str) -> (Server, tempfile::TempDir) {
    started_at(extra, toml, "/api/health")
}

/// A server running `toml`, once `health` answers 200 through the proxy.
fn started_at(extra: &[&str], toml: &str, health: &str) -> (Server, tempfile::TempDir) {
    let s = Server::start_with(extra);
    let dir = app_dir(toml);
    s.deploy(dir.path());
    wait_for("the app to serve", LONG, || ok(&s, health));
    (s, dir)
}

fn echo(c: &mut TcpStream, msg: &str) -> String {
    c.write_all(msg.as_bytes()).unwrap();
    let mut buf = vec![0u8; msg.len()];
    c.read_exact(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn upgraded_connection_survives_a_deploy_and_its_task_drains_first() {
    let (s, dir) = started(&[], &app("ws", "1", 1));
    let mut ws = upgrade(&s.proxy_addr());
    assert_eq!(echo(&mut ws, "before"), "before");
    let old = s.tasks()[0].clone();
    std::fs::write(dir.path().join("wharf.toml"), app("ws", "2", 1)).unwrap();
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    // New requests reach the new revision while the old task still carries the upgrade.
    wait_for("the new revision to take requests", LONG, || {
        ok(&s, "/api/version").filter(|b| b.contains("\"version\":\"2\""))
    });
    let draining = wait_for("the old task draining", LONG, || {
        s.tasks().into_iter().find(|t| t["id"] == old["id"] && t["draining"] == true)
    });
    assert!(alive(draining["pid"].as_u64().unwrap() as u32));
    assert_eq!(echo(&mut ws, "during the switch"), "during the switch", "the upgrade was not cut");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(echo(&mut ws, "still"), "still");
    assert!(s.tasks().iter().any(|t| t["id"] == old["id"]), "not stopped while the upgrade is open");
    drop(ws);
    wait_for("the old task to stop once its connection ended", LONG, || {
        (!s.tasks().iter().any(|t| t["id"] == old["id"])).then_some(())
    });
}

/// An old task that drains past the deploy's deadline (an upgrade still
/// open) does not fail the deployment: the new revision serves, and the
/// drain has its own timeout. The deployment ends once the task is gone.
#[test]
fn a_drain_past_the_deadline_does_not_roll_back_a_serving_revision() {
    let toml = |v: &str| {
        let deploy = "deploy = { deadline = \"2s\", bake = \"0s\", drain_timeout = \"60s\" }\n";
        app("slowdrain", v, 1).replacen("\n[route]", &format!("{deploy}\n[route]"), 1)
    };
    let (s, dir) = started(&[], &toml("1"));
    let mut ws = upgrade(&s.proxy_addr());
    assert_eq!(echo(&mut ws, "before"), "before");
    let old = s.tasks()[0].clone();
    std::fs::write(dir.path().join("wharf.toml"), toml("2")).unwrap();
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    wait_for("the old task draining", LONG, || {
        s.tasks().into_iter().find(|t| t["id"] == old["id"] && t["draining"] == true)
    });
    let last = |s: &Server| s.json(&["deployments", "--json"]).as_array().unwrap().last().unwrap().clone();
    // Well past the deadline, the deployment still waits for the drain.
    std::thread::sleep(Duration::from_secs(3));
    let waiting = last(&s);
    assert_eq!(waiting["state"], "in_progress", "{waiting}");
    assert_eq!(echo(&mut ws, "past the deadline"), "past the deadline", "the upgrade was not cut");
    drop(ws);
    let done = wait_for("the deployment to end", LONG, || Some(last(&s)).filter(|d| d["state"] != "in_progress"));
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(ok(&s, "/api/version").unwrap().contains("\"version\":\"2\""));
}

#[test]
fn a_killed_task_costs_no_failed_request() {
    let (s, _dir) = started(&[], &app("retry", "1", 2));
    for _ in 0..20 {
        ok(&s, "/api/").unwrap();
    }
    let victim = s.tasks()[0]["pid"].as_u64().unwrap() as u32;
    signal(victim, libc::SIGKILL);
    // Requests that hit the dead task's port are refused and retried on the other.
    for i in 0..200 {
        let r = s.get("example.test", "/api/");
        assert_eq!(r.as_ref().map(|(c, _)| *c), Some(200), "request {i} after the kill: {r:?}");
    }
}

#[test]
fn forwarded_and_request_id_headers() {
    let (s, _dir) = started(&[], &app("hdr", "1", 1));
    let text = raw(
        &s.proxy_addr(),
        b"GET /api/echo HTTP/1.1\r\nHost: Shop.Example:80\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&text), 200, "{text}");
    let seen = text.lines().find(|l| l.to_ascii_lowercase().starts_with("x-demo-request-headers:")).unwrap();
    let json: serde_json::Value = serde_json::from_str(seen.split_once(": ").unwrap().1).unwrap();
    assert_eq!(json["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(json["x-forwarded-proto"], "http");
    assert_eq!(json["x-forwarded-host"], "Shop.Example:80");
    assert_eq!(json["x-request-id"].as_str().unwrap().len(), 32, "{json}");
    assert!(json.get("x-secret").is_none(), "headers named in Connection are hop-by-hop: {json}");
    let given = raw(
        &s.proxy_addr(),
        b"GET /api/echo HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(given.contains("\"x-request-id\":\"abc-123\""), "an incoming id is kept: {given}");
}

#[test]
fn bad_requests_get_precise_errors_and_disturb_nobody() {
    let (s, _dir) = started(&["--header-timeout", "1s", "--max-body", "1000"], &app("hard", "1", 1));
    let addr = s.proxy_addr();
    // A keep-alive client in the middle of its work.
    let mut good = TcpStream::connect(&addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ask = |good: &mut TcpStream| {
        good.write_all(b"GET /api/health HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = good.read(&mut buf).unwrap();
        status_of(&String::from_utf8_lossy(&buf[..n]))
    };
    assert_eq!(ask(&mut good), 200);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "huge header",
            format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "x".repeat(70_000)).into_bytes(),
            431,
        ),
        ("too many headers", format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(), 431),
        ("invalid content-length", b"POST /api/echo HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n".to_vec(), 400),
        (
            "two content-lengths",
            b"POST /api/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec(),
            400,
        ),
        ("obsolete line folding", b"GET /api/ HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), 400),
        ("no host", b"GET /api/ HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("bad host", b"GET /api/ HTTP/1.1\r\nHost: a b/c\r\n\r\n".to_vec(), 400),
        ("two hosts", b"GET /api/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        ("not http", b"\x16\x03\x01\x00 hello\r\n\r\n".to_vec(), 400),
        (
            "declared body too large",
            b"POST /api/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n".to_vec(),
            413,
        ),
    ];
    for (what, bytes, want) in cases {
        let text = raw(&addr, &bytes, Duration::from_secs(5));
        assert_eq!(status_of(&text), want, "{what}: {text:.200}");
        assert_eq!(ask(&mut good), 200, "the other connection still works after {what}");
    }
    // A client too slow with its headers gets 408, and others are served meanwhile.
    let slow_addr = addr.clone();
    let slow =
        std::thread::spawn(move || raw(&slow_addr, b"GET /api/ HTTP/1.1\r\nHost: a\r\n", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ask(&mut good), 200, "served while a slow client holds a connection");
    let text = slow.join().unwrap();
    assert_eq!(status_of(&text), 408, "slow headers: {text}");
    // A chunked body that grows over the limit is cut off with 413 too (when
    // the task has not answered yet; a task streaming its answer gets it cut).
    let chunk = "x".repeat(600);
    let body = format!("258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n");
    let text = raw(
        &addr,
        format!("POST /api/sleep?ms=1000 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}")
            .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&text), 413, "{text:.300}");
    // Content-Length and Transfer-Encoding together: chunked wins (RFC 9112 §6.1) and the
    // connection is closed after the answer, so nothing can be smuggled behind it.
    let smuggle = b"POST /api/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/version HTTP/1.1\r\nHost: a\r\n\r\n";
    let text = raw(&addr, smuggle, Duration::from_secs(3));
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "one answer, then the connection closes: {text}");
    assert!(!text.contains("\"version\""), "the smuggled request was not served: {text}");
    // An idle keep-alive connection is closed after the header timeout, without a 408.
    let idle = raw(&addr, b"", Duration::from_secs(3));
    assert_eq!(idle, "", "{idle}");
}

#[test]
fn maintenance_mode_answers_503_exempts_health_and_survives_a_restart() {
    let (mut s, _dir) = started(&[], &app("maint", "1", 1));
    let out = s.ok(&["maintenance", "on", "--message", "Back at noon & soon"]);
    assert!(out.contains("maintenance mode"), "{out}");
    let text =
        raw(&s.proxy_addr(), b"GET /api/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Duration::from_secs(5));
    assert_eq!(status_of(&text), 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: 30"), "{text}");
    assert!(text.contains("Back at noon &amp; soon"), "{text}");
    assert_eq!(s.get("a", "/api/health").unwrap().0, 200, "the health check path is exempt");
    assert_eq!(s.json(&["status", "--json"])["apps"][0]["services"][0]["maintenance"], true);
    s.kill9();
    s.spawn();
    wait_for("maintenance page after restart", LONG, || s.get("a", "/api/").filter(|(c, _)| *c == 503));
    let page = std::env::temp_dir().join(format!("wharf-page-{}.html", std::process::id()));
    std::fs::write(&page, "<h1>custom page</h1>").unwrap();
    s.ok(&["maintenance", "on", "--service", "api", "--page", page.to_str().unwrap()]);
    assert!(s.get("a", "/api/").unwrap().1.contains("custom page"));
    s.ok(&["maintenance", "off", "--service", "api"]);
    s.ok(&["maintenance", "off"]);
    assert_eq!(s.get("a", "/api/").unwrap().0, 200);
    let unknown = s.wharf(&["maintenance", "on", "--service", "nope"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no service `nope`"));
    assert!(!s.events("maintenance.on").is_empty());
    let _ = std::fs::remove_file(page);
}

#[test]
fn pause_holds_requests_until_resume_or_its_limit() {
    let (s, _dir) = started(&[], &app("paus", "1", 1));
    s.ok(&["pause", "--max", "30s"]);
    let addr = s.proxy_addr();
    let held = std::thread::spawn(move || http_get(&addr, "a", "/api/version", None));
    std::thread::sleep(Duration::from_millis(800));
    assert!(!held.is_finished(), "the request is held while paused");
    s.ok(&["resume"]);
    let r = held.join().unwrap();
    assert_eq!(r.unwrap().0, 200, "released requests are served");
    // With a short limit, held requests get 503 once it passes.
    s.ok(&["pause", "--max", "1s"]);
    let r = s.get("a", "/api/version").unwrap();
    assert_eq!(r.0, 503, "{r:?}");
    s.ok(&["resume"]);
    assert_eq!(s.get("a", "/api/version").unwrap().0, 200);
    assert!(s.events("pause.off").iter().any(|m| m.contains("1 held requests released")));
}

#[test]
fn metrics_and_access_log_see_every_request() {
    let (s, _dir) = started(&[], &app("seen", "1", 1));
    for _ in 0..5 {
        ok(&s, "/api/").unwrap();
    }
    s.get("a", "/nowhere");
    let url = std::fs::read_to_string(s.data.join("metrics.url")).unwrap();
    let addr = url.trim().trim_start_matches("http://").trim_end_matches("/metrics").to_string();
    let (code, text) = http_get(&addr, "a", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("wharf_proxy_requests_total{")
                && l.contains("service=\"seen/api\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("{text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 5.0, "{line}");
    assert!(text.contains("wharf_proxy_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("wharf_proxy_pool_backends{service=\"seen/api\"} 1"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("wharf_task_health{") && l.contains("service=\"api\"") && l.ends_with(" 1")),
        "task health is exported: {text}"
    );
    assert_eq!(text.matches("# EOF").count(), 1, "one exposition");
    let access = wait_for("access lines", LONG, || {
        let out = s.ok(&["logs", "--source", "access", "-n", "100", "--json"]);
        (out.lines().count() >= 6).then_some(out)
    });
    let first: serde_json::Value = serde_json::from_str(access.lines().next().unwrap()).unwrap();
    assert_eq!(first["service"], "api");
    assert_eq!(first["fields"]["status"], 200);
    assert_eq!(first["fields"]["request_id"].as_str().unwrap().len(), 32);
    assert!(access.contains("\"status\":404"), "unrouted requests are logged too");
}

#[test]
fn route_limits_and_round_robin_come_from_wharf_toml() {
    let toml = r#"app = "limits"

[service.api]
command = ["wharf", "demo", "--name", "api"]
port = 8080
replicas = 3
balance = "round_robin"
health = { path = "/health", interval = "1s", status = 200 }

[route]
"/api" = { service = "api", strip_prefix = true, timeout = "500ms", max_body = 100 }
"/" = "api"
"#;
    let (s, _dir) = started(&[], toml);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let v: serde_json::Value = serde_json::from_str(&ok(&s, "/api/version").unwrap()).unwrap();
        *seen.entry(v["task"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert!(seen.len() == 3 && seen.values().all(|n| *n == 10), "round robin is exact: {seen:?}");
    // The task would answer 200 after 3 s; the route's 500 ms timeout answers first.
    let (code, body) = s.get("a", "/api/sleep?ms=3000").unwrap();
    assert_eq!(code, 504, "{body}");
    let (code, _) = http_request(&s.proxy_addr(), "POST", "a", "/api/echo", None, &[b'x'; 200]).unwrap();
    assert_eq!(code, 413, "the route's body limit");
    let (code, _) = http_request(&s.proxy_addr(), "POST", "a", "/echo", None, &[b'x'; 200]).unwrap();
    assert_eq!(code, 200, "other routes keep the default limit");
}

#[test]
fn http2_prior_knowledge_through_the_proxy() {
    let (s, _dir) = started(&[], &app("h2", "1", 1));
    let url = format!("http://{}/api/version", s.proxy_addr());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, version, body) = rt.block_on(async {
        use http_body_util::BodyExt;
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let resp = client.get(url.parse().unwrap()).await.unwrap();
        let (status, version) = (resp.status(), resp.version());
        (status, version, resp.into_body().collect().await.unwrap().to_bytes())
    });
    assert_eq!(status, 200);
    assert_eq!(version, http::Version::HTTP_2);
    assert!(String::from_utf8_lossy(&body).contains("\"name\":\"api\""));
}

#[test]
fn a_second_server_cannot_share_the_http_port() {
    let s = Server::start_with(&["--proxy-threads", "2"]);
    let other = passable_tempdir();
    let out = std::process::Command::new(WHARF)
        .args(["server", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--http", &s.proxy_addr(), "--data"])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen for HTTP traffic") && err.contains("--http"), "{err}");
}

#[test]
fn an_unhealthy_task_leaves_the_pool_and_returns_when_healthy() {
    let toml = r#"app = "heal"

[service.api]
command = ["wharf", "demo", "--name", "api"]
port = 8080
replicas = 2
health = { path = "/health", interval = "200ms", unhealthy_threshold = 2, healthy_threshold = 2 }

[route]
"/" = "api"
"#;
    let s = Server::start();
    let dir = app_dir(toml);
    s.deploy(dir.path());
    let tasks = s.tasks();
    let (sick, well) = (&tasks[0], &tasks[1]);
    // Make one task fail its checks, talking to it directly (not through the proxy).
    let sick_addr = format!("127.0.0.1:{}", sick["port"]);
    assert_eq!(http_get(&sick_addr, "a", "/sick?on=true", None).unwrap().0, 200);
    wait_for("the task to be unhealthy", LONG, || {
        s.tasks().into_iter().find(|t| t["id"] == sick["id"] && t["health"] == "unhealthy")
    });
    for _ in 0..40 {
        let v: serde_json::Value = serde_json::from_str(&s.get("a", "/version").unwrap().1).unwrap();
        assert_eq!(v["task"], well["id"], "no request reaches the unhealthy task");
    }
    assert!(s.events("task.unhealthy").iter().any(|m| m.contains("503")), "the event says why");
    http_get(&sick_addr, "a", "/sick?on=false", None).unwrap();
    wait_for("the task to be healthy again", LONG, || {
        s.tasks().into_iter().find(|t| t["id"] == sick["id"] && t["health"] == "healthy")
    });
    wait_for("requests to reach it again", LONG, || {
        let v: serde_json::Value = serde_json::from_str(&s.get("a", "/version").unwrap().1).ok()?;
        (v["task"] == sick["id"]).then_some(())
    });
}

#[test]
fn a_reset_is_retried_once_for_bodyless_requests_and_never_for_streamed_bodies() {
    // The demo's reset role reads each request, logs it and closes the
    // connection without answering.
    let toml = r#"app = "resets"

[service.flaky]
command = ["wharf", "demo", "reset", "--name", "flaky"]
port = 8080
health = { path = "/health", interval = "1s" }

[route]
"/" = "flaky"
"#;
    let (s, _dir) = started_at(&[], toml, "/health");
    let seen = |what: &str| s.ok(&["logs", "flaky", "--source", "stdout", "-n", "1000"]).matches(what).count();
    let (code, _) = s.get("a", "/get").unwrap();
    assert_eq!(code, 502);
    wait_for("the task's log lines", LONG, || (seen("reset GET /get") >= 2).then_some(()));
    assert_eq!(seen("reset GET /get"), 2, "a bodyless GET reset before any byte is sent once more");
    let (code, _) = http_request(&s.proxy_addr(), "POST", "a", "/post", None, b"a body that was streamed").unwrap();
    assert_eq!(code, 502);
    wait_for("the task's log line", LONG, || (seen("reset POST /post") >= 1).then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seen("reset POST /post"), 1, "a request whose body was sent is never replayed");
}

#[test]
fn requests_in_flight_finish_when_the_server_stops() {
    let (mut s, _dir) = started(&[], &app("stopping", "1", 1));
    let addr = s.proxy_addr();
    let slow = std::thread::spawn(move || http_get(&addr, "a", "/api/sleep?ms=1500", None));
    std::thread::sleep(Duration::from_millis(300));
    let status = s.terminate();
    assert!(status.success());
    let r = slow.join().unwrap();
    assert_eq!(r.map(|(c, _)| c), Some(200), "the request in flight was answered");
}
