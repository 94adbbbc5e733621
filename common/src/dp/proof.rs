//! The proof record of a DP release: which mechanisms ran, with which parameters, and what
//! they cost. It is serialized into the run's proof artifacts; it holds no row-level data
//! (only the number of released groups, which the table shows anyway).

use serde::{Deserialize, Serialize};

use super::calibrate::{Calibration, Denominator, Noise, Scalar, Stat};
use super::validate::{KeyMode, Kind};
use super::{Cost, DpParams};
use crate::schema::Bounds;

/// How the GROUP BY keys of a release were chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum KeyRelease {
    /// No GROUP BY: a single group.
    None,
    /// The cross product of the owner's declared public keys; costs no δ.
    PublicKeys {
        /// Number of keys in the cross product.
        keys: usize,
    },
    /// Keys found in the data whose noisy count cleared `threshold` (OpenDP
    /// `make_laplace_threshold`).
    Threshold {
        /// Smallest noisy count a key needs to appear.
        threshold: i64,
        /// δ of the threshold measurement.
        delta: f64,
    },
}

/// One noise addition inside a statistic (AVG has two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseComponent {
    /// What is noised, e.g. `sum(age - 60)` or `count(age)`.
    pub name: String,
    /// ε of this component.
    pub epsilon: f64,
    /// Discrete Laplace scale, in output units.
    pub noise_scale: f64,
    /// Sensitivity under add/remove one row (one privacy unit), in output units.
    pub sensitivity: f64,
    /// 95% confidence half-width of the noise, in output units.
    pub ci95_half_width: Option<f64>,
}

/// How one statistic was released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticProof {
    /// Output columns fed by this statistic (empty for the hidden gate count).
    pub outputs: Vec<String>,
    /// The aggregate, e.g. `AVG(age)`.
    pub aggregate: String,
    /// Whether it is the hidden count used only to gate groups.
    pub hidden: bool,
    /// Mechanism, e.g. `discrete_laplace`, `laplace_threshold`, `report_noisy_min`.
    pub mechanism: String,
    /// ε spent by this statistic (per group; groups compose in parallel).
    pub epsilon: f64,
    /// Noise scale in output units (for MIN / MAX: in score units).
    pub noise_scale: f64,
    /// Sensitivity under add/remove one row (one privacy unit), in output units (MIN / MAX:
    /// of the score vector).
    pub sensitivity: f64,
    /// Fixed-point factor used for a float column (100: cents), if any.
    pub fixed_point_scale: Option<i64>,
    /// The owner's declared bounds that values were clamped to.
    pub bounds: Option<Bounds>,
    /// 95% confidence half-width of the noise, in output units, where one exists.
    pub ci95_half_width: Option<f64>,
    /// How to read the accuracy.
    pub accuracy: String,
    /// The noise additions making up the statistic.
    pub components: Vec<NoiseComponent>,
}

/// Everything a verifier needs to know about how a DP table was produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpProof {
    /// Mechanism summary, e.g. `laplace_threshold + discrete_laplace`.
    pub mechanism: String,
    /// Total ε spent.
    pub epsilon: f64,
    /// Total δ spent.
    pub delta: f64,
    /// ε the analyst allowed.
    pub epsilon_requested: f64,
    /// δ the analyst allowed.
    pub delta_requested: f64,
    /// The privacy unit: `row` (row-level privacy), or `unit: <column>, max_rows k,
    /// max_groups g` (everything one unit contributes is protected, after bounding it to at
    /// most k rows in at most g groups; every sensitivity is k × the row-level one).
    #[serde(default = "row")]
    pub privacy_unit: String,
    /// Neighbouring relation.
    pub neighbouring: String,
    /// How costs compose.
    pub composition: String,
    /// How GROUP BY keys were released.
    pub key_release: KeyRelease,
    /// A group was released only if its noisy COUNT(*) was at least this (HAVING and the node's
    /// `min_group_size`; 0 = no gate).
    pub min_released_count: u64,
    /// How groups were gated and what the gate cost.
    #[serde(default)]
    pub gate: GateProof,
    /// Number of rows in the released table.
    pub groups_released: usize,
    /// One entry per statistic.
    pub statistics: Vec<StatisticProof>,
}

/// How the release decided which groups to show (HAVING, the node's `min_group_size`, the
/// key threshold), and what that cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateProof {
    /// `none` (every group is released), `public_row_count` (ungrouped and unfiltered: the
    /// dataset's row count, which the catalog publishes, is compared with the floor; no ε),
    /// `released_count` (the query's own noisy `COUNT(*)`; no extra ε) or `hidden_count` (a
    /// noisy `COUNT(*)` released to nobody).
    pub kind: String,
    /// ε spent on the gate beyond the released statistics (only `hidden_count`).
    pub epsilon: f64,
    /// Why the gate got this share.
    pub explanation: String,
}

fn row() -> String {
    "row".to_string()
}

/// 95% half-width of discrete Laplace noise of `scale` (mechanism units).
pub(crate) fn ci95(scale: f64) -> Option<f64> {
    if scale == 0.0 {
        return Some(0.0);
    }
    opendp::accuracy::discrete_laplacian_scale_to_accuracy(scale, 0.05).ok()
}

fn component(name: String, s: &Scalar, unit: f64) -> NoiseComponent {
    NoiseComponent {
        name,
        epsilon: s.epsilon,
        noise_scale: s.scale / unit,
        sensitivity: s.sensitivity as f64 / unit,
        ci95_half_width: ci95(s.scale).map(|a| a / unit),
    }
}

fn statistic(st: &Stat, gate: bool, gate_noise: Option<&Noise>, k: f64) -> StatisticProof {
    let unit = st.num.as_ref().map_or(1, |n| n.unit);
    let u = unit as f64;
    let col = st
        .label
        .split_once('(')
        .map_or("", |(_, r)| r.trim_end_matches(')'));
    let mut p = StatisticProof {
        outputs: st.outputs.clone(),
        aggregate: st.label.clone(),
        hidden: st.outputs.is_empty(),
        mechanism: "discrete_laplace".to_string(),
        epsilon: st.epsilon(),
        noise_scale: 0.0,
        sensitivity: 0.0,
        fixed_point_scale: (unit != 1).then_some(unit),
        bounds: st.num.as_ref().map(|n| n.declared),
        ci95_half_width: None,
        accuracy: String::new(),
        components: Vec::new(),
    };
    match &st.noise {
        Noise::Laplace(s) => {
            let c = component(st.label.to_lowercase(), s, u);
            (p.noise_scale, p.sensitivity, p.ci95_half_width) =
                (c.noise_scale, c.sensitivity, c.ci95_half_width);
            p.accuracy = "the released value is within ±ci95_half_width of the exact clamped value with 95% probability".into();
            if gate {
                p.accuracy.push_str(
                    "; groups are released only if this noisy count reaches min_released_count",
                );
            }
            p.components.push(c);
        }
        Noise::Threshold {
            scale,
            threshold,
            epsilon,
            ..
        } => {
            p.mechanism = "laplace_threshold".to_string();
            (p.noise_scale, p.sensitivity, p.ci95_half_width) = (*scale, k, ci95(*scale));
            p.accuracy = format!(
                "noise is within ±ci95_half_width with 95% probability; only keys whose noisy count reached {threshold} are released, so small released counts are biased upwards"
            );
            let name = "count(*) per key".to_string();
            p.components.push(NoiseComponent {
                name,
                epsilon: *epsilon,
                noise_scale: *scale,
                sensitivity: k,
                ci95_half_width: ci95(*scale),
            });
        }
        Noise::CenteredSum { sum, center } => {
            let c = *center as f64 / u;
            let comp = component(format!("sum({col} - {c})"), sum, u);
            (p.noise_scale, p.sensitivity, p.ci95_half_width) =
                (comp.noise_scale, comp.sensitivity, comp.ci95_half_width);
            p.accuracy = format!(
                "sum = {c} × the public row count + noisy sum({col} - {c}) ({col} is not_null and every row is selected, so the row count the catalog publishes is the number of values); the released value is within ±ci95_half_width of the exact clamped sum with 95% probability"
            );
            p.components.push(comp);
        }
        Noise::Avg { sum, count, center } => {
            let c_sum = component(format!("sum({col} - {})", *center as f64 / u), sum, u);
            let c_count = match (count, gate_noise) {
                (Denominator::Own(count), _) => {
                    p.mechanism = "discrete_laplace (sum and count)".to_string();
                    component(format!("count({col})"), count, 1.0)
                }
                (Denominator::PublicRows, _) => {
                    p.mechanism = "discrete_laplace (sum; public count)".to_string();
                    NoiseComponent {
                        name: format!("count({col}) = the public row count (exact, no ε)"),
                        epsilon: 0.0,
                        noise_scale: 0.0,
                        sensitivity: 0.0,
                        ci95_half_width: Some(0.0),
                    }
                }
                (Denominator::Gate, gate) => {
                    p.mechanism = "discrete_laplace (sum; the gate count)".to_string();
                    let scale = match gate {
                        Some(Noise::Laplace(s)) => s.scale,
                        Some(Noise::Threshold { scale, .. }) => *scale,
                        _ => f64::NAN,
                    };
                    NoiseComponent {
                        name: format!(
                            "count({col}) = the group's noisy COUNT(*) gate ({col} is not_null; its ε is counted there)"
                        ),
                        epsilon: 0.0,
                        noise_scale: scale,
                        sensitivity: k,
                        ci95_half_width: ci95(scale),
                    }
                }
            };
            (p.noise_scale, p.sensitivity) = (c_sum.noise_scale, c_sum.sensitivity);
            let (a_s, a_c) = (
                c_sum.ci95_half_width.unwrap_or(f64::NAN),
                c_count.ci95_half_width.unwrap_or(f64::NAN),
            );
            let half_range = st
                .num
                .as_ref()
                .map_or(0.0, |n| (n.hi - n.lo) as f64 / u / 2.0);
            let at = |n: f64| (a_s + half_range * a_c) / n;
            p.accuracy = format!(
                "avg = center + noisy sum / count (null if the count <= 0), clamped to the bounds; first-order 95% half-width for a group of n values ≈ (A_sum + |avg - center| · A_count) / n with A_sum = {a_s}, A_count = {a_c}, i.e. at most {:.4} at n = 100 and {:.4} at n = 1000",
                at(100.0),
                at(1000.0)
            );
            p.components = vec![c_sum, c_count];
        }
        Noise::Select {
            scale,
            candidates,
            epsilon,
            ..
        } => {
            let min = st.kind == Kind::Min;
            p.mechanism = format!(
                "report_noisy_{} (permute-and-flip)",
                if min { "min" } else { "max" }
            );
            (p.noise_scale, p.sensitivity) = (*scale, candidates.len() as f64 * k);
            let spacing = match (candidates.first(), candidates.last()) {
                (Some(a), Some(b)) if candidates.len() > 1 => {
                    (b - a) as f64 / u / (candidates.len() - 1) as f64
                }
                _ => 0.0,
            };
            p.accuracy = format!(
                "n/a: the release is one of {} candidates spaced about {spacing} apart across the bounds; scores are {} × #(x {} c) plus a tie-break rank",
                candidates.len(),
                candidates.len(),
                if min { "<" } else { ">" }
            );
            let name = format!("score vector of {} candidates", candidates.len());
            p.components.push(NoiseComponent {
                name,
                epsilon: *epsilon,
                noise_scale: *scale,
                sensitivity: p.sensitivity,
                ci95_half_width: None,
            });
        }
    }
    p
}

fn gate_proof(cal: &Calibration) -> GateProof {
    let hidden = cal
        .gate
        .and_then(|g| cal.stats.get(g))
        .is_some_and(|s| s.outputs.is_empty());
    let (kind, explanation) = match (cal.gate, hidden) {
        _ if cal.public_rows && cal.min_count > 0 => (
            "public_row_count",
            format!(
                "ungrouped and unfiltered: the result is released if the dataset's row count (public in the catalog) is at least {}; no noisy count, no ε",
                cal.min_count
            ),
        ),
        (None, _) => ("none", "no HAVING, no policy floor and no key threshold: every group is released".to_string()),
        (Some(_), false) => (
            "released_count",
            "the query's own noisy COUNT(*) gates the groups (post-processing, no extra ε); not_null averages divide by it".to_string(),
        ),
        (Some(_), true) => (
            "hidden_count",
            format!(
                "a noisy COUNT(*) released to nobody gates the groups; it only decides which groups appear, so it gets min({}, 1 / (statistics + 1)) of ε and the released statistics split the rest evenly; not_null averages divide by it",
                super::calibrate::MAX_GATE_SHARE
            ),
        ),
    };
    GateProof {
        kind: kind.to_string(),
        epsilon: cal.gate_share,
        explanation,
    }
}

/// Builds the proof of a release.
pub(crate) fn build(cal: &Calibration, params: &DpParams, groups_released: usize) -> DpProof {
    let key_release = match &cal.keys {
        KeyMode::Ungrouped => KeyRelease::None,
        KeyMode::Public(domains) => KeyRelease::PublicKeys {
            keys: domains.iter().map(Vec::len).product(),
        },
        KeyMode::Threshold => cal
            .stats
            .iter()
            .find_map(|s| match s.noise {
                Noise::Threshold {
                    threshold, delta, ..
                } => Some(KeyRelease::Threshold { threshold, delta }),
                _ => None,
            })
            .unwrap_or(KeyRelease::None),
    };
    let mut mechs: Vec<&str> = Vec::new();
    for s in &cal.stats {
        let m = match (&s.noise, s.kind) {
            (Noise::Threshold { .. }, _) => "laplace_threshold",
            (Noise::Select { .. }, Kind::Min) => "report_noisy_min",
            (Noise::Select { .. }, _) => "report_noisy_max",
            _ => "discrete_laplace",
        };
        if !mechs.contains(&m) {
            mechs.push(m);
        }
    }
    mechs.sort_by_key(|m| *m != "laplace_threshold");
    let Cost { epsilon, delta } = cal.cost;
    let gate_noise = cal.gate.and_then(|g| cal.stats.get(g)).map(|s| &s.noise);
    let k = cal.unit.map_or(1.0, |(_, b)| f64::from(b.max_rows));
    DpProof {
        mechanism: if mechs.is_empty() {
            "none".to_string()
        } else {
            mechs.join(" + ")
        },
        epsilon,
        delta,
        epsilon_requested: params.epsilon,
        delta_requested: params.delta,
        privacy_unit: cal.semantics.clone(),
        neighbouring: match cal.unit {
            None => "add or remove one row (unbounded differential privacy)".to_string(),
            Some(_) => format!(
                "add or remove all rows of one privacy unit ({}); each unit's contribution is bounded before aggregation",
                cal.semantics
            ),
        },
        composition: "sequential over statistics; parallel over disjoint groups".to_string(),
        key_release,
        min_released_count: cal.min_count,
        gate: gate_proof(cal),
        groups_released,
        statistics: cal
            .stats
            .iter()
            .enumerate()
            .map(|(i, s)| statistic(s, cal.gate == Some(i), gate_noise, k))
            .collect(),
    }
}
