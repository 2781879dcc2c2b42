//! The embedded broker's gate with real clients: rumqttd behind `broker_gate` with the
//! controller's logins, as `punnet-controller` runs it. Each node reaches only its own
//! topics, a bootstrap login only its enrolment topics, an operator the command API;
//! a connection that reaches further is closed, and reserved client ids, foreign last
//! wills and wrong passwords are refused at CONNECT. MQTT 3.1.1 and 5 alike.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use punnet_controller::broker::{self, BrokerConfig};
use punnet_controller::broker_gate::{self, Denial, Gate, Version};
use punnet_controller::identity::{self, BrokerAuth, NodeIdentities};
use punnet_controller::tokens::{Role, TokenSpec, Tokens};
mod mqtt_client;

use mqtt_client::connect;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const P: &str = "punnet/v1";

struct Fleet {
    v4: u16,
    v5: u16,
    pi1: String,
    pi2: String,
    boot: (String, String),
    operator: (String, String),
    _auth: Arc<BrokerAuth>,
    _dir: tempfile::TempDir,
}

fn port() -> u16 {
    broker_gate::free_loopback_port().unwrap().port()
}

async fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let tokens = Tokens::open("admin-secret", db.open_tree("tokens").unwrap());
    let spec = |role| TokenSpec {
        role: Some(role),
        ..Default::default()
    };
    let (_, boot) = tokens.create(&spec(Role::Bootstrap), Utc::now()).unwrap();
    let (_, op) = tokens.create(&spec(Role::Operator), Utc::now()).unwrap();
    let nodes = NodeIdentities::open(db.open_tree("nodes").unwrap());
    let pi1 = identity::preregister(&nodes, "pi-1", [1; 32]).unwrap();
    let pi2 = identity::preregister(&nodes, "pi-2", [2; 32]).unwrap();
    let auth = Arc::new(BrokerAuth::new(Arc::new(tokens), nodes, "ctl-pw".into()));

    let (inner, inner_v5) = (
        broker_gate::free_loopback_port().unwrap(),
        broker_gate::free_loopback_port().unwrap(),
    );
    broker::start_with(BrokerConfig {
        listen: inner,
        listen_v5: Some(inner_v5),
        auth: Some(auth.clone()),
        ..Default::default()
    })
    .unwrap();
    let mut fronts = Vec::new();
    for (version, inner) in [(Version::V4, inner), (Version::V5, inner_v5)] {
        let gate = Gate {
            auth: Some(Arc::downgrade(&auth)),
            scope: punnet_controller::acl::Scope::new(P, None),
            version,
            inner,
        };
        let public = format!("127.0.0.1:{}", port()).parse().unwrap();
        let addr = broker_gate::listen(public, Arc::new(gate), None, CancellationToken::new())
            .await
            .unwrap();
        fronts.push(addr.port());
    }
    Fleet {
        v4: fronts[0],
        v5: fronts[1],
        pi1,
        pi2,
        boot: (boot.mqtt_username(), boot.secret.clone()),
        operator: (op.mqtt_username(), op.secret.clone()),
        _auth: auth,
        _dir: dir,
    }
}

#[tokio::test]
async fn each_login_is_confined_to_its_topics() {
    let f = fleet().await;
    let desired = |n: &str| format!("{P}/nodes/{n}/desired");
    let status = |n: &str| format!("{P}/nodes/{n}/status");

    let mut ctl = connect(
        f.v4,
        "punnet-controller",
        "punnet-controller",
        "ctl-pw",
        None,
    )
    .await
    .expect("the controller logs in");
    ctl.subscribe(&format!("{P}/nodes/+/status")).await;
    ctl.subscribe(&format!("{P}/enrol/+/request")).await;
    ctl.publish(&desired("pi-1"), true, "for-pi-1").await;
    ctl.publish(&desired("pi-2"), true, "for-pi-2").await;

    // Its own topics work as before.
    let online = format!("{P}/nodes/pi-1/online");
    let mut pi1 = connect(f.v4, "punnet-agent-pi-1", "pi-1", &f.pi1, Some(&online))
        .await
        .expect("pi-1 logs in with a will on its own presence");
    pi1.subscribe(&desired("pi-1")).await;
    pi1.publish(&status("pi-1"), false, "mine").await;
    let got = pi1.received(Duration::from_millis(800)).await;
    assert_eq!(got, vec![(desired("pi-1"), "for-pi-1".to_string())]);
    let seen = ctl.received(Duration::from_millis(300)).await;
    assert!(seen.contains(&(status("pi-1"), "mine".into())), "{seen:?}");

    // Reaching for another node's desired state (its Secrets) ends the connection.
    let before = broker_gate::denied(Denial::Subscribe);
    for filter in [
        desired("pi-2"),
        format!("{P}/nodes/+/desired"),
        "#".to_string(),
    ] {
        let mut spy = connect(f.v4, "punnet-agent-pi-1", "pi-1", &f.pi1, None)
            .await
            .unwrap();
        spy.subscribe(&filter).await;
        assert!(
            spy.closed().await,
            "subscribing to {filter} must close pi-1's connection"
        );
        let got = spy.received(Duration::from_millis(100)).await;
        assert!(
            got.iter().all(|(_, p)| p != "for-pi-2"),
            "{filter}: {got:?}"
        );
    }
    assert!(broker_gate::denied(Denial::Subscribe) >= before + 3);

    // Speaking for another node ends it too, and the message goes nowhere.
    let mut forger = connect(f.v4, "punnet-agent-pi-1", "pi-1", &f.pi1, None)
        .await
        .unwrap();
    forger.publish(&status("pi-2"), false, "forged").await;
    assert!(forger.closed().await);
    let seen = ctl.received(Duration::from_millis(500)).await;
    assert!(seen.iter().all(|(_, p)| p != "forged"), "{seen:?}");

    // Refused at CONNECT: another node's client id (it would take pi-2's session over),
    // a last will in another node's name, a wrong password, the controller's client id.
    let other_online = format!("{P}/nodes/pi-2/online");
    assert!(connect(f.v4, "punnet-agent-pi-2", "pi-1", &f.pi1, None)
        .await
        .is_none());
    assert!(connect(f.v4, "x1", "pi-1", &f.pi1, Some(&other_online))
        .await
        .is_none());
    assert!(connect(f.v4, "x2", "pi-1", &f.pi2, None).await.is_none());
    assert!(connect(
        f.v4,
        "punnet-controller",
        &f.operator.0,
        &f.operator.1,
        None
    )
    .await
    .is_none());
    assert!(broker_gate::denied(Denial::ClientId) >= 2);
    assert!(broker_gate::denied(Denial::Login) >= 1);
    // pi-2 itself still gets in.
    assert!(connect(f.v4, "punnet-agent-pi-2", "pi-2", &f.pi2, None)
        .await
        .is_some());

    // A bootstrap login: its own enrolment topics only.
    let (boot_user, boot_secret) = &f.boot;
    let enrolling = connect(f.v4, "punnet-enrol-1234", boot_user, boot_secret, None)
        .await
        .unwrap();
    enrolling
        .publish(
            &format!("{P}/enrol/punnet-enrol-1234/request"),
            false,
            "join",
        )
        .await;
    let seen = ctl.received(Duration::from_millis(500)).await;
    assert!(
        seen.contains(&(
            format!("{P}/enrol/punnet-enrol-1234/request"),
            "join".into()
        )),
        "{seen:?}"
    );
    let mut other = connect(f.v4, "punnet-enrol-5678", boot_user, boot_secret, None)
        .await
        .unwrap();
    other
        .subscribe(&format!("{P}/enrol/punnet-enrol-1234/reply"))
        .await;
    assert!(
        other.closed().await,
        "one enrolment cannot read another's reply"
    );

    // An operator commands and reads the JSON status, not the nodes' topics.
    let (op_user, op_secret) = &f.operator;
    let mut op = connect(f.v4, "tool", op_user, op_secret, None)
        .await
        .unwrap();
    op.subscribe(&format!("{P}/status/#")).await;
    ctl.publish(&format!("{P}/status/nodes/pi-1"), true, "{}")
        .await;
    let got = op.received(Duration::from_millis(500)).await;
    assert!(
        got.iter().any(|(t, _)| t.ends_with("status/nodes/pi-1")),
        "{got:?}"
    );
    op.subscribe(&format!("{P}/nodes/#")).await;
    assert!(op.closed().await);
}

#[tokio::test]
async fn mqtt5_logins_are_confined_the_same_way() {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as C5, Event as E5, MqttOptions as O5};
    let f = fleet().await;
    let mut o = O5::new("punnet-agent-pi-1", "127.0.0.1", f.v5);
    o.set_credentials("pi-1", f.pi1.clone());
    let (client, mut ev) = C5::new(o, 16);
    let (up_tx, mut up) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(E5::Incoming(rumqttc::v5::Incoming::ConnAck(_))) => {
                    let _ = up_tx.send(true);
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = up_tx.send(false);
                    return;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), up.wait_for(|u| *u))
        .await
        .expect("pi-1 logs in over MQTT 5")
        .unwrap();
    client
        .subscribe(format!("{P}/nodes/pi-1/desired"), Q5::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(*up.borrow(), "its own subscription keeps the connection");
    client
        .subscribe(format!("{P}/nodes/pi-2/desired"), Q5::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), up.wait_for(|u| !*u))
        .await
        .expect("another node's subscription closes it")
        .unwrap();
}
