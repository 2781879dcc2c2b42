//! The MQTT command API end to end, driven only by `mosquitto_pub`/`mosquitto_sub`
//! processes against a real controller (`punnet_controller::run`): apply → scale →
//! restart → delete with their replies (MQTT 5 response topic and correlation data, and
//! the plain reply topic for MQTT 3.1.1), validation errors worded as the REST API words
//! them, refused commands without an operator's token, the retained status topics and
//! the Home Assistant discovery configs. Once through a real Mosquitto, once through the
//! embedded broker.

mod loops_support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loops_support::{agent_key, free_port, test_tls, FakeAgent, Mosquitto};
use punnet_controller::ControllerConfig;
use serde_json::Value;

/// A controller started with `run`, stopped when dropped.
struct Controller {
    http: SocketAddr,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Controller {
    /// With `mosquitto`, against that broker; otherwise with the embedded broker on
    /// `v4` and an MQTT 5 listener on `v5`.
    async fn start(mosquitto: Option<u16>, v4: u16, v5: u16) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ControllerConfig::new(dir.path());
        config.http = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        config.mqtt = format!("127.0.0.1:{v4}").parse().unwrap();
        match mosquitto {
            Some(port) => config.broker = Some(format!("mqtts://127.0.0.1:{port}")),
            None => config.mqtt_v5 = Some(format!("127.0.0.1:{v5}").parse().unwrap()),
        }
        // The test CA, which the fake agent and the Mosquitto clients trust too.
        let tls = test_tls();
        config.tls = punnet_controller::tls::TlsOptions {
            cert: Some(tls.cert_file.clone()),
            key: Some(tls.key_file.clone()),
            ca: Some(tls.ca_file.clone()),
            extra_sans: Vec::new(),
        };
        config.homeassistant = Some("homeassistant".into());
        let http = config.http;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            punnet_controller::run(config, async {
                let _ = rx.await;
            })
            .await
            .expect("controller failed");
        });
        let token_file = dir.path().join("admin.token");
        let deadline = Instant::now() + Duration::from_secs(20);
        let token = loop {
            if let Ok(t) = std::fs::read_to_string(&token_file) {
                if https()
                    .get(format!("https://{http}/healthz"))
                    .send()
                    .await
                    .is_ok()
                {
                    break t.trim().to_string();
                }
            }
            assert!(Instant::now() < deadline, "controller did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ctl = Controller {
            http,
            token,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        };
        // As enrolment would: the fake agent's key is known, and the Mosquitto clients
        // log in as an operator (the embedded broker admits only known logins).
        ctl.post(
            "/nodekeys",
            serde_json::json!({"items": [{
                "node": "pi-1",
                "publicKey": punnet_api::signing::public_key_hex(&agent_key("pi-1").public_key()),
            }]}),
        )
        .await;
        let op = ctl
            .post(
                "/apis/punnet.io/v1/tokens",
                serde_json::json!({"role": "operator"}),
            )
            .await;
        let login = vec![
            "-u".to_string(),
            op["mqtt"]["username"].as_str().unwrap().to_string(),
            "-P".to_string(),
            op["mqtt"]["password"].as_str().unwrap().to_string(),
        ];
        // The fake board logs in with the controller's own login: an operator's may not
        // read a node's desired state (the broker's gate confines it to cmd/ and status/),
        // and a registered key gives no broker password.
        let password = punnet_controller::identity::controller_password(ctl._dir.path()).unwrap();
        loops_support::set_broker_login(v4, punnet_api::enrol::CONTROLLER_USERNAME, &password);
        let mut logins = LOGINS.lock().unwrap();
        logins.insert(v4, login.clone());
        logins.insert(v5, login.clone());
        if let Some(port) = mosquitto {
            logins.insert(port, login);
        }
        drop(logins);
        ctl
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = https()
            .post(format!("https://{}{path}", self.http))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        https()
            .get(format!("https://{}{path}", self.http))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The REST API's answer to the same apply, for comparing messages.
    async fn rest_apply(&self, path: &str, body: &str) -> Value {
        https()
            .patch(format!("https://{}{path}", self.http))
            .bearer_auth(&self.token)
            .header("content-type", "application/apply-patch+yaml")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("controller did not stop")
            .unwrap();
    }
}

/// Operator logins by broker port (both tests of this file run at once).
static LOGINS: std::sync::Mutex<std::collections::BTreeMap<u16, Vec<String>>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The Mosquitto clients' TLS trust and login for a broker port.
fn client_options(port: u16) -> Vec<String> {
    let mut args = vec![
        "--cafile".to_string(),
        test_tls().ca_file.display().to_string(),
    ];
    args.extend(
        LOGINS
            .lock()
            .unwrap()
            .get(&port)
            .cloned()
            .unwrap_or_default(),
    );
    args
}

/// HTTPS trusting the test CA.
fn https() -> reqwest::Client {
    let pem = std::fs::read(&test_tls().ca_file).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(punnet_api::tls::client_config(&pem, "test CA").unwrap())
        .build()
        .unwrap()
}

/// `mosquitto_sub` for one message on `topic`, started now (already subscribed when it
/// returns, as far as a short wait can tell).
struct Sub(Child);

impl Sub {
    async fn start(port: u16, v5: bool, topic: &str, wait_s: u32) -> Sub {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(client_options(port));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-C",
            "1",
        ])
        .args(["-W", &wait_s.to_string(), "-F", "%D|%p"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if v5 {
            cmd.args(["-V", "mqttv5"]);
        }
        let child = cmd.spawn().expect("mosquitto_sub is installed");
        tokio::time::sleep(Duration::from_millis(400)).await;
        Sub(child)
    }

    /// (correlation data, payload), or None when nothing came.
    async fn message(self) -> Option<(String, String)> {
        let out = tokio::task::spawn_blocking(move || self.0.wait_with_output().unwrap())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        if text.is_empty() {
            return None;
        }
        let (corr, payload) = text.split_once('|').unwrap_or(("", &text));
        Some((corr.to_string(), payload.to_string()))
    }
}

fn publish(port: u16, topic: &str, payload: &str, v5_props: &[(&str, &str)]) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(client_options(port));
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        payload,
    ]);
    if !v5_props.is_empty() {
        cmd.args(["-V", "mqttv5"]);
        for (k, v) in v5_props {
            cmd.args(["-D", "publish"]);
            if *k == "user-property" {
                let (name, value) = v.split_once('=').unwrap();
                cmd.args(["user-property", name, value]);
            } else {
                cmd.args([*k, *v]);
            }
        }
    }
    let status = cmd.status().expect("mosquitto_pub is installed");
    assert!(status.success(), "mosquitto_pub {topic} failed");
}

/// Sends a command over MQTT 5 with a response topic and correlation data and returns
/// the reply, checking that the correlation data came back.
async fn command_v5(v5: u16, verb: &str, payload: &str, token: Option<&str>, corr: &str) -> Value {
    let response = format!("punnet/v1/cmd/reply/test-{corr}");
    let sub = Sub::start(v5, true, &response, 15).await;
    let auth = token.map(|t| format!("token={t}"));
    let mut props = vec![
        ("response-topic", response.as_str()),
        ("correlation-data", corr),
    ];
    if let Some(a) = &auth {
        props.push(("user-property", a.as_str()));
    }
    publish(v5, &format!("punnet/v1/cmd/{verb}"), payload, &props);
    let (got_corr, reply) = sub
        .message()
        .await
        .unwrap_or_else(|| panic!("no reply to cmd/{verb}"));
    assert_eq!(got_corr, corr, "the correlation data comes back");
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?}: {e}"))
}

/// Sends a command over MQTT 3.1.1 with an `id` and reads `cmd/reply/<id>`.
async fn command_v4(v4: u16, verb: &str, payload: &str, id: &str) -> Value {
    let sub = Sub::start(v4, false, &format!("punnet/v1/cmd/reply/{id}"), 15).await;
    publish(v4, &format!("punnet/v1/cmd/{verb}"), payload, &[]);
    let (_, reply) = sub
        .message()
        .await
        .unwrap_or_else(|| panic!("no reply to cmd/{verb}"));
    serde_json::from_str(&reply).unwrap()
}

/// The retained message on `topic` as JSON, once `check` accepts it.
async fn retained_until(
    port: u16,
    topic: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sub = Sub::start(port, false, topic, 2).await;
        if let Some((_, p)) = sub.message().await {
            if let Ok(v) = serde_json::from_str::<Value>(&p) {
                if check(&v) {
                    return v;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} on {topic}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until nothing is retained on `topic` any more.
async fn retained_gone(port: u16, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if Sub::start(port, false, topic, 1)
            .await
            .message()
            .await
            .is_none()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{topic} is still retained");
    }
}

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
";

async fn flow(v4: u16, v5: u16, ctl: &Controller) {
    let token = ctl.token.clone();
    let agent = FakeAgent::start("pi-1", v4);

    // A command without a token is refused, and nothing is done.
    let r = command_v4(
        v4,
        "apply",
        &format!(r#"{{"id":"anon","manifest":{}}}"#, yaml_as_json(WEB)),
        "anon",
    )
    .await;
    assert_eq!(
        (r["ok"].as_bool(), r["code"].as_u64()),
        (Some(false), Some(401)),
        "{r}"
    );
    assert!(r["message"].as_str().unwrap().contains("no token"), "{r}");
    let r = command_v5(
        v5,
        "scale",
        r#"{"kind":"Deployment","name":"web","replicas":2}"#,
        Some("wrong-token-123456"),
        "c0",
    )
    .await;
    assert_eq!(r["code"], 403, "{r}");
    let missing = ctl
        .get("/apis/apps/v1/namespaces/default/deployments/web")
        .await;
    assert_eq!(
        missing["code"], 404,
        "a refused command must not create anything"
    );

    // apply: YAML, with the token as an MQTT 5 user property.
    let r = command_v5(v5, "apply", WEB, Some(&token), "c1").await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["code"], 201, "{r}");
    assert_eq!(r["message"], "deployment.apps/web created");

    // A response topic outside cmd/reply/ is refused (the controller would otherwise
    // publish wherever a command asks); the refusal comes on the default reply topic.
    let sub = Sub::start(v5, true, "punnet/v1/cmd/reply", 15).await;
    let auth = format!("token={token}");
    let props = [
        ("response-topic", "punnet/v1/nodes/pi-1/desired"),
        ("correlation-data", "c0"),
        ("user-property", auth.as_str()),
    ];
    publish(v5, "punnet/v1/cmd/apply", WEB, &props);
    let (_, r) = sub.message().await.expect("a refusal on cmd/reply");
    let r: Value = serde_json::from_str(&r).unwrap();
    assert_eq!(r["code"], 400, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("replies go under punnet/v1/cmd/reply/"),
        "{r}"
    );

    // A validation error: the REST API's message, word for word.
    let bad = WEB.replace("replicas: 1", "replicas: -2");
    let r = command_v5(v5, "apply", &bad, Some(&token), "c2").await;
    let rest = ctl
        .rest_apply("/apis/apps/v1/namespaces/default/deployments/web", &bad)
        .await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["code"], rest["code"], "{r} vs {rest}");
    assert_eq!(r["reason"], rest["reason"]);
    assert_eq!(r["message"], rest["message"]);
    assert!(r["message"].as_str().unwrap().contains("replicas"), "{r}");
    let r = command_v5(
        v5,
        "scale",
        r#"{"kind":"Pod","name":"x","replicas":1}"#,
        Some(&token),
        "c3",
    )
    .await;
    assert_eq!(
        (r["code"].as_u64(), r["reason"].as_str()),
        (Some(400), Some("BadRequest")),
        "{r}"
    );

    // scale over MQTT 3.1.1, the token in the payload, the reply on cmd/reply/<id>.
    let r = command_v4(
        v4,
        "scale",
        &format!(r#"{{"id":"s1","token":"{token}","kind":"Deployment","namespace":"default","name":"web","replicas":3}}"#),
        "s1",
    )
    .await;
    assert_eq!(
        (r["ok"].as_bool(), r["id"].as_str()),
        (Some(true), Some("s1")),
        "{r}"
    );
    assert_eq!(r["message"], "deployment.apps/web scaled");
    let d = ctl
        .get("/apis/apps/v1/namespaces/default/deployments/web")
        .await;
    assert_eq!(d["spec"]["replicas"], 3);

    // The workload's status topic follows.
    retained_until(
        v4,
        "punnet/v1/status/deployments/default/web",
        "desired 3",
        |v| v["desired"] == 3 && v["kind"] == "Deployment",
    )
    .await;
    // The node's: online, its facts, and the Pods it runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.desired_with(3).is_none() {
        assert!(Instant::now() < deadline, "3 Pods never reached pi-1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.run_desired_pods();
    let n = retained_until(v4, "punnet/v1/status/nodes/pi-1", "3 pods running", |v| {
        v["pods_running"] == 3 && v["online"] == true
    })
    .await;
    assert_eq!(n["arch"], "arm64");

    // Home Assistant discovery: a device per board, a sensor and a button per Deployment.
    for topic in [
        "homeassistant/binary_sensor/punnet_node_pi-1/online/config",
        "homeassistant/sensor/punnet_node_pi-1/temperature/config",
        "homeassistant/sensor/punnet_deployment_default_web/ready/config",
        "homeassistant/button/punnet_deployment_default_web/restart/config",
    ] {
        let c = retained_until(v4, topic, "a discovery config", |_| true).await;
        for key in ["name", "unique_id", "device", "availability"] {
            assert!(c.get(key).is_some(), "{topic}: no {key}: {c}");
        }
        assert!(
            c.get("state_topic").is_some() || c.get("command_topic").is_some(),
            "{c}"
        );
    }
    let (_, online) = Sub::start(v4, false, "punnet/v1/status/controller", 5)
        .await
        .message()
        .await
        .expect("the API's retained online topic");
    assert_eq!(online, "online");
    // The button's payload is a working command (with its restart-only token).
    let button = retained_until(
        v4,
        "homeassistant/button/punnet_deployment_default_web/restart/config",
        "button",
        |_| true,
    )
    .await;
    let press = button["payload_press"].as_str().unwrap().to_string();
    let sub = Sub::start(v4, false, "punnet/v1/cmd/reply", 15).await;
    publish(v4, "punnet/v1/cmd/restart", &press, &[]);
    let (_, r) = sub.message().await.expect("a reply to the button");
    let r: Value = serde_json::from_str(&r).unwrap();
    assert_eq!(
        (r["ok"].as_bool(), r["message"].as_str()),
        (Some(true), Some("deployment.apps/web restarted")),
        "{r}"
    );
    let d = ctl
        .get("/apis/apps/v1/namespaces/default/deployments/web")
        .await;
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    // The button token may restart, and nothing else.
    let mut del: Value = serde_json::from_str(&press).unwrap();
    del["id"] = "b2".into();
    let r = command_v4(v4, "delete", &del.to_string(), "b2").await;
    assert_eq!(r["code"], 403, "{r}");

    // A Pod: deleted so that its ReplicaSet makes a new one.
    let pods = ctl.get("/api/v1/namespaces/default/pods").await;
    let pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let r = command_v5(
        v5,
        "restart",
        &format!(r#"{{"kind":"Pod","name":"{pod}"}}"#),
        Some(&token),
        "cp",
    )
    .await;
    assert_eq!(r["message"], format!("pod/{pod} restarted"), "{r}");

    // restart with the operator's token, cordon and uncordon.
    let r = command_v5(
        v5,
        "restart",
        r#"{"kind":"Deployment","name":"web"}"#,
        Some(&token),
        "c4",
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = command_v5(v5, "cordon", r#"{"name":"pi-1"}"#, Some(&token), "c5").await;
    assert_eq!(r["message"], "node/pi-1 cordoned", "{r}");
    assert_eq!(
        ctl.get("/api/v1/nodes/pi-1").await["spec"]["unschedulable"],
        true
    );
    let r = command_v5(v5, "uncordon", r#"{"name":"pi-1"}"#, Some(&token), "c6").await;
    assert_eq!(r["ok"], true, "{r}");
    let r = command_v5(v5, "cordon", r#"{"name":"nowhere"}"#, Some(&token), "c7").await;
    assert_eq!(
        (r["code"].as_u64(), r["reason"].as_str()),
        (Some(404), Some("NotFound")),
        "{r}"
    );

    // delete: the object, its status topic and its discovery configs go.
    let r = command_v5(
        v5,
        "delete",
        r#"{"kind":"Deployment","namespace":"default","name":"web"}"#,
        Some(&token),
        "c8",
    )
    .await;
    assert_eq!(
        (r["ok"].as_bool(), r["message"].as_str()),
        (Some(true), Some("deployment.apps/web deleted")),
        "{r}"
    );
    let gone = ctl
        .get("/apis/apps/v1/namespaces/default/deployments/web")
        .await;
    assert_eq!(gone["code"], 404);
    retained_gone(v4, "punnet/v1/status/deployments/default/web").await;
    retained_gone(
        v4,
        "homeassistant/button/punnet_deployment_default_web/restart/config",
    )
    .await;
    let r = command_v5(
        v5,
        "delete",
        r#"{"kind":"Deployment","name":"web"}"#,
        Some(&token),
        "c9",
    )
    .await;
    assert_eq!(r["code"], 404, "{r}");
}

fn yaml_as_json(yaml: &str) -> String {
    let v: Value = serde_norway::from_str(yaml).unwrap();
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_status_and_discovery_through_mosquitto() {
    let broker = Mosquitto::start(free_port());
    let ctl = Controller::start(Some(broker.port), free_port(), 0).await;
    tokio::time::timeout(
        Duration::from_secs(120),
        flow(broker.port, broker.port, &ctl),
    )
    .await
    .expect("flow took over 120 s");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_status_and_discovery_through_the_embedded_broker() {
    let (v4, v5) = (free_port(), free_port());
    let ctl = Controller::start(None, v4, v5).await;
    tokio::time::timeout(Duration::from_secs(120), flow(v4, v5, &ctl))
        .await
        .expect("flow took over 120 s");
    ctl.stop().await;
}
