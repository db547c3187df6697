//! Phase two, prepare: the request as a task gets it. Its declared size is
//! checked, hop-by-hop headers go, X-Forwarded-* and a request id come in,
//! the path loses the route's prefix if asked, and the body is put under
//! its limit and deadline.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};
use hyper::body::{Body, Incoming};

use crate::answer::LogCtx;
use crate::backend::random_u64;
use crate::body::{ClientBody, ReqBody};
use crate::error::{ErrorKind, RequestError};
use crate::routing::{upstream_path, RouteSpec};
use crate::server::{Client, Proxy};

/// Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A request ready to go upstream, with what its forwarding needs.
pub(crate) struct Outbound {
    /// Taken when sent; given back when it never left.
    pub request: Option<Request<ReqBody>>,
    /// A copy to send again after a reset, kept only for requests that
    /// can be replayed: idempotent and bodyless. An upgrade handshake may
    /// be sent again too: nothing was upgraded yet.
    pub replay: Option<Replay>,
    /// Set once the client's body has all arrived; None without a body.
    pub body_done: Option<Arc<AtomicBool>>,
    pub max_body: u64,
    /// The client's side of an upgrade (WebSocket) it asked for.
    pub client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    pub ctx: LogCtx,
}

/// What is needed to send a bodyless request again.
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    pub fn request(self) -> Request<ReqBody> {
        let mut again = Request::new(ReqBody::Empty);
        *again.method_mut() = self.method;
        *again.uri_mut() = self.uri;
        *again.headers_mut() = self.headers;
        again
    }
}

impl Proxy {
    /// The route's body limit; refuses (413) a body declared larger than
    /// it, before reading any of it.
    pub(crate) fn check_limits(&self, req: &Request<Incoming>, route: &RouteSpec) -> Result<u64, RequestError> {
        let max_body = route.limits.max_body.unwrap_or(self.config.max_body);
        if declared_length(req).is_some_and(|n| n > max_body) {
            return Err(RequestError::never(ErrorKind::TooLarge(max_body)));
        }
        Ok(max_body)
    }

    /// Takes the request apart into what goes upstream (within `max_body`,
    /// see [`Proxy::check_limits`]).
    pub(crate) fn prepare(
        &self,
        mut req: Request<Incoming>,
        client: &Client,
        route: &RouteSpec,
        max_body: u64,
        raw_host: String,
        start: Instant,
    ) -> Outbound {
        let declared = declared_length(&req);
        let request_id = match req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
            Some(id) if !id.is_empty() && id.len() <= 200 => id.to_string(),
            _ => format!("{:016x}{:016x}", random_u64(), random_u64()),
        };
        let upgrade = is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let log_method = parts.method.clone();
        // Only an access log needs its own copy of the path.
        let log_path = if self.access.is_some() { parts.uri.path().to_string() } else { String::new() };
        let path = upstream_path(route, parts.uri.path());
        // Unchanged paths keep the client's bytes as they are (no copy).
        let pq = match parts.uri.query() {
            _ if path == parts.uri.path() => parts.uri.path_and_query().cloned(),
            Some(q) => PathAndQuery::try_from(format!("{path}?{q}")).ok(),
            None => PathAndQuery::try_from(path.as_ref()).ok(),
        };
        parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
        parts.version = Version::HTTP_11;
        let keep_upgrade = if upgrade { parts.headers.get(header::UPGRADE).cloned() } else { None };
        strip_hop_by_hop(&mut parts.headers);
        if let Some(u) = keep_upgrade {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, u);
        }
        forwarded_headers(&mut parts.headers, client, &raw_host);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            parts.headers.insert(X_REQUEST_ID, v);
        }
        let bodyless = declared.unwrap_or(0) == 0 && body.is_end_stream();
        let idempotent = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );
        let replay = (idempotent && bodyless).then(|| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        });
        let mut body_done = None;
        let body = if bodyless {
            ReqBody::Empty
        } else {
            let deadline = start.checked_add(self.config.body_timeout).unwrap_or(start + Duration::from_secs(86_400));
            let (b, done) = ClientBody::new(body, max_body, deadline);
            body_done = Some(done);
            ReqBody::Stream(b)
        };
        let ctx = LogCtx {
            method: log_method,
            host: raw_host,
            path: log_path,
            request_id,
            peer: client.addr,
            start,
            internal: client.internal,
            tls: client.tls,
        };
        Outbound { request: Some(Request::from_parts(parts, body)), replay, body_done, max_body, client_upgrade, ctx }
    }
}

fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    if let Some(conn) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .ok()
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
}

fn forwarded_headers(headers: &mut HeaderMap, client: &Client, host: &str) {
    match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {}", client.addr.ip())) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        None => {
            if let Some(ip) = &client.ip {
                headers.insert(X_FORWARDED_FOR, ip.clone());
            }
        }
    }
    let proto = if client.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // The client's Host value is shared, not copied.
    if let Some(v) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, v);
    } else if let Ok(v) = HeaderValue::from_str(host) {
        // HTTP/2 clients send :authority instead of Host; HTTP/1.1 upstreams need Host.
        headers.insert(X_FORWARDED_HOST, v.clone());
        headers.insert(header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
