//! Job (batch/v1): runs Pods until `completions` of them succeed, at most
//! `parallelism` at once, giving up after `backoffLimit` failures or
//! `activeDeadlineSeconds`. Types and their validation.

use serde::{Deserialize, Serialize};

use crate::deployment::{LabelSelector, PodTemplateSpec};
use crate::meta::{ObjectMeta, Time};
use crate::object::Resource;
use crate::selector::Selector;
use crate::validate::{self, Errors, FieldError, ValidationError};

/// Labels on a Job's Pods, as Kubernetes sets them.
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LABEL_JOB_NAME_LEGACY: &str = "job-name";
pub const LABEL_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const LABEL_CONTROLLER_UID_LEGACY: &str = "controller-uid";

pub const JOB_COMPLETE: &str = "Complete";
pub const JOB_FAILED: &str = "Failed";

/// Kubernetes' default `backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: JobSpec,
    #[serde(default)]
    pub status: JobStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Pods running at once; default 1.
    #[serde(default)]
    pub parallelism: Option<i32>,
    /// Successful Pods needed; unset with parallelism unset means 1; unset with
    /// parallelism set means "until one succeeds" (a work queue), as in Kubernetes.
    #[serde(default)]
    pub completions: Option<i32>,
    /// Failed Pods (and, with `OnFailure`, container restarts) tolerated; default 6.
    #[serde(default)]
    pub backoff_limit: Option<i32>,
    #[serde(default)]
    pub active_deadline_seconds: Option<i64>,
    /// The finished Job (and its Pods) is deleted this long after it finished.
    #[serde(default)]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Optional: the Job finds its Pods by owner reference.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub template: PodTemplateSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    #[serde(default)]
    pub active: i32,
    #[serde(default)]
    pub succeeded: i32,
    #[serde(default)]
    pub failed: i32,
    #[serde(default)]
    pub start_time: Option<Time>,
    #[serde(default)]
    pub completion_time: Option<Time>,
    #[serde(default)]
    pub conditions: Vec<JobCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCondition {
    /// `Complete` or `Failed`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub last_probe_time: Option<Time>,
    #[serde(default)]
    pub last_transition_time: Option<Time>,
}

impl JobSpec {
    pub fn parallelism(&self) -> i32 {
        self.parallelism.unwrap_or(1).max(0)
    }

    /// `None`: a work queue (done when one Pod succeeded and none runs).
    pub fn completions(&self) -> Option<i32> {
        match (self.completions, self.parallelism) {
            (Some(c), _) => Some(c.max(0)),
            (None, None) => Some(1),
            (None, Some(_)) => None,
        }
    }

    pub fn backoff_limit(&self) -> i32 {
        self.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT).max(0)
    }
}

impl JobStatus {
    /// The finishing condition (`Complete` or `Failed`), if the Job has finished.
    pub fn finished(&self) -> Option<&JobCondition> {
        self.conditions
            .iter()
            .find(|c| (c.type_ == JOB_COMPLETE || c.type_ == JOB_FAILED) && c.status == "True")
    }
}

pub fn validate_job(job: &Job) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    validate::meta(&mut errs, &job.metadata, true);
    let spec = &job.spec;
    for (field, v) in [
        ("spec.parallelism", spec.parallelism),
        ("spec.completions", spec.completions),
        ("spec.backoffLimit", spec.backoff_limit),
        (
            "spec.ttlSecondsAfterFinished",
            spec.ttl_seconds_after_finished,
        ),
    ] {
        if v.is_some_and(|v| v < 0) {
            errs.add(field, "must be greater than or equal to 0");
        }
    }
    if spec.active_deadline_seconds.is_some_and(|v| v <= 0) {
        errs.add("spec.activeDeadlineSeconds", "must be greater than 0");
    }
    if let Some(sel) = &spec.selector {
        validate::label_selector(&mut errs, "spec.selector", sel);
        if !Selector::from_label_selector(sel).matches(&spec.template.metadata.labels) {
            errs.add(
                "spec.template.metadata.labels",
                "must match spec.selector, or the Job would never see its own Pods",
            );
        }
    }
    validate::labels(
        &mut errs,
        "spec.template.metadata.labels",
        &spec.template.metadata.labels,
    );
    validate::pod_spec(&mut errs, "spec.template.spec", &spec.template.spec);
    match spec.template.spec.restart_policy.as_deref() {
        Some("OnFailure" | "Never") => {}
        Some(p) => errs.add(
            "spec.template.spec.restartPolicy",
            format!("Unsupported value: {p:?}: supported values: \"OnFailure\", \"Never\""),
        ),
        None => errs.add(
            "spec.template.spec.restartPolicy",
            "Required value: a Job's Pods need restartPolicy OnFailure or Never",
        ),
    }
    errs.finish(job.describe())
}

/// As in batch/v1, a Job's template and completions are fixed once it exists.
pub fn check_job_update(next: &Job, current: &Job) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    if next.spec.template != current.spec.template {
        errors.push(FieldError {
            field: "spec.template".into(),
            message: "field is immutable; delete and re-create the Job to change it".into(),
        });
    }
    if next.spec.completions != current.spec.completions {
        errors.push(FieldError {
            field: "spec.completions".into(),
            message: "field is immutable".into(),
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            object: next.describe(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;
    use crate::object::Object;

    const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: flash-firmware}
spec:
  completions: 3
  parallelism: 2
  backoffLimit: 2
  ttlSecondsAfterFinished: 600
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: [sh, -c, "exit 0"]}]
"#;

    fn parsed(text: &str) -> Job {
        match parse(text).unwrap().remove(0) {
            Object::Job(j) => j,
            other => panic!("expected a Job, got {}", other.kind()),
        }
    }

    #[test]
    fn parses_with_defaults() {
        let j = parsed(JOB);
        validate_job(&j).unwrap();
        assert_eq!(
            (
                j.spec.completions(),
                j.spec.parallelism(),
                j.spec.backoff_limit()
            ),
            (Some(3), 2, 2)
        );
        assert_eq!(JobSpec::default().completions(), Some(1));
        assert_eq!(JobSpec::default().backoff_limit(), 6);
        let queue = JobSpec {
            parallelism: Some(4),
            ..Default::default()
        };
        assert_eq!(queue.completions(), None);
    }

    #[test]
    fn restart_policy_and_counts_are_checked() {
        let j = parsed(
            &JOB.replace("restartPolicy: Never", "restartPolicy: Always")
                .replace("backoffLimit: 2", "backoffLimit: -1"),
        );
        assert_eq!(
            validate_job(&j).unwrap_err().to_string(),
            "Job flash-firmware: spec.backoffLimit: must be greater than or equal to 0; spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
        let mut changed = parsed(JOB);
        changed.spec.template.spec.containers[0].image = "alpine".into();
        assert!(check_job_update(&changed, &parsed(JOB))
            .unwrap_err()
            .to_string()
            .contains("spec.template: field is immutable"));
    }
}
