//! The behaviour every [`Store`] backend must have. Each backend's tests call
//! [`run`] with a factory for fresh, empty instances; a new backend is done
//! when this passes.

use crate::{Op, Store, StoreError};

fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.as_bytes().to_vec() }
}

/// Runs every check against fresh stores from `make`. Panics on the first
/// failure with a message naming the check.
pub async fn run<S: Store, F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    get_put_delete(&make().await).await;
    list_is_ordered_and_prefix_bounded(&make().await).await;
    batches_are_atomic(&make().await).await;
    expectations_guard_batches(&make().await).await;
    values_are_binary_safe(&make().await).await;
}

async fn get_put_delete<S: Store>(s: &S) {
    assert_eq!(s.get("a").await.unwrap(), None, "get of a missing key");
    s.apply(vec![put("a", "1")]).await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"1".to_vec()), "get after put");
    s.apply(vec![put("a", "2")]).await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"2".to_vec()), "put overwrites");
    s.apply(vec![Op::Delete { key: "a".into() }]).await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), None, "get after delete");
    s.apply(vec![Op::Delete { key: "never".into() }]).await.unwrap();
}

async fn list_is_ordered_and_prefix_bounded<S: Store>(s: &S) {
    s.apply(vec![put("t/2", "b"), put("t/10", "c"), put("t/1", "a"), put("u/1", "x"), put("s", "y")]).await.unwrap();
    let keys: Vec<String> = s.list("t/").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["t/1", "t/10", "t/2"], "list is bytewise ordered and bounded by prefix");
    assert_eq!(s.list("nothing/").await.unwrap(), vec![], "list of an empty prefix");
    assert_eq!(s.list("").await.unwrap().len(), 5, "empty prefix lists everything");
}

async fn batches_are_atomic<S: Store>(s: &S) {
    s.apply(vec![put("x", "1"), put("y", "1")]).await.unwrap();
    let failing = vec![
        put("x", "2"),
        Op::Delete { key: "y".into() },
        Op::Expect { key: "z".into(), value: Some(b"nope".to_vec()) },
    ];
    assert!(matches!(s.apply(failing).await, Err(StoreError::Conflict { .. })));
    assert_eq!(s.get("x").await.unwrap(), Some(b"1".to_vec()), "failed batch changed nothing");
    assert_eq!(s.get("y").await.unwrap(), Some(b"1".to_vec()), "failed batch deleted nothing");
}

async fn expectations_guard_batches<S: Store>(s: &S) {
    let create = vec![Op::Expect { key: "lock".into(), value: None }, put("lock", "me")];
    s.apply(create.clone()).await.unwrap();
    assert!(
        matches!(s.apply(create).await, Err(StoreError::Conflict { key }) if key == "lock"),
        "create-if-absent fails when present"
    );
    let swap = vec![Op::Expect { key: "lock".into(), value: Some(b"me".to_vec()) }, put("lock", "you")];
    s.apply(swap.clone()).await.unwrap();
    assert!(s.apply(swap).await.is_err(), "compare-and-swap fails on a stale value");
    assert_eq!(s.get("lock").await.unwrap(), Some(b"you".to_vec()));
}

async fn values_are_binary_safe<S: Store>(s: &S) {
    let bytes: Vec<u8> = (0..=255).collect();
    s.apply(vec![Op::Put { key: "bin".into(), value: bytes.clone() }]).await.unwrap();
    assert_eq!(s.get("bin").await.unwrap(), Some(bytes));
}
