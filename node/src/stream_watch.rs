//! Work for the coordinator that stops when the coordinator stops waiting for it.

use tokio_util::sync::CancellationToken;

/// A token cancelled when the coordinator stops the stream an answer would go on, or the
/// connection under it goes; the watch ends when this is dropped.
pub struct StopWatch {
    /// Cancelled once no answer can be delivered.
    pub gone: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl StopWatch {
    /// Watches `send` (a stream not yet finished: only a stop or a lost connection ends it).
    pub fn on(send: &quinn::SendStream) -> Self {
        let gone = CancellationToken::new();
        let stopped = send.stopped();
        let task = tokio::spawn({
            let gone = gone.clone();
            async move {
                if !matches!(stopped.await, Ok(None)) {
                    gone.cancel();
                }
            }
        });
        StopWatch { gone, task }
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
