//! `wharf up DIR`: a server of its own, the app deployed through its API
//! (the same path as `wharf deploy`), the stream printed.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wharf_api_types::{DeploymentState, LogQuery, TOKEN_FILE};
use wharf_client::{ApiClient, LogStream};

use crate::print::{api_error, format_record};
use crate::server;

/// Where `wharf up` listens.
pub struct Listen {
    pub http: SocketAddr,
    /// HTTPS with certificates from a local CA (or the routes' files); None: no HTTPS.
    pub https: Option<SocketAddr>,
    pub api: SocketAddr,
}

/// `wharf up`: a server of its own, the app (its environment `env`, if given) deployed, the stream printed.
pub async fn up(dir: PathBuf, env: Option<&str>, data: Option<PathBuf>, at: Listen, quiet: bool) -> Result<ExitCode> {
    let Listen { http, https, api } = at;
    let t0 = Instant::now();
    let mut stop = server::StopSignal::new()?;
    let dir = dir.canonicalize().with_context(|| format!("app directory {} not found", dir.display()))?;
    // Validate before starting anything.
    if let Err(e) = wharf_spec::load_dir_env(&dir, env) {
        eprintln!("{e}");
        return Ok(ExitCode::FAILURE);
    }
    let data = data.unwrap_or_else(|| dir.join(".wharf"));
    let mut opts = server::ServerOptions::new(data.clone(), api, http);
    opts.secret_key = std::env::var(server::SECRET_KEY_ENV).ok();
    opts.unreachable = crate::task_user::Unreachable::RunAsServer;
    if https.is_some() {
        // Development: certificates from a CA of this server's own, at once, no CA to reach.
        opts.https = https;
        opts.acme = Some(server::AcmeConfig {
            directory: server::LOCAL_CA.into(),
            email: None,
            ca_root: None,
            challenge: server::AcmeChallenge::Http01,
            backoff: Duration::from_secs(5),
        });
    }
    let running = server::start(opts).await?;
    if let Some(addr) = running.https {
        let ca = data.join("local-ca").join("ca.pem");
        eprintln!(
            "wharf: HTTPS on https://{addr} with certificates from a local CA; to trust it: \
             curl --cacert {ca}, or (Debian) cp {ca} /usr/local/share/ca-certificates/wharf-local.crt && update-ca-certificates",
            ca = ca.display()
        );
    }
    let token_file = data.join(TOKEN_FILE);
    let token = match std::fs::read_to_string(&token_file) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            running.stop().await;
            return Err(e).with_context(|| format!("cannot read the API token {}", token_file.display()));
        }
    };
    let client = ApiClient::new(&running.api_url, &token);
    // Following starts before the upload, so the deploy's first lines show.
    let printer = if quiet {
        None
    } else {
        match client.logs(&LogQuery { n: Some(0), follow: true, ..Default::default() }).await {
            Ok(stream) => Some(tokio::spawn(print_stream(stream))),
            Err(e) => {
                running.stop().await;
                return Err(api_error(e));
            }
        }
    };
    let upload = super::deploy::pack(&dir)?;
    let report = match client.deploy_env(upload, env).await {
        Ok(r) => r,
        Err(e) if e.kind() == Some("invalid_spec") => {
            eprintln!("{}", api_error(e));
            running.stop().await;
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            running.stop().await;
            return Err(api_error(e));
        }
    };
    let app = report.app.clone();
    let base = format!("http://{}", running.http);
    eprintln!("wharf: {} is deploying ({})", app, report.message);
    if let Ok(status) = client.status().await {
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
            let Ok(status) = client.status().await else { continue };
            let Some(a) = status.apps.iter().find(|a| a.name == app) else { continue };
            let Some(d) = &a.deployment else { continue };
            match d.state {
                DeploymentState::Succeeded | DeploymentState::Unchanged => {
                    eprintln!("wharf: {app} is ready, {} ms after start", t0.elapsed().as_millis());
                    return;
                }
                DeploymentState::InProgress => {}
                other => {
                    eprintln!("wharf: {app} deployment {}: {}", other.as_str(), d.message);
                    return;
                }
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

/// Prints the stream until it ends; stops printing (and only that; the
/// server goes on) once stdout is gone, as with `wharf up | head`.
async fn print_stream(mut stream: LogStream) {
    use std::io::Write;
    let color = std::io::stdout().is_terminal();
    while let Ok(Some(line)) = stream.next().await {
        let Some(r) = line.record else { continue };
        let text = if r.fields.get("kind").and_then(|k| k.as_str()) == Some("logs.skipped") {
            // The server's note that this reader fell behind: "N records skipped: ...".
            format!("... {}", r.message.split(':').next().unwrap_or(&r.message))
        } else {
            format_record(&r, color)
        };
        if writeln!(std::io::stdout(), "{text}").is_err() {
            return;
        }
    }
}
