//! The latest usage figures of every node and running container, in memory only: they
//! change with every report, and writing them would wear the controller's SD card for
//! numbers nobody needs after a restart. Filled by node sync, served by the API as
//! `metrics.k8s.io/v1beta1` (see `http::metrics`).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use punnet_api::metrics::{
    ContainerMetrics, NodeFigures, NodeMetrics, PodMetrics, METRICS_API_VERSION,
};
use punnet_api::quantity::format_cpu_millis;
use punnet_api::wire::{ContainerUsage, NodeFacts, NodeStatusReport};
use punnet_api::{ObjectMeta, Time};

use crate::history::{NodeHistory, Series};

/// Figures older than this are not served (the node went quiet).
pub const MAX_AGE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct NodeEntry {
    at: Time,
    /// Since the previous report: what the CPU figure is averaged over.
    window: Duration,
    facts: NodeFacts,
}

#[derive(Debug, Clone)]
struct PodEntry {
    namespace: String,
    name: String,
    at: Time,
    window: Duration,
    usage: Vec<ContainerUsage>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    nodes: RwLock<HashMap<String, NodeEntry>>,
    /// By node: a report replaces its node's entries without scanning every Pod of the
    /// fleet (50,000 at 5,000 nodes, 500 reports a second).
    pods: RwLock<HashMap<String, Vec<PodEntry>>>,
    /// The last hour of each node's figures, for the fleet page's charts.
    history: RwLock<HashMap<String, NodeHistory>>,
}

fn age(now: Time, then: Time) -> Duration {
    (now.0 - then.0).to_std().unwrap_or_default()
}

/// Memory as metrics-server writes it: whole KiB.
fn kib(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

impl Metrics {
    /// Takes a report's figures: the node's, and those of the Pods it runs (a Pod the
    /// report no longer lists, or lists without usage, is not running there).
    pub fn record(&self, report: &NodeStatusReport, now: Time) {
        let window = {
            let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
            let window = nodes
                .get(&report.node)
                .map(|e| age(now, e.at))
                .unwrap_or_default();
            nodes.insert(
                report.node.clone(),
                NodeEntry {
                    at: now,
                    window,
                    facts: report.facts.clone(),
                },
            );
            window
        };
        self.history
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(report.node.clone())
            .or_default()
            .record(&report.facts, now.0.timestamp());
        let entries: Vec<PodEntry> = report
            .pods
            .iter()
            .filter(|p| !p.usage.is_empty())
            .map(|p| PodEntry {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                at: now,
                window,
                usage: p.usage.clone(),
            })
            .collect();
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        if entries.is_empty() {
            pods.remove(&report.node);
        } else {
            pods.insert(report.node.clone(), entries);
        }
    }

    /// Every node's figures not older than `MAX_AGE`, by name.
    pub fn nodes(&self, now: Time) -> Vec<NodeMetrics> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<NodeMetrics> = nodes
            .iter()
            .filter(|(_, e)| age(now, e.at) <= MAX_AGE)
            .map(|(name, e)| node_metrics(name, e))
            .collect();
        out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        out
    }

    /// One node's figures, unless older than `MAX_AGE` (the MQTT API's status topics).
    pub fn node(&self, name: &str, now: Time) -> Option<NodeMetrics> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes
            .get(name)
            .filter(|e| age(now, e.at) <= MAX_AGE)
            .map(|e| node_metrics(name, e))
    }

    /// A node's last report's facts and when it came, however old (the fleet page
    /// shows the last contact of offline nodes too).
    pub fn last_report(&self, name: &str) -> Option<(Time, NodeFacts)> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.get(name).map(|e| (e.at, e.facts.clone()))
    }

    /// The last hour of a node's figures, one entry a minute up to `now`.
    pub fn history(&self, name: &str, now: Time) -> Series {
        let history = self.history.read().unwrap_or_else(|e| e.into_inner());
        history
            .get(name)
            .map(|h| h.series(now.0.timestamp()))
            .unwrap_or_default()
    }

    /// The running Pods' figures in `namespace` (all when `None`), by namespace and name.
    pub fn pods(&self, namespace: Option<&str>, now: Time) -> Vec<PodMetrics> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        // A Pod that moved may still be listed by its old node until that one reports
        // again: the newest figures win.
        let mut newest: HashMap<(&str, &str), &PodEntry> = HashMap::new();
        for p in pods
            .values()
            .flatten()
            .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
            .filter(|p| age(now, p.at) <= MAX_AGE)
        {
            let slot = newest
                .entry((p.namespace.as_str(), p.name.as_str()))
                .or_insert(p);
            if p.at > slot.at {
                *slot = p;
            }
        }
        let mut out: Vec<PodMetrics> = newest.into_values().map(pod_metrics).collect();
        out.sort_by_key(|a| a.metadata.key());
        out
    }
}

fn node_metrics(name: &str, e: &NodeEntry) -> NodeMetrics {
    let f = &e.facts;
    let used = f.memory_bytes.saturating_sub(f.memory_available_bytes);
    NodeMetrics {
        api_version: METRICS_API_VERSION.into(),
        kind: "NodeMetrics".into(),
        metadata: ObjectMeta {
            name: name.to_string(),
            ..Default::default()
        },
        timestamp: Some(e.at),
        window: seconds(e.window),
        usage: [
            ("cpu".to_string(), format_cpu_millis(f.cpu_usage_millis)),
            ("memory".to_string(), kib(used)),
        ]
        .into(),
        punnet: Some(NodeFigures {
            cpus: f.cpus,
            memory_total_bytes: f.memory_bytes,
            memory_available_bytes: f.memory_available_bytes,
            disk_total_bytes: f.disk_total_bytes,
            disk_free_bytes: f.disk_free_bytes,
            temperature_millicelsius: f.temperature_millicelsius,
            throttled: f.throttled,
        }),
    }
}

fn pod_metrics(p: &PodEntry) -> PodMetrics {
    PodMetrics {
        api_version: METRICS_API_VERSION.into(),
        kind: "PodMetrics".into(),
        metadata: ObjectMeta {
            name: p.name.clone(),
            namespace: Some(p.namespace.clone()),
            ..Default::default()
        },
        timestamp: Some(p.at),
        window: seconds(p.window),
        containers: p
            .usage
            .iter()
            .map(|u| ContainerMetrics {
                name: u.container.clone(),
                usage: [
                    ("cpu".to_string(), format_cpu_millis(u.cpu_millis)),
                    ("memory".to_string(), kib(u.memory_bytes)),
                ]
                .into(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::wire::PodReport;

    fn at(secs: i64) -> Time {
        Time(chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap())
    }

    fn report(node: &str, pods: &[(&str, u64)]) -> NodeStatusReport {
        NodeStatusReport {
            node: node.into(),
            generation_seen: 0,
            sent_at: at(0),
            facts: NodeFacts {
                cpus: 4,
                memory_bytes: 1 << 30,
                memory_available_bytes: 768 << 20,
                cpu_usage_millis: 250,
                temperature_millicelsius: Some(48_500),
                ..Default::default()
            },
            pods: pods
                .iter()
                .map(|(name, mem)| PodReport {
                    namespace: "default".into(),
                    name: (*name).into(),
                    uid: "u".into(),
                    status: Default::default(),
                    usage: if *mem == 0 {
                        vec![]
                    } else {
                        vec![ContainerUsage {
                            container: "c".into(),
                            cpu_millis: 5,
                            memory_bytes: *mem,
                        }]
                    },
                })
                .collect(),
            events: vec![],
        }
    }

    #[test]
    fn latest_figures_per_node_and_running_pod() {
        let m = Metrics::default();
        m.record(&report("pi-1", &[("a", 8 << 20), ("b", 0)]), at(0));
        m.record(&report("pi-1", &[("a", 16 << 20)]), at(10));
        m.record(&report("pi-2", &[("c", 1 << 20)]), at(12));
        let nodes = m.nodes(at(15));
        assert_eq!(nodes.len(), 2);
        let n = &nodes[0];
        assert_eq!(n.metadata.name, "pi-1");
        assert_eq!(n.window, "10s");
        assert_eq!(n.usage["cpu"], "250m");
        assert_eq!(n.usage["memory"], "262144Ki");
        assert_eq!(
            n.punnet.as_ref().unwrap().temperature_millicelsius,
            Some(48_500)
        );
        let pods = m.pods(Some("default"), at(15));
        let names: Vec<&str> = pods.iter().map(|p| p.metadata.name.as_str()).collect();
        assert_eq!(names, ["a", "c"], "b reports no usage: not running");
        assert_eq!(pods[0].containers[0].usage["memory"], "16384Ki");
        assert!(m.pods(Some("other"), at(15)).is_empty());
        // A Pod gone from its node's report is gone from the metrics.
        m.record(&report("pi-1", &[]), at(20));
        assert_eq!(m.pods(None, at(20)).len(), 1);
        // Stale figures are not served.
        assert!(m.nodes(at(20 + MAX_AGE.as_secs() as i64 + 1)).is_empty());
    }
}
