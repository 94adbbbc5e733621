//! TFHE parameters, key generation, and (de)serialisation of keys with size and conformance
//! checks.
//!
//! One parameter set for the whole federation: TFHE-rs's default 2-bit-message / 2-bit-carry
//! KS-PBS blocks with TUniform noise (128-bit security, failure probability ≤ 2^-128), a
//! dedicated compact public-key encryption set (a node encrypts clear results and
//! re-randomisers under it), and list compression (results travel as a compressed list).
//! Everything a node receives is read with `safe_deserialize_conformant` against exactly these
//! parameters, so a key or ciphertext for other parameters is refused before it is used.

use sha2::{Digest, Sha256};
use tfhe::safe_serialization::{safe_deserialize, safe_deserialize_conformant, safe_serialize};
use tfhe::shortint::parameters::{
    COMP_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
    PARAM_KEYSWITCH_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
    PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
    PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
};
use tfhe::{ClientKey, CompactPublicKey, CompressedServerKey, Config, ConfigBuilder, ServerKey};

use super::{HeError, MAX_PUBLIC_KEY_BYTES, MAX_SERVER_KEY_BYTES};

/// Largest object we serialise (a compressed server key is tens of MiB).
const SERIALIZE_LIMIT: u64 = 1 << 30;
/// Largest client key we read back from the key holder's own store.
const MAX_CLIENT_KEY_BYTES: u64 = 64 << 20;

/// The federation's TFHE configuration.
pub fn config() -> Config {
    ConfigBuilder::with_custom_parameters(PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128)
        .use_dedicated_compact_public_key_parameters((
            PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
            PARAM_KEYSWITCH_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
        ))
        .enable_compression(COMP_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128)
        .build()
}

/// The scheme and parameters, as a run's proof names them.
pub fn describe() -> serde_json::Value {
    serde_json::json!({
        "scheme": "TFHE (TFHE-rs 1.8, high-level integer API, radix of 2-bit blocks)",
        "compute": "PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128",
        "public_key_encryption": "PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128",
        "public_key_keyswitch": "PARAM_KEYSWITCH_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128",
        "compression": "COMP_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128",
        "security": "128-bit (TUniform noise), bootstrapping failure probability ≤ 2^-128",
    })
}

/// Serialises a TFHE object with `safe_serialize` (versioned, size-limited).
pub fn serialize<T>(x: &T) -> Result<Vec<u8>, HeError>
where
    T: serde::Serialize + tfhe::Versionize + tfhe::named::Named,
{
    let mut out = Vec::new();
    safe_serialize(x, &mut out, SERIALIZE_LIMIT).map_err(|e| HeError::Tfhe(e.to_string()))?;
    Ok(out)
}

/// A key id: a digest of the public and server key blobs, so a node can check what it got.
pub fn key_id(public_key: &[u8], server_key: &[u8]) -> String {
    let mut h = Sha256::new();
    for b in [public_key, server_key] {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    }
    format!("tfhe-{}", hex::encode(&h.finalize()[..16]))
}

/// The key holder's key set.
#[derive(Clone)]
pub struct KeySet {
    /// Key id ([`key_id`] of the two blobs).
    pub key_id: String,
    /// The secret key: never leaves the key holder.
    pub client_key: ClientKey,
    /// The server key, decompressed (the key holder needs its decompression key to read
    /// compressed result lists).
    pub server_key: ServerKey,
    /// Serialised compact public key, as sent to nodes.
    pub public_key_bytes: Vec<u8>,
    /// Serialised compressed server key, as sent to nodes.
    pub server_key_bytes: Vec<u8>,
}

impl KeySet {
    /// Generates a fresh key set (seconds: the server key dominates).
    pub fn generate() -> Result<KeySet, HeError> {
        let client_key = ClientKey::generate(config());
        Self::from_client_key(client_key)
    }

    /// Derives the public material of a client key (fresh server key randomness each time).
    pub fn from_client_key(client_key: ClientKey) -> Result<KeySet, HeError> {
        let compressed = CompressedServerKey::new(&client_key);
        let public_key =
            CompactPublicKey::try_new(&client_key).map_err(|e| HeError::Tfhe(e.to_string()))?;
        let public_key_bytes = serialize(&public_key)?;
        let server_key_bytes = serialize(&compressed)?;
        let server_key = compressed.decompress();
        Ok(KeySet {
            key_id: key_id(&public_key_bytes, &server_key_bytes),
            client_key,
            server_key,
            public_key_bytes,
            server_key_bytes,
        })
    }

    /// Rebuilds a key set from what [`KeySet::to_stored`] kept, checking the key id.
    pub fn from_stored(stored: &StoredKeySet) -> Result<KeySet, HeError> {
        let client_key: ClientKey =
            safe_deserialize(stored.client_key.as_slice(), MAX_CLIENT_KEY_BYTES)
                .map_err(|e| HeError::blob("stored client key", e))?;
        let compressed = read_server_key(&stored.server_key)?;
        let id = key_id(&stored.public_key, &stored.server_key);
        if id != stored.key_id {
            return Err(HeError::blob(
                "stored key set",
                format!("its blobs hash to {id}, not {}", stored.key_id),
            ));
        }
        Ok(KeySet {
            key_id: id,
            client_key,
            server_key: compressed.decompress(),
            public_key_bytes: stored.public_key.clone(),
            server_key_bytes: stored.server_key.clone(),
        })
    }

    /// What the key holder persists to keep its key id across restarts.
    pub fn to_stored(&self) -> Result<StoredKeySet, HeError> {
        Ok(StoredKeySet {
            key_id: self.key_id.clone(),
            client_key: serialize(&self.client_key)?,
            public_key: self.public_key_bytes.clone(),
            server_key: self.server_key_bytes.clone(),
        })
    }
}

/// A key set as the key holder stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKeySet {
    /// Key id.
    pub key_id: String,
    /// `safe_serialize`d client key.
    pub client_key: Vec<u8>,
    /// `safe_serialize`d compact public key.
    pub public_key: Vec<u8>,
    /// `safe_serialize`d compressed server key.
    pub server_key: Vec<u8>,
}

impl StoredKeySet {
    /// One blob: each field as a big-endian u64 length and its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let fields = [
            self.key_id.as_bytes(),
            &self.client_key,
            &self.public_key,
            &self.server_key,
        ];
        let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 8).sum());
        for f in fields {
            out.extend_from_slice(&(f.len() as u64).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    /// Parses [`StoredKeySet::to_bytes`].
    pub fn from_bytes(mut b: &[u8]) -> Result<Self, HeError> {
        let mut next = || -> Result<Vec<u8>, HeError> {
            let bad = || HeError::blob("stored key set", "truncated record");
            let (len, rest) = b.split_first_chunk::<8>().ok_or_else(bad)?;
            let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| bad())?;
            if rest.len() < len {
                return Err(bad());
            }
            let (field, rest) = rest.split_at(len);
            b = rest;
            Ok(field.to_vec())
        };
        let key_id = String::from_utf8(next()?)
            .map_err(|_| HeError::blob("stored key set", "key id is not utf-8"))?;
        Ok(StoredKeySet {
            key_id,
            client_key: next()?,
            public_key: next()?,
            server_key: next()?,
        })
    }
}

/// Reads a compact public key, refusing one that is too large or not of our parameters.
pub fn read_public_key(bytes: &[u8]) -> Result<CompactPublicKey, HeError> {
    let params = config()
        .public_key_encryption_parameters()
        .map_err(|e| HeError::Tfhe(e.to_string()))?;
    if bytes.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(HeError::blob("public key", "too large"));
    }
    safe_deserialize_conformant(bytes, MAX_PUBLIC_KEY_BYTES as u64, &params)
        .map_err(|e| HeError::blob("public key", e))
}

/// Reads a compressed server key, refusing one that is too large or not of our parameters.
pub fn read_server_key(bytes: &[u8]) -> Result<CompressedServerKey, HeError> {
    if bytes.len() > MAX_SERVER_KEY_BYTES {
        return Err(HeError::blob("server key", "too large"));
    }
    safe_deserialize_conformant::<CompressedServerKey>(
        bytes,
        MAX_SERVER_KEY_BYTES as u64,
        &config().into(),
    )
    .map_err(|e| HeError::blob("server key", e))
}

/// The key material a node computes with.
#[derive(Clone)]
pub struct NodeKeys {
    /// Key id.
    pub key_id: String,
    /// Decompressed server key (cheap to clone: reference-counted inside).
    pub server_key: ServerKey,
    /// Compact public key of the key holder.
    pub public_key: CompactPublicKey,
}

impl NodeKeys {
    /// Checks the blobs against the key id and our parameters, then decompresses the server key
    /// (seconds). Run it on a blocking thread.
    pub fn from_blobs(key_id: &str, public_key: &[u8], server_key: &[u8]) -> Result<Self, HeError> {
        let id = self::key_id(public_key, server_key);
        if id != key_id {
            return Err(HeError::blob(
                "key set",
                format!("the blobs hash to {id}, not to the announced key id {key_id}"),
            ));
        }
        let public_key = read_public_key(public_key)?;
        let compressed = read_server_key(server_key)?;
        Ok(NodeKeys {
            key_id: id,
            server_key: compressed.decompress(),
            public_key,
        })
    }
}

/// Sets a server key on the current thread for the guard's lifetime. TFHE-rs keeps its server
/// key thread-local: create the guard on the thread that computes (inside `spawn_blocking`),
/// never before an `.await`.
pub struct ServerKeyGuard(());

impl ServerKeyGuard {
    /// Sets `key` on this thread.
    pub fn set(key: &ServerKey) -> Self {
        tfhe::set_server_key(key.clone());
        ServerKeyGuard(())
    }
}

impl Drop for ServerKeyGuard {
    fn drop(&mut self) {
        tfhe::unset_server_key();
    }
}
