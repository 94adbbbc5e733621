//! The manifest canonical encoding round-trips and every participant computes the sender's
//! hash. The check is `prism_node::fuzz_checks::manifest`, which the test suite replays on the
//! committed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prism_node::fuzz_checks::manifest(data));
