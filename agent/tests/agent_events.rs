//! The Events the agent sends with its status reports, with the recording fake runtime
//! and a real Mosquitto: Created and Started for a new container, BackOff when it
//! crashes, Killing when its Pod is no longer desired.

use std::sync::Arc;
use std::time::Duration;

use punnet_agent::runtime::fake::FakeRuntime;
use punnet_agent::AgentConfig;
use punnet_api::wire::AgentEvent;
use tokio::sync::oneshot;

mod agent_support;

use agent_support::{ca_file, eventually, pod, trust_test_controller, Controller, Mosquitto, NODE};

fn has(events: &[AgentEvent], reason: &str) -> bool {
    events.iter().any(|e| e.reason == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_go_out_with_the_status() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut controller = Controller::connect(broker.port).await;
    controller
        .publish_desired(1, vec![pod("web", "uid-web", "Always", "sleep 1000")])
        .await;
    let fake = Arc::new(FakeRuntime::new());
    let mut config = AgentConfig::new(NODE);
    config.broker = broker.url();
    config.ca = Some(ca_file());
    config.data_dir = data.path().to_path_buf();
    trust_test_controller(data.path());
    config.heartbeat_interval = Duration::from_millis(500);
    config.restart_backoff_base = Duration::from_secs(1);
    config.keep_alive = Duration::from_secs(2);
    config.pod_network = false;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(punnet_agent::run_with_runtime(
        config,
        fake.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let mut seen: Vec<AgentEvent> = Vec::new();
    let within = Duration::from_secs(15);
    controller
        .wait_status(within, |r| {
            seen.extend(r.events.iter().cloned());
            has(&seen, "Started")
        })
        .await;
    let started = seen.iter().find(|e| e.reason == "Started").unwrap();
    assert_eq!(
        (
            started.pod.as_str(),
            started.uid.as_str(),
            started.container.as_deref()
        ),
        ("web", "uid-web", Some("main"))
    );
    assert_eq!(started.message, "Started container main");
    assert!(!started.warning);
    assert!(has(&seen, "Created"));

    eventually(within, || fake.running().len() == 1).await;
    let id = fake.running()[0].config.id.clone();
    assert!(fake.exit(&id, 1));
    controller
        .wait_status(within, |r| {
            seen.extend(r.events.iter().cloned());
            has(&seen, "BackOff")
        })
        .await;
    let backoff = seen.iter().find(|e| e.reason == "BackOff").unwrap();
    assert!(backoff.warning);
    assert_eq!(
        backoff.message,
        "Back-off restarting failed container main in pod web_default(uid-web)"
    );

    // Running again after the back-off; then the Pod is no longer desired.
    eventually(within, || fake.running().len() == 1).await;
    controller.publish_desired(2, vec![]).await;
    controller
        .wait_status(within, |r| {
            seen.extend(r.events.iter().cloned());
            has(&seen, "Killing")
        })
        .await;
    let killing = seen.iter().find(|e| e.reason == "Killing").unwrap();
    assert_eq!(killing.message, "Stopping container main");
    assert_eq!(killing.pod, "web");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("agent stops within 10 s")
        .unwrap()
        .unwrap();
}
