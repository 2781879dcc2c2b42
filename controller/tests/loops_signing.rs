//! Signed status, over the embedded broker and a real Mosquitto: status reports injected
//! with `mosquitto_pub` that are unsigned, signed with a forger's key or another node's,
//! copied from another node's topic, or from a node with no registered key are refused
//! — counted in `/metrics`, recorded as Events on the Node — while the genuine agent
//! keeps its Node Ready and runs its Pods; desired state goes out signed with the
//! controller's key and the database's epoch.

mod loops_support;

use std::process::Command;
use std::time::Duration;

use loops_support::*;
use punnet_api::signing::{decode_verified, encode_signed, SigningKey};
use punnet_api::topics::Topics;
use punnet_api::wire::{self, DesiredState, NodeStatusReport};
use punnet_api::{Node, ObjectReference, Pod, Time};
use punnet_controller::signing::{rejected, Rejection};

fn mosquitto_pub(port: u16, topic: &str, bytes: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .arg("--cafile")
        .arg(&loops_support::test_tls().ca_file)
        .args(["-t", topic, "-f"])
        .arg(file.path())
        .status()
        .expect("mosquitto_pub is installed");
    assert!(status.success());
}

fn report(node: &str, evil: bool) -> NodeStatusReport {
    let mut facts = facts(node);
    if evil {
        facts.labels.insert("evil".into(), "true".into());
    }
    NodeStatusReport {
        node: node.into(),
        generation_seen: 0,
        sent_at: Time::now(),
        facts,
        pods: Vec::new(),
        events: Vec::new(),
    }
}

fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.into(),
        ..Default::default()
    }
}

/// Event reasons recorded on Node `name`, with their counts.
fn node_events(ctl: &Controller, name: &str) -> Vec<(String, i32)> {
    ctl.store
        .recorder()
        .for_object(&node_ref(name))
        .into_iter()
        .map(|e| (e.reason, e.count))
        .collect()
}

async fn forged_status_is_refused(port: u16, a: &str, b: &str) {
    let wait = Duration::from_secs(10);
    let ctl = Controller::start(port);
    let agent = FakeAgent::start(a, port);
    let store = ctl.store.clone();
    eventually("the genuine node Ready", wait, || {
        store.get::<Node>(None, a).unwrap().filter(|n| n.is_ready())
    })
    .await;

    // Desired state is signed by the controller for this node, with the epoch.
    let retained = read_retained(port, &Topics::default().desired(a), Duration::from_secs(3))
        .await
        .expect("a retained desired state");
    let d: DesiredState = decode_verified(&retained, a, &ctl.key.public_key()).unwrap();
    assert_eq!(d.epoch, store.desired_epoch());
    assert!(decode_verified::<DesiredState>(&retained, b, &ctl.key.public_key()).is_err());

    let before = |why| rejected(why);
    let (unsigned0, forged0, unknown0) = (
        before(Rejection::Unsigned),
        before(Rejection::BadSignature),
        before(Rejection::UnknownNode),
    );
    store
        .node_keys()
        .register(b, agent_key(b).public_key())
        .unwrap();
    let topic = Topics::default().status(a);
    let forger = SigningKey::from_seed(&[0x66; 32]);
    let forgeries = [
        encode_signed(&report(a, true), a, &forger),
        wire::encode(&report(a, true)),
        // Signed with another node's (registered) key, for this topic.
        encode_signed(&report(a, true), a, &agent_key(b)),
        // Node b's genuine report, copied onto node a's topic.
        encode_signed(&report(b, true), b, &agent_key(b)),
    ];
    let refusals = || {
        node_events(&ctl, a)
            .iter()
            .filter(|(r, _)| r == "ForgedStatus" || r == "UnsignedStatus")
            .map(|e| i64::from(e.1))
            .sum::<i64>()
    };
    // One at a time: node sync takes only the newest unread message of a node's status
    // topic, so a burst would be judged by its last message alone.
    for forgery in &forgeries {
        let seen = refusals();
        mosquitto_pub(port, &topic, forgery);
        eventually("the forgery refused", wait, || {
            (refusals() > seen).then_some(())
        })
        .await;
    }
    // A node nobody registered.
    let ghost = format!("{a}-ghost");
    mosquitto_pub(
        port,
        &Topics::default().status(&ghost),
        &encode_signed(&report(&ghost, false), &ghost, &forger),
    );

    eventually("Events on the Nodes for every refusal", wait, || {
        let events = node_events(&ctl, a);
        let forged = events
            .iter()
            .find(|(r, _)| r == "ForgedStatus")
            .map_or(0, |e| e.1);
        let unsigned = events.iter().any(|(r, _)| r == "UnsignedStatus");
        let unknown = node_events(&ctl, &ghost)
            .iter()
            .any(|(r, _)| r == "StatusFromUnknownNode");
        (forged >= 3 && unsigned && unknown).then_some(())
    })
    .await;
    assert!(rejected(Rejection::Unsigned) > unsigned0);
    assert!(rejected(Rejection::BadSignature) >= forged0 + 3);
    assert!(rejected(Rejection::UnknownNode) > unknown0);
    let metrics = punnet_controller::prometheus::render(&store).unwrap();
    assert!(
        metrics.contains("punnet_status_rejected_total{reason=\"bad_signature\"}"),
        "{metrics}"
    );

    // Nothing of the forged reports reached the store.
    let node: Node = store.get(None, a).unwrap().unwrap();
    assert!(
        !node.metadata.labels.contains_key("evil"),
        "{:?}",
        node.metadata.labels
    );
    assert!(store.get::<Node>(None, &ghost).unwrap().is_none());
    assert!(store.get::<Node>(None, b).unwrap().is_none());

    // The genuine agent keeps working: a Pod is bound, published and reported Running.
    store.create(deployment(&format!("{a}-web"), 1)).unwrap();
    eventually("desired state with the Pod", wait, || agent.desired_with(1)).await;
    agent.run_desired_pods();
    eventually("the Pod Running", wait, || {
        let (pods, _) = store.list::<Pod>(Some("default")).unwrap();
        pods.iter()
            .any(|p| p.spec.node_name.as_deref() == Some(a) && p.phase() == "Running")
            .then_some(())
    })
    .await;
    assert!(store.get::<Node>(None, a).unwrap().unwrap().is_ready());

    // Revoked (what deleting the node does): its own reports are refused from now on.
    store.node_keys().revoke(a).unwrap();
    eventually("the revoked node's status refused", wait, || {
        node_events(&ctl, a)
            .iter()
            .any(|(r, _)| r == "StatusFromUnknownNode")
            .then_some(())
    })
    .await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_status_is_refused_over_the_embedded_broker() {
    let port = free_port();
    loops_support::embedded_broker(port).await;
    forged_status_is_refused(port, "sig-e1", "sig-e2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_status_is_refused_over_mosquitto() {
    let broker = Mosquitto::start(free_port());
    forged_status_is_refused(broker.port, "sig-m1", "sig-m2").await;
}
