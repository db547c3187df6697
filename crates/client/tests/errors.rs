//! The client against a canned HTTP server: the server's error answers
//! become typed errors that say what to do.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_client::{ApiClient, ClientError};

/// Answers one request with `status` and the JSON `body`, then closes.
async fn canned(status: &'static str, body: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = conn.read(&mut buf).await;
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).await.unwrap();
    });
    addr
}

#[tokio::test]
async fn a_refused_token_says_how_to_pass_one() {
    let addr = canned("401 Unauthorized", r#"{"error":{"kind":"unauthorized","message":"wrong API token"}}"#).await;
    let err = ApiClient::new(&format!("http://{addr}"), "t").status().await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.kind(), Some("unauthorized"));
    assert!(err.to_string().contains("hint: pass the server's token with --token"), "{err}");
}

#[tokio::test]
async fn an_invalid_upload_carries_the_diagnostics() {
    let body = r#"{"error":{"kind":"invalid_spec","message":"wharf.toml is invalid; nothing was changed","diagnostics":[{"file":"wharf.toml","line":3,"column":1,"message":"unknown key `prot`","hint":"did you mean `port`?"}]}}"#;
    let addr = canned("422 Unprocessable Entity", body).await;
    let upload = wharf_client::Upload::from_archive(b"x".to_vec());
    let err = ApiClient::new(&format!("http://{addr}"), "t").deploy(upload).await.unwrap_err();
    assert_eq!(err.kind(), Some("invalid_spec"));
    assert_eq!(err.to_string(), "wharf.toml is invalid; nothing was changed");
    let d = err.diagnostics();
    assert_eq!((d.len(), d[0].line, d[0].hint.as_deref()), (1, 3, Some("did you mean `port`?")));
}

#[tokio::test]
async fn an_answer_of_the_wrong_shape_is_unexpected_not_a_default() {
    let addr = canned("200 OK", r#"{"version":"x"}"#).await;
    let err = ApiClient::new(&format!("http://{addr}"), "t").status().await.unwrap_err();
    assert!(matches!(err, ClientError::Unexpected { .. }), "{err:?}");
}

#[tokio::test]
async fn no_server_is_a_connect_error_with_a_hint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = ApiClient::new(&format!("http://{addr}"), "t").status().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("hint: is it running?"), "{err}");
}
