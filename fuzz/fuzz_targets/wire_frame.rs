//! The frame decoder and every message type: any byte string read as a frame or as a raw blob
//! gives a message or an error, never a panic, and a decoded message round-trips. The check is
//! `prism_node::fuzz_checks::wire_frame`, which the test suite replays on the committed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prism_node::fuzz_checks::wire_frame(data));
