//! The fleet page in a real browser (root: real containers, and Chromium runs as root
//! with --no-sandbox). One headless Chromium session (webcheck) for the whole binary:
//!
//! 1. A real fleet — the controller binary with TLS, an agent running busybox Pods —
//!    viewed after logging in with a read-only token: node, Pod phases, a log line
//!    followed live on the Pod's page, the page updating without a reload when the
//!    Deployment is scaled, and a Secret's value appearing nowhere (page or JSON).
//! 2. An in-process controller API in plaintext mode with a node that has every
//!    problem: the plaintext warning, the memory cgroup fix, throttling, and the
//!    per-node count of refused status reports.
//!
//! Screenshots at desktop and phone widths land in `target/screenshots/`.

mod fleet_support;

use std::sync::Arc;
use std::time::Duration;

use fleet_support::{eventually, Fleet};
use punnet_api::wire::{NodeFacts, NodeStatusReport};
use punnet_api::{Node, NodeCondition, Time};
use punnet_controller::http::{serve, ApiState, Transport};
use punnet_controller::logproxy::LogProxy;
use punnet_controller::metrics::Metrics;
use punnet_controller::signing::{status_rejected, Rejection};
use punnet_controller::store::Store;
use punnet_controller::tokens::Tokens;
use serde_json::json;
use webcheck::{Browser, Options, Scheme, DESKTOP, PHONE};

const SECRET_VALUE: &str = "hunter2-web-secret-5313";
const LOG_LINE: &str = "hello from the fleet page 8642";

fn manifests(replicas: u32) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: web-creds}}
stringData: {{password: {SECRET_VALUE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:latest
        command: [sh, -c, 'echo "{LOG_LINE}"; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 1; done']
        env:
        - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: web-creds, key: password}}}}}}
        resources: {{limits: {{memory: 32Mi, cpu: 200m}}}}
"#
    )
}

/// Rows of the Pods table for the Deployment's Pods in phase `phase`.
fn pods_in_phase(phase: &str) -> String {
    format!(
        "[...document.querySelectorAll('tr[data-pod^=\"default/web-\"]')].filter(r => r.innerText.includes('{phase}')).length"
    )
}

#[test]
fn root_fleet_page_in_a_browser() {
    let fleet = Arc::new(Fleet::start("web-pi"));
    fleet.apply("web.yaml", &manifests(1));
    eventually("1 Running Pod", Duration::from_secs(40), || {
        (fleet.running("app=web").len() == 1).then_some(())
    });
    let token = fleet.ok(&["token", "create", "--role", "read-only"]);
    let token = token.lines().next().unwrap().trim().to_string();
    // The fleet is dropped (and cleaned up) outside the runtime, after it: its Drop
    // blocks on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let base = format!("https://127.0.0.1:{}", fleet.http);
        let started = std::time::Instant::now();
        let browser = Browser::start(
            Options::default()
                .trust_ca(fleet.controller_dir().join("ca.pem"))
                .timeout(Duration::from_secs(20)),
        )
        .await
        .unwrap();
        println!("browser started in {:?}", started.elapsed());
        real_fleet(&browser, &fleet, &base, &token).await;
        problem_node(&browser).await;
        browser.close().await;
    });
}

async fn real_fleet(browser: &Browser, fleet: &Arc<Fleet>, base: &str, token: &str) {
    // Without a session the page sends the browser to the login form.
    browser.open(&format!("{base}/ui/")).await.unwrap();
    browser.wait_for_text("API token").await.unwrap();
    browser.screenshot("fleet-login", PHONE).await.unwrap();
    // A wrong token is refused with the reason.
    browser
        .client()
        .execute(
            "document.getElementById('token').value = 'pt_wrong.wrong'; document.getElementById('login').requestSubmit();",
            vec![],
        )
        .await
        .unwrap();
    browser.wait_for_text("not valid").await.unwrap();
    // The read-only token, typed into the form.
    browser
        .client()
        .execute(
            "document.getElementById('token').value = arguments[0]; document.getElementById('login').requestSubmit();",
            vec![json!(token)],
        )
        .await
        .unwrap();
    browser.wait_for_text("web-pi").await.unwrap();
    browser.wait_for_text("1 of 1 nodes ready").await.unwrap();
    browser
        .wait_until(
            "the web Pod Running",
            &format!("{} === 1", pods_in_phase("Running")),
            json!(null),
        )
        .await
        .unwrap();
    let text = browser.text().await.unwrap();
    for expected in [
        "Ready",
        "Deployment",
        "busybox:latest",
        "signed status: 0 refused",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(
        !text.contains("Plaintext"),
        "TLS is on: no plaintext warning"
    );
    // The agent's figures reach the node card: memory and a chart.
    browser
        .wait_for_selector(".node svg.spark path.line, .node svg.spark text")
        .await
        .unwrap();

    // Live: scaling to 3 shows three Running Pods without a reload.
    browser
        .eval("(window.__sameDocument = true)")
        .await
        .unwrap();
    let f = fleet.clone();
    tokio::task::spawn_blocking(move || f.ok(&["scale", "deployment", "web", "--replicas", "3"]))
        .await
        .unwrap();
    browser
        .wait_until(
            "three Running web Pods",
            &format!("{} === 3", pods_in_phase("Running")),
            json!(null),
        )
        .await
        .unwrap();
    browser.wait_for_text("3/3").await.unwrap();
    assert_eq!(
        browser
            .eval("window.__sameDocument === true")
            .await
            .unwrap(),
        json!(true),
        "the page updated without reloading"
    );
    browser.screenshot("fleet-overview", DESKTOP).await.unwrap();
    browser.screenshot("fleet-overview", PHONE).await.unwrap();
    browser.color_scheme(Scheme::Dark).await.unwrap();
    browser
        .screenshot("fleet-overview-dark", DESKTOP)
        .await
        .unwrap();
    browser.color_scheme(Scheme::Light).await.unwrap();
    assert_no_secret(browser, "the fleet overview").await;

    // A Pod's page: its container running, and its log followed live.
    let pod = fleet.running("app=web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    browser
        .open(&format!("{base}/ui/pods/default/{pod}"))
        .await
        .unwrap();
    browser.wait_for_text(LOG_LINE).await.unwrap();
    let first = tick_count(browser).await;
    browser
        .wait_until(
            "a newer log line (the log follows)",
            &format!("(document.getElementById('log').innerText.match(/tick (\\d+)/g) || []).length > {first}"),
            json!(null),
        )
        .await
        .unwrap();
    let text = browser.text().await.unwrap();
    assert!(
        text.contains("Running") && text.contains("web-pi"),
        "{text}"
    );
    assert!(
        text.contains("ReplicaSet/web-"),
        "the owner is shown: {text}"
    );
    browser.screenshot("fleet-pod", DESKTOP).await.unwrap();
    browser.screenshot("fleet-pod", PHONE).await.unwrap();
    assert_no_secret(browser, "the Pod page").await;

    // The JSON the page reads, as a script reads it with the token.
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(
                &std::fs::read(fleet.controller_dir().join("ca.pem")).unwrap(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    for path in ["/ui/api/fleet", &format!("/ui/api/pods/default/{pod}")] {
        let res = client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let body = res.text().await.unwrap();
        assert!(body.contains("web-pi"), "{path}: {body}");
        assert!(
            !body.contains(SECRET_VALUE),
            "{path} shows the Secret's value"
        );
        let anonymous = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path} without a token");
    }
}

async fn tick_count(browser: &Browser) -> u64 {
    browser
        .eval("(document.getElementById('log').innerText.match(/tick (\\d+)/g) || []).length")
        .await
        .unwrap()
        .as_u64()
        .unwrap_or_default()
}

async fn assert_no_secret(browser: &Browser, page: &str) {
    let source = browser.client().source().await.unwrap();
    let text = browser.text().await.unwrap();
    assert!(
        !source.contains(SECRET_VALUE) && !text.contains(SECRET_VALUE),
        "{page} shows the Secret's value"
    );
}

/// An API in plaintext mode over a store with one node that has every problem.
async fn problem_node(browser: &Browser) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let mut node = Node::default();
    node.metadata.name = "pi-troubled".into();
    node.status.conditions = vec![
        NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_heartbeat_time: Some(Time::now()),
            ..Default::default()
        },
        NodeCondition {
            type_: "MemoryCgroupUnavailable".into(),
            status: "True".into(),
            reason: Some("MemoryCgroupDisabled".into()),
            message: Some("`cgroup_disable=memory` is on the kernel command line: add `cgroup_enable=memory cgroup_memory=1` to cmdline.txt and reboot".into()),
            ..Default::default()
        },
    ];
    node.metadata.annotations.insert(
        "punnet.io/board-model".into(),
        "Raspberry Pi 4 Model B Rev 1.4".into(),
    );
    store.create(node).unwrap();
    let metrics = Arc::new(Metrics::default());
    let report = NodeStatusReport {
        node: "pi-troubled".into(),
        generation_seen: 0,
        sent_at: Time::now(),
        facts: NodeFacts {
            cpus: 4,
            memory_bytes: 1 << 30,
            memory_available_bytes: 300 << 20,
            cpu_usage_millis: 1800,
            disk_total_bytes: 16 << 30,
            disk_free_bytes: 1 << 30,
            temperature_millicelsius: Some(82_300),
            throttled: Some(0x5_0005),
            ..Default::default()
        },
        pods: vec![],
        events: vec![],
    };
    metrics.record(&report, Time::now());
    status_rejected(
        &store,
        "pi-troubled",
        "punnet/v1/nodes/pi-troubled/status",
        Rejection::BadSignature,
        "test",
    );
    let state = ApiState::new(
        store,
        Arc::new(Tokens::new("admintoken")),
        Arc::new(LogProxy::default()),
    )
    .with_metrics(metrics)
    .with_transport(Transport { plaintext: true });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(serve(listener, state, cancel.clone().cancelled_owned()));

    browser
        .open(&format!("{base}/ui/login?token=admintoken"))
        .await
        .unwrap();
    browser.wait_for_text("pi-troubled").await.unwrap();
    let text = browser.text().await.unwrap();
    for expected in [
        "Plaintext",
        "--allow-plaintext",
        "memory cgroup disabled: memory limits are not enforced",
        "cgroup_enable=memory",
        "under-voltage now",
        "the CPU is throttled now",
        "hot: 82.3 °C",
        "disk almost full",
        "1 status reports refused",
        "bad signature: 1",
        "Raspberry Pi 4 Model B Rev 1.4",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    browser.screenshot("fleet-warnings", DESKTOP).await.unwrap();
    browser.screenshot("fleet-warnings", PHONE).await.unwrap();
    cancel.cancel();
}
