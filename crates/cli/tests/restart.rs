//! Right after a restart (even after kill -9): routes are there before the
//! first request, and re-adopted tasks keep the health they had.

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// Three web tasks that need 10 passing checks in a row to be healthy: a
/// task taken for new after a restart stays "starting" for a while.
fn toml() -> String {
    demo_toml("shop", "1", 3, false).replace(
        r#"health = { path = "/health", interval = "1s" }"#,
        r#"health = { path = "/health", interval = "1s", healthy_threshold = 10 }"#,
    )
}

#[test]
fn after_kill9_routes_are_there_at_once_and_adopted_tasks_stay_healthy() {
    let mut s = Server::start();
    let dir = app_dir(&toml());
    s.deploy(dir.path());
    wait_for("every task healthy", LONG, || s.tasks().iter().all(|t| t["health"] == "healthy").then_some(()));
    for round in 0..6 {
        s.kill9();
        s.spawn();
        // Even rounds: the first request after the server says it is up.
        // Odd rounds: first what the server says of its tasks.
        if round % 2 == 0 {
            let first = s.get("x", "/api/health").map(|r| r.0);
            assert_eq!(first, Some(200), "round {round}: the first request after a restart");
        }
        let tasks = s.tasks();
        assert_eq!(tasks.len(), 3);
        for t in &tasks {
            assert_eq!(t["adopted"], true, "round {round}: {t}");
            assert_eq!(t["health"], "healthy", "round {round}: a re-adopted task keeps its health: {t}");
        }
    }
}
