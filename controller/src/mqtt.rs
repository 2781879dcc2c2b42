//! The controller's one MQTT connection (rumqttc), shared by node sync and the log proxy.
//!
//! rumqttc sends nothing unless its event loop is polled, and `poll()` reconnects at once
//! after an error, so one task owns the event loop: it polls without ever waiting on
//! anything else, backs off with jitter between failed connects, subscribes again after
//! every ConnAck (a restarted broker such as the embedded one remembers no session), and
//! leaves incoming messages in an [`Inbox`] for the node sync loop. It runs on the I/O
//! runtime (`io_runtime`), so keepalives go out however busy the controller is.
//! Everybody else publishes through a cloned [`MqttHandle`].

use std::sync::Arc;
use std::time::Duration;

use punnet_api::topics::{Topics, DEFAULT_PREFIX, MAX_PACKET_SIZE};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::nodesync::Incoming;

/// The client id the controller connects with. Stable, so that with `clean_session =
/// false` a broker that kept the session delivers what arrived while it was away.
pub const DEFAULT_CLIENT_ID: &str = "punnet-controller";

#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// Topic prefix, `punnet/v1` unless configured.
    pub prefix: String,
    pub client_id: String,
    pub keep_alive: Duration,
    /// First wait after a failed connect; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// MQTT username and password (the controller's own login); `None`: anonymous.
    pub credentials: Option<(String, String)>,
    /// The URL said `mqtts://` (or gave no scheme): the connection must use TLS.
    pub secure: bool,
    /// The TLS client configuration (trusting the controller's CA); set by the caller
    /// when `secure` (see `tls::client_settings`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl MqttSettings {
    pub fn new(host: impl Into<String>, port: u16) -> MqttSettings {
        MqttSettings {
            host: host.into(),
            port,
            prefix: DEFAULT_PREFIX.to_string(),
            client_id: DEFAULT_CLIENT_ID.to_string(),
            keep_alive: Duration::from_secs(10),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            credentials: None,
            secure: false,
            tls: None,
        }
    }

    /// `mqtt://host:port`, `tcp://host:port`, `host:port` or `host` (port 1883); IPv6
    /// hosts in brackets, `mqtt://[::1]:1883`; `mqtts://` or `ssl://` (port 8883) and a
    /// bare `host[:port]` mean TLS.
    pub fn from_url(url: &str) -> Result<MqttSettings, MqttError> {
        let bad = |reason: &str| MqttError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (secure, default_port) = punnet_api::tls::mqtt_scheme(url).ok_or_else(|| {
            bad("unsupported scheme (use mqtts://, or mqtt:// with --allow-plaintext)")
        })?;
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let rest = rest.trim_end_matches('/');
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad("expected mqtt://host:port"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
            None => default_port,
        };
        Ok(MqttSettings {
            secure,
            ..MqttSettings::new(host, port)
        })
    }

    pub fn topics(&self) -> Topics {
        Topics::new(&self.prefix)
    }
}

#[derive(Debug, Error)]
pub enum MqttError {
    #[error("invalid MQTT broker address {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("MQTT publish to {topic} failed: the client has stopped ({source})")]
    Stopped {
        topic: String,
        #[source]
        source: rumqttc::ClientError,
    },
    #[error(
        "MQTT publish to {topic}: message of {size} bytes is over the {max}-byte packet limit"
    )]
    TooLarge {
        topic: String,
        size: usize,
        max: usize,
    },
}

pub use crate::mqtt_inbox::{Inbox, MqttEvent};

/// A cheap, cloneable way to publish on the controller's connection.
#[derive(Clone)]
pub struct MqttHandle {
    client: AsyncClient,
    topics: Topics,
    connected: watch::Receiver<bool>,
}

impl MqttHandle {
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Whether the last thing the event loop saw was a ConnAck rather than an error.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Publishes at QoS 1. Waits only while rumqttc's request queue is full, which drains
    /// as soon as the connection is up; callers select on their cancel token.
    pub async fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), MqttError> {
        // An oversized publish is "sent" fine and then drops the connection: refuse it here.
        let size = payload.len() + topic.len() + 16;
        if size > MAX_PACKET_SIZE {
            return Err(MqttError::TooLarge {
                topic,
                size,
                max: MAX_PACKET_SIZE,
            });
        }
        crate::prometheus::mqtt_message(crate::prometheus::Direction::Out, &topic);
        self.client
            .publish(topic.clone(), QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|source| MqttError::Stopped { topic, source })
    }
}

fn options(settings: &MqttSettings) -> MqttOptions {
    let mut o = MqttOptions::new(
        settings.client_id.clone(),
        settings.host.clone(),
        settings.port,
    );
    o.set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    if let Some((user, pass)) = &settings.credentials {
        o.set_credentials(user.clone(), pass.clone());
    }
    crate::tls::client::apply(&mut o, settings.tls.as_ref());
    o
}

/// Starts the connection's event loop task on the I/O runtime. It runs until `cancel`
/// fires; what arrives waits in the returned [`Inbox`] (which node sync drains).
pub fn start(
    settings: &MqttSettings,
    cancel: CancellationToken,
) -> (MqttHandle, Arc<Inbox>, tokio::task::JoinHandle<()>) {
    // Room for a burst of publishes (a republish of every node after a reconnect).
    let (client, eventloop) = AsyncClient::new(options(settings), 64);
    let inbox = Arc::new(Inbox::new());
    let (connected_tx, connected_rx) = watch::channel(false);
    let topics = settings.topics();
    let handle = MqttHandle {
        client: client.clone(),
        topics: topics.clone(),
        connected: connected_rx,
    };
    let task = event_loop(
        eventloop,
        client,
        topics,
        settings.clone(),
        inbox.clone(),
        connected_tx,
        cancel,
    );
    let task = match crate::io_runtime::handle() {
        Ok(io) => io.spawn(task),
        Err(e) => {
            warn!("mqtt: no I/O runtime ({e}); the connection shares the controller's");
            tokio::spawn(task)
        }
    };
    (handle, inbox, task)
}

async fn event_loop(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    topics: Topics,
    settings: MqttSettings,
    inbox: Arc<Inbox>,
    connected: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let broker = format!("{}:{}", settings.host, settings.port);
    let mut failures: u32 = 0;
    loop {
        let polled = tokio::select! {
            _ = cancel.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!("mqtt: connected to {broker} as {}", settings.client_id);
                failures = 0;
                let _ = connected.send(true);
                subscribe(&client, &topics);
                inbox.connected();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                crate::prometheus::mqtt_message(crate::prometheus::Direction::In, &p.topic);
                let received = tokio::time::Instant::now();
                let newest_only = matches!(
                    crate::nodesync::classify(&topics, &p.topic),
                    Some(Incoming::Status(_) | Incoming::Online(_))
                );
                if newest_only {
                    inbox.put_latest(p.topic, p.payload.to_vec(), received);
                } else {
                    inbox.put_ordered(p.topic, p.payload.to_vec(), received);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = connected.send(false);
                failures = failures.saturating_add(1);
                let wait = backoff(&settings, failures);
                if failures == 1 {
                    warn!(
                        "mqtt: connection to {broker} failed: {}; retrying",
                        describe(&e)
                    );
                } else {
                    debug!("mqtt: connection to {broker} failed again ({failures}): {e}; next try in {wait:?}");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    // Say goodbye so a broker does not keep a half-open session around; bounded.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    let _ = connected.send(false);
    inbox.close();
}

/// Subscribing goes through the request queue the event loop drains, so it must not be
/// awaited from the event loop itself: a full queue would then wait forever.
fn subscribe(client: &AsyncClient, topics: &Topics) {
    let filters = [
        topics.all_status(),
        topics.all_online(),
        topics.all_log_replies(),
    ]
    .map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce));
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = client.subscribe_many(filters).await {
            warn!("mqtt: could not subscribe: {e}");
        }
    });
}

/// Exponential back-off with ±50 % jitter, so a fleet of clients does not reconnect in step.
fn backoff(settings: &MqttSettings, failures: u32) -> Duration {
    let exp = settings
        .min_backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(settings.max_backoff);
    exp.mul_f64(rand::random::<f64>() + 0.5)
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the broker running?)".to_string()
        }
        other => {
            let text = other.to_string();
            match punnet_api::tls::explain(&text) {
                Some(hint) => format!("{text} ({hint})"),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let s = MqttSettings::from_url("mqtt://pi-controller.local:1884").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("pi-controller.local", 1884));
        assert_eq!(s.client_id, DEFAULT_CLIENT_ID);
        assert!(!s.secure);
        let s = MqttSettings::from_url("10.0.0.2").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.secure),
            ("10.0.0.2", 8883, true)
        );
        let s = MqttSettings::from_url("mqtts://broker.lan").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.secure),
            ("broker.lan", 8883, true)
        );
        let s = MqttSettings::from_url("tcp://[::1]:1885/").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 1885));
        for bad in ["mqtt://:1883", "mqtt://x:port", "http://x"] {
            let err = MqttSettings::from_url(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid MQTT broker address"),
                "{err}"
            );
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let s = MqttSettings::new("localhost", 1883);
        for _ in 0..50 {
            let first = backoff(&s, 1);
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(300));
            let late = backoff(&s, 30);
            assert!(late >= Duration::from_secs(5) && late <= Duration::from_secs(15));
        }
    }
}
