//! The agent's MQTT link to the controller (rumqttc 0.25, MQTT 3.1.1). One task owns
//! the event loop and does nothing but poll it, so keepalives and acks never wait for
//! the agent's own work; incoming messages are handed over on a channel. The session is
//! persistent (stable client id, `clean_session(false)`), and on every ConnAck the link
//! still re-announces itself: retained `online`, both subscriptions, and a `Connected`
//! event so the agent sends a full status report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use punnet_api::topics::{Topics, MAX_PACKET_SIZE, OFFLINE, ONLINE};
use rumqttc::{AsyncClient, ClientError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::{AgentConfig, ConfigError};

/// Requests the event loop may hold while it is not connected, before `publish().await`
/// waits. Status reports and log chunks beyond this wait for the link, never the agent.
const REQUEST_CAPACITY: usize = 64;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// A ConnAck: the broker (re)accepted us; send a full status.
    Connected,
    Desired(Vec<u8>),
    LogRequest(Vec<u8>),
}

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("MQTT broker setting: {0}")]
    Config(#[from] ConfigError),
    #[error("MQTT client for node {node}: {source}")]
    Client {
        node: String,
        #[source]
        source: ClientError,
    },
    #[error("MQTT broker TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The link's state for people (the board page): whether it is up, since when, and
/// why the last attempt failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkHealth {
    pub connected: bool,
    /// When the link last came up or went down; `None` before the first attempt ended.
    pub since: Option<SystemTime>,
    /// The last connection error, with a hint when there is one (TLS trouble).
    pub last_error: Option<String>,
    /// ConnAcks since the agent started.
    pub connects: u64,
}

impl LinkHealth {
    fn up(&mut self, now: SystemTime) {
        self.connected = true;
        self.since = Some(now);
        self.last_error = None;
        self.connects += 1;
    }

    fn down(&mut self, now: SystemTime, error: Option<String>) {
        if self.connected || self.since.is_none() {
            self.since = Some(now);
        }
        self.connected = false;
        if error.is_some() {
            self.last_error = error;
        }
    }
}

/// The sending half of the link, cheap to clone.
#[derive(Clone)]
pub struct Link {
    client: AsyncClient,
    topics: Topics,
    node: String,
    /// Between a ConnAck and the next connection error. Status reports are only queued
    /// while connected: a reconnect sends a fresh one, so stale ones would only add load.
    connected: Arc<AtomicBool>,
    health: Arc<Mutex<LinkHealth>>,
}

impl Link {
    /// A copy of the link's state for the board page.
    pub fn health(&self) -> LinkHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_health(&self, f: impl FnOnce(&mut LinkHealth)) {
        f(&mut self.health.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Queues a QoS 1 publish without waiting; false when not connected or the queue is
    /// full. Used for status reports, which the next heartbeat or ConnAck repeats anyway.
    pub fn try_publish(&self, topic: String, payload: Vec<u8>) -> bool {
        self.is_connected()
            && self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_ok()
    }

    /// Publishes QoS 1, waiting for room in the queue (while the link is down).
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), LinkError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|source| LinkError::Client {
                node: self.node.clone(),
                source,
            })
    }

    /// Says goodbye: retained `offline`, then a clean disconnect (so the broker drops the
    /// will). Bounded: a broker that is unreachable gets the will instead.
    pub async fn shutdown(&self, grace: Duration) {
        let online = self.topics.online(&self.node);
        let goodbye = async {
            self.client
                .publish(online, QoS::AtLeastOnce, true, OFFLINE.as_bytes().to_vec())
                .await?;
            self.client.disconnect().await
        };
        match tokio::time::timeout(grace, goodbye).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not say goodbye to the broker"),
            Err(_) => tracing::warn!(
                "broker did not take our goodbye in time; it will publish our last will"
            ),
        }
    }
}

/// MQTT options for this node: stable id, persistent session, will, packet limits.
pub fn mqtt_options(config: &AgentConfig) -> Result<MqttOptions, LinkError> {
    let (host, port) = config.broker_address()?;
    let topics = Topics::new(&config.prefix);
    let mut options = MqttOptions::new(format!("punnet-agent-{}", config.node_name), host, port);
    options
        .set_clean_session(false)
        .set_keep_alive(config.keep_alive)
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_last_will(LastWill::new(
            topics.online(&config.node_name),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(login) = &config.mqtt_login {
        options.set_credentials(login.username.clone(), login.password.clone());
    }
    crate::tls::apply(&mut options, config)?;
    Ok(options)
}

/// Creates the link. The returned future drives the event loop until the link
/// disconnects cleanly; run it on its own task.
pub fn connect(
    config: &AgentConfig,
    events: mpsc::UnboundedSender<LinkEvent>,
) -> Result<(Link, impl std::future::Future<Output = ()> + Send + 'static), LinkError> {
    let options = mqtt_options(config)?;
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let link = Link {
        client,
        topics: Topics::new(&config.prefix),
        node: config.node_name.clone(),
        connected: Arc::new(AtomicBool::new(false)),
        health: Arc::new(Mutex::new(LinkHealth::default())),
    };
    let driver = drive(eventloop, link.clone(), events);
    Ok((link, driver))
}

/// Up to half again as long, so a fleet that lost its broker does not reconnect in
/// lock-step; never under the minimum nor over the maximum.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + rand::random::<f64>() * 0.5)
        .clamp(BACKOFF_MIN, BACKOFF_MAX)
}

async fn drive(mut eventloop: EventLoop, link: Link, events: mpsc::UnboundedSender<LinkEvent>) {
    let desired = link.topics.desired(&link.node);
    let log_request = link.topics.log_request(&link.node);
    let mut backoff = BACKOFF_MIN;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                backoff = BACKOFF_MIN;
                link.connected.store(true, Ordering::Relaxed);
                link.set_health(|h| h.up(SystemTime::now()));
                // Queued from a task: the requests go out only while this loop polls.
                let link = link.clone();
                let (desired, log_request) = (desired.clone(), log_request.clone());
                tokio::spawn(async move {
                    let online = link.topics.online(&link.node);
                    let c = &link.client;
                    let announced = async {
                        c.publish(online, QoS::AtLeastOnce, true, ONLINE.as_bytes().to_vec())
                            .await?;
                        c.subscribe(desired, QoS::AtLeastOnce).await?;
                        c.subscribe(log_request, QoS::AtLeastOnce).await
                    };
                    if let Err(e) = announced.await {
                        tracing::warn!(error = %e, "could not subscribe after connecting");
                    }
                });
                if events.send(LinkEvent::Connected).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let event = if p.topic == desired {
                    LinkEvent::Desired(p.payload.to_vec())
                } else if p.topic == log_request {
                    LinkEvent::LogRequest(p.payload.to_vec())
                } else {
                    tracing::debug!(topic = %p.topic, "ignoring a message on an unexpected topic");
                    continue;
                };
                if events.send(event).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                link.connected.store(false, Ordering::Relaxed);
                link.set_health(|h| h.down(SystemTime::now(), None));
                tracing::info!("disconnected from the MQTT broker");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                link.connected.store(false, Ordering::Relaxed);
                let wait = jittered(backoff);
                let text = e.to_string();
                let shown = match punnet_api::tls::explain(&text) {
                    Some(hint) => format!("{text}: {hint}"),
                    None => text.clone(),
                };
                link.set_health(|h| h.down(SystemTime::now(), Some(shown)));
                match punnet_api::tls::explain(&text) {
                    Some(hint) => {
                        tracing::warn!(error = %e, retry_in = ?wait, "MQTT connection failed: {hint}")
                    }
                    None => tracing::warn!(error = %e, retry_in = ?wait, "MQTT connection failed"),
                }
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_the_protocol_rules() {
        let mut config = AgentConfig::new("pi-1");
        config.broker = "mqtt://10.0.0.2:1884".into();
        config.allow_plaintext = true;
        let o = mqtt_options(&config).unwrap();
        assert_eq!(o.client_id(), "punnet-agent-pi-1");
        assert!(!o.clean_session());
        assert_eq!(o.broker_address(), ("10.0.0.2".to_string(), 1884));
        assert_eq!(o.keep_alive(), Duration::from_secs(15));
        let will = o.last_will().unwrap();
        assert_eq!(will.topic, "punnet/v1/nodes/pi-1/online");
        assert_eq!(&will.message[..], OFFLINE.as_bytes());
        assert!(will.retain);
        assert_eq!(o.max_packet_size(), MAX_PACKET_SIZE);
    }

    #[test]
    fn health_remembers_since_when_and_why() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut h = LinkHealth::default();
        h.down(t(1), Some("connection refused".into()));
        assert_eq!((h.connected, h.since), (false, Some(t(1))));
        h.down(t(5), Some("connection refused again".into()));
        assert_eq!(h.since, Some(t(1)), "down since the first failure");
        assert_eq!(h.last_error.as_deref(), Some("connection refused again"));
        h.up(t(9));
        assert_eq!((h.connected, h.since, h.connects), (true, Some(t(9)), 1));
        assert_eq!(h.last_error, None);
        h.down(t(20), None);
        assert_eq!((h.connected, h.since), (false, Some(t(20))));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(10) && d <= Duration::from_secs(15));
            assert!(jittered(BACKOFF_MIN) >= BACKOFF_MIN);
            assert_eq!(jittered(BACKOFF_MAX), BACKOFF_MAX);
        }
    }
}
