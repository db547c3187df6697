use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};
use wharf_api_types::{
    AppQuery, DeployQuery, DestroyQuery, EventQuery, LogQuery, MaintenanceRequest, MaintenanceState, PauseRequest,
    PauseState, PromoteRequest, RollbackRequest, RunRequest, ScaleRequest, ServiceQuery, StoppedRun,
};
use wharf_control::{wire, Controller, DeployError};
use wharf_logs::{Filter, Record, Source};

use crate::{ErrorBody, ErrorDetail};

/// Largest release archive accepted.
const MAX_UPLOAD: usize = 512 << 20;

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) ctl: Arc<Controller>,
    token: Arc<str>,
    /// Allowed to read (GET) only.
    read_token: Arc<str>,
}

/// The API's routes, all behind the bearer token, and the dashboard's under `/ui`.
pub fn router(ctl: Arc<Controller>, tokens: crate::token::Tokens) -> Router {
    let state = ApiState { ctl, token: tokens.full.into(), read_token: tokens.read.into() };
    let ui = crate::ui::router(state.ctl.clone(), state.token.clone(), state.read_token.clone());
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/certs", get(certs))
        .route("/v1/tasks", get(tasks))
        .route("/v1/top", get(top))
        .route("/v1/deploy", post(deploy))
        .route("/v1/plan", post(plan))
        .route("/v1/logs", get(logs))
        .route("/v1/events", get(events))
        .route("/v1/deployments", get(deployments))
        .route("/v1/maintenance", post(maintenance))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/revisions", get(revisions))
        .route("/v1/rollback", post(rollback))
        .route("/v1/promote", post(promote))
        .route("/v1/apps/{app}", delete(destroy))
        .route("/v1/apps/{app}/secrets", get(crate::secrets::list))
        .route("/v1/apps/{app}/secrets/{name}", put(crate::secrets::set).delete(crate::secrets::remove))
        .route("/v1/scale", post(scale))
        .route("/v1/autoscale", get(autoscale))
        .route("/v1/run", post(run))
        .route("/v1/run/{task}/wait", post(wait_run))
        .route("/v1/run/{task}/stop", post(stop_run))
        .route("/v1/jobs", get(crate::jobs::list))
        .route("/v1/jobs/runs", get(crate::jobs::runs))
        .route("/v1/jobs/trigger", post(crate::jobs::trigger))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
        .merge(ui)
}

pub(crate) fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody { error: ErrorDetail { kind: kind.into(), message: message.into(), diagnostics: vec![] } };
    (status, Json(body)).into_response()
}

async fn auth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if crate::token::matches(&st.token, t.trim()) => next.run(req).await,
        Some(t) if crate::token::matches(&st.read_token, t.trim()) => {
            if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD {
                next.run(req).await
            } else {
                error(
                    StatusCode::FORBIDDEN,
                    "read_only",
                    format!(
                        "the read-only token (file `{}`) only reads: {} {} needs the full token (file `token`)",
                        crate::token::READ_TOKEN_FILE,
                        req.method(),
                        req.uri().path()
                    ),
                )
            }
        }
        Some(_) => error(StatusCode::UNAUTHORIZED, "unauthorized", "wrong API token: use the token in the server's data directory (file `token`)"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing API token: send `Authorization: Bearer TOKEN` (the token is in the server's data directory, file `token`)",
        ),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see the API section of the README")
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

async fn status(State(st): State<ApiState>) -> Response {
    match st.ctl.status().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => internal(e),
    }
}

async fn certs(State(st): State<ApiState>) -> Response {
    Json(st.ctl.certificates()).into_response()
}

async fn tasks(State(st): State<ApiState>) -> Response {
    Json(st.ctl.tasks_view()).into_response()
}

/// Per service: tasks, CPU, memory and the proxy's cumulative counters.
async fn top(State(st): State<ApiState>) -> Response {
    match st.ctl.top().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => internal(e),
    }
}

const NOT_AN_ARCHIVE: &str = "the request body must be a release archive (.tar.gz), as `wharf deploy` sends";

async fn deploy(State(st): State<ApiState>, q: QueryOf<DeployQuery>, body: Bytes) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    if body.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_request", NOT_AN_ARCHIVE);
    }
    match st.ctl.deploy(body.to_vec(), q.env.as_deref()).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => deploy_error(e),
    }
}

/// What a deploy of this archive would change; changes nothing.
async fn plan(State(st): State<ApiState>, q: QueryOf<DeployQuery>, body: Bytes) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    if body.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_request", NOT_AN_ARCHIVE);
    }
    match st.ctl.plan(body.to_vec(), q.env.as_deref()).await {
        Ok(plan) => Json(plan).into_response(),
        Err(e) => deploy_error(e),
    }
}

fn deploy_error(e: DeployError) -> Response {
    match e {
        DeployError::Invalid(e) => {
            let body = ErrorBody {
                error: ErrorDetail {
                    kind: "invalid_spec".into(),
                    message: "wharf.toml is invalid; nothing was changed".into(),
                    diagnostics: e.diagnostics().to_vec(),
                },
            };
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
        DeployError::Release(e @ wharf_control::release::ReleaseError::DiskFull { .. }) => {
            error(StatusCode::INSUFFICIENT_STORAGE, "disk_full", e.to_string())
        }
        DeployError::Release(e @ wharf_control::release::ReleaseError::BadArchive(_)) => {
            error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        DeployError::Release(e) => internal(e),
        DeployError::Control(e) => control_error(e),
    }
}

/// The stream's filter for a query; an unknown source or a bad regex is an
/// error message for a 400.
fn log_filter(q: &LogQuery) -> Result<Filter, String> {
    let mut sources = Vec::new();
    for s in q.source.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()) {
        let source = Source::parse(s);
        sources.push(source.ok_or_else(|| format!("unknown source `{s}`: use stdout, stderr, access, event or job"))?);
    }
    Ok(Filter {
        app: q.app.clone(),
        service: q.service.clone(),
        task: q.task.clone(),
        sources,
        since: q.since.map(|ms| ms.saturating_mul(1_000_000)),
        until: q.until.map(|ms| ms.saturating_mul(1_000_000)),
        grep: q.grep.as_deref().map(wharf_logs::compile_grep).transpose()?,
    })
}

fn ndjson(r: &Record) -> Bytes {
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Records as JSON lines; with `follow=true` the answer stays open and new
/// records are sent as they arrive.
async fn logs(
    State(st): State<ApiState>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let filter = match log_filter(&q) {
        Ok(f) => f,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "bad_request", msg),
    };
    let n = q.n.unwrap_or(100);
    let headers = [(header::CONTENT_TYPE, "application/x-ndjson")];
    // Queries read segment files: off the async workers.
    let logs = st.ctl.logs().clone();
    if !q.follow {
        let f = filter.clone();
        let body =
            tokio::task::spawn_blocking(move || logs.query(&f, n).iter().flat_map(|r| ndjson(r)).collect::<Vec<u8>>())
                .await;
        return match body {
            Ok(body) => (headers, body).into_response(),
            Err(e) => internal(e),
        };
    }
    let f = filter.clone();
    let (backlog, rx) = match tokio::task::spawn_blocking(move || logs.follow(&f, n)).await {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    let backlog = futures_util::stream::iter(backlog.into_iter().map(|r| Ok::<_, std::io::Error>(ndjson(&r))));
    let live = BroadcastStream::new(rx).filter_map(move |item| {
        let out = match item {
            Ok(r) if filter.matches(&r) => Some(Ok(ndjson(&r))),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(k)) => {
                let mut r = Record::event(
                    "logs.skipped",
                    wharf_logs::Level::Warn,
                    format!("{k} records skipped: this reader was too slow"),
                );
                r.seq = 0;
                Some(Ok(ndjson(&r)))
            }
        };
        std::future::ready(out)
    });
    // A keep-alive blank line every 15 s lets the client notice a dead server.
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(15)))
        .map(|_| Ok(Bytes::from_static(b"\n")));
    let body = Body::from_stream(backlog.chain(futures_util::stream::select(live, ticks)));
    (headers, body).into_response()
}

async fn events(State(st): State<ApiState>, Query(q): Query<EventQuery>) -> Response {
    match st.ctl.db().events(q.n.unwrap_or(100)).await {
        Ok(v) => Json(v.into_iter().map(wire::event).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

impl Scoped for AppQuery {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}

async fn deployments(State(st): State<ApiState>, q: QueryOf<AppQuery>) -> Response {
    let (_, app) = match scoped_query(&st, q).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.db().deployments(&app).await {
        Ok(v) => Json(v.into_iter().map(wire::deployment).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

pub(crate) fn control_error(e: wharf_control::ControlError) -> Response {
    use wharf_control::{ControlError, StoreError};
    match e {
        ControlError::NotFound(e) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        ControlError::Invalid(e @ wharf_control::Invalid::SecretInUse { .. }) => {
            error(StatusCode::CONFLICT, "in_use", e.to_string())
        }
        ControlError::Invalid(e) => error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
        ControlError::Busy(e) => error(StatusCode::CONFLICT, "busy", e.to_string()),
        ControlError::Store(e @ StoreError::DiskFull(_)) => {
            error(StatusCode::INSUFFICIENT_STORAGE, "disk_full", e.to_string())
        }
        ControlError::Store(e @ (StoreError::Io(_) | StoreError::Damaged { .. })) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string())
        }
        e => internal(e),
    }
}

pub(crate) type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// A request about an app (or one of its services); no app means the only one deployed.
pub(crate) trait Scoped: serde::de::DeserializeOwned {
    fn app(&self) -> Option<&str>;
}

/// The parsed body and the app it is about, or the error answer.
/// A query string (`?app=...&...`), parsed, with its app resolved.
pub(crate) type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

pub(crate) async fn scoped_query<T: Scoped>(st: &ApiState, q: QueryOf<T>) -> Result<(T, String), Response> {
    let Query(q) = q.map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let app = st.ctl.resolve_app(q.app()).await.map_err(control_error)?;
    Ok((q, app))
}

pub(crate) async fn scoped<T: Scoped>(st: &ApiState, body: JsonBody<T>) -> Result<(T, String), Response> {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, "bad_request", e.body_text())),
    };
    let app = st.ctl.resolve_app(req.app()).await.map_err(control_error)?;
    Ok((req, app))
}

impl Scoped for MaintenanceRequest {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}

async fn maintenance(State(st): State<ApiState>, body: JsonBody<MaintenanceRequest>) -> Response {
    let (req, app) = match scoped(&st, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.set_maintenance(&app, req.service.as_deref(), req.on, req.message, req.page).await {
        Ok(()) => Json(MaintenanceState { app, service: req.service, maintenance: req.on }).into_response(),
        Err(e) => control_error(e),
    }
}

impl Scoped for PauseRequest {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}

async fn pause(State(st): State<ApiState>, body: JsonBody<PauseRequest>) -> Response {
    let (req, app) = match scoped(&st, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let max = Duration::from_secs(req.max_secs.unwrap_or(30).clamp(1, 3600));
    match st.ctl.pause(&app, req.service.as_deref(), max).await {
        Ok(()) => {
            Json(PauseState { app, service: req.service, paused: true, max_secs: Some(max.as_secs()) }).into_response()
        }
        Err(e) => control_error(e),
    }
}

async fn resume(State(st): State<ApiState>, body: JsonBody<PauseRequest>) -> Response {
    let (req, app) = match scoped(&st, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.resume(&app, req.service.as_deref()).await {
        Ok(()) => Json(PauseState { app, service: req.service, paused: false, max_secs: None }).into_response(),
        Err(e) => control_error(e),
    }
}

impl Scoped for ServiceQuery {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}

/// The autoscaler's recent datapoints and decisions for a service.
async fn autoscale(State(st): State<ApiState>, q: QueryOf<ServiceQuery>) -> Response {
    let (q, app) = match scoped_query(&st, q).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.autoscale_view(&app, &q.service).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => control_error(e),
    }
}

async fn revisions(State(st): State<ApiState>, q: QueryOf<ServiceQuery>) -> Response {
    let (q, app) = match scoped_query(&st, q).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.revisions(&app, &q.service).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => control_error(e),
    }
}

impl Scoped for RollbackRequest {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}

impl Scoped for PromoteRequest {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}

impl Scoped for ScaleRequest {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}

async fn scale(State(st): State<ApiState>, body: JsonBody<ScaleRequest>) -> Response {
    let (req, app) = match scoped(&st, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.scale(&app, &req.service, req.replicas, "wharf scale").await {
        Ok(s) => Json(wire::scaled_service(s)).into_response(),
        Err(e) => control_error(e),
    }
}

impl Scoped for RunRequest {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}

/// Starts a one-off task; its output is in the log stream (`task=`).
async fn run(State(st): State<ApiState>, body: JsonBody<RunRequest>) -> Response {
    let (req, app) = match scoped(&st, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.run(&app, &req.service, req.command).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => control_error(e),
    }
}

/// Answers when the one-off task has ended, with its exit status.
async fn wait_run(State(st): State<ApiState>, axum::extract::Path(task): axum::extract::Path<String>) -> Response {
    match st.ctl.wait_run(&task).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => control_error(e),
    }
}

async fn stop_run(State(st): State<ApiState>, axum::extract::Path(task): axum::extract::Path<String>) -> Response {
    match st.ctl.stop_run(&task).await {
        Ok(()) => Json(StoppedRun { stopped: task }).into_response(),
        Err(e) => control_error(e),
    }
}

async fn rollback(State(st): State<ApiState>, body: JsonBody<RollbackRequest>) -> Response {
    let (req, app) = match scoped(&st, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.rollback(&app, &req.service, req.revision).await {
        Ok(d) => Json(wire::deployment(d)).into_response(),
        Err(e) => control_error(e),
    }
}

async fn promote(State(st): State<ApiState>, body: JsonBody<PromoteRequest>) -> Response {
    let (req, app) = match scoped(&st, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.promote(&app, req.service.as_deref()).await {
        Ok(d) => Json(wire::deployment(d)).into_response(),
        Err(e) => control_error(e),
    }
}

/// Removes an app: its tasks (drained), routes, services, jobs, deployments
/// and revisions; its releases too with `purge=true`. 409 while a deployment
/// runs unless `force=true` (which aborts it).
async fn destroy(
    State(st): State<ApiState>,
    axum::extract::Path(app): axum::extract::Path<String>,
    q: Result<Query<DestroyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    match st.ctl.destroy(&app, q.purge, q.force).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => control_error(e),
    }
}

/// Client connections the API serves at once; the CLI needs a few.
pub const MAX_CONNECTIONS: usize = 256;

/// Serves `router` on `listener` until `shutdown`, under the same guards as
/// the proxy: request headers must arrive within `header_timeout` (408), a
/// connection with no request in flight (a silent one included) is closed
/// after as long, a client that stops reading an answer is cut off after
/// `write_stall`, and at most [`MAX_CONNECTIONS`] are open, the
/// longest-idle closed first to let a new client in.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    header_timeout: Duration,
    write_stall: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper::service::Service;
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    let limits = wharf_proxy::ConnLimits { max: MAX_CONNECTIONS, idle: header_timeout, write_stall };
    let conns = wharf_proxy::Conns::new(limits);
    let make = move |_peer| {
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        move |req| {
            let answer = service.call(req);
            async move {
                match answer.await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        }
    };
    if let Err(e) =
        wharf_proxy::serve_guarded(listener, conns, builder, None, make, shutdown, Duration::from_secs(10)).await
    {
        tracing::warn!("API: {e}");
    }
}
