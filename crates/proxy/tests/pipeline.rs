//! The request pipeline phase by phase, through an in-process proxy and
//! fake backends (see `harness`).

mod harness;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use harness::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use wharf_proxy::{Balance, Maintenance, PauseGate, PlainHttp, RouteHttps, RouteLimits};

// resolve

#[tokio::test]
async fn a_request_no_route_matches_gets_404() {
    let ok = ok_backend("ok");
    let h = Harness::new().route("a.test/api", pool_of(&[&ok])).start().await;
    let r = h.get("b.test", "/api").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("No route matches host `b.test` and path `/api`."), "{}", r.body);
    assert_eq!(h.get("A.Test:80", "/api/x").await.status, StatusCode::OK, "hosts are normalised");
    assert_eq!(ok.hits(), 1);
}

/// Plain HTTP on a route that redirects gets 308 to the same URL over https
/// (on the HTTPS listener's port); on one served over HTTPS only, 403. No
/// task sees either; a route that serves plain HTTP reaches its task with
/// `X-Forwarded-Proto: http`.
#[tokio::test]
async fn plain_http_is_redirected_or_refused_as_the_route_says() {
    let ok = ok_backend("ok");
    let with = |at: &str, plain| {
        let mut r = route_at(at, pool_of(&[&ok]));
        r.https = RouteHttps { plain, hsts: Some(60) };
        r
    };
    let h = Harness::new()
        .config(|c| c.https_port = Some(8443))
        .route_spec(with("shop.test/", PlainHttp::Redirect))
        .route_spec(with("admin.test/", PlainHttp::Refuse))
        .route_spec(with("open.test/", PlainHttp::Serve))
        .start()
        .await;
    let r = h.get("Shop.Test:8080", "/cart?item=1&x=%2F").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), Some("https://shop.test:8443/cart?item=1&x=%2F"));
    assert_eq!(r.header("strict-transport-security"), None, "HSTS only over HTTPS");
    let r = h.get("admin.test", "/").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("served over HTTPS only: use https://admin.test:8443/"), "{}", r.body);
    let r = h.get("open.test", "/x").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.to_ascii_lowercase().contains("x-forwarded-proto: http\n"), "{}", r.body);
    assert_eq!(ok.hits(), 1, "only the route that serves plain HTTP reached the task");

    // Without an HTTPS listener there is nowhere to redirect to: served.
    let plain = Harness::new().route_spec(with("shop.test/", PlainHttp::Redirect)).start().await;
    assert_eq!(plain.get("shop.test", "/").await.status, StatusCode::OK);
}

/// HTTP-01: a pending token is answered by the proxy itself, before
/// routing (so even on a route that redirects to HTTPS), and never reaches
/// the task; an unknown token is routed like any other path.
#[tokio::test]
async fn a_pending_acme_token_is_answered_before_routing_and_others_fall_through() {
    let ok = ok_backend("ok");
    let mut route = route_at("shop.test/", pool_of(&[&ok]));
    route.https = RouteHttps { plain: PlainHttp::Redirect, hsts: None };
    let h = Harness::new().config(|c| c.https_port = Some(8443)).route_spec(route).start().await;
    let acme = h.proxy.acme_challenges();
    assert!(acme.add_http("tok-1", "tok-1.thumbprint"));
    let r = h.get("shop.test", "/.well-known/acme-challenge/tok-1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "tok-1.thumbprint");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = h.get("unrouted.test", "/.well-known/acme-challenge/tok-1").await;
    assert_eq!(r.status, StatusCode::OK, "answered whatever the host's routes");
    assert_eq!(h.get("shop.test", "/.well-known/acme-challenge/other").await.status, StatusCode::PERMANENT_REDIRECT);
    acme.remove_http("tok-1");
    assert_eq!(h.get("shop.test", "/.well-known/acme-challenge/tok-1").await.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(ok.hits(), 0, "no challenge request reached the task");
}

#[tokio::test]
async fn a_paused_service_holds_requests_until_released() {
    let ok = ok_backend("ok");
    let gate = Arc::new(PauseGate::new(10, Duration::from_secs(30)));
    let mut paused = pool_of(&[&ok]);
    paused.pause = Some(gate.clone());
    let h = Arc::new(Harness::new().route("a.test/", paused).start().await);
    let held = tokio::spawn({
        let h = h.clone();
        async move { h.get("a.test", "/x").await }
    });
    assert!(wait_for(|| gate.waiting() == 1).await, "the request waits at the gate");
    assert_eq!(ok.hits(), 0, "nothing reaches the task while paused");
    assert!(!held.is_finished());
    // As the control plane does: a snapshot without the pause, then release.
    h.swap(vec![route_at("a.test/", pool_of(&[&ok]))]);
    gate.release();
    let r = held.await.unwrap();
    assert_eq!((r.status, ok.hits()), (StatusCode::OK, 1));
}

#[tokio::test]
async fn a_pause_that_outlives_its_maximum_answers_503() {
    let ok = ok_backend("ok");
    let mut paused = pool_of(&[&ok]);
    paused.pause = Some(Arc::new(PauseGate::new(10, Duration::from_millis(50))));
    let h = Harness::new().route("a.test/", paused).start().await;
    let r = h.get("a.test", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("`app/web` is paused; try again shortly."), "{}", r.body);
    assert_eq!(ok.hits(), 0);
}

#[tokio::test]
async fn maintenance_answers_with_its_page_but_lets_the_health_check_through() {
    let ok = ok_backend("ok");
    let mut pool = pool_of(&[&ok]);
    pool.maintenance = Some(Maintenance { page: Bytes::from_static(b"<h1>back soon</h1>"), retry_after_secs: 42 });
    pool.health_path = Some("/healthz".into());
    let h = Harness::new().route("a.test/", pool).start().await;
    let r = h.get("a.test", "/orders").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body, "<h1>back soon</h1>");
    assert_eq!(r.header("retry-after"), Some("42"));
    assert_eq!(ok.hits(), 0);
    let r = h.get("a.test", "/healthz").await;
    assert_eq!((r.status, ok.hits()), (StatusCode::OK, 1), "the health check bypasses maintenance");
}

// prepare

#[tokio::test]
async fn a_body_declared_over_the_route_limit_gets_413_and_never_reaches_the_task() {
    let ok = ok_backend("ok");
    let mut route = route_at("a.test/", pool_of(&[&ok]));
    route.limits = RouteLimits { max_body: Some(10), ..RouteLimits::default() };
    let h = Harness::new().route_spec(route).start().await;
    let big = h.request(Method::POST, "a.test", "/up").body(Full::new(Bytes::from(vec![b'x'; 100]))).unwrap();
    let r = h.send(big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body.contains("larger than 10 bytes"), "{}", r.body);
    assert_eq!(ok.hits(), 0);
    let small = h.request(Method::POST, "a.test", "/up").body(Full::new(Bytes::from_static(b"tiny"))).unwrap();
    assert_eq!(h.send(small).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_task_gets_a_request_id_and_forwarded_headers_without_hop_by_hop_ones() {
    let ok = ok_backend("ok");
    let h = Harness::new().route("a.test/", pool_of(&[&ok])).start().await;
    let req = h
        .request(Method::GET, "a.test", "/x?q=1")
        .header("x-forwarded-for", "10.0.0.1")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .body(Full::default())
        .unwrap();
    let echo = h.send(req).await.body;
    assert!(echo.contains("GET /x?q=1\n"), "{echo}");
    assert!(echo.contains("x-forwarded-for: 10.0.0.1, 127.0.0.1\n"), "{echo}");
    assert!(echo.contains("x-forwarded-host: a.test\n"), "{echo}");
    assert!(echo.contains("x-forwarded-proto: http\n"), "{echo}");
    assert!(!echo.contains("x-secret"), "headers named in Connection are hop-by-hop: {echo}");
    let id = echo.lines().find_map(|l| l.strip_prefix("x-request-id: ")).expect("a request id");
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let req = h.request(Method::GET, "a.test", "/").header("x-request-id", "abc-1").body(Full::default()).unwrap();
    assert!(h.send(req).await.body.contains("x-request-id: abc-1\n"), "the client's id is kept");
}

// forward

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_task() {
    let (refusing, ok) = (refusing_backend("refusing"), ok_backend("ok"));
    let mut pool = pool_of(&[&refusing, &ok]);
    // Round robin starts with the refusing task.
    pool.balance = Balance::RoundRobin;
    let h = Harness::new().route("a.test/", pool).start().await;
    for _ in 0..10 {
        let r = h.get("a.test", "/").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(ok.hits(), 10);
    assert!(refusing.backend.ejected(), "the refusing task is kept away for a while");
}

#[tokio::test]
async fn a_post_that_went_out_is_not_sent_again_but_a_get_is() {
    let (closing, ok) = (closing_backend("closing"), ok_backend("ok"));
    let mut pool = pool_of(&[&closing, &ok]);
    pool.balance = Balance::RoundRobin;
    let h = Harness::new().route("a.test/", pool).start().await;
    let post = h.request(Method::POST, "a.test", "/pay").body(Full::new(Bytes::from_static(b"1 EUR"))).unwrap();
    let r = h.send(post).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.body.contains("`app/web` closed the connection without answering."), "{}", r.body);
    assert_eq!((closing.hits(), ok.hits()), (1, 0), "the payment is not made twice");
    closing.backend.revive();
    let mut pool = pool_of(&[&closing, &ok]);
    pool.balance = Balance::RoundRobin;
    h.swap(vec![route_at("a.test/", pool)]);
    let r = h.get("a.test", "/read").await;
    assert_eq!(r.status, StatusCode::OK, "an idempotent, bodyless request is replayed");
    assert_eq!((closing.hits(), ok.hits()), (2, 1));
}

#[tokio::test]
async fn a_task_that_does_not_answer_in_time_gets_504() {
    let hanging = hanging_backend("hanging");
    let h = Harness::new()
        .config(|c| c.response_timeout = Duration::from_millis(200))
        .route("a.test/", pool_of(&[&hanging]))
        .start()
        .await;
    let r = h.get("a.test", "/").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.body.contains("did not answer within 0.2s"), "{}", r.body);
    assert_eq!(hanging.hits(), 1, "a request that went out is never sent twice after a timeout");
}

#[tokio::test]
async fn a_5xx_of_the_live_set_is_answered_by_the_standby_set_when_replayable() {
    let (failing, standby) = (failing_backend("new", 500), ok_backend("old"));
    let mut pool = pool_of(&[&failing]);
    pool.fallback = vec![standby.backend.clone()];
    let h = Harness::new().route("a.test/", pool).start().await;
    let r = h.get("a.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.starts_with("old\n"), "{}", r.body);
    assert_eq!((failing.hits(), standby.hits()), (1, 1));
    let post = h.request(Method::POST, "a.test", "/").body(Full::new(Bytes::from_static(b"x"))).unwrap();
    let r = h.send(post).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (500, "new"), "a POST is not sent to the standby set");
    assert_eq!((failing.hits(), standby.hits()), (2, 1));
}

#[tokio::test]
async fn without_a_task_a_request_waits_then_gets_503() {
    let h = Harness::new()
        .config(|c| c.hold_timeout = Duration::from_millis(100))
        .route("a.test/", pool_of(&[]))
        .start()
        .await;
    let r = h.get("a.test", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("`app/web` has no healthy tasks right now."), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
}
