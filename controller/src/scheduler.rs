//! The scheduler's decisions (steps 5–7 of the Pod flow), pure: which nodes can take a
//! Pod and which of them is best. No I/O; `scheduling` runs it against the store.
//!
//! Filters, in Kubernetes' order: the node is Ready, not cordoned, has no `NoSchedule`
//! taint the Pod does not tolerate, matches the Pod's
//! `nodeSelector`, can enforce memory limits if the Pod sets any, has room for one more Pod and for the Pod's cpu/memory requests.
//! Required node affinity (`affinity.nodeAffinity`) filters like `nodeSelector`.
//! Scores: fewest untolerated `PreferNoSchedule` taints, then nodes matching more weight
//! of the Pod's preferred node affinity, then spread Pods of one owner over nodes, then
//! prefer the least loaded node.

use std::borrow::Cow;
use std::collections::BTreeMap;

use punnet_api::quantity::{parse_bytes, parse_cpu_millis};
use punnet_api::taint::{self, Toleration};
use punnet_api::{affinity, phase, Container, Node, Pod};

use crate::nodesync::facts::lacks_memory_cgroup;

/// What a Pod asks for, summed over its containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Requests {
    /// Requests of a Pod. A container that sets only limits requests its limits, as in
    /// Kubernetes. Unparseable quantities count as zero: validation rejects them at the
    /// API, and the scheduler must never fail on one stored by an older version.
    ///
    /// Init containers run one at a time before the app containers, so the Pod needs
    /// the larger of their largest request and the app containers' sum.
    pub fn of(pod: &Pod) -> Requests {
        let mut total = Requests::default();
        for c in &pod.spec.containers {
            total = total.add(Requests::of_container(c));
        }
        for c in &pod.spec.init_containers {
            let r = Requests::of_container(c);
            total.cpu_millis = total.cpu_millis.max(r.cpu_millis);
            total.memory_bytes = total.memory_bytes.max(r.memory_bytes);
        }
        total
    }

    fn of_container(c: &Container) -> Requests {
        let r = &c.resources;
        let pick = |name: &str| r.requests.get(name).or_else(|| r.limits.get(name));
        Requests {
            cpu_millis: pick("cpu")
                .and_then(|q| parse_cpu_millis(q).ok())
                .unwrap_or(0),
            memory_bytes: pick("memory")
                .and_then(|q| parse_bytes(q).ok())
                .unwrap_or(0),
        }
    }

    fn add(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// What a node offers: `status.allocatable`. A missing value is zero, as in Kubernetes,
/// so a Node object nobody reported for takes only Pods that request nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u64,
}

impl Allocatable {
    pub fn of(node: &Node) -> Allocatable {
        let a = &node.status.allocatable;
        Allocatable {
            cpu_millis: a
                .get("cpu")
                .and_then(|q| parse_cpu_millis(q).ok())
                .unwrap_or(0),
            memory_bytes: a
                .get("memory")
                .and_then(|q| parse_bytes(q).ok())
                .unwrap_or(0),
            pods: a.get("pods").and_then(|q| q.parse().ok()).unwrap_or(110),
        }
    }
}

/// Why a node cannot take the Pod, worded as Kubernetes' scheduler words it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    NotReady,
    Unschedulable,
    SelectorMismatch,
    NoMemoryCgroup,
    TooManyPods,
    InsufficientCpu,
    InsufficientMemory,
    /// A `NoSchedule` taint (its key and value) the Pod does not tolerate.
    UntoleratedTaint(String, String),
}

impl Reason {
    pub fn text(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Reason::NotReady => "node(s) were not ready",
            Reason::Unschedulable => "node(s) were unschedulable",
            Reason::SelectorMismatch => "node(s) didn't match Pod's node affinity/selector",
            Reason::NoMemoryCgroup => {
                "node(s) cannot enforce memory limits (memory cgroup disabled)"
            }
            Reason::TooManyPods => "Too many pods",
            Reason::InsufficientCpu => "Insufficient cpu",
            Reason::InsufficientMemory => "Insufficient memory",
            Reason::UntoleratedTaint(key, value) => {
                return Cow::Owned(format!("node(s) had untolerated taint {{{key}: {value}}}"))
            }
        })
    }
}

/// One node as the scheduler sees it: the node and what is already placed on it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub node: &'a Node,
    /// `Allocatable::of(node)`, parsed once per node rather than per look.
    pub alloc: Allocatable,
    /// Sum of the requests of the non-terminal Pods bound to the node.
    pub used: Requests,
    /// Number of non-terminal Pods bound to the node.
    pub pod_count: u64,
    /// Of those, how many share the Pod's controlling owner (for spreading).
    pub same_owner: u64,
}

/// Whether a Pod still holds its node's resources.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.phase(), phase::SUCCEEDED | phase::FAILED)
}

/// The uid of the Pod's controlling owner, used to spread replicas.
fn owner_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.controller().map(|r| r.uid.as_str())
}

/// Builds one candidate per node from every Pod in the store.
pub fn candidates<'a>(pod: &Pod, nodes: &'a [Node], pods: &[Pod]) -> Vec<Candidate<'a>> {
    let owner = owner_uid(pod);
    nodes
        .iter()
        .map(|node| {
            let mut c = Candidate {
                node,
                alloc: Allocatable::of(node),
                used: Requests::default(),
                pod_count: 0,
                same_owner: 0,
            };
            for p in pods.iter().filter(|p| {
                p.spec.node_name.as_deref() == Some(node.metadata.name.as_str()) && !is_terminal(p)
            }) {
                c.used = c.used.add(Requests::of(p));
                c.pod_count += 1;
                if owner.is_some() && owner_uid(p) == owner {
                    c.same_owner += 1;
                }
            }
            c
        })
        .collect()
}

/// The reasons `node` cannot take a Pod with `requests`, `selector` and `tolerations`;
/// empty when it fits. A node that is not Ready, is cordoned or has an untolerated taint
/// is not looked at further, as in Kubernetes.
pub fn filter(
    c: &Candidate<'_>,
    selector: &BTreeMap<String, String>,
    requests: Requests,
    tolerations: &[Toleration],
) -> Vec<Reason> {
    if !c.node.is_ready() {
        return vec![Reason::NotReady];
    }
    if c.node.is_unschedulable() && !tolerates_cordon(tolerations) {
        return vec![Reason::Unschedulable];
    }
    if let Some(r) = untolerated_taint(c.node, tolerations) {
        return vec![r];
    }
    let labels = &c.node.metadata.labels;
    if selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        return vec![Reason::SelectorMismatch];
    }
    // A limit the kernel cannot enforce would let one Pod take the board's memory.
    if requests.memory_bytes > 0 && lacks_memory_cgroup(c.node) {
        return vec![Reason::NoMemoryCgroup];
    }
    let alloc = c.alloc;
    let mut reasons = Vec::new();
    if c.pod_count + 1 > alloc.pods {
        reasons.push(Reason::TooManyPods);
    }
    if requests.cpu_millis > 0
        && c.used.cpu_millis.saturating_add(requests.cpu_millis) > alloc.cpu_millis
    {
        reasons.push(Reason::InsufficientCpu);
    }
    if requests.memory_bytes > 0
        && c.used.memory_bytes.saturating_add(requests.memory_bytes) > alloc.memory_bytes
    {
        reasons.push(Reason::InsufficientMemory);
    }
    reasons
}

/// Kubernetes' NodeUnschedulable filter: a cordoned node still takes Pods that tolerate
/// its `node.kubernetes.io/unschedulable:NoSchedule` taint (DaemonSet Pods do).
fn tolerates_cordon(tolerations: &[Toleration]) -> bool {
    taint::tolerated(
        tolerations,
        &punnet_api::Taint::new(taint::TAINT_UNSCHEDULABLE, taint::NO_SCHEDULE),
    )
}

/// The TaintToleration filter: the first `NoSchedule` or `NoExecute` taint of the node
/// none of `tolerations` matches (a Pod placed on a `NoExecute` node would be evicted).
pub fn untolerated_taint(node: &Node, tolerations: &[Toleration]) -> Option<Reason> {
    let taints = &node.spec.taints;
    taint::first_untolerated(taints, tolerations, taint::NO_SCHEDULE)
        .or_else(|| taint::first_untolerated(taints, tolerations, taint::NO_EXECUTE))
        .map(|t| Reason::UntoleratedTaint(t.key.clone(), t.value.clone().unwrap_or_default()))
}

/// The TaintToleration score: how many `PreferNoSchedule` taints of the node the Pod
/// does not tolerate (fewer is better).
pub fn intolerable_preferences(node: &Node, tolerations: &[Toleration]) -> usize {
    node.spec
        .taints
        .iter()
        .filter(|t| t.effect == taint::PREFER_NO_SCHEDULE && !taint::tolerated(tolerations, t))
        .count()
}

/// Adds the Pod's required node affinity to `filter`'s verdict: a node it rules out
/// fails with the selector's reason (Kubernetes' NodeAffinity plugin words both alike),
/// which, as there, wins over the resource reasons checked after it.
pub fn node_affinity_filter(pod: &Pod, c: &Candidate<'_>, reasons: Vec<Reason>) -> Vec<Reason> {
    let earlier = [
        Reason::NotReady,
        Reason::Unschedulable,
        Reason::SelectorMismatch,
    ];
    // TaintToleration runs before NodeAffinity in Kubernetes too.
    let tainted = reasons
        .iter()
        .any(|r| matches!(r, Reason::UntoleratedTaint(..)));
    if tainted
        || reasons.iter().any(|r| earlier.contains(r))
        || affinity::node_matches(&pod.spec, c.node)
    {
        return reasons;
    }
    vec![Reason::SelectorMismatch]
}

/// The fraction of the node that would be requested after placing the Pod, averaged over
/// cpu and memory (0.0 = empty). A resource the node does not report counts as empty.
fn load_after(c: &Candidate<'_>, requests: Requests) -> f64 {
    let alloc = c.alloc;
    let frac = |used: u64, req: u64, cap: u64| {
        if cap == 0 {
            0.0
        } else {
            used.saturating_add(req) as f64 / cap as f64
        }
    };
    (frac(c.used.cpu_millis, requests.cpu_millis, alloc.cpu_millis)
        + frac(
            c.used.memory_bytes,
            requests.memory_bytes,
            alloc.memory_bytes,
        ))
        / 2.0
}

/// The scheduler's answer for one Pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Bind(String),
    /// No node fits; the message is the `PodScheduled` condition's.
    Unschedulable(String),
}

/// Picks a node for `pod`: filters, then the node with the fewest untolerated
/// `PreferNoSchedule` taints, then the fewest Pods of the same owner, then the least
/// loaded one, then the first by name (so the result is deterministic).
pub fn decide(pod: &Pod, candidates: &[Candidate<'_>]) -> Decision {
    let requests = Requests::of(pod);
    let selector = &pod.spec.node_selector;
    let tolerations = taint::effective_tolerations(pod);
    let mut failures: BTreeMap<Reason, usize> = BTreeMap::new();
    let mut fitting = Vec::new();
    for c in candidates {
        let reasons = node_affinity_filter(pod, c, filter(c, selector, requests, &tolerations));
        if reasons.is_empty() {
            fitting.push(c);
        }
        for r in reasons {
            *failures.entry(r).or_default() += 1;
        }
    }
    match pick(pod, &fitting) {
        Some(c) => Decision::Bind(c.node.metadata.name.clone()),
        None => Decision::Unschedulable(unschedulable_message(candidates.len(), &failures)),
    }
}

/// The best of candidates that all pass the filters (see `decide` for the order).
pub fn pick<'a, 'c>(pod: &Pod, fitting: &[&'c Candidate<'a>]) -> Option<&'c Candidate<'a>> {
    let requests = Requests::of(pod);
    let tolerations = taint::effective_tolerations(pod);
    let preferred = |c: &Candidate<'_>| affinity::preferred_score(&pod.spec, c.node);
    fitting
        .iter()
        .copied()
        // Each key once per node, not once per comparison.
        .map(|c| {
            let key = (
                intolerable_preferences(c.node, &tolerations),
                -preferred(c),
                c.same_owner,
                load_after(c, requests),
            );
            (key, c)
        })
        .min_by(|(a, ca), (b, cb)| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.cmp(&b.1))
                .then_with(|| a.2.cmp(&b.2))
                .then_with(|| a.3.total_cmp(&b.3))
                .then_with(|| ca.node.metadata.name.cmp(&cb.node.metadata.name))
        })
        .map(|(_, c)| c)
}

/// `0/2 nodes are available: 1 Insufficient memory, 1 node(s) didn't match Pod's node
/// affinity/selector.` — reasons with counts, sorted by text as Kubernetes does.
pub fn unschedulable_message(total: usize, failures: &BTreeMap<Reason, usize>) -> String {
    if total == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut parts: Vec<String> = failures
        .iter()
        .map(|(r, n)| format!("{n} {}", r.text()))
        .collect();
    parts.sort();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{Container, NodeCondition, OwnerReference, ResourceRequirements};

    fn node(name: &str, cpu: &str, mem: &str, arch: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.metadata
            .labels
            .insert("kubernetes.io/arch".into(), arch.into());
        n.status.allocatable.insert("cpu".into(), cpu.into());
        n.status.allocatable.insert("memory".into(), mem.into());
        n.status.allocatable.insert("pods".into(), "110".into());
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        n
    }

    fn pod(name: &str, cpu: Option<&str>, mem: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        let mut res = ResourceRequirements::default();
        if let Some(c) = cpu {
            res.requests.insert("cpu".into(), c.into());
        }
        if let Some(m) = mem {
            res.requests.insert("memory".into(), m.into());
        }
        p.spec.containers.push(Container {
            name: "c".into(),
            image: "busybox".into(),
            resources: res,
            ..Default::default()
        });
        p
    }

    fn owned(mut p: Pod, uid: &str) -> Pod {
        p.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: None,
        });
        p
    }

    fn bound(mut p: Pod, node: &str) -> Pod {
        p.spec.node_name = Some(node.into());
        p
    }

    fn run(p: &Pod, nodes: &[Node], pods: &[Pod]) -> Decision {
        decide(p, &candidates(p, nodes, pods))
    }

    #[test]
    fn requests_default_to_limits_and_sum_over_containers() {
        let mut p = pod("a", Some("100m"), None);
        p.spec.containers.push(Container {
            name: "d".into(),
            resources: ResourceRequirements {
                limits: [
                    ("cpu".to_string(), "1".to_string()),
                    ("memory".into(), "64Mi".into()),
                ]
                .into(),
                requests: [("cpu".to_string(), "250m".to_string())].into(),
            },
            ..Default::default()
        });
        assert_eq!(
            Requests::of(&p),
            Requests {
                cpu_millis: 350,
                memory_bytes: 64 << 20
            }
        );
        let mut bad = pod("b", Some("lots"), None);
        bad.spec.containers[0]
            .resources
            .limits
            .insert("memory".into(), "?".into());
        assert_eq!(Requests::of(&bad), Requests::default());
    }

    #[test]
    fn not_ready_and_cordoned_nodes_are_filtered() {
        let mut down = node("down", "4", "1Gi", "arm64");
        down.status.conditions[0].status = "Unknown".into();
        let mut cordoned = node("cordoned", "4", "1Gi", "arm64");
        cordoned.spec.unschedulable = Some(true);
        let p = pod("a", None, None);
        assert_eq!(
            run(&p, &[down, cordoned.clone()], &[]),
            Decision::Unschedulable(
                "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
                    .into()
            )
        );
        cordoned.spec.unschedulable = Some(false);
        assert_eq!(run(&p, &[cordoned], &[]), Decision::Bind("cordoned".into()));
    }

    #[test]
    fn node_selector_pins_architecture() {
        let nodes = [
            node("pi3", "4", "1Gi", "arm"),
            node("pi4", "4", "1Gi", "arm64"),
        ];
        let mut p = pod("a", None, None);
        p.spec
            .node_selector
            .insert("kubernetes.io/arch".into(), "arm64".into());
        assert_eq!(run(&p, &nodes, &[]), Decision::Bind("pi4".into()));
        p.spec
            .node_selector
            .insert("kubernetes.io/arch".into(), "riscv64".into());
        assert_eq!(
            run(&p, &nodes, &[]),
            Decision::Unschedulable(
                "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
                    .into()
            )
        );
    }

    fn with_affinity(
        mut p: Pod,
        required: Option<(&str, &str, &[&str])>,
        preferred: &[(i32, &str, &str)],
    ) -> Pod {
        use punnet_api::{
            Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
            PreferredSchedulingTerm,
        };
        let term = |key: &str, op: &str, values: &[&str]| NodeSelectorTerm {
            match_expressions: vec![NodeSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
            match_fields: vec![],
        };
        p.spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: required.map(|(k, op, vs)| {
                    NodeSelector {
                        node_selector_terms: vec![term(k, op, vs)],
                    }
                }),
                preferred_during_scheduling_ignored_during_execution: preferred
                    .iter()
                    .map(|(w, k, v)| PreferredSchedulingTerm {
                        weight: *w,
                        preference: term(k, "In", &[v]),
                    })
                    .collect(),
            }),
        });
        p
    }

    #[test]
    fn required_node_affinity_filters_and_preferred_scores() {
        let mut busy = node("pi4-busy", "4", "1Gi", "arm64");
        busy.metadata.labels.insert("ssd".into(), "yes".into());
        let nodes = [
            node("pi3", "4", "1Gi", "arm"),
            node("pi4", "4", "1Gi", "arm64"),
            busy,
        ];
        let load = bound(pod("x", Some("2"), Some("512Mi")), "pi4-busy");
        let p = with_affinity(
            pod("a", Some("100m"), None),
            Some(("kubernetes.io/arch", "NotIn", &["arm"])),
            &[],
        );
        assert_eq!(
            run(&p, &nodes, std::slice::from_ref(&load)),
            Decision::Bind("pi4".into())
        );
        // A preference outweighs the load.
        let p = with_affinity(
            p,
            Some(("kubernetes.io/arch", "NotIn", &["arm"])),
            &[(10, "ssd", "yes")],
        );
        assert_eq!(
            run(&p, &nodes, std::slice::from_ref(&load)),
            Decision::Bind("pi4-busy".into())
        );
        // Nothing matches: reported like a nodeSelector mismatch, before resources.
        let p = with_affinity(
            pod("b", Some("8"), None),
            Some(("kubernetes.io/arch", "In", &["riscv64"])),
            &[],
        );
        assert_eq!(
            run(&p, &nodes, &[]),
            Decision::Unschedulable(
                "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
                    .into()
            )
        );
    }

    #[test]
    fn resources_count_bound_non_terminal_pods() {
        let nodes = [node("n1", "1", "512Mi", "arm64")];
        let existing = bound(pod("old", Some("600m"), Some("300Mi")), "n1");
        let mut finished = bound(pod("done", Some("1"), Some("512Mi")), "n1");
        finished.status.phase = Some("Succeeded".into());
        let p = pod("a", Some("300m"), Some("200Mi"));
        assert_eq!(
            run(&p, &nodes, &[existing.clone(), finished.clone()]),
            Decision::Bind("n1".into())
        );
        let big = pod("b", Some("500m"), Some("300Mi"));
        assert_eq!(
            run(&big, &nodes, &[existing, finished]),
            Decision::Unschedulable(
                "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.".into()
            )
        );
    }

    #[test]
    fn message_groups_mixed_reasons_with_counts() {
        let nodes = [
            node("small", "4", "128Mi", "arm64"),
            node("x86", "4", "8Gi", "amd64"),
        ];
        let mut p = pod("a", None, Some("256Mi"));
        p.spec
            .node_selector
            .insert("kubernetes.io/arch".into(), "arm64".into());
        assert_eq!(
            run(&p, &nodes, &[]),
            Decision::Unschedulable(
                "0/2 nodes are available: 1 Insufficient memory, 1 node(s) didn't match Pod's node affinity/selector."
                    .into()
            )
        );
        assert_eq!(
            run(&p, &[], &[]),
            Decision::Unschedulable("no nodes available to schedule pods".into())
        );
    }

    #[test]
    fn pod_count_limit() {
        let mut n = node("n1", "4", "1Gi", "arm64");
        n.status.allocatable.insert("pods".into(), "1".into());
        let other = bound(pod("x", None, None), "n1");
        assert_eq!(
            run(&pod("a", None, None), &[n], &[other]),
            Decision::Unschedulable("0/1 nodes are available: 1 Too many pods.".into())
        );
    }

    #[test]
    fn replicas_spread_before_balance() {
        // n1 is emptier, but already runs a replica of the same Deployment.
        let nodes = [
            node("n1", "4", "4Gi", "arm64"),
            node("n2", "1", "1Gi", "arm64"),
        ];
        let sibling = bound(owned(pod("web-1", Some("100m"), None), "d-1"), "n1");
        let p = owned(pod("web-2", Some("100m"), None), "d-1");
        assert_eq!(
            run(&p, &nodes, std::slice::from_ref(&sibling)),
            Decision::Bind("n2".into())
        );
        // A Pod of another owner goes by load alone.
        let stranger = owned(pod("db-1", Some("100m"), None), "d-2");
        assert_eq!(
            run(&stranger, &nodes, &[sibling]),
            Decision::Bind("n1".into())
        );
    }

    #[test]
    fn balance_prefers_least_requested_then_name() {
        let nodes = [
            node("a", "2", "2Gi", "arm64"),
            node("b", "2", "2Gi", "arm64"),
        ];
        let busy = bound(pod("x", Some("1"), Some("1Gi")), "a");
        let p = pod("p", Some("100m"), Some("64Mi"));
        assert_eq!(run(&p, &nodes, &[busy]), Decision::Bind("b".into()));
        assert_eq!(run(&p, &nodes, &[]), Decision::Bind("a".into()));
    }

    #[test]
    fn pods_with_memory_limits_avoid_nodes_without_a_memory_cgroup() {
        let mut n = node("pi-1", "4", "1Gi", "arm64");
        n.status.conditions.push(NodeCondition {
            type_: crate::nodesync::facts::CONDITION_MEMORY_CGROUP.into(),
            status: "True".into(),
            ..Default::default()
        });
        let nodes = [n];
        let limited = pod("a", None, Some("64Mi"));
        assert_eq!(
            decide(&limited, &candidates(&limited, &nodes, &[])),
            Decision::Unschedulable(
                "0/1 nodes are available: 1 node(s) cannot enforce memory limits (memory cgroup disabled).".into()
            )
        );
        // A limit alone counts too; a Pod without memory figures is placed.
        let mut only_limit = pod("b", None, None);
        only_limit.spec.containers[0]
            .resources
            .limits
            .insert("memory".into(), "32Mi".into());
        assert!(matches!(
            decide(&only_limit, &candidates(&only_limit, &nodes, &[])),
            Decision::Unschedulable(_)
        ));
        let free = pod("c", Some("100m"), None);
        assert_eq!(
            decide(&free, &candidates(&free, &nodes, &[])),
            Decision::Bind("pi-1".into())
        );
    }

    #[test]
    fn init_containers_count_by_their_largest_request() {
        let mut p = pod("a", Some("100m"), Some("10Mi"));
        let mut init = p.spec.containers[0].clone();
        init.resources.requests.insert("cpu".into(), "500m".into());
        init.resources
            .requests
            .insert("memory".into(), "1Mi".into());
        p.spec.init_containers.push(init);
        let r = Requests::of(&p);
        assert_eq!((r.cpu_millis, r.memory_bytes), (500, 10 << 20));
    }

    fn tainted(mut n: Node, key: &str, value: Option<&str>, effect: &str) -> Node {
        n.spec.taints.push(punnet_api::Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            time_added: None,
        });
        n
    }

    fn tolerating(mut p: Pod, key: &str, effect: &str) -> Pod {
        p.spec.tolerations.push(Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn untolerated_no_schedule_and_no_execute_taints_filter_nodes() {
        let nodes = [
            tainted(
                node("db", "4", "1Gi", "arm64"),
                "dedicated",
                Some("db"),
                "NoSchedule",
            ),
            tainted(
                node("lost", "4", "1Gi", "arm64"),
                taint::TAINT_UNREACHABLE,
                None,
                "NoExecute",
            ),
        ];
        let p = pod("a", None, None);
        assert_eq!(
            run(&p, &nodes, &[]),
            Decision::Unschedulable(
                "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }."
                    .into()
            )
        );
        let p = tolerating(p, "dedicated", "NoSchedule");
        assert_eq!(run(&p, &nodes, &[]), Decision::Bind("db".into()));
        let p = tolerating(pod("b", None, None), taint::TAINT_UNREACHABLE, "NoExecute");
        assert_eq!(run(&p, &nodes, &[]), Decision::Bind("lost".into()));
    }

    #[test]
    fn prefer_no_schedule_is_avoided_when_another_node_fits() {
        let nodes = [
            tainted(
                node("a", "4", "4Gi", "arm64"),
                "flaky-wifi",
                None,
                "PreferNoSchedule",
            ),
            node("b", "1", "1Gi", "arm64"),
        ];
        // b is busier and already runs a sibling, yet wins over the tainted a.
        let sibling = bound(owned(pod("web-1", Some("500m"), None), "d-1"), "b");
        let p = owned(pod("web-2", Some("100m"), None), "d-1");
        assert_eq!(
            run(&p, &nodes, std::slice::from_ref(&sibling)),
            Decision::Bind("b".into())
        );
        let p = tolerating(p, "flaky-wifi", "PreferNoSchedule");
        assert_eq!(run(&p, &nodes, &[sibling]), Decision::Bind("a".into()));
        // The only node left is used despite the preference.
        assert_eq!(
            run(&pod("c", None, None), &nodes[..1], &[]),
            Decision::Bind("a".into())
        );
    }

    #[test]
    fn cordoned_nodes_take_pods_that_tolerate_the_unschedulable_taint() {
        let mut n = node("pi-1", "4", "1Gi", "arm64");
        n.spec.unschedulable = Some(true);
        let nodes = [tainted(n, taint::TAINT_UNSCHEDULABLE, None, "NoSchedule")];
        let plain = pod("a", None, None);
        assert_eq!(
            run(&plain, &nodes, &[]),
            Decision::Unschedulable(
                "0/1 nodes are available: 1 node(s) were unschedulable.".into()
            )
        );
        let tolerant = tolerating(plain.clone(), taint::TAINT_UNSCHEDULABLE, "NoSchedule");
        assert_eq!(run(&tolerant, &nodes, &[]), Decision::Bind("pi-1".into()));
        let mut daemon = plain;
        daemon.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: "logs".into(),
            uid: "ds-1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        });
        assert_eq!(run(&daemon, &nodes, &[]), Decision::Bind("pi-1".into()));
    }
}
