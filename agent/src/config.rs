//! The agent's configuration: one plain struct with public fields, so that `main`, the
//! controller's embedded agent (`punnet-controller --with-agent`) and tests all build it
//! the same way. An optional YAML file carries the same keys as the command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub const DEFAULT_BROKER: &str = "mqtts://127.0.0.1:8883";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/punnet-agent";
/// Where the binary serves the board page unless told otherwise (`--web`): every
/// interface, on a port clear of the controller's (6443, 1883/8883, 1884/8884).
pub const DEFAULT_WEB: &str = "0.0.0.0:6480";

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The Node's name; also the MQTT client id (`punnet-agent-<name>`) and topic segment.
    pub node_name: String,
    /// `mqtts://host:port` (TLS), `mqtt://host:port` (needs `allow_plaintext`) or
    /// `host[:port]` (TLS).
    pub broker: String,
    pub data_dir: PathBuf,
    /// From `--label`; reported with the node facts and merged into the Node's labels.
    pub labels: BTreeMap<String, String>,
    /// MQTT topic prefix, `punnet/v1` unless several fleets share a broker.
    pub prefix: String,
    /// The program a container's shim runs as (`<shim_exe> <shim_args...> DIR`). The
    /// agent binary itself by default; an embedding program passes its own binary,
    /// which must dispatch the shim mode before starting any tokio runtime.
    pub shim_exe: PathBuf,
    pub shim_args: Vec<String>,
    /// First restart delay of a crashing container; doubles up to `restart_backoff_max`.
    pub restart_backoff_base: Duration,
    pub restart_backoff_max: Duration,
    /// A container that ran this long before exiting restarts with the base delay again.
    pub restart_backoff_reset: Duration,
    /// How often a full status report is sent even when nothing changed.
    pub heartbeat_interval: Duration,
    /// Periodic reconcile: heals missed events and notices exits of re-adopted containers
    /// (their shims are not the agent's children after an agent restart).
    pub resync_interval: Duration,
    /// MQTT keepalive; the broker publishes our last will after 1.5 × this of silence.
    pub keep_alive: Duration,
    /// Pods without `hostNetwork` get a network namespace of their own through CNI.
    /// Off: every Pod shares the host's network (boards without the CNI plugins).
    pub pod_network: bool,
    /// Where the CNI plugins are looked for, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The Linux bridge Pods are attached to.
    pub cni_bridge: String,
    /// Registries (`HOST:PORT`) that may be reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The platform images are picked for (`linux/arm/v6`); detected from the CPU when unset.
    pub platform: Option<String>,
    /// Unused images are deleted when free disk under the data dir falls below this.
    pub image_gc_min_free_bytes: u64,
    /// A bootstrap token (`punnet token create`): with no identity in the data dir yet,
    /// the agent enrols with it before anything else (see `enrol`).
    pub token: Option<String>,
    /// The config file that holds `token`: once the board has an identity the agent
    /// takes the token out of it (`token_file`), so the card does not keep it.
    pub token_file: Option<PathBuf>,
    /// The MQTT login the link uses: the node's credentials once enrolled (set by
    /// `enrol::ensure_identity` from the data dir); `None`: anonymous.
    pub mqtt_login: Option<crate::enrol::MqttLogin>,
    /// The controller's public key (64 hex digits) desired state must be signed with;
    /// `None`: `<data_dir>/controller.pub` (see `identity`).
    pub controller_key: Option<PathBuf>,
    /// The CA the broker's certificate must be signed by (the controller's `ca.pem`);
    /// `None`: the system's CAs.
    pub ca: Option<PathBuf>,
    /// Accept an `mqtt://` broker URL (no TLS), with a warning.
    pub allow_plaintext: bool,
    /// Where the board page (`web`) listens; `None`: no page. The library leaves it off
    /// so tests and embedders open no port unasked; the binary turns it on
    /// (`DEFAULT_WEB`).
    pub web: Option<std::net::SocketAddr>,
    /// When set, the board page asks for this token (a bearer header, or once in the
    /// browser, kept in a cookie).
    pub web_token: Option<String>,
}

impl AgentConfig {
    /// A configuration with every default, for node `node_name`.
    pub fn new(node_name: impl Into<String>) -> AgentConfig {
        AgentConfig {
            node_name: node_name.into(),
            broker: DEFAULT_BROKER.to_string(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            labels: BTreeMap::new(),
            prefix: punnet_api::topics::DEFAULT_PREFIX.to_string(),
            shim_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("punnet-agent")),
            shim_args: vec!["shim".to_string()],
            restart_backoff_base: Duration::from_secs(10),
            restart_backoff_max: Duration::from_secs(300),
            restart_backoff_reset: Duration::from_secs(600),
            heartbeat_interval: Duration::from_secs(10),
            resync_interval: Duration::from_secs(2),
            keep_alive: Duration::from_secs(15),
            pod_network: true,
            cni_bin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            cni_bridge: "punnet0".to_string(),
            insecure_registries: Vec::new(),
            platform: None,
            image_gc_min_free_bytes: 1 << 30,
            token: None,
            token_file: None,
            mqtt_login: None,
            controller_key: None,
            ca: None,
            allow_plaintext: false,
            web: None,
            web_token: None,
        }
    }

    /// Applies the keys set in a YAML config file (unset keys keep their value).
    pub fn apply_file(&mut self, file: &ConfigFile) -> Result<(), ConfigError> {
        if let Some(name) = &file.name {
            self.node_name = name.clone();
        }
        if let Some(broker) = &file.broker {
            self.broker = broker.clone();
        }
        if let Some(dir) = &file.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(prefix) = &file.prefix {
            self.prefix = prefix.clone();
        }
        for label in &file.label {
            let (k, v) = parse_label(label)?;
            self.labels.insert(k, v);
        }
        self.labels
            .extend(file.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(d) = &file.restart_backoff {
            self.restart_backoff_base = parse_duration(d)?;
        }
        if let Some(d) = &file.heartbeat {
            self.heartbeat_interval = parse_duration(d)?;
        }
        if let Some(on) = file.pod_network {
            self.pod_network = on;
        }
        if !file.cni_bin_dir.is_empty() {
            self.cni_bin_dirs = file.cni_bin_dir.clone();
        }
        if let Some(b) = &file.cni_bridge {
            self.cni_bridge = b.clone();
        }
        self.insecure_registries
            .extend(file.insecure_registry.iter().cloned());
        if let Some(p) = &file.platform {
            self.platform = Some(p.clone());
        }
        if let Some(q) = &file.image_gc_min_free {
            self.image_gc_min_free_bytes = parse_size(q)?;
        }
        if let Some(t) = &file.token {
            self.token = Some(t.clone());
        }
        if let Some(k) = &file.controller_key {
            self.controller_key = Some(k.clone());
        }
        if let Some(ca) = &file.ca {
            self.ca = Some(ca.clone());
        }
        if let Some(on) = file.allow_plaintext {
            self.allow_plaintext = on;
        }
        if let Some(web) = &file.web {
            self.web = web.address()?;
        }
        if let Some(t) = &file.web_token {
            self.web_token = Some(t.clone());
        }
        Ok(())
    }

    /// Where this agent's Pod network namespaces are bind-mounted: under /run (they do
    /// not survive a reboot, and neither do the namespaces), one directory per data dir
    /// so that agents sharing a host (tests, a second fleet) never see each other's.
    pub fn netns_dir(&self) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.data_dir.to_string_lossy().as_bytes());
        PathBuf::from("/run/punnet")
            .join(&hex::encode(digest)[..12])
            .join("netns")
    }

    /// Checks what would otherwise fail later in a confusing way.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.node_name;
        if name.is_empty()
            || name.contains(['/', '+', '#'])
            || name.chars().any(char::is_whitespace)
        {
            return Err(ConfigError::NodeName(name.clone()));
        }
        self.broker_address()?;
        punnet_api::tls::check_plaintext(
            &self.broker,
            self.broker_tls(),
            self.allow_plaintext,
            "MQTT",
            "mqtts://",
        )?;
        let b = &self.cni_bridge;
        if b.is_empty()
            || b.len() > 15
            || !b
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::Bridge(b.clone()));
        }
        if let Some(p) = &self.platform {
            p.parse::<crate::platform::Platform>()
                .map_err(|e| ConfigError::Platform(e.to_string()))?;
        }
        if self
            .web_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConfigError::WebToken);
        }
        Ok(())
    }

    /// The broker's host and port, from `broker`.
    pub fn broker_address(&self) -> Result<(String, u16), ConfigError> {
        parse_broker_url(&self.broker)
    }

    /// Whether the broker URL asks for TLS (`mqtts://`, `ssl://` or no scheme).
    pub fn broker_tls(&self) -> bool {
        punnet_api::tls::mqtt_scheme(&self.broker).is_some_and(|(tls, _)| tls)
    }

    /// True when the link runs without TLS (`--allow-plaintext` and an `mqtt://` URL):
    /// what the agent's status page shows as a warning.
    pub fn plaintext(&self) -> bool {
        !self.broker_tls()
    }
}

/// The YAML config file (`--config FILE`): the flags' names as keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    pub name: Option<String>,
    pub broker: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub prefix: Option<String>,
    /// `KEY=VALUE` strings, as with `--label`.
    #[serde(default)]
    pub label: Vec<String>,
    /// The same as a map.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub restart_backoff: Option<String>,
    pub heartbeat: Option<String>,
    pub pod_network: Option<bool>,
    #[serde(default)]
    pub cni_bin_dir: Vec<PathBuf>,
    pub cni_bridge: Option<String>,
    #[serde(default)]
    pub insecure_registry: Vec<String>,
    pub platform: Option<String>,
    pub image_gc_min_free: Option<String>,
    /// A bootstrap token to enrol with (see `AgentConfig::token`).
    pub token: Option<String>,
    pub controller_key: Option<PathBuf>,
    /// The CA file, as with `--ca`.
    pub ca: Option<PathBuf>,
    pub allow_plaintext: Option<bool>,
    /// The board page's address, `off` (or `false`) for none, as with `--web`.
    pub web: Option<WebSetting>,
    pub web_token: Option<String>,
}

/// `web:` in the config file: an address, or a YAML boolean (`web: false`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum WebSetting {
    On(bool),
    Address(String),
}

impl WebSetting {
    /// The address it names: `true` the default one, `false` none.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        match self {
            WebSetting::On(false) => Ok(None),
            WebSetting::On(true) => parse_web(DEFAULT_WEB),
            WebSetting::Address(text) => parse_web(text),
        }
    }
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ConfigFile::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        if text.trim().is_empty() {
            return Ok(ConfigFile::default());
        }
        serde_norway::from_str(text).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("node name {0:?}: must be non-empty, without '/', '+', '#' or spaces (it is an MQTT topic level)")]
    NodeName(String),
    #[error("label {0:?}: expected KEY=VALUE")]
    Label(String),
    #[error("duration {0:?}: expected a number with unit ms, s, m or h (e.g. 10s)")]
    Duration(String),
    #[error("platform: {0}")]
    Platform(String),
    #[error("size {0:?}: expected a quantity such as 512Mi or 2Gi")]
    Size(String),
    #[error("bridge name {0:?}: must be 1 to 15 characters of letters, digits, '-' or '_'")]
    Bridge(String),
    #[error("broker {url:?}: {reason}")]
    Broker { url: String, reason: &'static str },
    #[error("broker {0}")]
    Plaintext(#[from] punnet_api::tls::TlsError),
    #[error("web address {0:?}: expected HOST:PORT (0.0.0.0:6480), :PORT, PORT, or off")]
    Web(String),
    #[error("web token: empty; give a token, or leave the option out to serve the board page without one")]
    WebToken,
}

/// The board page's address: `0.0.0.0:6480`, `[::]:6480`, `127.0.0.1:6480`, `:6480` and
/// `6480` (every interface); `off`, `false`, `no` or `none`: no page.
pub fn parse_web(text: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let t = text.trim();
    if ["off", "false", "no", "none"].contains(&t.to_ascii_lowercase().as_str()) {
        return Ok(None);
    }
    let bad = || ConfigError::Web(text.to_string());
    if let Ok(addr) = t.parse::<std::net::SocketAddr>() {
        return Ok(Some(addr));
    }
    let port = t.strip_prefix(':').unwrap_or(t);
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok(Some(std::net::SocketAddr::from(([0, 0, 0, 0], port))))
}

pub fn parse_label(text: &str) -> Result<(String, String), ConfigError> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(ConfigError::Label(text.to_string())),
    }
}

/// `512Mi`, `2Gi`, `1000000000`.
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    punnet_api::quantity::parse_bytes(text.trim()).map_err(|_| ConfigError::Size(text.to_string()))
}

/// `500ms`, `10s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| ConfigError::Duration(text.to_string()))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(ConfigError::Duration(text.to_string())),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| ConfigError::Duration(text.to_string()))
}

/// Host and port of an MQTT broker URL: `mqtts://` and `ssl://` default to port 8883,
/// `mqtt://` and `tcp://` to 1883, no scheme means TLS.
pub fn parse_broker_url(url: &str) -> Result<(String, u16), ConfigError> {
    let bad = |reason| ConfigError::Broker {
        url: url.to_string(),
        reason,
    };
    let (_, default_port) = punnet_api::tls::mqtt_scheme(url)
        .ok_or_else(|| bad("unknown scheme, use mqtts://host:port"))?;
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port: u16 = port.parse().map_err(|_| bad("invalid port"))?;
            (host, port)
        }
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok((host.to_string(), port))
}

/// This machine's hostname: the default node name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_broker_url("tcp://broker.lan").unwrap(),
            ("broker.lan".into(), 1883)
        );
        assert_eq!(
            parse_broker_url("mqtts://broker.lan").unwrap(),
            ("broker.lan".into(), 8883)
        );
        assert_eq!(
            parse_broker_url("pi-0:11883").unwrap(),
            ("pi-0".into(), 11883)
        );
        assert_eq!(
            parse_broker_url("mqtt://[::1]:1884").unwrap(),
            ("::1".into(), 1884)
        );
        assert!(parse_broker_url("http://x:8883").is_err());
        assert!(parse_broker_url("mqtt://x:port").is_err());
    }

    #[test]
    fn durations_and_labels() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("10 parsecs").is_err());
        assert_eq!(
            parse_label("zone=garden").unwrap(),
            ("zone".into(), "garden".into())
        );
        assert!(parse_label("zone").is_err());
    }

    #[test]
    fn config_file_overrides_defaults() {
        let file = ConfigFile::parse(
            "name: pi-7\nbroker: mqtt://10.0.0.2:1883\ndata-dir: /tmp/x\nlabel: [zone=garden]\nlabels: {camera: \"yes\"}\nrestart-backoff: 1s\n",
        )
        .unwrap();
        let mut c = AgentConfig::new("host");
        c.apply_file(&file).unwrap();
        assert_eq!(c.node_name, "pi-7");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.labels.len(), 2);
        assert_eq!(c.restart_backoff_base, Duration::from_secs(1));
        assert_eq!(c.broker_address().unwrap(), ("10.0.0.2".into(), 1883));
        assert!(ConfigFile::parse("nmae: typo\n").is_err());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--allow-plaintext"), "{err}");
        c.apply_file(&ConfigFile::parse("ca: /x/ca.pem\nallow-plaintext: true\n").unwrap())
            .unwrap();
        assert_eq!(c.ca, Some(PathBuf::from("/x/ca.pem")));
        assert!(c.validate().is_ok());
        c.node_name = "pi/7".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn web_addresses_and_off() {
        let addr = |t: &str| parse_web(t).unwrap().map(|a| a.to_string());
        assert_eq!(addr("0.0.0.0:6480").as_deref(), Some("0.0.0.0:6480"));
        assert_eq!(addr(":7000").as_deref(), Some("0.0.0.0:7000"));
        assert_eq!(addr("7000").as_deref(), Some("0.0.0.0:7000"));
        assert_eq!(addr("[::1]:7000").as_deref(), Some("[::1]:7000"));
        assert_eq!(addr("OFF"), None);
        assert_eq!(addr("none"), None);
        let err = parse_web("pi.lan:80").unwrap_err().to_string();
        assert!(
            err.contains("HOST:PORT") && err.contains("pi.lan:80"),
            "{err}"
        );
        assert!(parse_web("0.0.0.0:99999").is_err());

        let mut c = AgentConfig::new("pi");
        assert_eq!(c.web, None, "the library opens no port unless asked");
        c.apply_file(&ConfigFile::parse("web: 127.0.0.1:7001\nweb-token: s3cret\n").unwrap())
            .unwrap();
        assert_eq!(c.web.unwrap().to_string(), "127.0.0.1:7001");
        assert_eq!(c.web_token.as_deref(), Some("s3cret"));
        c.apply_file(&ConfigFile::parse("web: off\n").unwrap())
            .unwrap();
        assert_eq!(c.web, None);
        c.apply_file(&ConfigFile::parse("web: true\n").unwrap())
            .unwrap();
        assert_eq!(c.web.unwrap().to_string(), DEFAULT_WEB);
        c.apply_file(&ConfigFile::parse("web: false\n").unwrap())
            .unwrap();
        assert_eq!(c.web, None);
        assert!(c
            .apply_file(&ConfigFile::parse("web: somewhere\n").unwrap())
            .is_err());
        c.web_token = Some(" ".into());
        assert!(matches!(c.validate(), Err(ConfigError::WebToken)));
    }
}
