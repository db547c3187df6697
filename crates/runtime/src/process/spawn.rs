//! Building and spawning a task's process.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

use super::procfs::{self, ENV_DRIVER, ENV_TASK};
use crate::{DriverError, TaskSpec};

/// Variables passed through from the server's environment.
pub const PASS_THROUGH: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

pub fn base_env() -> Vec<(OsString, OsString)> {
    PASS_THROUGH.iter().filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v))).collect()
}

pub struct Spawned {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub start_time: u64,
    pub started_at: SystemTime,
}

/// How often, and how long apart, a spawn that found its program busy
/// ("text file busy") tries again before it fails.
const ETXTBSY_RETRIES: u32 = 5;
const ETXTBSY_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// Spawn `spec` in a new process group, stdin from /dev/null, stdout/stderr
/// appended to the spool files, moved into the cgroups whose `cgroup.procs`
/// files are given (before it execs, so its first instruction is accounted).
#[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
pub fn spawn(
    spec: &TaskSpec,
    driver_id: &str,
    base_env: &[(OsString, OsString)],
    stdout: &Path,
    stderr: &Path,
    cgroup_procs: &[File],
) -> Result<Spawned, DriverError> {
    let md = fs::metadata(&spec.workdir);
    if !matches!(&md, Ok(m) if m.is_dir()) {
        return Err(DriverError::Workdir {
            task: spec.id.clone(),
            workdir: spec.workdir.display().to_string(),
            problem: match md {
                Err(e) if e.kind() == io::ErrorKind::NotFound => "does not exist".into(),
                Err(e) => format!("is not accessible: {e}"),
                Ok(_) => "is not a directory".into(),
            },
        });
    }

    let mut env: BTreeMap<OsString, OsString> = base_env.iter().cloned().collect();
    for (k, v) in &spec.env {
        env.insert(k.into(), v.into());
    }
    if let Some(port) = spec.port {
        env.insert("PORT".into(), port.to_string().into());
    }
    if let Some(u) = &spec.user {
        // The account's own identity, not the server's.
        env.insert("HOME".into(), u.home.as_str().into());
        env.insert("USER".into(), u.name.as_str().into());
        env.insert("LOGNAME".into(), u.name.as_str().into());
    }
    env.insert(ENV_TASK.into(), spec.id.as_str().into());
    env.insert(ENV_DRIVER.into(), driver_id.into());
    let path = env.get(OsStr::new("PATH")).cloned().unwrap_or_else(|| DEFAULT_PATH.into());

    // `$PORT`, `${NAME}` from the task's own environment; `$$` is a `$`.
    let lookup = |name: &str| env.get(OsStr::new(name)).map(|v| v.to_string_lossy().into_owned());
    let argv: Vec<String> = spec.command.iter().map(|a| wharf_vars::expand_arg(a, lookup)).collect();
    let argv0 = &argv[0];
    let spawn_err = |source: io::Error| {
        let hint = match source.kind() {
            io::ErrorKind::NotFound if argv0.contains('/') => " — does the file exist?".into(),
            io::ErrorKind::NotFound => format!(" — is it installed and on the PATH ({})?", path.to_string_lossy()),
            io::ErrorKind::PermissionDenied => " — is it executable?".into(),
            _ if source.raw_os_error() == Some(libc::ENOEXEC) => {
                " — is it a binary, or a script starting with a #! line?".into()
            }
            _ => String::new(),
        };
        DriverError::Spawn {
            task: spec.id.clone(),
            program: argv0.clone(),
            workdir: spec.workdir.display().to_string(),
            source,
            hint,
        }
    };
    let program = resolve(argv0, &path, &spec.workdir).map_err(spawn_err)?;

    let open = |p: &Path| {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .map_err(|e| DriverError::io(format!("opening {}", p.display()), e))
    };
    let out = open(stdout)?;
    let err = open(stderr)?;

    let mut cmd = std::process::Command::new(&program);
    cmd.arg0(argv0)
        .args(&argv[1..])
        .env_clear()
        .envs(&env)
        .current_dir(&spec.workdir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    if let Some(u) = &spec.user {
        // std drops supplementary groups (setgroups) before setgid/setuid.
        cmd.uid(u.uid).gid(u.gid);
    }
    let fds: Vec<RawFd> = cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
    if !fds.is_empty() {
        // SAFETY: runs in the forked child before exec: only write(2) on fds
        // opened by the parent (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let mut cmd = tokio::process::Command::from(cmd);
    let mut busy_waits = 0;
    let child = loop {
        match cmd.spawn() {
            // The program is open for writing somewhere: typically another
            // thread's freshly written file, inherited by a child forked at
            // that moment until it execs. That passes within milliseconds.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && busy_waits < ETXTBSY_RETRIES => {
                busy_waits += 1;
                std::thread::sleep(ETXTBSY_WAIT);
            }
            r => break r.map_err(spawn_err)?,
        }
    };
    let started_at = SystemTime::now();
    let pid = child.id().ok_or_else(|| spawn_err(io::Error::other("the process exited at once")))?;
    // The child is not reaped before we wait() on it: its /proc entry exists.
    let start_time = procfs::stat(pid).map(|s| s.start_time).unwrap_or(0);
    Ok(Spawned { child, pid, start_time, started_at })
}

/// Resolve the program like execvp would, but on the task's PATH: a name
/// with a `/` is a path (relative to the workdir); otherwise the first
/// executable file named so in a PATH entry (relative entries are relative to
/// the workdir).
fn resolve(program: &str, path: &OsStr, workdir: &Path) -> io::Result<PathBuf> {
    if program.contains('/') {
        let p = workdir.join(program);
        return match fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(p),
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EACCES)),
            Err(e) => Err(e),
        };
    }
    let mut denied = false;
    for dir in std::env::split_paths(path) {
        let dir = if dir.as_os_str().is_empty() { workdir.to_path_buf() } else { workdir.join(dir) };
        let candidate = dir.join(program);
        if let Ok(m) = fs::metadata(&candidate) {
            if m.is_file() {
                if m.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
                denied = true;
            }
        }
    }
    Err(io::Error::from_raw_os_error(if denied { libc::EACCES } else { libc::ENOENT }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_on_given_path() {
        let p = resolve("sh", OsStr::new("/nonexistent:/bin:/usr/bin"), Path::new("/")).unwrap();
        assert!(p.ends_with("sh"));
        let e = resolve("no-such-prog-xyz", OsStr::new("/bin"), Path::new("/")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = resolve("./nope", OsStr::new("/bin"), Path::new("/tmp")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
