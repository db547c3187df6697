//! A root server runs tasks as an unprivileged user who cannot read the
//! server's secrets: the API token, the store, other tasks' environment.

#![allow(unsafe_code)] // signals, uids and fds through libc

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn tasks_of_a_root_server_cannot_read_its_secrets() {
    if !is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root: this test must run");
        eprintln!("skipping: needs root");
        return;
    }
    let s = Server::start_with(&["--store-snapshot-every", "1s"]);
    let data = s.data.display().to_string();
    // The worker tries each secret by relative and absolute path and says
    // what it could read; then sleeps.
    // `$$` is a literal `$` for the shell (wharf expands `$NAME` itself).
    let script = format!(
        "echo uid=$$(id -u); sleep 2; \
         for f in ../../../token {data}/token {data}/store.redb {data}/store.id {data}/tasks/*/task.json {data}/releases/*/*.tar.gz \
           {data}/snapshots/*.redb {data}/logs/*; do \
           if head -c 1 \"$$f\" >/dev/null 2>&1; then echo READ $$f; else echo denied $$f; fi; done; \
         ls {data}/tasks >/dev/null 2>&1 && echo LISTED tasks; ls {data} >/dev/null 2>&1 && echo LISTED data; \
         exec sleep 1000"
    );
    let toml = format!(
        "app = \"probe\"\n[service.worker]\ncommand = [\"sh\", \"-c\", {script:?}]\nenv = {{ SECRET = \"hunter2\" }}\n"
    );
    let dir = app_dir(&toml);
    s.deploy(dir.path());
    let out = wait_for("the probe's report", LONG, || {
        let out = s.ok(&["logs", "worker", "-n", "100"]);
        (out.contains("uid=") && out.contains("/logs/")).then_some(out)
    });
    assert!(!out.contains("uid=0"), "tasks do not run as root:\n{out}");
    assert!(!out.contains("READ"), "a task read a secret:\n{out}");
    assert!(!out.contains("LISTED"), "a task listed the data directory:\n{out}");
    assert!(out.contains("denied"), "{out}");
    wait_for("a snapshot", LONG, || s.data.join("snapshots").exists().then_some(()));
    for (file, mode) in
        [("token", 0o600), ("store.redb", 0o600), ("tasks", 0o700), ("logs", 0o700), ("snapshots", 0o700)]
    {
        let m = std::fs::metadata(s.data.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{file} is mode {m:o}");
    }
    let task = s.tasks()[0]["id"].as_str().unwrap().to_string();
    let m = std::fs::metadata(s.data.join("tasks").join(&task).join("task.json")).unwrap().permissions().mode();
    assert_eq!(m & 0o077, 0, "task.json (the task's environment) is the server's alone: {:o}", m & 0o777);
}

#[test]
fn a_task_user_that_cannot_reach_the_data_directory_is_refused_with_a_hint() {
    if !is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root: this test must run");
        return;
    }
    let closed = tempfile::tempdir().unwrap();
    // Closed to others: nobody cannot pass.
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut child = std::process::Command::new(WHARF)
        .args(["server", "--api", "127.0.0.1:0", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--internal", "off", "--dns", "off", "--data"])
        .arg(closed.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_for("the server to refuse", LONG, || child.try_wait().unwrap());
    if exited.success() {
        signal(child.id(), libc::SIGKILL);
    }
    assert!(!exited.success(), "a server whose tasks could not reach its data directory started");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("cannot reach") && err.contains("hint:"), "{err}");
}

#[test]
fn a_service_runs_as_its_own_user_and_an_unknown_one_is_refused_at_deploy() {
    if !is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root: this test must run");
        return;
    }
    let s = Server::start_with(&[]);
    let toml = |user: &str| {
        format!(
            "app = \"users\"\n[service.worker]\ncommand = [\"sh\", \"-c\", \"echo uid=$$(id -u) user=$$USER; exec sleep 1000\"]\nuser = \"{user}\"\n"
        )
    };
    let dir = app_dir(&toml("daemon"));
    s.deploy(dir.path());
    let daemon = wharf_uid("daemon");
    let out = wait_for("the worker's report", LONG, || {
        let out = s.ok(&["logs", "worker", "-n", "10"]);
        out.contains("uid=").then_some(out)
    });
    assert!(out.contains(&format!("uid={daemon} user=daemon")), "{out}");

    std::fs::write(dir.path().join("wharf.toml"), toml("no-such-user-here")).unwrap();
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!out.status.success(), "a deploy naming an unknown user is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-user-here") && err.contains("does not exist"), "{err}");
    assert_eq!(s.json(&["status", "--json"])["apps"][0]["services"][0]["revision"], 1, "nothing changed");
}

/// The uid of a system account, from /etc/passwd.
fn wharf_uid(name: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == name).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no user {name}"))
}
