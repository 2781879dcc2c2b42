//! Tokens, roles, enrolment and broker authentication through the whole controller
//! (`punnet_controller::run` with its embedded broker), as a board and a person meet
//! them: REST answers 401/403 by role, an agent enrols over MQTT with a bootstrap
//! token and logs in with what it got, a used-up token is refused on both sides, the
//! broker refuses strangers, and deleting the node revokes its login.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use punnet_agent::config::AgentConfig;
use punnet_agent::enrol::{ensure_identity, Credentials, EnrolError};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use serde_json::{json, Value};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Running {
    dir: tempfile::TempDir,
    http: SocketAddr,
    mqtt: SocketAddr,
    admin: String,
    client: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = punnet_controller::ControllerConfig::new(dir.path());
    let (http, mqtt) = (free_addr(), free_addr());
    config.http = http;
    config.mqtt = mqtt;
    // Identity is what is tested here; TLS has tests of its own.
    config.allow_plaintext = true;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        punnet_controller::run(config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let token_file = dir.path().join("admin.token");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = reqwest::Client::new();
    loop {
        if let Ok(admin) = std::fs::read_to_string(&token_file) {
            let admin = admin.trim().to_string();
            let ok = client
                .get(format!("http://{http}/api/v1/nodes"))
                .bearer_auth(&admin)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Running {
                    dir,
                    http,
                    mqtt,
                    admin,
                    client,
                    stop,
                };
            }
        }
        assert!(Instant::now() < deadline, "the controller did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Running {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("http://{}{path}", self.http));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn make_token(&self, body: Value) -> Value {
        let (code, made) = self
            .call(
                reqwest::Method::POST,
                "/apis/punnet.io/v1/tokens",
                Some(&self.admin),
                Some(body),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{made}");
        made
    }

    fn agent(&self, name: &str, token: Option<&str>) -> AgentConfig {
        let mut a = AgentConfig::new(name);
        a.data_dir = self.dir.path().join(format!("agent-{name}"));
        a.broker = format!("mqtt://{}", self.mqtt);
        a.allow_plaintext = true;
        a.token = token.map(str::to_string);
        a
    }
}

/// Whether the broker accepts a CONNECT with this login (a ConnAck) or closes on it.
async fn can_login(mqtt: SocketAddr, login: Option<(&str, &str)>) -> bool {
    let mut o = MqttOptions::new(
        format!("probe-{}", rand_suffix()),
        mqtt.ip().to_string(),
        mqtt.port(),
    );
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (_client, mut ev) = AsyncClient::new(o, 4);
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    answer.unwrap_or(false)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

#[tokio::test]
async fn roles_decide_what_rest_allows() {
    use reqwest::Method;
    let c = start().await;
    let (code, body) = c.call(Method::GET, "/api/v1/pods", None, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["kind"], "Status");
    let (code, body) = c
        .call(
            Method::GET,
            "/api/v1/pods",
            Some("not-a-token-at-all"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(body["message"].as_str().unwrap().contains("token create"));

    let ro = c.make_token(json!({"role": "read-only"})).await;
    let ro_token = ro["token"].as_str().unwrap();
    assert!(
        ro.get("mqtt").is_some(),
        "non-bootstrap tokens print a login"
    );
    let (code, _) = c
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods",
            Some(ro_token),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}});
    let (code, body) = c
        .call(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(ro_token),
            Some(cm.clone()),
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert!(
        body["message"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    let (code, _) = c
        .call(
            Method::GET,
            "/apis/punnet.io/v1/tokens",
            Some(ro_token),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "tokens are admin only");

    let op = c.make_token(json!({"role": "operator"})).await;
    let (code, body) = c
        .call(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(op["token"].as_str().unwrap()),
            Some(cm),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "operators may write: {body}");

    let boot = c.make_token(json!({})).await;
    assert_eq!(boot["spec"]["role"], "bootstrap");
    let (code, body) = c
        .call(
            Method::GET,
            "/api/v1/pods",
            Some(boot["token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");

    // The list never carries a secret; a deleted token stops working.
    let (_, list) = c
        .call(
            Method::GET,
            "/apis/punnet.io/v1/tokens",
            Some(&c.admin),
            None,
        )
        .await;
    let text = list.to_string();
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{text}");
    assert!(!text.contains(ro_token.split('.').nth(1).unwrap()));
    let id = ro["metadata"]["name"].as_str().unwrap();
    let (code, _) = c
        .call(
            Method::DELETE,
            &format!("/apis/punnet.io/v1/tokens/{id}"),
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = c
        .call(Method::GET, "/api/v1/pods", Some(ro_token), None)
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let _ = c.stop.send(());
}

#[tokio::test]
async fn a_board_enrols_once_logs_in_and_is_revoked_with_its_node() {
    use reqwest::Method;
    let c = start().await;
    // Strangers are refused by the broker.
    assert!(!can_login(c.mqtt, None).await, "anonymous");
    assert!(!can_login(c.mqtt, Some(("pi-1", "guess"))).await);

    let made = c
        .make_token(json!({"uses": 1, "labels": {"site": "barn"}}))
        .await;
    let token = made["token"].as_str().unwrap().to_string();
    let id = made["metadata"]["name"].as_str().unwrap().to_string();

    let mut agent = c.agent("pi-1", Some(&token));
    // As a board image writes it: the token in the agent's config file.
    let config_file = agent.data_dir.with_extension("yaml");
    std::fs::write(
        &config_file,
        format!("# board config\nbroker: mqtts://ctl:8883\ntoken: {token}\nname: pi-1\n"),
    )
    .unwrap();
    agent.token_file = Some(config_file.clone());
    tokio::time::timeout(Duration::from_secs(30), ensure_identity(&mut agent))
        .await
        .expect("enrolment answered")
        .expect("enrolment accepted");
    // Enrolled: the token is off the card, the rest of the file as it was.
    assert_eq!(
        std::fs::read_to_string(&config_file).unwrap(),
        "# board config\nbroker: mqtts://ctl:8883\nname: pi-1\n"
    );
    let creds = Credentials::load(&agent.data_dir).unwrap().unwrap();
    assert_eq!(creds.node, "pi-1");
    let controller_pub = std::fs::read_to_string(agent.data_dir.join("controller.pub")).unwrap();
    assert_eq!(controller_pub.trim().len(), 64);

    // The token's labels are the node's; its use is spent.
    let (_, node) = c
        .call(Method::GET, "/api/v1/nodes/pi-1", Some(&c.admin), None)
        .await;
    assert_eq!(node["metadata"]["labels"]["site"], "barn", "{node}");
    let (_, tok) = c
        .call(
            Method::GET,
            &format!("/apis/punnet.io/v1/tokens/{id}"),
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(tok["spec"]["usesLeft"], 0, "{tok}");

    // Its key is the one status must be signed with.
    let (_, keys) = c.call(Method::GET, "/nodekeys", Some(&c.admin), None).await;
    let node_pub = std::fs::read_to_string(agent.data_dir.join("node.pub")).unwrap();
    // Answered: the password it asked with is no longer kept aside.
    assert!(!agent
        .data_dir
        .join(punnet_agent::enrol::PENDING_FILE)
        .exists());
    assert!(
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["node"] == "pi-1" && k["publicKey"] == node_pub.trim()),
        "{keys}"
    );

    // The node logs in with what enrolment gave it.
    let login = (creds.mqtt.username.as_str(), creds.mqtt.password.as_str());
    assert!(can_login(c.mqtt, Some(login)).await);

    // A second board with the used-up token is refused. The token may still log in for
    // a while (so a board whose reply was lost can ask again), but the controller
    // answers only that repeat; it records why.
    let mut second = c.agent("pi-2", Some(&token));
    let attempt = tokio::time::timeout(Duration::from_secs(5), ensure_identity(&mut second)).await;
    assert!(
        matches!(&attempt, Ok(Err(EnrolError::Refused { reason, .. })) if reason.contains("used up")),
        "a used-up token must not enrol: {attempt:?}"
    );
    let (_, events) = c
        .call(Method::GET, "/api/v1/events", Some(&c.admin), None)
        .await;
    let refused = events["items"].as_array().unwrap().iter().any(|e| {
        e["reason"] == "EnrolmentRefused" && e["message"].as_str().unwrap().contains("used up")
    });
    assert!(refused, "{events}");

    // A malformed token fails at once, before any connection.
    let mut bad = c.agent("pi-3", Some("not-a-token"));
    assert!(matches!(
        ensure_identity(&mut bad).await,
        Err(EnrolError::BadToken)
    ));

    // Deleting the node revokes its identity: the next login fails.
    let (code, _) = c
        .call(Method::DELETE, "/api/v1/nodes/pi-1", Some(&c.admin), None)
        .await;
    assert!(code.is_success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while can_login(c.mqtt, Some(login)).await {
        assert!(
            Instant::now() < deadline,
            "the login still works after delete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = c.stop.send(());
}

#[tokio::test]
async fn the_controller_refuses_what_the_broker_lets_through() {
    // An unlimited token the broker admits, but a name that is taken by another key:
    // the refusal comes from the controller and ends the agent with its reason.
    let c = start().await;
    let made = c.make_token(json!({})).await;
    let token = made["token"].as_str().unwrap();
    let mut first = c.agent("pi-1", Some(token));
    ensure_identity(&mut first).await.unwrap();
    let mut other = c.agent("pi-1", Some(token));
    other.data_dir = c.dir.path().join("another-board");
    let err = tokio::time::timeout(Duration::from_secs(30), ensure_identity(&mut other))
        .await
        .expect("answered")
        .expect_err("the name is taken");
    assert!(matches!(err, EnrolError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("punnet delete node pi-1"), "{err}");
    let _ = c.stop.send(());
}
