//! The dashboard's actions. Each is a link to a page that says what will
//! happen and a form that does it only with `confirm=yes`, the session and
//! its CSRF token; they call the same `Controller` operations as the API's
//! endpoints.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use wharf_control::ControlError;

use super::{checked_action, page, pages, refused, session, UiState, READ_ONLY};

/// What an action is about: an app's service (for maintenance, none: the whole app).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Target {
    pub(crate) app: String,
    pub(crate) service: String,
}

/// An action's form. Every field may be missing, so a form without its CSRF
/// token is refused as such rather than as malformed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ActionForm {
    csrf: Option<String>,
    app: String,
    service: String,
    replicas: Option<String>,
    on: Option<String>,
    job: String,
    revision: Option<String>,
    confirm: Option<String>,
}

type FormOf<T> = Result<Form<T>, axum::extract::rejection::FormRejection>;

/// The form's fields and the session's CSRF token (for the confirmation
/// page's form), once the session and the form's token are checked.
/// Otherwise why it is refused.
fn checked(st: &UiState, headers: &HeaderMap, form: FormOf<ActionForm>) -> Result<(ActionForm, String), &'static str> {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let (_, csrf) = checked_action(st, headers, form.csrf.as_deref())?;
    Ok((form, csrf))
}

/// The CSRF token of a session that may act, for an action's confirmation
/// page; otherwise the login page, or the refusal of a read-only session.
fn acting_session(st: &UiState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let Some((id, csrf)) = session(st, headers) else {
        return Err(Box::new(Redirect::to("/ui/login").into_response()));
    };
    if st.sessions.read_only(&id) {
        return Err(Box::new(refused(READ_ONLY)));
    }
    Ok(csrf)
}

/// The service's desired tasks now, from the status view.
async fn replicas(st: &UiState, app: &str, service: &str) -> Result<u32, Response> {
    let status = st.ctl.status().await.map_err(failed)?;
    status
        .apps
        .iter()
        .filter(|a| a.name == app)
        .flat_map(|a| &a.services)
        .find(|s| s.name == service)
        .map(|s| s.replicas)
        .ok_or_else(|| page(StatusCode::NOT_FOUND, pages::message("Not found", "There is no such service.")))
}

/// `GET /ui/scale?app=&service=`: the form that asks how many.
pub(crate) async fn scale_page(State(st): State<UiState>, headers: HeaderMap, Query(t): Query<Target>) -> Response {
    let csrf = match acting_session(&st, &headers) {
        Ok(csrf) => csrf,
        Err(resp) => return *resp,
    };
    match replicas(&st, &t.app, &t.service).await {
        Ok(now) => page(StatusCode::OK, pages::scale(&t, now, None, &csrf)),
        Err(resp) => resp,
    }
}

/// `POST /ui/scale`: without `confirm=yes`, the page that says what will
/// change; with it, the scale.
pub(crate) async fn scale(State(st): State<UiState>, headers: HeaderMap, form: FormOf<ActionForm>) -> Response {
    let (f, csrf) = match checked(&st, &headers, form) {
        Ok(x) => x,
        Err(why) => return refused(why),
    };
    let Some(n) = f.replicas.as_deref().and_then(|r| r.trim().parse::<u32>().ok()) else {
        return page(StatusCode::BAD_REQUEST, pages::message("Not scaled", "Replicas must be a whole number."));
    };
    let t = Target { app: f.app, service: f.service };
    if f.confirm.as_deref() != Some("yes") {
        return match replicas(&st, &t.app, &t.service).await {
            Ok(now) => page(StatusCode::OK, pages::scale(&t, now, Some(n), &csrf)),
            Err(resp) => resp,
        };
    }
    match st.ctl.scale(&t.app, &t.service, n, "the dashboard").await {
        Ok(_) => Redirect::to("/ui").into_response(),
        Err(e) => failed(e),
    }
}

/// `GET /ui/maintenance?app=&service=&on=`: what turning it on or off does.
pub(crate) async fn maintenance_page(
    State(st): State<UiState>,
    headers: HeaderMap,
    Query(q): Query<ActionForm>,
) -> Response {
    let csrf = match acting_session(&st, &headers) {
        Ok(csrf) => csrf,
        Err(resp) => return *resp,
    };
    let on = q.on.as_deref() == Some("true");
    page(StatusCode::OK, pages::maintenance(&Target { app: q.app, service: q.service }, on, &csrf))
}

/// `POST /ui/maintenance`: with `confirm=yes`, turns it on or off.
pub(crate) async fn maintenance(State(st): State<UiState>, headers: HeaderMap, form: FormOf<ActionForm>) -> Response {
    let (f, csrf) = match checked(&st, &headers, form) {
        Ok(x) => x,
        Err(why) => return refused(why),
    };
    let on = f.on.as_deref() == Some("true");
    let t = Target { app: f.app, service: f.service };
    if f.confirm.as_deref() != Some("yes") {
        return page(StatusCode::OK, pages::maintenance(&t, on, &csrf));
    }
    let service = Some(t.service.as_str()).filter(|s| !s.is_empty());
    match st.ctl.set_maintenance(&t.app, service, on, None, None).await {
        Ok(()) => Redirect::to("/ui").into_response(),
        Err(e) => failed(e),
    }
}

/// `GET /ui/service?app=&service=`: the service's tasks and revisions.
pub(crate) async fn service_page(State(st): State<UiState>, headers: HeaderMap, Query(t): Query<Target>) -> Response {
    let Some((id, csrf)) = session(&st, &headers) else {
        return Redirect::to("/ui/login").into_response();
    };
    let revisions = match st.ctl.revisions(&t.app, &t.service).await {
        Err(ControlError::NotFound(_)) => {
            return page(StatusCode::NOT_FOUND, pages::message("Not found", "There is no such service."))
        }
        other => other.map_err(|e| e.to_string()),
    };
    let tasks: Vec<_> =
        st.ctl.tasks_view().into_iter().filter(|task| task.app == t.app && task.service == t.service).collect();
    let actions = !st.sessions.read_only(&id);
    page(StatusCode::OK, pages::service(&t, &tasks, &revisions, super::live::now_ms(), &csrf, actions))
}

/// `GET /ui/rollback?app=&service=&revision=`: what rolling back does.
pub(crate) async fn rollback_page(
    State(st): State<UiState>,
    headers: HeaderMap,
    Query(q): Query<ActionForm>,
) -> Response {
    let csrf = match acting_session(&st, &headers) {
        Ok(csrf) => csrf,
        Err(resp) => return *resp,
    };
    let Some(revision) = q.revision.as_deref().and_then(|r| r.trim().parse::<u64>().ok()) else {
        return page(StatusCode::BAD_REQUEST, pages::message("Not rolled back", "The revision must be a number."));
    };
    page(StatusCode::OK, pages::rollback(&Target { app: q.app, service: q.service }, revision, &csrf))
}

/// `POST /ui/rollback`: with `confirm=yes`, a rollback to the revision (as
/// `wharf rollback SERVICE REVISION` starts it); then the deployments page.
pub(crate) async fn rollback(State(st): State<UiState>, headers: HeaderMap, form: FormOf<ActionForm>) -> Response {
    let (f, csrf) = match checked(&st, &headers, form) {
        Ok(x) => x,
        Err(why) => return refused(why),
    };
    let Some(revision) = f.revision.as_deref().and_then(|r| r.trim().parse::<u64>().ok()) else {
        return page(StatusCode::BAD_REQUEST, pages::message("Not rolled back", "The revision must be a number."));
    };
    let t = Target { app: f.app, service: f.service };
    if f.confirm.as_deref() != Some("yes") {
        return page(StatusCode::OK, pages::rollback(&t, revision, &csrf));
    }
    match st.ctl.rollback(&t.app, &t.service, Some(revision)).await {
        Ok(_) => Redirect::to("/ui/deployments").into_response(),
        Err(e) => failed(e),
    }
}

/// `GET /ui/run-job?app=&job=`: what running the job now does.
pub(crate) async fn run_job_page(
    State(st): State<UiState>,
    headers: HeaderMap,
    Query(q): Query<ActionForm>,
) -> Response {
    let csrf = match acting_session(&st, &headers) {
        Ok(csrf) => csrf,
        Err(resp) => return *resp,
    };
    page(StatusCode::OK, pages::run_job(&q.app, &q.job, &csrf))
}

/// `POST /ui/run-job`: with `confirm=yes`, a run of the job now (as `wharf
/// jobs trigger` and `POST /v1/jobs/trigger` start it).
pub(crate) async fn run_job(State(st): State<UiState>, headers: HeaderMap, form: FormOf<ActionForm>) -> Response {
    let (f, csrf) = match checked(&st, &headers, form) {
        Ok(x) => x,
        Err(why) => return refused(why),
    };
    if f.confirm.as_deref() != Some("yes") {
        return page(StatusCode::OK, pages::run_job(&f.app, &f.job, &csrf));
    }
    match st.ctl.trigger_job(&f.app, &f.job).await {
        Ok(_) => Redirect::to("/ui/jobs").into_response(),
        Err(e) => failed(e),
    }
}

/// A refused or failed operation, with the status the API gives it.
fn failed(e: ControlError) -> Response {
    let status = match &e {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        ControlError::Busy(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    page(status, pages::message("Not done", &e.to_string()))
}
