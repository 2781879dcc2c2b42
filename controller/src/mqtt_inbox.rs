//! What the controller's MQTT connection received, waiting for node sync to take it at
//! its own pace. Node status and `online` topics keep only their newest message: a
//! report is the node's whole state, so a node sync that falls behind skips superseded
//! heartbeats. Everything else (log replies) stays in order, up to a bound. The event
//! loop only ever puts and never waits here: when it waited on a full channel it stopped
//! reading the socket, its keepalive lapsed and the broker dropped the controller, which
//! then took every board for lost (5,000 boards, an apply of 50,000 Pods).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Messages kept in order at most; beyond it the oldest is dropped (and counted).
pub const ORDERED_LIMIT: usize = 4096;

/// One thing the connection saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttEvent {
    /// A ConnAck: the connection is (again) up and subscribed anew. Whatever the broker
    /// had retained may be gone, so retained state must be published again.
    Connected,
    Message {
        topic: String,
        payload: Vec<u8>,
        /// When the event loop read it (node liveness counts from here, not from when
        /// node sync got to it).
        received: Instant,
    },
}

#[derive(Default)]
struct State {
    connected: bool,
    latest: HashMap<String, (Vec<u8>, Instant)>,
    /// The topics in `latest`, oldest first.
    order: VecDeque<String>,
    ordered: VecDeque<(String, Vec<u8>, Instant)>,
    superseded: u64,
    dropped: u64,
    closed: bool,
}

/// See the module documentation.
#[derive(Default)]
pub struct Inbox {
    state: Mutex<State>,
    ready: Notify,
}

impl Inbox {
    pub fn new() -> Inbox {
        Inbox::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `payload` as `topic`'s newest message, replacing one not yet taken.
    pub fn put_latest(&self, topic: String, payload: Vec<u8>, received: Instant) {
        let mut guard = self.state();
        let s = &mut *guard;
        match s.latest.entry(topic) {
            Entry::Occupied(mut e) => {
                *e.get_mut() = (payload, received);
                s.superseded += 1;
                crate::prometheus::mqtt_skipped(true);
            }
            Entry::Vacant(e) => {
                s.order.push_back(e.key().clone());
                e.insert((payload, received));
            }
        }
        drop(guard);
        self.ready.notify_one();
    }

    /// Queues a message to be taken in order.
    pub fn put_ordered(&self, topic: String, payload: Vec<u8>, received: Instant) {
        let mut s = self.state();
        if s.ordered.len() >= ORDERED_LIMIT {
            s.ordered.pop_front();
            s.dropped += 1;
            crate::prometheus::mqtt_skipped(false);
        }
        s.ordered.push_back((topic, payload, received));
        drop(s);
        self.ready.notify_one();
    }

    pub fn connected(&self) {
        self.state().connected = true;
        self.ready.notify_one();
    }

    /// No more events: [`recv`](Self::recv) returns `None` once the rest is taken.
    pub fn close(&self) {
        self.state().closed = true;
        self.ready.notify_one();
    }

    /// The next event without waiting: `Some(None)` when closed and empty.
    fn take(&self) -> Option<Option<MqttEvent>> {
        let mut s = self.state();
        if std::mem::take(&mut s.connected) {
            return Some(Some(MqttEvent::Connected));
        }
        if let Some((topic, payload, received)) = s.ordered.pop_front() {
            return Some(Some(MqttEvent::Message {
                topic,
                payload,
                received,
            }));
        }
        while let Some(topic) = s.order.pop_front() {
            if let Some((payload, received)) = s.latest.remove(&topic) {
                return Some(Some(MqttEvent::Message {
                    topic,
                    payload,
                    received,
                }));
            }
        }
        s.closed.then_some(None)
    }

    /// The next event; `None` once closed and empty.
    pub async fn recv(&self) -> Option<MqttEvent> {
        loop {
            if let Some(ev) = self.take() {
                return ev;
            }
            // notify_one leaves a permit when nobody waits, so no put is missed.
            self.ready.notified().await;
        }
    }

    /// Messages replaced by a newer one before node sync took them, and messages dropped
    /// from the ordered queue, since start.
    pub fn skipped(&self) -> (u64, u64) {
        let s = self.state();
        (s.superseded, s.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ev: Option<MqttEvent>) -> (String, Vec<u8>) {
        match ev {
            Some(MqttEvent::Message { topic, payload, .. }) => (topic, payload),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn newest_per_topic_in_first_arrival_order_ordered_ones_first() {
        let inbox = Inbox::new();
        let t = Instant::now();
        inbox.put_latest("n/a/status".into(), b"a1".to_vec(), t);
        inbox.put_latest("n/b/status".into(), b"b1".to_vec(), t);
        inbox.put_latest("n/a/status".into(), b"a2".to_vec(), t);
        inbox.put_ordered("n/a/logs/reply/1".into(), b"l1".to_vec(), t);
        inbox.put_ordered("n/a/logs/reply/1".into(), b"l2".to_vec(), t);
        inbox.connected();
        assert_eq!(inbox.recv().await, Some(MqttEvent::Connected));
        assert_eq!(msg(inbox.recv().await).1, b"l1");
        assert_eq!(msg(inbox.recv().await).1, b"l2");
        assert_eq!(
            msg(inbox.recv().await),
            ("n/a/status".into(), b"a2".to_vec())
        );
        assert_eq!(
            msg(inbox.recv().await),
            ("n/b/status".into(), b"b1".to_vec())
        );
        assert_eq!(inbox.skipped(), (1, 0));
        inbox.close();
        assert_eq!(inbox.recv().await, None);
    }

    #[tokio::test]
    async fn the_ordered_queue_is_bounded_and_a_waiting_reader_wakes() {
        let inbox = std::sync::Arc::new(Inbox::new());
        let t = Instant::now();
        for i in 0..ORDERED_LIMIT + 3 {
            inbox.put_ordered(format!("t/{i}"), Vec::new(), t);
        }
        assert_eq!(msg(inbox.recv().await).0, "t/3");
        assert_eq!(inbox.skipped(), (0, 3));

        let empty = std::sync::Arc::new(Inbox::new());
        let reader = tokio::spawn({
            let empty = empty.clone();
            async move { empty.recv().await }
        });
        tokio::task::yield_now().await;
        empty.put_latest("x".into(), b"1".to_vec(), t);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the reader woke")
            .unwrap();
        assert_eq!(msg(got).1, b"1");
    }
}
