//! Test seams, compiled only with the `test-util` feature (the test suite enables it; release
//! builds never carry it): a fault to inject into room execution, and a per-node recorder of
//! what arrives on HE streams.

use std::sync::Mutex;

/// A fault a test injects into execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Stop after computing the local vector, before sending any share, until shut down.
    StallBeforeShares,
    /// Hold every DP or HE answer, and every dp room's partial sum, after charging it, without
    /// sending it, until the fault is cleared or the node stops (what a coordinator that crashes
    /// mid-run sees).
    StallAfterCharge,
    /// Send every peer a share one element short (what a peer with another manifest would send):
    /// the peers refuse it.
    ShortShares,
}

/// What a node's HE handler received on one stream: the request frame and every blob after it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request as JSON.
    pub frame: Vec<u8>,
    /// The blobs, in order.
    pub blobs: Vec<Vec<u8>>,
}

/// The seams of one node.
#[derive(Default)]
pub struct Seams {
    fault: Mutex<Option<Fault>>,
    he: Mutex<Option<Vec<Received>>>,
}

impl Seams {
    /// Injects a fault (`None` clears it).
    pub fn inject_fault(&self, fault: Option<Fault>) {
        if let Ok(mut f) = self.fault.lock() {
            *f = fault;
        }
    }

    /// The injected fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.lock().ok().and_then(|f| *f)
    }

    /// Waits while [`Fault::StallAfterCharge`] is injected, or until the node stops: called
    /// after a charge commits and before its answer leaves.
    pub async fn stall_after_charge(&self, shutdown: &tokio_util::sync::CancellationToken) {
        while self.fault() == Some(Fault::StallAfterCharge) && !shutdown.is_cancelled() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Starts recording what this node receives on HE streams (keys and ciphertexts are kept
    /// in memory).
    pub fn start_recording_he(&self) {
        if let Ok(mut r) = self.he.lock()
            && r.is_none()
        {
            *r = Some(Vec::new());
        }
    }

    /// Whether HE streams are being recorded.
    pub fn recording_he(&self) -> bool {
        self.he.lock().map(|r| r.is_some()).unwrap_or(false)
    }

    /// Records one HE stream (when recording).
    pub fn record_he(&self, got: Received) {
        if let Ok(mut r) = self.he.lock()
            && let Some(all) = r.as_mut()
        {
            all.push(got);
        }
    }

    /// Takes what was recorded so far.
    pub fn take_he(&self) -> Vec<Received> {
        self.he
            .lock()
            .ok()
            .and_then(|mut r| r.as_mut().map(std::mem::take))
            .unwrap_or_default()
    }
}
