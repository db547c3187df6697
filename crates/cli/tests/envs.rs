//! Environments, end to end: one wharf.toml with an `[env.staging]` overlay,
//! deployed plain and with `--env staging` on one server, runs as two apps
//! side by side, each with its own replicas, variables and route.

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

const TOML: &str = r#"app = "shop"

[service.web]
command = ["wharf", "demo", "--name", "web"]
port = 8080
replicas = 2
env = { MODE = "production", REGION = "eu" }
health = { path = "/health", interval = "1s" }

[route]
"shop.example.com" = "web"

[env.staging.service.web]
replicas = 1
env = { MODE = "staging" }
deploy = { bake = "0s" }

[env.staging.route]
"staging.shop.example.com" = "web"
"#;

/// The value of `key` in the environment of the task that answers for `host`.
fn var(s: &Server, host: &str, key: &str) -> Option<String> {
    match s.get(host, &format!("/env?key={key}")) {
        Some((200, body)) => Some(body.trim().to_string()),
        _ => None,
    }
}

/// The running tasks of `app`.
fn tasks_of(s: &Server, app: &str) -> usize {
    s.tasks().iter().filter(|t| t["app"] == app && t["state"] == "running").count()
}

fn app_names(s: &Server) -> Vec<String> {
    let status = s.json(&["status", "--json"]);
    let mut names: Vec<String> =
        status["apps"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

#[test]
fn one_file_deploys_production_and_staging_side_by_side() {
    let s = Server::start();
    let dir = app_dir(TOML);
    let path = dir.path().to_str().unwrap();

    // An environment the file does not define: refused, nothing deployed.
    let out = s.wharf(&["deploy", path, "--env", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("unknown environment `nope`") && err.contains("it defines `staging`"), "{err}");
    assert!(err.contains("nothing was deployed"), "{err}");
    assert!(app_names(&s).is_empty(), "nothing deployed");

    s.ok(&["deploy", path]);
    s.ok(&["deploy", path, "--env", "staging"]);
    assert_eq!(app_names(&s), ["shop", "shop-staging"]);

    // Each app answers on its own host, with its own variables; REGION comes from the base.
    let mode = |host: &str| wait_for(&format!("{host} answers"), LONG, || var(&s, host, "MODE"));
    assert_eq!(mode("shop.example.com"), "production");
    assert_eq!(mode("staging.shop.example.com"), "staging");
    assert_eq!(var(&s, "staging.shop.example.com", "REGION").as_deref(), Some("eu"));
    assert_eq!(var(&s, "staging.shop.example.com", "WHARF_APP").as_deref(), Some("shop-staging"));
    // The staging route replaces the base's: production's host stays production's.
    for _ in 0..10 {
        assert_eq!(var(&s, "shop.example.com", "MODE").as_deref(), Some("production"));
    }

    wait_for("each app's replicas run", LONG, || {
        (tasks_of(&s, "shop") == 2 && tasks_of(&s, "shop-staging") == 1).then_some(())
    });

    // The server read the release for the same environment, and says so.
    let staging = s.json(&["deployments", "--app", "shop-staging", "--json"]);
    assert_eq!(staging[0]["env"], "staging", "{staging}");
    let shop = s.json(&["deployments", "--app", "shop", "--json"]);
    assert!(shop[0].get("env").is_none(), "{shop}");
    // Planning the environment again changes nothing; planning it as the base would be another app.
    let plan = s.ok(&["plan", path, "--env", "staging"]);
    assert!(plan.contains("shop-staging: nothing would change"), "{plan}");

    // The server refuses it too, whatever the client checked: 422, its diagnostic, nothing changed.
    let tar = std::process::Command::new("tar").args(["czf", "-", "-C", path, "wharf.toml"]).output().unwrap();
    assert!(tar.status.success(), "{}", String::from_utf8_lossy(&tar.stderr));
    for call in ["/v1/deploy?env=nope", "/v1/plan?env=nope"] {
        let (status, body) =
            http_request(&s.api_addr(), "POST", "localhost", call, Some(&s.token()), &tar.stdout).expect("an answer");
        assert_eq!(status, 422, "{call}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let d = &body["error"]["diagnostics"][0];
        assert_eq!(d["message"], "unknown environment `nope`: the file has no [env.nope]", "{body}");
        assert_eq!(d["hint"], "it defines `staging`", "{body}");
    }
    let out = s.wharf(&["deploy", path, "--env", "nope"]);
    assert!(!out.status.success());
    assert_eq!(s.json(&["deployments", "--app", "shop-staging", "--json"]).as_array().unwrap().len(), 1);
    assert_eq!(s.json(&["deployments", "--app", "shop", "--json"]).as_array().unwrap().len(), 1);

    // A rollback of the staging app stays the staging app's, and says so.
    write_toml(&dir, &TOML.replace("MODE = \"staging\"", "MODE = \"staging-2\""));
    s.ok(&["deploy", path, "--env", "staging"]);
    assert_eq!(var(&s, "staging.shop.example.com", "MODE").as_deref(), Some("staging-2"));
    s.ok(&["rollback", "web", "--app", "shop-staging"]);
    assert_eq!(var(&s, "staging.shop.example.com", "MODE").as_deref(), Some("staging"));
    let staging = s.json(&["deployments", "--app", "shop-staging", "--json"]);
    let last = &staging[2];
    assert_eq!((&last["manual"], &last["env"]), (&serde_json::json!(true), &serde_json::json!("staging")), "{staging}");
    assert_eq!(var(&s, "shop.example.com", "MODE").as_deref(), Some("production"), "production untouched");
}

/// `wharf check` checks every environment, and with `--env` shows one.
#[test]
fn check_finds_a_broken_environment_and_shows_the_one_asked_for() {
    let dir = app_dir(TOML);
    let path = dir.path().to_str().unwrap();
    let check = |args: &[&str]| {
        let out = std::process::Command::new(WHARF).arg("check").arg(path).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = check(&[]);
    assert!(ok && out.contains("ok: app `shop`"), "{out}");
    let (ok, out, _) = check(&["--env", "staging"]);
    assert!(ok && out.contains("ok: app `shop-staging`") && out.contains("1 routes"), "{out}");
    let (ok, _, err) = check(&["--env", "nope"]);
    assert!(!ok && err.contains("unknown environment `nope`"), "{err}");

    // A typo in the overlay fails the plain check too, at its line in the overlay.
    write_toml(&dir, &TOML.replace("replicas = 1", "replica = 1"));
    let (ok, _, err) = check(&[]);
    assert!(!ok, "{err}");
    assert!(err.contains("wharf.toml:14:1: error: unknown key `replica` in [env.staging.service.web]"), "{err}");
}

/// `wharf up --env staging` runs the staging app.
#[test]
fn up_runs_the_environment_asked_for() {
    let dir = app_dir(TOML);
    let stderr_path = dir.path().join("up.stderr");
    let mut child = std::process::Command::new(WHARF)
        .args(["up", dir.path().to_str().unwrap(), "--env", "staging", "-q"])
        .args(["--http", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the staging app to be ready", LONG, || read().contains("shop-staging is ready").then_some(()))
    }));
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(ready.is_ok(), "{}", read());
    assert!(status.success(), "{status}: {}", read());
}
