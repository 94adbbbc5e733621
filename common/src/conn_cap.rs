//! A cap on the live QUIC connections one organization may hold to an endpoint (the
//! coordinator's, a node's peer endpoint): a connection takes a [`Slot`] when it is accepted and
//! gives it back when its handler ends, so a closed or timed-out connection frees its place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::identity::OrgId;

/// Live connections per organization, at most `max` each.
#[derive(Clone)]
pub struct ConnectionCap {
    max: usize,
    live: Arc<Mutex<HashMap<OrgId, usize>>>,
}

/// One counted connection; released when dropped.
pub struct Slot {
    cap: ConnectionCap,
    org: OrgId,
}

impl ConnectionCap {
    /// A cap of `max` live connections per organization.
    pub fn new(max: usize) -> Self {
        ConnectionCap {
            max,
            live: Arc::default(),
        }
    }

    /// Counts a new connection of `org`, or `None` when it already holds the most allowed.
    pub fn admit(&self, org: &OrgId) -> Option<Slot> {
        let mut live = self.live.lock().ok()?;
        let n = live.entry(org.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            cap: self.clone(),
            org: org.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut live) = self.cap.live.lock()
            && let Some(n) = live.get_mut(&self.org)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.org);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_freed_when_its_connection_ends() {
        let cap = ConnectionCap::new(2);
        let (a, b) = (OrgId::new("a").expect("org"), OrgId::new("b").expect("org"));
        let one = cap.admit(&a).expect("first");
        let _two = cap.admit(&a).expect("second");
        assert!(cap.admit(&a).is_none(), "a third is refused");
        assert!(
            cap.admit(&b).is_some(),
            "another organization is not affected"
        );
        drop(one);
        assert!(
            cap.admit(&a).is_some(),
            "a closed connection frees its place"
        );
    }
}
