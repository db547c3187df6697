//! Health checks of web tasks: a task takes traffic only once it passes.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use wharf_runtime::{Driver, TaskState};
use wharf_spec::HealthCheck;

use crate::clock::Clock;
use crate::component::BackgroundLoop;
use crate::controller::fmt_duration;
use crate::probe::Prober;

/// How often a task that has not passed yet is probed: briskly in its first
/// seconds, so a new or re-adopted task takes traffic quickly even with a
/// long `interval`, then more calmly so a task that never comes up costs little.
const STARTING_PROBE: Duration = Duration::from_millis(50);
/// In those brisk seconds a task is probed again after a quarter of its
/// age, at least this and at most [`STARTING_PROBE`] apart: an app that
/// listens T after its start takes traffic by about 1.25 T (a dozen refused
/// loopback connects over its first 200 ms, instead of waiting up to 50 ms
/// after it is ready).
const STARTING_FIRST_PROBE: Duration = Duration::from_millis(5);
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

/// The most a healthy task's next check is put off so that checks of many
/// tasks due about the same time run in one wakeup of the server (1,000
/// tasks checked every 5 s: 20 wakeups a second instead of 200). At most a
/// tenth of the check's interval.
const COALESCE: Duration = Duration::from_millis(250);

/// How soon a task that has not passed yet, `age` after its start and in
/// its brisk first seconds, is probed again.
fn starting_probe(age: Duration) -> Duration {
    (age / 4).clamp(STARTING_FIRST_PROBE, STARTING_PROBE)
}

/// `at` rounded up to the checks' common grid (counted from `epoch`): a step
/// of [`COALESCE`], or a tenth of `interval` if that is shorter.
fn coalesced(at: Instant, interval: Duration, epoch: Instant) -> Instant {
    let step = COALESCE.min(interval / 10).as_nanos();
    if step == 0 {
        return at;
    }
    let since = at.saturating_duration_since(epoch).as_nanos();
    let up = since.div_ceil(step).saturating_mul(step);
    epoch + Duration::from_nanos(u64::try_from(up).unwrap_or(u64::MAX))
}

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
    /// The last check's error, once checks have failed for [`REPORT_AFTER`] (`now`: clock).
    pub fn lasting_error(&self, now: Instant) -> Option<&str> {
        let since = self.failing_since?;
        (now.saturating_duration_since(since) >= REPORT_AFTER).then_some(self.last_error.as_deref()?)
    }

    /// Takes one check's result (at `now`, by the clock) and says what the
    /// task's health becomes: healthy after `healthy_threshold` passes in a
    /// row, unhealthy after `unhealthy_threshold` failures in a row once
    /// healthy. Failures within the grace period don't count toward that.
    pub(crate) fn record(
        &mut self,
        result: &Result<(), String>,
        in_grace: bool,
        check: &HealthCheck,
        now: Instant,
    ) -> Health {
        match result {
            Ok(()) => {
                self.ok_streak = self.ok_streak.saturating_add(1);
                self.fail_streak = 0;
                self.last_error = None;
                self.failing_since = None;
                self.reported = None;
            }
            Err(e) => {
                self.ok_streak = 0;
                if !in_grace {
                    self.fail_streak = self.fail_streak.saturating_add(1);
                }
                self.last_error = Some(e.clone());
                self.failing_since.get_or_insert(now);
            }
        }
        match self.health {
            Health::Starting | Health::Unhealthy if self.ok_streak >= check.healthy_threshold => Health::Healthy,
            Health::Healthy if self.fail_streak >= check.unhealthy_threshold => Health::Unhealthy,
            h => h,
        }
    }

    /// The event text saying a task that has not passed yet keeps failing,
    /// when one is due at `now`: when the error changes, and again while it
    /// stays the same, every [`REPORT_EVERY`] backing off to [`REPORT_EVERY_MAX`].
    pub(crate) fn waiting_report(&mut self, id: &str, now: Instant) -> Option<String> {
        let error = self.lasting_error(now)?.to_string();
        let repeats = match &self.reported {
            Some((last, at, n)) if *last == error => {
                let every = REPORT_EVERY.saturating_mul(1u32 << (*n).min(6)).min(REPORT_EVERY_MAX);
                if now.saturating_duration_since(*at) < every {
                    return None;
                }
                n.saturating_add(1)
            }
            _ => 0,
        };
        let failing = self.failing_since.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
        self.reported = Some((error.clone(), now, repeats));
        Some(format!(
            "task {id} is not healthy yet: {error} (checks failing for {})",
            fmt_duration(Duration::from_secs(failing.as_secs()))
        ))
    }
}

/// How long a task's process has run, by the clock (`now_ms`), and whether
/// that is still within the check's grace period.
pub(crate) fn in_grace(started_at: Option<SystemTime>, now_ms: u64, grace: Duration) -> (Duration, bool) {
    let started_ms = started_at
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let age = started_ms.map(|t| Duration::from_millis(now_ms.saturating_sub(t))).unwrap_or_default();
    (age, age < grace)
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

/// One task's checks: an HTTP `GET` on a connection the check loop keeps,
/// or a TCP connect when the check has no path.
enum Checker {
    Http(Prober),
    Tcp(SocketAddr),
    /// A path no request can carry: every check fails with this.
    Invalid(String),
}

impl Checker {
    fn new(addr: SocketAddr, check: &HealthCheck) -> Checker {
        match &check.path {
            None => Checker::Tcp(addr),
            Some(path) => Prober::new(addr, path).map_or_else(Checker::Invalid, Checker::Http),
        }
    }

    /// Ok when the task answers with an expected status on `path`, or accepts a TCP connection when there is no path.
    async fn probe(&mut self, check: &HealthCheck) -> Result<(), String> {
        let path = check.path.as_deref().unwrap_or_default();
        match self {
            Checker::Invalid(e) => Err(e.clone()),
            Checker::Http(p) => {
                let status = match tokio::time::timeout(check.timeout, p.get()).await {
                    Ok(r) => r.map_err(|e| format!("GET {path}: {e}"))?,
                    Err(_) => return Err(format!("no answer within {}", fmt_duration(check.timeout))),
                };
                let (low, high) = check.status;
                if (low..=high).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("GET {path} answered {} (expected {low}-{high})", status_text(status)))
                }
            }
            Checker::Tcp(addr) => {
                let connect = tokio::net::TcpStream::connect(*addr);
                match tokio::time::timeout(check.timeout, connect).await {
                    Ok(Ok(stream)) => {
                        close_without_time_wait(&stream);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
                    Err(_) => Err(format!("no answer within {}", fmt_duration(check.timeout))),
                }
            }
        }
    }
}

/// "503 Service Unavailable", as the checks' messages have always said it.
fn status_text(status: u16) -> String {
    match http::StatusCode::from_u16(status) {
        Ok(s) => s.to_string(),
        Err(_) => status.to_string(),
    }
}

/// A TCP check only needs the connect: closing with a reset (SO_LINGER 0)
/// leaves no TIME_WAIT socket per check, as load balancers' checks do.
#[allow(unsafe_code)] // a socket option std does not set; see the SAFETY note inside
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

/// The health monitor: checks web tasks and keeps what they showed. It owns
/// each task's health, the health kept in the store for tasks re-adopted at
/// start, and the proxy's view of each task (its
/// [`wharf_proxy::Backend`], shared by every routing snapshot). Others ask it;
/// nothing else holds its map. What others must act on (a task became
/// healthy, a task keeps failing) it sends as [`HealthNote`]s.
pub(crate) struct HealthMonitor {
    tasks: Mutex<HashMap<String, Arc<TaskHealth>>>,
    /// Health kept in the store for tasks re-adopted at start, taken once
    /// each when their checks begin.
    known: Mutex<HashMap<String, wharf_store::TaskHealthRecord>>,
    clock: Arc<dyn Clock>,
    notes: mpsc::UnboundedSender<HealthNote>,
    /// Where the grid healthy tasks' checks are put on starts.
    epoch: Instant,
}

/// What the monitor tells the rest of the controller.
#[derive(Debug, PartialEq)]
pub(crate) enum HealthNote {
    /// A task's health changed: routing and the reconciler look again; a
    /// verdict on a known process is kept in the store and is an event.
    Changed { task: String, health: Health, pid: Option<u32>, error: Option<String> },
    /// A task that has not passed yet keeps failing: an event saying why.
    Waiting { task: String, text: String },
}

/// What the monitor knows of one task, for views and metrics.
pub(crate) struct TaskHealthView {
    pub health: Health,
    pub last_error: Option<String>,
    pub backend: Arc<wharf_proxy::Backend>,
}

impl BackgroundLoop for HealthMonitor {
    /// Each task's checks run on their own timers; when the server stops,
    /// every check ends.
    fn start(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
            self.tasks.lock().unwrap().clear();
        });
    }

    /// Nothing to do: the checks hear their tasks directly, on their own timers.
    fn wake(&self) {}
}

impl HealthMonitor {
    /// The monitor, and where its notes arrive.
    pub(crate) fn new(clock: Arc<dyn Clock>) -> (HealthMonitor, mpsc::UnboundedReceiver<HealthNote>) {
        let (notes, rx) = mpsc::unbounded_channel();
        let monitor = HealthMonitor {
            tasks: Mutex::default(),
            known: Mutex::default(),
            clock,
            notes,
            epoch: tokio::time::Instant::now().into_std(),
        };
        (monitor, rx)
    }

    /// The health the store kept, for tasks re-adopted after a restart.
    pub(crate) fn restore(&self, known: Vec<wharf_store::TaskHealthRecord>) {
        *self.known.lock().unwrap() = known.into_iter().map(|h| (h.id.clone(), h)).collect();
    }

    fn get(&self, task: &str) -> Option<Arc<TaskHealth>> {
        self.tasks.lock().unwrap().get(task).cloned()
    }

    /// None: the task is not checked (a worker, or not yet watched).
    pub(crate) fn health(&self, task: &str) -> Option<Health> {
        self.get(task).map(|th| th.health())
    }

    pub(crate) fn is_healthy(&self, task: &str) -> bool {
        self.health(task) == Some(Health::Healthy)
    }

    /// The proxy's view of a checked task.
    pub(crate) fn backend(&self, task: &str) -> Option<Arc<wharf_proxy::Backend>> {
        self.get(task).map(|th| th.backend.clone())
    }

    pub(crate) fn view(&self, task: &str) -> Option<TaskHealthView> {
        let th = self.get(task)?;
        let st = th.state.lock().unwrap();
        Some(TaskHealthView { health: st.health, last_error: st.last_error.clone(), backend: th.backend.clone() })
    }

    /// The last check's error of a task that is not healthy and has failed
    /// its checks for a while (not a booting app's first refusals).
    pub(crate) fn failing(&self, task: &str) -> Option<String> {
        let th = self.get(task)?;
        let st = th.state.lock().unwrap();
        if st.health == Health::Healthy {
            return None;
        }
        st.lasting_error(self.clock.instant()).map(str::to_string)
    }

    /// Every checked task with its health and backend.
    pub(crate) fn backends(&self) -> Vec<(String, Health, Arc<wharf_proxy::Backend>)> {
        let tasks = self.tasks.lock().unwrap();
        tasks.iter().map(|(id, th)| (id.clone(), th.health(), th.backend.clone())).collect()
    }

    /// Stops checking a task (its checker ends with its entry).
    pub(crate) fn forget(&self, task: &str) {
        self.tasks.lock().unwrap().remove(task);
    }

    /// Stops checking tasks not in `live`; true when there were any.
    pub(crate) fn forget_all_but(&self, live: &HashSet<String>) -> bool {
        let mut tasks = self.tasks.lock().unwrap();
        let before = tasks.len();
        tasks.retain(|id, _| live.contains(id));
        tasks.len() != before
    }

    /// A task whose process exited: out of the pool at once, not at its next check.
    pub(crate) fn exited(&self, task: &str) {
        if let Some(th) = self.get(task) {
            self.set_health(task, &th, Health::Starting, None, None);
        }
    }

    /// Starts checking a web task of `driver` unless it is checked already.
    pub(crate) fn watch(self: &Arc<Self>, driver: &Arc<dyn Driver>, task: &str, port: u16, check: HealthCheck) {
        let mut map = self.tasks.lock().unwrap();
        if map.contains_key(task) {
            return;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // A task re-adopted after a restart keeps the health it had, if it is
        // the same process: until its checks say otherwise it is ready, so
        // a resumed rollout does not take it for a task that never came up.
        let known = self.known.lock().unwrap().remove(task);
        let pid = driver.task(task).and_then(|t| t.pid);
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
        // The checker holds only Weaks so dropping the entry (or the monitor) ends it.
        let (tx, rx) = tokio::sync::oneshot::channel::<std::sync::Weak<TaskHealth>>();
        let monitor = Arc::downgrade(self);
        let driver = Arc::downgrade(driver);
        let id = task.to_string();
        let join = tokio::spawn(async move {
            let Ok(th) = rx.await else { return };
            check_loop(monitor, driver, id, check, addr, th).await;
        });
        let backend = Arc::new(wharf_proxy::Backend::new(task, addr));
        let th = Arc::new(TaskHealth { backend, state, checker: join.abort_handle() });
        let _ = tx.send(Arc::downgrade(&th));
        map.insert(task.to_string(), th);
    }

    fn note(&self, note: HealthNote) {
        // The receiver goes only with the controller, which ends the checks too.
        let _ = self.notes.send(note);
    }

    /// A task that has not passed yet and keeps failing its checks: a note
    /// with the last result when one is due.
    fn report_waiting(&self, id: &str, th: &TaskHealth) {
        let text = th.state.lock().unwrap().waiting_report(id, self.clock.instant());
        if let Some(text) = text {
            self.note(HealthNote::Waiting { task: id.to_string(), text });
        }
    }

    fn set_health(&self, id: &str, th: &TaskHealth, health: Health, pid: Option<u32>, error: Option<String>) {
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
        match health {
            // Passive ejection from before (say, a restart) no longer applies.
            Health::Healthy => th.backend.revive(),
            // Out of rotation now: a request must not reach it in the moment
            // before routing publishes a table without it.
            Health::Unhealthy => th.backend.eject_until_revived(),
            Health::Starting => {}
        }
        self.note(HealthNote::Changed { task: id.to_string(), health, pid, error });
    }
}

async fn check_loop(
    monitor: std::sync::Weak<HealthMonitor>,
    driver: std::sync::Weak<dyn Driver>,
    id: String,
    check: HealthCheck,
    addr: SocketAddr,
    th: std::sync::Weak<TaskHealth>,
) {
    let mut checker = Checker::new(addr, &check);
    loop {
        let (Some(monitor), Some(driver), Some(th)) = (monitor.upgrade(), driver.upgrade(), th.upgrade()) else {
            return;
        };
        let Some(status) = driver.task(&id) else { return };
        drop(driver);
        if status.state != TaskState::Running {
            // Down or restarting: out of the pool until it passes again.
            monitor.set_health(&id, &th, Health::Starting, status.pid, None);
            drop((monitor, th));
            tokio::time::sleep(STARTING_PROBE).await;
            continue;
        }
        let restarted = {
            let mut st = th.state.lock().unwrap();
            // A restarted process has to prove itself again.
            let restarted = st.pid != status.pid;
            if restarted {
                st.pid = status.pid;
                st.ok_streak = 0;
                st.fail_streak = 0;
                st.failing_since = None;
                st.reported = None;
            }
            restarted && st.health != Health::Starting
        };
        if restarted {
            monitor.set_health(&id, &th, Health::Starting, status.pid, None);
        }
        let result = checker.probe(&check).await;
        let (age, in_grace) = in_grace(status.started_at, monitor.clock.now_ms(), check.grace);
        let current = th.health();
        let next = th.state.lock().unwrap().record(&result, in_grace, &check, monitor.clock.instant());
        if next == Health::Starting {
            monitor.report_waiting(&id, &th);
        }
        if next != current {
            monitor.set_health(&id, &th, next, status.pid, result.err());
        }
        // The timer's clock (tokio's), so that paused time in tests holds.
        let now = tokio::time::Instant::now().into_std();
        let next_check = match next {
            Health::Healthy => coalesced(now + check.interval, check.interval, monitor.epoch),
            _ if age < STARTING_BRISK_FOR && status.started_at.is_some() => {
                now + check.interval.min(starting_probe(age))
            }
            _ if age < STARTING_BRISK_FOR => now + check.interval.min(STARTING_PROBE),
            _ => now + check.interval.min(STARTING_PROBE_LATER),
        };
        drop((monitor, th));
        tokio::time::sleep_until(next_check.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, TestClock};

    const START: u64 = 1_774_656_000_000;

    #[test]
    fn a_new_task_is_probed_after_a_quarter_of_its_age_between_5_and_50_ms() {
        let ms = Duration::from_millis;
        assert_eq!(starting_probe(ms(0)), ms(5));
        assert_eq!(starting_probe(ms(40)), ms(10));
        assert_eq!(starting_probe(ms(200)), ms(50));
        assert_eq!(starting_probe(Duration::from_secs(4)), ms(50));
    }

    #[test]
    fn healthy_checks_land_on_a_shared_grid_never_early_and_at_most_a_step_late() {
        let epoch = tokio::time::Instant::now().into_std();
        let interval = Duration::from_secs(5);
        for offset_ms in [0u64, 1, 124, 249, 250, 251, 4_999, 77_777] {
            let at = epoch + Duration::from_millis(offset_ms);
            let c = coalesced(at, interval, epoch);
            assert!(c >= at && c - at < COALESCE, "{offset_ms} ms: put off by {:?}", c - at);
            assert_eq!((c - epoch).as_nanos() % COALESCE.as_nanos(), 0, "{offset_ms} ms: off the grid");
        }
        // Two tasks due 100 ms apart are checked in the same wakeup.
        let a = coalesced(epoch + Duration::from_millis(1_010), interval, epoch);
        let b = coalesced(epoch + Duration::from_millis(1_110), interval, epoch);
        assert_eq!(a, b);
        // A short interval gets a finer grid: a tenth of it.
        let fast = coalesced(epoch + Duration::from_millis(1), Duration::from_millis(500), epoch);
        assert_eq!(fast - epoch, Duration::from_millis(50));
        let at = epoch + Duration::from_millis(3);
        assert_eq!(coalesced(at, Duration::ZERO, epoch), at, "no grid for a zero interval");
    }

    fn state() -> HealthState {
        HealthState {
            health: Health::Starting,
            pid: Some(1),
            ok_streak: 0,
            fail_streak: 0,
            last_error: None,
            failing_since: None,
            reported: None,
        }
    }

    fn check() -> HealthCheck {
        HealthCheck {
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            grace: Duration::from_secs(30),
            ..Default::default()
        }
    }

    /// Feeds results one check interval apart, applying each verdict as the
    /// checker does; returns the health after each.
    fn run(st: &mut HealthState, clock: &TestClock, results: &[bool], in_grace: bool) -> Vec<Health> {
        results
            .iter()
            .map(|ok| {
                clock.advance(Duration::from_secs(5));
                let r = if *ok { Ok(()) } else { Err("connect 127.0.0.1:1: refused".to_string()) };
                st.health = st.record(&r, in_grace, &check(), clock.instant());
                st.health
            })
            .collect()
    }

    #[test]
    fn a_task_is_healthy_after_its_threshold_of_passes_and_unhealthy_after_its_threshold_of_failures() {
        use Health::*;
        let clock = TestClock::new(START);
        let mut st = state();
        assert_eq!(run(&mut st, &clock, &[true, false, true, true], false), [Starting, Starting, Starting, Healthy]);
        assert_eq!(run(&mut st, &clock, &[false, false, true], false), [Healthy, Healthy, Healthy], "a pass resets");
        assert_eq!(run(&mut st, &clock, &[false, false, false], false), [Healthy, Healthy, Unhealthy]);
        assert_eq!(run(&mut st, &clock, &[true, true], false), [Unhealthy, Healthy]);
    }

    #[test]
    fn failures_within_the_grace_period_do_not_count() {
        let clock = TestClock::new(START);
        let started = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(START));
        let grace = check().grace;
        assert_eq!(in_grace(started, clock.now_ms(), grace), (Duration::ZERO, true));
        let mut st = state();
        run(&mut st, &clock, &[true, true], true);
        assert_eq!(st.health, Health::Healthy);
        assert_eq!(run(&mut st, &clock, &[false; 5], true), [Health::Healthy; 5], "in grace: failures don't count");
        clock.advance(grace);
        let (age, grace_now) = in_grace(started, clock.now_ms(), grace);
        assert!(!grace_now && age > grace, "{age:?}");
        assert_eq!(run(&mut st, &clock, &[false; 3], grace_now).last(), Some(&Health::Unhealthy));
        assert_eq!(in_grace(None, clock.now_ms(), grace), (Duration::ZERO, true), "not started: in grace");
    }

    #[test]
    fn a_failing_new_task_is_reported_after_a_second_then_less_and_less_often() {
        let clock = TestClock::new(START);
        let mut st = state();
        let fail = Err("GET /up answered 503".to_string());
        st.record(&fail, false, &check(), clock.instant());
        assert_eq!(st.waiting_report("t1", clock.instant()), None, "a booting app's first failures are not news");
        clock.advance(REPORT_AFTER);
        let text = st.waiting_report("t1", clock.instant()).expect("reported after a second");
        assert_eq!(text, "task t1 is not healthy yet: GET /up answered 503 (checks failing for 1s)");
        let mut reported_at = vec![];
        for second in 1..=60 {
            clock.advance(Duration::from_secs(1));
            st.record(&fail, false, &check(), clock.instant());
            if st.waiting_report("t1", clock.instant()).is_some() {
                reported_at.push(second);
            }
        }
        // Again after 5 s for the first repeat, then 10 s, 20 s, 40 s...
        assert_eq!(reported_at, [5, 15, 35]);
        st.record(&Ok(()), false, &check(), clock.instant());
        assert_eq!(st.lasting_error(clock.instant()), None, "a pass ends it");
    }

    /// The monitor answers from its own map: a task not healthy is reported
    /// as failing only once its checks have failed a while by the clock.
    #[tokio::test]
    async fn the_monitor_reports_a_task_failing_only_after_a_while_and_forgets_gone_tasks() {
        let clock = Arc::new(TestClock::new(START));
        let (monitor, _notes) = HealthMonitor::new(clock.clone());
        for id in ["t1", "t2"] {
            let checker = tokio::spawn(async {}).abort_handle();
            let backend = Arc::new(wharf_proxy::Backend::new(id, ([127, 0, 0, 1], 1).into()));
            let th = Arc::new(TaskHealth { backend, state: Mutex::new(state()), checker });
            monitor.tasks.lock().unwrap().insert(id.to_string(), th);
        }
        let th = monitor.get("t1").unwrap();
        th.state.lock().unwrap().record(&Err("refused".into()), false, &check(), clock.instant());
        assert_eq!((monitor.health("t1"), monitor.failing("t1")), (Some(Health::Starting), None));
        clock.advance(REPORT_AFTER);
        assert_eq!(monitor.failing("t1").as_deref(), Some("refused"));
        assert_eq!(monitor.view("t1").unwrap().last_error.as_deref(), Some("refused"));
        assert!(!monitor.is_healthy("t1") && monitor.health("t3").is_none());
        let live = HashSet::from(["t2".to_string()]);
        assert!(monitor.forget_all_but(&live));
        assert!(!monitor.forget_all_but(&live), "nothing more to forget");
        assert_eq!(monitor.backends().iter().map(|(id, ..)| id.as_str()).collect::<Vec<_>>(), ["t2"]);
    }

    /// What others act on arrives as notes, once per change: an exited
    /// task leaves the pool at once, and saying so again is no news.
    #[tokio::test]
    async fn the_monitor_notes_a_change_once() {
        let clock = Arc::new(TestClock::new(START));
        let (monitor, mut notes) = HealthMonitor::new(clock.clone());
        let checker = tokio::spawn(async {}).abort_handle();
        let backend = Arc::new(wharf_proxy::Backend::new("t1", ([127, 0, 0, 1], 1).into()));
        let mut st = state();
        st.health = Health::Healthy;
        let th = Arc::new(TaskHealth { backend, state: Mutex::new(st), checker });
        monitor.tasks.lock().unwrap().insert("t1".to_string(), th);
        monitor.exited("t1");
        monitor.exited("t1");
        monitor.exited("not-checked");
        let changed = HealthNote::Changed { task: "t1".into(), health: Health::Starting, pid: None, error: None };
        assert_eq!(notes.try_recv().ok(), Some(changed));
        assert!(notes.try_recv().is_err(), "one change, one note");
        assert_eq!(monitor.health("t1"), Some(Health::Starting));
    }
}
