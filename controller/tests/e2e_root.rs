//! The whole slice end to end with real processes, as a user runs it: a controller with
//! its embedded broker, an agent process running real busybox containers, and the
//! `punnet` CLI. Needs root (containers, cgroups, overlayfs): it panics rather than
//! skipping when not root. The agent and CLI binaries come from the same target
//! directory (`cargo test --workspace` builds them).

mod fleet_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_support::{bin, eventually, Fleet};
use serde_json::Value;

fn deployment(name: &str, replicas: u32, marker: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox:latest
        command: [sh, -c, 'echo "hello {marker}"; exec sleep {marker}']
        resources: {{limits: {{memory: 32Mi, cpu: 200m}}}}
"#
    )
}

#[test]
fn deployment_runs_scales_logs_and_cleans_up() {
    let fleet = Fleet::start("e2e-main");
    let marker = "7771";
    let out = fleet.apply("web.yaml", &deployment("web", 2, marker));
    assert_eq!(out.trim(), "deployment.apps/web created");

    let pods = eventually("2 Running Pods", Duration::from_secs(30), || {
        let pods = fleet.running("app=web");
        (pods.len() == 2).then_some(pods)
    });
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], "e2e-main");
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 10 + 1 + 5,
            "{name}"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    }
    let wide = fleet.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.contains("e2e-main") && wide.contains("Running"),
        "{wide}"
    );
    assert_eq!(Fleet::processes(&format!("sleep {marker}")).len(), 2);

    // The log line, read through the controller and MQTT from the agent.
    let pod = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    let logs = eventually("the log line", Duration::from_secs(10), || {
        let out = fleet.punnet(&["logs", &pod]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("hello").then_some(text)
    });
    assert_eq!(logs, format!("hello {marker}\n"));

    fleet.ok(&["scale", "deployment", "web", "--replicas", "3"]);
    eventually("3 Running Pods", Duration::from_secs(30), || {
        (fleet.running("app=web").len() == 3).then_some(())
    });
    // The Deployment's status follows its Pods' a moment later.
    eventually("the Deployment READY 3/3", Duration::from_secs(10), || {
        fleet
            .ok(&["get", "deployment", "web"])
            .contains("3/3")
            .then_some(())
    });

    // Rollouts: a restart rolls the same template out again, Pod by Pod, and undo
    // goes back to the previous revision's ReplicaSet.
    let out = fleet.ok(&["rollout", "restart", "deployment", "web"]);
    assert_eq!(out.trim(), "deployment.apps/web restarted");
    let out = fleet.ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert!(
        out.trim_end()
            .ends_with("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let out = fleet.ok(&["rollout", "history", "deployment", "web"]);
    assert!(
        out.contains("REVISION  CHANGE-CAUSE\n1 ") && out.contains("\n2 "),
        "{out}"
    );
    let out = fleet.ok(&["get", "rs"]);
    assert_eq!(out.lines().count(), 3, "two ReplicaSets: {out}");
    let out = fleet.ok(&["rollout", "undo", "deployment", "web"]);
    assert_eq!(out.trim(), "deployment.apps/web rolled back");
    fleet.ok(&["rollout", "status", "deployment", "web", "--timeout", "60s"]);
    let out = fleet.ok(&["describe", "deployment", "web"]);
    assert!(
        out.contains("NewReplicaSet:") && out.contains("(3/3 replicas created)"),
        "{out}"
    );
    eventually(
        "3 Running Pods after the undo",
        Duration::from_secs(30),
        || (fleet.running("app=web").len() == 3).then_some(()),
    );

    fleet.ok(&["scale", "deployment", "web", "--replicas", "1"]);
    eventually("1 Pod and 1 container", Duration::from_secs(30), || {
        (fleet.pods("app=web").len() == 1
            && Fleet::processes(&format!("sleep {marker}")).len() == 1)
            .then_some(())
    });

    let out = fleet.ok(&["delete", "deployment", "web"]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    eventually(
        "every container, shim, mount and cgroup gone",
        Duration::from_secs(30),
        || {
            let data = fleet.agent_dir().to_string_lossy().into_owned();
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
            let cgroups_left = ["memory", "cpu", "pids"].iter().any(|c| {
                std::fs::read_dir(Path::new("/sys/fs/cgroup").join(c).join("punnet"))
                    .map(|d| {
                        d.flatten().any(|e| {
                            pods.iter().any(|p| {
                                e.file_name()
                                    .to_string_lossy()
                                    .starts_with(p["metadata"]["uid"].as_str().unwrap())
                            })
                        })
                    })
                    .unwrap_or(false)
            });
            (fleet.pods("app=web").is_empty()
                && Fleet::processes(&format!("sleep {marker}")).is_empty()
                && Fleet::processes(&format!("{data}/containers")).is_empty()
                && !mounts.contains(&data)
                && !cgroups_left
                && fleet.container_dirs().is_empty())
            .then_some(())
        },
    );
}

#[test]
fn agent_and_controller_survive_sigkill() {
    let mut fleet = Fleet::start("e2e-kill");
    let marker = "7772";
    fleet.apply("kill.yaml", &deployment("kill", 2, marker));
    let before = eventually("2 Running Pods", Duration::from_secs(30), || {
        let pods = fleet.running("app=kill");
        (pods.len() == 2).then_some(pods)
    });
    let pids = Fleet::processes(&format!("sleep {marker}"));
    assert_eq!(pids.len(), 2);

    // The agent dies hard: containers keep running, a new agent adopts them.
    Fleet::kill(&mut fleet.agent);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        Fleet::processes(&format!("sleep {marker}")),
        pids,
        "containers must outlive the agent"
    );
    fleet.start_agent();
    std::thread::sleep(Duration::from_secs(4));
    let mut after = Fleet::processes(&format!("sleep {marker}"));
    after.sort();
    let mut expected = pids.clone();
    expected.sort();
    assert_eq!(
        after, expected,
        "the restarted agent must adopt, not duplicate"
    );
    let pods = fleet.running("app=kill");
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    }

    // The controller dies hard: acknowledged objects are still there and the desired
    // state is published again by the restarted controller and its fresh broker.
    fleet.apply("extra.yaml", &deployment("extra", 1, "7773"));
    Fleet::kill(&mut fleet.controller);
    fleet.start_controller();
    let names: Vec<String> = before
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let out = fleet.ok(&["get", "deployments"]);
    assert!(out.contains("kill") && out.contains("extra"), "{out}");
    eventually(
        "extra's Pod Running after the restart",
        Duration::from_secs(30),
        || (fleet.running("app=extra").len() == 1).then_some(()),
    );
    let now: Vec<String> = fleet
        .running("app=kill")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(now.len(), 2);
    for n in &names {
        assert!(
            now.contains(n),
            "Pod {n} lost across the controller restart: {now:?}"
        );
    }
    assert_eq!(Fleet::processes(&format!("sleep {marker}")).len(), 2);
    fleet.ok(&["delete", "deployment", "kill", "extra"]);
}

#[test]
fn oom_kill_and_crash_backoff_are_reported() {
    let fleet = Fleet::start("e2e-fail");
    fleet.apply(
        "fail.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox:latest
    command: [sh, -c, 'x=0123456789abcdef; while true; do x="$x$x"; done']
    resources: {limits: {memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - name: crasher
    image: busybox:latest
    command: [sh, -c, 'echo crashing; exit 3']
"#,
    );
    let hog = eventually("hog OOMKilled", Duration::from_secs(60), || {
        let out = fleet.ok(&["get", "pod", "hog", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        (v["status"]["phase"] == "Failed").then_some(v)
    });
    let term = &hog["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["reason"], "OOMKilled", "{hog}");
    assert_eq!(term["exitCode"], 137);
    let described = fleet.ok(&["describe", "pod", "hog"]);
    assert!(described.contains("OOMKilled"), "{described}");

    // Restarts with back-off (1 s base in this test): the count goes up and the Pod is
    // seen waiting in CrashLoopBackOff between runs.
    let mut saw_backoff = false;
    eventually("crasher restarted twice", Duration::from_secs(60), || {
        let out = fleet.ok(&["get", "pod", "crasher", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let cs = &v["status"]["containerStatuses"][0];
        if cs["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
            saw_backoff = true;
        }
        (cs["restartCount"].as_i64().unwrap_or(0) >= 2 && saw_backoff).then_some(())
    });
    let table = fleet.ok(&["get", "pods"]);
    assert!(table.contains("crasher"), "{table}");
    fleet.ok(&["delete", "pod", "hog", "crasher"]);
}

#[test]
fn logs_follow_streams_new_lines() {
    use std::io::{BufRead, BufReader};

    let fleet = Fleet::start("e2e-logs");
    fleet.apply(
        "ticker.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: ticker
    image: busybox:latest
    command: [sh, -c, 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.3; done']
"#,
    );
    eventually("ticker Running", Duration::from_secs(30), || {
        (fleet
            .running("")
            .iter()
            .any(|p| p["metadata"]["name"] == "ticker"))
        .then_some(())
    });
    let token = std::fs::read_to_string(fleet.controller_dir().join("admin.token")).unwrap();
    let mut follow = Command::new(bin("punnet"))
        .args(["logs", "-f", "--tail", "1", "ticker"])
        .env("PUNNET_SERVER", format!("https://127.0.0.1:{}", fleet.http))
        .env("PUNNET_CA", fleet.controller_dir().join("ca.pem"))
        .env("PUNNET_TOKEN", token.trim())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    // Lines written after the request arrive while the command keeps running.
    let ticks: Vec<u64> = (0..4)
        .map(|_| {
            let line = lines.next().expect("logs -f ended early").unwrap();
            line.strip_prefix("tick ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected log line {line:?}"))
        })
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "lines out of order or missing: {ticks:?}"
    );
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs -f must keep following"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    fleet.ok(&["delete", "pod", "ticker"]);
}

/// A Pod whose container ignores SIGTERM, so it stops only at SIGKILL after 3 s.
fn stubborn_pod(name: &str, marker: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: busybox:latest
    command: [sh, -c, 'trap "" TERM; echo stubborn-{marker}; while true; do sleep 1; done']
"#
    )
}

#[test]
fn deleting_a_pod_is_graceful_and_waits_for_its_container() {
    let fleet = Fleet::start("e2e-grace");
    let (marker_a, marker_b) = ("stubborn-7775", "stubborn-7776");
    fleet.apply("a.yaml", &stubborn_pod("stubborn-a", "7775"));
    fleet.apply("b.yaml", &stubborn_pod("stubborn-b", "7776"));
    eventually("both Pods Running", Duration::from_secs(30), || {
        (fleet.running("").len() == 2
            && !Fleet::processes(marker_a).is_empty()
            && !Fleet::processes(marker_b).is_empty())
        .then_some(())
    });

    // --wait=false: back at once; the Pod shows Terminating while its container runs.
    let out = fleet.ok(&["delete", "pod", "stubborn-a", "--wait=false"]);
    assert_eq!(out.trim(), r#"pod "stubborn-a" deleted"#);
    let table = fleet.ok(&["get", "pod", "stubborn-a"]);
    assert!(table.contains("Terminating"), "{table}");
    assert!(
        !Fleet::processes(marker_a).is_empty(),
        "the container ignores SIGTERM and must still run"
    );
    let json = fleet.ok(&["get", "pod", "stubborn-a", "-o", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 3, "{v}");
    // It leaves the API only once its container process is gone. Asked in this order:
    // once the API says gone, the process must already be gone.
    eventually(
        "stubborn-a gone from the API",
        Duration::from_secs(30),
        || {
            let out = fleet.punnet(&["get", "pod", "stubborn-a", "-o", "json"]);
            if out.status.success() {
                return None;
            }
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("NotFound"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                Fleet::processes(marker_a).is_empty(),
                "the Pod left the API while its container still runs"
            );
            Some(())
        },
    );

    // Plain delete waits until the Pod is gone (the SIGKILL comes after 3 s).
    let started = std::time::Instant::now();
    let out = fleet.ok(&["delete", "pod", "stubborn-b"]);
    assert_eq!(out.trim(), r#"pod "stubborn-b" deleted"#);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "delete returned after {:?}, before the container could have stopped",
        started.elapsed()
    );
    let out = fleet.punnet(&["get", "pod", "stubborn-b"]);
    assert!(!out.status.success(), "stubborn-b still there after delete");
    assert!(Fleet::processes(marker_b).is_empty());
}
