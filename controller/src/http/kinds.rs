//! What a write through the API may do to each kind: how it is validated, which fields
//! the system owns (status belongs to the agent and the controllers; a Pod's node to
//! the scheduler) and which changes Kubernetes forbids on update (most of a Pod's spec,
//! a Deployment's selector).

use punnet_api::object::to_json;
use punnet_api::validate::{
    validate_config_map, validate_deployment, validate_node, validate_pod, validate_secret,
    FieldError, ValidationError,
};
use punnet_api::{
    ConfigMap, Deployment, Node, ObjectMeta, Pod, PodSpec, ReplicaSet, Resource, Secret,
};
use serde_json::Value;

use crate::podgc;
use crate::store::{Store, StoreError};

/// A kind served by the generic handlers in `objects` and `apply`.
pub trait ApiResource: Resource {
    fn validate(&self) -> Result<(), ValidationError>;

    /// Brings a written object into its stored form before it is checked (a Secret's
    /// `stringData` becomes `data`, as the API server does on every write).
    fn normalize(&mut self) {}

    /// Resets what users may not set when they create an object.
    fn clear_status(&mut self);

    /// Copies from the stored object what a user write never changes: the status, and
    /// system-owned spec fields the body leaves unset.
    fn keep_system_fields(&mut self, current: &Self);

    /// Rejects changes the kind forbids on update.
    fn check_update(&self, _current: &Self) -> Result<(), ValidationError> {
        Ok(())
    }

    /// What `DELETE` does: removes the object and returns it (`None`: not found).
    /// `grace` is the request's `gracePeriodSeconds`; only Pods use it.
    fn delete_from(
        store: &Store,
        namespace: Option<&str>,
        name: &str,
        _grace: Option<i64>,
    ) -> Result<Option<Self>, StoreError> {
        store.delete::<Self>(namespace, name, None)
    }
}

impl ApiResource for Pod {
    fn validate(&self) -> Result<(), ValidationError> {
        validate_pod(self)
    }

    fn clear_status(&mut self) {
        self.status = Default::default();
    }

    fn keep_system_fields(&mut self, current: &Self) {
        self.status = current.status.clone();
        // Only DELETE starts a graceful deletion (and a write cannot undo one).
        self.metadata.deletion_timestamp = current.metadata.deletion_timestamp;
        self.metadata.deletion_grace_period_seconds =
            current.metadata.deletion_grace_period_seconds;
        // The scheduler sets nodeName; a manifest that does not mention it must not
        // unbind the Pod (and could not: the spec is immutable).
        if self.spec.node_name.is_none() {
            self.spec.node_name = current.spec.node_name.clone();
        }
    }

    /// Pods are deleted gracefully when they run somewhere (see `podgc`).
    fn delete_from(
        store: &Store,
        namespace: Option<&str>,
        name: &str,
        grace: Option<i64>,
    ) -> Result<Option<Self>, StoreError> {
        Ok(
            match podgc::delete_pod(store, namespace, name, None, grace)? {
                podgc::Deleted::Removed(p) | podgc::Deleted::Terminating(p) => Some(p),
                podgc::Deleted::NotFound => None,
            },
        )
    }

    fn check_update(&self, current: &Self) -> Result<(), ValidationError> {
        let changed = pod_spec_changes(&current.spec, &self.spec);
        if changed.is_empty() {
            return Ok(());
        }
        Err(ValidationError {
            object: self.describe(),
            errors: vec![FieldError {
                field: "spec".into(),
                message: format!(
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image` (changed: {}); delete and re-create the Pod, or let a Deployment do it",
                    changed.join(", ")
                ),
            }],
        })
    }
}

impl ApiResource for Deployment {
    fn validate(&self) -> Result<(), ValidationError> {
        validate_deployment(self)
    }

    fn clear_status(&mut self) {
        self.status = Default::default();
    }

    fn keep_system_fields(&mut self, current: &Self) {
        self.status = current.status.clone();
        // The controller numbers revisions; a manifest does not know the number.
        let rev = punnet_api::ANNOTATION_REVISION;
        if let Some(r) = current.metadata.annotations.get(rev) {
            self.metadata
                .annotations
                .entry(rev.to_string())
                .or_insert_with(|| r.clone());
        }
    }

    fn check_update(&self, current: &Self) -> Result<(), ValidationError> {
        // As in apps/v1: a new selector would orphan the Pods the old one selected.
        if self.spec.selector == current.spec.selector {
            return Ok(());
        }
        Err(ValidationError {
            object: self.describe(),
            errors: vec![FieldError {
                field: "spec.selector".into(),
                message: "field is immutable; delete and re-create the Deployment to change it"
                    .into(),
            }],
        })
    }
}

impl ApiResource for ReplicaSet {
    fn validate(&self) -> Result<(), ValidationError> {
        punnet_api::replicaset::validate_replica_set(self)
    }

    fn clear_status(&mut self) {
        self.status = Default::default();
    }

    fn keep_system_fields(&mut self, current: &Self) {
        self.status = current.status.clone();
    }

    fn check_update(&self, current: &Self) -> Result<(), ValidationError> {
        // As in apps/v1: a new selector would orphan the Pods the old one selected.
        if self.spec.selector == current.spec.selector {
            return Ok(());
        }
        Err(ValidationError {
            object: self.describe(),
            errors: vec![FieldError {
                field: "spec.selector".into(),
                message: "field is immutable; delete and re-create the ReplicaSet to change it"
                    .into(),
            }],
        })
    }
}

impl ApiResource for Node {
    fn validate(&self) -> Result<(), ValidationError> {
        validate_node(self)
    }

    fn clear_status(&mut self) {
        self.status = Default::default();
    }

    fn keep_system_fields(&mut self, current: &Self) {
        self.status = current.status.clone();
        if self.spec.pod_cidr.is_none() {
            self.spec.pod_cidr = current.spec.pod_cidr.clone();
        }
    }

    /// As in core/v1: the node's running Pods have addresses from its range.
    fn check_update(&self, current: &Self) -> Result<(), ValidationError> {
        match &current.spec.pod_cidr {
            Some(cidr) if self.spec.pod_cidr.as_ref() != Some(cidr) => Err(ValidationError {
                object: self.describe(),
                errors: vec![FieldError {
                    field: "spec.podCIDR".into(),
                    message: format!(
                        "Forbidden: field is immutable once set (it is {cidr}); delete the Node to release its range"
                    ),
                }],
            }),
            _ => Ok(()),
        }
    }
}

impl ApiResource for ConfigMap {
    fn validate(&self) -> Result<(), ValidationError> {
        validate_config_map(self)
    }

    fn clear_status(&mut self) {}

    fn keep_system_fields(&mut self, _current: &Self) {}

    fn check_update(&self, current: &Self) -> Result<(), ValidationError> {
        let mut changed = Vec::new();
        if self.data != current.data {
            changed.push("data");
        }
        if self.binary_data != current.binary_data {
            changed.push("binaryData");
        }
        if self.immutable != current.immutable {
            changed.push("immutable");
        }
        immutable_data(self.describe(), current.immutable, &changed)
    }
}

impl ApiResource for Secret {
    fn validate(&self) -> Result<(), ValidationError> {
        validate_secret(self)
    }

    fn normalize(&mut self) {
        self.fold_string_data();
    }

    fn clear_status(&mut self) {}

    fn keep_system_fields(&mut self, _current: &Self) {}

    fn check_update(&self, current: &Self) -> Result<(), ValidationError> {
        // As in core/v1, the type never changes: the agent reads the data by it.
        if secret_type(self) != secret_type(current) {
            return Err(ValidationError {
                object: self.describe(),
                errors: vec![FieldError {
                    field: "type".into(),
                    message: format!(
                        "Invalid value: {:?}: field is immutable (it is {:?}); delete and re-create the Secret to change its type",
                        secret_type(self),
                        secret_type(current)
                    ),
                }],
            });
        }
        let mut changed = Vec::new();
        if self.data != current.data {
            changed.push("data");
        }
        if self.immutable != current.immutable {
            changed.push("immutable");
        }
        immutable_data(self.describe(), current.immutable, &changed)
    }
}

/// `Opaque` when unset, as Kubernetes defaults it.
fn secret_type(s: &Secret) -> &str {
    s.type_.as_deref().unwrap_or("Opaque")
}

/// An object stored with `immutable: true` keeps its data (and stays immutable).
fn immutable_data(
    object: String,
    immutable: Option<bool>,
    changed: &[&str],
) -> Result<(), ValidationError> {
    if immutable != Some(true) || changed.is_empty() {
        return Ok(());
    }
    let kind = object.split(' ').next().unwrap_or_default().to_string();
    Err(ValidationError {
        object,
        errors: changed
            .iter()
            .map(|field| FieldError {
                field: (*field).to_string(),
                message: format!(
                    "Forbidden: field is immutable when `immutable` is set; delete and re-create the {kind} to change it"
                ),
            })
            .collect(),
    })
}

/// The top-level Pod spec fields that differ, ignoring container images (the one
/// thing Kubernetes lets an update change), as `spec.<field>`.
pub fn pod_spec_changes(current: &PodSpec, next: &PodSpec) -> Vec<String> {
    let mut next = next.clone();
    for (c, cur) in next.containers.iter_mut().zip(&current.containers) {
        c.image = cur.image.clone();
    }
    let (a, b) = (to_json(current), to_json(&next));
    let empty = serde_json::Map::new();
    let a = a.as_object().unwrap_or(&empty);
    let b = b.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("spec.{k}"))
        .collect()
}

/// Whether a label is maintained by Punnet itself (node facts, the Deployment's
/// template hash) rather than by the user.
pub fn is_system_label(key: &str) -> bool {
    key == punnet_api::LABEL_POD_TEMPLATE_HASH
        || key.split_once('/').is_some_and(|(prefix, _)| {
            prefix == "kubernetes.io" || prefix.ends_with(".kubernetes.io") || prefix == "punnet.io"
        })
}

/// Copies the metadata an apply leaves alone when the body does not mention it.
pub fn keep_unmentioned_meta(meta: &mut ObjectMeta, current: &ObjectMeta) {
    for (k, v) in &current.labels {
        if is_system_label(k) && !meta.labels.contains_key(k) {
            meta.labels.insert(k.clone(), v.clone());
        }
    }
    if meta.owner_references.is_empty() {
        meta.owner_references = current.owner_references.clone();
    }
    if meta.generate_name.is_none() {
        meta.generate_name = current.generate_name.clone();
    }
}

/// The `metadata.resourceVersion` a request body carries, if any: a precondition.
pub fn requested_version(value: &Value) -> Option<&str> {
    value
        .get("metadata")?
        .get("resourceVersion")?
        .as_str()
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::Container;

    fn spec(image: &str) -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: image.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn only_images_may_change_in_a_pod_spec() {
        assert!(pod_spec_changes(&spec("a"), &spec("b")).is_empty());
        let mut moved = spec("a");
        moved.node_name = Some("pi-2".into());
        moved.restart_policy = Some("Never".into());
        assert_eq!(
            pod_spec_changes(&spec("a"), &moved),
            vec!["spec.nodeName", "spec.restartPolicy"]
        );
        let mut more = spec("a");
        more.containers.push(Container {
            name: "d".into(),
            image: "x".into(),
            ..Default::default()
        });
        assert_eq!(pod_spec_changes(&spec("a"), &more), vec!["spec.containers"]);
    }

    #[test]
    fn a_scheduled_pod_keeps_its_node_and_status() {
        let current = Pod {
            spec: PodSpec {
                node_name: Some("pi-1".into()),
                ..spec("a")
            },
            status: punnet_api::PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut next = Pod {
            spec: spec("b"),
            status: punnet_api::PodStatus {
                phase: Some("Failed".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        next.keep_system_fields(&current);
        assert_eq!(next.spec.node_name.as_deref(), Some("pi-1"));
        assert_eq!(next.status.phase.as_deref(), Some("Running"));
        assert!(next.check_update(&current).is_ok());
    }

    #[test]
    fn immutable_config_data_stays() {
        let mut current = ConfigMap::default();
        current.metadata.name = "cfg".into();
        current.metadata.namespace = Some("default".into());
        current.data.insert("a".into(), "1".into());
        let mut next = current.clone();
        next.data.insert("a".into(), "2".into());
        assert!(next.check_update(&current).is_ok(), "mutable: may change");
        current.immutable = Some(true);
        next.immutable = Some(true);
        let err = next.check_update(&current).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ConfigMap default/cfg: data: Forbidden: field is immutable when `immutable` is set; delete and re-create the ConfigMap to change it"
        );
        let mut relaxed = current.clone();
        relaxed.immutable = Some(false);
        assert!(relaxed.check_update(&current).is_err());
        // Labels may still change.
        let mut labelled = current.clone();
        labelled.metadata.labels.insert("x".into(), "y".into());
        assert!(labelled.check_update(&current).is_ok());
    }

    #[test]
    fn secret_type_is_immutable_and_string_data_folds() {
        let mut current = Secret::default();
        current.metadata.name = "s".into();
        current.metadata.namespace = Some("default".into());
        let mut next = current.clone();
        next.type_ = Some("Opaque".into());
        assert!(next.check_update(&current).is_ok(), "unset means Opaque");
        next.type_ = Some("kubernetes.io/dockerconfigjson".into());
        assert!(next.check_update(&current).is_err());
        let mut s = current.clone();
        s.string_data.insert("pw".into(), "secret".into());
        s.normalize();
        assert!(s.string_data.is_empty());
        assert_eq!(s.data["pw"], "c2VjcmV0");
    }

    #[test]
    fn a_node_keeps_its_pod_cidr() {
        let mut current = Node::default();
        current.metadata.name = "pi-1".into();
        current.spec.pod_cidr = Some("10.42.3.0/24".into());
        let mut next = current.clone();
        next.spec.pod_cidr = None;
        next.keep_system_fields(&current);
        assert!(
            next.check_update(&current).is_ok(),
            "unset in the body: kept"
        );
        next.spec.pod_cidr = Some("10.42.4.0/24".into());
        let err = next.check_update(&current).unwrap_err();
        assert!(
            err.to_string()
                .contains("immutable once set (it is 10.42.3.0/24)"),
            "{err}"
        );
        let unassigned = Node::default();
        assert!(next.check_update(&unassigned).is_ok());
    }

    #[test]
    fn system_labels() {
        assert!(is_system_label("kubernetes.io/arch"));
        assert!(is_system_label("node.kubernetes.io/instance-type"));
        assert!(is_system_label("pod-template-hash"));
        assert!(is_system_label("punnet.io/board"));
        assert!(!is_system_label("app"));
        assert!(!is_system_label("example.com/kubernetes.io"));
    }
}
