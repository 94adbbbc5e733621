//! Stable codes of the failures the daemons classify: whether another party caused it (a
//! node offline, unreachable or late), and the HTTP status the API answers with.
//!
//! Refusals travel as [`crate::wire::ErrorBody`] with the code as text (the wire format and
//! the API carry strings, so a newer peer's code still decodes); inside the daemons the
//! classification goes through this enum instead of matching on prefixes. Codes a backend
//! defines for its own refusals (`DpError::code`, `HeError::code`, …) are [`RefusalCode::Other`]
//! here: they are the analyst's to read and never another party's fault.

/// A classified refusal or failure code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// A participant's node is not connected, or its connection went away.
    PartyOffline,
    /// A participant's peer endpoint could not be reached.
    PartyUnreachable,
    /// A participant did not send its shares within the room's deadline.
    PartyTimeout,
    /// A participant failed during execution.
    PartyFailed,
    /// A participant refused during execution.
    PartyRefused,
    /// The holding node did not answer (offline, unreachable, or the call timed out).
    NodeUnavailable,
    /// The coordinator stopped while the work was in flight.
    CoordinatorStopped,
    /// The coordinator restarted while the work was in flight.
    CoordinatorRestarted,
    /// The dataset's budget cannot pay for the query.
    BudgetExhausted,
    /// No such dataset.
    UnknownDataset,
    /// The node's policy forbids it.
    PolicyViolation,
    /// The node's store failed.
    NodeStoreError,
    /// The node failed internally.
    NodeInternalError,
    /// A frame could not be decoded.
    BadFrame,
    /// Any other code: a backend's own refusal of the query.
    Other,
}

impl RefusalCode {
    /// Every classified code (all but [`RefusalCode::Other`]).
    pub const ALL: [RefusalCode; 14] = [
        RefusalCode::PartyOffline,
        RefusalCode::PartyUnreachable,
        RefusalCode::PartyTimeout,
        RefusalCode::PartyFailed,
        RefusalCode::PartyRefused,
        RefusalCode::NodeUnavailable,
        RefusalCode::CoordinatorStopped,
        RefusalCode::CoordinatorRestarted,
        RefusalCode::BudgetExhausted,
        RefusalCode::UnknownDataset,
        RefusalCode::PolicyViolation,
        RefusalCode::NodeStoreError,
        RefusalCode::NodeInternalError,
        RefusalCode::BadFrame,
    ];

    /// The code as it travels.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::PartyOffline => "party_offline",
            RefusalCode::PartyUnreachable => "party_unreachable",
            RefusalCode::PartyTimeout => "party_timeout",
            RefusalCode::PartyFailed => "party_failed",
            RefusalCode::PartyRefused => "party_refused",
            RefusalCode::NodeUnavailable => "node_unavailable",
            RefusalCode::CoordinatorStopped => "coordinator_stopped",
            RefusalCode::CoordinatorRestarted => "coordinator_restarted",
            RefusalCode::BudgetExhausted => "budget_exhausted",
            RefusalCode::UnknownDataset => "unknown_dataset",
            RefusalCode::PolicyViolation => "policy_violation",
            RefusalCode::NodeStoreError => "node_store_error",
            RefusalCode::NodeInternalError => "node_internal_error",
            RefusalCode::BadFrame => "bad_frame",
            RefusalCode::Other => "other",
        }
    }

    /// The classification of a code as it travels; unknown codes are [`RefusalCode::Other`].
    pub fn of(code: &str) -> RefusalCode {
        RefusalCode::ALL
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or(RefusalCode::Other)
    }

    /// Whether another party (not the query, not this node) caused it: counted as a failure,
    /// not a refusal, on `/metrics`.
    pub fn is_party_failure(self) -> bool {
        matches!(
            self,
            RefusalCode::PartyOffline
                | RefusalCode::PartyUnreachable
                | RefusalCode::PartyTimeout
                | RefusalCode::PartyFailed
        )
    }

    /// The HTTP status the API answers a request refused with this code.
    pub fn http_status(self) -> u16 {
        match self {
            RefusalCode::UnknownDataset => 404,
            RefusalCode::BudgetExhausted | RefusalCode::PolicyViolation | RefusalCode::Other => 422,
            RefusalCode::PartyRefused => 409,
            RefusalCode::BadFrame
            | RefusalCode::NodeStoreError
            | RefusalCode::NodeInternalError => 502,
            RefusalCode::PartyOffline
            | RefusalCode::PartyUnreachable
            | RefusalCode::PartyTimeout
            | RefusalCode::PartyFailed
            | RefusalCode::NodeUnavailable
            | RefusalCode::CoordinatorStopped
            | RefusalCode::CoordinatorRestarted => 503,
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<RefusalCode> for String {
    fn from(c: RefusalCode) -> String {
        c.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_only_party_faults_blame_a_party() {
        for c in RefusalCode::ALL {
            assert_eq!(RefusalCode::of(c.as_str()), c);
            assert_eq!(
                c.is_party_failure(),
                c.as_str().starts_with("party_") && c != RefusalCode::PartyRefused,
                "{c}"
            );
        }
        assert_eq!(RefusalCode::of("dp_invalid_epsilon"), RefusalCode::Other);
        assert!(!RefusalCode::Other.is_party_failure());
        assert_eq!(RefusalCode::of("unknown_dataset").http_status(), 404);
    }
}
