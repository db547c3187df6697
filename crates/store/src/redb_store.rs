//! The embedded single-file backend: one redb database in the data directory.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};

use crate::{Op, Store, StoreError};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// redb gives ACID transactions with fsync on commit, so a `kill -9` at any
/// moment leaves the last committed state intact.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Backend(format!("cannot open store {}: {e}", path.display())))?;
        // Create the table up front so reads never see "table does not exist".
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(KV).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(RedbStore { db: Arc::new(db) })
    }

    fn get_sync(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let table = tx.open_table(KV).map_err(backend)?;
        Ok(table.get(key).map_err(backend)?.map(|v| v.value().to_vec()))
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let table = tx.open_table(KV).map_err(backend)?;
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn apply_sync(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut table = tx.open_table(KV).map_err(backend)?;
            for op in &ops {
                if let Op::Expect { key, value } = op {
                    let current = table.get(key.as_str()).map_err(backend)?;
                    let current = current.as_ref().map(|v| v.value());
                    if current != value.as_deref() {
                        return Err(StoreError::Conflict { key: key.clone() });
                    }
                }
            }
            for op in ops {
                match op {
                    Op::Put { key, value } => {
                        table.insert(key.as_str(), value.as_slice()).map_err(backend)?;
                    }
                    Op::Delete { key } => {
                        table.remove(key.as_str()).map_err(backend)?;
                    }
                    Op::Expect { .. } => {}
                }
            }
        }
        tx.commit().map_err(backend)
    }
}

// redb calls block on disk I/O (fsync on commit), so they run on the blocking pool.
#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (this, key) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || this.get_sync(&key)).await.map_err(backend)?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (this, prefix) = (self.clone(), prefix.to_string());
        tokio::task::spawn_blocking(move || this.list_sync(&prefix)).await.map_err(backend)?
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_sync(ops)).await.map_err(backend)?
    }
}
