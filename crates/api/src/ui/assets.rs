//! The dashboard's CSS and JavaScript, embedded in the binary. Their URLs
//! carry a hash of their content, so a browser may cache them for a year and
//! still fetches the new file after an upgrade.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file and the URL it is served at.
pub(crate) struct Asset {
    /// `/ui/assets/app.<hash>.css`
    pub(crate) url: String,
    content_type: &'static str,
    body: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, body: &'static str) -> Asset {
        let hash: String = Sha256::digest(body.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
        Asset { url: format!("/ui/assets/{stem}.{hash}.{ext}"), content_type, body }
    }
}

pub(crate) static CSS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("app", "css", "text/css; charset=utf-8", include_str!("app.css")));
pub(crate) static JS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("app", "js", "text/javascript; charset=utf-8", include_str!("app.js")));

/// `GET /ui/assets/{name}`: only the current fingerprinted names exist, so
/// a cached copy is never stale.
pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    let url = format!("/ui/assets/{name}");
    match [&*CSS, &*JS].into_iter().find(|a| a.url == url) {
        Some(a) => (
            [(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")], "no such asset").into_response(),
    }
}
