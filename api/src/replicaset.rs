//! ReplicaSet (apps/v1): keeps a number of Pods of one template running. Deployments
//! own one per template revision; their status is what a rollout waits on.

use serde::{Deserialize, Serialize};

use crate::deployment::{LabelSelector, PodTemplateSpec};
use crate::meta::ObjectMeta;
use crate::object::Resource;
use crate::selector::Selector;
use crate::validate::{label_selector, labels, meta, pod_spec, Errors, ValidationError};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSet {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ReplicaSetSpec,
    #[serde(default)]
    pub status: ReplicaSetStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    /// Defaults to 1, as in Kubernetes.
    #[serde(default)]
    pub replicas: Option<i32>,
    /// Seconds a Pod must be Ready before it counts as available.
    #[serde(default)]
    pub min_ready_seconds: Option<i32>,
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
}

impl ReplicaSetSpec {
    pub fn replicas(&self) -> i32 {
        self.replicas.unwrap_or(1)
    }

    pub fn min_ready_seconds(&self) -> i32 {
        self.min_ready_seconds.unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetStatus {
    #[serde(default)]
    pub replicas: i32,
    /// Pods whose labels match the template's labels (all of them, unless someone
    /// relabelled a Pod).
    #[serde(default)]
    pub fully_labeled_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Ready for at least `minReadySeconds`.
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

/// Checks a ReplicaSet as the API server does: a selector the template's labels match,
/// and a Pod template that would make valid Pods.
pub fn validate_replica_set(rs: &ReplicaSet) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    meta(&mut errs, &rs.metadata, true);
    if rs.spec.replicas.is_some_and(|r| r < 0) {
        errs.add("spec.replicas", "must be greater than or equal to 0");
    }
    if rs.spec.min_ready_seconds.is_some_and(|r| r < 0) {
        errs.add("spec.minReadySeconds", "must be greater than or equal to 0");
    }
    label_selector(&mut errs, "spec.selector", &rs.spec.selector);
    if rs.spec.selector.match_labels.is_empty() && rs.spec.selector.match_expressions.is_empty() {
        errs.add(
            "spec.selector",
            "must not be empty: add matchLabels that the template's labels carry",
        );
    } else if !Selector::from_label_selector(&rs.spec.selector)
        .matches(&rs.spec.template.metadata.labels)
    {
        errs.add(
            "spec.template.metadata.labels",
            "must match spec.selector, or the ReplicaSet would never see its own Pods",
        );
    }
    labels(
        &mut errs,
        "spec.template.metadata.labels",
        &rs.spec.template.metadata.labels,
    );
    pod_spec(&mut errs, "spec.template.spec", &rs.spec.template.spec);
    if let Some(p) = rs.spec.template.spec.restart_policy.as_deref() {
        if p != "Always" {
            errs.add(
                "spec.template.spec.restartPolicy",
                format!("{p:?} is not allowed in a ReplicaSet: only \"Always\""),
            );
        }
    }
    errs.finish(rs.describe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;
    use crate::object::Object;

    const RS: &str = "\
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-abc, namespace: default}
spec:
  replicas: 2
  minReadySeconds: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox}]
";

    #[test]
    fn a_manifest_parses_and_validates() {
        let objs = parse(RS).unwrap();
        let Object::ReplicaSet(rs) = &objs[0] else {
            panic!("expected a ReplicaSet, got {:?}", objs[0])
        };
        assert_eq!((rs.spec.replicas(), rs.spec.min_ready_seconds()), (2, 5));
        validate_replica_set(rs).unwrap();
    }

    #[test]
    fn a_template_its_selector_misses_is_rejected() {
        let text = RS.replace("labels: {app: web}", "labels: {app: db}");
        let objs = parse(&text).unwrap();
        let Object::ReplicaSet(rs) = &objs[0] else {
            panic!("expected a ReplicaSet")
        };
        let msg = validate_replica_set(rs).unwrap_err().to_string();
        assert_eq!(
            msg,
            "ReplicaSet default/web-abc: spec.template.metadata.labels: must match spec.selector, or the ReplicaSet would never see its own Pods"
        );
    }
}
