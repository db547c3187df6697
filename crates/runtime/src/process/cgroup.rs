//! cgroups, v1 and v2, read and written directly.
//!
//! Layout: `BASE/wharf-<driver-id>/<task-id>/` in each hierarchy used, where
//! BASE is the server's own cgroup in that hierarchy (from /proc/self/cgroup),
//! so that a delegated service (systemd `Delegate=yes`) or a container keeps
//! its tasks inside its own subtree.
//! - v2 (a cgroup2 mount whose root offers `cpu` and `memory`): `+cpu +memory`
//!   are enabled in BASE and in `wharf-<id>` (which never holds processes). If
//!   BASE holds processes (the "no internal processes" rule refuses
//!   controllers with EBUSY), the server moves itself into
//!   `BASE/wharf-supervisor` first; a server started in such a leaf uses its
//!   parent as BASE.
//! - v1: the `cpu`, `cpuacct` and `memory` hierarchies (cpu and cpuacct may be
//!   one mount or two).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::procfs;
use crate::{LimitsSupport, TaskSpec};

const SUPERVISOR_LEAF: &str = "wharf-supervisor";
const PERIOD_US: u64 = 100_000;

/// The driver's cgroup setup, decided once at start.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// Driver dirs (`.../wharf-<id>`) in each v1 hierarchy.
    V1 {
        cpu: PathBuf,
        cpuacct: PathBuf,
        memory: PathBuf,
    },
    /// The driver dir (`.../wharf-<id>`) in the v2 hierarchy.
    V2 {
        dir: PathBuf,
    },
    Unavailable(String),
}

/// One task's cgroup directories (the same directory three times on v2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskCgroup {
    pub v2: bool,
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub memory: PathBuf,
}

#[derive(Debug)]
struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    super_opts: Vec<String>,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(s: &str) -> Vec<Mount> {
    s.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 3 {
                return None;
            }
            Some(Mount {
                root: unescape(l[3]),
                point: PathBuf::from(unescape(l[4])),
                fstype: r[0].to_string(),
                super_opts: r[2].split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// /proc/self/cgroup: (controllers, path) per hierarchy; v2 has no controllers.
fn parse_own(s: &str) -> Vec<(Vec<String>, String)> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = ctrls.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect();
            Some((ctrls, path.to_string()))
        })
        .collect()
}

/// Where the cgroup `own` (a path from /proc/self/cgroup) is in mount `m`.
fn under_mount(m: &Mount, own: &str) -> PathBuf {
    let root = m.root.trim_end_matches('/');
    let rel = if root.is_empty() {
        own
    } else if own == root {
        "/"
    } else {
        // Not under the mount's root (cgroup namespace): use the mount's root.
        own.strip_prefix(root).filter(|r| r.starts_with('/')).unwrap_or("/")
    };
    m.point.join(rel.trim_start_matches('/'))
}

fn controllers(path: &Path) -> BTreeSet<String> {
    fs::read_to_string(path).map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
}

fn has_cpu_memory(set: &BTreeSet<String>) -> bool {
    set.contains("cpu") && set.contains("memory")
}

fn mkdir_ok(dir: &Path) -> io::Result<()> {
    match fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing `{value}` to {}: {e}", path.display())))
}

fn enable_controllers(dir: &Path) -> io::Result<()> {
    if has_cpu_memory(&controllers(&dir.join("cgroup.subtree_control"))) {
        return Ok(());
    }
    fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory")
}

impl Cgroups {
    /// Find the hierarchies and create the driver's directories.
    pub fn detect(driver_id: &str, enabled: bool) -> Cgroups {
        if !enabled {
            return Cgroups::Unavailable("cgroups are disabled in the driver options".into());
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").map(|s| parse_mountinfo(&s)).unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").map(|s| parse_own(&s)).unwrap_or_default();
        Self::detect_in(&mounts, &own, driver_id)
    }

    fn detect_in(mounts: &[Mount], own: &[(Vec<String>, String)], driver_id: &str) -> Cgroups {
        let driver_dir = format!("wharf-{driver_id}");
        let mut notes = Vec::new();
        for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
            if has_cpu_memory(&controllers(&m.point.join("cgroup.controllers"))) {
                let own_path = own.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| p.as_str()).unwrap_or("/");
                return match setup_v2(m, own_path, &driver_dir) {
                    Ok(dir) => Cgroups::V2 { dir },
                    Err(reason) => Cgroups::Unavailable(reason),
                };
            }
            notes.push(format!("the cgroup v2 hierarchy at {} has no cpu and memory controllers", m.point.display()));
        }
        let find = |ctrl: &str| mounts.iter().find(|m| m.fstype == "cgroup" && m.super_opts.iter().any(|o| o == ctrl));
        let (Some(cpu), Some(acct), Some(mem)) = (find("cpu"), find("cpuacct"), find("memory")) else {
            notes.push("the cgroup v1 cpu, cpuacct and memory hierarchies are not all mounted".into());
            return Cgroups::Unavailable(notes.join("; "));
        };
        let dir = |m: &Mount, ctrl: &str| {
            let own_path =
                own.iter().find(|(c, _)| c.iter().any(|x| x == ctrl)).map(|(_, p)| p.as_str()).unwrap_or("/");
            under_mount(m, own_path).join(&driver_dir)
        };
        let (cpu, cpuacct, memory) = (dir(cpu, "cpu"), dir(acct, "cpuacct"), dir(mem, "memory"));
        for d in [&cpu, &cpuacct, &memory] {
            if let Err(e) = mkdir_ok(d) {
                return Cgroups::Unavailable(format!("cgroup v1: cannot create {}: {e}", d.display()));
            }
        }
        Cgroups::V1 { cpu, cpuacct, memory }
    }

    pub fn support(&self) -> LimitsSupport {
        match self {
            Cgroups::V1 { .. } => LimitsSupport::CgroupV1,
            Cgroups::V2 { .. } => LimitsSupport::CgroupV2,
            Cgroups::Unavailable(reason) => LimitsSupport::None { reason: reason.clone() },
        }
    }

    pub fn unavailable(&self) -> Option<&str> {
        match self {
            Cgroups::Unavailable(r) => Some(r),
            _ => None,
        }
    }

    fn driver_dirs(&self) -> Vec<PathBuf> {
        let mut v = match self {
            Cgroups::V1 { cpu, cpuacct, memory } => vec![cpu.clone(), cpuacct.clone(), memory.clone()],
            Cgroups::V2 { dir } => vec![dir.clone()],
            Cgroups::Unavailable(_) => vec![],
        };
        v.dedup();
        v
    }

    fn task_cgroup(&self, task_id: &str) -> Option<TaskCgroup> {
        match self {
            Cgroups::V1 { cpu, cpuacct, memory } => Some(TaskCgroup {
                v2: false,
                cpu: cpu.join(task_id),
                cpuacct: cpuacct.join(task_id),
                memory: memory.join(task_id),
            }),
            Cgroups::V2 { dir } => {
                let d = dir.join(task_id);
                Some(TaskCgroup { v2: true, cpu: d.clone(), cpuacct: d.clone(), memory: d })
            }
            Cgroups::Unavailable(_) => None,
        }
    }

    /// Create (or reuse) the task's cgroup and apply its limits. None when
    /// cgroups are unavailable.
    pub fn create_task(&self, spec: &TaskSpec) -> io::Result<Option<TaskCgroup>> {
        let Some(cg) = self.task_cgroup(&spec.id) else {
            return Ok(None);
        };
        if let Cgroups::V2 { dir } = self {
            mkdir_ok(dir)?;
            enable_controllers(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("enabling cpu and memory in {}: {e}", dir.display())))?;
        }
        for d in cg.dirs() {
            mkdir_ok(d)?;
        }
        if let Err(e) = cg.apply(spec) {
            let _ = cg.rmdirs();
            return Err(e);
        }
        Ok(Some(cg))
    }

    /// Task cgroups present under the driver dirs: (task id, cgroup).
    pub fn existing_tasks(&self) -> Vec<(String, TaskCgroup)> {
        let mut names = BTreeSet::new();
        for d in self.driver_dirs() {
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        if let Some(n) = e.file_name().to_str() {
                            if crate::valid_task_id(n) {
                                names.insert(n.to_string());
                            }
                        }
                    }
                }
            }
        }
        names.into_iter().filter_map(|n| self.task_cgroup(&n).map(|c| (n, c))).collect()
    }

    /// Remove the (empty) driver dirs, e.g. at shutdown. Best effort.
    pub fn remove_driver_dirs(&self) {
        for d in self.driver_dirs() {
            let _ = fs::remove_dir(d);
        }
    }
}

fn setup_v2(m: &Mount, own: &str, driver_dir: &str) -> Result<PathBuf, String> {
    let mut base = under_mount(m, own);
    if base.file_name() == Some(OsStr::new(SUPERVISOR_LEAF)) {
        if let Some(parent) = base.parent() {
            base = parent.to_path_buf();
        }
    }
    if !has_cpu_memory(&controllers(&base.join("cgroup.controllers"))) {
        return Err(format!(
            "cgroup v2: the cpu and memory controllers are not available in {} \
             (the server's cgroup; are they delegated to it?)",
            base.display()
        ));
    }
    if let Err(e) = enable_controllers(&base) {
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(format!("cgroup v2: cannot enable the cpu and memory controllers in {}: {e}", base.display()));
        }
        // The server's cgroup holds processes: move the server into a leaf.
        let leaf = base.join(SUPERVISOR_LEAF);
        let moved = mkdir_ok(&leaf)
            .and_then(|()| fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()))
            .and_then(|()| enable_controllers(&base));
        if let Err(e2) = moved {
            // Put the server back where it was.
            let _ = fs::write(base.join("cgroup.procs"), std::process::id().to_string());
            let _ = fs::remove_dir(&leaf);
            return Err(format!(
                "cgroup v2: cannot enable the cpu and memory controllers in {}: {e}; \
                 moving the server into {} did not help ({e2}): other processes share \
                 the server's cgroup; run wharf in a cgroup of its own",
                base.display(),
                leaf.display()
            ));
        }
    }
    let dir = base.join(driver_dir);
    mkdir_ok(&dir)
        .and_then(|()| enable_controllers(&dir))
        .map_err(|e| format!("cgroup v2: cannot set up {}: {e}", dir.display()))?;
    Ok(dir)
}

/// cgroup v1 cpu.shares to v2 cpu.weight (the conversion runc uses).
fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_key(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

impl TaskCgroup {
    pub fn dirs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = vec![&self.cpu, &self.cpuacct, &self.memory];
        v.sort();
        v.dedup();
        v
    }

    pub fn exists(&self) -> bool {
        self.dirs().iter().all(|d| d.is_dir())
    }

    /// Create the directories again (someone removed them) and apply limits.
    pub fn recreate(&self, spec: &TaskSpec) -> io::Result<()> {
        for d in self.dirs() {
            mkdir_ok(d)?;
        }
        self.apply(spec)
    }

    fn apply(&self, spec: &TaskSpec) -> io::Result<()> {
        let quota = spec.cpu_units.map(|u| (u as u64 * PERIOD_US / 1024).max(1000));
        if self.v2 {
            let d = &self.cpu;
            write(
                &d.join("cpu.max"),
                &match quota {
                    Some(q) => format!("{q} {PERIOD_US}"),
                    None => format!("max {PERIOD_US}"),
                },
            )?;
            let weight = spec.cpu_units.map_or(100, |u| shares_to_weight(u as u64));
            write(&d.join("cpu.weight"), &weight.to_string())?;
            let limit = spec.memory_bytes.map_or_else(|| "max".to_string(), |b| b.to_string());
            write(&d.join("memory.max"), &limit)?;
            let swap = d.join("memory.swap.max");
            if swap.exists() {
                write(&swap, if spec.memory_bytes.is_some() { "0" } else { "max" })?;
            }
        } else {
            let d = &self.cpu;
            write(&d.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&d.join("cpu.cfs_quota_us"), &quota.map_or_else(|| "-1".to_string(), |q| q.to_string()))?;
            let shares = spec.cpu_units.map_or(1024, |u| (u as u64).max(2));
            write(&d.join("cpu.shares"), &shares.to_string())?;
            let m = &self.memory;
            let v = spec.memory_bytes.map_or_else(|| "-1".to_string(), |b| b.to_string());
            let limit = m.join("memory.limit_in_bytes");
            let memsw = m.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                // memsw >= limit at all times: the order depends on the direction.
                if write(&limit, &v).is_ok() {
                    write(&memsw, &v)?;
                } else {
                    write(&memsw, &v)?;
                    write(&limit, &v)?;
                }
            } else {
                write(&limit, &v)?;
            }
            if spec.memory_bytes.is_some() {
                let _ = fs::write(m.join("memory.swappiness"), "0");
            }
        }
        Ok(())
    }

    /// `cgroup.procs` of each directory, opened for writing before a spawn.
    pub fn open_procs(&self) -> io::Result<Vec<File>> {
        self.dirs()
            .into_iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", p.display())))
            })
            .collect()
    }

    /// Live processes in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        let mut pids = BTreeSet::new();
        for d in self.dirs() {
            if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
        pids.into_iter().filter(|&p| matches!(procfs::stat(p), Ok(st) if !st.is_dead())).collect()
    }

    /// SIGKILL everything in the cgroup (v2 `cgroup.kill` when present) and
    /// wait until it is empty. Returns the pids killed.
    pub async fn kill_all(&self) -> Vec<u32> {
        let mut killed = BTreeSet::new();
        for round in 0..200 {
            let pids = self.procs();
            if pids.is_empty() {
                break;
            }
            if round == 0 && self.v2 {
                let _ = fs::write(self.cpu.join("cgroup.kill"), "1");
            }
            for &p in &pids {
                let _ = procfs::kill(p, libc::SIGKILL);
                killed.insert(p);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        killed.into_iter().collect()
    }

    fn rmdirs(&self) -> io::Result<()> {
        for d in self.dirs() {
            match fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Kill what is left and remove the directories.
    pub async fn remove(&self) {
        self.kill_all().await;
        for d in self.dirs() {
            for attempt in 0.. {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 100 => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        tracing::warn!("cannot remove cgroup {}: {e}", d.display());
                        break;
                    }
                }
            }
        }
    }

    /// (cumulative CPU ns, current memory bytes).
    pub fn usage(&self) -> Option<(u64, u64)> {
        if self.v2 {
            let cpu = read_key(&self.cpu.join("cpu.stat"), "usage_usec")? * 1000;
            let mem = read_u64(&self.memory.join("memory.current"))?;
            Some((cpu, mem))
        } else {
            let cpu = read_u64(&self.cpuacct.join("cpuacct.usage"))?;
            let mem = read_u64(&self.memory.join("memory.usage_in_bytes"))?;
            Some((cpu, mem))
        }
    }

    /// The kernel's count of OOM kills in this cgroup.
    pub fn oom_kills(&self) -> Option<u64> {
        if self.v2 {
            read_key(&self.memory.join("memory.events"), "oom_kill")
        } else {
            read_key(&self.memory.join("memory.oom_control"), "oom_kill")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_HOST: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_mountinfo_and_own() {
        let m = parse_mountinfo(V1_HOST);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].point, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(m[1].super_opts, vec!["rw", "cpu"]);
        assert_eq!(m[4].fstype, "cgroup2");
        let own = parse_own("4:memory:/process_api/9\n2:cpu,cpuacct:/\n0::/\n");
        assert_eq!(own[0], (vec!["memory".to_string()], "/process_api/9".to_string()));
        assert_eq!(own[1].0, vec!["cpu", "cpuacct"]);
        assert!(own[2].0.is_empty());
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }

    #[test]
    fn places_under_own_cgroup() {
        let m = Mount {
            root: "/".into(),
            point: "/sys/fs/cgroup/memory".into(),
            fstype: "cgroup".into(),
            super_opts: vec![],
        };
        assert_eq!(under_mount(&m, "/process_api/9"), Path::new("/sys/fs/cgroup/memory/process_api/9"));
        let m = Mount { root: "/docker/abc".into(), ..m };
        assert_eq!(under_mount(&m, "/docker/abc/x"), Path::new("/sys/fs/cgroup/memory/x"));
        assert_eq!(under_mount(&m, "/docker/abc"), Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(under_mount(&m, "/elsewhere"), Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    fn mount(point: &Path, fstype: &str, opts: &[&str]) -> Mount {
        Mount {
            root: "/".into(),
            point: point.to_path_buf(),
            fstype: fstype.into(),
            super_opts: opts.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn limited(id: &str) -> TaskSpec {
        let mut spec = TaskSpec::new(id, vec!["x".into()], "/");
        spec.cpu_units = Some(256);
        spec.memory_bytes = Some(64 << 20);
        spec
    }

    fn read(p: impl AsRef<Path>) -> String {
        fs::read_to_string(p).unwrap()
    }

    /// A pure v2 host, simulated with plain files.
    #[test]
    fn v2_layout_and_limits() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("system.slice/wharf.service");
        fs::create_dir_all(&base).unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        fs::write(base.join("cgroup.controllers"), "cpu memory pids").unwrap();
        let own = vec![(vec![], "/system.slice/wharf.service".to_string())];
        let cg = Cgroups::detect_in(&[mount(root.path(), "cgroup2", &["rw"])], &own, "abc");
        let Cgroups::V2 { dir } = &cg else { panic!("{cg:?}") };
        assert_eq!(dir, &base.join("wharf-abc"));
        assert_eq!(cg.support(), LimitsSupport::CgroupV2);
        assert_eq!(read(base.join("cgroup.subtree_control")), "+cpu +memory");
        assert_eq!(read(dir.join("cgroup.subtree_control")), "+cpu +memory");

        let t = cg.create_task(&limited("api-1")).unwrap().unwrap();
        let d = dir.join("api-1");
        assert_eq!(t.dirs(), vec![d.as_path()]);
        assert_eq!(read(d.join("cpu.max")), "25000 100000");
        assert_eq!(read(d.join("cpu.weight")), "10");
        assert_eq!(read(d.join("memory.max")), (64u64 << 20).to_string());

        let u = cg.create_task(&TaskSpec::new("free", vec!["x".into()], "/")).unwrap().unwrap();
        assert_eq!(read(u.cpu.join("cpu.max")), "max 100000");
        assert_eq!(read(u.memory.join("memory.max")), "max");

        fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        fs::write(d.join("memory.current"), "4096\n").unwrap();
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(t.usage(), Some((1_500_000, 4096)));
        assert_eq!(t.oom_kills(), Some(2));
        let names: Vec<String> = cg.existing_tasks().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["api-1", "free"]);
    }

    #[test]
    fn v2_without_delegated_controllers() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let base = root.path().join("user.slice");
        fs::create_dir_all(&base).unwrap();
        fs::write(base.join("cgroup.controllers"), "pids").unwrap();
        let own = vec![(vec![], "/user.slice".to_string())];
        let cg = Cgroups::detect_in(&[mount(root.path(), "cgroup2", &["rw"])], &own, "abc");
        let reason = cg.unavailable().unwrap();
        assert!(reason.contains("not available in"), "{reason}");
    }

    /// A v1 host with separate cpu and cpuacct mounts, simulated.
    #[test]
    fn v1_layout_and_limits() {
        let root = tempfile::tempdir().unwrap();
        let (cpu, acct, mem) = (root.path().join("cpu"), root.path().join("cpuacct"), root.path().join("memory"));
        for d in [&cpu, &acct, &mem] {
            fs::create_dir_all(d).unwrap();
        }
        let mounts = [
            mount(root.path(), "cgroup2", &["rw"]),
            mount(&cpu, "cgroup", &["rw", "cpu"]),
            mount(&acct, "cgroup", &["rw", "cpuacct"]),
            mount(&mem, "cgroup", &["rw", "memory"]),
        ];
        let own = parse_own("3:memory:/sandbox/1\n2:cpuacct:/\n1:cpu:/\n0::/\n");
        let cg = Cgroups::detect_in(&mounts, &own, "abc");
        let Cgroups::V1 { memory, .. } = &cg else { panic!("{cg:?}") };
        assert_eq!(memory, &mem.join("sandbox/1/wharf-abc"));
        let t = cg.create_task(&limited("w")).unwrap().unwrap();
        assert_eq!(t.cpu, cpu.join("wharf-abc/w"));
        assert_eq!(t.cpuacct, acct.join("wharf-abc/w"));
        assert_eq!(t.memory, mem.join("sandbox/1/wharf-abc/w"));
        assert_eq!(t.dirs().len(), 3);
        assert_eq!(read(t.cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(t.cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read(t.cpu.join("cpu.shares")), "256");
        assert_eq!(read(t.memory.join("memory.limit_in_bytes")), (64u64 << 20).to_string());
        fs::write(t.cpuacct.join("cpuacct.usage"), "123456\n").unwrap();
        fs::write(t.memory.join("memory.usage_in_bytes"), "8192\n").unwrap();
        fs::write(t.memory.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        assert_eq!(t.usage(), Some((123_456, 8192)));
        assert_eq!(t.oom_kills(), Some(1));
    }

    #[test]
    fn nothing_mounted() {
        let c = Cgroups::detect_in(&[], &[], "x");
        assert!(c.unavailable().unwrap().contains("not all mounted"));
    }
}
