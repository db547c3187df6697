//! An in-memory backend: for tests that need a store without disk (the
//! scheduler's day-of-schedules tests write thousands of records).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::{Op, Store, StoreError};

/// A `BTreeMap` behind a lock; same semantics as every backend (it passes
/// the conformance suite), gone when dropped.
#[derive(Clone, Default)]
pub struct MemStore {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for op in &ops {
            if let Op::Expect { key, value } = op {
                if map.get(key) != value.as_ref() {
                    return Err(StoreError::Conflict { key: key.clone() });
                }
            }
        }
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    map.insert(key, value);
                }
                Op::Delete { key } => {
                    map.remove(&key);
                }
                Op::Expect { .. } => {}
            }
        }
        Ok(())
    }
}
