//! `wharf run SERVICE -- COMMAND`: a command as a one-off task of a
//! service's current revision; prints its output as it comes and exits
//! with its exit status. Ctrl-C stops it.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use wharf_api_types::{LogQuery, RunEnded, RunRequest};
use wharf_client::ApiClient;
use wharf_logs::{Record, Source};

use crate::print::api_error;

pub async fn run(client: &ApiClient, app: Option<String>, service: String, command: Vec<String>) -> Result<ExitCode> {
    let req = RunRequest { app, service: service.clone(), command: command.clone() };
    let started = client.run(&req).await.map_err(api_error)?;
    let task = started.task.clone();
    eprintln!("running `{}` as {task} ({}@{})", command.join(" "), service, started.revision);
    let q = LogQuery {
        app: Some(started.app.clone()),
        task: Some(task.clone()),
        n: Some(1_000_000),
        follow: true,
        ..Default::default()
    };
    let mut lines = client.logs(&q).await.map_err(api_error)?;
    let mut wait = {
        let (waiter, task) = (client.clone(), task.clone());
        tokio::spawn(async move { waiter.wait_run(&task).await })
    };
    let mut ended: Option<RunEnded> = None;
    loop {
        // Once it has ended, lines still on their way get a moment to arrive.
        let quiet = if ended.is_some() { Duration::from_millis(300) } else { Duration::from_secs(3600) };
        tokio::select! {
            line = tokio::time::timeout(quiet, lines.next_raw()) => match line {
                Ok(Ok(Some(l))) => print_line(&l),
                Ok(Ok(None)) | Ok(Err(_)) => if ended.is_some() { break },
                Err(_) => break,
            },
            r = &mut wait, if ended.is_none() => {
                ended = Some(r.map_err(|e| anyhow::anyhow!("{e}"))?.map_err(api_error)?);
            }
            _ = tokio::signal::ctrl_c() => {
                let _ = client.stop_run(&task).await;
                eprintln!("stopped {task}");
                return Ok(ExitCode::from(130));
            }
        }
    }
    let (code, signal) = ended.as_ref().map_or((None, None), |e| (e.code, e.signal));
    if code != Some(0) {
        eprintln!("{task}: {}", ended.as_ref().map_or("ended", |e| e.status.as_str()));
    }
    Ok(match (code, signal) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(s)) => ExitCode::from(s.saturating_add(128).clamp(0, 255) as u8),
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
