//! The node's homomorphic-encryption executor: one stream per HE request from the coordinator.
//!
//! The node only ever sees a query's public shape (columns, operators, how many constants) and
//! one encrypted blob per constant. It re-checks the shape against its own policy and data,
//! pre-aggregates in the clear, evaluates on ciphertexts with the key holder's server key, and
//! answers with a compressed ciphertext list it cannot decrypt. A key set it does not hold is
//! refused with `unknown_key_id`; the coordinator then installs it (see [`keys`]).

mod admit;
pub mod keys;

pub use admit::estimate;
use admit::{ReleasePlan, admit, domains, release_plan};

use std::sync::Arc;
use std::time::Instant;

use prism_common::backend::BackendId;
use prism_common::he::cipher::read_constant;
use prism_common::he::eval::{Path, evaluate_released};
use prism_common::he::groups::{Limits, prepare};
use prism_common::he::keys::ServerKeyGuard;
use prism_common::he::release::{HeRelease, Post, calibrate_noise, draw, gate_cell};
use prism_common::he::{HeError, HeQuery, MAX_CONSTANT_BYTES, MAX_CONSTANTS, UNKNOWN_KEY_CODE};
use prism_common::release::ReleaseMode;
use prism_common::wire::{
    self, ErrorBody, HeEvaluation, HeRequest, HeResponse, HeldAnswer, HeldHe, HeldResult,
    NodeTimings, PrivacyParams, Response,
};
use tracing::{info, warn};

use crate::NodeState;

/// How often a running evaluation reports its progress to the coordinator.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Largest encrypted result held for collection with its charge (results are a few cells of
/// compressed ciphertexts, far below it; a larger one is still sent, but not held).
pub const MAX_HELD_RESULT: usize = 8 << 20;

/// Longest an encrypted evaluation may run on this node, whatever the coordinator asks.
pub const MAX_EVALUATION: std::time::Duration = std::time::Duration::from_secs(600);

fn refuse(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

fn he_refusal(e: HeError) -> ErrorBody {
    refuse(e.code(), e.to_string())
}

/// Counts and audits (committed before the refusal is sent) a refused HE query.
async fn refused(state: &NodeState, dataset: &str, run_id: Option<&str>, e: &ErrorBody) {
    state.count(BackendId::HeBackend, Some(e));
    state
        .audit_committed(
            "coordinator",
            "query_refused",
            dataset,
            serde_json::json!({"run_id": run_id, "backend": "he_backend", "code": e.code, "message": e.message}),
        )
        .await;
}

/// Serves one HE stream from the coordinator.
pub async fn serve(
    state: Arc<NodeState>,
    req: HeRequest,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    #[cfg(feature = "test-util")]
    let recording = state.seams.recording_he();
    #[cfg(feature = "test-util")]
    let mut got = crate::testing::Received {
        frame: serde_json::to_vec(&req).unwrap_or_default(),
        blobs: vec![],
    };
    #[cfg(feature = "test-util")]
    let mut record = |b: &[u8]| {
        if recording {
            got.blobs.push(b.to_vec());
        }
    };
    #[cfg(not(feature = "test-util"))]
    let mut record = |_: &[u8]| {};
    let answer = match req {
        HeRequest::Domains { dataset, columns } => {
            let out = domains(&state, &dataset, &columns);
            if let Err(e) = &out {
                // The query is refused before any constant is sent.
                refused(&state, &dataset, None, e).await;
            }
            out.map(|d| (d, None))
        }
        HeRequest::InstallKeys { key_id } => {
            match keys::install(&state, &key_id, &mut recv, &mut record).await {
                Ok(r) => Ok((r, None)),
                Err(e) => {
                    warn!(error = %e, key_id, "refused an HE key set");
                    Err(refuse(e.code(), e.to_string()))
                }
            }
        }
        HeRequest::Evaluate {
            run_id,
            key_id,
            query,
            privacy,
            requester,
            deadline_ms,
        } => {
            let dataset = query.dataset.clone();
            let budget = deadline_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(MAX_EVALUATION)
                .min(MAX_EVALUATION);
            // The shape is the plan the node sees: no constant appears in it.
            let asked = crate::provenance::asked(requester.as_ref(), &query);
            // A coordinator that stops waiting (it stopped the stream, crashed, or lost the
            // link) cannot receive the answer: the evaluation stops and nothing is charged.
            let watch = crate::stream_watch::StopWatch::on(&send);
            let out = evaluate_query(
                &state,
                &run_id,
                &key_id,
                query,
                privacy,
                asked,
                budget,
                &watch.gone,
                &mut recv,
                &mut record,
            )
            .await;
            drop(watch);
            match &out {
                // An unknown key set is a step of the protocol (the coordinator installs it and
                // asks again), not a refusal of the query.
                Err(e) if e.code == UNKNOWN_KEY_CODE => {}
                Err(e) => refused(&state, &dataset, Some(&run_id), e).await,
                Ok(_) => {
                    state.count(BackendId::HeBackend, None);
                }
            }
            out.map(|(r, blob)| (r, Some(blob)))
        }
    };
    #[cfg(feature = "test-util")]
    if recording {
        state.seams.record_he(got);
    }
    let evaluated = matches!(answer, Ok((HeResponse::Evaluated(_), _)));
    let written = match answer {
        Ok((resp, blob)) => match wire::write_msg(&mut send, &Response::He(resp)).await {
            Ok(()) => match blob {
                Some(b) => wire::write_bytes(&mut send, &b).await,
                None => Ok(()),
            },
            Err(e) => Err(e),
        },
        Err(e) => wire::write_msg(&mut send, &Response::Refused(e)).await,
    };
    if let Err(e) = &written {
        warn!(error = %e, "could not answer the coordinator's HE request");
    }
    let _ = send.finish();
    let delivered = written.is_ok() && matches!(send.stopped().await, Ok(None));
    if evaluated && !delivered {
        // A charged answer stays held; the link announces it so the coordinator can collect it.
        state.held_changed.notify_one();
    }
}

/// A layout with one cell per value (widths do not matter for the cost).
fn cells_of(query: &HeQuery) -> Vec<prism_common::he::ResultCell> {
    query
        .values
        .iter()
        .map(|v| prism_common::he::ResultCell {
            value: v.clone(),
            bits: 8,
            offset: 0,
            noise: None,
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn evaluate_query(
    state: &Arc<NodeState>,
    run_id: &str,
    key_id: &str,
    query: HeQuery,
    privacy: Option<PrivacyParams>,
    asked: serde_json::Value,
    budget: std::time::Duration,
    gone: &tokio_util::sync::CancellationToken,
    recv: &mut quinn::RecvStream,
    record: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(HeResponse, Vec<u8>), ErrorBody> {
    let received = Instant::now();
    // While it runs, a collection after a coordinator restart hears the run is being answered.
    let _answering = crate::dp::Answering::start(state, run_id);
    let bits = query.constant_bits();
    if bits.len() > MAX_CONSTANTS {
        return Err(refuse(
            "he_unsupported",
            format!(
                "{} encrypted constants; at most {MAX_CONSTANTS}",
                bits.len()
            ),
        ));
    }
    // Read every constant first, so the stream is consumed whatever the answer.
    let mut blobs = Vec::with_capacity(bits.len());
    for i in 0..bits.len() {
        let b = wire::read_bytes(recv, MAX_CONSTANT_BYTES)
            .await
            .map_err(|e| refuse("he_malformed_blob", format!("encrypted constant {i}: {e}")))?;
        record(&b);
        blobs.push(b);
    }
    let ds = admit(state, &query)?;
    let release = release_plan(
        state,
        &ds,
        query.filter.iter().map(|f| f.column.as_str()),
        privacy.as_ref(),
    )?;
    let Some((keys, key_load_ms)) = keys::get(state, key_id)
        .await
        .map_err(|e| refuse(e.code(), e.to_string()))?
    else {
        return Err(refuse(
            UNKNOWN_KEY_CODE,
            format!(
                "unknown key id {key_id}: node {} holds no such key set; install it first",
                state.org
            ),
        ));
    };
    let policy = &state.config.policy;
    let limits = Limits {
        max_distinct_values: policy.he_max_distinct_values,
        max_groups: policy.he_max_groups,
    };
    let started = Instant::now();
    // Under a privacy unit a dp release sees each unit's first `max_rows` rows only, whatever
    // the encrypted filter selects; the noise is calibrated to that (`calibrate_noise`).
    let ds = match &release {
        ReleasePlan::Dp { .. } => prism_common::dp::bounded_rows(&ds).map_or(ds, Arc::new),
        ReleasePlan::Exact { .. } => ds,
    };
    let (q, d) = (query.clone(), ds.clone());
    let prepared = tokio::task::spawn_blocking(move || prepare(&q, &d, &limits))
        .await
        .map_err(|e| refuse("node_internal_error", format!("he worker failed: {e}")))?;
    let mut prep = prepared.map_err(he_refusal)?;
    let preaggregate_ms = started.elapsed().as_secs_f64() * 1000.0;
    let gate = gate_cell(&prep.cells).map_err(he_refusal)?;

    // The release step, decided (and for dp, reserved in the ledger) before any encrypted work.
    let (post, reservation, he_release) = match release {
        ReleasePlan::Exact { k } => (
            Post::Threshold { gate, k },
            None,
            HeRelease {
                mode: ReleaseMode::Exact,
                epsilon: 0.0,
                min_group_size: k,
                gate,
            },
        ),
        ReleasePlan::Dp { epsilon } => {
            // OpenDP measurements are not `Send`: calibrate and draw before the next await.
            let (spent, z) = {
                let noise = calibrate_noise(&mut prep.cells, &ds, epsilon).map_err(he_refusal)?;
                let spent: f64 = noise.iter().map(|n| n.epsilon()).sum();
                (spent, draw(&noise).map_err(he_refusal)?)
            };
            let store = state.store.clone();
            let (name, rid) = (query.dataset.clone(), run_id.to_string());
            let r = tokio::task::spawn_blocking(move || store.reserve(&name, spent, 0.0, &rid))
                .await
                .map_err(|e| refuse("node_internal_error", format!("worker failed: {e}")))?
                .map_err(crate::policy::store_refusal)?;
            (
                Post::Noise(z),
                Some((r, spent)),
                HeRelease {
                    mode: ReleaseMode::Dp,
                    epsilon: spent,
                    min_group_size: policy.min_group_size,
                    gate,
                },
            )
        }
    };

    let q = query.clone();
    let p2 = prep.clone();
    // The deadline counts from the request's arrival; a stopping node cancels at once.
    let control =
        prism_common::he::control::Control::new(budget.saturating_sub(received.elapsed()));
    let ctl = control.clone();
    let (st, rid, gone2) = (state.clone(), run_id.to_string(), gone.clone());
    let (rows, groups, cells) = (prep.rows, prep.groups.len() as u64, prep.cells.len() as u64);
    let watcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tokio::select! {
                _ = st.shutdown.cancelled() => {
                    ctl.cancel();
                    return;
                }
                _ = gone2.cancelled() => {
                    ctl.cancel();
                    return;
                }
                _ = tick.tick() => st.send_event(prism_common::wire::NodeEvent::Progress(
                    prism_common::wire::Progress {
                        run_id: rid.clone(),
                        rows,
                        groups,
                        cells,
                        steps: ctl.steps(),
                        elapsed_ms: u64::try_from(ctl.elapsed().as_millis()).unwrap_or(u64::MAX),
                    },
                )),
            }
        }
    });
    let ctl = control.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _control = prism_common::he::control::ControlGuard::set(Some(ctl));
        let constants = {
            let _key = ServerKeyGuard::set(&keys.server_key);
            blobs
                .iter()
                .zip(&bits)
                .map(|(b, w)| read_constant(b, *w))
                .collect::<Result<Vec<_>, _>>()?
        };
        evaluate_released(&q, &p2, &constants, &keys, Path::Auto, &post)
    });
    let out = work.await;
    watcher.abort();
    let out = match out {
        Ok(Err(HeError::Stopped {
            after,
            steps,
            cancelled: true,
        })) if gone.is_cancelled() && !state.shutdown.is_cancelled() => Err(refuse(
            "coordinator_gone",
            format!(
                "the coordinator stopped waiting for this evaluation (it ended the request or its \
                 connection went); stopped after {:.1} s and {steps} steps; nothing was charged",
                after.as_secs_f64()
            ),
        )),
        Ok(r) => r.map_err(he_refusal),
        Err(e) => Err(refuse(
            "node_internal_error",
            format!("he worker failed: {e}"),
        )),
    };
    let out = out.map(|o| {
        let evaluation = HeEvaluation {
            cells: prep.cells.clone(),
            homomorphic: o.homomorphic,
            ops: o.ops.clone(),
            groups: prep.groups.len() as u64,
            distinct_values: prep.distinct.iter().map(|d| d.len() as u64).collect(),
            rows: prep.rows,
            timings: NodeTimings {
                key_load_ms,
                preaggregate_ms,
                evaluate_ms: o.evaluate_ms,
                compress_ms: o.compress_ms,
            },
            result_bytes: o.blob.len() as u64,
            release: Some(he_release.clone()),
        };
        (evaluation, o.blob)
    });
    // Commit the charge before the answer leaves (or release the reservation on failure). A
    // charged answer commits with a copy of it, held until the coordinator acknowledges the
    // run, so a coordinator that stops before it records the answer collects it later
    // (`store/held.rs`).
    if let Some((r, spent)) = reservation {
        let store = state.store.clone();
        let ok = out.is_ok();
        let held = match &out {
            Ok((evaluation, blob)) if blob.len() <= MAX_HELD_RESULT => Some(HeldAnswer {
                run_id: run_id.to_string(),
                result: HeldResult::He(HeldHe {
                    evaluation: evaluation.clone(),
                    epsilon_spent: spent,
                    result: blob.clone(),
                }),
            }),
            _ => None,
        };
        // The owner's audit says whether the answer was kept for collection (a result larger
        // than MAX_HELD_RESULT is not).
        let extra = crate::provenance::merged(
            asked.clone(),
            serde_json::json!({"backend": "he_backend", "answered": ok, "held": held.is_some(),
                               "result": {"cells": prep.cells.len(), "groups": prep.groups.len()}}),
        );
        let settled = tokio::task::spawn_blocking(move || {
            if ok {
                store.settle_holding(&r.id, Some((spent, 0.0)), "released", extra, held)
            } else {
                store.settle(&r.id, None, "release failed", serde_json::Value::Null)
            }
        })
        .await
        .map_err(|e| refuse("node_internal_error", format!("worker failed: {e}")))?;
        settled.map_err(crate::policy::store_refusal)?;
        if ok {
            state.budget_changed();
            state.metrics.budget_spent(&query.dataset, spent, 0.0);
        }
        #[cfg(feature = "test-util")]
        state.seams.stall_after_charge(&state.shutdown).await;
    }
    let (evaluation, blob) = out?;
    info!(
        run_id,
        key_id,
        groups = evaluation.groups,
        ops = evaluation.ops.total(),
        mode = %he_release.mode,
        "answered an HE query"
    );
    state.audit_async(
        "coordinator",
        "query_answered",
        &query.dataset,
        crate::provenance::merged(
            serde_json::json!({
                "run_id": run_id, "backend": "he_backend", "key_id": key_id,
                "shape": {"values": query.values, "filter": query.filter},
                "release": he_release,
                "encrypted_operations": evaluation.ops.total(), "groups": evaluation.groups,
            }),
            asked,
        ),
    );
    Ok((HeResponse::Evaluated(evaluation), blob))
}
