//! The store holds wharf's desired state and history: apps, services,
//! revisions, releases, tasks, deployments and events.
//!
//! It is split in two layers so that backends stay small:
//! - [`Store`]: an ordered key-value map with atomic, conditional batches.
//!   Every backend (the embedded [`RedbStore`], later etcd) implements only
//!   this, and proves it with the shared [`conformance`] suite.
//! - [`Db`]: typed records on top of any `Store`, with the key layout in
//!   one place.

#![forbid(unsafe_code)]

pub mod conformance;
mod db;
mod jobs;
mod mem_store;
mod records;
mod redb_store;

pub use db::{Batch, Db};
pub use jobs::{JobCursor, JobRecord, JobRunRecord, RunState, RunTrigger};
pub use mem_store::MemStore;
pub use records::*;
pub use redb_store::{id_file, verify_file, RedbStore, StoreDigest};

use async_trait::async_trait;

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// The batch applies only if `key` currently holds `value` (None: absent).
    /// Compare-by-value works the same on every backend (etcd has it natively).
    Expect {
        key: String,
        value: Option<Vec<u8>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend error: {0}")]
    Backend(String),
    /// The blocking thread that ran the backend's call did not come back.
    #[error("store backend error: {0}")]
    Blocking(#[source] tokio::task::JoinError),
    #[error("conflict: `{key}` changed concurrently; retry the operation")]
    Conflict { key: String },
    #[error("corrupt record at `{key}`: {reason}")]
    Corrupt { key: String, reason: String },
    /// The store's file exists but cannot be used; nothing was started.
    #[error("the store {path} cannot be read: {reason}\n  hint: `wharf store check` lists the verified snapshots wharf keeps in the data directory; `wharf store restore` puts the newest back (the damaged file is kept beside it)")]
    Damaged { path: String, reason: String },
    /// A write failed for lack of space: nothing of it was applied.
    #[error("no space left on the store's disk ({0})\n  hint: free space on the data directory's disk; wharf keeps serving and writes again once it can")]
    DiskFull(String),
    #[error("store I/O error: {0}")]
    Io(String),
}

/// An ordered map of string keys to bytes. Keys are compared bytewise, so
/// fixed-width zero-padded numbers in keys list in numeric order.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// All pairs whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies every op or none. Fails with [`StoreError::Conflict`] when an
    /// `Expect` does not hold.
    async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[tokio::test]
    async fn a_blocking_call_that_panicked_is_a_backend_error_with_its_cause() {
        let join = tokio::task::spawn_blocking(|| panic!("boom")).await.unwrap_err();
        let e = StoreError::Blocking(join);
        assert!(e.to_string().starts_with("store backend error: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
