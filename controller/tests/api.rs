//! The REST API end to end: a real server on 127.0.0.1:0 over a temporary sled store,
//! driven with reqwest the way `punnet` and kubectl drive it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use punnet_api::wire::LogRequest;
use punnet_api::{Deployment, Pod};
use punnet_controller::http::{serve, ApiState, LogError, LogSource, LogStream, Tokens};
use punnet_controller::metrics::Metrics;
use punnet_controller::store::Store;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";

// ---- a fake LogSource ------------------------------------------------------------

/// Serves "line 1", then waits for `gate`, then "line 2"; while following it then sends
/// a tick every 20 ms until the HTTP side drops the stream, which it reports.
#[derive(Default)]
struct FakeLogs {
    requests: Mutex<Vec<(String, LogRequest)>>,
    gate: Arc<Notify>,
    cancelled: Arc<Notify>,
}

impl LogSource for FakeLogs {
    fn open(&self, node: &str, request: LogRequest) -> BoxFuture<'_, Result<LogStream, LogError>> {
        let node = node.to_string();
        Box::pin(async move {
            self.requests
                .lock()
                .unwrap()
                .push((node.clone(), request.clone()));
            if node == "pi-down" {
                return Err(LogError::NodeUnavailable {
                    node,
                    reason: "it is offline".into(),
                });
            }
            let (tx, stream) = LogStream::channel(4);
            let (gate, cancelled) = (self.gate.clone(), self.cancelled.clone());
            tokio::spawn(async move {
                let _ = tx.send(Ok(b"line 1\n".to_vec())).await;
                if !request.follow {
                    let _ = tx.send(Ok(b"line 2\n".to_vec())).await;
                    return;
                }
                gate.notified().await;
                let _ = tx.send(Ok(b"line 2\n".to_vec())).await;
                loop {
                    tokio::select! {
                        () = tx.closed() => break,
                        () = tokio::time::sleep(Duration::from_millis(20)) => {
                            if tx.send(Ok(b"tick\n".to_vec())).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                cancelled.notify_one();
            });
            Ok(stream)
        })
    }
}

// ---- the test server ---------------------------------------------------------------

struct Server {
    base: String,
    client: reqwest::Client,
    store: Arc<Store>,
    logs: Arc<FakeLogs>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

/// The parts of a response a test looks at.
struct Reply {
    code: StatusCode,
    body: Value,
}

impl Reply {
    fn rv(&self) -> String {
        self.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts a `Status` failure with this code and reason; returns its message.
    fn failure(&self, code: u16, reason: &str) -> String {
        assert_eq!(self.code.as_u16(), code, "{}", self.body);
        assert_eq!(self.body["kind"], "Status", "{}", self.body);
        assert_eq!(self.body["status"], "Failure", "{}", self.body);
        assert_eq!(self.body["reason"], reason, "{}", self.body);
        assert_eq!(self.body["code"], code, "{}", self.body);
        self.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let logs = Arc::new(FakeLogs::default());
    let metrics = Arc::new(Metrics::default());
    let state = ApiState::new(store.clone(), Arc::new(Tokens::new(TOKEN)), logs.clone())
        .with_metrics(metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    Server {
        base,
        client: reqwest::Client::new(),
        store,
        logs,
        metrics,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

impl Server {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.unwrap();
        let code = resp.status();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { code, body }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(&body))
            .await
    }

    async fn patch(&self, path: &str, content_type: &str, body: impl Into<String>) -> Reply {
        let req = self
            .request(reqwest::Method::PATCH, path)
            .header("content-type", content_type)
            .body(body.into());
        self.send(req).await
    }

    async fn apply(&self, path: &str, yaml: &str) -> Reply {
        self.patch(
            &format!("{path}?fieldManager=punnet&force=true"),
            APPLY,
            yaml,
        )
        .await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve returns promptly after shutdown")
            .unwrap()
            .unwrap();
    }
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn pod(name: &str, labels: Value, containers: &[&str]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox:1.36"}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": containers},
    })
}

fn deployment_yaml(image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: "{image}"
"#
    )
}

// ---- tests ---------------------------------------------------------------------------

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized() {
    let s = start().await;
    let url = format!("{}{PODS}", s.base);

    let missing = s.send(s.client.get(&url)).await;
    missing.failure(401, "Unauthorized");
    let wrong = s
        .send(s.client.get(&url).bearer_auth("not-the-token"))
        .await;
    wrong.failure(401, "Unauthorized");
    let unknown_path = s.send(s.client.get(format!("{}/nope", s.base))).await;
    unknown_path.failure(401, "Unauthorized");

    let health = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");

    let version = s.get("/version").await;
    assert_eq!(version.code, StatusCode::OK);
    assert_eq!(version.body["gitVersion"], "v0.1.0");
    assert_eq!(version.body["major"], "0");
    assert!(version.body["platform"]
        .as_str()
        .unwrap()
        .starts_with("linux/"));
    s.shutdown().await;
}

#[tokio::test]
async fn discovery_unknown_paths_and_wrong_methods() {
    let s = start().await;
    let core = s.get("/api/v1").await;
    assert_eq!(core.body["kind"], "APIResourceList");
    let names: Vec<&str> = core.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pods") && names.contains(&"nodes"),
        "{names:?}"
    );
    let apps = s.get("/apis/apps/v1").await;
    assert_eq!(apps.body["resources"][0]["shortNames"][0], "deploy");
    let groups = s.get("/apis").await;
    assert_eq!(
        groups.body["groups"][0]["preferredVersion"]["groupVersion"],
        "apps/v1"
    );
    assert_eq!(s.get("/api").await.body["versions"][0], "v1");

    let msg = s.get("/api/v1/services").await.failure(404, "NotFound");
    assert!(msg.contains("/api/v1/services"), "{msg}");
    let msg = s
        .delete("/api/v1/pods")
        .await
        .failure(405, "MethodNotAllowed");
    assert!(msg.contains("DELETE"), "{msg}");
    let open = s.send(s.client.post(format!("{}/healthz", s.base))).await;
    open.failure(405, "MethodNotAllowed");
    s.shutdown().await;
}

#[tokio::test]
async fn pods_create_get_list_and_delete() {
    let s = start().await;
    let created = s
        .post(PODS, pod("web", json!({"app": "web"}), &["c"]))
        .await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["metadata"]["namespace"], "default");
    assert!(created.body["metadata"]["uid"].is_string());
    assert!(created.body["metadata"]["creationTimestamp"].is_string());
    assert!(
        created.body.get("status").is_none(),
        "no empty fields: {}",
        created.body
    );
    s.post(PODS, pod("db", json!({"app": "db"}), &["c"])).await;
    // Another namespace must exist first, as in Kubernetes.
    let missing = s
        .post(
            "/api/v1/namespaces/tools/pods",
            pod("web", json!({"app": "web"}), &["c"]),
        )
        .await;
    assert_eq!(
        missing.failure(404, "NotFound"),
        "namespaces \"tools\" not found"
    );
    let ns = s
        .post("/api/v1/namespaces", json!({"metadata": {"name": "tools"}}))
        .await;
    assert_eq!(ns.code, StatusCode::CREATED, "{}", ns.body);
    let other = s
        .post(
            "/api/v1/namespaces/tools/pods",
            pod("web", json!({"app": "web"}), &["c"]),
        )
        .await;
    assert_eq!(other.code, StatusCode::CREATED);

    let again = s.post(PODS, pod("web", json!({}), &["c"])).await;
    let msg = again.failure(409, "AlreadyExists");
    assert_eq!(msg, "Pod default/web already exists");

    let got = s.get(&format!("{PODS}/web")).await;
    assert_eq!(got.code, StatusCode::OK);
    assert_eq!(got.body["spec"]["containers"][0]["image"], "busybox:1.36");

    let list = s.get(&format!("{PODS}?labelSelector=app%3Dweb")).await;
    assert_eq!(list.body["kind"], "PodList");
    assert_eq!(list.body["apiVersion"], "v1");
    assert!(
        list.body["metadata"]["resourceVersion"].is_string(),
        "{}",
        list.body
    );
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], "web");

    let everywhere = s.get("/api/v1/pods?labelSelector=app%3Dweb").await;
    assert_eq!(everywhere.body["items"].as_array().unwrap().len(), 2);
    let bad = s.get(&format!("{PODS}?labelSelector=app%20in%20web")).await;
    bad.failure(400, "BadRequest");

    let msg = s
        .get(&format!("{PODS}/nope"))
        .await
        .failure(404, "NotFound");
    assert_eq!(msg, "Pod default/nope not found");

    let moved = s
        .post(PODS, json!({"metadata": {"name": "x", "namespace": "tools"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .await;
    moved.failure(400, "BadRequest");

    let deleted = s.delete(&format!("{PODS}/web")).await;
    assert_eq!(deleted.code, StatusCode::OK);
    assert_eq!(deleted.body["kind"], "Pod");
    assert_eq!(deleted.body["metadata"]["name"], "web");
    s.delete(&format!("{PODS}/web"))
        .await
        .failure(404, "NotFound");
    assert!(s
        .store
        .get::<Pod>(Some("default"), "web")
        .unwrap()
        .is_none());
    s.shutdown().await;
}

#[tokio::test]
async fn apply_creates_then_keeps_or_bumps_the_resource_version() {
    let s = start().await;
    let path = format!("{DEPLOYS}/web");

    let created = s.apply(&path, &deployment_yaml("nginx:1", 1)).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    let rv1 = created.rv();
    assert!(!rv1.is_empty());

    // The controllers write status; applying again must neither lose it nor write.
    s.store
        .modify::<Deployment>(Some("default"), "web", |d| d.status.ready_replicas = 1)
        .unwrap();
    let rv_status = s.get(&path).await.rv();

    let same = s.apply(&path, &deployment_yaml("nginx:1", 1)).await;
    assert_eq!(same.code, StatusCode::OK, "{}", same.body);
    assert_eq!(
        same.rv(),
        rv_status,
        "an unchanged apply keeps the resourceVersion"
    );
    assert_eq!(same.body["status"]["readyReplicas"], 1);

    let changed = s.apply(&path, &deployment_yaml("nginx:2", 1)).await;
    assert_eq!(changed.code, StatusCode::OK);
    assert_ne!(changed.rv(), rv_status);
    assert_eq!(
        changed.body["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert_eq!(changed.body["metadata"]["generation"], 2);
    assert_eq!(changed.body["status"]["readyReplicas"], 1, "status is kept");
    assert_eq!(
        changed.body["metadata"]["uid"],
        created.body["metadata"]["uid"]
    );

    // JSON is YAML too.
    let as_json = serde_json::to_string(&changed.body).unwrap();
    assert_eq!(s.apply(&path, &as_json).await.code, StatusCode::OK);

    let list = s.get("/apis/apps/v1/deployments").await;
    assert_eq!(list.body["kind"], "DeploymentList");
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn merge_patch_scales_and_other_patch_types_are_refused() {
    let s = start().await;
    let path = format!("{DEPLOYS}/web");
    s.apply(&path, &deployment_yaml("nginx:1", 1)).await;

    let scaled = s.patch(&path, MERGE, r#"{"spec":{"replicas":3}}"#).await;
    assert_eq!(scaled.code, StatusCode::OK, "{}", scaled.body);
    assert_eq!(scaled.body["spec"]["replicas"], 3);
    assert_eq!(scaled.body["spec"]["selector"]["matchLabels"]["app"], "web");
    let stored: Deployment = s.store.get(Some("default"), "web").unwrap().unwrap();
    assert_eq!(stored.spec.replicas, Some(3));

    let labelled = s
        .patch(
            &path,
            MERGE,
            r#"{"metadata":{"labels":{"app":null,"tier":"front"}}}"#,
        )
        .await;
    assert_eq!(
        labelled.body["metadata"]["labels"],
        json!({"tier": "front"})
    );

    s.patch(
        &format!("{DEPLOYS}/nope"),
        MERGE,
        r#"{"spec":{"replicas":3}}"#,
    )
    .await
    .failure(404, "NotFound");
    let msg = s
        .patch(&path, MERGE, r#"{"spec":{"replicaz":3}}"#)
        .await
        .failure(400, "BadRequest");
    assert!(msg.contains("\"spec.replicaz\""), "{msg}");
    let msg = s
        .patch(&path, MERGE, r#"{"spec":{"replicas":-1}}"#)
        .await
        .failure(422, "Invalid");
    assert_eq!(
        msg,
        "Deployment default/web: spec.replicas: must be 0 or more"
    );
    s.patch(&path, "application/json-patch+json", "[]")
        .await
        .failure(415, "UnsupportedMediaType");
    s.shutdown().await;
}

#[tokio::test]
async fn invalid_objects_and_unknown_fields_are_refused() {
    let s = start().await;
    let mut body: Value = serde_norway::from_str(&deployment_yaml("", 1)).unwrap();
    let invalid = s.post(DEPLOYS, body.clone()).await;
    let msg = invalid.failure(422, "Invalid");
    assert_eq!(
        msg,
        "Deployment default/web: spec.template.spec.containers[0].image: must not be empty"
    );
    let cause = &invalid.body["details"]["causes"][0];
    assert_eq!(cause["field"], "spec.template.spec.containers[0].image");
    assert_eq!(cause["message"], "must not be empty");
    assert_eq!(invalid.body["details"]["name"], "web");

    body["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx");
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    let msg = s
        .post(DEPLOYS, body.clone())
        .await
        .failure(400, "BadRequest");
    assert!(
        msg.contains("unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""),
        "{msg}"
    );

    let msg = s
        .apply(
            &format!("{DEPLOYS}/web"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n",
        )
        .await
        .failure(400, "BadRequest");
    assert!(msg.contains("this URL serves apps/v1 Deployment"), "{msg}");
    let msg = s
        .apply(&format!("{DEPLOYS}/web"), "spec: [unclosed\n")
        .await
        .failure(400, "BadRequest");
    assert!(msg.contains("YAML"), "{msg}");
    assert!(s
        .store
        .get::<Deployment>(Some("default"), "web")
        .unwrap()
        .is_none());

    let huge = "x".repeat(5 * 1024 * 1024);
    let msg = s
        .patch(&format!("{DEPLOYS}/web"), APPLY, huge)
        .await
        .failure(413, "RequestEntityTooLarge");
    assert!(msg.contains("4 MiB"), "{msg}");
    s.shutdown().await;
}

#[tokio::test]
async fn replace_checks_versions_names_and_existence() {
    let s = start().await;
    let created = s
        .post(PODS, pod("web", json!({"app": "web"}), &["c"]))
        .await;
    let mut body = created.body.clone();
    body["metadata"]["labels"]["tier"] = json!("front");
    body["status"] = json!({"phase": "Succeeded"});

    let replaced = s.put(&format!("{PODS}/web"), body.clone()).await;
    assert_eq!(replaced.code, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["metadata"]["labels"]["tier"], "front");
    assert!(
        replaced.body.get("status").is_none(),
        "status is not writable: {}",
        replaced.body
    );
    assert_ne!(replaced.rv(), created.rv());

    // `body` still carries the first resourceVersion.
    body["metadata"]["labels"]["tier"] = json!("back");
    let msg = s
        .put(&format!("{PODS}/web"), body.clone())
        .await
        .failure(409, "Conflict");
    assert!(msg.contains("stale"), "{msg}");

    s.put(&format!("{PODS}/other"), body.clone())
        .await
        .failure(400, "BadRequest");
    let mut missing = body.clone();
    missing["metadata"] = json!({"name": "gone"});
    s.put(&format!("{PODS}/gone"), missing)
        .await
        .failure(404, "NotFound");
    s.shutdown().await;
}

#[tokio::test]
async fn pod_specs_are_immutable_except_images_and_the_node_is_kept() {
    let s = start().await;
    let path = format!("{PODS}/web");
    let manifest = |image: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers: [{{name: c, image: \"{image}\"}}]\n")
    };
    assert_eq!(
        s.apply(&path, &manifest("busybox:1")).await.code,
        StatusCode::CREATED
    );
    // The scheduler binds it.
    s.store
        .modify::<Pod>(Some("default"), "web", |p| {
            p.spec.node_name = Some("pi-1".into())
        })
        .unwrap();

    let updated = s.apply(&path, &manifest("busybox:2")).await;
    assert_eq!(updated.code, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["spec"]["nodeName"], "pi-1");
    assert_eq!(updated.body["spec"]["containers"][0]["image"], "busybox:2");

    let msg = s
        .patch(&path, MERGE, r#"{"spec":{"nodeName":"pi-2"}}"#)
        .await
        .failure(422, "Invalid");
    assert!(
        msg.starts_with("Pod default/web: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image` (changed: spec.nodeName)"),
        "{msg}"
    );
    let stored: Pod = s.store.get(Some("default"), "web").unwrap().unwrap();
    assert_eq!(stored.spec.node_name.as_deref(), Some("pi-1"));
    s.shutdown().await;
}

#[tokio::test]
async fn nodes_are_cluster_scoped() {
    let s = start().await;
    let created = s
        .post("/api/v1/nodes", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "pi-1", "labels": {"zone": "garden"}}}))
        .await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    assert!(created.body["metadata"].get("namespace").is_none());
    let list = s.get("/api/v1/nodes?labelSelector=zone%3Dgarden").await;
    assert_eq!(list.body["kind"], "NodeList");
    assert_eq!(list.body["items"][0]["metadata"]["name"], "pi-1");
    let cordoned = s
        .patch(
            "/api/v1/nodes/pi-1",
            MERGE,
            r#"{"spec":{"unschedulable":true}}"#,
        )
        .await;
    assert_eq!(cordoned.body["spec"]["unschedulable"], true);
    assert_eq!(s.delete("/api/v1/nodes/pi-1").await.code, StatusCode::OK);
    s.get("/api/v1/nodes/pi-1").await.failure(404, "NotFound");
    s.shutdown().await;
}

#[tokio::test]
async fn logs_name_the_container_and_the_node() {
    let s = start().await;
    s.post(PODS, pod("web", json!({}), &["a", "b"])).await;
    s.post(PODS, pod("solo", json!({}), &["c"])).await;

    let msg = s
        .get(&format!("{PODS}/web/log"))
        .await
        .failure(400, "BadRequest");
    assert_eq!(
        msg,
        "a container name must be specified for pod default/web, choose one of: [a b]"
    );
    let msg = s
        .get(&format!("{PODS}/web/log?container=z"))
        .await
        .failure(400, "BadRequest");
    assert!(msg.contains("choose one of: [a b]"), "{msg}");
    s.get(&format!("{PODS}/nope/log"))
        .await
        .failure(404, "NotFound");
    let msg = s
        .get(&format!("{PODS}/solo/log"))
        .await
        .failure(503, "ServiceUnavailable");
    assert!(msg.contains("not scheduled"), "{msg}");

    s.store
        .modify::<Pod>(Some("default"), "solo", |p| {
            p.spec.node_name = Some("pi-down".into())
        })
        .unwrap();
    let msg = s
        .get(&format!("{PODS}/solo/log"))
        .await
        .failure(503, "ServiceUnavailable");
    assert_eq!(
        msg,
        "node pi-down did not answer the log request: it is offline"
    );

    s.store
        .modify::<Pod>(Some("default"), "web", |p| {
            p.spec.node_name = Some("pi-1".into())
        })
        .unwrap();
    let resp = s
        .request(
            reqwest::Method::GET,
            &format!("{PODS}/web/log?container=b&tailLines=10"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.text().await.unwrap(), "line 1\nline 2\n");

    let (node, req) = s.logs.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(node, "pi-1");
    assert_eq!(
        (
            req.namespace.as_str(),
            req.pod.as_str(),
            req.container.as_deref()
        ),
        ("default", "web", Some("b"))
    );
    assert_eq!(
        (req.follow, req.tail_lines, req.cancel),
        (false, Some(10), false)
    );
    s.shutdown().await;
}

#[tokio::test]
async fn following_logs_stream_and_stop_when_the_client_leaves() {
    let s = start().await;
    s.post(PODS, pod("web", json!({}), &["c"])).await;
    s.store
        .modify::<Pod>(Some("default"), "web", |p| {
            p.spec.node_name = Some("pi-1".into())
        })
        .unwrap();

    let mut resp = s
        .request(reqwest::Method::GET, &format!("{PODS}/web/log?follow=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The first line arrives while the source still holds the second back: streamed.
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"line 1\n");
    s.logs.gate.notify_one();
    let mut rest = Vec::new();
    while !String::from_utf8_lossy(&rest).contains("line 2\n") {
        rest.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
    }
    assert!(s.logs.requests.lock().unwrap()[0].1.follow);

    drop(resp);
    tokio::time::timeout(Duration::from_secs(5), s.logs.cancelled.notified())
        .await
        .expect("the source sees the stream dropped when the client leaves");
    s.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_following_logs() {
    let s = start().await;
    s.post(PODS, pod("web", json!({}), &["c"])).await;
    s.store
        .modify::<Pod>(Some("default"), "web", |p| {
            p.spec.node_name = Some("pi-1".into())
        })
        .unwrap();
    let mut resp = s
        .request(reqwest::Method::GET, &format!("{PODS}/web/log?follow=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(&resp.chunk().await.unwrap().unwrap()[..], b"line 1\n");
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = resp.chunk().await {} });
    // Well inside SHUTDOWN_GRACE: the follow is cut, not waited for.
    tokio::time::timeout(Duration::from_secs(3), s.shutdown())
        .await
        .expect("shutdown does not wait for a following log");
    tokio::time::timeout(Duration::from_secs(3), reader)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn deleting_a_running_pod_is_graceful_unless_forced() {
    let s = start().await;
    let mut node = punnet_api::Node::default();
    node.metadata.name = "pi-1".into();
    node.status.conditions.push(punnet_api::NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        ..Default::default()
    });
    s.store.create(node).unwrap();
    let mut body = pod("web", json!({"app": "web"}), &["c"]);
    body["spec"]["nodeName"] = json!("pi-1");
    body["spec"]["terminationGracePeriodSeconds"] = json!(5);
    let created = s.post(PODS, body).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);

    // Bound to a Ready node: it comes back terminating, and is still there.
    let deleted = s.delete(&format!("{PODS}/web")).await;
    assert_eq!(deleted.code, StatusCode::OK, "{}", deleted.body);
    assert!(
        deleted.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        deleted.body
    );
    assert_eq!(deleted.body["metadata"]["deletionGracePeriodSeconds"], 5);
    let got = s.get(&format!("{PODS}/web")).await;
    assert_eq!(got.code, StatusCode::OK);
    assert_eq!(
        got.body["metadata"]["deletionTimestamp"],
        deleted.body["metadata"]["deletionTimestamp"]
    );
    // Deleting again changes nothing; a negative grace period is refused.
    let again = s.delete(&format!("{PODS}/web")).await;
    assert_eq!(again.code, StatusCode::OK);
    assert_eq!(again.rv(), deleted.rv());
    s.delete(&format!("{PODS}/web?gracePeriodSeconds=-1"))
        .await
        .failure(400, "BadRequest");

    // gracePeriodSeconds=0 removes it at once, terminating or not.
    let forced = s.delete(&format!("{PODS}/web?gracePeriodSeconds=0")).await;
    assert_eq!(forced.code, StatusCode::OK, "{}", forced.body);
    s.get(&format!("{PODS}/web")).await.failure(404, "NotFound");
    let mut body = pod("db", json!({"app": "db"}), &["c"]);
    body["spec"]["nodeName"] = json!("pi-1");
    s.post(PODS, body).await;
    let forced = s.delete(&format!("{PODS}/db?gracePeriodSeconds=0")).await;
    assert_eq!(forced.code, StatusCode::OK);
    assert!(forced.body["metadata"]["deletionTimestamp"].is_null());
    assert!(s.store.get::<Pod>(Some("default"), "db").unwrap().is_none());

    // On a node that is gone there is nobody to wait for.
    let mut body = pod("lost", json!({}), &["c"]);
    body["spec"]["nodeName"] = json!("pi-gone");
    s.post(PODS, body).await;
    assert_eq!(s.delete(&format!("{PODS}/lost")).await.code, StatusCode::OK);
    assert!(s
        .store
        .get::<Pod>(Some("default"), "lost")
        .unwrap()
        .is_none());
    s.shutdown().await;
}

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";

#[tokio::test]
async fn configmaps_are_served_like_the_other_namespaced_kinds() {
    let s = start().await;
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "web-config", "labels": {"app": "web"}},
        "data": {"index.html": "<h1>hi</h1>"},
        "binaryData": {"logo.bin": "AAEC"},
    });
    let created = s.post(CONFIGMAPS, cm.clone()).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["data"]["index.html"], "<h1>hi</h1>");
    s.post(CONFIGMAPS, cm).await.failure(409, "AlreadyExists");

    let other = json!({"metadata": {"name": "other"}, "data": {"a": "1"}});
    assert_eq!(s.post(CONFIGMAPS, other).await.code, StatusCode::CREATED);
    let list = s
        .get(&format!("{CONFIGMAPS}?labelSelector=app%3Dweb"))
        .await;
    assert_eq!(list.body["kind"], "ConfigMapList");
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-config"]);
    let all = s.get("/api/v1/configmaps").await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);

    // Apply, merge patch and replace change the data.
    let path = format!("{CONFIGMAPS}/web-config");
    let applied = s
        .apply(
            &path,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config}\ndata: {index.html: v2}\n",
        )
        .await;
    assert_eq!(applied.code, StatusCode::OK, "{}", applied.body);
    assert_eq!(applied.body["data"]["index.html"], "v2");
    assert!(applied.body.get("binaryData").is_none());
    let patched = s.patch(&path, MERGE, r#"{"data": {"extra": "x"}}"#).await;
    assert_eq!(patched.body["data"]["extra"], "x", "{}", patched.body);
    let mut replaced = patched.body.clone();
    replaced["data"] = json!({"only": "this"});
    let replaced = s.put(&path, replaced).await;
    assert_eq!(replaced.body["data"], json!({"only": "this"}));

    // Validation: a bad key, bad base64.
    let bad =
        json!({"metadata": {"name": "bad"}, "data": {"no/slash": "x"}, "binaryData": {"b": "!!"}});
    let msg = s.post(CONFIGMAPS, bad).await.failure(422, "Invalid");
    assert!(msg.contains("data[\"no/slash\"]"), "{msg}");
    assert!(msg.contains("binaryData[\"b\"]: must be base64"), "{msg}");

    assert_eq!(s.delete(&path).await.code, StatusCode::OK);
    s.get(&path).await.failure(404, "NotFound");
    s.shutdown().await;
}

#[tokio::test]
async fn secrets_fold_string_data_and_immutable_objects_keep_their_data() {
    let s = start().await;
    let secret = json!({
        "metadata": {"name": "db"},
        "stringData": {"password": "s3cret"},
        "data": {"user": "cGk="},
    });
    let created = s.post(SECRETS, secret).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["data"]["password"], "czNjcmV0");
    assert_eq!(created.body["data"]["user"], "cGk=");
    assert!(created.body.get("stringData").is_none(), "{}", created.body);
    let stored: punnet_api::Secret = s.store.get(Some("default"), "db").unwrap().unwrap();
    assert!(stored.string_data.is_empty());

    // Applying the same stringData again changes nothing.
    let path = format!("{SECRETS}/db");
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: s3cret}\ndata: {user: cGk=}\n";
    let same = s.apply(&path, yaml).await;
    assert_eq!(same.code, StatusCode::OK, "{}", same.body);
    assert_eq!(same.rv(), created.rv());
    let patched = s
        .patch(&path, MERGE, r#"{"stringData": {"password": "new"}}"#)
        .await;
    assert_eq!(patched.body["data"]["password"], "bmV3", "{}", patched.body);

    let msg = s
        .post(
            SECRETS,
            json!({"metadata": {"name": "x"}, "data": {"k": "not base64!"}}),
        )
        .await
        .failure(422, "Invalid");
    assert!(msg.contains("must be base64"), "{msg}");
    let msg = s
        .post(
            SECRETS,
            json!({"metadata": {"name": "reg"}, "type": "kubernetes.io/dockerconfigjson", "stringData": {"a": "b"}}),
        )
        .await
        .failure(422, "Invalid");
    assert!(msg.contains(".dockerconfigjson"), "{msg}");

    // Immutable: data changes are refused with the fix, labels may change.
    let frozen =
        json!({"metadata": {"name": "frozen"}, "stringData": {"k": "v"}, "immutable": true});
    assert_eq!(s.post(SECRETS, frozen).await.code, StatusCode::CREATED);
    let fpath = format!("{SECRETS}/frozen");
    let msg = s
        .patch(&fpath, MERGE, r#"{"stringData": {"k": "other"}}"#)
        .await
        .failure(422, "Invalid");
    assert_eq!(
        msg,
        "Secret default/frozen: data: Forbidden: field is immutable when `immutable` is set; delete and re-create the Secret to change it"
    );
    let labelled = s
        .patch(&fpath, MERGE, r#"{"metadata": {"labels": {"a": "b"}}}"#)
        .await;
    assert_eq!(labelled.code, StatusCode::OK, "{}", labelled.body);
    let cm = json!({"metadata": {"name": "frozen"}, "data": {"k": "v"}, "immutable": true});
    assert_eq!(s.post(CONFIGMAPS, cm).await.code, StatusCode::CREATED);
    let msg = s
        .apply(
            &format!("{CONFIGMAPS}/frozen"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\ndata: {k: w}\nimmutable: true\n",
        )
        .await
        .failure(422, "Invalid");
    assert!(msg.contains("delete and re-create the ConfigMap"), "{msg}");
    assert_eq!(s.delete(&fpath).await.code, StatusCode::OK);

    let core = s.get("/api/v1").await;
    let kinds: Vec<&str> = core.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"configmaps") && kinds.contains(&"secrets"),
        "{kinds:?}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn metrics_are_served_as_metrics_server_does() {
    use punnet_api::wire::{ContainerUsage, NodeFacts, NodeStatusReport, PodReport};
    let s = start().await;
    let empty = s.get("/apis/metrics.k8s.io/v1beta1/nodes").await;
    assert_eq!(empty.body["kind"], "NodeMetricsList", "{}", empty.body);
    assert!(empty.body["items"].as_array().is_none_or(Vec::is_empty));
    s.get("/apis/metrics.k8s.io/v1beta1/nodes/pi-1")
        .await
        .failure(404, "NotFound");

    s.metrics.record(
        &NodeStatusReport {
            node: "pi-1".into(),
            generation_seen: 1,
            sent_at: punnet_api::Time::now(),
            facts: NodeFacts {
                cpus: 4,
                memory_bytes: 1 << 30,
                memory_available_bytes: 1 << 29,
                cpu_usage_millis: 1500,
                temperature_millicelsius: Some(55_000),
                throttled: Some(0x5_0000),
                ..Default::default()
            },
            pods: vec![PodReport {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u".into(),
                status: Default::default(),
                usage: vec![ContainerUsage {
                    container: "nginx".into(),
                    cpu_millis: 12,
                    memory_bytes: 3 << 20,
                }],
            }],
            events: vec![],
        },
        punnet_api::Time::now(),
    );
    let node = s.get("/apis/metrics.k8s.io/v1beta1/nodes/pi-1").await;
    assert_eq!(node.body["kind"], "NodeMetrics");
    assert_eq!(
        node.body["usage"],
        json!({"cpu": "1500m", "memory": "524288Ki"})
    );
    assert_eq!(node.body["punnet"]["temperatureMillicelsius"], 55_000);
    let pods = s
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods")
        .await;
    assert_eq!(pods.body["kind"], "PodMetricsList");
    assert_eq!(
        pods.body["items"][0]["containers"][0],
        json!({"name": "nginx", "usage": {"cpu": "12m", "memory": "3072Ki"}})
    );
    let pod = s
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web")
        .await;
    assert_eq!(pod.body["metadata"]["namespace"], "default");
    s.get("/apis/metrics.k8s.io/v1beta1/namespaces/other/pods/web")
        .await
        .failure(404, "NotFound");
    let groups = s.get("/apis").await;
    assert_eq!(groups.body["groups"][1]["name"], "metrics.k8s.io");
    let v = s.get("/apis/metrics.k8s.io/v1beta1").await;
    assert_eq!(v.body["resources"][1]["kind"], "PodMetrics");
    s.shutdown().await;
}
