//! The one place where errors become answers: a status, a small page of the
//! proxy's own (or the service's maintenance page), a count in the metrics
//! and a line in the access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::AccessEntry;
use crate::backend::Backend;
use crate::error::{ErrorKind, RequestError};
use crate::prepare::X_REQUEST_ID;
use crate::respond::RespBody;
use crate::routing::RouteSpec;
use crate::server::{Client, Proxy};

/// What the access log needs to know of a request once it is answered.
pub(crate) struct LogCtx {
    pub method: Method,
    pub host: String,
    pub path: String,
    pub request_id: String,
    pub peer: SocketAddr,
    pub start: Instant,
    pub internal: bool,
    /// It came over TLS (answers may carry HSTS).
    pub tls: bool,
}

impl LogCtx {
    /// For answers given before the request was taken apart.
    pub fn of(req: &Request<Incoming>, client: &Client, start: Instant) -> LogCtx {
        LogCtx {
            method: req.method().clone(),
            host: req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string(),
            path: req.uri().path().to_string(),
            request_id: req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
            peer: client.addr,
            start,
            internal: client.internal,
            tls: client.tls,
        }
    }

    pub fn entry<'a>(
        &'a self,
        pool: Option<&'a Arc<str>>,
        task: Option<&'a Arc<str>>,
        status: u16,
        bytes: u64,
    ) -> AccessEntry<'a> {
        AccessEntry {
            time: SystemTime::now(),
            client: self.peer.ip(),
            duration: self.start.elapsed(),
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            status,
            bytes,
            pool,
            task,
            request_id: &self.request_id,
            internal: self.internal,
        }
    }
}

impl Proxy {
    /// Answers a request the proxy could not (or would not) forward. The
    /// answer counts against `backend` when a task is to blame.
    pub(crate) fn answer_error(
        &self,
        ctx: &LogCtx,
        route: Option<&RouteSpec>,
        backend: Option<&Arc<Backend>>,
        error: &RequestError,
    ) -> Response<RespBody> {
        let resp = match &error.kind {
            ErrorKind::Maintenance(_, m) => Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                .header(header::RETRY_AFTER, m.retry_after_secs)
                .header(header::CACHE_CONTROL, "no-store")
                .body(RespBody::Full(Some(m.page.clone())))
                .expect("static response parts are valid"),
            ErrorKind::ToHttps(url) => {
                let mut resp = page(error.status(), error.title(), &error.to_string());
                if let Ok(v) = http::HeaderValue::from_str(url) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                resp
            }
            _ => page(error.status(), error.title(), &error.to_string()),
        };
        let mut resp = resp;
        if let Some(r) = route {
            hsts(&mut resp, r, ctx);
        }
        let status = resp.status().as_u16();
        let len = match resp.body() {
            RespBody::Full(Some(b)) => b.len() as u64,
            _ => 0,
        };
        if let Some(r) = route {
            self.metrics.count(&r.pool, status);
        }
        if let Some(b) = backend {
            b.answered(status, Some(ctx.start.elapsed()));
        }
        self.log_ctx(ctx, route, backend, status, len);
        resp
    }

    pub(crate) fn log_ctx(
        &self,
        ctx: &LogCtx,
        route: Option<&RouteSpec>,
        backend: Option<&Arc<Backend>>,
        status: u16,
        bytes: u64,
    ) {
        if let Some(sink) = &self.access {
            sink.log(&ctx.entry(route.map(|r| &r.pool.name), backend.map(|b| &b.task), status, bytes));
        }
    }
}

/// Strict-Transport-Security on an answer over TLS, when the route asks for
/// it and the service did not set its own.
pub(crate) fn hsts<B>(resp: &mut Response<B>, route: &RouteSpec, ctx: &LogCtx) {
    let Some(age) = route.https.hsts.filter(|_| ctx.tls) else { return };
    if !resp.headers().contains_key(header::STRICT_TRANSPORT_SECURITY) {
        if let Ok(v) = http::HeaderValue::from_str(&format!("max-age={age}")) {
            resp.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, v);
        }
    }
}

/// A small HTML page for answers the proxy gives itself.
fn page(status: StatusCode, title: &str, detail: &str) -> Response<RespBody> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\
         <body><h1>{code} {title}</h1><p>{detail}</p><hr><p>wharf</p></body></html>\n",
        code = status.as_u16(),
        detail = html_escape(detail),
    );
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp = resp.header(header::RETRY_AFTER, "5");
    }
    if status.is_client_error() && status != StatusCode::NOT_FOUND {
        // After a malformed request the connection's state is unknown.
        resp = resp.header(header::CONNECTION, "close");
    }
    resp.body(RespBody::Full(Some(Bytes::from(body)))).expect("static response parts are valid")
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
