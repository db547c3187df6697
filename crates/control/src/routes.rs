//! Builds the proxy's routing snapshot from the apps' routes and the tasks
//! that are healthy and not draining.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_proxy::{Backend, Balance, HostMatch, Pool, RouteLimits, RouteSpec, RoutingTable};

use crate::controller::Controller;
use crate::health::Health;

impl Controller {
    pub(crate) async fn routes_loop(self: Arc<Self>) {
        let mut stop = self.stopping();
        loop {
            self.rebuild_routes().await;
            tokio::select! {
                _ = self.routes_changed.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Builds and swaps in a new routing table. Serialised, so two rebuilds
    /// racing can't leave an older view in place.
    pub(crate) async fn rebuild_routes(&self) {
        let _guard = self.routes_lock.lock().await;
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
        self.refresh_discovery(&records).await;
        // Blue-green: only the live revision serves; the standby set is the fallback.
        let services: HashMap<(String, String), (Option<u64>, Option<u64>)> =
            records.into_iter().map(|s| ((s.app, s.name), (s.live, s.standby))).collect();
        let mut backends: HashMap<(String, String), Vec<Arc<Backend>>> = HashMap::new();
        let mut fallbacks: HashMap<(String, String), Vec<Arc<Backend>>> = HashMap::new();
        {
            let health = self.health.lock().unwrap();
            let draining = self.draining.lock().unwrap();
            let meta = self.meta.lock().unwrap();
            for (id, th) in health.iter() {
                if draining.contains(id) || th.health() != Health::Healthy {
                    continue;
                }
                let Some(m) = meta.get(id) else { continue };
                let key = (m.app.clone(), m.service.clone());
                let (live, standby) = services.get(&key).copied().unwrap_or_default();
                if live.is_none_or(|l| l == m.revision) {
                    backends.entry(key).or_default().push(th.backend.clone());
                } else if standby == Some(m.revision) {
                    fallbacks.entry(key).or_default().push(th.backend.clone());
                }
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
        let wanted: Vec<(String, String)> = routed.chain(self.discovered_services()).collect();
        for key in wanted {
            if pools.contains_key(&key) {
                continue;
            }
            let (app, service) = (&key.0, &key.1);
            let mut b = backends.remove(&key).unwrap_or_default();
            b.sort_by(|x, y| x.task.cmp(&y.task));
            let mut pool = Pool::new(format!("{app}/{service}"), b);
            pool.fallback = fallbacks.remove(&key).unwrap_or_default();
            pool.fallback.sort_by(|x, y| x.task.cmp(&y.task));
            let (pause, maintenance) = self.traffic_for(app, service, &maintenance);
            pool.pause = pause;
            pool.maintenance = maintenance;
            if let Some(spec) = self.current_spec(app, service).await {
                pool.health_path = spec.health.as_ref().and_then(|h| h.path.clone());
                pool.balance = match spec.balance {
                    wharf_spec::Balance::LeastOutstanding => Balance::LeastOutstanding,
                    wharf_spec::Balance::RoundRobin => Balance::RoundRobin,
                };
            }
            pools.insert(key, Arc::new(pool));
        }
        let mut routes = Vec::new();
        for app in &apps {
            for r in &app.routes {
                let key = (app.name.clone(), r.service.clone());
                let pool = pools[&key].clone();
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
                });
            }
        }
        let internal = self.internal_routes(&pools);
        self.proxy.swap(RoutingTable::new(routes).with_internal(internal));
        self.publish_discovery();
    }

    /// The service's spec as its current revision has it.
    async fn current_spec(&self, app: &str, service: &str) -> Option<wharf_spec::Service> {
        let svc = self.db.service(app, service).await.ok()??;
        Some(self.revision(app, service, svc.revision).await.ok()?.spec.clone())
    }
}
