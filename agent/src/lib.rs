//! punnet-agent: runs on every board, keeps its containers matching the desired Pod set
//! the controller publishes over MQTT, and reports what runs.

pub mod agent;
pub mod board;
pub mod config;
pub mod enrol;
pub mod events;
pub mod facts;
pub mod hostpath;
pub mod identity;
pub mod image;
pub mod import;
pub mod link;
pub mod logs;
pub mod network;
pub mod platform;
pub mod podspec;
pub mod podstatus;
pub mod probe;
pub mod pulls;
pub mod reconcile;
pub mod runtime;
pub mod shim;
pub mod state;
pub mod tls;
pub mod token_file;
pub mod volume;
pub mod web;

pub use agent::{run, run_with_runtime, AgentError};
pub use config::AgentConfig;

/// Whether the agent's and the controller's own log (on stderr) is coloured: only on a
/// terminal, and not with `NO_COLOR` set. Under systemd stderr is the journal, which
/// kept the escape codes in every message: the serial console, `journalctl -o cat` and
/// syslog files showed them raw (seen on the emulated board's console).
pub fn log_colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
