//! What every message family shares: the refusal body, the parameters of a DP release, and
//! who asked.

use serde::{Deserialize, Serialize};

use crate::identity::OrgId;

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

/// Who asked for a release, as the coordinator forwards it with a request. The node records it
/// in its audit log next to what it charged and checks nothing on it: it is the coordinator's
/// word, and it decides nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requester {
    /// The requesting user's name.
    pub user: String,
    /// The user's organization, if the user belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<OrgId>,
    /// The SQL as the analyst wrote it. Absent where the text would tell the node what it must
    /// not learn (an HE query's constants travel encrypted); the node records its plan then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}
