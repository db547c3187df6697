//! Shared test helpers: a collecting sink, event waiting, and a guard that
//! makes sure no test leaves processes or cgroups behind.

#![allow(unsafe_code)] // signals, uids and fds through libc
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use wharf_runtime::{DriverEvent, LogSink, OutputStream, ProcessDriver, TaskSpec};

pub const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Line {
    pub task: String,
    pub stream: OutputStream,
    pub bytes: Vec<u8>,
}

/// Collects every line.
#[derive(Default)]
pub struct Sink {
    lines: Mutex<Vec<Line>>,
}

impl LogSink for Sink {
    fn line(&self, task: &TaskSpec, stream: OutputStream, line: &[u8]) {
        self.lines.lock().unwrap().push(Line { task: task.id.clone(), stream, bytes: line.to_vec() });
    }
}

impl Sink {
    pub fn lines(&self, task: &str, stream: OutputStream) -> Vec<Vec<u8>> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.task == task && l.stream == stream)
            .map(|l| l.bytes.clone())
            .collect()
    }

    pub fn text(&self, task: &str, stream: OutputStream) -> Vec<String> {
        self.lines(task, stream).into_iter().map(|b| String::from_utf8_lossy(&b).into_owned()).collect()
    }

    /// Wait until `pred` holds for the stdout lines of `task`.
    pub async fn wait_stdout(&self, task: &str, what: &str, pred: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.text(task, OutputStream::Stdout);
            if pred(&lines) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; stdout of {task}: {lines:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Wait for the first event matching `pred`.
pub async fn expect_event(
    rx: &mut broadcast::Receiver<DriverEvent>,
    what: &str,
    pred: impl Fn(&DriverEvent) -> bool,
) -> DriverEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if pred(&ev) => return ev,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event channel: {e} (waiting for {what})"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Events already received.
pub fn drain_events(rx: &mut broadcast::Receiver<DriverEvent>) -> Vec<DriverEvent> {
    let mut v = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        v.push(ev);
    }
    v
}

pub fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

pub fn spec(id: &str, command: Vec<String>) -> TaskSpec {
    let mut s = TaskSpec::new(id, command, "/tmp");
    s.app = "test".into();
    s.service = "svc".into();
    s.stop_timeout = Duration::from_secs(5);
    s
}

pub fn one_off(id: &str, command: Vec<String>) -> TaskSpec {
    let mut s = spec(id, command);
    s.restart = false;
    s
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
pub fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let after = &s[s.rfind(')').unwrap() + 2..];
            after.starts_with('Z') || after.starts_with('X')
        }
        Err(_) => true,
    }
}

pub async fn wait_gone(pid: u32) {
    let deadline = Instant::now() + WAIT;
    while !gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Live processes carrying `WHARF_DRIVER=<driver_id>`.
pub fn processes_of(driver_id: &str) -> Vec<u32> {
    let needle = format!("WHARF_DRIVER={driver_id}");
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) && !gone(pid) {
            v.push(pid);
        }
    }
    v
}

/// A state dir, a sink, and cleanup: when dropped, kills every process of
/// the driver id and removes its cgroups, so a failing test leaves nothing.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sink: Arc<Sink>,
}

impl Harness {
    pub fn new() -> Self {
        Harness { dir: tempfile::tempdir().unwrap(), sink: Arc::new(Sink::default()) }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("tasks")
    }

    pub fn driver(&self) -> ProcessDriver {
        ProcessDriver::new(self.state_dir(), self.sink.clone()).unwrap()
    }

    pub fn driver_id(&self) -> Option<String> {
        fs::read_to_string(self.state_dir().join("driver-id")).ok().map(|s| s.trim().to_string())
    }

    /// Task directories in the state dir.
    pub fn task_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.state_dir())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// No process of ours runs anymore.
    pub async fn assert_clean(&self) {
        let id = self.driver_id().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_of(&id);
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "processes left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let Some(id) = self.driver_id() else { return };
        for _ in 0..50 {
            let left = processes_of(&id);
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: plain syscalls on processes carrying our driver id.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                    libc::killpg(pid as i32, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        remove_cgroups(Path::new("/sys/fs/cgroup"), &format!("wharf-{id}"), 0);
    }
}

fn remove_cgroups(dir: &Path, name: &str, depth: usize) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if e.file_name() == name {
            if let Ok(tasks) = fs::read_dir(&p) {
                for t in tasks.flatten().filter(|t| t.path().is_dir()) {
                    if let Ok(procs) = fs::read_to_string(t.path().join("cgroup.procs")) {
                        for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                            // SAFETY: plain syscall on a process in our cgroup.
                            unsafe {
                                libc::kill(pid, libc::SIGKILL);
                            }
                        }
                    }
                    for _ in 0..50 {
                        if fs::remove_dir(t.path()).is_ok() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            let _ = fs::remove_dir(&p);
        } else if depth < 4 {
            remove_cgroups(&p, name, depth + 1);
        }
    }
}
