//! Health checks reuse a connection per task (HTTP) or close with a reset
//! (TCP): frequent checks of many tasks must not pile up TIME_WAIT sockets.

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// Sockets in TIME_WAIT with `port` at either end (IPv4 loopback).
fn time_wait_on(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.len() > 3 && c[3] == "06" && (c[1].ends_with(&hex) || c[2].ends_with(&hex))
        })
        .count()
}

fn app(health: &str) -> String {
    format!(
        "app = \"checked\"\n[service.api]\ncommand = [\"wharf\", \"demo\", \"--name\", \"api\"]\nport = 8080\nreplicas = 2\nhealth = {health}\ndeploy = {{ bake = \"0s\" }}\n"
    )
}

#[test]
fn frequent_checks_leave_no_time_wait_sockets_behind() {
    let s = Server::start();
    for (what, health) in [
        ("HTTP", r#"{ path = "/health", interval = "50ms", timeout = "50ms" }"#),
        ("TCP", r#"{ interval = "50ms", timeout = "50ms" }"#),
    ] {
        let dir = app_dir(&app(health));
        s.deploy(dir.path());
        let ports: Vec<u16> = wait_for("two healthy tasks", LONG, || {
            let t: Vec<u16> = s
                .tasks()
                .iter()
                .filter(|t| t["health"] == "healthy" && !t["draining"].as_bool().unwrap_or(false))
                .filter_map(|t| t["port"].as_u64().map(|p| p as u16))
                .collect();
            (t.len() == 2).then_some(t)
        });
        // About 40 checks per task in 2 s.
        std::thread::sleep(Duration::from_secs(2));
        for p in ports {
            let n = time_wait_on(p);
            assert!(n < 5, "{what} checks of the task on port {p} left {n} TIME_WAIT sockets");
        }
    }
}
