//! `wharf server` flags of service discovery: the proxy's internal listener
//! and the DNS responder.

use std::net::SocketAddr;

use anyhow::{bail, Result};
use clap::Args;

use crate::server::{Listen, ServerOptions};

#[derive(Args, Debug, Clone)]
pub struct DiscoveryArgs {
    /// Internal listener of the proxy, where tasks reach the app's services by name
    /// (SERVICE.local, SERVICE.APP.local) or at their own loopback address; "off" turns
    /// service discovery off [default: 127.0.0.1:8181, skipped with a warning if taken].
    #[arg(long, env = "WHARF_INTERNAL", value_name = "ADDR|off")]
    internal: Option<String>,
    /// DNS responder (UDP and TCP) answering SERVICE.local names; "off" turns it off
    /// [default: 127.0.0.1:8053, skipped with a warning if taken].
    #[arg(long, env = "WHARF_DNS", value_name = "ADDR|off")]
    dns: Option<String>,
}

impl DiscoveryArgs {
    pub fn apply(self, opts: &mut ServerOptions) -> Result<()> {
        if let Some(v) = self.internal {
            opts.internal = parse("--internal", &v)?;
        }
        if let Some(v) = self.dns {
            opts.dns = parse("--dns", &v)?;
        }
        Ok(())
    }
}

fn parse(flag: &str, v: &str) -> Result<Listen> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(Listen::Off);
    }
    match v.parse::<SocketAddr>() {
        Ok(a) => Ok(Listen::At(a)),
        Err(_) => bail!("{flag} {v}: expected an address like 127.0.0.1:8181, or \"off\""),
    }
}
