//! `wharf up DIR`: a server of its own, the app deployed, the stream printed.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wharf_control::DeployError;
use wharf_logs::{Filter, Record};

use crate::print::format_record;
use crate::server;

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
    let archive = super::deploy::pack(&dir)?.into_bytes();
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
