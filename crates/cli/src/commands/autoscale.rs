//! `wharf autoscale SERVICE`: the policy, recent datapoints and decisions.

use std::process::ExitCode;

use anyhow::Result;
use wharf_api_types::ServiceQuery;
use wharf_client::ApiClient;
use wharf_spec::{Rate, ScaleRule};

use crate::print::{api_error, json as print_json};

pub async fn autoscale(client: &ApiClient, app: Option<String>, service: String, json: bool) -> Result<ExitCode> {
    let v = client.autoscale(&ServiceQuery { app, service: service.clone() }).await.map_err(api_error)?;
    if json {
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(p) = &v.policy else {
        println!("{service}: no autoscaling (`scale` is not set); {} replicas", v.replicas);
        return Ok(ExitCode::SUCCESS);
    };
    let pct = |r: Rate| format!("{:.0}%", f64::from(r.per_million) / 10_000.0);
    let rule = match p.rule {
        ScaleRule::Target { cpu } => format!("target {} CPU", pct(cpu)),
        ScaleRule::Step { above, below } => format!("+{0} at ≥ {1}, −{0} below {2}", p.step, pct(above), pct(below)),
    };
    println!(
        "{service}: {} replicas (min {}, max {}); {rule}; {} datapoints of {}s; cooldown {}s",
        v.replicas,
        p.min,
        p.max,
        p.datapoints,
        p.period.as_secs(),
        p.cooldown.as_secs()
    );
    let points: Vec<String> = v.datapoints.iter().map(|d| format!("{:.0}%/{}", d.cpu * 100.0, d.tasks)).collect();
    let recent = &points[points.len().saturating_sub(20)..];
    println!(
        "datapoints (CPU/tasks, newest last): {}",
        if recent.is_empty() { "none yet".into() } else { recent.join(" ") }
    );
    for d in &v.decisions {
        let held = if d.applied { "" } else { " (held: a deployment was running)" };
        println!("  {} → {}: {}{held}", d.from, d.to, d.reason);
    }
    Ok(ExitCode::SUCCESS)
}
