//! The controller's configuration: flags, an optional YAML file with the same keys, and
//! the defaults a single board needs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::podcidr::{CidrError, PodCidrs};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/punnet";
pub const DEFAULT_HTTP: &str = "0.0.0.0:6443";
pub const DEFAULT_MQTT: &str = "0.0.0.0:8883";
/// The embedded broker's address with `--allow-plaintext` (the plain MQTT port).
pub const DEFAULT_MQTT_PLAINTEXT: &str = "0.0.0.0:1883";

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    /// REST API (and later the fleet page).
    pub http: SocketAddr,
    /// Listener of the embedded broker; unused with `broker`.
    pub mqtt: SocketAddr,
    /// An external broker (`mqtt://HOST:PORT`) instead of the embedded one.
    pub broker: Option<String>,
    pub prefix: String,
    /// A node silent this long goes NotReady.
    pub node_grace: Duration,
    /// Also run an agent in this process: a single-machine fleet.
    pub agent: Option<punnet_agent::config::AgentConfig>,
    /// The cluster CIDR Pod ranges are cut from, and their size.
    pub pod_cidrs: PodCidrs,
    /// How long Pods stay on a NotReady/unreachable node unless they tolerate it longer.
    pub default_eviction: Duration,
    /// The key Secrets are encrypted with in the database; `None`: `<data-dir>/secrets.key`.
    pub encryption_key_file: Option<PathBuf>,
    /// The embedded broker's MQTT 5 listener, which the MQTT command API needs (rumqttd
    /// serves one protocol version per port). `None`: no v5 listener, and with the
    /// embedded broker no MQTT API. An external broker serves v5 on its one port.
    pub mqtt_v5: Option<SocketAddr>,
    /// Home Assistant MQTT discovery under this prefix (`--homeassistant [PREFIX]`).
    pub homeassistant: Option<String>,
    /// Keep a Mosquitto password file and ACL file in this directory current (rewritten
    /// at start and on every enrolment, revocation and token change).
    pub mosquitto_config: Option<PathBuf>,
    /// Send SIGHUP to the process whose pid is in this file after each rewrite, so that
    /// Mosquitto reloads them.
    pub mosquitto_pid_file: Option<PathBuf>,
    /// Certificates: the generated CA's, or the operator's (`--tls-cert/--tls-key/--ca`).
    pub tls: crate::tls::TlsOptions,
    /// Serve the REST API and the embedded broker without TLS, and accept an `mqtt://`
    /// external broker (`--allow-plaintext`).
    pub allow_plaintext: bool,
}

impl ControllerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ControllerConfig {
        ControllerConfig {
            data_dir: data_dir.into(),
            http: DEFAULT_HTTP.parse().expect("valid default"),
            mqtt: DEFAULT_MQTT.parse().expect("valid default"),
            broker: None,
            prefix: punnet_api::topics::DEFAULT_PREFIX.to_string(),
            node_grace: Duration::from_secs(40),
            agent: None,
            pod_cidrs: PodCidrs::default(),
            default_eviction: Duration::from_secs(crate::nodelifecycle::DEFAULT_EVICTION_SECONDS),
            encryption_key_file: None,
            mqtt_v5: None,
            homeassistant: None,
            mosquitto_config: None,
            mosquitto_pid_file: None,
            tls: crate::tls::TlsOptions::default(),
            allow_plaintext: false,
        }
    }

    /// The CA file local clients (the controller's own MQTT client, the embedded agent,
    /// `punnet.yaml`) trust: `--ca`, else the generated `<data-dir>/ca.pem`; `None` with
    /// plaintext, or with an operator certificate and no `--ca` (the system's CAs).
    pub fn client_ca(&self) -> Option<PathBuf> {
        if self.allow_plaintext && self.tls.ca.is_none() {
            return None;
        }
        match (&self.tls.ca, &self.tls.cert) {
            (Some(ca), _) => Some(ca.clone()),
            (None, None) => Some(self.data_dir.join(crate::tls::CA_FILE)),
            (None, Some(_)) => None,
        }
    }

    /// Where the Secrets' encryption key is (kept outside the database directory).
    pub fn key_file(&self) -> PathBuf {
        self.encryption_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::store::KEY_FILE))
    }

    /// The URL a local client (the embedded agent) uses to reach the broker.
    pub fn broker_url(&self) -> String {
        match &self.broker {
            Some(url) => url.clone(),
            None => {
                let ip = if self.mqtt.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    self.mqtt.ip().to_string()
                };
                let scheme = if self.allow_plaintext {
                    "mqtt"
                } else {
                    "mqtts"
                };
                let ip = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip
                };
                format!("{scheme}://{ip}:{}", self.mqtt.port())
            }
        }
    }

    /// The configuration of the embedded agent: its data under `<data-dir>/agent`, the
    /// controller's broker, and this binary as its shim.
    pub fn local_agent(
        &self,
        name: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> punnet_agent::config::AgentConfig {
        let mut agent = punnet_agent::config::AgentConfig::new(
            name.unwrap_or_else(punnet_agent::config::hostname),
        );
        agent.data_dir = self.data_dir.join("agent");
        agent.broker = self.broker_url();
        agent.prefix = self.prefix.clone();
        agent.labels = labels;
        agent.ca = self.client_ca();
        agent.allow_plaintext = self.allow_plaintext;
        agent
    }
}

/// The YAML file: the flags' names as keys (`data-dir: /srv/punnet`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub http: Option<String>,
    pub mqtt: Option<String>,
    pub broker: Option<String>,
    pub prefix: Option<String>,
    pub node_grace: Option<String>,
    pub with_agent: Option<bool>,
    pub agent_name: Option<String>,
    #[serde(default)]
    pub agent_label: Vec<String>,
    /// The local agent's board page, as the agent's `web:` (an address, or `false`).
    pub agent_web: Option<punnet_agent::config::WebSetting>,
    pub cluster_cidr: Option<String>,
    pub node_cidr_mask_size: Option<u8>,
    pub default_eviction_seconds: Option<u64>,
    pub encryption_key_file: Option<PathBuf>,
    pub mqtt5: Option<String>,
    pub homeassistant: Option<String>,
    pub mosquitto_config: Option<PathBuf>,
    pub mosquitto_pid_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub tls_san: Vec<String>,
    pub allow_plaintext: Option<bool>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("{flag} {value:?}: {message}")]
    Value {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error("--cluster-cidr/--node-cidr-mask-size: {0}")]
    PodCidrs(#[from] CidrError),
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let fail = |message: String| ConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        serde_norway::from_str(&text).map_err(|e| fail(e.to_string()))
    }
}

pub fn parse_addr(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e| ConfigError::Value {
        flag,
        value: value.to_string(),
        message: format!("{e}; expected IP:PORT such as 0.0.0.0:6443"),
    })
}

pub fn parse_duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    punnet_agent::config::parse_duration(value).map_err(|e| ConfigError::Value {
        flag,
        value: value.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_url_reaches_a_wildcard_listener_over_loopback() {
        let mut c = ControllerConfig::new("/tmp/x");
        assert_eq!(c.broker_url(), "mqtts://127.0.0.1:8883");
        assert_eq!(c.client_ca(), Some(PathBuf::from("/tmp/x/ca.pem")));
        c.allow_plaintext = true;
        c.mqtt = DEFAULT_MQTT_PLAINTEXT.parse().unwrap();
        assert_eq!(c.broker_url(), "mqtt://127.0.0.1:1883");
        assert_eq!(c.client_ca(), None);
        c.broker = Some("mqtt://broker.lan:1884".into());
        assert_eq!(c.broker_url(), "mqtt://broker.lan:1884");
        let a = c.local_agent(Some("pi".into()), BTreeMap::new());
        assert_eq!(a.data_dir, PathBuf::from("/tmp/x/agent"));
        assert_eq!(a.broker, "mqtt://broker.lan:1884");
        assert!(a.allow_plaintext);
    }

    #[test]
    fn file_rejects_unknown_keys() {
        assert!(serde_norway::from_str::<ConfigFile>("data-dir: /x\nhttp: 0.0.0.0:1\n").is_ok());
        let f: ConfigFile =
            serde_norway::from_str("cluster-cidr: 10.50.0.0/16\nnode-cidr-mask-size: 26\n")
                .unwrap();
        assert_eq!(
            (f.cluster_cidr.as_deref(), f.node_cidr_mask_size),
            (Some("10.50.0.0/16"), Some(26))
        );
        assert!(serde_norway::from_str::<ConfigFile>("datadir: /x\n").is_err());
    }
}
