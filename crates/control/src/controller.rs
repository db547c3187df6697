//! The controller: shared state and the loops that run for the server's life.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use wharf_logs::{Level, LogStream};
use wharf_proxy::Proxy;
use wharf_runtime::{Driver, DriverEvent, ExitInfo};
use wharf_store::Db;

use crate::autoscaler::{Autoscaler, AutoscalerInputs};
use crate::catalog::Catalog;
use crate::certs::Certificates;
use crate::clock::{Clock, SystemClock};
use crate::component::BackgroundLoop;
use crate::destroy::Destroying;
use crate::discovery::Discovery;
use crate::error::NotFound;
use crate::events::EventLog;
use crate::health::{Health, HealthMonitor, HealthNote};
use crate::reconcile::{Drains, Reconciler};
use crate::release::ReleaseStore;
use crate::rollout::Rollout;
use crate::routes::{RoutingInputs, RoutingPublisher};
use crate::traffic::Pauses;
use crate::usage::UsageSampler;

pub use crate::error::ControlError;

/// What the controller needs from the server that owns it.
pub struct ControlConfig {
    pub data_dir: PathBuf,
    pub db: Db,
    pub logs: LogStream,
    pub driver: Arc<dyn Driver>,
    pub proxy: Arc<Proxy>,
    /// Counters and the store's health; the server's store wrapper reports
    /// into [`crate::ServerMetrics::store_health`].
    pub metrics: Arc<crate::ServerMetrics>,
    /// The account tasks run as; None: the server's own.
    pub task_user: Option<wharf_runtime::TaskUser>,
    /// Automatic certificates; None: off (no HTTPS listener, or turned off).
    pub acme: Option<crate::AcmeConfig>,
    /// The key apps' secrets are sealed with (the driver opens tasks' copies with it too).
    pub secrets: Arc<wharf_secrets::SecretBox>,
}

/// The server's control plane: the components below, each owning its state,
/// and the operations the API calls, which go through them.
pub struct Controller {
    pub(crate) db: Db,
    pub(crate) logs: LogStream,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) releases: ReleaseStore,
    /// Whose each task is; the revisions tasks run.
    pub(crate) catalog: Arc<Catalog>,
    /// Events, in the log stream and the store.
    pub(crate) events: Arc<EventLog>,
    /// Task health checks, and the proxy's view of each web task.
    pub(crate) health: Arc<HealthMonitor>,
    /// What the health monitor tells, until [`Controller::start`] listens.
    health_notes: Mutex<Option<mpsc::UnboundedReceiver<HealthNote>>>,
    /// CPU and memory of every task.
    pub(crate) usage: Arc<UsageSampler>,
    /// Pause gates in force.
    pub(crate) pauses: Arc<Pauses>,
    /// Apps' secrets, sealed.
    pub(crate) secrets: crate::secrets::Secrets,
    /// The hosts' certificates, served to the HTTPS listener.
    pub(crate) certificates: Arc<Certificates>,
    /// Orders and renews the certificates of hosts without files.
    pub(crate) acme: Option<Arc<crate::acme::Acme>>,
    /// Brings tasks to the desired state.
    pub(crate) reconciler: Arc<Reconciler>,
    /// Builds and swaps the proxy's routing snapshot.
    pub(crate) routing: Arc<RoutingPublisher>,
    /// Drives deployments; serialises changes to desired state.
    pub(crate) rollout: Arc<Rollout>,
    /// Scales services by their CPU.
    pub(crate) autoscaler: Arc<Autoscaler>,
    /// Apps being destroyed: nothing may change them, their deployment drivers let go.
    pub(crate) destroying: Destroying,
    /// PATH given to tasks: the server's, with the wharf binary's directory first.
    pub(crate) task_path: String,
    pub(crate) task_user: Option<wharf_runtime::TaskUser>,
    /// The server's data directory (its disk is watched).
    pub(crate) data_dir: PathBuf,
    /// Log lines the stream could not keep, for the disk watch to report.
    pub(crate) log_loss: crate::disk::LogLoss,
    /// When the server started, in Unix milliseconds by the clock.
    pub(crate) started_ms: u64,
    pub(crate) metrics: Arc<crate::ServerMetrics>,
    /// Service discovery: internal routes, DNS data, `WHARF_*_URL`.
    pub(crate) discovery: Arc<Discovery>,
    /// The job scheduler and its clock.
    pub(crate) jobs: crate::scheduler::Jobs,
    /// Time for the rollout, health checks, autoscaler and reconciler (the
    /// scheduler keeps its own, which a test may speed up).
    pub(crate) clock: Arc<dyn Clock>,
    stop: watch::Sender<bool>,
}

impl Controller {
    pub fn new(cfg: ControlConfig) -> Arc<Controller> {
        let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.to_path_buf()));
        let server_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let task_path = match exe_dir {
            Some(d) => format!("{}:{server_path}", d.display()),
            None => server_path,
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let catalog = Arc::new(Catalog::new(cfg.db.clone()));
        let events = Arc::new(EventLog::new(cfg.logs.clone(), cfg.db.clone(), catalog.clone()));
        let (health, health_notes) = HealthMonitor::new(clock.clone());
        let health = Arc::new(health);
        let drains = Arc::new(Drains::default());
        let pauses = Arc::new(Pauses::default());
        let discovery = Arc::new(Discovery::default());
        let challenges = cfg.proxy.acme_challenges();
        let certificates =
            Arc::new(Certificates::new(events.clone(), clock.clone(), challenges.clone(), cfg.acme.is_some()));
        let acme = cfg.acme.clone().map(|acme| {
            Arc::new(crate::acme::Acme::new(
                acme,
                cfg.db.clone(),
                events.clone(),
                clock.clone(),
                challenges,
                certificates.clone(),
                cfg.data_dir.join("local-ca"),
            ))
        });
        let routing = Arc::new(RoutingPublisher::new(RoutingInputs {
            db: cfg.db.clone(),
            catalog: catalog.clone(),
            health: health.clone(),
            drains: drains.clone(),
            pauses: pauses.clone(),
            discovery: discovery.clone(),
            events: events.clone(),
            certificates: certificates.clone(),
            proxy: cfg.proxy.clone(),
        }));
        Arc::new_cyclic(|me| {
            let autoscaler = Arc::new(Autoscaler::new(
                AutoscalerInputs {
                    db: cfg.db.clone(),
                    driver: cfg.driver.clone(),
                    drains: drains.clone(),
                    catalog: catalog.clone(),
                    events: events.clone(),
                    scaler: Box::new(me.clone()),
                },
                clock.clone(),
            ));
            Controller {
                db: cfg.db,
                logs: cfg.logs,
                driver: cfg.driver.clone(),
                proxy: cfg.proxy,
                releases: ReleaseStore::new(cfg.data_dir.join("releases")),
                catalog,
                events,
                health,
                health_notes: Mutex::new(Some(health_notes)),
                usage: Arc::new(UsageSampler::new(cfg.driver.clone(), clock.clone())),
                pauses,
                secrets: crate::secrets::Secrets::new(cfg.secrets.clone()),
                certificates,
                acme,
                reconciler: Arc::new(Reconciler::new(me.clone(), clock.clone(), drains)),
                routing,
                rollout: Arc::default(),
                destroying: Destroying::default(),
                autoscaler,
                task_path,
                task_user: cfg.task_user,
                data_dir: cfg.data_dir.clone(),
                log_loss: Default::default(),
                started_ms: clock.now_ms(),
                metrics: cfg.metrics,
                discovery,
                jobs: Default::default(),
                clock,
                stop: watch::channel(false).0,
            }
        })
    }

    /// Where the HTTPS listener picks each host's certificate (by SNI).
    pub fn tls_resolver(&self) -> Arc<dyn wharf_proxy::ResolvesServerCert> {
        self.certificates.served()
    }

    /// Each route host's certificate, for `wharf certs`.
    pub fn certificates(&self) -> Vec<wharf_api_types::CertView> {
        self.certificates.views()
    }

    pub fn logs(&self) -> &LogStream {
        &self.logs
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn metrics(&self) -> &crate::ServerMetrics {
        &self.metrics
    }

    /// Wall time by the controller's clock, in Unix milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Re-adopts running tasks, kills orphans, and starts the control loops.
    pub async fn start(self: &Arc<Self>) -> Result<(), ControlError> {
        self.releases.clean_staging();
        let events = self.driver.subscribe();
        tokio::spawn(self.clone().driver_events(events));
        if let Some(notes) = self.health_notes.lock().unwrap().take() {
            tokio::spawn(self.clone().health_notes(notes));
        }
        self.health.clone().start(self.stopping());
        self.certificates.clone().start(self.stopping());
        if let Some(acme) = &self.acme {
            // Stored certificates are served before the first routing pass.
            acme.restore().await;
            acme.clone().start(self.stopping());
        }
        // A host gaining or losing its certificate changes its redirect.
        let (certificates, routing, mut stop) = (self.certificates.clone(), self.routing.clone(), self.stopping());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = certificates.changed.notified() => routing.wake(),
                    _ = stop.changed() => return,
                }
            }
        });
        // Before any task is touched: a wrong key stops the start here.
        self.secrets.restore(&self.db).await?;
        let report = self.driver.recover().await?;
        tracing::info!("recovered tasks: {report:?}");
        for t in self.driver.tasks() {
            self.catalog.remember(&t.spec);
        }
        let known = self.db.task_healths().await?;
        self.health.restore(known);
        self.restore_pauses().await?;
        // One pass and a routing table before the proxy serves: a request
        // right after a restart finds its route (and re-adopted tasks that
        // were healthy), never a 404 for a route that exists.
        if let Err(e) = self.reconcile_once().await {
            tracing::warn!("first reconcile failed: {e}");
        }
        self.routing.publish().await;
        self.reconciler.clone().start(self.stopping());
        self.routing.clone().start(self.stopping());
        self.usage.clone().start(self.stopping());
        tokio::spawn(self.clone().store_watch_loop());
        self.autoscaler.clone().start(self.stopping());
        self.start_scheduler(&report);
        self.resume_deployments().await?;
        self.resume_destroys(self.db.destroys().await?);
        Ok(())
    }

    /// Stops the loops, then every task gracefully.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.events.event("server.stopping", Level::Info, "stopping all tasks");
        self.driver.shutdown().await;
        self.logs.flush();
    }

    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A service's record, or a NotFound that says which.
    pub(crate) async fn service_record(
        &self,
        app: &str,
        service: &str,
    ) -> Result<wharf_store::ServiceRecord, ControlError> {
        self.db
            .service(app, service)
            .await?
            .ok_or_else(|| NotFound::Service { app: app.to_string(), service: service.to_string() }.into())
    }

    /// Acts on what the health monitor tells: a verdict on a known process
    /// is kept in the store (a restarted server trusts it for that process
    /// only) and is an event; any change has routing and the reconciler look again.
    async fn health_notes(self: Arc<Self>, mut notes: mpsc::UnboundedReceiver<HealthNote>) {
        while let Some(note) = notes.recv().await {
            match note {
                HealthNote::Waiting { task, text } => {
                    self.events.task_event("task.health_failing", Level::Warn, &task, text)
                }
                HealthNote::Changed { task, health, pid, error } => {
                    if let (Some(pid), Health::Healthy | Health::Unhealthy) = (pid, health) {
                        let r = wharf_store::TaskHealthRecord {
                            id: task.clone(),
                            pid,
                            healthy: health == Health::Healthy,
                            at: self.now_ms(),
                        };
                        let db = self.db.clone();
                        tokio::spawn(async move {
                            if let Err(e) = db.put_task_health(&r).await {
                                tracing::debug!("cannot keep the health of task {}: {e}", r.id);
                            }
                        });
                    }
                    self.routing.wake();
                    self.reconciler.wake();
                    match health {
                        Health::Healthy => self.events.task_event(
                            "task.healthy",
                            Level::Info,
                            &task,
                            format!("task {task} is healthy"),
                        ),
                        Health::Unhealthy => self.events.task_event(
                            "task.unhealthy",
                            Level::Warn,
                            &task,
                            format!("task {task} is unhealthy: {}", error.unwrap_or_else(|| "checks failed".into())),
                        ),
                        Health::Starting => {}
                    }
                }
            }
        }
    }

    /// Turns driver events into stream events and wakes the reconciler.
    async fn driver_events(self: Arc<Self>, mut rx: tokio::sync::broadcast::Receiver<DriverEvent>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(RecvError::Lagged(n)) => {
                    self.events.event("driver.lagged", Level::Warn, format!("{n} driver events were not seen"));
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            match ev {
                DriverEvent::Started { task, pid, attempt } => {
                    // The driver counts attempts from 1: anything later is a restart.
                    if attempt > 1 {
                        self.metrics.restarts.inc();
                        self.events.task_event(
                            "task.restarted",
                            Level::Warn,
                            &task,
                            format!("task {task} restarted (pid {pid}, restart {})", attempt - 1),
                        );
                    } else {
                        self.events.task_event(
                            "task.started",
                            Level::Info,
                            &task,
                            format!("task {task} started (pid {pid})"),
                        );
                    }
                }
                DriverEvent::Exited { task, exit, restart_in, crashes } => {
                    // Out of the pool at once, not at its next health check.
                    self.health.exited(&task);
                    let how = match self.driver.task(&task) {
                        Some(t) if t.oom_kills > 0 && exit == ExitInfo::Signal(libc::SIGKILL) => {
                            format!("was {}", describe_end(exit, true, t.spec.memory_bytes))
                        }
                        _ => describe_exit(&exit),
                    };
                    let msg = match restart_in {
                        Some(d) => format!("task {task} {how}; restarting in {} (crash {crashes})", fmt_duration(d)),
                        None => format!("task {task} {how}"),
                    };
                    self.events.task_event("task.exited", Level::Warn, &task, msg);
                }
                DriverEvent::OutOfMemory { task, limit_bytes } => {
                    self.events.task_event(
                        "task.oom",
                        Level::Error,
                        &task,
                        format!("task {task} was killed: out of memory (limit {} MiB)", limit_bytes >> 20),
                    );
                }
                DriverEvent::Adopted { task, pid } => {
                    self.events.task_event(
                        "task.adopted",
                        Level::Info,
                        &task,
                        format!("task {task} (pid {pid}) re-adopted after a server restart"),
                    );
                }
                DriverEvent::OrphanKilled { task, pid } => {
                    self.events.task_event(
                        "task.orphan_killed",
                        Level::Warn,
                        &task,
                        format!("killed orphaned process {pid} of task {task}"),
                    );
                }
                DriverEvent::Stopped { task, exit, forced } => {
                    let how = describe_exit(&exit);
                    let msg = if forced {
                        format!("task {task} stopped ({how}); it ignored its stop signal and was killed")
                    } else {
                        format!("task {task} stopped ({how})")
                    };
                    self.events.task_event("task.stopped", Level::Info, &task, msg);
                }
                DriverEvent::LimitsUnavailable { reason } => {
                    self.events.event(
                        "driver.limits_unavailable",
                        Level::Warn,
                        format!("tasks run without CPU and memory limits: {reason}"),
                    );
                }
            }
            self.reconciler.wake();
        }
    }
}

pub(crate) fn describe_exit(exit: &ExitInfo) -> String {
    match exit {
        ExitInfo::Unknown => "exited (status unknown: it was adopted after a server restart)".into(),
        ExitInfo::Code(_) => format!("exited with {exit}"),
        ExitInfo::Signal(_) => format!("was {exit}"),
    }
}

/// How a task's last process ended, for failure reasons: an OOM kill says
/// so (with the limit) rather than "killed by signal 9".
pub(crate) fn exit_reason(t: &wharf_runtime::TaskStatus) -> String {
    match t.last_exit {
        None => "no exit status".into(),
        Some(e) => describe_end(e, t.oom_kills > 0, t.spec.memory_bytes),
    }
}

/// A SIGKILL in a cgroup that saw OOM kills was the kernel's OOM killer.
fn describe_end(exit: ExitInfo, oom_killed: bool, limit: Option<u64>) -> String {
    match (exit, oom_killed) {
        (ExitInfo::Signal(libc::SIGKILL), true) => match limit {
            Some(bytes) => format!("killed: out of memory (memory limit {})", fmt_bytes(bytes)),
            None => "killed: out of memory".into(),
        },
        (e, _) => e.to_string(),
    }
}

/// "512MiB", "1.5GiB", "1000000 bytes": a memory limit as wharf.toml writes it.
fn fmt_bytes(b: u64) -> String {
    const MIB: u64 = 1 << 20;
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{}GiB", b >> 30)
    } else if b >= MIB && b.is_multiple_of(MIB) {
        format!("{}MiB", b / MIB)
    } else if b >= MIB {
        format!("{:.1}MiB", b as f64 / MIB as f64)
    } else {
        format!("{b} bytes")
    }
}

/// "250ms", "8s", "1.5s", "3m5s": short durations for messages.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d >= Duration::from_secs(120) {
        match d.as_secs() % 60 {
            0 => format!("{}m", d.as_secs() / 60),
            s => format!("{}m{s}s", d.as_secs() / 60),
        }
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Stop signals wharf.toml accepts, by their normalised names.
const SIGNALS: [(&str, i32); 10] = [
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGTERM", libc::SIGTERM),
    ("SIGWINCH", libc::SIGWINCH),
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGABRT", libc::SIGABRT),
];

pub(crate) fn signal_number(name: &str) -> i32 {
    SIGNALS.iter().find(|(n, _)| *n == name).map_or(libc::SIGTERM, |(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oom_kill_reads_as_out_of_memory_with_the_limit() {
        let limit = Some(64 << 20);
        assert_eq!(
            describe_end(ExitInfo::Signal(libc::SIGKILL), true, limit),
            "killed: out of memory (memory limit 64MiB)"
        );
        assert_eq!(describe_end(ExitInfo::Signal(libc::SIGKILL), false, limit), "killed by signal 9 (SIGKILL)");
        assert_eq!(describe_end(ExitInfo::Code(1), true, limit), "exit code 1");
        assert_eq!(fmt_bytes(3 << 30), "3GiB");
        assert_eq!(fmt_bytes(1_000_000), "1000000 bytes");
    }

    #[test]
    fn durations_read_short() {
        let f = |ms: u64| fmt_duration(Duration::from_millis(ms));
        assert_eq!(
            [f(250), f(8_000), f(1_500), f(119_000), f(120_000), f(185_000)],
            ["250ms", "8s", "1.5s", "119s", "2m", "3m5s"]
        );
    }
}
