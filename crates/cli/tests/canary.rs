//! Canary deploys with the real binary: the new revision takes its step's
//! share of the requests (measured), sticky clients stay on one side, the
//! guard rolls a failing canary back, `wharf rollback` aborts one, and a
//! server killed mid-canary resumes at the same weights.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Requests measured for a split.
const SPLIT_REQUESTS: usize = 10_000;
/// Threads sending them.
const SPLIT_THREADS: usize = 4;

/// An app whose `api` service (DEMO_VERSION = `version`, `env` extra) deploys
/// as a canary with `deploy` extra keys.
fn canary_app(version: &str, env: &str, deploy: &str) -> String {
    api_app(
        "shop",
        version,
        &format!(
            "replicas = 2\nenv = {{ DEMO_VERSION = \"{version}\"{env} }}\n\
             deploy = {{ strategy = \"canary\", bake = \"0s\"{deploy} }}"
        ),
    )
    .replacen(&format!("env = {{ DEMO_VERSION = \"{version}\" }}\n"), "", 1)
}

/// GET /version through the proxy with extra header lines; (status, the
/// version answered, the Set-Cookie header).
fn get_version(addr: &str, headers: &str) -> (u16, String, Option<String>) {
    let mut c = TcpStream::connect(addr).expect("connect to the proxy");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("GET /version HTTP/1.1\r\nHost: shop.test\r\n{headers}Connection: close\r\n\r\n");
    c.write_all(head.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return (0, String::new(), None) };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .map(str::to_string);
    let version = serde_json::from_str::<serde_json::Value>(body.trim())
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, version, cookie)
}

/// The share (percent) of `n` requests, sent by a few threads, that version `new` answered.
fn share_of(s: &Server, new: &str, n: usize) -> f64 {
    let addr = s.proxy_addr();
    let threads: Vec<_> = (0..SPLIT_THREADS)
        .map(|_| {
            let (addr, new) = (addr.clone(), new.to_string());
            std::thread::spawn(move || {
                let mut hits = 0usize;
                for _ in 0..n / SPLIT_THREADS {
                    let (status, version, _) = get_version(&addr, "");
                    assert_eq!(status, 200, "every request is answered during a canary");
                    hits += usize::from(version == new);
                }
                hits
            })
        })
        .collect();
    let hits: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    hits as f64 * 100.0 / (n / SPLIT_THREADS * SPLIT_THREADS) as f64
}

/// The deployment with the highest id, from `wharf deployments --json`.
fn last_deployment(s: &Server) -> serde_json::Value {
    let all = s.json(&["deployments", "--app", "shop", "--json"]);
    let list = all.as_array().cloned().unwrap_or_default();
    list.into_iter().max_by_key(|d| d["id"].as_u64().unwrap_or(0)).expect("a deployment")
}

fn wait_state(s: &Server, state: &str, limit: Duration) -> serde_json::Value {
    wait_for(&format!("the deployment to be {state}"), limit, || {
        let d = last_deployment(s);
        (d["state"] == state).then_some(d)
    })
}

/// Deploys v1, then v2 as a canary (detached), and waits for its first step.
fn start_canary(s: &Server, dir: &tempfile::TempDir, env2: &str, deploy: &str) {
    write_toml(dir, &canary_app("1", "", deploy));
    s.deploy(dir.path());
    write_toml(dir, &canary_app("2", env2, deploy));
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    wait_for("the canary's first step", Duration::from_secs(30), || {
        (!s.events("deploy.canary_step").is_empty()).then_some(())
    });
}

#[test]
fn a_canary_takes_its_share_and_a_sticky_cookie_keeps_a_client_on_one_side() {
    let s = Server::start();
    let dir = app_dir("");
    start_canary(&s, &dir, "", ", steps = [\"10%\", \"50%\"], step_interval = \"1h\", sticky = true");
    let share = share_of(&s, "2", SPLIT_REQUESTS);
    eprintln!("canary at 10%: {share:.2}% of {SPLIT_REQUESTS} requests on the new revision");
    assert!((8.0..=12.0).contains(&share), "the new revision took {share:.2}% of the requests, not 10%");
    // A client without the cookie is assigned and told its side; with it, it stays there.
    let addr = s.proxy_addr();
    let (_, _, cookie) = get_version(&addr, "");
    let cookie = cookie.expect("a sticky cookie is set");
    assert!(cookie.starts_with("wharf-canary-api="), "{cookie}");
    for (key, version) in [("2", "2"), ("1", "1")] {
        for _ in 0..50 {
            let (status, v, set) = get_version(&addr, &format!("Cookie: wharf-canary-api={key}\r\n"));
            assert_eq!((status, v.as_str()), (200, version), "a client with cookie {key} stays on its side");
            assert_eq!(set, None, "a kept client is not reassigned");
        }
    }
    // A server killed mid-canary resumes at the same weights.
    let mut s = s;
    s.kill9();
    s.spawn();
    // The re-adopted tasks are checked again before they take requests.
    let addr = s.proxy_addr();
    wait_for("the new revision to serve again", Duration::from_secs(30), || {
        (get_version(&addr, "").1 == "2").then_some(())
    });
    let share = share_of(&s, "2", 4_000);
    eprintln!("after a restart: {share:.2}% of 4000 requests on the new revision");
    assert!((7.0..=13.0).contains(&share), "after a restart the new revision took {share:.2}%, not 10%");
    // The status shows the split; a promotion by hand skips the remaining step.
    let status = s.ok(&["status"]);
    eprintln!("{status}");
    assert!(status.contains("canary api@2 10% (step 1/2"), "{status}");
    let json = s.json(&["status", "--json"]);
    let text = json.to_string();
    assert!(text.contains("\"canary\"") && text.contains("\"weight\":10"), "{text}");
    s.ok(&["deploy", "--promote", "--app", "shop", "api"]);
    let d = wait_state(&s, "succeeded", Duration::from_secs(60));
    assert_eq!(d["state"], "succeeded");
    for _ in 0..20 {
        let (status, v, cookie) = get_version(&addr, "Cookie: wharf-canary-api=1\r\n");
        assert_eq!((status, v.as_str(), cookie), (200, "2", None), "promoted: every request on the new revision");
    }
    let promoted = s.events("deploy.canary_promoted");
    assert_eq!(promoted.len(), 1, "{promoted:?}");
    let history = s.ok(&["deployments", "--app", "shop"]);
    assert!(history.contains("canary: api@2 10% (step 1) → api@2 promoted"), "{history}");
    let steps = &last_deployment(&s)["canary_steps"];
    assert_eq!((steps[0]["weight"].as_u64(), steps[1]["weight"].as_u64()), (Some(10), Some(100)), "{steps}");
}

#[test]
fn a_sticky_header_keeps_a_user_on_one_side_and_rollback_aborts_the_canary() {
    let s = Server::start();
    let dir = app_dir("");
    start_canary(&s, &dir, "", ", steps = [\"50%\"], step_interval = \"1h\", sticky = \"header:X-User-Id\"");
    let addr = s.proxy_addr();
    let mut sides = std::collections::BTreeSet::new();
    for user in 0..40 {
        let header = format!("X-User-Id: user-{user}\r\n");
        let (_, first, _) = get_version(&addr, &header);
        for _ in 0..10 {
            let (status, v, _) = get_version(&addr, &header);
            assert_eq!((status, &v), (200, &first), "user-{user} stays on one side");
        }
        sides.insert(first);
    }
    assert_eq!(sides.len(), 2, "at 50% the users are spread over both sides: {sides:?}");
    // It follows the deployment to its end, rolled back (exit 1, like any deploy that did not succeed).
    let out = s.wharf(&["rollback", "api"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("rolled back by hand"), "{out:?}");
    let d = wait_state(&s, "rolled_back", Duration::from_secs(60));
    assert!(d["reason"].as_str().unwrap_or("").contains("rolled back by hand"), "{d}");
    for user in 0..20 {
        let (status, v, _) = get_version(&addr, &format!("X-User-Id: user-{user}\r\n"));
        assert_eq!((status, v.as_str()), (200, "1"), "aborted: every request on the old revision");
    }
    wait_for("the canary's tasks to stop", Duration::from_secs(60), || {
        s.tasks().iter().all(|t| t["revision"] != 2).then_some(())
    });
}

#[test]
fn a_canary_answering_5xx_is_rolled_back_by_the_guard() {
    let s = Server::start();
    let dir = app_dir("");
    start_canary(&s, &dir, ", DEMO_FAIL_RATE = \"1\"", ", steps = [\"20%\"], step_interval = \"1h\"");
    let addr = s.proxy_addr();
    let d = wait_for("the guard to roll the canary back", Duration::from_secs(60), || {
        for _ in 0..20 {
            get_version(&addr, "");
        }
        let d = last_deployment(&s);
        (d["state"] == "rolled_back").then_some(d)
    });
    let reason = d["reason"].as_str().unwrap_or("");
    assert!(reason.contains("api@2 at 20% of the requests") && reason.contains("were 5xx"), "{reason}");
    for _ in 0..20 {
        let (status, v, _) = get_version(&addr, "");
        assert_eq!((status, v.as_str()), (200, "1"), "all traffic back on the old revision");
    }
}

#[test]
fn a_canary_steps_on_the_clock_and_is_promoted_after_the_last_step() {
    let s = Server::start();
    let dir = app_dir("");
    start_canary(&s, &dir, "", ", steps = [\"10%\", \"30%\"], step_interval = \"2s\"");
    let d = wait_state(&s, "succeeded", Duration::from_secs(60));
    assert_eq!(d["state"], "succeeded");
    let steps = s.events("deploy.canary_step");
    assert!(steps.iter().any(|e| e.contains("api@2 takes 10% of the requests (step 1/2)")), "{steps:?}");
    assert!(steps.iter().any(|e| e.contains("api@2 takes 30% of the requests (step 2/2)")), "{steps:?}");
    assert_eq!(s.events("deploy.canary_promoted").len(), 1);
    for _ in 0..20 {
        let (status, v, _) = get_version(&s.proxy_addr(), "");
        assert_eq!((status, v.as_str()), (200, "2"), "promoted after the last step");
    }
    wait_for("the old tasks to leave", Duration::from_secs(60), || {
        s.tasks().iter().all(|t| t["revision"] != 1).then_some(())
    });
}
