//! `punnet_controller::run` as the binary calls it: a part that cannot start takes the
//! controller down with a clear error instead of leaving half a controller running.

use std::net::TcpListener;
use std::time::Duration;

use punnet_controller::{ControllerConfig, ControllerError};

fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn a_local_agent_that_cannot_start_stops_the_controller_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ControllerConfig::new(dir.path());
    config.http = free_addr();
    config.mqtt = free_addr();
    let mut agent = config.local_agent(Some("bad/name".into()), Default::default());
    agent.node_name = "bad/name".into();
    config.agent = Some(agent);
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        punnet_controller::run(config, std::future::pending()),
    )
    .await
    .expect("run must return when a part fails");
    let err = result.expect_err("an invalid node name must be an error");
    assert!(matches!(err, ControllerError::Agent(_)), "{err}");
    assert!(err.to_string().contains("bad/name"), "{err}");
}

#[tokio::test]
async fn a_taken_api_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = ControllerConfig::new(dir.path());
    config.http = taken.local_addr().unwrap();
    config.mqtt = free_addr();
    let err = punnet_controller::run(config, std::future::pending())
        .await
        .expect_err("the API port is taken");
    assert!(
        err.to_string().contains("cannot listen for the API"),
        "{err}"
    );
}
