//! The key holder's steps around a node's evaluation: encrypting the filter constants, and
//! decrypting the result list into the answer table (offsets added back, weights applied, AVG
//! divided, NULL for an aggregate over no value).

use super::cipher::{EncUint, constant_bits, encrypt_constant, read_compact_results, read_results};
use super::encode::Encoded;
use super::keys::{KeySet, ServerKeyGuard};
use super::shape::HeValue;
use super::{HeError, ResultCell};
use crate::plan::{AggFunc, Plan, Table};

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

/// Decrypts and builds the answer.
pub fn answer(
    keys: &KeySet,
    plan: &Plan,
    encoded: &Encoded,
    blob: &[u8],
    cells: &[ResultCell],
) -> Result<Table, HeError> {
    check_layout(encoded, cells)?;
    let clear = decrypt_results(keys, blob, cells, encoded.query.has_constants())?;
    finalize(plan, cells, &clear)
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

/// Builds the answer table from the decrypted values of the node's cells.
pub fn finalize(plan: &Plan, cells: &[ResultCell], clear: &[u64]) -> Result<Table, HeError> {
    let get = |v: &HeValue| -> Result<(u64, i64), HeError> {
        cells
            .iter()
            .zip(clear)
            .find(|(c, _)| &c.value == v)
            .map(|(c, x)| (*x, c.offset))
            .ok_or_else(|| HeError::Mismatch(format!("the result has no {v:?}")))
    };
    let mut row = Vec::new();
    for a in plan.aggregates() {
        let Some(col) = &a.column else {
            row.push(serde_json::json!(get(&HeValue::CountRows)?.0));
            continue;
        };
        let column = col.clone();
        let (count, _) = get(&HeValue::CountNonNull {
            column: column.clone(),
        })?;
        let total = |v: HeValue| -> Result<i128, HeError> {
            let (x, offset) = get(&v)?;
            Ok(i128::from(x) + i128::from(offset) * i128::from(count))
        };
        let shifted = |v: HeValue| -> Result<i128, HeError> {
            let (x, offset) = get(&v)?;
            Ok(i128::from(x) + i128::from(offset))
        };
        let value = match a.func {
            AggFunc::Count => serde_json::json!(count),
            _ if count == 0 => serde_json::Value::Null,
            AggFunc::Sum => {
                number(total(HeValue::Sum { column })? * i128::from(a.weight.unwrap_or(1)))
            }
            AggFunc::Avg => {
                serde_json::json!(total(HeValue::Sum { column })? as f64 / count as f64)
            }
            AggFunc::Min => number(shifted(HeValue::Min { column })?),
            AggFunc::Max => number(shifted(HeValue::Max { column })?),
        };
        row.push(value);
    }
    Ok(Table {
        columns: plan.column_names(),
        rows: vec![row],
    })
}

/// An exact integer as JSON (an i64 when it fits, else a float).
fn number(x: i128) -> serde_json::Value {
    match i64::try_from(x) {
        Ok(i) => serde_json::json!(i),
        Err(_) => serde_json::json!(x as f64),
    }
}
