//! Namespace (core/v1, cluster-scoped): the scope every namespaced object's name lives
//! in. `default` always exists; deleting a Namespace marks it `Terminating`, the
//! controller deletes everything in it, then removes it.

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::object::Resource;
use crate::validate::{dns_label, label_key, label_value, FieldError, ValidationError};

/// The namespace objects go to when none is named; created on the controller's first start.
pub const DEFAULT_NAMESPACE: &str = "default";
pub const PHASE_ACTIVE: &str = "Active";
pub const PHASE_TERMINATING: &str = "Terminating";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NamespaceSpec,
    #[serde(default)]
    pub status: NamespaceStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// Kubernetes' `kubernetes` finalizer is shown; Punnet's namespace controller is it.
    #[serde(default)]
    pub finalizers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// `Active` or `Terminating`.
    #[serde(default)]
    pub phase: Option<String>,
}

impl Namespace {
    pub fn new(name: &str) -> Namespace {
        let mut ns = Namespace::default();
        ns.metadata.name = name.to_string();
        ns.status.phase = Some(PHASE_ACTIVE.to_string());
        ns
    }

    /// Whether it is being deleted (new objects may not be created in it).
    pub fn is_terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
            || self.status.phase.as_deref() == Some(PHASE_TERMINATING)
    }
}

/// A Namespace's name is a DNS label (it is part of other objects' keys and of DNS names).
pub fn validate_namespace(ns: &Namespace) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    let mut add = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    if ns.metadata.name.is_empty() {
        add("metadata.name", "must not be empty".into());
    } else if let Err(e) = dns_label(&ns.metadata.name) {
        add("metadata.name", e);
    }
    if ns.metadata.namespace.is_some() {
        add(
            "metadata.namespace",
            "must not be set: this kind is not namespaced".into(),
        );
    }
    for (k, v) in &ns.metadata.labels {
        if let Err(e) = label_key(k).and_then(|_| label_value(v)) {
            add(&format!("metadata.labels[{k:?}]"), e);
        }
    }
    if let Some(phase) = &ns.status.phase {
        if phase != PHASE_ACTIVE && phase != PHASE_TERMINATING {
            add(
                "status.phase",
                format!(
                    "Unsupported value: {phase:?}: supported values: \"Active\", \"Terminating\""
                ),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            object: ns.describe(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert!(validate_namespace(&Namespace::new("team-a")).is_ok());
        let err = validate_namespace(&Namespace::new("a.b")).unwrap_err();
        assert!(
            err.to_string().starts_with("Namespace a.b: metadata.name:"),
            "{err}"
        );
        let mut ns = Namespace::new("x");
        ns.metadata.namespace = Some("default".into());
        assert!(validate_namespace(&ns).is_err());
    }

    #[test]
    fn terminating_by_phase_or_deletion_timestamp() {
        let mut ns = Namespace::new("x");
        assert!(!ns.is_terminating());
        ns.status.phase = Some(PHASE_TERMINATING.into());
        assert!(ns.is_terminating());
    }
}
