//! Shared pieces of the control-loop tests: the controller's loops over a temporary
//! store, a fake agent speaking the wire protocol over a real broker, a Mosquitto
//! process on a free loopback port, and polling helpers. Everything speaks MQTT over
//! TLS, trusting one test CA made by the controller's own generator (`test_tls`);
//! `*_plaintext` variants cover `--allow-plaintext`.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use punnet_api::signing::{encode_signed, SigningKey};
use punnet_api::topics::{Topics, MAX_PACKET_SIZE, OFFLINE, ONLINE};
use punnet_api::wire::{decode, DesiredState, NodeFacts, NodeStatusReport, PodReport};
use punnet_api::{Container, Deployment, PodStatus, Time};
use punnet_controller::deployment::{self, DeploymentConfig};
use punnet_controller::logproxy::{LogProxy, LogProxyConfig};
use punnet_controller::mqtt::MqttSettings;
use punnet_controller::nodeipam;
use punnet_controller::nodesync::{self, NodeSyncConfig};
use punnet_controller::podcidr::PodCidrs;
use punnet_controller::replicaset;
use punnet_controller::scheduling::{self, SchedulingConfig};
use punnet_controller::signing::ControllerKey;
use punnet_controller::store::Store;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The test process's TLS material: a CA and a server certificate for 127.0.0.1 made by
/// `punnet_controller::tls::prepare`, shared by every broker and client here.
pub struct TestTls {
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server: punnet_controller::tls::ServerTls,
    pub client: Arc<rustls::ClientConfig>,
}

pub fn test_tls() -> &'static TestTls {
    static TLS: std::sync::OnceLock<TestTls> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        // Kept for the whole test process (brokers read the files).
        let dir = tempfile::tempdir().unwrap().keep();
        let server =
            punnet_controller::tls::prepare(&dir, &punnet_controller::tls::TlsOptions::default())
                .unwrap();
        let ca_file = dir.join(punnet_controller::tls::CA_FILE);
        let client = punnet_controller::tls::client::load_client_config(Some(&ca_file)).unwrap();
        TestTls {
            cert_file: dir.join(punnet_controller::tls::CERT_FILE),
            key_file: dir.join(punnet_controller::tls::KEY_FILE),
            dir,
            ca_file,
            server,
            client,
        }
    })
}

/// MQTT options for a test client of the broker on `port`, over TLS.
pub fn mqtt_options(id: impl Into<String>, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    punnet_controller::tls::client::apply(&mut o, Some(&test_tls().client));
    let logins = BROKER_LOGINS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((user, pass)) = logins.iter().find(|(p, _)| *p == port).map(|(_, l)| l) {
        o.set_credentials(user.clone(), pass.clone());
    }
    o
}

/// Logins the test clients use on a broker port that asks for one (a controller's
/// embedded broker admits only known logins).
static BROKER_LOGINS: Mutex<Vec<(u16, (String, String))>> = Mutex::new(Vec::new());

#[allow(dead_code)]
pub fn set_broker_login(port: u16, user: &str, password: &str) {
    let mut logins = BROKER_LOGINS.lock().unwrap_or_else(|p| p.into_inner());
    logins.retain(|(p, _)| *p != port);
    logins.push((port, (user.to_string(), password.to_string())));
}

/// The embedded broker as the controller runs it: TLS on `port` (the gate) in front of
/// rumqttd on a loopback port, without logins.
pub async fn embedded_broker(port: u16) {
    use punnet_controller::broker_gate::{self, Gate, Version};
    let inner = broker_gate::free_loopback_port().unwrap();
    punnet_controller::broker::start(inner).unwrap();
    let gate = Gate {
        auth: None,
        scope: punnet_controller::acl::Scope::new(punnet_api::topics::DEFAULT_PREFIX, None),
        version: Version::V4,
        inner,
    };
    broker_gate::listen(
        format!("127.0.0.1:{port}").parse().unwrap(),
        std::sync::Arc::new(gate),
        Some(test_tls().server.mqtt.clone()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
}

pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768+): a port a test binds again after a
    // restart must not be taken meanwhile as the local port of some client's outgoing
    // connection, which ports handed out by `bind(:0)` are exposed to.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn eventually_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The key a fake agent signs its status with: derived from its name, so that every
/// controller a test starts can be told it (see `trust_fake_agents`).
pub fn agent_key(node: &str) -> SigningKey {
    let mut seed = [0x5a; 32];
    for (i, b) in node.bytes().enumerate() {
        seed[i % 32] ^= b.rotate_left(i as u32 / 32);
    }
    seed[31] ^= node.len() as u8;
    SigningKey::from_seed(&seed)
}

/// A status report as `node`'s agent sends it: signed with `agent_key(node)`.
pub fn signed_status(report: &NodeStatusReport) -> Vec<u8> {
    encode_signed(report, &report.node, &agent_key(&report.node))
}

/// The controllers and fake agents of this test binary, by broker port: every fake
/// agent's key is registered with the controllers on its broker (including one started
/// later, as after a controller restart), as enrolment would.
type Fleet = (Vec<(u16, std::sync::Weak<Store>)>, Vec<(u16, String)>);
static FLEET: Mutex<Fleet> = Mutex::new((Vec::new(), Vec::new()));

fn trust_fake_agents(port: u16, store: Option<&Arc<Store>>, node: Option<&str>) {
    let mut fleet = FLEET.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = store {
        fleet.0.push((port, Arc::downgrade(s)));
    }
    fleet.0.retain(|(_, s)| s.strong_count() > 0);
    let nodes: Vec<String> = match node {
        // A new agent: with the controllers already there.
        Some(n) => {
            fleet.1.push((port, n.to_string()));
            vec![n.to_string()]
        }
        // A new controller: every agent of its broker so far.
        None => fleet
            .1
            .iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, n)| n.clone())
            .collect(),
    };
    for (p, s) in &fleet.0 {
        let Some(s) = s.upgrade().filter(|_| *p == port) else {
            continue;
        };
        if store.is_some_and(|new| !Arc::ptr_eq(new, &s)) {
            continue;
        }
        for n in &nodes {
            s.node_keys()
                .register(n, agent_key(n).public_key())
                .unwrap();
        }
    }
}

/// The controller's loops over a temporary store, talking to the broker on `port`.
pub struct Controller {
    pub store: Arc<Store>,
    /// Signs desired state; its public half is what agents trust.
    pub key: Arc<ControllerKey>,
    pub logs: Arc<LogProxy>,
    pub cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Controller {
    pub fn start(port: u16) -> Controller {
        Controller::start_with_grace(port, Duration::from_secs(10))
    }

    pub fn start_with_grace(port: u16, node_grace: Duration) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        trust_fake_agents(port, Some(&store), None);
        let key = Arc::new(ControllerKey::load_or_create(dir.path()).unwrap());
        let cancel = CancellationToken::new();
        let logs = Arc::new(LogProxy::new(LogProxyConfig {
            answer_timeout: Duration::from_secs(1),
            refresh: Duration::from_millis(300),
        }));
        let mut mqtt = MqttSettings::new("127.0.0.1", port);
        mqtt.secure = true;
        mqtt.tls = Some(test_tls().client.clone());
        mqtt.min_backoff = Duration::from_millis(50);
        mqtt.max_backoff = Duration::from_millis(300);
        let sync = NodeSyncConfig {
            node_grace,
            ..NodeSyncConfig::new(mqtt, key.clone())
        };
        let tasks = vec![
            tokio::spawn(deployment::run_with(
                store.clone(),
                DeploymentConfig {
                    resync: Duration::from_secs(2),
                    ..Default::default()
                },
                cancel.clone(),
            )),
            tokio::spawn(replicaset::run_with(
                store.clone(),
                DeploymentConfig {
                    resync: Duration::from_secs(2),
                    ..Default::default()
                },
                cancel.clone(),
            )),
            tokio::spawn(scheduling::run_with(
                store.clone(),
                SchedulingConfig {
                    retry: Duration::from_secs(1),
                    ..Default::default()
                },
                cancel.clone(),
            )),
            tokio::spawn(nodeipam::run(
                store.clone(),
                PodCidrs::default(),
                cancel.clone(),
            )),
            tokio::spawn(nodesync::run_with(
                store.clone(),
                sync,
                logs.clone(),
                cancel.clone(),
            )),
        ];
        Controller {
            store,
            key,
            logs,
            cancel,
            tasks,
            _dir: dir,
        }
    }

    /// Cancels every loop and checks that each one returns promptly.
    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("a loop did not stop within 5 s of cancellation")
                .unwrap();
        }
    }
}

pub fn deployment(name: &str, replicas: i32) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.name = name.into();
    d.metadata.namespace = Some("default".into());
    d.spec.replicas = Some(replicas);
    d.spec
        .selector
        .match_labels
        .insert("app".into(), name.into());
    d.spec
        .template
        .metadata
        .labels
        .insert("app".into(), name.into());
    let mut c = Container {
        name: name.into(),
        image: "busybox:1.36".into(),
        ..Default::default()
    };
    c.resources.requests.insert("memory".into(), "32Mi".into());
    d.spec.template.spec.containers.push(c);
    d
}

/// An agent as the controller sees one: reports node facts and Pod states every 200 ms,
/// and follows its retained desired state.
pub struct FakeAgent {
    pub node: String,
    client: AsyncClient,
    topics: Topics,
    /// The Pods reported with every heartbeat.
    pub pods: Arc<Mutex<Vec<PodReport>>>,
    pub desired: watch::Receiver<Option<DesiredState>>,
    heartbeat: CancellationToken,
    stop: CancellationToken,
}

impl FakeAgent {
    pub fn start(node: &str, port: u16) -> FakeAgent {
        trust_fake_agents(port, None, Some(node));
        let topics = Topics::default();
        let mut o = mqtt_options(format!("agent-{node}"), port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
            .set_last_will(LastWill::new(
                topics.online(node),
                OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let (desired_tx, desired) = watch::channel(None);
        let stop = CancellationToken::new();
        let heartbeat = CancellationToken::new();
        let pods: Arc<Mutex<Vec<PodReport>>> = Arc::default();
        {
            let (client, topics, node, stop) = (
                client.clone(),
                topics.clone(),
                node.to_string(),
                stop.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let ev = tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = eventloop.poll() => ev,
                    };
                    match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let c = client.clone();
                            let (desired, online) = (topics.desired(&node), topics.online(&node));
                            tokio::spawn(async move {
                                let _ = c.subscribe(desired, QoS::AtLeastOnce).await;
                                let _ = c.publish(online, QoS::AtLeastOnce, true, ONLINE).await;
                            });
                        }
                        Ok(Event::Incoming(Packet::Publish(p)))
                            if p.topic == topics.desired(&node) =>
                        {
                            let msg = decode::<DesiredState>(&p.payload)
                                .expect("controller sent a bad desired state");
                            desired_tx.send_replace(Some(msg));
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
        }
        {
            let (client, topics, node, pods, stop) = (
                client.clone(),
                topics.clone(),
                node.to_string(),
                pods.clone(),
                heartbeat.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let report = NodeStatusReport {
                        node: node.clone(),
                        generation_seen: 0,
                        sent_at: Time::now(),
                        facts: facts(&node),
                        pods: pods.lock().unwrap().clone(),
                        events: Vec::new(),
                    };
                    let _ = client
                        .publish(
                            topics.status(&node),
                            QoS::AtLeastOnce,
                            false,
                            signed_status(&report),
                        )
                        .await;
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            });
        }
        FakeAgent {
            node: node.to_string(),
            client,
            topics,
            pods,
            desired,
            heartbeat,
            stop,
        }
    }

    /// The newest desired state received, if it has `n` Pods.
    pub fn desired_with(&self, n: usize) -> Option<DesiredState> {
        self.desired.borrow().clone().filter(|d| d.pods.len() == n)
    }

    /// Reports every desired Pod Running and Ready from now on, and no other (as if
    /// the containers of Pods no longer desired were stopped).
    pub fn run_desired_pods(&self) {
        let desired = self
            .desired
            .borrow()
            .clone()
            .unwrap_or_else(|| panic!("{} has no desired state", self.node));
        let reports = desired
            .pods
            .iter()
            .map(|p| PodReport {
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone().unwrap_or_default(),
                status: running(),
                usage: Vec::new(),
            })
            .collect();
        *self.pods.lock().unwrap() = reports;
    }

    /// Stops reporting but stays connected: a hung agent, no last will.
    pub fn stop_reporting(&self) {
        self.heartbeat.cancel();
    }

    /// Stops reporting and sets the retained `online` topic to `offline`, as a clean
    /// agent shutdown does.
    pub async fn go_offline(&self) {
        self.heartbeat.cancel();
        self.client
            .publish(
                self.topics.online(&self.node),
                QoS::AtLeastOnce,
                true,
                OFFLINE,
            )
            .await
            .unwrap();
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.heartbeat.cancel();
        self.stop.cancel();
    }
}

pub fn facts(node: &str) -> NodeFacts {
    NodeFacts {
        hostname: node.into(),
        arch: "arm64".into(),
        os: "linux".into(),
        os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel_version: "6.6.51+rpt-rpi-v8".into(),
        machine_id: format!("machine-{node}"),
        cpus: 4,
        memory_bytes: 1 << 30,
        addresses: vec!["192.168.1.50".into()],
        agent_version: "0.1.0".into(),
        labels: Default::default(),
        cgroup_version: 2,
        memory_cgroup: true,
        platform: "arm64".into(),
        ..NodeFacts::default()
    }
}

pub fn running() -> PodStatus {
    // With nanoseconds, as real agents report times (the store keeps whole seconds).
    let mut s = PodStatus {
        phase: Some("Running".into()),
        start_time: Some(Time::now()),
        ..Default::default()
    };
    for type_ in ["Ready", "ContainersReady"] {
        s.conditions.push(punnet_api::PodCondition {
            type_: type_.into(),
            status: "True".into(),
            ..Default::default()
        });
    }
    s
}

/// The retained message on `topic`, read by a fresh client (what a reconnecting agent
/// would get), or `None` if there is none within `wait`.
pub async fn read_retained(port: u16, topic: &str, wait: Duration) -> Option<Vec<u8>> {
    let mut o = mqtt_options(format!("reader-{}", rand_id()), port);
    o.set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    let (client, mut eventloop) = AsyncClient::new(o, 10);
    client.subscribe(topic, QoS::AtLeastOnce).await.ok()?;
    let got = tokio::time::timeout(wait, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topic => {
                    return Some(p.payload.to_vec())
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    let _ = client.try_disconnect();
    got
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// A Mosquitto broker on a loopback port, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Mosquitto serving MQTT over TLS with a certificate from the test CA.
    pub fn start(port: u16) -> Mosquitto {
        let tls = test_tls();
        Mosquitto::start_with(
            port,
            &format!(
                "certfile {}\nkeyfile {}\n",
                tls.cert_file.display(),
                tls.key_file.display()
            ),
        )
    }

    /// Mosquitto without TLS.
    pub fn start_plaintext(port: u16) -> Mosquitto {
        Mosquitto::start_with(port, "")
    }

    fn start_with(port: u16, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        // `user root`: otherwise it drops to the `mosquitto` user when started as root.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{extra}allow_anonymous true\npersistence false\nuser root\n"
            ),
        )
        .unwrap();
        let child = spawn_mosquitto(&conf);
        wait_listening(port);
        Mosquitto {
            port,
            child,
            conf,
            _dir: dir,
        }
    }

    /// Kills the broker (its retained messages and sessions are lost) and starts it again
    /// on the same port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_mosquitto(&self.conf);
        wait_listening(self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_mosquitto(conf: &std::path::Path) -> Child {
    Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed")
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The flow every broker must carry: registration, a Deployment scheduled and published,
/// Pods reported Running, scaling, deletion, and a node going offline.
pub async fn basic_flow(port: u16) {
    use punnet_api::{Node, Pod};
    let wait = Duration::from_secs(10);
    let ctl = Controller::start(port);
    let agent = FakeAgent::start("n1", port);
    let store = ctl.store.clone();

    // Self-registration: the first report creates a Ready Node with the agent's facts.
    let node: Node = eventually("Node n1 registered and Ready", wait, || {
        store
            .get::<Node>(None, "n1")
            .unwrap()
            .filter(|n| n.is_ready())
    })
    .await;
    assert_eq!(node.metadata.labels["kubernetes.io/arch"], "arm64");
    assert_eq!(node.status.allocatable["memory"], "1Gi");
    // The new Node gets an (empty) desired set straight away.
    eventually("empty desired state for n1", wait, || agent.desired_with(0)).await;

    // A Deployment of 2: two Pods named web-<hash>-<5 chars>, bound to n1, one message.
    store.create(deployment("web", 2)).unwrap();
    let pods: Vec<Pod> = eventually("2 Pods bound to n1", wait, || {
        let (pods, _) = store.list::<Pod>(Some("default")).unwrap();
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p.spec.node_name.as_deref() == Some("n1")))
        .then_some(pods)
    })
    .await;
    for p in &pods {
        let parts: Vec<&str> = p.metadata.name.split('-').collect();
        assert_eq!(parts.len(), 3, "{}", p.metadata.name);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len()),
            ("web", 10, 5),
            "{}",
            p.metadata.name
        );
        assert_eq!(p.metadata.labels["pod-template-hash"], parts[1]);
    }
    let desired = eventually("desired state with both Pods", wait, || {
        agent.desired_with(2)
    })
    .await;
    let mut names: Vec<String> = desired
        .pods
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    let mut expected: Vec<String> = pods.iter().map(|p| p.metadata.name.clone()).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(
        desired
            .pods
            .iter()
            .all(|p| p.status == PodStatus::default()),
        "status is cleared"
    );
    let topic = Topics::default().desired("n1");
    let retained = read_retained(port, &topic, Duration::from_secs(3))
        .await
        .expect("a retained desired state");
    // Signed with the controller's key, for this node only.
    let checked: DesiredState =
        punnet_api::signing::decode_verified(&retained, "n1", &ctl.key.public_key()).unwrap();
    assert_eq!(checked.pods.len(), 2);

    // The agent runs them: Pods Running, Deployment ready. Status-only: no new desired.
    let generation = desired.generation;
    agent.run_desired_pods();
    eventually("Deployment web readyReplicas 2", wait, || {
        let d: Deployment = store.get(Some("default"), "web").unwrap()?;
        (d.status.ready_replicas == 2 && d.status.available_replicas == 2).then_some(())
    })
    .await;
    let (pods, _) = store.list::<Pod>(Some("default")).unwrap();
    assert!(pods.iter().all(|p| p.phase() == "Running"));
    assert!(pods.iter().all(|p| p
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled")));
    // An idle fleet writes nothing: heartbeats every 200 ms change no stored object.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revision = store.revision();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        store.revision(),
        revision,
        "heartbeats must not write to the store"
    );
    assert_eq!(
        agent.desired.borrow().as_ref().unwrap().generation,
        generation,
        "status must not republish"
    );

    // Scale to 1.
    store
        .modify::<Deployment>(Some("default"), "web", |d| d.spec.replicas = Some(1))
        .unwrap();
    let one = eventually("desired state with 1 Pod", wait, || agent.desired_with(1)).await;
    assert!(one.generation > generation);
    // The extra Pod is terminating: still listed while the agent reports it.
    eventually("1 Pod terminating", wait, || {
        let (pods, _) = store.list::<Pod>(None).unwrap();
        let terminating = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .count();
        (pods.len() == 2 && terminating == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store.list::<Pod>(None).unwrap().0.len(),
        2,
        "a Pod the agent still reports stays"
    );
    agent.run_desired_pods();
    eventually("1 Pod left", wait, || {
        (store.list::<Pod>(None).unwrap().0.len() == 1).then_some(())
    })
    .await;

    // Delete the Deployment: its Pods show terminating and leave the node's desired
    // set; they are gone once the agent stops reporting them.
    store
        .delete::<Deployment>(Some("default"), "web", None)
        .unwrap();
    eventually("Pods terminating", wait, || {
        let (pods, _) = store.list::<Pod>(None).unwrap();
        (!pods.is_empty()
            && pods.iter().all(|p| {
                p.metadata.deletion_timestamp.is_some() && p.display_status() == "Terminating"
            }))
        .then_some(())
    })
    .await;
    eventually("empty desired state", wait, || agent.desired_with(0)).await;
    assert_eq!(store.list::<Pod>(None).unwrap().0.len(), 1);
    agent.run_desired_pods();
    eventually("Pods deleted", wait, || {
        store.list::<Pod>(None).unwrap().0.is_empty().then_some(())
    })
    .await;

    // A node that goes offline: NotReady at once, its Pods Unknown.
    store.create(deployment("db", 1)).unwrap();
    eventually("desired state with the db Pod", wait, || {
        agent.desired_with(1)
    })
    .await;
    agent.run_desired_pods();
    eventually("db Pod Running", wait, || {
        let (pods, _) = store.list::<Pod>(None).unwrap();
        (pods.len() == 1 && pods[0].phase() == "Running").then_some(())
    })
    .await;
    agent.go_offline().await;
    let node: Node = eventually("Node n1 NotReady", wait, || {
        store
            .get::<Node>(None, "n1")
            .unwrap()
            .filter(|n| !n.is_ready())
    })
    .await;
    let ready = node.condition("Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("Unknown", Some("NodeStatusUnknown"))
    );
    let pod: Pod = eventually("db Pod Unknown", wait, || {
        let (pods, _) = store.list::<Pod>(None).unwrap();
        pods.into_iter().find(|p| p.phase() == "Unknown")
    })
    .await;
    assert_eq!(pod.status.reason.as_deref(), Some("NodeLost"));
    assert!(pod.status.message.as_deref().unwrap().contains("n1"));
    assert!(!pod.is_ready());

    drop(agent);
    ctl.stop().await;
}
