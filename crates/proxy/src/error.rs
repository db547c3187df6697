//! One error type for every request the proxy ends with an answer of its
//! own. Each error says whether the request may be sent again, so the retry
//! loop reads a flag instead of re-deriving it from where it failed.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::routing::Maintenance;

/// Whether a failed attempt may be tried again, on another task if there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Nothing reached the task (no connection, or it closed before the
    /// request left): sending it elsewhere cannot do anything twice.
    Safe,
    /// The request went out and no byte of an answer came back: it may be
    /// sent again only when it can be replayed (idempotent and bodyless).
    IfReplayable,
    /// The task may have acted on it, or the fault is the client's.
    Never,
}

/// What went wrong. The text is the detail line of the error page.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ErrorKind {
    #[error("{0}")]
    BadHost(&'static str),
    #[error("No route matches host `{host}` and path `{path}`.")]
    NoRoute { host: String, path: String },
    #[error("`{0}` is paused; try again shortly.")]
    Paused(Arc<str>),
    /// Answered with the service's own maintenance page.
    #[error("`{0}` is in maintenance.")]
    Maintenance(Arc<str>, Maintenance),
    #[error("The request body is larger than {0} bytes.")]
    TooLarge(u64),
    #[error("The request body did not arrive within {secs}s.", secs = .0.as_secs_f64())]
    BodyTimeout(Duration),
    #[error("The request body is malformed: {0}.")]
    BadBody(String),
    #[error("`{0}` has no healthy tasks right now.")]
    NoTask(Arc<str>),
    #[error("`{0}` did not accept the connection.")]
    Connect(Arc<str>),
    /// The pooled connection closed before the request left; never shown.
    #[error("`{0}` closed the connection before the request went out.")]
    Unsent(Arc<str>),
    #[error("`{0}` closed the connection without answering.")]
    Reset(Arc<str>),
    #[error("`{0}` did not answer within {secs}s.", secs = .1.as_secs_f64())]
    Timeout(Arc<str>, Duration),
    #[error("`{0}` switched protocols on a request that did not ask to.")]
    UnaskedUpgrade(Arc<str>),
    /// Plain HTTP on a route that redirects: the https URL.
    #[error("This site moved to {0}.")]
    ToHttps(String),
    #[error("This site is served over HTTPS only: use {0}.")]
    HttpsOnly(String),
}

/// A request that ends in an answer of the proxy's own.
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub(crate) struct RequestError {
    pub kind: ErrorKind,
    pub retry: Retry,
}

impl RequestError {
    pub fn new(kind: ErrorKind, retry: Retry) -> RequestError {
        RequestError { kind, retry }
    }

    /// An error no retry can mend.
    pub fn never(kind: ErrorKind) -> RequestError {
        RequestError { kind, retry: Retry::Never }
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadHost(_) | ErrorKind::BadBody(_) => StatusCode::BAD_REQUEST,
            ErrorKind::NoRoute { .. } => StatusCode::NOT_FOUND,
            ErrorKind::Paused(_) | ErrorKind::Maintenance(..) | ErrorKind::NoTask(_) => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Connect(_) | ErrorKind::Unsent(_) | ErrorKind::Reset(_) | ErrorKind::UnaskedUpgrade(_) => {
                StatusCode::BAD_GATEWAY
            }
            ErrorKind::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::ToHttps(_) => StatusCode::PERMANENT_REDIRECT,
            ErrorKind::HttpsOnly(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The page's title, after the status code.
    pub fn title(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadHost(_) | ErrorKind::BadBody(_) => "Bad request",
            ErrorKind::NoRoute { .. } => "No route",
            ErrorKind::Paused(_) => "Paused",
            ErrorKind::Maintenance(..) | ErrorKind::NoTask(_) => "Service unavailable",
            ErrorKind::TooLarge(_) => "Payload too large",
            ErrorKind::BodyTimeout(_) => "Request timeout",
            ErrorKind::Connect(_) | ErrorKind::Unsent(_) | ErrorKind::Reset(_) | ErrorKind::UnaskedUpgrade(_) => {
                "Bad gateway"
            }
            ErrorKind::Timeout(..) => "Gateway timeout",
            ErrorKind::ToHttps(_) => "Permanent redirect",
            ErrorKind::HttpsOnly(_) => "HTTPS only",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_keep_their_status_title_and_detail() {
        let e = RequestError::never(ErrorKind::Timeout("a/web".into(), Duration::from_millis(1500)));
        assert_eq!((e.status(), e.title()), (StatusCode::GATEWAY_TIMEOUT, "Gateway timeout"));
        assert_eq!(e.to_string(), "`a/web` did not answer within 1.5s.");
        let e = RequestError::never(ErrorKind::NoRoute { host: "a.test".into(), path: "/x".into() });
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.to_string(), "No route matches host `a.test` and path `/x`.");
        let e = RequestError::new(ErrorKind::Connect("a/web".into()), Retry::Safe);
        assert_eq!((e.status(), e.title(), e.retry), (StatusCode::BAD_GATEWAY, "Bad gateway", Retry::Safe));
    }
}
