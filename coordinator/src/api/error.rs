//! API errors: every failure answers `{"error": {"code", "message", "details"?}}` with a
//! status that says whose fault it is; a store failure is the only 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::StoreError;

/// An API error: HTTP status, stable code, message, optional structured details.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
    /// Structured detail.
    pub details: Option<Value>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong, in words meant for the user.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`unauthorized`, `invalid_sql`, `budget_exhausted`, ...).
    pub code: String,
    /// What happened, why, and what to do next.
    pub message: String,
    /// Structured detail, when there is some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                details: self.details,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            format!("the coordinator store failed: {e}"),
        )
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
