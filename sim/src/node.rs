//! One simulated agent: its own MQTT connection (client id, persistent session and last
//! will as the real agent's `link`), a status report on every change and every report
//! interval, and a fake runtime (`pods`) that follows the retained desired state.
//!
//! One task per node polls the event loop and does the node's work in between; nothing
//! it does blocks, so thousands of them share a few threads. Publishes use `try_publish`:
//! a report that finds the queue full is dropped, as the real agent drops one, because
//! the next carries the same full state.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use punnet_api::signing::{encode_signed, SigningKey};
use punnet_api::topics::{Topics, MAX_PACKET_SIZE, OFFLINE, ONLINE};
use punnet_api::wire::{decode, DesiredState, NodeStatusReport};
use punnet_api::Time;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::board::{BoardState, Wander};
use crate::pods::SimPods;

/// Requests a node may queue; reports beyond it are dropped (the next one repeats them).
const REQUEST_CAPACITY: usize = 8;

/// Fleet-wide figures the nodes keep up to date, for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub connected: AtomicI64,
    pub desired_pods: AtomicI64,
    pub running_pods: AtomicI64,
    pub reports: AtomicUsize,
    pub desired_messages: AtomicUsize,
    pub bad_messages: AtomicUsize,
}

/// How a node dies when it is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    /// Power cut: the socket stays open and silent, so the broker fires the last will
    /// after 1.5 × keepalive.
    Silent,
    /// The connection drops (process killed): the will fires at once.
    Close,
}

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub host: String,
    pub port: u16,
    /// TLS towards an `mqtts://` broker.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub topics: Topics,
    pub report_interval: Duration,
    pub keep_alive: Duration,
    pub start_delay: Duration,
    /// A bootstrap token every node enrols with before it connects (see `enrol`).
    pub enrol_token: Option<punnet_api::enrol::TokenString>,
}

pub struct SimNode {
    pub name: String,
    /// Signs every status report, as a real agent's `node.key` does.
    key: SigningKey,
    board: BoardState,
    pods: SimPods,
    generation: u64,
    settings: Arc<NodeSettings>,
    counters: Arc<Counters>,
    /// This node's share of `counters`, so a change is added as a difference.
    counted: (i64, i64),
    connected: bool,
    /// The MQTT password enrolment gave this node.
    password: Option<String>,
}

impl SimNode {
    pub fn new(
        index: usize,
        name: String,
        key: SigningKey,
        settings: Arc<NodeSettings>,
        counters: Arc<Counters>,
    ) -> SimNode {
        SimNode {
            name,
            key,
            board: BoardState::new(index),
            pods: SimPods::default(),
            generation: 0,
            settings,
            counters,
            counted: (0, 0),
            connected: false,
            password: None,
        }
    }

    fn options(&self) -> MqttOptions {
        let s = &self.settings;
        let mut o = MqttOptions::new(format!("punnet-agent-{}", self.name), &s.host, s.port);
        o.set_clean_session(false)
            .set_keep_alive(s.keep_alive)
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
            .set_request_channel_capacity(REQUEST_CAPACITY)
            .set_inflight(REQUEST_CAPACITY as u16)
            .set_last_will(LastWill::new(
                s.topics.online(&self.name),
                OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(password) = &self.password {
            o.set_credentials(self.name.clone(), password.clone());
        }
        if let Some(tls) = &s.tls {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        o
    }

    fn recount(&mut self) {
        let now = (self.pods.len() as i64, self.pods.running() as i64);
        self.counters
            .desired_pods
            .fetch_add(now.0 - self.counted.0, Ordering::Relaxed);
        self.counters
            .running_pods
            .fetch_add(now.1 - self.counted.1, Ordering::Relaxed);
        self.counted = now;
    }

    /// Takes this node's Pods out of the fleet figures (it died or stopped).
    fn uncount(&mut self) {
        self.counters
            .desired_pods
            .fetch_sub(self.counted.0, Ordering::Relaxed);
        self.counters
            .running_pods
            .fetch_sub(self.counted.1, Ordering::Relaxed);
        self.counted = (0, 0);
    }

    fn set_connected(&mut self, up: bool) {
        if up != self.connected {
            self.connected = up;
            self.counters
                .connected
                .fetch_add(if up { 1 } else { -1 }, Ordering::Relaxed);
        }
    }

    fn report(&mut self, client: &AsyncClient) {
        let facts = self.board.facts(&self.name, self.pods.running());
        let host_ip = facts.addresses[0].clone();
        let report = NodeStatusReport {
            node: self.name.clone(),
            generation_seen: self.generation,
            sent_at: Time::now(),
            facts,
            pods: self.pods.reports(&host_ip),
            events: Vec::new(),
        };
        let topic = self.settings.topics.status(&self.name);
        if client
            .try_publish(
                topic,
                QoS::AtLeastOnce,
                false,
                encode_signed(&report, &self.name, &self.key),
            )
            .is_ok()
        {
            self.counters.reports.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_desired(&mut self, payload: &[u8]) -> bool {
        self.counters
            .desired_messages
            .fetch_add(1, Ordering::Relaxed);
        // Not verified: a load generator's own CPU is not what is measured, and the
        // controller signs whatever goes out either way.
        let msg = match decode::<DesiredState>(payload) {
            Ok(m) => m,
            Err(e) => {
                self.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
                warn!("{}: bad desired state: {e}", self.name);
                return false;
            }
        };
        // A retained message from before one already applied (the agent's rule).
        if msg.generation < self.generation {
            return false;
        }
        self.generation = msg.generation;
        let changed = self.pods.set_desired(
            &msg.pods,
            msg.pod_cidr.as_deref(),
            std::time::Instant::now(),
            self.settings.start_delay,
        );
        self.recount();
        changed
    }

    /// Runs the node until `kill` (it dies as `mode` says) or `shutdown` (it says
    /// goodbye cleanly, as a stopping agent does).
    pub async fn run(
        mut self,
        kill: CancellationToken,
        mode: KillMode,
        shutdown: CancellationToken,
    ) -> Option<EventLoop> {
        if let Some(token) = self.settings.enrol_token.clone() {
            let mut wait = Duration::from_millis(500);
            let pending = crate::enrol::Pending::new(&token, &self.name, self.key.public_key());
            loop {
                let enrolled = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = kill.cancelled() => return None,
                    r = crate::enrol::enrol(&self.settings, &token, &pending) => r,
                };
                match enrolled {
                    Ok(()) => {
                        self.password = Some(pending.password);
                        break;
                    }
                    Err(crate::enrol::EnrolFailure::Refused(why)) => {
                        tracing::warn!("{}: enrolment refused: {why}", self.name);
                        return None;
                    }
                    Err(crate::enrol::EnrolFailure::Retry(why)) => {
                        debug!("{}: enrolment: {why}; retrying", self.name);
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
        let (client, mut eventloop) = AsyncClient::new(self.options(), REQUEST_CAPACITY);
        let topics = self.settings.topics.clone();
        let desired_topic = topics.desired(&self.name);
        let mut rng = Wander::new(self.board.index as u64 ^ 0x5eed);
        // Spread the fleet's heartbeats over the interval instead of all at once.
        let interval = self.settings.report_interval;
        let first = Duration::from_millis(rng.below(interval.as_millis().max(1) as u64));
        let mut next_report = Instant::now() + first;
        let mut report_soon = false;
        let mut backoff = Duration::from_millis(500);
        loop {
            let next_start = self
                .pods
                .next_start()
                .map(|t| Instant::from_std(t).max(Instant::now()));
            // Only a connected node wakes soon to report: waking drops the pending
            // `poll()`, and a reconnect dropped every 20 ms never completes its
            // handshake on a loaded machine (15 of 5,000 nodes stayed away for good).
            let wake = match (report_soon && self.connected, next_start) {
                (true, _) => Instant::now() + Duration::from_millis(20),
                (false, Some(t)) => t.min(next_report),
                (false, None) => next_report,
            };
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = client.try_publish(topics.online(&self.name), QoS::AtLeastOnce, true, OFFLINE);
                    let _ = client.try_disconnect();
                    // Let the goodbye out, bounded.
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        while eventloop.poll().await.is_ok() {}
                    }).await;
                    self.set_connected(false);
                    self.uncount();
                    return None;
                }
                _ = kill.cancelled() => {
                    self.set_connected(false);
                    self.uncount();
                    return match mode {
                        KillMode::Silent => Some(eventloop),
                        KillMode::Close => None,
                    };
                }
                _ = tokio::time::sleep_until(wake) => {
                    if self.pods.advance(std::time::Instant::now()) > 0 {
                        self.recount();
                        report_soon = true;
                    }
                    if self.connected && (report_soon || Instant::now() >= next_report) {
                        self.report(&client);
                        report_soon = false;
                        next_report = Instant::now() + interval;
                    } else if Instant::now() >= next_report {
                        next_report = Instant::now() + interval;
                    }
                }
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        self.set_connected(true);
                        backoff = Duration::from_millis(500);
                        let _ = client.try_subscribe(desired_topic.clone(), QoS::AtLeastOnce);
                        let _ = client.try_publish(topics.online(&self.name), QoS::AtLeastOnce, true, ONLINE);
                        report_soon = true;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == desired_topic => {
                        if self.on_desired(&p.payload) {
                            report_soon = true;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!("{}: MQTT: {e}", self.name);
                        self.set_connected(false);
                        // Back off with jitter, so a restarted broker is not hit by every
                        // node in the same millisecond.
                        let jitter = Duration::from_millis(rng.below(backoff.as_millis() as u64 + 1));
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = kill.cancelled() => {}
                            _ = tokio::time::sleep(backoff + jitter) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                },
            }
        }
    }
}
