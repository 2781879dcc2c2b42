//! punnet-sim: a fleet of simulated agents for measuring the controller. Each node is a
//! real MQTT client with its own connection, client id and last will, speaking the wire
//! protocol of `punnet_api::wire` on the agent's topics, with a fake runtime that starts
//! every desired Pod after a short delay. Nodes can be killed part-way (a power cut or a
//! dropped connection) to measure how fast the controller moves their Pods.
//!
//! Each node signs its status with a key of its own, made at start; the simulator
//! registers the whole fleet's public keys with the controller in one admin request
//! (`POST /nodekeys`) before any node connects, as enrolment would one by one.

pub mod board;
pub mod enrol;
pub mod node;
pub mod pods;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use punnet_api::signing::{public_key_hex, PublicKey, SigningKey};
use punnet_api::topics::Topics;
use thiserror::Error;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use node::{Counters, KillMode};
use node::{NodeSettings, SimNode};

#[derive(Debug, Error, PartialEq)]
pub enum SimError {
    #[error("broker URL {url:?}: {reason} (expected mqtts://HOST:PORT)")]
    BrokerUrl { url: String, reason: String },
    /// The CA could not be read or used, or plaintext was not allowed.
    #[error("{0}")]
    Tls(String),
    #[error("--kill {0}: a percentage must be between 0 and 100")]
    KillPercent(f64),
    #[error("--nodes must be at least 1")]
    NoNodes,
    #[error(
        "--enrol-token: not a Punnet token (expected <12 hex>.<secret> from `punnet token create`)"
    )]
    Token,
    #[error("no API token: the simulated nodes' keys must be registered with the controller; pass --token (the `token:` line of <controller-data>/punnet.yaml)")]
    NoToken,
    #[error("cannot make the nodes' keys: {0}")]
    Key(String),
    #[error("registering the nodes' keys at {url}: {message}")]
    Register { url: String, message: String },
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    /// Nodes are `<prefix><index>`: `sim-0`, `sim-1`, …
    pub name_prefix: String,
    /// Index of the first node (several simulators can share one controller).
    pub first_index: usize,
    /// `mqtts://HOST:PORT` (or `mqtt://` with `allow_plaintext`).
    pub broker: String,
    /// The CA the broker's certificate is checked against (`--ca`); `None`: the system's.
    pub ca: Option<std::path::PathBuf>,
    pub allow_plaintext: bool,
    /// MQTT topic prefix, as the agent's `--prefix`.
    pub prefix: String,
    /// A status report at least this often (the agent's heartbeat).
    pub report_interval: Duration,
    pub keep_alive: Duration,
    /// How long a Pod stays ContainerCreating before it is Running.
    pub start_delay: Duration,
    /// New connections per second while the fleet comes up.
    pub connect_rate: u32,
    /// Kill this share of the nodes (0–100)…
    pub kill_percent: Option<f64>,
    /// …this long after every node was started, or when `kill_now` is notified.
    pub kill_after: Option<Duration>,
    pub kill_now: Option<Arc<Notify>>,
    pub kill_mode: KillMode,
    /// How often the progress line is printed (zero: never).
    pub progress_every: Duration,
    /// A bootstrap token (`punnet token create --uses N`) every node enrols with first;
    /// needed with the controller's embedded broker, which admits enrolled nodes only.
    pub enrol_token: Option<String>,
    /// The controller's REST API (`http://HOST:PORT`), where the nodes' keys are
    /// registered, and an admin token for it.
    pub api: String,
    pub token: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 10,
            name_prefix: "sim-".into(),
            first_index: 0,
            broker: "mqtts://127.0.0.1:8883".into(),
            ca: None,
            allow_plaintext: false,
            prefix: punnet_api::topics::DEFAULT_PREFIX.into(),
            report_interval: Duration::from_secs(10),
            keep_alive: Duration::from_secs(10),
            start_delay: Duration::from_millis(500),
            connect_rate: 500,
            kill_percent: None,
            kill_after: None,
            kill_now: None,
            kill_mode: KillMode::Silent,
            progress_every: Duration::from_secs(1),
            enrol_token: None,
            api: "http://127.0.0.1:6443".into(),
            token: String::new(),
        }
    }
}

/// `mqtts://HOST:PORT`, `mqtt://HOST:PORT` (or `HOST:PORT`, TLS) as host and port.
pub fn parse_broker(url: &str) -> Result<(String, u16), SimError> {
    let bad = |reason: &str| SimError::BrokerUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if punnet_api::tls::mqtt_scheme(url).is_none() {
        return Err(bad("only mqtts:// and mqtt:// are supported"));
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| bad("no port"))?;
    let port = port.parse().map_err(|_| bad("the port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_string(), port))
}

/// TLS for an `mqtts://` broker, trusting `config.ca`; `None` for an allowed `mqtt://`.
fn tls_config(config: &SimConfig) -> Result<Option<Arc<rustls::ClientConfig>>, SimError> {
    use punnet_api::tls as shared;
    let secure = shared::mqtt_scheme(&config.broker).is_some_and(|(tls, _)| tls);
    shared::check_plaintext(
        &config.broker,
        secure,
        config.allow_plaintext,
        "MQTT",
        "mqtts://",
    )
    .map_err(|e| SimError::Tls(e.to_string()))?;
    if !secure {
        return Ok(None);
    }
    let path = config
        .ca
        .clone()
        .unwrap_or_else(|| shared::SYSTEM_CA_BUNDLE.into());
    let pem = std::fs::read(&path).map_err(|e| {
        SimError::Tls(format!(
            "cannot read the CA file {} (--ca): {e}",
            path.display()
        ))
    })?;
    let tls = shared::client_config(&pem, &path.display().to_string())
        .map_err(|e| SimError::Tls(e.to_string()))?;
    Ok(Some(Arc::new(tls)))
}

/// Which nodes (by position, `0..nodes`) a kill of `percent` takes: spread evenly over
/// the fleet, so every board kind and every part of the name range loses some.
pub fn victims(nodes: usize, percent: f64) -> Vec<usize> {
    let count = ((nodes as f64) * percent / 100.0).round() as usize;
    let count = count.min(nodes);
    (0..count).map(|k| k * nodes / count.max(1)).collect()
}

/// A new random key per node.
pub fn make_keys(n: usize) -> Result<Vec<SigningKey>, SimError> {
    (0..n)
        .map(|_| {
            SigningKey::generate_pkcs8()
                .and_then(|p| SigningKey::from_pkcs8(&p))
                .map_err(|e| SimError::Key(e.to_string()))
        })
        .collect()
}

/// Registers `(node, key)` pairs with the controller at `api` in one request.
pub async fn register_keys(
    api: &str,
    token: &str,
    keys: &[(String, PublicKey)],
    ca: Option<&std::path::Path>,
) -> Result<(), SimError> {
    let url = format!("{}/nodekeys", api.trim_end_matches('/'));
    let items: Vec<serde_json::Value> = keys
        .iter()
        .map(|(node, key)| serde_json::json!({"node": node, "publicKey": public_key_hex(key)}))
        .collect();
    let err = |message: String| SimError::Register {
        url: url.clone(),
        message,
    };
    let mut client = reqwest::Client::builder();
    if url.starts_with("https://") {
        // The controller's CA, as for the broker (`--ca`); else the system's.
        let path = ca
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| punnet_api::tls::SYSTEM_CA_BUNDLE.into());
        let pem = std::fs::read(&path).map_err(|e| {
            err(format!(
                "cannot read the CA file {} (--ca): {e}",
                path.display()
            ))
        })?;
        let tls = punnet_api::tls::client_config(&pem, &path.display().to_string())
            .map_err(|e| err(e.to_string()))?;
        client = client.use_preconfigured_tls(tls);
    }
    let client = client.build().map_err(|e| err(e.to_string()))?;
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "items": items }))
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(err(format!("{status}: {body}")));
    }
    Ok(())
}

/// Runs the fleet until `shutdown` resolves; the nodes then go offline cleanly.
pub async fn run(
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SimError> {
    if config.nodes == 0 {
        return Err(SimError::NoNodes);
    }
    if let Some(p) = config.kill_percent {
        if !(0.0..=100.0).contains(&p) {
            return Err(SimError::KillPercent(p));
        }
    }
    let (host, port) = parse_broker(&config.broker)?;
    if config.token.is_empty() {
        return Err(SimError::NoToken);
    }
    let names: Vec<String> = (0..config.nodes)
        .map(|pos| format!("{}{}", config.name_prefix, config.first_index + pos))
        .collect();
    let keys = make_keys(config.nodes)?;
    let public: Vec<(String, PublicKey)> = names
        .iter()
        .zip(&keys)
        .map(|(n, k)| (n.clone(), k.public_key()))
        .collect();
    register_keys(&config.api, &config.token, &public, config.ca.as_deref()).await?;
    let mut keys = keys.into_iter();
    let tls = tls_config(&config)?;
    let settings = Arc::new(NodeSettings {
        host,
        port,
        tls,
        topics: Topics::new(&config.prefix),
        report_interval: config.report_interval,
        keep_alive: config.keep_alive,
        start_delay: config.start_delay,
        enrol_token: match &config.enrol_token {
            Some(t) => Some(punnet_api::enrol::TokenString::parse(t).ok_or(SimError::Token)?),
            None => None,
        },
    });
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let progress = tokio::spawn(print_progress(
        counters.clone(),
        config.nodes,
        config.progress_every,
        started,
        stop.clone(),
    ));

    let mut nodes = JoinSet::new();
    let mut kills = Vec::with_capacity(config.nodes);
    let fleet = async {
        let per_tick = (config.connect_rate.max(1) as usize).div_ceil(100);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for pos in 0..config.nodes {
            if pos % per_tick == 0 {
                tick.tick().await;
            }
            let index = config.first_index + pos;
            let name = format!("{}{index}", config.name_prefix);
            let key = keys.next().expect("one key per node");
            let node = SimNode::new(index, name, key, settings.clone(), counters.clone());
            let kill = CancellationToken::new();
            kills.push(kill.clone());
            nodes.spawn(node.run(kill, config.kill_mode, stop.clone()));
        }
        println!(
            "sim: started {} nodes in {:.1}s",
            config.nodes,
            started.elapsed().as_secs_f64()
        );
        let Some(percent) = config.kill_percent else {
            return std::future::pending().await;
        };
        let after = async {
            match config.kill_after {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let signalled = async {
            match &config.kill_now {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = after => {}
            _ = signalled => {}
        }
        let chosen = victims(config.nodes, percent);
        for &pos in &chosen {
            kills[pos].cancel();
        }
        println!(
            "sim: killed {} of {} nodes ({:?}) at {:.1}s",
            chosen.len(),
            config.nodes,
            config.kill_mode,
            started.elapsed().as_secs_f64()
        );
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = shutdown => {}
        _ = fleet => {}
    }
    stop.cancel();
    // Killed nodes hand back their (silent) event loops; keeping them until here is
    // what holds their sockets open.
    let mut silent = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(done) = nodes.join_next().await {
            if let Ok(Some(eventloop)) = done {
                silent.push(eventloop);
            }
        }
    })
    .await;
    nodes.abort_all();
    let _ = progress.await;
    Ok(())
}

async fn print_progress(
    counters: Arc<Counters>,
    nodes: usize,
    every: Duration,
    started: Instant,
    stop: CancellationToken,
) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        println!(
            "sim: t={:.1}s connected={}/{nodes} pods running={}/{} reports={} desired={} bad={}",
            started.elapsed().as_secs_f64(),
            counters.connected.load(Ordering::Relaxed),
            counters.running_pods.load(Ordering::Relaxed),
            counters.desired_pods.load(Ordering::Relaxed),
            counters.reports.load(Ordering::Relaxed),
            counters.desired_messages.load(Ordering::Relaxed),
            counters.bad_messages.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_broker("broker.lan:8883").unwrap(),
            ("broker.lan".into(), 8883)
        );
        assert_eq!(parse_broker("mqtt://[::1]:1").unwrap(), ("::1".into(), 1));
        assert_eq!(parse_broker("mqtts://x:1").unwrap(), ("x".into(), 1));
        assert!(parse_broker("http://x:1").is_err());
        assert!(parse_broker("mqtt://x").is_err());
        assert!(parse_broker("mqtt://:1").is_err());
    }

    #[test]
    fn victims_are_spread_over_the_fleet() {
        let v = victims(100, 10.0);
        assert_eq!(v, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
        assert_eq!(victims(5000, 10.0).len(), 500);
        assert_eq!(victims(3, 100.0), vec![0, 1, 2]);
        assert!(victims(10, 0.0).is_empty());
        let v = victims(7, 50.0);
        assert_eq!(v.len(), 4);
        assert!(v.windows(2).all(|w| w[0] < w[1]) && v.iter().all(|&i| i < 7));
    }
}
