//! Phase one, resolve: which route a request takes, and whether its service
//! takes requests now (pause holds them, maintenance answers for it).

use std::sync::Arc;

use http::{header, Request, Version};
use hyper::body::Incoming;

use crate::error::{ErrorKind, RequestError};
use crate::pause::PauseOutcome;
use crate::routing::{normalize_host, upstream_path, PlainHttp, RouteSpec, RoutingTable};
use crate::server::{Client, Proxy};

/// A request's route, borrowed from the snapshot the request keeps alive.
pub(crate) struct Routed {
    table: Arc<RoutingTable>,
    index: usize,
    /// The Host header (or HTTP/2 authority) as the client sent it.
    pub raw_host: String,
}

impl Routed {
    pub fn route(&self) -> &RouteSpec {
        &self.table.routes()[self.index]
    }
}

/// A request refused before it was taken apart; the route, if one matched.
pub(crate) struct Refused {
    pub error: RequestError,
    pub routed: Option<Routed>,
}

impl Proxy {
    /// Finds the request's route. A paused service holds it until resumed
    /// (then it is routed again, against the newest snapshot); one in
    /// maintenance answers with its page, except to its own health check.
    pub(crate) async fn resolve(&self, req: &Request<Incoming>, client: &Client) -> Result<Routed, Refused> {
        let refuse = |kind, routed| Refused { error: RequestError::never(kind), routed };
        let raw_host = request_host(req).map_err(|why| refuse(ErrorKind::BadHost(why), None))?;
        let host = normalize_host(&raw_host);
        let path = req.uri().path();
        let mut table = self.table();
        let index = loop {
            let found = if client.internal {
                table.lookup_internal_index(&host, path)
            } else {
                table.lookup_index(&host, path)
            };
            let Some(index) = found else {
                return Err(refuse(ErrorKind::NoRoute { host: host.into_owned(), path: path.to_string() }, None));
            };
            if let Some(kind) = self.plain_http(&table.routes()[index], client, &host, req) {
                return Err(refuse(kind, Some(Routed { table, index, raw_host })));
            }
            let Some(gate) = table.routes()[index].pool.pause.clone() else { break index };
            match gate.wait().await {
                PauseOutcome::Released => table = self.table(),
                PauseOutcome::Refused => {
                    let name = table.routes()[index].pool.name.clone();
                    let routed = Routed { table, index, raw_host };
                    return Err(refuse(ErrorKind::Paused(name), Some(routed)));
                }
            }
        };
        let routed = Routed { table, index, raw_host };
        let pool = &routed.route().pool;
        if let Some(m) = &pool.maintenance {
            // The task's own health check (the path as the task sees it) still goes through.
            if pool.health_path.as_deref() != Some(upstream_path(routed.route(), path).as_ref()) {
                let kind = ErrorKind::Maintenance(pool.name.clone(), m.clone());
                return Err(refuse(kind, Some(routed)));
            }
        }
        Ok(routed)
    }
}

impl Proxy {
    /// A plain-HTTP request on a route served over HTTPS: a redirect to the
    /// same URL over https, or a refusal.
    fn plain_http(&self, route: &RouteSpec, client: &Client, host: &str, req: &Request<Incoming>) -> Option<ErrorKind> {
        if client.tls || client.internal {
            return None;
        }
        let url = |port: Option<u16>| {
            let port = port.filter(|p| *p != 443).map(|p| format!(":{p}")).unwrap_or_default();
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
            format!("https://{host}{port}{target}")
        };
        match (route.https.plain, self.config.https_port) {
            (PlainHttp::Redirect, Some(port)) => Some(ErrorKind::ToHttps(url(Some(port)))),
            (PlainHttp::Refuse, port) => Some(ErrorKind::HttpsOnly(url(port))),
            (PlainHttp::Redirect, None) | (PlainHttp::Serve, _) => None,
        }
    }
}

/// The request's host: the Host header (HTTP/1.1 requires one) or the
/// HTTP/2 authority. A malformed one is a 400.
fn request_host(req: &Request<Incoming>) -> Result<String, &'static str> {
    let hosts = req.headers().get_all(header::HOST);
    let mut it = hosts.iter();
    let host = match (it.next(), it.next()) {
        (Some(_), Some(_)) => return Err("The request has more than one Host header."),
        (Some(h), None) if h.is_empty() => return Err("The Host header is empty."),
        (Some(h), None) => h.to_str().map_err(|_| "The Host header is not valid.")?.to_string(),
        (None, _) => match req.uri().authority() {
            Some(a) => a.as_str().to_string(),
            None if req.version() == Version::HTTP_10 => String::new(),
            None => return Err("The request has no Host header."),
        },
    };
    let valid = host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    if !valid {
        return Err("The Host header is not valid.");
    }
    Ok(host)
}
