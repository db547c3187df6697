//! End-to-end: the log stream through the real binary (storage across a
//! kill -9, server-side filters, JSON output, follow across a deploy).

mod common;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// An app with one worker that runs `script` under sh.
fn sh_app(app: &str, script: &str) -> tempfile::TempDir {
    app_dir(&format!(
        "app = \"{app}\"\n[service.worker]\ncommand = [\"sh\", \"-c\", {script:?}]\nstop_timeout = \"1s\"\n"
    ))
}

/// The JSON records `wharf logs --json ARGS` prints.
fn records(s: &Server, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["logs", "--json"];
    all.extend_from_slice(args);
    s.ok(&all).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn messages(s: &Server, args: &[&str]) -> Vec<String> {
    records(s, args).iter().map(|r| r["message"].as_str().unwrap_or_default().to_string()).collect()
}

/// The highest `tick N` printed so far.
fn last_tick(s: &Server) -> u64 {
    messages(s, &["-n", "1", "worker", "--source", "stdout"])
        .iter()
        .filter_map(|m| m.strip_prefix("tick ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn kill9_with_a_torn_tail_keeps_old_records_and_appends_continue() {
    let mut s = Server::start();
    let dir = sh_app("ticker", "i=0; while true; do i=$((i+1)); echo tick $$i; sleep 0.05; done");
    s.deploy(dir.path());
    wait_for("20 ticks", LONG, || (last_tick(&s) >= 20).then_some(()));
    s.kill9();

    // A crash mid-write: half a frame at the end of the newest segment.
    let segments = s.data.join("logs/segments");
    let mut newest: Vec<_> = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    newest.sort();
    let newest = newest.pop().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
    f.write_all(&[0xff, 0, 0, 0, 1, 2, 3, 4, b'{', b'"']).unwrap();
    drop(f);

    s.spawn();
    let before_restart = wait_for("ticks after the restart", LONG, || {
        let ticks: Vec<u64> = messages(&s, &["-n", "100000", "worker", "--source", "stdout"])
            .iter()
            .filter_map(|m| m.strip_prefix("tick ")?.parse().ok())
            .collect();
        (ticks.iter().max().copied().unwrap_or(0) >= 60).then_some(ticks)
    });
    for i in 1..=60 {
        assert!(before_restart.contains(&i), "tick {i} is missing");
    }
    let all = records(&s, &["-n", "100000"]);
    assert!(all.windows(2).all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()), "seq increases");
    assert!(s.stderr().contains("torn"), "the cut is reported");
}

#[test]
fn filters_since_until_grep_and_json() {
    let s = Server::start();
    let dir = sh_app("fruit", "for f in apple banana cherry banana; do echo $$f; done; exec sleep 3600");
    s.deploy(dir.path());
    wait_for("four lines", LONG, || (messages(&s, &["worker", "--source", "stdout"]).len() >= 4).then_some(()));

    let got = records(&s, &["--grep", "^ban", "worker"]);
    assert_eq!(got.len(), 2, "{got:?}");
    for r in &got {
        assert_eq!(r["message"], "banana");
        assert_eq!(r["app"], "fruit");
        assert_eq!(r["service"], "worker");
        assert_eq!(r["source"], "stdout");
        assert!(r["task"].as_str().unwrap().starts_with("fruit-worker"), "{r}");
        assert!(r["time"].as_u64().unwrap() > 0 && r["seq"].as_u64().unwrap() > 0);
    }
    assert_eq!(messages(&s, &["--since", "1h", "worker", "--source", "stdout"]).len(), 4);
    assert!(messages(&s, &["--until", "1h", "worker"]).is_empty(), "nothing is older than an hour");
    assert!(messages(&s, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert_eq!(messages(&s, &["--until", "2999-01-01T00:00:00Z", "--source", "stdout", "worker"]).len(), 4);

    let bad = s.wharf(&["logs", "--grep", "(unclosed"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("invalid grep pattern"), "{err}");
    let bad = s.wharf(&["logs", "--since", "yesterday-ish"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected a duration"));

    // The API answers a bad pattern with a 400 that names the problem.
    let (code, body) = http_get(&s.api_addr(), "api", "/v1/logs?grep=%28", Some(&s.token())).unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid grep pattern"), "{body}");
}

#[test]
fn follow_carries_on_across_a_deploy() {
    let s = Server::start();
    let script = |v: &str| format!("while true; do echo {v} tick; sleep 0.1; done");
    let dir = sh_app("rolling", &script("v1"));
    s.deploy(dir.path());
    let mut child = Command::new(WHARF)
        .arg("--data")
        .arg(&s.data)
        .args(["logs", "-f", "-n", "0", "--json", "worker"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let seen = |want: &str| {
        wait_for(want, LONG, || rx.recv_timeout(Duration::from_millis(200)).ok().filter(|l| l.contains(want)))
    };
    let v1 = seen("v1 tick");
    let app = sh_app("rolling", &script("v2"));
    s.deploy(app.path());
    let v2 = seen("v2 tick");
    let rev = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["revision"].as_u64();
    assert!(rev(&v2) > rev(&v1), "{v1} then {v2}");
    let _ = child.kill();
    let _ = child.wait();
}
