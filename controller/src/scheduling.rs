//! The scheduling loop: binds Pending Pods that have no node, using the pure decisions of
//! `scheduler`. Runs a pass when Pods or Nodes change (debounced) and on a timer, so a
//! Pod that did not fit is retried when room appears. What it knows of Nodes and Pods is
//! the in-memory `schedcache`, kept from the store's watch.

use std::sync::Arc;
use std::time::Duration;

use punnet_api::{
    Node, Object, ObjectReference, Pod, PodCondition, Time, EVENT_NORMAL, EVENT_WARNING,
};
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::schedcache::SchedCache;
use crate::scheduler::{self, Decision};
use crate::store::{Change, Store, StoreError, WatchEvent};

#[derive(Debug, Clone)]
pub struct SchedulingConfig {
    /// Retry unschedulable Pods at least this often, even with no change in the store.
    pub retry: Duration,
    /// Wait this long after a change for more, so one Deployment is one pass.
    pub debounce: Duration,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        SchedulingConfig {
            retry: Duration::from_secs(10),
            debounce: Duration::from_millis(10),
        }
    }
}

/// Runs the scheduler until `cancel` fires.
pub async fn run(store: Arc<Store>, cancel: CancellationToken) {
    run_with(store, SchedulingConfig::default(), cancel).await
}

pub async fn run_with(store: Arc<Store>, config: SchedulingConfig, cancel: CancellationToken) {
    let mut events = store.subscribe();
    let mut cache = loop {
        match read_cache(&store) {
            Ok(c) => break c,
            Err(e) => warn!("scheduler: cannot read the store: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(config.retry) => {}
        }
    };
    // An interval, not a sleep per loop: a steady stream of events must not postpone it.
    let mut retry = tokio::time::interval(config.retry);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    loop {
        if dirty {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(config.debounce) => {}
            }
            let started = std::time::Instant::now();
            // Everything that arrived meanwhile is covered by the pass below.
            let passed = crate::io_runtime::long_pass(|| {
                if let Err(e) = catch_up(&store, &mut events, &mut cache) {
                    warn!("scheduler: {e}");
                }
                run_pass(&store, &mut cache, &mut events)
            });
            match passed {
                Ok(0) => {}
                Ok(n) => debug!("scheduler: bound {n} Pod(s) in {:?}", started.elapsed()),
                Err(e) => warn!("scheduler: {e}"),
            }
        }
        // Every branch decides whether the next round runs a pass.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = retry.tick() => dirty = true,
            ev = events.recv() => match ev {
                Ok(ev) => {
                    dirty = is_relevant(&ev);
                    cache.apply(&ev);
                }
                Err(RecvError::Lagged(_)) => {
                    events = events.resubscribe();
                    match read_cache(&store) {
                        Ok(c) => cache = c,
                        Err(e) => warn!("scheduler: cannot read the store: {e}"),
                    }
                    dirty = true;
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

fn read_cache(store: &Store) -> Result<SchedCache, StoreError> {
    let (nodes, _) = store.list::<Node>(None)?;
    let (pods, _) = store.list::<Pod>(None)?;
    Ok(SchedCache::from_lists(&nodes, &pods))
}

/// Applies every change committed so far; re-reads the store after a lag.
fn catch_up(
    store: &Store,
    events: &mut broadcast::Receiver<WatchEvent>,
    cache: &mut SchedCache,
) -> Result<(), StoreError> {
    loop {
        match events.try_recv() {
            Ok(ev) => cache.apply(&ev),
            Err(TryRecvError::Lagged(_)) => {
                *events = events.resubscribe();
                *cache = read_cache(store)?;
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => return Ok(()),
        }
    }
}

/// Changes that can make a Pending Pod schedulable or need a decision: any Node change,
/// a new or deleted Pod, an unbound Pod, and a Pod that finished (it frees resources).
fn is_relevant(ev: &WatchEvent) -> bool {
    match &*ev.object {
        Object::Node(_) => true,
        Object::Pod(p) => {
            ev.change != Change::Modified || p.spec.node_name.is_none() || scheduler::is_terminal(p)
        }
        _ => false,
    }
}

/// One pass over the store as it is: decides for every unbound Pod, oldest first,
/// counting earlier bindings of the same pass. Returns how many Pods were bound.
pub fn schedule_pending(store: &Store) -> Result<usize, StoreError> {
    let mut events = store.subscribe();
    let mut cache = read_cache(store)?;
    run_pass(store, &mut cache, &mut events)
}

/// Binds what it can of the cache's pending Pods. Keeps following `events` as it goes,
/// so its own writes do not overflow the watch during a pass of thousands of Pods.
fn run_pass(
    store: &Store,
    cache: &mut SchedCache,
    events: &mut broadcast::Receiver<WatchEvent>,
) -> Result<usize, StoreError> {
    let _timer = crate::prometheus::reconcile_timer("scheduler");
    let mut bound = 0;
    for (i, queued) in cache.pending().into_iter().enumerate() {
        if i % 256 == 255 {
            catch_up(store, events, cache)?;
        }
        let Object::Pod(pod) = &*queued else {
            continue;
        };
        let decision = cache.decide(pod);
        let ns = pod.metadata.namespace.as_deref();
        let uid = pod.metadata.uid.clone();
        match decision {
            Decision::Bind(node) => {
                let mut done = false;
                let written = store.modify::<Pod>(ns, &pod.metadata.name, |p| {
                    // The Pod may have been replaced or bound since the list.
                    if p.metadata.uid != uid || p.spec.node_name.is_some() {
                        return;
                    }
                    p.spec.node_name = Some(node.clone());
                    set_condition(&mut p.status.conditions, "True", None, None);
                    done = true;
                })?;
                if let (true, Some(p)) = (done, written) {
                    debug!("scheduler: bound Pod {} to node {node}", p.metadata.key());
                    record(
                        store,
                        &p,
                        EVENT_NORMAL,
                        "Scheduled",
                        format!("Successfully assigned {} to {node}", p.metadata.key()),
                    );
                    if let Some(created) = p.metadata.creation_timestamp {
                        let latency = (Time::now().0 - created.0).to_std().unwrap_or_default();
                        crate::prometheus::observe_scheduling(latency);
                    }
                    // Later Pods of this pass see the resources this one takes.
                    cache.put_pod(&p, p.metadata.revision());
                    bound += 1;
                }
            }
            Decision::Unschedulable(message) => {
                debug!(
                    "scheduler: Pod {} is unschedulable: {message}",
                    pod.metadata.key()
                );
                record(
                    store,
                    pod,
                    EVENT_WARNING,
                    "FailedScheduling",
                    message.clone(),
                );
                store.modify::<Pod>(ns, &pod.metadata.name, |p| {
                    if p.metadata.uid != uid || p.spec.node_name.is_some() {
                        return;
                    }
                    set_condition(
                        &mut p.status.conditions,
                        "False",
                        Some("Unschedulable"),
                        Some(&message),
                    );
                    if p.status.phase.is_none() {
                        p.status.phase = Some(punnet_api::phase::PENDING.into());
                    }
                })?;
            }
        }
    }
    if bound > 0 {
        info!("scheduler: bound {bound} Pod(s)");
    }
    Ok(bound)
}

/// Sets the `PodScheduled` condition, keeping its transition time when the status stays.
fn set_condition(
    conditions: &mut Vec<PodCondition>,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let reason = reason.map(str::to_string);
    let message = message.map(str::to_string);
    match conditions.iter_mut().find(|c| c.type_ == "PodScheduled") {
        Some(c) => {
            if c.status != status {
                c.status = status.to_string();
                c.last_transition_time = Some(Time::now());
            }
            c.reason = reason;
            c.message = message;
        }
        None => conditions.push(PodCondition {
            type_: "PodScheduled".into(),
            status: status.to_string(),
            reason,
            message,
            last_transition_time: Some(Time::now()),
        }),
    }
}

/// An Event from the scheduler, named as Kubernetes' is.
fn record(store: &Store, pod: &Pod, type_: &str, reason: &str, message: String) {
    store.recorder().record(
        ObjectReference::to(pod),
        type_,
        reason,
        message,
        "default-scheduler",
        None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{Container, NodeCondition};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    fn pod(name: &str, mem: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        let mut c = Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        };
        c.resources.requests.insert("memory".into(), mem.into());
        p.spec.containers.push(c);
        p
    }

    fn node(name: &str, mem: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.status.allocatable.insert("cpu".into(), "4".into());
        n.status.allocatable.insert("memory".into(), mem.into());
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        n
    }

    #[test]
    fn binds_and_marks_unschedulable_within_one_pass() {
        let (_d, s) = store();
        s.create(node("n1", "100Mi")).unwrap();
        s.create(pod("a", "60Mi")).unwrap();
        s.create(pod("b", "60Mi")).unwrap();
        assert_eq!(schedule_pending(&s).unwrap(), 1);
        let a: Pod = s.get(Some("default"), "a").unwrap().unwrap();
        assert_eq!(a.spec.node_name.as_deref(), Some("n1"));
        assert_eq!(a.status.conditions[0].status, "True");
        let b: Pod = s.get(Some("default"), "b").unwrap().unwrap();
        assert_eq!(b.spec.node_name, None);
        assert_eq!(b.phase(), "Pending");
        let c = &b.status.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("Unschedulable"))
        );
        assert_eq!(
            c.message.as_deref(),
            Some("0/1 nodes are available: 1 Insufficient memory.")
        );
        let events = s.recorder().list(None);
        let reasons: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| {
                (
                    e.involved_object.name.as_str(),
                    e.reason.as_str(),
                    e.message.as_str(),
                )
            })
            .collect();
        assert!(reasons.contains(&("a", "Scheduled", "Successfully assigned default/a to n1")));
        assert!(reasons.contains(&(
            "b",
            "FailedScheduling",
            "0/1 nodes are available: 1 Insufficient memory."
        )));
        // A second pass with nothing new writes nothing.
        let rev = s.revision();
        schedule_pending(&s).unwrap();
        assert_eq!(s.revision(), rev);
    }
}
