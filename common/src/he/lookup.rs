//! The lookup path: a single comparison (or `BETWEEN`) on the only filter column, when the
//! column's code domain is small.
//!
//! Then the whole filtered aggregate is a function of the encrypted constant alone: for
//! `col op c` it is `T(c) = Σ_{v op c} s_v`, a table the node computes in the clear over every
//! code `c` can take, and evaluates at the encrypted constant with one TFHE-rs `match_value`
//! (shared block comparisons, one selector per code, one-hot aggregation). That replaces one
//! comparison per distinct value and a dot product, and is chosen only when the cost estimate
//! below says it is cheaper. `BETWEEN lo AND hi` is `P≤(hi) − P<(lo)`, or 0 when `lo > hi`.

use tfhe::MatchValues;

use super::cipher::EncUint;
use super::groups::Prepared;
use super::shape::{Atom, HeQuery, HeValue};
use super::{HeError, OpCounts};
use crate::plan::CmpOp;

/// Largest code domain the lookup path considers.
const MAX_DOMAIN: u64 = 4096;

/// Which lookup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    /// `col op c`.
    Compare(CmpOp),
    /// `col BETWEEN lo AND hi`.
    Between,
}

/// Rough costs in programmable bootstraps; only their comparison matters.
fn compare_cost(d: u64, constants: u64, one_hot: bool, blocks: &[u64]) -> u64 {
    let dots: u64 = blocks
        .iter()
        .map(|nb| {
            let products = d.div_ceil(2) * nb.div_ceil(4);
            let sum = if one_hot {
                *nb
            } else {
                d.div_ceil(2) * nb * 3 / 5
            };
            products + sum
        })
        .sum();
    constants * d * 5 + (constants - 1) * d + dots
}

fn lookup_cost(domain: u64, constants: u64, blocks: &[u64]) -> u64 {
    // Selectors once per lookup (cells share it), products and aggregation per block.
    let total: u64 = blocks.iter().sum();
    constants * (domain + domain / 4 + domain.div_ceil(2) * total.div_ceil(4))
        + (constants - 1) * total * 3
}

/// Whether the lookup path applies to this query and is cheaper than comparisons.
pub(super) fn plan(query: &HeQuery, prep: &Prepared, one_hot: bool) -> Option<Kind> {
    let kind = applies(query, prep)?;
    let domain = query.filter.first()?.encoding.max_code() + 1;
    let d = prep.distinct.first()?.len() as u64;
    let constants = if kind == Kind::Between { 2 } else { 1 };
    let blocks: Vec<u64> = prep.cells.iter().map(|c| u64::from(c.bits / 2)).collect();
    (lookup_cost(domain, constants, &blocks) < compare_cost(d, constants, one_hot, &blocks))
        .then_some(kind)
}

/// Whether the lookup path can evaluate this query at all.
pub(super) fn applies(query: &HeQuery, prep: &Prepared) -> Option<Kind> {
    let [f] = query.filter.as_slice() else {
        return None;
    };
    let kind = match f.atoms.as_slice() {
        [Atom::Compare { op }] => Kind::Compare(*op),
        [Atom::Between { negated: false }] => Kind::Between,
        _ => return None,
    };
    let linear = prep.cells.iter().all(|c| {
        matches!(
            c.value,
            HeValue::CountRows | HeValue::CountNonNull { .. } | HeValue::Sum { .. }
        )
    });
    let domain = f.encoding.max_code().checked_add(1)?;
    (linear && domain <= MAX_DOMAIN).then_some(kind)
}

fn keeps(op: CmpOp) -> fn(u64, u64) -> bool {
    match op {
        CmpOp::Eq => |v, u| v == u,
        CmpOp::NotEq => |v, u| v != u,
        CmpOp::Lt => |v, u| v < u,
        CmpOp::LtEq => |v, u| v <= u,
        CmpOp::Gt => |v, u| v > u,
        CmpOp::GtEq => |v, u| v >= u,
    }
}

/// Cells packed side by side into one lookup output of at most 64 bits: `(cell, bit offset)`.
fn packs(bits: &[u32]) -> Vec<Vec<(usize, u32)>> {
    let mut out: Vec<Vec<(usize, u32)>> = Vec::new();
    let mut used = 64;
    for (i, b) in bits.iter().enumerate() {
        if used + b > 64 {
            out.push(Vec::new());
            used = 0;
        }
        if let Some(p) = out.last_mut() {
            p.push((i, used));
        }
        used += b;
    }
    out
}

/// Evaluates every cell by lookups (all cells are counts or sums). Cells share a lookup (and
/// its selectors) by packing their tables side by side; the one-hot aggregation has no carries,
/// so each cell's blocks come out unchanged.
///
/// With `noise` (one addend per cell, dp release mode) and a single lookup (`Kind::Compare`),
/// each cell's noise is folded into its table: every entry `t` becomes `t + z` modulo the cell's
/// width, so the lookup returns `value + z` whatever the index, at no encrypted cost. Returns
/// whether it did (otherwise the caller adds the noise to the results).
pub(super) fn evaluate(
    query: &HeQuery,
    prep: &Prepared,
    constants: &[EncUint],
    kind: Kind,
    noise: Option<&[i64]>,
    ops: &mut OpCounts,
) -> Result<(Vec<Option<EncUint>>, bool), HeError> {
    let fold = match (kind, noise) {
        (Kind::Compare(_), Some(z)) if z.len() == prep.cells.len() => Some(z),
        _ => None,
    };
    let domain = query
        .filter
        .first()
        .map(|f| f.encoding.max_code() + 1)
        .ok_or_else(|| HeError::Mismatch("no filter column".into()))?;
    let codes = prep
        .distinct
        .first()
        .ok_or_else(|| HeError::Mismatch("no filter column".into()))?;
    // Per cell, per distinct code, the cell's clear value (one group per code).
    let values: Vec<Vec<(u64, u64)>> = (0..prep.cells.len())
        .map(|i| {
            prep.groups
                .iter()
                .filter_map(|g| Some((*codes.get(*g.key.first()? as usize)?, g.cells[i]?)))
                .collect()
        })
        .collect();
    let bits: Vec<u32> = prep.cells.iter().map(|c| c.bits).collect();
    let mut results: Vec<Option<EncUint>> = vec![None; prep.cells.len()];
    for pack in packs(&bits) {
        let width = pack.last().map_or(0, |(i, off)| off + bits[*i]);
        let out_bits = super::cipher::width_for(width).max(8);
        let lookup = |c: &EncUint, op: CmpOp, ops: &mut OpCounts| {
            let mut entries = vec![0u64; domain as usize];
            for (i, off) in &pack {
                let keep = keeps(op);
                let z = fold.map_or(0, |z| z[*i] as u64);
                let mask = u64::MAX >> (64 - bits[*i]);
                for (u, e) in entries.iter_mut().enumerate() {
                    let t = values[*i]
                        .iter()
                        .filter(|(v, _)| keep(*v, u as u64))
                        .fold(0u64, |acc, (_, s)| acc.wrapping_add(*s));
                    *e |= (t.wrapping_add(z) & mask) << off;
                }
            }
            let table = MatchValues::new(
                entries
                    .into_iter()
                    .enumerate()
                    .map(|(u, e)| (u as u64, e))
                    .collect(),
            )
            .map_err(|e| HeError::Tfhe(e.to_string()))?;
            super::control::check()?;
            ops.table_lookups += 1;
            split(c.lookup(&table, out_bits)?, &pack, &bits)
        };
        let cells = match kind {
            Kind::Compare(op) => lookup(constants.first().ok_or_else(too_few)?, op, ops)?,
            Kind::Between => {
                let [lo, hi] = constants else {
                    return Err(too_few());
                };
                let upto = lookup(hi, CmpOp::LtEq, ops)?;
                let below = lookup(lo, CmpOp::Lt, ops)?;
                ops.arithmetic += upto.len() as u64;
                upto.iter()
                    .zip(&below)
                    .map(|(a, b)| a.sub_or_zero(b))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        for ((i, _), c) in pack.iter().zip(cells) {
            results[*i] = Some(c);
        }
    }
    Ok((results, fold.is_some()))
}

/// Splits a packed lookup result into its cells.
fn split(packed: EncUint, pack: &[(usize, u32)], bits: &[u32]) -> Result<Vec<EncUint>, HeError> {
    let (blocks, tag) = packed.into_blocks();
    pack.iter()
        .map(|(i, off)| {
            let (from, to) = ((off / 2) as usize, ((off + bits[*i]) / 2) as usize);
            let part = blocks
                .get(from..to)
                .ok_or_else(|| HeError::Tfhe("lookup result too narrow".into()))?;
            EncUint::from_blocks(bits[*i], part.to_vec(), tag.clone())
        })
        .collect()
}

fn too_few() -> HeError {
    HeError::Mismatch("too few constants".into())
}
