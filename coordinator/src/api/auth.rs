//! Who is calling: the bearer token's user, and the admin check.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};

use super::{ApiError, ApiResult, blocking};
use crate::CoordState;
use crate::model::{Role, User};

/// The authenticated caller.
pub struct Caller(pub User);

impl FromRequestParts<Arc<CoordState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<CoordState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing bearer token: send Authorization: Bearer <api token>",
                )
            })?;
        let store = state.store.clone();
        let token = token.trim().to_string();
        let user = blocking(move || store.user_by_token(&token)).await??;
        user.map(Caller).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid API token",
            )
        })
    }
}

impl Caller {
    /// Refuses non-admins.
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.0.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "user {} is an analyst; this route needs the admin role",
                    self.0.name
                ),
            ))
        }
    }
}

/// The header on a listing that skipped records which do not decode: how many.
pub const SKIPPED_HEADER: &str = "x-prism-skipped-records";
/// The header naming the skipped records' ids (admins only; they can delete them).
pub const SKIPPED_IDS_HEADER: &str = "x-prism-skipped-ids";

/// Headers reporting the records a listing skipped because they do not decode.
pub fn skipped_headers(user: &User, corrupt: &[String]) -> HeaderMap {
    let mut h = HeaderMap::new();
    if corrupt.is_empty() {
        return h;
    }
    h.insert(SKIPPED_HEADER, HeaderValue::from(corrupt.len()));
    if user.role == Role::Admin
        && let Ok(v) = HeaderValue::from_str(&corrupt.join(","))
    {
        h.insert(SKIPPED_IDS_HEADER, v);
    }
    h
}
