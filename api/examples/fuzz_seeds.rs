//! Writes the structure-aware seed inputs of the fuzz targets (fuzz/): valid encoded
//! wire messages of every kind (whole messages and bare payloads), envelopes of the
//! wrong version and kind, the manifests in examples/ as YAML and as JSON, topics,
//! quantities and selectors. libFuzzer mutates from these instead of from nothing, so it
//! reaches the message and manifest decoders in its first seconds.
//!
//! `cargo run -p punnet-api --example fuzz_seeds -- fuzz/corpus` (from the repo root),
//! then `cargo +nightly fuzz cmin <target>` keeps only what adds coverage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use punnet_api::manifest::parse;
use punnet_api::object::Object;
use punnet_api::wire::{
    self, AgentEvent, ContainerUsage, DesiredState, Envelope, LogChunk, LogRequest, Message,
    MessageKind, NodeFacts, NodeStatusReport, PodReport, PROTOCOL_VERSION,
};
use punnet_api::{ConfigMap, PodStatus, Secret, Time};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, uid: u-1, labels: {app: web}, creationTimestamp: "2026-11-24T17:00:00Z"}
spec:
  nodeName: pi-1
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 5
  volumes: [{name: data, hostPath: {path: /srv/data, type: DirectoryOrCreate}}]
  tolerations: [{key: dedicated, operator: Equal, value: edge, effect: NoSchedule}]
  containers:
  - name: web
    image: busybox:latest
    command: [sh, -c]
    args: ["echo hi; sleep 100"]
    env: [{name: A, value: "1"}, {name: B}]
    resources: {limits: {memory: 64Mi, cpu: 250m}, requests: {cpu: 100m}}
    volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
    ports: [{name: http, containerPort: 80, hostPort: 8080}]
    livenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 5}
    readinessProbe: {tcpSocket: {port: 80}}
    securityContext: {capabilities: {add: [NET_ADMIN]}, runAsUser: 1000}
"#;

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");

    let pod = match parse(POD).expect("the seed Pod parses").remove(0) {
        Object::Pod(p) => p,
        _ => unreachable!("the seed is a Pod"),
    };
    let desired = DesiredState {
        node: "pi-1".into(),
        generation: 42,
        epoch: 1,
        pods: vec![pod.clone()],
        pod_cidr: Some("10.42.3.0/24".into()),
        config_maps: vec![ConfigMap {
            data: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        }],
        secrets: vec![Secret {
            data: [("password".to_string(), "aHVudGVyMg==".to_string())].into(),
            ..Default::default()
        }],
    };
    let status = NodeStatusReport {
        node: "pi-1".into(),
        generation_seen: 42,
        sent_at: Time::now(),
        facts: NodeFacts {
            hostname: "pi-1".into(),
            arch: "arm64".into(),
            os: "linux".into(),
            cpus: 4,
            memory_bytes: 1 << 30,
            addresses: vec!["192.168.1.20".into()],
            labels: BTreeMap::from([("room".into(), "kitchen".into())]),
            temperature_millicelsius: Some(51_000),
            throttled: Some(0x50000),
            cgroup_version: 2,
            memory_cgroup: true,
            platform: "arm64".into(),
            ..Default::default()
        },
        pods: vec![PodReport {
            namespace: "default".into(),
            name: "web-1".into(),
            uid: "u-1".into(),
            status: PodStatus {
                phase: Some("Running".into()),
                start_time: Some(Time::now()),
                ..PodStatus::default()
            },
            usage: vec![ContainerUsage {
                container: "web".into(),
                cpu_millis: 12,
                memory_bytes: 3 << 20,
            }],
        }],
        events: vec![AgentEvent {
            namespace: "default".into(),
            pod: "web-1".into(),
            uid: "u-1".into(),
            container: Some("web".into()),
            warning: true,
            reason: "BackOff".into(),
            message: "Back-off restarting failed container web".into(),
            count: 3,
        }],
    };
    let request = LogRequest {
        id: "7".into(),
        namespace: "default".into(),
        pod: "web-1".into(),
        container: Some("web".into()),
        follow: true,
        tail_lines: Some(10),
        cancel: false,
    };
    let chunk = LogChunk {
        id: "7".into(),
        seq: 3,
        data: b"hello\n".to_vec(),
        done: false,
        error: None,
    };
    let failed = LogChunk {
        id: "8".into(),
        seq: 0,
        data: Vec::new(),
        done: true,
        error: Some("pod default/web-1 has no container \"x\"".into()),
    };

    let mut envelopes = Vec::new();
    message(&out, "wire_desired", &desired, &mut envelopes);
    message(
        &out,
        "wire_desired",
        &DesiredState::default(),
        &mut envelopes,
    );
    message(&out, "wire_status", &status, &mut envelopes);
    message(&out, "wire_log_request", &request, &mut envelopes);
    message(&out, "wire_log_chunk", &chunk, &mut envelopes);
    message(&out, "wire_log_chunk", &failed, &mut envelopes);
    for kind in [MessageKind::DesiredState, MessageKind::LogChunk] {
        for version in [0, PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, u16::MAX] {
            envelopes.push(wire::encode_envelope(&Envelope {
                version,
                kind,
                payload: vec![1, 2, 3],
                signature: vec![9; 64],
            }));
        }
    }
    for (i, env) in envelopes.iter().enumerate() {
        write(&out, "wire_envelope", &format!("seed-{i}"), env);
    }

    let mut manifests: Vec<(String, String)> = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples/ is readable")
        .map(|e| e.expect("examples/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("example manifest is readable");
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let json: Vec<_> = parse(&text)
            .expect("example manifests parse")
            .iter()
            .map(Object::to_json)
            .collect();
        manifests.push((
            format!("{stem}.json"),
            serde_json::to_string(&json).unwrap(),
        ));
        manifests.push((format!("{stem}.yaml"), text));
    }
    manifests.push(("pod.yaml".into(), POD.into()));
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [pod_json(&pod)]});
    manifests.push(("list.json".into(), list.to_string()));
    manifests.push(("multi.yaml".into(), format!("{POD}---\n---\n{POD}")));
    for (name, text) in &manifests {
        write(&out, "manifest", name, text.as_bytes());
    }

    let topics = [
        "punnet/v1\npunnet/v1/nodes/pi-1/status",
        "fleet/\nfleet/nodes/pi-1/logs/reply/42",
        "pi-kitchen",
    ];
    let quantities = ["128Mi", "250m", "1.5Gi", "1e3", "0.5", "2", "512Ki", "1T"];
    let selectors = [
        "app=web,tier!=db,env in (prod, staging),!legacy,zone\napp=web\nzone=a\nenv=prod",
        "kubernetes.io/arch==arm64\nkubernetes.io/arch=arm64",
        "env notin (dev)",
    ];
    for (target, inputs) in [
        ("topics", &topics[..]),
        ("quantity", &quantities[..]),
        ("selector", &selectors[..]),
    ] {
        for (i, text) in inputs.iter().enumerate() {
            write(&out, target, &format!("seed-{i}"), text.as_bytes());
        }
    }
}

fn pod_json(pod: &punnet_api::Pod) -> serde_json::Value {
    punnet_api::object::to_json(pod)
}

/// A message as a whole (envelope and payload) and as a bare payload; the envelope is
/// also kept for the envelope target.
fn message<M: Message>(out: &Path, target: &str, msg: &M, envelopes: &mut Vec<Vec<u8>>) {
    let whole = wire::encode(msg);
    let payload = wire::open(&whole).expect("a fresh message opens").payload;
    let n = envelopes.len();
    write(out, target, &format!("seed-{n}-message"), &whole);
    write(out, target, &format!("seed-{n}-payload"), &payload);
    envelopes.push(whole);
}

fn write(out: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
