//! Routes about the coordinator itself: liveness, readiness, metrics, the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::{Caller, ErrorResponse};
use crate::CoordState;

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub(super) async fn openapi_json(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(doc.as_ref().clone())
}

/// Counters in the Prometheus (OpenMetrics) text format: runs by backend and outcome,
/// refusals, budget spent, data-room latencies, failed calls to nodes.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"),
        (status = 401, description = "Missing or invalid API token", body = ErrorResponse),
    )
)]
pub(super) async fn metrics(State(s): State<Arc<CoordState>>, _c: Caller) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            prism_common::metrics::CONTENT_TYPE,
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// Liveness (the process answers) and the number of connected nodes; readiness is `/readyz`.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "`{status, nodes_connected, version}`", body = Object))
)]
pub(super) async fn health(State(s): State<Arc<CoordState>>) -> Json<Value> {
    let connected = s
        .nodes
        .members()
        .iter()
        .filter(|o| s.nodes.info(o).is_some())
        .count();
    Json(
        json!({"status": "ok", "nodes_connected": connected, "version": env!("CARGO_PKG_VERSION")}),
    )
}

/// Readiness: 200 once the store answers and the node endpoint accepts connections; 503
/// before that and while the coordinator stops. `/healthz` stays liveness only.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "`{ready: true, checks: {store, quic_listening, stopping}}`", body = Object),
        (status = 503, description = "`{ready: false, checks}`: which check failed", body = Object),
    )
)]
pub(super) async fn ready(State(s): State<Arc<CoordState>>) -> (StatusCode, Json<Value>) {
    let store = s.store.clone();
    let store_ok = tokio::task::spawn_blocking(move || store.readable())
        .await
        .unwrap_or(false);
    let listening = s.listening.load(std::sync::atomic::Ordering::SeqCst);
    let stopping = s.shutdown.is_cancelled();
    let ready = store_ok && listening && !stopping;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "checks": {"store": store_ok, "quic_listening": listening, "stopping": stopping},
        })),
    )
}
