//! The MQTT side of `punnet logs`: a [`LogSource`] that asks the agent of the Pod's node
//! for a container log and streams the `LogChunk`s it answers with.
//!
//! A request goes out at QoS 1 (not retained) on `nodes/<node>/logs/request` with a
//! fresh id; replies arrive on `nodes/<node>/logs/reply/<id>` and node sync hands them to
//! [`LogProxy::deliver`]. One task per stream puts chunks in `seq` order, repeats a
//! following request every 20 s (the agent stops following after 60 s without one) and
//! sends `cancel` once the HTTP side drops the stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use punnet_api::wire::{encode, LogChunk, LogRequest};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::http::logs::{LogError, LogItem, LogSource, LogStream};
use crate::mqtt::MqttHandle;

/// Chunks waiting for a stream's task; beyond this the stream is broken off rather than
/// letting a stalled HTTP client hold the controller's memory.
const INBOX: usize = 256;
/// Out-of-order chunks held while waiting for a gap to fill.
const MAX_REORDER: usize = 64;

#[derive(Debug, Clone)]
pub struct LogProxyConfig {
    /// How long the agent gets to send the first chunk.
    pub answer_timeout: Duration,
    /// How often a following request is repeated.
    pub refresh: Duration,
}

impl Default for LogProxyConfig {
    fn default() -> Self {
        LogProxyConfig {
            answer_timeout: Duration::from_secs(5),
            refresh: Duration::from_secs(20),
        }
    }
}

/// Where the proxy publishes; set by node sync once its MQTT connection exists.
struct Link {
    mqtt: MqttHandle,
    node_grace: Duration,
    cancel: CancellationToken,
}

struct Route {
    node: String,
    inbox: mpsc::Sender<LogChunk>,
}

struct Inner {
    config: LogProxyConfig,
    link: Mutex<Option<Link>>,
    routes: Mutex<HashMap<String, Route>>,
    /// When each node last reported; a following request to a node heard recently is
    /// accepted even if its log stays empty for a while (the agent sends nothing then).
    heard: Mutex<HashMap<String, Instant>>,
}

#[derive(Clone)]
pub struct LogProxy {
    inner: Arc<Inner>,
}

impl Default for LogProxy {
    fn default() -> Self {
        LogProxy::new(LogProxyConfig::default())
    }
}

impl LogProxy {
    pub fn new(config: LogProxyConfig) -> LogProxy {
        LogProxy {
            inner: Arc::new(Inner {
                config,
                link: Mutex::new(None),
                routes: Mutex::new(HashMap::new()),
                heard: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Connects the proxy to node sync's MQTT connection. Streams end when `cancel` fires.
    pub fn attach(&self, mqtt: MqttHandle, node_grace: Duration, cancel: CancellationToken) {
        *lock(&self.inner.link) = Some(Link {
            mqtt,
            node_grace,
            cancel,
        });
    }

    /// Node sync saw a status report from `node`.
    pub fn note_heard(&self, node: &str) {
        lock(&self.inner.heard).insert(node.to_string(), Instant::now());
    }

    /// Node sync saw `node` go offline.
    pub fn note_offline(&self, node: &str) {
        lock(&self.inner.heard).remove(node);
    }

    /// Hands a chunk that arrived on `node`'s reply topic for `id` to its stream. Chunks
    /// for unknown ids (a stream already gone) or from another node are dropped.
    pub fn deliver(&self, node: &str, id: &str, chunk: LogChunk) {
        if chunk.id != id {
            debug!("log chunk for {id} claims id {}; dropped", chunk.id);
            return;
        }
        let mut routes = lock(&self.inner.routes);
        let Some(route) = routes.get(id) else {
            return;
        };
        if route.node != node {
            debug!(
                "log chunk for {id} came from node {node}, not {}; dropped",
                route.node
            );
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = route.inbox.try_send(chunk) {
            warn!("log stream {id} from node {node} cannot keep up; breaking it off");
            routes.remove(id);
        }
    }

    /// Number of open streams (for tests and the status page).
    pub fn open_streams(&self) -> usize {
        lock(&self.inner.routes).len()
    }

    /// Asks `node` for a log; resolves once the agent answered (or gave up).
    pub async fn open_log(
        &self,
        node: String,
        mut request: LogRequest,
    ) -> Result<LogStream, LogError> {
        let unavailable = |reason: String| LogError::NodeUnavailable {
            node: node.clone(),
            reason,
        };
        let (mqtt, node_grace, cancel) = match &*lock(&self.inner.link) {
            Some(l) => (l.mqtt.clone(), l.node_grace, l.cancel.clone()),
            None => {
                return Err(unavailable(
                    "the controller's MQTT connection is not running".into(),
                ))
            }
        };
        if request.id.is_empty() {
            request.id = crate::store::new_uid();
        }
        request.cancel = false;
        let id = request.id.clone();
        let (inbox_tx, mut inbox) = mpsc::channel(INBOX);
        lock(&self.inner.routes).insert(
            id.clone(),
            Route {
                node: node.clone(),
                inbox: inbox_tx,
            },
        );
        let guard = RouteGuard {
            proxy: self.clone(),
            id: id.clone(),
        };
        let topic = mqtt.topics().log_request(&node);
        if let Err(e) = mqtt.publish(topic.clone(), false, encode(&request)).await {
            return Err(unavailable(e.to_string()));
        }
        let timeout = self.inner.config.answer_timeout;
        let first = tokio::select! {
            _ = cancel.cancelled() => return Err(unavailable("the controller is shutting down".into())),
            first = tokio::time::timeout(timeout, inbox.recv()) => first,
        };
        let first = match first {
            Ok(Some(chunk)) => {
                if let (true, Some(error)) = (chunk.done && chunk.seq == 0, &chunk.error) {
                    return Err(LogError::NotFound(error.clone()));
                }
                Some(chunk)
            }
            // Broken off by `deliver` before it started.
            Ok(None) => return Err(unavailable("the log stream broke off".into())),
            Err(_) if request.follow && self.recently_heard(&node, node_grace) => None,
            Err(_) => {
                return Err(unavailable(format!(
                    "is it online? (no answer within {}s)",
                    timeout.as_secs()
                )))
            }
        };
        let (out, stream) = LogStream::channel(16);
        let pump = Pump {
            mqtt,
            topic,
            request,
            refresh: self.inner.config.refresh,
            cancel,
            _guard: guard,
        };
        tokio::spawn(pump.run(first, inbox, out));
        Ok(stream)
    }

    fn recently_heard(&self, node: &str, grace: Duration) -> bool {
        lock(&self.inner.heard)
            .get(node)
            .is_some_and(|t| t.elapsed() < grace)
    }
}

impl LogSource for LogProxy {
    fn open(&self, node: &str, request: LogRequest) -> BoxFuture<'_, Result<LogStream, LogError>> {
        Box::pin(self.open_log(node.to_string(), request))
    }
}

/// A poisoned lock only means another thread panicked mid-update of a map of plain
/// values; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unregisters a stream's route however its task ends.
struct RouteGuard {
    proxy: LogProxy,
    id: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        lock(&self.proxy.inner.routes).remove(&self.id);
    }
}

/// Puts chunks in `seq` order. Duplicates (QoS 1 redeliveries) are dropped.
#[derive(Debug, Default)]
pub struct Reorder {
    next: u64,
    held: BTreeMap<u64, LogChunk>,
}

impl Reorder {
    /// Adds a chunk and returns those now in order. `Err` when too many are held.
    pub fn push(&mut self, chunk: LogChunk) -> Result<Vec<LogChunk>, String> {
        if chunk.seq >= self.next {
            self.held.insert(chunk.seq, chunk);
        }
        if self.held.len() > MAX_REORDER {
            return Err(format!("log chunks {}.. never arrived", self.next));
        }
        let mut ready = Vec::new();
        while let Some(c) = self.held.remove(&self.next) {
            self.next += 1;
            ready.push(c);
        }
        Ok(ready)
    }
}

struct Pump {
    mqtt: MqttHandle,
    topic: String,
    request: LogRequest,
    refresh: Duration,
    cancel: CancellationToken,
    _guard: RouteGuard,
}

impl Pump {
    async fn run(
        self,
        first: Option<LogChunk>,
        mut inbox: mpsc::Receiver<LogChunk>,
        out: mpsc::Sender<LogItem>,
    ) {
        let mut order = Reorder::default();
        let mut refresh = tokio::time::interval_at(Instant::now() + self.refresh, self.refresh);
        let mut pending = first;
        let finished = loop {
            if let Some(chunk) = pending.take() {
                match self.forward(&mut order, chunk, &out).await {
                    Step::More => {}
                    Step::Done => break true,
                    Step::ClientGone => break false,
                }
                continue;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break true,
                _ = out.closed() => break false,
                _ = refresh.tick(), if self.request.follow => {
                    // Keeps the agent following; a lost repeat is covered by the next one.
                    let _ = self.mqtt.publish(self.topic.clone(), false, encode(&self.request)).await;
                }
                chunk = inbox.recv() => match chunk {
                    Some(c) => pending = Some(c),
                    None => {
                        let _ = out.send(Err("the log stream could not keep up and was broken off".into())).await;
                        break false;
                    }
                },
            }
        };
        if !finished {
            let mut stop = self.request.clone();
            stop.cancel = true;
            debug!(
                "log stream {} closed by the client; cancelling on the node",
                stop.id
            );
            let _ = self
                .mqtt
                .publish(self.topic.clone(), false, encode(&stop))
                .await;
        }
    }

    async fn forward(
        &self,
        order: &mut Reorder,
        chunk: LogChunk,
        out: &mpsc::Sender<LogItem>,
    ) -> Step {
        let ready = match order.push(chunk) {
            Ok(r) => r,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return Step::ClientGone;
            }
        };
        for c in ready {
            if !c.data.is_empty() && out.send(Ok(c.data)).await.is_err() {
                return Step::ClientGone;
            }
            if let Some(e) = c.error {
                let _ = out.send(Err(e)).await;
                return Step::Done;
            }
            if c.done {
                return Step::Done;
            }
        }
        Step::More
    }
}

enum Step {
    More,
    Done,
    ClientGone,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, data: &str, done: bool) -> LogChunk {
        LogChunk {
            id: "1".into(),
            seq,
            data: data.as_bytes().to_vec(),
            done,
            error: None,
        }
    }

    fn seqs(v: Vec<LogChunk>) -> Vec<u64> {
        v.into_iter().map(|c| c.seq).collect()
    }

    #[test]
    fn reorder_delivers_in_sequence_and_drops_duplicates() {
        let mut r = Reorder::default();
        assert_eq!(
            seqs(r.push(chunk(1, "b", false)).unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(seqs(r.push(chunk(0, "a", false)).unwrap()), vec![0, 1]);
        assert_eq!(
            seqs(r.push(chunk(1, "b", false)).unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(seqs(r.push(chunk(2, "", true)).unwrap()), vec![2]);
    }

    #[test]
    fn reorder_gives_up_on_a_gap_that_never_fills() {
        let mut r = Reorder::default();
        for s in 1..=MAX_REORDER as u64 {
            assert!(r.push(chunk(s, "x", false)).unwrap().is_empty());
        }
        assert!(r.push(chunk(MAX_REORDER as u64 + 1, "x", false)).is_err());
    }

    #[tokio::test]
    async fn without_mqtt_the_node_is_unavailable() {
        // What the REST API holds it as.
        let _: Arc<dyn LogSource> = Arc::new(LogProxy::default());
        let proxy = LogProxy::default();
        let req = LogRequest {
            id: String::new(),
            namespace: "default".into(),
            pod: "web".into(),
            container: None,
            follow: false,
            tail_lines: None,
            cancel: false,
        };
        let err = proxy.open_log("pi-1".into(), req).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("node pi-1 did not answer the log request"),
            "{err}"
        );
        assert_eq!(proxy.open_streams(), 0);
    }
}
