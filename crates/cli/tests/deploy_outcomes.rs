//! What a deployment's outcome tells the user and the next command: the
//! rollback target, health-check results while waiting, release output.

mod common;

use std::time::Duration;

use common::*;

/// A demo `api` service; `extra` goes into its table.
fn app(version: &str, extra: &str) -> String {
    format!(
        "app = \"outcomes\"\n\n[service.api]\ncommand = [\"wharf\", \"demo\", \"--name\", \"api\"]\nport = 8080\n\
         env = {{ DEMO_VERSION = \"{version}\" }}\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n{extra}\n\n\
         [route]\n\"/\" = \"api\"\n"
    )
}

fn version(s: &Server) -> String {
    let (code, body) = s.get("x", "/version").expect("an answer");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["version"].as_str().unwrap().to_string()
}

fn write(dir: &tempfile::TempDir, toml: &str) {
    std::fs::write(dir.path().join("wharf.toml"), toml).unwrap();
}

#[test]
fn rollback_skips_a_revision_that_was_rolled_back_and_revisions_show_outcomes() {
    let s = Server::start();
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    // v2 exits a second after it started, during its bake: rolled back to v1.
    write(
        &dir,
        &app("2", "deploy = { bake = \"5s\" }")
            .replace("DEMO_VERSION = \"2\"", "DEMO_VERSION = \"2\", DEMO_EXIT_AFTER = \"1s\""),
    );
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(version(&s), "1");
    write(&dir, &app("3", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    assert_eq!(version(&s), "3");

    let revs = s.json(&["revisions", "api", "--json"]);
    let outcome = |n: usize| revs[n]["outcome"].as_str().unwrap_or("none").to_string();
    assert_eq!([outcome(0), outcome(1), outcome(2)], ["succeeded", "rolled_back", "succeeded"], "{revs}");
    assert!(revs[1]["reason"].as_str().unwrap_or("").contains("exited"), "why @2 was rolled back: {revs}");
    assert_eq!(revs[1]["healthy"], false, "{revs}");
    let table = s.ok(&["revisions", "api"]);
    assert!(table.contains("rolled back (#2)") && table.contains("@2: "), "{table}");

    // The default target is the last revision that was live and healthy: @1, not @2.
    let out = s.wharf(&["rollback", "api"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("@3 → @1"), "{err}");
    assert_eq!(version(&s), "1");
}

#[test]
fn a_never_healthy_deploy_shows_its_health_checks_and_names_the_503_in_its_reason() {
    let s = Server::start();
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    let sick = app("2", "deploy = { bake = \"0s\", deadline = \"4s\" }")
        .replace("DEMO_VERSION = \"2\"", "DEMO_VERSION = \"2\", DEMO_FAIL_HEALTH = \"1\"");
    write(&dir, &sick);
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // While waiting: the task's last health check, as progress...
    assert!(err.contains("not healthy yet: GET /health answered 503"), "{err}");
    // ...and as an event in the log stream.
    let events = s.events("task.health_failing");
    assert!(events.iter().any(|e| e.contains("answered 503")), "{events:?}");
    // The failure reason names it too.
    let history = s.json(&["deployments", "--json"]);
    let reason = history.as_array().unwrap().last().unwrap()["reason"].as_str().unwrap_or("").to_string();
    assert!(
        reason.contains("api@2: 1 of 1 new tasks not healthy")
            && reason.contains("last health check: GET /health answered 503"),
        "{reason}"
    );
    assert!(err.contains("last health check: GET /health answered 503"), "{err}");
    assert_eq!(version(&s), "1");
}

#[test]
fn a_failed_release_command_shows_its_last_output_lines() {
    let s = Server::start();
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    let release = "release = [\"sh\", \"-c\", \"for i in $(seq 1 30); do echo migration step $i; done; exit 3\"]\n\
                   deploy = { bake = \"0s\" }";
    write(&dir, &app("2", release));
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let history = s.json(&["deployments", "--json"]);
    let reason = history.as_array().unwrap().last().unwrap()["reason"].as_str().unwrap_or("").to_string();
    for text in [&reason, &err.to_string()] {
        assert!(text.contains("exit code 3") && text.contains("its last output"), "{text}");
        assert!(text.contains("migration step 11") && text.contains("migration step 30"), "the last 20 lines: {text}");
        assert!(!text.contains("migration step 10\n"), "only the last 20 lines: {text}");
    }
}

#[test]
fn an_oom_killed_deploy_says_out_of_memory_with_the_limit() {
    let s = Server::start();
    let limits = s.json(&["status", "--json"])["limits"].as_str().unwrap_or("").to_string();
    if limits.starts_with("none") {
        eprintln!(
            "skipped: no cgroup memory limits on this host ({limits}); the reason's wording is unit-tested in control"
        );
        return;
    }
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    let hungry = app("2", "memory = \"32MiB\"\ndeploy = { bake = \"0s\", deadline = \"20s\" }")
        .replace("DEMO_VERSION = \"2\"", "DEMO_VERSION = \"2\", DEMO_ALLOC_MIB = \"128\"");
    write(&dir, &hungry);
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let history = s.json(&["deployments", "--json"]);
    let reason = history.as_array().unwrap().last().unwrap()["reason"].as_str().unwrap_or("").to_string();
    assert!(reason.contains("killed: out of memory (memory limit 32MiB)"), "{reason}");
    assert!(!reason.contains("signal 9"), "{reason}");
}

#[test]
fn a_rollback_after_a_new_task_exits_keeps_serving_from_the_draining_old_task() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let s = Server::start();
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    let old: Vec<(String, u64)> = s
        .tasks()
        .iter()
        .filter(|t| t["service"] == "api")
        .map(|t| (t["id"].as_str().unwrap().to_string(), t["pid"].as_u64().unwrap()))
        .collect();
    assert_eq!(old.len(), 1);
    let addr = s.proxy_addr();
    // A long request keeps the old task draining after v2 takes over.
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || http_get(&addr, "x", "/sleep?ms=6000", None))
    };
    wait_for("the slow request on the old task", Duration::from_secs(10), || {
        s.tasks().iter().any(|t| t["id"] == old[0].0.as_str() && t["in_flight"].as_u64() > Some(0)).then_some(())
    });
    // Continuous requests throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (addr, stop, bad) = (addr.clone(), stop.clone(), bad.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                match http_get(&addr, "x", "/version", None) {
                    Some((200, _)) => {}
                    other => bad.lock().unwrap().push(format!("{other:?}")),
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    // v2 exits 1.5 s after it became ready: an automatic rollback while the old task drains.
    let exits = app("2", "deploy = { bake = \"10s\" }")
        .replace("DEMO_VERSION = \"2\"", "DEMO_VERSION = \"2\", DEMO_EXIT_AFTER = \"1500ms\"");
    write(&dir, &exits);
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    stop.store(true, Ordering::Relaxed);
    let sent = load.join().unwrap();
    let slow = slow.join().unwrap();
    assert_eq!(slow.map(|(code, _)| code), Some(200), "the slow request finished on the old task");
    let bad = bad.lock().unwrap().clone();
    assert!(sent > 20 && bad.is_empty(), "{} of {sent} requests failed: {bad:?}", bad.len());
    // The old task was taken back, not replaced: same task, same process.
    let now: Vec<(String, u64)> = s
        .tasks()
        .iter()
        .filter(|t| t["service"] == "api")
        .map(|t| (t["id"].as_str().unwrap().to_string(), t["pid"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(now, old, "{err}");
    assert!(!s.events("task.reclaimed").is_empty());
    assert_eq!(version(&s), "1");
}

#[test]
fn destroy_stops_an_apps_tasks_and_removes_it_and_a_new_deploy_starts_from_scratch() {
    let s = Server::start();
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    write(&dir, &app("2", "deploy = { bake = \"0s\" }"));
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
    write(&dir, &app("3", "deploy = { bake = \"0s\" }"));
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
    write(&dir, &stuck);
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
    write(&dir, &app("2", "deploy = { bake = \"0s\" }"));
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
    write(&dir, &app("3", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    assert_eq!(version(&s), "3");
    assert_eq!(s.json(&["revisions", "api", "--json"]).as_array().unwrap().len(), 1);
}
