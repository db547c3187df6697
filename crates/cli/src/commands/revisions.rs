//! `wharf revisions SERVICE`: a service's revisions, what changed in each,
//! and which can be rolled back to.

use std::process::ExitCode;

use anyhow::Result;
use wharf_api_types::ServiceQuery;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json, table, when};

pub async fn revisions(client: &ApiClient, app: Option<String>, service: String, json: bool) -> Result<ExitCode> {
    let revs = client.revisions(&ServiceQuery { app, service }).await.map_err(api_error)?;
    if json {
        print_json(&revs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut reasons = Vec::new();
    let rows = revs
        .iter()
        .map(|r| {
            let mark = if r.current { "*" } else { "" };
            let outcome = match (r.outcome, r.deployment) {
                (Some(o), Some(id)) => format!("{} (#{id})", o.as_str().replace('_', " ")),
                _ if r.healthy => "ran before".to_string(),
                _ => "-".to_string(),
            };
            if let Some(why) = &r.reason {
                reasons.push(format!("@{}: {why}", r.number));
            }
            vec![
                format!("{mark}@{}", r.number),
                when(Some(r.created_at)),
                r.release.clone(),
                outcome,
                if r.available { "yes".into() } else { "no".into() },
                r.changes.join(", "),
            ]
        })
        .collect();
    table(&["REVISION", "CREATED (UTC)", "RELEASE", "OUTCOME", "ROLLBACK", "CHANGED"], rows);
    if !reasons.is_empty() {
        println!();
        for why in reasons {
            println!("{why}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
