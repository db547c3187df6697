//! The dashboard in a real browser: headless Chromium driven through
//! chromedriver's W3C WebDriver API (plain JSON over HTTP, so no client
//! crate). Logs in, watches a scale arrive live through the page's own
//! script, rolls back and turns maintenance on from the pages, and saves a
//! screenshot of each page as a test artifact.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The element reference key of the W3C WebDriver protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const LONG: Duration = Duration::from_secs(30);

/// A chromedriver and one headless Chromium session; both end on drop.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    shots: std::path::PathBuf,
}

impl Browser {
    fn start() -> Option<Browser> {
        program("chromium", "chromium")?;
        program("chromedriver", "chromium-driver")?;
        // A free port below the ephemeral range's usual start is not
        // guaranteed; the kernel's pick for port 0 is, for this moment.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let addr = format!("127.0.0.1:{port}");
        let mut b = Browser { driver, addr, session: String::new(), shots: shots_dir() };
        wait_for("chromedriver", LONG, || webdriver(&b.addr, "GET", "/status", "").map(|_| ()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
            }
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        Some(b)
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (code, text) = webdriver(&self.addr, method, path, &body)
            .unwrap_or_else(|| panic!("no answer from chromedriver to {method} {path}"));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        assert_eq!(code, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}/{what}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "url", Some(json!({ "url": url })));
    }

    fn source(&self) -> String {
        self.cmd("GET", "source", None).as_str().unwrap_or_default().to_string()
    }

    fn url(&self) -> String {
        self.cmd("GET", "url", None).as_str().unwrap_or_default().to_string()
    }

    /// The first element matching the CSS selector.
    fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "element", Some(json!({ "using": "css selector", "value": css })));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("element/{e}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("element/{e}/value"), Some(json!({ "text": text })));
    }

    /// Waits until the page the browser shows (its source and URL) is the
    /// one `want` looks for: a click returns before the navigation it
    /// starts has ended.
    fn wait(&self, what: &str, want: impl Fn(&str, &str) -> bool) {
        wait_for(what, LONG, || want(&self.source(), &self.url()).then_some(()));
    }

    /// Saves what the browser shows as NAME.png among the test's artifacts.
    fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.cmd("GET", "screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = webdriver(&self.addr, "DELETE", &format!("/session/{}", self.session), "");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One request to chromedriver, which keeps its connections open: the
/// answer is read by its Content-Length.
fn webdriver(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(LONG)).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let code = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).ok()?;
    Some((code, String::from_utf8_lossy(&buf).into_owned()))
}

/// Where the screenshots go: `target/.../tmp/dashboard-screenshots`.
fn shots_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some(b) = Browser::start() else { return };
    let s = Server::start();
    let dir = app_dir(&api_app("shop", "1", ""));
    s.deploy(dir.path());
    write_toml(&dir, &api_app("shop", "2", ""));
    s.deploy(dir.path());
    let ui = format!("http://{}/ui", s.api_addr());

    // Not logged in: the login page; a wrong token is refused; the right one logs in.
    b.go(&ui);
    b.wait("the login page", |_, url| url.ends_with("/ui/login"));
    b.screenshot("login");
    b.type_into("input[name=token]", "not-the-token");
    b.click("main button[type=submit]");
    b.wait("the refusal", |src, _| src.contains("That is not this server's API token."));
    b.type_into("input[name=token]", &s.token());
    b.click("main button[type=submit]");
    b.wait("the overview", |src, url| url.ends_with("/ui") && src.contains("App shop"));
    b.screenshot("overview");

    // Live: a scale from the CLI reaches the open page through its script, no reload.
    s.ok(&["scale", "api=2"]);
    wait_for("the page to show 2/2", LONG, || {
        let page = b.source();
        let row = page.split("data-service=\"shop/api\"").nth(1)?.split("</tr>").next()?.to_string();
        row.contains("2/2").then_some(())
    });
    assert!(b.source().contains(">live<"), "the live status, set by the page's script");

    // Roll back from the service's page: the proxy answers from revision 1 again.
    b.click("a[href='/ui/service?app=shop&service=api']");
    b.wait("the service's page", |src, _| src.contains("Service shop/api"));
    b.screenshot("service");
    b.click("a[href='/ui/rollback?app=shop&service=api&revision=1']");
    b.wait("the rollback's confirmation", |src, _| src.contains("back to revision 1?"));
    b.click("main button[type=submit]");
    b.wait("the deployments page", |_, url| url.ends_with("/ui/deployments"));
    wait_for("revision 1 serving", LONG, || (version(&s) == "1").then_some(()));
    b.go(&format!("{ui}/deployments"));
    b.wait("the rollback among the deployments", |src, _| src.contains("App shop") && src.contains("api@1"));
    b.screenshot("deployments");

    // Maintenance on from the overview: the proxy answers 503; off again.
    b.go(&ui);
    b.wait("the overview", |src, _| src.contains("on=true"));
    b.click("a[href='/ui/maintenance?app=shop&service=api&on=true']");
    b.wait("the maintenance's confirmation", |src, _| src.contains("maintenance page (503)"));
    b.click("main button[type=submit]");
    wait_for("the maintenance page", LONG, || (s.get("x", "/")?.0 == 503).then_some(()));
    b.wait("the overview with maintenance on", |src, url| url.ends_with("/ui") && src.contains("on=false"));
    b.click("a[href='/ui/maintenance?app=shop&service=api&on=false']");
    b.wait("the confirmation to turn it off", |src, _| src.contains("Turn maintenance off"));
    b.click("main button[type=submit]");
    wait_for("the service again", LONG, || (s.get("x", "/")?.0 == 200).then_some(()));

    b.go(&format!("{ui}/event-log"));
    b.wait("the events page", |src, _| src.contains("<h1>Events</h1>"));
    b.screenshot("events");

    // Logged out: the pages ask for the token again.
    b.go(&ui);
    b.wait("the overview", |src, url| url.ends_with("/ui") && src.contains("App shop"));
    b.click("header form button[type=submit]");
    b.wait("the login page after logout", |_, url| url.ends_with("/ui/login"));
    b.go(&ui);
    b.wait("the login page again", |src, url| url.ends_with("/ui/login") && src.contains("name=\"token\""));
}
