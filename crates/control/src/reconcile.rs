//! The reconciler: desired (service → revision, replicas) against observed
//! tasks. Idempotent; runs on every change and once a second.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use std::time::Instant;

use rand::Rng;
use tokio::sync::{watch, Notify};
use wharf_logs::Level;
use wharf_runtime::{TaskSpec, TaskState, TaskStatus, TaskUser};
use wharf_store::{ServiceRecord, TaskRecord};

use crate::clock::Clock;
use crate::component::BackgroundLoop;
use crate::controller::{signal_number, ControlError, Controller};
use crate::error::{Invalid, Unavailable};
use crate::strategy::PoolLayout;

/// How long a task of a removed service may finish what it has (requests,
/// WebSockets) before it is signalled; services set their own in `deploy`.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between retries of a service whose tasks fail to spawn.
const MAX_START_BACKOFF: Duration = Duration::from_secs(30);
/// The longest the reconciler sleeps when nothing wakes it: a safety net for
/// a change no event announced.
const BACKSTOP: Duration = Duration::from_secs(5);

/// Tasks taken out of the routing table and being stopped. A task that
/// drains can still be taken back (a rollback wants its revision) until its
/// stop is signalled; the two sets change under one lock so they agree.
#[derive(Default)]
pub(crate) struct Drains(Mutex<DrainSets>);

#[derive(Default)]
struct DrainSets {
    draining: HashSet<String>,
    /// Draining tasks whose stop has begun: too late to take them back.
    signalled: HashSet<String>,
}

impl Drains {
    /// Starts draining a task; false when it already drains.
    fn begin(&self, id: &str) -> bool {
        self.0.lock().unwrap().draining.insert(id.to_string())
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.0.lock().unwrap().draining.contains(id)
    }

    /// The tasks draining now.
    pub(crate) fn snapshot(&self) -> HashSet<String> {
        self.0.lock().unwrap().draining.clone()
    }

    /// Takes a draining task back into service, unless its stop has begun.
    fn take_back(&self, id: &str) -> bool {
        let mut sets = self.0.lock().unwrap();
        !sets.signalled.contains(id) && sets.draining.remove(id)
    }

    /// Marks the stop of a draining task as begun; false when it was taken back.
    fn signal(&self, id: &str) -> bool {
        let mut sets = self.0.lock().unwrap();
        sets.draining.contains(id) && sets.signalled.insert(id.to_string())
    }

    /// The task is stopped and gone.
    fn end(&self, id: &str) {
        let mut sets = self.0.lock().unwrap();
        sets.draining.remove(id);
        sets.signalled.remove(id);
    }
}

/// The reconciler's loop: a pass whenever something it watches may have
/// changed (woken), when a start backoff ends, and at least every
/// [`BACKSTOP`].
pub(crate) struct Reconciler {
    ctl: Weak<Controller>,
    clock: Arc<dyn Clock>,
    woken: Notify,
    /// Per service: consecutive start failures and when to try again.
    backoff: Mutex<HashMap<(String, String), (u32, Instant)>>,
    /// Tasks out of the routing table on their way to a stop (routing reads them).
    pub(crate) drains: Arc<Drains>,
}

impl Reconciler {
    pub(crate) fn new(ctl: Weak<Controller>, clock: Arc<dyn Clock>, drains: Arc<Drains>) -> Reconciler {
        Reconciler { ctl, clock, woken: Notify::new(), backoff: Mutex::default(), drains }
    }

    /// Until the next pass when nothing wakes the loop: the end of the
    /// earliest start backoff, at most [`BACKSTOP`]. Everything else it acts
    /// on (task exits, health changes, deploys, scaling) wakes it.
    fn next_wait(&self) -> Duration {
        let now = self.clock.instant();
        let backoff = self.backoff.lock().unwrap();
        backoff
            .values()
            .map(|(_, until)| until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .min()
            .map_or(BACKSTOP, |d| d.min(BACKSTOP))
    }

    /// A service may start a task: it is not backing off after failed starts.
    fn start_allowed(&self, app: &str, service: &str) -> bool {
        let now = self.clock.instant();
        let backoff = self.backoff.lock().unwrap();
        backoff.get(&(app.to_string(), service.to_string())).is_none_or(|(_, until)| now >= *until)
    }

    /// A start failed: the service backs off; returns for how long.
    fn start_failed(&self, app: &str, service: &str) -> Duration {
        let now = self.clock.instant();
        let mut backoff = self.backoff.lock().unwrap();
        let entry = backoff.entry((app.to_string(), service.to_string())).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let wait = start_backoff(entry.0);
        entry.1 = wharf_runtime::deadline::instant_after(now, wait);
        wait
    }

    /// A start succeeded: the service's failures are forgotten.
    fn started(&self, app: &str, service: &str) {
        self.backoff.lock().unwrap().remove(&(app.to_string(), service.to_string()));
    }

    /// Forgets an app's services (the app was destroyed).
    pub(crate) fn forget_app(&self, app: &str) {
        self.backoff.lock().unwrap().retain(|(a, _), _| a != app);
    }
}

impl BackgroundLoop for Reconciler {
    fn start(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    return;
                }
                let Some(ctl) = self.ctl.upgrade() else { return };
                if let Err(e) = ctl.reconcile_once().await {
                    tracing::warn!("reconcile failed: {e}");
                }
                drop(ctl);
                let wait = self.next_wait();
                tokio::select! {
                    _ = self.woken.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    fn wake(&self) {
        self.woken.notify_one();
    }
}

impl Controller {
    /// Whether a task counts as up: web tasks once healthy, workers once running.
    pub(crate) fn is_ready(&self, t: &TaskStatus, web: bool) -> bool {
        if web {
            self.health.is_healthy(&t.spec.id)
        } else {
            t.state == TaskState::Running
        }
    }

    pub(crate) async fn reconcile_once(self: &Arc<Self>) -> Result<(), ControlError> {
        let services = self.db.services(None).await?;
        // New web services get their names and addresses before any task
        // is started with their URLs in its environment.
        if self.discovery.refresh(&self.catalog, &services).await {
            self.routing.publish().await;
        }
        let mut observed: HashMap<(String, String), Vec<TaskStatus>> = HashMap::new();
        {
            let draining = self.reconciler.drains.snapshot();
            for t in self.driver.tasks() {
                // One-off tasks and tasks on their way out are not counted.
                if !t.spec.restart || draining.contains(&t.spec.id) || t.state == TaskState::Stopping {
                    continue;
                }
                self.catalog.remember(&t.spec);
                observed.entry((t.spec.app.clone(), t.spec.service.clone())).or_default().push(t);
            }
        }
        for svc in &services {
            let tasks = observed.remove(&(svc.app.clone(), svc.name.clone())).unwrap_or_default();
            self.reconcile_service(svc, tasks).await?;
        }
        // Whatever is left belongs to no service any more.
        for t in observed.into_values().flatten() {
            self.drain_and_stop(&t.spec.id, "its service was removed", DRAIN_TIMEOUT).await;
        }
        self.forget_gone_tasks().await?;
        Ok(())
    }

    async fn reconcile_service(
        self: &Arc<Self>,
        svc: &ServiceRecord,
        tasks: Vec<TaskStatus>,
    ) -> Result<(), ControlError> {
        let rev = self.catalog.revision(&svc.app, &svc.name, svc.revision).await?;
        let web = rev.spec.is_web();
        if let Some(check) = &rev.spec.health {
            for t in &tasks {
                if let Some(port) = t.spec.port {
                    // Old revisions' tasks keep their own check settings.
                    let check = if t.spec.revision == rev.number {
                        check.clone()
                    } else {
                        self.catalog
                            .revision(&svc.app, &svc.name, t.spec.revision)
                            .await
                            .ok()
                            .and_then(|r| r.spec.health.clone())
                            .unwrap_or_else(|| check.clone())
                    };
                    self.health.watch(&self.driver, &t.spec.id, port, check);
                }
            }
        }
        let (mut current, old): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| t.spec.revision == rev.number);
        if current.len() < svc.replicas as usize {
            // A rollback wants this revision back: its tasks still draining serve again
            // rather than being stopped while fresh ones start.
            current.extend(self.reclaim(svc, web, svc.replicas as usize - current.len()).await);
        }
        // The strategy keeps the sets that serve or stand by; the rest leaves.
        let layout = PoolLayout::of(svc);
        let leaving: Vec<TaskStatus> = old.into_iter().filter(|t| !layout.keeps(t.spec.revision)).collect();
        let policy = &rev.spec.deploy;
        let drain = policy.drain_timeout;
        let want = svc.replicas as usize;
        let ready_new = current.iter().filter(|t| self.is_ready(t, web)).count();
        // Not-ready leftovers of other revisions serve nothing: they go first.
        let (old_ready, old_unready): (Vec<_>, Vec<_>) = leaving.into_iter().partition(|t| self.is_ready(t, web));
        for t in &old_unready {
            let why = format!("replaced by {}@{} (it was not ready)", svc.name, rev.number);
            self.drain_and_stop(&t.spec.id, &why, drain).await;
        }
        if current.len() < want {
            // Rolling: at most max_surge tasks above the replicas at any time.
            // Blue-green (and moves between sets): the whole new set at once.
            let room = if layout.starts_whole() || old_ready.is_empty() {
                want - current.len()
            } else {
                (want + policy.max_surge as usize).saturating_sub(current.len() + old_ready.len())
            };
            for _ in 0..room.min(want - current.len()) {
                if !self.reconciler.start_allowed(&svc.app, &svc.name) {
                    break;
                }
                match self.start_task(svc, &rev).await {
                    Ok(()) => {
                        self.reconciler.started(&svc.app, &svc.name);
                    }
                    Err(e) => {
                        self.start_failed(svc, &e);
                        break;
                    }
                }
            }
        } else if current.len() > want {
            // Scale in: not-ready tasks first, then the newest.
            let mut extra: Vec<&TaskStatus> = current.iter().collect();
            extra.sort_by_key(|t| (self.is_ready(t, web), std::cmp::Reverse(t.started_at)));
            for t in extra.into_iter().take(current.len() - want) {
                self.drain_and_stop(&t.spec.id, "scaling in", drain).await;
            }
        }
        // Old ready tasks leave while at least replicas − max_unavailable stay ready
        // (the oldest first); blue-green's kept set is not counted as capacity.
        let floor = want.saturating_sub(policy.max_unavailable as usize);
        let removable = (ready_new + old_ready.len()).saturating_sub(floor).min(old_ready.len());
        let mut old_ready = old_ready;
        old_ready.sort_by_key(|t| t.started_at);
        for t in old_ready.into_iter().take(removable) {
            let why = format!("replaced by {}@{}", svc.name, rev.number);
            self.drain_and_stop(&t.spec.id, &why, drain).await;
        }
        Ok(())
    }

    /// Takes back up to `n` ready tasks of the service's desired revision
    /// that are draining but not yet signalled: they rejoin the pool.
    async fn reclaim(self: &Arc<Self>, svc: &ServiceRecord, web: bool, n: usize) -> Vec<TaskStatus> {
        let candidates: Vec<TaskStatus> = {
            let draining = self.reconciler.drains.snapshot();
            self.driver
                .tasks()
                .into_iter()
                .filter(|t| t.spec.restart && t.spec.app == svc.app && t.spec.service == svc.name)
                .filter(|t| t.spec.revision == svc.revision && t.state == TaskState::Running)
                .filter(|t| draining.contains(&t.spec.id))
                .collect()
        };
        let mut back = Vec::new();
        for t in candidates.into_iter().filter(|t| self.is_ready(t, web)).take(n) {
            if self.reconciler.drains.take_back(&t.spec.id) {
                self.events.task_event(
                    "task.reclaimed",
                    Level::Info,
                    &t.spec.id,
                    format!(
                        "task {} serves again: {}@{} is wanted back and it had not been stopped yet",
                        t.spec.id, svc.name, svc.revision
                    ),
                );
                back.push(t);
            }
        }
        if !back.is_empty() {
            self.routing.publish().await;
        }
        back
    }

    fn start_failed(&self, svc: &ServiceRecord, e: &ControlError) {
        let wait = self.reconciler.start_failed(&svc.app, &svc.name);
        self.events.event_full(
            "task.start_failed",
            Level::Error,
            Some(&svc.app),
            Some(&svc.name),
            None,
            format!("cannot start a task of {}@{}: {e}; retrying in {}s", svc.name, svc.revision, wait.as_secs_f64()),
        );
    }

    async fn start_task(
        self: &Arc<Self>,
        svc: &ServiceRecord,
        rev: &wharf_store::Revision,
    ) -> Result<(), ControlError> {
        let id = format!("{}-{}-{}-{}", svc.app, svc.name, rev.number, short_id());
        let port = if rev.spec.is_web() {
            let taken = self.driver.tasks().iter().filter_map(|t| t.spec.port).collect();
            Some(free_port(&taken)?)
        } else {
            None
        };
        let mut spec = self.task_spec(&svc.app, &svc.name, rev, &id, rev.spec.command.clone(), true)?;
        spec.port = port;
        // Intent first: a crash between these two lines leaves a record
        // without a task, which forget_gone_tasks() cleans up.
        let record = TaskRecord {
            id: id.clone(),
            app: svc.app.clone(),
            service: svc.name.clone(),
            revision: rev.number,
            created_at: self.now_ms(),
        };
        self.db.put_task(&record).await?;
        self.catalog.remember(&spec);
        if let Err(e) = self.driver.start(spec).await {
            self.db.delete_task(&id).await?;
            return Err(e.into());
        }
        if let (Some(port), Some(check)) = (port, rev.spec.health.clone()) {
            self.health.watch(&self.driver, &id, port, check);
        }
        Ok(())
    }

    /// A task of a revision: its code, workdir, environment and limits;
    /// `restart` false for one-offs (release commands, `wharf run`).
    pub(crate) fn task_spec(
        &self,
        app: &str,
        service: &str,
        rev: &wharf_store::Revision,
        id: &str,
        command: Vec<String>,
        restart: bool,
    ) -> Result<TaskSpec, ControlError> {
        let user = self.task_user_for(service, &rev.spec)?;
        let (env, sealed_env) = self.task_env(app, service, rev, id)?;
        Ok(TaskSpec {
            id: id.to_string(),
            app: app.to_string(),
            service: service.to_string(),
            revision: rev.number,
            command,
            workdir: self.releases.path(app, &rev.release).join(&rev.spec.workdir),
            env,
            sealed_env,
            port: None,
            cpu_units: rev.spec.cpu,
            memory_bytes: rev.spec.memory,
            stop_signal: signal_number(&rev.spec.stop_signal),
            stop_timeout: rev.spec.stop_timeout,
            restart,
            user,
        })
    }

    /// The account a service's tasks run as: its own `user`, else the
    /// server's task user. Only a root server can switch accounts.
    pub(crate) fn task_user_for(
        &self,
        service: &str,
        spec: &wharf_spec::Service,
    ) -> Result<Option<TaskUser>, ControlError> {
        let Some(name) = &spec.user else { return Ok(self.task_user.clone()) };
        TaskUser::resolve(name).map_err(|source| Invalid::TaskUser { service: service.to_string(), source }.into())
    }

    /// What every task of a revision finds in its environment.
    /// Secrets go in sealed for this task alone (named in the second set):
    /// the driver opens them only to start the process.
    fn task_env(
        &self,
        app: &str,
        service: &str,
        rev: &wharf_store::Revision,
        id: &str,
    ) -> Result<(BTreeMap<String, String>, std::collections::BTreeSet<String>), ControlError> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), self.task_path.clone());
        env.extend(self.discovery.env(app));
        env.extend(rev.spec.env.clone());
        let (secrets, sealed) = self.secrets.task_env(app, id, service, &rev.spec)?;
        env.extend(secrets);
        env.insert("WHARF_APP".into(), app.to_string());
        env.insert("WHARF_SERVICE".into(), service.to_string());
        env.insert("WHARF_REVISION".into(), rev.number.to_string());
        env.insert("WHARF_TASK".into(), id.to_string());
        Ok((env, sealed))
    }

    /// Takes a task out of the routing table first, then stops it gracefully
    /// in the background. Always in that order, so no new request reaches a
    /// task that is going away.
    pub(crate) async fn drain_and_stop(self: &Arc<Self>, id: &str, why: &str, drain: Duration) {
        if !self.reconciler.drains.begin(id) {
            return;
        }
        self.events.task_event("task.stopping", Level::Info, id, format!("stopping task {id}: {why}"));
        self.routing.publish().await;
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            this.wait_drained(&id, drain).await;
            // Taken back (a rollback to its revision) while it drained: it stays.
            if !this.reconciler.drains.signal(&id) {
                return;
            }
            if let Err(e) = this.driver.stop(&id).await {
                this.events.task_event("task.stop_failed", Level::Error, &id, format!("cannot stop task {id}: {e}"));
            }
            this.health.forget(&id);
            if let Err(e) = this.db.delete_task(&id).await {
                tracing::warn!("cannot delete task record {id}: {e}");
            }
            this.reconciler.drains.end(&id);
            this.reconciler.wake();
        });
    }

    /// Waits until requests and upgraded connections that were already on
    /// the task have finished (it gets no new ones), or the drain timeout.
    async fn wait_drained(&self, id: &str, drain: Duration) {
        let backend = self.health.backend(id);
        let Some(backend) = backend else { return };
        let deadline = wharf_runtime::deadline::instant_after(self.clock.instant(), drain);
        while backend.in_flight() > 0 && self.clock.instant() < deadline {
            if !self.reconciler.drains.contains(id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if backend.in_flight() > 0 {
            self.events.task_event(
                "task.drain_timeout",
                Level::Warn,
                id,
                format!(
                    "task {id} still had {} requests or connections after {}s; stopping it anyway",
                    backend.in_flight(),
                    drain.as_secs_f64()
                ),
            );
        }
        backend.close_idle();
    }

    /// Drops bookkeeping of tasks the driver no longer has.
    async fn forget_gone_tasks(&self) -> Result<(), ControlError> {
        let live: std::collections::HashSet<String> =
            self.driver.tasks().into_iter().map(|t| t.spec.id.clone()).collect();
        if self.health.forget_all_but(&live) {
            self.routing.wake();
        }
        let draining = self.reconciler.drains.snapshot();
        for r in self.db.tasks().await? {
            if !live.contains(&r.id) && !draining.contains(&r.id) {
                self.db.delete_task(&r.id).await?;
            }
        }
        Ok(())
    }
}

/// How long a service waits before its next start after `failures`
/// consecutive failed ones: doubling from half a second, at most 30 s.
fn start_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    Duration::from_millis(500).saturating_mul(1 << doublings).min(MAX_START_BACKOFF)
}

pub(crate) fn short_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Task ports come from below the kernel's ephemeral range, so an outgoing
/// connection (which takes its local port from that range) can't grab a
/// port between the check here and the task's bind.
const TASK_PORTS_FROM: u16 = 20_000;

/// The kernel's ephemeral port range (`ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// A port for a new task: not given to another task, free to bind right
/// now, and outside the ephemeral range when there is room below it.
fn free_port(taken: &std::collections::HashSet<u16>) -> Result<u16, ControlError> {
    let (low, high) = ephemeral_range();
    let range = if low > TASK_PORTS_FROM + 1_000 {
        TASK_PORTS_FROM..low
    } else {
        // A host whose ephemeral range starts low: above it, else anywhere.
        high.saturating_add(1).max(1_024)..u16::MAX
    };
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(range.clone());
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // Crowded: let the kernel choose.
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Unavailable::NoFreePort)?;
    Ok(l.local_addr().map_err(Unavailable::NoFreePort)?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ports_stay_out_of_the_ephemeral_range_and_off_other_tasks() {
        let (low, _) = ephemeral_range();
        let mut taken = std::collections::HashSet::new();
        for _ in 0..50 {
            let port = free_port(&taken).unwrap();
            if low > TASK_PORTS_FROM + 1_000 {
                assert!((TASK_PORTS_FROM..low).contains(&port), "{port} is in the ephemeral range");
            }
            assert!(taken.insert(port), "{port} was given twice");
        }
    }

    /// The replicas cap is reachable: a service at the cap in the middle of
    /// a blue-green deploy (twice its tasks) still gets ports below the
    /// ephemeral range, each once.
    #[test]
    fn ports_suffice_for_a_service_at_the_replicas_cap_during_a_blue_green_deploy() {
        let (low, _) = ephemeral_range();
        let mut taken = std::collections::HashSet::new();
        for _ in 0..2 * wharf_spec::MAX_REPLICAS {
            let port = free_port(&taken).unwrap();
            if low > TASK_PORTS_FROM + 1_000 {
                assert!((TASK_PORTS_FROM..low).contains(&port), "{port} is in the ephemeral range");
            }
            assert!(taken.insert(port), "{port} was given twice");
        }
    }

    #[test]
    fn failing_starts_back_off_doubling_up_to_thirty_seconds() {
        let waits: Vec<u64> =
            [1, 2, 3, 4, 6, 7, 50, u32::MAX].iter().map(|n| start_backoff(*n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 16_000, 30_000, 30_000, 30_000]);
    }

    /// The backoff on the test clock: a service whose starts fail waits
    /// longer each time, and a success clears it.
    #[test]
    fn a_service_whose_starts_fail_backs_off_on_the_clock() {
        use crate::clock::TestClock;
        let clock = Arc::new(TestClock::new(0));
        let r = Reconciler::new(Weak::new(), clock.clone(), Arc::default());
        assert!(r.start_allowed("a", "web"));
        assert_eq!(r.start_failed("a", "web"), Duration::from_millis(500));
        assert!(!r.start_allowed("a", "web") && r.start_allowed("a", "worker"));
        clock.advance(Duration::from_millis(499));
        assert!(!r.start_allowed("a", "web"));
        clock.advance(Duration::from_millis(1));
        assert!(r.start_allowed("a", "web"));
        assert_eq!(r.start_failed("a", "web"), Duration::from_secs(1), "twice as long");
        r.started("a", "web");
        assert!(r.start_allowed("a", "web"));
        assert_eq!(r.start_failed("a", "web"), Duration::from_millis(500), "from the start again");
        r.forget_app("a");
        assert!(r.start_allowed("a", "web"));
    }

    #[test]
    fn a_draining_task_can_be_taken_back_until_its_stop_is_signalled() {
        let d = Drains::default();
        assert!(d.begin("t1") && !d.begin("t1"), "drains once");
        assert!(d.contains("t1") && d.snapshot().contains("t1"));
        assert!(d.take_back("t1"), "not signalled yet: it serves again");
        assert!(!d.contains("t1") && !d.signal("t1"), "taken back: its stop does not go ahead");
        assert!(d.begin("t1") && d.signal("t1"));
        assert!(!d.take_back("t1"), "too late once its stop began");
        d.end("t1");
        assert!(d.snapshot().is_empty() && d.begin("t1"), "gone: a new drain may begin");
    }
}
