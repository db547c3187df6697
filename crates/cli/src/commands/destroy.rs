//! `wharf destroy APP`: asks for the app's name on a terminal unless `--yes`;
//! refuses without either, so a script can't destroy an app by accident.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Result;
use wharf_api_types::DestroyQuery;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json};

pub async fn destroy(
    client: &ApiClient,
    app: &str,
    yes: bool,
    purge: bool,
    force: bool,
    json: bool,
) -> Result<ExitCode> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "refusing to destroy app `{app}` without confirmation: stdin is not a terminal\n  \
                 hint: pass --yes to confirm from a script"
            );
        }
        let what = if purge { "and its stored releases" } else { "(its stored releases are kept)" };
        eprint!(
            "This stops every task of `{app}` and deletes its routes, services, jobs, deployments and \
             revisions {what}.\nType the app's name to confirm: "
        );
        std::io::stderr().flush()?;
        let mut typed = String::new();
        std::io::stdin().read_line(&mut typed)?;
        if typed.trim() != app {
            eprintln!("not destroyed: `{}` is not `{app}`", typed.trim());
            return Ok(ExitCode::FAILURE);
        }
    }
    let report = client.destroy(app, &DestroyQuery { purge, force }).await.map_err(api_error)?;
    if json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = report.aborted_deployment {
        eprintln!("deployment {app}#{id} aborted");
    }
    eprintln!(
        "destroyed app {app}: {} tasks stopped; services removed: {}",
        report.tasks_stopped,
        if report.services.is_empty() { "none".into() } else { report.services.join(", ") }
    );
    match report.releases_kept {
        _ if report.purged => eprintln!("its releases were deleted"),
        n if n > 0 => eprintln!("{n} releases kept (`wharf destroy {app} --purge` deletes them)"),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}
