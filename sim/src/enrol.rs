//! Enrolment of a simulated node with a bootstrap token, the way `punnet-agent --token`
//! does it (see `punnet_api::enrol`): one short connection logged in as the token, a
//! request with the node's password hash and its signing key's public half, one answer. The
//! simulator keeps the credentials in memory only, so every run enrols its nodes anew
//! (a token of `--uses N` for N nodes, or unlimited).

use std::time::Duration;

use punnet_api::enrol::{self, EnrolReply, EnrolRequest, TokenString};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};

use crate::node::NodeSettings;

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
pub enum EnrolFailure {
    /// The controller or the broker said no: retrying cannot help.
    Refused(String),
    Retry(String),
}

/// One node's enrolment request, made once so that a repeat after a lost answer is the
/// same request (the controller answers that without spending another use).
pub struct Pending {
    pub password: String,
    request: EnrolRequest,
}

impl Pending {
    pub fn new(token: &TokenString, name: &str, public_key: [u8; 32]) -> Pending {
        let password = hex::encode(rand::random::<[u8; 16]>());
        let request = EnrolRequest::new(
            token,
            name,
            &public_key,
            enrol::mosquitto_hash(&password, rand::random()),
        );
        Pending { password, request }
    }
}

/// One attempt to enrol with `pending`'s request.
pub async fn enrol(
    settings: &NodeSettings,
    token: &TokenString,
    pending: &Pending,
) -> Result<(), EnrolFailure> {
    let request = &pending.request;
    let client_id = format!("punnet-enrol-{}", hex::encode(rand::random::<[u8; 8]>()));
    let mut o = MqttOptions::new(client_id.clone(), &settings.host, settings.port);
    o.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_credentials(token.mqtt_username(), token.secret.clone());
    if let Some(tls) = &settings.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(o, 4);
    let prefix = settings.topics.prefix().to_string();
    let reply_topic = enrol::reply_topic(&prefix, &client_id);
    let body = serde_json::to_vec(request).expect("a request serialises");
    let attempt = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(reply_topic.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = client.try_publish(
                        enrol::request_topic(&prefix, &client_id),
                        QoS::AtLeastOnce,
                        false,
                        body.clone(),
                    );
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == reply_topic => {
                    let reply: EnrolReply = serde_json::from_slice(&p.payload)
                        .map_err(|e| EnrolFailure::Retry(e.to_string()))?;
                    return match reply.refused {
                        Some(reason) => Err(EnrolFailure::Refused(reason)),
                        None => Ok(()),
                    };
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => {
                    return Err(EnrolFailure::Refused(format!(
                        "the broker refused the token's login: {code:?}"
                    )))
                }
                Err(e) => return Err(EnrolFailure::Retry(e.to_string())),
            }
        }
    };
    let result = match tokio::time::timeout(Duration::from_secs(60), attempt).await {
        Ok(r) => r,
        Err(_) => Err(EnrolFailure::Retry("no answer within 60 s".into())),
    };
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
    result
}
