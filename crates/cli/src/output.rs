//! The commands that talk to a server, and how they print.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use wharf_api::client::{ApiClient, ClientError};
use wharf_client::pack_dir;
use wharf_control::DeployError;
use wharf_logs::{Filter, Record, Source};

use crate::server;

/// Validates DIR/wharf.toml and prints the outcome.
pub fn check(dir: &Path, json: bool) -> ExitCode {
    match wharf_spec::load_dir(dir) {
        Ok(spec) => {
            if json {
                println!("{}", serde_json::json!({ "ok": true, "spec": spec }));
            } else {
                let web = spec.services.values().filter(|s| s.is_web()).count();
                println!(
                    "ok: app `{}`: {} services ({} web, {} worker), {} routes",
                    spec.app,
                    spec.services.len(),
                    web,
                    spec.services.len() - web,
                    spec.routes.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "ok": false, "diagnostics": e.diagnostics() }));
            } else {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn pack(dir: &Path) -> Result<Vec<u8>> {
    pack_dir(dir).with_context(|| format!("cannot pack {}", dir.display()))
}

/// `wharf up`: a server of its own, the app deployed, the stream printed.
pub async fn up(
    dir: PathBuf,
    data: Option<PathBuf>,
    http: SocketAddr,
    api: SocketAddr,
    quiet: bool,
) -> Result<ExitCode> {
    let t0 = Instant::now();
    let mut stop = server::StopSignal::new()?;
    let dir = dir.canonicalize().with_context(|| format!("app directory {} not found", dir.display()))?;
    // Validate before starting anything.
    if let Err(e) = wharf_spec::load_dir(&dir) {
        eprintln!("{e}");
        return Ok(ExitCode::FAILURE);
    }
    let data = data.unwrap_or_else(|| dir.join(".wharf"));
    let mut opts = server::ServerOptions::new(data, api, http);
    opts.unreachable = crate::task_user::Unreachable::RunAsServer;
    let running = server::start(opts).await?;
    let printer = (!quiet).then(|| {
        let (backlog, rx) = running.ctl.logs().follow(&Filter::default(), 0);
        drop(backlog);
        tokio::spawn(print_stream(rx))
    });
    let archive = pack(&dir)?;
    let report = match running.ctl.deploy(archive).await {
        Ok(r) => r,
        Err(DeployError::Invalid(e)) => {
            eprintln!("{e}");
            running.stop().await;
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            running.stop().await;
            return Err(e.into());
        }
    };
    let ctl = running.ctl.clone();
    let app = report.app.clone();
    let base = format!("http://{}", running.http);
    eprintln!("wharf: {} is deploying ({})", app, report.message);
    if let Ok(status) = ctl.status().await {
        for a in status.apps.iter().filter(|a| a.name == app) {
            for r in &a.routes {
                match &r.host {
                    None => eprintln!("  {base}{:<12} → {}", r.path, r.service),
                    Some(h) => eprintln!("  {base}{:<12} → {} (with Host: {h})", r.path, r.service),
                }
            }
        }
    }
    eprintln!("  API {}; try `wharf status` in {}. Ctrl-C stops everything.", running.api_url, dir.display());
    let watcher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Ok(status) = ctl.status().await else { continue };
            let Some(a) = status.apps.iter().find(|a| a.name == app) else { continue };
            let Some(d) = &a.deployment else { continue };
            let state = serde_json::to_value(d.state).unwrap_or_default();
            if state == "succeeded" || state == "unchanged" {
                eprintln!("wharf: {app} is ready, {} ms after start", t0.elapsed().as_millis());
                return;
            }
            if state != "in_progress" {
                eprintln!("wharf: {app} deployment {}: {}", state.as_str().unwrap_or("?"), d.message);
                return;
            }
        }
    });
    let sig = stop.recv().await;
    watcher.abort();
    eprintln!("wharf: {sig} received, stopping tasks");
    running.stop().await;
    if let Some(p) = printer {
        p.abort();
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops printing (and only that; the server goes on) once stdout is gone,
/// as with `wharf up | head`.
async fn print_stream(mut rx: tokio::sync::broadcast::Receiver<std::sync::Arc<Record>>) {
    use std::io::Write;
    let color = std::io::stdout().is_terminal();
    loop {
        let line = match rx.recv().await {
            Ok(r) => format_record(&r, color),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => format!("... {n} records skipped"),
            Err(_) => return,
        };
        if writeln!(std::io::stdout(), "{line}").is_err() {
            return;
        }
    }
}

/// `HH:MM:SS.mmm service.task | message`, times in UTC.
pub fn format_record(r: &Record, color: bool) -> String {
    let secs = r.time / 1_000_000_000;
    let ms = (r.time / 1_000_000) % 1000;
    let t = format!("{:02}:{:02}:{:02}.{ms:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let who = match (&r.service, &r.task, r.source) {
        (_, _, Source::Event) => "wharf".to_string(),
        (Some(s), Some(task), _) => format!("{s}.{}", task.rsplit('-').next().unwrap_or("")),
        (Some(s), None, _) => s.clone(),
        _ => "wharf".to_string(),
    };
    let err = r.source == Source::Stderr;
    if !color {
        let mark = if err { "!" } else { "|" };
        return format!("{t} {who:<14} {mark} {}", r.message);
    }
    const COLORS: [u8; 6] = [36, 32, 35, 34, 33, 96];
    let c = match r.source {
        Source::Event => match r.level {
            Some(wharf_logs::Level::Error) => 31,
            Some(wharf_logs::Level::Warn) => 33,
            _ => 90,
        },
        _ => COLORS[who.split('.').next().unwrap_or("").bytes().map(usize::from).sum::<usize>() % COLORS.len()],
    };
    format!("\x1b[90m{t}\x1b[0m \x1b[{c}m{who:<14}\x1b[0m {} {}", if err { "\x1b[31m!\x1b[0m" } else { "|" }, r.message)
}

pub(crate) fn api_error(e: ClientError) -> anyhow::Error {
    if let ClientError::Api { body, .. } = &e {
        if !body.error.diagnostics.is_empty() {
            let lines: Vec<String> = body
                .error
                .diagnostics
                .iter()
                .map(|d| {
                    let hint = d.hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default();
                    format!("{}:{}:{}: error: {}{hint}", d.file, d.line, d.column, d.message)
                })
                .collect();
            return anyhow::anyhow!("{}\n{}", body.error.message, lines.join("\n"));
        }
    }
    e.into()
}

pub async fn deploy(client: &ApiClient, dir: &Path, detach: bool, json: bool) -> Result<ExitCode> {
    if let Err(e) = wharf_spec::load_dir(dir) {
        eprintln!("{e}");
        eprintln!("nothing was deployed");
        return Ok(ExitCode::FAILURE);
    }
    let archive = pack(dir)?;
    if !json {
        eprintln!("uploading release ({} KiB) to {}", archive.len().div_ceil(1024), client.base());
    }
    let report: Value = client.post_archive("/v1/deploy", archive).await.map_err(api_error)?;
    let app = report["app"].as_str().unwrap_or_default().to_string();
    let id = report["deployment"].as_u64().unwrap_or(0);
    if !json {
        eprintln!("deployment {app}#{id}: {}", report["message"].as_str().unwrap_or(""));
    }
    if detach || report["state"] != "in_progress" {
        if json {
            println!("{report}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait_deployment(client, &app, id, json).await
}

/// How often `wharf deploy` repeats a health-check failure that stays the same.
const HEALTH_REPEAT: Duration = Duration::from_secs(10);

/// Follows a deployment until it ends, printing each step and the tasks'
/// progress as they change. Exit status 0 only when it succeeded.
async fn wait_deployment(client: &ApiClient, app: &str, id: u64, json: bool) -> Result<ExitCode> {
    let mut last_step = String::new();
    let mut last_line = String::new();
    // Per task, the last health-check failure shown, and when.
    let mut shown: std::collections::HashMap<String, (String, Instant)> = Default::default();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status: Value = client.get("/v1/status").await.map_err(api_error)?;
        let Some(a) = status["apps"].as_array().and_then(|apps| apps.iter().find(|a| a["name"] == app)) else {
            continue;
        };
        let d = &a["deployment"];
        if d["id"].as_u64() != Some(id) {
            continue;
        }
        let step = s(&d["step"]);
        let state = d["state"].as_str().unwrap_or("");
        if !json && state == "in_progress" && step != last_step {
            let text = match step.as_str() {
                "release" => "running the release command".to_string(),
                "rollout" => "starting new tasks".to_string(),
                "bake" => match (d["bake_until"].as_u64(), d["switched_at"].as_u64()) {
                    (Some(until), Some(at)) if until > at => format!(
                        "switched: all traffic on the new revisions; watching them for {:.0}s",
                        (until - at) as f64 / 1000.0
                    ),
                    _ => "switched: all traffic on the new revisions".to_string(),
                },
                "rollback" => format!("rolling back: {}", s(&d["reason"])),
                other => other.to_string(),
            };
            eprintln!("» {text}");
            last_step = step;
        }
        let line = a["services"].as_array().into_iter().flatten().map(service_progress).collect::<Vec<_>>().join("  ");
        if !json && state == "in_progress" && line != last_line {
            eprintln!("  {line}");
            last_line = line;
        }
        let failing = a["services"].as_array().into_iter().flatten().flat_map(|sv| {
            sv["health_failing"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
        });
        for f in failing {
            let (task, error) = f.split_once(": ").unwrap_or(("", &f));
            if json || state != "in_progress" {
                continue;
            }
            // Again now and then while it stays the same, so a long wait is not silent.
            match shown.get(task) {
                Some((e, at)) if e == error && at.elapsed() < HEALTH_REPEAT => {}
                Some((e, _)) if e == error => {
                    eprintln!("    {task} still not healthy: {error}");
                    shown.insert(task.to_string(), (error.to_string(), Instant::now()));
                }
                _ => {
                    eprintln!("    {task} not healthy yet: {error}");
                    shown.insert(task.to_string(), (error.to_string(), Instant::now()));
                }
            }
        }
        if state == "in_progress" || state.is_empty() {
            continue;
        }
        if json {
            println!("{d}");
        } else {
            let took = match (d["started_at"].as_u64(), d["finished_at"].as_u64()) {
                (Some(a), Some(b)) => format!(" in {:.1}s", b.saturating_sub(a) as f64 / 1000.0),
                _ => String::new(),
            };
            match state {
                "succeeded" => eprintln!("deployment {app}#{id} succeeded{took}: {}", s(&d["message"])),
                other => eprintln!("deployment {app}#{id} {}{took}: {}", other.replace('_', " "), s(&d["reason"])),
            }
        }
        return Ok(if state == "succeeded" { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
}

/// `api@4 2/2 ready, 1 old, 2 draining` for one service of `wharf status`.
fn service_progress(sv: &Value) -> String {
    let mut out = format!("{}@{} {}/{} ready", s(&sv["name"]), sv["revision"], sv["ready"], sv["replicas"]);
    for (key, what) in [("old", "old"), ("standby", "on standby"), ("draining", "draining")] {
        let n = sv[key].as_u64().unwrap_or(0);
        if n > 0 {
            out.push_str(&format!(", {n} {what}"));
        }
    }
    out
}

/// Unix milliseconds as "2026-01-30 03:00:00" (UTC).
pub(crate) fn when(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else { return "-".into() };
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").trim_end_matches('Z').to_string()
}

pub async fn revisions(client: &ApiClient, app: Option<String>, service: String, json: bool) -> Result<ExitCode> {
    let q = query(&[("app", app), ("service", Some(service))]);
    let revs: Value = client.get(&format!("/v1/revisions?{q}")).await.map_err(api_error)?;
    if json {
        println!("{revs}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut reasons = Vec::new();
    let rows = revs
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mark = if r["current"] == true { "*" } else { "" };
            let changes: Vec<String> = r["changes"].as_array().into_iter().flatten().map(s).collect();
            let outcome = match (r["outcome"].as_str(), r["deployment"].as_u64()) {
                (Some(o), Some(id)) => format!("{} (#{id})", o.replace('_', " ")),
                _ if r["healthy"] == true => "ran before".to_string(),
                _ => "-".to_string(),
            };
            if let Some(why) = r["reason"].as_str() {
                reasons.push(format!("@{}: {why}", r["number"]));
            }
            vec![
                format!("{mark}@{}", r["number"]),
                when(&r["created_at"]),
                s(&r["release"]),
                outcome,
                if r["available"] == true { "yes".into() } else { "no".into() },
                changes.join(", "),
            ]
        })
        .collect();
    table(&["REVISION", "CREATED (UTC)", "RELEASE", "OUTCOME", "ROLLBACK", "CHANGED"], rows);
    if !reasons.is_empty() {
        println!();
        for why in reasons {
            println!("{why}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(
    client: &ApiClient,
    app: Option<String>,
    service: String,
    revision: Option<u64>,
    detach: bool,
    json: bool,
) -> Result<ExitCode> {
    let body = serde_json::json!({ "app": app, "service": service, "revision": revision });
    let d: Value = client.post_json("/v1/rollback", &body).await.map_err(api_error)?;
    let app = s(&d["app"]);
    let id = d["id"].as_u64().unwrap_or(0);
    if !json {
        eprintln!("deployment {app}#{id}: {}", s(&d["message"]));
    }
    if detach {
        if json {
            println!("{d}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait_deployment(client, &app, id, json).await
}

pub async fn deployments(client: &ApiClient, app: Option<String>, json: bool) -> Result<ExitCode> {
    // The server picks the only app when none is named, as for every other call.
    let list: Value = client.get(&format!("/v1/deployments?{}", query(&[("app", app)]))).await.map_err(api_error)?;
    if json {
        println!("{list}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let took = match (d["started_at"].as_u64(), d["finished_at"].as_u64()) {
                (Some(a), Some(b)) => format!("{:.1}s", b.saturating_sub(a) as f64 / 1000.0),
                _ => "-".into(),
            };
            let what = match d["reason"].as_str() {
                Some(r) if !r.is_empty() => format!("{} — {r}", s(&d["message"])),
                _ => s(&d["message"]),
            };
            let outcome = s(&d["state"]).replace('_', " ");
            vec![format!("#{}", d["id"]), when(&d["started_at"]), took, outcome, what]
        })
        .collect();
    table(&["DEPLOYMENT", "STARTED (UTC)", "TOOK", "OUTCOME", "WHAT"], rows);
    Ok(ExitCode::SUCCESS)
}

/// `wharf plan`: what a deploy of DIR would change, from the server's point of view.
pub async fn plan(client: &ApiClient, dir: &Path, json: bool) -> Result<ExitCode> {
    if let Err(e) = wharf_spec::load_dir(dir) {
        eprintln!("{e}");
        return Ok(ExitCode::FAILURE);
    }
    let plan: Value = client.post_archive("/v1/plan", pack(dir)?).await.map_err(api_error)?;
    if json {
        println!("{plan}");
        return Ok(ExitCode::SUCCESS);
    }
    let app = s(&plan["app"]);
    if plan["unchanged"] == true {
        println!("{app}: nothing would change");
        return Ok(ExitCode::SUCCESS);
    }
    println!("a deploy of {app} would:");
    for sv in plan["services"].as_array().into_iter().flatten() {
        let name = s(&sv["name"]);
        let replicas = match sv["replicas"].as_array() {
            Some(r) if r.len() == 2 => format!(" (replicas {} → {})", r[0], r[1]),
            _ => String::new(),
        };
        let changes: Vec<String> = sv["changes"].as_array().into_iter().flatten().map(s).collect();
        let line = match sv["action"].as_str().unwrap_or("") {
            "new" => format!("  + {name}: new, as {name}@{}{replicas}", sv["next_revision"]),
            "changed" => {
                format!("  ~ {name}: @{} → @{} ({}){replicas}", sv["revision"], sv["next_revision"], changes.join(", "))
            }
            "scaled" => format!("  ~ {name}@{}: scaled{replicas}", sv["revision"]),
            "removed" => format!("  - {name}@{}: removed, its tasks stop", sv["revision"]),
            _ => format!("    {name}@{}: unchanged", sv["revision"]),
        };
        println!("{line}");
    }
    for r in plan["routes_added"].as_array().into_iter().flatten() {
        println!("  + route {}", s(r));
    }
    for r in plan["routes_removed"].as_array().into_iter().flatten() {
        println!("  - route {}", s(r));
    }
    for (key, mark, what) in [("added", "+", "new"), ("changed", "~", "changed"), ("removed", "-", "removed")] {
        for j in plan["jobs"][key].as_array().into_iter().flatten() {
            println!("  {mark} job {}: {what}", s(j));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints rows as aligned columns.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(header.iter().map(|s| s.to_string()).collect()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

pub async fn status(client: &ApiClient, json: bool) -> Result<ExitCode> {
    let status: Value = client.get("/v1/status").await.map_err(api_error)?;
    if json {
        println!("{status}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("wharf {} · up {}s · limits: {}", s(&status["version"]), status["uptime_secs"], s(&status["limits"]));
    for p in status["problems"].as_array().into_iter().flatten() {
        println!("warning: {}", s(p));
    }
    let apps = status["apps"].as_array().cloned().unwrap_or_default();
    if apps.is_empty() {
        println!("no apps deployed yet: run `wharf deploy DIR`");
        return Ok(ExitCode::SUCCESS);
    }
    for a in apps {
        println!();
        let release = s(&a["release"]);
        println!("app {} · release {}", s(&a["name"]), &release[..release.len().min(12)]);
        let routes = a["routes"].as_array().cloned().unwrap_or_default();
        let rows = a["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|sv| {
                let name = s(&sv["name"]);
                let r: Vec<String> = routes
                    .iter()
                    .filter(|r| r["service"] == name.as_str())
                    .map(|r| format!("{}{}", r["host"].as_str().unwrap_or(""), s(&r["path"])))
                    .collect();
                let old = sv["old"].as_u64().unwrap_or(0);
                let traffic = match (sv["maintenance"] == true, sv["paused"] == true) {
                    (true, _) => "maintenance",
                    (_, true) => "paused",
                    _ => "-",
                };
                vec![
                    name.clone(),
                    s(&sv["kind"]),
                    format!("@{}", sv["revision"]),
                    format!("{}/{}", sv["ready"], sv["replicas"]),
                    if old > 0 { old.to_string() } else { "-".into() },
                    if r.is_empty() { "-".into() } else { r.join(" ") },
                    traffic.into(),
                ]
            })
            .collect();
        table(&["SERVICE", "KIND", "REVISION", "READY", "OLD", "ROUTES", "TRAFFIC"], rows);
        if let Some(d) = a["deployment"].as_object() {
            println!("last deployment #{}: {} ({})", d["id"], s(&d["state"]), s(&d["message"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn ps(client: &ApiClient, json: bool) -> Result<ExitCode> {
    let tasks: Value = client.get("/v1/tasks").await.map_err(api_error)?;
    if json {
        println!("{tasks}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = tasks
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let health = if t["draining"] == true {
                "draining".to_string()
            } else if t["ejected"] == true {
                format!("{} (ejected)", s(&t["health"]))
            } else {
                s(&t["health"])
            };
            let mem = t["memory_bytes"].as_u64().map_or("-".into(), |b| format!("{:.1}MiB", b as f64 / 1048576.0));
            let cpu = t["cpu_percent"].as_f64().map_or("-".into(), |c| format!("{c:.1}%"));
            vec![
                s(&t["id"]),
                format!("{}@{}", s(&t["service"]), t["revision"]),
                s(&t["state"]).to_lowercase(),
                health,
                s(&t["pid"]),
                s(&t["port"]),
                s(&t["restarts"]),
                s(&t["in_flight"]),
                cpu,
                mem,
            ]
        })
        .collect();
    table(&["TASK", "REVISION", "STATE", "HEALTH", "PID", "PORT", "RESTARTS", "BUSY", "CPU", "MEM"], rows);
    Ok(ExitCode::SUCCESS)
}

pub struct LogArgs {
    pub service: Option<String>,
    pub follow: bool,
    pub lines: usize,
    pub app: Option<String>,
    pub task: Option<String>,
    pub source: Option<String>,
    pub json: bool,
    pub since: Option<String>,
    pub until: Option<String>,
    pub grep: Option<String>,
}

pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b',' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let parts: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v)))).collect();
    parts.join("&")
}

pub async fn logs(client: &ApiClient, a: LogArgs) -> Result<ExitCode> {
    /// `10m` (that long ago) or an RFC 3339 timestamp → unix milliseconds.
    fn when(flag: &str, s: &str) -> Result<String> {
        let t = match humantime::parse_duration(s) {
            Ok(d) => std::time::SystemTime::now().checked_sub(d),
            Err(_) => humantime::parse_rfc3339_weak(s).ok(),
        };
        let ms = t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_millis());
        ms.map(|ms| ms.to_string()).ok_or_else(|| {
            anyhow::anyhow!("{flag} {s:?}: expected a duration like 10m or 1h30m, or a time like 2024-05-01T12:00:00Z")
        })
    }
    let since = a.since.as_deref().map(|s| when("--since", s)).transpose()?;
    let until = a.until.as_deref().map(|s| when("--until", s)).transpose()?;
    let q = query(&[
        ("service", a.service),
        ("app", a.app),
        ("task", a.task),
        ("source", a.source),
        ("since", since),
        ("until", until),
        ("grep", a.grep),
        ("n", Some(a.lines.to_string())),
        ("follow", Some(a.follow.to_string())),
    ]);
    let mut lines = client.lines(&format!("/v1/logs?{q}")).await.map_err(api_error)?;
    let color = std::io::stdout().is_terminal();
    while let Some(line) = lines.next().await.map_err(api_error)? {
        if line.is_empty() {
            continue; // keep-alive
        }
        let mut out = std::io::stdout().lock();
        if a.json {
            let _ = out.write_all(&line);
            let _ = out.write_all(b"\n");
        } else if let Ok(r) = serde_json::from_slice::<Record>(&line) {
            let _ = writeln!(out, "{}", format_record(&r, color));
        }
        if a.follow {
            let _ = out.flush();
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn events(client: &ApiClient, n: usize, json: bool) -> Result<ExitCode> {
    let events: Value = client.get(&format!("/v1/events?n={n}")).await.map_err(api_error)?;
    if json {
        println!("{events}");
        return Ok(ExitCode::SUCCESS);
    }
    for e in events.as_array().into_iter().flatten() {
        let mut r = Record::new(Source::Event, s(&e["message"]));
        r.time = e["time"].as_u64().unwrap_or(0) * 1_000_000;
        r.service = e["service"].as_str().map(str::to_string);
        println!("{} {:<22} {}", &format_record(&r, false)[..12], s(&e["kind"]), s(&e["message"]));
    }
    Ok(ExitCode::SUCCESS)
}

/// A state-changing call with a one-line summary of what is now true.
pub async fn post(client: &ApiClient, path: &str, body: Value, json: bool) -> Result<ExitCode> {
    let answer: Value = client.post_json(path, &body).await.map_err(api_error)?;
    if json {
        println!("{answer}");
        return Ok(ExitCode::SUCCESS);
    }
    let what = match answer["service"].as_str() {
        Some(svc) => format!("{}/{svc}", s(&answer["app"])),
        None => s(&answer["app"]),
    };
    let line = if answer["maintenance"] == true {
        format!("{what} is in maintenance mode: requests get the maintenance page (503)")
    } else if answer["maintenance"] == false {
        format!("{what} left maintenance mode")
    } else if answer["paused"] == true {
        format!(
            "{what} is paused: new requests are held for up to {}s; `wharf resume` releases them",
            answer["max_secs"]
        )
    } else {
        format!("{what} resumed")
    };
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// `wharf destroy APP`: asks for the app's name on a terminal unless `--yes`;
/// refuses without either, so a script can't destroy an app by accident.
pub async fn destroy(
    client: &ApiClient,
    app: &str,
    yes: bool,
    purge: bool,
    force: bool,
    json: bool,
) -> Result<ExitCode> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "refusing to destroy app `{app}` without confirmation: stdin is not a terminal\n  \
                 hint: pass --yes to confirm from a script"
            );
        }
        let what = if purge { "and its stored releases" } else { "(its stored releases are kept)" };
        eprint!(
            "This stops every task of `{app}` and deletes its routes, services, jobs, deployments and \
             revisions {what}.\nType the app's name to confirm: "
        );
        std::io::stderr().flush()?;
        let mut typed = String::new();
        std::io::stdin().read_line(&mut typed)?;
        if typed.trim() != app {
            eprintln!("not destroyed: `{}` is not `{app}`", typed.trim());
            return Ok(ExitCode::FAILURE);
        }
    }
    let path = format!("/v1/apps/{app}?purge={purge}&force={force}");
    let report: Value = client.delete(&path).await.map_err(api_error)?;
    if json {
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    let services: Vec<String> = report["services"].as_array().into_iter().flatten().map(s).collect();
    if let Some(id) = report["aborted_deployment"].as_u64() {
        eprintln!("deployment {app}#{id} aborted");
    }
    eprintln!(
        "destroyed app {app}: {} tasks stopped; services removed: {}",
        report["tasks_stopped"],
        if services.is_empty() { "none".into() } else { services.join(", ") }
    );
    match report["releases_kept"].as_u64() {
        _ if report["purged"] == true => eprintln!("its releases were deleted"),
        Some(n) if n > 0 => eprintln!("{n} releases kept (`wharf destroy {app} --purge` deletes them)"),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_shown_in_utc_to_the_second() {
        assert_eq!(super::when(&serde_json::json!(1_769_742_000_999u64)), "2026-01-30 03:00:00");
        assert_eq!(super::when(&serde_json::Value::Null), "-");
    }
}
