//! How commands print: tables, times, log records, JSON answers and the
//! server's errors.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use wharf_client::ClientError;
use wharf_logs::{Record, Source};

/// Prints rows as aligned columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(header.iter().map(|s| s.to_string()).collect()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

/// Prints an answer for `--json` on one line, keys in alphabetical order
/// (as `--json` has always printed them).
pub fn json(answer: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_value(answer)?);
    Ok(())
}

/// Unix milliseconds as "2026-01-30 03:00:00" (UTC); "-" for none.
pub fn when(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").trim_end_matches('Z').to_string()
}

/// A number the way the JSON answer spelled it ("null" for none), for
/// texts that have always shown it so.
pub fn num(n: Option<u64>) -> String {
    n.map_or_else(|| "null".into(), |n| n.to_string())
}

/// `HH:MM:SS.mmm service.task | message`, times in UTC.
pub fn format_record(r: &Record, color: bool) -> String {
    let secs = r.time / 1_000_000_000;
    let ms = (r.time / 1_000_000) % 1000;
    let t = format!("{:02}:{:02}:{:02}.{ms:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let who = match (&r.service, &r.task, r.source) {
        (_, _, Source::Event) => "wharf".to_string(),
        (Some(s), Some(task), _) => format!("{s}.{}", task.rsplit('-').next().unwrap_or("")),
        (Some(s), None, _) => s.clone(),
        _ => "wharf".to_string(),
    };
    let err = r.source == Source::Stderr;
    if !color {
        let mark = if err { "!" } else { "|" };
        return format!("{t} {who:<14} {mark} {}", r.message);
    }
    const COLORS: [u8; 6] = [36, 32, 35, 34, 33, 96];
    let c = match r.source {
        Source::Event => match r.level {
            Some(wharf_logs::Level::Error) => 31,
            Some(wharf_logs::Level::Warn) => 33,
            _ => 90,
        },
        _ => COLORS[who.split('.').next().unwrap_or("").bytes().map(usize::from).sum::<usize>() % COLORS.len()],
    };
    format!("\x1b[90m{t}\x1b[0m \x1b[{c}m{who:<14}\x1b[0m {} {}", if err { "\x1b[31m!\x1b[0m" } else { "|" }, r.message)
}

/// The server's error, with an invalid wharf.toml's diagnostics as
/// `file:line:column: error: ...` lines.
pub fn api_error(e: ClientError) -> anyhow::Error {
    let diagnostics = e.diagnostics();
    if !diagnostics.is_empty() {
        let lines: Vec<String> = diagnostics
            .iter()
            .map(|d| {
                let hint = d.hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default();
                format!("{}:{}:{}: error: {}{hint}", d.file, d.line, d.column, d.message)
            })
            .collect();
        return anyhow::anyhow!("{e}\n{}", lines.join("\n"));
    }
    e.into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_shown_in_utc_to_the_second() {
        assert_eq!(super::when(Some(1_769_742_000_999u64)), "2026-01-30 03:00:00");
        assert_eq!(super::when(None), "-");
    }
}
