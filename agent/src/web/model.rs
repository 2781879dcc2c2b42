//! The board page's JSON (`GET /api/board`): everything the page shows, built by one
//! pure function from the agent's latest snapshot and what the request read (clock,
//! disk, log tails). Scripts read the same document; its fields are in README.md.

use std::collections::BTreeMap;
use std::time::SystemTime;

use punnet_api::pod::{self as api, Pod};
use punnet_api::wire::{NodeFacts, PodReport};
use punnet_api::Time;
use serde::Serialize;

use super::doctor::{self, Check};
use super::health::{self, Clock, Storage, Throttling};
use super::history::Series;
use super::redact::Redactor;
use crate::link::LinkHealth;
use crate::podspec::pod_uid;
use crate::podstatus::time;

/// What the agent hands the page after each status change and heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub facts: NodeFacts,
    /// The desired Pods (their specs: images, env sources, limits).
    pub pods: Vec<Pod>,
    /// Their status, and that of Pods still stopping.
    pub reports: Vec<PodReport>,
    pub desired: Desired,
    pub signatures: Signatures,
}

/// The desired state the agent runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// The generation applied; `None` before the first desired state.
    pub generation: Option<u64>,
    pub epoch: u64,
    /// When the controller's message was accepted; `None` while running on the state
    /// restored from disk at start (no message since).
    pub received_at: Option<Time>,
    /// `controller` or `local store` (restored at start: the board works offline).
    pub source: &'static str,
}

/// The signature checks of desired state (issue 5): refusals since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signatures {
    pub has_controller_key: bool,
    pub rejected_total: u64,
    /// By reason: `unsigned`, `bad_signature`, `replayed`, `wrong_node`,
    /// `no_controller_key`, `malformed`.
    pub rejected: BTreeMap<String, u64>,
    pub last_rejection: Option<String>,
}

impl Signatures {
    pub fn of(s: &crate::identity::SignatureStatus) -> Signatures {
        Signatures {
            has_controller_key: s.controller_key.is_some(),
            rejected_total: s.rejected_desired_total,
            rejected: s
                .rejected_desired
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            last_rejection: s.last_rejection.clone(),
        }
    }
}

/// What the request handler read for this answer.
pub struct Input<'a> {
    pub now: SystemTime,
    pub node_name: &'a str,
    pub broker: &'a str,
    pub plaintext: bool,
    pub link: &'a LinkHealth,
    pub snapshot: &'a Snapshot,
    pub clock: &'a Clock,
    pub storage: &'a Storage,
    pub uptime_seconds: Option<u64>,
    pub history: Series,
    /// (Pod uid, container) → its newest log lines, oldest first.
    pub logs: &'a BTreeMap<(String, String), Vec<String>>,
    pub redactor: &'a Redactor,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    pub generated_at: Time,
    pub node: Node,
    pub link: Link,
    pub desired: Desired,
    pub signatures: Signatures,
    pub clock: Clock,
    pub resources: Resources,
    pub storage: Storage,
    /// Raspberry Pi firmware throttling, when the board reports it.
    pub throttling: Option<Throttling>,
    /// The doctor's findings, worst first.
    pub checks: Vec<Check>,
    pub history: Series,
    pub pods: Vec<PodView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    pub board_model: String,
    pub arch: String,
    pub platform: String,
    pub os_image: String,
    pub kernel_version: String,
    pub agent_version: String,
    pub addresses: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub uptime_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub broker: String,
    pub connected: bool,
    /// When it last came up or went down.
    pub since: Option<Time>,
    pub last_error: Option<String>,
    pub connects: u64,
    /// `--allow-plaintext`: the link runs without TLS.
    pub plaintext: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpus: u32,
    /// Thousandths of one CPU, over the last heartbeat.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub memory_used_bytes: u64,
    pub temperature_millicelsius: Option<i64>,
    pub disk_total_bytes: u64,
    pub disk_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`; `Terminating` while a
    /// Pod no longer desired still stops.
    pub phase: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub pod_ip: Option<String>,
    pub host_network: bool,
    pub start_time: Option<Time>,
    pub restarts: i32,
    pub ready_containers: usize,
    pub init_containers: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// `running`, `waiting`, `terminated` or `unknown`.
    pub state: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub ready: bool,
    pub restarts: i32,
    /// How the previous run ended, after a restart.
    pub last_exit_code: Option<i32>,
    pub last_reason: Option<String>,
    pub last_finished_at: Option<Time>,
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    /// Names and sources; a Secret's values never (only which Secret and key).
    pub env: Vec<EnvView>,
    /// The newest log lines, oldest first, Secret values masked.
    pub log: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvView {
    pub name: String,
    /// A literal value from the Pod spec.
    pub value: Option<String>,
    /// Where the value comes from: `secret db/password`, `configmap app/mode`,
    /// `field status.podIP`, `all keys of secret db`.
    pub from: Option<String>,
}

/// The env of a container spec as the page shows it.
pub fn env_view(c: &api::Container, redactor: &Redactor) -> Vec<EnvView> {
    let mut out = Vec::new();
    for e in &c.env_from {
        let prefix = e.prefix.clone().unwrap_or_default();
        let from = match (&e.secret_ref, &e.config_map_ref) {
            (Some(s), _) => format!("all keys of secret {}", s.name),
            (None, Some(m)) => format!("all keys of configmap {}", m.name),
            (None, None) => continue,
        };
        out.push(EnvView {
            name: format!("{prefix}*"),
            value: None,
            from: Some(from),
        });
    }
    for e in &c.env {
        let from = e.value_from.as_ref().map(|f| {
            if let Some(s) = &f.secret_key_ref {
                format!("secret {}/{}", s.name, s.key)
            } else if let Some(m) = &f.config_map_key_ref {
                format!("configmap {}/{}", m.name, m.key)
            } else if let Some(field) = &f.field_ref {
                format!("field {}", field.field_path)
            } else {
                "unknown source".to_string()
            }
        });
        out.push(EnvView {
            name: e.name.clone(),
            // A literal that equals a Secret's value is masked too.
            value: if from.is_some() {
                None
            } else {
                e.value.as_deref().map(|v| redactor.redact(v))
            },
            from,
        });
    }
    out
}

fn state_of(s: &api::ContainerState) -> &'static str {
    if s.running.is_some() {
        "running"
    } else if s.terminated.is_some() {
        "terminated"
    } else if s.waiting.is_some() {
        "waiting"
    } else {
        "unknown"
    }
}

fn container_view(
    status: Option<&api::ContainerStatus>,
    spec: Option<&api::Container>,
    name: &str,
    usage: Option<&punnet_api::wire::ContainerUsage>,
    log: Option<&Vec<String>>,
    redactor: &Redactor,
) -> ContainerView {
    let st = status.map(|s| &s.state);
    let term = st.and_then(|s| s.terminated.as_ref());
    let waiting = st.and_then(|s| s.waiting.as_ref());
    let last = status.and_then(|s| s.last_state.terminated.as_ref());
    ContainerView {
        name: name.to_string(),
        image: spec
            .map(|c| c.image.clone())
            .or_else(|| status.map(|s| s.image.clone()))
            .unwrap_or_default(),
        state: st.map_or("waiting", state_of),
        reason: term
            .and_then(|t| t.reason.clone())
            .or_else(|| waiting.and_then(|w| w.reason.clone()))
            .or_else(|| status.is_none().then(|| "ContainerCreating".to_string())),
        message: term
            .and_then(|t| t.message.clone())
            .or_else(|| waiting.and_then(|w| w.message.clone()))
            .map(|m| redactor.redact(&m)),
        exit_code: term.map(|t| t.exit_code),
        signal: term.and_then(|t| t.signal),
        started_at: st
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at)
            .or_else(|| term.and_then(|t| t.started_at)),
        finished_at: term.and_then(|t| t.finished_at),
        ready: status.is_some_and(|s| s.ready),
        restarts: status.map_or(0, |s| s.restart_count),
        last_exit_code: last.map(|t| t.exit_code),
        last_reason: last.and_then(|t| t.reason.clone()),
        last_finished_at: last.and_then(|t| t.finished_at),
        cpu_millis: usage.map(|u| u.cpu_millis),
        memory_bytes: usage.map(|u| u.memory_bytes),
        memory_limit_bytes: spec
            .and_then(|c| c.resources.limits.get("memory"))
            .and_then(|q| punnet_api::quantity::parse_bytes(q).ok()),
        env: spec.map(|c| env_view(c, redactor)).unwrap_or_default(),
        log: log
            .map(|lines| lines.iter().map(|l| redactor.redact(l)).collect())
            .unwrap_or_default(),
    }
}

/// Containers in spec order (status order for Pods with no spec left), with the
/// container's status, usage and log.
fn containers(
    specs: &[api::Container],
    statuses: &[api::ContainerStatus],
    uid: &str,
    usage: &[punnet_api::wire::ContainerUsage],
    input: &Input,
) -> Vec<ContainerView> {
    let names: Vec<&str> = if specs.is_empty() {
        statuses.iter().map(|s| s.name.as_str()).collect()
    } else {
        specs.iter().map(|c| c.name.as_str()).collect()
    };
    names
        .into_iter()
        .map(|name| {
            container_view(
                statuses.iter().find(|s| s.name == name),
                specs.iter().find(|c| c.name == name),
                name,
                usage.iter().find(|u| u.container == name),
                input.logs.get(&(uid.to_string(), name.to_string())),
                input.redactor,
            )
        })
        .collect()
}

fn pod_view(pod: Option<&Pod>, report: Option<&PodReport>, input: &Input) -> PodView {
    let (namespace, name, uid) = match (pod, report) {
        (Some(p), _) => (
            p.metadata.namespace_or_default().to_string(),
            p.metadata.name.clone(),
            pod_uid(p),
        ),
        (None, Some(r)) => (r.namespace.clone(), r.name.clone(), r.uid.clone()),
        (None, None) => Default::default(),
    };
    let status = report.map(|r| r.status.clone()).unwrap_or_default();
    let usage = report.map(|r| r.usage.as_slice()).unwrap_or_default();
    let spec = pod.map(|p| &p.spec);
    let empty = Vec::new();
    let init = containers(
        spec.map_or(&empty, |s| &s.init_containers),
        &status.init_container_statuses,
        &uid,
        usage,
        input,
    );
    let main = containers(
        spec.map_or(&empty, |s| &s.containers),
        &status.container_statuses,
        &uid,
        usage,
        input,
    );
    let terminating = pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some());
    let phase = if terminating {
        "Terminating".to_string()
    } else {
        status
            .phase
            .clone()
            .unwrap_or_else(|| "Pending".to_string())
    };
    PodView {
        restarts: main.iter().chain(&init).map(|c| c.restarts).sum(),
        ready_containers: main.iter().filter(|c| c.ready).count(),
        namespace,
        name,
        uid,
        phase,
        reason: status.reason.clone(),
        message: status.message.as_deref().map(|m| input.redactor.redact(m)),
        pod_ip: status.pod_ip.clone(),
        host_network: spec.is_some_and(|s| s.host_network == Some(true)),
        start_time: status.start_time,
        init_containers: init,
        containers: main,
    }
}

/// The whole page's data.
pub fn board(input: &Input) -> Board {
    let snap = input.snapshot;
    let f = &snap.facts;
    let mut pods: Vec<PodView> = Vec::new();
    for p in &snap.pods {
        let uid = pod_uid(p);
        let report = snap.reports.iter().find(|r| r.uid == uid);
        pods.push(pod_view(Some(p), report, input));
    }
    for r in &snap.reports {
        if !snap.pods.iter().any(|p| pod_uid(p) == r.uid) {
            pods.push(pod_view(None, Some(r), input));
        }
    }
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let checks = doctor::checks(&doctor::Input {
        facts: f,
        clock: input.clock,
        storage: input.storage,
        plaintext: input.plaintext,
        broker: input.broker,
        connected: input.link.connected,
        link_error: input.link.last_error.as_deref(),
        has_controller_key: snap.signatures.has_controller_key,
        rejected_desired: snap.signatures.rejected_total,
        last_rejection: snap.signatures.last_rejection.as_deref(),
    });
    Board {
        generated_at: time(input.now),
        node: Node {
            name: input.node_name.to_string(),
            board_model: f.board_model.clone(),
            arch: f.arch.clone(),
            platform: f.platform.clone(),
            os_image: f.os_image.clone(),
            kernel_version: f.kernel_version.clone(),
            agent_version: f.agent_version.clone(),
            addresses: f.addresses.clone(),
            labels: f.labels.clone(),
            uptime_seconds: input.uptime_seconds,
        },
        link: Link {
            broker: input.broker.to_string(),
            connected: input.link.connected,
            since: input.link.since.map(time),
            last_error: input.link.last_error.clone(),
            connects: input.link.connects,
            plaintext: input.plaintext,
        },
        desired: snap.desired.clone(),
        signatures: snap.signatures.clone(),
        clock: input.clock.clone(),
        resources: Resources {
            cpus: f.cpus,
            cpu_millis: f.cpu_usage_millis,
            memory_bytes: f.memory_bytes,
            memory_used_bytes: f.memory_bytes.saturating_sub(f.memory_available_bytes),
            temperature_millicelsius: f.temperature_millicelsius,
            disk_total_bytes: f.disk_total_bytes,
            disk_free_bytes: f.disk_free_bytes,
        },
        storage: input.storage.clone(),
        throttling: f.throttled.map(health::throttling),
        checks,
        history: input.history.clone(),
        pods,
    }
}

/// `/proc/uptime`'s first field, in whole seconds.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::manifest::parse;
    use punnet_api::object::Object;

    fn pod(yaml: &str) -> Pod {
        match parse(yaml).unwrap().remove(0) {
            Object::Pod(p) => p,
            _ => unreachable!(),
        }
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, uid: u-web}
spec:
  containers:
  - name: main
    image: busybox:1.36
    env:
    - {name: MODE, value: production}
    - {name: LEAKY, value: hunter22}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: db, key: password}}
    envFrom:
    - secretRef: {name: api-keys}
    resources: {limits: {memory: 32Mi}}
"#;

    fn secret() -> punnet_api::Secret {
        let mut s = punnet_api::Secret::default();
        s.metadata.name = "db".into();
        s.string_data.insert("password".into(), "hunter22".into());
        s.fold_string_data();
        s
    }

    fn running_status() -> api::PodStatus {
        api::PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.42.0.5".into()),
            container_statuses: vec![api::ContainerStatus {
                name: "main".into(),
                ready: true,
                restart_count: 2,
                state: api::ContainerState {
                    running: Some(api::ContainerStateRunning {
                        started_at: Some(Time::now()),
                    }),
                    ..Default::default()
                },
                last_state: api::ContainerState {
                    terminated: Some(api::ContainerStateTerminated {
                        exit_code: 137,
                        reason: Some("OOMKilled".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn build(snapshot: &Snapshot, logs: &BTreeMap<(String, String), Vec<String>>) -> Board {
        let redactor = Redactor::new(&[secret()]);
        let clock = health::clock_from_timex(0, 0, 1000, 10);
        board(&Input {
            now: SystemTime::now(),
            node_name: "pi-1",
            broker: "mqtts://10.0.0.2:8883",
            plaintext: false,
            link: &LinkHealth::default(),
            snapshot,
            clock: &clock,
            storage: &Storage::default(),
            uptime_seconds: Some(90),
            history: Series::default(),
            logs,
            redactor: &redactor,
        })
    }

    #[test]
    fn pods_show_state_restarts_exit_codes_and_logs_without_secrets() {
        let web = pod(WEB);
        let snapshot = Snapshot {
            pods: vec![web],
            reports: vec![PodReport {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u-web".into(),
                status: running_status(),
                usage: vec![punnet_api::wire::ContainerUsage {
                    container: "main".into(),
                    cpu_millis: 12,
                    memory_bytes: 5 << 20,
                }],
            }],
            ..Snapshot::default()
        };
        let logs = BTreeMap::from([(
            ("u-web".to_string(), "main".to_string()),
            vec!["hello".to_string(), "password is hunter22".to_string()],
        )]);
        let b = build(&snapshot, &logs);
        assert_eq!(b.pods.len(), 1);
        let p = &b.pods[0];
        assert_eq!(
            (p.phase.as_str(), p.restarts, p.ready_containers),
            ("Running", 2, 1)
        );
        let c = &p.containers[0];
        assert_eq!(c.state, "running");
        assert_eq!(c.last_exit_code, Some(137));
        assert_eq!(c.last_reason.as_deref(), Some("OOMKilled"));
        assert_eq!(c.memory_limit_bytes, Some(32 << 20));
        assert_eq!(c.memory_bytes, Some(5 << 20));
        assert_eq!(c.log[0], "hello");
        assert_eq!(
            c.log[1],
            format!("password is {}", super::super::redact::MASK)
        );
        let env: Vec<_> = c
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref(), e.from.as_deref()))
            .collect();
        assert!(env.contains(&("MODE", Some("production"), None)), "{env:?}");
        assert!(
            env.contains(&("PASSWORD", None, Some("secret db/password"))),
            "{env:?}"
        );
        assert!(
            env.contains(&("*", None, Some("all keys of secret api-keys"))),
            "{env:?}"
        );
        let json = serde_json::to_string(&b).unwrap();
        assert!(!json.contains("hunter22"), "{json}");
        assert!(json.contains("\"phase\":\"Running\""));
    }

    #[test]
    fn desired_pods_without_status_and_leftovers_show_up() {
        let mut gone = PodReport {
            namespace: "default".into(),
            name: "old".into(),
            uid: "u-old".into(),
            status: running_status(),
            usage: vec![],
        };
        gone.status.phase = Some("Running".into());
        let snapshot = Snapshot {
            pods: vec![pod(WEB)],
            reports: vec![gone],
            ..Snapshot::default()
        };
        let b = build(&snapshot, &BTreeMap::new());
        let phases: Vec<_> = b
            .pods
            .iter()
            .map(|p| (p.name.as_str(), p.phase.as_str()))
            .collect();
        assert_eq!(phases, vec![("old", "Terminating"), ("web", "Pending")]);
        let c = &b.pods[1].containers[0];
        assert_eq!(
            (c.state, c.reason.as_deref()),
            ("waiting", Some("ContainerCreating"))
        );
        assert_eq!(
            b.pods[0].containers[0].name, "main",
            "names from the status"
        );
    }

    #[test]
    fn node_link_and_resources_are_filled() {
        let snapshot = Snapshot {
            facts: NodeFacts {
                memory_bytes: 1000,
                memory_available_bytes: 250,
                cpus: 4,
                ..NodeFacts::default()
            },
            desired: Desired {
                generation: Some(7),
                source: "local store",
                ..Desired::default()
            },
            ..Snapshot::default()
        };
        let b = build(&snapshot, &BTreeMap::new());
        assert_eq!(b.resources.memory_used_bytes, 750);
        assert_eq!(b.node.uptime_seconds, Some(90));
        assert_eq!(b.link.broker, "mqtts://10.0.0.2:8883");
        assert!(!b.link.connected);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["desired"]["generation"], 7);
        assert_eq!(json["desired"]["source"], "local store");
        assert!(json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "controller key"));
        assert_eq!(parse_uptime("12345.67 9999.00\n"), Some(12345));
    }
}
