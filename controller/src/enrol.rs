//! The controller's side of enrolment: answers `<prefix>/enrol/<client>/request` on
//! its own MQTT connection. A request spends one use of a bootstrap token (proved with
//! an HMAC keyed by the token's verifier, see `punnet_api::enrol`), registers the node's
//! identity (MQTT password hash and public key), creates its Node with the token's
//! labels, and is answered with the node name and the controller's public key. A refusal
//! is answered with its reason, logged, and recorded as a Warning Event on the token.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use punnet_api::enrol::{self, EnrolReply, EnrolRequest, ENROL_VERSION, RESERVED_PREFIX};
use punnet_api::event::ObjectReference;
use punnet_api::Node;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::identity::{token_ref, NodeIdentities, NodeIdentity};
use crate::mqtt::MqttSettings;
use crate::store::Store;
use crate::tokens::{Refusal, Tokens};

/// The client id of the enrolment connection.
pub const CLIENT_ID: &str = "punnet-controller-enrol";

/// What enrolment needs.
#[derive(Clone)]
pub struct Enroller {
    pub store: Arc<Store>,
    pub tokens: Arc<Tokens>,
    pub nodes: NodeIdentities,
    /// The controller's signing public key, sent to every node it enrols.
    pub controller_key: [u8; 32],
}

/// A decision on one request: the identity to store and the token's labels, or why not.
pub fn decide(
    request: &EnrolRequest,
    tokens: &Tokens,
    nodes: &NodeIdentities,
    now: DateTime<Utc>,
) -> Result<(NodeIdentity, std::collections::BTreeMap<String, String>), String> {
    if request.version != ENROL_VERSION {
        return Err(format!(
            "enrolment protocol version {} is not supported (this controller speaks {ENROL_VERSION}); use matching agent and controller versions",
            request.version
        ));
    }
    let node = &request.node;
    punnet_api::validate::dns_subdomain(node)
        .map_err(|e| format!("node name {node:?}: {e}; start the agent with --name NAME"))?;
    if node.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "node name {node:?}: names starting with {RESERVED_PREFIX:?} are reserved for the controller's own logins; choose another --name"
        ));
    }
    if !enrol::is_mosquitto_hash(&request.mqtt_password_hash) {
        return Err("mqtt_password_hash is not a $7$ PBKDF2-SHA512 hash".into());
    }
    let key = request.public_key_bytes()?;
    let proof =
        |record: &crate::tokens::TokenRecord| request.proof_matches(&record.verifier_bytes());
    if let Some(existing) = nodes.get(node).map_err(|e| e.to_string())? {
        if existing.public_key != hex::encode(key) {
            return Err(format!(
                "node {node} is already enrolled with another key; if this board replaces it, run `punnet delete node {node}` first, else give it another --name"
            ));
        }
        // The same board asking again (its reply was lost): the same answer, and the
        // token, perhaps used up by that enrolment, is not spent again.
        if existing.mqtt_hash == request.mqtt_password_hash
            && existing.token_id.as_deref() == Some(request.token_id.as_str())
        {
            let record = tokens
                .confirm(&request.token_id, now, proof)
                .map_err(|r| r.to_string())?;
            return Ok((existing, record.labels));
        }
    }
    let spent = tokens
        .spend(&request.token_id, now, proof)
        .map_err(|r: Refusal| r.to_string())?;
    Ok((
        NodeIdentity {
            node: node.clone(),
            mqtt_hash: request.mqtt_password_hash.clone(),
            public_key: hex::encode(key),
            token_id: Some(request.token_id.clone()),
            enrolled: now,
        },
        spent.labels,
    ))
}

impl Enroller {
    /// Handles one request payload; returns the reply to send.
    pub fn handle(&self, payload: &[u8]) -> EnrolReply {
        let request: EnrolRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                warn!("enrolment: unreadable request: {e}");
                return EnrolReply::refused(format!("unreadable enrolment request: {e}"));
            }
        };
        let outcome = decide(&request, &self.tokens, &self.nodes, Utc::now()).and_then(
            |(identity, labels)| {
                self.nodes
                    .register(&identity)
                    .map_err(|e| format!("could not store the identity: {e}"))?;
                // The key its status must be signed with (signing's registry).
                let key = request.public_key_bytes()?;
                self.store
                    .node_keys()
                    .register(&identity.node, key)
                    .map_err(|e| format!("could not register the node's key: {e}"))?;
                self.ensure_node(&identity.node, labels)?;
                Ok(identity)
            },
        );
        match outcome {
            Ok(identity) => {
                info!(node = %identity.node, token = %request.token_id, "enrolled a node");
                let node_ref = ObjectReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: identity.node.clone(),
                    ..Default::default()
                };
                self.store.recorder().normal(
                    node_ref,
                    "Enrolled",
                    format!("enrolled with token {}", request.token_id),
                );
                EnrolReply::accepted(&identity.node, &self.controller_key)
            }
            Err(reason) => {
                warn!(node = %request.node, token = %request.token_id, "enrolment refused: {reason}");
                self.store.recorder().warning(
                    token_ref(&request.token_id),
                    "EnrolmentRefused",
                    format!("node {:?}: {reason}", request.node),
                );
                EnrolReply::refused(reason)
            }
        }
    }

    /// Creates the Node with the token's labels, or adds them to an existing one.
    fn ensure_node(
        &self,
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        let existing = self
            .store
            .get::<Node>(None, name)
            .map_err(|e| e.to_string())?;
        let result = match existing {
            None => {
                let mut node = Node::default();
                node.metadata.name = name.to_string();
                node.metadata.labels = labels;
                self.store.create(node).map(|_| ())
            }
            Some(_) if labels.is_empty() => Ok(()),
            Some(_) => self
                .store
                .modify::<Node>(None, name, |n| n.metadata.labels.extend(labels.clone()))
                .map(|_| ()),
        };
        result.map_err(|e| format!("could not create node {name}: {e}"))
    }
}

/// Runs the enrolment connection until `cancel`.
pub async fn run(enroller: Enroller, settings: MqttSettings, cancel: CancellationToken) {
    let mut options = MqttOptions::new(CLIENT_ID, settings.host.clone(), settings.port);
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(64 * 1024, 64 * 1024);
    if let Some((user, pass)) = &settings.credentials {
        options.set_credentials(user.clone(), pass.clone());
    }
    crate::tls::client::apply(&mut options, settings.tls.as_ref());
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let filter = enrol::all_requests(&settings.prefix);
    let mut failures: u32 = 0;
    loop {
        let polled = tokio::select! {
            _ = cancel.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                let (c, f) = (client.clone(), filter.clone());
                tokio::spawn(async move {
                    if let Err(e) = c.subscribe(f, QoS::AtLeastOnce).await {
                        warn!("enrolment: could not subscribe: {e}");
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(client_id) = enrol::client_of_request(&settings.prefix, &p.topic) else {
                    continue;
                };
                let reply_topic = enrol::reply_topic(&settings.prefix, client_id);
                let (e, c) = (enroller.clone(), client.clone());
                // PBKDF2 and sled writes: off the event loop, which must keep polling.
                tokio::spawn(async move {
                    let payload = p.payload.to_vec();
                    let reply = tokio::task::spawn_blocking(move || e.handle(&payload))
                        .await
                        .unwrap_or_else(|_| EnrolReply::refused("internal error"));
                    let body = serde_json::to_vec(&reply).expect("a reply serialises");
                    if let Err(err) = c.publish(reply_topic, QoS::AtLeastOnce, false, body).await {
                        warn!("enrolment: could not reply: {err}");
                    }
                });
            }
            Ok(_) => {}
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    warn!("enrolment: MQTT connection failed: {e}; retrying");
                }
                let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{Role, TokenSpec};
    use punnet_api::enrol::{mosquitto_hash, TokenString};

    fn setup() -> (Enroller, TokenString, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tokens = Arc::new(Tokens::new("admin-token-0123456789"));
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("site".to_string(), "barn".to_string());
        let (_, token) = tokens
            .create(
                &TokenSpec {
                    uses: Some(1),
                    labels,
                    ..Default::default()
                },
                Utc::now(),
            )
            .unwrap();
        let e = Enroller {
            store,
            tokens,
            nodes: NodeIdentities::open(db.open_tree("ids").unwrap()),
            controller_key: [3; 32],
        };
        (e, token, dir)
    }

    fn request(token: &TokenString, node: &str, key: u8) -> Vec<u8> {
        serde_json::to_vec(&EnrolRequest::new(
            token,
            node,
            &[key; 32],
            mosquitto_hash("pw", [1; 12]),
        ))
        .unwrap()
    }

    #[test]
    fn enrols_once_with_labels_then_refuses() {
        let (e, token, _dir) = setup();
        let reply = e.handle(&request(&token, "pi-1", 1));
        assert_eq!(reply, EnrolReply::accepted("pi-1", &[3; 32]));
        let node = e.store.get::<Node>(None, "pi-1").unwrap().unwrap();
        assert_eq!(node.metadata.labels.get("site").unwrap(), "barn");
        assert_eq!(e.nodes.public_key("pi-1"), Some([1; 32]));

        // The same board asking again (a lost reply) gets the same answer and spends
        // nothing; another board with the used-up token is refused.
        let repeat = e.handle(&request(&token, "pi-1", 1));
        assert_eq!(repeat, EnrolReply::accepted("pi-1", &[3; 32]));
        let record = e.tokens.get(&token.id).unwrap().unwrap();
        assert_eq!(record.uses_left, Some(0));
        assert!(record.last_used.is_some());
        let again = e.handle(&request(&token, "pi-2", 2));
        assert!(
            again.refused.as_deref().unwrap().contains("used up"),
            "{again:?}"
        );
        let events = e.store.recorder().for_object(&token_ref(&token.id));
        assert!(events.iter().any(|ev| ev.reason == "EnrolmentRefused"));
    }

    #[test]
    fn refuses_forgeries_and_taken_names() {
        let (e, token, _dir) = setup();
        let forged = TokenString {
            id: token.id.clone(),
            secret: "0".repeat(48),
        };
        let r = e.handle(&request(&forged, "pi-1", 1));
        assert!(r.refused.unwrap().contains("does not match"));
        assert!(e
            .handle(b"{not json")
            .refused
            .unwrap()
            .contains("unreadable"));
        let r = e.handle(&request(&token, "punnet-controller", 1));
        assert!(r.refused.unwrap().contains("reserved"));
        let r = e.handle(&request(&token, "Bad_Name", 1));
        assert!(r.refused.unwrap().contains("--name"));

        // pi-1 enrolled by another token; a different key may not take the name.
        let (_, t2) = e
            .tokens
            .create(
                &TokenSpec {
                    role: Some(Role::Bootstrap),
                    ..Default::default()
                },
                Utc::now(),
            )
            .unwrap();
        assert!(e.handle(&request(&t2, "pi-1", 1)).refused.is_none());
        let r = e.handle(&request(&token, "pi-1", 9));
        assert!(r.refused.unwrap().contains("punnet delete node pi-1"));
    }
}
