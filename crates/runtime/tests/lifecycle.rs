//! Exits, restarts with backoff, graceful and forced stops, shutdown.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;
use wharf_runtime::{Driver, DriverEvent, ExitInfo, OutputStream, TaskState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_off_exits_with_its_code_and_is_removed() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    d.start(one_off("job", sh("echo working; exit 3"))).await.unwrap();
    assert_eq!(d.wait("job").await.unwrap(), ExitInfo::Code(3));
    let st = d.task("job").unwrap();
    assert_eq!(st.state, TaskState::Exited);
    assert_eq!(st.last_exit, Some(ExitInfo::Code(3)));
    assert_eq!(st.restarts, 0);
    assert_eq!(st.pid, None);
    expect_event(
        &mut events,
        "Exited",
        |e| matches!(e, DriverEvent::Exited { task, exit: ExitInfo::Code(3), restart_in: None, .. } if task == "job"),
    )
    .await;
    assert_eq!(h.sink.text("job", OutputStream::Stdout), vec!["working"]);
    // Waiting again returns the same.
    assert_eq!(d.wait("job").await.unwrap(), ExitInfo::Code(3));
    d.remove("job").await.unwrap();
    assert!(d.task("job").is_none());
    assert!(h.task_dirs().is_empty());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_restarts_with_growing_backoff() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    d.start(spec("crashy", sh("echo run; exit 1"))).await.unwrap();
    let t0 = Instant::now();
    let mut delays = Vec::new();
    for n in 1..=3u32 {
        let ev =
            expect_event(&mut events, "Exited", |e| matches!(e, DriverEvent::Exited { task, .. } if task == "crashy"))
                .await;
        let DriverEvent::Exited { exit, restart_in, crashes, .. } = ev else { unreachable!() };
        assert_eq!(exit, ExitInfo::Code(1));
        assert_eq!(crashes, n);
        delays.push(restart_in.unwrap());
        expect_event(
            &mut events,
            "Started",
            |e| matches!(e, DriverEvent::Started { task, attempt, .. } if task == "crashy" && *attempt == n + 1),
        )
        .await;
    }
    assert_eq!(delays, [100, 200, 400].map(Duration::from_millis).to_vec(), "backoff doubles");
    assert!(t0.elapsed() >= Duration::from_millis(700));
    let st = d.task("crashy").unwrap();
    assert!(st.restarts >= 3, "{st:?}");
    assert!(h.sink.text("crashy", OutputStream::Stdout).len() >= 3);
    // stop() works whether it lands in backoff or during a run.
    d.stop("crashy").await.unwrap();
    expect_event(
        &mut events,
        "Stopped",
        |e| matches!(e, DriverEvent::Stopped { task, forced: false, .. } if task == "crashy"),
    )
    .await;
    h.assert_clean().await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_task_restarts_it() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    let pid = d.start(spec("victim", vec!["sleep".into(), "1000".into()])).await.unwrap().pid.unwrap();
    kill(pid, libc::SIGKILL);
    expect_event(&mut events, "Exited", |e| {
        matches!(e, DriverEvent::Exited { task, exit: ExitInfo::Signal(9), restart_in: Some(r), crashes: 1 }
            if task == "victim" && *r == Duration::from_millis(100))
    })
    .await;
    let ev = expect_event(
        &mut events,
        "Started",
        |e| matches!(e, DriverEvent::Started { task, attempt: 2, .. } if task == "victim"),
    )
    .await;
    let DriverEvent::Started { pid: pid2, .. } = ev else { unreachable!() };
    assert_ne!(pid, pid2);
    let st = d.task("victim").unwrap();
    assert_eq!(st.state, TaskState::Running);
    assert_eq!(st.pid, Some(pid2));
    assert_eq!(st.restarts, 1);
    assert_eq!(st.last_exit, Some(ExitInfo::Signal(9)));

    assert_eq!(d.stop("victim").await.unwrap(), ExitInfo::Signal(libc::SIGTERM));
    expect_event(
        &mut events,
        "Stopped",
        |e| matches!(e, DriverEvent::Stopped { task, exit: ExitInfo::Signal(15), forced: false } if task == "victim"),
    )
    .await;
    h.assert_clean().await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_lets_the_task_finish() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    let script = "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done";
    d.start(spec("polite", sh(script))).await.unwrap();
    h.sink.wait_stdout("polite", "ready", |l| l.contains(&"ready".to_string())).await;
    assert_eq!(d.stop("polite").await.unwrap(), ExitInfo::Code(0));
    expect_event(
        &mut events,
        "Stopped",
        |e| matches!(e, DriverEvent::Stopped { task, exit: ExitInfo::Code(0), forced: false } if task == "polite"),
    )
    .await;
    assert_eq!(
        h.sink.text("polite", OutputStream::Stdout),
        vec!["ready", "bye"],
        "output written while stopping is delivered"
    );
    assert!(d.task("polite").is_none());
    assert!(h.task_dirs().is_empty());
    h.assert_clean().await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_task_that_ignores_sigterm_and_its_children() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    let script = "trap '' TERM; sleep 1000 & echo child=$!; while :; do sleep 0.1; done";
    let mut s = spec("stubborn", sh(script));
    s.stop_timeout = Duration::from_millis(500);
    let pid = d.start(s).await.unwrap().pid.unwrap();
    h.sink.wait_stdout("stubborn", "child pid", |l| !l.is_empty()).await;
    let child: u32 = h.sink.text("stubborn", OutputStream::Stdout)[0].strip_prefix("child=").unwrap().parse().unwrap();
    assert!(!gone(child));
    let t0 = Instant::now();
    assert_eq!(d.stop("stubborn").await.unwrap(), ExitInfo::Signal(libc::SIGKILL));
    assert!(t0.elapsed() >= Duration::from_millis(500));
    expect_event(
        &mut events,
        "Stopped",
        |e| matches!(e, DriverEvent::Stopped { task, exit: ExitInfo::Signal(9), forced: true } if task == "stubborn"),
    )
    .await;
    assert!(gone(pid));
    assert!(gone(child), "the task's child (same group) is gone too");
    h.assert_clean().await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_an_exited_main_process_are_killed() {
    let h = Harness::new();
    let d = h.driver();
    // The main process exits, leaving a background child in its group.
    d.start(one_off("leaky", sh("sleep 1000 & echo child=$!; exit 0"))).await.unwrap();
    assert_eq!(d.wait("leaky").await.unwrap(), ExitInfo::Code(0));
    let child: u32 = h.sink.text("leaky", OutputStream::Stdout)[0].strip_prefix("child=").unwrap().parse().unwrap();
    wait_gone(child).await;
    h.assert_clean().await;
    d.remove("leaky").await.unwrap();
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_when_a_service_is_stopped() {
    let h = Harness::new();
    let d = std::sync::Arc::new(h.driver());
    d.start(spec("svc", vec!["sleep".into(), "1000".into()])).await.unwrap();
    let waiter = {
        let d = d.clone();
        tokio::spawn(async move { d.wait("svc").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    d.stop("svc").await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), ExitInfo::Signal(libc::SIGTERM));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_everything_in_parallel() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    for i in 0..3 {
        // Each takes 600 ms to stop: in parallel, shutdown takes ~600 ms.
        let script = "trap 'sleep 0.6; exit 0' TERM; echo up; while :; do sleep 0.05; done";
        d.start(spec(&format!("s{i}"), sh(script))).await.unwrap();
        h.sink.wait_stdout(&format!("s{i}"), "up", |l| !l.is_empty()).await;
    }
    let t0 = Instant::now();
    d.shutdown().await;
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let stopped: Vec<_> = drain_events(&mut events)
        .into_iter()
        .filter(|e| matches!(e, DriverEvent::Stopped { forced: false, .. }))
        .collect();
    assert_eq!(stopped.len(), 3, "{stopped:?}");
    assert!(d.tasks().is_empty());
    assert!(h.task_dirs().is_empty());
    h.assert_clean().await;
    assert!(matches!(
        d.start(spec("late", vec!["true".into()])).await.unwrap_err(),
        wharf_runtime::DriverError::ShuttingDown
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_backoff_cancels_the_restart() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    d.start(spec("flappy", sh("exit 7"))).await.unwrap();
    // Let the backoff grow to 800 ms, then stop in the middle of it.
    expect_event(
        &mut events,
        "4th Exited",
        |e| matches!(e, DriverEvent::Exited { task, crashes: 4, .. } if task == "flappy"),
    )
    .await;
    assert_eq!(d.task("flappy").unwrap().state, TaskState::Backoff);
    assert_eq!(d.stop("flappy").await.unwrap(), ExitInfo::Code(7));
    // Between the crash and the stop, the pending restart never happened.
    let mut between = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("Stopped in time").unwrap();
        if matches!(&e, DriverEvent::Stopped { task, exit: ExitInfo::Code(7), forced: false } if task == "flappy") {
            break;
        }
        between.push(e);
    }
    assert!(
        !between.iter().any(|e| matches!(e, DriverEvent::Started { .. })),
        "stop waited for a restart: {between:?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let later = drain_events(&mut events);
    assert!(!later.iter().any(|e| matches!(e, DriverEvent::Started { .. })), "no restart after stop: {later:?}");
    assert!(h.task_dirs().is_empty());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_output_is_reclaimed_from_disk() {
    use std::os::unix::fs::MetadataExt;
    let h = Harness::new();
    let d = h.driver();
    // ~4 MiB of output, then the task stays alive (its spool is kept).
    let script = "python3 -c \"import sys; [sys.stdout.write('%08d %s\\n' % (i, 'y' * 90)) for i in range(40000)]\"; \
                  echo done; exec sleep 1000";
    d.start(spec("chatty", sh(script))).await.unwrap();
    h.sink.wait_stdout("chatty", "all output", |l| l.last().is_some_and(|x| x == "done")).await;
    let lines = h.sink.text("chatty", OutputStream::Stdout);
    assert_eq!(lines.len(), 40001);
    assert!(lines[39999].starts_with("00039999 "));
    // Offsets are saved every 100 ms, then the consumed range is punched out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let md = std::fs::metadata(h.state_dir().join("chatty/stdout")).unwrap();
    assert!(md.len() > 4_000_000);
    let on_disk = md.blocks() * 512;
    assert!(on_disk < 1_500_000, "{on_disk} bytes still allocated for a {} byte spool", md.len());
    d.stop("chatty").await.unwrap();
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_restart_is_retried_with_backoff_and_logged() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    let tool = h.dir.path().join("app");
    std::fs::write(&tool, "#!/bin/sh\necho started\nexit 1\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    d.start(spec("gone-bin", vec![tool.display().to_string()])).await.unwrap();
    std::fs::remove_file(&tool).unwrap();
    // The next starts fail: reported as exits with an unknown status,
    // with growing backoff, and the reason goes to the task's stderr.
    expect_event(&mut events, "a failed restart", |e| {
        matches!(e, DriverEvent::Exited { task, exit: ExitInfo::Unknown, restart_in: Some(_), crashes } if task == "gone-bin" && *crashes >= 2)
    })
    .await;
    let err = h.sink.text("gone-bin", OutputStream::Stderr);
    assert!(err.iter().any(|l| l.starts_with("wharf: cannot start") && l.contains("No such file")), "{err:?}");
    d.stop("gone-bin").await.unwrap();
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_reset_after_ten_seconds_of_running() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    let marker = h.dir.path().join("ran-once");
    // Crashes at once the first time, then runs 10.5 s before exiting.
    let script = format!("if [ -e {m} ]; then sleep 10.5; exit 1; else touch {m}; exit 1; fi", m = marker.display());
    d.start(spec("steady", sh(&script))).await.unwrap();
    expect_event(
        &mut events,
        "first crash",
        |e| matches!(e, DriverEvent::Exited { task, crashes: 1, .. } if task == "steady"),
    )
    .await;
    expect_event(
        &mut events,
        "second start",
        |e| matches!(e, DriverEvent::Started { task, attempt: 2, .. } if task == "steady"),
    )
    .await;
    assert_eq!(d.task("steady").unwrap().crashes, 1);
    tokio::time::sleep(Duration::from_millis(10_200)).await;
    assert_eq!(d.task("steady").unwrap().crashes, 0, "reset while running");
    expect_event(&mut events, "exit after a healthy run", |e| {
        matches!(e, DriverEvent::Exited { task, crashes: 1, restart_in: Some(r), .. }
            if task == "steady" && *r == Duration::from_millis(100))
    })
    .await;
    d.stop("steady").await.unwrap();
    d.shutdown().await;
}
