//! The dashboard under `/ui`: server-rendered pages that read without
//! JavaScript, a live stream of the overview (Server-Sent Events), logins
//! that turn an API token into a session cookie, and a CSRF token on every
//! form. It reads the same controller views as the API; nothing is kept
//! twice.

mod actions;
mod assets;
mod live;
mod pages;
mod session;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use maud::Markup;
use serde::Deserialize;
use tokio::sync::broadcast;
use wharf_control::Controller;

use live::Live;
use session::Sessions;

/// Largest form accepted: a token or a CSRF token and a few fields.
const MAX_FORM: usize = 16 << 10;

#[derive(Clone)]
struct UiState {
    ctl: Arc<Controller>,
    token: Arc<str>,
    read_token: Arc<str>,
    sessions: Arc<Sessions>,
    live: Arc<Live>,
}

/// The dashboard's routes; they check sessions themselves (not the API's bearer token).
pub(crate) fn router(ctl: Arc<Controller>, token: Arc<str>, read_token: Arc<str>) -> Router {
    let state = UiState {
        ctl: ctl.clone(),
        token,
        read_token,
        sessions: Arc::new(Sessions::new(session::IDLE, session::MAX_SESSIONS)),
        live: Arc::new(Live::new(ctl)),
    };
    Router::new()
        .route("/ui", get(overview))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/events", get(events))
        .route("/ui/event-log", get(event_log))
        .route("/ui/deployments", get(deployments))
        .route("/ui/jobs", get(jobs))
        .route("/ui/service", get(actions::service_page))
        .route("/ui/rollback", get(actions::rollback_page).post(actions::rollback))
        .route("/ui/run-job", get(actions::run_job_page).post(actions::run_job))
        .route("/ui/scale", get(actions::scale_page).post(actions::scale))
        .route("/ui/maintenance", get(actions::maintenance_page).post(actions::maintenance))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(middleware::map_response(headers))
        .with_state(state)
}

/// Pages are never cached (they show live state and CSRF tokens); no page
/// may be framed, and only our own scripts and styles run.
async fn headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

fn page(status: StatusCode, m: Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

/// The session's id and CSRF token, when the request carries a live session.
fn session(st: &UiState, headers: &HeaderMap) -> Option<(String, String)> {
    let id = session::cookie_id(headers)?;
    let csrf = st.sessions.touch(&id)?;
    Some((id, csrf))
}

/// A POST's session id and CSRF token, if it has a session and the form's
/// CSRF token is the session's; otherwise why it is refused (and nothing is done).
fn checked_post(st: &UiState, headers: &HeaderMap, form_csrf: Option<&str>) -> Result<(String, String), &'static str> {
    let Some((id, csrf)) = session(st, headers) else {
        return Err("No session: log in first.");
    };
    match form_csrf {
        Some(given) if crate::token::matches(&csrf, given) => Ok((id, csrf)),
        _ => Err("This form's CSRF token is missing or wrong: reload the page and try again."),
    }
}

/// Why a session may not act (it logged in with the read-only token).
const READ_ONLY: &str = "This session logged in with the read-only token: it can look, not change anything.";

/// A POST that changes something: [`checked_post`], and not a read-only session.
fn checked_action(
    st: &UiState,
    headers: &HeaderMap,
    form_csrf: Option<&str>,
) -> Result<(String, String), &'static str> {
    let (id, csrf) = checked_post(st, headers, form_csrf)?;
    if st.sessions.read_only(&id) {
        return Err(READ_ONLY);
    }
    Ok((id, csrf))
}

/// The answer to a refused POST.
fn refused(why: &str) -> Response {
    page(StatusCode::FORBIDDEN, pages::message("Refused", why))
}

async fn overview(State(st): State<UiState>, headers: HeaderMap) -> Response {
    let Some((id, csrf)) = session(&st, &headers) else {
        return Redirect::to("/ui/login").into_response();
    };
    let o = st.live.overview().await;
    page(StatusCode::OK, pages::overview(&o, live::now_ms(), &csrf, st.sessions.read_only(&id)))
}

async fn login_page(State(st): State<UiState>, headers: HeaderMap) -> Response {
    if session(&st, &headers).is_some() {
        return Redirect::to("/ui").into_response();
    }
    page(StatusCode::OK, pages::login(None))
}

async fn jobs(State(st): State<UiState>, headers: HeaderMap) -> Response {
    let Some((id, csrf)) = session(&st, &headers) else {
        return Redirect::to("/ui/login").into_response();
    };
    let read = async {
        let mut out = Vec::new();
        for app in st.ctl.db().apps().await.map_err(|e| e.to_string())? {
            out.extend(st.ctl.jobs_view(&app.name).await.map_err(|e| e.to_string())?);
        }
        Ok::<_, String>(out)
    };
    let jobs = read.await;
    let now = st.ctl.scheduler_now_ms();
    page(StatusCode::OK, pages::jobs(&jobs, now, &csrf, !st.sessions.read_only(&id)))
}

/// How many of each app's latest deployments the deployments page shows.
const DEPLOYMENTS_SHOWN: usize = 50;

async fn deployments(State(st): State<UiState>, headers: HeaderMap) -> Response {
    let Some((_, csrf)) = session(&st, &headers) else {
        return Redirect::to("/ui/login").into_response();
    };
    let read = async {
        let mut out = Vec::new();
        for app in st.ctl.db().apps().await? {
            let all = st.ctl.db().deployments(&app.name).await?;
            let recent = all.into_iter().rev().take(DEPLOYMENTS_SHOWN).rev().map(wharf_control::wire::deployment);
            out.push((app.name, recent.collect()));
        }
        Ok::<_, wharf_control::StoreError>(out)
    };
    let apps = read.await.map_err(|e| e.to_string());
    page(StatusCode::OK, pages::deployments(&apps, live::now_ms(), &csrf))
}

/// How many of the latest events the events page shows.
const EVENTS_SHOWN: usize = 200;

async fn event_log(State(st): State<UiState>, headers: HeaderMap) -> Response {
    let Some((_, csrf)) = session(&st, &headers) else {
        return Redirect::to("/ui/login").into_response();
    };
    let events = st.ctl.db().events(EVENTS_SHOWN).await;
    let events = events.map(|v| v.into_iter().map(wharf_control::wire::event).collect()).map_err(|e| e.to_string());
    page(StatusCode::OK, pages::events(&events, EVENTS_SHOWN, live::now_ms(), &csrf))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// A good API token starts a session; a bad one gets the form again, with
/// nothing of what was typed in it.
async fn login(
    State(st): State<UiState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let given = form.map(|Form(f)| f.token).unwrap_or_default();
    let given = given.trim();
    let read_only = match () {
        _ if given.is_empty() => None,
        _ if crate::token::matches(&st.token, given) => Some(false),
        _ if crate::token::matches(&st.read_token, given) => Some(true),
        _ => None,
    };
    let Some(read_only) = read_only else {
        return page(StatusCode::UNAUTHORIZED, pages::login(Some("That is not this server's API token.")));
    };
    let (id, _) = st.sessions.create(read_only);
    let cookie = session::set_cookie(Some(&id), session::over_https(&headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui")).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(st): State<UiState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    let id = match checked_post(&st, &headers, csrf.as_deref()) {
        Ok((id, _)) => id,
        Err(why) => return refused(why),
    };
    st.sessions.remove(&id);
    let cookie = session::set_cookie(None, session::over_https(&headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response()
}

/// The overview, live: one `overview` event per period with the page's
/// fragment. Bounded: a client that falls behind is closed, at most
/// [`live::MAX_LIVE_CLIENTS`] at once, and a stream ends with its session.
async fn events(State(st): State<UiState>, headers: HeaderMap) -> Response {
    let Some((id, _)) = session(&st, &headers) else {
        return refused("No session: log in first.");
    };
    let Ok(permit) = st.live.clients.clone().try_acquire_owned() else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message("Busy", "Too many live views are open; the page still works with reloads."),
        );
    };
    let sessions = st.sessions.clone();
    let stream = live_stream(st.live.subscribe(), permit, move || sessions.alive(&id));
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// One client's events from the shared channel, holding `hold` (its place
/// under the cap) until it ends: when `alive` says its session is gone,
/// when it fell behind (it stopped reading; its browser reconnects), or
/// when the server stops.
fn live_stream<H: Send + 'static>(
    rx: broadcast::Receiver<Arc<str>>,
    hold: H,
    alive: impl Fn() -> bool + Send + 'static,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((rx, hold), move |(mut rx, hold)| {
        let go_on = alive();
        async move {
            if !go_on {
                return None;
            }
            match rx.recv().await {
                Ok(html) => Some((Ok(Event::default().event("overview").data(&*html)), (rx, hold))),
                Err(_) => None,
            }
        }
    })
}

async fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, pages::message("Not found", "There is no such page."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_client_that_falls_behind_is_closed_and_never_waited_for() {
        let (tx, rx) = broadcast::channel(live::CLIENT_BUFFER);
        let stream = live_stream(rx, (), || true);
        // The client reads nothing while more than its buffer is sent: no send waits.
        for n in 0..live::CLIENT_BUFFER * 3 {
            tx.send(Arc::from(format!("overview {n}"))).unwrap();
        }
        let mut stream = std::pin::pin!(stream);
        assert!(stream.next().await.is_none(), "closed once it lagged");
    }

    #[tokio::test]
    async fn a_stream_ends_with_its_session() {
        let (tx, rx) = broadcast::channel(live::CLIENT_BUFFER);
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let mut stream = std::pin::pin!(live_stream(rx, (), move || flag.load(Ordering::SeqCst)));
        tx.send(Arc::from("one")).unwrap();
        assert!(stream.next().await.is_some());
        alive.store(false, Ordering::SeqCst);
        tx.send(Arc::from("two")).unwrap();
        assert!(stream.next().await.is_none());
    }
}
