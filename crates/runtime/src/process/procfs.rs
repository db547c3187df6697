//! Reading /proc, signalling, pidfds.

// The driver's direct kernel calls (sysconf, kill, pidfd) live here; each
// has its SAFETY note.
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::ExitInfo;

pub const ENV_TASK: &str = "WHARF_TASK";
pub const ENV_DRIVER: &str = "WHARF_DRIVER";

/// The fields of /proc/PID/stat we use.
#[derive(Debug, Clone)]
pub struct Stat {
    pub state: u8,
    pub pgid: i32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    /// Field 22: start time in clock ticks since boot. With the pid, this
    /// identifies a process (pids are reused, (pid, start time) is not).
    pub start_time: u64,
    pub rss_pages: u64,
    /// Field 52 (Linux 3.5+): the wait status of a zombie.
    pub exit_code: Option<i32>,
}

impl Stat {
    /// Zombie or dead: gone for every purpose but its pid.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

pub fn stat(pid: u32) -> io::Result<Stat> {
    let raw = fs::read(format!("/proc/{pid}/stat"))?;
    parse_stat(&raw).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/PID/stat"))
}

fn parse_stat(raw: &[u8]) -> Option<Stat> {
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&raw[close + 1..]).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3.
    let field = |n: usize| f.get(n - 3).copied();
    let num = |n: usize| field(n)?.parse::<i64>().ok();
    Some(Stat {
        state: *field(3)?.as_bytes().first()?,
        pgid: num(5)? as i32,
        utime: num(14)?.max(0) as u64,
        stime: num(15)?.max(0) as u64,
        cutime: num(16)?.max(0) as u64,
        cstime: num(17)?.max(0) as u64,
        start_time: num(22)?.max(0) as u64,
        rss_pages: num(24)?.max(0) as u64,
        exit_code: num(52).map(|c| c as i32),
    })
}

/// The initial environment of a process (NUL-separated `K=V`).
pub fn environ(pid: u32) -> io::Result<Vec<u8>> {
    fs::read(format!("/proc/{pid}/environ"))
}

pub fn env_get<'a>(environ: &'a [u8], key: &str) -> Option<&'a [u8]> {
    environ.split(|&b| b == 0).find_map(|kv| kv.strip_prefix(key.as_bytes()).and_then(|rest| rest.strip_prefix(b"=")))
}

/// Whether the environment of `pid` says it belongs to `task` of `driver`.
pub fn has_identity(pid: u32, task: &str, driver: &str) -> bool {
    match environ(pid) {
        Ok(env) => {
            env_get(&env, ENV_DRIVER) == Some(driver.as_bytes()) && env_get(&env, ENV_TASK) == Some(task.as_bytes())
        }
        Err(_) => false,
    }
}

/// The process `pid` is alive, started at `start_time`, and carries our
/// identity: it is the very process we spawned (never a reused pid).
pub fn verify(pid: u32, start_time: u64, task: &str, driver: &str) -> bool {
    match stat(pid) {
        Ok(st) if !st.is_dead() && st.start_time == start_time => has_identity(pid, task, driver),
        _ => false,
    }
}

/// All pids in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    all_pids().into_iter().filter(|&p| matches!(stat(p), Ok(st) if st.pgid == pgid as i32 && !st.is_dead())).collect()
}

/// CPU (ns) and RSS (bytes) of the live processes in group `pgid`.
pub fn group_usage(pgid: u32) -> Option<(u64, u64)> {
    let tck = clock_ticks();
    let page = page_size();
    let mut ticks = 0u64;
    let mut rss = 0u64;
    let mut any = false;
    for p in all_pids() {
        if let Ok(st) = stat(p) {
            if st.pgid == pgid as i32 && !st.is_dead() {
                any = true;
                ticks += st.utime + st.stime + st.cutime + st.cstime;
                rss += st.rss_pages * page;
            }
        }
    }
    any.then(|| ((ticks as u128 * 1_000_000_000 / tck as u128) as u64, rss))
}

pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

/// Wall-clock time a process started (boot time + start ticks).
pub fn started_at(start_time: u64) -> Option<SystemTime> {
    let s = fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = s.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    let tck = clock_ticks();
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(btime)
            + Duration::from_nanos((start_time as u128 * 1_000_000_000 / tck as u128) as u64),
    )
}

/// Whether any line of /proc/PID/cgroup is the cgroup `suffix` (e.g.
/// `/wharf-ID/TASK`), in any hierarchy.
pub fn in_cgroup(pid: u32, suffix: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        Ok(s) => s.lines().any(|l| l.ends_with(suffix)),
        Err(_) => false,
    }
}

/// The exit of a zombie we didn't spawn (its parent hasn't reaped it yet).
pub fn zombie_exit(pid: u32, start_time: u64) -> Option<ExitInfo> {
    let st = stat(pid).ok()?;
    if st.start_time != start_time || st.state != b'Z' {
        return None;
    }
    Some(decode_wait_status(st.exit_code?))
}

pub fn decode_wait_status(status: i32) -> ExitInfo {
    if libc::WIFEXITED(status) {
        ExitInfo::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        ExitInfo::Signal(libc::WTERMSIG(status))
    } else {
        ExitInfo::Unknown
    }
}

pub fn kill(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn killpg(pgid: u32, sig: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: plain syscall.
    if unsafe { libc::killpg(pgid as libc::pid_t, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Signal the process group led by `pid`, or just `pid` if it has left its
/// group.
pub fn signal_group(pid: u32, sig: i32) {
    if killpg(pid, sig).is_err() {
        let _ = kill(pid, sig);
    }
}

pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success it returns a new fd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: r is a fresh fd.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }
}

pub fn pidfd_send_signal(fd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall on an fd we own.
    let r = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits for the exit of a process that is not our child.
pub enum PidWaiter {
    /// A pidfd: readable once the process has terminated.
    Fd(AsyncFd<OwnedFd>),
    /// No pidfd support (Linux < 5.3): poll /proc.
    Poll,
}

impl PidWaiter {
    pub fn new(pid: u32) -> Self {
        let Ok(fd) = pidfd_open(pid) else {
            return PidWaiter::Poll;
        };
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open (and the
        // same fd) until the AsyncFd is dropped.
        match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            Ok(fd) => PidWaiter::Fd(fd),
            Err(_) => PidWaiter::Poll,
        }
    }

    /// Cancel-safe; returns at once (again) after the process is gone.
    pub async fn wait(&self, pid: u32, start_time: u64) {
        if let PidWaiter::Fd(fd) = self {
            if fd.readable().await.is_ok() {
                return;
            }
        }
        loop {
            match stat(pid) {
                Ok(st) if !st.is_dead() && st.start_time == start_time => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let line = b"123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 7 3 1 2 20 0 1 0 4242 1000 55 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 9";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, b'S');
        assert_eq!(st.pgid, 123);
        assert_eq!((st.utime, st.stime, st.cutime, st.cstime), (7, 3, 1, 2));
        assert_eq!(st.start_time, 4242);
        assert_eq!(st.rss_pages, 55);
        assert_eq!(st.exit_code, Some(9));
    }

    #[test]
    fn own_stat_and_env() {
        let me = std::process::id();
        let st = stat(me).unwrap();
        assert!(!st.is_dead());
        assert!(started_at(st.start_time).unwrap() <= SystemTime::now());
        let env = b"A=1\0WHARF_TASK=x\0WHARF_TASKS=y\0";
        assert_eq!(env_get(env, "WHARF_TASK"), Some(&b"x"[..]));
        assert_eq!(env_get(env, "B"), None);
    }

    #[test]
    fn wait_status() {
        assert_eq!(decode_wait_status(1 << 8), ExitInfo::Code(1));
        assert_eq!(decode_wait_status(9), ExitInfo::Signal(9));
    }
}
