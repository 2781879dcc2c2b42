//! The node lifecycle controller: keeps the `node.kubernetes.io/` taints of every Node in
//! line with its Ready condition (set by node sync's liveness check and status ingest)
//! and `spec.unschedulable`, and, as Kubernetes' taint manager, evicts Pods from nodes
//! with `NoExecute` taints they do not tolerate, once their `tolerationSeconds` (by
//! default `--default-eviction-seconds`) are up.
//!
//! An evicted Pod is deleted through `podgc::delete_pod`: on a node that is not Ready
//! nothing could confirm its stop, so it leaves the store at once and its Deployment
//! replaces it elsewhere (the scheduler keeps off the tainted node). When the node comes
//! back, its published desired state no longer lists the Pod and its agent stops it.
//!
//! Level-triggered, in the manner of `deployment`: store events for Nodes (and for Pods
//! on `NoExecute`-tainted nodes) start a pass after a short debounce; a timer wakes the
//! loop when the next toleration runs out, and a periodic resync heals anything missed.

pub mod decide;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use punnet_api::taint::NO_EXECUTE;
use punnet_api::{Node, Object, ObjectReference, Pod, Time};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::podgc;
use crate::store::peek::PodView;
use crate::store::{Change, Store, StoreError, WatchEvent};
use decide::{eviction, has_condition_taint, reconcile_taints, Eviction};

/// How long a Pod stays on a NotReady or unreachable node before it is evicted, unless it
/// tolerates the taint longer. Kubernetes uses 300 s; a board on Wi-Fi that drops out
/// for a minute (an access point rebooting, a channel change) is back well within two
/// minutes, and its Pods are not worth moving. Longer outages move them after
/// `--node-grace` + this.
pub const DEFAULT_EVICTION_SECONDS: u64 = 120;

#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// `tolerationSeconds` of Pods that set none for not-ready/unreachable.
    pub default_eviction: Duration,
    /// Look at every Node and tainted node's Pods at least this often.
    pub resync: Duration,
    /// Wait this long after a change for more, so a burst is one pass.
    pub debounce: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            default_eviction: Duration::from_secs(DEFAULT_EVICTION_SECONDS),
            resync: Duration::from_secs(10),
            debounce: Duration::from_millis(50),
        }
    }
}

/// Runs the controller until `cancel` fires.
pub async fn run(store: Arc<Store>, config: NodeLifecycleConfig, cancel: CancellationToken) {
    let mut events = store.subscribe();
    let mut tainted: BTreeSet<String> = BTreeSet::new();
    let started = Time::now();
    let mut dirty = true;
    let mut wake = tokio::time::Instant::now() + config.resync;
    let mut paused = false;
    loop {
        if dirty {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(config.debounce) => {}
            }
            while let Ok(_) | Err(TryRecvError::Lagged(_)) = events.try_recv() {}
            let next = match pass(&store, &config, started, Time::now()) {
                Ok(outcome) => {
                    if outcome.paused != paused {
                        paused = outcome.paused;
                        if paused {
                            warn!("node lifecycle: no node is Ready: evictions wait until one is (full disruption)");
                        } else {
                            info!("node lifecycle: a node is Ready again: evictions resume");
                        }
                    }
                    tainted = outcome.no_execute_nodes;
                    outcome.next_eviction
                }
                Err(e) => {
                    warn!("node lifecycle: {e}");
                    None
                }
            };
            let resync = tokio::time::Instant::now() + config.resync;
            wake = match next {
                // A second late rather than early: the deadline has whole seconds.
                Some(at) => resync.min(
                    tokio::time::Instant::now()
                        + (at.0 - Time::now().0).to_std().unwrap_or_default()
                        + Duration::from_millis(50),
                ),
                None => resync,
            };
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => dirty = true,
            ev = events.recv() => match ev {
                Ok(ev) => dirty = is_relevant(&ev, &tainted),
                Err(RecvError::Lagged(_)) => dirty = true,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// A Node whose taints no longer match its state, or a Pod that appeared on (or was
/// bound to) a node with `NoExecute` taints. Status-only updates of other objects are
/// the bulk of the traffic in a big fleet and need no pass.
fn is_relevant(ev: &WatchEvent, no_execute_nodes: &BTreeSet<String>) -> bool {
    match &*ev.object {
        Object::Node(n) => {
            ev.change != Change::Deleted && reconcile_taints(n, Time::now()).is_some()
        }
        Object::Pod(p) => {
            ev.change != Change::Deleted
                && p.spec
                    .node_name
                    .as_ref()
                    .is_some_and(|n| no_execute_nodes.contains(n))
        }
        _ => false,
    }
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// Nodes with `NoExecute` taints now.
    pub no_execute_nodes: BTreeSet<String>,
    /// The earliest time a Pod's toleration runs out.
    pub next_eviction: Option<Time>,
    /// Pods evicted in this pass (`namespace/name`).
    pub evicted: Vec<String>,
    /// No node is Ready: evictions wait (see [`pass`]).
    pub paused: bool,
}

/// One pass: taints first, then evictions. `started` is when the loop began (see
/// `decide::eviction`). While no node at all is Ready, nothing is evicted: the Pods
/// would have nowhere to go, and a whole fleet dropping at once (the Wi-Fi access point,
/// the broker's host) says more about the network than about the boards; Kubernetes'
/// node lifecycle controller stops evicting in this "full disruption" as well.
pub fn pass(
    store: &Store,
    config: &NodeLifecycleConfig,
    started: Time,
    now: Time,
) -> Result<PassOutcome, StoreError> {
    let (nodes, _) = store.list::<Node>(None)?;
    let mut outcome = PassOutcome::default();
    let mut no_execute: HashMap<String, Node> = HashMap::new();
    let mut went_down = BTreeSet::new();
    let any_ready = nodes.iter().any(Node::is_ready);
    for node in nodes {
        let (node, down) = update_taints(store, node, now)?;
        if down {
            went_down.insert(node.metadata.name.clone());
        }
        if node.spec.taints.iter().any(|t| t.effect == NO_EXECUTE) {
            no_execute.insert(node.metadata.name.clone(), node);
        }
    }
    outcome.no_execute_nodes = no_execute.keys().cloned().collect();
    if no_execute.is_empty() && went_down.is_empty() {
        return Ok(outcome);
    }
    // One walk for the whole pass: when many boards drop at once (a switch, a power
    // cut) a list per node would make the pass quadratic. Only the Pods of the nodes
    // concerned are kept: all 50,000 of a 5,000-board fleet, decoded, are ~350 MB.
    let mut pods = Vec::new();
    store.visit_where::<Pod, PodView>(
        None,
        |p| {
            p.node()
                .is_some_and(|n| went_down.contains(n) || no_execute.contains_key(n))
        },
        |pod| pods.push(pod),
    )?;
    for pod in pods.iter().filter(|p| {
        p.spec
            .node_name
            .as_ref()
            .is_some_and(|n| went_down.contains(n))
    }) {
        store.recorder().warning(
            ObjectReference::to(pod),
            "NodeNotReady",
            "Node is not ready",
        );
    }
    let default_seconds = config.default_eviction.as_secs() as i64;
    for pod in &pods {
        let Some(node) = pod.spec.node_name.as_ref().and_then(|n| no_execute.get(n)) else {
            continue;
        };
        match eviction(pod, &node.spec.taints, default_seconds, started, now) {
            Eviction::Never => {}
            Eviction::At(at) => {
                outcome.next_eviction = Some(outcome.next_eviction.map_or(at, |e| e.min(at)));
            }
            Eviction::Now if !any_ready => outcome.paused = true,
            Eviction::Now => {
                if evict(store, pod, node)? {
                    outcome.evicted.push(pod.metadata.key());
                }
            }
        }
    }
    Ok(outcome)
}

/// Writes the node's taints if they must change, with the NodeNotReady / NodeReady
/// events of the Node. Returns the node as it now is, and whether it just went down.
fn update_taints(store: &Store, node: Node, now: Time) -> Result<(Node, bool), StoreError> {
    if reconcile_taints(&node, now).is_none() {
        return Ok((node, false));
    }
    let was_down = has_condition_taint(&node.spec.taints);
    let name = node.metadata.name.clone();
    // Decided again inside the write: status ingest may have changed the node since.
    let updated = store.modify::<Node>(None, &name, |n| {
        if let Some(taints) = reconcile_taints(n, now) {
            n.spec.taints = taints;
        }
    })?;
    let Some(updated) = updated else {
        return Ok((node, false));
    };
    let is_down = has_condition_taint(&updated.spec.taints);
    let recorder = store.recorder();
    if is_down && !was_down {
        let reason = updated
            .condition("Ready")
            .map(|c| c.status.clone())
            .unwrap_or_default();
        warn!("node {name} is not ready (Ready={reason}): tainted NoSchedule and NoExecute");
        recorder.normal(
            ObjectReference::to(&updated),
            "NodeNotReady",
            format!("Node {name} status is now: NodeNotReady"),
        );
    } else if was_down && !is_down {
        info!("node {name} is ready again: not-ready/unreachable taints removed");
        recorder.normal(
            ObjectReference::to(&updated),
            "NodeReady",
            format!("Node {name} status is now: NodeReady"),
        );
    }
    Ok((updated, is_down && !was_down))
}

/// Deletes `pod` (this incarnation) as the taint manager does. Returns whether it did.
fn evict(store: &Store, pod: &Pod, node: &Node) -> Result<bool, StoreError> {
    let key = pod.metadata.key();
    let deleted = podgc::delete_pod(
        store,
        pod.metadata.namespace.as_deref(),
        &pod.metadata.name,
        pod.metadata.uid.as_deref(),
        None,
    )?;
    if deleted == podgc::Deleted::NotFound {
        return Ok(false);
    }
    let taints: Vec<String> = node
        .spec
        .taints
        .iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .map(|t| t.to_kubectl())
        .collect();
    info!(
        "node lifecycle: evicted Pod {key} from node {} ({})",
        node.metadata.name,
        taints.join(", ")
    );
    store.recorder().normal(
        ObjectReference::to(pod),
        "TaintManagerEviction",
        format!("Marking for deletion Pod {key}"),
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::taint::TAINT_UNREACHABLE;
    use punnet_api::{Container, NodeCondition};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    fn node(name: &str, ready: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: ready.into(),
            ..Default::default()
        });
        n
    }

    fn pod(name: &str, node: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.spec.node_name = Some(node.into());
        p.spec.containers.push(Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        });
        p.status.phase = Some("Running".into());
        p
    }

    #[test]
    fn a_lost_node_is_tainted_and_its_pods_evicted_when_their_time_is_up() {
        let (_d, s) = store();
        s.create(node("pi-1", "True")).unwrap();
        s.create(node("pi-3", "Unknown")).unwrap();
        s.create(pod("web-a", "pi-1")).unwrap();
        s.create(pod("web-x", "pi-3")).unwrap();
        let config = NodeLifecycleConfig {
            default_eviction: Duration::from_secs(60),
            ..Default::default()
        };
        let t0 = Time::now();
        let out = pass(&s, &config, t0, t0).unwrap();
        assert_eq!(
            out.no_execute_nodes.into_iter().collect::<Vec<_>>(),
            ["pi-3"]
        );
        assert!(out.evicted.is_empty());
        let deadline = out.next_eviction.unwrap();
        // timeAdded is stored in whole seconds.
        assert!((59..=60).contains(&(deadline.0 - t0.0).num_seconds()));
        let n: Node = s.get(None, "pi-3").unwrap().unwrap();
        assert!(n.spec.taints.iter().any(|t| t.key == TAINT_UNREACHABLE));
        let events = s.recorder().list(None);
        assert!(events.iter().any(|e| e.reason == "NodeNotReady"
            && e.involved_object.name == "web-x"
            && e.message == "Node is not ready"));
        assert!(!events.iter().any(|e| e.involved_object.name == "web-a"));
        assert!(events
            .iter()
            .any(|e| e.reason == "NodeNotReady"
                && e.message == "Node pi-3 status is now: NodeNotReady"));

        // A pass at the deadline evicts; the Pod is gone at once (nothing can confirm).
        let out = pass(&s, &config, t0, deadline).unwrap();
        assert_eq!(out.evicted, ["default/web-x"]);
        assert!(s.get::<Pod>(Some("default"), "web-x").unwrap().is_none());
        assert!(s.get::<Pod>(Some("default"), "web-a").unwrap().is_some());
        assert!(s
            .recorder()
            .list(None)
            .iter()
            .any(|e| e.reason == "TaintManagerEviction"
                && e.message == "Marking for deletion Pod default/web-x"));

        // Back: taints go, NodeReady is recorded, and a further pass writes nothing.
        s.modify::<Node>(None, "pi-3", |n| {
            n.status.conditions[0].status = "True".into()
        })
        .unwrap();
        pass(&s, &config, t0, deadline).unwrap();
        let n: Node = s.get(None, "pi-3").unwrap().unwrap();
        assert!(n.spec.taints.is_empty());
        assert!(s
            .recorder()
            .list(None)
            .iter()
            .any(|e| e.reason == "NodeReady"));
        let rev = s.revision();
        pass(&s, &config, t0, deadline).unwrap();
        assert_eq!(s.revision(), rev);
    }

    #[test]
    fn nothing_is_evicted_while_no_node_is_ready() {
        let (_d, s) = store();
        s.create(node("pi-1", "Unknown")).unwrap();
        s.create(node("pi-2", "Unknown")).unwrap();
        s.create(pod("web-a", "pi-1")).unwrap();
        let config = NodeLifecycleConfig {
            default_eviction: Duration::from_secs(60),
            ..Default::default()
        };
        let t0 = Time::now();
        let deadline = pass(&s, &config, t0, t0).unwrap().next_eviction.unwrap();
        let out = pass(&s, &config, t0, deadline).unwrap();
        assert!(out.paused && out.evicted.is_empty(), "{out:?}");
        assert!(s.get::<Pod>(Some("default"), "web-a").unwrap().is_some());

        // One board back: the Pods of the others may move there now.
        s.modify::<Node>(None, "pi-2", |n| {
            n.status.conditions[0].status = "True".into()
        })
        .unwrap();
        let out = pass(&s, &config, t0, deadline).unwrap();
        assert!(!out.paused);
        assert_eq!(out.evicted, ["default/web-a"]);
    }
}
