//! punnet-controller: keeps the fleet's state in sled, serves the REST API, runs the
//! workload controllers and the scheduler, and pushes each node's desired Pods over MQTT.

pub mod store;
