//! The process driver; see [`ProcessDriver`].

mod cgroup;
mod inotify;
mod offsets;
mod oom;
mod procfs;
mod spawn;
mod spool;
mod state;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::cgroup::{Cgroups, TaskCgroup};
use self::inotify::Watcher;
use self::oom::OomWatch;
use self::procfs::{PidWaiter, ENV_DRIVER, ENV_TASK};
use self::spawn::Spawned;
use self::spool::Spool;
use self::state::{SavedTask, STDERR_FILE, STDOUT_FILE};
use crate::{
    Driver, DriverError, DriverEvent, ExitInfo, ForgottenTask, LimitsSupport, LogSink, OrphanKill, OutputStream,
    RecoverReport, TaskSpec, TaskState, TaskStatus, Usage,
};

/// A process that ran this long resets the crash count.
const CRASH_RESET: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// After SIGKILL, how long to wait for the main process to go away.
const KILL_WAIT: Duration = Duration::from_secs(10);
const EVENT_CAPACITY: usize = 1024;

/// The delay before restart number `crashes` (1-based).
pub(crate) fn backoff(crashes: u32) -> Duration {
    let exp = crashes.saturating_sub(1).min(16);
    (BACKOFF_BASE * 2u32.pow(exp)).min(BACKOFF_MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Options of a [`ProcessDriver`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessDriverOptions {
    /// Use cgroups for limits and accounting when the host allows it
    /// (default true). When false, tasks run without limits and
    /// `LimitsUnavailable` is emitted.
    pub use_cgroups: bool,
    /// Opens the sealed variables of tasks' environments; without it a task
    /// with any cannot start.
    pub env_opener: Option<Arc<dyn crate::EnvOpener>>,
}

impl Default for ProcessDriverOptions {
    fn default() -> Self {
        ProcessDriverOptions { use_cgroups: true, env_opener: None }
    }
}

impl ProcessDriverOptions {
    pub fn use_cgroups(mut self, yes: bool) -> Self {
        self.use_cgroups = yes;
        self
    }
    pub fn env_opener(mut self, opener: Arc<dyn crate::EnvOpener>) -> Self {
        self.env_opener = Some(opener);
        self
    }
}

/// The default [`Driver`]: supervised processes with cgroup limits.
///
/// # State layout
///
/// ```text
/// STATE_DIR/
///   driver-id            random id, created once; every task gets WHARF_DRIVER=<it>
///   lock                 flock'ed by the live driver (a second server on the same dir fails)
///   <task-id>/
///     task.json          spec, pid, /proc start time, restarts, crashes, cgroup dirs
///                        (written atomically before start() returns and at each (re)spawn)
///     stdout, stderr     the task's output (O_APPEND files, not pipes)
///     offsets            how far the tailer has delivered each file to the sink (two
///                        checksummed slots written in place; `offsets.json` before)
/// ```
///
/// # Processes
///
/// Every process is spawned in a new process group (pgid = pid), with stdin
/// from /dev/null, an environment built from PATH, HOME, USER, LANG, LC_ALL,
/// LC_CTYPE, TZ, TMPDIR of the server, then `spec.env`, then `PORT` (from
/// `spec.port`), `WHARF_TASK` and `WHARF_DRIVER`, and (when cgroups work) in its own cgroup before it execs.
/// When a task's main process exits, whatever is left of its process group
/// and cgroup is SIGKILLed before the task restarts or is marked exited.
///
/// # Restarts
///
/// A restart=true task whose process exits (without stop()) is restarted
/// after `100ms * 2^(crashes-1)` (at most 30 s); `crashes` counts consecutive
/// exits and goes back to 0 once a process has run 10 s. Events:
/// `Exited{restart_in: Some(..)}` then `Started{attempt: restarts + 1}`.
///
/// # Re-adoption
///
/// Dropping the driver (or [`ProcessDriver::abandon`]) leaves the processes
/// running. The next driver on the same state dir calls `recover()`: a
/// recorded process is adopted only if it is alive, its /proc start time is
/// the recorded one and its environment carries our WHARF_TASK and
/// WHARF_DRIVER (a reused pid is never adopted nor killed). Adopted processes
/// are watched through a pidfd; their exit status is `Unknown` unless they
/// are still an unreaped zombie (then it is read from /proc).
///
/// # Output
///
/// A tail loop per task reads the spool files when the driver's inotify
/// watch reports a write, delivers complete lines to the [`LogSink`], saves
/// the delivered offsets every 100 ms (in place, no rename: see `offsets.rs`),
/// and punches the delivered range out of the files once it exceeds 1 MiB. Between two processes of a task, fully delivered files are
/// truncated.
///
/// # cgroups
///
/// Each task gets `<server's cgroup>/wharf-<driver-id>/<task-id>/` (pure v2,
/// or the v1 cpu, cpuacct and memory hierarchies), also without limits (for
/// accounting). Without usable cgroups tasks run unlimited and one
/// `LimitsUnavailable` is emitted. Under systemd, run the server with
/// `Delegate=yes` and `KillMode=process`: otherwise restarting the unit
/// kills the tasks along with the server.
pub struct ProcessDriver {
    inner: Arc<Inner>,
    _lock: File,
}

struct Inner {
    state_dir: PathBuf,
    driver_id: String,
    /// The id was created by this driver: no process can carry it, so
    /// recover has no orphans to look for (reading every process's
    /// environment costs tens of milliseconds on a busy host).
    new_id: bool,
    sink: Arc<dyn LogSink>,
    events: broadcast::Sender<DriverEvent>,
    cgroups: Cgroups,
    limits_reported: AtomicBool,
    base_env: Vec<(OsString, OsString)>,
    env_opener: Option<Arc<dyn crate::EnvOpener>>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    /// Wakes each task's tail loop when its output files are written; None
    /// (no inotify instance left): the tails poll.
    watcher: Option<Arc<Watcher>>,
    /// Ids whose start() is in progress.
    reserved: Mutex<HashSet<String>>,
    shutting_down: AtomicBool,
}

struct Task {
    spec: Arc<TaskSpec>,
    dir: PathBuf,
    status: watch::Sender<TaskStatus>,
    ctl: mpsc::UnboundedSender<Control>,
    cgroup: Option<TaskCgroup>,
    spool: Arc<Mutex<Spool>>,
    /// /proc start time of the current process.
    start_time: Mutex<Option<u64>>,
    tailer: Mutex<Option<JoinHandle<()>>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

enum Control {
    Stop(oneshot::Sender<Result<ExitInfo, DriverError>>),
    Remove(oneshot::Sender<Result<(), DriverError>>),
}

impl Task {
    fn record(&self) -> SavedTask {
        let s = self.status.borrow();
        SavedTask {
            spec: self.spec.clone(),
            pid: s.pid,
            start_time: *lock(&self.start_time),
            started_at: s.started_at,
            restarts: s.restarts,
            crashes: s.crashes,
            oom_kills: s.oom_kills,
            cgroup: self.cgroup.clone(),
            exited: (s.state == TaskState::Exited).then(|| s.last_exit.unwrap_or(ExitInfo::Unknown)),
        }
    }

    fn persist(&self) {
        if let Err(e) = state::save_record(&self.dir, &self.record()) {
            tracing::warn!(task = %self.spec.id, "cannot save the task's state: {e}");
        }
    }
}

impl ProcessDriver {
    /// A driver keeping its state in `state_dir` (created if needed). Must be
    /// called inside a tokio runtime. Call [`Driver::recover`] next.
    pub fn new(state_dir: PathBuf, sink: Arc<dyn LogSink>) -> Result<Self, DriverError> {
        Self::with_options(state_dir, sink, ProcessDriverOptions::default())
    }

    pub fn with_options(
        state_dir: PathBuf,
        sink: Arc<dyn LogSink>,
        options: ProcessDriverOptions,
    ) -> Result<Self, DriverError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(DriverError::io(
                "ProcessDriver::new",
                std::io::Error::other("must be called inside a tokio runtime"),
            ));
        }
        fs::create_dir_all(&state_dir).map_err(|e| DriverError::io(format!("creating {}", state_dir.display()), e))?;
        let lock_file = state::lock(&state_dir)?;
        let (driver_id, new_id) = state::driver_id(&state_dir)?;
        let cgroups = Cgroups::detect(&driver_id, options.use_cgroups);
        tracing::debug!(driver = %driver_id, ?cgroups, "process driver ready");
        let watcher =
            Watcher::new().map_err(|e| tracing::warn!("cannot watch tasks' output, polling it instead: {e}")).ok();
        Ok(ProcessDriver {
            inner: Arc::new(Inner {
                state_dir,
                driver_id,
                new_id,
                sink,
                events: broadcast::channel(EVENT_CAPACITY).0,
                cgroups,
                limits_reported: AtomicBool::new(false),
                base_env: spawn::base_env(),
                env_opener: options.env_opener.clone(),
                tasks: Mutex::new(HashMap::new()),
                watcher,
                reserved: Mutex::new(HashSet::new()),
                shutting_down: AtomicBool::new(false),
            }),
            _lock: lock_file,
        })
    }

    /// The id every task of this state dir carries as `WHARF_DRIVER`.
    pub fn driver_id(&self) -> &str {
        &self.inner.driver_id
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// Let go of every task without stopping it, as if the server had
    /// crashed (or to hand over to a new server process): supervision and
    /// output tailing stop, the processes keep running, the state stays on
    /// disk for the next driver's recover(). Dropping the driver does the
    /// same, except that it can't wait for the supervisors to be gone.
    pub async fn abandon(self) {
        let handles = self.inner.take_handles();
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
        self.inner.save_spools();
    }
}

impl Drop for ProcessDriver {
    fn drop(&mut self) {
        for h in self.inner.take_handles() {
            h.abort();
        }
        self.inner.save_spools();
    }
}

impl Inner {
    fn task_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join(id)
    }

    fn get(&self, id: &str) -> Result<Arc<Task>, DriverError> {
        lock(&self.tasks).get(id).cloned().ok_or_else(|| DriverError::NotFound { task: id.to_string() })
    }

    fn emit(&self, ev: DriverEvent) {
        tracing::debug!(?ev, "driver event");
        let _ = self.events.send(ev);
    }

    fn report_limits(&self) {
        if let Some(reason) = self.cgroups.unavailable() {
            if !self.limits_reported.swap(true, Ordering::SeqCst) {
                tracing::warn!("tasks run without CPU/memory limits: {reason}");
                self.emit(DriverEvent::LimitsUnavailable { reason: reason.to_string() });
            }
        }
    }

    fn take_handles(&self) -> Vec<JoinHandle<()>> {
        let tasks: Vec<Arc<Task>> = lock(&self.tasks).values().cloned().collect();
        let mut v = Vec::new();
        for t in tasks {
            v.extend(lock(&t.supervisor).take());
            v.extend(lock(&t.tailer).take());
        }
        v
    }

    fn save_spools(&self) {
        let tasks: Vec<Arc<Task>> = lock(&self.tasks).values().cloned().collect();
        for t in tasks {
            if let Ok(mut s) = t.spool.try_lock() {
                s.save();
            }
        }
    }

    /// Spawn the process of `spec` in the task's cgroup.
    fn spawn_task(&self, spec: &TaskSpec, cgroup: Option<&TaskCgroup>) -> Result<Spawned, DriverError> {
        let procs = match cgroup {
            Some(cg) => {
                if !cg.exists() {
                    cg.recreate(spec)
                        .map_err(|e| DriverError::Limits { task: spec.id.clone(), reason: e.to_string() })?;
                }
                cg.open_procs().map_err(|e| DriverError::Limits { task: spec.id.clone(), reason: e.to_string() })?
            }
            None => Vec::new(),
        };
        let dir = self.task_dir(&spec.id);
        let opened;
        let spec = if spec.sealed_env.is_empty() {
            spec
        } else {
            opened = self.open_env(spec)?;
            &opened
        };
        spawn::spawn(spec, &self.driver_id, &self.base_env, &dir.join(STDOUT_FILE), &dir.join(STDERR_FILE), &procs)
    }

    /// A copy of `spec` with its sealed variables opened, for the spawn only.
    fn open_env(&self, spec: &TaskSpec) -> Result<TaskSpec, DriverError> {
        let invalid = |reason: String| DriverError::InvalidSpec { task: spec.id.clone(), reason };
        let opener = self
            .env_opener
            .as_ref()
            .ok_or_else(|| invalid("it has sealed variables and this driver cannot open them".into()))?;
        let mut out = spec.clone();
        for var in &spec.sealed_env {
            let Some(sealed) = spec.env.get(var) else { continue };
            let value = opener.open(&spec.id, var, sealed).map_err(|why| invalid(format!("env `{var}`: {why}")))?;
            out.env.insert(var.clone(), value);
        }
        Ok(out)
    }

    fn new_task(
        &self,
        spec: Arc<TaskSpec>,
        status: TaskStatus,
        cgroup: Option<TaskCgroup>,
        start_time: Option<u64>,
    ) -> (Arc<Task>, mpsc::UnboundedReceiver<Control>) {
        let dir = self.task_dir(&spec.id);
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let spool = Spool::open(&dir, spec.clone(), self.sink.clone());
        let task = Arc::new(Task {
            spec,
            dir,
            status: watch::Sender::new(status),
            ctl,
            cgroup,
            spool: Arc::new(Mutex::new(spool)),
            start_time: Mutex::new(start_time),
            tailer: Mutex::new(None),
            supervisor: Mutex::new(None),
        });
        (task, ctl_rx)
    }

    /// Register the task and start its tailer and supervisor.
    fn launch(self: &Arc<Self>, task: Arc<Task>, ctl: mpsc::UnboundedReceiver<Control>, run: Run) {
        lock(&self.tasks).insert(task.spec.id.clone(), task.clone());
        let tailer = tokio::spawn(spool::tail(task.spool.clone(), self.watcher.clone()));
        *lock(&task.tailer) = Some(tailer);
        let oom_seen = task.cgroup.as_ref().and_then(|c| c.oom_kills()).unwrap_or(0);
        let sup = Supervisor { inner: self.clone(), task: task.clone(), ctl, oom_seen };
        let handle = tokio::spawn(sup.run(run));
        *lock(&task.supervisor) = Some(handle);
    }

    async fn stop(&self, id: &str) -> Result<ExitInfo, DriverError> {
        let task = self.get(id)?;
        let (tx, rx) = oneshot::channel();
        task.ctl.send(Control::Stop(tx)).map_err(|_| DriverError::NotFound { task: id.to_string() })?;
        drop(task);
        rx.await.unwrap_or_else(|_| Err(DriverError::NotFound { task: id.to_string() }))
    }

    /// Adopt a live task recorded by a previous server. None if the process
    /// turns out to be gone.
    fn adopt(self: &Arc<Self>, rec: &SavedTask) -> Option<u32> {
        let (pid, start_time) = (rec.pid?, rec.start_time?);
        let waiter = PidWaiter::new(pid);
        // The pidfd pins the process: check again that it is ours.
        if !procfs::verify(pid, start_time, &rec.spec.id, &self.driver_id) {
            return None;
        }
        let cgroup = rec.cgroup.clone().filter(|c| c.exists());
        let started_at = rec.started_at.or_else(|| procfs::started_at(start_time));
        let status = TaskStatus {
            spec: rec.spec.clone(),
            state: TaskState::Running,
            pid: Some(pid),
            restarts: rec.restarts,
            crashes: rec.crashes,
            last_exit: None,
            started_at,
            adopted: true,
            oom_kills: rec.oom_kills,
        };
        let ran = started_at.and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default();
        let started = Instant::now().checked_sub(ran).unwrap_or_else(Instant::now);
        let (task, ctl) = self.new_task(rec.spec.clone(), status, cgroup, Some(start_time));
        task.persist();
        self.emit(DriverEvent::Adopted { task: task.spec.id.clone(), pid });
        let proc = Proc::Adopted { pid, start_time, waiter };
        self.launch(task, ctl, Run::Proc(Box::new(proc), started));
        Some(pid)
    }

    /// A restart=true task whose process died while no server watched it.
    fn restart_lost(self: &Arc<Self>, rec: SavedTask) {
        let exit = match (rec.pid, rec.start_time) {
            (Some(p), Some(t)) => procfs::zombie_exit(p, t).unwrap_or(ExitInfo::Unknown),
            _ => ExitInfo::Unknown,
        };
        let cgroup = match self.cgroups.create_task(&rec.spec) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(task = %rec.spec.id, "cannot recreate the task's cgroup: {e}");
                None
            }
        };
        let status = TaskStatus {
            spec: rec.spec.clone(),
            state: TaskState::Backoff,
            pid: None,
            restarts: rec.restarts,
            crashes: rec.crashes,
            last_exit: Some(exit),
            started_at: rec.started_at,
            adopted: false,
            oom_kills: rec.oom_kills,
        };
        let (task, ctl) = self.new_task(rec.spec, status, cgroup, None);
        task.persist();
        self.launch(task, ctl, Run::Lost(exit));
    }
}

/// Kill a process that carries our driver id but that nothing supervises.
fn kill_orphan(pid: u32, driver_id: &str) -> bool {
    let Ok(st) = procfs::stat(pid) else {
        return false;
    };
    match procfs::pidfd_open(pid) {
        Ok(fd) => {
            // Pinned: check it is still the process we looked at.
            let ours = procfs::environ(pid)
                .map(|env| procfs::env_get(&env, ENV_DRIVER) == Some(driver_id.as_bytes()))
                .unwrap_or(false);
            if !ours || procfs::pidfd_send_signal(&fd, libc::SIGKILL).is_err() {
                return false;
            }
        }
        Err(_) => {
            if procfs::kill(pid, libc::SIGKILL).is_err() {
                return false;
            }
        }
    }
    // A verified group leader: its group is ours too.
    if st.pgid as u32 == pid {
        let _ = procfs::killpg(pid, libc::SIGKILL);
    }
    true
}

enum Proc {
    Child { child: tokio::process::Child, pid: u32 },
    Adopted { pid: u32, start_time: u64, waiter: PidWaiter },
}

impl Proc {
    fn pid(&self) -> u32 {
        match self {
            Proc::Child { pid, .. } | Proc::Adopted { pid, .. } => *pid,
        }
    }

    /// Cancel-safe; returns the same again once exited.
    async fn wait(&mut self) -> ExitInfo {
        match self {
            Proc::Child { child, .. } => match child.wait().await {
                Ok(st) => match (st.code(), st.signal()) {
                    (Some(c), _) => ExitInfo::Code(c),
                    (None, Some(s)) => ExitInfo::Signal(s),
                    _ => ExitInfo::Unknown,
                },
                Err(_) => ExitInfo::Unknown,
            },
            Proc::Adopted { pid, start_time, waiter } => {
                waiter.wait(*pid, *start_time).await;
                procfs::zombie_exit(*pid, *start_time).unwrap_or(ExitInfo::Unknown)
            }
        }
    }
}

enum Run {
    /// A process runs, started at that instant.
    Proc(Box<Proc>, Instant),
    /// No process (it died unobserved, or could not be spawned): this exit.
    Lost(ExitInfo),
}

enum Watched {
    Exited(ExitInfo),
    Stop(Control),
}

/// One per task: owns its process(es) from start to forget.
struct Supervisor {
    inner: Arc<Inner>,
    task: Arc<Task>,
    ctl: mpsc::UnboundedReceiver<Control>,
    oom_seen: u64,
}

impl Supervisor {
    fn id(&self) -> &str {
        &self.task.spec.id
    }

    fn update(&self, f: impl FnOnce(&mut TaskStatus)) {
        self.task.status.send_modify(f);
    }

    fn status(&self) -> TaskStatus {
        self.task.status.borrow().clone()
    }

    async fn run(mut self, mut run: Run) {
        loop {
            let (exit, ran) = match run {
                Run::Proc(mut proc, started) => match self.watch(&mut proc, started).await {
                    Watched::Exited(exit) => {
                        self.after_exit(proc.pid()).await;
                        (exit, started.elapsed())
                    }
                    Watched::Stop(c) => {
                        let (exit, forced) = self.graceful_stop(&mut proc).await;
                        self.finish(exit, forced, c).await;
                        return;
                    }
                },
                Run::Lost(exit) => (exit, Duration::ZERO),
            };

            if !self.task.spec.restart {
                self.exited_for_good(exit).await;
                return;
            }

            let crashes = if ran >= CRASH_RESET { 1 } else { self.status().crashes.saturating_add(1) };
            let delay = backoff(crashes);
            *lock(&self.task.start_time) = None;
            self.update(|s| {
                s.state = TaskState::Backoff;
                s.pid = None;
                s.last_exit = Some(exit);
                s.crashes = crashes;
                s.adopted = false;
            });
            self.task.persist();
            self.inner.emit(DriverEvent::Exited {
                task: self.id().to_string(),
                exit,
                restart_in: Some(delay),
                crashes,
            });

            let deadline = crate::deadline::tokio_after(Instant::now(), delay);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    c = self.ctl.recv() => match c {
                        Some(c @ Control::Stop(_)) => {
                            self.finish(exit, false, c).await;
                            return;
                        }
                        Some(Control::Remove(r)) => {
                            let _ = r.send(Err(DriverError::NotExited { task: self.id().to_string() }));
                        }
                        None => return,
                    }
                }
            }
            run = self.respawn().await;
        }
    }

    /// Wait for the process to exit or for a stop; meanwhile reset the crash
    /// count after 10 s and watch for OOM kills.
    async fn watch(&mut self, proc: &mut Proc, started: Instant) -> Watched {
        let reset_at = started + CRASH_RESET;
        let mut oom = OomWatch::new(self.task.cgroup.as_ref(), self.inner.watcher.as_ref());
        loop {
            let crashes = self.task.status.borrow().crashes;
            tokio::select! {
                exit = proc.wait() => return Watched::Exited(exit),
                c = self.ctl.recv() => match c {
                    Some(c @ Control::Stop(_)) => return Watched::Stop(c),
                    Some(Control::Remove(r)) => {
                        let _ = r.send(Err(DriverError::NotExited { task: self.id().to_string() }));
                    }
                    None => return Watched::Exited(proc.wait().await),
                },
                _ = tokio::time::sleep_until(reset_at), if crashes > 0 => {
                    self.update(|s| s.crashes = 0);
                    self.task.persist();
                }
                () = oom.due() => self.check_oom(),
            }
        }
    }

    /// After the main process exited on its own: kill what is left of the
    /// task, deliver its last output, look for an OOM kill.
    async fn after_exit(&mut self, pgid: u32) {
        self.kill_leftovers(pgid).await;
        lock(&self.task.spool).drain();
        self.check_oom();
    }

    /// SIGKILL the rest of the process group and of the cgroup, until both
    /// are empty. Returns whether anything had to be killed.
    async fn kill_leftovers(&self, pgid: u32) -> bool {
        let mut killed = false;
        for _ in 0..250 {
            let members = procfs::group_members(pgid);
            let in_cgroup = self.task.cgroup.as_ref().map(|c| c.procs()).unwrap_or_default();
            if members.is_empty() && in_cgroup.is_empty() {
                break;
            }
            killed = true;
            if !members.is_empty() {
                // Members exist, so the group id can't have been reused.
                let _ = procfs::killpg(pgid, libc::SIGKILL);
            }
            for p in in_cgroup {
                let _ = procfs::kill(p, libc::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        killed
    }

    fn leftovers(&self, pgid: u32) -> bool {
        !procfs::group_members(pgid).is_empty() || self.task.cgroup.as_ref().is_some_and(|c| !c.procs().is_empty())
    }

    /// stop_signal to the group (and the rest of the cgroup), wait up to
    /// stop_timeout for all of them, then SIGKILL. Returns (exit, forced).
    async fn graceful_stop(&mut self, proc: &mut Proc) -> (ExitInfo, bool) {
        self.update(|s| s.state = TaskState::Stopping);
        let pid = proc.pid();
        let spec = &self.task.spec;
        let deadline = crate::deadline::tokio_after(Instant::now(), spec.stop_timeout);
        let alive = match &*proc {
            // Not our child: make sure the pid is still that process.
            Proc::Adopted { start_time, .. } => {
                matches!(procfs::stat(pid), Ok(st) if st.start_time == *start_time && !st.is_dead())
            }
            Proc::Child { .. } => true,
        };
        if alive {
            procfs::signal_group(pid, spec.stop_signal);
        }
        // Processes of the cgroup that left the group get it too, but only
        // those: a second SIGTERM or SIGINT means "quit now" to many servers.
        if let Some(cg) = &self.task.cgroup {
            for p in cg.procs() {
                let in_group = alive && matches!(procfs::stat(p), Ok(st) if st.pgid == pid as i32);
                if !in_group {
                    let _ = procfs::kill(p, spec.stop_signal);
                }
            }
        }
        let mut forced = false;
        let exit = match tokio::time::timeout_at(deadline, proc.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                forced = true;
                procfs::signal_group(pid, libc::SIGKILL);
                tokio::time::timeout(KILL_WAIT, proc.wait()).await.unwrap_or(ExitInfo::Unknown)
            }
        };
        while Instant::now() < deadline && self.leftovers(pid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.kill_leftovers(pid).await {
            forced = true;
        }
        (exit, forced)
    }

    fn check_oom(&mut self) {
        let Some(n) = self.task.cgroup.as_ref().and_then(|c| c.oom_kills()) else {
            return;
        };
        if n > self.oom_seen {
            let new = (n - self.oom_seen) as u32;
            self.oom_seen = n;
            self.update(|s| s.oom_kills = s.oom_kills.saturating_add(new));
            self.task.persist();
            self.inner.emit(DriverEvent::OutOfMemory {
                task: self.id().to_string(),
                limit_bytes: self.task.spec.memory_bytes.unwrap_or(0),
            });
        }
    }

    async fn respawn(&mut self) -> Run {
        let restarts = self.status().restarts.saturating_add(1);
        self.update(|s| {
            s.state = TaskState::Starting;
            s.restarts = restarts;
        });
        lock(&self.task.spool).reset_if_drained();
        match self.inner.spawn_task(&self.task.spec, self.task.cgroup.as_ref()) {
            Ok(sp) => {
                *lock(&self.task.start_time) = Some(sp.start_time);
                self.update(|s| {
                    s.state = TaskState::Running;
                    s.pid = Some(sp.pid);
                    s.started_at = Some(sp.started_at);
                    s.adopted = false;
                });
                self.task.persist();
                self.inner.emit(DriverEvent::Started {
                    task: self.id().to_string(),
                    pid: sp.pid,
                    attempt: restarts.saturating_add(1),
                });
                Run::Proc(Box::new(Proc::Child { child: sp.child, pid: sp.pid }), Instant::now())
            }
            Err(e) => {
                tracing::warn!(task = %self.id(), "restart failed: {e}");
                self.inner.sink.line(&self.task.spec, OutputStream::Stderr, format!("wharf: {e}").as_bytes());
                Run::Lost(ExitInfo::Unknown)
            }
        }
    }

    /// A one-off exited: keep its status until remove() (or stop()).
    async fn exited_for_good(&mut self, exit: ExitInfo) {
        let crashes = self.status().crashes;
        self.inner.emit(DriverEvent::Exited { task: self.id().to_string(), exit, restart_in: None, crashes });
        *lock(&self.task.start_time) = None;
        self.update(|s| {
            s.state = TaskState::Exited;
            s.pid = None;
            s.last_exit = Some(exit);
        });
        self.task.persist();
        if let Some(c) = self.ctl.recv().await {
            self.finish(exit, false, c).await;
        }
    }

    /// Forget the task and answer `first` (and any other pending request).
    /// A stop emits `Stopped`.
    async fn finish(&mut self, exit: ExitInfo, forced: bool, first: Control) {
        if let Some(h) = lock(&self.task.tailer).take() {
            h.abort();
        }
        lock(&self.task.spool).drain();
        if let Some(cg) = &self.task.cgroup {
            cg.remove().await;
        }
        if let Err(e) = fs::remove_dir_all(&self.task.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(task = %self.id(), "cannot remove {}: {e}", self.task.dir.display());
            }
        }
        lock(&self.inner.tasks).remove(self.id());
        if matches!(first, Control::Stop(_)) {
            self.inner.emit(DriverEvent::Stopped { task: self.id().to_string(), exit, forced });
        }
        self.update(|s| {
            s.state = TaskState::Exited;
            s.pid = None;
            s.last_exit = Some(exit);
        });
        let answer = |c: Control| match c {
            Control::Stop(r) => {
                let _ = r.send(Ok(exit));
            }
            Control::Remove(r) => {
                let _ = r.send(Ok(()));
            }
        };
        answer(first);
        while let Ok(c) = self.ctl.try_recv() {
            answer(c);
        }
    }
}

#[async_trait]
impl Driver for ProcessDriver {
    async fn start(&self, spec: TaskSpec) -> Result<TaskStatus, DriverError> {
        spec.validate()?;
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::SeqCst) {
            return Err(DriverError::ShuttingDown);
        }
        inner.report_limits();
        let _reservation = Reservation::new(inner, &spec.id)?;
        let id = spec.id.clone();
        let dir = inner.task_dir(&id);
        if dir.exists() {
            return Err(DriverError::AlreadyExists { task: id });
        }
        let cleanup = |dir: &Path| {
            let _ = fs::remove_dir_all(dir);
        };
        let prepare = || -> std::io::Result<()> {
            fs::create_dir_all(&dir)?;
            File::create(dir.join(STDOUT_FILE))?;
            File::create(dir.join(STDERR_FILE))?;
            Ok(())
        };
        if let Err(e) = prepare() {
            cleanup(&dir);
            return Err(DriverError::io(format!("creating {}", dir.display()), e));
        }
        let cgroup = match inner.cgroups.create_task(&spec) {
            Ok(c) => c,
            Err(e) => {
                cleanup(&dir);
                return Err(DriverError::Limits { task: id, reason: e.to_string() });
            }
        };
        let spec = Arc::new(spec);
        let mut status = TaskStatus {
            spec: spec.clone(),
            state: TaskState::Starting,
            pid: None,
            restarts: 0,
            crashes: 0,
            last_exit: None,
            started_at: None,
            adopted: false,
            oom_kills: 0,
        };
        let (task, ctl) = inner.new_task(spec, status.clone(), cgroup, None);
        // Recorded before the spawn: a crash right after it leaves a task
        // that recover() restarts (and the process, an orphan it kills).
        if let Err(e) = state::save_record(&dir, &task.record()) {
            return abort_start(&task, DriverError::io(format!("writing {}", dir.display()), e)).await;
        }
        let sp = match inner.spawn_task(&task.spec, task.cgroup.as_ref()) {
            Ok(sp) => sp,
            Err(e) => return abort_start(&task, e).await,
        };
        *lock(&task.start_time) = Some(sp.start_time);
        status.state = TaskState::Running;
        status.pid = Some(sp.pid);
        status.started_at = Some(sp.started_at);
        task.status.send_replace(status.clone());
        if let Err(e) = state::save_record(&dir, &task.record()) {
            procfs::signal_group(sp.pid, libc::SIGKILL);
            let mut child = sp.child;
            let _ = child.wait().await;
            return abort_start(&task, DriverError::io(format!("writing {}", dir.display()), e)).await;
        }
        inner.emit(DriverEvent::Started { task: id, pid: sp.pid, attempt: 1 });
        let proc = Proc::Child { child: sp.child, pid: sp.pid };
        inner.launch(task, ctl, Run::Proc(Box::new(proc), Instant::now()));
        Ok(status)
    }

    async fn stop(&self, task_id: &str) -> Result<ExitInfo, DriverError> {
        self.inner.stop(task_id).await
    }

    async fn remove(&self, task_id: &str) -> Result<(), DriverError> {
        let task = self.inner.get(task_id)?;
        if task.status.borrow().state != TaskState::Exited {
            return Err(DriverError::NotExited { task: task_id.to_string() });
        }
        let (tx, rx) = oneshot::channel();
        task.ctl.send(Control::Remove(tx)).map_err(|_| DriverError::NotFound { task: task_id.to_string() })?;
        drop(task);
        rx.await.unwrap_or_else(|_| Err(DriverError::NotFound { task: task_id.to_string() }))
    }

    async fn wait(&self, task_id: &str) -> Result<ExitInfo, DriverError> {
        let mut rx = self.inner.get(task_id)?.status.subscribe();
        loop {
            {
                let s = rx.borrow_and_update();
                if s.state == TaskState::Exited {
                    return Ok(s.last_exit.unwrap_or(ExitInfo::Unknown));
                }
            }
            if rx.changed().await.is_err() {
                return Ok(rx.borrow().last_exit.unwrap_or(ExitInfo::Unknown));
            }
        }
    }

    fn tasks(&self) -> Vec<TaskStatus> {
        let mut v: Vec<TaskStatus> = lock(&self.inner.tasks).values().map(|t| t.status.borrow().clone()).collect();
        v.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        v
    }

    fn task(&self, task_id: &str) -> Option<TaskStatus> {
        lock(&self.inner.tasks).get(task_id).map(|t| t.status.borrow().clone())
    }

    fn usage(&self, task_id: &str) -> Option<Usage> {
        let task = self.inner.get(task_id).ok()?;
        let sampled_at = SystemTime::now();
        if let Some((cpu_nanos, memory_bytes)) = task.cgroup.as_ref().and_then(|c| c.usage()) {
            return Some(Usage { cpu_nanos, memory_bytes, sampled_at });
        }
        let pid = task.status.borrow().pid?;
        let (cpu_nanos, memory_bytes) = procfs::group_usage(pid)?;
        Some(Usage { cpu_nanos, memory_bytes, sampled_at })
    }

    fn subscribe(&self) -> broadcast::Receiver<DriverEvent> {
        self.inner.events.subscribe()
    }

    async fn recover(&self) -> Result<RecoverReport, DriverError> {
        let inner = &self.inner;
        inner.report_limits();
        let driver_id = inner.driver_id.as_str();
        let mut report = RecoverReport::default();

        // Tasks this driver already runs (or is starting): leave them alone.
        // Value: their process group (None: keep every process of the task).
        let mut keep: HashMap<String, Option<u32>> =
            lock(&inner.tasks).iter().map(|(k, t)| (k.clone(), t.status.borrow().pid)).collect();
        for id in lock(&inner.reserved).iter() {
            keep.insert(id.clone(), None);
        }

        let entries = fs::read_dir(&inner.state_dir)
            .map_err(|e| DriverError::io(format!("reading {}", inner.state_dir.display()), e))?;
        let mut found: Vec<(SavedTask, bool)> = Vec::new();
        for entry in entries.flatten() {
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !crate::valid_task_id(&name) || keep.contains_key(&name) {
                continue;
            }
            match state::load_record(&entry.path()) {
                Ok(rec) if rec.spec.id == name => {
                    let alive = rec.exited.is_none()
                        && matches!((rec.pid, rec.start_time),
                            (Some(p), Some(t)) if procfs::verify(p, t, &name, driver_id));
                    found.push((rec, alive));
                }
                other => {
                    let why = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "it names another task".into(),
                    };
                    tracing::warn!(task = %name, "forgetting a task with an unreadable state file: {why}");
                    let _ = fs::remove_dir_all(entry.path());
                    report.forgotten.push(ForgottenTask { task: name, last_exit: None, spec: None });
                }
            }
        }
        for (rec, alive) in &found {
            if *alive {
                keep.insert(rec.spec.id.clone(), rec.pid);
            }
        }

        // Orphans: our driver id, but no supervised task of theirs.
        let me = std::process::id();
        let orphan = |task: String, pid: u32, report: &mut RecoverReport| {
            tracing::info!(task = %task, pid, "killed an orphan process");
            inner.emit(DriverEvent::OrphanKilled { task: task.clone(), pid });
            report.orphans_killed.push(OrphanKill { task, pid });
        };
        let pids = if inner.new_id { Vec::new() } else { procfs::all_pids() };
        for pid in pids {
            if pid == me {
                continue;
            }
            let Ok(env) = procfs::environ(pid) else {
                continue;
            };
            if procfs::env_get(&env, ENV_DRIVER) != Some(driver_id.as_bytes()) {
                continue;
            }
            let task = String::from_utf8_lossy(procfs::env_get(&env, ENV_TASK).unwrap_or_default()).into_owned();
            let Ok(st) = procfs::stat(pid) else { continue };
            if st.is_dead() {
                continue;
            }
            if let Some(leader) = keep.get(&task) {
                let supervised = match leader {
                    None => true,
                    Some(l) => st.pgid as u32 == *l || procfs::in_cgroup(pid, &format!("/wharf-{driver_id}/{task}")),
                };
                if supervised {
                    continue;
                }
            }
            if kill_orphan(pid, driver_id) {
                orphan(task, pid, &mut report);
            }
        }
        // Whatever is left in the cgroups of tasks that are gone.
        let mut cgroups = inner.cgroups.existing_tasks();
        for (rec, alive) in &found {
            if let (false, Some(cg)) = (alive, &rec.cgroup) {
                cgroups.push((rec.spec.id.clone(), cg.clone()));
            }
        }
        for (task, cg) in cgroups {
            if keep.contains_key(&task) {
                continue;
            }
            for pid in cg.kill_all().await {
                orphan(task.clone(), pid, &mut report);
            }
            cg.remove().await;
        }

        for (rec, alive) in found {
            let id = rec.spec.id.clone();
            if alive {
                if let Some(pid) = inner.adopt(&rec) {
                    tracing::info!(task = %id, pid, "adopted");
                    report.adopted.push(id);
                    continue;
                }
            }
            if rec.spec.restart {
                tracing::info!(task = %id, "restarting a task that died while no server watched it");
                inner.restart_lost(rec);
                report.restarted.push(id);
            } else {
                let _ = fs::remove_dir_all(inner.task_dir(&id));
                report.forgotten.push(ForgottenTask {
                    task: id,
                    last_exit: rec.exited,
                    spec: Some(Arc::unwrap_or_clone(rec.spec)),
                });
            }
        }
        Ok(report)
    }

    async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let ids: Vec<String> = lock(&self.inner.tasks).keys().cloned().collect();
        let mut set = tokio::task::JoinSet::new();
        for id in ids {
            let inner = self.inner.clone();
            set.spawn(async move {
                if let Err(e) = inner.stop(&id).await {
                    tracing::debug!(task = %id, "stop at shutdown: {e}");
                }
            });
        }
        while set.join_next().await.is_some() {}
        self.inner.cgroups.remove_driver_dirs();
    }

    fn limits(&self) -> LimitsSupport {
        self.inner.cgroups.support()
    }
}

/// Undo a start() that failed after its directory was created.
async fn abort_start(task: &Task, e: DriverError) -> Result<TaskStatus, DriverError> {
    if let Some(cg) = &task.cgroup {
        cg.remove().await;
    }
    let _ = fs::remove_dir_all(&task.dir);
    Err(e)
}

/// Holds a task id while start() is in progress.
struct Reservation<'a> {
    inner: &'a Inner,
    id: String,
}

impl<'a> Reservation<'a> {
    fn new(inner: &'a Inner, id: &str) -> Result<Self, DriverError> {
        let tasks = lock(&inner.tasks);
        let mut reserved = lock(&inner.reserved);
        if tasks.contains_key(id) || !reserved.insert(id.to_string()) {
            return Err(DriverError::AlreadyExists { task: id.to_string() });
        }
        Ok(Reservation { inner, id: id.to_string() })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.inner.reserved).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(9), Duration::from_millis(25_600));
        assert_eq!(backoff(10), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
    }
}
