//! Operating a running app: top, events, scale, autoscale, one-off runs,
//! maintenance and pause.

use serde::{Deserialize, Serialize};
use wharf_spec::ScalePolicy;

/// `GET /v1/top`: cumulative counters; a client turns two into rates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopView {
    /// Unix milliseconds when the snapshot was taken.
    pub time_ms: u64,
    pub services: Vec<TopService>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopService {
    pub app: String,
    pub service: String,
    /// "web" or "worker".
    pub kind: String,
    /// Desired tasks.
    pub replicas: u32,
    /// Tasks running now (any revision).
    pub tasks: usize,
    /// Of those, healthy (web) or running (worker), of the current revision.
    pub ready: usize,
    /// Sum over its tasks; 100 = one core.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    /// Requests the proxy answered for it since the server started.
    pub requests: u64,
    /// Of those, answered 5xx.
    pub errors: u64,
    /// Cumulative latency histogram: (upper bound in seconds, requests at
    /// most that long), ascending; the last bound is +Inf (as f64::MAX).
    pub latency: Vec<(f64, u64)>,
}

/// `GET /v1/events`: something wharf did or saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: u64,
    pub app: Option<String>,
    pub service: Option<String>,
    pub task: Option<String>,
    /// Short machine-readable kind, e.g. "task.restarted".
    pub kind: String,
    pub message: String,
}

/// `POST /v1/scale`: the service's desired state after the change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaledService {
    pub app: String,
    pub name: String,
    pub revision: u64,
    pub replicas: u32,
    #[serde(default)]
    pub live: Option<u64>,
    #[serde(default)]
    pub standby: Option<u64>,
    /// The `replicas` wharf.toml declared at the last deploy.
    #[serde(default)]
    pub declared_replicas: Option<u32>,
}

/// `GET /v1/autoscale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoscaleView {
    pub app: String,
    pub service: String,
    pub replicas: u32,
    pub policy: Option<ScalePolicy>,
    pub datapoints: Vec<Datapoint>,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Datapoint {
    /// Unix milliseconds at the end of the period.
    pub at: u64,
    /// Average CPU of the service's tasks over the period, as a fraction of
    /// their reserved CPU (1.0 = all of it).
    pub cpu: f64,
    pub tasks: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub at: u64,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    /// False when it could not be applied (a deployment was running).
    pub applied: bool,
}

/// `POST /v1/run`: a one-off task that was started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStarted {
    pub task: String,
    pub app: String,
    pub service: String,
    pub revision: u64,
}

/// `POST /v1/run/{task}/wait`: how a one-off task ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEnded {
    pub task: String,
    /// The exit code, when it exited by itself.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// "exit code 3", "killed by signal 9 (SIGKILL)".
    pub status: String,
}

/// `POST /v1/run/{task}/stop`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoppedRun {
    pub stopped: String,
}

/// `POST /v1/maintenance`: what is now true. Keys in the order the answer
/// has always had them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceState {
    pub app: String,
    pub maintenance: bool,
    pub service: Option<String>,
}

/// `POST /v1/pause` and `POST /v1/resume`: what is now true (`max_secs`
/// only when paused).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseState {
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_secs: Option<u64>,
    pub paused: bool,
    pub service: Option<String>,
}

/// The `q` quantile of a cumulative histogram (upper bound, count), by
/// linear interpolation inside the bucket, as Prometheus'
/// `histogram_quantile` does. None when it is empty.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(le, n) in buckets {
        if n as f64 >= rank {
            if le == f64::MAX || le.is_infinite() {
                return Some(lower);
            }
            let inside = n.saturating_sub(below).max(1) as f64;
            return Some(lower + (le - lower) * ((rank - below as f64) / inside).clamp(0.0, 1.0));
        }
        lower = le;
        below = n;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These answers were built as JSON maps (keys sorted) before they had
    /// types; the types keep the bytes.
    #[test]
    fn small_answers_keep_their_json() {
        let paused = PauseState { app: "shop".into(), max_secs: Some(30), paused: true, service: None };
        assert_eq!(
            serde_json::to_string(&paused).unwrap(),
            r#"{"app":"shop","max_secs":30,"paused":true,"service":null}"#
        );
        let resumed = PauseState { app: "shop".into(), max_secs: None, paused: false, service: Some("web".into()) };
        assert_eq!(serde_json::to_string(&resumed).unwrap(), r#"{"app":"shop","paused":false,"service":"web"}"#);
        let m = MaintenanceState { app: "shop".into(), maintenance: true, service: None };
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"app":"shop","maintenance":true,"service":null}"#);
        let jobs = crate::JobList { app: "shop".into(), jobs: vec![], now: 5 };
        assert_eq!(serde_json::to_string(&jobs).unwrap(), r#"{"app":"shop","jobs":[],"now":5}"#);
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        // 100 requests: 90 up to 10 ms, 10 between 10 and 20 ms.
        let b = [(0.01, 90), (0.02, 100), (f64::MAX, 100)];
        let p99 = quantile(&b, 0.99).unwrap();
        assert!((p99 - 0.019).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&[(0.01, 0), (f64::MAX, 0)], 0.99), None);
        // Everything beyond the last bound: the last finite bound.
        assert_eq!(quantile(&[(0.01, 0), (f64::MAX, 5)], 0.99), Some(0.01));
    }
}
