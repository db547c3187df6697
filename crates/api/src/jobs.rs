//! Scheduled jobs: list them, read a job's runs, trigger a run now.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use wharf_api_types::{AppQuery, JobList, JobRunsQuery, TriggerRequest};
use wharf_control::wire;

use crate::server::{control_error, scoped, scoped_query, ApiState, JsonBody, QueryOf, Scoped};

/// `{ "now": ms, "jobs": [JobView] }`; `now` is the scheduler's clock, which
/// `next_run` and run times are on.
pub(crate) async fn list(State(st): State<ApiState>, q: QueryOf<AppQuery>) -> Response {
    let (_, app) = match scoped_query(&st, q).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.jobs_view(&app).await {
        Ok(jobs) => Json(JobList { app, now: st.ctl.scheduler_now_ms(), jobs }).into_response(),
        Err(e) => control_error(e),
    }
}

/// The job's runs, oldest first.
pub(crate) async fn runs(State(st): State<ApiState>, q: QueryOf<JobRunsQuery>) -> Response {
    let (q, app) = match scoped_query(&st, q).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.job_runs(&app, &q.job).await {
        Ok(mut runs) => {
            if let Some(n) = q.n {
                let skip = runs.len().saturating_sub(n);
                runs.drain(..skip);
            }
            Json(runs.into_iter().map(wire::job_run).collect::<Vec<_>>()).into_response()
        }
        Err(e) => control_error(e),
    }
}

/// Starts a run now; 409 when the job's concurrency policy ("forbid")
/// skips it because the previous run still runs (the skip is recorded).
pub(crate) async fn trigger(State(st): State<ApiState>, body: JsonBody<TriggerRequest>) -> Response {
    let (req, app) = match scoped(&st, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match st.ctl.trigger_job(&app, &req.job).await {
        Ok(run) => Json(wire::job_run(run)).into_response(),
        Err(e) => control_error(e),
    }
}

impl Scoped for JobRunsQuery {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}

impl Scoped for TriggerRequest {
    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }
}
