//! Signed desired state against a real Mosquitto: forged, unsigned, misaddressed and
//! replayed messages injected with `mosquitto_pub` are refused, counted (in the status
//! report's Events and in `signatures.json`) and leave the agent following the genuine
//! controller, also across an agent restart; a new epoch (a restored controller) is
//! believed again; status reports verify with the agent's `node.pub`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use punnet_agent::runtime::fake::FakeRuntime;
use punnet_agent::AgentConfig;
use punnet_api::pod::Pod;
use punnet_api::signing::{encode_signed, SigningKey};
use punnet_api::wire::{self, DesiredState};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod agent_support;

use agent_support::{
    controller_key, eventually, pod, trust_test_controller, verified_status, Controller, Mosquitto,
    NODE,
};

struct RunningAgent {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), punnet_agent::AgentError>>,
}

impl RunningAgent {
    fn start(broker: &str, data: &Path, runtime: Arc<FakeRuntime>) -> RunningAgent {
        let mut c = AgentConfig::new(NODE);
        c.broker = broker.to_string();
        c.data_dir = data.to_path_buf();
        c.heartbeat_interval = Duration::from_millis(300);
        c.keep_alive = Duration::from_secs(2);
        c.pod_network = false;
        c.ca = Some(agent_support::ca_file());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(punnet_agent::run_with_runtime(c, runtime, async {
            let _ = stopped.await;
        }));
        RunningAgent { stop, task }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("agent stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

fn desired(
    signed_for: &str,
    key: &SigningKey,
    epoch: u64,
    generation: u64,
    pods: Vec<Pod>,
) -> Vec<u8> {
    let msg = DesiredState {
        node: NODE.into(),
        generation,
        epoch,
        pods,
        ..Default::default()
    };
    encode_signed(&msg, signed_for, key)
}

/// Publishes `bytes` retained on this node's desired topic with the Mosquitto client,
/// as anyone with access to the broker could.
fn mosquitto_pub(port: u16, bytes: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let topic = format!("punnet/v1/nodes/{NODE}/desired");
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"])
        .arg("--cafile")
        .arg(agent_support::ca_file())
        .args(["-t", &topic, "-f"])
        .arg(file.path())
        .status()
        .expect("mosquitto_pub is installed");
    assert!(status.success());
}

fn started_pods(fake: &FakeRuntime) -> BTreeSet<String> {
    fake.starts().into_iter().map(|c| c.pod_name).collect()
}

fn running_pods(fake: &FakeRuntime) -> BTreeSet<String> {
    fake.running()
        .into_iter()
        .map(|c| c.config.pod_name)
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn rejected(data: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(data.join("signatures.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(v["rejectedDesired"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_and_replayed_desired_state_is_refused_and_counted() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    trust_test_controller(data.path());
    let mut controller = Controller::connect(broker.port).await;
    let genuine = controller_key();
    let web = pod("web", "uid-web", "Always", "sleep 1000");
    let evil = pod("evil", "uid-evil", "Always", "sleep 1000");
    // Genuine, but older than what the agent is about to apply: a replay later.
    let old = desired(
        NODE,
        &genuine,
        1,
        3,
        vec![pod("old", "uid-old", "Always", "sleep 1")],
    );
    mosquitto_pub(
        broker.port,
        &desired(NODE, &genuine, 1, 5, vec![web.clone()]),
    );

    let fake = Arc::new(FakeRuntime::new());
    let agent = RunningAgent::start(&broker.url(), data.path(), fake.clone());
    eventually(Duration::from_secs(10), || {
        running_pods(&fake) == set(&["web"])
    })
    .await;

    // Status is signed with the key in node.pub (reports sent before generation 5 was
    // applied may still be queued: wait for one that saw it).
    let topic = controller.topics.status(NODE);
    let report = controller
        .wait_for(&topic, Duration::from_secs(10), |b| {
            verified_status(data.path(), b).filter(|r| r.generation_seen == 5)
        })
        .await;
    assert_eq!(report.generation_seen, 5);

    // A forger without the controller's key, an unsigned message, a genuine message
    // for another node copied onto this node's topic, and a replay of an older one.
    let forger = SigningKey::from_seed(&[0x66; 32]);
    mosquitto_pub(
        broker.port,
        &desired(NODE, &forger, 1, 6, vec![evil.clone()]),
    );
    let unsigned = wire::encode(&DesiredState {
        node: NODE.into(),
        generation: 7,
        epoch: 1,
        pods: vec![evil.clone()],
        ..Default::default()
    });
    mosquitto_pub(broker.port, &unsigned);
    mosquitto_pub(
        broker.port,
        &desired("other-node", &genuine, 1, 8, vec![evil.clone()]),
    );
    mosquitto_pub(broker.port, &old);

    // Each is reported as a node Event with the status.
    let mut reasons = BTreeSet::new();
    controller
        .wait_for(&topic, Duration::from_secs(15), |b| {
            let r = verified_status(data.path(), b)?;
            reasons.extend(
                r.events
                    .iter()
                    .filter(|e| e.pod.is_empty())
                    .map(|e| e.reason.clone()),
            );
            (reasons.len() >= 3).then_some(())
        })
        .await;
    assert_eq!(
        reasons,
        set(&[
            "ForgedDesiredState",
            "UnsignedDesiredState",
            "ReplayedDesiredState"
        ])
    );
    assert_eq!(started_pods(&fake), set(&["web"]), "nothing forged ran");
    assert_eq!(running_pods(&fake), set(&["web"]));

    // Counted by reason in signatures.json (written at most every 10 s).
    eventually(Duration::from_secs(15), || {
        rejected(data.path())
            .is_some_and(|r| r["unsigned"] == 1 && r["bad_signature"] == 2 && r["replayed"] == 1)
    })
    .await;

    // The genuine controller still gets through.
    controller
        .publish_desired(
            9,
            vec![web.clone(), pod("next", "uid-next", "Always", "sleep 1000")],
        )
        .await;
    eventually(Duration::from_secs(10), || {
        running_pods(&fake) == set(&["web", "next"])
    })
    .await;

    // After a restart the floor is still generation 9: the replay of 5 is refused.
    agent.shutdown().await;
    let agent = RunningAgent::start(&broker.url(), data.path(), fake.clone());
    mosquitto_pub(
        broker.port,
        &desired(NODE, &genuine, 1, 5, vec![web.clone()]),
    );
    controller
        .wait_for(&topic, Duration::from_secs(10), |b| {
            let r = verified_status(data.path(), b)?;
            r.events
                .iter()
                .any(|e| e.reason == "ReplayedDesiredState")
                .then_some(())
        })
        .await;
    assert_eq!(running_pods(&fake), set(&["web", "next"]));

    // A restored controller: generations went back, the epoch went forward.
    mosquitto_pub(
        broker.port,
        &desired(NODE, &genuine, 2, 1, vec![web.clone()]),
    );
    eventually(Duration::from_secs(10), || {
        running_pods(&fake) == set(&["web"])
    })
    .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_controller_key_nothing_runs_until_one_arrives() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let controller = Controller::connect(broker.port).await;
    controller
        .publish_desired(1, vec![pod("web", "uid-web", "Always", "sleep 1000")])
        .await;
    let fake = Arc::new(FakeRuntime::new());
    let agent = RunningAgent::start(&broker.url(), data.path(), fake.clone());
    eventually(Duration::from_secs(15), || {
        rejected(data.path()).is_some_and(|r| r["no_controller_key"].as_u64() >= Some(1))
    })
    .await;
    assert!(fake.starts().is_empty());

    // Enrolment writes controller.pub; the next message is checked with it.
    trust_test_controller(data.path());
    controller
        .publish_desired(2, vec![pod("web", "uid-web", "Always", "sleep 1000")])
        .await;
    eventually(Duration::from_secs(10), || {
        running_pods(&fake) == set(&["web"])
    })
    .await;
    agent.shutdown().await;
}
