//! Binding the server's listeners: a restarted server waits a moment for
//! its old ports, and an address in use names who holds it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::error::{Context, ServerError};

/// How long a start waits for an address in use to come free: a server
/// restarted at once can find its old port still held for a moment, and
/// giving up then would leave its re-adopted tasks without a proxy.
const BIND_RETRY: Duration = Duration::from_secs(20);

/// Runs `attempt` until it binds, retrying an address in use for up to
/// [`BIND_RETRY`] and saying once what holds it.
pub(crate) fn bind_retrying<T>(
    addr: SocketAddr,
    what: &str,
    flag: &str,
    mut attempt: impl FnMut() -> std::io::Result<T>,
) -> Result<T, ServerError> {
    let start = std::time::Instant::now();
    let mut said = false;
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && start.elapsed() < BIND_RETRY => {
                if !said {
                    eprintln!(
                        "wharf server: {addr} ({what}, {flag}) is in use{}; retrying for up to {}s",
                        crate::ports::holder(addr).map(|h| format!(" by {h}")).unwrap_or_default(),
                        BIND_RETRY.as_secs()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => {
                let by = if e.kind() == std::io::ErrorKind::AddrInUse {
                    crate::ports::holder(addr).map(|h| format!(" (held by {h})")).unwrap_or_default()
                } else {
                    String::new()
                };
                return Err(e).context(format!(
                    "cannot listen for {what} on {addr}{by}\n  hint: is something else using it? choose another address with {flag}"
                ));
            }
        }
    }
}

/// One listener on `addr`, bound off the async threads (a retry sleeps).
pub(crate) async fn bind(addr: SocketAddr, what: &str, flag: &str) -> Result<TcpListener, ServerError> {
    let (what, flag) = (what.to_string(), flag.to_string());
    let std = tokio::task::spawn_blocking(move || {
        bind_retrying(addr, &what, &flag, || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
    })
    .await??;
    Ok(TcpListener::from_std(std)?)
}

/// One listening socket per proxy worker on the same address (SO_REUSEPORT):
/// the kernel spreads connections over the workers, and each worker serves
/// its connections start to end on its own thread, without handing requests
/// between threads.
pub(crate) fn proxy_listeners(
    addr: SocketAddr,
    workers: usize,
    flag: &str,
    retry: bool,
) -> Result<Vec<std::net::TcpListener>, ServerError> {
    let what = if flag == "--internal" { "internal traffic" } else { "HTTP traffic" };
    let hint = || {
        format!("cannot listen for {what} on {addr}\n  hint: is something else using it? choose another address with {flag}")
    };
    // A plain bind first: with SO_REUSEPORT alone, a second server could
    // silently share the port instead of being told it is taken. Port 0
    // picks a free port here, which the workers then share.
    let plain = || std::net::TcpListener::bind(addr)?.local_addr();
    let at = if retry { bind_retrying(addr, what, flag, plain)? } else { plain().with_context(hint)? };
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket = if at.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .with_context(hint)?;
        socket.set_reuseaddr(true).with_context(hint)?;
        socket.set_reuseport(true).with_context(hint)?;
        socket.bind(at).with_context(hint)?;
        out.push(socket.listen(4096).with_context(hint)?.into_std().with_context(hint)?);
    }
    Ok(out)
}
