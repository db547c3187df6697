//! Runs tasks: the [`Driver`] trait and its default implementation, the
//! [`ProcessDriver`].
//!
//! A task is one running instance of a revision: a command with an
//! environment, a working directory and optional CPU/memory limits. The
//! process driver starts each task in its own process group (and, when the
//! host allows it, its own cgroup), supervises it (restart with backoff,
//! graceful stop, OOM detection), streams its stdout/stderr line by line to a
//! [`LogSink`], and survives a `kill -9` of the server: tasks keep running,
//! their output keeps being spooled to files, and the next server
//! [`recover`](Driver::recover)s them (re-adopts the live ones, restarts the
//! dead services, kills orphans).
//!
//! See [`ProcessDriver`] for the state layout and the exact semantics.

mod error;
mod process;

pub mod deadline;

pub use error::DriverError;
pub use process::{ProcessDriver, ProcessDriverOptions};

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What to run: everything the driver needs to start (and restart) a task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskSpec {
    /// Unique task id, e.g. `convergence-api-3-k7f2`. Used as a file name:
    /// ASCII letters, digits, `.`, `_`, `-`; not starting with `.`; at most
    /// 128 characters.
    pub id: String,
    pub app: String,
    pub service: String,
    pub revision: u64,
    /// argv. `argv[0]` is resolved on the PATH of the task's environment
    /// (`spec.env["PATH"]` if set, else the server's PATH); a name containing
    /// `/` is taken as a path, relative to `workdir`.
    pub command: Vec<String>,
    /// Absolute working directory; must exist.
    pub workdir: PathBuf,
    /// Added on top of the base environment (PATH, HOME, USER, LANG, LC_ALL,
    /// LC_CTYPE, TZ, TMPDIR from the server). The driver adds `WHARF_TASK`
    /// and `WHARF_DRIVER` itself (they cannot be overridden).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The variables of `env` whose values are sealed secrets: the driver
    /// opens them (with its [`EnvOpener`]) only to start the process, so the
    /// task's saved state and its status never hold them in clear.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub sealed_env: std::collections::BTreeSet<String>,
    /// The port the task listens on, chosen once when the task is made so it
    /// survives restarts and re-adoption; the driver sets `$PORT` to it
    /// (over any `PORT` in `env`). None: the task takes no traffic.
    #[serde(default)]
    pub port: Option<u16>,
    /// 1024 = one core: CFS quota of `units * 100ms / 1024` per 100 ms period,
    /// plus a proportional weight (v1 `cpu.shares`, v2 `cpu.weight`).
    pub cpu_units: Option<u32>,
    /// Hard memory limit in bytes, no swap.
    pub memory_bytes: Option<u64>,
    /// Signal sent to the process group by a graceful stop, e.g. `libc::SIGTERM`.
    pub stop_signal: i32,
    /// How long a graceful stop waits before SIGKILL.
    pub stop_timeout: Duration,
    /// true: restart on exit (services); false: run once (one-off tasks, jobs).
    pub restart: bool,
    /// The user the process runs as; None: the server's own.
    #[serde(default)]
    pub user: Option<TaskUser>,
}

/// An account a task runs as (resolved from its name by the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Why a task cannot run as the account it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskUserError {
    #[error("user `{user}` does not exist on this server")]
    NoSuchUser { user: String },
    #[error("running tasks as `{user}` needs a server running as root (this one runs every task as its own user)")]
    NeedsRoot { user: String },
}

/// Whether this process runs as root (and so may run tasks as other users).
#[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl TaskUser {
    /// The account tasks naming `name` run as, for this server: None runs
    /// them as the server's own user (root, or the server's account itself).
    #[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
    pub fn resolve(name: &str) -> Result<Option<TaskUser>, TaskUserError> {
        let u = TaskUser::lookup(name).ok_or_else(|| TaskUserError::NoSuchUser { user: name.to_string() })?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        match u.uid {
            0 => Ok(None),
            uid if uid == me => Ok(None),
            _ if me == 0 => Ok(Some(u)),
            _ => Err(TaskUserError::NeedsRoot { user: name.to_string() }),
        }
    }

    /// Looks a user up in the system's user database.
    #[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
    pub fn lookup(name: &str) -> Option<TaskUser> {
        let c = std::ffi::CString::new(name).ok()?;
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwnam_r writes into `pw` and `buf`, both ours and alive
        // for the call; strings in `pw` point into `buf`, read before it drops.
        let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        if rc != 0 || out.is_null() {
            return None;
        }
        // SAFETY: on success pw_dir is a NUL-terminated string inside `buf`.
        let home = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) }.to_string_lossy().into_owned();
        Some(TaskUser { name: name.to_string(), uid: pw.pw_uid, gid: pw.pw_gid, home })
    }
}

/// Opens the sealed values of a task's environment (`TaskSpec::sealed_env`)
/// right before its process starts; what seals them is the server's.
pub trait EnvOpener: Send + Sync + std::fmt::Debug {
    /// The clear value of `var` for `task`, or why it cannot be had.
    fn open(&self, task: &str, var: &str, sealed: &str) -> Result<String, String>;
}

impl TaskSpec {
    /// A spec with defaults: no app/service, revision 0, no env, no limits,
    /// SIGTERM with a 10 s stop timeout, restart on exit.
    pub fn new(id: impl Into<String>, command: Vec<String>, workdir: impl Into<PathBuf>) -> Self {
        TaskSpec {
            id: id.into(),
            app: String::new(),
            service: String::new(),
            revision: 0,
            command,
            workdir: workdir.into(),
            env: BTreeMap::new(),
            sealed_env: Default::default(),
            port: None,
            cpu_units: None,
            memory_bytes: None,
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            restart: true,
            user: None,
        }
    }

    /// Checks what the driver relies on (id usable as a file name, a
    /// command, an absolute workdir, a real signal, sane limits).
    pub fn validate(&self) -> Result<(), DriverError> {
        let invalid = |reason: String| DriverError::InvalidSpec { task: self.id.clone(), reason };
        if !valid_task_id(&self.id) {
            return Err(invalid(
                "the id must be 1-128 characters of ASCII letters, digits, `.`, `_` or `-`, \
                 not starting with `.`"
                    .into(),
            ));
        }
        match self.command.first() {
            None => return Err(invalid("the command is empty".into())),
            Some(p) if p.is_empty() => return Err(invalid("the program name is empty".into())),
            _ => {}
        }
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(invalid(format!("argument {i} of the command contains a NUL byte")));
        }
        if !self.workdir.is_absolute() {
            return Err(invalid(format!("the workdir `{}` must be an absolute path", self.workdir.display())));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(invalid(format!(
                    "invalid environment variable name {k:?} (names must be non-empty, without `=` or NUL)"
                )));
            }
            // Said apart from the name: the name is fine, the value is not.
            if v.contains('\0') {
                return Err(invalid(format!("the value of environment variable `{k}` contains a NUL byte")));
            }
        }
        if self.port == Some(0) {
            return Err(invalid("port 0 cannot be listened on (give a port from 1 to 65535)".into()));
        }
        if !(1..=64).contains(&self.stop_signal) {
            return Err(invalid(format!("stop_signal {} is not a signal number (1-64)", self.stop_signal)));
        }
        if self.cpu_units == Some(0) {
            return Err(invalid("cpu_units must be at least 1 (1024 = one core)".into()));
        }
        if let Some(m) = self.memory_bytes {
            if m < 1024 * 1024 {
                return Err(invalid(format!("memory limit of {m} bytes is too small (at least 1 MiB)")));
            }
        }
        Ok(())
    }
}

pub(crate) fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Lifecycle of a task.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Being (re)spawned.
    Starting,
    /// The process runs.
    Running,
    /// Exited; waiting to be restarted (restart = true).
    Backoff,
    /// A graceful stop is in progress.
    Stopping,
    /// Exited and not restarting: a one-off that finished, or a stopped task.
    Exited,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExitInfo {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Not observable: an adopted process (not our child) that was reaped by
    /// someone else, or a process that died while no server was running.
    Unknown,
}

impl ExitInfo {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitInfo::Code(0))
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Code(c) => write!(f, "exit code {c}"),
            ExitInfo::Signal(s) => match signal_name(*s) {
                Some(n) => write!(f, "killed by signal {s} ({n})"),
                None => write!(f, "killed by signal {s}"),
            },
            ExitInfo::Unknown => f.write_str("unknown exit status"),
        }
    }
}

/// The conventional name of a common signal (`SIGTERM`...).
pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

/// A snapshot of one task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskStatus {
    /// Shared with the driver's own copy: a snapshot of every task (which
    /// the controllers take many times a second) copies no environment.
    pub spec: Arc<TaskSpec>,
    pub state: TaskState,
    /// The running process (also the process group id); None when not running.
    pub pid: Option<u32>,
    /// Total restarts since the task was started.
    pub restarts: u32,
    /// Consecutive failures; drives the backoff; reset to 0 once a process
    /// has run 10 s.
    pub crashes: u32,
    pub last_exit: Option<ExitInfo>,
    /// When the current (or last) process was started.
    pub started_at: Option<SystemTime>,
    /// The current process was adopted from a previous server.
    pub adopted: bool,
    /// OOM kills seen in the task's cgroup.
    pub oom_kills: u32,
}

/// Resource usage of a task (its cgroup, or its process group without cgroups).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time. With cgroups, since the task was started
    /// (across restarts); without, of the processes currently in the group.
    pub cpu_nanos: u64,
    /// Current memory (cgroup: including page cache; without cgroups: RSS).
    pub memory_bytes: u64,
    pub sampled_at: SystemTime,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Receives task output, one line at a time, without the trailing `\n` (and
/// without a `\r` just before it). Bytes are passed as they were written
/// (not necessarily UTF-8). Lines longer than 16 KiB arrive in pieces; every
/// piece but the last ends with `…[cut]`. Called from the driver's tasks:
/// keep it quick (hand the line over to a channel or buffer).
pub trait LogSink: Send + Sync + 'static {
    fn line(&self, task: &TaskSpec, stream: OutputStream, line: &[u8]);
}

/// Everything that happens to tasks. Subscribe with [`Driver::subscribe`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DriverEvent {
    /// A process was spawned. `attempt` is 1 for the first process of a
    /// task, then `restarts + 1`.
    Started { task: String, pid: u32, attempt: u32 },
    /// A process exited without being asked to. `restart_in` is the backoff
    /// before the next start (None: not restarting, the task is now
    /// `Exited`). `crashes` is the consecutive failure count after this exit.
    /// Also emitted when a restart fails to spawn (exit `Unknown`).
    Exited { task: String, exit: ExitInfo, restart_in: Option<Duration>, crashes: u32 },
    /// The kernel OOM-killed a process of the task (emitted before the
    /// matching `Exited`, if the killed process was the task's main process).
    OutOfMemory { task: String, limit_bytes: u64 },
    /// recover() re-adopted a live task left by a previous server.
    Adopted { task: String, pid: u32 },
    /// recover() killed a process carrying our driver id that no task
    /// supervises (task is its WHARF_TASK, or the cgroup it was found in).
    OrphanKilled { task: String, pid: u32 },
    /// A stop() finished: the task is gone. `forced`: SIGKILL was needed.
    Stopped { task: String, exit: ExitInfo, forced: bool },
    /// Emitted once per driver (at the first start() or recover()) when
    /// cgroups can't be used: tasks run without CPU/memory limits.
    LimitsUnavailable { reason: String },
}

/// What recover() did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RecoverReport {
    /// Live tasks now supervised again (same pid).
    pub adopted: Vec<String>,
    /// Dead tasks with restart = true: restarted (after the usual backoff).
    pub restarted: Vec<String>,
    /// Dead tasks with restart = false (or unreadable state): forgotten.
    pub forgotten: Vec<ForgottenTask>,
    /// Processes killed because nothing supervises them.
    pub orphans_killed: Vec<OrphanKill>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ForgottenTask {
    pub task: String,
    /// The recorded exit, if the task had exited while a server watched it.
    pub last_exit: Option<ExitInfo>,
    /// None when the state file was unreadable.
    pub spec: Option<TaskSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrphanKill {
    pub task: String,
    pub pid: u32,
}

/// Whether the driver can enforce CPU/memory limits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LimitsSupport {
    CgroupV1,
    CgroupV2,
    None { reason: String },
}

/// Runs tasks. Implementations: [`ProcessDriver`] (later: docker).
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Start a new task (error if the id exists). Returns once the process is
    /// spawned and its state recorded.
    async fn start(&self, spec: TaskSpec) -> Result<TaskStatus, DriverError>;
    /// Graceful stop: stop_signal to the whole process group, wait
    /// stop_timeout, then SIGKILL the group (and everything in its cgroup).
    /// Returns after exit; the task is then forgotten (state files and cgroup
    /// removed). Also forgets a task that is in backoff or has exited.
    async fn stop(&self, task_id: &str) -> Result<ExitInfo, DriverError>;
    /// Forget an Exited non-restarting task (one-off) once the caller has read
    /// its status. Error if it hasn't exited.
    async fn remove(&self, task_id: &str) -> Result<(), DriverError>;
    /// Wait until a task reaches Exited (a one-off finished, or any task was
    /// stopped) and return its exit.
    async fn wait(&self, task_id: &str) -> Result<ExitInfo, DriverError>;
    fn tasks(&self) -> Vec<TaskStatus>;
    fn task(&self, task_id: &str) -> Option<TaskStatus>;
    fn usage(&self, task_id: &str) -> Option<Usage>;
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<DriverEvent>;
    /// At server start: re-adopt live tasks recorded in the state dir, forget
    /// dead ones (restarting those with restart=true), and kill orphans.
    async fn recover(&self) -> Result<RecoverReport, DriverError>;
    /// Stop every task gracefully, in parallel (server shutdown).
    async fn shutdown(&self);
    fn limits(&self) -> LimitsSupport;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_task_id("convergence-api-3-k7f2"));
        assert!(valid_task_id("a.b_c"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id(".hidden"));
        assert!(!valid_task_id("a/b"));
        assert!(!valid_task_id("a b"));
        assert!(!valid_task_id(&"x".repeat(129)));
    }

    #[test]
    fn validate() {
        let ok = TaskSpec::new("t", vec!["sleep".into(), "1".into()], "/tmp");
        ok.validate().unwrap();
        let mut s = ok.clone();
        s.workdir = "rel".into();
        assert!(s.validate().unwrap_err().to_string().contains("absolute"));
        let mut s = ok.clone();
        s.command.clear();
        assert!(s.validate().is_err());
        let mut s = ok.clone();
        s.stop_signal = 0;
        assert!(s.validate().is_err());
        let mut s = ok.clone();
        s.env.insert("A=B".into(), "x".into());
        assert!(s.validate().is_err());
        let mut s = ok;
        s.port = Some(0);
        assert!(s.validate().unwrap_err().to_string().contains("port 0"));
        s.port = Some(8080);
        s.validate().unwrap();
    }

    #[test]
    fn exit_display() {
        assert_eq!(ExitInfo::Code(1).to_string(), "exit code 1");
        assert_eq!(ExitInfo::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
        assert!(ExitInfo::Code(0).success());
    }

    #[test]
    fn event_json() {
        let e = DriverEvent::Exited {
            task: "t".into(),
            exit: ExitInfo::Signal(9),
            restart_in: Some(Duration::from_millis(100)),
            crashes: 1,
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["event"], "exited");
        assert_eq!(j["exit"]["signal"], 9);
    }
}
