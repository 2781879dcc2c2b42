//! After the broker restarts (it kept nothing: Mosquitto without persistence, like the
//! embedded rumqttd), the controller reconnects and publishes every node's desired state
//! again, so a reconnecting agent is correct after one message.

mod loops_support;

use std::time::Duration;

use loops_support::*;
use punnet_api::topics::Topics;
use punnet_api::wire::{decode, DesiredState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_is_republished_after_a_broker_restart() {
    let wait = Duration::from_secs(15);
    let mut broker = Mosquitto::start(free_port());
    let port = broker.port;
    let ctl = Controller::start(port);
    let agent = FakeAgent::start("n1", port);
    eventually("Node n1 registered", wait, || {
        ctl.store
            .get::<punnet_api::Node>(None, "n1")
            .unwrap()
            .filter(|n| n.is_ready())
    })
    .await;
    ctl.store.create(deployment("web", 2)).unwrap();
    let before = eventually("desired state with 2 Pods", wait, || agent.desired_with(2)).await;
    drop(agent);

    broker.restart();
    let topic = Topics::default().desired("n1");
    // Right after the restart nothing is retained; the controller's back-off is short.
    let after = eventually_async("the retained desired state is back", wait, || {
        let topic = topic.clone();
        async move {
            let bytes = read_retained(port, &topic, Duration::from_millis(500)).await?;
            decode::<DesiredState>(&bytes)
                .ok()
                .filter(|d| d.pods.len() == 2)
        }
    })
    .await;
    assert_eq!(after.pods, before.pods);
    assert_eq!(
        after.generation, before.generation,
        "same set, same generation"
    );

    // And changes keep flowing on the new connection.
    ctl.store
        .modify::<punnet_api::Deployment>(Some("default"), "web", |d| d.spec.replicas = Some(3))
        .unwrap();
    eventually_async("the desired state follows a scale-up", wait, || {
        let topic = topic.clone();
        async move {
            let bytes = read_retained(port, &topic, Duration::from_millis(500)).await?;
            decode::<DesiredState>(&bytes)
                .ok()
                .filter(|d| d.pods.len() == 3)
        }
    })
    .await;
    ctl.stop().await;
}
