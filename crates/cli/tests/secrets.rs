//! An app's secrets, end to end: `wharf secret set|ls|rm`, a service that
//! takes one in its environment, and the value found nowhere else: not in
//! any output, API answer, log record, metric or file of the data directory.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);
const FIRST: &str = "s3cr3t-Zq8w-first-value";
const SECOND: &str = "s3cr3t-Kp4v-second-value";

/// `api` takes the secret, `other` does not.
fn toml(secret: &str) -> String {
    format!(
        r#"app = "shop"

[service.api]
command = ["wharf", "demo", "--name", "api"]
port = 8080
health = {{ path = "/health", interval = "1s" }}

[service.api.env]
DEMO_VERSION = "1"
DB_PASSWORD = {{ secret = "{secret}" }}

[service.other]
command = ["wharf", "demo", "--name", "other"]
port = 8081
health = {{ path = "/health", interval = "1s" }}

[route]
"/" = "api"
"/other" = {{ service = "other", strip_prefix = true }}
"#
    )
}

/// `wharf secret set NAME --app APP` with `value` on stdin.
fn set(s: &Server, name: &str, value: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--data")
        .arg(&s.data)
        .args(["secret", "set", name, "--app", "shop", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{value}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn set_ok(s: &Server, name: &str, value: &str) -> serde_json::Value {
    let out = set(s, name, value);
    assert!(out.status.success(), "secret set failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `api` has in $DB_PASSWORD, asked over HTTP.
fn served(s: &Server) -> Option<String> {
    match s.get("x", "/env?key=DB_PASSWORD") {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// The service plans of `wharf plan --json`, by name: (action, changes).
fn plan(s: &Server, dir: &Path) -> Vec<(String, String, Vec<String>)> {
    let p = s.json(&["plan", dir.to_str().unwrap(), "--json"]);
    p["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sp| {
            let changes = sp["changes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
            (sp["name"].as_str().unwrap().to_string(), sp["action"].as_str().unwrap().to_string(), changes)
        })
        .collect()
}

#[test]
fn a_secret_reaches_its_service_only_and_is_printed_nowhere() {
    let mut s = Server::start();
    // Set before the first deploy; ls shows the name, never the value.
    assert_eq!(set_ok(&s, "db_password", FIRST)["outcome"], "created");
    assert_eq!(set_ok(&s, "spare", "spare-value-x")["outcome"], "created");
    let ls = s.json(&["secret", "ls", "--app", "shop", "--json"]);
    let names: Vec<&str> = ls.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db_password", "spare"]);

    let dir = app_dir(&toml("db_password"));
    s.deploy(dir.path());
    assert_eq!(wait_for("api serves its secret", LONG, || served(&s)), FIRST);
    let (code, body) = s.get("x", "/other/env?key=DB_PASSWORD").unwrap();
    assert_eq!(code, 404, "a service that does not take it does not have it: {body}");
    let ls = s.json(&["secret", "ls", "--app", "shop", "--json"]);
    assert_eq!(ls[0]["used_by"], serde_json::json!(["api"]));

    // rm: refused while api uses it, with who uses it; an unused one goes.
    let out = s.wharf(&["secret", "rm", "db_password", "--app", "shop"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("used by the deployed service: api"), "{err}");
    s.ok(&["secret", "rm", "spare", "--app", "shop"]);
    let out = s.wharf(&["secret", "rm", "spare", "--app", "shop"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no secret `spare`"));
    assert_eq!(s.json(&["secret", "ls", "--app", "shop", "--json"]).as_array().unwrap().len(), 1);

    // The same value again changes nothing; another value is a new revision of api only.
    assert_eq!(set_ok(&s, "db_password", FIRST)["outcome"], "unchanged");
    assert!(plan(&s, dir.path()).iter().all(|(_, action, _)| action == "unchanged"));
    let changed = set_ok(&s, "db_password", SECOND);
    assert_eq!(changed["outcome"], "changed");
    assert_eq!(changed["used_by"], serde_json::json!(["api"]));
    let plans = plan(&s, dir.path());
    for (name, action, changes) in &plans {
        match name.as_str() {
            "api" => assert_eq!((action.as_str(), changes.clone()), ("changed", vec!["secret db_password".into()])),
            _ => assert_eq!(action, "unchanged", "{plans:?}"),
        }
    }
    s.deploy(dir.path());
    assert_eq!(wait_for("api serves the new value", LONG, || served(&s).filter(|v| v == SECOND)), SECOND);
    let revisions = s.json(&["revisions", "api", "--app", "shop", "--json"]);
    assert_eq!(revisions.as_array().unwrap().len(), 2);
    assert_eq!(revisions[1]["changes"], serde_json::json!(["secret db_password"]));
    assert_eq!(s.json(&["revisions", "other", "--app", "shop", "--json"]).as_array().unwrap().len(), 1);

    // A reference to a secret that is not set: refused where it is written, the app untouched.
    let bad = app_dir(&toml("nope"));
    for cmd in ["plan", "deploy"] {
        let out = s.wharf(&[cmd, bad.path().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} of a missing secret succeeded");
        assert!(err.contains("wharf.toml:10:15") && err.contains("`nope`"), "{cmd}: {err}");
        assert!(err.contains("wharf secret set nope --app shop"), "{cmd}: {err}");
    }
    assert_eq!(served(&s).as_deref(), Some(SECOND), "the running app is untouched");
    assert_eq!(s.json(&["revisions", "api", "--app", "shop", "--json"]).as_array().unwrap().len(), 2);

    // Found nowhere: outputs, API answers, the log stream, metrics, the data directory.
    let mut outputs = vec![
        s.ok(&["plan", dir.path().to_str().unwrap()]),
        s.ok(&["plan", dir.path().to_str().unwrap(), "--json"]),
        s.ok(&["revisions", "api", "--app", "shop", "--json"]),
        s.ok(&["revisions", "api", "--app", "shop"]),
        s.ok(&["status", "--json"]),
        s.ok(&["status"]),
        s.ok(&["ps", "--json"]),
        s.ok(&["deployments", "--app", "shop", "--json"]),
        s.ok(&["secret", "ls", "--app", "shop", "--json"]),
        s.ok(&["secret", "ls", "--app", "shop"]),
        s.ok(&["events", "--json"]),
        s.ok(&["logs", "-n", "100000", "--json"]),
    ];
    let token = s.token();
    for path in [
        "/v1/status",
        "/v1/tasks",
        "/v1/events?n=1000",
        "/v1/deployments?app=shop",
        "/v1/revisions?app=shop&service=api",
        "/v1/apps/shop/secrets",
        "/v1/logs?n=100000",
    ] {
        let (code, body) = http_get(&s.api_addr(), "x", path, Some(&token)).expect("an API answer");
        assert_eq!(code, 200, "{path}: {body}");
        outputs.push(body);
    }
    // Behind the API's token like every endpoint.
    for (method, path) in [
        ("GET", "/v1/apps/shop/secrets"),
        ("PUT", "/v1/apps/shop/secrets/x"),
        ("DELETE", "/v1/apps/shop/secrets/db_password"),
    ] {
        let body = b"{\"value\": \"v\"}";
        let (code, _) = http_request(&s.api_addr(), method, "x", path, None, body).expect("an API answer");
        assert_eq!(code, 401, "{method} {path} without the token");
    }
    let metrics = std::fs::read_to_string(s.data.join("metrics.url")).unwrap();
    let addr = metrics.trim().trim_start_matches("http://").trim_end_matches("/metrics");
    let (code, body) = http_get(addr, "x", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    outputs.push(body);
    outputs.push(s.stderr());
    for value in [FIRST, SECOND] {
        for (i, out) in outputs.iter().enumerate() {
            assert!(!out.contains(value), "output {i} shows the secret:\n{out}");
        }
        assert_eq!(files_containing(&s.data, value.as_bytes()), Vec::<String>::new(), "files with the secret");
    }
    assert!(outputs[2].contains("secret db_password"), "the change is named, not shown");

    // kill -9: the secret is still there, and the re-adopted task still has it.
    s.kill9();
    s.spawn();
    assert_eq!(s.json(&["secret", "ls", "--app", "shop", "--json"])[0]["name"], "db_password");
    assert_eq!(served(&s).as_deref(), Some(SECOND));
    // A new task after the restart (the old one stopped) gets it too.
    s.ok(&["scale", "api=2", "--app", "shop"]);
    wait_for("two api tasks", LONG, || {
        let up = s.tasks().iter().filter(|t| t["service"] == "api" && t["health"] == "healthy").count();
        (up == 2).then_some(())
    });
    for _ in 0..4 {
        assert_eq!(served(&s).as_deref(), Some(SECOND));
    }

    // --force removes it even though api uses it; its running tasks keep the value.
    let removed = s.json(&["secret", "rm", "db_password", "--app", "shop", "--force", "--json"]);
    assert_eq!(removed["used_by"], serde_json::json!(["api"]));
    assert_eq!(s.json(&["secret", "ls", "--app", "shop", "--json"]), serde_json::json!([]));
    assert_eq!(served(&s).as_deref(), Some(SECOND));
}

#[test]
fn a_key_that_does_not_open_the_stored_secrets_stops_the_start_and_says_which_key() {
    let mut s = Server::start();
    set_ok(&s, "db_password", FIRST);
    let key = s.data.join("secret.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    s.terminate();
    let original = std::fs::read(&key).unwrap();
    std::fs::write(&key, format!("{}\n", "7".repeat(64))).unwrap();
    let err = s.try_spawn().expect_err("a server with another key must not start");
    assert!(err.contains("does not decrypt") && err.contains(&format!("key file {}", key.display())), "{err}");
    // The right key again: it starts, with the secret.
    std::fs::write(&key, original).unwrap();
    s.spawn();
    assert_eq!(s.json(&["secret", "ls", "--app", "shop", "--json"])[0]["name"], "db_password");
}
