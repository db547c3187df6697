//! `wharf deployments`: when, how long, outcome, what changed.

use std::process::ExitCode;

use anyhow::Result;
use wharf_api_types::AppQuery;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json, table, when};

pub async fn deployments(client: &ApiClient, app: Option<String>, json: bool) -> Result<ExitCode> {
    // The server picks the only app when none is named, as for every other call.
    let list = client.deployments(&AppQuery { app }).await.map_err(api_error)?;
    if json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = list
        .iter()
        .map(|d| {
            let took = match d.finished_at {
                Some(b) => format!("{:.1}s", b.saturating_sub(d.started_at) as f64 / 1000.0),
                None => "-".into(),
            };
            let mut what = d.message.clone();
            if !d.canary_steps.is_empty() {
                let steps: Vec<String> = d
                    .canary_steps
                    .iter()
                    .map(|c| match c.step {
                        0 => format!("{}@{} promoted", c.service, c.revision),
                        n => format!("{}@{} {}% (step {n})", c.service, c.revision, c.weight),
                    })
                    .collect();
                what = format!("{what}; canary: {}", steps.join(" → "));
            }
            if let Some(r) = d.reason.as_deref().filter(|r| !r.is_empty()) {
                what = format!("{what} — {r}");
            }
            let outcome = d.state.as_str().replace('_', " ");
            vec![format!("#{}", d.id), when(Some(d.started_at)), took, outcome, what]
        })
        .collect();
    table(&["DEPLOYMENT", "STARTED (UTC)", "TOOK", "OUTCOME", "WHAT"], rows);
    Ok(ExitCode::SUCCESS)
}
