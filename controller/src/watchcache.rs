//! The watch cache: a bounded in-memory history of the store's committed changes, so
//! that a watch can start from any recent `resourceVersion` (after a list, or to resume
//! after a disconnect) without loss or duplicates, as the API server's watch cache does.
//! A version older than the history is answered `410 Gone` and the client re-lists.
//!
//! Fed by `store.subscribe()` from one task. Revisions are consecutive, so a gap in the
//! feed (the feeder lagged) is known exactly: the history restarts after it and every
//! live watcher is told to re-list.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::broadcast::{self, error::RecvError};

use crate::store::{Store, WatchEvent};

/// Changes kept. A Pod is a few KiB, so this bounds the cache to some MiB.
pub const DEFAULT_CAPACITY: usize = 4096;

/// What live watchers receive.
#[derive(Debug, Clone)]
pub enum Feed {
    Event(Arc<WatchEvent>),
    /// The history broke off (the feeder fell behind the store): re-list.
    Reset,
}

pub struct WatchCache {
    inner: Mutex<Inner>,
    capacity: usize,
    live: broadcast::Sender<Feed>,
}

struct Inner {
    history: VecDeque<Arc<WatchEvent>>,
    /// Every change after this revision is in `history` (or still on its way).
    floor: u64,
    /// The newest revision taken in.
    latest: u64,
}

/// Where a watch from some revision starts.
pub enum Since {
    /// The revision is older than the history: the client must re-list.
    Expired { oldest: u64 },
    /// The changes after the revision that are already here, and the ones to come
    /// (which may repeat the newest of `backlog`: skip revisions already seen).
    Events {
        backlog: Vec<Arc<WatchEvent>>,
        live: broadcast::Receiver<Feed>,
    },
}

impl WatchCache {
    /// A cache of the store's changes from now on, fed by a task on the current tokio
    /// runtime (without one, watches only see what happens after they start).
    pub fn start(store: &Store, capacity: usize) -> Arc<WatchCache> {
        let rx = store.subscribe();
        // Subscribed first: every change after `floor` reaches the feeder.
        let floor = store.revision();
        let (live, _) = broadcast::channel(1024);
        let cache = Arc::new(WatchCache {
            inner: Mutex::new(Inner {
                history: VecDeque::new(),
                floor,
                latest: floor,
            }),
            capacity: capacity.max(1),
            live,
        });
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(feed(Arc::downgrade(&cache), rx));
            }
            Err(_) => tracing::warn!("watch cache started outside a tokio runtime: no history"),
        }
        cache
    }

    /// Takes one committed change in (in revision order).
    pub fn push(&self, event: WatchEvent) {
        let mut inner = self.lock();
        if event.revision <= inner.latest {
            return;
        }
        if event.revision > inner.latest + 1 {
            // A gap: what came between is lost, so the history starts after it.
            inner.history.clear();
            inner.floor = event.revision - 1;
            let _ = self.live.send(Feed::Reset);
        }
        let event = Arc::new(event);
        inner.latest = event.revision;
        inner.history.push_back(event.clone());
        while inner.history.len() > self.capacity {
            if let Some(old) = inner.history.pop_front() {
                inner.floor = old.revision;
            }
        }
        let _ = self.live.send(Feed::Event(event));
    }

    /// The changes after `revision`, and a subscription to the ones to come.
    pub fn since(&self, revision: u64) -> Since {
        let inner = self.lock();
        if revision < inner.floor {
            return Since::Expired {
                oldest: inner.floor,
            };
        }
        let backlog = inner
            .history
            .iter()
            .filter(|e| e.revision > revision)
            .cloned()
            .collect();
        Since::Events {
            backlog,
            live: self.live.subscribe(),
        }
    }

    /// The newest revision taken in.
    pub fn latest(&self) -> u64 {
        self.lock().latest
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Moves the store's changes into the cache until the store or the cache is gone.
async fn feed(cache: Weak<WatchCache>, mut rx: broadcast::Receiver<WatchEvent>) {
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            // The next event's revision shows the gap; `push` handles it.
            Err(RecvError::Lagged(n)) => {
                tracing::warn!("watch cache fell {n} changes behind the store; watchers re-list");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(cache) = cache.upgrade() else { return };
        cache.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Change;
    use punnet_api::{Object, Pod};

    fn event(revision: u64) -> WatchEvent {
        let mut p = Pod::default();
        p.metadata.name = format!("p{revision}");
        WatchEvent {
            revision,
            change: Change::Added,
            object: Object::Pod(p).into(),
        }
    }

    fn cache(floor: u64, capacity: usize) -> WatchCache {
        WatchCache {
            inner: Mutex::new(Inner {
                history: VecDeque::new(),
                floor,
                latest: floor,
            }),
            capacity,
            live: broadcast::channel(16).0,
        }
    }

    fn revisions(since: Since) -> Vec<u64> {
        match since {
            Since::Events { backlog, .. } => backlog.iter().map(|e| e.revision).collect(),
            Since::Expired { oldest } => panic!("expired (oldest {oldest})"),
        }
    }

    #[test]
    fn history_is_bounded_and_old_versions_expire() {
        let c = cache(10, 3);
        for r in 11..=15 {
            c.push(event(r));
        }
        c.push(event(14)); // a repeat is ignored
        assert_eq!(revisions(c.since(12)), [13, 14, 15]);
        assert_eq!(revisions(c.since(15)), Vec::<u64>::new());
        assert!(matches!(c.since(11), Since::Expired { oldest: 12 }));
        assert_eq!(c.latest(), 15);
    }

    #[test]
    fn a_gap_restarts_the_history_and_resets_watchers() {
        let c = cache(0, 10);
        c.push(event(1));
        let Since::Events { mut live, .. } = c.since(1) else {
            panic!("expected events")
        };
        c.push(event(5));
        assert!(matches!(live.try_recv(), Ok(Feed::Reset)));
        assert!(matches!(live.try_recv(), Ok(Feed::Event(e)) if e.revision == 5));
        assert!(matches!(c.since(1), Since::Expired { oldest: 4 }));
        assert_eq!(revisions(c.since(4)), [5]);
    }
}
