//! Events end to end over the embedded broker: the scheduler's `Scheduled`, and an
//! agent's events carried in its status report over MQTT into the controller's recorder.

mod loops_support;

use std::time::Duration;

use loops_support::*;
use punnet_api::topics::{Topics, MAX_PACKET_SIZE};
use punnet_api::wire::{AgentEvent, NodeStatusReport};
use punnet_api::{Pod, Time};
use rumqttc::{AsyncClient, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_and_agent_events_reach_the_recorder() {
    let port = free_port();
    embedded_broker(port).await;
    let wait = Duration::from_secs(10);
    let ctl = Controller::start(port);
    let agent = FakeAgent::start("n1", port);
    let store = ctl.store.clone();
    store.create(deployment("web", 1)).unwrap();
    let pod: Pod = eventually("a Pod bound to n1", wait, || {
        let (pods, _) = store.list::<Pod>(Some("default")).unwrap();
        pods.into_iter()
            .find(|p| p.spec.node_name.as_deref() == Some("n1"))
    })
    .await;
    let key = pod.metadata.key();
    let scheduled = eventually("a Scheduled event", wait, || {
        store
            .recorder()
            .list(Some("default"))
            .into_iter()
            .find(|e| e.reason == "Scheduled" && e.involved_object.name == pod.metadata.name)
    })
    .await;
    assert_eq!(
        scheduled.message,
        format!("Successfully assigned {key} to n1")
    );
    assert_eq!(scheduled.source.component, "default-scheduler");

    // What a real agent sends when the image cannot be pulled, twice.
    let mut o = loops_support::mqtt_options("events-test", port);
    o.set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    let (client, mut eventloop) = AsyncClient::new(o, 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let report = NodeStatusReport {
        node: "n1".into(),
        generation_seen: 0,
        sent_at: Time::now(),
        facts: facts("n1"),
        pods: agent.pods.lock().unwrap().clone(),
        events: vec![AgentEvent {
            namespace: "default".into(),
            pod: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            container: Some("web".into()),
            warning: true,
            reason: "Failed".into(),
            message: "Error: ErrImagePull".into(),
            count: 1,
        }],
    };
    // One report after the other, as an agent sends them: node sync takes only the
    // newest unread report of a node, so two at once would count as one.
    let failed_count = |count: i32| {
        store
            .recorder()
            .for_object(&punnet_api::ObjectReference::to(&pod))
            .into_iter()
            .find(|e| e.reason == "Failed" && e.count == count)
    };
    let mut failed = None;
    for count in 1..=2 {
        client
            .publish(
                Topics::default().status("n1"),
                QoS::AtLeastOnce,
                false,
                signed_status(&report),
            )
            .await
            .unwrap();
        failed = Some(
            eventually("the agent's Failed event, counted", wait, || {
                failed_count(count)
            })
            .await,
        );
    }
    let failed = failed.unwrap();
    assert_eq!(failed.type_, "Warning");
    assert_eq!(failed.source.component, "punnet-agent");
    assert_eq!(failed.source.host.as_deref(), Some("n1"));
    assert_eq!(
        failed.involved_object.field_path.as_deref(),
        Some("spec.containers{web}")
    );
    drop(agent);
    ctl.stop().await;
}
