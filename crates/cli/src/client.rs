//! Finding the server: flags, then environment, then a data directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use wharf_api_types::TOKEN_FILE;
use wharf_client::ApiClient;

use crate::server::{default_data_dir, API_URL_FILE};
use crate::Global;

/// The data directories to look in, in order.
fn candidates(g: &Global) -> Vec<PathBuf> {
    match &g.data {
        Some(d) => vec![d.clone()],
        None => vec![PathBuf::from(".wharf"), default_data_dir()],
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub fn connect(g: &Global) -> Result<ApiClient> {
    let dirs = candidates(g);
    let found = dirs.iter().find(|d| d.join(API_URL_FILE).exists());
    let url = match (&g.server, found) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => {
            read(dir, API_URL_FILE).with_context(|| format!("{} is empty", dir.join(API_URL_FILE).display()))?
        }
        (None, None) => {
            let looked: Vec<String> = dirs.iter().map(|d| d.join(API_URL_FILE).display().to_string()).collect();
            bail!(
                "no running wharf server found (looked for {})\n  hint: start one with `wharf server` or `wharf up DIR`, or pass --server URL and --token TOKEN",
                looked.join(" and ")
            );
        }
    };
    let token = match (&g.token, found.or(dirs.first())) {
        (Some(t), _) => t.clone(),
        (None, Some(dir)) => match read(dir, TOKEN_FILE) {
            Some(t) => t,
            None => bail!(
                "no API token: {} is missing or unreadable\n  hint: pass --token TOKEN or set WHARF_TOKEN (the token is in the server's data directory)",
                dir.join(TOKEN_FILE).display()
            ),
        },
        (None, None) => bail!("no API token\n  hint: pass --token TOKEN or set WHARF_TOKEN"),
    };
    Ok(ApiClient::new(&url, &token))
}
