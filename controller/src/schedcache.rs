//! The scheduler's view of the cluster, kept in memory from the store's watch: every
//! Node, what the Pods bound to each one request (kept up to date as Pods come, go,
//! finish or move), and the Pods waiting for a node. A pass then costs a walk over the
//! waiting Pods and, for each, over some nodes — not a decode of every Pod in the store
//! and a scan of every Pod for every node (O(nodes × pods) per Pod at 5,000 nodes).
//!
//! Which nodes a Pod looks at follows Kubernetes' `percentageOfNodesToScore`: in a
//! cluster of 100 nodes or more the search stops once enough feasible nodes were found
//! (50% less one point per 125 nodes, at least 5% and at least 100 nodes), and the next
//! Pod starts where the previous one stopped, so every node gets its turn. When no node
//! in that window fits, every node is looked at, so "unschedulable" is always exact.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use punnet_api::{Node, Object, Pod, Time};

use crate::scheduler::{self, is_terminal, Allocatable, Candidate, Decision, Requests};
use crate::store::{Change, WatchEvent};

/// What the Pods bound to one node take.
#[derive(Debug, Clone, Default, PartialEq)]
struct Usage {
    used: Requests,
    pod_count: u64,
    /// Pods per controlling owner uid (for spreading replicas).
    owners: HashMap<String, u64>,
}

/// One Pod as the cache counts it.
#[derive(Debug, Clone, PartialEq)]
struct PodEntry {
    /// The node whose usage it is counted in: bound and not finished.
    counted_on: Option<String>,
    requests: Requests,
    owner: Option<String>,
    /// Its place in the queue, when it waits for a node.
    pending: Option<PendingKey>,
    revision: u64,
}

/// Oldest first, then by key, as the scheduler has always taken them.
type PendingKey = (Option<Time>, String);

/// A node and what it offers, parsed once per change of the node.
#[derive(Debug)]
struct NodeEntry {
    node: Node,
    alloc: Allocatable,
}

impl NodeEntry {
    fn new(node: Node) -> NodeEntry {
        NodeEntry {
            alloc: Allocatable::of(&node),
            node,
        }
    }
}

#[derive(Debug, Default)]
pub struct SchedCache {
    nodes: BTreeMap<String, NodeEntry>,
    usage: HashMap<String, Usage>,
    pods: HashMap<String, PodEntry>,
    /// The waiting Pods as the watch delivered them: shared with the other watchers,
    /// not copied (an apply of thousands of Pods waits here at once).
    pending: BTreeMap<PendingKey, Arc<Object>>,
    /// The node the next search starts at.
    next_start: Option<String>,
}

/// Whether the scheduler must find a node for `p`.
pub fn needs_scheduling(p: &Pod) -> bool {
    p.spec.node_name.is_none()
        && p.metadata.deletion_timestamp.is_none()
        && p.phase() == punnet_api::phase::PENDING
}

fn owner_uid(pod: &Pod) -> Option<String> {
    pod.metadata.controller().map(|r| r.uid.clone())
}

/// How many feasible nodes a search looks for among `total` (Kubernetes' adaptive
/// `percentageOfNodesToScore` with `minFeasibleNodesToFind` = 100).
pub fn nodes_to_find(total: usize) -> usize {
    if total < 100 {
        return total;
    }
    let percent = 50usize.saturating_sub(total / 125).max(5);
    (total * percent / 100).max(100)
}

impl SchedCache {
    pub fn from_lists(nodes: &[Node], pods: &[Pod]) -> SchedCache {
        let mut cache = SchedCache::default();
        for n in nodes {
            cache
                .nodes
                .insert(n.metadata.name.clone(), NodeEntry::new(n.clone()));
        }
        for p in pods {
            cache.put_pod(p, p.metadata.revision());
        }
        cache
    }

    fn uncount(&mut self, key: &str) -> Option<PodEntry> {
        let old = self.pods.remove(key)?;
        if let Some(node) = &old.counted_on {
            if let Some(u) = self.usage.get_mut(node) {
                u.used.cpu_millis = u.used.cpu_millis.saturating_sub(old.requests.cpu_millis);
                u.used.memory_bytes = u
                    .used
                    .memory_bytes
                    .saturating_sub(old.requests.memory_bytes);
                u.pod_count = u.pod_count.saturating_sub(1);
                if let Some(owner) = &old.owner {
                    if let Some(n) = u.owners.get_mut(owner) {
                        *n -= 1;
                        if *n == 0 {
                            u.owners.remove(owner);
                        }
                    }
                }
                if u.pod_count == 0 {
                    self.usage.remove(node);
                }
            }
        }
        if let Some(pk) = &old.pending {
            self.pending.remove(pk);
        }
        Some(old)
    }

    /// Counts `pod` as it is now (replacing what was counted for it), unless what the
    /// cache has is newer.
    pub fn put_pod(&mut self, pod: &Pod, revision: u64) {
        self.put(pod, || Arc::new(Object::Pod(pod.clone())), revision)
    }

    /// `put_pod`, with the shared copy to queue if the Pod waits for a node.
    fn put(&mut self, pod: &Pod, shared: impl FnOnce() -> Arc<Object>, revision: u64) {
        let key = pod.metadata.key();
        if self.pods.get(&key).is_some_and(|e| e.revision > revision) {
            return;
        }
        self.uncount(&key);
        let counted_on = pod.spec.node_name.clone().filter(|_| !is_terminal(pod));
        let entry = PodEntry {
            requests: scheduler::Requests::of(pod),
            owner: owner_uid(pod),
            pending: needs_scheduling(pod).then(|| (pod.metadata.creation_timestamp, key.clone())),
            counted_on,
            revision,
        };
        if let Some(node) = &entry.counted_on {
            let u = self.usage.entry(node.clone()).or_default();
            u.used = Requests {
                cpu_millis: u.used.cpu_millis.saturating_add(entry.requests.cpu_millis),
                memory_bytes: u
                    .used
                    .memory_bytes
                    .saturating_add(entry.requests.memory_bytes),
            };
            u.pod_count += 1;
            if let Some(owner) = &entry.owner {
                *u.owners.entry(owner.clone()).or_default() += 1;
            }
        }
        if let Some(pk) = &entry.pending {
            self.pending.insert(pk.clone(), shared());
        }
        self.pods.insert(key, entry);
    }

    pub fn apply(&mut self, ev: &WatchEvent) {
        let deleted = ev.change == Change::Deleted;
        match &*ev.object {
            Object::Pod(p) if deleted => {
                let key = p.metadata.key();
                if self
                    .pods
                    .get(&key)
                    .is_some_and(|e| e.revision <= ev.revision)
                {
                    self.uncount(&key);
                }
            }
            Object::Pod(p) => self.put(p, || ev.object.clone(), ev.revision),
            Object::Node(n) if deleted => {
                self.nodes.remove(&n.metadata.name);
            }
            Object::Node(n) => {
                self.nodes
                    .insert(n.metadata.name.clone(), NodeEntry::new(n.clone()));
            }
            _ => {}
        }
    }

    /// The Pods waiting for a node, oldest first (each an `Object::Pod`).
    pub fn pending(&self) -> Vec<Arc<Object>> {
        self.pending.values().cloned().collect()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn candidate<'a>(&self, entry: &'a NodeEntry, owner: Option<&str>) -> Candidate<'a> {
        let (node, alloc) = (&entry.node, entry.alloc);
        match self.usage.get(&node.metadata.name) {
            Some(u) => Candidate {
                node,
                alloc,
                used: u.used,
                pod_count: u.pod_count,
                same_owner: owner.and_then(|o| u.owners.get(o)).copied().unwrap_or(0),
            },
            None => Candidate {
                node,
                alloc,
                used: Requests::default(),
                pod_count: 0,
                same_owner: 0,
            },
        }
    }

    /// Every node as a candidate for `pod`.
    pub fn candidates(&self, pod: &Pod) -> Vec<Candidate<'_>> {
        let owner = owner_uid(pod);
        self.nodes
            .values()
            .map(|e| self.candidate(e, owner.as_deref()))
            .collect()
    }

    /// The scheduler's decision for `pod`, looking at nodes as the module says.
    pub fn decide(&mut self, pod: &Pod) -> Decision {
        let owner = owner_uid(pod);
        // A Pod pinned to named nodes (a DaemonSet's) is decided among those alone.
        if let Some(names) = punnet_api::affinity::required_node_names(&pod.spec) {
            let named: Vec<_> = names
                .iter()
                .filter_map(|n| self.nodes.get(*n))
                .map(|e| self.candidate(e, owner.as_deref()))
                .collect();
            return match scheduler::decide(pod, &named) {
                Decision::Unschedulable(_) => scheduler::decide(pod, &self.candidates(pod)),
                d => d,
            };
        }
        let want = nodes_to_find(self.nodes.len());
        if want >= self.nodes.len() {
            return scheduler::decide(pod, &self.candidates(pod));
        }
        let requests = Requests::of(pod);
        let tolerations = punnet_api::taint::effective_tolerations(pod);
        let start = self.next_start.clone().unwrap_or_default();
        let ordered = self
            .nodes
            .range::<String, _>((Bound::Included(&start), Bound::Unbounded))
            .chain(
                self.nodes
                    .range::<String, _>((Bound::Unbounded, Bound::Excluded(&start))),
            );
        let mut fitting = Vec::with_capacity(want);
        let mut next = None;
        for (name, entry) in ordered {
            if fitting.len() >= want {
                next = Some(name.clone());
                break;
            }
            let c = self.candidate(entry, owner.as_deref());
            let reasons = scheduler::filter(&c, &pod.spec.node_selector, requests, &tolerations);
            if scheduler::node_affinity_filter(pod, &c, reasons).is_empty() {
                fitting.push(c);
            }
        }
        let decision = {
            let refs: Vec<&Candidate<'_>> = fitting.iter().collect();
            scheduler::pick(pod, &refs).map(|c| c.node.metadata.name.clone())
        };
        drop(fitting);
        self.next_start = next;
        match decision {
            Some(node) => Decision::Bind(node),
            // Why nothing fits is counted over every node, so the message is exact.
            None => scheduler::decide(pod, &self.candidates(pod)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{Container, NodeCondition, OwnerReference};

    fn node(name: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.status.allocatable.insert("cpu".into(), "4".into());
        n.status.allocatable.insert("memory".into(), "1Gi".into());
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        n
    }

    fn pod(name: &str, node: Option<&str>, mem: &str, rv: u64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.metadata.resource_version = Some(rv.to_string());
        p.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web".into(),
            uid: "rs-1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        });
        p.spec.node_name = node.map(str::to_string);
        let mut c = Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        };
        c.resources.requests.insert("memory".into(), mem.into());
        p.spec.containers.push(c);
        p
    }

    fn ev(change: Change, object: Object, revision: u64) -> WatchEvent {
        WatchEvent {
            revision,
            change,
            object: object.into(),
        }
    }

    /// The cache's candidates equal those the pure scheduler builds from full lists.
    fn same_as_full_scan(cache: &SchedCache, nodes: &[Node], pods: &[Pod], probe: &Pod) {
        let from_cache: Vec<_> = cache
            .candidates(probe)
            .iter()
            .map(|c| {
                (
                    c.node.metadata.name.clone(),
                    c.used,
                    c.pod_count,
                    c.same_owner,
                )
            })
            .collect();
        let mut nodes = nodes.to_vec();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let full: Vec<_> = scheduler::candidates(probe, &nodes, pods)
            .iter()
            .map(|c| {
                (
                    c.node.metadata.name.clone(),
                    c.used,
                    c.pod_count,
                    c.same_owner,
                )
            })
            .collect();
        assert_eq!(from_cache, full);
    }

    #[test]
    fn usage_follows_binding_finishing_moving_and_deleting() {
        let nodes = [node("n1"), node("n2")];
        let mut pods = vec![pod("a", Some("n1"), "100Mi", 1), pod("b", None, "50Mi", 2)];
        let mut cache = SchedCache::from_lists(&nodes, &pods);
        let probe = pod("probe", None, "1Mi", 0);
        same_as_full_scan(&cache, &nodes, &pods, &probe);
        assert_eq!(cache.pending().len(), 1);

        pods[1] = pod("b", Some("n1"), "50Mi", 3);
        cache.apply(&ev(Change::Modified, Object::Pod(pods[1].clone()), 3));
        assert!(cache.pending().is_empty());
        same_as_full_scan(&cache, &nodes, &pods, &probe);

        pods[0].status.phase = Some("Succeeded".into());
        pods[0].metadata.resource_version = Some("4".into());
        cache.apply(&ev(Change::Modified, Object::Pod(pods[0].clone()), 4));
        same_as_full_scan(&cache, &nodes, &pods, &probe);

        pods[1].spec.node_name = Some("n2".into());
        cache.apply(&ev(Change::Modified, Object::Pod(pods[1].clone()), 5));
        same_as_full_scan(&cache, &nodes, &pods, &probe);

        cache.apply(&ev(Change::Deleted, Object::Pod(pods.remove(1)), 6));
        same_as_full_scan(&cache, &nodes, &pods, &probe);
        // A stale event for a Pod the cache saw newer changes nothing.
        cache.apply(&ev(Change::Added, Object::Pod(pod("a", None, "1Mi", 1)), 1));
        same_as_full_scan(&cache, &nodes, &pods, &probe);
    }

    #[test]
    fn large_clusters_search_a_window_that_moves_on() {
        assert_eq!(nodes_to_find(10), 10);
        assert_eq!(nodes_to_find(100), 100);
        assert_eq!(nodes_to_find(1000), 420);
        assert_eq!(nodes_to_find(5000), 500);
        assert_eq!(nodes_to_find(100_000), 5000);
        let nodes: Vec<Node> = (0..1000).map(|i| node(&format!("n{i:04}"))).collect();
        let mut cache = SchedCache::from_lists(&nodes, &[]);
        // Replicas of one owner spread: each window has a node with none yet, or
        // nearly (windows do not line up with the end of the node list).
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for i in 0..1000 {
            let p = pod(&format!("p{i}"), None, "10Mi", 0);
            let Decision::Bind(n) = cache.decide(&p) else {
                panic!("unschedulable")
            };
            let mut bound = p.clone();
            bound.spec.node_name = Some(n.clone());
            cache.put_pod(&bound, 1);
            *seen.entry(n).or_default() += 1;
        }
        assert!(seen.len() >= 900, "{} nodes used", seen.len());
        assert!(seen.values().all(|&n| n <= 2), "{seen:?}");
    }

    #[test]
    fn unschedulable_is_decided_over_every_node() {
        let mut nodes: Vec<Node> = (0..300).map(|i| node(&format!("n{i:03}"))).collect();
        for n in &mut nodes[..299] {
            n.status.conditions[0].status = "False".into();
        }
        let mut cache = SchedCache::from_lists(&nodes, &[]);
        let big = pod("big", None, "2Gi", 0);
        assert_eq!(
            cache.decide(&big),
            Decision::Unschedulable(
                "0/300 nodes are available: 1 Insufficient memory, 299 node(s) were not ready."
                    .into()
            )
        );
        assert_eq!(
            cache.decide(&pod("small", None, "1Mi", 0)),
            Decision::Bind("n299".into())
        );
    }

    fn pinned(name: &str, to: &str) -> Pod {
        use punnet_api::pod::{Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement};
        let mut p = pod(name, None, "1Mi", 0);
        p.spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![punnet_api::pod::NodeSelectorTerm {
                        match_expressions: vec![],
                        match_fields: vec![NodeSelectorRequirement {
                            key: punnet_api::affinity::FIELD_NODE_NAME.into(),
                            operator: "In".into(),
                            values: vec![to.into()],
                        }],
                    }],
                }),
                ..Default::default()
            }),
        });
        p
    }

    #[test]
    fn a_pod_pinned_to_a_node_is_decided_there_with_the_fleet_wide_message() {
        let mut nodes: Vec<Node> = (0..300).map(|i| node(&format!("n{i:03}"))).collect();
        nodes[7].status.conditions[0].status = "False".into();
        let mut cache = SchedCache::from_lists(&nodes, &[]);
        for i in [0, 150, 299] {
            let target = format!("n{i:03}");
            assert_eq!(
                cache.decide(&pinned("ds", &target)),
                Decision::Bind(target.clone())
            );
        }
        assert_eq!(
            cache.decide(&pinned("ds", "n007")),
            Decision::Unschedulable(
                "0/300 nodes are available: 1 node(s) were not ready, 299 node(s) didn't match Pod's node affinity/selector."
                    .into()
            )
        );
        assert_eq!(
            cache.decide(&pinned("ds", "gone")),
            scheduler::decide(
                &pinned("ds", "gone"),
                &cache.candidates(&pinned("ds", "gone"))
            )
        );
    }
}
