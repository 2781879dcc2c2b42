//! Desired state out (step 9 of the Pod flow): every node's whole set of bound Pods
//! (less those terminating), its Pod CIDR, and the ConfigMaps and Secrets those Pods
//! reference, published retained at QoS 1 on `nodes/<node>/desired`.
//!
//! `DesiredIndex` is the pure part: it follows the store's events, keeps each bound Pod
//! with its status cleared, every ConfigMap and Secret, and each Node's podCIDR, and
//! says which nodes' messages changed. Only a Pod's metadata and spec count: status
//! updates come from the agents, and republishing on them would loop. A ConfigMap or
//! Secret change marks only the nodes whose Pods reference it; a referenced object that
//! does not exist is simply left out (the agent names it in the Pod's status).
//! `run_publisher` debounces, so a Deployment of three replicas is one message per node,
//! and republishes every node after each ConnAck (a restarted broker keeps nothing).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use punnet_api::topics::MAX_PACKET_SIZE;
use punnet_api::wire::{encode, DesiredState};
use punnet_api::{ConfigMap, Node, Object, Pod, PodStatus, Secret};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::refs;
use crate::mqtt::MqttHandle;
use crate::store::{Change, Store, StoreError, WatchEvent};

/// What was last published for one node: its generation and a fingerprint of the rest
/// (a copy of every node's Pods would double what the index holds).
#[derive(Debug, Clone, PartialEq)]
struct Published {
    generation: u64,
    fingerprint: u64,
}

/// The part of a `DesiredState` that decides whether it changed.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
struct Content {
    pods: Vec<Pod>,
    pod_cidr: Option<String>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
}

/// The store's contents the index is built from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
}

impl Snapshot {
    pub fn read(store: &Store) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            pods: store.list::<Pod>(None)?.0,
            nodes: store.list::<Node>(None)?.0,
            config_maps: store.list::<ConfigMap>(None)?.0,
            secrets: store.list::<Secret>(None)?.0,
        })
    }
}

#[derive(Debug, Default)]
pub struct DesiredIndex {
    /// Bound Pods by `namespace/name`, as the agent gets them (status cleared).
    pods: HashMap<String, Pod>,
    /// The keys of `pods` by node, so one node's message never scans every Pod.
    by_node: HashMap<String, BTreeSet<String>>,
    /// Node objects by name, with their podCIDR: they get a (possibly empty) desired
    /// set too.
    nodes: HashMap<String, Option<String>>,
    /// Every ConfigMap and Secret by `namespace/name`.
    config_maps: HashMap<String, ConfigMap>,
    secrets: HashMap<String, Secret>,
    published: HashMap<String, Published>,
    /// Nodes whose message may have changed since the last `take_changes`.
    dirty: BTreeSet<String>,
}

/// A Pod as it goes to the agent: no status (the agent owns it) and no resourceVersion
/// (it changes with every status write and would make every status update a "change").
pub fn for_agent(pod: &Pod) -> Pod {
    let mut p = pod.clone();
    p.status = PodStatus::default();
    p.metadata.resource_version = None;
    p
}

/// Whether a Pod belongs in its node's desired set: bound and not terminating. A Pod
/// marked for deletion leaves the set, which is what makes its agent stop it; the Pod
/// itself stays in the store until the agent confirms (see `podgc`).
pub fn is_desired(pod: &Pod) -> bool {
    pod.spec.node_name.is_some() && pod.metadata.deletion_timestamp.is_none()
}

impl DesiredIndex {
    /// An index of the store's current contents; every node is dirty.
    pub fn from_snapshot(snapshot: &Snapshot) -> DesiredIndex {
        let mut index = DesiredIndex::default();
        index.reset(snapshot);
        index
    }

    /// Replaces the view of the store (after a lagged watch), keeping what was published
    /// so only real differences go out.
    pub fn reset(&mut self, snapshot: &Snapshot) {
        self.pods.clear();
        self.by_node.clear();
        for p in snapshot.pods.iter().filter(|p| is_desired(p)) {
            self.insert_pod(p.metadata.key(), for_agent(p));
        }
        self.nodes = snapshot
            .nodes
            .iter()
            .map(|n| (n.metadata.name.clone(), n.spec.pod_cidr.clone()))
            .collect();
        self.config_maps = snapshot
            .config_maps
            .iter()
            .map(|c| (c.metadata.key(), c.clone()))
            .collect();
        self.secrets = snapshot
            .secrets
            .iter()
            .map(|s| (s.metadata.key(), s.clone()))
            .collect();
        self.dirty = self.known_nodes();
    }

    /// Every node there is a desired set for.
    fn known_nodes(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.nodes.keys().cloned().collect();
        all.extend(self.published.keys().cloned());
        all.extend(self.pods.values().filter_map(|p| p.spec.node_name.clone()));
        all
    }

    fn insert_pod(&mut self, key: String, pod: Pod) {
        if let Some(node) = &pod.spec.node_name {
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(key.clone());
        }
        self.pods.insert(key, pod);
    }

    fn remove_pod(&mut self, key: &str) -> Option<Pod> {
        let old = self.pods.remove(key)?;
        if let Some(node) = &old.spec.node_name {
            if let Some(set) = self.by_node.get_mut(node) {
                set.remove(key);
                if set.is_empty() {
                    self.by_node.remove(node);
                }
            }
        }
        Some(old)
    }

    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Marks the nodes of the Pods that reference `key` through `which`.
    fn dirty_referencing(&mut self, key: &str, secret: bool) {
        for p in self.pods.values() {
            let (cms, secrets) = refs::keys(p);
            let set = if secret { secrets } else { cms };
            if set.contains(key) {
                self.dirty.extend(p.spec.node_name.clone());
            }
        }
    }

    pub fn apply(&mut self, ev: &WatchEvent) {
        let deleted = ev.change == Change::Deleted;
        match &*ev.object {
            Object::Pod(pod) => {
                let key = pod.metadata.key();
                let new = (!deleted && is_desired(pod)).then(|| for_agent(pod));
                // Status-only changes leave the agent's view, and so the set, alone.
                if self.pods.get(&key) == new.as_ref() {
                    return;
                }
                let old = self.remove_pod(&key);
                for p in old.iter().chain(new.iter()) {
                    self.dirty.extend(p.spec.node_name.clone());
                }
                if let Some(new) = new {
                    self.insert_pod(key, new);
                }
            }
            Object::Node(node) => {
                let name = node.metadata.name.clone();
                if deleted {
                    self.nodes.remove(&name);
                } else if self.nodes.get(&name) != Some(&node.spec.pod_cidr) {
                    self.nodes.insert(name.clone(), node.spec.pod_cidr.clone());
                    self.dirty.insert(name);
                }
            }
            Object::ConfigMap(c) => {
                let key = c.metadata.key();
                let changed = if deleted {
                    self.config_maps.remove(&key).is_some()
                } else {
                    self.config_maps.insert(key.clone(), c.clone()).as_ref() != Some(c)
                };
                if changed {
                    self.dirty_referencing(&key, false);
                }
            }
            Object::Secret(s) => {
                let key = s.metadata.key();
                let changed = if deleted {
                    self.secrets.remove(&key).is_some()
                } else {
                    self.secrets.insert(key.clone(), s.clone()).as_ref() != Some(s)
                };
                if changed {
                    self.dirty_referencing(&key, true);
                }
            }
            _ => {}
        }
    }

    /// The Pods bound to `node`, in a stable order.
    pub fn desired_pods(&self, node: &str) -> Vec<Pod> {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|key| self.pods.get(key).cloned())
            .collect()
    }

    /// Everything `node`'s message carries: its Pods, its Pod CIDR, and the existing
    /// ConfigMaps and Secrets those Pods reference (in key order).
    fn content(&self, node: &str) -> Content {
        let pods = self.desired_pods(node);
        let mut cm_keys = BTreeSet::new();
        let mut secret_keys = BTreeSet::new();
        for p in &pods {
            let (cms, secrets) = refs::keys(p);
            cm_keys.extend(cms);
            secret_keys.extend(secrets);
        }
        Content {
            pod_cidr: self.nodes.get(node).cloned().flatten(),
            config_maps: cm_keys
                .iter()
                .filter_map(|k| self.config_maps.get(k).cloned())
                .collect(),
            secrets: secret_keys
                .iter()
                .filter_map(|k| self.secrets.get(k).cloned())
                .collect(),
            pods,
        }
    }

    /// The messages to publish: for each dirty node whose message differs from what was
    /// published, a new `DesiredState` at `revision`. With `all`, every known node goes
    /// out (after a reconnect); unchanged ones keep the generation they had.
    pub fn take_changes(&mut self, all: bool, revision: u64) -> Vec<DesiredState> {
        let nodes = if all {
            self.known_nodes()
        } else {
            std::mem::take(&mut self.dirty)
        };
        self.dirty.clear();
        let mut out = Vec::new();
        for node in nodes {
            let content = self.content(&node);
            let fingerprint = fingerprint(&content);
            let generation = match self.published.get(&node) {
                Some(p) if p.fingerprint == fingerprint => {
                    if !all {
                        continue;
                    }
                    p.generation
                }
                _ => revision,
            };
            self.published.insert(
                node.clone(),
                Published {
                    generation,
                    fingerprint,
                },
            );
            out.push(DesiredState {
                node,
                generation,
                pods: content.pods,
                pod_cidr: content.pod_cidr,
                config_maps: content.config_maps,
                secrets: content.secrets,
            });
        }
        out
    }
}

/// A hash of a node's message content: equal contents, equal fingerprints.
fn fingerprint(content: &Content) -> u64 {
    use std::hash::{Hash, Hasher};
    let bytes = postcard::to_stdvec(content).expect("postcard encoding into a Vec cannot fail");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Publishes desired state until `cancel` fires. `reconnected` is notified on every
/// ConnAck.
pub async fn run_publisher(
    store: Arc<Store>,
    mqtt: MqttHandle,
    reconnected: Arc<Notify>,
    debounce: Duration,
    cancel: CancellationToken,
) {
    // Subscribe before listing, so nothing between the two is missed.
    let mut events = store.subscribe();
    let mut index = match Snapshot::read(&store) {
        Ok(snapshot) => DesiredIndex::from_snapshot(&snapshot),
        Err(e) => {
            warn!("node sync: cannot read the store: {e}");
            DesiredIndex::default()
        }
    };
    let mut relist = false;
    let mut all = false;
    loop {
        if index.has_changes() || all || relist {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(debounce) => {}
            }
            loop {
                match events.try_recv() {
                    Ok(ev) => index.apply(&ev),
                    Err(TryRecvError::Lagged(_)) => relist = true,
                    Err(_) => break,
                }
            }
            if relist {
                match Snapshot::read(&store) {
                    Ok(snapshot) => index.reset(&snapshot),
                    Err(e) => warn!("node sync: cannot read the store: {e}"),
                }
                relist = false;
            }
            // Read after draining: at least as new as every change in these messages.
            let revision = store.revision();
            let messages = index.take_changes(all, revision);
            all = false;
            // While disconnected, queueing would only pile up stale messages in rumqttc;
            // the next ConnAck republishes every node from the index instead.
            if !mqtt.is_connected() {
                continue;
            }
            for msg in messages {
                let topic = mqtt.topics().desired(&msg.node);
                debug!(
                    "node sync: desired for {} at generation {}: {} Pod(s), {} ConfigMap(s), {} Secret(s)",
                    msg.node,
                    msg.generation,
                    msg.pods.len(),
                    msg.config_maps.len(),
                    msg.secrets.len()
                );
                let payload = encode(&msg);
                if payload.len() > MAX_PACKET_SIZE {
                    warn!(
                        "node sync: desired state for node {} is {} bytes, over the MQTT limit of {} bytes: its Pods reference {} ConfigMap(s) and {} Secret(s); make them smaller or spread the Pods over more nodes",
                        msg.node,
                        payload.len(),
                        MAX_PACKET_SIZE,
                        msg.config_maps.len(),
                        msg.secrets.len()
                    );
                    continue;
                }
                let sent = tokio::select! {
                    _ = cancel.cancelled() => return,
                    sent = mqtt.publish(topic, true, payload) => sent,
                };
                if let Err(e) = sent {
                    warn!("node sync: desired state for node {}: {e}", msg.node);
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = reconnected.notified() => all = true,
            ev = events.recv() => match ev {
                Ok(ev) => index.apply(&ev),
                Err(RecvError::Lagged(_)) => relist = true,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.metadata.resource_version = Some("1".into());
        p.spec.node_name = node.map(str::to_string);
        p
    }

    fn node(name: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n
    }

    fn from_lists(pods: &[Pod], nodes: &[Node]) -> DesiredIndex {
        DesiredIndex::from_snapshot(&snap(pods, nodes))
    }

    fn snap(pods: &[Pod], nodes: &[Node]) -> Snapshot {
        Snapshot {
            pods: pods.to_vec(),
            nodes: nodes.to_vec(),
            ..Default::default()
        }
    }

    fn ev(revision: u64, change: Change, object: Object) -> WatchEvent {
        WatchEvent {
            revision,
            change,
            object: object.into(),
        }
    }

    fn summary(msgs: &[DesiredState]) -> Vec<(String, u64, Vec<String>)> {
        msgs.iter()
            .map(|m| {
                (
                    m.node.clone(),
                    m.generation,
                    m.pods.iter().map(|p| p.metadata.name.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn initial_publish_covers_nodes_and_bound_pods() {
        let mut idx = from_lists(
            &[pod("a", Some("n1")), pod("b", Some("n2")), pod("c", None)],
            &[node("n1"), node("n3")],
        );
        let msgs = idx.take_changes(false, 7);
        assert_eq!(
            summary(&msgs),
            vec![
                ("n1".into(), 7, vec!["a".into()]),
                ("n2".into(), 7, vec!["b".into()]),
                ("n3".into(), 7, vec![]),
            ]
        );
        assert!(msgs
            .iter()
            .all(|m| m.pods.iter().all(|p| p.metadata.resource_version.is_none())));
        assert!(idx.take_changes(false, 8).is_empty());
    }

    #[test]
    fn status_only_changes_publish_nothing() {
        let mut idx = from_lists(&[pod("a", Some("n1"))], &[]);
        idx.take_changes(false, 1);
        let mut running = pod("a", Some("n1"));
        running.status.phase = Some("Running".into());
        running.metadata.resource_version = Some("2".into());
        idx.apply(&ev(2, Change::Modified, Object::Pod(running)));
        assert!(idx.take_changes(false, 2).is_empty());
    }

    #[test]
    fn binding_scaling_and_deleting_change_the_set() {
        let mut idx = from_lists(&[], &[node("n1")]);
        assert_eq!(
            summary(&idx.take_changes(false, 1)),
            vec![("n1".into(), 1, vec![])]
        );
        // Created unbound: nothing yet. Bound: n1's set grows, in one message for two.
        idx.apply(&ev(2, Change::Added, Object::Pod(pod("a", None))));
        idx.apply(&ev(3, Change::Added, Object::Pod(pod("b", None))));
        assert!(idx.take_changes(false, 3).is_empty());
        idx.apply(&ev(4, Change::Modified, Object::Pod(pod("a", Some("n1")))));
        idx.apply(&ev(5, Change::Modified, Object::Pod(pod("b", Some("n1")))));
        assert_eq!(
            summary(&idx.take_changes(false, 5)),
            vec![("n1".into(), 5, vec!["a".into(), "b".into()])]
        );
        idx.apply(&ev(6, Change::Deleted, Object::Pod(pod("a", Some("n1")))));
        assert_eq!(
            summary(&idx.take_changes(false, 6)),
            vec![("n1".into(), 6, vec!["b".into()])]
        );
        // A spec change the agent must see.
        let mut b = pod("b", Some("n1"));
        b.metadata.labels.insert("x".into(), "y".into());
        idx.apply(&ev(7, Change::Modified, Object::Pod(b)));
        assert_eq!(idx.take_changes(false, 7).len(), 1);
    }

    #[test]
    fn moving_a_pod_updates_both_nodes_and_republish_keeps_generations() {
        let mut idx = from_lists(&[pod("a", Some("n1"))], &[node("n2")]);
        idx.take_changes(false, 4);
        idx.apply(&ev(5, Change::Modified, Object::Pod(pod("a", Some("n2")))));
        assert_eq!(
            summary(&idx.take_changes(false, 5)),
            vec![("n1".into(), 5, vec![]), ("n2".into(), 5, vec!["a".into()])]
        );
        assert_eq!(
            summary(&idx.take_changes(true, 9)),
            vec![("n1".into(), 5, vec![]), ("n2".into(), 5, vec!["a".into()])]
        );
        // A new Node object gets its (empty) set at once.
        idx.apply(&ev(10, Change::Added, Object::Node(node("n3"))));
        assert_eq!(
            summary(&idx.take_changes(false, 10)),
            vec![("n3".into(), 10, vec![])]
        );
    }

    #[test]
    fn reset_after_lag_publishes_only_differences() {
        let mut idx = from_lists(&[pod("a", Some("n1")), pod("b", Some("n2"))], &[]);
        idx.take_changes(false, 2);
        idx.reset(&snap(&[pod("a", Some("n1"))], &[]));
        assert_eq!(
            summary(&idx.take_changes(false, 9)),
            vec![("n2".into(), 9, vec![])]
        );
    }

    #[test]
    fn a_terminating_pod_leaves_the_set_at_once() {
        let mut idx = from_lists(&[pod("a", Some("n1")), pod("b", Some("n1"))], &[]);
        idx.take_changes(false, 1);
        let mut a = pod("a", Some("n1"));
        a.metadata.deletion_timestamp = Some(punnet_api::Time::now());
        a.metadata.deletion_grace_period_seconds = Some(30);
        idx.apply(&ev(2, Change::Modified, Object::Pod(a.clone())));
        assert_eq!(
            summary(&idx.take_changes(false, 2)),
            vec![("n1".into(), 2, vec!["b".into()])]
        );
        // Its status updates and final removal change nothing more.
        a.status.phase = Some("Running".into());
        idx.apply(&ev(3, Change::Modified, Object::Pod(a.clone())));
        idx.apply(&ev(4, Change::Deleted, Object::Pod(a.clone())));
        assert!(idx.take_changes(false, 4).is_empty());
        // After a lagged watch too.
        idx.reset(&snap(&[a, pod("b", Some("n1"))], &[]));
        assert!(idx.take_changes(false, 5).is_empty());
    }

    fn config_map(name: &str, value: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = name.into();
        c.metadata.namespace = Some("default".into());
        c.data.insert("k".into(), value.into());
        c
    }

    fn secret(name: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = name.into();
        s.metadata.namespace = Some("default".into());
        s.data.insert("k".into(), "dg==".into());
        s
    }

    /// A Pod on `node` mounting ConfigMap `cm` and pulling with Secret `secret`.
    fn consumer(name: &str, node: &str, cm: &str, secret: &str) -> Pod {
        let mut p = pod(name, Some(node));
        p.spec.volumes.push(punnet_api::Volume {
            name: "conf".into(),
            config_map: Some(punnet_api::ConfigMapVolumeSource {
                name: cm.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        p.spec
            .image_pull_secrets
            .push(punnet_api::LocalObjectReference {
                name: secret.into(),
            });
        p
    }

    fn data_of(msgs: &[DesiredState]) -> Vec<(String, Vec<String>, Vec<String>)> {
        msgs.iter()
            .map(|m| {
                (
                    m.node.clone(),
                    m.config_maps
                        .iter()
                        .map(|c| format!("{}={}", c.metadata.name, c.data["k"]))
                        .collect(),
                    m.secrets.iter().map(|s| s.metadata.name.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn referenced_config_maps_and_secrets_go_to_the_nodes_that_use_them() {
        let mut idx = DesiredIndex::from_snapshot(&Snapshot {
            pods: vec![consumer("a", "n1", "conf", "regcred"), pod("b", Some("n2"))],
            nodes: vec![node("n1"), node("n2")],
            config_maps: vec![config_map("conf", "1"), config_map("unused", "x")],
            secrets: vec![secret("other")],
        });
        // A missing Secret is simply absent.
        assert_eq!(
            data_of(&idx.take_changes(false, 1)),
            vec![
                ("n1".into(), vec!["conf=1".into()], vec![]),
                ("n2".into(), vec![], vec![]),
            ]
        );
        // Creating the Secret and changing the ConfigMap republish n1 only.
        idx.apply(&ev(2, Change::Added, Object::Secret(secret("regcred"))));
        idx.apply(&ev(
            3,
            Change::Modified,
            Object::ConfigMap(config_map("conf", "2")),
        ));
        assert_eq!(
            data_of(&idx.take_changes(false, 3)),
            vec![("n1".into(), vec!["conf=2".into()], vec!["regcred".into()])]
        );
        // Objects nobody references change nothing; neither does an unchanged write.
        idx.apply(&ev(
            4,
            Change::Modified,
            Object::ConfigMap(config_map("unused", "y")),
        ));
        idx.apply(&ev(
            5,
            Change::Modified,
            Object::ConfigMap(config_map("conf", "2")),
        ));
        idx.apply(&ev(6, Change::Added, Object::Secret(secret("other-2"))));
        assert!(idx.take_changes(false, 6).is_empty());
        // Deleting the ConfigMap takes it out of n1's message.
        idx.apply(&ev(
            7,
            Change::Deleted,
            Object::ConfigMap(config_map("conf", "2")),
        ));
        assert_eq!(
            data_of(&idx.take_changes(false, 7)),
            vec![("n1".into(), vec![], vec!["regcred".into()])]
        );
        // Another namespace's object of the same name is not the Pod's.
        let mut elsewhere = config_map("conf", "3");
        elsewhere.metadata.namespace = Some("other".into());
        idx.apply(&ev(8, Change::Added, Object::ConfigMap(elsewhere)));
        assert!(idx.take_changes(false, 8).is_empty());
    }

    #[test]
    fn the_pod_cidr_follows_the_node() {
        let mut n1 = node("n1");
        let mut idx = from_lists(&[], &[n1.clone(), node("n2")]);
        let first = idx.take_changes(false, 1);
        assert!(first.iter().all(|m| m.pod_cidr.is_none()));
        n1.spec.pod_cidr = Some("10.42.0.0/24".into());
        idx.apply(&ev(2, Change::Modified, Object::Node(n1.clone())));
        let msgs = idx.take_changes(false, 2);
        assert_eq!(msgs.len(), 1);
        assert_eq!(
            (msgs[0].node.as_str(), msgs[0].pod_cidr.as_deref()),
            ("n1", Some("10.42.0.0/24"))
        );
        // A status change of the Node (same podCIDR) publishes nothing.
        n1.status.capacity.insert("cpu".into(), "4".into());
        idx.apply(&ev(3, Change::Modified, Object::Node(n1)));
        assert!(idx.take_changes(false, 3).is_empty());
    }
}
