//! The routing snapshot: host + path prefix → pool of ready backends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One task that can take requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub task: String,
}

/// The ready backends of one service. Shared by every route to it.
#[derive(Debug)]
pub struct Pool {
    /// "app/service", for pages and logs.
    pub name: String,
    pub backends: Vec<Backend>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(name: impl Into<String>, backends: Vec<Backend>) -> Pool {
        Pool { name: name.into(), backends, next: AtomicUsize::new(0) }
    }

    /// Round robin over the backends; None when the pool is empty.
    pub fn pick(&self) -> Option<&Backend> {
        if self.backends.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(&self.backends[i % self.backends.len()])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// "*.example.com" stored as ".example.com": matches one or more labels before it.
    Wildcard(String),
}

impl HostMatch {
    pub fn from_spec(host: Option<&str>) -> HostMatch {
        match host {
            None => HostMatch::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Wildcard(suffix.to_ascii_lowercase()),
                None => HostMatch::Exact(h.to_ascii_lowercase()),
            },
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }

    /// Higher is more specific: exact, then longer wildcards, then any.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Exact(_) => (2, 0),
            HostMatch::Wildcard(s) => (1, s.len()),
            HostMatch::Any => (0, 0),
        }
    }
}

/// A route as the control plane hands it over.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub host: HostMatch,
    /// Starts with '/', no trailing '/' unless it is "/".
    pub path: String,
    pub strip_prefix: bool,
    pub pool: Arc<Pool>,
}

/// An immutable snapshot; the proxy swaps whole tables, never edits one.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Most specific first: host rank, then path length.
    routes: Vec<RouteSpec>,
}

/// The outcome of matching a request.
pub struct Matched<'a> {
    pub route: &'a RouteSpec,
}

impl RoutingTable {
    pub fn new(mut routes: Vec<RouteSpec>) -> RoutingTable {
        routes.sort_by(|a, b| b.host.rank().cmp(&a.host.rank()).then(b.path.len().cmp(&a.path.len())));
        RoutingTable { routes }
    }

    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// `host` must already be normalised (see [`normalize_host`]).
    pub fn lookup(&self, host: &str, path: &str) -> Option<Matched<'_>> {
        self.routes
            .iter()
            .find(|r| r.host.matches(host) && prefix_matches(&r.path, path))
            .map(|route| Matched { route })
    }
}

/// "/api" matches "/api", "/api/" and "/api/x" but not "/apix".
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/" || path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Lower case, without port and trailing dot, so "Example.COM.:8080" routes
/// like "example.com".
pub fn normalize_host(raw: &str) -> String {
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a port after them.
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { raw })
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// The path forwarded upstream: with the route's prefix removed if asked.
pub(crate) fn upstream_path<'a>(route: &RouteSpec, path: &'a str) -> std::borrow::Cow<'a, str> {
    if !route.strip_prefix || route.path == "/" {
        return path.into();
    }
    let rest = &path[route.path.len()..];
    if rest.is_empty() {
        "/".into()
    } else {
        rest.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, name: &str) -> RouteSpec {
        RouteSpec {
            host: HostMatch::from_spec(host),
            path: path.into(),
            strip_prefix: false,
            pool: Arc::new(Pool::new(name, vec![])),
        }
    }

    fn table() -> RoutingTable {
        RoutingTable::new(vec![
            route(None, "/", "any-root"),
            route(Some("example.com"), "/", "site"),
            route(Some("example.com"), "/api", "api"),
            route(Some("*.example.com"), "/", "wild"),
            route(Some("*.b.example.com"), "/", "wild-b"),
            route(None, "/admin", "admin"),
        ])
    }

    fn hit(t: &RoutingTable, host: &str, path: &str) -> String {
        t.lookup(&normalize_host(host), path).map(|m| m.route.pool.name.clone()).unwrap_or_default()
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        assert_eq!(hit(&t, "example.com", "/api"), "api");
        assert_eq!(hit(&t, "example.com", "/api/v1/x"), "api");
        assert_eq!(hit(&t, "example.com", "/apix"), "site");
        assert_eq!(hit(&t, "example.com", "/"), "site");
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let t = table();
        assert_eq!(hit(&t, "x.example.com", "/"), "wild");
        assert_eq!(hit(&t, "y.b.example.com", "/"), "wild-b");
        assert_eq!(hit(&t, "example.com", "/admin"), "site", "a host route wins over a hostless one");
        assert_eq!(hit(&t, "other.org", "/admin"), "admin");
        assert_eq!(hit(&t, "other.org", "/x"), "any-root");
    }

    #[test]
    fn host_is_normalised() {
        let t = table();
        assert_eq!(hit(&t, "EXAMPLE.com.:8080", "/api"), "api");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("Host"), "host");
    }

    #[test]
    fn no_match_without_catch_all() {
        let t = RoutingTable::new(vec![route(Some("example.com"), "/api", "api")]);
        assert!(t.lookup("example.com", "/").is_none());
        assert!(t.lookup("example.org", "/api").is_none());
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let addr = |p| Backend { addr: ([127, 0, 0, 1], p).into(), task: format!("t{p}") };
        let pool = Pool::new("p", vec![addr(1), addr(2), addr(3)]);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[(pool.pick().unwrap().addr.port() - 1) as usize] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        assert!(Pool::new("empty", vec![]).pick().is_none());
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let mut r = route(None, "/api", "api");
        r.strip_prefix = true;
        assert_eq!(upstream_path(&r, "/api/users"), "/users");
        assert_eq!(upstream_path(&r, "/api"), "/");
    }
}
