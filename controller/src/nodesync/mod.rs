//! Node sync over MQTT (step 9 and the way back of the Pod flow): desired state out to
//! every node, status in from every agent, node liveness, the sweep of terminating Pods
//! no agent will confirm, and the routing of log replies.
//!
//! `run` owns the controller's MQTT connection. Incoming messages are handled one at a
//! time in one task (status ingest and liveness never race each other); the desired
//! publisher runs in its own task, so a slow broker never holds up ingest.

pub mod desired;
pub mod facts;
pub mod index;
pub mod liveness;
pub mod refs;
pub mod seen;
pub mod status;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use punnet_api::signing;
use punnet_api::topics::{Topics, OFFLINE, ONLINE};
use punnet_api::wire::{self, decode, LogChunk, NodeStatusReport, WireError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::logproxy::LogProxy;
use crate::metrics::Metrics;
use crate::mqtt::{self, MqttEvent, MqttSettings};
use crate::signing::{ControllerKey, Rejection};
use crate::store::Store;
use index::PodIndexFollower;
use liveness::{Liveness, Lost};

#[derive(Debug, Clone)]
pub struct NodeSyncConfig {
    pub mqtt: MqttSettings,
    /// A node silent for longer is NotReady (Kubernetes' default is 40 s).
    pub node_grace: Duration,
    /// The Node's `lastHeartbeatTime` is written at most this often when nothing else
    /// changes.
    pub heartbeat_every: Duration,
    /// Changes to Pods are collected this long before desired state goes out.
    pub debounce: Duration,
    /// How often terminating Pods no agent will confirm are swept (see `podgc::sweep`).
    pub sweep_every: Duration,
    /// Where the usage figures of each report go (served by the API, never stored).
    pub metrics: Arc<Metrics>,
    /// Signs every desired-state message (see `signing`).
    pub signing_key: Arc<ControllerKey>,
}

impl NodeSyncConfig {
    pub fn new(mqtt: MqttSettings, signing_key: Arc<ControllerKey>) -> NodeSyncConfig {
        NodeSyncConfig {
            mqtt,
            node_grace: Duration::from_secs(40),
            heartbeat_every: Duration::from_secs(60),
            debounce: Duration::from_millis(20),
            sweep_every: Duration::from_secs(2),
            metrics: Arc::default(),
            signing_key,
        }
    }
}

/// Runs node sync until `cancel` fires, then returns once its tasks have stopped.
pub async fn run(
    store: Arc<Store>,
    mqtt: MqttSettings,
    node_grace: Duration,
    logs: Arc<LogProxy>,
    metrics: Arc<Metrics>,
    signing_key: Arc<ControllerKey>,
    cancel: CancellationToken,
) {
    let config = NodeSyncConfig {
        node_grace,
        metrics,
        ..NodeSyncConfig::new(mqtt, signing_key)
    };
    run_with(store, config, logs, cancel).await
}

pub async fn run_with(
    store: Arc<Store>,
    config: NodeSyncConfig,
    logs: Arc<LogProxy>,
    cancel: CancellationToken,
) {
    let (handle, inbox, mqtt_task) = mqtt::start(&config.mqtt, cancel.clone());
    logs.attach(handle.clone(), config.node_grace, cancel.clone());
    let reconnected = Arc::new(Notify::new());
    let publisher = tokio::spawn(desired::run_publisher(
        store.clone(),
        handle.clone(),
        reconnected.clone(),
        config.debounce,
        config.signing_key.clone(),
        cancel.clone(),
    ));
    let pods = match PodIndexFollower::new(&store) {
        Ok(f) => f,
        Err(e) => {
            warn!("node sync: cannot read the store: {e}");
            return;
        }
    };
    let mut ingest = Ingest {
        store: store.clone(),
        pods,
        topics: config.mqtt.topics(),
        liveness: Liveness::new(config.node_grace, Instant::now()),
        seen: Default::default(),
        heartbeat_every: config.heartbeat_every,
        logs,
        metrics: config.metrics.clone(),
        bad_messages: 0,
    };
    // Often enough that a silent node is noticed within about a quarter of the grace.
    let every = (config.node_grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut check = tokio::time::interval(every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(config.sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            // In this task, so a sweep never races the liveness check or status ingest.
            _ = sweep.tick() => {
                let done = ingest.pods.current(&store).and_then(|index| {
                    sweep::sweep(&store, index, punnet_api::Time::now())
                });
                if let Err(e) = done {
                    warn!("node sync: sweeping terminating Pods: {e}");
                }
            }
            _ = check.tick() => {
                // Without its own connection the controller hears nobody: that says
                // nothing about the nodes, so none is judged until it is back.
                if !handle.is_connected() {
                    ingest.liveness.unheard_since(Instant::now());
                    continue;
                }
                let done = ingest.pods.current(&store).and_then(|index| {
                    liveness::check(&store, &ingest.liveness, Instant::now(), index)
                });
                if let Err(e) = done {
                    warn!("node sync: liveness check: {e}");
                }
            }
            ev = inbox.recv() => match ev {
                None => break,
                Some(MqttEvent::Connected) => reconnected.notify_one(),
                Some(MqttEvent::Message { topic, payload, received }) => {
                    ingest.handle(&topic, &payload, received)
                }
            },
        }
    }
    let _ = publisher.await;
    let _ = mqtt_task.await;
}

/// What a topic under `<prefix>/nodes/<node>/` is.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Status(&'a str),
    Online(&'a str),
    LogReply { node: &'a str, id: &'a str },
}

pub fn classify<'a>(topics: &Topics, topic: &'a str) -> Option<Incoming<'a>> {
    let node = topics.node_of(topic)?;
    let rest = topic
        .strip_prefix(topics.prefix())?
        .strip_prefix("/nodes/")?
        .strip_prefix(node)?
        .strip_prefix('/')?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["status"] => Some(Incoming::Status(node)),
        ["online"] => Some(Incoming::Online(node)),
        ["logs", "reply", id] if !id.is_empty() => Some(Incoming::LogReply { node, id }),
        _ => None,
    }
}

/// Why a status report was not taken.
enum StatusRefusal {
    /// Not signed with the node's registered key: counted per reason, an Event.
    Signing(Rejection, String),
    /// Not a status report at all (undecodable, another version or kind).
    Wire(WireError),
}

struct Ingest {
    store: Arc<Store>,
    /// Which Pods are on which node (so a report or a will reads only that node's).
    pods: PodIndexFollower,
    topics: Topics,
    liveness: Liveness,
    /// Each node's last Pod statuses, so a repeat is not read again.
    seen: seen::PodsSeen,
    heartbeat_every: Duration,
    logs: Arc<LogProxy>,
    metrics: Arc<Metrics>,
    /// Undecodable or rejected messages since start; each one is logged with the count.
    bad_messages: u64,
}

impl Ingest {
    fn handle(&mut self, topic: &str, payload: &[u8], received: Instant) {
        match classify(&self.topics, topic) {
            Some(Incoming::Status(node)) => match self.open_status(node, payload) {
                Ok(report) => {
                    let (terminating, on_node) = match self.pods.current(&self.store) {
                        Ok(index) => (index.terminating_on(node), index.revisions_on(node)),
                        Err(e) => {
                            warn!("node sync: {e}");
                            return;
                        }
                    };
                    let unchanged = self.seen.unchanged(node, &report, on_node);
                    let ingested = status::ingest_with(
                        &self.store,
                        node,
                        &report,
                        self.heartbeat_every,
                        &terminating,
                        unchanged,
                    );
                    if ingested.is_err() {
                        self.seen.forget(node);
                    }
                    match ingested {
                        Ok(_) => {
                            self.liveness.heard(node, received);
                            self.logs.note_heard(node);
                            self.metrics.record(&report, punnet_api::Time::now());
                        }
                        Err(
                            e @ (status::IngestError::WrongNode { .. }
                            | status::IngestError::BadNodeName { .. }),
                        ) => self.bad(topic, &e.to_string()),
                        // The report was fine; the store was not. The next report retries.
                        Err(e) => {
                            self.liveness.heard(node, received);
                            warn!("node sync: {e}");
                        }
                    }
                }
                Err(StatusRefusal::Signing(why, e)) => {
                    crate::signing::status_rejected(&self.store, node, topic, why, &e.to_string())
                }
                Err(StatusRefusal::Wire(e)) => self.bad(topic, &e.to_string()),
            },
            Some(Incoming::Online(node)) => match payload {
                p if p == OFFLINE.as_bytes() => {
                    self.logs.note_offline(node);
                    let lost = self.pods.current(&self.store).and_then(|index| {
                        liveness::node_lost(
                            &self.store,
                            node,
                            Lost::WentOffline,
                            &index.on_node(node),
                        )
                    });
                    if let Err(e) = lost {
                        warn!("node sync: marking node {node} lost: {e}");
                    }
                }
                // `online` and an empty payload (a cleared retained message): the next
                // status report is what makes the node Ready.
                p if p == ONLINE.as_bytes() || p.is_empty() => debug!("node {node} is online"),
                _ => self.bad(topic, "expected `online` or `offline`"),
            },
            Some(Incoming::LogReply { node, id }) => match decode::<LogChunk>(payload) {
                Ok(chunk) => self.logs.deliver(node, id, chunk),
                Err(e) => self.bad(topic, &e.to_string()),
            },
            None => debug!("node sync: ignoring message on {topic}"),
        }
    }

    /// A status report, if it is signed with `node`'s registered key. The signature is
    /// checked before the payload is decoded.
    fn open_status(&self, node: &str, payload: &[u8]) -> Result<NodeStatusReport, StatusRefusal> {
        let env = wire::open(payload).map_err(StatusRefusal::Wire)?;
        let Some(key) = self.store.node_keys().get(node) else {
            return Err(StatusRefusal::Signing(
                Rejection::UnknownNode,
                format!("node {node} has no registered key: enrol it, or register its node.pub"),
            ));
        };
        if let Err(e) = signing::verify(&env, node, &key) {
            let why = match e {
                WireError::Unsigned { .. } => Rejection::Unsigned,
                _ => Rejection::BadSignature,
            };
            return Err(StatusRefusal::Signing(why, e.to_string()));
        }
        wire::payload(&env).map_err(StatusRefusal::Wire)
    }

    fn bad(&mut self, topic: &str, why: &str) {
        self.bad_messages += 1;
        warn!(
            "node sync: rejected message on {topic} ({} so far): {why}",
            self.bad_messages
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_classified() {
        let t = Topics::new("punnet/v1");
        assert_eq!(
            classify(&t, "punnet/v1/nodes/pi-1/status"),
            Some(Incoming::Status("pi-1"))
        );
        assert_eq!(
            classify(&t, "punnet/v1/nodes/pi-1/online"),
            Some(Incoming::Online("pi-1"))
        );
        assert_eq!(
            classify(&t, "punnet/v1/nodes/pi-1/logs/reply/abc"),
            Some(Incoming::LogReply {
                node: "pi-1",
                id: "abc"
            })
        );
        assert_eq!(classify(&t, "punnet/v1/nodes/pi-1/desired"), None);
        assert_eq!(classify(&t, "punnet/v1/nodes/pi-1/status/extra"), None);
        assert_eq!(classify(&t, "other/nodes/pi-1/status"), None);
    }

    #[tokio::test]
    async fn bad_messages_are_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut ingest = Ingest {
            store: store.clone(),
            pods: PodIndexFollower::new(&store).unwrap(),
            topics: Topics::default(),
            liveness: Liveness::new(Duration::from_secs(40), Instant::now()),
            seen: Default::default(),
            heartbeat_every: Duration::from_secs(60),
            logs: Arc::new(LogProxy::default()),
            metrics: Arc::default(),
            bad_messages: 0,
        };
        ingest.handle("punnet/v1/nodes/pi-1/status", b"garbage", Instant::now());
        ingest.handle("punnet/v1/nodes/pi-1/status", &[], Instant::now());
        ingest.handle("punnet/v1/nodes/pi-1/online", b"maybe", Instant::now());
        ingest.handle(
            "punnet/v1/nodes/pi-1/logs/reply/x",
            &[1, 2, 3],
            Instant::now(),
        );
        assert_eq!(ingest.bad_messages, 4);
        assert!(store.list::<punnet_api::Node>(None).unwrap().0.is_empty());
    }
}
