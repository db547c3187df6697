//! `wharf install` / `wharf uninstall`: wharf as a systemd service.
//!
//! Install plans every step first (the server's user, the binary, the data
//! directory, `wharf.service`) and refuses before writing anything, so a
//! refusal or `--dry-run` leaves the machine as it was; a second run finds
//! nothing to do. It never runs `systemctl` where systemd is not running.

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::print::json as print_json;

/// The unit's file name: `systemctl ... wharf` finds it by this name.
pub const UNIT_NAME: &str = "wharf.service";
/// Where systemd is running (sd_booted(3) checks the same directory).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";
/// Directories systemd reads system units from: `systemctl` is only run for
/// a unit written in one of them (a unit elsewhere is not systemd's yet).
const SYSTEM_UNIT_DIRS: &[&str] =
    &["/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"];
/// The data directory's mode: the server's, its group may read; the server
/// itself opens it (0711) to the task user when tasks run as another user.
const DATA_MODE: u32 = 0o750;
const UNIT_MODE: u32 = 0o644;
const BIN_MODE: u32 = 0o755;
/// Longest unit file read back: a unit is a few hundred bytes.
const MAX_UNIT_BYTES: u64 = 64 * 1024;
/// What to run once the unit is in place.
const NEXT: &str = "systemctl daemon-reload && systemctl enable --now wharf";

/// Capabilities a server running as an ordinary user needs: it runs tasks
/// as itself, so it only has to bind ports below 1024.
const CAPS_AS_USER: &[&str] = &["CAP_NET_BIND_SERVICE"];
/// Capabilities a root server keeps (the bounding set takes every other one
/// from it), from what it does with tasks of another user.
const CAPS_AS_ROOT: &[&str] = &[
    "CAP_NET_BIND_SERVICE", // bind 80 and 443
    "CAP_SETUID",           // start each task as the task user
    "CAP_SETGID",           // ... with its group, and no supplementary groups of root
    "CAP_KILL",             // signal tasks of another user: stop, drain, kill orphans
    "CAP_SYS_PTRACE",       // read /proc/PID/environ of their processes: re-adoption checks WHARF_TASK there
];

/// `wharf install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The account the server runs as (created as a system user when missing; needs root).
    #[arg(long, default_value = "wharf")]
    pub user: String,
    /// The account tasks run as; another account than --user needs --user root today
    /// (the server drops tasks to another user only when it runs as root).
    #[arg(long)]
    pub task_user: Option<String>,
    /// Where the binary is installed (copied there unless it already is).
    #[arg(long, default_value = "/usr/local/bin/wharf")]
    pub bin: PathBuf,
    /// Where `wharf.service` is written.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// The server's HTTP listener (`wharf server --http`).
    #[arg(long, default_value = "0.0.0.0:80")]
    pub http: SocketAddr,
    /// The server's HTTPS listener (`wharf server --https`), when this wharf has one.
    #[arg(long)]
    pub https: Option<SocketAddr>,
    /// The server's API (`wharf server --api`); keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub api: SocketAddr,
    /// Replace a unit or binary that differs from what this install writes.
    #[arg(long)]
    pub force: bool,
    /// Say what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// `wharf uninstall`.
#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Where `wharf.service` was written.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// Delete the data directory too (apps, releases, store, logs); needs --yes.
    #[arg(long)]
    pub purge: bool,
    /// Confirm --purge.
    #[arg(long)]
    pub yes: bool,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// What one step did (or, with --dry-run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Unchanged,
    Created,
    Replaced,
    Fixed,
    Removed,
    Absent,
    Kept,
}

impl Action {
    fn changes(self) -> bool {
        matches!(self, Action::Created | Action::Replaced | Action::Fixed | Action::Removed)
    }
}

#[derive(Debug, Serialize)]
struct Step {
    step: &'static str,
    target: String,
    action: Action,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    dry_run: bool,
    changed: bool,
    steps: Vec<Step>,
    unit_path: String,
    /// The unit as written (install only).
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    systemd_running: bool,
    /// The `systemctl` commands run.
    ran: Vec<String>,
    /// What to run next, by hand.
    next: Vec<String>,
    warnings: Vec<String>,
}

/// An account as the system knows it.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    group: String,
}

/// `wharf install`. `server_flags` are the long flags this binary's `wharf
/// server` takes: the unit never names one it lacks.
pub fn install(a: InstallArgs, data: Option<PathBuf>, server_flags: &[String]) -> Result<ExitCode> {
    check_name("--user", &a.user)?;
    if let Some(t) = &a.task_user {
        check_name("--task-user", t)?;
    }
    let data = absolute("--data", data.unwrap_or_else(|| PathBuf::from("/var/lib/wharf")))?;
    let bin = absolute("--bin", a.bin.clone())?;
    let unit_dir = absolute("--unit-dir", a.unit_dir.clone())?;
    let unit_path = unit_dir.join(UNIT_NAME);
    let root = is_root();
    let mut warnings = Vec::new();

    // The server's account: it must exist before anything is owned by it.
    let account = lookup(&a.user)?;
    let user_step = match &account {
        Some(acc) => {
            Step::new("user", &a.user, Action::Unchanged, format!("exists: uid {}, group {}", acc.uid, acc.group))
        }
        None if a.dry_run => {
            Step::new("user", &a.user, Action::Created, "a system user, no home, no login shell".into())
        }
        None if !root => bail!(
            "the server's user `{}` does not exist, and only root can create it (this runs as uid {})\n  \
             hint: run `wharf install` as root, or create it first: {}",
            a.user,
            euid(),
            useradd_line(&a.user)
        ),
        None => Step::new("user", &a.user, Action::Created, "a system user, no home, no login shell".into()),
    };
    let server_is_root = account.as_ref().is_some_and(|acc| acc.uid == 0);
    if let Some(t) = &a.task_user {
        let task = lookup(t)?.with_context(|| format!("--task-user {t}: no such user on this machine"))?;
        let same = account.as_ref().is_some_and(|acc| acc.uid == task.uid);
        if !server_is_root && !same {
            bail!(
                "--task-user {t} needs a server running as root: wharf runs tasks as another user only then \
                 (as `{}` it runs them as itself)\n  hint: --user root --task-user {t} (root bounded to the \
                 capabilities it needs), or leave --task-user out",
                a.user
            );
        }
    } else if !server_is_root {
        warnings.push(format!(
            "tasks run as `{}`, the server's own user, so they can read its API token and store; to run them \
             as another user the server must run as root: --user root --task-user NAME",
            a.user
        ));
    }

    let args = server_args(&a, &data);
    for (flag, value) in &args {
        if value.is_some() && !server_flags.iter().any(|f| f == flag.trim_start_matches("--")) {
            bail!("this wharf's server has no {flag} flag\n  hint: leave {flag} out, or install a newer wharf");
        }
    }
    let group = account.as_ref().map_or_else(|| a.user.clone(), |acc| acc.group.clone());
    let unit = unit_file(&a.user, &group, server_is_root, &bin, &data, &args)?;

    let bin_step = plan_bin(&bin, a.force)?;
    let data_step = plan_data(&data, account.as_ref(), &a.user)?;
    let unit_step = plan_unit(&unit_path, &unit, a.force)?;

    if !a.dry_run {
        if user_step.action == Action::Created {
            run_checked(Command::new("useradd").args(useradd_args(&a.user)))?;
        }
        let account = lookup(&a.user)?.with_context(|| format!("user `{}` still does not exist", a.user))?;
        if bin_step.action.changes() {
            write_bin(&bin)?;
        }
        if data_step.action.changes() {
            write_data(&data, &account)?;
        }
        if unit_step.action.changes() {
            write_atomic(&unit_path, unit.as_bytes(), UNIT_MODE)?;
        }
    }
    let unit_replaced = unit_step.action == Action::Replaced;
    let steps = vec![user_step, bin_step, data_step, unit_step];
    let changed = steps.iter().any(|s| s.action.changes());

    let systemd_running = Path::new(SYSTEMD_RUNNING).is_dir();
    let mut ran = Vec::new();
    let mut next = Vec::new();
    let in_system_dir = SYSTEM_UNIT_DIRS.iter().any(|d| Path::new(d) == unit_dir);
    if !systemd_running {
        next.push(NEXT.to_string());
        warnings.push(format!("systemd is not running here (no {SYSTEMD_RUNNING}): systemctl was not run"));
    } else if a.dry_run || !root || !in_system_dir {
        next.push(NEXT.to_string());
    } else if changed {
        for cmd in [&["daemon-reload"][..], &["enable", "--now", "wharf"]] {
            run_checked(Command::new("systemctl").args(cmd))?;
            ran.push(format!("systemctl {}", cmd.join(" ")));
        }
    }
    if systemd_running && unit_replaced {
        next.push("systemctl restart wharf   # a running server takes the new unit at its next start".into());
    }

    let report = Report {
        dry_run: a.dry_run,
        changed,
        steps,
        unit_path: unit_path.display().to_string(),
        unit: Some(unit),
        systemd_running,
        ran,
        next,
        warnings,
    };
    print_report("install", &report, a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `wharf uninstall`: the unit, and the data directory only with --purge --yes.
pub fn uninstall(a: UninstallArgs, data: Option<PathBuf>) -> Result<ExitCode> {
    let unit_dir = absolute("--unit-dir", a.unit_dir.clone())?;
    let unit_path = unit_dir.join(UNIT_NAME);
    let installed = read_bounded(&unit_path)?;
    // The data directory the unit names, unless --data says which.
    let data = match data {
        Some(d) => absolute("--data", d)?,
        None => installed.as_deref().and_then(unit_data_dir).unwrap_or_else(|| PathBuf::from("/var/lib/wharf")),
    };
    if a.purge && !a.yes {
        bail!(
            "refusing to delete the data directory {} (every app, release, log and the store) without --yes\n  \
             hint: wharf uninstall --purge --yes; without --purge the data directory is kept",
            data.display()
        );
    }
    let systemd_running = Path::new(SYSTEMD_RUNNING).is_dir();
    let in_system_dir = SYSTEM_UNIT_DIRS.iter().any(|d| Path::new(d) == unit_dir);
    let may_run_systemctl = systemd_running && in_system_dir && is_root() && !a.dry_run;

    let unit_step = match installed {
        Some(_) => Step::new("unit", &unit_path.display().to_string(), Action::Removed, String::new()),
        None => Step::new("unit", &unit_path.display().to_string(), Action::Absent, "not installed".into()),
    };
    let data_step = if !a.purge {
        Step::new("data", &data.display().to_string(), Action::Kept, "--purge --yes deletes it".into())
    } else if !data.exists() {
        Step::new("data", &data.display().to_string(), Action::Absent, "no such directory".into())
    } else {
        check_purgeable(&data)?;
        Step::new("data", &data.display().to_string(), Action::Removed, String::new())
    };

    let mut ran = Vec::new();
    if !a.dry_run {
        if unit_step.action == Action::Removed {
            if may_run_systemctl {
                // Stops the server, which stops its tasks (KillMode=process leaves them to it).
                run_checked(Command::new("systemctl").args(["disable", "--now", "wharf"]))?;
                ran.push("systemctl disable --now wharf".into());
            }
            fs::remove_file(&unit_path).with_context(|| format!("cannot remove {}", unit_path.display()))?;
            if may_run_systemctl {
                run_checked(Command::new("systemctl").arg("daemon-reload"))?;
                ran.push("systemctl daemon-reload".into());
            }
        }
        if data_step.action == Action::Removed {
            fs::remove_dir_all(&data).with_context(|| format!("cannot delete {}", data.display()))?;
        }
    }
    let mut next = Vec::new();
    let mut warnings = Vec::new();
    if unit_step.action == Action::Removed && !may_run_systemctl {
        next.push("systemctl disable --now wharf; systemctl daemon-reload   # where systemd runs it".into());
        if !systemd_running {
            warnings.push(format!("systemd is not running here (no {SYSTEMD_RUNNING}): systemctl was not run"));
        }
    }
    let steps = vec![unit_step, data_step];
    let report = Report {
        dry_run: a.dry_run,
        changed: steps.iter().any(|s| s.action.changes()),
        steps,
        unit_path: unit_path.display().to_string(),
        unit: None,
        systemd_running,
        ran,
        next,
        warnings,
    };
    print_report("uninstall", &report, a.json)?;
    Ok(ExitCode::SUCCESS)
}

impl Step {
    fn new(step: &'static str, target: &str, action: Action, detail: String) -> Step {
        Step { step, target: target.to_string(), action, detail }
    }
}

/// `wharf server`'s flags in the unit, in order; a flag whose value is None
/// is left out. A new server flag is one line here.
fn server_args(a: &InstallArgs, data: &Path) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("--data", Some(data.display().to_string())),
        ("--http", Some(a.http.to_string())),
        ("--https", a.https.map(|x| x.to_string())),
        ("--api", Some(a.api.to_string())),
        ("--task-user", a.task_user.clone()),
    ]
}

/// The unit. Each line says why in the comment above it where the reason is
/// not its name.
fn unit_file(
    user: &str,
    group: &str,
    server_is_root: bool,
    bin: &Path,
    data: &Path,
    args: &[(&'static str, Option<String>)],
) -> Result<String> {
    let mut exec = vec![unit_word(&path_str(bin)?, true), "server".to_string()];
    for (flag, value) in args {
        if let Some(v) = value {
            exec.push(flag.to_string());
            exec.push(unit_word(v, true));
        }
    }
    let caps = if server_is_root { CAPS_AS_ROOT } else { CAPS_AS_USER };
    let data_env = unit_word(&format!("WHARF_DATA={}", path_str(data)?), false);
    Ok(format!(
        "# Written by `wharf install`; `wharf uninstall` removes it.\n\
         [Unit]\n\
         Description=wharf: runs web apps (tasks, proxy, deploys)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         User={user}\n\
         Group={group}\n\
         Environment={data_env}\n\
         ExecStart={exec}\n\
         # Tasks outlive a crashed server and are re-adopted by the next one; a\n\
         # stopping server stops its tasks itself.\n\
         KillMode=process\n\
         # The server makes a cgroup per task (CPU and memory limits) in its own.\n\
         Delegate=yes\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         # Ports 80 and 443 without root; every capability not named below is\n\
         # dropped, root's too (a root server keeps what running tasks as\n\
         # another user takes).\n\
         AmbientCapabilities=CAP_NET_BIND_SERVICE\n\
         CapabilityBoundingSet={caps}\n\
         # One per client connection and per task pipe.\n\
         LimitNOFILE=1048576\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exec = exec.join(" "),
        caps = caps.join(" "),
    ))
}

/// One word of a unit line: specifiers (`%`) escaped, and in a command line
/// variables (`$`) too (`Environment=` expands none); quoted when it holds
/// spaces or quotes.
fn unit_word(s: &str, command: bool) -> String {
    let mut escaped = s.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%");
    if command {
        escaped = escaped.replace('$', "$$");
    }
    if escaped.is_empty() || escaped.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '\\') {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// A path as unit text: UTF-8 without control characters (a newline would
/// start a new unit line).
fn path_str(p: &Path) -> Result<String> {
    let s = p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))?;
    if s.chars().any(char::is_control) {
        bail!("{s:?} holds a control character");
    }
    Ok(s.to_string())
}

/// The data directory a unit names in `Environment=WHARF_DATA=...`.
fn unit_data_dir(unit: &str) -> Option<PathBuf> {
    unit.lines().find_map(|l| {
        let v = l.strip_prefix("Environment=")?.trim().trim_matches('"');
        let v = v.strip_prefix("WHARF_DATA=")?;
        Some(PathBuf::from(v.replace("\\\"", "\"").replace("%%", "%").replace("\\\\", "\\")))
    })
}

fn plan_bin(bin: &Path, force: bool) -> Result<Step> {
    let target = bin.display().to_string();
    let me = std::env::current_exe().context("cannot find this program's own path")?;
    if bin.exists() {
        let same_file = bin.canonicalize().ok() == me.canonicalize().ok();
        if same_file || same_contents(&me, bin)? {
            return Ok(Step::new("binary", &target, Action::Unchanged, "already there".into()));
        }
        if !force {
            bail!(
                "{target} exists and is not this wharf ({})\n  hint: --force replaces it, or --bin PATH installs elsewhere",
                me.display()
            );
        }
        return Ok(Step::new("binary", &target, Action::Replaced, format!("from {}", me.display())));
    }
    Ok(Step::new("binary", &target, Action::Created, format!("copied from {}", me.display())))
}

fn plan_data(data: &Path, account: Option<&Account>, user: &str) -> Result<Step> {
    let target = data.display().to_string();
    let m = match fs::metadata(data) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Step::new("data", &target, Action::Created, format!("mode {DATA_MODE:04o}, owned by {user}")));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {target}")),
    };
    if !m.is_dir() {
        bail!("{target} exists and is not a directory\n  hint: --data DIR picks another data directory");
    }
    let owner_ok = account.is_some_and(|acc| acc.uid == m.uid());
    // Group write, or others reading or writing, is too open; others passing
    // through (0711) is the server's own opening for the task user.
    let mode = m.permissions().mode() & 0o7777;
    let mode_ok = mode & 0o026 == 0;
    if owner_ok && mode_ok {
        return Ok(Step::new("data", &target, Action::Unchanged, format!("mode {mode:04o}, owned by {user}")));
    }
    if !owner_ok && !is_root() && account.is_some() {
        bail!(
            "{target} belongs to uid {}, and only root can give it to `{user}`\n  hint: run `wharf install` as root",
            m.uid()
        );
    }
    Ok(Step::new(
        "data",
        &target,
        Action::Fixed,
        format!("was mode {mode:04o}, uid {}; now mode {DATA_MODE:04o}, owned by {user}", m.uid()),
    ))
}

fn plan_unit(path: &Path, unit: &str, force: bool) -> Result<Step> {
    let target = path.display().to_string();
    match read_bounded(path)? {
        None => Ok(Step::new("unit", &target, Action::Created, String::new())),
        Some(old) if old == unit => Ok(Step::new("unit", &target, Action::Unchanged, "as asked".into())),
        Some(_) if force => Ok(Step::new("unit", &target, Action::Replaced, "it differed".into())),
        Some(old) => bail!(
            "{target} differs from the unit this install writes:\n{}  hint: --force replaces it (a running server \
             takes it at its next start)",
            line_diff(&old, unit)
        ),
    }
}

fn write_bin(bin: &Path) -> Result<()> {
    let me = std::env::current_exe()?;
    let mut bytes = Vec::new();
    fs::File::open(&me)?.read_to_end(&mut bytes).with_context(|| format!("cannot read {}", me.display()))?;
    write_atomic(bin, &bytes, BIN_MODE)
}

fn write_data(data: &Path, acc: &Account) -> Result<()> {
    if !data.exists() {
        if let Some(parent) = data.parent() {
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::DirBuilder::new()
            .mode(DATA_MODE)
            .create(data)
            .with_context(|| format!("cannot create {}", data.display()))?;
    }
    let m = fs::metadata(data)?;
    if m.uid() != acc.uid || m.gid() != acc.gid {
        std::os::unix::fs::chown(data, Some(acc.uid), Some(acc.gid))
            .with_context(|| format!("cannot give {} to {}", data.display(), acc.name))?;
    }
    fs::set_permissions(data, fs::Permissions::from_mode(DATA_MODE))
        .with_context(|| format!("cannot set the mode of {}", data.display()))?;
    Ok(())
}

/// Writes beside `path` and renames over it, so a reader never sees half a
/// file (and a running binary is replaced, not overwritten).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().with_context(|| format!("{} has no directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.wharf-install"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Refuses to delete a directory that is not a stopped server's data.
fn check_purgeable(data: &Path) -> Result<()> {
    let target = data.display();
    if data.parent().is_none() {
        bail!("refusing to delete {target}");
    }
    let mut entries = fs::read_dir(data).with_context(|| format!("cannot read {target}"))?;
    let empty = entries.next().is_none();
    let looks_like_data = ["token", "store.redb", "store.id", "server.lock"].iter().any(|f| data.join(f).exists());
    if !empty && !looks_like_data {
        bail!("refusing to delete {target}: it is not a wharf data directory (no token, store or server.lock)");
    }
    if let Ok(f) = fs::OpenOptions::new().write(true).open(data.join("server.lock")) {
        if let Err(std::fs::TryLockError::WouldBlock) = f.try_lock() {
            bail!("refusing to delete {target}: a wharf server is running on it\n  hint: stop it first (systemctl stop wharf)");
        }
    }
    Ok(())
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let (ma, mb) = (fs::metadata(a)?, fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// A file's text, None when it does not exist; refused beyond MAX_UNIT_BYTES.
fn read_bounded(path: &Path) -> Result<Option<String>> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut text = String::new();
    f.take(MAX_UNIT_BYTES.saturating_add(1))
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() as u64 > MAX_UNIT_BYTES {
        bail!("{} is larger than {MAX_UNIT_BYTES} bytes: not a unit wharf wrote", path.display());
    }
    Ok(Some(text))
}

/// The lines only in `old` (`-`) and only in `new` (`+`), in order.
fn line_diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // Longest common subsequence, from the end (units are a few dozen lines;
    // read_bounded caps them).
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] =
                if a[i] == b[j] { lcs[i + 1][j + 1].saturating_add(1) } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("  - {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("  + {}\n", b[j]));
            j += 1;
        }
    }
    out
}

fn print_report(what: &str, r: &Report, json: bool) -> Result<()> {
    if json {
        return print_json(r);
    }
    let would = if r.dry_run { " (dry run: nothing changed)" } else { "" };
    println!("wharf {what}{would}:");
    for s in &r.steps {
        let action = match (s.action, r.dry_run) {
            (Action::Created, true) => "would create",
            (Action::Replaced, true) => "would replace",
            (Action::Fixed, true) => "would fix",
            (Action::Removed, true) => "would remove",
            (Action::Created, false) if s.step == "binary" => "copied",
            (Action::Created, false) => "created",
            (Action::Replaced, false) => "replaced",
            (Action::Fixed, false) => "fixed",
            (Action::Removed, false) => "removed",
            (Action::Unchanged, _) => "unchanged",
            (Action::Absent, _) => "absent",
            (Action::Kept, _) => "kept",
        };
        let detail = if s.detail.is_empty() { String::new() } else { format!(" ({})", s.detail) };
        println!("  {:<7} {:<14} {}{detail}", s.step, action, s.target);
    }
    if !r.changed {
        println!("nothing to change: already as asked");
    }
    for cmd in &r.ran {
        println!("ran: {cmd}");
    }
    for w in &r.warnings {
        println!("note: {w}");
    }
    if !r.next.is_empty() {
        println!("next, as root where systemd runs:");
        for n in &r.next {
            println!("  {n}");
        }
    }
    Ok(())
}

/// A user or group name as useradd takes it; anything else could inject a
/// unit line.
fn check_name(flag: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        bail!("{flag} {name:?}: not a user name (lowercase letters, digits, `_`, `-`; at most 32)");
    }
    Ok(())
}

fn absolute(flag: &str, p: PathBuf) -> Result<PathBuf> {
    let abs = std::path::absolute(&p).with_context(|| format!("{flag} {}: not a usable path", p.display()))?;
    path_str(&abs).with_context(|| flag.to_string())?;
    Ok(abs)
}

fn useradd_args(user: &str) -> [&str; 5] {
    ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]
}

fn useradd_line(user: &str) -> String {
    format!("useradd {}", useradd_args(user).join(" "))
}

/// The account named `name`, through `id` (which asks NSS, as the server's
/// own lookup does); None when there is none.
fn lookup(name: &str) -> Result<Option<Account>> {
    let id = |flag: &str| -> Result<Option<String>> {
        let out = Command::new("id").args([flag, "--", name]).output().context("cannot run `id`")?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    };
    let Some(uid) = id("-u")? else { return Ok(None) };
    let (Some(gid), Some(group)) = (id("-g")?, id("-gn")?) else { return Ok(None) };
    Ok(Some(Account {
        name: name.to_string(),
        uid: uid.parse().with_context(|| format!("`id -u {name}` said {uid:?}"))?,
        gid: gid.parse().with_context(|| format!("`id -g {name}` said {gid:?}"))?,
        group,
    }))
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

#[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn is_root() -> bool {
    euid() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_words_escape_specifiers_variables_and_spaces() {
        assert_eq!(unit_word("/usr/local/bin/wharf", true), "/usr/local/bin/wharf");
        assert_eq!(unit_word("/a b/%i$X", true), "\"/a b/%%i$$X\"");
        assert_eq!(unit_word("WHARF_DATA=/a/$X", false), "WHARF_DATA=/a/$X");
        assert_eq!(unit_word("a\"b", true), "\"a\\\"b\"");
    }

    #[test]
    fn the_data_directory_is_read_back_from_a_unit() {
        let unit = "[Service]\nEnvironment=\"WHARF_DATA=/srv/my data/100%%\"\n";
        assert_eq!(unit_data_dir(unit), Some(PathBuf::from("/srv/my data/100%")));
        assert_eq!(unit_data_dir("Environment=WHARF_DATA=/var/lib/wharf\n"), Some(PathBuf::from("/var/lib/wharf")));
    }

    #[test]
    fn the_diff_shows_only_changed_lines() {
        let d = line_diff("a\nb\nc\n", "a\nB\nc\n");
        assert_eq!(d, "  - b\n  + B\n");
    }

    #[test]
    fn names_that_could_inject_unit_lines_are_refused() {
        assert!(check_name("--user", "wharf").is_ok());
        assert!(check_name("--user", "_svc-1").is_ok());
        for bad in ["", "Root", "a b", "x\nExecStartPre=/bin/sh", "-x", &"a".repeat(33)] {
            assert!(check_name("--user", bad).is_err(), "{bad:?}");
        }
    }
}
