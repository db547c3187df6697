//! The routing snapshot: host + path prefix → pool of ready backends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{random_u64, Backend};

/// How a pool chooses among its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Power of two random choices on least outstanding requests: spreads
    /// like round robin but steers away from slow or stuck tasks.
    #[default]
    LeastOutstanding,
    RoundRobin,
}

/// Why a pool answers without forwarding.
#[derive(Debug, Clone)]
pub struct Maintenance {
    /// The full HTML page to answer with (503 + Retry-After).
    pub page: bytes::Bytes,
    pub retry_after_secs: u32,
}

/// Tasks of one revision of a service, taking a share of its traffic.
#[derive(Debug)]
pub struct BackendSet {
    /// Which set this is, stable from one snapshot to the next: the
    /// revision number. Sticky clients are kept on a set by its key.
    pub key: u64,
    /// The set's share of new requests, relative to the weights of the
    /// other sets of the pool that have a backend: 10 and 90 send one
    /// request in ten here. A set with no backends gets no traffic and its
    /// weight is not counted; if every set with a backend weighs 0, they
    /// share requests evenly (fail open rather than refuse).
    pub weight: u32,
    pub backends: Vec<Arc<Backend>>,
    /// Round robin position.
    next: AtomicUsize,
}

impl BackendSet {
    pub fn new(key: u64, weight: u32, backends: Vec<Arc<Backend>>) -> BackendSet {
        BackendSet { key, weight, backends, next: AtomicUsize::new(0) }
    }

    /// Chooses a backend not in `exclude`, preferring ones not ejected after
    /// failures; when every candidate is ejected it fails open rather than
    /// answer 503 while tasks may be fine. None when nothing is left.
    fn pick(&self, balance: Balance, exclude: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let backends = &self.backends;
        let n = backends.len();
        let allowed = |b: &Arc<Backend>| !exclude.iter().any(|e| Arc::ptr_eq(e, b));
        let good = |b: &Arc<Backend>| allowed(b) && !b.ejected();
        match n {
            0 => return None,
            1 => return allowed(&backends[0]).then(|| backends[0].clone()),
            _ => {}
        }
        let chosen = match balance {
            Balance::LeastOutstanding => {
                let r = random_u64();
                let i = (r % n as u64) as usize;
                let mut j = ((r >> 32) % (n as u64 - 1)) as usize;
                if j >= i {
                    j += 1;
                }
                let (a, b) = (&backends[i], &backends[j]);
                match (good(a), good(b)) {
                    (true, true) => Some(if b.load() < a.load() { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => None,
                }
            }
            Balance::RoundRobin => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                good(&backends[i]).then(|| &backends[i])
            }
        };
        if let Some(b) = chosen {
            return Some(b.clone());
        }
        let start = (random_u64() % n as u64) as usize;
        let ring = || (0..n).map(|k| &backends[(start + k) % n]);
        ring().find(|b| good(b)).or_else(|| ring().find(|b| allowed(b))).cloned()
    }
}

/// How a client is kept on one backend set of a pool while it has several
/// (a canary): without it each request is assigned by weight alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// A request whose cookie of this name holds the key of a set of the
    /// pool goes to that set; any other is assigned by weight and the task's
    /// answer sets the cookie to the assigned set's key
    /// (`NAME=KEY; Path=/; HttpOnly; SameSite=Lax`), even when a retry had to
    /// cross to another set: the client goes back to its set next time.
    Cookie(String),
    /// A consistent hash of this header's value chooses the set: the same
    /// value goes to the same set for as long as the weights (and which sets
    /// have backends) stay the same. Without the header: by weight.
    Header(http::HeaderName),
}

/// The set a request was assigned to, and the cookie that keeps it there.
#[derive(Debug, Default)]
pub(crate) struct Assigned {
    pub set: Option<u64>,
    pub set_cookie: Option<http::HeaderValue>,
}

/// The ready backends of one service, in weighted sets. Shared by every
/// route to it.
#[derive(Debug)]
pub struct Pool {
    /// "app/service", for pages, logs and metrics.
    pub name: Arc<str>,
    /// The sets that take traffic, by weight (one during an ordinary deploy).
    pub sets: Vec<BackendSet>,
    /// Tried when the sets can't serve a request that may be sent again:
    /// during a blue-green bake, the set that had the traffic before.
    pub fallback: Vec<Arc<Backend>>,
    pub balance: Balance,
    pub sticky: Option<Sticky>,
    /// Requests to this path bypass maintenance (the service's health check).
    pub health_path: Option<String>,
    pub maintenance: Option<Maintenance>,
    /// Set while the service is paused: requests wait on it.
    pub pause: Option<Arc<crate::pause::PauseGate>>,
    /// Metric handles, made by the proxy on first use.
    pub(crate) stats: std::sync::OnceLock<Arc<crate::metrics::PoolStats>>,
}

/// The weight of the one set of [`Pool::new`].
pub const FULL_WEIGHT: u32 = 100;

impl Pool {
    /// A pool of one set (key 0, weight [`FULL_WEIGHT`]).
    pub fn new(name: impl Into<Arc<str>>, backends: Vec<Arc<Backend>>) -> Pool {
        Pool::with_sets(name, vec![BackendSet::new(0, FULL_WEIGHT, backends)])
    }

    pub fn with_sets(name: impl Into<Arc<str>>, sets: Vec<BackendSet>) -> Pool {
        Pool {
            name: name.into(),
            sets,
            fallback: Vec::new(),
            balance: Balance::default(),
            sticky: None,
            health_path: None,
            maintenance: None,
            pause: None,
            stats: std::sync::OnceLock::new(),
        }
    }

    /// Every backend of every set (not the fallback).
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.sets.iter().flat_map(|s| s.backends.iter())
    }

    /// Chooses a backend not in `exclude`: a set by weight, then a backend
    /// within it (see [`Pool::pick_in`]).
    pub fn pick(&self, exclude: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        self.pick_in(None, exclude)
    }

    /// Chooses a backend not in `exclude` from the set with key `set` (by
    /// weight when None or when the pool has no such set), balanced within
    /// it; when that set has nothing left, from the other sets.
    pub fn pick_in(&self, set: Option<u64>, exclude: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        if let [only] = self.sets.as_slice() {
            return only.pick(self.balance, exclude);
        }
        let first = set.and_then(|k| self.set_index(k)).or_else(|| self.weighted(random_u64()));
        if let Some(b) = first.and_then(|i| self.sets[i].pick(self.balance, exclude)) {
            return Some(b);
        }
        let rest = self.sets.iter().enumerate().filter(|(i, _)| Some(*i) != first);
        rest.filter_map(|(_, s)| s.pick(self.balance, exclude)).next()
    }

    fn set_index(&self, key: u64) -> Option<usize> {
        self.sets.iter().position(|s| s.key == key)
    }

    /// The set that `draw` (uniform over u64) falls in, by weight, among the
    /// sets with a backend.
    fn weighted(&self, draw: u64) -> Option<usize> {
        let live = || self.sets.iter().enumerate().filter(|(_, s)| !s.backends.is_empty());
        let total = live().fold(0u64, |t, (_, s)| t.saturating_add(u64::from(s.weight)));
        if total == 0 {
            let n = live().count() as u64;
            return if n == 0 { None } else { live().nth((draw % n) as usize).map(|(i, _)| i) };
        }
        let mut at = draw % total;
        for (i, s) in live() {
            let w = u64::from(s.weight);
            if at < w {
                return Some(i);
            }
            at -= w;
        }
        None
    }

    /// Assigns a request to a set: by its sticky cookie or header if the
    /// pool has them, else by weight. A pool of one set without stickiness
    /// needs no assignment.
    pub(crate) fn assign(&self, headers: &http::HeaderMap) -> Assigned {
        if self.sets.len() <= 1 && self.sticky.is_none() {
            return Assigned::default();
        }
        let by_weight = |draw: u64| self.weighted(draw).map(|i| self.sets[i].key);
        match &self.sticky {
            None => Assigned { set: by_weight(random_u64()), set_cookie: None },
            Some(Sticky::Header(name)) => {
                let draw = headers.get(name).map_or_else(random_u64, |v| stable_hash(v.as_bytes()));
                Assigned { set: by_weight(draw), set_cookie: None }
            }
            Some(Sticky::Cookie(name)) => {
                let kept =
                    cookie(headers, name).and_then(|v| v.parse::<u64>().ok()).filter(|k| self.set_index(*k).is_some());
                if let Some(key) = kept {
                    return Assigned { set: Some(key), set_cookie: None };
                }
                let set = by_weight(random_u64());
                let set_cookie = set.and_then(|key| {
                    http::HeaderValue::from_str(&format!("{name}={key}; Path=/; HttpOnly; SameSite=Lax")).ok()
                });
                Assigned { set, set_cookie }
            }
        }
    }
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    let pairs = headers.get_all(http::header::COOKIE).into_iter().filter_map(|v| v.to_str().ok());
    pairs.flat_map(|v| v.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// FNV-1a with a final mix: the same bytes give the same number in every
/// process, so a header keeps its set across restarts of the proxy.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Pool {
    /// A fallback backend not in `exclude`, healthy ones first.
    pub fn pick_fallback(&self, exclude: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let n = self.fallback.len();
        if n == 0 {
            return None;
        }
        let allowed = |b: &&Arc<Backend>| !exclude.iter().any(|e| Arc::ptr_eq(e, b));
        let start = (random_u64() % n as u64) as usize;
        let ring = || (0..n).map(|k| &self.fallback[(start + k) % n]).filter(allowed);
        ring().find(|b| !b.ejected()).or_else(|| ring().next()).cloned()
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
    /// Per-route overrides of the proxy-wide limits.
    pub limits: RouteLimits,
    /// What plain-HTTP requests get, and what HTTPS answers carry.
    pub https: RouteHttps,
}

/// A route's HTTPS behaviour, as the control plane decided it (it knows
/// whether the host has a certificate being served).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteHttps {
    pub plain: PlainHttp,
    /// Strict-Transport-Security max-age, in seconds, on answers over HTTPS.
    pub hsts: Option<u64>,
}

/// What a request that came over plain HTTP gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PlainHttp {
    /// Served.
    #[default]
    Serve,
    /// 308 to the same URL over https (when the proxy has an HTTPS listener).
    Redirect,
    /// 403: the route is served over HTTPS only.
    Refuse,
}

/// Limits a route may set; None takes the proxy's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteLimits {
    pub connect_timeout: Option<Duration>,
    /// Until the upstream's response headers arrive.
    pub response_timeout: Option<Duration>,
    pub max_body: Option<u64>,
}

/// An immutable snapshot; the proxy swaps whole tables, never edits one.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// The external routes, most specific first (host rank, then path
    /// length), then the internal ones (see [`RoutingTable::with_internal`]).
    routes: Vec<RouteSpec>,
    /// How many of `routes` are external.
    external: usize,
}

/// The outcome of matching a request.
pub struct Matched<'a> {
    pub route: &'a RouteSpec,
}

impl RoutingTable {
    pub fn new(mut routes: Vec<RouteSpec>) -> RoutingTable {
        sort_routes(&mut routes);
        let external = routes.len();
        RoutingTable { routes, external }
    }

    /// Adds the routes of the internal listener (service discovery:
    /// `SERVICE.local` and the like). They are matched only for requests
    /// that came in on an internal listener, never for external traffic;
    /// they share the external routes' pools.
    pub fn with_internal(mut self, mut internal: Vec<RouteSpec>) -> RoutingTable {
        sort_routes(&mut internal);
        self.routes.truncate(self.external);
        self.routes.extend(internal);
        self
    }

    /// Every route: the external ones, then the internal ones.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// The routes of the internal listener.
    pub fn internal_routes(&self) -> &[RouteSpec] {
        &self.routes[self.external..]
    }

    /// `host` must already be normalised (see [`normalize_host`]).
    pub fn lookup(&self, host: &str, path: &str) -> Option<Matched<'_>> {
        self.lookup_index(host, path).map(|i| Matched { route: &self.routes[i] })
    }

    /// Like [`RoutingTable::lookup`], as a position in [`RoutingTable::routes`].
    pub fn lookup_index(&self, host: &str, path: &str) -> Option<usize> {
        self.routes[..self.external].iter().position(|r| r.host.matches(host) && prefix_matches(&r.path, path))
    }

    /// The route of a request that came in on an internal listener, as a
    /// position in [`RoutingTable::routes`].
    pub fn lookup_internal_index(&self, host: &str, path: &str) -> Option<usize> {
        self.internal_routes()
            .iter()
            .position(|r| r.host.matches(host) && prefix_matches(&r.path, path))
            .map(|i| i + self.external)
    }
}

fn sort_routes(routes: &mut [RouteSpec]) {
    routes.sort_by(|a, b| b.host.rank().cmp(&a.host.rank()).then(b.path.len().cmp(&a.path.len())));
}

/// "/api" matches "/api", "/api/" and "/api/x" but not "/apix".
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/" || path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Lower case, without port and trailing dot, so "Example.COM.:8080" routes
/// like "example.com". Borrows when there is nothing to change (the usual case).
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a port after them.
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { raw })
    };
    let trimmed = without_port.trim_end_matches('.');
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        trimmed.to_ascii_lowercase().into()
    } else {
        trimmed.into()
    }
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

    #[test]
    fn the_fallback_set_is_picked_apart_from_the_pool_and_skips_what_was_tried() {
        let b = |n: u16| Arc::new(Backend::new(format!("t{n}"), ([127, 0, 0, 1], n).into()));
        let (live, standby1, standby2) = (b(1), b(2), b(3));
        let mut pool = Pool::new("a/web", vec![live.clone()]);
        assert!(pool.pick_fallback(&[]).is_none(), "no fallback outside a bake");
        pool.fallback = vec![standby1.clone(), standby2.clone()];
        for _ in 0..20 {
            let f = pool.pick_fallback(&[]).unwrap();
            assert!(!Arc::ptr_eq(&f, &live), "the fallback never answers with the live set");
            let g = pool.pick_fallback(std::slice::from_ref(&standby1)).unwrap();
            assert!(Arc::ptr_eq(&g, &standby2));
        }
        assert!(pool.pick_fallback(&[standby1, standby2]).is_none());
    }

    fn route(host: Option<&str>, path: &str, name: &str) -> RouteSpec {
        RouteSpec {
            host: HostMatch::from_spec(host),
            path: path.into(),
            strip_prefix: false,
            pool: Arc::new(Pool::new(name, vec![])),
            limits: RouteLimits::default(),
            https: RouteHttps::default(),
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
        t.lookup(&normalize_host(host), path).map(|m| m.route.pool.name.to_string()).unwrap_or_default()
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
    fn internal_routes_match_only_internal_requests() {
        let t = RoutingTable::new(vec![route(Some("example.com"), "/", "site")])
            .with_internal(vec![route(Some("api.local"), "/", "api"), route(Some("127.64.0.1"), "/", "api")]);
        assert!(t.lookup_index("api.local", "/").is_none(), "internal names are not routed externally");
        let i = t.lookup_internal_index("api.local", "/x").unwrap();
        assert_eq!(&*t.routes()[i].pool.name, "api");
        assert!(t.lookup_internal_index(&normalize_host("127.64.0.1:8181"), "/").is_some());
        assert!(t.lookup_internal_index("example.com", "/").is_none(), "external hosts are not routed internally");
        assert_eq!(t.internal_routes().len(), 2);
        assert_eq!(t.routes().len(), 3);
    }

    #[test]
    fn no_match_without_catch_all() {
        let t = RoutingTable::new(vec![route(Some("example.com"), "/api", "api")]);
        assert!(t.lookup("example.com", "/").is_none());
        assert!(t.lookup("example.org", "/api").is_none());
    }

    fn backends(n: u16) -> Vec<Arc<Backend>> {
        (1..=n).map(|p| Arc::new(Backend::new(format!("t{p}"), ([127, 0, 0, 1], p).into()))).collect()
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let mut pool = Pool::new("p", backends(3));
        pool.balance = Balance::RoundRobin;
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[(pool.pick(&[]).unwrap().addr.port() - 1) as usize] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        assert!(Pool::new("empty", vec![]).pick(&[]).is_none());
    }

    #[test]
    fn least_outstanding_avoids_busy_backends() {
        let pool = Pool::new("p", backends(2));
        let busy = pool.sets[0].backends[0].clone();
        let _held: Vec<_> = (0..5).map(|_| busy.start()).collect();
        for _ in 0..100 {
            assert_eq!(&*pool.pick(&[]).unwrap().task, "t2", "the idle backend wins every two-way choice");
        }
    }

    #[test]
    fn excluded_and_ejected_backends_are_skipped_but_fail_open() {
        let pool = Pool::new("p", backends(3));
        let first = pool.sets[0].backends[0].clone();
        for _ in 0..50 {
            assert_ne!(&*pool.pick(std::slice::from_ref(&first)).unwrap().task, "t1");
        }
        pool.sets[0].backends[1].failed();
        pool.sets[0].backends[2].failed();
        for _ in 0..50 {
            assert_eq!(&*pool.pick(&[]).unwrap().task, "t1", "ejected backends get no traffic");
        }
        pool.sets[0].backends[0].failed();
        assert!(pool.pick(&[]).is_some(), "all ejected: fail open");
        let all = pool.sets[0].backends.clone();
        assert!(pool.pick(&all).is_none(), "all excluded: nothing");
        pool.sets[0].backends[1].succeeded();
        assert!(!pool.sets[0].backends[1].ejected(), "a success ends the ejection");
    }

    #[test]
    fn sets_are_drawn_by_weight_among_those_with_a_backend() {
        let set = |key, weight, n| BackendSet::new(key, weight, backends(n));
        let pool = Pool::with_sets("p", vec![set(1, 10, 1), set(2, 0, 1), set(3, 90, 0), set(4, 30, 1)]);
        let keys: Vec<u64> = (0..40).map(|d| pool.sets[pool.weighted(d).unwrap()].key).collect();
        assert!(keys[..10].iter().all(|k| *k == 1) && keys[10..].iter().all(|k| *k == 4), "{keys:?}");
        let zero = Pool::with_sets("p", vec![set(1, 0, 1), set(2, 0, 1), set(3, 5, 0)]);
        let keys: Vec<u64> = (0..4).map(|d| zero.sets[zero.weighted(d).unwrap()].key).collect();
        assert_eq!(keys, [1, 2, 1, 2], "weights of 0 everywhere: shared evenly, never refused");
        assert!(Pool::with_sets("p", vec![set(1, 10, 0)]).weighted(0).is_none());
        assert!(Pool::with_sets("p", vec![set(1, 10, 0), set(2, 1, 0)]).pick(&[]).is_none());
    }

    #[test]
    fn a_set_that_has_nothing_left_for_a_request_gives_way_to_the_others() {
        let pool = Pool::with_sets("p", vec![BackendSet::new(1, 100, backends(1)), BackendSet::new(2, 0, backends(2))]);
        let first = pool.sets[0].backends[0].clone();
        assert!(Arc::ptr_eq(&pool.pick_in(Some(1), &[]).unwrap(), &first));
        let other = pool.pick_in(Some(1), std::slice::from_ref(&first)).unwrap();
        assert!(pool.sets[1].backends.iter().any(|b| Arc::ptr_eq(b, &other)), "a retry may cross to another set");
    }

    #[test]
    fn the_sticky_cookie_is_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; wharf_set=7".parse().unwrap());
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, "wharf_set"), Some("7"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "wharf"), None);
        assert_eq!(stable_hash(b"user-1"), stable_hash(b"user-1"));
        assert_ne!(stable_hash(b"user-1"), stable_hash(b"user-2"));
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let mut r = route(None, "/api", "api");
        r.strip_prefix = true;
        assert_eq!(upstream_path(&r, "/api/users"), "/users");
        assert_eq!(upstream_path(&r, "/api"), "/");
    }
}
