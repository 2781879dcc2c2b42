//! What each fuzz target checks, as plain functions of the input bytes. The targets in
//! fuzz_targets/ only hand libFuzzer's input to these; the stable-toolchain replay tests
//! include the same files (`#[path]`), so CI runs every committed corpus file and past
//! crash through exactly this code without nightly or libFuzzer.

pub mod checks;

#[cfg(feature = "agent")]
pub mod agent_checks;
