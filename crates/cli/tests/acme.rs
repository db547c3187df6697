//! Automatic certificates end to end, against a real ACME server: pebble
//! (with pebble-challtestsrv answering every name with 127.0.0.1), started
//! by hand and stopped by PID. One test, in steps, so that one pebble and
//! one fixed DNS port serve the whole file. In CI (`CI=true`) a missing
//! program fails the test; outside it, the test skips.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// pebble-challtestsrv's DNS port: fixed (below 32768, out of the range
/// the kernel hands out for port 0), one per test binary.
const DNS_PORT: u16 = 18953;
const DNS_MANAGEMENT_PORT: u16 = 18955;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process started by this test, killed by its PID when dropped.
struct Proc(Child);

impl Proc {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// pebble and what it needs: its HTTPS certificate (a CA made here, which
/// wharf is told to trust with --acme-ca-root) and its config file.
struct Pebble {
    dir: PathBuf,
    listen: u16,
    management: u16,
    proc: Option<Proc>,
}

impl Pebble {
    fn new(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=pebble test CA", "-addext", "basicConstraints=critical,CA:TRUE"])
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.pem")));
        run(Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=pebble"])
            .arg("-keyout")
            .arg(dir.join("pebble.key"))
            .arg("-out")
            .arg(dir.join("pebble.csr")));
        std::fs::write(dir.join("pebble.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(dir.join("pebble.csr"))
            .arg("-CA")
            .arg(dir.join("ca.pem"))
            .arg("-CAkey")
            .arg(dir.join("ca.key"))
            .arg("-extfile")
            .arg(dir.join("pebble.ext"))
            .arg("-out")
            .arg(dir.join("pebble.pem")));
        let mut p = Pebble { dir: dir.to_path_buf(), listen: free_port(), management: free_port(), proc: None };
        p.configure(http_port, tls_port, 86_400);
        p
    }

    /// Writes the config: the ports pebble validates challenges on (where
    /// wharf listens) and how long its certificates are valid.
    fn configure(&mut self, http_port: u16, tls_port: u16, validity_secs: u64) {
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", self.listen),
                "managementListenAddress": format!("127.0.0.1:{}", self.management),
                "certificate": self.dir.join("pebble.pem"),
                "privateKey": self.dir.join("pebble.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity_secs,
            }
        });
        std::fs::write(self.dir.join("pebble.json"), config.to_string()).unwrap();
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("pebble.log")).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{DNS_PORT}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble");
        self.proc = Some(Proc(child));
        wait_for("pebble to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.listen)).ok()
        });
    }

    fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen)
    }

    /// The root pebble issues under (new at each start), from its management API.
    fn issuing_root(&self) -> PathBuf {
        let out = run(Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(self.dir.join("ca.pem"))
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management)));
        let path = self.dir.join("root.pem");
        std::fs::write(&path, out.stdout).unwrap();
        path
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }
}

fn challtestsrv() -> Proc {
    let child = Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-dns01", &format!("127.0.0.1:{DNS_PORT}")])
        .args(["-management", &format!("127.0.0.1:{DNS_MANAGEMENT_PORT}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pebble-challtestsrv");
    let proc = Proc(child);
    wait_for("pebble-challtestsrv to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", DNS_MANAGEMENT_PORT)).ok()
    });
    proc
}

fn toml(hosts: &[&str]) -> String {
    let mut t = String::from(
        "app = \"shop\"\n\n[service.web]\ncommand = [\"wharf\", \"demo\", \"--name\", \"web\"]\nport = 8080\n\
         health = { path = \"/health\", interval = \"1s\" }\n\n[route]\n",
    );
    for h in hosts {
        t.push_str(&format!("\"{h}\" = \"web\"\n"));
    }
    t.push_str("\"*.wild.test\" = \"web\"\n");
    t
}

/// `wharf certs --json`'s row for `host`.
fn cert_row(s: &Server, host: &str) -> serde_json::Value {
    let all = s.json(&["certs", "--json"]);
    all.as_array().and_then(|a| a.iter().find(|c| c["host"] == host).cloned()).unwrap_or_default()
}

fn served(s: &Server, host: &str) -> Option<serde_json::Value> {
    let row = cert_row(s, host);
    (row["served"] == true).then_some(row)
}

/// The SHA-256 fingerprint of the certificate the HTTPS listener serves for `name`.
fn served_fingerprint(port: u16, name: &str) -> Option<String> {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null \
         | openssl x509 -noout -fingerprint -sha256"
    );
    let out = Command::new("sh").args(["-c", &script]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fp = text.trim().rsplit('=').next()?.replace(':', "").to_lowercase();
    (!fp.is_empty()).then_some(fp)
}

fn curl_https(port: u16, host: &str, root: &Path) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(root)
        .arg(format!("https://{host}:{port}/version"))
        .output()
        .expect("run curl")
}

fn metric(s: &Server, line_start: &str) -> Option<f64> {
    let addr = std::fs::read_to_string(s.data.join("metrics.url")).unwrap();
    let addr = addr.trim().trim_start_matches("http://").trim_end_matches("/metrics");
    let text = http_get(addr, "x", "/metrics", None)?.1;
    text.lines().find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn certificates_are_issued_served_renewed_and_survive_a_ca_outage_and_a_restart() {
    let (Some(_), Some(_), Some(_)) =
        (program("pebble", "pebble"), program("openssl", "openssl"), program("curl", "curl"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (http_port, tls_port) = (free_port(), free_port());
    let _dns = challtestsrv();
    let mut pebble = Pebble::new(dir.path(), http_port, tls_port);
    pebble.start();
    let ca_root = dir.path().join("ca.pem");
    let flags = |challenge: &str| -> Vec<String> {
        [
            "--http",
            &format!("127.0.0.1:{http_port}"),
            "--https",
            &format!("127.0.0.1:{tls_port}"),
            "--acme-directory",
            &pebble.directory(),
            "--acme-ca-root",
            ca_root.to_str().unwrap(),
            "--acme-email",
            "ops@shop.test",
            "--acme-challenge",
            challenge,
            "--acme-backoff",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let http01 = flags("http-01");
    let mut s = Server::start_in(
        dir.path().join("data"),
        dir.path().join("server.stderr"),
        &http01.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let app = app_dir(&toml(&["a.test", "b.test"]));
    s.deploy(app.path());

    // Two hosts over HTTP-01, served and trusted through pebble's root.
    for host in ["a.test", "b.test"] {
        let row = wait_for(&format!("{host}'s certificate"), Duration::from_secs(30), || served(&s, host));
        assert_eq!(row["source"], "acme", "{row}");
        assert!(row["issuer"].as_str().unwrap_or("").to_lowercase().contains("pebble"), "{row}");
        assert!(row["next_renewal"].as_u64() < row["not_after"].as_u64(), "{row}");
    }
    let issued = s.events("cert.issued");
    assert_eq!(issued.len(), 2, "{issued:?}");
    assert!(issued.iter().all(|m| m.contains("over http-01")), "{issued:?}");
    let root = pebble.issuing_root();
    let out = curl_https(tls_port, "a.test", &root);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", String::from_utf8_lossy(&out.stderr));
    let fp_a = served_fingerprint(tls_port, "a.test").expect("a.test served");
    assert_ne!(Some(&fp_a), served_fingerprint(tls_port, "b.test").as_ref(), "one certificate per host");
    // Plain HTTP now redirects.
    assert_eq!(s.get("a.test", "/version").map(|r| r.0), Some(308));
    // The wildcard host gets no order, and says why.
    let wild = cert_row(&s, "*.wild.test");
    assert!(wild["error"].as_str().unwrap_or("").contains("wildcard hosts need tls files"), "{wild}");
    assert!(!s.events("cert.wildcard").is_empty());
    assert_eq!(metric(&s, "wharf_acme_orders_total{outcome=\"issued\"} "), Some(2.0));
    assert!(metric(&s, "wharf_certificate_expiry_seconds{host=\"a.test\",source=\"acme\"} ").is_some());
    let listing = s.ok(&["certs"]);
    assert!(listing.contains("acme") && listing.contains("RENEWAL"), "{listing}");
    assert!(!s.json(&["certs", "--json"]).to_string().contains("PRIVATE KEY"), "no key in any answer");

    // Restart (kill -9), now preferring TLS-ALPN-01: the stored
    // certificates are served at once, with no new order.
    s.kill9();
    let tls01 = flags("tls-alpn-01");
    s.set_extra(&tls01.iter().map(String::as_str).collect::<Vec<_>>());
    s.spawn();
    assert_eq!(served_fingerprint(tls_port, "a.test"), Some(fp_a.clone()), "served at once after a restart");
    assert_eq!(s.get("a.test", "/version").map(|r| r.0), Some(308), "and redirected to at once");
    assert_eq!(metric(&s, "wharf_acme_orders_total{outcome=\"issued\"} "), None, "no new order");

    // A new host over TLS-ALPN-01.
    write_toml(&app, &toml(&["a.test", "b.test", "c.test"]));
    s.deploy(app.path());
    wait_for("c.test's certificate", Duration::from_secs(30), || served(&s, "c.test"));
    let issued = s.events("cert.issued");
    assert!(issued.iter().any(|m| m.contains("c.test") && m.contains("over tls-alpn-01")), "{issued:?}");
    assert_eq!(issued.len(), 3, "no host was ordered again: {issued:?}");
    let out = curl_https(tls_port, "c.test", &root);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", String::from_utf8_lossy(&out.stderr));

    // The CA goes away (SIGKILL) as a new host is ordered: the others are
    // served on, the order fails with an event and is retried with backoff
    // until the CA is back (now issuing certificates valid for 30 s).
    pebble.kill9();
    write_toml(&app, &toml(&["a.test", "b.test", "c.test", "d.test"]));
    s.deploy(app.path());
    let failed = wait_for("the failed order", Duration::from_secs(30), || {
        let f = s.events("cert.order_failed");
        (!f.is_empty()).then_some(f)
    });
    assert!(failed[0].contains("d.test"), "{failed:?}");
    let row = cert_row(&s, "d.test");
    assert_eq!(row["served"], false, "{row}");
    assert!(row["error"].as_str().is_some_and(|e| !e.is_empty()), "the last error shows: {row}");
    assert_eq!(served_fingerprint(tls_port, "a.test"), Some(fp_a.clone()), "served while the CA is down");
    pebble.configure(http_port, tls_port, 30);
    pebble.start();
    let first = wait_for("d.test's certificate once the CA is back", Duration::from_secs(40), || served(&s, "d.test"));
    let root = pebble.issuing_root();
    let out = curl_https(tls_port, "d.test", &root);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", String::from_utf8_lossy(&out.stderr));
    assert!(metric(&s, "wharf_acme_orders_total{outcome=\"failed\"} ").unwrap_or(0.0) >= 1.0);

    // Renewal at two thirds of the 30 s lifetime, served without a restart.
    let renewed = wait_for("d.test renewed", Duration::from_secs(40), || {
        let row = served(&s, "d.test")?;
        (row["fingerprint"] != first["fingerprint"]).then_some(row)
    });
    assert!(renewed["not_after"].as_u64() > first["not_after"].as_u64(), "{renewed}");
    assert!(s.events("cert.renewed").iter().any(|m| m.contains("d.test")));
    let fp = renewed["fingerprint"].as_str().unwrap().to_string();
    wait_for("the renewed certificate served", Duration::from_secs(10), || {
        (served_fingerprint(tls_port, "d.test").as_deref() == Some(fp.as_str())).then_some(())
    });
    assert_eq!(served_fingerprint(tls_port, "a.test"), Some(fp_a), "the others untouched");
    assert!(!pebble.log().is_empty());
}
