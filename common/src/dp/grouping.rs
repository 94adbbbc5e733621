//! Fast GROUP BY for the DP engine: one group index per row instead of one key string per row.
//!
//! Keys are exactly those of [`crate::eval::group_rows`] (the strings of
//! [`ColumnData::key`], null as `None`, sorted the same way), but rows are mapped through
//! per-column dictionary codes, so a million-row query allocates per distinct key, not per row.
//! A test checks that both agree; pathological key spaces fall back to `group_rows` itself.

use std::collections::HashMap;

use crate::eval::{EvalError, GroupKey, group_rows};
use crate::schema::{ColumnData, Dataset};

/// Group index of a row that belongs to no released group.
pub(crate) const NONE: u32 = u32::MAX;

/// Rows mapped to groups.
pub(crate) struct Groups {
    /// Keys, in output (sorted) order.
    pub keys: Vec<GroupKey>,
    /// Group index of each row, or [`NONE`] (filtered out, or key outside the released domain).
    pub gid: Vec<u32>,
}

/// Per-row codes of one column; equal key strings share a code.
struct Codes {
    codes: Vec<u32>,
    labels: Vec<Option<String>>,
}

/// Assigns codes to values through a hash map, in first-seen order; code 0 is null.
fn codes_hashed<T: std::hash::Hash + Eq + Copy>(
    vals: &[Option<T>],
    label: impl Fn(T) -> String,
) -> Codes {
    let mut labels: Vec<Option<String>> = vec![None];
    let mut map: HashMap<T, u32> = HashMap::new();
    let codes = vals
        .iter()
        .map(|v| match v {
            None => 0,
            Some(x) => *map.entry(*x).or_insert_with(|| {
                labels.push(Some(label(*x)));
                (labels.len() - 1) as u32
            }),
        })
        .collect();
    Codes { codes, labels }
}

/// Like [`codes_hashed`] for integers in `lo .. lo + width`, through a direct table.
fn codes_dense(vals: &[Option<i64>], lo: i64, width: usize) -> Codes {
    let mut labels: Vec<Option<String>> = vec![None];
    let mut table = vec![NONE; width];
    let codes = vals
        .iter()
        .map(|v| match v {
            None => 0,
            Some(x) => {
                let slot = &mut table[(x - lo) as usize];
                if *slot == NONE {
                    *slot = labels.len() as u32;
                    labels.push(Some(x.to_string()));
                }
                *slot
            }
        })
        .collect();
    Codes { codes, labels }
}

/// Merges codes whose labels are equal strings (e.g. every NaN of a float column).
fn canonical(c: Codes) -> Codes {
    let mut seen: HashMap<&Option<String>, u32> = HashMap::new();
    let mut labels = Vec::new();
    let remap: Vec<u32> = c
        .labels
        .iter()
        .map(|l| {
            *seen.entry(l).or_insert_with(|| {
                labels.push(l.clone());
                (labels.len() - 1) as u32
            })
        })
        .collect();
    if labels.len() == c.labels.len() {
        return Codes {
            codes: c.codes,
            labels,
        };
    }
    let codes = c.codes.iter().map(|&k| remap[k as usize]).collect();
    Codes { codes, labels }
}

fn column_codes(data: &ColumnData) -> Codes {
    match data {
        ColumnData::Text { dict, codes } => {
            let mut labels: Vec<Option<String>> = vec![None];
            let mut seen: HashMap<&str, u32> = HashMap::new();
            let remap: Vec<u32> = dict
                .iter()
                .map(|s| {
                    *seen.entry(s.as_str()).or_insert_with(|| {
                        labels.push(Some(s.clone()));
                        (labels.len() - 1) as u32
                    })
                })
                .collect();
            // A code outside the dictionary cannot name a key; it is treated as null.
            let codes = codes
                .iter()
                .map(|c| c.and_then(|c| remap.get(c as usize).copied()).unwrap_or(0))
                .collect();
            Codes { codes, labels }
        }
        ColumnData::Boolean(v) => {
            let labels = vec![None, Some("false".to_string()), Some("true".to_string())];
            Codes {
                codes: v
                    .iter()
                    .map(|b| b.map_or(0, |b| 1 + u32::from(b)))
                    .collect(),
                labels,
            }
        }
        ColumnData::Integer(v) => {
            let (lo, hi) = v
                .iter()
                .flatten()
                .fold((i64::MAX, i64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let width = i128::from(hi) - i128::from(lo) + 1;
            if width > 0 && width <= (1 << 20).max(2 * v.len() as i128) {
                codes_dense(v, lo, width as usize)
            } else {
                codes_hashed(v, |x| x.to_string())
            }
        }
        ColumnData::Float(v) => {
            let bits: Vec<Option<u64>> = v.iter().map(|x| x.map(f64::to_bits)).collect();
            canonical(codes_hashed(&bits, |b| f64::from_bits(b).to_string()))
        }
    }
}

/// Sorts groups by key and renumbers rows accordingly.
fn sorted(keys: Vec<GroupKey>, mut gid: Vec<u32>) -> Groups {
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]));
    let mut rank = vec![0u32; keys.len()];
    for (r, &g) in order.iter().enumerate() {
        rank[g as usize] = r as u32;
    }
    for g in gid.iter_mut().filter(|g| **g != NONE) {
        *g = rank[*g as usize];
    }
    let mut keys: Vec<Option<GroupKey>> = keys.into_iter().map(Some).collect();
    let keys = order
        .iter()
        .map(|&g| keys[g as usize].take().unwrap_or_default())
        .collect();
    Groups { keys, gid }
}

/// The groups present among the selected rows (threshold key release, or no GROUP BY).
pub(crate) fn data_groups(
    ds: &Dataset,
    group_by: &[String],
    cols: &[usize],
    mask: &[bool],
) -> Result<Groups, EvalError> {
    if cols.is_empty() {
        let gid = mask.iter().map(|&m| if m { 0 } else { NONE }).collect();
        return Ok(Groups {
            keys: vec![Vec::new()],
            gid,
        });
    }
    let codes: Vec<Codes> = cols.iter().map(|&c| column_codes(&ds.columns[c])).collect();
    let radix = codes
        .iter()
        .try_fold(1u64, |acc, c| acc.checked_mul(c.labels.len() as u64));
    let Some(radix) = radix.filter(|&r| r < u64::from(NONE)) else {
        return fallback(ds, group_by, mask);
    };
    // Composite code → dense group index in first-seen order.
    let mut table = if radix <= 1 << 22 {
        Some(vec![NONE; radix as usize])
    } else {
        None
    };
    let mut map: HashMap<u64, u32> = HashMap::new();
    let mut reps: Vec<u64> = Vec::new();
    let mut gid = vec![NONE; ds.rows];
    for (i, g) in gid.iter_mut().enumerate() {
        if !mask[i] {
            continue;
        }
        let comp = codes.iter().fold(0u64, |acc, c| {
            acc * c.labels.len() as u64 + u64::from(c.codes[i])
        });
        let next = reps.len() as u32;
        let slot = match &mut table {
            Some(t) => &mut t[comp as usize],
            None => map.entry(comp).or_insert(NONE),
        };
        if *slot == NONE {
            *slot = next;
            reps.push(comp);
        }
        *g = *slot;
    }
    let keys = reps
        .iter()
        .map(|&comp| {
            let mut rest = comp;
            let mut key: GroupKey = codes
                .iter()
                .rev()
                .map(|c| {
                    let n = c.labels.len() as u64;
                    let label = c.labels[(rest % n) as usize].clone();
                    rest /= n;
                    label
                })
                .collect();
            key.reverse();
            key
        })
        .collect();
    Ok(sorted(keys, gid))
}

fn fallback(ds: &Dataset, group_by: &[String], mask: &[bool]) -> Result<Groups, EvalError> {
    let mut gid = vec![NONE; ds.rows];
    let mut keys = Vec::new();
    for (g, (key, rows)) in group_rows(group_by, mask, ds)?.into_iter().enumerate() {
        for r in rows {
            gid[r] = g as u32;
        }
        keys.push(key);
    }
    Ok(Groups { keys, gid })
}

/// The cross product of the declared keys (each domain sorted); rows with other keys get
/// [`NONE`].
pub(crate) fn public_groups(
    ds: &Dataset,
    cols: &[usize],
    domains: &[Vec<String>],
    mask: &[bool],
) -> Groups {
    let mut strides = vec![1u32; domains.len()];
    for j in (0..domains.len().saturating_sub(1)).rev() {
        strides[j] = strides[j + 1].saturating_mul(domains[j + 1].len() as u32);
    }
    let per_col: Vec<(Vec<u32>, Vec<u32>)> = cols
        .iter()
        .zip(domains)
        .map(|(&c, dom)| {
            let Codes { codes, labels } = column_codes(&ds.columns[c]);
            let to_key = labels
                .iter()
                .map(|l| {
                    l.as_ref()
                        .and_then(|s| dom.binary_search(s).ok())
                        .map_or(NONE, |k| k as u32)
                })
                .collect();
            (codes, to_key)
        })
        .collect();
    let gid = (0..ds.rows)
        .map(|i| {
            if !mask[i] {
                return NONE;
            }
            let mut g = 0u32;
            for ((codes, to_key), stride) in per_col.iter().zip(&strides) {
                let k = to_key[codes[i] as usize];
                if k == NONE {
                    return NONE;
                }
                g += k * stride;
            }
            g
        })
        .collect();
    Groups {
        keys: public_keys(domains),
        gid,
    }
}

/// The cross product of the declared keys, in output order.
pub(crate) fn public_keys(domains: &[Vec<String>]) -> Vec<GroupKey> {
    let mut keys: Vec<GroupKey> = vec![Vec::new()];
    for dom in domains {
        keys = keys
            .into_iter()
            .flat_map(|k| {
                dom.iter().map(move |v| {
                    let mut k = k.clone();
                    k.push(Some(v.clone()));
                    k
                })
            })
            .collect();
    }
    keys
}
