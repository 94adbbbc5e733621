//! The key set ready before the first query: generated (or loaded) when the coordinator starts,
//! and installed on every node that serves `he_backend` as it connects, in the background
//! (`he_keys_at_start`, on by default). A node says in its `Hello` which key sets it already
//! holds, so a reconnect costs no transfer. One install per organization at a time: a query that
//! arrives while its node's install is under way waits for that install instead of sending the
//! keys again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_common::he::keys::KeySet;
use prism_common::identity::OrgId;
use tracing::{info, warn};

use super::exchange::{self, ExchangeError, Transfer};
use crate::CoordState;

/// Which organizations hold the key set, and one install lock per organization.
#[derive(Default)]
pub struct Installs {
    held: Mutex<HashSet<OrgId>>,
    locks: Mutex<HashMap<OrgId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Installs {
    fn lock_of(&self, org: &OrgId) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut l) => l.entry(org.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    fn holds(&self, org: &OrgId) -> bool {
        self.held.lock().is_ok_and(|h| h.contains(org))
    }

    fn set(&self, org: &OrgId, holds: bool) {
        if let Ok(mut h) = self.held.lock() {
            if holds {
                h.insert(org.clone());
            } else {
                h.remove(org);
            }
        }
    }

    /// The node of `org` lacks the key set after all (it answered `unknown_key_id`).
    pub fn forget(&self, org: &OrgId) {
        self.set(org, false);
    }
}

/// Installs `keys` on `org`'s node unless it holds them, waiting for an install already under
/// way; the transfer when this call made one.
pub async fn ensure_installed(
    state: &CoordState,
    org: &OrgId,
    keys: &KeySet,
    timeout: Duration,
) -> Result<Option<Transfer>, ExchangeError> {
    let lock = state.he_installs.lock_of(org);
    let _one_at_a_time = lock.lock().await;
    if state.he_installs.holds(org) {
        return Ok(None);
    }
    let t = exchange::install(state, org, keys, timeout).await?;
    state.he_installs.set(org, true);
    Ok(Some(t))
}

/// Waits for an install to `org`'s node under way, if any.
pub async fn wait_for_install(state: &CoordState, org: &OrgId) {
    let lock = state.he_installs.lock_of(org);
    drop(lock.lock().await);
}

/// A node connected: record whether it holds the key set, and install it in the background if
/// it serves HE and does not.
pub async fn on_connected(state: Arc<CoordState>, org: OrgId) {
    let Some(held) = state.nodes.info(&org).and_then(|i| i.he_keys) else {
        return; // no HE on this node
    };
    let Some(keys) = state.he_keys.ready().await else {
        return; // installed once the start-up generation is done
    };
    state
        .he_installs
        .set(&org, held.iter().any(|k| *k == keys.key_id));
    install_in_background(&state, &org, &keys).await;
}

async fn install_in_background(state: &CoordState, org: &OrgId, keys: &KeySet) {
    let timeout = Duration::from_secs(state.config.run_timeout_secs);
    match ensure_installed(state, org, keys, timeout).await {
        Ok(Some(t)) => info!(
            %org,
            key_id = %keys.key_id,
            transfer_ms = t.transfer_ms,
            node_setup_ms = t.node_setup_ms,
            "HE key set installed ahead of the first query"
        ),
        Ok(None) => {}
        Err(e) => {
            warn!(%org, error = %e, "installing the HE key set ahead of queries failed; the first query will retry")
        }
    }
}

/// At start: the key set from the store or freshly generated, then installed on the HE nodes
/// already connected (those connecting later get it from [`on_connected`]).
pub async fn at_start(state: Arc<CoordState>) {
    let keys = match super::keys::key_set(&state).await {
        Ok(h) => h.keys,
        Err(e) => {
            warn!(error = %e, "preparing the HE key set at start failed; the first HE query will try again");
            return;
        }
    };
    for org in state.nodes.members() {
        let Some(held) = state.nodes.info(&org).and_then(|i| i.he_keys) else {
            continue;
        };
        if state.shutdown.is_cancelled() {
            return;
        }
        state
            .he_installs
            .set(&org, held.iter().any(|k| *k == keys.key_id));
        install_in_background(&state, &org, &keys).await;
    }
}
