//! Listeners of the internal side of the proxy that come and go with the
//! services: one per service address (service discovery gives each web
//! service an address of its own on loopback, so that a plain URL reaches
//! it without DNS). They serve exactly like the main internal listener.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::server::Proxy;

/// How long connections of a listener that closes get to finish.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for internal traffic on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The per-address internal listeners of one proxy, all on one port.
pub struct InternalListeners {
    proxy: Arc<Proxy>,
    port: u16,
    /// The proxy workers' runtimes; listeners are spread over them.
    runtimes: Vec<Handle>,
    /// Resolves (true) when the whole server stops.
    stop: watch::Receiver<bool>,
    /// Bound addresses and the switch that closes each.
    bound: Mutex<HashMap<IpAddr, watch::Sender<bool>>>,
    /// Addresses whose bind failed and was reported already.
    failed: Mutex<HashSet<IpAddr>>,
    next: AtomicUsize,
}

impl InternalListeners {
    pub fn new(proxy: Arc<Proxy>, port: u16, runtimes: Vec<Handle>, stop: watch::Receiver<bool>) -> InternalListeners {
        assert!(!runtimes.is_empty(), "internal listeners need a runtime to run on");
        InternalListeners {
            proxy,
            port,
            runtimes,
            stop,
            bound: Mutex::default(),
            failed: Mutex::default(),
            next: AtomicUsize::new(0),
        }
    }

    /// The port every address listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Listens on each of `want` not listened on yet and closes the
    /// listeners of addresses no longer in it (their open connections
    /// finish). Returns the binds that failed for the first time; a failed
    /// address is tried again on the next call.
    pub fn sync(&self, want: &[IpAddr]) -> Vec<BindError> {
        let mut errors = Vec::new();
        let mut bound = self.bound.lock().unwrap();
        bound.retain(|ip, close| {
            let keep = want.contains(ip);
            if !keep {
                let _ = close.send(true);
            }
            keep
        });
        for ip in want {
            if bound.contains_key(ip) {
                continue;
            }
            let addr = SocketAddr::new(*ip, self.port);
            match bind(addr) {
                Ok(listener) => {
                    self.failed.lock().unwrap().remove(ip);
                    let (close_tx, close_rx) = watch::channel(false);
                    bound.insert(*ip, close_tx);
                    self.spawn(listener, close_rx);
                }
                Err(source) => {
                    if self.failed.lock().unwrap().insert(*ip) {
                        errors.push(BindError { addr, source });
                    }
                }
            }
        }
        errors
    }

    /// Addresses listened on now, sorted.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.bound.lock().unwrap().keys().copied().collect();
        v.sort();
        v
    }

    fn spawn(&self, listener: std::net::TcpListener, mut close: watch::Receiver<bool>) {
        let runtime = &self.runtimes[self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len()];
        let proxy = self.proxy.clone();
        let mut stop = self.stop.clone();
        runtime.spawn(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!("internal listener unusable: {e}"),
            };
            let shutdown = async move {
                tokio::select! {
                    _ = close.wait_for(|c| *c) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            };
            if let Err(e) = proxy.serve_internal(listener, shutdown, GRACE).await {
                tracing::warn!("{e}");
            }
        });
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

impl Drop for InternalListeners {
    fn drop(&mut self) {
        for close in self.bound.lock().unwrap().values() {
            let _ = close.send(true);
        }
    }
}
