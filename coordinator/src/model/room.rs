//! A data room and its state machine, as plain data: every transition is a method here, so
//! the rules (who may attest when, what a decline does, when a room may execute) are tested
//! without a store or a network. `crate::rooms` persists the transitions.
//!
//! `pending` (invitations out) → `ready` (every participant's signature verified) →
//! `executing` → `completed` | `failed` (retryable); `cancelled` before execution; `declined`
//! (terminal) when a participant declines its invitation. A withdrawal sends a ready room back
//! to `pending`.

use prism_common::identity::OrgId;
use prism_common::plan::Table;
use prism_common::room::Manifest;
use serde::{Deserialize, Serialize};

/// A room's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomStatus {
    /// Waiting for attestations.
    Pending,
    /// Every participant attested.
    Ready,
    /// Running.
    Executing,
    /// Answered.
    Completed,
    /// Failed; may be executed again.
    Failed,
    /// Cancelled before execution.
    Cancelled,
    /// A participant declined: the room can never become ready; `error_message` names who
    /// and why.
    Declined,
}

/// A participant's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantStatus {
    /// Invitation sent (or waiting for the node to connect).
    Invited,
    /// Signature verified.
    Attested,
    /// Declined.
    Declined,
    /// Attested, then withdrew.
    Withdrawn,
}

/// One participant of a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// Organization.
    pub organization: OrgId,
    /// Standing.
    pub status: ParticipantStatus,
    /// When it attested.
    pub attested_at: Option<String>,
    /// Its Ed25519 signature over the manifest hash (hex).
    pub signature: Option<String>,
    /// The public key from its certificate that verified the signature (hex).
    pub public_key: Option<String>,
    /// Why it declined.
    pub reason: Option<String>,
    /// Whether the invitation reached its node.
    pub invitation_delivered: bool,
}

/// A data room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// Room id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// SQL.
    pub query_text: String,
    /// Backend.
    pub backend: prism_common::backend::BackendId,
    /// Participants with their standing.
    pub participants: Vec<Participant>,
    /// What everyone attests to.
    pub manifest: Manifest,
    /// Its hash (hex).
    pub manifest_hash: String,
    /// State.
    pub status: RoomStatus,
    /// The answer (carrying every party's noise in a `dp` room).
    pub result: Option<Table>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Stable code of the failure.
    pub error_code: Option<String>,
    /// Protocol facts: parties, vector length, per-party timings.
    pub proof_artifacts: serde_json::Value,
    /// Creator's user id.
    pub created_by: String,
    /// When created.
    pub created_at: String,
    /// When last executed.
    pub executed_at: Option<String>,
    /// Execute → result, ms.
    pub execution_time_ms: Option<f64>,
    /// The run this room answers, for rooms opened by an `mpc_backend` query.
    pub origin_run: Option<String>,
    /// The id of the latest execution attempt (what the nodes charge and hold their partial
    /// sums under, until the coordinator acknowledges them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

impl Room {
    /// Organizations that have not attested.
    pub fn waiting_for(&self) -> Vec<OrgId> {
        self.participants
            .iter()
            .filter(|p| p.status != ParticipantStatus::Attested)
            .map(|p| p.organization.clone())
            .collect()
    }

    /// Whether every participant has attested.
    pub fn all_attested(&self) -> bool {
        self.participants
            .iter()
            .all(|p| p.status == ParticipantStatus::Attested)
    }

    /// Records `org`'s verified attestation. `None` when the room no longer takes attestations
    /// or `org` is not a participant; else whether every participant has now attested (a
    /// pending room becomes `ready` then).
    pub fn attest(
        &mut self,
        org: &OrgId,
        signature: &str,
        public_key_hex: String,
        at: String,
    ) -> Option<bool> {
        if !matches!(
            self.status,
            RoomStatus::Pending | RoomStatus::Ready | RoomStatus::Failed
        ) {
            return None;
        }
        let p = self
            .participants
            .iter_mut()
            .find(|p| &p.organization == org)?;
        p.status = ParticipantStatus::Attested;
        p.attested_at = Some(at);
        p.signature = Some(signature.to_string());
        p.public_key = Some(public_key_hex);
        p.invitation_delivered = true;
        let ready = self.all_attested();
        if ready && self.status == RoomStatus::Pending {
            self.status = RoomStatus::Ready;
        }
        Some(ready)
    }

    /// Records a decline or a withdrawal by `org`; `false` when nothing changed. A decline ends
    /// the room (`declined`, terminal, naming who and why); a withdrawal sends a ready room
    /// back to `pending`.
    pub fn decline(
        &mut self,
        org: &OrgId,
        status: ParticipantStatus,
        reason: Option<String>,
    ) -> bool {
        if !matches!(
            self.status,
            RoomStatus::Pending | RoomStatus::Ready | RoomStatus::Failed
        ) {
            return false;
        }
        let Some(p) = self
            .participants
            .iter_mut()
            .find(|p| &p.organization == org)
        else {
            return false;
        };
        p.status = status;
        p.signature = None;
        p.reason = reason.clone();
        if status == ParticipantStatus::Declined {
            self.status = RoomStatus::Declined;
            self.error_code = Some("room_declined".into());
            self.error_message = Some(match reason.as_deref().map(str::trim) {
                Some(why) if !why.is_empty() => format!(
                    "organization {org} declined the room: {why}; create a new room to ask again"
                ),
                _ => {
                    format!("organization {org} declined the room; create a new room to ask again")
                }
            });
        } else if self.status == RoomStatus::Ready {
            self.status = RoomStatus::Pending;
        }
        true
    }

    /// Moves a ready (or failed, to retry) room with every attestation to `executing`, under a
    /// new execution id; else the state and who has not attested. A room awaiting collection
    /// after a restart may be executed again too: the new execution supersedes the old one,
    /// whose partial sums are then never combined.
    pub fn begin_execution(&mut self, at: String) -> Result<(), (RoomStatus, Vec<OrgId>)> {
        let retry = matches!(self.status, RoomStatus::Ready | RoomStatus::Failed)
            || self.awaiting_collection();
        if !retry || !self.all_attested() {
            return Err((self.status, self.waiting_for()));
        }
        self.proof_artifacts = serde_json::json!({});
        self.status = RoomStatus::Executing;
        self.execution_id = Some(uuid::Uuid::new_v4().to_string());
        self.executed_at = Some(at);
        self.error_message = None;
        self.error_code = None;
        Ok(())
    }

    /// Ends an execution: `completed` with the answer and its proof, or `failed` with a code
    /// and message (no answer). Returns the audit action.
    pub fn finish(&mut self, outcome: &RoomOutcome, elapsed_ms: f64) -> &'static str {
        self.execution_time_ms = Some(elapsed_ms);
        match outcome {
            Ok((table, proof)) => {
                self.status = RoomStatus::Completed;
                self.result = Some(table.clone());
                self.proof_artifacts = proof.clone();
                "room_completed"
            }
            Err((code, message)) => {
                self.fail(code, message);
                "room_failed"
            }
        }
    }

    /// Fails the room with a code and message; no answer is kept.
    pub fn fail(&mut self, code: &str, message: &str) {
        self.status = RoomStatus::Failed;
        self.result = None;
        self.error_code = Some(code.into());
        self.error_message = Some(message.into());
    }

    /// Cancels a room that has not executed; `false` when it is executing or over.
    pub fn cancel(&mut self, actor: &str) -> bool {
        if matches!(
            self.status,
            RoomStatus::Executing
                | RoomStatus::Completed
                | RoomStatus::Cancelled
                | RoomStatus::Declined
        ) {
            return false;
        }
        self.status = RoomStatus::Cancelled;
        self.error_code = Some("room_cancelled".into());
        self.error_message = Some(format!("the room was cancelled by {actor}"));
        true
    }
}

/// What an execution produced: the answer and its proof, or a failure's code and message.
pub type RoomOutcome = Result<(Table, serde_json::Value), (String, String)>;

/// Failures of a `dp` room after which the parties' held partial sums may still complete it:
/// the coordinator or a party's connection went away, possibly after every party had charged
/// its partial sum.
pub const ROOM_COLLECTIBLE: &[&str] = &[
    "coordinator_stopped",
    "coordinator_restarted",
    "party_offline",
    "party_failed",
];

impl Room {
    /// Whether the parties' held partial sums of `execution_id` may still complete this room:
    /// it is its latest execution, in a `dp` room, and the room awaits collection after a
    /// restart or failed only because a connection went away.
    pub fn collectible(&self, execution_id: &str) -> bool {
        self.manifest.params.release == prism_common::release::ReleaseMode::Dp
            && self.execution_id.as_deref() == Some(execution_id)
            && match self.status {
                RoomStatus::Executing => self.awaiting_collection(),
                RoomStatus::Failed => self
                    .error_code
                    .as_deref()
                    .is_some_and(|c| ROOM_COLLECTIBLE.contains(&c)),
                _ => false,
            }
    }

    /// Whether a restart left this room executing, awaiting its parties' partial sums.
    pub fn awaiting_collection(&self) -> bool {
        self.status == RoomStatus::Executing
            && self.proof_artifacts.get("awaiting_collection").is_some()
    }
}

#[cfg(test)]
mod tests;
