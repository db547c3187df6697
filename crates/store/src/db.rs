//! Typed access to the store, with the whole key layout in one place.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::records::*;
use crate::{JobRecord, Op, Store, StoreError};

/// How many events the store keeps; older ones are trimmed.
const EVENTS_KEPT: usize = 5000;

fn app_key(app: &str) -> String {
    format!("apps/{app}")
}
fn service_key(app: &str, svc: &str) -> String {
    format!("services/{app}/{svc}")
}
fn revision_key(app: &str, svc: &str, n: u64) -> String {
    format!("revisions/{app}/{svc}/{n:010}")
}
fn release_key(app: &str, hash: &str) -> String {
    format!("releases/{app}/{hash}")
}
/// `*` stands for the whole app; service names never contain it.
fn scoped_key(kind: &str, app: &str, service: Option<&str>) -> String {
    format!("{kind}/{app}/{}", service.unwrap_or("*"))
}
fn task_key(id: &str) -> String {
    format!("tasks/{id}")
}
fn task_health_key(id: &str) -> String {
    format!("task-health/{id}")
}
fn deployment_key(app: &str, id: u64) -> String {
    format!("deployments/{app}/{id:010}")
}

/// Typed records over any [`Store`].
#[derive(Clone)]
pub struct Db {
    pub(crate) store: Arc<dyn Store>,
    event_seq: Arc<AtomicU64>,
}

/// Ops collected for one atomic write.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records always serialize")
}

impl Batch {
    pub fn put_app(&mut self, r: &AppRecord) -> &mut Self {
        self.put(app_key(&r.name), r)
    }
    pub fn put_service(&mut self, r: &ServiceRecord) -> &mut Self {
        self.put(service_key(&r.app, &r.name), r)
    }
    pub fn delete_service(&mut self, app: &str, svc: &str) -> &mut Self {
        self.ops.push(Op::Delete { key: service_key(app, svc) });
        self
    }
    pub fn put_revision(&mut self, r: &Revision) -> &mut Self {
        self.put(revision_key(&r.app, &r.service, r.number), r)
    }
    pub fn put_release(&mut self, r: &ReleaseRecord) -> &mut Self {
        self.put(release_key(&r.app, &r.hash), r)
    }
    pub fn put_deployment(&mut self, r: &DeploymentRecord) -> &mut Self {
        self.put(deployment_key(&r.app, r.id), r)
    }
    fn put<T: Serialize>(&mut self, key: String, v: &T) -> &mut Self {
        self.ops.push(Op::Put { key, value: encode(v) });
        self
    }
}

impl Db {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Db { store, event_seq: Arc::new(AtomicU64::new(0)) }
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(bytes) => decode(key, &bytes).map(Some),
        }
    }

    async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        let pairs = self.store.list(prefix).await?;
        pairs.iter().map(|(k, v)| decode(k, v)).collect()
    }

    /// Applies a batch atomically.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        self.store.apply(batch.ops).await
    }

    /// A small write that changes nothing anyone reads: tells whether the
    /// store takes writes again after they failed.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.store
            .apply(vec![Op::Put { key: "probe/last".into(), value: at.as_millis().to_string().into_bytes() }])
            .await
    }

    pub async fn app(&self, app: &str) -> Result<Option<AppRecord>, StoreError> {
        let key = app_key(app);
        match self.store.get(&key).await? {
            None => Ok(None),
            Some(bytes) => self.read_app(&key, bytes).await.map(Some),
        }
    }
    pub async fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let mut out = Vec::new();
        for (key, bytes) in self.store.list("apps/").await? {
            out.push(self.read_app(&key, bytes).await?);
        }
        Ok(out)
    }

    /// Decodes an app record. One written before jobs were recorded gets
    /// its jobs from its wharf.toml text, written back so that the text is
    /// parsed once, not on every read.
    async fn read_app(&self, key: &str, bytes: Vec<u8>) -> Result<AppRecord, StoreError> {
        let mut app: AppRecord = decode(key, &bytes)?;
        if app.jobs.is_none() {
            let jobs = JobRecord::from_source(&app.source, &app.release).unwrap_or_else(|e| {
                tracing::warn!(
                    "app {}: its stored wharf.toml no longer parses, so its jobs are not scheduled \
                     (deploy the app again to schedule them): {e}",
                    app.name
                );
                Vec::new()
            });
            app.jobs = Some(jobs);
            // Only over the record as read: a concurrent write of the app wins.
            // A failed write (full disk) leaves the next read to parse again.
            let ops = vec![
                Op::Expect { key: key.to_string(), value: Some(bytes) },
                Op::Put { key: key.to_string(), value: encode(&app) },
            ];
            let _ = self.store.apply(ops).await;
        }
        Ok(app)
    }

    pub async fn service(&self, app: &str, svc: &str) -> Result<Option<ServiceRecord>, StoreError> {
        self.get(&service_key(app, svc)).await
    }
    /// Services of one app, or of every app when `app` is None.
    pub async fn services(&self, app: Option<&str>) -> Result<Vec<ServiceRecord>, StoreError> {
        match app {
            Some(app) => self.list(&format!("services/{app}/")).await,
            None => self.list("services/").await,
        }
    }

    pub async fn revision(&self, app: &str, svc: &str, n: u64) -> Result<Option<Revision>, StoreError> {
        self.get(&revision_key(app, svc, n)).await
    }
    /// Oldest first.
    pub async fn revisions(&self, app: &str, svc: &str) -> Result<Vec<Revision>, StoreError> {
        self.list(&format!("revisions/{app}/{svc}/")).await
    }
    pub async fn delete_revision(&self, app: &str, svc: &str, n: u64) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Delete { key: revision_key(app, svc, n) }]).await
    }

    pub async fn releases(&self, app: &str) -> Result<Vec<ReleaseRecord>, StoreError> {
        self.list(&format!("releases/{app}/")).await
    }
    pub async fn delete_release(&self, app: &str, hash: &str) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Delete { key: release_key(app, hash) }]).await
    }

    pub async fn put_task(&self, r: &TaskRecord) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Put { key: task_key(&r.id), value: encode(r) }]).await
    }
    pub async fn delete_task(&self, id: &str) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Delete { key: task_key(id) }, Op::Delete { key: task_health_key(id) }]).await
    }

    /// The last health a task's checks settled on, kept so a re-adopted
    /// task is not taken for a new one after a server restart.
    pub async fn put_task_health(&self, r: &TaskHealthRecord) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Put { key: task_health_key(&r.id), value: encode(r) }]).await
    }

    pub async fn task_healths(&self) -> Result<Vec<TaskHealthRecord>, StoreError> {
        self.list("task-health/").await
    }
    pub async fn tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        self.list("tasks/").await
    }

    pub async fn set_maintenance(&self, r: &MaintenanceRecord) -> Result<(), StoreError> {
        let key = scoped_key("maintenance", &r.app, r.service.as_deref());
        self.store.apply(vec![Op::Put { key, value: encode(r) }]).await
    }
    pub async fn clear_maintenance(&self, app: &str, service: Option<&str>) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Delete { key: scoped_key("maintenance", app, service) }]).await
    }
    pub async fn maintenance(&self) -> Result<Vec<MaintenanceRecord>, StoreError> {
        self.list("maintenance/").await
    }

    pub async fn set_pause(&self, r: &PauseRecord) -> Result<(), StoreError> {
        let key = scoped_key("paused", &r.app, r.service.as_deref());
        self.store.apply(vec![Op::Put { key, value: encode(r) }]).await
    }
    pub async fn clear_pause(&self, app: &str, service: Option<&str>) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Delete { key: scoped_key("paused", app, service) }]).await
    }
    pub async fn pauses(&self) -> Result<Vec<PauseRecord>, StoreError> {
        self.list("paused/").await
    }

    /// Oldest first.
    pub async fn deployments(&self, app: &str) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.list(&format!("deployments/{app}/")).await
    }
    pub async fn deployment(&self, app: &str, id: u64) -> Result<Option<DeploymentRecord>, StoreError> {
        self.get(&deployment_key(app, id)).await
    }
    pub async fn put_deployment(&self, r: &DeploymentRecord) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.put_deployment(r);
        self.commit(b).await
    }

    /// Appends an event. Keys are time-ordered (nanoseconds plus a process
    /// counter), so no shared counter has to be read and written.
    pub async fn add_event(&self, e: &EventRecord) -> Result<(), StoreError> {
        let seq = self.event_seq.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let key = format!("events/{nanos:024}-{seq:08}");
        self.store.apply(vec![Op::Put { key, value: encode(e) }]).await?;
        if seq % 500 == 499 {
            self.trim_events().await?;
        }
        Ok(())
    }

    /// The newest `limit` events, oldest first.
    pub async fn events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let all: Vec<EventRecord> = self.list("events/").await?;
        let skip = all.len().saturating_sub(limit);
        Ok(all.into_iter().skip(skip).collect())
    }

    async fn trim_events(&self) -> Result<(), StoreError> {
        let keys = self.store.list("events/").await?;
        if keys.len() <= EVENTS_KEPT {
            return Ok(());
        }
        let excess = keys.len() - EVENTS_KEPT;
        let ops = keys.into_iter().take(excess).map(|(key, _)| Op::Delete { key }).collect();
        self.store.apply(ops).await
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
}

fn destroy_key(app: &str) -> String {
    format!("destroying/{app}")
}

/// Removing a whole app (`wharf destroy`).
impl Batch {
    pub fn put_destroy(&mut self, r: &DestroyRecord) -> &mut Self {
        self.put(destroy_key(&r.app), r)
    }
    pub fn delete_app(&mut self, app: &str) -> &mut Self {
        self.ops.push(Op::Delete { key: app_key(app) });
        self
    }
    pub fn delete_destroy(&mut self, app: &str) -> &mut Self {
        self.ops.push(Op::Delete { key: destroy_key(app) });
        self
    }
}

impl Db {
    pub async fn destroys(&self) -> Result<Vec<DestroyRecord>, StoreError> {
        self.list("destroying/").await
    }
    pub async fn destroy(&self, app: &str) -> Result<Option<DestroyRecord>, StoreError> {
        self.get(&destroy_key(app)).await
    }

    /// Adds to `batch` the deletion of everything kept under an app's name:
    /// revisions, deployments, maintenance, pauses, job runs and cursors,
    /// and with `releases` its release records. Services and the app record
    /// are deleted by the caller ([`Batch::delete_service`], [`Batch::delete_app`]).
    pub async fn delete_app_history(&self, batch: &mut Batch, app: &str, releases: bool) -> Result<(), StoreError> {
        let mut kinds = vec!["revisions", "deployments", "maintenance", "paused", "jobruns", "jobcursors"];
        if releases {
            kinds.push("releases");
        }
        for kind in kinds {
            for (key, _) in self.store.list(&format!("{kind}/{app}/")).await? {
                batch.ops.push(Op::Delete { key });
            }
        }
        Ok(())
    }
}

fn acme_account_key(directory: &str) -> String {
    format!("acme-accounts/{directory}")
}

fn acme_cert_key(host: &str) -> String {
    format!("acme-certs/{host}")
}

impl Db {
    /// The ACME account registered with `directory`, if any.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<AcmeAccountRecord>, StoreError> {
        self.get(&acme_account_key(directory)).await
    }
    pub async fn put_acme_account(&self, r: &AcmeAccountRecord) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Put { key: acme_account_key(&r.directory), value: encode(r) }]).await
    }
    /// Every certificate obtained over ACME, by host.
    pub async fn acme_certs(&self) -> Result<Vec<AcmeCertRecord>, StoreError> {
        self.list("acme-certs/").await
    }
    pub async fn put_acme_cert(&self, r: &AcmeCertRecord) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Put { key: acme_cert_key(&r.host), value: encode(r) }]).await
    }
}

#[cfg(test)]
mod acme_tests {
    use super::*;

    #[tokio::test]
    async fn acme_records_round_trip_and_never_print_keys() {
        let db = Db::new(Arc::new(crate::MemStore::new()));
        let account = AcmeAccountRecord {
            directory: "https://ca.test/dir".into(),
            credentials: "{\"key_pkcs8\":\"SECRET\"}".into(),
            created_at: 1,
        };
        db.put_acme_account(&account).await.unwrap();
        assert_eq!(db.acme_account("https://ca.test/dir").await.unwrap(), Some(account.clone()));
        assert_eq!(db.acme_account("https://other.test/dir").await.unwrap(), None);
        let cert = AcmeCertRecord {
            host: "shop.test".into(),
            chain_pem: "CHAIN".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----SECRET".into(),
            not_before: 10,
            not_after: 100,
            issued_at: 5,
        };
        db.put_acme_cert(&cert).await.unwrap();
        assert_eq!(db.acme_certs().await.unwrap(), vec![cert.clone()]);
        assert!(!format!("{account:?}{cert:?}").contains("SECRET"));
    }
}

fn secret_key(app: &str, name: &str) -> String {
    format!("secrets/{app}/{name}")
}

impl Db {
    pub async fn secret(&self, app: &str, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        self.get(&secret_key(app, name)).await
    }
    /// One app's secrets by name, or every app's when `app` is None.
    pub async fn secrets(&self, app: Option<&str>) -> Result<Vec<SecretRecord>, StoreError> {
        match app {
            Some(app) => self.list(&format!("secrets/{app}/")).await,
            None => self.list("secrets/").await,
        }
    }
    pub async fn put_secret(&self, r: &SecretRecord) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Put { key: secret_key(&r.app, &r.name), value: encode(r) }]).await
    }
    pub async fn delete_secret(&self, app: &str, name: &str) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Delete { key: secret_key(app, name) }]).await
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[tokio::test]
    async fn secrets_are_kept_per_app_and_never_print_their_sealed_value() {
        let db = Db::new(Arc::new(crate::MemStore::new()));
        let rec = |app: &str, name: &str| SecretRecord {
            app: app.into(),
            name: name.into(),
            sealed: "00SEALED".into(),
            digest: "d1".into(),
            created_at: 1,
            updated_at: 2,
        };
        db.put_secret(&rec("shop", "db_password")).await.unwrap();
        db.put_secret(&rec("shop", "token")).await.unwrap();
        db.put_secret(&rec("shop-staging", "db_password")).await.unwrap();
        let names = |v: Vec<SecretRecord>| v.into_iter().map(|r| format!("{}/{}", r.app, r.name)).collect::<Vec<_>>();
        assert_eq!(names(db.secrets(Some("shop")).await.unwrap()), ["shop/db_password", "shop/token"]);
        assert_eq!(db.secrets(None).await.unwrap().len(), 3);
        assert_eq!(db.secret("shop", "token").await.unwrap(), Some(rec("shop", "token")));
        db.delete_secret("shop", "token").await.unwrap();
        assert_eq!(db.secret("shop", "token").await.unwrap(), None);
        assert!(!format!("{:?}", rec("a", "b")).contains("SEALED"));
    }
}
