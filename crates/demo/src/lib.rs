//! `wharf demo`: a small web app (and worker) that wharf runs in its example,
//! its tests and its benchmarks.
//!
//! The `web` role serves HTTP/1.1 (with keep-alive) and HTTP/2 with prior
//! knowledge (h2c) on one port; the `worker` role only logs a line now and
//! then. Knobs, all settable from the environment so that a `wharf.toml` can
//! set them, make it slow to start, crash, fail its health check, fail a
//! fraction of requests, or use memory.
//!
//! Entry points: [`run`] (what `wharf demo` calls), and for tests [`serve`]
//! (the web role on a listener you bound) and [`work`] (the worker role).

mod args;
mod body;
mod call;
mod server;

use std::future::Future;
use std::io::{self, Write};
use std::time::Duration;

use tokio::net::TcpListener;

pub use args::{DemoArgs, Role};
pub use body::DemoBody;
pub use call::{call, call_url};
pub use server::serve;

/// How long in-flight requests get to finish after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit status when `--crash-at-start` is set.
pub const CRASH_EXIT_CODE: i32 = 3;

/// Exit status when `--exit-after` fires.
pub const EXIT_AFTER_CODE: i32 = 4;

/// Runs the demo app as `wharf demo` does: until SIGTERM or SIGINT, then
/// returns `Ok(())` after a graceful stop.
///
/// Must be called inside a tokio runtime with IO, time and signals enabled.
/// Note that `--crash-at-start` and `--exit-after` end the whole process
/// (`std::process::exit` with 3 and 4): they simulate a crashing app.
pub async fn run(args: DemoArgs) -> io::Result<()> {
    if args.crash_at_start {
        stderr_line(&format!(
            "{}: crashing at start as asked (--crash-at-start / DEMO_CRASH_AT_START), exit status {CRASH_EXIT_CODE}",
            args.name
        ));
        std::process::exit(CRASH_EXIT_CODE);
    }
    args.validate()?;
    let port = match args.role {
        Role::Web | Role::Reset => Some(args.port.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the web and reset roles need a port: pass --port PORT or set $PORT (0 picks a free one)",
            )
        })?),
        Role::Worker | Role::Call => None,
    };

    // Install the signal handlers first, so that a SIGTERM during the
    // startup delay or the allocation is a clean stop, not a kill.
    let stop = termination()?;
    tokio::pin!(stop);

    let startup = async {
        if args.alloc_mib > 0 {
            let mib = args.alloc_mib;
            tokio::task::spawn_blocking(move || server::alloc_and_leak(mib)).await.map_err(io::Error::other)??;
            stdout_line(&format!("{}: allocated and touched {mib} MiB at start", args.name));
        }
        if let Some(delay) = args.startup_delay.filter(|d| !d.is_zero()) {
            tokio::time::sleep(delay).await;
        }
        match port {
            Some(port) => TcpListener::bind((args.host.as_str(), port)).await.map(Some).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: cannot listen on {}:{port}: {e}", args.name, args.host))
            }),
            None => Ok(None),
        }
    };
    let listener = tokio::select! {
        listener = startup => listener?,
        () = &mut stop => {
            stdout_line(&format!("{}: stopped before becoming ready", args.name));
            return Ok(());
        }
    };

    let _exit_after = args.exit_after.filter(|d| !d.is_zero()).map(|after| {
        let name = args.name.clone();
        AbortOnDrop(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            stderr_line(&format!(
                "{name}: exiting with status {EXIT_AFTER_CODE} after {} as asked (--exit-after / DEMO_EXIT_AFTER)",
                humantime::format_duration(after)
            ));
            std::process::exit(EXIT_AFTER_CODE);
        }))
    });

    match listener {
        Some(listener) if args.role == Role::Reset => reset(args, listener, stop).await,
        Some(listener) => serve(args, listener, stop).await,
        None if args.role == Role::Call => call(args, stop).await,
        None => work(args, stop).await,
    }
}

/// The reset role: every request but `GET /health` is read, logged and
/// answered by closing the connection (a reset before any response byte).
pub async fn reset(args: DemoArgs, listener: TcpListener, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let name = args.name.clone();
    stdout_line(&format!(
        "{name} resetting connections on {} (version {})",
        listener.local_addr()?,
        args.version_label
    ));
    tokio::pin!(shutdown);
    loop {
        let (mut conn, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let name = name.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            let Ok(n) = conn.read(&mut buf).await else { return };
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut words = head.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if method == "GET" && path == "/health" {
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
            } else if n > 0 {
                stdout_line(&format!("{name}: reset {method} {path}"));
            }
        });
    }
}

/// The worker role: logs `NAME: working (tick N)` every `--log-every`
/// (default 1s; zero: never) until `shutdown` completes, then logs
/// `NAME: stopping` and returns at once.
pub async fn work(args: DemoArgs, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    args.validate()?;
    let name = args.name.as_str();
    stdout_line(&format!("{name}: worker started (version {})", args.version_label));
    let every = args.log_every.unwrap_or(Duration::from_secs(1));
    let mut ticks = server::ticker(every);
    tokio::pin!(shutdown);
    let mut tick = 0u64;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = server::next_tick(&mut ticks) => {
                tick += 1;
                stdout_line(&format!("{name}: working (tick {tick})"));
            }
        }
    }
    stdout_line(&format!("{name}: stopping"));
    Ok(())
}

/// Completes on the first SIGTERM or SIGINT after this call.
fn termination() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes one whole line to stdout in one write; a closed stdout is ignored.
pub(crate) fn stdout_line(line: &str) {
    write_line(&mut io::stdout().lock(), line);
}

/// Writes one whole line to stderr in one write; a closed stderr is ignored.
pub(crate) fn stderr_line(line: &str) {
    write_line(&mut io::stderr().lock(), line);
}

fn write_line(out: &mut impl Write, line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let _ = out.write_all(&buf);
    let _ = out.flush();
}
