//! Deployment (apps/v1): keeps a number of identical Pods running.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{ObjectMeta, Time};
use crate::pod::{IntOrString, PodSpec};

/// The Deployment's revision, on the Deployment and on each of its ReplicaSets.
pub const ANNOTATION_REVISION: &str = "deployment.kubernetes.io/revision";
/// Set on the Pod template by `rollout restart`: a new value is a new template.
pub const ANNOTATION_RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Strategy types.
pub const STRATEGY_ROLLING_UPDATE: &str = "RollingUpdate";
pub const STRATEGY_RECREATE: &str = "Recreate";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DeploymentSpec,
    #[serde(default)]
    pub status: DeploymentStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Defaults to 1, as in Kubernetes.
    #[serde(default)]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
    #[serde(default)]
    pub strategy: DeploymentStrategy,
    /// Seconds a new Pod must be Ready before it counts as available (default 0).
    #[serde(default)]
    pub min_ready_seconds: Option<i32>,
    /// Old ReplicaSets kept for `rollout undo` (default 10).
    #[serde(default)]
    pub revision_history_limit: Option<i32>,
    /// A paused Deployment scales but does not roll out template changes.
    #[serde(default)]
    pub paused: bool,
    /// Seconds without progress before `Progressing` turns False (default 600).
    #[serde(default)]
    pub progress_deadline_seconds: Option<i32>,
}

impl DeploymentSpec {
    pub fn replicas(&self) -> i32 {
        self.replicas.unwrap_or(1)
    }

    pub fn min_ready_seconds(&self) -> i32 {
        self.min_ready_seconds.unwrap_or(0)
    }

    pub fn revision_history_limit(&self) -> i32 {
        self.revision_history_limit.unwrap_or(10)
    }

    pub fn progress_deadline_seconds(&self) -> i32 {
        self.progress_deadline_seconds.unwrap_or(600)
    }

    /// Whether the strategy is Recreate (anything else is RollingUpdate, the default).
    pub fn is_recreate(&self) -> bool {
        self.strategy.type_.as_deref() == Some(STRATEGY_RECREATE)
    }

    /// `maxSurge` and `maxUnavailable` as given, with Kubernetes' defaults (25% each).
    pub fn rolling_params(&self) -> (IntOrString, IntOrString) {
        let ru = self.strategy.rolling_update.clone().unwrap_or_default();
        let quarter = || IntOrString::String("25%".into());
        (
            ru.max_surge.unwrap_or_else(quarter),
            ru.max_unavailable.unwrap_or_else(quarter),
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// `RollingUpdate` (default) or `Recreate`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub rolling_update: Option<RollingUpdateDeployment>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateDeployment {
    /// Pods above `replicas` during an update: a number or a percentage (rounded up).
    #[serde(default)]
    pub max_surge: Option<IntOrString>,
    /// Pods below `replicas` during an update: a number or a percentage (rounded down).
    #[serde(default)]
    pub max_unavailable: Option<IntOrString>,
}

/// An int-or-percent against `total`, as Kubernetes' `GetScaledValueFromIntOrPercent`:
/// `"25%"` of 10 is 3 rounded up, 2 rounded down. `None` for a malformed value.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Option<i32> {
    match v {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            let scaled = pct * i64::from(total);
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).ok()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    #[serde(default)]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default)]
    pub unavailable_replicas: i32,
    #[serde(default)]
    pub conditions: Vec<DeploymentCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub last_update_time: Option<Time>,
    #[serde(default)]
    pub last_transition_time: Option<Time>,
}

/// Checks the rollout fields of a Deployment's spec (strategy, minReadySeconds,
/// revisionHistoryLimit, progressDeadlineSeconds) with Kubernetes' rules and messages.
pub(crate) fn validate_rollout(errs: &mut crate::validate::Errors, spec: &DeploymentSpec) {
    let non_negative = |errs: &mut crate::validate::Errors, field: &str, v: Option<i32>| {
        if v.is_some_and(|v| v < 0) {
            errs.add(field, "must be greater than or equal to 0");
        }
    };
    non_negative(errs, "spec.minReadySeconds", spec.min_ready_seconds);
    non_negative(
        errs,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
    );
    if let Some(p) = spec.progress_deadline_seconds {
        if p <= spec.min_ready_seconds() {
            errs.add(
                "spec.progressDeadlineSeconds",
                "must be greater than minReadySeconds",
            );
        }
    }
    match spec.strategy.type_.as_deref() {
        None | Some(STRATEGY_ROLLING_UPDATE) => {}
        Some(STRATEGY_RECREATE) => {
            if spec.strategy.rolling_update.is_some() {
                errs.add(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                );
            }
            return;
        }
        Some(other) => {
            errs.add(
                "spec.strategy.type",
                format!("Unsupported value: {other:?}: supported values: \"Recreate\", \"RollingUpdate\""),
            );
            return;
        }
    }
    let (surge, unavailable) = spec.rolling_params();
    let mut values = Vec::new();
    for (field, v) in [
        ("spec.strategy.rollingUpdate.maxSurge", &surge),
        ("spec.strategy.rollingUpdate.maxUnavailable", &unavailable),
    ] {
        match (v, scaled_value(v, 100, false)) {
            (_, None) => errs.add(
                field,
                format!("{v}: must be an integer or a percentage such as \"25%\""),
            ),
            (_, Some(n)) if n < 0 => errs.add(field, "must be greater than or equal to 0"),
            (IntOrString::String(_), Some(n)) if field.ends_with("maxUnavailable") && n > 100 => {
                errs.add(field, "must not be greater than 100%")
            }
            (_, Some(n)) => values.push(n),
        }
    }
    if values == [0, 0] {
        errs.add(
            "spec.strategy.rollingUpdate.maxUnavailable",
            "may not be 0 when `maxSurge` is 0",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_kubernetes() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_value(&pct("25%"), 10, true), Some(3));
        assert_eq!(scaled_value(&pct("25%"), 10, false), Some(2));
        assert_eq!(scaled_value(&pct("25%"), 1, true), Some(1));
        assert_eq!(scaled_value(&pct("25%"), 1, false), Some(0));
        assert_eq!(scaled_value(&IntOrString::Int(2), 10, true), Some(2));
        assert_eq!(scaled_value(&pct("x%"), 10, true), None);
        assert_eq!(scaled_value(&pct("25"), 10, true), None);
    }

    #[test]
    fn rollout_fields_are_checked() {
        let mut spec = DeploymentSpec {
            strategy: DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::String("0%".into())),
                }),
            },
            min_ready_seconds: Some(10),
            progress_deadline_seconds: Some(5),
            ..Default::default()
        };
        let mut errs = crate::validate::Errors::default();
        validate_rollout(&mut errs, &spec);
        let msg = errs
            .finish("Deployment default/web".into())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("spec.progressDeadlineSeconds: must be greater than minReadySeconds"),
            "{msg}"
        );
        assert!(
            msg.contains("maxUnavailable: may not be 0 when `maxSurge` is 0"),
            "{msg}"
        );

        spec.strategy.type_ = Some("Recreate".into());
        spec.progress_deadline_seconds = None;
        let mut errs = crate::validate::Errors::default();
        validate_rollout(&mut errs, &spec);
        let msg = errs.finish("d".into()).unwrap_err().to_string();
        assert!(
            msg.contains("may not be specified when strategy `type` is 'Recreate'"),
            "{msg}"
        );

        spec.strategy.rolling_update = None;
        let mut errs = crate::validate::Errors::default();
        validate_rollout(&mut errs, &spec);
        assert!(errs.finish("d".into()).is_ok());
        assert!(spec.is_recreate());
        assert_eq!(spec.revision_history_limit(), 10);
        assert_eq!(spec.progress_deadline_seconds(), 600);
    }
}
