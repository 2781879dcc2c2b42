//! `punnet cordon|uncordon|drain` against the controller's real REST API (its router over
//! a real store) with the node lifecycle controller running, and a stand-in for the
//! node's agent that confirms stopped Pods the way status ingest does.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use punnet_api::taint::TAINT_UNSCHEDULABLE;
use punnet_api::{Container, Node, NodeCondition, OwnerReference, Pod};
use punnet_cli::{run_with, Cli, Error};
use punnet_controller::http::{serve_tls, ApiState, Tokens};
use punnet_controller::logproxy::LogProxy;
use punnet_controller::nodelifecycle::{self, NodeLifecycleConfig};
use punnet_controller::podgc;
use punnet_controller::store::Store;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "drain-test-token";

fn node(name: &str) -> Node {
    let mut n = Node::default();
    n.metadata.name = name.into();
    n.status.conditions.push(NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        ..Default::default()
    });
    n
}

fn pod(name: &str, node: &str, owner: Option<&str>) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    p.metadata.namespace = Some("default".into());
    p.spec.node_name = Some(node.into());
    p.spec.termination_grace_period_seconds = Some(30);
    p.spec.containers.push(Container {
        name: "c".into(),
        image: "busybox:1.36".into(),
        ..Default::default()
    });
    p.status.phase = Some("Running".into());
    if let Some(kind) = owner {
        p.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: "owner".into(),
            uid: format!("{kind}-uid"),
            controller: Some(true),
            block_owner_deletion: None,
        });
    }
    p
}

struct Fleet {
    base: String,
    store: Arc<Store>,
    /// `name=grace` of each terminating Pod the stand-in agent stopped.
    stopped: Arc<Mutex<BTreeSet<String>>>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let cancel = CancellationToken::new();
    let state = ApiState::new(
        store.clone(),
        Arc::new(Tokens::new(TOKEN)),
        Arc::new(LogProxy::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let tls = punnet_controller::tls::prepare(dir.path(), &Default::default()).unwrap();
    tokio::spawn(serve_tls(
        listener,
        tls.https,
        state,
        cancel.clone().cancelled_owned(),
    ));
    tokio::spawn(nodelifecycle::run(
        store.clone(),
        NodeLifecycleConfig {
            resync: Duration::from_millis(200),
            ..Default::default()
        },
        cancel.clone(),
    ));
    // The agent's part: stop what is terminating, then report without it.
    let stopped: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    {
        let (store, stopped, cancel) = (store.clone(), stopped.clone(), cancel.clone());
        tokio::spawn(async move {
            while !cancel.is_cancelled() {
                for p in store.list::<Pod>(None).unwrap().0 {
                    if let Some(g) = p.metadata.deletion_grace_period_seconds {
                        stopped
                            .lock()
                            .unwrap()
                            .insert(format!("{}={g}", p.metadata.name));
                    }
                }
                podgc::finalize_reported(&store, "pi-3", &BTreeSet::new()).unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
    }
    Fleet {
        base,
        store,
        stopped,
        cancel,
        _dir: dir,
    }
}

impl Fleet {
    /// Runs one command line; returns its stdout, stderr and error line.
    async fn punnet(&self, args: &[&str]) -> (String, String, Option<String>) {
        let ca = self._dir.path().join("ca.pem");
        let ca = ca.to_str().unwrap();
        let mut argv = vec![
            "punnet", "--server", &self.base, "--token", TOKEN, "--ca", ca,
        ];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = run_with(cli, &mut out, &mut err).await;
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            result.err().and_then(|e: Error| e.report()),
        )
    }

    fn pod_names(&self) -> BTreeSet<String> {
        self.store
            .list::<Pod>(None)
            .unwrap()
            .0
            .into_iter()
            .map(|p| p.metadata.name)
            .collect()
    }

    fn node(&self) -> Node {
        self.store.get(None, "pi-3").unwrap().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_cordons_refuses_what_kubectl_refuses_then_evicts_gracefully() {
    let f = start().await;
    f.store.create(node("pi-3")).unwrap();
    f.store.create(node("pi-4")).unwrap();
    f.store
        .create(pod("web-x", "pi-3", Some("ReplicaSet")))
        .unwrap();
    f.store
        .create(pod("log-shipper-pi-3", "pi-3", Some("DaemonSet")))
        .unwrap();
    f.store.create(pod("bare", "pi-3", None)).unwrap();
    f.store
        .create(pod("web-y", "pi-4", Some("ReplicaSet")))
        .unwrap();

    // Without flags: cordoned, nothing evicted, kubectl's error.
    let (out, _, err) = f.punnet(&["drain", "pi-3"]).await;
    assert_eq!(out, "node/pi-3 cordoned\n");
    let err = err.unwrap();
    assert!(err.starts_with("error: unable to drain node \"pi-3\" due to error: [cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/log-shipper-pi-3, cannot delete Pods that declare no controller (use --force to override): default/bare]"), "{err}");
    assert_eq!(f.pod_names().len(), 4);
    assert_eq!(f.node().spec.unschedulable, Some(true));

    // The controller taints the cordoned node, as Kubernetes does.
    let mut tainted = false;
    for _ in 0..100 {
        if f.node()
            .spec
            .taints
            .iter()
            .any(|t| t.key == TAINT_UNSCHEDULABLE)
        {
            tainted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tainted, "no unschedulable taint on the cordoned node");

    let (out, stderr, err) = f
        .punnet(&[
            "drain",
            "pi-3",
            "--ignore-daemonsets",
            "--force",
            "--grace-period",
            "5",
            "--timeout",
            "30s",
        ])
        .await;
    assert_eq!(err, None, "{stderr}");
    assert_eq!(
        out,
        "node/pi-3 already cordoned\n\
         evicting pod default/bare\n\
         evicting pod default/web-x\n\
         pod/bare evicted\n\
         pod/web-x evicted\n\
         node/pi-3 drained\n"
    );
    assert!(stderr.contains("Warning: ignoring DaemonSet-managed Pods: default/log-shipper-pi-3"));
    assert!(stderr.contains("Warning: deleting Pods that declare no controller: default/bare"));
    assert_eq!(
        f.pod_names(),
        BTreeSet::from(["log-shipper-pi-3".to_string(), "web-y".to_string()])
    );
    // Graceful, with the grace period asked for: the agent saw them terminating.
    let stopped = f.stopped.lock().unwrap().clone();
    assert_eq!(
        stopped,
        BTreeSet::from(["bare=5".to_string(), "web-x=5".to_string()])
    );
    assert!(f
        .store
        .recorder()
        .list(None)
        .iter()
        .any(|e| e.reason == "Evicted" && e.involved_object.name == "web-x"));

    // Uncordon: schedulable again, the taint goes.
    let (out, _, err) = f.punnet(&["uncordon", "pi-3"]).await;
    assert_eq!((out.as_str(), err), ("node/pi-3 uncordoned\n", None));
    let (out, _, _) = f.punnet(&["uncordon", "pi-3"]).await;
    assert_eq!(out, "node/pi-3 already uncordoned\n");
    let (out, _, _) = f.punnet(&["cordon", "pi-4"]).await;
    assert_eq!(out, "node/pi-4 cordoned\n");
    let (_, _, err) = f.punnet(&["cordon", "pi-9"]).await;
    assert!(err.unwrap().contains("not found"));
    f.cancel.cancel();
}
