//! Who asked for a release, as the coordinator tells the holding node.
//!
//! The node records it in its audit log next to what it charged, so its data owner sees which
//! query of which user and organization spent the budget. The node checks nothing on it.
//! HE requests carry no SQL: its constants are what the encryption keeps from the node.

use prism_common::wire::Requester;

use crate::CoordState;
use crate::model::{QueryRecord, RunRecord, User};
use crate::store::USERS;

/// A user by id (users are keyed by token hash, so this scans; there are few).
fn user(state: &CoordState, user_id: &str) -> Option<User> {
    state
        .store
        .list::<User>(USERS)
        .ok()?
        .into_iter()
        .find(|u| u.id == user_id)
}

/// A user's display name by id (the id itself when the user is gone or the store fails).
fn name(state: &CoordState, user_id: &str) -> String {
    user(state, user_id).map_or_else(|| user_id.to_string(), |u| u.name)
}

/// The requester of a run, with its SQL unless `with_sql` is false.
pub fn of_run(
    state: &CoordState,
    query: &QueryRecord,
    run: &RunRecord,
    with_sql: bool,
) -> Requester {
    Requester {
        user: name(state, &run.created_by),
        organization: run.organization.clone(),
        query: with_sql.then(|| query.sql.clone()),
    }
}

/// The requester of a data room: its creator (the manifest carries the SQL).
pub fn of_room(state: &CoordState, room: &crate::model::Room) -> Requester {
    let creator = user(state, &room.created_by);
    Requester {
        user: name(state, &room.created_by),
        organization: creator.and_then(|u| u.organization),
        query: Some(room.query_text.clone()),
    }
}
