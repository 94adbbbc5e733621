//! The node's homomorphic-encryption executor. Being built.

use std::sync::Arc;

use prism_common::he::HeRequest;

use crate::NodeState;

/// Serves one HE stream from the coordinator.
pub async fn serve(
    _state: Arc<NodeState>,
    req: HeRequest,
    _send: quinn::SendStream,
    _recv: quinn::RecvStream,
) {
    match req {}
}
