//! Node liveness: a node whose agent went `offline` (its MQTT last will, or a clean
//! shutdown) or has sent nothing for the grace period becomes `Ready: Unknown`, and its
//! Pods `Unknown` with reason `NodeLost`, as Kubernetes' node lifecycle controller does.
//! The agent's next report makes the node Ready again and overwrites its Pods' status.
//!
//! Last-heard times live in memory only (persisting every heartbeat would wear the SD
//! card); after a controller restart every node gets a full grace period from the start,
//! and so it does after the controller's own MQTT connection was down (it heard nobody;
//! that says nothing about the nodes). Silence counts from when the connection read a
//! report, not from when node sync got to it, so a busy controller does not take its
//! fleet for lost.

use std::collections::HashMap;
use std::time::Duration;

use punnet_api::{phase, Node, NodeCondition, Pod, PodCondition, Time};
use tokio::time::Instant;
use tracing::warn;

use super::index::{split_key, PodIndex};
use crate::scheduler::is_terminal;
use crate::store::{Store, StoreError};

/// Why a node is considered lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The retained `online` topic says `offline`.
    WentOffline,
    /// Nothing heard for longer than the grace period.
    Silent(Duration),
}

impl Lost {
    pub fn message(self) -> String {
        match self {
            Lost::WentOffline => {
                "punnet-agent stopped posting node status: it went offline (MQTT last will or shutdown).".into()
            }
            Lost::Silent(grace) => format!(
                "punnet-agent stopped posting node status: nothing heard for more than {}s.",
                grace.as_secs()
            ),
        }
    }
}

/// Last-heard times by node.
#[derive(Debug)]
pub struct Liveness {
    grace: Duration,
    /// When this process started watching, or its own connection was last down: the
    /// stand-in for nodes not heard since.
    floor: Instant,
    last_heard: HashMap<String, Instant>,
}

impl Liveness {
    pub fn new(grace: Duration, now: Instant) -> Liveness {
        Liveness {
            grace,
            floor: now,
            last_heard: HashMap::new(),
        }
    }

    pub fn heard(&mut self, node: &str, now: Instant) {
        self.last_heard.insert(node.to_string(), now);
    }

    /// The controller itself could hear nobody at `now` (its MQTT connection is down):
    /// every node gets a whole grace period from then, as after a restart.
    pub fn unheard_since(&mut self, now: Instant) {
        self.floor = self.floor.max(now);
    }

    /// Whether `node` has been silent for longer than the grace period.
    pub fn is_silent(&self, node: &str, now: Instant) -> bool {
        let heard = self.last_heard.get(node).copied().unwrap_or(self.floor);
        now.saturating_duration_since(heard.max(self.floor)) > self.grace
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// Marks the node's Ready condition Unknown. Returns false when it already was not Ready
/// (the first reason stays, and nothing is written).
pub fn mark_node_lost(node: &mut Node, why: Lost, now: Time) -> bool {
    let ready = node
        .status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready");
    match ready {
        Some(c) if c.status != "True" => false,
        Some(c) => {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some(why.message());
            c.last_transition_time = Some(now);
            true
        }
        None => {
            node.status.conditions.insert(
                0,
                NodeCondition {
                    type_: "Ready".into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusUnknown".into()),
                    message: Some(why.message()),
                    last_heartbeat_time: None,
                    last_transition_time: Some(now),
                },
            );
            true
        }
    }
}

/// Marks a Pod of a lost node `Unknown` / `NodeLost`, not Ready. Terminal Pods keep
/// their final phase. Returns whether anything changed.
pub fn mark_pod_lost(pod: &mut Pod, node: &str, now: Time) -> bool {
    if is_terminal(pod) {
        return false;
    }
    let before = pod.status.clone();
    pod.status.phase = Some(phase::UNKNOWN.into());
    pod.status.reason = Some("NodeLost".into());
    pod.status.message = Some(format!(
        "Node {node} which was running pod {} is unresponsive",
        pod.metadata.name
    ));
    for cs in &mut pod.status.container_statuses {
        cs.ready = false;
    }
    for type_ in ["Ready", "ContainersReady"] {
        match pod.status.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != "False" {
                    c.status = "False".into();
                    c.last_transition_time = Some(now);
                }
                c.reason = Some("NodeLost".into());
                c.message = None;
            }
            None if type_ == "Ready" => pod.status.conditions.push(PodCondition {
                type_: type_.into(),
                status: "False".into(),
                reason: Some("NodeLost".into()),
                message: None,
                last_transition_time: Some(now),
            }),
            None => {}
        }
    }
    pod.status != before
}

/// Marks `node` lost in the store (if it was Ready) and every Pod on it (`pods`: the keys
/// of the Pods bound there, from `index::PodIndex`). Returns whether the node changed
/// from Ready.
pub fn node_lost(
    store: &Store,
    node: &str,
    why: Lost,
    pods: &[String],
) -> Result<bool, StoreError> {
    let now = Time::now();
    let mut changed = false;
    store.modify::<Node>(None, node, |n| changed = mark_node_lost(n, why, now))?;
    if changed {
        warn!("node {node} is NotReady: {}", why.message());
    }
    mark_pods_lost(store, node, pods)?;
    Ok(changed)
}

/// Marks every Pod bound to `node` lost (idempotent). `pods` are their keys; each is
/// read again and checked, so a key that is a moment stale does no harm.
pub fn mark_pods_lost(store: &Store, node: &str, pods: &[String]) -> Result<(), StoreError> {
    let now = Time::now();
    for key in pods {
        let (ns, name) = split_key(key);
        let Some(pod) = store.get::<Pod>(ns, name)? else {
            continue;
        };
        if pod.spec.node_name.as_deref() != Some(node) {
            continue;
        }
        let mut probe = pod.clone();
        if mark_pod_lost(&mut probe, node, now) {
            store.modify::<Pod>(ns, name, |p| {
                if p.metadata.uid == pod.metadata.uid && p.spec.node_name.as_deref() == Some(node) {
                    mark_pod_lost(p, node, now);
                }
            })?;
        }
    }
    Ok(())
}

/// The periodic check: Ready nodes silent for too long become lost, and Pods on nodes
/// that are not Ready are marked lost (also Pods bound there later).
pub fn check(
    store: &Store,
    liveness: &Liveness,
    now: Instant,
    index: &PodIndex,
) -> Result<(), StoreError> {
    let (nodes, _) = store.list::<Node>(None)?;
    for node in &nodes {
        let name = &node.metadata.name;
        if node.is_ready() {
            if liveness.is_silent(name, now) {
                node_lost(
                    store,
                    name,
                    Lost::Silent(liveness.grace()),
                    &index.on_node(name),
                )?;
            }
        } else if node
            .condition("Ready")
            .is_some_and(|c| c.reason.as_deref() == Some("NodeStatusUnknown"))
        {
            mark_pods_lost(store, name, &index.on_node(name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::ContainerStatus;

    fn ready_node() -> Node {
        let mut n = Node::default();
        n.metadata.name = "pi-1".into();
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            ..Default::default()
        });
        n
    }

    #[test]
    fn silence_is_measured_from_last_report_or_start() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(40), t0);
        assert!(!l.is_silent("pi-1", t0 + Duration::from_secs(39)));
        assert!(
            l.is_silent("pi-1", t0 + Duration::from_secs(41)),
            "never heard: grace from start"
        );
        l.heard("pi-1", t0 + Duration::from_secs(30));
        assert!(!l.is_silent("pi-1", t0 + Duration::from_secs(69)));
        assert!(l.is_silent("pi-1", t0 + Duration::from_secs(71)));
        // The controller's own connection was down at 100 s: a fresh grace from there.
        l.unheard_since(t0 + Duration::from_secs(100));
        assert!(!l.is_silent("pi-1", t0 + Duration::from_secs(139)));
        assert!(l.is_silent("pi-1", t0 + Duration::from_secs(141)));
        l.heard("pi-1", t0 + Duration::from_secs(130));
        assert!(!l.is_silent("pi-1", t0 + Duration::from_secs(169)));
    }

    #[test]
    fn node_goes_unknown_once() {
        let mut n = ready_node();
        let now = Time::now();
        assert!(mark_node_lost(&mut n, Lost::WentOffline, now));
        let r = n.condition("Ready").unwrap();
        assert_eq!(r.status, "Unknown");
        assert_eq!(r.reason.as_deref(), Some("NodeStatusUnknown"));
        assert!(r.message.as_deref().unwrap().contains("punnet-agent"));
        assert!(!mark_node_lost(
            &mut n,
            Lost::Silent(Duration::from_secs(40)),
            now
        ));
        assert!(n
            .condition("Ready")
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .contains("offline"));
    }

    #[test]
    fn pods_of_a_lost_node_become_unknown_but_finished_ones_stay() {
        let mut p = Pod::default();
        p.metadata.name = "web-1".into();
        p.status.phase = Some("Running".into());
        p.status.conditions.push(PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        p.status.container_statuses.push(ContainerStatus {
            name: "c".into(),
            ready: true,
            ..Default::default()
        });
        let now = Time::now();
        assert!(mark_pod_lost(&mut p, "pi-1", now));
        assert_eq!(p.phase(), "Unknown");
        assert_eq!(p.status.reason.as_deref(), Some("NodeLost"));
        assert!(p.status.message.as_deref().unwrap().contains("pi-1"));
        assert!(!p.is_ready());
        assert!(!p.status.container_statuses[0].ready);
        assert!(!mark_pod_lost(&mut p, "pi-1", now), "idempotent");
        let mut done = Pod::default();
        done.status.phase = Some("Succeeded".into());
        assert!(!mark_pod_lost(&mut done, "pi-1", now));
    }
}
