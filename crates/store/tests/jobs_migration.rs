//! A store written before jobs were recorded as typed records: its app
//! records hold only the wharf.toml text, and still give their jobs.

use std::sync::Arc;

use wharf_store::{Db, Op, RedbStore, Store};

const SOURCE: &str = "app = \"shop\"\n[service.web]\ncommand = \"web\"\n\
                      [job.digest]\nschedule = \"0 3 * * *\"\ncommand = \"send\"\n\
                      [job.sweep]\nschedule = \"*/5 * * * *\"\ncommand = \"sweep\"\nretries = 2\n";

/// An app record exactly as the store wrote it before: no `jobs` field.
fn old_record(name: &str, source: &str) -> Vec<u8> {
    serde_json::json!({
        "name": name,
        "release": "abc",
        "routes": [],
        "source": source,
        "deployed_at": 1,
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn an_old_store_gets_typed_jobs_on_first_read_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let old = RedbStore::open(&path).unwrap();
        old.apply(vec![
            Op::Put { key: "apps/shop".into(), value: old_record("shop", SOURCE) },
            Op::Put { key: "apps/broken".into(), value: old_record("broken", "app = ") },
        ])
        .await
        .unwrap();
    }
    let store = Arc::new(RedbStore::open(&path).unwrap());
    let db = Db::new(store.clone());

    let apps = db.apps().await.unwrap();
    let shop = apps.iter().find(|a| a.name == "shop").unwrap();
    let jobs: Vec<(&str, u32, &str, Option<u64>)> =
        shop.jobs().iter().map(|r| (r.job.name.as_str(), r.job.retries, r.release.as_str(), r.deployment)).collect();
    assert_eq!(jobs, [("digest", 0, "abc", None), ("sweep", 2, "abc", None)]);
    // A text that no longer parses: no jobs rather than an error.
    let broken = apps.iter().find(|a| a.name == "broken").unwrap();
    assert_eq!(broken.jobs, Some(vec![]));
    let why = wharf_store::JobRecord::from_source("app = ", "abc").unwrap_err().to_string();
    assert!(why.contains("wharf.toml:1"), "the warning says where the text is wrong: {why}");

    // Written back: the text is not needed to read the jobs again.
    let raw: serde_json::Value = serde_json::from_slice(&store.get("apps/shop").await.unwrap().unwrap()).unwrap();
    assert_eq!(raw["jobs"].as_array().map(Vec::len), Some(2), "{raw}");
    let mut changed = raw.clone();
    changed["source"] = "not a wharf.toml any more".into();
    store.apply(vec![Op::Put { key: "apps/shop".into(), value: changed.to_string().into_bytes() }]).await.unwrap();
    let again = db.app("shop").await.unwrap().unwrap();
    assert_eq!(again.jobs, shop.jobs);
}

#[tokio::test]
async fn a_single_app_read_migrates_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
    store.apply(vec![Op::Put { key: "apps/shop".into(), value: old_record("shop", SOURCE) }]).await.unwrap();
    let db = Db::new(store.clone());
    let app = db.app("shop").await.unwrap().unwrap();
    assert_eq!(app.jobs().len(), 2);
    let raw: serde_json::Value = serde_json::from_slice(&store.get("apps/shop").await.unwrap().unwrap()).unwrap();
    assert_eq!(raw["jobs"].as_array().map(Vec::len), Some(2), "{raw}");
}
