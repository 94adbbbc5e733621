//! The coordinator's records: users, catalog entries, queries, runs and data rooms, as the API
//! shows them, with their state enums. Plain data: this layer imports nothing else of the crate.
//!
//! Field names follow the seed plan (`estimated_epsilon`, `backend_used`, `proof_artifacts`, ...).

use prism_common::backend::BackendId;
use prism_common::identity::OrgId;
use prism_common::plan::{Plan, Table};
use prism_common::schema::{ColumnSpec, DatasetSchema};
use serde::{Deserialize, Serialize};

pub mod room;

pub use room::{Participant, ParticipantStatus, Room, RoomOutcome, RoomStatus};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages the federation; reads the audit log.
    Admin,
    /// Creates and runs queries.
    Analyst,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "analyst" => Ok(Role::Analyst),
            _ => Err(format!("unknown role {s:?}: use admin or analyst")),
        }
    }
}

/// A user; the token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The organization the user belongs to, if any.
    pub organization: Option<OrgId>,
    /// When created.
    pub created_at: String,
}

/// The longest user name accepted, in characters.
pub const MAX_USER_NAME: usize = 100;

/// A new user's name, trimmed, if it is 1 to [`MAX_USER_NAME`] printable characters; else why
/// not.
pub fn user_name(name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    if trimmed.is_empty()
        || trimmed.chars().count() > MAX_USER_NAME
        || trimmed.chars().any(char::is_control)
    {
        return Err(format!(
            "a user name must be 1 to {MAX_USER_NAME} printable characters; got {name:?}"
        ));
    }
    Ok(trimmed.to_string())
}

/// A dataset in the catalog: metadata published by its node, never rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// `<organization>.<name>`.
    pub id: String,
    /// Holding organization.
    pub organization: OrgId,
    /// Dataset name (SQL table name).
    pub name: String,
    /// Declared columns.
    pub columns: Vec<ColumnSpec>,
    /// Row count.
    pub row_count: u64,
    /// How each backend's answers may leave the holding node (published by its owner).
    #[serde(default)]
    pub release: prism_common::release::ReleaseModes,
    /// Its budget, as its owner publishes it (`null`: the owner keeps it private).
    #[serde(default)]
    pub budget: Option<prism_common::schema::PublishedBudget>,
    /// When the node last published it.
    pub updated_at: String,
}

impl DatasetRecord {
    /// The schema queries over this dataset are planned against.
    pub fn schema(&self) -> DatasetSchema {
        DatasetSchema {
            name: self.name.clone(),
            columns: self.columns.clone(),
        }
    }
}

/// A saved query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRecord {
    /// Query id.
    pub id: String,
    /// Dataset id.
    pub dataset_id: String,
    /// SQL text as submitted.
    pub sql: String,
    /// Backend.
    pub backend: BackendId,
    /// ε requested for a DP release.
    pub epsilon: f64,
    /// δ allowed for a DP release.
    pub delta: f64,
    /// ε the holding node says this query will be charged.
    pub estimated_epsilon: f64,
    /// δ it will be charged.
    pub estimated_delta: f64,
    /// The normalized plan.
    pub plan: Plan,
    /// Creator's user id.
    pub created_by: String,
    /// The creator's organization, whose users share the query (`None`: the creator and
    /// admins only).
    #[serde(default)]
    pub organization: Option<OrgId>,
    /// When created.
    pub created_at: String,
}

/// Whether `user` may see and execute what `created_by` of `organization` made: its creator,
/// the creator's organization, and admins.
pub fn visible_to(user: &User, created_by: &str, organization: Option<&OrgId>) -> bool {
    user.role == Role::Admin
        || user.id == created_by
        || user
            .organization
            .as_ref()
            .is_some_and(|o| organization == Some(o))
}

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Persisted, not yet sent.
    Pending,
    /// Sent to the node.
    Running,
    /// Answered.
    Completed,
    /// Refused or failed; `error_message` says why.
    Failed,
}

impl RunStatus {
    /// Whether the run is finished.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed)
    }
}

/// One execution of a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// Query id.
    pub query_id: String,
    /// State.
    pub status: RunStatus,
    /// The released answer.
    pub result: Option<Table>,
    /// Backend that ran it.
    pub backend_used: BackendId,
    /// ε the node charged.
    pub epsilon_consumed: f64,
    /// δ the node charged.
    pub delta_consumed: f64,
    /// Wall-clock time from dispatch to answer.
    pub execution_time_ms: Option<f64>,
    /// Mechanism, parameters, accuracy, node timings.
    pub proof_artifacts: serde_json::Value,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Stable code of the failure.
    pub error_code: Option<String>,
    /// Who ran it.
    pub created_by: String,
    /// The organization of who ran it, whose users share the run (`None`: that user and
    /// admins only).
    #[serde(default)]
    pub organization: Option<OrgId>,
    /// When created.
    pub created_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
}

/// What a backend released for a run: the answer, what the holding nodes charged, and its proof.
#[derive(Debug, Clone)]
pub struct Released {
    /// The answer.
    pub table: Table,
    /// ε charged.
    pub epsilon: f64,
    /// δ charged.
    pub delta: f64,
    /// Mechanism, parameters, accuracy, timings.
    pub proof: serde_json::Value,
}

/// Why a backend released nothing for a run.
#[derive(Debug, Clone)]
pub struct RunFailure {
    /// Stable code.
    pub code: String,
    /// What happened, for the analyst.
    pub message: String,
    /// Whether a node refused (counted as a refusal on `/metrics`), rather than failed.
    pub refused: bool,
    /// A structured refusal to keep as the run's proof artifacts.
    pub details: Option<serde_json::Value>,
}

impl RunFailure {
    /// A failure with a code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        RunFailure {
            code: code.into(),
            message: message.into(),
            refused: false,
            details: None,
        }
    }
}

/// A backend's outcome for a run.
pub type RunOutcome = Result<Released, RunFailure>;

pub use prism_common::clock::now;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_printable_and_not_empty() {
        assert_eq!(user_name("  alice "), Ok("alice".to_string()));
        for bad in ["", "   ", "a\u{0}b", "line\nbreak"] {
            assert!(user_name(bad).is_err(), "{bad:?}");
        }
        assert!(user_name(&"x".repeat(MAX_USER_NAME)).is_ok());
        assert!(user_name(&"x".repeat(MAX_USER_NAME + 1)).is_err());
    }
}

/// What the key holder needs to read an HE run's encrypted result when the node's answer is
/// collected after a restart (`crate::collect`): the key set and the encoding the node
/// evaluated (it holds the constants' codes and the text domains, so it is never shown).
/// Written before the request leaves; removed when the run ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HePending {
    /// The key set the constants were encrypted under.
    pub key_id: String,
    /// The plan as encoded for the node.
    pub encoded: prism_common::he::encode::Encoded,
}

/// Failures after which a node may still hold the run's charged answer: the node was lost, or
/// the coordinator stopped, after the request may have reached it.
pub const COLLECTIBLE: &[&str] = &[
    "node_unavailable",
    "coordinator_stopped",
    "coordinator_restarted",
];
