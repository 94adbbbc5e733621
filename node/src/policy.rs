//! The release gate: what may leave this node, per backend and dataset, whatever the
//! coordinator or the analyst asks.
//!
//! The node policy (`[policy]` in node.toml) sets a release mode per backend; the owner can
//! override it per dataset (admin API / CLI, audited, published in the catalog). A backend the
//! policy does not list in `backends` is `off`. In `exact` mode the node refuses filtering or
//! grouping on identifying columns: those the policy or the owner names, and any column whose
//! values are all distinct (it singles out every row).

use std::collections::HashSet;

use prism_common::backend::BackendId;
use prism_common::release::{DatasetRelease, ReleaseMode, ReleaseModes};
use prism_common::schema::{ColumnData, Dataset};
use prism_common::wire::ErrorBody;

use crate::NodeState;

fn refuse(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
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
