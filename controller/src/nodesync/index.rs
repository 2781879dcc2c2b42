//! Which Pods are bound to which node, and which are terminating, kept in memory from the
//! store's watch so node sync never lists every Pod for one node's report, will or
//! sweep (with 5,000 nodes that was 50,000 Pods decoded per report).
//!
//! The index only says where to look: every decision re-reads the Pod from the store and
//! checks it again, so an entry a moment stale costs a read, never a wrong write.
//! `PodIndexFollower` brings it up to date before each use and re-lists after a lagged
//! watch.

use std::collections::{BTreeSet, HashMap};

use punnet_api::{Object, Pod};
use tokio::sync::broadcast::{self, error::TryRecvError};

use crate::store::{Change, Store, StoreError, WatchEvent};

/// Where one Pod is, as far as node sync cares.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    node: Option<String>,
    terminating: bool,
    /// The revision this entry was taken at: an older event never overwrites it.
    revision: u64,
}

#[derive(Debug, Default)]
pub struct PodIndex {
    /// By `namespace/name`.
    pods: HashMap<String, Entry>,
    /// Pod keys by node name.
    by_node: HashMap<String, BTreeSet<String>>,
    terminating: BTreeSet<String>,
}

/// `namespace/name` of a Pod, as the index keys it.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

impl PodIndex {
    pub fn from_pods(pods: &[Pod]) -> PodIndex {
        let mut index = PodIndex::default();
        for p in pods {
            index.put(p, p.metadata.revision());
        }
        index
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let old = self.pods.remove(key)?;
        if let Some(node) = &old.node {
            if let Some(set) = self.by_node.get_mut(node) {
                set.remove(key);
                if set.is_empty() {
                    self.by_node.remove(node);
                }
            }
        }
        self.terminating.remove(key);
        Some(old)
    }

    fn put(&mut self, pod: &Pod, revision: u64) {
        let key = pod.metadata.key();
        if self.pods.get(&key).is_some_and(|e| e.revision > revision) {
            return;
        }
        self.remove(&key);
        let entry = Entry {
            node: pod.spec.node_name.clone(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            revision,
        };
        if let Some(node) = &entry.node {
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(key.clone());
        }
        if entry.terminating {
            self.terminating.insert(key.clone());
        }
        self.pods.insert(key, entry);
    }

    pub fn apply(&mut self, ev: &WatchEvent) {
        let Object::Pod(pod) = &*ev.object else {
            return;
        };
        if ev.change == Change::Deleted {
            let key = pod.metadata.key();
            if self
                .pods
                .get(&key)
                .is_some_and(|e| e.revision <= ev.revision)
            {
                self.remove(&key);
            }
        } else {
            self.put(pod, ev.revision);
        }
    }

    /// Keys of the Pods bound to `node`.
    pub fn on_node(&self, node: &str) -> Vec<String> {
        self.by_node
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Keys and revisions of the Pods bound to `node`, in key order.
    pub fn revisions_on(&self, node: &str) -> Vec<(String, u64)> {
        self.by_node
            .get(node)
            .map(|s| {
                s.iter()
                    .filter_map(|k| Some((k.clone(), self.pods.get(k)?.revision)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keys of the terminating Pods.
    pub fn terminating(&self) -> Vec<String> {
        self.terminating.iter().cloned().collect()
    }

    /// Keys of the terminating Pods bound to `node`.
    pub fn terminating_on(&self, node: &str) -> Vec<String> {
        self.by_node
            .get(node)
            .map(|s| {
                s.iter()
                    .filter(|k| self.terminating.contains(*k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

/// A `PodIndex` that follows the store.
pub struct PodIndexFollower {
    events: broadcast::Receiver<WatchEvent>,
    index: PodIndex,
}

impl PodIndexFollower {
    /// Subscribes, then lists: nothing between the two is missed.
    pub fn new(store: &Store) -> Result<PodIndexFollower, StoreError> {
        let events = store.subscribe();
        let (pods, _) = store.list::<Pod>(None)?;
        Ok(PodIndexFollower {
            events,
            index: PodIndex::from_pods(&pods),
        })
    }

    /// Applies every change committed so far (re-lists after a lag) and returns the index.
    pub fn current(&mut self, store: &Store) -> Result<&PodIndex, StoreError> {
        loop {
            match self.events.try_recv() {
                Ok(ev) => self.index.apply(&ev),
                Err(TryRecvError::Lagged(_)) => {
                    // Drop what is queued: the list is newer than all of it.
                    self.events = self.events.resubscribe();
                    let (pods, _) = store.list::<Pod>(None)?;
                    self.index = PodIndex::from_pods(&pods);
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        Ok(&self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, rv: u64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.metadata.resource_version = Some(rv.to_string());
        p.spec.node_name = node.map(str::to_string);
        p
    }

    fn ev(change: Change, p: Pod) -> WatchEvent {
        WatchEvent {
            revision: p.metadata.revision(),
            change,
            object: Object::Pod(p).into(),
        }
    }

    #[test]
    fn follows_binding_moving_terminating_and_deleting() {
        let mut idx = PodIndex::from_pods(&[pod("a", Some("n1"), 1), pod("b", None, 2)]);
        assert_eq!(idx.on_node("n1"), vec!["default/a"]);
        idx.apply(&ev(Change::Modified, pod("b", Some("n1"), 3)));
        assert_eq!(idx.on_node("n1"), vec!["default/a", "default/b"]);
        idx.apply(&ev(Change::Modified, pod("a", Some("n2"), 4)));
        assert_eq!(idx.on_node("n1"), vec!["default/b"]);
        assert_eq!(idx.on_node("n2"), vec!["default/a"]);
        let mut t = pod("b", Some("n1"), 5);
        t.metadata.deletion_timestamp = Some(punnet_api::Time::now());
        idx.apply(&ev(Change::Modified, t.clone()));
        assert_eq!(idx.terminating(), vec!["default/b"]);
        assert_eq!(idx.terminating_on("n1"), vec!["default/b"]);
        assert!(idx.terminating_on("n2").is_empty());
        t.metadata.resource_version = Some("6".into());
        idx.apply(&ev(Change::Deleted, t));
        assert!(idx.on_node("n1").is_empty() && idx.terminating().is_empty());
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn an_older_event_does_not_undo_a_newer_entry() {
        let mut idx = PodIndex::from_pods(&[pod("a", Some("n1"), 7)]);
        idx.apply(&ev(Change::Modified, pod("a", None, 5)));
        idx.apply(&ev(Change::Deleted, pod("a", None, 6)));
        assert_eq!(idx.on_node("n1"), vec!["default/a"]);
    }

    #[test]
    fn the_follower_catches_up_and_survives_a_lag() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(pod("a", Some("n1"), 0)).unwrap();
        let mut f = PodIndexFollower::new(&store).unwrap();
        store.create(pod("b", Some("n1"), 0)).unwrap();
        assert_eq!(f.current(&store).unwrap().on_node("n1").len(), 2);
        // More changes than the watch holds: the follower re-lists.
        for i in 0..5000 {
            store.create(pod(&format!("p{i}"), Some("n2"), 0)).unwrap();
        }
        assert_eq!(f.current(&store).unwrap().on_node("n2").len(), 5000);
        assert_eq!(f.current(&store).unwrap().len(), 5002);
    }
}
