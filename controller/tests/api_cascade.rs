//! Cascading deletion through the REST API, with the DaemonSet and Deployment
//! controllers and the garbage collector running over a temporary store: Background
//! (the default), Foreground (the owner waits for its Pods) and Orphan (the Pods stay,
//! released), from a query parameter or a `DeleteOptions` body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use punnet_api::{Node, NodeCondition, Pod};
use punnet_controller::daemonset::{self, DaemonSetConfig};
use punnet_controller::deployment::{self, DeploymentConfig};
use punnet_controller::gc::{self, GcConfig};
use punnet_controller::http::{serve, ApiState, Tokens};
use punnet_controller::logproxy::LogProxy;
use punnet_controller::replicaset;
use punnet_controller::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const DS: &str = "/apis/apps/v1/namespaces/default/daemonsets";
const PODS: &str = "/api/v1/namespaces/default/pods";
const WAIT: Duration = Duration::from_secs(15);

struct Api {
    base: String,
    client: reqwest::Client,
    store: Arc<Store>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The API, the two controllers and the collector, and two Ready nodes (no agents:
/// Pods deleted on them stay Terminating until force-deleted, as an agent would
/// confirm).
async fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let cancel = CancellationToken::new();
    for name in ["n1", "n2"] {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        store.create(n).unwrap();
    }
    let state = ApiState::new(
        store.clone(),
        Arc::new(Tokens::new(TOKEN)),
        Arc::new(LogProxy::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state, cancel.clone().cancelled_owned()));
    let fast = Duration::from_secs(1);
    tokio::spawn(daemonset::run_with(
        store.clone(),
        DaemonSetConfig {
            resync: fast,
            ..Default::default()
        },
        cancel.clone(),
    ));
    tokio::spawn(deployment::run_with(
        store.clone(),
        DeploymentConfig {
            resync: fast,
            ..Default::default()
        },
        cancel.clone(),
    ));
    tokio::spawn(replicaset::run_with(
        store.clone(),
        DeploymentConfig {
            resync: fast,
            ..Default::default()
        },
        cancel.clone(),
    ));
    tokio::spawn(gc::run_with(
        store.clone(),
        GcConfig {
            resync: fast,
            ..Default::default()
        },
        cancel.clone(),
    ));
    Api {
        base,
        client: reqwest::Client::new(),
        store,
        cancel,
        _dir: dir,
    }
}

impl Api {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn pods(&self) -> Vec<Value> {
        let (_, list) = self.send(Method::GET, PODS, None).await;
        list["items"].as_array().cloned().unwrap_or_default()
    }

    async fn until<T>(&self, what: &str, mut f: impl AsyncFnMut(&Api) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = f(self).await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn daemon_set() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
            }
        }
    })
}

fn terminating(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_delete_waits_for_the_pods_then_removes_the_owner() {
    let api = start().await;
    let (code, _) = api.send(Method::POST, DS, Some(daemon_set())).await;
    assert_eq!(code, StatusCode::CREATED);
    api.until("a Pod on each node", async |a: &Api| {
        (a.pods().await.len() == 2).then_some(())
    })
    .await;

    let options =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"});
    let (code, body) = api
        .send(Method::DELETE, &format!("{DS}/agent"), Some(options))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        body["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");

    // Its Pods are being stopped; it waits for them, and nothing replaces them.
    api.until("both Pods Terminating", async |a: &Api| {
        let pods = a.pods().await;
        (pods.len() == 2 && pods.iter().all(terminating)).then_some(())
    })
    .await;
    let (code, _) = api.send(Method::GET, &format!("{DS}/agent"), None).await;
    assert_eq!(code, StatusCode::OK, "the owner waits for its Pods");

    // The nodes confirm the stop (here: a forced delete): the owner goes.
    for p in api.pods().await {
        let name = p["metadata"]["name"].as_str().unwrap();
        let (code, _) = api
            .send(
                Method::DELETE,
                &format!("{PODS}/{name}?gracePeriodSeconds=0"),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::OK);
    }
    api.until("the DaemonSet gone", async |a: &Api| {
        let (code, _) = a.send(Method::GET, &format!("{DS}/agent"), None).await;
        (code == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(api.pods().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_is_the_default_and_orphan_releases_the_pods() {
    let api = start().await;
    // Background: a Deployment goes at once, its (unscheduled) Pods after it.
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
            }
        }
    });
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    api.send(Method::POST, deployments, Some(deploy)).await;
    api.until("two web Pods", async |a: &Api| {
        (a.pods().await.len() == 2).then_some(())
    })
    .await;
    let (code, _) = api
        .send(Method::DELETE, &format!("{deployments}/web"), None)
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = api
        .send(Method::GET, &format!("{deployments}/web"), None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "the owner is gone at once");
    api.until("the web Pods gone", async |a: &Api| {
        a.pods().await.is_empty().then_some(())
    })
    .await;

    // Orphan (query parameter): the DaemonSet goes, its Pods stay without an owner.
    api.send(Method::POST, DS, Some(daemon_set())).await;
    api.until("two daemon Pods", async |a: &Api| {
        (a.pods().await.len() == 2).then_some(())
    })
    .await;
    let (code, body) = api
        .send(
            Method::DELETE,
            &format!("{DS}/agent?propagationPolicy=Orphan"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _) = api.send(Method::GET, &format!("{DS}/agent"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // Two resyncs of the collector and the DaemonSet controller later, still there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pods = api.pods().await;
    assert_eq!(pods.len(), 2, "{pods:?}");
    for p in &pods {
        assert!(!terminating(p), "{p}");
        assert!(p["metadata"].get("ownerReferences").is_none(), "{p}");
    }

    let (code, body) = api
        .send(
            Method::DELETE,
            &format!("{PODS}/x?propagationPolicy=Sideways"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not one of Background, Foreground, Orphan"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_whose_owner_never_existed_is_collected() {
    let api = start().await;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray", "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ghost",
            "uid": "00000000-0000-4000-8000-000000000000", "controller": true
        }]},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    });
    let (code, body) = api.send(Method::POST, PODS, Some(pod)).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    api.until("the stray Pod collected", async |a: &Api| {
        a.store
            .get::<Pod>(Some("default"), "stray")
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
