//! End-to-end: exporting the log stream (to a real HTTP receiver that is
//! down, then fails, then recovers; to a file across a restart), the
//! server's metrics, and `wharf top`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// An app with one worker that runs `script` under sh.
fn sh_app(app: &str, script: &str) -> tempfile::TempDir {
    app_dir(&format!(
        "app = \"{app}\"\n[service.worker]\ncommand = [\"sh\", \"-c\", {script:?}]\nstop_timeout = \"1s\"\n"
    ))
}

/// A collector: records every POST body; answers 500 to the first
/// `fail_first` requests, 200 after that. HTTP/1.1 with keep-alive.
struct Receiver {
    bodies: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(listener: TcpListener, fail_first: usize) -> Receiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (b, r) = (bodies.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (b, r) = (b.clone(), r.clone());
                std::thread::spawn(move || serve(conn, fail_first, &b, &r));
            }
        });
        Receiver { bodies, requests }
    }

    /// Every record received, in arrival order.
    fn records(&self) -> Vec<serde_json::Value> {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .flat_map(|b| b.lines())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

fn serve(conn: TcpStream, fail_first: usize, bodies: &Mutex<Vec<String>>, requests: &AtomicUsize) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = requests.fetch_add(1, Ordering::SeqCst);
        let answer: &[u8] = if n < fail_first {
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\nnope\n"
        } else {
            bodies.lock().unwrap().push(String::from_utf8(body).unwrap());
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        };
        if conn.write_all(answer).is_err() {
            return;
        }
    }
}

/// Messages of the worker's stdout records among `records`.
fn worker_lines(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["source"] == "stdout" && r["service"] == "worker")
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect()
}

fn has_all_lines(got: &[String], n: u32) -> bool {
    (1..=n).all(|i| got.iter().any(|l| *l == format!("line {i}")))
}

#[test]
fn http_export_retries_until_the_receiver_recovers_and_loses_nothing() {
    // The receiver is down at first: its port is free, nobody listens.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/ingest");
    let s = Server::start_with(&["--export-http", &url, "--export-retry-max", "500ms"]);
    let dir = sh_app("shipped", "i=0; while [ $$i -lt 200 ]; do i=$((i+1)); echo line $$i; done; exec sleep 1000");
    s.deploy(dir.path());
    wait_for("the export to report failing", LONG, || (!s.events("export.failing").is_empty()).then_some(()));

    // Up, but failing the first three requests, then healthy.
    let rx = Receiver::start(TcpListener::bind(("127.0.0.1", port)).unwrap(), 3);
    wait_for("all 200 lines at the receiver", LONG, || has_all_lines(&worker_lines(&rx.records()), 200).then_some(()));
    assert!(rx.requests.load(Ordering::SeqCst) > 3, "the failed batches were retried");
    wait_for("the recovery event", LONG, || (!s.events("export.recovered").is_empty()).then_some(()));

    // The exported JSON is exactly what `wharf logs --json` prints.
    let logged: Vec<serde_json::Value> =
        s.ok(&["logs", "--json", "-n", "100000"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let received = rx.records();
    let first = received.iter().find(|r| r["message"] == "line 1").unwrap();
    let same = logged.iter().find(|r| r["seq"] == first["seq"]).unwrap();
    assert_eq!(first, same);
    // In order, and nothing shipped twice once the receiver took it.
    let seqs: Vec<u64> = received.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ordered, no duplicates: {seqs:?}");
    assert!(s.events("export.dropped").is_empty(), "nothing was dropped");
}

#[test]
fn file_export_appends_and_resumes_after_a_restart_without_reshipping() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("wharf.jsonl");
    let mut s = Server::start_with(&["--export-file", out.to_str().unwrap()]);
    let dir = sh_app("filed", "i=0; while [ $$i -lt 50 ]; do i=$((i+1)); echo line $$i; done; exec sleep 1000");
    s.deploy(dir.path());
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    wait_for("50 lines in the file", LONG, || has_all_lines(&worker_lines(&read()), 50).then_some(()));

    assert!(s.terminate().success());
    let before = read();
    assert!(before.iter().any(|r| r["fields"]["kind"] == "server.stopping"), "the stop itself is exported");
    s.spawn();
    wait_for("the second start in the file", LONG, || {
        (read().iter().filter(|r| r["fields"]["kind"] == "server.started").count() == 2).then_some(())
    });
    wait_for("the restarted worker's lines", LONG, || {
        (worker_lines(&read()).iter().filter(|l| *l == "line 50").count() == 2).then_some(())
    });
    let all = read();
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "nothing shipped twice across the restart: {seqs:?}");
    assert_eq!(&all[..before.len()], &before[..], "appended, not rewritten");
}

/// The value of the first sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let (n, rest) = head.split_once('{').unwrap_or((head, ""));
        (n == name && labels.iter().all(|want| rest.contains(want))).then(|| value.parse().ok())?
    })
}

fn metrics(s: &Server) -> String {
    let url = std::fs::read_to_string(s.data.join("metrics.url")).unwrap();
    let addr = url.trim().trim_start_matches("http://").trim_end_matches("/metrics").to_string();
    let (code, text) = http_get(&addr, "a", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    text
}

#[test]
fn metrics_cover_tasks_restarts_deployments_store_and_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export.jsonl");
    let s = Server::start_with(&["--export-file", out.to_str().unwrap()]);
    let mut toml = demo_toml("obs", "1", 2, false);
    toml.push_str("\n[service.crasher]\ncommand = [\"sh\", \"-c\", \"echo bye; exit 1\"]\n");
    let dir = app_dir(&toml);
    // The crasher never becomes ready, so the deploy's own result is not awaited.
    s.ok(&["deploy", "--detach", dir.path().to_str().unwrap()]);
    wait_for("both api tasks ready", LONG, || (s.get("a", "/api/").is_some_and(|(c, _)| c == 200)).then_some(()));
    for _ in 0..10 {
        s.get("a", "/api/");
    }
    let text = wait_for("a restart and usage samples", LONG, || {
        let t = metrics(&s);
        let restarted = sample(&t, "wharf_restarts_total", &[]).is_some_and(|v| v >= 1.0);
        let sampled = sample(&t, "wharf_task_memory_bytes", &["service=\"api\""]).is_some_and(|v| v > 0.0);
        let running = sample(&t, "wharf_tasks", &["service=\"api\"", "state=\"running\""]) == Some(2.0);
        (restarted && sampled && running).then_some(t)
    });
    assert!(sample(&text, "wharf_tasks", &["service=\"api\"", "state=\"exited\""]) == Some(0.0), "every state shows");
    let cpu = sample(&text, "wharf_task_cpu_seconds_total", &["service=\"api\""]).expect("cpu seconds");
    assert!((0.0..1000.0).contains(&cpu), "{cpu}");
    assert!(sample(&text, "wharf_deployments", &["app=\"obs\""]).is_some_and(|v| v >= 1.0), "{text}");
    let applies = sample(&text, "wharf_store_operation_duration_seconds_count", &["op=\"apply\""]).unwrap();
    assert!(applies >= 1.0);
    assert!(text.contains("wharf_store_operation_duration_seconds_bucket{"), "a histogram");
    let ingested = sample(&text, "wharf_log_records_ingested_total", &[]).unwrap();
    assert!(ingested >= 1.0);
    assert_eq!(sample(&text, "wharf_log_records_dropped_total", &["stage=\"store\""]), Some(0.0));
    assert_eq!(sample(&text, "wharf_log_records_dropped_total", &["stage=\"export\"", "sink=\"file\""]), Some(0.0));
    wait_for("exported records counted", LONG, || {
        sample(&metrics(&s), "wharf_log_records_exported_total", &["sink=\"file\""])
            .is_some_and(|v| v >= 1.0)
            .then_some(())
    });
    assert!(
        sample(&text, "wharf_proxy_requests_total", &["service=\"obs/api\""]).is_some(),
        "proxy metrics still there"
    );
    assert_eq!(text.matches("# EOF").count(), 1, "one exposition");
}

#[test]
fn top_once_json_shows_every_service_with_traffic() {
    let s = Server::start();
    let dir = app_dir(&demo_toml("topped", "1", 2, true));
    s.deploy(dir.path());
    for _ in 0..20 {
        s.get("a", "/api/");
    }
    let out = s.ok(&["top", "--once", "--json"]);
    assert_eq!(out.lines().count(), 1, "one snapshot: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let services = v["services"].as_array().unwrap();
    let names: Vec<&str> = services.iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "app", "worker"]);
    let api = &services[0];
    assert_eq!(api["app"], "topped");
    assert_eq!(api["tasks"], 2);
    assert_eq!(api["kind"], "web");
    assert!(api["requests_total"].as_u64().unwrap() >= 20, "{api}");
    assert!(api["memory_bytes"].as_u64().is_some());
    assert!(api["requests_per_sec"].as_f64().is_some());
    assert_eq!(services[2]["kind"], "worker");

    // Requests during the interval give a rate and a p99.
    // Load until top is done (bounded, in case it never is).
    let addr = s.proxy_addr();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let load = std::thread::spawn(move || {
        for _ in 0..100_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            http_get(&addr, "a", "/api/", None);
        }
    });
    let out = s.ok(&["top", "--json", "--iterations", "2", "--interval", "300ms"]);
    done.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(out.lines().count(), 2);
    let any_traffic = out.lines().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["services"][0]["requests_per_sec"].as_f64().unwrap() > 0.0 && v["services"][0]["p99_ms"].is_number()
    });
    assert!(any_traffic, "{out}");

    // Piped, the table is printed without terminal escapes.
    let table = s.ok(&["top", "--once"]);
    assert!(table.contains("SERVICE") && table.contains("worker"), "{table}");
    assert!(!table.contains('\x1b'), "{table}");
}
