//! `wharf jobs`, `wharf job runs NAME`, `wharf job trigger NAME`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;
use wharf_api::client::ApiClient;
use wharf_logs::Record;

use crate::output::{api_error, format_record, query, table, when};

#[derive(Subcommand)]
pub enum JobCommand {
    /// A job's run history: when, how long, outcome, task (its output: `wharf logs --task TASK`).
    Runs {
        name: String,
        #[arg(long)]
        app: Option<String>,
        /// Only the newest N runs.
        #[arg(short = 'n', long)]
        lines: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Run a job now (under its concurrency policy) and follow its output; exits with the run's status.
    Trigger {
        name: String,
        #[arg(long)]
        app: Option<String>,
        /// Return once the run has started, without following it.
        #[arg(long)]
        detach: bool,
    },
}

/// "in 3m", "2h ago": `ms` relative to `now` (both scheduler clock).
fn relative(ms: u64, now: u64) -> String {
    let (d, future) = if ms >= now { (ms - now, true) } else { (now - ms, false) };
    let secs = d / 1000;
    let text = if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h{}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn duration(run: &Value) -> String {
    match (run["started_at"].as_u64(), run["ended_at"].as_u64()) {
        (Some(s), Some(e)) if run["task"].is_string() => {
            let ms = e.saturating_sub(s);
            if ms < 10_000 {
                format!("{:.1}s", ms as f64 / 1000.0)
            } else {
                format!("{}s", ms / 1000)
            }
        }
        _ => "-".into(),
    }
}

/// "succeeded", "failed (exit 3)", "timed out", "skipped"...
fn outcome(run: &Value) -> String {
    let state = run["state"].as_str().unwrap_or("?").replace('_', " ");
    match (run["exit_code"].as_i64(), run["signal"].as_i64()) {
        (Some(c), _) if state == "failed" => format!("failed (exit {c})"),
        (_, Some(sig)) if state == "failed" => format!("failed (signal {sig})"),
        _ => state,
    }
}

pub async fn list(client: &ApiClient, app: Option<String>, json: bool) -> Result<ExitCode> {
    let v: Value = client.get(&format!("/v1/jobs?{}", query(&[("app", app)]))).await.map_err(api_error)?;
    if json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let now = v["now"].as_u64().unwrap_or(0);
    let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        println!(
            "app {} has no jobs (add a [job.NAME] table with a schedule to wharf.toml)",
            v["app"].as_str().unwrap_or("?")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows = jobs
        .iter()
        .map(|j| {
            let next =
                j["next_run"].as_u64().map_or("-".into(), |t| format!("{} ({})", when(&t.into()), relative(t, now)));
            let last = match j["last_run"].as_object() {
                Some(_) => {
                    let r = &j["last_run"];
                    let at = r["started_at"].as_u64().or(r["created_at"].as_u64()).unwrap_or(0);
                    format!("{} {}", outcome(r), relative(at, now))
                }
                None => "-".into(),
            };
            vec![
                j["name"].as_str().unwrap_or("?").to_string(),
                j["schedule"].as_str().unwrap_or("?").to_string(),
                j["timezone"].as_str().unwrap_or("?").to_string(),
                j["service"].as_str().unwrap_or("?").to_string(),
                next,
                last,
                j["active"].as_u64().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    table(&["JOB", "SCHEDULE", "TZ", "SERVICE", "NEXT RUN (UTC)", "LAST RUN", "RUNNING"], rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn run(client: &ApiClient, cmd: JobCommand) -> Result<ExitCode> {
    match cmd {
        JobCommand::Runs { name, app, lines, json } => runs(client, name, app, lines, json).await,
        JobCommand::Trigger { name, app, detach } => trigger(client, name, app, detach).await,
    }
}

async fn fetch_runs(client: &ApiClient, name: &str, app: &Option<String>, n: Option<usize>) -> Result<Vec<Value>> {
    let q = query(&[("app", app.clone()), ("job", Some(name.to_string())), ("n", n.map(|n| n.to_string()))]);
    let v: Value = client.get(&format!("/v1/jobs/runs?{q}")).await.map_err(api_error)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

async fn runs(client: &ApiClient, name: String, app: Option<String>, n: Option<usize>, json: bool) -> Result<ExitCode> {
    let runs = fetch_runs(client, &name, &app, n).await?;
    if json {
        println!("{}", Value::Array(runs));
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("job {name} has not run yet");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = runs
        .iter()
        .map(|r| {
            vec![
                r["id"].as_str().unwrap_or("?").to_string(),
                r["trigger"].as_str().unwrap_or("?").to_string(),
                r["attempt"].to_string(),
                when(&r["started_at"]),
                when(&r["ended_at"]),
                duration(r),
                outcome(r),
                r["task"].as_str().unwrap_or("-").to_string(),
                r["message"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(&["RUN", "TRIGGER", "TRY", "STARTED (UTC)", "ENDED (UTC)", "TOOK", "OUTCOME", "TASK", "DETAIL"], rows);
    println!("\nthe output of a run: wharf logs --task TASK");
    Ok(ExitCode::SUCCESS)
}

/// The exit status `wharf job trigger` ends with: the run's own exit code,
/// 128 + signal, 124 for a timeout (as timeout(1)), 1 otherwise.
fn exit_status(run: &Value) -> u8 {
    match run["state"].as_str() {
        Some("succeeded") => 0,
        Some("timed_out") => 124,
        Some("failed") => match (run["exit_code"].as_i64(), run["signal"].as_i64()) {
            (Some(c), _) => (c.clamp(1, 255)) as u8,
            (_, Some(s)) => (128 + s).clamp(1, 255) as u8,
            _ => 1,
        },
        _ => 1,
    }
}

async fn trigger(client: &ApiClient, name: String, app: Option<String>, detach: bool) -> Result<ExitCode> {
    let body = serde_json::json!({ "app": app, "job": name });
    let run: Value = client.post_json("/v1/jobs/trigger", &body).await.map_err(api_error)?;
    let id = run["id"].as_str().unwrap_or("?").to_string();
    let Some(task) = run["task"].as_str().map(str::to_string) else {
        eprintln!("job {name} run {id}: {}", outcome(&run));
        eprintln!("  {}", run["message"].as_str().unwrap_or(""));
        return Ok(ExitCode::from(exit_status(&run)));
    };
    eprintln!("job {name} run {id} started as task {task}");
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    // Output, followed while the run goes on; then whatever came after.
    let color = std::io::stdout().is_terminal();
    let last_seq = Arc::new(AtomicU64::new(0));
    let follow = {
        let (client, task, last_seq) = (client.clone(), task.clone(), last_seq.clone());
        tokio::spawn(async move {
            let q = query(&[("task", Some(task)), ("n", Some("10000".into())), ("follow", Some("true".into()))]);
            let Ok(mut lines) = client.lines(&format!("/v1/logs?{q}")).await else { return };
            while let Ok(Some(line)) = lines.next().await {
                print_line(&line, color, &last_seq);
            }
        })
    };
    let mut last = run;
    // Bounded: a run cannot outlive its timeout by much; the server stops it.
    for _ in 0..(40 * 60 * 60 * 24) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let runs = fetch_runs(client, &name, &app, None).await?;
        if let Some(r) = runs.into_iter().find(|r| r["id"] == id.as_str()) {
            last = r;
        }
        if !matches!(last["state"].as_str(), Some("starting" | "running" | "waiting")) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    follow.abort();
    let q = query(&[("task", Some(task.clone())), ("n", Some("10000".into()))]);
    if let Ok(mut lines) = client.lines(&format!("/v1/logs?{q}")).await {
        while let Ok(Some(line)) = lines.next().await {
            print_line(&line, color, &last_seq);
        }
    }
    let _ = std::io::stdout().flush();
    eprintln!(
        "job {name} run {id} {} after {}: {}",
        outcome(&last),
        duration(&last),
        last["message"].as_str().unwrap_or("")
    );
    Ok(ExitCode::from(exit_status(&last)))
}

fn print_line(line: &[u8], color: bool, last_seq: &AtomicU64) {
    let Ok(r) = serde_json::from_slice::<Record>(line) else { return };
    // Each record once, whether from the live stream or the final read.
    if r.seq <= last_seq.load(Ordering::SeqCst) {
        return;
    }
    last_seq.store(r.seq, Ordering::SeqCst);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", format_record(&r, color));
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_follows_the_run() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(exit_status(&v(r#"{"state":"succeeded","exit_code":0}"#)), 0);
        assert_eq!(exit_status(&v(r#"{"state":"failed","exit_code":3}"#)), 3);
        assert_eq!(exit_status(&v(r#"{"state":"failed","signal":9}"#)), 137);
        assert_eq!(exit_status(&v(r#"{"state":"timed_out","signal":15}"#)), 124);
        assert_eq!(exit_status(&v(r#"{"state":"skipped"}"#)), 1);
        assert_eq!(relative(90_000, 0), "in 1m");
        assert_eq!(relative(0, 7_200_000), "2h0m ago");
    }
}
