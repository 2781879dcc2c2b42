//! The embedded MQTT broker (rumqttd), so a small fleet needs nothing but the controller.
//! A large fleet points controller and agents at an external broker instead; the
//! controller's own client (`mqtt`) talks to either the same way.
//!
//! rumqttd's `Broker::start()` blocks and spawns its own threads and runtimes, so it runs
//! on a dedicated std thread. It has **no shutdown API**: once started it lives until the
//! process exits, which is how the controller stops it (its `main` returns after `run`).
//! It also keeps nothing on disk: retained messages and sessions are gone after a restart,
//! and node sync republishes every node's desired state after each ConnAck.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use punnet_api::topics::{Topics, MAX_PACKET_SIZE};
use rumqttd::{Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};
use thiserror::Error;
use tracing::{info, warn};

/// The MQTT port, as every broker uses.
pub const DEFAULT_PORT: u16 = 1883;

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("embedded MQTT broker: cannot listen on {addr}: {source} (is another broker running? listen on another address, or point the controller at that broker)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded MQTT broker: cannot start its thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("embedded MQTT broker stopped while starting on {addr}: {reason}")]
    Stopped { addr: SocketAddr, reason: String },
    #[error("embedded MQTT broker did not accept connections on {addr} within {waited:?}")]
    NotListening { addr: SocketAddr, waited: Duration },
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// MQTT 3.1.1 listener (what the agents and the controller use).
    pub listen: SocketAddr,
    /// An optional MQTT 5 listener on its own address (rumqttd serves one protocol per
    /// port), for home-automation tools that speak v5.
    pub listen_v5: Option<SocketAddr>,
    /// Most simultaneous clients: every board, the controller and a few tools. rumqttd
    /// reserves its connection tables at this size (address space, not memory: pages
    /// are touched as clients connect), so a generous limit costs a small fleet nothing.
    pub max_connections: usize,
    /// Who may connect (see `identity::BrokerAuth`); `None`: anybody (tests only).
    pub auth: Option<std::sync::Arc<crate::identity::BrokerAuth>>,
    /// The topic prefix: the controller's own wildcard subscriptions (every node's status)
    /// get large logs, every per-node filter a small one.
    pub prefix: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            listen_v5: None,
            // A 5,000-board fleet with room to spare (the scale benchmark's largest).
            max_connections: 10_000,
            auth: None,
            prefix: punnet_api::topics::DEFAULT_PREFIX.to_string(),
        }
    }
}

/// rumqttd's configuration, every field chosen for a Pi: `RouterConfig::default()` is
/// all zeros (unusable) and rumqttd's sample keeps up to 1 GB per topic filter.
pub fn rumqttd_config(config: &BrokerConfig) -> Config {
    let router = RouterConfig {
        max_connections: config.max_connections,
        // Packets handed to one connection per router pass: enough to drain a burst of
        // desired-state messages without starving other clients.
        max_outgoing_packet_count: 200,
        // Each subscription filter keeps its messages in memory in segments. A board's
        // filters (its desired state, its log requests) carry full-state messages where
        // only the newest matters, so two small segments do: at 5,000 boards the old 4 x
        // 512 KiB per filter was gigabytes. A message bigger than a segment still fits
        // (it gets a segment to itself).
        max_segment_size: 32 * 1024,
        max_segment_count: 2,
        // The controller's wildcard filters take every board's reports: 8 MiB is several
        // seconds of a 5,000-board fleet reporting, room for the controller to catch up.
        custom_segment: Some(
            fan_in_filters(&config.prefix)
                .into_iter()
                .map(|f| {
                    let segments = SegmentConfig {
                        max_segment_size: 1024 * 1024,
                        max_segment_count: 8,
                    };
                    (f, segments)
                })
                .collect(),
        ),
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let connections = ConnectionSettings {
        // A client must send CONNECT this soon after the TCP accept.
        connection_timeout_ms: 5_000,
        // The largest packet either side sends (the desired set of a full node).
        max_payload_size: MAX_PACKET_SIZE,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        // Filters are created as clients subscribe; nothing is configured up front.
        dynamic_filters: true,
    };
    let mut connections = connections;
    if let Some(auth) = &config.auth {
        // rumqttd cannot be stopped and keeps its handler for good: holding the token
        // store (and with it the database) from here would keep the database locked
        // after `run` returned. The controller holds the strong reference while it runs.
        let auth = std::sync::Arc::downgrade(auth);
        connections.set_auth_handler(move |client_id: String, user: String, pass: String| {
            let auth = auth.upgrade();
            async move {
                let checked = match &auth {
                    Some(auth) => auth.check(&user, &pass),
                    None => Err("the controller has stopped".to_string()),
                };
                match checked {
                    Ok(who) => {
                        tracing::debug!(client = %client_id, ?who, "MQTT login accepted");
                        true
                    }
                    Err(why) => {
                        warn!(client = %client_id, user = %user, "MQTT login refused: {why}");
                        false
                    }
                }
            }
        });
    }
    let server = |name: &str, listen: SocketAddr| ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    };
    let mut v4 = HashMap::new();
    v4.insert("1".to_string(), server("punnet-mqtt-v4", config.listen));
    let v5 = config.listen_v5.map(|addr| {
        let mut m = HashMap::new();
        m.insert("1".to_string(), server("punnet-mqtt-v5", addr));
        m
    });
    Config {
        id: 0,
        router,
        v4: Some(v4),
        v5,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

/// The filters the controller subscribes to that match every board's topic.
fn fan_in_filters(prefix: &str) -> Vec<String> {
    let topics = Topics::new(prefix);
    vec![
        topics.all_status(),
        topics.all_online(),
        topics.all_log_replies(),
        // A whole fleet enrolling at once (punnet-sim --token) lands here.
        punnet_api::enrol::all_requests(prefix),
    ]
}

/// Starts the broker on `addr` (MQTT 3.1.1) and returns once it accepts connections.
pub fn start(addr: SocketAddr) -> Result<(), BrokerError> {
    start_with(BrokerConfig {
        listen: addr,
        ..BrokerConfig::default()
    })
}

pub fn start_with(config: BrokerConfig) -> Result<(), BrokerError> {
    // rumqttd only logs a failed bind from its own thread; find out here, with a reason.
    for addr in std::iter::once(config.listen).chain(config.listen_v5) {
        TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    }
    let rumqttd = rumqttd_config(&config);
    let thread = thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(rumqttd);
            // Returns only if every listener failed; there is no way to stop it.
            broker.start().map_err(|e| e.to_string())
        })
        .map_err(BrokerError::Thread)?;

    let addrs: Vec<SocketAddr> = std::iter::once(config.listen)
        .chain(config.listen_v5)
        .collect();
    let login = config.auth.as_ref().map(|a| a.controller_login());
    let waited = Duration::from_secs(10);
    let deadline = Instant::now() + waited;
    for addr in addrs {
        let probe = connectable(addr);
        // The v5 listener refuses a 3.1.1 CONNECT: knock on it in its own version.
        let v5 = Some(addr) == config.listen_v5;
        loop {
            if mqtt_handshake(probe, v5, login.as_ref()) {
                break;
            }
            if thread.is_finished() {
                let reason = match thread.join() {
                    Ok(Err(e)) => e,
                    _ => "its listener failed (see the log above)".to_string(),
                };
                return Err(BrokerError::Stopped { addr, reason });
            }
            if Instant::now() > deadline {
                return Err(BrokerError::NotListening { addr, waited });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    info!("embedded MQTT broker listening on {}", config.listen);
    Ok(())
}

/// Where to knock to see a listener on `addr`: the loopback address for the wildcard.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Whether an MQTT 3.1.1 (or, with `v5`, MQTT 5) CONNECT to `addr`, with the
/// controller's login when the broker asks for one, gets a CONNACK: an open port alone
/// does not mean the router behind it is ready.
fn mqtt_handshake(addr: SocketAddr, v5: bool, login: Option<&(String, String)>) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    // A new client id per knock: rumqttd 0.20 panics (and poisons the listener for good)
    // when a client id comes back whose earlier CONNECT it gave up on half-way, which a
    // knock that timed out while the router was still starting can be.
    static KNOCKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = KNOCKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let client_id = format!("punnet-controller-probe-{}-{n}", std::process::id());
    let client_id = client_id.as_bytes();
    let mut body = Vec::new();
    // Protocol name "MQTT", level 4 (or 5), clean session (+ username and password),
    // keepalive 10 s.
    let flags = if login.is_some() { 0xc2 } else { 0x02 };
    let level = if v5 { 5 } else { 4 };
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 10]);
    if v5 {
        body.push(0); // no CONNECT properties
    }
    body.extend_from_slice(&[0, client_id.len() as u8]);
    body.extend_from_slice(client_id);
    if let Some((user, pass)) = login {
        for field in [user.as_bytes(), pass.as_bytes()] {
            body.extend_from_slice(&(field.len() as u16).to_be_bytes());
            body.extend_from_slice(field);
        }
    }
    // Remaining length fits one byte: the login is the controller's short one.
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    let mut connack = [0u8; 4];
    let ok = s.write_all(&packet).is_ok()
        && s.read_exact(&mut connack).is_ok()
        && connack[0] == 0x20
        && connack[3] == 0;
    let _ = s.write_all(&[0xe0, 0]); // DISCONNECT
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_router_field_is_set_for_a_pi() {
        let c = rumqttd_config(&BrokerConfig::default());
        assert!(c.router.max_connections > 0);
        assert!(c.router.max_outgoing_packet_count > 0);
        assert!(
            c.router.max_segment_size >= 1024,
            "rumqttd panics below 1 KiB"
        );
        assert!(c.router.max_segment_size * c.router.max_segment_count <= 4 << 20);
        let v4 = &c.v4.as_ref().unwrap()["1"];
        assert!(v4.connections.dynamic_filters);
        assert!(v4.connections.max_payload_size >= MAX_PACKET_SIZE);
        assert!(c.v5.is_none());
    }

    /// The segment size and count rumqttd gives a subscription filter, found the way
    /// its router does.
    fn segments_of(c: &Config, filter: &str) -> (usize, usize) {
        let custom = c.router.custom_segment.as_ref().unwrap();
        custom
            .iter()
            .find(|(f, _)| rumqttd::protocol::matches(filter, f))
            .map(|(_, s)| (s.max_segment_size, s.max_segment_count))
            .unwrap_or((c.router.max_segment_size, c.router.max_segment_count))
    }

    #[test]
    fn boards_filters_stay_small_and_the_controllers_are_roomy() {
        let c = rumqttd_config(&BrokerConfig {
            prefix: "fleet/a".into(),
            ..BrokerConfig::default()
        });
        let topics = Topics::new("fleet/a");
        // 5,000 boards with a desired and a log-request filter each: well under 1 GiB.
        for filter in [topics.desired("pi-1"), topics.log_request("pi-1")] {
            let (size, count) = segments_of(&c, &filter);
            assert!(size * count <= 64 * 1024, "{filter}: {size} x {count}");
        }
        for filter in [topics.all_status(), topics.all_online()] {
            let (size, count) = segments_of(&c, &filter);
            assert!(size * count >= 4 << 20, "{filter}: {size} x {count}");
        }
    }

    #[test]
    fn an_address_in_use_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = start(taken.local_addr().unwrap()).unwrap_err();
        assert!(matches!(err, BrokerError::Bind { .. }), "{err}");
        assert!(err.to_string().contains("cannot listen on 127.0.0.1:"));
    }

    #[test]
    fn wildcard_is_probed_on_loopback() {
        assert_eq!(
            connectable("0.0.0.0:1883".parse().unwrap()),
            "127.0.0.1:1883".parse().unwrap()
        );
        assert_eq!(
            connectable("[::]:1".parse().unwrap()),
            "[::1]:1".parse().unwrap()
        );
    }
}
