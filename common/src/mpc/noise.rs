//! A party's own DP noise in a `dp` room, and what the released total carries.
//!
//! One row of a party's dataset lands in at most one key of the room's key domain and moves
//! each of that key's components by at most its sensitivity (COUNT: 1; SUM: the column's
//! declared bound of largest magnitude × 10^d for float columns × |weight|); different keys are
//! disjoint, so they compose in parallel. The party therefore splits its ε evenly over the
//! components of a key and draws discrete Laplace noise (OpenDP) for every element of its
//! vector before it is split into shares. Its input is protected by its own noise alone,
//! whatever the other parties and the coordinator do.
//!
//! The total carries the sum of every party's noise. Its confidence interval is conservative:
//! by a union bound over the `n` parties, each party's noise is within its own half-width at
//! level α/n with probability at least 1 − α/n, so the sum of those half-widths holds with
//! probability at least 1 − α (per released value).

use serde::{Deserialize, Serialize};

use super::{Layout, MpcError, Part};
use crate::dp::noise::{IntegerNoise, half_width};
use crate::shares::encode;

/// What one party's noise was calibrated to; it reports this with its partial sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartyNoise {
    /// ε the party spends on the room (charged to its own ledger).
    pub epsilon: f64,
    /// Per component of a key (layout order, the same for every key): the discrete Laplace
    /// scale, in the component's integer (fixed-point) units.
    pub scales: Vec<f64>,
    /// Per component: the sensitivity the scale was calibrated to (integer units).
    pub sensitivities: Vec<i64>,
    /// What one protected individual is: `row`, or `unit: <column>, max_rows k, max_groups g`
    /// (every sensitivity is then `k` rows' worth).
    #[serde(default = "row")]
    pub privacy_unit: String,
}

fn row() -> String {
    "row".into()
}

/// A party's calibrated noise for one room.
#[derive(Debug)]
pub struct Noise {
    per_component: Vec<IntegerNoise>,
    /// What it reports.
    pub report: PartyNoise,
}

/// The sensitivity of each component of a key under adding or removing one row, or one
/// privacy unit: at most `max_rows` rows, whichever keys they fall in, so the vector's L1
/// change per component is at most `max_rows` times a row's.
fn sensitivities(l: &Layout, dataset: &str) -> Result<Vec<i64>, MpcError> {
    let per_unit = l
        .privacy_unit
        .as_ref()
        .map_or(1, |(_, b)| i64::from(b.max_rows));
    let overflow = || MpcError::Overflow(dataset.to_string());
    l.parts
        .iter()
        .map(|(p, _)| match *p {
            Part::Rows | Part::NonNull(_) => Ok(1),
            Part::Sum(c, w) => {
                let (name, _, bounds) = &l.columns[c];
                let b = bounds.ok_or_else(|| MpcError::MissingBounds {
                    dataset: dataset.to_string(),
                    column: name.clone(),
                })?;
                let largest = (b.min.abs().max(b.max.abs())
                    * super::scale(l.columns[c].1, l.decimals))
                .ceil();
                if !largest.is_finite() || largest >= 9.2e18 {
                    return Err(overflow());
                }
                (largest as i64)
                    .checked_mul(i64::try_from(w.unsigned_abs()).map_err(|_| overflow())?)
                    .ok_or_else(overflow)
            }
        })
        .map(|s: Result<i64, MpcError>| s?.checked_mul(per_unit).ok_or_else(overflow))
        .collect()
}

/// Calibrates a party's noise for a room's layout, spending `epsilon` on its dataset.
pub fn calibrate(l: &Layout, dataset: &str, epsilon: f64) -> Result<Noise, MpcError> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(MpcError::Noise {
            dataset: dataset.to_string(),
            message: format!("ε must be a finite number > 0, got {epsilon}"),
        });
    }
    let sens = sensitivities(l, dataset)?;
    // Parallel over keys, sequential over one key's components.
    let per = epsilon / sens.len().max(1) as f64;
    let per_component = sens
        .iter()
        .map(|&s| IntegerNoise::calibrate(s, per, dataset))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MpcError::Noise {
            dataset: dataset.to_string(),
            message: e.to_string(),
        })?;
    let report = PartyNoise {
        epsilon,
        scales: per_component.iter().map(IntegerNoise::scale).collect(),
        sensitivities: sens,
        privacy_unit: l.privacy_unit.as_ref().map_or_else(row, |(c, b)| {
            format!(
                "unit: {c}, max_rows {}, max_groups {}",
                b.max_rows, b.max_groups
            )
        }),
    };
    Ok(Noise {
        per_component,
        report,
    })
}

impl Noise {
    /// Adds one fresh draw to every element of the party's vector (in Z_2^64).
    pub fn add_to(&self, vector: &mut [u64], dataset: &str) -> Result<(), MpcError> {
        let k = self.per_component.len().max(1);
        for (i, x) in vector.iter_mut().enumerate() {
            let z = self.per_component[i % k]
                .sample()
                .map_err(|e| MpcError::Noise {
                    dataset: dataset.to_string(),
                    message: e.to_string(),
                })?;
            *x = x.wrapping_add(encode(z));
        }
        Ok(())
    }
}

/// The noise the released total carries in one component, in the answer's units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentNoise {
    /// The component (`alias`, `alias.sum`, `alias.count`, `rows (hidden)`).
    pub component: String,
    /// Each party's discrete Laplace scale, summed.
    pub scale_sum: f64,
    /// Standard deviation of the summed noise.
    pub std_dev: f64,
    /// Half-width of a conservative 95 % interval around each released value of this
    /// component (union bound over the parties).
    pub ci95_half_width: f64,
}

/// Variance of discrete Laplace noise of `scale`: 2t / (1 − t)² with t = e^(−1/scale).
fn variance(scale: f64) -> f64 {
    if scale <= 0.0 {
        return 0.0;
    }
    let t = (-1.0 / scale).exp();
    2.0 * t / ((1.0 - t) * (1.0 - t))
}

/// What the total carries, per component, given every party's report.
pub fn total_noise(l: &Layout, parties: &[&PartyNoise]) -> Vec<ComponentNoise> {
    let n = parties.len().max(1) as f64;
    l.component_names()
        .into_iter()
        .enumerate()
        .map(|(c, component)| {
            let unit = l.unit(c);
            let scales: Vec<f64> = parties
                .iter()
                .map(|p| p.scales.get(c).copied().unwrap_or(0.0))
                .collect();
            let half: f64 = scales
                .iter()
                .map(|&s| half_width(s, 0.05 / n).unwrap_or(f64::INFINITY))
                .sum();
            ComponentNoise {
                component,
                scale_sum: scales.iter().sum::<f64>() / unit,
                std_dev: scales.iter().map(|&s| variance(s)).sum::<f64>().sqrt() / unit,
                ci95_half_width: half / unit,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpc::{decode_total, layout, local_vector};
    use crate::plan::{AggFunc, Aggregate, Output, Plan};
    use crate::release::ReleaseMode;
    use crate::room::RoomParams;
    use crate::schema::{Bounds, ColumnData, ColumnSpec, ColumnType, Dataset, DatasetSchema};
    use crate::shares::{combine, os_seeded, split};

    fn ds(costs: &[f64], bounded: bool) -> Dataset {
        Dataset {
            schema: DatasetSchema {
                name: "patients".into(),
                columns: vec![ColumnSpec {
                    name: "cost".into(),
                    ty: ColumnType::Float,
                    bounds: bounded.then_some(Bounds {
                        min: 0.0,
                        max: 50.0,
                    }),
                    public_keys: None,
                    not_null: false,
                    privacy_unit: None,
                }],
            },
            columns: vec![ColumnData::Float(costs.iter().map(|&c| Some(c)).collect())],
            rows: costs.len(),
        }
    }

    fn plan(outputs: &[(AggFunc, Option<&str>)]) -> Plan {
        Plan {
            dataset: "patients".into(),
            outputs: outputs
                .iter()
                .map(|(f, c)| {
                    Output::Aggregate(Aggregate {
                        func: *f,
                        column: c.map(String::from),
                        weight: None,
                        alias: format!("{f:?}").to_lowercase(),
                    })
                })
                .collect(),
            filter: None,
            group_by: vec![],
            having_min_count: None,
        }
    }

    #[test]
    fn epsilon_is_split_over_a_keys_components_with_sensitivity_from_the_bounds() {
        let d = ds(&[10.0], true);
        // SUM(cost) and the hidden row count: two components per key.
        let p = plan(&[(AggFunc::Sum, Some("cost"))]);
        let l = layout(&p, &d.schema, &RoomParams::default()).expect("layout");
        assert_eq!(l.component_names(), vec!["sum", "rows (hidden)"]);
        let n = calibrate(&l, "patients", 1.0).expect("noise");
        // 50.00 × 10² fixed point; 1 for the count; ε/2 each, so scale = 2 · sensitivity.
        assert_eq!(n.report.sensitivities, vec![5_000, 1]);
        assert!(
            (n.report.scales[0] - 10_000.0).abs() < 1.0,
            "{:?}",
            n.report
        );
        assert!((n.report.scales[1] - 2.0).abs() < 0.01, "{:?}", n.report);
        assert!(calibrate(&l, "patients", 0.0).is_err());
        assert!(calibrate(&l, "patients", f64::INFINITY).is_err());
    }

    #[test]
    fn a_privacy_unit_is_bounded_in_the_vector_and_scales_every_sensitivity() {
        // Patient 1 has four visits, patient 2 one; at most 2 rows per patient.
        let mut d = ds(&[10.0, 20.0, 30.0, 40.0, 5.0], true);
        d.schema.columns.insert(
            0,
            ColumnSpec {
                name: "patient".into(),
                ty: ColumnType::Integer,
                bounds: None,
                public_keys: None,
                not_null: true,
                privacy_unit: Some(crate::schema::ContributionBounds {
                    max_rows: 2,
                    max_groups: 1,
                }),
            },
        );
        d.columns.insert(
            0,
            ColumnData::Integer(vec![Some(1), Some(1), Some(1), Some(1), Some(2)]),
        );
        let p = plan(&[(AggFunc::Sum, Some("cost"))]);
        let l = layout(&p, &d.schema, &RoomParams::default()).expect("layout");
        let n = calibrate(&l, "patients", 1.0).expect("noise");
        assert_eq!(n.report.sensitivities, vec![10_000, 2]);
        assert_eq!(
            n.report.privacy_unit,
            "unit: patient, max_rows 2, max_groups 1"
        );
        // Patient 1 keeps its first two visits: 10 + 20 (+ 5 of patient 2), 3 rows.
        let v = local_vector(&p, &d, &RoomParams::default()).expect("vector");
        assert_eq!(v, vec![3_500, 3]);
        // An exact room releases exact totals (no hidden count): no bound, no unit.
        let exact = RoomParams {
            release: ReleaseMode::Exact,
            ..Default::default()
        };
        let v = local_vector(&p, &d, &exact).expect("vector");
        assert_eq!(v, vec![10_500]);
        let rows = ds(&[1.0], true);
        let l = layout(&p, &rows.schema, &RoomParams::default()).expect("layout");
        assert_eq!(
            calibrate(&l, "patients", 1.0)
                .expect("noise")
                .report
                .privacy_unit,
            "row"
        );
    }

    #[test]
    fn dp_rooms_refuse_sums_without_bounds_and_clamp_into_them() {
        let p = plan(&[(AggFunc::Sum, Some("cost"))]);
        let err =
            layout(&p, &ds(&[1.0], false).schema, &RoomParams::default()).expect_err("no bounds");
        assert_eq!(err.code(), "missing_bounds");
        assert!(
            err.to_string()
                .contains("prism-node --config node.toml bounds patients cost"),
            "{err}"
        );
        let exact = RoomParams {
            release: ReleaseMode::Exact,
            ..Default::default()
        };
        assert!(layout(&p, &ds(&[1.0], false).schema, &exact).is_ok());
        // A value of 1000 counts as the declared maximum, 50.
        let v = local_vector(&p, &ds(&[1_000.0, 1.0], true), &RoomParams::default()).expect("v");
        assert_eq!(v, vec![5_100, 2]);
    }

    /// Three parties each noise their own vector; the decoded total is near the truth, inside
    /// the conservative 95 % interval at least that often, and small groups are suppressed.
    #[test]
    fn noisy_totals_stay_within_the_claimed_interval_and_small_groups_are_suppressed() {
        let p = plan(&[(AggFunc::Count, None)]);
        let params = RoomParams {
            min_group_size: 10,
            ..Default::default()
        };
        let parties: Vec<Dataset> = (0..3).map(|i| ds(&vec![1.0; 20 + i], true)).collect();
        let l = layout(&p, &parties[0].schema, &params).expect("layout");
        // COUNT(*) is the row count: one component.
        assert_eq!(l.components(), 1);
        let noises: Vec<Noise> = (0..3)
            .map(|_| calibrate(&l, "patients", 0.5).expect("noise"))
            .collect();
        let reports: Vec<&PartyNoise> = noises.iter().map(|n| &n.report).collect();
        let total_noise = total_noise(&l, &reports);
        let half = total_noise[0].ci95_half_width;
        assert!(half > 0.0 && total_noise[0].std_dev > 0.0);
        let mut rng = os_seeded();
        let (mut inside, draws) = (0, 400);
        for _ in 0..draws {
            let vectors: Vec<Vec<u64>> = parties
                .iter()
                .zip(&noises)
                .map(|(d, n)| {
                    let mut v = local_vector(&p, d, &params).expect("v");
                    n.add_to(&mut v, "patients").expect("noise");
                    v
                })
                .collect();
            let shared: Vec<Vec<Vec<u64>>> =
                vectors.iter().map(|v| split(v, 3, &mut rng)).collect();
            let partials: Vec<Vec<u64>> = (0..3)
                .map(|j| combine(l.len(), shared.iter().map(|s| s[j].as_slice())))
                .collect();
            let total = combine(l.len(), partials.iter().map(Vec::as_slice));
            let t = decode_total(&p, &parties[0].schema, &params, &total).expect("decode");
            let got = t.table.rows[0][0].as_i64().expect("count");
            if ((got - 63) as f64).abs() <= half {
                inside += 1;
            }
        }
        assert!(
            inside as f64 >= 0.95 * draws as f64,
            "{inside} of {draws} inside ±{half}"
        );

        // A group of 1 is held back (with overwhelming probability at this ε, its noisy count
        // is below 10), never released as 1.
        let one = ds(&[1.0], true);
        let mut v = local_vector(&p, &one, &params).expect("v");
        noises[0].add_to(&mut v, "patients").expect("noise");
        let t = decode_total(&p, &one.schema, &params, &v).expect("decode");
        assert!(t.table.rows.iter().all(|r| r[0] != serde_json::json!(1)));
        let exact = RoomParams {
            release: ReleaseMode::Exact,
            min_group_size: 10,
            ..Default::default()
        };
        let v = local_vector(&p, &one, &exact).expect("v");
        let t = decode_total(&p, &one.schema, &exact, &v).expect("decode");
        assert!(t.table.rows.is_empty());
        assert_eq!(t.suppressed_groups, 1);
    }
}
