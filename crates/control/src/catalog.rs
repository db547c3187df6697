//! The catalog: whose each task is, and the revisions tasks run, read from
//! the store once (revisions are immutable).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wharf_runtime::TaskSpec;
use wharf_store::{Db, Revision};

use crate::error::{ControlError, NotFound};

/// The app, service and revision a task belongs to, remembered so events
/// about a task that is already gone can still say whose it was.
#[derive(Debug, Clone)]
pub(crate) struct TaskMeta {
    pub app: String,
    pub service: String,
    pub revision: u64,
}

/// Owns the task owners and the revision cache; everything else asks it.
pub(crate) struct Catalog {
    db: Db,
    owners: Mutex<HashMap<String, TaskMeta>>,
    revisions: Mutex<HashMap<(String, String, u64), Arc<Revision>>>,
}

impl Catalog {
    pub(crate) fn new(db: Db) -> Catalog {
        Catalog { db, owners: Mutex::default(), revisions: Mutex::default() }
    }

    /// Notes whose a task is (from its spec, which says).
    pub(crate) fn remember(&self, spec: &TaskSpec) {
        self.owners.lock().unwrap().insert(
            spec.id.clone(),
            TaskMeta { app: spec.app.clone(), service: spec.service.clone(), revision: spec.revision },
        );
    }

    /// Whose a task is, if it was ever seen.
    pub(crate) fn owner(&self, task: &str) -> Option<TaskMeta> {
        self.owners.lock().unwrap().get(task).cloned()
    }

    /// A stored revision, from the cache or the store.
    pub(crate) async fn revision(&self, app: &str, svc: &str, n: u64) -> Result<Arc<Revision>, ControlError> {
        let key = (app.to_string(), svc.to_string(), n);
        if let Some(r) = self.revisions.lock().unwrap().get(&key) {
            return Ok(r.clone());
        }
        let rev = self.db.revision(app, svc, n).await?.ok_or_else(|| {
            ControlError::from(NotFound::StoredRevision { app: app.to_string(), service: svc.to_string(), number: n })
        })?;
        let rev = Arc::new(rev);
        self.revisions.lock().unwrap().insert(key, rev.clone());
        Ok(rev)
    }

    /// Forgets a destroyed app's revisions (a new app of that name starts at 1 again).
    pub(crate) fn forget_app(&self, app: &str) {
        self.revisions.lock().unwrap().retain(|(a, _, _), _| a != app);
    }
}
