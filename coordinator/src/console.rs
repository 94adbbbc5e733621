//! The web console: static assets from `coordinator/web/`, built into the binary and served at `/`.
//!
//! The console is a plain client of `/api/v1` (it keeps the API token in the browser's session
//! storage and sends it as a bearer token), so it needs no state and no access to the store.
//! Every asset is served with a strict Content-Security-Policy: scripts, styles and requests
//! only from this origin, no inline code, no framing.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy every console response carries. `connect-src 'self'` keeps the API token from
/// being sent anywhere but this coordinator.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
}

static INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../web/index.html"),
};
static SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../web/console.js"),
};
static STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("../web/console.css"),
};
static ICON: Asset = Asset {
    content_type: "image/svg+xml",
    body: include_bytes!("../web/favicon.svg"),
};

impl IntoResponse for &'static Asset {
    fn into_response(self) -> Response {
        let mut resp = self.body.into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        // Assets change with the binary; revalidate so an upgrade is seen at once.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

/// Routes of the console (no state: the console talks to `/api/v1` like any client).
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { &INDEX }))
        .route("/index.html", get(|| async { &INDEX }))
        .route("/console.js", get(|| async { &SCRIPT }))
        .route("/console.css", get(|| async { &STYLE }))
        .route("/favicon.svg", get(|| async { &ICON }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_and_reference_each_other() {
        let html = std::str::from_utf8(INDEX.body).expect("utf-8");
        for referenced in ["console.js", "console.css", "favicon.svg"] {
            assert!(html.contains(referenced), "index.html misses {referenced}");
        }
        // CSP forbids inline code: the page must not carry any.
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(!html.contains("onclick") && !html.contains("javascript:"));
        let js = std::str::from_utf8(SCRIPT.body).expect("utf-8");
        assert!(
            !js.contains(".innerHTML") && !js.contains("outerHTML") && !js.contains("eval("),
            "the console must place API strings with textContent only"
        );
        assert!(!STYLE.body.is_empty() && !ICON.body.is_empty());
    }
}
