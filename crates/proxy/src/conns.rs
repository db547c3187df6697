//! Client connections of a listener set (every worker thread's listener
//! together): one total limit, idle connections closed after a while, and at
//! the limit the longest-idle connection closed to let a new client in.
//!
//! hyper's own header timeout starts only once it reads a request head; a
//! connection that never sends a byte (or stops before HTTP/1 vs h2 is
//! known) would be kept forever. Each connection therefore has a watchdog of
//! its own that does not depend on what hyper is doing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::server::ProxyError;

/// How often a full listener looks again for room, besides being told.
const RECHECK: Duration = Duration::from_millis(100);
/// A connection is not closed to make room before it has been idle this
/// long (or the idle timeout, if shorter): a client that just connected
/// gets the time to send its request.
const EVICT_AFTER: Duration = Duration::from_millis(500);

/// The limits a [`Conns`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once, over every listener sharing the set.
    pub max: usize,
    /// A connection with no request in flight is closed after this long
    /// (a silent new one, or an idle keep-alive one).
    pub idle: Duration,
    /// A response write that makes no progress for this long (a client
    /// that stopped reading) closes the connection.
    pub write_stall: Duration,
}

/// The open connections of one listener set.
pub struct Conns {
    limits: ConnLimits,
    open: AtomicUsize,
    /// Signalled when a connection closes.
    freed: Notify,
    live: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

/// What the watchdog of one connection reads.
pub(crate) struct ConnState {
    epoch: Instant,
    /// Requests being answered (until their response body is dropped).
    active: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last had no request.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` (plus one) since a write has been
    /// pending; zero while writes go through.
    write_blocked: AtomicU64,
    /// Response bodies that handed out data and were not asked for more
    /// since: the client has not taken it (on HTTP/2, a stream whose flow
    /// control window the client keeps closed while the socket flows).
    waiting: AtomicUsize,
    /// Milliseconds since `epoch` when a response body last moved on.
    progress: AtomicU64,
    /// Part of a request arrived since the last response went out.
    pub(crate) partial: AtomicBool,
    /// Chosen to make room for a new client.
    evict: AtomicBool,
    evicted: Notify,
}

impl ConnState {
    fn ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn write_pending(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == 0 {
            self.write_blocked.store(self.ms().saturating_add(1), Ordering::Relaxed);
        }
    }

    pub(crate) fn write_done(&self) {
        if self.write_blocked.load(Ordering::Relaxed) != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a request as in flight until the guard (kept in its response
    /// body) is dropped.
    fn request(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// When the watchdog should look next, or None when the connection is
    /// to be closed now.
    fn check(&self, limits: &ConnLimits) -> Option<Duration> {
        let now = self.ms();
        let mut blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked == 0 && self.waiting.load(Ordering::Acquire) > 0 {
            // No body of this connection moved since: as good as a stuck write.
            blocked = self.progress.load(Ordering::Relaxed).saturating_add(1);
        }
        let stall_ms = u64::try_from(limits.write_stall.as_millis()).unwrap_or(u64::MAX);
        if blocked != 0 {
            let since = now.saturating_sub(blocked - 1);
            if since >= stall_ms {
                return None;
            }
        }
        let idle_ms = u64::try_from(limits.idle.as_millis()).unwrap_or(u64::MAX);
        // A response still going out (or stuck) is judged by the stall rule;
        // looked at again within the idle timeout, so that once the request
        // is over, the idle rule is applied on time.
        if blocked != 0 || self.active.load(Ordering::Relaxed) > 0 {
            let next = if blocked != 0 { stall_ms.saturating_sub(now.saturating_sub(blocked - 1)) } else { stall_ms };
            return Some(Duration::from_millis(next.min(idle_ms).max(10)));
        }
        let idle_for = now.saturating_sub(self.idle_since.load(Ordering::Relaxed));
        if idle_for >= idle_ms {
            return None;
        }
        // Within the stall timeout too: a request may start meanwhile.
        Some(Duration::from_millis((idle_ms - idle_for).min(stall_ms).max(10)))
    }
}

/// A request in flight on a connection.
pub(crate) struct Active(Arc<ConnState>);

impl Drop for Active {
    fn drop(&mut self) {
        let s = &self.0;
        if s.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            s.idle_since.store(s.ms(), Ordering::Relaxed);
        }
    }
}

/// A connection's place in the set; frees it when dropped. The socket
/// owns it, so a connection upgraded (WebSocket) keeps its place for as
/// long as it is open.
pub(crate) struct Slot {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        self.conns.open.fetch_sub(1, Ordering::Relaxed);
        self.conns.freed.notify_waiters();
    }
}

impl Conns {
    pub fn new(limits: ConnLimits) -> Arc<Conns> {
        Arc::new(Conns {
            limits: ConnLimits { max: limits.max.max(1), ..limits },
            open: AtomicUsize::new(0),
            freed: Notify::new(),
            live: Mutex::default(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn try_admit(self: &Arc<Self>) -> Option<(Slot, Arc<ConnState>)> {
        let taken =
            self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.limits.max).then_some(n + 1));
        taken.ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            epoch: self.epoch,
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            partial: AtomicBool::new(false),
            evict: AtomicBool::new(false),
            evicted: Notify::new(),
        });
        state.idle_since.store(state.ms(), Ordering::Relaxed);
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(id, state.clone());
        Some((Slot { conns: self.clone(), id }, state))
    }

    /// Whether a connection may be closed to make room: no request in
    /// flight, and idle for a moment at least.
    fn evictable(&self, s: &ConnState, now: u64) -> bool {
        let grace = u64::try_from(EVICT_AFTER.min(self.limits.idle).as_millis()).unwrap_or(u64::MAX);
        s.active.load(Ordering::Relaxed) == 0
            && !s.evict.load(Ordering::Relaxed)
            && now.saturating_sub(s.idle_since.load(Ordering::Relaxed)) >= grace
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether some connection could be closed to make room.
    fn any_idle(&self) -> bool {
        let now = self.now_ms();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.values().any(|s| self.evictable(s, now))
    }

    /// Tells the connection idle for longest to close; false if none may be.
    fn evict_oldest_idle(&self) -> bool {
        let now = self.now_ms();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let victim =
            live.values().filter(|s| self.evictable(s, now)).min_by_key(|s| s.idle_since.load(Ordering::Relaxed));
        match victim {
            Some(s) => {
                s.evict.store(true, Ordering::Relaxed);
                s.evicted.notify_one();
                true
            }
            None => false,
        }
    }

    /// Waits until a new connection could be admitted: there is room, or an
    /// idle connection that can be closed to make some. False on shutdown.
    async fn room(&self, shutdown: &mut Pin<&mut impl Future<Output = ()>>) -> bool {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.open() < self.limits.max || self.any_idle() {
                return true;
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = shutdown.as_mut() => return false,
            }
        }
    }

    /// A slot for a connection just accepted, closing idle ones to make
    /// room; None on shutdown, or if no room came within the idle timeout
    /// (every connection busy: the new one is closed, not left hanging).
    async fn admit(
        self: &Arc<Self>,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Option<(Slot, Arc<ConnState>)> {
        let until = tokio::time::Instant::now() + self.limits.idle;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(admitted) = self.try_admit() {
                return Some(admitted);
            }
            self.evict_oldest_idle();
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = tokio::time::sleep_until(until) => return None,
                _ = shutdown.as_mut() => return None,
            }
        }
    }
}

/// A response body that keeps its request counted as in flight, and tells
/// the watchdog when it waits for the client to take what it handed out.
pub struct Tracked<B> {
    inner: B,
    active: Active,
    waiting: bool,
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self.waiting {
            self.active.0.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let state = &this.active.0;
        if this.waiting {
            this.waiting = false;
            state.waiting.fetch_sub(1, Ordering::Relaxed);
            state.progress.store(state.ms(), Ordering::Relaxed);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if frame.is_data() && !this.inner.is_end_stream() {
                this.waiting = true;
                state.progress.store(state.ms(), Ordering::Relaxed);
                // Release: the watchdog that sees the count sees the time.
                state.waiting.fetch_add(1, Ordering::Release);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Accepts connections on `listener` into `conns` until `shutdown`
/// resolves, serving each with the handler `make` gives for its peer (over
/// TLS first when `tls` is given); then lets open connections finish for up
/// to `grace`.
#[allow(clippy::too_many_arguments)]
pub async fn serve_guarded<M, H, F, B>(
    listener: TcpListener,
    conns: Arc<Conns>,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<Tls>,
    make: M,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ProxyError>
where
    M: Fn(SocketAddr) -> H,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(builder);
    let limits = conns.limits;
    tokio::pin!(shutdown);
    loop {
        // At the limit with every connection busy, new ones wait in the
        // kernel's backlog.
        if !conns.room(&mut shutdown).await {
            break;
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some((slot, state)) = conns.admit(&mut shutdown).await else { continue };
        let _ = stream.set_nodelay(true);
        let handler = Arc::new(make(peer));
        let tracker = state.clone();
        let service = service_fn(move |req| {
            let active = tracker.request();
            let answer = handler(req);
            async move { Ok::<_, Infallible>(answer.await.map(|inner| Tracked { inner, active, waiting: false })) }
        });
        let (io, late) = crate::io::watch(stream, state.clone(), slot);
        match &tls {
            None => {
                let conn =
                    graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned());
                tokio::spawn(drive(conn, state, limits, late));
            }
            Some(tls) => {
                let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
                // The handshake runs in the connection's own task, under the
                // idle deadline: a client that stalls it holds up no one else.
                tokio::spawn(async move {
                    let io = match tokio::time::timeout(limits.idle, tls.acceptor.accept(io)).await {
                        Ok(Ok(io)) => io,
                        Ok(Err(e)) => return (tls.outcome)(HandshakeOutcome::of(&e)),
                        Err(_) => return (tls.outcome)(HandshakeOutcome::Timeout),
                    };
                    (tls.outcome)(HandshakeOutcome::Ok);
                    if io.get_ref().1.alpn_protocol() == Some(crate::acme::ALPN_ACME_TLS) {
                        // A TLS-ALPN-01 validation: the handshake was the answer (RFC 8737).
                        let mut io = io;
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                        return;
                    }
                    let conn =
                        watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned());
                    // No plain-text 408 on a TLS connection.
                    drive(conn, state, limits, None).await;
                });
            }
        }
    }
    drop(listener);
    tokio::time::timeout(grace, graceful.shutdown()).await.map_err(|_| ProxyError::ShutdownTimeout(grace))
}

/// What a TLS listener needs: the acceptor, and where handshake outcomes go.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Called once per handshake with its outcome (for the metrics).
    pub outcome: Arc<dyn Fn(HandshakeOutcome) + Send + Sync>,
}

/// How a TLS handshake ended, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeOutcome {
    /// It completed.
    Ok,
    /// The client did not finish it within the idle deadline.
    Timeout,
    /// No certificate for the name the client asked for (or no name).
    UnknownName,
    /// The client offered nothing this server accepts (an old protocol version, no common suite).
    NoCommonProtocol,
    /// Not TLS, or a malformed record.
    BadRecord,
    /// The client hung up or sent an alert.
    Closed,
}

impl HandshakeOutcome {
    pub fn label(self) -> &'static str {
        match self {
            HandshakeOutcome::Ok => "ok",
            HandshakeOutcome::Timeout => "timeout",
            HandshakeOutcome::UnknownName => "unknown_name",
            HandshakeOutcome::NoCommonProtocol => "no_common_protocol",
            HandshakeOutcome::BadRecord => "bad_record",
            HandshakeOutcome::Closed => "closed",
        }
    }

    fn of(e: &std::io::Error) -> HandshakeOutcome {
        use tokio_rustls::rustls::Error as TlsError;
        let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<TlsError>()) else {
            return HandshakeOutcome::Closed;
        };
        match tls {
            TlsError::General(_) | TlsError::NoCertificatesPresented => HandshakeOutcome::UnknownName,
            TlsError::PeerIncompatible(_) => HandshakeOutcome::NoCommonProtocol,
            TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. } => HandshakeOutcome::BadRecord,
            _ => HandshakeOutcome::Closed,
        }
    }
}

/// Serves one connection to its end: closed when idle too long, when its
/// writes stall, or when another client needs its slot.
async fn drive<C>(conn: C, state: Arc<ConnState>, limits: ConnLimits, late: Option<crate::io::Late>)
where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    // Boxed so that it can be dropped (closing the socket) before the task ends.
    let mut conn = Box::pin(conn);
    let timed_out = loop {
        let Some(next) = state.check(&limits) else { break true };
        tokio::select! {
            r = &mut conn => {
                // If upgraded, the socket lives on elsewhere, busy: never
                // a connection to close for room.
                state.active.fetch_add(1, Ordering::Relaxed);
                break r.is_err_and(|e| crate::io::is_header_timeout(&*e));
            }
            _ = tokio::time::sleep(next) => {}
            _ = state.evicted.notified() => {
                if state.active.load(Ordering::Relaxed) == 0 {
                    break false;
                }
                // A request came in meanwhile: it stays.
                state.evict.store(false, Ordering::Relaxed);
            }
        }
    };
    // Closing the socket (the duplicate below is closed too).
    drop(conn);
    if let (true, Some(late)) = (timed_out || state.partial.load(Ordering::Relaxed), late) {
        late.request_timeout().await;
    }
}
