//! The agent binary pulling Pod images from a real registry (Debian's docker-registry on
//! loopback): the variant for the board's platform is the one that runs, and an image
//! that cannot be pulled leaves the Pod waiting with the reason and the registry's
//! answer. Needs root.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use punnet_agent::image::ImageStore;
use punnet_agent::runtime::{Runtime, ShimRuntime};
use punnet_api::wire::NodeStatusReport;

mod agent_support;
mod registry_support;

use agent_support::{ca_file, eventually, pod, trust_test_controller, Controller, Mosquitto, NODE};
use registry_support::{Registry, TestImage};

struct Agent(Child, std::path::PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let rt = ShimRuntime::new(
            self.1.join("containers"),
            Arc::new(ImageStore::open(&self.1.join("images")).unwrap()),
            env!("CARGO_BIN_EXE_punnet-agent").into(),
            vec!["shim".into()],
        );
        for c in rt.list().unwrap_or_default() {
            let _ = rt.remove(&c.config.id);
        }
    }
}

fn waiting_reason(r: &NodeStatusReport, name: &str) -> Option<(String, String)> {
    let s = &r.pods.iter().find(|p| p.name == name)?.status;
    let w = s.container_statuses.first()?.state.waiting.as_ref()?;
    Some((w.reason.clone()?, w.message.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_the_variant_for_the_boards_platform_from_a_registry() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let registry = Registry::start();
    let image = TestImage::build(&[
        ("amd64", None),
        ("arm64", Some("v8")),
        ("arm", Some("v7")),
        ("arm", Some("v6")),
    ]);
    registry.push("fleet/app", "1", &image).await;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("agent");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let broker = Mosquitto::start();
    let mut controller = Controller::connect(broker.port).await;
    let log = std::fs::File::create(tmp.path().join("agent.log")).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    trust_test_controller(&data);
    let child = Command::new(env!("CARGO_BIN_EXE_punnet-agent"))
        .args(["--name", NODE, "--broker", &broker.url(), "--ca"])
        .arg(ca_file())
        .arg("--data-dir")
        .arg(&data)
        .args(["--heartbeat", "1s", "--restart-backoff", "1s"])
        .args(["--insecure-registry", &registry.host()])
        // A Pi Zero: only the v6 variant may run.
        .args(["--platform", "linux/arm/v6", "--no-pod-network"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _agent = Agent(child, data.clone());
    controller
        .wait_online("online", Duration::from_secs(20))
        .await;

    let uid = |n: &str| format!("uid-{n}-{}", std::process::id());
    let mut app = pod(
        "app",
        &uid("app"),
        "Always",
        "cat /etc/punnet-variant > /out/variant; exec sleep 1000",
    );
    app.spec.host_network = Some(true);
    app.spec.containers[0].image = format!("{}/fleet/app:1", registry.host());
    app.spec.volumes = vec![punnet_api::pod::Volume {
        name: "out".into(),
        host_path: Some(punnet_api::pod::HostPathVolumeSource {
            path: out.to_string_lossy().into_owned(),
            type_: None,
        }),
        ..Default::default()
    }];
    app.spec.containers[0].volume_mounts = vec![punnet_api::pod::VolumeMount {
        name: "out".into(),
        mount_path: "/out".into(),
        ..Default::default()
    }];
    let mut missing = pod("missing", &uid("missing"), "Always", "true");
    missing.spec.host_network = Some(true);
    missing.spec.containers[0].image = format!("{}/fleet/nothing:1", registry.host());
    controller
        .publish_desired(1, vec![app.clone(), missing.clone()])
        .await;

    let variant = out.join("variant");
    // The shell creates the file before `cat` writes it: wait for its contents.
    eventually(Duration::from_secs(60), || {
        std::fs::read_to_string(&variant).is_ok_and(|s| !s.is_empty())
    })
    .await;
    assert_eq!(std::fs::read_to_string(&variant).unwrap(), "linux/arm/v6\n");

    let report = controller
        .wait_status(Duration::from_secs(30), |r| {
            waiting_reason(r, "missing").is_some_and(|(reason, _)| reason == "ImagePullBackOff")
        })
        .await;
    let (_, message) = waiting_reason(&report, "missing").unwrap();
    assert!(message.contains("fleet/nothing:1"), "{message}");
    assert!(message.contains("not found"), "{message}");

    // The pulled image is in the node's store under its reference.
    let store = ImageStore::open(&data.join("images")).unwrap();
    assert!(store
        .list()
        .unwrap()
        .iter()
        .any(|i| i.reference.ends_with("fleet/app:1")));
}
