//! The web console: static assets from `coordinator/web/`, built into the binary and served at `/`.
//!
//! The console is a plain client of `/api/v1` (it keeps the API token in the browser's session
//! storage and sends it as a bearer token), so it needs no state and no access to the store.
//! Every asset is served with a strict Content-Security-Policy: scripts, styles and requests
//! only from this origin, no inline code, no framing.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
static HISTORY: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../web/history.js"),
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

/// Routes of the console, registered with the API's OpenAPI document (no state: the console
/// talks to `/api/v1` like any client).
pub fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(index_html))
        .routes(routes!(script))
        .routes(routes!(history))
        .routes(routes!(style))
        .routes(routes!(icon))
}

/// The console's page.
#[utoipa::path(get, path = "/", tag = "console", security(()),
    responses((status = 200, description = "The console", content_type = "text/html")))]
async fn index() -> &'static Asset {
    &INDEX
}

/// The console's page, by name.
#[utoipa::path(get, path = "/index.html", tag = "console", security(()),
    responses((status = 200, description = "The console", content_type = "text/html")))]
async fn index_html() -> &'static Asset {
    &INDEX
}

/// The console's script.
#[utoipa::path(get, path = "/console.js", tag = "console", security(()),
    responses((status = 200, description = "Script", content_type = "text/javascript")))]
async fn script() -> &'static Asset {
    &SCRIPT
}

/// The console's runs history chart (a script `console.js` uses).
#[utoipa::path(get, path = "/history.js", tag = "console", security(()),
    responses((status = 200, description = "Script", content_type = "text/javascript")))]
async fn history() -> &'static Asset {
    &HISTORY
}

/// The console's style sheet.
#[utoipa::path(get, path = "/console.css", tag = "console", security(()),
    responses((status = 200, description = "Style sheet", content_type = "text/css")))]
async fn style() -> &'static Asset {
    &STYLE
}

/// The console's icon.
#[utoipa::path(get, path = "/favicon.svg", tag = "console", security(()),
    responses((status = 200, description = "Icon", content_type = "image/svg+xml")))]
async fn icon() -> &'static Asset {
    &ICON
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_and_reference_each_other() {
        let html = std::str::from_utf8(INDEX.body).expect("utf-8");
        for referenced in ["console.js", "history.js", "console.css", "favicon.svg"] {
            assert!(html.contains(referenced), "index.html misses {referenced}");
        }
        // CSP forbids inline code: the page must not carry any.
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(!html.contains("onclick") && !html.contains("javascript:"));
        for script in [&SCRIPT, &HISTORY] {
            let js = std::str::from_utf8(script.body).expect("utf-8");
            assert!(
                !js.contains(".innerHTML") && !js.contains("outerHTML") && !js.contains("eval("),
                "the console must place API strings with textContent only"
            );
        }
        assert!(!STYLE.body.is_empty() && !ICON.body.is_empty());
    }
}
