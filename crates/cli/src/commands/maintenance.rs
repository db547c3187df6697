//! `wharf maintenance on|off`: a 503 maintenance page instead of the app.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use wharf_api_types::MaintenanceRequest;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json};

pub async fn maintenance(
    client: &ApiClient,
    on: bool,
    app: Option<String>,
    service: Option<String>,
    message: Option<String>,
    page: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let page = match page {
        Some(p) => Some(std::fs::read_to_string(&p).with_context(|| format!("cannot read the page {}", p.display()))?),
        None => None,
    };
    let answer =
        client.maintenance(&MaintenanceRequest { app, service, on, message, page }).await.map_err(api_error)?;
    if json {
        print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let what = super::pause::scope(&answer.app, answer.service.as_deref());
    if answer.maintenance {
        println!("{what} is in maintenance mode: requests get the maintenance page (503)");
    } else {
        println!("{what} left maintenance mode");
    }
    Ok(ExitCode::SUCCESS)
}
