use punnet_api::manifest::parse;
use punnet_api::Object;

use super::*;

fn now() -> DateTime<Utc> {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

/// A Pod as the controller reports it: scheduled, one container crash-looping.
const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-7d4b9c-x2x
  namespace: default
  labels: {app: web, pod-template-hash: 7d4b9c}
  creationTimestamp: "2024-05-01T11:50:00Z"
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c, uid: u1, controller: true}
spec:
  nodeName: pi-1
  containers:
  - name: web
    image: busybox:1.36
    command: [sh, -c]
    args: ["echo hi; exit 1"]
    env: [{name: GREETING, value: hello}]
    resources:
      limits: {cpu: 500m, memory: 64Mi}
      requests: {cpu: 100m}
    volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
  volumes:
  - name: data
    hostPath: {path: /srv/web, type: DirectoryOrCreate}
status:
  phase: Running
  hostIP: 192.168.1.10
  podIP: 10.42.0.7
  startTime: "2024-05-01T11:50:02Z"
  conditions:
  - {type: PodScheduled, status: "True"}
  - {type: Ready, status: "False", reason: ContainersNotReady, message: "containers with unready status: [web]"}
  containerStatuses:
  - name: web
    image: busybox:1.36
    ready: false
    restartCount: 3
    state:
      waiting: {reason: CrashLoopBackOff}
    lastState:
      terminated:
        exitCode: 1
        reason: Error
        startedAt: "2024-05-01T11:58:00Z"
        finishedAt: "2024-05-01T11:58:01Z"
"#;

fn pod() -> Pod {
    match parse(POD).unwrap().remove(0) {
        Object::Pod(p) => p,
        other => panic!("expected a Pod, got {other:?}"),
    }
}

#[test]
fn sample_pod() {
    let text = describe_pod(&pod());
    assert_eq!(text, SAMPLE_POD, "got:\n{text}");
}

const SAMPLE_POD: &str = "\
Name:           web-7d4b9c-x2x
Namespace:      default
Node:           pi-1/192.168.1.10
Start Time:     Wed, 01 May 2024 11:50:02 +0000
Labels:         app=web
                pod-template-hash=7d4b9c
Annotations:    <none>
Status:         Running
IP:             10.42.0.7
Controlled By:  ReplicaSet/web-7d4b9c
Containers:
  web:
    Image:      busybox:1.36
    Port:       <none>
    Host Port:  <none>
    Command:
      sh
      -c
    Args:
      echo hi; exit 1
    State:          Waiting
      Reason:       CrashLoopBackOff
    Last State:     Terminated
      Reason:       Error
      Exit Code:    1
      Started:      Wed, 01 May 2024 11:58:00 +0000
      Finished:     Wed, 01 May 2024 11:58:01 +0000
    Ready:          False
    Restart Count:  3
    Limits:
      cpu:     500m
      memory:  64Mi
    Requests:
      cpu:  100m
    Environment:
      GREETING:  hello
    Mounts:
      /data from data (ro)
Conditions:
  Type          Status  Reason              Message
  PodScheduled  True
  Ready         False   ContainersNotReady  containers with unready status: [web]
Volumes:
  data:
    Type:          HostPath (bare host directory volume)
    Path:          /srv/web
    HostPathType:  DirectoryOrCreate
QoS Class:         Burstable
Node-Selectors:    <none>
Tolerations:       <none>
";

#[test]
fn unscheduled_pod_shows_why() {
    let mut p = pod();
    p.spec.node_name = None;
    p.status = Default::default();
    p.status.phase = Some("Pending".into());
    p.status.conditions.push(punnet_api::PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some("0/2 nodes available: 2 Insufficient memory.".into()),
        last_transition_time: None,
    });
    let text = describe_pod(&p);
    assert!(text.contains("Node:           <none>\n"), "{text}");
    assert!(
        text.contains(
            "  PodScheduled  False   Unschedulable  0/2 nodes available: 2 Insufficient memory.\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("Restart Count"),
        "no status, no status fields:\n{text}"
    );
}

#[test]
fn qos_classes() {
    let mut spec = pod().spec;
    assert_eq!(qos_class(&spec), "Burstable");
    let r = &mut spec.containers[0].resources;
    r.requests.clear();
    r.limits.insert("cpu".into(), "0.5".into());
    assert_eq!(
        qos_class(&spec),
        "Guaranteed",
        "requests default to limits; 0.5 == 500m"
    );
    spec.containers[0].resources = Default::default();
    assert_eq!(qos_class(&spec), "BestEffort");
}

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: pi-1
  labels: {kubernetes.io/arch: arm64, kubernetes.io/hostname: pi-1}
  creationTimestamp: "2024-04-01T00:00:00Z"
status:
  capacity: {cpu: "4", memory: 4Gi, pods: "110"}
  allocatable: {cpu: "4", memory: 3Gi, pods: "110"}
  conditions:
  - type: Ready
    status: "True"
    reason: AgentReady
    lastHeartbeatTime: "2024-05-01T11:59:50Z"
    lastTransitionTime: "2024-04-01T00:00:10Z"
  addresses:
  - {type: InternalIP, address: 192.168.1.10}
  - {type: Hostname, address: pi-1}
  nodeInfo:
    architecture: arm64
    operatingSystem: linux
    osImage: Debian GNU/Linux 12 (bookworm)
    kernelVersion: 6.6.31+rpt-rpi-v8
    kubeletVersion: v0.1.0
"#;

#[test]
fn node_with_its_pods() {
    let Object::Node(node) = parse(NODE).unwrap().remove(0) else {
        panic!("expected a Node")
    };
    let mut done = pod();
    done.metadata.name = "job-1".into();
    done.status.phase = Some("Succeeded".into());
    let mut elsewhere = pod();
    elsewhere.spec.node_name = Some("pi-2".into());
    let text = describe_node(&node, &[pod(), done, elsewhere], None, now());
    for want in [
        "Name:               pi-1\n",
        "Roles:              <none>\n",
        "Labels:             kubernetes.io/arch=arm64\n                    kubernetes.io/hostname=pi-1\n",
        "  Ready  True    Wed, 01 May 2024 11:59:50 +0000  Mon, 01 Apr 2024 00:00:10 +0000  AgentReady\n",
        "Addresses:\n  InternalIP:  192.168.1.10\n  Hostname:    pi-1\n",
        "  Architecture:       arm64\n",
        "  Agent Version:      v0.1.0\n",
        "Non-terminated Pods:  (1 in total)\n",
        "  default             web-7d4b9c-x2x  100m (2%)     500m (12%)  0 (0%)           64Mi (2%)      10m\n",
        "  cpu       100m (2%)  500m (12%)\n",
        "  memory    0 (0%)     64Mi (2%)\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("job-1"), "terminated Pods are left out");
}

#[test]
fn deployment_replicas_and_template() {
    let text = describe_deployment(&deployment(), &[]);
    for want in [
        "Selector:               app=web\n",
        "Replicas:               3 desired | 3 updated | 3 total | 2 available | 1 unavailable\n",
        "StrategyType:           RollingUpdate\nMinReadySeconds:        0\nRollingUpdateStrategy:  25% max unavailable, 25% max surge\n",
        "OldReplicaSets:  <none>\nNewReplicaSet:   <none>\n",
        "Pod Template:\n  Labels:  app=web\n  Containers:\n    web:\n      Image:        busybox:1.36\n",
        // Aligned with the OldReplicaSets block below it, as kubectl's tabwriter does.
        "  Type           Status  Reason\n  ----           ------  ------\n  Available      True    MinimumReplicasAvailable\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

fn deployment() -> Deployment {
    let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, creationTimestamp: "2024-05-01T11:00:00Z"}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "busybox:1.36"}]
status:
  replicas: 3
  updatedReplicas: 3
  readyReplicas: 2
  availableReplicas: 2
  unavailableReplicas: 1
  conditions:
  - {type: Available, status: "True", reason: MinimumReplicasAvailable}
"#;
    match parse(text).unwrap().remove(0) {
        Object::Deployment(d) => d,
        other => panic!("expected a Deployment, got {other:?}"),
    }
}

/// A Pod using what issue 3 added: init containers, probes, env from ConfigMaps and
/// Secrets, emptyDir/configMap/secret volumes, Pod IPs, an image being pulled.
const RICH_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: default}
spec:
  nodeName: pi-1
  initContainers:
  - name: migrate
    image: busybox
    command: [sh, -c, "true"]
  containers:
  - name: web
    image: nginx:1.25
    livenessProbe:
      httpGet: {path: /healthz, port: 8080}
    readinessProbe:
      tcpSocket: {port: http}
      periodSeconds: 5
    startupProbe:
      exec: {command: [cat, /tmp/ready]}
      failureThreshold: 30
    envFrom:
    - configMapRef: {name: web-env}
    - secretRef: {name: api-keys}
      prefix: API_
    env:
    - {name: MODE, value: prod}
    - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
    - {name: LEVEL, valueFrom: {configMapKeyRef: {name: web-env, key: level, optional: true}}}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
  volumes:
  - {name: cache, emptyDir: {medium: Memory, sizeLimit: 64Mi}}
  - {name: conf, configMap: {name: web-conf}}
  - {name: tls, secret: {secretName: web-tls, optional: true}}
status:
  phase: Pending
  podIP: 10.42.0.9
  podIPs: [{ip: 10.42.0.9}]
  initContainerStatuses:
  - name: migrate
    state:
      terminated: {exitCode: 0, reason: Completed}
  containerStatuses:
  - name: web
    state:
      waiting: {reason: ContainerCreating, message: "Pulling image nginx:1.25: 12.3 MiB of 40.1 MiB"}
"#;

#[test]
fn pod_with_init_containers_probes_env_sources_and_new_volumes() {
    let pod = match parse(RICH_POD).unwrap().remove(0) {
        Object::Pod(p) => p,
        other => panic!("not a Pod: {other:?}"),
    };
    let text = describe_pod(&pod);
    let expect = [
        "IPs:\n  IP:  10.42.0.9\n",
        "Init Containers:\n  migrate:\n    Image:      busybox\n",
        "      Reason:       Completed\n",
        "    Liveness:       http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3\n",
        "    Readiness:      tcp-socket :http delay=0s timeout=1s period=5s #success=1 #failure=3\n",
        "    Startup:        exec [cat /tmp/ready] delay=0s timeout=1s period=10s #success=1 #failure=30\n",
        "    Environment Variables from:\n      web-env   ConfigMap                  Optional: false\n      api-keys  Secret with prefix 'API_'  Optional: false\n",
        "      MODE:         prod\n",
        "      DB_PASSWORD:  <set to the key 'password' in secret 'db'>        Optional: false\n",
        "      LEVEL:        <set to the key 'level' of config map 'web-env'>  Optional: true\n",
        "      POD:           (v1:metadata.name)\n",
        "      Message:      Pulling image nginx:1.25: 12.3 MiB of 40.1 MiB\n",
        "    Type:       EmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:     Memory\n    SizeLimit:  64Mi\n",
        "    Type:      ConfigMap (a volume populated by a ConfigMap)\n    Name:      web-conf\n    Optional:  false\n",
        "    Type:        Secret (a volume populated by a Secret)\n    SecretName:  web-tls\n    Optional:    true\n",
    ];
    for e in expect {
        assert!(text.contains(e), "missing {e:?} in:\n{text}");
    }
    assert_eq!(pod.display_status(), "ContainerCreating");
}

#[test]
fn node_taints_and_pod_tolerations_in_kubectl_form() {
    let Object::Node(mut node) = parse(NODE).unwrap().remove(0) else {
        panic!("expected a Node")
    };
    for key in ["node.kubernetes.io/unreachable", "dedicated"] {
        node.spec
            .taints
            .push(punnet_api::Taint::new(key, "NoExecute"));
    }
    let text = describe_node(&node, &[], None, now());
    assert!(
        text.contains("Taints:             node.kubernetes.io/unreachable:NoExecute\n                    dedicated:NoExecute\nUnschedulable:      false\n"),
        "{text}"
    );
    let mut p = pod();
    p.spec.tolerations.push(punnet_api::Toleration {
        key: Some("node.kubernetes.io/not-ready".into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(600),
        ..Default::default()
    });
    let text = describe_pod(&p);
    assert!(
        text.contains(
            "Tolerations:       node.kubernetes.io/not-ready:NoExecute op=Exists for 600s\n"
        ),
        "{text}"
    );
}
