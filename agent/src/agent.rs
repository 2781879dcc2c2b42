//! The agent's run loop: one task that owns all agent state and reacts to the MQTT
//! link, timers and the shutdown signal. Each reconcile lists the runtime, asks the pure
//! `reconcile` for a plan, carries it out (runtime calls are blocking, so they run on
//! the blocking pool, starts concurrently), and recomputes Pod status; a changed status
//! is published after a short debounce, and all of it again with every heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use punnet_api::pod::{Pod, PodStatus};
use punnet_api::wire::{
    self, ContainerUsage, DesiredState, LogRequest, NodeFacts, NodeStatusReport, PodReport,
};
use punnet_api::{ConfigMap, Secret};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::AgentConfig;
use crate::events::{self, EventBuffer};
use crate::identity::{self, NodeKey, SignatureStatus};
use crate::image::{ImageError, ImageStore};
use crate::link::{self, Link, LinkError, LinkEvent};
use crate::logs::{self, LogServer};
use crate::network::{NetworkConfig, PodNetSpec, PodNetwork};
use crate::podstatus::{self, StatusInput};
use crate::probe::{self, ProbeChange, ProbeTarget, Prober};
use crate::pulls::{Gate, PullDone, Pulls};
use crate::reconcile::{
    self, Action, BackoffPolicy, ContainerKey, PodNet, StartContainer, StartFailure, Waiting,
};
use crate::runtime::{
    ContainerConfig, ContainerInfo, ContainerState, Runtime, RuntimeError, ShimRuntime,
};
use crate::shim::exec::ContainerExec;
use crate::state::{self, LocalState, StateError};

/// Status changes that come in a burst (several containers starting) go out as one report.
const STATUS_DEBOUNCE: Duration = Duration::from_millis(50);
/// After acting, look again soon: a container that dies at once should show quickly.
const FOLLOW_UP: Duration = Duration::from_millis(200);
/// How long shutdown waits for the broker to take our goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// A stop that did not take effect after the grace period plus this is sent again.
const STOP_RETRY_SLACK: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("agent state in {dir}: {source}")]
    State {
        dir: PathBuf,
        #[source]
        source: StateError,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{0}")]
    Identity(#[from] identity::IdentityError),
    #[error("image store {dir}: {source}")]
    Images {
        dir: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error(transparent)]
    Enrol(#[from] crate::enrol::EnrolError),
}

/// Runs the agent with the real runtime (containers through libcontainer shims) until
/// `shutdown` completes. Containers keep running after it returns.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    config.validate()?;
    // A container whose shim died is re-parented to the nearest subreaper: this agent,
    // when it started that shim, so the exit can be reaped (FACTS.md). Shims of an
    // earlier agent go to init; the runtime finds them through /proc, not as children.
    if let Err(e) = crate::runtime::become_subreaper() {
        tracing::warn!(error = %e, "could not become child subreaper; exits of orphaned containers may linger as zombies");
    }
    let images_dir = config.data_dir.join("images");
    let store = ImageStore::open(&images_dir).map_err(|source| AgentError::Images {
        dir: images_dir.clone(),
        source,
    })?;
    let store = Arc::new(store);
    let state = open_state(&config.data_dir)?;
    let (s, dir) = (store.clone(), images_dir.join("import"));
    let _ =
        tokio::task::spawn_blocking(move || crate::import::import_archives(&s, &state, &dir)).await;
    let images = store.clone();
    let runtime = ShimRuntime::new(
        config.data_dir.join("containers"),
        store,
        config.shim_exe.clone(),
        config.shim_args.clone(),
    );
    let housekeeping: Housekeeping = Arc::new(|| {
        crate::runtime::reap_children();
    });
    run_inner(
        config,
        Arc::new(runtime),
        Some(housekeeping),
        Some(images),
        shutdown,
    )
    .await
}

/// Runs the agent with any runtime (tests pass `runtime::fake::FakeRuntime`).
pub async fn run_with_runtime(
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    run_inner(config, runtime, None, None, shutdown).await
}

/// Blocking chores done before every reconcile (reaping children for the real runtime).
type Housekeeping = Arc<dyn Fn() + Send + Sync>;

fn open_state(dir: &Path) -> Result<LocalState, AgentError> {
    LocalState::open(dir).map_err(|source| AgentError::State {
        dir: dir.to_path_buf(),
        source,
    })
}

async fn run_inner(
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    housekeeping: Option<Housekeeping>,
    images: Option<Arc<ImageStore>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    config.validate()?;
    let mut config = config;
    tokio::pin!(shutdown);
    // Enrol (or load the identity) before anything talks to the broker.
    tokio::select! {
        enrolled = crate::enrol::ensure_identity(&mut config) => enrolled?,
        _ = &mut shutdown => return Ok(()),
    }
    let platform = match &config.platform {
        Some(p) => p
            .parse::<crate::platform::Platform>()
            .map_err(|e| crate::config::ConfigError::Platform(e.to_string()))?,
        None => crate::platform::detect(),
    };
    let state = open_state(&config.data_dir)?;
    let desired = match state.load_desired(&config.node_name) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the stored desired state");
            None
        }
    };
    if let Some(d) = &desired {
        tracing::info!(
            generation = d.generation,
            pods = d.pods.len(),
            "restored the last desired state"
        );
    }
    let node_key = NodeKey::load_or_create(&config.data_dir)?;
    let controller_key = identity::load_controller_key(&config)?;
    if controller_key.is_none() {
        tracing::warn!(
            "no controller key at {}: every desired state is refused until there is one (enrol this node, or copy controller.pub from the controller's data directory)",
            identity::controller_key_path(&config).display()
        );
    }
    let mut signatures = SignatureStatus::new(&node_key.public_key(), controller_key.as_ref());
    if let Some(d) = &desired {
        signatures.accepted(d.epoch, d.generation);
    }
    // Every task lives in this set: dropping the agent (or aborting it) ends them all.
    let mut tasks = JoinSet::new();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (link, driver) = link::connect(&config, events_tx)?;
    tasks.spawn(driver);
    let (chunks_tx, chunks_rx) = mpsc::channel(64);
    tasks.spawn(logs::forward(link.clone(), chunks_rx));
    let (containers_tx, containers_rx) = watch::channel(Arc::new(Vec::new()));
    let logs = LogServer::new(
        &config.data_dir,
        &config.node_name,
        containers_rx,
        chunks_tx,
    );
    let network = if config.pod_network {
        open_network(
            &config,
            desired.as_ref().and_then(|d| d.pod_cidr.as_deref()),
        )
    } else {
        None
    };
    let exec = ContainerExec::new(config.shim_exe.clone(), config.data_dir.join("containers"));
    let web_stop = tokio_util::sync::CancellationToken::new();
    let board = start_board(&config, &link, &mut tasks, web_stop.clone()).await;
    if let (Some(b), Some(d)) = (&board, &desired) {
        b.set_secrets(&d.secrets);
    }
    let sampler = Arc::new(std::sync::Mutex::new(crate::board::Sampler::default()));
    let (facts, _) = sample(&config, &sampler, Vec::new()).await;

    let (pull_tx, pull_rx) = mpsc::unbounded_channel();
    let pulls = images.clone().map(|store| {
        Pulls::new(
            store,
            platform.clone(),
            config.insecure_registries.clone(),
            pull_tx,
        )
    });
    let mut agent = Agent {
        images,
        pulls,
        pull_rx,
        last_gc: None,
        streaks: state.load_streaks(),
        applied_generation: desired.as_ref().map(|d| d.generation),
        applied_epoch: desired.as_ref().map_or(0, |d| d.epoch),
        node_key,
        controller_key,
        signatures,
        sources: desired.as_ref().map(DesiredSources::of).unwrap_or_default(),
        pods: desired.map(|d| d.pods).unwrap_or_default(),
        config,
        runtime,
        housekeeping,
        state: Arc::new(state),
        link,
        logs,
        containers_tx,
        facts,
        sampler,
        usage: BTreeMap::new(),
        prober: Prober::new(exec.clone()),
        probe_graces: BTreeMap::new(),
        events: EventBuffer::default(),
        evicted: BTreeMap::new(),
        exec,
        network,
        networks: BTreeMap::new(),
        network_failures: BTreeMap::new(),
        failures: BTreeMap::new(),
        stopping: BTreeMap::new(),
        statuses: BTreeMap::new(),
        reports: Vec::new(),
        board,
        desired_received_at: None,
    };
    if let Some(b) = &agent.board {
        b.record(&agent.facts, SystemTime::now());
    }
    let result = agent.run(&mut events, shutdown).await;
    agent.logs.cancel_all();
    web_stop.cancel();
    let link = agent.link.clone();
    drop(agent);
    link.shutdown(SHUTDOWN_GRACE).await;
    drop(link);
    // The link driver ends after the disconnect, the log forwarder once its streams end.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("agent tasks did not end in time; cutting them short");
    }
    tasks.shutdown().await;
    tracing::info!("agent stopped; containers keep running");
    result
}

struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    housekeeping: Option<Housekeeping>,
    state: Arc<LocalState>,
    link: Link,
    logs: LogServer,
    /// The runtime's list after each reconcile, for log streams waiting for an exit.
    containers_tx: watch::Sender<Arc<Vec<ContainerInfo>>>,
    facts: NodeFacts,
    /// The desired Pods: from the controller, else from the local store.
    pods: Vec<Pod>,
    /// The rest of the desired state: what the Pods reference, the node's Pod range.
    sources: DesiredSources,
    applied_generation: Option<u64>,
    /// The epoch of the applied desired state: `(epoch, generation)` is the replay floor.
    applied_epoch: u64,
    /// Signs status reports.
    node_key: NodeKey,
    /// Desired state must be signed with it; `None` until enrolment writes it.
    controller_key: Option<punnet_api::signing::PublicKey>,
    /// Refusals by reason, for the log, `signatures.json` and the node's Events.
    signatures: SignatureStatus,
    streaks: BTreeMap<ContainerKey, u32>,
    /// Starts that failed without creating a container; retried at their time.
    failures: BTreeMap<ContainerKey, StartFailure>,
    /// Containers asked to stop, and when; not asked again while they stop.
    stopping: BTreeMap<String, Instant>,
    /// Last computed status per Pod uid, for transition times.
    statuses: BTreeMap<String, PodStatus>,
    reports: Vec<PodReport>,
    /// The node's image store (`None` with a test runtime: no pulls).
    images: Option<Arc<ImageStore>>,
    pulls: Option<Pulls>,
    pull_rx: mpsc::UnboundedReceiver<PullDone>,
    /// When unused images were last looked for.
    last_gc: Option<Instant>,
    /// CPU counters between samples of the board and the containers.
    sampler: Arc<std::sync::Mutex<crate::board::Sampler>>,
    /// Running container id → its CPU and memory at the last heartbeat.
    usage: BTreeMap<String, ContainerUsage>,
    /// Runs commands in containers (exec probes, hooks).
    exec: ContainerExec,
    /// Liveness, readiness and startup probes of the running containers.
    prober: Prober,
    /// Pod uid → why it was evicted (an emptyDir over its sizeLimit).
    evicted: BTreeMap<String, String>,
    /// Containers a failed probe stops with its own `terminationGracePeriodSeconds`.
    probe_graces: BTreeMap<String, Duration>,
    /// Kubernetes Events for the next status report.
    events: EventBuffer,
    /// Pod networking through CNI; `None` when off (`--no-pod-network`).
    network: Option<Arc<PodNetwork>>,
    /// Pod uid → its network, once set up (or checked) in this agent's life.
    networks: BTreeMap<String, PodNet>,
    /// Pod uid → why its network could not be set up, and when to try again.
    network_failures: BTreeMap<String, (String, Instant)>,
    /// The board page's view of this agent; `None` with `--web off`.
    board: Option<Arc<crate::web::BoardState>>,
    /// When the controller's desired state last arrived (the page shows it).
    desired_received_at: Option<SystemTime>,
}

/// Binds the board page's address and serves it until `stop`; `None` (with a warning
/// naming the fix) when it is off or the address cannot be bound: the page must never
/// keep a board's containers from being managed.
async fn start_board(
    config: &AgentConfig,
    link: &Link,
    tasks: &mut JoinSet<()>,
    stop: tokio_util::sync::CancellationToken,
) -> Option<Arc<crate::web::BoardState>> {
    let addr = config.web?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot serve the board page: another program has the port? choose another with --web ADDR (or turn it off with --web off)");
            return None;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let board = crate::web::BoardState::new(config, link.clone());
    tracing::info!(
        address = %bound,
        token = config.web_token.is_some(),
        "board page on http://{bound}/"
    );
    let b = board.clone();
    tasks.spawn(async move {
        if let Err(e) = crate::web::server::serve(listener, b, stop.cancelled_owned()).await {
            tracing::warn!(error = %e, "the board page stopped");
        }
    });
    Some(board)
}

/// The node's facts and health, and the usage of the running containers `ids`.
async fn sample(
    config: &AgentConfig,
    sampler: &Arc<std::sync::Mutex<crate::board::Sampler>>,
    ids: Vec<String>,
) -> (NodeFacts, BTreeMap<String, ContainerUsage>) {
    let (labels, data_dir, sampler) = (
        config.labels.clone(),
        config.data_dir.clone(),
        sampler.clone(),
    );
    let platform = config.platform.clone();
    tokio::task::spawn_blocking(move || {
        let mut facts = crate::facts::gather(&labels);
        // The platform images are picked for; `kubernetes.io/arch` follows it, so a
        // 32-bit agent on a 64-bit kernel is scheduled 32-bit images.
        let platform = platform
            .and_then(|p| p.parse::<crate::platform::Platform>().ok())
            .unwrap_or_else(crate::platform::detect);
        facts.arch = platform.architecture.clone();
        facts.platform = platform.arch_variant();
        let mut s = sampler.lock().unwrap_or_else(|p| p.into_inner());
        s.node(&mut facts, &data_dir);
        let usage = s.containers(&ids);
        (facts, usage)
    })
    .await
    .unwrap_or_default()
}

/// How often unused images are looked for (only deleted when the disk is low).
const GC_INTERVAL: Duration = Duration::from_secs(300);

/// How long a postStart handler may run.
const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// The prober's name for a container across its runs.
fn probe_key(config: &ContainerConfig) -> String {
    format!("{}/{}", config.pod_uid, config.container_name)
}

/// What a lifecycle handler needs of its container, from what the container was
/// started with (the Pod may be gone from the desired state by the time preStop runs).
fn hook_target(config: &ContainerConfig) -> ProbeTarget {
    ProbeTarget {
        key: probe_key(config),
        container_id: config.id.clone(),
        started_at: SystemTime::now(),
        spec: punnet_api::pod::Container {
            name: config.container_name.clone(),
            ports: config.hooks.ports.clone(),
            ..Default::default()
        },
        pod_ip: config
            .hooks
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok()),
    }
}

/// How long a Pod whose network setup failed waits before the next attempt.
const NETWORK_RETRY: Duration = Duration::from_secs(5);

/// The Pod network layer, or `None` (with a warning) when it cannot be used.
fn open_network(config: &AgentConfig, pod_cidr: Option<&str>) -> Option<Arc<PodNetwork>> {
    let mut cfg = NetworkConfig::new(&config.data_dir);
    cfg.pod_cidr = pod_cidr.map(str::to_string);
    cfg.plugin_dirs = config.cni_bin_dirs.clone();
    cfg.bridge = config.cni_bridge.clone();
    cfg.netns_dir = config.netns_dir();
    match PodNetwork::new(cfg) {
        Ok(net) => {
            if let Err(e) = net.check_plugins() {
                tracing::warn!(error = %e, "Pods without hostNetwork cannot start until this is fixed");
            }
            Some(Arc::new(net))
        }
        Err(e) => {
            tracing::warn!(error = %e, "Pod networking is off; every Pod uses the host's network");
            None
        }
    }
}

impl Agent {
    async fn run(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<LinkEvent>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let mut next_reconcile = Instant::now();
        let mut status_due: Option<Instant> = None;
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + self.config.heartbeat_interval,
            self.config.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("shutting down");
                    return Ok(());
                }
                event = events.recv() => match event {
                    Some(LinkEvent::Connected) => status_due = Some(Instant::now()),
                    Some(LinkEvent::Desired(bytes)) => {
                        if self.on_desired(&bytes).await {
                            next_reconcile = Instant::now();
                            status_due = Some(Instant::now());
                        }
                    }
                    Some(LinkEvent::LogRequest(bytes)) => match wire::decode::<LogRequest>(&bytes) {
                        Ok(req) => self.logs.handle(req, &self.pods),
                        Err(e) => tracing::warn!(error = %e, "refused a malformed log request"),
                    },
                    None => {
                        tracing::warn!("MQTT link ended");
                        return Ok(());
                    }
                },
                _ = tokio::time::sleep_until(next_reconcile) => {
                    let outcome = self.reconcile().await;
                    let wait = outcome
                        .requeue_after
                        .unwrap_or(self.config.resync_interval)
                        .min(self.config.resync_interval);
                    let wait = if outcome.acted { wait.min(FOLLOW_UP) } else { wait };
                    next_reconcile = Instant::now() + wait;
                    if outcome.status_changed && status_due.is_none() {
                        status_due = Some(Instant::now() + STATUS_DEBOUNCE);
                    }
                }
                Some(done) = self.pull_rx.recv() => {
                    if let Some(pulls) = &mut self.pulls {
                        pulls.finish(done);
                    }
                    next_reconcile = Instant::now();
                }
                events = self.prober.next_events() => {
                    for e in &events {
                        let (uid, container) = e.key.rsplit_once('/').unwrap_or(("", &e.key));
                        match &e.change {
                            ProbeChange::Restart(r) => {
                                tracing::info!(container = %e.container_id, reason = %r.message, "{}", r.kill_message(container));
                                self.note(uid, Some(container), false, "Killing", r.kill_message(container));
                            }
                            ProbeChange::Unhealthy { message, .. } => {
                                tracing::debug!(container = %e.container_id, "{message}");
                                self.note(uid, Some(container), true, "Unhealthy", message.clone());
                            }
                            _ => {}
                        }
                    }
                    // Readiness and restarts are level-triggered: reconcile looks again.
                    next_reconcile = Instant::now();
                }
                _ = heartbeat.tick() => {
                    let running: Vec<String> = self
                        .containers_tx
                        .borrow()
                        .iter()
                        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
                        .map(|c| c.config.id.clone())
                        .collect();
                    let (facts, usage) = sample(&self.config, &self.sampler, running).await;
                    self.facts = facts;
                    self.usage = usage;
                    if let Some(b) = &self.board {
                        b.record(&self.facts, SystemTime::now());
                    }
                    self.publish_status();
                    self.collect_garbage();
                    if self.check_empty_dirs().await {
                        next_reconcile = Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(status_due.unwrap_or_else(Instant::now)), if status_due.is_some() => {
                    status_due = None;
                    self.publish_status();
                }
            }
        }
    }

    /// Accepts, stores and applies a desired-state message; false when refused.
    async fn on_desired(&mut self, bytes: &[u8]) -> bool {
        if self.controller_key.is_none() {
            // Enrolment writes the key while the agent runs.
            match identity::load_controller_key(&self.config) {
                Ok(Some(key)) => {
                    tracing::info!("controller key loaded");
                    self.signatures.set_controller_key(Some(&key));
                    self.controller_key = Some(key);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the controller key"),
            }
        }
        let desired: DesiredState = match state::accept_desired(
            bytes,
            &self.config.node_name,
            self.controller_key.as_ref(),
            &identity::controller_key_path(&self.config),
            self.applied_generation.map(|g| (self.applied_epoch, g)),
        ) {
            Ok(d) => d,
            Err(e) => {
                self.desired_refused(&e);
                return false;
            }
        };
        self.desired_received_at = Some(SystemTime::now());
        let sources = DesiredSources::of(&desired);
        if self.applied_generation == Some(desired.generation)
            && self.pods == desired.pods
            && self.sources == sources
        {
            // The retained message again after a reconnect: nothing to store (SD cards wear).
            return true;
        }
        let (st, raw) = (self.state.clone(), bytes.to_vec());
        match tokio::task::spawn_blocking(move || st.save_desired(&raw)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not store the desired state; Pods will not restart without network after a reboot")
            }
            Err(e) => tracing::warn!(error = %e, "storing the desired state failed"),
        }
        tracing::info!(
            generation = desired.generation,
            pods = desired.pods.len(),
            "new desired state"
        );
        self.applied_generation = Some(desired.generation);
        self.applied_epoch = desired.epoch;
        self.signatures.accepted(desired.epoch, desired.generation);
        self.pods = desired.pods;
        if let Some(net) = &self.network {
            match net.set_pod_cidr(sources.pod_cidr.as_deref()) {
                Ok(true) => {
                    tracing::info!(pod_cidr = ?sources.pod_cidr, "this node's Pod range changed")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "refused the Pod range from the controller"),
            }
        }
        if let Some(b) = &self.board {
            b.set_secrets(&sources.secrets);
        }
        self.sources = sources;
        true
    }

    async fn list(&self) -> Option<(Vec<ContainerInfo>, Vec<String>)> {
        let runtime = self.runtime.clone();
        let housekeeping = self.housekeeping.clone();
        let pods_dir = self.config.data_dir.join("pods");
        let listed = tokio::task::spawn_blocking(move || {
            if let Some(h) = housekeeping {
                h();
            }
            let dirs = std::fs::read_dir(&pods_dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default();
            runtime.list().map(|l| (l, dirs))
        })
        .await;
        match listed {
            Ok(Ok(l)) => Some(l),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not list containers");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing containers panicked");
                None
            }
        }
    }

    async fn reconcile(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        let Some((containers, pod_dirs)) = self.list().await else {
            return outcome;
        };
        self.prune_stopping(&containers);
        let now = SystemTime::now();
        let stopping: BTreeSet<String> = self.stopping.keys().cloned().collect();
        let host_ip = self.facts.addresses.first().cloned();
        self.failures
            .retain(|k, _| self.pods.iter().any(|p| reconcile::pod_uid(p) == k.pod_uid));
        self.ensure_networks().await;
        let failed_probes: BTreeMap<String, Option<Duration>> = containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running { .. }))
            .filter_map(|c| {
                let restart = self
                    .prober
                    .status(&probe_key(&c.config), &c.config.id)?
                    .restart?;
                Some((c.config.id.clone(), restart.grace_period))
            })
            .collect();
        let unhealthy: BTreeSet<String> = failed_probes.keys().cloned().collect();
        self.probe_graces = failed_probes
            .into_iter()
            .filter_map(|(id, g)| Some((id, g?)))
            .collect();
        let network_errors: BTreeMap<String, String> = self
            .network_failures
            .iter()
            .map(|(uid, (e, _))| (uid.clone(), e.clone()))
            .collect();
        let mut plan = reconcile::reconcile(&reconcile::Input {
            pods: &self.pods,
            containers: &containers,
            now,
            backoff: BackoffPolicy {
                base: self.config.restart_backoff_base,
                max: self.config.restart_backoff_max,
                reset: self.config.restart_backoff_reset,
            },
            streaks: &self.streaks,
            failures: &self.failures,
            stopping: &stopping,
            pod_dirs: &pod_dirs,
            data_dir: &self.config.data_dir,
            sources: reconcile::Sources {
                config_maps: &self.sources.config_maps,
                secrets: &self.sources.secrets,
                host_ip: host_ip.as_deref(),
                pod_network: self.network.is_some(),
                networks: Some(&self.networks),
                network_errors: Some(&network_errors),
                unhealthy: Some(&unhealthy),
                evicted: Some(&self.evicted),
            },
        });
        outcome.requeue_after = plan.requeue_after;
        if plan.streaks != self.streaks {
            self.streaks = std::mem::take(&mut plan.streaks);
            let (st, streaks) = (self.state.clone(), self.streaks.clone());
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = st.save_streaks(&streaks) {
                    tracing::warn!(error = %e, "could not store restart back-off state");
                }
            })
            .await;
        }
        let containers = if plan.actions.is_empty() {
            containers
        } else {
            // Starts and stops change what runs: look again soon. Removals do not (and
            // one that keeps failing must not make the loop spin).
            outcome.acted = plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::Start(_) | Action::Stop { .. }));
            self.execute(
                std::mem::take(&mut plan.actions),
                &mut plan.waiting,
                &containers,
            )
            .await;
            match self.list().await {
                Some((c, _)) => c,
                None => containers,
            }
        };
        self.teardown_networks(&containers).await;
        self.update_probes(&containers);
        outcome.status_changed = self.update_status(&containers, &plan.waiting);
        self.containers_tx.send_replace(Arc::new(containers));
        outcome
    }

    /// Whether a container's image is there (pulling it when its policy says so).
    fn image_gate(&mut self, s: &StartContainer) -> Gate {
        let Some(pulls) = &mut self.pulls else {
            return Gate::Ready;
        };
        let Some(pod) = self
            .pods
            .iter()
            .find(|p| reconcile::pod_uid(p) == s.key.pod_uid)
        else {
            return Gate::Ready;
        };
        let Some(container) = pod
            .spec
            .init_containers
            .iter()
            .chain(&pod.spec.containers)
            .find(|c| c.name == s.key.container)
        else {
            return Gate::Ready;
        };
        let namespace = pod.metadata.namespace_or_default();
        let secrets: Vec<&punnet_api::Secret> = pod
            .spec
            .image_pull_secrets
            .iter()
            .filter_map(|r| {
                self.sources.secrets.iter().find(|s| {
                    s.metadata.name == r.name && s.metadata.namespace_or_default() == namespace
                })
            })
            .collect();
        pulls.gate(container, |reference| {
            crate::pulls::credentials_for(reference, &secrets)
        })
    }

    /// Evicts Pods whose disk emptyDir holds more than its `sizeLimit`, as the kubelet
    /// does; true when one was evicted.
    async fn check_empty_dirs(&mut self) -> bool {
        let desired: BTreeSet<String> = self.pods.iter().map(reconcile::pod_uid).collect();
        self.evicted.retain(|uid, _| desired.contains(uid));
        let mut limits = Vec::new();
        for pod in &self.pods {
            let uid = reconcile::pod_uid(pod);
            if self.evicted.contains_key(&uid) {
                continue;
            }
            for v in &pod.spec.volumes {
                let Some(e) = &v.empty_dir else { continue };
                if e.medium.as_deref() == Some("Memory") {
                    continue; // the tmpfs size enforces it
                }
                let Some(limit) = e
                    .size_limit
                    .as_deref()
                    .and_then(|q| punnet_api::quantity::parse_bytes(q).ok())
                else {
                    continue;
                };
                let dir = reconcile::pod_dir(&self.config.data_dir, pod)
                    .join("volumes/empty-dir")
                    .join(&v.name);
                let shown = e.size_limit.clone().unwrap_or_default();
                limits.push((uid.clone(), v.name.clone(), dir, limit, shown));
            }
        }
        if limits.is_empty() {
            return false;
        }
        let over = tokio::task::spawn_blocking(move || {
            limits
                .into_iter()
                .filter(|(_, _, dir, limit, _)| crate::volume::disk_usage(dir) > *limit)
                .map(|(uid, name, _, _, shown)| {
                    (
                        uid,
                        format!(
                            "Usage of EmptyDir volume \"{name}\" exceeds the limit \"{shown}\". "
                        ),
                    )
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let evicted_any = !over.is_empty();
        for (uid, message) in over {
            tracing::warn!(uid = %uid, "{message}Evicting the Pod");
            self.evicted.insert(uid, message.trim_end().to_string());
        }
        evicted_any
    }

    /// Deletes unused images when the disk runs low, at most every few minutes.
    fn collect_garbage(&mut self) {
        let Some(store) = self.images.clone() else {
            return;
        };
        if self.last_gc.is_some_and(|t| t.elapsed() < GC_INTERVAL) {
            return;
        }
        self.last_gc = Some(Instant::now());
        let mut in_use: Vec<String> = self
            .pods
            .iter()
            .flat_map(|p| p.spec.init_containers.iter().chain(&p.spec.containers))
            .map(|c| c.image.clone())
            .collect();
        in_use.extend(
            self.containers_tx
                .borrow()
                .iter()
                .map(|c| c.config.image.clone()),
        );
        if let Some(pulls) = &mut self.pulls {
            pulls.retain(&in_use);
        }
        let min_free = self.config.image_gc_min_free_bytes;
        tokio::task::spawn_blocking(move || match store.gc(&in_use, min_free) {
            Ok(r) if !r.removed_references.is_empty() => {
                tracing::info!(removed = ?r.removed_references, free_before = r.free_bytes_before, free_after = r.free_bytes_after, "deleted unused images: the disk was low");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
        });
    }

    /// Runs the container's preStop handler (bounded by its grace period), then stops it.
    fn spawn_pre_stop_then_stop(&self, config: ContainerConfig) {
        let (rt, exec) = (self.runtime.clone(), self.exec.clone());
        tokio::spawn(async move {
            if let Some(handler) = &config.hooks.pre_stop {
                let target = hook_target(&config);
                let deadline = std::time::Instant::now() + config.grace_period;
                if let Err(e) = probe::run_handler(handler, &target, &exec, deadline).await {
                    tracing::warn!(container = %config.id, error = %e, "preStop hook failed");
                }
            }
            let id = config.id.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || rt.stop(&id)).await {
                tracing::warn!(container = %config.id, error = %e, "could not stop container");
            }
        });
    }

    /// Runs a started container's postStart handler; a failure kills the container
    /// (`FailedPostStartHook`), which then restarts under the Pod's policy.
    fn spawn_post_start(&self, config: ContainerConfig) {
        let (rt, exec) = (self.runtime.clone(), self.exec.clone());
        tokio::spawn(async move {
            let Some(handler) = &config.hooks.post_start else {
                return;
            };
            let target = hook_target(&config);
            let deadline = std::time::Instant::now() + POST_START_TIMEOUT;
            if let Err(e) = probe::run_handler(handler, &target, &exec, deadline).await {
                tracing::warn!(container = %config.id, error = %e, "FailedPostStartHook: killing the container");
                let id = config.id.clone();
                let _ = tokio::task::spawn_blocking(move || rt.stop(&id)).await;
            }
        });
    }

    /// Hands the prober the running containers of the desired Pods.
    fn update_probes(&mut self, containers: &[ContainerInfo]) {
        let mut targets = Vec::new();
        for c in containers {
            let ContainerState::Running { started_at, .. } = c.state else {
                continue;
            };
            let Some(pod) = self
                .pods
                .iter()
                .find(|p| reconcile::pod_uid(p) == c.config.pod_uid)
            else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(spec) = pod
                .spec
                .containers
                .iter()
                .find(|s| s.name == c.config.container_name)
            else {
                continue;
            };
            if spec.liveness_probe.is_none()
                && spec.readiness_probe.is_none()
                && spec.startup_probe.is_none()
            {
                continue;
            }
            let pod_ip = self
                .networks
                .get(&c.config.pod_uid)
                .map(|n| n.ip.clone())
                .or_else(|| self.facts.addresses.first().cloned())
                .and_then(|ip| ip.parse().ok());
            targets.push(ProbeTarget {
                key: probe_key(&c.config),
                container_id: c.config.id.clone(),
                started_at,
                spec: spec.clone(),
                pod_ip,
            });
        }
        self.prober.update(&targets, std::time::Instant::now());
    }

    /// Sets up the network of every desired Pod that needs one and has none yet.
    async fn ensure_networks(&mut self) {
        let Some(net) = self.network.clone() else {
            return;
        };
        let now = Instant::now();
        for pod in &self.pods {
            if pod.spec.host_network == Some(true) || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let uid = reconcile::pod_uid(pod);
            if self.networks.contains_key(&uid)
                || self
                    .network_failures
                    .get(&uid)
                    .is_some_and(|(_, retry)| now < *retry)
            {
                continue;
            }
            let result = match PodNetSpec::from_pod(pod) {
                Ok(spec) => net.setup(&spec).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(st) => {
                    tracing::info!(pod = %pod.metadata.key(), ip = %st.ip, "Pod network ready");
                    self.network_failures.remove(&uid);
                    self.networks.insert(
                        uid,
                        PodNet {
                            ip: st.ip.to_string(),
                            netns: st.netns_path,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.metadata.key(), error = %e, "Pod network setup failed");
                    self.network_failures
                        .insert(uid, (e.to_string(), Instant::now() + NETWORK_RETRY));
                }
            }
        }
        let desired: BTreeSet<String> = self.pods.iter().map(reconcile::pod_uid).collect();
        self.network_failures.retain(|uid, _| desired.contains(uid));
    }

    /// Releases the networks of Pods that are gone: not desired and no container left.
    async fn teardown_networks(&mut self, containers: &[ContainerInfo]) {
        let Some(net) = self.network.clone() else {
            return;
        };
        let desired: BTreeSet<String> = self.pods.iter().map(reconcile::pod_uid).collect();
        let in_use: BTreeSet<&str> = containers
            .iter()
            .map(|c| c.config.pod_uid.as_str())
            .collect();
        for uid in net.list() {
            if desired.contains(&uid) || in_use.contains(uid.as_str()) {
                continue;
            }
            match net.teardown(&uid).await {
                Ok(()) => {
                    tracing::info!(uid = %uid, "released a Pod's network");
                    self.networks.remove(&uid);
                }
                Err(e) => {
                    tracing::warn!(uid = %uid, error = %e, "could not release a Pod's network; retrying")
                }
            }
        }
    }

    fn prune_stopping(&mut self, containers: &[ContainerInfo]) {
        self.stopping.retain(|id, since| {
            containers.iter().any(|c| {
                &c.config.id == id
                    && matches!(c.state, ContainerState::Running { .. })
                    && since.elapsed() < c.config.grace_period + STOP_RETRY_SLACK
            })
        });
    }

    async fn execute(
        &mut self,
        actions: Vec<Action>,
        waiting: &mut BTreeMap<ContainerKey, Waiting>,
        containers: &[ContainerInfo],
    ) {
        let mut starts = Vec::new();
        for action in actions {
            match action {
                Action::Start(s) => match self.image_gate(&s) {
                    Gate::Ready => starts.push(*s),
                    Gate::Wait { reason, message } => {
                        waiting.insert(s.key.clone(), Waiting::Failed { reason, message });
                    }
                },
                Action::Stop { id } => {
                    tracing::info!(container = %id, "stopping container");
                    let config = containers
                        .iter()
                        .find(|c| c.config.id == id)
                        .map(|c| &c.config);
                    // A probe's restart has said Killing already. The Pod may be gone
                    // from the desired set (deleted): the container names it.
                    if let Some(c) = config.filter(|_| !self.probe_graces.contains_key(&id)) {
                        let pod = events::PodRef {
                            namespace: &c.pod_namespace,
                            name: &c.pod_name,
                            uid: &c.pod_uid,
                        };
                        let message = format!("Stopping container {}", c.container_name);
                        let event = pod.event(Some(&c.container_name), false, "Killing", message);
                        self.events.push(event);
                    }
                    if let Some(config) = config.filter(|c| c.hooks.pre_stop.is_some()) {
                        // preStop may take up to the grace period: off the loop.
                        self.spawn_pre_stop_then_stop(config.clone());
                        self.stopping.insert(id, Instant::now());
                        continue;
                    }
                    let rt = self.runtime.clone();
                    let stop_id = id.clone();
                    let grace = self.probe_graces.get(&id).copied();
                    let stop = move || match grace {
                        Some(g) => rt.stop_with_grace(&stop_id, g),
                        None => rt.stop(&stop_id),
                    };
                    match tokio::task::spawn_blocking(stop).await {
                        Ok(Ok(())) | Ok(Err(RuntimeError::NotFound { .. })) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(container = %id, error = %e, "could not stop container")
                        }
                        Err(e) => tracing::warn!(container = %id, error = %e, "stop panicked"),
                    }
                    self.stopping.insert(id, Instant::now());
                }
                Action::Remove { id } => {
                    tracing::debug!(container = %id, "removing exited container");
                    let rt = self.runtime.clone();
                    let remove_id = id.clone();
                    match tokio::task::spawn_blocking(move || rt.remove(&remove_id)).await {
                        Ok(Ok(())) | Ok(Err(RuntimeError::NotFound { .. })) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(container = %id, error = %e, "could not remove container")
                        }
                        Err(e) => tracing::warn!(container = %id, error = %e, "remove panicked"),
                    }
                }
                Action::RemoveLog { path } => {
                    let p = path.clone();
                    if let Ok(Err(e)) =
                        tokio::task::spawn_blocking(move || std::fs::remove_file(&p)).await
                    {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(path = %path.display(), error = %e, "could not delete an old log");
                        }
                    }
                }
                Action::RemovePodDir { dir } => {
                    tracing::info!(dir = %dir.display(), "deleting the logs of a removed Pod");
                    let d = dir.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || {
                        crate::volume::unmount_all_under(&d);
                        std::fs::remove_dir_all(&d)
                    })
                    .await
                    {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(dir = %dir.display(), error = %e, "could not delete Pod logs");
                        }
                    }
                }
            }
        }
        // Starts of one round run side by side: each waits for its shim.
        let handles: Vec<_> = starts
            .into_iter()
            .map(|s| {
                let rt = self.runtime.clone();
                tracing::info!(pod = %s.pod, container = %s.config.container_name, id = %s.config.id, restart = s.config.restart_count, "starting container");
                let handle = tokio::task::spawn_blocking(move || {
                    let r = start_container(rt.as_ref(), &s);
                    (s, r)
                });
                handle
            })
            .collect();
        for h in futures_util::future::join_all(handles).await {
            let Ok((s, result)) = h else {
                continue;
            };
            match result {
                Ok(()) => {
                    self.failures.remove(&s.key);
                    if s.config.hooks.post_start.is_some() {
                        self.spawn_post_start(s.config.clone());
                    }
                }
                Err(err) => {
                    let attempts = self.failures.get(&s.key).map_or(0, |f| f.attempts) + 1;
                    let retry_in = match err.reason {
                        // Cheap to retry, and fixed by `punnet-agent image load` at any time.
                        "ErrImageNeverPull" => self.config.resync_interval,
                        _ => BackoffPolicy {
                            base: self.config.restart_backoff_base,
                            max: self.config.restart_backoff_max,
                            reset: self.config.restart_backoff_reset,
                        }
                        .delay(attempts - 1),
                    };
                    tracing::warn!(pod = %s.pod, container = %s.config.container_name, error = %err.message, retry_in = ?retry_in, "could not start container");
                    waiting.insert(
                        s.key.clone(),
                        Waiting::Failed {
                            reason: err.reason.to_string(),
                            message: err.message.clone(),
                        },
                    );
                    self.failures.insert(
                        s.key,
                        StartFailure {
                            reason: err.reason.to_string(),
                            message: err.message,
                            retry_at: SystemTime::now() + retry_in,
                            attempts,
                        },
                    );
                }
            }
        }
    }

    /// Recomputes the status of every desired Pod and of every Pod still stopping;
    /// true when any changed.
    fn update_status(
        &mut self,
        containers: &[ContainerInfo],
        waiting: &BTreeMap<ContainerKey, Waiting>,
    ) -> bool {
        let now = SystemTime::now();
        let host_ip = self.facts.addresses.first().cloned();
        let mut statuses = BTreeMap::new();
        let mut reports = Vec::with_capacity(self.pods.len());
        let desired_uids: BTreeSet<String> = self.pods.iter().map(reconcile::pod_uid).collect();
        // Pods being stopped are reported too, until their last container is removed:
        // that is how the controller learns a terminating Pod is gone.
        let leftovers = podstatus::leftover_pods(&desired_uids, containers);
        let probes: BTreeMap<String, (bool, bool)> = containers
            .iter()
            .filter_map(|c| {
                let s = self.prober.status(&probe_key(&c.config), &c.config.id)?;
                Some((c.config.id.clone(), (s.started, s.ready)))
            })
            .collect();
        for pod in self.pods.iter().chain(leftovers.iter()) {
            let uid = reconcile::pod_uid(pod);
            let pod_ip = match self.networks.get(&uid) {
                Some(n) => Some(n.ip.as_str()),
                None if pod.spec.host_network == Some(true) || self.network.is_none() => {
                    host_ip.as_deref()
                }
                None => None,
            };
            let status = podstatus::pod_status(&StatusInput {
                pod,
                containers,
                waiting,
                previous: self.statuses.get(&uid),
                host_ip: host_ip.as_deref(),
                pod_ip,
                probes: Some(&probes),
                evicted: self.evicted.get(&uid).map(String::as_str),
                now,
            });
            let pod_ref = events::PodRef {
                namespace: pod.metadata.namespace_or_default(),
                name: &pod.metadata.name,
                uid: &uid,
            };
            self.events.extend(events::from_status_change(
                pod_ref,
                self.statuses.get(&uid),
                &status,
            ));
            reports.push(PodReport {
                namespace: pod.metadata.namespace_or_default().to_string(),
                name: pod.metadata.name.clone(),
                uid: uid.clone(),
                status: status.clone(),
                usage: Vec::new(),
            });
            statuses.insert(uid, status);
        }
        let changed = reports != self.reports;
        self.statuses = statuses;
        self.reports = reports;
        changed
    }

    /// The Pod reports with each running container's CPU and memory.
    fn reports_with_usage(&self) -> Vec<PodReport> {
        let containers = self.containers_tx.borrow().clone();
        let mut reports = self.reports.clone();
        for r in &mut reports {
            r.usage = containers
                .iter()
                .filter(|c| c.config.pod_uid == r.uid)
                .filter_map(|c| {
                    let u = self.usage.get(&c.config.id)?;
                    Some(ContainerUsage {
                        container: c.config.container_name.clone(),
                        ..u.clone()
                    })
                })
                .collect();
        }
        reports
    }

    /// Notes an Event about a container (or Pod) of a desired Pod, for the next report.
    fn note(
        &mut self,
        uid: &str,
        container: Option<&str>,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        let Some(pod) = self.pods.iter().find(|p| reconcile::pod_uid(p) == uid) else {
            return;
        };
        let pod_ref = events::PodRef {
            namespace: pod.metadata.namespace_or_default(),
            name: &pod.metadata.name,
            uid,
        };
        let event = pod_ref.event(container, warning, reason, message);
        self.events.push(event);
    }

    /// Counts a refused desired state, logs it (rate-limited) and reports it as a node
    /// Event with the next status.
    fn desired_refused(&mut self, e: &state::DesiredError) {
        let reason = e.reason();
        let message = e.to_string();
        if let Some(held) = self
            .signatures
            .rejected(reason, &message, std::time::Instant::now())
        {
            tracing::warn!(
                error = %message,
                reason,
                rejected = self.signatures.rejected_desired_total,
                not_logged = held,
                "refused a desired state"
            );
        }
        self.update_board();
        let (event_reason, text) = identity::rejection_event(reason);
        self.events.push(punnet_api::wire::AgentEvent {
            warning: true,
            reason: event_reason.to_string(),
            message: text.to_string(),
            count: 1,
            ..Default::default()
        });
    }

    /// Writes `signatures.json` when it changed, at most every 10 s.
    fn write_signatures(&mut self) {
        if let Some(json) = self.signatures.take_if_due(std::time::Instant::now()) {
            let path = self.config.data_dir.join(identity::SIGNATURES_FILE);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = state::write_atomic(&path, &json) {
                    tracing::warn!(error = %e, path = %path.display(), "cannot write the signature status");
                }
            });
        }
    }

    /// Hands the board page the agent's current state.
    fn update_board(&self) {
        let Some(board) = &self.board else {
            return;
        };
        board.update(crate::web::model::Snapshot {
            facts: self.facts.clone(),
            pods: self.pods.clone(),
            reports: self.reports_with_usage(),
            desired: crate::web::model::Desired {
                generation: self.applied_generation,
                epoch: self.applied_epoch,
                received_at: self.desired_received_at.map(podstatus::time),
                source: if self.desired_received_at.is_some() {
                    "controller"
                } else {
                    "local store"
                },
            },
            signatures: crate::web::model::Signatures::of(&self.signatures),
        });
    }

    fn publish_status(&mut self) {
        self.update_board();
        self.write_signatures();
        let events = self.events.take();
        let report = NodeStatusReport {
            node: self.config.node_name.clone(),
            generation_seen: self.applied_generation.unwrap_or(0),
            sent_at: punnet_api::Time::now(),
            facts: self.facts.clone(),
            pods: self.reports_with_usage(),
            events,
        };
        let topic = self.link.topics().status(&self.config.node_name);
        let payload = punnet_api::signing::encode_signed(
            &report,
            &self.config.node_name,
            self.node_key.signing_key(),
        );
        if !self.link.try_publish(topic, payload) {
            // Kept for the next report (the buffer stays bounded).
            self.events.extend(report.events);
            tracing::debug!("status not sent (MQTT link down or busy); the next heartbeat or reconnect repeats it");
        }
    }
}

/// The parts of a desired state besides the Pods.
#[derive(Debug, Clone, Default, PartialEq)]
struct DesiredSources {
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    pod_cidr: Option<String>,
}

impl DesiredSources {
    fn of(d: &DesiredState) -> DesiredSources {
        DesiredSources {
            config_maps: d.config_maps.clone(),
            secrets: d.secrets.clone(),
            pod_cidr: d.pod_cidr.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Outcome {
    acted: bool,
    status_changed: bool,
    requeue_after: Option<Duration>,
}

struct StartError {
    reason: &'static str,
    message: String,
}

/// Prepares volumes and the log directory, then starts the container. Blocking.
fn start_container(runtime: &dyn Runtime, s: &StartContainer) -> Result<(), StartError> {
    for step in &s.prepare {
        crate::volume::prepare(step).map_err(|message| StartError {
            reason: "CreateContainerConfigError",
            message,
        })?;
    }
    if let Some(dir) = s.config.log_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StartError {
            reason: "RunContainerError",
            message: format!("cannot create log directory {}: {e}", dir.display()),
        })?;
    }
    runtime
        .start(&s.config)
        .map(|_| ())
        .map_err(|e| StartError {
            reason: match e {
                RuntimeError::ImageNotPresent { .. } => "ErrImageNeverPull",
                _ => "RunContainerError",
            },
            message: e.to_string(),
        })
}
