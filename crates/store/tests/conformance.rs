//! Every backend runs the shared conformance suite; the embedded one here.

use std::sync::Arc;

use wharf_store::{AppRecord, Batch, Db, EventRecord, RedbStore, ServiceRecord, Store};

#[tokio::test]
async fn redb_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    wharf_store::conformance::run(|| {
        let path = dir.path().join(format!("s{}.redb", n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
        async move { RedbStore::open(&path).unwrap() }
    })
    .await;
}

#[tokio::test]
async fn memory_passes_conformance() {
    wharf_store::conformance::run(|| async { wharf_store::MemStore::new() }).await;
}

#[tokio::test]
async fn redb_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        s.apply(vec![wharf_store::Op::Put { key: "k".into(), value: b"v".to_vec() }]).await.unwrap();
    }
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.get("k").await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test]
async fn typed_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap()));
    let app = AppRecord {
        name: "shop".into(),
        release: "abc".into(),
        routes: vec![],
        source: "app = \"shop\"".into(),
        deployed_at: 1,
        jobs: Some(vec![]),
    };
    let svc = ServiceRecord { app: "shop".into(), name: "web".into(), revision: 3, replicas: 2, ..Default::default() };
    let other =
        ServiceRecord { app: "shopping".into(), name: "web".into(), revision: 1, replicas: 1, ..Default::default() };
    let mut b = Batch::default();
    b.put_app(&app).put_service(&svc).put_service(&other);
    db.commit(b).await.unwrap();
    assert_eq!(db.app("shop").await.unwrap(), Some(app));
    // The app prefix must not leak into a sibling app whose name starts the same.
    assert_eq!(db.services(Some("shop")).await.unwrap(), vec![svc]);
    assert_eq!(db.services(None).await.unwrap().len(), 2);

    // Deployments: listed oldest first (ids sort numerically), and read one by one.
    for id in [2u64, 10, 1] {
        let d = wharf_store::DeploymentRecord { app: "shop".into(), id, ..Default::default() };
        db.put_deployment(&d).await.unwrap();
    }
    let ids: Vec<u64> = db.deployments("shop").await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(ids, [1, 2, 10]);
    assert_eq!(db.deployment("shop", 10).await.unwrap().map(|d| d.id), Some(10));
    assert_eq!(db.deployment("shop", 3).await.unwrap(), None);
    assert_eq!(db.deployment("shopping", 1).await.unwrap(), None);

    for i in 0..3 {
        let e = EventRecord {
            time: i,
            app: None,
            service: None,
            task: None,
            kind: "test".into(),
            message: format!("event {i}"),
        };
        db.add_event(&e).await.unwrap();
    }
    let events = db.events(2).await.unwrap();
    assert_eq!(events.iter().map(|e| e.time).collect::<Vec<_>>(), [1, 2], "newest two, in order");
}
