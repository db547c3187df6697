//! Weighted backend sets (a canary's old and new revisions) and sticky
//! clients, through an in-process proxy.

mod harness;

use std::sync::Arc;

use harness::*;
use http::{HeaderName, Method, StatusCode};
use http_body_util::Full;
use wharf_proxy::{Pool, Sticky};

fn canary(old: &Fake, new: &Fake, weights: (u32, u32), sticky: Option<Sticky>) -> Pool {
    let mut pool = Pool::with_sets("app/web", vec![set_of(6, weights.0, &[old]), set_of(7, weights.1, &[new])]);
    pool.sticky = sticky;
    pool
}

#[tokio::test]
async fn a_ten_ninety_split_holds_over_ten_thousand_requests() {
    let (old, new) = (ok_backend("old"), ok_backend("new"));
    let h = Arc::new(Harness::new().route("a.test/", canary(&old, &new, (90, 10), None)).start().await);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                for _ in 0..1250 {
                    assert_eq!(h.get("a.test", "/").await.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(old.hits() + new.hits(), 10_000);
    let share = new.hits() as f64 / 100.0;
    assert!((8.0..=12.0).contains(&share), "the new set took {share}% of the requests, not 10% ± 2");
}

#[tokio::test]
async fn a_set_without_backends_gets_no_traffic_and_its_weight_does_not_count() {
    let new = ok_backend("new");
    let pool = Pool::with_sets("app/web", vec![set_of(6, 90, &[]), set_of(7, 10, &[&new])]);
    let h = Harness::new().route("a.test/", pool).start().await;
    for _ in 0..50 {
        let r = h.get("a.test", "/").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(new.hits(), 50);
}

#[tokio::test]
async fn a_sticky_cookie_keeps_a_client_on_its_set() {
    let (old, new) = (ok_backend("old"), ok_backend("new"));
    let pool = canary(&old, &new, (50, 50), Some(Sticky::Cookie("wharf_set".into())));
    let h = Harness::new().route("a.test/", pool).start().await;
    let first = h.get("a.test", "/").await;
    let cookie = first.header("set-cookie").expect("a new client gets the cookie").to_string();
    let key = cookie.strip_prefix("wharf_set=").and_then(|c| c.strip_suffix("; Path=/; HttpOnly; SameSite=Lax"));
    let key = key.unwrap_or_else(|| panic!("{cookie}"));
    let side = if first.body.starts_with("old\n") { "6" } else { "7" };
    assert_eq!(key, side, "the cookie names the set that answered");
    let (old_before, new_before) = (old.hits(), new.hits());
    for _ in 0..40 {
        let req = h
            .request(Method::GET, "a.test", "/")
            .header("cookie", format!("theme=dark; wharf_set={key}"))
            .body(Full::default())
            .unwrap();
        let r = h.send(req).await;
        assert!(r.header("set-cookie").is_none(), "a kept client is not told again");
    }
    match key {
        "6" => assert_eq!((old.hits() - old_before, new.hits() - new_before), (40, 0)),
        _ => assert_eq!((old.hits() - old_before, new.hits() - new_before), (0, 40)),
    }
    let req = h.request(Method::GET, "a.test", "/").header("cookie", "wharf_set=99").body(Full::default()).unwrap();
    assert!(h.send(req).await.header("set-cookie").is_some(), "a set no longer in the pool: assigned anew");
}

#[tokio::test]
async fn a_sticky_header_keeps_each_value_on_one_set() {
    let (old, new) = (ok_backend("old"), ok_backend("new"));
    let pool = canary(&old, &new, (50, 50), Some(Sticky::Header(HeaderName::from_static("x-user"))));
    let h = Harness::new().route("a.test/", pool).start().await;
    let mut sides = Vec::new();
    for user in 0..20 {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let req = h
                .request(Method::GET, "a.test", "/")
                .header("x-user", format!("user-{user}"))
                .body(Full::default())
                .unwrap();
            seen.push(h.send(req).await.body.lines().next().unwrap_or_default().to_string());
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "user-{user} moved between sets: {seen:?}");
        sides.push(seen[0].clone());
    }
    assert!(sides.contains(&"old".into()) && sides.contains(&"new".into()), "both sets get users: {sides:?}");
}
