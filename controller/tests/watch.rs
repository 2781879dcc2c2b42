//! The watch API, Events and `/metrics` over the real REST API: a server on
//! 127.0.0.1:0 over a temporary sled store, driven with reqwest as `punnet` drives it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use punnet_api::wire::{AgentEvent, LogRequest};
use punnet_api::{ConfigMap, ObjectReference, Pod};
use punnet_controller::http::{serve, ApiState, LogError, LogSource, LogStream, Tokens};
use punnet_controller::store::Store;
use serde_json::{json, Value};
use tokio::sync::oneshot;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct NoLogs;

impl LogSource for NoLogs {
    fn open(&self, node: &str, _: LogRequest) -> BoxFuture<'_, Result<LogStream, LogError>> {
        let node = node.to_string();
        Box::pin(async move {
            Err(LogError::NodeUnavailable {
                node,
                reason: "no logs in this test".into(),
            })
        })
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    store: Arc<Store>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let state = ApiState::new(
        store.clone(),
        Arc::new(Tokens::new(TOKEN)),
        Arc::new(NoLogs),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    Server {
        base,
        client: reqwest::Client::new(),
        store,
        _stop: stop,
        _dir: dir,
    }
}

impl Server {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap_or(Value::Null))
    }

    async fn text(&self, path: &str) -> String {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.text().await.unwrap()
    }

    async fn watch(&self, path: &str) -> Lines {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        Lines {
            resp,
            buf: Vec::new(),
        }
    }
}

/// The JSON lines of a watch response.
struct Lines {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Lines {
    /// The next line; `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).expect("a watch line is JSON"));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("no watch line within 10 s")
                .unwrap()?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// `(type, name, resourceVersion)` of the next line.
    async fn event(&mut self) -> (String, String, u64) {
        let v = self.next().await.expect("the watch ended early");
        let rv = v["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .unwrap_or(0);
        (
            v["type"].as_str().unwrap_or_default().to_string(),
            v["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            rv,
        )
    }
}

fn pod(name: &str, app: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    p.metadata.namespace = Some("default".into());
    p.metadata.labels.insert("app".into(), app.into());
    p.spec.containers.push(punnet_api::Container {
        name: "c".into(),
        image: "busybox".into(),
        ..Default::default()
    });
    p
}

fn set_phase(store: &Store, name: &str, phase: &str) {
    store
        .modify::<Pod>(Some("default"), name, |p| {
            p.status.phase = Some(phase.into())
        })
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn list_then_watch_then_resume_without_loss_or_duplicates() {
    let s = start().await;
    s.store.create(pod("a", "web")).unwrap();
    let (code, list) = s.get("/api/v1/namespaces/default/pods").await;
    assert_eq!(code, 200);
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let mut w = s
        .watch(&format!(
            "/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"
        ))
        .await;
    s.store.create(pod("b", "web")).unwrap();
    set_phase(&s.store, "a", "Running");
    s.store.delete::<Pod>(Some("default"), "b", None).unwrap();
    // Another namespace and another kind are not in this watch.
    let mut ns = punnet_api::namespace::Namespace::default();
    ns.metadata.name = "other".into();
    s.store.create(ns).unwrap();
    let mut other = pod("x", "web");
    other.metadata.namespace = Some("other".into());
    s.store.create(other).unwrap();
    let added = w.event().await;
    assert_eq!((added.0.as_str(), added.1.as_str()), ("ADDED", "b"));
    let modified = w.event().await;
    assert_eq!(
        (modified.0.as_str(), modified.1.as_str()),
        ("MODIFIED", "a")
    );
    let deleted = w.event().await;
    assert_eq!((deleted.0.as_str(), deleted.1.as_str()), ("DELETED", "b"));
    assert!(added.2 < modified.2 && modified.2 < deleted.2);
    let last = deleted.2;
    drop(w);

    // Meanwhile, while nobody watches:
    s.store.create(pod("c", "web")).unwrap();
    set_phase(&s.store, "c", "Running");
    s.store.delete::<Pod>(Some("default"), "a", None).unwrap();

    let mut w = s
        .watch(&format!(
            "/api/v1/namespaces/default/pods?watch=true&resourceVersion={last}&timeoutSeconds=1"
        ))
        .await;
    let mut seen = Vec::new();
    while let Some(v) = w.next().await {
        seen.push((
            v["type"].as_str().unwrap().to_string(),
            v["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let expected: Vec<(String, String)> = [("ADDED", "c"), ("MODIFIED", "c"), ("DELETED", "a")]
        .iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
    assert_eq!(
        seen, expected,
        "exactly the changes after {last}, once each"
    );
}

#[tokio::test]
async fn a_watch_without_version_starts_with_the_objects_and_selectors_apply() {
    let s = start().await;
    s.store.create(pod("a", "web")).unwrap();
    s.store.create(pod("db", "db")).unwrap();
    let mut w = s
        .watch("/api/v1/pods?watch=true&labelSelector=app%3Dweb&allowWatchBookmarks=true&timeoutSeconds=2")
        .await;
    assert_eq!(w.event().await.0, "ADDED");
    // The label changes away from the selector: DELETED for this watch.
    s.store
        .modify::<Pod>(Some("default"), "a", |p| {
            p.metadata.labels.insert("app".into(), "old".into());
        })
        .unwrap();
    set_phase(&s.store, "db", "Running");
    let (t, name, _) = w.event().await;
    assert_eq!((t.as_str(), name.as_str()), ("DELETED", "a"));
    // Nothing else matches; the stream ends at its timeout with a bookmark.
    let (t, _, rv) = w.event().await;
    assert_eq!(t, "BOOKMARK");
    assert_eq!(rv, s.store.revision());
    assert!(w.next().await.is_none());
}

#[tokio::test]
async fn a_version_older_than_the_history_is_gone() {
    let s = start().await;
    s.store.create(pod("a", "web")).unwrap();
    let old = s.store.revision();
    // More changes than the watch cache keeps.
    for i in 0..punnet_controller::watchcache::DEFAULT_CAPACITY + 10 {
        let mut cm = ConfigMap::default();
        cm.metadata.name = format!("cm-{i}");
        cm.metadata.namespace = Some("default".into());
        s.store.create(cm).unwrap();
    }
    let latest = s.store.revision();
    // Once the cache has taken them all in, the old version has expired.
    let mut answer = (0, Value::Null);
    for _ in 0..100 {
        answer = s
            .get(&format!("/api/v1/pods?watch=true&resourceVersion={old}"))
            .await;
        if answer.0 == 410 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, status) = answer;
    assert_eq!(code, 410, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Expired");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .starts_with(&format!("too old resource version: {old} (")));
    // A recent version still works.
    let mut w = s
        .watch(&format!(
            "/api/v1/pods?watch=true&resourceVersion={latest}&timeoutSeconds=1"
        ))
        .await;
    s.store.create(pod("b", "web")).unwrap();
    assert_eq!(w.event().await.1, "b");
    // Bad versions are refused clearly.
    let (code, status) = s.get("/api/v1/pods?watch=true&resourceVersion=abc").await;
    assert_eq!(code, 400, "{status}");
}

fn pod_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        namespace: Some("default".into()),
        name: name.into(),
        uid: None,
        field_path: None,
    }
}

#[tokio::test]
async fn events_are_aggregated_listed_filtered_and_watched() {
    let s = start().await;
    let recorder = s.store.recorder();
    recorder.normal(
        pod_ref("web-1"),
        "Scheduled",
        "Successfully assigned default/web-1 to pi-1",
    );
    let backoff = AgentEvent {
        namespace: "default".into(),
        pod: "web-1".into(),
        uid: String::new(),
        container: Some("app".into()),
        warning: true,
        reason: "BackOff".into(),
        message: "Back-off restarting failed container app".into(),
        count: 2,
    };
    recorder.record_agent_events("pi-1", std::slice::from_ref(&backoff));
    recorder.record_agent_events("pi-1", &[backoff]);
    recorder.normal(
        pod_ref("web-2"),
        "Scheduled",
        "Successfully assigned default/web-2 to pi-2",
    );

    let (code, list) = s.get("/api/v1/namespaces/default/events").await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "EventList");
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let (_, one) = s
        .get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb-1,involvedObject.kind%3DPod")
        .await;
    let items = one["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let b = items.iter().find(|e| e["reason"] == "BackOff").unwrap();
    assert_eq!(b["count"], 4);
    assert_eq!(b["type"], "Warning");
    assert_eq!(
        b["source"],
        json!({"component": "punnet-agent", "host": "pi-1"})
    );
    assert_eq!(b["involvedObject"]["fieldPath"], "spec.containers{app}");
    let (_, none) = s.get("/api/v1/namespaces/other/events").await;
    assert!(none["items"].as_array().unwrap().is_empty());

    let rv = one["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = s
        .watch(&format!(
            "/api/v1/events?watch=true&resourceVersion={rv}&fieldSelector=involvedObject.name%3Dweb-1"
        ))
        .await;
    recorder.warning(pod_ref("web-2"), "BackOff", "not this one");
    recorder.warning(pod_ref("web-1"), "Unhealthy", "Liveness probe failed");
    recorder.warning(pod_ref("web-1"), "Unhealthy", "Liveness probe failed");
    let first = w.next().await.unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["reason"], "Unhealthy");
    let second = w.next().await.unwrap();
    assert_eq!(second["type"], "MODIFIED");
    assert_eq!(second["object"]["count"], 2);
}

/// An agent's events go over the wire in its status report and come out of the API as
/// Events from `punnet-agent` on that node.
#[tokio::test]
async fn agent_events_travel_in_the_status_report() {
    use punnet_api::wire::{decode, encode, NodeFacts, NodeStatusReport};
    let s = start().await;
    let report = NodeStatusReport {
        node: "pi-1".into(),
        generation_seen: 0,
        sent_at: punnet_api::Time::now(),
        facts: NodeFacts {
            arch: "arm64".into(),
            cpus: 4,
            memory_bytes: 1 << 30,
            ..Default::default()
        },
        pods: vec![],
        events: vec![
            AgentEvent {
                namespace: "default".into(),
                pod: "web-1".into(),
                uid: "u-1".into(),
                container: Some("app".into()),
                warning: false,
                reason: "Pulling".into(),
                message: "Pulling image \"busybox:1.36\"".into(),
                count: 1,
            },
            AgentEvent {
                namespace: "default".into(),
                pod: "web-1".into(),
                uid: "u-1".into(),
                container: Some("app".into()),
                warning: true,
                reason: "Failed".into(),
                message: "Error: ErrImagePull".into(),
                count: 2,
            },
        ],
    };
    let received: NodeStatusReport = decode(&encode(&report)).unwrap();
    assert_eq!(received, report);
    punnet_controller::nodesync::status::ingest(
        &s.store,
        "pi-1",
        &received,
        Duration::from_secs(30),
    )
    .unwrap();
    let (_, list) = s
        .get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb-1")
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let failed = items.iter().find(|e| e["reason"] == "Failed").unwrap();
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["count"], 2);
    assert_eq!(failed["source"]["host"], "pi-1");
    assert_eq!(failed["involvedObject"]["uid"], "u-1");
    let text = s.text("/metrics").await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("punnet_status_reports_ingested_total ") && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_parse_and_have_every_family() {
    let s = start().await;
    s.store.create(pod("a", "web")).unwrap();
    set_phase(&s.store, "a", "Running");
    s.store.recorder().normal(pod_ref("a"), "Scheduled", "x");
    let _watch = s.watch("/api/v1/pods?watch=true&timeoutSeconds=30").await;
    punnet_controller::prometheus::observe_reconcile("deployment", Duration::from_millis(3));
    let text = s.text("/metrics").await;
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        samples.insert(series.to_string(), value);
    }
    for family in [
        "punnet_objects",
        "punnet_pods",
        "punnet_nodes",
        "punnet_reconcile_duration_seconds_bucket",
        "punnet_scheduling_latency_seconds_count",
        "punnet_mqtt_messages_total",
        "punnet_status_reports_ingested_total",
        "punnet_watch_streams_open",
        "punnet_events_recorded_total",
    ] {
        assert!(
            samples.keys().any(|k| k.split('{').next() == Some(family)),
            "{family} missing from\n{text}"
        );
    }
    assert_eq!(samples["punnet_objects{resource=\"pods\"}"], 1.0);
    assert_eq!(samples["punnet_pods{phase=\"Running\"}"], 1.0);
    assert!(samples["punnet_watch_streams_open"] >= 1.0);
    assert!(samples["punnet_events_recorded_total"] >= 1.0);
    assert!(samples["punnet_reconcile_duration_seconds_count{controller=\"deployment\"}"] >= 1.0);
    // Behind the token, as the rest of the API.
    let anon = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
}
