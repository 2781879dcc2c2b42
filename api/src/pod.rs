//! Pod (core/v1): the unit the scheduler places and the agent runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{ObjectMeta, Time};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    /// `Always` (default), `OnFailure` or `Never`.
    #[serde(default)]
    pub restart_policy: Option<String>,
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
    /// Set by the scheduler (or by the user to bypass it).
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Run to completion, one after another, before the app containers start.
    #[serde(default)]
    pub init_containers: Vec<Container>,
    /// Secrets of type `kubernetes.io/dockerconfigjson` holding registry credentials.
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default)]
    pub security_context: Option<PodSecurityContext>,
    /// Only `nodeAffinity`: see `affinity` for the matching.
    #[serde(default)]
    pub affinity: Option<Affinity>,
    /// Taints of nodes this Pod may be placed on or stay on (see `taint`).
    #[serde(default)]
    pub tolerations: Vec<crate::taint::Toleration>,
}

impl PodSpec {
    pub fn restart_policy(&self) -> RestartPolicy {
        match self.restart_policy.as_deref() {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Kubernetes' default grace period is 30 s.
    pub fn grace_period_seconds(&self) -> u64 {
        self.termination_grace_period_seconds
            .map(|s| s.max(0) as u64)
            .unwrap_or(30)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`; unset means `Always` for a `:latest` or
    /// untagged image and `IfNotPresent` otherwise (see `Container::pull_policy`).
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub resources: ResourceRequirements,
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// `hostPort`s are published on the node (CNI portmap); the rest is informational.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    #[serde(default)]
    pub env_from: Vec<EnvFromSource>,
    #[serde(default)]
    pub liveness_probe: Option<Probe>,
    #[serde(default)]
    pub readiness_probe: Option<Probe>,
    #[serde(default)]
    pub startup_probe: Option<Probe>,
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
}

/// How an image is fetched before a container starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl Container {
    /// The policy with Kubernetes' default: `Always` when the image has no tag or the
    /// tag `latest` (and no digest), `IfNotPresent` otherwise.
    pub fn pull_policy(&self) -> PullPolicy {
        match self.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => {
                if self.image.contains('@') {
                    return PullPolicy::IfNotPresent;
                }
                // A tag follows the last ':' after the last '/' (a ':' before it is a port).
                let last = self.image.rsplit('/').next().unwrap_or(&self.image);
                match last.rsplit_once(':') {
                    Some((_, "latest")) | None => PullPolicy::Always,
                    Some(_) => PullPolicy::IfNotPresent,
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    #[serde(default)]
    pub name: String,
}

/// A port by number or by the name of a container port (`http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl std::fmt::Display for IntOrString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

/// The binary codec (postcard) cannot read untagged values, so it gets a tagged form;
/// JSON and YAML get the bare number or string Kubernetes writes.
#[derive(Serialize, Deserialize)]
enum IntOrStringTagged {
    Int(i32),
    String(String),
}

impl Serialize for IntOrString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self, s.is_human_readable()) {
            (IntOrString::Int(i), true) => s.serialize_i32(*i),
            (IntOrString::String(v), true) => s.serialize_str(v),
            (IntOrString::Int(i), false) => IntOrStringTagged::Int(*i).serialize(s),
            (IntOrString::String(v), false) => IntOrStringTagged::String(v.clone()).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Ok(match IntOrStringTagged::deserialize(d)? {
                IntOrStringTagged::Int(i) => IntOrString::Int(i),
                IntOrStringTagged::String(s) => IntOrString::String(s),
            });
        }
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number or a port name")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecAction {
    #[serde(default)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    /// Default `/`.
    #[serde(default)]
    pub path: Option<String>,
    pub port: IntOrString,
    /// Default: the Pod's IP.
    #[serde(default)]
    pub host: Option<String>,
    /// `HTTP` (default) or `HTTPS`.
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocketAction {
    pub port: IntOrString,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SleepAction {
    pub seconds: i64,
}

/// A health check. Unset timing fields take Kubernetes' defaults (see the accessors).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default)]
    pub exec: Option<ExecAction>,
    #[serde(default)]
    pub http_get: Option<HttpGetAction>,
    #[serde(default)]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default)]
    pub initial_delay_seconds: Option<i32>,
    #[serde(default)]
    pub timeout_seconds: Option<i32>,
    #[serde(default)]
    pub period_seconds: Option<i32>,
    #[serde(default)]
    pub success_threshold: Option<i32>,
    #[serde(default)]
    pub failure_threshold: Option<i32>,
    /// Grace period used when this (liveness or startup) probe kills the container.
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
}

impl Probe {
    pub fn initial_delay(&self) -> u32 {
        self.initial_delay_seconds.unwrap_or(0).max(0) as u32
    }
    /// Default 1 s.
    pub fn timeout(&self) -> u32 {
        self.timeout_seconds.unwrap_or(1).max(1) as u32
    }
    /// Default 10 s.
    pub fn period(&self) -> u32 {
        self.period_seconds.unwrap_or(10).max(1) as u32
    }
    /// Default 1.
    pub fn success_threshold(&self) -> u32 {
        self.success_threshold.unwrap_or(1).max(1) as u32
    }
    /// Default 3.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(3).max(1) as u32
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHandler {
    #[serde(default)]
    pub exec: Option<ExecAction>,
    #[serde(default)]
    pub http_get: Option<HttpGetAction>,
    #[serde(default)]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default)]
    pub sleep: Option<SleepAction>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    #[serde(default)]
    pub post_start: Option<LifecycleHandler>,
    /// Runs before the container gets SIGTERM; counts against its grace period.
    #[serde(default)]
    pub pre_stop: Option<LifecycleHandler>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Capability names with or without `CAP_` (`NET_ADMIN`, `SYS_TIME`, `ALL` for drop).
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfile {
    /// `RuntimeDefault`, `Unconfined` or `Localhost`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub localhost_profile: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(default)]
    pub privileged: Option<bool>,
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub run_as_group: Option<i64>,
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    #[serde(default)]
    pub read_only_root_filesystem: Option<bool>,
    /// Default false in Punnet (no new privileges), unless privileged or CAP_SYS_ADMIN is added.
    #[serde(default)]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    #[serde(default)]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// Pod-wide defaults; a container's own `securityContext` wins field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub run_as_group: Option<i64>,
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    #[serde(default)]
    pub supplemental_groups: Vec<i64>,
    /// Group that owns `emptyDir`, `configMap` and `secret` volume files.
    #[serde(default)]
    pub fs_group: Option<i64>,
    #[serde(default)]
    pub seccomp_profile: Option<SeccompProfile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapEnvSource {
    pub name: String,
    #[serde(default)]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub config_map_ref: Option<ConfigMapEnvSource>,
    #[serde(default)]
    pub secret_ref: Option<ConfigMapEnvSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectFieldSelector {
    /// `metadata.name`, `metadata.namespace`, `metadata.uid`, `spec.nodeName`,
    /// `status.podIP`, `status.hostIP`, `metadata.labels['k']`.
    pub field_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default)]
    pub config_map_key_ref: Option<KeySelector>,
    #[serde(default)]
    pub secret_key_ref: Option<KeySelector>,
    #[serde(default)]
    pub field_ref: Option<ObjectFieldSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub value_from: Option<EnvVarSource>,
}

/// Quantities stay as written (`100m`, `128Mi`); `crate::quantity` parses them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default)]
    pub read_only: Option<bool>,
    /// A path inside the volume to mount instead of its root.
    #[serde(default)]
    pub sub_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: i32,
    #[serde(default)]
    pub host_port: Option<i32>,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(default)]
    pub host_path: Option<HostPathVolumeSource>,
    #[serde(default)]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    #[serde(default)]
    pub config_map: Option<ConfigMapVolumeSource>,
    #[serde(default)]
    pub secret: Option<SecretVolumeSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirVolumeSource {
    /// `""` (node disk) or `Memory` (tmpfs).
    #[serde(default)]
    pub medium: Option<String>,
    /// A quantity (`64Mi`): the tmpfs size for `Memory`; for disk, exceeding it evicts the Pod.
    #[serde(default)]
    pub size_limit: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    #[serde(default, deserialize_with = "file_mode")]
    pub mode: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVolumeSource {
    pub name: String,
    #[serde(default)]
    pub items: Vec<KeyToPath>,
    /// Default 0644.
    #[serde(default, deserialize_with = "file_mode")]
    pub default_mode: Option<i32>,
    #[serde(default)]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolumeSource {
    pub secret_name: String,
    #[serde(default)]
    pub items: Vec<KeyToPath>,
    /// Default 0644.
    #[serde(default, deserialize_with = "file_mode")]
    pub default_mode: Option<i32>,
    #[serde(default)]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPathVolumeSource {
    pub path: String,
    /// `""`, `DirectoryOrCreate`, `Directory`, `FileOrCreate`, `File`, `Socket`,
    /// `CharDevice`, `BlockDevice`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub conditions: Vec<PodCondition>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
    #[serde(default)]
    pub start_time: Option<Time>,
    #[serde(default)]
    pub init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    pub container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodIp {
    pub ip: String,
}

pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const UNKNOWN: &str = "Unknown";
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    /// `PodScheduled`, `Ready`, `ContainersReady`, `Initialized`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub last_transition_time: Option<Time>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    #[serde(default)]
    pub state: ContainerState,
    #[serde(default)]
    pub last_state: ContainerState,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default)]
    pub image: String,
    #[serde(default, rename = "imageID")]
    pub image_id: String,
    #[serde(default, rename = "containerID")]
    pub container_id: Option<String>,
    #[serde(default)]
    pub started: Option<bool>,
}

/// Exactly one of the three is set; none means the state is not known yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    #[serde(default)]
    pub waiting: Option<ContainerStateWaiting>,
    #[serde(default)]
    pub running: Option<ContainerStateRunning>,
    #[serde(default)]
    pub terminated: Option<ContainerStateTerminated>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateWaiting {
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateRunning {
    #[serde(default)]
    pub started_at: Option<Time>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateTerminated {
    pub exit_code: i32,
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub started_at: Option<Time>,
    #[serde(default)]
    pub finished_at: Option<Time>,
}

impl Pod {
    /// The phase, `Pending` when nothing has reported yet.
    pub fn phase(&self) -> &str {
        self.status.phase.as_deref().unwrap_or(phase::PENDING)
    }

    /// Whether the agent reports every container ready (the `Ready` condition).
    pub fn is_ready(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }

    /// The phase a person should see: `kubectl get pods` STATUS column logic (waiting or
    /// terminated reasons win over the bare phase, `Terminating` while being deleted).
    pub fn display_status(&self) -> String {
        if self.metadata.deletion_timestamp.is_some() {
            return "Terminating".into();
        }
        let mut status = self
            .status
            .reason
            .clone()
            .unwrap_or_else(|| self.phase().to_string());
        if let Some(init) = self.init_status() {
            return init;
        }
        for cs in &self.status.container_statuses {
            if let Some(w) = &cs.state.waiting {
                if let Some(r) = &w.reason {
                    if r != "ContainerCreating" || status == phase::PENDING {
                        status = r.clone();
                    }
                }
            } else if let Some(t) = &cs.state.terminated {
                status = t
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("ExitCode:{}", t.exit_code));
            }
        }
        status
    }

    /// While init containers run (or after one failed): `Init:1/3`, `Init:Error`,
    /// `Init:CrashLoopBackOff`, `Init:ExitCode:2`, as kubectl shows it. `None` once
    /// they all succeeded.
    fn init_status(&self) -> Option<String> {
        let total = self.spec.init_containers.len();
        for (i, cs) in self.status.init_container_statuses.iter().enumerate() {
            if let Some(t) = &cs.state.terminated {
                if t.exit_code == 0 {
                    continue;
                }
                return Some(match (&t.reason, t.signal) {
                    (Some(r), _) if !r.is_empty() => format!("Init:{r}"),
                    (_, Some(sig)) if sig != 0 => format!("Init:Signal:{sig}"),
                    _ => format!("Init:ExitCode:{}", t.exit_code),
                });
            }
            if let Some(r) = cs.state.waiting.as_ref().and_then(|w| w.reason.as_ref()) {
                if !r.is_empty() && r != "PodInitializing" {
                    return Some(format!("Init:{r}"));
                }
            }
            return Some(format!("Init:{i}/{total}"));
        }
        None
    }
}

/// File modes as YAML 1.1 (and so kubectl) reads them: `0644` is octal. A YAML 1.2
/// parser hands such a value over as the string "0644"; decimal numbers stay decimal.
fn file_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    if !d.is_human_readable() {
        return Option::<i32>::deserialize(d);
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Int(i32),
        Text(String),
    }
    match Option::<Mode>::deserialize(d)? {
        None => Ok(None),
        Some(Mode::Int(i)) => Ok(Some(i)),
        Some(Mode::Text(t)) => {
            let digits = t.strip_prefix("0o").unwrap_or(&t);
            i32::from_str_radix(digits, 8).map(Some).map_err(|_| {
                serde::de::Error::custom(format!("{t:?} is not a file mode (octal, like 0644)"))
            })
        }
    }
}

/// Where a Pod may run, by node labels. Kubernetes' `podAffinity` and
/// `podAntiAffinity` are not supported: they are unknown fields, refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    #[serde(default)]
    pub node_affinity: Option<NodeAffinity>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinity {
    /// The Pod runs only on a node matching one of the terms.
    #[serde(default)]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    /// Nodes matching a term get its weight added to their score.
    #[serde(default)]
    pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
}

/// Terms are ORed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    #[serde(default)]
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// Requirements are ANDed; an empty term matches no node, as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    #[serde(default)]
    pub match_expressions: Vec<NodeSelectorRequirement>,
    /// Only the field `metadata.name` (with `In` / `NotIn`), as in Kubernetes.
    #[serde(default)]
    pub match_fields: Vec<NodeSelectorRequirement>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferredSchedulingTerm {
    /// 1 to 100.
    pub weight: i32,
    pub preference: NodeSelectorTerm,
}

#[cfg(test)]
mod display_status_tests {
    use super::*;

    fn terminated(code: i32, reason: Option<&str>) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: reason.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn status(name: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state,
            ..Default::default()
        }
    }

    #[test]
    fn init_containers_show_progress_and_failures() {
        let mut p = Pod::default();
        p.spec.init_containers = vec![Container::default(), Container::default()];
        p.status.phase = Some("Pending".into());
        assert_eq!(p.display_status(), "Pending", "nothing reported yet");
        p.status.init_container_statuses = vec![
            status("a", terminated(0, Some("Completed"))),
            status(
                "b",
                ContainerState {
                    running: Some(Default::default()),
                    ..Default::default()
                },
            ),
        ];
        assert_eq!(p.display_status(), "Init:1/2");
        p.status.init_container_statuses[1] = status(
            "b",
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: None,
                }),
                ..Default::default()
            },
        );
        assert_eq!(p.display_status(), "Init:CrashLoopBackOff");
        p.status.init_container_statuses[1] = status("b", terminated(2, None));
        assert_eq!(p.display_status(), "Init:ExitCode:2");
        p.status.init_container_statuses[1] = status("b", terminated(0, None));
        p.status.phase = Some("Running".into());
        assert_eq!(
            p.display_status(),
            "Running",
            "all done: the app containers count"
        );
    }
}
