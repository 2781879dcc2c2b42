//! Write budget benchmark (not a test): an idle controller with 10 connected nodes, each
//! a simulated agent that reports its node facts, changing usage figures and one
//! Running Pod every 10 s over real MQTT, as real agents do. Prints the bytes the
//! controller wrote to disk per hour (`write_bytes` of `/proc/<pid>/io`, what reaches
//! the block device) and how many store writes that was, measured over
//! `PUNNET_BENCH_WRITE_SECS` (default 600 s: one period of the store's volatile write
//! interval) after the fleet has settled. Run through `scripts/bench.sh` (release
//! build); `PUNNET_CONTROLLER_BIN` picks another controller binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use punnet_api::signing::{encode_signed, public_key_hex, SigningKey};
use punnet_api::topics::{Topics, MAX_PACKET_SIZE, OFFLINE, ONLINE};
use punnet_api::wire::{decode, DesiredState, NodeFacts, NodeStatusReport, PodReport};
use punnet_api::{PodCondition, PodStatus, Time};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

const NODES: usize = 10;
const REPORT_EVERY: Duration = Duration::from_secs(10);

fn controller_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PUNNET_CONTROLLER_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/punnet-controller");
    assert!(p.exists(), "{} missing: run scripts/bench.sh", p.display());
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `write_bytes` of a process: what it sent towards a block device.
fn written(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    field("write_bytes:")
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn facts(node: &str, tick: u64) -> NodeFacts {
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
        board_model: "Raspberry Pi 4 Model B Rev 1.4".into(),
        cgroup_version: 2,
        memory_cgroup: true,
        platform: "linux/arm64".into(),
        // What changes in every report of an idle board.
        cpu_usage_millis: 40 + tick % 17,
        memory_available_bytes: (600 << 20) + (tick % 7) * 4096,
        disk_total_bytes: 30 << 30,
        disk_free_bytes: (20 << 30) - tick * 4096,
        temperature_millicelsius: Some(48_000 + (tick % 5) as i64 * 500),
        throttled: Some(0),
        ..NodeFacts::default()
    }
}

fn running(started: Time) -> PodStatus {
    let mut s = PodStatus {
        phase: Some("Running".into()),
        start_time: Some(started),
        ..Default::default()
    };
    for type_ in ["Initialized", "Ready", "ContainersReady"] {
        s.conditions.push(PodCondition {
            type_: type_.into(),
            status: "True".into(),
            last_transition_time: Some(started),
            ..Default::default()
        });
    }
    s
}

/// The key simulated agent `i` signs with (registered through `POST /nodekeys`).
fn agent_key(i: usize) -> SigningKey {
    SigningKey::from_seed(&[i as u8 + 1; 32])
}

/// One simulated agent: follows its desired state and reports every `REPORT_EVERY`.
async fn agent(node: String, key: SigningKey, port: u16) {
    let topics = Topics::default();
    let mut o = MqttOptions::new(format!("agent-{node}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
        .set_last_will(LastWill::new(
            topics.online(&node),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let desired: Arc<Mutex<Vec<PodReport>>> = Arc::default();
    let started = Time::now();
    {
        let (client, topics, node, desired) = (
            client.clone(),
            topics.clone(),
            node.clone(),
            desired.clone(),
        );
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let c = client.clone();
                        let (d, online) = (topics.desired(&node), topics.online(&node));
                        tokio::spawn(async move {
                            let _ = c.subscribe(d, QoS::AtLeastOnce).await;
                            let _ = c.publish(online, QoS::AtLeastOnce, true, ONLINE).await;
                        });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics.desired(&node) => {
                        if let Ok(state) = decode::<DesiredState>(&p.payload) {
                            *desired.lock().unwrap() = state
                                .pods
                                .iter()
                                .map(|pod| PodReport {
                                    namespace: pod.metadata.namespace_or_default().to_string(),
                                    name: pod.metadata.name.clone(),
                                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                                    status: running(started),
                                    usage: Vec::new(),
                                })
                                .collect();
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    }
    for tick in 0.. {
        let report = NodeStatusReport {
            node: node.clone(),
            generation_seen: 0,
            sent_at: Time::now(),
            facts: facts(&node, tick),
            pods: desired.lock().unwrap().clone(),
            events: Vec::new(),
        };
        let _ = client
            .publish(
                topics.status(&node),
                QoS::AtLeastOnce,
                false,
                encode_signed(&report, &node, &key),
            )
            .await;
        tokio::time::sleep(REPORT_EVERY).await;
    }
}

fn main() {
    let secs: u64 = std::env::var("PUNNET_BENCH_WRITE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    // On the disk, not a tmpfs: write_bytes counts what reaches a block device.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let controller = Proc(
        Command::new(controller_bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "--http",
                &format!("127.0.0.1:{http}"),
                "--mqtt",
                &format!("127.0.0.1:{mqtt}"),
                // Plaintext: the simulated agents below speak plain MQTT.
                "--allow-plaintext",
            ])
            .env("RUST_LOG", "warn,rumqttd=off")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let pid = controller.0.id();
    let base_url = format!("http://127.0.0.1:{http}");
    let http_client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_client
        .get(format!("{base_url}/healthz"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "controller never became healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let api = |req: reqwest::blocking::RequestBuilder| -> Value {
        req.bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap_or(Value::Null)
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<Value> = (0..NODES)
        .map(|i| json!({"node": format!("pi-{i}"), "publicKey": public_key_hex(&agent_key(i).public_key())}))
        .collect();
    api(http_client
        .post(format!("{base_url}/nodekeys"))
        .json(&json!({ "items": keys })));
    for i in 0..NODES {
        runtime.spawn(agent(format!("pi-{i}"), agent_key(i), mqtt));
    }
    // One Pod on every node, as a DaemonSet would place them.
    for i in 0..NODES {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("app-{i}"), "namespace": "default"},
            "spec": {"nodeName": format!("pi-{i}"), "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "inf"]}]}});
        api(http_client
            .post(format!("{base_url}/api/v1/namespaces/default/pods"))
            .json(&pod));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pods = api(http_client.get(format!("{base_url}/api/v1/pods")));
        let running = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        if running == NODES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Pods never ran ({running} of {NODES})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the first reports settle before measuring.
    std::thread::sleep(2 * REPORT_EVERY);
    let revision = |api: &dyn Fn(reqwest::blocking::RequestBuilder) -> Value| -> u64 {
        api(http_client.get(format!("{base_url}/api/v1/nodes")))["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    let (w0, r0) = (written(pid), revision(&api));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (w1, r1) = (written(pid), revision(&api));
    let elapsed = t0.elapsed().as_secs_f64();
    let per_hour = |bytes: u64| bytes as f64 * 3600.0 / elapsed / (1024.0 * 1024.0);
    let nodes = api(http_client.get(format!("{base_url}/api/v1/nodes")));
    let ready = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count();
    println!(
        "idle controller, {NODES} nodes ({ready} Ready) reporting every {}s, 1 Pod each, over {elapsed:.0}s:",
        REPORT_EVERY.as_secs()
    );
    println!(
        "  disk writes (write_bytes): {:.3} MiB/hour ({} bytes in the window); store writes: {} ({:.0}/hour)",
        per_hour(w1 - w0),
        w1 - w0,
        r1 - r0,
        (r1 - r0) as f64 * 3600.0 / elapsed
    );
    drop(controller);
    runtime.shutdown_background();
}
