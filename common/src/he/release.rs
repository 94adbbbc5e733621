//! What a node does to an encrypted HE result before it leaves, by release mode, and how the
//! key holder reads it back.
//!
//! - **dp**: the node draws discrete Laplace noise for every result cell with OpenDP (see
//!   [`crate::dp::noise`]) and adds it homomorphically (a clear addend, modulo the cell's
//!   width). It never learns the result or the constants; the key holder never learns the exact
//!   value. ε is split evenly over the cells. A cell holds `Σ (x − lo)` for a SUM (sensitivity
//!   `hi − lo` under adding or removing one row) or a count (sensitivity 1); the cell is widened
//!   so that `value + noise` fits in two's complement with a tail bound of 42 noise scales, and
//!   a wrap beyond it (probability below 10⁻¹⁸) is post-processing of the noisy value, so the
//!   guarantee holds whatever happens. MIN / MAX are refused: no vetted mechanism for them
//!   works under encryption here.
//!   With a declared privacy unit the node evaluates the query over each unit's first
//!   `max_rows` rows only ([`crate::dp::bounded_rows`]: the bound cannot depend on the
//!   encrypted filter), so one unit moves a cell by at most `max_rows` rows' worth, and every
//!   sensitivity is multiplied by `max_rows`.
//! - **exact** (owner opt-in): the node compares the encrypted row count with `k` (its
//!   `min_group_size`) under encryption and multiplies every cell by that encrypted bit. It
//!   learns nothing about whether the query passed; the key holder sees all-zero cells, a count
//!   of 0 (< k), and reports "suppressed" without any count.
//!
//! The key holder decodes noisy cells as signed, clamps counts at 0, divides AVG by the noisy
//! count (clamped into the bounds), and suppresses a result whose noisy count is below the
//! node's minimum group size (post-processing).

use serde::{Deserialize, Serialize};

use super::encode::check_aggregated;
use super::groups::result_bits;
use super::shape::HeValue;
use super::{HeError, ResultCell, bits_for};
use crate::dp::noise::{IntegerNoise, half_width};
use crate::plan::{AggFunc, Plan, Table};
use crate::release::ReleaseMode;
use crate::schema::Dataset;

/// Noise the node added to one result cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellNoise {
    /// ε this cell spends.
    pub epsilon: f64,
    /// Discrete Laplace scale.
    pub scale: f64,
    /// Sensitivity under adding or removing one row, or one privacy unit (`max_rows` rows).
    pub sensitivity: u64,
}

/// How the node released an HE answer (reported with the encrypted result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeRelease {
    /// The mode the node applied.
    pub mode: ReleaseMode,
    /// ε the node charged to the dataset's budget.
    pub epsilon: f64,
    /// Smallest released group: obliviously enforced in exact mode, on the noisy count in dp.
    pub min_group_size: u64,
    /// The count cell that gates the release.
    pub gate: usize,
}

/// What the node applies to its results before compressing them.
#[derive(Debug, Clone, PartialEq)]
pub enum Post {
    /// Nothing (tests and benchmarks of the bare evaluation).
    None,
    /// Add each cell's noise (two's complement at the cell's width).
    Noise(Vec<i64>),
    /// Zero every cell unless cell `gate` is at least `k` (under encryption).
    Threshold {
        /// The count cell.
        gate: usize,
        /// The minimum.
        k: u64,
    },
}

impl Post {
    /// Applies it to clear values (a query without encrypted constants, which the node
    /// answers in the clear before encrypting under the public key).
    pub fn apply_clear(&self, cells: &[ResultCell], values: &mut [u64]) {
        match self {
            Post::None => {}
            Post::Noise(z) => {
                for ((v, z), c) in values.iter_mut().zip(z).zip(cells) {
                    *v = v.wrapping_add(*z as u64) & mask(c.bits);
                }
            }
            Post::Threshold { gate, k } => {
                if values.get(*gate).is_none_or(|c| c < k) {
                    values.iter_mut().for_each(|v| *v = 0);
                }
            }
        }
    }
}

fn mask(bits: u32) -> u64 {
    u64::MAX >> (64 - bits.clamp(1, 64))
}

/// The count cell that gates a release: `COUNT(*)` when asked for, else the first non-null
/// count (never larger than the row count, so gating on it is at least as strict).
pub fn gate_cell(cells: &[ResultCell]) -> Result<usize, HeError> {
    cells
        .iter()
        .position(|c| c.value == HeValue::CountRows)
        .or_else(|| {
            cells
                .iter()
                .position(|c| matches!(c.value, HeValue::CountNonNull { .. }))
        })
        .ok_or_else(|| HeError::Mismatch("the result has no count to gate on".into()))
}

/// DP mode on the node: calibrates one noise per cell (ε split evenly), widens the cells so
/// that value + noise fits in two's complement, and records the noise in the layout.
pub fn calibrate_noise(
    cells: &mut [ResultCell],
    ds: &Dataset,
    epsilon: f64,
) -> Result<Vec<IntegerNoise>, HeError> {
    if cells.is_empty() {
        return Err(HeError::Mismatch("no result cells".into()));
    }
    // `ds` is the bounded dataset when there is a unit: a unit contributes at most `max_rows`
    // of its rows.
    let per_unit = ds
        .schema
        .privacy_unit()
        .map_or(1, |(_, b)| u64::from(b.max_rows));
    let share = epsilon / cells.len() as f64;
    let rows = ds.rows as u64;
    let mut out = Vec::with_capacity(cells.len());
    for cell in cells.iter_mut() {
        let (max, sensitivity) = match &cell.value {
            HeValue::CountRows | HeValue::CountNonNull { .. } => (rows, 1u64),
            HeValue::Sum { column } => {
                let spec = ds.schema.column(column).ok_or_else(|| {
                    HeError::column(column, format!("not in dataset {}", ds.schema.name))
                })?;
                let (lo, hi) = check_aggregated(spec)?;
                let range = u64::try_from(i128::from(hi) - i128::from(lo))
                    .map_err(|_| HeError::column(column, "bounds out of range"))?;
                (rows.saturating_mul(range), range)
            }
            HeValue::Min { column } | HeValue::Max { column } => {
                return Err(HeError::Unsupported {
                    construct: format!("MIN / MAX of {column} in dp release mode"),
                    hint: "no vetted DP mechanism for them runs under encryption; use dp_sandbox \
                           (report-noisy-min) or ask the data owner for the exact mode"
                        .into(),
                });
            }
        };
        let sensitivity = sensitivity
            .checked_mul(per_unit)
            .ok_or_else(|| HeError::Policy("sensitivity out of range".into()))?;
        let sens = i64::try_from(sensitivity)
            .map_err(|_| HeError::Policy("sensitivity out of range".into()))?;
        let noise = IntegerNoise::calibrate(sens, share, &ds.schema.name)
            .map_err(|e| HeError::Policy(e.to_string()))?;
        let needed = bits_for(max.saturating_add(noise.tail_bound())) + 1;
        if needed > 64 {
            return Err(HeError::column(
                cell.value.column().unwrap_or("*"),
                "its noisy sum can exceed 64 bits; narrow the declared bounds",
            ));
        }
        cell.bits = cell.bits.max(result_bits(needed));
        cell.noise = Some(CellNoise {
            epsilon: noise.epsilon(),
            scale: noise.scale(),
            sensitivity,
        });
        out.push(noise);
    }
    Ok(out)
}

/// Draws one noise value per cell.
pub fn draw(noise: &[IntegerNoise]) -> Result<Vec<i64>, HeError> {
    noise
        .iter()
        .map(|n| n.sample().map_err(|e| HeError::Policy(e.to_string())))
        .collect()
}

/// The key holder's reading of decrypted cells: signed for noisy cells, as is otherwise.
pub fn decode_cells(cells: &[ResultCell], raw: &[u64]) -> Vec<i128> {
    cells
        .iter()
        .zip(raw)
        .map(|(c, x)| {
            let x = x & mask(c.bits);
            if c.noise.is_some() && c.bits < 128 && x >> (c.bits - 1) == 1 {
                i128::from(x) - (1i128 << c.bits)
            } else {
                i128::from(x)
            }
        })
        .collect()
}

/// The answer and whether it was suppressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The table (no rows when suppressed).
    pub table: Table,
    /// Why nothing was released, if so.
    pub suppressed: Option<String>,
    /// Per output column, the 95% half-width of its noise (dp mode).
    pub ci95: Vec<(String, Option<f64>)>,
}

/// Builds the answer from the decoded cell values under the node's release.
pub fn finalize(
    plan: &Plan,
    cells: &[ResultCell],
    values: &[i128],
    release: Option<&HeRelease>,
) -> Result<Answer, HeError> {
    let columns = plan.column_names();
    let get = |v: &HeValue| -> Result<(i128, &ResultCell), HeError> {
        cells
            .iter()
            .zip(values)
            .find(|(c, _)| &c.value == v)
            .map(|(c, x)| (*x, c))
            .ok_or_else(|| HeError::Mismatch(format!("the result has no {v:?}")))
    };
    if let Some(r) = release {
        let gate = values.get(r.gate).copied().unwrap_or(0);
        let why = match r.mode {
            ReleaseMode::Exact if gate == 0 => Some(format!(
                "suppressed: fewer than {} rows matched (the node's minimum group size, \
                 enforced under encryption)",
                r.min_group_size
            )),
            ReleaseMode::Dp if gate < i128::from(r.min_group_size) => Some(format!(
                "suppressed: the noisy count is below the node's minimum group size {}",
                r.min_group_size
            )),
            _ => None,
        };
        if why.is_some() {
            return Ok(Answer {
                table: Table {
                    columns,
                    rows: vec![],
                },
                suppressed: why,
                ci95: vec![],
            });
        }
    }
    let hw = |c: &ResultCell, alpha: f64| c.noise.as_ref().and_then(|n| half_width(n.scale, alpha));
    let mut row = Vec::new();
    let mut ci95 = Vec::new();
    for (a, name) in plan.aggregates().zip(&columns) {
        let Some(col) = &a.column else {
            let (x, c) = get(&HeValue::CountRows)?;
            row.push(serde_json::json!(x.max(0)));
            ci95.push((name.clone(), hw(c, 0.05)));
            continue;
        };
        let column = col.clone();
        let (count, count_cell) = get(&HeValue::CountNonNull {
            column: column.clone(),
        })?;
        let weight = i128::from(a.weight.unwrap_or(1));
        let (value, ci) = match a.func {
            AggFunc::Count => (serde_json::json!(count.max(0)), hw(count_cell, 0.05)),
            _ if count <= 0 => (serde_json::Value::Null, None),
            AggFunc::Sum => {
                let (x, c) = get(&HeValue::Sum { column })?;
                let total = (x + i128::from(c.offset) * count) * weight;
                let ci = if c.offset == 0 {
                    hw(c, 0.05)
                } else {
                    // Two noisy terms: 97.5% each, so both hold with at least 95%.
                    hw(c, 0.025)
                        .zip(hw(count_cell, 0.025))
                        .map(|(s, n)| s + (c.offset as f64).abs() * n)
                };
                (number(total), ci.map(|h| h * (weight as f64).abs()))
            }
            AggFunc::Avg => {
                let (x, c) = get(&HeValue::Sum { column })?;
                let total = x + i128::from(c.offset) * count;
                let mut avg = total as f64 / count as f64;
                if let Some(n) = &c.noise {
                    // Post-processing: the mean of in-bounds values is in bounds.
                    let lo = c.offset as f64;
                    avg = avg.clamp(lo, lo + n.sensitivity as f64);
                }
                (serde_json::json!(avg), None)
            }
            AggFunc::Min => {
                let (x, c) = get(&HeValue::Min { column })?;
                (number(x + i128::from(c.offset)), None)
            }
            AggFunc::Max => {
                let (x, c) = get(&HeValue::Max { column })?;
                (number(x + i128::from(c.offset)), None)
            }
        };
        row.push(value);
        ci95.push((name.clone(), ci));
    }
    Ok(Answer {
        table: Table {
            columns,
            rows: vec![row],
        },
        suppressed: None,
        ci95,
    })
}

/// An exact integer as JSON (an i64 when it fits, else a float).
fn number(x: i128) -> serde_json::Value {
    match i64::try_from(x) {
        Ok(i) => serde_json::json!(i),
        Err(_) => serde_json::json!(x as f64),
    }
}
