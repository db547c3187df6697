//! `wharf install` / `wharf uninstall` into a tempdir prefix (unit dir,
//! data directory and binary all under it, the server's user the current
//! one so no user is created), the unit checked by `systemd-analyze verify`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::WHARF;

/// A prefix standing for `/`: every path install writes is under it.
struct Prefix {
    tmp: tempfile::TempDir,
    user: String,
}

impl Prefix {
    fn new() -> Prefix {
        let out = Command::new("id").arg("-un").output().unwrap();
        assert!(out.status.success());
        let user = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Prefix { tmp: tempfile::tempdir().unwrap(), user }
    }
    fn unit_dir(&self) -> PathBuf {
        self.tmp.path().join("etc/systemd/system")
    }
    fn unit(&self) -> PathBuf {
        self.unit_dir().join("wharf.service")
    }
    fn data(&self) -> PathBuf {
        self.tmp.path().join("var/lib/wharf")
    }
    fn bin(&self) -> PathBuf {
        self.tmp.path().join("usr/local/bin/wharf")
    }
    /// `wharf install` with the prefix's paths, loopback listeners (unless
    /// `extra` names its own `--http`) and `extra`.
    fn install(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(WHARF);
        cmd.arg("install").arg("--user").arg(&self.user);
        cmd.arg("--unit-dir").arg(self.unit_dir()).arg("--data").arg(self.data()).arg("--bin").arg(self.bin());
        if !extra.contains(&"--http") {
            cmd.args(["--http", "127.0.0.1:8080"]);
        }
        cmd.args(["--api", "127.0.0.1:7878"]).args(extra);
        cmd.env_remove("WHARF_DATA").output().unwrap()
    }
    fn uninstall(&self, extra: &[&str]) -> Output {
        Command::new(WHARF)
            .arg("uninstall")
            .arg("--unit-dir")
            .arg(self.unit_dir())
            .args(extra)
            .env_remove("WHARF_DATA")
            .output()
            .unwrap()
    }
}

fn ok(out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "failed: {text}");
    text
}

fn refused(out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "should have been refused: {text}");
    text
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file under `dir`, with its size and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path(), m.len(), m.mtime(), m.mtime_nsec()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// `systemd-analyze verify` on the unit: a unit systemd would not load, or
/// would load with a line ignored, fails. In CI a missing systemd-analyze
/// fails too; elsewhere it skips with a message.
fn verify(unit: &Path) {
    let out = match Command::new("systemd-analyze").arg("verify").arg(unit).output() {
        Ok(out) => out,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI installs systemd (systemd-analyze): {e}");
            eprintln!("skipping systemd-analyze verify: {e} (apt install systemd)");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // verify exits 0 on a line it ignores (an unknown key, a bad value): its
    // complaint names the unit.
    let about_it: Vec<&str> = stderr.lines().filter(|l| l.contains("wharf.service")).collect();
    assert!(about_it.is_empty(), "systemd-analyze verify complained:\n{stderr}");
}

#[test]
fn install_writes_a_unit_systemd_accepts_the_data_directory_and_the_binary() {
    let p = Prefix::new();
    let text = ok(p.install(&[]));
    assert!(text.contains("systemctl daemon-reload && systemctl enable --now wharf"), "{text}");

    assert_eq!(std::fs::read(p.bin()).unwrap(), std::fs::read(WHARF).unwrap(), "the binary is this wharf");
    assert_eq!(mode(&p.bin()), 0o755);
    assert!(p.data().is_dir());
    assert_eq!(mode(&p.data()), 0o750);
    let uid = std::fs::metadata(p.tmp.path()).unwrap().uid();
    assert_eq!(std::fs::metadata(p.data()).unwrap().uid(), uid, "the data directory is the server user's");
    assert_eq!(mode(&p.unit()), 0o644);

    let unit = std::fs::read_to_string(p.unit()).unwrap();
    let exec = format!(
        "ExecStart={} server --data {} --http 127.0.0.1:8080 --api 127.0.0.1:7878\n",
        p.bin().display(),
        p.data().display()
    );
    for line in [
        exec.as_str(),
        &format!("User={}\n", p.user),
        &format!("Environment=WHARF_DATA={}\n", p.data().display()),
        "KillMode=process\n",
        "Delegate=yes\n",
        "Restart=on-failure\n",
        "RestartSec=2\n",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
        "LimitNOFILE=1048576\n",
        "After=network-online.target\n",
        "Wants=network-online.target\n",
        "WantedBy=multi-user.target\n",
    ] {
        assert!(unit.contains(line), "the unit lacks {line:?}:\n{unit}");
    }
    let caps = unit.lines().find_map(|l| l.strip_prefix("CapabilityBoundingSet=")).expect("a bounding set");
    assert!(caps.split(' ').any(|c| c == "CAP_NET_BIND_SERVICE"), "{caps}");
    // The server's user runs its tasks itself unless it is root: then it
    // keeps what dropping them to another user takes, and nothing as wide
    // as CAP_SYS_ADMIN or CAP_DAC_OVERRIDE.
    let root = p.user == "root";
    assert_eq!(caps.contains("CAP_SETUID"), root, "{caps}");
    assert!(!caps.contains("CAP_SYS_ADMIN") && !caps.contains("CAP_DAC_OVERRIDE"), "{caps}");
    verify(&p.unit());
}

#[test]
fn a_second_install_changes_nothing_and_says_so() {
    let p = Prefix::new();
    ok(p.install(&[]));
    let before = snapshot(p.tmp.path());
    let text = ok(p.install(&[]));
    assert!(text.contains("nothing to change"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&ok(p.install(&["--json"]))).unwrap();
    assert_eq!(json["changed"], false, "{json}");
    assert!(json["steps"].as_array().unwrap().iter().all(|s| s["action"] == "unchanged"), "{json}");
    assert_eq!(snapshot(p.tmp.path()), before, "the second run touched a file");
}

#[test]
fn a_unit_that_differs_is_replaced_only_with_force() {
    let p = Prefix::new();
    ok(p.install(&[]));
    let original = std::fs::read_to_string(p.unit()).unwrap();
    let text = refused(p.install(&["--http", "127.0.0.1:8081"]));
    assert!(text.contains(&p.unit().display().to_string()), "the refusal names the unit: {text}");
    assert!(text.contains("+ ExecStart=") && text.contains("- ExecStart="), "the refusal shows the diff: {text}");
    assert!(text.contains("--force"), "{text}");
    assert_eq!(std::fs::read_to_string(p.unit()).unwrap(), original, "a refused install wrote the unit");

    let text = ok(p.install(&["--http", "127.0.0.1:8081", "--force"]));
    assert!(text.contains("replaced"), "{text}");
    assert!(std::fs::read_to_string(p.unit()).unwrap().contains("--http 127.0.0.1:8081 "));
    verify(&p.unit());

    // A unit edited by hand is not overwritten either.
    let edited = std::fs::read_to_string(p.unit()).unwrap().replace("RestartSec=2", "RestartSec=5");
    std::fs::write(p.unit(), &edited).unwrap();
    let text = refused(p.install(&["--http", "127.0.0.1:8081"]));
    assert!(text.contains("- RestartSec=5") && text.contains("+ RestartSec=2"), "{text}");
    assert_eq!(std::fs::read_to_string(p.unit()).unwrap(), edited);
}

#[test]
fn dry_run_writes_nothing_and_json_says_what_it_would_do() {
    let p = Prefix::new();
    let out = ok(p.install(&["--dry-run", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["changed"], true);
    let action = |step: &str| {
        json["steps"].as_array().unwrap().iter().find(|s| s["step"] == step).unwrap()["action"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(action("user"), "unchanged");
    assert_eq!(action("binary"), "created");
    assert_eq!(action("data"), "created");
    assert_eq!(action("unit"), "created");
    assert!(json["unit"].as_str().unwrap().contains("KillMode=process"), "{json}");
    assert_eq!(json["unit_path"], p.unit().display().to_string());
    assert!(snapshot(p.tmp.path()).is_empty(), "--dry-run wrote {:?}", snapshot(p.tmp.path()));
}

#[test]
fn uninstall_removes_the_unit_and_deletes_data_only_with_purge_and_yes() {
    let p = Prefix::new();
    ok(p.install(&[]));
    std::fs::write(p.data().join("token"), "secret").unwrap();

    let text = refused(p.uninstall(&["--purge"]));
    assert!(text.contains("--yes"), "{text}");
    assert!(p.unit().exists() && p.data().join("token").exists(), "a refused uninstall removed something");

    let text = ok(p.uninstall(&["--dry-run"]));
    assert!(text.contains("would remove"), "{text}");
    assert!(p.unit().exists());

    let text = ok(p.uninstall(&[]));
    assert!(!p.unit().exists(), "the unit is gone: {text}");
    assert!(p.data().join("token").exists(), "without --purge the data is kept");
    assert!(text.contains("kept"), "{text}");
    assert!(p.bin().exists(), "the binary stays");

    let json: serde_json::Value = serde_json::from_str(&ok(p.uninstall(&["--json"]))).unwrap();
    assert_eq!(json["changed"], false, "a second uninstall has nothing to do: {json}");

    // The unit is gone, so --data names the directory to purge.
    let out = Command::new(WHARF)
        .arg("uninstall")
        .arg("--unit-dir")
        .arg(p.unit_dir())
        .arg("--data")
        .arg(p.data())
        .args(["--purge", "--yes"])
        .output()
        .unwrap();
    ok(out);
    assert!(!p.data().exists(), "--purge --yes deletes the data directory");
}

#[test]
fn purge_finds_the_data_directory_in_the_unit_and_leaves_other_directories_alone() {
    let p = Prefix::new();
    ok(p.install(&[]));
    std::fs::write(p.data().join("store.redb"), "x").unwrap();
    ok(p.uninstall(&["--purge", "--yes"]));
    assert!(!p.unit().exists());
    assert!(!p.data().exists(), "the unit's WHARF_DATA was purged");

    // A directory that is not a server's data is never deleted.
    let other = p.tmp.path().join("home");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let out = Command::new(WHARF)
        .arg("uninstall")
        .arg("--unit-dir")
        .arg(p.unit_dir())
        .arg("--data")
        .arg(&other)
        .args(["--purge", "--yes"])
        .output()
        .unwrap();
    let text = refused(out);
    assert!(text.contains("not a wharf data directory"), "{text}");
    assert!(other.join("notes.txt").exists());
}

#[test]
fn only_flags_this_server_has_are_written() {
    let p = Prefix::new();
    let help = Command::new(WHARF).args(["server", "--help"]).output().unwrap();
    let has_https = String::from_utf8_lossy(&help.stdout).contains("--https");
    let out = p.install(&["--https", "127.0.0.1:8443"]);
    if has_https {
        ok(out);
        assert!(std::fs::read_to_string(p.unit()).unwrap().contains(" --https 127.0.0.1:8443"));
        verify(&p.unit());
    } else {
        let text = refused(out);
        assert!(text.contains("no --https flag"), "{text}");
        assert!(!p.unit().exists(), "a refused install wrote the unit");
    }
}

#[test]
fn tasks_run_as_another_user_only_under_a_root_server() {
    let p = Prefix::new();
    if p.user == "root" {
        ok(p.install(&["--task-user", "nobody"]));
        let unit = std::fs::read_to_string(p.unit()).unwrap();
        assert!(unit.contains(" --task-user nobody\n"), "{unit}");
        assert!(unit.contains("CAP_SETUID") && unit.contains("CAP_KILL"), "{unit}");
        verify(&p.unit());
    } else {
        // A server that is not root runs every task as itself: a unit
        // asking otherwise would never start.
        let text = refused(p.install(&["--task-user", "nobody"]));
        assert!(text.contains("--user root"), "{text}");
        assert!(!p.unit().exists());
    }
    let text = refused(p.install(&["--task-user", "no-such-user-here"]));
    assert!(text.contains("no such user"), "{text}");
}
