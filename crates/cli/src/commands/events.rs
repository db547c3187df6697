//! `wharf events`: what wharf did: deploys, restarts, health changes.

use std::process::ExitCode;

use anyhow::Result;
use wharf_client::ApiClient;
use wharf_logs::{Record, Source};

use crate::print::{api_error, format_record, json as print_json};

pub async fn events(client: &ApiClient, n: usize, json: bool) -> Result<ExitCode> {
    let events = client.events(n).await.map_err(api_error)?;
    if json {
        print_json(&events)?;
        return Ok(ExitCode::SUCCESS);
    }
    for e in &events {
        let mut r = Record::new(Source::Event, e.message.clone());
        r.time = e.time.saturating_mul(1_000_000);
        r.service = e.service.clone();
        println!("{} {:<22} {}", &format_record(&r, false)[..12], e.kind, e.message);
    }
    Ok(ExitCode::SUCCESS)
}
