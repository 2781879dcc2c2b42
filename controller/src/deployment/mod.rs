//! The Deployment controller (step 4 of the Pod flow): Deployment → ReplicaSet → Pods.
//! One ReplicaSet per Pod template (named `<deployment>-<pod-template-hash>`, numbered
//! by the `deployment.kubernetes.io/revision` annotation); a rollout scales the new one
//! up and the old ones down, RollingUpdate within `maxSurge`/`maxUnavailable` and
//! waiting for availability, or Recreate (old Pods gone before new ones are made). It
//! prunes old ReplicaSets beyond `revisionHistoryLimit`, writes the Deployment's status
//! and conditions, deletes the ReplicaSets and Pods of a gone Deployment, and adopts the
//! Pods that Punnet versions before ReplicaSets created directly.
//!
//! The decisions are pure (`rollout`, `status`); `reconcile` reads the store, applies
//! them and writes. Level-triggered and idempotent; the loop is `workqueue::run`.

mod legacy;
mod rollout;
mod status;

pub use rollout::{fenceposts, next_revision, rolling_step, RsView};
pub use status::Counts;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use punnet_api::{
    Deployment, Object, ObjectReference, Pod, PodTemplateSpec, ReplicaSet, Resource, Time,
    ANNOTATION_REVISION, LABEL_POD_TEMPLATE_HASH,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::owned::{self, Snapshot};
use crate::podgc;
use crate::replicaset::{self, controlled_by, controller_ref, is_active, SAFE_ALPHABET};
use crate::scheduler::is_terminal;
use crate::store::peek::PodView;
use crate::store::{Store, StoreError, WatchEvent};
use crate::workqueue::{self, Key, LoopConfig, Outcome, Reconciler};
use status::NewRs;

/// Why a revision was made; copied from the Deployment to its new ReplicaSet.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// The loop's timing (kept under this name for the tests and the server).
pub type DeploymentConfig = LoopConfig;

#[derive(Debug, Error)]
pub enum DeploymentError {
    #[error("Deployment {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("Deployment {key}: ReplicaSet {name} exists and is not controlled by this Deployment; delete it (punnet delete rs {name}) so the rollout can go on")]
    NameTaken { key: String, name: String },
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

/// A ReplicaSet's revision (0 when it has none).
pub fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .get(ANNOTATION_REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template hash a ReplicaSet's Pods carry.
pub fn hash_of(rs: &ReplicaSet) -> Option<&str> {
    rs.spec
        .template
        .metadata
        .labels
        .get(LABEL_POD_TEMPLATE_HASH)
        .map(String::as_str)
}

/// The ReplicaSet of `d` for `template` (its hash is `hash`) at `revision`.
pub fn replica_set_for(
    d: &Deployment,
    template: &PodTemplateSpec,
    hash: &str,
    replicas: i32,
    revision: i64,
) -> ReplicaSet {
    let mut rs = ReplicaSet::default();
    rs.set_type_meta();
    rs.metadata.name = format!("{}-{hash}", d.metadata.name);
    rs.metadata.namespace = Some(d.metadata.namespace_or_default().to_string());
    rs.metadata.labels = template.metadata.labels.clone();
    rs.metadata
        .labels
        .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.into());
    rs.metadata
        .annotations
        .insert(ANNOTATION_REVISION.into(), revision.to_string());
    // What `rollout history` shows as CHANGE-CAUSE, as Kubernetes copies it.
    if let Some(cause) = d.metadata.annotations.get(CHANGE_CAUSE) {
        rs.metadata
            .annotations
            .insert(CHANGE_CAUSE.into(), cause.clone());
    }
    rs.metadata.owner_references = vec![controller_ref(d)];
    rs.spec.replicas = Some(replicas);
    rs.spec.min_ready_seconds = d.spec.min_ready_seconds;
    rs.spec.selector = d.spec.selector.clone();
    rs.spec
        .selector
        .match_labels
        .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.into());
    rs.spec.template = template.clone();
    rs.spec
        .template
        .metadata
        .labels
        .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.into());
    rs
}

/// One owned ReplicaSet and what its Pods look like now.
struct Observed {
    rs: ReplicaSet,
    view: RsView,
    active: i32,
    ready: i32,
}

fn observe(rs: ReplicaSet, snap: &Snapshot, min_ready: i32, now: Time) -> Observed {
    let mine: Vec<&Pod> = snap
        .pods
        .of::<ReplicaSet>(&rs.metadata.name)
        .iter()
        .filter(|p| {
            controlled_by::<ReplicaSet>(&p.metadata).map(|o| Some(&o.uid))
                == Some(rs.metadata.uid.as_ref())
        })
        .collect();
    let active: Vec<&Pod> = mine.iter().copied().filter(|p| is_active(p)).collect();
    let view = RsView {
        name: rs.metadata.name.clone(),
        replicas: rs.spec.replicas().max(0),
        available: active
            .iter()
            .filter(|p| replicaset::is_available(p, min_ready, now))
            .count() as i32,
        existing: mine.iter().filter(|p| !is_terminal(p)).count() as i32,
        revision: revision_of(&rs),
    };
    Observed {
        view,
        active: active.len() as i32,
        ready: active.iter().filter(|p| p.is_ready()).count() as i32,
        rs,
    }
}

/// Reconciles the Deployment `namespace/name`, or cleans up after it if it is gone:
/// ReplicaSets and Pods whose controlling owner is a Deployment of that name but not of
/// its current uid are deleted. Returns when to look again, if time alone can change
/// something (a Pod becoming available, the progress deadline).
pub fn reconcile(
    store: &Store,
    namespace: &str,
    name: &str,
) -> Result<Option<Duration>, DeploymentError> {
    let snap = Snapshot::read(store, namespace).map_err(|source| DeploymentError::Store {
        key: format!("{namespace}/{name}"),
        source,
    })?;
    reconcile_with(store, namespace, name, &snap)
}

/// `reconcile` over ReplicaSets and Pods read once for the pass.
pub fn reconcile_with(
    store: &Store,
    namespace: &str,
    name: &str,
    snap: &Snapshot,
) -> Result<Option<Duration>, DeploymentError> {
    let _timer = crate::prometheus::reconcile_timer("deployment");
    let key = format!("{namespace}/{name}");
    let err = |source| DeploymentError::Store {
        key: key.clone(),
        source,
    };
    let deployment: Option<Deployment> = store.get(Some(namespace), name).map_err(err)?;
    let sets = snap.sets.of::<Deployment>(name).to_vec();
    let uid = deployment.as_ref().and_then(|d| d.metadata.uid.clone());
    let mine = |meta: &punnet_api::ObjectMeta| {
        controlled_by::<Deployment>(meta)
            .filter(|o| o.name == name)
            .map(|o| Some(&o.uid) == uid.as_ref())
    };
    let mut owned = Vec::new();
    for rs in sets {
        match mine(&rs.metadata) {
            Some(true) => owned.push(rs),
            Some(false) => delete_replica_set(store, &rs, snap).map_err(err)?,
            None => {}
        }
    }
    let mut legacy: Vec<&Pod> = Vec::new();
    for pod in snap.pods.of::<Deployment>(name) {
        match mine(&pod.metadata) {
            Some(true) if is_active(pod) => legacy.push(pod),
            Some(false) if !podgc::is_terminating(pod) => {
                replicaset::delete_pod(store, pod, "its Deployment no longer exists")
                    .map_err(err)?
            }
            _ => {}
        }
    }
    let Some(d) = deployment else { return Ok(None) };
    // Being deleted (foreground or orphan): the garbage collector owns its Pods now.
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let hash = pod_template_hash(&d.spec.template);

    if !legacy.is_empty() {
        legacy::adopt(store, &d, &hash, &owned, &legacy)?;
        // The ReplicaSets adopt the Pods; their events bring us back.
        return Ok(Some(Duration::from_secs(1)));
    }

    let now = Time::now();
    let min_ready = d.spec.min_ready_seconds();
    let mut observed: Vec<Observed> = owned
        .into_iter()
        .map(|rs| observe(rs, snap, min_ready, now))
        .collect();
    let new_idx = observed
        .iter()
        .position(|o| hash_of(&o.rs) == Some(hash.as_str()));
    let new_view = new_idx.map(|i| observed[i].view.clone());
    let mut old: Vec<RsView> = observed
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, o)| o.view.clone())
        .collect();
    old.sort_by_key(|r| r.revision);

    let want = d.spec.replicas().max(0);
    let mut scaling = Vec::new();
    let mut create: Option<i32> = None;
    if d.spec.paused {
        scaling = rollout::scale_only(&d.spec, new_view.as_ref(), &old);
    } else if d.spec.is_recreate() {
        let step = rollout::recreate_step(&d.spec, new_view.as_ref(), &old);
        scaling = step.scaling;
        create = step.create_new.then_some(want);
    } else {
        match &new_view {
            Some(new) => scaling = rolling_step(&d.spec, new, &old),
            None => {
                let (surge, _) = fenceposts(&d.spec, want);
                let empty = RsView {
                    name: String::new(),
                    replicas: 0,
                    available: 0,
                    existing: 0,
                    revision: 0,
                };
                create = Some(rollout::new_rs_replicas(want, surge, &empty, &old));
            }
        }
    }

    for (rs_name, replicas) in &scaling {
        if let Some(o) = observed.iter_mut().find(|o| &o.view.name == rs_name) {
            scale(store, &d, &mut o.rs, *replicas).map_err(err)?;
            o.view.replicas = *replicas;
        }
    }
    let revision = next_revision(&old);
    let mut new_rs = NewRs::None;
    let mut new_name = String::new();
    if let Some(replicas) = create {
        let rs = replica_set_for(&d, &d.spec.template, &hash, replicas, revision);
        new_name = rs.metadata.name.clone();
        let created = create_replica_set(store, &d, rs)?;
        new_rs = NewRs::Created(&new_name);
        observed.push(observe(created, snap, min_ready, now));
    } else if let Some(i) = new_idx {
        new_name = observed[i].rs.metadata.name.clone();
        new_rs = NewRs::Found(&new_name);
        // A template that is current again (an undo) gets the newest revision; the
        // new ReplicaSet follows the Deployment's minReadySeconds.
        let rs = &observed[i].rs;
        if revision_of(rs) < revision || rs.spec.min_ready_seconds != d.spec.min_ready_seconds {
            let uid = rs.metadata.uid.clone();
            let updated = store
                .modify::<ReplicaSet>(Some(namespace), &new_name, |r| {
                    if r.metadata.uid == uid {
                        if revision_of(r) < revision {
                            r.metadata
                                .annotations
                                .insert(ANNOTATION_REVISION.into(), revision.to_string());
                        }
                        r.spec.min_ready_seconds = d.spec.min_ready_seconds;
                    }
                })
                .map_err(err)?;
            if let Some(updated) = updated {
                observed[i].rs = updated;
            }
        }
    }

    // History: once nothing old runs, old ReplicaSets beyond the limit go.
    let current_revision = observed
        .iter()
        .find(|o| o.rs.metadata.name == new_name)
        .map(|o| revision_of(&o.rs));
    if !d.spec.paused && !new_name.is_empty() && old.iter().all(|r| r.replicas == 0) {
        let old_now: Vec<RsView> = observed
            .iter()
            .filter(|o| o.rs.metadata.name != new_name)
            .map(|o| o.view.clone())
            .collect();
        for victim in rollout::history_to_prune(d.spec.revision_history_limit(), &old_now) {
            if let Some(o) = observed.iter().find(|o| o.rs.metadata.name == victim) {
                delete_replica_set(store, &o.rs, snap).map_err(err)?;
                info!(
                    "deployment {key}: removed ReplicaSet {victim} (beyond revisionHistoryLimit)"
                );
            }
        }
    }

    let counts = Counts {
        replicas: observed.iter().map(|o| o.active).sum(),
        updated: observed
            .iter()
            .filter(|o| o.rs.metadata.name == new_name)
            .map(|o| o.active)
            .sum(),
        ready: observed.iter().map(|o| o.ready).sum(),
        available: observed.iter().map(|o| o.view.available).sum(),
        desired_total: observed.iter().map(|o| o.view.replicas).sum(),
    };
    let status = status::compute(&d, counts, new_rs, now);
    let revision_note = current_revision.map(|r| r.to_string());
    let annotation_stale = revision_note.is_some()
        && d.metadata.annotations.get(ANNOTATION_REVISION) != revision_note.as_ref();
    if status != d.status || annotation_stale {
        let status = status.clone();
        store
            .modify::<Deployment>(Some(namespace), name, |cur| {
                // Only the incarnation we looked at; a recreated one gets its own reconcile.
                if cur.metadata.uid == d.metadata.uid {
                    cur.status = status;
                    if let Some(r) = &revision_note {
                        cur.metadata
                            .annotations
                            .insert(ANNOTATION_REVISION.into(), r.clone());
                    }
                }
            })
            .map_err(err)?;
    }
    let active: Vec<&Pod> = observed
        .iter()
        .flat_map(|o| {
            snap.pods
                .of::<ReplicaSet>(&o.rs.metadata.name)
                .iter()
                .filter(|p| {
                    controlled_by::<ReplicaSet>(&p.metadata).map(|r| &r.uid)
                        == o.rs.metadata.uid.as_ref()
                })
        })
        .filter(|p| is_active(p))
        .collect();
    let requeue = [
        replicaset::next_available(&active, min_ready, now),
        status::until_deadline(&d, &status, now),
    ]
    .into_iter()
    .flatten()
    .min();
    Ok(requeue)
}

pub(crate) fn create_replica_set(
    store: &Store,
    d: &Deployment,
    rs: ReplicaSet,
) -> Result<ReplicaSet, DeploymentError> {
    let name = rs.metadata.name.clone();
    let replicas = rs.spec.replicas();
    match store.create(rs) {
        Ok(created) => {
            info!("deployment {}: created ReplicaSet {name}", d.metadata.key());
            store.recorder().normal(
                ObjectReference::to(d),
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} to {replicas}"),
            );
            Ok(created)
        }
        Err(StoreError::AlreadyExists { .. }) => Err(DeploymentError::NameTaken {
            key: d.metadata.key(),
            name,
        }),
        Err(source) => Err(DeploymentError::Store {
            key: d.metadata.key(),
            source,
        }),
    }
}

/// Sets a ReplicaSet's `spec.replicas` (only the incarnation looked at) and records
/// Kubernetes' `ScalingReplicaSet` event on the Deployment.
fn scale(
    store: &Store,
    d: &Deployment,
    rs: &mut ReplicaSet,
    replicas: i32,
) -> Result<(), StoreError> {
    let from = rs.spec.replicas();
    if from == replicas {
        return Ok(());
    }
    let uid = rs.metadata.uid.clone();
    let updated =
        store.modify::<ReplicaSet>(rs.metadata.namespace.as_deref(), &rs.metadata.name, |r| {
            if r.metadata.uid == uid {
                r.spec.replicas = Some(replicas);
            }
        })?;
    if let Some(updated) = updated {
        *rs = updated;
    }
    let direction = if replicas > from { "up" } else { "down" };
    store.recorder().normal(
        ObjectReference::to(d),
        "ScalingReplicaSet",
        format!(
            "Scaled {direction} replica set {} to {replicas}",
            rs.metadata.name
        ),
    );
    Ok(())
}

/// Deletes a ReplicaSet and its Pods (until a garbage collector does it by owner).
fn delete_replica_set(store: &Store, rs: &ReplicaSet, snap: &Snapshot) -> Result<(), StoreError> {
    let uid = rs.metadata.uid.as_deref();
    if store
        .delete::<ReplicaSet>(rs.metadata.namespace.as_deref(), &rs.metadata.name, uid)?
        .is_some()
    {
        info!("deleted ReplicaSet {}", rs.metadata.key());
    }
    for pod in snap.pods.of::<ReplicaSet>(&rs.metadata.name) {
        let owner = controlled_by::<ReplicaSet>(&pod.metadata).map(|o| o.uid.as_str());
        if owner.is_some() && owner == uid && !podgc::is_terminating(pod) {
            replicaset::delete_pod(store, pod, "its ReplicaSet was deleted")?;
        }
    }
    Ok(())
}

struct Controller;

impl Reconciler for Controller {
    const NAME: &'static str = "deployment";
    type Error = DeploymentError;

    fn keys_of(&self, store: &Store, ev: &WatchEvent) -> Vec<Key> {
        let of = |meta: &punnet_api::ObjectMeta| {
            controlled_by::<Deployment>(meta)
                .map(|o| (meta.namespace_or_default().to_string(), o.name.clone()))
        };
        match &*ev.object {
            Object::Deployment(d) => vec![(
                d.metadata.namespace_or_default().to_string(),
                d.metadata.name.clone(),
            )],
            Object::ReplicaSet(rs) => of(&rs.metadata).into_iter().collect(),
            // Pod changes move availability; a Pod's Deployment is its ReplicaSet's owner.
            Object::Pod(p) => match controlled_by::<ReplicaSet>(&p.metadata) {
                Some(owner) => store
                    .get::<ReplicaSet>(p.metadata.namespace.as_deref(), &owner.name)
                    .ok()
                    .flatten()
                    .and_then(|rs| of(&rs.metadata))
                    .into_iter()
                    .collect(),
                None => of(&p.metadata).into_iter().collect(),
            },
            _ => Vec::new(),
        }
    }

    /// Every Deployment, plus every Deployment name a ReplicaSet or Pod still points
    /// at (so what a Deployment deleted while the controller was down left is removed).
    fn all_keys(&self, store: &Store) -> Result<BTreeSet<Key>, StoreError> {
        let (deployments, _) = store.list::<Deployment>(None)?;
        let (sets, _) = store.list::<ReplicaSet>(None)?;
        let mut keys: BTreeSet<Key> = deployments
            .iter()
            .map(|d| {
                (
                    d.metadata.namespace_or_default().to_string(),
                    d.metadata.name.clone(),
                )
            })
            .collect();
        for meta in sets.iter().map(|r| &r.metadata) {
            if let Some(owner) = controlled_by::<Deployment>(meta) {
                keys.insert((meta.namespace_or_default().to_string(), owner.name.clone()));
            }
        }
        store.peek::<Pod, PodView>(None, |p| {
            if let Some(owner) = p.controller().filter(|c| c.kind == Deployment::KIND) {
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
    ) -> Result<Option<Duration>, DeploymentError> {
        reconcile(store, namespace, name)
    }

    fn reconcile_pass(&self, store: &Store, keys: BTreeSet<Key>) -> Vec<(Key, Outcome<Self>)> {
        owned::by_namespace(
            store,
            Deployment::KIND,
            keys,
            |ns, name, snap| reconcile_with(store, ns, name, snap),
            |ns, name| reconcile(store, ns, name),
        )
    }
}

/// Runs the Deployment controller until `cancel` fires. The ReplicaSet controller
/// (`replicaset::run`) must run too: it makes the Pods.
pub async fn run(store: Arc<Store>, cancel: CancellationToken) {
    run_with(store, DeploymentConfig::default(), cancel).await
}

pub async fn run_with(store: Arc<Store>, config: DeploymentConfig, cancel: CancellationToken) {
    workqueue::run(store, Controller, config, cancel).await
}

#[cfg(test)]
mod tests;
