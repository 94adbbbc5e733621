//! Homomorphic-encryption backend (TFHE-rs): messages and maths. Being built.

use serde::{Deserialize, Serialize};

/// HE messages from the coordinator (key holder) to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HeRequest {}

/// A node's HE answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HeResponse {}
