//! The wire protocol between nodes and the coordinator, in one module: [`frame`] (how bytes
//! become messages, apart from what the messages are), [`messages`] (handshake, node events,
//! requests and answers), [`he`] and [`mpc`] (each backend's messages), [`shared`] (the
//! refusal body and DP parameters they all use). See docs/PROTOCOL.md.

pub mod b64;
pub mod frame;
pub mod he;
pub mod messages;
pub mod mpc;
pub mod shared;
#[cfg(test)]
mod tests;

pub use frame::*;
pub use he::{HeEvaluation, HeRequest, HeResponse, NodeTimings};
pub use messages::*;
pub use mpc::*;
pub use shared::*;
