//! `wharf store check` and `wharf store restore`: the server crate does
//! the work, this prints it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};
use wharf_server::store::{FileCheck, LiveCheck};

fn describe(f: &FileCheck) -> Value {
    match f {
        FileCheck::Ok { records, sha256 } => json!({ "ok": true, "records": records, "sha256": sha256 }),
        FileCheck::Damaged(error) => json!({ "ok": false, "damaged": true, "error": error }),
        FileCheck::Unreadable(error) => json!({ "ok": false, "damaged": false, "error": error }),
    }
}

/// `wharf store check`.
pub fn check(data: &Path, json_out: bool) -> Result<ExitCode> {
    let c = wharf_server::store::check(data)?;
    let store = c.store.display();
    if json_out {
        let live = match &c.live {
            LiveCheck::InUse { pid } => {
                json!({ "ok": null, "in_use_by": pid, "note": "the running server verified it when it started" })
            }
            LiveCheck::Missing => json!({ "ok": null, "note": "no store yet" }),
            LiveCheck::Checked(f) => describe(f),
        };
        let snaps: Vec<Value> = c
            .snapshots
            .iter()
            .map(|(p, f)| {
                let mut v = describe(f);
                v["path"] = json!(p.display().to_string());
                v
            })
            .collect();
        println!("{}", json!({ "store": store.to_string(), "live": live, "snapshots": snaps }));
    } else {
        match &c.live {
            LiveCheck::InUse { pid } => {
                println!("store {store}: in use by the running server (pid {pid}), verified when it started")
            }
            LiveCheck::Checked(FileCheck::Ok { records, .. }) => println!("store {store}: ok, {records} records"),
            LiveCheck::Checked(FileCheck::Damaged(e)) => println!("store {store}: DAMAGED: {e}"),
            LiveCheck::Checked(FileCheck::Unreadable(e)) => println!("store {store}: cannot check: {e}"),
            LiveCheck::Missing => println!("store {store}: none yet"),
        }
        if c.snapshots.is_empty() {
            println!("no snapshots in {}", c.snapshot_dir.display());
        }
        for (p, f) in &c.snapshots {
            match f {
                FileCheck::Ok { records, .. } => println!("snapshot {}: ok, {records} records", p.display()),
                FileCheck::Damaged(e) | FileCheck::Unreadable(e) => println!("snapshot {}: DAMAGED: {e}", p.display()),
            }
        }
        if c.damaged() {
            println!("hint: with the server stopped, `wharf store restore` puts the newest good snapshot back");
        }
    }
    Ok(if c.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `wharf store restore [SNAPSHOT]`.
pub fn restore(data: &Path, from: Option<PathBuf>, json_out: bool) -> Result<ExitCode> {
    let r = wharf_server::store::restore(data, from, |p, why| eprintln!("skipping snapshot {}: {why}", p.display()))?;
    if json_out {
        println!(
            "{}",
            json!({ "restored": r.from.display().to_string(), "records": r.records, "kept": r.kept.map(|k| k.display().to_string()) })
        );
    } else {
        println!("restored {} from {} ({} records)", r.store.display(), r.from.display(), r.records);
        if let Some(k) = r.kept {
            println!("the previous file is kept as {}", k.display());
        }
        println!("start the server again; it re-adopts the running tasks");
    }
    Ok(ExitCode::SUCCESS)
}
