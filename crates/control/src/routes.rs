//! The routing publisher: builds the proxy's routing snapshot from the apps'
//! routes and the tasks that are healthy and not draining, laid out by the
//! deploy strategy, and swaps it in.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use wharf_proxy::{
    Backend, BackendSet, Balance, HostMatch, PlainHttp, Pool, Proxy, RouteHttps, RouteLimits, RouteSpec, RoutingTable,
};
use wharf_spec::HttpsMode;
use wharf_store::Db;

use crate::catalog::Catalog;
use crate::certs::Certificates;
use crate::component::BackgroundLoop;
use crate::discovery::Discovery;
use crate::events::EventLog;
use crate::health::{Health, HealthMonitor};
use crate::reconcile::Drains;
use crate::strategy::{Place, PoolLayout, Side};
use crate::traffic::{maintenance_for, Pauses};

/// A healthy task of a service: its revision and the proxy's view of it.
type Member = (u64, Arc<Backend>);

/// Owns the rebuilds of the routing snapshot: one at a time, now
/// ([`RoutingPublisher::publish`]) or soon ([`BackgroundLoop::wake`]).
pub(crate) struct RoutingPublisher {
    /// What the snapshot is built from.
    inputs: RoutingInputs,
    /// Serialises rebuilds, so two racing can't leave an older view in place.
    lock: tokio::sync::Mutex<()>,
    changed: Notify,
}

impl BackgroundLoop for RoutingPublisher {
    fn start(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            loop {
                self.publish().await;
                tokio::select! {
                    _ = self.changed.notified() => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    fn wake(&self) {
        self.changed.notify_one();
    }
}

/// What the routing snapshot is built from: the desired state in the store,
/// what the health monitor and reconciler observe, pauses, discovery; and
/// the proxy it is swapped into.
pub(crate) struct RoutingInputs {
    pub db: Db,
    pub catalog: Arc<Catalog>,
    pub health: Arc<HealthMonitor>,
    pub drains: Arc<Drains>,
    pub pauses: Arc<Pauses>,
    pub discovery: Arc<Discovery>,
    pub events: Arc<EventLog>,
    pub certificates: Arc<Certificates>,
    pub proxy: Arc<Proxy>,
}

impl RoutingPublisher {
    pub(crate) fn new(inputs: RoutingInputs) -> RoutingPublisher {
        RoutingPublisher { inputs, lock: tokio::sync::Mutex::new(()), changed: Notify::new() }
    }

    /// Builds and swaps in a new routing table now.
    pub(crate) async fn publish(&self) {
        let _guard = self.lock.lock().await;
        self.inputs.build().await;
    }
}

impl RoutingInputs {
    /// One routing table from the store and observation, swapped into the
    /// proxy; called only by the [`RoutingPublisher`], which serialises it.
    async fn build(&self) {
        let apps = match self.db.apps().await {
            Ok(apps) => apps,
            Err(e) => {
                tracing::warn!("routing not rebuilt, store unavailable: {e}");
                return;
            }
        };
        let records = match self.db.services(None).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("routing not rebuilt, store unavailable: {e}");
                return;
            }
        };
        self.discovery.refresh(&self.catalog, &records).await;
        let layouts: HashMap<(String, String), PoolLayout> =
            records.iter().map(|s| ((s.app.clone(), s.name.clone()), PoolLayout::of(s))).collect();
        // Healthy tasks that are not draining, by service, with their revision.
        let mut members: HashMap<(String, String), Vec<Member>> = HashMap::new();
        {
            let checked = self.health.backends();
            let draining = self.drains.snapshot();
            for (id, health, backend) in checked {
                if draining.contains(&id) || health != Health::Healthy {
                    continue;
                }
                let Some(m) = self.catalog.owner(&id) else { continue };
                let key = (m.app.clone(), m.service.clone());
                members.entry(key).or_default().push((m.revision, backend));
            }
        }
        let maintenance = match self.db.maintenance().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("routing not rebuilt, store unavailable: {e}");
                return;
            }
        };
        // One pool per routed or discoverable service, shared by its
        // external and internal routes.
        let mut pools: HashMap<(String, String), Arc<Pool>> = HashMap::new();
        let routed = apps.iter().flat_map(|a| a.routes.iter().map(|r| (a.name.clone(), r.service.clone())));
        let wanted: Vec<(String, String)> = routed.chain(self.discovery.services()).collect();
        for key in wanted {
            if pools.contains_key(&key) {
                continue;
            }
            let (app, service) = (&key.0, &key.1);
            let tasks = members.remove(&key).unwrap_or_default();
            let name = format!("{app}/{service}");
            let mut pool = match layouts.get(&key) {
                Some(layout) => {
                    let (sets, fallback) = pool_sets(layout, tasks);
                    let mut pool = Pool::with_sets(name, sets);
                    pool.fallback = fallback;
                    pool
                }
                // Not in the store (yet): every healthy task serves.
                None => Pool::new(name, tasks.into_iter().map(|(_, b)| b).collect()),
            };
            pool.pause = self.pauses.gate(app, service);
            pool.maintenance = maintenance_for(app, service, &maintenance);
            if let Some(spec) = self.current_spec(app, service).await {
                pool.health_path = spec.health.as_ref().and_then(|h| h.path.clone());
                pool.sticky = layouts.get(&key).and_then(|l| l.sticky(service, &spec.deploy));
                pool.balance = match spec.balance {
                    wharf_spec::Balance::LeastOutstanding => Balance::LeastOutstanding,
                    wharf_spec::Balance::RoundRobin => Balance::RoundRobin,
                };
            }
            pools.insert(key, Arc::new(pool));
        }
        let wanted =
            apps.iter().flat_map(|a| &a.routes).filter_map(|r| Some((r.host.clone()?, r.tls.clone()?))).collect();
        let without_files = apps
            .iter()
            .flat_map(|a| &a.routes)
            .filter(|r| r.tls.is_none() && r.https != HttpsMode::Off)
            .filter_map(|r| r.host.as_ref().map(|h| h.trim_end_matches('.').to_ascii_lowercase()))
            .filter(|h| !h.is_empty() && h.parse::<std::net::IpAddr>().is_err())
            .collect();
        self.certificates.want(wanted, without_files);
        let covered = self.certificates.covered();
        let mut routes = Vec::new();
        for app in &apps {
            for r in &app.routes {
                let key = (app.name.clone(), r.service.clone());
                let pool = pools[&key].clone();
                let has_cert = r.host.as_ref().is_some_and(|h| covered.contains(h));
                routes.push(RouteSpec {
                    host: HostMatch::from_spec(r.host.as_deref()),
                    path: r.path.clone(),
                    strip_prefix: r.strip_prefix,
                    pool,
                    limits: RouteLimits {
                        connect_timeout: r.connect_timeout,
                        response_timeout: r.timeout,
                        max_body: r.max_body,
                    },
                    https: route_https(r.https, r.hsts, has_cert),
                });
            }
        }
        let internal = self.discovery.internal_routes(&pools);
        self.proxy.swap(RoutingTable::new(routes).with_internal(internal));
        self.discovery.publish(&self.events);
    }

    /// The service's spec as its current revision has it.
    async fn current_spec(&self, app: &str, service: &str) -> Option<wharf_spec::Service> {
        let svc = self.db.service(app, service).await.ok()??;
        Some(self.catalog.revision(app, service, svc.revision).await.ok()?.spec.clone())
    }
}

/// What a route does about HTTPS: a redirect needs a certificate to
/// redirect to (until one exists the host is served over plain HTTP).
fn route_https(mode: HttpsMode, hsts: Option<std::time::Duration>, has_cert: bool) -> RouteHttps {
    let plain = match mode {
        HttpsMode::Redirect if has_cert => PlainHttp::Redirect,
        HttpsMode::Redirect | HttpsMode::Off => PlainHttp::Serve,
        HttpsMode::Only => PlainHttp::Refuse,
    };
    RouteHttps { plain, hsts: hsts.map(|d| d.as_secs()) }
}

/// A service's pool layout as the proxy's pool: each side with a weight is
/// one weighted set of its tasks (keyed by [`Side::key`]), the standby set is
/// the fallback (for when no serving task can answer). Sorted by side and
/// task, so equal inputs give equal tables.
fn pool_sets(layout: &PoolLayout, tasks: Vec<Member>) -> (Vec<BackendSet>, Vec<Arc<Backend>>) {
    let mut sides: Vec<(Side, Vec<Arc<Backend>>)> = Vec::new();
    let mut fallback = Vec::new();
    for (revision, backend) in tasks {
        match layout.place(revision) {
            Place::Serving(side) if side.weight > 0 => match sides.iter_mut().find(|(s, _)| *s == side) {
                Some((_, set)) => set.push(backend),
                None => sides.push((side, vec![backend])),
            },
            Place::Standby => fallback.push(backend),
            Place::Serving(_) | Place::Out => {}
        }
    }
    sides.sort_by_key(|(side, _)| side.key());
    let sets = sides
        .into_iter()
        .map(|(side, mut backends)| {
            backends.sort_by(|x, y| x.task.cmp(&y.task));
            BackendSet::new(side.key(), side.weight, backends)
        })
        .collect();
    fallback.sort_by(|x, y| x.task.cmp(&y.task));
    (sets, fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::FULL_WEIGHT;

    fn task(name: &str, revision: u64) -> Member {
        (revision, Arc::new(Backend::new(name, ([127, 0, 0, 1], 1).into())))
    }

    fn names(b: &[Arc<Backend>]) -> Vec<&str> {
        b.iter().map(|b| &*b.task).collect()
    }

    /// (key, weight, tasks) of each set.
    fn sets(s: &[BackendSet]) -> Vec<(u64, u32, Vec<&str>)> {
        s.iter().map(|s| (s.key, s.weight, names(&s.backends))).collect()
    }

    #[test]
    fn serving_sides_become_sets_and_the_standby_set_the_fallback() {
        let layout =
            PoolLayout { desired: 4, serving: vec![Side { revision: Some(4), weight: FULL_WEIGHT }], standby: Some(3) };
        let tasks = vec![task("t4b", 4), task("t3", 3), task("t2", 2), task("t4a", 4)];
        let (serving, fallback) = pool_sets(&layout, tasks);
        assert_eq!((sets(&serving), names(&fallback)), (vec![(4, FULL_WEIGHT, vec!["t4a", "t4b"])], vec!["t3"]));
    }

    #[test]
    fn weighted_sides_become_weighted_sets_keyed_by_revision() {
        let sides = vec![Side { revision: Some(5), weight: 10 }, Side { revision: None, weight: 90 }];
        let layout = PoolLayout { desired: 5, serving: sides, standby: None };
        let tasks = vec![task("new", 5), task("old-b", 4), task("old-a", 3)];
        let (serving, fallback) = pool_sets(&layout, tasks);
        assert_eq!(sets(&serving), vec![(0, 90, vec!["old-a", "old-b"]), (5, 10, vec!["new"])]);
        assert!(fallback.is_empty());
    }

    #[test]
    fn rolling_serves_every_revision_and_a_side_without_weight_serves_nothing() {
        let rolling =
            PoolLayout { desired: 4, serving: vec![Side { revision: None, weight: FULL_WEIGHT }], standby: None };
        let (serving, fallback) = pool_sets(&rolling, vec![task("b", 3), task("a", 4)]);
        assert_eq!((sets(&serving), fallback.len()), (vec![(0, FULL_WEIGHT, vec!["a", "b"])], 0));
        let idle = PoolLayout { desired: 4, serving: vec![Side { revision: Some(4), weight: 0 }], standby: None };
        assert!(pool_sets(&idle, vec![task("a", 4)]).0.is_empty());
    }
}
