//! punnet-agent's entry point: the per-container shim mode (`punnet-agent shim DIR`),
//! `image load`, or the agent itself. It only reads configuration, sets up logging and
//! calls the library's `run`; the agent runs on a single-threaded tokio runtime because a
//! board has little memory and the agent little to do.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use punnet_agent::config::{self, AgentConfig, ConfigFile};
use punnet_agent::image::ImageStore;

#[derive(Parser)]
#[command(name = "punnet-agent", version, about = "Punnet's node agent")]
struct Cli {
    /// Node name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// MQTT broker URL.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// Where the agent keeps its state, images, containers and logs.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A label for this node (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// MQTT topic prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// Bootstrap token (`punnet token create`) to enrol with when the data dir holds no
    /// identity yet; ignored once enrolled.
    #[arg(long, value_name = "TOKEN", env = "PUNNET_TOKEN")]
    token: Option<String>,
    /// First restart delay of a crashing container (doubles up to 5m).
    #[arg(long, value_name = "DURATION")]
    restart_backoff: Option<String>,
    /// Interval of full status reports.
    #[arg(long, value_name = "DURATION")]
    heartbeat: Option<String>,
    /// Run every Pod in the host's network namespace (no CNI plugins needed).
    #[arg(long)]
    no_pod_network: bool,
    /// Directory with the CNI plugins (repeatable; default /usr/lib/cni then /opt/cni/bin).
    #[arg(long = "cni-bin-dir", value_name = "DIR")]
    cni_bin_dirs: Vec<PathBuf>,
    /// Linux bridge the Pods are attached to.
    #[arg(long, value_name = "NAME")]
    cni_bridge: Option<String>,
    /// A registry (HOST:PORT) that may be reached over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Pick images for this platform instead of the CPU's (e.g. linux/arm/v6).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Delete unused images when free disk falls below this (e.g. 1Gi).
    #[arg(long, value_name = "SIZE")]
    image_gc_min_free: Option<String>,
    /// The controller's public key (64 hex digits) desired state must be signed with
    /// [default: <data-dir>/controller.pub].
    #[arg(long, value_name = "FILE")]
    controller_key: Option<PathBuf>,
    /// YAML file with the same keys as these flags (flags win).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The CA the broker's certificate is checked against: the controller's
    /// <data-dir>/ca.pem (default: the system's CAs).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Accept an mqtt:// broker URL: MQTT WITHOUT TLS. Only for trusted networks.
    #[arg(long)]
    allow_plaintext: bool,
    /// Serve the read-only board page (and its JSON at /api/board) on this address;
    /// `off` for none [default: 0.0.0.0:6480].
    #[arg(long, value_name = "ADDR|off")]
    web: Option<String>,
    /// Ask for this token before showing the board page (off by default).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PUNNET_WEB_TOKEN",
        hide_env_values = true
    )]
    web_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the node's image store.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Load an OCI archive (`skopeo copy ... oci-archive:FILE:name:tag`) into the store.
    Load {
        file: PathBuf,
        /// Reference to store the image under, when the archive has no full name.
        #[arg(long, value_name = "REF")]
        name: Option<String>,
    },
    /// List the stored images.
    #[command(alias = "ls")]
    List,
}

fn main() {
    // The shim must take over before any thread (tokio, logging) starts.
    if let Some(code) = punnet_agent::shim::dispatch(std::env::args_os()) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(punnet_agent::log_colours())
        .init();
    if let Err(e) = real_main(cli) {
        eprintln!("punnet-agent: {}", report(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, without repeating a cause that an error's own
/// message already includes.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = agent_config(&cli)?;
    match cli.command {
        Some(Command::Image { command }) => image_command(&config, command),
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the tokio runtime")?;
            tracing::info!(node = %config.node_name, broker = %config.broker, data_dir = %config.data_dir.display(), "punnet-agent {} starting", env!("CARGO_PKG_VERSION"));
            let node = config.node_name.clone();
            rt.block_on(punnet_agent::run(config, shutdown_signal()))
                .with_context(|| format!("agent for node {node} failed"))
        }
    }
}

fn agent_config(cli: &Cli) -> anyhow::Result<AgentConfig> {
    let mut config = AgentConfig::new(config::hostname());
    // The library leaves the page off; on a board it is on unless turned off.
    config.web = config::parse_web(config::DEFAULT_WEB)?;
    if let Some(path) = &cli.config {
        let file = ConfigFile::load(path)?;
        if file.token.is_some() {
            config.token_file = Some(path.clone());
        }
        config.apply_file(&file)?;
    }
    if let Some(name) = &cli.name {
        config.node_name = name.clone();
    }
    if let Some(broker) = &cli.broker {
        config.broker = broker.clone();
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(prefix) = &cli.prefix {
        config.prefix = prefix.clone();
    }
    for label in &cli.labels {
        let (k, v) = config::parse_label(label)?;
        config.labels.insert(k, v);
    }
    if let Some(token) = &cli.token {
        config.token = Some(token.clone());
    }
    if let Some(d) = &cli.restart_backoff {
        config.restart_backoff_base = config::parse_duration(d)?;
    }
    if let Some(d) = &cli.heartbeat {
        config.heartbeat_interval = config::parse_duration(d)?;
    }
    if cli.no_pod_network {
        config.pod_network = false;
    }
    if !cli.cni_bin_dirs.is_empty() {
        config.cni_bin_dirs = cli.cni_bin_dirs.clone();
    }
    if let Some(b) = &cli.cni_bridge {
        config.cni_bridge = b.clone();
    }
    config
        .insecure_registries
        .extend(cli.insecure_registries.iter().cloned());
    if let Some(p) = &cli.platform {
        config.platform = Some(p.clone());
    }
    if let Some(q) = &cli.image_gc_min_free {
        config.image_gc_min_free_bytes = config::parse_size(q)?;
    }
    if let Some(k) = &cli.controller_key {
        config.controller_key = Some(k.clone());
    }
    if let Some(ca) = &cli.ca {
        config.ca = Some(ca.clone());
    }
    if cli.allow_plaintext {
        config.allow_plaintext = true;
    }
    if let Some(web) = &cli.web {
        config.web = config::parse_web(web)?;
    }
    if let Some(token) = &cli.web_token {
        config.web_token = Some(token.clone());
    }
    config.validate()?;
    Ok(config)
}

fn image_command(config: &AgentConfig, command: ImageCommand) -> anyhow::Result<()> {
    let root = config.data_dir.join("images");
    // The store takes its own locks, so this is safe while an agent runs.
    let store = ImageStore::open(&root)
        .with_context(|| format!("failed to open the image store {}", root.display()))?;
    match command {
        ImageCommand::Load { file, name } => {
            let loaded = store
                .load_archive_as(&file, name.as_deref())
                .with_context(|| format!("failed to load {}", file.display()))?;
            for image in loaded {
                println!("{} {}", image.reference, image.digest);
            }
        }
        ImageCommand::List => {
            for image in store.list().context("failed to list images")? {
                println!(
                    "{}\t{}\t{}",
                    image.reference,
                    image.digest,
                    punnet_api::quantity::format_bytes(image.size)
                );
            }
        }
    }
    Ok(())
}

/// SIGINT or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
