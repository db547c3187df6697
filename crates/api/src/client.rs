//! The API client the CLI uses. Plain hyper: the API is small and local.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::ErrorBody;

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

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// A streaming answer, read line by line.
pub struct Lines {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Lines {
    /// The next line without its newline; None at the end of the answer.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
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

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(Method::GET, path, Bytes::new(), "application/json").await?).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(Method::DELETE, path, Bytes::new(), "application/json").await?).await
    }

    pub async fn post_archive<T: DeserializeOwned>(&self, path: &str, archive: Vec<u8>) -> Result<T, ClientError> {
        Self::json(self.send(Method::POST, path, Bytes::from(archive), "application/gzip").await?).await
    }

    pub async fn post_json<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, ClientError> {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        Self::json(self.send(Method::POST, path, bytes, "application/json").await?).await
    }

    pub async fn lines(&self, path: &str) -> Result<Lines, ClientError> {
        let resp = self.send(Method::GET, path, Bytes::new(), "application/json").await?;
        Ok(Lines { body: resp.into_body(), buf: Vec::new() })
    }
}
