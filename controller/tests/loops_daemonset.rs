//! DaemonSets end to end over the embedded broker with fake agents: one bound Pod per
//! matching node, a joining node gets one, a relabelled node loses its, and a template
//! change rolls node by node.

mod loops_support;

use std::sync::Arc;
use std::time::Duration;

use loops_support::*;
use punnet_api::daemonset::LABEL_CONTROLLER_REVISION_HASH;
use punnet_api::{
    Affinity, Container, DaemonSet, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, Pod,
};
use punnet_controller::daemonset::{self, DaemonSetConfig};
use punnet_controller::gc::{self, GcConfig};
use punnet_controller::store::Store;

const EXCLUDED: &str = "example.com/no-daemons";

/// A DaemonSet for every node without the `EXCLUDED` label.
fn daemon_set(image: &str) -> DaemonSet {
    let mut d = DaemonSet::default();
    d.metadata.name = "exporter".into();
    d.metadata.namespace = Some("default".into());
    d.spec
        .selector
        .match_labels
        .insert("app".into(), "exporter".into());
    let t = &mut d.spec.template;
    t.metadata.labels.insert("app".into(), "exporter".into());
    t.spec.containers.push(Container {
        name: "exporter".into(),
        image: image.into(),
        ..Default::default()
    });
    t.spec.affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement {
                        key: EXCLUDED.into(),
                        operator: "DoesNotExist".into(),
                        values: vec![],
                    }],
                    match_fields: vec![],
                }],
            }),
            ..Default::default()
        }),
    });
    d
}

/// Keeps every agent reporting its desired Pods Running and Ready (and dropping the
/// ones no longer desired, as a real agent stops them).
fn keep_running(agents: &[Arc<FakeAgent>]) {
    for a in agents {
        let a = a.clone();
        tokio::spawn(async move {
            loop {
                if a.desired.borrow().is_some() {
                    a.run_desired_pods();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                if Arc::strong_count(&a) == 1 {
                    return;
                }
            }
        });
    }
}

fn daemon_pods(store: &Store) -> Vec<Pod> {
    store
        .list::<Pod>(Some("default"))
        .unwrap()
        .0
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The nodes with a live daemon Pod, sorted, if every Pod is bound and there is one per node.
fn nodes_with_pods(store: &Store) -> Vec<String> {
    let mut nodes: Vec<String> = daemon_pods(store)
        .iter()
        .filter_map(|p| p.spec.node_name.clone())
        .collect();
    nodes.sort();
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_set_follows_nodes_labels_and_its_template() {
    let wait = Duration::from_secs(30);
    let port = free_port();
    embedded_broker(port).await;
    let ctl = Controller::start(port);
    let fast = DaemonSetConfig {
        resync: Duration::from_secs(2),
        ..Default::default()
    };
    tokio::spawn(daemonset::run_with(
        ctl.store.clone(),
        fast,
        ctl.cancel.clone(),
    ));
    let gc_config = GcConfig {
        resync: Duration::from_secs(1),
        ..Default::default()
    };
    tokio::spawn(gc::run_with(
        ctl.store.clone(),
        gc_config,
        ctl.cancel.clone(),
    ));

    let mut agents: Vec<Arc<FakeAgent>> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Arc::new(FakeAgent::start(n, port)))
        .collect();
    keep_running(&agents);
    eventually("three Ready nodes", wait, || {
        let (nodes, _) = ctl.store.list::<Node>(None).unwrap();
        (nodes.iter().filter(|n| n.is_ready()).count() == 3).then_some(())
    })
    .await;

    // One Pod on each node, bound by the DaemonSet itself, reaching each agent.
    ctl.store.create(daemon_set("exporter:1")).unwrap();
    eventually("a Pod on each of n1, n2, n3", wait, || {
        (nodes_with_pods(&ctl.store) == ["n1", "n2", "n3"]).then_some(())
    })
    .await;
    for a in &agents {
        eventually(&format!("{} gets its daemon Pod", a.node), wait, || {
            a.desired_with(1)
        })
        .await;
    }
    let ds = eventually("status: 3 desired, 3 ready", wait, || {
        ctl.store
            .get::<DaemonSet>(Some("default"), "exporter")
            .unwrap()
            .filter(|d| d.status.desired_number_scheduled == 3 && d.status.number_ready == 3)
    })
    .await;
    assert_eq!(ds.status.updated_number_scheduled, 3);
    assert_eq!(ds.status.observed_generation, Some(1));

    // A fourth board joins: it gets one.
    let n4 = Arc::new(FakeAgent::start("n4", port));
    keep_running(std::slice::from_ref(&n4));
    agents.push(n4);
    eventually("a Pod on n4 too", wait, || {
        (nodes_with_pods(&ctl.store) == ["n1", "n2", "n3", "n4"]).then_some(())
    })
    .await;

    // n2 is labelled out: its Pod goes, and nothing replaces it.
    ctl.store
        .modify::<Node>(None, "n2", |n| {
            n.metadata.labels.insert(EXCLUDED.into(), "true".into());
        })
        .unwrap();
    eventually("n2's Pod removed", wait, || {
        (nodes_with_pods(&ctl.store) == ["n1", "n3", "n4"]).then_some(())
    })
    .await;
    eventually("n2's agent told to stop it", wait, || {
        agents[1].desired_with(0)
    })
    .await;
    eventually("status: 3 desired, none misscheduled", wait, || {
        ctl.store
            .get::<DaemonSet>(Some("default"), "exporter")
            .unwrap()
            .filter(|d| d.status.desired_number_scheduled == 3 && d.status.number_misscheduled == 0)
    })
    .await;

    // A new template rolls out to every node, one at a time (maxUnavailable 1).
    let old_hash =
        daemon_pods(&ctl.store)[0].metadata.labels[LABEL_CONTROLLER_REVISION_HASH].clone();
    ctl.store
        .modify::<DaemonSet>(Some("default"), "exporter", |d| {
            d.spec.template.spec.containers[0].image = "exporter:2".into();
        })
        .unwrap();
    let mut most_unavailable = 0;
    eventually(
        "every node runs the new template",
        Duration::from_secs(60),
        || {
            let pods = daemon_pods(&ctl.store);
            let ready_nodes = pods.iter().filter(|p| p.is_ready()).count();
            most_unavailable = most_unavailable.max(3usize.saturating_sub(ready_nodes));
            let done = pods.len() == 3
                && pods.iter().all(|p| {
                    p.spec.containers[0].image == "exporter:2"
                        && p.metadata.labels[LABEL_CONTROLLER_REVISION_HASH] != old_hash
                });
            done.then_some(())
        },
    )
    .await;
    assert!(
        most_unavailable <= 1,
        "{most_unavailable} nodes were without a ready daemon at once"
    );
    eventually(
        "status: 3 updated and ready, generation 2 observed",
        wait,
        || {
            ctl.store
                .get::<DaemonSet>(Some("default"), "exporter")
                .unwrap()
                .filter(|d| {
                    d.status.updated_number_scheduled == 3
                        && d.status.number_available == 3
                        && d.status.observed_generation == Some(2)
                })
        },
    )
    .await;
    let events = ctl.store.recorder().list(Some("default"));
    assert!(
        events.iter().any(|e| e.reason == "SuccessfulCreate"),
        "{events:?}"
    );

    // n4 leaves the fleet (its agent stops, its Node is deleted): its Pod goes.
    drop(agents.pop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.store.delete::<Node>(None, "n4", None).unwrap();
    eventually("n4's Pod removed with its Node", wait, || {
        (nodes_with_pods(&ctl.store) == ["n1", "n3"]).then_some(())
    })
    .await;

    // Deleting the DaemonSet (background): the garbage collector removes its Pods.
    ctl.store
        .delete::<DaemonSet>(Some("default"), "exporter", None)
        .unwrap();
    eventually("every daemon Pod gone", wait, || {
        ctl.store
            .list::<Pod>(Some("default"))
            .unwrap()
            .0
            .is_empty()
            .then_some(())
    })
    .await;
    drop(agents);
    ctl.stop().await;
}
