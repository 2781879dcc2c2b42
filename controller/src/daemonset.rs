//! The DaemonSet controller (step 4 of the Pod flow): one Pod, already bound, on every
//! node that matches the template's `nodeSelector` and node affinity; none elsewhere.
//! A node that joins or starts matching gets one; a node that stops matching or is
//! deleted loses it. Template changes roll out node by node (`RollingUpdate`, at most
//! `maxUnavailable` nodes without an available Pod) or wait for the user (`OnDelete`);
//! Pods carry the template's hash in `controller-revision-hash`.
//!
//! As in Kubernetes, daemon Pods ignore `spec.unschedulable` (a cordoned node keeps
//! its daemons) and do not go through the scheduler. Taints are not looked at yet.
//!
//! `plan` and `compute_status` are pure; `reconcile` applies them to the store; `run`
//! is the level-triggered loop (DaemonSet, owned-Pod and node-label events, resync).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use punnet_api::daemonset::LABEL_CONTROLLER_REVISION_HASH;
use punnet_api::{
    affinity, taint, DaemonSet, DaemonSetStatus, Node, Object, ObjectReference, OwnerReference,
    Pod, Resource,
};
use thiserror::Error;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::deployment::pod_template_hash;
use crate::podgc;
use crate::scheduler::is_terminal;
use crate::store::peek::PodView;
use crate::store::{Change, Store, StoreError, WatchEvent};

#[derive(Debug, Error)]
pub enum DaemonSetError {
    #[error("DaemonSet {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
}

#[derive(Debug, Clone)]
pub struct DaemonSetConfig {
    pub resync: Duration,
    pub debounce: Duration,
}

impl Default for DaemonSetConfig {
    fn default() -> Self {
        DaemonSetConfig {
            resync: Duration::from_secs(30),
            debounce: Duration::from_millis(10),
        }
    }
}

/// Whether `node` should run a Pod of `ds`: its labels (and name) satisfy the
/// template's `nodeSelector` and required node affinity. `unschedulable` is ignored.
pub fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    affinity::node_matches(&ds.spec.template.spec, node) && !repelled_by_taints(ds, node)
}

/// Whether the node carries a taint the DaemonSet's Pods do not tolerate (with the
/// tolerations every DaemonSet Pod gets: not-ready, unreachable, cordoned). Only the
/// operator's own `NoSchedule` taints count besides `NoExecute` ones: the node-condition
/// `NoSchedule` taints (`node.kubernetes.io/...`) keep new Pods of other kinds away, but
/// must not take a board's daemons from it while its Wi-Fi is down.
fn repelled_by_taints(ds: &DaemonSet, node: &Node) -> bool {
    if node.spec.taints.is_empty() {
        return false;
    }
    let mut probe = Pod {
        spec: ds.spec.template.spec.clone(),
        ..Pod::default()
    };
    probe.metadata.owner_references.push(OwnerReference {
        kind: DaemonSet::KIND.into(),
        controller: Some(true),
        ..OwnerReference::default()
    });
    let tolerations = taint::effective_tolerations(&probe);
    node.spec.taints.iter().any(|t| {
        let counts = t.effect == taint::NO_EXECUTE
            || (t.effect == taint::NO_SCHEDULE && !t.key.starts_with("node.kubernetes.io/"));
        counts && !taint::tolerated(&tolerations, t)
    })
}

/// The DaemonSet a Pod belongs to: its controlling owner reference, if of that kind.
fn owner_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .controller()
        .filter(|r| r.kind == DaemonSet::KIND)
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .get(LABEL_CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

/// What one reconcile does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a Pod of the current template on.
    pub create_on: Vec<String>,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
}

/// The DaemonSet's Pods on one node.
#[derive(Default)]
struct OnNode<'a> {
    live: Vec<&'a Pod>,
    terminating: usize,
}

fn by_node<'a>(pods: &[&'a Pod]) -> BTreeMap<&'a str, OnNode<'a>> {
    let mut map: BTreeMap<&str, OnNode> = BTreeMap::new();
    for p in pods {
        let node = p.spec.node_name.as_deref().unwrap_or_default();
        let entry = map.entry(node).or_default();
        if podgc::is_terminating(p) {
            entry.terminating += 1;
        } else if !is_terminal(p) {
            entry.live.push(p);
        }
    }
    map
}

/// Decides from every node and the DaemonSet's own Pods (any state).
///
/// Per node: no live Pod where one should run (and none still stopping, which could
/// hold the same host ports) → create; live Pods where none should run → delete;
/// more than one → keep the current template's oldest. Finished Pods are deleted
/// (a daemon is meant to run; the next pass replaces it). Then the rollout: old Pods
/// that are not ready go at once; ready ones while fewer than `maxUnavailable` nodes
/// are without an available Pod.
pub fn plan(ds: &DaemonSet, hash: &str, nodes: &[Node], pods: &[&Pod]) -> Plan {
    let mut out = Plan::default();
    let groups = by_node(pods);
    let node_names: BTreeSet<&str> = nodes.iter().map(|n| n.metadata.name.as_str()).collect();
    for p in pods {
        if is_terminal(p) && !podgc::is_terminating(p) {
            out.delete.push(p.metadata.name.clone());
        }
    }
    // Pods on nodes that are gone, or never bound.
    for (node, g) in &groups {
        if !node_names.contains(node) {
            out.delete
                .extend(g.live.iter().map(|p| p.metadata.name.clone()));
        }
    }
    let empty = OnNode::default();
    let mut kept: Vec<(&Node, &Pod)> = Vec::new();
    let mut unavailable = 0usize;
    let mut desired = 0usize;
    for node in nodes {
        let g = groups.get(node.metadata.name.as_str()).unwrap_or(&empty);
        if !should_run(ds, node) {
            out.delete
                .extend(g.live.iter().map(|p| p.metadata.name.clone()));
            continue;
        }
        desired += 1;
        let mut live = g.live.clone();
        live.sort_by_key(|p| {
            (
                hash_of(p) != Some(hash),
                p.metadata.creation_timestamp,
                p.metadata.name.clone(),
            )
        });
        match live.split_first() {
            None => {
                unavailable += 1;
                if g.terminating == 0 {
                    out.create_on.push(node.metadata.name.clone());
                }
            }
            Some((first, extra)) => {
                out.delete
                    .extend(extra.iter().map(|p| p.metadata.name.clone()));
                if !first.is_ready() {
                    unavailable += 1;
                }
                kept.push((node, first));
            }
        }
    }
    if ds.spec.is_on_delete() {
        return out;
    }
    let mut budget = ds.spec.max_unavailable(desired).saturating_sub(unavailable);
    let old: Vec<&Pod> = kept
        .iter()
        .map(|(_, p)| *p)
        .filter(|p| hash_of(p) != Some(hash))
        .collect();
    for p in old.iter().filter(|p| !p.is_ready()) {
        out.delete.push(p.metadata.name.clone());
    }
    for p in old.iter().filter(|p| p.is_ready()) {
        if budget == 0 {
            break;
        }
        budget -= 1;
        out.delete.push(p.metadata.name.clone());
    }
    out
}

/// The status the DaemonSet's Pods on `nodes` give, as observed now.
pub fn compute_status(
    ds: &DaemonSet,
    hash: &str,
    nodes: &[Node],
    pods: &[&Pod],
) -> DaemonSetStatus {
    let groups = by_node(pods);
    let mut s = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        ..Default::default()
    };
    for node in nodes {
        let live = groups
            .get(node.metadata.name.as_str())
            .map(|g| g.live.as_slice())
            .unwrap_or_default();
        if !should_run(ds, node) {
            if !live.is_empty() {
                s.number_misscheduled += 1;
            }
            continue;
        }
        s.desired_number_scheduled += 1;
        if live.is_empty() {
            continue;
        }
        s.current_number_scheduled += 1;
        if live.iter().any(|p| p.is_ready()) {
            s.number_ready += 1;
        }
        if live.iter().any(|p| hash_of(p) == Some(hash)) {
            s.updated_number_scheduled += 1;
        }
    }
    // No minReadySeconds: a ready Pod is available.
    s.number_available = s.number_ready;
    s.number_unavailable = s.desired_number_scheduled - s.number_available;
    s
}

/// A new Pod of the template, bound to `node`.
pub fn pod_for_node(ds: &DaemonSet, hash: &str, node: &str) -> Pod {
    let t = &ds.spec.template;
    let mut pod = Pod::default();
    pod.set_type_meta();
    pod.metadata.generate_name = Some(format!("{}-", ds.metadata.name));
    pod.metadata.namespace = Some(ds.metadata.namespace_or_default().to_string());
    pod.metadata.labels = t.metadata.labels.clone();
    pod.metadata
        .labels
        .insert(LABEL_CONTROLLER_REVISION_HASH.into(), hash.to_string());
    pod.metadata.annotations = t.metadata.annotations.clone();
    pod.metadata.owner_references = vec![OwnerReference {
        api_version: DaemonSet::API_VERSION.into(),
        kind: DaemonSet::KIND.into(),
        name: ds.metadata.name.clone(),
        uid: ds.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    pod.spec = t.spec.clone();
    pod.spec.node_name = Some(node.to_string());
    pod
}

/// Reconciles the DaemonSet `namespace/name`. Its Pods are found by owner uid; Pods
/// of a DaemonSet that is gone are the garbage collector's.
pub fn reconcile(store: &Store, namespace: &str, name: &str) -> Result<(), DaemonSetError> {
    let key = format!("{namespace}/{name}");
    let err = |source| DaemonSetError::Store {
        key: key.clone(),
        source,
    };
    let Some(ds) = store.get::<DaemonSet>(Some(namespace), name).map_err(err)? else {
        return Ok(());
    };
    // Being deleted (foreground or orphan): the garbage collector owns its Pods now.
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let (nodes, _) = store.list::<Node>(None).map_err(err)?;
    // Only its own are decoded: a namespace's Pods decoded at once are ~7 KiB each.
    let mut mine = Vec::new();
    store
        .visit_where::<Pod, PodView>(
            Some(namespace),
            |p| {
                p.controller()
                    .is_some_and(|c| c.kind == DaemonSet::KIND && c.uid == uid)
            },
            |p| mine.push(p),
        )
        .map_err(err)?;
    let owned: Vec<&Pod> = mine.iter().collect();
    let hash = pod_template_hash(&ds.spec.template);
    let plan = plan(&ds, &hash, &nodes, &owned);
    let recorder = store.recorder();
    for victim in &plan.delete {
        let Some(pod) = owned.iter().find(|p| &p.metadata.name == victim) else {
            continue;
        };
        let out = podgc::delete_pod(
            store,
            Some(namespace),
            victim,
            pod.metadata.uid.as_deref(),
            None,
        )
        .map_err(err)?;
        if out != podgc::Deleted::NotFound {
            info!("daemonset {key}: deleting Pod {victim}");
            recorder.normal(
                ObjectReference::to(&ds),
                "SuccessfulDelete",
                format!("Deleted pod: {victim}"),
            );
        }
    }
    for node in &plan.create_on {
        let pod = create_pod(store, &ds, &hash, node).map_err(err)?;
        info!(
            "daemonset {key}: created Pod {} on {node}",
            pod.metadata.name
        );
        recorder.normal(
            ObjectReference::to(&ds),
            "SuccessfulCreate",
            format!("Created pod: {}", pod.metadata.name),
        );
    }
    let status = compute_status(&ds, &hash, &nodes, &owned);
    if status != ds.status {
        store
            .modify::<DaemonSet>(Some(namespace), name, |cur| {
                if cur.metadata.uid == ds.metadata.uid {
                    cur.status = status;
                }
            })
            .map_err(err)?;
    }
    Ok(())
}

fn create_pod(store: &Store, ds: &DaemonSet, hash: &str, node: &str) -> Result<Pod, StoreError> {
    let template = pod_for_node(ds, hash, node);
    let mut last = None;
    for _ in 0..5 {
        let mut pod = template.clone();
        pod.metadata.name = format!("{}-{}", ds.metadata.name, random_suffix());
        match store.create(pod) {
            Ok(p) => return Ok(p),
            Err(e @ StoreError::AlreadyExists { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("five attempts were made"))
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect()
}

fn all_keys(store: &Store) -> Result<BTreeSet<(String, String)>, StoreError> {
    let (sets, _) = store.list::<DaemonSet>(None)?;
    Ok(sets
        .iter()
        .map(|d| {
            (
                d.metadata.namespace_or_default().to_string(),
                d.metadata.name.clone(),
            )
        })
        .collect())
}

/// What a node contributes to the decisions: heartbeats change neither.
/// What of a Node decides where daemons run: labels, cordon, taints (as kubectl prints them).
type Placement = (BTreeMap<String, String>, bool, Vec<String>);

fn node_placement(node: &Node) -> Placement {
    (
        node.metadata.labels.clone(),
        node.spec.unschedulable == Some(true),
        node.spec.taints.iter().map(|t| t.to_kubectl()).collect(),
    )
}

/// What an event asks for: one DaemonSet, or all of them (a node joined, left or was
/// relabelled).
enum Wake {
    One(String, String),
    All,
}

fn wake(ev: &WatchEvent, nodes: &mut BTreeMap<String, Placement>) -> Option<Wake> {
    match &*ev.object {
        Object::DaemonSet(d) => Some(Wake::One(
            d.metadata.namespace_or_default().to_string(),
            d.metadata.name.clone(),
        )),
        Object::Pod(p) => owner_of(p).map(|o| {
            Wake::One(
                p.metadata.namespace_or_default().to_string(),
                o.name.clone(),
            )
        }),
        Object::Node(n) => {
            let name = n.metadata.name.clone();
            if ev.change == Change::Deleted {
                nodes.remove(&name);
                return Some(Wake::All);
            }
            let placement = node_placement(n);
            if nodes.get(&name) == Some(&placement) {
                return None;
            }
            nodes.insert(name, placement);
            Some(Wake::All)
        }
        _ => None,
    }
}

pub async fn run(store: Arc<Store>, cancel: CancellationToken) {
    run_with(store, DaemonSetConfig::default(), cancel).await
}

pub async fn run_with(store: Arc<Store>, config: DaemonSetConfig, cancel: CancellationToken) {
    let mut events = store.subscribe();
    let mut resync = tokio::time::interval(config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue: BTreeSet<(String, String)> = BTreeSet::new();
    let mut nodes = BTreeMap::new();
    let mut full = false;
    let mut last_pass = Duration::ZERO;
    let mut take =
        |ev: &WatchEvent, queue: &mut BTreeSet<(String, String)>, full: &mut bool| match wake(
            ev, &mut nodes,
        ) {
            Some(Wake::One(ns, name)) => {
                queue.insert((ns, name));
            }
            Some(Wake::All) => *full = true,
            None => {}
        };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = resync.tick() => full = true,
            ev = events.recv() => match ev {
                Ok(ev) => take(&ev, &mut queue, &mut full),
                Err(RecvError::Lagged(_)) => full = true,
                Err(RecvError::Closed) => return,
            },
        }
        if !full && queue.is_empty() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(crate::workqueue::pause(config.debounce, last_pass)) => {}
        }
        loop {
            match events.try_recv() {
                Ok(ev) => take(&ev, &mut queue, &mut full),
                Err(TryRecvError::Lagged(_)) => full = true,
                Err(_) => break,
            }
        }
        if full {
            match all_keys(&store) {
                Ok(keys) => queue.extend(keys),
                Err(e) => warn!("daemonset controller: resync failed: {e}"),
            }
            full = false;
        }
        let started = std::time::Instant::now();
        for (ns, name) in std::mem::take(&mut queue) {
            if let Err(e) = reconcile(&store, &ns, &name) {
                warn!("daemonset controller: {e}");
            }
        }
        last_pass = started.elapsed();
    }
}

#[cfg(test)]
#[path = "daemonset_tests.rs"]
mod tests;
