//! What the fleet page shows, built from plain objects without I/O: one row per node,
//! workload, Pod and Event, with the warnings a person should act on worded with
//! their fix. Nothing here reads a Secret or a container's environment, so no Secret
//! value can reach the page.

use std::collections::BTreeMap;

use punnet_api::wire::NodeFacts;
use punnet_api::{ContainerState, DaemonSet, Deployment, Event, Job, Node, Pod, Time};
use serde::Serialize;

use crate::history::Series;
use crate::nodesync::facts::{
    ANNOTATION_BOARD_MODEL, ANNOTATION_PLATFORM, CONDITION_MEMORY_CGROUP,
};
use crate::signing::Rejection;

/// A warning on a node, in words that say what to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    /// `warn` or `bad`.
    pub level: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    pub cpu_millis: u64,
    pub memory_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub temperature_celsius: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    pub ready: bool,
    /// The latest heartbeat or status report.
    pub last_contact: Option<Time>,
    pub unschedulable: bool,
    pub board: String,
    pub arch: String,
    pub platform: String,
    pub os_image: String,
    pub kernel: String,
    pub agent_version: String,
    pub address: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    /// The last report's figures; absent until the node has reported.
    pub usage: Option<NodeUsage>,
    pub history: Series,
    pub warnings: Vec<Warning>,
    /// Status reports refused since the controller started, by reason
    /// (`unknown_node`, `unsigned`, `bad_signature`).
    pub rejected: BTreeMap<&'static str, u64>,
    /// `namespace/name` of the Pods bound to it.
    pub pods: Vec<String>,
}

/// What a node report says plus what the store says.
pub struct NodeInputs<'a> {
    pub node: &'a Node,
    pub report: Option<(Time, NodeFacts)>,
    pub history: Series,
    pub rejected: [u64; 3],
    pub pods: Vec<String>,
}

pub fn node_view(i: NodeInputs<'_>) -> NodeView {
    let node = i.node;
    let info = &node.status.node_info;
    let facts = i.report.as_ref().map(|(_, f)| f);
    let heartbeat = node.condition("Ready").and_then(|c| c.last_heartbeat_time);
    let last_contact = match (heartbeat, i.report.as_ref().map(|(t, _)| *t)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let annotation = |k: &str| node.metadata.annotations.get(k).cloned();
    NodeView {
        name: node.metadata.name.clone(),
        ready: node.is_ready(),
        last_contact,
        unschedulable: node.is_unschedulable(),
        board: annotation(ANNOTATION_BOARD_MODEL)
            .or_else(|| facts.map(|f| f.board_model.clone()))
            .unwrap_or_default(),
        arch: info.architecture.clone(),
        // The agent's own words first (`linux/arm/v7`); the annotation for a node that
        // has not reported since the controller started.
        platform: facts
            .map(|f| f.platform.clone())
            .filter(|p| !p.is_empty())
            .or_else(|| annotation(ANNOTATION_PLATFORM))
            .unwrap_or_default(),
        os_image: info.os_image.clone(),
        kernel: info.kernel_version.clone(),
        agent_version: info.kubelet_version.clone(),
        address: node
            .status
            .addresses
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone())
            .unwrap_or_default(),
        cpus: facts.map(|f| u64::from(f.cpus)).unwrap_or_else(|| {
            let cpu = node.status.capacity.get("cpu");
            cpu.and_then(|v| v.parse().ok()).unwrap_or_default()
        }),
        memory_bytes: facts.map(|f| f.memory_bytes).unwrap_or_default(),
        usage: facts.map(|f| NodeUsage {
            cpu_millis: f.cpu_usage_millis,
            memory_used_bytes: f.memory_bytes.saturating_sub(f.memory_available_bytes),
            disk_total_bytes: f.disk_total_bytes,
            disk_used_bytes: f.disk_total_bytes.saturating_sub(f.disk_free_bytes),
            temperature_celsius: f.temperature_millicelsius.map(|t| t as f64 / 1000.0),
        }),
        history: i.history,
        warnings: warnings(node, facts),
        rejected: Rejection::ALL
            .iter()
            .zip(i.rejected)
            .map(|(why, n)| (why.label(), n))
            .collect(),
        pods: i.pods,
    }
}

/// Raspberry Pi firmware throttling bits (`vcgencmd get_throttled`): now, then "since boot".
const UNDER_VOLTAGE: u32 = 1 << 0;
const FREQ_CAPPED: u32 = 1 << 1;
const THROTTLED: u32 = 1 << 2;
const SOFT_TEMP_LIMIT: u32 = 1 << 3;
const UNDER_VOLTAGE_SINCE_BOOT: u32 = 1 << 16;
const THROTTLED_SINCE_BOOT: u32 = 1 << 18;

/// Above this the SoC is about to throttle (the firmware's soft limit is 80 °C).
const HOT_CELSIUS: i64 = 75;
/// Less free disk than this share is worth a warning (images and logs stop fitting).
const LOW_DISK_PERCENT: u64 = 10;

/// The node's problems a person can fix, each with its fix.
pub fn warnings(node: &Node, facts: Option<&NodeFacts>) -> Vec<Warning> {
    let mut out = Vec::new();
    let warn = |text: String| Warning {
        level: "warn",
        text,
    };
    let bad = |text: String| Warning { level: "bad", text };
    if let Some(ready) = node.condition("Ready").filter(|c| c.status != "True") {
        out.push(bad(format!(
            "not ready: {}",
            ready
                .message
                .clone()
                .or_else(|| ready.reason.clone())
                .unwrap_or_else(|| "the node has not reported".into())
        )));
    }
    if let Some(c) = node
        .condition(CONDITION_MEMORY_CGROUP)
        .filter(|c| c.status == "True")
    {
        // The agent's own words name the exact fix (`cgroup_enable=memory` in cmdline.txt).
        out.push(warn(format!(
            "memory cgroup disabled: memory limits are not enforced — {}",
            c.message.clone().unwrap_or_default()
        )));
    }
    if node.is_unschedulable() {
        out.push(warn(
            "cordoned: no new Pods are placed here (`punnet uncordon` lets them back)".into(),
        ));
    }
    let Some(f) = facts else { return out };
    if let Some(bits) = f.throttled {
        if bits & UNDER_VOLTAGE != 0 {
            out.push(bad("under-voltage now: the power supply is too weak — use the official supply (5 V 3 A for a Pi 4, 5 V 5 A for a Pi 5) and a short, thick cable".into()));
        } else if bits & UNDER_VOLTAGE_SINCE_BOOT != 0 {
            out.push(warn(
                "under-voltage has occurred since boot: check the power supply and cable".into(),
            ));
        }
        if bits & (THROTTLED | FREQ_CAPPED | SOFT_TEMP_LIMIT) != 0 {
            out.push(bad("the CPU is throttled now (heat or power): add a heatsink or fan, or a stronger power supply".into()));
        } else if bits & THROTTLED_SINCE_BOOT != 0 {
            out.push(warn(
                "the CPU has been throttled since boot: improve cooling".into(),
            ));
        }
    }
    if let Some(t) = f
        .temperature_millicelsius
        .filter(|t| *t >= HOT_CELSIUS * 1000)
    {
        out.push(warn(format!(
            "hot: {:.1} °C (throttling starts at 80 °C): add a heatsink or fan",
            t as f64 / 1000.0
        )));
    }
    if f.disk_total_bytes > 0 && f.disk_free_bytes * 100 < f.disk_total_bytes * LOW_DISK_PERCENT {
        out.push(warn(format!(
            "disk almost full: {} MiB free of {} MiB — remove unused images or use a larger SD card",
            f.disk_free_bytes >> 20,
            f.disk_total_bytes >> 20
        )));
    }
    out
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub node: Option<String>,
    pub ready: String,
    pub restarts: i32,
    pub created: Option<Time>,
    pub images: Vec<String>,
    /// What the Pod waits for, e.g. `ContainerCreating: pulling image "…" 45%`.
    pub waiting: Option<String>,
    pub deleting: bool,
}

pub fn pod_row(pod: &Pod) -> PodRow {
    let statuses = &pod.status.container_statuses;
    let waiting = statuses
        .iter()
        .chain(&pod.status.init_container_statuses)
        .find_map(|s| s.state.waiting.as_ref())
        .map(|w| {
            let reason = w.reason.clone().unwrap_or_default();
            match &w.message {
                Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                _ => reason,
            }
        })
        .filter(|s| !s.is_empty());
    PodRow {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone(),
        phase: pod.status.phase.clone().unwrap_or_else(|| "Pending".into()),
        node: pod.spec.node_name.clone(),
        ready: format!(
            "{}/{}",
            statuses.iter().filter(|s| s.ready).count(),
            pod.spec.containers.len()
        ),
        restarts: statuses.iter().map(|s| s.restart_count).sum(),
        created: pod.metadata.creation_timestamp,
        images: pod
            .spec
            .containers
            .iter()
            .map(|c| c.image.clone())
            .collect(),
        waiting,
        deleting: pod.metadata.deletion_timestamp.is_some(),
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRow {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    /// `Available`, `Progressing`, `Complete`, `Failed`, `Running`, `Degraded`.
    pub state: String,
    pub message: Option<String>,
    pub created: Option<Time>,
}

pub fn deployment_row(d: &Deployment) -> WorkloadRow {
    let desired = d.spec.replicas.unwrap_or(1);
    let s = &d.status;
    let progressing = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing");
    let stalled = progressing.is_some_and(|c| c.status == "False");
    let state = if stalled {
        "Failed"
    } else if s.updated_replicas < desired || s.replicas > desired || s.ready_replicas < desired {
        "Progressing"
    } else {
        "Available"
    };
    WorkloadRow {
        kind: "Deployment",
        namespace: d.metadata.namespace.clone().unwrap_or_default(),
        name: d.metadata.name.clone(),
        desired,
        ready: s.ready_replicas,
        updated: s.updated_replicas,
        state: state.into(),
        message: progressing
            .filter(|_| state != "Available")
            .and_then(|c| c.message.clone()),
        created: d.metadata.creation_timestamp,
    }
}

pub fn daemonset_row(d: &DaemonSet) -> WorkloadRow {
    let s = &d.status;
    let state = if s.updated_number_scheduled < s.desired_number_scheduled
        || s.number_ready < s.desired_number_scheduled
    {
        "Progressing"
    } else {
        "Available"
    };
    WorkloadRow {
        kind: "DaemonSet",
        namespace: d.metadata.namespace.clone().unwrap_or_default(),
        name: d.metadata.name.clone(),
        desired: s.desired_number_scheduled,
        ready: s.number_ready,
        updated: s.updated_number_scheduled,
        state: state.into(),
        message: None,
        created: d.metadata.creation_timestamp,
    }
}

pub fn job_row(j: &Job) -> WorkloadRow {
    let s = &j.status;
    let finished = s
        .conditions
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    WorkloadRow {
        kind: "Job",
        namespace: j.metadata.namespace.clone().unwrap_or_default(),
        name: j.metadata.name.clone(),
        desired: j.spec.completions.unwrap_or(1),
        ready: s.succeeded,
        updated: s.active,
        state: finished
            .map(|c| c.type_.clone())
            .unwrap_or_else(|| "Running".into()),
        message: finished.and_then(|c| c.message.clone()),
        created: j.metadata.creation_timestamp,
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    /// `Pod/default/web-1`, `Node/pi-1`.
    pub object: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub last: Option<Time>,
}

pub fn event_row(e: &Event) -> EventRow {
    let o = &e.involved_object;
    let object = match &o.namespace {
        Some(ns) if !ns.is_empty() => format!("{}/{ns}/{}", o.kind, o.name),
        _ => format!("{}/{}", o.kind, o.name),
    };
    EventRow {
        object,
        type_: e.type_.clone(),
        reason: e.reason.clone(),
        message: e.message.clone(),
        count: e.count,
        last: e.last_timestamp.or(e.first_timestamp),
    }
}

/// Events newest first, those whose object contains `filter` (case-insensitive; all
/// when empty), at most `limit`.
pub fn events(all: &[Event], filter: &str, limit: usize) -> Vec<EventRow> {
    let filter = filter.trim().to_lowercase();
    let mut rows: Vec<EventRow> = all
        .iter()
        .map(event_row)
        .filter(|r| filter.is_empty() || r.object.to_lowercase().contains(&filter))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.last));
    rows.truncate(limit);
    rows
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub init: bool,
    /// `Running`, `Waiting` or `Terminated`.
    pub state: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    pub started: Option<Time>,
    pub finished: Option<Time>,
    pub ready: bool,
    pub restarts: i32,
    /// The previous run's end, when it restarted.
    pub last_exit_code: Option<i32>,
    pub last_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDetail {
    #[serde(flatten)]
    pub row: PodRow,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub started: Option<Time>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub containers: Vec<ContainerView>,
    pub events: Vec<EventRow>,
}

pub fn pod_detail(pod: &Pod, events: &[Event]) -> PodDetail {
    let mut containers = Vec::new();
    for (specs, statuses, init) in [
        (
            &pod.spec.init_containers,
            &pod.status.init_container_statuses,
            true,
        ),
        (&pod.spec.containers, &pod.status.container_statuses, false),
    ] {
        for c in specs {
            let s = statuses.iter().find(|s| s.name == c.name);
            let state = s.map(|s| &s.state);
            let (kind, reason, message, exit_code, started, finished) = match state {
                Some(ContainerState {
                    running: Some(r), ..
                }) => ("Running", None, None, None, r.started_at, None),
                Some(ContainerState {
                    terminated: Some(t),
                    ..
                }) => (
                    "Terminated",
                    t.reason.clone(),
                    t.message.clone(),
                    Some(t.exit_code),
                    t.started_at,
                    t.finished_at,
                ),
                Some(st) => {
                    let w = st.waiting.clone().unwrap_or_default();
                    ("Waiting", w.reason, w.message, None, None, None)
                }
                None => (
                    "Waiting",
                    Some("NotReported".into()),
                    None,
                    None,
                    None,
                    None,
                ),
            };
            let last = s.and_then(|s| s.last_state.terminated.as_ref());
            containers.push(ContainerView {
                name: c.name.clone(),
                image: c.image.clone(),
                init,
                state: kind.into(),
                reason,
                message,
                exit_code,
                started,
                finished,
                ready: s.is_some_and(|s| s.ready),
                restarts: s.map(|s| s.restart_count).unwrap_or_default(),
                last_exit_code: last.map(|t| t.exit_code),
                last_reason: last.and_then(|t| t.reason.clone()),
            });
        }
    }
    PodDetail {
        row: pod_row(pod),
        pod_ip: pod.status.pod_ip.clone(),
        host_ip: pod.status.host_ip.clone(),
        started: pod.status.start_time,
        reason: pod.status.reason.clone(),
        message: pod.status.message.clone(),
        owner: pod
            .metadata
            .owner_references
            .first()
            .map(|o| format!("{}/{}", o.kind, o.name)),
        labels: pod.metadata.labels.clone(),
        containers,
        events: self::events(events, "", 50),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{
        Container, ContainerState, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, NodeCondition, ObjectReference,
    };

    fn node(ready: bool) -> Node {
        let mut n = Node::default();
        n.metadata.name = "pi-1".into();
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "Unknown" }.into(),
            message: Some("no status for 60s".into()),
            ..Default::default()
        });
        n
    }

    #[test]
    fn node_warnings_carry_their_fix() {
        let mut n = node(false);
        n.status.conditions.push(NodeCondition {
            type_: CONDITION_MEMORY_CGROUP.into(),
            status: "True".into(),
            message: Some("add `cgroup_enable=memory cgroup_memory=1` to cmdline.txt".into()),
            ..Default::default()
        });
        let facts = NodeFacts {
            throttled: Some(UNDER_VOLTAGE | THROTTLED_SINCE_BOOT),
            temperature_millicelsius: Some(81_200),
            disk_total_bytes: 1000 << 20,
            disk_free_bytes: 50 << 20,
            ..Default::default()
        };
        let w: Vec<String> = warnings(&n, Some(&facts))
            .into_iter()
            .map(|w| w.text)
            .collect();
        assert!(w[0].starts_with("not ready: no status for 60s"), "{w:?}");
        assert!(w[1].starts_with("memory cgroup disabled: memory limits are not enforced"));
        assert!(w[1].contains("cgroup_enable=memory"));
        assert!(w.iter().any(|t| t.starts_with("under-voltage now")));
        assert!(w
            .iter()
            .any(|t| t.starts_with("the CPU has been throttled since boot")));
        assert!(w.iter().any(|t| t.starts_with("hot: 81.2 °C")));
        assert!(w
            .iter()
            .any(|t| t.starts_with("disk almost full: 50 MiB free")));
        assert!(warnings(&node(true), Some(&NodeFacts::default())).is_empty());
    }

    #[test]
    fn pod_rows_show_pull_progress_and_restarts() {
        let mut p = Pod::default();
        p.metadata.name = "web-1".into();
        p.metadata.namespace = Some("default".into());
        p.spec.containers = vec![Container {
            name: "web".into(),
            image: "busybox:1.36".into(),
            ..Default::default()
        }];
        p.status.container_statuses = vec![ContainerStatus {
            name: "web".into(),
            restart_count: 2,
            state: ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: Some("pulling image \"busybox:1.36\": 45%".into()),
                }),
                ..Default::default()
            },
            last_state: ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some("OOMKilled".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }];
        let row = pod_row(&p);
        assert_eq!(row.phase, "Pending");
        assert_eq!(row.ready, "0/1");
        assert_eq!(row.restarts, 2);
        assert_eq!(
            row.waiting.as_deref(),
            Some("ContainerCreating: pulling image \"busybox:1.36\": 45%")
        );
        let detail = pod_detail(&p, &[]);
        assert_eq!(detail.containers[0].state, "Waiting");
        assert_eq!(detail.containers[0].last_exit_code, Some(137));
        assert_eq!(
            detail.containers[0].last_reason.as_deref(),
            Some("OOMKilled")
        );
    }

    #[test]
    fn events_newest_first_and_filtered_by_object() {
        let ev = |kind: &str, name: &str, secs: i64| Event {
            involved_object: ObjectReference {
                kind: kind.into(),
                name: name.into(),
                namespace: (kind == "Pod").then(|| "default".into()),
                ..Default::default()
            },
            reason: "R".into(),
            last_timestamp: Some(Time(
                chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            )),
            ..Default::default()
        };
        let all = [
            ev("Pod", "web-1", 1),
            ev("Node", "pi-1", 3),
            ev("Pod", "web-2", 2),
        ];
        let objects: Vec<String> = events(&all, "", 10).into_iter().map(|e| e.object).collect();
        assert_eq!(
            objects,
            ["Node/pi-1", "Pod/default/web-2", "Pod/default/web-1"]
        );
        let pods: Vec<String> = events(&all, "pod/DEFAULT/web-1", 10)
            .into_iter()
            .map(|e| e.object)
            .collect();
        assert_eq!(pods, ["Pod/default/web-1"]);
        assert_eq!(events(&all, "", 1).len(), 1);
    }

    #[test]
    fn deployment_rollout_state() {
        let mut d = Deployment::default();
        d.spec.replicas = Some(3);
        d.status.ready_replicas = 1;
        d.status.updated_replicas = 3;
        assert_eq!(deployment_row(&d).state, "Progressing");
        d.status.ready_replicas = 3;
        d.status.replicas = 3;
        assert_eq!(deployment_row(&d).state, "Available");
    }
}
