//! `wharf plan DIR`: what a deploy of DIR would change, from the server's point of view.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json, num};

pub async fn plan(client: &ApiClient, dir: &Path, env: Option<&str>, json: bool) -> Result<ExitCode> {
    if let Err(e) = wharf_spec::load_dir_env(dir, env) {
        eprintln!("{e}");
        return Ok(ExitCode::FAILURE);
    }
    let plan = client.plan_env(super::deploy::pack(dir)?, env).await.map_err(api_error)?;
    if json {
        print_json(&plan)?;
        return Ok(ExitCode::SUCCESS);
    }
    let app = &plan.app;
    if plan.unchanged {
        println!("{app}: nothing would change");
        return Ok(ExitCode::SUCCESS);
    }
    println!("a deploy of {app} would:");
    for sv in &plan.services {
        let name = &sv.name;
        let replicas = match sv.replicas {
            Some((from, to)) => format!(" (replicas {from} → {to})"),
            None => String::new(),
        };
        let (rev, next) = (num(sv.revision), num(sv.next_revision));
        let line = match sv.action.as_str() {
            "new" => format!("  + {name}: new, as {name}@{next}{replicas}"),
            "changed" => format!("  ~ {name}: @{rev} → @{next} ({}){replicas}", sv.changes.join(", ")),
            "scaled" => format!("  ~ {name}@{rev}: scaled{replicas}"),
            "removed" => format!("  - {name}@{rev}: removed, its tasks stop"),
            _ => format!("    {name}@{rev}: unchanged"),
        };
        println!("{line}");
    }
    for r in &plan.routes_added {
        println!("  + route {r}");
    }
    for r in &plan.routes_removed {
        println!("  - route {r}");
    }
    let jobs = &plan.jobs;
    for (names, mark, what) in
        [(&jobs.added, "+", "new"), (&jobs.changed, "~", "changed"), (&jobs.removed, "-", "removed")]
    {
        for j in names {
            println!("  {mark} job {j}: {what}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
