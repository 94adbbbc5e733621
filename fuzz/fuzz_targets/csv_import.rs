//! CSV import: any text, under the sample declaration or one the input carries, is imported
//! whole or refused, never a panic. The check is `prism_node::fuzz_checks::csv_import`, which
//! the test suite replays on the committed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prism_node::fuzz_checks::csv_import(data));
