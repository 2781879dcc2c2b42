//! Kubernetes-style Events (core/v1): what happened to an object, by whom, how often.
//! The controller aggregates repeats into one Event with a count and first/last seen.

use serde::{Deserialize, Serialize};

use crate::meta::{ObjectMeta, Time};
use crate::object::Resource;

pub const EVENT_NORMAL: &str = "Normal";
pub const EVENT_WARNING: &str = "Warning";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub involved_object: ObjectReference,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub count: i32,
    #[serde(default)]
    pub first_timestamp: Option<Time>,
    #[serde(default)]
    pub last_timestamp: Option<Time>,
    #[serde(default)]
    pub source: EventSource,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: Option<String>,
    /// A container of a Pod: `spec.containers{name}`.
    #[serde(default)]
    pub field_path: Option<String>,
}

impl ObjectReference {
    /// A reference to a stored object.
    pub fn to<T: Resource>(obj: &T) -> ObjectReference {
        let meta = obj.meta();
        ObjectReference {
            api_version: T::API_VERSION.to_string(),
            kind: T::KIND.to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            field_path: None,
        }
    }

    /// The same reference narrowed to one container of a Pod.
    pub fn container(mut self, name: &str) -> ObjectReference {
        self.field_path = Some(format!("spec.containers{{{name}}}"));
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSource {
    #[serde(default)]
    pub component: String,
    /// The node, for events an agent reported.
    #[serde(default)]
    pub host: Option<String>,
}
