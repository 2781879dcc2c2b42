//! Garbage on every topic the controller and an agent subscribe to: random bytes, empty,
//! truncated and oversize envelopes, wrong versions and kinds, valid envelopes with
//! garbage payloads, a huge payload, deep JSON and invalid UTF-8. Afterwards both are
//! still running and still work: the REST API answers, and a new Pod is scheduled to the
//! agent's node and reported Running.
//!
//! The topics are not listed here: a recording proxy sits between the clients and the
//! embedded broker and notes every SUBSCRIBE, so a subscription added to the controller or
//! the agent is covered without touching this test. The controller is `punnet_controller::run`
//! (pointed at the proxy in front of the same embedded rumqttd that `run` starts by
//! itself); the agent is `punnet_agent::run_with_runtime` with the recording fake runtime,
//! so no root and no containers are needed.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use punnet_agent::runtime::fake::FakeRuntime;
use punnet_agent::AgentConfig;
use punnet_api::topics::{Topics, MAX_PACKET_SIZE};
use punnet_api::wire::{
    self, DesiredState, Envelope, LogChunk, LogRequest, MessageKind, NodeFacts, NodeStatusReport,
    PROTOCOL_VERSION,
};
use punnet_api::Time;
use punnet_controller::ControllerConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const NODE: &str = "garbage-node";

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_subscribed_topic_leaves_controller_and_agent_working() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
    let broker_addr = free_addr();
    punnet_controller::broker::start(broker_addr).unwrap();
    let recorder = SubscriptionRecorder::start(broker_addr).await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = ControllerConfig::new(dir.path().join("controller"));
    config.http = free_addr();
    config.mqtt = free_addr();
    config.broker = Some(format!("mqtt://127.0.0.1:{}", recorder.port));
    config.allow_plaintext = true;
    let (stop_controller, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(punnet_controller::run(config.clone(), async {
        let _ = stopped.await;
    }));

    let mut agent_config = AgentConfig::new(NODE);
    agent_config.broker = format!("mqtt://127.0.0.1:{}", recorder.port);
    agent_config.data_dir = dir.path().join("agent");
    agent_config.heartbeat_interval = Duration::from_secs(1);
    agent_config.keep_alive = Duration::from_secs(5);
    agent_config.pod_network = false;
    agent_config.allow_plaintext = true;
    // The agent trusts the controller's signing key and the controller knows the agent's
    // (as enrolment would arrange): only the garbage is unsigned or forged.
    agent_config.controller_key = Some(config.data_dir.join("controller.pub"));
    let api = Api::new(&config).await;
    let node_key = punnet_agent::identity::NodeKey::load_or_create(&agent_config.data_dir).unwrap();
    api.register_key(NODE, &node_key.public_key()).await;
    let fake = Arc::new(FakeRuntime::new());
    let (stop_agent, agent_stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(punnet_agent::run_with_runtime(
        agent_config,
        fake.clone(),
        async {
            let _ = agent_stopped.await;
        },
    ));

    api.wait_node_ready(Duration::from_secs(30)).await;

    // Every subscription the two made, which must at least be the ones known today.
    let topics = Topics::default();
    let known = [
        topics.all_status(),
        topics.all_online(),
        topics.all_log_replies(),
        topics.desired(NODE),
        topics.log_request(NODE),
    ];
    let filters = wait_for(
        "the controller's and the agent's subscriptions",
        Duration::from_secs(10),
        || {
            let f = recorder.filters();
            known.iter().all(|k| f.contains(k)).then_some(f)
        },
    )
    .await;

    let targets: BTreeSet<String> = filters.iter().flat_map(|f| concrete(f)).collect();
    let payloads = garbage();
    let publisher = Publisher::connect(broker_addr, "garbage-publisher").await;
    for topic in &targets {
        for payload in &payloads {
            publisher.publish(topic, payload.clone()).await;
        }
    }
    // Over the broker's packet limit: the broker drops that client, nobody else.
    let oversize = Publisher::connect(broker_addr, "garbage-oversize").await;
    oversize
        .publish(&topics.status(NODE), vec![0xAB; MAX_PACKET_SIZE + 1])
        .await;
    publisher.flush().await;

    // Both are still there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!controller.is_finished(), "the controller stopped");
    assert!(!agent.is_finished(), "the agent stopped");
    api.wait_node_ready(Duration::from_secs(10)).await;

    // And both still work: a new Pod is scheduled to the node, started and reported Running.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "after-garbage", "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36",
                                 "command": ["sleep", "1000"]}]}
    });
    api.post("/api/v1/namespaces/default/pods", &pod).await;
    let running = wait_for_async("Pod after-garbage Running", Duration::from_secs(30), || {
        api.get("/api/v1/namespaces/default/pods/after-garbage")
    })
    .await;
    assert_eq!(running["spec"]["nodeName"], NODE);
    assert!(fake.starts().iter().any(|s| s.pod_name == "after-garbage"));

    let _ = stop_agent.send(());
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent stops within 10 s")
        .unwrap()
        .expect("the agent ends without an error");
    let _ = stop_controller.send(());
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .expect("the controller stops within 10 s")
        .unwrap()
        .expect("the controller ends without an error");
}

/// The topics a filter stands for: `+` is the live node's name (so its real handlers
/// run) and a name nobody uses; `#` is one level and two.
fn concrete(filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (plus, hash) in [(NODE, "x"), ("ghost-node", "x/y")] {
        let levels: Vec<&str> = filter
            .split('/')
            .map(|l| match l {
                "+" => plus,
                "#" => hash,
                l => l,
            })
            .collect();
        out.push(levels.join("/"));
    }
    out.dedup();
    out
}

/// Deterministic noise (xorshift), so a failure can be reproduced.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn envelope(version: u16, kind: MessageKind, payload: Vec<u8>) -> Vec<u8> {
    wire::encode_envelope(&Envelope {
        version,
        kind,
        payload,
        signature: Vec::new(),
    })
}

/// Every kind of bad input, none of it a message a receiver should act on: valid
/// messages only name another node than the one whose topic they land on.
fn garbage() -> Vec<Vec<u8>> {
    let desired = wire::encode(&DesiredState {
        node: "someone-else".into(),
        generation: u64::MAX,
        ..Default::default()
    });
    let status = wire::encode(&NodeStatusReport {
        node: "someone-else".into(),
        generation_seen: 0,
        sent_at: Time::now(),
        facts: NodeFacts::default(),
        pods: Vec::new(),
        events: Vec::new(),
    });
    let chunk = wire::encode(&LogChunk {
        id: "no-such-request".into(),
        seq: 9,
        data: b"garbage\n".to_vec(),
        done: true,
        error: None,
    });
    let request = wire::encode(&LogRequest {
        id: "garbage".into(),
        namespace: "default".into(),
        pod: "no-such-pod".into(),
        container: None,
        follow: false,
        tail_lines: Some(1),
        cancel: false,
    });
    let version = postcard::to_stdvec(&PROTOCOL_VERSION).unwrap();
    let kinds = [
        MessageKind::DesiredState,
        MessageKind::NodeStatus,
        MessageKind::LogRequest,
        MessageKind::LogChunk,
    ];
    let mut out = vec![
        Vec::new(),
        vec![0],
        vec![0xff],
        noise(1, 16),
        noise(2, 1024),
        noise(3, 64 * 1024),
        version.clone(),
        // Oversize: a payload length of 2^32-1 with three bytes behind it.
        [
            version.clone(),
            vec![0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3],
        ]
        .concat(),
        // A version varint that never ends.
        vec![0xff; 32],
        desired[..desired.len() / 2].to_vec(),
        desired[..desired.len() - 1].to_vec(),
        [desired.clone(), noise(4, 100)].concat(),
        desired,
        status,
        chunk,
        request,
        // A huge payload, just under the packet limit.
        noise(5, MAX_PACKET_SIZE - 64 * 1024),
        // Text topics: invalid UTF-8, almost-keywords, JSON that is deep, cut or wrong.
        b"offline\xff".to_vec(),
        b"\xc3\x28{\"kind\":\"Pod\"}".to_vec(),
        b"{\"apiVersion\":\"v1\",\"kind\":\"\xff\xfe\"}".to_vec(),
        b"ONLINE".to_vec(),
        b"{\"apiVersion\":\"v1\",\"kind\":".to_vec(),
        "[".repeat(100_000).into_bytes(),
        "- ".repeat(50_000).into_bytes(),
        b"a: &a [*a, *a, *a, *a, *a, *a, *a, *a, *a]".to_vec(),
        b"null".to_vec(),
        b"{}".to_vec(),
    ];
    for v in [0, 1, PROTOCOL_VERSION + 1, u16::MAX] {
        out.push(envelope(v, MessageKind::DesiredState, vec![1, 2, 3]));
    }
    for (i, kind) in kinds.into_iter().enumerate() {
        out.push(envelope(PROTOCOL_VERSION, kind, noise(10 + i as u64, 200)));
        out.push(envelope(PROTOCOL_VERSION, kind, Vec::new()));
        out.push(envelope(PROTOCOL_VERSION, kind, vec![0xff; 40]));
    }
    // A kind beyond the enum.
    out.push([version, vec![9, 0, 0]].concat());
    out
}

/// A plain MQTT client straight to the broker (not through the recorder).
struct Publisher {
    client: AsyncClient,
    acked: Arc<Mutex<usize>>,
    sent: Mutex<usize>,
}

impl Publisher {
    async fn connect(broker: SocketAddr, id: &str) -> Publisher {
        let mut o = MqttOptions::new(id, broker.ip().to_string(), broker.port());
        o.set_max_packet_size(2 * MAX_PACKET_SIZE, 2 * MAX_PACKET_SIZE)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let acked: Arc<Mutex<usize>> = Arc::default();
        let (up_tx, up) = oneshot::channel();
        let mut up_tx = Some(up_tx);
        let counter = acked.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = up_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => *counter.lock().unwrap() += 1,
                    Ok(_) => {}
                    // The oversize client is meant to be dropped: stop, do not reconnect.
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), up)
            .await
            .expect("connected to the broker")
            .unwrap();
        Publisher {
            client,
            acked,
            sent: Mutex::new(0),
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        *self.sent.lock().unwrap() += 1;
    }

    /// Waits until the broker acknowledged everything published.
    async fn flush(&self) {
        let sent = *self.sent.lock().unwrap();
        wait_for(
            "the broker to take the garbage",
            Duration::from_secs(60),
            || (*self.acked.lock().unwrap() >= sent).then_some(()),
        )
        .await;
    }
}

/// A TCP proxy in front of the broker that passes every byte through and records the
/// topic filters of every SUBSCRIBE its clients send (MQTT 3.1.1 and 5).
struct SubscriptionRecorder {
    port: u16,
    filters: Arc<Mutex<BTreeSet<String>>>,
}

impl SubscriptionRecorder {
    async fn start(upstream: SocketAddr) -> SubscriptionRecorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let filters: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let seen = filters.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_broker, to_broker) = broker.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
                });
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = relay_client(&mut from_client, to_broker, &seen).await;
                });
            }
        });
        SubscriptionRecorder { port, filters }
    }

    fn filters(&self) -> BTreeSet<String> {
        self.filters.lock().unwrap().clone()
    }
}

/// Client → broker, packet by packet.
async fn relay_client(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: &Mutex<BTreeSet<String>>,
) -> std::io::Result<()> {
    let mut v5 = false;
    loop {
        let first = from.read_u8().await?;
        let mut header = vec![first];
        let mut len = 0usize;
        for shift in (0..28).step_by(7) {
            let b = from.read_u8().await?;
            header.push(b);
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        from.read_exact(&mut body).await?;
        match first >> 4 {
            // CONNECT: protocol name (length-prefixed), then the level: 5 is MQTT 5.
            1 => {
                let name_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                v5 = body.get(2 + name_len) == Some(&5);
            }
            8 => seen.lock().unwrap().extend(subscribe_filters(&body, v5)),
            _ => {}
        }
        to.write_all(&header).await?;
        to.write_all(&body).await?;
    }
}

/// The filters in a SUBSCRIBE body: packet id, (MQTT 5: properties), then length-prefixed
/// filters each followed by an options byte.
fn subscribe_filters(body: &[u8], v5: bool) -> Vec<String> {
    let mut pos = 2;
    if v5 {
        let (mut props, mut shift) = (0usize, 0);
        while let Some(&b) = body.get(pos) {
            pos += 1;
            props |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        pos += props;
    }
    let mut out = Vec::new();
    while pos + 2 <= body.len() {
        let n = usize::from(u16::from_be_bytes([body[pos], body[pos + 1]]));
        let Some(filter) = body.get(pos + 2..pos + 2 + n) else {
            break;
        };
        out.push(String::from_utf8_lossy(filter).into_owned());
        pos += 2 + n + 1;
    }
    out
}

/// The controller's REST API with its admin token.
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn new(config: &ControllerConfig) -> Api {
        let token_file = config.data_dir.join("admin.token");
        let token = wait_for("the admin token", Duration::from_secs(20), || {
            std::fs::read_to_string(&token_file)
                .ok()
                .filter(|t| !t.trim().is_empty())
        })
        .await;
        Api {
            base: format!("http://{}", config.http),
            token: token.trim().to_string(),
            client: reqwest::Client::new(),
        }
    }

    /// The object at `path`, when the API answers 200 and it is Running.
    async fn get(&self, path: &str) -> Option<Value> {
        let v = self.get_json(path).await?;
        (v["status"]["phase"] == "Running").then_some(v)
    }

    async fn get_json(&self, path: &str) -> Option<Value> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn post(&self, path: &str, body: &Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
    }

    /// Registers a node's signing key, once the API answers.
    async fn register_key(&self, node: &str, key: &[u8; 32]) {
        let body = serde_json::json!({"items": [{"node": node, "publicKey": hex::encode(key)}]});
        wait_for_async(
            "the node key registered",
            Duration::from_secs(30),
            || async {
                let resp = self
                    .client
                    .post(format!("{}/nodekeys", self.base))
                    .bearer_auth(&self.token)
                    .json(&body)
                    .send()
                    .await
                    .ok()?;
                resp.status().is_success().then_some(())
            },
        )
        .await;
    }

    async fn wait_node_ready(&self, within: Duration) {
        let path = format!("/api/v1/nodes/{NODE}");
        wait_for_async(&format!("Node {NODE} Ready"), within, || async {
            let node = self.get_json(&path).await?;
            let ready = node["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        })
        .await;
    }
}

async fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
