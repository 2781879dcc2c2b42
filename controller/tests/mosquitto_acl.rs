//! `mosquitto-config` against a real Mosquitto: the files the controller writes are
//! loaded by `mosquitto` (which drops root to the `mosquitto` user before reading them),
//! and the broker then keeps each node to its own topics, a bootstrap login to its
//! enrolment topics, and refuses wrong passwords.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod mqtt_client;

use chrono::Utc;
use mqtt_client::connect as connect_with;
use punnet_api::enrol::mosquitto_hash;
use punnet_controller::identity::NodeIdentity;
use punnet_controller::mosquitto::{self, Logins};
use punnet_controller::tokens::{Role, TokenRecord};

const P: &str = "punnet/v1";

/// Connects without a last will; `None` when the broker refuses the login.
async fn connect(port: u16, id: &str, user: &str, pass: &str) -> Option<mqtt_client::Client> {
    connect_with(port, id, user, pass, None).await
}

struct Broker {
    child: Child,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto(dir: &Path) -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("mosquitto.conf");
    // No `user root`: Mosquitto drops to its own user, as it does when installed.
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\npassword_file {0}/passwd\nacl_file {0}/acl\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker { child, port }
}

fn node(name: &str, password: &str) -> NodeIdentity {
    NodeIdentity {
        node: name.into(),
        mqtt_hash: mosquitto_hash(password, rand::random()),
        public_key: String::new(),
        token_id: None,
        enrolled: Utc::now(),
    }
}

fn token(id: &str, role: Role, secret: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        role,
        verifier: String::new(),
        mqtt_hash: mosquitto_hash(secret, rand::random()),
        uses_left: Some(5),
        expires: None,
        labels: Default::default(),
        created: Utc::now(),
        last_used: None,
    }
}

#[tokio::test]
async fn each_node_is_confined_to_its_own_topics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Mosquitto runs as its own user: it must be able to reach the files.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nodes = [node("pi-1", "pw-1"), node("pi-2", "pw-2")];
    let tokens = [
        token("aaaaaaaaaaaa", Role::Bootstrap, "boot-secret"),
        token("bbbbbbbbbbbb", Role::Operator, "op-secret"),
    ];
    let scope = punnet_controller::acl::Scope::new(P, None);
    let logins = Logins {
        scope: &scope,
        controller_hash: mosquitto_hash("ctl-pw", rand::random()),
        nodes: &nodes,
        tokens: &tokens,
        now: Utc::now(),
    };
    mosquitto::write(dir, &logins).unwrap();
    let broker = start_mosquitto(dir);
    let port = broker.port;

    // Wrong passwords and unknown users are refused.
    assert!(connect(port, "x1", "pi-1", "pw-2").await.is_none());
    assert!(connect(port, "x2", "nobody", "pw-1").await.is_none());

    let mut ctl = connect(port, "punnet-controller", "punnet-controller", "ctl-pw")
        .await
        .expect("the controller logs in");
    ctl.subscribe(&format!("{P}/nodes/+/status")).await;
    ctl.subscribe(&format!("{P}/enrol/+/request")).await;
    ctl.publish(&format!("{P}/nodes/pi-1/desired"), true, "for-pi-1")
        .await;
    ctl.publish(&format!("{P}/nodes/pi-2/desired"), true, "for-pi-2")
        .await;

    let mut pi1 = connect(port, "punnet-agent-pi-1", "pi-1", "pw-1")
        .await
        .expect("pi-1 logs in");
    pi1.subscribe(&format!("{P}/nodes/pi-1/desired")).await;
    pi1.subscribe(&format!("{P}/nodes/pi-2/desired")).await;
    pi1.subscribe(&format!("{P}/nodes/+/desired")).await;
    pi1.publish(&format!("{P}/nodes/pi-2/status"), false, "forged")
        .await;
    pi1.publish(&format!("{P}/nodes/pi-1/status"), false, "mine")
        .await;

    let got = pi1.received(Duration::from_millis(1500)).await;
    assert!(
        got.iter().any(|(_, p)| p == "for-pi-1"),
        "pi-1 reads its own desired state: {got:?}"
    );
    assert!(
        got.iter().all(|(_, p)| p != "for-pi-2"),
        "pi-1 must not read pi-2's desired state: {got:?}"
    );
    let seen = ctl.received(Duration::from_millis(500)).await;
    assert!(
        seen.contains(&(format!("{P}/nodes/pi-1/status"), "mine".into())),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|(_, p)| p != "forged"),
        "pi-1 must not write pi-2's status: {seen:?}"
    );

    // A bootstrap login reaches its own enrolment topics and nothing else.
    let mut boot = connect(
        port,
        "punnet-enrol-1234",
        "punnet-token-aaaaaaaaaaaa",
        "boot-secret",
    )
    .await
    .expect("the bootstrap login is admitted");
    boot.subscribe(&format!("{P}/nodes/+/desired")).await;
    boot.subscribe("#").await;
    boot.publish(
        &format!("{P}/enrol/punnet-enrol-1234/request"),
        false,
        "join",
    )
    .await;
    boot.publish(
        &format!("{P}/enrol/punnet-enrol-9999/request"),
        false,
        "other",
    )
    .await;
    boot.publish(&format!("{P}/nodes/pi-1/status"), false, "boot-forged")
        .await;
    ctl.publish(
        &format!("{P}/enrol/punnet-enrol-1234/reply"),
        false,
        "welcome",
    )
    .await;
    let got = boot.received(Duration::from_millis(1500)).await;
    assert!(
        got.iter().all(|(t, _)| !t.contains("/desired")),
        "a bootstrap login must not read desired state: {got:?}"
    );
    let seen = ctl.received(Duration::from_millis(500)).await;
    assert!(
        seen.contains(&(
            format!("{P}/enrol/punnet-enrol-1234/request"),
            "join".into()
        )),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|(_, p)| p != "other" && p != "boot-forged"),
        "{seen:?}"
    );

    // Operators: commands and JSON status, not the nodes' topics.
    let mut op = connect(port, "tool", "punnet-token-bbbbbbbbbbbb", "op-secret")
        .await
        .expect("the operator logs in");
    op.subscribe(&format!("{P}/nodes/#")).await;
    op.subscribe(&format!("{P}/status/#")).await;
    ctl.publish(&format!("{P}/status/nodes/pi-1"), true, "{\"online\":true}")
        .await;
    let got = op.received(Duration::from_millis(1000)).await;
    assert!(
        got.iter().any(|(t, _)| t.ends_with("status/nodes/pi-1")),
        "{got:?}"
    );
    assert!(got.iter().all(|(t, _)| !t.contains("/desired")), "{got:?}");
    drop(broker);
}
