//! `wharf destroy APP`: an app's tasks stop, its routes, services and history
//! go, a new deploy of the same name starts from scratch, and a server killed
//! in the middle finishes the job after its restart.

mod common;

use std::time::Duration;

use common::*;

/// A demo `api` service; `extra` goes into its table.
fn app(version: &str, extra: &str) -> String {
    api_app("outcomes", version, extra)
}

#[test]
fn destroy_stops_an_apps_tasks_and_removes_it_and_a_new_deploy_starts_from_scratch() {
    let s = Server::start();
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    write_toml(&dir, &app("2", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    let pids: Vec<u32> = s.tasks().iter().filter_map(|t| t["pid"].as_u64()).map(|p| p as u32).collect();
    assert!(!pids.is_empty());
    // Without a terminal and without --yes: refused, nothing changed.
    let out = s.wharf(&["destroy", "outcomes"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(version(&s), "2");

    let report = s.json(&["destroy", "outcomes", "--yes", "--json"]);
    assert_eq!(report["app"], "outcomes", "{report}");
    assert_eq!(report["services"], serde_json::json!(["api"]), "{report}");
    assert!(report["releases_kept"].as_u64() >= Some(1), "releases are kept without --purge: {report}");
    for pid in &pids {
        assert!(!alive(*pid), "task process {pid} is gone");
    }
    assert!(s.tasks().is_empty(), "{:?}", s.tasks());
    assert_eq!(s.get("x", "/version").map(|(code, _)| code), Some(404), "its route is gone");
    let status = s.json(&["status", "--json"]);
    assert_eq!(status["apps"], serde_json::json!([]), "{status}");
    assert!(!s.ok(&["events", "-n", "50"]).is_empty());

    // The same app deploys again from scratch: revision 1, a first deployment.
    write_toml(&dir, &app("3", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    assert_eq!(version(&s), "3");
    let revs = s.json(&["revisions", "api", "--json"]);
    assert_eq!(revs.as_array().unwrap().len(), 1, "{revs}");
    assert_eq!(revs[0]["number"], 1, "{revs}");
    let history = s.json(&["deployments", "--json"]);
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");

    // --purge deletes the releases too; an unknown app is a 404 with its name.
    let report = s.json(&["destroy", "outcomes", "--yes", "--purge", "--json"]);
    assert_eq!(report["purged"], true, "{report}");
    assert!(!s.data.join("releases").join("outcomes").exists(), "release files deleted");
    let out = s.wharf(&["destroy", "outcomes", "--yes"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no app `outcomes`"));
}

#[test]
fn destroy_is_refused_while_a_deployment_runs_unless_forced() {
    let s = Server::start();
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    // A deploy that never gets healthy keeps running for its deadline.
    let stuck = app("2", "deploy = { bake = \"0s\", deadline = \"60s\" }")
        .replace("DEMO_VERSION = \"2\"", "DEMO_VERSION = \"2\", DEMO_FAIL_HEALTH = \"1\"");
    write_toml(&dir, &stuck);
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    let out = s.wharf(&["destroy", "outcomes", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("in progress") && err.contains("--force"), "{err}");
    assert_eq!(version(&s), "1", "nothing changed");
    let report = s.json(&["destroy", "outcomes", "--yes", "--force", "--json"]);
    assert_eq!(report["aborted_deployment"], 2, "{report}");
    assert!(s.tasks().is_empty(), "{:?}", s.tasks());
    assert_eq!(s.json(&["status", "--json"])["apps"], serde_json::json!([]));
}

#[test]
fn a_server_killed_during_a_destroy_finishes_it_after_its_restart() {
    let mut s = Server::start();
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    write_toml(&dir, &app("2", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    let pids: Vec<u32> = s.tasks().iter().filter_map(|t| t["pid"].as_u64()).map(|p| p as u32).collect();
    // A long request keeps the task draining, so the destroy is under way when the server dies.
    let addr = s.proxy_addr();
    let slow = std::thread::spawn(move || http_get(&addr, "x", "/sleep?ms=5000", None));
    wait_for("the slow request", Duration::from_secs(10), || {
        s.tasks().iter().any(|t| t["in_flight"].as_u64() > Some(0)).then_some(())
    });
    let mut destroy = std::process::Command::new(WHARF)
        .arg("--data")
        .arg(&s.data)
        .args(["destroy", "outcomes", "--yes"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the destroy to be under way", Duration::from_secs(10), || {
        let status = s.json(&["status", "--json"]);
        (status["apps"] == serde_json::json!([]) && !s.tasks().is_empty()).then_some(())
    });
    s.kill9();
    let _ = destroy.wait();
    let _ = slow.join();
    s.spawn();
    wait_for("the destroy to finish after the restart", Duration::from_secs(30), || {
        (s.tasks().is_empty() && !s.events("app.destroyed").is_empty()).then_some(())
    });
    for pid in &pids {
        assert!(!alive(*pid), "task process {pid} is gone");
    }
    assert_eq!(s.json(&["status", "--json"])["apps"], serde_json::json!([]));
    // Its history went with it: the next deploy is revision 1 again.
    write_toml(&dir, &app("3", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    assert_eq!(version(&s), "3");
    assert_eq!(s.json(&["revisions", "api", "--json"]).as_array().unwrap().len(), 1);
}

#[test]
fn an_app_whose_first_deploy_failed_can_be_destroyed() {
    let s = Server::start();
    let crashing = app("1", "deploy = { deadline = \"5s\" }")
        .replace("DEMO_VERSION = \"1\"", "DEMO_VERSION = \"1\", DEMO_CRASH_AT_START = \"1\"");
    let dir = app_dir(&crashing);
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!s.tasks().is_empty(), "its task keeps crash-looping");
    s.ok(&["destroy", "outcomes", "--yes"]);
    assert!(s.tasks().is_empty(), "{:?}", s.tasks());
    assert_eq!(s.json(&["status", "--json"])["apps"], serde_json::json!([]));
}
