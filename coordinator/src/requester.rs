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

/// The requester of a run started by the user named `user`, with its SQL unless `with_sql`
/// is false.
pub fn of_run(user: &str, query: &QueryRecord, run: &RunRecord, with_sql: bool) -> Requester {
    Requester {
        user: user.to_string(),
        organization: run.organization.clone(),
        query: with_sql.then(|| query.sql.clone()),
    }
}

/// The requester of a data room: its creator (the manifest carries the SQL).
pub fn of_room(state: &CoordState, room: &crate::model::Room) -> Requester {
    // One lookup; the creator's id stands in when the user is gone or the store fails.
    let (user, organization) = match user(state, &room.created_by) {
        Some(u) => (u.name, u.organization),
        None => (room.created_by.clone(), None),
    };
    Requester {
        user,
        organization,
        query: Some(room.query_text.clone()),
    }
}
