//! cgroup limits, OOM detection, usage accounting, and running without cgroups.

mod common;

use std::time::Duration;

use common::*;
use wharf_runtime::{Driver, DriverEvent, ExitInfo, LimitsSupport, ProcessDriver, ProcessDriverOptions};

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_kills_and_reports_oom() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    let mut s =
        one_off("hog", vec!["python3".into(), "-c".into(), "x = b'a' * (200 * 1024 * 1024); print('survived')".into()]);
    s.memory_bytes = Some(64 * MIB);
    d.start(s).await.unwrap();
    match d.limits() {
        LimitsSupport::None { reason } => {
            let ev =
                expect_event(&mut events, "LimitsUnavailable", |e| matches!(e, DriverEvent::LimitsUnavailable { .. }))
                    .await;
            assert_eq!(ev, DriverEvent::LimitsUnavailable { reason });
            d.wait("hog").await.unwrap();
        }
        _ => {
            assert_eq!(d.wait("hog").await.unwrap(), ExitInfo::Signal(libc::SIGKILL));
            expect_event(&mut events, "OutOfMemory", |e| {
                matches!(e, DriverEvent::OutOfMemory { task, limit_bytes } if task == "hog" && *limit_bytes == 64 * MIB)
            })
            .await;
            assert!(d.task("hog").unwrap().oom_kills >= 1);
            assert!(h.sink.text("hog", wharf_runtime::OutputStream::Stdout).is_empty());
        }
    }
    d.remove("hog").await.unwrap();
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_of_a_child_is_reported_while_the_task_runs() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    // The hog is a child: the task's main process outlives it.
    let hog = "python3 -c \"x = b'a' * (200 * 1024 * 1024)\"; echo \"hog $?\"; exec sleep 1000";
    let mut s = spec("parent", sh(hog));
    s.memory_bytes = Some(64 * MIB);
    d.start(s).await.unwrap();
    if let LimitsSupport::None { .. } = d.limits() {
        d.stop("parent").await.unwrap();
        d.shutdown().await;
        return;
    }
    // Wait long enough for the hog to be killed first (a notice, not the exit, must say so).
    h.sink.wait_stdout("parent", "the hog's end", |l| l.iter().any(|l| l.starts_with("hog "))).await;
    assert_eq!(h.sink.text("parent", wharf_runtime::OutputStream::Stdout), vec!["hog 137"], "killed by SIGKILL");
    expect_event(
        &mut events,
        "OutOfMemory",
        |e| matches!(e, DriverEvent::OutOfMemory { task, limit_bytes } if task == "parent" && *limit_bytes == 64 * MIB),
    )
    .await;
    let st = d.task("parent").unwrap();
    assert_eq!(st.state, wharf_runtime::TaskState::Running, "the main process lives on");
    assert!(st.oom_kills >= 1);
    d.stop("parent").await.unwrap();
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_caps_a_busy_loop() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    let mut s = spec("busy", sh("while :; do :; done"));
    s.cpu_units = Some(256);
    let pid = d.start(s).await.unwrap().pid.unwrap();
    if let LimitsSupport::None { .. } = d.limits() {
        expect_event(&mut events, "LimitsUnavailable", |e| matches!(e, DriverEvent::LimitsUnavailable { .. })).await;
        d.stop("busy").await.unwrap();
        return;
    }
    // The process runs in the task's cgroup.
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let suffix = format!("/wharf-{}/busy", d.driver_id());
    assert!(cg.lines().any(|l| l.ends_with(&suffix)), "{cg}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let u0 = d.usage("busy").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let u1 = d.usage("busy").unwrap();
    let wall = u1.sampled_at.duration_since(u0.sampled_at).unwrap();
    let share = (u1.cpu_nanos - u0.cpu_nanos) as f64 / wall.as_nanos() as f64;
    eprintln!("cpu share with cpu=256: {:.1}%", share * 100.0);
    assert!(share > 0.05 && share < 0.5, "a task limited to 256/1024 of a core used {:.0}% of one", share * 100.0);
    assert!(u1.memory_bytes > 0);

    d.stop("busy").await.unwrap();
    assert!(d.usage("busy").is_none());
    // The task's cgroup directories are gone.
    for line in cg.lines().filter(|l| l.ends_with(&suffix)) {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let dir =
            if ctrls.is_empty() { format!("/sys/fs/cgroup{path}") } else { format!("/sys/fs/cgroup/{ctrls}{path}") };
        assert!(!std::path::Path::new(&dir).exists(), "{dir} still exists");
    }
    h.assert_clean().await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cgroups_tasks_run_unlimited_and_say_so_once() {
    let h = Harness::new();
    let d =
        ProcessDriver::with_options(h.state_dir(), h.sink.clone(), ProcessDriverOptions::default().use_cgroups(false))
            .unwrap();
    assert!(matches!(d.limits(), LimitsSupport::None { .. }));
    let mut events = d.subscribe();
    let mut s = spec("a", sh("while :; do :; done"));
    s.cpu_units = Some(256);
    s.memory_bytes = Some(64 * MIB);
    let pid = d.start(s).await.unwrap().pid.unwrap();
    d.start(spec("b", vec!["sleep".into(), "1000".into()])).await.unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(!cg.contains("wharf-"), "{cg}");

    // Usage comes from /proc: the process group's CPU time and RSS.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let u0 = d.usage("a").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let u1 = d.usage("a").unwrap();
    assert!(u1.cpu_nanos > u0.cpu_nanos, "{u0:?} {u1:?}");
    assert!(u1.memory_bytes > 0);

    d.shutdown().await;
    let unavailable: Vec<_> =
        drain_events(&mut events).into_iter().filter(|e| matches!(e, DriverEvent::LimitsUnavailable { .. })).collect();
    assert_eq!(unavailable.len(), 1, "{unavailable:?}");
    h.assert_clean().await;
}
