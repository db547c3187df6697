//! Service discovery, end to end: the DNS responder (raw UDP queries and
//! `dig`), the internal listener, `WHARF_<SERVICE>_URL`, and callers that
//! keep calling a service by name while it is redeployed and rescaled.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn dns_addr(s: &Server) -> String {
    std::fs::read_to_string(s.data.join("dns.addr")).unwrap().trim().to_string()
}

fn internal_addr(s: &Server) -> String {
    std::fs::read_to_string(s.data.join("internal.url")).unwrap().trim().trim_start_matches("http://").to_string()
}

/// A DNS answer, as much of it as the tests look at.
#[derive(Debug, Default)]
struct Reply {
    rcode: u8,
    a: Vec<Ipv4Addr>,
    /// (port, target)
    srv: Vec<(u16, String)>,
}

const A: u16 = 1;
const SRV: u16 = 33;

/// One question over UDP, encoded and decoded by hand (no DNS library).
fn query(server: &str, name: &str, qtype: u16) -> Reply {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    sock.send_to(&q, server).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("a DNS answer");
    let m = &buf[..n];
    assert_eq!(&m[..2], &[0x12, 0x34], "the answer carries the query's id");
    let be16 = |i: usize| u16::from_be_bytes([m[i], m[i + 1]]);
    let mut r = Reply { rcode: m[3] & 0x0f, ..Reply::default() };
    let ancount = be16(6);
    // Skips a (possibly compressed) name; returns it and the position after it.
    let read_name = |mut i: usize| -> (String, usize) {
        let mut labels = Vec::new();
        let mut end = None;
        loop {
            let len = m[i] as usize;
            if len == 0 {
                return (labels.join("."), end.unwrap_or(i + 1));
            }
            if len & 0xc0 == 0xc0 {
                end.get_or_insert(i + 2);
                i = (be16(i) & 0x3fff) as usize;
                continue;
            }
            labels.push(String::from_utf8_lossy(&m[i + 1..i + 1 + len]).into_owned());
            i += 1 + len;
        }
    };
    let (_, mut i) = read_name(12);
    i += 4;
    for _ in 0..ancount {
        let (_, after) = read_name(i);
        let (rtype, rdlen) = (be16(after), be16(after + 8) as usize);
        let data = after + 10;
        match rtype {
            A => r.a.push(Ipv4Addr::new(m[data], m[data + 1], m[data + 2], m[data + 3])),
            SRV => r.srv.push((be16(data + 4), read_name(data + 6).0)),
            _ => {}
        }
        i = data + rdlen;
    }
    r
}

const NXDOMAIN: u8 = 3;
const REFUSED: u8 = 5;

fn two_services(version: &str) -> String {
    format!(
        r#"app = "shop"

[service.api]
command = ["wharf", "demo", "--name", "api"]
port = 8080
env = {{ DEMO_VERSION = "{version}" }}
health = {{ path = "/health", interval = "1s" }}

[service.front]
command = ["wharf", "demo", "--name", "front"]
port = 3000
health = {{ path = "/health", interval = "1s" }}

[service.worker]
command = ["wharf", "demo", "worker", "--name", "worker"]

[route]
"/" = "front"
"#
    )
}

#[test]
fn dns_answers_service_names_and_the_internal_listener_routes_them() {
    let server = Server::start();
    let app = app_dir(&two_services("1"));
    server.deploy(app.path());
    let dns = dns_addr(&server);
    let internal = internal_addr(&server);
    let internal_port: u16 = internal.rsplit(':').next().unwrap().parse().unwrap();

    let api = query(&dns, "api.local", A);
    assert_eq!(api.rcode, 0);
    assert_eq!(api.a.len(), 1, "{api:?}");
    let ip = api.a[0];
    assert!(ip.is_loopback(), "a service address on loopback: {ip}");
    assert_eq!(query(&dns, "API.shop.local.", A).a, vec![ip], "SERVICE.APP.local, any case");
    assert_ne!(query(&dns, "front.local", A).a, vec![ip], "each service has its own address");
    let srv = query(&dns, "_http._tcp.api.local", SRV);
    assert_eq!(srv.srv, vec![(internal_port, "api.local".to_string())]);
    assert_eq!(query(&dns, "nope.local", A).rcode, NXDOMAIN);
    assert_eq!(query(&dns, "worker.local", A).rcode, NXDOMAIN, "workers have no port: not discoverable");
    assert_eq!(query(&dns, "example.com", A).rcode, REFUSED);

    // The answered address reaches the service, with the name as Host or without.
    let at_addr = format!("{ip}:{internal_port}");
    let (status, body) = http_get(&at_addr, "api.local", "/version", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"name\":\"api\""), "{body}");
    let (_, body) = http_get(&at_addr, &at_addr, "/version", None).unwrap();
    assert!(body.contains("\"name\":\"api\""), "{body}");
    // The main internal listener routes by Host.
    let (_, body) = http_get(&internal, "api.shop.local:1234", "/version", None).unwrap();
    assert!(body.contains("\"name\":\"api\""), "{body}");
    let (status, _) = http_get(&internal, "unknown.local", "/", None).unwrap();
    assert_eq!(status, 404);
    // Internal names are not routed from outside: "/" there is front.
    let (_, body) = server.get("api.local", "/version").unwrap();
    assert!(body.contains("\"name\":\"front\""), "{body}");

    // Every task of the app has the URLs, and they work without DNS.
    let front = server.tasks().into_iter().find(|t| t["service"] == "front").unwrap();
    let env = environ(front["pid"].as_u64().unwrap() as u32);
    let url = env.iter().find(|(k, _)| k == "WHARF_API_URL").map(|(_, v)| v.clone()).expect("WHARF_API_URL");
    assert_eq!(url, format!("http://{at_addr}"));
    assert!(env.iter().any(|(k, _)| k == "WHARF_FRONT_URL"));
    let worker = server.tasks().into_iter().find(|t| t["service"] == "worker").unwrap();
    let env = environ(worker["pid"].as_u64().unwrap() as u32);
    assert!(env.iter().any(|(k, v)| k == "WHARF_API_URL" && *v == url), "workers get the URLs too");

    // Internal requests are in the access log, marked.
    let lines = server.ok(&["logs", "--source", "access", "--json", "-n", "100"]);
    assert!(lines.lines().any(|l| l.contains("api.local/version") && l.contains("\"internal\":true")), "{lines}");

    dig_checks(&dns, ip, internal_port);
}

/// The same answers through `dig`, where it is installed (CI installs it).
fn dig_checks(dns: &str, ip: Ipv4Addr, internal_port: u16) {
    let (host, port) = dns.rsplit_once(':').unwrap();
    let dig = |args: &[&str]| Command::new("dig").args([&format!("@{host}"), "-p", port]).args(args).output();
    let out = match dig(&["+short", "api.local"]) {
        Ok(o) => o,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("dig is needed in CI: {e}"),
        Err(e) => return eprintln!("skipping the dig checks: cannot run dig ({e}); apt-get install dnsutils"),
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ip.to_string());
    let out = dig(&["+short", "SRV", "_http._tcp.api.shop.local"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("0 0 {internal_port} api.shop.local."));
    let out = dig(&["+tcp", "+short", "api.local"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ip.to_string(), "over TCP too");
    let out = dig(&["nope.local"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("status: NXDOMAIN"));
}

fn caller_app(api: &str, internal: &str, results: &Path) -> String {
    format!(
        r#"app = "calls"

{api}
[service.by-env]
command = ["wharf", "demo", "call", "--name", "by-env"]
env = {{ DEMO_CALL_SERVICE = "api", DEMO_CALL_RESULTS = "{env}", DEMO_CALL_EVERY = "5ms" }}

[service.by-name]
command = ["wharf", "demo", "call", "--name", "by-name"]
env = {{ DEMO_CALL_URL = "http://{internal}", DEMO_CALL_HOST = "api.local", DEMO_CALL_RESULTS = "{name}", DEMO_CALL_EVERY = "5ms" }}
"#,
        env = results.join("by-env").display(),
        name = results.join("by-name").display(),
    )
}

fn api_service(version: &str, replicas: u32, strategy: &str) -> String {
    format!(
        r#"[service.api]
command = ["wharf", "demo", "--name", "api"]
port = 8080
replicas = {replicas}
env = {{ DEMO_VERSION = "{version}" }}
health = {{ path = "/health", interval = "200ms" }}
deploy = {{ strategy = "{strategy}", bake = "1s" }}
"#
    )
}

/// (ok, failures) in a caller's results file.
fn outcomes(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let ok = text.lines().filter(|l| l.starts_with("ok ")).count();
    let failed = text.lines().filter(|l| !l.starts_with("ok ")).map(str::to_string).collect();
    (ok, failed)
}

fn wait_for_calls(results: &Path, more_than: usize, what: &str) {
    for caller in ["by-env", "by-name"] {
        let path = results.join(caller);
        wait_for(&format!("{caller} calls {what}"), Duration::from_secs(60), || {
            (outcomes(&path).0 > more_than).then_some(())
        });
    }
}

fn calls_so_far(results: &Path) -> usize {
    ["by-env", "by-name"].iter().map(|c| outcomes(&results.join(c)).0).min().unwrap()
}

#[test]
fn callers_by_name_see_no_error_while_the_callee_is_redeployed_and_rescaled() {
    let server = Server::start();
    let results = writable_tempdir();
    let internal = internal_addr(&server);
    let app = app_dir("");
    let deploy = |version: &str, replicas: u32, strategy: &str| {
        let toml = caller_app(&api_service(version, replicas, strategy), &internal, results.path());
        std::fs::write(app.path().join("wharf.toml"), toml).unwrap();
        server.deploy(app.path());
        let n = calls_so_far(results.path());
        wait_for_calls(results.path(), n + 100, &format!("after the deploy of api v{version} x{replicas}"));
    };
    deploy("1", 1, "rolling");
    deploy("2", 1, "rolling");
    deploy("3", 1, "blue-green");
    deploy("3", 3, "blue-green");
    deploy("4", 3, "rolling");
    deploy("4", 1, "rolling");
    deploy("5", 1, "blue-green");

    for caller in ["by-env", "by-name"] {
        let (ok, failed) = outcomes(&results.path().join(caller));
        assert!(failed.is_empty(), "{caller}: {} of {} calls failed: {:?}", failed.len(), ok + failed.len(), failed);
        let text = std::fs::read_to_string(results.path().join(caller)).unwrap();
        for v in ["1", "2", "3", "4", "5"] {
            assert!(text.contains(&format!("\"version\":\"{v}\"")), "{caller} reached api v{v}");
        }
    }
}
