//! The coordinator as HE key holder: one TFHE key set, generated on first use and kept in the
//! coordinator's store (client key included), so a restart keeps the key id and nodes keep
//! their cached copies. The client key never leaves this process and its store.

use std::sync::Arc;
use std::time::Instant;

use prism_common::he::HeError;
use prism_common::he::keys::{KeySet, StoredKeySet};
use tracing::info;

use crate::CoordState;

/// Errors of the key holder.
#[derive(Debug, thiserror::Error)]
pub enum KeyHolderError {
    /// The store failed.
    #[error("he key holder store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The stored key set is unreadable.
    #[error(transparent)]
    Keys(#[from] HeError),
    /// The key-generation worker failed.
    #[error("he key worker failed: {0}")]
    Worker(String),
}

/// The key set, and what obtaining it cost this run.
#[derive(Clone)]
pub struct Held {
    /// The key set.
    pub keys: Arc<KeySet>,
    /// Key generation time, when this call generated it.
    pub generated_ms: Option<f64>,
    /// Load time, when this call read it back from the store.
    pub loaded_ms: Option<f64>,
}

/// The key holder's key set once loaded or generated; the lock makes concurrent first runs
/// wait for one generation.
#[derive(Default)]
pub struct KeySlot(tokio::sync::Mutex<Option<Arc<KeySet>>>);

impl KeySlot {
    /// The key set if it is loaded or generated already (waits for a generation under way).
    pub async fn ready(&self) -> Option<Arc<KeySet>> {
        self.0.lock().await.clone()
    }
}

/// The key holder's key set: in memory, else from the store, else freshly generated and stored.
/// Concurrent first runs wait for one generation.
pub async fn key_set(state: &Arc<CoordState>) -> Result<Held, KeyHolderError> {
    let mut guard = state.he_keys.0.lock().await;
    if let Some(keys) = guard.as_ref() {
        return Ok(Held {
            keys: keys.clone(),
            generated_ms: None,
            loaded_ms: None,
        });
    }
    let store = state.store.clone();
    let started = Instant::now();
    let (keys, generated) = tokio::task::spawn_blocking(move || {
        if let Some((_, bytes)) = store.he_key_set()? {
            let stored = StoredKeySet::from_bytes(&bytes)?;
            return Ok::<_, KeyHolderError>((KeySet::from_stored(&stored)?, false));
        }
        let keys = KeySet::generate()?;
        let record = keys.to_stored()?.to_bytes();
        store.put_he_key_set(&keys.key_id, &record)?;
        Ok((keys, true))
    })
    .await
    .map_err(|e| KeyHolderError::Worker(e.to_string()))??;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let keys = Arc::new(keys);
    *guard = Some(keys.clone());
    info!(key_id = %keys.key_id, generated, elapsed_ms = elapsed, "HE key set ready");
    Ok(Held {
        keys,
        generated_ms: generated.then_some(elapsed),
        loaded_ms: (!generated).then_some(elapsed),
    })
}
