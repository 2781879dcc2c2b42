//! Fuzz target `selector`: feeds arbitrary bytes to `punnet_fuzz::checks::selector`, the same
//! check the stable replay test (api/tests/fuzz_corpus.rs) runs over the committed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punnet_fuzz::checks::selector(data));
