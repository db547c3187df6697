//! `wharf certs`: each route host's certificate — where it comes from, who
//! issued it, until when, and what is wrong with it.

use std::process::ExitCode;

use anyhow::Result;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json, table, when};

pub async fn certs(client: &ApiClient, json: bool) -> Result<ExitCode> {
    let list = client.certs().await.map_err(api_error)?;
    if json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no route has a certificate (serve HTTPS with `wharf server --https` for ACME, or give a route `tls = {{ cert = ..., key = ... }}` in wharf.toml)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = list
        .iter()
        .map(|c| {
            let state = match (&c.error, c.served, c.expired) {
                (Some(e), _, _) => format!("error: {e}"),
                (None, true, true) => "served, EXPIRED".into(),
                (None, true, false) => "served".into(),
                (None, false, _) => "not served".into(),
            };
            vec![
                c.host.clone(),
                format!("{} {}", c.source, c.file).trim_end().to_string(),
                c.issuer.clone().unwrap_or_else(|| "-".into()),
                when(c.not_after.map(|s| s.saturating_mul(1000))),
                when(c.next_renewal.map(|s| s.saturating_mul(1000))),
                state,
            ]
        })
        .collect();
    table(&["HOST", "SOURCE", "ISSUER", "NOT AFTER (UTC)", "RENEWAL (UTC)", "STATE"], rows);
    Ok(ExitCode::SUCCESS)
}
