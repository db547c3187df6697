//! Service discovery: how tasks reach the app's other web services by name.
//!
//! Every web service gets
//! - internal routes on the proxy's internal listener: `SERVICE.APP.local`
//!   always, `SERVICE.local` when no other app has a service of that name,
//!   and its own loopback address (see below) — the same pool as its
//!   external routes, so balancing, retries, holding while empty, draining
//!   and blue-green behave alike;
//! - DNS answers for those names (A: its own loopback address, or the
//!   internal listener's address; SRV `_http._tcp.NAME`: the internal port);
//! - an environment variable `WHARF_<SERVICE>_URL` in every task of its app.
//!
//! **Service addresses.** When the internal listener is on IPv4 loopback
//! (the default), each web service also gets an address of its own in
//! 127.64.0.0/10 (derived from a hash of "app/service", so it stays the
//! same across restarts and deploys), and the proxy listens on it at the
//! internal port. A URL such as `http://127.77.12.34:8181` then reaches the
//! service without any resolver configuration and without a Host header:
//! Linux routes all of 127.0.0.0/8 to `lo`, and binding there needs no root.
//! Two services whose hashes collide: the one first in (app, service) order
//! keeps the address, the other takes the next free one.
//!
//! The snapshot of what exists is rebuilt from the store by the control
//! plane; the proxy and the DNS responder only read what was swapped in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use wharf_dns::{Records, Target, Zone};
use wharf_logs::Level;
use wharf_proxy::{HostMatch, InternalListeners, Pool, RouteLimits, RouteSpec};
use wharf_store::ServiceRecord;

use crate::catalog::Catalog;
use crate::controller::Controller;
use crate::events::EventLog;

/// How the server set up discovery (from `wharf server --internal`).
pub struct DiscoveryConfig {
    /// The main internal listener.
    pub internal: SocketAddr,
    /// Listeners for the per-service addresses; None: no such addresses.
    pub listeners: Option<Arc<InternalListeners>>,
}

/// One web service as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub app: String,
    pub service: String,
    /// Its own loopback address, when the server gives services one.
    pub addr: Option<Ipv4Addr>,
}

/// Owns what discovery knows: its config, the web services and their
/// addresses, and the DNS data it publishes.
#[derive(Default)]
pub(crate) struct Discovery {
    config: OnceLock<DiscoveryConfig>,
    zone: Arc<Zone>,
    entries: Mutex<Arc<Vec<Entry>>>,
}

impl Controller {
    /// Turns discovery on: internal routes, DNS data and `WHARF_*_URL`.
    /// Call before [`Controller::start`]; later calls are ignored.
    pub fn enable_discovery(&self, config: DiscoveryConfig) {
        let _ = self.discovery.config.set(config);
    }

    /// The DNS data, for the responder to answer from.
    pub fn dns_zone(&self) -> Arc<Zone> {
        self.discovery.zone.clone()
    }
}

impl Discovery {
    /// Recomputes which web services exist; true when that changed. Reads
    /// revisions (cached), never on a request's path.
    pub(crate) async fn refresh(&self, catalog: &Catalog, services: &[ServiceRecord]) -> bool {
        let Some(cfg) = self.config.get() else { return false };
        let mut web = Vec::new();
        for s in services {
            match catalog.revision(&s.app, &s.name, s.revision).await {
                Ok(rev) if rev.spec.is_web() => web.push((s.app.clone(), s.name.clone())),
                Ok(_) => {}
                Err(e) => tracing::warn!("discovery: {e}"),
            }
        }
        let addresses =
            per_service_addresses(cfg.internal) && (cfg.listeners.is_some() || cfg.internal.ip().is_unspecified());
        let entries = assign(web, addresses);
        let mut current = self.entries.lock().unwrap();
        if **current == entries {
            return false;
        }
        *current = Arc::new(entries);
        true
    }

    fn entries(&self) -> Arc<Vec<Entry>> {
        self.entries.lock().unwrap().clone()
    }

    /// `WHARF_<SERVICE>_URL` for each web service of `app`.
    pub(crate) fn env(&self, app: &str) -> BTreeMap<String, String> {
        match self.config.get() {
            Some(cfg) => env_vars(&self.entries(), app, cfg.internal),
            None => BTreeMap::new(),
        }
    }

    /// The internal routes to `pools` (made for every web service), then,
    /// once the table with them is swapped in, call [`Discovery::publish`].
    pub(crate) fn internal_routes(&self, pools: &HashMap<(String, String), Arc<Pool>>) -> Vec<RouteSpec> {
        if self.config.get().is_none() {
            return Vec::new();
        }
        internal_routes(&self.entries(), pools)
    }

    /// Web services discovery knows of, for the routing rebuild to make
    /// pools for.
    pub(crate) fn services(&self) -> Vec<(String, String)> {
        self.entries().iter().map(|e| (e.app.clone(), e.service.clone())).collect()
    }

    /// Listens on the services' addresses and swaps in the DNS data; after
    /// the routing table, so every name answered is routable.
    pub(crate) fn publish(&self, events: &EventLog) {
        let Some(cfg) = self.config.get() else { return };
        let entries = self.entries();
        if let Some(listeners) = &cfg.listeners {
            let want: Vec<IpAddr> = entries.iter().filter_map(|e| e.addr.map(IpAddr::V4)).collect();
            for e in listeners.sync(&want) {
                let owner = entries.iter().find(|x| x.addr.map(IpAddr::V4) == Some(e.addr.ip()));
                events.event_full(
                    "discovery.listen_failed",
                    Level::Warn,
                    owner.map(|o| o.app.as_str()),
                    owner.map(|o| o.service.as_str()),
                    None,
                    format!("{e}; the service stays reachable by name through {}", cfg.internal),
                );
            }
        }
        self.zone.swap(records(&entries, cfg.internal));
    }
}

/// Services get addresses of their own when the internal listener is on
/// IPv4 loopback (or every IPv4 address, which loopback is part of).
fn per_service_addresses(internal: SocketAddr) -> bool {
    match internal.ip() {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_unspecified(),
        IpAddr::V6(_) => false,
    }
}

/// Addresses 127.64.0.1 to 127.127.255.254: 64 × 256 × 254 of them.
const SLOTS: u32 = 64 * 256 * 254;

fn slot_address(slot: u32) -> Ipv4Addr {
    let slot = slot % SLOTS;
    Ipv4Addr::new(127, 64 + (slot / (256 * 254)) as u8, ((slot / 254) % 256) as u8, 1 + (slot % 254) as u8)
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// The address a service gets when nothing else has it.
#[cfg(test)]
fn preferred_address(app: &str, service: &str) -> Ipv4Addr {
    slot_address(fnv1a(&format!("{app}/{service}")))
}

/// Entries in (app, service) order, each with its address.
fn assign(mut web: Vec<(String, String)>, addresses: bool) -> Vec<Entry> {
    web.sort();
    web.dedup();
    let mut taken = HashSet::new();
    web.into_iter()
        .map(|(app, service)| {
            let addr = addresses.then(|| {
                let start = fnv1a(&format!("{app}/{service}"));
                let free = (0..SLOTS).map(|k| slot_address(start.wrapping_add(k))).find(|a| !taken.contains(a));
                let a = free.expect("fewer services than addresses");
                taken.insert(a);
                a
            });
            Entry { app, service, addr }
        })
        .collect()
}

/// `SERVICE.local` is answered only for a service name one app has.
fn unique_services(entries: &[Entry]) -> HashSet<&str> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        *count.entry(e.service.as_str()).or_default() += 1;
    }
    count.into_iter().filter(|(_, n)| *n == 1).map(|(s, _)| s).collect()
}

/// The names of a service, most specific first.
fn names(e: &Entry, unique: &HashSet<&str>) -> Vec<String> {
    let mut v = vec![format!("{}.{}.local", e.service, e.app)];
    if unique.contains(e.service.as_str()) {
        v.push(format!("{}.local", e.service));
    }
    v
}

/// `api` → `WHARF_API_URL`; `-` becomes `_`.
pub(crate) fn env_name(service: &str) -> String {
    format!("WHARF_{}_URL", service.to_ascii_uppercase().replace('-', "_"))
}

fn env_vars(entries: &[Entry], app: &str, internal: SocketAddr) -> BTreeMap<String, String> {
    entries
        .iter()
        .filter(|e| e.app == app)
        .map(|e| {
            let url = match e.addr {
                Some(a) => format!("http://{a}:{}", internal.port()),
                None => format!("http://{}.{}.local:{}", e.service, e.app, internal.port()),
            };
            (env_name(&e.service), url)
        })
        .collect()
}

fn records(entries: &[Entry], internal: SocketAddr) -> Records {
    let unique = unique_services(entries);
    let mut r = Records::new(wharf_dns::DEFAULT_TTL);
    for e in entries {
        let target = match internal.ip() {
            IpAddr::V4(ip) => Target { v4: Some(e.addr.unwrap_or(ip)), v6: None, port: internal.port() },
            IpAddr::V6(ip) => Target { v4: None, v6: Some(ip), port: internal.port() },
        };
        for n in names(e, &unique) {
            r.insert(&n, target);
        }
    }
    r
}

fn internal_routes(entries: &[Entry], pools: &HashMap<(String, String), Arc<Pool>>) -> Vec<RouteSpec> {
    let unique = unique_services(entries);
    let mut routes = Vec::new();
    for e in entries {
        let Some(pool) = pools.get(&(e.app.clone(), e.service.clone())) else { continue };
        let mut hosts = names(e, &unique);
        hosts.extend(e.addr.map(|a| a.to_string()));
        for host in hosts {
            routes.push(RouteSpec {
                host: HostMatch::Exact(host),
                path: "/".into(),
                strip_prefix: false,
                pool: pool.clone(),
                limits: RouteLimits::default(),
                // Internal traffic stays plain: it never leaves the machine.
                https: Default::default(),
            });
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, s)| (a.to_string(), s.to_string())).collect()
    }

    #[test]
    fn addresses_are_stable_loopback_and_distinct() {
        let a = assign(web(&[("shop", "api"), ("shop", "web"), ("blog", "api")]), true);
        let again = assign(web(&[("blog", "api"), ("shop", "web"), ("shop", "api")]), true);
        assert_eq!(a, again, "the same services get the same addresses whatever the order");
        let addrs: HashSet<Ipv4Addr> = a.iter().map(|e| e.addr.unwrap()).collect();
        assert_eq!(addrs.len(), 3);
        for ip in addrs {
            assert!(ip.is_loopback() && ip.octets()[1] >= 64 && ip.octets()[1] < 128 && ip.octets()[3] != 0, "{ip}");
        }
        assert_eq!(a[1].addr, Some(preferred_address("shop", "api")));
        assert!(assign(web(&[("shop", "api")]), false)[0].addr.is_none());
    }

    #[test]
    fn a_collision_takes_the_next_free_address() {
        let mut taken = HashSet::new();
        // Every address of the space but slot 0's is distinct; wrap-around included.
        for k in 0..3 {
            assert!(taken.insert(slot_address(SLOTS - 1 + k)));
        }
        assert_eq!(slot_address(SLOTS), slot_address(0));
        assert_eq!(slot_address(0), Ipv4Addr::new(127, 64, 0, 1));
        assert_eq!(slot_address(SLOTS - 1), Ipv4Addr::new(127, 127, 255, 254));
    }

    #[test]
    fn env_names_and_urls() {
        assert_eq!(env_name("api"), "WHARF_API_URL");
        assert_eq!(env_name("prod-api"), "WHARF_PROD_API_URL");
        let internal: SocketAddr = "127.0.0.1:8181".parse().unwrap();
        let entries = assign(web(&[("shop", "api"), ("shop", "web"), ("blog", "api")]), true);
        let env = env_vars(&entries, "shop", internal);
        assert_eq!(env.len(), 2, "only the app's own services: {env:?}");
        assert_eq!(env["WHARF_API_URL"], format!("http://{}:8181", preferred_address("shop", "api")));
        let v6 = assign(web(&[("shop", "api")]), false);
        assert_eq!(env_vars(&v6, "shop", "[::1]:8181".parse().unwrap())["WHARF_API_URL"], "http://api.shop.local:8181");
    }

    #[test]
    fn short_names_only_when_one_app_has_the_service() {
        let internal: SocketAddr = "127.0.0.1:8181".parse().unwrap();
        let entries = assign(web(&[("shop", "api"), ("shop", "web"), ("blog", "api")]), true);
        let r = records(&entries, internal);
        assert!(r.get("api.local").is_none(), "two apps have an api: ambiguous");
        assert_eq!(r.get("api.shop.local").unwrap().v4, Some(preferred_address("shop", "api")));
        assert_eq!(r.get("web.local").unwrap().v4, Some(preferred_address("shop", "web")));
        assert_eq!(r.get("web.local").unwrap().port, 8181);
        let pools: HashMap<_, _> = entries
            .iter()
            .map(|e| {
                ((e.app.clone(), e.service.clone()), Arc::new(Pool::new(format!("{}/{}", e.app, e.service), vec![])))
            })
            .collect();
        let routes = internal_routes(&entries, &pools);
        let hosts: Vec<String> = routes
            .iter()
            .map(|r| match &r.host {
                HostMatch::Exact(h) => h.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(hosts.contains(&"api.blog.local".to_string()) && hosts.contains(&"web.local".to_string()));
        assert!(!hosts.contains(&"api.local".to_string()));
        assert_eq!(routes.len(), 3 * 2 + 1, "each: APP name and address; web also its short name");
    }

    #[test]
    fn without_service_addresses_names_point_at_the_internal_listener() {
        let entries = assign(web(&[("shop", "api")]), false);
        let v6 = records(&entries, "[::1]:8181".parse().unwrap());
        let t = v6.get("api.local").unwrap();
        assert_eq!((t.v4, t.v6), (None, Some(std::net::Ipv6Addr::LOCALHOST)));
        let v4 = records(&entries, "10.0.0.5:8181".parse().unwrap());
        assert_eq!(v4.get("api.local").unwrap().v4, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(per_service_addresses("0.0.0.0:8181".parse().unwrap()));
        assert!(!per_service_addresses("10.0.0.5:8181".parse().unwrap()));
    }
}
