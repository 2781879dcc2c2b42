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
pub mod volume;
pub mod web;

pub use agent::{run, run_with_runtime, AgentError};
pub use config::AgentConfig;
