//! End to end: the real `wharf` binary, real child processes, real HTTP.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

const LONG: Duration = Duration::from_secs(60);

fn demo_app(name: &str, version: &str, replicas: u32) -> String {
    demo_toml(name, version, replicas, true)
}

fn body_of(s: &Server, path: &str) -> Option<String> {
    s.get("example.test", path).filter(|(code, _)| *code == 200).map(|(_, b)| b)
}

#[test]
fn example_is_served_end_to_end() {
    let s = Server::start();
    let example = repo_root().join("examples/convergence");
    let out = s.deploy(&example);
    assert!(out.is_empty() || out.contains("convergence"), "{out}");
    let body = wait_for("/api/version through the proxy", LONG, || body_of(&s, "/api/version"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "api");
    assert_eq!(v["version"], "2.1.0", "the service's env reaches the task");
    let home = body_of(&s, "/").unwrap();
    assert!(home.starts_with("hello from app"), "{home}");
    // The worker has no route but runs, and its output is in the stream.
    let worker_lines = wait_for("worker output in the log stream", LONG, || {
        let out = s.ok(&["logs", "worker", "--source", "stdout"]);
        out.contains("worker: worker started").then_some(out)
    });
    assert!(worker_lines.contains("worker"), "{worker_lines}");
    let status = s.json(&["status", "--json"]);
    let app = &status["apps"][0];
    assert_eq!(app["name"], "convergence");
    let services: BTreeSet<String> =
        app["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(services, BTreeSet::from(["api".into(), "app".into(), "worker".into()]));
    // Every task got the wharf variables and its own port.
    let tasks = s.tasks();
    assert_eq!(tasks.len(), 3);
    for t in &tasks {
        let env = environ(t["pid"].as_u64().unwrap() as u32);
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("WHARF_APP").as_deref(), Some("convergence"));
        assert_eq!(get("WHARF_SERVICE").as_deref(), t["service"].as_str());
        assert_eq!(get("WHARF_TASK").as_deref(), t["id"].as_str());
        assert_eq!(get("WHARF_REVISION"), Some(t["revision"].to_string()));
        if t["service"] != "worker" {
            assert_eq!(get("PORT"), Some(t["port"].to_string()));
        }
    }
}

#[test]
fn routes_by_host_and_prefix_and_answers_404_otherwise() {
    let s = Server::start();
    let dir = app_dir(
        r#"app = "hosts"
[service.site]
command = ["wharf", "demo", "--name", "site"]
port = 3000
health = { path = "/health", interval = "1s" }
[service.api]
command = ["wharf", "demo", "--name", "api"]
port = 3001
health = { path = "/health", interval = "1s" }
[route]
"shop.example.com" = "site"
"shop.example.com/api" = "api"
"#,
    );
    s.deploy(dir.path());
    let name = |host: &str, path: &str| {
        let addr = s.proxy_addr();
        http_get(&addr, host, path, None)
            .map(|(code, body)| (code, body.split_whitespace().nth(2).unwrap_or("").to_string()))
    };
    wait_for("site to serve", LONG, || name("shop.example.com", "/").filter(|(c, _)| *c == 200));
    wait_for("api to serve", LONG, || name("shop.example.com", "/api").filter(|(c, _)| *c == 404 || *c == 200));
    assert_eq!(name("Shop.Example.COM:80", "/").unwrap(), (200, "site".into()), "host normalised");
    // Without strip_prefix the api sees /api/... and answers its own 404 (not the proxy's page).
    let (code, body) = http_get(&s.proxy_addr(), "shop.example.com", "/api/health", None).unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(!body.contains("No route"), "the api answered, not the proxy: {body}");
    let (code, body) = http_get(&s.proxy_addr(), "other.example.com", "/", None).unwrap();
    assert_eq!(code, 404);
    assert!(body.contains("No route"), "{body}");
}

#[test]
fn balancing_spreads_over_replicas() {
    let s = Server::start();
    let dir = app_dir(&demo_app("spread", "1", 3));
    s.deploy(dir.path());
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..90 {
        let body = wait_for("api answer", LONG, || body_of(&s, "/api/version"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        *seen.entry(v["task"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    // Two random choices among idle tasks: each of 3 gets ~30 of 90
    // (fewer than 10 has a probability below 1e-5).
    assert_eq!(seen.len(), 3, "every replica got requests: {seen:?}");
    assert!(seen.values().all(|n| *n >= 10), "spread is even: {seen:?}");
}

#[test]
fn killed_task_is_restarted_and_reported() {
    let s = Server::start();
    let dir = app_dir(&demo_app("crashy", "1", 1));
    s.deploy(dir.path());
    let api = |s: &Server| s.tasks().into_iter().find(|t| t["service"] == "api").unwrap();
    let before = api(&s);
    let pid = before["pid"].as_u64().unwrap() as u32;
    signal(pid, libc::SIGKILL);
    let after = wait_for("the task to be restarted", LONG, || {
        let t = api(&s);
        (t["pid"].as_u64() != Some(pid as u64) && t["restarts"].as_u64() == Some(1)).then_some(t)
    });
    assert_eq!(after["id"], before["id"], "the same task, restarted in place");
    wait_for("an exit event naming the signal", LONG, || {
        s.events("task.exited").iter().find(|m| m.contains("SIGKILL") && m.contains("restarting in")).cloned()
    });
    wait_for("a restart event", LONG, || s.events("task.restarted").first().cloned());
    assert_eq!(s.events("task.restarted").len(), 1, "first starts are not restarts");
    assert_eq!(s.events("task.started").len(), 3, "one start per task");
    wait_for("the restarted task to serve", LONG, || body_of(&s, "/api/health"));
}

#[test]
fn task_over_its_memory_limit_is_killed_and_reported() {
    let s = Server::start();
    let dir = app_dir(
        r#"app = "hungry"
[service.hog]
command = ["wharf", "demo", "worker", "--name", "hog", "--alloc-mib", "200"]
memory = "64MiB"
"#,
    );
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    let limited = s.json(&["status", "--json"])["limits"].as_str().unwrap().to_string();
    if limited.starts_with("none") {
        // Without writable cgroups the server must say so as an event.
        wait_for("limits-unavailable event", LONG, || s.events("driver.limits_unavailable").first().cloned());
        return;
    }
    let msg = wait_for("an out-of-memory event", LONG, || s.events("task.oom").first().cloned());
    assert!(msg.contains("64 MiB"), "{msg}");
}

#[test]
fn unchanged_deploy_is_a_no_op_and_a_change_makes_a_new_revision() {
    let s = Server::start();
    let dir = app_dir(&demo_app("revs", "1", 1));
    s.deploy(dir.path());
    let first = s.json(&["status", "--json"]);
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing changed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.path().join("wharf.toml"), demo_app("revs", "2", 1)).unwrap();
    s.deploy(dir.path());
    let second = s.json(&["status", "--json"]);
    let rev = |v: &serde_json::Value, svc: &str| {
        v["apps"][0]["services"].as_array().unwrap().iter().find(|s| s["name"] == svc).unwrap()["revision"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rev(&first, "api"), 1);
    assert_eq!(rev(&second, "api"), 2, "api's env changed");
    assert_eq!(rev(&second, "app"), 1, "app is unchanged");
    let v: serde_json::Value = serde_json::from_str(&wait_for("v2", LONG, || body_of(&s, "/api/version"))).unwrap();
    assert_eq!(v["version"], "2");
    assert_eq!(v["revision"], "2");
    // The old api task is gone once the new one took over.
    let api_tasks: Vec<_> = s.tasks().into_iter().filter(|t| t["service"] == "api").collect();
    assert_eq!(api_tasks.len(), 1);
    assert_eq!(api_tasks[0]["revision"], 2);
}

#[test]
fn broken_configs_are_rejected_precisely_and_the_app_is_untouched() {
    let s = Server::start();
    let dir = app_dir(&demo_app("steady", "1", 1));
    s.deploy(dir.path());
    wait_for("app serving", LONG, || body_of(&s, "/api/health"));
    let tasks_before: Vec<_> = s.tasks().iter().map(|t| (t["id"].clone(), t["pid"].clone())).collect();
    let corpus = repo_root().join("crates/spec/tests/broken");
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "corpus has {} files", cases.len());
    for case in &cases {
        let expected = std::fs::read_to_string(case.with_extension("expected")).unwrap();
        let mut lines = expected.lines();
        let position = lines.next().unwrap().trim().to_string();
        let message = lines.next().unwrap_or("").trim().to_string();
        let bad = tempfile::tempdir().unwrap();
        std::fs::copy(case, bad.path().join("wharf.toml")).unwrap();
        // Through the CLI (validated before upload)...
        let out = s.wharf(&["deploy", bad.path().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case:?} was accepted");
        assert!(err.contains(&format!("wharf.toml:{position}: error")), "{case:?}: expected {position} in:\n{err}");
        assert!(err.contains(&message), "{case:?}: expected {message:?} in:\n{err}");
        // ...and straight to the API, which validates again.
        let archive = tar_gz(bad.path());
        let (code, body) =
            http_request(&s.api_addr(), "POST", "api", "/v1/deploy", Some(&s.token()), &archive).unwrap();
        assert_eq!(code, 422, "{case:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["kind"], "invalid_spec");
        let d = &v["error"]["diagnostics"][0];
        assert_eq!(format!("{}:{}", d["line"], d["column"]), position, "{case:?}: {body}");
        assert_eq!(d["file"], "wharf.toml");
    }
    let tasks_after: Vec<_> = s.tasks().iter().map(|t| (t["id"].clone(), t["pid"].clone())).collect();
    assert_eq!(tasks_before, tasks_after, "rejected deploys changed nothing");
    assert!(body_of(&s, "/api/health").is_some(), "still serving");
    assert!(!s.events("deploy.rejected").is_empty());
}

/// A .tar.gz of a directory, made by the system's tar (not by wharf).
fn tar_gz(dir: &std::path::Path) -> Vec<u8> {
    let out = std::process::Command::new("tar").arg("-czf").arg("-").arg("-C").arg(dir).arg(".").output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn server_killed_with_sigkill_converges_on_restart() {
    let mut s = Server::start();
    let dir = app_dir(&demo_app("durable", "1", 2));
    s.deploy(dir.path());
    wait_for("serving", LONG, || body_of(&s, "/api/health"));
    let before: BTreeSet<(String, u64)> =
        s.tasks().iter().map(|t| (t["id"].as_str().unwrap().to_string(), t["pid"].as_u64().unwrap())).collect();
    assert_eq!(before.len(), 4, "2 api + app + worker");
    s.kill9();
    // Tasks keep running without their server.
    for (_, pid) in &before {
        assert!(alive(*pid as u32), "task {pid} died with the server");
    }
    let restarted = Instant::now();
    s.spawn();
    wait_for("serving again after restart", LONG, || body_of(&s, "/api/health"));
    eprintln!("serving again {} ms after the restart", restarted.elapsed().as_millis());
    let after: BTreeSet<(String, u64)> =
        s.tasks().iter().map(|t| (t["id"].as_str().unwrap().to_string(), t["pid"].as_u64().unwrap())).collect();
    assert_eq!(before, after, "the same tasks, re-adopted, none duplicated");
    assert!(s.tasks().iter().all(|t| t["adopted"] == true));
    let mut procs = s.task_processes();
    procs.sort();
    let mut expected: Vec<u32> = before.iter().map(|(_, p)| *p as u32).collect();
    expected.sort();
    assert_eq!(procs, expected, "no process runs unsupervised");
    // Adopted tasks still stream their output.
    let seq_before = s.ok(&["logs", "worker", "-n", "1", "--json"]);
    wait_for("new worker output after restart", LONG, || {
        let now = s.ok(&["logs", "worker", "-n", "1", "--json"]);
        (now != seq_before).then_some(())
    });
    // The desired state is intact: a deploy of the same directory changes nothing.
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing changed"));
}

#[test]
fn sigterm_stops_every_task_gracefully() {
    let mut s = Server::start();
    let dir = app_dir(&demo_app("graceful", "1", 1));
    s.deploy(dir.path());
    let pids: Vec<u32> = s.tasks().iter().map(|t| t["pid"].as_u64().unwrap() as u32).collect();
    assert_eq!(pids.len(), 3);
    let status = s.terminate();
    assert!(status.success(), "server exit: {status:?}");
    for pid in pids {
        assert!(!alive(pid), "task {pid} still running after the server stopped");
    }
    // The stream's segments hold one JSON record per frame.
    let mut log = String::new();
    for e in std::fs::read_dir(s.data.join("logs/segments")).unwrap() {
        log += &String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap());
    }
    assert!(log.contains("worker: stopping"), "the worker saw its stop signal");
    assert!(log.contains("task.stopped"));
}

#[test]
fn api_rejects_missing_or_wrong_tokens_and_changes_nothing() {
    let s = Server::start();
    let api = s.api_addr();
    for path in ["/v1/status", "/v1/tasks", "/v1/logs", "/v1/events", "/v1/nope"] {
        let (code, body) = http_get(&api, "api", path, None).unwrap();
        assert_eq!(code, 401, "{path}: {body}");
        assert!(body.contains("\"unauthorized\""), "{body}");
        let (code, _) = http_get(&api, "api", path, Some("wrong")).unwrap();
        assert_eq!(code, 401, "{path} with a wrong token");
    }
    let dir = app_dir(&demo_app("sneaky", "1", 1));
    let archive = tar_gz(dir.path());
    let (code, _) = http_request(&api, "POST", "api", "/v1/deploy", None, &archive).unwrap();
    assert_eq!(code, 401);
    let (code, _) = http_request(&api, "POST", "api", "/v1/deploy", Some("0".repeat(64).as_str()), &archive).unwrap();
    assert_eq!(code, 401);
    let status = s.json(&["status", "--json"]);
    assert_eq!(status["apps"], serde_json::json!([]), "nothing was deployed");
    assert!(s.tasks().is_empty());
    // The token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.data.join("token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // And the CLI says what to do.
    let out = std::process::Command::new(WHARF)
        .args(["status", "--server", &format!("http://{api}"), "--token", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_and_schema() {
    let example = repo_root().join("examples/convergence");
    let out = std::process::Command::new(WHARF).arg("check").arg(&example).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 services"));
    let bad = app_dir("app = \"x\"\n[service.web]\ncomand = [\"x\"]\n");
    let out = std::process::Command::new(WHARF).arg("check").arg(bad.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wharf.toml:3:1"), "{err}");
    assert!(err.contains("did you mean `command`"), "{err}");
    let out = std::process::Command::new(WHARF).args(["check", "--json"]).arg(bad.path()).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let out = std::process::Command::new(WHARF).arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["service"].is_object());
}

#[test]
fn up_serves_the_app_and_ctrl_c_stops_everything() {
    let dir = app_dir(&demo_app("upapp", "1", 1));
    let started = Instant::now();
    let child = std::process::Command::new(WHARF)
        .args(["up", "--http", "127.0.0.1:0", "--quiet"])
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stops `wharf up` (and so its tasks) even when an assertion fails.
    struct Up(std::process::Child);
    impl Drop for Up {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                signal(self.0.id(), libc::SIGINT);
                let _ = self.0.wait();
            }
        }
    }
    let mut child = Up(child);
    let data = dir.path().join(".wharf");
    let addr = wait_for("proxy.url", LONG, || std::fs::read_to_string(data.join("proxy.url")).ok());
    let addr = addr.trim().trim_start_matches("http://").to_string();
    wait_for("first 200", LONG, || http_get(&addr, "localhost", "/api/health", None).filter(|(c, _)| *c == 200));
    eprintln!("wharf up → first 200 in {} ms (debug build)", started.elapsed().as_millis());
    // The CLI in the app directory finds this server by itself.
    let out = std::process::Command::new(WHARF).arg("ps").current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ps = String::from_utf8_lossy(&out.stdout);
    assert!(ps.contains("upapp-api-1-"), "{ps}");
    let driver = std::fs::read_to_string(data.join("tasks/driver-id")).unwrap();
    // The api answering doesn't mean the app and the worker have started yet.
    let pids = wait_for("all three tasks running", LONG, || {
        let pids = pids_with_env("WHARF_DRIVER", Some(driver.trim()));
        (pids.len() == 3).then_some(pids)
    });
    signal(child.0.id(), libc::SIGINT);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    for pid in pids {
        assert!(!alive(pid), "task {pid} outlived `wharf up`");
    }
}

#[test]
fn logs_follow_prints_new_output_as_it_happens() {
    let s = Server::start();
    let dir = app_dir(&demo_app("follow", "1", 1));
    s.deploy(dir.path());
    wait_for("api serving", LONG, || body_of(&s, "/api/health"));
    let mut child = std::process::Command::new(WHARF)
        .arg("--data")
        .arg(&s.data)
        .args(["logs", "-f", "-n", "0", "api"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Output written after the follower started reaches it; other services' doesn't.
    let found = wait_for("the marker line in the follower", LONG, || {
        body_of(&s, "/api/log?text=follow-marker");
        body_of(&s, "/log?text=not-this-service");
        rx.recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|l| l.contains("follow-marker") || l.contains("not-this"))
    });
    assert!(found.contains("api: follow-marker #1"), "{found}");
    assert!(found.contains("api."), "prefixed by service and task: {found}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn only_the_last_ten_releases_are_kept() {
    let s = Server::start();
    let dir = app_dir(
        r#"app = "churn"
[service.web]
command = ["wharf", "demo", "--name", "web"]
port = 3000
health = { path = "/health", interval = "1s" }
deploy = { bake = "0s" }
[route]
"/" = "web"
"#,
    );
    for i in 0..12 {
        std::fs::write(dir.path().join("version.txt"), i.to_string()).unwrap();
        s.deploy(dir.path());
    }
    let releases = s.data.join("releases/churn");
    let kept: Vec<String> = std::fs::read_dir(&releases)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 10, "{kept:?}");
    let current = s.json(&["status", "--json"])["apps"][0]["release"].as_str().unwrap().to_string();
    assert!(kept.contains(&current), "the running release is kept");
    let rev = s.json(&["status", "--json"])["apps"][0]["services"][0]["revision"].as_u64().unwrap();
    assert_eq!(rev, 12, "each code change made a revision");
    // Tasks run in their release's directory, which holds the uploaded files.
    let v = wait_for("version file served by the task's cwd", LONG, || body_of(&s, "/env?key=WHARF_REVISION"));
    assert_eq!(v, "12");
    assert_eq!(std::fs::read_to_string(releases.join(&current).join("version.txt")).unwrap(), "11");
}

#[test]
fn a_following_client_does_not_keep_the_server_from_stopping() {
    let mut s = Server::start();
    let mut follower = std::process::Command::new(WHARF)
        .arg("--data")
        .arg(&s.data)
        .args(["logs", "-f"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    wait_for("the follower to end with the server", LONG, || follower.try_wait().ok().flatten());
}

#[test]
fn rollback_to_an_earlier_revision_without_a_failed_request() {
    let s = Server::start();
    let dir = app_dir(&demo_app("rb", "1", 2));
    s.deploy(dir.path());
    std::fs::write(dir.path().join("wharf.toml"), demo_app("rb", "2", 2)).unwrap();
    s.deploy(dir.path());
    let revs = s.json(&["revisions", "api", "--json"]);
    assert_eq!(revs.as_array().unwrap().len(), 2);
    assert_eq!(revs[1]["changes"], serde_json::json!(["env DEMO_VERSION"]), "{revs}");
    assert_eq!(revs[1]["current"], true);
    let table = s.ok(&["revisions", "api"]);
    assert!(table.contains("*@2") && table.contains("env DEMO_VERSION"), "{table}");
    // Traffic all through the rollback.
    let addr = s.proxy_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let load = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        let start = Instant::now();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
            match http_get(&addr, "a", "/api/version", None) {
                Some((200, _)) => ok += 1,
                other => failed.push(other),
            }
        }
        (ok, failed)
    });
    let out = s.wharf(&["rollback", "api"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("succeeded"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollback: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(3)]
    );
    let v: serde_json::Value = serde_json::from_str(&body_of(&s, "/api/version").unwrap()).unwrap();
    assert_eq!((v["version"].as_str(), v["revision"].as_str()), (Some("1"), Some("1")));
    assert_eq!(s.json(&["revisions", "api", "--json"])[0]["current"], true);
    let history = s.ok(&["deployments"]);
    assert!(history.contains("rollback of api: @2 → @1") && history.contains("succeeded"), "{history}");
    // Errors say what is wrong.
    let again = s.wharf(&["rollback", "api", "1"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already runs revision 1"));
    let missing = s.wharf(&["rollback", "api", "9"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no revision 9 (it has 1, 2)"));
}

#[test]
fn plan_shows_what_a_deploy_would_change_and_changes_nothing() {
    let s = Server::start();
    let dir = app_dir(&demo_app("planned", "1", 1));
    let path = dir.path().to_str().unwrap();
    let first = s.json(&["plan", path, "--json"]);
    assert!(first["services"].as_array().unwrap().iter().all(|s| s["action"] == "new"), "{first}");
    assert_eq!(first["routes_added"].as_array().unwrap().len(), 2);
    s.deploy(dir.path());
    assert!(s.ok(&["plan", path]).contains("nothing would change"));
    // Change api's env and replicas, drop the worker.
    let changed = demo_app("planned", "2", 3);
    let changed = &changed[..changed.find("[service.worker]").unwrap()];
    let changed =
        format!("{changed}[route]\n\"/api\" = {{ service = \"api\", strip_prefix = true }}\n\"/\" = \"app\"\n");
    std::fs::write(dir.path().join("wharf.toml"), changed).unwrap();
    let ids = |s: &Server| s.tasks().iter().map(|t| (t["id"].clone(), t["pid"].clone())).collect::<Vec<_>>();
    let before = ids(&s);
    let plan = s.json(&["plan", path, "--json"]);
    let by = |name: &str| plan["services"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(by("api")["action"], "changed");
    assert_eq!(by("api")["changes"], serde_json::json!(["env DEMO_VERSION"]));
    assert_eq!(by("api")["next_revision"], 2);
    assert_eq!(by("api")["replicas"], serde_json::json!([1, 3]));
    assert_eq!(by("app")["action"], "unchanged");
    assert_eq!(by("worker")["action"], "removed");
    let text = s.ok(&["plan", path]);
    assert!(text.contains("~ api: @1 → @2 (env DEMO_VERSION) (replicas 1 → 3)"), "{text}");
    assert!(text.contains("- worker@1: removed"), "{text}");
    // Nothing was changed by planning.
    assert_eq!(ids(&s), before);
    assert_eq!(s.json(&["revisions", "api", "--json"]).as_array().unwrap().len(), 1);
    // An invalid file is reported like a deploy would report it.
    std::fs::write(dir.path().join("wharf.toml"), "app = \"planned\"\n[service.api]\ncomand = [\"x\"]\n").unwrap();
    let out = s.wharf(&["plan", path]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wharf.toml:3:1"));
}
