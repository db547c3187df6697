//! HTTPS end to end: the real server with `--https`, certificates from
//! files made by `openssl`, and real clients (`curl`, `openssl s_client`,
//! `nghttp`). In CI (`CI=true`) a missing program fails the test.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use common::*;

/// A private CA in `dir`, and a certificate it signs for `names`, as
/// `NAME.pem` (leaf then CA) and `NAME.key`; `days` of validity (negative: expired).
struct Ca<'a> {
    dir: &'a Path,
}

impl Ca<'_> {
    fn new(dir: &Path) -> Ca<'_> {
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3"])
            .args(["-subj", "/CN=wharf test CA", "-keyout"])
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.pem")));
        Ca { dir }
    }

    fn issue(&self, name: &str, hosts: &[&str], cn: &str) {
        let d = self.dir;
        run(Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj"])
            .arg(format!("/CN={cn}"))
            .arg("-keyout")
            .arg(d.join(format!("{name}.key")))
            .arg("-out")
            .arg(d.join(format!("{name}.csr"))));
        let san: Vec<String> = hosts.iter().map(|h| format!("DNS:{h}")).collect();
        std::fs::write(d.join(format!("{name}.ext")), format!("subjectAltName={}\n", san.join(","))).unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(d.join(format!("{name}.csr")))
            .arg("-CA")
            .arg(d.join("ca.pem"))
            .arg("-CAkey")
            .arg(d.join("ca.key"))
            .arg("-extfile")
            .arg(d.join(format!("{name}.ext")))
            .arg("-out")
            .arg(d.join(format!("{name}.leaf"))));
        let chain = [
            std::fs::read_to_string(d.join(format!("{name}.leaf"))).unwrap(),
            std::fs::read_to_string(d.join("ca.pem")).unwrap(),
        ]
        .concat();
        // Written aside and renamed: the server never reads half a file.
        std::fs::write(d.join(format!("{name}.pem.new")), chain).unwrap();
        std::fs::rename(d.join(format!("{name}.pem.new")), d.join(format!("{name}.pem"))).unwrap();
    }
}

fn https_url(s: &Server) -> String {
    std::fs::read_to_string(s.data.join("https.url")).expect("the server wrote https.url").trim().to_string()
}

fn port_of(url: &str) -> String {
    url.rsplit(':').next().unwrap().to_string()
}

/// `curl` through the HTTPS listener to `host`, trusting the test CA.
fn curl(s: &Server, certs: &Path, host: &str, extra: &[&str]) -> Output {
    let port = port_of(&https_url(s));
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(certs.join("ca.pem"))
        .args(extra)
        .arg(format!("https://{host}:{port}/echo"))
        .output()
        .expect("run curl")
}

/// The subject CN `openssl s_client` was served for `servername` (None:
/// the handshake failed).
fn served_cn(s: &Server, servername: Option<&str>, extra: &[&str]) -> Option<String> {
    let addr = https_url(s).trim_start_matches("https://").to_string();
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr, "-brief"]).args(extra);
    match servername {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.stdin(std::process::Stdio::null()).output().expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if !text.contains("CONNECTION ESTABLISHED") {
        return None;
    }
    text.lines().find_map(|l| l.strip_prefix("Peer certificate: CN = ").map(|cn| cn.trim().to_string()))
}

fn metrics(s: &Server) -> String {
    let addr = std::fs::read_to_string(s.data.join("metrics.url")).unwrap();
    let addr = addr.trim().trim_start_matches("http://").trim_end_matches("/metrics");
    http_get(addr, "x", "/metrics", None).expect("metrics answer").1
}

fn handshakes(s: &Server, outcome: &str) -> u64 {
    let wanted = format!("wharf_proxy_tls_handshakes_total{{outcome=\"{outcome}\"}} ");
    metrics(s).lines().find_map(|l| l.strip_prefix(&wanted).and_then(|n| n.trim().parse().ok())).unwrap_or(0)
}

fn shop_toml(certs: &Path, extra: &str) -> String {
    format!(
        "app = \"shop\"\n\n[service.web]\ncommand = [\"wharf\", \"demo\", \"--name\", \"web\"]\nport = 8080\n\
         health = {{ path = \"/health\", interval = \"1s\" }}\n\n[route]\n\
         \"shop.test\" = {{ service = \"web\", hsts = \"1d\", tls = {{ cert = \"{c}/shop.pem\", key = \"{c}/shop.key\" }} }}\n\
         \"plain.test\" = {{ service = \"web\", https = \"off\" }}\n{extra}",
        c = certs.display()
    )
}

#[test]
fn routes_are_served_over_https_with_their_certificates_and_plain_http_is_redirected() {
    let (Some(_), Some(_)) = (program("openssl", "openssl"), program("curl", "curl")) else { return };
    let nghttp = program("nghttp", "nghttp2-client");
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    ca.issue("shop", &["shop.test"], "shop one");
    ca.issue("other", &["other.test"], "other");
    let s = Server::start_with(&["--https", "127.0.0.1:0", "--header-timeout", "2s"]);
    let app = app_dir(&shop_toml(certs.path(), ""));
    s.deploy(app.path());

    let listed = wait_for("the certificate loaded", Duration::from_secs(20), || {
        let v = s.json(&["certs", "--json"]);
        (v[0]["served"] == true).then_some(v)
    });
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["host"], "shop.test");
    assert!(listed[0]["issuer"].as_str().unwrap_or("").contains("wharf test CA"), "{listed}");
    assert_eq!(listed[0]["expired"], false);
    assert!(!listed.to_string().contains("PRIVATE KEY"), "no key in any answer");

    // HTTPS, HTTP/1.1 and HTTP/2 (ALPN), with the forwarded scheme and HSTS.
    let out = curl(&s, certs.path(), "shop.test", &["--http1.1"]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("strict-transport-security: max-age=86400"), "{text}");
    assert!(text.contains("\"x-forwarded-proto\":\"https\""), "the task is told the scheme: {text}");
    let out = curl(&s, certs.path(), "shop.test", &["--http2"]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.starts_with("http/2 200"), "h2 through ALPN: {text}");
    if nghttp.is_some() {
        let port = port_of(&https_url(&s));
        let out = Command::new("nghttp")
            .args(["-v", "--timeout=10", &format!("https://127.0.0.1:{port}/echo"), "-H", ":authority: shop.test"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("negotiated protocol: h2"), "{text}");
        assert!(text.contains(":status: 200"), "{text}");
    }

    // Plain HTTP: a 308 to the HTTPS listener for the host with a
    // certificate; the route with https = "off" is served as it came.
    let port = port_of(&https_url(&s));
    let (code, _) = s.get("shop.test", "/cart?id=1").unwrap();
    assert_eq!(code, 308);
    let head = raw(&s.proxy_addr(), b"GET /cart?id=1 HTTP/1.1\r\nHost: shop.test\r\n\r\n", Duration::from_secs(5));
    assert!(head.contains(&format!("location: https://shop.test:{port}/cart?id=1")), "{head}");
    assert_eq!(s.get("plain.test", "/version").map(|r| r.0), Some(200));

    // SNI picks the certificate; an unknown name or none gets no certificate at all.
    assert_eq!(served_cn(&s, Some("shop.test"), &[]).as_deref(), Some("shop one"));
    let before = handshakes(&s, "unknown_name");
    assert_eq!(served_cn(&s, Some("other.test"), &[]), None, "other.test is no route's host");
    assert_eq!(served_cn(&s, None, &[]), None, "no SNI, no certificate");
    assert!(handshakes(&s, "unknown_name") >= before + 2, "{}", metrics(&s));
    // TLS 1.1 is refused by the server (the client offers only it).
    let before = handshakes(&s, "no_common_protocol");
    assert_eq!(served_cn(&s, Some("shop.test"), &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]), None);
    assert!(handshakes(&s, "no_common_protocol") > before, "{}", metrics(&s));

    // Garbage and a stalled handshake are cut off while others are served.
    let addr = https_url(&s).trim_start_matches("https://").to_string();
    let mut junk = TcpStream::connect(&addr).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n").unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let n = junk.read(&mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("HTTP/1.1"), "no plain answer on the TLS port");
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(curl(&s, certs.path(), "shop.test", &[]).status.success(), "served while one stalls");
    let closed = stalled.read(&mut buf).map(|n| n == 0).unwrap_or(true);
    assert!(closed, "a handshake that never starts is closed at the idle deadline");
    wait_for("the timed-out handshake counted", Duration::from_secs(10), || {
        (handshakes(&s, "timeout") >= 1 && handshakes(&s, "bad_record") >= 1).then_some(())
    });

    // New files are picked up without a deploy.
    ca.issue("shop", &["shop.test"], "shop two");
    wait_for("the renewed certificate served", Duration::from_secs(20), || {
        (served_cn(&s, Some("shop.test"), &[]).as_deref() == Some("shop two")).then_some(())
    });
    assert!(!s.events("cert.loaded").is_empty());
}

#[test]
fn a_deploy_with_a_certificate_that_cannot_be_served_changes_nothing() {
    let Some(_) = program("openssl", "openssl") else { return };
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    ca.issue("shop", &["shop.test"], "shop");
    ca.issue("other", &["other.test"], "other");
    let s = Server::start_with(&["--https", "127.0.0.1:0"]);
    let app = app_dir(&shop_toml(certs.path(), ""));
    s.deploy(app.path());
    let deployments = s.json(&["deployments", "--json"]);

    let refused = |toml: String, says: &str| {
        write_toml(&app, &toml);
        let out = s.wharf(&["deploy", app.path().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && err.contains(says), "{says}: {err}");
    };
    // Another host's certificate; a key that is not the certificate's; a missing file.
    let c = certs.path().display();
    refused(
        shop_toml(certs.path(), "").replace(&format!("{c}/shop."), &format!("{c}/other.")),
        "does not cover shop.test",
    );
    refused(shop_toml(certs.path(), "").replace(&format!("{c}/shop.key"), &format!("{c}/other.key")), "does not match");
    refused(shop_toml(certs.path(), "").replace(&format!("{c}/shop.key"), &format!("{c}/missing.key")), "missing.key");
    assert_eq!(s.json(&["deployments", "--json"]), deployments, "nothing was recorded");
    assert_eq!(served_cn(&s, Some("shop.test"), &[]).as_deref(), Some("shop"), "still served");
}

/// A TLS client trusting only the test CA in `certs`.
fn tls_client(certs: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

/// A connection to the HTTPS listener at `addr` for `host`, handshake done.
fn tls_connect(
    addr: &str,
    config: &Arc<rustls::ClientConfig>,
    host: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// (status, body), or what went wrong.
type Answer = Result<(u16, String), String>;

/// One GET over a new TLS connection.
fn https_get(addr: &str, config: &Arc<rustls::ClientConfig>, host: &str, path: &str) -> Answer {
    let mut stream = tls_connect(addr, config, host).map_err(|e| format!("handshake: {e}"))?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    // A peer that closes without close_notify after a whole answer is fine here.
    if let Err(e) = stream.read_to_end(&mut buf) {
        if e.kind() != std::io::ErrorKind::UnexpectedEof || buf.is_empty() {
            return Err(format!("read: {e}"));
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no head: {text:?}"))?;
    Ok((status_of(head), body.to_string()))
}

/// Deploys under HTTPS load (each request a new TLS connection) lose no
/// request, and an upgraded connection (a WebSocket's way) works over TLS.
#[test]
fn deploys_under_https_load_lose_no_request_and_upgrades_work_over_tls() {
    let Some(_) = program("openssl", "openssl") else { return };
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    ca.issue("zd", &["zd.test"], "zd");
    let s = Server::start_with(&["--https", "127.0.0.1:0"]);
    let c = certs.path().display();
    let toml = |version: &str, strategy: &str| {
        format!(
            "app = \"zd\"\n\n[service.api]\ncommand = [\"wharf\", \"demo\", \"--name\", \"api\"]\nport = 8080\n\
             replicas = 2\nenv = {{ DEMO_VERSION = \"{version}\" }}\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n\
             deploy = {{ strategy = \"{strategy}\" }}\n\n\
             [route]\n\"zd.test\" = {{ service = \"api\", tls = {{ cert = \"{c}/zd.pem\", key = \"{c}/zd.key\" }} }}\n"
        )
    };
    let app = app_dir(&toml("v1", "rolling"));
    s.deploy(app.path());
    let config = tls_client(certs.path());
    let addr = https_url(&s).trim_start_matches("https://").to_string();
    wait_for("HTTPS served", Duration::from_secs(20), || https_get(&addr, &config, "zd.test", "/version").ok());

    // An upgraded connection over TLS echoes what it is sent.
    let mut ws = tls_connect(&addr, &config, "zd.test").unwrap();
    ws.write_all(b"GET /upgrade HTTP/1.1\r\nHost: zd.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert_eq!(status_of(&String::from_utf8_lossy(&head)), 101, "{}", String::from_utf8_lossy(&head));
    ws.write_all(b"ping over tls").unwrap();
    let mut echo = [0u8; 13];
    ws.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping over tls");

    // Paced load through TLS (a new handshake per request) across a rolling
    // and a blue-green deploy; every answer is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let began = Instant::now();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (stop, answers, config, addr) = (stop.clone(), answers.clone(), config.clone(), addr.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && began.elapsed() < Duration::from_secs(120) {
                    let answer = https_get(&addr, &config, "zd.test", "/version");
                    answers.lock().unwrap().push(answer);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();
    for (version, strategy) in [("v2", "rolling"), ("v3", "blue-green")] {
        write_toml(&app, &toml(version, strategy));
        s.deploy(app.path());
        wait_for("the deploy served", Duration::from_secs(60), || {
            let (code, body) = https_get(&addr, &config, "zd.test", "/version").ok()?;
            (code == 200 && body.contains(version)).then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let answers = answers.lock().unwrap();
    let failed: Vec<_> = answers.iter().filter(|a| !matches!(a, Ok((200, _)))).collect();
    assert!(answers.len() > 100, "load ran: {} answers", answers.len());
    assert!(failed.is_empty(), "{} of {} failed: {:?}", failed.len(), answers.len(), &failed[..failed.len().min(5)]);
}

/// Development HTTPS: with `--acme-directory local` (what `wharf up
/// --https` sets), a route host without files gets a certificate from the
/// server's own CA at once; the CA is kept across a restart, so clients
/// that trust it keep doing so.
#[test]
fn a_local_ca_serves_route_hosts_for_development_and_survives_a_restart() {
    let (Some(_), Some(_)) = (program("openssl", "openssl"), program("curl", "curl")) else { return };
    let mut s = Server::start_with(&["--https", "127.0.0.1:0", "--acme-directory", "local"]);
    let app = app_dir(
        "app = \"dev\"\n\n[service.web]\ncommand = [\"wharf\", \"demo\", \"--name\", \"web\"]\nport = 8080\n\
         health = { path = \"/health\", interval = \"1s\" }\n\n[route]\n\"dev.localhost\" = \"web\"\n",
    );
    s.deploy(app.path());
    let ca = s.data.join("local-ca/ca.pem");
    let served = |s: &Server| {
        let port = port_of(&https_url(s));
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
            .arg(format!("dev.localhost:{port}:127.0.0.1"))
            .arg("--cacert")
            .arg(&ca)
            .arg(format!("https://dev.localhost:{port}/version"))
            .output()
            .unwrap();
        (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
    };
    wait_for("the local CA's certificate served", Duration::from_secs(20), || served(&s));
    let listed = s.json(&["certs", "--json"]);
    assert_eq!(listed[0]["host"], "dev.localhost", "{listed}");
    assert!(listed[0]["issuer"].as_str().unwrap_or("").contains("wharf local CA"), "{listed}");
    assert_eq!(s.get("dev.localhost", "/").map(|r| r.0), Some(308), "plain HTTP goes to HTTPS");
    let before = std::fs::read_to_string(&ca).unwrap();
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(s.data.join("local-ca/ca.key")).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(key_mode, 0o600, "the CA's key is the server's alone");

    s.kill9();
    s.spawn();
    wait_for("served again after a restart", Duration::from_secs(20), || served(&s));
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), before, "the same CA: clients keep trusting it");
}
