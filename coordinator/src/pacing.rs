//! How collections pace themselves: how long a call to a node may take, and when to ask a
//! node that is still answering again. Shared by the collection of runs (`collect`) and of
//! data rooms (`mpc::collect`).

use std::time::Duration;

use crate::CoordState;

/// How long a collection or acknowledgement call may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait before asking again for runs a node is still answering.
const ANSWERING_RETRY: Duration = Duration::from_secs(1);

/// Runs `again` after [`ANSWERING_RETRY`] on the coordinator's tasks (boxed by the caller: the
/// collections that ask again are recursive).
pub(crate) fn retry_later(
    state: &CoordState,
    again: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    state.tasks.spawn(async move {
        tokio::time::sleep(ANSWERING_RETRY).await;
        again.await;
    });
}
