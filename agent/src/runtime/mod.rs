//! The agent's one boundary to containers: the `Runtime` trait the reconciler drives,
//! and the plain values that cross it. The real implementation runs each container
//! from a per-container shim process (libcontainer never runs inside the tokio
//! process, see FACTS.md); `fake` records calls for the reconciler's unit tests.

pub(crate) mod host;
pub(crate) mod layout;
pub mod logfmt;
mod reaper;
pub(crate) mod seccomp;
mod shim_runtime;
pub(crate) mod spec;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use reaper::{become_subreaper, reap_children};
pub use shim_runtime::ShimRuntime;

/// Everything needed to run one container once. The agent builds it from a Pod's
/// container spec; the runtime turns it into an OCI bundle and hands it to a shim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Unique id of this run of the container (state dir, cgroup path, libcontainer id).
    /// `[a-z0-9-]`, at most 64 characters. A restart is a new id.
    pub id: String,
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_name: String,
    /// How many times this Pod's container ran before this run; kept with the
    /// container so a restarted agent recovers restart counts from what it finds.
    pub restart_count: u32,
    /// The image reference as written in the Pod spec (`busybox:1.36`, `docker.io/library/busybox`).
    pub image: String,
    /// Kubernetes semantics: `command` replaces the image's Entrypoint, `args` its Cmd.
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Added to (and overriding) the image's environment.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
    pub mounts: Vec<BindMount>,
    /// Shares the host's network (and UTS) namespace.
    pub host_network: bool,
    /// The Pod's network namespace (set up by CNI) to join; `None` without host network
    /// gives the container a namespace of its own with only `lo`.
    #[serde(default)]
    pub netns_path: Option<PathBuf>,
    /// Device nodes made in the container's /dev and allowed in its device cgroup.
    #[serde(default)]
    pub devices: Vec<DeviceNode>,
    #[serde(default)]
    pub security: SecuritySettings,
    /// Lifecycle hooks, kept with the container: preStop still runs when the Pod is
    /// gone from the desired state.
    #[serde(default)]
    pub hooks: Hooks,
    /// SIGTERM, then SIGKILL after this long, when the container is stopped.
    pub grace_period: Duration,
    /// Where the shim appends the container's stdout/stderr, CRI log format.
    pub log_path: PathBuf,
}

/// A container's postStart and preStop handlers, with what resolving them needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hooks {
    pub post_start: Option<punnet_api::pod::LifecycleHandler>,
    pub pre_stop: Option<punnet_api::pod::LifecycleHandler>,
    /// For named ports in httpGet handlers.
    pub ports: Vec<punnet_api::pod::ContainerPort>,
    /// Default host of httpGet handlers.
    pub pod_ip: Option<String>,
}

/// How a container is confined; `Default` is what a Pod without `securityContext` gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySettings {
    /// All capabilities and devices, no seccomp, no masked paths.
    pub privileged: bool,
    /// Override the image's user and group.
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    /// Refuse to start when the process would run as uid 0.
    pub run_as_non_root: bool,
    /// Added to the user's groups (`supplementalGroups` and `fsGroup`).
    pub supplemental_groups: Vec<u32>,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    /// Canonical `CAP_*` names.
    pub capabilities: Vec<String>,
    pub seccomp: Seccomp,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            privileged: false,
            run_as_user: None,
            run_as_group: None,
            run_as_non_root: false,
            supplemental_groups: Vec::new(),
            read_only_root: false,
            no_new_privileges: true,
            capabilities: punnet_api::capability::DEFAULT
                .iter()
                .map(|c| c.to_string())
                .collect(),
            seccomp: Seccomp::RuntimeDefault,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    RuntimeDefault,
    Unconfined,
    /// An OCI `linux.seccomp` JSON document on the node.
    Localhost(PathBuf),
}

/// A host device node given to a container (a `hostPath` volume of type `CharDevice`
/// or `BlockDevice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    pub container_path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    /// Permission bits of the host node.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// One container the runtime knows of, running or exited (exited ones stay until `remove`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub config: ContainerConfig,
    pub state: ContainerState,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    Running {
        pid: i32,
        started_at: SystemTime,
    },
    Exited {
        exit_code: i32,
        reason: ExitReason,
        started_at: Option<SystemTime>,
        finished_at: SystemTime,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// Exit code 0.
    Completed,
    /// Non-zero exit code, or killed by a signal.
    Error,
    /// Killed by the kernel for exceeding its memory limit (exit code 137).
    OomKilled,
    /// The container could not be created or started; the message says why.
    StartError,
    /// The shim died without recording an exit status (its container is gone with it).
    Lost,
}

impl ExitReason {
    /// The reason string Kubernetes shows in `state.terminated.reason`.
    pub fn as_k8s_reason(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OomKilled => "OOMKilled",
            ExitReason::StartError => "StartError",
            ExitReason::Lost => "ContainerStatusUnknown",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {image:?} is not in this node's image store: {hint}")]
    ImageNotPresent { image: String, hint: String },
    #[error("container {id}: {message}")]
    Start { id: String, message: String },
    #[error("container {id} not found")]
    NotFound { id: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The narrow trait between the reconciler and containers. Calls are blocking and
/// short (start returns once the container's process runs); call them from
/// `spawn_blocking` in async code.
pub trait Runtime: Send + Sync + 'static {
    /// Creates and starts the container; returns once it runs (or fails to).
    fn start(&self, config: &ContainerConfig) -> Result<ContainerInfo, RuntimeError>;
    /// Asks a running container to stop: SIGTERM, then SIGKILL after its grace period.
    /// Returns at once; the container shows as `Exited` in a later `list`.
    fn stop(&self, id: &str) -> Result<(), RuntimeError>;
    /// `stop` with another grace period than the container's own (a failed probe's
    /// `terminationGracePeriodSeconds`).
    fn stop_with_grace(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let _ = grace;
        self.stop(id)
    }
    /// Forgets an exited container: its state, root filesystem and cgroup. Its log file stays
    /// (the agent deletes a Pod's logs when it deletes the Pod). Stops it first if it still runs.
    fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every container this runtime knows of, including those started before an agent restart.
    fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError>;
}

pub mod fake;
