//! Namespaces through the REST API with the namespace controller running: creating
//! into a missing namespace fails as the API server's does, deleting one turns it
//! `Terminating`, refuses new content, empties it and then removes it; `default` stays.

use std::sync::Arc;
use std::time::{Duration, Instant};

use punnet_controller::http::{serve, ApiState, Tokens};
use punnet_controller::logproxy::LogProxy;
use punnet_controller::namespaces;
use punnet_controller::store::Store;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap_or(Value::Null))
    }
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
}

#[tokio::test]
async fn a_namespace_is_created_used_and_deleted_with_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let cancel = CancellationToken::new();
    tokio::spawn(namespaces::run(store.clone(), cancel.clone()));
    let state = ApiState::new(
        store.clone(),
        Arc::new(Tokens::new(TOKEN)),
        Arc::new(LogProxy::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = Api {
        base: format!("http://{}", listener.local_addr().unwrap()),
        client: reqwest::Client::new(),
    };
    tokio::spawn(serve(listener, state, cancel.clone().cancelled_owned()));
    use reqwest::Method as M;

    let (code, body) = api
        .send(
            M::POST,
            "/api/v1/namespaces/team/configmaps",
            Some(config_map("cfg")),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["message"], "namespaces \"team\" not found");
    assert_eq!(body["details"]["kind"], "namespaces");

    let (code, ns) = api
        .send(
            M::POST,
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": "team", "labels": {"env": "lab"}}})),
        )
        .await;
    assert_eq!(code, 201, "{ns}");
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(ns["status"]["phase"], "Active");
    let (_, list) = api
        .send(M::GET, "/api/v1/namespaces?labelSelector=env%3Dlab", None)
        .await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["team"]);
    let (_, all) = api.send(M::GET, "/api/v1/namespaces", None).await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        2,
        "default and team"
    );

    let (code, body) = api
        .send(
            M::POST,
            "/api/v1/namespaces/team/configmaps",
            Some(config_map("cfg")),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (code, body) = api
        .send(M::POST, "/api/v1/namespaces/team/pods", Some(pod))
        .await;
    assert_eq!(code, 201, "{body}");

    let (code, body) = api
        .send(M::DELETE, "/api/v1/namespaces/default", None)
        .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");

    let (code, body) = api.send(M::DELETE, "/api/v1/namespaces/team", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["phase"], "Terminating");
    assert!(body["metadata"]["deletionTimestamp"].is_string());

    // Gone once empty (the Pod runs nowhere, so it goes at once).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = api.send(M::GET, "/api/v1/namespaces/team", None).await;
        if code == 404 {
            assert_eq!(body["message"], "Namespace team not found");
            break;
        }
        // Meanwhile nothing new may be created in it.
        let (code, body) = api
            .send(
                M::POST,
                "/api/v1/namespaces/team/configmaps",
                Some(config_map("late")),
            )
            .await;
        assert!(code == 403 || code == 404, "{code} {body}");
        assert!(Instant::now() < deadline, "namespace team never went away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, cms) = api.send(M::GET, "/api/v1/configmaps", None).await;
    // An empty list has no `items` (empty fields are left out).
    assert!(cms["items"].as_array().is_none_or(Vec::is_empty), "{cms}");
    let (_, pods) = api.send(M::GET, "/api/v1/pods", None).await;
    assert!(pods["items"].as_array().is_none_or(Vec::is_empty), "{pods}");
    cancel.cancel();
}
