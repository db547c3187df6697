//! Deployment steps one at a time: the release command, one deployment at a
//! time, and a server killed (-9) in the middle of each step.

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// A demo `api` service; `extra` goes into its table.
fn app(version: &str, extra: &str) -> String {
    api_app("steps", version, extra)
}

fn last_deployment(s: &Server) -> serde_json::Value {
    s.json(&["deployments", "--json"]).as_array().unwrap().last().unwrap().clone()
}

fn api_tasks(s: &Server) -> Vec<serde_json::Value> {
    s.tasks().into_iter().filter(|t| t["service"] == "api").collect()
}

#[test]
fn the_release_command_runs_before_traffic_moves_and_a_failed_one_moves_nothing() {
    let s = Server::start();
    let dir = app_dir(&app("1", ""));
    s.deploy(dir.path());
    // A release that writes a marker with the new revision's environment, requests held meanwhile.
    // Where the task (run as the task user) may write.
    let out = writable_tempdir();
    let marker = out.path().join("migrated");
    let release = format!(
        "release = [\"sh\", \"-c\", \"echo migrating $WHARF_REVISION; echo $DEMO_VERSION > {}\"]\n\
         deploy = {{ release_pause = true, bake = \"0s\" }}",
        marker.display()
    );
    std::fs::write(dir.path().join("wharf.toml"), app("2", &release)).unwrap();
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("running the release command"), "{err}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "2", "ran with the new revision's env");
    assert_eq!(version(&s), "2");
    assert!(s.json(&["status", "--json"])["apps"][0]["services"][0]["paused"] == false, "resumed");
    let logs = s.ok(&["logs", "-n", "1000"]);
    assert!(logs.contains("migrating 2"), "release output is in the stream: {logs}");
    // A failing release: nothing moves, and the deploy says why.
    let failing = "release = [\"sh\", \"-c\", \"echo cannot migrate >&2; exit 7\"]\ndeploy = { bake = \"0s\" }";
    let with_route = app("3", failing).replace("\"/\" = \"api\"", "\"/\" = \"api\"\n\"/new\" = \"api\"");
    std::fs::write(dir.path().join("wharf.toml"), with_route).unwrap();
    let before: Vec<_> = api_tasks(&s).iter().map(|t| t["id"].clone()).collect();
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("exit code 7") && err.contains("traffic never moved"), "{err}");
    assert_eq!(version(&s), "2");
    let after: Vec<_> = api_tasks(&s).iter().map(|t| t["id"].clone()).collect();
    assert_eq!(before, after, "no task was started or stopped");
    assert_eq!(last_deployment(&s)["state"], "failed");
    let routes = s.json(&["status", "--json"])["apps"][0]["routes"].clone();
    assert_eq!(routes.as_array().unwrap().len(), 1, "the route of the failed deploy is gone: {routes}");
    assert_eq!(s.json(&["status", "--json"])["apps"][0]["services"][0]["revision"], 2);
}

#[test]
fn a_second_deploy_is_refused_while_one_runs_and_rollback_aborts_it() {
    let s = Server::start();
    let dir = app_dir(&app("1", ""));
    s.deploy(dir.path());
    std::fs::write(dir.path().join("wharf.toml"), app("2", "deploy = { strategy = \"blue-green\", bake = \"60s\" }"))
        .unwrap();
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    wait_for("the switch", LONG, || (last_deployment(&s)["step"] == "bake").then_some(()));
    assert_eq!(version(&s), "2");
    // The old set waits on standby, out of the pool.
    let status = s.json(&["status", "--json"]);
    assert_eq!(status["apps"][0]["services"][0]["standby"], 1, "{status}");
    std::fs::write(dir.path().join("wharf.toml"), app("3", "")).unwrap();
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("steps#2 is still in progress") && err.contains("wharf rollback"), "{err}");
    assert_eq!(s.json(&["revisions", "api", "--json"]).as_array().unwrap().len(), 2, "no revision was made");
    // Rollback to another revision than the one before is refused while it runs.
    let out = s.wharf(&["rollback", "api", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a revision aborts it"));
    // `wharf rollback` aborts it: an instant switch back to the standby set.
    let standby: Vec<_> = api_tasks(&s).iter().filter(|t| t["revision"] == 1).map(|t| t["id"].clone()).collect();
    let out = s.wharf(&["rollback", "api"]);
    assert!(!out.status.success(), "a rolled back deployment is not a success");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rolled back"));
    assert_eq!(version(&s), "1");
    let now: Vec<_> = api_tasks(&s).iter().filter(|t| t["revision"] == 1).map(|t| t["id"].clone()).collect();
    assert_eq!(standby, now, "the same tasks serve again: nothing was restarted");
    wait_for("the new set to stop", LONG, || (api_tasks(&s).len() == 1).then_some(()));
}

#[test]
fn a_server_killed_during_the_bake_resumes_it() {
    let mut s = Server::start();
    let dir = app_dir(&app("1", ""));
    s.deploy(dir.path());
    std::fs::write(dir.path().join("wharf.toml"), app("2", "deploy = { strategy = \"blue-green\", bake = \"4s\" }"))
        .unwrap();
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    wait_for("the switch", LONG, || (last_deployment(&s)["step"] == "bake").then_some(()));
    s.kill9();
    s.spawn();
    // The routing after the restart is the bake's: the new set only.
    wait_for("the new revision to serve", LONG, || (s.get("x", "/version")?.0 == 200).then_some(()));
    assert_eq!(version(&s), "2");
    let d = wait_for("the deployment to end", LONG, || {
        let d = last_deployment(&s);
        (d["state"] != "in_progress").then_some(d)
    });
    assert_eq!(d["state"], "succeeded", "{d}");
    wait_for("one task of the new revision, and nothing else", LONG, || {
        let t = api_tasks(&s);
        (t.len() == 1 && t[0]["revision"] == 2).then_some(())
    });
    assert_eq!(s.task_processes().len(), 1, "no orphaned or duplicate process");
}

#[test]
fn a_server_killed_during_the_rollout_completes_it_without_duplicates() {
    let mut s = Server::start();
    let dir = app_dir(&app("1", "replicas = 2"));
    s.deploy(dir.path());
    let slow = "replicas = 2\ndeploy = { bake = \"0s\" }\n";
    let text = app("2", slow).replace("DEMO_VERSION = \"2\"", "DEMO_VERSION = \"2\", DEMO_STARTUP_DELAY = \"2s\"");
    std::fs::write(dir.path().join("wharf.toml"), text).unwrap();
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    wait_for("a new task to start", LONG, || api_tasks(&s).iter().any(|t| t["revision"] == 2).then_some(()));
    s.kill9();
    s.spawn();
    let d = wait_for("the deployment to end", LONG, || {
        let d = last_deployment(&s);
        (d["state"] != "in_progress").then_some(d)
    });
    assert_eq!(d["state"], "succeeded", "{d}");
    wait_for("two tasks of the new revision, and nothing else", LONG, || {
        let t = api_tasks(&s);
        (t.len() == 2 && t.iter().all(|t| t["revision"] == 2)).then_some(())
    });
    assert_eq!(version(&s), "2");
    wait_for("no orphaned or duplicate process", LONG, || (s.task_processes().len() == 2).then_some(()));
}

#[test]
fn a_server_killed_during_the_release_fails_the_deploy_cleanly() {
    let mut s = Server::start();
    let dir = app_dir(&app("1", ""));
    s.deploy(dir.path());
    let release = "release = [\"sh\", \"-c\", \"echo release began; sleep 30\"]\ndeploy = { release_pause = true }";
    std::fs::write(dir.path().join("wharf.toml"), app("2", release)).unwrap();
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    wait_for("the release to run", LONG, || s.ok(&["logs", "-n", "1000"]).contains("release began").then_some(()));
    s.kill9();
    s.spawn();
    let d = wait_for("the deployment to end", LONG, || {
        let d = last_deployment(&s);
        (d["state"] != "in_progress").then_some(d)
    });
    assert_eq!(d["state"], "failed", "{d}\n{}", s.ok(&["logs", "--source", "event", "-n", "200"]));
    assert!(d["reason"].as_str().unwrap().contains("traffic never moved"), "{d}");
    assert_eq!(version(&s), "1", "the service was resumed and still runs its old revision");
    wait_for("only the service's task", LONG, || (s.task_processes().len() == 1).then_some(()));
}

#[test]
fn a_rolled_back_deploy_takes_its_route_changes_back_too() {
    let s = Server::start();
    let dir = app_dir(&app("1", ""));
    s.deploy(dir.path());
    let broken = app("2", "deploy = { deadline = \"3s\" }")
        .replace("DEMO_VERSION = \"2\"", "DEMO_VERSION = \"2\", DEMO_FAIL_HEALTH = \"1\"")
        .replace("\"/\" = \"api\"", "\"/\" = \"api\"\n\"/extra\" = \"api\"");
    std::fs::write(dir.path().join("wharf.toml"), broken).unwrap();
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("rolled back"), "{err}");
    assert!(err.contains("not ready within the 3s deadline"), "{err}");
    let routes = s.json(&["status", "--json"])["apps"][0]["routes"].clone();
    assert_eq!(routes.as_array().unwrap().len(), 1, "the route the failed deploy added is gone: {routes}");
    assert_eq!(version(&s), "1");
    // The same deploy without the fault goes through, route and all.
    let fixed = app("2", "").replace("\"/\" = \"api\"", "\"/\" = \"api\"\n\"/extra\" = \"api\"");
    std::fs::write(dir.path().join("wharf.toml"), fixed).unwrap();
    s.deploy(dir.path());
    assert_eq!(s.json(&["status", "--json"])["apps"][0]["routes"].as_array().unwrap().len(), 2);
}

#[test]
fn job_changes_are_planned_deployed_and_rolled_back_with_the_services() {
    let s = Server::start();
    let dir = app_dir(&app("1", ""));
    s.deploy(dir.path());
    let path = dir.path().to_str().unwrap();
    let job = "\n[job.nightly]\nschedule = \"0 3 * * *\"\ncommand = [\"true\"]\nservice = \"api\"\n";
    std::fs::write(dir.path().join("wharf.toml"), app("1", "") + job).unwrap();
    let plan = s.ok(&["plan", path]);
    assert!(plan.contains("+ job nightly: new"), "{plan}");
    let out = s.wharf(&["deploy", path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("jobs +nightly"), "a jobs-only deploy is a change: {err}");
    assert!(s.ok(&["jobs"]).contains("nightly"));
    // A deploy that fails takes its job removal back with it.
    let broken = app("2", "deploy = { deadline = \"3s\" }")
        .replace("DEMO_VERSION = \"2\"", "DEMO_VERSION = \"2\", DEMO_FAIL_HEALTH = \"1\"");
    std::fs::write(dir.path().join("wharf.toml"), broken).unwrap();
    let out = s.wharf(&["deploy", path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("jobs -nightly"), "{err}");
    assert!(s.ok(&["jobs"]).contains("nightly"), "the job is back after the rollback");
}
