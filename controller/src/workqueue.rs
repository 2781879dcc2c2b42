//! The loop the workload controllers share, in the kube-rs manner: store events queue
//! the keys of the objects they concern, a short debounce gathers a burst into one
//! pass, a periodic resync heals anything missed (a restart, a lagged watch), and a
//! reconcile may ask to be run again at a time (a Pod that becomes available after
//! `minReadySeconds`, a progress deadline). One task runs every reconcile of a
//! controller, so one object is never reconciled twice at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::{Store, StoreError, WatchEvent};

/// `(namespace, name)` of an object a controller reconciles.
pub type Key = (String, String);

#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Reconcile every object and sweep orphans this often.
    pub resync: Duration,
    /// Wait this long after an event for more before reconciling.
    pub debounce: Duration,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            resync: Duration::from_secs(30),
            debounce: Duration::from_millis(10),
        }
    }
}

/// One controller, as the loop sees it.
pub trait Reconciler {
    /// For log lines: `deployment`, `replicaset`.
    const NAME: &'static str;
    type Error: Display;

    /// The objects an event concerns.
    fn keys_of(&self, store: &Store, ev: &WatchEvent) -> Vec<Key>;
    /// Every object to look at in a resync, including gone ones something still
    /// points at (so their leftovers are cleaned up).
    fn all_keys(&self, store: &Store) -> Result<BTreeSet<Key>, StoreError>;
    /// Makes the world match `namespace/name`; `Some(after)` asks to run again then.
    fn reconcile(
        &self,
        store: &Store,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Duration>, Self::Error>;

    /// Reconciles one pass's keys; a controller may override this to read the store
    /// once for all of them.
    fn reconcile_pass(&self, store: &Store, keys: BTreeSet<Key>) -> Vec<(Key, Outcome<Self>)> {
        keys.into_iter()
            .map(|k| {
                let r = self.reconcile(store, &k.0, &k.1);
                (k, r)
            })
            .collect()
    }
}

/// What one reconcile returned.
pub type Outcome<R> = Result<Option<Duration>, <R as Reconciler>::Error>;

/// Runs `r` until `cancel` fires.
pub async fn run<R: Reconciler>(
    store: Arc<Store>,
    r: R,
    config: LoopConfig,
    cancel: CancellationToken,
) {
    let mut events = store.subscribe();
    let mut resync = tokio::time::interval(config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue: BTreeSet<Key> = BTreeSet::new();
    let mut due: BTreeMap<Key, Instant> = BTreeMap::new();
    let mut full = false;
    let mut last_pass = Duration::ZERO;
    loop {
        let next_due = due.values().min().copied();
        tokio::select! {
            _ = cancel.cancelled() => return,
            // The first tick fires at once: the startup resync.
            _ = resync.tick() => full = true,
            ev = events.recv() => match ev {
                Ok(ev) => queue.extend(r.keys_of(&store, &ev)),
                Err(RecvError::Lagged(_)) => full = true,
                Err(RecvError::Closed) => return,
            },
            _ = sleep_until(next_due) => {}
        }
        let now = Instant::now();
        due.retain(|key, at| {
            if *at <= now {
                queue.insert(key.clone());
                false
            } else {
                true
            }
        });
        if !full && queue.is_empty() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause(config.debounce, last_pass)) => {}
        }
        loop {
            match events.try_recv() {
                Ok(ev) => queue.extend(r.keys_of(&store, &ev)),
                Err(TryRecvError::Lagged(_)) => full = true,
                Err(_) => break,
            }
        }
        if full {
            match r.all_keys(&store) {
                Ok(keys) => queue.extend(keys),
                Err(e) => warn!("{} controller: resync failed: {e}", R::NAME),
            }
            full = false;
        }
        let started = Instant::now();
        let outcomes = r.reconcile_pass(&store, std::mem::take(&mut queue));
        last_pass = started.elapsed();
        for (key, outcome) in outcomes {
            match outcome {
                Ok(Some(after)) => {
                    let at = Instant::now() + after;
                    let slot = due.entry(key).or_insert(at);
                    *slot = (*slot).min(at);
                }
                Ok(None) => {}
                Err(e) => warn!("{} controller: {e}", R::NAME),
            }
        }
    }
}

/// How long to gather events before a pass: the debounce, or as long as the last pass
/// took if that was longer. A pass reads every object its keys concern, so under a
/// stream of events (a 5,000-node fleet reporting) back-to-back passes would take a
/// whole core; this keeps a controller at most half of one, and each pass then handles
/// a bigger batch.
pub fn pause(debounce: Duration, last_pass: Duration) -> Duration {
    debounce.max(last_pass)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
