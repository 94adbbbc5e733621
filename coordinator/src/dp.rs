//! The DP backend as the coordinator runs it: the plan goes to the holding node as one
//! `Execute` request; the node admits it under its policy, charges its ledger and answers with
//! the noisy table and its proof. Returns an outcome; [`crate::runs`] records it.

use std::sync::Arc;
use std::time::Duration;

use prism_common::identity::OrgId;
use prism_common::wire::{Execution, PrivacyParams, Request, Response};
use tracing::warn;

use crate::CoordState;
use crate::model::{DatasetRecord, QueryRecord, Released, RunFailure, RunOutcome};

/// Sends `query` to the node holding `dataset` for run `run_id` and returns its answer.
pub async fn execute(
    state: &CoordState,
    query: &QueryRecord,
    dataset: &DatasetRecord,
    run_id: &str,
    requester: prism_common::wire::Requester,
) -> RunOutcome {
    let req = Request::Execute {
        run_id: run_id.to_string(),
        backend: query.backend,
        dataset: dataset.name.clone(),
        plan: query.plan.clone(),
        params: PrivacyParams {
            epsilon: query.epsilon,
            delta: query.delta,
        },
        requester: Some(requester),
    };
    let timeout = Duration::from_secs(state.config.run_timeout_secs);
    match state.nodes.call(&dataset.organization, &req, timeout).await {
        Ok(Response::Executed(x)) => Ok(released(state, query, dataset, x)),
        Ok(Response::Refused(e)) => {
            state.metrics.refusal(query.backend, &e.code);
            Err(RunFailure {
                code: e.code,
                message: e.message,
                refused: true,
                details: e.details.map(|d| serde_json::json!({"refusal": d})),
            })
        }
        Ok(other) => Err(RunFailure::new(
            "protocol_error",
            format!("unexpected answer from the node: {other:?}"),
        )),
        Err(e) => Err(RunFailure::new(e.code(), e.to_string())),
    }
}

/// The run's answer from a node's execution (delivered at once, or collected later).
pub fn released(
    state: &CoordState,
    query: &QueryRecord,
    dataset: &DatasetRecord,
    x: Execution,
) -> Released {
    state
        .metrics
        .budget_spent(&query.dataset_id, x.epsilon_spent, x.delta_spent);
    Released {
        table: x.table,
        epsilon: x.epsilon_spent,
        delta: x.delta_spent,
        proof: serde_json::json!({
            "organization": dataset.organization,
            "node_compute_ms": x.compute_ms,
            "release": x.proof,
        }),
    }
}

/// Tells `org`'s node it may forget the answers of `run_ids` (in the background; a lost
/// acknowledgement only makes the node announce the answer again).
pub fn acknowledge(state: &Arc<CoordState>, org: &OrgId, run_ids: Vec<String>) {
    if run_ids.is_empty() {
        return;
    }
    let (s, org) = (state.clone(), org.clone());
    state.tasks.spawn(async move {
        let req = Request::Acknowledge { run_ids };
        if let Err(e) = s.nodes.call(&org, &req, ACK_TIMEOUT).await {
            warn!(%org, error = %e, "could not acknowledge answers; the node announces them again");
        }
    });
}

/// How long an acknowledgement may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
