//! Pods that Punnet versions before ReplicaSets created directly under a Deployment:
//! at upgrade each template hash among them gets a ReplicaSet of as many replicas,
//! which adopts them (see `replicaset`), so they are neither restarted nor run twice.

use std::collections::BTreeMap;

use punnet_api::{Deployment, Pod, PodTemplateSpec, ReplicaSet, LABEL_POD_TEMPLATE_HASH};
use tracing::info;

use super::{create_replica_set, hash_of, replica_set_for, revision_of, DeploymentError};
use crate::replicaset;
use crate::store::Store;

/// Pods a Punnet version before ReplicaSets made: each template hash among them gets a
/// ReplicaSet of as many replicas, which adopts them (see `replicaset`), so an upgrade
/// neither restarts them nor runs them twice. Pods without a hash cannot be placed and
/// are replaced.
pub(super) fn adopt(
    store: &Store,
    d: &Deployment,
    current_hash: &str,
    owned: &[ReplicaSet],
    legacy: &[&Pod],
) -> Result<(), DeploymentError> {
    let err = |source| DeploymentError::Store {
        key: d.metadata.key(),
        source,
    };
    let mut by_hash: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in legacy {
        match pod.metadata.labels.get(LABEL_POD_TEMPLATE_HASH) {
            Some(h) => by_hash.entry(h.as_str()).or_default().push(pod),
            None => {
                replicaset::delete_pod(store, pod, "made by its Deployment without a template hash")
                    .map_err(err)?
            }
        }
    }
    let mut revision = owned.iter().map(revision_of).max().unwrap_or(0);
    // The current template last, so it gets the newest revision.
    let mut hashes: Vec<&str> = by_hash.keys().copied().collect();
    hashes.sort_by_key(|h| *h == current_hash);
    for h in hashes {
        if owned.iter().any(|rs| hash_of(rs) == Some(h)) {
            continue;
        }
        let pods = &by_hash[h];
        let template = if h == current_hash {
            d.spec.template.clone()
        } else {
            template_of_pod(pods[0])
        };
        revision += 1;
        let rs = replica_set_for(d, &template, h, pods.len() as i32, revision);
        info!(
            "deployment {}: ReplicaSet {} adopts {} Pods made before ReplicaSets",
            d.metadata.key(),
            rs.metadata.name,
            pods.len()
        );
        create_replica_set(store, d, rs)?;
    }
    Ok(())
}

/// The template of a Pod a Deployment made directly, for the ReplicaSet that adopts it.
fn template_of_pod(pod: &Pod) -> PodTemplateSpec {
    let mut t = PodTemplateSpec::default();
    t.metadata.labels = pod.metadata.labels.clone();
    t.metadata.labels.remove(LABEL_POD_TEMPLATE_HASH);
    t.metadata.annotations = pod.metadata.annotations.clone();
    t.spec = pod.spec.clone();
    t.spec.node_name = None;
    t
}
