//! The web console: static assets built into the binary, served at `/`. Being built.

use axum::Router;

/// Routes of the console (no state: the console talks to `/api/v1` like any client).
pub fn router() -> Router {
    Router::new()
}
