//! Maintenance mode and pause/resume: desired state in the store, applied
//! through the routing snapshot, so both survive a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_logs::Level;
use wharf_proxy::{Maintenance, PauseGate};
use wharf_store::{MaintenanceRecord, PauseRecord};

use crate::controller::{ControlError, Controller};
use crate::error::{Invalid, NotFound};

/// Requests held per paused service before new ones get 503.
const MAX_HELD: usize = 10_000;
/// Clients are told to come back after this long.
const RETRY_AFTER_SECS: u32 = 30;

fn scope(app: &str, service: Option<&str>) -> String {
    match service {
        Some(s) => format!("{app}/{s}"),
        None => app.to_string(),
    }
}

/// The largest maintenance page accepted (`wharf maintenance on --page`).
const MAX_PAGE: usize = 1 << 20;
/// The longest maintenance message accepted.
const MAX_MESSAGE: usize = 4 << 10;

/// (app, service), or (app, None) for the whole app.
type PauseScope = (String, Option<String>);

/// The pause gates in force: the proxy holds a paused service's requests
/// at its gate. Owns the gates; the store keeps the pauses themselves.
#[derive(Default)]
pub(crate) struct Pauses(Mutex<HashMap<PauseScope, Arc<PauseGate>>>);

impl Pauses {
    /// A gate for a stored pause, holding requests for what is left of it.
    fn install(&self, r: &PauseRecord, now_ms: u64) {
        let left = Duration::from_millis(r.until.saturating_sub(now_ms));
        let gate = Arc::new(PauseGate::new(MAX_HELD, left));
        self.0.lock().unwrap().insert((r.app.clone(), r.service.clone()), gate);
    }

    fn take(&self, app: &str, service: Option<&str>) -> Option<Arc<PauseGate>> {
        self.0.lock().unwrap().remove(&(app.to_string(), service.map(str::to_string)))
    }

    /// The gate that applies to one service: its own, or its app's.
    pub(crate) fn gate(&self, app: &str, service: &str) -> Option<Arc<PauseGate>> {
        let gates = self.0.lock().unwrap();
        gates
            .get(&(app.to_string(), Some(service.to_string())))
            .or_else(|| gates.get(&(app.to_string(), None)))
            .cloned()
    }

    /// Lets every request held for a destroyed app go.
    pub(crate) fn release_app(&self, app: &str) {
        let gates: Vec<_> = {
            let mut gates = self.0.lock().unwrap();
            let keys: Vec<_> = gates.keys().filter(|(a, _)| a == app).cloned().collect();
            keys.into_iter().filter_map(|k| gates.remove(&k)).collect()
        };
        for g in gates {
            g.release();
        }
    }
}

/// The maintenance page that applies to one service: its own, or its app's.
pub(crate) fn maintenance_for(app: &str, service: &str, maintenance: &[MaintenanceRecord]) -> Option<Maintenance> {
    maintenance
        .iter()
        .filter(|m| m.app == app)
        .find(|m| m.service.as_deref() == Some(service))
        .or_else(|| maintenance.iter().find(|m| m.app == app && m.service.is_none()))
        .map(|m| Maintenance {
            page: m.page.clone().unwrap_or_else(|| builtin_page(m.message.as_deref())).into(),
            retry_after_secs: RETRY_AFTER_SECS,
        })
}

impl Controller {
    /// The app a command means: the one given, or the only one deployed.
    pub async fn resolve_app(&self, app: Option<&str>) -> Result<String, ControlError> {
        if let Some(a) = app {
            return Ok(a.to_string());
        }
        let apps = self.db.apps().await?;
        match apps.as_slice() {
            [one] => Ok(one.name.clone()),
            [] => Err(NotFound::AnyApp.into()),
            many => Err(Invalid::WhichApp { apps: many.iter().map(|a| a.name.clone()).collect() }.into()),
        }
    }

    /// Fails with a clear message unless `app` (and `service`) exist.
    async fn check_scope(&self, app: &str, service: Option<&str>) -> Result<(), ControlError> {
        if self.db.app(app).await?.is_none() {
            return Err(NotFound::App { app: app.to_string() }.into());
        }
        if let Some(s) = service {
            if self.db.service(app, s).await?.is_none() {
                return Err(NotFound::Service { app: app.to_string(), service: s.to_string() }.into());
            }
        }
        Ok(())
    }

    pub async fn set_maintenance(
        self: &Arc<Self>,
        app: &str,
        service: Option<&str>,
        on: bool,
        message: Option<String>,
        page: Option<String>,
    ) -> Result<(), ControlError> {
        // Both are stored and served on every maintenance answer: bounded.
        if page.as_ref().is_some_and(|p| p.len() > MAX_PAGE) {
            return Err(Invalid::MaintenancePage { max_bytes: MAX_PAGE }.into());
        }
        if message.as_ref().is_some_and(|m| m.len() > MAX_MESSAGE) {
            return Err(Invalid::MaintenanceMessage { max_bytes: MAX_MESSAGE }.into());
        }
        self.check_scope(app, service).await?;
        let what = scope(app, service);
        if on {
            let r = MaintenanceRecord {
                app: app.into(),
                service: service.map(str::to_string),
                message,
                page,
                since: self.now_ms(),
            };
            self.db.set_maintenance(&r).await?;
            self.events.event_full(
                "maintenance.on",
                Level::Warn,
                Some(app),
                service,
                None,
                format!("{what} is in maintenance mode"),
            );
        } else {
            self.db.clear_maintenance(app, service).await?;
            self.events.event_full(
                "maintenance.off",
                Level::Info,
                Some(app),
                service,
                None,
                format!("{what} left maintenance mode"),
            );
        }
        self.routing.publish().await;
        Ok(())
    }

    /// Holds new requests for `app` (or one service) until resumed or `max` passes.
    pub async fn pause(self: &Arc<Self>, app: &str, service: Option<&str>, max: Duration) -> Result<(), ControlError> {
        self.check_scope(app, service).await?;
        let now = self.now_ms();
        let r = PauseRecord {
            app: app.into(),
            service: service.map(str::to_string),
            since: now,
            until: wharf_runtime::deadline::ms_after(now, max),
        };
        self.db.set_pause(&r).await?;
        self.pauses.install(&r, now);
        self.routing.publish().await;
        self.events.event_full(
            "pause.on",
            Level::Warn,
            Some(app),
            service,
            None,
            format!("{} paused: requests are held for up to {}s", scope(app, service), max.as_secs()),
        );
        Ok(())
    }

    pub async fn resume(self: &Arc<Self>, app: &str, service: Option<&str>) -> Result<(), ControlError> {
        self.check_scope(app, service).await?;
        self.db.clear_pause(app, service).await?;
        let gate = self.pauses.take(app, service);
        // The new table first: released requests route again against it.
        self.routing.publish().await;
        let held = gate.map(|g| {
            let n = g.waiting();
            g.release();
            n
        });
        self.events.event_full(
            "pause.off",
            Level::Info,
            Some(app),
            service,
            None,
            format!("{} resumed; {} held requests released", scope(app, service), held.unwrap_or(0)),
        );
        Ok(())
    }

    /// After a restart, pauses still in the store hold requests again.
    pub(crate) async fn restore_pauses(&self) -> Result<(), ControlError> {
        for r in self.db.pauses().await? {
            self.pauses.install(&r, self.now_ms());
        }
        Ok(())
    }
}

fn builtin_page(message: Option<&str>) -> String {
    let message = message.unwrap_or("We are doing some maintenance and will be back shortly.");
    let message = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Down for maintenance</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:15vh auto;padding:0 1em;color:#333}}</style>\
         </head><body><h1>Down for maintenance</h1><p>{message}</p></body></html>\n"
    )
}
