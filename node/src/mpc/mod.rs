//! Data rooms on the node: invitations, attestations, and MPC execution with share exchange.
//!
//! Nothing leaves this node for a room unless (1) the manifest it is asked to execute hashes to
//! exactly what this node attested, (2) its policy still allows it, and (3) every other
//! participant's attestation verifies against the key in that participant's certificate, as
//! presented on a mutually authenticated connection to its peer endpoint. Only then does the
//! node send one additive share to each peer; it answers the coordinator with the sum of its own
//! share and the shares it received — never its input.
//!
//! [`invitations`]: the owner's side (invite, attest, decline, withdraw); [`execute`]: one
//! execution and the share exchange; [`peers`]: verified connections to other nodes, kept
//! between executions; [`release`]: what this party's input may be and what it costs.

pub mod execute;
pub mod invitations;
pub mod peers;
pub mod release;

pub use execute::Mailbox;
pub use peers::PeerCache;
