//! `wharf jobs`, `wharf job runs NAME`, `wharf job trigger NAME`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use wharf_api_types::{AppQuery, JobRun, JobRunsQuery, LogQuery, RunState, TriggerRequest};
use wharf_client::ApiClient;
use wharf_logs::Record;

use crate::print::{api_error, format_record, json as print_json, table, when};

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

fn duration(run: &JobRun) -> String {
    match (run.started_at, run.ended_at) {
        (Some(s), Some(e)) if run.task.is_some() => {
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
fn outcome(run: &JobRun) -> String {
    let state = run.state.as_str().replace('_', " ");
    match (run.exit_code, run.signal) {
        (Some(c), _) if state == "failed" => format!("failed (exit {c})"),
        (_, Some(sig)) if state == "failed" => format!("failed (signal {sig})"),
        _ => state,
    }
}

pub async fn list(client: &ApiClient, app: Option<String>, json: bool) -> Result<ExitCode> {
    let v = client.jobs(&AppQuery { app }).await.map_err(api_error)?;
    if json {
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = v.now;
    if v.jobs.is_empty() {
        println!("app {} has no jobs (add a [job.NAME] table with a schedule to wharf.toml)", v.app);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = v
        .jobs
        .iter()
        .map(|j| {
            let next = j.next_run.map_or("-".into(), |t| format!("{} ({})", when(Some(t)), relative(t, now)));
            let last = match &j.last_run {
                Some(r) => {
                    let at = r.started_at.unwrap_or(r.created_at);
                    format!("{} {}", outcome(r), relative(at, now))
                }
                None => "-".into(),
            };
            vec![
                j.name.clone(),
                j.schedule.clone(),
                j.timezone.clone(),
                j.service.clone(),
                next,
                last,
                j.active.to_string(),
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

async fn fetch_runs(client: &ApiClient, name: &str, app: &Option<String>, n: Option<usize>) -> Result<Vec<JobRun>> {
    let q = JobRunsQuery { app: app.clone(), job: name.to_string(), n };
    client.job_runs(&q).await.map_err(api_error)
}

async fn runs(client: &ApiClient, name: String, app: Option<String>, n: Option<usize>, json: bool) -> Result<ExitCode> {
    let runs = fetch_runs(client, &name, &app, n).await?;
    if json {
        print_json(&runs)?;
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
                r.id.clone(),
                r.trigger.as_str().to_string(),
                r.attempt.to_string(),
                when(r.started_at),
                when(r.ended_at),
                duration(r),
                outcome(r),
                r.task.clone().unwrap_or_else(|| "-".into()),
                r.message.clone(),
            ]
        })
        .collect();
    table(&["RUN", "TRIGGER", "TRY", "STARTED (UTC)", "ENDED (UTC)", "TOOK", "OUTCOME", "TASK", "DETAIL"], rows);
    println!("\nthe output of a run: wharf logs --task TASK");
    Ok(ExitCode::SUCCESS)
}

/// The exit status `wharf job trigger` ends with: the run's own exit code,
/// 128 + signal, 124 for a timeout (as timeout(1)), 1 otherwise.
fn exit_status(run: &JobRun) -> u8 {
    match run.state {
        RunState::Succeeded => 0,
        RunState::TimedOut => 124,
        RunState::Failed => match (run.exit_code, run.signal) {
            (Some(c), _) => (c.clamp(1, 255)) as u8,
            (_, Some(s)) => s.saturating_add(128).clamp(1, 255) as u8,
            _ => 1,
        },
        _ => 1,
    }
}

async fn trigger(client: &ApiClient, name: String, app: Option<String>, detach: bool) -> Result<ExitCode> {
    let run = client.trigger_job(&TriggerRequest { app: app.clone(), job: name.clone() }).await.map_err(api_error)?;
    let id = run.id.clone();
    let Some(task) = run.task.clone() else {
        eprintln!("job {name} run {id}: {}", outcome(&run));
        eprintln!("  {}", run.message);
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
            let q = LogQuery { task: Some(task), n: Some(10_000), follow: true, ..Default::default() };
            let Ok(mut lines) = client.logs(&q).await else { return };
            while let Ok(Some(line)) = lines.next().await {
                print_line(line.record, color, &last_seq);
            }
        })
    };
    let mut last = run;
    // Bounded: a run cannot outlive its timeout by much; the server stops it.
    for _ in 0..(40 * 60 * 60 * 24) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let runs = fetch_runs(client, &name, &app, None).await?;
        if let Some(r) = runs.into_iter().find(|r| r.id == id) {
            last = r;
        }
        if !last.state.is_active() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    follow.abort();
    let q = LogQuery { task: Some(task.clone()), n: Some(10_000), ..Default::default() };
    if let Ok(mut lines) = client.logs(&q).await {
        while let Ok(Some(line)) = lines.next().await {
            print_line(line.record, color, &last_seq);
        }
    }
    let _ = std::io::stdout().flush();
    eprintln!("job {name} run {id} {} after {}: {}", outcome(&last), duration(&last), last.message);
    Ok(ExitCode::from(exit_status(&last)))
}

fn print_line(record: Option<Record>, color: bool, last_seq: &AtomicU64) {
    let Some(r) = record else { return };
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

    /// A run in `state` that ended with `exit_code` or `signal`.
    fn v(state: RunState, exit_code: Option<i32>, signal: Option<i32>) -> JobRun {
        JobRun {
            app: "a".into(),
            job: "j".into(),
            id: "1".into(),
            sort: 0,
            trigger: wharf_api_types::RunTrigger::Manual,
            scheduled_at: None,
            attempt: 1,
            state,
            service: "web".into(),
            revision: None,
            task: None,
            created_at: 0,
            started_at: None,
            ended_at: None,
            deadline: None,
            not_before: None,
            exit_code,
            signal,
            message: String::new(),
        }
    }

    #[test]
    fn exit_status_follows_the_run() {
        assert_eq!(exit_status(&v(RunState::Succeeded, Some(0), None)), 0);
        assert_eq!(exit_status(&v(RunState::Failed, Some(3), None)), 3);
        assert_eq!(exit_status(&v(RunState::Failed, None, Some(9))), 137);
        assert_eq!(exit_status(&v(RunState::TimedOut, None, Some(15))), 124);
        assert_eq!(exit_status(&v(RunState::Skipped, None, None)), 1);
        assert_eq!(relative(90_000, 0), "in 1m");
        assert_eq!(relative(0, 7_200_000), "2h0m ago");
    }
}
