//! SQL → plan: the planner must answer every input with a plan or an error, never a panic or a
//! stack overflow, and every plan it accepts must survive the wire and the stores. The check is
//! `prism_node::fuzz_checks::sql_plan`, which the test suite replays on the committed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prism_node::fuzz_checks::sql_plan(data));
