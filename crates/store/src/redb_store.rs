//! The embedded single-file backend: one redb database in the data directory.
//!
//! A store is wharf's memory of every app, so opening it is strict: a file
//! that exists but cannot be read is an error with a way out (a verified
//! snapshot), never a silent empty start. A store that lost its data while
//! its directory still remembers having one is refused the same way.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};

use crate::{Op, Store, StoreError};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// The store's identity, apart from the data so no listing ever sees it.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const ID_KEY: &str = "id";

/// redb gives ACID transactions with fsync on commit, so a `kill -9` at any
/// moment leaves the last committed state intact.
///
/// After an I/O error (a full disk) redb refuses every later operation
/// until the database is opened again, so the handle is closed then and
/// reopened by the next operation: the store recovers by itself once space
/// is freed.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: RwLock<Option<Database>>,
}

/// What a snapshot holds, to tell whether two copies are the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDigest {
    pub keys: usize,
    /// SHA-256 over every key and value in order, hex.
    pub sha256: String,
}

/// A failure inside one operation: redb's own, or a failed `Expect`.
enum Failure {
    /// Boxed: redb's error is large, and this travels through every call.
    Redb(Box<redb::Error>),
    Conflict(String),
    /// Writing a copy (a snapshot) failed; the live store is fine.
    Copy(StoreError),
}

macro_rules! redb_failures {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::Redb(Box::new(e.into()))
            }
        }
    )*};
}
redb_failures!(redb::Error, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// The file that remembers a store's identity next to it (`store.id` for
/// `store.redb`), so a store replaced by an empty one is noticed.
pub fn id_file(path: &Path) -> PathBuf {
    path.with_extension("id")
}

fn damaged(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Damaged { path: path.display().to_string(), reason: reason.into() }
}

/// Maps redb's errors, naming a full disk as such.
fn classify(e: redb::Error) -> StoreError {
    match e {
        redb::Error::Io(io) => io_error(&io),
        redb::Error::PreviousIo => {
            StoreError::Io("an earlier write failed; the store is reopened on the next operation".into())
        }
        redb::Error::Corrupted(c) => StoreError::Io(format!("the store is corrupted: {c}")),
        other => StoreError::Backend(other.to_string()),
    }
}

fn io_error(e: &std::io::Error) -> StoreError {
    if e.kind() == ErrorKind::StorageFull {
        StoreError::DiskFull(e.to_string())
    } else {
        StoreError::Io(e.to_string())
    }
}

/// Runs `f`, turning a panic inside redb (it panics on some damaged files)
/// into an error, without printing the panic.
fn without_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the store's format is broken".into())
    })
}

/// Opens an existing database file strictly, reading every record once so a
/// damaged page is found now rather than in the middle of a deploy.
fn open_existing(path: &Path) -> Result<Database, StoreError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(&e))?;
    if !meta.is_file() {
        return Err(damaged(path, "it is not a regular file"));
    }
    if meta.len() == 0 {
        return Err(damaged(path, "the file is empty (0 bytes)"));
    }
    let db = without_panics(|| Database::open(path)).map_err(|p| damaged(path, p))?.map_err(|e| match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() != ErrorKind::InvalidData => {
            io_error(&io)
        }
        // Open elsewhere (a running server): busy, not damaged.
        redb::DatabaseError::DatabaseAlreadyOpen => {
            StoreError::Io(format!("{} is open in another process (a running server?)", path.display()))
        }
        other => damaged(path, other.to_string()),
    })?;
    let checked = without_panics(|| digest_of(&db)).map_err(|p| damaged(path, p))?;
    match checked {
        Ok(_) => Ok(db),
        Err(Failure::Redb(e)) => Err(damaged(path, e.to_string())),
        Err(Failure::Conflict(k)) => Err(damaged(path, k)),
        Err(Failure::Copy(e)) => Err(e),
    }
}

/// Every key and value, hashed in key order, in one read transaction.
fn digest_of(db: &Database) -> Result<StoreDigest, Failure> {
    let tx = db.begin_read()?;
    let mut hash = Sha256::new();
    let mut keys = 0;
    match tx.open_table(KV) {
        Ok(table) => {
            for item in table.range::<&str>(..)? {
                let (k, v) = item?;
                let (k, v) = (k.value(), v.value());
                hash.update((k.len() as u64).to_le_bytes());
                hash.update(k.as_bytes());
                hash.update((v.len() as u64).to_le_bytes());
                hash.update(v);
                keys += 1;
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(StoreDigest { keys, sha256 })
}

fn read_id(db: &Database) -> Result<Option<String>, Failure> {
    let tx = db.begin_read()?;
    match tx.open_table(META) {
        Ok(t) => Ok(t.get(ID_KEY)?.map(|v| v.value().to_string())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn has_data(db: &Database) -> Result<bool, Failure> {
    let tx = db.begin_read()?;
    match tx.open_table(KV) {
        Ok(t) => Ok(t.range::<&str>(..)?.next().is_some()),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn new_id() -> String {
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    h.update(format!("{:p}", &h).as_bytes());
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn fail(e: Failure) -> StoreError {
    match e {
        Failure::Redb(e) => classify(*e),
        Failure::Conflict(key) => StoreError::Conflict { key },
        Failure::Copy(e) => e,
    }
}

impl RedbStore {
    /// Opens the store at `path`, creating it only when no file is there.
    ///
    /// Refuses (with [`StoreError::Damaged`]) a file that exists but cannot
    /// be read, and a store with no data whose directory remembers one
    /// (`store.id` beside it): both mean the data was lost, and starting
    /// empty would stop every running task.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let existed = match std::fs::symlink_metadata(path) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(io_error(&e)),
        };
        let db = if existed {
            open_existing(path)?
        } else {
            Database::create(path).map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Io(io)) => io_error(&io),
                other => StoreError::Backend(format!("cannot create store {}: {other}", path.display())),
            })?
        };
        let remembered = match std::fs::read_to_string(id_file(path)) {
            Ok(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&e)),
        };
        let id = read_id(&db).map_err(fail)?;
        match (&id, &remembered) {
            (None, Some(was)) if !has_data(&db).map_err(fail)? => {
                return Err(damaged(
                    path,
                    format!(
                        "it holds no data, but this data directory had a store (id {was}, in {})",
                        id_file(path).display()
                    ),
                ));
            }
            _ => {}
        }
        let id = match id {
            Some(id) => id,
            None => {
                let id = remembered.clone().unwrap_or_else(new_id);
                let tx = db.begin_write().map_err(|e| fail(e.into()))?;
                {
                    let mut meta = tx.open_table(META).map_err(|e| fail(e.into()))?;
                    meta.insert(ID_KEY, id.as_str()).map_err(|e| fail(e.into()))?;
                    // Create the data table up front so reads never see "table does not exist".
                    tx.open_table(KV).map_err(|e| fail(e.into()))?;
                }
                tx.commit().map_err(|e| fail(e.into()))?;
                id
            }
        };
        if remembered.as_deref() != Some(id.as_str()) {
            write_atomically(&id_file(path), id.as_bytes()).map_err(|e| io_error(&e))?;
        }
        Ok(RedbStore { inner: Arc::new(Inner { path: path.to_path_buf(), db: RwLock::new(Some(db)) }) })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the open database; after an I/O error the handle is
    /// closed, and the next call opens the file again.
    fn run<T>(&self, f: impl Fn(&Database) -> Result<T, Failure>) -> Result<T, StoreError> {
        {
            let guard = self.inner.db.read().unwrap_or_else(|p| p.into_inner());
            if let Some(db) = guard.as_ref() {
                let r = f(db);
                drop(guard);
                return self.settle(r);
            }
        }
        // Closed after an error: open again, and run under the write lock so
        // nobody closes it in between.
        let mut slot = self.inner.db.write().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let db = without_panics(|| Database::open(&self.inner.path))
                .map_err(|p| damaged(&self.inner.path, p))?
                .map_err(|e| match e {
                    redb::DatabaseError::Storage(redb::StorageError::Io(io)) => io_error(&io),
                    other => StoreError::Backend(format!("cannot reopen the store: {other}")),
                })?;
            *slot = Some(db);
        }
        let r = f(slot.as_ref().expect("opened above"));
        drop(slot);
        self.settle(r)
    }

    /// Maps a result; after an I/O error closes the handle so the next
    /// operation opens the file again.
    fn settle<T>(&self, r: Result<T, Failure>) -> Result<T, StoreError> {
        match r {
            Ok(v) => Ok(v),
            Err(Failure::Redb(e)) => {
                if matches!(*e, redb::Error::Io(_) | redb::Error::PreviousIo) {
                    *self.inner.db.write().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Err(classify(*e))
            }
            Err(Failure::Conflict(key)) => Err(StoreError::Conflict { key }),
            Err(Failure::Copy(e)) => Err(e),
        }
    }

    fn get_sync(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(KV)?;
            Ok(table.get(key)?.map(|v| v.value().to_vec()))
        })
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(KV)?;
            let mut out = Vec::new();
            for item in table.range(prefix..)? {
                let (k, v) = item?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn apply_sync(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.run(|db| {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(KV)?;
                for op in ops {
                    if let Op::Expect { key, value } = op {
                        let current = table.get(key.as_str())?;
                        let current = current.as_ref().map(|v| v.value());
                        if current != value.as_deref() {
                            return Err(Failure::Conflict(key.clone()));
                        }
                    }
                }
                for op in ops {
                    match op {
                        Op::Put { key, value } => {
                            table.insert(key.as_str(), value.as_slice())?;
                        }
                        Op::Delete { key } => {
                            table.remove(key.as_str())?;
                        }
                        Op::Expect { .. } => {}
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// What the store holds now, as a digest.
    pub fn digest(&self) -> Result<StoreDigest, StoreError> {
        self.run(digest_of)
    }

    /// Copies the whole store (one consistent read) into a new database at
    /// `dest`, then opens the copy and checks it holds the same records
    /// before it takes its name: a snapshot that exists is a good one.
    pub fn snapshot_to(&self, dest: &Path) -> Result<StoreDigest, StoreError> {
        let tmp = dest.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        let result = self.write_copy(&tmp).and_then(|want| {
            let got = verify_file(&tmp)?;
            if got != want {
                return Err(damaged(&tmp, "the copy does not match the store"));
            }
            std::fs::rename(&tmp, dest).map_err(|e| io_error(&e))?;
            sync_dir(dest);
            Ok(got)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_copy(&self, to: &Path) -> Result<StoreDigest, StoreError> {
        // Errors of the copy (say, no room for it) are the copy's: they must
        // not close the live store as its own I/O errors do.
        fn copy_err(e: impl Into<redb::Error>) -> Failure {
            Failure::Copy(classify(e.into()))
        }
        self.run(|db| {
            let copy = Database::create(to).map_err(copy_err)?;
            let read = db.begin_read()?;
            let write = copy.begin_write().map_err(copy_err)?;
            {
                let src = read.open_table(KV)?;
                let mut dst = write.open_table(KV).map_err(copy_err)?;
                for item in src.range::<&str>(..)? {
                    let (k, v) = item?;
                    dst.insert(k.value(), v.value()).map_err(copy_err)?;
                }
                let mut meta = write.open_table(META).map_err(copy_err)?;
                if let Ok(src) = read.open_table(META) {
                    for item in src.range::<&str>(..)? {
                        let (k, v) = item?;
                        meta.insert(k.value(), v.value()).map_err(copy_err)?;
                    }
                }
            }
            write.commit().map_err(copy_err)?;
            drop(read);
            digest_of(db)
        })
    }
}

/// Opens a store file on its own (not the live one) and reads it whole.
pub fn verify_file(path: &Path) -> Result<StoreDigest, StoreError> {
    let db = open_existing(path)?;
    digest_of(&db).map_err(fail)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path);
    Ok(())
}

/// Makes a rename durable; best effort, as a rename is atomic either way.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

// redb calls block on disk I/O (fsync on commit), so they run on the blocking pool.
#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (this, key) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || this.get_sync(&key)).await.map_err(StoreError::Blocking)?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (this, prefix) = (self.clone(), prefix.to_string());
        tokio::task::spawn_blocking(move || this.list_sync(&prefix)).await.map_err(StoreError::Blocking)?
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_sync(&ops)).await.map_err(StoreError::Blocking)?
    }
}
