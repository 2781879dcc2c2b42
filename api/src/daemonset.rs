//! DaemonSet (apps/v1): one Pod on every node that matches its template's
//! `nodeSelector` and node affinity, rolled to a new template with `RollingUpdate`
//! (`maxUnavailable`) or on `OnDelete`. Types and their validation.

use serde::{Deserialize, Serialize};

use crate::deployment::{LabelSelector, PodTemplateSpec};
use crate::meta::ObjectMeta;
use crate::object::Resource;
use crate::pod::IntOrString;
use crate::selector::Selector;
use crate::validate::{self, Errors, ValidationError};

/// Label on a DaemonSet's Pods naming the template they were made from.
pub const LABEL_CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

pub const STRATEGY_ROLLING_UPDATE: &str = "RollingUpdate";
pub const STRATEGY_ON_DELETE: &str = "OnDelete";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSet {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DaemonSetSpec,
    #[serde(default)]
    pub status: DaemonSetStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetSpec {
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
    #[serde(default)]
    pub update_strategy: DaemonSetUpdateStrategy,
    /// Accepted for compatibility; Punnet keeps no ControllerRevisions.
    #[serde(default)]
    pub revision_history_limit: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetUpdateStrategy {
    /// `RollingUpdate` (default) or `OnDelete`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub rolling_update: Option<RollingUpdateDaemonSet>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateDaemonSet {
    /// A number or a percentage of the desired Pods; default 1.
    #[serde(default)]
    pub max_unavailable: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetStatus {
    #[serde(default)]
    pub current_number_scheduled: i32,
    #[serde(default)]
    pub number_misscheduled: i32,
    #[serde(default)]
    pub desired_number_scheduled: i32,
    #[serde(default)]
    pub number_ready: i32,
    #[serde(default)]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub updated_number_scheduled: i32,
    #[serde(default)]
    pub number_available: i32,
    #[serde(default)]
    pub number_unavailable: i32,
}

impl DaemonSetSpec {
    pub fn is_on_delete(&self) -> bool {
        self.update_strategy.type_.as_deref() == Some(STRATEGY_ON_DELETE)
    }

    /// How many nodes may be without an available daemon Pod during a rolling update,
    /// out of `desired`: a percentage rounds up, as Kubernetes does for DaemonSets;
    /// never less than 1 so that a rollout always moves.
    pub fn max_unavailable(&self, desired: usize) -> usize {
        let value = self
            .update_strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone())
            .unwrap_or(IntOrString::Int(1));
        let n = match value {
            IntOrString::Int(i) => i.max(0) as usize,
            IntOrString::String(s) => match parse_percent(&s) {
                Some(p) => (desired * p as usize).div_ceil(100),
                None => 1,
            },
        };
        n.max(1)
    }
}

fn parse_percent(s: &str) -> Option<u32> {
    s.strip_suffix('%')?.parse().ok()
}

pub fn validate_daemon_set(ds: &DaemonSet) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    validate::meta(&mut errs, &ds.metadata, true);
    let spec = &ds.spec;
    validate::label_selector(&mut errs, "spec.selector", &spec.selector);
    if spec.selector.match_labels.is_empty() && spec.selector.match_expressions.is_empty() {
        errs.add(
            "spec.selector",
            "must not be empty: add matchLabels that the template's labels carry",
        );
    } else if !Selector::from_label_selector(&spec.selector).matches(&spec.template.metadata.labels)
    {
        errs.add(
            "spec.template.metadata.labels",
            "must match spec.selector, or the DaemonSet would never see its own Pods",
        );
    }
    validate::labels(
        &mut errs,
        "spec.template.metadata.labels",
        &spec.template.metadata.labels,
    );
    validate::pod_spec(&mut errs, "spec.template.spec", &spec.template.spec);
    if let Some(p) = spec.template.spec.restart_policy.as_deref() {
        if p != "Always" {
            errs.add(
                "spec.template.spec.restartPolicy",
                format!("Unsupported value: {p:?}: supported values: \"Always\""),
            );
        }
    }
    if spec.template.spec.node_name.is_some() {
        errs.add(
            "spec.template.spec.nodeName",
            "must not be set: the DaemonSet binds each Pod to its node",
        );
    }
    let strategy = &spec.update_strategy;
    match strategy.type_.as_deref() {
        None | Some(STRATEGY_ROLLING_UPDATE) => {}
        Some(STRATEGY_ON_DELETE) if strategy.rolling_update.is_some() => errs.add(
            "spec.updateStrategy.rollingUpdate",
            "may not be specified when strategy `type` is 'OnDelete'",
        ),
        Some(STRATEGY_ON_DELETE) => {}
        Some(other) => errs.add(
            "spec.updateStrategy.type",
            format!(
                "Unsupported value: {other:?}: supported values: \"OnDelete\", \"RollingUpdate\""
            ),
        ),
    }
    if let Some(v) = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.max_unavailable.as_ref())
    {
        let f = "spec.updateStrategy.rollingUpdate.maxUnavailable";
        match v {
            IntOrString::Int(i) if *i < 0 => errs.add(f, "must be greater than or equal to 0"),
            IntOrString::Int(0) => errs.add(f, "cannot be 0 (Punnet has no maxSurge)"),
            IntOrString::Int(_) => {}
            IntOrString::String(s) => match parse_percent(s) {
                Some(0) => errs.add(f, "cannot be 0% (Punnet has no maxSurge)"),
                Some(p) if p > 100 => errs.add(f, "must not be greater than 100%"),
                Some(_) => {}
                None => errs.add(
                    f,
                    format!("{s:?} must be an integer or a percentage (e.g. \"25%\")"),
                ),
            },
        }
    }
    errs.finish(ds.describe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;
    use crate::object::Object;

    const DS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-exporter, namespace: monitoring}
spec:
  selector: {matchLabels: {app: node-exporter}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 25%}}
  template:
    metadata: {labels: {app: node-exporter}}
    spec:
      nodeSelector: {kubernetes.io/arch: arm64}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: punnet.io/board, operator: In, values: [pi4, pi5]}
      containers: [{name: c, image: prom/node-exporter}]
"#;

    fn parsed(text: &str) -> DaemonSet {
        match parse(text).unwrap().remove(0) {
            Object::DaemonSet(d) => d,
            other => panic!("expected a DaemonSet, got {}", other.kind()),
        }
    }

    #[test]
    fn parses_validates_and_scales_max_unavailable() {
        let ds = parsed(DS);
        validate_daemon_set(&ds).unwrap();
        assert_eq!(ds.spec.max_unavailable(10), 3, "25% of 10 rounds up");
        assert_eq!(ds.spec.max_unavailable(0), 1, "never 0");
        assert_eq!(DaemonSetSpec::default().max_unavailable(10), 1);
        assert!(!ds.spec.is_on_delete());
    }

    #[test]
    fn problems_are_named() {
        let ds = parsed(
            &DS.replace("maxUnavailable: 25%", "maxUnavailable: 0")
                .replace("operator: In", "operator: Near"),
        );
        let err = validate_daemon_set(&ds).unwrap_err().to_string();
        assert_eq!(
            err,
            "DaemonSet monitoring/node-exporter: spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: \"Near\" is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt; spec.updateStrategy.rollingUpdate.maxUnavailable: cannot be 0 (Punnet has no maxSurge)"
        );
        let mut ds = parsed(DS);
        ds.spec.template.metadata.labels.clear();
        ds.spec.update_strategy.type_ = Some("Sometimes".into());
        let err = validate_daemon_set(&ds).unwrap_err().to_string();
        assert!(
            err.contains("spec.template.metadata.labels: must match spec.selector"),
            "{err}"
        );
        assert!(err.contains("Unsupported value: \"Sometimes\""), "{err}");
    }

    #[test]
    fn the_examples_are_valid() {
        for text in [
            include_str!("../../examples/daemonset.yaml"),
            include_str!("../../examples/job.yaml"),
        ] {
            for obj in parse(text).unwrap() {
                crate::validate::validate(&obj).unwrap();
            }
        }
    }

    #[test]
    fn pod_affinity_is_refused_by_name() {
        let text = DS.replace(
            "nodeAffinity:",
            "podAntiAffinity: {}\n        nodeAffinity:",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains(
                "\"spec.template.spec.affinity.podAntiAffinity\" (Punnet does not support it"
            ),
            "{err}"
        );
    }
}
