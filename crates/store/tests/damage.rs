//! A damaged store file is an error with a way out, never an empty start.

use std::path::Path;

use wharf_store::{Op, RedbStore, Store, StoreError};

async fn filled(path: &Path) -> RedbStore {
    let s = RedbStore::open(path).unwrap();
    for i in 0..200 {
        let value = format!("value {i} {}", "x".repeat(i * 10)).into_bytes();
        s.apply(vec![Op::Put { key: format!("apps/app{i:04}"), value }]).await.unwrap();
    }
    s
}

fn assert_damaged(r: Result<RedbStore, StoreError>, what: &str) {
    match r {
        Err(e @ StoreError::Damaged { .. }) => {
            let text = e.to_string();
            assert!(text.contains("wharf store restore"), "{what}: the error names the way out: {text}");
        }
        Err(e) => panic!("{what}: expected a damaged-store error, got {e}"),
        Ok(_) => panic!("{what}: a damaged store was opened"),
    }
}

#[tokio::test]
async fn an_empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(filled(&path).await);
    std::fs::File::create(&path).unwrap(); // truncates to 0 bytes
    assert_damaged(RedbStore::open(&path), "0 bytes");
}

#[tokio::test]
async fn a_truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(filled(&path).await);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    assert_damaged(RedbStore::open(&path), "half truncated");
}

#[tokio::test]
async fn garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(filled(&path).await);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let garbage: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, garbage).unwrap();
    assert_damaged(RedbStore::open(&path), "garbage");
}

#[tokio::test]
async fn garbage_in_the_middle_is_refused_or_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(filled(&path).await);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 3;
    let end = (mid + 8192).min(bytes.len());
    for b in &mut bytes[mid..end] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    // Either refused, or every record it serves is one that was written.
    if let Ok(s) = RedbStore::open(&path) {
        for (k, v) in s.list("").await.unwrap() {
            let i: usize = k.trim_start_matches("apps/app").parse().unwrap();
            assert!(v.starts_with(format!("value {i} ").as_bytes()), "{k} came back changed");
        }
    }
}

#[tokio::test]
async fn a_store_replaced_by_an_empty_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(filled(&path).await);
    std::fs::remove_file(&path).unwrap();
    // A new, empty database where the old one was: the directory remembers.
    drop(redb::Database::create(&path).unwrap());
    assert_damaged(RedbStore::open(&path), "empty replacement");
    // A missing file is refused the same way.
    std::fs::remove_file(&path).unwrap();
    assert_damaged(RedbStore::open(&path), "missing file, remembered id");
}

#[tokio::test]
async fn a_new_directory_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStore::open(&dir.path().join("store.redb")).unwrap();
    assert!(s.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_snapshot_is_verified_and_restores_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let s = filled(&path).await;
    let want = s.digest().unwrap();
    let snap = dir.path().join("snap.redb");
    assert_eq!(s.snapshot_to(&snap).unwrap(), want);
    assert!(!dir.path().join("snap.partial").exists());
    assert_eq!(wharf_store::verify_file(&snap).unwrap(), want);
    drop(s);
    // Restored in place of a damaged store, it opens with the same records and identity.
    std::fs::write(&path, b"").unwrap();
    std::fs::copy(&snap, &path).unwrap();
    let back = RedbStore::open(&path).unwrap();
    assert_eq!(back.digest().unwrap(), want);
    assert_eq!(back.list("").await.unwrap().len(), 200);
}
