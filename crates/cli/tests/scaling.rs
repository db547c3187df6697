//! Scaling by hand and one-off tasks (`wharf scale`, `wharf run`).

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

fn api_tasks(s: &Server) -> Vec<serde_json::Value> {
    s.tasks().into_iter().filter(|t| t["service"] == "api" && t["draining"] == false).collect()
}

#[test]
fn scale_persists_drains_on_the_way_in_and_survives_a_deploy_of_the_same_count() {
    let mut s = Server::start();
    let dir = app_dir(&demo_toml("sc", "1", 1, false));
    s.deploy(dir.path());
    let out = s.wharf(&["scale", "api=3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(api_tasks(&s).len(), 3, "scale waits until the tasks are there");
    let ready = s.json(&["status", "--json"])["apps"][0]["services"][0]["ready"].clone();
    assert_eq!(ready, 3);
    // A deploy of a file that still says 1 keeps the scaling; a new count in the file applies.
    std::fs::write(dir.path().join("wharf.toml"), demo_toml("sc", "2", 1, false)).unwrap();
    s.deploy(dir.path());
    assert_eq!(api_tasks(&s).len(), 3);
    assert!(api_tasks(&s).iter().all(|t| t["revision"] == 2));
    // The scaling is kept across a restart.
    s.kill9();
    s.spawn();
    wait_for("three tasks after the restart", LONG, || (api_tasks(&s).len() == 3).then_some(()));
    // Scale in: back to one; the others are drained, then stopped.
    s.ok(&["scale", "api=1"]);
    wait_for("one task", LONG, || (s.tasks().iter().filter(|t| t["service"] == "api").count() == 1).then_some(()));
    assert!(!s.events("service.scaled").is_empty());
    // Bad input says what is wrong and changes nothing.
    for (arg, why) in
        [("api", "expected SERVICE=REPLICAS"), ("api=x", "must be a number"), ("nope=2", "no service `nope`")]
    {
        let out = s.wharf(&["scale", arg]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{arg}: {err}");
    }
    let out = s.wharf(&["scale", "api=1001"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 1000") && err.contains("ephemeral range"), "{err}");
    assert_eq!(api_tasks(&s).len(), 1);
}

#[test]
fn run_streams_output_and_exits_with_the_commands_status() {
    let s = Server::start();
    let dir = app_dir(&demo_toml("runs", "7", 1, false));
    std::fs::write(dir.path().join("data.txt"), "from the release\n").unwrap();
    s.deploy(dir.path());
    let out = s.wharf(&[
        "run",
        "api",
        "--",
        "sh",
        "-c",
        "cat data.txt; echo v=$DEMO_VERSION rev=$WHARF_REVISION; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "the command's exit status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("from the release"), "runs in the release directory: {stdout}");
    assert!(stdout.contains("v=7 rev=1"), "with the service's environment: {stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    let ok = s.wharf(&["run", "api", "--", "true"]);
    assert_eq!(ok.status.code(), Some(0));
    // The run's output is in the log stream too, and its task is gone.
    assert!(s.ok(&["logs", "-n", "1000"]).contains("from the release"));
    assert!(s.tasks().iter().all(|t| !t["id"].as_str().unwrap().contains("-run-")));
    // Errors: unknown service, missing command.
    let out = s.wharf(&["run", "nope", "--", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service `nope`"));
    assert!(!s.wharf(&["run", "api"]).status.success());
}

/// The seed's step policy with periods shortened: a CPU-burning load scales
/// 1 → 2, and its end scales back to 1, with no failed request meanwhile.
#[test]
fn cpu_load_scales_out_and_back_in_without_a_failed_request() {
    let s = Server::start();
    let toml = r#"app = "auto"

[service.api]
command = ["wharf", "demo", "--name", "api"]
port = 8080
cpu = 256
health = { path = "/health", interval = "1s" }
scale = { min = 1, max = 2, cpu_above = 0.6, cpu_below = 0.6, datapoints = 3, period = "1s", cooldown = "2s" }
deploy = { bake = "0s" }

[route]
"/" = "api"
"#;
    let dir = app_dir(toml);
    s.deploy(dir.path());
    let addr = s.proxy_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burning = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let began = std::time::Instant::now();
    // Light traffic all along, and two clients burning CPU while `burning`.
    let mut clients = Vec::new();
    for i in 0..3 {
        let (stop, burning, addr) = (stop.clone(), burning.clone(), addr.clone());
        clients.push(std::thread::spawn(move || {
            let mut failed = Vec::new();
            let mut ok = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && began.elapsed() < Duration::from_secs(180) {
                let burn = i < 2 && burning.load(std::sync::atomic::Ordering::Relaxed);
                let path = if burn { "/burn?ms=100" } else { "/version" };
                match http_get(&addr, "x", path, None) {
                    Some((200, _)) => ok += 1,
                    other => failed.push(format!("{path}: {other:?}")),
                }
                if !burn {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            (ok, failed)
        }));
    }
    let replicas = |s: &Server| s.json(&["status", "--json"])["apps"][0]["services"][0]["replicas"].as_u64().unwrap();
    wait_for("the autoscaler to add a task", Duration::from_secs(90), || (replicas(&s) == 2).then_some(()));
    wait_for("two ready tasks", LONG, || {
        (s.json(&["status", "--json"])["apps"][0]["services"][0]["ready"] == 2).then_some(())
    });
    burning.store(false, std::sync::atomic::Ordering::Relaxed);
    wait_for("the autoscaler to remove it", Duration::from_secs(90), || (replicas(&s) == 1).then_some(()));
    wait_for("one task left", LONG, || (api_tasks(&s).len() == 1).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.join().unwrap();
        assert!(failed.is_empty(), "failed requests while scaling: {failed:?}");
        total += ok;
    }
    assert!(total > 100, "the load ran ({total} requests)");
    // Each decision is an event with the datapoints behind it, and `wharf autoscale` shows them.
    let out_events = s.events("autoscale.out");
    assert!(out_events.iter().any(|e| e.contains("api 1 → 2: 3 datapoints at or above 60%")), "{out_events:?}");
    assert!(s.events("autoscale.in").iter().any(|e| e.contains("api 2 → 1: 3 datapoints below 60%")));
    let view = s.json(&["autoscale", "api", "--json"]);
    assert_eq!(view["decisions"].as_array().unwrap().len(), 2, "{view}");
    assert!(!view["datapoints"].as_array().unwrap().is_empty());
    let text = s.ok(&["autoscale", "api"]);
    assert!(text.contains("min 1, max 2") && text.contains("1 → 2"), "{text}");
}

/// A worker (no port) deploys rolling: new tasks start before old ones get
/// their own stop signal, which they handle to finish their work.
#[test]
fn workers_roll_with_their_own_stop_signal_and_never_drop_below_their_replicas() {
    let s = Server::start();
    let toml = |v: &str| {
        format!(
            r#"app = "jobs"

[service.worker]
command = ["sh", "-c", "trap 'echo worker $V got USR1, finishing; sleep 0.3; echo worker $V done; exit 0' USR1; echo worker $V up; while true; do sleep 0.1; done"]
replicas = 2
env = {{ V = "{v}" }}
stop_signal = "SIGUSR1"
stop_timeout = "5s"
deploy = {{ bake = "0s" }}
"#
        )
    };
    let dir = app_dir(&toml("1"));
    s.deploy(dir.path());
    let running = |s: &Server| s.tasks().iter().filter(|t| t["state"] == "running" && t["draining"] == false).count();
    assert_eq!(running(&s), 2);
    std::fs::write(dir.path().join("wharf.toml"), toml("2")).unwrap();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let data = s.data.clone();
    let flag = watching.clone();
    let watcher = std::thread::spawn(move || {
        let mut lowest = usize::MAX;
        let began = std::time::Instant::now();
        while flag.load(std::sync::atomic::Ordering::Relaxed) && began.elapsed() < Duration::from_secs(60) {
            let out =
                std::process::Command::new(WHARF).arg("--data").arg(&data).args(["ps", "--json"]).output().unwrap();
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                let n =
                    v.as_array().unwrap().iter().filter(|t| t["state"] == "running" && t["draining"] == false).count();
                lowest = lowest.min(n);
            }
        }
        lowest
    });
    s.deploy(dir.path());
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let lowest = watcher.join().unwrap();
    assert!(lowest >= 2, "never fewer than the replicas running (max_unavailable 0): {lowest}");
    wait_for("the old workers to finish", LONG, || {
        let logs = s.ok(&["logs", "worker", "-n", "1000"]);
        (logs.matches("worker 1 done").count() == 2).then_some(())
    });
    let logs = s.ok(&["logs", "worker", "-n", "1000"]);
    assert_eq!(logs.matches("worker 1 got USR1, finishing").count(), 2, "{logs}");
    assert!(s.tasks().iter().all(|t| t["revision"] == 2));
    let stopped = s.events("task.stopped");
    assert!(stopped.iter().all(|e| !e.contains("ignored its stop signal")), "{stopped:?}");
}
