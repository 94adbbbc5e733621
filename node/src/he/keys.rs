//! The node's cache of HE key sets, by key id: in memory (decompressed, ready to compute) and
//! in the node's redb file (the blobs as received), so the ~60 MB transfer and the seconds of
//! key set-up happen once per key set, not per query, and survive a restart.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prism_common::he::keys::NodeKeys;
use prism_common::he::{HeError, MAX_PUBLIC_KEY_BYTES, MAX_SERVER_KEY_BYTES};
use prism_common::wire;
use prism_common::wire::HeResponse;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tracing::info;

use crate::NodeState;

/// key id → the two blobs (public key, compressed server key), each length-prefixed.
const HE_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("he_keys");

/// Key sets kept decompressed per node (a server key takes a few hundred MiB in memory).
const IN_MEMORY: usize = 2;

/// Errors of the key cache.
#[derive(Debug, thiserror::Error)]
pub enum KeyCacheError {
    /// The node's store failed.
    #[error("he key store: {0}")]
    Store(#[from] redb::Error),
    /// A stored record does not parse.
    #[error("he key store: record {0} is corrupt")]
    Corrupt(String),
    /// The blobs are not a valid key set.
    #[error(transparent)]
    Keys(#[from] HeError),
    /// A blob could not be read from the stream.
    #[error("reading the {what} blob: {error}")]
    Wire {
        /// Which blob.
        what: &'static str,
        /// The framing error.
        error: wire::WireError,
    },
    /// A worker thread failed.
    #[error("he key worker failed: {0}")]
    Worker(String),
}

prism_common::from_redb_errors!(KeyCacheError, KeyCacheError::Store);

/// The key sets this node keeps decompressed in memory, newest first (at most
/// [`IN_MEMORY`]); the redb table keeps every one received.
#[derive(Default)]
pub struct KeyCache(Mutex<Vec<NodeKeys>>);

fn remember(state: &NodeState, keys: NodeKeys) {
    if let Ok(mut list) = state.he_keys.0.lock() {
        list.retain(|k| k.key_id != keys.key_id);
        list.insert(0, keys);
        list.truncate(IN_MEMORY);
    }
}

fn cached(state: &NodeState, key_id: &str) -> Option<NodeKeys> {
    let list = state.he_keys.0.lock().ok()?;
    list.iter().find(|k| k.key_id == key_id).cloned()
}

fn encode(public_key: &[u8], server_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(public_key.len() + server_key.len() + 16);
    for b in [public_key, server_key] {
        out.extend_from_slice(&(b.len() as u64).to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

fn decode(key_id: &str, record: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyCacheError> {
    let corrupt = || KeyCacheError::Corrupt(key_id.to_string());
    let mut rest = record;
    let mut next = || -> Result<Vec<u8>, KeyCacheError> {
        let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| corrupt())?;
        if tail.len() < len {
            return Err(corrupt());
        }
        let (field, tail) = tail.split_at(len);
        rest = tail;
        Ok(field.to_vec())
    };
    Ok((next()?, next()?))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeyCacheError> + Send + 'static,
) -> Result<T, KeyCacheError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KeyCacheError::Worker(e.to_string()))?
}

/// What the node tells the coordinator in its `Hello`: when it serves `he_backend`, the ids of
/// the key sets it holds (so the coordinator installs its key set only where it is missing).
pub async fn held_for_hello(state: &Arc<NodeState>) -> Option<Vec<String>> {
    if !state
        .config
        .policy
        .backends
        .contains(&prism_common::backend::BackendId::HeBackend)
    {
        return None;
    }
    let store = state.store.clone();
    let ids = blocking(move || {
        let txn = store.db().begin_read()?;
        let table = match txn.open_table(HE_KEYS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut ids = Vec::new();
        for row in table.iter()? {
            ids.push(row?.0.value().to_string());
        }
        Ok(ids)
    })
    .await;
    Some(ids.unwrap_or_default())
}

/// The key set `key_id`, from memory or the store; `None` when this node never received it.
/// Also returns how long loading took (0 when it was in memory).
pub async fn get(
    state: &Arc<NodeState>,
    key_id: &str,
) -> Result<Option<(NodeKeys, f64)>, KeyCacheError> {
    if let Some(k) = cached(state, key_id) {
        return Ok(Some((k, 0.0)));
    }
    let started = Instant::now();
    let store = state.store.clone();
    let id = key_id.to_string();
    let loaded = blocking(move || {
        let txn = store.db().begin_read()?;
        let table = match txn.open_table(HE_KEYS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(record) = table.get(id.as_str())? else {
            return Ok(None);
        };
        let (pk, sk) = decode(&id, record.value())?;
        Ok(Some(NodeKeys::from_blobs(&id, &pk, &sk)?))
    })
    .await?;
    Ok(loaded.map(|k| {
        remember(state, k.clone());
        info!(key_id, "loaded an HE key set from the store");
        (k, started.elapsed().as_secs_f64() * 1000.0)
    }))
}

/// Reads the two key blobs that follow an `InstallKeys` frame, checks them (sizes, key id,
/// parameters), decompresses the server key, stores the blobs and caches the keys.
pub async fn install(
    state: &Arc<NodeState>,
    key_id: &str,
    recv: &mut quinn::RecvStream,
    record: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<HeResponse, KeyCacheError> {
    let started = Instant::now();
    let public_key = wire::read_bytes(recv, MAX_PUBLIC_KEY_BYTES)
        .await
        .map_err(|error| KeyCacheError::Wire {
            what: "public key",
            error,
        })?;
    record(&public_key);
    let server_key = wire::read_bytes(recv, MAX_SERVER_KEY_BYTES)
        .await
        .map_err(|error| KeyCacheError::Wire {
            what: "server key",
            error,
        })?;
    record(&server_key);
    let id = key_id.to_string();
    let store = state.store.clone();
    let keys = blocking(move || {
        let keys = NodeKeys::from_blobs(&id, &public_key, &server_key)?;
        let txn = store.db().begin_write()?;
        txn.open_table(HE_KEYS)?
            .insert(id.as_str(), encode(&public_key, &server_key).as_slice())?;
        txn.commit()?;
        Ok(keys)
    })
    .await?;
    remember(state, keys);
    let setup_ms = started.elapsed().as_secs_f64() * 1000.0;
    info!(key_id, setup_ms, "installed an HE key set");
    Ok(HeResponse::KeysInstalled {
        key_id: key_id.to_string(),
        setup_ms,
    })
}

impl KeyCacheError {
    /// The refusal code sent back to the coordinator.
    pub fn code(&self) -> &'static str {
        match self {
            KeyCacheError::Keys(e) => e.code(),
            KeyCacheError::Wire { .. } => "he_malformed_blob",
            KeyCacheError::Store(_) | KeyCacheError::Corrupt(_) => "node_store_error",
            KeyCacheError::Worker(_) => "node_internal_error",
        }
    }
}
