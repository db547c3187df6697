//! Target tracking under a stepped, open-loop CPU load: the autoscaler keeps
//! the average CPU of the service's tasks within ±20 % of its target. In its
//! own test binary so no other test's load shares the cores with it.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Requests per second for each load level; each burns 50 ms of CPU, so
/// 5/s is a quarter of a core (2 tasks at 50 % of 256 units) and 10/s half
/// a core (4 tasks).
const STEPS: [u64; 2] = [5, 10];

#[test]
fn target_tracking_holds_cpu_near_its_target_under_a_stepped_load() {
    let s = Server::start();
    let toml = r#"app = "tt"

[service.api]
command = ["wharf", "demo", "--name", "api"]
port = 8080
cpu = 256
health = { path = "/health", interval = "1s" }
scale = { min = 1, max = 6, target_cpu = 0.5, period = "2s", datapoints = 3, cooldown = "4s" }
deploy = { bake = "0s" }

[route]
"/" = "api"
"#;
    let dir = app_dir(toml);
    s.deploy(dir.path());
    let rate = Arc::new(AtomicU64::new(STEPS[0]));
    let failures = Arc::new(AtomicU64::new(0));
    // The first failures' answers and times: a burst of 503s and a slow
    // machine's timeouts call for different fixes.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let began = Instant::now();
    let limit = Duration::from_secs(400);
    // Open loop: each request on its own thread at the set rate, so a slow
    // answer doesn't lower the load.
    let load = {
        let (rate, failures, seen, addr) = (rate.clone(), failures.clone(), seen.clone(), s.proxy_addr());
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while began.elapsed() < limit {
                let r = rate.load(Ordering::Relaxed);
                if r == 0 {
                    return;
                }
                let (failures, seen, addr) = (failures.clone(), seen.clone(), addr.clone());
                std::thread::spawn(move || {
                    let sent = began.elapsed();
                    let answer = http_get(&addr, "x", "/burn?ms=50", None);
                    if !matches!(answer, Some((200, _))) {
                        failures.fetch_add(1, Ordering::Relaxed);
                        let mut seen = seen.lock().unwrap();
                        if seen.len() < 5 {
                            let what = answer.map_or("no answer".to_string(), |(code, body)| format!("{code} {body}"));
                            seen.push(format!("sent at {sent:.1?}, after {:.1?}: {what}", began.elapsed() - sent));
                        }
                    }
                });
                next += Duration::from_micros(1_000_000 / r);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    let mut settled: Vec<(u64, f64)> = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        rate.store(*step, Ordering::Relaxed);
        // Settled: no decision for 6 datapoints (twice what one needs), all
        // with every task in; the CPU is the average of the last 3.
        let (replicas, cpu) = wait_for("the autoscaler to settle", Duration::from_secs(150), || {
            let v = s.json(&["autoscale", "api", "--json"]);
            if std::env::var("TT_DEBUG").is_ok() {
                eprintln!("{}", s.ok(&["autoscale", "api"]));
            }
            let points = v["datapoints"].as_array().unwrap().clone();
            let since = v["decisions"].as_array().unwrap().last().map_or(0, |d| d["at"].as_u64().unwrap());
            let after: Vec<&serde_json::Value> = points.iter().filter(|p| p["at"].as_u64().unwrap() > since).collect();
            let tasks = v["replicas"].as_u64().unwrap();
            let full = after.iter().rev().take(6).all(|p| p["tasks"].as_u64() == Some(tasks));
            (after.len() >= 6 && full && (i == 0 || tasks > settled[0].0)).then(|| {
                let last: Vec<f64> = after.iter().rev().take(3).map(|p| p["cpu"].as_f64().unwrap()).collect();
                (tasks, last.iter().sum::<f64>() / last.len() as f64)
            })
        });
        eprintln!("{step} req/s: {replicas} tasks at {:.0}% of their reserved CPU", cpu * 100.0);
        settled.push((replicas, cpu));
    }
    rate.store(0, Ordering::Relaxed);
    load.join().unwrap();
    for (replicas, cpu) in &settled {
        assert!((0.4..=0.6).contains(cpu), "{replicas} tasks at {:.0}% (target 50% ± 20%): {settled:?}", cpu * 100.0);
    }
    assert!(settled[1].0 > settled[0].0, "more load, more tasks: {settled:?}");
    let first = seen.lock().unwrap().clone();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no failed request while scaling; first: {first:#?}");
}
