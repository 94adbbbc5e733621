//! What the node checks before any HE work: that it serves `he_backend`, the dataset and the
//! query's shape against its policy, the release mode and what it will cost; and the public
//! text domains the key holder encodes constants against.

use std::sync::Arc;

use prism_common::backend::BackendId;
use prism_common::he::{HeError, HeQuery, TextDomain};
use prism_common::release::ReleaseMode;
use prism_common::schema::{ColumnData, ColumnType};
use prism_common::wire::{ErrorBody, HeResponse, PrivacyParams};

use crate::NodeState;

use super::{cells_of, he_refusal, refuse};

pub(super) fn serves_he(state: &NodeState) -> Result<(), ErrorBody> {
    if state.config.policy.backends.contains(&BackendId::HeBackend) {
        return Ok(());
    }
    Err(refuse(
        "backend_not_served",
        format!(
            "node {} does not serve he_backend: its policy does not list it",
            state.org
        ),
    ))
}

pub(super) fn dataset(
    state: &NodeState,
    name: &str,
) -> Result<Arc<prism_common::schema::Dataset>, ErrorBody> {
    if let Some(refusal) = crate::sources::refuse_backend(state, BackendId::HeBackend, name) {
        return Err(refusal);
    }
    state.dataset(name).ok_or_else(|| {
        refuse(
            "unknown_dataset",
            format!("dataset {name} does not exist on node {}", state.org),
        )
    })
}

/// The public encoding domains of text filter columns.
pub(super) fn domains(
    state: &NodeState,
    name: &str,
    columns: &[String],
) -> Result<HeResponse, ErrorBody> {
    serves_he(state)?;
    let ds = dataset(state, name)?;
    let mode = crate::policy::served_mode(state, BackendId::HeBackend, name)?;
    if mode == ReleaseMode::Exact {
        crate::policy::check_exact_columns(
            state,
            BackendId::HeBackend,
            &ds,
            columns.iter().map(String::as_str),
        )?;
    }
    let policy = &state.config.policy;
    let mut out = Vec::new();
    for c in columns {
        if !policy.may_filter(c) {
            return Err(refuse(
                "policy_violation",
                format!(
                    "node {} policy: column {c} may not be filtered on",
                    state.org
                ),
            ));
        }
        let Some((spec, ColumnData::Text { dict, .. })) = ds.column(c) else {
            return Err(he_refusal(HeError::Column {
                column: c.clone(),
                reason: format!("not a text column of dataset {name}"),
            }));
        };
        let domain = TextDomain::of(spec, dict);
        if domain.values.len() > policy.he_max_distinct_values {
            // The exact count of a column's values is not public: say only that it is over.
            return Err(he_refusal(HeError::Policy(format!(
                "column {c} has more distinct values than the {} this node evaluates encrypted \
                 filters on (policy he_max_distinct_values)",
                policy.he_max_distinct_values
            ))));
        }
        out.push(domain);
    }
    Ok(HeResponse::Domains { domains: out })
}

/// Checks the shape against this node's policy.
pub(super) fn admit(
    state: &NodeState,
    query: &HeQuery,
) -> Result<Arc<prism_common::schema::Dataset>, ErrorBody> {
    serves_he(state)?;
    let ds = dataset(state, &query.dataset)?;
    let (org, policy) = (&state.org, &state.config.policy);
    for c in query.values.iter().filter_map(|v| v.column()) {
        if !policy.may_aggregate(c) {
            return Err(refuse(
                "policy_violation",
                format!("node {org} policy: column {c} may not be aggregated"),
            ));
        }
    }
    for f in &query.filter {
        if !policy.may_filter(&f.column) {
            return Err(refuse(
                "policy_violation",
                format!(
                    "node {org} policy: column {} may not be filtered on",
                    f.column
                ),
            ));
        }
        if ds
            .column(&f.column)
            .is_some_and(|(s, _)| s.ty == ColumnType::Float)
        {
            return Err(he_refusal(HeError::Column {
                column: f.column.clone(),
                reason: "he_backend does not filter float columns".into(),
            }));
        }
    }
    Ok(ds)
}

/// How this node will release one HE answer, decided before any work.
pub(super) enum ReleasePlan {
    /// Noise calibrated to the analyst's ε, charged to the dataset's budget.
    Dp { epsilon: f64 },
    /// The exact answer, gated by the minimum group size under encryption.
    Exact { k: u64 },
}

/// The release mode's checks: identifying columns for exact answers; ε for dp ones.
pub(super) fn release_plan<'a>(
    state: &NodeState,
    ds: &prism_common::schema::Dataset,
    filter_columns: impl IntoIterator<Item = &'a str>,
    privacy: Option<&PrivacyParams>,
) -> Result<ReleasePlan, ErrorBody> {
    let policy = &state.config.policy;
    let dataset = &ds.schema.name;
    match crate::policy::served_mode(state, BackendId::HeBackend, dataset)? {
        ReleaseMode::Exact => {
            crate::policy::check_exact_columns(state, BackendId::HeBackend, ds, filter_columns)?;
            Ok(ReleasePlan::Exact {
                k: policy.min_group_size,
            })
        }
        _ => {
            let Some(p) = privacy else {
                return Err(refuse(
                    "epsilon_required",
                    format!(
                        "node {} releases he_backend answers on dataset {} with differential \
                         privacy: the query must say what ε it may spend",
                        state.org, dataset
                    ),
                ));
            };
            if !(p.epsilon.is_finite() && p.epsilon > 0.0) {
                return Err(refuse(
                    "invalid_epsilon",
                    format!("epsilon must be a finite number > 0; got {}", p.epsilon),
                ));
            }
            if p.epsilon > policy.max_epsilon_per_query {
                return Err(refuse(
                    "policy_violation",
                    format!(
                        "node {} policy: epsilon {} is over its per-query limit {}",
                        state.org, p.epsilon, policy.max_epsilon_per_query
                    ),
                ));
            }
            Ok(ReleasePlan::Dp { epsilon: p.epsilon })
        }
    }
}

/// Estimates an HE query's cost under this node's release mode (validation: nothing is
/// evaluated and no budget is touched).
pub fn estimate(
    state: &NodeState,
    plan: &prism_common::plan::Plan,
    privacy: Option<&PrivacyParams>,
) -> Result<(ReleaseMode, f64), ErrorBody> {
    let ds = dataset(state, &plan.dataset)?;
    let values = prism_common::he::encode::values_for(plan, &ds.schema).map_err(he_refusal)?;
    let query = HeQuery {
        dataset: plan.dataset.clone(),
        values,
        filter: vec![],
    };
    // The same admission as an evaluation (served, aggregated columns), plus the filter
    // columns the shape would carry.
    let ds = admit(state, &query)?;
    let filtered = crate::policy::filtered_columns(plan);
    if let Some(c) = filtered.iter().find(|c| !state.config.policy.may_filter(c)) {
        return Err(refuse(
            "policy_violation",
            format!(
                "node {} policy: column {c} may not be filtered on",
                state.org
            ),
        ));
    }
    match release_plan(state, &ds, filtered, privacy)? {
        ReleasePlan::Exact { .. } => Ok((ReleaseMode::Exact, 0.0)),
        ReleasePlan::Dp { epsilon } => {
            let mut cells = cells_of(&query);
            let noise = prism_common::he::release::calibrate_noise(&mut cells, &ds, epsilon)
                .map_err(he_refusal)?;
            Ok((ReleaseMode::Dp, noise.iter().map(|n| n.epsilon()).sum()))
        }
    }
}
