//! The fleet page's index of every Pod (phase and node, by `namespace/name`), kept in
//! memory from the store's watch, so that a poll of `/ui/api/fleet` costs the Pods it
//! shows, not a decode of every Pod of the fleet (50,000 at 5,000 boards: seconds per
//! poll, every 2 s, for each open page).
//!
//! Started by the first request that needs it (a controller nobody looks at keeps no
//! copy); one task follows the watch and re-reads the Pods when it falls behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

use punnet_api::{Object, Pod};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::OnceCell;

use crate::store::{Change, Store, StoreError, WatchEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Pending,
    Succeeded,
    Failed,
}

impl Phase {
    fn of(pod: &Pod) -> Phase {
        match pod.status.phase.as_deref() {
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            _ => Phase::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    phase: Phase,
    node: Option<Arc<str>>,
    revision: u64,
}

/// Pods by phase, as the page's header counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    pub pods: usize,
    pub running: usize,
    pub pending: usize,
    pub failed: usize,
}

impl PhaseCounts {
    fn add(&mut self, phase: Phase, by: isize) {
        let bump = |n: &mut usize| *n = n.saturating_add_signed(by);
        bump(&mut self.pods);
        match phase {
            Phase::Running => bump(&mut self.running),
            Phase::Pending => bump(&mut self.pending),
            Phase::Failed => bump(&mut self.failed),
            Phase::Succeeded => {}
        }
    }
}

/// The index itself: pure, fed one Pod at a time.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: BTreeMap<String, Entry>,
    by_node: HashMap<Arc<str>, BTreeSet<String>>,
    counts: PhaseCounts,
}

/// What one poll needs from the index.
#[derive(Debug, Default, PartialEq)]
pub struct Selection {
    pub counts: PhaseCounts,
    /// Pods whose key or node contains the filter.
    pub matching: usize,
    /// The first `limit` of them, in key order.
    pub keys: Vec<String>,
}

impl PodIndex {
    /// Takes in a Pod as of `revision`, unless the index already has it as of a later one
    /// (the initial read and the watch overlap).
    pub fn put(&mut self, pod: &Pod, revision: u64) {
        let key = pod.metadata.key();
        if self.pods.get(&key).is_some_and(|e| e.revision >= revision) {
            return;
        }
        self.remove_entry(&key);
        let node: Option<Arc<str>> = pod.spec.node_name.as_deref().map(Arc::from);
        if let Some(n) = &node {
            self.by_node
                .entry(n.clone())
                .or_default()
                .insert(key.clone());
        }
        let entry = Entry {
            phase: Phase::of(pod),
            node,
            revision,
        };
        self.counts.add(entry.phase, 1);
        self.pods.insert(key, entry);
    }

    /// A Pod deleted at `revision`.
    pub fn delete(&mut self, pod: &Pod, revision: u64) {
        let key = pod.metadata.key();
        if self.pods.get(&key).is_some_and(|e| e.revision < revision) {
            self.remove_entry(&key);
        }
    }

    fn remove_entry(&mut self, key: &str) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        self.counts.add(old.phase, -1);
        if let Some(n) = old.node {
            if let Some(keys) = self.by_node.get_mut(&n) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_node.remove(&n);
                }
            }
        }
    }

    pub fn apply(&mut self, event: &WatchEvent) {
        if let Object::Pod(pod) = &*event.object {
            match event.change {
                Change::Deleted => self.delete(pod, event.revision),
                Change::Added | Change::Modified => self.put(pod, event.revision),
            }
        }
    }

    /// Counts, and the Pods whose `namespace/name` or node contains `filter`
    /// (case-insensitive; empty matches all), at most `limit` keys.
    pub fn select(&self, filter: &str, limit: usize) -> Selection {
        let needle = filter.trim().to_lowercase();
        let mut out = Selection {
            counts: self.counts,
            ..Selection::default()
        };
        for (key, entry) in &self.pods {
            let hit = needle.is_empty()
                || key.to_lowercase().contains(&needle)
                || entry
                    .node
                    .as_deref()
                    .is_some_and(|n| n.to_lowercase().contains(&needle));
            if hit {
                out.matching += 1;
                if out.keys.len() < limit {
                    out.keys.push(key.clone());
                }
            }
        }
        out
    }

    /// The first `limit` Pods bound to `node`, in key order.
    pub fn on_node(&self, node: &str, limit: usize) -> Vec<String> {
        self.by_node
            .get(node)
            .map(|keys| keys.iter().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}

/// The index shared by the API's handlers, fed by a task.
#[derive(Default)]
pub struct PodSummary {
    index: Mutex<PodIndex>,
    /// Filled once the first read of the Pods is in and the task follows the watch. A
    /// first read that fails leaves it empty, and the next request tries again.
    started: OnceCell<()>,
}

impl PodSummary {
    /// Starts following `store` on first use, and waits until the index has every Pod.
    pub async fn ready(self: &Arc<Self>, store: &Arc<Store>) -> Result<(), StoreError> {
        self.started
            .get_or_try_init(|| async {
                // Subscribed before the read: every change after it reaches the task.
                let events = store.subscribe();
                self.reload(store.clone()).await?;
                tokio::spawn(follow(Arc::downgrade(self), store.clone(), events));
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Re-reads every Pod (a blocking sled walk) into a new index.
    async fn reload(&self, store: Arc<Store>) -> Result<(), StoreError> {
        let fresh = tokio::task::spawn_blocking(move || {
            let mut index = PodIndex::default();
            store.visit::<Pod>(None, |pod| index.put(&pod, pod.metadata.revision()))?;
            Ok::<_, StoreError>(index)
        })
        .await
        .map_err(|e| StoreError::Invalid {
            kind: "Pod",
            key: "*".into(),
            message: format!("reading the Pods for the fleet page failed: {e}"),
        })??;
        *self.lock() = fresh;
        Ok(())
    }

    pub fn with<R>(&self, f: impl FnOnce(&PodIndex) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PodIndex> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies the store's changes until the store or the summary is gone; re-reads after
/// falling behind (the changes in between are lost).
async fn follow(
    summary: Weak<PodSummary>,
    store: Arc<Store>,
    mut events: broadcast::Receiver<WatchEvent>,
) {
    loop {
        let event = events.recv().await;
        let Some(summary) = summary.upgrade() else {
            return;
        };
        match event {
            Ok(ev) => summary.lock().apply(&ev),
            Err(RecvError::Lagged(n)) => {
                tracing::debug!("fleet page: Pod index fell {n} changes behind; re-reading");
                events = events.resubscribe();
                while let Err(e) = summary.reload(store.clone()).await {
                    tracing::warn!("fleet page: cannot re-read the Pods: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, node: Option<&str>, phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = name.into();
        p.spec.node_name = node.map(Into::into);
        p.status.phase = Some(phase.into());
        p
    }

    fn event(change: Change, revision: u64, p: Pod) -> WatchEvent {
        WatchEvent {
            revision,
            change,
            object: Object::Pod(p).into(),
        }
    }

    fn change(i: &mut PodIndex, c: Change, rev: u64, name: &str, node: Option<&str>, phase: &str) {
        i.apply(&event(c, rev, pod("default", name, node, phase)));
    }

    #[test]
    fn counts_and_nodes_follow_changes() {
        let mut i = PodIndex::default();
        change(&mut i, Change::Added, 1, "a", None, "Pending");
        change(&mut i, Change::Added, 2, "b", Some("pi-1"), "Running");
        change(&mut i, Change::Modified, 3, "a", Some("pi-2"), "Running");
        let all = i.select("", 10);
        assert_eq!(
            all.counts,
            PhaseCounts {
                pods: 2,
                running: 2,
                pending: 0,
                failed: 0
            }
        );
        assert_eq!(i.on_node("pi-2", 10), ["default/a"]);
        change(&mut i, Change::Modified, 4, "a", Some("pi-2"), "Failed");
        change(&mut i, Change::Deleted, 5, "b", Some("pi-1"), "Running");
        let all = i.select("", 10);
        assert_eq!(
            (all.counts.pods, all.counts.running, all.counts.failed),
            (1, 0, 1)
        );
        assert!(i.on_node("pi-1", 10).is_empty());
        assert_eq!(all.keys, ["default/a"]);
    }

    #[test]
    fn an_older_copy_never_replaces_a_newer_one() {
        let mut i = PodIndex::default();
        // The initial read saw revision 7; the watch then delivers older changes.
        i.put(&pod("default", "a", Some("pi-1"), "Running"), 7);
        change(&mut i, Change::Modified, 5, "a", None, "Pending");
        change(&mut i, Change::Deleted, 6, "a", None, "Pending");
        assert_eq!(i.select("", 10).counts.running, 1);
        assert_eq!(i.on_node("pi-1", 10), ["default/a"]);
        change(&mut i, Change::Deleted, 8, "a", Some("pi-1"), "Running");
        assert_eq!(i.select("", 10), Selection::default());
    }

    #[test]
    fn select_filters_by_key_or_node_and_stops_at_the_limit() {
        let mut i = PodIndex::default();
        for (r, n) in (1..=5).zip(["web-1", "web-2", "db-1", "web-3", "cache"]) {
            let node = if n == "cache" { "pi-web" } else { "pi-9" };
            i.put(&pod("default", n, Some(node), "Running"), r);
        }
        let s = i.select("WEB", 2);
        assert_eq!(s.matching, 4);
        assert_eq!(s.keys, ["default/cache", "default/web-1"]);
        assert_eq!(s.counts.pods, 5);
        assert_eq!(i.on_node("pi-9", 2), ["default/db-1", "default/web-1"]);
    }
}
