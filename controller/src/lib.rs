//! punnet-controller: keeps the fleet's state in sled, serves the REST API, runs the
//! workload controllers and the scheduler, and pushes each node's desired Pods over MQTT.

pub mod auth_token;
pub mod broker;
pub mod config;
pub mod deployment;
pub mod events;
pub mod http;
pub mod logproxy;
pub mod metrics;
pub mod mqtt;
pub mod nodeipam;
pub mod nodesync;
pub mod podcidr;
pub mod podgc;
pub mod schedcache;
pub mod scheduler;
pub mod scheduling;
pub mod server;
pub mod store;

pub use config::ControllerConfig;
pub use server::{run, ControllerError};
