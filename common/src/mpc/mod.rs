//! The MPC aggregate vector: what each party computes locally, and how the total is decoded.
//!
//! For the room's declared key domain (the cross product of `RoomParams::group_keys`, or one
//! empty key without GROUP BY), each aggregate contributes components: `COUNT` one count,
//! `SUM` one fixed-point sum, `AVG` a sum and a count (divided after reconstruction). A hidden
//! `COUNT(*)` is added when HAVING, a `dp` release or a minimum group size needs one. Values are
//! integers in Z_2^64 (two's complement), so shares of them add up exactly.
//!
//! In a `dp` room each value is clamped to its column's declared bounds and the party adds
//! calibrated noise to its own vector before it is split ([`noise`]); [`decode`] turns the
//! reconstructed total into the answer, suppressing small groups.

mod decode;
pub mod noise;
mod pushdown;

pub use decode::{Decoded, decode_total};
pub use pushdown::{pushdown, vector_from_groups};

use std::collections::HashMap;

use crate::eval::filter_mask;
use crate::plan::{AggFunc, Plan};
use crate::release::ReleaseMode;
use crate::room::RoomParams;
use crate::schema::{Bounds, ColumnData, ColumnType, Dataset, DatasetSchema};
use crate::shares::encode;

/// Largest vector a room may use (keys × components).
pub const MAX_VECTOR: usize = 1 << 20;

/// Errors building or decoding the vector.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum MpcError {
    /// The plan uses something additive shares cannot compute.
    #[error("{0}")]
    Unsupported(String),
    /// A column is missing or of another type on this node.
    #[error("dataset {dataset}: {message}")]
    Schema {
        /// Dataset.
        dataset: String,
        /// What is wrong.
        message: String,
    },
    /// A sum left the 64-bit range.
    #[error("dataset {0}: a sum does not fit in 64 bits; lower fixed_point_decimals")]
    Overflow(String),
    /// SUM / AVG in a `dp` room over a column whose owner declared no bounds.
    #[error(
        "dataset {dataset}: column {column} has no declared bounds; a dp data room clamps each value to them and calibrates its noise from them. The dataset owner must declare them, e.g. `prism-node --config node.toml bounds {dataset} {column} --min 0 --max 100000` (or PATCH /v1/datasets/{dataset}/columns/{column} on the node admin API)"
    )]
    MissingBounds {
        /// Dataset.
        dataset: String,
        /// Column.
        column: String,
    },
    /// The noise could not be calibrated or drawn.
    #[error("dataset {dataset}: {message}")]
    Noise {
        /// Dataset.
        dataset: String,
        /// What failed.
        message: String,
    },
}

impl MpcError {
    /// Stable code for refusals.
    pub fn code(&self) -> &'static str {
        match self {
            MpcError::MissingBounds { .. } => "missing_bounds",
            MpcError::Noise { .. } => "dp_error",
            _ => "mpc_unsupported",
        }
    }
}

/// One component of the vector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    /// Rows matching (COUNT(*)).
    Rows,
    /// Non-null values of a column (COUNT(col), AVG's count).
    NonNull(usize),
    /// Fixed-point sum of a column, times a weight.
    Sum(usize, i64),
}

/// Where each aggregate's components sit.
#[derive(Debug, Clone)]
pub struct Layout {
    keys: Vec<Vec<String>>,
    parts: Vec<(Part, Option<usize>)>,
    /// Component index of the COUNT(*) used by HAVING, a minimum group size and DP suppression.
    rows: Option<usize>,
    /// Per output aggregate: indices into `parts`.
    outputs: Vec<Vec<usize>>,
    /// Per output aggregate: its alias.
    aliases: Vec<String>,
    columns: Vec<(String, ColumnType, Option<Bounds>)>,
    release: ReleaseMode,
    decimals: u32,
    /// In a `dp` room over a dataset with a privacy unit: its column and bounds. The party's
    /// vector is then computed over each unit's bounded rows, and its noise calibrated to one
    /// unit (`max_rows` rows).
    privacy_unit: Option<(String, crate::schema::ContributionBounds)>,
}

impl Layout {
    /// Number of u64 elements.
    pub fn len(&self) -> usize {
        self.keys.len() * self.parts.len()
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Components per key (the vector is `keys × components`, key-major).
    pub fn components(&self) -> usize {
        self.parts.len()
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// A name for each component, for proofs: `alias`, `alias.sum` / `alias.count` for AVG,
    /// `rows (hidden)` for the row count only used to suppress groups.
    pub fn component_names(&self) -> Vec<String> {
        let mut names = vec![String::new(); self.parts.len()];
        for (idx, alias) in self.outputs.iter().zip(&self.aliases) {
            match idx.as_slice() {
                [one] => names[*one] = alias.clone(),
                [sum, count] => {
                    names[*sum] = format!("{alias}.sum");
                    names[*count] = format!("{alias}.count");
                }
                _ => {}
            }
        }
        for n in names.iter_mut().filter(|n| n.is_empty()) {
            *n = "rows (hidden)".into();
        }
        names
    }

    /// The factor a component's integer value is divided by to give the answer's units
    /// (10^d for fixed-point float sums, else 1).
    pub fn unit(&self, component: usize) -> f64 {
        match self.parts.get(component) {
            Some((Part::Sum(c, _), _)) => scale(self.columns[*c].1, self.decimals),
            _ => 1.0,
        }
    }
}

fn cross(domains: &[Vec<String>]) -> Vec<Vec<String>> {
    domains.iter().fold(vec![Vec::new()], |acc, d| {
        acc.iter()
            .flat_map(|prefix| {
                d.iter()
                    .map(move |v| [prefix.clone(), vec![v.clone()]].concat())
            })
            .collect()
    })
}

/// Builds the layout of a plan for a schema.
pub fn layout(
    plan: &Plan,
    schema: &DatasetSchema,
    params: &RoomParams,
) -> Result<Layout, MpcError> {
    let schema_err = |m: String| MpcError::Schema {
        dataset: schema.name.clone(),
        message: m,
    };
    if plan.group_by.len() != params.group_keys.len() {
        return Err(MpcError::Unsupported(format!(
            "mpc_backend needs the GROUP BY keys declared in the room: {} GROUP BY column(s), {} key list(s) declared",
            plan.group_by.len(),
            params.group_keys.len()
        )));
    }
    type Columns = Vec<(String, ColumnType, Option<Bounds>)>;
    let mut columns: Columns = Vec::new();
    let col_index = |name: &str, columns: &mut Columns| -> Result<usize, MpcError> {
        let spec = schema
            .column(name)
            .ok_or_else(|| schema_err(format!("no column {name}")))?;
        if let Some(i) = columns.iter().position(|(n, _, _)| n == &spec.name) {
            return Ok(i);
        }
        columns.push((spec.name.clone(), spec.ty, spec.bounds));
        Ok(columns.len() - 1)
    };
    let mut parts: Vec<(Part, Option<usize>)> = Vec::new();
    let mut push = |p: Part| -> usize {
        parts.push((p, None));
        parts.len() - 1
    };
    let mut outputs = Vec::new();
    let mut aliases = Vec::new();
    let mut rows_part = None;
    let dp = params.release == ReleaseMode::Dp;
    for a in plan.aggregates() {
        let numeric = |c: &str, cols: &Columns, i: usize| -> Result<(), MpcError> {
            if !cols[i].1.is_numeric() {
                return Err(schema_err(format!("column {c} is not numeric")));
            }
            if dp && cols[i].2.is_none() {
                return Err(MpcError::MissingBounds {
                    dataset: schema.name.clone(),
                    column: cols[i].0.clone(),
                });
            }
            Ok(())
        };
        let idx = match (a.func, a.column.as_deref()) {
            (AggFunc::Count, None) => {
                let p = push(Part::Rows);
                rows_part.get_or_insert(p);
                vec![p]
            }
            (AggFunc::Count, Some(c)) => vec![push(Part::NonNull(col_index(c, &mut columns)?))],
            (AggFunc::Sum, Some(c)) => {
                let i = col_index(c, &mut columns)?;
                numeric(c, &columns, i)?;
                vec![push(Part::Sum(i, a.weight.unwrap_or(1)))]
            }
            (AggFunc::Avg, Some(c)) => {
                let i = col_index(c, &mut columns)?;
                numeric(c, &columns, i)?;
                vec![push(Part::Sum(i, 1)), push(Part::NonNull(i))]
            }
            (f @ (AggFunc::Min | AggFunc::Max), _) => {
                return Err(MpcError::Unsupported(format!(
                    "mpc_backend cannot compute {f:?}: additive shares only add; use COUNT, SUM or AVG"
                )));
            }
            (f, None) => return Err(MpcError::Unsupported(format!("{f:?} needs a column"))),
        };
        outputs.push(idx);
        aliases.push(a.alias.clone());
    }
    let needs_rows = plan.having_min_count.is_some() || dp || params.min_group_size > 0;
    let rows = needs_rows.then(|| rows_part.unwrap_or_else(|| push(Part::Rows)));
    let keys = cross(&params.group_keys);
    let l = Layout {
        keys,
        parts,
        rows,
        outputs,
        aliases,
        columns,
        release: params.release,
        decimals: params.fixed_point_decimals,
        privacy_unit: match params.release {
            ReleaseMode::Dp => schema
                .privacy_unit()
                .map(|(i, b)| (schema.columns[i].name.clone(), b)),
            _ => None,
        },
    };
    if l.len() > MAX_VECTOR {
        return Err(MpcError::Unsupported(format!(
            "the room's vector would have {} elements (keys × components); at most {MAX_VECTOR}",
            l.len()
        )));
    }
    Ok(l)
}

fn scale(ty: ColumnType, decimals: u32) -> f64 {
    if ty == ColumnType::Float {
        10f64.powi(decimals as i32)
    } else {
        1.0
    }
}

/// This party's local aggregate vector, exact (before any noise). In a `dp` room each value is
/// first clamped to its column's declared bounds, so one row moves a sum by at most the
/// sensitivity the noise is calibrated to.
pub fn local_vector(plan: &Plan, ds: &Dataset, params: &RoomParams) -> Result<Vec<u64>, MpcError> {
    let l = layout(plan, &ds.schema, params)?;
    let schema_err = |m: String| MpcError::Schema {
        dataset: ds.schema.name.clone(),
        message: m,
    };
    if l.privacy_unit.is_some() {
        // Each unit's contributions are bounded first: the scan applies the DP engine's rule.
        let push = pushdown(plan, &ds.schema, params)?;
        let mut scan = crate::dp::Scan::new(push, plan.filter.clone());
        scan.add(ds).map_err(schema_err)?;
        return vector_from_groups(plan, &ds.schema, params, &scan.finish());
    }
    let mask = filter_mask(plan.filter.as_ref(), ds).map_err(|e| schema_err(e.to_string()))?;
    let data: Vec<&ColumnData> = l
        .columns
        .iter()
        .map(|(n, _, _)| {
            ds.column(n)
                .map(|(_, d)| d)
                .ok_or_else(|| schema_err(format!("no column {n}")))
        })
        .collect::<Result<_, _>>()?;
    let group_cols: Vec<&ColumnData> = plan
        .group_by
        .iter()
        .map(|g| {
            ds.column(g)
                .map(|(_, d)| d)
                .ok_or_else(|| schema_err(format!("no column {g}")))
        })
        .collect::<Result<_, _>>()?;
    let key_index: HashMap<&[String], usize> = l
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_slice(), i))
        .collect();
    let np = l.parts.len();
    let mut acc = vec![0i64; l.len()];
    let overflow = || MpcError::Overflow(ds.schema.name.clone());
    let mut key = Vec::with_capacity(group_cols.len());
    for row in (0..ds.rows).filter(|&r| mask[r]) {
        key.clear();
        let mut complete = true;
        for c in &group_cols {
            match c.key(row) {
                Some(k) => key.push(k),
                None => complete = false,
            }
        }
        let Some(&g) = (if complete {
            key_index.get(key.as_slice())
        } else {
            None
        }) else {
            continue;
        };
        for (pi, (part, _)) in l.parts.iter().enumerate() {
            let slot = &mut acc[g * np + pi];
            let add = match *part {
                Part::Rows => 1,
                Part::NonNull(c) => i64::from(!data[c].is_null(row)),
                Part::Sum(c, w) => match data[c].number(row) {
                    Some(x) => {
                        let x = match (l.release, l.columns[c].2) {
                            (ReleaseMode::Dp, Some(b)) => x.clamp(b.min, b.max),
                            _ => x,
                        };
                        let v = (x * scale(l.columns[c].1, params.fixed_point_decimals)).round();
                        if !v.is_finite() || v.abs() >= 9.2e18 {
                            return Err(overflow());
                        }
                        (v as i64).checked_mul(w).ok_or_else(overflow)?
                    }
                    None => 0,
                },
            };
            *slot = slot.checked_add(add).ok_or_else(overflow)?;
        }
    }
    Ok(acc.into_iter().map(encode).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Aggregate, Output};
    use crate::schema::{ColumnSpec, DatasetSchema};
    use crate::shares::{combine, os_seeded, split};

    fn ds(ages: &[i64], states: &[&str], costs: &[f64]) -> Dataset {
        let mut dict: Vec<String> = Vec::new();
        let codes = states
            .iter()
            .map(|s| {
                let p = dict.iter().position(|d| d == s).unwrap_or_else(|| {
                    dict.push(s.to_string());
                    dict.len() - 1
                });
                Some(p as u32)
            })
            .collect();
        Dataset {
            schema: DatasetSchema {
                name: "patients".into(),
                columns: vec![
                    ColumnSpec {
                        name: "age".into(),
                        ty: ColumnType::Integer,
                        bounds: None,
                        public_keys: None,
                        not_null: false,
                        privacy_unit: None,
                    },
                    ColumnSpec {
                        name: "state".into(),
                        ty: ColumnType::Text,
                        bounds: None,
                        public_keys: None,
                        not_null: false,
                        privacy_unit: None,
                    },
                    ColumnSpec {
                        name: "cost".into(),
                        ty: ColumnType::Float,
                        bounds: None,
                        public_keys: None,
                        not_null: false,
                        privacy_unit: None,
                    },
                ],
            },
            columns: vec![
                ColumnData::Integer(ages.iter().map(|&a| Some(a)).collect()),
                ColumnData::Text { dict, codes },
                ColumnData::Float(costs.iter().map(|&c| Some(c)).collect()),
            ],
            rows: ages.len(),
        }
    }

    fn agg(func: AggFunc, column: Option<&str>, alias: &str) -> Output {
        Output::Aggregate(Aggregate {
            func,
            column: column.map(String::from),
            weight: None,
            alias: alias.into(),
        })
    }

    #[test]
    fn shared_vectors_reconstruct_the_exact_grouped_answer() {
        let a = ds(&[30, 40, 50], &["CA", "NY", "CA"], &[1.25, 2.5, 3.0]);
        let b = ds(&[20, 60], &["NY", "TX"], &[10.0, 0.01]);
        let plan = Plan {
            dataset: "patients".into(),
            outputs: vec![
                Output::Key("state".into()),
                agg(AggFunc::Count, None, "count"),
                agg(AggFunc::Avg, Some("age"), "avg_age"),
                agg(AggFunc::Sum, Some("cost"), "sum_cost"),
            ],
            filter: None,
            group_by: vec!["state".into()],
            having_min_count: Some(2),
        };
        let params = RoomParams {
            group_keys: vec![vec!["CA".into(), "NY".into(), "TX".into()]],
            release: ReleaseMode::Exact,
            ..Default::default()
        };
        let va = local_vector(&plan, &a, &params).expect("a");
        let vb = local_vector(&plan, &b, &params).expect("b");
        let mut rng = os_seeded();
        let (sa, sb) = (split(&va, 2, &mut rng), split(&vb, 2, &mut rng));
        // Each party sums its own share and the one it received.
        let pa = combine(va.len(), [sa[0].as_slice(), sb[0].as_slice()]);
        let pb = combine(va.len(), [sa[1].as_slice(), sb[1].as_slice()]);
        let total = combine(va.len(), [pa.as_slice(), pb.as_slice()]);
        let t = decode_total(&plan, &a.schema, &params, &total)
            .expect("decode")
            .table;
        assert_eq!(t.columns, vec!["state", "count", "avg_age", "sum_cost"]);
        // TX has one row: HAVING COUNT(*) >= 2 drops it.
        assert_eq!(
            t.rows,
            vec![
                vec![
                    serde_json::json!("CA"),
                    serde_json::json!(2),
                    serde_json::json!(40.0),
                    serde_json::json!(4.25)
                ],
                vec![
                    serde_json::json!("NY"),
                    serde_json::json!(2),
                    serde_json::json!(30.0),
                    serde_json::json!(12.5)
                ],
            ]
        );
    }

    #[test]
    fn min_max_and_undeclared_keys_are_refused() {
        let a = ds(&[1], &["CA"], &[1.0]);
        let mut plan = Plan {
            dataset: "patients".into(),
            outputs: vec![agg(AggFunc::Max, Some("age"), "max_age")],
            filter: None,
            group_by: vec![],
            having_min_count: None,
        };
        assert!(matches!(
            local_vector(&plan, &a, &RoomParams::default()),
            Err(MpcError::Unsupported(_))
        ));
        plan.outputs = vec![agg(AggFunc::Count, None, "count")];
        plan.group_by = vec!["state".into()];
        assert!(
            matches!(local_vector(&plan, &a, &RoomParams::default()), Err(MpcError::Unsupported(m)) if m.contains("declared"))
        );
    }
}
