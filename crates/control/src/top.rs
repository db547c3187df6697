//! `wharf top`'s data: per service, its tasks' CPU and memory and the
//! proxy's request counters and latency buckets. Counters are cumulative;
//! the client turns two snapshots into rates and a p99 over the interval.

use std::collections::BTreeMap;
use std::sync::Arc;

use wharf_api_types::{TopService, TopView};

use crate::controller::{ControlError, Controller};

/// What the proxy counted for one pool, from its Prometheus text.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Traffic {
    pub requests: u64,
    pub errors: u64,
    pub latency: Vec<(f64, u64)>,
}

impl Controller {
    pub async fn top(self: &Arc<Self>) -> Result<TopView, ControlError> {
        let traffic = parse_traffic(&self.proxy.metrics_text());
        let tasks = self.driver.tasks();
        let mut services = Vec::new();
        for s in self.db.services(None).await? {
            let web = self.catalog.revision(&s.app, &s.name, s.revision).await?.spec.is_web();
            let mine: Vec<_> =
                tasks.iter().filter(|t| t.spec.restart && t.spec.app == s.app && t.spec.service == s.name).collect();
            let (mut cpu_percent, mut memory_bytes) = (0.0, 0);
            {
                for t in &mine {
                    if let Some(u) = self.usage.get(&t.spec.id) {
                        cpu_percent += u.cpu_percent;
                        memory_bytes += u.memory_bytes;
                    }
                }
            }
            let t = traffic.get(&format!("{}/{}", s.app, s.name));
            services.push(TopService {
                kind: if web { "web" } else { "worker" }.into(),
                replicas: s.replicas,
                tasks: mine.iter().filter(|t| t.pid.is_some()).count(),
                ready: mine.iter().filter(|t| t.spec.revision == s.revision && self.is_ready(t, web)).count(),
                cpu_percent,
                memory_bytes,
                requests: t.map_or(0, |t| t.requests),
                errors: t.map_or(0, |t| t.errors),
                latency: t.map(|t| t.latency.clone()).unwrap_or_default(),
                app: s.app,
                service: s.name,
            });
        }
        services.sort_by(|a, b| (&a.app, &a.service).cmp(&(&b.app, &b.service)));
        Ok(TopView { time_ms: self.now_ms(), services })
    }
}

/// Per pool ("app/service"): requests, 5xx and latency buckets, read from
/// the proxy's exposition (the one place it publishes histogram buckets).
pub(crate) fn parse_traffic(text: &str) -> BTreeMap<String, Traffic> {
    let mut out: BTreeMap<String, Traffic> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else { continue };
        let Some(service) = labels.get("service") else { continue };
        match name {
            "wharf_proxy_requests_total" => {
                let t = out.entry(service.clone()).or_default();
                t.requests += value as u64;
                if labels.get("status").is_some_and(|s| s.starts_with('5')) {
                    t.errors += value as u64;
                }
            }
            "wharf_proxy_request_duration_seconds_bucket" => {
                let Some(le) = labels.get("le") else { continue };
                let bound = if le == "+Inf" { f64::MAX } else { le.parse().unwrap_or(f64::MAX) };
                out.entry(service.clone()).or_default().latency.push((bound, value as u64));
            }
            _ => {}
        }
    }
    for t in out.values_mut() {
        t.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// `name{k="v",...} value` → (name, labels, value).
fn parse_sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else { return Some((head, BTreeMap::new(), value)) };
    let body = rest.strip_suffix('}')?;
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    'n' => v.push('\n'),
                    other => v.push(other),
                },
                '"' => break,
                c => v.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), v);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_errors_and_buckets_per_pool() {
        let text = r#"# HELP wharf_proxy_requests Requests answered, by service and status.
# TYPE wharf_proxy_requests counter
wharf_proxy_requests_total{service="shop/api",status="200"} 7
wharf_proxy_requests_total{service="shop/api",status="503"} 2
wharf_proxy_requests_total{service="shop/web",status="404"} 1
wharf_proxy_request_duration_seconds_bucket{le="0.001",service="shop/api"} 3
wharf_proxy_request_duration_seconds_bucket{service="shop/api",le="+Inf"} 9
wharf_proxy_request_duration_seconds_bucket{service="shop/api",le="0.002"} 8
# EOF
"#;
        let t = parse_traffic(text);
        let api = &t["shop/api"];
        assert_eq!((api.requests, api.errors), (9, 2));
        assert_eq!(api.latency, [(0.001, 3), (0.002, 8), (f64::MAX, 9)]);
        assert_eq!(t["shop/web"].requests, 1);
    }

    #[test]
    fn label_values_may_hold_escapes_and_commas() {
        let (name, labels, v) = parse_sample(r#"m{a="x\"y,z",b="2"} 1.5"#).unwrap();
        assert_eq!((name, v), ("m", 1.5));
        assert_eq!(labels["a"], "x\"y,z");
        assert_eq!(labels["b"], "2");
    }
}
