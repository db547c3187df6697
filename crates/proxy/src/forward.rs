//! Phase three, forward: choose a task, connect, send, and on failure try
//! again where the error says it is safe and the retry policy allows it.
//! During a blue-green bake a 5xx of the new set is held while the standby
//! set is asked the same (replayable) request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::backend::{Backend, InFlight};
use crate::body::{BodyError, ReqBody};
use crate::error::{ErrorKind, RequestError, Retry};
use crate::prepare::Outbound;
use crate::retry::RetryPolicy;
use crate::routing::{Pool, RouteSpec};
use crate::server::Proxy;

/// How long a replay waits for a new routing snapshot before it goes back
/// to the only task, which just reset a new connection.
const SAME_TASK_REPLAY_WAIT: Duration = Duration::from_millis(500);

/// A task's answer, with what has to live as long as its body.
pub(crate) struct Answer {
    pub guard: InFlight,
    pub conn: SendRequest<ReqBody>,
    pub resp: Response<Incoming>,
}

/// No answer came: the error to answer with, and the task to blame.
pub(crate) struct Failure {
    pub error: RequestError,
    pub backend: Option<Arc<Backend>>,
}

impl Failure {
    /// The client's own fault: no task is to blame for it.
    fn client(error: RequestError) -> Failure {
        Failure { error, backend: None }
    }
}

impl Proxy {
    /// Sends the request to a task of `route`'s pool (of backend set `set`
    /// first), holding it (bounded) while the pool has none that can take
    /// it.
    pub(crate) async fn forward(
        &self,
        route: &RouteSpec,
        out: &mut Outbound,
        set: Option<u64>,
    ) -> Result<Answer, Failure> {
        self.budget.deposit();
        let name = &route.pool.name;
        let connect_timeout = route.limits.connect_timeout.unwrap_or(self.config.connect_timeout);
        let response_timeout = route.limits.response_timeout.unwrap_or(self.config.response_timeout);
        let mut policy = RetryPolicy::new(&self.budget, set);
        // What the client gets when no task answers.
        let mut failure = RequestError::never(ErrorKind::NoTask(name.clone()));
        let mut pool = route.pool.clone();
        let mut hold_until: Option<Instant> = None;
        // A 5xx of the live set, kept while the standby set is asked: the
        // answer if the standby set gives none.
        let mut held_5xx: Option<Answer> = None;
        while !policy.exhausted() {
            let Some(backend) = policy.choose(&pool) else {
                // Nothing can take it now: wait for tasks (bounded) unless
                // the request can't be sent again.
                if out.request.is_none() || policy.is_standby_only() {
                    break;
                }
                let until = *hold_until.get_or_insert_with(|| Instant::now() + self.config.hold_timeout);
                if !self.hold_for_task(&mut pool, &mut policy, until).await {
                    break;
                }
                continue;
            };
            let guard = backend.start();
            let (mut conn, pooled) = match connect(&backend, connect_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    backend.failed();
                    policy.exclude(backend.clone());
                    self.metrics.upstream_error(name, "connect");
                    tracing::debug!("connect to {} ({}) failed: {e}", backend.task, backend.addr);
                    failure = RequestError::new(ErrorKind::Connect(name.clone()), Retry::Safe);
                    continue;
                }
            };
            if !policy.may_send(&pool, &backend) {
                break;
            }
            let req = out.request.take().expect("a request is pending for every attempt");
            let error = match tokio::time::timeout(response_timeout, conn.try_send_request(req)).await {
                Ok(Ok(resp)) => {
                    backend.succeeded();
                    if let Some(h) = held_5xx.take() {
                        // The set on standby answered instead; the 5xx still
                        // counts against the task that gave it.
                        h.guard.backend().answered(h.resp.status().as_u16(), Some(out.ctx.start.elapsed()));
                        self.metrics.upstream_error(&pool.name, "5xx_fallback");
                    }
                    let answer = Answer { guard, conn, resp };
                    if answer.resp.status().is_server_error() && !policy.is_standby_only() && !pool.fallback.is_empty()
                    {
                        if let Some(replay) = out.replay.take() {
                            policy.exclude(backend);
                            held_5xx = Some(answer);
                            out.request = Some(replay.request());
                            policy.standby_only();
                            continue;
                        }
                    }
                    return Ok(answer);
                }
                Err(_) => {
                    if out.body_done.as_ref().is_some_and(|d| !d.load(Ordering::Relaxed)) {
                        // Still waiting for the client's body: the client is slow, not the task.
                        return Err(Failure::client(RequestError::never(ErrorKind::BodyTimeout(
                            self.config.body_timeout,
                        ))));
                    }
                    if let Some(h) = held_5xx.take() {
                        return Ok(h);
                    }
                    self.metrics.upstream_error(name, "timeout");
                    let error = RequestError::never(ErrorKind::Timeout(name.clone(), response_timeout));
                    return Err(Failure { error, backend: Some(backend) });
                }
                Ok(Err(e)) => {
                    policy.exclude(backend.clone());
                    let (error, unsent) = send_error(e, &backend, name, self.config.body_timeout, out.max_body);
                    out.request = unsent;
                    error
                }
            };
            match error.retry {
                // The connection closed before the request left: safe to send elsewhere.
                Retry::Safe => continue,
                // Only the client's body fails a send for good (timeouts end above).
                Retry::Never => return Err(Failure::client(error)),
                Retry::IfReplayable => {
                    backend.failed();
                    self.metrics.upstream_error(name, "reset");
                    failure = error;
                    // Reset before any response byte: an idempotent, bodyless request is sent once more.
                    let Some(replay) = out.replay.take() else { break };
                    out.request = Some(replay.request());
                    policy.replay_allowing_same();
                    if policy.none_left(&pool) {
                        self.before_same_task(&mut pool, pooled).await;
                    }
                }
            }
        }
        if let Some(h) = held_5xx {
            // The standby set could not answer: the new set's answer stands.
            return Ok(h);
        }
        Err(Failure { error: failure, backend: policy.last_tried().cloned() })
    }
}

impl Proxy {
    /// Waits (bounded) for a snapshot with a task that can take the
    /// request; false when it may wait no longer.
    async fn hold_for_task(&self, pool: &mut Arc<Pool>, policy: &mut RetryPolicy<'_>, until: Instant) -> bool {
        let before = pool.clone();
        if !self.hold(pool, until).await {
            return false;
        }
        if !Arc::ptr_eq(&before, pool) {
            policy.snapshot_changed();
        }
        true
    }

    /// The only task reset the connection: it may be going away (routing
    /// hears of an exit within milliseconds). Gives routing a moment to say
    /// so before the replay goes back there; a reset of a new connection
    /// says more than one of a pooled connection.
    async fn before_same_task(&self, pool: &mut Arc<Pool>, pooled: bool) {
        let wait = if pooled { SAME_TASK_REPLAY_WAIT / 5 } else { SAME_TASK_REPLAY_WAIT };
        let until = Instant::now() + wait;
        let before = pool.clone();
        while Arc::ptr_eq(&before, pool) && self.hold(pool, until).await {}
    }
}

/// What a failed send means: the connection closed before the request
/// left (it is given back: safe to send elsewhere), the client's body was
/// at fault (never retried, the task is not to blame), or the task reset
/// the connection after the request went out (only a replay may follow).
fn send_error(
    e: hyper::client::conn::TrySendError<Request<ReqBody>>,
    backend: &Backend,
    name: &Arc<str>,
    body_timeout: Duration,
    max_body: u64,
) -> (RequestError, Option<Request<ReqBody>>) {
    let mut e = e;
    if let Some(unsent) = e.take_message() {
        return (RequestError::new(ErrorKind::Unsent(name.clone()), Retry::Safe), Some(unsent));
    }
    let err = e.into_error();
    let kind = match client_body_error(&err) {
        Some(BodyError::TooLarge) => ErrorKind::TooLarge(max_body),
        Some(BodyError::Timeout) => ErrorKind::BodyTimeout(body_timeout),
        Some(BodyError::Client(e)) => ErrorKind::BadBody(e.to_string()),
        None => {
            tracing::debug!("{} ({}) failed: {err}", backend.task, backend.addr);
            return (RequestError::new(ErrorKind::Reset(name.clone()), Retry::IfReplayable), None);
        }
    };
    (RequestError::never(kind), None)
}

/// A connection to the backend: a pooled one (true) or a new one.
async fn connect(backend: &Backend, timeout: Duration) -> Result<(SendRequest<ReqBody>, bool), String> {
    if let Some(conn) = backend.take_idle() {
        return Ok((conn, true));
    }
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(backend.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no connection within {timeout:?}")),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok((sender, false))
}

/// The client's body error behind a failed upstream request, if that is
/// why it failed.
fn client_body_error(err: &hyper::Error) -> Option<&BodyError> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = src {
        if let Some(b) = e.downcast_ref::<BodyError>() {
            return Some(b);
        }
        src = e.source();
    }
    None
}
