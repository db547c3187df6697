//! Health checks of web tasks: a task takes traffic only once it passes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use wharf_logs::Level;
use wharf_runtime::TaskState;
use wharf_spec::HealthCheck;

use crate::controller::{fmt_duration, Controller};

/// How often a task that has not passed yet is probed: briskly in its first
/// seconds, so a new or re-adopted task takes traffic quickly even with a
/// long `interval`, then more calmly so a task that never comes up costs little.
const STARTING_PROBE: Duration = Duration::from_millis(50);
const STARTING_BRISK_FOR: Duration = Duration::from_secs(5);
const STARTING_PROBE_LATER: Duration = Duration::from_millis(500);
/// A task that has not passed yet is reported (events, `wharf deploy`
/// progress) once its checks have failed this long: a booting app's first
/// refused connections are not news.
pub(crate) const REPORT_AFTER: Duration = Duration::from_secs(1);
/// While it keeps failing the same way, the report is repeated after this,
/// then twice as long each time up to [`REPORT_EVERY_MAX`]: a deploy waiting
/// for it is not silent, a task left failing for hours does not flood the log.
const REPORT_EVERY: Duration = Duration::from_secs(5);
const REPORT_EVERY_MAX: Duration = Duration::from_secs(300);

/// A task's health is part of the API's answers, so the type lives with them.
pub use wharf_api_types::Health;

#[derive(Debug)]
pub(crate) struct HealthState {
    pub health: Health,
    pub pid: Option<u32>,
    pub ok_streak: u32,
    pub fail_streak: u32,
    pub last_error: Option<String>,
    /// Since when every check has failed (None: the last one passed).
    pub failing_since: Option<Instant>,
    /// The last failure reported as an event while starting, when, and how
    /// many times in a row.
    pub reported: Option<(String, Instant, u32)>,
}

impl HealthState {
    /// The last check's error, once checks have failed for [`REPORT_AFTER`].
    pub fn lasting_error(&self) -> Option<&str> {
        let since = self.failing_since?;
        (since.elapsed() >= REPORT_AFTER).then_some(self.last_error.as_deref()?)
    }
}

/// The health of one web task, written by its checker, read by routing.
#[derive(Debug)]
pub(crate) struct TaskHealth {
    /// The proxy's view of the task; kept across routing snapshots.
    pub backend: Arc<wharf_proxy::Backend>,
    pub state: Mutex<HealthState>,
    checker: tokio::task::AbortHandle,
}

impl Drop for TaskHealth {
    fn drop(&mut self) {
        self.checker.abort();
    }
}

impl TaskHealth {
    pub fn health(&self) -> Health {
        self.state.lock().unwrap().health
    }
}

/// One HTTP client (with a connection pool) for every check.
#[derive(Clone)]
pub(crate) struct HealthClient(Client<HttpConnector, Empty<Bytes>>);

impl HealthClient {
    pub fn new() -> HealthClient {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        // One kept-alive connection per task: a new connection per check
        // left a TIME_WAIT socket behind each time (thousands at 200 tasks).
        // An app that does not keep connections alive closes it itself.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(c);
        HealthClient(client)
    }

    /// Ok when the task answers with an expected status on `path`, or accepts a TCP connection when there is no path.
    async fn probe(&self, addr: SocketAddr, check: &HealthCheck) -> Result<(), String> {
        let attempt = async {
            match &check.path {
                None => {
                    let stream =
                        tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
                    close_without_time_wait(&stream);
                    Ok(())
                }
                Some(path) => {
                    let req = http::Request::get(format!("http://{addr}{path}"))
                        .header(http::header::USER_AGENT, "wharf-health")
                        .body(Empty::new())
                        .map_err(|e| e.to_string())?;
                    let resp = self.0.request(req).await.map_err(|e| format!("GET {path}: {}", error_chain(&e)))?;
                    let status = resp.status();
                    let (low, high) = check.status;
                    if (low..=high).contains(&status.as_u16()) {
                        Ok(())
                    } else {
                        Err(format!("GET {path} answered {status} (expected {low}-{high})"))
                    }
                }
            }
        };
        match tokio::time::timeout(check.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}", fmt_duration(check.timeout))),
        }
    }
}

/// A TCP check only needs the connect: closing with a reset (SO_LINGER 0)
/// leaves no TIME_WAIT socket per check, as load balancers' checks do.
fn close_without_time_wait(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a pointer to a live struct
    // of the size given. A zero linger never blocks the close.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl Controller {
    /// Starts checking a web task unless it is checked already.
    pub(crate) fn watch_health(self: &Arc<Self>, task: &str, port: u16, check: HealthCheck) {
        let mut map = self.health.lock().unwrap();
        if map.contains_key(task) {
            return;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // A task re-adopted after a restart keeps the health it had, if it is
        // the same process: until its checks say otherwise it is ready, so
        // a resumed rollout does not take it for a task that never came up.
        let known = self.known_health.lock().unwrap().remove(task);
        let pid = self.driver.task(task).and_then(|t| t.pid);
        let adopted_healthy = known.is_some_and(|k| k.healthy && Some(k.pid) == pid);
        let state = Mutex::new(HealthState {
            health: if adopted_healthy { Health::Healthy } else { Health::Starting },
            pid: if adopted_healthy { pid } else { None },
            ok_streak: 0,
            fail_streak: 0,
            last_error: None,
            failing_since: None,
            reported: None,
        });
        // The checker holds only a Weak so dropping the entry ends it.
        let (tx, rx) = tokio::sync::oneshot::channel::<std::sync::Weak<TaskHealth>>();
        let ctl = Arc::downgrade(self);
        let id = task.to_string();
        let join = tokio::spawn(async move {
            let Ok(th) = rx.await else { return };
            check_loop(ctl, id, check, th).await;
        });
        let backend = Arc::new(wharf_proxy::Backend::new(task, addr));
        let th = Arc::new(TaskHealth { backend, state, checker: join.abort_handle() });
        let _ = tx.send(Arc::downgrade(&th));
        map.insert(task.to_string(), th);
    }
}

async fn check_loop(ctl: std::sync::Weak<Controller>, id: String, check: HealthCheck, th: std::sync::Weak<TaskHealth>) {
    loop {
        let (Some(ctl), Some(th)) = (ctl.upgrade(), th.upgrade()) else { return };
        let Some(status) = ctl.driver.task(&id) else { return };
        if status.state != TaskState::Running {
            // Down or restarting: out of the pool until it passes again.
            set_health(&ctl, &id, &th, Health::Starting, status.pid, None);
            drop((ctl, th));
            tokio::time::sleep(STARTING_PROBE).await;
            continue;
        }
        {
            let mut st = th.state.lock().unwrap();
            if st.pid != status.pid {
                // A restarted process has to prove itself again.
                st.pid = status.pid;
                st.ok_streak = 0;
                st.fail_streak = 0;
                st.failing_since = None;
                st.reported = None;
                if st.health != Health::Starting {
                    st.health = Health::Starting;
                    drop(st);
                    ctl.routes_changed.notify_one();
                }
            }
        }
        let result = ctl.health_client.probe(th.backend.addr, &check).await;
        let age = status.started_at.and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default();
        let in_grace = age < check.grace;
        let current = th.health();
        let next = {
            let mut st = th.state.lock().unwrap();
            match &result {
                Ok(()) => {
                    st.ok_streak += 1;
                    st.fail_streak = 0;
                    st.last_error = None;
                    st.failing_since = None;
                    st.reported = None;
                }
                Err(e) => {
                    st.ok_streak = 0;
                    if !in_grace {
                        st.fail_streak += 1;
                    }
                    st.last_error = Some(e.clone());
                    st.failing_since.get_or_insert_with(Instant::now);
                }
            }
            match current {
                Health::Starting | Health::Unhealthy if st.ok_streak >= check.healthy_threshold => Health::Healthy,
                Health::Healthy if st.fail_streak >= check.unhealthy_threshold => Health::Unhealthy,
                h => h,
            }
        };
        if next == Health::Starting {
            report_waiting(&ctl, &id, &th);
        }
        if next != current {
            set_health(&ctl, &id, &th, next, status.pid, result.err());
        }
        let wait = match next {
            Health::Healthy => check.interval,
            _ if age < STARTING_BRISK_FOR => check.interval.min(STARTING_PROBE),
            _ => check.interval.min(STARTING_PROBE_LATER),
        };
        drop((ctl, th));
        tokio::time::sleep(wait).await;
    }
}

/// A task that has not passed yet and keeps failing its checks: an event
/// with the last result when it changes, and again while it stays the same
/// (every [`REPORT_EVERY`], backing off).
fn report_waiting(ctl: &Controller, id: &str, th: &TaskHealth) {
    let text = {
        let mut st = th.state.lock().unwrap();
        let Some(error) = st.lasting_error().map(str::to_string) else { return };
        let repeats = match &st.reported {
            Some((last, at, n)) if *last == error => {
                let every = REPORT_EVERY.saturating_mul(1u32 << (*n).min(6)).min(REPORT_EVERY_MAX);
                if at.elapsed() < every {
                    return;
                }
                n.saturating_add(1)
            }
            _ => 0,
        };
        let failing = st.failing_since.map(|t| t.elapsed()).unwrap_or_default();
        st.reported = Some((error.clone(), Instant::now(), repeats));
        format!(
            "task {id} is not healthy yet: {error} (checks failing for {})",
            fmt_duration(Duration::from_secs(failing.as_secs()))
        )
    };
    ctl.task_event("task.health_failing", Level::Warn, id, text);
}

pub(crate) fn set_health(
    ctl: &Controller,
    id: &str,
    th: &TaskHealth,
    health: Health,
    pid: Option<u32>,
    error: Option<String>,
) {
    let changed = {
        let mut st = th.state.lock().unwrap();
        let changed = st.health != health;
        st.health = health;
        st.pid = pid;
        if changed && health == Health::Starting {
            st.ok_streak = 0;
            st.fail_streak = 0;
            st.failing_since = None;
            st.reported = None;
        }
        changed
    };
    if !changed {
        return;
    }
    if health == Health::Healthy {
        // Passive ejection from before (say, a restart) no longer applies.
        th.backend.revive();
    }
    if let (Some(pid), Health::Healthy | Health::Unhealthy) = (pid, health) {
        let r = wharf_store::TaskHealthRecord {
            id: id.to_string(),
            pid,
            healthy: health == Health::Healthy,
            at: crate::controller::now_ms(),
        };
        let db = ctl.db.clone();
        tokio::spawn(async move {
            if let Err(e) = db.put_task_health(&r).await {
                tracing::debug!("cannot keep the health of task {}: {e}", r.id);
            }
        });
    }
    ctl.routes_changed.notify_one();
    ctl.wake.notify_one();
    match health {
        Health::Healthy => ctl.task_event("task.healthy", Level::Info, id, format!("task {id} is healthy")),
        Health::Unhealthy => ctl.task_event(
            "task.unhealthy",
            Level::Warn,
            id,
            format!("task {id} is unhealthy: {}", error.unwrap_or_else(|| "checks failed".into())),
        ),
        Health::Starting => {}
    }
}
