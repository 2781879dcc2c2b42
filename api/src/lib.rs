//! punnet-api: the one crate every Punnet part shares. Resource types in the
//! Kubernetes shape, manifest parsing and validation, label selectors, resource
//! quantities, MQTT topic names and the internal wire codec. No I/O, no async.

pub mod affinity;
pub mod capability;
pub mod configdata;
pub mod daemonset;
pub mod deployment;
pub mod enrol;
pub mod event;
pub mod job;
pub mod manifest;
pub mod meta;
pub mod metrics;
pub mod namespace;
pub mod node;
pub mod object;
pub mod pod;
pub mod quantity;
pub mod replicaset;
pub mod selector;
pub mod signing;
pub mod taint;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topics;
pub mod validate;
pub mod web;
pub mod wire;

pub use configdata::{ConfigMap, Secret};
pub use daemonset::{DaemonSet, DaemonSetSpec, DaemonSetStatus};
pub use deployment::*;
pub use event::{Event, EventSource, ObjectReference, EVENT_NORMAL, EVENT_WARNING};
pub use job::{Job, JobCondition, JobSpec, JobStatus};
pub use meta::*;
pub use namespace::{Namespace, DEFAULT_NAMESPACE};
pub use node::*;
pub use object::{List, Object, Resource};
pub use pod::*;
pub use replicaset::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
pub use taint::{Taint, Toleration};

/// Label every node carries with its CPU architecture in Go's naming (`arm64`, `arm`, `amd64`).
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
pub const LABEL_OS: &str = "kubernetes.io/os";
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// Label put on a Deployment's Pods so they can be told apart by template.
pub const LABEL_POD_TEMPLATE_HASH: &str = "pod-template-hash";
