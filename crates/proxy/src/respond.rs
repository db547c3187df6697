//! The upstream's answer, streamed to the client: its body keeps the task
//! counted as busy, gives the connection back to the pool and writes the
//! access log line once the last byte has gone out.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::answer::LogCtx;
use crate::backend::InFlight;
use crate::body::ReqBody;
use crate::error::{ErrorKind, RequestError};
use crate::forward::Answer;
use crate::prepare::strip_hop_by_hop;
use crate::routing::RouteSpec;
use crate::server::Proxy;

impl Proxy {
    /// Turns an upstream response into ours; the body wrapper keeps the
    /// task counted as busy, returns the connection to the pool and writes
    /// the access log line when the last byte has gone out.
    pub(crate) fn respond(
        self: Arc<Self>,
        route: &RouteSpec,
        answer: Answer,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        set_cookie: Option<HeaderValue>,
        ctx: LogCtx,
    ) -> Response<RespBody> {
        let Answer { mut guard, conn, mut resp } = answer;
        let status = resp.status();
        self.metrics.count(&route.pool, status.as_u16());
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client) = client_upgrade else {
                let error = RequestError::never(ErrorKind::UnaskedUpgrade(route.pool.name.clone()));
                return self.answer_error(&ctx, Some(route), Some(guard.backend()), &error);
            };
            let upstream = hyper::upgrade::on(&mut resp);
            guard.mark_upgraded();
            self.log_ctx(&ctx, Some(route), Some(guard.backend()), 101, 0);
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
                }
                drop((guard, conn));
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, RespBody::Full(None));
        }
        strip_hop_by_hop(resp.headers_mut());
        if let Some(cookie) = set_cookie {
            // Keeps the client on the backend set it was assigned to.
            resp.headers_mut().append(header::SET_COOKIE, cookie);
        }
        crate::answer::hsts(&mut resp, route, &ctx);
        let (parts, body) = resp.into_parts();
        let stats = self.metrics.pool_stats(&route.pool).cloned();
        let done = Done {
            proxy: self,
            pool: route.pool.name.clone(),
            stats,
            status: status.as_u16(),
            guard,
            conn: Some(conn),
            ctx,
        };
        Response::from_parts(parts, RespBody::Upstream(UpstreamBody { inner: body, sent: 0, done: Some(done) }))
    }
}

/// Finishes a forwarded request when its response body ends (or is dropped).
struct Done {
    proxy: Arc<Proxy>,
    pool: Arc<str>,
    stats: Option<Arc<crate::metrics::PoolStats>>,
    status: u16,
    guard: InFlight,
    conn: Option<SendRequest<ReqBody>>,
    ctx: LogCtx,
}

impl Done {
    fn finish(mut self, sent: u64, complete: bool) {
        if complete {
            if let Some(conn) = self.conn.take() {
                self.guard.backend().put_idle(conn);
            }
        }
        let took = self.ctx.start.elapsed();
        self.guard.backend().answered(self.status, Some(took));
        if let Some(stats) = &self.stats {
            crate::metrics::Metrics::latency(stats, took);
        }
        if let Some(sink) = &self.proxy.access {
            let task = Some(&self.guard.backend().task);
            sink.log(&self.ctx.entry(Some(&self.pool), task, self.status, sent));
        }
    }
}

/// The response body: a page of our own, or the upstream's, streamed.
// Moved once into hyper's response; boxing the large variant would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum RespBody {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

pub struct UpstreamBody {
    inner: Incoming,
    sent: u64,
    done: Option<Done>,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Bodyless answers (HEAD, 204, 304) are never polled: they ended
        // cleanly. Otherwise the client went away mid-body and the
        // connection can't be reused.
        if let Some(done) = self.done.take() {
            done.finish(self.sent, self.inner.is_end_stream());
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Upstream(u) => {
                let polled = Pin::new(&mut u.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            u.sent += d.len() as u64;
                        }
                        if u.inner.is_end_stream() {
                            if let Some(done) = u.done.take() {
                                done.finish(u.sent, true);
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(done) = u.done.take() {
                            done.finish(u.sent, true);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(done) = u.done.take() {
                            done.finish(u.sent, false);
                        }
                    }
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Upstream(u) => u.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RespBody::Full(None) => SizeHint::with_exact(0),
            RespBody::Upstream(u) => u.inner.size_hint(),
        }
    }
}
