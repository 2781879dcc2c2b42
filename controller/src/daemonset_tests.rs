//! Unit tests of the DaemonSet controller's pure decisions.

use super::*;
use punnet_api::{Container, PodCondition};

fn ds() -> DaemonSet {
    let mut d = DaemonSet::default();
    d.metadata.name = "agent".into();
    d.metadata.namespace = Some("default".into());
    d.metadata.uid = Some("ds-1".into());
    d.spec
        .selector
        .match_labels
        .insert("app".into(), "agent".into());
    d.spec
        .template
        .metadata
        .labels
        .insert("app".into(), "agent".into());
    d.spec.template.spec.containers.push(Container {
        name: "c".into(),
        image: "busybox".into(),
        ..Default::default()
    });
    d
}

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let mut n = Node::default();
    n.metadata.name = name.into();
    n.metadata.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    n
}

fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Pod {
    let mut p = pod_for_node(&ds(), hash, node);
    p.metadata.name = name.into();
    p.status.phase = Some("Running".into());
    if ready {
        p.status.conditions.push(PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
    }
    p
}

#[test]
fn which_nodes_run_a_daemon_pod() {
    let mut d = ds();
    d.spec
        .template
        .spec
        .node_selector
        .insert("kubernetes.io/arch".into(), "arm64".into());
    let mut cordoned = node("cordoned", &[("kubernetes.io/arch", "arm64")]);
    cordoned.spec.unschedulable = Some(true);
    assert!(should_run(
        &d,
        &node("pi4", &[("kubernetes.io/arch", "arm64")])
    ));
    assert!(!should_run(
        &d,
        &node("pi3", &[("kubernetes.io/arch", "arm")])
    ));
    assert!(should_run(&d, &cordoned), "daemons ignore unschedulable");

    let tainted = |key: &str, effect: &str| {
        let mut n = node("pi4", &[("kubernetes.io/arch", "arm64")]);
        n.spec.taints.push(punnet_api::Taint::new(key, effect));
        n
    };
    assert!(!should_run(&d, &tainted("dedicated", "NoSchedule")));
    assert!(!should_run(&d, &tainted("dedicated", "NoExecute")));
    assert!(should_run(&d, &tainted("dedicated", "PreferNoSchedule")));
    for (key, effect) in [
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        assert!(should_run(&d, &tainted(key, effect)), "{key}:{effect}");
    }
    d.spec
        .template
        .spec
        .tolerations
        .push(punnet_api::Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        });
    assert!(should_run(&d, &tainted("dedicated", "NoExecute")));
}

#[test]
fn creates_where_missing_deletes_where_not_wanted_or_extra() {
    let mut d = ds();
    d.spec
        .template
        .spec
        .node_selector
        .insert("gpio".into(), "yes".into());
    let nodes = [
        node("a", &[("gpio", "yes")]),
        node("b", &[("gpio", "yes")]),
        node("c", &[]),
    ];
    let on_b = pod("agent-b", "b", "h", true);
    let mut on_b_2 = pod("agent-b2", "b", "h", true);
    on_b_2.metadata.creation_timestamp = Some(punnet_api::Time::now());
    let on_c = pod("agent-c", "c", "h", true);
    let on_gone = pod("agent-x", "gone", "h", true);
    let p = plan(&d, "h", &nodes, &[&on_b, &on_b_2, &on_c, &on_gone]);
    assert_eq!(p.create_on, vec!["a"]);
    assert_eq!(p.delete, vec!["agent-x", "agent-b2", "agent-c"]);
    let s = compute_status(&d, "h", &nodes, &[&on_b, &on_c]);
    assert_eq!(
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_misscheduled,
            s.number_ready,
            s.updated_number_scheduled,
            s.number_unavailable
        ),
        (2, 1, 1, 1, 1, 1)
    );
}

#[test]
fn a_stopping_pod_is_waited_for_and_a_finished_one_replaced() {
    let nodes = [node("a", &[])];
    let mut stopping = pod("agent-old", "a", "h", true);
    stopping.metadata.deletion_timestamp = Some(punnet_api::Time::now());
    assert_eq!(plan(&ds(), "h", &nodes, &[&stopping]), Plan::default());
    let mut failed = pod("agent-failed", "a", "h", false);
    failed.status.phase = Some("Failed".into());
    let p = plan(&ds(), "h", &nodes, &[&failed]);
    assert_eq!(
        (p.create_on, p.delete),
        (vec!["a".into()], vec!["agent-failed".into()])
    );
}

#[test]
fn rolling_update_respects_max_unavailable_and_on_delete_waits() {
    let nodes: Vec<Node> = ["a", "b", "c", "d"].iter().map(|n| node(n, &[])).collect();
    let pods: Vec<Pod> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| pod(&format!("agent-{n}"), n, "old", true))
        .collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    // Default maxUnavailable 1: one node at a time.
    assert_eq!(plan(&ds(), "new", &nodes, &refs).delete, vec!["agent-a"]);
    // 50% of 4: two.
    let mut half = ds();
    half.spec.update_strategy.rolling_update =
        Some(punnet_api::daemonset::RollingUpdateDaemonSet {
            max_unavailable: Some(punnet_api::IntOrString::String("50%".into())),
        });
    assert_eq!(
        plan(&half, "new", &nodes, &refs).delete,
        vec!["agent-a", "agent-b"]
    );
    // A node already without an available Pod uses the budget; an unready old Pod
    // goes regardless.
    let mut mixed = pods.clone();
    mixed[0] = pod("agent-a", "a", "new", false);
    mixed[1] = pod("agent-b", "b", "old", false);
    let refs: Vec<&Pod> = mixed.iter().collect();
    assert_eq!(plan(&ds(), "new", &nodes, &refs).delete, vec!["agent-b"]);
    let mut on_delete = ds();
    on_delete.spec.update_strategy.type_ = Some("OnDelete".into());
    let refs: Vec<&Pod> = pods.iter().collect();
    assert_eq!(plan(&on_delete, "new", &nodes, &refs), Plan::default());
}
