//! Surviving the server: re-adoption, restarts of tasks that died meanwhile,
//! orphans, and a real `kill -9` of a server process.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use wharf_runtime::{Driver, DriverError, DriverEvent, OutputStream, ProcessDriver, TaskState};

const TICKER: &str = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done";

fn ticks(lines: &[String]) -> Vec<u64> {
    lines.iter().filter_map(|l| l.strip_prefix("tick ")?.parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_driver_adopts_running_tasks() {
    let h = Harness::new();
    let a = h.driver();
    let svc_pid = a.start(spec("svc", sh(TICKER))).await.unwrap().pid.unwrap();
    let job_pid = a.start(one_off("job", vec!["sleep".into(), "1000".into()])).await.unwrap().pid.unwrap();
    h.sink.wait_stdout("svc", "a few ticks", |l| ticks(l).len() >= 5).await;
    // A second server can't share the state dir.
    assert!(matches!(ProcessDriver::new(h.state_dir(), h.sink.clone()), Err(DriverError::Locked { .. })));
    a.abandon().await;
    let seen_by_a = ticks(&h.sink.text("svc", OutputStream::Stdout));
    // The task keeps running (and writing) while no server watches it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!gone(svc_pid) && !gone(job_pid));

    let sink_b = Arc::new(Sink::default());
    let b = ProcessDriver::new(h.state_dir(), sink_b.clone()).unwrap();
    let mut events = b.subscribe();
    let report = b.recover().await.unwrap();
    assert_eq!(report.adopted.len(), 2, "{report:?}");
    assert!(report.restarted.is_empty() && report.forgotten.is_empty());
    assert!(report.orphans_killed.is_empty(), "{report:?}");
    let adopted: BTreeSet<(String, u32)> = drain_events(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            DriverEvent::Adopted { task, pid } => Some((task, pid)),
            _ => None,
        })
        .collect();
    assert_eq!(adopted, BTreeSet::from([("job".to_string(), job_pid), ("svc".to_string(), svc_pid)]));
    let st = b.task("svc").unwrap();
    assert!(st.adopted);
    assert_eq!(st.state, TaskState::Running);
    assert_eq!(st.pid, Some(svc_pid));

    // Output written after A died reaches B, and nothing is lost in between.
    let last_a = *seen_by_a.last().unwrap();
    sink_b.wait_stdout("svc", "ticks after the hand-over", |l| ticks(l).last().is_some_and(|&t| t > last_a + 10)).await;
    let mut all: BTreeSet<u64> = seen_by_a.into_iter().collect();
    all.extend(ticks(&sink_b.text("svc", OutputStream::Stdout)));
    let max = *all.iter().max().unwrap();
    let missing: Vec<u64> = (1..=max).filter(|t| !all.contains(t)).collect();
    assert!(missing.is_empty(), "lost lines: {missing:?}");

    // B restarts an adopted task that dies.
    kill(svc_pid, libc::SIGKILL);
    expect_event(
        &mut events,
        "Exited",
        |e| matches!(e, DriverEvent::Exited { task, restart_in: Some(_), .. } if task == "svc"),
    )
    .await;
    let ev =
        expect_event(&mut events, "Started", |e| matches!(e, DriverEvent::Started { task, .. } if task == "svc")).await;
    let DriverEvent::Started { pid: new_pid, .. } = ev else { unreachable!() };
    assert_ne!(new_pid, svc_pid);
    assert!(!b.task("svc").unwrap().adopted);

    // And B can stop what it adopted.
    b.stop("job").await.unwrap();
    wait_gone(job_pid).await;
    b.stop("svc").await.unwrap();
    assert!(h.task_dirs().is_empty());
    h.assert_clean().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_that_died_meanwhile_are_restarted_or_forgotten() {
    let h = Harness::new();
    let a = h.driver();
    let svc = a.start(spec("svc", vec!["sleep".into(), "1000".into()])).await.unwrap().pid.unwrap();
    let job = a.start(one_off("job", vec!["sleep".into(), "1000".into()])).await.unwrap().pid.unwrap();
    a.abandon().await;
    kill(svc, libc::SIGKILL);
    kill(job, libc::SIGKILL);
    wait_gone(svc).await;
    wait_gone(job).await;

    let b = h.driver();
    let mut events = b.subscribe();
    let report = b.recover().await.unwrap();
    assert_eq!(report.restarted, vec!["svc".to_string()]);
    assert_eq!(report.forgotten.len(), 1);
    assert_eq!(report.forgotten[0].task, "job");
    assert!(report.adopted.is_empty());
    expect_event(
        &mut events,
        "Exited",
        |e| matches!(e, DriverEvent::Exited { task, restart_in: Some(_), crashes: 1, .. } if task == "svc"),
    )
    .await;
    expect_event(
        &mut events,
        "Started",
        |e| matches!(e, DriverEvent::Started { task, attempt: 2, .. } if task == "svc"),
    )
    .await;
    assert_eq!(b.task("svc").unwrap().state, TaskState::Running);
    assert!(b.task("job").is_none());
    assert_eq!(h.task_dirs(), vec!["svc".to_string()]);
    b.shutdown().await;
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_kills_orphans() {
    let h = Harness::new();
    let a = h.driver();
    // A task whose state is lost (its directory was removed).
    let lost = a.start(spec("lost", sh("sleep 1000 & sleep 1000"))).await.unwrap().pid.unwrap();
    a.abandon().await;
    std::fs::remove_dir_all(h.state_dir().join("lost")).unwrap();

    let b = h.driver();
    // A process with our driver id that no state file knows.
    let mut ghost = std::process::Command::new("sleep")
        .arg("1000")
        .env("WHARF_DRIVER", b.driver_id())
        .env("WHARF_TASK", "ghost")
        .process_group(0)
        .spawn()
        .unwrap();
    // And one of another driver, which must be left alone.
    let mut stranger = std::process::Command::new("sleep")
        .arg("1000")
        .env("WHARF_DRIVER", "someoneelse")
        .env("WHARF_TASK", "ghost")
        .spawn()
        .unwrap();

    let mut events = b.subscribe();
    let report = b.recover().await.unwrap();
    let killed: BTreeSet<(String, u32)> = report.orphans_killed.iter().map(|o| (o.task.clone(), o.pid)).collect();
    assert!(killed.contains(&("ghost".to_string(), ghost.id())), "{report:?}");
    assert!(killed.contains(&("lost".to_string(), lost)), "{report:?}");
    expect_event(
        &mut events,
        "OrphanKilled",
        |e| matches!(e, DriverEvent::OrphanKilled { task, .. } if task == "ghost"),
    )
    .await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(ghost.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(report.adopted.is_empty() && report.restarted.is_empty());
    h.assert_clean().await;
    assert_eq!(stranger.try_wait().unwrap(), None, "other drivers' processes live");
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    b.shutdown().await;
}

/// Not a test on its own: the server process that `a_killed_server_is_replaced`
/// starts and kills with SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of a_killed_server_is_replaced"]
async fn crash_helper() {
    let Ok(dir) = std::env::var("WHARF_CRASH_HELPER_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let d = ProcessDriver::new(dir.join("tasks"), Arc::new(Sink::default())).unwrap();
    let pid = d.start(spec("svc", sh(TICKER))).await.unwrap().pid.unwrap();
    std::fs::write(dir.join("ready"), pid.to_string()).unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_replaced() {
    let h = Harness::new();
    let server = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_helper", "--test-threads", "1"])
        .env("WHARF_CRASH_HELPER_DIR", h.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(server);
    let ready = h.dir.path().join("ready");
    let deadline = Instant::now() + WAIT;
    let pid: u32 = loop {
        if let Ok(s) = std::fs::read_to_string(&ready) {
            if let Ok(pid) = s.parse() {
                break pid;
            }
        }
        assert!(Instant::now() < deadline, "the helper server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // kill -9 the server.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!gone(pid), "the task survives its server");

    let b = h.driver();
    let report = b.recover().await.unwrap();
    assert_eq!(report.adopted, vec!["svc".to_string()], "{report:?}");
    assert_eq!(b.task("svc").unwrap().pid, Some(pid));
    // Output the task wrote while no server ran is delivered; ticks go on.
    h.sink.wait_stdout("svc", "ticks", |l| ticks(l).len() >= 10).await;
    b.stop("svc").await.unwrap();
    wait_gone(pid).await;
    h.assert_clean().await;
    b.shutdown().await;
}
