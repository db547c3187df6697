//! `wharf scale` and `wharf run`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;
use wharf_api::client::ApiClient;
use wharf_logs::{Record, Source};

use crate::output::{api_error, query};

/// `SERVICE=N` → (service, N).
pub fn parse_scale(arg: &str) -> Result<(String, u32)> {
    let Some((service, n)) = arg.split_once('=') else {
        bail!("`{arg}`: expected SERVICE=REPLICAS, e.g. api=3");
    };
    let n: u32 = n.trim().parse().map_err(|_| anyhow::anyhow!("`{arg}`: REPLICAS must be a number from 0 to 100"))?;
    if service.trim().is_empty() {
        bail!("`{arg}`: the service name is missing (SERVICE=REPLICAS)");
    }
    Ok((service.trim().to_string(), n))
}

/// Sets replicas, then (unless detached) waits until each service runs
/// exactly that many ready tasks; scale-in drains before stopping.
pub async fn scale(
    client: &ApiClient,
    app: Option<String>,
    targets: Vec<String>,
    detach: bool,
    json: bool,
) -> Result<ExitCode> {
    let targets: Vec<(String, u32)> = targets.iter().map(|t| parse_scale(t)).collect::<Result<_>>()?;
    if targets.is_empty() {
        bail!("say what to scale: wharf scale SERVICE=REPLICAS [SERVICE=REPLICAS...]");
    }
    let mut app_name = app.clone();
    for (service, n) in &targets {
        let body = serde_json::json!({ "app": app, "service": service, "replicas": n });
        let rec: Value = client.post_json("/v1/scale", &body).await.map_err(api_error)?;
        app_name = rec["app"].as_str().map(str::to_string);
        if !json {
            eprintln!("{service}: {n} replicas");
        }
    }
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut last = String::new();
    loop {
        let status: Value = client.get("/v1/status").await.map_err(api_error)?;
        let app = status["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| app_name.as_deref().is_none_or(|n| a["name"] == n)).cloned());
        let Some(app) = app else { bail!("the app is gone") };
        let views: Vec<&Value> = targets
            .iter()
            .filter_map(|(s, _)| app["services"].as_array()?.iter().find(|v| v["name"] == s.as_str()))
            .collect();
        let line = views
            .iter()
            .map(|v| {
                let draining = v["draining"].as_u64().unwrap_or(0);
                let d = if draining > 0 { format!(", {draining} draining") } else { String::new() };
                format!("{} {}/{} ready{d}", v["name"].as_str().unwrap_or(""), v["ready"], v["replicas"])
            })
            .collect::<Vec<_>>()
            .join("  ");
        if !json && line != last {
            eprintln!("  {line}");
            last = line;
        }
        let done = views.iter().all(|v| {
            v["ready"] == v["replicas"] && v["running"] == v["replicas"] && v["draining"] == 0 && v["old"] == 0
        });
        if done {
            if json {
                println!("{}", serde_json::json!({ "app": app["name"], "services": views }));
            }
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("not done after 5 minutes: {last} (see `wharf ps` and `wharf logs`)");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a command as a one-off task of a service's current revision, prints
/// its output as it comes, and exits with its exit status. Ctrl-C stops it.
pub async fn run(client: &ApiClient, app: Option<String>, service: String, command: Vec<String>) -> Result<ExitCode> {
    let body = serde_json::json!({ "app": app, "service": service, "command": command });
    let started: Value = client.post_json("/v1/run", &body).await.map_err(api_error)?;
    let task = started["task"].as_str().unwrap_or_default().to_string();
    eprintln!("running `{}` as {task} ({}@{})", command.join(" "), service, started["revision"]);
    let q = query(&[
        ("app", started["app"].as_str().map(str::to_string)),
        ("task", Some(task.clone())),
        ("n", Some("1000000".into())),
        ("follow", Some("true".into())),
    ]);
    let mut lines = client.lines(&format!("/v1/logs?{q}")).await.map_err(api_error)?;
    let waiter = client.clone();
    let wait_path = format!("/v1/run/{task}/wait");
    let mut wait = tokio::spawn(async move { waiter.post_json::<Value>(&wait_path, &serde_json::json!({})).await });
    let mut ended: Option<Value> = None;
    loop {
        // Once it has ended, lines still on their way get a moment to arrive.
        let quiet = if ended.is_some() { Duration::from_millis(300) } else { Duration::from_secs(3600) };
        tokio::select! {
            line = tokio::time::timeout(quiet, lines.next()) => match line {
                Ok(Ok(Some(l))) => print_line(&l),
                Ok(Ok(None)) | Ok(Err(_)) => if ended.is_some() { break },
                Err(_) => break,
            },
            r = &mut wait, if ended.is_none() => {
                ended = Some(r.map_err(|e| anyhow::anyhow!("{e}"))?.map_err(api_error)?);
            }
            _ = tokio::signal::ctrl_c() => {
                let _ = client.post_json::<Value>(&format!("/v1/run/{task}/stop"), &serde_json::json!({})).await;
                eprintln!("stopped {task}");
                return Ok(ExitCode::from(130));
            }
        }
    }
    let ended = ended.unwrap_or_default();
    let code = ended["code"].as_i64();
    if code != Some(0) {
        eprintln!("{task}: {}", ended["status"].as_str().unwrap_or("ended"));
    }
    Ok(match (code, ended["signal"].as_i64()) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(s)) => ExitCode::from((128 + s).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    })
}

fn print_line(line: &[u8]) {
    if line.is_empty() {
        return;
    }
    let Ok(r) = serde_json::from_slice::<Record>(line) else { return };
    let text = format!("{}\n", r.message);
    match r.source {
        Source::Stderr => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
        Source::Stdout => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        _ => {}
    }
}

/// `wharf autoscale SERVICE`: the policy, recent datapoints and decisions.
pub async fn autoscale(client: &ApiClient, app: Option<String>, service: String, json: bool) -> Result<ExitCode> {
    let q = query(&[("app", app), ("service", Some(service.clone()))]);
    let v: Value = client.get(&format!("/v1/autoscale?{q}")).await.map_err(api_error)?;
    if json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let p = &v["policy"];
    if p.is_null() {
        println!("{service}: no autoscaling (`scale` is not set); {} replicas", v["replicas"]);
        return Ok(ExitCode::SUCCESS);
    }
    let pct = |x: &Value| format!("{:.0}%", x["per_million"].as_f64().unwrap_or(0.0) / 10_000.0);
    let rule = if let Some(t) = p["rule"].get("target") {
        format!("target {} CPU", pct(&t["cpu"]))
    } else {
        let s = &p["rule"]["step"];
        format!("+{0} at ≥ {1}, −{0} below {2}", p["step"], pct(&s["above"]), pct(&s["below"]))
    };
    let secs = |d: &Value| d["secs"].as_u64().unwrap_or(0);
    println!(
        "{service}: {} replicas (min {}, max {}); {rule}; {} datapoints of {}s; cooldown {}s",
        v["replicas"],
        p["min"],
        p["max"],
        p["datapoints"],
        secs(&p["period"]),
        secs(&p["cooldown"])
    );
    let points: Vec<String> = v["datapoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| format!("{:.0}%/{}", d["cpu"].as_f64().unwrap_or(0.0) * 100.0, d["tasks"]))
        .collect();
    let recent = &points[points.len().saturating_sub(20)..];
    println!(
        "datapoints (CPU/tasks, newest last): {}",
        if recent.is_empty() { "none yet".into() } else { recent.join(" ") }
    );
    for d in v["decisions"].as_array().into_iter().flatten() {
        let held = if d["applied"] == false { " (held: a deployment was running)" } else { "" };
        println!("  {} → {}: {}{held}", d["from"], d["to"], d["reason"].as_str().unwrap_or(""));
    }
    Ok(ExitCode::SUCCESS)
}
