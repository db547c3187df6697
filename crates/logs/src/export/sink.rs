//! Where exported records go: a file (appended) or an HTTP endpoint (one
//! POST of newline-delimited JSON per batch).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::ExportError;

/// Why one shipment failed.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `0`: the whole cause chain of the client's error, in one line.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The request could not even be built (a header the URL check let by).
    #[error("cannot connect: {0}")]
    Request(#[from] http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {status}: {body}")]
    Status { status: u16, body: String },
}

impl ShipError {
    /// Worth sending the same batch again: everything but a 4xx answer that
    /// says the batch itself is refused (408 and 429 are worth a retry).
    pub fn retryable(&self) -> bool {
        match self {
            ShipError::Status { status, .. } => !(400..500).contains(status) || matches!(status, 408 | 429),
            _ => true,
        }
    }
}

pub(crate) enum Sink {
    File(FileSink),
    Http(Box<HttpSink>),
}

impl Sink {
    pub async fn ship(&mut self, body: Bytes) -> Result<(), ShipError> {
        match self {
            Sink::File(f) => f.ship(body).await,
            Sink::Http(h) => h.ship(body).await,
        }
    }
}

/// Appends to a file; reopens it after a failed write and when it was moved
/// or removed (log rotation), so rotation tools work without a signal.
pub(crate) struct FileSink {
    path: PathBuf,
    file: Option<File>,
    checked: Instant,
}

/// How often the file is checked for having been rotated away.
const ROTATION_CHECK: Duration = Duration::from_secs(1);

/// Opens for appending; a new file gets mode 0600 (logs may hold secrets).
fn open_append(path: &PathBuf) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl FileSink {
    pub fn open(path: PathBuf) -> Result<FileSink, ExportError> {
        let file = open_append(&path).map_err(|source| ExportError::File { path: path.clone(), source })?;
        Ok(FileSink { path, file: Some(file), checked: Instant::now() })
    }

    async fn ship(&mut self, body: Bytes) -> Result<(), ShipError> {
        let file = self.file.take();
        let path = self.path.clone();
        let check = self.checked.elapsed() >= ROTATION_CHECK;
        if check {
            self.checked = Instant::now();
        }
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            let mut file = match file {
                Some(f) if !check || !rotated(&f, &path) => f,
                _ => open_append(&path)?,
            };
            file.write_all(&body)?;
            file.flush()?;
            Ok(file)
        })
        .await
        .map_err(|e| ShipError::Io(std::io::Error::other(e)))?;
        // On failure the file stays closed, so the next attempt reopens it.
        self.file = Some(res?);
        Ok(())
    }
}

/// Whether `path` no longer names the open file.
fn rotated(file: &File, path: &PathBuf) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev() || a.ino() != b.ino(),
        _ => true,
    }
}

pub(crate) struct HttpSink {
    uri: Uri,
    headers: HeaderMap,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Parses and checks an export URL: plain `http://` (a local collector such
/// as Vector; TLS is for it to do).
pub(crate) fn parse_url(url: &str) -> Result<Uri, ExportError> {
    let bad = |reason: &str| ExportError::InvalidUrl { url: url.to_string(), reason: reason.to_string() };
    let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad("https is not supported yet; ship to a local collector (e.g. Vector) over http"))
        }
        _ => return Err(bad("expected http://HOST[:PORT]/PATH")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(uri)
}

/// Parses `Name: value` header arguments.
pub(crate) fn parse_headers(raw: &[String]) -> Result<HeaderMap, ExportError> {
    let mut map = HeaderMap::new();
    for h in raw {
        let bad = |reason: &str| ExportError::InvalidHeader { header: h.clone(), reason: reason.to_string() };
        let (name, value) = h.split_once(':').ok_or_else(|| bad("expected `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| bad(&e.to_string()))?;
        let value = HeaderValue::from_str(value.trim()).map_err(|e| bad(&e.to_string()))?;
        map.append(name, value);
    }
    Ok(map)
}

impl HttpSink {
    pub fn new(uri: Uri, headers: HeaderMap) -> HttpSink {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        HttpSink { uri, headers, client }
    }

    async fn ship(&mut self, body: Bytes) -> Result<(), ShipError> {
        let mut req = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header(header::USER_AGENT, concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))?;
        req.headers_mut().extend(self.headers.clone());
        let resp = self.client.request(req).await.map_err(|e| ShipError::Connect(error_chain(&e)))?;
        let status = resp.status();
        // Read the answer to the end so the connection can be reused.
        let text = match resp.into_body().collect().await {
            Ok(b) => {
                let b = b.to_bytes();
                String::from_utf8_lossy(&b[..b.len().min(512)]).trim().to_string()
            }
            Err(e) => e.to_string(),
        };
        if status.is_success() {
            return Ok(());
        }
        Err(ShipError::Status { status: status.as_u16(), body: text })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_of_the_batch_itself_are_final() {
        let st = |status| ShipError::Status { status, body: String::new() };
        assert!(st(500).retryable());
        assert!(st(503).retryable());
        assert!(st(429).retryable());
        assert!(st(408).retryable());
        assert!(!st(400).retryable());
        assert!(!st(413).retryable());
        assert!(ShipError::Connect("refused".into()).retryable());
        let bad_header = http::Request::post("http://h/").header("a b", "x").body(()).unwrap_err();
        let e = ShipError::from(bad_header);
        assert!(e.retryable());
        assert!(e.to_string().starts_with("cannot connect: "), "{e}");
    }

    #[test]
    fn urls_and_headers_are_checked() {
        assert!(parse_url("http://127.0.0.1:9000/logs").is_ok());
        assert!(parse_url("https://example.com/").is_err());
        assert!(parse_url("127.0.0.1:9000").is_err());
        let h = parse_headers(&["Authorization: Bearer x".into()]).unwrap();
        assert_eq!(h["authorization"], "Bearer x");
        assert!(parse_headers(&["no colon".into()]).is_err());
    }

    #[tokio::test]
    async fn a_file_moved_away_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = FileSink::open(path.clone()).unwrap();
        sink.ship(Bytes::from_static(b"one\n")).await.unwrap();
        std::fs::rename(&path, dir.path().join("out.jsonl.1")).unwrap();
        sink.checked = Instant::now() - ROTATION_CHECK;
        sink.ship(Bytes::from_static(b"two\n")).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("out.jsonl.1")).unwrap(), "one\n");
    }
}
