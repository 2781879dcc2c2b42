//! Unit tests of the ReplicaSet controller's decisions and of one reconcile against a
//! real store.

use super::*;
use punnet_api::{Container, ContainerStatus, PodCondition};

fn at(s: i64) -> Time {
    Time(chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap())
}

fn pod(name: &str, node: Option<&str>, phase: &str, ready_at: Option<i64>, age_s: i64) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    p.metadata.creation_timestamp = Some(at(-age_s));
    p.spec.node_name = node.map(str::to_string);
    p.status.phase = Some(phase.into());
    if let Some(t) = ready_at {
        p.status.conditions.push(PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(at(t)),
            ..Default::default()
        });
    }
    p
}

fn replica_set(replicas: i32) -> ReplicaSet {
    let mut rs = ReplicaSet::default();
    rs.metadata.name = "web-abc".into();
    rs.metadata.namespace = Some("default".into());
    rs.spec.replicas = Some(replicas);
    rs.spec
        .selector
        .match_labels
        .insert("app".into(), "web".into());
    rs.spec
        .template
        .metadata
        .labels
        .insert("app".into(), "web".into());
    rs.spec.template.spec.containers.push(Container {
        name: "web".into(),
        image: "busybox".into(),
        ..Default::default()
    });
    rs
}

#[test]
fn deletion_order_is_kubernetes() {
    let unbound = pod("unbound", None, "Pending", None, 300);
    let pending = pod("pending", Some("n1"), "Pending", None, 200);
    let unready = pod("unready", Some("n1"), "Running", None, 150);
    let ready_new = pod("ready-new", Some("n1"), "Running", Some(-10), 100);
    let ready_old = pod("ready-old", Some("n1"), "Running", Some(-90), 100);
    let mut restarted = pod("restarted", Some("n1"), "Running", Some(-90), 100);
    restarted.status.container_statuses.push(ContainerStatus {
        name: "c".into(),
        restart_count: 3,
        ..Default::default()
    });
    let all = [
        &ready_old, &restarted, &ready_new, &unready, &pending, &unbound,
    ];
    let names: Vec<&str> = pods_to_delete(&all, 6)
        .iter()
        .map(|p| p.metadata.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "unbound",
            "pending",
            "unready",
            "ready-new",
            "restarted",
            "ready-old"
        ]
    );
    assert_eq!(pods_to_delete(&all, 1).len(), 1);
}

#[test]
fn availability_waits_min_ready_seconds() {
    let p = pod("a", Some("n1"), "Running", Some(0), 10);
    assert!(is_available(&p, 0, at(0)));
    assert!(!is_available(&p, 5, at(4)));
    assert!(is_available(&p, 5, at(5)));
    assert_eq!(
        next_available(&[&p], 5, at(2)),
        Some(Duration::from_millis(3100))
    );
    assert_eq!(next_available(&[&p], 5, at(6)), None);
    // Ready at an unknown time: not available while minReadySeconds is set.
    let mut unknown = p.clone();
    unknown.status.conditions[0].last_transition_time = None;
    assert!(!is_available(&unknown, 5, at(100)));
    assert!(is_available(&unknown, 0, at(100)));
    let not_ready = pod("b", Some("n1"), "Running", None, 10);
    assert!(!is_available(&not_ready, 0, at(0)));
}

#[test]
fn status_counts_ready_available_and_labels() {
    let mut rs = replica_set(3);
    rs.spec.min_ready_seconds = Some(10);
    rs.metadata.generation = Some(4);
    let mut a = pod("a", Some("n1"), "Running", Some(-20), 30);
    a.metadata.labels.insert("app".into(), "web".into());
    let b = pod("b", Some("n1"), "Running", Some(-5), 30);
    let c = pod("c", None, "Pending", None, 1);
    let s = compute_status(&rs, &[&a, &b, &c], at(0));
    assert_eq!(
        (
            s.replicas,
            s.fully_labeled_replicas,
            s.ready_replicas,
            s.available_replicas,
            s.observed_generation
        ),
        (3, 1, 2, 1, Some(4))
    );
}

#[test]
fn reconcile_keeps_replicas_and_records_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rs = store.create(replica_set(3)).unwrap();
    assert_eq!(reconcile(&store, "default", "web-abc").unwrap(), None);
    let (pods, _) = store.list::<Pod>(None).unwrap();
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert!(p.metadata.name.starts_with("web-abc-"));
        assert_eq!(p.metadata.name.len(), "web-abc-".len() + 5);
        assert_eq!(p.metadata.labels["app"], "web");
        assert_eq!(
            p.metadata.controller().unwrap().uid,
            rs.metadata.uid.clone().unwrap()
        );
    }
    let got: ReplicaSet = store.get(Some("default"), "web-abc").unwrap().unwrap();
    assert_eq!(got.status.replicas, 3);
    let events = store.recorder().for_object(&ObjectReference::to(&got));
    let created = events
        .iter()
        .find(|e| e.reason == "SuccessfulCreate")
        .expect("a SuccessfulCreate event");
    assert!(created.message.starts_with("Created pod: web-abc-"));

    // Idempotent.
    let rev = store.revision();
    reconcile(&store, "default", "web-abc").unwrap();
    assert_eq!(store.revision(), rev);

    store
        .modify::<ReplicaSet>(Some("default"), "web-abc", |r| r.spec.replicas = Some(1))
        .unwrap();
    reconcile(&store, "default", "web-abc").unwrap();
    assert_eq!(store.list::<Pod>(None).unwrap().0.len(), 1);
    let events = store.recorder().for_object(&ObjectReference::to(&got));
    assert!(events.iter().any(|e| e.reason == "SuccessfulDelete"));

    // Gone: its Pods go too.
    store
        .delete::<ReplicaSet>(Some("default"), "web-abc", None)
        .unwrap();
    reconcile(&store, "default", "web-abc").unwrap();
    assert!(store.list::<Pod>(None).unwrap().0.is_empty());
}
