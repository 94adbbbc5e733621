//! The coordinator as HE key holder: runs an he_backend query end to end.
//!
//! 1. Turn the plan into its public shape and the codes of its filter constants (text columns
//!    are encoded against the domain the holding node publishes for them).
//! 2. Encrypt each constant with the client key.
//! 3. Send the shape and the encrypted constants to the node; if it does not hold the key set
//!    (`unknown_key_id`), install it there and retry once.
//! 4. Decrypt the compressed result list and build the answer; the proof records the scheme,
//!    the key id, the encrypted operations and each phase's timing.
//!
//! The plan's encoding is kept (`HE_PENDING`) from before the request leaves until the run
//! ends, so an answer the node charged and held while the coordinator stopped can still be
//! read when it is collected ([`read_collected`], `crate::collect`).

pub mod exchange;
pub mod keys;
pub mod warm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_common::he::encode::{self as shape, Encoded};
use prism_common::he::holder::{answer, constant_widths, encrypt_constants};
use prism_common::he::release::Answer;
use prism_common::he::{HeError, UNKNOWN_KEY_CODE};
use prism_common::release::ReleaseMode;
use prism_common::wire::PrivacyParams;
use serde_json::json;
use tracing::{info, warn};

use crate::CoordState;
use crate::model::{DatasetRecord, HePending, QueryRecord, Released, RunFailure, RunOutcome};
use crate::store::HE_PENDING;
use exchange::{ExchangeError, Transfer};
use keys::{Held, KeyHolderError};

/// Why an HE run failed.
#[derive(Debug, thiserror::Error)]
pub enum HeRunError {
    /// The plan or data does not suit HE.
    #[error(transparent)]
    He(#[from] HeError),
    /// The key holder failed.
    #[error(transparent)]
    Keys(#[from] KeyHolderError),
    /// Talking to the node failed, or it refused.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// A worker thread failed.
    #[error("he worker failed: {0}")]
    Worker(String),
}

impl HeRunError {
    fn code(&self) -> String {
        match self {
            HeRunError::He(e) => e.code().into(),
            HeRunError::Keys(_) => "he_key_holder_error".into(),
            HeRunError::Exchange(e) => e.code(),
            HeRunError::Worker(_) => "coordinator_internal_error".into(),
        }
    }
}

/// Runs an he_backend query for run `run_id` end to end and returns its outcome.
pub async fn execute(
    state: &Arc<CoordState>,
    query: &QueryRecord,
    dataset: &DatasetRecord,
    run_id: &str,
    requester: &prism_common::wire::Requester,
) -> RunOutcome {
    let outcome = run_he(state, query, dataset, run_id, requester)
        .await
        .map_err(|e| {
            warn!(run_id, error = %e, "he run failed");
            RunFailure::new(e.code(), e.to_string())
        });
    // A run that failed because the node or the coordinator went away may still be completed
    // with the node's held answer; any other outcome is final.
    if !outcome
        .as_ref()
        .is_err_and(|f| crate::model::COLLECTIBLE.contains(&f.code.as_str()))
    {
        forget_pending(state, run_id);
    }
    outcome
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HeError> + Send + 'static,
) -> Result<(T, f64), HeRunError> {
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HeRunError::Worker(e.to_string()))??;
    Ok((out, started.elapsed().as_secs_f64() * 1000.0))
}

async fn run_he(
    state: &Arc<CoordState>,
    query: &QueryRecord,
    dataset: &DatasetRecord,
    run_id: &str,
    requester: &prism_common::wire::Requester,
) -> Result<Released, HeRunError> {
    let schema = dataset.schema();
    let plan = &query.plan;
    // Refuse what the catalog already rules out before any key or node work.
    shape::check_plan(plan)?;
    shape::values_for(plan, &schema)?;
    let org = &dataset.organization;
    let timeout = Duration::from_secs(state.config.run_timeout_secs);
    let deadline = Instant::now() + timeout;

    let held = keys::key_set(state).await?;
    let text = shape::text_filter_columns(plan, &schema);
    let domains = if text.is_empty() {
        vec![]
    } else {
        exchange::domains(state, org, &dataset.name, text, timeout).await?
    };
    let encoded = shape::encode(plan, &schema, &domains)?;
    let (k, e) = (held.keys.clone(), encoded.clone());
    let (constants, encrypt_ms) = blocking(move || encrypt_constants(&k, &e)).await?;

    let key_id = held.keys.key_id.clone();
    // Kept until the run ends: if the coordinator stops before it records the node's answer,
    // the node holds the charged answer and the restarted key holder reads it with this.
    let pending = HePending {
        key_id: key_id.clone(),
        encoded: encoded.clone(),
    };
    let (s, id) = (state.clone(), run_id.to_string());
    tokio::task::spawn_blocking(move || s.store.put(HE_PENDING, &id, &pending, None))
        .await
        .map_err(|e| HeRunError::Worker(e.to_string()))?
        .map_err(KeyHolderError::Store)?;
    let send = || {
        exchange::evaluate(
            state,
            org,
            run_id,
            &key_id,
            &encoded.query,
            PrivacyParams {
                epsilon: query.epsilon,
                delta: query.delta,
            },
            requester,
            &constants,
            deadline,
        )
    };
    // An install ahead of queries may be under way for this node: wait for it rather than
    // sending the keys twice.
    warm::wait_for_install(state, org).await;
    let mut transfer: Option<Transfer> = None;
    let reply = match send().await {
        Err(ExchangeError::Refused(e)) if e.code == UNKNOWN_KEY_CODE => {
            info!(%org, key_id, "node lacks the HE key set; installing it");
            state.he_installs.forget(org);
            transfer = warm::ensure_installed(state, org, &held.keys, timeout).await?;
            send().await?
        }
        other => other?,
    };

    let sent = Sent {
        constants: constants.len(),
        constant_bytes: Some(constants.iter().map(Vec::len).sum()),
        transfer,
        round_trip_ms: Some(reply.round_trip_ms),
        encrypt_ms: Some(encrypt_ms),
    };
    read_answer(
        dataset,
        &held,
        plan,
        &encoded,
        &reply.evaluation,
        reply.blob,
        &sent,
    )
    .await
}

/// Ends an HE run's kept encoding once nothing can be collected for it any more.
pub fn forget_pending(state: &Arc<CoordState>, run_id: &str) {
    let (s, id) = (state.clone(), run_id.to_string());
    state.tasks.spawn(async move {
        let _ = tokio::task::spawn_blocking(move || s.store.forget(HE_PENDING, &id)).await;
    });
}

/// Reads a held HE answer collected after the run lost it (`crate::collect`): decrypts it
/// with the key set its constants were encrypted under, as the run would have.
pub async fn read_collected(
    state: &Arc<CoordState>,
    query: &QueryRecord,
    dataset: &DatasetRecord,
    run_id: &str,
    held: prism_common::wire::HeldHe,
) -> Result<Released, RunFailure> {
    let (s, id) = (state.clone(), run_id.to_string());
    let pending = tokio::task::spawn_blocking(move || s.store.get(HE_PENDING, &id))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .ok_or_else(|| {
            RunFailure::new(
                "he_key_holder_error",
                "the encoding of this HE run was not kept, so its collected answer cannot be read; \
                 execute the query again",
            )
        })?;
    let fail = |e: HeRunError| RunFailure::new(e.code(), e.to_string());
    let keys = keys::key_set(state).await.map_err(|e| fail(e.into()))?;
    if keys.keys.key_id != pending.key_id {
        return Err(RunFailure::new(
            "he_key_holder_error",
            format!(
                "the answer was encrypted under key set {}, the key holder now has {}, so it \
                 cannot be read; execute the query again",
                pending.key_id, keys.keys.key_id
            ),
        ));
    }
    let sent = Sent {
        constants: pending.encoded.codes.len(),
        constant_bytes: None,
        transfer: None,
        round_trip_ms: None,
        encrypt_ms: None,
    };
    read_answer(
        dataset,
        &keys,
        &query.plan,
        &pending.encoded,
        &held.evaluation,
        held.result,
        &sent,
    )
    .await
    .map_err(fail)
}

/// What the key holder sent for a run (unknown after a restart).
struct Sent {
    constants: usize,
    constant_bytes: Option<usize>,
    transfer: Option<Transfer>,
    round_trip_ms: Option<f64>,
    encrypt_ms: Option<f64>,
}

/// Decrypts a node's answer and releases it with its guarantee and proof.
async fn read_answer(
    dataset: &DatasetRecord,
    held: &Held,
    plan: &prism_common::plan::Plan,
    encoded: &Encoded,
    evaluation: &prism_common::wire::HeEvaluation,
    blob: Vec<u8>,
    sent: &Sent,
) -> Result<Released, HeRunError> {
    let (k, e, p) = (held.keys.clone(), encoded.clone(), plan.clone());
    let cells = evaluation.cells.clone();
    let release = evaluation.release.clone();
    let (answered, decrypt_ms) =
        blocking(move || answer(&k, &p, &e, &blob, &cells, release.as_ref())).await?;
    let epsilon = evaluation.release.as_ref().map_or(0.0, |r| r.epsilon);
    let mut proof = proof(dataset, held, encoded, sent, evaluation, decrypt_ms);
    proof["release"] = release_proof(evaluation, &answered);
    Ok(Released {
        table: answered.table,
        epsilon,
        delta: 0.0,
        proof,
    })
}

/// The release's guarantee, as the node reported it: mode, mechanism, ε, noise per cell and
/// the confidence interval of each output column (dp), or the oblivious threshold (exact).
fn release_proof(ev: &prism_common::wire::HeEvaluation, answered: &Answer) -> serde_json::Value {
    let Some(r) = &ev.release else {
        return json!({"mode": "exact", "note": "the node reported no release step"});
    };
    let ci: serde_json::Map<String, serde_json::Value> = answered
        .ci95
        .iter()
        .map(|(c, h)| (c.clone(), json!(h)))
        .collect();
    let noise: Vec<serde_json::Value> = ev
        .cells
        .iter()
        .filter_map(|c| {
            c.noise.as_ref().map(|n| {
                json!({"value": c.value, "epsilon": n.epsilon, "noise_scale": n.scale,
                       "sensitivity": n.sensitivity, "ci95_half_width": prism_common::dp::noise::half_width(n.scale, 0.05)})
            })
        })
        .collect();
    match r.mode {
        ReleaseMode::Exact => json!({
            "mode": "exact",
            "guarantee": "none beyond the minimum group size: exact answers the data owner opted in to",
            "mechanism": "oblivious minimum group size: the node compared the encrypted count with k and zeroed every result below it, under encryption",
            "min_group_size": r.min_group_size,
            "epsilon": 0.0,
            "suppressed": answered.suppressed,
        }),
        _ => json!({
            "mode": "dp",
            "guarantee": "epsilon-differential privacy (add/remove one row), enforced and charged by the holding node",
            "mechanism": "discrete_laplace (OpenDP make_laplace), added by the node to the encrypted results",
            "epsilon": r.epsilon,
            "delta": 0.0,
            "noise": noise,
            "ci95_half_width": ci,
            "min_group_size": r.min_group_size,
            "suppressed": answered.suppressed,
            "accuracy": "each output is within its ci95_half_width of the exact answer with probability >= 95% (SUM with a non-zero lower bound: both noisy terms at 97.5%)",
        }),
    }
}

fn proof(
    dataset: &DatasetRecord,
    held: &Held,
    encoded: &Encoded,
    sent: &Sent,
    ev: &prism_common::wire::HeEvaluation,
    decrypt_ms: f64,
) -> serde_json::Value {
    let transfer = sent.transfer.as_ref();
    let note = if ev.homomorphic {
        "the node evaluated the encrypted filter once per distinct value of each filter column, \
         then selected and summed its groups' clear aggregates under encryption"
    } else {
        "no encrypted constant: no homomorphic evaluation was needed; the node encrypted the exact \
         result under the key holder's compact public key"
    };
    // The shape as the node saw it, less what would let an analyst test guesses about a
    // column's values: a text domain's digest and length (a dictionary check against them
    // confirms undeclared values), and the distinct-value and group counts.
    let mut shape = json!(encoded.query);
    if let Some(filters) = shape["filter"].as_array_mut() {
        for f in filters {
            if let Some(text) = f["encoding"].get_mut("text") {
                *text = json!({});
            }
        }
    }
    json!({
        "organization": dataset.organization,
        "backend": "he_backend",
        "scheme": prism_common::he::keys::describe(),
        "key_id": held.keys.key_id,
        "key_set": {
            "generated_this_run": held.generated_ms.is_some(),
            "loaded_from_store": held.loaded_ms.is_some(),
        },
        "key_transfer": transfer,
        "homomorphic_evaluation": ev.homomorphic,
        "note": note,
        "shape_sent_to_node": shape,
        "encrypted_constants": sent.constants,
        "constant_ciphertext_bits": constant_widths(encoded),
        "constant_bytes": sent.constant_bytes,
        "rows": ev.rows,
        "encrypted_operations": ev.ops.total(),
        "operations": ev.ops,
        "result_ciphertexts": ev.cells.len(),
        "result_layout": ev.cells,
        "result_bytes": ev.result_bytes,
        "timings_ms": {
            "key_generation": held.generated_ms,
            "key_load": held.loaded_ms,
            "key_transfer": transfer.map(|t| t.transfer_ms),
            "encrypt_constants": sent.encrypt_ms,
            "node_round_trip": sent.round_trip_ms,
            "node_key_load": ev.timings.key_load_ms,
            "node_preaggregation": ev.timings.preaggregate_ms,
            "node_evaluation": ev.timings.evaluate_ms,
            "node_compression": ev.timings.compress_ms,
            "decryption": decrypt_ms,
        },
        "learned": {
            "node": "the shape: dataset, columns, operators and how many constants; not the constants, not the result",
            "coordinator": "the result (as key holder for the requester)",
        },
    })
}
