//! `wharf check DIR`: validates DIR/wharf.toml without a server.

use std::path::Path;
use std::process::ExitCode;

/// Validates DIR/wharf.toml (for the environment `env`, if given) and prints the outcome.
pub fn check(dir: &Path, env: Option<&str>, json: bool) -> ExitCode {
    match wharf_spec::load_dir_env(dir, env) {
        Ok(spec) => {
            if json {
                println!("{}", serde_json::json!({ "ok": true, "spec": spec, "notes": spec.notes() }));
            } else {
                let web = spec.services.values().filter(|s| s.is_web()).count();
                println!(
                    "ok: app `{}`: {} services ({} web, {} worker), {} routes",
                    spec.app,
                    spec.services.len(),
                    web,
                    spec.services.len() - web,
                    spec.routes.len()
                );
                for note in spec.notes() {
                    eprintln!("note: {note}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "ok": false, "diagnostics": e.diagnostics() }));
            } else {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}
