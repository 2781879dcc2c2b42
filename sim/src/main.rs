//! punnet-sim's entry point: parses flags and calls `punnet_sim::run`. SIGUSR1 kills
//! the `--kill` share of the nodes at once (what the benchmark uses to time node loss);
//! Ctrl-C or SIGTERM stops the fleet cleanly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use punnet_sim::{KillMode, SimConfig};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// A power cut: the connection stays open and silent; the broker fires each last
    /// will after 1.5 × keepalive.
    Silent,
    /// The connections drop: the last wills fire at once.
    Close,
}

#[derive(Parser)]
#[command(
    name = "punnet-sim",
    version,
    about = "Simulated Punnet agents over real MQTT, for measuring the controller"
)]
struct Cli {
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Node names are this prefix followed by a number.
    #[arg(long, default_value = "sim-")]
    name_prefix: String,
    /// Number of the first node (to run several simulators against one controller).
    #[arg(long, default_value_t = 0)]
    first_index: usize,
    /// The MQTT broker the controller uses (mqtt:// needs --allow-plaintext).
    #[arg(long, default_value = "mqtts://127.0.0.1:8883")]
    broker: String,
    /// The CA the broker's certificate is checked against (the controller's ca.pem).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Accept an mqtt:// broker (no TLS).
    #[arg(long)]
    allow_plaintext: bool,
    /// MQTT topic prefix.
    #[arg(long, default_value = punnet_api::topics::DEFAULT_PREFIX)]
    prefix: String,
    /// Status report interval (the agent's heartbeat).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    report_interval: Duration,
    /// MQTT keepalive of every node.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    keep_alive: Duration,
    /// How long a Pod stays ContainerCreating before it runs.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    start_delay: Duration,
    /// New connections per second while the fleet comes up.
    #[arg(long, default_value_t = 500)]
    connect_rate: u32,
    /// Kill this percentage of the nodes, after --kill-after or on SIGUSR1.
    #[arg(long, value_name = "PERCENT")]
    kill: Option<f64>,
    /// When to kill, counted from the moment every node was started.
    #[arg(long, value_parser = parse_duration)]
    kill_after: Option<Duration>,
    /// How killed nodes die.
    #[arg(long, value_enum, default_value = "silent")]
    kill_mode: Mode,
    /// The controller's REST API, where the simulated nodes' keys are registered.
    #[arg(long, default_value = "http://127.0.0.1:6443")]
    api: String,
    /// An admin token for it (the `token:` line of <controller-data>/punnet.yaml).
    #[arg(long, env = "PUNNET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the progress line this often (0s: never).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    progress_every: Duration,
    /// Bootstrap token every node enrols with first (`punnet token create --uses N`);
    /// the controller's embedded broker admits enrolled nodes only.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PUNNET_ENROL_TOKEN",
        hide_env_values = true
    )]
    enrol_token: Option<String>,
}

/// `500ms`, `10s`, `2m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (examples: 500ms, 10s, 2m)");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let kill_now = Arc::new(Notify::new());
        let mut usr1 = signal(SignalKind::user_defined1()).context("cannot catch SIGUSR1")?;
        let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
        let k = kill_now.clone();
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                k.notify_one();
            }
        });
        let config = SimConfig {
            nodes: cli.nodes,
            name_prefix: cli.name_prefix,
            first_index: cli.first_index,
            broker: cli.broker,
            ca: cli.ca,
            allow_plaintext: cli.allow_plaintext,
            prefix: cli.prefix,
            report_interval: cli.report_interval,
            keep_alive: cli.keep_alive,
            start_delay: cli.start_delay,
            connect_rate: cli.connect_rate,
            kill_percent: cli.kill,
            kill_after: cli.kill_after,
            kill_now: Some(kill_now),
            kill_mode: match cli.kill_mode {
                Mode::Silent => KillMode::Silent,
                Mode::Close => KillMode::Close,
            },
            progress_every: cli.progress_every,
            enrol_token: cli.enrol_token,
            api: cli.api,
            token: cli.token.unwrap_or_default(),
        };
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        punnet_sim::run(config, shutdown)
            .await
            .context("punnet-sim")
    })
}
