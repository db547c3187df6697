//! Output, environment and spawn errors.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use wharf_runtime::{Driver, DriverError, DriverEvent, ExitInfo, OutputStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_reaches_the_sink_line_by_line() {
    let h = Harness::new();
    let d = h.driver();
    let script = r#"
        printf 'out1\nout2\r\n'
        printf 'err1\n' >&2
        python3 -c "import sys; sys.stdout.write('x' * 40000 + '\n')"
        printf '\377\376raw\n'
        printf 'partial'
    "#;
    d.start(one_off("out", sh(script))).await.unwrap();
    assert_eq!(d.wait("out").await.unwrap(), ExitInfo::Code(0));

    let out = h.sink.lines("out", OutputStream::Stdout);
    let marker = "…[cut]".as_bytes();
    assert_eq!(out[0], b"out1");
    assert_eq!(out[1], b"out2", "CRLF is stripped");
    // The 40000-byte line arrives in 16 KiB pieces, all but the last marked.
    assert_eq!(out[2].len(), 16 * 1024 + marker.len());
    assert!(out[2].ends_with(marker));
    assert_eq!(out[3].len(), 16 * 1024 + marker.len());
    assert_eq!(out[4], vec![b'x'; 40000 - 2 * 16 * 1024]);
    assert_eq!(out[5], b"\xff\xferaw", "bytes are passed as they are");
    assert_eq!(out[6], b"partial", "a partial last line is flushed at exit");
    assert_eq!(out.len(), 7);
    assert_eq!(h.sink.text("out", OutputStream::Stderr), vec!["err1"]);

    d.remove("out").await.unwrap();
    assert!(h.task_dirs().is_empty());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_line_is_flushed_after_a_second_while_running() {
    let h = Harness::new();
    let d = h.driver();
    d.start(spec("p", sh("printf 'no newline yet'; exec sleep 1000"))).await.unwrap();
    h.sink.wait_stdout("p", "the partial line", |l| l == ["no newline yet"]).await;
    d.stop("p").await.unwrap();
    h.assert_clean().await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_is_clean_and_path_from_the_spec_is_used() {
    let h = Harness::new();
    let d = h.driver();
    let bin = h.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let tool = bin.join("mytool");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho \"task=$WHARF_TASK\"\necho \"driver=$WHARF_DRIVER\"\necho \"foo=$FOO\"\n\
         echo \"cargo=${CARGO_MANIFEST_DIR:-unset}\"\necho \"pwd=$(pwd)\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut s = one_off("env-task", vec!["mytool".into()]);
    s.workdir = h.dir.path().to_path_buf();
    s.env.insert("FOO".into(), "bar".into());
    s.env.insert("PATH".into(), format!("{}:/usr/bin:/bin", bin.display()));
    s.env.insert("WHARF_DRIVER".into(), "spoofed".into());
    d.start(s).await.unwrap();
    assert_eq!(d.wait("env-task").await.unwrap(), ExitInfo::Code(0));
    let out = h.sink.text("env-task", OutputStream::Stdout);
    assert_eq!(
        out,
        vec![
            "task=env-task".to_string(),
            format!("driver={}", d.driver_id()),
            "foo=bar".to_string(),
            // The server's environment is not passed on (cargo sets this one).
            "cargo=unset".to_string(),
            format!("pwd={}", h.dir.path().display()),
        ]
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_comes_from_the_spec_in_env_and_arguments() {
    let h = Harness::new();
    let d = h.driver();
    let mut s =
        one_off("port-task", sh("echo \"env=$PORT arg=$1\"").into_iter().chain(["x".into(), "$PORT".into()]).collect());
    s.port = Some(21_987);
    // The typed port wins over a stale text one.
    s.env.insert("PORT".into(), "1".into());
    d.start(s).await.unwrap();
    assert_eq!(d.wait("port-task").await.unwrap(), ExitInfo::Code(0));
    assert_eq!(h.sink.text("port-task", OutputStream::Stdout), vec!["env=21987 arg=21987".to_string()]);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_binary_is_a_clear_error() {
    let h = Harness::new();
    let d = h.driver();
    let err = d.start(spec("node", vec!["nodee".into(), "server.js".into()])).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DriverError::Spawn { .. }), "{err:?}");
    assert!(msg.contains("cannot start `nodee`"), "{msg}");
    assert!(msg.contains("No such file or directory (os error 2)"), "{msg}");
    assert!(msg.contains("is it installed and on the PATH"), "{msg}");
    assert!(msg.contains("/tmp"), "the workdir is named: {msg}");
    assert!(d.tasks().is_empty());
    assert!(h.task_dirs().is_empty());

    let mut s = spec("wd", vec!["true".into()]);
    s.workdir = "/nonexistent/app".into();
    let err = d.start(s).await.unwrap_err();
    assert!(err.to_string().contains("working directory /nonexistent/app does not exist"), "{err}");

    let mut s = spec("rel", vec!["true".into()]);
    s.workdir = "relative".into();
    assert!(matches!(d.start(s).await.unwrap_err(), DriverError::InvalidSpec { .. }));
    assert!(h.task_dirs().is_empty());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_unknown_ids() {
    let h = Harness::new();
    let d = h.driver();
    let mut events = d.subscribe();
    let st = d.start(spec("dup", vec!["sleep".into(), "1000".into()])).await.unwrap();
    let pid = st.pid.unwrap();
    expect_event(
        &mut events,
        "Started",
        |e| matches!(e, DriverEvent::Started { task, pid: p, attempt: 1 } if task == "dup" && *p == pid),
    )
    .await;
    assert!(matches!(d.start(spec("dup", vec!["true".into()])).await.unwrap_err(), DriverError::AlreadyExists { .. }));
    assert!(matches!(d.stop("nope").await.unwrap_err(), DriverError::NotFound { .. }));
    assert!(matches!(d.remove("dup").await.unwrap_err(), DriverError::NotExited { .. }));
    assert!(d.task("dup").unwrap().pid == Some(pid));
    d.stop("dup").await.unwrap();
    assert!(d.task("dup").is_none());
    h.assert_clean().await;
    d.shutdown().await;
}

/// Stands for the server's sealing: the "sealed" text is the value reversed.
#[derive(Debug)]
struct Reverse;

impl wharf_runtime::EnvOpener for Reverse {
    fn open(&self, task: &str, var: &str, sealed: &str) -> Result<String, String> {
        match sealed.strip_prefix("sealed:") {
            Some(s) => Ok(s.chars().rev().collect()),
            None => Err(format!("{task}/{var} is not sealed")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_variables_are_opened_for_the_process_only() {
    let h = Harness::new();
    let options = wharf_runtime::ProcessDriverOptions::default().env_opener(std::sync::Arc::new(Reverse));
    let d = wharf_runtime::ProcessDriver::with_options(h.state_dir(), h.sink.clone(), options).unwrap();
    let mut s = one_off("sealed", sh("echo \"got $TOKEN\""));
    s.env.insert("TOKEN".into(), "sealed:terces-tcnitsid".into());
    s.sealed_env.insert("TOKEN".into());
    d.start(s).await.unwrap();
    assert_eq!(d.wait("sealed").await.unwrap(), ExitInfo::Code(0));
    assert_eq!(h.sink.text("sealed", OutputStream::Stdout), vec!["got distinct-secret"]);
    let saved = std::fs::read_to_string(h.state_dir().join("sealed/task.json")).unwrap();
    assert!(saved.contains("sealed:terces-tcnitsid") && !saved.contains("distinct-secret"), "{saved}");
    d.remove("sealed").await.unwrap();

    // A value that does not open stops the start, naming the variable.
    let mut bad = one_off("bad", sh("true"));
    bad.env.insert("TOKEN".into(), "plain".into());
    bad.sealed_env.insert("TOKEN".into());
    let err = d.start(bad).await.unwrap_err().to_string();
    assert!(err.contains("env `TOKEN`"), "{err}");
    d.shutdown().await;
    drop(d);

    // A driver without an opener refuses such a task.
    let plain = h.driver();
    let mut s = one_off("unsealed", sh("true"));
    s.env.insert("TOKEN".into(), "sealed:x".into());
    s.sealed_env.insert("TOKEN".into());
    assert!(matches!(plain.start(s).await.unwrap_err(), DriverError::InvalidSpec { .. }));
    plain.shutdown().await;
}
