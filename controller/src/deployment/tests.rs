//! Tests of the Deployment controller against a real store, with the ReplicaSet
//! controller run in between (`settle`), as the two loops would.

use super::*;
use punnet_api::{Container, PodCondition, PodStatus};

fn deployment(replicas: i32, image: &str) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.name = "web".into();
    d.metadata.namespace = Some("default".into());
    d.spec.replicas = Some(replicas);
    d.spec
        .selector
        .match_labels
        .insert("app".into(), "web".into());
    d.spec
        .template
        .metadata
        .labels
        .insert("app".into(), "web".into());
    d.spec.template.spec.containers.push(Container {
        name: "web".into(),
        image: image.into(),
        ..Default::default()
    });
    d
}

/// Runs both controllers over every key until nothing changes.
fn settle(store: &Store) {
    for _ in 0..30 {
        let rev = store.revision();
        for (ns, name) in Controller.all_keys(store).unwrap() {
            reconcile(store, &ns, &name).unwrap();
        }
        let (sets, _) = store.list::<ReplicaSet>(None).unwrap();
        let (pods, _) = store.list::<Pod>(None).unwrap();
        let mut names: BTreeSet<String> = sets.iter().map(|r| r.metadata.name.clone()).collect();
        for p in &pods {
            if let Some(o) = controlled_by::<ReplicaSet>(&p.metadata) {
                names.insert(o.name.clone());
            }
        }
        for name in names {
            replicaset::reconcile(store, "default", &name).unwrap();
        }
        if store.revision() == rev {
            return;
        }
    }
    panic!("the controllers did not settle");
}

/// What a running agent reports: every Pod Running and Ready.
fn make_ready(store: &Store) {
    for p in store.list::<Pod>(None).unwrap().0 {
        store
            .modify::<Pod>(Some("default"), &p.metadata.name, |p| {
                if !p.is_ready() {
                    p.status = PodStatus {
                        phase: Some("Running".into()),
                        conditions: vec![PodCondition {
                            type_: "Ready".into(),
                            status: "True".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                }
            })
            .unwrap();
    }
}

fn sets(store: &Store) -> Vec<ReplicaSet> {
    store.list::<ReplicaSet>(None).unwrap().0
}

fn pods(store: &Store) -> Vec<Pod> {
    store.list::<Pod>(None).unwrap().0
}

fn get(store: &Store) -> Deployment {
    store.get(Some("default"), "web").unwrap().unwrap()
}

#[test]
fn template_hash_is_stable_short_and_safe() {
    let d = deployment(1, "busybox:1.36");
    let h = pod_template_hash(&d.spec.template);
    assert_eq!(h.len(), 10);
    assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
    assert_eq!(
        h,
        pod_template_hash(&deployment(5, "busybox:1.36").spec.template)
    );
    assert_ne!(
        h,
        pod_template_hash(&deployment(1, "busybox:1.37").spec.template)
    );
    // Pinned: the hash names ReplicaSets and Pods, and must not change between versions.
    assert_eq!(
        h, "njr95zwccb",
        "the template hash of a fixed template changed"
    );
}

#[test]
fn replica_sets_carry_hash_owner_and_revision() {
    let mut d = deployment(1, "busybox");
    d.metadata.uid = Some("uid-1".into());
    d.metadata
        .annotations
        .insert(CHANGE_CAUSE.into(), "image 1.37".into());
    let rs = replica_set_for(&d, &d.spec.template, "abc", 3, 7);
    assert_eq!(rs.metadata.annotations[CHANGE_CAUSE], "image 1.37");
    assert_eq!(rs.metadata.name, "web-abc");
    assert_eq!(
        rs.spec.template.metadata.labels[LABEL_POD_TEMPLATE_HASH],
        "abc"
    );
    assert_eq!(
        rs.spec.selector.match_labels[LABEL_POD_TEMPLATE_HASH],
        "abc"
    );
    assert_eq!(rs.spec.selector.match_labels["app"], "web");
    assert_eq!(revision_of(&rs), 7);
    assert_eq!(hash_of(&rs), Some("abc"));
    let owner = rs.metadata.controller().unwrap();
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Deployment", "uid-1")
    );
    punnet_api::replicaset::validate_replica_set(&rs).unwrap();
}

#[test]
fn a_rollout_against_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = store.create(deployment(2, "busybox")).unwrap();
    settle(&store);
    let hash = pod_template_hash(&d.spec.template);
    let [rs] = &sets(&store)[..] else {
        panic!("one ReplicaSet expected")
    };
    assert_eq!(rs.metadata.name, format!("web-{hash}"));
    assert_eq!(revision_of(rs), 1);
    let first = pods(&store);
    assert_eq!(first.len(), 2);
    for p in &first {
        let prefix = format!("web-{hash}-");
        assert!(p.metadata.name.starts_with(&prefix), "{}", p.metadata.name);
        assert_eq!(p.metadata.name.len(), prefix.len() + 5);
        assert_eq!(p.metadata.controller().unwrap().kind, "ReplicaSet");
    }
    let got = get(&store);
    assert_eq!(got.metadata.annotations[ANNOTATION_REVISION], "1");
    assert_eq!((got.status.replicas, got.status.ready_replicas), (2, 0));
    make_ready(&store);
    settle(&store);
    let got = get(&store);
    assert_eq!(got.status.available_replicas, 2);
    let progressing = status::get(&got.status, status::PROGRESSING).unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some(status::NEW_RS_AVAILABLE)
    );

    // Idempotent: another pass writes nothing.
    let rev = store.revision();
    settle(&store);
    assert_eq!(store.revision(), rev);

    // A new template: one surge Pod, then old ones go as new ones become available.
    store
        .modify::<Deployment>(Some("default"), "web", |d| {
            d.spec.template.spec.containers[0].image = "busybox:2".into()
        })
        .unwrap();
    settle(&store);
    assert_eq!(sets(&store).len(), 2);
    assert_eq!(
        pods(&store).len(),
        3,
        "2 old + 1 surge (25% of 2, rounded up)"
    );
    for _ in 0..10 {
        make_ready(&store);
        settle(&store);
    }
    let now = pods(&store);
    assert_eq!(now.len(), 2);
    assert!(now
        .iter()
        .all(|p| p.spec.containers[0].image == "busybox:2"));
    let got = get(&store);
    assert_eq!(got.metadata.annotations[ANNOTATION_REVISION], "2");
    assert_eq!(
        (got.status.updated_replicas, got.status.available_replicas),
        (2, 2)
    );
    let events = store.recorder().for_object(&ObjectReference::to(&got));
    assert!(
        events.iter().any(|e| e.reason == "ScalingReplicaSet"
            && e.message.starts_with("Scaled down replica set web-")),
        "{events:?}"
    );

    // History: with a limit of 0 the empty old ReplicaSet goes.
    assert_eq!(sets(&store).len(), 2);
    store
        .modify::<Deployment>(Some("default"), "web", |d| {
            d.spec.revision_history_limit = Some(0)
        })
        .unwrap();
    settle(&store);
    assert_eq!(sets(&store).len(), 1);

    // Deleting the Deployment deletes its ReplicaSets and Pods.
    store
        .delete::<Deployment>(Some("default"), "web", None)
        .unwrap();
    settle(&store);
    assert!(sets(&store).is_empty());
    assert!(pods(&store).is_empty());
}

#[test]
fn recreate_deletes_old_pods_before_making_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut d = deployment(2, "busybox");
    d.spec.strategy.type_ = Some("Recreate".into());
    store.create(d).unwrap();
    settle(&store);
    make_ready(&store);
    settle(&store);
    store
        .modify::<Deployment>(Some("default"), "web", |d| {
            d.spec.template.spec.containers[0].image = "busybox:2".into()
        })
        .unwrap();
    // One pass of each: the old ReplicaSet is scaled to 0, no new one yet.
    reconcile(&store, "default", "web").unwrap();
    assert_eq!(sets(&store).len(), 1);
    assert_eq!(sets(&store)[0].spec.replicas, Some(0));
    settle(&store);
    let now = pods(&store);
    assert_eq!(now.len(), 2);
    assert!(now
        .iter()
        .all(|p| p.spec.containers[0].image == "busybox:2"));
}

#[test]
fn pods_made_before_replica_sets_are_adopted_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = store.create(deployment(2, "busybox")).unwrap();
    let hash = pod_template_hash(&d.spec.template);
    // What the previous version made: Pods owned by the Deployment itself.
    for suffix in ["aaaaa", "bbbbb"] {
        let mut p = Pod::default();
        p.metadata.name = format!("web-{hash}-{suffix}");
        p.metadata.namespace = Some("default".into());
        p.metadata.labels = d.spec.template.metadata.labels.clone();
        p.metadata
            .labels
            .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.clone());
        p.metadata.owner_references = vec![controller_ref(&d)];
        p.spec = d.spec.template.spec.clone();
        store.create(p).unwrap();
    }
    let before: BTreeSet<Option<String>> =
        pods(&store).into_iter().map(|p| p.metadata.uid).collect();
    settle(&store);
    let after = pods(&store);
    assert_eq!(
        after
            .iter()
            .map(|p| p.metadata.uid.clone())
            .collect::<BTreeSet<_>>(),
        before,
        "the same Pods, none replaced"
    );
    assert!(after
        .iter()
        .all(|p| p.metadata.controller().unwrap().kind == "ReplicaSet"));
    assert_eq!(sets(&store)[0].metadata.name, format!("web-{hash}"));
}

#[test]
fn a_replaced_deployment_incarnation_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create(deployment(1, "busybox")).unwrap();
    settle(&store);
    let first = pods(&store);
    store
        .delete::<Deployment>(Some("default"), "web", None)
        .unwrap();
    store.create(deployment(1, "busybox")).unwrap();
    settle(&store);
    let now = pods(&store);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].metadata.uid, first[0].metadata.uid);
    assert_eq!(sets(&store).len(), 1);
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create(deployment(1, "busybox")).unwrap();
    settle(&store);
    store
        .modify::<Deployment>(Some("default"), "web", |d| {
            d.spec.paused = true;
            d.spec.replicas = Some(3);
            d.spec.template.spec.containers[0].image = "busybox:2".into();
        })
        .unwrap();
    settle(&store);
    assert_eq!(sets(&store).len(), 1);
    let now = pods(&store);
    assert_eq!(now.len(), 3);
    assert!(now.iter().all(|p| p.spec.containers[0].image == "busybox"));
    let c = status::get(&get(&store).status, status::PROGRESSING)
        .cloned()
        .unwrap();
    assert_eq!(c.reason.as_deref(), Some(status::PAUSED));
    store
        .modify::<Deployment>(Some("default"), "web", |d| d.spec.paused = false)
        .unwrap();
    settle(&store);
    assert_eq!(sets(&store).len(), 2, "resumed: the new template rolls out");
}
