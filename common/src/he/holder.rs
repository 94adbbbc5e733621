//! The key holder's steps around a node's evaluation: encrypting the filter constants, and
//! decrypting the result list into the answer table (offsets added back, weights applied, AVG
//! divided, NULL for an aggregate over no value).

use super::cipher::{EncUint, constant_bits, encrypt_constant, read_compact_results, read_results};
use super::encode::Encoded;
use super::keys::{KeySet, ServerKeyGuard};
use super::release::{self, Answer, HeRelease, decode_cells};
use super::{HeError, ResultCell};
use crate::plan::{Plan, Table};

/// One blob per constant, in the order the shape announces.
pub fn encrypt_constants(keys: &KeySet, encoded: &Encoded) -> Result<Vec<Vec<u8>>, HeError> {
    let bits = encoded.query.constant_bits();
    if bits.len() != encoded.codes.len() {
        return Err(HeError::Mismatch(
            "constant codes do not match the shape".into(),
        ));
    }
    bits.iter()
        .zip(&encoded.codes)
        .map(|(b, code)| encrypt_constant(&keys.client_key, *b, *code))
        .collect()
}

/// Checks a node's result layout against the shape it was sent.
pub fn check_layout(encoded: &Encoded, cells: &[ResultCell]) -> Result<(), HeError> {
    let values: Vec<_> = cells.iter().map(|c| &c.value).collect();
    let expected: Vec<_> = encoded.query.values.iter().collect();
    if values != expected {
        return Err(HeError::Mismatch(format!(
            "the node returned {values:?}, not the {expected:?} asked for"
        )));
    }
    if let Some(c) = cells
        .iter()
        .find(|c| ![8, 10, 12, 14, 16, 32, 64].contains(&c.bits))
    {
        return Err(HeError::Mismatch(format!("a {}-bit result", c.bits)));
    }
    Ok(())
}

/// Decrypts a result list (on a blocking thread: decompression bootstraps every block). A
/// `homomorphic` result is a compressed list; otherwise (no encrypted constant, nothing was
/// evaluated) it is a compact list encrypted under the public key.
pub fn decrypt_results(
    keys: &KeySet,
    blob: &[u8],
    cells: &[ResultCell],
    homomorphic: bool,
) -> Result<Vec<u64>, HeError> {
    let _key = ServerKeyGuard::set(&keys.server_key);
    let bits: Vec<u32> = cells.iter().map(|c| c.bits).collect();
    let values: Vec<EncUint> = if homomorphic {
        read_results(blob, &bits)?
    } else {
        read_compact_results(blob, &bits)?
    };
    Ok(values.iter().map(|v| v.decrypt(&keys.client_key)).collect())
}

/// Decrypts and builds the answer under the node's release.
pub fn answer(
    keys: &KeySet,
    plan: &Plan,
    encoded: &Encoded,
    blob: &[u8],
    cells: &[ResultCell],
    release: Option<&HeRelease>,
) -> Result<Answer, HeError> {
    check_layout(encoded, cells)?;
    if let Some(r) = release
        && r.gate >= cells.len()
    {
        return Err(HeError::Mismatch(format!(
            "gate cell {} of {}",
            r.gate,
            cells.len()
        )));
    }
    let clear = decrypt_results(keys, blob, cells, encoded.query.has_constants())?;
    let values = decode_cells(cells, &clear);
    release::finalize(plan, cells, &values, release)
}

/// The ciphertext width each constant travels in (for the proof).
pub fn constant_widths(encoded: &Encoded) -> Vec<u32> {
    encoded
        .query
        .constant_bits()
        .into_iter()
        .map(|b| constant_bits(b).unwrap_or(b))
        .collect()
}

/// Builds the answer table from the decrypted values of the node's cells (no release step).
pub fn finalize(plan: &Plan, cells: &[ResultCell], clear: &[u64]) -> Result<Table, HeError> {
    let values = decode_cells(cells, clear);
    Ok(release::finalize(plan, cells, &values, None)?.table)
}
