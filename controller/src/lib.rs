//! punnet-controller: keeps the fleet's state in sled, serves the REST API, runs the
//! workload controllers and the scheduler, and pushes each node's desired Pods over MQTT.

pub mod acl;
pub mod auth_token;
pub mod backup;
pub mod broker;
pub mod broker_gate;
pub mod config;
pub mod daemonset;
pub mod deployment;
pub mod enrol;
pub mod events;
pub mod gc;
pub mod history;
pub mod http;
pub mod identity;
pub mod io_runtime;
pub mod job;
pub mod logproxy;
pub mod metrics;
pub mod mosquitto;
pub mod mqtt;
pub mod mqtt_inbox;
pub mod mqttapi;
pub mod namespaces;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod nodesync;
pub mod owned;
pub mod podcidr;
pub mod podgc;
pub mod prometheus;
pub mod replicaset;
pub mod schedcache;
pub mod scheduler;
pub mod scheduling;
pub mod server;
pub mod signing;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod watchcache;
pub mod web;
pub mod workqueue;

pub use config::ControllerConfig;
pub use server::{run, ControllerError};
