//! The Deployment controller (step 4 of the Pod flow): keeps `replicas` Pods of a
//! Deployment's current template, deletes Pods whose Deployment is gone, and writes the
//! Deployment's status.
//!
//! Level-triggered and idempotent, in the kube-rs manner: `reconcile` looks at the store
//! as it is now and acts, whatever event woke it. Events for Deployments and for the
//! Pods they own queue a reconcile of that Deployment; a periodic resync heals anything
//! missed (a restart, a lagged watch). One task runs every reconcile, so one Deployment
//! is never reconciled twice at once.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use punnet_api::{
    phase, Deployment, DeploymentCondition, DeploymentStatus, Object, OwnerReference, Pod,
    PodTemplateSpec, Resource, Time, LABEL_POD_TEMPLATE_HASH,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::podgc;
use crate::scheduler::is_terminal;
use crate::store::{Store, StoreError, WatchEvent};

/// Kubernetes' "safe" alphabet for generated names: no vowels (no words), no look-alikes.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

#[derive(Debug, Error)]
pub enum DeploymentError {
    #[error("Deployment {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("Deployment {key}: could not find a free Pod name after {attempts} attempts")]
    NoFreeName { key: String, attempts: u32 },
}

#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    /// Reconcile every Deployment and sweep orphaned Pods this often.
    pub resync: Duration,
    /// Wait this long after an event for more before reconciling.
    pub debounce: Duration,
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        DeploymentConfig {
            resync: Duration::from_secs(30),
            debounce: Duration::from_millis(10),
        }
    }
}

/// A stable short hash of a Pod template: 10 characters of the safe alphabet. Computed
/// over the template's JSON without empty fields, so adding an optional field to the
/// types does not change the hash of existing templates (which would restart every Pod).
pub fn pod_template_hash(template: &PodTemplateSpec) -> String {
    let json = punnet_api::object::to_json(template).to_string();
    let digest = Sha256::digest(json.as_bytes());
    let mut n = u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"));
    let base = SAFE_ALPHABET.len() as u64;
    (0..10)
        .map(|_| {
            let c = SAFE_ALPHABET[(n % base) as usize] as char;
            n /= base;
            c
        })
        .collect()
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| SAFE_ALPHABET[rng.gen_range(0..SAFE_ALPHABET.len())] as char)
        .collect()
}

/// The Deployment a Pod belongs to: its controlling owner reference, if of that kind.
fn owner_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .controller()
        .filter(|r| r.kind == Deployment::KIND)
}

/// A new Pod from the Deployment's template (name without the random suffix yet).
pub fn pod_from_template(d: &Deployment, hash: &str) -> Pod {
    let t = &d.spec.template;
    let mut pod = Pod::default();
    pod.set_type_meta();
    pod.metadata.generate_name = Some(format!("{}-{hash}-", d.metadata.name));
    pod.metadata.namespace = Some(d.metadata.namespace_or_default().to_string());
    pod.metadata.labels = t.metadata.labels.clone();
    pod.metadata
        .labels
        .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.to_string());
    pod.metadata.annotations = t.metadata.annotations.clone();
    pod.metadata.owner_references = vec![OwnerReference {
        api_version: Deployment::API_VERSION.into(),
        kind: Deployment::KIND.into(),
        name: d.metadata.name.clone(),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    pod.spec = t.spec.clone();
    pod
}

/// What one reconcile does to the Deployment's live Pods.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods of the current template to create.
    pub create: usize,
    /// Names of Pods to delete: old templates first, then extras.
    pub delete: Vec<String>,
}

/// Decides creations and deletions from the live (non-terminal, not terminating) Pods
/// the Deployment owns.
/// Extras are deleted in Kubernetes' order: unscheduled, then not Running, then newest.
pub fn plan(replicas: i32, hash: &str, live: &[&Pod]) -> Plan {
    let want = replicas.max(0) as usize;
    let (current, old): (Vec<&Pod>, Vec<&Pod>) = live.iter().partition(|p| {
        p.metadata
            .labels
            .get(LABEL_POD_TEMPLATE_HASH)
            .map(String::as_str)
            == Some(hash)
    });
    let mut delete: Vec<String> = old.iter().map(|p| p.metadata.name.clone()).collect();
    let mut current = current;
    if current.len() > want {
        current.sort_by_key(|p| {
            (
                p.spec.node_name.is_some(),
                p.phase() == phase::RUNNING,
                Reverse(p.metadata.creation_timestamp),
                Reverse(p.metadata.name.clone()),
            )
        });
        delete.extend(
            current[..current.len() - want]
                .iter()
                .map(|p| p.metadata.name.clone()),
        );
    }
    Plan {
        create: want.saturating_sub(current.len()),
        delete,
    }
}

/// The status of a Deployment whose live Pods are `live`. Condition times are kept from
/// `previous` while the condition's status stays, so an unchanged status is equal.
pub fn compute_status(
    d: &Deployment,
    hash: &str,
    live: &[&Pod],
    previous: &DeploymentStatus,
) -> DeploymentStatus {
    let want = d.spec.replicas().max(0);
    let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    let updated = count(&|p| {
        p.metadata
            .labels
            .get(LABEL_POD_TEMPLATE_HASH)
            .map(String::as_str)
            == Some(hash)
    });
    let ready = count(&|p| p.is_ready());
    // No minReadySeconds yet: a ready Pod is available.
    let available = ready;
    // Kubernetes' default maxUnavailable is 25%, rounded down.
    let min_available = want - want / 4;
    let (status, reason, message) = if available >= min_available {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let mut cond = DeploymentCondition {
        type_: "Available".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: None,
        last_transition_time: None,
    };
    match previous.conditions.iter().find(|c| c.type_ == "Available") {
        Some(prev) if prev.status == cond.status && prev.reason == cond.reason => {
            cond.last_update_time = prev.last_update_time;
            cond.last_transition_time = prev.last_transition_time;
        }
        _ => {
            cond.last_update_time = Some(Time::now());
            cond.last_transition_time = Some(Time::now());
        }
    }
    let mut conditions: Vec<DeploymentCondition> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != "Available")
        .cloned()
        .collect();
    conditions.insert(0, cond);
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: live.len() as i32,
        updated_replicas: updated,
        ready_replicas: ready,
        available_replicas: available,
        unavailable_replicas: (want - available).max(0),
        conditions,
    }
}

/// Reconciles the Deployment `namespace/name`, or cleans up after it if it is gone:
/// every Pod whose controlling owner is a Deployment of that name but not of its current
/// uid is deleted.
pub fn reconcile(store: &Store, namespace: &str, name: &str) -> Result<(), DeploymentError> {
    let _timer = crate::prometheus::reconcile_timer("deployment");
    let key = format!("{namespace}/{name}");
    let err = |source| DeploymentError::Store {
        key: key.clone(),
        source,
    };
    let deployment: Option<Deployment> = store.get(Some(namespace), name).map_err(err)?;
    let (pods, _) = store.list::<Pod>(Some(namespace)).map_err(err)?;
    let uid = deployment.as_ref().and_then(|d| d.metadata.uid.clone());
    let mut owned = Vec::new();
    for pod in &pods {
        let Some(owner) = owner_of(pod) else { continue };
        if owner.name != name {
            continue;
        }
        if Some(&owner.uid) == uid.as_ref() {
            owned.push(pod);
        } else if !podgc::is_terminating(pod) {
            // Already terminating: its agent is stopping it; deleting again would only
            // be a no-op (and a log line per event).
            delete_pod(store, pod, "its Deployment no longer exists").map_err(err)?;
        }
    }
    let Some(d) = deployment else { return Ok(()) };
    // Being deleted (foreground or orphan): the garbage collector owns its Pods now.
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }

    let hash = pod_template_hash(&d.spec.template);
    // Terminating Pods are on their way out: they are not replicas any more, so their
    // replacements are created at once, as Kubernetes does.
    let live: Vec<&Pod> = owned
        .into_iter()
        .filter(|p| !is_terminal(p) && !podgc::is_terminating(p))
        .collect();
    let plan = plan(d.spec.replicas(), &hash, &live);
    for victim in &plan.delete {
        if let Some(pod) = live.iter().find(|p| &p.metadata.name == victim) {
            delete_pod(store, pod, "scaled down or replaced").map_err(err)?;
        }
    }
    let mut created = Vec::new();
    for _ in 0..plan.create {
        created.push(create_pod(store, &d, &hash)?);
    }

    let after: Vec<&Pod> = live
        .iter()
        .copied()
        .filter(|p| !plan.delete.contains(&p.metadata.name))
        .chain(created.iter())
        .collect();
    let status = compute_status(&d, &hash, &after, &d.status);
    if status != d.status {
        store
            .modify::<Deployment>(Some(namespace), name, |cur| {
                // Only the incarnation we looked at; a recreated one gets its own reconcile.
                if cur.metadata.uid == d.metadata.uid {
                    cur.status = status;
                }
            })
            .map_err(err)?;
    }
    Ok(())
}

fn create_pod(store: &Store, d: &Deployment, hash: &str) -> Result<Pod, DeploymentError> {
    const ATTEMPTS: u32 = 5;
    let template = pod_from_template(d, hash);
    for _ in 0..ATTEMPTS {
        let mut pod = template.clone();
        pod.metadata.name = format!("{}-{hash}-{}", d.metadata.name, random_suffix());
        match store.create(pod) {
            Ok(pod) => {
                info!(
                    "deployment {}: created Pod {}",
                    d.metadata.key(),
                    pod.metadata.name
                );
                return Ok(pod);
            }
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(source) => {
                return Err(DeploymentError::Store {
                    key: d.metadata.key(),
                    source,
                })
            }
        }
    }
    Err(DeploymentError::NoFreeName {
        key: d.metadata.key(),
        attempts: ATTEMPTS,
    })
}

/// Deletes a Pod the way the API does (gracefully when it runs on a Ready node).
fn delete_pod(store: &Store, pod: &Pod, why: &str) -> Result<(), StoreError> {
    let outcome = podgc::delete_pod(
        store,
        pod.metadata.namespace.as_deref(),
        &pod.metadata.name,
        pod.metadata.uid.as_deref(),
        None,
    )?;
    if outcome != podgc::Deleted::NotFound {
        info!("deployment: deleting Pod {} ({why})", pod.metadata.key());
    }
    Ok(())
}

/// Every Deployment, plus every Deployment name some Pod still points at (so the Pods
/// of a Deployment deleted while the controller was down are cleaned up).
fn all_keys(store: &Store) -> Result<BTreeSet<(String, String)>, StoreError> {
    let (deployments, _) = store.list::<Deployment>(None)?;
    let (pods, _) = store.list::<Pod>(None)?;
    let mut keys: BTreeSet<(String, String)> = deployments
        .iter()
        .map(|d| {
            (
                d.metadata.namespace_or_default().to_string(),
                d.metadata.name.clone(),
            )
        })
        .collect();
    for p in &pods {
        if let Some(owner) = owner_of(p) {
            keys.insert((
                p.metadata.namespace_or_default().to_string(),
                owner.name.clone(),
            ));
        }
    }
    Ok(keys)
}

/// The Deployment an event concerns, if any.
fn key_of(ev: &WatchEvent) -> Option<(String, String)> {
    match &ev.object {
        Object::Deployment(d) => Some((
            d.metadata.namespace_or_default().to_string(),
            d.metadata.name.clone(),
        )),
        Object::Pod(p) => {
            // Status changes matter too: they move readyReplicas.
            let owner = owner_of(p)?;
            Some((
                p.metadata.namespace_or_default().to_string(),
                owner.name.clone(),
            ))
        }
        Object::Node(_)
        | Object::ConfigMap(_)
        | Object::Secret(_)
        | Object::DaemonSet(_)
        | Object::Job(_) => None,
        Object::Namespace(_) => None,
    }
}

/// Runs the Deployment controller until `cancel` fires.
pub async fn run(store: Arc<Store>, cancel: CancellationToken) {
    run_with(store, DeploymentConfig::default(), cancel).await
}

pub async fn run_with(store: Arc<Store>, config: DeploymentConfig, cancel: CancellationToken) {
    let mut events = store.subscribe();
    let mut resync = tokio::time::interval(config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue: BTreeSet<(String, String)> = BTreeSet::new();
    let mut full = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            // The first tick fires at once: the startup resync.
            _ = resync.tick() => full = true,
            ev = events.recv() => match ev {
                Ok(ev) => queue.extend(key_of(&ev)),
                Err(RecvError::Lagged(_)) => full = true,
                Err(RecvError::Closed) => return,
            },
        }
        if !full && queue.is_empty() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(config.debounce) => {}
        }
        loop {
            match events.try_recv() {
                Ok(ev) => queue.extend(key_of(&ev)),
                Err(TryRecvError::Lagged(_)) => full = true,
                Err(_) => break,
            }
        }
        if full {
            match all_keys(&store) {
                Ok(keys) => queue.extend(keys),
                Err(e) => warn!("deployment controller: resync failed: {e}"),
            }
            full = false;
        }
        for (ns, name) in std::mem::take(&mut queue) {
            if let Err(e) = reconcile(&store, &ns, &name) {
                warn!("deployment controller: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{Container, PodCondition};

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

    fn live_pod(name: &str, hash: &str, node: Option<&str>, phase: &str, age_s: i64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata
            .labels
            .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.into());
        p.metadata.creation_timestamp = Some(Time(
            chrono::DateTime::from_timestamp(1_700_000_000 - age_s, 0).unwrap(),
        ));
        p.spec.node_name = node.map(str::to_string);
        p.status.phase = Some(phase.into());
        p
    }

    #[test]
    fn template_hash_is_stable_short_and_safe() {
        let d = deployment(1, "busybox:1.36");
        let h = pod_template_hash(&d.spec.template);
        assert_eq!(h.len(), 10);
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
        assert_eq!(h, pod_template_hash(&d.spec.template.clone()));
        // Pinned: the hash names Pods, and must not change between versions.
        assert_eq!(
            h,
            pod_template_hash(&deployment(5, "busybox:1.36").spec.template)
        );
        assert_ne!(
            h,
            pod_template_hash(&deployment(1, "busybox:1.37").spec.template)
        );
        assert_eq!(
            h, PINNED_HASH,
            "the template hash of a fixed template changed"
        );
    }

    const PINNED_HASH: &str = "njr95zwccb";

    #[test]
    fn pods_from_template_carry_owner_labels_and_namespace() {
        let mut d = deployment(1, "busybox");
        d.metadata.uid = Some("uid-1".into());
        let p = pod_from_template(&d, "abc");
        assert_eq!(p.metadata.labels["app"], "web");
        assert_eq!(p.metadata.labels[LABEL_POD_TEMPLATE_HASH], "abc");
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let owner = p.metadata.controller().unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "uid-1")
        );
        assert_eq!(p.spec.containers[0].image, "busybox");
        assert_eq!(random_suffix().len(), 5);
    }

    #[test]
    fn plan_creates_missing_and_replaces_old_template() {
        let a = live_pod("a", "new", Some("n1"), "Running", 10);
        let old = live_pod("o", "old", Some("n1"), "Running", 100);
        assert_eq!(
            plan(3, "new", &[&a, &old]),
            Plan {
                create: 2,
                delete: vec!["o".into()]
            }
        );
        assert_eq!(plan(0, "new", &[]), Plan::default());
    }

    #[test]
    fn plan_deletes_unscheduled_then_not_running_then_newest() {
        let running_old = live_pod("run-old", "h", Some("n1"), "Running", 100);
        let running_new = live_pod("run-new", "h", Some("n1"), "Running", 1);
        let pending = live_pod("pending", "h", Some("n1"), "Pending", 200);
        let unbound = live_pod("unbound", "h", None, "Pending", 300);
        let all = [&running_old, &running_new, &pending, &unbound];
        assert_eq!(plan(3, "h", &all).delete, vec!["unbound"]);
        assert_eq!(plan(2, "h", &all).delete, vec!["unbound", "pending"]);
        assert_eq!(
            plan(1, "h", &all).delete,
            vec!["unbound", "pending", "run-new"]
        );
    }

    #[test]
    fn status_counts_and_keeps_condition_times() {
        let mut d = deployment(2, "busybox");
        d.metadata.generation = Some(3);
        let mut ready = live_pod("a", "h", Some("n1"), "Running", 1);
        ready.status.conditions.push(PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        let old = live_pod("b", "old", Some("n1"), "Pending", 1);
        let s = compute_status(&d, "h", &[&ready, &old], &DeploymentStatus::default());
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.ready_replicas,
                s.available_replicas,
                s.unavailable_replicas
            ),
            (2, 1, 1, 1, 1)
        );
        assert_eq!(s.observed_generation, Some(3));
        // 2 replicas tolerate 0 unavailable (25% rounded down).
        assert_eq!(s.conditions[0].status, "False");
        let again = compute_status(&d, "h", &[&ready, &old], &s);
        assert_eq!(again, s, "same inputs, same status: nothing to write");
    }

    #[test]
    fn reconcile_against_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.create(deployment(2, "busybox")).unwrap();
        reconcile(&store, "default", "web").unwrap();
        let (pods, _) = store.list::<Pod>(Some("default")).unwrap();
        assert_eq!(pods.len(), 2);
        let hash = pod_template_hash(&d.spec.template);
        for p in &pods {
            let prefix = format!("web-{hash}-");
            assert!(p.metadata.name.starts_with(&prefix), "{}", p.metadata.name);
            assert_eq!(p.metadata.name.len(), prefix.len() + 5);
        }
        let got: Deployment = store.get(Some("default"), "web").unwrap().unwrap();
        assert_eq!((got.status.replicas, got.status.ready_replicas), (2, 0));

        // Idempotent: a second reconcile writes nothing.
        let rev = store.revision();
        reconcile(&store, "default", "web").unwrap();
        assert_eq!(store.revision(), rev);

        // Scale down, change the template, then delete.
        store
            .modify::<Deployment>(Some("default"), "web", |d| d.spec.replicas = Some(1))
            .unwrap();
        reconcile(&store, "default", "web").unwrap();
        assert_eq!(store.list::<Pod>(None).unwrap().0.len(), 1);
        store
            .modify::<Deployment>(Some("default"), "web", |d| {
                d.spec.template.spec.containers[0].image = "busybox:2".into()
            })
            .unwrap();
        reconcile(&store, "default", "web").unwrap();
        let (pods, _) = store.list::<Pod>(None).unwrap();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].spec.containers[0].image, "busybox:2");
        store
            .delete::<Deployment>(Some("default"), "web", None)
            .unwrap();
        reconcile(&store, "default", "web").unwrap();
        assert!(store.list::<Pod>(None).unwrap().0.is_empty());
    }

    #[test]
    fn pods_of_a_replaced_deployment_incarnation_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(deployment(1, "busybox")).unwrap();
        reconcile(&store, "default", "web").unwrap();
        let (first, _) = store.list::<Pod>(None).unwrap();
        store
            .delete::<Deployment>(Some("default"), "web", None)
            .unwrap();
        store.create(deployment(1, "busybox")).unwrap();
        // A resync after a restart: the old Pod's owner uid no longer exists.
        assert!(all_keys(&store)
            .unwrap()
            .contains(&("default".into(), "web".into())));
        reconcile(&store, "default", "web").unwrap();
        let (pods, _) = store.list::<Pod>(None).unwrap();
        assert_eq!(pods.len(), 1);
        assert_ne!(pods[0].metadata.uid, first[0].metadata.uid);
    }

    #[test]
    fn pods_on_a_ready_node_terminate_and_are_replaced_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut node = punnet_api::Node::default();
        node.metadata.name = "n1".into();
        node.status.conditions.push(punnet_api::NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        store.create(node).unwrap();
        let bind_all = |store: &Store| {
            for p in store.list::<Pod>(None).unwrap().0 {
                store
                    .modify::<Pod>(Some("default"), &p.metadata.name, |p| {
                        p.spec.node_name = Some("n1".into())
                    })
                    .unwrap();
            }
        };
        let terminating = |store: &Store| {
            let (pods, _) = store.list::<Pod>(None).unwrap();
            pods.iter().filter(|p| podgc::is_terminating(p)).count()
        };
        store.create(deployment(2, "busybox")).unwrap();
        reconcile(&store, "default", "web").unwrap();
        bind_all(&store);

        // Scale down: one Pod terminates and stays listed; it is not a replica any more.
        store
            .modify::<Deployment>(Some("default"), "web", |d| d.spec.replicas = Some(1))
            .unwrap();
        reconcile(&store, "default", "web").unwrap();
        assert_eq!(store.list::<Pod>(None).unwrap().0.len(), 2);
        assert_eq!(terminating(&store), 1);
        let got: Deployment = store.get(Some("default"), "web").unwrap().unwrap();
        assert_eq!(got.status.replicas, 1);

        // A template change: the replacement is created at once, next to the old one.
        store
            .modify::<Deployment>(Some("default"), "web", |d| {
                d.spec.template.spec.containers[0].image = "busybox:2".into()
            })
            .unwrap();
        reconcile(&store, "default", "web").unwrap();
        assert_eq!(store.list::<Pod>(None).unwrap().0.len(), 3);
        assert_eq!(terminating(&store), 2);
        bind_all(&store);

        // Deleting the Deployment: every Pod terminates, and again is a no-op.
        store
            .delete::<Deployment>(Some("default"), "web", None)
            .unwrap();
        reconcile(&store, "default", "web").unwrap();
        assert_eq!(terminating(&store), 3);
        let rev = store.revision();
        reconcile(&store, "default", "web").unwrap();
        assert_eq!(store.revision(), rev, "terminating orphans are left alone");
    }
}
