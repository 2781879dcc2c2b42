//! The agent against a real Mosquitto on loopback, with the recording fake runtime:
//! desired state in, container starts and status reports out, re-adoption after an
//! agent restart, edge autonomy without a broker, crash back-off, logs, and the will.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use punnet_agent::runtime::fake::FakeRuntime;
use punnet_agent::runtime::{ContainerState, Runtime};
use punnet_agent::AgentConfig;
use punnet_api::wire::{self, LogChunk, LogRequest, NodeStatusReport};
use rumqttc::QoS;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod agent_support;

use agent_support::{
    ca_file, eventually, free_port, pod, trust_test_controller, Controller, Mosquitto, NODE,
};

struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), punnet_agent::AgentError>>,
}

impl RunningAgent {
    fn start(config: AgentConfig, runtime: Arc<FakeRuntime>) -> RunningAgent {
        // `RUST_LOG=info cargo test ... -- --nocapture` shows what the agent did.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
            )
            .with_test_writer()
            .try_init();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(punnet_agent::run_with_runtime(config, runtime, async {
            let _ = stopped.await;
        }));
        RunningAgent {
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("agent stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

fn config(broker: &str, data_dir: &Path) -> AgentConfig {
    let mut c = AgentConfig::new(NODE);
    c.broker = broker.to_string();
    c.ca = Some(ca_file());
    c.data_dir = data_dir.to_path_buf();
    trust_test_controller(data_dir);
    c.heartbeat_interval = Duration::from_secs(1);
    c.restart_backoff_base = Duration::from_secs(1);
    c.keep_alive = Duration::from_secs(2);
    c.labels.insert("zone".into(), "test".into());
    // The fake runtime runs nothing: no Pod networks to set up.
    c.pod_network = false;
    c
}

fn phase_of(report: &NodeStatusReport, name: &str) -> Option<String> {
    report
        .pods
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.status.phase.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_runs_pods_reports_status_and_survives_restarts() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut controller = Controller::connect(broker.port).await;
    controller
        .publish_desired(1, vec![pod("web", "uid-web", "Always", "sleep 1000")])
        .await;

    let fake = Arc::new(FakeRuntime::new());
    let agent = RunningAgent::start(config(&broker.url(), data.path()), fake.clone());
    controller
        .wait_online("online", Duration::from_secs(10))
        .await;
    eventually(Duration::from_secs(10), || fake.starts().len() == 1).await;
    let started = &fake.starts()[0];
    assert_eq!(started.pod_uid, "uid-web");
    assert_eq!(started.pod_name, "web");
    assert_eq!(started.pod_namespace, "default");
    assert_eq!(started.container_name, "main");
    assert_eq!(started.image, "busybox:1.36");
    assert_eq!(started.command, vec!["sh", "-c", "sleep 1000"]);
    assert_eq!(started.env, vec![("GREETING".into(), "hello".into())]);
    assert_eq!(started.memory_limit_bytes, Some(32 << 20));
    assert_eq!(started.grace_period, Duration::from_secs(3));
    assert_eq!(started.restart_count, 0);
    assert_eq!(
        started.log_path,
        data.path().join("pods/default_web_uid-web/main/0.log")
    );
    assert!(started.log_path.parent().unwrap().is_dir());

    let report = controller
        .wait_status(Duration::from_secs(10), |r| {
            phase_of(r, "web").as_deref() == Some("Running")
        })
        .await;
    assert_eq!(report.node, NODE);
    assert_eq!(report.generation_seen, 1);
    assert_eq!(
        report.facts.labels.get("zone").map(String::as_str),
        Some("test")
    );
    assert!(report.facts.cpus >= 1);
    let status = &report.pods[0].status;
    assert!(status.container_statuses[0].ready);
    assert!(status.container_statuses[0].state.running.is_some());

    // A clean stop says `offline` and leaves the container running.
    agent.shutdown().await;
    controller
        .wait_online("offline", Duration::from_secs(5))
        .await;
    assert_eq!(fake.running().len(), 1);

    // A new agent re-adopts it: no second start.
    let agent = RunningAgent::start(config(&broker.url(), data.path()), fake.clone());
    controller
        .wait_online("online", Duration::from_secs(10))
        .await;
    controller
        .wait_status(Duration::from_secs(10), |r| {
            phase_of(r, "web").as_deref() == Some("Running")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.starts().len(), 1, "calls: {:?}", fake.calls());

    // An older generation is refused; a newer one without the Pod stops it.
    controller.publish_desired(0, vec![]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.running().len(), 1);
    controller.publish_desired(2, vec![]).await;
    eventually(Duration::from_secs(10), || fake.containers().is_empty()).await;
    eventually(Duration::from_secs(10), || {
        !data.path().join("pods/default_web_uid-web").exists()
    })
    .await;
    controller
        .wait_status(Duration::from_secs(10), |r| {
            r.generation_seen == 2 && r.pods.is_empty()
        })
        .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_says_offline_when_the_agent_dies() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut controller = Controller::connect(broker.port).await;
    let fake = Arc::new(FakeRuntime::new());
    let agent = RunningAgent::start(config(&broker.url(), data.path()), fake);
    controller
        .wait_online("online", Duration::from_secs(10))
        .await;
    // Dropped uncleanly: every agent task goes with it, the socket closes, no goodbye.
    agent.task.abort();
    let started = Instant::now();
    // Socket closed → the broker sends the will at once; at worst 1.5 × keepalive (2 s).
    controller
        .wait_online("offline", Duration::from_secs(6))
        .await;
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_restart_from_local_state_without_a_broker() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let controller = Controller::connect(broker.port).await;
    controller
        .publish_desired(5, vec![pod("edge", "uid-edge", "Always", "sleep 1000")])
        .await;
    let fake = Arc::new(FakeRuntime::new());
    let agent = RunningAgent::start(config(&broker.url(), data.path()), fake.clone());
    eventually(Duration::from_secs(10), || fake.starts().len() == 1).await;
    agent.shutdown().await;

    // "Reboot": containers gone, no network.
    let rebooted = Arc::new(FakeRuntime::new());
    let agent = RunningAgent::start(config("mqtts://127.0.0.1:1", data.path()), rebooted.clone());
    eventually(Duration::from_secs(10), || rebooted.running().len() == 1).await;
    assert_eq!(rebooted.starts()[0].pod_uid, "uid-edge");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_backs_off_then_restarts() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut controller = Controller::connect(broker.port).await;
    controller
        .publish_desired(1, vec![pod("crash", "uid-crash", "Always", "exit 1")])
        .await;
    let fake = Arc::new(FakeRuntime::new());
    let agent = RunningAgent::start(config(&broker.url(), data.path()), fake.clone());
    eventually(Duration::from_secs(10), || fake.running().len() == 1).await;
    let id = fake.running()[0].config.id.clone();
    assert!(fake.exit(&id, 1));
    let report = controller
        .wait_status(Duration::from_secs(10), |r| {
            r.pods.first().is_some_and(|p| {
                p.status.container_statuses[0]
                    .state
                    .waiting
                    .as_ref()
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            })
        })
        .await;
    let cs = &report.pods[0].status.container_statuses[0];
    assert_eq!(cs.last_state.terminated.as_ref().unwrap().exit_code, 1);
    assert!(cs
        .state
        .waiting
        .as_ref()
        .unwrap()
        .message
        .as_deref()
        .unwrap()
        .starts_with("back-off 1s restarting failed container=main pod=crash_default(uid-crash)"));
    // 1 s later it runs again, as restart 1.
    eventually(Duration::from_secs(10), || fake.running().len() == 1).await;
    let restarted = fake.running()[0].config.clone();
    assert_eq!(restarted.restart_count, 1);
    assert!(matches!(
        fake.containers()
            .iter()
            .find(|c| c.config.id == id)
            .unwrap()
            .state,
        ContainerState::Exited { exit_code: 1, .. }
    ));
    controller
        .wait_status(Duration::from_secs(10), |r| {
            r.pods.first().is_some_and(|p| {
                p.status.container_statuses[0].restart_count == 1
                    && p.status.container_statuses[0].state.running.is_some()
            })
        })
        .await;
    agent.shutdown().await;
}

fn write_log(path: &PathBuf, lines: &[&str]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = lines
        .iter()
        .map(|l| format!("2026-11-24T17:47:59.123456789Z stdout F {l}\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_logs_over_mqtt() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut controller = Controller::connect(broker.port).await;
    controller
        .publish_desired(1, vec![pod("logger", "uid-log", "Always", "sleep 1000")])
        .await;
    let fake = Arc::new(FakeRuntime::new());
    let agent = RunningAgent::start(config(&broker.url(), data.path()), fake.clone());
    eventually(Duration::from_secs(10), || fake.running().len() == 1).await;
    let log = fake.running()[0].config.log_path.clone();
    write_log(&log, &["first", "second", "third"]);

    let request = LogRequest {
        id: "req-1".into(),
        namespace: "default".into(),
        pod: "logger".into(),
        container: None,
        follow: false,
        tail_lines: Some(2),
        cancel: false,
    };
    controller
        .client
        .publish(
            controller.topics.log_request(NODE),
            QoS::AtLeastOnce,
            false,
            wire::encode(&request),
        )
        .await
        .unwrap();
    let reply = controller.topics.log_reply(NODE, "req-1");
    let mut text = Vec::new();
    loop {
        let chunk: LogChunk = controller
            .wait_for(&reply, Duration::from_secs(10), |b| wire::decode(b).ok())
            .await;
        assert!(chunk.error.is_none(), "{:?}", chunk.error);
        text.extend(chunk.data);
        if chunk.done {
            break;
        }
    }
    assert_eq!(String::from_utf8(text).unwrap(), "second\nthird\n");

    let unknown = LogRequest {
        id: "req-2".into(),
        pod: "nope".into(),
        ..request
    };
    controller
        .client
        .publish(
            controller.topics.log_request(NODE),
            QoS::AtLeastOnce,
            false,
            wire::encode(&unknown),
        )
        .await
        .unwrap();
    let reply = controller.topics.log_reply(NODE, "req-2");
    let chunk: LogChunk = controller
        .wait_for(&reply, Duration::from_secs(10), |b| wire::decode(b).ok())
        .await;
    assert!(chunk.done);
    assert_eq!(
        chunk.error.as_deref(),
        Some("pod default/nope is not on node test-node")
    );
    agent.shutdown().await;
    // The fake runtime is not needed past this point; keep it alive for the agent's last list.
    let _ = fake.list();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_reported_and_retried() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut controller = Controller::connect(broker.port).await;
    controller
        .publish_desired(1, vec![pod("img", "uid-img", "Always", "sleep 1000")])
        .await;
    let fake = Arc::new(FakeRuntime::new());
    fake.set_image_missing("busybox:1.36");
    let agent = RunningAgent::start(config(&broker.url(), data.path()), fake.clone());
    let report = controller
        .wait_status(Duration::from_secs(10), |r| {
            r.pods.first().is_some_and(|p| {
                p.status.container_statuses[0]
                    .state
                    .waiting
                    .as_ref()
                    .and_then(|w| w.reason.as_deref())
                    == Some("ErrImageNeverPull")
            })
        })
        .await;
    let status = &report.pods[0].status;
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let message = status.container_statuses[0].state.waiting.as_ref().unwrap();
    assert!(
        message.message.as_deref().unwrap().contains("busybox:1.36"),
        "{message:?}"
    );
    // `punnet-agent image load` while the agent runs: picked up at the next retry.
    fake.set_image_present("busybox:1.36");
    controller
        .wait_status(Duration::from_secs(10), |r| {
            phase_of(r, "img").as_deref() == Some("Running")
        })
        .await;
    assert_eq!(fake.running().len(), 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes_when_the_broker_comes_and_goes() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeRuntime::new());
    // No broker yet: the agent backs off and keeps trying.
    let agent = RunningAgent::start(
        config(&format!("mqtts://127.0.0.1:{port}"), data.path()),
        fake.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let broker = Mosquitto::start_on(port);
    let mut controller = Controller::connect(port).await;
    controller
        .wait_online("online", Duration::from_secs(40))
        .await;
    controller
        .publish_desired(1, vec![pod("a", "uid-a", "Always", "sleep 1000")])
        .await;
    eventually(Duration::from_secs(10), || fake.starts().len() == 1).await;

    // A fresh broker knows no session and no subscription: the agent must subscribe
    // again on its ConnAck.
    drop(controller);
    drop(broker);
    let _broker = Mosquitto::start_on(port);
    let mut controller = Controller::connect(port).await;
    controller
        .wait_online("online", Duration::from_secs(40))
        .await;
    controller
        .publish_desired(
            2,
            vec![
                pod("a", "uid-a", "Always", "sleep 1000"),
                pod("b", "uid-b", "Always", "sleep 1000"),
            ],
        )
        .await;
    eventually(Duration::from_secs(10), || fake.starts().len() == 2).await;
    controller
        .wait_status(Duration::from_secs(10), |r| {
            r.generation_seen == 2 && r.pods.len() == 2
        })
        .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_certificate_another_ca_signed_is_refused() {
    let broker = Mosquitto::start();
    let mut controller = Controller::connect(broker.port).await;
    let data = tempfile::tempdir().unwrap();
    // A CA that did not sign the broker's certificate.
    let other = data.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
    let mut c = config(&broker.url(), data.path());
    c.ca = Some(other);
    let agent = RunningAgent::start(c, Arc::new(FakeRuntime::new()));
    let online = tokio::spawn(async move {
        controller
            .wait_online("online", Duration::from_secs(4))
            .await
    })
    .await;
    assert!(online.is_err(), "the agent must not get through");
    agent.shutdown().await;
}
