//! The JSON status topics: what is published, retained, for each Node
//! (`status/nodes/<node>`) and each workload (`status/deployments|daemonsets|jobs/<ns>/<name>`),
//! and the small in-memory view that feeds them: the Nodes, and how many Pods run on
//! each (kept up to date from the store's changes, never recounted over all Pods).
//! Pure: the publisher (`mod.rs`) does the I/O.

use std::collections::HashMap;

use punnet_api::metrics::NodeMetrics;
use punnet_api::{DaemonSet, Deployment, Job, Node, Pod, Resource};
use serde::Serialize;

use crate::nodesync::facts::ANNOTATION_BOARD_MODEL;

/// `status/nodes/<node>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeState {
    pub name: String,
    /// The Node is Ready (its agent reports within the grace period).
    pub online: bool,
    pub unschedulable: bool,
    pub model: String,
    pub arch: String,
    pub cpus: u32,
    /// Whole-node CPU use, percent of all CPUs, rounded to whole percents (so that noise
    /// does not make a change to publish).
    pub cpu_percent: Option<u32>,
    pub memory_total_bytes: Option<u64>,
    /// Used memory in percent of the total, rounded.
    pub memory_percent: Option<u32>,
    /// SoC temperature, rounded to whole degrees Celsius.
    pub temperature_celsius: Option<i64>,
    pub pods_running: usize,
}

/// `status/<plural>/<ns>/<name>` of a Deployment, DaemonSet or Job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadState {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// Replicas asked for (Deployment), nodes to run on (DaemonSet), completions (Job).
    pub desired: i64,
    /// Ready Pods (Deployment, DaemonSet) or succeeded Pods (Job).
    pub ready: i64,
    /// Available (Deployment, DaemonSet) or active (Job) Pods.
    pub available: i64,
}

pub fn node_state(node: &Node, usage: Option<&NodeMetrics>, pods_running: usize) -> NodeState {
    let figures = usage.and_then(|m| m.punnet.as_ref());
    let cpus = figures
        .map(|f| f.cpus)
        .filter(|c| *c > 0)
        .unwrap_or_else(|| {
            node.status
                .capacity
                .get("cpu")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0)
        });
    let cpu_millis = usage
        .and_then(|m| m.usage.get("cpu"))
        .and_then(|q| punnet_api::quantity::parse_cpu_millis(q).ok());
    let cpu_percent = match (cpu_millis, cpus) {
        (Some(m), c) if c > 0 => Some(((m as f64) / (c as f64 * 10.0)).round() as u32),
        _ => None,
    };
    let memory_percent = figures.filter(|f| f.memory_total_bytes > 0).map(|f| {
        let used = f
            .memory_total_bytes
            .saturating_sub(f.memory_available_bytes);
        ((used as f64) * 100.0 / f.memory_total_bytes as f64).round() as u32
    });
    NodeState {
        name: node.metadata.name.clone(),
        online: node.is_ready(),
        unschedulable: node.is_unschedulable(),
        model: node
            .metadata
            .annotations
            .get(ANNOTATION_BOARD_MODEL)
            .cloned()
            .unwrap_or_default(),
        arch: node.status.node_info.architecture.clone(),
        cpus,
        cpu_percent,
        memory_total_bytes: figures.map(|f| f.memory_total_bytes),
        memory_percent,
        temperature_celsius: figures
            .and_then(|f| f.temperature_millicelsius)
            .map(|m| (m as f64 / 1000.0).round() as i64),
        pods_running,
    }
}

pub fn deployment_state(d: &Deployment) -> WorkloadState {
    workload(
        d,
        d.spec.replicas.unwrap_or(1).into(),
        d.status.ready_replicas.into(),
        d.status.available_replicas.into(),
    )
}

pub fn daemonset_state(d: &DaemonSet) -> WorkloadState {
    workload(
        d,
        d.status.desired_number_scheduled.into(),
        d.status.number_ready.into(),
        d.status.number_available.into(),
    )
}

pub fn job_state(j: &Job) -> WorkloadState {
    workload(
        j,
        j.spec.completions.unwrap_or(1).into(),
        j.status.succeeded.into(),
        j.status.active.into(),
    )
}

fn workload<T: Resource>(o: &T, desired: i64, ready: i64, available: i64) -> WorkloadState {
    WorkloadState {
        kind: T::KIND,
        namespace: o.meta().namespace.clone().unwrap_or_default(),
        name: o.meta().name.clone(),
        desired,
        ready,
        available,
    }
}

/// The topic of a workload's status: `<prefix>/status/deployments/<ns>/<name>`.
pub fn workload_topic(prefix: &str, plural: &str, namespace: &str, name: &str) -> String {
    format!("{prefix}/status/{plural}/{namespace}/{name}")
}

pub fn node_topic(prefix: &str, node: &str) -> String {
    format!("{prefix}/status/nodes/{node}")
}

/// Retained `online`/`offline` of the controller's MQTT API (its last will says
/// `offline`): the availability topic of the Home Assistant entities.
pub fn controller_topic(prefix: &str) -> String {
    format!("{prefix}/status/controller")
}

/// Which Pods run where, by Pod key. Only Running Pods bound to a node are counted.
#[derive(Debug, Default)]
pub struct RunningPods {
    by_pod: HashMap<String, String>,
    per_node: HashMap<String, usize>,
}

impl RunningPods {
    /// Takes a Pod's new state (`None`: deleted). Returns the nodes whose count changed.
    pub fn update(&mut self, key: &str, pod: Option<&Pod>) -> Vec<String> {
        let now = pod
            .filter(|p| p.status.phase.as_deref() == Some("Running"))
            .and_then(|p| p.spec.node_name.clone());
        let before = self.by_pod.get(key).cloned();
        if before == now {
            return Vec::new();
        }
        let mut changed = Vec::new();
        if let Some(old) = before {
            self.by_pod.remove(key);
            if let Some(n) = self.per_node.get_mut(&old) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_node.remove(&old);
                }
            }
            changed.push(old);
        }
        if let Some(node) = now {
            self.by_pod.insert(key.to_string(), node.clone());
            *self.per_node.entry(node.clone()).or_default() += 1;
            changed.push(node);
        }
        changed
    }

    pub fn on(&self, node: &str) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    pub fn clear(&mut self) {
        self.by_pod.clear();
        self.per_node.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::metrics::NodeFigures;
    use punnet_api::NodeCondition;

    fn pod(node: Option<&str>, phase: &str) -> Pod {
        let mut p = Pod::default();
        p.spec.node_name = node.map(str::to_string);
        p.status.phase = Some(phase.to_string());
        p
    }

    #[test]
    fn running_pods_are_counted_per_node_incrementally() {
        let mut r = RunningPods::default();
        assert_eq!(
            r.update("a", Some(&pod(Some("n1"), "Pending"))),
            Vec::<String>::new()
        );
        assert_eq!(r.update("a", Some(&pod(Some("n1"), "Running"))), vec!["n1"]);
        assert_eq!(r.update("b", Some(&pod(Some("n1"), "Running"))), vec!["n1"]);
        assert_eq!(
            r.update("b", Some(&pod(Some("n1"), "Running"))),
            Vec::<String>::new()
        );
        assert_eq!(r.on("n1"), 2);
        assert_eq!(r.update("a", None), vec!["n1"]);
        assert_eq!(
            r.update("b", Some(&pod(Some("n2"), "Running"))),
            vec!["n1", "n2"]
        );
        assert_eq!((r.on("n1"), r.on("n2")), (0, 1));
    }

    #[test]
    fn node_state_rounds_its_figures() {
        let mut n = Node::default();
        n.metadata.name = "pi-1".into();
        n.metadata
            .annotations
            .insert(ANNOTATION_BOARD_MODEL.into(), "Raspberry Pi 4".into());
        n.status.node_info.architecture = "arm64".into();
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        let m = NodeMetrics {
            usage: [("cpu".to_string(), "1234m".to_string())].into(),
            punnet: Some(NodeFigures {
                cpus: 4,
                memory_total_bytes: 1000,
                memory_available_bytes: 334,
                temperature_millicelsius: Some(48_600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = node_state(&n, Some(&m), 3);
        assert!(s.online && !s.unschedulable);
        assert_eq!(
            (s.model.as_str(), s.arch.as_str()),
            ("Raspberry Pi 4", "arm64")
        );
        assert_eq!(s.cpu_percent, Some(31));
        assert_eq!(s.memory_percent, Some(67));
        assert_eq!(s.temperature_celsius, Some(49));
        assert_eq!(s.pods_running, 3);
        let bare = node_state(&Node::default(), None, 0);
        assert!(!bare.online && bare.cpu_percent.is_none() && bare.temperature_celsius.is_none());
    }

    #[test]
    fn workload_states() {
        let mut d = Deployment::default();
        d.metadata.name = "web".into();
        d.metadata.namespace = Some("default".into());
        d.spec.replicas = Some(3);
        d.status.ready_replicas = 2;
        let s = deployment_state(&d);
        assert_eq!((s.kind, s.desired, s.ready), ("Deployment", 3, 2));
        assert_eq!(
            workload_topic("punnet/v1", "deployments", "default", "web"),
            "punnet/v1/status/deployments/default/web"
        );
    }

    /// What the publisher does every 5 s at 5,000 boards: rebuild each one's JSON and
    /// offer it. Only the boards whose state changed go out; no re-publish storm.
    #[test]
    fn a_sweep_of_5000_boards_publishes_only_what_changed() {
        use crate::mqttapi::coalesce::Coalescer;
        use std::time::{Duration, Instant};
        let nodes: Vec<Node> = (0..5000)
            .map(|i| {
                let mut n = Node::default();
                n.metadata.name = format!("pi-{i}");
                n
            })
            .collect();
        let mut running = RunningPods::default();
        let mut c = Coalescer::new(Duration::from_secs(5));
        let sweep = |c: &mut Coalescer, running: &RunningPods| {
            for n in &nodes {
                let s = node_state(n, None, running.on(&n.metadata.name));
                c.offer(
                    &node_topic("punnet/v1", &n.metadata.name),
                    serde_json::to_vec(&s).unwrap(),
                );
            }
        };
        let t0 = Instant::now();
        sweep(&mut c, &running);
        assert_eq!(
            c.due(t0).len(),
            5000,
            "the first sweep publishes every board"
        );
        for i in 0..7 {
            running.update(
                &format!("default/p{i}"),
                Some(&pod(Some(&format!("pi-{i}")), "Running")),
            );
        }
        let started = Instant::now();
        sweep(&mut c, &running);
        let took = started.elapsed();
        assert_eq!(
            c.due(t0 + Duration::from_secs(5)).len(),
            7,
            "only the 7 changed boards"
        );
        eprintln!("sweep of 5000 boards: {took:?}");
    }
}
