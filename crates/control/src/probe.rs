//! One web task's HTTP health checks: a `GET` over a connection the check
//! loop keeps open and drives itself. With 1,000 tasks checked every 5 s a
//! general HTTP client's pool and its connection tasks (a hop between tasks,
//! a lock and a lookup per check) were most of an idle server's CPU; this is
//! one write and one read per check. A response the connection can't be
//! reused after (no length, chunked, `Connection: close`, too long a body)
//! is still a verdict: the connection is just not kept.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head read; a longer one fails the check.
const MAX_HEAD: usize = 16 * 1024;
/// The largest body read so that the connection can be kept; a longer one
/// is left unread and the connection closed.
const MAX_KEPT_BODY: u64 = 64 * 1024;
/// Headers parsed per response; more fail the check.
const MAX_HEADERS: usize = 64;

/// The checks of one task at `addr`, on `path`.
pub(crate) struct Prober {
    addr: SocketAddr,
    request: Vec<u8>,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
}

/// How a response ends, from its head.
enum Framing {
    /// No body (1xx/204/304) or a body of this many bytes.
    Length(u64),
    /// Chunked, or until the server closes: the connection is not kept.
    Unbounded,
}

impl Prober {
    /// A prober for `GET path`; the path must be visible ASCII (the spec
    /// rejects whitespace and control characters; anything else is refused
    /// here as a request no server could parse).
    pub(crate) fn new(addr: SocketAddr, path: &str) -> Result<Prober, String> {
        if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!("health path {path:?} has {c:?}: percent-encode it"));
        }
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wharf-health\r\nAccept: */*\r\n\r\n")
            .into_bytes();
        Ok(Prober { addr, request, conn: None, buf: Vec::with_capacity(1024) })
    }

    /// The status of one `GET`. A kept connection the server closed since
    /// the last check is replaced once, at no cost to the verdict.
    /// Cancel-safe: a check dropped midway (its timeout) drops the
    /// connection with it, so a late answer is never read as the next one.
    pub(crate) async fn get(&mut self) -> Result<u16, String> {
        self.attempt().await
    }

    async fn attempt(&mut self) -> Result<u16, String> {
        if self.conn.is_some() {
            match self.exchange().await {
                Ok(status) => return Ok(status),
                // A kept connection that ended before any byte of the answer:
                // the server closed it while idle. Any other error is the task's.
                Err(Exchange::Closed) => {}
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
        let stream = TcpStream::connect(self.addr).await.map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        self.conn = Some(stream);
        match self.exchange().await {
            Ok(status) => Ok(status),
            Err(Exchange::Closed) => Err("connection closed before an answer".to_string()),
            Err(Exchange::Failed(e)) => Err(e),
        }
    }

    /// One request and its answer on the current connection, which is kept
    /// only if the answer leaves it ready for the next request.
    async fn exchange(&mut self) -> Result<u16, Exchange> {
        let mut conn = self.conn.take().ok_or(Exchange::Closed)?;
        let fresh = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Exchange::Closed,
            _ => Exchange::Failed(e.to_string()),
        };
        conn.write_all(&self.request).await.map_err(fresh)?;
        self.buf.clear();
        let (status, framing, keep, head_len) = loop {
            if self.buf.len() >= MAX_HEAD {
                return Err(Exchange::Failed(format!("response head longer than {} KiB", MAX_HEAD / 1024)));
            }
            let n = read_more(&mut conn, &mut self.buf).await.map_err(fresh)?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    Exchange::Closed
                } else {
                    Exchange::Failed("connection closed in the response head".into())
                });
            }
            match parse_head(&self.buf)? {
                Some(Head::Interim(len)) => {
                    self.buf.drain(..len);
                    if let Some(Head::Final { status, framing, keep, len }) = parse_head(&self.buf)? {
                        break (status, framing, keep, len);
                    }
                }
                Some(Head::Final { status, framing, keep, len }) => break (status, framing, keep, len),
                None => {}
            }
        };
        let Framing::Length(body) = framing else { return Ok(status) };
        if !keep || body > MAX_KEPT_BODY {
            return Ok(status);
        }
        // Read the rest of the body so the next request starts clean.
        let have = (self.buf.len() - head_len) as u64;
        if have > body {
            return Ok(status); // more than was announced: don't trust the connection
        }
        let mut left = body - have;
        let mut sink = [0u8; 4096];
        while left > 0 {
            let want = left.min(sink.len() as u64) as usize;
            match conn.read(&mut sink[..want]).await {
                Ok(0) | Err(_) => return Ok(status),
                Ok(n) => left -= n as u64,
            }
        }
        self.conn = Some(conn);
        Ok(status)
    }
}

enum Exchange {
    /// The connection ended before the answer began.
    Closed,
    Failed(String),
}

enum Head {
    /// A 1xx answer of this many bytes; the real one follows.
    Interim(usize),
    Final {
        status: u16,
        framing: Framing,
        keep: bool,
        len: usize,
    },
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + 2048, 0);
    let r = conn.read(&mut buf[start..]).await;
    buf.truncate(start + *r.as_ref().unwrap_or(&0));
    r
}

/// The head at the start of `buf`, if complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Exchange> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Exchange::Failed(format!("not an HTTP response: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    if (100..200).contains(&status) && status != 101 {
        return Ok(Some(Head::Interim(len)));
    }
    let mut keep = resp.version == Some(1);
    let mut framing =
        if status == 204 || status == 304 || status == 101 { Framing::Length(0) } else { Framing::Unbounded };
    let mut lengths = 0;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
                Some(n) if matches!(framing, Framing::Unbounded) => framing = Framing::Length(n),
                _ => keep = false,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            keep = false;
            framing = Framing::Unbounded;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                keep = false;
            } else if v.split(',').any(|t| t.trim() == "keep-alive") && resp.version == Some(0) {
                keep = true;
            }
        }
    }
    if lengths > 1 || status == 101 {
        keep = false;
    }
    Ok(Some(Head::Final { status, framing, keep, len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    impl Prober {
        async fn get_within(&mut self, t: Duration) -> Result<u16, String> {
            tokio::time::timeout(t, self.get()).await.unwrap_or_else(|_| Err("no answer".into()))
        }
    }

    /// A server that answers each connection's requests with `answers` in
    /// turn (one per request read), then closes; counts its connections.
    async fn server(answers: Vec<&'static [u8]>) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                n += 1;
                let _ = tx.send(n);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for a in answers {
                        let mut req = Vec::new();
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            let Ok(k) = s.read(&mut buf).await else { return };
                            if k == 0 {
                                return;
                            }
                            req.extend_from_slice(&buf[..k]);
                        }
                        assert!(req.starts_with(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:"), "{req:?}");
                        if s.write_all(a).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[tokio::test]
    async fn checks_reuse_one_connection_while_the_server_keeps_it() {
        let (addr, mut conns) = server(vec![OK, b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n", OK]).await;
        let mut p = Prober::new(addr, "/health").unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(p.get_within(t).await, Ok(200));
        assert_eq!(p.get_within(t).await, Ok(503));
        assert_eq!(p.get_within(t).await, Ok(200));
        assert_eq!(conns.recv().await, Some(1));
        assert!(conns.try_recv().is_err(), "one connection for three checks");
        // The server closed it after its three answers: the next check reconnects.
        assert_eq!(p.get_within(t).await, Ok(200));
        assert_eq!(conns.recv().await, Some(2));
    }

    #[tokio::test]
    async fn every_answer_gives_its_status_and_only_clean_ones_keep_the_connection() {
        for (answer, status, kept) in [
            (&b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..], 200, false),
            (b"HTTP/1.1 204 No Content\r\n\r\n", 204, true),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 200, false),
            (b"HTTP/1.0 500 Oops\r\n\r\nno length", 500, false),
            (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 200, true),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", 302, true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok", 200, false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nok", 200, false),
        ] {
            let what = String::from_utf8_lossy(answer);
            let (addr, mut conns) = server(vec![answer, answer]).await;
            let mut p = Prober::new(addr, "/health").unwrap();
            assert_eq!(p.get_within(Duration::from_secs(5)).await, Ok(status), "{what}");
            assert_eq!(p.get_within(Duration::from_secs(5)).await, Ok(status), "{what}");
            assert_eq!(conns.recv().await, Some(1));
            // The server keeps every connection open: a second one means the first was let go.
            tokio::task::yield_now().await;
            let second = tokio::time::timeout(Duration::from_millis(100), conns.recv()).await.ok().flatten();
            assert_eq!(second.is_none(), kept, "{what}");
        }
    }

    /// An answer that comes slowly and in pieces is read whole; the
    /// connection is kept and reused.
    #[tokio::test]
    async fn a_slow_answer_in_pieces_is_read_whole_and_the_connection_kept() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for _ in 0..2 {
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let k = s.read(&mut buf).await.unwrap();
                    assert!(k > 0, "the prober closed its connection");
                    req.extend_from_slice(&buf[..k]);
                }
                for piece in [&b"HTTP/1.1 200 OK\r\nContent-"[..], b"Length: 5\r\n\r\nsl", b"ow"] {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    s.write_all(piece).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                s.write_all(b"!").await.unwrap();
            }
            // Held open: a third check would hang, so two is all the prober sent.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let mut p = Prober::new(addr, "/health").unwrap();
        assert_eq!(p.get_within(Duration::from_secs(5)).await, Ok(200));
        assert_eq!(p.get_within(Duration::from_secs(5)).await, Ok(200), "the same connection, after the whole body");
    }

    #[tokio::test]
    async fn garbage_silence_and_refusal_fail_the_check() {
        let (addr, _c) = server(vec![b"SSH-2.0-OpenSSH\r\n\r\n"]).await;
        let err = Prober::new(addr, "/health").unwrap().get_within(Duration::from_secs(5)).await.unwrap_err();
        assert!(err.starts_with("not an HTTP response"), "{err}");

        let (addr, _c) = server(vec![b"HTTP/1.1 200 OK\r\nContent-Le"]).await;
        let err = Prober::new(addr, "/health").unwrap().get_within(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err, "connection closed in the response head");

        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = Prober::new(silent.local_addr().unwrap(), "/health")
            .unwrap()
            .get_within(Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err, "no answer");

        let addr = silent.local_addr().unwrap();
        drop(silent);
        let err = Prober::new(addr, "/health").unwrap().get_within(Duration::from_secs(5)).await.unwrap_err();
        assert!(err.starts_with(&format!("connect {addr}:")), "{err}");

        let (addr, _c) = server(vec![]).await;
        let err = Prober::new(addr, "/health").unwrap().get_within(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err, "connection closed before an answer");

        assert!(Prober::new(addr, "/héalth").is_err());
    }
}
