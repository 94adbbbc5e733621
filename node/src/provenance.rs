//! What the node's audit log records about a release besides its cost: the query (the SQL the
//! coordinator forwards, else the plan the node evaluated), who asked (user and organization,
//! as the coordinator says; checked by nothing) and the shape of what left (rows × columns).
//!
//! Functions that build the JSON merged into the `budget_charged` / `query_answered` entries
//! (pure, but for [`of_room`], which reads the room's invitation), so the owner's console and
//! CLI can show each charge with its query and requester.

use prism_common::plan::Table;
use prism_common::wire::Requester;
use serde::Serialize;
use serde_json::{Value, json};

fn who(r: &Requester) -> Value {
    json!({"user": r.user, "organization": r.organization})
}

/// The query and requester fields of an audit entry. `plan` is recorded when the coordinator
/// sent no SQL (an HE query, or an older coordinator).
pub fn asked(requester: Option<&Requester>, plan: &impl Serialize) -> Value {
    let query = requester.and_then(|r| r.query.clone());
    let mut out = json!({"query": &query, "requested_by": requester.map(who)});
    if query.is_none() {
        out["plan"] = serde_json::to_value(plan).unwrap_or(Value::Null);
    }
    out
}

/// The query and requester of a room: the manifest's SQL and the creator its invitation named.
/// Blocking (store).
pub fn of_room(state: &crate::NodeState, m: &prism_common::room::Manifest) -> Value {
    let creator = state
        .store
        .invitation(&m.room_id)
        .ok()
        .flatten()
        .and_then(|i| i.requester);
    json!({
        "query": m.query_text,
        "requested_by": creator.as_ref().map(who),
    })
}

/// The shape of a released table: its row count and column names (no values).
pub fn table_shape(t: &Table) -> Value {
    json!({"rows": t.rows.len(), "columns": t.columns})
}

/// `base` with every field of `extra` added (both JSON objects; anything else is left as is).
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(x)) = (base.as_object_mut(), extra) {
        b.extend(x);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_sql_and_requester_or_the_plan_without_them() {
        let r = Requester {
            user: "ana".into(),
            organization: Some(prism_common::identity::OrgId::new("lab").expect("org")),
            query: Some("SELECT COUNT(*) FROM p".into()),
        };
        let plan = json!({"dataset": "p"});
        let a = asked(Some(&r), &plan);
        assert_eq!(a["query"], "SELECT COUNT(*) FROM p");
        assert_eq!(
            a["requested_by"],
            json!({"user": "ana", "organization": "lab"})
        );
        assert!(a.get("plan").is_none(), "{a}");
        let without = asked(None, &plan);
        assert_eq!(without["query"], Value::Null);
        assert_eq!(without["requested_by"], Value::Null);
        assert_eq!(without["plan"], plan);
        let shape = table_shape(&Table {
            columns: vec!["g".into(), "n".into()],
            rows: vec![vec![json!("x"), json!(1)]; 3],
        });
        assert_eq!(shape, json!({"rows": 3, "columns": ["g", "n"]}));
        assert_eq!(
            merged(json!({"a": 1}), json!({"b": 2})),
            json!({"a": 1, "b": 2})
        );
    }
}
