//! `run()` as a process, the way `wharf demo` runs it: exit statuses,
//! signals, the environment knobs and stdout lines.
//!
//! The child is this very test binary, re-run with `DEMO_CHILD_ARGS` set so
//! that the `child` test below calls `run()` and exits like a binary would.

#![allow(unsafe_code)] // signals, uids and fds through libc

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;

const CHILD_ARGS: &str = "DEMO_CHILD_ARGS";
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    demo: wharf_demo::DemoArgs,
}

/// Not a test by itself: the entry point of the child processes.
#[test]
fn child() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let argv = std::iter::once("demo").chain(args.split('\n').filter(|a| !a.is_empty()));
    let cli = Cli::parse_from(argv);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let code = match runtime.block_on(wharf_demo::run(cli.demo)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo: {e}");
            1
        }
    };
    std::process::exit(code);
}

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::process::ChildStderr,
}

impl Demo {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Demo {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child", "--nocapture", "--test-threads=1", "--quiet"])
            .env(CHILD_ARGS, args.join("\n"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in ["PORT", "WHARF_TASK", "WHARF_REVISION", "DEMO_NAME", "DEMO_FAIL_HEALTH", "DEMO_LOG_EVERY"] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo { child, lines, seen: Vec::new(), stderr }
    }

    /// Waits for a stdout line containing `needle` and returns it.
    fn line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?} in {:?}", self.seen),
            }
        }
    }

    fn listening_addr(&mut self) -> SocketAddr {
        let line = self.line(" listening on ");
        addr_in(&line)
    }

    fn signal(&self, signal: libc::c_int) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0);
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the demo did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        self.stderr.read_to_string(&mut err).unwrap();
        err
    }

    fn rest_of_stdout(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(TIMEOUT) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ADDR in `NAME listening on ADDR (version V)`.
fn addr_in(line: &str) -> SocketAddr {
    let addr = line.split(" listening on ").nth(1).unwrap();
    addr.split(' ').next().unwrap().parse().unwrap()
}

/// A minimal HTTP/1.1 GET, enough to look at a running child.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn web_serves_until_sigterm_then_exits_0() {
    let mut demo = Demo::spawn(
        &["--port", "0", "--name", "shop", "--version-label", "9"],
        &[("WHARF_TASK", "shop-9-2"), ("WHARF_REVISION", "shop@9")],
    );
    let line = demo.line(" listening on ");
    assert!(line.starts_with("shop listening on 127.0.0.1:"), "{line}");
    assert!(line.ends_with(" (version 9)"), "{line}");
    let addr = addr_in(&line);
    let (status, head, body) = http_get(addr, "/");
    assert_eq!(status, 200);
    assert_eq!(body, "hello from shop (version 9, task shop-9-2)\n");
    assert!(head.contains("x-demo-task: shop-9-2"), "{head}");
    let (_, _, body) = http_get(addr, "/version");
    assert!(body.contains(r#""revision":"shop@9""#), "{body}");
    let (_, _, body) = http_get(addr, "/env?key=WHARF_TASK");
    assert_eq!(body, "shop-9-2");
    let (status, _, _) = http_get(addr, "/log?lines=3&text=hi");
    assert_eq!(status, 200);
    demo.line("shop: hi #3");

    demo.signal(libc::SIGTERM);
    assert_eq!(demo.wait().code(), Some(0));
    let out = demo.rest_of_stdout();
    assert!(out.iter().any(|l| l == "shop: stopped"), "{out:?}");
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn knobs_come_from_the_environment() {
    let mut demo = Demo::spawn(
        &[],
        &[
            ("PORT", "0"),
            ("DEMO_NAME", "envy"),
            ("DEMO_VERSION", "4"),
            ("DEMO_FAIL_HEALTH", "1"),
            ("DEMO_STARTUP_DELAY", "150ms"),
            ("DEMO_LOG_EVERY", "20ms"),
            ("DEMO_FAIL_RATE", ""),
        ],
    );
    let started = Instant::now();
    let addr = demo.listening_addr();
    assert!(started.elapsed() >= Duration::from_millis(150));
    let (status, head, _) = http_get(addr, "/health");
    assert_eq!(status, 503);
    assert!(head.contains("x-demo-name: envy"), "{head}");
    assert!(head.contains("x-demo-task: \r\n"), "{head}");
    let (status, _, body) = http_get(addr, "/");
    assert_eq!(status, 200);
    assert_eq!(body, "hello from envy (version 4, task -)\n");
    demo.line("envy: alive (tick 2)");
    demo.signal(libc::SIGINT);
    assert_eq!(demo.wait().code(), Some(0));
}

#[test]
fn worker_logs_ticks_and_stops_fast_on_sigterm() {
    let mut demo = Demo::spawn(&["worker", "--name", "jobs", "--log-every", "30ms"], &[]);
    demo.line("jobs: worker started (version 1)");
    assert_eq!(demo.line("jobs: working (tick"), "jobs: working (tick 1)");
    demo.line("jobs: working (tick 3)");
    let started = Instant::now();
    demo.signal(libc::SIGTERM);
    assert_eq!(demo.wait().code(), Some(0));
    let took = started.elapsed();
    eprintln!("the worker exited {took:?} after SIGTERM");
    // 100ms is the promise; leave room for a busy machine.
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let out = demo.rest_of_stdout();
    assert_eq!(out.last().map(String::as_str), Some("jobs: stopping"), "{out:?}");
}

#[test]
fn crash_at_start_exits_3() {
    let mut demo = Demo::spawn(&["--port", "0"], &[("DEMO_CRASH_AT_START", "1")]);
    assert_eq!(demo.wait().code(), Some(3));
    let err = demo.stderr();
    assert!(err.contains("demo: crashing at start"), "{err}");
    assert!(!demo.rest_of_stdout().iter().any(|l| l.contains("listening")));
}

#[test]
fn exit_after_exits_4_after_becoming_ready() {
    let mut demo = Demo::spawn(&["--port", "0", "--exit-after", "200ms"], &[]);
    let addr = demo.listening_addr();
    let ready = Instant::now();
    assert_eq!(http_get(addr, "/health").0, 200);
    assert_eq!(demo.wait().code(), Some(4));
    assert!(ready.elapsed() >= Duration::from_millis(150));
    assert!(demo.stderr().contains("exiting with status 4"));
}

#[test]
fn missing_port_is_an_error() {
    let mut demo = Demo::spawn(&[], &[]);
    assert_eq!(demo.wait().code(), Some(1));
    let err = demo.stderr();
    assert!(err.contains("need a port"), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn alloc_mib_is_resident() {
    let mut demo = Demo::spawn(&["--port", "0", "--alloc-mib", "64"], &[]);
    let addr = demo.listening_addr();
    let rss_kib = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", demo.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss_kib();
    assert!(before >= 64 * 1024, "RSS {before} KiB");
    assert_eq!(http_get(addr, "/alloc?mib=32").0, 200);
    let after = rss_kib();
    assert!(after >= before + 31 * 1024, "RSS {before} -> {after} KiB");
    demo.signal(libc::SIGTERM);
    assert_eq!(demo.wait().code(), Some(0));
}
