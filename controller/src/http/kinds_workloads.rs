//! What a write through the API may do to DaemonSets and Jobs (the `ApiResource`
//! rules of `kinds`, for the workload kinds of issue 4): status belongs to their
//! controllers, a selector never changes, and a Job's template and completions are
//! fixed once it exists, as in apps/v1 and batch/v1.

use punnet_api::daemonset::validate_daemon_set;
use punnet_api::job::{check_job_update, validate_job};
use punnet_api::validate::{FieldError, ValidationError};
use punnet_api::{DaemonSet, Job, Resource};

use super::kinds::ApiResource;

fn immutable_selector(object: String, kind: &str) -> ValidationError {
    ValidationError {
        object,
        errors: vec![FieldError {
            field: "spec.selector".into(),
            message: format!("field is immutable; delete and re-create the {kind} to change it"),
        }],
    }
}

impl ApiResource for DaemonSet {
    fn validate(&self) -> Result<(), ValidationError> {
        validate_daemon_set(self)
    }

    fn clear_status(&mut self) {
        self.status = Default::default();
    }

    fn keep_system_fields(&mut self, current: &Self) {
        self.status = current.status.clone();
    }

    fn check_update(&self, current: &Self) -> Result<(), ValidationError> {
        if self.spec.selector != current.spec.selector {
            return Err(immutable_selector(self.describe(), Self::KIND));
        }
        Ok(())
    }
}

impl ApiResource for Job {
    fn validate(&self) -> Result<(), ValidationError> {
        validate_job(self)
    }

    fn clear_status(&mut self) {
        self.status = Default::default();
    }

    fn keep_system_fields(&mut self, current: &Self) {
        self.status = current.status.clone();
    }

    fn check_update(&self, current: &Self) -> Result<(), ValidationError> {
        if self.spec.selector != current.spec.selector {
            return Err(immutable_selector(self.describe(), Self::KIND));
        }
        check_job_update(self, current)
    }
}
