//! Shared by the agent's integration tests: a Mosquitto on a free loopback port, a test
//! MQTT client playing the controller, and Pod fixtures. The broker serves MQTT over TLS
//! with a certificate from a test CA (`ca_file`), which every client here trusts.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use punnet_api::manifest::parse;
use punnet_api::object::Object;
use punnet_api::pod::Pod;
use punnet_api::topics::{Topics, MAX_PACKET_SIZE};
use punnet_api::wire::{self, DesiredState, NodeStatusReport};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub const NODE: &str = "test-node";

/// The key the test controller signs desired state with.
pub fn controller_key() -> punnet_api::signing::SigningKey {
    punnet_api::signing::SigningKey::from_seed(&[0xc0; 32])
}

/// Makes an agent with data directory `data_dir` trust the test controller (what
/// enrolment does: writes `controller.pub`).
pub fn trust_test_controller(data_dir: &std::path::Path) {
    punnet_agent::identity::write_controller_key(data_dir, &controller_key().public_key()).unwrap();
}

/// The agent's status from a message on its status topic, checked against its
/// `node.pub` in `data_dir` (the controller's check).
pub fn verified_status(data_dir: &std::path::Path, bytes: &[u8]) -> Option<NodeStatusReport> {
    let text = std::fs::read_to_string(data_dir.join("node.pub")).ok()?;
    let key = punnet_api::signing::parse_public_key_hex(&text).ok()?;
    punnet_api::signing::decode_verified(bytes, NODE, &key).ok()
}

/// A Mosquitto on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
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

/// The test CA and a server certificate for 127.0.0.1 signed by it, made once per test
/// process: (directory holding `ca.pem`, `server.pem`, `server.key`).
fn test_pki() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap().keep();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "punnet agent test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        dir
    })
}

/// The CA file agents under test are given (`--ca`).
pub fn ca_file() -> std::path::PathBuf {
    test_pki().join("ca.pem")
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port())
    }

    /// On a given port: to restart a broker where its clients expect it.
    pub fn start_on(port: u16) -> Mosquitto {
        let pki = test_pki();
        Mosquitto::start_with(
            port,
            &format!(
                "certfile {}\nkeyfile {}\n",
                pki.join("server.pem").display(),
                pki.join("server.key").display()
            ),
        )
    }

    /// Without TLS (for `--allow-plaintext`); `url` is then still `mqtts://`: use
    /// `plain_url`.
    pub fn start_plaintext() -> Mosquitto {
        Mosquitto::start_with(free_port(), "")
    }

    pub fn plain_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn start_with(port: u16, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        // `user root`: the certificate files are in a root-only directory.
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{extra}allow_anonymous true\npersistence false\nuser root\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // A dropped JoinHandle does not stop its task: an old client would keep
        // reconnecting.
        self._loop.abort();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test MQTT client playing the controller: subscribes to the node's topics and
/// hands over every message.
pub struct Controller {
    /// Sent as the node's Pod range with every desired state.
    pub pod_cidr: Option<String>,
    /// Sent with every desired state, as the controller sends what Pods reference.
    pub config_maps: Vec<punnet_api::ConfigMap>,
    pub secrets: Vec<punnet_api::Secret>,
    pub client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    pub topics: Topics,
    _loop: JoinHandle<()>,
}

impl Controller {
    pub async fn connect(port: u16) -> Controller {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut options = MqttOptions::new(format!("test-controller-{n}"), "127.0.0.1", port);
        options.set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
        let tls = punnet_agent::tls::client_config(Some(&ca_file())).unwrap();
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, messages) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let topics = Topics::default();
        client
            .subscribe(
                format!("{}/nodes/{NODE}/#", topics.prefix()),
                QoS::AtLeastOnce,
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("subscribed")
            .unwrap();
        Controller {
            pod_cidr: None,
            config_maps: Vec::new(),
            secrets: Vec::new(),
            client,
            messages,
            topics,
            _loop: task,
        }
    }

    pub async fn publish_desired(&self, generation: u64, pods: Vec<Pod>) {
        let msg = DesiredState {
            node: NODE.into(),
            generation,
            epoch: 1,
            pods,
            pod_cidr: self.pod_cidr.clone(),
            config_maps: self.config_maps.clone(),
            secrets: self.secrets.clone(),
        };
        self.client
            .publish(
                self.topics.desired(NODE),
                QoS::AtLeastOnce,
                true,
                punnet_api::signing::encode_signed(&msg, NODE, &controller_key()),
            )
            .await
            .unwrap();
    }

    /// Publishes raw bytes on the node's desired topic, retained (forged, replayed
    /// or garbage messages).
    pub async fn publish_desired_raw(&self, bytes: Vec<u8>) {
        self.client
            .publish(self.topics.desired(NODE), QoS::AtLeastOnce, true, bytes)
            .await
            .unwrap();
    }

    /// Waits for a message on `topic` that `accept` likes.
    pub async fn wait_for<T>(
        &mut self,
        topic: &str,
        within: Duration,
        mut accept: impl FnMut(&[u8]) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.messages.recv()).await;
            let (t, payload) = next
                .unwrap_or_else(|_| panic!("no matching message on {topic} within {within:?}"))
                .expect("controller loop ended");
            if t == topic {
                if let Some(v) = accept(&payload) {
                    return v;
                }
            }
        }
    }

    pub async fn wait_status(
        &mut self,
        within: Duration,
        mut accept: impl FnMut(&NodeStatusReport) -> bool,
    ) -> NodeStatusReport {
        let topic = self.topics.status(NODE);
        self.wait_for(&topic, within, |b| {
            let report: NodeStatusReport = wire::decode(b).ok()?;
            accept(&report).then_some(report)
        })
        .await
    }

    pub async fn wait_online(&mut self, value: &str, within: Duration) {
        let topic = self.topics.online(NODE);
        self.wait_for(&topic, within, |b| (b == value.as_bytes()).then_some(()))
            .await
    }
}

pub fn pod(name: &str, uid: &str, policy: &str, command: &str) -> Pod {
    let text = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, uid: {uid}}}
spec:
  nodeName: {NODE}
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: busybox:1.36
    command: [sh, -c, "{command}"]
    env: [{{name: GREETING, value: hello}}]
    resources: {{limits: {{memory: 32Mi}}}}
"#
    );
    match parse(&text).unwrap().remove(0) {
        Object::Pod(p) => p,
        _ => unreachable!(),
    }
}

pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
