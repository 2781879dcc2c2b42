//! Fuzz target `agent_config`: the agent's `--config` YAML file parser and the checks
//! applied to it, through `punnet_fuzz::agent_checks::agent_config` (replayed on stable
//! by agent/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punnet_fuzz::agent_checks::agent_config(data));
