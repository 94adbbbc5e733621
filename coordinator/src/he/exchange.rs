//! The coordinator's side of the HE streams: ask a node for text domains, install a key set,
//! and send an encrypted query and read back its encrypted answer.

use std::time::{Duration, Instant};

use prism_common::he::keys::KeySet;
use prism_common::he::{HeQuery, MAX_RESULT_BYTES, TextDomain};
use prism_common::identity::OrgId;
use prism_common::wire::{
    self, ErrorBody, HeEvaluation, HeRequest, HeResponse, PrivacyParams, Request, Requester,
    Response,
};

use crate::CoordState;
use crate::nodes::CallError;

/// Errors talking HE to a node.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The node is offline or the call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The stream broke or a frame was malformed.
    #[error("the node of {org} broke off the HE exchange: {reason}")]
    Transport {
        /// Organization.
        org: OrgId,
        /// What failed.
        reason: String,
    },
    /// The node answered something else than the exchange expects.
    #[error("the node of {org} answered an HE request with {answer}")]
    Protocol {
        /// Organization.
        org: OrgId,
        /// A description of the answer.
        answer: String,
    },
    /// The node did not answer in time.
    #[error(
        "the node of {0} did not answer the HE request in time (it had {1:?}, what was left of the run's deadline)"
    )]
    Timeout(OrgId, Duration),
    /// The node refused.
    #[error("{}", .0.message)]
    Refused(ErrorBody),
}

impl ExchangeError {
    /// A stable code for the run's failure.
    pub fn code(&self) -> String {
        match self {
            ExchangeError::Call(e) => e.code().into(),
            ExchangeError::Timeout(..) => "deadline_exceeded".into(),
            ExchangeError::Transport { .. } | ExchangeError::Protocol { .. } => {
                "protocol_error".into()
            }
            ExchangeError::Refused(e) => e.code.clone(),
        }
    }
}

/// A broken stream; reported as the connection's loss when that is what broke it.
fn transport(state: &CoordState, org: &OrgId, e: impl std::fmt::Display) -> ExchangeError {
    match state.nodes.stream_error(org, &e) {
        Some(lost) => ExchangeError::Call(lost),
        None => ExchangeError::Transport {
            org: org.clone(),
            reason: e.to_string(),
        },
    }
}

/// The text domains of `columns`.
pub async fn domains(
    state: &CoordState,
    org: &OrgId,
    dataset: &str,
    columns: Vec<String>,
    timeout: Duration,
) -> Result<Vec<TextDomain>, ExchangeError> {
    let req = Request::He(HeRequest::Domains {
        dataset: dataset.to_string(),
        columns,
    });
    match state.nodes.call(org, &req, timeout).await? {
        Response::He(HeResponse::Domains { domains }) => Ok(domains),
        Response::Refused(e) => Err(ExchangeError::Refused(e)),
        other => Err(ExchangeError::Protocol {
            org: org.clone(),
            answer: format!("{other:?}"),
        }),
    }
}

/// Sends a request frame and its blobs on a new stream; returns the answer frame and the
/// stream to read any blob that follows.
async fn exchange(
    state: &CoordState,
    org: &OrgId,
    req: HeRequest,
    blobs: &[&[u8]],
) -> Result<(Response, quinn::RecvStream), ExchangeError> {
    let (mut send, mut recv) = state.nodes.open(org).await?;
    wire::write_msg(&mut send, &Request::He(req))
        .await
        .map_err(|e| transport(state, org, e))?;
    for b in blobs {
        wire::write_bytes(&mut send, b)
            .await
            .map_err(|e| transport(state, org, e))?;
    }
    send.finish().map_err(|e| transport(state, org, e))?;
    let resp = wire::read_msg::<_, Response>(&mut recv, state.config.max_frame)
        .await
        .map_err(|e| transport(state, org, e))?;
    Ok((resp, recv))
}

/// What a key transfer cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transfer {
    /// Compact public key size.
    pub public_key_bytes: u64,
    /// Compressed server key size.
    pub server_key_bytes: u64,
    /// Wall time from sending to the node's acknowledgement.
    pub transfer_ms: f64,
    /// Of which the node spent checking, decompressing and storing the keys.
    pub node_setup_ms: f64,
}

/// Installs the key set on a node.
pub async fn install(
    state: &CoordState,
    org: &OrgId,
    keys: &KeySet,
    timeout: Duration,
) -> Result<Transfer, ExchangeError> {
    let started = Instant::now();
    let req = HeRequest::InstallKeys {
        key_id: keys.key_id.clone(),
    };
    let blobs: [&[u8]; 2] = [&keys.public_key_bytes, &keys.server_key_bytes];
    let (resp, _) = tokio::time::timeout(timeout, exchange(state, org, req, &blobs))
        .await
        .map_err(|_| ExchangeError::Timeout(org.clone(), timeout))??;
    match resp {
        Response::He(HeResponse::KeysInstalled { key_id, setup_ms }) if key_id == keys.key_id => {
            Ok(Transfer {
                public_key_bytes: keys.public_key_bytes.len() as u64,
                server_key_bytes: keys.server_key_bytes.len() as u64,
                transfer_ms: started.elapsed().as_secs_f64() * 1000.0,
                node_setup_ms: setup_ms,
            })
        }
        Response::Refused(e) => Err(ExchangeError::Refused(e)),
        other => Err(ExchangeError::Protocol {
            org: org.clone(),
            answer: format!("{other:?}"),
        }),
    }
}

/// A node's encrypted answer.
pub struct Answer {
    /// What the node reports.
    pub evaluation: HeEvaluation,
    /// The compressed result list.
    pub blob: Vec<u8>,
    /// Wall time of the exchange.
    pub round_trip_ms: f64,
}

/// How long past the run's deadline the coordinator waits for the node's own answer: the node
/// stops between encrypted steps, and one step (a lookup, a comparison) cannot be interrupted
/// and takes seconds on a loaded machine.
pub const NODE_STOP_GRACE: Duration = Duration::from_secs(10);

/// Sends an encrypted query. A refusal (including `unknown_key_id`) is an `Err(Refused)`.
#[allow(clippy::too_many_arguments)]
pub async fn evaluate(
    state: &CoordState,
    org: &OrgId,
    run_id: &str,
    key_id: &str,
    query: &HeQuery,
    privacy: PrivacyParams,
    requester: &Requester,
    constants: &[Vec<u8>],
    deadline: Instant,
) -> Result<Answer, ExchangeError> {
    let started = Instant::now();
    let remaining = deadline.saturating_duration_since(started);
    // The node stops at the deadline; the coordinator waits a little longer, so the node's own
    // `deadline_exceeded` (with what it released) arrives rather than a bare timeout.
    let node_budget = remaining;
    let timeout = remaining + NODE_STOP_GRACE;
    let req = HeRequest::Evaluate {
        run_id: run_id.to_string(),
        key_id: key_id.to_string(),
        query: query.clone(),
        privacy: Some(privacy),
        requester: Some(requester.clone()),
        deadline_ms: Some(u64::try_from(node_budget.as_millis()).unwrap_or(u64::MAX)),
    };
    let blobs: Vec<&[u8]> = constants.iter().map(Vec::as_slice).collect();
    let fut = async {
        let (resp, mut recv) = exchange(state, org, req, &blobs).await?;
        match resp {
            Response::He(HeResponse::Evaluated(evaluation)) => {
                let blob = wire::read_bytes(&mut recv, MAX_RESULT_BYTES)
                    .await
                    .map_err(|e| transport(state, org, e))?;
                Ok(Answer {
                    evaluation,
                    blob,
                    round_trip_ms: started.elapsed().as_secs_f64() * 1000.0,
                })
            }
            Response::Refused(e) => Err(ExchangeError::Refused(e)),
            other => Err(ExchangeError::Protocol {
                org: org.clone(),
                answer: format!("{other:?}"),
            }),
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ExchangeError::Timeout(org.clone(), timeout))?
}
