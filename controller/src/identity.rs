//! Node identities and broker logins. An enrolled node has a record here: its MQTT
//! password's `$7$` hash (the agent chose the password and sent only the hash), its
//! ed25519 public key and the token that enrolled it. The controller has its own MQTT
//! password in `<data-dir>/mqtt.password`. `BrokerAuth` decides who the embedded broker
//! admits: the controller, enrolled nodes, and token logins (`punnet-token-<id>`) of
//! bootstrap, operator and admin tokens; nobody else.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use punnet_api::enrol::{self, CONTROLLER_USERNAME};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::tokens::{ChangeHook, Role, Tokens};

/// The sled tree node identities live in.
pub const TREE: &str = "punnet.io/nodeidentities";
/// The controller's MQTT password, in the data dir.
pub const CONTROLLER_PASSWORD_FILE: &str = "mqtt.password";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node: String,
    /// `$7$` hash of the node's MQTT password (its username is the node name).
    pub mqtt_hash: String,
    /// ed25519 public key, hex.
    pub public_key: String,
    /// The bootstrap token that enrolled it; `None` when the controller registered it
    /// itself (the embedded agent).
    pub token_id: Option<String>,
    pub enrolled: DateTime<Utc>,
}

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("node identities: {0}")]
    Sled(#[from] sled::Error),
    #[error("node identity {node} is unreadable: {source}")]
    Corrupt {
        node: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The registry of enrolled nodes.
#[derive(Clone)]
pub struct NodeIdentities {
    tree: sled::Tree,
    /// See `set_on_change`.
    on_change: Arc<std::sync::OnceLock<ChangeHook>>,
}

impl NodeIdentities {
    pub fn open(tree: sled::Tree) -> NodeIdentities {
        NodeIdentities {
            tree,
            on_change: Arc::default(),
        }
    }

    /// Runs `hook` after every registration and revocation (once set, for good).
    pub fn set_on_change(&self, hook: ChangeHook) {
        let _ = self.on_change.set(hook);
    }

    fn changed(&self) {
        if let Some(hook) = self.on_change.get() {
            hook();
        }
    }

    pub fn get(&self, node: &str) -> Result<Option<NodeIdentity>, IdentityError> {
        match self.tree.get(node.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|source| {
                IdentityError::Corrupt {
                    node: node.to_string(),
                    source,
                }
            })?)),
            None => Ok(None),
        }
    }

    pub fn list(&self) -> Result<Vec<NodeIdentity>, IdentityError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            out.push(
                serde_json::from_slice(&v).map_err(|source| IdentityError::Corrupt {
                    node: String::from_utf8_lossy(&k).into_owned(),
                    source,
                })?,
            );
        }
        Ok(out)
    }

    /// Stores `identity`, replacing an earlier one of the same node.
    pub fn register(&self, identity: &NodeIdentity) -> Result<(), IdentityError> {
        let value = serde_json::to_vec(identity).expect("an identity serialises");
        self.tree.insert(identity.node.as_bytes(), value)?;
        self.tree.flush()?;
        self.changed();
        Ok(())
    }

    /// Forgets a node's identity: its broker login stops working at its next connect.
    /// Whether it had one.
    pub fn revoke(&self, node: &str) -> Result<bool, IdentityError> {
        let had = self.tree.remove(node.as_bytes())?.is_some();
        self.tree.flush()?;
        if had {
            self.changed();
        }
        Ok(had)
    }

    /// The node's ed25519 public key, for verifying what it signs.
    pub fn public_key(&self, node: &str) -> Option<[u8; 32]> {
        let id = self.get(node).ok()??;
        hex::decode(id.public_key).ok()?.try_into().ok()
    }
}

/// The controller's MQTT password: read from `<data_dir>/mqtt.password`, or made and
/// written there (mode 0600) on first start.
pub fn controller_password(data_dir: &Path) -> Result<String, IdentityError> {
    let path = data_dir.join(CONTROLLER_PASSWORD_FILE);
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    let create = || -> Result<String, IdentityError> {
        let password = hex::encode(rand::random::<[u8; 24]>());
        crate::auth_token::write_private(&path, format!("{password}\n").as_bytes())
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        Ok(password)
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => create(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(),
        Err(e) => Err(io(e)),
    }
}

/// Who a broker login is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Controller,
    Node(String),
    /// A token login; `Bootstrap` may only enrol, `Operator`/`Admin` may command.
    Token {
        id: String,
        role: Role,
    },
}

impl std::fmt::Debug for BrokerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerAuth { .. }")
    }
}

/// The embedded broker's gate: every CONNECT's username and password go through
/// `check`.
pub struct BrokerAuth {
    pub tokens: Arc<Tokens>,
    pub nodes: NodeIdentities,
    controller_password: String,
    /// Where refused logins of known tokens are recorded as Events.
    events: Option<Arc<crate::store::Store>>,
}

impl BrokerAuth {
    pub fn new(
        tokens: Arc<Tokens>,
        nodes: NodeIdentities,
        controller_password: String,
    ) -> BrokerAuth {
        BrokerAuth {
            tokens,
            nodes,
            controller_password,
            events: None,
        }
    }

    /// Records refused token logins as Warning Events on the token.
    pub fn with_events(self, store: Arc<crate::store::Store>) -> BrokerAuth {
        BrokerAuth {
            events: Some(store),
            ..self
        }
    }

    /// The controller's own login (username, password).
    pub fn controller_login(&self) -> (String, String) {
        (
            CONTROLLER_USERNAME.to_string(),
            self.controller_password.clone(),
        )
    }

    /// Who `username`/`password` is, or why it is refused.
    pub fn check(&self, username: &str, password: &str) -> Result<Principal, String> {
        if username == CONTROLLER_USERNAME {
            let ok = crate::tokens::constant_time_eq(
                &sha(password.as_bytes()),
                &sha(self.controller_password.as_bytes()),
            );
            return ok
                .then_some(Principal::Controller)
                .ok_or_else(|| "wrong controller password".to_string());
        }
        if let Some(id) = enrol::token_id_of_username(username) {
            return match self.tokens.check_mqtt(username, password) {
                Ok(role) => Ok(Principal::Token {
                    id: id.to_string(),
                    role,
                }),
                Err(refusal) => {
                    if let Some(store) = &self.events {
                        store.recorder().warning(
                            token_ref(id),
                            "LoginRefused",
                            format!("MQTT login refused: {refusal}"),
                        );
                    }
                    Err(refusal.to_string())
                }
            };
        }
        match self.nodes.get(username) {
            Ok(Some(identity)) if enrol::mosquitto_verify(&identity.mqtt_hash, password) => {
                Ok(Principal::Node(username.to_string()))
            }
            Ok(Some(_)) => Err(format!("wrong password for node {username}")),
            Ok(None) => Err(format!(
                "no node {username:?} is enrolled (enrol it with a bootstrap token, `punnet-agent --token`)"
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `punnet delete node NAME` revokes the node's identity: this follows the store and
/// forgets the identity of every deleted Node (and, after missing changes, of every
/// identity whose Node is gone).
pub async fn revoke_deleted_nodes(
    store: Arc<crate::store::Store>,
    nodes: NodeIdentities,
    cancel: tokio_util::sync::CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = store.subscribe();
    loop {
        let gone: Vec<String> = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = changes.recv() => match ev {
                Ok(ev) => match (&ev.change, &*ev.object) {
                    (crate::store::Change::Deleted, punnet_api::object::Object::Node(n)) => {
                        vec![n.metadata.name.clone()]
                    }
                    _ => continue,
                },
                Err(RecvError::Lagged(_)) => nodes
                    .list()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|id| id.node)
                    .filter(|n| matches!(store.get::<punnet_api::Node>(None, n), Ok(None)))
                    .collect(),
                Err(RecvError::Closed) => return,
            },
        };
        for node in gone {
            // Its signing key is forgotten too: a status signed with it is refused.
            if let Err(e) = store.node_keys().revoke(&node) {
                tracing::warn!(%node, "could not forget the key of a deleted node: {e}");
            }
            match nodes.revoke(&node) {
                Ok(true) => {
                    tracing::info!(%node, "node deleted: its identity is revoked (its broker login fails from its next connect)");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%node, "could not revoke the identity of a deleted node: {e}")
                }
            }
        }
    }
}

/// Registers a node the controller vouches for itself (the embedded agent): a fresh
/// MQTT password and the node's public key. Returns the password to hand to the agent.
pub fn preregister(
    nodes: &NodeIdentities,
    node: &str,
    public_key: [u8; 32],
) -> Result<String, IdentityError> {
    let password = hex::encode(rand::random::<[u8; 24]>());
    nodes.register(&NodeIdentity {
        node: node.to_string(),
        mqtt_hash: enrol::mosquitto_hash(&password, rand::random()),
        public_key: hex::encode(public_key),
        token_id: None,
        enrolled: Utc::now(),
    })?;
    Ok(password)
}

/// The Event object of a token.
pub fn token_ref(id: &str) -> punnet_api::event::ObjectReference {
    punnet_api::event::ObjectReference {
        api_version: "punnet.io/v1".into(),
        kind: "Token".into(),
        name: id.to_string(),
        ..Default::default()
    }
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::TokenSpec;

    fn identities() -> NodeIdentities {
        let db = sled::Config::new().temporary(true).open().unwrap();
        NodeIdentities::open(db.open_tree(TREE).unwrap())
    }

    #[test]
    fn admits_only_known_logins() {
        let tokens = Arc::new(Tokens::new("admin-token-0123456789"));
        let nodes = identities();
        nodes
            .register(&NodeIdentity {
                node: "pi-1".into(),
                mqtt_hash: enrol::mosquitto_hash("node-pw", [1; 12]),
                public_key: hex::encode([5u8; 32]),
                token_id: None,
                enrolled: Utc::now(),
            })
            .unwrap();
        let (_, op) = tokens
            .create(
                &TokenSpec {
                    role: Some(Role::Operator),
                    ..Default::default()
                },
                Utc::now(),
            )
            .unwrap();
        let auth = BrokerAuth::new(tokens, nodes.clone(), "ctl-pw".into());
        assert_eq!(
            auth.check(CONTROLLER_USERNAME, "ctl-pw"),
            Ok(Principal::Controller)
        );
        assert!(auth.check(CONTROLLER_USERNAME, "ctl-px").is_err());
        assert_eq!(
            auth.check("pi-1", "node-pw"),
            Ok(Principal::Node("pi-1".into()))
        );
        assert!(auth.check("pi-1", "node-px").is_err());
        assert!(auth.check("pi-2", "node-pw").unwrap_err().contains("enrol"));
        assert_eq!(
            auth.check(&op.mqtt_username(), &op.secret),
            Ok(Principal::Token {
                id: op.id.clone(),
                role: Role::Operator
            })
        );
        assert!(auth.check(&op.mqtt_username(), "x").is_err());
        assert!(auth.check("", "").is_err());
        assert_eq!(nodes.public_key("pi-1"), Some([5; 32]));
        assert!(nodes.revoke("pi-1").unwrap());
        assert!(auth.check("pi-1", "node-pw").is_err());
    }
}
