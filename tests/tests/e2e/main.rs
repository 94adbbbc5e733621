//! The end-to-end suite, as one test binary (one link step): every module starts real daemons
//! (in-process, or as processes where a test says so) on loopback and drives them through
//! their public interfaces.

mod analyst;
mod browser;
mod collect;
mod configs;
mod console;
mod console_runs;
mod contract;
mod dp;
mod faults;
mod foundation;
mod he;
mod hostile;
mod hostile_quic;
mod hosts;
mod lifecycle;
mod mpc;
mod mpc_release;
mod node_console;
mod observability;
mod pg;
mod privacy;
mod python_client;
mod simulation;
mod sources;
mod transport;
