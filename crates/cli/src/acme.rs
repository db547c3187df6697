//! `wharf server` flags of automatic certificates (ACME).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::server::{AcmeChallenge, AcmeConfig, ServerOptions, LETS_ENCRYPT, LOCAL_CA};

#[derive(Args, Debug, Clone)]
pub struct AcmeArgs {
    /// ACME directory that issues certificates for route hosts without `tls` files (with --https);
    /// "off" turns ACME off; "local" issues them from a CA of the server's own, for development
    /// (trust DATA/local-ca/ca.pem). Let's Encrypt's staging directory, for trying things out:
    /// https://acme-staging-v02.api.letsencrypt.org/directory
    #[arg(long, env = "WHARF_ACME_DIRECTORY", value_name = "URL|off", default_value = LETS_ENCRYPT)]
    acme_directory: String,
    /// Contact address of the ACME account (the CA writes about expiring certificates).
    #[arg(long, env = "WHARF_ACME_EMAIL", value_name = "ADDR")]
    acme_email: Option<String>,
    /// A PEM CA certificate to trust for the directory's HTTPS (a private CA) [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    acme_ca_root: Option<PathBuf>,
    /// The challenge answered first; the other one is tried when it is not offered or failed.
    #[arg(long, value_name = "http-01|tls-alpn-01", default_value = "http-01", value_parser = challenge)]
    acme_challenge: AcmeChallenge,
    /// Wait before retrying a failed order; it doubles per failure, up to 1h.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = backoff)]
    acme_backoff: Duration,
}

impl AcmeArgs {
    /// ACME runs only with an HTTPS listener (there is nothing to serve the certificates on otherwise).
    pub fn apply(self, opts: &mut ServerOptions) -> Result<()> {
        if self.acme_directory.eq_ignore_ascii_case("off") || opts.https.is_none() {
            opts.acme = None;
            return Ok(());
        }
        if !self.acme_directory.starts_with("https://") && self.acme_directory != LOCAL_CA {
            bail!("--acme-directory {}: give an https:// URL, local, or off", self.acme_directory);
        }
        if let Some(root) = &self.acme_ca_root {
            if !root.is_file() {
                bail!("--acme-ca-root {}: no such file (give the CA certificate, PEM)", root.display());
            }
        }
        opts.acme = Some(AcmeConfig {
            directory: self.acme_directory,
            email: self.acme_email,
            ca_root: self.acme_ca_root,
            challenge: self.acme_challenge,
            backoff: self.acme_backoff,
        });
        Ok(())
    }
}

fn challenge(s: &str) -> Result<AcmeChallenge, String> {
    match s {
        "http-01" => Ok(AcmeChallenge::Http01),
        "tls-alpn-01" => Ok(AcmeChallenge::TlsAlpn01),
        _ => Err(format!("{s} is not a challenge wharf answers\n  hint: http-01 or tls-alpn-01")),
    }
}

/// `--acme-backoff`: 1s to 1h.
fn backoff(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 30s, 5m)"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(format!("{s} is out of range\n  hint: from 1s to 1h"));
    }
    Ok(d)
}
