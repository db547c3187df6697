//! The zero-downtime proof: under continuous load (every response recorded)
//! and with upgraded connections held open, a sequence of good and bad
//! deploys, a manual rollback and scaling, with no failed request.
//!
//! Run once with the demo app and once with gunicorn serving a Flask app.
//! With `WHARF_DEPLOY_FIGURES=FILE` the measured figures are written there
//! as JSON (bench/deploy.sh uses it); the test itself checks behaviour only.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Load threads, each pacing itself to PER_THREAD_RPS.
const LOAD_THREADS: usize = 4;
const PER_THREAD_RPS: u64 = 90;
/// Upgraded connections held open at all times.
const UPGRADES: usize = 5;
/// How long each upgraded connection lives before the client closes it;
/// well under the drain timeout, so a cut is never the drain's doing.
const UPGRADE_LIFE: Duration = Duration::from_secs(3);
/// Bound of the whole run, so no loop can run away.
const RUN_LIMIT: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
struct Answer {
    at: Instant,
    status: u16,
    /// `version@revision` from the body, or the error.
    what: String,
}

/// Many threads of paced GETs; every answer recorded.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: String, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let began = Instant::now();
        let threads = (0..LOAD_THREADS)
            .map(|_| {
                let (stop, answers, addr) = (stop.clone(), answers.clone(), addr.clone());
                std::thread::spawn(move || {
                    let period = Duration::from_micros(1_000_000 / PER_THREAD_RPS);
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) && began.elapsed() < RUN_LIMIT {
                        let answer = match http_get(&addr, "zd.test", path, None) {
                            Some((status, body)) => Answer { at: Instant::now(), status, what: version_of(&body) },
                            None => Answer { at: Instant::now(), status: 0, what: "connection error".into() },
                        };
                        answers.lock().unwrap().push(answer);
                        next += period;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        } else {
                            next = Instant::now();
                        }
                    }
                })
            })
            .collect();
        Load { stop, answers, threads }
    }

    fn snapshot(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.answers).unwrap().into_inner().unwrap()
    }
}

fn version_of(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => format!("{}@{}", v["version"].as_str().unwrap_or("?"), v["revision"].as_str().unwrap_or("?")),
        // A proxy error page: its explanation.
        Err(_) => match body.split_once("<p>") {
            Some((_, rest)) => rest.split("</p>").next().unwrap_or(rest).to_string(),
            None => body.chars().take(120).collect(),
        },
    }
}

/// Upgraded connections (a WebSocket handshake to an echo), each held for
/// UPGRADE_LIFE with an exchange every 100 ms, then closed by the client and
/// opened again. A connection that ends before the client closes it is a cut.
struct Upgrades {
    stop: Arc<AtomicBool>,
    cuts: Arc<Mutex<Vec<String>>>,
    opened: Arc<Mutex<u64>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Upgrades {
    fn start(addr: String, path: &'static str) -> Upgrades {
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(Mutex::new(Vec::new()));
        let opened = Arc::new(Mutex::new(0));
        let began = Instant::now();
        let threads = (0..UPGRADES)
            .map(|i| {
                let (stop, cuts, opened, addr) = (stop.clone(), cuts.clone(), opened.clone(), addr.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && began.elapsed() < RUN_LIMIT {
                        match hold_upgrade(&addr, path, i, &stop) {
                            Ok(()) => *opened.lock().unwrap() += 1,
                            Err(e) => {
                                cuts.lock().unwrap().push(e);
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                })
            })
            .collect();
        Upgrades { stop, cuts, opened, threads }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let opened = *self.opened.lock().unwrap();
        (opened, self.cuts.lock().unwrap().clone())
    }
}

fn hold_upgrade(addr: &str, path: &str, i: usize, stop: &AtomicBool) -> Result<(), String> {
    let mut c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: zd.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    c.write_all(head.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut reader = BufReader::new(c.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).map_err(|e| format!("handshake: {e}"))?;
    let mut task = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| format!("handshake: {e}"))?;
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("x-demo-task:") {
            task = v.trim().to_string();
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    if !status.contains(" 101 ") {
        return Err(format!("handshake answered {}", status.trim()));
    }
    let opened = Instant::now();
    let mut n = 0;
    while opened.elapsed() < UPGRADE_LIFE && !stop.load(Ordering::Relaxed) {
        let msg = format!("conn {i} message {n}\n");
        c.write_all(msg.as_bytes()).map_err(|e| format!("task {task}: cut after {:?}: {e}", opened.elapsed()))?;
        let mut back = vec![0u8; msg.len()];
        reader.read_exact(&mut back).map_err(|e| format!("task {task}: cut after {:?}: {e}", opened.elapsed()))?;
        if back != msg.as_bytes() {
            return Err(format!("task {task}: echo mismatch"));
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One step of the sequence: what is deployed and what must come of it.
struct Phase {
    name: &'static str,
    version: &'static str,
    strategy: &'static str,
    /// Extra environment for the service under test (the fault to inject).
    fault: &'static [(&'static str, &'static str)],
    bake: &'static str,
    expect: &'static str,
}

/// How to write the app under test.
struct App {
    /// wharf.toml for a version, strategy, fault and bake.
    toml: fn(&Phase, u32) -> String,
    service: &'static str,
    /// Where the load goes and where upgrades go.
    load_path: &'static str,
    upgrade_path: &'static str,
    files: &'static [(&'static str, &'static str)],
}

const SEQUENCE: &[Phase] = &[
    Phase { name: "rolling", version: "2", strategy: "rolling", fault: &[], bake: "2s", expect: "succeeded" },
    Phase { name: "blue-green", version: "3", strategy: "blue-green", fault: &[], bake: "2s", expect: "succeeded" },
    Phase {
        name: "never healthy",
        version: "4",
        strategy: "rolling",
        fault: &[("FAIL_HEALTH", "1")],
        bake: "2s",
        expect: "rolled_back",
    },
    Phase {
        name: "crashes at start",
        version: "5",
        strategy: "rolling",
        fault: &[("CRASH_AT_START", "1")],
        bake: "2s",
        expect: "rolled_back",
    },
    Phase {
        name: "exits 5s after healthy",
        version: "6",
        strategy: "rolling",
        fault: &[("EXIT_AFTER", "5s")],
        bake: "10s",
        expect: "rolled_back",
    },
    Phase {
        name: "500 after the switch",
        version: "7",
        strategy: "blue-green",
        fault: &[("FAIL_RATE", "1")],
        bake: "10s",
        expect: "rolled_back",
    },
];

fn env_line(prefix: &str, version: &str, fault: &[(&str, &str)]) -> String {
    let mut env = vec![format!("{prefix}VERSION = \"{version}\"")];
    env.extend(fault.iter().map(|(k, v)| format!("{prefix}{k} = \"{v}\"")));
    format!("env = {{ {} }}", env.join(", "))
}

fn deploy_line(p: &Phase) -> String {
    format!(
        "deploy = {{ strategy = \"{}\", bake = \"{}\", deadline = \"8s\", drain_timeout = \"10s\" }}",
        p.strategy, p.bake
    )
}

fn demo_app(p: &Phase, replicas: u32) -> String {
    let env = env_line("DEMO_", p.version, p.fault).replace(" }", ", DEMO_STARTUP_DELAY = \"200ms\" }");
    format!(
        "app = \"zd\"\n\n[service.api]\ncommand = [\"wharf\", \"demo\", \"--name\", \"api\"]\nport = 8080\n\
         replicas = {replicas}\n{env}\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n{}\n\n\
         [route]\n\"/api\" = {{ service = \"api\", strip_prefix = true }}\n",
        deploy_line(p)
    )
}

const FLASK_APP: &str = r#"import os
import sys

from flask import Flask

if os.environ.get("APP_CRASH_AT_START") == "1":
    sys.exit("crashing at start as asked (APP_CRASH_AT_START)")

app = Flask(__name__)
VERSION = os.environ.get("APP_VERSION", "0")
REVISION = os.environ.get("WHARF_REVISION", "?")


@app.route("/health")
def health():
    if os.environ.get("APP_FAIL_HEALTH") == "1":
        return "unhealthy as asked", 500
    return "ok"


@app.route("/version")
def version():
    if os.environ.get("APP_FAIL_RATE") == "1":
        return "failing as asked", 500
    return {"version": VERSION, "revision": REVISION}
"#;

/// gunicorn in front; with APP_EXIT_AFTER the task exits that long after it started.
/// `$$` hands the shell its own `$` (APP_EXIT_AFTER is not always in `env`).
const GUNICORN: &str = "if [ -n \"$$APP_EXIT_AFTER\" ]; then \
    gunicorn -w 2 -b 127.0.0.1:$PORT app:app & sleep $${APP_EXIT_AFTER%s}; kill -9 $!; exit 4; fi; \
    exec gunicorn -w 2 -b 127.0.0.1:$PORT app:app";

fn gunicorn_app(p: &Phase, replicas: u32) -> String {
    let ws = Phase { fault: &[], ..*p };
    format!(
        "app = \"zd\"\n\n[service.web]\ncommand = [\"sh\", \"-c\", {}]\nport = 8000\nreplicas = {replicas}\n{}\n\
         health = {{ path = \"/health\", interval = \"1s\" }}\n{}\n\n\
         [service.ws]\ncommand = [\"wharf\", \"demo\", \"--name\", \"ws\"]\nport = 9000\n{}\n\
         health = {{ path = \"/health\", interval = \"1s\" }}\n{}\n\n\
         [route]\n\"/\" = \"web\"\n\"/ws\" = {{ service = \"ws\", strip_prefix = true }}\n",
        serde_json::to_string(GUNICORN).unwrap(),
        env_line("APP_", p.version, p.fault),
        deploy_line(p),
        env_line("DEMO_", ws.version, &[]),
        deploy_line(&ws),
    )
}

const FIRST: Phase = Phase { name: "first", version: "1", strategy: "rolling", fault: &[], bake: "2s", expect: "" };

fn write_app(dir: &Path, app: &App, p: &Phase, replicas: u32) {
    std::fs::write(dir.join("wharf.toml"), (app.toml)(p, replicas)).unwrap();
}

/// How long after `since` every answer is from `version`: the first answer
/// after the last one from anything else (or the first answer at all, when
/// the switch came before it). None when the last answer is not from it.
fn switched_after(answers: &[Answer], since: Instant, version: &str) -> Option<Duration> {
    let after: Vec<&Answer> = answers.iter().filter(|a| a.at >= since).collect();
    let is_new = |a: &Answer| a.what.starts_with(&format!("{version}@"));
    let first_stable = match after.iter().rposition(|a| !is_new(a)) {
        Some(i) => after.get(i + 1)?,
        None => after.first()?,
    };
    Some(first_stable.at.duration_since(since))
}

fn deployment_state(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
    v["state"].as_str().unwrap_or("").to_string()
}

/// The deployment a command answered with succeeded; if not, its JSON
/// answer (the reason) and stderr are the failure message.
fn assert_succeeded(out: &std::process::Output) {
    assert_eq!(
        deployment_state(out),
        "succeeded",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_sequence(app: &App) -> BTreeMap<String, serde_json::Value> {
    let mut figures = BTreeMap::new();
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in app.files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    write_app(dir.path(), app, &FIRST, 1);
    s.deploy(dir.path());
    let path = dir.path().to_str().unwrap().to_string();
    let load = Load::start(s.proxy_addr(), app.load_path);
    let upgrades = Upgrades::start(s.proxy_addr(), app.upgrade_path);
    wait_for("the first answers", Duration::from_secs(30), || (load.snapshot().len() > 50).then_some(()));
    let began = Instant::now();
    let mut steps = Vec::new();
    for p in SEQUENCE {
        write_app(dir.path(), app, p, 1);
        let t0 = Instant::now();
        let out = s.wharf(&["deploy", "--json", &path]);
        let state = deployment_state(&out);
        assert_eq!(state, p.expect, "phase `{}`: {}", p.name, String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.success(), p.expect == "succeeded", "exit status of phase `{}`", p.name);
        if p.expect == "succeeded" {
            // Let the last answers of the old revision drain out, then measure.
            std::thread::sleep(Duration::from_millis(300));
            let switch = switched_after(&load.snapshot(), t0, p.version).expect("traffic moved to the new revision");
            figures.insert(format!("switch_{}_ms", p.strategy), (switch.as_millis() as u64).into());
        }
        steps.push(format!(
            "{}: {state} after {:.1}s (from {:.1}s into the run)",
            p.name,
            t0.elapsed().as_secs_f64(),
            t0.duration_since(began).as_secs_f64()
        ));
    }
    let good = SEQUENCE.iter().rev().find(|p| p.expect == "succeeded").unwrap().version;
    // Every failed deploy left the last good revision serving.
    let last = load.snapshot().last().cloned().unwrap();
    assert!(last.what.starts_with(&format!("{good}@")), "serving {} after the failed deploys", last.what);
    // Rollback from a blue-green bake: an instant switch back.
    let bake = Phase { name: "bake", version: "8", strategy: "blue-green", fault: &[], bake: "30s", expect: "" };
    write_app(dir.path(), app, &bake, 1);
    s.ok(&["deploy", "--detach", &path]);
    wait_for("the switch to 8", Duration::from_secs(30), || {
        load.snapshot().last().is_some_and(|a| a.what.starts_with("8@")).then_some(())
    });
    let t0 = Instant::now();
    let out = s.wharf(&["rollback", app.service, "--json"]);
    assert_eq!(deployment_state(&out), "rolled_back", "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let back = switched_after(&load.snapshot(), t0, good).expect("traffic back on the previous revision");
    figures.insert("rollback_from_bake_ms".into(), (back.as_millis() as u64).into());
    // A manual rollback to the very first revision.
    assert_succeeded(&s.wharf(&["rollback", app.service, "1", "--json"]));
    std::thread::sleep(Duration::from_millis(300));
    assert!(load.snapshot().last().unwrap().what.starts_with("1@"), "serving the first revision again");
    // Scale 1 → 4 → 1, as deploys of the same revision with other replicas.
    let scaled = |n: u32| {
        write_app(dir.path(), app, &FIRST, n);
        let out = s.wharf(&["deploy", "--json", &path]);
        if deployment_state(&out) != "succeeded" {
            // The tasks' own story (drains, stops, exits) says which one held the deployment.
            eprintln!("events:\n{}", s.ok(&["events", "-n", "200"]));
        }
        assert_succeeded(&out);
        let running = s.tasks().iter().filter(|t| t["service"] == app.service && t["draining"] == false).count();
        assert_eq!(running, n as usize, "replicas after scaling to {n}");
    };
    scaled(4);
    scaled(1);
    std::thread::sleep(Duration::from_secs(1));
    let elapsed = began.elapsed();
    let answers = load.finish();
    let (opened, cuts) = upgrades.finish();
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    let in_run = answers.iter().filter(|a| a.at >= began).count();
    figures.insert("requests".into(), answers.len().into());
    figures.insert("failures".into(), failed.len().into());
    figures.insert("requests_per_s".into(), ((in_run as f64 / elapsed.as_secs_f64()).round() as u64).into());
    figures.insert("upgrades_completed".into(), opened.into());
    figures.insert("upgrades_cut".into(), cuts.len().into());
    figures.insert("run_s".into(), (elapsed.as_secs()).into());
    eprintln!("{}", steps.join("\n"));
    let described: Vec<String> = failed
        .iter()
        .take(5)
        .map(|a| format!("{:.3}s into the run: {} {}", a.at.duration_since(began).as_secs_f64(), a.status, a.what))
        .collect();
    assert!(failed.is_empty(), "{} of {} requests failed; first: {described:#?}", failed.len(), answers.len());
    // A task that exits by itself closes its own connections: the only cut
    // allowed is on a task of the revision that was made to exit.
    let own_exit = |c: &String| c.contains(&format!("-{}-6-", app.service));
    let cut: Vec<&String> = cuts.iter().filter(|c| !own_exit(c)).collect();
    assert!(cut.is_empty(), "upgraded connections cut: {cut:?}");
    assert!(opened >= UPGRADES as u64, "upgraded connections were held ({opened})");
    // Each failure says why; a crash at start is a crash loop, or (for a
    // server slow to fail, like gunicorn) the deadline.
    let history = s.ok(&["deployments"]);
    assert!(history.contains("exited after it was ready") && history.contains("were 5xx"), "{history}");
    assert!(history.contains("not ready within the 8s deadline"), "{history}");
    assert!(history.contains("rolled back by hand"), "{history}");
    figures.insert("history".into(), history.into());
    figures
}

fn record(name: &str, mut figures: BTreeMap<String, serde_json::Value>) {
    figures.remove("history");
    eprintln!("{name}: {}", serde_json::to_string(&figures).unwrap());
    if let Ok(file) = std::env::var("WHARF_DEPLOY_FIGURES") {
        let mut all: serde_json::Value = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        all[name] = serde_json::to_value(figures).unwrap();
        std::fs::write(&file, serde_json::to_string_pretty(&all).unwrap()).unwrap();
    }
}

#[test]
fn demo_app_deploys_fail_and_roll_back_without_a_failed_request() {
    let app =
        App { toml: demo_app, service: "api", load_path: "/api/version", upgrade_path: "/api/upgrade", files: &[] };
    let figures = run_sequence(&app);
    let history = figures["history"].as_str().unwrap();
    assert!(history.contains("crash-looping: restarted 3 times"), "{history}");
    record("demo", figures);
}

/// gunicorn and Flask come from Debian (`gunicorn`, `python3-flask`); in CI
/// they must be there, elsewhere the test says what is missing and passes.
#[test]
fn gunicorn_flask_deploys_fail_and_roll_back_without_a_failed_request() {
    let have = std::process::Command::new("sh")
        // Flask must be importable by the Python that runs gunicorn.
        .args(["-c", "g=$(command -v gunicorn) && $(head -1 \"$g\" | cut -c3- | cut -d' ' -f1) -c 'import flask'"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").is_err(), "CI must install gunicorn and python3-flask");
        eprintln!("skipped: gunicorn or Flask is missing (apt-get install -y gunicorn python3-flask)");
        return;
    }
    let app = App {
        toml: gunicorn_app,
        service: "web",
        load_path: "/version",
        upgrade_path: "/ws/upgrade",
        files: &[("app.py", FLASK_APP)],
    };
    record("gunicorn", run_sequence(&app));
}
