//! Validation of objects before they are stored: every problem names the object, the
//! field and what is wrong, e.g.
//! `Deployment default/web: spec.template.spec.containers[0].image: must not be empty`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::object::{Object, Resource};
use crate::pod::PodSpec;
use crate::quantity::{parse_bytes, parse_cpu_millis};
use crate::selector::Selector;
use crate::{Deployment, LabelSelector, Node, ObjectMeta, Pod};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// All problems found in one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// `Kind namespace/name`.
    pub object: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        write!(f, "{}: {}", self.object, parts.join("; "))
    }
}

impl std::error::Error for ValidationError {}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn finish(self, object: String) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                object,
                errors: self.0,
            })
        }
    }
}

pub fn validate(obj: &Object) -> Result<(), ValidationError> {
    match obj {
        Object::Pod(p) => validate_pod(p),
        Object::Deployment(d) => validate_deployment(d),
        Object::Node(n) => validate_node(n),
    }
}

pub fn validate_pod(pod: &Pod) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    meta(&mut errs, &pod.metadata, true);
    pod_spec(&mut errs, "spec", &pod.spec);
    errs.finish(pod.describe())
}

pub fn validate_deployment(d: &Deployment) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    meta(&mut errs, &d.metadata, true);
    if let Some(r) = d.spec.replicas {
        if r < 0 {
            errs.add("spec.replicas", "must be 0 or more");
        }
    }
    label_selector(&mut errs, "spec.selector", &d.spec.selector);
    if d.spec.selector.match_labels.is_empty() && d.spec.selector.match_expressions.is_empty() {
        errs.add(
            "spec.selector",
            "must not be empty: add matchLabels that the template's labels carry",
        );
    } else if !Selector::from_label_selector(&d.spec.selector)
        .matches(&d.spec.template.metadata.labels)
    {
        errs.add(
            "spec.template.metadata.labels",
            "must match spec.selector, or the Deployment would never see its own Pods",
        );
    }
    labels(
        &mut errs,
        "spec.template.metadata.labels",
        &d.spec.template.metadata.labels,
    );
    pod_spec(&mut errs, "spec.template.spec", &d.spec.template.spec);
    if let Some(p) = d.spec.template.spec.restart_policy.as_deref() {
        if p != "Always" {
            errs.add(
                "spec.template.spec.restartPolicy",
                format!("{p:?} is not allowed in a Deployment: only \"Always\""),
            );
        }
    }
    errs.finish(d.describe())
}

pub fn validate_node(n: &Node) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    meta(&mut errs, &n.metadata, false);
    errs.finish(n.describe())
}

fn meta(errs: &mut Errors, m: &ObjectMeta, namespaced: bool) {
    if m.name.is_empty() {
        errs.add("metadata.name", "must not be empty");
    } else if let Err(e) = dns_subdomain(&m.name) {
        errs.add("metadata.name", e);
    }
    if let Some(ns) = &m.namespace {
        if !namespaced {
            errs.add(
                "metadata.namespace",
                "must not be set: this kind is not namespaced",
            );
        } else if let Err(e) = dns_label(ns) {
            errs.add("metadata.namespace", e);
        }
    }
    labels(errs, "metadata.labels", &m.labels);
}

fn labels(errs: &mut Errors, field: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if let Err(e) = label_key(k) {
            errs.add(format!("{field}[{k:?}]"), e);
        }
        if let Err(e) = label_value(v) {
            errs.add(format!("{field}[{k:?}]"), e);
        }
    }
}

fn label_selector(errs: &mut Errors, field: &str, sel: &LabelSelector) {
    labels(errs, &format!("{field}.matchLabels"), &sel.match_labels);
    for (i, e) in sel.match_expressions.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        match e.operator.as_str() {
            "In" | "NotIn" if e.values.is_empty() => {
                errs.add(format!("{f}.values"), "must not be empty for In and NotIn")
            }
            "Exists" | "DoesNotExist" if !e.values.is_empty() => errs.add(
                format!("{f}.values"),
                "must be empty for Exists and DoesNotExist",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.add(
                format!("{f}.operator"),
                format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
            ),
        }
    }
}

fn pod_spec(errs: &mut Errors, field: &str, spec: &PodSpec) {
    if spec.containers.is_empty() {
        errs.add(
            format!("{field}.containers"),
            "must have at least one container",
        );
    }
    if let Some(p) = spec.restart_policy.as_deref() {
        if !matches!(p, "Always" | "OnFailure" | "Never") {
            errs.add(
                format!("{field}.restartPolicy"),
                format!("{p:?} is not one of Always, OnFailure, Never"),
            );
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            errs.add(
                format!("{field}.terminationGracePeriodSeconds"),
                "must be 0 or more",
            );
        }
    }
    if let Some(n) = &spec.node_name {
        if let Err(e) = dns_subdomain(n) {
            errs.add(format!("{field}.nodeName"), e);
        }
    }
    labels(errs, &format!("{field}.nodeSelector"), &spec.node_selector);

    let mut volume_names = HashSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let f = format!("{field}.volumes[{i}]");
        if let Err(e) = dns_label(&v.name) {
            errs.add(format!("{f}.name"), e);
        }
        if !volume_names.insert(v.name.as_str()) {
            errs.add(
                format!("{f}.name"),
                format!("{:?} is used by another volume", v.name),
            );
        }
        match &v.host_path {
            None => errs.add(f, "has no source: Punnet supports hostPath volumes"),
            Some(h) => {
                if !h.path.starts_with('/') {
                    errs.add(format!("{f}.hostPath.path"), "must be an absolute path");
                }
                if let Some(t) = h.type_.as_deref() {
                    if !matches!(
                        t,
                        "" | "DirectoryOrCreate"
                            | "Directory"
                            | "FileOrCreate"
                            | "File"
                            | "Socket"
                            | "CharDevice"
                            | "BlockDevice"
                    ) {
                        errs.add(
                            format!("{f}.hostPath.type"),
                            format!("{t:?} is not a hostPath type (DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice, BlockDevice)"),
                        );
                    }
                }
            }
        }
    }

    let mut names = HashSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let f = format!("{field}.containers[{i}]");
        if c.name.is_empty() {
            errs.add(format!("{f}.name"), "must not be empty");
        } else if let Err(e) = dns_label(&c.name) {
            errs.add(format!("{f}.name"), e);
        } else if !names.insert(c.name.as_str()) {
            errs.add(
                format!("{f}.name"),
                format!("{:?} is used by another container", c.name),
            );
        }
        if c.image.trim().is_empty() {
            errs.add(format!("{f}.image"), "must not be empty");
        }
        if let Some(p) = c.image_pull_policy.as_deref() {
            if !matches!(p, "Always" | "IfNotPresent" | "Never") {
                errs.add(
                    format!("{f}.imagePullPolicy"),
                    format!("{p:?} is not one of Always, IfNotPresent, Never"),
                );
            }
        }
        for (j, e) in c.env.iter().enumerate() {
            if e.name.is_empty() || e.name.contains('=') {
                errs.add(
                    format!("{f}.env[{j}].name"),
                    "must be a non-empty name without '='",
                );
            }
        }
        if let Some(w) = &c.working_dir {
            if !w.starts_with('/') {
                errs.add(format!("{f}.workingDir"), "must be an absolute path");
            }
        }
        for (kind, map) in [
            ("limits", &c.resources.limits),
            ("requests", &c.resources.requests),
        ] {
            for (name, q) in map {
                let rf = format!("{f}.resources.{kind}.{name}");
                let parsed = match name.as_str() {
                    "cpu" => parse_cpu_millis(q).map(|_| ()),
                    "memory" => parse_bytes(q).map(|_| ()),
                    _ => {
                        errs.add(rf, "unsupported resource: Punnet knows cpu and memory");
                        continue;
                    }
                };
                if let Err(e) = parsed {
                    errs.add(rf, e.to_string());
                }
            }
            if let (Some(req), Some(lim)) = (
                c.resources
                    .requests
                    .get("memory")
                    .and_then(|q| parse_bytes(q).ok()),
                c.resources
                    .limits
                    .get("memory")
                    .and_then(|q| parse_bytes(q).ok()),
            ) {
                if kind == "limits" && req > lim {
                    errs.add(
                        format!("{f}.resources.requests.memory"),
                        "must be less than or equal to the memory limit",
                    );
                }
            }
        }
        for (j, m) in c.volume_mounts.iter().enumerate() {
            let mf = format!("{f}.volumeMounts[{j}]");
            if !volume_names.contains(m.name.as_str()) {
                errs.add(
                    format!("{mf}.name"),
                    format!(
                        "{:?} is not a volume of this Pod (add it to volumes)",
                        m.name
                    ),
                );
            }
            if !m.mount_path.starts_with('/') {
                errs.add(format!("{mf}.mountPath"), "must be an absolute path");
            }
        }
        for (j, p) in c.ports.iter().enumerate() {
            if !(1..=65535).contains(&p.container_port) {
                errs.add(
                    format!("{f}.ports[{j}].containerPort"),
                    "must be between 1 and 65535",
                );
            }
        }
    }
}

/// RFC 1123 subdomain: lower-case alphanumerics, '-' and '.', at most 253 characters.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!("{s:?} is longer than 253 characters"));
    }
    if s.split('.').all(|part| dns_label(part).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid name: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// RFC 1123 label: lower-case alphanumerics and '-', at most 63 characters.
pub fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid name: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

fn label_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// `[prefix/]name`, as Kubernetes label keys.
pub fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if dns_subdomain(p).is_err() {
            return Err(format!("label key {k:?}: prefix must be a DNS subdomain"));
        }
    }
    if !label_name_part(name) {
        return Err(format!(
            "label key {k:?}: name must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

pub fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || label_name_part(v) {
        Ok(())
    } else {
        Err(format!(
            "label value {v:?} must be empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;

    fn first_error(yaml: &str) -> String {
        let obj = parse(yaml).unwrap().remove(0);
        validate(&obj).unwrap_err().to_string()
    }

    const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "IMAGE"}]
"#;

    #[test]
    fn valid_deployment_passes() {
        let obj = parse(&DEPLOY.replace("IMAGE", "busybox"))
            .unwrap()
            .remove(0);
        validate(&obj).unwrap();
    }

    #[test]
    fn empty_image_names_object_and_field() {
        assert_eq!(
            first_error(&DEPLOY.replace("IMAGE", "")),
            "Deployment default/web: spec.template.spec.containers[0].image: must not be empty"
        );
    }

    #[test]
    fn selector_must_match_template() {
        let msg = first_error(
            &DEPLOY
                .replace("IMAGE", "b")
                .replace("{app: web}}\n  template", "{app: api}}\n  template"),
        );
        assert!(
            msg.contains("spec.template.metadata.labels: must match spec.selector"),
            "{msg}"
        );
    }

    #[test]
    fn pod_problems_are_all_listed() {
        let msg = first_error(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: Bad_Name}
spec:
  restartPolicy: Sometimes
  containers:
  - name: c
    image: busybox
    resources: {limits: {memory: lots, gpu: "1"}}
    volumeMounts: [{name: data, mountPath: /data}]
"#,
        );
        assert!(msg.starts_with("Pod Bad_Name: metadata.name: "), "{msg}");
        assert!(
            msg.contains("spec.restartPolicy: \"Sometimes\" is not one of"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.containers[0].resources.limits.memory: invalid quantity \"lots\""),
            "{msg}"
        );
        assert!(
            msg.contains("spec.containers[0].resources.limits.gpu: unsupported resource"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.containers[0].volumeMounts[0].name: \"data\" is not a volume"),
            "{msg}"
        );
    }

    #[test]
    fn names_and_labels() {
        assert!(dns_subdomain("web-1.example").is_ok());
        assert!(dns_subdomain("Web").is_err());
        assert!(dns_label("a.b").is_err());
        assert!(label_key("kubernetes.io/arch").is_ok());
        assert!(label_key("-bad").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("has space").is_err());
    }
}
