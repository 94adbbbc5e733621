//! Every request from the coordinator, in one place: a stream's first frame names the request;
//! HE streams are handed to the HE executor (they carry blobs after the frame), everything
//! else is answered here with one match and one answer frame.

use std::sync::Arc;
use std::time::Instant;

use prism_common::backend::BackendId;
use prism_common::wire::{self, Request, Response};
use tracing::warn;

use crate::NodeState;
use crate::policy::refuse;

/// Reads one request from a stream the coordinator opened, answers it and closes the stream.
pub async fn serve_stream(
    state: Arc<NodeState>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let resp = match wire::read_msg::<_, Request>(&mut recv, state.config.max_frame).await {
        // HE streams carry blobs after the frame: the HE executor owns the whole stream.
        Ok(Request::He(req)) => return crate::he::serve(state, req, send, recv).await,
        // A room's execution ends when the coordinator stops waiting for it (another party
        // failed, or it stopped): it stops this stream, or its connection goes. The exchange
        // is then abandoned and the reservation released at once, not when a dial to a dead
        // peer gives up.
        Ok(req @ Request::Mpc(prism_common::wire::MpcRequest::Execute { .. })) => {
            let watch = crate::stream_watch::StopWatch::on(&send);
            handle(&state, req, &watch.gone).await
        }
        Ok(req) => handle(&state, req, &tokio_util::sync::CancellationToken::new()).await,
        Err(e) => {
            warn!(error = %e, "bad request frame from the coordinator");
            Response::Refused(wire::ErrorBody::new("bad_frame", e.to_string()))
        }
    };
    // A DP answer, or a dp room's partial sum: held with its charge until acknowledged.
    let charged = matches!(
        resp,
        Response::Executed(_)
            | Response::Mpc(prism_common::wire::MpcResponse::Partial { noise: Some(_), .. })
    );
    let mut delivered = match wire::write_msg(&mut send, &resp).await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "could not answer the coordinator");
            false
        }
    };
    let _ = send.finish();
    // Let the coordinator read the answer before the stream is dropped.
    delivered &= matches!(send.stopped().await, Ok(None));
    if charged && !delivered {
        // The answer stays held (it was stored with its charge); the link announces it so the
        // coordinator can collect it.
        state.held_changed.notify_one();
    }
}

/// Answers one request (every kind but HE, whose stream [`serve_stream`] hands over).
async fn handle(
    state: &Arc<NodeState>,
    req: Request,
    abort: &tokio_util::sync::CancellationToken,
) -> Response {
    match req {
        Request::Ping => Response::Pong,
        Request::Collect { run_ids } => collect(state, run_ids).await,
        Request::Acknowledge { run_ids } => {
            let store = state.store.clone();
            match tokio::task::spawn_blocking(move || store.acknowledge(&run_ids)).await {
                Ok(Ok(count)) => Response::Acknowledged { count },
                Ok(Err(e)) => Response::Refused(refuse("node_internal_error", e.to_string())),
                Err(e) => Response::Refused(refuse("node_internal_error", e.to_string())),
            }
        }
        Request::He(_) => Response::Refused(refuse(
            "bad_request",
            "he requests are served on their own stream",
        )),
        Request::Mpc(prism_common::wire::MpcRequest::Invite {
            manifest,
            requester,
        }) => {
            let s = state.clone();
            match tokio::task::spawn_blocking(move || {
                crate::mpc::invitations::invite(&s, manifest, requester)
            })
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
            let r = crate::mpc::execute::execute(
                state,
                manifest,
                attestations,
                peers,
                &execution_id,
                abort,
            )
            .await;
            let outcome = state.count(backend, r.as_ref().err());
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
        } => match crate::dp::estimate(state, backend, &dataset, &plan, params) {
            Ok(c) => Response::Estimated {
                epsilon: c.epsilon,
                delta: c.delta,
                release: Some(prism_common::release::ReleaseMode::Dp),
            },
            Err(e) => Response::Refused(e),
        },
        Request::Execute {
            run_id,
            backend,
            dataset,
            plan,
            params,
            requester,
        } => match crate::dp::execute(state, &run_id, backend, &dataset, plan, params, requester)
            .await
        {
            Ok(x) => {
                state.count(backend, None);
                state
                    .metrics
                    .budget_spent(&dataset, x.epsilon_spent, x.delta_spent);
                Response::Executed(x)
            }
            Err(e) => {
                state.count(backend, Some(&e));
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

/// Most bytes of held answers one `Collected` answer carries (under the coordinator's frame
/// limit; held HE results are at most `he::MAX_HELD_RESULT` each).
const COLLECT_FRAME_BYTES: usize = 12 << 20;

/// Most run ids one `Collect` or `Acknowledge` may name.
pub const MAX_COLLECT: usize = 1024;

/// The held answers of `run_ids`, and which of them are still being computed.
async fn collect(state: &Arc<NodeState>, mut run_ids: Vec<String>) -> Response {
    run_ids.truncate(MAX_COLLECT);
    let answering: Vec<String> = state
        .answering
        .lock()
        .map(|a| run_ids.iter().filter(|r| a.contains(*r)).cloned().collect())
        .unwrap_or_default();
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.held_answers(&run_ids)).await {
        Ok(Ok(all)) => {
            // Encrypted results can be large: what does not fit one frame is left for the next
            // collection (reported as being answered, so the coordinator asks again).
            let (mut held, mut answering, mut bytes) = (Vec::new(), answering, 0usize);
            for h in all {
                bytes += h.frame_bytes();
                if held.is_empty() || bytes <= COLLECT_FRAME_BYTES {
                    held.push(h);
                } else {
                    answering.push(h.run_id);
                }
            }
            Response::Collected { held, answering }
        }
        Ok(Err(e)) => Response::Refused(refuse("node_internal_error", e.to_string())),
        Err(e) => Response::Refused(refuse("node_internal_error", e.to_string())),
    }
}
