use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Size of the chunks `/bytes` is streamed in.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;

static FILLER: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];

/// The response body of every endpoint: no boxing, so the hot path stays cheap.
#[derive(Debug)]
pub enum DemoBody {
    /// A whole body in memory (`None` once sent, or when empty).
    Full(Option<Bytes>),
    /// The request body, streamed back frame by frame as it arrives.
    Echo(Incoming),
    /// `remaining` bytes of `x`, in chunks of at most 64 KiB.
    Filler { remaining: u64 },
}

impl DemoBody {
    pub fn empty() -> Self {
        DemoBody::Full(None)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        DemoBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            DemoBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            DemoBody::Echo(incoming) => Pin::new(incoming).poll_frame(cx),
            DemoBody::Filler { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(CHUNK_SIZE as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DemoBody::Full(bytes) => bytes.is_none(),
            DemoBody::Echo(incoming) => incoming.is_end_stream(),
            DemoBody::Filler { remaining } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DemoBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            DemoBody::Echo(incoming) => incoming.size_hint(),
            DemoBody::Filler { remaining } => SizeHint::with_exact(*remaining),
        }
    }
}
