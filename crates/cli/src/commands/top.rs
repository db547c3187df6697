//! `wharf top`: per service, tasks, CPU, memory, requests/s and p99
//! latency, refreshed every interval. Rates and the p99 come from the
//! difference between two snapshots of the server's cumulative counters.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use wharf_api_types::TopView as Snapshot;
use wharf_client::ApiClient;

use crate::print::api_error;

pub struct TopArgs {
    pub once: bool,
    pub json: bool,
    pub iterations: Option<u64>,
    pub interval: Duration,
}

/// One service's row: what `--json` prints.
#[derive(Serialize)]
struct Row {
    app: String,
    service: String,
    kind: String,
    replicas: u32,
    tasks: usize,
    ready: usize,
    cpu_percent: f64,
    memory_bytes: u64,
    /// Over the last interval.
    requests_per_sec: f64,
    errors_per_sec: f64,
    /// Over the last interval; None without requests in it.
    p99_ms: Option<f64>,
    requests_total: u64,
}

#[derive(Serialize)]
struct Frame {
    time_ms: u64,
    interval_secs: f64,
    services: Vec<Row>,
}

pub async fn top(client: &ApiClient, a: TopArgs) -> Result<ExitCode> {
    let iterations = if a.once { 1 } else { a.iterations.unwrap_or(u64::MAX) };
    let tty = std::io::stdout().is_terminal() && !a.json;
    let mut prev = client.top().await.map_err(api_error)?;
    for _ in 0..iterations {
        tokio::time::sleep(a.interval).await;
        let cur = client.top().await.map_err(api_error)?;
        let frame = frame(&prev, &cur);
        let mut out = std::io::stdout().lock();
        if a.json {
            writeln!(out, "{}", serde_json::to_string(&frame)?)?;
        } else {
            let text = render(&frame);
            if tty {
                // Home, clear screen, then the frame: a redraw in place.
                write!(out, "\x1b[H\x1b[2J{text}")?;
            } else {
                writeln!(out, "{text}")?;
            }
        }
        out.flush()?;
        prev = cur;
    }
    Ok(ExitCode::SUCCESS)
}

fn frame(prev: &Snapshot, cur: &Snapshot) -> Frame {
    let secs = (cur.time_ms.saturating_sub(prev.time_ms) as f64 / 1000.0).max(0.001);
    let services = cur
        .services
        .iter()
        .map(|s| {
            let before = prev.services.iter().find(|p| p.app == s.app && p.service == s.service);
            let (req0, err0) = before.map_or((0, 0), |p| (p.requests, p.errors));
            // A counter that went down: the server restarted; count from zero.
            let delta = |now: u64, then: u64| if now >= then { now - then } else { now };
            let delta_buckets: Vec<(f64, u64)> = s
                .latency
                .iter()
                .map(|&(le, n)| {
                    let then = before.and_then(|p| p.latency.iter().find(|b| b.0 == le)).map_or(0, |b| b.1);
                    (le, delta(n, then))
                })
                .collect();
            Row {
                app: s.app.clone(),
                service: s.service.clone(),
                kind: s.kind.clone(),
                replicas: s.replicas,
                tasks: s.tasks,
                ready: s.ready,
                cpu_percent: s.cpu_percent,
                memory_bytes: s.memory_bytes,
                requests_per_sec: delta(s.requests, req0) as f64 / secs,
                errors_per_sec: delta(s.errors, err0) as f64 / secs,
                p99_ms: wharf_api_types::quantile(&delta_buckets, 0.99).map(|s| s * 1000.0),
                requests_total: s.requests,
            }
        })
        .collect();
    Frame { time_ms: cur.time_ms, interval_secs: secs, services }
}

fn render(f: &Frame) -> String {
    let header = ["APP", "SERVICE", "KIND", "TASKS", "CPU", "MEM", "REQ/S", "5XX/S", "P99"];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in &f.services {
        let web = r.kind == "web";
        rows.push(vec![
            r.app.clone(),
            r.service.clone(),
            r.kind.clone(),
            format!("{}/{} ({} ready)", r.tasks, r.replicas, r.ready),
            format!("{:.1}%", r.cpu_percent),
            format!("{:.1}MiB", r.memory_bytes as f64 / 1048576.0),
            if web { format!("{:.1}", r.requests_per_sec) } else { "-".into() },
            if web { format!("{:.1}", r.errors_per_sec) } else { "-".into() },
            match r.p99_ms {
                Some(ms) if ms < 10.0 => format!("{ms:.2}ms"),
                Some(ms) => format!("{ms:.0}ms"),
                None => "-".into(),
            },
        ]);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = format!("wharf top · {} services · rates over {:.1}s\n\n", f.services.len(), f.interval_secs);
    out.push_str(&line(&header.map(String::from)));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("no services deployed yet: run `wharf deploy DIR`\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_difference_of_two_snapshots() {
        let snap = |time_ms, requests, fast, all| Snapshot {
            time_ms,
            services: vec![wharf_api_types::TopService {
                app: "a".into(),
                service: "api".into(),
                kind: "web".into(),
                replicas: 1,
                tasks: 1,
                ready: 1,
                cpu_percent: 1.0,
                memory_bytes: 1 << 20,
                requests,
                errors: 0,
                latency: vec![(0.001, fast), (f64::MAX, all)],
            }],
        };
        let f = frame(&snap(1000, 10, 10, 10), &snap(3000, 30, 30, 30));
        let r = &f.services[0];
        assert_eq!(r.requests_per_sec, 10.0);
        assert!(r.p99_ms.unwrap() <= 1.0);
        assert!(render(&f).contains("10.0"));
    }
}
