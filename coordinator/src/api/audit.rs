//! The coordinator's hash-chained audit log: read it, verify it (admins).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use axum::http::StatusCode;

use super::{ApiError, ApiResult, Caller, ErrorResponse, blocking};
use crate::CoordState;

/// A page of the audit log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Page {
    /// Entries after this sequence number.
    #[serde(default)]
    after: u64,
    /// At most this many (default 200, at most 1000).
    #[serde(default = "default_limit")]
    limit: usize,
}
fn default_limit() -> usize {
    200
}

/// The coordinator's hash-chained audit log.
#[utoipa::path(get, path = "/audit", tag = "admin", params(Page), responses(
    (status = 200, description = "Entries in sequence order", body = Vec<Value>),
    (status = 403, description = "Not an admin", body = ErrorResponse),
))]
pub(super) async fn audit(
    State(s): State<Arc<CoordState>>,
    c: Caller,
    Query(p): Query<Page>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let store = s.store.clone();
    let entries =
        blocking(move || prism_common::audit::store::list(store.db(), p.after, p.limit.min(1000)))
            .await?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    e.to_string(),
                )
            })?;
    Ok(Json(json!(entries)))
}

/// Re-checks the audit log's hash chain.
#[utoipa::path(get, path = "/audit/verify", tag = "admin", responses(
    (status = 200, description = "`{valid, entries}` or `{valid: false, error}`", body = Object),
    (status = 403, description = "Not an admin", body = ErrorResponse),
))]
pub(super) async fn verify_audit(
    State(s): State<Arc<CoordState>>,
    c: Caller,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let store = s.store.clone();
    Ok(Json(
        match blocking(move || prism_common::audit::store::verify(store.db())).await? {
            Ok(n) => json!({"valid": true, "entries": n}),
            Err(e) => json!({"valid": false, "error": e.to_string()}),
        },
    ))
}
