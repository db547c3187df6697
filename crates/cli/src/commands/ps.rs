//! `wharf ps`: tasks, with state, health, pid, port, restarts, CPU and memory.

use std::process::ExitCode;

use anyhow::Result;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json, table};

pub async fn ps(client: &ApiClient, json: bool) -> Result<ExitCode> {
    let tasks = client.tasks().await.map_err(api_error)?;
    if json {
        print_json(&tasks)?;
        return Ok(ExitCode::SUCCESS);
    }
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows = tasks
        .iter()
        .map(|t| {
            let health_text = dash(t.health.map(|h| h.as_str().to_string()));
            let health = if t.draining {
                "draining".to_string()
            } else if t.ejected {
                format!("{health_text} (ejected)")
            } else {
                health_text
            };
            let mem = t.memory_bytes.map_or("-".into(), |b| format!("{:.1}MiB", b as f64 / 1048576.0));
            let cpu = t.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%"));
            vec![
                t.id.clone(),
                format!("{}@{}", t.service, t.revision),
                t.state.as_str().to_string(),
                health,
                dash(t.pid.map(|p| p.to_string())),
                dash(t.port.map(|p| p.to_string())),
                t.restarts.to_string(),
                t.in_flight.to_string(),
                cpu,
                mem,
            ]
        })
        .collect();
    table(&["TASK", "REVISION", "STATE", "HEALTH", "PID", "PORT", "RESTARTS", "BUSY", "CPU", "MEM"], rows);
    Ok(ExitCode::SUCCESS)
}
