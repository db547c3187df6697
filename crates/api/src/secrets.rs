//! An app's secrets: set one (its value only ever in this request's body),
//! list them and remove one. No answer holds a value.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use wharf_api_types::{SecretRemoveQuery, SecretSetRequest};

use crate::server::{control_error, error, ApiState, JsonBody};

/// `PUT /v1/apps/{app}/secrets/{name}` with `{"value": "..."}`.
pub(crate) async fn set(
    State(st): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
    body: JsonBody<SecretSetRequest>,
) -> Response {
    // The parser's message could quote the body: say what is expected instead.
    let Ok(Json(req)) = body else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "the body must be JSON: {\"value\": \"...\"}");
    };
    match st.ctl.set_secret(&app, &name, &req.value).await {
        Ok(set) => Json(set).into_response(),
        Err(e) => control_error(e),
    }
}

/// `GET /v1/apps/{app}/secrets`: names, times and users.
pub(crate) async fn list(State(st): State<ApiState>, Path(app): Path<String>) -> Response {
    match st.ctl.secrets(&app).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => control_error(e),
    }
}

/// `DELETE /v1/apps/{app}/secrets/{name}[?force=true]`: 400 while deployed
/// services use it, unless forced.
pub(crate) async fn remove(
    State(st): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
    q: Result<Query<SecretRemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let force = q.map(|Query(q)| q.force).unwrap_or(false);
    match st.ctl.remove_secret(&app, &name, force).await {
        Ok(removed) => Json(removed).into_response(),
        Err(e) => control_error(e),
    }
}
