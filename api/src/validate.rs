//! Validation of objects before they are stored: every problem names the object, the
//! field and what is wrong, e.g.
//! `Deployment default/web: spec.template.spec.containers[0].image: must not be empty`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::configdata::{is_base64, ConfigMap, Secret};
use crate::object::{Object, Resource};
use crate::pod::{
    Container, ExecAction, HttpGetAction, IntOrString, KeyToPath, PodSpec, Probe, SeccompProfile,
    TcpSocketAction, Volume,
};
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
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub(crate) fn finish(self, object: String) -> Result<(), ValidationError> {
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
        Object::ConfigMap(c) => validate_config_map(c),
        Object::Secret(s) => validate_secret(s),
        Object::DaemonSet(d) => crate::daemonset::validate_daemon_set(d),
        Object::Job(j) => crate::job::validate_job(j),
        Object::Namespace(n) => crate::namespace::validate_namespace(n),
        Object::ReplicaSet(r) => crate::replicaset::validate_replica_set(r),
    }
}

/// Kubernetes' limit on a ConfigMap's or Secret's data.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

pub fn validate_config_map(c: &ConfigMap) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    meta(&mut errs, &c.metadata, true);
    let mut size = 0;
    for (k, v) in &c.data {
        if let Err(e) = config_key(k) {
            errs.add(format!("data[{k:?}]"), e);
        }
        size += v.len();
    }
    for (k, v) in &c.binary_data {
        if let Err(e) = config_key(k) {
            errs.add(format!("binaryData[{k:?}]"), e);
        }
        if c.data.contains_key(k) {
            errs.add(format!("binaryData[{k:?}]"), "is also a key of data");
        }
        if !is_base64(v) {
            errs.add(format!("binaryData[{k:?}]"), "must be base64");
        }
        size += v.len() * 3 / 4;
    }
    if size > MAX_DATA_BYTES {
        errs.add(
            "data",
            format!("holds {size} bytes, more than the limit of 1 MiB"),
        );
    }
    errs.finish(c.describe())
}

pub fn validate_secret(s: &Secret) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    meta(&mut errs, &s.metadata, true);
    let mut size = 0;
    for (k, v) in &s.data {
        if let Err(e) = config_key(k) {
            errs.add(format!("data[{k:?}]"), e);
        }
        if !is_base64(v) {
            errs.add(
                format!("data[{k:?}]"),
                "must be base64 (or put the plain text under stringData)",
            );
        }
        size += v.len() * 3 / 4;
    }
    for (k, v) in &s.string_data {
        if let Err(e) = config_key(k) {
            errs.add(format!("stringData[{k:?}]"), e);
        }
        size += v.len();
    }
    if size > MAX_DATA_BYTES {
        errs.add(
            "data",
            format!("holds {size} bytes, more than the limit of 1 MiB"),
        );
    }
    if s.type_.as_deref() == Some(crate::configdata::SECRET_TYPE_DOCKER_CONFIG_JSON) {
        let entries = s.entries();
        match entries.get(crate::configdata::DOCKER_CONFIG_JSON_KEY) {
            None => errs.add(
                "data",
                "a kubernetes.io/dockerconfigjson Secret needs the key .dockerconfigjson",
            ),
            Some(bytes) => {
                if serde_json::from_slice::<serde_json::Value>(bytes).is_err() {
                    errs.add(
                        "data[\".dockerconfigjson\"]",
                        "must be a docker config.json (JSON with \"auths\")",
                    );
                }
            }
        }
    }
    errs.finish(s.describe())
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
    crate::deployment::validate_rollout(&mut errs, &d.spec);
    errs.finish(d.describe())
}

pub fn validate_node(n: &Node) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    meta(&mut errs, &n.metadata, false);
    for (f, m) in crate::taint::validate_taints("spec.taints", &n.spec.taints) {
        errs.add(f, m);
    }
    errs.finish(n.describe())
}

pub(crate) fn meta(errs: &mut Errors, m: &ObjectMeta, namespaced: bool) {
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

pub(crate) fn labels(errs: &mut Errors, field: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if let Err(e) = label_key(k) {
            errs.add(format!("{field}[{k:?}]"), e);
        }
        if let Err(e) = label_value(v) {
            errs.add(format!("{field}[{k:?}]"), e);
        }
    }
}

pub(crate) fn label_selector(errs: &mut Errors, field: &str, sel: &LabelSelector) {
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

pub(crate) fn pod_spec(errs: &mut Errors, field: &str, spec: &PodSpec) {
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
    node_affinity(errs, field, spec);
    for (f, m) in
        crate::taint::validate_tolerations(&format!("{field}.tolerations"), &spec.tolerations)
    {
        errs.add(f, m);
    }

    let mut volume_names = HashSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        volume(errs, &format!("{field}.volumes[{i}]"), v, &mut volume_names);
    }

    let mut names = HashSet::new();
    for (i, c) in spec.init_containers.iter().enumerate() {
        let f = format!("{field}.initContainers[{i}]");
        container(errs, &f, c, &volume_names, &mut names);
        for (probe, name) in [
            (&c.liveness_probe, "livenessProbe"),
            (&c.readiness_probe, "readinessProbe"),
            (&c.startup_probe, "startupProbe"),
        ] {
            if probe.is_some() {
                errs.add(
                    format!("{f}.{name}"),
                    "must not be set for init containers (they run to completion)",
                );
            }
        }
        if c.lifecycle.is_some() {
            errs.add(
                format!("{f}.lifecycle"),
                "must not be set for init containers",
            );
        }
    }
    for (i, c) in spec.containers.iter().enumerate() {
        container(
            errs,
            &format!("{field}.containers[{i}]"),
            c,
            &volume_names,
            &mut names,
        );
    }
    for (i, s) in spec.image_pull_secrets.iter().enumerate() {
        if let Err(e) = dns_subdomain(&s.name) {
            errs.add(format!("{field}.imagePullSecrets[{i}].name"), e);
        }
    }
    if let Some(sc) = &spec.security_context {
        ids(
            errs,
            &format!("{field}.securityContext"),
            sc.run_as_user,
            sc.run_as_group,
        );
        if let Some(p) = &sc.seccomp_profile {
            seccomp(errs, &format!("{field}.securityContext.seccompProfile"), p);
        }
    }
}

fn node_affinity(errs: &mut Errors, field: &str, spec: &PodSpec) {
    let Some(na) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    else {
        return;
    };
    let f = format!("{field}.affinity.nodeAffinity");
    if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
        let rf = format!("{f}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
        if req.node_selector_terms.is_empty() {
            errs.add(&rf, "must have at least one term");
        }
        for (i, t) in req.node_selector_terms.iter().enumerate() {
            for (sub, m) in crate::affinity::check_term(t) {
                errs.add(format!("{rf}[{i}].{sub}"), m);
            }
        }
    }
    let pf = format!("{f}.preferredDuringSchedulingIgnoredDuringExecution");
    for (i, p) in na
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .enumerate()
    {
        if !(1..=100).contains(&p.weight) {
            errs.add(format!("{pf}[{i}].weight"), "must be between 1 and 100");
        }
        for (sub, m) in crate::affinity::check_term(&p.preference) {
            errs.add(format!("{pf}[{i}].preference.{sub}"), m);
        }
    }
}

fn volume<'a>(errs: &mut Errors, f: &str, v: &'a Volume, names: &mut HashSet<&'a str>) {
    if let Err(e) = dns_label(&v.name) {
        errs.add(format!("{f}.name"), e);
    }
    if !names.insert(v.name.as_str()) {
        errs.add(
            format!("{f}.name"),
            format!("{:?} is used by another volume", v.name),
        );
    }
    let sources = [
        v.host_path.is_some(),
        v.empty_dir.is_some(),
        v.config_map.is_some(),
        v.secret.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources == 0 {
        errs.add(
            f,
            "has no source: set one of hostPath, emptyDir, configMap, secret",
        );
    } else if sources > 1 {
        errs.add(
            f,
            "must have exactly one source (hostPath, emptyDir, configMap or secret)",
        );
    }
    if let Some(h) = &v.host_path {
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
    if let Some(e) = &v.empty_dir {
        if let Some(m) = e.medium.as_deref() {
            if !matches!(m, "" | "Memory") {
                errs.add(
                    format!("{f}.emptyDir.medium"),
                    format!("{m:?} is not a medium: use \"\" (node disk) or \"Memory\""),
                );
            }
        }
        if let Some(q) = &e.size_limit {
            if let Err(err) = parse_bytes(q) {
                errs.add(format!("{f}.emptyDir.sizeLimit"), err.to_string());
            }
        }
    }
    if let Some(c) = &v.config_map {
        if let Err(e) = dns_subdomain(&c.name) {
            errs.add(format!("{f}.configMap.name"), e);
        }
        key_paths(errs, &format!("{f}.configMap"), &c.items, c.default_mode);
    }
    if let Some(s) = &v.secret {
        if let Err(e) = dns_subdomain(&s.secret_name) {
            errs.add(format!("{f}.secret.secretName"), e);
        }
        key_paths(errs, &format!("{f}.secret"), &s.items, s.default_mode);
    }
}

fn key_paths(errs: &mut Errors, f: &str, items: &[KeyToPath], default_mode: Option<i32>) {
    if let Some(m) = default_mode {
        if !(0..=0o777).contains(&m) {
            errs.add(
                format!("{f}.defaultMode"),
                "must be between 0 and 0777 (octal)",
            );
        }
    }
    for (i, it) in items.iter().enumerate() {
        if let Err(e) = config_key(&it.key) {
            errs.add(format!("{f}.items[{i}].key"), e);
        }
        if let Err(e) = relative_path(&it.path) {
            errs.add(format!("{f}.items[{i}].path"), e);
        }
        if let Some(m) = it.mode {
            if !(0..=0o777).contains(&m) {
                errs.add(
                    format!("{f}.items[{i}].mode"),
                    "must be between 0 and 0777 (octal)",
                );
            }
        }
    }
}

/// A path inside a volume: relative, no `..` element.
fn relative_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.starts_with('/') {
        return Err("must be a relative path".into());
    }
    if p.split('/').any(|e| e == "..") {
        return Err("must not contain '..'".into());
    }
    Ok(())
}

/// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn config_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    if k == "." || k == ".." {
        return Err(format!("{k:?} is not allowed"));
    }
    if !k
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{k:?} may contain only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

fn ids(errs: &mut Errors, f: &str, user: Option<i64>, group: Option<i64>) {
    for (v, name) in [(user, "runAsUser"), (group, "runAsGroup")] {
        if let Some(v) = v {
            if !(0..=i64::from(u32::MAX - 1)).contains(&v) {
                errs.add(format!("{f}.{name}"), "must be between 0 and 4294967294");
            }
        }
    }
}

fn seccomp(errs: &mut Errors, f: &str, p: &SeccompProfile) {
    match p.type_.as_str() {
        "RuntimeDefault" | "Unconfined" => {}
        "Localhost" => match p.localhost_profile.as_deref() {
            None | Some("") => errs.add(
                format!("{f}.localhostProfile"),
                "must be set for type Localhost (a path under the agent's seccomp directory)",
            ),
            Some(path) => {
                if let Err(e) = relative_path(path) {
                    errs.add(format!("{f}.localhostProfile"), e);
                }
            }
        },
        t => errs.add(
            format!("{f}.type"),
            format!("{t:?} is not one of RuntimeDefault, Unconfined, Localhost"),
        ),
    }
}

fn port(errs: &mut Errors, f: &str, p: &IntOrString, c: &Container) {
    match p {
        IntOrString::Int(n) => {
            if !(1..=65535).contains(n) {
                errs.add(f, "must be between 1 and 65535");
            }
        }
        IntOrString::String(name) => {
            if !c.ports.iter().any(|cp| cp.name.as_deref() == Some(name)) {
                errs.add(
                    f,
                    format!("{name:?} is not the name of one of this container's ports"),
                );
            }
        }
    }
}

fn handler(
    errs: &mut Errors,
    f: &str,
    exec: Option<&ExecAction>,
    http: Option<&HttpGetAction>,
    tcp: Option<&TcpSocketAction>,
    others: usize,
    c: &Container,
) {
    let n = exec.is_some() as usize + http.is_some() as usize + tcp.is_some() as usize + others;
    if n != 1 {
        errs.add(
            f,
            "must have exactly one handler: exec, httpGet or tcpSocket",
        );
    }
    if let Some(e) = exec {
        if e.command.is_empty() {
            errs.add(format!("{f}.exec.command"), "must not be empty");
        }
    }
    if let Some(h) = http {
        port(errs, &format!("{f}.httpGet.port"), &h.port, c);
        if let Some(s) = h.scheme.as_deref() {
            if !matches!(s, "HTTP" | "HTTPS") {
                errs.add(
                    format!("{f}.httpGet.scheme"),
                    format!("{s:?} is not HTTP or HTTPS"),
                );
            }
        }
        if let Some(p) = h.path.as_deref() {
            if !p.is_empty() && !p.starts_with('/') {
                errs.add(format!("{f}.httpGet.path"), "must start with '/'");
            }
        }
    }
    if let Some(t) = tcp {
        port(errs, &format!("{f}.tcpSocket.port"), &t.port, c);
    }
}

fn probe(errs: &mut Errors, f: &str, p: &Probe, c: &Container, success_must_be_one: bool) {
    handler(
        errs,
        f,
        p.exec.as_ref(),
        p.http_get.as_ref(),
        p.tcp_socket.as_ref(),
        0,
        c,
    );
    for (v, name, min) in [
        (p.initial_delay_seconds, "initialDelaySeconds", 0),
        (p.timeout_seconds, "timeoutSeconds", 1),
        (p.period_seconds, "periodSeconds", 1),
        (p.success_threshold, "successThreshold", 1),
        (p.failure_threshold, "failureThreshold", 1),
    ] {
        if let Some(v) = v {
            if v < min {
                errs.add(format!("{f}.{name}"), format!("must be {min} or more"));
            }
        }
    }
    if success_must_be_one && p.success_threshold.is_some_and(|s| s != 1) {
        errs.add(
            format!("{f}.successThreshold"),
            "must be 1 for liveness and startup probes",
        );
    }
}

fn container<'a>(
    errs: &mut Errors,
    f: &str,
    c: &'a Container,
    volume_names: &HashSet<&str>,
    names: &mut HashSet<&'a str>,
) {
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
        if let Some(src) = &e.value_from {
            if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
                errs.add(
                    format!("{f}.env[{j}].valueFrom"),
                    "may not be set when value is set",
                );
            }
            let n = src.config_map_key_ref.is_some() as usize
                + src.secret_key_ref.is_some() as usize
                + src.field_ref.is_some() as usize;
            if n != 1 {
                errs.add(
                    format!("{f}.env[{j}].valueFrom"),
                    "must have exactly one of configMapKeyRef, secretKeyRef, fieldRef",
                );
            }
            for (r, name) in [
                (&src.config_map_key_ref, "configMapKeyRef"),
                (&src.secret_key_ref, "secretKeyRef"),
            ] {
                if let Some(r) = r {
                    if let Err(e) = dns_subdomain(&r.name) {
                        errs.add(format!("{f}.env[{j}].valueFrom.{name}.name"), e);
                    }
                    if let Err(e) = config_key(&r.key) {
                        errs.add(format!("{f}.env[{j}].valueFrom.{name}.key"), e);
                    }
                }
            }
            if let Some(r) = &src.field_ref {
                let p = r.field_path.as_str();
                let known = matches!(
                    p,
                    "metadata.name"
                        | "metadata.namespace"
                        | "metadata.uid"
                        | "spec.nodeName"
                        | "spec.serviceAccountName"
                        | "status.podIP"
                        | "status.hostIP"
                ) || (p.starts_with("metadata.labels['")
                    || p.starts_with("metadata.annotations['"))
                    && p.ends_with("']");
                if !known {
                    errs.add(
                        format!("{f}.env[{j}].valueFrom.fieldRef.fieldPath"),
                        format!("{p:?} is not supported: use metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, status.podIP or status.hostIP"),
                    );
                }
            }
        }
    }
    for (j, e) in c.env_from.iter().enumerate() {
        let n = e.config_map_ref.is_some() as usize + e.secret_ref.is_some() as usize;
        if n != 1 {
            errs.add(
                format!("{f}.envFrom[{j}]"),
                "must have exactly one of configMapRef, secretRef",
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
        if let Some(sp) = m.sub_path.as_deref() {
            if !sp.is_empty() {
                if let Err(e) = relative_path(sp) {
                    errs.add(format!("{mf}.subPath"), e);
                }
            }
        }
    }
    let mut host_ports = HashSet::new();
    for (j, p) in c.ports.iter().enumerate() {
        if !(1..=65535).contains(&p.container_port) {
            errs.add(
                format!("{f}.ports[{j}].containerPort"),
                "must be between 1 and 65535",
            );
        }
        if let Some(proto) = p.protocol.as_deref() {
            if !matches!(proto, "TCP" | "UDP") {
                errs.add(
                    format!("{f}.ports[{j}].protocol"),
                    format!("{proto:?} is not TCP or UDP"),
                );
            }
        }
        if let Some(hp) = p.host_port {
            if !(1..=65535).contains(&hp) {
                errs.add(
                    format!("{f}.ports[{j}].hostPort"),
                    "must be between 1 and 65535",
                );
            } else if !host_ports.insert((hp, p.protocol.clone())) {
                errs.add(
                    format!("{f}.ports[{j}].hostPort"),
                    format!("{hp} is already used by another port of this container"),
                );
            }
        }
    }
    if let Some(p) = &c.liveness_probe {
        probe(errs, &format!("{f}.livenessProbe"), p, c, true);
    }
    if let Some(p) = &c.readiness_probe {
        probe(errs, &format!("{f}.readinessProbe"), p, c, false);
    }
    if let Some(p) = &c.startup_probe {
        probe(errs, &format!("{f}.startupProbe"), p, c, true);
    }
    if let Some(l) = &c.lifecycle {
        for (h, name) in [(&l.post_start, "postStart"), (&l.pre_stop, "preStop")] {
            if let Some(h) = h {
                handler(
                    errs,
                    &format!("{f}.lifecycle.{name}"),
                    h.exec.as_ref(),
                    h.http_get.as_ref(),
                    h.tcp_socket.as_ref(),
                    h.sleep.is_some() as usize,
                    c,
                );
                if let Some(s) = &h.sleep {
                    if s.seconds < 0 {
                        errs.add(
                            format!("{f}.lifecycle.{name}.sleep.seconds"),
                            "must be 0 or more",
                        );
                    }
                }
            }
        }
    }
    if let Some(sc) = &c.security_context {
        let sf = format!("{f}.securityContext");
        ids(errs, &sf, sc.run_as_user, sc.run_as_group);
        if let Some(caps) = &sc.capabilities {
            for (list, name) in [(&caps.add, "add"), (&caps.drop, "drop")] {
                for (k, cap) in list.iter().enumerate() {
                    if crate::capability::parse(cap).is_none()
                        && !(name == "drop" && cap.eq_ignore_ascii_case("ALL"))
                        && !(name == "add" && cap.eq_ignore_ascii_case("ALL"))
                    {
                        errs.add(
                            format!("{sf}.capabilities.{name}[{k}]"),
                            format!("{cap:?} is not a Linux capability (e.g. NET_ADMIN, SYS_TIME)"),
                        );
                    }
                }
            }
        }
        if let Some(p) = &sc.seccomp_profile {
            seccomp(errs, &format!("{sf}.seccompProfile"), p);
        }
        if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
            errs.add(
                format!("{sf}.allowPrivilegeEscalation"),
                "cannot be false when privileged is true",
            );
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

#[cfg(test)]
mod issue3_tests {
    use super::*;
    use crate::manifest::parse;

    fn pod_errors(spec: &str) -> Vec<String> {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec}");
        match parse(&text).unwrap().remove(0) {
            Object::Pod(p) => validate_pod(&p)
                .err()
                .map(|e| {
                    e.errors
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect()
                })
                .unwrap_or_default(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn probes_need_one_handler_and_valid_ports() {
        let errs = pod_errors(
            "  containers:\n  - name: c\n    image: busybox\n    ports: [{name: http, containerPort: 80}]\n    livenessProbe: {httpGet: {port: web}, successThreshold: 2}\n    readinessProbe: {tcpSocket: {port: 80}, exec: {command: [\"true\"]}}\n    startupProbe: {httpGet: {port: http}, periodSeconds: 0}\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("livenessProbe.httpGet.port: \"web\" is not the name")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("livenessProbe.successThreshold: must be 1")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("readinessProbe: must have exactly one handler")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("startupProbe.periodSeconds: must be 1 or more")),
            "{errs:?}"
        );
        assert_eq!(errs.len(), 4, "{errs:?}");
    }

    #[test]
    fn volumes_need_exactly_one_source_and_safe_paths() {
        let errs = pod_errors(
            "  volumes:\n  - {name: a}\n  - {name: b, emptyDir: {medium: Disk}}\n  - {name: c, configMap: {name: x, items: [{key: k, path: ../etc/passwd}]}}\n  - {name: d, secret: {secretName: s, defaultMode: 0644}, emptyDir: {}}\n  containers:\n  - {name: c, image: busybox, volumeMounts: [{name: c, mountPath: /c, subPath: /abs}]}\n",
        );
        assert!(
            errs.iter().any(|e| e.contains("volumes[0]: has no source")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("volumes[1].emptyDir.medium")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("items[0].path: must not contain '..'")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("volumes[3]: must have exactly one source")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("subPath: must be a relative path")),
            "{errs:?}"
        );
    }

    #[test]
    fn security_contexts_and_init_containers_are_checked() {
        let errs = pod_errors(
            "  initContainers:\n  - {name: init, image: busybox, readinessProbe: {exec: {command: [\"true\"]}}}\n  containers:\n  - name: init\n    image: busybox\n    securityContext: {capabilities: {add: [NET_WIZARD]}, privileged: true, allowPrivilegeEscalation: false, seccompProfile: {type: Strict}}\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("initContainers[0].readinessProbe: must not be set")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("containers[0].name: \"init\" is used by another container")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(
                |e| e.contains("capabilities.add[0]: \"NET_WIZARD\" is not a Linux capability")
            ),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("allowPrivilegeEscalation: cannot be false")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("seccompProfile.type")),
            "{errs:?}"
        );
    }

    #[test]
    fn secrets_and_config_maps_check_keys_and_encoding() {
        let objs = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {ok: aGk=, bad: '***', 'a b': aGk=}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: r}\ntype: kubernetes.io/dockerconfigjson\nstringData: {x: y}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\nbinaryData: {k: AAE=}\n").unwrap();
        let msg = |o: &Object| validate(o).unwrap_err().to_string();
        let s = msg(&objs[0]);
        assert!(s.contains("data[\"bad\"]: must be base64"), "{s}");
        assert!(s.contains("data[\"a b\"]"), "{s}");
        assert!(msg(&objs[1]).contains(".dockerconfigjson"));
        assert!(msg(&objs[2]).contains("is also a key of data"));
    }
}
