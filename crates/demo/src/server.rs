//! The web role: one accept loop, HTTP/1.1 and h2c on the same port.

use std::borrow::Cow;
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::{stderr_line, stdout_line, DemoArgs, DemoBody, DRAIN_TIMEOUT};

const X_DEMO_NAME: HeaderName = HeaderName::from_static("x-demo-name");
const X_DEMO_TASK: HeaderName = HeaderName::from_static("x-demo-task");
const X_DEMO_REQUEST_HEADERS: HeaderName = HeaderName::from_static("x-demo-request-headers");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const OCTETS: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// MiB leaked on purpose by --alloc-mib and /alloc, in this process.
static HELD_MIB: AtomicU64 = AtomicU64::new(0);

/// Everything a request needs, computed once.
struct App {
    name: String,
    name_header: HeaderValue,
    task_header: HeaderValue,
    hello: Bytes,
    version_json: Bytes,
    /// Starts as --fail-health; `/sick?on=...` flips it while running.
    fail_health: std::sync::atomic::AtomicBool,
    fail_rate: f64,
}

impl App {
    fn new(args: &DemoArgs) -> io::Result<App> {
        args.validate()?;
        let invalid = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} must be usable as an HTTP header value (visible ASCII)"),
            )
        };
        let name_header = HeaderValue::from_str(&args.name).map_err(|_| invalid("--name"))?;
        let task_header =
            HeaderValue::from_str(args.task.as_deref().unwrap_or("")).map_err(|_| invalid("$WHARF_TASK"))?;
        let hello = format!(
            "hello from {} (version {}, task {})\n",
            args.name,
            args.version_label,
            args.task.as_deref().unwrap_or("-")
        );
        let version = serde_json::json!({
            "name": args.name,
            "version": args.version_label,
            "revision": args.revision,
            "task": args.task,
            "pid": std::process::id(),
        });
        Ok(App {
            name: args.name.clone(),
            name_header,
            task_header,
            hello: Bytes::from(hello),
            version_json: Bytes::from(version.to_string()),
            fail_health: std::sync::atomic::AtomicBool::new(args.fail_health),
            fail_rate: args.fail_rate,
        })
    }

    fn respond(&self, status: StatusCode, content_type: HeaderValue, body: DemoBody) -> Response<DemoBody> {
        let mut res = Response::new(body);
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert(X_DEMO_NAME, self.name_header.clone());
        headers.insert(X_DEMO_TASK, self.task_header.clone());
        res
    }

    fn text(&self, status: StatusCode, text: impl Into<Bytes>) -> Response<DemoBody> {
        self.respond(status, TEXT, DemoBody::full(text))
    }
}

/// Serves the web role on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish (up to [`DRAIN_TIMEOUT`]),
/// logs `NAME: stopped` and returns.
///
/// Logs `NAME listening on ADDR (version V)` first, with the actual address
/// (useful with port 0). `--startup-delay`, `--alloc-mib`, `--crash-at-start`
/// and `--exit-after` are [`crate::run`]'s business and ignored here.
pub async fn serve(args: DemoArgs, listener: TcpListener, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let app = Arc::new(App::new(&args)?);
    let name = app.name.clone();
    let addr = listener.local_addr()?;
    stdout_line(&format!("{name} listening on {addr} (version {})", args.version_label));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut ticks = ticker(args.log_every.unwrap_or(Duration::ZERO));
    let mut tick = 0u64;

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let builder = Arc::clone(&builder);
                    let app = Arc::clone(&app);
                    let watcher = graceful.watcher();
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(Arc::clone(&app), req));
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        // Errors here are the client's doing (reset, bad request): not ours to log.
                        let _ = watcher.watch(conn).await;
                    });
                }
                Err(e) => {
                    // Typically EMFILE or a connection reset before accept: back off a little.
                    stderr_line(&format!("{name}: accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = next_tick(&mut ticks) => {
                tick += 1;
                stdout_line(&format!("{name}: alive (tick {tick})"));
            }
        }
        while connections.try_join_next().is_some() {}
    }

    drop(listener);
    stdout_line(&format!("{name}: stopping"));
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        stderr_line(&format!(
            "{name}: {} connection(s) still busy after {}s, closing them",
            connections.len(),
            DRAIN_TIMEOUT.as_secs()
        ));
    }
    connections.shutdown().await;
    stdout_line(&format!("{name}: stopped"));
    Ok(())
}

/// Ticks every `every`, first after one period; none for zero.
pub(crate) fn ticker(every: Duration) -> Option<tokio::time::Interval> {
    (!every.is_zero()).then(|| {
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now().checked_add(every).unwrap_or_else(tokio::time::Instant::now),
            every,
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    })
}

/// Completes at the next tick; never without a ticker.
pub(crate) async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

enum Route<'a> {
    Root,
    Health,
    Version,
    Burn,
    Sleep,
    Status(&'a str),
    Echo,
    Log,
    Alloc,
    Env,
    Bytes,
    Upgrade,
    Sick,
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    match path {
        "/" => Route::Root,
        "/health" => Route::Health,
        "/version" => Route::Version,
        "/burn" => Route::Burn,
        "/sleep" => Route::Sleep,
        "/echo" => Route::Echo,
        "/log" => Route::Log,
        "/alloc" => Route::Alloc,
        "/env" => Route::Env,
        "/bytes" => Route::Bytes,
        "/upgrade" => Route::Upgrade,
        "/sick" => Route::Sick,
        _ => match path.strip_prefix("/status/") {
            Some(code) => Route::Status(code),
            None => Route::NotFound,
        },
    }
}

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<DemoBody>, Infallible> {
    let query = req.uri().query().unwrap_or("");
    let res = match route(req.uri().path()) {
        Route::Root => match injected_failure(&app) {
            Some(failed) => failed,
            None => app.respond(StatusCode::OK, TEXT, DemoBody::Full(Some(app.hello.clone()))),
        },
        Route::Health => {
            if app.fail_health.load(std::sync::atomic::Ordering::Relaxed) {
                app.text(StatusCode::SERVICE_UNAVAILABLE, Bytes::from_static(b"unhealthy"))
            } else {
                app.text(StatusCode::OK, Bytes::from_static(b"ok"))
            }
        }
        Route::Version => match injected_failure(&app) {
            Some(failed) => failed,
            None => app.respond(StatusCode::OK, JSON, DemoBody::full(app.version_json.clone())),
        },
        Route::Burn => match number(query, "ms", 100u64) {
            Ok(ms) => burn(&app, ms).await,
            Err(bad) => app.text(StatusCode::BAD_REQUEST, bad),
        },
        Route::Sleep => match number(query, "ms", 100u64) {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                app.text(StatusCode::OK, format!("slept {ms} ms\n"))
            }
            Err(bad) => app.text(StatusCode::BAD_REQUEST, bad),
        },
        Route::Status(code) => status(&app, code),
        Route::Echo => echo(&app, req),
        Route::Upgrade => upgrade(&app, req),
        Route::Sick => {
            let on = !query.split('&').any(|kv| kv == "on=false" || kv == "on=0");
            app.fail_health.store(on, std::sync::atomic::Ordering::Relaxed);
            app.text(StatusCode::OK, format!("{}: /health now answers {}\n", app.name, if on { 503 } else { 200 }))
        }
        Route::Log => log(&app, query).await,
        Route::Alloc => match number(query, "mib", 1u64) {
            Ok(mib) => alloc(&app, mib).await,
            Err(bad) => app.text(StatusCode::BAD_REQUEST, bad),
        },
        Route::Env => env(&app, query),
        Route::Bytes => match number(query, "n", 1024u64) {
            Ok(n) => app.respond(StatusCode::OK, OCTETS, DemoBody::Filler { remaining: n }),
            Err(bad) => app.text(StatusCode::BAD_REQUEST, bad),
        },
        Route::NotFound => app.text(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    };
    Ok(res)
}

async fn burn(app: &App, ms: u64) -> Response<DemoBody> {
    let started = Instant::now();
    let burned = tokio::task::spawn_blocking(move || {
        // CPU time, not wall time: a throttled or descheduled task takes
        // longer but burns the same amount, so the load is what was asked.
        let until = thread_cpu() + Duration::from_millis(ms);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        while thread_cpu() < until {
            for _ in 0..1_000 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            }
            std::hint::black_box(x);
        }
    })
    .await;
    match burned {
        Ok(()) => app.text(
            StatusCode::OK,
            format!("burned {ms} ms of cpu, took {:.1} ms\n", started.elapsed().as_secs_f64() * 1000.0),
        ),
        Err(e) => app.text(StatusCode::INTERNAL_SERVER_ERROR, format!("burn failed: {e}\n")),
    }
}

/// A 500 for the share of requests `--fail-rate` asks for.
fn injected_failure(app: &App) -> Option<Response<DemoBody>> {
    (app.fail_rate > 0.0 && random_unit() < app.fail_rate).then(|| {
        app.text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: injected failure (fail rate {})\n", app.name, app.fail_rate),
        )
    })
}

/// CPU time used by the calling thread.
#[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn status(app: &App, code: &str) -> Response<DemoBody> {
    let status = match code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
        Some(status) if status.as_u16() >= 200 => status,
        _ => {
            return app.text(
                StatusCode::BAD_REQUEST,
                format!("bad status code `{code}`: expected a number from 200 to 999\n"),
            )
        }
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return app.respond(status, TEXT, DemoBody::empty());
    }
    let text = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}\n", status.as_u16()),
        None => format!("{}\n", status.as_u16()),
    };
    app.text(status, text)
}

fn echo(app: &App, req: Request<Incoming>) -> Response<DemoBody> {
    let (parts, body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<Cow<'_, str>> =
            parts.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    if !headers.contains_key("host") {
        // HTTP/2 carries the host as :authority, not as a header.
        if let Some(authority) = parts.uri.authority() {
            headers.insert("host".to_owned(), authority.as_str().into());
        }
    }
    let json = serde_json::Value::Object(headers).to_string();
    let content_type = parts.headers.get(CONTENT_TYPE).cloned().unwrap_or(OCTETS);
    let mut res = app.respond(StatusCode::OK, content_type, DemoBody::Echo(body));
    if let Ok(value) = HeaderValue::from_str(&json) {
        res.headers_mut().insert(X_DEMO_REQUEST_HEADERS, value);
    }
    res
}

async fn log(app: &App, query: &str) -> Response<DemoBody> {
    let lines = match number(query, "lines", 1u64) {
        Ok(lines) => lines,
        Err(bad) => return app.text(StatusCode::BAD_REQUEST, bad),
    };
    let stream = param(query, "stream").unwrap_or(Cow::Borrowed("stdout"));
    let to_stderr = match &*stream {
        "stdout" => false,
        "stderr" => true,
        other => {
            return app.text(StatusCode::BAD_REQUEST, format!("bad stream `{other}`: expected stdout or stderr\n"))
        }
    };
    let text = param(query, "text").unwrap_or(Cow::Borrowed("hello")).into_owned();
    let name = app.name.clone();
    // A slow reader of our stdout must not stall the async workers.
    let written = tokio::task::spawn_blocking(move || {
        if to_stderr {
            write_lines(&mut io::stderr().lock(), &name, &text, lines)
        } else {
            write_lines(&mut io::stdout().lock(), &name, &text, lines)
        }
    })
    .await;
    match written {
        Ok(Ok(())) => app.text(StatusCode::OK, format!("wrote {lines} line(s) to {stream}\n")),
        Ok(Err(e)) => app.text(StatusCode::INTERNAL_SERVER_ERROR, format!("writing to {stream}: {e}\n")),
        Err(e) => app.text(StatusCode::INTERNAL_SERVER_ERROR, format!("writing to {stream}: {e}\n")),
    }
}

/// Writes `NAME: TEXT #i` for i in 1..=lines, in writes of whole lines.
fn write_lines(out: &mut impl Write, name: &str, text: &str, lines: u64) -> io::Result<()> {
    let mut buf = String::new();
    for i in 1..=lines {
        use std::fmt::Write as _;
        let _ = writeln!(buf, "{name}: {text} #{i}");
        if buf.len() >= 32 * 1024 {
            out.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    out.write_all(buf.as_bytes())?;
    out.flush()
}

async fn alloc(app: &App, mib: u64) -> Response<DemoBody> {
    match tokio::task::spawn_blocking(move || alloc_and_leak(mib)).await {
        Ok(Ok(held)) => app.text(StatusCode::OK, format!("allocated {mib} MiB, holding {held} MiB\n")),
        Ok(Err(e)) => app.text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        Err(e) => app.text(StatusCode::INTERNAL_SERVER_ERROR, format!("allocation failed: {e}\n")),
    }
}

/// Allocates `mib` MiB, writes every byte of it (so every page is resident)
/// and leaks it on purpose. Returns how many MiB this process now holds.
pub(crate) fn alloc_and_leak(mib: u64) -> io::Result<u64> {
    let len = usize::try_from(mib)
        .ok()
        .and_then(|m| m.checked_mul(1024 * 1024))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{mib} MiB is too much")))?;
    let mut memory: Vec<u8> = Vec::new();
    memory
        .try_reserve_exact(len)
        .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, format!("cannot allocate {mib} MiB: {e}")))?;
    memory.resize(len, 0xA5);
    std::hint::black_box(&mut memory);
    memory.leak();
    Ok(HELD_MIB.fetch_add(mib, Ordering::Relaxed) + mib)
}

fn env(app: &App, query: &str) -> Response<DemoBody> {
    let Some(key) = param(query, "key").filter(|k| !k.is_empty()) else {
        return app.text(StatusCode::BAD_REQUEST, "missing ?key=NAME\n");
    };
    match std::env::var_os(&*key) {
        Some(value) => {
            #[cfg(unix)]
            let value = Bytes::from(std::os::unix::ffi::OsStringExt::into_vec(value));
            #[cfg(not(unix))]
            let value = Bytes::from(value.to_string_lossy().into_owned());
            app.text(StatusCode::OK, value)
        }
        None => app.text(StatusCode::NOT_FOUND, format!("{key} is not set\n")),
    }
}

/// The number in `?key=N`, `default` when absent, what is wrong when not a number.
fn number<T: FromStr>(query: &str, key: &str, default: T) -> Result<T, String> {
    match param(query, key) {
        None => Ok(default),
        Some(value) => {
            value.trim().parse().map_err(|_| format!("bad ?{key}=`{value}`: expected a non-negative integer\n"))
        }
    }
}

/// The percent-decoded value of the first `key=...` in a query string.
fn param<'a>(query: &'a str, key: &str) -> Option<Cow<'a, str>> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| decode(k) == key)
        .map(|(_, v)| decode(v))
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+` for space.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A uniform number in [0, 1) from a per-thread xorshift generator.
fn random_unit() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let local = 0u8;
            (nanos ^ (&local as *const u8 as u64).rotate_left(32)) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// `/upgrade` with `Connection: upgrade` and any `Upgrade` protocol: answers
/// 101 and echoes every byte back on the upgraded connection until the
/// client closes it. Enough to prove that a proxy passes upgrades (such as
/// WebSocket) through and keeps them open.
fn upgrade(app: &App, mut req: Request<Incoming>) -> Response<DemoBody> {
    let Some(protocol) = req.headers().get(hyper::header::UPGRADE).cloned() else {
        return app.text(StatusCode::BAD_REQUEST, "send Connection: upgrade and an Upgrade header\n");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut resp = app.respond(StatusCode::SWITCHING_PROTOCOLS, TEXT, DemoBody::empty());
    resp.headers_mut().insert(hyper::header::UPGRADE, protocol);
    resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("upgrade"));
    resp.headers_mut().remove(hyper::header::CONTENT_TYPE);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        assert_eq!(param("a=1&b=x%20y+z", "b").as_deref(), Some("x y z"));
        assert_eq!(param("a=1&b=2", "a").as_deref(), Some("1"));
        assert_eq!(param("a=1&b", "b").as_deref(), Some(""));
        assert_eq!(param("a=1", "c"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%41%zz"), "A%zz");
        assert_eq!(decode("%C3%A9"), "é");
    }

    #[test]
    fn random_is_in_range_and_spread() {
        let draws: Vec<f64> = (0..10_000).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let below_half = draws.iter().filter(|x| **x < 0.5).count();
        assert!((4_000..6_000).contains(&below_half), "{below_half}");
    }

    #[test]
    fn writes_whole_lines() {
        let mut out = Vec::new();
        write_lines(&mut out, "n", "t", 3).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "n: t #1\nn: t #2\nn: t #3\n");
    }
}
