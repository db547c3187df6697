//! wharf.toml input that used to pass `wharf check` and then fail at run
//! time, hang, or panic: `$PORT` in a command, durations too long for the
//! clock, non-UTF-8 uploads, a FIFO as wharf.toml, a closed stdout.

#![allow(unsafe_code)] // signals, uids and fds through libc

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// POSTs `dir` packed as a release straight to the API, skipping the CLI's
/// own check, as any API client could.
fn post_release(s: &Server, dir: &std::path::Path) -> (u16, serde_json::Value) {
    let archive = wharf_client::pack_dir(dir).unwrap();
    let (status, body) = http_request(&s.api_addr(), "POST", "localhost", "/v1/deploy", Some(&s.token()), &archive)
        .expect("API answers");
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
}

#[test]
fn port_and_braced_variables_in_a_command_are_expanded() {
    let s = Server::start();
    let app = app_dir(
        r#"app = "gun"

[service.api]
command = ["wharf", "demo", "--port", "$PORT", "--name", "a$$b-${WHARF_SERVICE}"]
port = 8080
health = { path = "/health", interval = "1s" }

[route]
"/" = "api"
"#,
    );
    let check = s.wharf(&["check", app.path().to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    s.deploy(app.path());
    let (status, body) = wait_for("the service to answer", LONG, || s.get("localhost", "/version"));
    assert_eq!(status, 200, "{body}");
    // `$$` is a literal `$`; `${WHARF_SERVICE}` comes from the task's environment.
    assert!(body.contains("\"name\":\"a$b-api\""), "{body}");
    // A one-off command is not checked like wharf.toml: its NUL is named as such.
    let run = br#"{"service": "api", "command": ["echo", "a\u0000b"]}"#;
    let head = format!(
        "POST /v1/run HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.token(),
        run.len()
    );
    let answer = raw(&s.api_addr(), &[head.as_bytes(), run].concat(), Duration::from_secs(10));
    assert!((400..500).contains(&status_of(&answer)), "{answer}");
    assert!(answer.contains("argument 1 of the command contains a NUL byte"), "{answer}");
}

#[test]
fn durations_too_long_for_the_clock_are_refused_by_check_and_by_the_server() {
    let s = Server::start();
    for (line, col, setting) in [
        (6, 16, r#"stop_timeout = "18446744073709551615s""#),
        (6, 28, r#"deploy = { drain_timeout = "18446744073709551615s" }"#),
        (6, 46, r#"deploy = { release_pause = false, deadline = "18446744073709551615s" }"#),
    ] {
        let app = app_dir(&format!(
            "app = \"big\"\n\n[service.api]\ncommand = [\"wharf\", \"demo\"]\nport = 8080\n{setting}\n"
        ));
        let check = s.wharf(&["check", app.path().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success());
        assert!(err.contains(&format!("wharf.toml:{line}:{col}: error: ")) && err.contains("hint:"), "{err}");
        let (status, body) = post_release(&s, app.path());
        assert_eq!(status, 422, "{body}");
        let d = &body["error"]["diagnostics"][0];
        assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(line), Some(col)), "{body}");
        assert!(d["message"].as_str().unwrap().contains("must be at most"), "{body}");
    }
    // The server is still whole: a good deploy goes through.
    s.deploy(app_dir(&demo_toml("big", "v1", 1, false)).path());
    assert!(s.stderr().find("panicked").is_none(), "{}", s.stderr());
}

#[test]
fn env_and_routes_that_could_never_work_are_refused_by_check_and_by_the_server() {
    let s = Server::start();
    let big = "x".repeat(200 << 10);
    for (setting, line, col, message) in [
        (r#"env = { SECRET = "abc\u0000def" }"#.to_string(), 6, 18, "contains a NUL byte"),
        (format!("env = {{ BIG = \"{big}\" }}"), 6, 15, "MAX_ARG_STRLEN"),
        (r#"command = ["wharf", "demo", "--port", "$PROT"]"#.to_string(), 5, 40, "`$PROT` is never set"),
        ("[route]\n\"api/\" = \"api\"".to_string(), 7, 1, "reads as host `api`"),
        ("[route]\n\"/static/../admin\" = \"api\"".to_string(), 7, 1, "`..` segment"),
        ("[route]\n\"/\" = { service = \"api\", strip_prefix = true }".to_string(), 7, 26, "does nothing"),
    ] {
        let toml = format!(
            "app = \"env\"\n\n[service.api]\nport = 8080\n{}{setting}\n",
            if setting.starts_with("command") { "" } else { "command = [\"wharf\", \"demo\"]\n" }
        );
        let app = app_dir(&toml);
        let check = s.wharf(&["check", app.path().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success(), "{setting:.80}");
        assert!(err.contains(&format!("wharf.toml:{line}:{col}: error: ")) && err.contains(message), "{err:.2000}");
        assert!(err.contains("hint:"), "{err:.2000}");
        let (status, body) = post_release(&s, app.path());
        assert_eq!(status, 422, "{body:.2000}");
        let d = &body["error"]["diagnostics"][0];
        assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(line), Some(col)), "{body:.2000}");
    }
    assert!(s.tasks().is_empty(), "nothing was started");
}

#[test]
fn a_non_utf8_upload_is_reported_at_its_first_bad_byte() {
    let s = Server::start();
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("wharf.toml"), b"app = \"a\"\n# caf\xe9\n").unwrap();
    let (status, body) = post_release(&s, app.path());
    assert_eq!(status, 422, "{body}");
    let d = &body["error"]["diagnostics"][0];
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(2), Some(6)), "{body}");
    assert!(d["message"].as_str().unwrap().contains("UTF-8"), "{body}");
}

/// POSTs an archive made by the system's tar, which stores symlinks and
/// FIFOs as such (as a hostile client could).
fn post_tar(s: &Server, dir: &std::path::Path) -> (u16, String) {
    let out = Command::new("tar").arg("czf").arg("-").arg("-C").arg(dir).arg("wharf.toml").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    http_request(&s.api_addr(), "POST", "localhost", "/v1/deploy", Some(&s.token()), &out.stdout).expect("API answers")
}

#[test]
fn the_server_reads_only_a_bounded_regular_wharf_toml_from_an_upload() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.toml");
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    let (status, body) = post_tar(&s, dir.path());
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("symbolic link"), "{body}");
    std::fs::remove_file(&path).unwrap();
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (status, body) = post_tar(&s, dir.path());
    assert!((400..500).contains(&status), "{status} {body}");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, format!("app = \"big\"\n#{}\n", "x".repeat(2 << 20))).unwrap();
    let (status, body) = post_tar(&s, dir.path());
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("larger than 1 MiB"), "{body}");
    // Still serving.
    s.deploy(app_dir(&demo_toml("after", "v1", 1, false)).path());
}

#[test]
fn check_refuses_a_fifo_instead_of_blocking_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::ffi::CString::new(dir.path().join("wharf.toml").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let mut child = Command::new(WHARF)
        .args(["check", dir.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("wharf check to finish", Duration::from_secs(10), || child.try_wait().unwrap())
    }));
    if done.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("wharf check blocked on a FIFO");
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FIFO"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn writing_into_a_closed_pipe_ends_quietly() {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors; the read end is closed at once
    // so every write to the other gets EPIPE, as after `| head -0`.
    let write_end: std::os::fd::OwnedFd = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        std::os::fd::FromRawFd::from_raw_fd(fds[1])
    };
    let out = Command::new(WHARF).arg("schema").stdout(Stdio::from(write_end)).stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "ends as `yes | head -0` does");
}

#[test]
fn wharf_up_keeps_serving_when_its_stdout_is_gone() {
    let app = app_dir(&demo_toml("piped", "v1", 1, false));
    let stderr_path = app.path().join("up.stderr");
    let mut fds = [0; 2];
    // SAFETY: as above: a pipe whose read end is closed at once.
    let write_end: std::os::fd::OwnedFd = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        std::os::fd::FromRawFd::from_raw_fd(fds[1])
    };
    let mut child = Command::new(WHARF)
        .args(["up", app.path().to_str().unwrap(), "--http", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the app to be ready", LONG, || read().contains("is ready").then_some(()))
    }));
    // The demo's first log lines are written after it is ready; give the
    // printer a moment to meet the closed pipe.
    std::thread::sleep(Duration::from_millis(500));
    let alive = child.try_wait().unwrap().is_none();
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    let err = read();
    assert!(ready.is_ok(), "{err}");
    assert!(alive, "wharf up died with its stdout: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.success(), "{status}: {err}");
}

#[test]
fn a_maintenance_page_or_message_over_its_bound_is_refused_and_changes_nothing() {
    let s = Server::start();
    let dir = app_dir(&demo_toml("shop", "1", 1, false));
    s.deploy(dir.path());
    let page = dir.path().join("page.html");
    std::fs::write(&page, "x".repeat(2 << 20)).unwrap();
    let long = "m".repeat(5 << 10);
    for args in
        [vec!["maintenance", "on", "--page", page.to_str().unwrap()], vec!["maintenance", "on", "--message", &long]]
    {
        let out = s.wharf(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("KiB") && err.contains("hint:"), "{err}");
        assert_eq!(s.json(&["status", "--json"])["apps"][0]["services"][0]["maintenance"], false);
    }
}
