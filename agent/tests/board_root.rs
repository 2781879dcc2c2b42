//! The board page in headless Chromium (webcheck), against the agent binary running
//! real busybox Pods from a real Mosquitto: Pod names, phases, exit codes and a
//! container's log line show; the page follows a new desired state without a reload;
//! it keeps serving (and says so) when the broker is gone; a Secret's value never
//! reaches the browser; `--web-token` asks for the token; `--allow-plaintext` is
//! flagged. Screenshots at desktop and phone widths go to target/screenshots/. Needs
//! root (containers; Chromium as root), Debian's chromium and chromium-driver.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use punnet_agent::image::ImageStore;
use punnet_agent::runtime::{Runtime, ShimRuntime};
use punnet_api::pod::Pod;
use webcheck::{Browser, Options, Scheme, DESKTOP, PHONE};

mod agent_support;

use agent_support::{ca_file, free_port, trust_test_controller, Controller, Mosquitto, NODE};

const SECRET: &str = "s3cr3t-board-Value";
const TOKEN: &str = "board-viewer-token";

fn agent_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_punnet-agent"))
}

/// The agent process, killed on drop with every container it left.
struct Agent {
    child: Option<Child>,
    data: PathBuf,
}

impl Agent {
    fn spawn(broker: &str, data: &Path, web_port: u16, extra: &[&str]) -> Agent {
        trust_test_controller(data);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("agent.log"))
            .unwrap();
        let child = Command::new(agent_exe())
            .args(["--name", NODE, "--broker", broker, "--ca"])
            .arg(ca_file())
            .arg("--data-dir")
            .arg(data)
            .args([
                "--heartbeat",
                "1s",
                "--no-pod-network",
                "--label",
                "zone=board-test",
            ])
            .args(["--web", &format!("127.0.0.1:{web_port}")])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            data: data.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let images = Arc::new(ImageStore::open(&self.data.join("images")).unwrap());
        let rt = ShimRuntime::new(
            self.data.join("containers"),
            images,
            agent_exe(),
            vec!["shim".into()],
        );
        for c in rt.list().unwrap_or_default() {
            let _ = rt.remove(&c.config.id);
        }
    }
}

fn data_dir(tag: &str) -> (tempfile::TempDir, PathBuf) {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("agent");
    let import = data.join("images/import");
    std::fs::create_dir_all(&import).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-busybox-image.sh");
    let made = Command::new(&script)
        .arg(import.join("busybox.tar"))
        .arg(tag)
        .status()
        .unwrap();
    assert!(made.success());
    (tmp, data)
}

/// The Pods and the Secret of the test, as the controller would send them.
fn objects(image: &str) -> (Vec<Pod>, Vec<punnet_api::Secret>) {
    let pid = std::process::id();
    let text = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: board-web, namespace: default, uid: uid-bweb-{pid}}}
spec:
  nodeName: {NODE}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  volumes: [{{name: creds, secret: {{secretName: db}}}}]
  containers:
  - name: server
    image: {image}
    command: [sh, -c, "echo hello from the board test; echo password=$PASSWORD; cat /creds/password; echo; exec sleep 1000"]
    env: [{{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: db, key: password}}}}}}, {{name: MODE, value: demo}}]
    volumeMounts: [{{name: creds, mountPath: /creds}}]
    resources: {{limits: {{memory: 32Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: board-job, namespace: default, uid: uid-bjob-{pid}}}
spec:
  nodeName: {NODE}
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: task
    image: {image}
    command: [sh, -c, "echo job ran; exit 3"]
---
apiVersion: v1
kind: Pod
metadata: {{name: board-added, namespace: default, uid: uid-badd-{pid}}}
spec:
  nodeName: {NODE}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: ticker
    image: {image}
    command: [sh, -c, "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]
---
apiVersion: v1
kind: Secret
metadata: {{name: db, namespace: default}}
stringData: {{password: {SECRET}}}
"#
    );
    let mut pods = Vec::new();
    let mut secrets = Vec::new();
    for o in punnet_api::manifest::parse(&text).unwrap() {
        match o {
            punnet_api::Object::Pod(p) => pods.push(p),
            punnet_api::Object::Secret(s) => secrets.push(s),
            _ => {}
        }
    }
    (pods, secrets)
}

/// The page's HTML and the JSON it polls, as the browser gets them.
async fn everything_the_browser_sees(browser: &Browser) -> String {
    let html = browser
        .eval("document.documentElement.outerHTML")
        .await
        .unwrap();
    let json = browser
        .eval("fetch('/api/board').then(r => r.text())")
        .await
        .unwrap();
    let log = browser
        .eval("fetch('/api/pods/default/board-web/log?tail=50').then(r => r.text())")
        .await
        .unwrap();
    format!("{html}\n{json}\n{log}")
}

async fn sign_in(browser: &Browser) {
    browser.wait_for_text("Token needed").await.unwrap();
    let status = browser
        .eval("fetch('/api/board').then(r => r.status)")
        .await
        .unwrap();
    assert_eq!(status, 401, "the JSON wants the token too");
    browser
        .eval(&format!(
            "(document.querySelector('input[name=token]').value = '{TOKEN}', document.querySelector('form').submit(), true)"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_board_page_shows_pods_follows_changes_and_survives_the_broker() {
    let (_tmp, data) = data_dir("busybox:board");
    let broker = Mosquitto::start();
    let mut controller = Controller::connect(broker.port).await;
    let port = free_port();
    let agent = Agent::spawn(&broker.url(), &data, port, &["--web-token", TOKEN]);
    controller
        .wait_online("online", Duration::from_secs(20))
        .await;
    let (pods, secrets) = objects("busybox:board");
    controller.secrets = secrets;
    controller
        .publish_desired(1, vec![pods[0].clone(), pods[1].clone()])
        .await;

    let browser = Browser::start(Options::default().timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    browser.open(&url).await.unwrap();
    sign_in(&browser).await;

    // Content: names, phases, an exit code, a log line, the link and the doctor.
    for text in [
        "board-web",
        "board-job",
        "hello from the board test",
        "exited 3",
        "broker connected",
        "generation 1",
        "memory cgroup",
    ] {
        if let Err(e) = browser.wait_for_text(text).await {
            panic!("{e}\nagent log:\n{}", agent.log());
        }
    }
    let web = browser.text_of("#pod-default-board-web").await.unwrap();
    assert!(web.contains("Running"), "{web}");
    let job = browser.text_of("#pod-default-board-job").await.unwrap();
    assert!(job.contains("Failed") && job.contains("job ran"), "{job}");

    // The Secret: the env shows where it comes from, the log lines that printed it are
    // masked, and its value is nowhere in what the browser got.
    browser.wait_for_text("password=••••••").await.unwrap();
    let everything = everything_the_browser_sees(&browser).await;
    assert!(
        everything.contains("secret db/password"),
        "the env source is shown"
    );
    assert!(
        !everything.contains(SECRET),
        "a Secret value reached the browser"
    );

    // Charts need a few samples (one per 5 s at most).
    browser
        .wait_until(
            "two chart samples",
            "document.querySelectorAll('#resources svg.spark path.line').length >= 2",
            serde_json::Value::Null,
        )
        .await
        .unwrap();
    browser.screenshot("board", DESKTOP).await.unwrap();
    browser.screenshot("board", PHONE).await.unwrap();
    browser.color_scheme(Scheme::Dark).await.unwrap();
    browser.screenshot("board-dark", PHONE).await.unwrap();
    browser.color_scheme(Scheme::Light).await.unwrap();

    // Live: a Pod added by the desired state shows up without a reload, and one
    // removed goes away.
    browser.eval("(window.__same_page = true)").await.unwrap();
    controller.publish_desired(2, pods.clone()).await;
    browser.wait_for_text("board-added").await.unwrap();
    browser.wait_for_text("tick 1").await.unwrap();
    browser.wait_for_text("generation 2").await.unwrap();
    controller
        .publish_desired(3, vec![pods[0].clone(), pods[2].clone()])
        .await;
    browser.wait_for_text_gone("board-job").await.unwrap();
    assert_eq!(
        browser.eval("window.__same_page === true").await.unwrap(),
        true,
        "updated in place, not reloaded"
    );

    // The broker goes away: the page says so and keeps showing the board's Pods.
    drop(controller);
    drop(broker);
    browser.wait_for_text("broker unreachable").await.unwrap();
    browser.open(&url).await.unwrap();
    browser
        .wait_for_text("The broker is unreachable")
        .await
        .unwrap();
    browser.wait_for_text("board-added").await.unwrap();
    let pod = browser.text_of("#pod-default-board-web").await.unwrap();
    assert!(pod.contains("Running"), "{pod}");
    browser.screenshot("board-offline", DESKTOP).await.unwrap();
    browser.close().await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_board_page_flags_a_plaintext_link() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("agent");
    std::fs::create_dir_all(&data).unwrap();
    let broker = Mosquitto::start_plaintext();
    let port = free_port();
    let agent = Agent::spawn(&broker.plain_url(), &data, port, &["--allow-plaintext"]);
    let browser = Browser::start(Options::default()).await.unwrap();
    browser
        .open(&format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    if let Err(e) = browser.wait_for_text("Plaintext MQTT").await {
        panic!("{e}\nagent log:\n{}", agent.log());
    }
    browser.wait_for_text("NO TLS").await.unwrap();
    browser.wait_for_text("link security").await.unwrap();
    browser.wait_for_text("No desired state yet").await.unwrap();
    browser.screenshot("board-plaintext", PHONE).await.unwrap();
    browser.close().await;
}
