//! A typed client of wharf's HTTP API: one method per endpoint, answering
//! with the types of `wharf-api-types`, failing with a [`ClientError`] that
//! says what to do. Plain hyper: the API is small and local.

#![forbid(unsafe_code)]

mod pack;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use wharf_api_types as api;
use wharf_api_types::ErrorBody;

pub use pack::{pack_dir, PackError, Upload};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the wharf server at {url}: {reason}\n  hint: is it running? Start one with `wharf server` (or `wharf up DIR`), or point at it with --server URL / WHARF_SERVER")]
    Connect { url: String, reason: String },
    #[error("the server refused the API token: {message}\n  hint: pass the server's token with --token / WHARF_TOKEN, or --data DIR for the server's data directory")]
    Unauthorized { message: String },
    /// An error the server explained.
    #[error("{}", .body.error.message)]
    Api { status: StatusCode, body: ErrorBody },
    #[error("unexpected answer from the server ({status}): {text}")]
    Unexpected { status: StatusCode, text: String },
}

impl ClientError {
    /// The wharf.toml diagnostics of an invalid upload (file:line:column).
    pub fn diagnostics(&self) -> &[api::Diagnostic] {
        match self {
            ClientError::Api { body, .. } => &body.error.diagnostics,
            _ => &[],
        }
    }

    /// The server's stable kind of error ("invalid_spec", "not_found", ...).
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.error.kind),
            ClientError::Unauthorized { .. } => Some("unauthorized"),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// A streaming answer of JSON lines (`GET /v1/logs`).
pub struct LogStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

/// One line of the log stream: the record as sent, and parsed.
pub struct LogLine {
    /// The line as the server sent it, without its newline (what
    /// `wharf logs --json` prints).
    pub raw: Vec<u8>,
    /// None for a line that is not a record.
    pub record: Option<wharf_logs::Record>,
}

impl LogStream {
    /// The next line without its newline, keep-alive blank lines included;
    /// None at the end of the answer.
    pub async fn next_raw(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                return Ok(Some(line));
            }
            match self.body.frame().await {
                None => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(std::mem::take(&mut self.buf)));
                }
                Some(Err(e)) => return Err(ClientError::Unexpected { status: StatusCode::OK, text: e.to_string() }),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next record line (keep-alive lines skipped); None at the end.
    pub async fn next(&mut self) -> Result<Option<LogLine>, ClientError> {
        loop {
            let Some(raw) = self.next_raw().await? else { return Ok(None) };
            if raw.is_empty() {
                continue; // keep-alive
            }
            let record = serde_json::from_slice(&raw).ok();
            return Ok(Some(LogLine { raw, record }));
        }
    }
}

/// `k=v&...` of the pairs that are set, values percent-encoded.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b',' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let parts: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v)))).collect();
    parts.join("&")
}

/// A path segment, percent-encoded.
fn segment(s: &str) -> String {
    query(&[("", Some(s.to_string()))]).trim_start_matches('=').to_string()
}

impl ApiClient {
    /// `base` like "http://127.0.0.1:7878".
    pub fn new(base: &str, token: &str) -> ApiClient {
        let http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        ApiClient { base: base.trim_end_matches('/').to_string(), token: token.to_string(), http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /v1/status`: apps, services, their revisions and readiness.
    pub async fn status(&self) -> Result<api::StatusView, ClientError> {
        self.get("/v1/status").await
    }

    /// `GET /v1/tasks`.
    pub async fn tasks(&self) -> Result<Vec<api::TaskView>, ClientError> {
        self.get("/v1/tasks").await
    }

    /// `GET /v1/top`: cumulative counters per service.
    pub async fn top(&self) -> Result<api::TopView, ClientError> {
        self.get("/v1/top").await
    }

    /// `POST /v1/deploy`: uploads a release and starts its rollout.
    pub async fn deploy(&self, upload: Upload) -> Result<api::DeploymentReport, ClientError> {
        self.deploy_env(upload, None).await
    }

    /// `POST /v1/deploy?env=ENV`: as [`ApiClient::deploy`], with the
    /// release's wharf.toml read for the environment `env` (`[env.ENV]`).
    pub async fn deploy_env(&self, upload: Upload, env: Option<&str>) -> Result<api::DeploymentReport, ClientError> {
        self.post_archive(&with_env("/v1/deploy", env), upload.into_bytes()).await
    }

    /// `POST /v1/plan`: what a deploy of the release would change.
    pub async fn plan(&self, upload: Upload) -> Result<api::Plan, ClientError> {
        self.plan_env(upload, None).await
    }

    /// `POST /v1/plan?env=ENV`: what a deploy of the release for `env` would change.
    pub async fn plan_env(&self, upload: Upload, env: Option<&str>) -> Result<api::Plan, ClientError> {
        self.post_archive(&with_env("/v1/plan", env), upload.into_bytes()).await
    }

    /// `GET /v1/logs`: the records matching `q`, streamed (and, with
    /// `q.follow`, kept open for new ones).
    pub async fn logs(&self, q: &api::LogQuery) -> Result<LogStream, ClientError> {
        let path = format!(
            "/v1/logs?{}",
            query(&[
                ("service", q.service.clone()),
                ("app", q.app.clone()),
                ("task", q.task.clone()),
                ("source", q.source.clone()),
                ("since", q.since.map(|v| v.to_string())),
                ("until", q.until.map(|v| v.to_string())),
                ("grep", q.grep.clone()),
                ("n", q.n.map(|v| v.to_string())),
                ("follow", Some(q.follow.to_string())),
            ])
        );
        let resp = self.send(Method::GET, &path, Bytes::new(), "application/json").await?;
        Ok(LogStream { body: resp.into_body(), buf: Vec::new() })
    }

    /// `GET /v1/events`: the newest `n` events.
    pub async fn events(&self, n: usize) -> Result<Vec<api::Event>, ClientError> {
        self.get(&format!("/v1/events?n={n}")).await
    }

    /// `GET /v1/deployments`: an app's deployment history, oldest first.
    pub async fn deployments(&self, q: &api::AppQuery) -> Result<Vec<api::Deployment>, ClientError> {
        self.get(&format!("/v1/deployments?{}", query(&[("app", q.app.clone())]))).await
    }

    /// `GET /v1/certs`.
    pub async fn certs(&self) -> Result<Vec<api::CertView>, ClientError> {
        self.get("/v1/certs").await
    }

    /// `GET /v1/revisions`.
    pub async fn revisions(&self, q: &api::ServiceQuery) -> Result<Vec<api::RevisionView>, ClientError> {
        self.get(&format!("/v1/revisions?{}", service_query(q))).await
    }

    /// `POST /v1/rollback`: starts a deployment back to an earlier revision.
    pub async fn rollback(&self, req: &api::RollbackRequest) -> Result<api::Deployment, ClientError> {
        self.post_json("/v1/rollback", req).await
    }

    /// `POST /v1/promote`.
    pub async fn promote(&self, req: &api::PromoteRequest) -> Result<api::Deployment, ClientError> {
        self.post_json("/v1/promote", req).await
    }

    /// `DELETE /v1/apps/{app}`.
    pub async fn destroy(&self, app: &str, q: &api::DestroyQuery) -> Result<api::DestroyReport, ClientError> {
        self.delete(&format!("/v1/apps/{}?purge={}&force={}", segment(app), q.purge, q.force)).await
    }

    /// `POST /v1/maintenance`.
    pub async fn maintenance(&self, req: &api::MaintenanceRequest) -> Result<api::MaintenanceState, ClientError> {
        self.post_json("/v1/maintenance", req).await
    }

    /// `POST /v1/pause`.
    pub async fn pause(&self, req: &api::PauseRequest) -> Result<api::PauseState, ClientError> {
        self.post_json("/v1/pause", req).await
    }

    /// `POST /v1/resume`.
    pub async fn resume(&self, req: &api::PauseRequest) -> Result<api::PauseState, ClientError> {
        self.post_json("/v1/resume", req).await
    }

    /// `POST /v1/scale`.
    pub async fn scale(&self, req: &api::ScaleRequest) -> Result<api::ScaledService, ClientError> {
        self.post_json("/v1/scale", req).await
    }

    /// `GET /v1/autoscale`.
    pub async fn autoscale(&self, q: &api::ServiceQuery) -> Result<api::AutoscaleView, ClientError> {
        self.get(&format!("/v1/autoscale?{}", service_query(q))).await
    }

    /// `POST /v1/run`: starts a one-off task.
    pub async fn run(&self, req: &api::RunRequest) -> Result<api::RunStarted, ClientError> {
        self.post_json("/v1/run", req).await
    }

    /// `POST /v1/run/{task}/wait`: answers once the one-off task has ended.
    pub async fn wait_run(&self, task: &str) -> Result<api::RunEnded, ClientError> {
        self.post_json(&format!("/v1/run/{}/wait", segment(task)), &serde_json::json!({})).await
    }

    /// `POST /v1/run/{task}/stop`.
    pub async fn stop_run(&self, task: &str) -> Result<api::StoppedRun, ClientError> {
        self.post_json(&format!("/v1/run/{}/stop", segment(task)), &serde_json::json!({})).await
    }

    /// `GET /v1/jobs`.
    pub async fn jobs(&self, q: &api::AppQuery) -> Result<api::JobList, ClientError> {
        self.get(&format!("/v1/jobs?{}", query(&[("app", q.app.clone())]))).await
    }

    /// `GET /v1/jobs/runs`: a job's runs, oldest first.
    pub async fn job_runs(&self, q: &api::JobRunsQuery) -> Result<Vec<api::JobRun>, ClientError> {
        let q = query(&[("app", q.app.clone()), ("job", Some(q.job.clone())), ("n", q.n.map(|n| n.to_string()))]);
        self.get(&format!("/v1/jobs/runs?{q}")).await
    }

    /// `POST /v1/jobs/trigger`: runs a job now.
    pub async fn trigger_job(&self, req: &api::TriggerRequest) -> Result<api::JobRun, ClientError> {
        self.post_json("/v1/jobs/trigger", req).await
    }

    /// `PUT /v1/apps/{app}/secrets/{name}`: the value goes in the body only.
    pub async fn set_secret(&self, app: &str, name: &str, value: String) -> Result<api::SecretSet, ClientError> {
        let body = Bytes::from(serde_json::to_vec(&api::SecretSetRequest { value }).unwrap_or_default());
        let path = format!("/v1/apps/{}/secrets/{}", segment(app), segment(name));
        Self::json(self.send(Method::PUT, &path, body, "application/json").await?).await
    }

    /// `GET /v1/apps/{app}/secrets`: names, times and users, never values.
    pub async fn secrets(&self, app: &str) -> Result<Vec<api::SecretView>, ClientError> {
        self.get(&format!("/v1/apps/{}/secrets", segment(app))).await
    }

    /// `DELETE /v1/apps/{app}/secrets/{name}`.
    pub async fn remove_secret(&self, app: &str, name: &str, force: bool) -> Result<api::SecretRemoved, ClientError> {
        self.delete(&format!("/v1/apps/{}/secrets/{}?force={force}", segment(app), segment(name))).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let url = format!("{}{path}", self.base);
        let req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| ClientError::Connect { url: url.clone(), reason: e.to_string() })?;
        let resp = self.http.request(req).await.map_err(|e| {
            let mut reason = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                reason = format!("{reason}: {s}");
                src = s.source();
            }
            ClientError::Connect { url: self.base.clone(), reason }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) if status == StatusCode::UNAUTHORIZED => {
                Err(ClientError::Unauthorized { message: body.error.message })
            }
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(_) => Err(ClientError::Unexpected { status, text: String::from_utf8_lossy(&bytes).into_owned() }),
        }
    }

    async fn json<T: DeserializeOwned>(resp: hyper::Response<hyper::body::Incoming>) -> Result<T, ClientError> {
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Unexpected { status, text: e.to_string() })?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Unexpected { status, text: format!("{e}: {}", String::from_utf8_lossy(&bytes)) })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(Method::GET, path, Bytes::new(), "application/json").await?).await
    }

    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(Method::DELETE, path, Bytes::new(), "application/json").await?).await
    }

    async fn post_archive<T: DeserializeOwned>(&self, path: &str, archive: Vec<u8>) -> Result<T, ClientError> {
        Self::json(self.send(Method::POST, path, Bytes::from(archive), "application/gzip").await?).await
    }

    async fn post_json<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        Self::json(self.send(Method::POST, path, bytes, "application/json").await?).await
    }
}

/// `path?env=ENV`, or `path` alone without an environment.
fn with_env(path: &str, env: Option<&str>) -> String {
    match env {
        Some(env) => format!("{path}?{}", query(&[("env", Some(env.to_string()))])),
        None => path.to_string(),
    }
}

fn service_query(q: &api::ServiceQuery) -> String {
    query(&[("app", q.app.clone()), ("service", Some(q.service.clone()))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_encode_values_and_skip_unset_ones() {
        let q = query(&[("app", Some("a b&c".into())), ("service", None), ("grep", Some("x|y,z".into()))]);
        assert_eq!(q, "app=a%20b%26c&grep=x%7Cy,z");
        assert_eq!(segment("my/app"), "my%2Fapp");
    }
}
