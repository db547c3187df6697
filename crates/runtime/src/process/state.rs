//! The state directory: `driver-id`, `lock`, and one directory per task.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::cgroup::TaskCgroup;
use crate::{DriverError, ExitInfo, TaskSpec};

pub const TASK_FILE: &str = "task.json";
pub const STDOUT_FILE: &str = "stdout";
pub const STDERR_FILE: &str = "stderr";
const DRIVER_ID_FILE: &str = "driver-id";
const LOCK_FILE: &str = "lock";

/// `DIR/ID/task.json`: what a later server needs to re-adopt the task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedTask {
    pub spec: std::sync::Arc<TaskSpec>,
    /// The current process (also its process group); None between processes.
    pub pid: Option<u32>,
    /// /proc/PID/stat field 22 of `pid`.
    pub start_time: Option<u64>,
    pub started_at: Option<SystemTime>,
    pub restarts: u32,
    pub crashes: u32,
    #[serde(default)]
    pub oom_kills: u32,
    #[serde(default)]
    pub cgroup: Option<TaskCgroup>,
    /// Set when a one-off task has exited (it waits for remove()).
    #[serde(default)]
    pub exited: Option<ExitInfo>,
}

pub fn load_record(task_dir: &Path) -> io::Result<SavedTask> {
    let raw = fs::read(task_dir.join(TASK_FILE))?;
    let mut rec: SavedTask = serde_json::from_slice(&raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    migrate_port(std::sync::Arc::make_mut(&mut rec.spec));
    Ok(rec)
}

/// State files written before `TaskSpec.port` existed kept the port only as
/// text in `env["PORT"]`: a re-adopted task keeps listening there.
fn migrate_port(spec: &mut TaskSpec) {
    if spec.port.is_none() {
        spec.port = spec.env.get("PORT").and_then(|p| p.parse().ok()).filter(|p| *p != 0);
    }
}

pub fn save_record(task_dir: &Path, rec: &SavedTask) -> io::Result<()> {
    let raw = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
    write_atomic(&task_dir.join(TASK_FILE), &raw)
}

/// Write a temporary file next to `path`, then rename it over `path`.
/// Mode 0600: a task's state holds its environment, secrets included.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    drop(f);
    fs::rename(&tmp, path)
}

/// The driver's identity, created once per state directory; true when it
/// was created just now (no process anywhere can carry it yet).
pub fn driver_id(state_dir: &Path) -> Result<(String, bool), DriverError> {
    let path = state_dir.join(DRIVER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim().to_string();
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(DriverError::io(
                    format!("corrupt {}", path.display()),
                    io::Error::new(io::ErrorKind::InvalidData, "expected an alphanumeric id"),
                ));
            }
            Ok((id, false))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = random_hex(8).map_err(|e| DriverError::io("reading random bytes", e))?;
            write_atomic(&path, format!("{id}\n").as_bytes())
                .map_err(|e| DriverError::io(format!("writing {}", path.display()), e))?;
            Ok((id, true))
        }
        Err(e) => Err(DriverError::io(format!("reading {}", path.display()), e)),
    }
}

#[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0u8; bytes];
    let mut filled = 0;
    while filled < bytes {
        // SAFETY: writes at most `bytes - filled` bytes into our buffer.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), bytes - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// An exclusive lock on the state directory, held while the driver lives (the
/// kernel drops it if the server dies).
pub fn lock(state_dir: &Path) -> Result<File, DriverError> {
    let path = state_dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| DriverError::io(format!("opening {}", path.display()), e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(DriverError::Locked { dir: state_dir.display().to_string() }),
        Err(std::fs::TryLockError::Error(e)) => Err(DriverError::io(format!("locking {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(spec: TaskSpec) -> SavedTask {
        SavedTask {
            spec: spec.into(),
            pid: None,
            start_time: None,
            started_at: None,
            restarts: 0,
            crashes: 0,
            oom_kills: 0,
            cgroup: None,
            exited: None,
        }
    }

    #[test]
    fn the_port_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = TaskSpec::new("t", vec!["x".into()], "/tmp");
        spec.port = Some(21_234);
        save_record(dir.path(), &record(spec)).unwrap();
        assert_eq!(load_record(dir.path()).unwrap().spec.port, Some(21_234));
    }

    #[test]
    fn an_old_state_file_gets_its_port_from_env_port_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = TaskSpec::new("t", vec!["x".into()], "/tmp");
        spec.env.insert("PORT".into(), "23456".into());
        let mut json = serde_json::to_value(record(spec)).unwrap();
        json["spec"].as_object_mut().unwrap().remove("port").expect("the field is written");
        std::fs::write(dir.path().join(TASK_FILE), serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(load_record(dir.path()).unwrap().spec.port, Some(23_456));

        // A worker without PORT stays without a port; a typed port wins over the text.
        let mut spec = TaskSpec::new("t", vec!["x".into()], "/tmp");
        save_record(dir.path(), &record(spec.clone())).unwrap();
        assert_eq!(load_record(dir.path()).unwrap().spec.port, None);
        spec.port = Some(21_000);
        spec.env.insert("PORT".into(), "23456".into());
        save_record(dir.path(), &record(spec)).unwrap();
        assert_eq!(load_record(dir.path()).unwrap().spec.port, Some(21_000));
    }
}
