//! Answering the coordinator's requests: policy checks, budget reservation, execution.
//!
//! The node is the authority: it re-checks every plan against its own policy and its own
//! budget ledger, whatever the coordinator decided. For DP the order is fixed: reserve the
//! estimated cost, compute, commit the actual cost, and only then let the answer leave.

use std::sync::Arc;
use std::time::Instant;

use prism_common::backend::{self, BackendId};
use prism_common::dp::{self, DpParams};
use prism_common::metrics::Outcome;
use prism_common::plan::{Output, Plan, Predicate};
use prism_common::schema::Dataset;
use prism_common::wire::{ErrorBody, Execution, PrivacyParams, Request, Response};

use crate::NodeState;
use crate::store::StoreError;

fn refuse(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

pub(crate) fn store_err(e: StoreError) -> ErrorBody {
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
pub(crate) fn filtered_columns(plan: &Plan) -> Vec<&str> {
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
pub(crate) fn admit(
    state: &NodeState,
    backend: BackendId,
    dataset: &str,
    plan: &Plan,
) -> Result<Arc<Dataset>, ErrorBody> {
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
    let ds = state.dataset(dataset).ok_or_else(|| {
        refuse(
            "unknown_dataset",
            format!("dataset {dataset} does not exist on node {org}"),
        )
    })?;
    crate::policy::served_mode(state, backend, dataset)?;
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
    Ok(ds)
}

fn dp_params(p: PrivacyParams) -> DpParams {
    DpParams {
        epsilon: p.epsilon,
        delta: p.delta,
    }
}

fn dp_refusal(e: dp::DpError) -> ErrorBody {
    refuse(e.code(), e.to_string())
}

/// Handles one request from the coordinator.
pub async fn handle(state: &Arc<NodeState>, req: Request) -> Response {
    match req {
        Request::Ping => Response::Pong,
        Request::He(_) => Response::Refused(refuse(
            "bad_request",
            "he requests are served on their own stream",
        )),
        Request::Mpc(prism_common::wire::MpcRequest::Invite {
            manifest,
            requester,
        }) => {
            let s = state.clone();
            match tokio::task::spawn_blocking(move || crate::rooms::invite(&s, manifest, requester))
                .await
            {
                Ok(Ok(r)) => Response::Mpc(r),
                Ok(Err(e)) => Response::Refused(e),
                Err(e) => Response::Refused(refuse("node_internal_error", e.to_string())),
            }
        }
        Request::Mpc(prism_common::wire::MpcRequest::Execute {
            manifest,
            attestations,
            peers,
            execution_id,
        }) => {
            let room = manifest.room_id.clone();
            let backend = manifest.backend;
            let started = Instant::now();
            let r =
                crate::rooms::execute(state, manifest, attestations, peers, &execution_id).await;
            let outcome = count(state, backend, r.as_ref().err());
            state
                .metrics
                .room_executed(outcome, started.elapsed().as_secs_f64());
            match r {
                Ok(r) => Response::Mpc(r),
                Err(e) => {
                    state
                        .audit_committed(
                            "coordinator",
                            "room_refused",
                            &room,
                            serde_json::json!({"code": e.code, "message": e.message}),
                        )
                        .await;
                    Response::Refused(e)
                }
            }
        }
        Request::Estimate {
            backend: BackendId::HeBackend,
            dataset,
            plan,
            params,
        } => {
            if plan.dataset != dataset {
                return Response::Refused(refuse("bad_request", "plan and dataset differ"));
            }
            match crate::he::estimate(state, &plan, Some(&params)) {
                Ok((mode, epsilon)) => Response::Estimated {
                    epsilon,
                    delta: 0.0,
                    release: Some(mode),
                },
                Err(e) => Response::Refused(e),
            }
        }
        Request::Estimate {
            backend,
            dataset,
            plan,
            params,
        } => {
            let ds = match admit(state, backend, &dataset, &plan) {
                Ok(ds) => ds,
                Err(e) => return Response::Refused(e),
            };
            match dp::estimate(
                &plan,
                &ds.schema,
                &dp_params(params),
                &state.config.policy.dp(),
            ) {
                Ok(c) => Response::Estimated {
                    epsilon: c.epsilon,
                    delta: c.delta,
                    release: Some(prism_common::release::ReleaseMode::Dp),
                },
                Err(e) => Response::Refused(dp_refusal(e)),
            }
        }
        Request::Execute {
            run_id,
            backend,
            dataset,
            plan,
            params,
            requester,
        } => match execute(state, &run_id, backend, &dataset, plan, params, requester).await {
            Ok(x) => {
                count(state, backend, None);
                state
                    .metrics
                    .budget_spent(&dataset, x.epsilon_spent, x.delta_spent);
                Response::Executed(x)
            }
            Err(e) => {
                count(state, backend, Some(&e));
                // Committed before the refusal leaves, like a charge.
                state
                    .audit_committed(
                        "coordinator",
                        "query_refused",
                        &dataset,
                        serde_json::json!({"run_id": run_id, "backend": backend, "code": e.code, "message": e.message}),
                    )
                    .await;
                Response::Refused(e)
            }
        },
    }
}

/// Counts an execution on `/metrics`. A node answers every failure with a refusal frame; the
/// ones caused by another party (unreachable, late) count as failures, the rest as refusals.
pub(crate) fn count(state: &NodeState, backend: BackendId, refusal: Option<&ErrorBody>) -> Outcome {
    let outcome = match refusal {
        None => Outcome::Completed,
        Some(e) if e.code.starts_with("party_") => Outcome::Failed,
        Some(e) => {
            state.metrics.refusal(backend, &e.code);
            Outcome::Refused
        }
    };
    state.metrics.run(backend, outcome);
    outcome
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ErrorBody> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| refuse("node_internal_error", format!("worker failed: {e}")))
}

async fn execute(
    state: &Arc<NodeState>,
    run_id: &str,
    backend: BackendId,
    dataset: &str,
    plan: Plan,
    params: PrivacyParams,
    requester: Option<prism_common::wire::Requester>,
) -> Result<Execution, ErrorBody> {
    let ds = admit(state, backend, dataset, &plan)?;
    let asked = crate::provenance::asked(requester.as_ref(), &plan);
    let policy = state.config.policy.dp();
    let dparams = dp_params(params);
    let cost = dp::estimate(&plan, &ds.schema, &dparams, &policy).map_err(dp_refusal)?;

    let store = state.store.clone();
    let (name, rid) = (dataset.to_string(), run_id.to_string());
    let reservation = blocking(move || store.reserve(&name, cost.epsilon, cost.delta, &rid))
        .await?
        .map_err(store_err)?;

    let started = Instant::now();
    let outcome = blocking(move || dp::release(&plan, &ds, &dparams, &policy)).await;
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
            blocking(move || store.settle(&rid, Some(charge), "released", extra))
                .await?
                .map_err(store_err)?;
            let proof = serde_json::to_value(&release.proof).unwrap_or(serde_json::Value::Null);
            Ok(Execution {
                table: release.table,
                proof,
                epsilon_spent: charge.0,
                delta_spent: charge.1,
                compute_ms,
            })
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
