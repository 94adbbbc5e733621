//! Data-room invitations as this node keeps them: the manifest received, and the owner's
//! decision on it.

use prism_common::room::Manifest;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// room id → JSON [`Invitation`].
pub(super) const INVITATIONS: TableDefinition<&str, &str> = TableDefinition::new("invitations");

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvitationStatus {
    /// Waiting for the owner.
    Pending,
    /// Signed.
    Attested,
    /// Refused by the owner.
    Declined,
    /// Signed, then taken back.
    Withdrawn,
}

/// A room invitation as this node keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    /// The manifest as received.
    pub manifest: Manifest,
    /// Its hash.
    pub manifest_hash: String,
    /// Status.
    pub status: InvitationStatus,
    /// When it arrived.
    pub received_at: String,
    /// When the owner (or the auto-attest policy) decided.
    pub decided_at: Option<String>,
    /// This node's signature, once attested.
    pub signature: Option<String>,
    /// Why it was declined.
    pub reason: Option<String>,
    /// Who created the room, as the coordinator says (recorded, never checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<prism_common::wire::Requester>,
    /// The manifest this one replaced, if the room was re-sent changed (what changed is shown
    /// to the owner; its signature, if any, no longer applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<Superseded>>,
}

/// A manifest a newer one replaced, with where it stood then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Superseded {
    /// The manifest.
    pub manifest: Manifest,
    /// Its hash.
    pub manifest_hash: String,
    /// Its status when it was replaced.
    pub status: InvitationStatus,
    /// When it had arrived.
    pub received_at: String,
}

impl Store {
    /// An invitation by room id.
    pub fn invitation(&self, room_id: &str) -> Result<Option<Invitation>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(INVITATIONS)?;
        let v = t.get(room_id)?;
        v.map(|v| super::parse(room_id, v.value())).transpose()
    }

    /// Every invitation, newest first.
    pub fn invitations(&self) -> Result<Vec<Invitation>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(INVITATIONS)?;
        let mut out: Vec<Invitation> = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(super::parse(k.value(), v.value())?);
        }
        out.sort_by(|a, b| b.received_at.cmp(&a.received_at));
        Ok(out)
    }

    /// Writes an invitation with its audit entry (`action` by `actor`), durably.
    pub fn put_invitation(
        &self,
        inv: &Invitation,
        action: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(INVITATIONS)?;
            t.insert(inv.manifest.room_id.as_str(), super::json(inv).as_str())?;
            prism_common::audit::store::append(
                &txn,
                actor,
                action,
                &inv.manifest.room_id,
                serde_json::json!({"manifest_hash": inv.manifest_hash, "query": inv.manifest.query_text,
                                   "participants": inv.manifest.participants, "status": inv.status, "reason": inv.reason}),
            )?;
        }
        txn.commit()?;
        Ok(())
    }
}
