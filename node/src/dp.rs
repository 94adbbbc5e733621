//! The DP executor: admit the plan, reserve its estimated cost in the ledger, compute the
//! release with OpenDP on a blocking thread, commit the actual charge (with its audit entry),
//! and only then let the answer leave. A failure releases the reservation.

use std::sync::Arc;
use std::time::Instant;

use prism_common::backend::BackendId;
use prism_common::dp::{self, Cost, DpParams};
use prism_common::plan::Plan;
use prism_common::wire::{ErrorBody, Execution, PrivacyParams};

use crate::NodeState;
use crate::policy::{Admitted, admit_dp, refuse, store_refusal};

fn dp_params(p: PrivacyParams) -> DpParams {
    DpParams {
        epsilon: p.epsilon,
        delta: p.delta,
    }
}

pub(crate) fn dp_refusal(e: dp::DpError) -> ErrorBody {
    refuse(e.code(), e.to_string())
}

/// The cost the node will charge for `plan` over `dataset` (what `Estimate` answers).
pub fn estimate(
    state: &NodeState,
    backend: BackendId,
    dataset: &str,
    plan: &Plan,
    params: PrivacyParams,
) -> Result<Cost, ErrorBody> {
    let held = admit_dp(state, backend, dataset, plan)?;
    let (dparams, policy) = (dp_params(params), state.config.policy.dp());
    if let Admitted::Remote(r) = &held {
        dp::pushdown(plan, &r.schema, &dparams, &policy).map_err(dp_refusal)?;
    }
    dp::estimate(plan, held.schema(), &dparams, &policy).map_err(dp_refusal)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ErrorBody> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| refuse("node_internal_error", format!("worker failed: {e}")))
}

/// Executes a DP release for run `run_id` and charges it.
pub async fn execute(
    state: &Arc<NodeState>,
    run_id: &str,
    backend: BackendId,
    dataset: &str,
    plan: Plan,
    params: PrivacyParams,
    requester: Option<prism_common::wire::Requester>,
) -> Result<Execution, ErrorBody> {
    let held = admit_dp(state, backend, dataset, &plan)?;
    let _answering = Answering::start(state, run_id);
    let asked = crate::provenance::asked(requester.as_ref(), &plan);
    let policy = state.config.policy.dp();
    let dparams = dp_params(params);
    if let Admitted::Remote(r) = &held {
        dp::pushdown(&plan, &r.schema, &dparams, &policy).map_err(dp_refusal)?;
    }
    let cost = dp::estimate(&plan, held.schema(), &dparams, &policy).map_err(dp_refusal)?;

    let store = state.store.clone();
    let (name, rid) = (dataset.to_string(), run_id.to_string());
    let reservation = blocking(move || store.reserve(&name, cost.epsilon, cost.delta, &rid))
        .await?
        .map_err(store_refusal)?;

    let started = Instant::now();
    let outcome = match held {
        Admitted::Memory(ds) => blocking(move || dp::release(&plan, &ds, &dparams, &policy)).await,
        // The exact aggregate from the database, then the same release; a source that fails
        // is an `Err` here, so the reservation below is released and nothing is charged.
        Admitted::Remote(r) => crate::sources::pushdown::release(&r, plan, dparams, policy).await,
    };
    let compute_ms = started.elapsed().as_secs_f64() * 1000.0;

    let store = state.store.clone();
    let rid = reservation.id.clone();
    match outcome {
        Ok(Ok(release)) => {
            let charge = (release.cost.epsilon, release.cost.delta);
            // Commit the charge before the answer leaves the node (see Store::open). The same
            // transaction writes the audit entry that records the answer.
            let extra = crate::provenance::merged(
                asked,
                serde_json::json!({"backend": backend, "answered": true,
                                   "result": crate::provenance::table_shape(&release.table)}),
            );
            let proof = serde_json::to_value(&release.proof).unwrap_or(serde_json::Value::Null);
            let execution = Execution {
                table: release.table,
                proof,
                epsilon_spent: charge.0,
                delta_spent: charge.1,
                compute_ms,
            };
            // The charge and a copy of the answer commit together: held until the coordinator
            // acknowledges the run, so a lost answer can be collected again (`store/held.rs`).
            let held = prism_common::wire::HeldAnswer::dp(run_id, execution.clone());
            blocking(move || {
                store.settle_holding(&rid, Some(charge), "released", extra, Some(held))
            })
            .await?
            .map_err(store_refusal)?;
            state.budget_changed();
            #[cfg(feature = "test-util")]
            state.seams.stall_after_charge(&state.shutdown).await;
            Ok(execution)
        }
        Ok(Err(e)) => {
            let _ = blocking(move || {
                store.settle(&rid, None, "release refused", serde_json::Value::Null)
            })
            .await;
            Err(dp_refusal(e))
        }
        Err(e) => {
            let _ = blocking(move || {
                store.settle(&rid, None, "release failed", serde_json::Value::Null)
            })
            .await;
            Err(e)
        }
    }
}

/// Marks a run as being answered for as long as it lives (what `Request::Collect` reports as
/// `answering`).
pub(crate) struct Answering<'a> {
    state: &'a NodeState,
    run_id: String,
}

impl<'a> Answering<'a> {
    pub(crate) fn start(state: &'a NodeState, run_id: &str) -> Self {
        if let Ok(mut a) = state.answering.lock() {
            a.insert(run_id.to_string());
        }
        Answering {
            state,
            run_id: run_id.to_string(),
        }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if let Ok(mut a) = self.state.answering.lock() {
            a.remove(&self.run_id);
        }
    }
}
