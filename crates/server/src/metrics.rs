//! The metrics endpoint: the proxy's registry and the server's own, as one
//! Prometheus exposition on the admin listener (no token: keep it private).

use std::sync::Arc;

use wharf_control::Controller;
use wharf_proxy::Proxy;

/// `GET /metrics`.
pub(crate) fn router(proxy: Arc<Proxy>, ctl: Arc<Controller>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (proxy, ctl) = (proxy.clone(), ctl.clone());
            async move {
                // Both registries end with "# EOF"; the exposition has one.
                let mut text = proxy.metrics_text().replace("# EOF\n", "");
                text.push_str(&ctl.metrics_text().await);
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
            }
        }),
    )
}
