//! Events: what happened, in the log stream and in the store's history.

use std::sync::Arc;

use wharf_logs::{Level, LogStream, Record};
use wharf_store::{Db, EventRecord, StoreError};

use crate::catalog::Catalog;

/// Records events; a task's event names its app and service (from the catalog).
pub(crate) struct EventLog {
    logs: LogStream,
    db: Db,
    catalog: Arc<Catalog>,
}

impl EventLog {
    pub(crate) fn new(logs: LogStream, db: Db, catalog: Arc<Catalog>) -> EventLog {
        EventLog { logs, db, catalog }
    }

    /// A server-wide event.
    pub(crate) fn event(&self, kind: &str, level: Level, message: impl Into<String>) {
        self.event_full(kind, level, None, None, None, message);
    }

    pub(crate) fn event_full(
        &self,
        kind: &str,
        level: Level,
        app: Option<&str>,
        service: Option<&str>,
        task: Option<&str>,
        message: impl Into<String>,
    ) {
        let message = message.into();
        let mut r = Record::event(kind, level, message.clone());
        r.app = app.map(str::to_string);
        r.service = service.map(str::to_string);
        r.task = task.map(str::to_string);
        let time = r.time / 1_000_000;
        self.logs.append(r);
        let e = EventRecord {
            time,
            app: app.map(str::to_string),
            service: service.map(str::to_string),
            task: task.map(str::to_string),
            kind: kind.to_string(),
            message,
        };
        let db = self.db.clone();
        tokio::spawn(async move {
            match db.add_event(&e).await {
                // A failing store is reported once by its watch, not per event.
                Err(StoreError::DiskFull(_) | StoreError::Io(_)) | Ok(()) => {}
                Err(err) => tracing::warn!("cannot store event: {err}"),
            }
        });
    }

    /// An event about one task, with its app and service.
    pub(crate) fn task_event(&self, kind: &str, level: Level, task: &str, message: impl Into<String>) {
        let owner = self.catalog.owner(task);
        self.event_full(
            kind,
            level,
            owner.as_ref().map(|m| m.app.as_str()),
            owner.as_ref().map(|m| m.service.as_str()),
            Some(task),
            message,
        );
    }
}
