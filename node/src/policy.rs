//! The release gate: what may leave this node, per backend and dataset, whatever the
//! coordinator or the analyst asks.
//!
//! The node policy (`[policy]` in node.toml) sets a release mode per backend; the owner can
//! override it per dataset (admin API / CLI, audited, published in the catalog). A backend the
//! policy does not list in `backends` is `off`. In `exact` mode the node refuses filtering or
//! grouping on identifying columns: those the policy or the owner names, and any column whose
//! values are all distinct (it singles out every row).
//!
//! Every backend passes [`admit`] (backends served, dataset, columns that may be aggregated or
//! filtered, release mode) before it touches data; refusals are built with [`refuse`].

use std::collections::HashSet;

use std::sync::Arc;

use prism_common::backend::{self, BackendId};
use prism_common::plan::{Output, Plan, Predicate};
use prism_common::release::{DatasetRelease, ReleaseMode, ReleaseModes};
use prism_common::schema::{ColumnData, Dataset};
use prism_common::wire::ErrorBody;

use crate::NodeState;
use crate::store::StoreError;

/// A refusal with a stable code and a message for the analyst.
pub fn refuse(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// The refusal for a store failure: an exhausted budget (with what remains), an unknown
/// dataset, or a store error.
pub fn store_refusal(e: StoreError) -> ErrorBody {
    match e {
        StoreError::BudgetExhausted {
            remaining_epsilon,
            remaining_delta,
            total_epsilon,
            ..
        } => {
            let mut b = refuse("budget_exhausted", e.to_string());
            b.details = Some(serde_json::json!({
                "remaining_epsilon": remaining_epsilon,
                "remaining_delta": remaining_delta,
                "total_epsilon": total_epsilon,
            }));
            b
        }
        StoreError::UnknownDataset(_) => refuse("unknown_dataset", e.to_string()),
        other => refuse("node_store_error", other.to_string()),
    }
}

fn predicate_columns<'a>(p: &'a Predicate, out: &mut Vec<&'a str>) {
    match p {
        Predicate::Compare { column, .. }
        | Predicate::In { column, .. }
        | Predicate::Between { column, .. }
        | Predicate::IsNull { column, .. } => out.push(column),
        Predicate::And(a, b) | Predicate::Or(a, b) => {
            predicate_columns(a, out);
            predicate_columns(b, out);
        }
        Predicate::Not(a) => predicate_columns(a, out),
    }
}

/// The columns a plan filters or groups on (WHERE, GROUP BY, key outputs).
pub fn filtered_columns(plan: &Plan) -> Vec<&str> {
    let mut filtered: Vec<&str> = plan.group_by.iter().map(String::as_str).collect();
    if let Some(f) = &plan.filter {
        predicate_columns(f, &mut filtered);
    }
    for o in &plan.outputs {
        if let Output::Key(k) = o {
            filtered.push(k);
        }
    }
    filtered
}

/// Checks a request against this node's policy and catalog; returns the dataset.
pub fn admit(
    state: &NodeState,
    backend: BackendId,
    dataset: &str,
    plan: &Plan,
) -> Result<Arc<Dataset>, ErrorBody> {
    check_request(state, backend, dataset, plan)?;
    // A database source has no rows here: only the DP executor serves it (`admit_dp`).
    if let Some(refusal) = crate::sources::refuse_backend(state, backend, dataset) {
        return Err(refusal);
    }
    let ds = state.dataset(dataset).ok_or_else(|| {
        refuse(
            "unknown_dataset",
            format!("dataset {dataset} does not exist on node {}", state.org),
        )
    })?;
    check_dataset(state, backend, dataset, plan)?;
    Ok(ds)
}

/// Where an admitted dataset's rows are.
pub enum Admitted {
    /// Held in memory (imported, or read from a file source).
    Memory(Arc<Dataset>),
    /// In a database: DP aggregates are pushed down.
    Remote(Arc<crate::sources::Remote>),
}

impl Admitted {
    /// The declared schema.
    pub fn schema(&self) -> &prism_common::schema::DatasetSchema {
        match self {
            Admitted::Memory(d) => &d.schema,
            Admitted::Remote(r) => &r.schema,
        }
    }
}

/// [`admit`] for the DP executor, which also serves datasets whose rows stay in a database.
pub fn admit_dp(
    state: &NodeState,
    backend: BackendId,
    dataset: &str,
    plan: &Plan,
) -> Result<Admitted, ErrorBody> {
    let Some(remote) = state.remote(dataset) else {
        return admit(state, backend, dataset, plan).map(Admitted::Memory);
    };
    check_request(state, backend, dataset, plan)?;
    if backend != BackendId::DpSandbox
        && let Some(refusal) = crate::sources::refuse_backend(state, backend, dataset)
    {
        return Err(refusal);
    }
    check_dataset(state, backend, dataset, plan)?;
    Ok(Admitted::Remote(remote))
}

/// The checks that do not depend on the dataset's data: backend served, plan and request agree.
fn check_request(
    state: &NodeState,
    backend: BackendId,
    dataset: &str,
    plan: &Plan,
) -> Result<(), ErrorBody> {
    let org = &state.org;
    if backend == BackendId::EnclaveBackend {
        let mut b = refuse("backend_not_implemented", backend::ENCLAVE_MESSAGE);
        b.details = Some(backend::enclave_refusal());
        return Err(b);
    }
    if !state.config.policy.backends.contains(&backend) {
        return Err(refuse(
            "backend_not_served",
            format!(
                "node {org} does not serve {backend}: its policy serves {}",
                state
                    .config
                    .policy
                    .backends
                    .iter()
                    .map(|b| b.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if backend == BackendId::HeBackend {
        return Err(refuse(
            "bad_request",
            "he_backend queries are evaluated on their own stream, not as a plain execution",
        ));
    }
    if plan.dataset != dataset {
        return Err(refuse(
            "bad_request",
            format!(
                "plan is over {} but the request names {dataset}",
                plan.dataset
            ),
        ));
    }
    Ok(())
}

/// The dataset's release mode and the policy's column rules.
fn check_dataset(
    state: &NodeState,
    backend: BackendId,
    dataset: &str,
    plan: &Plan,
) -> Result<(), ErrorBody> {
    let org = &state.org;
    served_mode(state, backend, dataset)?;
    let policy = &state.config.policy;
    for a in plan.aggregates() {
        if let Some(c) = &a.column
            && !policy.may_aggregate(c)
        {
            return Err(refuse(
                "policy_violation",
                format!("node {org} policy: column {c} may not be aggregated"),
            ));
        }
    }
    if let Some(c) = filtered_columns(plan)
        .into_iter()
        .find(|c| !policy.may_filter(c))
    {
        return Err(refuse(
            "policy_violation",
            format!("node {org} policy: column {c} may not be filtered or grouped on"),
        ));
    }
    Ok(())
}

/// The owner's settings for a dataset (none set: empty).
pub fn dataset_release(state: &NodeState, dataset: &str) -> DatasetRelease {
    state.store.dataset_release(dataset).unwrap_or_default()
}

/// The effective release modes of a dataset on this node.
pub fn modes(state: &NodeState, dataset: &str) -> ReleaseModes {
    let policy = &state.config.policy;
    let mut m = dataset_release(state, dataset).apply(policy.release);
    for b in [
        BackendId::DpSandbox,
        BackendId::HeBackend,
        BackendId::MpcBackend,
    ] {
        if !policy.backends.contains(&b) {
            let _ = m.set(b, ReleaseMode::Off);
        }
    }
    m
}

/// The release mode of `backend` for `dataset`, refusing `off`.
pub fn served_mode(
    state: &NodeState,
    backend: BackendId,
    dataset: &str,
) -> Result<ReleaseMode, ErrorBody> {
    let mode = modes(state, dataset).get(backend);
    if mode == ReleaseMode::Off {
        return Err(refuse(
            "backend_not_served",
            format!(
                "node {} does not serve {backend} for dataset {dataset}: its owner's release mode \
                 for it is off",
                state.org
            ),
        ));
    }
    if mode == ReleaseMode::Exact && state.config.policy.min_group_size < 2 {
        return Err(refuse(
            "policy_violation",
            format!(
                "node {}: exact releases need min_group_size >= 2; the policy has {}",
                state.org, state.config.policy.min_group_size
            ),
        ));
    }
    Ok(mode)
}

/// Whether every non-null value of a column is distinct and no value is missing (such a column
/// singles out each row).
fn all_distinct(data: &ColumnData, rows: usize) -> bool {
    if rows == 0 {
        return false;
    }
    match data {
        ColumnData::Text { dict, codes } => dict.len() == rows && codes.iter().all(Option::is_some),
        ColumnData::Integer(v) => {
            let mut seen = HashSet::with_capacity(v.len());
            v.iter().all(|x| x.is_some_and(|x| seen.insert(x)))
        }
        ColumnData::Float(v) => {
            let mut seen = HashSet::with_capacity(v.len());
            v.iter()
                .all(|x| x.is_some_and(|x| seen.insert(x.to_bits())))
        }
        ColumnData::Boolean(v) => {
            rows <= 2 && v.iter().all(Option::is_some) && {
                let t = v.iter().filter(|x| **x == Some(true)).count();
                rows == 1 || t == 1
            }
        }
    }
}

/// Why a column may not be filtered or grouped on in exact mode, if it may not.
pub fn identifying_reason(state: &NodeState, ds: &Dataset, column: &str) -> Option<String> {
    if state.config.policy.names_identifying(column) {
        return Some("the node policy marks it identifying".into());
    }
    let own = dataset_release(state, &ds.schema.name);
    if own
        .identifying_columns
        .iter()
        .any(|c| c.eq_ignore_ascii_case(column))
    {
        return Some("the data owner marks it identifying".into());
    }
    match ds.column(column) {
        Some((_, data)) if all_distinct(data, ds.rows) => {
            Some("its values are all distinct, so it singles out each row".into())
        }
        _ => None,
    }
}

/// Refuses an exact release that filters or groups on an identifying column.
pub fn check_exact_columns<'a>(
    state: &NodeState,
    backend: BackendId,
    ds: &Dataset,
    columns: impl IntoIterator<Item = &'a str>,
) -> Result<(), ErrorBody> {
    for c in columns {
        if let Some(why) = identifying_reason(state, ds, c) {
            return Err(refuse(
                "identifying_column",
                format!(
                    "node {}: {backend} releases exact answers for dataset {} and column {c} may not \
                     be filtered or grouped on: {why}",
                    state.org, ds.schema.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_distinct_columns_are_recognised() {
        assert!(all_distinct(
            &ColumnData::Integer(vec![Some(1), Some(2), Some(3)]),
            3
        ));
        assert!(!all_distinct(
            &ColumnData::Integer(vec![Some(1), Some(1), Some(3)]),
            3
        ));
        assert!(!all_distinct(
            &ColumnData::Integer(vec![Some(1), None, Some(3)]),
            3
        ));
        let text = ColumnData::Text {
            dict: vec!["a".into(), "b".into()],
            codes: vec![Some(0), Some(1)],
        };
        assert!(all_distinct(&text, 2));
        let text = ColumnData::Text {
            dict: vec!["a".into(), "b".into()],
            codes: vec![Some(0), Some(1), Some(1)],
        };
        assert!(!all_distinct(&text, 3));
        assert!(!all_distinct(&ColumnData::Boolean(vec![Some(true); 5]), 5));
    }
}
