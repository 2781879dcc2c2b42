//! A plain MQTT 3.1.1 test client for the broker tests (`broker_gate`, `mosquitto_acl`):
//! what it receives, and whether the broker closed its connection.
#![allow(dead_code)]

use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

/// A v3.1.1 client: what it receives, and whether its connection is still up.
pub struct Client {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, String)>,
    up: watch::Receiver<bool>,
}

/// Connects; `None` when the CONNECT is refused.
pub async fn connect(
    port: u16,
    id: &str,
    user: &str,
    pass: &str,
    will: Option<&str>,
) -> Option<Client> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(user, pass).set_clean_session(true);
    if let Some(topic) = will {
        o.set_last_will(LastWill::new(topic, "gone", QoS::AtLeastOnce, false));
    }
    let (client, mut ev) = AsyncClient::new(o, 16);
    let (tx, messages) = mpsc::unbounded_channel();
    let (up_tx, mut up) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = up_tx.send(true);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = up_tx.send(false);
                    return;
                }
            }
        }
    });
    let connected = matches!(
        tokio::time::timeout(Duration::from_secs(5), up.wait_for(|u| *u)).await,
        Ok(Ok(_))
    );
    connected.then_some(Client {
        client,
        messages,
        up,
    })
}

impl Client {
    pub async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
    }

    pub async fn publish(&self, topic: &str, retain: bool, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }

    pub async fn received(&mut self, wait: Duration) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.messages.recv()).await {
            out.push(m);
        }
        out
    }

    /// Whether the gate closed the connection within a few seconds.
    pub async fn closed(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(5), self.up.wait_for(|u| !*u))
            .await
            .is_ok()
    }
}
