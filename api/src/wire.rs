//! The internal messages between controller and agents: postcard inside a small
//! versioned envelope. postcard is not self-describing, so a reader cannot skip fields it
//! does not know; the envelope's version is checked first and a mismatch is a clear
//! error, never a garbled decode. Desired state and status are signed (`signing`): the
//! envelope's signature covers its version, kind, payload and the node's name.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::configdata::{ConfigMap, Secret};
use crate::meta::Time;
use crate::pod::{Pod, PodStatus};

/// Bumped whenever any message's encoding changes. 3: desired state and status are
/// signed, and desired state carries the controller database's `epoch`.
pub const PROTOCOL_VERSION: u16 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    DesiredState,
    NodeStatus,
    LogRequest,
    LogChunk,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// First on the wire, so any reader can check it before anything else.
    pub version: u16,
    pub kind: MessageKind,
    pub payload: Vec<u8>,
    /// Empty when unsigned; the signing key depends on the sender (controller or node).
    pub signature: Vec<u8>,
}

#[derive(Debug, Error, PartialEq)]
pub enum WireError {
    #[error("message uses protocol version {got}, newer than this program's {supported}: upgrade this program")]
    NewerVersion { got: u16, supported: u16 },
    #[error("message uses protocol version {got}, older than this program's {supported}: upgrade the sender")]
    OlderVersion { got: u16, supported: u16 },
    #[error("expected a {expected:?} message, got {got:?}")]
    WrongKind {
        expected: MessageKind,
        got: MessageKind,
    },
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("{kind:?} message on node {node}'s topic is not signed: ignored (its sender is not a Punnet controller or agent speaking protocol 3 or newer)")]
    Unsigned { kind: MessageKind, node: String },
    #[error("{kind:?} message on node {node}'s topic has a signature that does not match the trusted key: ignored (forged, copied from another node's topic, or signed with a key that was replaced: re-enrol the node or fix controller.pub)")]
    BadSignature { kind: MessageKind, node: String },
}

pub trait Message: Serialize + DeserializeOwned {
    const KIND: MessageKind;
}

/// The node's whole desired Pod set. Full state, not a delta: one message is enough for
/// a reconnecting agent to be correct.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub node: String,
    /// Increases with every change; an agent ignores a generation older than one it applied.
    pub generation: u64,
    /// The controller database's incarnation: Unix seconds when it was created or last
    /// restored from a backup. Agents order desired state by `(epoch, generation)`, so
    /// after a restore (generations go back) the controller is believed again, while a
    /// replayed message from before the restore is not.
    pub epoch: u64,
    /// Pods bound to this node, status cleared.
    pub pods: Vec<Pod>,
    /// The node's Pod address range (`10.42.3.0/24`), from `Node.spec.podCIDR`; Pods
    /// without `hostNetwork` get their IP from it. `None` until the controller assigns one.
    pub pod_cidr: Option<String>,
    /// The ConfigMaps and Secrets those Pods reference (volumes, env, image pull
    /// secrets), so the agent can start them without asking anyone.
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
}

impl Message for DesiredState {
    const KIND: MessageKind = MessageKind::DesiredState;
}

/// What an agent reports, on change and as its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatusReport {
    pub node: String,
    /// The newest desired generation the agent has applied.
    pub generation_seen: u64,
    pub sent_at: Time,
    pub facts: NodeFacts,
    /// One entry per desired Pod the agent knows of.
    pub pods: Vec<PodReport>,
    /// What happened since the previous report (Pulling, Started, BackOff, …), repeats
    /// folded into one entry with a count, at most `MAX_REPORT_EVENTS`.
    pub events: Vec<AgentEvent>,
}

/// Events one report carries at most; the oldest beyond it are dropped (they are
/// history, and a crash-looping Pod must not grow the status message).
pub const MAX_REPORT_EVENTS: usize = 32;

/// Something the agent did or saw, about one of its Pods (or, with `pod` empty, about
/// the node), as a Kubernetes Event has it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentEvent {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    /// The container it is about, if any.
    pub container: Option<String>,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    pub reason: String,
    pub message: String,
    /// Occurrences since the previous report (at least 1).
    pub count: u32,
}

impl Message for NodeStatusReport {
    const KIND: MessageKind = MessageKind::NodeStatus;
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub hostname: String,
    /// Go's naming, as in `kubernetes.io/arch`: `arm64`, `arm`, `amd64`.
    pub arch: String,
    pub os: String,
    pub os_image: String,
    pub kernel_version: String,
    pub machine_id: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub addresses: Vec<String>,
    pub agent_version: String,
    /// From `punnet-agent --label`; merged into the Node's labels.
    pub labels: BTreeMap<String, String>,
    /// `Raspberry Pi 4 Model B Rev 1.4`, from the device tree; empty elsewhere.
    pub board_model: String,
    /// Whole-node CPU use since the previous report, in thousandths of one CPU.
    pub cpu_usage_millis: u64,
    pub memory_available_bytes: u64,
    /// Of the filesystem holding the agent's data directory.
    pub disk_total_bytes: u64,
    pub disk_free_bytes: u64,
    /// SoC temperature in millidegrees Celsius, when the board reports one.
    pub temperature_millicelsius: Option<i64>,
    /// Raspberry Pi firmware throttling flags (`vcgencmd get_throttled` bits), when known.
    pub throttled: Option<u32>,
    /// 1 or 2.
    pub cgroup_version: u8,
    /// Whether the memory controller is enabled (memory limits can be enforced).
    pub memory_cgroup: bool,
    /// Why it is not, in words a person can act on (`cgroup_disable=memory` on the
    /// kernel command line: add `cgroup_enable=memory cgroup_memory=1` to cmdline.txt).
    pub memory_cgroup_problem: Option<String>,
    /// The CPU variant images are picked for: `arm64`, `arm/v7`, `arm/v6`, `amd64`.
    pub platform: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodReport {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub status: PodStatus,
    /// Per container, from its cgroup (empty when not running).
    pub usage: Vec<ContainerUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    pub container: String,
    /// CPU use since the previous report, thousandths of one CPU.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// Controller → agent: send (part of) a container's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRequest {
    /// Chosen by the controller; replies go to `Topics::log_reply(node, id)`.
    pub id: String,
    pub namespace: String,
    pub pod: String,
    /// `None` when the Pod has one container.
    pub container: Option<String>,
    pub follow: bool,
    pub tail_lines: Option<u64>,
    /// Stops a following request (the HTTP client went away).
    pub cancel: bool,
}

impl Message for LogRequest {
    const KIND: MessageKind = MessageKind::LogRequest;
}

/// Agent → controller: a piece of log text, in order by `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    pub id: String,
    pub seq: u64,
    pub data: Vec<u8>,
    /// No more chunks follow.
    pub done: bool,
    /// Why the log cannot be served (unknown Pod or container), with `done`.
    pub error: Option<String>,
}

impl Message for LogChunk {
    const KIND: MessageKind = MessageKind::LogChunk;
}

/// Encodes a message in an unsigned envelope.
pub fn encode<M: Message>(msg: &M) -> Vec<u8> {
    let payload = postcard::to_stdvec(msg).expect("postcard encoding into a Vec cannot fail");
    encode_envelope(&Envelope {
        version: PROTOCOL_VERSION,
        kind: M::KIND,
        payload,
        signature: Vec::new(),
    })
}

pub fn encode_envelope(env: &Envelope) -> Vec<u8> {
    postcard::to_stdvec(env).expect("postcard encoding into a Vec cannot fail")
}

/// Reads the envelope, checking its version before anything else.
pub fn open(bytes: &[u8]) -> Result<Envelope, WireError> {
    let (version, _) =
        postcard::take_from_bytes::<u16>(bytes).map_err(|e| WireError::Malformed {
            what: "envelope",
            message: e.to_string(),
        })?;
    if version > PROTOCOL_VERSION {
        return Err(WireError::NewerVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    if version < PROTOCOL_VERSION {
        return Err(WireError::OlderVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    postcard::from_bytes(bytes).map_err(|e| WireError::Malformed {
        what: "envelope",
        message: e.to_string(),
    })
}

/// Decodes the payload of an opened envelope as `M`.
pub fn payload<M: Message>(env: &Envelope) -> Result<M, WireError> {
    if env.kind != M::KIND {
        return Err(WireError::WrongKind {
            expected: M::KIND,
            got: env.kind,
        });
    }
    postcard::from_bytes(&env.payload).map_err(|e| WireError::Malformed {
        what: "payload",
        message: e.to_string(),
    })
}

/// `open` then `payload`.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, WireError> {
    payload(&open(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;
    use crate::object::Object;

    fn sample_pod() -> Pod {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, uid: u-1, labels: {app: web}, creationTimestamp: "2026-11-24T17:00:00Z"}
spec:
  nodeName: pi-1
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 5
  volumes: [{name: data, hostPath: {path: /srv/data, type: DirectoryOrCreate}}]
  containers:
  - name: web
    image: busybox:latest
    command: [sh, -c]
    args: ["echo hi; sleep 100"]
    env: [{name: A, value: "1"}, {name: B}]
    resources: {limits: {memory: 64Mi}}
    volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
    ports: [{name: http, containerPort: 80, hostPort: 8080}]
    livenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 5}
    readinessProbe: {tcpSocket: {port: 80}}
    securityContext: {capabilities: {add: [NET_ADMIN]}, runAsUser: 1000}
"#;
        match parse(text).unwrap().remove(0) {
            Object::Pod(p) => p,
            _ => unreachable!(),
        }
    }

    #[test]
    fn desired_state_round_trips() {
        let msg = DesiredState {
            node: "pi-1".into(),
            generation: 42,
            epoch: 1_800_000_000,
            pods: vec![sample_pod()],
            pod_cidr: Some("10.42.0.0/24".into()),
            config_maps: vec![ConfigMap {
                data: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            }],
            secrets: vec![Secret::default()],
        };
        let bytes = encode(&msg);
        assert_eq!(decode::<DesiredState>(&bytes).unwrap(), msg);
    }

    #[test]
    fn status_and_logs_round_trip() {
        let status = PodStatus {
            phase: Some("Running".into()),
            start_time: Some(Time::now()),
            ..PodStatus::default()
        };
        let msg = NodeStatusReport {
            node: "pi-1".into(),
            generation_seen: 7,
            sent_at: Time::now(),
            facts: NodeFacts {
                arch: "arm64".into(),
                cpus: 4,
                memory_bytes: 1 << 30,
                ..Default::default()
            },
            pods: vec![PodReport {
                namespace: "default".into(),
                name: "web-1".into(),
                uid: "u-1".into(),
                status,
                usage: vec![ContainerUsage {
                    container: "web".into(),
                    cpu_millis: 12,
                    memory_bytes: 3 << 20,
                }],
            }],
            events: vec![AgentEvent {
                namespace: "default".into(),
                pod: "web-1".into(),
                uid: "u-1".into(),
                container: Some("web".into()),
                warning: true,
                reason: "BackOff".into(),
                message: "Back-off restarting failed container web in pod web-1_default(u-1)"
                    .into(),
                count: 3,
            }],
        };
        assert_eq!(decode::<NodeStatusReport>(&encode(&msg)).unwrap(), msg);
        let chunk = LogChunk {
            id: "1".into(),
            seq: 3,
            data: b"hello\n".to_vec(),
            done: true,
            error: None,
        };
        assert_eq!(decode::<LogChunk>(&encode(&chunk)).unwrap(), chunk);
    }

    #[test]
    fn newer_version_is_rejected_clearly() {
        let env = Envelope {
            version: PROTOCOL_VERSION + 1,
            kind: MessageKind::DesiredState,
            payload: vec![1, 2, 3],
            signature: vec![],
        };
        let err = decode::<DesiredState>(&encode_envelope(&env)).unwrap_err();
        assert_eq!(
            err,
            WireError::NewerVersion {
                got: PROTOCOL_VERSION + 1,
                supported: PROTOCOL_VERSION
            }
        );
        assert!(err
            .to_string()
            .contains(&format!("newer than this program's {PROTOCOL_VERSION}")));
    }

    #[test]
    fn wrong_kind_and_garbage_are_errors_not_panics() {
        let chunk = LogChunk {
            id: "1".into(),
            seq: 0,
            data: vec![],
            done: true,
            error: None,
        };
        let err = decode::<DesiredState>(&encode(&chunk)).unwrap_err();
        assert!(matches!(err, WireError::WrongKind { .. }));
        assert!(decode::<DesiredState>(&[]).is_err());
        assert!(decode::<DesiredState>(&[1, 0, 200, 200, 200]).is_err());
        let mut bytes = encode(&chunk);
        bytes.truncate(bytes.len() - 2);
        assert!(decode::<LogChunk>(&bytes).is_err());
    }
}
