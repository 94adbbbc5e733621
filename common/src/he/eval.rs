//! The node's homomorphic evaluation of a pre-aggregated query.
//!
//! 1. For each filter column and each of its distinct values `v`, the column's predicates are
//!    evaluated against the encrypted constants: one encrypted boolean per distinct value.
//! 2. A group's selection bit is the AND of its columns' bits (no work with one column).
//! 3. Counts and sums are `Σ sel_g · clear_g`, one TFHE-rs dot product each (the cheaper one-hot
//!    dot product when an equality on the only filter column lets at most one group pass). A
//!    minimum (maximum) walks the groups by ascending (descending) clear minimum and keeps the
//!    first selected one as a one-hot vector, then takes its one-hot dot product with the minima.
//! 4. The results are compressed into one list. A result no group contributes to is a fresh
//!    public-key encryption of zero. (The high blocks of a dot product that no group's clear value
//!    reaches stay trivial zeros: they tell the key holder only a bound on the unfiltered total,
//!    which it may ask for anyway, and nothing reaches the node.)
//!
//! Without a filter there is nothing to evaluate: the exact result is encrypted under the
//! compact public key. Run all of it on a blocking thread; it sets the server key there itself.

use std::time::Instant;

use tfhe::{FheBool, ServerKey};

use super::cipher::{EncUint, compress, push_compact};
use super::groups::Prepared;
use super::keys::{NodeKeys, ServerKeyGuard};
use super::lookup;
use super::release::Post;
use super::shape::{Atom, HeQuery, HeValue};
use super::{HeError, OpCounts};
use crate::plan::CmpOp;

/// An encrypted answer, ready to send.
pub struct Evaluated {
    /// The serialised compressed result list.
    pub blob: Vec<u8>,
    /// Encrypted operations that ran.
    pub ops: OpCounts,
    /// Whether the predicate ran homomorphically.
    pub homomorphic: bool,
    /// Evaluation time (or public-key encryption time).
    pub evaluate_ms: f64,
    /// Compression and serialisation time.
    pub compress_ms: f64,
}

/// Stack of the evaluation threads (TFHE-rs needs more than the 2 MiB default).
const WORKER_STACK: usize = 8 << 20;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Which evaluation strategy: [`evaluate`] picks by estimated cost; tests and benchmarks may
/// force one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Path {
    /// The cheaper of the two.
    Auto,
    /// Predicate per distinct value, then dot products.
    PerValue,
    /// Table lookup at the encrypted constant, where it applies.
    Lookup,
}

/// Evaluates `query` over `prep` with the decrypted-never constants, under `keys`.
pub fn evaluate(
    query: &HeQuery,
    prep: &Prepared,
    constants: &[EncUint],
    keys: &NodeKeys,
) -> Result<Evaluated, HeError> {
    evaluate_path(query, prep, constants, keys, Path::Auto)
}

/// [`evaluate`] with a forced strategy ([`Path::Lookup`] falls back to per-value comparisons
/// where a lookup does not apply).
pub fn evaluate_path(
    query: &HeQuery,
    prep: &Prepared,
    constants: &[EncUint],
    keys: &NodeKeys,
    path: Path,
) -> Result<Evaluated, HeError> {
    evaluate_released(query, prep, constants, keys, path, &Post::None)
}

/// [`evaluate_path`], then the release step of the node's mode (noise, or the oblivious
/// minimum group size) on the encrypted results before they are compressed.
pub fn evaluate_released(
    query: &HeQuery,
    prep: &Prepared,
    constants: &[EncUint],
    keys: &NodeKeys,
    path: Path,
    post: &Post,
) -> Result<Evaluated, HeError> {
    let _key = ServerKeyGuard::set(&keys.server_key);
    let mut ops = OpCounts::default();
    let started = Instant::now();
    let homomorphic = query.has_constants();
    if constants.len() != query.constant_bits().len() {
        return Err(HeError::Mismatch(format!(
            "{} constants for {} slots",
            constants.len(),
            query.constant_bits().len()
        )));
    }
    let compact = if homomorphic {
        None
    } else {
        let mut values = prep.clear_totals();
        post.apply_clear(&prep.cells, &mut values);
        Some(compact_result(prep, &values, keys, &mut ops)?)
    };
    let results = if let Some(blob) = compact {
        let evaluate_ms = ms(started);
        return Ok(Evaluated {
            blob,
            ops,
            homomorphic,
            evaluate_ms,
            compress_ms: 0.0,
        });
    } else {
        let key = &keys.server_key;
        // With one filter column that has an equality, at most one group can pass.
        let one_hot = query.filter.len() == 1
            && query.filter[0].atoms.iter().any(|a| {
                matches!(
                    a,
                    Atom::Compare { op: CmpOp::Eq }
                        | Atom::In {
                            count: 1,
                            negated: false
                        }
                )
            });
        let lookup = match path {
            Path::PerValue => None,
            Path::Auto => lookup::plan(query, prep, one_hot),
            Path::Lookup => lookup::applies(query, prep),
        };
        let noise = match post {
            Post::Noise(z) => Some(z.as_slice()),
            _ => None,
        };
        let (results, folded) = match lookup {
            Some(kind) => lookup::evaluate(query, prep, constants, kind, noise, &mut ops)?,
            None => (
                per_value(query, prep, constants, key, one_hot, &mut ops)?,
                false,
            ),
        };
        if folded && results.iter().all(Option::is_some) {
            // The noise is already in every cell (folded into the lookup tables).
            results.into_iter().flatten().collect()
        } else {
            let results = fill_absent(results, prep, keys, &mut ops)?;
            apply_post(results, post, &mut ops)?
        }
    };
    let evaluate_ms = ms(started);
    let started = Instant::now();
    let blob = compress(&results)?;
    Ok(Evaluated {
        blob,
        ops,
        homomorphic,
        evaluate_ms,
        compress_ms: ms(started),
    })
}

/// The general path: the predicate per distinct value, then dot products over the groups.
fn per_value(
    query: &HeQuery,
    prep: &Prepared,
    constants: &[EncUint],
    key: &ServerKey,
    one_hot: bool,
    ops: &mut OpCounts,
) -> Result<Vec<Option<EncUint>>, HeError> {
    let sel = selection(query, prep, constants, key, ops)?;
    let mut results = Vec::with_capacity(prep.cells.len());
    for (i, cell) in prep.cells.iter().enumerate() {
        super::control::check()?;
        let r = match cell.value {
            HeValue::Min { .. } => first_selected(key, prep, &sel, i, cell.bits, false, ops)?,
            HeValue::Max { .. } => first_selected(key, prep, &sel, i, cell.bits, true, ops)?,
            _ => {
                let (s, c): (Vec<FheBool>, Vec<u64>) = sel
                    .iter()
                    .zip(&prep.groups)
                    .filter_map(|(s, g)| g.cells[i].filter(|x| *x > 0).map(|x| (s.clone(), x)))
                    .unzip();
                dot(key, one_hot, cell.bits, &s, &c, ops)?
            }
        };
        results.push(r);
    }
    Ok(results)
}

/// A dot product (one-hot when at most one selection bit can be true), or `None` when no group
/// contributes (a public-key encryption of zero then stands in).
fn dot(
    key: &ServerKey,
    one_hot: bool,
    bits: u32,
    sel: &[FheBool],
    clears: &[u64],
    ops: &mut OpCounts,
) -> Result<Option<EncUint>, HeError> {
    if sel.is_empty() {
        return Ok(None);
    }
    ops.dot_products += 1;
    if one_hot {
        EncUint::one_hot_dot(key, bits, sel, clears).map(Some)
    } else {
        EncUint::dot(bits, sel, clears).map(Some)
    }
}

fn and(a: Option<FheBool>, b: FheBool, ops: &mut OpCounts) -> FheBool {
    match a {
        None => b,
        Some(a) => {
            ops.boolean_ops += 1;
            &a & &b
        }
    }
}

fn not(b: FheBool, ops: &mut OpCounts) -> FheBool {
    ops.boolean_ops += 1;
    !&b
}

/// Per group, the encrypted "passes the filter" bit.
fn selection(
    query: &HeQuery,
    prep: &Prepared,
    constants: &[EncUint],
    key: &ServerKey,
    ops: &mut OpCounts,
) -> Result<Vec<FheBool>, HeError> {
    // `evaluate_path` has checked that there is one constant per slot.
    let mut next = 0;
    let mut per_column: Vec<Vec<FheBool>> = Vec::with_capacity(query.filter.len());
    for (f, distinct) in query.filter.iter().zip(&prep.distinct) {
        let n: usize = f.atoms.iter().map(Atom::constants).sum();
        let consts = constants
            .get(next..next + n)
            .ok_or_else(|| HeError::Mismatch("too few constants".into()))?;
        next += n;
        let bits = par_map(distinct, key, ops, |v, ops| {
            column_predicate(&f.atoms, consts, *v, ops)
        })?;
        per_column.push(bits);
    }
    if per_column.len() == 1 {
        // One filter column: a group's bit is its value's bit, no AND needed.
        let only = per_column.pop().unwrap_or_default();
        return prep
            .groups
            .iter()
            .map(|g| {
                g.key
                    .first()
                    .and_then(|i| only.get(*i as usize))
                    .cloned()
                    .ok_or_else(|| HeError::Mismatch("group key out of range".into()))
            })
            .collect();
    }
    par_map(&prep.groups, key, ops, |g, ops| {
        let mut acc: Option<FheBool> = None;
        for (c, idx) in g.key.iter().enumerate() {
            let b = per_column
                .get(c)
                .and_then(|col| col.get(*idx as usize))
                .ok_or_else(|| HeError::Mismatch("group key out of range".into()))?;
            acc = Some(and(acc, b.clone(), ops));
        }
        acc.ok_or_else(|| HeError::Mismatch("a group without filter columns".into()))
    })
}

/// Maps `f` over `items` on as many threads as there are cores, each with the server key set
/// (TFHE-rs's own rayon parallelism inside each operation leaves cores idle between its steps).
fn par_map<T: Sync, R: Send>(
    items: &[T],
    key: &ServerKey,
    ops: &mut OpCounts,
    f: impl Fn(&T, &mut OpCounts) -> Result<R, HeError> + Sync,
) -> Result<Vec<R>, HeError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items
            .iter()
            .map(|x| {
                super::control::check()?;
                f(x, ops)
            })
            .collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    let control = super::control::current();
    let parts: Vec<Result<(Vec<R>, OpCounts), HeError>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                std::thread::Builder::new()
                    .name("prism-he".into())
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(s, {
                        let control = control.clone();
                        move || {
                            let _key = ServerKeyGuard::set(key);
                            let _control = super::control::ControlGuard::set(control);
                            let mut ops = OpCounts::default();
                            let out = part
                                .iter()
                                .map(|x| {
                                    super::control::check()?;
                                    f(x, &mut ops)
                                })
                                .collect::<Result<Vec<R>, HeError>>()?;
                            Ok((out, ops))
                        }
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(HeError::Tfhe("an evaluation thread panicked".into()))),
                Err(e) => Err(HeError::Tfhe(format!(
                    "cannot start an evaluation thread: {e}"
                ))),
            })
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for part in parts {
        let (mut r, o) = part?;
        out.append(&mut r);
        ops.add(&o);
    }
    Ok(out)
}

/// Whether value code `v` passes every predicate on its column.
fn column_predicate(
    atoms: &[Atom],
    consts: &[EncUint],
    v: u64,
    ops: &mut OpCounts,
) -> Result<FheBool, HeError> {
    let mut acc: Option<FheBool> = None;
    let mut k = 0;
    for atom in atoms {
        let c = consts
            .get(k..k + atom.constants())
            .ok_or_else(|| HeError::Mismatch("too few constants".into()))?;
        k += atom.constants();
        ops.comparisons += atom.constants() as u64;
        let cmp = |i: usize, op: CmpOp| c[i].compare_clear(v, op);
        let b = match *atom {
            Atom::Compare { op } => cmp(0, op),
            Atom::In { count, negated } => {
                let mut any: Option<FheBool> = None;
                for i in 0..count as usize {
                    let eq = cmp(i, CmpOp::Eq);
                    any = Some(match any {
                        None => eq,
                        Some(a) => {
                            ops.boolean_ops += 1;
                            &a | &eq
                        }
                    });
                }
                let any = any.ok_or_else(|| HeError::Mismatch("in () without values".into()))?;
                if negated { not(any, ops) } else { any }
            }
            Atom::Between { negated } => {
                let lo = cmp(0, CmpOp::GtEq);
                let hi = cmp(1, CmpOp::LtEq);
                let both = and(Some(lo), hi, ops);
                if negated { not(both, ops) } else { both }
            }
        };
        acc = Some(and(acc, b, ops));
    }
    acc.ok_or_else(|| HeError::Mismatch("a filter column without predicates".into()))
}

/// MIN (or MAX with `descending`): the value of the first selected group in clear order.
fn first_selected(
    key: &ServerKey,
    prep: &Prepared,
    sel: &[FheBool],
    cell: usize,
    bits: u32,
    descending: bool,
    ops: &mut OpCounts,
) -> Result<Option<EncUint>, HeError> {
    let mut order: Vec<(u64, &FheBool)> = prep
        .groups
        .iter()
        .zip(sel)
        .filter_map(|(g, s)| g.cells[cell].map(|x| (x, s)))
        .collect();
    order.sort_by_key(|(x, _)| *x);
    if descending {
        order.reverse();
    }
    let mut none_before: Option<FheBool> = None;
    let mut one_hot = Vec::with_capacity(order.len());
    let mut values = Vec::with_capacity(order.len());
    let last = order.len().saturating_sub(1);
    for (j, (x, s)) in order.iter().enumerate() {
        let first = and(none_before.clone(), (*s).clone(), ops);
        if j < last {
            let unselected = not((*s).clone(), ops);
            none_before = Some(and(none_before, unselected, ops));
        }
        if *x > 0 {
            one_hot.push(first);
            values.push(*x);
        }
    }
    dot(key, true, bits, &one_hot, &values, ops)
}

/// The release step on encrypted results: noise added, or every cell zeroed unless the gate
/// count reaches `k` (one encrypted comparison, then one selection per cell).
fn apply_post(
    results: Vec<EncUint>,
    post: &Post,
    ops: &mut OpCounts,
) -> Result<Vec<EncUint>, HeError> {
    match post {
        Post::None => Ok(results),
        Post::Noise(z) => {
            if z.len() != results.len() {
                return Err(HeError::Mismatch("one noise value per cell".into()));
            }
            ops.arithmetic += z.len() as u64;
            Ok(results
                .iter()
                .zip(z)
                .map(|(r, z)| r.add_clear_wrapping(*z as u64))
                .collect())
        }
        Post::Threshold { gate, k } => {
            let count = results
                .get(*gate)
                .ok_or_else(|| HeError::Mismatch("no gate cell".into()))?;
            // `k <= count`, under encryption.
            let keep = count.compare_clear(*k, CmpOp::LtEq);
            ops.comparisons += 1;
            ops.arithmetic += results.len() as u64;
            Ok(results.iter().map(|r| r.keep_if(&keep)).collect())
        }
    }
}

/// Stands a public-key encryption of zero in for each result no group contributed to.
fn fill_absent(
    results: Vec<Option<EncUint>>,
    prep: &Prepared,
    keys: &NodeKeys,
    ops: &mut OpCounts,
) -> Result<Vec<EncUint>, HeError> {
    if results.iter().all(Option::is_some) {
        return Ok(results.into_iter().flatten().collect());
    }
    let zeros = encrypt_under_public_key(prep, &vec![0; prep.cells.len()], keys, ops)?;
    Ok(results
        .into_iter()
        .zip(zeros)
        .map(|(r, z)| r.unwrap_or(z))
        .collect())
}

/// The exact result of a query without encrypted constants, encrypted under the compact public
/// key, one element per cell, serialised as the compact list itself (the key holder expands it:
/// see [`super::cipher::read_compact_results`]).
fn compact_result(
    prep: &Prepared,
    values: &[u64],
    keys: &NodeKeys,
    ops: &mut OpCounts,
) -> Result<Vec<u8>, HeError> {
    let mut list = tfhe::CompactCiphertextList::builder(&keys.public_key);
    for (cell, v) in prep.cells.iter().zip(values) {
        push_compact(&mut list, cell.bits, *v)?;
        ops.public_key_encryptions += 1;
    }
    super::keys::serialize(&list.build())
}

/// Encrypts one clear value per cell under the compact public key and expands them.
fn encrypt_under_public_key(
    prep: &Prepared,
    values: &[u64],
    keys: &NodeKeys,
    ops: &mut OpCounts,
) -> Result<Vec<EncUint>, HeError> {
    let mut list = tfhe::CompactCiphertextList::builder(&keys.public_key);
    for (cell, v) in prep.cells.iter().zip(values) {
        push_compact(&mut list, cell.bits, *v)?;
        ops.public_key_encryptions += 1;
    }
    let expanded = list
        .build()
        .expand()
        .map_err(|e| HeError::Tfhe(e.to_string()))?;
    prep.cells
        .iter()
        .enumerate()
        .map(|(i, c)| EncUint::from_expander(&expanded, i, c.bits))
        .collect()
}
