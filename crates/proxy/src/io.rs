//! The client socket, watched: whether part of a request has arrived since
//! the last response went out, and whether writes to it are stuck. When hyper's header timeout closes such a
//! connection, the client is owed a 408, not a silent close.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::os::fd::AsFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use tokio::net::TcpStream;

use crate::conns::{ConnState, Slot};

pub(crate) struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
    _slot: Slot,
}

/// What is left to answer a timed-out client with: a second handle on the
/// same socket.
pub(crate) struct Late {
    socket: std::net::TcpStream,
    state: Arc<ConnState>,
}

/// Wraps an accepted stream. Late is None if the socket can't be
/// duplicated; the connection is then served without the 408.
pub(crate) fn watch(stream: TcpStream, state: Arc<ConnState>, slot: Slot) -> (Watched, Option<Late>) {
    let late = stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(|fd| Late { socket: std::net::TcpStream::from(fd), state: state.clone() });
    (Watched { inner: stream, state, _slot: slot }, late)
}

/// How long the 408 of a timed-out connection may take to go out.
const LATE_WRITE: std::time::Duration = std::time::Duration::from_secs(1);

impl Late {
    /// Sends 408 if the client had started a request; closes either way.
    pub async fn request_timeout(self) {
        if !self.state.partial.load(Ordering::Relaxed) {
            return;
        }
        if self.socket.set_nonblocking(true).is_err() {
            return;
        }
        if let Ok(mut s) = TcpStream::from_std(self.socket) {
            let body = "<!doctype html><html><body><h1>408 Request Timeout</h1><p>The request headers did not arrive in time.</p></body></html>\n";
            let resp = format!(
                "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            // A client that does not read gets no more of our time.
            let send = async {
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            };
            let _ = tokio::time::timeout(LATE_WRITE, send).await;
        }
    }
}

impl Watched {
    /// A response byte went out (the request before it is over), or the
    /// client is not taking any.
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.state.partial.store(false, Ordering::Relaxed);
                self.state.write_done();
            }
            Poll::Pending => self.state.write_pending(),
            _ => {}
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.partial.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if r.is_pending() {
            self.state.write_pending();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether a connection ended because the client was too slow with headers.
pub(crate) fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_timeout())
}
