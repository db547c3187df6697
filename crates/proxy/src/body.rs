//! The request body sent upstream: the client's streamed body, possibly under
//! a size limit, or nothing (replayed requests and bodyless ones).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Limited;
use hyper::body::{Body, Frame, Incoming, SizeHint};

pub enum ReqBody {
    Stream(Limited<Incoming>),
    Empty,
}

/// Errors while streaming a request body; `TooLarge` becomes a 413.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than the limit")]
    TooLarge,
    #[error(transparent)]
    Client(Box<dyn std::error::Error + Send + Sync>),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Stream(b) => Pin::new(b).poll_frame(cx).map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    BodyError::TooLarge
                } else {
                    BodyError::Client(e)
                }
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Stream(b) => b.size_hint(),
        }
    }
}
