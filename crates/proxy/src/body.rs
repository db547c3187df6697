//! The request body sent upstream: the client's streamed body, possibly under
//! a size limit and always under a deadline, or nothing (replayed requests
//! and bodyless ones).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Limited;
use hyper::body::{Body, Frame, Incoming, SizeHint};

pub enum ReqBody {
    Stream(ClientBody),
    Empty,
}

/// The client's body: its size is limited and it must arrive in full by a
/// deadline, so a client sending a byte a second cannot hold a connection
/// (and a task's request) for as long as it likes.
pub struct ClientBody {
    inner: Limited<Incoming>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Set once the whole body has been read: after that a slow answer is
    /// the task's, not the client's.
    done: Arc<AtomicBool>,
}

impl ClientBody {
    pub fn new(body: Incoming, max: u64, deadline: Instant) -> (ClientBody, Arc<AtomicBool>) {
        let done = Arc::new(AtomicBool::new(false));
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        let body = ClientBody {
            inner: Limited::new(body, limit),
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            done: done.clone(),
        };
        (body, done)
    }
}

/// Errors while streaming a request body; all of them are the client's.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Becomes a 413.
    #[error("request body larger than the limit")]
    TooLarge,
    /// Becomes a 408.
    #[error("request body did not arrive in time")]
    Timeout,
    /// A malformed body (bad chunk size, oversized chunk extension, ...) or
    /// a client that went away mid-body: a 400.
    #[error(transparent)]
    Client(Box<dyn std::error::Error + Send + Sync>),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Stream(b) => {
                let polled = Pin::new(&mut b.inner).poll_frame(cx).map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        BodyError::TooLarge
                    } else {
                        BodyError::Client(e)
                    }
                });
                match &polled {
                    Poll::Ready(None) => b.done.store(true, Ordering::Relaxed),
                    Poll::Ready(Some(Ok(_))) if b.inner.is_end_stream() => b.done.store(true, Ordering::Relaxed),
                    Poll::Pending if b.deadline.as_mut().poll(cx).is_ready() => {
                        return Poll::Ready(Some(Err(BodyError::Timeout)));
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Stream(b) => b.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Stream(b) => b.inner.size_hint(),
        }
    }
}
