//! The call role: a client that calls another service again and again and
//! records every outcome, to show that service-to-service calls survive
//! that service's deploys and scaling.

use std::future::Future;
use std::io::{self, Write};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::args::DemoArgs;
use crate::stdout_line;

/// One call's deadline: long enough for a proxy that holds the request
/// while a service momentarily has no task.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The URL to call: `--call-url`, else `$WHARF_<SERVICE>_URL` of
/// `--call-service`, then `--call-path`.
pub fn call_url(args: &DemoArgs) -> io::Result<String> {
    let base = match (&args.call_url, &args.call_service) {
        (Some(url), _) => url.clone(),
        (None, Some(service)) => {
            let var = format!("WHARF_{}_URL", service.to_ascii_uppercase().replace('-', "_"));
            std::env::var(&var).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("--call-service {service}: ${var} is not set"))
            })?
        }
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the call role needs --call-url URL or --call-service SERVICE",
            ))
        }
    };
    Ok(format!("{}{}", base.trim_end_matches('/'), args.call_path))
}

/// Calls until `shutdown`; each outcome is a line `ok STATUS BODY` or
/// `fail WHY` appended to `--call-results` (if set); failures are also
/// printed. A call answered with a status other than 200 is a failure.
pub async fn call(args: DemoArgs, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let url: hyper::Uri = call_url(&args)?
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad URL to call: {e}")))?;
    let authority = url.authority().map(|a| a.to_string()).unwrap_or_default();
    let host = args.call_host.clone().unwrap_or_else(|| authority.clone());
    let mut results = match &args.call_results {
        Some(p) => Some(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        None => None,
    };
    let name = args.name.clone();
    stdout_line(&format!("{name}: calling {url} (Host: {host}) every {:?}", args.call_every));
    tokio::pin!(shutdown);
    let (mut ok, mut failed) = (0u64, 0u64);
    loop {
        let outcome = tokio::select! {
            () = &mut shutdown => break,
            o = tokio::time::timeout(CALL_TIMEOUT, once(&authority, &url, &host)) => {
                o.unwrap_or_else(|_| Err(format!("no answer within {CALL_TIMEOUT:?}")))
            }
        };
        let line = match outcome {
            Ok((200, body)) => {
                ok += 1;
                format!("ok 200 {}", body.trim())
            }
            Ok((status, body)) => {
                failed += 1;
                format!("fail status {status} {}", body.chars().take(200).collect::<String>().trim())
            }
            Err(e) => {
                failed += 1;
                format!("fail {e}")
            }
        };
        if line.starts_with("fail") {
            stdout_line(&format!("{name}: {line}"));
        }
        if let Some(f) = results.as_mut() {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
        if (ok + failed) % 500 == 0 {
            stdout_line(&format!("{name}: {ok} calls ok, {failed} failed"));
        }
        if !args.call_every.is_zero() {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(args.call_every) => {}
            }
        }
    }
    stdout_line(&format!("{name}: stopping after {ok} calls ok, {failed} failed"));
    Ok(())
}

/// One GET on a new connection: the status and the body.
async fn once(authority: &str, url: &hyper::Uri, host: &str) -> Result<(u16, String), String> {
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    drop(sender);
    conn.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
