//! `wharf scale SERVICE=N...`: set replicas, then wait until each service
//! runs exactly that many ready tasks; scale-in drains before stopping.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use wharf_api_types::{ScaleRequest, ServiceView};
use wharf_client::ApiClient;

use crate::print::api_error;

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
        let req = ScaleRequest { app: app.clone(), service: service.clone(), replicas: *n };
        let rec = client.scale(&req).await.map_err(api_error)?;
        app_name = Some(rec.app);
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
        let status = client.status().await.map_err(api_error)?;
        let app = status.apps.into_iter().find(|a| app_name.as_deref().is_none_or(|n| a.name == n));
        let Some(app) = app else { bail!("the app is gone") };
        let views: Vec<&ServiceView> =
            targets.iter().filter_map(|(s, _)| app.services.iter().find(|v| v.name == *s)).collect();
        let line = views
            .iter()
            .map(|v| {
                let d = if v.draining > 0 { format!(", {} draining", v.draining) } else { String::new() };
                format!("{} {}/{} ready{d}", v.name, v.ready, v.replicas)
            })
            .collect::<Vec<_>>()
            .join("  ");
        if !json && line != last {
            eprintln!("  {line}");
            last = line;
        }
        let replicas = |v: &ServiceView| usize::try_from(v.replicas).unwrap_or(usize::MAX);
        let done =
            views.iter().all(|v| v.ready == replicas(v) && v.running == replicas(v) && v.draining == 0 && v.old == 0);
        if done {
            if json {
                println!("{}", serde_json::json!({ "app": app.name, "services": views }));
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
