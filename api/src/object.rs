//! What all kinds have in common: the `Resource` trait (kind, API group, plural, scope),
//! the `Object` enum for "any object of a kind Punnet knows", Kubernetes-style lists,
//! and JSON output without the empty fields Kubernetes omits.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::configdata::{ConfigMap, Secret};
use crate::daemonset::DaemonSet;
use crate::deployment::Deployment;
use crate::job::Job;
use crate::meta::{ListMeta, ObjectMeta};
use crate::namespace::Namespace;
use crate::node::Node;
use crate::pod::Pod;
use crate::replicaset::ReplicaSet;

/// A kind stored and served by the controller.
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: &'static str;
    /// `v1` or `group/version`.
    const API_VERSION: &'static str;
    /// Lower-case plural used in URLs and store tree names.
    const PLURAL: &'static str;
    const NAMESPACED: bool;

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// Sets `apiVersion` and `kind` to this type's.
    fn set_type_meta(&mut self);
    fn into_object(self) -> Object;
    /// The object, if it is of this kind.
    fn from_object(obj: Object) -> Option<Self>;

    /// `Kind namespace/name`, the way every message names an object.
    fn describe(&self) -> String {
        format!("{} {}", Self::KIND, self.meta().key())
    }
}

macro_rules! resource {
    ($ty:ident, $kind:literal, $api:literal, $plural:literal, $namespaced:literal) => {
        impl Resource for $ty {
            const KIND: &'static str = $kind;
            const API_VERSION: &'static str = $api;
            const PLURAL: &'static str = $plural;
            const NAMESPACED: bool = $namespaced;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn set_type_meta(&mut self) {
                self.api_version = $api.to_string();
                self.kind = $kind.to_string();
            }
            fn into_object(self) -> Object {
                Object::$ty(self)
            }
            fn from_object(obj: Object) -> Option<Self> {
                match obj {
                    Object::$ty(o) => Some(o),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }
    };
}

resource!(Pod, "Pod", "v1", "pods", true);
resource!(Deployment, "Deployment", "apps/v1", "deployments", true);
resource!(Node, "Node", "v1", "nodes", false);
resource!(ConfigMap, "ConfigMap", "v1", "configmaps", true);
resource!(Secret, "Secret", "v1", "secrets", true);
resource!(DaemonSet, "DaemonSet", "apps/v1", "daemonsets", true);
resource!(Job, "Job", "batch/v1", "jobs", true);
resource!(Namespace, "Namespace", "v1", "namespaces", false);
resource!(ReplicaSet, "ReplicaSet", "apps/v1", "replicasets", true);

/// Any object of a kind Punnet knows, as read from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Pod(Pod),
    Deployment(Deployment),
    Node(Node),
    ConfigMap(ConfigMap),
    Secret(Secret),
    DaemonSet(DaemonSet),
    Job(Job),
    Namespace(Namespace),
    ReplicaSet(ReplicaSet),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Pod(_) => Pod::KIND,
            Object::Deployment(_) => Deployment::KIND,
            Object::Node(_) => Node::KIND,
            Object::ConfigMap(_) => ConfigMap::KIND,
            Object::Secret(_) => Secret::KIND,
            Object::DaemonSet(_) => DaemonSet::KIND,
            Object::Job(_) => Job::KIND,
            Object::Namespace(_) => Namespace::KIND,
            Object::ReplicaSet(_) => ReplicaSet::KIND,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Pod(o) => o.meta(),
            Object::Deployment(o) => o.meta(),
            Object::Node(o) => o.meta(),
            Object::ConfigMap(o) => o.meta(),
            Object::Secret(o) => o.meta(),
            Object::DaemonSet(o) => o.meta(),
            Object::Job(o) => o.meta(),
            Object::Namespace(o) => o.meta(),
            Object::ReplicaSet(o) => o.meta(),
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Pod(o) => o.meta_mut(),
            Object::Deployment(o) => o.meta_mut(),
            Object::Node(o) => o.meta_mut(),
            Object::ConfigMap(o) => o.meta_mut(),
            Object::Secret(o) => o.meta_mut(),
            Object::DaemonSet(o) => o.meta_mut(),
            Object::Job(o) => o.meta_mut(),
            Object::Namespace(o) => o.meta_mut(),
            Object::ReplicaSet(o) => o.meta_mut(),
        }
    }

    /// `Kind namespace/name`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind(), self.meta().key())
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Object::Pod(o) => to_json(o),
            Object::Deployment(o) => to_json(o),
            Object::Node(o) => to_json(o),
            Object::ConfigMap(o) => to_json(o),
            Object::Secret(o) => to_json(o),
            Object::DaemonSet(o) => to_json(o),
            Object::Job(o) => to_json(o),
            Object::Namespace(o) => to_json(o),
            Object::ReplicaSet(o) => to_json(o),
        }
    }
}

/// `PodList`, `DeploymentList`, `NodeList`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

impl<T: Resource> List<T> {
    pub fn new(items: Vec<T>, resource_version: u64) -> List<T> {
        List {
            api_version: T::API_VERSION.to_string(),
            kind: format!("{}List", T::KIND),
            metadata: ListMeta {
                resource_version: Some(resource_version.to_string()),
            },
            items,
        }
    }
}

/// JSON as Kubernetes writes it: fields that are null, empty lists or empty maps are
/// left out (the types keep every field so that the binary wire codec stays simple).
pub fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    let mut v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    prune(&mut v);
    v
}

fn prune(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, child| {
                prune(child);
                !is_empty(child)
            });
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_omits_empty_fields_but_keeps_zeros_and_false() {
        let mut pod = Pod::default();
        pod.set_type_meta();
        pod.metadata.name = "web".into();
        pod.status
            .container_statuses
            .push(crate::pod::ContainerStatus {
                name: "c".into(),
                ..Default::default()
            });
        let v = to_json(&pod);
        assert_eq!(v["kind"], "Pod");
        assert!(v["metadata"].get("labels").is_none());
        assert!(v.get("spec").is_none());
        assert_eq!(v["status"]["containerStatuses"][0]["restartCount"], 0);
        assert_eq!(v["status"]["containerStatuses"][0]["ready"], false);
    }
}
