//! The store's safety net: verified snapshots the server takes by itself,
//! and the checks and restore behind `wharf store check` / `wharf store
//! restore` to use them when the store file is damaged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wharf_logs::{Level, LogStream, Record};
use wharf_store::{verify_file, RedbStore, StoreDigest, StoreError};

use crate::error::{Chain, Context, ServerError};
use crate::STORE_FILE;

/// Snapshots live here, in the data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
/// How many snapshots are kept (the newest).
const KEEP: usize = 10;
/// How often the server looks for changes to snapshot, by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// Takes a snapshot at start, every `every` when the store changed, and at
/// a graceful stop.
pub struct Snapshots {
    dir: PathBuf,
    store: RedbStore,
    every: Duration,
    /// What the newest snapshot holds, read from its file once, then kept,
    /// so an unchanged store costs one read of the store, not two.
    newest: std::sync::Mutex<Option<StoreDigest>>,
}

impl Snapshots {
    pub fn new(data: &Path, store: RedbStore, every: Duration) -> Snapshots {
        Snapshots { dir: data.join(SNAPSHOT_DIR), store, every, newest: Default::default() }
    }

    /// Runs until `stop`, then takes a last snapshot; await the handle to
    /// know it is written.
    pub fn start(self, mut stop: tokio::sync::watch::Receiver<bool>, logs: LogStream) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let this = std::sync::Arc::new(self);
            let mut last = false;
            loop {
                let t = this.clone();
                match tokio::task::spawn_blocking(move || t.take()).await {
                    Ok(Ok(Some((path, d)))) => {
                        let msg = format!("store snapshot {} ({} records, verified)", path.display(), d.keys);
                        logs.append(Record::event("store.snapshot", Level::Info, msg));
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        let msg = format!("cannot take a store snapshot: {}", Chain(&e));
                        logs.append(Record::event("store.snapshot_failed", Level::Warn, msg));
                    }
                    Err(e) => tracing::warn!("store snapshot task failed: {e}"),
                }
                if last {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(this.every) => {}
                    _ = stop.wait_for(|s| *s) => last = true,
                }
            }
        })
    }

    /// A new snapshot if the store differs from the newest one.
    fn take(&self) -> Result<Option<(PathBuf, StoreDigest)>, ServerError> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        // Copies of the store: the server's alone, like the store itself.
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", self.dir.display()))?;
        let now = self.store.digest()?;
        if now.keys == 0 {
            // Nothing to lose yet; an empty snapshot would only be a trap for a restore.
            return Ok(None);
        }
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        if newest.is_none() {
            *newest = list(&self.dir).first().and_then(|p| verify_file(p).ok());
        }
        if newest.as_ref() == Some(&now) {
            return Ok(None);
        }
        let path = self.dir.join(format!("store-{}.redb", stamp(SystemTime::now())));
        let d = self.store.snapshot_to(&path)?;
        *newest = Some(d.clone());
        for old in list(&self.dir).into_iter().skip(KEEP) {
            let _ = std::fs::remove_file(old);
        }
        Ok(Some((path, d)))
    }
}

/// `20261201T180501Z`: sorts by time, and is a plain file name.
fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':'], "")
}

/// Snapshot files, newest first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with("store-") && name.ends_with(".redb")
        })
        .collect();
    v.sort();
    v.reverse();
    v
}

/// The pid of the server using `data`, if one runs (it holds the lock).
pub(crate) fn running_server(data: &Path) -> Option<String> {
    let f = std::fs::OpenOptions::new().write(true).open(data.join("server.lock")).ok()?;
    // Released when `f` is closed.
    if f.try_lock().is_ok() {
        return None;
    }
    Some(std::fs::read_to_string(data.join("server.pid")).unwrap_or_default().trim().to_string())
}

/// What reading a store file whole found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    Ok {
        records: usize,
        sha256: String,
    },
    /// The file cannot be read as a store: a snapshot can replace it.
    Damaged(String),
    /// I/O trouble (permissions, a file in use), said as it is.
    Unreadable(String),
}

impl FileCheck {
    fn of(path: &Path) -> FileCheck {
        match verify_file(path) {
            Ok(d) => FileCheck::Ok { records: d.keys, sha256: d.sha256 },
            Err(e) => {
                // Only a file that cannot be read is damaged.
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                match e {
                    StoreError::Damaged { .. } => FileCheck::Damaged(first),
                    _ => FileCheck::Unreadable(first),
                }
            }
        }
    }
}

/// The live store, as `wharf store check` can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveCheck {
    /// A running server has it open (and verified it when it started).
    InUse {
        pid: String,
    },
    Missing,
    Checked(FileCheck),
}

/// The live store and every snapshot, each read whole.
#[derive(Debug, Clone)]
pub struct StoreCheck {
    pub store: PathBuf,
    pub snapshot_dir: PathBuf,
    pub live: LiveCheck,
    /// Newest first.
    pub snapshots: Vec<(PathBuf, FileCheck)>,
}

impl StoreCheck {
    /// The live store could not be read whole.
    pub fn failed(&self) -> bool {
        matches!(self.live, LiveCheck::Checked(FileCheck::Damaged(_) | FileCheck::Unreadable(_)))
    }

    /// The live store is damaged: a restore can help.
    pub fn damaged(&self) -> bool {
        matches!(self.live, LiveCheck::Checked(FileCheck::Damaged(_)))
    }
}

/// `wharf store check`: the live store (when no server has it open) and
/// every snapshot, each read whole.
pub fn check(data: &Path) -> Result<StoreCheck, ServerError> {
    if !data.exists() {
        return Err(ServerError::Refused(format!(
            "no data directory at {}\n  hint: pass --data DIR (the server's data directory)",
            data.display()
        )));
    }
    let store = data.join(STORE_FILE);
    let live = match running_server(data) {
        Some(pid) => LiveCheck::InUse { pid },
        None if !store.exists() => LiveCheck::Missing,
        None => LiveCheck::Checked(FileCheck::of(&store)),
    };
    let snapshot_dir = data.join(SNAPSHOT_DIR);
    let snapshots = list(&snapshot_dir).into_iter().map(|p| (p.clone(), FileCheck::of(&p))).collect();
    Ok(StoreCheck { store, snapshot_dir, live, snapshots })
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub store: PathBuf,
    pub from: PathBuf,
    pub records: usize,
    /// Where the previous store file was moved, if there was one.
    pub kept: Option<PathBuf>,
}

/// `wharf store restore [SNAPSHOT]`: the newest snapshot that reads whole
/// (or the one given) becomes the store; the old file is kept beside it.
/// `skipped` hears of each snapshot passed over, and why.
pub fn restore(
    data: &Path,
    from: Option<PathBuf>,
    mut skipped: impl FnMut(&Path, &str),
) -> Result<Restored, ServerError> {
    if let Some(pid) = running_server(data) {
        return Err(ServerError::Refused(format!(
            "a wharf server (pid {pid}) is using {}\n  hint: stop it first; the restore needs the store closed",
            data.display()
        )));
    }
    let candidates = match from {
        Some(p) => vec![p],
        None => list(&data.join(SNAPSHOT_DIR)),
    };
    if candidates.is_empty() {
        return Err(ServerError::Refused(format!(
            "no snapshots in {}\n  hint: without a snapshot, move {} away to start with no apps (running tasks are then stopped)",
            data.join(SNAPSHOT_DIR).display(),
            data.join(STORE_FILE).display()
        )));
    }
    let mut chosen = None;
    for p in &candidates {
        match verify_file(p) {
            Ok(d) => {
                chosen = Some((p.clone(), d));
                break;
            }
            Err(e) => skipped(p, e.to_string().lines().next().unwrap_or("")),
        }
    }
    let Some((snap, digest)) = chosen else {
        return Err(ServerError::Refused("no snapshot reads whole; nothing was changed".into()));
    };
    let live = data.join(STORE_FILE);
    let kept = if live.exists() {
        let aside = data.join(format!("{STORE_FILE}.damaged-{}", stamp(SystemTime::now())));
        std::fs::rename(&live, &aside).with_context(|| format!("cannot move {} aside", live.display()))?;
        Some(aside)
    } else {
        None
    };
    let tmp = data.join(format!("{STORE_FILE}.restoring"));
    std::fs::copy(&snap, &tmp).with_context(|| format!("cannot copy {}", snap.display()))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).context("cannot sync the restored store")?;
    std::fs::rename(&tmp, &live).with_context(|| format!("cannot put the snapshot at {}", live.display()))?;
    Ok(Restored { store: live, from: snap, records: digest.keys, kept })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_store::{Op, Store};

    #[tokio::test]
    async fn a_damaged_store_is_named_and_the_newest_good_snapshot_restored() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let store = RedbStore::open(&data.join(STORE_FILE)).unwrap();
        store.apply(vec![Op::Put { key: "apps/shop".into(), value: b"{}".to_vec() }]).await.unwrap();
        let snapshots = Snapshots::new(data, store.clone(), DEFAULT_EVERY);
        let (snap, digest) = snapshots.take().unwrap().expect("a first snapshot");
        assert!(snapshots.take().unwrap().is_none(), "an unchanged store is not snapshotted again");
        drop((snapshots, store));

        let good = check(data).unwrap();
        assert!(matches!(good.live, LiveCheck::Checked(FileCheck::Ok { .. })), "{good:?}");
        assert!(!good.failed());

        std::fs::write(data.join(STORE_FILE), b"not a store").unwrap();
        let damaged = check(data).unwrap();
        assert!(matches!(damaged.live, LiveCheck::Checked(FileCheck::Damaged(_))), "{damaged:?}");
        assert!(damaged.failed() && damaged.damaged());
        let ok = FileCheck::Ok { records: digest.keys, sha256: digest.sha256.clone() };
        assert_eq!(damaged.snapshots, vec![(snap.clone(), ok)]);

        let mut skipped = Vec::new();
        let r = restore(data, None, |p, _| skipped.push(p.to_path_buf())).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!((r.from, r.records), (snap, digest.keys));
        let kept = r.kept.expect("the damaged file is kept");
        assert_eq!(std::fs::read(kept).unwrap(), b"not a store");
        assert_eq!(verify_file(&data.join(STORE_FILE)).unwrap(), digest);
    }

    #[test]
    fn a_restore_without_snapshots_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE), b"damaged").unwrap();
        let err = restore(dir.path(), None, |_, _| {}).unwrap_err();
        assert!(err.to_string().starts_with("no snapshots in"), "{err}");
        assert_eq!(std::fs::read(dir.path().join(STORE_FILE)).unwrap(), b"damaged");
    }
}
