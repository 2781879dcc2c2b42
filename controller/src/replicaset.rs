//! The ReplicaSet controller (step 4 of the Pod flow): keeps `replicas` Pods of a
//! ReplicaSet's template, owned by it, deletes Pods whose ReplicaSet is gone, and writes
//! the ReplicaSet's status. Deployments drive rollouts by scaling their ReplicaSets.
//!
//! The decisions (which Pods count, which to delete first, when a Pod becomes
//! available) are pure functions; `reconcile` reads the store, applies them and writes.
//! The loop itself is `workqueue::run`.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use punnet_api::{
    phase, Deployment, Object, ObjectReference, OwnerReference, Pod, ReplicaSet, ReplicaSetStatus,
    Resource, Time, LABEL_POD_TEMPLATE_HASH,
};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::owned::{self, Snapshot};
use crate::podgc;
use crate::scheduler::is_terminal;
use crate::store::peek::PodView;
use crate::store::{Store, StoreError, WatchEvent};
use crate::workqueue::{self, Key, LoopConfig, Outcome, Reconciler};

/// Kubernetes' "safe" alphabet for generated names: no vowels (no words), no look-alikes.
pub(crate) const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

#[derive(Debug, Error)]
pub enum ReplicaSetError {
    #[error("ReplicaSet {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("ReplicaSet {key}: could not find a free Pod name after {attempts} attempts")]
    NoFreeName { key: String, attempts: u32 },
}

pub(crate) fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| SAFE_ALPHABET[rng.gen_range(0..SAFE_ALPHABET.len())] as char)
        .collect()
}

/// The owner reference a controller puts on what it creates.
pub(crate) fn controller_ref<T: Resource>(owner: &T) -> OwnerReference {
    OwnerReference {
        api_version: T::API_VERSION.into(),
        kind: T::KIND.into(),
        name: owner.meta().name.clone(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controlling owner of `meta`'s object, if it is of kind `T`.
pub(crate) fn controlled_by<T: Resource>(meta: &punnet_api::ObjectMeta) -> Option<&OwnerReference> {
    meta.controller().filter(|r| r.kind == T::KIND)
}

/// A Pod that still counts as a replica: not finished and not being deleted. Terminating
/// Pods are on their way out, so their replacements are created at once, as Kubernetes
/// does.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !podgc::is_terminating(pod)
}

/// When the Pod became (or becomes) available: Ready since `lastTransitionTime`, plus
/// `min_ready` seconds. `None` when it is not Ready, or when `min_ready` is set and the
/// time it became Ready is unknown (as Kubernetes' `IsPodAvailable`).
pub fn available_since(pod: &Pod, min_ready: i32) -> Option<Time> {
    let ready = pod
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    if min_ready <= 0 {
        // Available at once, whatever the agent's clock said.
        return Some(Time(chrono::DateTime::<chrono::Utc>::MIN_UTC));
    }
    let since = ready.last_transition_time?;
    Some(Time(
        since.0 + chrono::Duration::seconds(i64::from(min_ready)),
    ))
}

pub fn is_available(pod: &Pod, min_ready: i32, now: Time) -> bool {
    available_since(pod, min_ready).is_some_and(|t| t.0 <= now.0)
}

/// How long until the first of `pods` that is Ready but not yet available becomes
/// available: when to look again.
pub fn next_available(pods: &[&Pod], min_ready: i32, now: Time) -> Option<Duration> {
    pods.iter()
        .filter_map(|p| available_since(p, min_ready))
        .filter(|t| t.0 > now.0)
        .map(|t| (t.0 - now.0).to_std().unwrap_or_default())
        .min()
        // Whole seconds are stored: look a little after the boundary.
        .map(|d| d + Duration::from_millis(100))
}

/// The counts of a ReplicaSet's status over its active Pods.
pub fn compute_status(rs: &ReplicaSet, active: &[&Pod], now: Time) -> ReplicaSetStatus {
    let min_ready = rs.spec.min_ready_seconds();
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    let template = &rs.spec.template.metadata.labels;
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: count(&|p| {
            template
                .iter()
                .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        }),
        ready_replicas: count(&|p| p.is_ready()),
        available_replicas: count(&|p| is_available(p, min_ready, now)),
        observed_generation: rs.metadata.generation,
    }
}

/// The `n` Pods to delete first, in Kubernetes' order: unscheduled before scheduled,
/// Pending before Unknown before Running, not Ready before Ready, Ready for less time
/// before more, more restarts before fewer, newer before older.
pub fn pods_to_delete<'a>(active: &[&'a Pod], n: usize) -> Vec<&'a Pod> {
    let phase_rank = |p: &Pod| match p.phase() {
        phase::PENDING => 0,
        phase::UNKNOWN => 1,
        phase::RUNNING => 2,
        _ => 3,
    };
    let ready_since = |p: &Pod| {
        p.status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "True")
            .and_then(|c| c.last_transition_time)
    };
    let restarts = |p: &Pod| {
        p.status
            .container_statuses
            .iter()
            .map(|c| c.restart_count)
            .sum::<i32>()
    };
    let mut sorted: Vec<&Pod> = active.to_vec();
    sorted.sort_by_key(|p| {
        (
            p.spec.node_name.is_some(),
            phase_rank(p),
            p.is_ready(),
            Reverse(ready_since(p)),
            Reverse(restarts(p)),
            Reverse(p.metadata.creation_timestamp),
            Reverse(p.metadata.name.clone()),
        )
    });
    sorted.truncate(n);
    sorted
}

/// A new Pod from the ReplicaSet's template (its name is set when it is created).
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let t = &rs.spec.template;
    let mut pod = Pod::default();
    pod.set_type_meta();
    pod.metadata.generate_name = Some(format!("{}-", rs.metadata.name));
    pod.metadata.namespace = Some(rs.metadata.namespace_or_default().to_string());
    pod.metadata.labels = t.metadata.labels.clone();
    pod.metadata.annotations = t.metadata.annotations.clone();
    pod.metadata.owner_references = vec![controller_ref(rs)];
    pod.spec = t.spec.clone();
    pod
}

/// Whether a Pod that a Deployment created directly (before ReplicaSets existed)
/// belongs to `rs`: same Deployment incarnation, same template hash. Such Pods are
/// adopted instead of being replaced, so an upgrade restarts nothing.
fn is_legacy_pod_of(pod: &Pod, rs: &ReplicaSet) -> bool {
    let (Some(pod_owner), Some(rs_owner)) = (
        controlled_by::<Deployment>(&pod.metadata),
        controlled_by::<Deployment>(&rs.metadata),
    ) else {
        return false;
    };
    let hash = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get(LABEL_POD_TEMPLATE_HASH).cloned()
    };
    pod_owner.uid == rs_owner.uid
        && hash(&pod.metadata.labels).is_some()
        && hash(&pod.metadata.labels) == hash(&rs.spec.template.metadata.labels)
}

/// Reconciles the ReplicaSet `namespace/name`, or deletes the Pods of a gone one.
/// Returns when to look again (a Ready Pod that becomes available later).
pub fn reconcile(
    store: &Store,
    namespace: &str,
    name: &str,
) -> Result<Option<Duration>, ReplicaSetError> {
    let snap = Snapshot::read(store, namespace).map_err(|source| ReplicaSetError::Store {
        key: format!("{namespace}/{name}"),
        source,
    })?;
    reconcile_with(store, namespace, name, &snap)
}

/// `reconcile` over Pods read once for the pass.
pub fn reconcile_with(
    store: &Store,
    namespace: &str,
    name: &str,
    snap: &Snapshot,
) -> Result<Option<Duration>, ReplicaSetError> {
    let _timer = crate::prometheus::reconcile_timer("replicaset");
    let key = format!("{namespace}/{name}");
    let err = |source| ReplicaSetError::Store {
        key: key.clone(),
        source,
    };
    let rs: Option<ReplicaSet> = store.get(Some(namespace), name).map_err(err)?;
    let uid = rs.as_ref().and_then(|r| r.metadata.uid.clone());
    // Its own Pods, and those its Deployment made before ReplicaSets (to adopt).
    let legacy: &[Pod] = match rs
        .as_ref()
        .and_then(|r| controlled_by::<Deployment>(&r.metadata))
    {
        Some(owner) => snap.pods.of::<Deployment>(&owner.name),
        None => &[],
    };
    let pods = snap
        .pods
        .of::<ReplicaSet>(name)
        .iter()
        .chain(legacy)
        .cloned();
    let mut owned: Vec<Pod> = Vec::new();
    for pod in pods {
        if let Some(owner) = controlled_by::<ReplicaSet>(&pod.metadata) {
            if owner.name != name {
                continue;
            }
            if Some(&owner.uid) == uid.as_ref() {
                owned.push(pod);
            } else if !podgc::is_terminating(&pod) {
                // Already terminating: its agent is stopping it; deleting again would
                // only be a no-op (and a log line per event).
                delete_pod(store, &pod, "its ReplicaSet no longer exists").map_err(err)?;
            }
        } else if let Some(rs) = &rs {
            if is_active(&pod) && is_legacy_pod_of(&pod, rs) {
                owned.push(adopt(store, &pod, rs).map_err(err)?.unwrap_or(pod));
            }
        }
    }
    let Some(rs) = rs else { return Ok(None) };
    // Being deleted (foreground or orphan): the garbage collector owns its Pods now.
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }

    let want = rs.spec.replicas().max(0) as usize;
    let active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    if active.len() > want {
        for pod in pods_to_delete(&active, active.len() - want) {
            delete_pod(store, pod, "scaled down").map_err(err)?;
            store.recorder().normal(
                ObjectReference::to(&rs),
                "SuccessfulDelete",
                format!("Deleted pod: {}", pod.metadata.name),
            );
            deleted.insert(pod.metadata.name.clone());
        }
    }
    let mut created = Vec::new();
    for _ in active.len()..want {
        let pod = create_pod(store, &rs)?;
        store.recorder().normal(
            ObjectReference::to(&rs),
            "SuccessfulCreate",
            format!("Created pod: {}", pod.metadata.name),
        );
        created.push(pod);
    }

    let after: Vec<&Pod> = active
        .iter()
        .copied()
        .filter(|p| !deleted.contains(&p.metadata.name))
        .chain(created.iter())
        .collect();
    let now = Time::now();
    let status = compute_status(&rs, &after, now);
    if status != rs.status {
        store
            .modify::<ReplicaSet>(Some(namespace), name, |cur| {
                // Only the incarnation we looked at; a recreated one gets its own reconcile.
                if cur.metadata.uid == rs.metadata.uid {
                    cur.status = status;
                }
            })
            .map_err(err)?;
    }
    Ok(next_available(&after, rs.spec.min_ready_seconds(), now))
}

/// Makes `rs` the controlling owner of `pod` (only the incarnation looked at).
fn adopt(store: &Store, pod: &Pod, rs: &ReplicaSet) -> Result<Option<Pod>, StoreError> {
    let owner = controller_ref(rs);
    let adopted =
        store.modify::<Pod>(pod.metadata.namespace.as_deref(), &pod.metadata.name, |p| {
            if p.metadata.uid == pod.metadata.uid {
                p.metadata
                    .owner_references
                    .retain(|r| r.controller != Some(true));
                p.metadata.owner_references.push(owner);
            }
        })?;
    info!(
        "replicaset {}: adopted Pod {} from its Deployment",
        rs.metadata.key(),
        pod.metadata.name
    );
    Ok(adopted.filter(|p| p.metadata.uid == pod.metadata.uid))
}

fn create_pod(store: &Store, rs: &ReplicaSet) -> Result<Pod, ReplicaSetError> {
    const ATTEMPTS: u32 = 5;
    let template = pod_from_template(rs);
    for _ in 0..ATTEMPTS {
        let mut pod = template.clone();
        pod.metadata.name = format!("{}-{}", rs.metadata.name, random_suffix());
        match store.create(pod) {
            Ok(pod) => {
                info!(
                    "replicaset {}: created Pod {}",
                    rs.metadata.key(),
                    pod.metadata.name
                );
                return Ok(pod);
            }
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(source) => {
                return Err(ReplicaSetError::Store {
                    key: rs.metadata.key(),
                    source,
                })
            }
        }
    }
    Err(ReplicaSetError::NoFreeName {
        key: rs.metadata.key(),
        attempts: ATTEMPTS,
    })
}

/// Deletes a Pod the way the API does (gracefully when it runs on a Ready node).
pub(crate) fn delete_pod(store: &Store, pod: &Pod, why: &str) -> Result<(), StoreError> {
    let outcome = podgc::delete_pod(
        store,
        pod.metadata.namespace.as_deref(),
        &pod.metadata.name,
        pod.metadata.uid.as_deref(),
        None,
    )?;
    if outcome != podgc::Deleted::NotFound {
        info!("deleting Pod {} ({why})", pod.metadata.key());
    }
    Ok(())
}

struct Controller;

impl Reconciler for Controller {
    const NAME: &'static str = "replicaset";
    type Error = ReplicaSetError;

    fn keys_of(&self, _store: &Store, ev: &WatchEvent) -> Vec<Key> {
        match &*ev.object {
            Object::ReplicaSet(rs) => vec![(
                rs.metadata.namespace_or_default().to_string(),
                rs.metadata.name.clone(),
            )],
            // Status changes matter too: they move readyReplicas.
            Object::Pod(p) => controlled_by::<ReplicaSet>(&p.metadata)
                .map(|o| {
                    (
                        p.metadata.namespace_or_default().to_string(),
                        o.name.clone(),
                    )
                })
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every ReplicaSet, plus every ReplicaSet name some Pod still points at (so the
    /// Pods of one deleted while the controller was down are cleaned up).
    fn all_keys(&self, store: &Store) -> Result<BTreeSet<Key>, StoreError> {
        let (sets, _) = store.list::<ReplicaSet>(None)?;
        let mut keys: BTreeSet<Key> = sets
            .iter()
            .map(|r| {
                (
                    r.metadata.namespace_or_default().to_string(),
                    r.metadata.name.clone(),
                )
            })
            .collect();
        store.peek::<Pod, PodView>(None, |p| {
            if let Some(owner) = p.controller().filter(|c| c.kind == ReplicaSet::KIND) {
                keys.insert((p.namespace_or_default().to_string(), owner.name.to_string()));
            }
        })?;
        Ok(keys)
    }

    fn reconcile(
        &self,
        store: &Store,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Duration>, ReplicaSetError> {
        reconcile(store, namespace, name)
    }

    fn reconcile_pass(&self, store: &Store, keys: BTreeSet<Key>) -> Vec<(Key, Outcome<Self>)> {
        owned::by_namespace(
            store,
            ReplicaSet::KIND,
            keys,
            |ns, name, snap| reconcile_with(store, ns, name, snap),
            |ns, name| reconcile(store, ns, name),
        )
    }
}

/// Runs the ReplicaSet controller until `cancel` fires.
pub async fn run(store: Arc<Store>, cancel: CancellationToken) {
    run_with(store, LoopConfig::default(), cancel).await
}

pub async fn run_with(store: Arc<Store>, config: LoopConfig, cancel: CancellationToken) {
    workqueue::run(store, Controller, config, cancel).await
}

#[cfg(test)]
#[path = "replicaset_tests.rs"]
mod tests;
