//! The local federation harness: synthetic data, an in-process federation of any number of
//! organizations, the demo flow, scenario files and their runner, and a UDP relay that cuts a
//! node off or slows its link down.
//!
//! `prism-sim` and the end-to-end tests in `tests/` share it, so the demo a user runs is the
//! one the tests check.

pub mod api;
pub mod cli;
pub mod data;
pub mod demo;
pub mod federation;
pub mod hosts;
pub mod progress;
pub mod relay;
pub mod scenario;

pub use federation::{Api, Federation, FederationSpec};
