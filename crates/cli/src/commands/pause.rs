//! `wharf pause` and `wharf resume`: hold new requests, then release them.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use wharf_api_types::{PauseRequest, PauseState};
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json, num};

/// "app" or "app/service".
pub(crate) fn scope(app: &str, service: Option<&str>) -> String {
    match service {
        Some(svc) => format!("{app}/{svc}"),
        None => app.to_string(),
    }
}

pub async fn pause(
    client: &ApiClient,
    app: Option<String>,
    service: Option<String>,
    max: Duration,
    json: bool,
) -> Result<ExitCode> {
    let req = PauseRequest { app, service, max_secs: Some(max.as_secs().max(1)) };
    let answer = client.pause(&req).await.map_err(api_error)?;
    print(&answer, json)
}

pub async fn resume(client: &ApiClient, app: Option<String>, service: Option<String>, json: bool) -> Result<ExitCode> {
    let answer = client.resume(&PauseRequest { app, service, max_secs: None }).await.map_err(api_error)?;
    print(&answer, json)
}

fn print(answer: &PauseState, json: bool) -> Result<ExitCode> {
    if json {
        print_json(answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let what = scope(&answer.app, answer.service.as_deref());
    if answer.paused {
        println!(
            "{what} is paused: new requests are held for up to {}s; `wharf resume` releases them",
            num(answer.max_secs)
        );
    } else {
        println!("{what} resumed");
    }
    Ok(ExitCode::SUCCESS)
}
