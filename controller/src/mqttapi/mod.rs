//! The public MQTT API for people and home-automation tools (DESIGN.md §3, `cmd/...` and
//! `status/...`): JSON commands under `<prefix>/cmd/<verb>` carried out through the REST
//! API's own router, each answered once (on the MQTT 5 response topic with its
//! correlation data, else on `<prefix>/cmd/reply[/<id>]`); retained JSON status topics
//! for Nodes and workloads, published at a bounded rate and only when they changed; and,
//! opt-in, Home Assistant discovery. docs/mqtt-api.md is the user's reference.
//!
//! It has its own MQTT 5 connection (rumqttc's v5 client, client id
//! `punnet-controller-api`): response topics and user properties need MQTT 5, while node
//! sync's connection stays MQTT 3.1.1. Mosquitto serves both versions on one port; the
//! embedded rumqttd serves MQTT 5 on its own listener (`--mqtt5`, default port 1884).

pub mod auth;
pub mod coalesce;
pub mod command;
pub mod exec;
pub mod homeassistant;
pub mod reply;
pub mod setup;
pub mod status;

pub use self::setup::{config_for, MqttApiError};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use punnet_api::topics::MAX_PACKET_SIZE;
use punnet_api::{DaemonSet, Deployment, Job, Node, Object, Pod, Resource};
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::auth::{CommandAuth, RestartOnly};
use self::coalesce::Coalescer;
use self::exec::Executor;
use self::status::RunningPods;
use crate::metrics::Metrics;
use crate::store::{Change, Store};

/// The client id of the API's connection (node sync's is `punnet-controller`).
pub const CLIENT_ID: &str = "punnet-controller-api";
/// Each status topic is published at most once per this interval (changes in between are
/// coalesced into the newest state); node usage figures are looked at this often too.
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// The port of the embedded broker's MQTT 5 listener unless configured.
pub const DEFAULT_V5_PORT: u16 = 1884;
/// The default Home Assistant discovery prefix.
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";

#[derive(Debug, Clone)]
pub struct MqttApiConfig {
    /// The broker's MQTT 5 endpoint.
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub client_id: String,
    pub status_interval: Duration,
    /// The Home Assistant discovery prefix, when discovery is on.
    pub homeassistant: Option<String>,
    /// What the Home Assistant restart buttons send as their token (restart only).
    pub button_token: Option<String>,
    /// MQTT username and password, for a broker that asks for them.
    pub credentials: Option<(String, String)>,
    /// TLS towards an external `mqtts://` broker; `None`: plain TCP (the embedded
    /// broker's v5 listener is reached on loopback, behind its gate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl MqttApiConfig {
    pub fn new(host: impl Into<String>, port: u16, prefix: &str) -> MqttApiConfig {
        MqttApiConfig {
            host: host.into(),
            port,
            prefix: prefix.trim_end_matches('/').to_string(),
            client_id: CLIENT_ID.to_string(),
            status_interval: STATUS_MIN_INTERVAL,
            homeassistant: None,
            button_token: None,
            credentials: None,
            tls: None,
        }
    }
}

/// What the API works with: the store and figures it reports on, the REST router that
/// carries out commands, and who may command.
pub struct MqttApiParts {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub executor: Executor,
    pub auth: Arc<dyn CommandAuth>,
}

/// Runs the API until `cancel`.
pub async fn run(parts: MqttApiParts, config: MqttApiConfig, cancel: CancellationToken) {
    let prefix = config.prefix.clone();
    let mut o = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    o.set_keep_alive(Duration::from_secs(10))
        .set_clean_start(true)
        .set_max_packet_size(Some(MAX_PACKET_SIZE as u32))
        .set_last_will(LastWill::new(
            status::controller_topic(&prefix),
            "offline",
            QoS::AtLeastOnce,
            true,
            None,
        ));
    if let Some((user, password)) = &config.credentials {
        o.set_credentials(user.clone(), password.clone());
    }
    if let Some(tls) = &config.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let (client, eventloop) = AsyncClient::new(o, 256);
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let connected = Arc::new(Notify::new());
    let endpoint = format!("{}:{}", config.host, config.port);
    let link = tokio::spawn(link(
        eventloop,
        client.clone(),
        prefix.clone(),
        endpoint,
        commands_tx,
        connected.clone(),
        cancel.clone(),
    ));
    let restart_only = config.button_token.clone().map(RestartOnly);
    let worker = tokio::spawn(commands(
        commands_rx,
        client.clone(),
        prefix.clone(),
        parts.executor,
        parts.auth,
        restart_only,
        cancel.clone(),
    ));
    let publisher = StatusPublisher {
        store: parts.store,
        metrics: parts.metrics,
        client,
        config,
        coalescer: Coalescer::new(STATUS_MIN_INTERVAL),
        nodes: HashMap::new(),
        running: RunningPods::default(),
    };
    publisher.run(connected, cancel).await;
    let _ = tokio::join!(link, worker);
}

/// One command as it arrived.
struct Incoming {
    verb: String,
    payload: Bytes,
    properties: Option<PublishProperties>,
}

/// Owns the event loop: polls it, subscribes and says `online` after every ConnAck,
/// hands commands on, and backs off between failed connects.
async fn link(
    mut eventloop: EventLoop,
    client: AsyncClient,
    prefix: String,
    endpoint: String,
    commands: mpsc::Sender<Incoming>,
    connected: Arc<Notify>,
    cancel: CancellationToken,
) {
    let cmd_prefix = format!("{prefix}/cmd/");
    let mut failures: u32 = 0;
    loop {
        let polled = tokio::select! {
            _ = cancel.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!(
                    "mqtt api: connected (MQTT 5) to {endpoint}; commands on {prefix}/cmd/<verb>"
                );
                failures = 0;
                let filters: Vec<Filter> = command::VERBS
                    .iter()
                    .map(|v| Filter::new(format!("{cmd_prefix}{v}"), QoS::AtLeastOnce))
                    .collect();
                let (c, topic) = (client.clone(), status::controller_topic(&prefix));
                // Through the request queue this loop drains: never awaited here.
                tokio::spawn(async move {
                    if let Err(e) = c.subscribe_many(filters).await {
                        warn!("mqtt api: cannot subscribe to the command topics: {e}");
                    }
                    let _ = c.publish(topic, QoS::AtLeastOnce, true, "online").await;
                });
                connected.notify_one();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let Some(verb) = topic.strip_prefix(&cmd_prefix) else {
                    continue;
                };
                if !command::VERBS.contains(&verb) {
                    continue;
                }
                let msg = Incoming {
                    verb: verb.to_string(),
                    payload: p.payload,
                    properties: p.properties,
                };
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    sent = commands.send(msg) => if sent.is_err() { break },
                }
            }
            Ok(_) => {}
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_millis(200)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(10));
                if failures == 1 {
                    warn!("mqtt api: connection to {endpoint} failed: {e}; retrying");
                } else {
                    debug!("mqtt api: connection to {endpoint} failed again: {e}");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    // Clients see the API go: a retained `offline` (the last will covers a crash).
    let _ = client.try_publish(
        status::controller_topic(&prefix),
        QoS::AtLeastOnce,
        true,
        "offline",
    );
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

/// Carries out commands one at a time, in the order they arrived, and replies to each.
async fn commands(
    mut rx: mpsc::Receiver<Incoming>,
    client: AsyncClient,
    prefix: String,
    executor: Executor,
    auth: Arc<dyn CommandAuth>,
    restart_only: Option<RestartOnly>,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            msg = rx.recv() => match msg { Some(m) => m, None => break },
        };
        let props = msg.properties.unwrap_or_default();
        let user_token = props
            .user_properties
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.clone());
        let (env, parsed) = command::parse(&msg.verb, &msg.payload, user_token);
        let verb = msg.verb.as_str();
        let response_topic = props.response_topic.clone().filter(|t| !t.is_empty());
        let bad_response = response_topic
            .as_ref()
            .filter(|t| !reply::response_topic_allowed(&prefix, t));
        let reply = if let Some(topic) = bad_response {
            let message = format!(
                "response topic {topic}: replies go under {prefix}/cmd/reply/ (for example {prefix}/cmd/reply/me), the only place operator logins may read them; nothing was done"
            );
            reply::Reply::failure(&env, verb, 400, "BadRequest", message)
        } else {
            match auth::check(&auth, restart_only.as_ref(), verb, env.token.as_deref()) {
                Err((code, reason, message)) => {
                    reply::Reply::failure(&env, verb, code, reason, message)
                }
                Ok(()) => match parsed {
                    Err(bad) => reply::Reply::failure(&env, verb, 400, "BadRequest", bad.0),
                    Ok(cmd) => {
                        let now =
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        executor.run(&env, verb, cmd, &now).await
                    }
                },
            }
        };
        if reply.ok {
            info!(
                "mqtt api: cmd/{verb}: {}",
                reply.message.replace('\n', "; ")
            );
        } else {
            info!(
                "mqtt api: cmd/{verb} failed ({} {}): {}",
                reply.code, reply.reason, reply.message
            );
        }
        let payload = reply.to_bytes();
        let sent = match response_topic.filter(|t| reply::response_topic_allowed(&prefix, t)) {
            Some(topic) => {
                let properties = PublishProperties {
                    correlation_data: props.correlation_data,
                    content_type: Some("application/json".into()),
                    ..Default::default()
                };
                client
                    .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties)
                    .await
            }
            None => {
                let topic = reply::reply_topic(&prefix, env.id.as_deref());
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
            }
        };
        if let Err(e) = sent {
            warn!("mqtt api: cannot send the reply to cmd/{verb}: {e}");
        }
    }
}

/// Keeps the retained status topics (and Home Assistant configs) in step with the store.
struct StatusPublisher {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    client: AsyncClient,
    config: MqttApiConfig,
    coalescer: Coalescer,
    /// The Nodes, so that a node's status can be rebuilt when only its Pods or usage
    /// figures changed.
    nodes: HashMap<String, Node>,
    running: RunningPods,
}

impl StatusPublisher {
    async fn run(mut self, connected: Arc<Notify>, cancel: CancellationToken) {
        let mut events = self.store.subscribe();
        self.resync();
        let mut flush = tokio::time::interval(Duration::from_millis(250));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(self.config.status_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = events.recv() => match ev {
                    Ok(ev) => self.apply(ev.change, &ev.object).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        debug!("mqtt api: missed {n} store changes; reading everything again");
                        self.resync();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = connected.notified() => self.coalescer.republish_all(),
                // Usage figures change without a store write: look at them this often.
                _ = sweep.tick() => {
                    let names: Vec<String> = self.nodes.keys().cloned().collect();
                    for n in names {
                        self.offer_node(&n, false);
                    }
                }
                _ = flush.tick() => {
                    for (topic, payload) in self.coalescer.due(Instant::now()) {
                        let cleared = payload.is_empty();
                        self.publish(topic.clone(), payload).await;
                        if cleared {
                            self.coalescer.remove(&topic);
                        }
                    }
                }
            }
        }
    }

    fn prefix(&self) -> &str {
        &self.config.prefix
    }

    async fn publish(&self, topic: String, payload: Vec<u8>) {
        if let Err(e) = self
            .client
            .publish(topic.clone(), QoS::AtLeastOnce, true, payload)
            .await
        {
            debug!("mqtt api: cannot publish {topic}: {e}");
        }
    }

    /// Clears a retained topic (the object is gone), at once.
    async fn clear(&mut self, topic: String) {
        if self.coalescer.remove(&topic) {
            self.publish(topic, Vec::new()).await;
        }
    }

    /// Everything from the store: at start and after missed changes. Topics of objects
    /// that went away meanwhile are cleared at the next flush.
    fn resync(&mut self) {
        self.nodes.clear();
        self.running.clear();
        let mut live: Vec<String> = Vec::new();
        // One Pod at a time: a large fleet's Pods decoded at once are hundreds of MiB.
        let running = &mut self.running;
        let _ = self.store.visit::<Pod>(None, |p| {
            running.update(&p.metadata.key(), Some(&p));
        });
        if let Ok((nodes, _)) = self.store.list::<Node>(None) {
            for n in nodes {
                let name = n.metadata.name.clone();
                self.nodes.insert(name.clone(), n.clone());
                self.offer_node(&name, true);
                live.extend(self.node_topics(&name));
            }
        }
        macro_rules! workloads {
            ($ty:ty, $state:path) => {
                if let Ok((items, _)) = self.store.list::<$ty>(None) {
                    for o in &items {
                        live.extend(self.offer_workload(o, $state(o)));
                    }
                }
            };
        }
        workloads!(Deployment, status::deployment_state);
        workloads!(DaemonSet, status::daemonset_state);
        workloads!(Job, status::job_state);
        // Topics this process published for objects that are gone (after a lag).
        let live: std::collections::HashSet<String> = live.into_iter().collect();
        let gone: Vec<String> = self
            .coalescer
            .topics()
            .filter(|t| !live.contains(*t))
            .map(str::to_string)
            .collect();
        for t in gone {
            // Cleared (an empty retained payload) at the next flush.
            self.coalescer.offer(&t, Vec::new());
        }
    }

    async fn apply(&mut self, change: Change, object: &Object) {
        let deleted = change == Change::Deleted;
        match object {
            Object::Node(n) => {
                let name = n.metadata.name.clone();
                if deleted {
                    self.nodes.remove(&name);
                    for t in self.node_topics(&name) {
                        self.clear(t).await;
                    }
                } else {
                    self.nodes.insert(name.clone(), n.clone());
                    self.offer_node(&name, true);
                }
            }
            Object::Pod(p) => {
                let pod = (!deleted).then_some(p);
                for node in self.running.update(&p.metadata.key(), pod) {
                    self.offer_node(&node, false);
                }
            }
            Object::Deployment(d) => {
                self.workload_change(d, deleted, status::deployment_state(d))
                    .await
            }
            Object::DaemonSet(d) => {
                self.workload_change(d, deleted, status::daemonset_state(d))
                    .await
            }
            Object::Job(j) => self.workload_change(j, deleted, status::job_state(j)).await,
            _ => {}
        }
    }

    /// The status topic and, with discovery on, the Home Assistant config topics of a node.
    fn node_topics(&self, node: &str) -> Vec<String> {
        let mut out = vec![status::node_topic(self.prefix(), node)];
        if let Some(disc) = &self.config.homeassistant {
            out.extend(
                homeassistant::node_configs(disc, self.prefix(), node, "")
                    .into_iter()
                    .map(|(t, _)| t),
            );
        }
        out
    }

    /// Offers a node's current status (and, when `configs`, its discovery configs).
    fn offer_node(&mut self, name: &str, configs: bool) {
        let Some(node) = self.nodes.get(name) else {
            return;
        };
        let usage = self.metrics.node(name, punnet_api::Time::now());
        let state = status::node_state(node, usage.as_ref(), self.running.on(name));
        let model = state.model.clone();
        let topic = status::node_topic(&self.config.prefix, name);
        self.coalescer
            .offer(&topic, serde_json::to_vec(&state).unwrap_or_default());
        if let (true, Some(disc)) = (configs, &self.config.homeassistant) {
            for (t, c) in homeassistant::node_configs(disc, &self.config.prefix, name, &model) {
                self.coalescer.offer(&t, c.to_string().into_bytes());
            }
        }
    }

    /// Offers a workload's status (and a Deployment's discovery configs); returns the
    /// topics it owns.
    fn offer_workload<T: Resource>(&mut self, o: &T, state: status::WorkloadState) -> Vec<String> {
        let topics = self.workload_topics::<T>(&state.namespace, &state.name);
        self.coalescer
            .offer(&topics[0], serde_json::to_vec(&state).unwrap_or_default());
        if let (Some(disc), Some(token)) = (&self.config.homeassistant, &self.config.button_token) {
            if T::KIND == Deployment::KIND {
                let ns = o.meta().namespace.clone().unwrap_or_default();
                for (t, c) in homeassistant::deployment_configs(
                    disc,
                    &self.config.prefix,
                    &ns,
                    &o.meta().name,
                    token,
                ) {
                    self.coalescer.offer(&t, c.to_string().into_bytes());
                }
            }
        }
        topics
    }

    fn workload_topics<T: Resource>(&self, namespace: &str, name: &str) -> Vec<String> {
        let mut out = vec![status::workload_topic(
            self.prefix(),
            T::PLURAL,
            namespace,
            name,
        )];
        if let (Some(disc), true) = (&self.config.homeassistant, T::KIND == Deployment::KIND) {
            out.extend(
                homeassistant::deployment_configs(disc, self.prefix(), namespace, name, "")
                    .into_iter()
                    .map(|(t, _)| t),
            );
        }
        out
    }

    async fn workload_change<T: Resource>(
        &mut self,
        o: &T,
        deleted: bool,
        state: status::WorkloadState,
    ) {
        if deleted {
            for t in self.workload_topics::<T>(&state.namespace, &state.name) {
                self.clear(t).await;
            }
        } else {
            self.offer_workload(o, state);
        }
    }
}
