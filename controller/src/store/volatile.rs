//! Changes that are not worth a disk write each time: a Node whose only news is a newer
//! heartbeat. `Store::modify_volatile` keeps the new version in memory (reads see it at
//! once) and the store writes it as an ordinary change (new revision, watch event) at
//! most once per interval — or earlier, when any other write to the object builds on
//! it, and at shutdown (`Store::persist_volatile`). A `kill -9` loses at most one
//! interval of heartbeat times, which the next report renews anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use punnet_api::Resource;

use super::{Store, StoreError};

pub(super) struct Volatile {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The newest JSON of each entry changed in memory only, by (tree, key).
    pending: HashMap<(&'static str, String), Vec<u8>>,
    /// When the oldest pending change was made: the clock of the bounded rate.
    since: Option<Instant>,
    every: Duration,
}

impl Volatile {
    pub(super) fn new(every: Duration) -> Volatile {
        Volatile {
            inner: Mutex::new(Inner {
                pending: HashMap::new(),
                since: None,
                every,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_interval(&self, every: Duration) {
        self.lock().every = every;
    }

    pub(super) fn get(&self, plural: &'static str, key: &str) -> Option<Vec<u8>> {
        self.lock().pending.get(&(plural, key.to_string())).cloned()
    }

    /// Forgets an entry's pending change (it was just written, or deleted).
    pub(super) fn remove(&self, plural: &'static str, key: &str) {
        let mut inner = self.lock();
        inner.pending.remove(&(plural, key.to_string()));
        if inner.pending.is_empty() {
            inner.since = None;
        }
    }

    fn put(&self, plural: &'static str, key: &str, json: Vec<u8>) {
        let mut inner = self.lock();
        inner.pending.insert((plural, key.to_string()), json);
        inner.since.get_or_insert_with(Instant::now);
    }

    fn due(&self, now: Instant) -> bool {
        let inner = self.lock();
        inner
            .since
            .is_some_and(|t| now.duration_since(t) >= inner.every)
    }

    /// The pending changes, left in place until each is written (`remove`), so that
    /// reads never fall back to an older version on disk meanwhile.
    fn snapshot(&self) -> Vec<((&'static str, String), Vec<u8>)> {
        let mut inner = self.lock();
        inner.since = None;
        inner
            .pending
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(super) fn len(&self) -> usize {
        self.lock().pending.len()
    }
}

impl Store {
    /// Read-modify-write whose result stays in memory: `get` and `list` return it at
    /// once, but it reaches the disk only at the store's bounded rate (see the module
    /// doc). No revision and no watch event until then. For changes that only move
    /// times forward (heartbeats); anything else a watcher must see goes through
    /// `modify`. `Ok(None)` when the object does not exist.
    pub fn modify_volatile<T: Resource>(
        &self,
        namespace: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut T),
    ) -> Result<Option<T>, StoreError> {
        let key = Self::key_of::<T>(namespace, name);
        let result = {
            let _guard = self.lock();
            let Some(current) = self.read::<T>(&key)? else {
                return Ok(None);
            };
            let mut next = current.clone();
            f(&mut next);
            // Identity and revision are the stored ones; only the caller's fields move.
            *next.meta_mut() = current.meta().clone();
            next.set_type_meta();
            if serde_json::to_value(&next).ok() != serde_json::to_value(&current).ok() {
                let json = serde_json::to_vec(&next).expect("resource types always serialise");
                self.volatile.put(T::PLURAL, &key, json);
            }
            next
        };
        if self.volatile.due(Instant::now()) {
            self.write_volatile()?;
        }
        Ok(Some(result))
    }

    /// How many objects have changes not yet written.
    pub fn volatile_pending(&self) -> usize {
        self.volatile.len()
    }

    /// Writes every pending volatile change as an ordinary change.
    pub(super) fn write_volatile(&self) -> Result<(), StoreError> {
        let _guard = self.lock();
        let mut by_kind: HashMap<&'static str, Vec<(String, Vec<u8>)>> = HashMap::new();
        for ((plural, key), json) in self.volatile.snapshot() {
            by_kind.entry(plural).or_default().push((key, json));
        }
        // One transaction per kind: a batch of heartbeats is one write, not one per node.
        for (plural, mut entries) in by_kind {
            entries.sort();
            self.write_entries(plural, entries)?;
        }
        Ok(())
    }
}
