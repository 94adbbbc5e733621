//! Users and their API tokens: listing and revocation, shared by the admin API and the
//! `prism-coordinator users` CLI.
//!
//! A user record is stored under the SHA-256 of its token (see [`crate::store::Store::create_user`]),
//! so revoking a user removes that record: the token then authenticates no one.

use crate::model::User;
use crate::store::{Audit, Store, StoreError, USERS};

/// Every user, oldest first.
pub fn list(store: &Store) -> Result<Vec<User>, StoreError> {
    let mut users: Vec<User> = store.list(USERS)?;
    users.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)));
    Ok(users)
}

/// Revokes the user with id `id` (its token stops working at once), audited as
/// `user_revoked` by `actor`. `None` when there is no such user.
pub fn revoke(store: &Store, id: &str, actor: &str) -> Result<Option<User>, StoreError> {
    let found = store.keyed(USERS)?.into_iter().find(|(_, u)| u.id == id);
    let Some((key, user)) = found else {
        return Ok(None);
    };
    let removed = store.remove(
        USERS,
        &key,
        Audit {
            actor,
            action: "user_revoked",
            target: &user.id,
            details: serde_json::json!({"name": user.name, "role": user.role}),
        },
    )?;
    Ok(removed.then_some(user))
}

/// Users as a plain-text table for the CLI.
pub fn table(users: &[User]) -> String {
    let rows: Vec<[String; 5]> = users
        .iter()
        .map(|u| {
            [
                u.id.clone(),
                u.name.clone(),
                format!("{:?}", u.role).to_lowercase(),
                u.organization
                    .as_ref()
                    .map_or("-".to_string(), |o| o.to_string()),
                u.created_at.clone(),
            ]
        })
        .collect();
    prism_common::text::table(&["ID", "NAME", "ROLE", "ORGANIZATION", "CREATED"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    #[test]
    fn a_revoked_token_authenticates_no_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = Store::open(&dir.path().join("c.redb")).expect("store");
        let (alice, alice_token) = store
            .create_user("alice", Role::Analyst, None)
            .expect("alice");
        let (_bob, bob_token) = store.create_user("bob", Role::Admin, None).expect("bob");
        assert_eq!(list(&store).expect("list").len(), 2);
        assert_eq!(
            revoke(&store, &alice.id, "bob").expect("revoke"),
            Some(alice.clone())
        );
        assert_eq!(store.user_by_token(&alice_token).expect("lookup"), None);
        assert!(store.user_by_token(&bob_token).expect("lookup").is_some());
        assert_eq!(revoke(&store, &alice.id, "bob").expect("again"), None);
        let shown = table(&list(&store).expect("list"));
        assert!(shown.contains("bob") && !shown.contains("alice"), "{shown}");
    }
}
