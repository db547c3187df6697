//! `wharf status`: apps, services and their revisions, replicas and readiness.

use std::process::ExitCode;

use anyhow::Result;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json, table};

pub async fn status(client: &ApiClient, json: bool) -> Result<ExitCode> {
    let status = client.status().await.map_err(api_error)?;
    if json {
        print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("wharf {} · up {}s · limits: {}", status.version, status.uptime_secs, status.limits);
    for p in &status.problems {
        println!("warning: {p}");
    }
    if status.apps.is_empty() {
        println!("no apps deployed yet: run `wharf deploy DIR`");
        return Ok(ExitCode::SUCCESS);
    }
    for a in &status.apps {
        println!();
        let release = &a.release;
        println!("app {} · release {}", a.name, &release[..release.len().min(12)]);
        let rows = a
            .services
            .iter()
            .map(|sv| {
                let r: Vec<String> = a
                    .routes
                    .iter()
                    .filter(|r| r.service == sv.name)
                    .map(|r| format!("{}{}", r.host.as_deref().unwrap_or(""), r.path))
                    .collect();
                let traffic = match (sv.maintenance, sv.paused) {
                    (true, _) => "maintenance",
                    (_, true) => "paused",
                    _ => "-",
                };
                vec![
                    sv.name.clone(),
                    sv.kind.clone(),
                    format!("@{}", sv.revision),
                    format!("{}/{}", sv.ready, sv.replicas),
                    if sv.old > 0 { sv.old.to_string() } else { "-".into() },
                    if r.is_empty() { "-".into() } else { r.join(" ") },
                    traffic.into(),
                ]
            })
            .collect();
        table(&["SERVICE", "KIND", "REVISION", "READY", "OLD", "ROUTES", "TRAFFIC"], rows);
        for sv in &a.services {
            if let Some(c) = &sv.canary {
                let next = match c.next_in_secs {
                    Some(s) if c.step >= c.steps => format!(", promoted in {s}s"),
                    Some(s) => format!(", next in {s}s"),
                    None => ", new tasks starting".into(),
                };
                let (name, rev, from) = (&sv.name, sv.revision, c.from);
                println!(
                    "canary {name}@{rev} {}% (step {}/{}{next}); {name}@{from} {}%",
                    c.weight,
                    c.step,
                    c.steps,
                    100 - c.weight.min(100)
                );
            }
        }
        if let Some(d) = &a.deployment {
            println!("last deployment #{}: {} ({})", d.id, d.state.as_str(), d.message);
        }
    }
    Ok(ExitCode::SUCCESS)
}
