//! What every message family shares: the refusal body and the parameters of a DP release.

use serde::{Deserialize, Serialize};

/// A stable error code and a human message, as carried in refusals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
    /// Structured detail, where there is some (e.g. the enclave refusal, a budget remainder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// A body with no details.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }

    /// Its code, classified.
    pub fn refusal(&self) -> crate::refusal::RefusalCode {
        crate::refusal::RefusalCode::of(&self.code)
    }
}

/// Parameters of a DP release.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyParams {
    /// ε the analyst asks to spend.
    pub epsilon: f64,
    /// δ the analyst allows.
    pub delta: f64,
}
