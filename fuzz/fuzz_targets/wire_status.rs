//! Fuzz target `wire_status`: feeds arbitrary bytes to `punnet_fuzz::checks::wire_status`, the same
//! check the stable replay test (api/tests/fuzz_corpus.rs) runs over the committed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punnet_fuzz::checks::wire_status(data));
