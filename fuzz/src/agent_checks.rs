//! The check of the `agent_config` fuzz target: the agent's `--config` YAML file, applied
//! to the defaults and validated, as `punnet-agent --config FILE` does at start. Compiled
//! by the fuzz crate (feature `agent`) and, through `#[path]`, by
//! agent/tests/fuzz_corpus.rs on stable.

use punnet_agent::config::{AgentConfig, ConfigFile};

/// A target's check: panics on a finding, returns on anything else.
pub type Check = fn(&[u8]);

pub const TARGETS: &[(&str, Check)] = &[("agent_config", agent_config)];

pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = ConfigFile::parse(text) else {
        return;
    };
    let mut config = AgentConfig::new("fuzz");
    if config.apply_file(&file).is_ok() && config.validate().is_ok() {
        let (host, _port) = config
            .broker_address()
            .expect("a validated config has a broker address");
        assert!(!host.is_empty());
    }
}
