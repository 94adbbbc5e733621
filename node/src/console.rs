//! The data owner's console: static assets from `node/web/`, built into the binary and served
//! at `/` of the node's admin listener (loopback).
//!
//! The page holds no secret and no state: the owner pastes the node's admin token, kept in the
//! tab's session storage and sent as a bearer token to the same admin API the CLI uses. Every
//! asset carries a strict Content-Security-Policy (this origin only, no inline code, no
//! framing), so a page that shows coordinator-supplied strings (queries, user names) cannot be
//! made to run them.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy every console response carries; `connect-src 'self'` keeps the admin token from
/// being sent anywhere but this node.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

const INDEX: &[u8] = include_bytes!("../web/index.html");
const SCRIPT: &[u8] = include_bytes!("../web/console.js");
const STYLE: &[u8] = include_bytes!("../web/console.css");
const ICON: &[u8] = include_bytes!("../web/favicon.svg");

/// One embedded file as a response with the console's security headers.
fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let headers: [(HeaderName, &'static str); 6] = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // The assets change with the binary: revalidate, so an upgrade is seen at once.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let mut resp = body.into_response();
    for (name, value) in headers {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    resp
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// The console's routes (no token: the page itself is public, what it shows comes from the
/// token-checked API).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/index.html", get(page))
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_references_its_assets_and_carries_no_inline_code() {
        let html = std::str::from_utf8(INDEX).expect("utf-8");
        for referenced in ["console.js", "console.css", "favicon.svg"] {
            assert!(html.contains(referenced), "index.html misses {referenced}");
        }
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(!html.contains("onclick") && !html.contains("javascript:"));
        let js = std::str::from_utf8(SCRIPT).expect("utf-8");
        assert!(
            !js.contains(".innerHTML") && !js.contains("outerHTML") && !js.contains("eval("),
            "the node console must place strings with textContent only"
        );
        assert!(!STYLE.is_empty() && !ICON.is_empty());
    }
}
