//! The local federation harness: synthetic data, an in-process federation, the demo flow, and
//! a UDP relay that cuts a node off.
//!
//! `prism-sim` and the end-to-end tests in `tests/` share it, so the demo a user runs is the
//! one the tests check.

pub mod data;
pub mod demo;
pub mod federation;
pub mod relay;

pub use federation::{Api, Federation, FederationSpec};
