//! Builds the proxy's routing snapshot from the apps' routes and the tasks
//! that are healthy and not draining.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_proxy::{Backend, HostMatch, Pool, RouteLimits, RouteSpec, RoutingTable};

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
        let mut backends: HashMap<(String, String), Vec<Arc<Backend>>> = HashMap::new();
        {
            let health = self.health.lock().unwrap();
            let draining = self.draining.lock().unwrap();
            let meta = self.meta.lock().unwrap();
            for (id, th) in health.iter() {
                if draining.contains(id) || th.health() != Health::Healthy {
                    continue;
                }
                let Some(m) = meta.get(id) else { continue };
                backends.entry((m.app.clone(), m.service.clone())).or_default().push(th.backend.clone());
            }
        }
        let maintenance = match self.db.maintenance().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("routing not rebuilt, store unavailable: {e}");
                return;
            }
        };
        let mut pools: HashMap<(String, String), Arc<Pool>> = HashMap::new();
        let mut routes = Vec::new();
        for app in &apps {
            for r in &app.routes {
                let key = (app.name.clone(), r.service.clone());
                if !pools.contains_key(&key) {
                    let mut b = backends.remove(&key).unwrap_or_default();
                    b.sort_by(|x, y| x.task.cmp(&y.task));
                    let mut pool = Pool::new(format!("{}/{}", app.name, r.service), b);
                    let (pause, maintenance) = self.traffic_for(&app.name, &r.service, &maintenance);
                    pool.pause = pause;
                    pool.maintenance = maintenance;
                    pool.health_path = self.health_path(&app.name, &r.service).await;
                    pools.insert(key.clone(), Arc::new(pool));
                }
                let pool = pools[&key].clone();
                routes.push(RouteSpec {
                    host: HostMatch::from_spec(r.host.as_deref()),
                    path: r.path.clone(),
                    strip_prefix: r.strip_prefix,
                    pool,
                    limits: RouteLimits::default(),
                });
            }
        }
        self.proxy.swap(RoutingTable::new(routes));
    }

    /// The current revision's health-check path, exempt from maintenance.
    async fn health_path(&self, app: &str, service: &str) -> Option<String> {
        let svc = self.db.service(app, service).await.ok()??;
        let rev = self.revision(app, service, svc.revision).await.ok()?;
        rev.spec.health.as_ref()?.path.clone()
    }
}
