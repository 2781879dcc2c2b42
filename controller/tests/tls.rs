//! TLS end to end through `punnet_controller::run`: HTTPS and MQTT over TLS with the
//! controller's own CA (reused across restarts), clients without the CA or with another
//! CA refused, plaintext refused unless `--allow-plaintext`, and an external Mosquitto
//! serving TLS with a certificate from a Punnet CA (`--broker mqtts://… --ca`).

mod loops_support;

use std::path::Path;
use std::time::Duration;

use loops_support::*;
use punnet_controller::ControllerConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tokio::sync::oneshot;

fn config(dir: &Path) -> ControllerConfig {
    let mut c = ControllerConfig::new(dir);
    c.http = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    c.mqtt = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    c
}

/// Runs the controller until the returned sender fires; waits for its API.
async fn start(
    config: ControllerConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), punnet_controller::ControllerError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let addr = config.http;
    let task = tokio::spawn(punnet_controller::run(config, async {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        if task.is_finished() {
            panic!("the controller stopped: {:?}", task.await);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the API does not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (stop, task)
}

fn https_client(ca: Option<&Path>) -> reqwest::Client {
    let pem = std::fs::read(ca.unwrap_or(Path::new(punnet_api::tls::SYSTEM_CA_BUNDLE))).unwrap();
    let tls = punnet_api::tls::client_config(&pem, "ca").unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The first thing a client's event loop says: `Ok` for a ConnAck, else the error.
async fn mqtt_connect(options: MqttOptions) -> Result<(), String> {
    let (_client, mut eventloop) = AsyncClient::new(options, 10);
    let polled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    polled.unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

fn options_trusting(ca: &Path, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(format!("tls-test-{}", free_port()), "127.0.0.1", port);
    let tls = punnet_controller::tls::client::load_client_config(Some(ca)).unwrap();
    punnet_controller::tls::client::apply(&mut o, Some(&tls));
    o
}

#[tokio::test]
async fn secure_by_default_with_its_own_ca_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let (http, mqtt_port) = (c.http, c.mqtt.port());
    let (stop, task) = start(c.clone()).await;
    let ca = dir.path().join("ca.pem");

    // The CLI's config names https:// and the CA.
    let yaml = std::fs::read_to_string(dir.path().join("punnet.yaml")).unwrap();
    assert!(yaml.contains(&format!("server: https://{http}")), "{yaml}");
    assert!(yaml.contains(&format!("ca: {}", ca.display())), "{yaml}");

    // HTTPS with the CA; the status says TLS is on.
    let status: serde_json::Value = https_client(Some(&ca))
        .get(format!("https://{http}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["plaintext"], false, "{status}");

    // Without the CA (the system's CAs) and with another CA: refused, saying why.
    let err = https_client(None)
        .get(format!("https://{http}/healthz"))
        .send()
        .await
        .unwrap_err();
    let text = format!("{:?}", err);
    assert!(text.contains("UnknownIssuer"), "{text}");
    let other = tempfile::tempdir().unwrap();
    punnet_controller::tls::prepare(other.path(), &Default::default()).unwrap();
    let other_ca = other.path().join("ca.pem");
    assert!(https_client(Some(&other_ca))
        .get(format!("https://{http}/healthz"))
        .send()
        .await
        .is_err());
    // Plain HTTP to the HTTPS port gets no API answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{http}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );

    // MQTT over TLS: the CA's client connects, another CA's is refused, plain MQTT too.
    // (With a login the embedded broker admits: the controller's own.)
    let mut trusting = options_trusting(&ca, mqtt_port);
    let password = std::fs::read_to_string(dir.path().join("mqtt.password")).unwrap();
    trusting.set_credentials(
        punnet_api::enrol::CONTROLLER_USERNAME,
        password.trim().to_string(),
    );
    mqtt_connect(trusting)
        .await
        .expect("a client trusting the CA connects");
    let err = mqtt_connect(options_trusting(&other_ca, mqtt_port))
        .await
        .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    let plain = MqttOptions::new("plain-test", "127.0.0.1", mqtt_port);
    assert!(mqtt_connect(plain).await.is_err());

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let files = |names: &[&str]| -> Vec<Vec<u8>> {
        names
            .iter()
            .map(|n| std::fs::read(dir.path().join(n)).unwrap())
            .collect()
    };
    let before = files(&["ca.pem", "ca.key", "server.pem", "server.key"]);

    // A restart reuses every file, and old clients keep trusting it.
    let (stop, task) = start(c).await;
    assert_eq!(
        files(&["ca.pem", "ca.key", "server.pem", "server.key"]),
        before
    );
    https_client(Some(&ca))
        .get(format!("https://{http}/healthz"))
        .send()
        .await
        .unwrap();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn plaintext_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.broker = Some("mqtt://127.0.0.1:1".into());
    let err = punnet_controller::run(c, std::future::pending())
        .await
        .expect_err("mqtt:// without --allow-plaintext");
    assert!(err.to_string().contains("--allow-plaintext"), "{err}");

    let mut c = config(dir.path());
    c.allow_plaintext = true;
    let http = c.http;
    let (stop, task) = start(c).await;
    let status: serde_json::Value = reqwest::get(format!("http://{http}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["plaintext"], true, "{status}");
    let yaml = std::fs::read_to_string(dir.path().join("punnet.yaml")).unwrap();
    assert!(yaml.contains("server: http://"), "{yaml}");
    assert!(!yaml.contains("ca:"), "{yaml}");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn external_mosquitto_over_tls_with_a_cert_from_a_punnet_ca() {
    // Mosquitto serves TLS with a certificate the controller's generator made.
    let port = free_port();
    let _broker = Mosquitto::start(port);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.broker = Some(format!("mqtts://127.0.0.1:{port}"));
    c.tls.ca = Some(test_tls().ca_file.clone());
    let http = c.http;
    let (stop, task) = start(c).await;

    // A node on the same broker registers through it (its key known, as after
    // enrolment).
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let client = https_client(Some(&dir.path().join("ca.pem")));
    let key = punnet_api::signing::public_key_hex(&agent_key("m1").public_key());
    let body = serde_json::json!({"items": [{"node": "m1", "publicKey": key}]});
    let registered = client
        .post(format!("https://{http}/nodekeys"))
        .bearer_auth(token.trim())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success(), "{registered:?}");
    let _agent = FakeAgent::start("m1", port);
    eventually_async("node m1 registered", Duration::from_secs(20), || {
        let req = client
            .get(format!("https://{http}/api/v1/nodes/m1"))
            .bearer_auth(token.trim())
            .send();
        async move { req.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
