//! A data-room invitation as its owner reads it: what the query is, what would leave this node,
//! and what changed from the manifest the same room sent before.
//!
//! Pure functions of the stored invitation (and the dataset's schema, when the node holds it),
//! shared by the console's JSON (`admin/owner.rs`) and the CLI's text (`owner_text`).

use prism_common::identity::OrgId;
use prism_common::release::ReleaseMode;
use prism_common::room::Manifest;
use prism_common::schema::DatasetSchema;
use serde_json::{Value, json};

use crate::store::{Invitation, InvitationStatus};

/// What leaves this node if the room executes, in words.
fn leaves(org: &OrgId, m: &Manifest, vector: Option<usize>) -> String {
    let p = &m.params;
    let groups = p.key_count();
    let others = m.participants.len().saturating_sub(1);
    let values = vector.map_or_else(String::new, |n| format!(" of {n} values"));
    let release = match p.release {
        ReleaseMode::Dp => format!(
            "noise calibrated to ε = {} is added to this node's vector before it is split, and \
             charged to dataset {}",
            p.epsilon_of(org)
                .map_or_else(|| "(none given for this organization)".into(), fmt),
            m.plan.dataset
        ),
        ReleaseMode::Exact => {
            "no noise: the exact total of every participant is released (an exact room always \
             waits for the owner)"
                .into()
        }
        ReleaseMode::Off => "nothing: this release mode is off".into(),
    };
    format!(
        "One random-looking share{values} to each of {others} other participant(s) and one partial \
         sum to the coordinator; the total decodes to {groups} group(s). Release: {release}.{}",
        if p.min_group_size > 0 {
            format!(
                " Groups with fewer than {} rows are suppressed.",
                p.min_group_size
            )
        } else {
            String::new()
        }
    )
}

fn fmt(x: f64) -> String {
    format!("{}", (x * 1e9).round() / 1e9)
}

/// The fields an owner compares between two manifests of a room, by name.
fn compared(m: &Manifest) -> Vec<(&'static str, Value)> {
    let p = &m.params;
    vec![
        ("query", json!(m.query_text)),
        ("dataset", json!(m.plan.dataset)),
        ("backend", json!(m.backend)),
        ("participants", json!(m.participants)),
        ("release", json!(p.release)),
        ("epsilon", json!(p.epsilon)),
        ("group_keys", json!(p.group_keys)),
        ("min_group_size", json!(p.min_group_size)),
        ("fixed_point_decimals", json!(p.fixed_point_decimals)),
        ("deadline_ms", json!(p.deadline_ms)),
        ("expires_at", json!(m.expires_at)),
        ("plan", json!(m.plan)),
    ]
}

/// What differs from `before` to `after`: `{field, before, after}` per changed field.
pub fn changes(before: &Manifest, after: &Manifest) -> Vec<Value> {
    compared(before)
        .into_iter()
        .zip(compared(after))
        .filter(|((_, b), (_, a))| a != b)
        .map(|((field, b), (_, a))| json!({"field": field, "before": b, "after": a}))
        .collect()
}

/// An invitation explained for `org`'s owner, at `now`.
pub fn explain(
    org: &OrgId,
    inv: &Invitation,
    schema: Option<&DatasetSchema>,
    now: time::OffsetDateTime,
) -> Value {
    let m = &inv.manifest;
    let p = &m.params;
    let vector = schema
        .and_then(|s| prism_common::mpc::layout(&m.plan, s, p).ok())
        .map(|l| l.len());
    json!({
        "room_id": m.room_id,
        "status": inv.status,
        "pending": inv.status == InvitationStatus::Pending,
        "manifest_hash": inv.manifest_hash,
        "received_at": inv.received_at,
        "decided_at": inv.decided_at,
        "reason": inv.reason,
        "requested_by": inv.requester.as_ref().map(|r| json!({"user": r.user, "organization": r.organization})),
        "query": m.query_text,
        "dataset": m.plan.dataset,
        "dataset_held": schema.is_some(),
        "backend": m.backend,
        "release": p.release,
        "epsilon": p.epsilon_of(org),
        "group_by": m.plan.group_by,
        "group_keys": p.group_keys,
        "key_count": p.key_count(),
        "min_group_size": p.min_group_size,
        "participants": m.participants,
        "expires_at": m.expires_at,
        "expired": m.expired(now),
        "vector_length": vector,
        "leaves": leaves(org, m, vector),
        "previous": inv.previous.as_ref().map(|o| json!({
            "manifest_hash": o.manifest_hash, "status": o.status, "received_at": o.received_at,
        })),
        "changes": inv.previous.as_ref().map_or_else(Vec::new, |o| changes(&o.manifest, m)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_common::room::{PartyEpsilon, RoomParams};
    use prism_common::schema::{ColumnSpec, ColumnType};

    fn org(s: &str) -> OrgId {
        OrgId::new(s).expect("org")
    }

    fn manifest(eps: f64) -> Manifest {
        let sql = "SELECT diagnosis, COUNT(*) FROM patients GROUP BY diagnosis";
        let schema = DatasetSchema {
            name: "patients".into(),
            columns: vec![ColumnSpec {
                name: "diagnosis".into(),
                ty: ColumnType::Text,
                bounds: None,
                public_keys: None,
                not_null: false,
                privacy_unit: None,
            }],
        };
        Manifest {
            version: 1,
            room_id: "r1".into(),
            query_text: sql.into(),
            plan: prism_common::sql::plan_query(sql, &schema).expect("plans"),
            backend: prism_common::backend::BackendId::MpcBackend,
            participants: vec![org("hospital-a"), org("hospital-b")],
            params: RoomParams {
                group_keys: vec![vec!["asthma".into(), "diabetes".into()]],
                epsilon: vec![
                    PartyEpsilon {
                        org: org("hospital-a"),
                        epsilon: eps,
                    },
                    PartyEpsilon {
                        org: org("hospital-b"),
                        epsilon: 0.5,
                    },
                ],
                ..RoomParams::default()
            },
            expires_at: "2999-01-01T00:00:00Z".into(),
        }
    }

    fn invitation(m: Manifest) -> Invitation {
        Invitation {
            manifest_hash: m.hash_hex(),
            manifest: m,
            status: InvitationStatus::Pending,
            received_at: "2026-01-01T00:00:00Z".into(),
            decided_at: None,
            signature: None,
            reason: None,
            requester: None,
            previous: None,
        }
    }

    #[test]
    fn explains_what_leaves_and_what_changed() {
        let a = org("hospital-a");
        let now = time::OffsetDateTime::now_utc();
        let mut inv = invitation(manifest(0.25));
        let v = explain(&a, &inv, None, now);
        assert_eq!(v["epsilon"], 0.25);
        assert_eq!(v["key_count"], 2);
        assert_eq!(v["pending"], true);
        assert_eq!(v["expired"], false);
        assert_eq!(v["changes"], json!([]));
        let leaves = v["leaves"].as_str().expect("text");
        assert!(
            leaves.contains("ε = 0.25") && leaves.contains("2 group(s)"),
            "{leaves}"
        );
        assert!(leaves.contains("1 other participant"), "{leaves}");

        // The room is re-sent with a larger ε for this node: exactly that field changed.
        let old = inv.clone();
        inv = invitation(manifest(2.0));
        inv.previous = Some(Box::new(crate::store::Superseded {
            manifest: old.manifest,
            manifest_hash: old.manifest_hash,
            status: old.status,
            received_at: old.received_at,
        }));
        let v = explain(&a, &inv, None, now);
        let changes = v["changes"].as_array().expect("changes");
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0]["field"], "epsilon");
        assert_eq!(changes[0]["before"][0]["epsilon"], 0.25);
        assert_eq!(changes[0]["after"][0]["epsilon"], 2.0);
    }
}
