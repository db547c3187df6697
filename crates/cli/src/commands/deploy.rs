//! `wharf deploy DIR`: pack, upload, follow the rollout.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wharf_api_types::{DeploymentState, PromoteRequest, ServiceView};
use wharf_client::{ApiClient, Upload};

use crate::print::{api_error, json as print_json};

/// Packs DIR into a release to upload.
pub fn pack(dir: &Path) -> Result<Upload> {
    Upload::pack(dir).with_context(|| format!("cannot pack {}", dir.display()))
}

/// `env`: deploy the environment `[env.ENV]`; the server reads the release with it too.
pub async fn deploy(client: &ApiClient, dir: &Path, env: Option<&str>, detach: bool, json: bool) -> Result<ExitCode> {
    match wharf_spec::load_dir_env(dir, env) {
        Err(e) => {
            eprintln!("{e}");
            eprintln!("nothing was deployed");
            return Ok(ExitCode::FAILURE);
        }
        Ok(spec) => {
            for note in spec.notes() {
                eprintln!("note: {note}");
            }
        }
    }
    let upload = pack(dir)?;
    if !json {
        eprintln!("uploading release ({} KiB) to {}", upload.len().div_ceil(1024), client.base());
    }
    let report = client.deploy_env(upload, env).await.map_err(api_error)?;
    let app = report.app.clone();
    let id = report.deployment;
    if !json {
        eprintln!("deployment {app}#{id}: {}", report.message);
    }
    if detach || report.state != DeploymentState::InProgress {
        if json {
            print_json(&report)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow(client, &app, id, json).await
}

/// How often `wharf deploy` repeats a health-check failure that stays the same.
const HEALTH_REPEAT: Duration = Duration::from_secs(10);

/// Follows a deployment until it ends, printing each step and the tasks'
/// progress as they change. Exit status 0 only when it succeeded.
/// `wharf deploy --promote`: a running canary takes all the requests now;
/// then follows the deployment to its end like a deploy.
pub async fn promote(
    client: &ApiClient,
    app: Option<String>,
    service: Option<String>,
    detach: bool,
    json: bool,
) -> Result<ExitCode> {
    let d = client.promote(&PromoteRequest { app, service }).await.map_err(api_error)?;
    if !json {
        eprintln!("deployment {}#{}: promoted; the new revisions take all the requests", d.app, d.id);
    }
    if detach {
        if json {
            print_json(&d)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow(client, &d.app, d.id, json).await
}

pub async fn follow(client: &ApiClient, app: &str, id: u64, json: bool) -> Result<ExitCode> {
    let mut last_step = String::new();
    let mut last_line = String::new();
    // Per task, the last health-check failure shown, and when.
    let mut shown: std::collections::HashMap<String, (String, Instant)> = Default::default();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = client.status().await.map_err(api_error)?;
        let Some(a) = status.apps.iter().find(|a| a.name == app) else {
            continue;
        };
        let Some(d) = a.deployment.as_ref().filter(|d| d.id == id) else {
            continue;
        };
        let step = d.step.as_str().to_string();
        let in_progress = d.state == DeploymentState::InProgress;
        let reason = d.reason.as_deref().unwrap_or("-");
        if !json && in_progress && step != last_step {
            let text = match step.as_str() {
                "release" => "running the release command".to_string(),
                "rollout" => "starting new tasks".to_string(),
                "bake" => match (d.bake_until, d.switched_at) {
                    (Some(until), Some(at)) if until > at => format!(
                        "switched: all traffic on the new revisions; watching them for {:.0}s",
                        (until - at) as f64 / 1000.0
                    ),
                    _ => "switched: all traffic on the new revisions".to_string(),
                },
                "rollback" => format!("rolling back: {reason}"),
                other => other.to_string(),
            };
            eprintln!("» {text}");
            last_step = step;
        }
        let line = a.services.iter().map(service_progress).collect::<Vec<_>>().join("  ");
        if !json && in_progress && line != last_line {
            eprintln!("  {line}");
            last_line = line;
        }
        for f in a.services.iter().flat_map(|sv| sv.health_failing.iter()) {
            let (task, error) = f.split_once(": ").unwrap_or(("", f));
            if json || !in_progress {
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
        if in_progress {
            continue;
        }
        if json {
            print_json(d)?;
        } else {
            let took = match d.finished_at {
                Some(b) => format!(" in {:.1}s", b.saturating_sub(d.started_at) as f64 / 1000.0),
                None => String::new(),
            };
            match d.state {
                DeploymentState::Succeeded => eprintln!("deployment {app}#{id} succeeded{took}: {}", d.message),
                other => eprintln!("deployment {app}#{id} {}{took}: {reason}", other.as_str().replace('_', " ")),
            }
        }
        return Ok(if d.state == DeploymentState::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
}

/// `api@4 2/2 ready, 1 old, 2 draining` for one service of `wharf status`.
fn service_progress(sv: &ServiceView) -> String {
    let mut out = format!("{}@{} {}/{} ready", sv.name, sv.revision, sv.ready, sv.replicas);
    for (n, what) in [(sv.old, "old"), (sv.standby, "on standby"), (sv.draining, "draining")] {
        if n > 0 {
            out.push_str(&format!(", {n} {what}"));
        }
    }
    out
}
