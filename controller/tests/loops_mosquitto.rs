//! The same flow against a real Mosquitto: the controller is only another MQTT client,
//! so an external (or clustered) broker works as well as the embedded one.

mod loops_support;

use std::time::Duration;

use loops_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_to_node_and_back_over_mosquitto() {
    let broker = Mosquitto::start(free_port());
    tokio::time::timeout(Duration::from_secs(60), basic_flow(broker.port))
        .await
        .expect("flow took over 60 s");
}
