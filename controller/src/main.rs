//! punnet-controller's entry point: parses flags (and an optional config file) and calls
//! `punnet_controller::run`. With `--with-agent` this binary also serves as the local
//! agent's container shim (`punnet-controller shim DIR`). `backup FILE` and
//! `restore FILE` save and bring back the store (see `punnet_controller::backup`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use punnet_controller::config::{self, ConfigFile, ControllerConfig};

#[derive(Parser)]
#[command(
    name = "punnet-controller",
    version,
    about = "Punnet's controller: state, API, scheduler and node sync"
)]
struct Cli {
    /// Where the database, admin token and client config live.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the REST API.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Address the embedded MQTT broker listens on.
    #[arg(long, value_name = "ADDR")]
    mqtt: Option<String>,
    /// Use this external MQTT broker (mqtt://HOST:PORT) instead of the embedded one.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// MQTT topic prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// A node that sent nothing for this long goes NotReady.
    #[arg(long, value_name = "DURATION")]
    node_grace: Option<String>,
    /// Also run an agent in this process (a single-machine fleet).
    #[arg(long)]
    with_agent: bool,
    /// Node name of the local agent (default: the hostname).
    #[arg(long, value_name = "NAME")]
    agent_name: Option<String>,
    /// Label of the local agent's node (repeatable).
    #[arg(long = "agent-label", value_name = "KEY=VALUE")]
    agent_labels: Vec<String>,
    /// Where the local agent serves its board page (HOST:PORT, :PORT, or off), as
    /// `punnet-agent --web`.
    #[arg(long, value_name = "ADDR")]
    agent_web: Option<String>,
    /// The IPv4 range every node's Pod CIDR is cut from.
    #[arg(long, value_name = "CIDR")]
    cluster_cidr: Option<String>,
    /// Prefix length of each node's Pod CIDR (24: 254 Pods per node).
    #[arg(long, value_name = "BITS")]
    node_cidr_mask_size: Option<u8>,
    /// Seconds Pods stay on a NotReady or unreachable node before they are evicted and
    /// rescheduled, unless their tolerations say otherwise (Kubernetes: 300).
    #[arg(long, value_name = "N")]
    default_eviction_seconds: Option<u64>,
    /// YAML file with the same keys as these flags (flags win).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The key Secrets are encrypted with in the database (default: <data-dir>/secrets.key,
    /// created on first start). Back it up: a backup's Secrets cannot be read without it.
    #[arg(long, value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,
    /// The embedded broker's MQTT 5 listener, used by the MQTT command API (default: port
    /// 1884 on the --mqtt address when that uses port 1883, 8884 when 8883, with TLS like
    /// --mqtt; `off`: none, and no MQTT API).
    #[arg(long, value_name = "ADDR")]
    mqtt5: Option<String>,
    /// Publish Home Assistant MQTT discovery configs under PREFIX (default homeassistant).
    #[arg(long, value_name = "PREFIX", num_args = 0..=1, default_missing_value = "homeassistant")]
    homeassistant: Option<String>,
    /// Keep a Mosquitto password file and ACL file in DIR current: written at start and
    /// on every enrolment, node deletion and token change.
    #[arg(long, value_name = "DIR")]
    mosquitto_config: Option<PathBuf>,
    /// After each rewrite of the Mosquitto files, send SIGHUP to the pid in FILE so
    /// Mosquitto reloads them (e.g. /run/mosquitto/mosquitto.pid).
    #[arg(long, value_name = "FILE")]
    mosquitto_pid_file: Option<PathBuf>,
    /// Serve HTTPS and MQTT with this certificate (chain, PEM) instead of one from the
    /// controller's own CA (<data-dir>/ca.pem). Needs --tls-key.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The CA clients should trust, and that the controller trusts for an external
    /// mqtts:// broker (default: <data-dir>/ca.pem, created on first start).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Another name (DNS or IP) for the generated server certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// Serve the REST API and the embedded broker WITHOUT TLS (and accept an mqtt://
    /// --broker). Only for trusted networks and benchmarks.
    #[arg(long)]
    allow_plaintext: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write a consistent snapshot of the store to FILE (also while the controller runs:
    /// then through its API). Secrets stay encrypted; back up the key file separately.
    Backup {
        file: PathBuf,
        /// The controller's data directory (default /var/lib/punnet).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Restore a backup into a stopped controller's data directory.
    Restore {
        file: PathBuf,
        /// The stopped controller's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Replace a database that is there (its revision is kept as a floor).
        #[arg(long)]
        force: bool,
        /// The key file the restored Secrets were encrypted with, to check it.
        #[arg(long, value_name = "FILE")]
        encryption_key_file: Option<PathBuf>,
    },
    /// Write a Mosquitto password file (DIR/passwd) and ACL file (DIR/acl) for the
    /// enrolled nodes, the controller and the token logins, from a stopped controller's
    /// data dir (a running controller keeps them current with --mosquitto-config DIR).
    MosquittoConfig {
        dir: PathBuf,
        /// The controller's data directory (default /var/lib/punnet).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// MQTT topic prefix.
        #[arg(long, default_value = punnet_api::topics::DEFAULT_PREFIX)]
        prefix: String,
        /// Let operator logins read Home Assistant's discovery prefix (as the controller's
        /// --homeassistant publishes there).
        #[arg(long, value_name = "PREFIX", num_args = 0..=1, default_missing_value = "homeassistant")]
        homeassistant: Option<String>,
    },
}

/// rumqttd logs every client that goes away as an error; its own log is opt-in
/// (`RUST_LOG=info,rumqttd=info`).
const DEFAULT_LOG: &str = "info,rumqttd=off";

fn main() {
    // The local agent's container shims re-execute this binary; they must take over
    // before any thread starts.
    if let Some(code) = punnet_agent::shim::dispatch(std::env::args_os()) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(punnet_agent::log_colours())
        .init();
    if let Err(e) = real_main(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(mut cli: Cli) -> anyhow::Result<()> {
    if let Some(command) = cli.command.take() {
        return run_command(command, cli.data_dir, cli.encryption_key_file);
    }
    raise_open_files_limit();
    let config = build_config(cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        punnet_controller::run(config, shutdown_signal())
            .await
            .context("controller failed")
    })?;
    // The embedded broker has no shutdown API; leaving the process stops it.
    std::process::exit(0);
}

/// `backup` and `restore`; `--data-dir` and `--encryption-key-file` may also be given
/// before the subcommand.
fn run_command(
    command: Command,
    global_data_dir: Option<PathBuf>,
    global_key_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    match command {
        Command::Backup { file, data_dir } => {
            let data_dir = data_dir
                .or(global_data_dir)
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
            let (revision, live) = punnet_controller::backup::backup(&data_dir, &file)?;
            let how = if live {
                "from the running controller"
            } else {
                "from the stopped database"
            };
            println!(
                "backup of revision {revision} written to {} ({how})",
                file.display()
            );
            println!("the Secrets in it are encrypted: keep a copy of the key file (default <data-dir>/secrets.key) with it");
        }
        Command::Restore {
            file,
            data_dir,
            force,
            encryption_key_file,
        } => {
            let Some(data_dir) = data_dir.or(global_data_dir) else {
                anyhow::bail!("restore needs --data-dir DIR: the data directory of the stopped controller to restore into");
            };
            let encryption_key_file = encryption_key_file.or(global_key_file);
            let (done, note) = punnet_controller::backup::restore(
                &data_dir,
                &file,
                encryption_key_file.as_deref(),
                force,
            )?;
            println!(
                "restored {} entries at revision {} into {}",
                done.entries,
                done.revision,
                data_dir.display()
            );
            if let Some(note) = note {
                println!("{note}");
            }
        }
        Command::MosquittoConfig {
            dir,
            data_dir,
            prefix,
            homeassistant,
        } => {
            let data_dir = data_dir
                .or(global_data_dir)
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
            let scope = punnet_controller::acl::Scope::new(&prefix, homeassistant.as_deref());
            punnet_controller::mosquitto::write_offline(&data_dir, &dir, &scope)
                .map_err(anyhow::Error::msg)?;
            println!(
                "wrote {0}/passwd and {0}/acl; in mosquitto.conf: password_file {0}/passwd, acl_file {0}/acl, allow_anonymous false",
                dir.display()
            );
        }
    }
    Ok(())
}

fn build_config(cli: Cli) -> anyhow::Result<ControllerConfig> {
    let file = match &cli.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let data_dir = cli
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
    let mut c = ControllerConfig::new(data_dir);
    c.allow_plaintext = cli.allow_plaintext || file.allow_plaintext == Some(true);
    if c.allow_plaintext {
        c.mqtt = config::parse_addr("--mqtt", config::DEFAULT_MQTT_PLAINTEXT)?;
    }
    c.tls = punnet_controller::tls::TlsOptions {
        cert: cli.tls_cert.or(file.tls_cert),
        key: cli.tls_key.or(file.tls_key),
        ca: cli.ca.or(file.ca),
        extra_sans: file.tls_san.into_iter().chain(cli.tls_sans).collect(),
    };
    if let Some(v) = cli.http.or(file.http) {
        c.http = config::parse_addr("--http", &v)?;
    }
    if let Some(v) = cli.mqtt.or(file.mqtt) {
        c.mqtt = config::parse_addr("--mqtt", &v)?;
    }
    c.broker = cli.broker.or(file.broker);
    c.encryption_key_file = cli.encryption_key_file.or(file.encryption_key_file);
    c.mosquitto_config = cli.mosquitto_config.or(file.mosquitto_config);
    c.mosquitto_pid_file = cli.mosquitto_pid_file.or(file.mosquitto_pid_file);
    if let Some(p) = cli.prefix.or(file.prefix) {
        c.prefix = p;
    }
    if let Some(v) = cli.node_grace.or(file.node_grace) {
        c.node_grace = config::parse_duration("--node-grace", &v)?;
    }
    if let Some(s) = cli
        .default_eviction_seconds
        .or(file.default_eviction_seconds)
    {
        c.default_eviction = std::time::Duration::from_secs(s);
    }
    let cluster_cidr = cli
        .cluster_cidr
        .or(file.cluster_cidr)
        .unwrap_or_else(|| punnet_controller::podcidr::DEFAULT_CLUSTER_CIDR.to_string());
    let mask = cli
        .node_cidr_mask_size
        .or(file.node_cidr_mask_size)
        .unwrap_or(punnet_controller::podcidr::DEFAULT_NODE_MASK);
    c.pod_cidrs = punnet_controller::podcidr::PodCidrs::new(&cluster_cidr, mask)
        .map_err(config::ConfigError::from)?;
    c.mqtt_v5 = match cli.mqtt5.or(file.mqtt5).as_deref() {
        Some("off") => None,
        Some(v) => Some(config::parse_addr("--mqtt5", v)?),
        None => default_mqtt_v5(&c),
    };
    c.homeassistant = cli.homeassistant.or(file.homeassistant);
    if cli.with_agent || file.with_agent == Some(true) {
        let mut labels = BTreeMap::new();
        for l in file.agent_label.iter().chain(&cli.agent_labels) {
            let (k, v) = punnet_agent::config::parse_label(l)?;
            labels.insert(k, v);
        }
        let mut agent = c.local_agent(cli.agent_name.or(file.agent_name), labels);
        // On by default, as on every board (the library leaves it off).
        agent.web = match (&cli.agent_web, &file.agent_web) {
            (Some(addr), _) => punnet_agent::config::parse_web(addr)?,
            (None, Some(setting)) => setting.address()?,
            (None, None) => punnet_agent::config::parse_web(punnet_agent::config::DEFAULT_WEB)?,
        };
        c.agent = Some(agent);
    }
    Ok(c)
}

/// The embedded broker's MQTT 5 listener when none is configured: next to a v4
/// listener on the standard port 1883, port 1884 on the same address, if that is free
/// (otherwise the controller runs without the MQTT API and says so, rather than not at
/// all). Any other --mqtt port has no v5 listener unless --mqtt5 names one, so that
/// controllers started side by side on their own ports never race for 1884.
fn default_mqtt_v5(c: &ControllerConfig) -> Option<std::net::SocketAddr> {
    if c.broker.is_some() {
        return None;
    }
    // Next to the standard ports: 1884 beside plaintext 1883, 8884 beside TLS 8883.
    let port = match c.mqtt.port() {
        punnet_controller::broker::DEFAULT_PORT => punnet_controller::mqttapi::DEFAULT_V5_PORT,
        8883 => 8884,
        _ => {
            tracing::info!(
                "--mqtt is not on port 1883 or 8883: no MQTT 5 listener and no MQTT API unless --mqtt5 names one"
            );
            return None;
        }
    };
    let addr = std::net::SocketAddr::new(c.mqtt.ip(), port);
    if std::net::TcpListener::bind(addr).is_err() {
        tracing::warn!(
            "MQTT 5 listener {addr} is taken: no MQTT API (choose another with --mqtt5)"
        );
        return None;
    }
    Some(addr)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Every board holds three sockets in this process with the embedded broker (its
/// connection to the gate, the gate's to rumqttd, rumqttd's end): a few thousand boards
/// pass the usual soft limit of 1,024 open files, so take what the hard limit allows.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open files limit: {e}"),
    }
}
