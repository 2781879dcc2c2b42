//! Deployment rollouts end to end over the embedded broker: the Deployment and
//! ReplicaSet controllers, the scheduler and node sync against a fake agent that
//! reports the Pods it is asked to run (Ready, or Running but never Ready).

mod loops_support;

use std::time::Duration;

use loops_support::*;
use punnet_api::wire::PodReport;
use punnet_api::{
    Deployment, IntOrString, Pod, PodStatus, ReplicaSet, RollingUpdateDeployment,
    ANNOTATION_REVISION, LABEL_POD_TEMPLATE_HASH,
};
use punnet_controller::store::Store;

const WAIT: Duration = Duration::from_secs(20);

/// Starts a broker, the controller loops and one agent; Node n1 is Ready on return.
async fn fleet() -> (Controller, FakeAgent) {
    let port = free_port();
    embedded_broker(port).await;
    let ctl = Controller::start(port);
    let agent = FakeAgent::start("n1", port);
    let store = ctl.store.clone();
    eventually("Node n1 Ready", WAIT, || {
        store
            .get::<punnet_api::Node>(None, "n1")
            .unwrap()
            .filter(|n| n.is_ready())
    })
    .await;
    (ctl, agent)
}

/// What the agent reports from now on: every desired Pod Running, Ready when `ready`
/// says so; Pods no longer desired are gone (their containers stopped).
fn report(agent: &FakeAgent, ready: impl Fn(&Pod) -> bool) {
    let Some(desired) = agent.desired.borrow().clone() else {
        return;
    };
    let reports = desired
        .pods
        .iter()
        .map(|p| PodReport {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
            status: if ready(p) {
                running()
            } else {
                PodStatus {
                    phase: Some("Running".into()),
                    ..Default::default()
                }
            },
            usage: Vec::new(),
        })
        .collect();
    *agent.pods.lock().unwrap() = reports;
}

fn pods(store: &Store) -> Vec<Pod> {
    store.list::<Pod>(None).unwrap().0
}

fn image(p: &Pod) -> &str {
    &p.spec.containers[0].image
}

fn get(store: &Store, name: &str) -> Deployment {
    store.get(Some("default"), name).unwrap().unwrap()
}

fn progressing_reason(d: &Deployment) -> Option<String> {
    d.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .and_then(|c| c.reason.clone())
}

/// Reports every Pod Ready until `done` holds, checking `invariant` on every look.
async fn run_until(
    agent: &FakeAgent,
    store: &Store,
    what: &str,
    mut invariant: impl FnMut(&[Pod]),
    done: impl Fn(&Store) -> bool,
) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        report(agent, |_| true);
        invariant(&pods(store));
        if done(store) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rolled_out(
    name: &'static str,
    replicas: i32,
    image_now: &'static str,
) -> impl Fn(&Store) -> bool {
    move |store| {
        let d = get(store, name);
        let ps = pods(store);
        d.status.observed_generation == d.metadata.generation
            && d.status.updated_replicas == replicas
            && d.status.available_replicas == replicas
            && d.status.replicas == replicas
            && ps.len() == replicas as usize
            && ps.iter().all(|p| image(p) == image_now && p.is_ready())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_with_max_unavailable_zero_keeps_every_replica_ready() {
    let (ctl, agent) = fleet().await;
    let store = ctl.store.clone();
    let mut d = deployment("web", 3);
    d.spec.strategy.rolling_update = Some(RollingUpdateDeployment {
        max_surge: Some(IntOrString::Int(1)),
        max_unavailable: Some(IntOrString::Int(0)),
    });
    store.create(d).unwrap();
    run_until(
        &agent,
        &store,
        "3 ready Pods",
        |_| {},
        rolled_out("web", 3, "busybox:1.36"),
    )
    .await;
    let first_rs: Vec<ReplicaSet> = store.list(None).unwrap().0;
    assert_eq!(first_rs.len(), 1);
    let pod = &pods(&store)[0];
    assert_eq!(
        pod.metadata.controller().unwrap().name,
        first_rs[0].metadata.name,
        "Pods belong to the ReplicaSet"
    );
    assert!(pod
        .metadata
        .name
        .starts_with(&format!("{}-", first_rs[0].metadata.name)));

    store
        .modify::<Deployment>(Some("default"), "web", |d| {
            d.spec.template.spec.containers[0].image = "busybox:1.37".into()
        })
        .unwrap();
    let mut least_ready = i32::MAX;
    let mut most = 0;
    run_until(
        &agent,
        &store,
        "only busybox:1.37 Pods, all ready",
        |ps| {
            let live: Vec<&Pod> = ps
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = live.iter().filter(|p| p.is_ready()).count() as i32;
            least_ready = least_ready.min(ready);
            most = most.max(live.len());
            assert!(
                ready >= 3,
                "only {ready} ready Pods during the rollout: {ps:#?}"
            );
            assert!(live.len() <= 4, "more than replicas + maxSurge Pods");
        },
        rolled_out("web", 3, "busybox:1.37"),
    )
    .await;
    assert_eq!(most, 4, "the rollout surged by one Pod");
    let got = get(&store, "web");
    assert_eq!(got.metadata.annotations[ANNOTATION_REVISION], "2");
    assert_eq!(
        progressing_reason(&got).as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let sets: Vec<ReplicaSet> = store.list(None).unwrap().0;
    assert_eq!(sets.len(), 2, "the old ReplicaSet is kept for undo");
    let old = sets
        .iter()
        .find(|r| r.metadata.name == first_rs[0].metadata.name)
        .unwrap();
    assert_eq!(old.spec.replicas, Some(0));
    let events = store
        .recorder()
        .for_object(&punnet_api::ObjectReference::to(&got));
    assert!(
        events.iter().any(|e| e.reason == "ScalingReplicaSet"
            && e.message == format!("Scaled down replica set {} to 0", old.metadata.name)),
        "{events:#?}"
    );

    // Deleting the Deployment removes its ReplicaSets and Pods.
    store
        .delete::<Deployment>(Some("default"), "web", None)
        .unwrap();
    run_until(
        &agent,
        &store,
        "no ReplicaSets and no Pods",
        |_| {},
        |s| s.list::<ReplicaSet>(None).unwrap().0.is_empty() && pods(s).is_empty(),
    )
    .await;
    drop(agent);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_every_old_pod_before_starting_new_ones() {
    let (ctl, agent) = fleet().await;
    let store = ctl.store.clone();
    let mut d = deployment("db", 2);
    d.spec.strategy.type_ = Some("Recreate".into());
    store.create(d).unwrap();
    run_until(
        &agent,
        &store,
        "2 ready Pods",
        |_| {},
        rolled_out("db", 2, "busybox:1.36"),
    )
    .await;
    store
        .modify::<Deployment>(Some("default"), "db", |d| {
            d.spec.template.spec.containers[0].image = "busybox:1.37".into()
        })
        .unwrap();
    run_until(
        &agent,
        &store,
        "only busybox:1.37 Pods",
        |ps| {
            let old = ps.iter().filter(|p| image(p) == "busybox:1.36").count();
            let new = ps.len() - old;
            // The moment without Pods can be shorter than a poll, so it is not asserted.
            assert!(old == 0 || new == 0, "old and new Pods at once: {ps:#?}");
        },
        rolled_out("db", 2, "busybox:1.37"),
    )
    .await;
    drop(agent);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_brings_back_the_previous_template_and_its_replica_set() {
    let (ctl, agent) = fleet().await;
    let store = ctl.store.clone();
    store.create(deployment("web", 2)).unwrap();
    run_until(
        &agent,
        &store,
        "v1 ready",
        |_| {},
        rolled_out("web", 2, "busybox:1.36"),
    )
    .await;
    store
        .modify::<Deployment>(Some("default"), "web", |d| {
            d.spec.template.spec.containers[0].image = "busybox:1.37".into()
        })
        .unwrap();
    run_until(
        &agent,
        &store,
        "v2 ready",
        |_| {},
        rolled_out("web", 2, "busybox:1.37"),
    )
    .await;

    // What `punnet rollout undo` does: copy revision 1's template back.
    let sets: Vec<ReplicaSet> = store.list(None).unwrap().0;
    let first = sets
        .iter()
        .find(|r| r.metadata.annotations[ANNOTATION_REVISION] == "1")
        .unwrap()
        .clone();
    let mut template = first.spec.template.clone();
    template.metadata.labels.remove(LABEL_POD_TEMPLATE_HASH);
    store
        .modify::<Deployment>(Some("default"), "web", |d| d.spec.template = template)
        .unwrap();
    run_until(
        &agent,
        &store,
        "v1 again",
        |_| {},
        rolled_out("web", 2, "busybox:1.36"),
    )
    .await;
    let sets: Vec<ReplicaSet> = store.list(None).unwrap().0;
    assert_eq!(
        sets.len(),
        2,
        "the old ReplicaSet is reused, not a third one"
    );
    let reused = sets
        .iter()
        .find(|r| r.metadata.uid == first.metadata.uid)
        .unwrap();
    assert_eq!(reused.metadata.annotations[ANNOTATION_REVISION], "3");
    assert_eq!(reused.spec.replicas, Some(2));
    assert!(pods(&store)
        .iter()
        .all(|p| p.metadata.controller().unwrap().uid == first.metadata.uid.clone().unwrap()));
    let d = get(&store, "web");
    assert_eq!(d.metadata.annotations[ANNOTATION_REVISION], "3");
    drop(agent);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_pods_never_get_ready_exceeds_its_progress_deadline() {
    let (ctl, agent) = fleet().await;
    let store = ctl.store.clone();
    let mut d = deployment("web", 2);
    d.spec.progress_deadline_seconds = Some(2);
    store.create(d).unwrap();
    run_until(
        &agent,
        &store,
        "v1 ready",
        |_| {},
        rolled_out("web", 2, "busybox:1.36"),
    )
    .await;
    store
        .modify::<Deployment>(Some("default"), "web", |d| {
            d.spec.template.spec.containers[0].image = "busybox:broken".into()
        })
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let d = loop {
        report(&agent, |p| image(p) != "busybox:broken");
        let d = get(&store, "web");
        if progressing_reason(&d).as_deref() == Some("ProgressDeadlineExceeded") {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ProgressDeadlineExceeded: {:#?}",
            d.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let progressing = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.status, "False");
    assert!(progressing
        .message
        .as_deref()
        .unwrap()
        .ends_with("has timed out progressing."));
    // The old Pods still serve: maxUnavailable (25% of 2) is 0.
    let available = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(available.status, "True");
    let ready_old = pods(&store)
        .iter()
        .filter(|p| image(p) == "busybox:1.36" && p.is_ready())
        .count();
    assert_eq!(ready_old, 2);
    drop(agent);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_counts_as_available_only_after_min_ready_seconds() {
    use std::collections::HashMap;
    let (ctl, agent) = fleet().await;
    let store = ctl.store.clone();
    let mut d = deployment("web", 1);
    d.spec.min_ready_seconds = Some(3);
    store.create(d).unwrap();
    // The agent reports each Pod Ready since the first time it saw it, as real agents
    // report the Ready condition's lastTransitionTime.
    let mut since: HashMap<String, punnet_api::Time> = HashMap::new();
    let deadline = std::time::Instant::now() + WAIT;
    let mut first_ready: Option<Deployment> = None;
    loop {
        if let Some(desired) = agent.desired.borrow().clone() {
            let reports = desired
                .pods
                .iter()
                .map(|p| {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    let t = *since
                        .entry(uid.clone())
                        .or_insert_with(punnet_api::Time::now);
                    let mut status = running();
                    for c in &mut status.conditions {
                        c.last_transition_time = Some(t);
                    }
                    PodReport {
                        namespace: "default".into(),
                        name: p.metadata.name.clone(),
                        uid,
                        status,
                        usage: Vec::new(),
                    }
                })
                .collect();
            *agent.pods.lock().unwrap() = reports;
        }
        let d = get(&store, "web");
        if d.status.ready_replicas == 1 && first_ready.is_none() {
            first_ready = Some(d.clone());
        }
        if d.status.available_replicas == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never available: {:#?}",
            d.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first_ready.expect("a status with the Pod Ready");
    assert_eq!(
        first.status.available_replicas, 0,
        "Ready, but not yet for minReadySeconds: {:#?}",
        first.status
    );
    let rs: ReplicaSet = eventually("the ReplicaSet's Pod available", WAIT, || {
        let rs: Vec<ReplicaSet> = store.list(None).unwrap().0;
        rs.into_iter().find(|r| r.status.available_replicas == 1)
    })
    .await;
    assert_eq!(rs.spec.min_ready_seconds, Some(3));
    drop(agent);
    ctl.stop().await;
}
