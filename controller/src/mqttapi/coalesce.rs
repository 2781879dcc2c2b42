//! Retained topics published at a bounded rate: each topic goes out at most once per
//! `min_interval`, only when its payload changed since it was last published, and a
//! burst of changes within the interval collapses into the newest payload. Pure (time is
//! passed in), so the rate limit is unit-tested without sleeping.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Entry {
    /// What the broker holds (as far as we know); `None`: nothing published yet.
    published: Option<Vec<u8>>,
    at: Option<Instant>,
    /// The newest payload not yet published.
    pending: Option<Vec<u8>>,
}

#[derive(Debug)]
pub struct Coalescer {
    min_interval: Duration,
    entries: HashMap<String, Entry>,
    /// Topics with a pending payload: `due` looks at these only, not at every topic.
    pending: BTreeSet<String>,
}

impl Coalescer {
    pub fn new(min_interval: Duration) -> Coalescer {
        Coalescer {
            min_interval,
            entries: HashMap::new(),
            pending: BTreeSet::new(),
        }
    }

    /// The topic's payload is now `payload`; it goes out with the next `due` that the rate
    /// limit allows, unless it is what was last published.
    pub fn offer(&mut self, topic: &str, payload: Vec<u8>) {
        let e = self.entries.entry(topic.to_string()).or_default();
        if e.published.as_ref() == Some(&payload) {
            e.pending = None;
            self.pending.remove(topic);
        } else {
            e.pending = Some(payload);
            self.pending.insert(topic.to_string());
        }
    }

    /// The object is gone: forgets the topic. True when something was published on it,
    /// which the caller then clears (an empty retained payload), at once.
    pub fn remove(&mut self, topic: &str) -> bool {
        self.pending.remove(topic);
        self.entries
            .remove(topic)
            .is_some_and(|e| e.published.is_some())
    }

    /// The topics to publish now, each marked published at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let min = self.min_interval;
        self.pending.retain(|topic| {
            let Some(e) = self.entries.get_mut(topic) else {
                return false;
            };
            if e.at.is_some_and(|at| now.duration_since(at) < min) {
                return true;
            }
            if let Some(payload) = e.pending.take() {
                e.published = Some(payload.clone());
                e.at = Some(now);
                out.push((topic.clone(), payload));
            }
            false
        });
        out
    }

    /// The broker may have lost everything (a restarted embedded broker keeps nothing):
    /// every topic is published again, still at the bounded rate.
    pub fn republish_all(&mut self) {
        for (topic, e) in &mut self.entries {
            if e.pending.is_none() {
                e.pending = e.published.take();
            } else {
                e.published = None;
            }
            if e.pending.is_some() {
                self.pending.insert(topic.clone());
            }
        }
    }

    /// Topics known (published or pending).
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn at_most_once_per_interval_newest_wins_and_unchanged_is_skipped() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut c = Coalescer::new(Duration::from_secs(5));
        c.offer("a", p("1"));
        assert_eq!(c.due(t0), vec![("a".to_string(), p("1"))]);
        // Two changes within the interval: nothing until it has passed, then the newest.
        c.offer("a", p("2"));
        c.offer("a", p("3"));
        assert!(c.due(t0 + sec).is_empty());
        assert!(c.due(t0 + 4 * sec).is_empty());
        assert_eq!(c.due(t0 + 5 * sec), vec![("a".to_string(), p("3"))]);
        // The same payload again is not a change.
        c.offer("a", p("3"));
        assert!(c.due(t0 + 60 * sec).is_empty());
        // A change back to what was published cancels the pending one.
        c.offer("a", p("4"));
        c.offer("a", p("3"));
        assert!(c.due(t0 + 120 * sec).is_empty());
        // Other topics have their own budget.
        c.offer("b", p("x"));
        assert_eq!(c.due(t0 + 5 * sec).len(), 1);
    }

    #[test]
    fn removal_and_republish() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(5));
        c.offer("a", p("1"));
        c.offer("b", p("1"));
        assert!(!c.remove("b"), "never published: nothing to clear");
        assert_eq!(c.due(t0).len(), 1);
        c.republish_all();
        assert_eq!(
            c.due(t0 + Duration::from_secs(5)),
            vec![("a".to_string(), p("1"))]
        );
        assert!(c.remove("a"));
        assert!(c.is_empty());
        assert!(c.due(t0 + Duration::from_secs(60)).is_empty());
    }
}
