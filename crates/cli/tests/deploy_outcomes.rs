//! What a deployment's outcome tells the user and the next command: the
//! rollback target, health-check results while waiting, a release command's
//! output, OOM kills; and a rollback that keeps serving from the old task.

mod common;

use std::time::Duration;

use common::*;

/// A demo `api` service; `extra` goes into its table.
fn app(version: &str, extra: &str) -> String {
    api_app("outcomes", version, extra)
}

#[test]
fn rollback_skips_a_revision_that_was_rolled_back_and_revisions_show_outcomes() {
    let s = Server::start();
    let dir = app_dir(&app("1", "deploy = { bake = \"0s\" }"));
    s.deploy(dir.path());
    // v2 exits a second after it started, during its bake: rolled back to v1.
    write_toml(
        &dir,
        &app("2", "deploy = { bake = \"5s\" }")
            .replace("DEMO_VERSION = \"2\"", "DEMO_VERSION = \"2\", DEMO_EXIT_AFTER = \"1s\""),
    );
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(version(&s), "1");
    write_toml(&dir, &app("3", "deploy = { bake = \"0s\" }"));
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
    write_toml(&dir, &sick);
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
    let release = "release = [\"sh\", \"-c\", \"for i in $$(seq 1 30); do echo migration step $$i; done; exit 3\"]\n\
                   deploy = { bake = \"0s\" }";
    write_toml(&dir, &app("2", release));
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
    write_toml(&dir, &hungry);
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let history = s.json(&["deployments", "--json"]);
    let reason = history.as_array().unwrap().last().unwrap()["reason"].as_str().unwrap_or("").to_string();
    assert!(reason.contains("killed: out of memory (memory limit 32MiB)"), "{reason}");
    assert!(!reason.contains("signal 9"), "{reason}");
    let exits = s.events("task.exited");
    assert!(exits.iter().any(|e| e.contains("was killed: out of memory (memory limit 32MiB)")), "{exits:?}");
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
        std::thread::spawn(move || http_get(&addr, "x", "/sleep?ms=8000", None))
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
    write_toml(&dir, &exits);
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
