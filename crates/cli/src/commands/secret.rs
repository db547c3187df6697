//! `wharf secret set|ls|rm NAME`: an app's secrets. `set` reads the value
//! from stdin, never from an argument (arguments show in `ps` and shell
//! history); no command prints a value.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use wharf_client::ApiClient;

use crate::print::{api_error, json as print_json, table, when};

/// The largest value read from stdin; the server refuses more too.
const MAX_VALUE: usize = 64 * 1024;

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Set a secret from stdin (`printf %s "$PW" | wharf secret set db_password`); one trailing
    /// newline is dropped. Services take it with `VAR = { secret = "NAME" }` in their `env`;
    /// a changed value gives them a new revision at the next deploy.
    Set {
        name: String,
        /// The app [default: the `app` of ./wharf.toml, else the only deployed app].
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The app's secrets: names, when set, which deployed services use them. Never values.
    Ls {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret; refused while deployed services use it.
    Rm {
        name: String,
        #[arg(long)]
        app: Option<String>,
        /// Remove it even though deployed services use it: their running tasks keep the value,
        /// but new tasks of them cannot start until it is set again or they are deployed without it.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &ApiClient, cmd: SecretCommand) -> Result<ExitCode> {
    match cmd {
        SecretCommand::Set { name, app, json } => {
            let app = which_app(client, app).await?;
            let value = read_value()?;
            let set = client.set_secret(&app, &name, value).await.map_err(api_error)?;
            if json {
                print_json(&set)?;
            } else {
                let then = match (set.outcome.as_str(), set.used_by.is_empty()) {
                    ("unchanged", _) | (_, true) => String::new(),
                    _ => format!("; `wharf deploy` gives {} a new revision", set.used_by.join(", ")),
                };
                println!("secret {} of {}: {}{then}", set.name, set.app, set.outcome);
            }
        }
        SecretCommand::Ls { app, json } => {
            let app = which_app(client, app).await?;
            let list = client.secrets(&app).await.map_err(api_error)?;
            if json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("app {app} has no secrets (set one with `wharf secret set NAME --app {app}`)");
            } else {
                let rows = list
                    .iter()
                    .map(|s| {
                        let users = if s.used_by.is_empty() { "-".into() } else { s.used_by.join(", ") };
                        vec![s.name.clone(), when(Some(s.created_at)), when(Some(s.updated_at)), users]
                    })
                    .collect();
                table(&["SECRET", "CREATED (UTC)", "UPDATED (UTC)", "USED BY"], rows);
            }
        }
        SecretCommand::Rm { name, app, force, json } => {
            let app = which_app(client, app).await?;
            let removed = client.remove_secret(&app, &name, force).await.map_err(api_error)?;
            if json {
                print_json(&removed)?;
            } else if removed.used_by.is_empty() {
                println!("secret {name} of {app} removed");
            } else {
                println!(
                    "secret {name} of {app} removed; {} still take it: new tasks of them cannot start until it is \
                     set again or they are deployed without it",
                    removed.used_by.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--app`, else the app of ./wharf.toml (secrets are set before the
/// first deploy), else the server's only app.
async fn which_app(client: &ApiClient, app: Option<String>) -> Result<String> {
    if let Some(app) = app {
        return Ok(app);
    }
    if Path::new(wharf_spec::FILE_NAME).is_file() {
        if let Ok(spec) = wharf_spec::load_dir(Path::new(".")) {
            return Ok(spec.app);
        }
    }
    let status = client.status().await.map_err(api_error)?;
    match status.apps.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => bail!("say which app with --app (no app is deployed, and there is no wharf.toml here)"),
        many => bail!(
            "several apps are deployed ({}): say which with --app",
            many.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The value from stdin, less one trailing newline (`echo` adds one).
fn read_value() -> Result<String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("type the value, then Enter and Ctrl-D:");
    }
    let mut bytes = Vec::new();
    std::io::stdin().take(MAX_VALUE as u64 + 2).read_to_end(&mut bytes).context("cannot read the value from stdin")?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.len() > MAX_VALUE {
        bail!("a secret's value must be at most {MAX_VALUE} bytes");
    }
    if bytes.is_empty() {
        bail!("no value on stdin\n  hint: printf %s \"$VALUE\" | wharf secret set NAME");
    }
    String::from_utf8(bytes).context("a secret's value must be UTF-8 text")
}
