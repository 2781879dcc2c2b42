//! The event recorder every controller part writes to: Kubernetes-style Events kept in
//! memory (they are history, not desired state, and writing each one to sled would wear
//! an SD card), repeats folded into one Event with a count, bounded in number and age.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

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
}

#[derive(Default)]
struct Inner {
    by_key: HashMap<AggregateKey, Event>,
    /// Bumped by every record; an Event's resourceVersion.
    sequence: u64,
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
        let event = inner.by_key.entry(key).or_insert_with(|| Event {
            api_version: "v1".into(),
            kind: "Event".into(),
            metadata: ObjectMeta {
                // kubectl's shape: the object's name and a unique suffix.
                name: format!("{}.{:x}", object.name, sequence),
                namespace: object.namespace.clone(),
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
        event.count += 1;
        event.last_timestamp = Some(now);
        event.metadata.resource_version = Some(sequence.to_string());
        let recorded = event.clone();
        self.prune(&mut inner);
        recorded
    }

    /// Every Event (in one namespace, or all), oldest last seen first.
    pub fn list(&self, namespace: Option<&str>) -> Vec<Event> {
        let mut out: Vec<Event> = {
            let mut inner = self.lock();
            self.prune(&mut inner);
            inner
                .by_key
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

    fn prune(&self, inner: &mut Inner) {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX);
        inner
            .by_key
            .retain(|_, e| e.last_timestamp.as_ref().is_some_and(|t| t.0 >= cutoff));
        if inner.by_key.len() > self.max_events {
            let mut seen: Vec<(Option<Time>, AggregateKey)> = inner
                .by_key
                .iter()
                .map(|(k, e)| (e.last_timestamp, k.clone()))
                .collect();
            seen.sort_by_key(|a| a.0);
            let excess = inner.by_key.len() - self.max_events;
            for (_, key) in seen.into_iter().take(excess) {
                inner.by_key.remove(&key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
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

        let events = Events::new(10, Duration::ZERO);
        events.normal(pod("x"), "Scheduled", "assigned");
        std::thread::sleep(Duration::from_millis(5));
        assert!(events.list(None).is_empty());
    }
}
