//! Test kit: starts the real `wharf` binary and talks to it over real HTTP.

#![allow(unsafe_code)] // signals, uids and fds through libc
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// Some(()) when the program is installed; outside CI, None (the test
/// skips, saying so) when not. In CI a missing program fails the test.
pub fn program(name: &str, package: &str) -> Option<()> {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if found {
        return Some(());
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must install {package} ({name})");
    eprintln!("skipping: {name} is not installed (apt-get install {package})");
    None
}

/// Runs a command that must succeed; its output.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Polls `f` every 50 ms until it returns Some, or panics after `limit`
/// with `what` (a behaviour bound, not a timing assertion).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `wharf server` child process with its own data directory. Killed (and
/// its tasks stopped) on drop.
pub struct Server {
    pub data: PathBuf,
    pub child: Option<Child>,
    /// Extra `wharf server` flags, kept for restarts.
    extra: Vec<String>,
    /// Where the server's stderr goes (appended across restarts).
    stderr_file: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let tmp = passable_tempdir();
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let stderr_file = tmp.path().join("server.stderr");
        let mut s = Server { data: tmp.path().join("data"), child: None, extra, stderr_file, _tmp: Some(tmp) };
        s.spawn();
        s
    }

    /// A server whose data directory is `data` (made by the caller, e.g. on
    /// a small file system).
    pub fn start_in(data: PathBuf, stderr_file: PathBuf, extra: &[&str]) -> Server {
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut s = Server { data, child: None, extra, stderr_file, _tmp: None };
        s.spawn();
        s
    }

    /// Replaces the extra `wharf server` flags of the next start.
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Starts (again) on the same data directory.
    pub fn spawn(&mut self) {
        if let Err(err) = self.try_spawn() {
            panic!("{err}");
        }
    }

    /// Starts (again) on the same data directory; Err with the server's
    /// stderr when it exits before it is up.
    pub fn try_spawn(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.data.join("api.url"));
        let _ = std::fs::remove_file(self.data.join("proxy.url"));
        let stderr = self.stderr_path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&stderr).unwrap();
        // A test that needs the HTTP listener on a known port gives its own --http.
        let http: &[&str] = if self.extra.iter().any(|a| a == "--http") { &[] } else { &["--http", "127.0.0.1:0"] };
        let child = Command::new(WHARF)
            .args(["server", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(http)
            .args(["--internal", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--data"])
            .arg(&self.data)
            .args(task_user_args())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start wharf server");
        self.child = Some(child);
        let data = self.data.clone();
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let err = std::fs::read_to_string(&stderr).unwrap_or_default();
                return Err(format!("wharf server exited ({status}) before it was up:\n{err}"));
            }
            if data.join("api.url").exists() && data.join("proxy.url").exists() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("timed out after 30s waiting for the server to write its URLs");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr_path(&self) -> PathBuf {
        self.stderr_file.clone()
    }

    /// The driver id that marks this server's task processes.
    pub fn driver_id(&self) -> Option<String> {
        std::fs::read_to_string(self.data.join("tasks/driver-id")).ok().map(|s| s.trim().to_string())
    }

    /// Live processes started by this server's driver.
    pub fn task_processes(&self) -> Vec<u32> {
        let id = self.driver_id().expect("driver id");
        pids_with_env("WHARF_DRIVER", Some(&id))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    pub fn proxy_addr(&self) -> String {
        let url = std::fs::read_to_string(self.data.join("proxy.url")).unwrap();
        url.trim().trim_start_matches("http://").to_string()
    }

    pub fn api_addr(&self) -> String {
        let url = std::fs::read_to_string(self.data.join("api.url")).unwrap();
        url.trim().trim_start_matches("http://").to_string()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("token")).unwrap().trim().to_string()
    }

    /// Runs a CLI command against this server.
    pub fn wharf(&self, args: &[&str]) -> Output {
        Command::new(WHARF).arg("--data").arg(&self.data).args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs a CLI command and returns its stdout, panicking on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.wharf(args);
        assert!(
            out.status.success(),
            "wharf {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    pub fn tasks(&self) -> Vec<serde_json::Value> {
        self.json(&["ps", "--json"]).as_array().unwrap().clone()
    }

    /// Deploys and waits until the rollout is done.
    pub fn deploy(&self, dir: &Path) -> String {
        self.ok(&["deploy", dir.to_str().unwrap()])
    }

    /// GET through the proxy.
    pub fn get(&self, host: &str, path: &str) -> Option<(u16, String)> {
        http_get(&self.proxy_addr(), host, path, None)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        signal(c.id(), libc::SIGTERM);
        c.wait().unwrap()
    }

    /// Event messages of a kind, from the log stream.
    pub fn events(&self, kind: &str) -> Vec<String> {
        let out = self.ok(&["logs", "--source", "event", "-n", "100000", "--json"]);
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["fields"]["kind"] == kind)
            .map(|r| r["message"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Some(c) = self.child.as_mut() {
                    if c.try_wait().ok().flatten().is_some() {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            self.kill9();
        }
        // Never leave a task behind, even when a test failed half-way.
        if let Some(id) = self.driver_id() {
            for pid in pids_with_env("WHARF_DRIVER", Some(&id)) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a pid we started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

pub fn alive(pid: u32) -> bool {
    // A zombie counts as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn environ(pid: u32) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Live processes whose environment has `key` (= `value` if given).
pub fn pids_with_env(key: &str, value: Option<&str>) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if !alive(pid) {
            continue;
        }
        if environ(pid).iter().any(|(k, v)| k == key && value.is_none_or(|want| want == v)) {
            out.push(pid);
        }
    }
    out
}

/// A minimal HTTP/1.1 client: one request per connection, so every call
/// goes through the proxy's full path. None when the connection fails.
pub fn http_get(addr: &str, host: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    http_request(addr, "GET", host, path, token, &[])
}

pub fn http_request(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Some((status, body))
}

/// The body of a chunked answer, joined.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A temporary directory others may pass through (tempfile makes them 0700):
/// a root server runs its tasks as `nobody`, who must reach the data
/// directory inside.
pub fn passable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A temporary directory tasks (running as another user) may write into.
pub fn writable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// `wharf demo` tasks run the test's own wharf binary: when its directory
/// is closed to other users (a checkout in a private home), tasks run as
/// root; otherwise as the server's default task user.
pub fn task_user_args() -> Vec<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    let open = Path::new(WHARF)
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if open {
        Vec::new()
    } else {
        vec!["--task-user", "root"]
    }
}

/// Writes an app directory with the given wharf.toml.
pub fn app_dir(toml: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("wharf.toml"), toml).unwrap();
    d
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Sends raw bytes and returns everything the server sends back until it
/// closes the connection or `wait` passes with nothing more.
pub fn raw(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in `text`.
pub fn status_of(text: &str) -> u16 {
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// An app of `wharf demo` tasks: `api` (with `replicas` and DEMO_VERSION =
/// `version`) behind "/api" with the prefix stripped; when `full`, also an
/// `app` web service on "/" and a `worker` logging every 200 ms.
pub fn demo_toml(name: &str, version: &str, replicas: u32, full: bool) -> String {
    let mut toml = format!(
        r#"app = "{name}"

[service.api]
command = ["wharf", "demo", "--name", "api"]
port = 8080
replicas = {replicas}
env = {{ DEMO_VERSION = "{version}" }}
health = {{ path = "/health", interval = "1s" }}
"#
    );
    if full {
        toml.push_str(
            r#"
[service.app]
command = ["wharf", "demo", "--name", "app"]
port = 3000
health = { path = "/health", interval = "1s" }

[service.worker]
command = ["wharf", "demo", "worker", "--name", "worker", "--log-every", "200ms"]
"#,
        );
    }
    toml.push_str("\n[route]\n\"/api\" = { service = \"api\", strip_prefix = true }\n");
    if full {
        toml.push_str("\"/\" = \"app\"\n");
    }
    toml
}

/// An app named `name` with one demo `api` service routed on "/", reporting
/// `version`; `extra` goes into the service's table.
pub fn api_app(name: &str, version: &str, extra: &str) -> String {
    format!(
        "app = \"{name}\"\n\n[service.api]\ncommand = [\"wharf\", \"demo\", \"--name\", \"api\"]\nport = 8080\n\
         env = {{ DEMO_VERSION = \"{version}\" }}\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n{extra}\n\n\
         [route]\n\"/\" = \"api\"\n"
    )
}

/// The version the demo app answers with on "/version" through the proxy.
pub fn version(s: &Server) -> String {
    let (code, body) = s.get("x", "/version").expect("an answer");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["version"].as_str().unwrap().to_string()
}

/// Replaces the wharf.toml of an app directory.
pub fn write_toml(dir: &tempfile::TempDir, toml: &str) {
    std::fs::write(dir.path().join("wharf.toml"), toml).unwrap();
}

/// An upgraded connection through the proxy (at `addr`) to the demo's echo on /api/upgrade.
pub fn upgrade(addr: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /api/upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert_eq!(status_of(&head), 101, "{head}");
    c
}
