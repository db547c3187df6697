//! `wharf rollback SERVICE [REVISION]`: back to an earlier revision, with no downtime.

use std::process::ExitCode;

use anyhow::Result;
use wharf_api_types::RollbackRequest;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json};

pub async fn rollback(
    client: &ApiClient,
    app: Option<String>,
    service: String,
    revision: Option<u64>,
    detach: bool,
    json: bool,
) -> Result<ExitCode> {
    let d = client.rollback(&RollbackRequest { app, service, revision }).await.map_err(api_error)?;
    if !json {
        eprintln!("deployment {}#{}: {}", d.app, d.id, d.message);
    }
    if detach {
        if json {
            print_json(&d)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    super::deploy::follow(client, &d.app, d.id, json).await
}
