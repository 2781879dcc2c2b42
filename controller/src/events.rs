//! The event recorder every controller part writes to: Kubernetes-style Events kept in
//! memory (they are history, not desired state, and writing each one to sled would wear
//! an SD card), repeats folded into one Event with a count, bounded in number and age.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::broadcast;

use punnet_api::wire::{AgentEvent, MAX_REPORT_EVENTS};
use punnet_api::{
    Event, EventSource, ObjectMeta, ObjectReference, Time, EVENT_NORMAL, EVENT_WARNING,
};

/// Kept at most; the oldest (by last seen) go first.
pub const DEFAULT_MAX_EVENTS: usize = 2000;
/// Kubernetes' default event TTL.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

/// What makes two events "the same" so that the second only bumps the first's count.
type AggregateKey = (ObjectReference, String, String, String);

pub struct Events {
    inner: Mutex<Inner>,
    max_events: usize,
    max_age: Duration,
    /// Every record as it happens, for watches of Events.
    feed: broadcast::Sender<Event>,
    /// Occurrences recorded since start (repeats included), for `/metrics`.
    recorded: AtomicU64,
}

/// Events by the sequence of their last occurrence, so the least recently seen is the
/// first entry and pruning never sorts: a record at fleet scale costs O(log n), not a
/// sort of every kept Event.
#[derive(Default)]
struct Inner {
    by_seq: BTreeMap<u64, Event>,
    /// Where each aggregate currently sits in `by_seq`.
    by_key: HashMap<AggregateKey, u64>,
    /// Bumped by every record; an Event's resourceVersion.
    sequence: u64,
}

fn key_of(e: &Event) -> AggregateKey {
    (
        e.involved_object.clone(),
        e.type_.clone(),
        e.reason.clone(),
        e.message.clone(),
    )
}

impl Default for Events {
    fn default() -> Self {
        Events::new(DEFAULT_MAX_EVENTS, DEFAULT_MAX_AGE)
    }
}

impl Events {
    pub fn new(max_events: usize, max_age: Duration) -> Events {
        Events {
            inner: Mutex::new(Inner::default()),
            max_events: max_events.max(1),
            max_age,
            feed: broadcast::channel(1024).0,
            recorded: AtomicU64::new(0),
        }
    }

    pub fn normal(&self, object: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(
            object,
            EVENT_NORMAL,
            reason,
            message.into(),
            "punnet-controller",
            None,
        );
    }

    pub fn warning(&self, object: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(
            object,
            EVENT_WARNING,
            reason,
            message.into(),
            "punnet-controller",
            None,
        );
    }

    /// Records one occurrence; `host` is the node for events an agent reported.
    pub fn record(
        &self,
        object: ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
        component: &str,
        host: Option<&str>,
    ) -> Event {
        self.record_times(object, type_, reason, message, component, host, 1)
    }

    /// The Events a node's agent reported with its status (at most
    /// `MAX_REPORT_EVENTS` are taken from one report), from `punnet-agent` on `node`.
    pub fn record_agent_events(&self, node: &str, events: &[AgentEvent]) {
        for e in events.iter().take(MAX_REPORT_EVENTS) {
            let object = if e.pod.is_empty() {
                ObjectReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_string(),
                    ..Default::default()
                }
            } else {
                let pod = ObjectReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    namespace: Some(e.namespace.clone()),
                    name: e.pod.clone(),
                    uid: Some(e.uid.clone()).filter(|u| !u.is_empty()),
                    field_path: None,
                };
                match &e.container {
                    Some(c) => pod.container(c),
                    None => pod,
                }
            };
            let type_ = if e.warning {
                EVENT_WARNING
            } else {
                EVENT_NORMAL
            };
            self.record_times(
                object,
                type_,
                &e.reason,
                e.message.clone(),
                "punnet-agent",
                Some(node),
                e.count.max(1),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_times(
        &self,
        object: ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
        component: &str,
        host: Option<&str>,
        times: u32,
    ) -> Event {
        let now = Time::now();
        let mut inner = self.lock();
        inner.sequence += 1;
        let sequence = inner.sequence;
        let key = (
            object.clone(),
            type_.to_string(),
            reason.to_string(),
            message.clone(),
        );
        let previous = inner
            .by_key
            .insert(key, sequence)
            .and_then(|seq| inner.by_seq.remove(&seq));
        let mut event = previous.unwrap_or_else(|| Event {
            api_version: "v1".into(),
            kind: "Event".into(),
            metadata: ObjectMeta {
                // kubectl's shape: the object's name and a unique suffix.
                name: format!("{}.{:x}", object.name, sequence),
                // As in Kubernetes: Events of cluster-scoped objects (Nodes) live in
                // `default`, so `get events` shows them.
                namespace: object
                    .namespace
                    .clone()
                    .or_else(|| Some(punnet_api::DEFAULT_NAMESPACE.to_string())),
                creation_timestamp: Some(now),
                ..Default::default()
            },
            involved_object: object,
            reason: reason.to_string(),
            message,
            type_: type_.to_string(),
            count: 0,
            first_timestamp: Some(now),
            last_timestamp: None,
            source: EventSource {
                component: component.to_string(),
                host: host.map(str::to_string),
            },
        });
        event.count = event
            .count
            .saturating_add(times.min(i32::MAX as u32) as i32);
        event.last_timestamp = Some(now);
        event.metadata.resource_version = Some(sequence.to_string());
        inner.by_seq.insert(sequence, event.clone());
        let recorded = event;
        self.prune(&mut inner);
        // Sent under the lock, so `since` never misses or repeats one.
        let _ = self.feed.send(recorded.clone());
        self.recorded.fetch_add(u64::from(times), Ordering::Relaxed);
        recorded
    }

    /// Occurrences recorded since start, repeats included.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// The newest Event's resourceVersion: what a list of Events is as new as.
    pub fn sequence(&self) -> u64 {
        self.lock().sequence
    }

    /// For a watch from `version`: the Events (in `namespace`, or all) recorded or
    /// bumped after it, oldest first, and a subscription to what comes next. Events
    /// keep only their latest state, so a resumed watch sees each one once, as it is now.
    pub fn since(
        &self,
        version: u64,
        namespace: Option<&str>,
    ) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let mut inner = self.lock();
        self.prune(&mut inner);
        let mut out: Vec<Event> = inner
            .by_seq
            .range((
                std::ops::Bound::Excluded(version),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, e)| e)
            .filter(|e| namespace.is_none() || e.metadata.namespace.as_deref() == namespace)
            .cloned()
            .collect();
        out.sort_by_key(version_of);
        (out, self.feed.subscribe())
    }

    /// Every Event (in one namespace, or all), oldest last seen first.
    pub fn list(&self, namespace: Option<&str>) -> Vec<Event> {
        let mut out: Vec<Event> = {
            let mut inner = self.lock();
            self.prune(&mut inner);
            inner
                .by_seq
                .values()
                .filter(|e| namespace.is_none() || e.metadata.namespace.as_deref() == namespace)
                .cloned()
                .collect()
        };
        out.sort_by(|a, b| {
            (&a.last_timestamp, &a.metadata.resource_version)
                .cmp(&(&b.last_timestamp, &b.metadata.resource_version))
        });
        out
    }

    /// The Events of one object, matched by kind, namespace and name (and uid when both
    /// sides have one, so a re-created object does not inherit its predecessor's).
    pub fn for_object(&self, object: &ObjectReference) -> Vec<Event> {
        self.list(object.namespace.as_deref())
            .into_iter()
            .filter(|e| {
                let o = &e.involved_object;
                o.kind == object.kind
                    && o.name == object.name
                    && match (&o.uid, &object.uid) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }
            })
            .collect()
    }

    /// Drops the least recently seen Events beyond the bound and those older than the
    /// age limit; both are at the front of `by_seq`.
    fn prune(&self, inner: &mut Inner) {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX);
        loop {
            let over = inner.by_seq.len() > self.max_events;
            let Some(entry) = inner.by_seq.first_entry() else {
                break;
            };
            let stale = entry
                .get()
                .last_timestamp
                .as_ref()
                .is_none_or(|t| t.0 < cutoff);
            if !stale && !over {
                break;
            }
            let e = entry.remove();
            inner.by_key.remove(&key_of(&e));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An Event's resourceVersion as a number (0 when unset).
pub fn version_of(e: &Event) -> u64 {
    e.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: Some("default".into()),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            field_path: None,
        }
    }

    #[test]
    fn repeats_are_folded_into_one_event_with_a_count() {
        let events = Events::default();
        events.warning(pod("a"), "BackOff", "Back-off restarting failed container");
        events.warning(pod("a"), "BackOff", "Back-off restarting failed container");
        events.normal(pod("a"), "Started", "Started container app");
        let list = events.for_object(&pod("a"));
        assert_eq!(list.len(), 2);
        let backoff = list.iter().find(|e| e.reason == "BackOff").unwrap();
        assert_eq!(backoff.count, 2);
        assert_eq!(backoff.type_, EVENT_WARNING);
        assert!(backoff.first_timestamp <= backoff.last_timestamp);
        assert!(events.for_object(&pod("b")).is_empty());
        assert_eq!(events.recorded(), 3);
    }

    #[test]
    fn agent_events_name_the_container_and_the_node() {
        let events = Events::default();
        let backoff = AgentEvent {
            namespace: "default".into(),
            pod: "web".into(),
            uid: "uid-web".into(),
            container: Some("app".into()),
            warning: true,
            reason: "BackOff".into(),
            message: "Back-off restarting failed container app".into(),
            count: 3,
        };
        events.record_agent_events("pi-1", std::slice::from_ref(&backoff));
        events.record_agent_events("pi-1", &[backoff]);
        let list = events.list(None);
        assert_eq!(list.len(), 1);
        let e = &list[0];
        assert_eq!(e.count, 6);
        assert_eq!(e.type_, EVENT_WARNING);
        assert_eq!(e.source.component, "punnet-agent");
        assert_eq!(e.source.host.as_deref(), Some("pi-1"));
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(events.for_object(&pod("web")).len(), 1);
    }

    #[test]
    fn since_a_version_and_live() {
        let events = Events::default();
        events.normal(pod("a"), "Scheduled", "assigned");
        events.normal(pod("b"), "Scheduled", "assigned");
        let seq = events.sequence();
        events.warning(pod("a"), "BackOff", "again");
        let (backlog, mut live) = events.since(seq, Some("default"));
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].reason, "BackOff");
        assert!(events.since(seq, Some("other")).0.is_empty());
        events.warning(pod("a"), "BackOff", "again");
        let next = live.try_recv().unwrap();
        assert_eq!((next.reason.as_str(), next.count), ("BackOff", 2));
        assert_eq!(version_of(&next), seq + 2);
    }

    #[test]
    fn bounded_in_number_and_age() {
        let events = Events::new(3, DEFAULT_MAX_AGE);
        for i in 0..5 {
            events.normal(pod(&format!("p{i}")), "Scheduled", "assigned");
        }
        let names: Vec<String> = events
            .list(None)
            .into_iter()
            .map(|e| e.involved_object.name)
            .collect();
        assert_eq!(names, ["p2", "p3", "p4"]);
        // A watch from the largest version there is sees nothing, and does not panic.
        assert!(events.since(u64::MAX, None).0.is_empty());
        // A repeat makes an Event the most recently seen: it outlives newer ones.
        events.normal(pod("p2"), "Scheduled", "assigned");
        events.normal(pod("p5"), "Scheduled", "assigned");
        let kept: Vec<(String, i32)> = events
            .list(None)
            .into_iter()
            .map(|e| (e.involved_object.name, e.count))
            .collect();
        assert_eq!(kept, [("p4".into(), 1), ("p2".into(), 2), ("p5".into(), 1)]);

        let events = Events::new(10, Duration::ZERO);
        events.normal(pod("x"), "Scheduled", "assigned");
        std::thread::sleep(Duration::from_millis(5));
        assert!(events.list(None).is_empty());
    }
}
