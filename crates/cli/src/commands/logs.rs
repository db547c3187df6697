//! `wharf logs`: the log stream, task output and events.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Result;
use wharf_api_types::LogQuery;
use wharf_client::ApiClient;

use crate::print::{api_error, format_record};

pub struct LogArgs {
    pub service: Option<String>,
    pub follow: bool,
    pub lines: usize,
    pub app: Option<String>,
    pub task: Option<String>,
    pub source: Option<String>,
    pub json: bool,
    pub since: Option<String>,
    pub until: Option<String>,
    pub grep: Option<String>,
}

/// `10m` (that long ago) or an RFC 3339 timestamp → unix milliseconds.
fn when(flag: &str, s: &str) -> Result<u64> {
    let t = match humantime::parse_duration(s) {
        Ok(d) => std::time::SystemTime::now().checked_sub(d),
        Err(_) => humantime::parse_rfc3339_weak(s).ok(),
    };
    let ms =
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).and_then(|d| u64::try_from(d.as_millis()).ok());
    ms.ok_or_else(|| {
        anyhow::anyhow!("{flag} {s:?}: expected a duration like 10m or 1h30m, or a time like 2024-05-01T12:00:00Z")
    })
}

pub async fn logs(client: &ApiClient, a: LogArgs) -> Result<ExitCode> {
    let q = LogQuery {
        service: a.service,
        app: a.app,
        task: a.task,
        source: a.source,
        since: a.since.as_deref().map(|s| when("--since", s)).transpose()?,
        until: a.until.as_deref().map(|s| when("--until", s)).transpose()?,
        grep: a.grep,
        n: Some(a.lines),
        follow: a.follow,
    };
    let mut stream = client.logs(&q).await.map_err(api_error)?;
    let color = std::io::stdout().is_terminal();
    while let Some(line) = stream.next().await.map_err(api_error)? {
        let mut out = std::io::stdout().lock();
        if a.json {
            let _ = out.write_all(&line.raw);
            let _ = out.write_all(b"\n");
        } else if let Some(r) = &line.record {
            let _ = writeln!(out, "{}", format_record(r, color));
        }
        if a.follow {
            let _ = out.flush();
        }
    }
    Ok(ExitCode::SUCCESS)
}
