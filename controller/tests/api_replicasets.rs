//! ReplicaSets through the REST API, as `punnet` and kubectl use it: apply, get, list,
//! validation, the immutable selector, delete, discovery; and the Deployment revision
//! annotation surviving a re-apply of a manifest that does not carry it.

use std::sync::Arc;

use punnet_api::{Deployment, ANNOTATION_REVISION};
use punnet_controller::http::{serve, ApiState, Tokens};
use punnet_controller::logproxy::LogProxy;
use punnet_controller::store::Store;
use serde_json::Value;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const APPLY: &str = "application/apply-patch+yaml";

const RS: &str = "\
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-x, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox}]
";

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.header("content-type", APPLY).body(b);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap_or(Value::Null))
    }

    async fn apply(&self, path: &str, body: &str) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body.to_string()))
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
}

async fn start() -> (Api, Arc<Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let state = ApiState::new(
        store.clone(),
        Arc::new(Tokens::new(TOKEN)),
        Arc::new(LogProxy::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state, std::future::pending()));
    let api = Api {
        base,
        client: reqwest::Client::new(),
    };
    (api, store, dir)
}

#[tokio::test]
async fn replica_sets_are_served_like_the_other_kinds() {
    let (api, store, _dir) = start().await;
    let path = "/apis/apps/v1/namespaces/default/replicasets/web-x";
    let (code, body) = api.apply(path, RS).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["kind"], "ReplicaSet");

    // The controller makes its Pods and writes its status.
    punnet_controller::replicaset::reconcile(&store, "default", "web-x").unwrap();
    let (code, body) = api.get(path).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"]["replicas"], 2, "{body}");
    let (_, list) = api.get("/apis/apps/v1/replicasets").await;
    assert_eq!(list["kind"], "ReplicaSetList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let (code, body) = api
        .apply(path, &RS.replace("labels: {app: web}", "labels: {app: db}"))
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("spec.template.metadata.labels: must match spec.selector"));
    let changed = RS
        .replace(
            "{matchLabels: {app: web}}",
            "{matchLabels: {app: web, x: y}}",
        )
        .replace("labels: {app: web}", "labels: {app: web, x: y}");
    let (code, body) = api.apply(path, &changed).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("field is immutable"));

    let (code, _) = api.call(reqwest::Method::DELETE, path, None).await;
    assert_eq!(code, 200);
    assert_eq!(api.get(path).await.0, 404);

    let (_, apps) = api.get("/apis/apps/v1").await;
    let rs = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "ReplicaSet")
        .expect("ReplicaSet in discovery");
    assert_eq!(rs["name"], "replicasets");
    assert_eq!(rs["shortNames"][0], "rs");
}

#[tokio::test]
async fn reapplying_a_deployment_keeps_its_revision() {
    let (api, store, _dir) = start().await;
    let manifest = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 50%, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox}]
";
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    assert_eq!(api.apply(path, manifest).await.0, 201);
    store
        .modify::<Deployment>(Some("default"), "web", |d| {
            d.metadata
                .annotations
                .insert(ANNOTATION_REVISION.into(), "4".into());
        })
        .unwrap();
    let (code, body) = api.apply(path, manifest).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["annotations"][ANNOTATION_REVISION], "4");
    assert_eq!(body["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "50%");

    let bad = manifest
        .replace("maxUnavailable: 0", "maxUnavailable: 0%")
        .replace("50%", "0");
    let (code, body) = api.apply(path, &bad).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("may not be 0 when `maxSurge` is 0"));
}
