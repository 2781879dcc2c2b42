//! The agent binary end to end, as on a board: a real Mosquitto, real busybox containers
//! through the shim runtime, an image archive imported from `<data-dir>/images/import/`
//! at start. Needs root, cgroups and overlayfs (it panics rather than skipping when not
//! root). Also measures the idle agent's memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use punnet_agent::image::ImageStore;
use punnet_agent::runtime::{ContainerState, Runtime, ShimRuntime};
use punnet_api::wire::{self, LogChunk, LogRequest, NodeStatusReport};
use rumqttc::QoS;

mod agent_support;

use agent_support::{ca_file, eventually, pod, trust_test_controller, Controller, Mosquitto, NODE};

/// The agent binary under test; `PUNNET_AGENT_BIN=target/release/punnet-agent` measures
/// a release build.
fn agent_exe() -> PathBuf {
    std::env::var_os("PUNNET_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_punnet-agent")))
}

/// The agent process; killed on drop, and every container it left is removed then.
struct AgentProcess {
    child: Option<Child>,
    data: PathBuf,
}

/// This test run's own bridge and Pod range, so parallel runs do not share addresses.
fn bridge() -> String {
    format!("pt{}", std::process::id() % 100_000)
}

fn pod_cidr() -> String {
    let pid = std::process::id();
    format!("10.{}.{}.0/24", 150 + pid % 50, (pid / 50) % 250)
}

impl AgentProcess {
    fn spawn(broker: &str, data: &Path) -> AgentProcess {
        trust_test_controller(data);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("agent.log"))
            .unwrap();
        let child = Command::new(agent_exe())
            .args(["--name", NODE, "--broker", broker, "--ca"])
            .arg(ca_file())
            .arg("--data-dir")
            .arg(data)
            .args([
                "--restart-backoff",
                "1s",
                "--heartbeat",
                "1s",
                "--label",
                "zone=e2e",
                "--cni-bridge",
            ])
            .arg(bridge())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        AgentProcess {
            child: Some(child),
            data: data.to_path_buf(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM, as systemd stops it; waits for a clean exit.
    fn terminate(&mut self) {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "agent exited with {status}; log:\n{}",
            self.log()
        );
        // Its stderr is a file here, as it is the journal under systemd: no colour codes.
        assert!(
            !self.log().contains('\x1b'),
            "the agent's log to a file has terminal escape codes:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn runtime(data: &Path) -> ShimRuntime {
    let images = Arc::new(ImageStore::open(&data.join("images")).unwrap());
    ShimRuntime::new(
        data.join("containers"),
        images,
        agent_exe(),
        vec!["shim".into()],
    )
}

/// Removes every container left in a data dir, pass or fail.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let rt = runtime(&self.0);
        for c in rt.list().unwrap_or_default() {
            let _ = rt.remove(&c.config.id);
        }
        let _ = Command::new("ip")
            .args(["link", "del"])
            .arg(bridge())
            .stderr(Stdio::null())
            .status();
    }
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn phase(report: &NodeStatusReport, name: &str) -> Option<String> {
    report
        .pods
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.status.phase.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_binary_runs_real_containers_and_readopts_them() {
    let (_tmp, data, _cleanup) = agent_dir("busybox:e2e");

    let (broker, mut controller, mut agent) = online(&data).await;
    controller.pod_cidr = Some(pod_cidr());

    // Unique uids: container ids (and cgroups) must not collide with parallel runs.
    let uid = |n: &str| format!("uid-{n}-{}", std::process::id());
    let mut web = pod(
        "web",
        &uid("web"),
        "Always",
        "echo hello from $GREETING; while true; do sleep 1; done",
    );
    web.spec.containers[0].image = "busybox:e2e".into();
    web.spec.termination_grace_period_seconds = Some(1);
    let mut job = pod("job", &uid("job"), "Never", "echo done; exit 3");
    job.spec.containers[0].image = "busybox:e2e".into();
    controller.publish_desired(1, vec![web.clone(), job]).await;

    let report = controller
        .wait_status(Duration::from_secs(30), |r| {
            phase(r, "web").as_deref() == Some("Running")
                && phase(r, "job").as_deref() == Some("Failed")
        })
        .await;
    let job_status = &report.pods.iter().find(|p| p.name == "job").unwrap().status;
    let term = job_status.container_statuses[0]
        .state
        .terminated
        .as_ref()
        .unwrap_or_else(|| panic!("job Failed without a terminated state: {job_status:?}"));
    assert_eq!(term.exit_code, 3);
    assert_eq!(term.reason.as_deref(), Some("Error"));
    assert_eq!(
        report.facts.labels.get("zone").map(String::as_str),
        Some("e2e")
    );
    assert!(!report.pods[0]
        .status
        .host_ip
        .clone()
        .unwrap_or_default()
        .is_empty());
    // The Pod has its own address from the node's range, on eth0 in its own namespace.
    let web_status = &report.pods.iter().find(|p| p.name == "web").unwrap().status;
    let pod_ip = web_status.pod_ip.clone().expect("a Pod IP");
    let prefix = pod_cidr().trim_end_matches("0/24").to_string();
    assert!(
        pod_ip.starts_with(&prefix),
        "{pod_ip} not in {}",
        pod_cidr()
    );
    let mut agent_config = punnet_agent::config::AgentConfig::new(NODE);
    agent_config.data_dir = data.clone();
    let netns = agent_config.netns_dir().join(uid("web"));
    let addr = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-4", "-o", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains(&format!("{pod_ip}/24")),
        "{addr:?}"
    );

    // The container's output, over MQTT.
    let request = LogRequest {
        id: "e2e-log".into(),
        namespace: "default".into(),
        pod: "web".into(),
        container: None,
        follow: false,
        tail_lines: None,
        cancel: false,
    };
    let reply = controller.topics.log_reply(NODE, "e2e-log");
    let mut text = Vec::new();
    for _ in 0..50 {
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
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(String::from_utf8_lossy(&text), "hello from hello\n");

    // Idle for a few heartbeats, then measure.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rss = rss_kib(agent.pid());
    eprintln!("idle agent RSS (this build): {rss} KiB");
    assert!(rss < 64 * 1024, "agent uses {rss} KiB");

    // Stopping the agent leaves the container running...
    agent.terminate();
    controller
        .wait_online("offline", Duration::from_secs(5))
        .await;
    let rt = runtime(&data);
    let running: Vec<_> = rt
        .list()
        .unwrap()
        .into_iter()
        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        .collect();
    assert_eq!(running.len(), 1);
    let web_id = running[0].config.id.clone();

    // ...and the next agent re-adopts it instead of starting another.
    let mut agent = AgentProcess::spawn(&broker.url(), &data);
    controller
        .wait_online("online", Duration::from_secs(20))
        .await;
    controller
        .wait_status(Duration::from_secs(20), |r| {
            phase(r, "web").as_deref() == Some("Running")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let web_runs: Vec<_> = rt
        .list()
        .unwrap()
        .into_iter()
        .filter(|c| c.config.pod_name == "web")
        .collect();
    assert_eq!(web_runs.len(), 1, "{web_runs:?}");
    assert_eq!(web_runs[0].config.id, web_id);
    assert!(matches!(web_runs[0].state, ContainerState::Running { .. }));

    // An empty desired state stops (SIGKILL after the 1 s grace: sh as pid 1 ignores
    // SIGTERM) and removes everything, logs included.
    controller.publish_desired(2, vec![]).await;
    eventually(Duration::from_secs(30), || {
        rt.list().unwrap().is_empty() && !data.join("pods").read_dir().unwrap().any(|_| true)
    })
    .await;
    // ...and releases the Pod's network.
    eventually(Duration::from_secs(10), || {
        !netns.exists()
            && !data
                .join("network")
                .join(format!("{}.json", uid("web")))
                .exists()
    })
    .await;
    agent.terminate();
    let log = agent.log();
    if std::env::var_os("SHOW_AGENT_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(log.contains("imported image archive"), "{log}");
}

fn status_of<'a>(
    report: &'a NodeStatusReport,
    name: &str,
) -> Option<&'a punnet_api::pod::PodStatus> {
    report
        .pods
        .iter()
        .find(|p| p.name == name)
        .map(|p| &p.status)
}

/// Probes and hooks on real containers: readiness holds a container unready until its
/// probe passes, a failing liveness probe restarts its container, and preStop runs
/// before the container is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_gate_readiness_restart_the_unhealthy_and_pre_stop_runs() {
    let (tmp, data, _cleanup) = agent_dir("busybox:probes");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();

    let (_broker, mut controller, mut agent) = online(&data).await;

    let uid = |n: &str| format!("uid-{n}-{}", std::process::id());
    let host_pod = |name: &str, command: &str| {
        let mut p = pod(name, &uid(name), "Always", command);
        p.spec.host_network = Some(true);
        p.spec.containers[0].image = "busybox:probes".into();
        p
    };
    let exec_probe = |cmd: &[&str]| punnet_api::pod::Probe {
        exec: Some(punnet_api::pod::ExecAction {
            command: cmd.iter().map(|s| s.to_string()).collect(),
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    };
    let mut slow = host_pod("slow", "sleep 3; touch /tmp/ready; exec sleep 1000");
    slow.spec.containers[0].readiness_probe = Some(exec_probe(&["cat", "/tmp/ready"]));
    let mut sick = host_pod("sick", "exec sleep 1000");
    sick.spec.containers[0].liveness_probe = Some(exec_probe(&["false"]));
    let mut hook = host_pod("hook", "exec sleep 1000");
    hook.spec.volumes = vec![punnet_api::pod::Volume {
        name: "out".into(),
        host_path: Some(punnet_api::pod::HostPathVolumeSource {
            path: out_dir.to_string_lossy().into_owned(),
            type_: None,
        }),
        ..Default::default()
    }];
    hook.spec.containers[0].volume_mounts = vec![punnet_api::pod::VolumeMount {
        name: "out".into(),
        mount_path: "/out".into(),
        ..Default::default()
    }];
    hook.spec.containers[0].lifecycle = Some(punnet_api::pod::Lifecycle {
        pre_stop: Some(punnet_api::pod::LifecycleHandler {
            exec: Some(punnet_api::pod::ExecAction {
                command: vec!["sh".into(), "-c".into(), "echo bye > /out/pre-stop".into()],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    controller
        .publish_desired(1, vec![slow.clone(), sick.clone(), hook.clone()])
        .await;

    // Running but not ready until the file exists.
    let report = controller
        .wait_status(Duration::from_secs(30), |r| {
            status_of(r, "slow").is_some_and(|s| s.phase.as_deref() == Some("Running"))
        })
        .await;
    let s = status_of(&report, "slow").unwrap();
    assert!(!s.container_statuses[0].ready, "{s:?}");
    controller
        .wait_status(Duration::from_secs(30), |r| {
            status_of(r, "slow").is_some_and(|s| {
                s.container_statuses[0].ready
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await;

    // The failing liveness probe restarts its container.
    let report = controller
        .wait_status(Duration::from_secs(40), |r| {
            status_of(r, "sick").is_some_and(|s| s.container_statuses[0].restart_count >= 1)
        })
        .await;
    let s = status_of(&report, "sick").unwrap();
    assert!(
        s.container_statuses[0].last_state.terminated.is_some(),
        "{s:?}"
    );

    // Removing the hook Pod runs its preStop first.
    controller
        .publish_desired(2, vec![slow.clone(), sick.clone()])
        .await;
    let marker = out_dir.join("pre-stop");
    eventually(Duration::from_secs(20), || marker.exists()).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "bye\n");

    controller.publish_desired(3, vec![]).await;
    let rt = runtime(&data);
    eventually(Duration::from_secs(30), || rt.list().unwrap().is_empty()).await;
    agent.terminate();
}

/// A test's agent data dir with the busybox image `tag` waiting in its import dir;
/// every container it left is removed when the guard drops.
fn agent_dir(tag: &str) -> (tempfile::TempDir, PathBuf, Cleanup) {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("agent");
    let import = data.join("images/import");
    std::fs::create_dir_all(&import).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-busybox-image.sh");
    let made = Command::new(&script)
        .arg(import.join("busybox.tar"))
        .arg(tag)
        .status()
        .unwrap();
    assert!(made.success());
    let cleanup = Cleanup(data.clone());
    (tmp, data, cleanup)
}

/// A Mosquitto, a test controller and the agent on `data`, once the agent is online.
async fn online(data: &Path) -> (Mosquitto, Controller, AgentProcess) {
    let broker = Mosquitto::start();
    let mut controller = Controller::connect(broker.port).await;
    let agent = AgentProcess::spawn(&broker.url(), data);
    controller
        .wait_online("online", Duration::from_secs(20))
        .await;
    (broker, controller, agent)
}

/// Processes of every container and shim under `data` (the shim's pid file, the
/// container's running pid): what a power cut takes away.
fn kill_everything(data: &Path) {
    let rt = runtime(data);
    for c in rt.list().unwrap_or_default() {
        // pid 0 (a container still being created) would signal our own process group.
        if let ContainerState::Running { pid, .. } = c.state.clone() {
            if pid <= 0 {
                continue;
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let shim = data.join("containers").join(&c.config.id).join("shim.pid");
        if let Some(pid) = std::fs::read_to_string(shim)
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<i32>().ok())
            .filter(|p| *p > 0)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn running_names(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = runtime(data)
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        .map(|c| c.config.pod_name)
        .collect();
    names.sort();
    names
}

fn max_restarts(data: &Path, pod: &str) -> u32 {
    runtime(data)
        .list()
        .unwrap_or_default()
        .iter()
        .filter(|c| c.config.pod_name == pod)
        .map(|c| c.config.restart_count)
        .max()
        .unwrap_or(0)
}

/// Edge autonomy: with the broker gone, Pods keep running and crashing ones keep
/// restarting; after a simulated power cut the agent, still offline, starts the last
/// desired Pods from its own store; when the link returns, the controller's desired
/// state wins and the status reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_keep_running_offline_and_come_back_after_a_power_cut() {
    let (_tmp, data, _cleanup) = agent_dir("busybox:offline");

    let (broker, mut controller, agent) = online(&data).await;
    let port = broker.port;
    let uid = |n: &str| format!("uid-{n}-{}", std::process::id());
    let host_pod = |name: &str, command: &str| {
        let mut p = pod(name, &uid(name), "Always", command);
        p.spec.host_network = Some(true);
        p.spec.containers[0].image = "busybox:offline".into();
        p
    };
    let steady = host_pod("steady", "exec sleep 1000");
    let flaky = host_pod("flaky", "sleep 1; exit 1");
    controller
        .publish_desired(1, vec![steady.clone(), flaky.clone()])
        .await;
    controller
        .wait_status(Duration::from_secs(30), |r| {
            phase(r, "steady").as_deref() == Some("Running")
        })
        .await;
    let steady_id = runtime(&data)
        .list()
        .unwrap()
        .into_iter()
        .find(|c| c.config.pod_name == "steady")
        .unwrap()
        .config
        .id;

    // The broker goes away: nothing stops, the crashing container keeps restarting.
    drop(controller);
    drop(broker);
    let before = max_restarts(&data, "flaky");
    eventually(Duration::from_secs(30), || {
        max_restarts(&data, "flaky") >= before + 2
    })
    .await;
    let still = runtime(&data)
        .list()
        .unwrap()
        .into_iter()
        .find(|c| c.config.id == steady_id)
        .unwrap();
    assert!(matches!(still.state, ContainerState::Running { .. }));

    // A power cut: agent, shims and containers all gone; the agent comes back offline.
    drop(agent);
    kill_everything(&data);
    eventually(Duration::from_secs(10), || running_names(&data).is_empty()).await;
    let mut agent = AgentProcess::spawn(&format!("mqtts://127.0.0.1:{port}"), &data);
    eventually(Duration::from_secs(30), || {
        running_names(&data).contains(&"steady".to_string())
    })
    .await;

    // The link returns: the controller's desired state wins, the status arrives.
    let broker = Mosquitto::start_on(port);
    let mut controller = Controller::connect(broker.port).await;
    let fresh = host_pod("fresh", "exec sleep 1000");
    controller.publish_desired(2, vec![fresh.clone()]).await;
    controller
        .wait_status(Duration::from_secs(40), |r| {
            r.generation_seen == 2
                && phase(r, "fresh").as_deref() == Some("Running")
                && r.pods.iter().all(|p| p.name == "fresh")
        })
        .await;
    eventually(Duration::from_secs(30), || {
        running_names(&data) == vec!["fresh".to_string()]
    })
    .await;
    controller.publish_desired(3, vec![]).await;
    eventually(Duration::from_secs(30), || {
        runtime(&data).list().unwrap().is_empty()
    })
    .await;
    agent.terminate();
}

/// Init containers run before the app, and the app sees the emptyDir they filled, a
/// ConfigMap as files and a Secret as an environment variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_and_projected_volumes_on_real_containers() {
    let (tmp, data, _cleanup) = agent_dir("busybox:init");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    let (_broker, mut controller, mut agent) = online(&data).await;
    let objects = punnet_api::manifest::parse(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: app, namespace: default, uid: uid-init-{pid}}}
spec:
  nodeName: {NODE}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: conf, configMap: {{name: settings}}}}
  - {{name: out, hostPath: {{path: {out}}}}}
  initContainers:
  - name: prep
    image: busybox:init
    command: [sh, -c, "echo prepared > /work/flag"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: busybox:init
    command: [sh, -c, "cat /work/flag /conf/greeting > /out/tmp; echo >> /out/tmp; echo $PASSWORD >> /out/tmp; mv /out/tmp /out/result; exec sleep 1000"]
    env: [{{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}]
    volumeMounts: [{{name: work, mountPath: /work}}, {{name: conf, mountPath: /conf}}, {{name: out, mountPath: /out}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: default}}
data: {{greeting: hello from a configmap}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: default}}
stringData: {{password: hunter2}}
"#,
        pid = std::process::id(),
        out = out.display()
    ))
    .unwrap();
    let mut pods = Vec::new();
    for o in objects {
        match o {
            punnet_api::Object::Pod(p) => pods.push(p),
            punnet_api::Object::ConfigMap(c) => controller.config_maps.push(c),
            punnet_api::Object::Secret(s) => controller.secrets.push(s),
            _ => {}
        }
    }
    controller.publish_desired(1, pods).await;
    let result = out.join("result");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&result).is_ok_and(|t| t.lines().count() == 3) {
        assert!(
            std::time::Instant::now() < deadline,
            "no result ({:?}); main's log: {:?}; agent log:\n{}",
            std::fs::read_to_string(&result),
            std::fs::read_to_string(
                data.join("pods")
                    .join(format!("default_app_uid-init-{}", std::process::id()))
                    .join("main/0.log")
            ),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "prepared\nhello from a configmap\nhunter2\n"
    );
    let report = controller
        .wait_status(Duration::from_secs(20), |r| {
            phase(r, "app").as_deref() == Some("Running")
        })
        .await;
    let s = &report.pods[0].status;
    assert_eq!(s.init_container_statuses[0].name, "prep");
    assert!(s.init_container_statuses[0].ready, "{s:?}");
    assert!(s
        .conditions
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True"));
    controller.publish_desired(2, vec![]).await;
    eventually(Duration::from_secs(30), || {
        runtime(&data).list().unwrap().is_empty()
    })
    .await;
    agent.terminate();
}

/// A Pod whose disk emptyDir grows past its sizeLimit is evicted: stopped, phase
/// Failed, reason Evicted, and not started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_dir_over_its_size_limit_evicts_the_pod() {
    let (_tmp, data, _cleanup) = agent_dir("busybox:evict");
    let (_broker, mut controller, mut agent) = online(&data).await;
    let mut hog = pod(
        "hog",
        &format!("uid-hog-{}", std::process::id()),
        "Always",
        "dd if=/dev/zero of=/scratch/fill bs=1048576 count=3; exec sleep 1000",
    );
    hog.spec.host_network = Some(true);
    hog.spec.containers[0].image = "busybox:evict".into();
    hog.spec.volumes = vec![punnet_api::pod::Volume {
        name: "scratch".into(),
        empty_dir: Some(punnet_api::pod::EmptyDirVolumeSource {
            medium: None,
            size_limit: Some("1Mi".into()),
        }),
        ..Default::default()
    }];
    hog.spec.containers[0].volume_mounts = vec![punnet_api::pod::VolumeMount {
        name: "scratch".into(),
        mount_path: "/scratch".into(),
        ..Default::default()
    }];
    controller.publish_desired(1, vec![hog]).await;
    let report = controller
        .wait_status(Duration::from_secs(40), |r| {
            r.pods.first().is_some_and(|p| {
                p.status.reason.as_deref() == Some("Evicted")
                    && p.status.phase.as_deref() == Some("Failed")
                    && p.status.container_statuses[0].state.running.is_none()
            })
        })
        .await;
    let message = report.pods[0].status.message.clone().unwrap_or_default();
    assert!(
        message.contains("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\""),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        running_names(&data).is_empty(),
        "an evicted Pod is not restarted"
    );
    controller.publish_desired(2, vec![]).await;
    eventually(Duration::from_secs(30), || {
        runtime(&data).list().unwrap().is_empty()
    })
    .await;
    agent.terminate();
}
