//! The CLI end to end against a small in-process fake of the controller's REST API
//! (axum on 127.0.0.1:0): Deployments with apply and merge patches, a Pod list with
//! label selectors, logs and version. Every request is recorded so tests can check
//! the exact method, path, query and content type the CLI sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use clap::Parser;
use punnet_api::selector::Selector;
use punnet_api::Status;
use punnet_cli::{run_with, Cli, Error};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    authorization: String,
    body: String,
}

#[derive(Default)]
struct Store {
    deployments: BTreeMap<String, Value>,
    pods: Vec<Value>,
    revision: u64,
    requests: Vec<Request>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Store>>);

impl Fake {
    fn requests(&self) -> Vec<Request> {
        self.0.lock().unwrap().requests.clone()
    }

    fn with_pods(self) -> Fake {
        let pod = |name: &str, app: &str, phase: &str| {
            json!({
                "metadata": {"name": name, "namespace": "default", "labels": {"app": app},
                             "creationTimestamp": "2024-05-01T11:00:00Z"},
                "spec": {"nodeName": "pi-1", "containers": [{"name": "c", "image": "busybox"}]},
                "status": {"phase": phase, "containerStatuses": [{"name": "c", "ready": phase == "Running"}]}
            })
        };
        self.0.lock().unwrap().pods = vec![
            pod("web-a", "web", "Pending"),
            pod("web-b", "web", "Running"),
            pod("db-0", "db", "Running"),
        ];
        self
    }

    /// Serves HTTPS with a certificate from the test CA (`test_ca`).
    async fn start(&self) -> String {
        let app = Router::new().fallback(handle).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = punnet_controller::tls::prepare(test_ca().parent().unwrap(), &Default::default())
            .unwrap();
        let listener =
            punnet_controller::tls::listener::TlsListener::new(listener, tls.https).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("https://{addr}")
    }
}

/// The CA the fake's certificate comes from, made once per test process by the
/// controller's own generator.
fn test_ca() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        punnet_controller::tls::prepare(&dir, &Default::default()).unwrap();
        dir.join("ca.pem")
    })
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (code, Json(Status::failure(code.as_u16(), reason, message))).into_response()
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn handle(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Request {
        method: method.clone(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        content_type: header(&headers, "content-type"),
        authorization: header(&headers, "authorization"),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let mut store = fake.0.lock().unwrap();
    store.requests.push(req.clone());
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["version"]) => {
            Json(json!({"gitVersion": "v0.1.0", "platform": "linux/arm64"})).into_response()
        }
        (_, ["apis", "apps", "v1", "namespaces", ns, "deployments", name]) => {
            let key = format!("{ns}/{name}");
            let not_found = || {
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("deployments.apps {name:?} not found"),
                )
            };
            match method.as_str() {
                "GET" => match store.deployments.get(&key) {
                    Some(d) => Json(d.clone()).into_response(),
                    None => not_found(),
                },
                "DELETE" => match store.deployments.remove(&key) {
                    Some(d) => Json(d).into_response(),
                    None => not_found(),
                },
                "PATCH" if req.content_type == "application/apply-patch+yaml" => {
                    let applied: Value = serde_json::from_str(&req.body).unwrap();
                    let user = |v: &Value| (v["metadata"]["labels"].clone(), v["spec"].clone());
                    let existing = store.deployments.get(&key).cloned();
                    let changed = existing.as_ref().is_none_or(|e| user(e) != user(&applied));
                    if !changed {
                        return Json(existing.unwrap()).into_response();
                    }
                    store.revision += 1;
                    let mut obj = applied;
                    obj["metadata"]["resourceVersion"] = store.revision.to_string().into();
                    obj["metadata"]["creationTimestamp"] = "2024-05-01T11:00:00Z".into();
                    store.deployments.insert(key, obj.clone());
                    let code = if existing.is_none() {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    (code, Json(obj)).into_response()
                }
                "PATCH" if req.content_type == "application/merge-patch+json" => {
                    let patch: Value = serde_json::from_str(&req.body).unwrap();
                    store.revision += 1;
                    let revision = store.revision;
                    let Some(d) = store.deployments.get_mut(&key) else {
                        return not_found();
                    };
                    d["spec"]["replicas"] = patch["spec"]["replicas"].clone();
                    d["metadata"]["resourceVersion"] = revision.to_string().into();
                    Json(d.clone()).into_response()
                }
                _ => status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "no".into(),
                ),
            }
        }
        // Pods never finish terminating here: a delete marks them and they stay.
        (m @ ("GET" | "DELETE"), ["api", "v1", "namespaces", ns, "pods", name]) => {
            let found = store
                .pods
                .iter_mut()
                .find(|p| p["metadata"]["namespace"] == *ns && p["metadata"]["name"] == *name);
            match found {
                Some(p) => {
                    if m == "DELETE" {
                        p["metadata"]["deletionTimestamp"] = json!("2024-05-01T12:00:00Z");
                    }
                    Json(p.clone()).into_response()
                }
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("pods {name:?} not found"),
                ),
            }
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
            let selector =
                Selector::parse(&query_param(&req.query, "labelSelector").unwrap_or_default())
                    .unwrap();
            let items: Vec<Value> = store
                .pods
                .iter()
                .filter(|p| p["metadata"]["namespace"] == *ns)
                .filter(|p| {
                    let labels: BTreeMap<String, String> =
                        serde_json::from_value(p["metadata"]["labels"].clone()).unwrap();
                    selector.matches(&labels)
                })
                .cloned()
                .collect();
            Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": items}))
                .into_response()
        }
        ("GET", ["api", "v1", "namespaces", _, "pods", name, "log"]) => {
            (StatusCode::OK, format!("logs of {name}\n{}\n", req.query)).into_response()
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        ),
    }
}

struct Run {
    result: Result<(), Error>,
    out: String,
    err: String,
}

async fn punnet(server: &str, args: &[&str]) -> Run {
    let ca = test_ca().to_str().unwrap();
    let mut argv = vec![
        "punnet", "--server", server, "--token", "s3cret", "--ca", ca,
    ];
    argv.extend(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = run_with(cli, &mut out, &mut err).await;
    Run {
        result,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox}]
";

#[tokio::test]
async fn apply_reports_created_then_unchanged_then_configured() {
    let fake = Fake::default();
    let server = fake.start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    let path = file.to_str().unwrap();

    std::fs::write(&file, DEPLOYMENT.replace("REPLICAS", "2")).unwrap();
    let run = punnet(&server, &["apply", "-f", path]).await;
    assert!(run.result.is_ok(), "{:?} {}", run.result, run.err);
    assert_eq!(run.out, "deployment.apps/web created\n");

    let run = punnet(&server, &["apply", "-f", dir.path().to_str().unwrap()]).await;
    assert_eq!(run.out, "deployment.apps/web unchanged\n");

    std::fs::write(&file, DEPLOYMENT.replace("REPLICAS", "3")).unwrap();
    let run = punnet(&server, &["apply", "-f", path]).await;
    assert_eq!(run.out, "deployment.apps/web configured\n");

    let requests = fake.requests();
    let calls: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        calls[..2],
        [
            "GET /apis/apps/v1/namespaces/default/deployments/web",
            "PATCH /apis/apps/v1/namespaces/default/deployments/web"
        ]
    );
    let patch = &requests[1];
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    assert_eq!(patch.query, "fieldManager=punnet&force=true");
    assert_eq!(patch.authorization, "Bearer s3cret");
    let body: Value = serde_json::from_str(&patch.body).unwrap();
    assert_eq!(
        body["metadata"]["namespace"], "default",
        "the namespace is filled in before sending"
    );
    assert_eq!(body["spec"]["replicas"], 2);
    assert!(body.get("status").is_none(), "empty fields are not sent");
}

#[tokio::test]
async fn apply_checks_everything_before_sending_anything() {
    let fake = Fake::default();
    let server = fake.start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    let bad = DEPLOYMENT
        .replace("REPLICAS", "1")
        .replace("image: busybox", "image: \"\"");
    std::fs::write(
        &file,
        format!("{}---\n{bad}", DEPLOYMENT.replace("REPLICAS", "1")),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let run = punnet(&server, &["apply", "-f", path]).await;
    let line = run.result.unwrap_err().report().unwrap();
    assert_eq!(
        line,
        format!("error: {path}: Deployment default/web: spec.template.spec.containers[0].image: must not be empty")
    );
    assert!(
        fake.requests().is_empty(),
        "the valid first document was not sent either"
    );

    let run = punnet(&server, &["-n", "other", "apply", "-f", path]).await;
    assert!(run.result.is_err());
    let run = punnet(
        &server,
        &[
            "apply",
            "-f",
            dir.path().join("missing.yaml").to_str().unwrap(),
        ],
    )
    .await;
    assert!(run
        .result
        .unwrap_err()
        .to_string()
        .contains("missing.yaml: No such file"));
}

#[tokio::test]
async fn get_missing_name_shows_the_servers_message() {
    let fake = Fake::default();
    let server = fake.start().await;
    let run = punnet(&server, &["get", "deploy", "nope"]).await;
    let err = run.result.unwrap_err();
    assert_eq!(
        err.report().unwrap(),
        r#"Error from server (NotFound): deployments.apps "nope" not found"#
    );
    assert!(run.out.is_empty());
}

#[tokio::test]
async fn get_pods_sends_the_label_selector() {
    let fake = Fake::default().with_pods();
    let server = fake.start().await;
    let run = punnet(&server, &["get", "po", "-l", "app=web", "-o", "name"]).await;
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(run.out, "pod/web-a\npod/web-b\n");
    let req = fake.requests().pop().unwrap();
    assert_eq!(req.path, "/api/v1/namespaces/default/pods");
    assert_eq!(req.query, "labelSelector=app%3Dweb");

    let run = punnet(&server, &["get", "pods", "-l", "app=nothing"]).await;
    assert!(run.out.is_empty());
    assert_eq!(run.err, "No resources found in default namespace.\n");

    let run = punnet(&server, &["get", "pods", "-l", "app in web"]).await;
    assert!(run
        .result
        .unwrap_err()
        .to_string()
        .starts_with("invalid label selector"));
}

#[tokio::test]
async fn get_json_of_a_list_and_of_one_object() {
    let fake = Fake::default().with_pods();
    let server = fake.start().await;
    let run = punnet(&server, &["get", "pods", "-o", "json"]).await;
    let list: Value = serde_json::from_str(&run.out).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    assert_eq!(list["items"][0]["kind"], "Pod", "items get their kind");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, DEPLOYMENT.replace("REPLICAS", "2")).unwrap();
    punnet(&server, &["apply", "-f", file.to_str().unwrap()])
        .await
        .result
        .unwrap();
    let run = punnet(&server, &["get", "deployment/web", "-o", "yaml"]).await;
    assert!(
        run.out
            .starts_with("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"),
        "{}",
        run.out
    );
}

#[tokio::test]
async fn scale_sends_a_merge_patch() {
    let fake = Fake::default();
    let server = fake.start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, DEPLOYMENT.replace("REPLICAS", "2")).unwrap();
    punnet(&server, &["apply", "-f", file.to_str().unwrap()])
        .await
        .result
        .unwrap();

    let run = punnet(&server, &["scale", "deployment/web", "--replicas", "5"]).await;
    assert_eq!(run.out, "deployment.apps/web scaled\n");
    let req = fake.requests().pop().unwrap();
    assert_eq!(
        (req.method, req.path.as_str()),
        (
            Method::PATCH,
            "/apis/apps/v1/namespaces/default/deployments/web"
        )
    );
    assert_eq!(req.content_type, "application/merge-patch+json");
    assert_eq!(req.body, r#"{"spec":{"replicas":5}}"#);

    let run = punnet(&server, &["get", "deploy", "web"]).await;
    assert!(
        run.out.starts_with(
            "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    0/5     0            0"
        ),
        "{}",
        run.out
    );

    let run = punnet(&server, &["scale", "deploy", "gone", "--replicas", "1"]).await;
    assert_eq!(
        run.result.unwrap_err().report().unwrap(),
        r#"Error from server (NotFound): deployments.apps "gone" not found"#
    );
}

#[tokio::test]
async fn delete_reports_each_object() {
    let fake = Fake::default();
    let server = fake.start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, DEPLOYMENT.replace("REPLICAS", "2")).unwrap();
    punnet(&server, &["apply", "-f", file.to_str().unwrap()])
        .await
        .result
        .unwrap();

    let run = punnet(&server, &["delete", "deploy", "web", "nope"]).await;
    assert_eq!(run.out, "deployment.apps \"web\" deleted\n");
    assert_eq!(
        run.err,
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
    assert!(matches!(run.result, Err(Error::AlreadyReported)));

    let run = punnet(
        &server,
        &["delete", "-f", file.to_str().unwrap(), "--ignore-not-found"],
    )
    .await;
    assert!(run.result.is_ok());
    assert!(run.out.is_empty() && run.err.is_empty());
}

#[tokio::test]
async fn logs_of_a_deployment_use_its_best_pod() {
    let fake = Fake::default().with_pods();
    let server = fake.start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, DEPLOYMENT.replace("REPLICAS", "2")).unwrap();
    punnet(&server, &["apply", "-f", file.to_str().unwrap()])
        .await
        .result
        .unwrap();

    let run = punnet(
        &server,
        &["logs", "deployment/web", "-c", "web", "-f", "--tail", "20"],
    )
    .await;
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(
        run.out,
        "logs of web-b\ncontainer=web&follow=true&tailLines=20\n"
    );
    assert_eq!(run.err, "Found 2 pods, using pod/web-b\n");

    let run = punnet(&server, &["logs", "db-0"]).await;
    assert_eq!(run.out, "logs of db-0\n\n");
}

#[tokio::test]
async fn version_and_an_unreachable_server() {
    let fake = Fake::default();
    let server = fake.start().await;
    let run = punnet(&server, &["version"]).await;
    assert_eq!(
        run.out,
        format!(
            "Client Version: v{}\nServer Version: v0.1.0\nServer Platform: linux/arm64\n",
            env!("CARGO_PKG_VERSION")
        )
    );

    // A port that was free a moment ago: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let run = punnet(&format!("https://{addr}"), &["get", "nodes"]).await;
    assert_eq!(
        run.result.unwrap_err().report().unwrap(),
        format!("error: cannot reach the controller at https://{addr}: is punnet-controller running? (set --server or PUNNET_SERVER)")
    );

    let run = punnet(&server, &["get", "foo"]).await;
    assert_eq!(
        run.result.unwrap_err().report().unwrap(),
        r#"error: the server doesn't have a resource type "foo""#
    );
}

#[tokio::test]
async fn delete_passes_the_grace_period_and_waits_for_the_object_to_go() {
    let fake = Fake::default().with_pods();
    let server = fake.start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, DEPLOYMENT.replace("REPLICAS", "2")).unwrap();
    let apply = || {
        let (server, file) = (server.clone(), file.clone());
        async move {
            punnet(&server, &["apply", "-f", file.to_str().unwrap()])
                .await
                .result
                .unwrap()
        }
    };
    let last_delete = |fake: &Fake| {
        fake.requests()
            .into_iter()
            .rev()
            .find(|r| r.method == Method::DELETE)
            .unwrap()
    };

    // Waits (by default) until the object is gone: here at once.
    apply().await;
    let run = punnet(&server, &["delete", "deploy", "web", "--grace-period", "5"]).await;
    run.result.unwrap();
    assert_eq!(run.out, "deployment.apps \"web\" deleted\n");
    assert_eq!(
        query_param(&last_delete(&fake).query, "gracePeriodSeconds").as_deref(),
        Some("5")
    );
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.method == Method::GET && r.path.ends_with("/deployments/web")));

    apply().await;
    punnet(&server, &["delete", "deploy", "web", "--now"])
        .await
        .result
        .unwrap();
    assert_eq!(
        query_param(&last_delete(&fake).query, "gracePeriodSeconds").as_deref(),
        Some("1")
    );

    apply().await;
    let run = punnet(
        &server,
        &["delete", "-f", file.to_str().unwrap(), "--force"],
    )
    .await;
    run.result.unwrap();
    assert_eq!(run.out, "deployment.apps \"web\" force deleted\n");
    assert!(
        run.err.starts_with("Warning: Immediate deletion"),
        "{}",
        run.err
    );
    assert_eq!(
        query_param(&last_delete(&fake).query, "gracePeriodSeconds").as_deref(),
        Some("0")
    );

    // Without any flag no grace period is sent: the Pod's own applies.
    apply().await;
    punnet(&server, &["delete", "deploy", "web", "--wait=false"])
        .await
        .result
        .unwrap();
    assert_eq!(last_delete(&fake).query, "");
    // --cascade becomes propagationPolicy.
    apply().await;
    punnet(
        &server,
        &[
            "delete",
            "deploy",
            "web",
            "--cascade=orphan",
            "--wait=false",
        ],
    )
    .await
    .result
    .unwrap();
    assert_eq!(
        query_param(&last_delete(&fake).query, "propagationPolicy").as_deref(),
        Some("Orphan")
    );

    let run = punnet(
        &server,
        &["delete", "deploy", "web", "--now", "--grace-period", "3"],
    )
    .await;
    assert_eq!(
        run.result.unwrap_err().report().unwrap(),
        "error: --now and --grace-period cannot be specified together"
    );

    // A Pod that stays terminating: --wait=false returns, the wait times out clearly.
    let run = punnet(&server, &["delete", "pod", "web-a", "--wait=false"]).await;
    run.result.unwrap();
    assert_eq!(run.out, "pod \"web-a\" deleted\n");
    let started = std::time::Instant::now();
    let run = punnet(&server, &["delete", "pod", "web-b", "--timeout", "600ms"]).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
    assert_eq!(run.out, "pod \"web-b\" deleted\n");
    let msg = run.result.unwrap_err().report().unwrap();
    assert!(
        msg.starts_with("error: timed out after 600ms waiting for pod \"web-b\" to be deleted"),
        "{msg}"
    );
}

#[tokio::test]
async fn delete_by_label_selector_deletes_what_matches() {
    let fake = Fake::default().with_pods();
    let server = fake.start().await;
    let run = punnet(
        &server,
        &["delete", "pods", "-l", "app=web", "--wait=false"],
    )
    .await;
    run.result.unwrap();
    assert_eq!(run.out, "pod \"web-a\" deleted\npod \"web-b\" deleted\n");
    let deletes: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::DELETE)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        deletes,
        vec![
            "/api/v1/namespaces/default/pods/web-a",
            "/api/v1/namespaces/default/pods/web-b"
        ]
    );
    let run = punnet(&server, &["delete", "pods", "-l", "app=none"]).await;
    run.result.unwrap();
    assert_eq!(run.err, "No resources found in default namespace.\n");
    let run = punnet(&server, &["delete", "pods", "web-a", "-l", "app=web"]).await;
    assert!(run.result.is_err());
}

#[tokio::test]
async fn tls_with_the_wrong_ca_or_plain_http_is_refused_with_the_fix() {
    let fake = Fake::default();
    let server = fake.start().await;
    let other = tempfile::tempdir().unwrap();
    punnet_controller::tls::prepare(other.path(), &Default::default()).unwrap();
    let wrong = other.path().join("ca.pem");
    let argv = [
        "punnet",
        "--server",
        &server,
        "--token",
        "s3cret",
        "--ca",
        wrong.to_str().unwrap(),
        "version",
    ];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = run_with(Cli::try_parse_from(argv).unwrap(), &mut out, &mut err).await;
    let msg = result.unwrap_err().to_string();
    assert!(msg.contains("not signed by a trusted CA"), "{msg}");
    assert!(msg.contains("--ca"), "{msg}");
    assert!(fake.requests().is_empty(), "nothing reached the server");

    let plain = server.replace("https://", "http://");
    let argv = ["punnet", "--server", &plain, "--token", "s3cret", "version"];
    let result = run_with(Cli::try_parse_from(argv).unwrap(), &mut out, &mut err).await;
    let msg = result.unwrap_err().to_string();
    assert!(msg.contains("--allow-plaintext"), "{msg}");
}
